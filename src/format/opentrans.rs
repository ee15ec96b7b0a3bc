//! openTRANS 2.1 DISPATCHNOTIFICATION (Lieferavis) → a delivery note.
//!
//! The document lives in the openTRANS namespace; product data (SUPPLIER_PID, BUYER_PID,
//! INTERNATIONAL_PID, DESCRIPTION_SHORT, ORDER_UNIT) comes from BMEcat 2005 and carries its
//! namespace, under whatever prefix (`bmecat:`, `bme:`, `bm:`, or a default namespace).

use super::standard::OPENTRANS as OT;
use super::xml::{self, Element};
use crate::error::Reject;
use crate::model::{DeliveryLine, DeliveryNote, Document};

/// The BMEcat 2005 namespace that openTRANS 2.1 imports.
const BMECAT: &str = "http://www.bmecat.org/bmecat/2005";

/// Reads a `<DISPATCHNOTIFICATION>` root element.
pub fn parse(root: &Element, file: &str) -> Result<Document, Reject> {
    let info = root.at(&[
        (OT, "DISPATCHNOTIFICATION_HEADER"),
        (OT, "DISPATCHNOTIFICATION_INFO"),
    ]);
    let number = info.and_then(|i| i.text_at(&[(OT, "DISPATCHNOTIFICATION_ID")]));
    let date = info.and_then(|i| i.at(&[(OT, "DISPATCHNOTIFICATION_DATE")]));
    let items = root
        .at(&[(OT, "DISPATCHNOTIFICATION_ITEM_LIST")])
        .into_iter()
        .flat_map(|list| list.children_named(OT, "DISPATCHNOTIFICATION_ITEM"));
    let lines = items
        .enumerate()
        .map(|(index, item)| line(item, index, file))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order_refs: Vec<String> = Vec::new();
    for order in lines.iter().filter_map(|l| l.order_ref.as_ref()) {
        if !order_refs.contains(order) {
            order_refs.push(order.clone());
        }
    }
    Ok(Document::DeliveryNote(DeliveryNote {
        format: "opentrans-2.1".to_owned(),
        supplier: None,
        number: number.unwrap_or_default(),
        date: xml::date(file, "date", date.and_then(Element::text))?,
        order_refs,
        lines,
        file: file.to_owned(),
        date_text: None,
    }))
}

/// One DISPATCHNOTIFICATION_ITEM.
fn line(item: &Element, index: usize, file: &str) -> Result<DeliveryLine, Reject> {
    let line_no = item
        .text_at(&[(OT, "LINE_ITEM_ID")])
        .unwrap_or_else(|| (index + 1).to_string());
    let product = item.child(OT, "PRODUCT_ID");
    let product_text = |name| {
        product
            .and_then(|p| bmecat(p, name))
            .and_then(Element::text)
    };
    // INTERNATIONAL_PID@type names the scheme; only GTIN (formerly EAN) fills `gtin`.
    let gtin = product
        .into_iter()
        .flat_map(|p| {
            p.children
                .iter()
                .filter(|c| c.name == "INTERNATIONAL_PID" && (c.ns == BMECAT || c.ns == OT))
        })
        .filter(|pid| {
            pid.attr("type")
                .is_some_and(|t| t.eq_ignore_ascii_case("gtin") || t.eq_ignore_ascii_case("ean"))
        })
        .find_map(Element::text);
    let quantity = item.child(OT, "QUANTITY").and_then(Element::text);
    let order = item.child(OT, "ORDER_REFERENCE");
    Ok(DeliveryLine {
        supplier_part_id: product_text("SUPPLIER_PID").map(str::to_owned),
        buyer_part_id: product_text("BUYER_PID").map(str::to_owned),
        gtin: gtin.map(str::to_owned),
        description: product_text("DESCRIPTION_SHORT").map(xml::one_line),
        quantity: xml::decimal(file, Some(&line_no), "quantity", quantity)?,
        unit: bmecat(item, "ORDER_UNIT")
            .and_then(Element::text)
            .map(str::to_owned),
        order_ref: order.and_then(|o| o.text_at(&[(OT, "ORDER_ID")])),
        order_line: order.and_then(|o| o.text_at(&[(OT, "LINE_ITEM_ID")])),
        line_no,
        ..DeliveryLine::default()
    })
}

/// A BMEcat child element. Some generators write these in the openTRANS namespace instead
/// (schema-invalid, but unambiguous: openTRANS defines no element of these names), so that
/// is accepted too rather than losing the article numbers.
fn bmecat<'a>(parent: &'a Element, name: &str) -> Option<&'a Element> {
    parent
        .child(BMECAT, name)
        .or_else(|| parent.child(OT, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(text: &str) -> DeliveryNote {
        let root = xml::parse(text, "la.xml", 64, true).unwrap();
        match parse(&root, "la.xml").unwrap() {
            Document::DeliveryNote(note) => note,
            other => panic!("{other:?}"),
        }
    }

    const ITEM: &str = "<LINE_ITEM_ID>3</LINE_ITEM_ID><PRODUCT_ID><B:SUPPLIER_PID>A-1\
        </B:SUPPLIER_PID><B:INTERNATIONAL_PID type='upc'>1</B:INTERNATIONAL_PID>\
        <B:INTERNATIONAL_PID type='GTIN'>4012345678901</B:INTERNATIONAL_PID></PRODUCT_ID>\
        <QUANTITY>2.50</QUANTITY><B:ORDER_UNIT>C62</B:ORDER_UNIT>\
        <ORDER_REFERENCE><ORDER_ID>PO-1</ORDER_ID><LINE_ITEM_ID>9</LINE_ITEM_ID>\
        </ORDER_REFERENCE>";

    #[test]
    fn any_prefix_for_bmecat_elements() {
        for prefix in ["bmecat", "bm", "bme"] {
            let text = format!(
                "<DISPATCHNOTIFICATION xmlns='{OT}' xmlns:{prefix}='{BMECAT}'>\
                 <DISPATCHNOTIFICATION_ITEM_LIST><DISPATCHNOTIFICATION_ITEM>{}\
                 </DISPATCHNOTIFICATION_ITEM></DISPATCHNOTIFICATION_ITEM_LIST>\
                 </DISPATCHNOTIFICATION>",
                ITEM.replace("B:", &format!("{prefix}:"))
            );
            let line = &note(&text).lines[0];
            assert_eq!(line.supplier_part_id.as_deref(), Some("A-1"), "{prefix}");
            assert_eq!(line.gtin.as_deref(), Some("4012345678901"));
            assert_eq!(line.unit.as_deref(), Some("C62"));
            assert_eq!(line.quantity.unwrap().to_string(), "2.5");
            assert_eq!(
                (line.order_ref.as_deref(), line.order_line.as_deref()),
                (Some("PO-1"), Some("9"))
            );
        }
    }

    #[test]
    fn a_foreign_namespace_is_not_bmecat() {
        let text = format!(
            "<DISPATCHNOTIFICATION xmlns='{OT}' xmlns:B='urn:other'>\
             <DISPATCHNOTIFICATION_ITEM_LIST><DISPATCHNOTIFICATION_ITEM>{ITEM}\
             </DISPATCHNOTIFICATION_ITEM></DISPATCHNOTIFICATION_ITEM_LIST></DISPATCHNOTIFICATION>"
        );
        let note = note(&text);
        assert_eq!(note.lines[0].supplier_part_id, None);
        assert_eq!(note.order_refs, ["PO-1"]);
    }
}
