//! The built-in standards: which one an attachment is, decided from its content alone (the
//! root element's namespace and local name; for cXML, the element inside
//! Request/Message/Response), and its documents from the module of that standard. File names
//! and MIME types play no part, so a `bestellung.txt` holding cXML is still read.

use super::{Attachment, Limits, Parsed, cxml, opentrans, ubl, xml};
use crate::error::Reject;

/// The openTRANS 2.1 namespace (openTRANS 2.1 specification, §2).
pub(crate) const OPENTRANS: &str = "http://www.opentrans.org/XMLSchema/2.1";
/// The namespace prefix every UBL 2.x main document namespace starts with.
const UBL_MAINDOC: &str = "urn:oasis:names:specification:ubl:schema:xsd:";

/// What the root element says the document is.
enum Kind {
    /// `<cXML>`: the envelope; the cXML module looks inside.
    Cxml,
    /// openTRANS 2.1 `<DISPATCHNOTIFICATION>`.
    DispatchNotification,
    /// UBL 2.x `<DespatchAdvice>`.
    DespatchAdvice,
    /// Any other XML, described for the `Ignored` reason (`an openTRANS ORDER`).
    Other(String),
}

impl Kind {
    fn of(ns: &str, name: &str) -> Kind {
        // Names are case-sensitive in XML, but an Office Depot PunchOutOrderMessage with a
        // `<cxml>` root circulates; its inside is regular cXML, so the root's case is forgiven.
        if ns.is_empty() && name.eq_ignore_ascii_case("cXML") {
            return Kind::Cxml;
        }
        match (ns, name) {
            (OPENTRANS, "DISPATCHNOTIFICATION") => Kind::DispatchNotification,
            (ubl::DESPATCH_ADVICE, "DespatchAdvice") => Kind::DespatchAdvice,
            (OPENTRANS, _) => Kind::Other(format!("an openTRANS {name}")),
            (ns, _) if ns.starts_with(UBL_MAINDOC) => Kind::Other(format!("a UBL {name}")),
            ("", _) => Kind::Other(format!("XML with the root element <{name}>")),
            (ns, _) => Kind::Other(format!("XML with the root element <{name}> in {ns}")),
        }
    }
}

/// Parses the attachment as a built-in standard when it is XML. `None`: not XML at all.
/// `Some(Ok(Parsed::Ignored))`: well-formed XML of a kind eingang does not read (or HTML).
/// `Some(Err)`: broken XML, a refused DTD, a limit, or a malformed value in a document
/// eingang reads. The documents are not validated for completeness here.
pub fn parse(attachment: &Attachment, limits: &Limits) -> Option<Result<Parsed, Reject>> {
    let file = attachment.name.as_str();
    let text = match xml::decode(&attachment.bytes, file)? {
        Ok(text) => text,
        Err(reject) => return Some(Err(reject)),
    };
    Some(parse_text(&text, file, limits.max_xml_depth))
}

fn parse_text(text: &str, file: &str, max_depth: usize) -> Result<Parsed, Reject> {
    let ignored =
        |what: &str| Parsed::Ignored(format!("{file} is {what}, not a delivery note or order"));
    let kind = match xml::root_name(text) {
        // HTML need not be well-formed XML, so it is told apart before the full parse.
        Some((_, name, html)) if html || name.eq_ignore_ascii_case("html") => {
            return Ok(ignored("an HTML document"));
        }
        Some((ns, name, _)) => Kind::of(&ns, &name),
        // Unreadable before the root: the full parse below words the error.
        None => Kind::Other("XML".to_owned()),
    };
    // Documents of other kinds are still read to the end (well-formed or rejected), but their
    // content is not kept: a large catalogue costs no memory.
    let keep = !matches!(kind, Kind::Other(_));
    let root = xml::parse(text, file, max_depth, keep)?;
    match kind {
        Kind::Cxml => cxml::parse(&root, file),
        Kind::DispatchNotification => Ok(Parsed::Documents(vec![opentrans::parse(&root, file)?])),
        Kind::DespatchAdvice => Ok(Parsed::Documents(vec![ubl::parse(&root, file)?])),
        Kind::Other(what) => Ok(ignored(&what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(text: &str) -> Option<Result<Parsed, Reject>> {
        let attachment = Attachment {
            name: "doc.xml".into(),
            content_type: None,
            bytes: text.as_bytes().to_vec(),
        };
        parse(&attachment, &Limits::with_defaults(Default::default()))
    }

    fn ignored(text: &str) -> String {
        match sniff(text) {
            Some(Ok(Parsed::Ignored(why))) => why,
            other => panic!("not ignored: {other:?}"),
        }
    }

    #[test]
    fn other_kinds_are_ignored_with_what_they_are() {
        let order = r#"<ORDER xmlns="http://www.opentrans.org/XMLSchema/2.1"><X/></ORDER>"#;
        assert_eq!(
            ignored(order),
            "doc.xml is an openTRANS ORDER, not a delivery note or order"
        );
        let ubl = r#"<o:Order xmlns:o="urn:oasis:names:specification:ubl:schema:xsd:Order-2"/>"#;
        assert_eq!(
            ignored(ubl),
            "doc.xml is a UBL Order, not a delivery note or order"
        );
        assert!(ignored("<catalog><item/></catalog>").contains("root element <catalog>"));
        assert!(ignored("<!DOCTYPE html><html><br></html>").contains("HTML document"));
    }

    #[test]
    fn the_namespace_decides_not_the_name() {
        let plain = "<DISPATCHNOTIFICATION><DISPATCHNOTIFICATION_HEADER/></DISPATCHNOTIFICATION>";
        assert!(ignored(plain).contains("root element <DISPATCHNOTIFICATION>"));
        let prefixed =
            r#"<ot:DISPATCHNOTIFICATION xmlns:ot="http://www.opentrans.org/XMLSchema/2.1"/>"#;
        assert!(matches!(sniff(prefixed), Some(Ok(Parsed::Documents(_)))));
    }

    #[test]
    fn broken_xml_of_any_kind_is_rejected() {
        for text in ["<catalog><item></catalog>", "<a/><b/>", "<a>&bogus;</a>"] {
            assert!(
                matches!(sniff(text), Some(Err(Reject::Malformed { .. }))),
                "{text}"
            );
        }
        assert!(sniff("Lieferschein;Menge").is_none());
    }
}
