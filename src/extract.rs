//! Step 2 of the flow: MIME → attachments.
//!
//! Owns the reading of a message: its envelope (sender, subject, Message-ID, date) and every
//! attachment, also inside forwarded `message/rfc822` parts. Attachment bytes are cut from the
//! raw message and only transfer-decoded, never charset-decoded: mail-parser decodes text parts
//! lossily when no charset is declared (CRATES.md), which would destroy a Windows-1252 CSV.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::{Encoding, Message, MessageParser, MimeHeaders, PartType};

use crate::error::Reject;
use crate::format::Attachment;

/// Nested messages deeper than this are not searched for attachments.
const MAX_NESTED_MESSAGES: usize = 8;
/// More attachments than this in one message is a rejection, not a loop.
const MAX_ATTACHMENTS: usize = 1000;

/// The header facts of a message that notifications and the ledger keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The From address, lowercase.
    pub sender: Option<String>,
    /// The decoded Subject.
    pub subject: Option<String>,
    /// The Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The Date header, as RFC 3339.
    pub date: Option<String>,
    /// Whether it carries `X-Eingang-Notice`, the header of eingang's own notices.
    pub notice_marker: bool,
}

/// A message taken apart.
#[derive(Debug)]
pub struct Extracted {
    /// Its envelope.
    pub envelope: Envelope,
    /// Every attachment that could be a document, in message order.
    pub attachments: Vec<Attachment>,
    /// Names of the parts that were skipped (images, PDFs, bodies), for the rejection text.
    pub skipped: Vec<String>,
}

/// Parses a message and collects its attachments. `name` names the message in rejections.
pub fn message(bytes: &[u8], name: &str) -> Result<Extracted, Reject> {
    // mail-parser documents that it never panics; a fuzz-found slice bug (mail-parser#145,
    // #155) must still cost one item, not the watcher.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let message = MessageParser::default().parse(bytes)?;
        let mut out = Extracted {
            envelope: envelope_of(&message),
            attachments: Vec::new(),
            skipped: Vec::new(),
        };
        collect(&message, message.raw_message(), 0, &mut out);
        Some(out)
    }));
    let extracted = match parsed {
        Ok(Some(extracted)) => extracted,
        Ok(None) => return Err(Reject::malformed(name, "not a readable e-mail message")),
        Err(_) => {
            return Err(Reject::malformed(
                name,
                "the MIME parser failed on this message",
            ));
        }
    };
    if extracted.attachments.len() > MAX_ATTACHMENTS {
        return Err(Reject::too_large(
            name,
            format!("more than {MAX_ATTACHMENTS} attachments"),
        ));
    }
    Ok(extracted)
}

fn envelope_of(message: &Message<'_>) -> Envelope {
    let sender = message
        .from()
        .and_then(|from| from.first())
        .and_then(|addr| addr.address())
        .map(|a| a.trim().to_ascii_lowercase());
    Envelope {
        sender,
        subject: message.subject().map(str::to_owned),
        message_id: message.message_id().map(str::to_owned),
        date: message.date().map(|d| d.to_rfc3339()),
        notice_marker: message.header("X-Eingang-Notice").is_some(),
    }
}

/// `raw` is the buffer the part offsets point into: the outer message for a nested message
/// that was not transfer-encoded (mail-parser keeps the outer offsets there), the nested
/// message's own decoded bytes for a base64/QP-encoded one (parsed on its own).
fn collect(message: &Message<'_>, raw: &[u8], depth: usize, out: &mut Extracted) {
    for (index, part) in message.parts.iter().enumerate() {
        if out.attachments.len() > MAX_ATTACHMENTS {
            return;
        }
        match &part.body {
            PartType::Multipart(_) => continue,
            PartType::Message(nested) => {
                if depth < MAX_NESTED_MESSAGES {
                    let nested_raw = match part.encoding {
                        Encoding::None => raw,
                        Encoding::Base64 | Encoding::QuotedPrintable => nested.raw_message(),
                    };
                    collect(nested, nested_raw, depth + 1, out);
                }
                continue;
            }
            _ => {}
        }
        let content_type = part.content_type().map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        });
        let name = part.attachment_name().map(clean_name);
        let is_document_type = content_type.as_deref().is_some_and(is_document_type);
        let name = match (name, is_document_type) {
            (Some(name), _) if !name.is_empty() => name,
            (_, true) => format!(
                "part-{}{}",
                index + 1,
                extension_for(content_type.as_deref().unwrap_or_default())
            ),
            _ => {
                if part.is_binary() {
                    out.skipped
                        .push(content_type.unwrap_or_else(|| "binary part".to_owned()));
                }
                continue;
            }
        };
        let start = part.raw_body_offset() as usize;
        let end = part.raw_end_offset() as usize;
        let body = raw.get(start..end.max(start)).unwrap_or_default();
        let bytes = match (&part.body, part.encoding) {
            // A binary part's body is what the parser transfer-decoded, bytes as sent: no
            // second decode. A text part's body was charset-decoded too, so its own bytes
            // are decoded again from the raw message.
            (PartType::Binary(decoded) | PartType::InlineBinary(decoded), Encoding::Base64)
            | (
                PartType::Binary(decoded) | PartType::InlineBinary(decoded),
                Encoding::QuotedPrintable,
            ) => Some(decoded.to_vec()),
            (_, Encoding::Base64) => mail_parser::decoders::base64::base64_decode(body),
            (_, Encoding::QuotedPrintable) => {
                mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
            }
            (_, Encoding::None) => Some(body.to_vec()),
        };
        match bytes {
            Some(bytes) => out.attachments.push(Attachment {
                name,
                content_type: content_type.filter(|t| t != "application/octet-stream"),
                bytes,
            }),
            None => out
                .skipped
                .push(format!("{name} (undecodable transfer encoding)")),
        }
    }
}

/// Types that are documents even without a file name (a cXML order sent as the body).
fn is_document_type(content_type: &str) -> bool {
    matches!(
        content_type,
        "application/xml" | "text/xml" | "text/csv" | "application/csv"
    ) || content_type.contains("spreadsheet")
        || content_type.contains("ms-excel")
}

fn extension_for(content_type: &str) -> &'static str {
    if content_type.contains("xml") {
        ".xml"
    } else if content_type.contains("csv") {
        ".csv"
    } else {
        ""
    }
}

/// Keeps the name as sent, minus path parts and control characters: it is shown to people and
/// matched against globs, never used as a path.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eml(parts: &str) -> Vec<u8> {
        format!(
            "From: Lager <LS@Acme.de>\r\nSubject: Lieferschein\r\nMessage-ID: <m1@acme.de>\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{parts}--b--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn windows_1252_csv_without_charset_keeps_its_bytes() {
        // "Käse;1,5" in Windows-1252, base64: S+RzZTsxLDU=
        let bytes = eml(
            "--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"ls.csv\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\nS+RzZTsxLDU=\r\n",
        );
        let out = message(&bytes, "m.eml").unwrap();
        assert_eq!(out.envelope.sender.as_deref(), Some("ls@acme.de"));
        assert_eq!(out.envelope.message_id.as_deref(), Some("m1@acme.de"));
        assert_eq!(out.attachments.len(), 1);
        assert_eq!(out.attachments[0].bytes, b"K\xe4se;1,5");
    }

    #[test]
    fn every_byte_of_an_encoded_attachment_arrives_as_sent_whatever_its_type() {
        let sent: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let qp: String = sent
            .iter()
            .map(|b| format!("={b:02X}"))
            .collect::<Vec<_>>()
            .chunks(25)
            .map(|c| c.concat())
            .collect::<Vec<_>>()
            .join("=\r\n");
        for (content_type, encoding, body) in [
            (
                "text/csv; charset=windows-1252",
                "base64",
                base64_lines(&sent),
            ),
            ("application/octet-stream", "base64", base64_lines(&sent)),
            ("application/vnd.ms-excel", "base64", base64_lines(&sent)),
            ("application/xml", "base64", base64_lines(&sent)),
            ("application/octet-stream", "quoted-printable", qp.clone()),
            ("text/csv", "quoted-printable", qp.clone()),
        ] {
            let bytes = eml(&format!(
                "--b\r\nContent-Type: {content_type}; name=\"ls.csv\"\r\n\
                 Content-Disposition: attachment; filename=\"ls.csv\"\r\n\
                 Content-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n"
            ));
            let out = message(&bytes, "m.eml").unwrap();
            assert_eq!(out.attachments.len(), 1, "{content_type} {encoding}");
            assert_eq!(out.attachments[0].bytes, sent, "{content_type} {encoding}");
        }
    }

    #[test]
    fn octet_stream_counts_by_its_name_and_body_text_does_not() {
        let bytes = eml("--b\r\nContent-Type: text/plain\r\n\r\nHallo\r\n\
             --b\r\nContent-Type: application/octet-stream; name=\"LS_1.csv\"\r\n\r\na;b\r\n");
        let out = message(&bytes, "m.eml").unwrap();
        assert_eq!(out.attachments.len(), 1);
        assert_eq!(out.attachments[0].name, "LS_1.csv");
        assert_eq!(out.attachments[0].content_type, None);
    }

    #[test]
    fn rfc2231_and_rfc2047_names_are_decoded() {
        let bytes = eml(
            "--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment;\r\n filename*=UTF-8''Lieferschein%20M%C3%BCller.csv\r\n\r\nx\r\n\
             --b\r\nContent-Type: text/xml; name=\"=?UTF-8?Q?Bestellung_=C3=BC.xml?=\"\r\n\r\n<a/>\r\n",
        );
        let out = message(&bytes, "m.eml").unwrap();
        let names: Vec<&str> = out.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["Lieferschein Müller.csv", "Bestellung ü.xml"]);
    }

    #[test]
    fn forwarded_message_attachments_are_found() {
        let inner = "From: ls@acme.de\r\nSubject: inner\r\nMIME-Version: 1.0\r\n\
                     Content-Type: multipart/mixed; boundary=\"i\"\r\n\r\n\
                     --i\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n\
                     --i\r\nContent-Type: text/csv; name=\"inner.csv\"\r\n\r\nq;1\r\n--i--\r\n";
        let bytes = eml(&format!(
            "--b\r\nContent-Type: text/plain\r\n\r\nFYI\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n{inner}"
        ));
        let out = message(&bytes, "m.eml").unwrap();
        let names: Vec<&str> = out.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["inner.csv"]);
        assert_eq!(out.attachments[0].bytes, b"q;1");

        // The same forward, base64-encoded: parsed on its own, offsets into its own bytes.
        let encoded = base64_lines(inner.as_bytes());
        let bytes = eml(&format!(
            "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n"
        ));
        let out = message(&bytes, "m.eml").unwrap();
        assert_eq!(out.attachments.len(), 1);
        assert_eq!(out.attachments[0].bytes, b"q;1");
    }

    fn base64_lines(bytes: &[u8]) -> String {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        lines.join("\r\n")
    }

    #[test]
    fn path_parts_and_control_characters_leave_names() {
        assert_eq!(clean_name("../../etc/pass\u{0}wd"), "passwd");
        assert_eq!(clean_name("C:\\temp\\ls.csv"), "ls.csv");
    }
}
