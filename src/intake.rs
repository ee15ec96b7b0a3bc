//! The one front door for items. Every channel (a source's pass, `eingang import`, later an
//! HTTP receiver) hands its items to an `Intake` and gets their committed outcomes back; only
//! the intake reaches the store for items. The blocking work (the ledger, parsing, SQLite)
//! runs on the blocking pool inside, so async callers simply await an outcome.
//!
//! The order the promises rest on is the caller's part, written once in `source::pass`:
//! `unfinished` first (what a crash left), then `accept` (committed: now it may move), then the
//! move, then `placed`.

use std::sync::Arc;

use crate::format::{Limits, Registry};
use crate::item::Item;
use crate::pipeline::{self, Context};
use crate::source::Stray;
use crate::store::{self, FailedItem, Outcome, Place, Store, Unfinished};

/// The way items reach the store. Cheap to clone: every clone shares one store.
#[derive(Clone)]
pub struct Intake {
    cx: Arc<Context>,
}

impl Intake {
    /// An intake over these formats, limits and store.
    pub fn new(registry: Registry, limits: Limits, store: Arc<Store>) -> Intake {
        Intake {
            cx: Arc::new(Context {
                registry,
                limits,
                store,
            }),
        }
    }

    /// The store, for what is not about items: the outbox, counters, source health.
    pub fn store(&self) -> &Arc<Store> {
        &self.cx.store
    }

    /// The size limit above which an item's bytes are not read.
    pub fn max_item_bytes(&self) -> u64 {
        self.cx.limits.max_item_bytes
    }

    /// Ledger, route, extract, parse, validate, commit: every item of the batch gets its
    /// outcome, committed, in input order. `binding` is the supplier a source binds its table
    /// files to. Nothing has moved yet; an `Err` means "try the batch again later".
    pub async fn accept(
        &self,
        items: Vec<Item>,
        binding: Option<&str>,
    ) -> Result<Vec<Outcome>, store::Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (cx, binding) = (self.cx.clone(), binding.map(str::to_owned));
        tokio::task::spawn_blocking(move || pipeline::handle_batch(&items, binding.as_deref(), &cx))
            .await
            .map_err(|e| store::Error::Task(e.to_string()))?
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
}
