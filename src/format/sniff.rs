//! Which standard an attachment is: decided from the XML content alone.
use super::{Attachment, Limits, Parsed};
use crate::error::Reject;

/// Parses the attachment as a built-in standard when it is XML. `None`: not XML at all.
/// `Some(Ok(Parsed::Ignored))`: well-formed XML of a kind eingang does not read.
pub fn parse_standard(
    _attachment: &Attachment,
    _limits: &Limits,
) -> Option<Result<Parsed, Reject>> {
    todo!("xml helper")
}
