//! What the cXML receiver reads back from the ledger: the outcome of a partner's payloadID, so
//! that a repeated request gets the first answer again (the cXML User's Guide: a payloadID
//! "should not change for retry attempts"). The ledger is the record of that answer: nothing
//! is written here, and nothing beside the commit has to be kept in step with it.

use rusqlite::{OptionalExtension, params};

use super::{Error, Store};

/// A decided item as the receiver answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The ledger row.
    pub item_id: i64,
    /// The rejection's label (`Reject::label`); `None` for an import.
    pub label: Option<String>,
    /// The rejection's reason; `None` for an import.
    pub reason: Option<String>,
}

impl Store {
    /// The first decided arrival at `location` of `source` (a partner's payloadID), if any.
    pub fn answered(&self, source: &str, location: &str) -> Result<Option<Answered>, Error> {
        Ok(self
            .lock()
            .prepare_cached(
                "SELECT id, outcome, label, reason FROM items
                 WHERE source = ?1 AND location = ?2 AND outcome IS NOT NULL ORDER BY id LIMIT 1",
            )?
            .query_row(params![source, location], answered)
            .optional()?)
    }

    /// The decided items with these ids, in the order given (an undecided one is left out).
    pub fn answers(&self, ids: &[i64]) -> Result<Vec<Answered>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, outcome, label, reason FROM items WHERE id = ?1 AND outcome IS NOT NULL",
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(found) = stmt.query_row([id], answered).optional()? {
                out.push(found);
            }
        }
        Ok(out)
    }
}

fn answered(r: &rusqlite::Row<'_>) -> rusqlite::Result<Answered> {
    let imported = r.get::<_, String>(1)? == "imported";
    Ok(Answered {
        item_id: r.get(0)?,
        label: if imported { None } else { r.get(2)? },
        reason: if imported {
            None
        } else {
            Some(r.get::<_, Option<String>>(3)?.unwrap_or_default())
        },
    })
}

/// Why the item `item_id` may not change the stored order `existing`: one of the two came
/// through the cXML receiver and the other from another partner or another channel. `None`
/// when neither came through the receiver, or both from the same partner. (Senders of other
/// channels are compared by the sender-authenticity rules, not here.)
pub(super) fn other_partner(
    conn: &rusqlite::Connection,
    existing: i64,
    item_id: i64,
) -> rusqlite::Result<Option<String>> {
    let (first, this): (String, String) = conn
        .prepare_cached(
            "SELECT (SELECT i.source FROM documents d JOIN items i ON i.id = d.item_id
                     WHERE d.id = ?1),
                    (SELECT source FROM items WHERE id = ?2)",
        )?
        .query_row(params![existing, item_id], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?;
    let partner = |source: &str| {
        source
            .strip_prefix(crate::cxml_http::settings::SOURCE_PREFIX)
            .map(str::to_owned)
    };
    if first == this || (partner(&first).is_none() && partner(&this).is_none()) {
        return Ok(None);
    }
    let who = |source: &str| match partner(source) {
        Some(name) => format!("from the cXML partner {name}"),
        None => format!("through the source {source}"),
    };
    Ok(Some(format!(
        "the order (document {existing}) came {}; this one came {}",
        who(&first),
        who(&this)
    )))
}
