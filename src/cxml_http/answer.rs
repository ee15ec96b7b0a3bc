//! The receiver's answers: a cXML `Response` with its `Status` (CONTRACT.md, HTTP), the
//! `ProfileResponse`, and how a committed outcome becomes a status code.
//!
//! Every answer is carried by HTTP 200 except a transient failure (HTTP 500, so that buyers
//! whose retry logic looks only at the HTTP status retry too, RECIPES.md §4 "Open risks") and
//! the refusals made before a request was read at all (413 too large, 408 too slow, 503 too
//! many connections), which say so in HTTP as well. The codes follow the cXML User's Guide
//! (Status): 200 OK; permanent 400, 401, 403, 406, 409, 450; transient 500.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The request types `POST /cxml` takes, as the ProfileResponse names them.
pub const TRANSACTIONS: &[&str] = &["OrderRequest", "ShipNoticeRequest", "ProfileRequest"];
/// The DTD a cXML answer names (never fetched by anyone who reads it right).
const DOCTYPE: &str =
    r#"<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.063/cXML.dtd">"#;
/// The longest detail carried in a Status; reasons are short, but a file name could be long.
const MAX_DETAIL_CHARS: usize = 500;

/// One answer: the HTTP status that carries it, the cXML status and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub http: u16,
    /// The cXML `Status@code`.
    pub code: u16,
    /// The cXML `Status@text`, the code's standard words.
    pub text: &'static str,
    /// The Status content: what was done or what is wrong, in one line.
    pub detail: String,
}

impl Answer {
    /// A cXML status carried by HTTP 200.
    pub fn status(code: u16, detail: impl Into<String>) -> Answer {
        Answer {
            http: 200,
            code,
            text: words(code),
            detail: one_line(&detail.into()),
        }
    }

    /// A transient failure: HTTP 500 and cXML 500, to be retried with the same payloadID.
    pub fn transient(detail: impl Into<String>) -> Answer {
        Answer {
            http: 500,
            ..Answer::status(500, detail)
        }
    }

    /// A refusal before the request was read: the HTTP status is the cXML code.
    pub fn refusal(code: u16, detail: impl Into<String>) -> Answer {
        Answer {
            http: code,
            ..Answer::status(code, detail)
        }
    }

    /// The answer to a committed item, from what the ledger holds: imported, or rejected
    /// with its label and reason. Rebuilt the same way for a repeated payloadID.
    pub fn for_outcome(item_id: i64, label: Option<&str>, reason: Option<&str>) -> Answer {
        match (label, reason) {
            (None, None) => Answer::status(200, format!("accepted as item {item_id}")),
            (label, reason) => Answer::status(
                code_of(label),
                format!("item {item_id}: {}", reason.unwrap_or("rejected")),
            ),
        }
    }

    /// The whole cXML document.
    pub fn document(&self) -> String {
        envelope(&self.status_element())
    }

    /// `<Status code text>detail</Status>`.
    fn status_element(&self) -> String {
        format!(
            r#"<Status code="{}" text="{}">{}</Status>"#,
            self.code,
            escape(self.text),
            escape(&self.detail)
        )
    }

    /// Whether the request was taken (cXML 2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// The ProfileResponse: the transactions `POST /cxml` takes, each at `url`.
pub fn profile(url: &str) -> String {
    let now = timestamp();
    let mut inner = format!(
        r#"{}<ProfileResponse effectiveDate="{now}">"#,
        Answer::status(200, "").status_element()
    );
    for name in TRANSACTIONS {
        let _ = write!(
            inner,
            r#"<Transaction requestName="{name}"><URL>{}</URL></Transaction>"#,
            escape(url)
        );
    }
    inner.push_str("</ProfileResponse>");
    envelope(&inner)
}

fn envelope(response: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
{DOCTYPE}
<cXML payloadID="{}" timestamp="{}" xml:lang="en"><Response>{response}</Response></cXML>
"#,
        payload_id(),
        timestamp()
    )
}

/// The cXML code for a rejection, by its label (`Reject::label`).
fn code_of(label: Option<&str>) -> u16 {
    match label.unwrap_or_default() {
        "duplicate" | "conflict" | "already imported" => 409,
        "not the original sender" => 403,
        "sender not authenticated" => 401,
        "unreadable file" | "too large" => 406,
        "unsupported format" | "no document" => 450,
        // Missing fields, bad values, a document that crashed the parser: permanent.
        _ => 400,
    }
}

/// The standard words of a code (cXML User's Guide, Status).
fn words(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        450 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Our own payloadID, in the recommended form `datetime.process.random@host`.
fn payload_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    format!(
        "{}.{}.{}{:08x}@eingang",
        chrono::Utc::now().timestamp_millis(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        u32::from_be_bytes(random)
    )
}

fn timestamp() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Text for an XML attribute or element: the five special characters as references,
/// control characters dropped (XML 1.0 allows none but tab, LF and CR).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", line.get(..cut).unwrap_or_default()),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_a_cxml_response_with_its_status() {
        let doc = Answer::status(401, "unknown sender <x> & \"y\"").document();
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE cXML"));
        assert!(
            doc.contains(
                r#"<Response><Status code="401" text="Unauthorized">unknown sender &lt;x&gt; &amp; &quot;y&quot;</Status></Response>"#
            ),
            "{doc}"
        );
        let read = crate::format::xml::parse(&doc, "answer", 8, true).unwrap();
        assert!(read.attr("payloadID").unwrap().ends_with("@eingang"));
    }

    #[test]
    fn outcomes_map_to_codes_and_only_transient_ones_leave_http_200() {
        assert_eq!(Answer::for_outcome(7, None, None).code, 200);
        let code = |label| Answer::for_outcome(7, Some(label), Some("why")).code;
        assert_eq!(code("missing field"), 400);
        assert_eq!(code("bad value"), 400);
        assert_eq!(code("duplicate"), 409);
        assert_eq!(code("not the original sender"), 403);
        assert_eq!(code("unreadable file"), 406);
        assert_eq!(
            Answer::for_outcome(7, Some("bad value"), Some("why")).http,
            200
        );
        assert_eq!(
            Answer::for_outcome(7, Some("bad value"), Some("x\ny")).detail,
            "item 7: x y"
        );
        assert_eq!(Answer::transient("store busy").http, 500);
        assert_eq!(Answer::refusal(413, "too large").http, 413);
    }

    #[test]
    fn the_profile_names_every_transaction_at_its_url() {
        let doc = profile("https://eingang.example:8443/cxml");
        let read = crate::format::xml::parse(&doc, "profile", 8, true).unwrap();
        let profile = read
            .at(&[("", "Response"), ("", "ProfileResponse")])
            .unwrap();
        let names: Vec<&str> = profile
            .children_named("", "Transaction")
            .filter_map(|t| t.attr("requestName"))
            .collect();
        assert_eq!(names, TRANSACTIONS);
        assert_eq!(
            profile.children[0].text_at(&[("", "URL")]).as_deref(),
            Some("https://eingang.example:8443/cxml")
        );
    }
}
