//! What a source hands to the pipeline: the raw bytes of one message or file, where it lies,
//! and its key (the sha256 of the bytes) under which the ledger remembers it.

use std::fmt;

use sha2::{Digest, Sha256};

/// Whether the bytes are a whole e-mail message or a file on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// An RFC 5322 message (from IMAP, or a dropped `.eml`): routed by its sender.
    Message,
    /// A file (from FTP or a drop folder): its own single attachment, routed by its name.
    File,
}

impl ItemKind {
    /// `message` or `file`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Message => "message",
            ItemKind::File => "file",
        }
    }

    /// A dropped `.eml` is a message, anything else a file.
    pub fn of_file_name(name: &str) -> ItemKind {
        if name.to_ascii_lowercase().ends_with(".eml") {
            ItemKind::Message
        } else {
            ItemKind::File
        }
    }
}

/// The ledger key of an item: the sha256 of its raw bytes, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemKey(String);

impl ItemKey {
    /// Hashes the bytes.
    pub fn of(bytes: &[u8]) -> ItemKey {
        ItemKey::hex(Sha256::digest(bytes).as_slice())
    }

    /// Hashes a reader in chunks, for items too large to hold in memory.
    pub fn of_reader(mut reader: impl std::io::Read) -> std::io::Result<ItemKey> {
        let mut hasher = KeyHasher::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(hasher.finish())
    }

    fn hex(digest: &[u8]) -> ItemKey {
        let mut hex = String::with_capacity(64);
        for byte in digest.iter() {
            hex.push(char::from_digit(u32::from(byte >> 4), 16).expect("a nibble is a hex digit"));
            hex.push(char::from_digit(u32::from(byte & 0xf), 16).expect("a nibble is a hex digit"));
        }
        ItemKey(hex)
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Computes an item's key from its bytes as they arrive, for items read in pieces (a download
/// too large to hold in memory).
#[derive(Debug, Default, Clone)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    /// Adds the next bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The key of all bytes added.
    pub fn finish(self) -> ItemKey {
        ItemKey::hex(self.0.finalize().as_slice())
    }
}

/// Where an item was found.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The configured source name (`import` for the one-shot command, `parse` for parse).
    pub source: String,
    /// Where it lies in that source: a path, or an IMAP UID.
    pub location: String,
    /// The file name, for files and dropped `.eml` messages.
    pub file_name: Option<String>,
}

/// One message or file, with its bytes.
#[derive(Debug, Clone)]
pub struct Item {
    /// The raw bytes, exactly as received.
    pub bytes: Vec<u8>,
    /// Message or file.
    pub kind: ItemKind,
    /// Where it was found.
    pub origin: Origin,
    key: ItemKey,
    size: u64,
    sender: Option<String>,
}

impl Item {
    /// Wraps the bytes and computes the key.
    pub fn new(bytes: Vec<u8>, kind: ItemKind, origin: Origin) -> Item {
        let key = ItemKey::of(&bytes);
        let size = bytes.len() as u64;
        Item {
            bytes,
            kind,
            origin,
            key,
            size,
            sender: None,
        }
    }

    /// An item over the size limit: its key and size only, the bytes left on disk.
    pub fn oversized(key: ItemKey, size: u64, kind: ItemKind, origin: Origin) -> Item {
        Item {
            bytes: Vec::new(),
            kind,
            origin,
            key,
            size,
            sender: None,
        }
    }

    /// The same item with the sender that delivered it, where its bytes do not tell (a file
    /// has no From): the cXML partner of an HTTP request. Recorded as the item's sender.
    pub fn with_sender(mut self, sender: impl Into<String>) -> Item {
        self.sender = Some(sender.into());
        self
    }

    /// The sender given by `with_sender`.
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    /// The size in bytes (also for an oversized item, whose bytes were not read).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ledger key.
    pub fn key(&self) -> &ItemKey {
        &self.key
    }

    /// A short name for messages and logs: the file name, else the location.
    pub fn name(&self) -> &str {
        self.origin
            .file_name
            .as_deref()
            .unwrap_or(&self.origin.location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_sha256sum() {
        // `printf abc | sha256sum`
        assert_eq!(
            ItemKey::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn eml_files_are_messages() {
        assert_eq!(ItemKind::of_file_name("Lieferung.EML"), ItemKind::Message);
        assert_eq!(ItemKind::of_file_name("ls.csv"), ItemKind::File);
    }
}
