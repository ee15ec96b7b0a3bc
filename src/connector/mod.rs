//! The ERP hand-off: every stored document of the kinds a `[[connector]]` takes goes to it,
//! as a signed webhook POST or as a file in a folder, none lost and none under a second
//! `webhook-id`.
//!
//! The store writes a hand-off row per (connector, document) in the same transaction as the
//! document (store/handoff.rs), so a crash loses none. This worker takes the due rows of each
//! connector, oldest document first: it records the attempt (and fixes a webhook's body at
//! the first one) before it is made, sends, and records what became of it. A 2xx answer, or
//! the file in place, is delivered; anything else (another status, a redirect, a timeout, a
//! refused connection, a full disk) is tried again on the connector's `retry` schedule, with
//! jitter, and after the last attempt the document is dead for that connector, with one
//! notice to the admins (through the outbox). A repeat after a crash carries the same
//! `webhook-id` (`msg_<store id>_<document id>_<event>`) and the same body, so the receiver
//! can drop it; a fresh `webhook-timestamp` and signature go with every attempt.
//!
//! Connectors run side by side in one task: a receiver that hangs holds up only its own
//! connector, for at most its `timeout` per attempt. The worker never changes a document or
//! moves an item.
//!
//! On a store that several daemons share, every daemon runs this worker over the same rows:
//! a round first claims its documents (store/handoff.rs `claim_handoffs`), so each document
//! goes out from one daemon. The claim holds for `CLAIM` (longer for a slow receiver); the
//! round makes no attempt it could not finish within it, and its results end the claim. The
//! claims of a daemon that died run out (at once where another process on its machine looks:
//! it sees that the claimer ended); then another sends its documents, under the same
//! `webhook-id`.

pub mod config;
mod dir;
pub mod mapping;
mod render;
pub mod sign;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value};
use tokio::time::Instant;

pub use config::{ConnectorConfig, ConnectorKind, RawConnector};
use config::{DirConfig, FileFormat};
use webhook::Webhook;

use crate::config::Config;
use crate::fault;
use crate::source::CheckLine;
use crate::stop::Stop;
use crate::store::handoff::{Attempt, Due, Registration};
use crate::store::outbox::{Claim, stamp};
use crate::store::{self, Store};

/// How often an idle connector looks for due documents.
const POLL: Duration = Duration::from_secs(1);
/// Documents per round: one transaction records their attempts, one their results.
const BATCH: usize = 50;
/// A hand-off waits for its item's move (so `origin.archived` is in the body), but no
/// longer than this: a move that keeps failing must not hold up the ERP.
const UNDISPOSED_GRACE: Duration = Duration::from_secs(10 * 60);
/// After a failed attempt a connector pauses before its next one, doubling to a cap, so a
/// receiver that is down is not hammered with every due document in turn.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How long a round's claim on its documents holds (longer for a receiver whose `timeout`
/// needs it): as long as a daemon that died elsewhere holds them up.
const CLAIM: Duration = Duration::from_secs(120);
/// What a claim leaves beyond the last attempt it allows: the store's write of the results
/// (each statement gives up after a minute), and clocks of machines a little apart.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);
/// One file written into a dir connector's folder, at most, as a claim reckons it. Were it
/// slower, the next claimer's write finds the file in place (`dir::write_new`).
const DIR_ATTEMPT: Duration = Duration::from_secs(30);

/// The registrations the store needs: every connector's name and kinds.
pub fn registrations(config: &Config) -> Vec<Registration> {
    config
        .connectors
        .iter()
        .map(|c| Registration {
            name: c.name.clone(),
            documents: c.documents.clone(),
        })
        .collect()
}

/// What a delivery after `eingang sync` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Documents handed off.
    pub done: usize,
    /// Hand-offs still pending, over all connectors.
    pub waiting: i64,
    /// The last failure, if one is why documents wait.
    pub error: Option<String>,
}

/// The hand-off worker.
pub struct Handoff {
    store: Arc<Store>,
    connectors: Vec<Connector>,
}

struct Connector {
    config: ConnectorConfig,
    target: Target,
    /// Who claims the documents this worker hands off (`lock::daemon_name`).
    claimer: String,
}

enum Target {
    Webhook(Webhook),
    Dir(DirConfig),
}

impl Handoff {
    /// The worker for the configured connectors. Fails only when a `ca_file` cannot be read
    /// (the config check covers that).
    pub fn new(config: &Config, store: Arc<Store>) -> Result<Handoff, String> {
        let connectors = config
            .connectors
            .iter()
            .map(|c| {
                let target = match &c.kind {
                    ConnectorKind::Webhook(w) => Target::Webhook(
                        Webhook::new(w).map_err(|e| format!("connector {}: {e}", c.name))?,
                    ),
                    ConnectorKind::Dir(d) => Target::Dir(d.clone()),
                };
                Ok(Connector {
                    config: c.clone(),
                    target,
                    claimer: crate::lock::daemon_name(),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Handoff { store, connectors })
    }

    /// Whether there is no connector at all.
    pub fn is_empty(&self) -> bool {
        self.connectors.is_empty()
    }

    /// Runs every connector until `stop`; each finishes the attempt in hand.
    pub async fn run(&self, stop: Stop) {
        let loops = self
            .connectors
            .iter()
            .map(|c| c.run(&self.store, stop.clone()));
        futures::future::join_all(loops).await;
    }

    /// Hands off what is due now, within about `limit` (an attempt in progress is finished,
    /// within its timeout): what `eingang sync` does after its pass. A document whose attempt
    /// fails waits for its next turn on the schedule (the daemon, or the next sync).
    pub async fn deliver(&self, limit: Duration) -> Delivery {
        let deadline = Instant::now() + limit;
        let each = self.connectors.iter().map(|c| async move {
            let mut done = 0;
            loop {
                let (n, error) = c.round(&self.store, &|| Instant::now() >= deadline).await;
                done += n;
                if error.is_some() || n == 0 || Instant::now() >= deadline {
                    return (done, error);
                }
            }
        });
        let results = futures::future::join_all(each).await;
        let mut delivery = Delivery::default();
        for (done, error) in results {
            delivery.done += done;
            if error.is_some() {
                delivery.error = error;
            }
        }
        delivery.waiting = self
            .store
            .call(|s| s.handoff_counts())
            .await
            .map(|counts| counts.iter().map(|c| c.pending).sum())
            .unwrap_or_default();
        delivery
    }
}

impl Connector {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// The longest one attempt takes.
    fn attempt_limit(&self) -> Duration {
        match &self.config.kind {
            ConnectorKind::Webhook(w) => w.timeout,
            ConnectorKind::Dir(_) => DIR_ATTEMPT,
        }
    }

    async fn run(&self, store: &Arc<Store>, stop: Stop) {
        let mut backoff = BACKOFF_START;
        loop {
            let flag = stop.clone();
            let (done, error) = self.round(store, &move || flag.is_set()).await;
            let wait = match error {
                None => {
                    backoff = BACKOFF_START;
                    if done == BATCH { Duration::ZERO } else { POLL }
                }
                Some(error) => {
                    let wait = crate::daemon::jittered(backoff);
                    tracing::warn!(connector = %self.name(), %error, retry_in = ?wait, "hand-off failed");
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    wait
                }
            };
            if stop.sleep(wait).await {
                return;
            }
        }
    }

    /// One round over the due documents: returns how many were handed off, and the failure
    /// that ended the round.
    async fn round(
        &self,
        store: &Arc<Store>,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> (usize, Option<String>) {
        match self.try_round(store, stop).await {
            Ok(done) => done,
            Err(e) => (0, Some(e.to_string())),
        }
    }

    async fn try_round(
        &self,
        store: &Arc<Store>,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<(usize, Option<String>), store::Error> {
        let now = Utc::now();
        let cutoff = stamp(now - chrono::TimeDelta::from_std(UNDISPOSED_GRACE).unwrap_or_default());
        let name = self.name().to_owned();
        // One attempt and the write of its result; the claim holds at least that beyond the
        // reading and rendering of the documents.
        let attempt = self.attempt_limit() + CLAIM_MARGIN;
        let claim = CLAIM.max(attempt + CLAIM_MARGIN);
        let claim_ends = Instant::now() + claim;
        let due = {
            let (name, by) = (name.clone(), self.claimer.clone());
            let until = stamp(now + chrono::TimeDelta::from_std(claim).unwrap_or_default());
            store
                .call(move |s| {
                    // What a process killed here had claimed is due again now.
                    s.release_abandoned_handoffs(&name)?;
                    let claim = Claim {
                        by: &by,
                        until: &until,
                    };
                    s.claim_handoffs(&name, &stamp(now), &cutoff, BATCH, claim)
                })
                .await?
        };
        if due.is_empty() {
            return Ok((0, None));
        }
        let store_id = store.call(|s| s.store_id()).await?;
        let mut prepared = Vec::with_capacity(due.len());
        for d in due {
            let content = self.content(store, &d).await?;
            prepared.push((d, content));
        }
        {
            // The attempts, and a webhook's body at its first, are on record before any is made.
            let name = name.clone();
            let begin: Vec<(i64, Option<String>)> = prepared
                .iter()
                .map(|(d, c)| {
                    let fix = match (&self.target, c) {
                        (Target::Webhook(_), Ok(c)) if d.body.is_none() => {
                            Some(String::from_utf8_lossy(&c.bytes).into_owned())
                        }
                        _ => None,
                    };
                    (d.document_id, fix)
                })
                .collect();
            store
                .call(move |s| {
                    let rows: Vec<(i64, Option<&str>)> =
                        begin.iter().map(|(id, b)| (*id, b.as_deref())).collect();
                    s.begin_handoffs(&name, &rows)
                })
                .await?;
        }
        let mut results = Vec::with_capacity(prepared.len());
        let mut failure = None;
        let mut delivered = 0;
        for (d, content) in &prepared {
            // An attempt that might outlast the claim waits for the next round's claim.
            if failure.is_some() || stop() || Instant::now() + attempt > claim_ends {
                results.push((d.document_id, Attempt::NotMade));
                continue;
            }
            let outcome = match content {
                Ok(content) => self.send(&store_id, d, content).await,
                Err(e) => Err(e.clone()),
            };
            match outcome {
                Ok(()) => {
                    fault::point("after_handoff_before_mark");
                    delivered += 1;
                    results.push((d.document_id, Attempt::Delivered));
                }
                Err(error) => {
                    let retry_at = self.retry_at(d.attempts + 1);
                    tracing::info!(connector = %name, document = d.document_id, attempt = d.attempts + 1, %error, dead = retry_at.is_none(), "hand-off attempt failed");
                    failure = Some(error.clone());
                    results.push((d.document_id, Attempt::Failed { error, retry_at }));
                }
            }
        }
        let dead = {
            let name = name.clone();
            store
                .call(move |s| s.finish_handoffs(&name, &results))
                .await?
        };
        for document in dead {
            tracing::error!(connector = %name, document, "document not handed off after the last attempt; the admins get a notice");
        }
        if delivered > 0 {
            tracing::info!(connector = %name, documents = delivered, "documents handed off");
        }
        Ok((delivered, failure))
    }

    /// When to try again after `attempts` attempts failed; `None` after the last one.
    fn retry_at(&self, attempts: u32) -> Option<String> {
        let wait = self
            .config
            .retry
            .get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
        let wait = chrono::TimeDelta::from_std(crate::daemon::jittered(*wait)).ok()?;
        Some(stamp(Utc::now() + wait))
    }

    /// The bytes to send for a due document, and the file name for a folder; a document that
    /// cannot be read is an attempt's failure.
    async fn content(
        &self,
        store: &Arc<Store>,
        due: &Due,
    ) -> Result<Result<Content, String>, store::Error> {
        if let (Target::Webhook(_), Some(body)) = (&self.target, &due.body) {
            return Ok(Ok(Content {
                bytes: body.clone().into_bytes(),
                file_name: String::new(),
            }));
        }
        let id = due.document_id;
        let Some(document) = store.call(move |s| s.handoff_document(id)).await? else {
            return Ok(Err(format!("document {id} is not in the store")));
        };
        let mut with_type = Map::new();
        with_type.insert("type".into(), due.event.clone().into());
        if let Value::Object(fields) = document {
            with_type.extend(fields);
        }
        let document = Value::Object(with_type);
        let mapping = &self.config.mapping;
        Ok(Ok(match &self.target {
            Target::Webhook(_) => Content {
                bytes: serde_json::to_vec(&mapping.apply(document))
                    .expect("JSON values always serialize"),
                file_name: String::new(),
            },
            Target::Dir(d) => {
                let text = |key: &str| {
                    document
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let number = match text("kind").as_str() {
                    "order" => {
                        let order = text("order_id");
                        if order.is_empty() {
                            text("payload_id")
                        } else {
                            order
                        }
                    }
                    _ => text("number"),
                };
                let (bytes, ext) = match d.format {
                    FileFormat::Json => (render::json(&mapping.apply(document.clone())), "json"),
                    FileFormat::Csv => (
                        render::csv(&document, mapping, d.delimiter, d.decimal_comma),
                        "csv",
                    ),
                };
                Content {
                    bytes,
                    file_name: dir::file_name(id, &text("kind"), &number, &due.event, ext),
                }
            }
        }))
    }

    async fn send(&self, store_id: &str, due: &Due, content: &Content) -> Result<(), String> {
        match &self.target {
            Target::Webhook(hook) => {
                let event = due.event.strip_prefix("document.").unwrap_or(&due.event);
                let id = format!("msg_{store_id}_{}_{event}", due.document_id);
                hook.post(&id, &content.bytes).await
            }
            Target::Dir(d) => {
                let (folder, name, bytes) = (
                    d.path.clone(),
                    content.file_name.clone(),
                    content.bytes.clone(),
                );
                let written =
                    tokio::task::spawn_blocking(move || dir::write_new(&folder, &name, &bytes))
                        .await
                        .map_err(|e| format!("the file task stopped: {e}"))??;
                if written == dir::Written::AlreadyThere {
                    tracing::info!(connector = %self.name(), file = %content.file_name, "the file was written by an earlier attempt");
                }
                Ok(())
            }
        }
    }
}

/// What one attempt sends.
struct Content {
    bytes: Vec<u8>,
    /// The file's name (dir connectors).
    file_name: String,
}

/// The checks of `eingang check`: a signed test event (`type` `connector.test`) to every
/// webhook, which must answer 2xx; a file written, synced and removed in every folder (made
/// with `create_folders`). One line each.
pub async fn check(config: &Config, create_folders: bool) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    for c in &config.connectors {
        match &c.kind {
            ConnectorKind::Webhook(w) => {
                let what = format!(
                    "connector {}: test event to {}",
                    c.name,
                    webhook::shown(&w.url)
                );
                let result = match Webhook::new(w) {
                    Ok(hook) => {
                        let now = Utc::now();
                        let body = serde_json::json!({
                            "type": "connector.test",
                            "connector": c.name,
                            "timestamp": stamp(now),
                        });
                        let id = format!(
                            "msg_check_{}",
                            now.timestamp_nanos_opt().unwrap_or_default()
                        );
                        hook.post(&id, body.to_string().as_bytes()).await
                    }
                    Err(e) => Err(e),
                };
                lines.push((what, result));
            }
            ConnectorKind::Dir(d) => {
                let what = format!("connector {}: folder {} writable", c.name, d.path.display());
                lines.push((what, dir::check_writable(&d.path, create_folders)));
            }
        }
    }
    lines
}
