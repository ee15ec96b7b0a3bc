//! `eingang oauth login NAME`: the first consent, through the device authorization grant
//! (RFC 8628). It asks the identity provider for a code, prints where to enter it, polls the
//! token endpoint at the interval the provider asks for (longer after `slow_down`), and stores
//! the refresh token it gets: the only token eingang writes down. A person signs in on any
//! device with a browser; the daemon's machine needs none.

use std::io::Write;
use std::time::Duration;

use oauth2::{DeviceAuthorizationUrl, RequestTokenError, TokenResponse};
use oauth2::{DeviceCodeErrorResponseType, StandardDeviceAuthorizationResponse};

use super::grant::{self, answer_error, explain, lock, scopes, store_error, with_store};
use super::http::Http;
use super::{Error, account_key};
use crate::config::{Grant, OAuth2Config};

/// The polling interval when the provider names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the sign-in for `config`, telling the person what to do on `out`; the refresh token
/// is in the store when it returns `Ok`.
pub async fn login(config: &OAuth2Config, out: &mut dyn Write) -> Result<(), Error> {
    if config.grant == Grant::ClientCredentials {
        return Err(Error::Failed(format!(
            "{} uses oauth_grant = \"client_credentials\": the app signs in with its own credentials, nobody needs to",
            config.login
        )));
    }
    let Some(device_url) = &config.device_url else {
        return Err(Error::Failed(format!(
            "{}: oauth_device_url is not set (a provider sets it): the sign-in needs the device authorization endpoint",
            config.login
        )));
    };
    let device_url = DeviceAuthorizationUrl::new(device_url.clone())
        .map_err(|e| Error::Failed(format!("oauth_device_url: {e}")))?;
    let http = Http::new(config.ca_file.as_deref()).map_err(Error::Failed)?;
    let send = |request| http.clone().call(request);
    let client = grant::client(config)?.set_device_authorization_url(device_url);
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes(config))
        .request_async(&send)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => Error::Refused {
                url: config.device_url.clone().unwrap_or_default(),
                grant: "device_code",
                why: explain(
                    answer.error().as_ref(),
                    answer.error_description().map(String::as_str),
                    config,
                ),
            },
            other => answer_error(config, "device_code", other),
        })?;
    let minutes = details.expires_in().as_secs().div_ceil(60);
    let said = (|| -> std::io::Result<()> {
        writeln!(out, "To sign in {} ({}):", config.login, config.user)?;
        writeln!(out, "  open      {}", details.verification_uri().as_str())?;
        writeln!(out, "  and enter {}", details.user_code().secret())?;
        if let Some(complete) = details.verification_uri_complete() {
            writeln!(out, "  (or open  {})", complete.secret())?;
        }
        writeln!(
            out,
            "Waiting for the sign-in; the code is valid for {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        )?;
        out.flush()
    })();
    said.map_err(|e| Error::Failed(format!("cannot print the code: {e}")))?;
    // RFC 8628 §3.5: wait the interval before each poll, the first one too.
    let interval = if details.interval().is_zero() {
        DEFAULT_INTERVAL
    } else {
        details.interval()
    };
    tokio::time::sleep(interval).await;
    let answer = client
        .exchange_device_access_token(&details)
        .request_async(&send, tokio::time::sleep, None)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => match answer.error() {
                DeviceCodeErrorResponseType::ExpiredToken => Error::Failed(format!(
                    "the code expired before the sign-in was approved; run `eingang oauth login {}` again",
                    config.login
                )),
                DeviceCodeErrorResponseType::AccessDenied => Error::Failed(format!(
                    "the sign-in was declined at the identity provider (access_denied); nothing was stored{}",
                    answer
                        .error_description()
                        .map(|d| format!(": {}", super::http::one_line(d)))
                        .unwrap_or_default()
                )),
                other => Error::Refused {
                    url: config.token_url.clone(),
                    grant: "device_code",
                    why: explain(
                        other.as_ref(),
                        answer.error_description().map(String::as_str),
                        config,
                    ),
                },
            },
            other => answer_error(config, "device_code", other),
        })?;
    let Some(refresh) = answer.refresh_token() else {
        return Err(Error::Failed(format!(
            "the identity provider gave no refresh token, so the daemon could not sign in by itself later: ask for offline access (Microsoft: add offline_access to oauth_scope {:?})",
            config.scope
        )));
    };
    let _lock = lock(&config.store).await?;
    let (account, login, token) = (
        account_key(config),
        config.login.clone(),
        refresh.secret().clone(),
    );
    // The config's own refresh token, if any, counts as older than this sign-in.
    let seed = config.refresh_token.as_ref().map(grant::fingerprint);
    with_store(&config.store, move |store| {
        store.save_refresh_token(&account, &login, &token, seed.as_deref())
    })
    .await?
    .map_err(store_error)?;
    writeln!(
        out,
        "Signed in: the refresh token for {} is stored in {}.",
        config.login, config.store
    )
    .map_err(|e| Error::Failed(format!("cannot print: {e}")))?;
    Ok(())
}
