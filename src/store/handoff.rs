//! The hand-off side of the ledger: which document each ERP connector still has to get,
//! what became of each attempt, and the notice that tells of a document that could not be
//! handed off.
//!
//! A row per (connector, document) is written by `insert_documents`, in the same transaction
//! as the document, for every connector registered with `set_connectors` whose kinds take it:
//! a crash loses none. Rows move along `pending → delivered | dead`; an attempt is recorded
//! before it is made, and the body sent is fixed at the first attempt, so a repeat after a
//! crash is the same bytes under the same `webhook-id`. This file never sends anything: that
//! is `connector`.

use std::time::Duration;

use super::db::{Connection, OptionalExtension, TransactionBehavior, params};
use chrono::Utc;
use serde_json::Value;

use super::outbox::stamp;
use super::{Error, Store, now};
use crate::model::Operation;

/// A connector as the store knows it: its name and the document kinds it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The connector's name.
    pub name: String,
    /// `delivery_note`, `order`.
    pub documents: Vec<String>,
}

/// A hand-off that is due now.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// The stored document.
    pub document_id: i64,
    /// `document.stored`, `document.updated` or `document.deleted`.
    pub event: String,
    /// Attempts recorded so far.
    pub attempts: u32,
    /// The body fixed at the first attempt (webhooks), if there was one.
    pub body: Option<String>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The receiver took it (a 2xx answer, or the file is in place).
    Delivered,
    /// It failed; tried again at `retry_at` (RFC 3339), or `None`: that was the last attempt.
    Failed {
        /// Why, in words, without any secret.
        error: String,
        /// When to try again; `None` makes it dead.
        retry_at: Option<String>,
    },
    /// Recorded as an attempt, but not made after all (the round ended before it).
    NotMade,
}

/// A connector's counters for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HandoffCounts {
    /// The connector's name.
    pub name: String,
    /// Documents still to hand off.
    pub pending: i64,
    /// Documents handed off.
    pub delivered: i64,
    /// Documents given up on after the last attempt.
    pub dead: i64,
    /// The error of the latest failed attempt of a document not delivered since.
    pub last_error: Option<String>,
}

/// A document a connector gave up on, as its notice shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadDocument {
    /// The store id.
    pub document_id: i64,
    /// `delivery_note` or `order`.
    pub kind: String,
    /// Its number (supplier text, not sanitized).
    pub number: String,
    /// Its supplier, if routed to one.
    pub supplier: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
}

/// The event a stored document is handed off as.
pub fn event_of(operation: Option<Operation>) -> &'static str {
    match operation {
        Some(Operation::Update) => "document.updated",
        Some(Operation::Delete) => "document.deleted",
        Some(Operation::New) | None => "document.stored",
    }
}

/// `documents.operation` as stored (`new`, `update`, `delete`) back to the operation.
fn stored_operation(text: Option<&str>) -> Option<Operation> {
    match text {
        Some("update") => Some(Operation::Update),
        Some("delete") => Some(Operation::Delete),
        Some("new") => Some(Operation::New),
        _ => None,
    }
}

/// The hook of `insert_documents`: one pending row per connector registered on this
/// connection that takes this kind of document, in the caller's transaction.
pub(super) fn queue(
    conn: &Connection,
    document_id: i64,
    kind: &str,
    operation: Option<Operation>,
    now: &str,
) -> Result<(), Error> {
    for name in conn.connectors_for(kind) {
        conn.execute(
            "INSERT INTO handoff (connector, document_id, event, created_at, next_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![name, document_id, event_of(operation), now],
        )?;
    }
    Ok(())
}

impl Store {
    /// Registers this process's configured connectors (replacing the ones it registered
    /// before), on its own connection only: another process on the same store (a `sync` with
    /// another config) queues for its own. From now on every document it stores of their
    /// kinds gets a hand-off row. Documents stored before are not queued (`replay_handoffs`
    /// does that on request).
    pub fn set_connectors(&self, connectors: &[Registration]) {
        self.lock().set_connectors(
            connectors
                .iter()
                .map(|c| (c.name.clone(), c.documents.clone()))
                .collect(),
        );
    }

    /// The hand-offs of `connector` due at `now`, oldest document first, at most `limit`. A
    /// hand-off waits for its item's move (so that `origin.archived` says where it lies), but
    /// not beyond `undisposed_before`.
    pub fn due_handoffs(
        &self,
        connector: &str,
        now: &str,
        undisposed_before: &str,
        limit: usize,
    ) -> Result<Vec<Due>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT h.document_id, h.event, h.attempts, h.body
             FROM handoff h JOIN documents d ON d.id = h.document_id JOIN items i ON i.id = d.item_id
             WHERE h.connector = ?1 AND h.state = 'pending' AND h.next_at <= ?2
               AND (i.disposed_at IS NOT NULL OR h.created_at < ?3)
             ORDER BY h.document_id LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![connector, now, undisposed_before, limit as i64],
            |r| {
                Ok(Due {
                    document_id: r.get(0)?,
                    event: r.get(1)?,
                    attempts: r.get(2)?,
                    body: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The document as `export` prints it, plus `supersedes`: the id of the document it
    /// replaced (a cXML update or delete), else null.
    pub fn handoff_document(&self, document_id: i64) -> Result<Option<Value>, Error> {
        let Some(mut doc) = self
            .export_page(document_id - 1, 1)?
            .into_iter()
            .find(|d| d.id == document_id)
        else {
            return Ok(None);
        };
        let supersedes: Option<i64> = self
            .lock()
            .query_row(
                "SELECT id FROM documents WHERE superseded_by = ?1",
                [document_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Value::Object(map) = &mut doc.json {
            map.insert("supersedes".into(), supersedes.into());
        }
        Ok(Some(doc.json))
    }

    /// Records attempts before they are made, in one transaction: one more attempt and its
    /// time for each document, and the body where it is the first (kept from then on).
    pub fn begin_handoffs(
        &self,
        connector: &str,
        attempts: &[(i64, Option<&str>)],
    ) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE handoff SET attempts = attempts + 1, last_attempt_at = ?3,
                                    body = COALESCE(body, ?4)
                 WHERE connector = ?1 AND document_id = ?2",
            )?;
            let at = now();
            for (document_id, body) in attempts {
                update.execute(params![connector, document_id, at, body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records what became of the attempts, in one transaction. A document that failed its
    /// last attempt becomes dead and is told to the admins: it joins the connector's notice
    /// written in the last 15 s, or starts a new one, mailed 20 s after it was written.
    /// Returns the documents that died.
    pub fn finish_handoffs(
        &self,
        connector: &str,
        results: &[(i64, Attempt)],
    ) -> Result<Vec<i64>, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let mut dead = Vec::new();
        for (document_id, attempt) in results {
            match attempt {
                Attempt::Delivered => {
                    tx.prepare_cached(
                        "UPDATE handoff SET state = 'delivered', delivered_at = ?3, last_error = NULL
                         WHERE connector = ?1 AND document_id = ?2",
                    )?
                    .execute(params![connector, document_id, at])?;
                }
                Attempt::Failed {
                    error,
                    retry_at: Some(retry_at),
                } => {
                    tx.prepare_cached(
                        "UPDATE handoff SET next_at = ?3, last_error = ?4
                         WHERE connector = ?1 AND document_id = ?2",
                    )?
                    .execute(params![
                        connector,
                        document_id,
                        retry_at,
                        error
                    ])?;
                }
                Attempt::Failed {
                    error,
                    retry_at: None,
                } => {
                    let notice = open_notice(&tx, connector, &at)?;
                    tx.prepare_cached(
                        "UPDATE handoff SET state = 'dead', last_error = ?3, notice_id = ?4
                         WHERE connector = ?1 AND document_id = ?2",
                    )?
                    .execute(params![
                        connector,
                        document_id,
                        error,
                        notice
                    ])?;
                    dead.push(*document_id);
                }
                Attempt::NotMade => {
                    tx.prepare_cached(
                        "UPDATE handoff SET attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END
                         WHERE connector = ?1 AND document_id = ?2",
                    )?
                    .execute(params![connector, document_id])?;
                }
            }
        }
        tx.commit()?;
        Ok(dead)
    }

    /// Pending, delivered and dead per connector that has rows, by name.
    pub fn handoff_counts(&self) -> Result<Vec<HandoffCounts>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT h.connector, SUM(CASE WHEN h.state = 'pending' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN h.state = 'delivered' THEN 1 ELSE 0 END),
                    SUM(CASE WHEN h.state = 'dead' THEN 1 ELSE 0 END),
                    (SELECT e.last_error FROM handoff e
                     WHERE e.connector = h.connector AND e.state != 'delivered'
                       AND e.last_error IS NOT NULL
                     ORDER BY e.last_attempt_at DESC LIMIT 1)
             FROM handoff h GROUP BY h.connector ORDER BY h.connector",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(HandoffCounts {
                name: r.get(0)?,
                pending: r.get(1)?,
                delivered: r.get(2)?,
                dead: r.get(3)?,
                last_error: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queues documents again for `connector` (after an ERP restore, or once the receiver of
    /// dead documents works again): with `since`, every document of `kinds` with a larger id,
    /// whether it had a row or not; with `dead_only`, only those given up on (above `since`,
    /// if given). A queued document starts its schedule afresh under its event (so its
    /// `webhook-id` stays, and a receiver that still has it drops the repeat); its body is made
    /// anew at the next attempt, with the config of then. Returns how many were queued.
    pub fn replay_handoffs(
        &self,
        connector: &str,
        kinds: &[String],
        since: Option<i64>,
        dead_only: bool,
    ) -> Result<usize, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let mut queued = 0;
        if dead_only {
            queued = tx.execute(
                "UPDATE handoff SET state = 'pending', attempts = 0, next_at = ?2, notice_id = NULL,
                                    body = NULL
                 WHERE connector = ?1 AND state = 'dead' AND document_id > ?3",
                params![connector, at, since.unwrap_or(0)],
            )?;
        } else if let Some(since) = since {
            let documents: Vec<(i64, String, Option<String>)> = {
                let mut stmt = tx.prepare(
                    "SELECT id, kind, operation FROM documents WHERE id > ?1 ORDER BY id",
                )?;
                let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut upsert = tx.prepare_cached(
                "INSERT INTO handoff (connector, document_id, event, created_at, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (connector, document_id) DO UPDATE SET
                   state = 'pending', attempts = 0, next_at = excluded.next_at, notice_id = NULL,
                   body = NULL",
            )?;
            for (id, kind, operation) in documents {
                if kinds.contains(&kind) {
                    let event = event_of(stored_operation(operation.as_deref()));
                    queued += upsert.execute(params![connector, id, event, at])?;
                }
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// The documents a notice about undelivered documents tells of.
    pub fn dead_documents(&self, notice: i64) -> Result<Vec<DeadDocument>, Error> {
        dead_members(&self.lock(), notice)
    }
}

/// A notice about dead documents gathers the documents of its connector that die within this
/// window after it was written ...
const GATHER: Duration = Duration::from_secs(15);
/// ... and is mailed only once it is this old, so that none joins a notice already read for
/// mailing (the margin covers a transaction's own duration).
const HOLD: Duration = Duration::from_secs(20);

fn ago(d: Duration) -> String {
    stamp(Utc::now() - chrono::TimeDelta::from_std(d).unwrap_or_default())
}

/// Notices about dead documents written before this are complete and may be mailed.
pub(super) fn gathered_before() -> String {
    ago(HOLD)
}

/// The connector's notice about dead documents that still gathers, else a new one.
fn open_notice(conn: &Connection, connector: &str, at: &str) -> Result<i64, Error> {
    let open: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM outbox WHERE source = ?1 AND kind = 'undelivered'
               AND state = 'pending' AND attempts = 0 AND created_at > ?2
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![connector, ago(GATHER)], |r| r.get(0))
        .optional()?;
    if let Some(id) = open {
        return Ok(id);
    }
    conn.insert(
        "INSERT INTO outbox (source, kind, created_at) VALUES (?1, 'undelivered', ?2)",
        params![connector, at],
    )
}

pub(super) fn dead_members(conn: &Connection, notice: i64) -> Result<Vec<DeadDocument>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT h.document_id, d.kind, d.number, d.supplier, h.attempts, h.last_error
         FROM handoff h JOIN documents d ON d.id = h.document_id
         WHERE h.notice_id = ?1 ORDER BY h.document_id",
    )?;
    let rows = stmt.query_map([notice], |r| {
        Ok(DeadDocument {
            document_id: r.get(0)?,
            kind: r.get(1)?,
            number: r.get(2)?,
            supplier: r.get(3)?,
            attempts: r.get(4)?,
            error: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        (dir, store)
    }

    /// A stored document of `kind` on a disposed item, with the hand-off rows the hook writes.
    fn stored(store: &Store, kind: &str, number: &str) -> i64 {
        let conn = store.lock();
        let item = conn
            .insert(
            "INSERT INTO items (sha256, source, kind, location, size, received_at, outcome, disposed_at)
             VALUES (?1, 'drop', 'file', 'in/x', 1, ?2, 'imported', ?2)",
            params![number, now()],
        )
            .unwrap();
        let id = conn
            .insert(
            "INSERT INTO documents (item_id, kind, format, number, business_key, file, json, stored_at)
             VALUES (?1, ?2, 'opentrans-2.1', ?3, ?3, 'x.xml', '{}', ?4)",
            params![item, kind, number, now()],
        )
            .unwrap();
        queue(&conn, id, kind, None, &now()).unwrap();
        id
    }

    fn register(store: &Store) {
        store.set_connectors(&[
            Registration {
                name: "erp".into(),
                documents: vec!["delivery_note".into(), "order".into()],
            },
            Registration {
                name: "orders".into(),
                documents: vec!["order".into()],
            },
        ]);
    }

    #[test]
    fn each_connector_gets_a_row_for_the_kinds_it_takes() {
        let (_dir, store) = store();
        register(&store);
        let note = stored(&store, "delivery_note", "LS-1");
        let order = stored(&store, "order", "PO-1");
        let due = |c: &str| -> Vec<i64> {
            store
                .due_handoffs(c, "9999", "", 10)
                .unwrap()
                .iter()
                .map(|d| d.document_id)
                .collect()
        };
        assert_eq!(due("erp"), [note, order]);
        assert_eq!(due("orders"), [order]);
        assert_eq!(store.due_handoffs("erp", "0000", "", 10).unwrap(), []);
    }

    #[test]
    fn only_the_process_that_registered_connectors_queues_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let location = crate::store::test_location(dir.path());
        let store = Store::open_at(&location).unwrap();
        register(&store);
        let other = Store::open_at(&location).unwrap();
        stored(&other, "delivery_note", "LS-1");
        assert_eq!(other.handoff_counts().unwrap(), []);
        stored(&store, "delivery_note", "LS-2");
        assert_eq!(other.handoff_counts().unwrap()[0].pending, 1);
    }

    #[test]
    fn documents_stored_before_a_connector_are_not_back_filled_unless_replayed() {
        let (_dir, store) = store();
        let early = stored(&store, "delivery_note", "LS-0");
        register(&store);
        let later = stored(&store, "delivery_note", "LS-1");
        let ids = |s: &Store| -> Vec<i64> {
            s.due_handoffs("erp", "9999", "", 10)
                .unwrap()
                .iter()
                .map(|d| d.document_id)
                .collect()
        };
        assert_eq!(ids(&store), [later]);
        let kinds = vec!["delivery_note".to_owned()];
        assert_eq!(
            store
                .replay_handoffs("erp", &kinds, Some(0), false)
                .unwrap(),
            2
        );
        assert_eq!(ids(&store), [early, later]);
    }

    #[test]
    fn the_body_is_fixed_at_the_first_attempt_and_a_last_failure_makes_one_notice() {
        let (_dir, store) = store();
        register(&store);
        let a = stored(&store, "delivery_note", "LS-1");
        let b = stored(&store, "delivery_note", "LS-2");
        store
            .begin_handoffs("erp", &[(a, Some("first")), (b, Some("b"))])
            .unwrap();
        store.begin_handoffs("erp", &[(a, Some("second"))]).unwrap();
        let due = store.due_handoffs("erp", "9999", "", 10).unwrap();
        assert_eq!(due[0].body.as_deref(), Some("first"));
        assert_eq!(due[0].attempts, 2);
        let last = |why: &str| Attempt::Failed {
            error: why.into(),
            retry_at: None,
        };
        let dead = store
            .finish_handoffs("erp", &[(a, last("HTTP 500")), (b, last("HTTP 502"))])
            .unwrap();
        assert_eq!(dead, [a, b]);
        let notices: Vec<i64> = {
            let conn = store.lock();
            let mut stmt = conn
                .prepare("SELECT id FROM outbox WHERE kind = 'undelivered'")
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(
            notices.len(),
            1,
            "one notice for the documents that died together"
        );
        assert!(
            store.ready_notices("").unwrap().is_empty(),
            "held while it may still gather"
        );
        store
            .lock()
            .execute(
                "UPDATE outbox SET created_at = '2000-01-01T00:00:00.000Z'",
                [],
            )
            .unwrap();
        let ready = store.ready_notices("").unwrap();
        assert!(
            matches!(&ready[0].kind, crate::store::outbox::NoticeKind::Undelivered(d) if d.len() == 2),
            "{ready:?}"
        );
        let told = store.dead_documents(notices[0]).unwrap();
        assert_eq!(told.len(), 2);
        assert_eq!(told[1].error, "HTTP 502");
        let counts = store.handoff_counts().unwrap();
        assert_eq!(counts[0].dead, 2);
        assert_eq!(counts[0].last_error.as_deref(), Some("HTTP 500"));
        let kinds = vec!["delivery_note".to_owned()];
        assert_eq!(store.replay_handoffs("erp", &kinds, None, true).unwrap(), 2);
        let counts = store.handoff_counts().unwrap();
        assert_eq!((counts[0].pending, counts[0].dead), (2, 0));
    }

    #[test]
    fn an_attempt_not_made_is_taken_back() {
        let (_dir, store) = store();
        register(&store);
        let a = stored(&store, "order", "PO-1");
        store.begin_handoffs("erp", &[(a, None)]).unwrap();
        store
            .finish_handoffs("erp", &[(a, Attempt::NotMade)])
            .unwrap();
        assert_eq!(
            store.due_handoffs("erp", "9999", "", 10).unwrap()[0].attempts,
            0
        );
        store
            .finish_handoffs("erp", &[(a, Attempt::Delivered)])
            .unwrap();
        assert_eq!(store.handoff_counts().unwrap()[1].delivered, 0);
        assert_eq!(store.handoff_counts().unwrap()[0].delivered, 1);
    }
}
