//! One owner per source on a PostgreSQL store (RECIPES.md §6): a session advisory lock on a
//! connection of the owner's own, unpooled, with TCP keepalives (PostgreSQL frees the lock
//! when it sees that session end), plus an epoch in `source_leases` that every commit for the
//! source checks (`Store::fence`), so that an owner that lost its lock (paused, partitioned,
//! its connection killed) commits nothing for the source again, even before it notices.

use std::sync::Arc;

use super::postgres::{self, Target};
use super::{Error, Fence};

/// A source owned by this process while the value lives; dropping it ends the lock's session,
/// which frees the source for another daemon.
pub struct SourceLease {
    client: Arc<tokio_postgres::Client>,
    fence: Fence,
}

impl std::fmt::Debug for SourceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLease")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl SourceLease {
    /// Takes `source` for `owner` (host and process id) unless another session holds it
    /// (`None`), and moves its epoch on: whatever an earlier owner still tries to commit
    /// for it is refused from now on.
    pub fn take(target: &Target, source: &str, owner: &str) -> Result<Option<SourceLease>, Error> {
        let mut config = target.config();
        config.application_name(format!("eingang {owner} source {source}"));
        let (source, owner) = (source.to_owned(), owner.to_owned());
        postgres::block(async move {
            let client = postgres::connect(config).await?;
            // One 64-bit key per source: a key space apart from the store's two-key locks.
            let locked: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtextextended('eingang-source:' || $1, 0))",
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
            Ok(Some(SourceLease {
                client: Arc::new(client),
                fence: Fence {
                    source,
                    owner,
                    epoch,
                },
            }))
        })
    }

    /// What a commit for the source must find in `source_leases` (`Store::fence`).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Whether the source is still this owner's: the lock's session is alive and the lease
    /// is still the one it took. To be asked after an item's commit and before its move (the
    /// IMAP move, the FTP rename, the file move).
    pub fn held(&self) -> bool {
        let client = self.client.clone();
        let fence = self.fence.clone();
        postgres::block(async move {
            if client.is_closed() {
                return Ok(false);
            }
            let row = client
                .query_opt(
                    "SELECT owner, epoch FROM source_leases WHERE source = $1",
                    &[&fence.source],
                )
                .await
                .map_err(postgres::error)?;
            Ok(row.is_some_and(|r| {
                r.try_get::<_, String>(0).is_ok_and(|o| o == fence.owner)
                    && r.try_get::<_, i64>(1).is_ok_and(|e| e == fence.epoch)
            }))
        })
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_postgres::Postgres;
    use crate::store::{Location, Store};

    fn target(url: &str) -> Target {
        Target::new(url, None).unwrap()
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
        a_store.fence(a.fence().clone());
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
        b_store.fence(b.fence().clone());

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
