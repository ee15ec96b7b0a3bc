//! Where items come from and where they are put back. Each source lists its inbox (the queue:
//! everything still in it is still to do), fetches items, and disposes of them after their
//! outcome is committed. Only sources move, rename or delete anything.

pub mod dir;
pub mod ftp;
pub mod imap;
mod settle;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::config::{SourceConfig, SourceKind};
use crate::pipeline::Context;
use crate::schedule::Schedule;
use crate::store::FailedItem;

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

/// What the ledger records for an item that left its inbox before it was decided: someone
/// else took it.
pub(crate) const VANISHED: &str = "vanished from the inbox before it was handled";

/// Where an item that left its inbox without its move being recorded (a crash between the
/// move and the record) must lie now: the archive or the error folder, by its committed
/// outcome. `None` for an item never decided; that one is logged as vanished.
pub(crate) fn moved_to<'a, T: ?Sized>(
    source: &str,
    item: &crate::store::Undisposed,
    archive: &'a T,
    error: &'a T,
) -> Option<&'a T> {
    match item.imported {
        Some(true) => Some(archive),
        Some(false) => Some(error),
        None => {
            tracing::warn!(source, item = %item.location, "{VANISHED}");
            None
        }
    }
}

/// One line of `eingang check`: what was checked, and the result.
pub type CheckLine = (String, Result<(), String>);

impl Source {
    /// Builds the source from its config.
    pub fn new(config: SourceConfig) -> Source {
        let kind = match &config.kind {
            SourceKind::Dir(dir) => Kind::Dir(Arc::new(dir::DirSource::new(
                config.name.clone(),
                dir.clone(),
                config.supplier.clone(),
            ))),
            SourceKind::Ftp(ftp) => Kind::Ftp(Box::new(ftp::FtpSource::new(
                config.name.clone(),
                ftp.clone(),
                config.supplier.clone(),
            ))),
            SourceKind::Imap(remote) => Kind::Imap(Box::new(imap::ImapSource::new(
                config.name.clone(),
                remote.clone(),
                config.supplier.clone(),
                matches!(config.schedule, Schedule::Idle),
            ))),
        };
        Source { config, kind }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One pass: every item in the inbox is handled and moved. With `wait_for_writers`, items
    /// still being written are waited for (`eingang sync`); without, they wait for the next
    /// pass (the daemon). Stops between batches when `stop` is set.
    pub async fn pass(
        self: &Arc<Self>,
        cx: &Arc<Context>,
        stop: &Arc<AtomicBool>,
        wait_for_writers: bool,
    ) -> Result<PassReport, Error> {
        match &self.kind {
            Kind::Dir(d) => {
                let (d, cx, stop) = (d.clone(), cx.clone(), stop.clone());
                tokio::task::spawn_blocking(move || {
                    if wait_for_writers {
                        d.pass_until_settled(&cx, &stop)
                    } else {
                        d.pass(&cx, &stop)
                    }
                })
                .await
                .map_err(|e| Error::Stopped(e.to_string()))?
            }
            Kind::Ftp(f) => f.pass(cx, stop, wait_for_writers).await,
            Kind::Imap(i) => i.pass(cx, stop).await,
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
            Kind::Ftp(_) => Ok(()),
            Kind::Imap(_) => Ok(()),
        }
    }

    /// Items waiting in the inbox, where counting them is cheap and local.
    pub fn waiting_in_inbox(&self) -> Option<usize> {
        match &self.kind {
            Kind::Dir(d) => Some(d.pending_count()),
            Kind::Ftp(_) => None,
            Kind::Imap(_) => None,
        }
    }

    /// Puts a failed item back into the inbox; returns where it lies now.
    pub async fn put_back(&self, failed: &FailedItem) -> Result<String, Error> {
        match &self.kind {
            Kind::Dir(d) => {
                let place = failed.archived.as_deref().unwrap_or(&failed.location);
                d.put_back(std::path::Path::new(place))
                    .map(|p| p.display().to_string())
            }
            Kind::Ftp(f) => f.put_back(failed).await,
            Kind::Imap(i) => i.put_back(failed).await,
        }
    }
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
    /// The pass's task ended abnormally.
    #[error("the pass stopped: {0}")]
    Stopped(String),
    /// The IMAP server could not be reached, refused, or did not confirm a move.
    #[error(transparent)]
    Imap(#[from] imap::Error),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
