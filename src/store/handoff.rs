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

use super::outbox::{Claim, claims_checked_at, stamp};
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

    /// Claims the hand-offs of `connector` due at `now`, oldest document first, at most
    /// `limit`, in one transaction: from now on until `claim.until` no other process takes
    /// them (`finish_handoffs` ends the claim). A hand-off waits for its item's move (so that
    /// `origin.archived` says where it lies), but not beyond `undisposed_before`; one that
    /// another process claimed is left to it until its claim runs out.
    pub fn claim_handoffs(
        &self,
        connector: &str,
        now: &str,
        undisposed_before: &str,
        limit: usize,
        claim: Claim<'_>,
    ) -> Result<Vec<Due>, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // On PostgreSQL the rows are locked as they are chosen, and rows another transaction
        // is claiming this moment are passed over, not waited for (SQLite has no row locks:
        // its one writer at a time is the claim's guard there).
        let lock = if tx.is_postgres() {
            " FOR UPDATE OF h SKIP LOCKED"
        } else {
            ""
        };
        let due: Vec<Due> = {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT h.document_id, h.event, h.attempts, h.body
                 FROM handoff h JOIN documents d ON d.id = h.document_id
                      JOIN items i ON i.id = d.item_id
                 WHERE h.connector = ?1 AND h.state = 'pending' AND h.next_at <= ?2
                   AND (h.claimed_until IS NULL OR h.claimed_until <= ?5)
                   AND (i.disposed_at IS NOT NULL OR h.created_at < ?3)
                 ORDER BY h.document_id LIMIT ?4{lock}"
            ))?;
            let rows = stmt.query_map(
                params![
                    connector,
                    now,
                    undisposed_before,
                    limit as i64,
                    claims_checked_at(&tx)
                ],
                |r| {
                    Ok(Due {
                        document_id: r.get(0)?,
                        event: r.get(1)?,
                        attempts: r.get(2)?,
                        body: r.get(3)?,
                    })
                },
            )?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut mark = tx.prepare_cached(
                "UPDATE handoff SET claimed_by = ?3, claimed_until = ?4
                 WHERE connector = ?1 AND document_id = ?2",
            )?;
            for d in &due {
                mark.execute(params![connector, d.document_id, claim.by, claim.until])?;
            }
        }
        tx.commit()?;
        Ok(due)
    }

    /// Ends the claims on `connector`'s hand-offs of processes of this machine that have ended
    /// (a daemon killed during its round), so that their documents are due again now, not
    /// when the claims run out. Nothing to do on SQLite (`claims_checked_at`).
    pub fn release_abandoned_handoffs(&self, connector: &str) -> Result<(), Error> {
        self.release_ended_claims(
            "SELECT DISTINCT claimed_by FROM handoff
             WHERE connector = ?1 AND state = 'pending' AND claimed_until > ?2",
            "UPDATE handoff SET claimed_until = NULL
             WHERE connector = ?1 AND state = 'pending' AND claimed_by = ?2",
            &[connector],
        )
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

    /// Records what became of the attempts, in one transaction, and ends their claims. A
    /// document that failed its last attempt becomes dead and is told to the admins: it joins
    /// the connector's notice written in the last 15 s, or starts a new one, mailed 20 s after
    /// it was written. Returns the documents that died.
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
                        "UPDATE handoff SET state = 'delivered', delivered_at = ?3, last_error = NULL,
                                            claimed_until = NULL
                         WHERE connector = ?1 AND document_id = ?2",
                    )?
                    .execute(params![connector, document_id, at])?;
                }
                Attempt::Failed {
                    error,
                    retry_at: Some(retry_at),
                } => {
                    tx.prepare_cached(
                        "UPDATE handoff SET next_at = ?3, last_error = ?4, claimed_until = NULL
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
                        "UPDATE handoff SET state = 'dead', last_error = ?3, notice_id = ?4,
                                            claimed_until = NULL
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
                        "UPDATE handoff SET attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
                                            claimed_until = NULL
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

    /// A claim that has run out by the time anyone looks again, for the tests that are not
    /// about claims: each look finds what is due.
    const SPENT: Claim<'static> = Claim {
        by: "test 1",
        until: "0000",
    };

    /// The documents `connector` has due at `now`, claimed with `SPENT`.
    fn due(store: &Store, connector: &str, now: &str) -> Vec<Due> {
        store.claim_handoffs(connector, now, "", 10, SPENT).unwrap()
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
        let ids = |c: &str| -> Vec<i64> {
            due(&store, c, "9999")
                .iter()
                .map(|d| d.document_id)
                .collect()
        };
        assert_eq!(ids("erp"), [note, order]);
        assert_eq!(ids("orders"), [order]);
        assert_eq!(due(&store, "erp", "0000"), []);
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
            due(s, "erp", "9999")
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
        let due = due(&store, "erp", "9999");
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
        assert_eq!(due(&store, "erp", "9999")[0].attempts, 0);
        store
            .finish_handoffs("erp", &[(a, Attempt::Delivered)])
            .unwrap();
        assert_eq!(store.handoff_counts().unwrap()[1].delivered, 0);
        assert_eq!(store.handoff_counts().unwrap()[0].delivered, 1);
    }

    /// Two handles on one PostgreSQL database, both with the connectors registered: two
    /// daemons of a shared store.
    fn two_daemons(test: &str) -> (Store, Store) {
        let url = crate::store::test_postgres::Postgres::shared().fresh_database(test);
        let location =
            crate::store::Location::Postgres(crate::store::Target::new(&url, None, None).unwrap());
        let (a, b) = (
            Store::open_at(&location).unwrap(),
            Store::open_at(&location).unwrap(),
        );
        register(&a);
        register(&b);
        (a, b)
    }

    fn minutes_from_now(minutes: i64) -> String {
        stamp(Utc::now() + chrono::Duration::minutes(minutes))
    }

    /// What `by` claims of `erp`'s documents due now, at most `limit`, until `until`.
    fn claim(store: &Store, by: &str, until: &str, limit: usize) -> Vec<Due> {
        store
            .claim_handoffs("erp", &stamp(Utc::now()), "", limit, Claim { by, until })
            .unwrap()
    }

    /// Two daemons claim rounds of the same connector's documents from two threads until none
    /// is left: each document is claimed by exactly one of them.
    #[test]
    fn two_daemons_racing_for_the_due_hand_offs_claim_each_once() {
        let (a, b) = two_daemons("handoff_race");
        let ids: Vec<i64> = (0..120)
            .map(|i| stored(&a, "delivery_note", &format!("LS-{i}")))
            .collect();
        let until = minutes_from_now(5);
        let start = std::sync::Barrier::new(2);
        let claim_rounds = |store: &Store, by: &str| -> Vec<i64> {
            start.wait();
            let mut won = Vec::new();
            loop {
                let round = claim(store, by, &until, 7);
                if round.is_empty() {
                    return won;
                }
                won.extend(round.iter().map(|d| d.document_id));
            }
        };
        let (won_a, won_b) = std::thread::scope(|s| {
            let one = s.spawn(|| claim_rounds(&a, "host-a 1"));
            let two = s.spawn(|| claim_rounds(&b, "host-b 2"));
            (one.join().unwrap(), two.join().unwrap())
        });
        assert!(
            won_a.iter().all(|id| !won_b.contains(id)),
            "claimed twice: {won_a:?} {won_b:?}"
        );
        let mut all = [won_a, won_b].concat();
        all.sort();
        assert_eq!(all, ids);
    }

    /// A daemon killed during its round never finishes it: its documents are no one else's
    /// until the claim runs out; then the other daemon takes them, with the body fixed at the
    /// first attempt, and its results end its claim.
    #[test]
    fn a_killed_claimers_hand_offs_are_taken_by_another_once_its_claim_ran_out() {
        let (a, b) = two_daemons("handoff_expiry");
        let doc = stored(&a, "delivery_note", "LS-1");
        let soon = stamp(Utc::now() + chrono::Duration::seconds(1));
        assert_eq!(claim(&a, "host-a 1", &soon, 10).len(), 1);
        a.begin_handoffs("erp", &[(doc, Some("the first body"))])
            .unwrap();
        drop(a);
        let later = minutes_from_now(5);
        let claim_b = || claim(&b, "host-b 2", &later, 10);
        assert_eq!(claim_b(), [], "still claimed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let taken = loop {
            let taken = claim_b();
            if !taken.is_empty() || std::time::Instant::now() > deadline {
                break taken;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(taken.len(), 1, "taken once the claim ran out");
        assert_eq!((taken[0].document_id, taken[0].attempts), (doc, 1));
        assert_eq!(taken[0].body.as_deref(), Some("the first body"));
        let retry = Attempt::Failed {
            error: "HTTP 503".into(),
            retry_at: Some(stamp(Utc::now())),
        };
        b.begin_handoffs("erp", &[(doc, None)]).unwrap();
        b.finish_handoffs("erp", &[(doc, retry)]).unwrap();
        assert_eq!(claim_b().len(), 1, "its results ended its claim");
    }

    /// The claims of a process of this machine that has ended (killed during its round) end
    /// at the next look; those of a live process, or of one on another machine, stand.
    #[test]
    fn the_hand_offs_of_a_process_that_ended_are_due_again() {
        let (a, b) = two_daemons("handoff_ended");
        let ended = format!(
            "{} {}",
            crate::lock::host(),
            crate::store::tests::ended_pid()
        );
        let alive = crate::lock::daemon_name();
        let until = minutes_from_now(5);
        let mut ids = Vec::new();
        for (i, by) in [ended.as_str(), alive.as_str(), "elsewhere 4242"]
            .iter()
            .enumerate()
        {
            ids.push(stored(&a, "delivery_note", &format!("LS-{i}")));
            assert_eq!(claim(&a, by, &until, 1)[0].document_id, ids[i]);
        }
        b.release_abandoned_handoffs("erp").unwrap();
        let due: Vec<i64> = due(&b, "erp", &stamp(Utc::now()))
            .iter()
            .map(|d| d.document_id)
            .collect();
        assert_eq!(due, [ids[0]]);
    }

    /// On PostgreSQL a document whose row another transaction holds locked (a claim being
    /// made this moment) is passed over, not waited for.
    #[test]
    fn a_row_being_claimed_elsewhere_is_passed_over_not_waited_for() {
        let (a, b) = two_daemons("handoff_skip_locked");
        let first = stored(&a, "delivery_note", "LS-1");
        let second = stored(&a, "delivery_note", "LS-2");
        let conn = a.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .unwrap();
        let locked: i64 = tx
            .query_row(
                "SELECT document_id FROM handoff WHERE connector = 'erp' AND document_id = ?1
                 FOR UPDATE",
                [first],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(locked, first);
        let started = std::time::Instant::now();
        let claimed = claim(&b, "host-b 2", &minutes_from_now(5), 10);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let ids: Vec<i64> = claimed.iter().map(|d| d.document_id).collect();
        assert_eq!(ids, [second]);
    }
}
