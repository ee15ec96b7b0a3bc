//! The PostgreSQL side of `db`: where the database is (`Target`), one session on it (a
//! connection, made again when it was lost between transactions), the store's SQL as
//! PostgreSQL spells it, and values converted both ways.
//!
//! tokio-postgres is async and the store is blocking by design: every call is run on a small
//! runtime of the store's own and awaited from the calling thread, so a store call behaves the
//! same from the blocking pool, a command or a test.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rusqlite::types::Value;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};
use tokio_rustls::rustls::ClientConfig;

use super::Error;
use crate::config::Secret;

/// Connecting gives up after this long: an unreachable database is a transient error, and
/// the caller tries again with backoff.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One statement gives up after this long. A write waits for the store's other writers (one
/// at a time), which commit within milliseconds; a minute means the database is gone.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP keepalives on every connection: a peer that vanished (a cut network, a frozen host)
/// is noticed within about `idle + interval * retries` instead of the kernel's two hours.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// See `KEEPALIVE_IDLE`.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// See `KEEPALIVE_IDLE`.
pub const KEEPALIVE_RETRIES: u32 = 3;
/// The server aborts a transaction whose client fell silent inside it for this long (a
/// frozen daemon), which frees the writer lock it held for the others.
const SILENT_TRANSACTION: Duration = Duration::from_secs(15);
/// The advisory lock of the store's one writer, in the two-key space (`classid`, `objid`)
/// that never meets the one-key space of the source locks.
const WRITER_LOCK: (i32, i32) = (0x6569_6e67, 1);

/// A PostgreSQL store: the URL as configured, the password given beside it, and the TLS it
/// is reached over (always for a database on another machine).
#[derive(Clone)]
pub struct Target {
    url: String,
    password: Option<Secret>,
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.shown())
    }
}

impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        self.url == other.url
    }
}

impl Eq for Target {}

impl std::hash::Hash for Target {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.url.hash(state);
    }
}

impl Target {
    /// Checks a `[store] url`; the password comes from `password_env`/`_file`/`password`.
    /// A database on another machine is reached over TLS only, its certificate checked
    /// against the system's roots and `ca_file`, and its host name; on this machine TLS is
    /// used when the URL asks for it (`sslmode=require`). libpq's `verify-ca` and
    /// `verify-full` are taken as `require`: eingang always verifies both.
    pub fn new(
        url: &str,
        password: Option<Secret>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Target, String> {
        let url = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("url is not a PostgreSQL URL ({e})"))?;
        if config.get_hosts().is_empty() {
            return Err("url names no host".to_owned());
        }
        if config.get_password().is_some() {
            return Err(
                "url carries a password: give it as password_env, password_file or password"
                    .to_owned(),
            );
        }
        let remote = config.get_hosts().iter().any(|host| {
            matches!(host, tokio_postgres::config::Host::Tcp(name) if !crate::config::is_loopback(name))
        });
        let mode = config.get_ssl_mode();
        if remote && mode == SslMode::Disable {
            return Err(
                "url has sslmode=disable for a database on another machine: eingang reaches it over TLS only (drop sslmode, or give sslmode=require)"
                    .to_owned(),
            );
        }
        let tls = if remote || mode == SslMode::Require {
            Some(crate::source::tls::client_config(ca_file)?)
        } else {
            None
        };
        Ok(Target { url, password, tls })
    }

    /// Whether the store is reached over TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The (first) host of the URL.
    fn host(&self) -> String {
        match self
            .url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_hosts().first().cloned())
        {
            Some(tokio_postgres::config::Host::Tcp(h)) => h,
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        }
    }

    /// The database as people read it: user, host, port and name, never a password.
    pub fn shown(&self) -> String {
        match self.url.parse::<tokio_postgres::Config>() {
            Ok(c) => {
                let host = match c.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => String::new(),
                };
                let port = c.get_ports().first().copied().unwrap_or(5432);
                format!(
                    "postgres://{}@{host}:{port}/{}",
                    c.get_user().unwrap_or(""),
                    c.get_dbname().unwrap_or("")
                )
            }
            Err(_) => "postgres://…".to_owned(),
        }
    }

    /// The client config: the URL, the password, keepalives on both ends, timeouts, a name
    /// in `pg_stat_activity`.
    pub(crate) fn config(&self) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config =
            self.url.parse().expect("the url was checked at load");
        if let Some(p) = &self.password {
            config.password(p.expose());
        }
        // The server's side: it notices a client that vanished as soon as the client notices
        // the server.
        let options = format!(
            "{} -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
             -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            KEEPALIVE_IDLE.as_secs(),
            KEEPALIVE_INTERVAL.as_secs(),
            KEEPALIVE_RETRIES,
            SILENT_TRANSACTION.as_millis(),
        );
        if self.tls.is_some() {
            // With TLS at hand, `prefer` would still take a plain session from a server that
            // offers no TLS.
            config.ssl_mode(SslMode::Require);
        }
        config
            .options(options.trim_start())
            .application_name("eingang")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        config
    }
}

/// The runtime every PostgreSQL connection of this process runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("eingang-postgres")
            .enable_all()
            .build()
            .expect("a runtime for the PostgreSQL connections starts")
    })
}

/// Runs `fut` on the connections' runtime and waits for it on this thread.
pub(crate) fn block<T: Send + 'static>(
    fut: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .unwrap_or_else(|_| Err(Error::Task("a PostgreSQL call ended abnormally".to_owned())))
}

/// A PostgreSQL error as the store reports it.
pub(crate) fn error(e: tokio_postgres::Error) -> Error {
    Error::Postgres(match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // The cause (a TLS handshake's, say) is what the admin needs.
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text = format!("{text}: {c}");
                cause = c.source();
            }
            text
        }
    })
}

fn timed_out(what: &str) -> Error {
    Error::Postgres(format!("{what} timed out after {STATEMENT_TIMEOUT:?}"))
}

/// Opens a connection to `target` with `config` (its `config()`, adjusted) and runs it on the
/// store's runtime.
pub(crate) async fn connect(
    target: &Target,
    config: tokio_postgres::Config,
) -> Result<Client, Error> {
    let timed_out = || Error::Postgres(format!("connect timed out after {CONNECT_TIMEOUT:?}"));
    let client = match &target.tls {
        None => {
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
                .await
                .map_err(|_| timed_out())?
                .map_err(error)?;
            tokio::spawn(run(connection));
            client
        }
        Some(tls) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| match error(e) {
                    Error::Postgres(why) => {
                        Error::Postgres(crate::source::tls::plain_words(&why, &target.host()))
                    }
                    other => other,
                })?;
            tokio::spawn(run(connection));
            client
        }
    };
    Ok(client)
}

/// Drives a connection until it ends.
async fn run<C: Future<Output = Result<(), tokio_postgres::Error>>>(connection: C) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "store connection ended");
    }
}

/// One session on the database: the store's connection.
pub(crate) struct Session {
    target: Target,
    config: tokio_postgres::Config,
    client: RefCell<Option<Arc<Client>>>,
    statements: RefCell<HashMap<String, Statement>>,
    in_transaction: Cell<bool>,
}

impl Session {
    /// Connects.
    pub fn open(target: &Target) -> Result<Session, Error> {
        let config = target.config();
        let (at, with) = (target.clone(), config.clone());
        let client = block(async move { connect(&at, with).await })?;
        Ok(Session {
            target: target.clone(),
            config,
            client: RefCell::new(Some(Arc::new(client))),
            statements: RefCell::new(HashMap::new()),
            in_transaction: Cell::new(false),
        })
    }

    /// The connection, made again when it was lost outside a transaction (a database restart:
    /// the store carries on). Inside one, a lost connection fails the transaction.
    fn client(&self) -> Result<Arc<Client>, Error> {
        let current = self.client.borrow().clone();
        match current {
            Some(c) if !c.is_closed() => Ok(c),
            _ if self.in_transaction.get() => Err(Error::Postgres(
                "the connection to the database was lost during a transaction".to_owned(),
            )),
            _ => {
                self.statements.borrow_mut().clear();
                *self.client.borrow_mut() = None;
                let (at, with) = (self.target.clone(), self.config.clone());
                let c = Arc::new(block(async move { connect(&at, with).await })?);
                *self.client.borrow_mut() = Some(c.clone());
                Ok(c)
            }
        }
    }

    /// Drops a connection that timed out: the next call starts over on a new one.
    fn forget(&self) {
        *self.client.borrow_mut() = None;
        self.statements.borrow_mut().clear();
    }

    /// The prepared statement of `sql`, prepared on first use. A parameter whose type
    /// PostgreSQL cannot tell from the SQL (`?1 IS NULL OR …`) takes the type of the value
    /// given for it.
    fn statement(
        &self,
        client: &Arc<Client>,
        sql: &str,
        values: &[Value],
    ) -> Result<Statement, Error> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let text = translate(sql);
        let types: Vec<Type> = values
            .iter()
            .map(|v| match v {
                Value::Integer(_) => Type::INT8,
                Value::Real(_) => Type::FLOAT8,
                Value::Blob(_) => Type::BYTEA,
                Value::Null | Value::Text(_) => Type::TEXT,
            })
            .collect();
        let c = client.clone();
        let statement = block(async move {
            let untyped = tokio::time::timeout(STATEMENT_TIMEOUT, c.prepare(&text))
                .await
                .map_err(|_| timed_out("prepare"))?;
            match untyped {
                Err(e)
                    if e.code() == Some(&SqlState::AMBIGUOUS_PARAMETER)
                        || e.code() == Some(&SqlState::INDETERMINATE_DATATYPE) =>
                {
                    tokio::time::timeout(STATEMENT_TIMEOUT, c.prepare_typed(&text, &types))
                        .await
                        .map_err(|_| timed_out("prepare"))?
                        .map_err(error)
                }
                other => other.map_err(error),
            }
        })?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn watch<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if result.is_err() && self.client.borrow().as_ref().is_some_and(|c| c.is_closed()) {
            self.statements.borrow_mut().clear();
        }
        if let Err(Error::Postgres(m)) = &result
            && m.contains("timed out")
        {
            self.forget();
        }
        result
    }

    /// The rows of a query.
    pub fn query(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Vec<Value>>, Error> {
        let client = self.client()?;
        let statement = self.statement(&client, sql, &values)?;
        self.watch(block(async move {
            let params = params(values);
            let refs = refs(&params);
            let rows = tokio::time::timeout(STATEMENT_TIMEOUT, client.query(&statement, &refs))
                .await
                .map_err(|_| timed_out("query"))?
                .map_err(error)?;
            rows.iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| row.try_get::<_, Cell0>(i).map(|c| c.0).map_err(error))
                        .collect()
                })
                .collect()
        }))
    }

    /// Runs one statement, returning how many rows it changed.
    pub fn execute(&self, sql: &str, values: Vec<Value>) -> Result<usize, Error> {
        let client = self.client()?;
        let statement = self.statement(&client, sql, &values)?;
        self.watch(block(async move {
            let params = params(values);
            let refs = refs(&params);
            let n = tokio::time::timeout(STATEMENT_TIMEOUT, client.execute(&statement, &refs))
                .await
                .map_err(|_| timed_out("statement"))?
                .map_err(error)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        }))
    }

    /// Runs an `INSERT`, returning the new row's `id`.
    pub fn insert(&self, sql: &str, values: Vec<Value>) -> Result<i64, Error> {
        let rows = self.query(&format!("{} RETURNING id", sql.trim_end()), values)?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::Integer(id)) => Ok(*id),
            _ => Err(Error::Postgres(
                "an insert returned no id: the row was not written".to_owned(),
            )),
        }
    }

    /// Runs statements without parameters (the simple query protocol).
    pub fn batch(&self, sql: &str) -> Result<(), Error> {
        let client = self.client()?;
        let sql = sql.to_owned();
        self.watch(block(async move {
            tokio::time::timeout(STATEMENT_TIMEOUT, client.batch_execute(&sql))
                .await
                .map_err(|_| timed_out("statement"))?
                .map_err(error)
        }))
    }

    /// Starts a transaction; a writer waits for the store's writer lock first.
    pub fn begin(&self, writer: bool) -> Result<(), Error> {
        self.batch("BEGIN")?;
        self.in_transaction.set(true);
        if writer {
            let locked = self.query(
                "SELECT pg_advisory_xact_lock(?1, ?2)",
                vec![
                    Value::Integer(i64::from(WRITER_LOCK.0)),
                    Value::Integer(i64::from(WRITER_LOCK.1)),
                ],
            );
            if let Err(e) = locked {
                let _ = self.end("ROLLBACK");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the transaction (`COMMIT` or `ROLLBACK`).
    pub fn end(&self, sql: &str) -> Result<(), Error> {
        let result = self.batch(sql);
        self.in_transaction.set(false);
        result
    }
}

/// Rewrites the store's SQL (written for SQLite, in the spellings PostgreSQL shares where
/// there is one) as PostgreSQL spells the rest: `?N` and `?` placeholders as `$N`,
/// `json_extract(x, '$.key')` as `x::jsonb ->> 'key'`, `LIKE` as `ILIKE` (SQLite's `LIKE` ignores
/// the case of ASCII letters), and `+column` (SQLite's "not through an index") as the column.
pub fn translate(sql: &str) -> String {
    let mut text = sql.replace(" LIKE ", " ILIKE ");
    while let Some(start) = text.find("json_extract(") {
        let Some((expr, consumed)) = json_path(&text[start + "json_extract(".len()..]) else {
            break;
        };
        let end = start + "json_extract(".len() + consumed;
        text.replace_range(start..end, &expr);
    }
    placeholders(&text)
}

/// `x, '$.key')…` → (`((x)::jsonb ->> 'key')`, the length up to and with the `)`).
fn json_path(rest: &str) -> Option<(String, usize)> {
    let mut depth = 0usize;
    let mut comma = None;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            ',' if depth == 0 => {
                comma = Some(i);
                break;
            }
            _ => {}
        }
    }
    let comma = comma?;
    let after = rest[comma + 1..].trim_start();
    let skipped = rest.len() - comma - 1 - after.len();
    let path = after.strip_prefix("'$.")?;
    let close = path.find("')")?;
    let key = &path[..close];
    let consumed = comma + 1 + skipped + "'$.".len() + close + "')".len();
    Some((
        format!("(({})::jsonb ->> '{key}')", rest[..comma].trim()),
        consumed,
    ))
}

/// `?N` → `$N`, each bare `?` → the next `$N`, and `+column` → `column`, outside string
/// literals.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quoted = false;
    let mut next = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '+' if !quoted
                && out.ends_with([' ', '('])
                && chars.peek().is_some_and(|n| n.is_ascii_lowercase()) => {}
            '?' if !quoted => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    digits = next.to_string();
                }
                out.push('$');
                out.push_str(&digits);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A parameter: rusqlite's value, written as the type the statement asks for.
struct Param(Value);

/// A statement's values as PostgreSQL parameters.
fn params(values: Vec<Value>) -> Vec<Param> {
    values.into_iter().map(Param).collect()
}

/// The parameters as tokio-postgres takes them.
fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Its kind and size only: tokio-postgres logs every statement's parameters at debug level,
/// and a parameter may be a refresh token or a document.
impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Value::Null => f.write_str("NULL"),
            Value::Integer(_) => f.write_str("an integer"),
            Value::Real(_) => f.write_str("a real"),
            Value::Text(t) => write!(f, "a text of {} bytes", t.len()),
            Value::Blob(b) => write!(f, "a blob of {} bytes", b.len()),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            Value::Null => return Ok(IsNull::Yes),
            Value::Integer(n) => {
                if *ty == Type::INT8 {
                    return n.to_sql(ty, out);
                } else if *ty == Type::INT4 {
                    return i32::try_from(*n)?.to_sql(ty, out);
                } else if *ty == Type::INT2 {
                    return i16::try_from(*n)?.to_sql(ty, out);
                } else if *ty == Type::BOOL {
                    return (*n != 0).to_sql(ty, out);
                } else if *ty == Type::FLOAT8 {
                    return (*n as f64).to_sql(ty, out);
                }
                out.put_slice(n.to_string().as_bytes());
            }
            Value::Real(x) => {
                if *ty == Type::FLOAT8 {
                    return x.to_sql(ty, out);
                } else if *ty == Type::FLOAT4 {
                    return (*x as f32).to_sql(ty, out);
                }
                out.put_slice(x.to_string().as_bytes());
            }
            Value::Text(s) => {
                if *ty == Type::INT8 {
                    return s.parse::<i64>()?.to_sql(ty, out);
                } else if *ty == Type::JSONB {
                    out.put_u8(1);
                }
                out.put_slice(s.as_bytes());
            }
            Value::Blob(b) => out.put_slice(b),
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A result value, read from whatever type the column has into rusqlite's value.
struct Cell0(Value);

impl<'a> FromSql<'a> for Cell0 {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell0, BoxError> {
        let value = if *ty == Type::INT8 {
            Value::Integer(i64::from_sql(ty, raw)?)
        } else if *ty == Type::INT4 {
            Value::Integer(i64::from(i32::from_sql(ty, raw)?))
        } else if *ty == Type::INT2 {
            Value::Integer(i64::from(i16::from_sql(ty, raw)?))
        } else if *ty == Type::OID {
            Value::Integer(i64::from(u32::from_sql(ty, raw)?))
        } else if *ty == Type::BOOL {
            Value::Integer(i64::from(bool::from_sql(ty, raw)?))
        } else if *ty == Type::FLOAT8 {
            Value::Real(f64::from_sql(ty, raw)?)
        } else if *ty == Type::FLOAT4 {
            Value::Real(f64::from(f32::from_sql(ty, raw)?))
        } else if *ty == Type::BYTEA {
            Value::Blob(raw.to_vec())
        } else if *ty == Type::NUMERIC {
            numeric(raw)?
        } else if *ty == Type::VOID {
            Value::Null
        } else if *ty == Type::JSONB {
            Value::Text(String::from_utf8(
                raw.get(1..).unwrap_or_default().to_vec(),
            )?)
        } else {
            Value::Text(String::from_utf8(raw.to_vec())?)
        };
        Ok(Cell0(value))
    }

    fn from_sql_null(_: &Type) -> Result<Cell0, BoxError> {
        Ok(Cell0(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A NUMERIC in PostgreSQL's binary form (digits in base 10000): an integer when it has no
/// fraction (what `SUM` of integers gives), else a float.
fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a NUMERIC value cut short".into())
    };
    let (ndigits, weight, sign, scale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let mut whole: i128 = 0;
    let mut real = 0f64;
    for i in 0..usize::from(ndigits) {
        let digit = word(4 + i)?;
        let exponent = i32::from(weight) - i32::try_from(i)?;
        real += f64::from(digit) * 10000f64.powi(exponent);
        if exponent >= 0 {
            whole = whole
                .checked_add(
                    i128::from(digit)
                        * 10000i128
                            .checked_pow(exponent.try_into()?)
                            .ok_or("a NUMERIC too large")?,
                )
                .ok_or("a NUMERIC too large")?;
        }
    }
    let negative = sign == 0x4000;
    if scale == 0 {
        let n = i64::try_from(whole)?;
        Ok(Value::Integer(if negative { -n } else { n }))
    } else {
        Ok(Value::Real(if negative { -real } else { real }))
    }
}

#[cfg(test)]
mod tests {
    use super::{Target, translate};
    use crate::store::test_postgres::Postgres;
    use crate::store::{Location, Store};

    /// A database restart between two calls costs the call made while it is down (an error:
    /// the caller leaves its items where they are), never the store: the next call connects
    /// again.
    #[test]
    fn the_store_carries_on_after_the_database_restarted() {
        let server = Postgres::start();
        let url = server.fresh_database("restart");
        let store =
            Store::open_at(&Location::Postgres(Target::new(&url, None, None).unwrap())).unwrap();
        let first = store.add_request("sync", None, None).unwrap();
        server.stop();
        assert!(store.add_request("sync", None, None).is_err());
        server.resume();
        let second = store.add_request("sync", None, None).unwrap();
        assert!(second > first);
        assert_eq!(store.take_requests(None).unwrap().len(), 2);
    }

    #[test]
    fn a_parameter_shows_its_kind_never_its_value() {
        let shown = format!(
            "{:?}",
            super::Param(rusqlite::types::Value::Text("rt-geheim".into()))
        );
        assert_eq!(shown, "a text of 9 bytes");
    }

    #[test]
    fn placeholders_become_dollar_numbers_outside_quotes() {
        assert_eq!(
            translate("SELECT ?1, '?', ? FROM t WHERE a = ?2"),
            "SELECT $1, '?', $1 FROM t WHERE a = $2"
        );
    }

    #[test]
    fn json_extract_becomes_the_jsonb_operator() {
        assert_eq!(
            translate(
                "SELECT COALESCE(json_extract(sender_auth, '$.aligned_domain'), '') FROM items"
            ),
            "SELECT COALESCE(((sender_auth)::jsonb ->> 'aligned_domain'), '') FROM items"
        );
    }

    #[test]
    fn like_ignores_case_and_a_plus_before_a_column_goes() {
        assert_eq!(
            translate("WHERE sha256 = ?1 AND +source = ?2 AND n LIKE ?3 AND a + 1 > 0"),
            "WHERE sha256 = $1 AND source = $2 AND n ILIKE $3 AND a + 1 > 0"
        );
    }
}
