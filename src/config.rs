//! `eingang.toml` → `RawConfig` (as written) → `Config` (checked, paths resolved, secrets
//! read). Every problem is collected and reported at once; all of them are fatal.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Trust;
use crate::format::Limits;
use crate::oauth::preset::{self, Protocol, Provider};
use crate::schedule::{Schedule, parse_duration};
use crate::store::Location;

/// The folder of the embedded default (no config file).
pub const DEFAULT_DATA_DIR: &str = "eingang-data";
const DEFAULT_SETTLE: &str = "2s";
const DEFAULT_RESCAN: &str = "30s";
/// An FTP source polls: without a `schedule` it lists its inbox every minute.
const DEFAULT_FTP_SCHEDULE: &str = "every 1m";
/// Uploads over slow links pause longer than local writes, so FTP waits longer by default.
const DEFAULT_FTP_SETTLE: &str = "10s";

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    formats: Option<String>,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    source: Vec<RawSource>,
    notify: Option<RawNotify>,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    connector: Vec<crate::connector::RawConnector>,
    http: Option<crate::web::settings::RawHttp>,
    cxml: Option<crate::cxml_http::settings::RawCxml>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDns {
    server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawStore {
    path: Option<String>,
    url: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    password: Option<String>,
    ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLimits {
    max_item_mib: Option<u64>,
    max_inflated_mib: Option<u64>,
    max_xml_depth: Option<usize>,
    max_rows: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSource {
    name: Option<String>,
    kind: Option<String>,
    path: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<String>,
    ca_file: Option<String>,
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    password: Option<String>,
    inbox: Option<String>,
    archive: Option<String>,
    error: Option<String>,
    schedule: Option<String>,
    notify: Option<Vec<String>>,
    supplier: Option<String>,
    settle: Option<String>,
    rescan: Option<String>,
    auth: Option<String>,
    provider: Option<String>,
    oauth_tenant: Option<String>,
    oauth_token_url: Option<String>,
    oauth_device_url: Option<String>,
    oauth_client_id: Option<String>,
    oauth_client_secret_env: Option<String>,
    oauth_client_secret_file: Option<String>,
    oauth_scope: Option<String>,
    oauth_grant: Option<String>,
    oauth_refresh_token_env: Option<String>,
    oauth_refresh_token_file: Option<String>,
    oauth_mechanism: Option<String>,
    trusted_authserv_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawNotify {
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    tls: Option<String>,
    user: Option<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    password: Option<String>,
    from: Option<String>,
    #[serde(default)]
    admins: Vec<String>,
    language: Option<String>,
    ca_file: Option<String>,
    down_after: Option<String>,
    burst: Option<u32>,
    auth: Option<String>,
    provider: Option<String>,
    oauth_tenant: Option<String>,
    oauth_token_url: Option<String>,
    oauth_device_url: Option<String>,
    oauth_client_id: Option<String>,
    oauth_client_secret_env: Option<String>,
    oauth_client_secret_file: Option<String>,
    oauth_scope: Option<String>,
    oauth_grant: Option<String>,
    oauth_refresh_token_env: Option<String>,
    oauth_refresh_token_file: Option<String>,
    oauth_mechanism: Option<String>,
}

/// How people run this eingang with the config it uses: `eingang --config /etc/…/eingang.toml`,
/// or `eingang` for `./eingang.toml`'s folder or the embedded default. Every command line
/// eingang prints for people to run (`eingang reprocess 7` in a note or a notice) starts with
/// it, so that it reaches the same store from any folder.
static INVOCATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The command line that reaches this config (see `INVOCATION`), `eingang` until it is set.
pub fn invocation() -> &'static str {
    INVOCATION.get().map_or("eingang", String::as_str)
}

/// Sets the command line that reaches this config, once per process.
pub fn set_invocation(config_file: Option<&Path>) {
    let line = match config_file {
        Some(path) => {
            let shown = path.display().to_string();
            let safe = shown
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c));
            if safe {
                format!("eingang --config {shown}")
            } else {
                format!("eingang --config '{}'", shown.replace('\'', "'\\''"))
            }
        }
        None => "eingang".to_owned(),
    };
    let _ = INVOCATION.set(line);
}

/// A password; its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value (a password, a client secret, a token).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The password itself, for the login call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The folder of supplier format modules.
    pub formats: PathBuf,
    /// Where the store lives: a SQLite file, or a PostgreSQL database.
    pub store: Location,
    /// Size, depth and row limits (the spreadsheet child is filled in by the binary).
    pub max_item_bytes: u64,
    /// See `Limits::max_inflated_bytes`.
    pub max_inflated_bytes: u64,
    /// See `Limits::max_xml_depth`.
    pub max_xml_depth: usize,
    /// See `Limits::max_rows`.
    pub max_rows: usize,
    /// Every source, in file order.
    pub sources: Vec<SourceConfig>,
    /// Where failure notices go; `None` means log only.
    pub notify: Option<NotifyConfig>,
    /// `[dns] server`: the resolver for eingang's own DKIM and DMARC look-ups; `None` means
    /// the system's (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
    /// Every `[[connector]]` (the ERP hand-off), in file order.
    pub connectors: Vec<crate::connector::ConnectorConfig>,
    /// `[http]`: the admin page; `None` means no listener.
    pub http: Option<crate::web::settings::HttpConfig>,
    /// `[cxml]`: the cXML receiver and its partners; `None` means no listener.
    pub cxml: Option<crate::cxml_http::settings::CxmlConfig>,
}

/// One `[[source]]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The source's name, as shown in status and notices.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// The source's own staff group (instead of the admins), possibly empty.
    pub notify: Vec<String>,
    /// A supplier every table file of this source belongs to.
    pub supplier: Option<String>,
    /// Which `Authentication-Results` header of its mail eingang believes
    /// (`trusted_authserv_id`, IMAP only); `Trust::Nothing` for every other source.
    pub trust: Trust,
    /// Kind-specific settings.
    pub kind: SourceKind,
}

/// What kind of source, with its settings.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// A local drop folder.
    Dir(DirConfig),
    /// A folder on an FTP/FTPS server.
    Ftp(FtpConfig),
    /// An IMAP mailbox: server, login and the three folders (`/`-separated paths).
    Imap(RemoteConfig),
}

impl SourceKind {
    /// `dir`, `ftp` or `imap`, as the config writes it.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Dir(_) => "dir",
            SourceKind::Ftp(_) => "ftp",
            SourceKind::Imap(_) => "imap",
        }
    }
}

/// A drop folder and its archive and error folders.
#[derive(Debug, Clone)]
pub struct DirConfig {
    /// The inbox folder.
    pub inbox: PathBuf,
    /// Where imported files go.
    pub archive: PathBuf,
    /// Where rejected files go, each with `<name>.error.txt`.
    pub error: PathBuf,
    /// How long size and mtime must stay unchanged before a file is taken.
    pub settle: Duration,
    /// How often the folder is listed even without events (events can be lost).
    pub rescan: Duration,
}

/// An FTP/FTPS server with its three folders, and the settle time between the two listings
/// that must show a file at the same size before it is taken.
#[derive(Debug, Clone)]
pub struct FtpConfig {
    /// The server, login and folders.
    pub remote: RemoteConfig,
    /// The gap between the two listings (default 10 s).
    pub settle: Duration,
}

/// How a remote source or the SMTP server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (IMAP 993, FTPS 990, SMTP 465).
    Implicit,
    /// IMAP/SMTP STARTTLS, required: no login if the upgrade is refused or stripped.
    StartTls,
    /// FTP `AUTH TLS` on the control port, data channels protected too (`PROT P`).
    Explicit,
    /// Plaintext, allowed only to loopback hosts.
    None,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::StartTls => "STARTTLS",
            TlsMode::Explicit => "explicit TLS",
            TlsMode::None => "no TLS",
        })
    }
}

/// An IMAP or FTP server with its three folders.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The server's host name (also the name its certificate must carry).
    pub host: String,
    /// The port (default by kind and `tls`).
    pub port: u16,
    /// How TLS is used.
    pub tls: TlsMode,
    /// An extra trust anchor, e.g. a self-signed server's CA.
    pub ca_file: Option<PathBuf>,
    /// The login name.
    pub user: String,
    /// The password (empty with `oauth`, which logs in instead).
    pub password: Secret,
    /// `auth = "oauth2"` (IMAP only): log in with an access token instead of the password.
    pub oauth: Option<Arc<OAuth2Config>>,
    /// The folder that is the queue (`/`-separated for IMAP; a path for FTP).
    pub inbox: String,
    /// Where imported items go.
    pub archive: String,
    /// Where rejected items go.
    pub error: String,
}

/// The `[notify]` section.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// SMTP server host.
    pub smtp_host: String,
    /// SMTP port (default 587, 465 for implicit TLS).
    pub smtp_port: u16,
    /// `StartTls`, `Implicit` or `None`.
    pub tls: TlsMode,
    /// An extra trust anchor for the SMTP server.
    pub ca_file: Option<PathBuf>,
    /// The AUTH login, if the server wants one.
    pub user: Option<String>,
    /// Its password (`None` with `oauth`).
    pub password: Option<Secret>,
    /// `auth = "oauth2"`: AUTH with an access token instead of the password.
    pub oauth: Option<Arc<OAuth2Config>>,
    /// The sender address.
    pub from: String,
    /// The admin group.
    pub admins: Vec<String>,
    /// `de` (default) or `en`.
    pub language: String,
    /// A source failing this long gets one "down" notice (default 15 min).
    pub down_after: Duration,
    /// More rejections than this within 5 minutes become one summary (default 10).
    pub burst: u32,
}

/// An OAuth2 login (`auth = "oauth2"`) of an IMAP source or `[notify]`, checked: the token
/// endpoint, the client, the grant and where refresh tokens are kept. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct OAuth2Config {
    /// The name `eingang oauth login` takes: the source's name, or `notify`.
    pub login: String,
    /// The mailbox user named in the SASL exchange (and part of the account's key).
    pub user: String,
    /// The token endpoint (https, or http to a loopback host).
    pub token_url: String,
    /// The device authorization endpoint (RFC 8628), for `eingang oauth login`.
    pub device_url: Option<String>,
    /// The client (application) id.
    pub client_id: String,
    /// The client secret; `None` for a public client.
    pub client_secret: Option<Secret>,
    /// The scope asked for, space-separated; may be empty.
    pub scope: String,
    /// How tokens are got.
    pub grant: Grant,
    /// A refresh token given in the config (`oauth_refresh_token_env` / `_file`); the store's
    /// rotated one takes over from it.
    pub refresh_token: Option<Secret>,
    /// The SASL mechanism; `None`: XOAUTH2, or OAUTHBEARER where an IMAP server offers only that.
    pub mechanism: Option<SaslMechanism>,
    /// An extra trust anchor (the login's `ca_file`), also for the token endpoint.
    pub ca_file: Option<PathBuf>,
    /// The store, where refresh tokens are kept.
    pub store: Location,
}

/// `oauth_grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// App-only access with the client's own credentials (RFC 6749 §4.4).
    ClientCredentials,
    /// Delegated access with a refresh token from `eingang oauth login` (RFC 6749 §6).
    RefreshToken,
}

impl Grant {
    /// The grant as the config writes it.
    pub fn name(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken => "refresh_token",
        }
    }
}

/// `oauth_mechanism`: how the access token is presented to the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// Google's and Microsoft's XOAUTH2.
    XOAuth2,
    /// RFC 7628 OAUTHBEARER.
    OAuthBearer,
}

impl SaslMechanism {
    /// The SASL name (`XOAUTH2`, `OAUTHBEARER`).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::XOAuth2 => "XOAUTH2",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl Config {
    /// Reads and checks a config file; relative paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("config: {}: {e}", path.display())])?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::from_text(&text, &base, &path.display().to_string())
    }

    /// Reads and checks a config's text; `shown` names it in problems (its path).
    pub fn from_text(text: &str, base: &Path, shown: &str) -> Result<Config, Vec<String>> {
        let syntax = |e: &dyn std::fmt::Display| {
            vec![format!("config: {shown}: {}", one_line(&e.to_string()))]
        };
        let de = toml::Deserializer::parse(text).map_err(|e| syntax(&e))?;
        // Every key eingang does not know is a mistake worth a line: all of them at once.
        let mut unknown = Vec::new();
        let raw: Result<RawConfig, _> =
            serde_ignored::deserialize(de, |key| unknown.push(key.to_string()));
        let mut problems: Vec<String> = unknown
            .iter()
            .map(|key| format!("config: {shown}: unknown key `{key}`"))
            .collect();
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                problems.extend(syntax(&e));
                return Err(problems);
            }
        };
        match Config::from_raw(raw, base) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }

    /// The embedded default: the drop folder `./eingang-data/Eingang` with `Archiv` and
    /// `Fehler` beside it, the store `./eingang-data/eingang.db`, formats from `./formats`.
    pub fn embedded_default() -> Config {
        let data = PathBuf::from(DEFAULT_DATA_DIR);
        let raw = RawConfig {
            formats: Some("formats".into()),
            store: RawStore {
                path: Some(data.join("eingang.db").display().to_string()),
                ..RawStore::default()
            },
            source: vec![RawSource {
                name: Some("drop".into()),
                kind: Some("dir".into()),
                path: Some(data.join("Eingang").display().to_string()),
                archive: Some(data.join("Archiv").display().to_string()),
                error: Some(data.join("Fehler").display().to_string()),
                ..RawSource::default()
            }],
            ..RawConfig::default()
        };
        Config::from_raw(raw, Path::new("")).expect("the embedded default config is valid")
    }

    /// Checks a raw config; `base` is the folder relative paths start from.
    pub fn from_raw(raw: RawConfig, base: &Path) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        let resolve = |p: &str| base.join(p);
        let store = check_store(&raw.store, &resolve, &mut problems);
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        for (i, source) in raw.source.into_iter().enumerate() {
            let label = format!(
                "config: source[{i}] {:?}",
                source.name.as_deref().unwrap_or("")
            );
            match check_source(source, &resolve, &store) {
                Ok(s) => {
                    if !names.insert(s.name.clone()) {
                        problems.push(format!("{label}: the name is used twice"));
                    }
                    sources.push(s);
                }
                Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{label}: {e}"))),
            }
        }
        let notify = match raw
            .notify
            .map(|n| check_notify(n, &resolve, &store))
            .transpose()
        {
            Ok(n) => n,
            Err(errs) => {
                problems.extend(errs.into_iter().map(|e| format!("config: notify: {e}")));
                None
            }
        };
        let dns_server = match raw.dns.server.as_deref().map(dns_server).transpose() {
            Ok(server) => server,
            Err(e) => {
                problems.push(format!("config: dns: {e}"));
                None
            }
        };
        let connectors =
            crate::connector::config::check_all(raw.connector, &resolve, &mut problems);
        let http = match raw.http.map(|h| crate::web::settings::check(h, &resolve)) {
            Some(Ok(http)) => Some(http),
            Some(Err(errs)) => {
                problems.extend(errs.into_iter().map(|e| format!("config: http: {e}")));
                None
            }
            None => None,
        };
        let source_names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        let cxml = match raw
            .cxml
            .map(|c| crate::cxml_http::settings::check(c, &resolve, &source_names))
        {
            Some(Ok(cxml)) => Some(cxml),
            Some(Err(errs)) => {
                problems.extend(errs.into_iter().map(|e| format!("config: cxml: {e}")));
                None
            }
            None => None,
        };
        let limits = raw.limits;
        for (key, zero) in [
            ("max_item_mib", limits.max_item_mib == Some(0)),
            ("max_inflated_mib", limits.max_inflated_mib == Some(0)),
            ("max_xml_depth", limits.max_xml_depth == Some(0)),
            ("max_rows", limits.max_rows == Some(0)),
        ] {
            if zero {
                problems.push(format!("config: limits: {key} must be greater than zero"));
            }
        }
        if notify.as_ref().is_some_and(|n| n.oauth.is_some())
            && sources.iter().any(|s| s.name == NOTIFY_LOGIN)
        {
            problems.push(format!(
                "config: a source is named {NOTIFY_LOGIN:?}, the name `eingang oauth login` takes for [notify]: rename the source"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let defaults = Limits::with_defaults(PathBuf::new());
        let mib = |v: Option<u64>, d: u64| v.map_or(d, |m| m.saturating_mul(1024 * 1024));
        Ok(Config {
            formats: resolve(raw.formats.as_deref().unwrap_or("formats")),
            store,
            max_item_bytes: mib(limits.max_item_mib, defaults.max_item_bytes),
            max_inflated_bytes: mib(limits.max_inflated_mib, defaults.max_inflated_bytes),
            max_xml_depth: limits.max_xml_depth.unwrap_or(defaults.max_xml_depth),
            max_rows: limits.max_rows.unwrap_or(defaults.max_rows),
            sources,
            notify,
            dns_server,
            connectors,
            http,
            cxml,
        })
    }

    /// The parse limits, with `sheet_reader` as the spreadsheet child.
    pub fn limits(&self, sheet_reader: PathBuf) -> Limits {
        Limits {
            max_item_bytes: self.max_item_bytes,
            max_inflated_bytes: self.max_inflated_bytes,
            max_xml_depth: self.max_xml_depth,
            max_rows: self.max_rows,
            ..Limits::with_defaults(sheet_reader)
        }
    }

    /// The source with this name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// `[dns] server`: `IP:PORT` (`127.0.0.1:53`, `[::1]:5353`), or a bare IP for port 53. No host
/// name: resolving it would need the DNS this setting is about.
fn dns_server(text: &str) -> Result<SocketAddr, String> {
    let trimmed = text.trim();
    let addr = trimmed
        .parse::<SocketAddr>()
        .or_else(|_| trimmed.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
    match addr {
        Ok(addr) if addr.port() == 0 => Err(format!("server {text:?}: port 0 is not a port")),
        Ok(addr) => Ok(addr),
        Err(_) => Err(format!(
            "server {text:?}: not an IP:PORT address (e.g. \"127.0.0.1:53\" or \"[::1]:5353\")"
        )),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_source(
    raw: RawSource,
    resolve: &dyn Fn(&str) -> PathBuf,
    store: &Location,
) -> Result<SourceConfig, Vec<String>> {
    let mut problems = Vec::new();
    let name = raw.name.clone().filter(|n| !n.trim().is_empty());
    if name.is_none() {
        problems.push("`name` is required".to_owned());
    }
    let is_ftp = raw.kind.as_deref() == Some("ftp");
    let default_schedule = if is_ftp { DEFAULT_FTP_SCHEDULE } else { "idle" };
    let schedule = match Schedule::parse(raw.schedule.as_deref().unwrap_or(default_schedule)) {
        Ok(Schedule::Idle) if is_ftp => {
            problems.push(
                "schedule \"idle\" needs server push; an ftp source polls: use e.g. \"every 5m\""
                    .to_owned(),
            );
            Schedule::Idle
        }
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("schedule: {e}"));
            Schedule::Idle
        }
    };
    let kind = match raw.kind.as_deref() {
        Some("dir") => check_dir(&raw, resolve, &mut problems),
        Some("ftp") => check_ftp(&raw, resolve, store, &mut problems),
        Some("imap") => {
            check_remote("imap", &raw, resolve, store, &mut problems).map(SourceKind::Imap)
        }
        Some(other) => {
            problems.push(format!("unknown kind {other:?}: use imap, ftp or dir"));
            None
        }
        None => {
            problems.push("`kind` is required: imap, ftp or dir".to_owned());
            None
        }
    };
    check_addresses(
        "notify",
        raw.notify.as_deref().unwrap_or_default(),
        &mut problems,
    );
    let trust = match (raw.kind.as_deref(), raw.trusted_authserv_id.as_deref()) {
        (Some("imap"), setting) => Trust::from_setting(setting).unwrap_or_else(|e| {
            problems.push(e);
            Trust::Nothing
        }),
        (Some(kind @ ("dir" | "ftp")), Some(_)) => {
            let article = if kind == "ftp" { "an" } else { "a" };
            problems.push(format!(
                "`trusted_authserv_id` applies only to an imap source: {article} {kind} source's \
                 files carry no receiving mail server's verdict"
            ));
            Trust::Nothing
        }
        _ => Trust::Nothing,
    };
    match (name, kind) {
        (Some(name), Some(kind)) if problems.is_empty() => Ok(SourceConfig {
            name,
            schedule,
            notify: raw.notify.unwrap_or_default(),
            supplier: raw.supplier,
            trust,
            kind,
        }),
        _ => Err(problems),
    }
}

fn check_dir(
    raw: &RawSource,
    resolve: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    let inbox = raw.path.as_deref().or(raw.inbox.as_deref());
    let Some(inbox) = inbox else {
        problems.push("`path` (the drop folder) is required for a dir source".to_owned());
        return None;
    };
    let inbox = resolve(inbox);
    let sibling = |key: &Option<String>, default: &str| match key {
        Some(p) => resolve(p),
        None => inbox.parent().unwrap_or(Path::new("")).join(default),
    };
    let archive = sibling(&raw.archive, "Archiv");
    let error = sibling(&raw.error, "Fehler");
    for (key, path) in [("archive", &archive), ("error", &error)] {
        if path == &inbox {
            problems.push(format!("`{key}` must not be the drop folder itself"));
        }
    }
    let remote_keys = [
        ("host", raw.host.is_some()),
        ("port", raw.port.is_some()),
        ("tls", raw.tls.is_some()),
        ("user", raw.user.is_some()),
        ("ca_file", raw.ca_file.is_some()),
    ];
    for (key, _) in remote_keys.iter().filter(|(_, set)| *set) {
        problems.push(format!("`{key}` does not apply to a dir source"));
    }
    if let Some(key) = raw.oauth().first_key() {
        problems.push(format!("`{key}` does not apply to a dir source"));
    }
    let duration =
        |key: &str, value: &Option<String>, default: &str, problems: &mut Vec<String>| {
            parse_duration(value.as_deref().unwrap_or(default)).unwrap_or_else(|e| {
                problems.push(format!("{key}: {e}"));
                Duration::from_secs(1)
            })
        };
    let settle = duration("settle", &raw.settle, DEFAULT_SETTLE, problems);
    let rescan = duration("rescan", &raw.rescan, DEFAULT_RESCAN, problems);
    Some(SourceKind::Dir(DirConfig {
        inbox,
        archive,
        error,
        settle,
        rescan,
    }))
}

fn check_ftp(
    raw: &RawSource,
    resolve: &dyn Fn(&str) -> PathBuf,
    store: &Location,
    problems: &mut Vec<String>,
) -> Option<SourceKind> {
    let settle = parse_duration(raw.settle.as_deref().unwrap_or(DEFAULT_FTP_SETTLE))
        .map_err(|e| problems.push(format!("settle: {e}")))
        .ok();
    let remote = check_remote("ftp", raw, resolve, store, problems)?;
    Some(SourceKind::Ftp(FtpConfig {
        remote,
        settle: settle?,
    }))
}

/// Checks an IMAP or FTP source: host, folders, TLS mode and port, the loopback rule for
/// plaintext, the `ca_file`, and exactly one password source, or (IMAP) an OAuth2 login with
/// its provider's defaults.
pub fn check_remote(
    raw_kind: &str,
    raw: &RawSource,
    resolve: &dyn Fn(&str) -> PathBuf,
    store: &Location,
    problems: &mut Vec<String>,
) -> Option<RemoteConfig> {
    let before = problems.len();
    let keys = raw.oauth();
    let ca_file = raw.ca_file.as_deref().map(resolve);
    let login = if raw_kind == "imap" {
        check_login(
            &keys,
            Protocol::Imap,
            raw.name.as_deref().unwrap_or_default(),
            raw.user.as_deref().unwrap_or_default(),
            &ca_file,
            store,
            resolve,
            problems,
        )
    } else {
        if let Some(key) = keys.first_key() {
            problems.push(format!(
                "`{key}` does not apply to an {raw_kind} source (OAuth2 is for imap sources and [notify])"
            ));
        }
        CheckedLogin::default()
    };
    let preset = login.preset.as_ref();
    let (default_tls, allowed): (&str, &[&str]) = match raw_kind {
        "imap" => ("implicit", &["implicit", "starttls", "none"]),
        _ => ("explicit", &["explicit", "implicit", "none"]),
    };
    let tls_text = raw
        .tls
        .as_deref()
        .or(preset.map(|p| p.tls))
        .unwrap_or(default_tls);
    let tls = match tls_text {
        t if !allowed.contains(&t) => {
            problems.push(format!(
                "unknown tls {t:?} for {raw_kind}: use {}",
                allowed.join(", ")
            ));
            TlsMode::None
        }
        "implicit" => TlsMode::Implicit,
        "starttls" => TlsMode::StartTls,
        "explicit" => TlsMode::Explicit,
        _ => TlsMode::None,
    };
    let host = raw
        .host
        .clone()
        .or(preset.map(|p| p.host.to_owned()))
        .unwrap_or_default();
    if host.is_empty() {
        if !login.has_provider {
            problems.push("`host` is required".to_owned());
        }
    } else if tls == TlsMode::None && !is_loopback(&host) {
        problems.push("tls = \"none\" is allowed only for loopback hosts".to_owned());
    }
    let user = raw.user.clone().unwrap_or_default();
    if user.is_empty() {
        problems.push("`user` is required".to_owned());
    }
    for (key, value) in [
        ("inbox", &raw.inbox),
        ("archive", &raw.archive),
        ("error", &raw.error),
    ] {
        if value.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("`{key}` is required"));
        }
    }
    if raw.inbox.is_some() && (raw.inbox == raw.archive || raw.inbox == raw.error) {
        problems.push("`archive` and `error` must differ from `inbox`".to_owned());
    }
    if raw.port == Some(0) {
        problems.push("`port` must not be 0".to_owned());
    }
    if let Some(ca) = ca_file.as_ref().filter(|ca| !ca.is_file()) {
        problems.push(format!("ca_file {}: no such file", ca.display()));
    }
    for (key, set) in [
        ("path", raw.path.is_some()),
        ("settle", raw.settle.is_some() && raw_kind == "imap"),
        ("rescan", raw.rescan.is_some()),
    ] {
        if set {
            problems.push(format!("`{key}` does not apply to an {raw_kind} source"));
        }
    }
    let password = if login.is_oauth {
        refuse_password_keys(
            &raw.password_env,
            &raw.password_file,
            &raw.password,
            problems,
        );
        Some(Secret(String::new()))
    } else {
        read_secret(
            "password",
            &raw.password_env,
            &raw.password_file,
            &raw.password,
            resolve,
        )
        .map_err(|e| problems.push(e))
        .ok()
    };
    // A provider's port goes with its TLS mode: an explicit `tls` picks the usual port for it.
    let preset_port = preset.filter(|_| raw.tls.is_none()).map(|p| p.port);
    let port = raw.port.or(preset_port).unwrap_or(match (raw_kind, tls) {
        ("imap", TlsMode::Implicit) => 993,
        ("imap", _) => 143,
        (_, TlsMode::Implicit) => 990,
        _ => 21,
    });
    if problems.len() > before {
        return None;
    }
    Some(RemoteConfig {
        host,
        port,
        tls,
        ca_file,
        user,
        password: password?,
        oauth: login.oauth.map(Arc::new),
        inbox: raw.inbox.clone().unwrap_or_default(),
        archive: raw.archive.clone().unwrap_or_default(),
        error: raw.error.clone().unwrap_or_default(),
    })
}

fn check_notify(
    raw: RawNotify,
    resolve: &dyn Fn(&str) -> PathBuf,
    store: &Location,
) -> Result<NotifyConfig, Vec<String>> {
    let mut problems = Vec::new();
    let ca_file = raw.ca_file.as_deref().map(resolve);
    let login = check_login(
        &raw.oauth(),
        Protocol::Smtp,
        NOTIFY_LOGIN,
        raw.user.as_deref().unwrap_or_default(),
        &ca_file,
        store,
        resolve,
        &mut problems,
    );
    if login.is_oauth && raw.user.as_deref().is_none_or(str::is_empty) {
        problems.push("`user` is required with auth = \"oauth2\"".to_owned());
    }
    let preset = login.preset.as_ref();
    let tls = match raw
        .tls
        .as_deref()
        .or(preset.map(|p| p.tls))
        .unwrap_or("starttls")
    {
        "starttls" => TlsMode::StartTls,
        "implicit" => TlsMode::Implicit,
        "none" => TlsMode::None,
        other => {
            problems.push(format!(
                "unknown tls {other:?}: use starttls, implicit or none"
            ));
            TlsMode::None
        }
    };
    let host = raw
        .smtp_host
        .clone()
        .or(preset.map(|p| p.host.to_owned()))
        .unwrap_or_default();
    if host.is_empty() {
        if !login.has_provider {
            problems.push("`smtp_host` is required".to_owned());
        }
    } else if tls == TlsMode::None && !is_loopback(&host) {
        problems.push("tls = \"none\" is allowed only for loopback hosts".to_owned());
    }
    match raw.from.as_deref() {
        None => problems.push("`from` is required: the sender address of the notices".to_owned()),
        Some(from) if from.parse::<lettre::message::Mailbox>().is_err() => {
            problems.push(format!("from {from:?} is not an e-mail address"))
        }
        Some(_) => {}
    }
    if raw.admins.is_empty() {
        problems.push("`admins` needs at least one address".to_owned());
    }
    check_addresses("admins", &raw.admins, &mut problems);
    let language = raw.language.clone().unwrap_or_else(|| "de".to_owned());
    if !matches!(language.as_str(), "de" | "en") {
        problems.push(format!("unknown language {language:?}: use de or en"));
    }
    if let Some(ca) = ca_file.as_ref().filter(|ca| !ca.is_file()) {
        problems.push(format!("ca_file {}: no such file", ca.display()));
    }
    let down_after = parse_duration(raw.down_after.as_deref().unwrap_or("15m"))
        .map_err(|e| problems.push(format!("down_after: {e}")))
        .unwrap_or_default();
    if raw.burst == Some(0) {
        problems.push("`burst` must be at least 1".to_owned());
    }
    let password = match &raw.user {
        _ if login.is_oauth => {
            refuse_password_keys(
                &raw.password_env,
                &raw.password_file,
                &raw.password,
                &mut problems,
            );
            None
        }
        Some(_) => read_secret(
            "password",
            &raw.password_env,
            &raw.password_file,
            &raw.password,
            resolve,
        )
        .map_err(|e| problems.push(e))
        .ok(),
        None => None,
    };
    let preset_port = preset.filter(|_| raw.tls.is_none()).map(|p| p.port);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(NotifyConfig {
        smtp_host: host,
        smtp_port: raw
            .smtp_port
            .or(preset_port)
            .unwrap_or(if tls == TlsMode::Implicit { 465 } else { 587 }),
        tls,
        ca_file,
        user: raw.user,
        password,
        oauth: login.oauth.map(Arc::new),
        from: raw.from.unwrap_or_default(),
        admins: raw.admins,
        language,
        down_after,
        burst: raw.burst.unwrap_or(10),
    })
}

/// The name `eingang oauth login` takes for the `[notify]` login.
pub const NOTIFY_LOGIN: &str = "notify";

/// The OAuth2 keys of an IMAP source or `[notify]`, as written.
struct RawOAuth<'a> {
    auth: Option<&'a str>,
    provider: Option<&'a str>,
    tenant: Option<&'a str>,
    token_url: Option<&'a str>,
    device_url: Option<&'a str>,
    client_id: Option<&'a str>,
    client_secret_env: &'a Option<String>,
    client_secret_file: &'a Option<String>,
    scope: Option<&'a str>,
    grant: Option<&'a str>,
    refresh_token_env: &'a Option<String>,
    refresh_token_file: &'a Option<String>,
    mechanism: Option<&'a str>,
}

macro_rules! raw_oauth {
    ($raw:expr) => {
        RawOAuth {
            auth: $raw.auth.as_deref(),
            provider: $raw.provider.as_deref(),
            tenant: $raw.oauth_tenant.as_deref(),
            token_url: $raw.oauth_token_url.as_deref(),
            device_url: $raw.oauth_device_url.as_deref(),
            client_id: $raw.oauth_client_id.as_deref(),
            client_secret_env: &$raw.oauth_client_secret_env,
            client_secret_file: &$raw.oauth_client_secret_file,
            scope: $raw.oauth_scope.as_deref(),
            grant: $raw.oauth_grant.as_deref(),
            refresh_token_env: &$raw.oauth_refresh_token_env,
            refresh_token_file: &$raw.oauth_refresh_token_file,
            mechanism: $raw.oauth_mechanism.as_deref(),
        }
    };
}

impl RawSource {
    fn oauth(&self) -> RawOAuth<'_> {
        raw_oauth!(self)
    }
}

impl RawNotify {
    fn oauth(&self) -> RawOAuth<'_> {
        raw_oauth!(self)
    }
}

impl RawOAuth<'_> {
    /// The OAuth2 keys that are set, by name.
    fn set_keys(&self) -> Vec<&'static str> {
        [
            ("provider", self.provider.is_some()),
            ("oauth_tenant", self.tenant.is_some()),
            ("oauth_token_url", self.token_url.is_some()),
            ("oauth_device_url", self.device_url.is_some()),
            ("oauth_client_id", self.client_id.is_some()),
            ("oauth_client_secret_env", self.client_secret_env.is_some()),
            (
                "oauth_client_secret_file",
                self.client_secret_file.is_some(),
            ),
            ("oauth_scope", self.scope.is_some()),
            ("oauth_grant", self.grant.is_some()),
            ("oauth_refresh_token_env", self.refresh_token_env.is_some()),
            (
                "oauth_refresh_token_file",
                self.refresh_token_file.is_some(),
            ),
            ("oauth_mechanism", self.mechanism.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(key, _)| key)
        .collect()
    }

    /// The first key that only a mailbox login takes (`auth` included), if any is set.
    fn first_key(&self) -> Option<&'static str> {
        if self.auth.is_some() {
            return Some("auth");
        }
        self.set_keys().first().copied()
    }
}

/// What the login keys of an IMAP source or `[notify]` came to.
#[derive(Default)]
struct CheckedLogin {
    /// `auth = "oauth2"` (or a provider) was asked for, whatever its keys came to: no password.
    is_oauth: bool,
    /// A provider was named; when its defaults could not be made, that was the problem
    /// reported, not each key it would have filled.
    has_provider: bool,
    /// `auth = "oauth2"`, checked.
    oauth: Option<OAuth2Config>,
    /// The provider's server, filling in host, port and tls where the config leaves them out.
    preset: Option<crate::oauth::preset::Server>,
}

/// Checks `auth`, `provider` and the `oauth_*` keys of one login. `login` is the name
/// `eingang oauth login` takes for it, `user` its login name.
#[allow(clippy::too_many_arguments)]
fn check_login(
    keys: &RawOAuth<'_>,
    protocol: Protocol,
    login: &str,
    user: &str,
    ca_file: &Option<PathBuf>,
    store: &Location,
    resolve: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> CheckedLogin {
    let provider = match keys.provider {
        None => None,
        Some(name) => match Provider::parse(name) {
            Some(p) => Some(p),
            None => {
                problems.push(format!(
                    "unknown provider {name:?}: use microsoft365 or gmail"
                ));
                return CheckedLogin::default();
            }
        },
    };
    // Both providers refuse passwords for IMAP and SMTP, so a provider means OAuth2.
    let is_oauth = match keys.auth {
        None => provider.is_some(),
        Some("oauth2") => true,
        Some("password") if provider.is_some() => {
            problems.push(format!(
                "provider {:?} needs auth = \"oauth2\": it refuses password logins",
                keys.provider.unwrap_or_default()
            ));
            return CheckedLogin::default();
        }
        Some("password") => false,
        Some(other) => {
            problems.push(format!("unknown auth {other:?}: use password or oauth2"));
            return CheckedLogin::default();
        }
    };
    if !is_oauth {
        for key in keys.set_keys() {
            problems.push(format!("`{key}` needs auth = \"oauth2\""));
        }
        return CheckedLogin::default();
    }
    let before = problems.len();
    let failed = |preset| CheckedLogin {
        is_oauth: true,
        has_provider: provider.is_some(),
        oauth: None,
        preset,
    };
    let grant = match keys.grant.unwrap_or("refresh_token") {
        "refresh_token" => Grant::RefreshToken,
        "client_credentials" => Grant::ClientCredentials,
        other => {
            problems.push(format!(
                "unknown oauth_grant {other:?}: use refresh_token or client_credentials"
            ));
            Grant::RefreshToken
        }
    };
    let defaults = match provider {
        Some(p) => match preset::defaults(p, protocol, grant, keys.tenant) {
            Ok(d) => Some(d),
            Err(why) => {
                problems.push(why);
                return failed(None);
            }
        },
        None => {
            if keys.tenant.is_some() {
                problems.push("`oauth_tenant` needs provider = \"microsoft365\"".to_owned());
            }
            None
        }
    };
    let url = |key: &str, value: Option<String>, problems: &mut Vec<String>| {
        let value = value?;
        match check_url(&value) {
            Ok(()) => Some(value),
            Err(why) => {
                problems.push(format!("{key} {value:?}: {why}"));
                None
            }
        }
    };
    let token_url = url(
        "oauth_token_url",
        keys.token_url
            .map(str::to_owned)
            .or(defaults.as_ref().map(|d| d.token_url.clone())),
        problems,
    );
    if token_url.is_none() && keys.token_url.is_none() && defaults.is_none() {
        problems.push("`oauth_token_url` is required (or a provider)".to_owned());
    }
    let device_url = url(
        "oauth_device_url",
        keys.device_url
            .map(str::to_owned)
            .or(defaults.as_ref().and_then(|d| d.device_url.clone())),
        problems,
    );
    let client_id = keys.client_id.unwrap_or_default().trim().to_owned();
    if client_id.is_empty() {
        problems.push("`oauth_client_id` is required with auth = \"oauth2\"".to_owned());
    }
    let client_secret = match (keys.client_secret_env, keys.client_secret_file) {
        (None, None) => None,
        (env, file) => read_secret("oauth_client_secret", env, file, &None, resolve)
            .map_err(|e| problems.push(e))
            .ok(),
    };
    if grant == Grant::ClientCredentials && client_secret.is_none() && problems.len() == before {
        problems.push(
            "oauth_grant = \"client_credentials\" needs oauth_client_secret_env or oauth_client_secret_file"
                .to_owned(),
        );
    }
    let refresh_token = match (keys.refresh_token_env, keys.refresh_token_file) {
        (None, None) => None,
        _ if grant == Grant::ClientCredentials => {
            problems.push(
                "`oauth_refresh_token_env`/`_file` does not apply to oauth_grant = \"client_credentials\""
                    .to_owned(),
            );
            None
        }
        (env, file) => read_secret("oauth_refresh_token", env, file, &None, resolve)
            .map_err(|e| problems.push(e))
            .ok(),
    };
    let mechanism = match keys.mechanism {
        None => None,
        Some("xoauth2") => Some(SaslMechanism::XOAuth2),
        Some("oauthbearer") => Some(SaslMechanism::OAuthBearer),
        Some(other) => {
            problems.push(format!(
                "unknown oauth_mechanism {other:?}: use xoauth2 or oauthbearer"
            ));
            None
        }
    };
    let scope = keys
        .scope
        .map(str::to_owned)
        .or(defaults.as_ref().map(|d| d.scope.to_owned()))
        .unwrap_or_default();
    let server = defaults.as_ref().map(|d| d.server.clone());
    if problems.len() > before {
        return failed(server);
    }
    CheckedLogin {
        is_oauth: true,
        has_provider: provider.is_some(),
        oauth: Some(OAuth2Config {
            login: login.to_owned(),
            user: user.to_owned(),
            token_url: token_url.unwrap_or_default(),
            device_url,
            client_id,
            client_secret,
            scope,
            grant,
            refresh_token,
            mechanism,
            ca_file: ca_file.clone(),
            store: store.clone(),
        }),
        preset: server,
    }
}

/// An endpoint of the identity provider: https, or plain http to a loopback host only (the
/// rule `tls = "none"` follows), since secrets and tokens travel in its bodies.
pub(crate) fn check_url(value: &str) -> Result<(), String> {
    let url = oauth2::url::Url::parse(value).map_err(|e| e.to_string())?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err("plain http is allowed only to loopback hosts: use https".to_owned()),
        other => Err(format!("unsupported scheme {other:?}: use https")),
    }
}

/// Every entry of an address list must be a plain address (the SMTP envelope needs one).
fn check_addresses(key: &str, list: &[String], problems: &mut Vec<String>) {
    for address in list {
        if address.trim().parse::<lettre::Address>().is_err() {
            problems.push(format!("{key}: {address:?} is not an e-mail address"));
        }
    }
}

/// `[store]`: a SQLite `path` (default `eingang.db`), or a PostgreSQL `url` with its password
/// beside it (`password_env`, `password_file` or `password`; none for a trusted login).
fn check_store(
    raw: &RawStore,
    resolve: &dyn Fn(&str) -> PathBuf,
    problems: &mut Vec<String>,
) -> Location {
    let fallback = Location::File(resolve(raw.path.as_deref().unwrap_or("eingang.db")));
    let has_password =
        raw.password_env.is_some() || raw.password_file.is_some() || raw.password.is_some();
    let Some(url) = &raw.url else {
        if raw.ca_file.is_some() {
            problems.push(
                "config: store: ca_file is for a PostgreSQL store over TLS: give url too, or remove it"
                    .to_owned(),
            );
        }
        if has_password {
            problems.push(
                "config: store: a password is for a PostgreSQL store: give url too, or remove it"
                    .to_owned(),
            );
        }
        return fallback;
    };
    if raw.path.is_some() {
        problems.push(
            "config: store: give either path (SQLite) or url (PostgreSQL), not both".to_owned(),
        );
        return fallback;
    }
    let password = if has_password {
        match read_secret(
            "password",
            &raw.password_env,
            &raw.password_file,
            &raw.password,
            resolve,
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("config: store: {e}"));
                return fallback;
            }
        }
    } else {
        None
    };
    let ca_file = raw.ca_file.as_deref().map(resolve);
    match crate::store::Target::new(url, password, ca_file.as_deref()) {
        Ok(target) => Location::Postgres(target),
        Err(e) => {
            problems.push(format!("config: store: {e}"));
            fallback
        }
    }
}

/// Reads a secret given as `<key>_env`, `<key>_file` or (`inline`) `<key>`; exactly one.
pub(crate) fn read_secret(
    key: &str,
    env: &Option<String>,
    file: &Option<String>,
    inline: &Option<String>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Secret, String> {
    match (env, file, inline) {
        (Some(var), None, None) => std::env::var(var)
            .map(Secret)
            .map_err(|_| format!("{key}_env {var} is not set")),
        (None, Some(path), None) => {
            let full = resolve(path);
            warn_if_readable_by_others(&format!("{key}_file"), &full);
            std::fs::read_to_string(&full)
                .map(|s| Secret(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|e| format!("{key}_file {path}: {e}"))
        }
        (None, None, Some(p)) => Ok(Secret(p.clone())),
        (None, None, None) if key == "password" => {
            Err("a password is required: password_env, password_file or password".to_owned())
        }
        (None, None, None) => Err(format!("{key}_env or {key}_file is required")),
        _ if key == "password" => {
            Err("give only one of password_env, password_file and password".to_owned())
        }
        _ => Err(format!("give only one of {key}_env and {key}_file")),
    }
}

/// A secret in a file others can read is a secret no more: said at every start (the daemon's
/// log, `eingang check`), as ssh says it of a private key.
fn warn_if_readable_by_others(key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{key} {} is readable by {} (mode {mode:o}): chmod 600 {}",
                path.display(),
                if mode & 0o007 != 0 {
                    "everyone"
                } else {
                    "its group"
                },
                path.display()
            );
        }
    }
}

/// With `auth = "oauth2"` a password has no use; saying one is a mistake worth a word.
fn refuse_password_keys(
    env: &Option<String>,
    file: &Option<String>,
    inline: &Option<String>,
    problems: &mut Vec<String>,
) {
    for (key, set) in [
        ("password_env", env.is_some()),
        ("password_file", file.is_some()),
        ("password", inline.is_some()),
    ] {
        if set {
            problems.push(format!(
                "`{key}` does not apply with auth = \"oauth2\" (the login uses an access token)"
            ));
        }
    }
}

/// Whether a host name is on this machine (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        Config::from_text(text, Path::new("/etc/eingang"), "eingang.toml")
    }

    #[test]
    fn dir_source_paths_are_relative_to_the_config_file() {
        let c = load(
            "[[source]]\nname = \"drop\"\nkind = \"dir\"\npath = \"drop/eingang\"\narchive = \"drop/archiv\"\nerror = \"drop/fehler\"\n",
        )
        .unwrap();
        let SourceKind::Dir(dir) = &c.sources[0].kind else {
            panic!("a dir source");
        };
        assert_eq!(dir.inbox, Path::new("/etc/eingang/drop/eingang"));
        assert_eq!(dir.settle, Duration::from_secs(2));
        assert_eq!(c.store, Location::File("/etc/eingang/eingang.db".into()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = load(
            "[[source]]\nname = \"a\"\nkind = \"ftp\"\nhost = \"ftp.example.com\"\ntls = \"none\"\n\
             [[source]]\nname = \"b\"\nkind = \"dir\"\nschedule = \"sometimes\"\n",
        )
        .unwrap_err();
        let text = errs.join("\n");
        assert!(
            text.contains("source[0] \"a\": tls = \"none\" is allowed only for loopback hosts"),
            "{text}"
        );
        assert!(
            text.contains("source[0] \"a\": a password is required"),
            "{text}"
        );
        assert!(
            text.contains("source[1] \"b\": schedule: unknown schedule"),
            "{text}"
        );
        assert!(text.contains("source[1] \"b\": `path`"), "{text}");
    }

    const FTP: &str = "[[source]]\nname = \"edi\"\nkind = \"ftp\"\nhost = \"ftp.example.com\"\n\
                       user = \"edi\"\npassword = \"x\"\ninbox = \"/out\"\narchive = \"/archiv\"\nerror = \"/fehler\"\n";

    #[test]
    fn an_ftp_source_polls_every_minute_over_explicit_tls_by_default() {
        let c = load(FTP).unwrap();
        assert_eq!(c.sources[0].schedule, Schedule::parse("every 1m").unwrap());
        let SourceKind::Ftp(ftp) = &c.sources[0].kind else {
            panic!("an ftp source");
        };
        assert_eq!(ftp.remote.tls, TlsMode::Explicit);
        assert_eq!(ftp.remote.port, 21);
        assert_eq!(ftp.settle, Duration::from_secs(10));
        let c = load(&format!("{FTP}tls = \"implicit\"\nsettle = \"3s\"\n")).unwrap();
        let SourceKind::Ftp(ftp) = &c.sources[0].kind else {
            panic!("an ftp source");
        };
        assert_eq!(ftp.remote.port, 990);
        assert_eq!(ftp.settle, Duration::from_secs(3));
    }

    #[test]
    fn an_ftp_source_refuses_idle_and_starttls() {
        let errs = load(&format!("{FTP}schedule = \"idle\"\ntls = \"starttls\"\n"))
            .unwrap_err()
            .join("\n");
        assert!(errs.contains("an ftp source polls"), "{errs}");
        assert!(errs.contains("unknown tls \"starttls\" for ftp"), "{errs}");
    }

    const IMAP: &str = "[[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"imap.example.com\"\n\
                        user = \"lager\"\npassword = \"x\"\ninbox = \"in\"\narchive = \"archiv\"\nerror = \"fehler\"\n";

    #[test]
    fn the_dns_server_is_an_ip_and_port() {
        assert_eq!(load(IMAP).unwrap().dns_server, None);
        for (written, expected) in [
            ("127.0.0.1:5353", "127.0.0.1:5353"),
            ("[::1]:53", "[::1]:53"),
            ("192.0.2.53", "192.0.2.53:53"),
        ] {
            let c = load(&format!("{IMAP}[dns]\nserver = \"{written}\"\n")).unwrap();
            assert_eq!(c.dns_server, Some(expected.parse().unwrap()), "{written}");
        }
        for bad in ["dns.example.com:53", "127.0.0.1:0", "", "127.0.0.1:99999"] {
            let errs = load(&format!("{IMAP}[dns]\nserver = \"{bad}\"\n"))
                .unwrap_err()
                .join("\n");
            assert!(
                errs.starts_with(&format!("config: dns: server {bad:?}: ")),
                "{errs}"
            );
        }
        assert!(load("[dns]\nservers = \"127.0.0.1:53\"\n").is_err());
    }

    #[test]
    fn trusted_authserv_id_belongs_to_imap_sources() {
        let c = load(IMAP).unwrap();
        assert_eq!(c.sources[0].trust, Trust::Nothing);
        let c = load(&format!("{IMAP}trusted_authserv_id = \"mx.example.com\"\n")).unwrap();
        assert_eq!(
            c.sources[0].trust,
            Trust::AuthservId("mx.example.com".into())
        );
        let c = load(&format!("{IMAP}trusted_authserv_id = \"topmost\"\n")).unwrap();
        assert_eq!(c.sources[0].trust, Trust::Topmost);
        let errs = load(&format!("{IMAP}trusted_authserv_id = \"mx example\"\n"))
            .unwrap_err()
            .join("\n");
        assert!(
            errs.starts_with("config: source[0] \"mail\": trusted_authserv_id \"mx example\""),
            "{errs}"
        );
        let errs = load(&format!("{FTP}trusted_authserv_id = \"mx.example.com\"\n"))
            .unwrap_err()
            .join("\n");
        assert_eq!(
            errs,
            "config: source[0] \"edi\": `trusted_authserv_id` applies only to an imap source: \
             an ftp source's files carry no receiving mail server's verdict"
        );
        let dir = "[[source]]\nname = \"drop\"\nkind = \"dir\"\npath = \"in\"\ntrusted_authserv_id = \"topmost\"\n";
        let errs = load(dir).unwrap_err().join("\n");
        assert!(
            errs.contains("applies only to an imap source: a dir source"),
            "{errs}"
        );
    }

    #[test]
    fn a_postgres_store_takes_its_password_beside_the_url_never_in_it() {
        let src = "[[source]]\nname = \"drop\"\nkind = \"dir\"\npath = \"in\"\n";
        let c = load(&format!(
            "[store]\nurl = \"postgres://eingang@127.0.0.1:5432/eingang\"\npassword = \"geheim\"\n{src}"
        ))
        .unwrap();
        let Location::Postgres(target) = &c.store else {
            panic!("a url is a PostgreSQL store: {:?}", c.store);
        };
        assert_eq!(
            c.store.to_string(),
            "postgres://eingang@127.0.0.1:5432/eingang"
        );
        assert!(!format!("{target:?}").contains("geheim"));
        let refused = |text: &str, why: &str| {
            let errs = load(&format!("[store]\n{text}\n{src}"))
                .unwrap_err()
                .join("\n");
            assert!(errs.contains(why), "{text}: {errs}");
        };
        refused(
            "url = \"postgres://eingang:geheim@127.0.0.1/eingang\"",
            "url carries a password",
        );
        refused(
            "url = \"postgres://eingang@127.0.0.1/eingang\"\npath = \"x.db\"",
            "not both",
        );
        refused(
            "password_env = \"X\"",
            "a password is for a PostgreSQL store",
        );
        refused("url = \"mysql:x\"", "not a PostgreSQL URL");
        refused(
            "url = \"postgres://eingang@127.0.0.1/eingang\"\npassword_env = \"EINGANG_NO_SUCH_VAR\"",
            "EINGANG_NO_SUCH_VAR is not set",
        );
        refused(
            "url = \"postgres://eingang@db.example.com/eingang?sslmode=disable\"",
            "eingang reaches it over TLS only",
        );
        refused(
            "ca_file = \"db-ca.pem\"",
            "ca_file is for a PostgreSQL store",
        );
    }

    #[test]
    fn a_postgres_store_on_another_machine_is_reached_over_tls() {
        let src = "[[source]]\nname = \"drop\"\nkind = \"dir\"\npath = \"in\"\n";
        let c = load(&format!(
            "[store]\nurl = \"postgres://eingang@db.example.com:5432/eingang\"\n\
             password_env = \"PATH\"\n{src}"
        ))
        .expect("the CONTRACT's example");
        assert_eq!(
            c.store.to_string(),
            "postgres://eingang@db.example.com:5432/eingang"
        );
        let Location::Postgres(target) = &c.store else {
            panic!("a PostgreSQL store");
        };
        assert!(target.tls(), "TLS for a remote host");
        for (url, tls) in [
            ("postgres://eingang@127.0.0.1/eingang", false),
            ("postgres://eingang@localhost/eingang?sslmode=require", true),
            (
                "postgres://eingang@localhost/eingang?sslmode=verify-full",
                true,
            ),
        ] {
            let c = load(&format!("[store]\nurl = \"{url}\"\n{src}")).unwrap();
            let Location::Postgres(target) = &c.store else {
                panic!("a PostgreSQL store");
            };
            assert_eq!(target.tls(), tls, "{url}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(load("[store]\npth = \"x.db\"\n").is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "***");
    }

    const M365: &str = "[[source]]\nname = \"mail\"\nkind = \"imap\"\nprovider = \"microsoft365\"\n\
                        user = \"lager@contoso.example\"\noauth_client_id = \"app-1\"\n\
                        inbox = \"Eingang\"\narchive = \"Archiv\"\nerror = \"Fehler\"\n";

    fn oauth_of(c: &Config) -> (&RemoteConfig, &OAuth2Config) {
        let SourceKind::Imap(remote) = &c.sources[0].kind else {
            panic!("an imap source");
        };
        (remote, remote.oauth.as_deref().expect("oauth2"))
    }

    #[test]
    fn a_microsoft365_preset_fills_server_endpoints_and_scope() {
        let c = load(M365).unwrap();
        let (remote, oauth) = oauth_of(&c);
        assert_eq!(
            (remote.host.as_str(), remote.port, remote.tls),
            ("outlook.office365.com", 993, TlsMode::Implicit)
        );
        assert_eq!(
            oauth.token_url,
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
        );
        assert_eq!(
            oauth.device_url.as_deref(),
            Some("https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode")
        );
        assert_eq!(
            oauth.scope,
            "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access"
        );
        assert_eq!(oauth.grant, Grant::RefreshToken);
        assert_eq!(oauth.login, "mail");
        assert_eq!(
            oauth.store,
            Location::File("/etc/eingang/eingang.db".into())
        );
        assert!(remote.password.expose().is_empty());
    }

    #[test]
    fn explicit_keys_win_over_the_preset() {
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("EINGANG_TEST_CONFIG_CLIENT_SECRET", "s3cret") };
        let c = load(&format!(
            "{M365}oauth_grant = \"client_credentials\"\noauth_tenant = \"contoso.example\"\n\
             oauth_client_secret_env = \"EINGANG_TEST_CONFIG_CLIENT_SECRET\"\nhost = \"imap.contoso.example\"\n\
             tls = \"starttls\"\noauth_scope = \"custom\"\noauth_mechanism = \"oauthbearer\"\n"
        ))
        .unwrap();
        let (remote, oauth) = oauth_of(&c);
        assert_eq!(
            (remote.host.as_str(), remote.port, remote.tls),
            ("imap.contoso.example", 143, TlsMode::StartTls)
        );
        assert_eq!(oauth.scope, "custom");
        assert!(oauth.token_url.contains("/contoso.example/"));
        assert_eq!(oauth.grant, Grant::ClientCredentials);
        assert_eq!(oauth.mechanism, Some(SaslMechanism::OAuthBearer));
        assert_eq!(
            oauth.client_secret.as_ref().map(Secret::expose),
            Some("s3cret")
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug shows no secret"
        );
    }

    #[test]
    fn gmail_preset_for_notify_and_imap() {
        let c = load(
            "[[source]]\nname = \"mail\"\nkind = \"imap\"\nprovider = \"gmail\"\nuser = \"a@example.com\"\n\
             oauth_client_id = \"g\"\ninbox = \"E\"\narchive = \"A\"\nerror = \"F\"\n\
             [notify]\nprovider = \"gmail\"\nuser = \"a@example.com\"\noauth_client_id = \"g\"\n\
             from = \"a@example.com\"\nadmins = [\"it@example.com\"]\n",
        )
        .unwrap();
        let (remote, oauth) = oauth_of(&c);
        assert_eq!(remote.host, "imap.gmail.com");
        assert_eq!(oauth.scope, "https://mail.google.com/");
        let notify = c.notify.as_ref().unwrap();
        assert_eq!(
            (notify.smtp_host.as_str(), notify.smtp_port),
            ("smtp.gmail.com", 587)
        );
        let n = notify.oauth.as_deref().unwrap();
        assert_eq!(
            (n.login.as_str(), n.user.as_str()),
            ("notify", "a@example.com")
        );
        assert_eq!(n.token_url, "https://oauth2.googleapis.com/token");
        assert!(notify.password.is_none());
    }

    #[test]
    fn oauth_mistakes_are_all_reported() {
        let errs = load(
            "[[source]]\nname = \"a\"\nkind = \"imap\"\nauth = \"oauth2\"\nhost = \"imap.example.com\"\nuser = \"u\"\n\
             password = \"x\"\noauth_token_url = \"http://idp.example.com/token\"\noauth_grant = \"client_credentials\"\n\
             inbox = \"E\"\narchive = \"A\"\nerror = \"F\"\n\
             [[source]]\nname = \"b\"\nkind = \"ftp\"\nauth = \"oauth2\"\nhost = \"ftp.example.com\"\nuser = \"u\"\n\
             password = \"x\"\ninbox = \"/o\"\narchive = \"/a\"\nerror = \"/f\"\n\
             [[source]]\nname = \"c\"\nkind = \"imap\"\nhost = \"imap.example.com\"\nuser = \"u\"\npassword = \"x\"\n\
             oauth_scope = \"mail\"\ninbox = \"E\"\narchive = \"A\"\nerror = \"F\"\n\
             [[source]]\nname = \"d\"\nkind = \"imap\"\nprovider = \"gmail\"\nuser = \"u\"\noauth_client_id = \"g\"\n\
             oauth_grant = \"client_credentials\"\ninbox = \"E\"\narchive = \"A\"\nerror = \"F\"\n",
        )
        .unwrap_err()
        .join("\n");
        for expected in [
            "source[0] \"a\": oauth_token_url \"http://idp.example.com/token\": plain http is allowed only to loopback hosts",
            "source[0] \"a\": `oauth_client_id` is required",
            "source[0] \"a\": `password` does not apply with auth = \"oauth2\"",
            "source[1] \"b\": `auth` does not apply to an ftp source",
            "source[2] \"c\": `oauth_scope` needs auth = \"oauth2\"",
            "source[3] \"d\": provider \"gmail\" has no client-credentials grant",
        ] {
            assert!(errs.contains(expected), "missing {expected:?} in\n{errs}");
        }
    }

    #[test]
    fn a_source_cannot_take_the_name_of_the_notify_login() {
        let errs = load(&format!(
            "{}[notify]\nprovider = \"gmail\"\nuser = \"a@example.com\"\noauth_client_id = \"g\"\n\
             from = \"a@example.com\"\nadmins = [\"it@example.com\"]\n",
            M365.replace("name = \"mail\"", "name = \"notify\"")
        ))
        .unwrap_err()
        .join("\n");
        assert!(errs.contains("a source is named \"notify\""), "{errs}");
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        assert!(!is_loopback("mail.example.com"));
        assert!(!is_loopback("10.0.0.1"));
    }
}
