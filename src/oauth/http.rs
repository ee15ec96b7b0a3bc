//! The HTTP client under oauth2's requests: reqwest over rustls with ring and the trust of
//! `source::tls` (system roots plus the login's `ca_file`), HTTP/1.1, no redirects (a token
//! request must not be replayed elsewhere), a deadline on every request and a bound on every
//! answer. An error answer that is not OAuth2's JSON becomes an error here, with its status
//! and text; a success answer passes to oauth2 untouched. Nothing here logs a request or an
//! answer: their bodies hold secrets and tokens.

use std::path::Path;
use std::time::Duration;

use oauth2::{HttpRequest, HttpResponse};

/// TCP connect and TLS handshake to the identity provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// One request and its whole answer.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A token answer is a few kilobytes; anything far larger is not one.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Longest piece of an error answer kept for a message.
const MAX_TEXT_CHARS: usize = 300;

/// A request that got no OAuth2 answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer: connection, TLS, timeout, a broken or oversized answer.
    #[error("{0}")]
    Transport(String),
    /// An error status whose body is not an OAuth2 error.
    #[error("HTTP {status}: {text}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body, on one line.
        text: String,
    },
}

impl HttpError {
    /// Whether it is worth trying again later: no answer, a server error, or too many requests.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport(_) => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 429,
        }
    }
}

/// The client for one login's identity provider (cheap to clone: one connection pool).
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client trusting the system roots and `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Http, String> {
        let tls = crate::source::tls::client_config(ca_file)?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("eingang/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {}", chain(&e)))?;
        Ok(Http { client })
    }

    /// Sends one request of oauth2 and hands back its answer. Takes the client by value, so
    /// that the future borrows nothing: oauth2 calls it through a higher-ranked closure, and a
    /// borrowing future would not be provably `Send` (rust-lang/rust#64552).
    pub async fn call(self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let mut builder = self
            .client
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| HttpError::Transport(transport_words(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HttpError::Transport(transport_words(&e)))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HttpError::Transport(format!(
                    "the answer is larger than {} KiB",
                    MAX_ANSWER_BYTES / 1024
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() && !is_oauth_error(&bytes) {
            return Err(HttpError::Status {
                status: status.as_u16(),
                text: one_line(&String::from_utf8_lossy(&bytes)),
            });
        }
        let mut answer = oauth2::http::Response::builder().status(status);
        if let Some(h) = answer.headers_mut() {
            *h = headers;
        }
        answer
            .body(bytes)
            .map_err(|e| HttpError::Transport(e.to_string()))
    }
}

/// Whether a body is an OAuth2 error answer (RFC 6749 §5.2): a JSON object with `error`.
fn is_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").map(serde_json::Value::is_string))
        .unwrap_or(false)
}

/// A reqwest error in words, without the request (reqwest names only the URL, which holds
/// no secret).
fn transport_words(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    chain(e)
}

/// An error with its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    one_line(&text)
}

/// Outside text on one bounded line.
pub(super) fn one_line(text: &str) -> String {
    let line = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match line.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}
