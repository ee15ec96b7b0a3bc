//! The standard XML parsers against the shared corpus of real, externally written samples,
//! and the XML safety properties (entities, external DTDs, deep nesting) on inputs generated
//! here.
//!
//! Which samples are in scope, and how many items each holds, is decided by an oracle that
//! looks for start tags in the text (`<ItemOut`, `<bmecat:X>`-style prefixes included), not
//! by the parser under test.

use std::net::TcpListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eingang::error::Reject;
use eingang::format::standard;
use eingang::format::{Attachment, Limits, Parsed};
use eingang::model::{self, Document};

/// Samples that are broken as published (SOURCES.md, "Reading notes"): not well-formed, or
/// a cXML envelope around an element no cXML DTD defines.
const KNOWN_MALFORMED: &[&str] = &[
    "cxml/dnas-marketplace-ShipNoticeRequest.xml",
    "cxml/business-cxml-unintelligible-response.xml",
    "cxml/business-cxml-garbage-request.xml",
    "cxml/business-cxml-garbage-response.xml",
];

/// In-scope samples that parse but are incomplete as published, with the reason
/// `model::validate` gives. They are real gaps in the samples, kept as they are.
const KNOWN_INCOMPLETE: &[(&str, &str)] = &[
    (
        "cxml/business-cxml-punchoutorder2-message.xml",
        "business-cxml-punchoutorder2-message.xml: lines is missing",
    ),
    (
        "cxml/business-cxml-punchoutorder3-message.xml",
        "business-cxml-punchoutorder3-message.xml: lines is missing",
    ),
    (
        "cxml/friendsofcxml-ShipNoticeRequest.xml",
        "friendsofcxml-ShipNoticeRequest.xml: lines is missing",
    ),
    (
        "cxml/officeluv-punch_out_order_message_doc.xml",
        "officeluv-punch_out_order_message_doc.xml: lines is missing",
    ),
];

fn corpus() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    assert!(
        dir.is_dir(),
        "the shared sample corpus is missing: expected it at {} (beside the repository); \
         this suite needs it, plain `cargo test` does not",
        dir.display()
    );
    dir
}

fn limits() -> Limits {
    Limits::with_defaults(PathBuf::new())
}

/// The day the samples are validated on, fixed so that the suite does not age.
fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date")
}

fn parse(name: &str, bytes: &[u8]) -> Option<Result<Parsed, Reject>> {
    let attachment = Attachment {
        name: name.to_owned(),
        content_type: None,
        bytes: bytes.to_vec(),
    };
    standard::parse(&attachment, &limits())
}

/// Every file below `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("corpus folder is readable") {
        let path = entry.expect("corpus entry is readable").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// How many start tags of `local` the text holds, with or without a prefix.
fn start_tags(text: &str, local: &str) -> usize {
    text.match_indices(local)
        .filter(|(at, _)| {
            let before = text.get(..*at).unwrap_or_default();
            let after = text.get(at + local.len()..).unwrap_or_default();
            let ends_name = after.starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/');
            let opened = match before.strip_suffix(':') {
                Some(prefixed) => prefixed
                    .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || "_-.".contains(c))
                    .ends_with('<'),
                None => before.ends_with('<'),
            };
            ends_name && opened
        })
        .count()
}

/// The oracle: the format an in-scope sample must parse as, and its number of items.
fn expected(text: &str) -> Option<(&'static str, usize)> {
    let kinds = [
        ("OrderRequest", "cxml-order-request", "ItemOut"),
        (
            "PunchOutOrderMessage",
            "cxml-punchout-order-message",
            "ItemIn",
        ),
        ("ShipNoticeRequest", "cxml-ship-notice", "ShipNoticeItem"),
        (
            "DISPATCHNOTIFICATION",
            "opentrans-2.1",
            "DISPATCHNOTIFICATION_ITEM",
        ),
        ("DespatchAdvice", "ubl-despatch-advice", "DespatchLine"),
    ];
    kinds
        .iter()
        .find(|(document, _, _)| start_tags(text, document) > 0)
        .map(|(_, format, item)| (*format, start_tags(text, item)))
}

fn line_count(document: &Document) -> usize {
    match document {
        Document::DeliveryNote(note) => note.lines.len(),
        Document::Order(order) => order.lines.len(),
    }
}

#[test]
fn every_corpus_sample_parses_rejects_or_is_ignored() {
    let root = corpus();
    let mut failures = Vec::new();
    let mut in_scope: Vec<(&str, String)> = Vec::new();
    let mut incomplete: Vec<(String, String)> = Vec::new();
    for folder in ["cxml", "opentrans", "ubl"] {
        for path in files(&root.join(folder)) {
            let rel = path
                .strip_prefix(&root)
                .expect("below the corpus")
                .display()
                .to_string();
            let bytes = std::fs::read(&path).expect("sample is readable");
            // Tags are ASCII in every sample's encoding, so a lossy view suffices to count.
            let oracle = expected(&String::from_utf8_lossy(&bytes));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("sample.xml");
            let outcome = match catch_unwind(AssertUnwindSafe(|| parse(name, &bytes))) {
                Ok(outcome) => outcome,
                Err(_) => {
                    failures.push(format!("{rel}: panicked"));
                    continue;
                }
            };
            if KNOWN_MALFORMED.contains(&rel.as_str()) {
                if !matches!(outcome, Some(Err(_))) {
                    failures.push(format!("{rel}: known malformed, but got {outcome:?}"));
                }
                continue;
            }
            let Some((format, items)) = oracle else {
                // Any outcome but a panic is fine for other kinds; shown for review.
                println!("other: {rel}: {outcome:?}");
                continue;
            };
            println!("{format}: {rel}: {items} items");
            in_scope.push((format, rel.clone()));
            let documents = match outcome {
                Some(Ok(Parsed::Documents(documents))) => documents,
                other => {
                    failures.push(format!("{rel}: expected {format}, got {other:?}"));
                    continue;
                }
            };
            match documents.as_slice() {
                [document] if document.format() == format && line_count(document) == items => {}
                _ => failures.push(format!(
                    "{rel}: expected one {format} with {items} lines, got {:?}",
                    documents
                        .iter()
                        .map(|d| (d.format(), line_count(d)))
                        .collect::<Vec<_>>()
                )),
            }
            if let Err(reject) = model::validate(&documents, today()) {
                incomplete.push((rel, reject.to_string()));
            }
        }
    }
    for format in [
        "cxml-order-request",
        "cxml-punchout-order-message",
        "cxml-ship-notice",
    ] {
        println!(
            "{format}: {}",
            in_scope.iter().filter(|(f, _)| *f == format).count()
        );
    }
    for format in ["opentrans-2.1", "ubl-despatch-advice"] {
        println!(
            "{format}: {}",
            in_scope.iter().filter(|(f, _)| *f == format).count()
        );
    }
    for (rel, why) in &incomplete {
        println!("incomplete: {rel}: {why}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let incomplete: Vec<(&str, &str)> = incomplete
        .iter()
        .map(|(r, w)| (r.as_str(), w.as_str()))
        .collect();
    assert_eq!(incomplete, KNOWN_INCOMPLETE);
}

/// Parses generated text as `doc.xml`, and checks that the verdict came within a second.
fn timed(text: &str) -> Option<Result<Parsed, Reject>> {
    let started = Instant::now();
    let outcome = parse("doc.xml", text.as_bytes());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    outcome
}

fn rejection(text: &str) -> Reject {
    match timed(text) {
        Some(Err(reject)) => reject,
        other => panic!("not rejected: {other:?}"),
    }
}

/// A loopback listener that records whether anything connected: the proof that nothing
/// was fetched.
struct Trap(TcpListener);

impl Trap {
    fn new() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        Trap(listener)
    }

    fn url(&self, path: &str) -> String {
        let port = self.0.local_addr().expect("bound address").port();
        format!("http://127.0.0.1:{port}/{path}")
    }

    fn untouched(&self) -> bool {
        self.0.accept().is_err()
    }
}

const ENTITIES_REFUSED: &str = "doc.xml: internal DTD with entity declarations is not accepted";

const ORDER: &str = r#"<cXML payloadID="p-1" timestamp="2026-11-20T10:00:00+01:00">
  <Header/><Request><OrderRequest>
    <OrderRequestHeader orderID="PO-1" orderDate="2026-11-20T10:00:00+01:00">
      <ShipTo><Address><Name xml:lang="de">Mayer &amp; S&#246;hne &lt;Lager&gt;</Name></Address></ShipTo>
    </OrderRequestHeader>
    <ItemOut quantity="2" lineNumber="1"><ItemID><SupplierPartID>A-1</SupplierPartID></ItemID></ItemOut>
  </OrderRequest></Request></cXML>"#;

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut dtd = String::from(r#"<!ENTITY lol0 "lol">"#);
    for level in 1..=10 {
        let refs = format!("&lol{};", level - 1).repeat(10);
        dtd.push_str(&format!(r#"<!ENTITY lol{level} "{refs}">"#));
    }
    let text = format!("<?xml version=\"1.0\"?><!DOCTYPE lolz [{dtd}]><lolz>&lol10;</lolz>");
    assert_eq!(rejection(&text).to_string(), ENTITIES_REFUSED);
}

#[test]
fn external_entities_are_refused_without_fetching() {
    let trap = Trap::new();
    let general = ["file:///etc/passwd".to_owned(), trap.url("secret.txt")];
    for target in general {
        let text = format!(r#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "{target}">]><r>&xxe;</r>"#);
        assert_eq!(rejection(&text).to_string(), ENTITIES_REFUSED, "{target}");
    }
    let parameter = format!(
        r#"<!DOCTYPE r [<!ENTITY % remote SYSTEM "{}"> %remote;]><r/>"#,
        trap.url("evil.dtd")
    );
    assert_eq!(rejection(&parameter).to_string(), ENTITIES_REFUSED);
    assert!(trap.untouched(), "something connected to the loopback trap");
}

#[test]
fn undeclared_entity_references_are_refused() {
    let reject = rejection("<r>caf&eacute;</r>");
    assert!(
        reject.to_string().contains("&eacute; is not accepted"),
        "{reject}"
    );
}

#[test]
fn deep_nesting_is_too_large_quickly() {
    let depth = 200_000;
    let text = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let reject = rejection(&text);
    assert_eq!(
        reject.to_string(),
        "doc.xml: too large: XML nesting deeper than 256 elements"
    );
}

#[test]
fn a_system_doctype_is_accepted_and_never_fetched() {
    let trap = Trap::new();
    let text = format!(
        r#"<!DOCTYPE cXML SYSTEM "{}">{ORDER}"#,
        trap.url("cXML.dtd")
    );
    match timed(&text) {
        Some(Ok(Parsed::Documents(documents))) => assert_eq!(documents.len(), 1),
        other => panic!("not parsed: {other:?}"),
    }
    assert!(trap.untouched(), "the DTD was fetched");
}

#[test]
fn predefined_entities_round_trip_into_the_json() {
    let Some(Ok(Parsed::Documents(documents))) = timed(ORDER) else {
        panic!("not parsed");
    };
    let json = serde_json::to_value(&documents).expect("documents serialize");
    assert_eq!(json[0]["ship_to"]["name"], "Mayer & Söhne <Lager>");
}
