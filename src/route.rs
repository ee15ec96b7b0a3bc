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
    /// Whether `supplier` is a source binding or `--supplier`.
    forced: bool,
    /// The supplier whose `senders` list the message's From address.
    by_sender: Option<&'r TableFormat>,
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
    let by_sender = match kind {
        ItemKind::Message => sender.and_then(|s| registry.by_sender(s)),
        ItemKind::File => None,
    };
    let supplier = forced.or_else(|| match kind {
        ItemKind::Message => by_sender,
        ItemKind::File => file_name.and_then(|n| registry.by_file_name(n)),
    });
    Route {
        supplier,
        forced: forced.is_some(),
        by_sender,
        kind,
    }
}

impl<'r> Route<'r> {
    /// The supplier's name, if any.
    pub fn supplier_name(&self) -> Option<&str> {
        self.supplier.map(|s| s.name.as_str())
    }

    /// The supplier whose table format should read this attachment, which may be a member of
    /// a ZIP archive: the binding; for a message its sender's supplier; for a file the glob
    /// that matches the attachment's own name, else the one that matched the file it came in.
    pub fn table_supplier(
        &self,
        registry: &'r Registry,
        attachment: &Attachment,
    ) -> Option<&'r TableFormat> {
        if self.forced || self.kind == ItemKind::Message {
            return self.supplier;
        }
        registry.by_file_name(&attachment.name).or(self.supplier)
    }

    /// The supplier written into standard XML documents (cXML, openTRANS, UBL): only the one
    /// whose `senders` list the message's From address. A binding or a file glob says which
    /// table format reads a file; it says nothing about who wrote an XML document.
    pub fn standard_supplier(&self) -> Option<&'r str> {
        self.by_sender.map(|s| s.name.as_str())
    }

    /// The rejection for a table attachment that has no supplier. Its hint names the file to
    /// write the sender (or a file-name glob) into: the file of the supplier the sender
    /// belongs to by its domain, else a new file that no supplier has yet, never the file of
    /// a supplier whose glob happens to match the attachment's name.
    pub fn unrouted(
        &self,
        registry: &Registry,
        sender: Option<&str>,
        attachment: &Attachment,
    ) -> Reject {
        match (self.kind, sender) {
            (ItemKind::Message, Some(sender)) => {
                let domain = sender.rsplit_once('@').map_or(sender, |(_, d)| d);
                let hint = match registry.by_sender_domain(domain) {
                    Some(format) => format!(
                        "{} ({} lists other addresses at {domain})",
                        format.path.display(),
                        format.name
                    ),
                    None => {
                        let stem = domain.split('.').next().unwrap_or(domain);
                        registry.new_file_hint(&[stem, domain])
                    }
                };
                Reject::UnknownSender {
                    sender: sender.to_owned(),
                    file: attachment.name.clone(),
                    hint,
                }
            }
            (ItemKind::Message, None) => Reject::UnknownSender {
                sender: "(no From address)".to_owned(),
                file: attachment.name.clone(),
                hint: registry.new_file_hint(&["supplier"]),
            },
            (ItemKind::File, _) => {
                // A ZIP member is named `archive.zip/member.csv`: the member's name counts.
                let base = attachment.name.rsplit('/').next().unwrap_or("");
                let stem = base
                    .split(['_', '-', '.', ' '])
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("supplier");
                Reject::UnknownFile {
                    file: attachment.name.clone(),
                    hint: registry.new_file_hint(&[stem]),
                }
            }
        }
    }
}
