//! Step 3 of the flow for supplier tables: the format file of one supplier, and rows → notes.
//!
//! Owns `formats/<supplier>.toml` (its keys, their checks, routing by sender and file name; every
//! key is documented in `formats/README.md`) and the one place where rows of typed cells become
//! delivery notes, shared by CSV (`csv_table`) and spreadsheets (`xlsx_table`). It never reads
//! file bytes itself: the two readers hand it rows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use chrono::format::{Item, Numeric, StrftimeItems};
use encoding_rs::Encoding;
use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Attachment, Limits, csv_table, xlsx_table};
use crate::auth::Requirement;
use crate::error::Reject;
use crate::model::{Decimal, DeliveryLine, DeliveryNote, Document};

/// Date formats tried when a format file names none: German first, then ISO 8601.
const DEFAULT_DATE_FORMATS: [&str; 2] = ["%d.%m.%Y", "%Y-%m-%d"];

/// One supplier's table layout, loaded from `formats/<name>.toml`.
#[derive(Debug, Clone)]
pub struct TableFormat {
    /// The supplier name (the file stem unless `name` is set).
    pub name: String,
    /// The TOML file it came from.
    pub path: PathBuf,
    kind: Kind,
    /// Lowercased addresses and `@domain` entries.
    senders: Vec<String>,
    files: GlobSet,
    /// The same globs one by one, with their text, for the overlap check across files.
    file_globs: Vec<GlobMatcher>,
    decimal: char,
    thousands: Option<char>,
    /// 1-based; 0 means the table has no header row.
    header_row: usize,
    /// 1-based row of the first data row.
    data_row: usize,
    date_formats: Vec<String>,
    columns: Vec<(Field, Column)>,
    from_file_name: FileNamePatterns,
    /// Lowercased supplier unit → unit code.
    units: HashMap<String, String>,
    /// How strictly this supplier's mail must be authenticated (`authenticate`).
    authenticate: Requirement,
}

/// CSV or spreadsheet, with what only that kind needs.
#[derive(Debug, Clone)]
enum Kind {
    Csv(CsvSettings),
    Sheet(SheetChoice),
}

/// How a CSV file is written: its encoding, delimiter and quote character.
#[derive(Debug, Clone)]
pub(crate) struct CsvSettings {
    /// The encoding of the bytes (a UTF-8 or UTF-16 BOM overrides it).
    pub(crate) encoding: &'static Encoding,
    /// The field delimiter.
    pub(crate) delimiter: u8,
    /// The quote character.
    pub(crate) quote: u8,
}

/// Which sheet of a workbook holds the table.
#[derive(Debug, Clone)]
pub(crate) enum SheetChoice {
    /// 1-based position among the sheets.
    Index(usize),
    /// The sheet's name (matched case-insensitively if no exact match).
    Name(String),
}

/// A field a column can fill; the `[columns]` keys of a format file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Field {
    Number,
    Date,
    OrderRef,
    LineNo,
    SupplierPartId,
    BuyerPartId,
    ManufacturerPartId,
    Gtin,
    Description,
    Quantity,
    Unit,
    OrderLine,
    UnitPrice,
    LineTotal,
    SerialNumber,
    Comment,
}

/// How many `Field`s there are: the size of a resolved column table.
const FIELD_COUNT: usize = Field::Comment as usize + 1;

impl Field {
    /// The key as written in the format file and in rejections.
    fn key(self) -> &'static str {
        match self {
            Field::Number => "number",
            Field::Date => "date",
            Field::OrderRef => "order_ref",
            Field::LineNo => "line_no",
            Field::SupplierPartId => "supplier_part_id",
            Field::BuyerPartId => "buyer_part_id",
            Field::ManufacturerPartId => "manufacturer_part_id",
            Field::Gtin => "gtin",
            Field::Description => "description",
            Field::Quantity => "quantity",
            Field::Unit => "unit",
            Field::OrderLine => "order_line",
            Field::UnitPrice => "unit_price",
            Field::LineTotal => "line_total",
            Field::SerialNumber => "serial_number",
            Field::Comment => "comment",
        }
    }
}

/// Where a field's value sits in a row.
#[derive(Debug, Clone)]
enum Column {
    /// The column whose header text matches (case-insensitive, trimmed).
    Header(String),
    /// A 0-based column position.
    Position(usize),
}

/// Header fields taken from the file name, each a regex with one capture group.
#[derive(Debug, Clone)]
struct FileNamePatterns {
    number: Option<Regex>,
    date: Option<Regex>,
    order_ref: Option<Regex>,
}

/// The format file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFormat {
    name: Option<String>,
    kind: RawKind,
    authenticate: Option<String>,
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
    encoding: Option<String>,
    delimiter: Option<String>,
    quote: Option<String>,
    decimal: Option<String>,
    thousands: Option<String>,
    header_row: Option<usize>,
    data_row: Option<usize>,
    sheet: Option<RawSheet>,
    date_formats: Option<Vec<String>>,
    #[serde(default)]
    columns: BTreeMap<Field, RawColumn>,
    #[serde(default)]
    from_file_name: RawFileNamePatterns,
    #[serde(default)]
    units: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Csv,
    Sheet,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawColumn {
    Position(i64),
    Header(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSheet {
    Index(i64),
    Name(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFileNamePatterns {
    number: Option<String>,
    date: Option<String>,
    order_ref: Option<String>,
}

impl TableFormat {
    /// Loads and checks one format file; every problem found is in the one message.
    pub fn load(path: &Path) -> Result<TableFormat, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let raw: RawFormat = toml::from_str(&text).map_err(|e| toml_problem(&text, &e))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        TableFormat::from_raw(raw, stem, path)
    }

    /// How strictly this supplier's mail must be authenticated: `authenticate` in the format
    /// file, `if-published` by default.
    pub fn authenticate(&self) -> Requirement {
        self.authenticate
    }

    /// Whether this supplier lists the sender address, or its `@domain`.
    pub fn matches_sender(&self, sender: &str) -> bool {
        let sender = sender.trim().trim_start_matches('<').trim_end_matches('>');
        let sender = sender.to_lowercase();
        let domain = sender.rsplit_once('@').map(|(_, d)| d);
        self.senders
            .iter()
            .any(|entry| match entry.strip_prefix('@') {
                Some(listed) => domain == Some(listed),
                None => *entry == sender,
            })
    }

    /// The sender entries as listed, lowercased: addresses and `@domain`s.
    pub fn sender_entries(&self) -> &[String] {
        &self.senders
    }

    /// Whether this supplier lists an address at exactly this domain (or the domain itself).
    pub fn lists_domain(&self, domain: &str) -> bool {
        let domain = domain.trim().to_lowercase();
        self.senders
            .iter()
            .any(|entry| entry.rsplit_once('@').is_some_and(|(_, d)| d == domain))
    }

    /// The file globs one by one, case-insensitive, as written.
    pub fn file_globs(&self) -> &[GlobMatcher] {
        &self.file_globs
    }

    /// Whether one of this supplier's file globs matches the name (case-insensitive; only the
    /// last path component counts).
    pub fn matches_file(&self, name: &str) -> bool {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        self.files.is_match(base)
    }

    /// Whether this format should read the attachment: a glob matches, or its name or declared
    /// type is one of this format's kind (CSV or spreadsheet).
    pub fn accepts(&self, attachment: &Attachment) -> bool {
        if self.matches_file(&attachment.name) {
            return true;
        }
        let name = attachment.name.to_lowercase();
        let content_type = attachment
            .content_type
            .as_deref()
            .unwrap_or("")
            .to_lowercase();
        let (extensions, by_type): (&[&str], bool) = match self.kind {
            Kind::Csv(_) => (
                &[".csv", ".txt", ".tsv"],
                content_type.starts_with("text/csv")
                    || content_type.starts_with("text/tab-separated-values"),
            ),
            Kind::Sheet(_) => (
                &[".xlsx", ".xlsm", ".xls", ".ods"],
                content_type.contains("spreadsheet") || content_type.contains("ms-excel"),
            ),
        };
        by_type || extensions.iter().any(|ext| name.ends_with(ext))
    }

    /// Turns the file as written into a checked format, collecting every problem.
    fn from_raw(raw: RawFormat, stem: &str, path: &Path) -> Result<TableFormat, String> {
        let mut problems = Vec::new();
        let name = raw.name.unwrap_or_else(|| stem.to_owned());
        let name_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if name.is_empty() || !name_ok {
            problems.push(format!(
                "name {name:?} may hold only ASCII letters, digits, '-' and '_'"
            ));
        }
        let kind = match raw.kind {
            RawKind::Csv => {
                if raw.sheet.is_some() {
                    problems.push("`sheet` is only for kind = \"sheet\"".to_owned());
                }
                Kind::Csv(CsvSettings {
                    encoding: noted(&mut problems, encoding(raw.encoding.as_deref()))
                        .unwrap_or(encoding_rs::UTF_8),
                    delimiter: noted(&mut problems, ascii("delimiter", raw.delimiter, b','))
                        .unwrap_or(b','),
                    quote: noted(&mut problems, ascii("quote", raw.quote, b'"')).unwrap_or(b'"'),
                })
            }
            RawKind::Sheet => {
                let csv_only = [
                    ("encoding", raw.encoding.is_some()),
                    ("delimiter", raw.delimiter.is_some()),
                    ("quote", raw.quote.is_some()),
                ];
                for (key, _) in csv_only.iter().filter(|(_, set)| *set) {
                    problems.push(format!("`{key}` is only for kind = \"csv\""));
                }
                Kind::Sheet(noted(&mut problems, sheet(raw.sheet)).unwrap_or(SheetChoice::Index(1)))
            }
        };
        let authenticate = match raw.authenticate.as_deref() {
            None => Requirement::default(),
            Some(text) => noted(&mut problems, Requirement::parse(text)).unwrap_or_default(),
        };
        let senders = raw
            .senders
            .iter()
            .filter_map(|s| noted(&mut problems, sender(s)))
            .collect();
        let (files, file_globs) = noted(&mut problems, globs(&raw.files))
            .unwrap_or_else(|| (GlobSet::empty(), Vec::new()));
        let decimal = noted(&mut problems, separator("decimal", raw.decimal)).flatten();
        let decimal = decimal.unwrap_or('.');
        let thousands = noted(&mut problems, separator("thousands", raw.thousands)).flatten();
        if thousands == Some(decimal) {
            problems.push(format!("decimal and thousands are both {decimal:?}"));
        }
        let header_row = raw.header_row.unwrap_or(1);
        let data_row = raw.data_row.unwrap_or(header_row.saturating_add(1));
        if data_row <= header_row {
            problems.push(format!(
                "data_row {data_row} must come after header_row {header_row}"
            ));
        }
        let date_formats = match raw.date_formats {
            Some(formats) if formats.is_empty() => {
                problems.push("date_formats is empty".to_owned());
                Vec::new()
            }
            Some(formats) => formats
                .iter()
                .filter_map(|f| noted(&mut problems, date_format(f)))
                .collect(),
            None => DEFAULT_DATE_FORMATS.map(str::to_owned).to_vec(),
        };
        let columns: Vec<(Field, Column)> = raw
            .columns
            .into_iter()
            .filter_map(|(field, raw)| {
                noted(&mut problems, column(field, raw, header_row)).map(|c| (field, c))
            })
            .collect();
        let from_file_name = FileNamePatterns {
            number: noted(&mut problems, pattern("number", raw.from_file_name.number)).flatten(),
            date: noted(&mut problems, pattern("date", raw.from_file_name.date)).flatten(),
            order_ref: noted(
                &mut problems,
                pattern("order_ref", raw.from_file_name.order_ref),
            )
            .flatten(),
        };
        let has_column = |field: Field| columns.iter().any(|(f, _)| *f == field);
        if !has_column(Field::Quantity) {
            problems.push("columns.quantity is required".to_owned());
        }
        let header_sources = [
            (Field::Number, from_file_name.number.is_some()),
            (Field::Date, from_file_name.date.is_some()),
        ];
        for (field, from_name) in header_sources {
            let key = field.key();
            match (has_column(field), from_name) {
                (false, false) => problems.push(format!(
                    "columns.{key} (or from_file_name.{key}) is required"
                )),
                (true, true) => problems.push(format!(
                    "set columns.{key} or from_file_name.{key}, not both"
                )),
                _ => {}
            }
        }
        let mut units = HashMap::new();
        for (from, to) in raw.units {
            let (from, to) = (from.trim().to_lowercase(), to.trim().to_owned());
            if from.is_empty() || to.is_empty() {
                problems.push(format!("units: {from:?} = {to:?} needs text on both sides"));
            } else if units.insert(from.clone(), to).is_some() {
                problems.push(format!("units: {from:?} is listed twice (case is ignored)"));
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(TableFormat {
            name,
            path: path.to_owned(),
            kind,
            senders,
            files,
            file_globs,
            decimal,
            thousands,
            header_row,
            data_row,
            date_formats,
            columns,
            from_file_name,
            units,
            authenticate,
        })
    }

    /// The date in `raw` by the first of the format's date formats that fits.
    fn parse_date(&self, raw: &str) -> Option<NaiveDate> {
        let raw = raw.trim();
        self.date_formats
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(raw, f).ok())
    }

    /// Why a text is not a date, naming the formats tried.
    fn date_why(&self) -> String {
        format!(
            "is not a date in the format {}",
            self.date_formats.join(" or ")
        )
    }
}

/// Keeps the value of a check, or notes its problem and gives `None`.
fn noted<T>(problems: &mut Vec<String>, checked: Result<T, String>) -> Option<T> {
    checked.map_err(|p| problems.push(p)).ok()
}

/// A TOML syntax or shape error on one line: "line 4: unknown field `qty`, expected ...".
fn toml_problem(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            format!("line {}: {message}", before.matches('\n').count() + 1)
        }
        None => message.to_owned(),
    }
}

fn encoding(label: Option<&str>) -> Result<&'static Encoding, String> {
    match label {
        None => Ok(encoding_rs::UTF_8),
        Some(label) => Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
            format!("encoding {label:?} is unknown (e.g. \"utf-8\", \"windows-1252\")")
        }),
    }
}

/// A one-character ASCII setting such as the delimiter.
fn ascii(key: &str, value: Option<String>, default: u8) -> Result<u8, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.as_bytes() {
        [byte] if byte.is_ascii() => Ok(*byte),
        _ => Err(format!("{key} {value:?} must be one ASCII character")),
    }
}

/// A decimal or thousands separator: one character that cannot be part of a number.
fn separator(key: &str, value: Option<String>) -> Result<Option<char>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !c.is_ascii_digit() && c != '-' && c != '+' => Ok(Some(c)),
        _ => Err(format!(
            "{key} {value:?} must be one character other than a digit or sign"
        )),
    }
}

fn sheet(raw: Option<RawSheet>) -> Result<SheetChoice, String> {
    match raw {
        None => Ok(SheetChoice::Index(1)),
        Some(RawSheet::Index(n)) => usize::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(SheetChoice::Index)
            .ok_or_else(|| format!("sheet {n} must be 1 or more (the first sheet is 1)")),
        Some(RawSheet::Name(name)) if name.trim().is_empty() => {
            Err("sheet must name a sheet or give its position".to_owned())
        }
        Some(RawSheet::Name(name)) => Ok(SheetChoice::Name(name)),
    }
}

/// A sender address or `@domain`, lowercased.
fn sender(raw: &str) -> Result<String, String> {
    let entry = raw.trim().to_lowercase();
    let valid_part =
        |s: &str| !s.is_empty() && !s.contains('@') && !s.contains(char::is_whitespace);
    let ok = match entry.split_once('@') {
        Some(("", domain)) => valid_part(domain),
        Some((local, domain)) => valid_part(local) && valid_part(domain),
        None => false,
    };
    if ok {
        Ok(entry)
    } else {
        Err(format!(
            "senders: {raw:?} is neither an address nor an @domain"
        ))
    }
}

fn globs(patterns: &[String]) -> Result<(GlobSet, Vec<GlobMatcher>), String> {
    let mut set = GlobSetBuilder::new();
    let mut one_by_one = Vec::new();
    let mut problems = Vec::new();
    for pattern in patterns {
        match GlobBuilder::new(pattern).case_insensitive(true).build() {
            Ok(glob) => {
                one_by_one.push(glob.compile_matcher());
                set.add(glob);
            }
            Err(e) => problems.push(format!("files: {pattern:?}: {}", e.kind())),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let set = set.build().map_err(|e| format!("files: {e}"))?;
    Ok((set, one_by_one))
}

/// A chrono format that can print and read back a date.
fn date_format(format: &str) -> Result<String, String> {
    let problem =
        || format!("date_formats: {format:?} is not a chrono date format (e.g. \"%d.%m.%Y\")");
    // A bad specifier would make the formatter fail, so look for one before formatting.
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(problem());
    }
    // Without a year no date can be read, and a year alone would leave it to chance whether
    // the text reads as a plausible one ("24.11." is never a delivery date).
    let has_year = StrftimeItems::new(format).any(|item| {
        matches!(
            item,
            Item::Numeric(
                Numeric::Year
                    | Numeric::YearMod100
                    | Numeric::IsoYear
                    | Numeric::IsoYearMod100
                    | Numeric::Timestamp,
                _
            )
        )
    });
    if !has_year {
        return Err(format!(
            "date_formats: {format:?} has no year: add %Y (four digits, 2026) or %y (two \
             digits, 26), e.g. \"%d.%m.%Y\""
        ));
    }
    // A date-time sample, so that formats with a time part ("%d.%m.%Y %H:%M") can print it.
    let sample = NaiveDate::from_ymd_opt(2026, 11, 20)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("2026-11-20 00:00 is a valid date-time");
    let mut printed = String::new();
    write!(printed, "{}", sample.format(format)).map_err(|_| problem())?;
    match NaiveDate::parse_from_str(&printed, format) {
        Ok(back) if back == sample.date() => Ok(format.to_owned()),
        _ => Err(format!(
            "date_formats: {format:?} does not hold a whole date (day, month and year)"
        )),
    }
}

/// A `[columns]` entry: a header text, a position (`3`), or a position as text (`"#3"`).
fn column(field: Field, raw: RawColumn, header_row: usize) -> Result<Column, String> {
    let key = field.key();
    let position = |n: i64| {
        usize::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| Column::Position(n - 1))
            .ok_or_else(|| format!("columns.{key}: position {n} must be 1 or more"))
    };
    match raw {
        RawColumn::Position(n) => position(n),
        RawColumn::Header(text) => match text.strip_prefix('#').map(str::parse::<i64>) {
            Some(Ok(n)) => position(n),
            _ if normalize_header(&text).is_empty() => {
                Err(format!("columns.{key}: the header text is empty"))
            }
            _ if header_row == 0 => Err(format!(
                "columns.{key}: {text:?} is a header text, but header_row = 0 (use a position)"
            )),
            _ => Ok(Column::Header(text)),
        },
    }
}

/// A `[from_file_name]` regex, which must have exactly one capture group.
fn pattern(key: &str, raw: Option<String>) -> Result<Option<Regex>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let regex = Regex::new(&raw).map_err(|e| {
        // The regex crate explains syntax errors over several lines; the last one says what.
        let text = e.to_string();
        let why = text
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("error: ");
        format!("from_file_name.{key}: {raw:?} is not a valid regex: {why}")
    })?;
    if regex.captures_len() != 2 {
        return Err(format!(
            "from_file_name.{key}: {raw:?} needs exactly one capture group (...)"
        ));
    }
    Ok(Some(regex))
}

/// How header texts are compared: trimmed (also of a BOM), inner spaces collapsed, lowercase.
fn normalize_header(text: &str) -> String {
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// One cell of a table row, typed as the file holds it: CSV gives only text, a spreadsheet also
/// numbers and dates. The spreadsheet child sends rows in this shape, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Cell {
    /// Nothing in the cell.
    Empty,
    /// Text as written.
    Text(String),
    /// A numeric cell in canonical decimal form (`.` separator, no exponent).
    Number(String),
    /// A date cell as `YYYY-MM-DD`.
    Date(String),
}

/// Where a reader hands each row: its 1-based row number in the file, and its cells.
pub(crate) type RowSink<'s> = dyn FnMut(usize, &[Cell]) -> Result<(), Reject> + 's;

impl Cell {
    /// The cell's content, trimmed; `None` when there is nothing but spaces.
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Empty => None,
            Cell::Text(s) | Cell::Number(s) | Cell::Date(s) => {
                Some(s.trim()).filter(|s| !s.is_empty())
            }
        }
    }
}

/// Parses a table attachment with this supplier's layout. Spreadsheets are read by a child
/// process, so this blocks for up to `limits.sheet_timeout`.
pub fn parse(
    attachment: &Attachment,
    format: &TableFormat,
    limits: &Limits,
) -> Result<Vec<Document>, Reject> {
    let file = attachment.name.as_str();
    let size = attachment.bytes.len() as u64;
    if size > limits.max_item_bytes {
        return Err(Reject::too_large(
            file,
            format!("{size} bytes; the limit is {} bytes", limits.max_item_bytes),
        ));
    }
    let mut notes = NoteBuilder::new(format, file, limits.max_rows)?;
    let mut on_row = |row: usize, cells: &[Cell]| notes.push(row, cells);
    match &format.kind {
        Kind::Csv(csv) => csv_table::read_rows(attachment, csv, &format.path, &mut on_row)?,
        Kind::Sheet(sheet) => xlsx_table::read_rows(attachment, sheet, limits, &mut on_row)?,
    }
    notes.finish()
}

/// The header values a file name gave.
#[derive(Default)]
struct FileNameValues {
    number: Option<String>,
    /// The date, with its text as the file name wrote it.
    date: Option<(NaiveDate, String)>,
    order_ref: Option<String>,
}

/// A delivery note being filled, row by row.
struct Note {
    number: String,
    date: Option<NaiveDate>,
    /// The date's text, when it was read with `date_formats` (not a typed date cell).
    date_text: Option<String>,
    /// The row that opened the note, named in rejections about the whole note.
    first_row: String,
    order_refs: Vec<String>,
    seen_refs: HashSet<String>,
    lines: Vec<DeliveryLine>,
}

/// Collects rows into delivery notes, grouped by note number in order of first appearance.
struct NoteBuilder<'a> {
    format: &'a TableFormat,
    file: &'a str,
    max_rows: usize,
    rows_seen: usize,
    /// Column index per `Field`, known once the header row was read.
    columns: Option<Vec<Option<usize>>>,
    from_name: FileNameValues,
    notes: Vec<Note>,
    by_number: HashMap<String, usize>,
}

/// One data row, with its columns resolved.
struct Row<'r> {
    cells: &'r [Cell],
    columns: &'r [Option<usize>],
    /// "row 7": the 1-based row in the file, as rejections name it.
    label: String,
}

impl Row<'_> {
    /// The non-blank cell of a field, if the field has a column and the row reaches it.
    fn cell(&self, field: Field) -> Option<&Cell> {
        let index = (*self.columns.get(field as usize)?)?;
        self.cells.get(index).filter(|c| c.text().is_some())
    }

    fn text(&self, field: Field) -> Option<String> {
        self.cell(field).and_then(Cell::text).map(str::to_owned)
    }
}

impl<'a> NoteBuilder<'a> {
    fn new(format: &'a TableFormat, file: &'a str, max_rows: usize) -> Result<Self, Reject> {
        // Without a header row only positions are allowed (checked on load), so the columns
        // are known before the first row.
        let columns = (format.header_row == 0).then(|| {
            let mut indexes = vec![None; FIELD_COUNT];
            for (field, column) in &format.columns {
                if let Column::Position(i) = column {
                    indexes[*field as usize] = Some(*i);
                }
            }
            indexes
        });
        Ok(NoteBuilder {
            format,
            file,
            max_rows,
            rows_seen: 0,
            columns,
            from_name: file_name_values(format, file)?,
            notes: Vec::new(),
            by_number: HashMap::new(),
        })
    }

    /// Takes row `row_no` (1-based, as the file counts it).
    fn push(&mut self, row_no: usize, cells: &[Cell]) -> Result<(), Reject> {
        self.rows_seen += 1;
        if self.rows_seen > self.max_rows {
            return Err(Reject::too_large(
                self.file,
                format!("more than {} rows", self.max_rows),
            ));
        }
        if row_no == self.format.header_row {
            self.columns = Some(self.resolve(cells, row_no)?);
            return Ok(());
        }
        if row_no < self.format.data_row || cells.iter().all(|c| c.text().is_none()) {
            return Ok(()); // title block above the table, or an empty row
        }
        // The columns are lent to the row while `add` needs `&mut self`, then put back.
        let Some(columns) = self.columns.take() else {
            return Err(self.no_header());
        };
        let row = Row {
            cells,
            columns: &columns,
            label: format!("row {row_no}"),
        };
        let added = self.add(&row);
        self.columns = Some(columns);
        added
    }

    /// Finds each configured header text in the header row.
    fn resolve(&self, cells: &[Cell], row_no: usize) -> Result<Vec<Option<usize>>, Reject> {
        let headers: Vec<String> = cells
            .iter()
            .map(|c| normalize_header(c.text().unwrap_or("")))
            .collect();
        let mut indexes = vec![None; FIELD_COUNT];
        let mut missing = Vec::new();
        for (field, column) in &self.format.columns {
            let index = match column {
                Column::Position(i) => Some(*i),
                Column::Header(text) => {
                    let wanted = normalize_header(text);
                    let found = headers.iter().position(|h| *h == wanted);
                    if found.is_none() {
                        missing.push(format!("{text:?} ({})", field.key()));
                    }
                    found
                }
            };
            indexes[*field as usize] = index;
        }
        if missing.is_empty() {
            return Ok(indexes);
        }
        // Show what the row does hold, so a renamed column is spotted at once.
        let found: Vec<String> = cells
            .iter()
            .filter_map(Cell::text)
            .take(20)
            .map(|t| format!("{:?}", t.chars().take(40).collect::<String>()))
            .collect();
        let found = if found.is_empty() {
            "it is empty".to_owned()
        } else {
            format!("it has {}", found.join(", "))
        };
        Err(Reject::Unsupported {
            file: self.file.to_owned(),
            why: format!(
                "no column {} in the header row {row_no} of format {}; {found}",
                missing.join(", "),
                self.format.name
            ),
        })
    }

    fn no_header(&self) -> Reject {
        Reject::Unsupported {
            file: self.file.to_owned(),
            why: format!(
                "the header row {} of format {} is missing or empty",
                self.format.header_row, self.format.name
            ),
        }
    }

    /// Adds one data row as a line of its delivery note.
    fn add(&mut self, row: &Row) -> Result<(), Reject> {
        let format = self.format;
        let missing = |field: &str| Reject::Missing {
            file: self.file.to_owned(),
            line: Some(row.label.clone()),
            field: field.to_owned(),
        };
        let number = row
            .text(Field::Number)
            .or_else(|| self.from_name.number.clone())
            .ok_or_else(|| missing("number"))?;
        let date = self.date(row, Field::Date)?;
        let quantity = self
            .decimal(row, Field::Quantity)?
            .ok_or_else(|| missing("quantity"))?;
        let unit_price = self.decimal(row, Field::UnitPrice)?;
        let line_total = self.decimal(row, Field::LineTotal)?;

        let index = match self.by_number.get(&number) {
            Some(index) => *index,
            None => {
                let refs: Vec<String> = self.from_name.order_ref.iter().cloned().collect();
                self.notes.push(Note {
                    number: number.clone(),
                    date: self.from_name.date.as_ref().map(|(date, _)| *date),
                    date_text: self.from_name.date.as_ref().map(|(_, text)| text.clone()),
                    first_row: row.label.clone(),
                    seen_refs: refs.iter().cloned().collect(),
                    order_refs: refs,
                    lines: Vec::new(),
                });
                self.by_number.insert(number.clone(), self.notes.len() - 1);
                self.notes.len() - 1
            }
        };
        let note = &mut self.notes[index];
        if let Some((date, text)) = date {
            match note.date {
                None => {
                    note.date = Some(date);
                    note.date_text = text;
                }
                // Rows of one note with two dates mean the grouping column is wrong.
                Some(earlier) if earlier != date => {
                    return Err(Reject::bad_value(
                        self.file,
                        Some(&row.label),
                        "date",
                        &row.text(Field::Date).unwrap_or_default(),
                        format!(
                            "differs from {earlier} on an earlier row of delivery note {number}"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let order_ref = row.text(Field::OrderRef);
        if let Some(order_ref) = &order_ref
            && note.seen_refs.insert(order_ref.clone())
        {
            note.order_refs.push(order_ref.clone());
        }
        let unit = row.text(Field::Unit).map(|unit| {
            format
                .units
                .get(&unit.to_lowercase())
                .cloned()
                .unwrap_or(unit)
        });
        note.lines.push(DeliveryLine {
            line_no: row
                .text(Field::LineNo)
                .unwrap_or_else(|| (note.lines.len() + 1).to_string()),
            supplier_part_id: row.text(Field::SupplierPartId),
            buyer_part_id: row.text(Field::BuyerPartId),
            gtin: row.text(Field::Gtin),
            manufacturer_part_id: row.text(Field::ManufacturerPartId),
            description: row.text(Field::Description),
            quantity: Some(quantity),
            unit,
            order_ref,
            order_line: row.text(Field::OrderLine),
            unit_price,
            line_total,
            serial_number: row.text(Field::SerialNumber),
            comment: row.text(Field::Comment),
        });
        Ok(())
    }

    /// A number field: numeric cells as they are, text with the format's separators.
    fn decimal(&self, row: &Row, field: Field) -> Result<Option<Decimal>, Reject> {
        let Some(cell) = row.cell(field) else {
            return Ok(None);
        };
        let parsed = match cell {
            Cell::Number(n) => Decimal::parse(n),
            Cell::Text(t) => parse_decimal(t, self.format.decimal, self.format.thousands),
            Cell::Date(_) | Cell::Empty => None,
        };
        parsed.map(Some).ok_or_else(|| {
            let raw = cell.text().unwrap_or("");
            Reject::bad_value(
                self.file,
                Some(&row.label),
                field.key(),
                raw,
                "is not a decimal number",
            )
        })
    }

    /// A date field: date cells as they are, text and numbers by the format's date formats.
    /// The text comes with the date when the formats read it, for a rejection that names it.
    fn date(&self, row: &Row, field: Field) -> Result<Option<(NaiveDate, Option<String>)>, Reject> {
        let Some(cell) = row.cell(field) else {
            return Ok(None);
        };
        let raw = cell.text().unwrap_or("");
        let parsed = match cell {
            Cell::Date(iso) => NaiveDate::parse_from_str(iso, "%Y-%m-%d")
                .ok()
                .map(|d| (d, None)),
            _ => self
                .format
                .parse_date(raw)
                .map(|d| (d, Some(raw.to_owned()))),
        };
        parsed.map(Some).ok_or_else(|| {
            Reject::bad_value(
                self.file,
                Some(&row.label),
                field.key(),
                raw,
                self.format.date_why(),
            )
        })
    }

    /// The notes, once every row is in.
    fn finish(self) -> Result<Vec<Document>, Reject> {
        if self.columns.is_none() {
            return Err(self.no_header());
        }
        if self.notes.is_empty() {
            return Err(Reject::malformed(
                self.file,
                format!(
                    "has no data rows (they start at row {})",
                    self.format.data_row
                ),
            ));
        }
        let NoteBuilder {
            format,
            file,
            notes,
            ..
        } = self;
        notes
            .into_iter()
            .map(|note| {
                let Some(date) = note.date else {
                    return Err(Reject::Missing {
                        file: file.to_owned(),
                        line: Some(note.first_row),
                        field: "date".to_owned(),
                    });
                };
                Ok(Document::DeliveryNote(DeliveryNote {
                    format: format!("table:{}", format.name),
                    supplier: Some(format.name.clone()),
                    number: note.number,
                    date: Some(date),
                    order_refs: note.order_refs,
                    lines: note.lines,
                    file: file.to_owned(),
                    date_text: note.date_text,
                }))
            })
            .collect()
    }
}

/// The header values the format takes from the file name; a name that does not match is a
/// rejection, since the value would otherwise be missing from every note.
fn file_name_values(format: &TableFormat, file: &str) -> Result<FileNameValues, Reject> {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let capture = |key: &str, regex: &Option<Regex>| -> Result<Option<String>, Reject> {
        let Some(regex) = regex else {
            return Ok(None);
        };
        regex
            .captures(base)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str().trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| {
                let why = format!("does not match from_file_name.{key} = {:?}", regex.as_str());
                Reject::bad_value(file, None, key, base, why)
            })
    };
    let patterns = &format.from_file_name;
    let number = capture("number", &patterns.number)?;
    let date = match capture("date", &patterns.date)? {
        None => None,
        Some(raw) => match format.parse_date(&raw) {
            Some(date) => Some((date, raw)),
            None => {
                return Err(Reject::bad_value(
                    file,
                    None,
                    "date",
                    &raw,
                    format.date_why(),
                ));
            }
        },
    };
    let order_ref = capture("order_ref", &patterns.order_ref)?;
    Ok(FileNameValues {
        number,
        date,
        order_ref,
    })
}

/// A number written with the format's separators. With a thousands separator, its groups must
/// be whole (`1.234,5`), so that `1.5` is not silently read as fifteen.
fn parse_decimal(raw: &str, decimal: char, thousands: Option<char>) -> Option<Decimal> {
    let raw = raw.trim();
    if let Some(sep) = thousands {
        let (int, frac) = raw.split_once(decimal).unwrap_or((raw, ""));
        if frac.contains(sep) {
            return None;
        }
        if int.contains(sep) {
            let mut groups = int.trim_start_matches(['-', '+']).split(sep);
            let first_ok = groups.next().is_some_and(|g| (1..=3).contains(&g.len()));
            if !first_ok || !groups.all(|g| g.len() == 3) {
                return None;
            }
        }
    }
    Decimal::parse_localized(raw, decimal, thousands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(toml_text: &str) -> Result<TableFormat, String> {
        let raw: RawFormat = toml::from_str(toml_text).map_err(|e| toml_problem(toml_text, &e))?;
        TableFormat::from_raw(raw, "test", Path::new("formats/test.toml"))
    }

    const MINIMAL: &str = "kind = \"csv\"\ndelimiter = \";\"\n[columns]\nnumber = \"LS\"\n\
                           date = \"Datum\"\nquantity = \"Menge\"\n";

    fn text_row(cells: &[&str]) -> Vec<Cell> {
        cells
            .iter()
            .map(|c| {
                if c.is_empty() {
                    Cell::Empty
                } else {
                    Cell::Text((*c).to_owned())
                }
            })
            .collect()
    }

    fn notes(format: &TableFormat, rows: &[Vec<Cell>]) -> Result<Vec<Document>, Reject> {
        let mut builder = NoteBuilder::new(format, "ls.csv", 100)?;
        for (i, row) in rows.iter().enumerate() {
            builder.push(i + 1, row)?;
        }
        builder.finish()
    }

    fn note(document: &Document) -> &DeliveryNote {
        match document {
            Document::DeliveryNote(n) => n,
            Document::Order(_) => panic!("a table gives only delivery notes"),
        }
    }

    #[test]
    fn thousands_groups_must_be_whole() {
        let parse = |raw| parse_decimal(raw, ',', Some('.')).map(|d| d.to_string());
        assert_eq!(parse("1.234,5").as_deref(), Some("1234.5"));
        assert_eq!(parse("-12.345.678,90").as_deref(), Some("-12345678.9"));
        assert_eq!(parse("12,5").as_deref(), Some("12.5"));
        assert_eq!(parse("1.5"), None);
        assert_eq!(parse("1234.5"), None);
        assert_eq!(parse("1,5.0"), None);
    }

    #[test]
    fn header_texts_match_trimmed_and_case_insensitive() {
        let f = format(MINIMAL).unwrap();
        let rows = [
            text_row(&["\u{feff}ls ", " DATUM", "menge"]),
            text_row(&["LS-1", "20.11.2026", "3"]),
        ];
        let docs = notes(&f, &rows).unwrap();
        assert_eq!(note(&docs[0]).number, "LS-1");
        assert_eq!(note(&docs[0]).lines[0].quantity.unwrap().to_string(), "3");
    }

    #[test]
    fn positions_work_without_a_header_row() {
        let f = format(
            "kind = \"csv\"\nheader_row = 0\n[columns]\nnumber = 1\ndate = \"#2\"\nquantity = 3\n",
        )
        .unwrap();
        let docs = notes(&f, &[text_row(&["LS-9", "2026-11-20", "1,5"])]);
        assert!(docs.is_err(), "a comma is no decimal point by default");
        let docs = notes(&f, &[text_row(&["LS-9", "2026-11-20", "1.5"])]).unwrap();
        assert_eq!(note(&docs[0]).lines[0].quantity.unwrap().to_string(), "1.5");
        assert_eq!(note(&docs[0]).date, NaiveDate::from_ymd_opt(2026, 11, 20));
    }

    #[test]
    fn numeric_and_date_cells_are_taken_as_they_are() {
        let f = format(&MINIMAL.replace("kind = \"csv\"\ndelimiter = \";\"", "kind = \"sheet\""))
            .unwrap();
        let rows = [
            text_row(&["LS", "Datum", "Menge"]),
            vec![
                Cell::Number("4711".into()),
                Cell::Date("2026-11-20".into()),
                Cell::Number("1234.5".into()),
            ],
        ];
        let docs = notes(&f, &rows).unwrap();
        let n = note(&docs[0]);
        assert_eq!(n.number, "4711");
        assert_eq!(n.date, NaiveDate::from_ymd_opt(2026, 11, 20));
        assert_eq!(n.lines[0].quantity.unwrap().to_string(), "1234.5");
    }

    #[test]
    fn a_note_with_two_dates_is_rejected() {
        let f = format(MINIMAL).unwrap();
        let rows = [
            text_row(&["LS", "Datum", "Menge"]),
            text_row(&["LS-1", "20.11.2026", "1"]),
            text_row(&["LS-1", "21.11.2026", "1"]),
        ];
        let reject = notes(&f, &rows).unwrap_err().to_string();
        assert!(
            reject.contains("row 3") && reject.contains("differs from 2026-11-20"),
            "{reject}"
        );
    }

    #[test]
    fn file_name_gives_number_date_and_order() {
        let f = format(
            "kind = \"csv\"\ndate_formats = [\"%Y%m%d\"]\n[columns]\nquantity = \"Menge\"\n\
             [from_file_name]\nnumber = 'LS_(\\d+)_'\ndate = '_(\\d{8})_'\n\
             order_ref = '_(PO-\\d+)\\.csv$'\n",
        )
        .unwrap();
        let mut builder = NoteBuilder::new(&f, "LS_4711_20261120_PO-77.csv", 10).unwrap();
        builder.push(1, &text_row(&["Menge"])).unwrap();
        builder.push(2, &text_row(&["2"])).unwrap();
        let docs = builder.finish().unwrap();
        let n = note(&docs[0]);
        assert_eq!(n.number, "4711");
        assert_eq!(n.date, NaiveDate::from_ymd_opt(2026, 11, 20));
        assert_eq!(n.order_refs, ["PO-77"]);

        let reject = NoteBuilder::new(&f, "lieferung.csv", 10)
            .err()
            .unwrap()
            .to_string();
        assert!(reject.contains("from_file_name.number"), "{reject}");
    }

    #[test]
    fn every_load_problem_is_in_the_one_message() {
        let problem = format(
            "kind = \"sheet\"\ndelimiter = \";\"\ndecimal = \",\"\nthousands = \",\"\n\
             date_formats = [\"%H:%M\"]\nsenders = [\"acme.de\"]\n[columns]\nnumber = \"#0\"\n",
        )
        .unwrap_err();
        for part in [
            "`delimiter` is only for kind = \"csv\"",
            "decimal and thousands are both ','",
            "\"%H:%M\" has no year",
            "\"acme.de\" is neither",
            "position 0 must be 1 or more",
            "columns.quantity is required",
            "columns.date (or from_file_name.date) is required",
        ] {
            assert!(problem.contains(part), "{part:?} not in {problem:?}");
        }
    }

    #[test]
    fn authenticate_is_if_published_unless_set() {
        assert_eq!(
            format(MINIMAL).unwrap().authenticate(),
            Requirement::IfPublished
        );
        for (written, expected) in [
            ("required", Requirement::Required),
            ("if-published", Requirement::IfPublished),
            ("off", Requirement::Off),
        ] {
            let f = format(&format!("authenticate = \"{written}\"\n{MINIMAL}")).unwrap();
            assert_eq!(f.authenticate(), expected);
        }
        let problem = format(&format!("authenticate = \"yes\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(
            problem,
            "authenticate \"yes\" is unknown: use \"required\", \"if-published\" or \"off\""
        );
        let problem = format(&format!("authenticate = true\n{MINIMAL}")).unwrap_err();
        assert!(problem.starts_with("line 1: invalid type"), "{problem}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let problem = format(&format!("{MINIMAL}menge = \"x\"\n")).unwrap_err();
        assert!(
            problem.contains("line 7") && problem.contains("unknown variant `menge`"),
            "{problem}"
        );
        let problem = format("kind = \"csv\"\ndelimter = \";\"\n").unwrap_err();
        assert!(
            problem.contains("line 2") && problem.contains("unknown field `delimter`"),
            "{problem}"
        );
    }

    #[test]
    fn a_date_format_without_a_year_is_a_load_error() {
        for without in ["%d.%m.", "%d.%m", "%m/%d", "%j"] {
            let problem = date_format(without).unwrap_err();
            assert_eq!(
                problem,
                format!(
                    "date_formats: {without:?} has no year: add %Y (four digits, 2026) or %y \
                     (two digits, 26), e.g. \"%d.%m.%Y\""
                )
            );
        }
        // Half a year is no year either: the century alone does not round-trip.
        assert!(date_format("%d.%m.%C").is_err());
        for with in ["%d.%m.%y", "%y%m%d", "%G-W%V-%u", "%Y-%j", "%d.%m.%Y %H:%M"] {
            assert!(date_format(with).is_ok(), "{with}");
        }
    }

    #[test]
    fn unit_price_and_line_total_are_canonical_decimals() {
        let f = format(&format!(
            "{}decimal = \",\"\nthousands = \".\"\n{}unit_price = \"Preis\"\n\
             line_total = \"Summe\"\n",
            "kind = \"csv\"\ndelimiter = \";\"\n",
            "[columns]\nnumber = \"LS\"\ndate = \"Datum\"\nquantity = \"Menge\"\n"
        ))
        .unwrap();
        let header = text_row(&["LS", "Datum", "Menge", "Preis", "Summe"]);
        let rows = [
            header.clone(),
            text_row(&["LS-1", "20.11.2026", "2", "1.234,50", "2.469,00"]),
            text_row(&["LS-1", "20.11.2026", "1", "", ""]),
        ];
        let docs = notes(&f, &rows).unwrap();
        let lines = &note(&docs[0]).lines;
        assert_eq!(lines[0].unit_price.unwrap().to_string(), "1234.5");
        assert_eq!(lines[0].line_total.unwrap().to_string(), "2469");
        assert_eq!((lines[1].unit_price, lines[1].line_total), (None, None));
        let json = serde_json::to_value(&docs[0]).unwrap();
        assert_eq!(json["lines"][0]["unit_price"], "1234.5");
        assert!(
            json["lines"][1].get("unit_price").is_none(),
            "absent is left out"
        );

        let bad = [header, text_row(&["LS-1", "20.11.2026", "2", "zwölf", ""])];
        assert_eq!(
            notes(&f, &bad).unwrap_err().to_string(),
            "ls.csv: row 2: unit_price \"zwölf\" is not a decimal number"
        );
    }

    #[test]
    fn the_date_text_is_kept_for_the_plausibility_check() {
        let f = format(MINIMAL).unwrap();
        let rows = [
            text_row(&["LS", "Datum", "Menge"]),
            text_row(&["LS-1", "24.11.26", "1"]),
        ];
        let docs = notes(&f, &rows).unwrap();
        assert_eq!(note(&docs[0]).date, NaiveDate::from_ymd_opt(26, 11, 24));
        assert_eq!(note(&docs[0]).date_text.as_deref(), Some("24.11.26"));
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let reject = crate::model::validate(&docs, today)
            .unwrap_err()
            .to_string();
        assert!(
            reject
                .starts_with("ls.csv: date \"24.11.26\" reads as 0026-11-24, before the year 2000"),
            "{reject}"
        );
    }

    #[test]
    fn yyyymmdd_and_datetime_formats_read_dates() {
        let f = TableFormat {
            date_formats: vec!["%Y%m%d".into(), "%d.%m.%Y %H:%M".into()],
            ..format(MINIMAL).unwrap()
        };
        assert_eq!(
            f.parse_date("20261120"),
            NaiveDate::from_ymd_opt(2026, 11, 20)
        );
        assert_eq!(
            f.parse_date("20.11.2026 14:30"),
            NaiveDate::from_ymd_opt(2026, 11, 20)
        );
        assert_eq!(f.parse_date("2026-11-20"), None);
        assert!(date_format("%d.%m.%Y %H:%M").is_ok());
    }
}
