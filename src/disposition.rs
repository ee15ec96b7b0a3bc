//! Step 6 of the flow: the one place that decides where an item goes after its outcome.

use crate::store::Outcome;

/// Where a handled item is put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Imported: to the archive folder.
    Archive,
    /// Rejected: to the error folder, with the reason beside it.
    Error {
        /// The ledger row (for `eingang reprocess`).
        item_id: i64,
        /// The reason, as shown to people.
        reason: String,
    },
}

impl Disposition {
    /// Imported items are archived; rejected ones go to error with their reason.
    pub fn of(outcome: &Outcome) -> Disposition {
        match outcome {
            Outcome::Imported { .. } => Disposition::Archive,
            Outcome::Rejected { item_id, reason } => Disposition::Error {
                item_id: *item_id,
                reason: reason.clone(),
            },
        }
    }
}
