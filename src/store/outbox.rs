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

impl Store {
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
    /// summary are not due on their own.
    pub fn ready_notices(&self, undisposed_before: &str) -> Result<Vec<Notice>, Error> {
        let conn = self.lock();
        let mut notices = Vec::new();
        let mut rejected = conn.prepare(&format!(
            "SELECT o.id, o.source, o.created_at, o.attempts, o.message_id, {ITEM_COLUMNS}
             FROM outbox o JOIN items i ON i.id = o.item_id
             WHERE o.state = 'pending' AND o.kind = 'rejected' AND o.summary_id IS NULL
               AND (i.disposed_at IS NOT NULL OR o.created_at < ?1)"
        ))?;
        for row in rejected.query_map([undisposed_before], |r| {
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
               AND (kind IN ('summary', 'down', 'up', 'stray', 'reauth', 'unrecorded')
                    OR (kind = 'undelivered' AND created_at < ?1))",
        )?;
        let gathered = super::handoff::gathered_before();
        let rows = others.query_map([gathered], |r| {
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
    /// attempted already (they may have reached people), are left alone.
    pub fn summarize(&self, source: &str, ids: &[i64]) -> Result<i64, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let summary = tx.insert(
            "INSERT INTO outbox (source, kind, created_at) VALUES (?1, 'summary', ?2)",
            params![source, now()],
        )?;
        {
            let mut link = tx.prepare_cached(
                "UPDATE outbox SET summary_id = ?1
                 WHERE id = ?2 AND state = 'pending' AND summary_id IS NULL AND kind = 'rejected'
                   AND attempts = 0",
            )?;
            for id in ids {
                link.execute(params![summary, id])?;
            }
        }
        tx.commit()?;
        Ok(summary)
    }

    /// Records an attempt before the mail is handed to the server: one more attempt, its time,
    /// and the Message-ID (kept from the first attempt on). Committed durably first, so that a
    /// crash after the server took the mail leaves a row that says so may have happened.
    pub fn begin_attempt(&self, id: i64, message_id: &str) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?2,
                               message_id = COALESCE(message_id, ?3)
             WHERE id = ?1",
            params![id, now(), message_id],
        )?;
        tx.commit()?;
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
        let ids: Vec<i64> = (0..3)
            .map(|i| rejected(&store, "drop", &format!("f{i}.xml")))
            .collect();
        store
            .keep_originals(&[(1, b"bytes".as_slice())], &[])
            .unwrap();
        let summary = store.summarize("drop", &ids).unwrap();
        let ready = store.ready_notices("").unwrap();
        assert_eq!(ready.len(), 1);
        let NoticeKind::Summary(members) = &ready[0].kind else {
            panic!("{ready:?}");
        };
        assert_eq!(members.len(), 3);
        assert_eq!(members[2].archived.as_deref(), Some("fehler/f2.xml"));
        store.begin_attempt(summary, "a@b").unwrap();
        store.begin_attempt(summary, "other@b").unwrap();
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
        store
            .begin_attempt(tried, "eingang.x.1@example.com")
            .unwrap();
        store.summarize("drop", &[tried, fresh]).unwrap();
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
}
