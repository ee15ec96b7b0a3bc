//! One owner per store (DESIGN.md promise 9): a lock file beside the SQLite store, held with
//! `flock` for as long as the owner lives (the kernel frees it when the process dies, however
//! it dies), and naming its holder. `eingang run` holds it for its life; `sync`, `import` and
//! `reprocess` hold it while they work, so no two of them ever work one inbox at once. Two
//! daemons on one store would race for the same items.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// How often a waiting command looks at the lock again.
const RETRY: Duration = Duration::from_millis(200);

/// Who holds a store's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// What it runs: `run` for the daemon, else the command.
    pub role: String,
}

impl Holder {
    /// Whether the holder is the daemon.
    pub fn is_daemon(&self) -> bool {
        self.role == "run"
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.role.as_str() {
            "run" => write!(f, "eingang run (process {})", self.pid),
            role => write!(f, "eingang {role} (process {})", self.pid),
        }
    }
}

/// A held lock; dropping it (or the process ending) frees it.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Someone else holds it.
    #[error("the store is in use by {0}")]
    Held(Holder),
    /// The lock file could not be opened or locked.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl StoreLock {
    /// The lock file of a store: `<store>.lock`.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the store's lock for `role` without waiting.
    pub fn take(store: &Path, role: &str) -> Result<StoreLock, Error> {
        let path = Self::path_for(store);
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(io)?
        };
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(Error::Held(holder_of(&mut file))),
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{} {role}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(StoreLock { _file: file, path })
    }

    /// Takes the lock, waiting up to `limit` while a one-shot command holds it; a daemon
    /// holding it is returned at once (`Error::Held`), since it does not finish by itself.
    pub fn take_waiting(store: &Path, role: &str, limit: Duration) -> Result<StoreLock, Error> {
        let end = Instant::now() + limit;
        loop {
            match Self::take(store, role) {
                Err(Error::Held(holder)) if !holder.is_daemon() && Instant::now() < end => {
                    std::thread::sleep(RETRY);
                }
                other => return other,
            }
        }
    }

    /// The lock file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads who holds a lock from the file; a holder that has not written itself in yet (it
/// took the lock a moment ago) is read again shortly.
fn holder_of(file: &mut File) -> Holder {
    for _ in 0..10 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            let mut words = text.split_whitespace();
            if let (Some(pid), Some(role)) =
                (words.next().and_then(|p| p.parse().ok()), words.next())
            {
                return Holder {
                    pid,
                    role: role.to_owned(),
                };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Holder {
        pid: 0,
        role: "another process".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_and_told_who_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("eingang.db");
        let held = StoreLock::take(&store, "run").unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        match StoreLock::take(&store, "sync") {
            Err(Error::Held(holder)) => {
                assert_eq!(holder.pid, std::process::id());
                assert!(holder.is_daemon());
                assert_eq!(
                    holder.to_string(),
                    format!("eingang run (process {})", std::process::id())
                );
            }
            other => panic!("{other:?}"),
        }
        let started = Instant::now();
        assert!(StoreLock::take_waiting(&store, "sync", Duration::from_secs(5)).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for a daemon"
        );
        drop(held);
        assert!(StoreLock::take(&store, "sync").is_ok());
    }
}
