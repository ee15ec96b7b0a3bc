//! One batch of items from their bytes to stored outcomes: ledger → route → extract → parse →
//! validate → store. Moving the items is the caller's job (`Source::dispose`), after this
//! returns, so an item leaves its inbox only once its outcome is committed.
//!
//! A message comes with the verdict about its sender (`SenderCheck`, taken by the intake
//! before the batch: DNS is asynchronous work). Right after routing, its supplier's
//! `authenticate` setting (the default for standard XML without a supplier format) decides:
//! go on, reject (`sender not authenticated …`), or leave it in its inbox, not decided, to be
//! tried again (`Store::defer`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use crate::auth::{self, Decision, Requirement, Sender};
use crate::error::Reject;
use crate::extract::{self, Envelope};
use crate::fault;
use crate::format::{self, Attachment, Limits, Parsed, Registry, TableFormat};
use crate::item::{Item, ItemKind};
use crate::model::{self, Document};
use crate::route;
use crate::store::{self, Held, Outcome, Prior, Store, Verdict};

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

/// What the intake found out about an item's sender before its batch.
#[derive(Debug, Clone, PartialEq)]
pub enum SenderCheck {
    /// A file, or a message whose bytes were not read: no sender to check.
    NotApplicable,
    /// The verdict about the message's sender: taken now, or stored when the same bytes were
    /// first seen in this source.
    Verdict(auth::Verdict),
    /// Left in its inbox before, and not due for another try yet.
    Waiting,
}

impl SenderCheck {
    fn verdict(&self) -> Option<&auth::Verdict> {
        match self {
            SenderCheck::Verdict(v) => Some(v),
            SenderCheck::NotApplicable | SenderCheck::Waiting => None,
        }
    }
}

/// A message to leave in its inbox, not decided: DNS failed and its supplier requires
/// authentication.
#[derive(Debug)]
pub struct Postponed {
    /// The message's envelope.
    pub envelope: Envelope,
    /// The routed supplier.
    pub supplier: Option<String>,
    /// Why it stays.
    pub reason: String,
}

/// One item handled up to the store: parsed (or rejected), or to be left where it is.
enum Handled {
    Parsed(Parse),
    Postponed(Postponed),
}

/// Takes a batch of items to committed outcomes, in the order given. Items the ledger already
/// decided are not parsed again; new ones are committed together in one transaction; items
/// whose earlier attempt died are parsed and committed one by one, each attempt counted first.
/// `forced` is a supplier binding of the source; `checks` holds what is known about each
/// item's sender, in the order of `items`; messages waiting in their inbox are taken up again
/// once `due_by` has reached their time. An `Err` means "try the batch again later".
pub fn handle_batch(
    items: &[Item],
    forced: Option<&str>,
    cx: &Context,
    checks: &[SenderCheck],
    due_by: &str,
) -> Result<Vec<Outcome>, store::Error> {
    let refs: Vec<&Item> = items.iter().collect();
    let priors = cx.store.begin(&refs, due_by)?;
    let registry = cx.registry();
    let forced = forced.and_then(|name| registry.by_name(name));
    let check = |i: usize| checks.get(i).and_then(SenderCheck::verdict);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; items.len()];
    let mut fresh = Vec::new();
    let mut retries = Vec::new();
    let mut to_parse = Vec::new();
    for (i, prior) in priors.into_iter().enumerate() {
        match prior {
            Prior::Decided(outcome) => outcomes[i] = Some(outcome),
            Prior::Fresh { item_id } => to_parse.push((i, item_id)),
            Prior::Retry { item_id } => retries.push((i, item_id)),
            Prior::Waiting {
                item_id,
                reason,
                until,
            } => {
                outcomes[i] = Some(Outcome::Deferred {
                    item_id,
                    reason,
                    until,
                })
            }
            Prior::Poison { item_id, attempts } => {
                let parse = rejection(&items[i], Reject::Poison { attempts });
                fresh.push((i, verdict(item_id, parse, &items[i], check(i))));
            }
            Prior::AlreadyImported { item_id, existing } => {
                let parse = rejection(&items[i], Reject::AlreadyImported { existing });
                fresh.push((i, verdict(item_id, parse, &items[i], check(i))));
            }
        }
    }
    let handled = parallel_map(&to_parse, |&(i, _)| {
        handle(&items[i], forced, &registry, &cx.limits, checks.get(i))
    });
    let mut postponed = Vec::new();
    for (&(i, item_id), handled) in to_parse.iter().zip(handled) {
        match handled {
            Handled::Parsed(parse) => {
                fresh.push((i, verdict(item_id, parse, &items[i], check(i))));
            }
            Handled::Postponed(p) => postponed.push((i, to_held(item_id, p, check(i)))),
        }
    }
    let (held_at, held): (Vec<usize>, Vec<Held>) = postponed.into_iter().unzip();
    for (i, outcome) in held_at.into_iter().zip(cx.store.defer(held)?) {
        outcomes[i] = Some(outcome);
    }
    fresh.sort_by_key(|(i, _)| *i);
    let (fresh_at, fresh): (Vec<usize>, Vec<Verdict>) = fresh.into_iter().unzip();
    for (i, outcome) in fresh_at.into_iter().zip(cx.store.commit(fresh)?) {
        outcomes[i] = Some(outcome);
    }
    for (i, item_id) in retries {
        cx.store.count_attempt(item_id)?;
        outcomes[i] = match handle(&items[i], forced, &registry, &cx.limits, checks.get(i)) {
            Handled::Parsed(parse) => {
                let v = verdict(item_id, parse, &items[i], check(i));
                cx.store.commit(vec![v])?.pop()
            }
            Handled::Postponed(p) => cx.store.defer(vec![to_held(item_id, p, check(i))])?.pop(),
        };
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
    // An imported item's bytes are kept for the admin page's download (size-bounded); a crash
    // before this costs only the download, never the document. Both in one transaction.
    let imported: Vec<(i64, &[u8])> = items
        .iter()
        .zip(&outcomes)
        .filter_map(|(item, outcome)| match outcome {
            Outcome::Imported { item_id, .. } => Some((*item_id, item.bytes.as_slice())),
            Outcome::Rejected { .. } | Outcome::Deferred { .. } => None,
        })
        .collect();
    cx.store.keep_originals(&originals, &imported)?;
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

fn verdict(item_id: i64, parse: Parse, item: &Item, sender: Option<&auth::Verdict>) -> Verdict {
    let who = match item.kind {
        ItemKind::Message => Sender::of_message(sender),
        ItemKind::File => Sender::of_file(&item.origin.source),
    };
    Verdict {
        item_id,
        envelope: parse.envelope,
        supplier: parse.supplier,
        result: parse.result,
        sender_auth: sender.cloned(),
        sender: who,
    }
}

fn to_held(item_id: i64, postponed: Postponed, sender: Option<&auth::Verdict>) -> Held {
    Held {
        item_id,
        envelope: postponed.envelope,
        supplier: postponed.supplier,
        sender_auth: sender.cloned(),
        reason: postponed.reason,
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

/// Parses one item without storing it and without a sender check (what `eingang parse`
/// prints). A panic anywhere inside becomes a rejection of this item; the watcher goes on.
pub fn parse_with(
    item: &Item,
    forced: Option<&TableFormat>,
    registry: &Registry,
    limits: &Limits,
) -> Parse {
    match guarded(item, forced, registry, limits, None) {
        Handled::Parsed(parse) => parse,
        // Without a verdict nothing is postponed; should it ever be, it is not parsed.
        Handled::Postponed(p) => Parse {
            envelope: p.envelope,
            supplier: p.supplier,
            result: Err(Reject::SenderNotAuthenticated { reason: p.reason }),
        },
    }
}

/// One item of a batch: parsed, with the decision about its sender after routing.
fn handle(
    item: &Item,
    forced: Option<&TableFormat>,
    registry: &Registry,
    limits: &Limits,
    check: Option<&SenderCheck>,
) -> Handled {
    let sender = match check {
        Some(SenderCheck::Verdict(v)) => Some(v.clone()),
        // Due again, yet not checked: should the intake and the ledger ever disagree, the
        // message is told apart as not checked, and a supplier that requires authentication
        // leaves it waiting.
        Some(SenderCheck::Waiting) => Some(not_checked()),
        Some(SenderCheck::NotApplicable) | None => None,
    };
    guarded(item, forced, registry, limits, sender.as_ref())
}

fn not_checked() -> auth::Verdict {
    auth::Verdict {
        status: auth::Status::TempError,
        from_domain: None,
        aligned_domain: None,
        policy: None,
        decided_by: auth::DecidedBy::Eingang,
        authserv_id: None,
        text: "not checked yet".to_owned(),
    }
}

fn guarded(
    item: &Item,
    forced: Option<&TableFormat>,
    registry: &Registry,
    limits: &Limits,
    sender: Option<&auth::Verdict>,
) -> Handled {
    fault::parsing(item.name());
    catch_unwind(AssertUnwindSafe(|| {
        documents_of(item, forced, registry, limits, sender)
    }))
    .unwrap_or_else(|_| {
        Handled::Parsed(Parse {
            envelope: Envelope::default(),
            supplier: None,
            result: Err(Reject::malformed(
                item.name(),
                "eingang failed on this file (an internal error; please report it with the file)",
            )),
        })
    })
}

fn documents_of(
    item: &Item,
    forced: Option<&TableFormat>,
    registry: &Registry,
    limits: &Limits,
    sender: Option<&auth::Verdict>,
) -> Handled {
    if item.size() > limits.max_item_bytes {
        return Handled::Parsed(Parse {
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
        });
    }
    let (envelope, attachments, skipped) = match item.kind {
        ItemKind::Message => match extract::message(&item.bytes, item.name()) {
            Ok(m) => (m.envelope, m.attachments, m.skipped),
            Err(reject) => {
                return Handled::Parsed(Parse {
                    envelope: Envelope::default(),
                    supplier: None,
                    result: Err(reject),
                });
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
    let mut read_by = None;
    // Promise 8: the sender, as the supplier's setting asks, before anything is read from
    // the attachments.
    if let Some(verdict) = sender {
        let requirement = route
            .supplier
            .map_or_else(Requirement::default, TableFormat::authenticate);
        let supplier = route.supplier_name().map(str::to_owned);
        match auth::decide(requirement, verdict) {
            Decision::Accept => {}
            Decision::AcceptWithWarning(warning) => {
                tracing::warn!(item = %item.name(), supplier = supplier.as_deref().unwrap_or("-"), "{warning}");
            }
            Decision::Reject(reason) => {
                return Handled::Parsed(Parse {
                    envelope,
                    supplier,
                    result: Err(Reject::SenderNotAuthenticated { reason }),
                });
            }
            Decision::RetryLater(reason) => {
                return Handled::Postponed(Postponed {
                    envelope,
                    supplier,
                    reason,
                });
            }
        }
    }
    let result = parse_attachments(
        &attachments,
        skipped,
        &route,
        registry,
        envelope.sender.as_deref(),
        limits,
        &mut read_by,
    );
    Handled::Parsed(Parse {
        // A ZIP member may have found a supplier that the item's own name did not.
        supplier: read_by.or_else(|| route.supplier_name().map(str::to_owned)),
        envelope,
        result,
    })
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
