//! One pass over one source: the sequence that "nothing lost, nothing twice" rests on, written
//! once for every kind of source. Read it top to bottom:
//!
//! 1. Reconcile first. Items the ledger has without a recorded place are looked for: decided
//!    and still in the inbox → moved now by their outcome; found in their folder → recorded;
//!    gone → recorded as such (`reconcile::plan` decides).
//! 2. List the inbox (the queue) and cut what is ready into batches.
//! 3. Per batch: fetch → `Intake::accept` (committed: now it may move) → `Inbox::dispose` →
//!    `Intake::placed`. Three batches are in flight: while batch i is parsed and committed on
//!    the blocking pool, the source moves batch i-1 (committed already) and fetches batch
//!    i+1, so the server and eingang work at the same time. A batch still moves only after
//!    its outcomes are committed.
//! 4. List again until nothing is ready; `Mode::Sync` also waits for items still being
//!    written.
//!
//! A failed move costs that item only: it stays in the inbox with its outcome, and the pass
//! goes on and ends with an error that names it. A broken connection ends the pass; what was
//! committed and not moved is finished by step 1 of the next one.
//!
//! A deferred item (its sender could not be checked because DNS failed, and its supplier
//! requires authentication) is not moved at all: it stays in the inbox, is not listed again in
//! this pass, and the report says when the first of them is due again.

use std::collections::{HashMap, HashSet};

use super::reconcile::{self, Step, Wanted};
use super::{BatchLimits, Entry, Error, Fetched, Inbox, Move};
use crate::disposition::Disposition;
use crate::fault;
use crate::intake::Intake;
use crate::item::Item;
use crate::stop::Stop;
use crate::store::Outcome;

/// Whether a pass waits for items still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The daemon: an item still settling is looked at once more after its settle time, then
    /// left for the next pass.
    Daemon,
    /// `eingang sync`: every item that completes is handled before the pass returns.
    Sync,
}

/// What one pass over a source did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Items imported and archived.
    pub imported: usize,
    /// Items rejected and moved to the error folder.
    pub rejected: usize,
    /// Items seen but not yet settled (still being written); they wait for the next pass.
    pub waiting: usize,
    /// Messages left in the inbox, not decided, until DNS answers for their sender's check.
    pub deferred: usize,
    /// When the first of them is due again (RFC 3339, UTC).
    pub retry_at: Option<String>,
}

impl PassReport {
    /// Whether the pass moved anything.
    pub fn made_progress(&self) -> bool {
        self.imported + self.rejected > 0
    }
}

/// A finished pass: what it did, and the error that ended it, if any.
#[derive(Debug)]
pub struct Pass {
    /// What was moved before the end.
    pub report: PassReport,
    /// `Err`: the pass ended early or left items unmoved; they stay for the next one.
    pub result: Result<(), Error>,
}

impl Pass {
    /// A pass that could not start.
    pub fn failed(error: Error) -> Pass {
        Pass {
            report: PassReport::default(),
            result: Err(error),
        }
    }
}

/// Everything one pass needs besides the inbox.
pub struct Run<'a> {
    /// The source's name, as the ledger knows it.
    pub source: &'a str,
    /// The supplier the source binds its table files to.
    pub binding: Option<&'a str>,
    /// The way to the store.
    pub intake: &'a Intake,
    /// Honoured between batches.
    pub stop: &'a Stop,
    /// Whether to wait for items still being written.
    pub mode: Mode,
}

/// A batch whose outcomes are committed, waiting for its move.
struct Decided<E> {
    entries: Vec<E>,
    outcomes: Vec<Outcome>,
}

/// The running state of one pass.
struct State {
    report: PassReport,
    /// Entries taken in this pass: not listed again until the next one.
    tried: HashSet<String>,
    /// Moves that failed; the pass ends with them as its error.
    unmoved: Vec<String>,
}

impl Run<'_> {
    /// Runs the pass over an open inbox.
    pub async fn over<I: Inbox>(&self, inbox: &mut I) -> Pass {
        let mut state = State {
            report: PassReport::default(),
            tried: HashSet::new(),
            unmoved: Vec::new(),
        };
        let result = self.run(inbox, &mut state).await;
        let result = result.and_then(|()| match state.unmoved.is_empty() {
            true => Ok(()),
            false => Err(Error::NotMoved(state.unmoved.join("; "))),
        });
        Pass {
            report: state.report,
            result,
        }
    }

    async fn run<I: Inbox>(&self, inbox: &mut I, state: &mut State) -> Result<(), Error> {
        self.intake.set_note(self.source, inbox.note()).await?;
        self.reconcile(inbox, state).await?;
        let mut waited = false;
        while !self.stop.is_set() {
            let listing = inbox.list(&state.tried).await?;
            state.report.waiting = listing.waiting;
            if let Some(strays) = listing.strays {
                self.intake.strays(self.source, strays).await?;
            }
            if listing.ready.is_empty() {
                // Items still being written get one more look after their settle time (the
                // daemon leaves those that keep changing to its next pass; `sync` waits).
                match listing.settle_in {
                    Some(wait) if self.mode == Mode::Sync || !waited => {
                        waited = true;
                        self.stop.sleep(wait).await;
                        continue;
                    }
                    _ => return Ok(()),
                }
            }
            let batches = batches(
                listing.ready,
                inbox.batch_limits(),
                self.intake.max_item_bytes(),
            );
            self.drain(inbox, batches, state).await?;
        }
        Ok(())
    }

    /// Step 1: what a crash left between commit and record.
    async fn reconcile<I: Inbox>(&self, inbox: &mut I, state: &mut State) -> Result<(), Error> {
        let unfinished = self.intake.unfinished(self.source).await?;
        if unfinished.is_empty() {
            return Ok(());
        }
        let wanted: Vec<Wanted> = unfinished.into_iter().map(Wanted::of).collect();
        let items: Vec<_> = wanted.iter().map(|w| w.item.clone()).collect();
        let seen = inbox.locate(wanted).await?;
        let mut places = Vec::new();
        let mut moves = Vec::new();
        for (item, seen) in items.iter().zip(seen) {
            match reconcile::plan(item, seen) {
                Step::Move(entry, disposition) => {
                    state.tried.insert(entry.key());
                    moves.push(Move {
                        entry,
                        item_id: item.item_id,
                        disposition,
                    });
                }
                Step::Record(place) => {
                    tracing::debug!(source = %self.source, item = %item.location, place = %place.at, "recorded a move interrupted by a crash");
                    places.push((item.item_id, place));
                }
                Step::Leave => {}
            }
        }
        if !places.is_empty() {
            tracing::info!(source = %self.source, items = places.len(), "recorded where items lie that moved before a crash");
        }
        self.intake.placed(places).await?;
        if !moves.is_empty() {
            tracing::info!(source = %self.source, items = moves.len(), "moving items decided before a crash");
            self.finish(inbox, moves, state).await?;
        }
        Ok(())
    }

    /// Step 3, for the batches of one listing, three in flight.
    async fn drain<I: Inbox>(
        &self,
        inbox: &mut I,
        batches: Vec<Vec<I::Entry>>,
        state: &mut State,
    ) -> Result<(), Error> {
        let max_item_bytes = self.intake.max_item_bytes();
        let mut committed: Option<Decided<I::Entry>> = None;
        let mut prefetched: Option<Vec<Fetched<I::Entry>>> = None;
        let mut batches = batches.into_iter().peekable();
        while let Some(batch) = batches.next() {
            if self.stop.is_set() {
                break;
            }
            state.tried.extend(batch.iter().map(Entry::key));
            let fetched = match prefetched.take() {
                Some(fetched) => fetched,
                None => inbox.fetch(batch, max_item_bytes).await?,
            };
            let (entries, items) = take_fetched(fetched, &mut state.tried);
            let next = batches.peek().filter(|_| !self.stop.is_set()).cloned();
            let previous = committed.take();
            let (accepted, fetched_next) =
                tokio::join!(self.intake.accept(items, self.binding), async {
                    if let Some(previous) = previous {
                        let moves = moves_of(previous);
                        self.finish(inbox, moves, state).await?;
                    }
                    match next {
                        Some(next) => inbox.fetch(next, max_item_bytes).await.map(Some),
                        None => Ok(None),
                    }
                });
            // Either failure ends the pass; what was committed and not moved is moved at the
            // start of the next one.
            let outcomes = accepted?;
            self.note_deferred(&outcomes, &entries, &mut state.report);
            committed = Some(Decided { entries, outcomes });
            fault::panic_point("mid_pass");
            prefetched = fetched_next?;
        }
        if let Some(last) = committed {
            self.finish(inbox, moves_of(last), state).await?;
        }
        Ok(())
    }

    /// Counts the entries that stay in the inbox, not decided, and when the first is due.
    fn note_deferred<E: Entry>(
        &self,
        outcomes: &[Outcome],
        entries: &[E],
        report: &mut PassReport,
    ) {
        for (outcome, entry) in outcomes.iter().zip(entries) {
            if let Outcome::Deferred { reason, until, .. } = outcome {
                report.deferred += 1;
                if report.retry_at.as_ref().is_none_or(|at| until < at) {
                    report.retry_at = Some(until.clone());
                }
                tracing::warn!(source = %self.source, item = %entry.name(), %reason, retry_at = %until, "left in the inbox, not decided");
            }
        }
    }

    /// Moves decided entries and records where they lie now.
    async fn finish<I: Inbox>(
        &self,
        inbox: &mut I,
        moves: Vec<Move<I::Entry>>,
        state: &mut State,
    ) -> Result<(), Error> {
        if moves.is_empty() {
            return Ok(());
        }
        let names: HashMap<i64, (String, Disposition)> = moves
            .iter()
            .map(|m| (m.item_id, (m.entry.name(), m.disposition.clone())))
            .collect();
        // On a store that several daemons share, only the source's owner moves its items,
        // and only while it still owns it; the new owner moves what this one committed.
        if !self.intake.owns(self.source).await {
            return Err(crate::store::Error::Fenced(self.source.to_owned()).into());
        }
        let disposed = inbox.dispose(moves).await;
        fault::point("after_move");
        let (mut archived, mut rejected) = (0, 0);
        for (item_id, place) in &disposed.placed {
            match names.get(item_id) {
                Some((name, Disposition::Archive)) => {
                    archived += 1;
                    tracing::debug!(source = %self.source, item = %name, to = %place.at, "item archived");
                }
                Some((name, Disposition::Error { reason, .. })) => {
                    rejected += 1;
                    tracing::warn!(source = %self.source, item = %name, %reason, "item rejected");
                }
                None => {}
            }
        }
        state.report.imported += archived;
        state.report.rejected += rejected;
        if archived + rejected > 0 {
            tracing::info!(source = %self.source, archived, rejected, "batch moved");
        }
        for (item_id, why) in &disposed.failed {
            let name = names.get(item_id).map_or("", |(n, _)| n.as_str());
            tracing::error!(source = %self.source, item = %name, error = %why, "not moved; left in the inbox");
            state.unmoved.push(why.clone());
        }
        self.intake.placed(disposed.placed).await?;
        match disposed.broken {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The moves of a committed batch, by its outcomes; a deferred item is not moved.
fn moves_of<E>(decided: Decided<E>) -> Vec<Move<E>> {
    decided
        .entries
        .into_iter()
        .zip(decided.outcomes)
        .filter_map(|(entry, outcome)| {
            Some(Move {
                entry,
                item_id: outcome.item_id(),
                disposition: Disposition::of(&outcome)?,
            })
        })
        .collect()
}

/// The entries and items of a fetched batch. An entry that changed or vanished since it was
/// listed, and a second copy of the same bytes in one batch, are put back (untried) for the
/// next round, where the ledger knows the first.
fn take_fetched<E: Entry>(
    fetched: Vec<Fetched<E>>,
    tried: &mut HashSet<String>,
) -> (Vec<E>, Vec<Item>) {
    let mut keys = HashSet::new();
    let mut entries = Vec::with_capacity(fetched.len());
    let mut items = Vec::with_capacity(fetched.len());
    for Fetched { entry, item } in fetched {
        match item {
            Some(item) if keys.insert(item.key().clone()) => {
                entries.push(entry);
                items.push(item);
            }
            _ => {
                tried.remove(&entry.key());
            }
        }
    }
    (entries, items)
}

/// Cuts the ready entries into batches of at most `limits.items` entries and `limits.bytes` to
/// download; an entry over the item limit is not downloaded, so it weighs nothing.
pub fn batches<E: Entry>(ready: Vec<E>, limits: BatchLimits, max_item_bytes: u64) -> Vec<Vec<E>> {
    let mut out: Vec<Vec<E>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0u64;
    for entry in ready {
        let weight = if entry.size() > max_item_bytes {
            0
        } else {
            entry.size()
        };
        if !current.is_empty() && (current.len() >= limits.items || bytes + weight > limits.bytes) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(entry);
        bytes += weight;
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{ItemKind, Origin};

    #[derive(Debug, Clone, PartialEq)]
    struct E(u32, u64);

    impl Entry for E {
        fn key(&self) -> String {
            self.0.to_string()
        }
        fn size(&self) -> u64 {
            self.1
        }
        fn name(&self) -> String {
            self.key()
        }
    }

    fn sizes(batches: &[Vec<E>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let limits = BatchLimits {
            items: 500,
            bytes: 8 << 20,
        };
        let many: Vec<E> = (1..=1200).map(|u| E(u, 1000)).collect();
        assert_eq!(sizes(&batches(many, limits, 50 << 20)), [500, 500, 200]);
        // 5 + 5 MiB exceeds 8 MiB; the oversized one is not downloaded and weighs nothing.
        let big = vec![E(1, 5 << 20), E(2, 5 << 20), E(3, 100 << 20), E(4, 1)];
        assert_eq!(
            batches(big, limits, 50 << 20),
            vec![
                vec![E(1, 5 << 20)],
                vec![E(2, 5 << 20), E(3, 100 << 20), E(4, 1)]
            ]
        );
        assert!(batches(Vec::<E>::new(), limits, 1).is_empty());
    }

    fn item(bytes: &[u8]) -> Option<Item> {
        let origin = Origin {
            source: "t".into(),
            location: "x".into(),
            file_name: None,
        };
        Some(Item::new(bytes.to_vec(), ItemKind::File, origin))
    }

    #[test]
    fn changed_entries_and_twins_wait_for_the_next_round() {
        let mut tried: HashSet<String> = ["1", "2", "3", "4"].map(String::from).into();
        let fetched = vec![
            Fetched {
                entry: E(1, 1),
                item: item(b"a"),
            },
            Fetched {
                entry: E(2, 1),
                item: None,
            },
            Fetched {
                entry: E(3, 1),
                item: item(b"a"),
            },
            Fetched {
                entry: E(4, 1),
                item: item(b"b"),
            },
        ];
        let (entries, items) = take_fetched(fetched, &mut tried);
        assert_eq!(entries, [E(1, 1), E(4, 1)]);
        assert_eq!(items.len(), 2);
        assert_eq!(tried, ["1", "4"].map(String::from).into());
    }
}
