//! Names on the wire: folder paths from the config (`/`-separated, any Unicode) turned into the
//! server's mailbox names (its hierarchy delimiter, modified UTF-7 of RFC 3501 §5.1.3), quoted
//! strings, UID sets (RFC 3501 §9 `sequence-set`), and the item location, an IMAP URL of
//! RFC 5092 (`imap://user@host/folder;UIDVALIDITY=v/;UID=u`). Pure functions, no I/O.

use async_imap::imap_proto::rfc4315::UidSetMember;

/// The modified-base64 alphabet of RFC 3501 §5.1.3: base64 with `,` instead of `/`.
const MUTF7_BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encodes a mailbox name in modified UTF-7 (RFC 3501 §5.1.3): printable ASCII stands for
/// itself, `&` is `&-`, everything else is UTF-16BE in modified base64 between `&` and `-`.
pub fn mutf7(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk.first().copied().unwrap_or(0),
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            // 3 bytes make 4 characters; a final 1 or 2 bytes make 2 or 3, unpadded.
            for i in 0..=chunk.len() {
                let index = ((n >> (18 - 6 * i)) & 0x3f) as usize;
                out.push(char::from(MUTF7_BASE64[index]));
            }
        }
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// The server's name for a config folder path: the `/`-separated levels joined with the
/// server's delimiter, each level in modified UTF-7.
pub fn server_path(path: &str, delimiter: Option<&str>) -> Result<String, String> {
    let levels: Vec<&str> = path.split('/').collect();
    if levels.iter().any(|l| l.is_empty()) {
        return Err(format!(
            "folder {path:?}: empty level (a leading, trailing or double /)"
        ));
    }
    match delimiter {
        None if levels.len() > 1 => Err(format!(
            "folder {path:?}: the server has no folder hierarchy; use a name without /"
        )),
        None => Ok(mutf7(path)),
        Some(d) => {
            if let Some(level) = levels.iter().find(|l| l.contains(d)) {
                return Err(format!(
                    "folder {path:?}: the level {level:?} contains the server's delimiter {d:?}"
                ));
            }
            Ok(levels.iter().map(|l| mutf7(l)).collect::<Vec<_>>().join(d))
        }
    }
}

/// An IMAP quoted string (RFC 3501 §4.3); CR, LF and NUL cannot be quoted.
pub fn quoted(text: &str) -> Result<String, String> {
    if text.contains(['\r', '\n', '\0']) {
        return Err(format!("{text:?}: a line break cannot be sent in a name"));
    }
    Ok(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A compact UID set: `1:3,7,9:12`. The caller never passes an empty slice.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter();
    let Some(mut start) = iter.next() else {
        return String::new();
    };
    let mut end = start;
    let mut push = |start: u32, end: u32| {
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        })
    };
    for uid in iter {
        if uid == end + 1 {
            end = uid;
        } else {
            push(start, end);
            start = uid;
            end = uid;
        }
    }
    push(start, end);
    parts.join(",")
}

/// The UIDs of a COPYUID set (RFC 4315 §3), in the order the server listed them: the n-th
/// source UID became the n-th destination UID.
pub fn uids_of(set: &[UidSetMember]) -> Vec<u32> {
    let mut out = Vec::new();
    for member in set {
        match member {
            UidSetMember::Uid(u) => out.push(*u),
            // Bounded: a server cannot make us build more UIDs than a range it sent spans,
            // and a COPYUID names only messages that exist.
            UidSetMember::UidRange(r) => out.extend(r.clone().take(1_000_000)),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `keep`.
fn percent(text: &str, keep: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        let c = char::from(b);
        if c.is_ascii_alphanumeric() || "-._~".contains(c) || keep.contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A folder as an RFC 5092 IMAP URL, named as configured.
pub fn folder_url(user: &str, host: &str, folder: &str) -> String {
    format!(
        "imap://{}@{}/{}",
        percent(user, ""),
        host,
        percent(folder, "/")
    )
}

/// Where a message lies: the folder's URL with its UIDVALIDITY and the message's UID.
pub fn location(user: &str, host: &str, folder: &str, validity: u32, uid: u32) -> String {
    format!(
        "{};UIDVALIDITY={validity}/;UID={uid}",
        folder_url(user, host, folder)
    )
}

/// The UIDVALIDITY and UID at the end of a location made by `location`.
pub fn uid_of_location(location: &str) -> Option<(u32, u32)> {
    let (rest, uid) = location.rsplit_once("/;UID=")?;
    let (_, validity) = rest.rsplit_once(";UIDVALIDITY=")?;
    Some((validity.parse().ok()?, uid.parse().ok()?))
}

/// The `archived_ref` of a moved message: the destination's UIDVALIDITY and UID.
pub fn archived_ref(validity: u32, uid: u32) -> String {
    format!("{validity}:{uid}")
}

/// The parts of an `archived_ref`.
pub fn parse_archived_ref(text: &str) -> Option<(u32, u32)> {
    let (validity, uid) = text.split_once(':')?;
    Some((validity.parse().ok()?, uid.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_matches_rfc_3501_and_dovecot() {
        assert_eq!(mutf7("Eingänge"), "Eing&AOQ-nge"); // CRATES.md, verified with Dovecot
        assert_eq!(mutf7("Fehler & Co"), "Fehler &- Co");
        assert_eq!(
            mutf7("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        ); // RFC 3501 §5.1.3
        assert_eq!(mutf7("Rückläufer"), "R&APw-ckl&AOQ-ufer");
        assert_eq!(mutf7("😀"), "&2D3eAA-");
    }

    #[test]
    fn config_paths_take_the_server_delimiter() {
        assert_eq!(
            server_path("Lieferscheine/Eingang", Some(".")).unwrap(),
            "Lieferscheine.Eingang"
        );
        assert_eq!(
            server_path("Lieferscheine/Eingang", Some("/")).unwrap(),
            "Lieferscheine/Eingang"
        );
        assert!(server_path("Lieferscheine.2026/Eingang", Some(".")).is_err());
        assert!(server_path("a/b", None).is_err());
        assert!(server_path("a//b", Some(".")).is_err());
        assert_eq!(server_path("Eingang", None).unwrap(), "Eingang");
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[7, 1, 2, 3, 9, 10, 12, 11]), "1:3,7,9:12");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(
            uids_of(&[UidSetMember::UidRange(3..=5), UidSetMember::Uid(9)]),
            [3, 4, 5, 9]
        );
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quoted(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quoted("a\r\nb").is_err());
    }

    #[test]
    fn locations_are_imap_urls_that_parse_back() {
        let loc = location(
            "lager@example.com",
            "imap.example.com",
            "Lieferscheine/Eingang",
            1795278074,
            42,
        );
        assert_eq!(
            loc,
            "imap://lager%40example.com@imap.example.com/Lieferscheine/Eingang;UIDVALIDITY=1795278074/;UID=42"
        );
        assert_eq!(uid_of_location(&loc), Some((1795278074, 42)));
        assert_eq!(uid_of_location("/var/drop/ls.csv"), None);
        assert_eq!(parse_archived_ref(&archived_ref(7, 9)), Some((7, 9)));
    }
}
