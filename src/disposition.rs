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
    /// Imported items are archived; rejected ones go to error with their reason; a deferred
    /// one (not decided: its sender could not be checked yet) stays in its inbox: `None`.
    pub fn of(outcome: &Outcome) -> Option<Disposition> {
        match outcome {
            Outcome::Imported { .. } => Some(Disposition::Archive),
            Outcome::Rejected { item_id, reason } => Some(Disposition::Error {
                item_id: *item_id,
                reason: reason.clone(),
            }),
            Outcome::Deferred { .. } => None,
        }
    }
}
