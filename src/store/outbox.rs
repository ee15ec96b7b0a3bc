//! The outbox side of the ledger: notices waiting to be mailed, the attempt recorded before
//! each mail, the summary that stands in for a burst, and the source down and up notices.
//!
//! The row for a rejection is written by `Store::commit`, in the same transaction as the
//! rejection itself; this file only reads those rows and moves them along
//! `pending → sent | logged | suppressed`. It never decides what to send: that is `notify`.

use std::collections::HashMap;
use std::time::Duration;

use super::db::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use chrono::{DateTime, Utc};

use super::{Error, Store, now};

/// What a notice is about.
#[derive(Debug, Clone, PartialEq)]
pub enum NoticeKind {
    /// One rejected item.
    Rejected(Box<RejectedItem>),
    /// A burst of rejections of one source, mailed as one summary.
    Summary(Vec<RejectedItem>),
    /// The source has failed since `since` (RFC 3339), `error` being the last failure.
    Down {
        /// When the outage began.
        since: String,
        /// The source's last error.
        error: String,
    },
    /// The source works again after failing since `since`.
    Up {
        /// When the outage began.
        since: String,
    },
    /// Something lies in the source's inbox that eingang leaves alone.
    Stray(super::Stray),
    /// Items lie in the source's archive that the store does not know (it was restored from
    /// an older copy): where each lies.
    Unrecorded(Vec<String>),
    /// The identity provider refused an OAuth2 login's refresh token: a person must run
    /// `eingang oauth login <source>` (`notify` for `[notify]`). Goes to the admins.
    Reauthorize {
        /// The provider's refusal, in words.
        error: String,
    },
    /// Documents an ERP connector (the notice's `source`) gave up on after its last attempt
    /// (store/handoff.rs). Goes to the admins.
    Undelivered(Vec<super::handoff::DeadDocument>),
}

/// An outbox row that is due to be mailed.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The outbox row id.
    pub id: i64,
    /// The source the notice is about (its group gets the mail).
    pub source: String,
    /// When the row was written (RFC 3339, UTC).
    pub created_at: String,
    /// Attempts recorded so far; more than 0 means an earlier attempt may have reached the
    /// server.
    pub attempts: u32,
    /// The Message-ID fixed at the first attempt, without angle brackets.
    pub message_id: Option<String>,
    /// What it is about.
    pub kind: NoticeKind,
}

/// A rejected item as its notice shows it; every text field comes from outside and is not
/// yet sanitized.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RejectedItem {
    /// The ledger row (what `eingang reprocess` takes).
    pub item_id: i64,
    /// A message (`true`) or a file.
    pub is_message: bool,
    /// The From address of a message.
    pub sender: Option<String>,
    /// The Subject of a message.
    pub subject: Option<String>,
    /// The Message-ID of a message.
    pub message_id: Option<String>,
    /// The file name (a file, or a dropped `.eml`).
    pub file_name: Option<String>,
    /// Where the item was found.
    pub location: String,
    /// The supplier, if routing found one.
    pub supplier: Option<String>,
    /// The full reason.
    pub reason: String,
    /// The short label of the reason ("unknown sender").
    pub label: Option<String>,
    /// Where the item lies now; `None` while it has not been moved.
    pub archived: Option<String>,
    /// When it arrived (RFC 3339, UTC).
    pub received_at: String,
    /// Its size in bytes.
    pub size: u64,
    /// The rejection's parts, when the store has them (for the wording in other languages).
    pub reject: Option<crate::error::Reject>,
    /// The verdict about a message's sender, as stored at first sight (`None` for a file,
    /// or a message stored before eingang checked senders).
    pub sender_auth: Option<crate::auth::Verdict>,
}

/// How a notice left the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The SMTP server accepted the mail.
    Sent,
    /// No `[notify]` section: the notice went to the log.
    Logged,
}

impl Finished {
    fn state(self) -> &'static str {
        match self {
            Finished::Sent => "sent",
            Finished::Logged => "logged",
        }
    }
}

const ITEM_COLUMNS: &str =
    "i.id, i.kind, i.sender, i.subject, i.message_id, i.file_name, i.location,
     i.supplier, i.reason, i.label, i.archived, i.received_at, i.size, i.reject, i.sender_auth";

fn rejected_item(r: &Row<'_>, at: usize) -> rusqlite::Result<RejectedItem> {
    Ok(RejectedItem {
        item_id: r.get(at)?,
        is_message: r.get::<_, String>(at + 1)? == "message",
        sender: r.get(at + 2)?,
        subject: r.get(at + 3)?,
        message_id: r.get(at + 4)?,
        file_name: r.get(at + 5)?,
        location: r.get(at + 6)?,
        supplier: r.get(at + 7)?,
        reason: r.get::<_, Option<String>>(at + 8)?.unwrap_or_default(),
        label: r.get(at + 9)?,
        archived: r.get(at + 10)?,
        received_at: r.get(at + 11)?,
        size: u64::try_from(r.get::<_, i64>(at + 12)?).unwrap_or(0),
        reject: r
            .get::<_, Option<String>>(at + 13)?
            .and_then(|j| serde_json::from_str(&j).ok()),
        sender_auth: r
            .get::<_, Option<String>>(at + 14)?
            .and_then(|json| serde_json::from_str(&json).ok()),
    })
}

/// Keeps the bytes of rejected items for the attachment of their notices (until the notice is
/// sent), in the caller's transaction (`Store::keep_originals`). Keeping them again is a no-op,
/// so a batch resumed after a crash may repeat it.
pub(super) fn keep_notice_originals(
    tx: &Connection,
    originals: &[(i64, &[u8])],
) -> Result<(), Error> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox_original (item_id, bytes) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for (item_id, bytes) in originals {
        insert.execute(params![item_id, bytes])?;
    }
    Ok(())
}

/// A time as the store writes it, so that stored times compare as text.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The time a claim is checked against: now, on a store that several processes share. On
/// SQLite, the end of time: one process works a SQLite store at a time (its lock), so a claim
/// found there was made by a process that is gone (killed during its attempt), and the
/// process after it sends at once.
pub(super) fn claims_checked_at(conn: &Connection) -> String {
    if conn.is_postgres() {
        now()
    } else {
        super::DUE_NOW.to_owned()
    }
}

/// A claim on a notice or a hand-off before it is sent: who claims it (host and process id,
/// `lock::daemon_name`) and until when (as `stamp` writes it). Until then no other process
/// sends it, whichever daemon of a shared store looks at it; after that any may, so a
/// claimer that died (or froze) holds it up no longer than that. `until` lies beyond the
/// longest its attempt can take.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The claimer.
    pub by: &'a str,
    /// When the claim runs out.
    pub until: &'a str,
}

/// Whether `claimer` (host and process id, as a claim names it) is a process of this machine
/// that has ended: killed during its attempt. A claimer on another machine is never taken for
/// ended (its claim runs out instead), nor is one whose process id is in use again.
pub(super) fn has_ended(claimer: &str) -> bool {
    let Some((host, pid)) = claimer.rsplit_once(' ') else {
        return false;
    };
    host == crate::lock::host() && pid.parse().is_ok_and(|pid| !crate::lock::is_running(pid))
}

impl Store {
    /// Ends the claims that processes of this machine which have ended (killed during their
    /// attempt) hold on some pending rows, so that those rows are due again now, not when the
    /// claims run out: `claimers` lists who holds claims (`key`, then the time now, as its
    /// parameters), `release` ends one claimer's (`key`, then the claimer). Nothing to do on
    /// SQLite (`claims_checked_at`).
    pub(super) fn release_ended_claims(
        &self,
        claimers: &str,
        release: &str,
        key: &[&str],
    ) -> Result<(), Error> {
        fn refs(values: &[String]) -> Vec<&dyn rusqlite::ToSql> {
            values.iter().map(|v| v as &dyn rusqlite::ToSql).collect()
        }
        if self.shared().is_none() {
            return Ok(());
        }
        let with = |last: String| -> Vec<String> {
            key.iter().map(|k| (*k).to_owned()).chain([last]).collect()
        };
        let found: Vec<String> = {
            let conn = self.lock();
            let values = with(now());
            let mut stmt = conn.prepare_cached(claimers)?;
            stmt.query_map(refs(&values).as_slice(), |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for claimer in found.into_iter().filter(|c| has_ended(c)) {
            tracing::info!(%claimer, ?key, "what a process that has ended had claimed is due again");
            let values = with(claimer);
            self.lock().execute(release, refs(&values).as_slice())?;
        }
        Ok(())
    }

    /// Ends the claims on notices of processes of this machine that have ended (a daemon
    /// killed during an attempt), so that their notices are due again now, not when the
    /// claims run out. Nothing to do on SQLite (`claims_checked_at`).
    pub fn release_abandoned_notices(&self) -> Result<(), Error> {
        self.release_ended_claims(
            "SELECT DISTINCT claimed_by FROM outbox WHERE state = 'pending' AND claimed_until > ?1",
            "UPDATE outbox SET claimed_until = NULL WHERE state = 'pending' AND claimed_by = ?1",
            &[],
        )
    }

    /// The kept bytes of a rejected item, if they were small enough to keep.
    pub fn original(&self, item_id: i64) -> Result<Option<Vec<u8>>, Error> {
        self.lock()
            .query_row(
                "SELECT bytes FROM outbox_original WHERE item_id = ?1",
                [item_id],
                |r| r.get(0),
            )
            .optional()
    }

    /// The notices due now, oldest first. A rejection is due once its item has been moved
    /// (so the mail can say where it lies), or once it was written before `undisposed_before`
    /// (the move keeps failing: people must hear of the item all the same). Members of a
    /// summary are not due on their own, nor is a notice another process has claimed.
    pub fn ready_notices(&self, undisposed_before: &str) -> Result<Vec<Notice>, Error> {
        let conn = self.lock();
        let at = claims_checked_at(&conn);
        let mut notices = Vec::new();
        let mut rejected = conn.prepare(&format!(
            "SELECT o.id, o.source, o.created_at, o.attempts, o.message_id, {ITEM_COLUMNS}
             FROM outbox o JOIN items i ON i.id = o.item_id
             WHERE o.state = 'pending' AND o.kind = 'rejected' AND o.summary_id IS NULL
               AND (o.claimed_until IS NULL OR o.claimed_until <= ?2)
               AND (i.disposed_at IS NOT NULL OR o.created_at < ?1)"
        ))?;
        for row in rejected.query_map(params![undisposed_before, at], |r| {
            Ok(Notice {
                id: r.get(0)?,
                source: r.get(1)?,
                created_at: r.get(2)?,
                attempts: r.get(3)?,
                message_id: r.get(4)?,
                kind: NoticeKind::Rejected(Box::new(rejected_item(r, 5)?)),
            })
        })? {
            notices.push(row?);
        }
        let mut others = conn.prepare(
            "SELECT id, source, created_at, attempts, message_id, kind, outage_since, last_error,
                    detail
             FROM outbox WHERE state = 'pending'
               AND (claimed_until IS NULL OR claimed_until <= ?2)
               AND (kind IN ('summary', 'down', 'up', 'stray', 'reauth', 'unrecorded')
                    OR (kind = 'undelivered' AND created_at < ?1))",
        )?;
        let gathered = super::handoff::gathered_before();
        let rows = others.query_map(params![gathered, at], |r| {
            Ok((
                Notice {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    created_at: r.get(2)?,
                    attempts: r.get(3)?,
                    message_id: r.get(4)?,
                    kind: NoticeKind::Up {
                        since: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                    },
                },
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })?;
        for row in rows {
            let (mut notice, kind, error, detail) = row?;
            let since = match &notice.kind {
                NoticeKind::Up { since } => since.clone(),
                _ => String::new(),
            };
            notice.kind = match kind.as_str() {
                "summary" => NoticeKind::Summary(members(&conn, notice.id)?),
                "down" => NoticeKind::Down {
                    since,
                    error: error.unwrap_or_default(),
                },
                "stray" => NoticeKind::Stray(
                    detail
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or_else(|| super::Stray {
                            name: String::new(),
                            why: String::new(),
                        }),
                ),
                "unrecorded" => NoticeKind::Unrecorded(
                    detail
                        .and_then(|d| serde_json::from_str(&d).ok())
                        .unwrap_or_default(),
                ),
                "reauth" => NoticeKind::Reauthorize {
                    error: error.unwrap_or_default(),
                },
                "undelivered" => {
                    NoticeKind::Undelivered(super::handoff::dead_members(&conn, notice.id)?)
                }
                _ => NoticeKind::Up { since },
            };
            notices.push(notice);
        }
        notices.sort_by_key(|n| n.id);
        Ok(notices)
    }

    /// Rejections per source written at or after `since`, whatever became of them: the count
    /// that decides whether a source is in a burst.
    pub fn rejections_since(&self, since: &str) -> Result<HashMap<String, i64>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT source, COUNT(*) FROM outbox
             WHERE kind = 'rejected' AND created_at >= ?1 AND state != 'suppressed'
             GROUP BY source",
        )?;
        let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When each source's latest burst summary was written.
    pub fn last_summaries(&self) -> Result<HashMap<String, String>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT source, MAX(created_at) FROM outbox WHERE kind = 'summary' GROUP BY source",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes one summary notice for `source` standing in for the pending rejections `ids`,
    /// in one transaction; returns its row id. Rows that went out meanwhile, or that were
    /// attempted already (they may have reached people), are left alone. Writes nothing
    /// (`None`) when the source has a summary written at or after `window_start` (another
    /// daemon of a shared store summed this burst up first) or when none of `ids` is left to
    /// stand in for: one summary per burst, never an empty one.
    pub fn summarize(
        &self,
        source: &str,
        ids: &[i64],
        window_start: &str,
    ) -> Result<Option<i64>, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let recent: i64 = tx.query_row(
            "SELECT COUNT(*) FROM outbox WHERE source = ?1 AND kind = 'summary' AND created_at >= ?2",
            params![source, window_start],
            |r| r.get(0),
        )?;
        if recent > 0 {
            return Ok(None);
        }
        let summary = tx.insert(
            "INSERT INTO outbox (source, kind, created_at) VALUES (?1, 'summary', ?2)",
            params![source, now()],
        )?;
        let mut linked = 0;
        {
            let mut link = tx.prepare_cached(
                "UPDATE outbox SET summary_id = ?1
                 WHERE id = ?2 AND state = 'pending' AND summary_id IS NULL AND kind = 'rejected'
                   AND attempts = 0",
            )?;
            for id in ids {
                linked += link.execute(params![summary, id])?;
            }
        }
        if linked == 0 {
            return Ok(None);
        }
        tx.commit()?;
        Ok(Some(summary))
    }

    /// Claims a notice for one attempt and records the attempt before the mail is handed to
    /// the server: one more attempt, its time, and the Message-ID (kept from the first
    /// attempt on). Committed durably first, so that a crash after the server took the mail
    /// leaves a row that says so may have happened. Returns `false`, recording nothing, when
    /// the notice is not this caller's to send: another process's claim on it has not run out,
    /// it went out meanwhile, or a summary stands in for it now.
    ///
    /// One `UPDATE` decides, on both databases: SQLite has one writer at a time, and
    /// PostgreSQL's `UPDATE` waits for a concurrent claim of the same row and then checks the
    /// condition against the row that claim left, so two claimers never both find it free.
    pub fn claim_notice(
        &self,
        id: i64,
        message_id: Option<&str>,
        claim: Claim<'_>,
    ) -> Result<bool, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let claimed = tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?2,
                               message_id = COALESCE(message_id, ?3),
                               claimed_by = ?4, claimed_until = ?5
             WHERE id = ?1 AND state = 'pending' AND summary_id IS NULL
               AND (claimed_until IS NULL OR claimed_until <= ?6)",
            params![
                id,
                now(),
                message_id,
                claim.by,
                claim.until,
                claims_checked_at(&tx)
            ],
        )?;
        tx.commit()?;
        Ok(claimed == 1)
    }

    /// Ends `by`'s claim on a notice whose attempt failed: the next attempt is anyone's.
    pub fn release_notice(&self, id: i64, by: &str) -> Result<(), Error> {
        self.lock().execute(
            "UPDATE outbox SET claimed_until = NULL WHERE id = ?1 AND claimed_by = ?2",
            params![id, by],
        )?;
        Ok(())
    }

    /// Takes a notice (and the members of a summary) out of the outbox, and drops the kept
    /// bytes of their items.
    pub fn finish_notice(&self, id: i64, how: Finished) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        tx.execute(
            "DELETE FROM outbox_original WHERE item_id IN
               (SELECT item_id FROM outbox WHERE (id = ?1 OR summary_id = ?1) AND item_id IS NOT NULL)",
            [id],
        )?;
        tx.execute(
            "UPDATE outbox SET state = ?2, sent_at = ?3 WHERE id = ?1 OR summary_id = ?1",
            params![id, how.state(), at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Writes the source's down or up notice when one is due, in one transaction: down once it
    /// has failed for `down_after` (once per outage, whatever the retries), up when it works
    /// again after a down notice. `failing_since` comes from `record_pass`.
    pub fn update_health(
        &self,
        source: &str,
        down_after: Duration,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state: Option<(Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT failing_since, last_error FROM source_state WHERE source = ?1",
                [source],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (failing_since, last_error) = state.unwrap_or_default();
        let mut last: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT kind, outage_since FROM outbox WHERE source = ?1 AND kind IN ('down', 'up')
                 ORDER BY id DESC LIMIT 1",
                [source],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let insert = |kind: &str, since: &Option<String>, error: &Option<String>| {
            tx.execute(
                "INSERT INTO outbox (source, kind, created_at, outage_since, last_error)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![source, kind, stamp(at), since, error],
            )
        };
        // The outage that was announced is over (a new one may have begun since).
        let ended = match &last {
            Some((kind, since)) if kind == "down" && failing_since != *since => Some(since.clone()),
            _ => None,
        };
        if let Some(since) = ended {
            insert("up", &since, &None)?;
            last = Some(("up".to_owned(), since));
        }
        let long_enough = failing_since
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|s| {
                (at - s.with_timezone(&Utc))
                    .to_std()
                    .is_ok_and(|d| d >= down_after)
            });
        let announced = last
            .as_ref()
            .is_some_and(|(kind, since)| kind == "down" && *since == failing_since);
        // An outage whose cause is a refused OAuth2 sign-in was told already, by the notice
        // that asks for `eingang oauth login` (store/oauth.rs): one notice, not two.
        // (The refusal is recorded during the pass, before the pass's failure is: so "since
        // the source last worked", not "since it began to fail".)
        let reauth_told = long_enough
            && !announced
            && tx.query_row(
                "SELECT COUNT(*) FROM outbox o WHERE o.source = ?1 AND o.kind = 'reauth'
                   AND o.created_at >= COALESCE(
                       (SELECT last_ok FROM source_state WHERE source = ?1), '')",
                [source],
                |r| r.get::<_, i64>(0),
            )? > 0;
        if long_enough && !announced && !reauth_told {
            insert("down", &failing_since, &last_error)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The random id of this store, made once by the schema; it keeps Message-IDs of two
    /// stores apart.
    pub fn store_id(&self) -> Result<String, Error> {
        self.lock()
            .query_row("SELECT id FROM store_identity", [], |r| r.get(0))
    }
}

fn members(conn: &Connection, summary: i64) -> Result<Vec<RejectedItem>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ITEM_COLUMNS} FROM outbox o JOIN items i ON i.id = o.item_id
         WHERE o.summary_id = ?1 ORDER BY o.id"
    ))?;
    let rows = stmt.query_map([summary], |r| rejected_item(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim of this process's, for the tests of one claimer.
    const CLAIM: Claim<'static> = Claim {
        by: "host-a 1",
        until: "9999-12-31T23:59:59.999Z",
    };

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        (dir, store)
    }

    /// A rejected, disposed item with its outbox row, as `commit` and `mark_disposed` leave it.
    fn rejected(store: &Store, source: &str, name: &str) -> i64 {
        let conn = store.lock();
        let item = conn
            .insert(
            "INSERT INTO items (sha256, source, kind, location, file_name, size, received_at,
                                outcome, reason, label, disposed_at, archived)
             VALUES (?1, ?2, 'file', ?3, ?1, 1, ?4, 'rejected', 'broken', 'unreadable file', ?4, ?5)",
            params![name, source, format!("in/{name}"), now(), format!("fehler/{name}")],
        )
            .unwrap();
        conn.insert(
            "INSERT INTO outbox (item_id, source, kind, created_at) VALUES (?1, ?2, 'rejected', ?3)",
            params![item, source, now()],
        )
            .unwrap()
    }

    /// `count` rejections of the source `drop`, by their outbox ids.
    fn rejections(store: &Store, count: usize) -> Vec<i64> {
        (0..count)
            .map(|i| rejected(store, "drop", &format!("f{i}.xml")))
            .collect()
    }

    fn fail(store: &Store, source: &str, since: DateTime<Utc>) {
        store
            .lock()
            .execute(
                "INSERT INTO source_state (source, last_error, last_error_at, failing_since)
                 VALUES (?1, 'inbox: gone', ?2, ?2)
                 ON CONFLICT(source) DO UPDATE SET failing_since = ?2",
                params![source, stamp(since)],
            )
            .unwrap();
    }

    fn kinds(store: &Store) -> Vec<String> {
        let conn = store.lock();
        let mut stmt = conn.prepare("SELECT kind FROM outbox ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_source_outage_gives_one_down_and_one_up_notice() {
        let (_dir, store) = store();
        let t0 = Utc::now();
        let after = Duration::from_secs(60);
        fail(&store, "drop", t0);
        store.update_health("drop", after, t0).unwrap();
        assert!(kinds(&store).is_empty(), "not down long enough yet");
        for minutes in [2, 3, 4] {
            store
                .update_health("drop", after, t0 + chrono::Duration::minutes(minutes))
                .unwrap();
        }
        assert_eq!(kinds(&store), ["down"]);
        store.record_pass("drop", Ok(())).unwrap();
        store.update_health("drop", after, t0).unwrap();
        store.update_health("drop", after, t0).unwrap();
        assert_eq!(kinds(&store), ["down", "up"]);
        let ready = store.ready_notices("").unwrap();
        assert!(matches!(&ready[0].kind, NoticeKind::Down { error, .. } if error == "inbox: gone"));
        assert!(matches!(&ready[1].kind, NoticeKind::Up { since } if !since.is_empty()));
    }

    #[test]
    fn a_new_outage_after_an_unnoticed_recovery_is_announced_after_an_up() {
        let (_dir, store) = store();
        let t0 = Utc::now();
        let after = Duration::from_secs(60);
        fail(&store, "drop", t0);
        store
            .update_health("drop", after, t0 + chrono::Duration::minutes(2))
            .unwrap();
        let t1 = t0 + chrono::Duration::minutes(10);
        fail(&store, "drop", t1);
        store
            .update_health("drop", after, t1 + chrono::Duration::minutes(2))
            .unwrap();
        assert_eq!(kinds(&store), ["down", "up", "down"]);
    }

    #[test]
    fn a_summary_stands_in_for_its_members_until_sent() {
        let (_dir, store) = store();
        let ids = rejections(&store, 3);
        store
            .keep_originals(&[(1, b"bytes".as_slice())], &[])
            .unwrap();
        let summary = store.summarize("drop", &ids, "").unwrap().unwrap();
        let ready = store.ready_notices("").unwrap();
        assert_eq!(ready.len(), 1);
        let NoticeKind::Summary(members) = &ready[0].kind else {
            panic!("{ready:?}");
        };
        assert_eq!(members.len(), 3);
        assert_eq!(members[2].archived.as_deref(), Some("fehler/f2.xml"));
        assert!(store.claim_notice(summary, Some("a@b"), CLAIM).unwrap());
        store.release_notice(summary, CLAIM.by).unwrap();
        assert!(store.claim_notice(summary, Some("other@b"), CLAIM).unwrap());
        store.release_notice(summary, CLAIM.by).unwrap();
        let again = store.ready_notices("").unwrap();
        assert_eq!(again[0].attempts, 2);
        assert_eq!(again[0].message_id.as_deref(), Some("a@b"));
        store.finish_notice(summary, Finished::Sent).unwrap();
        assert!(store.ready_notices("").unwrap().is_empty());
        assert_eq!(store.original(1).unwrap(), None);
        assert_eq!(store.pending_notifications().unwrap(), 0);
        assert_eq!(store.rejections_since("").unwrap().get("drop"), Some(&3));
        assert!(store.last_summaries().unwrap().contains_key("drop"));
    }

    #[test]
    fn an_attempted_rejection_keeps_its_own_mail_in_a_burst() {
        let (_dir, store) = store();
        let tried = rejected(&store, "drop", "a.xml");
        let fresh = rejected(&store, "drop", "b.xml");
        assert!(
            store
                .claim_notice(tried, Some("eingang.x.1@example.com"), CLAIM)
                .unwrap()
        );
        store.release_notice(tried, CLAIM.by).unwrap();
        store.summarize("drop", &[tried, fresh], "").unwrap();
        let ready = store.ready_notices("").unwrap();
        let ids: Vec<i64> = ready.iter().map(|n| n.id).collect();
        assert_eq!(ids, [tried, fresh + 1], "the attempted row and the summary");
        assert!(matches!(&ready[1].kind, NoticeKind::Summary(m) if m.len() == 1));
    }

    #[test]
    fn an_unmoved_rejection_waits_until_the_grace_cutoff() {
        let (_dir, store) = store();
        let id = rejected(&store, "drop", "a.xml");
        store
            .lock()
            .execute("UPDATE items SET disposed_at = NULL", [])
            .unwrap();
        assert!(store.ready_notices("2000-01-01").unwrap().is_empty());
        let ready = store.ready_notices("9999-01-01").unwrap();
        assert_eq!(ready[0].id, id);
    }

    #[test]
    fn every_store_has_its_own_id() {
        let (_a, one) = store();
        let (_b, two) = store();
        assert_eq!(one.store_id().unwrap().len(), 16);
        assert_ne!(one.store_id().unwrap(), two.store_id().unwrap());
    }

    /// Two handles on one database: two daemons of a shared store.
    fn two_daemons(location: &crate::store::Location) -> (Store, Store) {
        (
            Store::open_at(location).unwrap(),
            Store::open_at(location).unwrap(),
        )
    }

    fn on_postgres(test: &str) -> crate::store::Location {
        let url = crate::store::test_postgres::Postgres::shared().fresh_database(test);
        crate::store::Location::Postgres(crate::store::Target::new(&url, None, None).unwrap())
    }

    /// Two daemons read the same ready notices, then claim them from two threads in opposite
    /// orders: each notice is claimed by exactly one, and its attempt is recorded once.
    #[test]
    fn two_daemons_racing_for_the_ready_notices_claim_each_once() {
        let (a, b) = two_daemons(&on_postgres("claim_race"));
        let ids = rejections(&a, 40);
        let until = stamp(Utc::now() + chrono::Duration::minutes(5));
        let start = std::sync::Barrier::new(2);
        let claim_all = |store: &Store, by: &str, backwards: bool| -> Vec<i64> {
            let mut ready = store.ready_notices("").unwrap();
            assert_eq!(ready.len(), ids.len());
            if backwards {
                ready.reverse();
            }
            start.wait();
            let claim = Claim { by, until: &until };
            let mut won: Vec<i64> = ready
                .iter()
                .filter(|n| store.claim_notice(n.id, Some("m@x"), claim).unwrap())
                .map(|n| n.id)
                .collect();
            won.sort();
            won
        };
        let (won_a, won_b) = std::thread::scope(|s| {
            let one = s.spawn(|| claim_all(&a, "host-a 1", false));
            let two = s.spawn(|| claim_all(&b, "host-b 2", true));
            (one.join().unwrap(), two.join().unwrap())
        });
        assert!(
            won_a.iter().all(|id| !won_b.contains(id)),
            "claimed twice: {won_a:?} {won_b:?}"
        );
        let mut all = [won_a.clone(), won_b].concat();
        all.sort();
        assert_eq!(all, ids, "every notice claimed");
        let conn = a.lock();
        for id in &ids {
            let (attempts, by): (i64, String) = conn
                .query_row(
                    "SELECT attempts, claimed_by FROM outbox WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(attempts, 1, "notice {id}");
            let winner = if won_a.contains(id) {
                "host-a 1"
            } else {
                "host-b 2"
            };
            assert_eq!(by, winner, "notice {id}");
        }
    }

    /// A daemon killed during its attempt never ends its claim: the notice is no one else's
    /// until the claim runs out, then the other daemon takes it, with the first attempt's
    /// Message-ID.
    #[test]
    fn a_killed_claimers_notice_is_taken_by_another_once_its_claim_ran_out() {
        let (a, b) = two_daemons(&on_postgres("claim_expiry"));
        let id = rejected(&a, "drop", "a.xml");
        let soon = stamp(Utc::now() + chrono::Duration::seconds(1));
        let first = "eingang.s.1@example.com";
        assert!(
            a.claim_notice(
                id,
                Some(first),
                Claim {
                    by: "host-a 1",
                    until: &soon
                }
            )
            .unwrap()
        );
        drop(a);
        let later = stamp(Utc::now() + chrono::Duration::minutes(5));
        let b_claim = Claim {
            by: "host-b 2",
            until: &later,
        };
        assert!(
            b.ready_notices("").unwrap().is_empty(),
            "claimed: not ready"
        );
        assert!(!b.claim_notice(id, Some("other@x"), b_claim).unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ready = loop {
            let ready = b.ready_notices("").unwrap();
            if !ready.is_empty() || std::time::Instant::now() > deadline {
                break ready;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(ready.len(), 1, "ready again once the claim ran out");
        assert_eq!((ready[0].id, ready[0].attempts), (id, 1));
        assert_eq!(ready[0].message_id.as_deref(), Some(first));
        assert!(b.claim_notice(id, Some("other@x"), b_claim).unwrap());
        b.finish_notice(id, Finished::Sent).unwrap();
        let (attempts, message_id, by): (i64, String, String) = b
            .lock()
            .query_row(
                "SELECT attempts, message_id, claimed_by FROM outbox WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (attempts, message_id.as_str(), by.as_str()),
            (2, first, "host-b 2")
        );
        assert!(!b.claim_notice(id, None, b_claim).unwrap(), "sent: gone");
    }

    /// On SQLite one process works the store at a time: a claim found there is of a process
    /// that died during its attempt, and the next process sends the notice at once, with the
    /// first attempt's Message-ID.
    #[test]
    fn on_sqlite_the_next_process_sends_what_a_killed_one_had_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eingang.db");
        let killed = Store::open(&path).unwrap();
        let id = rejected(&killed, "drop", "a.xml");
        assert!(killed.claim_notice(id, Some("first@x"), CLAIM).unwrap());
        drop(killed);
        let next = Store::open(&path).unwrap();
        let ready = next.ready_notices("").unwrap();
        assert_eq!((ready[0].id, ready[0].attempts), (id, 1));
        let claim = Claim {
            by: "host-a 2",
            until: CLAIM.until,
        };
        assert!(next.claim_notice(id, Some("second@x"), claim).unwrap());
        assert_eq!(
            next.ready_notices("").unwrap()[0].message_id.as_deref(),
            Some("first@x")
        );
    }

    /// The claims of a process of this machine that has ended (killed during its attempt)
    /// end at the next look; those of a live process, or of one on another machine, stand.
    #[test]
    fn the_claims_of_a_process_that_ended_end_those_of_others_stand() {
        let (a, b) = two_daemons(&on_postgres("claim_abandoned"));
        let ended = format!(
            "{} {}",
            crate::lock::host(),
            crate::store::tests::ended_pid()
        );
        let alive = crate::lock::daemon_name();
        let until = stamp(Utc::now() + chrono::Duration::minutes(5));
        let mut ids = Vec::new();
        for (i, by) in [ended.as_str(), alive.as_str(), "elsewhere 4242"]
            .iter()
            .enumerate()
        {
            let id = rejected(&a, "drop", &format!("f{i}.xml"));
            let claim = Claim { by, until: &until };
            assert!(a.claim_notice(id, Some("m@x"), claim).unwrap());
            ids.push(id);
        }
        assert!(b.ready_notices("").unwrap().is_empty());
        b.release_abandoned_notices().unwrap();
        let ready: Vec<i64> = b.ready_notices("").unwrap().iter().map(|n| n.id).collect();
        assert_eq!(ready, [ids[0]]);
    }

    /// A failed attempt ends its claim: the next attempt is anyone's.
    #[test]
    fn a_released_notice_is_ready_for_the_other_daemon_at_once() {
        let (a, b) = two_daemons(&on_postgres("claim_release"));
        let id = rejected(&a, "drop", "a.xml");
        assert!(a.claim_notice(id, Some("m@x"), CLAIM).unwrap());
        b.release_notice(id, "host-b 2").unwrap();
        assert!(
            b.ready_notices("").unwrap().is_empty(),
            "only the claimer ends its claim"
        );
        a.release_notice(id, CLAIM.by).unwrap();
        let ready = b.ready_notices("").unwrap();
        assert_eq!((ready[0].id, ready[0].attempts), (id, 1));
    }

    /// Both daemons see the same burst and sum it up at the same moment: one summary, with
    /// every member; the other writes none (no empty second summary).
    #[test]
    fn two_daemons_summing_up_one_burst_write_one_summary() {
        let (a, b) = two_daemons(&on_postgres("summary_race"));
        let ids = rejections(&a, 12);
        let window_start = stamp(Utc::now() - chrono::Duration::minutes(5));
        let start = std::sync::Barrier::new(2);
        let sum_up = |store: &Store| {
            start.wait();
            store.summarize("drop", &ids, &window_start).unwrap()
        };
        let (one, two) = std::thread::scope(|s| {
            let one = s.spawn(|| sum_up(&a));
            let two = s.spawn(|| sum_up(&b));
            (one.join().unwrap(), two.join().unwrap())
        });
        let written: Vec<i64> = [one, two].into_iter().flatten().collect();
        assert_eq!(written.len(), 1, "{one:?} {two:?}");
        assert_eq!(kinds(&a).iter().filter(|k| *k == "summary").count(), 1);
        let ready = b.ready_notices("").unwrap();
        assert_eq!(ready.len(), 1);
        assert!(matches!(&ready[0].kind, NoticeKind::Summary(m) if m.len() == ids.len()));
        assert_eq!(
            a.summarize("drop", &ids, &window_start).unwrap(),
            None,
            "one summary per window"
        );
    }

    /// Every daemon's notifier watches every source's health: an outage still gets one down
    /// notice, however many of them look at once.
    #[test]
    fn two_daemons_watching_one_outage_write_one_down_notice() {
        let (a, b) = two_daemons(&on_postgres("health_race"));
        let t0 = Utc::now();
        fail(&a, "drop", t0);
        let start = std::sync::Barrier::new(2);
        let watch = |store: &Store| {
            start.wait();
            for minutes in 2..12 {
                store
                    .update_health(
                        "drop",
                        Duration::from_secs(60),
                        t0 + chrono::Duration::minutes(minutes),
                    )
                    .unwrap();
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| watch(&a));
            s.spawn(|| watch(&b));
        });
        assert_eq!(kinds(&a), ["down"]);
        b.record_pass("drop", Ok(())).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| watch(&a));
            s.spawn(|| watch(&b));
        });
        assert_eq!(kinds(&a), ["down", "up"]);
    }
}
