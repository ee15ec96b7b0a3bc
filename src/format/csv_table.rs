//! Step 3 of the flow for CSV supplier tables: bytes → rows of text cells.
//!
//! Owns decoding (the format's encoding, applied before any CSV parsing, because attachments
//! arrive undecoded and a Windows-1252 file must keep its umlauts) and the CSV dialect. It hands
//! each record to `table`, which makes the notes; it never interprets a cell itself.

use std::cell::RefCell;
use std::io::{Cursor, SeekFrom};
use std::path::Path;

use encoding_rs::Encoding;

use super::Attachment;
use super::table::{Cell, CsvSettings, RowSink};
use crate::error::Reject;

/// Longest record accepted. A real delivery-note row is a few hundred bytes; a megabyte means
/// a missing line break or an unterminated quote swallowing the rest of the file.
const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Most fields in one record: the widest spreadsheet (column XFD) that could have exported it.
const MAX_FIELDS: usize = 16_384;

/// Reads every record of a CSV attachment and hands it to `on_row` with its 1-based line
/// number, which is the row number rejections name.
pub(crate) fn read_rows(
    attachment: &Attachment,
    csv: &CsvSettings,
    format_path: &Path,
    on_row: &mut RowSink,
) -> Result<(), Reject> {
    let file = attachment.name.as_str();
    let text = decode(&attachment.bytes, csv.encoding).ok_or_else(|| {
        Reject::malformed(
            file,
            format!(
                "is not valid {} text; set `encoding` in {} (e.g. \"windows-1252\")",
                csv.encoding.name(),
                format_path.display()
            ),
        )
    })?;
    READERS.with_borrow_mut(|readers| {
        let at = match readers
            .iter()
            .position(|(dialect, _)| *dialect == (csv.delimiter, csv.quote))
        {
            Some(at) => at,
            None => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .delimiter(csv.delimiter)
                    .quote(csv.quote)
                    .from_reader(Cursor::new(Vec::new()));
                // The first seek reads a header record: here, from no text, so that a seek
                // before each attachment reads nothing of it.
                reader
                    .seek_raw(SeekFrom::Start(0), csv::Position::new())
                    .map_err(|e| Reject::malformed(file, format!("not readable as CSV: {e}")))?;
                readers.push(((csv.delimiter, csv.quote), reader));
                readers.len() - 1
            }
        };
        let reader = &mut readers[at].1;
        *reader.get_mut() = Cursor::new(text.into_owned().into_bytes());
        let read = reader
            .seek_raw(SeekFrom::Start(0), csv::Position::new())
            .map_err(|e| Reject::malformed(file, format!("not readable as CSV: {e}")))
            .and_then(|()| records(reader, file, on_row));
        // The attachment's text is not kept beyond its parse.
        *reader.get_mut() = Cursor::new(Vec::new());
        read
    })
}

thread_local! {
    /// A CSV reader per dialect (delimiter, quote) for this thread, reset for each attachment:
    /// building one (its state machine and buffers) cost more than reading a delivery note.
    static READERS: RefCell<Vec<((u8, u8), TextReader)>> = const { RefCell::new(Vec::new()) };
}

/// A CSV reader over one attachment's text at a time.
type TextReader = csv::Reader<Cursor<Vec<u8>>>;

/// Hands every record of the text in `reader` (reset to its start) to `on_row`.
fn records(reader: &mut TextReader, file: &str, on_row: &mut RowSink) -> Result<(), Reject> {
    let mut record = csv::StringRecord::new();
    let mut cells = Vec::new();
    let mut lines = LineCounter::default();
    loop {
        let previous_end = usize::try_from(reader.position().byte()).unwrap_or(usize::MAX);
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(Reject::malformed(file, format!("not readable as CSV: {e}"))),
        }
        let row = lines.record_start(reader.get_ref().get_ref(), previous_end);
        if record.as_slice().len() > MAX_RECORD_BYTES {
            return Err(Reject::too_large(
                file,
                format!("row {row} is longer than {MAX_RECORD_BYTES} bytes"),
            ));
        }
        if record.len() > MAX_FIELDS {
            return Err(Reject::too_large(
                file,
                format!("row {row} has more than {MAX_FIELDS} fields"),
            ));
        }
        cells.clear();
        cells.extend(record.iter().map(|field| {
            if field.trim().is_empty() {
                Cell::Empty
            } else {
                Cell::Text(field.to_owned())
            }
        }));
        on_row(row, &cells)?;
    }
}

/// Counts the physical lines before each record, so that row numbers are the line numbers an
/// editor shows. The csv crate skips blank lines and leaves them out of its own positions.
#[derive(Default)]
struct LineCounter {
    /// Byte offset up to which line breaks are counted: the start of the last record.
    offset: usize,
    /// Line breaks before `offset`.
    breaks: usize,
}

impl LineCounter {
    /// The 1-based line of the record that follows the one ending at `previous_end`.
    fn record_start(&mut self, text: &[u8], previous_end: usize) -> usize {
        let rest = text.get(previous_end..).unwrap_or_default();
        let start = previous_end
            + rest
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
        let between = text.get(self.offset..start).unwrap_or_default();
        // "\r\n", "\n" and a lone "\r" each end one line (the csv crate accepts all three).
        let lone_cr = between
            .windows(2)
            .filter(|pair| matches!(pair, [b'\r', next] if *next != b'\n'))
            .count();
        let trailing_cr = usize::from(between.last() == Some(&b'\r'));
        self.breaks += between.iter().filter(|b| **b == b'\n').count() + lone_cr + trailing_cr;
        self.offset = start;
        self.breaks + 1
    }
}

/// The text of `bytes` in `encoding`; a BOM (UTF-8 or UTF-16) wins over the label and is
/// removed. `None` when the bytes are not valid in the encoding that applies.
fn decode<'b>(bytes: &'b [u8], encoding: &'static Encoding) -> Option<std::borrow::Cow<'b, str>> {
    let (text, _, had_errors) = encoding.decode(bytes);
    (!had_errors).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(bytes: &[u8], encoding: &'static Encoding) -> Result<Vec<(usize, Vec<Cell>)>, Reject> {
        let attachment = Attachment {
            name: "ls.csv".into(),
            content_type: None,
            bytes: bytes.to_vec(),
        };
        let settings = CsvSettings {
            encoding,
            delimiter: b';',
            quote: b'"',
        };
        let mut seen = Vec::new();
        read_rows(
            &attachment,
            &settings,
            Path::new("formats/x.toml"),
            &mut |row, cells| {
                seen.push((row, cells.to_vec()));
                Ok(())
            },
        )?;
        Ok(seen)
    }

    #[test]
    fn windows_1252_is_decoded_before_splitting() {
        let seen = rows(b"K\xe4se;\"a;b\"\r\n\r\n;x\n", encoding_rs::WINDOWS_1252).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, 1);
        assert_eq!(
            seen[0].1,
            [Cell::Text("Käse".into()), Cell::Text("a;b".into())]
        );
        assert_eq!(seen[1].0, 3, "the blank line still counts");
        assert_eq!(seen[1].1, [Cell::Empty, Cell::Text("x".into())]);
    }

    #[test]
    fn row_numbers_are_the_lines_an_editor_shows() {
        let text = b"h\r\n\r\n\"multi\nline\";1\rnext\n\nlast";
        let seen = rows(text, encoding_rs::UTF_8).unwrap();
        let numbers: Vec<usize> = seen.iter().map(|(row, _)| *row).collect();
        assert_eq!(numbers, [1, 3, 5, 7]);
    }

    #[test]
    fn a_utf8_bom_is_stripped_and_bad_utf8_rejected() {
        let seen = rows(b"\xef\xbb\xbfLS;Menge\n", encoding_rs::UTF_8).unwrap();
        assert_eq!(seen[0].1[0], Cell::Text("LS".into()));
        let reject = rows(b"K\xe4se;1\n", encoding_rs::UTF_8)
            .unwrap_err()
            .to_string();
        assert!(
            reject.contains("is not valid UTF-8") && reject.contains("formats/x.toml"),
            "{reject}"
        );
    }

    #[test]
    fn each_attachment_is_read_from_its_own_start_whatever_came_before() {
        let mut bytes = b"\"".to_vec();
        bytes.resize(MAX_RECORD_BYTES + 10, b'x');
        assert!(rows(&bytes, encoding_rs::UTF_8).is_err());
        let first = rows(b"a;b\nc;d\n", encoding_rs::UTF_8).unwrap();
        let second = rows(b"\nx;y\n", encoding_rs::UTF_8).unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].1, [Cell::Text("a".into()), Cell::Text("b".into())]);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, 2);
        assert_eq!(
            second[0].1,
            [Cell::Text("x".into()), Cell::Text("y".into())]
        );
    }

    #[test]
    fn an_endless_record_is_too_large() {
        let mut bytes = b"\"".to_vec();
        bytes.resize(MAX_RECORD_BYTES + 10, b'x');
        let reject = rows(&bytes, encoding_rs::UTF_8).unwrap_err();
        assert!(matches!(reject, Reject::TooLarge { .. }), "{reject}");
    }
}
