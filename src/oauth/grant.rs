//! Getting an access token: the client-credentials grant (app-only access), and the
//! refresh-token grant with rotation. A refresh token comes from the store (the newest one,
//! rotated by the identity provider) or, the first time, from the config; the new refresh
//! token a refresh returns is committed to the store before its access token is handed out,
//! so that a crash right after costs nothing and the old one is never sent again. A refused
//! refresh token (`invalid_grant`: expired, revoked, reused) marks the account as needing a
//! sign-in, with one notice, and no further request goes out with it.
//!
//! One refresh at a time per store across processes (a lock file beside the store), since two
//! refreshes with one rotating token make the identity provider refuse the second, or revoke
//! the whole family.

use std::path::{Path, PathBuf};

use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use sha2::{Digest, Sha256};

use super::http::{Http, HttpError, one_line};
use super::{AccessToken, Error, account_key};
use crate::config::{Grant, OAuth2Config, Secret};
use crate::store::{Location, Store};

/// An oauth2 client with its token endpoint set.
pub(super) type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// A refused refresh token, apart from every other failure.
enum Failure {
    /// `invalid_grant`, in words.
    InvalidGrant(String),
    /// Anything else.
    Other(Error),
}

/// The oauth2 client of a login.
pub(super) fn client(config: &OAuth2Config) -> Result<TokenClient, Error> {
    let token_url = TokenUrl::new(config.token_url.clone())
        .map_err(|e| Error::Failed(format!("oauth_token_url: {e}")))?;
    let mut client = BasicClient::new(ClientId::new(config.client_id.clone()))
        // client_secret_post (RFC 6749 §2.3.1): what both big providers take, and a public
        // client simply sends its id.
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url);
    if let Some(secret) = &config.client_secret {
        client = client.set_client_secret(ClientSecret::new(secret.expose().to_owned()));
    }
    Ok(client)
}

/// The scopes of a login, for oauth2.
pub(super) fn scopes(config: &OAuth2Config) -> Vec<Scope> {
    config
        .scope
        .split_whitespace()
        .map(|s| Scope::new(s.to_owned()))
        .collect()
}

/// A new access token for the login, by its grant.
pub(super) async fn fetch(config: &OAuth2Config) -> Result<AccessToken, Error> {
    let http = Http::new(config.ca_file.as_deref()).map_err(Error::Failed)?;
    let send = |request| http.clone().call(request);
    let client = client(config)?;
    match config.grant {
        Grant::ClientCredentials => {
            let answer = client
                .exchange_client_credentials()
                .add_scopes(scopes(config))
                .request_async(&send)
                .await
                .map_err(|e| match failure(config, "client_credentials", e) {
                    Failure::InvalidGrant(why) => refused(config, "client_credentials", why),
                    Failure::Other(e) => e,
                })?;
            tracing::debug!(login = %config.login, "access token got (client credentials)");
            Ok(AccessToken::issued(
                Secret::new(answer.access_token().secret().clone()),
                answer.expires_in(),
            ))
        }
        Grant::RefreshToken => {
            let _lock = lock(&config.store).await?;
            let account = account_key(config);
            let seed = config.refresh_token.as_ref().map(fingerprint);
            let (refresh, seed) = {
                let (account, seed) = (account.clone(), seed.clone());
                let configured = config.refresh_token.clone();
                let login = config.login.clone();
                with_store(&config.store, move |store| {
                    choose(store, &account, &login, configured, seed)
                })
                .await??
            };
            let result = client
                .exchange_refresh_token(&RefreshToken::new(refresh.expose().to_owned()))
                .add_scopes(scopes(config))
                .request_async(&send)
                .await;
            let answer = match result {
                Ok(answer) => answer,
                Err(e) => {
                    return Err(match failure(config, "refresh_token", e) {
                        Failure::Other(e) => e,
                        Failure::InvalidGrant(words) => {
                            let why = format!(
                                "the identity provider refused the refresh token: it expired, was revoked or was used before ({words})"
                            );
                            let (login, text) = (config.login.clone(), why.clone());
                            let told = with_store(&config.store, move |store| {
                                store.refuse_refresh_token(&account, &login, seed.as_deref(), &text)
                            })
                            .await?
                            .map_err(store_error)?;
                            if told {
                                tracing::error!(login = %config.login, "{why}; a person must sign in again: eingang oauth login {}", config.login);
                            }
                            Error::NeedsLogin {
                                login: config.login.clone(),
                                why,
                            }
                        }
                    });
                }
            };
            // Rotation: a new refresh token replaces the used one, committed before the access
            // token is used; a provider that does not rotate (Google) keeps the old one valid.
            let next = answer
                .refresh_token()
                .map(|t| t.secret().clone())
                .unwrap_or_else(|| refresh.expose().to_owned());
            let rotated = answer.refresh_token().is_some();
            let login = config.login.clone();
            with_store(&config.store, move |store| {
                store.save_refresh_token(&account, &login, &next, seed.as_deref())
            })
            .await?
            .map_err(store_error)?;
            crate::fault::point("oauth_after_refresh_saved");
            tracing::debug!(login = %config.login, rotated, "access token got (refresh token)");
            Ok(AccessToken::issued(
                Secret::new(answer.access_token().secret().clone()),
                answer.expires_in(),
            ))
        }
    }
}

/// The refresh token to use: a configured one the store has not seen yet (a new one the
/// admin put there), else the store's, unless it was refused.
fn choose(
    store: &Store,
    account: &str,
    login: &str,
    configured: Option<Secret>,
    seed: Option<String>,
) -> Result<(Secret, Option<String>), Error> {
    let stored = store.oauth_grant(account).map_err(store_error)?;
    if let Some(configured) = configured
        && stored.as_ref().and_then(|g| g.seed.as_deref()) != seed.as_deref()
    {
        return Ok((configured, seed));
    }
    match stored {
        Some(grant) => match (grant.needs_login, grant.refresh_token) {
            (Some(why), _) => Err(Error::NeedsLogin {
                login: login.to_owned(),
                why,
            }),
            (None, Some(token)) => Ok((Secret::new(token), grant.seed)),
            (None, None) => Err(no_refresh_token(login)),
        },
        None => Err(no_refresh_token(login)),
    }
}

fn no_refresh_token(login: &str) -> Error {
    Error::NeedsLogin {
        login: login.to_owned(),
        why: "no refresh token is stored for this login yet".to_owned(),
    }
}

/// A refusal that a refresh-token grant would call `invalid_grant`, for the other grants.
fn refused(config: &OAuth2Config, grant: &'static str, why: String) -> Error {
    Error::Refused {
        url: config.token_url.clone(),
        grant,
        why,
    }
}

/// An oauth2 error in words, sorted by what follows.
fn failure(
    config: &OAuth2Config,
    grant: &'static str,
    e: RequestTokenError<HttpError, oauth2::basic::BasicErrorResponse>,
) -> Failure {
    let url = config.token_url.clone();
    match e {
        RequestTokenError::ServerResponse(answer) => {
            let code = answer.error().as_ref().to_owned();
            let words = explain(
                &code,
                answer.error_description().map(String::as_str),
                config,
            );
            match answer.error() {
                BasicErrorResponseType::InvalidGrant => Failure::InvalidGrant(words),
                BasicErrorResponseType::Extension(e)
                    if e == "temporarily_unavailable" || e == "server_error" =>
                {
                    Failure::Other(Error::Unavailable { url, why: words })
                }
                _ => Failure::Other(Error::Refused {
                    url,
                    grant,
                    why: words,
                }),
            }
        }
        other => Failure::Other(answer_error(config, grant, other)),
    }
}

/// An oauth2 error that is not the provider's OAuth2 error answer.
pub(super) fn answer_error<T: oauth2::ErrorResponse + 'static>(
    config: &OAuth2Config,
    grant: &'static str,
    e: RequestTokenError<HttpError, T>,
) -> Error {
    let url = config.token_url.clone();
    match e {
        RequestTokenError::Request(h) if h.is_transient() => Error::Unavailable {
            url,
            why: h.to_string(),
        },
        RequestTokenError::Request(h) => Error::Refused {
            url,
            grant,
            why: h.to_string(),
        },
        // The body is not shown: a success answer that fails to parse holds tokens.
        RequestTokenError::Parse(e, _) => Error::Unavailable {
            url,
            why: format!("the answer is not a token answer (at {})", e.path()),
        },
        RequestTokenError::ServerResponse(answer) => Error::Refused {
            url,
            grant,
            why: one_line(&answer.to_string()),
        },
        RequestTokenError::Other(why) => Error::Failed(why),
    }
}

/// The provider's error code and description, with what it usually means. Microsoft names
/// its reasons `AADSTS<n>` in the description.
pub(super) fn explain(code: &str, description: Option<&str>, config: &OAuth2Config) -> String {
    let text = match description {
        Some(d) => format!("{code}: {}", one_line(d)),
        None => code.to_owned(),
    };
    let aadsts = description.and_then(|d| {
        let at = d.find("AADSTS")? + "AADSTS".len();
        let digits: String = d[at..].chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty()).then_some(digits)
    });
    let hint = match (code, aadsts.as_deref()) {
        (_, Some("65001")) => Some(
            "consent is missing: an administrator must grant the app its mail permissions (admin consent), or the user must consent at sign-in".to_owned(),
        ),
        (_, Some("90002" | "900023" | "90013")) => {
            Some("the tenant is unknown: check oauth_tenant (the directory id or a verified domain)".to_owned())
        }
        (_, Some("700016")) => Some(
            "the app is not known in this tenant: check oauth_client_id and oauth_tenant".to_owned(),
        ),
        (_, Some("7000215" | "7000222")) => Some(
            "the client secret is wrong or expired: make a new one in the app registration".to_owned(),
        ),
        (_, Some("7000218")) => Some(
            "the app is not a public client: allow public client flows in its registration, or give oauth_client_secret_env".to_owned(),
        ),
        (_, Some("70011")) | ("invalid_scope", _) => Some(format!(
            "the scope {:?} was refused: check oauth_scope",
            config.scope
        )),
        ("invalid_client", _) => Some(
            "the client was refused: check oauth_client_id and the client secret (and the tenant)".to_owned(),
        ),
        ("unauthorized_client", _) => Some(format!(
            "this client may not use oauth_grant = {:?}: check the app registration",
            config.grant.name()
        )),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{hint} ({text})"),
        None => text,
    }
}

/// A fingerprint of a configured refresh token, so that the store can tell whether the config
/// now names a new one (the token itself stays out of that column).
pub(super) fn fingerprint(token: &Secret) -> String {
    Sha256::digest(token.expose().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs a store call on the blocking pool, on a connection of its own.
pub(super) async fn with_store<T: Send + 'static>(
    location: &Location,
    call: impl FnOnce(&Store) -> T + Send + 'static,
) -> Result<T, Error> {
    let location = location.clone();
    tokio::task::spawn_blocking(move || {
        let store = Store::open_at(&location).map_err(store_error)?;
        Ok(call(&store))
    })
    .await
    .map_err(|e| Error::Failed(format!("the store task stopped: {e}")))?
}

pub(super) fn store_error(e: crate::store::Error) -> Error {
    Error::Failed(e.to_string())
}

/// The lock file beside a store; held, by `flock`, while a refresh token is in use.
fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".oauth-lock");
    store.with_file_name(name)
}

/// Takes the refresh lock of a store (waiting for another process's refresh to end); it is
/// released when the returned file is dropped, or when the process dies.
pub(super) async fn lock(store: &Location) -> Result<std::fs::File, Error> {
    // A PostgreSQL store has one owner daemon at a time (`lock::StoreLock`); its refreshes
    // and this machine's `oauth login` meet at a lock file of this machine.
    let path = match store {
        Location::File(path) => lock_path(path),
        Location::Postgres(_) => {
            std::env::temp_dir().join(format!("eingang-{:016x}.oauth-lock", {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                store.hash(&mut h);
                h.finish()
            }))
        }
    };
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Failed(format!("{}: {e}", dir.display())))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::Failed(format!("{}: {e}", path.display())))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
        let done = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if done != 0 {
            return Err(Error::Failed(format!(
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(file)
    })
    .await
    .map_err(|e| Error::Failed(format!("the lock task stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OAuth2Config {
        OAuth2Config {
            login: "mail".into(),
            user: "u@example.com".into(),
            token_url: "https://login.example/token".into(),
            device_url: None,
            client_id: "app".into(),
            client_secret: None,
            scope: "https://outlook.office365.com/.default".into(),
            grant: Grant::ClientCredentials,
            refresh_token: None,
            mechanism: None,
            ca_file: None,
            store: Location::File(PathBuf::from("eingang.db")),
        }
    }

    #[test]
    fn microsoft_reasons_are_told_in_words_with_the_providers_text() {
        let c = config();
        let tenant = explain(
            "invalid_request",
            Some("AADSTS90002: Tenant 'contoso.example' not found.\r\nTrace ID: 1"),
            &c,
        );
        assert!(
            tenant.starts_with("the tenant is unknown: check oauth_tenant"),
            "{tenant}"
        );
        assert!(tenant.contains("AADSTS90002: Tenant 'contoso.example' not found. Trace ID: 1"));
        let consent = explain(
            "invalid_grant",
            Some(
                "AADSTS65001: The user or administrator has not consented to use the application.",
            ),
            &c,
        );
        assert!(consent.starts_with("consent is missing"), "{consent}");
        let scope = explain("invalid_scope", None, &c);
        assert_eq!(
            scope,
            "the scope \"https://outlook.office365.com/.default\" was refused: check oauth_scope (invalid_scope)"
        );
        assert_eq!(explain("weird", Some("text"), &c), "weird: text");
    }

    #[test]
    fn the_lock_file_lies_beside_the_store() {
        assert_eq!(
            lock_path(Path::new("/srv/eingang/eingang.db")),
            Path::new("/srv/eingang/eingang.db.oauth-lock")
        );
    }
}
