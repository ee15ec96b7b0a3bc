//! Safe XML reading for the standard formats: bytes → text → a small element tree.
//!
//! The bytes are transcoded to UTF-8 first (BOM, then the XML declaration), then read with
//! quick-xml's `NsReader` into `Element`s that carry the resolved namespace, so the format
//! modules match `(namespace, local name)` and never a prefix. Nothing from a DTD is used:
//! an external DTD is never fetched, an internal subset that declares entities is refused,
//! and only the five predefined entities and character references are expanded. Nesting is
//! capped by `Limits::max_xml_depth`. The typed value readers (`decimal`, `date`) live here
//! too, so that every module words a bad value the same way.

use std::borrow::Cow;

use chrono::NaiveDate;
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{NamespaceResolver, ResolveResult};
use quick_xml::reader::NsReader;

use crate::error::Reject;
use crate::model::Decimal;

/// One element: its namespace URI (empty when unbound), local name, attributes, direct text
/// and child elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The namespace URI the element's prefix (or the default namespace) resolves to.
    pub ns: String,
    /// The local name, without prefix.
    pub name: String,
    /// Attributes as (namespace URI, local name, value); namespace declarations are left out.
    attrs: Vec<(String, String, String)>,
    /// The element's own character data (text, CDATA, references), children excluded.
    text: String,
    /// The child elements, in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// Whether the element has this namespace and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// The unqualified attribute `name`, trimmed; `None` when absent or blank.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(ns, local, _)| ns.is_empty() && local == name)
            .map(|(_, _, value)| value.trim())
            .filter(|v| !v.is_empty())
    }

    /// The element's own text, trimmed; `None` when blank.
    pub fn text(&self) -> Option<&str> {
        Some(self.text.trim()).filter(|t| !t.is_empty())
    }

    /// The first child with this namespace and local name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// Every child with this namespace and local name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The element reached by following `path` (namespace, local name) child by child.
    pub fn at(&self, path: &[(&str, &str)]) -> Option<&Element> {
        path.iter()
            .try_fold(self, |element, (ns, name)| element.child(ns, name))
    }

    /// The trimmed text at `path`, owned; `None` when the element is missing or blank.
    pub fn text_at(&self, path: &[(&str, &str)]) -> Option<String> {
        self.at(path).and_then(Element::text).map(str::to_owned)
    }
}

/// Transcodes an attachment to UTF-8. `None`: not XML at all (after an optional BOM and
/// whitespace the first character is not `<`).
///
/// The encoding is taken from the BOM (UTF-8, UTF-16 LE/BE), else from the byte pattern of
/// `<?` in UTF-16 without BOM (XML 1.0 appendix F), else from the declaration's `encoding`,
/// else UTF-8. encoding_rs follows WHATWG, so ISO-8859-1 is read as its superset
/// windows-1252.
pub fn decode(bytes: &[u8], file: &str) -> Option<Result<String, Reject>> {
    let (encoding, body) = if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        (Some(UTF_8), rest)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        (Some(UTF_16LE), rest)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        (Some(UTF_16BE), rest)
    } else if bytes.starts_with(b"<\0?\0") {
        (Some(UTF_16LE), bytes)
    } else if bytes.starts_with(b"\0<\0?") {
        (Some(UTF_16BE), bytes)
    } else {
        (None, bytes)
    };
    if let Some(utf16) = encoding.filter(|e| *e == UTF_16LE || *e == UTF_16BE) {
        return match utf16.decode_without_bom_handling_and_without_replacement(body) {
            Some(text) if text.trim_start().starts_with('<') => Some(Ok(text.into_owned())),
            Some(_) => None,
            None => Some(Err(Reject::malformed(file, "not valid UTF-16"))),
        };
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'<' {
        return None;
    }
    let encoding = match encoding {
        Some(utf8) => utf8, // a UTF-8 BOM wins over any declaration (XML 1.0 appendix F)
        None => match declared_encoding(body) {
            None => UTF_8,
            Some(label) => match Encoding::for_label(label.as_bytes()) {
                // Bytes that read as ASCII cannot be UTF-16 whatever the declaration says;
                // such a declaration survives transcoding by a tool that did not update it.
                Some(e) if e == UTF_16LE || e == UTF_16BE => UTF_8,
                Some(e) => e,
                None => {
                    let why = format!("declares the unknown encoding {label:?}");
                    return Some(Err(Reject::malformed(file, why)));
                }
            },
        },
    };
    Some(transcode(body, encoding, file))
}

/// Decodes 8-bit or UTF-8 bytes as `encoding`.
///
/// A document that declares ISO-8859-1 or windows-1252 but is valid UTF-8 with multibyte
/// sequences is read as UTF-8: such byte pairs (`Ã¼` for `ü`) practically never occur in real
/// Latin-1 text, while exporters that write UTF-8 under a copied Latin-1 declaration do
/// (the official openTRANS DISPATCHNOTIFICATION sample circulates that way). Reading it as
/// declared would turn every umlaut into two wrong characters without any error.
fn transcode(body: &[u8], encoding: &'static Encoding, file: &str) -> Result<String, Reject> {
    if encoding == UTF_8 || (encoding == WINDOWS_1252 && !body.is_ascii()) {
        if let Ok(text) = std::str::from_utf8(body) {
            return Ok(text.to_owned());
        }
        if encoding == UTF_8 {
            let why = "not valid UTF-8 (an XML file in another encoding must declare it)";
            return Err(Reject::malformed(file, why));
        }
    }
    encoding
        .decode_without_bom_handling_and_without_replacement(body)
        .map(Cow::into_owned)
        .ok_or_else(|| {
            let why = format!("contains bytes that are not valid {}", encoding.name());
            Reject::malformed(file, why)
        })
}

/// The `encoding` pseudo-attribute of an XML declaration at the start of 8-bit bytes.
fn declared_encoding(body: &[u8]) -> Option<String> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = body.get(start..)?.strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = String::from_utf8_lossy(head.get(..end)?);
    let (_, after) = decl.split_once("encoding")?;
    let value = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = value.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let (label, _) = value.get(1..)?.split_once(quote)?;
    Some(label.trim().to_owned())
}

/// The namespace and local name of the root element, read without building anything, or
/// `None` when the text has no readable start tag (the full parse then says why). `html` is
/// also set when a `<!DOCTYPE html>` precedes it.
pub fn root_name(text: &str) -> Option<(String, String, bool)> {
    let mut reader = NsReader::from_str(text);
    let mut html = false;
    loop {
        match reader.read_resolved_event().ok()? {
            (ns, Event::Start(start) | Event::Empty(start)) => {
                let name = start.local_name().as_ref().to_owned();
                return Some((namespace(&ns)?, name, html));
            }
            (_, Event::DocType(doctype)) => {
                html = doctype
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("html");
            }
            (_, Event::Eof) => return None,
            _ => {}
        }
    }
}

fn namespace(resolved: &ResolveResult<'_>) -> Option<String> {
    match resolved {
        ResolveResult::Bound(ns) => Some(ns.as_ref().to_owned()),
        ResolveResult::Unbound => Some(String::new()),
        ResolveResult::Unknown(_) => None,
    }
}

/// Reads `text` into its root element, checking well-formedness and the DTD, entity and
/// depth rules throughout. With `keep_children` false only the root itself is kept (its
/// name and attributes); the rest is still read and checked, but not stored.
pub fn parse(
    text: &str,
    file: &str,
    max_depth: usize,
    keep_children: bool,
) -> Result<Element, Reject> {
    let mut reader = NsReader::from_str(text);
    let at_line = |position: u64| {
        let end = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let before = text.as_bytes().get(..end).unwrap_or_default();
        before.iter().filter(|b| **b == b'\n').count() + 1
    };
    let malformed = |position: u64, why: &str| {
        let why = format!("not well-formed XML (line {}): {why}", at_line(position));
        Reject::malformed(file, why)
    };
    // Open elements; with `keep_children` false only the root is ever on it.
    let mut open: Vec<Element> = Vec::new();
    let mut depth = 0usize;
    let mut root: Option<Element> = None;
    loop {
        let position = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(event) => event,
            // quick-xml quotes the offending markup, line breaks included: one line here.
            Err(e) => {
                return Err(malformed(
                    reader.error_position(),
                    &one_line(&e.to_string()),
                ));
            }
        };
        let started = depth > 0 || root.is_some();
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(malformed(position, "a second root element"));
                }
                depth += 1;
                if depth > max_depth {
                    let why = format!("XML nesting deeper than {max_depth} elements");
                    return Err(Reject::too_large(file, why));
                }
                let empty = matches!(event, Event::Empty(_));
                if depth == 1 || keep_children {
                    let element = element(start, reader.resolver())
                        .map_err(|why| malformed(position, &why))?;
                    open.push(element);
                }
                if empty {
                    depth -= 1;
                    close(&mut open, &mut root, depth, keep_children);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                close(&mut open, &mut root, depth, keep_children);
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                if depth == 0 && !content.trim().is_empty() {
                    return Err(malformed(position, "text outside the root element"));
                }
                push_text(&mut open, depth, keep_children, &content);
            }
            Event::CData(c) => {
                if depth == 0 {
                    return Err(malformed(position, "CDATA outside the root element"));
                }
                push_text(&mut open, depth, keep_children, &c.xml10_content());
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match predefined(&r) {
                        Some(s) => s.to_owned(),
                        None => {
                            let why = format!(
                                "the entity reference &{}; is not accepted (only &amp; &lt; \
                                 &gt; &apos; &quot; and character references are)",
                                &*r
                            );
                            return Err(malformed(position, &why));
                        }
                    },
                    Err(e) => return Err(malformed(position, &e.to_string())),
                };
                if depth == 0 {
                    return Err(malformed(position, "a reference outside the root element"));
                }
                push_text(&mut open, depth, keep_children, &resolved);
            }
            Event::DocType(doctype) => {
                if started {
                    return Err(malformed(position, "a DOCTYPE inside the document"));
                }
                // Only an internal subset can declare entities (billion laughs, XXE,
                // parameter entities); a bare SYSTEM/PUBLIC id is just a name, never fetched.
                if doctype.to_ascii_uppercase().contains("<!ENTITY") {
                    let why = "internal DTD with entity declarations is not accepted";
                    return Err(Reject::malformed(file, why));
                }
            }
            Event::Eof => {
                return match root {
                    Some(root) if depth == 0 => Ok(root),
                    _ if depth > 0 => Err(malformed(position, "the file ends inside an element")),
                    _ => Err(malformed(position, "no root element")),
                };
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

/// The five entities XML predefines (XML 1.0 §4.6).
fn predefined(name: &str) -> Option<&'static str> {
    match name {
        "amp" => Some("&"),
        "lt" => Some("<"),
        "gt" => Some(">"),
        "apos" => Some("'"),
        "quot" => Some("\""),
        _ => None,
    }
}

/// An element from its start tag: namespace, local name and attributes (values with the
/// predefined entities and character references expanded, anything else an error).
fn element(start: &BytesStart<'_>, resolver: &NamespaceResolver) -> Result<Element, String> {
    let (resolved, local) = resolver.resolve_element(start.name());
    let name = local.as_ref().to_owned();
    let ns = namespace(&resolved)
        .ok_or_else(|| format!("the prefix of <{}> is not declared", start.name().as_ref()))?;
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let (attr_ns, local) = resolver.resolve_attribute(attr.key);
        let attr_ns = namespace(&attr_ns)
            .ok_or_else(|| format!("the prefix of {} is not declared", attr.key.as_ref()))?;
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("attribute {}: {e}", attr.key.as_ref()))?;
        attrs.push((attr_ns, local.as_ref().to_owned(), value.into_owned()));
    }
    Ok(Element {
        ns,
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Appends character data to the innermost open element, when that one is kept.
fn push_text(open: &mut [Element], depth: usize, keep_children: bool, text: &str) {
    if (depth == 1 || keep_children)
        && let Some(current) = open.last_mut()
    {
        current.text.push_str(text);
    }
}

/// Closes the innermost open element: it becomes its parent's child, or the root.
fn close(open: &mut Vec<Element>, root: &mut Option<Element>, depth: usize, keep: bool) {
    if depth > 0 && !keep {
        return; // a skipped descendant: nothing was opened for it
    }
    if let Some(done) = open.pop() {
        match open.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

/// Text for a description: trimmed, every run of whitespace (line breaks and indentation of
/// a wrapped value) made one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a quantity or amount, when present, in the canonical form (`12`, `1.5`); anything
/// else (a comma, an exponent, a unit) is a rejection naming the line and field.
pub fn decimal(
    file: &str,
    line: Option<&str>,
    field: &str,
    raw: Option<&str>,
) -> Result<Option<Decimal>, Reject> {
    raw.map(|raw| {
        Decimal::parse(raw)
            .ok_or_else(|| Reject::bad_value(file, line, field, raw, "is not a decimal number"))
    })
    .transpose()
}

/// Reads the date, when present, of an XML Schema `date` or `dateTime` (`2026-11-20`,
/// `2026-11-20T08:30:00+01:00`): the calendar date as written, time and zone dropped.
pub fn date(file: &str, field: &str, raw: Option<&str>) -> Result<Option<NaiveDate>, Reject> {
    let Some(raw) = raw else { return Ok(None) };
    let (day, rest) = raw.split_at_checked(10).unwrap_or((raw, ""));
    let rest_ok = rest.is_empty() || rest.starts_with(['T', 't', ' ', 'Z', '+', '-']);
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .filter(|_| rest_ok && day.len() == 10)
        .map(Some)
        .ok_or_else(|| Reject::bad_value(file, None, field, raw, "is not a date (YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> String {
        decode(bytes, "t.xml").expect("xml").expect("decodes")
    }

    #[test]
    fn utf8_with_and_without_bom() {
        assert_eq!(read("<a>Söhne</a>".as_bytes()), "<a>Söhne</a>");
        assert_eq!(read("\u{FEFF}<a>Söhne</a>".as_bytes()), "<a>Söhne</a>");
    }

    #[test]
    fn utf16_by_bom_and_by_pattern() {
        let text = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>Grüße</a>";
        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(read(&[&[0xFF, 0xFE], &le[..]].concat()), text);
        assert_eq!(read(&[&[0xFE, 0xFF], &be[..]].concat()), text);
        assert_eq!(read(&le), text);
        assert_eq!(read(&be), text);
    }

    #[test]
    fn latin1_and_windows_1252_as_declared() {
        let latin1 = b"<?xml version='1.0' encoding='ISO-8859-1'?><a>M\xFCller</a>";
        assert!(read(latin1).ends_with("<a>Müller</a>"));
        let cp1252 = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><a>\x80 5</a>";
        assert!(read(cp1252).ends_with("<a>€ 5</a>"));
    }

    #[test]
    fn declared_latin1_but_utf8_is_read_as_utf8() {
        let bytes = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>Müller</a>".as_bytes();
        assert!(read(bytes).ends_with("<a>Müller</a>"));
    }

    #[test]
    fn invalid_utf8_and_unknown_encodings_are_rejected() {
        let err = decode(b"<a>M\xFCller</a>", "t.xml").unwrap().unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
        let err = decode(b"<?xml version='1.0' encoding='x-klingon'?><a/>", "t.xml");
        assert!(err.unwrap().unwrap_err().to_string().contains("x-klingon"));
    }

    #[test]
    fn non_xml_is_none() {
        assert!(decode(b"%PDF-1.4", "t.pdf").is_none());
        assert!(decode(b"", "t").is_none());
        assert!(decode(b"\xEF\xBB\xBF  a;b;c", "t.csv").is_none());
    }

    #[test]
    fn namespaces_resolve_whatever_the_prefix() {
        let ns = "urn:example";
        for text in [
            r#"<r xmlns:bmecat="urn:example"><bmecat:ID>1</bmecat:ID></r>"#,
            r#"<r xmlns:bm="urn:example"><bm:ID>1</bm:ID></r>"#,
            r#"<r><ID xmlns="urn:example">1</ID></r>"#,
        ] {
            let root = parse(text, "t.xml", 8, true).unwrap();
            assert_eq!(root.text_at(&[(ns, "ID")]).as_deref(), Some("1"), "{text}");
        }
        let unqualified = parse("<r><ID>1</ID></r>", "t.xml", 8, true).unwrap();
        assert!(unqualified.child(ns, "ID").is_none());
    }

    #[test]
    fn text_joins_references_and_cdata() {
        let root = parse(
            "<r>Mayer &amp; S&#246;hne <![CDATA[<GmbH>]]></r>",
            "t",
            8,
            true,
        );
        assert_eq!(root.unwrap().text(), Some("Mayer & Söhne <GmbH>"));
        let root = parse(r#"<r a="x &lt; y &#x41;"/>"#, "t", 8, true).unwrap();
        assert_eq!(root.attr("a"), Some("x < y A"));
    }

    #[test]
    fn undeclared_entities_and_prefixes_are_rejected() {
        for text in [
            "<r>&nbsp;</r>",
            r#"<r a="&foo;"/>"#,
            "<x:r/>",
            "<r><a></b></r>",
            "<r>",
        ] {
            assert!(parse(text, "t", 8, true).is_err(), "{text}");
        }
    }

    #[test]
    fn depth_limit_is_too_large() {
        let text = format!("{}{}", "<a>".repeat(9), "</a>".repeat(9));
        let err = parse(&text, "t.xml", 8, true).unwrap_err();
        assert!(matches!(err, Reject::TooLarge { .. }), "{err}");
        assert!(parse(&text, "t.xml", 9, true).is_ok());
    }

    #[test]
    fn skimming_keeps_only_the_root() {
        let root = parse("<r a='1'><b><c/></b></r>", "t", 8, false).unwrap();
        assert_eq!((root.name.as_str(), root.attr("a")), ("r", Some("1")));
        assert!(root.children.is_empty());
        assert!(parse("<r><b></c></r>", "t", 8, false).is_err());
    }

    #[test]
    fn dates_take_the_calendar_day() {
        let day = |raw| date("t", "date", Some(raw)).unwrap().unwrap().to_string();
        assert_eq!(day("2026-11-20"), "2026-11-20");
        assert_eq!(day("2000-10-12T18:41:29-08:00"), "2000-10-12");
        assert_eq!(day("2020-01-27+01:00"), "2020-01-27");
        for bad in ["20.11.2026", "2026-13-01", "2026-11-20x", "2026"] {
            assert!(date("t", "date", Some(bad)).is_err(), "{bad}");
        }
    }
}
