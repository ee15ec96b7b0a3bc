//! One IMAP connection: TCP with a deadline on every read, TLS (implicit, or STARTTLS that is
//! required), LOGIN, the capabilities read again after TLS and after login, and the commands
//! the source needs, each read to its tagged completion under a timeout. async-imap gives the
//! session and the response parser; the commands are sent raw because its helpers drop what
//! we must check (the tagged status of a FETCH, the COPYUID of a UID COPY, RFC 4315).
//!
//! OAuth2 (`auth = "oauth2"`): `AUTHENTICATE XOAUTH2` or `OAUTHBEARER` with an access token
//! from `crate::oauth`; a refusal says the server's text and its error challenge. The
//! connection knows when its token is due: it ends an IDLE round then and refuses to be
//! reused (`noop`), so that the next pass logs in anew with a fresh token; a BYE saying the
//! token expired drops that token from memory.
//!
//! Never logs or returns the password or an access token.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto::{
    Capability, MailboxDatum, NameAttribute, Response, ResponseCode, Status,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;

use super::names;
use crate::config::{OAuth2Config, RemoteConfig, SaslMechanism, TlsMode};
use crate::oauth::{self, AccessToken, sasl};
use crate::source::tls;

/// TCP connect, TLS handshake and greeting together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No byte from the server for this long while we wait for one: the link is dead. Longer
/// than `IDLE_PROBE`, so a quiet IDLE is ended by us before this fires.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A command and all of its response (not a body fetch).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// One batch of message bodies.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);
/// An IDLE with no line from the server for this long is ended with DONE; the answer to DONE
/// proves the link alive. So a dead connection (a NAT or firewall that silently dropped the
/// flow, stalwart#3299) is noticed within `IDLE_PROBE + PROBE_ANSWER`, under a minute, and
/// such middleboxes never see the flow silent for long enough to drop it.
const IDLE_PROBE: Duration = Duration::from_secs(30);
/// How long the answer to DONE (or a NOOP on a resting connection) may take.
const PROBE_ANSWER: Duration = Duration::from_secs(15);
/// How long a server may take to greet. One that says nothing for this long on a port where
/// it should speak first most likely waits for TLS (a TLS port, told to speak plain text).
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error text kept from a server or parser: parse errors quote whole responses.
const MAX_WHY: usize = 300;

/// A failure of the connection or the server: always transient, the items stay where they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached, or the connection broke.
    #[error("{server}: {why}")]
    Connect {
        /// `host:port`.
        server: String,
        /// What happened.
        why: String,
    },
    /// TLS failed: certificate, host name or handshake.
    #[error("{server}: TLS: {why}")]
    Tls {
        /// `host:port`.
        server: String,
        /// The reason from rustls.
        why: String,
    },
    /// STARTTLS was required and not given; nothing was sent in the clear after it.
    #[error("{server}: STARTTLS refused ({why}); not logging in without TLS")]
    StartTls {
        /// `host:port`.
        server: String,
        /// The server's answer.
        why: String,
    },
    /// The server refused the login.
    #[error("login as {user} refused: {why}")]
    Login {
        /// The login name.
        user: String,
        /// The server's answer (never the password).
        why: String,
    },
    /// A command was answered NO or BAD, or the server said BYE.
    #[error("{command}: {why}")]
    Server {
        /// The command, without its arguments' secrets (there are none past LOGIN).
        command: String,
        /// The server's answer.
        why: String,
    },
    /// A command got no complete answer in time.
    #[error("{command}: no answer within {} s", .limit.as_secs())]
    Timeout {
        /// The command.
        command: String,
        /// The limit.
        limit: Duration,
    },
    /// The reading or writing of a command failed.
    #[error("{command}: {why}")]
    Io {
        /// The command.
        command: String,
        /// The cause.
        why: String,
    },
    /// A folder of the config is missing on the server or cannot be named there.
    #[error("{0}")]
    Folder(String),
    /// Moved items could not all be confirmed; they stay in the inbox for the next pass.
    #[error("{0}")]
    NotMoved(String),
    /// No access token for an OAuth2 login.
    #[error(transparent)]
    OAuth(#[from] oauth::Error),
    /// The connection's access token is due for renewal: it is not reused.
    #[error("the access token is due for renewal; logging in again")]
    Renew,
}

/// An error of a command, apart from the server's BYE (its error and its text).
enum ByeOr {
    Error(Error),
    Bye(Error, String),
}

impl From<Error> for ByeOr {
    fn from(e: Error) -> ByeOr {
        ByeOr::Error(e)
    }
}

impl Error {
    fn with_bye(self, text: String) -> ByeOr {
        ByeOr::Bye(self, text)
    }
}

/// The server's BYE during `command`, with its text.
fn bye(command: &str, text: Option<&str>) -> ByeOr {
    let text = text.unwrap_or("BYE").to_owned();
    Error::Io {
        command: command.to_owned(),
        why: short(format!("the server closed the connection: {text}")),
    }
    .with_bye(text)
}

/// One response, or the error `io` makes of a broken or closed connection.
fn response_or<T>(
    read: std::io::Result<Option<T>>,
    io: &impl Fn(String) -> Error,
) -> Result<T, Error> {
    read.map_err(|e| io(e.to_string()))?
        .ok_or_else(|| io("connection closed".to_owned()))
}

fn short(text: impl std::fmt::Display) -> String {
    let text = text.to_string().replace(['\r', '\n'], " ");
    match text.char_indices().nth(MAX_WHY) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A TCP stream whose reads fail after `READ_TIMEOUT` without a byte while a read is pending.
/// The deadline restarts on every byte read and every write (a command sent expects an
/// answer), so a connection resting between passes does not time out; async-imap itself has
/// no timeouts (async-imap#63).
#[derive(Debug)]
pub struct Timed {
    inner: TcpStream,
    deadline: Pin<Box<Sleep>>,
}

impl Timed {
    fn new(inner: TcpStream) -> Timed {
        Timed {
            inner,
            deadline: Box::pin(tokio::time::sleep(READ_TIMEOUT)),
        }
    }

    fn restart(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + READ_TIMEOUT);
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.restart();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data from the server for {} s", READ_TIMEOUT.as_secs()),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(_))) {
            self.restart();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The byte stream under the IMAP session: plaintext (loopback only) or TLS.
#[derive(Debug)]
pub enum Stream {
    /// `tls = "none"`, or the plaintext start of a STARTTLS connection.
    Plain(Timed),
    /// TLS, implicit or after STARTTLS.
    Tls(Box<TlsStream<Timed>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type Session = async_imap::Session<Stream>;

/// What the server can do, read after login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    /// RFC 6851 `UID MOVE`.
    pub has_move: bool,
    /// RFC 4315 `UID EXPUNGE` and COPYUID.
    pub has_uidplus: bool,
    /// RFC 2177 IDLE.
    pub has_idle: bool,
}

impl Caps {
    fn of(atoms: &HashSet<String>) -> Caps {
        let has = |name: &str| atoms.contains(name);
        // IMAP4rev2 (RFC 9051) has MOVE and UIDPLUS in the base protocol.
        let rev2 = has("IMAP4REV2");
        Caps {
            has_move: has("MOVE") || rev2,
            has_uidplus: has("UIDPLUS") || rev2,
            has_idle: has("IDLE") || rev2,
        }
    }
}

/// A logged-in connection.
pub struct Connection {
    session: Session,
    server: String,
    /// What the server can do (read after login).
    pub caps: Caps,
    /// Set when the server announced a new message count (EXISTS) during a command.
    pub exists_seen: bool,
    /// The OAuth2 login and its token; `None` for a password login.
    oauth: Option<(std::sync::Arc<OAuth2Config>, AccessToken)>,
}

/// The SASL client of an OAuth2 login for async-imap: the token message on the first
/// challenge, then, on the server's error challenge (RFC 7628 §3.2.2), that challenge kept and
/// the answer that makes the server send its tagged NO.
struct TokenAuth {
    first: Vec<u8>,
    after_error: Vec<u8>,
    calls: u32,
    challenge: Option<String>,
}

impl async_imap::Authenticator for &mut TokenAuth {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.calls += 1;
        if self.calls == 1 {
            // Empty for a client-first mechanism; some servers send a bare `+` with text
            // (jonhoo/rust-imap#145): the token message goes first all the same.
            return std::mem::take(&mut self.first);
        }
        self.challenge = Some(sasl::describe_challenge(challenge));
        self.after_error.clone()
    }
}

/// The mechanism for an OAuth2 login: as configured, else XOAUTH2 where offered, else
/// OAUTHBEARER.
fn mechanism(
    configured: Option<SaslMechanism>,
    caps: &HashSet<String>,
) -> Result<SaslMechanism, String> {
    if let Some(m) = configured {
        return Ok(m);
    }
    let offers = |m: SaslMechanism| caps.contains(&format!("AUTH={}", m.name()));
    [SaslMechanism::XOAuth2, SaslMechanism::OAuthBearer]
        .into_iter()
        .find(|m| offers(*m))
        .ok_or_else(|| {
            let mut offered: Vec<&str> = caps
                .iter()
                .filter(|c| c.starts_with("AUTH="))
                .map(String::as_str)
                .collect();
            offered.sort_unstable();
            format!(
                "the server offers neither AUTH=XOAUTH2 nor AUTH=OAUTHBEARER (it offers {}); oauth_mechanism tries one anyway",
                if offered.is_empty() {
                    "no AUTH mechanism".to_owned()
                } else {
                    offered.join(" ")
                }
            )
        })
}

/// The server's words in an async-imap NO or BAD (it writes `code: Some(C), info: Some("T")`)
/// as `[C] T`.
fn refusal(e: &async_imap::error::Error) -> String {
    let text = match e {
        async_imap::error::Error::No(t) | async_imap::error::Error::Bad(t) => t.as_str(),
        other => return short(other),
    };
    let Some((code, info)) = text.split_once(", info: ") else {
        return short(text);
    };
    let code = code
        .trim_start_matches("code: ")
        .strip_prefix("Some(")
        .and_then(|c| c.strip_suffix(')'))
        .map(str::to_ascii_uppercase);
    let info = info
        .strip_prefix("Some(\"")
        .and_then(|i| i.strip_suffix("\")"))
        .map(|i| i.replace("\\\"", "\""));
    short(match (code, info) {
        (Some(code), Some(info)) => format!("[{code}] {info}"),
        (None, Some(info)) => info,
        (Some(code), None) => format!("[{code}]"),
        (None, None) => "refused".to_owned(),
    })
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("caps", &self.caps)
            .finish()
    }
}

/// Connects, secures, logs in and reads the capabilities.
pub async fn connect(config: &RemoteConfig, tls: &Arc<ClientConfig>) -> Result<Connection, Error> {
    let server = format!("{}:{}", config.host, config.port);
    let connect_err = |why: String| Error::Connect {
        server: server.clone(),
        why,
    };
    let mut client = timeout(CONNECT_TIMEOUT, open(config, tls, &server))
        .await
        .map_err(|_| {
            connect_err(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })??;
    // The capabilities on the secured link, not the plaintext ones (RFC 3501 §6.2.1): a server
    // that still refuses LOGIN gets no password.
    let before_login = timeout(COMMAND_TIMEOUT, capabilities_before_login(&mut client))
        .await
        .map_err(|_| Error::Timeout {
            command: "CAPABILITY".to_owned(),
            limit: COMMAND_TIMEOUT,
        })??;
    if let Some(oauth) = &config.oauth {
        let (session, token) = authenticate(client, config, oauth, &before_login).await?;
        let mut conn = Connection {
            session,
            server,
            caps: Caps::default(),
            exists_seen: false,
            oauth: Some((oauth.clone(), token)),
        };
        conn.caps = Caps::of(&conn.capabilities().await?);
        return Ok(conn);
    }
    if before_login.contains("LOGINDISABLED") {
        return Err(Error::Login {
            user: config.user.clone(),
            why: "the server refuses LOGIN on this connection (LOGINDISABLED)".to_owned(),
        });
    }
    // async-imap writes every command it sends to `log` at trace level, LOGIN with its
    // password; the `log` macros are compiled with `max_level_debug` (Cargo.toml), so that
    // line never exists, whatever EINGANG_LOG asks for (DESIGN.md promise 6).
    let login = timeout(
        COMMAND_TIMEOUT,
        client.login(&config.user, config.password.expose()),
    )
    .await
    .map_err(|_| Error::Timeout {
        command: "LOGIN".to_owned(),
        limit: COMMAND_TIMEOUT,
    })?;
    let session = login.map_err(|(e, _)| Error::Login {
        user: config.user.clone(),
        why: format!("{} (check user and password)", refusal(&e)),
    })?;
    let mut conn = Connection {
        session,
        server,
        caps: Caps::default(),
        exists_seen: false,
        oauth: None,
    };
    // Capabilities change at login (RFC 3501 §7.2.1; Dovecot adds MOVE and UIDPLUS only
    // then): read them now, never trust the plaintext ones.
    conn.caps = Caps::of(&conn.capabilities().await?);
    Ok(conn)
}

/// `AUTHENTICATE` with an access token (RFC 3501 §6.2.2). A refused token is dropped from
/// memory, so that the next try gets a new one, and the refusal names the server's text and
/// its error challenge.
async fn authenticate(
    client: async_imap::Client<Stream>,
    config: &RemoteConfig,
    oauth: &std::sync::Arc<OAuth2Config>,
    before_login: &HashSet<String>,
) -> Result<(Session, AccessToken), Error> {
    let refused = |why: String| Error::Login {
        user: config.user.clone(),
        why,
    };
    let mechanism = mechanism(oauth.mechanism, before_login).map_err(refused)?;
    let token = oauth::access_token(oauth).await?;
    let mut auth = TokenAuth {
        first: sasl::initial_response(
            mechanism,
            &config.user,
            &config.host,
            config.port,
            token.secret(),
        ),
        after_error: sasl::error_answer(mechanism),
        calls: 0,
        challenge: None,
    };
    let command = format!("AUTHENTICATE {}", mechanism.name());
    // async-imap writes what it sends to `log` at trace level, capped at debug at compile
    // time (Cargo.toml): the token message never reaches a log.
    let answer = timeout(
        COMMAND_TIMEOUT,
        client.authenticate(mechanism.name(), &mut auth),
    )
    .await
    .map_err(|_| Error::Timeout {
        command: command.clone(),
        limit: COMMAND_TIMEOUT,
    })?;
    match answer {
        Ok(session) => {
            tracing::debug!(user = %config.user, mechanism = mechanism.name(), "logged in with an access token");
            Ok((session, token))
        }
        Err((e, _)) => {
            oauth::forget(oauth, &token).await;
            let challenge = auth
                .challenge
                .map(|c| format!(" (its challenge: {c})"))
                .unwrap_or_default();
            Err(refused(format!(
                "{}: {}{challenge}; the mail server refused the access token: check oauth_scope ({:?}), the app's IMAP permission (app-only: the mailbox access of its service principal) and that `user` is the token's mailbox",
                mechanism.name(),
                refusal(&e),
                oauth.scope
            )))
        }
    }
}

/// TCP, TLS as configured, and the greeting; returns a client ready for LOGIN.
async fn open(
    config: &RemoteConfig,
    tls: &Arc<ClientConfig>,
    server: &str,
) -> Result<async_imap::Client<Stream>, Error> {
    let connect_err = |why: String| Error::Connect {
        server: server.to_owned(),
        why,
    };
    let tcp = TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let timed = Timed::new(tcp);
    match config.tls {
        TlsMode::Implicit => {
            let stream = handshake(timed, &config.host, tls, server).await?;
            let mut client = async_imap::Client::new(stream);
            greeting(&mut client, server, false).await?;
            Ok(client)
        }
        TlsMode::StartTls => {
            let mut client = async_imap::Client::new(Stream::Plain(timed));
            plain_greeting(&mut client, server, true, config.port).await?;
            // STARTTLS is sent whatever the plaintext CAPABILITY says: a capability list an
            // attacker stripped must not talk us into plaintext, and a server without it
            // answers BAD, which stops us here (RFC 3501 §6.2.1, RFC 7817 §3).
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| Error::StartTls {
                    server: server.to_owned(),
                    why: short(e),
                })?;
            // `into_inner` drops whatever the server sent after its OK in plaintext, so no
            // injected response is read as if it came over TLS (CVE-2021-38371 and kin).
            let Stream::Plain(timed) = client.into_inner() else {
                return Err(connect_err("STARTTLS on a TLS stream".to_owned()));
            };
            let stream = handshake(timed, &config.host, tls, server).await?;
            // No greeting follows STARTTLS (RFC 3501 §6.2.1).
            Ok(async_imap::Client::new(stream))
        }
        TlsMode::None => {
            let mut client = async_imap::Client::new(Stream::Plain(timed));
            plain_greeting(&mut client, server, false, config.port).await?;
            Ok(client)
        }
        TlsMode::Explicit => Err(connect_err(
            "tls = \"explicit\" is for FTP; use implicit or starttls".to_owned(),
        )),
    }
}

async fn handshake(
    timed: Timed,
    host: &str,
    tls: &Arc<ClientConfig>,
    server: &str,
) -> Result<Stream, Error> {
    let tls_err = |why: String| Error::Tls {
        server: server.to_owned(),
        why,
    };
    let name = tls::server_name(host).map_err(tls_err)?;
    let stream = TlsConnector::from(tls.clone())
        .connect(name, timed)
        .await
        .map_err(|e| tls_err(tls::plain_words(&e.to_string(), host)))?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// `CAPABILITY` before LOGIN. async-imap's client has no such call before login, so the
/// command goes out under a tag of our own (`C1`, unlike its `A0001` series).
async fn capabilities_before_login(
    client: &mut async_imap::Client<Stream>,
) -> Result<HashSet<String>, Error> {
    use tokio::io::AsyncWriteExt;
    let io = |e: String| Error::Io {
        command: "CAPABILITY".to_owned(),
        why: short(e),
    };
    let stream = client.get_mut();
    stream
        .write_all(b"C1 CAPABILITY\r\n")
        .await
        .map_err(|e| io(e.to_string()))?;
    stream.flush().await.map_err(|e| io(e.to_string()))?;
    let mut atoms = HashSet::new();
    loop {
        let response = response_or(client.read_response().await, &io)?;
        match response.parsed() {
            Response::Capabilities(caps) => atoms.extend(caps.iter().map(atom)),
            Response::Done { tag, status, .. } if tag.0 == "C1" => {
                return match status {
                    Status::Ok => Ok(atoms),
                    other => Err(Error::Server {
                        command: "CAPABILITY".to_owned(),
                        why: format!("{other:?}"),
                    }),
                };
            }
            _ => {}
        }
    }
}

/// A capability as an upper-case atom (`IMAP4REV1`, `AUTH=PLAIN`, `MOVE`).
fn atom(cap: &Capability<'_>) -> String {
    match cap {
        Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
        Capability::Auth(a) => format!("AUTH={}", a.to_ascii_uppercase()),
        Capability::Atom(a) => a.to_ascii_uppercase(),
    }
}

/// The greeting on a plaintext connection, within `GREETING_TIMEOUT`: a server that stays
/// silent there is most likely a TLS port.
async fn plain_greeting(
    client: &mut async_imap::Client<Stream>,
    server: &str,
    before_starttls: bool,
    port: u16,
) -> Result<(), Error> {
    match timeout(GREETING_TIMEOUT, greeting(client, server, before_starttls)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Connect {
            server: server.to_owned(),
            why: format!(
                "no greeting within {} s: port {port} seems to expect TLS from the first byte; use tls = \"implicit\" there (IMAP's TLS port is 993), or the plain port (143) with tls = \"starttls\"",
                GREETING_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Reads the server's greeting (async-imap's `Client::new` does not). A PREAUTH greeting
/// before STARTTLS would leave no chance to secure the link, so it is refused (RFC 7817 §3).
async fn greeting(
    client: &mut async_imap::Client<Stream>,
    server: &str,
    before_starttls: bool,
) -> Result<(), Error> {
    let err = |why: String| Error::Connect {
        server: server.to_owned(),
        why,
    };
    let response = client
        .read_response()
        .await
        .map_err(|e| err(short(e)))?
        .ok_or_else(|| err("closed before its greeting".to_owned()))?;
    match response.parsed() {
        Response::Data {
            status: Status::Ok, ..
        } => Ok(()),
        Response::Data {
            status: Status::PreAuth,
            ..
        } if !before_starttls => Ok(()),
        Response::Data {
            status: Status::PreAuth,
            ..
        } => Err(Error::StartTls {
            server: server.to_owned(),
            why: "the greeting was PREAUTH in plaintext".to_owned(),
        }),
        Response::Data { outcome, .. } => Err(err(format!(
            "refused the connection: {}",
            short(outcome.information.as_deref().unwrap_or("no reason given"))
        ))),
        other => Err(err(short(format!("unexpected greeting {other:?}")))),
    }
}

impl Connection {
    /// Sends `command` and reads until its tagged completion, handing every response (the
    /// tagged one last) to `each`. NO, BAD and BYE are errors naming `label`.
    pub async fn run(
        &mut self,
        label: &str,
        command: &str,
        limit: Duration,
        mut each: impl FnMut(&Response<'_>),
    ) -> Result<(), Error> {
        let io = |e: String| Error::Io {
            command: label.to_owned(),
            why: short(e),
        };
        let work = async {
            let tag = self
                .session
                .run_command(command)
                .await
                .map_err(|e| io(e.to_string()))?;
            loop {
                let response = self
                    .session
                    .read_response()
                    .await
                    .map_err(|e| io(e.to_string()))?
                    .ok_or_else(|| io(format!("{}: connection closed", self.server)))?;
                let parsed = response.parsed();
                if let Response::MailboxData(MailboxDatum::Exists(_)) = parsed {
                    self.exists_seen = true;
                }
                match parsed {
                    Response::Done {
                        tag: done,
                        status,
                        outcome,
                    } if *done == tag => {
                        each(parsed);
                        return match status {
                            Status::Ok => Ok(()),
                            _ => Err(ByeOr::Error(Error::Server {
                                command: label.to_owned(),
                                why: short(format!(
                                    "{status:?}: {}",
                                    outcome.information.as_deref().unwrap_or("")
                                )),
                            })),
                        };
                    }
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => {
                        let text = outcome.information.as_deref().unwrap_or("BYE").to_owned();
                        return Err(Error::Server {
                            command: label.to_owned(),
                            why: short(format!("the server closed the connection: {text}")),
                        }
                        .with_bye(text));
                    }
                    _ => each(parsed),
                }
            }
        };
        let result = timeout(limit, work).await.map_err(|_| Error::Timeout {
            command: label.to_owned(),
            limit,
        })?;
        self.after(result).await
    }

    /// When the server ended the session because the access token expired (Exchange Online:
    /// `BYE Session invalidated - AccessTokenExpired`), or said BYE once it has expired, the
    /// token is dropped from memory: the reconnect gets a new one, and this is no outage.
    async fn after<T>(&mut self, result: Result<T, ByeOr>) -> Result<T, Error> {
        match result {
            Ok(value) => Ok(value),
            Err(ByeOr::Error(e)) => Err(e),
            Err(ByeOr::Bye(e, text)) => {
                if let Some((config, token)) = &self.oauth
                    && (text.to_ascii_lowercase().contains("expired")
                        || Instant::now() >= token.expires_at)
                {
                    tracing::info!(server = %self.server, bye = %short(&text), "the server ended the session: the access token expired; the next login gets a new one");
                    oauth::forget(config, token).await;
                }
                Err(e)
            }
        }
    }

    /// Whether the connection's access token is due for renewal.
    fn renewal_due(&self) -> bool {
        self.oauth.as_ref().is_some_and(|(_, token)| token.is_due())
    }

    /// `CAPABILITY`, as upper-case atoms.
    pub async fn capabilities(&mut self) -> Result<HashSet<String>, Error> {
        let mut atoms = HashSet::new();
        self.run("CAPABILITY", "CAPABILITY", COMMAND_TIMEOUT, |r| {
            if let Response::Capabilities(caps) = r {
                atoms.extend(caps.iter().map(atom));
            }
        })
        .await?;
        Ok(atoms)
    }

    /// The hierarchy delimiter of the personal namespace (`LIST "" ""`, RFC 3501 §6.3.8);
    /// `None` for a flat server.
    pub async fn delimiter(&mut self) -> Result<Option<String>, Error> {
        let mut delimiter = None;
        self.run("LIST", "LIST \"\" \"\"", COMMAND_TIMEOUT, |r| {
            if let Response::MailboxData(MailboxDatum::List(list)) = r {
                delimiter = list.delimiter.as_deref().map(str::to_owned);
            }
        })
        .await?;
        Ok(delimiter)
    }

    /// Whether a selectable mailbox of exactly this (encoded) name exists.
    pub async fn exists(&mut self, name: &str) -> Result<bool, Error> {
        let mut found = false;
        let command = format!("LIST \"\" {}", names::quoted(name).map_err(Error::Folder)?);
        self.run("LIST", &command, COMMAND_TIMEOUT, |r| {
            if let Response::MailboxData(MailboxDatum::List(list)) = r {
                // `\NonExistent` (RFC 5258) arrives as an extension and means the same here.
                let selectable = !list.name_attributes.iter().any(|a| match a {
                    NameAttribute::NoSelect => true,
                    NameAttribute::Extension(name) => name.eq_ignore_ascii_case("\\NonExistent"),
                    _ => false,
                });
                found |= selectable && list.name == name;
            }
        })
        .await?;
        Ok(found)
    }

    /// `CREATE`, then `SUBSCRIBE` so that mail clients show the folder (best effort).
    pub async fn create(&mut self, name: &str) -> Result<(), Error> {
        let quoted = names::quoted(name).map_err(Error::Folder)?;
        self.run(
            "CREATE",
            &format!("CREATE {quoted}"),
            COMMAND_TIMEOUT,
            |_| {},
        )
        .await?;
        if let Err(e) = self
            .run(
                "SUBSCRIBE",
                &format!("SUBSCRIBE {quoted}"),
                COMMAND_TIMEOUT,
                |_| {},
            )
            .await
        {
            tracing::debug!(folder = name, error = %e, "subscribe failed");
        }
        Ok(())
    }

    /// `SELECT`; returns the folder's UIDVALIDITY (RFC 3501 §2.3.1.1).
    pub async fn select(&mut self, name: &str) -> Result<u32, Error> {
        self.open_folder("SELECT", name).await
    }

    /// `EXAMINE`: selects read-only, so that looking changes no flag (RFC 3501 §6.3.2).
    pub async fn examine(&mut self, name: &str) -> Result<u32, Error> {
        self.open_folder("EXAMINE", name).await
    }

    async fn open_folder(&mut self, verb: &str, name: &str) -> Result<u32, Error> {
        let mut validity = None;
        let command = format!("{verb} {}", names::quoted(name).map_err(Error::Folder)?);
        self.run(verb, &command, COMMAND_TIMEOUT, |r| {
            if let Response::Data { outcome, .. } = r
                && let Some(ResponseCode::UidValidity(v)) = outcome.code
            {
                validity = Some(v);
            }
        })
        .await?;
        validity.ok_or_else(|| Error::Server {
            command: verb.to_owned(),
            why: format!("{name}: the server sent no UIDVALIDITY"),
        })
    }

    /// `UID SEARCH <criteria>`: the UIDs found, ascending.
    pub async fn search(&mut self, criteria: &str) -> Result<Vec<u32>, Error> {
        let mut uids = Vec::new();
        let command = format!("UID SEARCH {criteria}");
        self.run("UID SEARCH", &command, COMMAND_TIMEOUT, |r| {
            if let Response::MailboxData(MailboxDatum::Search(found)) = r {
                uids.extend_from_slice(found);
            }
        })
        .await?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// `NOOP`, to see that a resting connection still answers. A connection whose access
    /// token is due for renewal logs out instead and answers `Error::Renew`: it is not to be
    /// reused (the next login gets a fresh token).
    pub async fn noop(&mut self) -> Result<(), Error> {
        if self.renewal_due() {
            tracing::debug!(server = %self.server, "the access token is due: logging out to log in anew");
            let _ = self.run("LOGOUT", "LOGOUT", PROBE_ANSWER, |_| {}).await;
            return Err(Error::Renew);
        }
        self.run("NOOP", "NOOP", PROBE_ANSWER, |_| {}).await
    }

    /// `LOGOUT`, best effort: the connection is dropped either way.
    pub async fn logout(mut self) {
        let _ = self.run("LOGOUT", "LOGOUT", PROBE_ANSWER, |_| {}).await;
    }

    /// One IDLE round (RFC 2177) of at most `limit`: returns `true` when the inbox is to be
    /// looked at now: the server reported new messages (EXISTS), or the connection's access
    /// token is due for renewal (the round ends then, and the pass that follows logs in anew,
    /// since `noop` refuses a due connection). Ends early, with DONE, after `IDLE_PROBE`
    /// without a line from the server; the answer to DONE shows the link is alive.
    pub async fn idle(&mut self, limit: Duration) -> Result<bool, Error> {
        let limit = match &self.oauth {
            Some((_, token)) => limit.min(token.renew_at.saturating_duration_since(Instant::now())),
            None => limit,
        };
        let result = self.idle_round(limit).await;
        let news = self.after(result).await?;
        Ok(news || self.renewal_due())
    }

    async fn idle_round(&mut self, limit: Duration) -> Result<bool, ByeOr> {
        let io = |e: String| Error::Io {
            command: "IDLE".to_owned(),
            why: short(e),
        };
        let tag = timeout(COMMAND_TIMEOUT, async {
            let tag = self
                .session
                .run_command("IDLE")
                .await
                .map_err(|e| io(e.to_string()))?;
            loop {
                let response = response_or(self.session.read_response().await, &io)?;
                match response.parsed() {
                    Response::Continue(_) => return Ok(tag),
                    Response::Done { outcome, .. } => {
                        return Err(ByeOr::Error(Error::Server {
                            command: "IDLE".to_owned(),
                            why: short(outcome.information.as_deref().unwrap_or("refused")),
                        }));
                    }
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => return Err(bye("IDLE", outcome.information.as_deref())),
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout {
            command: "IDLE".to_owned(),
            limit: COMMAND_TIMEOUT,
        })??;
        let end = Instant::now() + limit;
        let mut news = false;
        while !news {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Cancelling a pending read is safe: async-imap keeps partial input in its buffer.
            let Ok(read) = timeout(left.min(IDLE_PROBE), self.session.read_response()).await else {
                break;
            };
            let response = response_or(read, &io)?;
            match response.parsed() {
                Response::MailboxData(MailboxDatum::Exists(_)) => news = true,
                Response::Data {
                    status: Status::Bye,
                    outcome,
                } => return Err(bye("IDLE", outcome.information.as_deref())),
                _ => {} // keep-alives, flag changes, expunges by others
            }
        }
        timeout(PROBE_ANSWER, async {
            self.session
                .run_command_untagged("DONE")
                .await
                .map_err(|e| io(e.to_string()))?;
            loop {
                let response = response_or(self.session.read_response().await, &io)?;
                match response.parsed() {
                    Response::Done {
                        tag: done,
                        status: Status::Ok,
                        ..
                    } if *done == tag => return Ok(()),
                    Response::Done {
                        tag: done, outcome, ..
                    } if *done == tag => {
                        return Err(ByeOr::Error(Error::Server {
                            command: "IDLE".to_owned(),
                            why: short(outcome.information.as_deref().unwrap_or("refused")),
                        }));
                    }
                    Response::MailboxData(MailboxDatum::Exists(_)) => news = true,
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => return Err(bye("DONE", outcome.information.as_deref())),
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout {
            command: "DONE".to_owned(),
            limit: PROBE_ANSWER,
        })??;
        Ok(news)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_times_out_a_pending_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut server, _) = server.unwrap();
        let mut timed = Timed::new(client.unwrap());
        server.write_all(b"* OK hello\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(timed.read(&mut buf).await.unwrap(), 12);
        let started = Instant::now();
        let err = timed.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= READ_TIMEOUT);
    }

    #[test]
    fn capabilities_after_login_decide_the_moves() {
        let atoms = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let dovecot = Caps::of(&atoms(&["IMAP4REV1", "IDLE", "MOVE", "UIDPLUS"]));
        assert!(dovecot.has_move && dovecot.has_uidplus && dovecot.has_idle);
        assert_eq!(Caps::of(&atoms(&["IMAP4REV1"])), Caps::default());
        let rev2 = Caps::of(&atoms(&["IMAP4REV2"]));
        assert!(rev2.has_move && rev2.has_uidplus && rev2.has_idle);
    }
}
