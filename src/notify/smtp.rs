//! Submission of notices to the SMTP server: TCP, then TLS (implicit, or STARTTLS that is
//! required, RFC 3207), EHLO, AUTH if configured, and per mail MAIL FROM, RCPT TO, DATA.
//!
//! The steps are driven one by one (lettre's connection API, not its transport) for two
//! reasons: `eingang check` stops after RCPT TO without sending anything, and a failed send
//! must say whether the server may have taken the mail (only a failure after the final "."
//! leaves that open, RFC 1047). TLS is rustls with the ring provider, the system roots (the
//! Mozilla set where the system has none, as `source::tls` does) plus the optional `ca_file`;
//! there is no switch to turn verification off. AUTH happens only on an encrypted
//! connection, or in plaintext to a loopback host (the config allows `tls = "none"` only there).
//! With `auth = "oauth2"` the AUTH is XOAUTH2 or OAUTHBEARER with an access token from
//! `crate::oauth`, driven here step by step: lettre cannot answer the server's error challenge
//! and so hides why a token was refused; this says the 535 and the challenge.
//!
//! The password and the access token never appear in an error or a log line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use crate::config::{NotifyConfig, OAuth2Config, SaslMechanism, Secret, TlsMode};
use crate::oauth::{self, sasl};

/// TCP connect, TLS handshake and greeting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One command and its reply. RFC 5321 §4.5.3.2 allows servers up to 5 minutes; a notice is
/// small, and a stuck server must not hold up a shutdown for that long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The message and the reply to its final "." (RFC 5321 §4.5.3.2.6 suggests 10 minutes).
const DATA_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4). An AUTH whose initial
/// response would not fit (Microsoft's tokens run to kilobytes) sends it after the server's
/// 334 instead (RFC 4954 §4): strict servers refuse longer lines.
const MAX_COMMAND_LINE: usize = 512;

/// An SMTP failure. None of them is about a notice's content being wrong for good: the
/// notice stays in the outbox and is tried again later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection, TLS or the greeting failed.
    #[error("smtp {endpoint}: {why}")]
    Connect {
        /// `host:port`.
        endpoint: String,
        /// What failed.
        why: String,
    },
    /// The server answered a step with an error reply (4xx or 5xx).
    #[error("smtp {endpoint}: {step}: {why}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// The step, e.g. `RCPT TO <it@example.com>`.
        step: String,
        /// The server's reply.
        why: String,
        /// A 5xx reply: this mail will not be taken as it is (RFC 5321 §4.2.1).
        permanent: bool,
    },
    /// A step got no reply in time.
    #[error("smtp {endpoint}: {step}: no reply within {}s", .limit.as_secs())]
    Timeout {
        /// `host:port`.
        endpoint: String,
        /// The step.
        step: String,
        /// The limit.
        limit: Duration,
    },
    /// The `ca_file` could not be used.
    #[error("smtp: {0}")]
    Setup(String),
    /// No access token for the OAuth2 login.
    #[error("smtp {endpoint}: {error}")]
    Token {
        /// `host:port`.
        endpoint: String,
        /// Why the identity provider gave none.
        error: oauth::Error,
    },
}

/// One raw command line for lettre (lettre writes what `Display` gives).
struct Line(String);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A failed send, and whether the server may have taken the mail all the same.
///
/// A permanent refusal (`Error::Refused` with `permanent`) is about this mail (its size, a
/// recipient); anything else is about the server or the connection.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: Error,
    /// True when the failure came after the message was sent and before the server's reply
    /// to it (RFC 1047): the mail may be on its way.
    pub maybe_delivered: bool,
}

/// The longest `Session::send` to `recipients` recipients can take: MAIL FROM, one RCPT TO
/// each and DATA within `COMMAND_TIMEOUT` each, the message within `DATA_TIMEOUT`.
pub fn send_limit(recipients: usize) -> Duration {
    let commands = u32::try_from(recipients.saturating_add(2)).unwrap_or(u32::MAX);
    COMMAND_TIMEOUT
        .saturating_mul(commands)
        .saturating_add(DATA_TIMEOUT)
}

/// How to reach the SMTP server. Built once from the config; connects on demand.
pub struct Mailer {
    host: String,
    port: u16,
    tls: TlsMode,
    parameters: Option<TlsParameters>,
    login: Option<(String, Secret)>,
    oauth: Option<Arc<OAuth2Config>>,
    hello: ClientId,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("endpoint", &self.endpoint())
            .field("tls", &self.tls)
            .field("user", &self.user())
            .field("oauth2", &self.oauth.is_some())
            .finish()
    }
}

impl Mailer {
    /// Prepares the TLS parameters (reading `ca_file`) and the login.
    pub fn new(config: &NotifyConfig) -> Result<Mailer, Error> {
        let parameters = match config.tls {
            TlsMode::None => None,
            _ => Some(tls_parameters(
                &config.smtp_host,
                config.ca_file.as_deref(),
            )?),
        };
        let login = match (&config.user, &config.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            _ => None,
        };
        Ok(Mailer {
            host: config.smtp_host.clone(),
            port: config.smtp_port,
            tls: config.tls,
            parameters,
            login,
            oauth: config.oauth.clone(),
            hello: ClientId::default(),
        })
    }

    /// `host:port`, as errors and `check` name the server.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The AUTH login name, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.oauth {
            Some(oauth) => Some(oauth.user.as_str()),
            None => self.login.as_ref().map(|(user, _)| user.as_str()),
        }
    }

    fn connect_error(&self, why: impl fmt::Display) -> Error {
        Error::Connect {
            endpoint: self.endpoint(),
            why: crate::source::tls::plain_words(&why.to_string(), &self.host),
        }
    }

    /// Connects: TCP, TLS (implicit, or STARTTLS which must be offered and succeed), EHLO.
    pub async fn connect(&self) -> Result<Session, Error> {
        let implicit = match self.tls {
            TlsMode::Implicit => self.parameters.clone(),
            _ => None,
        };
        let connecting = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(CONNECT_TIMEOUT),
            &self.hello,
            implicit,
            None,
        );
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.connect_error(e)),
            Err(_) => {
                return Err(Error::Timeout {
                    endpoint: self.endpoint(),
                    step: "connect".to_owned(),
                    limit: CONNECT_TIMEOUT,
                });
            }
        };
        if self.tls == TlsMode::StartTls {
            // RFC 3207 §4: no AUTH and no mail before the upgrade; a server (or a man in the
            // middle) that drops STARTTLS from the EHLO reply gets nothing.
            if !conn.server_info().supports_feature(Extension::StartTls) {
                conn.abort().await;
                return Err(self.connect_error(
                    "the server does not offer STARTTLS, which tls = \"starttls\" requires",
                ));
            }
            let parameters = self
                .parameters
                .clone()
                .ok_or_else(|| Error::Setup("no TLS parameters for STARTTLS".to_owned()))?;
            match tokio::time::timeout(CONNECT_TIMEOUT, conn.starttls(parameters, &self.hello))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(self.connect_error(format!("STARTTLS: {e}"))),
                Err(_) => {
                    return Err(Error::Timeout {
                        endpoint: self.endpoint(),
                        step: "STARTTLS".to_owned(),
                        limit: CONNECT_TIMEOUT,
                    });
                }
            }
        }
        Ok(Session {
            conn,
            endpoint: self.endpoint(),
        })
    }

    /// Logs in if a user is configured; a no-op otherwise.
    pub async fn login(&self, session: &mut Session) -> Result<(), Error> {
        if (self.login.is_some() || self.oauth.is_some())
            && !session.conn.is_encrypted()
            && self.tls != TlsMode::None
        {
            return Err(self.connect_error("refusing AUTH on a connection without TLS"));
        }
        if let Some(oauth) = &self.oauth {
            return self.login_with_token(session, oauth).await;
        }
        let Some((user, password)) = &self.login else {
            return Ok(());
        };
        let credentials = Credentials::new(user.clone(), password.expose().to_owned());
        let step = format!("AUTH as {user}");
        // PLAIN first (RFC 4616), LOGIN for servers that only know that one.
        let auth = session
            .conn
            .auth(&[Mechanism::Plain, Mechanism::Login], &credentials);
        within(&session.endpoint, &step, COMMAND_TIMEOUT, auth)
            .await
            .map(drop)
    }
}

impl Mailer {
    /// AUTH XOAUTH2 (unless OAUTHBEARER is configured: lettre does not report that one) with
    /// an access token (RFC 4954). A refusal comes as a 334 with the server's error challenge
    /// (base64 JSON, RFC 7628 §3.2.2), which is answered so that the server sends its 535; both
    /// go into the error, and the token is dropped from memory.
    async fn login_with_token(
        &self,
        session: &mut Session,
        oauth: &OAuth2Config,
    ) -> Result<(), Error> {
        let endpoint = self.endpoint();
        let token = oauth::access_token(oauth)
            .await
            .map_err(|error| Error::Token {
                endpoint: endpoint.clone(),
                error,
            })?;
        let mechanism = oauth.mechanism.unwrap_or(SaslMechanism::XOAuth2);
        let name = mechanism.name();
        let step = format!("AUTH {name} as {}", oauth.user);
        let first = BASE64.encode(sasl::initial_response(
            mechanism,
            &oauth.user,
            &self.host,
            self.port,
            token.secret(),
        ));
        let with_initial = format!("AUTH {name} {first}\r\n");
        let conn = &mut session.conn;
        let reply = if with_initial.len() <= MAX_COMMAND_LINE {
            within(
                &endpoint,
                &step,
                COMMAND_TIMEOUT,
                conn.command(Line(with_initial)),
            )
            .await
        } else {
            let go = within(
                &endpoint,
                &step,
                COMMAND_TIMEOUT,
                conn.command(Line(format!("AUTH {name}\r\n"))),
            )
            .await?;
            if !go.has_code(334) {
                return Err(Error::Refused {
                    endpoint,
                    step,
                    why: format!("expected 334, the server said {}", go.code()),
                    permanent: true,
                });
            }
            within(
                &endpoint,
                &step,
                COMMAND_TIMEOUT,
                conn.command(Line(format!("{first}\r\n"))),
            )
            .await
        };
        let hint = format!(
            "the mail server refused the access token: check oauth_scope ({:?}), the app's SMTP permission and that `user` is the token's mailbox",
            oauth.scope
        );
        match reply {
            Ok(answer) if answer.has_code(334) => {
                let challenge = answer
                    .first_line()
                    .and_then(|l| BASE64.decode(l.trim()).ok())
                    .map(|bytes| sasl::describe_challenge(&bytes))
                    .unwrap_or_default();
                let answer = BASE64.encode(sasl::error_answer(mechanism));
                let end = within(
                    &endpoint,
                    &step,
                    COMMAND_TIMEOUT,
                    conn.command(Line(format!("{answer}\r\n"))),
                )
                .await;
                oauth::forget(oauth, &token).await;
                let why = match end {
                    Err(Error::Refused { why, .. }) => why,
                    Err(e) => e.to_string(),
                    Ok(r) => format!(
                        "the server answered {} to the end of the exchange",
                        r.code()
                    ),
                };
                Err(Error::Refused {
                    endpoint,
                    step,
                    why: format!("{why} (its challenge: {challenge}); {hint}"),
                    permanent: true,
                })
            }
            Ok(_) => Ok(()),
            Err(Error::Refused {
                endpoint,
                step,
                why,
                permanent,
            }) => {
                oauth::forget(oauth, &token).await;
                Err(Error::Refused {
                    endpoint,
                    step,
                    why: format!("{why}; {hint}"),
                    permanent,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// The TLS parameters for lettre: the system roots (or the Mozilla set where the system has
/// none) and the `ca_file` certificates; the certificate must name `host`.
fn tls_parameters(host: &str, ca_file: Option<&std::path::Path>) -> Result<TlsParameters, Error> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if rustls_native_certs::load_native_certs().certs.is_empty() {
        builder = builder.certificate_store(CertificateStore::WebpkiRoots);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Setup(format!("ca_file {}: {e}", path.display())))?;
        // lettre takes a file without any certificate as an empty list; refuse it, as
        // `source::tls` does, instead of trusting only the system roots unannounced.
        if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
            return Err(Error::Setup(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| Error::Setup(format!("ca_file {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| Error::Setup(format!("tls: {e}")))
}

/// An open, greeted (and upgraded) SMTP connection.
pub struct Session {
    conn: AsyncSmtpConnection,
    endpoint: String,
}

impl Session {
    /// MAIL FROM, with SMTPUTF8 for non-ASCII addresses and 8BITMIME for a non-ASCII message
    /// (RFC 6531, RFC 6152), refused if the server lacks them.
    async fn mail_from(
        &mut self,
        from: &Address,
        to: &[Address],
        eight_bit: bool,
    ) -> Result<(), Error> {
        let mut parameters = Vec::new();
        let step = format!("MAIL FROM <{from}>");
        let needs = |ext: Extension, name: &str, conn: &AsyncSmtpConnection| {
            if conn.server_info().supports_feature(ext) {
                Ok(())
            } else {
                Err(Error::Refused {
                    endpoint: self.endpoint.clone(),
                    step: step.clone(),
                    why: format!("the server does not offer {name}"),
                    permanent: true,
                })
            }
        };
        let ascii = |a: &Address| AsRef::<str>::as_ref(a).is_ascii();
        if !ascii(from) || !to.iter().all(ascii) {
            needs(Extension::SmtpUtfEight, "SMTPUTF8", &self.conn)?;
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if eight_bit {
            needs(Extension::EightBitMime, "8BITMIME", &self.conn)?;
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = self.conn.command(Mail::new(Some(from.clone()), parameters));
        within(&self.endpoint, &step, COMMAND_TIMEOUT, mail)
            .await
            .map(drop)
    }

    /// RCPT TO for one recipient.
    async fn rcpt_to(&mut self, to: &Address) -> Result<(), Error> {
        let step = format!("RCPT TO <{to}>");
        let command = self.conn.command(Rcpt::new(to.clone(), Vec::new()));
        within(&self.endpoint, &step, COMMAND_TIMEOUT, command)
            .await
            .map(drop)
    }

    /// Sends one message to every recipient. After an error the session is spent: drop it.
    /// It takes at most `send_limit(to.len())`.
    pub async fn send(
        &mut self,
        from: &Address,
        to: &[Address],
        message: &[u8],
    ) -> Result<(), SendError> {
        let before_data = |error| SendError {
            error,
            maybe_delivered: false,
        };
        self.mail_from(from, to, !message.is_ascii())
            .await
            .map_err(before_data)?;
        for recipient in to {
            self.rcpt_to(recipient).await.map_err(before_data)?;
        }
        let data = self.conn.command(Data);
        within(&self.endpoint, "DATA", COMMAND_TIMEOUT, data)
            .await
            .map_err(before_data)?;
        // From here on the server may take the mail even if its reply never reaches us; an
        // error reply, though, says it did not (RFC 5321 §4.1.1.4).
        let sent = self.conn.message(message);
        within(&self.endpoint, "end of DATA", DATA_TIMEOUT, sent)
            .await
            .map_err(|error| SendError {
                maybe_delivered: !matches!(error, Error::Refused { .. }),
                error,
            })?;
        Ok(())
    }

    /// Asks whether the server takes mail from `from` (MAIL FROM), without sending any.
    pub async fn probe_sender(&mut self, from: &Address) -> Result<(), Error> {
        self.mail_from(from, &[], false).await
    }

    /// Asks whether the server takes mail for `to` (RCPT TO), after `probe_sender`.
    pub async fn probe_recipient(&mut self, to: &Address) -> Result<(), Error> {
        self.rcpt_to(to).await
    }

    /// Ends the transaction without DATA (RSET, RFC 5321 §4.1.1.5), then says QUIT.
    pub async fn reset_and_quit(mut self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.conn.command(Rset)).await;
        self.quit().await;
    }

    /// Says QUIT and closes the connection.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.conn.quit()).await;
    }
}

/// Awaits one SMTP step with a deadline, naming the step in the error.
async fn within<T>(
    endpoint: &str,
    step: &str,
    limit: Duration,
    future: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(value)) => Ok(value),
        // A reply code means the server answered; anything else (a reset, a TLS alert, a
        // reply that does not parse) means the connection is gone.
        Ok(Err(e)) if e.status().is_some() => Err(Error::Refused {
            endpoint: endpoint.to_owned(),
            step: step.to_owned(),
            why: e.to_string(),
            permanent: e.is_permanent(),
        }),
        Ok(Err(e)) => Err(Error::Connect {
            endpoint: endpoint.to_owned(),
            why: format!("{step}: {e}"),
        }),
        Err(_) => Err(Error::Timeout {
            endpoint: endpoint.to_owned(),
            step: step.to_owned(),
            limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let Err(err) = tls_parameters("mail.example.com", Some(&path)) else {
            panic!("a ca_file without certificates was taken");
        };
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(tls_parameters("mail.example.com", None).is_ok());
    }
}
