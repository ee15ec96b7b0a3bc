//! Where items come from and where they are put back. Each source lists its inbox (the queue:
//! everything still in it is still to do), fetches items, and disposes of them after their
//! outcome is committed. Only sources move, rename or delete anything.

pub mod dir;

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
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
