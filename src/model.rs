//! Step 4 of the flow: the documents eingang stores, and their validation.
//!
//! Owns the normalized shapes (`DeliveryNote`, `Order`, their lines), the canonical decimal
//! form of CONTRACT.md, and the check that a parsed document is complete. It never reads
//! bytes (that is `format`) and never touches the store.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Months, NaiveDate};
use serde::{Serialize, Serializer};

use crate::error::Reject;

/// A money or quantity value, printed in canonical form: `.` separator, no exponent, no
/// thousands separator, no trailing zeros after the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(rust_decimal::Decimal);

impl Decimal {
    /// Parses the canonical input form: an optional sign, digits, optionally `.` and digits.
    /// Anything else (exponents, separators, spaces inside) is `None`.
    pub fn parse(raw: &str) -> Option<Decimal> {
        let s = raw.trim();
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (int, frac) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        let well_formed = !(int.is_empty() && frac.is_empty())
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
            && !(digits.ends_with('.') && frac.is_empty() && int.is_empty());
        if !well_formed {
            return None;
        }
        let normalized = s.strip_prefix('+').unwrap_or(s);
        let normalized = normalized.trim_end_matches('.');
        rust_decimal::Decimal::from_str(normalized)
            .ok()
            .map(|d| Decimal(d.normalize()))
    }

    /// Parses a number written with the given decimal and optional thousands separator, as
    /// supplier tables do (`1.234,5` with `,` and `.`).
    pub fn parse_localized(raw: &str, decimal: char, thousands: Option<char>) -> Option<Decimal> {
        let mut canonical = String::with_capacity(raw.len());
        for c in raw.trim().chars() {
            if Some(c) == thousands {
                continue;
            }
            if c == decimal {
                canonical.push('.');
            } else if c == '.' && decimal != '.' {
                return None; // a stray point where a comma is the separator
            } else {
                canonical.push(c);
            }
        }
        Decimal::parse(&canonical)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = if self.0.is_zero() {
            rust_decimal::Decimal::ZERO
        } else {
            self.0.normalize()
        };
        write!(f, "{d}")
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One document parsed out of an item: a delivery note or an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // a handful per item; boxing would only add noise
pub enum Document {
    /// A delivery note (Lieferschein), from any delivery-note format.
    DeliveryNote(DeliveryNote),
    /// A cXML order (OrderRequest or PunchOutOrderMessage).
    Order(Order),
}

/// A delivery note as CONTRACT.md prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryNote {
    /// `cxml-ship-notice`, `opentrans-2.1`, `ubl-despatch-advice` or `table:<name>`.
    pub format: String,
    /// The supplier's format name, when the item was routed to one.
    pub supplier: Option<String>,
    /// The delivery note number.
    pub number: String,
    /// The delivery (or issue) date.
    #[serde(serialize_with = "date_opt")]
    pub date: Option<NaiveDate>,
    /// The order numbers this note delivers against.
    pub order_refs: Vec<String>,
    /// Every delivered line.
    pub lines: Vec<DeliveryLine>,
    /// The attachment this note came from (for messages and errors, not printed).
    #[serde(skip)]
    pub file: String,
    /// The date as a supplier table wrote it, when it was read with the format's
    /// `date_formats` (`24.11.26`): named when the date is implausible (not printed).
    #[serde(skip)]
    pub date_text: Option<String>,
}

/// One line of a delivery note.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DeliveryLine {
    /// The line number as the document gives it, else the position (1-based).
    pub line_no: String,
    /// The supplier's article number.
    pub supplier_part_id: Option<String>,
    /// The buyer's article number.
    pub buyer_part_id: Option<String>,
    /// The EAN/GTIN.
    pub gtin: Option<String>,
    /// The manufacturer's article number, where the format carries one (supplier tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer_part_id: Option<String>,
    /// The article description.
    pub description: Option<String>,
    /// The delivered quantity.
    pub quantity: Option<Decimal>,
    /// The unit (UN/ECE Rec 20 code where the format has one).
    pub unit: Option<String>,
    /// The order this line delivers against.
    pub order_ref: Option<String>,
    /// The line of that order.
    pub order_line: Option<String>,
    /// Net price of one unit, where the format carries one (supplier tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Decimal>,
    /// Net price of the whole line, where the format carries one (supplier tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_total: Option<Decimal>,
    /// Serial number, where the format carries one (supplier tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Free-text comment, where the format carries one (supplier tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A cXML order as CONTRACT.md prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// `cxml-order-request` or `cxml-punchout-order-message`.
    pub format: String,
    /// The supplier's format name, when the item was routed to one.
    pub supplier: Option<String>,
    /// The cXML envelope's payloadID.
    pub payload_id: Option<String>,
    /// OrderRequestHeader@orderID (absent for PunchOutOrderMessage).
    pub order_id: Option<String>,
    /// `new`, `update` or `delete` (OrderRequestHeader@type).
    pub operation: Operation,
    /// The order date.
    #[serde(serialize_with = "date_opt")]
    pub date: Option<NaiveDate>,
    /// The currency of the total.
    pub currency: Option<String>,
    /// The order total.
    pub total: Option<Decimal>,
    /// The PunchOut session's BuyerCookie.
    pub buyer_cookie: Option<String>,
    /// The ship-to address.
    pub ship_to: Option<Address>,
    /// The payloadID of the order this one updates or deletes (DocumentReference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_ref: Option<String>,
    /// Every ordered line.
    pub lines: Vec<OrderLine>,
    /// The attachment this order came from (not printed).
    #[serde(skip)]
    pub file: String,
}

/// What an order does to a stored order with the same orderID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A new order.
    New,
    /// Replaces the stored order.
    Update,
    /// Cancels the stored order.
    Delete,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Address {
    /// The addressee.
    pub name: Option<String>,
    /// Street and house number (several Street elements joined by ", ").
    pub street: Option<String>,
    /// The postal code.
    pub postal_code: Option<String>,
    /// The city.
    pub city: Option<String>,
    /// The ISO country code.
    pub country: Option<String>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct OrderLine {
    /// ItemOut@lineNumber or ItemIn@lineNumber, else the position (1-based).
    pub line_no: String,
    /// ItemID/SupplierPartID.
    pub supplier_part_id: Option<String>,
    /// ItemID/SupplierPartAuxiliaryID.
    pub supplier_part_aux_id: Option<String>,
    /// ItemDetail/Description.
    pub description: Option<String>,
    /// The ordered quantity.
    pub quantity: Option<Decimal>,
    /// ItemDetail/UnitOfMeasure.
    pub unit: Option<String>,
    /// ItemDetail/UnitPrice/Money.
    pub unit_price: Option<Decimal>,
}

fn date_opt<S: Serializer>(date: &Option<NaiveDate>, serializer: S) -> Result<S::Ok, S::Error> {
    match date {
        Some(d) => serializer.collect_str(&d.format("%Y-%m-%d")),
        None => serializer.serialize_none(),
    }
}

impl Document {
    /// The attachment this document was parsed from.
    pub fn file(&self) -> &str {
        match self {
            Document::DeliveryNote(n) => &n.file,
            Document::Order(o) => &o.file,
        }
    }

    /// `delivery_note` or `order`, as printed in `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::DeliveryNote(_) => "delivery_note",
            Document::Order(_) => "order",
        }
    }

    /// The document's number: the note number, the orderID, or for a PunchOut message its
    /// payloadID.
    pub fn number(&self) -> Option<&str> {
        match self {
            Document::DeliveryNote(n) => Some(n.number.as_str()).filter(|s| !s.is_empty()),
            Document::Order(o) => o.order_id.as_deref().or(o.payload_id.as_deref()),
        }
    }

    /// The supplier the item was routed to, if any.
    pub fn supplier(&self) -> Option<&str> {
        match self {
            Document::DeliveryNote(n) => n.supplier.as_deref(),
            Document::Order(o) => o.supplier.as_deref(),
        }
    }

    /// The format name, as printed in `format`.
    pub fn format(&self) -> &str {
        match self {
            Document::DeliveryNote(n) => &n.format,
            Document::Order(o) => &o.format,
        }
    }

    /// Sets the supplier on a document parsed by a standard format, when routing found one.
    pub fn set_supplier(&mut self, supplier: Option<&str>) {
        let slot = match self {
            Document::DeliveryNote(n) => &mut n.supplier,
            Document::Order(o) => &mut o.supplier,
        };
        if slot.is_none() {
            *slot = supplier.map(str::to_owned);
        }
    }
}

/// The earliest date eingang believes a document carries. No delivery note in use is older,
/// and a two-digit year read with `%Y` (`24.11.26` becomes the year 26) falls before it.
pub const EARLIEST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(date) => date,
    None => panic!("2000-01-01 is a date"),
};

/// The latest date eingang believes a document carries when it is validated on `today`: one
/// year later. A note is dated when the goods leave, an order at most a season ahead.
pub fn latest_date(today: NaiveDate) -> NaiveDate {
    today
        .checked_add_months(Months::new(12))
        .unwrap_or(NaiveDate::MAX)
}

/// Checks that every document is complete and plausible: number, a date between
/// `EARLIEST_DATE` and a year after `today`, at least one line, and a quantity on every line.
/// The first problem is the rejection; it names the file, the line and the field. `today`
/// comes from the caller, so that this stays free of clocks.
pub fn validate(documents: &[Document], today: NaiveDate) -> Result<(), Reject> {
    for document in documents {
        let file = document.file();
        let missing = |line: Option<&str>, field: &str| Reject::Missing {
            file: file.to_owned(),
            line: line.map(str::to_owned),
            field: field.to_owned(),
        };
        match document {
            Document::DeliveryNote(note) => {
                if note.number.trim().is_empty() {
                    return Err(missing(None, "number"));
                }
                let Some(date) = note.date else {
                    return Err(missing(None, "date"));
                };
                plausible_date(document, date, note.date_text.as_deref(), today)?;
                if note.lines.is_empty() {
                    return Err(missing(None, "lines"));
                }
                for line in &note.lines {
                    if line.quantity.is_none() {
                        return Err(missing(Some(&line.line_no), "quantity"));
                    }
                }
            }
            Document::Order(order) => {
                if document.number().is_none() {
                    return Err(missing(None, "order_id"));
                }
                let Some(date) = order.date else {
                    return Err(missing(None, "date"));
                };
                plausible_date(document, date, None, today)?;
                if order.lines.is_empty() {
                    return Err(missing(None, "lines"));
                }
                for line in &order.lines {
                    if line.quantity.is_none() {
                        return Err(missing(Some(&line.line_no), "quantity"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Rejects a date outside the plausible window, naming the value as written and what to check:
/// the supplier format's `date_formats` when eingang read the text with them, else the sender.
fn plausible_date(
    document: &Document,
    date: NaiveDate,
    text: Option<&str>,
    today: NaiveDate,
) -> Result<(), Reject> {
    let latest = latest_date(today);
    let when = if date < EARLIEST_DATE {
        "before the year 2000".to_owned()
    } else if date > latest {
        format!("more than a year after today ({today})")
    } else {
        return Ok(());
    };
    let iso = date.format("%Y-%m-%d").to_string();
    let (value, reading) = match text.map(str::trim).filter(|t| *t != iso) {
        Some(text) => (text.to_owned(), format!("reads as {iso}, {when}")),
        None => (iso, format!("is {when}")),
    };
    let supplier = document.supplier().unwrap_or("the supplier");
    let hint = match (text, document.format().starts_with("table:")) {
        (Some(_), true) if date.year() < 100 => format!(
            "check date_formats in the format file of {supplier}: a two-digit year needs %y, not %Y"
        ),
        (Some(_), true) => format!("check date_formats in the format file of {supplier}"),
        (None, true) => format!("the file holds this date as a date: ask {supplier} to correct it"),
        (_, false) => {
            "the document itself carries this date: ask its sender to correct it".to_owned()
        }
    };
    Err(Reject::bad_value(
        document.file(),
        None,
        "date",
        &value,
        format!("{reading}: {hint}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_print_in_canonical_form() {
        let cases = [
            ("1.50", "1.5"),
            ("12", "12"),
            ("12.000", "12"),
            ("0.25", "0.25"),
            (".5", "0.5"),
            ("+3", "3"),
            ("-0.0", "0"),
            ("187.60", "187.6"),
        ];
        for (raw, want) in cases {
            assert_eq!(Decimal::parse(raw).unwrap().to_string(), want, "{raw}");
        }
    }

    #[test]
    fn decimals_refuse_exponents_and_separators() {
        for raw in ["1e5", "1,5", "1 000", "", ".", "abc", "1.2.3", "--1"] {
            assert!(Decimal::parse(raw).is_none(), "{raw:?} parsed");
        }
    }

    #[test]
    fn localized_decimals_take_comma_and_thousands() {
        let d = Decimal::parse_localized("1.234,5", ',', Some('.')).unwrap();
        assert_eq!(d.to_string(), "1234.5");
        let d = Decimal::parse_localized("12,99", ',', None).unwrap();
        assert_eq!(d.to_string(), "12.99");
        assert!(Decimal::parse_localized("1.5", ',', None).is_none());
    }

    fn note(date: NaiveDate, date_text: Option<&str>, format: &str) -> Document {
        Document::DeliveryNote(DeliveryNote {
            format: format.into(),
            supplier: format.strip_prefix("table:").map(str::to_owned),
            number: "LS-1".into(),
            date: Some(date),
            order_refs: vec![],
            lines: vec![DeliveryLine {
                line_no: "1".into(),
                quantity: Decimal::parse("1"),
                ..Default::default()
            }],
            file: "ls.csv".into(),
            date_text: date_text.map(str::to_owned),
        })
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn validation_names_the_line_and_field() {
        let Document::DeliveryNote(mut note) = note(day(2026, 11, 20), None, "table:acme") else {
            unreachable!()
        };
        note.lines[0].line_no = "2".into();
        note.lines[0].quantity = None;
        let err = validate(&[Document::DeliveryNote(note)], day(2026, 12, 1))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "ls.csv: line 2: quantity is missing");
    }

    #[test]
    fn a_two_digit_year_read_with_four_digits_is_rejected_naming_the_text() {
        let today = day(2026, 12, 1);
        let read = note(day(26, 11, 24), Some("24.11.26"), "table:acme");
        assert_eq!(
            validate(&[read], today).unwrap_err().to_string(),
            "ls.csv: date \"24.11.26\" reads as 0026-11-24, before the year 2000: check \
             date_formats in the format file of acme: a two-digit year needs %y, not %Y"
        );
    }

    #[test]
    fn dates_outside_the_window_are_rejected_for_every_format() {
        let today = day(2026, 12, 1);
        let reject = |date, text, format| {
            validate(&[note(date, text, format)], today)
                .err()
                .map(|r| r.to_string())
        };
        // The window's edges are inside it.
        assert_eq!(reject(day(2000, 1, 1), None, "opentrans-2.1"), None);
        assert_eq!(reject(day(2027, 12, 1), None, "opentrans-2.1"), None);
        assert_eq!(
            reject(day(1999, 12, 31), None, "opentrans-2.1").unwrap(),
            "ls.csv: date \"1999-12-31\" is before the year 2000: the document itself \
             carries this date: ask its sender to correct it"
        );
        assert_eq!(
            reject(day(2027, 12, 2), Some("02.12.2027"), "table:acme").unwrap(),
            "ls.csv: date \"02.12.2027\" reads as 2027-12-02, more than a year after today \
             (2026-12-01): check date_formats in the format file of acme"
        );
        // A typed spreadsheet date cell: nothing to set in the format, the file is wrong.
        assert_eq!(
            reject(day(1900, 1, 1), None, "table:optikhaus").unwrap(),
            "ls.csv: date \"1900-01-01\" is before the year 2000: the file holds this date \
             as a date: ask optikhaus to correct it"
        );
        // The text equal to the ISO form is not repeated.
        assert_eq!(
            reject(day(1999, 1, 1), Some("1999-01-01"), "table:acme").unwrap(),
            "ls.csv: date \"1999-01-01\" is before the year 2000: check date_formats in the \
             format file of acme"
        );
    }

    #[test]
    fn order_dates_are_checked_too() {
        let order = Document::Order(Order {
            format: "cxml-order-request".into(),
            supplier: None,
            payload_id: Some("p@x".into()),
            order_id: Some("PO-1".into()),
            operation: Operation::New,
            date: Some(day(3026, 1, 1)),
            currency: None,
            total: None,
            buyer_cookie: None,
            ship_to: None,
            document_ref: None,
            lines: vec![OrderLine {
                line_no: "1".into(),
                quantity: Decimal::parse("1"),
                ..Default::default()
            }],
            file: "po.xml".into(),
        });
        let err = validate(&[order], day(2026, 12, 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("po.xml: date \"3026-01-01\" is more than a year after today"),
            "{err}"
        );
    }

    #[test]
    fn the_latest_date_is_a_year_ahead_even_from_a_leap_day() {
        assert_eq!(latest_date(day(2028, 2, 29)), day(2029, 2, 28));
        assert_eq!(latest_date(NaiveDate::MAX), NaiveDate::MAX);
    }
}
