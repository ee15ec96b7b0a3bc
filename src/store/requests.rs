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

    /// The requests no daemon has taken yet, oldest first; each is marked taken. On a shared
    /// store `leave` names the sources other daemons work: their requests (a reprocess is for
    /// the source of its item) are left to them.
    pub fn take_requests(&self, leave: Option<&[String]>) -> Result<Vec<Request>, Error> {
        let conn = self.lock();
        let read = |r: &super::db::Row<'_>| {
            Ok(Request {
                id: r.get(0)?,
                kind: r.get(1)?,
                source: r.get(2)?,
                item_id: r.get(3)?,
            })
        };
        let Some(leave) = leave else {
            let mut stmt = conn.prepare_cached(
                "UPDATE requests SET taken_at = ?1 WHERE taken_at IS NULL
                 RETURNING id, kind, source, item_id",
            )?;
            let rows = stmt.query_map([now()], read)?;
            let mut requests: Vec<Request> = rows.collect::<Result<_, _>>()?;
            requests.sort_by_key(|r| r.id);
            return Ok(requests);
        };
        let waiting: Vec<(Request, Option<String>)> = {
            let mut stmt = conn.prepare_cached(
                "SELECT r.id, r.kind, r.source, r.item_id, COALESCE(r.source, i.source)
                 FROM requests r LEFT JOIN items i ON i.id = r.item_id
                 WHERE r.taken_at IS NULL ORDER BY r.id",
            )?;
            let rows = stmt.query_map([], |r| Ok((read(r)?, r.get(4)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut taken = Vec::new();
        for (request, source) in waiting {
            if source.is_some_and(|s| leave.contains(&s)) {
                continue;
            }
            // Another daemon may have taken it meanwhile (it owned the source a moment ago).
            if conn.execute(
                "UPDATE requests SET taken_at = ?2 WHERE id = ?1 AND taken_at IS NULL",
                params![request.id, now()],
            )? == 1
            {
                taken.push(request);
            }
        }
        Ok(taken)
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

    /// Ends the requests for `source` that a daemon took and never finished with this result:
    /// the daemon that takes the source over says so for the one that lost it.
    pub fn abandon_requests_of(&self, source: &str, result: &str) -> Result<(), Error> {
        self.lock().execute(
            "UPDATE requests SET done_at = ?1, result = ?2
             WHERE done_at IS NULL AND taken_at IS NOT NULL
               AND (source = ?3 OR item_id IN (SELECT id FROM items WHERE source = ?3))",
            params![now(), result, source],
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
        let taken = store.take_requests(None).unwrap();
        assert_eq!(
            taken.iter().map(|r| r.id).collect::<Vec<_>>(),
            [sync, again]
        );
        assert_eq!(taken[1].item_id, Some(7));
        assert!(store.take_requests(None).unwrap().is_empty());
        assert_eq!(store.request_result(sync).unwrap(), None);
        store.finish_request(sync, "{\"imported\":1}").unwrap();
        assert_eq!(
            store.request_result(sync).unwrap().as_deref(),
            Some("{\"imported\":1}")
        );
        store.abandon_requests("{\"error\":\"stopped\"}").unwrap();
        assert!(store.request_result(again).unwrap().is_some());
    }

    /// On a shared store a daemon leaves the requests for the sources others work (a
    /// reprocess by its item's source); the one that takes a source over ends the requests
    /// its last owner took and never answered.
    #[test]
    fn a_daemon_takes_the_requests_of_its_own_sources_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        let item = crate::store::tests::file("<a/>", "mail");
        let priors = store.begin(&[&item], "").unwrap();
        let [crate::store::Prior::Fresh { item_id }] = priors[..] else {
            panic!("a fresh arrival: {priors:?}");
        };
        let drop = store.add_request("sync", Some("drop"), None).unwrap();
        let mail = store.add_request("sync", Some("mail"), None).unwrap();
        let put_back = store.add_request("reprocess", None, Some(item_id)).unwrap();

        let elsewhere = ["drop".to_owned()];
        let taken = store.take_requests(Some(&elsewhere)).unwrap();
        assert_eq!(
            taken.iter().map(|r| r.id).collect::<Vec<_>>(),
            [mail, put_back]
        );
        assert!(
            store.take_requests(Some(&elsewhere)).unwrap().is_empty(),
            "taken once"
        );
        let others = ["mail".to_owned()];
        assert_eq!(store.take_requests(Some(&others)).unwrap()[0].id, drop);

        store
            .abandon_requests_of("mail", "{\"error\":\"lost\"}")
            .unwrap();
        assert!(store.request_result(mail).unwrap().is_some());
        assert!(
            store.request_result(put_back).unwrap().is_some(),
            "by its item's source"
        );
        assert_eq!(
            store.request_result(drop).unwrap(),
            None,
            "another source's stays"
        );
    }
}
