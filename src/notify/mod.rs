//! Step 7 of the flow: telling people. The outbox worker takes the notices the store holds
//! (one per rejected item, written in the same transaction as the rejection), writes the
//! source down and up notices, folds bursts into one summary, and mails each notice to the
//! source's own group or else the admins. Without `[notify]` every notice goes to the log.
//!
//! Delivery guarantee (DESIGN.md promise 4). A notice leaves the outbox only after the SMTP
//! server accepted it (250 to the final "."); until then it is retried with backoff, across
//! restarts, so none is lost. Before each attempt the store commits the attempt and the
//! notice's Message-ID, `<eingang.<store id>.<row id>@<from domain>>`, fixed at the first
//! attempt. A notice is therefore sent twice only in the window SMTP itself leaves open
//! (RFC 1047): the server took it, and eingang died, or lost the reply, before it recorded
//! that. The repeat then carries the same Message-ID and Date, so people and mail stores that
//! drop duplicate Message-IDs recognize it.
//!
//! On a store that several daemons share, every daemon's notifier looks at the one outbox:
//! each notice is claimed for its attempt (store/outbox.rs `claim_notice`, together with the
//! attempt's record), so one daemon sends it; the claim holds longer than the attempt can take
//! (`smtp::send_limit`) and ends when the attempt fails; the claim of a daemon that died runs
//! out (at once where another process on its machine looks: it sees that the claimer ended),
//! for another to send the notice, with the same Message-ID. A burst gets one summary, and an
//! outage one down notice, whichever daemon writes it (each is decided in one write
//! transaction, and the store has one writer at a time).
//!
//! This module never moves items and never decides a rejection; it only reads the ledger and
//! records what became of each notice.

pub mod smtp;
pub mod text;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use lettre::Address;
use lettre::message::header::{
    ContentTransferEncoding, ContentType, Header, HeaderName, HeaderValue,
};
use lettre::message::{Attachment, Body, Mailbox, Message, MultiPart, SinglePart};
use tokio::time::Instant;

use crate::config::{Config, NotifyConfig};
use crate::fault;
use crate::source::CheckLine;
use crate::stop::Stop;
use crate::store::outbox::{Claim, Finished, Notice, NoticeKind, RejectedItem, stamp};
use crate::store::{self, Store};
use smtp::{Mailer, Session};
use text::{Attached, Details, Language};

/// Rejected items up to this size go with their notice as an attachment. Many mail servers
/// refuse messages over 10 MB, and base64 adds a third.
pub const MAX_ATTACHMENT_BYTES: u64 = 5 * 1024 * 1024;
/// More than `burst` rejections of one source within this window become one summary, and a
/// source gets at most one summary per window.
pub const BURST_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The rejections of a cXML partner gather this long before their one summary is written: the
/// partner was answered already, so people hear of a burst once, not of its first request
/// alone.
pub const RECEIVER_GATHER: Duration = Duration::from_secs(15);
/// How often the worker looks at the outbox and the sources' health.
const POLL: Duration = Duration::from_secs(1);
/// A rejection waits for its item's move (so the mail can say where it lies), but not longer
/// than this: a move that keeps failing must not keep people uninformed.
const UNDISPOSED_GRACE: Duration = Duration::from_secs(10 * 60);
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Short enough that notices follow soon after the SMTP server comes back.
const BACKOFF_CAP: Duration = Duration::from_secs(120);
/// How long after its start a notifier leaves alone the notices an earlier process attempted.
const RESEND_HOLD: Duration = Duration::from_secs(10);
/// A claim on a notice outlasts its attempt by this much: the store's writes around the
/// attempt (each statement gives up after a minute), and clocks of machines a little apart.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);
/// `down_after` when there is no `[notify]` (the outage is then only logged).
const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(15 * 60);
/// `burst` when there is no `[notify]`.
const DEFAULT_BURST: i64 = 10;

/// A notifier failure; every one of them leaves the notices in the outbox for a later try.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The SMTP server could not be reached, refused the login, or failed.
    #[error(transparent)]
    Smtp(#[from] smtp::Error),
    /// The server refused this one mail for good (a 5xx reply to it); the others may go.
    #[error("notify: notice {notice}: {error}")]
    Refused {
        /// The outbox row.
        notice: i64,
        /// The server's refusal.
        error: smtp::Error,
    },
    /// An address in `[notify]` or a source's group does not parse (the config check
    /// refuses those, so this means a config built some other way).
    #[error("notify: {0}")]
    Address(String),
    /// A mail could not be put together.
    #[error("notify: notice {notice}: {why}")]
    Compose {
        /// The outbox row.
        notice: i64,
        /// What failed.
        why: String,
    },
}

/// What a delivery after `eingang sync` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Notices that left the outbox (mailed, or logged without `[notify]`).
    pub done: usize,
    /// Notices still waiting.
    pub waiting: i64,
    /// The last failure, if notices are left because of it.
    pub error: Option<String>,
}

/// Where notices go when there is a `[notify]` section.
struct Smtp {
    mailer: Mailer,
    from: Mailbox,
    admins: Vec<Address>,
    domain: String,
}

/// The outbox worker.
pub struct Notifier {
    store: Arc<Store>,
    /// When this notifier started (see `RESEND_HOLD`).
    started: Instant,
    sources: Vec<String>,
    /// The mailbox sources, whose items come from senders who may be forged.
    mailboxes: HashSet<String>,
    /// The cXML partners' sources (`cxml:<partner>`): their rejections are always summed up.
    receivers: HashSet<String>,
    groups: HashMap<String, Vec<Address>>,
    language: Language,
    down_after: Duration,
    burst: i64,
    smtp: Option<Smtp>,
    /// Who claims the notices this notifier sends (`lock::daemon_name`).
    claimer: String,
}

/// `Auto-Submitted: auto-generated` (RFC 3834 §5): auto-responders must not answer a notice,
/// so a vacation reply cannot start a loop with the mailbox eingang reads.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// `X-Auto-Response-Suppress: All`: the same request to Exchange, which ignores RFC 3834.
#[derive(Clone)]
struct AutoResponseSuppress;

impl Header for AutoResponseSuppress {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoResponseSuppress)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "All".to_owned())
    }
}

/// `X-Eingang-Notice: <kind> <row id>`: marks eingang's own notices (RELIABILITY.md
/// scenario 33), for filters and for a notice that comes back into a watched mailbox.
#[derive(Clone)]
struct EingangNotice(String);

impl Header for EingangNotice {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Eingang-Notice")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(EingangNotice(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// A rejection that may go into a summary: one never attempted. After an attempt it may have
/// reached people already, so it keeps its own mail and Message-ID.
fn is_foldable(notice: &Notice) -> bool {
    matches!(notice.kind, NoticeKind::Rejected(_)) && notice.attempts == 0
}

fn kind_name(kind: &NoticeKind) -> &'static str {
    match kind {
        NoticeKind::Rejected(_) => "rejected",
        NoticeKind::Summary(_) => "summary",
        NoticeKind::Down { .. } => "down",
        NoticeKind::Up { .. } => "up",
        NoticeKind::Stray(_) => "stray",
        NoticeKind::Unrecorded(_) => "unrecorded",
        NoticeKind::Reauthorize { .. } => "reauth",
        NoticeKind::Undelivered(_) => "undelivered",
    }
}

impl Notifier {
    /// A notifier for the configured sources; log only without `[notify]`. Fails only when the
    /// `ca_file` cannot be read or an address does not parse (the config check covers both).
    pub fn new(config: &Config, store: Arc<Store>) -> Result<Notifier, Error> {
        let mut groups = HashMap::new();
        for source in &config.sources {
            if !source.notify.is_empty() {
                groups.insert(source.name.clone(), addresses(&source.notify)?);
            }
        }
        let smtp = config.notify.as_ref().map(smtp_target).transpose()?;
        let notify = config.notify.as_ref();
        Ok(Notifier {
            store,
            started: Instant::now(),
            sources: config.sources.iter().map(|s| s.name.clone()).collect(),
            mailboxes: config
                .sources
                .iter()
                .filter(|s| matches!(s.kind, crate::config::SourceKind::Imap(_)))
                .map(|s| s.name.clone())
                .collect(),
            receivers: config.cxml.iter().flat_map(|c| c.sources()).collect(),
            groups,
            language: notify.map_or(Language::De, |n| Language::of(&n.language)),
            down_after: notify.map_or(DEFAULT_DOWN_AFTER, |n| n.down_after),
            burst: notify.map_or(DEFAULT_BURST, |n| i64::from(n.burst)),
            smtp,
            claimer: crate::lock::daemon_name(),
        })
    }

    /// Runs until `stop`: a round every second while all goes well; while the SMTP server
    /// fails, rounds back off from 1 s, doubling, to a cap. The notice in hand is finished
    /// before it stops.
    pub async fn run(&self, stop: Stop) {
        let mut backoff = BACKOFF_START;
        loop {
            let flag = stop.clone();
            let wait = match self.round(&move || flag.is_set(), true).await {
                (_, None) => {
                    backoff = BACKOFF_START;
                    POLL
                }
                (_, Some(error)) => {
                    let wait = crate::daemon::jittered(backoff);
                    tracing::warn!(%error, retry_in = ?wait, "notices not sent");
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    wait
                }
            };
            if stop.sleep(wait).await {
                return;
            }
        }
    }

    /// Delivers what is due within about `limit` (rounds with backoff while the server fails;
    /// a mail in progress is finished, never cut off): what `eingang sync` does after its pass.
    pub async fn deliver(&self, limit: Duration) -> Delivery {
        let deadline = Instant::now() + limit;
        let mut delivery = Delivery::default();
        let mut backoff = BACKOFF_START;
        loop {
            let (done, error) = self.round(&|| Instant::now() >= deadline, false).await;
            delivery.done += done;
            match error {
                None if done == 0 => {
                    delivery.error = None;
                    break;
                }
                None => delivery.error = None,
                Some(error) => {
                    delivery.error = Some(error.to_string());
                    if Instant::now() + backoff >= deadline {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        delivery.waiting = self
            .store(|s| s.pending_notifications())
            .await
            .unwrap_or_default();
        delivery
    }

    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, store::Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.store.call(f).await.map_err(Error::Store)
    }

    /// One round: health notices, bursts, then every due notice in order. Returns how many
    /// left the outbox, and the failure that ended the round or that a notice met. A notice
    /// the server refuses for good, or that cannot be put together, is skipped and the others
    /// go on; any other failure ends the round.
    async fn round(
        &self,
        stop: &(dyn Fn() -> bool + Sync),
        hold_resends: bool,
    ) -> (usize, Option<Error>) {
        let mut done = 0;
        match self.try_round(stop, &mut done, hold_resends).await {
            Ok(()) => (done, None),
            Err(e) => (done, Some(e)),
        }
    }

    async fn try_round(
        &self,
        stop: &(dyn Fn() -> bool + Sync),
        done: &mut usize,
        hold_resends: bool,
    ) -> Result<(), Error> {
        let now = Utc::now();
        let (sources, down_after) = (self.sources.clone(), self.down_after);
        self.store(move |s| {
            sources
                .iter()
                .try_for_each(|source| s.update_health(source, down_after, now))
        })
        .await?;
        let cutoff = stamp(before(now, UNDISPOSED_GRACE));
        let ready = {
            let cutoff = cutoff.clone();
            self.store(move |s| {
                // What a process killed here had claimed is due again now.
                s.release_abandoned_notices()?;
                s.ready_notices(&cutoff)
            })
            .await?
        };
        let (folded, held) = self.fold_bursts(&ready, now).await?;
        let mut ready = if folded {
            self.store(move |s| s.ready_notices(&cutoff)).await?
        } else {
            ready
        };
        ready.retain(|n| !(is_foldable(n) && held.contains(&n.source)));
        // A notice attempted before may have reached people already (the process died
        // between the server's OK and its record): it waits a little after a start, so that
        // a daemon that keeps dying at once cannot send it again and again.
        if hold_resends && self.started.elapsed() < RESEND_HOLD {
            ready.retain(|n| n.attempts == 0);
        }
        let mut session = None;
        let mut refused = None;
        for notice in &ready {
            if stop() {
                break;
            }
            match self.deliver_one(notice, &mut session).await {
                Ok(true) => *done += 1,
                Ok(false) => {}
                Err(e @ (Error::Refused { .. } | Error::Compose { .. })) => {
                    // Others behind it still go; this one stays and is tried after the backoff.
                    tracing::error!(notice = notice.id, source = %notice.source, error = %e, "this notice cannot be sent; it stays in the outbox");
                    refused = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(session) = session {
            session.quit().await;
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Folds the due rejections of each source that is in a burst (more than `burst` within
    /// the window) into one summary, at most one per source and window; the rejections of a
    /// source whose last summary is younger than the window are held for the next one.
    /// A cXML partner's rejections are always folded, once the oldest has gathered for
    /// `RECEIVER_GATHER`: the partner had its answer, people get one notice per burst.
    /// Returns whether a summary was written, and the held sources.
    async fn fold_bursts(
        &self,
        ready: &[Notice],
        now: DateTime<Utc>,
    ) -> Result<(bool, HashSet<String>), Error> {
        let mut due: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut oldest: HashMap<String, &str> = HashMap::new();
        for notice in ready {
            if is_foldable(notice) {
                due.entry(notice.source.clone())
                    .or_default()
                    .push(notice.id);
                let first = oldest
                    .entry(notice.source.clone())
                    .or_insert(&notice.created_at);
                *first = (*first).min(notice.created_at.as_str());
            }
        }
        let mut held = HashSet::new();
        if due.is_empty() {
            return Ok((false, held));
        }
        let window_start = stamp(before(now, BURST_WINDOW));
        let (recent, last) = {
            let window_start = window_start.clone();
            self.store(move |s| Ok((s.rejections_since(&window_start)?, s.last_summaries()?)))
                .await?
        };
        let mut folded = false;
        let gathered = stamp(before(now, RECEIVER_GATHER));
        for (source, ids) in due {
            let receiver = self.receivers.contains(&source);
            let burst = if receiver { 0 } else { self.burst };
            if recent.get(&source).copied().unwrap_or(0) <= burst {
                continue;
            }
            if receiver
                && oldest
                    .get(&source)
                    .is_some_and(|at| *at > gathered.as_str())
            {
                held.insert(source);
                continue;
            }
            let summarized_lately = last
                .get(&source)
                .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                .is_some_and(|at| {
                    (now - at.with_timezone(&Utc)).to_std().unwrap_or_default() < BURST_WINDOW
                });
            if summarized_lately {
                held.insert(source);
                continue;
            }
            let count = ids.len();
            let (name, window_start) = (source.clone(), window_start.clone());
            match self
                .store(move |s| s.summarize(&name, &ids, &window_start))
                .await?
            {
                Some(summary) => {
                    tracing::info!(source = %source, summary, items = count, "burst of rejections: one summary notice");
                    folded = true;
                }
                // Another daemon of the store summed this burst up a moment ago.
                None => {
                    held.insert(source);
                }
            }
        }
        Ok((folded, held))
    }

    fn recipients(&self, source: &str) -> &[Address] {
        match (self.groups.get(source), &self.smtp) {
            (Some(group), _) => group,
            (None, Some(smtp)) => &smtp.admins,
            (None, None) => &[],
        }
    }

    /// Claims one notice for an attempt, for as long as `limit` and the margin; `false` when
    /// another process has it (or it went out meanwhile).
    async fn claim(
        &self,
        id: i64,
        message_id: Option<String>,
        limit: Duration,
    ) -> Result<bool, Error> {
        let until = stamp(
            Utc::now() + chrono::TimeDelta::from_std(limit + CLAIM_MARGIN).unwrap_or_default(),
        );
        let by = self.claimer.clone();
        let claimed = self
            .store(move |s| {
                s.claim_notice(
                    id,
                    message_id.as_deref(),
                    Claim {
                        by: &by,
                        until: &until,
                    },
                )
            })
            .await?;
        if !claimed {
            tracing::debug!(notice = id, "another process sends this notice");
        }
        Ok(claimed)
    }

    /// Mails (or logs) one notice and takes it out of the outbox; `false` when another process
    /// claimed it first.
    async fn deliver_one(
        &self,
        notice: &Notice,
        session: &mut Option<Session>,
    ) -> Result<bool, Error> {
        let id = notice.id;
        let (mail, attachment) = self.content(notice).await?;
        let Some(smtp) = &self.smtp else {
            if !self.claim(id, None, Duration::ZERO).await? {
                return Ok(false);
            }
            tracing::warn!(source = %notice.source, notice = id, subject = %mail.subject, "notice (no [notify] section: log only)");
            self.store(move |s| s.finish_notice(id, Finished::Logged))
                .await?;
            return Ok(true);
        };
        // A sign-in is the admins' to do, whichever group a source's notices go to; so is an
        // ERP connector (whose name is the notice's source).
        let to = match &notice.kind {
            NoticeKind::Reauthorize { .. }
            | NoticeKind::Unrecorded(_)
            | NoticeKind::Undelivered(_) => smtp.admins.clone(),
            _ => self.recipients(&notice.source).to_vec(),
        };
        let message_id = match &notice.message_id {
            Some(fixed) => fixed.clone(),
            None => {
                let store_id = self.store(|s| s.store_id()).await?;
                format!("eingang.{store_id}.{id}@{}", smtp.domain)
            }
        };
        let bytes = compose(notice, mail, attachment, &smtp.from, &to, &message_id)?;
        let open = match session.take() {
            Some(open) => open,
            None => {
                let mut open = smtp.mailer.connect().await?;
                smtp.mailer.login(&mut open).await?;
                open
            }
        };
        let open = session.insert(open);
        if !self
            .claim(id, Some(message_id.clone()), smtp::send_limit(to.len()))
            .await?
        {
            return Ok(false);
        }
        if notice.attempts > 0 {
            tracing::info!(notice = id, attempts = notice.attempts, %message_id, "sending a notice again with its Message-ID; an earlier attempt may have reached the server");
        }
        if let Err(failed) = open.send(&smtp.from.email, &to, &bytes).await {
            *session = None;
            // Unreleased, the claim runs out by itself; the failure to tell is the send's.
            let by = self.claimer.clone();
            if let Err(e) = self.store(move |s| s.release_notice(id, &by)).await {
                tracing::warn!(notice = id, error = %e, "the notice stays claimed until its claim runs out");
            }
            if failed.maybe_delivered {
                tracing::warn!(notice = id, %message_id, "the server may have taken the notice before failing; a new try repeats its Message-ID");
            }
            return Err(match failed.error {
                error @ smtp::Error::Refused {
                    permanent: true, ..
                } => Error::Refused { notice: id, error },
                error => Error::Smtp(error),
            });
        }
        fault::point("after_send_before_mark");
        self.store(move |s| s.finish_notice(id, Finished::Sent))
            .await?;
        tracing::info!(source = %notice.source, notice = id, kind = kind_name(&notice.kind), to = to.len(), "notice sent");
        Ok(true)
    }

    /// The wording of a notice and, for a rejected item, its attachment.
    async fn content(
        &self,
        notice: &Notice,
    ) -> Result<(text::Mail, Option<(String, Vec<u8>)>), Error> {
        let lang = self.language;
        Ok(match &notice.kind {
            NoticeKind::Rejected(item) => {
                let item = &with_full_path(item);
                let item_id = item.item_id;
                let original = self.store(move |s| s.original(item_id)).await?;
                let details = details_of(item, original.as_deref());
                let name = attachment_name(item);
                // A message from a mailbox is passed on only from an authenticated sender, by
                // the verdict stored at its first sight (DESIGN.md promise 7); a file someone
                // put in a folder or on the server is.
                let authenticated = item
                    .sender_auth
                    .as_ref()
                    .is_some_and(|v| v.status == crate::auth::Status::Pass);
                let trusted = !self.mailboxes.contains(&notice.source) || authenticated;
                let original = original.filter(|_| trusted);
                let attached = match &original {
                    Some(_) => Attached::Yes(name.clone()),
                    None if !trusted => Attached::Untrusted,
                    None if item.size > MAX_ATTACHMENT_BYTES => {
                        Attached::TooLarge(MAX_ATTACHMENT_BYTES)
                    }
                    None => Attached::No,
                };
                let mail = text::rejected(lang, &notice.source, item, &details, &attached);
                (mail, original.map(|bytes| (name, bytes)))
            }
            NoticeKind::Summary(items) if self.receivers.contains(&notice.source) => (
                text::receiver_summary(lang, &notice.source, items, BURST_WINDOW),
                None,
            ),
            NoticeKind::Summary(items) => (
                text::summary(lang, &notice.source, items, BURST_WINDOW),
                None,
            ),
            NoticeKind::Down { since, error } => (
                text::down(lang, &notice.source, since, error, self.down_after),
                None,
            ),
            NoticeKind::Up { since } => (
                text::up(lang, &notice.source, since, &notice.created_at),
                None,
            ),
            NoticeKind::Stray(stray) => (text::stray(lang, &notice.source, stray), None),
            NoticeKind::Unrecorded(places) => {
                (text::unrecorded(lang, &notice.source, places), None)
            }
            NoticeKind::Reauthorize { error } => (
                text::reauthorize(lang, &notice.source, error, &notice.created_at),
                None,
            ),
            NoticeKind::Undelivered(documents) => {
                (text::undelivered(lang, &notice.source, documents), None)
            }
        })
    }
}

/// `now` minus a (small, constant) duration.
fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now - chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::zero())
}

fn smtp_target(config: &NotifyConfig) -> Result<Smtp, Error> {
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|e| Error::Address(format!("from {:?}: {e}", config.from)))?;
    let domain = from.email.domain().to_owned();
    Ok(Smtp {
        mailer: Mailer::new(config)?,
        admins: addresses(&config.admins)?,
        from,
        domain,
    })
}

fn addresses(list: &[String]) -> Result<Vec<Address>, Error> {
    list.iter()
        .map(|a| {
            a.trim()
                .parse::<Address>()
                .map_err(|e| Error::Address(format!("address {a:?}: {e}")))
        })
        .collect()
}

/// The item with `archived` as a full path where it names a local file by a relative path
/// (a drop folder configured relative to eingang.toml): a person reads the mail elsewhere.
/// Anything else (an IMAP folder, a remote path) stays as the source wrote it.
fn with_full_path(item: &RejectedItem) -> RejectedItem {
    let mut item = item.clone();
    if let Some(place) = &item.archived
        && std::path::Path::new(place).is_relative()
        && let Ok(full) = std::fs::canonicalize(place)
    {
        item.archived = Some(full.display().to_string());
    }
    item
}

/// The file names and Date of a rejected item, read from its kept bytes where it is a
/// message; a file is its own single attachment.
fn details_of(item: &RejectedItem, original: Option<&[u8]>) -> Details {
    let name = item.file_name.as_deref().unwrap_or(&item.location);
    match original {
        Some(bytes) if item.is_message => match crate::extract::message(bytes, name) {
            Ok(m) => {
                let mut files: Vec<String> = m.attachments.into_iter().map(|a| a.name).collect();
                if files.is_empty() {
                    files = m.skipped;
                }
                Details {
                    files,
                    date: m.envelope.date,
                }
            }
            Err(_) => Details::default(),
        },
        _ => Details {
            files: item.file_name.iter().cloned().collect(),
            date: None,
        },
    }
}

/// A safe file name for the attachment: the item's own name without path separators,
/// quotes or control characters, else `item-<id>.eml` / `item-<id>`.
fn attachment_name(item: &RejectedItem) -> String {
    let cleaned = item
        .file_name
        .as_deref()
        .map(|n| text::one_line(&n.replace(['/', '\\', '"'], "_")))
        .filter(|n| !n.is_empty() && n != "." && n != "..");
    let name = cleaned.unwrap_or_else(|| {
        if item.is_message {
            format!("item-{}.eml", item.item_id)
        } else {
            format!("item-{}", item.item_id)
        }
    });
    name.chars().take(100).collect()
}

/// Puts the mail together: headers (the notice's Date and Message-ID stay the same on every
/// attempt), the text, and the attachment.
fn compose(
    notice: &Notice,
    mail: text::Mail,
    attachment: Option<(String, Vec<u8>)>,
    from: &Mailbox,
    to: &[Address],
    message_id: &str,
) -> Result<Vec<u8>, Error> {
    let date = DateTime::parse_from_rfc3339(&notice.created_at)
        .map(SystemTime::from)
        .unwrap_or_else(|_| SystemTime::now());
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(text::one_line(&mail.subject))
        .date(date)
        .message_id(Some(format!("<{message_id}>")))
        .header(AutoSubmitted)
        .header(AutoResponseSuppress)
        .header(EingangNotice(format!(
            "{} {}",
            kind_name(&notice.kind),
            notice.id
        )));
    for address in to {
        builder = builder.to(Mailbox::new(None, address.clone()));
    }
    let body = SinglePart::plain(mail.body);
    let message =
        match attachment {
            Some((name, bytes)) => {
                // Base64 always: a 7bit part may have its line ends or trailing spaces changed on
                // the way, and the attachment must stay byte-exact.
                let bytes = Body::new_with_encoding(bytes, ContentTransferEncoding::Base64)
                    .map_err(|_| Error::Compose {
                        notice: notice.id,
                        why: "the attachment cannot be encoded".to_owned(),
                    })?;
                let octets = ContentType::parse("application/octet-stream")
                    .expect("a valid MIME type literal");
                let file = Attachment::new(name).body(bytes, octets);
                builder.multipart(MultiPart::mixed().singlepart(body).singlepart(file))
            }
            None => builder.singlepart(body),
        }
        .map_err(|e| Error::Compose {
            notice: notice.id,
            why: e.to_string(),
        })?;
    Ok(message.formatted())
}

/// The checks of `eingang check` for `[notify]`: connect with TLS, AUTH if configured, then
/// MAIL FROM and RCPT TO for the admins and every source's group, then RSET and QUIT; nothing
/// is sent.
pub async fn check(config: &Config) -> Vec<CheckLine> {
    let Some(notify) = &config.notify else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let what = format!(
        "notify smtp {}:{} ({})",
        notify.smtp_host, notify.smtp_port, notify.tls
    );
    let target = match smtp_target(notify) {
        Ok(target) => target,
        Err(e) => {
            lines.push((what, Err(e.to_string())));
            return lines;
        }
    };
    let mut session = match target.mailer.connect().await {
        Ok(session) => {
            lines.push((what, Ok(())));
            session
        }
        Err(e) => {
            lines.push((what, Err(e.to_string())));
            return lines;
        }
    };
    if let Some(oauth) = &notify.oauth {
        lines.push((
            format!("notify {}", crate::oauth::describe(oauth)),
            crate::oauth::check(oauth).await,
        ));
    }
    if let Some(user) = target.mailer.user() {
        let result = target.mailer.login(&mut session).await;
        let failed = result.is_err();
        lines.push((
            format!("notify login {user}"),
            result.map_err(|e| e.to_string()),
        ));
        if failed {
            session.quit().await;
            return lines;
        }
    }
    let sender = session.probe_sender(&target.from.email).await;
    let failed = sender.is_err();
    lines.push((
        format!("notify sender {}", target.from.email),
        sender.map_err(|e| e.to_string()),
    ));
    if failed {
        session.quit().await;
        return lines;
    }
    let mut recipients: Vec<String> = notify.admins.clone();
    for source in &config.sources {
        recipients.extend(source.notify.iter().cloned());
    }
    recipients.sort();
    recipients.dedup();
    for recipient in recipients {
        let result = match recipient.trim().parse::<Address>() {
            Ok(address) => session
                .probe_recipient(&address)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("not an address: {e}")),
        };
        lines.push((format!("notify recipient {recipient}"), result));
    }
    session.reset_and_quit().await;
    lines
}
