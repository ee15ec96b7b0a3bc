//! A stored document's lines, put back into its JSON. Since schema 14 a document is stored once:
//! its lines are the `lines` rows and `documents.json` holds the rest, with `"lines": []` in
//! their place (`lines_apart = 1`). Reading it, the rows become the model's line types again and
//! are serialized as `serde` serializes them when the document is parsed, so that `export`, the
//! hand-off and the admin page show the same bytes as before. Documents stored before keep their
//! whole JSON (`lines_apart = 0`), shown as stored.

use super::Error;
use super::db::{Connection, Row};
use serde_json::{Map, Value};

use crate::model::{Decimal, DeliveryLine, OrderLine};

/// Puts the rows of document `id` (of `kind`) into `json` as its `lines`, where the stored JSON
/// left them out (`lines_apart`); the key keeps its place.
pub(super) fn complete(
    conn: &Connection,
    id: i64,
    kind: &str,
    lines_apart: bool,
    json: &mut Map<String, Value>,
) -> Result<(), Error> {
    if !lines_apart {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT line_no, supplier_part_id, buyer_part_id, gtin, manufacturer_part_id, description,
                quantity, unit, order_ref, order_line, unit_price, line_total, serial_number,
                comment, supplier_part_aux_id
         FROM lines WHERE document_id = ?1 ORDER BY position",
    )?;
    let order = kind == "order";
    let lines = stmt
        .query_map([id], |r| {
            Ok(match order {
                true => to_value(&order_line(r)?),
                false => to_value(&delivery_line(r)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    json.insert("lines".into(), Value::Array(lines));
    Ok(())
}

fn to_value<T: serde::Serialize>(line: &T) -> Value {
    serde_json::to_value(line).expect("lines always serialize")
}

/// A decimal as stored: the canonical text it was written as.
fn decimal(r: &Row<'_>, index: usize) -> rusqlite::Result<Option<Decimal>> {
    Ok(r.get::<_, Option<String>>(index)?
        .as_deref()
        .and_then(Decimal::parse))
}

fn delivery_line(r: &Row<'_>) -> rusqlite::Result<DeliveryLine> {
    Ok(DeliveryLine {
        line_no: r.get(0)?,
        supplier_part_id: r.get(1)?,
        buyer_part_id: r.get(2)?,
        gtin: r.get(3)?,
        manufacturer_part_id: r.get(4)?,
        description: r.get(5)?,
        quantity: decimal(r, 6)?,
        unit: r.get(7)?,
        order_ref: r.get(8)?,
        order_line: r.get(9)?,
        unit_price: decimal(r, 10)?,
        line_total: decimal(r, 11)?,
        serial_number: r.get(12)?,
        comment: r.get(13)?,
    })
}

fn order_line(r: &Row<'_>) -> rusqlite::Result<OrderLine> {
    Ok(OrderLine {
        line_no: r.get(0)?,
        supplier_part_id: r.get(1)?,
        supplier_part_aux_id: r.get(14)?,
        description: r.get(5)?,
        quantity: decimal(r, 6)?,
        unit: r.get(7)?,
        unit_price: decimal(r, 10)?,
    })
}
