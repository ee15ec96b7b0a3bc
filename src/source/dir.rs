//! The local drop folder: files are listed (file-system events are only hints, the listing is
//! the truth), taken once they have been unchanged for the settle time, handled in batches,
//! and moved to the archive or error folder without ever overwriting; a failed file gets
//! `<name>.error.txt` beside it. A dropped `.eml` is a message, any other file an attachment
//! of its own.
//!
//! People and programs eingang does not control write the inbox, so every file-system call
//! goes through `folder`: relative to the three folders' handles, by the raw bytes of each
//! name, never through a link; a file is read only from a descriptor that is the listed
//! regular file. Anything else in the inbox (a link, a FIFO, a folder, a file with several
//! hard links) is reported once and left alone.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::folder::{self, Folder, Kind, Listed, NAME_MAX};
use super::reconcile::{Seen, Wanted};
use super::settle::Settling;
use super::{BatchLimits, Disposed, Error, Fetched, Inbox, Listing, Move, Shelf, Stray};
use crate::config::DirConfig;
use crate::disposition::Disposition;
use crate::escape;
use crate::item::{Item, ItemKey, ItemKind, Origin};
use crate::store::Place;

/// Items handled per store transaction; a drop folder has no download to bound.
const BATCH: BatchLimits = BatchLimits {
    items: 256,
    bytes: u64::MAX,
};
/// The suffix of the note beside a failed file.
const NOTE: &[u8] = b".error.txt";
/// How many numbered names (`ls-2.xml`, …) a move tries before it gives up.
const MAX_NAME_TRIES: u32 = 10_000;

/// One drop folder with its archive and error folders.
#[derive(Debug)]
pub struct DirSource {
    /// The source name.
    pub name: String,
    /// Folders and timings.
    pub config: DirConfig,
    /// Size and mtime of each file, and since when they are unchanged.
    settling: Settling<Vec<u8>>,
    /// The inotify watcher and its event channel, made on the first wait.
    events:
        tokio::sync::Mutex<Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)>>,
}

/// A file in the inbox as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    listed: Listed,
    /// The name as people see it: printable, and naming the file exactly (`escape::bytes`).
    shown: String,
}

impl super::Entry for Entry {
    fn key(&self) -> String {
        self.shown.clone()
    }
    fn size(&self) -> u64 {
        self.listed.size
    }
    fn name(&self) -> String {
        self.shown.clone()
    }
}

/// The three folders, opened for one pass.
#[derive(Debug)]
struct Folders {
    inbox: Folder,
    archive: Folder,
    error: Folder,
}

impl Folders {
    fn open(config: &DirConfig) -> Result<Folders, Error> {
        let open = |path: &Path| Folder::open(path).map_err(|e| Error::io(path, e));
        Ok(Folders {
            inbox: open(&config.inbox)?,
            archive: open(&config.archive)?,
            error: open(&config.error)?,
        })
    }

    /// Fails when a folder was swapped (for a link or another folder) since it was opened:
    /// the pass stops rather than work in a folder the config does not name.
    fn check(&self) -> Result<(), Error> {
        for folder in [&self.inbox, &self.archive, &self.error] {
            if !folder.is_still_there() {
                return Err(Error::io(
                    folder.path(),
                    std::io::Error::other(
                        "the folder was replaced while eingang worked in it (renamed, or swapped for a link); eingang does not follow it: check the folder",
                    ),
                ));
            }
        }
        Ok(())
    }

    fn of(&self, to: &Disposition) -> &Folder {
        match to {
            Disposition::Archive => &self.archive,
            Disposition::Error { .. } => &self.error,
        }
    }
}

/// The drop folder opened for one pass. File-system calls run on the blocking pool.
#[derive(Debug)]
pub struct DirInbox {
    source: Arc<DirSource>,
    folders: Arc<Folders>,
}

impl DirSource {
    /// A drop-folder source.
    pub fn new(name: String, config: DirConfig) -> DirSource {
        DirSource {
            name,
            settling: Settling::new(config.settle),
            config,
            events: tokio::sync::Mutex::new(None),
        }
    }

    /// Opens the three folders for a pass.
    pub fn open(self: &Arc<Self>) -> Result<DirInbox, Error> {
        Ok(DirInbox {
            source: self.clone(),
            folders: Arc::new(Folders::open(&self.config)?),
        })
    }

    /// Creates the three folders if they are missing.
    pub fn create_folders(&self) -> Result<(), Error> {
        for dir in [&self.config.inbox, &self.config.archive, &self.config.error] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(())
    }

    /// One line per folder for `eingang check`: whether it exists and is a folder eingang can
    /// hold (not a link).
    pub fn check_folders(&self) -> Vec<(String, Result<(), String>)> {
        [
            ("inbox", &self.config.inbox),
            ("archive", &self.config.archive),
            ("error", &self.config.error),
        ]
        .into_iter()
        .map(|(role, dir)| {
            let what = format!("{role} folder {}", escape::text(&dir.display().to_string()));
            let result = match Folder::open(dir) {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err("missing (eingang check --create-folders creates it)".to_owned())
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err("not a folder".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            (what, result)
        })
        .collect()
    }

    /// How many files wait in the inbox.
    pub fn pending_count(&self) -> usize {
        Folder::open(&self.config.inbox)
            .and_then(|inbox| inbox.list())
            .map(|listed| {
                listed
                    .iter()
                    .filter(|l| l.kind == Kind::File && !is_temporary(&l.name))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits at most `limit` (less while a file is settling) for a file-system event in the
    /// inbox. Events are hints only: the caller rescans after the wait either way, because
    /// events are lost on queue overflow and never arrive from network mounts.
    pub async fn wait_for_news(&self, limit: Duration) {
        let limit = self
            .settling
            .time_to_settle()
            .map_or(limit, |settle| settle.min(limit));
        let mut events = self.events.lock().await;
        if events.is_none() {
            *events = watch_inbox(&self.name, &self.config.inbox);
        }
        match events.as_mut() {
            Some((_, rx)) => {
                if tokio::time::timeout(limit, rx.recv()).await.is_ok() {
                    // Let the writer finish: a burst of events becomes one pass.
                    tokio::time::sleep(self.config.settle).await;
                    while rx.try_recv().is_ok() {}
                }
            }
            None => tokio::time::sleep(limit).await,
        }
    }

    /// The files of the inbox (oldest first) and what else lies there.
    fn list(&self, folders: &Folders) -> Result<(Vec<Entry>, Vec<Stray>), Error> {
        let listed = folders
            .inbox
            .list()
            .map_err(|e| Error::io(&self.config.inbox, e))?;
        let mut files = Vec::new();
        let mut strays = Vec::new();
        for l in listed {
            if is_temporary(&l.name) {
                continue;
            }
            let shown = escape::bytes(&l.name);
            match l.kind.why_not_taken() {
                None => files.push(Entry { listed: l, shown }),
                Some(why) => strays.push(Stray { name: shown, why }),
            }
        }
        files.sort_by(|a, b| {
            (a.listed.modified, &a.listed.name).cmp(&(b.listed.modified, &b.listed.name))
        });
        Ok((files, strays))
    }

    /// Reads a settled file from the descriptor that is the listed file. `None` when it
    /// changed, was swapped or vanished since it was listed: it waits for a later round.
    fn fetch(
        &self,
        folders: &Folders,
        entry: &Entry,
        max_bytes: u64,
    ) -> Result<Option<Item>, Error> {
        let fail = |e| Error::io(&self.config.inbox, e);
        crate::fault::wait_point("before_read");
        let Some(file) = folders.inbox.open_listed(&entry.listed).map_err(fail)? else {
            return Ok(None);
        };
        let origin = Origin {
            source: self.name.clone(),
            location: folders.inbox.shown(&entry.listed.name),
            file_name: Some(entry.shown.clone()),
        };
        let kind = ItemKind::of_file_name(&entry.shown);
        let size = entry.listed.size;
        let item = if size > max_bytes {
            let key = ItemKey::of_reader(file).map_err(fail)?;
            Item::oversized(key, size, kind, origin)
        } else {
            let bytes = Folder::read_all(file, size).map_err(fail)?;
            if bytes.len() as u64 != size {
                return Ok(None); // written to since it was listed
            }
            Item::new(bytes, kind, origin)
        };
        let unchanged = folders
            .inbox
            .look(&entry.listed.name)
            .ok()
            .flatten()
            .is_some_and(|now| now.id == entry.listed.id && now.modified == entry.listed.modified);
        Ok(unchanged.then_some(item))
    }

    /// Moves a handled file to the archive or error folder under a free name, and writes the
    /// reason beside a failed one. Returns where it lies now.
    fn dispose(
        &self,
        folders: &Folders,
        entry: &Entry,
        disposition: &Disposition,
    ) -> Result<String, Error> {
        let to = folders.of(disposition);
        let name = &entry.listed.name;
        // The name must still be the file that was decided: a swap after the read is not
        // moved under this outcome.
        let still = folders.inbox.look(name).ok().flatten();
        if still.is_none_or(|now| now.id != entry.listed.id) {
            return Err(Error::io(
                &self.config.inbox,
                std::io::Error::other(format!(
                    "{}: replaced by another file after it was read; left for the next pass",
                    entry.shown
                )),
            ));
        }
        let target = move_without_overwrite(&folders.inbox, name, to)
            .map_err(|e| Error::io(to.path(), e))?;
        if let Disposition::Error { item_id, reason } = disposition {
            let note = note_name(&target);
            let text = error_note(&entry.shown, *item_id, reason);
            if let Err(e) = to.write_new(&note, text.as_bytes()) {
                // The file is moved and its reason stored; only the note beside it is missing.
                tracing::error!(source = %self.name, file = %entry.shown, error = %e, "cannot write the note beside the failed file");
            }
        }
        Ok(to.shown(&target))
    }

    /// Where an unfinished item is: still in the inbox (the pass meets it again and the
    /// ledger, by its bytes, knows it), or in the folder its outcome sent it to.
    fn locate(&self, folders: &Folders, wanted: &Wanted) -> Seen<Entry> {
        let Some(name) = wanted.item.file_name.as_deref().and_then(escape::unescape) else {
            return Seen::Elsewhere;
        };
        if !wanted
            .item
            .location
            .starts_with(&escape::text(&self.config.inbox.display().to_string()).into_owned())
        {
            return Seen::Elsewhere;
        }
        if folders.inbox.has(&name) {
            return Seen::Listed;
        }
        let Some(look_in) = &wanted.look_in else {
            return Seen::Gone;
        };
        let folder = folders.of(look_in);
        match folder.find_by_hash(&name, &wanted.item.sha256) {
            Some(found) => Seen::Found(Place::at(folder.shown(&found))),
            None => Seen::NotFound {
                looked_in: escape::text(&folder.path().display().to_string()).into_owned(),
            },
        }
    }

    /// Puts a handled file back into the inbox (`eingang reprocess` from the error folder,
    /// removing its `.error.txt`; `eingang recover` from the archive). `place` is where the
    /// ledger says it lies, `<folder>/<name>`. Returns where it lies now.
    pub fn put_back(&self, place: &str, shelf: Shelf) -> Result<String, Error> {
        let folders = Folders::open(&self.config)?;
        let (from, path) = match shelf {
            Shelf::Archive => (&folders.archive, &self.config.archive),
            Shelf::Error => (&folders.error, &self.config.error),
        };
        let prefix = escape::text(&path.display().to_string()).into_owned();
        let name = place
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(escape::unescape)
            .ok_or_else(|| {
                Error::io(
                    path,
                    std::io::Error::other(format!("{place} is not a file of this folder")),
                )
            })?;
        let target = move_without_overwrite(from, &name, &folders.inbox)
            .map_err(|e| Error::io(&self.config.inbox, e))?;
        if shelf == Shelf::Error {
            from.remove(&note_name(&name))
                .map_err(|e| Error::io(path, e))?;
        }
        Ok(folders.inbox.shown(&target))
    }
}

impl DirInbox {
    /// Runs file-system work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DirSource, &Folders) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let (source, folders) = (self.source.clone(), self.folders.clone());
        tokio::task::spawn_blocking(move || f(&source, &folders))
            .await
            .map_err(|e| Error::Stopped(e.to_string()))
    }
}

impl Inbox for DirInbox {
    type Entry = Entry;

    fn batch_limits(&self) -> BatchLimits {
        BATCH
    }

    async fn list(&mut self, tried: &HashSet<String>) -> Result<Listing<Entry>, Error> {
        let tried = tried.clone();
        self.blocking(move |source, folders| {
            folders.check()?;
            let (files, strays) = source.list(folders)?;
            let files: Vec<Entry> = files
                .into_iter()
                .filter(|e| !tried.contains(&e.shown))
                .collect();
            // A file unchanged for the settle time by its own status-change time is complete
            // even at first sight (after a restart): no writer has touched it since.
            let now = SystemTime::now();
            let settle = source.config.settle;
            let quiet = |e: &Entry| {
                now.duration_since(e.listed.changed)
                    .is_ok_and(|age| age >= settle)
            };
            let (ready, waiting) = source.settling.split(
                files,
                |e| (e.listed.name.clone(), e.listed.size, e.listed.modified),
                quiet,
            );
            Ok(Listing {
                ready,
                waiting,
                settle_in: source.settling.time_to_settle(),
                strays: Some(strays),
            })
        })
        .await?
    }

    async fn fetch(
        &mut self,
        batch: Vec<Entry>,
        max_item_bytes: u64,
    ) -> Result<Vec<Fetched<Entry>>, Error> {
        self.blocking(move |source, folders| {
            batch
                .into_iter()
                .map(|entry| {
                    let item = source.fetch(folders, &entry, max_item_bytes)?;
                    Ok(Fetched { entry, item })
                })
                .collect()
        })
        .await?
    }

    async fn dispose(&mut self, moves: Vec<Move<Entry>>) -> Disposed {
        let done = self
            .blocking(move |source, folders| {
                let mut disposed = Disposed::default();
                if let Err(e) = folders.check() {
                    disposed.broken = Some(e);
                    return disposed;
                }
                for m in &moves {
                    match source.dispose(folders, &m.entry, &m.disposition) {
                        Ok(place) => disposed.placed.push((m.item_id, Place::at(place))),
                        Err(e) => disposed.failed.push((m.item_id, e.to_string())),
                    }
                }
                folders.archive.sync();
                folders.error.sync();
                disposed
            })
            .await;
        done.unwrap_or_else(|e| Disposed {
            broken: Some(e),
            ..Disposed::default()
        })
    }

    async fn locate(&mut self, wanted: Vec<Wanted>) -> Result<Vec<Seen<Entry>>, Error> {
        self.blocking(move |source, folders| {
            wanted.iter().map(|w| source.locate(folders, w)).collect()
        })
        .await
    }

    async fn archived(&mut self) -> Result<Vec<Place>, Error> {
        self.blocking(|source, folders| {
            let listed = folders
                .archive
                .list()
                .map_err(|e| Error::io(&source.config.archive, e))?;
            Ok(listed
                .into_iter()
                .filter(|l| l.kind == Kind::File && !l.name.ends_with(NOTE))
                .map(|l| Place::at(folders.archive.shown(&l.name)))
                .collect())
        })
        .await?
    }
}

/// Starts an inotify watch on the inbox; `None` (with a warning) when the system refuses, and
/// the rescans carry on alone.
fn watch_inbox(
    source: &str,
    inbox: &Path,
) -> Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::{EventKind, RecursiveMode, Watcher};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let handler = move |event: notify::Result<notify::Event>| {
        // CRATES.md: trigger on close-after-write and renames, never on create alone.
        let relevant = event.is_err()
            || event.as_ref().is_ok_and(|e| {
                e.need_rescan()
                    || matches!(
                        e.kind,
                        EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Modify(ModifyKind::Name(_))
                            | EventKind::Other
                    )
            });
        if relevant {
            let _ = tx.try_send(()); // a full channel already means "pass pending"
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(inbox, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match started {
        Ok(watcher) => Some((watcher, rx)),
        Err(e) => {
            tracing::warn!(source, error = %e, "no file-system events; rescanning only");
            None
        }
    }
}

/// Names that are still being written or are not ours: hidden files, `*.tmp`, `*.part`,
/// browser partial downloads and editor backups.
pub(super) fn is_temporary(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with(b".")
        || name.ends_with(b"~")
        || [
            &b".tmp"[..],
            b".part",
            b".partial",
            b".crdownload",
            b".filepart",
        ]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// The text of `<name>.error.txt` beside a failed file: the reason, and how to try again.
/// Both come in escaped (no control character reaches the note).
pub(super) fn error_note(name: &str, item_id: i64, reason: &str) -> String {
    let reason = escape::text(reason);
    // Most reasons start with the file name already; say it once.
    let reason = match reason.strip_prefix(name).and_then(|r| r.strip_prefix(": ")) {
        Some(rest) => rest,
        None => &reason,
    };
    format!(
        "{name}: {reason}\n\nitem {item_id} in the eingang store; after fixing the cause run:\n  eingang reprocess {item_id}\n"
    )
}

/// The note's name beside a file.
fn note_name(name: &[u8]) -> Vec<u8> {
    let mut note = name.to_vec();
    note.extend_from_slice(NOTE);
    note
}

/// Moves `name` from `from` into `to` under its own name, or `stem-2.ext`, `stem-3.ext`, …
/// when taken (a name is also taken while a note of that name lies there, so each note stays
/// with its file); a name too long for a suffix and its note is shortened, its extension kept.
/// Never replaces anything. Returns the name it got.
fn move_without_overwrite(from: &Folder, name: &[u8], to: &Folder) -> std::io::Result<Vec<u8>> {
    let max_len = NAME_MAX - NOTE.len();
    for n in 1..=MAX_NAME_TRIES {
        let candidate = folder::numbered(name, n, max_len);
        if to.has(&note_name(&candidate)) {
            continue;
        }
        match from.move_into(name, to, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if folder::is_taken(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(format!(
        "no free name after {MAX_NAME_TRIES} tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_ignored() {
        for name in [
            &b".hidden.csv"[..],
            b"ls.csv.part",
            b"LS.TMP",
            b"x.crdownload",
            b"ls.csv~",
        ] {
            assert!(is_temporary(name), "{name:?}");
        }
        assert!(!is_temporary(b"ls.csv"));
    }

    #[test]
    fn moves_never_overwrite_and_keep_each_note_with_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["in", "fehler"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("fehler/ls.csv"), b"old").unwrap();
        std::fs::write(tmp.path().join("fehler/ls-2.csv.error.txt"), b"note").unwrap();
        std::fs::write(tmp.path().join("in/ls.csv"), b"new").unwrap();
        let inbox = Folder::open(&tmp.path().join("in")).unwrap();
        let error = Folder::open(&tmp.path().join("fehler")).unwrap();
        let target = move_without_overwrite(&inbox, b"ls.csv", &error).unwrap();
        assert_eq!(target, b"ls-3.csv");
        assert_eq!(
            std::fs::read(tmp.path().join("fehler/ls.csv")).unwrap(),
            b"old"
        );
        assert_eq!(
            std::fs::read(tmp.path().join("fehler/ls-3.csv")).unwrap(),
            b"new"
        );
    }

    #[test]
    fn a_note_shows_no_control_character_of_the_reason() {
        let note = error_note("a.csv", 3, "a.csv: row 2: bad \u{1b}[2J\nvalue");
        assert!(
            note.starts_with("a.csv: row 2: bad \\x1b[2J\\x0avalue\n"),
            "{note}"
        );
        assert!(note.contains("eingang reprocess 3"));
    }
}
