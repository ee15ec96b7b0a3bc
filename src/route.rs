//! Step 1 of the flow: which supplier an item belongs to.
//!
//! Standard XML (cXML, openTRANS, UBL) is recognized by content and needs no supplier. A table
//! file needs one: for a message, the sender address or its domain; for a file, the file-name
//! glob; a source binding or `parse --supplier` overrides both. This module only chooses; it
//! never parses.

use crate::error::Reject;
use crate::format::{Attachment, Registry, TableFormat};
use crate::item::ItemKind;

/// How the supplier of an item was decided.
#[derive(Debug, Clone, Copy)]
pub struct Route<'r> {
    /// The supplier format, when one was found or forced.
    pub supplier: Option<&'r TableFormat>,
    kind: ItemKind,
}

/// Chooses the supplier for an item. `forced` (a source binding or `--supplier`) wins; then a
/// message goes by its sender, a file by its name.
pub fn resolve<'r>(
    registry: &'r Registry,
    kind: ItemKind,
    sender: Option<&str>,
    file_name: Option<&str>,
    forced: Option<&'r TableFormat>,
) -> Route<'r> {
    let supplier = forced.or_else(|| match kind {
        ItemKind::Message => sender.and_then(|s| registry.by_sender(s)),
        ItemKind::File => file_name.and_then(|n| registry.by_file_name(n)),
    });
    Route { supplier, kind }
}

impl Route<'_> {
    /// The supplier's name, if any.
    pub fn supplier_name(&self) -> Option<&str> {
        self.supplier.map(|s| s.name.as_str())
    }

    /// The rejection for a table attachment that has no supplier: it says which file in
    /// `formats/` to add the sender (or the file-name glob) to.
    pub fn unrouted(
        &self,
        registry: &Registry,
        sender: Option<&str>,
        attachment: &Attachment,
    ) -> Reject {
        let by_name = registry.by_file_name(&attachment.name);
        match (self.kind, sender) {
            (ItemKind::Message, Some(sender)) => {
                let domain = sender.rsplit('@').next().unwrap_or(sender);
                let stem = domain.split('.').next().unwrap_or(domain);
                Reject::UnknownSender {
                    sender: sender.to_owned(),
                    file: attachment.name.clone(),
                    hint: registry.hint_for(by_name, stem),
                }
            }
            (ItemKind::Message, None) => Reject::UnknownSender {
                sender: "(no From address)".to_owned(),
                file: attachment.name.clone(),
                hint: registry.hint_for(by_name, "supplier"),
            },
            (ItemKind::File, _) => {
                let stem = attachment
                    .name
                    .split(['_', '-', '.', ' '])
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("supplier");
                Reject::UnknownFile {
                    file: attachment.name.clone(),
                    hint: registry.hint_for(None, stem),
                }
            }
        }
    }
}
