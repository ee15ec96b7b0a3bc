//! Errors sorted by what happens next: `Reject` (a verdict about the item: error folder, one
//! notification), transient errors (the item stays, retry later) and fatal ones (eingang cannot
//! run). Each layer keeps its own transient/fatal enum next to its code; the `Reject` is shared
//! because every step can reach a verdict.

/// A verdict about one item. The item goes to the error folder with this reason, and one
/// notification is written. Every message names the file (or sender) and, where it applies,
/// the line and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reject", rename_all = "snake_case")]
pub enum Reject {
    /// A required value is absent.
    #[error("{file}: {}{field} is missing", line_prefix(.line))]
    Missing {
        /// The attachment.
        file: String,
        /// The document line, if the field belongs to one.
        line: Option<String>,
        /// The missing field.
        field: String,
    },
    /// A value is present but not what the field needs.
    #[error("{file}: {}{field} {value:?} {why}", line_prefix(.line))]
    BadValue {
        /// The attachment.
        file: String,
        /// The document line (or table row) the value sits in.
        line: Option<String>,
        /// The field.
        field: String,
        /// The value as found.
        value: String,
        /// What is wrong with it, e.g. "is not a decimal number".
        why: String,
    },
    /// The file is not readable as the format it claims (broken XML, bad zip, ...).
    #[error("{file}: {why}")]
    Malformed {
        /// The attachment.
        file: String,
        /// What is broken.
        why: String,
    },
    /// The file is readable but no format module handles it.
    #[error("{file}: {why}")]
    Unsupported {
        /// The attachment.
        file: String,
        /// Why, and what to do.
        why: String,
    },
    /// A limit was exceeded (size, depth, rows).
    #[error("{file}: too large: {why}")]
    TooLarge {
        /// The attachment or item.
        file: String,
        /// Which limit, and its value.
        why: String,
    },
    /// A table attachment arrived from a sender no supplier format lists.
    #[error("unknown sender {sender} for {file}: add {sender:?} to `senders` in {hint}")]
    UnknownSender {
        /// The sender address.
        sender: String,
        /// The table attachment that needs a supplier.
        file: String,
        /// The format file to add the sender to.
        hint: String,
    },
    /// A table file whose name no supplier format matches.
    #[error(
        "no supplier format matches the file name {file}: add a glob for it to `files` in {hint}"
    )]
    UnknownFile {
        /// The file name.
        file: String,
        /// The format file to add it to.
        hint: String,
    },
    /// A message without any attachment eingang can read.
    #[error("no delivery note or order found: {why}")]
    NoDocuments {
        /// What was found instead.
        why: String,
    },
    /// A document whose business key is already stored.
    #[error("duplicate {kind} {number}{}: already stored as document {existing}", supplier_suffix(.supplier))]
    Duplicate {
        /// `delivery note` or `order`.
        kind: String,
        /// The number (or payloadID).
        number: String,
        /// The supplier, when known.
        supplier: Option<String>,
        /// The stored document's id.
        existing: i64,
    },
    /// A document whose business key is already stored, where the two did not come from the
    /// same known sender (another sender, or one of them not authenticated): which one is
    /// genuine is for a person to say. `detail` says what was stored first, from whom, whether
    /// it was authenticated, and how to replace it.
    #[error("duplicate {kind} {number}{} from another sender: {detail}", supplier_suffix(.supplier))]
    Conflict {
        /// `delivery note` or `order`.
        kind: String,
        /// The number (or payloadID).
        number: String,
        /// The supplier, when known.
        supplier: Option<String>,
        /// The stored document's id.
        existing: i64,
        /// The account of both documents and the way to replace the stored one.
        detail: String,
    },
    /// The message's sender is not authenticated as its supplier's `authenticate` setting
    /// asks; `reason` starts with `sender not authenticated` (CONTRACT.md).
    #[error("{reason}")]
    SenderNotAuthenticated {
        /// The reason, from `auth::decide`.
        reason: String,
    },
    /// A cXML update or delete from another sender than the order it changes.
    #[error(
        "{operation} of order {number}{} not accepted: an update or delete is accepted only from \
         the sender of the order it changes; {detail}",
        supplier_suffix(.supplier)
    )]
    NotOriginalSender {
        /// `update` or `delete`.
        operation: String,
        /// The orderID.
        number: String,
        /// The supplier, when known.
        supplier: Option<String>,
        /// The stored order's id.
        existing: i64,
        /// Who sent the order, and who sent this.
        detail: String,
    },
    /// Identical bytes were already imported.
    #[error("already imported: the same file arrived before as item {existing}")]
    AlreadyImported {
        /// The earlier item's id.
        existing: i64,
    },
    /// The message is eingang's own notice that came back through a watched mailbox (its
    /// `X-Eingang-Notice` header and a Message-ID of this store say so); no notice about it,
    /// so that no loop forms.
    #[error("eingang's own notice {message_id}, come back through a watched mailbox")]
    OwnNotice {
        /// Its Message-ID.
        message_id: String,
    },
    /// Parsing this item crashed eingang repeatedly.
    #[error(
        "parsing this item stopped eingang {attempts} times; it is set aside so that others go on"
    )]
    Poison {
        /// How many attempts were started.
        attempts: u32,
    },
}

/// `line 3: ` for document lines; table positions already say `row 7`.
fn line_prefix(line: &Option<String>) -> String {
    match line {
        Some(l) if l.starts_with("row ") => format!("{l}: "),
        Some(l) => format!("line {l}: "),
        None => String::new(),
    }
}

fn supplier_suffix(supplier: &Option<String>) -> String {
    match supplier {
        Some(s) => format!(" from {s}"),
        None => String::new(),
    }
}

impl Reject {
    /// A short label for subjects and status output ("duplicate", "unknown sender", ...).
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Missing { .. } => "missing field",
            Reject::BadValue { .. } => "bad value",
            Reject::Malformed { .. } => "unreadable file",
            Reject::Unsupported { .. } => "unsupported format",
            Reject::TooLarge { .. } => "too large",
            Reject::UnknownSender { .. } => "unknown sender",
            Reject::UnknownFile { .. } => "unknown file",
            Reject::NoDocuments { .. } => "no document",
            Reject::Duplicate { .. } => "duplicate",
            Reject::Conflict { .. } => "conflict",
            Reject::SenderNotAuthenticated { .. } => "sender not authenticated",
            Reject::NotOriginalSender { .. } => "not the original sender",
            Reject::AlreadyImported { .. } => "already imported",
            Reject::Poison { .. } => "crashed the parser",
            Reject::OwnNotice { .. } => "own notice",
        }
    }

    /// Shorthand for `Reject::Malformed`.
    pub fn malformed(file: &str, why: impl Into<String>) -> Reject {
        Reject::Malformed {
            file: file.to_owned(),
            why: why.into(),
        }
    }

    /// Shorthand for `Reject::TooLarge`.
    pub fn too_large(file: &str, why: impl Into<String>) -> Reject {
        Reject::TooLarge {
            file: file.to_owned(),
            why: why.into(),
        }
    }

    /// Shorthand for `Reject::BadValue`.
    pub fn bad_value(
        file: &str,
        line: Option<&str>,
        field: &str,
        value: &str,
        why: impl Into<String>,
    ) -> Reject {
        Reject::BadValue {
            file: file.to_owned(),
            line: line.map(str::to_owned),
            field: field.to_owned(),
            value: value.to_owned(),
            why: why.into(),
        }
    }
}
