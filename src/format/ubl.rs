//! UBL 2.x DespatchAdvice → a delivery note (UBL 2.0 and 2.1, Peppol BIS Despatch Advice 3).
//!
//! Elements are matched in the UBL common aggregate (`cac`) and basic (`cbc`) component
//! namespaces, whatever prefixes the document binds to them.

use super::xml::{self, Element};
use crate::error::Reject;
use crate::model::{DeliveryLine, DeliveryNote, Document};

/// The namespace of the DespatchAdvice document element (the same for UBL 2.0 to 2.3).
pub const DESPATCH_ADVICE: &str = "urn:oasis:names:specification:ubl:schema:xsd:DespatchAdvice-2";
const CAC: &str = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2";
const CBC: &str = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2";

/// Reads a `<DespatchAdvice>` root element.
pub fn parse(root: &Element, file: &str) -> Result<Document, Reject> {
    let mut order_refs: Vec<String> = root
        .children_named(CAC, "OrderReference")
        .filter_map(|r| r.text_at(&[(CBC, "ID")]))
        .collect();
    // A despatch advice for one order need not repeat it on every line (Peppol BIS
    // Despatch Advice: OrderLineReference/OrderReference is optional), so lines inherit it.
    let single_order = match order_refs.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    };
    let lines = root
        .children_named(CAC, "DespatchLine")
        .enumerate()
        .map(|(index, l)| line(l, index, single_order.as_deref(), file))
        .collect::<Result<Vec<_>, _>>()?;
    for order in lines.iter().filter_map(|l| l.order_ref.as_ref()) {
        if !order_refs.contains(order) {
            order_refs.push(order.clone());
        }
    }
    let date = root.child(CBC, "IssueDate").and_then(Element::text);
    Ok(Document::DeliveryNote(DeliveryNote {
        format: "ubl-despatch-advice".to_owned(),
        supplier: None,
        number: root.text_at(&[(CBC, "ID")]).unwrap_or_default(),
        date: xml::date(file, "date", date)?,
        order_refs,
        lines,
        file: file.to_owned(),
        date_text: None,
    }))
}

/// One DespatchLine.
fn line(
    despatch_line: &Element,
    index: usize,
    single_order: Option<&str>,
    file: &str,
) -> Result<DeliveryLine, Reject> {
    let line_no = despatch_line
        .text_at(&[(CBC, "ID")])
        .unwrap_or_else(|| (index + 1).to_string());
    let quantity = despatch_line.child(CBC, "DeliveredQuantity");
    let order_line = despatch_line.child(CAC, "OrderLineReference");
    let item = despatch_line.child(CAC, "Item");
    let item_id =
        |identification| item.and_then(|i| i.text_at(&[(CAC, identification), (CBC, "ID")]));
    // StandardItemIdentification/ID is a GTIN when its scheme says so: ISO 6523 ICD 0160
    // (GS1 GTIN, as Peppol writes it) or the literal "GTIN" (UBL 2.0 examples).
    let gtin = item
        .into_iter()
        .flat_map(|i| i.children_named(CAC, "StandardItemIdentification"))
        .filter_map(|s| s.child(CBC, "ID"))
        .filter(|id| {
            id.attr("schemeID")
                .is_some_and(|s| s == "0160" || s.eq_ignore_ascii_case("GTIN"))
        })
        .find_map(Element::text);
    let description = item.and_then(|i| {
        i.child(CBC, "Name")
            .and_then(Element::text)
            .or_else(|| i.child(CBC, "Description").and_then(Element::text))
    });
    let order_ref = order_line
        .and_then(|o| o.text_at(&[(CAC, "OrderReference"), (CBC, "ID")]))
        .or_else(|| single_order.map(str::to_owned));
    Ok(DeliveryLine {
        supplier_part_id: item_id("SellersItemIdentification"),
        buyer_part_id: item_id("BuyersItemIdentification"),
        gtin: gtin.map(str::to_owned),
        description: description.map(xml::one_line),
        quantity: xml::decimal(
            file,
            Some(&line_no),
            "quantity",
            quantity.and_then(Element::text),
        )?,
        unit: quantity.and_then(|q| q.attr("unitCode")).map(str::to_owned),
        order_ref,
        order_line: order_line.and_then(|o| o.text_at(&[(CBC, "LineID")])),
        line_no,
        ..DeliveryLine::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(body: &str) -> Result<DeliveryNote, Reject> {
        let text = format!(
            "<d:DespatchAdvice xmlns:d='{DESPATCH_ADVICE}' xmlns:a='{CAC}' xmlns:b='{CBC}'>\
             <b:ID>D-1</b:ID><b:IssueDate>2026-11-20</b:IssueDate>{body}</d:DespatchAdvice>"
        );
        let root = xml::parse(&text, "da.xml", 64, true).unwrap();
        parse(&root, "da.xml").map(|doc| match doc {
            Document::DeliveryNote(note) => note,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn lines_inherit_the_single_order() {
        let note = note(
            "<a:OrderReference><b:ID>PO-7</b:ID></a:OrderReference>\
             <a:DespatchLine><b:ID>1</b:ID><b:DeliveredQuantity unitCode='KGM'>3.000\
             </b:DeliveredQuantity><a:Item><b:Description>Wachs</b:Description>\
             <a:StandardItemIdentification><b:ID schemeID='0088'>1</b:ID>\
             </a:StandardItemIdentification><a:StandardItemIdentification>\
             <b:ID schemeID='0160'>07311100000047</b:ID></a:StandardItemIdentification>\
             </a:Item></a:DespatchLine>",
        )
        .unwrap();
        assert_eq!(
            (note.number.as_str(), note.order_refs.as_slice()),
            ("D-1", &["PO-7".to_owned()][..])
        );
        let line = &note.lines[0];
        assert_eq!(line.quantity.unwrap().to_string(), "3");
        assert_eq!(line.unit.as_deref(), Some("KGM"));
        assert_eq!(line.gtin.as_deref(), Some("07311100000047"));
        assert_eq!(line.description.as_deref(), Some("Wachs"));
        assert_eq!(line.order_ref.as_deref(), Some("PO-7"));
    }

    #[test]
    fn a_bad_quantity_names_the_line() {
        let err = note(
            "<a:DespatchLine><b:ID>2A</b:ID><b:DeliveredQuantity>1e3</b:DeliveredQuantity></a:DespatchLine>",
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            r#"da.xml: line 2A: quantity "1e3" is not a decimal number"#
        );
    }
}
