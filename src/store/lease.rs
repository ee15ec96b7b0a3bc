//! One owner per source on a PostgreSQL store (RECIPES.md §6): a session advisory lock on a
//! connection of the owner's own, unpooled, with TCP keepalives (PostgreSQL frees the lock
//! when it sees that session end), plus an epoch in `source_leases` that every commit for the
//! source checks (`Store::fence`), so that an owner that lost its lock (paused, partitioned,
//! its connection killed) commits nothing for the source again, even before it notices.

use std::sync::{Arc, Weak};
use std::time::Duration;

use std::collections::HashMap;

use super::postgres::{self, Target};
use super::{Error, Fence, Store};

/// How often the owner tells the database it is alive, on the lock's connection.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// How long the database waits for the next heartbeat before it ends the lock's session and
/// so frees the source (`idle_session_timeout`): a frozen owner (SIGSTOP, a stalled VM) keeps
/// its TCP connection alive, since the kernel still answers keepalives for it.
pub const SILENCE: Duration = Duration::from_secs(15);

/// A source owned by this process while the value lives; dropping it ends the lock's session,
/// which frees the source for another daemon.
pub struct SourceLease {
    client: Arc<tokio_postgres::Client>,
    fence: Fence,
    /// Set once a heartbeat failed: the session is gone or going, and with it the lock.
    lost: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for SourceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLease")
            .field("fence", &self.fence)
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

/// The 64-bit advisory lock key of a source, in SQL (a key space apart from the store's
/// two-key locks); `$1` is the source's name.
const SOURCE_KEY: &str = "hashtextextended('eingang-source:' || $1, 0)";

impl SourceLease {
    /// Takes `source` for `owner` (host and process id) unless another session holds it
    /// (`None`), and moves its epoch on: whatever an earlier owner still tries to commit
    /// for it is refused from now on.
    pub fn take(target: &Target, source: &str, owner: &str) -> Result<Option<SourceLease>, Error> {
        let mut config = target.config();
        config.application_name(format!("eingang {owner} source {source}"));
        let (source, owner, at) = (source.to_owned(), owner.to_owned(), target.clone());
        postgres::block(async move {
            let client = postgres::connect(&at, config).await?;
            keep_alive(&client).await?;
            let locked: bool = client
                .query_one(
                    &format!("SELECT pg_try_advisory_lock({SOURCE_KEY})"),
                    &[&source],
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(postgres::error)?;
            if !locked {
                return Ok(None);
            }
            let epoch: i64 = client
                .query_one(
                    "INSERT INTO source_leases (source, owner, epoch) VALUES ($1, $2, 1)
                     ON CONFLICT (source) DO UPDATE
                     SET owner = EXCLUDED.owner, epoch = source_leases.epoch + 1
                     RETURNING epoch",
                    &[&source, &owner],
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(postgres::error)?;
            let client = Arc::new(client);
            let lost = Arc::new(tokio::sync::watch::Sender::new(false));
            tokio::spawn(heartbeat(Arc::downgrade(&client), lost.clone()));
            Ok(Some(SourceLease {
                client,
                fence: Fence {
                    source,
                    owner,
                    epoch,
                },
                lost,
            }))
        })
    }

    /// What a commit for the source must find in `source_leases` (`Store::fence`).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether the lock's session looks alive, without asking the database: no heartbeat
    /// failed and the connection is open. A `false` is final; a `true` is confirmed by
    /// `held`.
    pub fn alive(&self) -> bool {
        !*self.lost.borrow() && !self.client.is_closed()
    }

    /// Becomes `true` once the lease is known lost (a heartbeat failed, or `held` said no):
    /// for a source task that waits for news to stop waiting.
    pub fn lost(&self) -> tokio::sync::watch::Receiver<bool> {
        self.lost.subscribe()
    }

    /// Whether the source is still this owner's: the lock's session is alive and the lease
    /// is still the one it took. To be asked after an item's commit and before its move (the
    /// IMAP move, the FTP rename, the file move).
    pub fn held(&self) -> bool {
        if !self.alive() {
            return false;
        }
        let client = self.client.clone();
        let fence = self.fence.clone();
        let held = postgres::block(async move {
            // The lock itself, asked on its own session, and the epoch it was taken at.
            let row = client
                .query_opt(
                    &format!(
                        "SELECT l.owner, l.epoch FROM source_leases l, pg_locks k
                         WHERE l.source = $1 AND k.pid = pg_backend_pid()
                           AND k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
                           AND k.classid = (({SOURCE_KEY} >> 32) & 4294967295)::oid
                           AND k.objid = ({SOURCE_KEY} & 4294967295)::oid"
                    ),
                    &[&fence.source],
                )
                .await
                .map_err(postgres::error)?;
            Ok(row.is_some_and(|r| {
                r.try_get::<_, String>(0).is_ok_and(|o| o == fence.owner)
                    && r.try_get::<_, i64>(1).is_ok_and(|e| e == fence.epoch)
            }))
        })
        .unwrap_or(false);
        if !held {
            self.lost.send_replace(true);
        }
        held
    }
}

/// A daemon working a shared store, as the database sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Its machine.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Since when it holds the store (RFC 3339, UTC).
    pub since: String,
}

impl Store {
    /// The daemon that owns each source of a shared store now, by source, as host and process
    /// id: the lease of a session that holds the source's lock. Empty on a SQLite store.
    pub fn source_owners(&self) -> Result<HashMap<String, String>, Error> {
        let conn = self.lock();
        if !conn.is_postgres() {
            return Ok(HashMap::new());
        }
        let key = SOURCE_KEY.replace("$1", "l.source");
        let mut stmt = conn.prepare(&format!(
            "SELECT l.source, l.owner FROM source_leases l
             WHERE EXISTS (SELECT 1 FROM pg_locks k
               WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 1
                 AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND k.classid = (({key} >> 32) & 4294967295)::oid
                 AND k.objid = ({key} & 4294967295)::oid)"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The PostgreSQL server's version; `None` on a SQLite store.
    pub fn server_version(&self) -> Result<Option<String>, Error> {
        let conn = self.lock();
        if !conn.is_postgres() {
            return Ok(None);
        }
        Ok(Some(conn.query_row(
            "SELECT current_setting('server_version')",
            [],
            |r| r.get(0),
        )?))
    }

    /// Opens a write transaction, as a commit does (with the store's writer lock), and rolls
    /// it back: the store takes writes now.
    pub fn probe_write(&self) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(super::db::TransactionBehavior::Immediate)?;
        tx.query_row("SELECT count(*) FROM source_leases", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(())
    }

    /// The daemons that hold a shared store now (`eingang run`, each with its shared lock
    /// session), oldest first. Empty on a SQLite store.
    pub fn daemons(&self) -> Result<Vec<Daemon>, Error> {
        let conn = self.lock();
        if !conn.is_postgres() {
            return Ok(Vec::new());
        }
        let (class, object) = crate::lock::OWNER_LOCK;
        let mut stmt = conn.prepare(&format!(
            "SELECT a.application_name,
                    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM pg_locks k JOIN pg_stat_activity a ON a.pid = k.pid
             WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
               AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND k.classid = {class}::int4::oid AND k.objid = {object}::int4::oid
             ORDER BY a.backend_start"
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        let mut daemons = Vec::new();
        for (name, since) in rows.collect::<Result<Vec<(String, String)>, _>>()? {
            // `eingang <pid> run <host>`, as `lock` names the session.
            let words: Vec<&str> = name.split_whitespace().collect();
            if let ["eingang", pid, "run", host] = words.as_slice()
                && let Ok(pid) = pid.parse()
            {
                daemons.push(Daemon {
                    host: (*host).to_owned(),
                    pid,
                    since,
                });
            }
        }
        Ok(daemons)
    }
}

/// Has the server end a lock's session once its holder falls silent for `SILENCE`, whatever
/// the holder's kernel still answers to keepalives; `heartbeat` keeps it from falling silent.
pub(crate) async fn keep_alive(client: &tokio_postgres::Client) -> Result<(), Error> {
    client
        .batch_execute(&format!(
            "SET idle_session_timeout = {}",
            SILENCE.as_millis()
        ))
        .await
        .map_err(postgres::error)
}

/// Keeps a lock's session from falling silent while its holder lives (`SILENCE`); a failed
/// heartbeat marks the lock lost. Ends with the holder (the last strong reference to the
/// client).
pub(crate) async fn heartbeat(
    client: Weak<tokio_postgres::Client>,
    lost: Arc<tokio::sync::watch::Sender<bool>>,
) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(client) = client.upgrade() else {
            return;
        };
        let beat = tokio::time::timeout(SILENCE, client.simple_query("SELECT 1")).await;
        if !matches!(beat, Ok(Ok(_))) {
            lost.send_replace(true);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_postgres::Postgres;
    use crate::store::{Location, Store};

    fn target(url: &str) -> Target {
        Target::new(url, None, None).unwrap()
    }

    /// RECIPES.md §6, the verified sequence: one owner; its session killed, another takes
    /// over with the next epoch; the first one's commits are refused from then on.
    #[test]
    fn a_source_has_one_owner_and_a_lost_owner_commits_nothing() {
        let server = Postgres::shared();
        let url = server.fresh_database("lease");
        let location = Location::Postgres(target(&url));
        let (a_store, b_store) = (
            Store::open_at(&location).unwrap(),
            Store::open_at(&location).unwrap(),
        );
        let a = SourceLease::take(&target(&url), "mail", "host-a 1")
            .unwrap()
            .expect("the first daemon takes the source");
        assert_eq!(a.fence().epoch, 1);
        assert!(a.held());
        assert!(
            SourceLease::take(&target(&url), "mail", "host-b 2")
                .unwrap()
                .is_none(),
            "a second daemon does not"
        );
        let a = a_store.hold(a);
        let first = crate::store::tests::file("<a/>", "mail");
        assert!(a_store.begin(&[&first], "").is_ok(), "the owner records");

        // A's session ends as in a crash or a cut network noticed by the keepalives.
        let name = url.rsplit('/').next().unwrap();
        server
            .sql(
                name,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'eingang host-a 1 source mail'",
            )
            .unwrap();
        // PostgreSQL frees the lock once the killed backend is gone: a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let b = loop {
            if let Some(b) = SourceLease::take(&target(&url), "mail", "host-b 2").unwrap() {
                break b;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "B never took the source"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(b.fence().epoch, 2);
        assert!(!a.held(), "A learns it lost the source");
        b_store.hold(b);

        let second = crate::store::tests::file("<b/>", "mail");
        match a_store.begin(&[&second], "") {
            Err(Error::Fenced(source)) => assert_eq!(source, "mail"),
            other => panic!("a zombie owner recorded: {other:?}"),
        }
        assert!(
            b_store.begin(&[&second], "").is_ok(),
            "the new owner records"
        );
    }
}
