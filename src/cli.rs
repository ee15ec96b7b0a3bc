//! The commands of CONTRACT.md: run, sync, check, parse, import, status, export, reprocess,
//! oauth login.
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
use crate::notify::Notifier;
use crate::pipeline;
use crate::source::{Mode, Source};
use crate::stop::Stop;
use crate::store::{Outcome, Place, Store};

/// Items per store transaction for `import`.
const IMPORT_BATCH: usize = 256;
/// How long `sync` tries to deliver notices after its pass.
const SYNC_NOTIFY_LIMIT: Duration = Duration::from_secs(15);

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
    /// OAuth2 sign-in for a mailbox (`auth = "oauth2"`).
    Oauth {
        /// What to do.
        #[command(subcommand)]
        command: OauthCommand,
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

/// Loads the config: `--config`, else `./eingang.toml`, else the embedded default. The flag
/// says whether the embedded default is in use.
pub fn load_config(path: Option<&Path>) -> Result<(Config, bool), BadConfig> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(|| Some(PathBuf::from("eingang.toml")).filter(|p| p.exists()));
    match path {
        Some(p) => Config::load(&p).map(|c| (c, false)).map_err(BadConfig),
        None => Ok((Config::embedded_default(), true)),
    }
}

fn registry(config: &Config) -> Result<Registry, BadConfig> {
    Registry::load(&config.formats).map_err(BadConfig)
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
    let store =
        Store::open(&config.store).with_context(|| format!("{}", config.store.display()))?;
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
    let (config, embedded) = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Parse { file, supplier } => parse(&config, &file, supplier.as_deref()),
        Command::Import { paths } => import(&config, &paths),
        Command::Export { since, jsonl } => export(&config, since.unwrap_or(0), jsonl),
        Command::Status { json } => status(&config, json),
        Command::Sync { source } => sync(&config, source.as_deref(), embedded),
        Command::Check { create_folders } => check(&config, create_folders),
        Command::Reprocess { ids } => reprocess(&config, &ids),
        Command::Oauth {
            command: OauthCommand::Login { source },
        } => oauth_login(&config, &source),
        Command::Run => run(&config, embedded),
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

fn export(config: &Config, since: i64, jsonl: bool) -> Result<i32> {
    let store = Store::open(&config.store)?;
    let documents = store.export(since)?;
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
    let store = Store::open(&config.store)?;
    let mut counts = store.source_counts()?;
    for source in &config.sources {
        if !counts.iter().any(|c| c.name == source.name) {
            counts.push(crate::store::SourceCounts {
                name: source.name.clone(),
                ..Default::default()
            });
        }
    }
    let configured = sources(config, None)?;
    let auth = store.auth_by_source()?;
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
            let pending = c.in_flight + kind.map_or(0, |_| waiting_in(&c.name));
            let note = store.source_note(&c.name).ok().flatten();
            let left_alone = store.strays(&c.name).unwrap_or_default();
            json!({
                "name": c.name, "kind": kind, "received": c.received, "archived": c.archived,
                "failed": c.failed, "pending": pending, "last_ok": c.last_ok, "last_error": c.last_error,
                "note": note, "left_alone": left_alone,
                "sender_auth": auth.get(&c.name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let documents = store.document_count()?;
    let notifications = store.pending_notifications()?;
    if as_json {
        let out = json!({ "sources": sources, "documents": documents, "notifications_pending": notifications });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for s in &sources {
            let name = escape::text(s["name"].as_str().unwrap_or_default());
            println!(
                "{name}: received {}, archived {}, failed {}, pending {}, last error: {}",
                s["received"],
                s["archived"],
                s["failed"],
                s["pending"],
                escape::text(s["last_error"].as_str().unwrap_or("none"))
            );
            if let Some(note) = s["note"].as_str() {
                println!("{name}: note: {}", escape::text(note));
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
    let Ok(store) = Store::open(&config.store) else {
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

fn check(config: &Config, create_folders: bool) -> Result<i32> {
    let mut failed = false;
    let mut line = |what: &str, result: Result<(), String>| match result {
        Ok(()) => println!("{}: ok", escape::text(what)),
        Err(e) => {
            failed = true;
            println!("{}: FAILED: {}", escape::text(what), escape::text(&e));
        }
    };
    line(
        &format!("formats {}", config.formats.display()),
        registry(config)
            .map(|r| tracing::debug!(suppliers = r.tables().len()))
            .map_err(|e| e.to_string()),
    );
    line(
        &format!("store {}", config.store.display()),
        Store::open(&config.store)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    for line in supplier_auth_lines(config) {
        println!("{line}");
    }
    let runtime = runtime()?;
    for source in sources(config, None)? {
        // The token round first, on a line of its own; the login below uses its token.
        if let SourceKind::Imap(remote) = &source.config.kind
            && let Some(oauth) = &remote.oauth
        {
            line(
                &format!(
                    "source {}: {}",
                    source.name(),
                    crate::oauth::describe(oauth)
                ),
                runtime.block_on(crate::oauth::check(oauth)),
            );
        }
        for (what, result) in runtime.block_on(source.check(create_folders)) {
            line(&format!("source {}: {what}", source.name()), result);
        }
    }
    if config.notify.is_none() {
        println!("notify: log only (no [notify] section)");
    }
    for (what, result) in runtime.block_on(crate::notify::check(config)) {
        line(&what, result);
    }
    Ok(if failed { 1 } else { 0 })
}

fn reprocess(config: &Config, ids: &[i64]) -> Result<i32> {
    let intake = intake(config, Retry::Now)?;
    let sources = sources(config, None)?;
    let runtime = runtime()?;
    let mut code = 0;
    for &id in ids {
        match runtime.block_on(crate::source::reprocess(&sources, &intake, id)) {
            Ok(place) => println!("item {id}: put back into {}", escape::text(&place)),
            Err(e) => {
                eprintln!("error: item {id}: {}", escape::text(&e.to_string()));
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

fn run(config: &Config, embedded: bool) -> Result<i32> {
    warn_without_formats(config);
    let sources = sources(config, None)?;
    if sources.is_empty() {
        return Err(BadConfig(vec!["config: no [[source]] to watch".to_owned()]).into());
    }
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
    runtime()?.block_on(crate::daemon::run(sources, intake, notifier))?;
    Ok(0)
}
