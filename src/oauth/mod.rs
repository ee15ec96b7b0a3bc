//! OAuth2 logins for the mailboxes (an IMAP source, `[notify]`): access tokens from the
//! identity provider's token endpoint, kept in memory only and shared by every login of the
//! process that uses the same account, renewed before they expire; refresh tokens in the
//! store, each rotated one committed before its access token is used; the device-code sign-in
//! of `eingang oauth login`; the SASL messages and the provider presets.
//!
//! - `cache`: one access token per account (token URL, client id, user, scope), single-flight.
//! - `grant`: client credentials and refresh token (with rotation), the IdP's errors in words.
//! - `device`: the device authorization grant (RFC 8628) for the first consent.
//! - `http`: the HTTP client under oauth2's requests (reqwest, rustls with ring).
//! - `sasl`: XOAUTH2 and OAUTHBEARER (RFC 7628).
//! - `preset`: `provider = "microsoft365" | "gmail"`.
//!
//! Never logs, returns or stores an access token or a client secret; the refresh token goes
//! to the store and nowhere else. Errors carry the identity provider's own words.

mod cache;
pub mod device;
mod grant;
mod http;
pub mod preset;
pub mod sasl;

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{OAuth2Config, Secret};

pub use cache::{access_token, forget};

/// An access token is renewed this long before it expires (a quarter of its lifetime when
/// that is shorter), so that no command and no IDLE round meets an expired token: Exchange
/// Online ends such sessions with `BYE … AccessTokenExpired`.
pub const RENEW_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The lifetime assumed when the token endpoint names none (RFC 6749 §5.1 leaves it
/// optional); a server that refuses the token earlier only costs a refresh.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// A token is counted as living at least this long, so that a provider announcing a
/// (nearly) zero lifetime cannot make a connection log in again and again without pause.
const MIN_LIFETIME: Duration = Duration::from_secs(10);

/// An access token in memory, with when it expires and when it is to be renewed. `Debug`
/// shows the times only.
#[derive(Clone)]
pub struct AccessToken {
    secret: Secret,
    /// When the token endpoint said it expires.
    pub expires_at: Instant,
    /// When it is renewed: `RENEW_MARGIN` (or a quarter of its lifetime) before `expires_at`.
    pub renew_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// A token issued now that lives `lifetime` (`None`: `DEFAULT_LIFETIME`).
    fn issued(secret: Secret, lifetime: Option<Duration>) -> AccessToken {
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME).max(MIN_LIFETIME);
        let now = Instant::now();
        AccessToken {
            secret,
            expires_at: now + lifetime,
            renew_at: now + lifetime - RENEW_MARGIN.min(lifetime / 4),
        }
    }

    /// The token itself, for the SASL message only.
    pub fn secret(&self) -> &str {
        self.secret.expose()
    }

    /// Whether the time to renew it has come.
    pub fn is_due(&self) -> bool {
        Instant::now() >= self.renew_at
    }

    fn is(&self, other: &AccessToken) -> bool {
        self.secret.expose() == other.secret.expose()
    }
}

/// An OAuth2 failure, with the identity provider's own words where it gave any.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token endpoint could not be reached, timed out or failed (5xx, 429): transient.
    #[error("oauth2: no token from {url}: {why}")]
    Unavailable {
        /// The endpoint.
        url: String,
        /// What happened.
        why: String,
    },
    /// The identity provider refused the request: a wrong client, secret, scope or tenant,
    /// consent missing. Trying again will not help until the config or the app changes.
    #[error("oauth2: {url} refused the {grant} grant: {why}")]
    Refused {
        /// The endpoint.
        url: String,
        /// `client_credentials`, `refresh_token` or `device_code`.
        grant: &'static str,
        /// The provider's error, in words.
        why: String,
    },
    /// There is no usable refresh token: a person must sign in (again).
    #[error("oauth2: {why}; run `eingang oauth login {login}`")]
    NeedsLogin {
        /// The name `eingang oauth login` takes.
        login: String,
        /// Why.
        why: String,
    },
    /// The store, the TLS setup, or the sign-in itself failed.
    #[error("oauth2: {0}")]
    Failed(String),
}

impl Error {
    /// Whether trying again later may help without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Failed(_))
    }
}

/// What `eingang check` names for the token round of a login.
pub fn describe(config: &OAuth2Config) -> String {
    format!(
        "oauth2 token ({} grant, client {}) from {}",
        config.grant.name(),
        config.client_id,
        config.token_url
    )
}

/// The token round of `eingang check`: a token got (a refresh token rotated and stored, where
/// the grant does so), or the reason there is none.
pub async fn check(config: &OAuth2Config) -> Result<(), String> {
    access_token(config)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The account key: logins with the same token endpoint, client, user and scope share their
/// tokens (an IMAP source and `[notify]` on one mailbox, say).
fn account_key(config: &OAuth2Config) -> String {
    format!(
        "{} {} {} {}",
        config.token_url, config.client_id, config.user, config.scope
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_token_is_renewed_before_it_expires_even_when_short_lived() {
        let hour = AccessToken::issued(
            Secret::new("SENTINEL-at".into()),
            Some(Duration::from_secs(3600)),
        );
        assert_eq!(hour.expires_at - hour.renew_at, RENEW_MARGIN);
        let short = AccessToken::issued(Secret::new("t".into()), Some(Duration::from_secs(20)));
        assert_eq!(short.expires_at - short.renew_at, Duration::from_secs(5));
        let zero = AccessToken::issued(Secret::new("t".into()), Some(Duration::ZERO));
        assert!(
            zero.renew_at > Instant::now(),
            "a zero lifetime is not taken at its word"
        );
        assert!(!format!("{hour:?}").contains("SENTINEL"));
    }
}
