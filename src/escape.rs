//! Outside text made safe to print. File names, senders, subjects and reasons come from people
//! eingang does not control; written raw to a log, a note, `status` or a terminal, an LF
//! forges a log line and an ESC drives the terminal. Every such text passes through `text`:
//! control characters (and the invisible bidirectional overrides that reorder what a reader
//! sees, U+202E among them) become `\xNN` escapes of their bytes. A file name is bytes on
//! Linux, not always UTF-8: `bytes` gives its printable form, which also names the file
//! exactly (a backslash becomes `\\`, every other odd byte `\xNN`), and `unescape` gives the
//! bytes back. `text` leaves such a form as it is, so printing it twice is harmless.

use std::borrow::Cow;

/// Escapes control and invisible reordering characters in a text.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s, false);
    Cow::Owned(out)
}

/// The printable, reversible form of raw bytes (a file name): valid UTF-8 as `text` escapes
/// it, every other byte as `\xNN`.
pub fn bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        push_escaped(&mut out, chunk.valid(), true);
        for b in chunk.invalid() {
            push_byte(&mut out, *b);
        }
    }
    out
}

/// The bytes an escaped text stands for (the inverse of `bytes` and `text`). `None` when the
/// text is not such an escape (a lone `\`, a bad `\x` sequence).
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
            continue;
        }
        match tail {
            [b'\\', more @ ..] => {
                out.push(b'\\');
                rest = more;
            }
            [b'x', hi, lo, more @ ..] => {
                let hex = [*hi, *lo];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                rest = more;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        // Bidirectional embeddings, overrides and isolates (Unicode TR 9): they reorder what
        // a reader sees, `gpj.exe` shown as `exe.jpg`.
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, s: &str, backslash: bool) {
    for c in s.chars() {
        if c == '\\' && backslash {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                push_byte(out, b);
            }
        } else {
            out.push(c);
        }
    }
}

fn push_byte(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_left_alone() {
        assert_eq!(text("Lieferschein 7.csv"), "Lieferschein 7.csv");
        assert!(matches!(text("Müller & Söhne"), Cow::Borrowed(_)));
        assert_eq!(
            text("a.csv\n2026-12-01 INFO fake"),
            "a.csv\\x0a2026-12-01 INFO fake"
        );
        assert_eq!(text("\u{1b}[2Jx"), "\\x1b[2Jx");
        // A printable form is printed as it is: twice is harmless.
        assert_eq!(text("C:\\temp"), "C:\\temp");
        assert_eq!(text(&bytes(b"a\nb")), "a\\x0ab");
        assert_eq!(
            text("rechnung\u{202e}gpj.exe"),
            "rechnung\\xe2\\x80\\xaegpj.exe"
        );
        // C1 controls are two bytes in UTF-8.
        assert_eq!(text("a\u{9b}b"), "a\\xc2\\x9bb");
    }

    #[test]
    fn raw_names_round_trip_through_their_escaped_form() {
        let names: [&[u8]; 5] = [
            b"ls.csv",
            b"caf\xe9.csv",
            b"a\\b\nc",
            b"\xff\xfe\x00",
            "ü\u{202e}".as_bytes(),
        ];
        for raw in names {
            let shown = bytes(raw);
            assert!(!shown.chars().any(needs_escape), "{shown}");
            assert!(!shown.chars().any(char::is_control), "{shown}");
            assert_eq!(unescape(&shown).as_deref(), Some(raw), "{shown}");
        }
        assert_eq!(bytes(b"caf\xe9.csv"), "caf\\xe9.csv");
    }

    #[test]
    fn a_broken_escape_is_refused() {
        assert_eq!(unescape("a\\"), None);
        assert_eq!(unescape("a\\xz1"), None);
        assert_eq!(unescape("a\\q"), None);
        assert_eq!(unescape("plain").as_deref(), Some(&b"plain"[..]));
    }
}
