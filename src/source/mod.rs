//! Where items come from and where they are put back. Each kind of source is a protocol
//! adapter behind `Inbox`: it lists its inbox (the queue: everything still in it is still to
//! do), fetches items, moves them to archive or error as told, finds what a crash left, puts a
//! failed item back, and checks its server. It neither decides an outcome nor touches the
//! store: the one loop in `pass` does that, through the intake, in the order the promises rest
//! on. Only sources move, rename or delete anything.

pub mod dir;
mod folder;
pub mod ftp;
pub mod imap;
pub mod pass;
pub mod reconcile;
mod settle;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{SourceConfig, SourceKind};
use crate::disposition::Disposition;
use crate::intake::Intake;
use crate::item::Item;
use crate::schedule::Schedule;
use crate::stop::Stop;
use crate::store::Place;
pub use crate::store::Stray;
pub use pass::{Mode, Pass, PassReport};
pub use reconcile::Seen;

/// One entry of an inbox listing: a file, or a message by its UID.
pub trait Entry: Clone + Send + Sync + 'static {
    /// What names it in its inbox during one pass (a path, a file name, a UID).
    fn key(&self) -> String;
    /// Its size in bytes, as listed.
    fn size(&self) -> u64;
    /// A short name for logs: the file name, or the UID.
    fn name(&self) -> String;
}

/// What a listing of the inbox found.
#[derive(Debug)]
pub struct Listing<E> {
    /// Entries ready to take, oldest first.
    pub ready: Vec<E>,
    /// Entries still being written (not settled yet).
    pub waiting: usize,
    /// How long until the next waiting entry may have settled.
    pub settle_in: Option<Duration>,
    /// Everything else in the inbox that eingang leaves alone (a link, a FIFO, a folder), for
    /// a source whose listing can tell; `None` for one that cannot (a mailbox).
    pub strays: Option<Vec<Stray>>,
}

impl<E> Listing<E> {
    /// A listing where everything is ready at once (a mailbox).
    pub fn ready(ready: Vec<E>) -> Listing<E> {
        Listing {
            ready,
            waiting: 0,
            settle_in: None,
            strays: None,
        }
    }
}

/// One fetched entry: its item, or `None` when it changed or vanished since it was listed
/// (it waits for a later round).
#[derive(Debug)]
pub struct Fetched<E> {
    /// The entry as listed.
    pub entry: E,
    /// Its bytes as an item.
    pub item: Option<Item>,
}

/// One move the loop asks for: a decided entry to its archive or error folder.
#[derive(Debug, Clone)]
pub struct Move<E> {
    /// The entry in the inbox.
    pub entry: E,
    /// Its ledger row.
    pub item_id: i64,
    /// Where it goes, decided from its committed outcome.
    pub disposition: Disposition,
}

/// What became of a set of moves.
#[derive(Debug, Default)]
pub struct Disposed {
    /// Moved (confirmed): where each lies now, by ledger row.
    pub placed: Vec<(i64, Place)>,
    /// Not moved: they stay in the inbox with their outcome, for a later pass.
    pub failed: Vec<(i64, String)>,
    /// The connection broke: the moves not in `placed` or `failed` are unknown, and the pass
    /// ends once the placed ones are recorded.
    pub broken: Option<Error>,
}

/// Batch bounds of a kind of source: one fetch, one store transaction and one move round per
/// batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Entries per batch.
    pub items: usize,
    /// Bytes to download per batch (entries over the item limit are not downloaded).
    pub bytes: u64,
}

/// An open inbox of one source, for one pass: the protocol adapter the loop in `pass` drives.
/// Every method is one protocol step; none decides an outcome or writes the store.
pub trait Inbox: Send {
    /// A listed entry.
    type Entry: Entry;

    /// The bounds of one batch.
    fn batch_limits(&self) -> BatchLimits;

    /// Lists the inbox: the entries ready to take, leaving out those in `tried` (already taken
    /// in this pass).
    fn list(
        &mut self,
        tried: &std::collections::HashSet<String>,
    ) -> impl Future<Output = Result<Listing<Self::Entry>, Error>> + Send;

    /// Reads a batch. An entry over `max_item_bytes` stands in by its size and key alone.
    fn fetch(
        &mut self,
        batch: Vec<Self::Entry>,
        max_item_bytes: u64,
    ) -> impl Future<Output = Result<Vec<Fetched<Self::Entry>>, Error>> + Send;

    /// Moves decided entries to their folders, never over an existing item; a failed move costs
    /// that entry only.
    fn dispose(&mut self, moves: Vec<Move<Self::Entry>>) -> impl Future<Output = Disposed> + Send;

    /// Looks for items a crash left unfinished: in the inbox still, or in the folder their
    /// outcome sends them to (`look_in`, when decided).
    fn locate(
        &mut self,
        wanted: Vec<reconcile::Wanted>,
    ) -> impl Future<Output = Result<Vec<Seen<Self::Entry>>, Error>> + Send;

    /// Where each item in the archive folder lies now (as the ledger records places), for
    /// finding the ones the ledger does not know.
    fn archived(&mut self) -> impl Future<Output = Result<Vec<Place>, Error>> + Send;

    /// A standing note about the server for `status` (`None` clears it), learnt when the inbox
    /// was opened.
    fn note(&self) -> Option<&'static str> {
        None
    }
}

/// The two folders a handled item lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shelf {
    /// The archive (imported items).
    Archive,
    /// The error folder (rejected items, each with its note).
    Error,
}

/// What the ledger records for an item that left its inbox before it was decided: someone
/// else took it.
pub(crate) const VANISHED: &str = "vanished from the inbox before it was handled";

/// One line of `eingang check`: what was checked, and the result.
pub type CheckLine = (String, Result<(), String>);

/// One configured source, whatever its kind. The daemon and the commands talk to this; each
/// kind keeps its protocol in its own module.
#[derive(Debug)]
pub struct Source {
    /// The checked config of this source.
    pub config: SourceConfig,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Dir(Arc<dir::DirSource>),
    Ftp(Box<ftp::FtpSource>),
    Imap(Box<imap::ImapSource>),
}

impl Source {
    /// Builds the source from its config.
    pub fn new(config: SourceConfig) -> Source {
        let kind = match &config.kind {
            SourceKind::Dir(dir) => Kind::Dir(Arc::new(dir::DirSource::new(
                config.name.clone(),
                dir.clone(),
            ))),
            SourceKind::Ftp(ftp) => Kind::Ftp(Box::new(ftp::FtpSource::new(
                config.name.clone(),
                ftp.clone(),
            ))),
            SourceKind::Imap(remote) => Kind::Imap(Box::new(imap::ImapSource::new(
                config.name.clone(),
                remote.clone(),
                matches!(config.schedule, Schedule::Idle),
            ))),
        };
        Source { config, kind }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One pass: every item in the inbox is handled and moved (`Mode::Sync` also waits for
    /// items still being written). Stops between batches when `stop` is set.
    pub async fn pass(&self, intake: &Intake, stop: &Stop, mode: Mode) -> Pass {
        let run = pass::Run {
            source: self.name(),
            binding: self.config.supplier.as_deref(),
            intake,
            stop,
            mode,
        };
        match &self.kind {
            Kind::Dir(d) => match d.open() {
                Ok(mut inbox) => run.over(&mut inbox).await,
                Err(e) => Pass::failed(e),
            },
            Kind::Ftp(f) => match f.open().await {
                Ok(mut inbox) => {
                    let pass = run.over(&mut inbox).await;
                    inbox.close().await;
                    pass
                }
                Err(e) => Pass::failed(e.into()),
            },
            Kind::Imap(i) => match i.open().await {
                Ok(mut inbox) => {
                    let pass = run.over(&mut inbox).await;
                    i.close(inbox, pass.result.is_ok()).await;
                    pass
                }
                Err(e) => Pass::failed(e.into()),
            },
        }
    }

    /// Waits (at most `limit`) for news in the inbox: file-system events for a drop folder,
    /// IDLE (or a poll interval) for a mailbox. Returns early on news; the caller then runs a
    /// pass.
    pub async fn wait_for_news(&self, limit: Duration) {
        match &self.kind {
            Kind::Dir(d) => d.wait_for_news(limit).await,
            // A server tells nothing: the whole limit passes before the next listing.
            Kind::Ftp(_) => tokio::time::sleep(limit).await,
            Kind::Imap(i) => i.wait_for_news(limit).await,
        }
    }

    /// The checks of `eingang check` for this source, creating missing folders if asked.
    pub async fn check(&self, create_folders: bool) -> Vec<CheckLine> {
        match &self.kind {
            Kind::Dir(d) => {
                let mut lines = Vec::new();
                if create_folders && let Err(e) = d.create_folders() {
                    lines.push(("create folders".to_owned(), Err(e.to_string())));
                }
                lines.extend(d.check_folders());
                lines
            }
            Kind::Ftp(f) => f.check(create_folders).await,
            Kind::Imap(i) => i.check(create_folders).await,
        }
    }

    /// Creates the inbox, archive and error folders where that is a local matter (the
    /// embedded default creates its drop folders on start).
    pub fn create_local_folders(&self) -> Result<(), Error> {
        match &self.kind {
            Kind::Dir(d) => d.create_folders(),
            Kind::Ftp(_) | Kind::Imap(_) => Ok(()),
        }
    }

    /// Items waiting in the inbox, where counting them is cheap and local.
    pub fn waiting_in_inbox(&self) -> Option<usize> {
        match &self.kind {
            Kind::Dir(d) => Some(d.pending_count()),
            Kind::Ftp(_) | Kind::Imap(_) => None,
        }
    }

    /// Puts an item that lies at `place` on a shelf (the archive or the error folder) back
    /// into the inbox, for another try; returns where it lies now.
    pub async fn put_back(&self, place: &Place, shelf: Shelf) -> Result<String, Error> {
        match &self.kind {
            Kind::Dir(d) => d.put_back(&place.at, shelf),
            Kind::Ftp(f) => f.put_back(&place.at, shelf).await,
            Kind::Imap(i) => i.put_back(place, shelf).await,
        }
    }

    /// Looks once (at the daemon's start) for items in the archive that the ledger does not
    /// know: a store restored from a copy older than the folders. Each is told once.
    pub async fn audit(&self, intake: &Intake) -> Result<(), Error> {
        let listed = match &self.kind {
            Kind::Dir(d) => d.open()?.archived().await?,
            Kind::Ftp(f) => {
                let mut inbox = f.open().await?;
                let listed = inbox.archived().await;
                inbox.close().await;
                listed?
            }
            Kind::Imap(i) => {
                let mut inbox = i.open().await?;
                let listed = inbox.archived().await;
                i.close(inbox, listed.is_ok()).await;
                listed?
            }
        };
        let known = intake.places(self.name()).await?;
        let unknown = reconcile::unrecorded(listed, &known);
        let new = intake.unrecorded(self.name(), unknown).await?;
        if !new.is_empty() {
            tracing::warn!(source = %self.name(), items = new.len(), "items lie in the archive that the store does not know (was it restored from an older copy?); `eingang recover` puts them back to be imported again");
        }
        Ok(())
    }
}

/// Why a failed item could not be put back.
#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    /// The id names no failed item in its error folder.
    #[error("not a failed item (see `eingang status` and the .error.txt notes)")]
    NotFailed,
    /// Its source is no longer configured.
    #[error("its source {0:?} is not in the config")]
    NoSource(String),
    /// It came over HTTP from a cXML partner: there is no inbox to put it back into.
    #[error(
        "it came over HTTP from the cXML partner {0:?}, who was told in the answer and sends \
         the order again; there is no inbox to put it back into: mark it handled by hand"
    )]
    OverHttp(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Its source could not put it back.
    #[error(transparent)]
    Source(#[from] Error),
}

/// Puts a failed item back into its source's inbox for another try (after a format fix), and
/// clears its failure; returns where it lies now.
pub async fn reprocess(
    sources: &[Arc<Source>],
    intake: &Intake,
    id: i64,
) -> Result<String, ReprocessError> {
    let item = intake
        .failed_item(id)
        .await?
        .ok_or(ReprocessError::NotFailed)?;
    if let Some(partner) = item
        .source
        .strip_prefix(crate::cxml_http::settings::SOURCE_PREFIX)
    {
        return Err(ReprocessError::OverHttp(partner.to_owned()));
    }
    let source = sources
        .iter()
        .find(|s| s.name() == item.source)
        .ok_or_else(|| ReprocessError::NoSource(item.source.clone()))?;
    let place = Place {
        at: item.archived.clone().unwrap_or(item.location.clone()),
        reference: item.archived_ref.clone(),
    };
    let back = source.put_back(&place, Shelf::Error).await?;
    intake.put_back(id).await?;
    Ok(back)
}

/// Puts the items of a source's archive that the ledger does not know (found by `audit`)
/// back into its inbox, so that they are imported again; returns where each lies now, or why
/// it could not be moved.
pub async fn recover(
    sources: &[Arc<Source>],
    intake: &Intake,
    source: &str,
) -> Result<Vec<(String, Result<String, String>)>, ReprocessError> {
    let found = sources
        .iter()
        .find(|s| s.name() == source)
        .ok_or_else(|| ReprocessError::NoSource(source.to_owned()))?;
    let mut results = Vec::new();
    for place in intake.unrecorded_places(source).await? {
        let result = found.put_back(&place, Shelf::Archive).await;
        if result.is_ok() {
            intake.recovered(source, &place).await?;
        }
        results.push((place.at.clone(), result.map_err(|e| e.to_string())));
    }
    Ok(results)
}

/// A source's failure that is not about one item: the pass stops, items stay, and it is
/// retried later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A folder could not be read or an item not moved.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The FTP server, the network or TLS failed.
    #[error(transparent)]
    Ftp(#[from] ftp::Error),
    /// The IMAP server could not be reached, refused, or did not confirm a move.
    #[error(transparent)]
    Imap(#[from] imap::Error),
    /// Items could not be moved; they stay in the inbox with their outcome.
    #[error("not moved: {0}")]
    NotMoved(String),
    /// A blocking task of the source ended abnormally.
    #[error("the pass stopped: {0}")]
    Stopped(String),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
