//! One batch of items from their bytes to stored outcomes: ledger → route → extract → parse →
//! validate → store. Moving the items is the caller's job (`Source::dispose`), after this
//! returns, so an item leaves its inbox only once its outcome is committed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use crate::error::Reject;
use crate::extract::{self, Envelope};
use crate::fault;
use crate::format::{self, Attachment, Limits, Parsed, Registry, TableFormat};
use crate::item::{Item, ItemKind};
use crate::model::{self, Document};
use crate::route;
use crate::store::{self, Outcome, Prior, Store, Verdict};

impl Context {
    /// The formats as they are now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What every step needs: the formats, the limits and the store.
pub struct Context {
    /// Built-in and supplier formats; replaced whole when the format files are read again
    /// (SIGHUP), so that a batch parses with one set from start to end.
    pub registry: RwLock<Arc<Registry>>,
    /// Size, depth and row limits.
    pub limits: Limits,
    /// The ledger.
    pub store: Arc<Store>,
}

/// The result of parsing one item, before it is stored.
#[derive(Debug)]
pub struct Parse {
    /// The message's envelope (empty for files).
    pub envelope: Envelope,
    /// The supplier routing found.
    pub supplier: Option<String>,
    /// The documents, validated, or the rejection.
    pub result: Result<Vec<Document>, Reject>,
}

/// Takes a batch of items to committed outcomes, in the order given. Items the ledger already
/// decided are not parsed again; new ones are committed together in one transaction; items
/// whose earlier attempt died are parsed and committed one by one, each attempt counted first.
/// `forced` is a supplier binding of the source. An `Err` means "try the batch again later".
pub fn handle_batch(
    items: &[Item],
    forced: Option<&str>,
    cx: &Context,
) -> Result<Vec<Outcome>, store::Error> {
    let refs: Vec<&Item> = items.iter().collect();
    let priors = cx.store.begin(&refs)?;
    let registry = cx.registry();
    let forced = forced.and_then(|name| registry.by_name(name));
    let mut outcomes: Vec<Option<Outcome>> = vec![None; items.len()];
    let mut fresh = Vec::new();
    let mut retries = Vec::new();
    let mut to_parse = Vec::new();
    for (i, prior) in priors.into_iter().enumerate() {
        match prior {
            Prior::Decided(outcome) => outcomes[i] = Some(outcome),
            Prior::Fresh { item_id } => to_parse.push((i, item_id)),
            Prior::Retry { item_id } => retries.push((i, item_id)),
            Prior::Poison { item_id, attempts } => {
                fresh.push((
                    i,
                    verdict(item_id, rejection(&items[i], Reject::Poison { attempts })),
                ));
            }
            Prior::AlreadyImported { item_id, existing } => {
                fresh.push((
                    i,
                    verdict(
                        item_id,
                        rejection(&items[i], Reject::AlreadyImported { existing }),
                    ),
                ));
            }
        }
    }
    let parsed = parallel_map(&to_parse, |&(i, item_id)| {
        verdict(
            item_id,
            parse_with(&items[i], forced, &registry, &cx.limits),
        )
    });
    fresh.extend(to_parse.iter().map(|&(i, _)| i).zip(parsed));
    fresh.sort_by_key(|(i, _)| *i);
    let (fresh_at, fresh): (Vec<usize>, Vec<Verdict>) = fresh.into_iter().unzip();
    for (i, outcome) in fresh_at.into_iter().zip(cx.store.commit(fresh)?) {
        outcomes[i] = Some(outcome);
    }
    for (i, item_id) in retries {
        cx.store.count_attempt(item_id)?;
        let parsed = parse_with(&items[i], forced, &registry, &cx.limits);
        outcomes[i] = cx.store.commit(vec![verdict(item_id, parsed)])?.pop();
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.expect("every item of the batch has an outcome"))
        .collect();
    // The bytes of each rejected item go with its notice as the attachment. Kept after the
    // commit and before the move, also for an outcome decided before a crash; the notice
    // waits for the move.
    let originals: Vec<(i64, &[u8])> = items
        .iter()
        .zip(&outcomes)
        .filter_map(|(item, outcome)| match outcome {
            Outcome::Rejected { item_id, .. }
                if !item.bytes.is_empty()
                    && item.bytes.len() as u64 <= crate::notify::MAX_ATTACHMENT_BYTES =>
            {
                Some((*item_id, item.bytes.as_slice()))
            }
            _ => None,
        })
        .collect();
    cx.store.keep_originals(&originals)?;
    // An imported item's bytes are kept for the admin page's download (size-bounded); a crash
    // before this costs only the download, never the document.
    let imported: Vec<(i64, &[u8])> = items
        .iter()
        .zip(&outcomes)
        .filter_map(|(item, outcome)| match outcome {
            Outcome::Imported { item_id, .. } => Some((*item_id, item.bytes.as_slice())),
            Outcome::Rejected { .. } => None,
        })
        .collect();
    cx.store.keep_imported_originals(&imported)?;
    fault::point("after_commit");
    Ok(outcomes)
}

/// Maps `f` over `jobs` on every core, keeping the order. Parsing is CPU work with no shared
/// state, so a batch goes about as many times faster as there are cores.
fn parallel_map<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || jobs.len() < 2 {
        return jobs.iter().map(&f).collect();
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("parse threads catch their own panics"))
            .collect()
    })
}

fn verdict(item_id: i64, parse: Parse) -> Verdict {
    Verdict {
        item_id,
        envelope: parse.envelope,
        supplier: parse.supplier,
        result: parse.result,
    }
}

/// A rejection decided without parsing; the envelope is still read for the notification.
fn rejection(item: &Item, reject: Reject) -> Parse {
    let envelope = match item.kind {
        ItemKind::Message => extract::message(&item.bytes, item.name())
            .map(|m| m.envelope)
            .unwrap_or_default(),
        ItemKind::File => file_envelope(item),
    };
    Parse {
        envelope,
        supplier: None,
        result: Err(reject),
    }
}

/// A file has no envelope; only the sender its channel names (a cXML partner) is recorded.
fn file_envelope(item: &Item) -> Envelope {
    Envelope {
        sender: item.sender().map(str::to_owned),
        ..Envelope::default()
    }
}

/// Parses one item without storing it (what `eingang parse` prints). A panic anywhere inside
/// becomes a rejection of this item; the watcher goes on.
pub fn parse_with(
    item: &Item,
    forced: Option<&TableFormat>,
    registry: &Registry,
    limits: &Limits,
) -> Parse {
    fault::parsing(item.name());
    catch_unwind(AssertUnwindSafe(|| {
        documents_of(item, forced, registry, limits)
    }))
    .unwrap_or_else(|_| Parse {
        envelope: Envelope::default(),
        supplier: None,
        result: Err(Reject::malformed(
            item.name(),
            "eingang failed on this file (an internal error; please report it with the file)",
        )),
    })
}

fn documents_of(
    item: &Item,
    forced: Option<&TableFormat>,
    registry: &Registry,
    limits: &Limits,
) -> Parse {
    if item.size() > limits.max_item_bytes {
        return Parse {
            envelope: Envelope::default(),
            supplier: forced.map(|f| f.name.clone()),
            result: Err(Reject::too_large(
                item.name(),
                format!(
                    "{} bytes, the limit is {} bytes (limits.max_item_mib)",
                    item.size(),
                    limits.max_item_bytes
                ),
            )),
        };
    }
    let (envelope, attachments, skipped) = match item.kind {
        ItemKind::Message => match extract::message(&item.bytes, item.name()) {
            Ok(m) => (m.envelope, m.attachments, m.skipped),
            Err(reject) => {
                return Parse {
                    envelope: Envelope::default(),
                    supplier: None,
                    result: Err(reject),
                };
            }
        },
        ItemKind::File => (
            file_envelope(item),
            vec![Attachment {
                name: item.name().to_owned(),
                content_type: None,
                bytes: item.bytes.clone(),
            }],
            Vec::new(),
        ),
    };
    let route = route::resolve(
        registry,
        item.kind,
        envelope.sender.as_deref(),
        item.origin.file_name.as_deref(),
        forced,
    );
    let result = parse_attachments(
        &attachments,
        skipped,
        &route,
        registry,
        envelope.sender.as_deref(),
        limits,
    );
    Parse {
        supplier: route.supplier_name().map(str::to_owned),
        envelope,
        result,
    }
}

fn parse_attachments(
    attachments: &[Attachment],
    mut ignored: Vec<String>,
    route: &route::Route<'_>,
    registry: &Registry,
    sender: Option<&str>,
    limits: &Limits,
) -> Result<Vec<Document>, Reject> {
    let mut documents = Vec::new();
    let mut unrouted = None;
    for attachment in attachments {
        let supplier = route.supplier.filter(|s| s.accepts(attachment));
        match format::parse(attachment, supplier, limits)? {
            Parsed::Documents(found) => documents.extend(found),
            Parsed::Ignored(why) => {
                if route.supplier.is_none() && format::is_table_file(attachment) {
                    unrouted.get_or_insert(attachment);
                }
                ignored.push(why);
            }
        }
    }
    // A table nobody can read is the rejection when nothing else was found; beside standard
    // documents it is only logged, so that the documents are not held back by it.
    if let Some(attachment) = unrouted {
        if documents.is_empty() {
            return Err(route.unrouted(registry, sender, attachment));
        }
        tracing::warn!(file = %attachment.name, "table attachment without a supplier ignored");
    }
    if documents.is_empty() {
        let why = if ignored.is_empty() {
            "the message has no attachment".to_owned()
        } else {
            format!("found only {}", ignored.join(", "))
        };
        return Err(Reject::NoDocuments { why });
    }
    for document in &mut documents {
        document.set_supplier(route.supplier_name());
    }
    model::validate(&documents)?;
    Ok(documents)
}
