//! Supplier table formats (placeholder being written).
use std::path::{Path, PathBuf};

use super::{Attachment, Limits};
use crate::error::Reject;
use crate::model::Document;

/// One supplier's table layout, loaded from `formats/<name>.toml`.
#[derive(Debug, Clone)]
pub struct TableFormat {
    /// The supplier name (the file stem unless `name` is set).
    pub name: String,
    /// The TOML file it came from.
    pub path: PathBuf,
}

impl TableFormat {
    /// Loads and checks one format file.
    pub fn load(_path: &Path) -> Result<TableFormat, String> {
        todo!("table helper")
    }
    /// Whether this supplier lists the sender address or its `@domain`.
    pub fn matches_sender(&self, _sender: &str) -> bool {
        todo!("table helper")
    }
    /// Whether one of this supplier's file globs matches the name.
    pub fn matches_file(&self, _name: &str) -> bool {
        todo!("table helper")
    }
    /// Whether this format should read the attachment (glob match or its table type).
    pub fn accepts(&self, _attachment: &Attachment) -> bool {
        todo!("table helper")
    }
}

/// Parses a table attachment with this supplier's layout.
pub fn parse(
    _attachment: &Attachment,
    _format: &TableFormat,
    _limits: &Limits,
) -> Result<Vec<Document>, Reject> {
    todo!("table helper")
}
