//! What the IMAP source records beyond the shared ledger: where a moved message lies now (the
//! folder, and its UIDVALIDITY and UID there in `archived_ref`), and a standing note about the
//! server that `status` shows (a server that cannot expunge selectively).

use std::collections::HashMap;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Error, Store, now};

/// One message that left the inbox, confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The ledger row.
    pub item_id: i64,
    /// The folder it lies in now, as configured (`Lieferscheine/Archiv`).
    pub folder: String,
    /// Its UIDVALIDITY and UID there (`v:u`), when the server said (COPYUID).
    pub archived_ref: Option<String>,
}

impl Store {
    /// Records where each message lies now; after this the item is done.
    pub fn mark_moved(&self, moved: &[Moved]) -> Result<(), Error> {
        if moved.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE items SET disposed_at = ?2, archived = ?3, archived_ref = ?4 WHERE id = ?1",
            )?;
            let now = now();
            for m in moved {
                update.execute(params![m.item_id, now, m.folder, m.archived_ref])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The Message-ID and size of each item, for finding a moved message again.
    pub fn envelopes(&self, ids: &[i64]) -> Result<HashMap<i64, (Option<String>, u64)>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT message_id, size FROM items WHERE id = ?1")?;
        let mut out = HashMap::with_capacity(ids.len());
        for &id in ids {
            if let Some(row) = stmt
                .query_row([id], |r| {
                    Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?
            {
                out.insert(id, (row.0, u64::try_from(row.1).unwrap_or(0)));
            }
        }
        Ok(out)
    }

    /// Sets (or with `None` clears) the standing note `status` shows for a source.
    pub fn set_source_note(&self, source: &str, note: Option<&str>) -> Result<(), Error> {
        self.lock().execute(
            "INSERT INTO source_state (source, note) VALUES (?1, ?2)
             ON CONFLICT(source) DO UPDATE SET note = excluded.note",
            params![source, note],
        )?;
        Ok(())
    }

    /// The standing note of a source, if any.
    pub fn source_note(&self, source: &str) -> Result<Option<String>, Error> {
        Ok(self
            .lock()
            .query_row(
                "SELECT note FROM source_state WHERE source = ?1",
                [source],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_set_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(store.source_note("mail").unwrap(), None);
        store.set_source_note("mail", Some("no UIDPLUS")).unwrap();
        store.record_pass("mail", Ok(())).unwrap();
        assert_eq!(
            store.source_note("mail").unwrap().as_deref(),
            Some("no UIDPLUS")
        );
        store.set_source_note("mail", None).unwrap();
        assert_eq!(store.source_note("mail").unwrap(), None);
    }
}
