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
//! Where each step lives, following one item from arrival to its stored outcome and its
//! moved file:
//!
//! - `source`: where items come from and go back to. `source::pass` is the one loop every
//!   kind of source runs, in the order the promises rest on: reconcile what a crash left
//!   (`source::reconcile` decides, purely), list the inbox, then per batch fetch → accept →
//!   move → record, three batches in flight. The kinds are protocol adapters behind
//!   `source::Inbox` (list, fetch, move, locate; plus put back and check): `dir` (drop
//!   folders), `ftp` (FTP/FTPS servers), `imap` (mailboxes: IDLE, batched fetch and moves);
//!   `settle` decides when a listed file is complete, `tls` verifies servers.
//! - `intake`: the one front door to the store for items: `accept` (check the senders of new
//!   messages, asynchronously, then commit outcomes), `placed` (where each item lies now),
//!   `unfinished` (what a crash left). Async at its boundary, blocking work on the blocking
//!   pool inside.
//! - `item`: the raw bytes of a message or file, where it lies, its key (sha256).
//! - `pipeline`: what `accept` runs for one batch: ledger → route → sender decision →
//!   extract → parse → validate → store (the envelope is read first: routing needs the
//!   sender); reads like the flow.
//! - `route` (1): which supplier: sender, file name, source binding.
//! - `auth` (1): whether a message's sender is authentic: the trusted Authentication-Results
//!   header or eingang's own DKIM/DMARC check (DNS through `auth::Resolver`), the verdict
//!   stored with the item, and what the supplier's `authenticate` setting makes of it.
//! - `extract` (2): MIME → attachments, nested `message/rfc822` too, raw bytes kept.
//! - `format` (3): bytes → documents: `standard` (which standard, by content) with `xml`,
//!   `cxml`, `opentrans`, `ubl`; `table`, `csv_table`, `xlsx_table` for supplier formats from
//!   TOML, `overlap` for two of them claiming one sender or file name; `archive` for ZIP
//!   containers (the pre-scan of workbooks and ZIP attachments, members as attachments).
//! - `model` (4): the document types, canonical decimals, validation (dates in a plausible
//!   window against a `today` passed in).
//! - `store` (5): the SQLite ledger: items with their outcome and place, documents, lines,
//!   outbox, source health (`source_state`), migrations; `store::ledger` reads it for people
//!   (`eingang items`, the admin page); `store::copy` moves a SQLite store into an empty
//!   PostgreSQL one (`eingang store copy`).
//! - `disposition` (6): outcome → archive or error (or it stays in its inbox: a message
//!   waiting for DNS to check its sender), decided in one place.
//! - `connector` (8): the ERP hand-off: every stored document of the kinds a `[[connector]]`
//!   takes, as a signed Standard Webhooks POST or a file (JSON or CSV) written atomically into
//!   a folder; `fields` renames and `defaults`, retries on a schedule, dead after the last
//!   attempt with one notice. The rows come from the store (`store::handoff`), written with
//!   the document.
//! - `notify` (7): the outbox worker: notices by SMTP to the source's group or the admins,
//!   source down and up alerts, bursts as one summary; `text` holds every wording.
//! - `oauth`: OAuth2 logins for IMAP sources and `[notify]`: access tokens (memory only,
//!   shared per account, renewed before expiry), refresh tokens rotated into the store, the
//!   device-code sign-in of `eingang oauth login`, XOAUTH2/OAUTHBEARER, provider presets.
//! - `daemon`, `schedule`, `stop`: sources watched on their schedules under a supervisor that
//!   restarts a task that died, until the one stop signal; `daemon::Control` is the way to
//!   the running sources (a pass now, reprocess), `daemon::Tasks` what runs.
//! - `web`: the admin page of `[http]` (error queue, documents, sources; login, sessions,
//!   CSRF) and `/metrics`, `/healthz`, `/readyz`; its actions go through `Control`, its reads
//!   through `store::ledger`.
//! - `cxml_http`: the cXML receiver of `[cxml]`: procurement systems POST OrderRequests
//!   (`/cxml`) and PunchOut carts (`/cxml/punchout`) over TLS; the sender checked against
//!   `[[cxml.partner]]` in constant time, the document through the intake like any item,
//!   committed before the synchronous cXML Status; a repeated payloadID answered from the
//!   ledger (`store::receiver`). A supervised task of the daemon.
//! - `config`, `cli`, `error`, `fault`: the edges.

pub mod auth;
pub mod cli;
pub mod config;
pub mod connector;
pub mod cxml_http;
pub mod daemon;
pub mod disposition;
pub mod error;
pub mod escape;
pub mod extract;
pub mod fault;
pub mod format;
pub mod intake;
pub mod item;
pub mod lock;
pub mod model;
pub mod notify;
pub mod oauth;
pub mod pipeline;
pub mod route;
pub mod schedule;
pub mod source;
pub mod stop;
pub mod store;
pub mod web;
