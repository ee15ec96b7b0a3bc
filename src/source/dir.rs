//! The local drop folder: files are listed (file-system events are only hints, the listing is
//! the truth), taken once their size and mtime have been stable for the settle time, handled in
//! batches, and moved to the archive or error folder without ever overwriting; a failed file
//! gets `<name>.error.txt` beside it. A dropped `.eml` is a message, any other file an
//! attachment of its own.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::reconcile::{Seen, Wanted};
use super::settle::Settling;
use super::{BatchLimits, Disposed, Error, Fetched, Inbox, Listing, Move};
use crate::config::DirConfig;
use crate::disposition::Disposition;
use crate::item::{Item, ItemKey, ItemKind, Origin};
use crate::store::Place;

/// Items handled per store transaction; a drop folder has no download to bound.
const BATCH: BatchLimits = BatchLimits {
    items: 256,
    bytes: u64::MAX,
};

/// One drop folder with its archive and error folders.
#[derive(Debug)]
pub struct DirSource {
    /// The source name.
    pub name: String,
    /// Folders and timings.
    pub config: DirConfig,
    /// Size and mtime of each file, and since when they are unchanged.
    settling: Settling<PathBuf>,
    /// The inotify watcher and its event channel, made on the first wait.
    events:
        tokio::sync::Mutex<Option<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)>>,
}

/// A file in the inbox as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    path: PathBuf,
    name: String,
    size: u64,
    modified: SystemTime,
}

impl super::Entry for Entry {
    fn key(&self) -> String {
        self.path.display().to_string()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// The drop folder opened for one pass. File-system calls run on the blocking pool.
#[derive(Debug)]
pub struct DirInbox {
    source: Arc<DirSource>,
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

    /// Opens the folder for a pass.
    pub fn open(self: &Arc<Self>) -> DirInbox {
        DirInbox {
            source: self.clone(),
        }
    }

    /// Creates the three folders if they are missing.
    pub fn create_folders(&self) -> Result<(), Error> {
        for dir in [&self.config.inbox, &self.config.archive, &self.config.error] {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(())
    }

    /// One line per folder for `eingang check`: whether it exists and is a folder.
    pub fn check_folders(&self) -> Vec<(String, Result<(), String>)> {
        [
            ("inbox", &self.config.inbox),
            ("archive", &self.config.archive),
            ("error", &self.config.error),
        ]
        .into_iter()
        .map(|(role, dir)| {
            let what = format!("{role} folder {}", dir.display());
            let result = match fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err("not a folder".to_owned()),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Err("missing (eingang check --create-folders creates it)".to_owned())
                }
                Err(e) => Err(e.to_string()),
            };
            (what, result)
        })
        .collect()
    }

    /// How many files wait in the inbox.
    pub fn pending_count(&self) -> usize {
        self.list().map(|l| l.len()).unwrap_or(0)
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

    fn list(&self) -> Result<Vec<Entry>, Error> {
        let dir = &self.config.inbox;
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue; // vanished between listing and stat
            };
            if !meta.is_file() {
                continue;
            }
            entries.push(Entry {
                path: entry.path(),
                name,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        entries.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(entries)
    }

    /// Reads a settled file. `None` when it changed or vanished since it was listed: it is
    /// still being written, or someone took it.
    fn fetch(&self, entry: &Entry, max_bytes: u64) -> Result<Option<Item>, Error> {
        let origin = Origin {
            source: self.name.clone(),
            location: entry.path.display().to_string(),
            file_name: Some(entry.name.clone()),
        };
        let kind = ItemKind::of_file_name(&entry.name);
        let read = if entry.size > max_bytes {
            File::open(&entry.path)
                .and_then(ItemKey::of_reader)
                .map(|key| Item::oversized(key, entry.size, kind, origin))
        } else {
            fs::read(&entry.path).map(|bytes| Item::new(bytes, kind, origin))
        };
        let item = match read {
            Ok(item) => item,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&entry.path, e)),
        };
        let unchanged = fs::metadata(&entry.path)
            .is_ok_and(|m| m.len() == entry.size && m.modified().ok() == Some(entry.modified));
        Ok((unchanged && item.size() == entry.size).then_some(item))
    }

    /// Moves a handled file to the archive or error folder under a free name, and writes the
    /// reason beside a failed one. Returns where it lies now.
    fn dispose(&self, entry: &Entry, disposition: &Disposition) -> Result<PathBuf, Error> {
        let dir = match disposition {
            Disposition::Archive => &self.config.archive,
            Disposition::Error { .. } => &self.config.error,
        };
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let target = move_without_overwrite(&entry.path, dir, &entry.name)?;
        if let Disposition::Error { item_id, reason } = disposition {
            let note = error_note_path(&target);
            let text = error_note(&entry.name, *item_id, reason);
            write_synced(&note, text.as_bytes()).map_err(|e| Error::io(&note, e))?;
        }
        Ok(target)
    }

    /// Where an unfinished item is: still in the inbox (the pass meets it again and the
    /// ledger, by its bytes, knows it), or in the folder its outcome sent it to.
    fn locate(&self, wanted: &Wanted) -> Seen<Entry> {
        if Path::new(&wanted.item.location).exists() {
            return Seen::Listed;
        }
        let folder = match &wanted.look_in {
            Some(Disposition::Archive) => &self.config.archive,
            Some(Disposition::Error { .. }) => &self.config.error,
            None => return Seen::Gone,
        };
        let name = wanted.item.file_name.as_deref().unwrap_or_default();
        match find_by_hash(folder, name, &wanted.item.sha256) {
            Some(path) => Seen::Found(Place::at(path.display().to_string())),
            None => Seen::NotFound {
                looked_in: folder.display().to_string(),
            },
        }
    }

    /// Puts a failed file back into the inbox (for `eingang reprocess`) and removes its
    /// `.error.txt`. Returns the new path.
    pub fn put_back(&self, failed: &Path) -> Result<PathBuf, Error> {
        let name = failed
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = move_without_overwrite(failed, &self.config.inbox, &name)?;
        match fs::remove_file(error_note_path(failed)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(failed, e)),
        }
        Ok(target)
    }
}

impl DirInbox {
    /// Runs file-system work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DirSource) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || f(&source))
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
        self.blocking(move |source| {
            let listed: Vec<Entry> = source
                .list()?
                .into_iter()
                .filter(|e| !tried.contains(&super::Entry::key(e)))
                .collect();
            let (ready, waiting) = source
                .settling
                .split(listed, |e| (e.path.clone(), e.size, e.modified));
            Ok(Listing {
                ready,
                waiting,
                settle_in: source.settling.time_to_settle(),
            })
        })
        .await?
    }

    async fn fetch(
        &mut self,
        batch: Vec<Entry>,
        max_item_bytes: u64,
    ) -> Result<Vec<Fetched<Entry>>, Error> {
        self.blocking(move |source| {
            batch
                .into_iter()
                .map(|entry| {
                    let item = source.fetch(&entry, max_item_bytes)?;
                    Ok(Fetched { entry, item })
                })
                .collect()
        })
        .await?
    }

    async fn dispose(&mut self, moves: Vec<Move<Entry>>) -> Disposed {
        let done = self
            .blocking(move |source| {
                let mut disposed = Disposed::default();
                for m in &moves {
                    match source.dispose(&m.entry, &m.disposition) {
                        Ok(path) => disposed
                            .placed
                            .push((m.item_id, Place::at(path.display().to_string()))),
                        Err(e) => disposed.failed.push((m.item_id, e.to_string())),
                    }
                }
                for dir in [&source.config.archive, &source.config.error] {
                    sync_dir(dir);
                }
                disposed
            })
            .await;
        done.unwrap_or_else(|e| Disposed {
            broken: Some(e),
            ..Disposed::default()
        })
    }

    async fn locate(&mut self, wanted: Vec<Wanted>) -> Result<Vec<Seen<Entry>>, Error> {
        self.blocking(move |source| wanted.iter().map(|w| source.locate(w)).collect())
            .await
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

/// The file in `folder` named `name` or `stem-N.ext` whose bytes hash to `sha256`.
fn find_by_hash(folder: &Path, name: &str, sha256: &str) -> Option<PathBuf> {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    fs::read_dir(folder)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with(stem)
                    && !n.to_string_lossy().ends_with(".error.txt")
            })
        })
        .find(|p| {
            File::open(p)
                .and_then(ItemKey::of_reader)
                .is_ok_and(|key| key.as_str() == sha256)
        })
}

/// Names that are still being written or are not ours: hidden files, `*.tmp`, `*.part`,
/// browser partial downloads and editor backups.
pub(super) fn is_temporary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".partial", ".crdownload", ".filepart"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

/// The text of `<name>.error.txt` beside a failed file: the reason, and how to try again.
pub(super) fn error_note(name: &str, item_id: i64, reason: &str) -> String {
    // Most reasons start with the file name already; say it once.
    let reason = match reason.strip_prefix(name).and_then(|r| r.strip_prefix(": ")) {
        Some(rest) => rest,
        None => reason,
    };
    format!(
        "{name}: {reason}\n\nitem {item_id} in the eingang store; after fixing the cause run:\n  eingang reprocess {item_id}\n"
    )
}

/// The `n`-th name tried for `name` in a folder: `name` itself, then `stem-2.ext`,
/// `stem-3.ext`, …
pub(super) fn numbered_name(name: &str, n: u32) -> String {
    if n <= 1 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}-{n}.{ext}"),
        _ => format!("{name}-{n}"),
    }
}

fn error_note_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".error.txt");
    target.with_file_name(name)
}

/// Renames `from` into `dir` as `name`, or `name-2`, `name-3`, … when taken; never replaces an
/// existing file (`RENAME_NOREPLACE`), and the file is never in two places at once.
fn move_without_overwrite(from: &Path, dir: &Path, name: &str) -> Result<PathBuf, Error> {
    for n in 1..=10_000u32 {
        let candidate = dir.join(numbered_name(name, n));
        if error_note_path(&candidate).exists() {
            continue; // keep each file's reason unambiguous
        }
        match rename_noreplace(from, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(from, e)),
        }
    }
    Err(Error::io(
        dir,
        std::io::Error::other("no free name after 10000 tries"),
    ))
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (src, dst) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems without RENAME_NOREPLACE (some network mounts): a hard link claims
        // the name atomically, then the source name goes.
        Some(libc::EINVAL | libc::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        // Another file system: copy under the claimed name, make it durable, then remove.
        Some(libc::EXDEV) => {
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(to)?;
            std::io::copy(&mut File::open(from)?, &mut out)?;
            out.sync_all()?;
            fs::remove_file(from)
        }
        _ => Err(err),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes the renames into `dir` durable. Best effort: not every file system can sync a folder.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_ignored() {
        for name in [
            ".hidden.csv",
            "ls.csv.part",
            "LS.TMP",
            "x.crdownload",
            "ls.csv~",
        ] {
            assert!(is_temporary(name), "{name}");
        }
        assert!(!is_temporary("ls.csv"));
    }

    #[test]
    fn moves_never_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("archiv");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("ls.csv"), b"old").unwrap();
        let src = tmp.path().join("ls.csv");
        fs::write(&src, b"new").unwrap();
        let target = move_without_overwrite(&src, &dest, "ls.csv").unwrap();
        assert_eq!(target, dest.join("ls-2.csv"));
        assert_eq!(fs::read(dest.join("ls.csv")).unwrap(), b"old");
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!src.exists());
    }
}
