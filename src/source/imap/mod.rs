//! The IMAP source. The inbox folder is the queue: a pass lists its UIDs, fetches them in
//! batches with `BODY.PEEK[]` (an item left in the inbox never gets `\Seen`) after checking
//! `RFC822.SIZE`, runs each batch through the pipeline, and only once the batch's outcomes are
//! committed moves it, with one command per destination: `UID MOVE` (RFC 6851), else
//! `UID COPY` + `UID STORE +FLAGS.SILENT (\Deleted)` + `UID EXPUNGE` (RFC 4315). A tagged OK is
//! not proof (a repeated `UID MOVE` answers OK too): a move counts once COPYUID names it or a
//! search no longer finds it in the inbox. Never an unscoped EXPUNGE: on a server without
//! UIDPLUS a handled message stays in the inbox flagged `\Deleted \Seen`, and messages flagged
//! `\Deleted` (by us or by another client) are never taken.
//!
//! While one batch is parsed and committed on the blocking pool, the connection moves the
//! batch before it and downloads the one after it, so that the server and eingang work at the
//! same time. A crash or a lost connection leaves committed messages in the inbox; the next
//! pass moves them by UID from their stored outcome, without downloading them again.
//!
//! Between passes the connection waits in IDLE (RFC 2177), or the inbox is polled when the
//! server has no IDLE. Every error here is transient: the items stay where they are.

mod conn;
mod names;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_imap::imap_proto::{AttributeValue, Response, ResponseCode, Status};
use tokio::time::Instant;
use tokio_rustls::rustls::ClientConfig;

use super::{CheckLine, Error as SourceError, PassReport};
use crate::config::RemoteConfig;
use crate::disposition::Disposition;
use crate::item::{Item, ItemKey, ItemKind, Origin};
use crate::pipeline::{self, Context};
use crate::store::{self, FailedItem, Moved, Store};
pub use conn::Error;
use conn::{COMMAND_TIMEOUT, Connection, FETCH_TIMEOUT};

/// The longest a source waits in IDLE before it lists the inbox anyway; IDLE itself is
/// re-issued within this (RFC 2177 §3: at least every 29 minutes).
pub const IDLE_WAIT: Duration = Duration::from_secs(25 * 60);
/// How often a server without IDLE is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed IDLE, the pause before the next pass reconnects (the daemon's backoff
/// takes over if that fails too).
const IDLE_RETRY: Duration = Duration::from_secs(2);
/// Messages per batch: one fetch, one store transaction and one move per destination.
const BATCH_ITEMS: usize = 500;
/// Bytes per batch, so that a batch of large messages does not fill the memory.
const BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// What `status` says about a server that cannot expunge selectively.
const NO_UIDPLUS: &str = "the server cannot expunge selectively (no UIDPLUS, no MOVE): handled messages stay in the inbox flagged \\Deleted \\Seen and are skipped";

/// The server's names of the three folders.
#[derive(Debug, Clone)]
struct Folders {
    inbox: String,
    archive: String,
    error: String,
}

/// A logged-in connection with the folders found on it.
#[derive(Debug)]
struct Link {
    conn: Connection,
    folders: Folders,
    selected: Option<String>,
}

/// One IMAP mailbox with its inbox, archive and error folders.
#[derive(Debug)]
pub struct ImapSource {
    name: String,
    config: Box<RemoteConfig>,
    supplier: Option<String>,
    keep_connection: bool,
    tls: OnceLock<Result<Arc<ClientConfig>, String>>,
    link: tokio::sync::Mutex<Option<Link>>,
    told_no_uidplus: AtomicBool,
}

/// Where the moves of one batch ended.
#[derive(Debug, Default)]
struct MoveResult {
    /// Confirmed: source UID → the `archived_ref` in the destination, when the server said.
    moved: HashMap<u32, Option<String>>,
    /// Not confirmed: they stay in the inbox for the next pass.
    left: Vec<u32>,
}

/// A batch whose outcomes are committed and which waits for its move; the bodies are dropped.
#[derive(Debug)]
struct Handled {
    uids: Vec<u32>,
    names: Vec<String>,
    outcomes: Vec<store::Outcome>,
}

impl Handled {
    fn new(uids: Vec<u32>, items: &[Item], outcomes: Vec<store::Outcome>) -> Handled {
        Handled {
            uids,
            names: items.iter().map(|i| i.name().to_owned()).collect(),
            outcomes,
        }
    }
}

impl ImapSource {
    /// An IMAP source. With `keep_connection` (the `idle` schedule) the connection stays open
    /// between passes for IDLE; otherwise each pass logs out at its end.
    pub fn new(
        name: String,
        config: RemoteConfig,
        supplier: Option<String>,
        keep_connection: bool,
    ) -> ImapSource {
        ImapSource {
            name,
            config: Box::new(config),
            supplier,
            keep_connection,
            tls: OnceLock::new(),
            link: tokio::sync::Mutex::new(None),
            told_no_uidplus: AtomicBool::new(false),
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    async fn connect(&self) -> Result<Connection, Error> {
        let tls = self
            .tls
            .get_or_init(|| super::tls::client_config(self.config.ca_file.as_deref()))
            .clone()
            .map_err(|why| Error::Tls {
                server: self.server(),
                why,
            })?;
        conn::connect(&self.config, &tls).await
    }

    /// Connects and finds the three folders; a missing folder is an error.
    async fn open_link(&self) -> Result<Link, Error> {
        let mut conn = self.connect().await?;
        let delimiter = conn.delimiter().await?;
        let mut found = Vec::with_capacity(3);
        for path in [&self.config.inbox, &self.config.archive, &self.config.error] {
            match find_folder(&mut conn, delimiter.as_deref(), path).await? {
                Some(name) => found.push(name),
                None => {
                    return Err(Error::Folder(format!(
                        "folder {path} does not exist on {} (eingang check --create-folders creates it)",
                        self.server()
                    )));
                }
            }
        }
        let [inbox, archive, error] = <[String; 3]>::try_from(found)
            .map_err(|_| Error::Folder("three folders expected".to_owned()))?;
        Ok(Link {
            conn,
            folders: Folders {
                inbox,
                archive,
                error,
            },
            selected: None,
        })
    }

    /// One pass: every message in the inbox is handled and moved. Stops between batches when
    /// `stop` is set.
    pub async fn pass(
        &self,
        cx: &Arc<Context>,
        stop: &AtomicBool,
    ) -> Result<PassReport, SourceError> {
        let mut slot = self.link.lock().await;
        let reused = match slot.take() {
            Some(mut link) => link.conn.noop().await.is_ok().then_some(link),
            None => None,
        };
        let mut link = match reused {
            Some(link) => link,
            None => {
                let link = self.open_link().await?;
                self.note_capabilities(&link, cx).await?;
                link
            }
        };
        let result = self.pass_on(&mut link, cx, stop).await;
        // After an error the connection's state is unknown: it is dropped, not reused.
        if result.is_ok() {
            if self.keep_connection {
                *slot = Some(link);
            } else {
                link.conn.logout().await;
            }
        }
        result
    }

    /// Says once in the log, and standing in `status`, that the server cannot expunge
    /// selectively; clears the note when it can.
    async fn note_capabilities(&self, link: &Link, cx: &Arc<Context>) -> Result<(), SourceError> {
        let caps = &link.conn.caps;
        let lacking = !caps.has_move && !caps.has_uidplus;
        if lacking && !self.told_no_uidplus.swap(true, Ordering::Relaxed) {
            tracing::warn!(source = %self.name, "{NO_UIDPLUS}");
        }
        let name = self.name.clone();
        blocking(cx, move |store| {
            store.set_source_note(&name, lacking.then_some(NO_UIDPLUS))
        })
        .await
    }

    async fn pass_on(
        &self,
        link: &mut Link,
        cx: &Arc<Context>,
        stop: &AtomicBool,
    ) -> Result<PassReport, SourceError> {
        let validity = link.conn.select(&link.folders.inbox).await?;
        link.selected = Some(link.folders.inbox.clone());
        let mut report = PassReport::default();
        self.reconcile(link, validity, cx, &mut report).await?;
        let mut tried: HashSet<u32> = HashSet::new();
        // Bounds the extra looks below, should a server announce EXISTS on every command.
        let mut rechecks = 3;
        loop {
            link.conn.exists_seen = false;
            // `\Deleted` messages are another client's deletion, or our own handled ones on a
            // server without UIDPLUS: never ours to take.
            let found = link.conn.search("UNDELETED").await?;
            let fresh: Vec<u32> = found.into_iter().filter(|u| !tried.contains(u)).collect();
            if fresh.is_empty() {
                // A message that arrived while the search ran is announced (EXISTS) but may
                // not be in its result: look once more rather than wait for the next IDLE.
                if link.conn.exists_seen && rechecks > 0 && !stop.load(Ordering::Relaxed) {
                    rechecks -= 1;
                    continue;
                }
                return Ok(report);
            }
            let sizes = self.sizes(&mut link.conn, &fresh).await?;
            let max = cx.limits.max_item_bytes;
            let batches = batches(&sizes, max);
            // Three batches are in flight at once: while batch i is parsed and committed on
            // the blocking pool, the connection moves batch i-1 (committed already) and
            // downloads batch i+1, so the server and eingang work at the same time instead of
            // by turns. A batch is still moved only after its outcomes are committed.
            let mut committed: Option<Handled> = None;
            let mut prefetched = None;
            for (i, batch) in batches.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tried.extend(batch.iter().map(|(uid, _)| *uid));
                let bodies = match prefetched.take() {
                    Some(bodies) => bodies,
                    None => fetch_bodies(&mut link.conn, &downloads(batch, max)).await?,
                };
                let (items, uids, deferred) = self.items_of(batch, bodies, validity, max);
                for uid in &deferred {
                    tried.remove(uid);
                }
                let next = batches.get(i + 1).filter(|_| !stop.load(Ordering::Relaxed));
                let previous = committed.take();
                let (handled, connection) = tokio::join!(
                    async {
                        if items.is_empty() {
                            return Ok(None);
                        }
                        self.run_pipeline(items, cx)
                            .await
                            .map(|(items, outcomes)| Some(Handled::new(uids, &items, outcomes)))
                    },
                    async {
                        if let Some(previous) = previous {
                            self.finish_batch(link, previous, cx, &mut report).await?;
                        }
                        match next {
                            Some(next) => Ok(Some(
                                fetch_bodies(&mut link.conn, &downloads(next, max)).await?,
                            )),
                            None => Ok::<_, SourceError>(None),
                        }
                    }
                );
                // Either failure ends the pass; what was committed and not moved is moved by
                // UID at the start of the next one.
                committed = handled?;
                prefetched = connection?;
            }
            if let Some(last) = committed.take() {
                self.finish_batch(link, last, cx, &mut report).await?;
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(report);
            }
        }
    }

    /// `RFC822.SIZE` of each UID, read before any body so that an oversized message is
    /// rejected without downloading it. UIDs gone meanwhile are left out.
    async fn sizes(&self, conn: &mut Connection, uids: &[u32]) -> Result<Vec<(u32, u64)>, Error> {
        let mut sizes = BTreeMap::new();
        let command = format!("UID FETCH {} (UID RFC822.SIZE)", names::uid_set(uids));
        conn.run("UID FETCH", &command, COMMAND_TIMEOUT, |r| {
            if let Response::Fetch(_, attributes) = r {
                let (mut uid, mut size) = (None, None);
                for a in attributes {
                    match a {
                        AttributeValue::Uid(u) => uid = Some(*u),
                        AttributeValue::Rfc822Size(s) => size = Some(u64::from(*s)),
                        _ => {}
                    }
                }
                if let (Some(uid), Some(size)) = (uid, size) {
                    sizes.insert(uid, size);
                }
            }
        })
        .await?;
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        Ok(sizes
            .into_iter()
            .filter(|(uid, _)| wanted.contains(uid))
            .collect())
    }

    /// The items of a batch from the downloaded bodies (an oversized message stands in by its
    /// size alone), their UIDs, and the UIDs deferred to the next round: a second copy of the
    /// same bytes in this batch waits until the ledger knows the first.
    fn items_of(
        &self,
        batch: &[(u32, u64)],
        mut bodies: HashMap<u32, Vec<u8>>,
        validity: u32,
        max: u64,
    ) -> (Vec<Item>, Vec<u32>, Vec<u32>) {
        let mut items = Vec::with_capacity(batch.len());
        let mut uids = Vec::with_capacity(batch.len());
        let mut keys = HashSet::new();
        let mut deferred = Vec::new();
        for &(uid, size) in batch {
            let origin = Origin {
                source: self.name.clone(),
                location: names::location(
                    &self.config.user,
                    &self.config.host,
                    &self.config.inbox,
                    validity,
                    uid,
                ),
                file_name: None,
            };
            let item = if size > max {
                // Not downloaded: its key stands for this message in this folder, so a
                // crash after its rejection is committed still finds the rejection.
                let key = ItemKey::of(format!("oversized {} {size}", origin.location).as_bytes());
                Item::oversized(key, size, ItemKind::Message, origin)
            } else {
                match bodies.remove(&uid) {
                    Some(bytes) => Item::new(bytes, ItemKind::Message, origin),
                    None => {
                        // Expunged by another client since the listing, or the server could
                        // not give it: it stays where it is for the next pass.
                        tracing::warn!(source = %self.name, uid, "message not returned by the server; left for the next pass");
                        continue;
                    }
                }
            };
            if !keys.insert(item.key().clone()) {
                deferred.push(uid);
                continue;
            }
            items.push(item);
            uids.push(uid);
        }
        (items, uids, deferred)
    }

    /// The pipeline on the blocking pool: the batch's outcomes, committed.
    async fn run_pipeline(
        &self,
        items: Vec<Item>,
        cx: &Arc<Context>,
    ) -> Result<(Vec<Item>, Vec<store::Outcome>), SourceError> {
        let (cx, supplier) = (cx.clone(), self.supplier.clone());
        let (items, outcomes) = tokio::task::spawn_blocking(move || {
            let outcomes = pipeline::handle_batch(&items, supplier.as_deref(), &cx);
            (items, outcomes)
        })
        .await
        .map_err(|e| SourceError::Stopped(e.to_string()))?;
        Ok((items, outcomes?))
    }

    /// Moves a handled batch by its committed outcomes and records the moves.
    async fn finish_batch(
        &self,
        link: &mut Link,
        handled: Handled,
        cx: &Arc<Context>,
        report: &mut PassReport,
    ) -> Result<(), SourceError> {
        let mut to_archive = Vec::new();
        let mut to_error = Vec::new();
        for ((uid, name), outcome) in handled
            .uids
            .iter()
            .zip(&handled.names)
            .zip(&handled.outcomes)
        {
            match Disposition::of(outcome) {
                Disposition::Archive => to_archive.push((*uid, outcome.item_id())),
                Disposition::Error { reason, .. } => {
                    tracing::warn!(source = %self.name, uid, item = %name, %reason, "item rejected");
                    to_error.push((*uid, outcome.item_id()));
                }
            }
        }
        self.move_and_record(link, &to_archive, &to_error, cx, report)
            .await
    }

    /// Moves decided messages, one command per destination, and records the confirmed moves.
    /// Messages whose move is not confirmed stay in the inbox (their outcome stands) and make
    /// this an error, so that the pass is retried.
    async fn move_and_record(
        &self,
        link: &mut Link,
        to_archive: &[(u32, i64)],
        to_error: &[(u32, i64)],
        cx: &Arc<Context>,
        report: &mut PassReport,
    ) -> Result<(), SourceError> {
        let mut recorded = Vec::new();
        let mut problems = Vec::new();
        for (group, folder, path) in [
            (to_archive, &link.folders.archive, &self.config.archive),
            (to_error, &link.folders.error, &self.config.error),
        ] {
            if group.is_empty() {
                continue;
            }
            let group_uids: Vec<u32> = group.iter().map(|(uid, _)| *uid).collect();
            match move_uids(&mut link.conn, &group_uids, folder).await {
                Ok(result) => {
                    for (uid, item_id) in group {
                        if let Some(archived_ref) = result.moved.get(uid) {
                            recorded.push(Moved {
                                item_id: *item_id,
                                folder: path.clone(),
                                archived_ref: archived_ref.clone(),
                            });
                        }
                    }
                    if !result.left.is_empty() {
                        problems.push(format!(
                            "UIDs {} still in the inbox after the move to {path}",
                            names::uid_set(&result.left)
                        ));
                    }
                }
                Err(e) => problems.push(format!("move to {path}: {e}")),
            }
        }
        crate::fault::point("after_move");
        let archived = recorded
            .iter()
            .filter(|m| m.folder == self.config.archive)
            .count();
        let rejected = recorded.len() - archived;
        blocking(cx, move |store| store.mark_moved(&recorded)).await?;
        report.imported += archived;
        report.rejected += rejected;
        if archived + rejected > 0 {
            tracing::info!(source = %self.name, archived, rejected, "batch moved");
        }
        if !problems.is_empty() {
            return Err(Error::NotMoved(problems.join("; ")).into());
        }
        Ok(())
    }

    /// Finishes what a crash cut off, for items of this inbox the ledger has but never
    /// recorded as moved. Decided and still in the inbox: moved now by UID, without being
    /// downloaded again (UIDVALIDITY and UID name one immutable message, RFC 3501 §2.3.1.1).
    /// Decided and gone: moved before the crash; looked for in its folder and recorded. Still
    /// there but flagged `\Deleted`: our COPY + STORE ran, the EXPUNGE did not; finished now.
    /// Never decided: the pass tries it again, or records it as vanished. Items of an earlier
    /// UIDVALIDITY are found again by their bytes first.
    async fn reconcile(
        &self,
        link: &mut Link,
        validity: u32,
        cx: &Arc<Context>,
        report: &mut PassReport,
    ) -> Result<(), SourceError> {
        let name = self.name.clone();
        let undisposed = blocking(cx, move |store| store.undisposed(&name)).await?;
        // The locations of this inbox, whatever their UIDVALIDITY (`names::location`).
        let prefix = format!(
            "{};UIDVALIDITY=",
            names::folder_url(&self.config.user, &self.config.host, &self.config.inbox)
        );
        let mut mine: Vec<(store::Undisposed, u32)> = Vec::new();
        let mut stale = Vec::new();
        for u in undisposed {
            match names::uid_of_location(&u.location) {
                Some((v, uid)) if v == validity && u.location.starts_with(&prefix) => {
                    mine.push((u, uid));
                }
                // A row never decided is parsed again when the pass meets its bytes.
                Some(_) if u.location.starts_with(&prefix) && u.imported.is_some() => {
                    stale.push(u);
                }
                _ => {}
            }
        }
        if mine.is_empty() && stale.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = mine
            .iter()
            .map(|(u, _)| u.item_id)
            .chain(stale.iter().map(|u| u.item_id))
            .collect();
        let envelopes = blocking(cx, move |store| store.envelopes(&ids)).await?;
        // The UIDs of an earlier UIDVALIDITY name nothing now: find those messages by bytes.
        if !stale.is_empty() {
            tracing::warn!(source = %self.name, items = stale.len(), "the inbox's UIDVALIDITY changed; finding committed messages again by their bytes");
            let wanted: Vec<(i64, String)> = stale
                .iter()
                .map(|u| (u.item_id, u.sha256.clone()))
                .collect();
            let found = find_by_bytes(&mut link.conn, &wanted, &envelopes).await?;
            for u in stale {
                match found.get(&u.item_id) {
                    Some(&uid) => mine.push((u, uid)),
                    // Not in the inbox any more: UID 0, which no message has (UIDs start at 1,
                    // RFC 3501 §2.3.1.1), makes it one of the gone below.
                    None => mine.push((u, 0)),
                }
            }
        }
        let uids: Vec<u32> = mine
            .iter()
            .map(|(_, uid)| *uid)
            .filter(|u| *u > 0)
            .collect();
        let (present, flagged): (HashSet<u32>, HashSet<u32>) = if uids.is_empty() {
            (HashSet::new(), HashSet::new())
        } else {
            let set = names::uid_set(&uids);
            (
                link.conn
                    .search(&format!("UID {set}"))
                    .await?
                    .into_iter()
                    .collect(),
                link.conn
                    .search(&format!("UID {set} DELETED"))
                    .await?
                    .into_iter()
                    .collect(),
            )
        };
        let gone: Vec<(i64, String, bool)> = mine
            .iter()
            .filter(|(item, uid)| !present.contains(uid) && item.imported.is_some())
            .map(|(item, _)| {
                (
                    item.item_id,
                    item.sha256.clone(),
                    item.imported == Some(true),
                )
            })
            .collect();
        let found = self.find_moved(link, &gone, &envelopes).await?;
        let mut recorded = Vec::new();
        let mut to_expunge = Vec::new();
        let (mut to_archive, mut to_error) = (Vec::new(), Vec::new());
        for (item, uid) in &mine {
            let folder = match item.imported {
                Some(true) => self.config.archive.clone(),
                Some(false) => self.config.error.clone(),
                None if present.contains(uid) => continue, // the pass tries it again
                None => {
                    tracing::warn!(source = %self.name, uid, "{}", crate::source::VANISHED);
                    crate::source::VANISHED.to_owned()
                }
            };
            if present.contains(uid) && !flagged.contains(uid) {
                match item.imported {
                    Some(true) => to_archive.push((*uid, item.item_id)),
                    _ => to_error.push((*uid, item.item_id)),
                }
                continue;
            }
            if present.contains(uid) {
                to_expunge.push(*uid);
            }
            let archived_ref = found.get(&item.item_id).cloned();
            let folder =
                if present.contains(uid) || archived_ref.is_some() || item.imported.is_none() {
                    folder
                } else {
                    format!("moved to {folder} before a crash; not found there")
                };
            tracing::info!(source = %self.name, uid, %folder, "recorded a move interrupted by a crash");
            recorded.push(Moved {
                item_id: item.item_id,
                folder,
                archived_ref,
            });
        }
        if !to_expunge.is_empty() && link.conn.caps.has_uidplus {
            let command = format!("UID EXPUNGE {}", names::uid_set(&to_expunge));
            link.conn
                .run("UID EXPUNGE", &command, COMMAND_TIMEOUT, |_| {})
                .await?;
        }
        blocking(cx, move |store| store.mark_moved(&recorded)).await?;
        if !to_archive.is_empty() || !to_error.is_empty() {
            tracing::info!(source = %self.name, messages = to_archive.len() + to_error.len(), "moving messages decided before a crash");
            self.move_and_record(link, &to_archive, &to_error, cx, report)
                .await?;
        }
        Ok(())
    }

    /// Looks for messages that left the inbox before their move was recorded, in the folder
    /// their outcome sends them to. Returns their `archived_ref` by item; the inbox is
    /// selected again afterwards.
    async fn find_moved(
        &self,
        link: &mut Link,
        gone: &[(i64, String, bool)],
        envelopes: &HashMap<i64, (Option<String>, u64)>,
    ) -> Result<HashMap<i64, String>, SourceError> {
        let mut found = HashMap::new();
        if gone.is_empty() {
            return Ok(found);
        }
        for (imported, folder) in [
            (true, link.folders.archive.clone()),
            (false, link.folders.error.clone()),
        ] {
            let wanted: Vec<(i64, String)> = gone
                .iter()
                .filter(|(_, _, i)| *i == imported)
                .map(|(id, sha256, _)| (*id, sha256.clone()))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let validity = link.conn.examine(&folder).await?;
            link.selected = Some(folder.clone());
            for (item_id, uid) in find_by_bytes(&mut link.conn, &wanted, envelopes).await? {
                found.insert(item_id, names::archived_ref(validity, uid));
            }
        }
        link.conn.select(&link.folders.inbox).await?;
        link.selected = Some(link.folders.inbox.clone());
        Ok(found)
    }

    /// Waits (at most `limit`) for new mail: IDLE rounds on the connection the last pass
    /// left, or a poll interval on a server without IDLE. Without a connection it returns at
    /// once, so that the pass reconnects (and the daemon backs off if that fails).
    pub async fn wait_for_news(&self, limit: Duration) {
        let mut slot = self.link.lock().await;
        let Some(mut link) = slot.take() else {
            return;
        };
        if !link.conn.caps.has_idle {
            *slot = Some(link);
            drop(slot);
            tokio::time::sleep(limit.min(POLL_INTERVAL)).await;
            return;
        }
        if link.selected.as_deref() != Some(link.folders.inbox.as_str()) {
            match link.conn.select(&link.folders.inbox).await {
                Ok(_) => link.selected = Some(link.folders.inbox.clone()),
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "cannot select the inbox for IDLE");
                    return;
                }
            }
        }
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *slot = Some(link);
                return;
            }
            match link.conn.idle(left).await {
                Ok(true) => {
                    *slot = Some(link);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "idle ended; reconnecting");
                    drop(slot);
                    tokio::time::sleep(IDLE_RETRY.min(left)).await;
                    return;
                }
            }
        }
    }

    /// The checks of `eingang check`: connection, TLS and login, then each folder (created
    /// first when asked and missing).
    pub async fn check(&self, create_folders: bool) -> Vec<CheckLine> {
        let what = format!(
            "imap {} ({}) as {}",
            self.server(),
            self.config.tls,
            self.config.user
        );
        let mut conn = match self.connect().await {
            Ok(conn) => conn,
            Err(e) => return vec![(what, Err(e.to_string()))],
        };
        let mut lines = vec![(what, Ok(()))];
        let delimiter = match conn.delimiter().await {
            Ok(d) => d,
            Err(e) => {
                lines.push(("folder hierarchy".to_owned(), Err(e.to_string())));
                return lines;
            }
        };
        for (role, path) in [
            ("inbox", &self.config.inbox),
            ("archive", &self.config.archive),
            ("error", &self.config.error),
        ] {
            let what = format!("{role} folder {path}");
            let result = match find_folder(&mut conn, delimiter.as_deref(), path).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) if create_folders => {
                    create_folder(&mut conn, delimiter.as_deref(), path)
                        .await
                        .map(|name| tracing::info!(source = %self.name, folder = %name, "folder created"))
                        .map_err(|e| e.to_string())
                }
                Ok(None) => Err("missing (eingang check --create-folders creates it)".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            lines.push((what, result));
        }
        conn.logout().await;
        lines
    }

    /// Moves a failed message from the error folder back to the inbox (`eingang reprocess`);
    /// returns where it lies now.
    pub async fn put_back(&self, failed: &FailedItem) -> Result<String, SourceError> {
        let mut link = self.open_link().await?;
        let validity = link.conn.select(&link.folders.error).await?;
        let uid = failed
            .archived_ref
            .as_deref()
            .and_then(names::parse_archived_ref)
            .filter(|(v, _)| *v == validity)
            .map(|(_, uid)| uid)
            .ok_or_else(|| {
                Error::Folder(format!(
                    "its UID in {} is not known (the server gave none, or the folder was rebuilt); move the message back to {} by hand",
                    self.config.error, self.config.inbox
                ))
            })?;
        if !link
            .conn
            .search(&format!("UID {uid}"))
            .await?
            .contains(&uid)
        {
            return Err(Error::Folder(format!(
                "it is no longer in {} (UID {uid})",
                self.config.error
            ))
            .into());
        }
        let inbox = link.folders.inbox.clone();
        let result = move_uids(&mut link.conn, &[uid], &inbox).await?;
        link.conn.logout().await;
        if result.moved.contains_key(&uid) {
            Ok(self.config.inbox.clone())
        } else {
            Err(Error::NotMoved(format!("UID {uid} is still in {}", self.config.error)).into())
        }
    }
}

/// In the selected folder, the UID of each wanted item's message: found by its Message-ID
/// and confirmed by its size and sha256 (the Message-ID is the sender's and may repeat).
async fn find_by_bytes(
    conn: &mut Connection,
    wanted: &[(i64, String)],
    envelopes: &HashMap<i64, (Option<String>, u64)>,
) -> Result<HashMap<i64, u32>, Error> {
    let mut found = HashMap::new();
    for (item_id, sha256) in wanted {
        let Some((Some(message_id), size)) = envelopes.get(item_id) else {
            continue;
        };
        let criteria = format!(
            "HEADER Message-ID {}",
            names::quoted(message_id).map_err(Error::Folder)?
        );
        let candidates = conn.search(&criteria).await?;
        if candidates.is_empty() {
            continue;
        }
        let command = format!(
            "UID FETCH {} (UID RFC822.SIZE)",
            names::uid_set(&candidates)
        );
        let mut same_size = Vec::new();
        conn.run("UID FETCH", &command, COMMAND_TIMEOUT, |r| {
            if let Response::Fetch(_, attributes) = r {
                let uid = attributes.iter().find_map(|a| match a {
                    AttributeValue::Uid(u) => Some(*u),
                    _ => None,
                });
                let matches = attributes
                    .iter()
                    .any(|a| matches!(a, AttributeValue::Rfc822Size(s) if u64::from(*s) == *size));
                if let (Some(uid), true) = (uid, matches) {
                    same_size.push(uid);
                }
            }
        })
        .await?;
        let bodies = fetch_bodies(conn, &same_size).await?;
        if let Some(uid) = bodies
            .iter()
            .find(|(_, bytes)| ItemKey::of(bytes).as_str() == sha256)
            .map(|(uid, _)| *uid)
        {
            found.insert(*item_id, uid);
        }
    }
    Ok(found)
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    cx: &Arc<Context>,
    call: impl FnOnce(&Store) -> Result<T, store::Error> + Send + 'static,
) -> Result<T, SourceError> {
    let cx = cx.clone();
    tokio::task::spawn_blocking(move || call(&cx.store))
        .await
        .map_err(|e| SourceError::Stopped(e.to_string()))?
        .map_err(SourceError::from)
}

/// Splits the listing into batches of at most `BATCH_ITEMS` messages and `BATCH_BYTES` to
/// download (an oversized message is not downloaded, so it weighs nothing).
fn batches(sizes: &[(u32, u64)], max_item_bytes: u64) -> Vec<Vec<(u32, u64)>> {
    let mut out: Vec<Vec<(u32, u64)>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for &(uid, size) in sizes {
        let weight = if size > max_item_bytes { 0 } else { size };
        if !current.is_empty() && (current.len() >= BATCH_ITEMS || bytes + weight > BATCH_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push((uid, size));
        bytes += weight;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The UIDs of a batch whose bodies are downloaded: all but the oversized ones.
fn downloads(batch: &[(u32, u64)], max_item_bytes: u64) -> Vec<u32> {
    batch
        .iter()
        .filter(|(_, size)| *size <= max_item_bytes)
        .map(|(uid, _)| *uid)
        .collect()
}

/// The candidates for a config folder on the server: as written, then below `INBOX`, where
/// servers with an `INBOX.` personal namespace keep every folder (Courier, Cyrus, Dovecot
/// with `prefix = INBOX.`).
fn candidates(path: &str, delimiter: Option<&str>) -> Result<Vec<String>, Error> {
    let plain = names::server_path(path, delimiter).map_err(Error::Folder)?;
    let mut out = vec![plain.clone()];
    let first = path.split('/').next().unwrap_or_default();
    if let Some(d) = delimiter
        && !first.eq_ignore_ascii_case("INBOX")
    {
        out.push(format!("INBOX{d}{plain}"));
    }
    Ok(out)
}

/// The server's name of a config folder, if it exists.
async fn find_folder(
    conn: &mut Connection,
    delimiter: Option<&str>,
    path: &str,
) -> Result<Option<String>, Error> {
    for name in candidates(path, delimiter)? {
        if conn.exists(&name).await? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Creates a config folder: as written, or below `INBOX` when the server refuses that.
async fn create_folder(
    conn: &mut Connection,
    delimiter: Option<&str>,
    path: &str,
) -> Result<String, Error> {
    let mut first_error = None;
    for name in candidates(path, delimiter)? {
        match conn.create(&name).await {
            Ok(()) if conn.exists(&name).await? => return Ok(name),
            Ok(()) => {}
            Err(e @ Error::Server { .. }) => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_error
        .unwrap_or_else(|| Error::Folder(format!("folder {path}: created but not listed"))))
}

/// `UID FETCH <uids> (UID BODY.PEEK[])`: the raw bytes by UID. `PEEK` leaves `\Seen` alone
/// (RFC 3501 §6.4.5), so what stays in the inbox looks untouched to people.
async fn fetch_bodies(conn: &mut Connection, uids: &[u32]) -> Result<HashMap<u32, Vec<u8>>, Error> {
    let mut bodies = HashMap::with_capacity(uids.len());
    if uids.is_empty() {
        return Ok(bodies);
    }
    let command = format!("UID FETCH {} (UID BODY.PEEK[])", names::uid_set(uids));
    conn.run("UID FETCH", &command, FETCH_TIMEOUT, |r| {
        if let Response::Fetch(_, attributes) = r {
            let mut uid = None;
            let mut body = None;
            for a in attributes {
                match a {
                    AttributeValue::Uid(u) => uid = Some(*u),
                    AttributeValue::BodySection {
                        section: None,
                        data: Some(data),
                        ..
                    } => body = Some(data.to_vec()),
                    _ => {}
                }
            }
            if let (Some(uid), Some(body)) = (uid, body) {
                bodies.insert(uid, body);
            }
        }
    })
    .await?;
    Ok(bodies)
}

/// Moves UIDs of the selected folder to `dest` with one command (or the COPY fallback), and
/// confirms each: by COPYUID (RFC 4315 §3), else by a search that no longer finds it.
async fn move_uids(conn: &mut Connection, uids: &[u32], dest: &str) -> Result<MoveResult, Error> {
    let set = names::uid_set(uids);
    let target = names::quoted(dest).map_err(Error::Folder)?;
    let mut copied: HashMap<u32, String> = HashMap::new();
    let mut collect = |r: &Response<'_>| {
        let code = match r {
            Response::Data {
                status: Status::Ok,
                outcome,
            }
            | Response::Done {
                status: Status::Ok,
                outcome,
                ..
            } => outcome.code.as_ref(),
            _ => None,
        };
        if let Some(ResponseCode::CopyUid(validity, from, to)) = code {
            for (from, to) in names::uids_of(from).into_iter().zip(names::uids_of(to)) {
                copied.insert(from, names::archived_ref(*validity, to));
            }
        }
    };
    let caps = conn.caps.clone();
    // The UIDs that must be gone from the inbox (or, without UIDPLUS, flagged) afterwards.
    let expected: Vec<u32>;
    let gone_criterion;
    if caps.has_move {
        // RFC 6851 §3.3: MOVE sends COPYUID untagged, before the EXPUNGEs.
        conn.run(
            "UID MOVE",
            &format!("UID MOVE {set} {target}"),
            COMMAND_TIMEOUT,
            &mut collect,
        )
        .await?;
        expected = uids.to_vec();
        gone_criterion = "";
    } else {
        conn.run(
            "UID COPY",
            &format!("UID COPY {set} {target}"),
            COMMAND_TIMEOUT,
            &mut collect,
        )
        .await?;
        if caps.has_uidplus {
            // Only what COPYUID confirms is flagged and expunged; UID EXPUNGE touches no
            // other message, even one another client flagged `\Deleted` (RFC 4315 §2.1).
            expected = uids
                .iter()
                .copied()
                .filter(|u| copied.contains_key(u))
                .collect();
            gone_criterion = "";
        } else {
            // Without UIDPLUS the COPY's OK is all the evidence there is (a failed COPY
            // changes nothing, RFC 3501 §6.4.7); the original stays, flagged.
            expected = uids.to_vec();
            gone_criterion = " UNDELETED";
        }
        if !expected.is_empty() {
            let flagged = names::uid_set(&expected);
            let flags = if caps.has_uidplus {
                "(\\Deleted)"
            } else {
                "(\\Deleted \\Seen)"
            };
            conn.run(
                "UID STORE",
                &format!("UID STORE {flagged} +FLAGS.SILENT {flags}"),
                COMMAND_TIMEOUT,
                |_| {},
            )
            .await?;
            if caps.has_uidplus {
                conn.run(
                    "UID EXPUNGE",
                    &format!("UID EXPUNGE {flagged}"),
                    COMMAND_TIMEOUT,
                    |_| {},
                )
                .await?;
            }
        }
    }
    let unconfirmed: Vec<u32> = expected
        .iter()
        .copied()
        .filter(|u| !copied.contains_key(u) || !gone_criterion.is_empty())
        .collect();
    let still: HashSet<u32> = if unconfirmed.is_empty() {
        HashSet::new()
    } else {
        let criteria = format!("UID {}{gone_criterion}", names::uid_set(&unconfirmed));
        conn.search(&criteria).await?.into_iter().collect()
    };
    let expected: HashSet<u32> = expected.into_iter().collect();
    let mut result = MoveResult::default();
    for &uid in uids {
        if expected.contains(&uid) && !still.contains(&uid) {
            result.moved.insert(uid, copied.get(&uid).cloned());
        } else {
            result.left.push(uid);
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let many: Vec<(u32, u64)> = (1..=1200).map(|u| (u, 1000)).collect();
        let b = batches(&many, 50 << 20);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [500, 500, 200]);
        let big = [(1, 5 << 20), (2, 5 << 20), (3, 100 << 20), (4, 1)];
        let b = batches(&big, 50 << 20);
        // 5 + 5 MiB exceeds 8 MiB; the oversized one is not downloaded and weighs nothing.
        assert_eq!(
            b,
            vec![
                vec![(1, 5 << 20)],
                vec![(2, 5 << 20), (3, 100 << 20), (4, 1)]
            ]
        );
    }

    #[test]
    fn folders_are_looked_for_as_written_then_below_inbox() {
        assert_eq!(
            candidates("Lieferscheine/Eingang", Some(".")).unwrap(),
            ["Lieferscheine.Eingang", "INBOX.Lieferscheine.Eingang"]
        );
        assert_eq!(
            candidates("INBOX/Archiv", Some(".")).unwrap(),
            ["INBOX.Archiv"]
        );
        assert_eq!(candidates("Eingang", None).unwrap(), ["Eingang"]);
    }
}
