//! `Authentication-Results` headers (RFC 8601), read leniently, and the one rule for which of
//! them eingang believes.
//!
//! Real servers stray from the grammar: Microsoft 365 writes no authserv-id at all
//! (`spf=pass (sender IP is …) smtp.mailfrom=…; dkim=pass …`), some write stray `; domain.com;`
//! tokens or a version number after the id, Gmail puts the DMARC policy into a comment
//! (`dmarc=pass (p=REJECT sp=REJECT dis=NONE)`). So the parser takes what it recognises —
//! `method=result` pairs with their `reason`, `ptype.property=value` properties and comments —
//! and skips the rest. It never fails and never panics: every input gives a (possibly empty)
//! [`ArHeader`]. It never decides anything itself; `check` does.

/// The header name, compared without regard to case.
pub const HEADER_NAME: &str = "Authentication-Results";

/// Only this much of one header value is read: a real one is a few hundred bytes, Gmail's
/// with three long results about 1 KiB.
const MAX_VALUE_BYTES: usize = 16 * 1024;
/// At most this many results of one header are kept (a real header has two to six).
const MAX_RESULTS: usize = 32;
/// At most this many properties and comments per result.
const MAX_PARTS: usize = 16;
/// Longer texts (a `header.b` signature prefix, a long comment) are cut to this many characters.
const MAX_TEXT_CHARS: usize = 256;

/// Which `Authentication-Results` header eingang believes, as configured per IMAP source with
/// `trusted_authserv_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// None: eingang's own check decides (drop folders, FTP, `import`, and IMAP sources
    /// without `trusted_authserv_id`).
    #[default]
    Nothing,
    /// The topmost header, if its authserv-id is this one (compared without regard to case).
    AuthservId(String),
    /// The topmost header, whatever its authserv-id (`"topmost"`: Microsoft 365 writes none).
    Topmost,
}

impl Trust {
    /// The setting as written in the config: `None` trusts nothing, `"topmost"` the topmost
    /// header, anything else the topmost header with that authserv-id.
    pub fn from_setting(setting: Option<&str>) -> Result<Trust, String> {
        let Some(setting) = setting else {
            return Ok(Trust::Nothing);
        };
        let id = setting.trim();
        if id == "topmost" {
            return Ok(Trust::Topmost);
        }
        let bad = |c: char| c.is_whitespace() || c.is_control() || "();\"=".contains(c);
        if id.is_empty() || id.chars().any(bad) {
            return Err(format!(
                "trusted_authserv_id {setting:?} is not an authserv-id: use the host name the \
                 receiving server writes first in its Authentication-Results header, or \"topmost\""
            ));
        }
        Ok(Trust::AuthservId(id.to_ascii_lowercase()))
    }
}

/// One parsed `Authentication-Results` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArHeader {
    /// The authserv-id (lowercased), absent when the server writes none (Microsoft 365).
    pub authserv_id: Option<String>,
    /// The results, in header order.
    pub results: Vec<MethodResult>,
}

/// One `method=result` of a header, e.g. `dkim=pass header.d=supplier.example`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodResult {
    /// The method, lowercased, without a `/version`: `dkim`, `spf`, `dmarc`, `compauth`, …
    pub method: String,
    /// The result, lowercased: `pass`, `fail`, `none`, `temperror`, …
    pub result: String,
    /// The `reason=` value, if any.
    pub reason: Option<String>,
    /// Every other `key=value` after the result, keys lowercased (`header.d`, `smtp.mailfrom`,
    /// `policy.published-domain-policy`, Microsoft's `action`), in header order.
    pub properties: Vec<(String, String)>,
    /// The texts of the comments in this result, e.g. `p=REJECT sp=REJECT dis=NONE`.
    pub comments: Vec<String>,
}

impl ArHeader {
    /// The first result of this method (`dmarc`, `dkim`, `spf`).
    pub fn first(&self, method: &str) -> Option<&MethodResult> {
        self.results.iter().find(|r| r.method == method)
    }

    /// Every result of this method.
    pub fn all<'a>(&'a self, method: &'a str) -> impl Iterator<Item = &'a MethodResult> + 'a {
        self.results.iter().filter(move |r| r.method == method)
    }
}

impl MethodResult {
    /// The value of the first property with this key (`header.from`), as written.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The domain a property names, lowercased: `header.d=Supplier.Example` and
    /// `header.i=@supplier.example` and `smtp.mailfrom=bounce@supplier.example` all give
    /// `supplier.example`. `None` for an empty value or Microsoft's `header.d=none`.
    pub fn domain(&self, key: &str) -> Option<String> {
        let value = self.property(key)?;
        let domain = value.rsplit('@').next().unwrap_or(value);
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let plausible = domain.contains('.')
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-' || c == '_');
        plausible.then_some(domain)
    }
}

/// Parses one header value (the text after `Authentication-Results:`, folded or not).
pub fn parse(value: &[u8]) -> ArHeader {
    let value = value.get(..MAX_VALUE_BYTES).unwrap_or(value);
    let text = String::from_utf8_lossy(value);
    let mut header = ArHeader::default();
    for (index, segment) in segments(&text).into_iter().enumerate() {
        let has_pair = segment
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.eq.is_some()));
        if index == 0 && !has_pair {
            // `authserv-id [version]`; a first segment with `=` in it is already a result
            // (Microsoft 365 writes no authserv-id).
            header.authserv_id = segment
                .iter()
                .find_map(|t| match t {
                    Token::Word(w) => Some(clean(&w.text).to_ascii_lowercase()),
                    _ => None,
                })
                .filter(|id| !id.is_empty());
            continue;
        }
        if header.results.len() < MAX_RESULTS
            && let Some(result) = method_result(segment)
        {
            header.results.push(result);
        }
    }
    header
}

/// A word of a segment: its text (quotes removed) and where its first unquoted `=` is.
#[derive(Debug)]
struct Word {
    text: String,
    eq: Option<usize>,
}

#[derive(Debug)]
enum Token {
    Word(Word),
    Comment(String),
}

/// Splits a header value into its `;`-separated segments of words and comments, honouring
/// quoted strings and nested comments (RFC 5322 §3.2.2, §3.2.4).
fn segments(text: &str) -> Vec<Vec<Token>> {
    let mut segments = vec![Vec::new()];
    let mut word = Word {
        text: String::new(),
        eq: None,
    };
    let mut chars = text.chars();
    fn end_word(word: &mut Word, segment: &mut Vec<Token>) {
        if !word.text.is_empty() || word.eq.is_some() {
            let done = std::mem::replace(
                word,
                Word {
                    text: String::new(),
                    eq: None,
                },
            );
            segment.push(Token::Word(done));
        }
    }
    while let Some(c) = chars.next() {
        let segment = segments
            .last_mut()
            .expect("there is always a current segment");
        match c {
            ';' => {
                end_word(&mut word, segment);
                segments.push(Vec::new());
            }
            '(' => {
                end_word(&mut word, segment);
                let comment = read_comment(&mut chars);
                segment.push(Token::Comment(clean(&comment)));
            }
            '"' => {
                // A quoted string is part of the word it stands in (`header.from="x"`).
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => {
                            if let Some(escaped) = chars.next() {
                                word.text.push(escaped);
                            }
                        }
                        _ => word.text.push(q),
                    }
                }
            }
            '=' if word.eq.is_none() => {
                word.eq = Some(word.text.len());
                word.text.push('=');
            }
            c if c.is_whitespace() => end_word(&mut word, segment),
            c => word.text.push(c),
        }
    }
    let segment = segments
        .last_mut()
        .expect("there is always a current segment");
    end_word(&mut word, segment);
    segments
}

/// Reads a comment after its `(`, up to the matching `)` (or the end), without the outer
/// parentheses.
fn read_comment(chars: &mut std::str::Chars<'_>) -> String {
    let mut depth = 1usize;
    let mut text = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(escaped) = chars.next() {
                    text.push(escaped);
                }
            }
            '(' => {
                depth += 1;
                text.push(c);
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                text.push(c);
            }
            _ => text.push(c),
        }
    }
    text
}

/// The `key=value` pairs of a segment. `key = value` with spaces around the `=` (allowed by
/// the grammar's CFWS) is joined; words that are no pair are dropped.
fn pairs(words: &[&Word]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        i += 1;
        let Some(eq) = word.eq else {
            // `key` `=value` or `key` `=` `value`
            if let Some(next) = words.get(i).filter(|n| n.eq == Some(0)) {
                i += 1;
                let mut value = next.text.get(1..).unwrap_or("").to_owned();
                if value.is_empty()
                    && let Some(after) = words.get(i).filter(|a| a.eq.is_none())
                {
                    i += 1;
                    value = after.text.clone();
                }
                pairs.push((word.text.clone(), value));
            }
            continue;
        };
        let key = word.text.get(..eq).unwrap_or("");
        let mut value = word.text.get(eq + 1..).unwrap_or("").to_owned();
        if key.is_empty() {
            continue; // a lone `=value` that no key precedes
        }
        if value.is_empty()
            && let Some(after) = words.get(i).filter(|a| a.eq.is_none())
        {
            // `key=` `value`
            i += 1;
            value = after.text.clone();
        }
        pairs.push((key.to_owned(), value));
    }
    pairs
}

/// One resinfo: the first pair is `method[/version]=result`, then `reason=` and properties.
fn method_result(segment: Vec<Token>) -> Option<MethodResult> {
    let mut comments = Vec::new();
    let mut words = Vec::new();
    for token in &segment {
        match token {
            Token::Word(w) => words.push(w),
            Token::Comment(c) if comments.len() < MAX_PARTS && !c.is_empty() => {
                comments.push(c.clone())
            }
            Token::Comment(_) => {}
        }
    }
    let mut pairs = pairs(&words).into_iter();
    let (method, result) = pairs.next()?;
    let method = method.split('/').next().unwrap_or("").trim();
    let method = clean(method).to_ascii_lowercase();
    if method.is_empty() || method.contains('.') {
        return None;
    }
    let mut out = MethodResult {
        method,
        result: clean(&result).to_ascii_lowercase(),
        comments,
        ..MethodResult::default()
    };
    for (key, value) in pairs {
        let key = clean(&key).to_ascii_lowercase();
        if key == "reason" && out.reason.is_none() {
            out.reason = Some(clean(&value));
        } else if out.properties.len() < MAX_PARTS && !key.is_empty() {
            out.properties.push((key, clean(&value)));
        }
    }
    Some(out)
}

/// A text from a header, safe to store and print: no control characters, at most
/// `MAX_TEXT_CHARS` characters, surrounding space trimmed.
pub(super) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_TEXT_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The header eingang believes, by the trust rule: only the **topmost**
/// `Authentication-Results` header of the message can count, and only if `trust` accepts its
/// authserv-id. A lower header is never believed, not even one with the trusted id directly
/// below the topmost one: a receiving server that does not strip such headers from incoming
/// mail (RFC 8601 §5) would pass a forged one through, and a server that writes several of its
/// own (one per milter) loses nothing that eingang's own check cannot find. `headers` are the
/// message's header fields, top first.
pub fn trusted<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    trust: &Trust,
) -> Option<ArHeader> {
    if *trust == Trust::Nothing {
        return None;
    }
    let (_, value) = headers.into_iter().find(|(name, _)| {
        name.trim_ascii()
            .eq_ignore_ascii_case(HEADER_NAME.as_bytes())
    })?;
    let header = parse(value);
    match trust {
        Trust::Nothing => None,
        Trust::Topmost => Some(header),
        Trust::AuthservId(id) => header
            .authserv_id
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(id))
            .then_some(header),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result<'a>(header: &'a ArHeader, method: &str) -> &'a MethodResult {
        header
            .first(method)
            .unwrap_or_else(|| panic!("no {method} result in {header:?}"))
    }

    #[test]
    fn gmail_header_with_policy_in_a_comment() {
        let h = parse(
            b" mx.google.com;\r\n       dkim=pass header.i=@supplier.example header.s=sel header.b=Ab1+/cD=;\r\n       \
              spf=pass (google.com: domain of lager@supplier.example designates 192.0.2.1 as permitted sender) \
              smtp.mailfrom=lager@supplier.example;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=supplier.example",
        );
        assert_eq!(h.authserv_id.as_deref(), Some("mx.google.com"));
        assert_eq!(h.results.len(), 3);
        let dkim = result(&h, "dkim");
        assert_eq!(dkim.result, "pass");
        assert_eq!(dkim.domain("header.i").as_deref(), Some("supplier.example"));
        assert_eq!(dkim.property("header.b"), Some("Ab1+/cD="));
        let spf = result(&h, "spf");
        assert_eq!(
            spf.domain("smtp.mailfrom").as_deref(),
            Some("supplier.example")
        );
        assert!(spf.comments[0].starts_with("google.com: domain of"));
        let dmarc = result(&h, "dmarc");
        assert_eq!(dmarc.comments, ["p=REJECT sp=REJECT dis=NONE"]);
        assert_eq!(dmarc.property("header.from"), Some("supplier.example"));
    }

    #[test]
    fn microsoft_365_header_without_authserv_id() {
        let h = parse(
            b" spf=pass (sender IP is 192.0.2.7)\r\n smtp.mailfrom=supplier.example; dkim=pass (signature was verified)\r\n \
              header.d=supplier.example;dmarc=pass action=none\r\n header.from=supplier.example;compauth=pass reason=100",
        );
        assert_eq!(h.authserv_id, None);
        let methods: Vec<&str> = h.results.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["spf", "dkim", "dmarc", "compauth"]);
        assert_eq!(result(&h, "dmarc").property("action"), Some("none"));
        assert_eq!(result(&h, "compauth").reason.as_deref(), Some("100"));
        assert_eq!(
            result(&h, "dkim").domain("header.d").as_deref(),
            Some("supplier.example")
        );
    }

    #[test]
    fn microsoft_365_unsigned_mail_has_no_dkim_domain() {
        let h = parse(
            b" spf=none (sender IP is 192.0.2.7) smtp.mailfrom=x.example; dkim=none (message not signed) header.d=none;dmarc=none action=none header.from=x.example;",
        );
        assert_eq!(result(&h, "dkim").domain("header.d"), None);
        assert_eq!(result(&h, "dmarc").result, "none");
    }

    #[test]
    fn postfix_milters_opendkim_and_opendmarc() {
        let dmarc = parse(
            b" mail.shop.example; dmarc=fail (p=reject dis=none) header.from=supplier.example",
        );
        assert_eq!(dmarc.authserv_id.as_deref(), Some("mail.shop.example"));
        assert_eq!(result(&dmarc, "dmarc").result, "fail");
        assert_eq!(result(&dmarc, "dmarc").comments, ["p=reject dis=none"]);
        let dkim = parse(
            b" mail.shop.example;\r\n\tdkim=pass (2048-bit key; unprotected) header.d=supplier.example header.i=@supplier.example \
              header.a=rsa-sha256 header.s=sel header.b=Q1w2E3r4",
        );
        let d = result(&dkim, "dkim");
        assert_eq!(d.comments, ["2048-bit key; unprotected"]);
        assert_eq!(d.property("header.a"), Some("rsa-sha256"));
    }

    #[test]
    fn version_stray_tokens_none_and_published_policy() {
        let h = parse(b" MX.Example.COM 1; supplier.example; dmarc=FAIL policy.published-domain-policy=quarantine header.from=\"supplier.example\"");
        assert_eq!(h.authserv_id.as_deref(), Some("mx.example.com"));
        assert_eq!(h.results.len(), 1, "{h:?}");
        let dmarc = result(&h, "dmarc");
        assert_eq!(dmarc.result, "fail");
        assert_eq!(
            dmarc.property("policy.published-domain-policy"),
            Some("quarantine")
        );
        assert_eq!(dmarc.property("header.from"), Some("supplier.example"));
        let none = parse(b" mx.example.com; none");
        assert_eq!(none.authserv_id.as_deref(), Some("mx.example.com"));
        assert!(none.results.is_empty());
    }

    #[test]
    fn spaces_around_the_equals_sign_method_versions_and_nested_comments() {
        let h = parse(b"mx.example.com; dkim/1 = pass (outer (inner) \\) text) header.d = supplier.example reason=\"good sig\"");
        let dkim = result(&h, "dkim");
        assert_eq!(dkim.result, "pass");
        assert_eq!(dkim.reason.as_deref(), Some("good sig"));
        assert_eq!(dkim.property("header.d"), Some("supplier.example"));
        assert_eq!(dkim.comments, ["outer (inner) ) text"]);
    }

    #[test]
    fn control_characters_never_reach_the_result() {
        let h =
            parse(b"mx.example.com; dkim=pass\x1b[31m header.d=evil\x07.example (\x1b]0;x\x07)");
        let dkim = result(&h, "dkim");
        for text in [&dkim.result, &dkim.properties[0].1, &dkim.comments[0]] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }

    #[test]
    fn the_trust_setting() {
        assert_eq!(Trust::from_setting(None), Ok(Trust::Nothing));
        assert_eq!(Trust::from_setting(Some("topmost")), Ok(Trust::Topmost));
        assert_eq!(
            Trust::from_setting(Some("MX.Google.com")),
            Ok(Trust::AuthservId("mx.google.com".into()))
        );
        for bad in ["", " ", "mx example", "mx;x", "a=b"] {
            let err = Trust::from_setting(Some(bad)).unwrap_err();
            assert!(err.starts_with("trusted_authserv_id"), "{err}");
        }
    }

    fn fields(list: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
        list.iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn only_the_topmost_header_with_the_trusted_id_counts() {
        let trust = Trust::AuthservId("mx.shop.example".into());
        let genuine = fields(&[
            (
                "Authentication-Results",
                " mx.shop.example; dmarc=pass header.from=supplier.example",
            ),
            ("Received", " from x by mx.shop.example"),
            (
                "Authentication-Results",
                " mx.shop.example; dmarc=fail header.from=supplier.example",
            ),
        ]);
        let h = trusted(genuine.iter().copied(), &trust).expect("topmost is trusted");
        assert_eq!(h.first("dmarc").map(|r| r.result.as_str()), Some("pass"));

        // A header of another server on top: the trusted id below it is not believed.
        let other_on_top = fields(&[
            ("authentication-results", " spamfilter.local; dkim=none"),
            (
                "Authentication-Results",
                " mx.shop.example; dmarc=pass header.from=supplier.example",
            ),
        ]);
        assert_eq!(trusted(other_on_top.iter().copied(), &trust), None);

        // Two with the trusted id right at the top: only the first one is read, nothing is
        // merged from the second (it may be a forgery the server let through).
        let two = fields(&[
            (
                "Authentication-Results",
                " mx.shop.example; dkim=pass header.d=supplier.example",
            ),
            (
                "Authentication-Results",
                " mx.shop.example; dmarc=pass header.from=supplier.example",
            ),
        ]);
        let h = trusted(two.iter().copied(), &trust).expect("topmost is trusted");
        assert_eq!(h.first("dmarc"), None);

        assert_eq!(trusted(genuine.iter().copied(), &Trust::Nothing), None);
        let m365 = fields(&[(
            "Authentication-Results",
            " spf=pass smtp.mailfrom=supplier.example; dmarc=pass action=none header.from=supplier.example",
        )]);
        assert!(trusted(m365.iter().copied(), &Trust::Topmost).is_some());
        assert_eq!(
            trusted(m365.iter().copied(), &trust),
            None,
            "no id, not trusted by id"
        );
    }

    /// A small deterministic generator (xorshift64*), so that the property tests need no crate
    /// and fail the same way every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_give_clean_text() {
        let alphabet = b"ab.=;()\"\\/ \t\r\n@-1\x00\x1b\xff\xc3";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = rng.below(120);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => (rng.next() & 0xff) as u8,
                    _ => alphabet[rng.below(alphabet.len())],
                })
                .collect();
            let h = parse(&bytes);
            assert!(h.results.len() <= MAX_RESULTS);
            let texts = h.authserv_id.iter().chain(h.results.iter().flat_map(|r| {
                [&r.method, &r.result]
                    .into_iter()
                    .chain(r.reason.iter())
                    .chain(r.properties.iter().flat_map(|(k, v)| [k, v]))
                    .chain(r.comments.iter())
            }));
            for text in texts {
                assert!(
                    !text.chars().any(char::is_control),
                    "{bytes:?} gave {text:?}"
                );
            }
            assert_eq!(parse(&bytes), h, "parsing is deterministic");
        }
        // Huge and deeply nested input stays bounded.
        let mut deep = b"mx; dkim=pass ".to_vec();
        deep.extend(std::iter::repeat_n(b'(', 100_000));
        assert_eq!(parse(&deep).results.len(), 1);
        let many = b"x=y;".repeat(10_000);
        assert_eq!(parse(&many).results.len(), MAX_RESULTS);
    }

    #[test]
    fn generated_headers_parse_back_to_what_was_written() {
        let mut rng = Rng(42);
        let methods = ["dkim", "spf", "dmarc", "arc", "compauth", "iprev"];
        let results = ["pass", "fail", "none", "neutral", "temperror", "permerror"];
        let keys = [
            "header.d",
            "header.from",
            "smtp.mailfrom",
            "header.i",
            "policy.published-domain-policy",
            "action",
        ];
        let values = [
            "supplier.example",
            "@supplier.example",
            "reject",
            "a@b.example",
        ];
        let spaces = [" ", "  ", "\r\n\t", "\r\n "];
        for _ in 0..2_000 {
            let with_id = rng.below(2) == 0;
            let mut text = String::new();
            if with_id {
                text.push_str(rng.pick(&["mx.example.com", "MX.Example.Net", "mail"]));
                if rng.below(3) == 0 {
                    text.push_str(" 1");
                }
            }
            let mut expected = Vec::new();
            for n in 0..rng.below(5) + 1 {
                if with_id || n > 0 {
                    text.push(';');
                    text.push_str(rng.pick(&spaces));
                }
                let mut r = MethodResult {
                    method: rng.pick(&methods).to_owned(),
                    result: rng.pick(&results).to_owned(),
                    ..MethodResult::default()
                };
                text.push_str(&format!("{}={}", r.method, r.result.to_uppercase()));
                if rng.below(2) == 0 {
                    let comment = rng.pick(&["p=reject dis=none", "sender IP is 192.0.2.1"]);
                    text.push_str(&format!(" ({comment})"));
                    r.comments.push(comment.to_owned());
                }
                for _ in 0..rng.below(3) {
                    let (k, v) = (rng.pick(&keys), rng.pick(&values));
                    text.push_str(rng.pick(&spaces));
                    text.push_str(&format!("{k}={v}"));
                    r.properties.push((k.to_owned(), v.to_owned()));
                }
                expected.push(r);
            }
            let h = parse(text.as_bytes());
            assert_eq!(h.results, expected, "{text}");
            assert_eq!(h.authserv_id.is_some(), with_id, "{text}");
        }
    }
}
