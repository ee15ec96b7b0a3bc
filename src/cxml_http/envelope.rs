//! What the receiver reads of a cXML document before anything else: whether it is well-formed
//! cXML at all, who it says sent it (`Header/Sender/Credential`: `domain`, `Identity`,
//! `SharedSecret`), its `payloadID`, and which request or message it carries.
//!
//! The document is read with the same safe reader as every standard format (`format::xml`): a
//! DOCTYPE's external DTD is never fetched, an internal subset that declares entities is
//! refused, nesting is capped. The text handed on to the intake has every `SharedSecret`
//! blanked out (`***`), so that a partner's password never reaches the store, a notice or an
//! export (DESIGN.md promise 6).

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::format::xml::{self, Element};

/// A credential of the Header (`From`, `To` or `Sender`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credential {
    /// `Credential@domain`.
    pub domain: String,
    /// `Identity`.
    pub identity: String,
    /// `SharedSecret`, when the credential carries one.
    pub shared_secret: Option<String>,
}

/// What the document holds: `Request/<name>`, `Message/<name>`, or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A Request, by the name of its document element (`OrderRequest`, `ProfileRequest`).
    Request(String),
    /// A Message (`PunchOutOrderMessage`).
    Message(String),
    /// A Response or an empty envelope, in words.
    Other(String),
}

impl Body {
    /// The name of the document element, or what the envelope holds instead.
    pub fn name(&self) -> &str {
        match self {
            Body::Request(n) | Body::Message(n) | Body::Other(n) => n,
        }
    }
}

/// A cXML document as the receiver sees it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `cXML@payloadID`, trimmed.
    pub payload_id: Option<String>,
    /// `Header/Sender/Credential`, in document order.
    pub sender: Vec<Credential>,
    /// `Header/From/Credential`, in document order.
    pub from: Vec<Credential>,
    /// What it carries.
    pub body: Body,
    /// The document as UTF-8 text, every `SharedSecret` blanked out: what is stored.
    pub redacted: String,
}

/// Reads a cXML document. `Err` is the reason it is not acceptable (cXML 406): not XML, not
/// well-formed, a refused DTD, too deep, or not cXML.
pub fn read(bytes: &[u8], max_depth: usize) -> Result<Envelope, String> {
    const NAME: &str = "the request";
    let text = match xml::decode(bytes, NAME) {
        None => return Err("the body is not XML".to_owned()),
        Some(Err(reject)) => return Err(reject.to_string()),
        Some(Ok(text)) => text,
    };
    let root = xml::parse(&text, NAME, max_depth, true).map_err(|r| r.to_string())?;
    if !(root.ns.is_empty() && root.name.eq_ignore_ascii_case("cXML")) {
        return Err(format!(
            "not a cXML document: the root element is <{}>",
            root.name
        ));
    }
    let header = root.child("", "Header");
    let credentials = |party: &str| -> Vec<Credential> {
        header
            .and_then(|h| h.child("", party))
            .map(|p| p.children_named("", "Credential").map(credential).collect())
            .unwrap_or_default()
    };
    let first_element = |wrapper: &Element| {
        wrapper
            .children
            .iter()
            .find(|c| !c.is("", "Status"))
            .map(|c| c.name.clone())
    };
    let body = if let Some(request) = root.child("", "Request") {
        match first_element(request) {
            Some(name) => Body::Request(name),
            None => Body::Other("an empty Request".to_owned()),
        }
    } else if let Some(message) = root.child("", "Message") {
        match first_element(message) {
            Some(name) => Body::Message(name),
            None => Body::Other("an empty Message".to_owned()),
        }
    } else if root.child("", "Response").is_some() {
        Body::Other("a Response".to_owned())
    } else {
        Body::Other("neither a Request nor a Message".to_owned())
    };
    Ok(Envelope {
        payload_id: root.attr("payloadID").map(str::to_owned),
        sender: credentials("Sender"),
        from: credentials("From"),
        body,
        redacted: redact_secrets(&text),
    })
}

fn credential(element: &Element) -> Credential {
    Credential {
        domain: element.attr("domain").unwrap_or_default().to_owned(),
        identity: element.text_at(&[("", "Identity")]).unwrap_or_default(),
        shared_secret: element
            .child("", "SharedSecret")
            .map(|s| s.text().unwrap_or_default().to_owned()),
    }
}

/// The text with the content of every `SharedSecret` element replaced by `***`. The text is
/// well-formed (`xml::parse` said so); should the reader still fail, nothing after the failure
/// is kept, so that no secret can slip through.
fn redact_secrets(text: &str) -> String {
    let mut reader = Reader::from_str(text);
    let mut spans = Vec::new();
    let mut open: Option<(usize, usize)> = None; // (depth of the SharedSecret, content start)
    let mut depth = 0usize;
    let mut cut_at = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                depth += 1;
                if open.is_none() && start.local_name().as_ref() == "SharedSecret" {
                    let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
                    open = Some((depth, after));
                }
            }
            Ok(Event::End(_)) => {
                if let Some((at, start)) = open
                    && at == depth
                {
                    spans.push((start, before));
                    open = None;
                }
                depth = depth.saturating_sub(1);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(_) => {
                cut_at = Some(before);
                break;
            }
        }
    }
    if let Some((_, start)) = open {
        cut_at = Some(cut_at.map_or(start, |c| c.min(start)));
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for (start, end) in spans {
        out.push_str(text.get(from..start).unwrap_or_default());
        out.push_str("***");
        from = end;
    }
    let end = cut_at.unwrap_or(text.len()).max(from);
    out.push_str(text.get(from..end).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.063/cXML.dtd">
<cXML payloadID=" p-1@buyer " timestamp="2026-11-20T09:00:00+01:00">
  <Header>
    <From><Credential domain="NetworkID"><Identity>AN01</Identity></Credential></From>
    <To><Credential domain="DUNS"><Identity>123</Identity></Credential></To>
    <Sender><Credential domain="NetworkID"><Identity>AN01</Identity>
      <SharedSecret>ge&amp;heim</SharedSecret></Credential><UserAgent>Test</UserAgent></Sender>
  </Header>
  <Request deploymentMode="production"><OrderRequest/></Request>
</cXML>"#;

    #[test]
    fn the_header_and_the_request_are_read_and_the_secret_is_blanked() {
        let envelope = read(ORDER.as_bytes(), 64).unwrap();
        assert_eq!(envelope.payload_id.as_deref(), Some("p-1@buyer"));
        assert_eq!(envelope.body, Body::Request("OrderRequest".into()));
        assert_eq!(
            envelope.sender,
            [Credential {
                domain: "NetworkID".into(),
                identity: "AN01".into(),
                shared_secret: Some("ge&heim".into())
            }]
        );
        assert_eq!(envelope.from[0].shared_secret, None);
        assert!(!envelope.redacted.contains("heim"), "{}", envelope.redacted);
        assert!(
            envelope
                .redacted
                .contains("<SharedSecret>***</SharedSecret>")
        );
        assert_eq!(
            envelope
                .redacted
                .replace("<SharedSecret>***</SharedSecret>", ""),
            ORDER.replace("<SharedSecret>ge&amp;heim</SharedSecret>", "")
        );
    }

    #[test]
    fn broken_xml_entities_and_other_roots_are_not_acceptable() {
        let broken = read(b"<cXML><Header></cXML>", 64).unwrap_err();
        assert!(broken.contains("not well-formed"), "{broken}");
        let entities = read(
            b"<!DOCTYPE cXML [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><cXML>&e;</cXML>",
            64,
        )
        .unwrap_err();
        assert!(entities.contains("entity"), "{entities}");
        assert!(
            read(b"<order/>", 64)
                .unwrap_err()
                .contains("root element is <order>")
        );
        assert_eq!(read(b"hello", 64).unwrap_err(), "the body is not XML");
        let deep = format!("<cXML>{}{}</cXML>", "<a>".repeat(70), "</a>".repeat(70));
        assert!(read(deep.as_bytes(), 64).unwrap_err().contains("too large"));
    }

    #[test]
    fn messages_and_responses_are_told_apart() {
        let message = read(
            b"<cXML><Message><PunchOutOrderMessage/></Message></cXML>",
            8,
        );
        assert_eq!(
            message.unwrap().body,
            Body::Message("PunchOutOrderMessage".into())
        );
        let response = read(
            b"<cXML><Response><Status code=\"200\"/></Response></cXML>",
            8,
        );
        assert_eq!(response.unwrap().body, Body::Other("a Response".into()));
    }

    #[test]
    fn a_secret_in_cdata_or_in_every_credential_is_blanked() {
        let text = "<cXML><Header><From><Credential domain=\"d\"><Identity>i</Identity><SharedSecret><![CDATA[s1]]></SharedSecret></Credential></From><Sender><Credential domain=\"d\"><Identity>i</Identity><SharedSecret>s2</SharedSecret></Credential></Sender></Header></cXML>";
        let redacted = read(text.as_bytes(), 8).unwrap().redacted;
        assert!(
            !redacted.contains("s1") && !redacted.contains("s2"),
            "{redacted}"
        );
        assert_eq!(redacted.matches("***").count(), 2);
    }
}
