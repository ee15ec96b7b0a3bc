//! One signed POST to a webhook connector: reqwest over rustls with ring and the trust of
//! `source::tls` (system roots plus the connector's `ca_file`), HTTP/1.1, no redirects (a 3xx
//! is a failure, as at Svix: the body must not be replayed elsewhere), a deadline on the whole
//! attempt, and the start of an error answer kept for `status`. Nothing here logs a URL with
//! its query, the key, or a body.

use std::time::Duration;

use super::config::WebhookConfig;
use super::sign::SigningKey;

/// How much of an error answer is kept, in characters.
const MAX_TEXT_CHARS: usize = 200;
/// An answer is read to its end (the connection is reused), but not beyond this.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The TCP connect and TLS handshake, at most (less when `timeout` is shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook endpoint with its client (one connection pool per connector).
pub struct Webhook {
    url: String,
    key: SigningKey,
    timeout: Duration,
    client: reqwest::Client,
}

/// The URL as it may be shown: scheme, host, port and path; no user, password or query,
/// where tokens often travel.
pub fn shown(url: &str) -> String {
    match oauth2::url::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.path()
            )
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

impl Webhook {
    /// A client for this endpoint, trusting the system roots and `ca_file`.
    pub fn new(config: &WebhookConfig) -> Result<Webhook, String> {
        let tls = crate::source::tls::client_config(config.ca_file.as_deref())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT.min(config.timeout))
            .timeout(config.timeout)
            .user_agent(concat!("eingang/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("http client: {}", chain(&e)))?;
        Ok(Webhook {
            url: config.url.clone(),
            key: config.key.clone(),
            timeout: config.timeout,
            client,
        })
    }

    /// The endpoint as it may be shown.
    pub fn shown_url(&self) -> String {
        shown(&self.url)
    }

    /// One attempt: the body under `id`, with a fresh timestamp and signature. `Ok` for a
    /// 2xx answer; anything else is the failure in words.
    pub async fn post(&self, id: &str, body: &[u8]) -> Result<(), String> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.key.sign(id, timestamp, body);
        let mut response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| self.transport_words(e))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_words(e))?
        {
            if answer.len() < MAX_ANSWER_BYTES {
                answer.extend_from_slice(&chunk);
            }
        }
        if status.is_success() {
            return Ok(());
        }
        let text = one_line(&String::from_utf8_lossy(&answer));
        let code = status.as_u16();
        if status.is_redirection() {
            let to = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(shown)
                .unwrap_or_default();
            return Err(format!(
                "HTTP {code}: a redirect (to {to}), not followed: point the connector's url at the final address"
            ));
        }
        Err(if text.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {text}")
        })
    }

    /// A transport error in words, without the URL (its query may hold a token).
    fn transport_words(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {} s", self.timeout.as_secs_f32());
        }
        let text = chain(&e.without_url());
        format!("{}: {text}", self.shown_url())
    }
}

/// An error with its causes, `: `-separated, on one line.
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
fn one_line(text: &str) -> String {
    let line = crate::notify::text::one_line(text);
    match line.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}
