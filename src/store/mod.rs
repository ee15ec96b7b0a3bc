//! Step 5 of the flow: the SQLite ledger.
//!
//! Owns every write: the item rows (key = sha256 of the bytes, attempts, outcome, where the
//! item lies), the documents with their lines, and the outbox rows for notifications, the last
//! written in the same transaction as the rejection. `synchronous=FULL` and `BEGIN IMMEDIATE`
//! make a commit durable before the caller moves the item (DESIGN.md, promise 1).
//!
//! Blocking by design; `Store::call` runs one call on the blocking pool for async callers.

pub mod copy;
mod db;
pub mod handoff;
pub mod lease;
pub mod ledger;
mod lines;
mod oauth;
pub mod outbox;
pub(crate) mod postgres;
pub mod receiver;
mod requests;
mod schema;
mod source_state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use db::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::auth::{self, Sender};
use crate::error::Reject;
use crate::extract::Envelope;
use crate::item::Item;
use crate::model::{Document, Operation};
pub use ledger::{DocumentQuery, ItemFilter, ItemState, LedgerItem};
pub use oauth::OAuthGrant;
pub use postgres::Target;
pub use requests::Request;
pub use source_state::Stray;

/// An item whose parse was started this many times without an outcome is set aside.
pub const MAX_ATTEMPTS: u32 = 3;
/// A message left in its inbox because DNS failed (its supplier requires authentication) is
/// tried again after this long, the wait doubling with every further failure: a lost packet
/// or a resolver restart is over within seconds.
pub const RETRY_START: Duration = Duration::from_secs(5);
/// The longest wait between two tries of such a message: an outage of hours costs one DNS
/// round per message this often.
pub const RETRY_CAP: Duration = Duration::from_secs(10 * 60);
/// `due_by` for a caller that tries every waiting message now (`sync`, `import`).
pub const DUE_NOW: &str = "9999-12-31T23:59:59.999Z";
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Switches the store to write-ahead logging. SQLite answers busy at once, without its busy
/// handler, when another process opens the same new store at the same moment (a `status`
/// beside a starting daemon): try again until the busy timeout is spent.
fn use_wal(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let give_up = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            done => return done,
        }
    }
}

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
    /// PostgreSQL refused or failed, or could not be reached.
    #[error("store: {0}")]
    Postgres(String),
    /// The source's lease moved on to another owner (`lease::SourceLease`): this process no
    /// longer owns it, and nothing was written.
    #[error(
        "store: source {0} is no longer this daemon's (another took it over); nothing was written"
    )]
    Fenced(String),
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
    /// Left in its inbox before (DNS failed, see `Store::defer`) and not due for another try
    /// yet: it stays, untouched, and no attempt is counted.
    Waiting {
        /// The ledger row.
        item_id: i64,
        /// Why it waits.
        reason: String,
        /// When it is due (RFC 3339, UTC).
        until: String,
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
    /// Not decided: the item stays in its inbox and is tried again from `until` on (its
    /// sender could not be checked because DNS failed, and its supplier requires
    /// authentication). Committed as such, so that it is neither lost nor counted as a crash.
    Deferred {
        /// The ledger row.
        item_id: i64,
        /// Why it stays.
        reason: String,
        /// When it is tried again (RFC 3339, UTC).
        until: String,
    },
}

impl Outcome {
    /// The ledger row.
    pub fn item_id(&self) -> i64 {
        match self {
            Outcome::Imported { item_id, .. }
            | Outcome::Rejected { item_id, .. }
            | Outcome::Deferred { item_id, .. } => *item_id,
        }
    }
}

/// A message as `sender_checks` looks it up: its key and where it lies.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The sha256 of its bytes.
    pub sha256: String,
    /// Its source.
    pub source: String,
    /// Where it lies in its source.
    pub location: String,
}

/// What the ledger knows about the sender of a message before it is handled (`sender_checks`).
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// The verdict taken when these bytes were first seen in this source: a reprocess uses it
    /// (DKIM keys rotate; a new check could fail what passed). A `temperror` is never kept.
    Stored(auth::Verdict),
    /// Left in its inbox before and not due for another try yet: no DNS now.
    Waiting,
    /// Never checked: check it now.
    Unknown,
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
    /// The verdict about a message's sender, stored with the item (`None` for a file).
    pub sender_auth: Option<auth::Verdict>,
    /// Who sent it: stored with its documents, compared for duplicates and cXML updates.
    pub sender: Sender,
}

/// A message that stays in its inbox, not decided: DNS failed, and its supplier requires
/// authentication (`auth::Decision::RetryLater`).
#[derive(Debug)]
pub struct Held {
    /// The ledger row from `begin`.
    pub item_id: i64,
    /// The message's envelope.
    pub envelope: Envelope,
    /// The routed supplier.
    pub supplier: Option<String>,
    /// The `temperror` verdict.
    pub sender_auth: Option<auth::Verdict>,
    /// Why it stays.
    pub reason: String,
}

/// How the messages of one source (or supplier) fared, for `status` and `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AuthCounts {
    /// Messages whose sender passed.
    pub pass: i64,
    /// Messages whose sender failed.
    pub fail: i64,
    /// Messages with nothing to judge by.
    pub none: i64,
    /// Messages checked while DNS failed.
    pub temperror: i64,
    /// Messages left in their inbox until DNS answers.
    pub waiting: i64,
    /// The domains that passed, with how many messages each, most first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passed_for: Vec<(String, i64)>,
}

impl AuthCounts {
    /// Messages with a verdict.
    pub fn checked(&self) -> i64 {
        self.pass + self.fail + self.none + self.temperror
    }
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

/// What a write for a source must find in `source_leases`: that the source is still this
/// owner's, at the epoch it took it with (`lease::SourceLease::fence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The source.
    pub source: String,
    /// The owner: host and process id.
    pub owner: String,
    /// The epoch it took the source at.
    pub epoch: i64,
}

/// Where a store lives: a SQLite file (the default), or a PostgreSQL database that several
/// daemons share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A SQLite file.
    File(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres(Target),
}

impl Location {
    /// Whether there is a store there yet: a SQLite file may be missing, a PostgreSQL
    /// database is taken to exist (opening it says otherwise).
    pub fn exists(&self) -> bool {
        match self {
            Location::File(p) => p.exists(),
            Location::Postgres(_) => true,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Postgres(t) => f.write_str(&t.shown()),
        }
    }
}

/// The PostgreSQL server of the tests (`EINGANG_TEST_STORE=postgres`), shared with the
/// integration tests; not every part of it is used here.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/support/postgres.rs"]
pub(crate) mod test_postgres;

/// Where a unit test keeps its store: a SQLite file in `dir`, or with
/// `EINGANG_TEST_STORE=postgres` a fresh database on the tests' PostgreSQL server.
#[cfg(test)]
pub(crate) fn test_location(dir: &Path) -> Location {
    match test_postgres::store_url("unit") {
        Some(url) => {
            Location::Postgres(Target::new(&url, None, None).expect("the test server's URL"))
        }
        None => Location::File(dir.join("eingang.db")),
    }
}

/// The store. One connection; `&self` methods lock it for one call.
pub struct Store {
    conn: Mutex<Connection>,
    /// The start of every Message-ID this store gives its notices (`eingang.<store id>.`).
    notice_ids: String,
    /// Items whose parse began in this process and is not committed yet: a row without an
    /// outcome that is not in here was left by a process that died.
    started: Mutex<HashSet<i64>>,
    /// The sources this process works on a shared store, by name: the lease while it owns
    /// one, `None` while another daemon does. The writes for a source not in here are not
    /// fenced: every source of a store of one daemon, and what no source owns (a command's).
    leases: Mutex<HashMap<String, Option<Arc<lease::SourceLease>>>>,
    /// Where a shared store lives, for the sessions of its source leases.
    shared: Option<Target>,
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
        let sqlite = rusqlite::Connection::open(path)?;
        sqlite.busy_timeout(BUSY_TIMEOUT)?;
        use_wal(&sqlite)?;
        sqlite.pragma_update(None, "foreign_keys", "ON")?;
        let conn = Connection::sqlite(sqlite);
        // An item is moved right after its commit, so the commit must survive a power loss.
        conn.set_durable(true)?;
        Store::over(conn)
    }

    /// Opens the store at `location`: a SQLite file, or a PostgreSQL database (migrated to
    /// the same schema).
    pub fn open_at(location: &Location) -> Result<Store, Error> {
        match location {
            Location::File(path) => Store::open(path),
            Location::Postgres(target) => {
                let mut store =
                    Store::over(Connection::postgres(postgres::Session::open(target)?))?;
                store.shared = Some(target.clone());
                Ok(store)
            }
        }
    }

    /// The database of a store that several daemons may share: a PostgreSQL one.
    pub fn shared(&self) -> Option<&Target> {
        self.shared.as_ref()
    }

    fn over(conn: Connection) -> Result<Store, Error> {
        schema::migrate(&conn)?;
        let id: String = conn.query_row("SELECT id FROM store_identity", [], |r| r.get(0))?;
        Ok(Store {
            conn: Mutex::new(conn),
            notice_ids: format!("eingang.{id}."),
            started: Mutex::new(HashSet::new()),
            leases: Mutex::new(HashMap::new()),
            shared: None,
        })
    }

    /// Writes a consistent copy of the store to `to` (a new file, mode 0600) while others keep
    /// working in it: SQLite's online backup, page by page, started over when a writer changes
    /// a page already copied. Returns the number of documents in the copy.
    pub fn backup(&self, to: &Path) -> Result<i64, Error> {
        let store = self.lock();
        let Some(conn) = store.as_sqlite() else {
            return Err(Error::Postgres(
                "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump)".to_owned(),
            ));
        };
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
        let mut copy = rusqlite::Connection::open(to)?;
        rusqlite::backup::Backup::new(conn, &mut copy)?.run_to_completion(
            256,
            Duration::from_millis(20),
            None,
        )?;
        // The copy is checked without holding up the store.
        drop(store);
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

    /// Fences every later write for the lease's source (`begin`, `commit`, the moves'
    /// records, the pass's state): it is made only while `source_leases` still names this
    /// owner at the lease's epoch, and refused (`Error::Fenced`) once another daemon took the
    /// source over. Replaces the source's earlier lease.
    pub fn hold(&self, lease: lease::SourceLease) -> Arc<lease::SourceLease> {
        let lease = Arc::new(lease);
        self.leases_map()
            .insert(lease.fence().source.clone(), Some(lease.clone()));
        lease
    }

    /// Fences `source` while this process does not own it: its writes are refused. Drops the
    /// lease, which frees the source for another daemon.
    pub fn release(&self, source: &str) {
        self.leases_map().insert(source.to_owned(), None);
    }

    /// Whether this process may move the items of `source` now: the source is not fenced, or
    /// its lease is still held (asked of the database).
    pub fn owns(&self, source: &str) -> bool {
        let lease = match self.leases_map().get(source) {
            None => return true,
            Some(None) => return false,
            Some(Some(lease)) => lease.clone(),
        };
        lease.held()
    }

    /// What tells that the lease on `source` was lost, while this process holds one.
    pub fn lease_lost(&self, source: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.leases_map()
            .get(source)
            .and_then(|l| l.as_ref().map(|l| l.lost()))
    }

    /// How many sources this process fences (all it may work) and how many of them it holds
    /// a live lease on.
    pub fn lease_counts(&self) -> (usize, usize) {
        let leases = self.leases_map();
        let held = leases
            .values()
            .filter(|l| l.as_ref().is_some_and(|l| l.alive()))
            .count();
        (leases.len(), held)
    }

    /// Whether this process holds a live lease on `source` (without asking the database).
    pub fn holds(&self, source: &str) -> bool {
        self.leases_map()
            .get(source)
            .is_some_and(|l| l.as_ref().is_some_and(|l| l.alive()))
    }

    /// Whether `source` is fenced here and this process does not hold its lease: another
    /// daemon (or none) works it.
    pub fn elsewhere(&self, source: &str) -> bool {
        self.leases_map().contains_key(source) && !self.holds(source)
    }

    /// The fenced sources this process does not own now (other daemons work them), `None`
    /// when it fences none (it works them all).
    pub fn elsewhere_sources(&self) -> Option<Vec<String>> {
        let leases = self.leases_map();
        if leases.is_empty() {
            return None;
        }
        let mut elsewhere: Vec<String> = leases
            .iter()
            .filter(|(_, lease)| !lease.as_ref().is_some_and(|l| l.alive()))
            .map(|(source, _)| source.clone())
            .collect();
        elsewhere.sort();
        Some(elsewhere)
    }

    fn leases_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<lease::SourceLease>>>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks, in the write transaction `tx`, that this process still owns `source` where it
    /// fences its writes. On PostgreSQL the lease row is read `FOR SHARE`: a takeover's epoch
    /// bump waits until this transaction ends, so no commit lands after it.
    fn check_fence(&self, tx: &Connection, source: &str) -> Result<(), Error> {
        let fence = match self.leases_map().get(source) {
            None => return Ok(()),
            Some(Some(lease)) if lease.alive() => lease.fence().clone(),
            Some(_) => return Err(Error::Fenced(source.to_owned())),
        };
        let sql = if tx.is_postgres() {
            "SELECT owner, epoch FROM source_leases WHERE source = ?1 FOR SHARE"
        } else {
            "SELECT owner, epoch FROM source_leases WHERE source = ?1"
        };
        let found: Option<(String, i64)> = tx
            .query_row(sql, [source], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match found {
            Some((owner, epoch)) if owner == fence.owner && epoch == fence.epoch => Ok(()),
            _ => Err(Error::Fenced(source.to_owned())),
        }
    }

    /// Refuses a write for `source` that this process knows it may not make (another daemon
    /// owns the source, or its lease was lost), without asking the database: for what a pass
    /// records about its source besides items (its state, notes, strays).
    fn gate(&self, source: &str) -> Result<(), Error> {
        match self.leases_map().get(source) {
            None => Ok(()),
            Some(Some(lease)) if lease.alive() => Ok(()),
            Some(_) => Err(Error::Fenced(source.to_owned())),
        }
    }

    /// `check_fence` for the sources of the items `ids`, where any source is fenced.
    fn check_fences_of(
        &self,
        tx: &Connection,
        ids: impl Iterator<Item = i64>,
    ) -> Result<(), Error> {
        if self.leases_map().is_empty() {
            return Ok(());
        }
        let mut sources = HashSet::new();
        for id in ids {
            sources.insert(
                tx.query_row("SELECT source FROM items WHERE id = ?1", [id], |r| {
                    r.get::<_, String>(0)
                })?,
            );
        }
        for source in &sources {
            self.check_fence(tx, source)?;
        }
        Ok(())
    }

    /// What the ledger knows about the sender of each item, before `begin` and before any DNS
    /// look-up: the verdict stored when the same bytes came from the same source before (a
    /// reprocess), or that the message waits in its inbox until after `due_by`, or nothing.
    /// Reads only.
    pub fn sender_checks(&self, items: &[Probe], due_by: &str) -> Result<Vec<Known>, Error> {
        let conn = self.lock();
        let mut latest = conn.prepare_cached(
            "SELECT outcome, deferred_until, location FROM items
             WHERE sha256 = ?1 ORDER BY id DESC LIMIT 1",
        )?;
        let mut stored = conn.prepare_cached(STORED_VERDICT)?;
        let mut known = Vec::with_capacity(items.len());
        for item in items {
            let key = item.sha256.as_str();
            let row = latest
                .query_row([key], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .optional()?;
            if let Some((None, Some(until), location)) = row
                && location == item.location
                && until.as_str() > due_by
            {
                known.push(Known::Waiting);
                continue;
            }
            let verdict = stored
                .query_row(params![key, item.source], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|json| serde_json::from_str::<auth::Verdict>(&json).ok());
            known.push(verdict.map_or(Known::Unknown, Known::Stored));
        }
        Ok(known)
    }

    /// Looks up every item's bytes in the ledger and records the new arrivals, in one
    /// transaction, before anything is parsed. A message left in its inbox (`defer`) is taken
    /// up again once `due_by` has reached its time, as a fresh arrival on its own row; before
    /// that it is `Prior::Waiting`.
    pub fn begin(&self, items: &[&Item], due_by: &str) -> Result<Vec<Prior>, Error> {
        let conn = self.lock();
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for source in items
            .iter()
            .map(|i| i.origin.source.as_str())
            .collect::<HashSet<_>>()
        {
            self.check_fence(&tx, source)?;
        }
        let mut priors = Vec::with_capacity(items.len());
        {
            let mut latest = tx.prepare_cached(
                "SELECT id, attempts, outcome, disposed_at IS NOT NULL, reason, location,
                        deferred_until
                 FROM items WHERE sha256 = ?1 ORDER BY id DESC LIMIT 1",
            )?;
            // A waiting message taken up again is a fresh try: no crash attempt counted
            // against it, and no longer "waiting", so that a crash while it is parsed counts.
            let mut resume = tx.prepare_cached(
                "UPDATE items SET deferred_until = NULL, attempts = 1 WHERE id = ?1",
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
                            r.get::<_, Option<String>>(6)?,
                        ))
                    })
                    .optional()?;
                let insert_new = || -> Result<i64, Error> {
                    tx.insert(
                        "INSERT INTO items (sha256, source, kind, location, file_name, size,
                                            received_at, attempts)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
                        params![
                            item.key().as_str(),
                            item.origin.source,
                            item.kind.as_str(),
                            item.origin.location,
                            item.origin.file_name,
                            item.size() as i64,
                            now,
                        ],
                    )
                };
                let here = |location: &str| location == item.origin.location;
                let prior = match row {
                    None => Prior::Fresh {
                        item_id: insert_new()?,
                    },
                    // The same bytes are being parsed right now for another arrival (another
                    // source, or a second copy in this batch): this one is an arrival of its own;
                    // the business key decides between them at commit.
                    Some((id, _, None, _, _, _, _)) if started.contains(&id) => Prior::Fresh {
                        item_id: insert_new()?,
                    },
                    Some((id, _, None, _, reason, location, Some(until))) if here(&location) => {
                        if until.as_str() > due_by {
                            Prior::Waiting {
                                item_id: id,
                                reason: reason.unwrap_or_default(),
                                until,
                            }
                        } else {
                            resume.execute([id])?;
                            Prior::Fresh { item_id: id }
                        }
                    }
                    // Waiting in another place (the same bytes in another inbox): this one is
                    // an arrival of its own.
                    Some((_, _, None, _, _, _, Some(_))) => Prior::Fresh {
                        item_id: insert_new()?,
                    },
                    Some((id, attempts, None, _, _, _, _)) if attempts >= MAX_ATTEMPTS => {
                        Prior::Poison {
                            item_id: id,
                            attempts,
                        }
                    }
                    Some((id, _, None, _, _, _, _)) => Prior::Retry { item_id: id },
                    Some((id, _, Some(outcome), false, reason, location, _)) if here(&location) => {
                        Prior::Decided(decided(&tx, id, &outcome, reason)?)
                    }
                    Some((id, _, Some(outcome), _, _, _, _)) if outcome == "imported" => {
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
    ///
    /// Committed without waiting for the disk: a process that dies has written it to the
    /// file already, and only a power loss could forget it (which costs one more try). The
    /// wait would only widen the window in which a process killed from outside (a restart,
    /// an OOM kill of a neighbour) is taken for an item that crashed it.
    pub fn count_attempt(&self, item_id: i64) -> Result<(), Error> {
        let conn = self.lock();
        conn.set_durable(false)?;
        let counted = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE items SET attempts = attempts + 1 WHERE id = ?1",
                [item_id],
            )?;
            tx.commit()
        })();
        conn.set_durable(true)?;
        counted
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
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.check_fences_of(&tx, verdicts.iter().map(|v| v.item_id))?;
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
                Ok(mut documents) => {
                    let sp = tx.savepoint()?;
                    let arrival = Arrival {
                        sender: &verdict.sender,
                        from: verdict.envelope.sender.as_deref(),
                        verdict: verdict.sender_auth.as_ref(),
                    };
                    match insert_documents(&sp, verdict.item_id, &mut documents, &now, &arrival)? {
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
                    // The verdict's parts too, for notices in the admins' language.
                    tx.prepare_cached("UPDATE items SET reject = ?2 WHERE id = ?1")?
                        .execute(params![
                            verdict.item_id,
                            serde_json::to_string(&reject).expect("a rejection serializes")
                        ])?;
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
                 sender = ?6, subject = ?7, message_id = ?8, decided_at = ?9, sender_auth = ?10,
                 deferred_until = NULL WHERE id = ?1",
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
                now,
                verdict.sender_auth.as_ref().map(verdict_json),
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

    /// Leaves messages in their inbox, not decided (`auth::Decision::RetryLater`): each row
    /// records its `temperror` verdict, why it waits and until when, its envelope for `status`,
    /// and one more deferral, which doubles its wait (`RETRY_START` up to `RETRY_CAP`). No
    /// outcome, no notice, no crash attempt: `begin` takes it up again when it is due.
    pub fn defer(&self, held: Vec<Held>) -> Result<Vec<Outcome>, Error> {
        {
            let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
            for h in &held {
                started.remove(&h.item_id);
            }
        }
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.check_fences_of(&tx, held.iter().map(|h| h.item_id))?;
        let mut outcomes = Vec::with_capacity(held.len());
        {
            let mut deferrals = tx.prepare_cached("SELECT deferrals FROM items WHERE id = ?1")?;
            let mut update = tx.prepare_cached(
                "UPDATE items SET deferred_until = ?2, deferrals = ?3, reason = ?4, supplier = ?5,
                 sender = ?6, subject = ?7, message_id = ?8, sender_auth = ?9 WHERE id = ?1",
            )?;
            let now = chrono::Utc::now();
            for h in held {
                let before: u32 = deferrals.query_row([h.item_id], |r| r.get(0))?;
                let count = before.saturating_add(1);
                let wait = retry_wait(count);
                let until = outbox::stamp(
                    now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::zero()),
                );
                update.execute(params![
                    h.item_id,
                    until,
                    count,
                    h.reason,
                    h.supplier,
                    h.envelope.sender,
                    h.envelope.subject,
                    h.envelope.message_id,
                    h.sender_auth.as_ref().map(verdict_json),
                ])?;
                outcomes.push(Outcome::Deferred {
                    item_id: h.item_id,
                    reason: h.reason,
                    until,
                });
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Records where each item lies now; after this the item is done.
    pub fn mark_placed(&self, places: &[(i64, Place)]) -> Result<(), Error> {
        if places.is_empty() {
            return Ok(());
        }
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.check_fences_of(&tx, places.iter().map(|(id, _)| *id))?;
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
        self.export_page(since, i64::MAX)
    }

    /// The first `limit` stored documents with `id > since` (`i64::MAX`: all), as `export` prints them.
    pub fn export_page(&self, since: i64, limit: i64) -> Result<Vec<Exported>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.json, d.file, d.superseded_by, i.source, i.message_id, i.sha256, i.archived,
                    i.sender_auth, d.kind, d.lines_apart
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
                r.get::<_, Option<String>>(8)?,
                r.get::<_, String>(9)?,
                r.get::<_, bool>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                json,
                file,
                superseded_by,
                source,
                message_id,
                sha256,
                archived,
                sender_auth,
                kind,
                lines_apart,
            ) = row?;
            let mut doc: serde_json::Map<String, Value> =
                serde_json::from_str(&json).unwrap_or_default();
            lines::complete(&conn, id, &kind, lines_apart, &mut doc)?;
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
            let verdict = sender_auth.and_then(|j| serde_json::from_str::<auth::Verdict>(&j).ok());
            export_sender_auth(&mut origin, verdict.as_ref());
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
                               SUM(CASE WHEN outcome = 'imported' AND disposed_at IS NOT NULL
                                        THEN 1 ELSE 0 END) AS archived,
                               SUM(CASE WHEN outcome = 'rejected' AND disposed_at IS NOT NULL
                                             AND reprocessed_at IS NULL AND handled_at IS NULL
                                        THEN 1 ELSE 0 END) AS failed,
                               SUM(CASE WHEN outcome = 'rejected' AND disposed_at IS NOT NULL
                                             AND reprocessed_at IS NULL AND handled_at IS NOT NULL
                                        THEN 1 ELSE 0 END) AS handled,
                               SUM(CASE WHEN disposed_at IS NULL THEN 1 ELSE 0 END) AS in_flight
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

    /// How the messages of each source fared with sender authenticity, by source name: what
    /// `status` shows.
    pub fn auth_by_source(&self) -> Result<BTreeMap<String, AuthCounts>, Error> {
        self.auth_counts("source", None)
    }

    /// How the messages routed to each supplier fared since `since` (RFC 3339), by supplier
    /// name: what `check` shows, so that an admin can tell whether `authenticate = "required"`
    /// would hold.
    pub fn auth_by_supplier(&self, since: &str) -> Result<BTreeMap<String, AuthCounts>, Error> {
        self.auth_counts("supplier", Some(since))
    }

    /// Verdict counts per `column` (`source` or `supplier`); an item put back by `reprocess`
    /// counts once, as its newest arrival.
    fn auth_counts(
        &self,
        column: &'static str,
        since: Option<&str>,
    ) -> Result<BTreeMap<String, AuthCounts>, Error> {
        let conn = self.lock();
        let since = since.unwrap_or("");
        let mut out: BTreeMap<String, AuthCounts> = BTreeMap::new();
        let mut stmt = conn.prepare(&format!(
            "SELECT {column}, json_extract(sender_auth, '$.status'),
                    outcome IS NULL AND deferred_until IS NOT NULL, COUNT(*)
             FROM items
             WHERE sender_auth IS NOT NULL AND {column} IS NOT NULL AND reprocessed_at IS NULL
               AND received_at >= ?1
             GROUP BY 1, 2, 3"
        ))?;
        let rows = stmt.query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (name, status, waiting, n) = row?;
            let counts = out.entry(name).or_default();
            if waiting {
                counts.waiting += n;
                continue;
            }
            match status.as_deref() {
                Some("pass") => counts.pass += n,
                Some("fail") => counts.fail += n,
                Some("temperror") => counts.temperror += n,
                _ => counts.none += n,
            }
        }
        let mut stmt = conn.prepare(&format!(
            "SELECT {column}, COALESCE(json_extract(sender_auth, '$.aligned_domain'),
                                       json_extract(sender_auth, '$.from_domain'), ''), COUNT(*)
             FROM items
             WHERE json_extract(sender_auth, '$.status') = 'pass' AND {column} IS NOT NULL
               AND reprocessed_at IS NULL AND received_at >= ?1
             GROUP BY 1, 2 ORDER BY 3 DESC, 2"
        ))?;
        let rows = stmt.query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (name, domain, n) = row?;
            out.entry(name).or_default().passed_for.push((domain, n));
        }
        Ok(out)
    }

    /// How many documents are stored (superseded ones included).
    pub fn document_count(&self) -> Result<i64, Error> {
        self.lock()
            .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))
    }

    /// How many outbox rows wait to be sent.
    pub fn pending_notifications(&self) -> Result<i64, Error> {
        self.lock().query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )
    }

    /// The rejected, disposed item with this id, neither reprocessed nor handled by hand.
    pub fn failed_item(&self, id: i64) -> Result<Option<FailedItem>, Error> {
        self.lock()
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
            .optional()
    }

    /// Clears a failed outcome after the item was put back into its inbox: the next arrival of
    /// the same bytes is a fresh try.
    pub fn mark_reprocessed(&self, id: i64) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.check_fences_of(&tx, std::iter::once(id))?;
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

/// The verdict stored when the same bytes came from the same source before. `+source`: found
/// by the bytes' key, never through the source's index, which would have SQLite read every
/// item of a busy source for each message (an import of 2000 messages took 2.3 s instead of 1.6 s).
const STORED_VERDICT: &str = "SELECT sender_auth FROM items
     WHERE sha256 = ?1 AND +source = ?2 AND sender_auth IS NOT NULL
       AND json_extract(sender_auth, '$.status') != 'temperror'
     ORDER BY id DESC LIMIT 1";

/// The time as the store writes it: what `begin` and `sender_checks` compare a waiting
/// message's time with.
pub fn due_now() -> String {
    now()
}

/// The wait before the next try of a message left in its inbox for the `count`th time.
pub fn retry_wait(count: u32) -> Duration {
    RETRY_START
        .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(16)))
        .min(RETRY_CAP)
}

/// `origin.sender_auth` (CONTRACT.md: `pass`, `fail` or `none`), `auth_domain` on a pass, and
/// `auth_verdict`, the stored verdict word. `temperror` (DNS did not answer; accepted under
/// `if-published`) is not a judgement about the sender: it is exported as `none`, nothing to
/// judge by, with `auth_verdict: "temperror"` saying why. A file has no sender to check:
/// `none`, without `auth_verdict`.
fn export_sender_auth(
    origin: &mut serde_json::Map<String, Value>,
    verdict: Option<&auth::Verdict>,
) {
    let word = match verdict.map(|v| v.status) {
        Some(auth::Status::Pass) => "pass",
        Some(auth::Status::Fail) => "fail",
        Some(auth::Status::None | auth::Status::TempError) | None => "none",
    };
    origin.insert("sender_auth".into(), word.into());
    if let Some(v) = verdict {
        if v.status == auth::Status::Pass
            && let Some(domain) = v.aligned_domain.as_deref().or(v.from_domain.as_deref())
        {
            origin.insert("auth_domain".into(), domain.into());
        }
        origin.insert("auth_verdict".into(), v.status.as_str().into());
    }
}

fn verdict_json(verdict: &auth::Verdict) -> String {
    serde_json::to_string(verdict).expect("a verdict always serializes")
}

fn decided(
    conn: &Connection,
    id: i64,
    outcome: &str,
    reason: Option<String>,
) -> Result<Outcome, Error> {
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

/// The stored, not superseded document a new one clashes with. A table document is known by
/// its business key (its supplier is the format that read it). A standard one (openTRANS,
/// UBL, cXML) is the same document when format and number agree and the suppliers do not
/// differ: the same note by mail from a listed sender (supplier known) and through a drop
/// folder (supplier unknown, a binding is never stamped on standard XML) is one note.
fn active_document(
    conn: &Connection,
    document: &Document,
    key: &str,
) -> Result<Option<i64>, Error> {
    let standard = match document {
        Document::DeliveryNote(n) => !n.format.starts_with("table:"),
        Document::Order(o) => o.order_id.is_some(),
    };
    if !standard {
        return conn
            .prepare_cached(
                "SELECT id FROM documents WHERE business_key = ?1 AND superseded_by IS NULL LIMIT 1",
            )?
            .query_row([key], |r| r.get(0))
            .optional();
    }
    conn.prepare_cached(
        "SELECT id FROM documents
         WHERE kind = ?1 AND number = ?2 AND superseded_by IS NULL
           AND (kind = 'order' OR format = ?3)
           AND (supplier IS NOT DISTINCT FROM ?4 OR supplier IS NULL OR ?4 IS NULL)
         ORDER BY id LIMIT 1",
    )?
    .query_row(
        params![
            document.kind(),
            document.number().unwrap_or_default().trim(),
            document.format(),
            document.supplier()
        ],
        |r| r.get(0),
    )
    .optional()
}

/// The sender of the item whose documents are being stored, as far as a conflict needs it.
struct Arrival<'a> {
    sender: &'a Sender,
    /// The From address of a message.
    from: Option<&'a str>,
    verdict: Option<&'a auth::Verdict>,
}

/// Who sent a stored document, read back for a conflict or a cXML update.
struct FirstSender {
    sender: Sender,
    account: String,
}

/// How a sender is told in a conflict: `from a@b (authenticated for b)`, `from a@b (not
/// authenticated: fail)`, `the file x.xml of the source drop`.
fn account(
    sender: &Sender,
    from: Option<&str>,
    status: Option<auth::Status>,
    file: &str,
) -> String {
    match sender {
        Sender::Source(source) => format!("the file {file} of the source {source}"),
        Sender::Domain(_) => format!("from {} ({sender})", from.unwrap_or("(no From address)")),
        Sender::Unauthenticated => match status {
            Some(status) => format!(
                "from {} (not authenticated: {status})",
                from.unwrap_or("(no From address)")
            ),
            None => format!(
                "from {} (not authenticated)",
                from.unwrap_or("(no From address)")
            ),
        },
    }
}

fn first_sender(conn: &Connection, document: i64) -> Result<FirstSender, Error> {
    conn.prepare_cached(
        "SELECT d.sender_identity, d.item_id, i.sender, i.sender_auth, i.received_at, i.source,
                COALESCE(i.file_name, i.location)
         FROM documents d JOIN items i ON i.id = d.item_id WHERE d.id = ?1",
    )?
    .query_row([document], |r| {
        let sender = Sender::from_stored(r.get::<_, Option<String>>(0)?.as_deref());
        let item: i64 = r.get(1)?;
        let from: Option<String> = r.get(2)?;
        let status = r
            .get::<_, Option<String>>(3)?
            .and_then(|json| serde_json::from_str::<auth::Verdict>(&json).ok())
            .map(|v| v.status);
        let received: String = r.get(4)?;
        let source: String = r.get(5)?;
        let file: String = r.get(6)?;
        let who = account(&sender, from.as_deref(), status, &file);
        Ok(FirstSender {
            sender,
            account: format!("{who}, item {item} of the source {source}, received {received}"),
        })
    })
}

/// Whether this arrival is a reprocess of an item rejected as a conflict: a person looked at
/// both and asks for this one. Its documents then take the place of the stored ones, if its
/// sender is known.
fn is_replacing(conn: &Connection, item_id: i64) -> Result<bool, Error> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM items earlier JOIN items this ON this.sha256 = earlier.sha256
                        WHERE this.id = ?1 AND earlier.id < this.id AND earlier.label = 'conflict'
                          AND earlier.reprocessed_at IS NOT NULL)",
    )?
    .query_row([item_id], |r| r.get(0))
}

/// Inserts an item's documents. `Ok(Err(reject))` is a duplicate, a conflict or an update
/// from another sender: the caller rolls back.
///
/// A stored business key (or payloadID) again is a duplicate when the same known sender sent
/// both (nothing to do); from another sender, or where either is not authenticated, it is a
/// conflict, which a person settles: reprocessing the second, if its sender is known, puts it
/// in the place of the first. A cXML update or delete supersedes the order only when it comes
/// from the order's own known sender.
fn insert_documents(
    conn: &Connection,
    item_id: i64,
    documents: &mut [Document],
    now: &str,
    arrival: &Arrival<'_>,
) -> Result<Result<Vec<i64>, Reject>, Error> {
    let mut ids = Vec::with_capacity(documents.len());
    let replacing = arrival.sender.is_known() && is_replacing(conn, item_id)?;
    let this = account(
        arrival.sender,
        arrival.from,
        arrival.verdict.map(|v| v.status),
        documents.first().map(Document::file).unwrap_or_default(),
    );
    for document in documents.iter_mut() {
        let json = head_json(document);
        let document = &*document;
        let key = business_key(document);
        let (payload_id, operation) = match document {
            Document::Order(o) => (o.payload_id.as_deref(), Some(o.operation)),
            Document::DeliveryNote(_) => (None, None),
        };
        let kind = document.kind().replace('_', " ");
        let number = document.number().unwrap_or_default().to_owned();
        let supplier = document.supplier().map(str::to_owned);
        // The second of two documents with one key: a duplicate, or a conflict (`None` when
        // this one is to replace the first).
        let clash = |existing: i64| -> Result<Option<Reject>, Error> {
            let first = first_sender(conn, existing)?;
            if arrival.sender.same_as(&first.sender) {
                return Ok(Some(Reject::Duplicate {
                    kind: kind.clone(),
                    number: number.clone(),
                    supplier: supplier.clone(),
                    existing,
                }));
            }
            if replacing {
                return Ok(None);
            }
            let how = if arrival.sender.is_known() {
                format!(
                    "if document {existing} is the false one, reprocessing this item \
                     ({item_id}) stores this one in its place; document {existing} is kept, \
                     marked as superseded"
                )
            } else {
                "this one cannot replace it: its sender is not authenticated".to_owned()
            };
            Ok(Some(Reject::Conflict {
                kind: kind.clone(),
                number: number.clone(),
                supplier: supplier.clone(),
                existing,
                detail: format!(
                    "document {existing} was stored first, {}; this one is {this}; {how}",
                    first.account
                ),
            }))
        };
        if let Some(payload) = payload_id {
            let same_payload: Option<i64> = conn
                .prepare_cached(
                    "SELECT id FROM documents WHERE payload_id = ?1
                     ORDER BY superseded_by IS NOT NULL, id DESC LIMIT 1",
                )?
                .query_row([payload], |r| r.get(0))
                .optional()?;
            if let Some(existing) = same_payload
                && let Some(reject) = clash(existing)?
            {
                return Ok(Err(reject));
            }
        }
        let active = active_document(conn, document, &key)?;
        let supersedes = match (active, operation) {
            (Some(existing), None | Some(Operation::New)) => match clash(existing)? {
                Some(reject) => return Ok(Err(reject)),
                None => Some(existing),
            },
            (Some(existing), Some(op @ (Operation::Update | Operation::Delete))) => {
                let first = first_sender(conn, existing)?;
                if !arrival.sender.same_as(&first.sender) {
                    return Ok(Err(Reject::NotOriginalSender {
                        operation: format!("{op:?}").to_lowercase(),
                        number,
                        supplier,
                        existing,
                        detail: format!(
                            "the order (document {existing}) came {}; this one is {this}",
                            first.account.strip_prefix("from ").map_or_else(
                                || format!("as {}", first.account),
                                |rest| format!("from {rest}")
                            )
                        ),
                    }));
                }
                Some(existing)
            }
            (None, _) => None,
        };
        let date = match document {
            Document::DeliveryNote(n) => n.date,
            Document::Order(o) => o.date,
        };
        let id = conn.insert(
            "INSERT INTO documents (item_id, kind, format, supplier, number, business_key, payload_id,
                                    operation, date, file, json, stored_at, sender_identity,
                                    lines_apart)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1)",
            params![
            item_id,
            document.kind(),
            document.format(),
            document.supplier(),
            document.number().unwrap_or_default().trim(),
            key,
            payload_id,
            operation.map(|o| format!("{o:?}").to_lowercase()),
            date.map(|d| d.to_string()),
            document.file(),
            json,
            now,
            arrival.sender.stored(),
            ],
        )?;
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

/// The document's JSON without its lines (`"lines": []` in their place): they are stored once,
/// as `lines` rows, and `lines::complete` puts them back for `export`.
fn head_json(document: &mut Document) -> String {
    let lines = match document {
        Document::DeliveryNote(n) => Ok(std::mem::take(&mut n.lines)),
        Document::Order(o) => Err(std::mem::take(&mut o.lines)),
    };
    let json = serde_json::to_string(&*document).expect("documents always serialize");
    match (document, lines) {
        (Document::DeliveryNote(n), Ok(lines)) => n.lines = lines,
        (Document::Order(o), Err(lines)) => o.lines = lines,
        _ => unreachable!("the lines go back into the document they came from"),
    }
    json
}

fn insert_lines(conn: &Connection, document_id: i64, document: &Document) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO lines (document_id, position, line_no, supplier_part_id, buyer_part_id, gtin,
                            description, quantity, manufacturer_part_id, unit, unit_price, line_total,
                            order_ref, order_line, serial_number, comment, supplier_part_aux_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
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
                    text(l.unit_price),
                    text(l.line_total),
                    l.order_ref,
                    l.order_line,
                    l.serial_number,
                    l.comment,
                    None::<String>
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
                    None::<String>,
                    l.supplier_part_aux_id
                ])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
