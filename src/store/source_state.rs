//! The health of each source as `status` shows it: when its last pass succeeded, its last
//! error and since when it fails (for the one "source down" notice), and a standing note about
//! its server (an IMAP server that cannot expunge selectively).

use rusqlite::{OptionalExtension, params};

use super::{Error, Store, now};

impl Store {
    /// Records a pass of a source: `Ok` clears its error, `Err` keeps the text.
    pub fn record_pass(&self, source: &str, result: Result<(), &str>) -> Result<(), Error> {
        let conn = self.lock();
        let now = now();
        match result {
            Ok(()) => conn.execute(
                "INSERT INTO source_state (source, last_ok) VALUES (?1, ?2)
                 ON CONFLICT(source) DO UPDATE SET last_ok = excluded.last_ok, failing_since = NULL",
                params![source, now],
            )?,
            // `failing_since` keeps the start of an outage, for the one "source down" notice.
            Err(e) => conn.execute(
                "INSERT INTO source_state (source, last_error, last_error_at, failing_since) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(source) DO UPDATE SET last_error = excluded.last_error,
                   last_error_at = excluded.last_error_at,
                   failing_since = COALESCE(source_state.failing_since, excluded.failing_since)",
                params![source, e, now],
            )?,
        };
        Ok(())
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
