//! eingang takes supplier documents out of mailboxes and drop folders and turns them into
//! clean data: delivery notes and orders in SQLite, every item moved to its archive or error
//! folder, every failure told to a person.
//!
//! The flow of one item, and where each step lives:
//!
//! ```text
//! source ─▶ route ─▶ extract ─▶ parse ─▶ validate ─▶ store ─▶ dispose ─▶ notify
//! ```
//!
//! - `item`: the raw bytes of a message or file, where it lies, its key (sha256).
//! - `pipeline`: one batch of items from bytes to committed outcomes; reads like the flow.
//! - `route` (1): which supplier: sender, file name, source binding.
//! - `auth` (1): whether a message's sender is authentic: the trusted Authentication-Results
//!   header or eingang's own DKIM/DMARC check (DNS through `auth::Resolver`), the verdict
//!   stored with the item, and what the supplier's `authenticate` setting makes of it.
//! - `extract` (2): MIME → attachments, nested `message/rfc822` too, raw bytes kept.
//! - `format` (3): bytes → documents: `sniff`, `xml`, `cxml`, `opentrans`, `ubl` for the
//!   built-in standards; `table`, `csv_table`, `xlsx_table` for supplier formats from TOML.
//! - `model` (4): the document types, canonical decimals, validation.
//! - `store` (5): the SQLite ledger: items, documents, lines, outbox, migrations.
//! - `disposition` (6): outcome → archive or error, decided in one place.
//! - `notify` (7): the outbox worker: notices by SMTP to the source's group or the admins,
//!   source down and up alerts, bursts as one summary; `text` holds every wording.
//! - `source`: where items come from and go back to: `dir` (drop folders), `ftp` (FTP/FTPS
//!   servers), `imap` (mailboxes: IDLE, batched fetch and moves); `settle` decides when a
//!   listed file is complete, `tls` verifies servers.
//! - `daemon`, `schedule`: sources watched on their schedules until a signal.
//! - `config`, `cli`, `error`, `fault`: the edges.

pub mod auth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod disposition;
pub mod error;
pub mod extract;
pub mod fault;
pub mod format;
pub mod item;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod route;
pub mod schedule;
pub mod source;
pub mod store;
