//! eingang: supplier documents from mailboxes and drop folders into clean data.
pub mod error;
pub mod format;
pub mod model;
