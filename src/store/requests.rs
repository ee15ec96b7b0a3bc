//! Requests a command hands to the running daemon instead of working the inbox itself (one
//! owner per store): `sync` for "a pass now", `reprocess` for putting a failed item back. The
//! command writes a row and waits; the daemon takes it, does it, and writes the result.

use super::db::{OptionalExtension, params};

use super::{Error, Store, now};

/// A request waiting for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The row id.
    pub id: i64,
    /// `sync` or `reprocess`.
    pub kind: String,
    /// The source a sync is for.
    pub source: Option<String>,
    /// The item a reprocess is for.
    pub item_id: Option<i64>,
}

impl Store {
    /// Writes a request for the daemon; returns its id.
    pub fn add_request(
        &self,
        kind: &str,
        source: Option<&str>,
        item_id: Option<i64>,
    ) -> Result<i64, Error> {
        let conn = self.lock();
        conn.insert(
            "INSERT INTO requests (kind, source, item_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![kind, source, item_id, now()],
        )
    }

    /// The requests no daemon has taken yet, oldest first; each is marked taken.
    pub fn take_requests(&self) -> Result<Vec<Request>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "UPDATE requests SET taken_at = ?1 WHERE taken_at IS NULL
             RETURNING id, kind, source, item_id",
        )?;
        let rows = stmt.query_map([now()], |r| {
            Ok(Request {
                id: r.get(0)?,
                kind: r.get(1)?,
                source: r.get(2)?,
                item_id: r.get(3)?,
            })
        })?;
        let mut requests: Vec<Request> = rows.collect::<Result<_, _>>()?;
        requests.sort_by_key(|r| r.id);
        Ok(requests)
    }

    /// Writes a request's result (JSON); the waiting command reads it.
    pub fn finish_request(&self, id: i64, result: &str) -> Result<(), Error> {
        self.lock().execute(
            "UPDATE requests SET done_at = ?2, result = ?3 WHERE id = ?1",
            params![id, now(), result],
        )?;
        Ok(())
    }

    /// A request's result, once it is done.
    pub fn request_result(&self, id: i64) -> Result<Option<String>, Error> {
        Ok(self
            .lock()
            .query_row(
                "SELECT result FROM requests WHERE id = ?1 AND done_at IS NOT NULL",
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Ends every request a daemon took and never finished (it stopped meanwhile) with this
    /// result, so that no command waits for it for ever.
    pub fn abandon_requests(&self, result: &str) -> Result<(), Error> {
        self.lock().execute(
            "UPDATE requests SET done_at = ?1, result = ?2 WHERE done_at IS NULL",
            params![now(), result],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once_and_its_result_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        let sync = store.add_request("sync", Some("drop"), None).unwrap();
        let again = store.add_request("reprocess", None, Some(7)).unwrap();
        let taken = store.take_requests().unwrap();
        assert_eq!(
            taken.iter().map(|r| r.id).collect::<Vec<_>>(),
            [sync, again]
        );
        assert_eq!(taken[1].item_id, Some(7));
        assert!(store.take_requests().unwrap().is_empty());
        assert_eq!(store.request_result(sync).unwrap(), None);
        store.finish_request(sync, "{\"imported\":1}").unwrap();
        assert_eq!(
            store.request_result(sync).unwrap().as_deref(),
            Some("{\"imported\":1}")
        );
        store.abandon_requests("{\"error\":\"stopped\"}").unwrap();
        assert!(store.request_result(again).unwrap().is_some());
    }
}
