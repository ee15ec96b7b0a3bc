//! The one front door for items. Every channel (a source's pass, `eingang import`, later an
//! HTTP receiver) hands its items to an `Intake` and gets their committed outcomes back; only
//! the intake reaches the store for items. The blocking work (the ledger, parsing, SQLite)
//! runs on the blocking pool inside, so async callers simply await an outcome.
//!
//! The order the promises rest on is the caller's part, written once in `source::pass`:
//! `unfinished` first (what a crash left), then `accept` (committed: now it may move), then the
//! move, then `placed`.
//!
//! The sender of every message is checked here, at its first sight (DESIGN.md promise 8),
//! before the blocking part: the check is DNS work, asynchronous and bounded
//! (`auth::CHECK_DEADLINE`), so the messages of a batch are checked together on the runtime
//! while no store lock is held, and the pipeline then decides on plain values. A message the
//! ledger already has a verdict for (a reprocess: the same bytes from the same source) keeps
//! it without any look-up; one left waiting in its inbox is looked at again only once due.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use crate::auth::{self, Resolver, Trust};
use crate::config::Config;
use crate::format::{Limits, Registry};
use crate::item::{Item, ItemKind};
use crate::pipeline::{self, Context, SenderCheck};
use crate::source::Stray;
use crate::store::{self, FailedItem, Known, Outcome, Place, Probe, Store, Unfinished};

/// Messages of one batch checked at the same time: each check waits mostly on DNS, so many
/// run side by side, yet a batch of hundreds does not open hundreds of sockets at once.
const PARALLEL_CHECKS: usize = 64;

/// When a message left in its inbox (DNS failed, its supplier requires authentication) is
/// looked at again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Once its wait is over (`store::RETRY_START`, doubling to `store::RETRY_CAP`): the
    /// daemon, whose passes come often.
    Backoff,
    /// Whenever it is met: `sync` and `import`, which a person runs on purpose.
    Now,
}

/// How the intake checks the senders of messages.
pub struct SenderAuth {
    resolver: Arc<Resolver>,
    trust: HashMap<String, Trust>,
    retry: Retry,
}

impl SenderAuth {
    /// The one resolver of the process, each source's trusted `Authentication-Results`
    /// header as configured (`import` trusts none), and when waiting messages are retried.
    pub fn new(config: &Config, resolver: Arc<Resolver>, retry: Retry) -> SenderAuth {
        SenderAuth {
            resolver,
            trust: config
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.trust.clone()))
                .collect(),
            retry,
        }
    }

    /// Checks every message (`messages`: indices into `items`) whose sender the ledger knows
    /// nothing about, side by side; the others get what the ledger knows (`known`, one per
    /// message), and every other item nothing.
    async fn check(
        &self,
        items: &[Item],
        messages: &[usize],
        known: Vec<Known>,
    ) -> Vec<SenderCheck> {
        let mut checks = vec![SenderCheck::NotApplicable; items.len()];
        let mut unknown = Vec::new();
        for (&i, known) in messages.iter().zip(known) {
            match known {
                Known::Stored(verdict) => checks[i] = SenderCheck::Verdict(verdict),
                Known::Waiting => checks[i] = SenderCheck::Waiting,
                Known::Unknown => unknown.push(i),
            }
        }
        let resolver = &self.resolver;
        let verdicts: Vec<(usize, auth::Verdict)> = futures::stream::iter(unknown)
            .map(|i| {
                let item = &items[i];
                let trust = self
                    .trust
                    .get(&item.origin.source)
                    .cloned()
                    .unwrap_or_default();
                async move { (i, auth::authenticate(&item.bytes, &trust, resolver).await) }
            })
            .buffer_unordered(PARALLEL_CHECKS)
            .collect()
            .await;
        for (i, verdict) in verdicts {
            tracing::debug!(item = %items[i].name(), verdict = %verdict.summary(), "sender checked");
            checks[i] = SenderCheck::Verdict(verdict);
        }
        checks
    }
}

/// The way items reach the store. Cheap to clone: every clone shares one store.
#[derive(Clone)]
pub struct Intake {
    cx: Arc<Context>,
    auth: Arc<SenderAuth>,
}

impl Intake {
    /// An intake over these formats, limits and store, checking senders as `auth` says.
    pub fn new(registry: Registry, limits: Limits, store: Arc<Store>, auth: SenderAuth) -> Intake {
        Intake {
            cx: Arc::new(Context {
                registry: std::sync::RwLock::new(Arc::new(registry)),
                limits,
                store,
            }),
            auth: Arc::new(auth),
        }
    }

    /// The store, for what is not about items: the outbox, counters, source health.
    pub fn store(&self) -> &Arc<Store> {
        &self.cx.store
    }

    /// How many supplier formats are loaded.
    pub fn formats(&self) -> usize {
        self.cx.registry().tables().len()
    }

    /// The size limit above which an item's bytes are not read.
    pub fn max_item_bytes(&self) -> u64 {
        self.cx.limits.max_item_bytes
    }

    /// Sender check, ledger, route, extract, parse, validate, commit: every item of the batch
    /// gets its outcome, committed, in input order. `binding` is the supplier a source binds
    /// its table files to. Nothing has moved yet; an `Outcome::Deferred` stays where it is
    /// (not decided, tried again later). An `Err` means "try the batch again later".
    pub async fn accept(
        &self,
        items: Vec<Item>,
        binding: Option<&str>,
    ) -> Result<Vec<Outcome>, store::Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let due_by = match self.auth.retry {
            Retry::Backoff => store::due_now(),
            Retry::Now => store::DUE_NOW.to_owned(),
        };
        let checks = self.check_senders(&items, &due_by).await?;
        let (cx, binding) = (self.cx.clone(), binding.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            pipeline::handle_batch(&items, binding.as_deref(), &cx, &checks, &due_by)
        })
        .await
        .map_err(|e| store::Error::Task(e.to_string()))?
    }

    /// What is known about the sender of each item, and a check of every message the ledger
    /// knows nothing about.
    async fn check_senders(
        &self,
        items: &[Item],
        due_by: &str,
    ) -> Result<Vec<SenderCheck>, store::Error> {
        // Files have no sender; a message over the size limit is not read.
        let messages: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].kind == ItemKind::Message && !items[i].bytes.is_empty())
            .collect();
        if messages.is_empty() {
            return Ok(vec![SenderCheck::NotApplicable; items.len()]);
        }
        let probes: Vec<Probe> = messages
            .iter()
            .map(|&i| Probe {
                sha256: items[i].key().as_str().to_owned(),
                source: items[i].origin.source.clone(),
                location: items[i].origin.location.clone(),
            })
            .collect();
        let due = due_by.to_owned();
        let found = self
            .cx
            .store
            .call(move |store| store.sender_checks(&probes, &due))
            .await?;
        Ok(self.auth.check(items, &messages, found).await)
    }

    /// Whether this process may move the items of `source` now (`Store::owns`): always on a
    /// store of one daemon.
    pub async fn owns(&self, source: &str) -> bool {
        let source = source.to_owned();
        self.cx
            .store
            .call(move |store| Ok(store.owns(&source)))
            .await
            .unwrap_or(false)
    }

    /// Records where each item lies now, once its source moved it; after this it is done.
    pub async fn placed(&self, places: Vec<(i64, Place)>) -> Result<(), store::Error> {
        if places.is_empty() {
            return Ok(());
        }
        self.cx
            .store
            .call(move |store| store.mark_placed(&places))
            .await
    }

    /// The items of a source whose place was never recorded: what a crash (or a failed move)
    /// left between commit and record.
    pub async fn unfinished(&self, source: &str) -> Result<Vec<Unfinished>, store::Error> {
        let source = source.to_owned();
        self.cx
            .store
            .call(move |store| store.unfinished(&source))
            .await
    }

    /// Records how a pass of a source ended, for `status` and the down and up notices.
    pub async fn record_pass(&self, source: &str, error: Option<String>) {
        let source = source.to_owned();
        let result = self
            .cx
            .store
            .call(move |store| store.record_pass(&source, error.as_deref().map_or(Ok(()), Err)))
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record the pass");
        }
    }

    /// Sets or clears the standing note `status` shows for a source.
    pub async fn set_note(&self, source: &str, note: Option<&str>) -> Result<(), store::Error> {
        let (source, note) = (source.to_owned(), note.map(str::to_owned));
        self.cx
            .store
            .call(move |store| store.set_source_note(&source, note.as_deref()))
            .await
    }

    /// The rejected item with this id, if it lies in its error folder, not put back yet.
    pub async fn failed_item(&self, id: i64) -> Result<Option<FailedItem>, store::Error> {
        self.cx.store.call(move |store| store.failed_item(id)).await
    }

    /// Clears a failed outcome after the item was put back into its inbox: the next arrival
    /// of the same bytes is a fresh try.
    pub async fn put_back(&self, id: i64) -> Result<(), store::Error> {
        self.cx
            .store
            .call(move |store| store.mark_reprocessed(id))
            .await
    }

    /// Records what else lies in a source's inbox, as the listing just saw it: one notice for
    /// each entry seen for the first time; entries gone are forgotten.
    pub async fn strays(&self, source: &str, strays: Vec<Stray>) -> Result<(), store::Error> {
        let source = source.to_owned();
        let new = self
            .cx
            .store
            .call(move |store| store.record_strays(&source, &strays))
            .await?;
        for stray in new {
            tracing::warn!(entry = %stray.name, why = %stray.why, "left alone in the inbox");
        }
        Ok(())
    }

    /// Every place the ledger records for the items of a source.
    pub async fn places(&self, source: &str) -> Result<Vec<Place>, store::Error> {
        let source = source.to_owned();
        self.cx.store.call(move |store| store.places(&source)).await
    }

    /// Records archived items the ledger does not know; returns the ones seen for the first
    /// time (each told once, by one notice listing them).
    pub async fn unrecorded(
        &self,
        source: &str,
        places: Vec<Place>,
    ) -> Result<Vec<Place>, store::Error> {
        if places.is_empty() {
            return Ok(places);
        }
        let source = source.to_owned();
        self.cx
            .store
            .call(move |store| store.record_unrecorded(&source, &places))
            .await
    }

    /// The archived items of a source the ledger did not know, not recovered yet.
    pub async fn unrecorded_places(&self, source: &str) -> Result<Vec<Place>, store::Error> {
        let source = source.to_owned();
        self.cx
            .store
            .call(move |store| store.unrecorded(&source))
            .await
    }

    /// Forgets an unrecorded item once it was put back into its inbox.
    pub async fn recovered(&self, source: &str, place: &Place) -> Result<(), store::Error> {
        let (source, place) = (source.to_owned(), place.clone());
        self.cx
            .store
            .call(move |store| store.forget_unrecorded(&source, &place))
            .await
    }

    /// Reads the format files again (SIGHUP): the new set takes over for the next batch, and
    /// what changed is returned in words. A broken file keeps the old set: the problems are
    /// the error.
    pub fn reload_formats(&self, dir: &std::path::Path) -> Result<Vec<String>, Vec<String>> {
        let new = Registry::load(dir)?;
        let old = self.cx.registry();
        let changes = format_changes(&old, &new);
        *self.cx.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(changes)
    }
}

/// What differs between two sets of supplier formats, one line per format.
fn format_changes(old: &Registry, new: &Registry) -> Vec<String> {
    let mut changes = Vec::new();
    for format in new.tables() {
        match old.by_name(&format.name) {
            None => changes.push(format!("format {} added", format.name)),
            Some(before) if format!("{before:?}") != format!("{format:?}") => {
                changes.push(format!("format {} changed", format.name));
            }
            Some(_) => {}
        }
    }
    for format in old.tables() {
        if new.by_name(&format.name).is_none() {
            changes.push(format!("format {} removed", format.name));
        }
    }
    changes
}
