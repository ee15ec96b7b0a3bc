//! Step 3 of the flow: bytes → documents.
//!
//! Owns the registry of formats (the built-in standards plus one `TableFormat` per TOML file in
//! `formats/`) and the choice of module for one attachment. Standard XML is recognized by its
//! content and needs no supplier; a table needs the supplier that routing found. It never
//! decides where an item goes (that is `disposition`) and never stores anything.

pub mod archive;
pub mod csv_table;
pub mod cxml;
pub mod opentrans;
mod overlap;
pub mod standard;
pub mod table;
pub mod ubl;
pub mod xlsx_table;
pub mod xml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;

use crate::error::Reject;
use crate::model::Document;

pub use table::TableFormat;

/// One file to parse: an attachment of a message, or a dropped file on its own.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The file name as sent (decoded from RFC 2047/2231), or a generated `part-N` name.
    pub name: String,
    /// The declared MIME type, if any (`application/octet-stream` counts for nothing).
    pub content_type: Option<String>,
    /// The exact bytes, transfer-decoded but never charset-decoded.
    pub bytes: Vec<u8>,
}

/// The limits every parse runs under; each one exceeded is a rejection with its value.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest item (message or file) accepted.
    pub max_item_bytes: u64,
    /// Largest sum of declared uncompressed sizes in an XLSX/ODS container.
    pub max_inflated_bytes: u64,
    /// Deepest XML element nesting accepted.
    pub max_xml_depth: usize,
    /// Most table rows (CSV or sheet) accepted in one attachment.
    pub max_rows: usize,
    /// The eingang executable that reads spreadsheets in a child process (`parse-sheet`).
    pub sheet_reader: PathBuf,
    /// Address-space limit of that child.
    pub sheet_memory_bytes: u64,
    /// Wall-clock limit of that child.
    pub sheet_timeout: Duration,
    /// The day dates are validated against (a document dated more than a year after it is
    /// implausible); `None` is the local date when the item is parsed. Tests set it.
    pub today: Option<NaiveDate>,
}

impl Limits {
    /// The documented defaults (50 MiB items, 200 MiB inflated, depth 256, 100 000 rows), with
    /// `sheet_reader` as the spreadsheet child.
    pub fn with_defaults(sheet_reader: PathBuf) -> Limits {
        Limits {
            max_item_bytes: 50 * 1024 * 1024,
            max_inflated_bytes: 200 * 1024 * 1024,
            max_xml_depth: 256,
            max_rows: 100_000,
            sheet_reader,
            sheet_memory_bytes: 2 * 1024 * 1024 * 1024,
            sheet_timeout: Duration::from_secs(30),
            today: None,
        }
    }
}

/// What one attachment turned out to be.
#[derive(Debug)]
pub enum Parsed {
    /// Documents, not yet validated.
    Documents(Vec<Document>),
    /// Not something eingang reads (an image, a PDF, an XML invoice); the reason says what it
    /// is. A message may carry such attachments beside its documents.
    Ignored(String),
}

/// Every format eingang knows: the standards (built in) and the supplier tables.
#[derive(Debug, Default)]
pub struct Registry {
    tables: Vec<TableFormat>,
    dir: Option<PathBuf>,
}

impl Registry {
    /// Loads every `*.toml` in `dir`. A missing folder is an empty registry (the caller warns);
    /// every problem is reported at once, one line each: a broken file, two files for one
    /// supplier, and two files that claim the same sender, domain or file name (`overlap`).
    pub fn load(dir: &Path) -> Result<Registry, Vec<String>> {
        let mut tables = Vec::new();
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Registry {
                    tables,
                    dir: Some(dir.to_owned()),
                });
            }
            Err(e) => return Err(vec![format!("formats: {}: {e}", dir.display())]),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            match TableFormat::load(&path) {
                Ok(format) => tables.push(format),
                Err(why) => problems.push(format!("formats: {}: {why}", path.display())),
            }
        }
        let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        for pair in names.windows(2) {
            if pair[0] == pair[1] {
                problems.push(format!(
                    "formats: two files define the supplier {:?}",
                    pair[0]
                ));
            }
        }
        problems.extend(overlap::problems(&tables));
        if problems.is_empty() {
            Ok(Registry {
                tables,
                dir: Some(dir.to_owned()),
            })
        } else {
            Err(problems)
        }
    }

    /// The supplier formats, in file-name order.
    pub fn tables(&self) -> &[TableFormat] {
        &self.tables
    }

    /// The supplier format with this name.
    pub fn by_name(&self, name: &str) -> Option<&TableFormat> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The supplier that lists this sender address, or its `@domain`.
    pub fn by_sender(&self, sender: &str) -> Option<&TableFormat> {
        self.tables.iter().find(|t| t.matches_sender(sender))
    }

    /// The supplier whose file-name globs match this name.
    pub fn by_file_name(&self, name: &str) -> Option<&TableFormat> {
        self.tables.iter().find(|t| t.matches_file(name))
    }

    /// The one supplier that lists an address at exactly this domain, if only one does: a new
    /// address of that domain most likely belongs to it.
    pub fn by_sender_domain(&self, domain: &str) -> Option<&TableFormat> {
        let mut listing = self.tables.iter().filter(|t| t.lists_domain(domain));
        match (listing.next(), listing.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// A new format file to create, named after the first of `stems` that no supplier has
    /// (a name and a file of their own), else after the first with a number:
    /// `formats/acme-neu.toml (a new supplier file)`. It never names an existing supplier's
    /// file.
    pub fn new_file_hint(&self, stems: &[&str]) -> String {
        let dir = self.dir.as_deref().unwrap_or(Path::new("formats"));
        let taken = |stem: &str| {
            let path = dir.join(format!("{stem}.toml"));
            self.tables.iter().any(|t| t.name == stem || t.path == path)
        };
        let stems: Vec<String> = stems.iter().map(|s| file_stem(s)).collect();
        let first = stems
            .first()
            .cloned()
            .unwrap_or_else(|| "supplier".to_owned());
        let stem = stems
            .iter()
            .find(|s| !taken(s))
            .cloned()
            .or_else(|| (2..).map(|n| format!("{first}-{n}")).find(|s| !taken(s)))
            .expect("an endless range has a free name");
        format!(
            "{} (a new supplier file)",
            dir.join(format!("{stem}.toml")).display()
        )
    }
}

/// A supplier name made of what a format file name may hold: ASCII letters and digits,
/// lowercase, everything else `-`.
fn file_stem(text: &str) -> String {
    let stem: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if stem.is_empty() {
        "supplier".to_owned()
    } else {
        stem
    }
}

/// Whether this attachment looks like a table file (by name or declared type), so that it
/// needs a supplier.
pub fn is_table_file(attachment: &Attachment) -> bool {
    let name = attachment.name.to_ascii_lowercase();
    let by_name = [".csv", ".tsv", ".xlsx", ".xlsm", ".xls", ".ods"]
        .iter()
        .any(|ext| name.ends_with(ext));
    let by_type = attachment.content_type.as_deref().is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == "text/csv"
            || t.contains("spreadsheet")
            || t.contains("ms-excel")
            || t == "text/tab-separated-values"
    });
    by_name || by_type
}

/// Parses one attachment: a standard XML document by its content, else a table with the given
/// supplier format. `None` for `supplier` means no supplier was routed; a table file then is
/// the caller's rejection (it knows the sender), and anything else is ignored.
pub fn parse(
    attachment: &Attachment,
    supplier: Option<&TableFormat>,
    limits: &Limits,
) -> Result<Parsed, Reject> {
    if let Some(result) = standard::parse(attachment, limits) {
        return result;
    }
    match supplier {
        Some(format) if format.accepts(attachment) => {
            table::parse(attachment, format, limits).map(Parsed::Documents)
        }
        _ => Ok(Parsed::Ignored(describe(attachment))),
    }
}

fn describe(attachment: &Attachment) -> String {
    match &attachment.content_type {
        Some(t) => format!("{} ({t})", attachment.name),
        None => attachment.name.clone(),
    }
}
