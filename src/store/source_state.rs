//! The health of each source as `status` shows it: when its last pass succeeded, its last
//! error and since when it fails (for the one "source down" notice), and a standing note about
//! its server (an IMAP server that cannot expunge selectively), and what else lies in its
//! inbox that eingang leaves alone. `up_since` is the first success after the last failure,
//! for the web page's "up since".

use super::db::{OptionalExtension, TransactionBehavior, params};

use super::{Error, Store, now};

/// An entry of an inbox that is not an item eingang takes (a link, a FIFO, a folder): left
/// alone and told once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stray {
    /// Its name, printable (escaped).
    pub name: String,
    /// What it is and what to do about it.
    pub why: String,
}

impl Store {
    /// Records a pass of a source: `Ok` clears its error, `Err` keeps the text.
    pub fn record_pass(&self, source: &str, result: Result<(), &str>) -> Result<(), Error> {
        self.gate(source)?;
        let conn = self.lock();
        let now = now();
        match result {
            Ok(()) => conn.execute(
                "INSERT INTO source_state (source, last_ok, up_since) VALUES (?1, ?2, ?2)
                 ON CONFLICT(source) DO UPDATE SET last_ok = excluded.last_ok,
                   up_since = CASE WHEN source_state.failing_since IS NULL
                                    AND source_state.up_since IS NOT NULL
                               THEN source_state.up_since ELSE excluded.last_ok END,
                   failing_since = NULL",
                params![source, now],
            )?,
            // `failing_since` keeps the start of an outage, for the one "source down" notice.
            Err(e) => conn.execute(
                "INSERT INTO source_state (source, last_error, last_error_at, failing_since) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(source) DO UPDATE SET last_error = excluded.last_error,
                   last_error_at = excluded.last_error_at, up_since = NULL,
                   failing_since = COALESCE(source_state.failing_since, excluded.failing_since)",
                params![source, e, now],
            )?,
        };
        Ok(())
    }

    /// Sets (or with `None` clears) the standing note `status` shows for a source.
    pub fn set_source_note(&self, source: &str, note: Option<&str>) -> Result<(), Error> {
        self.gate(source)?;
        self.lock().execute(
            "INSERT INTO source_state (source, note) VALUES (?1, ?2)
             ON CONFLICT(source) DO UPDATE SET note = excluded.note",
            params![source, note],
        )?;
        Ok(())
    }

    /// Records what a listing saw besides items: an entry seen for the first time gets a row
    /// and, in the same transaction, one notice; an entry no longer there is forgotten (it is
    /// told again should it come back). Returns the new ones.
    pub fn record_strays(&self, source: &str, strays: &[Stray]) -> Result<Vec<Stray>, Error> {
        self.gate(source)?;
        let conn = self.lock();
        let known: Vec<String> = {
            let mut stmt = conn.prepare_cached("SELECT name FROM strays WHERE source = ?1")?;
            let rows = stmt.query_map([source], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let new: Vec<Stray> = strays
            .iter()
            .filter(|s| !known.contains(&s.name))
            .cloned()
            .collect();
        let gone: Vec<&String> = known
            .iter()
            .filter(|k| !strays.iter().any(|s| &s.name == *k))
            .collect();
        if new.is_empty() && gone.is_empty() {
            return Ok(new);
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        for stray in &new {
            tx.execute(
                "INSERT INTO strays (source, name, why, seen_at) VALUES (?1, ?2, ?3, ?4)",
                params![source, stray.name, stray.why, at],
            )?;
            let detail = serde_json::to_string(stray).expect("a stray serializes");
            tx.execute(
                "INSERT INTO outbox (source, kind, created_at, detail) VALUES (?1, 'stray', ?2, ?3)",
                params![source, at, detail],
            )?;
        }
        for name in gone {
            tx.execute(
                "DELETE FROM strays WHERE source = ?1 AND name = ?2",
                params![source, name],
            )?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// What lies in a source's inbox that eingang leaves alone, oldest first.
    pub fn strays(&self, source: &str) -> Result<Vec<Stray>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, why FROM strays WHERE source = ?1 ORDER BY seen_at, name",
        )?;
        let rows = stmt.query_map([source], |r| {
            Ok(Stray {
                name: r.get(0)?,
                why: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every place the ledger records for the items of a source.
    pub fn places(&self, source: &str) -> Result<Vec<super::Place>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT archived, archived_ref FROM items
             WHERE source = ?1 AND disposed_at IS NOT NULL AND archived IS NOT NULL",
        )?;
        let rows = stmt.query_map([source], |r| {
            Ok(super::Place {
                at: r.get(0)?,
                reference: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records archived items the ledger does not know; the ones not recorded before get, in
    /// the same transaction, one notice listing them. Returns those.
    pub fn record_unrecorded(
        &self,
        source: &str,
        places: &[super::Place],
    ) -> Result<Vec<super::Place>, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.check_fence(&tx, source)?;
        let at = now();
        let mut new = Vec::new();
        for place in places {
            let added = tx.execute(
                "INSERT INTO unrecorded (source, at, reference, seen_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![
                    source,
                    place.at,
                    place.reference.as_deref().unwrap_or(""),
                    at
                ],
            )?;
            if added == 1 {
                new.push(place.clone());
            }
        }
        if !new.is_empty() {
            let names: Vec<String> = new.iter().map(super::Place::shown).collect();
            let detail = serde_json::to_string(&names).expect("names serialize");
            tx.execute(
                "INSERT INTO outbox (source, kind, created_at, detail) VALUES (?1, 'unrecorded', ?2, ?3)",
                params![source, at, detail],
            )?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// The archived items of a source the ledger did not know, not recovered yet.
    pub fn unrecorded(&self, source: &str) -> Result<Vec<super::Place>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT at, reference FROM unrecorded WHERE source = ?1 ORDER BY seen_at, at, reference",
        )?;
        let rows = stmt.query_map([source], |r| {
            let reference: String = r.get(1)?;
            Ok(super::Place {
                at: r.get(0)?,
                reference: (!reference.is_empty()).then_some(reference),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets an unrecorded item once it was put back into its inbox.
    pub fn forget_unrecorded(&self, source: &str, place: &super::Place) -> Result<(), Error> {
        self.gate(source)?;
        self.lock().execute(
            "DELETE FROM unrecorded WHERE source = ?1 AND at = ?2 AND reference = ?3",
            params![source, place.at, place.reference.as_deref().unwrap_or("")],
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
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
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

    #[test]
    fn a_stray_is_told_once_while_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        let link = Stray {
            name: "link.csv".into(),
            why: "a symbolic link".into(),
        };
        let one = std::slice::from_ref(&link);
        assert_eq!(store.record_strays("drop", one).unwrap(), one);
        assert!(store.record_strays("drop", one).unwrap().is_empty());
        assert_eq!(store.strays("drop").unwrap(), one);
        assert!(store.record_strays("drop", &[]).unwrap().is_empty());
        assert!(store.strays("drop").unwrap().is_empty());
        assert_eq!(store.record_strays("drop", one).unwrap(), one);
        let notices: i64 = store
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'stray'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(notices, 2);
    }
}
