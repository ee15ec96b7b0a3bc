//! What the cXML receiver reads back from the ledger: the outcome of a partner's payloadID, so
//! that a repeated request gets the first answer again (the cXML User's Guide: a payloadID
//! "should not change for retry attempts"). The ledger is the record of that answer: nothing
//! is written here, and nothing beside the commit has to be kept in step with it.

use super::db::{OptionalExtension, params};

use super::db::Row;
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
        self.lock()
            .prepare_cached(
                "SELECT id, outcome, label, reason FROM items
                 WHERE source = ?1 AND location = ?2 AND outcome IS NOT NULL ORDER BY id LIMIT 1",
            )?
            .query_row(params![source, location], answered)
            .optional()
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

fn answered(r: &Row<'_>) -> rusqlite::Result<Answered> {
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
