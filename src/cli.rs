//! The commands of CONTRACT.md: run, sync, check, parse, import, status, export, reprocess,
//! oauth login, connector replay, store copy, items, hash-password.
//! Each returns its exit code; errors become the contract's stderr line `error: <what>: <why>`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::{Config, SourceKind};
use crate::escape;
use crate::format::Registry;
use crate::intake::{Intake, Retry, SenderAuth};
use crate::item::{Item, ItemKind, Origin};
use crate::lock::{self, Holder, StoreLock};
use crate::notify::Notifier;
use crate::pipeline;
use crate::source::{Mode, Source};
use crate::stop::Stop;
use crate::store::{Location, Outcome, Place, Store, Target};

/// Items per store transaction for `import`.
const IMPORT_BATCH: usize = 256;
/// How long `sync` tries to deliver notices after its pass.
const SYNC_NOTIFY_LIMIT: Duration = Duration::from_secs(15);
/// How long a command waits for another one-shot command that holds the store (a `sync` of a
/// large inbox takes minutes; a daemon is never waited for).
const COMMAND_WAIT: Duration = Duration::from_secs(30 * 60);
/// How often a command that handed its work to the daemon looks for the answer.
const ANSWER_POLL: Duration = Duration::from_millis(200);
/// How long `sync` hands documents to the connectors after its pass.
const SYNC_HANDOFF_LIMIT: Duration = Duration::from_secs(15);

/// eingang: supplier documents from mailboxes and drop folders into clean data.
#[derive(Debug, Parser)]
#[command(name = "eingang", version, about)]
pub struct Cli {
    /// The config file (default: ./eingang.toml if present, else the embedded default).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch every configured source until SIGTERM/SIGINT.
    Run,
    /// One pass over the sources now, then exit.
    Sync {
        /// Only this source.
        #[arg(long)]
        source: Option<String>,
    },
    /// Test every source and the notifier.
    Check {
        /// Create missing folders.
        #[arg(long)]
        create_folders: bool,
    },
    /// Parse one file (an .eml message or a single attachment) and print its documents.
    Parse {
        /// The file.
        file: PathBuf,
        /// Read it with this supplier's format (a file name in formats/ without .toml).
        #[arg(long)]
        supplier: Option<String>,
    },
    /// Import files or .eml messages (a folder: every file in it) into the store.
    Import {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Per source: received, archived, failed, pending, last error; total documents.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every stored document, oldest first.
    Export {
        /// Only documents with a store id above this one.
        #[arg(long, value_name = "ID")]
        since: Option<i64>,
        /// One JSON document per line.
        #[arg(long)]
        jsonl: bool,
    },
    /// Put failed items back into their source's inbox for another try.
    Reprocess {
        /// Item ids (from the error note or the notification).
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// A consistent copy of the store, also while the daemon runs.
    Backup {
        /// The new file to write (it must not exist).
        file: PathBuf,
    },
    /// The store itself: moving it to PostgreSQL.
    Store {
        /// What to do.
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Put items of a source's archive that the store does not know (it was restored from an
    /// older copy) back into its inbox, to be imported again.
    Recover {
        /// The source.
        source: String,
    },
    /// The ledger, newest first: what came in, what became of it, where it lies now.
    Items {
        /// Only the failed items (the error queue).
        #[arg(long)]
        failed: bool,
        /// Only this source's items.
        #[arg(long)]
        source: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// At most this many items.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Read a password on stdin and print its argon2id hash for `[http] admin_password_hash`.
    HashPassword,
    /// OAuth2 sign-in for a mailbox (`auth = "oauth2"`).
    Oauth {
        /// What to do.
        #[command(subcommand)]
        command: OauthCommand,
    },
    /// The ERP hand-off (`[[connector]]`).
    Connector {
        /// What to do.
        #[command(subcommand)]
        command: ConnectorCommand,
    },
}

/// `eingang connector …`.
#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Queues stored documents for a connector again (after an ERP restore, or once its
    /// receiver works again): the running daemon or the next sync hands them off, under
    /// their first webhook-id.
    Replay {
        /// The connector's name.
        name: String,
        /// Every document of its kinds with a store id above this one (0: all).
        #[arg(long, value_name = "ID", required_unless_present = "dead")]
        since: Option<i64>,
        /// Only the documents it gave up on (above --since, if given).
        #[arg(long)]
        dead: bool,
    },
}

/// `eingang store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copies the SQLite store of the config into an empty PostgreSQL database (migrated
    /// first), in one transaction; no daemon or command may work the SQLite store meanwhile.
    Copy {
        /// The PostgreSQL database, as for `[store] url` (without a password).
        #[arg(long, value_name = "URL")]
        to: String,
        /// The environment variable holding the database password (as `[store] password_env`).
        #[arg(long, value_name = "NAME", conflicts_with = "password_file")]
        password_env: Option<String>,
        /// The file holding the database password (as `[store] password_file`).
        #[arg(long, value_name = "FILE")]
        password_file: Option<String>,
        /// The CA of the database's certificate, if not a system root (as `[store] ca_file`).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
    },
}

/// `eingang oauth …`.
#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// First consent (device-code flow): prints a URL and a code, waits for the sign-in and
    /// stores the refresh token.
    Login {
        /// The source's name, or `notify` for the [notify] section.
        source: String,
    },
}

/// A configuration problem: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct BadConfig(pub Vec<String>);

/// Where the config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `--config FILE`.
    Flag(PathBuf),
    /// `$EINGANG_CONFIG`, `./eingang.toml` or `/etc/eingang/eingang.toml`.
    File(PathBuf),
    /// No file: the embedded default, in this folder.
    Embedded(PathBuf),
}

/// The config of the system service, when nothing nearer names one.
const SYSTEM_CONFIG: &str = "/etc/eingang/eingang.toml";

/// Finds and loads the config (CONTRACT.md "Finding the config"): `--config`, else
/// `$EINGANG_CONFIG`, else `./eingang.toml`, else `/etc/eingang/eingang.toml`, else the
/// embedded default.
pub fn load_config(flag: Option<&Path>) -> Result<(Config, Found), BadConfig> {
    let found = discover(flag);
    load_found(&found).map(|config| (config, found))
}

/// Which config a command uses, by the order of `load_config`.
fn discover(flag: Option<&Path>) -> Found {
    let found = match flag {
        Some(path) => Found::Flag(path.to_owned()),
        None => match std::env::var_os("EINGANG_CONFIG").filter(|v| !v.is_empty()) {
            Some(path) => Found::File(PathBuf::from(path)),
            None => [PathBuf::from("eingang.toml"), PathBuf::from(SYSTEM_CONFIG)]
                .into_iter()
                .find(|p| p.exists())
                .map_or_else(
                    || Found::Embedded(std::env::current_dir().unwrap_or_default()),
                    Found::File,
                ),
        },
    };
    match found {
        Found::Flag(p) => Found::Flag(std::path::absolute(&p).unwrap_or(p)),
        Found::File(p) => Found::File(std::path::absolute(&p).unwrap_or(p)),
        embedded => embedded,
    }
}

fn load_found(found: &Found) -> Result<Config, BadConfig> {
    match found {
        Found::Flag(path) | Found::File(path) => Config::load(path).map_err(BadConfig),
        Found::Embedded(_) => Ok(Config::embedded_default()),
    }
}

/// The problems of the format files beside a config that does not load, so that `check`
/// reports every problem at once: the folder its `formats` key names, else `formats/`.
fn formats_problems_beside(found: &Found) -> Vec<String> {
    let (Found::Flag(path) | Found::File(path)) = found else {
        return Vec::new();
    };
    let named = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("formats").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "formats".to_owned());
    let dir = path.parent().unwrap_or(Path::new("")).join(named);
    Registry::load(&dir).err().unwrap_or_default()
}

/// The line that says which config a command uses, unless `--config` named it.
fn say_which_config(found: &Found) {
    match found {
        Found::Flag(_) => {}
        Found::File(path) => {
            eprintln!("using config {}", escape::text(&path.display().to_string()))
        }
        Found::Embedded(dir) => eprintln!(
            "using the embedded default in {}",
            escape::text(
                &dir.join(crate::config::DEFAULT_DATA_DIR)
                    .display()
                    .to_string()
            )
        ),
    }
}

/// The supplier formats, checked against the config: a source bound to a supplier that has no
/// format file is a mistake (a typo would send every file to the error folder).
fn registry(config: &Config) -> Result<Registry, BadConfig> {
    let registry = Registry::load(&config.formats).map_err(BadConfig)?;
    let known: Vec<&str> = registry.tables().iter().map(|t| t.name.as_str()).collect();
    let problems: Vec<String> = config
        .sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let name = s.supplier.as_deref()?;
            registry.by_name(name).is_none().then(|| {
                format!(
                    "config: source[{i}] {:?}: supplier {name:?} has no format file {}; the formats are: {}",
                    s.name,
                    config.formats.join(format!("{name}.toml")).display(),
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                )
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(registry)
    } else {
        Err(BadConfig(problems))
    }
}

/// The warning of CONTRACT.md for a missing formats folder, given where a person reads logs.
fn warn_without_formats(config: &Config) {
    if !config.formats.is_dir() {
        tracing::warn!(folder = %config.formats.display(), "no formats folder: supplier table formats are off");
    }
}

fn sheet_reader() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("eingang"))
}

/// The intake of a command; `retry` says when messages waiting for DNS are tried again.
fn intake(config: &Config, retry: Retry) -> Result<Intake> {
    let registry = registry(config)?;
    let store = Store::open_at(&config.store).with_context(|| format!("{}", config.store))?;
    // From here on every stored document gets its hand-off rows for the configured connectors.
    store.set_connectors(&crate::connector::registrations(config));
    let auth = SenderAuth::new(config, resolver(config), retry);
    Ok(Intake::new(
        registry,
        config.limits(sheet_reader()),
        Arc::new(store),
        auth,
    ))
}

/// The one DNS resolver of the process for sender checks (`[dns] server`, else the
/// system's); a resolver that cannot start is said once, and every message then gets
/// `temperror`.
fn resolver(config: &Config) -> Arc<crate::auth::Resolver> {
    let resolver = crate::auth::Resolver::new(config.dns_server);
    if let Some(problem) = resolver.problem() {
        tracing::warn!(%problem, "sender authenticity cannot be checked: every message gets the verdict temperror");
    }
    Arc::new(resolver)
}

fn sources(config: &Config, only: Option<&str>) -> Result<Vec<Arc<Source>>> {
    if let Some(name) = only.filter(|n| config.source(n).is_none()) {
        bail!("no source named {name:?} in the config");
    }
    Ok(config
        .sources
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name))
        .map(|s| Arc::new(Source::new(s.clone())))
        .collect())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// Runs one command; returns the exit code.
pub fn execute(cli: Cli) -> Result<i32> {
    if let Command::HashPassword = cli.command {
        return hash_password();
    }
    let found = discover(cli.config.as_deref());
    let loaded = load_found(&found);
    if !matches!(cli.command, Command::Parse { .. }) && loaded.is_ok() {
        say_which_config(&found);
    }
    let config = match loaded {
        Ok(config) => config,
        // `check` reports every problem at once: the format files' too.
        Err(BadConfig(mut problems)) if matches!(cli.command, Command::Check { .. }) => {
            problems.extend(formats_problems_beside(&found));
            return Err(BadConfig(problems).into());
        }
        Err(bad) => return Err(bad.into()),
    };
    crate::config::set_invocation(match &found {
        Found::Flag(path) | Found::File(path) => Some(path),
        Found::Embedded(_) => None,
    });
    let embedded = matches!(found, Found::Embedded(_));
    match cli.command {
        Command::HashPassword => hash_password(),
        Command::Items {
            failed,
            source,
            json,
            limit,
        } => items(
            &config,
            crate::store::ItemFilter {
                failed,
                source,
                limit,
            },
            json,
        ),
        Command::Parse { file, supplier } => parse(&config, &file, supplier.as_deref()),
        Command::Import { paths } => import(&config, &paths),
        Command::Export { since, jsonl } => export(&config, since.unwrap_or(0), jsonl),
        Command::Status { json } => status(&config, json),
        Command::Sync { source } => sync(&config, source.as_deref(), embedded),
        Command::Check { create_folders } => check(&config, create_folders),
        Command::Reprocess { ids } => reprocess(&config, &ids),
        Command::Recover { source } => recover(&config, &source),
        Command::Backup { file } => backup(&config, &file),
        Command::Store {
            command:
                StoreCommand::Copy {
                    to,
                    password_env,
                    password_file,
                    ca_file,
                },
        } => store_copy(&config, &to, password_env, password_file, ca_file),
        Command::Oauth {
            command: OauthCommand::Login { source },
        } => oauth_login(&config, &source),
        Command::Connector {
            command: ConnectorCommand::Replay { name, since, dead },
        } => connector_replay(&config, &name, since, dead),
        Command::Run => run(&config, &found),
    }
}

fn item_from_path(path: &Path, source: &str) -> Result<Item> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Item::new(
        bytes,
        ItemKind::of_file_name(&name),
        Origin {
            source: source.to_owned(),
            location: path.display().to_string(),
            file_name: Some(name),
        },
    ))
}

/// `error: <what>: <why>`, naming the item and the supplier; the item's own name is not
/// repeated when the reason starts with it.
pub fn rejection_line(item: &str, supplier: Option<&str>, reason: &str) -> String {
    let (item, reason) = (escape::text(item), escape::text(reason));
    let why = reason
        .strip_prefix(&*item)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(&reason);
    match supplier {
        Some(s) => format!("error: {item} (supplier {}): {why}", escape::text(s)),
        None => format!("error: {item}: {why}"),
    }
}

fn parse(config: &Config, file: &Path, supplier: Option<&str>) -> Result<i32> {
    let registry = registry(config)?;
    let forced = match supplier {
        Some(name) => match registry.by_name(name) {
            Some(f) => Some(f),
            None => {
                eprintln!(
                    "error: --supplier {name}: no such supplier format in {}",
                    config.formats.display()
                );
                return Ok(2);
            }
        },
        None => None,
    };
    let item = match item_from_path(file, "parse") {
        Ok(item) => item,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let parsed = pipeline::parse_with(&item, forced, &registry, &config.limits(sheet_reader()));
    let name = match &parsed.envelope.message_id {
        Some(id) => format!("{} <{id}>", item.name()),
        None => item.name().to_owned(),
    };
    match parsed.result {
        Ok(documents) => {
            let out = serde_json::to_string_pretty(&json!({ "documents": documents }))?;
            println!("{out}");
            Ok(0)
        }
        Err(reject) => {
            eprintln!(
                "{}",
                rejection_line(&name, parsed.supplier.as_deref(), &reject.to_string())
            );
            Ok(1)
        }
    }
}

fn import(config: &Config, paths: &[PathBuf]) -> Result<i32> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(path.clone());
        }
    }
    let _owner = match own_store(config, "import")? {
        Owner::Me(lock) => lock,
        Owner::Daemon(daemon) => bail!(
            "{daemon} works this store; drop the files into a folder it watches, or stop it first"
        ),
    };
    let intake = intake(config, Retry::Now)?;
    let runtime = runtime()?;
    let progress = indicatif::ProgressBar::new(files.len() as u64);
    if !std::io::stderr().is_terminal() {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut imported, mut rejected, mut deferred) = (0usize, 0usize, 0usize);
    for chunk in files.chunks(IMPORT_BATCH) {
        let items = chunk
            .iter()
            .map(|p| item_from_path(p, "import"))
            .collect::<Result<Vec<_>>>()?;
        // The files stay where they are: their place is where they were found.
        let found: Vec<(String, String)> = items
            .iter()
            .map(|i| (i.name().to_owned(), i.origin.location.clone()))
            .collect();
        let outcomes = runtime.block_on(intake.accept(items, None))?;
        let mut places = Vec::with_capacity(found.len());
        for ((name, location), outcome) in found.into_iter().zip(&outcomes) {
            match outcome {
                Outcome::Imported { .. } => imported += 1,
                Outcome::Rejected { reason, .. } => {
                    rejected += 1;
                    progress.suspend(|| eprintln!("{}", rejection_line(&name, None, reason)));
                }
                // Not decided: it stays where it is, and the next import of it tries again.
                Outcome::Deferred { reason, .. } => {
                    deferred += 1;
                    let why = format!("not imported yet: {reason}; import it again later");
                    progress.suspend(|| eprintln!("{}", rejection_line(&name, None, &why)));
                    continue;
                }
            }
            places.push((outcome.item_id(), Place::at(location)));
        }
        runtime.block_on(intake.placed(places))?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if deferred > 0 {
        eprintln!("imported {imported}, rejected {rejected}, not decided yet {deferred}");
    } else {
        eprintln!("imported {imported}, rejected {rejected}");
    }
    Ok(if rejected + deferred == 0 { 0 } else { 1 })
}

/// The store for a command that only reads it: `None` when there is none yet, for no
/// reading command may leave a new empty store behind (a command run in the wrong folder
/// would, and then seem to find nothing).
fn existing_store(config: &Config) -> Result<Option<Store>> {
    if !config.store.exists() {
        eprintln!(
            "note: no store at {} yet: nothing has been handled with this config",
            escape::text(&config.store.to_string())
        );
        return Ok(None);
    }
    Ok(Some(
        Store::open_at(&config.store).with_context(|| format!("{}", config.store))?,
    ))
}

fn export(config: &Config, since: i64, jsonl: bool) -> Result<i32> {
    let documents = match existing_store(config)? {
        Some(store) => store.export(since)?,
        None => Vec::new(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if jsonl {
        for d in documents {
            writeln!(out, "{}", d.json)?;
        }
    } else {
        let all: Vec<_> = documents.into_iter().map(|d| d.json).collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({ "documents": all }))?
        )?;
    }
    out.flush()?;
    Ok(0)
}

fn status(config: &Config, as_json: bool) -> Result<i32> {
    let store = existing_store(config)?;
    let mut counts = match &store {
        Some(store) => store.source_counts()?,
        None => Vec::new(),
    };
    for source in &config.sources {
        if !counts.iter().any(|c| c.name == source.name) {
            counts.push(crate::store::SourceCounts {
                name: source.name.clone(),
                ..Default::default()
            });
        }
    }
    let configured = sources(config, None)?;
    let auth = match &store {
        Some(store) => store.auth_by_source()?,
        None => Default::default(),
    };
    // Who works each source: on a shared store the daemon holding its lease, else the one
    // daemon of the store, if it runs.
    let owners = match (&store, &config.store) {
        (Some(store), crate::store::Location::Postgres(_)) => store.source_owners()?,
        (_, crate::store::Location::File(path)) => match lock::running_daemon(path) {
            Some(pid) => config
                .sources
                .iter()
                .map(|s| (s.name.clone(), format!("{} {pid}", lock::host())))
                .collect(),
            None => Default::default(),
        },
        (None, _) => Default::default(),
    };
    let owner_of = |name: &str| match owners.get(name).and_then(|o| o.rsplit_once(' ')) {
        Some((host, pid)) => json!({ "host": host, "pid": pid.parse::<u32>().ok() }),
        None => serde_json::Value::Null,
    };
    let daemons: Vec<serde_json::Value> = match &store {
        Some(store) => store
            .daemons()?
            .into_iter()
            .map(|d| json!({ "host": d.host, "pid": d.pid, "since": d.since }))
            .collect(),
        None => Vec::new(),
    };
    let waiting_in = |name: &str| -> i64 {
        configured
            .iter()
            .find(|s| s.name() == name)
            .and_then(|s| s.waiting_in_inbox())
            .map_or(0, |n| n as i64)
    };
    let sources: Vec<serde_json::Value> = counts
        .iter()
        .map(|c| {
            let kind = config.source(&c.name).map(|s| match s.kind {
                SourceKind::Dir(_) => "dir",
                SourceKind::Ftp(_) => "ftp",
                SourceKind::Imap(_) => "imap",
            });
            // What waits in a drop folder is received and pending, so that
            // received = archived + failed + handled + pending.
            let waiting = kind.map_or(0, |_| waiting_in(&c.name));
            let pending = c.in_flight + waiting;
            let note = store
                .as_ref()
                .and_then(|s| s.source_note(&c.name).ok().flatten());
            let left_alone = store
                .as_ref()
                .and_then(|s| s.strays(&c.name).ok())
                .unwrap_or_default();
            json!({
                "name": c.name, "kind": kind, "received": c.received + waiting, "archived": c.archived,
                "failed": c.failed, "handled": c.handled, "pending": pending, "last_ok": c.last_ok,
                "last_error": c.last_error,
                "note": note, "left_alone": left_alone,
                "sender_auth": auth.get(&c.name).cloned().unwrap_or_default(),
                "owner": owner_of(&c.name),
            })
        })
        .collect();
    let documents = store.as_ref().map_or(Ok(0), Store::document_count)?;
    let notifications = store.as_ref().map_or(Ok(0), Store::pending_notifications)?;
    let handoffs = match &store {
        Some(store) => store.handoff_counts()?,
        None => Vec::new(),
    };
    let connectors: Vec<serde_json::Value> = config
        .connectors
        .iter()
        .map(|c| {
            let counts = handoffs
                .iter()
                .find(|h| h.name == c.name)
                .cloned()
                .unwrap_or_default();
            json!({
                "name": c.name, "kind": c.kind_name(), "pending": counts.pending,
                "delivered": counts.delivered, "dead": counts.dead, "last_error": counts.last_error,
            })
        })
        .collect();
    if as_json {
        let mut out = json!({ "sources": sources, "connectors": connectors, "documents": documents, "notifications_pending": notifications });
        if store.as_ref().is_some_and(|s| s.shared().is_some()) {
            out["daemons"] = json!(daemons);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for s in &sources {
            let name = escape::text(s["name"].as_str().unwrap_or_default());
            let handled = match s["handled"].as_i64() {
                Some(n) if n > 0 => format!(", handled by hand {n}"),
                _ => String::new(),
            };
            println!(
                "{name}: received {}, archived {}, failed {}{handled}, pending {}, last error: {}",
                s["received"],
                s["archived"],
                s["failed"],
                s["pending"],
                escape::text(s["last_error"].as_str().unwrap_or("none"))
            );
            if let Some(note) = s["note"].as_str() {
                println!("{name}: note: {}", escape::text(note));
            }
            if let (Some(host), Some(pid)) =
                (s["owner"]["host"].as_str(), s["owner"]["pid"].as_u64())
            {
                println!(
                    "{name}: worked by the daemon on {} (process {pid})",
                    escape::text(host)
                );
            }
            if let Some(line) = auth.get(s["name"].as_str().unwrap_or_default())
                && let Some(line) = auth_line(line)
            {
                println!("{name}: senders: {line}");
            }
            for stray in s["left_alone"].as_array().into_iter().flatten() {
                println!(
                    "{name}: left alone in the inbox: {} ({})",
                    escape::text(stray["name"].as_str().unwrap_or_default()),
                    escape::text(stray["why"].as_str().unwrap_or_default())
                );
            }
        }
        for c in &connectors {
            println!(
                "connector {}: pending {}, delivered {}, dead {}, last error: {}",
                escape::text(c["name"].as_str().unwrap_or_default()),
                c["pending"],
                c["delivered"],
                c["dead"],
                escape::text(c["last_error"].as_str().unwrap_or("none"))
            );
        }
        for d in &daemons {
            println!(
                "daemon on {} (process {}): running since {}",
                escape::text(d["host"].as_str().unwrap_or_default()),
                d["pid"],
                escape::text(d["since"].as_str().unwrap_or_default())
            );
        }
        println!("documents: {documents}");
        println!("notifications pending: {notifications}");
    }
    Ok(0)
}

/// `3 pass (supplier.example 3), 1 fail, 1 temperror, 1 waiting for DNS`: how a source's
/// messages fared with sender authenticity; `None` when it had none.
fn auth_line(counts: &crate::store::AuthCounts) -> Option<String> {
    if counts.checked() + counts.waiting == 0 {
        return None;
    }
    let mut parts = Vec::new();
    if counts.pass > 0 {
        let domains: Vec<String> = counts
            .passed_for
            .iter()
            .map(|(d, n)| format!("{} {n}", escape::text(d)))
            .collect();
        parts.push(format!("{} pass ({})", counts.pass, domains.join(", ")));
    }
    for (n, word) in [
        (counts.fail, "fail"),
        (counts.none, "none"),
        (counts.temperror, "temperror"),
        (counts.waiting, "waiting for DNS"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    Some(parts.join(", "))
}

/// How long `check` looks back at a supplier's mail.
const CHECK_RECENT_DAYS: i64 = 30;

/// `acme: 12 of 12 passed DKIM for acme.example`: per supplier, how its mail of the last
/// `CHECK_RECENT_DAYS` fared, so that an admin can tell whether `authenticate = "required"`
/// would hold.
fn supplier_auth_lines(config: &Config) -> Vec<String> {
    let Ok(registry) = registry(config) else {
        return Vec::new();
    };
    let Ok(store) = Store::open_at(&config.store) else {
        return Vec::new();
    };
    let since = chrono::Utc::now() - chrono::TimeDelta::days(CHECK_RECENT_DAYS);
    let since = crate::store::outbox::stamp(since);
    let Ok(counts) = store.auth_by_supplier(&since) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for format in registry.tables() {
        let Some(c) = counts.get(&format.name) else {
            continue;
        };
        if c.checked() == 0 {
            continue;
        }
        let name = escape::text(&format.name);
        let passed = match c.passed_for.as_slice() {
            [] => format!("{} of {} passed", c.pass, c.checked()),
            [(domain, _)] => format!(
                "{} of {} passed DKIM for {}",
                c.pass,
                c.checked(),
                escape::text(domain)
            ),
            several => {
                let domains: Vec<String> = several
                    .iter()
                    .map(|(d, n)| format!("{} {n}", escape::text(d)))
                    .collect();
                format!(
                    "{} of {} passed DKIM ({})",
                    c.pass,
                    c.checked(),
                    domains.join(", ")
                )
            }
        };
        let mut rest = Vec::new();
        for (n, word) in [
            (c.fail, "failed"),
            (c.none, "without anything to judge by"),
            (c.temperror, "unchecked (DNS failed)"),
        ] {
            if n > 0 {
                rest.push(format!("{n} {word}"));
            }
        }
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!("; {}", rest.join(", "))
        };
        lines.push(format!(
            "supplier {name}: {passed}{rest} in the last {CHECK_RECENT_DAYS} days (authenticate = \"{}\")",
            format.authenticate().as_str()
        ));
    }
    lines
}

fn sync(config: &Config, only: Option<&str>, embedded: bool) -> Result<i32> {
    warn_without_formats(config);
    let sources = sources(config, only)?;
    let _owner = match own_store(config, "sync")? {
        Owner::Me(lock) => lock,
        Owner::Daemon(holder) => return sync_by_daemon(config, &sources, &holder),
    };
    let intake = intake(config, Retry::Now)?;
    let stop = Stop::never();
    let mut code = 0;
    let runtime = runtime()?;
    for source in sources {
        if embedded {
            source.create_local_folders()?;
        }
        let pass = runtime.block_on(source.pass(&intake, &stop, Mode::Sync));
        let error = pass.result.err().map(|e| e.to_string());
        runtime.block_on(intake.record_pass(source.name(), error.clone()));
        let report = &pass.report;
        if error.is_none() || report.made_progress() {
            let deferred = match report.deferred {
                0 => String::new(),
                n => format!(", left in the inbox until DNS answers {n}"),
            };
            eprintln!(
                "{}: imported {}, rejected {}{deferred}",
                source.name(),
                report.imported,
                report.rejected
            );
        }
        if let Some(e) = error {
            eprintln!("error: source {}: {}", source.name(), escape::text(&e));
            code = 1;
        }
        // Not handled: neither archived nor filed as error, but waiting for DNS (transient),
        // so not exit 0; the source itself is fine.
        if report.deferred > 0 {
            eprintln!(
                "error: source {}: {} message(s) left in the inbox: their sender could not be checked (DNS failed) and their supplier requires authentication; tried again on the next run",
                source.name(),
                report.deferred
            );
            code = 1;
        }
    }
    // Then the ERP gets what this pass stored, within a bound; what is left waits for the
    // daemon or the next run. Before the notices: a document given up on is told at once.
    let handoff = crate::connector::Handoff::new(config, intake.store().clone())
        .map_err(|e| BadConfig(vec![format!("config: {e}")]))?;
    if !handoff.is_empty() {
        let delivery = runtime.block_on(handoff.deliver(SYNC_HANDOFF_LIMIT));
        if delivery.done > 0 || delivery.waiting > 0 {
            let why = delivery
                .error
                .map(|e| format!(" ({})", escape::text(&e)))
                .unwrap_or_default();
            eprintln!(
                "hand-off: {} delivered, {} waiting{why}",
                delivery.done, delivery.waiting
            );
        }
    }
    // A one-shot run tells people too, within a bound: notices left over wait in the outbox
    // for the next run.
    let notifier = Notifier::new(config, intake.store().clone())
        .map_err(|e| BadConfig(vec![format!("config: notify: {e}")]))?;
    let delivery = runtime.block_on(notifier.deliver(SYNC_NOTIFY_LIMIT));
    if delivery.done > 0 || delivery.waiting > 0 {
        let why = delivery
            .error
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        eprintln!(
            "notices: {} done, {} waiting{why}",
            delivery.done, delivery.waiting
        );
    }
    Ok(code)
}

/// Who works the store for a command: the command itself (holding the lock), or the daemon.
enum Owner {
    Me(StoreLock),
    Daemon(Holder),
}

/// Takes the store for a command, waiting for another command in hand; a running daemon
/// keeps it.
fn own_store(config: &Config, command: &str) -> Result<Owner> {
    match StoreLock::take_waiting(&config.store, command, COMMAND_WAIT) {
        Ok(lock) => Ok(Owner::Me(lock)),
        Err(lock::Error::Held(holder)) if holder.is_daemon() => Ok(Owner::Daemon(holder)),
        Err(e) => Err(e.into()),
    }
}

/// Writes requests for the daemon and waits for its answers, in order. Fails when the daemon
/// stops before it answered (the store's lock is free then).
fn ask_daemon(
    config: &Config,
    requests: &[(&str, Option<&str>, Option<i64>)],
) -> Result<Vec<serde_json::Value>> {
    let store = Store::open_at(&config.store)?;
    let mut ids = Vec::with_capacity(requests.len());
    for (kind, source, item) in requests {
        ids.push(store.add_request(kind, *source, *item)?);
    }
    let mut answers = Vec::with_capacity(ids.len());
    for id in ids {
        loop {
            if let Some(text) = store.request_result(id)? {
                answers.push(serde_json::from_str(&text).unwrap_or_default());
                break;
            }
            if StoreLock::take(&config.store, "sync").is_ok() {
                bail!("the daemon stopped before it answered; run the command again");
            }
            std::thread::sleep(ANSWER_POLL);
        }
    }
    Ok(answers)
}

/// `sync` while the daemon runs: it makes the passes (it alone works the inboxes), this waits
/// for them and reports them as a pass of its own would.
fn sync_by_daemon(config: &Config, sources: &[Arc<Source>], daemon: &Holder) -> Result<i32> {
    eprintln!("{daemon} works this store: asking it for a pass now");
    let requests: Vec<(&str, Option<&str>, Option<i64>)> = sources
        .iter()
        .map(|s| ("sync", Some(s.name()), None))
        .collect();
    let mut code = 0;
    for (source, answer) in sources.iter().zip(ask_daemon(config, &requests)?) {
        eprintln!(
            "{}: imported {}, rejected {}",
            source.name(),
            answer["imported"],
            answer["rejected"]
        );
        if let Some(e) = answer["error"].as_str() {
            eprintln!("error: source {}: {}", source.name(), escape::text(e));
            code = 1;
        }
    }
    Ok(code)
}

fn check(config: &Config, create_folders: bool) -> Result<i32> {
    let mut failed = false;
    let mut line = |what: &str, result: Result<(), String>| match result {
        Ok(()) => println!("{}: ok", escape::text(what)),
        Err(e) => {
            failed = true;
            println!("{}: FAILED: {}", escape::text(what), escape::text(&e));
        }
    };
    let formats = format!("formats {}", config.formats.display());
    match registry(config) {
        Ok(_) => line(&formats, Ok(())),
        Err(BadConfig(problems)) => {
            for problem in problems {
                line(&formats, Err(problem));
            }
        }
    }
    // On PostgreSQL: connected, migrated, and a write transaction (with the writer lock)
    // goes through; then the server and the daemons that work the store.
    let store = Store::open_at(&config.store).and_then(|store| {
        let daemons = store.daemons()?;
        store.probe_write()?;
        Ok((store, daemons))
    });
    match store {
        Ok((store, daemons)) => {
            line(&format!("store {}", config.store), Ok(()));
            if let Some(version) = store.server_version()? {
                println!(
                    "store: PostgreSQL {}, {} daemon(s) working it{}",
                    escape::text(&version),
                    daemons.len(),
                    daemons
                        .iter()
                        .map(|d| format!(" {} {}", escape::text(&d.host), d.pid))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        Err(e) => line(&format!("store {}", config.store), Err(e.to_string())),
    }
    for line in supplier_auth_lines(config) {
        println!("{line}");
    }
    let runtime = runtime()?;
    for source in sources(config, None)? {
        for (what, result) in runtime.block_on(source_checks(&source, create_folders)) {
            line(&format!("source {}: {what}", source.name()), result);
        }
    }
    if config.notify.is_none() {
        println!("notify: log only (no [notify] section)");
    }
    for (what, result) in runtime.block_on(crate::notify::check(config)) {
        line(&what, result);
    }
    for (what, result) in runtime.block_on(crate::connector::check(config, create_folders)) {
        line(&what, result);
    }
    Ok(if failed { 1 } else { 0 })
}

/// The checks of one source, as `eingang check` prints them and the web page's "test
/// connection" shows them: the OAuth2 token round first (the login uses its token), then the
/// source's own.
pub async fn source_checks(source: &Source, create_folders: bool) -> Vec<crate::source::CheckLine> {
    let mut lines = Vec::new();
    if let SourceKind::Imap(remote) = &source.config.kind
        && let Some(oauth) = &remote.oauth
    {
        lines.push((
            crate::oauth::describe(oauth),
            crate::oauth::check(oauth).await,
        ));
    }
    lines.extend(source.check(create_folders).await);
    lines
}

/// `eingang items`: the ledger newest first, with what became of each item, where it lies
/// and, for a failed one, the command that tries it again.
fn items(config: &Config, filter: crate::store::ItemFilter, as_json: bool) -> Result<i32> {
    let Some(store) = existing_store(config)? else {
        return Ok(0);
    };
    if let Some(name) = filter.source.as_deref()
        && config.source(name).is_none()
        && name != "import"
        && !config
            .cxml
            .as_ref()
            .is_some_and(|c| c.sources().any(|s| s == name))
    {
        eprintln!(
            "warning: no source named {:?} in the config; listing its items anyway",
            escape::text(name)
        );
    }
    let (items, total) = store.items(&filter)?;
    let again = |id: i64| format!("{} reprocess {id}", crate::config::invocation());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if as_json {
        let all: Vec<serde_json::Value> = items
            .iter()
            .map(|i| {
                let state = i.state();
                json!({
                    "id": i.id, "received_at": i.received_at, "source": i.source, "kind": i.kind,
                    "sender": i.sender, "subject": i.subject, "file_name": i.file_name,
                    "message_id": i.message_id, "supplier": i.supplier, "outcome": i.outcome,
                    "state": state, "label": i.label, "reason": i.reason, "lies_in": i.lies_in(),
                    "reprocessed_at": i.reprocessed_at, "handled_at": i.handled_at,
                    "documents": i.documents,
                    "reprocess": (state == crate::store::ItemState::Failed).then(|| again(i.id)),
                })
            })
            .collect();
        let out_json = json!({ "items": all, "total": total });
        writeln!(out, "{}", serde_json::to_string_pretty(&out_json)?)?;
    } else {
        for i in &items {
            let state = i.state();
            let supplier = i
                .supplier
                .as_deref()
                .map(|s| format!(" ({})", escape::text(s)))
                .unwrap_or_default();
            writeln!(
                out,
                "{}  {}  {}  {}  {}{supplier}",
                i.id,
                crate::notify::text::one_line(&i.received_at),
                escape::text(&i.source),
                state.as_str(),
                escape::text(&i.what()),
            )?;
            if let Some(reason) = &i.reason {
                writeln!(out, "    reason: {}", escape::text(reason))?;
            }
            let lies = match state {
                crate::store::ItemState::Vanished => "gone".to_owned(),
                _ => escape::text(&i.lies_in()).into_owned(),
            };
            writeln!(out, "    lies in: {lies}")?;
            if state == crate::store::ItemState::Failed {
                writeln!(out, "    {}", again(i.id))?;
            }
        }
        out.flush()?;
        if (items.len() as i64) < total {
            eprintln!(
                "{} of {total} items shown; --limit {total} shows all",
                items.len()
            );
        } else if items.is_empty() {
            eprintln!("no items");
        }
    }
    out.flush()?;
    Ok(0)
}

/// `eingang hash-password`: reads one line from stdin (without echo on a terminal, asked
/// twice there) and prints its argon2id PHC string.
fn hash_password() -> Result<i32> {
    let password = if std::io::stdin().is_terminal() {
        let first = read_hidden("password: ")?;
        let second = read_hidden("again: ")?;
        if first != second {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        bail!(
            "empty password: type one, or pipe it in (`printf %s 'secret' | eingang hash-password`)"
        );
    }
    let hash = crate::web::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    println!("{hash}");
    Ok(0)
}

/// Reads a line from the terminal with its echo off (and on again after, also on error).
fn read_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let before = tcgetattr(&stdin).context("stdin: cannot read the terminal settings")?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("stdin: cannot turn echo off")?;
    eprint!("{prompt}");
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &before);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn reprocess(config: &Config, ids: &[i64]) -> Result<i32> {
    let results: Vec<Result<String, String>> = match own_store(config, "reprocess")? {
        Owner::Me(_lock) => {
            let intake = intake(config, Retry::Now)?;
            let sources = sources(config, None)?;
            let runtime = runtime()?;
            ids.iter()
                .map(|&id| {
                    runtime
                        .block_on(crate::source::reprocess(&sources, &intake, id))
                        .map_err(|e| e.to_string())
                })
                .collect()
        }
        Owner::Daemon(daemon) => {
            eprintln!("{daemon} works this store: asking it to put the items back");
            let requests: Vec<(&str, Option<&str>, Option<i64>)> = ids
                .iter()
                .map(|&id| ("reprocess", None, Some(id)))
                .collect();
            ask_daemon(config, &requests)?
                .into_iter()
                .map(|answer| match answer["place"].as_str() {
                    Some(place) => Ok(place.to_owned()),
                    None => Err(answer["error"].as_str().unwrap_or("no answer").to_owned()),
                })
                .collect()
        }
    };
    let mut code = 0;
    for (id, result) in ids.iter().zip(results) {
        match result {
            Ok(place) => println!("item {id}: put back into {}", escape::text(&place)),
            Err(e) => {
                eprintln!("error: item {id}: {}", escape::text(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}

fn backup(config: &Config, file: &Path) -> Result<i32> {
    let Some(store) = existing_store(config)? else {
        return Ok(1);
    };
    match store.backup(file) {
        Ok(documents) => {
            println!(
                "backup {}: {documents} documents, integrity ok",
                escape::text(&file.display().to_string())
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!(
                "error: backup {}: {}",
                escape::text(&file.display().to_string()),
                escape::text(&e.to_string())
            );
            Ok(1)
        }
    }
}

/// `eingang store copy`: exit 2 when refused (no SQLite store, a bad URL or password, the
/// store in use, a target that is not empty), 1 when the copy failed (nothing was written).
fn store_copy(
    config: &Config,
    to: &str,
    password_env: Option<String>,
    password_file: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<i32> {
    let refuse = |why: &str| {
        eprintln!("error: store copy: {}", escape::text(why));
        Ok(2)
    };
    let Location::File(path) = &config.store else {
        return refuse(
            "the config's store is PostgreSQL already; store copy reads a SQLite store ([store] path)",
        );
    };
    if !path.exists() {
        return refuse(&format!("no store at {}", path.display()));
    }
    let password = match (&password_env, &password_file) {
        (None, None) => None,
        _ => match crate::config::read_secret(
            "password",
            &password_env,
            &password_file,
            &None,
            &|p: &str| PathBuf::from(p),
        ) {
            Ok(secret) => Some(secret),
            Err(e) => return refuse(&e),
        },
    };
    let target = match Target::new(to, password, ca_file.as_deref()) {
        Ok(target) => target,
        Err(e) => return refuse(&format!("--to: {e}")),
    };
    let _lock = match StoreLock::take(&config.store, "store-copy") {
        Ok(lock) => lock,
        Err(lock::Error::Held(holder)) => {
            return refuse(&format!(
                "{holder} works {}: stop it first, so that nothing changes during the copy",
                path.display()
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let store = Store::open(path).with_context(|| format!("{}", path.display()))?;
    match store.copy_into(&target) {
        Ok(tables) => {
            for copied in &tables {
                println!("{}: {} rows", copied.table, copied.rows);
            }
            println!(
                "copied {} into {}: {} tables; point [store] url at it to use it",
                escape::text(&path.display().to_string()),
                target.shown(),
                tables.len()
            );
            Ok(0)
        }
        Err(e) if e.is_refusal() => refuse(&e.to_string()),
        Err(e) => {
            eprintln!(
                "error: store copy: {}: nothing was written",
                escape::text(&e.to_string())
            );
            Ok(1)
        }
    }
}

fn recover(config: &Config, source: &str) -> Result<i32> {
    let results: Vec<(String, Result<String, String>)> = match own_store(config, "recover")? {
        Owner::Me(_lock) => {
            let intake = intake(config, Retry::Now)?;
            let sources = sources(config, None)?;
            runtime()?.block_on(crate::source::recover(&sources, &intake, source))?
        }
        Owner::Daemon(daemon) => {
            eprintln!("{daemon} works this store: asking it to put the items back");
            let answer = ask_daemon(config, &[("recover", Some(source), None)])?
                .pop()
                .unwrap_or_default();
            if let Some(e) = answer["error"].as_str() {
                bail!("{e}");
            }
            answer["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    let at = i["at"].as_str().unwrap_or_default().to_owned();
                    match i["place"].as_str() {
                        Some(place) => (at, Ok(place.to_owned())),
                        None => (at, Err(i["error"].as_str().unwrap_or_default().to_owned())),
                    }
                })
                .collect()
        }
    };
    if results.is_empty() {
        println!("{source}: nothing to recover");
    }
    let mut code = 0;
    for (at, result) in results {
        match result {
            Ok(place) => println!(
                "{}: put back into {}",
                escape::text(&at),
                escape::text(&place)
            ),
            Err(e) => {
                eprintln!("error: {}: {}", escape::text(&at), escape::text(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}

fn oauth_login(config: &Config, name: &str) -> Result<i32> {
    let from_source = config.source(name).map(|s| match &s.kind {
        SourceKind::Imap(remote) => remote.oauth.clone(),
        _ => None,
    });
    let oauth = match from_source {
        Some(Some(oauth)) => oauth,
        Some(None) => bail!("source {name:?} does not use auth = \"oauth2\""),
        None if name == crate::config::NOTIFY_LOGIN => {
            match config.notify.as_ref().and_then(|n| n.oauth.clone()) {
                Some(oauth) => oauth,
                None => bail!("[notify] does not use auth = \"oauth2\""),
            }
        }
        None => bail!("no source named {name:?} in the config (`notify` names [notify])"),
    };
    let mut out = std::io::stdout();
    match runtime()?.block_on(crate::oauth::device::login(&oauth, &mut out)) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("error: oauth login {name}: {e}");
            Ok(1)
        }
    }
}

fn run(config: &Config, found: &Found) -> Result<i32> {
    let embedded = matches!(found, Found::Embedded(_));
    let sources = sources(config, None)?;
    if sources.is_empty() {
        return Err(BadConfig(vec!["config: no [[source]] to watch".to_owned()]).into());
    }
    // One daemon per store: a second one refuses; a command in hand is waited for.
    let _owner = match StoreLock::take_waiting(&config.store, "run", COMMAND_WAIT) {
        Ok(lock) => lock,
        Err(lock::Error::Held(holder)) => {
            return Err(BadConfig(vec![format!(
                "store {}: {holder} works this store already; one daemon per store (stop it first)",
                config.store
            )])
            .into());
        }
        Err(e) => return Err(BadConfig(vec![e.to_string()]).into()),
    };
    warn_without_formats(config);
    if embedded {
        for source in &sources {
            source.create_local_folders()?;
        }
        tracing::info!(
            "watching the embedded default drop folder {}/Eingang",
            crate::config::DEFAULT_DATA_DIR
        );
    }
    if config.notify.is_none() {
        tracing::warn!("no [notify] section: failures are logged only");
    }
    // A store that cannot open is fatal for the daemon: exit 2, like a bad config.
    let intake = intake(config, Retry::Backoff).map_err(|e| BadConfig(vec![format!("{e:#}")]))?;
    let notifier = Notifier::new(config, intake.store().clone())
        .map_err(|e| BadConfig(vec![format!("config: notify: {e}")]))?;
    let started = format!(
        "eingang {} started: config {}, store {}, formats {} ({} supplier formats), sources: {}",
        env!("CARGO_PKG_VERSION"),
        match found {
            Found::Flag(path) | Found::File(path) => path.display().to_string(),
            Found::Embedded(_) => "the embedded default".to_owned(),
        },
        config.store,
        config.formats.display(),
        intake.formats(),
        sources
            .iter()
            .map(|s| format!(
                "{} ({}, {})",
                s.name(),
                s.config.kind.name(),
                s.config.schedule
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let handoff = crate::connector::Handoff::new(config, intake.store().clone())
        .map_err(|e| BadConfig(vec![format!("config: {e}")]))?;
    let runtime = runtime()?;
    // The listener is bound before anything runs: a taken port is a start-up error (exit 2).
    let web = crate::web::Web::bind(config).map_err(|e| BadConfig(vec![e]))?;
    let cxml = crate::cxml_http::Receiver::bind(config).map_err(|e| BadConfig(vec![e]))?;
    runtime.block_on(crate::daemon::run(
        sources,
        intake,
        notifier,
        handoff,
        (web, cxml),
        (config.formats.clone(), started),
    ))?;
    Ok(0)
}

fn connector_replay(config: &Config, name: &str, since: Option<i64>, dead: bool) -> Result<i32> {
    let Some(connector) = config.connectors.iter().find(|c| c.name == name) else {
        bail!("no connector named {name:?} in the config");
    };
    let store = Store::open_at(&config.store)?;
    let queued = store.replay_handoffs(name, &connector.documents, since, dead)?;
    println!(
        "connector {}: {queued} document(s) queued again",
        escape::text(name)
    );
    Ok(0)
}
