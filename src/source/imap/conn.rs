//! One IMAP connection: TCP with a deadline on every read, TLS (implicit, or STARTTLS that is
//! required), LOGIN, the capabilities read again after TLS and after login, and the commands
//! the source needs, each read to its tagged completion under a timeout. async-imap gives the
//! session and the response parser; the commands are sent raw because its helpers drop what
//! we must check (the tagged status of a FETCH, the COPYUID of a UID COPY, RFC 4315).
//!
//! Never logs or returns the password.

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
use crate::config::{RemoteConfig, TlsMode};
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
        why: short(e),
    })?;
    let mut conn = Connection {
        session,
        server,
        caps: Caps::default(),
        exists_seen: false,
    };
    // Capabilities change at login (RFC 3501 §7.2.1; Dovecot adds MOVE and UIDPLUS only
    // then): read them now, never trust the plaintext ones.
    conn.caps = Caps::of(&conn.capabilities().await?);
    Ok(conn)
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
            greeting(&mut client, server, true).await?;
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
            greeting(&mut client, server, false).await?;
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
        .map_err(|e| tls_err(e.to_string()))?;
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
                            _ => Err(Error::Server {
                                command: label.to_owned(),
                                why: short(format!(
                                    "{status:?}: {}",
                                    outcome.information.as_deref().unwrap_or("")
                                )),
                            }),
                        };
                    }
                    Response::Data {
                        status: Status::Bye,
                        outcome,
                    } => {
                        return Err(Error::Server {
                            command: label.to_owned(),
                            why: short(format!(
                                "the server closed the connection: {}",
                                outcome.information.as_deref().unwrap_or("BYE")
                            )),
                        });
                    }
                    _ => each(parsed),
                }
            }
        };
        timeout(limit, work).await.map_err(|_| Error::Timeout {
            command: label.to_owned(),
            limit,
        })?
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

    /// `NOOP`, to see that a resting connection still answers.
    pub async fn noop(&mut self) -> Result<(), Error> {
        self.run("NOOP", "NOOP", PROBE_ANSWER, |_| {}).await
    }

    /// `LOGOUT`, best effort: the connection is dropped either way.
    pub async fn logout(mut self) {
        let _ = self.run("LOGOUT", "LOGOUT", PROBE_ANSWER, |_| {}).await;
    }

    /// One IDLE round (RFC 2177) of at most `limit`: returns `true` when the server reported
    /// new messages (EXISTS). Ends early, with DONE, after `IDLE_PROBE` without a line from the
    /// server; the answer to DONE shows the link is alive.
    pub async fn idle(&mut self, limit: Duration) -> Result<bool, Error> {
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
                        return Err(Error::Server {
                            command: "IDLE".to_owned(),
                            why: short(outcome.information.as_deref().unwrap_or("refused")),
                        });
                    }
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
                    ..
                } => return Err(io("the server closed the connection (BYE)".to_owned())),
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
                        return Err(Error::Server {
                            command: "IDLE".to_owned(),
                            why: short(outcome.information.as_deref().unwrap_or("refused")),
                        });
                    }
                    Response::MailboxData(MailboxDatum::Exists(_)) => news = true,
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
