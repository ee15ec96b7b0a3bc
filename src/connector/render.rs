//! What a connector sends, as bytes: the sent JSON, or for a CSV file import a header row and
//! one row per document line. Pure.
//!
//! CSV (RFC 4180, CRLF, UTF-8 without a byte order mark): the columns are the document's
//! fields (nested ones dotted: `origin.file`, `ship_to.city`; lists joined with `, `), then the
//! line's fields, in a fixed order per kind of document (below), each under its `fields`
//! name; fields beyond those (defaults, newer ones) follow in the order they appear. A line
//! column named like a document column is written `line.<name>`. With `decimal_comma`, the
//! decimals (`total`, and `quantity`, `unit_price`, `line_total` of the lines) are written
//! `1,5`. A cell that a spreadsheet would take for a formula (`= + - @`, tab or CR first, or
//! their full-width forms) gets a leading `'` (OWASP CSV injection, RELIABILITY.md b2); a
//! plain number such as `-2` or `-1,5` is a number and stays as it is.

use serde_json::{Map, Value};

use super::mapping::Mapping;

/// The document columns of a delivery note, in order.
const NOTE_COLUMNS: &[&str] = &[
    "type",
    "id",
    "kind",
    "format",
    "supplier",
    "number",
    "date",
    "order_refs",
    "supersedes",
    "origin.source",
    "origin.message_id",
    "origin.file",
    "origin.sha256",
    "origin.archived",
];
/// The line columns of a delivery note.
const NOTE_LINE_COLUMNS: &[&str] = &[
    "line_no",
    "supplier_part_id",
    "buyer_part_id",
    "gtin",
    "manufacturer_part_id",
    "description",
    "quantity",
    "unit",
    "order_ref",
    "order_line",
    "line_total",
    "serial_number",
    "comment",
];
/// The document columns of an order.
const ORDER_COLUMNS: &[&str] = &[
    "type",
    "id",
    "kind",
    "format",
    "supplier",
    "payload_id",
    "order_id",
    "operation",
    "date",
    "currency",
    "total",
    "buyer_cookie",
    "ship_to.name",
    "ship_to.street",
    "ship_to.postal_code",
    "ship_to.city",
    "ship_to.country",
    "document_ref",
    "supersedes",
    "origin.source",
    "origin.message_id",
    "origin.file",
    "origin.sha256",
    "origin.archived",
];
/// The line columns of an order.
const ORDER_LINE_COLUMNS: &[&str] = &[
    "line_no",
    "supplier_part_id",
    "supplier_part_aux_id",
    "description",
    "quantity",
    "unit",
    "unit_price",
];
/// The decimal fields of a document, and of its lines.
const DECIMALS: &[&str] = &["total"];
const LINE_DECIMALS: &[&str] = &["quantity", "unit_price", "line_total"];

/// The sent JSON as a file: pretty, with a final newline.
pub fn json(sent: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(sent).expect("JSON values always serialize");
    bytes.push(b'\n');
    bytes
}

/// A document (the export shape with `type` and `supersedes`, before the mapping) as CSV.
pub fn csv(document: &Value, mapping: &Mapping, delimiter: u8, decimal_comma: bool) -> Vec<u8> {
    let mut document = document.clone();
    if decimal_comma {
        with_decimal_comma(&mut document);
    }
    let is_order = document.get("kind").and_then(Value::as_str) == Some("order");
    let sent = mapping.apply(document);
    let empty = Map::new();
    let doc = sent.as_object().unwrap_or(&empty);
    let mut cells = Vec::new();
    for (key, value) in doc.iter().filter(|(k, _)| *k != "lines") {
        flatten(key, value, &mut cells);
    }
    let lines: Vec<Vec<(String, String)>> = doc
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|line| {
            let mut out = Vec::new();
            for (key, value) in line.as_object().unwrap_or(&empty) {
                flatten(key, value, &mut out);
            }
            out
        })
        .collect();
    let (base, line_base) = if is_order {
        (ORDER_COLUMNS, ORDER_LINE_COLUMNS)
    } else {
        (NOTE_COLUMNS, NOTE_LINE_COLUMNS)
    };
    let columns = ordered(
        base.iter().filter_map(|c| mapping.column_of(c)),
        cells.iter().map(|(k, _)| k.clone()),
    );
    let line_columns = ordered(
        line_base.iter().filter_map(|c| mapping.line_column_of(c)),
        lines.iter().flatten().map(|(k, _)| k.clone()),
    );
    let header = columns.iter().cloned().chain(line_columns.iter().map(|c| {
        if columns.contains(c) {
            format!("line.{c}")
        } else {
            c.clone()
        }
    }));
    let mut writer = ::csv::WriterBuilder::new()
        .delimiter(delimiter)
        .terminator(::csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let record = |writer: &mut ::csv::Writer<Vec<u8>>, row: Vec<String>| {
        writer
            .write_record(row.iter().map(|c| guarded(c)))
            .expect("writing to memory does not fail");
    };
    record(&mut writer, header.collect());
    let value_of = |cells: &[(String, String)], column: &str| {
        cells
            .iter()
            .find(|(k, _)| k == column)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let doc_row: Vec<String> = columns.iter().map(|c| value_of(&cells, c)).collect();
    if lines.is_empty() {
        let mut row = doc_row.clone();
        row.resize(columns.len() + line_columns.len(), String::new());
        record(&mut writer, row);
    }
    for line in &lines {
        let mut row = doc_row.clone();
        row.extend(line_columns.iter().map(|c| value_of(line, c)));
        record(&mut writer, row);
    }
    writer
        .into_inner()
        .expect("writing to memory does not fail")
}

/// The base columns first, then every other one in the order seen; each once.
fn ordered(base: impl Iterator<Item = String>, seen: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for column in base.chain(seen) {
        if !out.contains(&column) {
            out.push(column);
        }
    }
    out
}

/// Nested objects dotted, lists of plain values joined, `null` left out (an empty cell).
fn flatten(key: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{key}.{k}"), v, out);
            }
        }
        Value::Array(list) if list.iter().all(|v| !v.is_object() && !v.is_array()) => {
            let parts: Vec<String> = list.iter().filter_map(plain).collect();
            out.push((key.to_owned(), parts.join(", ")));
        }
        Value::Array(_) => out.push((key.to_owned(), value.to_string())),
        other => out.extend(plain(other).map(|v| (key.to_owned(), v))),
    }
}

fn plain(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn with_decimal_comma(document: &mut Value) {
    let comma = |v: &mut Value| {
        if let Value::String(s) = v {
            *s = s.replace('.', ",");
        }
    };
    for key in DECIMALS {
        if let Some(v) = document.get_mut(*key) {
            comma(v);
        }
    }
    if let Some(Value::Array(lines)) = document.get_mut("lines") {
        for line in lines {
            for key in LINE_DECIMALS {
                if let Some(v) = line.get_mut(*key) {
                    comma(v);
                }
            }
        }
    }
}

/// A cell as written: with a leading `'` where a spreadsheet would run it as a formula.
pub fn guarded(cell: &str) -> String {
    let Some(first) = cell.chars().next() else {
        return String::new();
    };
    let risky = matches!(
        first,
        '=' | '+' | '-' | '@' | '\t' | '\r' | '＝' | '＋' | '－' | '＠'
    );
    if risky && !is_plain_number(cell) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// `-2`, `-1.5`, `-1,5`: a negative number, which no spreadsheet runs.
fn is_plain_number(cell: &str) -> bool {
    let Some(rest) = cell.strip_prefix('-') else {
        return false;
    };
    let (int, frac) = match rest.split_once(['.', ',']) {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn note() -> Value {
        json!({
            "type": "document.stored", "id": 3, "kind": "delivery_note", "format": "opentrans-2.1",
            "supplier": "acme", "number": "LS-1", "date": "2026-11-20", "order_refs": ["PO-1", "PO-2"],
            "lines": [
                {"line_no": "1", "supplier_part_id": "=HYPERLINK(\"http://x\")", "quantity": "2.5", "unit": "C62"},
                {"line_no": "2", "supplier_part_id": "A-2", "quantity": "-2", "description": "-2+3"}
            ],
            "supersedes": null,
            "origin": {"source": "drop", "file": "LS.xml", "sha256": "ab"}
        })
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn csv_for_german_erps_has_a_header_one_row_per_line_semicolons_and_decimal_commas() {
        let out = text(csv(&note(), &Mapping::default(), b';', true));
        let rows: Vec<&str> = out.split_terminator("\r\n").collect();
        assert_eq!(rows.len(), 3, "{out}");
        assert_eq!(
            rows[0],
            "type;id;kind;format;supplier;number;date;order_refs;supersedes;origin.source;origin.message_id;origin.file;origin.sha256;origin.archived;\
             line_no;supplier_part_id;buyer_part_id;gtin;manufacturer_part_id;description;quantity;unit;order_ref;order_line;line_total;serial_number;comment"
        );
        assert!(
            rows[1].starts_with("document.stored;3;delivery_note;opentrans-2.1;acme;LS-1;2026-11-20;PO-1, PO-2;;drop;;LS.xml;ab;;1;"),
            "{}",
            rows[1]
        );
        assert!(rows[1].contains(";2,5;C62;"), "{}", rows[1]);
        assert!(
            rows[2].contains(";-2;"),
            "a negative number stays a number: {}",
            rows[2]
        );
        assert!(rows[2].contains(";'-2+3;"), "{}", rows[2]);
        assert!(
            rows[1].contains(";\"'=HYPERLINK(\"\"http://x\"\")\";"),
            "{}",
            rows[1]
        );
    }

    #[test]
    fn csv_columns_carry_the_field_names_and_defaults() {
        let fields: BTreeMap<String, String> = [
            ("Lieferschein", "number"),
            ("lines[].Menge", "lines[].quantity"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let defaults: BTreeMap<String, toml::Value> =
            toml::from_str("Lager = \"HAUPT\"\n").unwrap();
        let mapping = Mapping::new(&fields, &defaults).unwrap();
        let out = text(csv(&note(), &mapping, b',', false));
        let header = out.lines().next().unwrap();
        assert!(header.contains(",Lieferschein,date,"), "{header}");
        assert!(header.contains(",description,Menge,unit,"), "{header}");
        assert!(header.ends_with(",comment"), "{header}");
        assert!(header.contains("origin.archived,Lager,line_no"), "{header}");
        assert!(
            out.contains(",2.5,"),
            "a point without decimal_comma: {out}"
        );
    }

    #[test]
    fn formula_cells_get_a_leading_quote() {
        for (cell, written) in [
            ("=1+1", "'=1+1"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("@SUM(1+1)", "'@SUM(1+1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("＝1", "'＝1"),
            ("-2+3", "'-2+3"),
            ("-2", "-2"),
            ("-1,5", "-1,5"),
            ("A-1", "A-1"),
            ("", ""),
        ] {
            assert_eq!(guarded(cell), written, "{cell:?}");
        }
    }
}
