//! Part of loading the registry: which format files claim the same mail or the same file.
//!
//! Routing takes the first file (in file-name order) whose `senders` or `files` match, so two
//! files that both claim a sender or a file name would make the winner an accident of naming.
//! Such a pair is a load problem naming both files:
//!
//! - the same address, or the same `@domain`, in two files;
//! - an address in one file at a domain that another file lists whole (`@acme.de`);
//! - two file globs that match one same file name. For globs made of literals, `?`, `*`/`**`,
//!   `[...]` classes and one level of `{a,b}` alternatives this is decided exactly: a walk over
//!   both patterns at once looks for a name both take, and the name found is checked with the
//!   real matchers before it is reported, so a reported overlap is always real. Globs outside
//!   that syntax (nested alternatives, more than 64 alternatives) are only compared as text.

use std::collections::HashSet;

use globset::GlobMatcher;

use super::TableFormat;

/// Every overlap between two of `tables`, one problem line each.
pub(crate) fn problems(tables: &[TableFormat]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, a) in tables.iter().enumerate() {
        for b in tables.iter().skip(i + 1) {
            sender_overlaps(a, b, &mut problems);
            glob_overlaps(a, b, &mut problems);
        }
    }
    problems
}

fn sender_overlaps(a: &TableFormat, b: &TableFormat, problems: &mut Vec<String>) {
    let (pa, pb) = (a.path.display(), b.path.display());
    for x in a.sender_entries() {
        for y in b.sender_entries() {
            if x == y {
                let what = if x.starts_with('@') {
                    "domain"
                } else {
                    "sender"
                };
                problems.push(format!(
                    "formats: {pa} and {pb} both list the {what} {x:?}: a sender belongs to one \
                     supplier, remove it from one of the files"
                ));
                continue;
            }
            let (whole, address, whole_file, address_file) =
                match (domain_entry(x), domain_entry(y)) {
                    (Some(d), None) if at_domain(y, d) => (x, y, &pa, &pb),
                    (None, Some(d)) if at_domain(x, d) => (y, x, &pb, &pa),
                    _ => continue,
                };
            problems.push(format!(
                "formats: {whole_file} lists the whole domain {whole:?} and {address_file} the \
                 address {address:?} in it: a message from that address would go to whichever \
                 file sorts first; remove the address, or list the domain's addresses one by one"
            ));
        }
    }
}

/// `acme.de` for an `@acme.de` entry.
fn domain_entry(entry: &str) -> Option<&str> {
    entry.strip_prefix('@')
}

fn at_domain(address: &str, domain: &str) -> bool {
    address.rsplit_once('@').is_some_and(|(_, d)| d == domain)
}

fn glob_overlaps(a: &TableFormat, b: &TableFormat, problems: &mut Vec<String>) {
    let (pa, pb) = (a.path.display(), b.path.display());
    for ga in a.file_globs() {
        for gb in b.file_globs() {
            let (ta, tb) = (ga.glob().glob(), gb.glob().glob());
            if ta.to_lowercase() == tb.to_lowercase() {
                problems.push(format!(
                    "formats: {pa} and {pb} both list the file glob {ta:?}: a file name belongs \
                     to one supplier, remove it from one of the files"
                ));
            } else if let Some(name) = common_name(ga, gb) {
                problems.push(format!(
                    "formats: the file glob {ta:?} in {pa} and {tb:?} in {pb} both match a name \
                     such as {name:?}: such a file would go to whichever file sorts first; make \
                     the globs exclusive"
                ));
            }
        }
    }
}

/// A file name both globs match, if there is one and the globs are of the syntax this module
/// decides (see the module comment). Checked with the real matchers.
pub(crate) fn common_name(a: &GlobMatcher, b: &GlobMatcher) -> Option<String> {
    let variants_a = variants(a.glob().glob())?;
    let variants_b = variants(b.glob().glob())?;
    for pa in &variants_a {
        for pb in &variants_b {
            let mut failed = HashSet::new();
            if let Some(name) = walk(pa, pb, 0, 0, &mut failed)
                && a.is_match(&name)
                && b.is_match(&name)
            {
                return Some(name);
            }
        }
    }
    None
}

/// One piece of a glob without alternatives.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// One character as written (compared without case, as the globs are built).
    Literal(char),
    /// `?`: any one character.
    Any,
    /// `[...]`: one character of the ranges, or (negated) of none of them.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `*` or `**`: any text.
    Star,
}

/// Most alternative spellings of one glob that are walked.
const MAX_VARIANTS: usize = 64;

/// The glob as token lists, one per combination of its `{a,b}` alternatives; `None` for syntax
/// this module does not decide.
fn variants(glob: &str) -> Option<Vec<Vec<Token>>> {
    let mut out: Vec<Vec<Token>> = vec![Vec::new()];
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        let options: Vec<Vec<Token>> = match c {
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        '{' => return None, // nested alternatives
                        c => inner.push(c),
                    }
                }
                inner
                    .split(',')
                    .map(tokens)
                    .collect::<Option<Vec<Vec<Token>>>>()?
            }
            '\\' => vec![vec![Token::Literal(chars.next()?)]],
            '[' => {
                // A `]` right after `[` or `[!` is a member, not the end.
                let mut class = String::from('[');
                if let Some(&n) = chars.peek()
                    && (n == '!' || n == '^')
                {
                    class.push(n);
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    class.push(']');
                    chars.next();
                }
                loop {
                    let n = chars.next()?;
                    class.push(n);
                    if n == ']' {
                        break;
                    }
                }
                vec![tokens(&class)?]
            }
            c => vec![tokens(&c.to_string())?],
        };
        let mut grown = Vec::with_capacity(out.len() * options.len());
        for done in &out {
            for option in &options {
                let mut v = done.clone();
                v.extend(option.iter().cloned());
                grown.push(v);
            }
        }
        if grown.len() > MAX_VARIANTS {
            return None;
        }
        out = grown;
    }
    Some(out)
}

/// The tokens of a glob piece without alternatives.
fn tokens(text: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(Token::Literal(chars.next()?)),
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => out.push(Token::Any),
            '[' => {
                let negated = matches!(chars.peek(), Some('!' | '^'));
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = chars.next()?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        match ahead.peek() {
                            Some(&end) if end != ']' => {
                                chars.next();
                                chars.next();
                                ranges.push((c, end));
                                continue;
                            }
                            _ => {}
                        }
                    }
                    ranges.push((c, c));
                }
                out.push(Token::Class { negated, ranges });
            }
            '{' | '}' => return None,
            _ => out.push(Token::Literal(c)),
        }
    }
    Some(out)
}

/// Whether one character is taken by a token (case is ignored, as the globs are built).
fn takes(token: &Token, c: char) -> bool {
    let same = |a: char, b: char| a.to_lowercase().eq(b.to_lowercase());
    match token {
        Token::Literal(l) => same(*l, c),
        Token::Any | Token::Star => true,
        Token::Class { negated, ranges } => {
            let lower: Vec<char> = c
                .to_lowercase()
                .chain(c.to_uppercase())
                .chain([c])
                .collect();
            let inside = ranges
                .iter()
                .any(|(from, to)| lower.iter().any(|x| (from..=to).contains(&x)));
            inside != *negated
        }
    }
}

/// A character both tokens take, tried from what they name themselves and then from the
/// characters file names are made of.
fn shared_char(a: &Token, b: &Token) -> Option<char> {
    let named = |t: &Token| match t {
        Token::Literal(c) => vec![*c],
        Token::Class {
            negated: false,
            ranges,
        } => ranges.iter().map(|(from, _)| *from).collect(),
        _ => Vec::new(),
    };
    let common = ('0'..='9')
        .chain('a'..='z')
        .chain('A'..='Z')
        .chain(['_', '-', '.', ' ']);
    named(a)
        .into_iter()
        .chain(named(b))
        .chain(common)
        .find(|c| takes(a, *c) && takes(b, *c))
}

/// A text taken by `a[i..]` and `b[j..]` alike. `failed` remembers positions that lead
/// nowhere, so the walk visits each pair once.
fn walk(
    a: &[Token],
    b: &[Token],
    i: usize,
    j: usize,
    failed: &mut HashSet<(usize, usize)>,
) -> Option<String> {
    if failed.contains(&(i, j)) {
        return None;
    }
    let found = step(a, b, i, j, failed);
    if found.is_none() {
        failed.insert((i, j));
    }
    found
}

fn step(
    a: &[Token],
    b: &[Token],
    i: usize,
    j: usize,
    failed: &mut HashSet<(usize, usize)>,
) -> Option<String> {
    let (x, y) = (a.get(i), b.get(j));
    if x.is_none() && y.is_none() {
        return Some(String::new());
    }
    // A star may take nothing.
    if x == Some(&Token::Star)
        && let Some(rest) = walk(a, b, i + 1, j, failed)
    {
        return Some(rest);
    }
    if y == Some(&Token::Star)
        && let Some(rest) = walk(a, b, i, j + 1, failed)
    {
        return Some(rest);
    }
    let prefixed = |c: char, rest: Option<String>| rest.map(|rest| format!("{c}{rest}"));
    match (x?, y?) {
        // Two stars: one of them taking nothing was tried above, and suffices.
        (Token::Star, Token::Star) => None,
        // A star takes the character the other side needs, and stays.
        (Token::Star, other) => {
            let c = shared_char(&Token::Star, other)?;
            prefixed(c, walk(a, b, i, j + 1, failed))
        }
        (other, Token::Star) => {
            let c = shared_char(other, &Token::Star)?;
            prefixed(c, walk(a, b, i + 1, j, failed))
        }
        (x, y) => {
            let c = shared_char(x, y)?;
            prefixed(c, walk(a, b, i + 1, j + 1, failed))
        }
    }
}

#[cfg(test)]
mod tests {
    use globset::GlobBuilder;

    use super::*;

    fn glob(text: &str) -> GlobMatcher {
        GlobBuilder::new(text)
            .case_insensitive(true)
            .build()
            .unwrap()
            .compile_matcher()
    }

    fn common(a: &str, b: &str) -> Option<String> {
        common_name(&glob(a), &glob(b))
    }

    #[test]
    fn overlapping_globs_are_found_with_a_name_both_match() {
        for (a, b) in [
            ("LS_*.csv", "*.csv"),
            ("*_2026.csv", "LS_*"),
            ("LS_?.csv", "ls_*.CSV"),
            ("lieferschein-[0-9]*.csv", "*-1*.csv"),
            ("{LS,WE}_*.csv", "we_*"),
            ("LS_**", "*.xlsx"),
            ("LS_[!0-9]*.csv", "LS_x*"),
        ] {
            let name = common(a, b).unwrap_or_else(|| panic!("{a} and {b} overlap"));
            assert!(glob(a).is_match(&name) && glob(b).is_match(&name), "{name}");
            assert!(common(b, a).is_some(), "{b} and {a}");
        }
    }

    #[test]
    fn exclusive_globs_are_left_alone() {
        for (a, b) in [
            ("LS_*.csv", "*.xlsx"),
            ("LS_[0-4]*.csv", "LS_[5-9]*.csv"),
            ("lieferschein-*.csv", "LS_*.csv"),
            ("{a,b}_*.csv", "c_*"),
            ("LS_?.csv", "LS_??.csv"),
            ("LS_[!0-9]*", "LS_[0-9]*"),
        ] {
            assert_eq!(common(a, b), None, "{a} and {b}");
        }
    }

    #[test]
    fn syntax_outside_the_decided_subset_is_not_decided() {
        assert_eq!(variants("{a,{b,c}}"), None);
        assert_eq!(variants("{a,b"), None);
        let many = "{a,b,c,d}{a,b,c,d}{a,b,c,d}{a,b}";
        assert_eq!(variants(many), None);
    }

    #[test]
    fn classes_read_ranges_negation_and_a_leading_bracket() {
        assert_eq!(
            tokens("[!a-c]"),
            Some(vec![Token::Class {
                negated: true,
                ranges: vec![('a', 'c')]
            }])
        );
        assert_eq!(
            tokens("[]x-]"),
            Some(vec![Token::Class {
                negated: false,
                ranges: vec![(']', ']'), ('x', 'x'), ('-', '-')]
            }])
        );
    }
}
