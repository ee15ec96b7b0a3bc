//! One owner per store (DESIGN.md promise 9): a lock file beside the SQLite store, held with
//! `flock` for as long as the owner lives (the kernel frees it when the process dies, however
//! it dies), and naming its holder. `eingang run` holds it for its life; `sync`, `import` and
//! `reprocess` hold it while they work, so no two of them ever work one inbox at once. Two
//! daemons on one store would race for the same items.
//!
//! A PostgreSQL store is held the same way with a session advisory lock, on a connection of
//! the holder's own that lives as long as the lock; the holder is named by that connection's
//! `application_name`. PostgreSQL frees the lock when the session ends (keepalives notice a
//! holder that vanished). Daemons hold it shared: several work one PostgreSQL store, each
//! source owned by one of them (`store::lease`); a command that works inboxes itself holds it
//! alone.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use crate::store::{Location, Target, postgres};

/// How often a waiting command looks at the lock again.
const RETRY: Duration = Duration::from_millis(200);

/// The name of this machine, as the owner of a source on a shared store names it.
pub fn host() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    let name: String = name.split_whitespace().collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// This daemon as the owner of a source on a shared store: host and process id.
pub fn daemon_name() -> String {
    format!("{} {}", host(), std::process::id())
}

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
    _held: Held,
}

/// What keeps a lock: the open lock file, or the lock's database session.
enum Held {
    File(File),
    Session(std::sync::Arc<tokio_postgres::Client>),
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::File(file) => write!(f, "{file:?}"),
            Held::Session(client) => {
                write!(f, "a database session (closed: {})", client.is_closed())
            }
        }
    }
}

/// The advisory lock of a PostgreSQL store's owner (two-key space, beside the writer lock).
pub(crate) const OWNER_LOCK: (i32, i32) = (0x6569_6e67, 2);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Someone else holds it.
    #[error("the store is in use by {0}")]
    Held(Holder),
    /// The lock file could not be opened or locked.
    #[error("{path}: {why}")]
    Io {
        /// The lock file.
        path: String,
        /// The cause.
        why: std::io::Error,
    },
    /// The database of a PostgreSQL store could not be reached or asked.
    #[error(transparent)]
    Database(#[from] crate::store::Error),
}

impl StoreLock {
    /// The lock file of a store: `<store>.lock`.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the store's lock for `role` without waiting.
    pub fn take(store: &Location, role: &str) -> Result<StoreLock, Error> {
        match store {
            Location::File(path) => Self::take_file(path, role),
            Location::Postgres(target) => Self::take_session(target, role),
        }
    }

    fn take_session(target: &Target, role: &str) -> Result<StoreLock, Error> {
        let mut config = target.config();
        config.application_name(format!("eingang {} {role} {}", std::process::id(), host()));
        // Daemons share the store (each source has its own lease); a command that works the
        // inboxes itself has it alone.
        let take = if role == "run" {
            "SELECT pg_try_advisory_lock_shared($1, $2)"
        } else {
            "SELECT pg_try_advisory_lock($1, $2)"
        };
        let at = target.clone();
        let client = postgres::block(async move {
            let client = postgres::connect(&at, config).await?;
            let locked: bool = client
                .query_one(take, &[&OWNER_LOCK.0, &OWNER_LOCK.1])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(postgres::error)?;
            if locked {
                // A frozen holder loses the lock like a source's owner does: the daemons on the
                // store are the live ones.
                crate::store::lease::keep_alive(&client).await?;
                let client = std::sync::Arc::new(client);
                let beats = std::sync::Arc::new(tokio::sync::watch::Sender::new(false));
                tokio::spawn(crate::store::lease::heartbeat(
                    std::sync::Arc::downgrade(&client),
                    beats,
                ));
                return Ok(Ok(client));
            }
            // Advisory locks are per database: the same key in another database of the
            // server is another store's.
            let name: Option<String> = client
                .query(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE l.locktype = 'advisory' AND l.granted
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND l.classid = $1::int4::oid AND l.objid = $2::int4::oid AND l.objsubid = 2",
                    &[&OWNER_LOCK.0, &OWNER_LOCK.1],
                )
                .await
                .map_err(postgres::error)?
                .first()
                .and_then(|row| row.try_get(0).ok());
            Ok(Err(name))
        })?;
        match client {
            Ok(client) => Ok(StoreLock {
                _held: Held::Session(client),
            }),
            Err(name) => {
                let mut words = name.as_deref().unwrap_or("").split_whitespace().skip(1);
                Err(Error::Held(
                    match (words.next().and_then(|p| p.parse().ok()), words.next()) {
                        (Some(pid), Some(role)) => Holder {
                            pid,
                            role: role.to_owned(),
                        },
                        _ => Holder {
                            pid: 0,
                            role: "another process".to_owned(),
                        },
                    },
                ))
            }
        }
    }

    fn take_file(store: &Path, role: &str) -> Result<StoreLock, Error> {
        let path = Self::path_for(store);
        let io = |why| Error::Io {
            path: path.display().to_string(),
            why,
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
        Ok(StoreLock {
            _held: Held::File(file),
        })
    }

    /// Takes the lock, waiting up to `limit` while a one-shot command holds it; a daemon
    /// holding it is returned at once (`Error::Held`), since it does not finish by itself.
    pub fn take_waiting(store: &Location, role: &str, limit: Duration) -> Result<StoreLock, Error> {
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
}

/// The process id of the daemon that works a SQLite store now, as its lock file names it
/// (without touching the lock: a daemon starting now must not find it taken).
pub fn running_daemon(store: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(StoreLock::path_for(store)).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    (words.next() == Some("run") && is_running(pid)).then_some(pid)
}

/// Whether a process of this machine with this id runs.
pub fn is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
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
        let store = Location::File(dir.path().join("eingang.db"));
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
