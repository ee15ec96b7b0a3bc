//! Step 3 of the flow for ZIP containers: the one pre-scan every zip gets before anything
//! inflates it, for workbooks (XLSX, XLSM, ODS: `xlsx_table`) and ZIP attachments alike, and
//! the opening of a ZIP attachment into its members, each an attachment of its own.
//!
//! Everything is decided from the central directory first: entry count, encryption,
//! compression method, the declared uncompressed sizes and their ratio. zip 9 enforces the
//! declared size while inflating (CRATES.md), so the declared sizes are a real bound. A member's
//! name is shown and matched against globs, never used as a path. This module never routes or
//! parses a member: the pipeline hands members on like attachments.

use std::borrow::Cow;
use std::io::{Cursor, Read};

use zip::{CompressionMethod, ZipArchive};

use super::{Attachment, Limits};
use crate::error::Reject;

/// Zip containers begin with a local file header (APPNOTE 4.3.7).
pub(crate) const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// Workbooks hold a few dozen entries and supplier archives a few files; thousands mean a
/// "10 000 sheets" bomb.
const MAX_ZIP_ENTRIES: usize = 2_000;
/// Sheet XML and CSV inflate 5 to 30 times; deflate's ceiling is about 1 000, which bombs reach.
const MAX_RATIO: u64 = 250;
/// Below this size an entry cannot hurt, whatever its ratio.
const RATIO_MIN_BYTES: u64 = 1024 * 1024;
/// Zip containers that are documents (read by `xlsx_table`), not archives to open.
const WORKBOOK_EXTENSIONS: [&str; 3] = [".xlsx", ".xlsm", ".ods"];
/// Declared types of ZIP archives (the last two are what older Windows mailers send).
const ZIP_TYPES: [&str; 3] = [
    "application/zip",
    "application/x-zip-compressed",
    "application/x-zip",
];

/// What a zip is to the person who reads the rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    /// An XLSX, XLSM or ODS workbook.
    Workbook,
    /// A ZIP attachment whose members are documents.
    Archive,
}

impl Container {
    fn broken(self, file: &str, e: impl std::fmt::Display) -> Reject {
        match self {
            Container::Workbook => Reject::malformed(file, format!("broken zip container: {e}")),
            Container::Archive => {
                Reject::malformed(file, format!("is not a readable ZIP archive: {e}"))
            }
        }
    }

    /// The rejection of a password-protected container.
    pub(crate) fn protected(self, file: &str) -> Reject {
        let why = match self {
            Container::Workbook => {
                "the workbook is password-protected; ask the supplier for an unprotected file"
            }
            Container::Archive => {
                "the ZIP archive is password-protected; ask the supplier for an unprotected one"
            }
        };
        Reject::Unsupported {
            file: file.to_owned(),
            why: why.to_owned(),
        }
    }
}

/// One entry of a scanned zip, as its central directory declares it.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Its position in the archive.
    pub(crate) index: usize,
    /// Its name as stored (a path inside the archive; never used as one).
    pub(crate) name: String,
    /// The declared uncompressed size.
    pub(crate) size: u64,
    /// A folder or a symbolic link: nothing to read.
    pub(crate) is_file: bool,
}

/// A zip whose metadata passed the pre-scan: nothing of it has been inflated yet.
pub(crate) struct Scanned<'b> {
    /// The archive, to read entries from.
    pub(crate) archive: ZipArchive<Cursor<&'b [u8]>>,
    /// Every entry, in archive order.
    pub(crate) entries: Vec<Entry>,
    /// The sum of the declared uncompressed sizes.
    pub(crate) inflated: u64,
}

/// Checks a zip from its central directory alone: at most `MAX_ZIP_ENTRIES` entries, none
/// encrypted, only stored or deflated ones, the declared sizes within `limit` together with
/// `used` (what other archives of the same item declared), and no entry over 1 MiB that would
/// inflate more than `MAX_RATIO` times.
pub(crate) fn scan<'b>(
    bytes: &'b [u8],
    file: &str,
    container: Container,
    limit: u64,
    used: u64,
) -> Result<Scanned<'b>, Reject> {
    let broken = |e: zip::result::ZipError| container.broken(file, e);
    let archive = ZipArchive::new(Cursor::new(bytes)).map_err(broken)?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(Reject::too_large(
            file,
            format!(
                "{} zip entries; the limit is {MAX_ZIP_ENTRIES}",
                archive.len()
            ),
        ));
    }
    let mut inflated: u64 = 0;
    let mut too_steep: Option<(String, u64)> = None;
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive.by_index_data(index).map_err(broken)?;
        let name = entry.name().map_err(broken)?.into_owned();
        if entry.encrypted() {
            return Err(container.protected(file));
        }
        let method = entry.compression();
        if !matches!(
            method,
            CompressionMethod::Stored | CompressionMethod::Deflated
        ) {
            return Err(Reject::Unsupported {
                file: file.to_owned(),
                why: format!("{name} is compressed with {method:?}, which eingang does not read"),
            });
        }
        let size = entry.size();
        inflated = inflated.saturating_add(size);
        let ratio = size / entry.compressed_size().max(1);
        if size > RATIO_MIN_BYTES && ratio > MAX_RATIO && too_steep.is_none() {
            too_steep = Some((name.clone(), ratio));
        }
        let is_file = !entry.is_dir() && !entry.is_symlink();
        entries.push(Entry {
            index,
            name,
            size,
            is_file,
        });
    }
    if used.saturating_add(inflated) > limit {
        let before = if used == 0 {
            String::new()
        } else {
            format!(", and the archives before it in this item {used}")
        };
        return Err(Reject::too_large(
            file,
            format!(
                "its zip entries declare {inflated} bytes uncompressed{before}; the limit is \
                 {limit} bytes (limits.max_inflated_mib)"
            ),
        ));
    }
    if let Some((name, ratio)) = too_steep {
        return Err(Reject::too_large(
            file,
            format!("{name} would inflate {ratio} times (a zip bomb?); the limit is {MAX_RATIO}"),
        ));
    }
    Ok(Scanned {
        archive,
        entries,
        inflated,
    })
}

/// Whether an attachment is a ZIP archive to open: named `*.zip`, or declared as a zip type and
/// not named as a workbook (an XLSX is a zip container, and some mailers declare it as one).
pub fn is_archive(attachment: &Attachment) -> bool {
    let name = attachment.name.to_ascii_lowercase();
    if name.ends_with(".zip") {
        return true;
    }
    let declared = attachment
        .content_type
        .as_deref()
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    declared.is_some_and(|t| ZIP_TYPES.contains(&t.as_str())) && !is_workbook_name(&name)
}

fn is_workbook_name(lowercase_name: &str) -> bool {
    WORKBOOK_EXTENSIONS
        .iter()
        .any(|ext| lowercase_name.ends_with(ext))
}

/// The attachments of an item with every ZIP archive replaced by its members, in order. Other
/// attachments are passed through unchanged. The second list names archives that held no file,
/// for the rejection text when nothing else is found. The declared sizes of all archives of the
/// item together stay within `limits.max_inflated_bytes`. A member that cannot be read is the
/// rejection of the item, naming `archive.zip/member`.
pub fn expand<'a>(
    attachments: &'a [Attachment],
    limits: &Limits,
) -> Result<(Vec<Cow<'a, Attachment>>, Vec<String>), Reject> {
    let mut out = Vec::with_capacity(attachments.len());
    let mut empty = Vec::new();
    let mut used = 0;
    for attachment in attachments {
        if !is_archive(attachment) {
            out.push(Cow::Borrowed(attachment));
            continue;
        }
        let members = members(attachment, limits, &mut used)?;
        if members.is_empty() {
            empty.push(format!("{} (a ZIP archive without files)", attachment.name));
        }
        out.extend(members.into_iter().map(Cow::Owned));
    }
    Ok((out, empty))
}

/// The files of one ZIP attachment, each named `<archive>/<path inside>`. `used` is what
/// earlier archives of the item declared; it grows by this one's declared size.
fn members(
    attachment: &Attachment,
    limits: &Limits,
    used: &mut u64,
) -> Result<Vec<Attachment>, Reject> {
    let file = attachment.name.as_str();
    let Scanned {
        mut archive,
        entries,
        inflated,
    } = scan(
        &attachment.bytes,
        file,
        Container::Archive,
        limits.max_inflated_bytes,
        *used,
    )?;
    *used = used.saturating_add(inflated);
    let mut members = Vec::new();
    for entry in entries.iter().filter(|e| e.is_file) {
        let name = format!("{file}/{}", member_name(&entry.name, entry.index));
        let lowercase = name.to_ascii_lowercase();
        if lowercase.ends_with(".zip") {
            return Err(nested(&name));
        }
        if entry.size > limits.max_item_bytes {
            return Err(Reject::too_large(
                &name,
                format!(
                    "{} bytes uncompressed, the limit is {} bytes (limits.max_item_mib)",
                    entry.size, limits.max_item_bytes
                ),
            ));
        }
        let unreadable = |e: String| Reject::malformed(&name, format!("cannot be unpacked: {e}"));
        let reader = archive
            .by_index(entry.index)
            .map_err(|e| unreadable(e.to_string()))?;
        // The size was checked against max_item_bytes above, so the capacity is bounded.
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        reader
            .take(entry.size.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        if bytes.len() as u64 > entry.size {
            return Err(unreadable("larger than its declared size".to_owned()));
        }
        // A zip under another name is still an archive in an archive; a workbook is a document.
        if bytes.starts_with(ZIP_MAGIC) && !is_workbook_name(&lowercase) {
            return Err(nested(&name));
        }
        members.push(Attachment {
            name,
            content_type: None,
            bytes,
        });
    }
    Ok(members)
}

fn nested(name: &str) -> Reject {
    Reject::Unsupported {
        file: name.to_owned(),
        why: "is a ZIP archive inside a ZIP archive, which eingang does not open; ask the \
              supplier to put the files into one archive"
            .to_owned(),
    }
}

/// A member's path inside the archive as shown: `/` between its parts, without empty, `.` and
/// `..` parts or control characters. It is a name, never a path on this machine.
fn member_name(raw: &str, index: usize) -> String {
    let parts: Vec<String> = raw
        .split(['/', '\\'])
        .map(|part| {
            part.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .filter(|part| !part.is_empty() && part != "." && part != "..")
        .collect();
    if parts.is_empty() {
        format!("member-{}", index + 1)
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use zip::write::SimpleFileOptions;

    use super::*;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content) in entries {
            writer
                .start_file(*name, SimpleFileOptions::default())
                .unwrap();
            writer.write_all(content).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn attachment(name: &str, content_type: Option<&str>, bytes: Vec<u8>) -> Attachment {
        Attachment {
            name: name.to_owned(),
            content_type: content_type.map(str::to_owned),
            bytes,
        }
    }

    fn limits() -> Limits {
        Limits::with_defaults(PathBuf::new())
    }

    fn names(expanded: &[Cow<'_, Attachment>]) -> Vec<String> {
        expanded.iter().map(|a| a.name.clone()).collect()
    }

    #[test]
    fn zip_archives_are_told_by_name_or_type_but_workbooks_are_not() {
        assert!(is_archive(&attachment("Lieferungen.ZIP", None, vec![])));
        assert!(is_archive(&attachment(
            "part-2",
            Some("application/x-zip-compressed"),
            vec![]
        )));
        assert!(!is_archive(&attachment(
            "ls.xlsx",
            Some("application/zip"),
            vec![]
        )));
        assert!(!is_archive(&attachment(
            "ls.csv",
            None,
            b"PK\x03\x04".to_vec()
        )));
    }

    #[test]
    fn members_replace_their_archive_in_order_named_after_it() {
        let zip = zip_of(&[
            ("2026/LS_1.csv", b"a"),
            ("../../etc/LS_2.csv", b"b"),
            ("leer/", b""),
        ]);
        let attachments = [
            attachment("vorher.xml", None, b"<x/>".to_vec()),
            attachment("lieferungen.zip", None, zip),
            attachment("nachher.pdf", None, b"%PDF".to_vec()),
        ];
        let (expanded, empty) = expand(&attachments, &limits()).unwrap();
        assert_eq!(
            names(&expanded),
            [
                "vorher.xml",
                "lieferungen.zip/2026/LS_1.csv",
                "lieferungen.zip/etc/LS_2.csv",
                "nachher.pdf"
            ]
        );
        assert_eq!(expanded[1].bytes, b"a");
        assert!(matches!(expanded[0], Cow::Borrowed(_)));
        assert!(empty.is_empty());
    }

    #[test]
    fn an_archive_without_files_is_noted() {
        let zip = zip_of(&[]);
        let attachments = [attachment("leer.zip", None, zip)];
        let (expanded, empty) = expand(&attachments, &limits()).unwrap();
        assert!(expanded.is_empty());
        assert_eq!(empty, ["leer.zip (a ZIP archive without files)"]);
    }

    #[test]
    fn a_zip_inside_a_zip_is_refused_by_name_or_content() {
        let inner = zip_of(&[("LS_1.csv", b"a")]);
        for name in ["innen.zip", "innen.dat"] {
            let outer = zip_of(&[(name, &inner)]);
            let reject = expand(&[attachment("aussen.zip", None, outer)], &limits())
                .unwrap_err()
                .to_string();
            assert_eq!(
                reject,
                format!(
                    "aussen.zip/{name}: is a ZIP archive inside a ZIP archive, which eingang \
                     does not open; ask the supplier to put the files into one archive"
                )
            );
        }
        // A workbook is a document, not an archive: it stays a member.
        let outer = zip_of(&[("ls.xlsx", &inner)]);
        let attachments = [attachment("aussen.zip", None, outer)];
        let (expanded, _) = expand(&attachments, &limits()).unwrap();
        assert_eq!(names(&expanded), ["aussen.zip/ls.xlsx"]);
    }

    #[test]
    fn declared_sizes_of_all_archives_of_an_item_share_one_limit() {
        let limits = Limits {
            max_inflated_bytes: 1500,
            ..limits()
        };
        let first = zip_of(&[("a.csv", &[b'a'; 1000])]);
        let second = zip_of(&[("b.csv", &[b'b'; 1000])]);
        let one = [attachment("eins.zip", None, first.clone())];
        assert!(expand(&one, &limits).is_ok());
        let both = [
            attachment("eins.zip", None, first),
            attachment("zwei.zip", None, second),
        ];
        let reject = expand(&both, &limits).unwrap_err().to_string();
        assert_eq!(
            reject,
            "zwei.zip: too large: its zip entries declare 1000 bytes uncompressed, and the \
             archives before it in this item 1000; the limit is 1500 bytes \
             (limits.max_inflated_mib)"
        );
    }

    #[test]
    fn a_steep_member_is_refused_before_it_is_inflated() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let zip = zip_of(&[("LS_1.csv", &zeros)]);
        let reject = expand(&[attachment("bombe.zip", None, zip)], &limits())
            .unwrap_err()
            .to_string();
        assert!(
            reject.starts_with("bombe.zip: too large: LS_1.csv would inflate"),
            "{reject}"
        );
    }

    #[test]
    fn a_member_over_the_item_limit_is_refused_by_its_declared_size() {
        let limits = Limits {
            max_item_bytes: 10,
            ..limits()
        };
        let zip = zip_of(&[("LS_1.csv", b"more than ten bytes")]);
        let reject = expand(&[attachment("a.zip", None, zip)], &limits)
            .unwrap_err()
            .to_string();
        assert_eq!(
            reject,
            "a.zip/LS_1.csv: too large: 19 bytes uncompressed, the limit is 10 bytes \
             (limits.max_item_mib)"
        );
    }

    #[test]
    fn broken_and_encrypted_archives_are_rejected_with_their_reason() {
        let reject = expand(
            &[attachment(
                "kaputt.zip",
                None,
                b"PK\x03\x04nonsense".to_vec(),
            )],
            &limits(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            reject.starts_with("kaputt.zip: is not a readable ZIP archive: "),
            "{reject}"
        );
        // The encryption flag (bit 0 of the general purpose flags) set in both headers.
        let mut zip = zip_of(&[("LS_1.csv", b"a")]);
        for signature in [b"PK\x03\x04", b"PK\x01\x02"] {
            let at = zip.windows(4).position(|w| w == signature).unwrap();
            let flags = at + if signature == b"PK\x03\x04" { 6 } else { 8 };
            zip[flags] |= 1;
        }
        let reject = expand(&[attachment("geheim.zip", None, zip)], &limits())
            .unwrap_err()
            .to_string();
        assert_eq!(
            reject,
            "geheim.zip: the ZIP archive is password-protected; ask the supplier for an \
             unprotected one"
        );
    }

    #[test]
    fn member_names_lose_path_tricks_and_control_characters() {
        assert_eq!(member_name("../../etc/passwd", 0), "etc/passwd");
        assert_eq!(member_name("C:\\temp\\ls.csv", 0), "C:/temp/ls.csv");
        assert_eq!(member_name("/abs/./l\u{7}s.csv", 0), "abs/ls.csv");
        assert_eq!(member_name("../", 4), "member-5");
    }
}
