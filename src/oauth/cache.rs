//! The access tokens of this process, one per account (store, token URL, client id, user,
//! scope), shared by every login on that account: an IMAP source and `[notify]` on one
//! mailbox use one token and refresh it once. Refreshes are single-flight: whoever finds the
//! token due refreshes while holding the account's lock, and the others wait for that result
//! instead of spending the rotating refresh token a second time. Tokens live in memory only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use super::{AccessToken, Error, account_key, grant};
use crate::config::OAuth2Config;
use crate::store::Location;

/// One account's token.
#[derive(Default)]
struct Account {
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

type Accounts = Mutex<HashMap<(Location, String), Arc<Account>>>;

fn account(config: &OAuth2Config) -> Arc<Account> {
    static ACCOUNTS: OnceLock<Accounts> = OnceLock::new();
    let accounts = ACCOUNTS.get_or_init(Accounts::default);
    let mut map = accounts.lock().unwrap_or_else(|p| p.into_inner());
    map.entry((config.store.clone(), account_key(config)))
        .or_default()
        .clone()
}

/// A valid access token for the login: the one in memory until it is due for renewal, else a
/// new one from the identity provider (one request at a time per account).
///
/// The future is boxed and `Send`, checked here once: the token requests run inside oauth2's
/// higher-ranked closures, whose `Send`-ness the compiler may fail to prove from deep inside
/// a caller's spawned future (rust-lang/rust#64552); a box stops that at this edge.
pub fn access_token(
    config: &OAuth2Config,
) -> Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send + '_>> {
    Box::pin(async move {
        let account = account(config);
        let mut slot = account.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| !t.is_due()) {
            return Ok(token.clone());
        }
        *slot = None;
        let token = grant::fetch(config).await?;
        *slot = Some(token.clone());
        Ok(token)
    })
}

/// Drops `token` from memory when a server refused it or said it expired, so that the next
/// login gets a new one; a newer token another login got meanwhile stays.
pub async fn forget(config: &OAuth2Config, token: &AccessToken) {
    let account = account(config);
    let mut slot = account.token.lock().await;
    if slot.as_ref().is_some_and(|t| t.is(token)) {
        tracing::debug!(login = %config.login, "access token dropped");
        *slot = None;
    }
}
