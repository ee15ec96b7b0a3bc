//! Step 5 of the flow: the SQLite ledger.
//!
//! Owns every write: the item rows (key = sha256 of the bytes, attempts, outcome, where the
//! item lies), the documents with their lines, and the outbox rows for notifications, the last
//! written in the same transaction as the rejection. `synchronous=FULL` and `BEGIN IMMEDIATE`
//! make a commit durable before the caller moves the item (DESIGN.md, promise 1).
//!
//! Blocking by design; `Store::call` runs one call on the blocking pool for async callers.

pub mod handoff;
pub mod ledger;
mod oauth;
pub mod outbox;
pub mod receiver;
mod requests;
mod schema;
mod source_state;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::error::Reject;
use crate::extract::Envelope;
use crate::item::Item;
use crate::model::{Document, Operation};
pub use ledger::{DocumentQuery, ItemFilter, ItemState, LedgerItem};
pub use oauth::OAuthGrant;
pub use requests::Request;
pub use source_state::Stray;

/// An item whose parse was started this many times without an outcome is set aside.
pub const MAX_ATTEMPTS: u32 = 3;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A store error. Busy and I/O errors are transient: the item stays where it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused or failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer eingang.
    #[error(
        "store: schema version {found} is newer than this eingang knows ({known}); update eingang"
    )]
    TooNew {
        /// The file's version.
        found: i64,
        /// This build's version.
        known: usize,
    },
    /// The blocking task that ran a store call ended abnormally.
    #[error("store: the store task stopped: {0}")]
    Task(String),
}

/// What the ledger already knows about an item's bytes, decided before parsing.
#[derive(Debug, Clone, PartialEq)]
pub enum Prior {
    /// Never seen (or rejected before and disposed: a new try after a fix). Parse it.
    Fresh {
        /// Its new ledger row.
        item_id: i64,
    },
    /// An earlier attempt started and never finished (the process died). Parse it alone,
    /// after `Store::count_attempt`.
    Retry {
        /// The ledger row.
        item_id: i64,
    },
    /// Decided before a crash; only the move is left.
    Decided(Outcome),
    /// Earlier attempts crashed the process `MAX_ATTEMPTS` times: reject without parsing.
    Poison {
        /// The ledger row.
        item_id: i64,
        /// Attempts made.
        attempts: u32,
    },
    /// The same bytes were imported and archived before: a re-delivery.
    AlreadyImported {
        /// This arrival's new ledger row.
        item_id: i64,
        /// The earlier item.
        existing: i64,
    },
}

/// A committed outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Documents stored.
    Imported {
        /// The ledger row.
        item_id: i64,
        /// The stored documents' ids.
        documents: Vec<i64>,
    },
    /// Rejected, with one outbox row.
    Rejected {
        /// The ledger row.
        item_id: i64,
        /// The reason as shown to people.
        reason: String,
    },
}

impl Outcome {
    /// The ledger row.
    pub fn item_id(&self) -> i64 {
        match self {
            Outcome::Imported { item_id, .. } | Outcome::Rejected { item_id, .. } => *item_id,
        }
    }
}

/// The parse result of one item, ready to commit.
#[derive(Debug)]
pub struct Verdict {
    /// The ledger row from `begin`.
    pub item_id: i64,
    /// The message's envelope (empty for files).
    pub envelope: Envelope,
    /// The routed supplier.
    pub supplier: Option<String>,
    /// Documents, or the rejection.
    pub result: Result<Vec<Document>, Reject>,
}

/// A stored document as `export` prints it.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The store id.
    pub id: i64,
    /// The document JSON with `id` and `origin` added.
    pub json: Value,
}

/// One source's counters for `status`: `received = archived + failed + handled + in_flight`.
/// An item put back by `reprocess` is counted once, by its next arrival; one that left its
/// inbox before it was decided (someone else took it) is not counted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceCounts {
    /// The source name.
    pub name: String,
    /// Items received.
    pub received: i64,
    /// Items imported and archived.
    pub archived: i64,
    /// Items rejected and lying in the error folder, not reprocessed nor handled by hand.
    pub failed: i64,
    /// Items rejected, then closed by hand without reprocessing.
    pub handled: i64,
    /// Items started or decided but not yet moved.
    pub in_flight: i64,
    /// When the source last finished a pass without error.
    pub last_ok: Option<String>,
    /// The last error, if the source has failed since.
    pub last_error: Option<String>,
}

/// An item whose place was never recorded: decided and not moved yet (a crash between commit
/// and move, or a move that failed), moved without its record (a crash between move and
/// record), or never decided (a crash during its parse).
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// The ledger row.
    pub item_id: i64,
    /// Where it was found.
    pub location: String,
    /// Its file name.
    pub file_name: Option<String>,
    /// The committed outcome; `None` when it was never decided.
    pub outcome: Option<Outcome>,
    /// The sha256 of its bytes.
    pub sha256: String,
    /// Its Message-ID, for finding a message again.
    pub message_id: Option<String>,
    /// Its size in bytes.
    pub size: u64,
}

/// Where an item lies now, once its source moved it (or where it was left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// A path, a folder, or a sentence saying what became of it.
    pub at: String,
    /// Where it lies within that place, e.g. its UIDVALIDITY and UID in an IMAP folder (`v:u`).
    pub reference: Option<String>,
}

impl Place {
    /// A place without a reference inside it.
    pub fn at(at: impl Into<String>) -> Place {
        Place {
            at: at.into(),
            reference: None,
        }
    }

    /// How people read it: the place, with the UID inside it where there is one.
    pub fn shown(&self) -> String {
        match self.reference.as_deref().and_then(|r| r.split_once(':')) {
            Some((_, uid)) => format!("{} (UID {uid})", self.at),
            None => self.at.clone(),
        }
    }
}

/// A rejected item, as `reprocess` needs it.
#[derive(Debug, Clone)]
pub struct FailedItem {
    /// The ledger row.
    pub id: i64,
    /// The source it came from.
    pub source: String,
    /// Where it lies now (the path in the error folder).
    pub archived: Option<String>,
    /// Where it was found.
    pub location: String,
    /// Where it lies within that place, e.g. its UIDVALIDITY and UID in an IMAP folder.
    pub archived_ref: Option<String>,
}

/// The SQLite store. One connection; `&self` methods lock it for one call.
pub struct Store {
    conn: Mutex<Connection>,
    /// The start of every Message-ID this store gives its notices (`eingang.<store id>.`).
    notice_ids: String,
    /// Items whose parse began in this process and is not committed yet: a row without an
    /// outcome that is not in here was left by a process that died.
    started: Mutex<HashSet<i64>>,
}

impl Store {
    /// Opens (creating if needed) and migrates the store.
    pub fn open(path: &Path) -> Result<Store, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("{}: {e}", dir.display())),
                )
            })?;
        }
        keep_private(path).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("{}: {e}", path.display())),
            )
        })?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // An item is moved right after its commit, so the commit must survive a power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > schema::latest() as i64 {
            return Err(Error::TooNew {
                found,
                known: schema::latest(),
            });
        }
        schema::migrate(&mut conn)?;
        handoff::prepare(&conn)?;
        let id: String = conn.query_row("SELECT id FROM store_identity", [], |r| r.get(0))?;
        Ok(Store {
            conn: Mutex::new(conn),
            notice_ids: format!("eingang.{id}."),
            started: Mutex::new(HashSet::new()),
        })
    }

    /// Writes a consistent copy of the store to `to` (a new file, mode 0600) while others keep
    /// working in it: SQLite's online backup, page by page, started over when a writer changes
    /// a page already copied. Returns the number of documents in the copy.
    pub fn backup(&self, to: &Path) -> Result<i64, Error> {
        if to.exists() {
            return Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!(
                    "{} exists already; eingang does not overwrite it: give a new name",
                    to.display()
                )),
            )));
        }
        keep_private(to).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(format!("{}: {e}", to.display())),
            )
        })?;
        let mut copy = Connection::open(to)?;
        {
            let conn = self.lock();
            let backup = rusqlite::backup::Backup::new(&conn, &mut copy)?;
            backup.run_to_completion(256, Duration::from_millis(20), None)?;
        }
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!("the copy fails its integrity check: {check}")),
            )));
        }
        Ok(copy.query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))?)
    }

    /// Runs one store call on the blocking pool, for callers on the async runtime.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks up every item's bytes in the ledger and records the new arrivals, in one
    /// transaction, before anything is parsed.
    pub fn begin(&self, items: &[&Item]) -> Result<Vec<Prior>, Error> {
        let mut conn = self.lock();
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut priors = Vec::with_capacity(items.len());
        {
            let mut latest = tx.prepare_cached(
                "SELECT id, attempts, outcome, disposed_at IS NOT NULL, reason, location
                 FROM items WHERE sha256 = ?1 ORDER BY id DESC LIMIT 1",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO items (sha256, source, kind, location, file_name, size, received_at, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
            )?;
            let now = now();
            for item in items {
                let row = latest
                    .query_row([item.key().as_str()], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, u32>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, bool>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    })
                    .optional()?;
                let mut insert_new = || -> rusqlite::Result<i64> {
                    insert.execute(params![
                        item.key().as_str(),
                        item.origin.source,
                        item.kind.as_str(),
                        item.origin.location,
                        item.origin.file_name,
                        item.size() as i64,
                        now,
                    ])?;
                    Ok(tx.last_insert_rowid())
                };
                let here = |location: &str| location == item.origin.location;
                let prior = match row {
                    None => Prior::Fresh {
                        item_id: insert_new()?,
                    },
                    // The same bytes are being parsed right now for another arrival (another
                    // source, or a second copy in this batch): this one is an arrival of its own;
                    // the business key decides between them at commit.
                    Some((id, _, None, _, _, _)) if started.contains(&id) => Prior::Fresh {
                        item_id: insert_new()?,
                    },
                    Some((id, attempts, None, _, _, _)) if attempts >= MAX_ATTEMPTS => {
                        Prior::Poison {
                            item_id: id,
                            attempts,
                        }
                    }
                    Some((id, _, None, _, _, _)) => Prior::Retry { item_id: id },
                    Some((id, _, Some(outcome), false, reason, location)) if here(&location) => {
                        Prior::Decided(decided(&tx, id, &outcome, reason)?)
                    }
                    Some((id, _, Some(outcome), _, _, _)) if outcome == "imported" => {
                        Prior::AlreadyImported {
                            item_id: insert_new()?,
                            existing: id,
                        }
                    }
                    Some(_) => Prior::Fresh {
                        item_id: insert_new()?,
                    },
                };
                if let Prior::Fresh { item_id } | Prior::Retry { item_id } = prior {
                    started.insert(item_id);
                }
                priors.push(prior);
            }
        }
        tx.commit()?;
        Ok(priors)
    }

    /// Counts one more attempt for an item that an earlier attempt never finished; committed
    /// before the parse, so that an item that kills the process is set aside eventually.
    pub fn count_attempt(&self, item_id: i64) -> Result<(), Error> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE items SET attempts = attempts + 1 WHERE id = ?1",
            [item_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Writes the verdicts in one transaction: documents and lines for imports (a duplicate
    /// business key turns an import into a rejection here), the outcome of every item, and an
    /// outbox row for every rejection.
    pub fn commit(&self, verdicts: Vec<Verdict>) -> Result<Vec<Outcome>, Error> {
        {
            // Whether this commit succeeds or not, these parses are over: a row left without an
            // outcome is retried as an interrupted attempt.
            let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
            for verdict in &verdicts {
                started.remove(&verdict.item_id);
            }
        }
        let mut conn = self.lock();
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = now();
        let mut outcomes = Vec::with_capacity(verdicts.len());
        for verdict in verdicts {
            // Our own notice, come back: recognized by its header and a Message-ID of this
            // store, never by its From (anyone can write that).
            let own_notice = verdict.envelope.notice_marker
                && verdict
                    .envelope
                    .message_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with(&self.notice_ids));
            let result = match verdict.result {
                _ if own_notice => Err(Reject::OwnNotice {
                    message_id: verdict.envelope.message_id.clone().unwrap_or_default(),
                }),
                Ok(documents) => {
                    let sp = tx.savepoint()?;
                    match insert_documents(&sp, verdict.item_id, &documents, &now)? {
                        Ok(ids) => {
                            sp.commit()?;
                            Ok(ids)
                        }
                        Err(reject) => {
                            drop(sp); // rolls back this item's documents
                            Err(reject)
                        }
                    }
                }
                Err(reject) => Err(reject),
            };
            let envelope = &verdict.envelope;
            let (state, label, reason, outcome) = match result {
                Ok(ids) => (
                    "imported",
                    None,
                    None,
                    Outcome::Imported {
                        item_id: verdict.item_id,
                        documents: ids,
                    },
                ),
                Err(reject) => {
                    let reason = reject.to_string();
                    (
                        "rejected",
                        Some(reject.label()),
                        Some(reason.clone()),
                        Outcome::Rejected {
                            item_id: verdict.item_id,
                            reason,
                        },
                    )
                }
            };
            tx.prepare_cached(
                "UPDATE items SET outcome = ?2, label = ?3, reason = ?4, supplier = ?5,
                 sender = ?6, subject = ?7, message_id = ?8, decided_at = ?9 WHERE id = ?1",
            )?
            .execute(params![
                verdict.item_id,
                state,
                label,
                reason,
                verdict.supplier,
                envelope.sender,
                envelope.subject,
                envelope.message_id,
                now
            ])?;
            if state == "rejected" {
                // Promise 4: the notice is written in the same transaction as the rejection;
                // about our own notice, it is written as not to be mailed.
                tx.prepare_cached(
                    "INSERT INTO outbox (item_id, source, kind, created_at, state)
                     SELECT id, source, 'rejected', ?2, ?3 FROM items WHERE id = ?1",
                )?
                .execute(params![
                    verdict.item_id,
                    now,
                    if own_notice { "suppressed" } else { "pending" }
                ])?;
            }
            outcomes.push(outcome);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Records where each item lies now; after this the item is done.
    pub fn mark_placed(&self, places: &[(i64, Place)]) -> Result<(), Error> {
        if places.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut update = tx.prepare_cached(
                "UPDATE items SET disposed_at = ?2, archived = ?3, archived_ref = ?4 WHERE id = ?1",
            )?;
            let now = now();
            for (id, place) in places {
                update.execute(params![id, now, place.at, place.reference])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The items of a source whose place was never recorded, oldest first.
    pub fn unfinished(&self, source: &str) -> Result<Vec<Unfinished>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, location, file_name, outcome, reason, sha256, message_id, size FROM items
             WHERE source = ?1 AND disposed_at IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([source], |r| {
            let item_id: i64 = r.get(0)?;
            let outcome = match r.get::<_, Option<String>>(3)?.as_deref() {
                Some("imported") => Some(Outcome::Imported {
                    item_id,
                    documents: Vec::new(),
                }),
                Some(_) => Some(Outcome::Rejected {
                    item_id,
                    reason: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                }),
                None => None,
            };
            Ok(Unfinished {
                item_id,
                location: r.get(1)?,
                file_name: r.get(2)?,
                outcome,
                sha256: r.get(5)?,
                message_id: r.get(6)?,
                size: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stored document with `id > since`, oldest first, with its origin.
    pub fn export(&self, since: i64) -> Result<Vec<Exported>, Error> {
        self.export_page(since, -1)
    }

    /// The first `limit` stored documents with `id > since` (`-1`: all), as `export` prints them.
    pub fn export_page(&self, since: i64, limit: i64) -> Result<Vec<Exported>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.json, d.file, d.superseded_by, i.source, i.message_id, i.sha256, i.archived
             FROM documents d JOIN items i ON i.id = d.item_id WHERE d.id > ?1 ORDER BY d.id LIMIT ?2",
        )?;
        let rows = stmt.query_map([since, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json, file, superseded_by, source, message_id, sha256, archived) = row?;
            let mut doc: serde_json::Map<String, Value> =
                serde_json::from_str(&json).unwrap_or_default();
            let mut origin = serde_json::Map::new();
            origin.insert("source".into(), source.into());
            if let Some(m) = message_id {
                origin.insert("message_id".into(), format!("<{m}>").into());
            }
            origin.insert("file".into(), file.into());
            origin.insert("sha256".into(), sha256.into());
            if let Some(a) = archived {
                origin.insert("archived".into(), a.into());
            }
            let mut json = serde_json::Map::new();
            json.insert("id".into(), id.into());
            json.append(&mut doc);
            if let Some(s) = superseded_by {
                json.insert("superseded_by".into(), s.into());
            }
            json.insert("origin".into(), origin.into());
            out.push(Exported {
                id,
                json: Value::Object(json),
            });
        }
        Ok(out)
    }

    /// Counters per source that has items or a recorded state, by name.
    pub fn source_counts(&self) -> Result<Vec<SourceCounts>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT s.source,
                    COALESCE(c.archived, 0), COALESCE(c.failed, 0), COALESCE(c.handled, 0),
                    COALESCE(c.in_flight, 0),
                    st.last_ok, CASE WHEN st.last_error_at > COALESCE(st.last_ok, '') THEN st.last_error END
             FROM (SELECT source FROM items UNION SELECT source FROM source_state) s
             LEFT JOIN (SELECT source,
                               SUM(outcome = 'imported' AND disposed_at IS NOT NULL) AS archived,
                               SUM(outcome = 'rejected' AND disposed_at IS NOT NULL
                                   AND reprocessed_at IS NULL AND handled_at IS NULL) AS failed,
                               SUM(outcome = 'rejected' AND disposed_at IS NOT NULL
                                   AND reprocessed_at IS NULL AND handled_at IS NOT NULL) AS handled,
                               SUM(disposed_at IS NULL) AS in_flight
                        FROM items GROUP BY source) c ON c.source = s.source
             LEFT JOIN source_state st ON st.source = s.source
             ORDER BY s.source",
        )?;
        let rows = stmt.query_map([], |r| {
            let (archived, failed, handled, in_flight) =
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            Ok(SourceCounts {
                name: r.get(0)?,
                received: archived + failed + handled + in_flight,
                archived,
                failed,
                handled,
                in_flight,
                last_ok: r.get(5)?,
                last_error: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many documents are stored (superseded ones included).
    pub fn document_count(&self) -> Result<i64, Error> {
        Ok(self
            .lock()
            .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))?)
    }

    /// How many outbox rows wait to be sent.
    pub fn pending_notifications(&self) -> Result<i64, Error> {
        Ok(self.lock().query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// The rejected, disposed item with this id, neither reprocessed nor handled by hand.
    pub fn failed_item(&self, id: i64) -> Result<Option<FailedItem>, Error> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, source, archived, location, archived_ref FROM items
                 WHERE id = ?1 AND outcome = 'rejected' AND disposed_at IS NOT NULL
                   AND reprocessed_at IS NULL AND handled_at IS NULL",
                [id],
                |r| {
                    Ok(FailedItem {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        archived: r.get(2)?,
                        location: r.get(3)?,
                        archived_ref: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Clears a failed outcome after the item was put back into its inbox: the next arrival of
    /// the same bytes is a fresh try.
    pub fn mark_reprocessed(&self, id: i64) -> Result<(), Error> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE items SET reprocessed_at = ?2 WHERE id = ?1",
            params![id, now()],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// The store keeps the bytes of rejected items and who sent what: readable by its owner only.
/// A new file is made with mode 0600 (SQLite gives its `-wal` and `-shm` files the same mode);
/// an existing one readable by others is narrowed, with a warning.
fn keep_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(store = %path.display(), mode = format!("{:o}", mode & 0o777), "the store was readable by others; narrowing it to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn decided(
    conn: &Connection,
    id: i64,
    outcome: &str,
    reason: Option<String>,
) -> rusqlite::Result<Outcome> {
    if outcome == "imported" {
        let mut stmt =
            conn.prepare_cached("SELECT id FROM documents WHERE item_id = ?1 ORDER BY id")?;
        let documents = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        Ok(Outcome::Imported {
            item_id: id,
            documents,
        })
    } else {
        Ok(Outcome::Rejected {
            item_id: id,
            reason: reason.unwrap_or_default(),
        })
    }
}

/// The key under which a document may be stored only once: per format, supplier and number
/// (delivery notes), per supplier and orderID (cXML orders), per payloadID (PunchOut).
pub fn business_key(document: &Document) -> String {
    let supplier = document.supplier().unwrap_or("");
    match document {
        Document::DeliveryNote(n) => format!("note|{}|{supplier}|{}", n.format, n.number.trim()),
        Document::Order(o) => match (&o.order_id, &o.payload_id) {
            (Some(id), _) => format!("order|{supplier}|{}", id.trim()),
            (None, Some(payload)) => format!("punchout|{}", payload.trim()),
            (None, None) => format!("punchout|{supplier}|"),
        },
    }
}

/// Inserts an item's documents. `Ok(Err(reject))` is a duplicate: the caller rolls back.
fn insert_documents(
    conn: &Connection,
    item_id: i64,
    documents: &[Document],
    now: &str,
) -> rusqlite::Result<Result<Vec<i64>, Reject>> {
    let mut ids = Vec::with_capacity(documents.len());
    for document in documents {
        let key = business_key(document);
        let (payload_id, operation) = match document {
            Document::Order(o) => (o.payload_id.as_deref(), Some(o.operation)),
            Document::DeliveryNote(_) => (None, None),
        };
        let duplicate = |existing: i64| Reject::Duplicate {
            kind: document.kind().replace('_', " "),
            number: document.number().unwrap_or_default().to_owned(),
            supplier: document.supplier().map(str::to_owned),
            existing,
        };
        if let Some(payload) = payload_id {
            let same_payload: Option<i64> = conn
                .prepare_cached("SELECT id FROM documents WHERE payload_id = ?1 LIMIT 1")?
                .query_row([payload], |r| r.get(0))
                .optional()?;
            if let Some(existing) = same_payload {
                return Ok(Err(duplicate(existing)));
            }
        }
        let active: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM documents WHERE business_key = ?1 AND superseded_by IS NULL LIMIT 1",
            )?
            .query_row([&key], |r| r.get(0))
            .optional()?;
        let supersedes = match (active, operation) {
            (Some(existing), None | Some(Operation::New)) => return Ok(Err(duplicate(existing))),
            (Some(existing), Some(op @ (Operation::Update | Operation::Delete))) => {
                // DESIGN.md promise 8: a cXML partner's order changes only by that partner.
                if let Some(detail) = receiver::other_partner(conn, existing, item_id)? {
                    return Ok(Err(Reject::NotOriginalSender {
                        operation: format!("{op:?}").to_lowercase(),
                        number: document.number().unwrap_or_default().to_owned(),
                        supplier: document.supplier().map(str::to_owned),
                        existing,
                        detail,
                    }));
                }
                Some(existing)
            }
            (None, _) => None,
        };
        let json = serde_json::to_string(document).expect("documents always serialize");
        let date = match document {
            Document::DeliveryNote(n) => n.date,
            Document::Order(o) => o.date,
        };
        conn.prepare_cached(
            "INSERT INTO documents (item_id, kind, format, supplier, number, business_key, payload_id,
                                    operation, date, file, json, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            item_id,
            document.kind(),
            document.format(),
            document.supplier(),
            document.number().unwrap_or_default(),
            key,
            payload_id,
            operation.map(|o| format!("{o:?}").to_lowercase()),
            date.map(|d| d.to_string()),
            document.file(),
            json,
            now
        ])?;
        let id = conn.last_insert_rowid();
        if let Some(old) = supersedes {
            conn.prepare_cached("UPDATE documents SET superseded_by = ?2 WHERE id = ?1")?
                .execute(params![old, id])?;
        }
        insert_lines(conn, id, document)?;
        // The hand-off rows for the configured connectors, in this same transaction.
        handoff::queue(conn, id, document.kind(), operation, now)?;
        ids.push(id);
    }
    Ok(Ok(ids))
}

fn insert_lines(conn: &Connection, document_id: i64, document: &Document) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO lines (document_id, position, line_no, supplier_part_id, buyer_part_id, gtin,
                            description, quantity, manufacturer_part_id, unit, unit_price, line_total,
                            order_ref, order_line, serial_number, comment)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    let text = |d: Option<crate::model::Decimal>| d.map(|d| d.to_string());
    match document {
        Document::DeliveryNote(n) => {
            for (i, l) in n.lines.iter().enumerate() {
                stmt.execute(params![
                    document_id,
                    i as i64 + 1,
                    l.line_no,
                    l.supplier_part_id,
                    l.buyer_part_id,
                    l.gtin,
                    l.description,
                    text(l.quantity),
                    l.manufacturer_part_id,
                    l.unit,
                    None::<String>,
                    text(l.line_total),
                    l.order_ref,
                    l.order_line,
                    l.serial_number,
                    l.comment
                ])?;
            }
        }
        Document::Order(o) => {
            for (i, l) in o.lines.iter().enumerate() {
                stmt.execute(params![
                    document_id,
                    i as i64 + 1,
                    l.line_no,
                    l.supplier_part_id,
                    None::<String>,
                    None::<String>,
                    l.description,
                    text(l.quantity),
                    None::<String>,
                    l.unit,
                    text(l.unit_price),
                    None::<String>,
                    o.order_id,
                    None::<String>,
                    None::<String>,
                    None::<String>
                ])?;
            }
        }
    }
    Ok(())
}
