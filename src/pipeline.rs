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
        ItemKind::File => Envelope::default(),
    };
    Parse {
        envelope,
        supplier: None,
        result: Err(reject),
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
            Envelope::default(),
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
    let mut read_by = None;
    let result = parse_attachments(
        &attachments,
        skipped,
        &route,
        registry,
        envelope.sender.as_deref(),
        limits,
        &mut read_by,
    );
    Parse {
        // A ZIP member may have found a supplier that the item's own name did not.
        supplier: read_by.or_else(|| route.supplier_name().map(str::to_owned)),
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
    read_by: &mut Option<String>,
) -> Result<Vec<Document>, Reject> {
    // A ZIP archive's members take its place, each routed like an attachment of its own.
    let (attachments, empty_archives) = format::archive::expand(attachments, limits)?;
    ignored.extend(empty_archives);
    let mut documents = Vec::new();
    let mut unrouted = None;
    for attachment in attachments.iter().map(|a| &**a) {
        let routed = route.table_supplier(registry, attachment);
        let supplier = routed.filter(|s| s.accepts(attachment));
        // The first supplier whose table format takes an attachment is the item's.
        if let Some(format) = supplier
            && read_by.is_none()
            && format::is_table_file(attachment)
        {
            *read_by = Some(format.name.clone());
        }
        match format::parse(attachment, supplier, limits)? {
            Parsed::Documents(mut found) => {
                // Tables carry their supplier; standard XML only the sender's (`route`).
                for document in &mut found {
                    document.set_supplier(route.standard_supplier());
                }
                documents.extend(found);
            }
            Parsed::Ignored(why) => {
                if routed.is_none() && format::is_table_file(attachment) {
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
    // The one clock of parsing, read per item so that a daemon running for months keeps a
    // current window; tests fix the day in `limits.today`.
    let today = limits
        .today
        .unwrap_or_else(|| chrono::Local::now().date_naive());
    model::validate(&documents, today)?;
    Ok(documents)
}
