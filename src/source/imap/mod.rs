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

use super::reconcile::{Seen, Wanted};
use super::{
    BatchLimits, CheckLine, Disposed, Error as SourceError, Fetched, Inbox, Listing, Move, Shelf,
};
use crate::config::RemoteConfig;
use crate::disposition::Disposition;
use crate::item::{Item, ItemKey, ItemKind, Origin};
use crate::store::{Place, Unfinished};
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
/// Messages per batch (one fetch, one store transaction and one move per destination), and
/// bytes per batch, so that a batch of large messages does not fill the memory.
const BATCH: BatchLimits = BatchLimits {
    items: 500,
    bytes: 8 * 1024 * 1024,
};
/// The smallest download a batch is cut to after fetches failed (see `ImapSource::byte_cap`).
const MIN_BATCH_BYTES: u64 = 16 * 1024;
/// A message that arrived while a search ran is announced (EXISTS) but may not be in its
/// result: a listing looks again this many times at most, should a server announce EXISTS
/// on every command.
const RECHECKS: u32 = 3;
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
    keep_connection: bool,
    tls: OnceLock<Result<Arc<ClientConfig>, String>>,
    link: tokio::sync::Mutex<Option<Link>>,
    told_no_uidplus: AtomicBool,
    /// The bytes a batch may download now: a quarter of a batch whose fetch broke off, doubled
    /// back after each fetch that came through, so that a link that keeps breaking after a
    /// few dozen KiB still drains the inbox, batch by smaller batch.
    byte_cap: std::sync::atomic::AtomicU64,
}

/// A message in the inbox, by its UID (in the inbox's current UIDVALIDITY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    uid: u32,
    size: u64,
}

impl super::Entry for Entry {
    fn key(&self) -> String {
        self.uid.to_string()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> String {
        format!("UID {}", self.uid)
    }
}

/// The mailbox opened for one pass: a logged-in link with the inbox selected.
pub struct ImapInbox<'a> {
    source: &'a ImapSource,
    link: Link,
    validity: u32,
}

/// Where the moves of one batch ended.
#[derive(Debug, Default, PartialEq, Eq)]
struct MoveResult {
    /// Confirmed: source UID → the `archived_ref` in the destination, when the server said.
    moved: HashMap<u32, Option<String>>,
    /// Not confirmed: they stay in the inbox for the next pass.
    left: Vec<u32>,
}

/// Where an unfinished item may be in the inbox now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Not an item of this inbox as configured, or of an earlier UIDVALIDITY and never decided
    /// (the pass parses it again when it meets its bytes).
    Elsewhere,
    /// Its UID now, if it is still there.
    Uid(u32),
    /// Of an earlier UIDVALIDITY and not found again by its bytes.
    Missing,
}

impl ImapSource {
    /// An IMAP source. With `keep_connection` (the `idle` schedule) the connection stays open
    /// between passes for IDLE; otherwise each pass logs out at its end.
    pub fn new(name: String, config: RemoteConfig, keep_connection: bool) -> ImapSource {
        ImapSource {
            name,
            config: Box::new(config),
            keep_connection,
            tls: OnceLock::new(),
            link: tokio::sync::Mutex::new(None),
            told_no_uidplus: AtomicBool::new(false),
            byte_cap: std::sync::atomic::AtomicU64::new(BATCH.bytes),
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

    /// Opens the mailbox for a pass: the connection the last pass left when it still answers,
    /// else a new one; the inbox selected.
    pub async fn open(&self) -> Result<ImapInbox<'_>, Error> {
        let kept = self.link.lock().await.take();
        let reused = match kept {
            Some(mut link) => link.conn.noop().await.is_ok().then_some(link),
            None => None,
        };
        let mut link = match reused {
            Some(link) => link,
            None => {
                let link = self.open_link().await?;
                let caps = &link.conn.caps;
                if !caps.has_move
                    && !caps.has_uidplus
                    && !self.told_no_uidplus.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(source = %self.name, "{NO_UIDPLUS}");
                }
                link
            }
        };
        let validity = link.conn.select(&link.folders.inbox).await?;
        link.selected = Some(link.folders.inbox.clone());
        Ok(ImapInbox {
            source: self,
            link,
            validity,
        })
    }

    /// Ends a pass: with `keep_connection` the connection stays for IDLE, else it logs out.
    /// After an error the connection's state is unknown: it is dropped, not reused.
    pub async fn close(&self, inbox: ImapInbox<'_>, ok: bool) {
        let link = inbox.link;
        if !ok {
            return;
        }
        if self.keep_connection {
            *self.link.lock().await = Some(link);
        } else {
            link.conn.logout().await;
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

    /// The item of a fetched message (an oversized one stands in by its size alone); `None`
    /// when the server did not return it.
    fn item_of(
        &self,
        entry: &Entry,
        body: Option<Vec<u8>>,
        validity: u32,
        max: u64,
    ) -> Option<Item> {
        let origin = Origin {
            source: self.name.clone(),
            location: names::location(
                &self.config.user,
                &self.config.host,
                &self.config.inbox,
                validity,
                entry.uid,
            ),
            file_name: None,
        };
        if entry.size > max {
            // Not downloaded: its key stands for this message in this folder, so a crash
            // after its rejection is committed still finds the rejection.
            let key =
                ItemKey::of(format!("oversized {} {}", origin.location, entry.size).as_bytes());
            return Some(Item::oversized(key, entry.size, ItemKind::Message, origin));
        }
        match body {
            Some(bytes) => Some(Item::new(bytes, ItemKind::Message, origin)),
            None => {
                // Expunged by another client since the listing, or the server could not give
                // it: it stays where it is for the next pass.
                tracing::warn!(source = %self.name, uid = entry.uid, "message not returned by the server; left for the next pass");
                None
            }
        }
    }

    /// The folder (as configured and on the server) a disposition sends a message to.
    fn destination<'f>(&'f self, folders: &'f Folders, to: &Disposition) -> (&'f str, &'f str) {
        match to {
            Disposition::Archive => (&self.config.archive, &folders.archive),
            Disposition::Error { .. } => (&self.config.error, &folders.error),
        }
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
    pub async fn put_back(&self, place: &Place, shelf: Shelf) -> Result<String, SourceError> {
        let mut link = self.open_link().await?;
        let (folder, path) = match shelf {
            Shelf::Archive => (link.folders.archive.clone(), &self.config.archive),
            Shelf::Error => (link.folders.error.clone(), &self.config.error),
        };
        let validity = link.conn.select(&folder).await?;
        let uid = place
            .reference
            .as_deref()
            .and_then(names::parse_archived_ref)
            .filter(|(v, _)| *v == validity)
            .map(|(_, uid)| uid)
            .ok_or_else(|| {
                Error::Folder(format!(
                    "its UID in {path} is not known (the server gave none, or the folder was rebuilt); move the message back to {} by hand",
                    self.config.inbox
                ))
            })?;
        if !link
            .conn
            .search(&format!("UID {uid}"))
            .await?
            .contains(&uid)
        {
            return Err(Error::Folder(format!("it is no longer in {path} (UID {uid})")).into());
        }
        let inbox = link.folders.inbox.clone();
        let result = move_uids(&mut link.conn, &[uid], &inbox).await?;
        link.conn.logout().await;
        if result.moved.contains_key(&uid) {
            Ok(self.config.inbox.clone())
        } else {
            Err(Error::NotMoved(format!("UID {uid} is still in {path}")).into())
        }
    }
}

impl ImapInbox<'_> {
    /// Looks for messages that left the inbox before their move was recorded, in the folder
    /// their outcome sends them to. Returns their `archived_ref` by item; the inbox is
    /// selected again afterwards.
    async fn find_moved(
        &mut self,
        gone: &[(&Unfinished, bool)],
    ) -> Result<HashMap<i64, String>, Error> {
        let mut found = HashMap::new();
        if gone.is_empty() {
            return Ok(found);
        }
        let link = &mut self.link;
        for (imported, folder) in [
            (true, link.folders.archive.clone()),
            (false, link.folders.error.clone()),
        ] {
            let wanted: Vec<&Unfinished> = gone
                .iter()
                .filter(|(_, i)| *i == imported)
                .map(|(item, _)| *item)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let validity = link.conn.examine(&folder).await?;
            link.selected = Some(folder.clone());
            for (item_id, uid) in find_by_bytes(&mut link.conn, &wanted).await? {
                found.insert(item_id, names::archived_ref(validity, uid));
            }
        }
        link.conn.select(&link.folders.inbox).await?;
        link.selected = Some(link.folders.inbox.clone());
        Ok(found)
    }

    /// Where each unfinished item may be in the inbox: by its UID in this UIDVALIDITY, or,
    /// for a decided one of an earlier UIDVALIDITY (whose UIDs name nothing now), found again
    /// by its bytes.
    async fn slots(&mut self, wanted: &[Wanted]) -> Result<Vec<Slot>, Error> {
        let config = &self.source.config;
        // The locations of this inbox, whatever their UIDVALIDITY (`names::location`).
        let prefix = format!(
            "{};UIDVALIDITY=",
            names::folder_url(&config.user, &config.host, &config.inbox)
        );
        let mut slots = Vec::with_capacity(wanted.len());
        let mut stale = Vec::new();
        for w in wanted {
            let mine = w.item.location.starts_with(&prefix);
            slots.push(match names::uid_of_location(&w.item.location) {
                Some((v, uid)) if mine && v == self.validity => Slot::Uid(uid),
                Some(_) if mine && w.item.outcome.is_some() => {
                    stale.push(&w.item);
                    Slot::Missing
                }
                _ => Slot::Elsewhere,
            });
        }
        if !stale.is_empty() {
            tracing::warn!(source = %self.source.name, items = stale.len(), "the inbox's UIDVALIDITY changed; finding committed messages again by their bytes");
            let found = find_by_bytes(&mut self.link.conn, &stale).await?;
            for (slot, w) in slots.iter_mut().zip(wanted) {
                if *slot == Slot::Missing
                    && let Some(&uid) = found.get(&w.item.item_id)
                {
                    *slot = Slot::Uid(uid);
                }
            }
        }
        Ok(slots)
    }
}

impl Inbox for ImapInbox<'_> {
    type Entry = Entry;

    fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            bytes: self.source.byte_cap.load(Ordering::Relaxed),
            ..BATCH
        }
    }

    fn note(&self) -> Option<&'static str> {
        let caps = &self.link.conn.caps;
        (!caps.has_move && !caps.has_uidplus).then_some(NO_UIDPLUS)
    }

    async fn list(&mut self, tried: &HashSet<String>) -> Result<Listing<Entry>, SourceError> {
        let conn = &mut self.link.conn;
        let mut rechecks = RECHECKS;
        loop {
            conn.exists_seen = false;
            // `\Deleted` messages are another client's deletion, or our own handled ones on a
            // server without UIDPLUS: never ours to take.
            let found = conn.search("UNDELETED").await?;
            let fresh: Vec<u32> = found
                .into_iter()
                .filter(|u| !tried.contains(&u.to_string()))
                .collect();
            if fresh.is_empty() {
                if conn.exists_seen && rechecks > 0 {
                    rechecks -= 1;
                    continue;
                }
                return Ok(Listing::ready(Vec::new()));
            }
            let sizes = self.source.sizes(conn, &fresh).await?;
            let entries = sizes
                .into_iter()
                .map(|(uid, size)| Entry { uid, size })
                .collect();
            return Ok(Listing::ready(entries));
        }
    }

    async fn fetch(
        &mut self,
        batch: Vec<Entry>,
        max_item_bytes: u64,
    ) -> Result<Vec<Fetched<Entry>>, SourceError> {
        let wanted = downloads(&batch, max_item_bytes);
        let bytes: u64 = batch
            .iter()
            .filter(|e| e.size <= max_item_bytes)
            .map(|e| e.size)
            .sum();
        let cap = &self.source.byte_cap;
        let mut bodies = match fetch_bodies(&mut self.link.conn, &wanted).await {
            Ok(bodies) => {
                let grown = cap
                    .load(Ordering::Relaxed)
                    .saturating_mul(2)
                    .min(BATCH.bytes);
                cap.store(grown, Ordering::Relaxed);
                bodies
            }
            Err(e) => {
                let cut = (bytes / 4).clamp(MIN_BATCH_BYTES, BATCH.bytes);
                if cut < cap.load(Ordering::Relaxed) {
                    cap.store(cut, Ordering::Relaxed);
                    tracing::warn!(source = %self.source.name, batch_bytes = bytes, next = cut, "a batch's download broke off; the next ones are smaller");
                }
                return Err(e.into());
            }
        };
        Ok(batch
            .into_iter()
            .map(|entry| {
                let body = bodies.remove(&entry.uid);
                let item = self
                    .source
                    .item_of(&entry, body, self.validity, max_item_bytes);
                Fetched { entry, item }
            })
            .collect())
    }

    /// One command per destination. Messages whose move is not confirmed stay in the inbox
    /// (their outcome stands).
    async fn dispose(&mut self, moves: Vec<Move<Entry>>) -> Disposed {
        let mut disposed = Disposed::default();
        let (to_archive, to_error): (Vec<_>, Vec<_>) = moves
            .into_iter()
            .partition(|m| m.disposition == Disposition::Archive);
        for group in [to_archive, to_error] {
            let Some(first) = group.first() else {
                continue;
            };
            let (path, folder) = self
                .source
                .destination(&self.link.folders, &first.disposition);
            let (path, folder) = (path.to_owned(), folder.to_owned());
            let uids: Vec<u32> = group.iter().map(|m| m.entry.uid).collect();
            match move_uids(&mut self.link.conn, &uids, &folder).await {
                Ok(result) => {
                    for m in &group {
                        match result.moved.get(&m.entry.uid) {
                            Some(reference) => disposed.placed.push((
                                m.item_id,
                                Place {
                                    at: path.clone(),
                                    reference: reference.clone(),
                                },
                            )),
                            None => disposed.failed.push((
                                m.item_id,
                                format!("still in the inbox after the move to {path}"),
                            )),
                        }
                    }
                }
                // The server refused (the folder deleted, over quota): these stay.
                Err(e @ Error::Server { .. }) => {
                    let why = format!("move to {path}: {e}");
                    disposed
                        .failed
                        .extend(group.iter().map(|m| (m.item_id, why.clone())));
                }
                Err(e) => {
                    disposed.broken = Some(e.into());
                    break;
                }
            }
        }
        disposed
    }

    /// Decided and still in the inbox: moved by UID without being downloaded again
    /// (UIDVALIDITY and UID name one immutable message, RFC 3501 §2.3.1.1). Decided and gone:
    /// moved before the crash; looked for in its folder. Still there but flagged `\Deleted`:
    /// our COPY + STORE ran, the EXPUNGE did not; finished now. Never decided: the pass tries
    /// it again, or it vanished.
    async fn locate(&mut self, wanted: Vec<Wanted>) -> Result<Vec<Seen<Entry>>, SourceError> {
        let slots = self.slots(&wanted).await?;
        let uids: Vec<u32> = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Uid(u) => Some(*u),
                _ => None,
            })
            .collect();
        let conn = &mut self.link.conn;
        let (present, flagged): (HashSet<u32>, HashSet<u32>) = if uids.is_empty() {
            (HashSet::new(), HashSet::new())
        } else {
            let set = names::uid_set(&uids);
            (
                conn.search(&format!("UID {set}"))
                    .await?
                    .into_iter()
                    .collect(),
                conn.search(&format!("UID {set} DELETED"))
                    .await?
                    .into_iter()
                    .collect(),
            )
        };
        let here = |slot: &Slot| match slot {
            Slot::Uid(u) if present.contains(u) => Some(*u),
            _ => None,
        };
        let to_expunge: Vec<u32> = slots
            .iter()
            .zip(&wanted)
            .filter_map(|(slot, w)| {
                here(slot).filter(|u| flagged.contains(u) && w.look_in.is_some())
            })
            .collect();
        if !to_expunge.is_empty() && conn.caps.has_uidplus {
            let command = format!("UID EXPUNGE {}", names::uid_set(&to_expunge));
            conn.run("UID EXPUNGE", &command, COMMAND_TIMEOUT, |_| {})
                .await?;
        }
        let gone: Vec<(&Unfinished, bool)> = slots
            .iter()
            .zip(&wanted)
            .filter(|(slot, w)| {
                **slot != Slot::Elsewhere && here(slot).is_none() && w.look_in.is_some()
            })
            .map(|(_, w)| (&w.item, w.look_in == Some(Disposition::Archive)))
            .collect();
        let found = self.find_moved(&gone).await?;
        let mut seen = Vec::with_capacity(wanted.len());
        for (slot, w) in slots.iter().zip(&wanted) {
            let folder = w
                .look_in
                .as_ref()
                .map(|d| self.source.destination(&self.link.folders, d).0.to_owned());
            seen.push(match (slot, here(slot), folder) {
                (Slot::Elsewhere, _, _) => Seen::Elsewhere,
                (_, Some(_), None) => Seen::Listed,
                (_, Some(uid), Some(folder)) if flagged.contains(&uid) => {
                    Seen::Found(Place::at(folder))
                }
                (_, Some(uid), Some(_)) => Seen::InInbox(Entry {
                    uid,
                    size: w.item.size,
                }),
                (_, None, None) => Seen::Gone,
                (_, None, Some(folder)) => match found.get(&w.item.item_id) {
                    Some(reference) => Seen::Found(Place {
                        at: folder,
                        reference: Some(reference.clone()),
                    }),
                    None => Seen::NotFound { looked_in: folder },
                },
            });
        }
        Ok(seen)
    }

    async fn archived(&mut self) -> Result<Vec<Place>, SourceError> {
        let link = &mut self.link;
        let validity = link.conn.examine(&link.folders.archive).await?;
        link.selected = Some(link.folders.archive.clone());
        // A search that failed leaves the connection as it is: one that timed out may still
        // answer, and nothing more may be sent on it (the archive stays selected, which
        // `selected` tells the next user).
        let uids = link.conn.search("ALL").await?;
        link.conn.select(&link.folders.inbox).await?;
        link.selected = Some(link.folders.inbox.clone());
        Ok(uids
            .into_iter()
            .map(|uid| Place {
                at: self.source.config.archive.clone(),
                reference: Some(names::archived_ref(validity, uid)),
            })
            .collect())
    }
}

/// In the selected folder, the UID of each wanted item's message: found by its Message-ID
/// and confirmed by its size and sha256 (the Message-ID is the sender's and may repeat).
async fn find_by_bytes(
    conn: &mut Connection,
    wanted: &[&Unfinished],
) -> Result<HashMap<i64, u32>, Error> {
    let mut found = HashMap::new();
    for item in wanted {
        let Some(message_id) = &item.message_id else {
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
                let matches = attributes.iter().any(
                    |a| matches!(a, AttributeValue::Rfc822Size(s) if u64::from(*s) == item.size),
                );
                if let (Some(uid), true) = (uid, matches) {
                    same_size.push(uid);
                }
            }
        })
        .await?;
        let bodies = fetch_bodies(conn, &same_size).await?;
        if let Some(uid) = bodies
            .iter()
            .find(|(_, bytes)| ItemKey::of(bytes).as_str() == item.sha256)
            .map(|(uid, _)| *uid)
        {
            found.insert(item.item_id, uid);
        }
    }
    Ok(found)
}

/// The UIDs of a batch whose bodies are downloaded: all but the oversized ones.
fn downloads(batch: &[Entry], max_item_bytes: u64) -> Vec<u32> {
    batch
        .iter()
        .filter(|e| e.size <= max_item_bytes)
        .map(|e| e.uid)
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
    let flag_only = !gone_criterion.is_empty();
    let unconfirmed = unconfirmed(&expected, &copied, flag_only);
    let still: HashSet<u32> = if unconfirmed.is_empty() {
        HashSet::new()
    } else {
        let criteria = format!("UID {}{gone_criterion}", names::uid_set(&unconfirmed));
        conn.search(&criteria).await?.into_iter().collect()
    };
    Ok(confirm(uids, &expected, &copied, &still))
}

/// The expected UIDs a move cannot count as done without a search: those without a COPYUID,
/// and all of them when the originals stay flagged (no UIDPLUS), where only the search for
/// them `UNDELETED` tells.
fn unconfirmed(expected: &[u32], copied: &HashMap<u32, String>, flag_only: bool) -> Vec<u32> {
    expected
        .iter()
        .copied()
        .filter(|u| flag_only || !copied.contains_key(u))
        .collect()
}

/// Which UIDs a move moved: expected to go, and not found by the search after it (`still`).
/// A tagged OK is no proof (a repeated `UID MOVE` answers OK too, RFC 6851 §3.3).
fn confirm(
    uids: &[u32],
    expected: &[u32],
    copied: &HashMap<u32, String>,
    still: &HashSet<u32>,
) -> MoveResult {
    let expected: HashSet<u32> = expected.iter().copied().collect();
    let mut result = MoveResult::default();
    for &uid in uids {
        if expected.contains(&uid) && !still.contains(&uid) {
            result.moved.insert(uid, copied.get(&uid).cloned());
        } else {
            result.left.push(uid);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_counts_once_copyuid_or_the_search_after_it_says_so() {
        let copied: HashMap<u32, String> = [(1, "9:1".to_owned())].into();
        // MOVE with COPYUID for 1 only: 2 and 3 need the search; 3 is still there.
        assert_eq!(unconfirmed(&[1, 2, 3], &copied, false), [2, 3]);
        let result = confirm(&[1, 2, 3], &[1, 2, 3], &copied, &[3].into());
        assert_eq!(
            result,
            MoveResult {
                moved: [(1, Some("9:1".to_owned())), (2, None)].into(),
                left: vec![3],
            }
        );
        // Without UIDPLUS every original is searched for, even one with COPYUID.
        assert_eq!(unconfirmed(&[1, 2], &copied, true), [1, 2]);
        // A UID the fallback never flagged (its COPY gave no COPYUID) is left.
        let result = confirm(&[1, 2], &[1], &copied, &HashSet::new());
        assert_eq!(result.left, [2]);
        assert!(result.moved.contains_key(&1));
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
