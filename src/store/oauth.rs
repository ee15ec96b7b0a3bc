//! The OAuth2 side of the ledger: one row per account (token URL, client id, user, scope) with
//! its refresh token, the only OAuth2 secret eingang writes; a fingerprint of the configured
//! refresh token the row descends from, so that a new one in the config takes over; and, when
//! the identity provider refused the token, why, with the one notice that asks a person to
//! sign in again, written in the same transaction. Access tokens and client secrets never
//! come here.

use super::db::{OptionalExtension, TransactionBehavior, params};

use super::{Error, Store, now};

/// What the store holds for one account.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    /// The newest refresh token, if any.
    pub refresh_token: Option<String>,
    /// The fingerprint of the configured refresh token this row descends from.
    pub seed: Option<String>,
    /// Why a person must sign in again (the refresh token was refused); `None` while it works.
    pub needs_login: Option<String>,
}

impl std::fmt::Debug for OAuthGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthGrant")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("needs_login", &self.needs_login)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The stored grant of an account.
    pub fn oauth_grant(&self, account: &str) -> Result<Option<OAuthGrant>, Error> {
        self.lock()
            .query_row(
                "SELECT refresh_token, seed, needs_login FROM oauth_account WHERE account = ?1",
                [account],
                |r| {
                    Ok(OAuthGrant {
                        refresh_token: r.get(0)?,
                        seed: r.get(1)?,
                        needs_login: r.get(2)?,
                    })
                },
            )
            .optional()
    }

    /// Stores the account's newest refresh token, durably, and clears a refusal: a refresh
    /// rotated it, or a sign-in gave it. `login` is the name `eingang oauth login` takes.
    pub fn save_refresh_token(
        &self,
        account: &str,
        login: &str,
        refresh_token: &str,
        seed: Option<&str>,
    ) -> Result<(), Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO oauth_account (account, login, refresh_token, seed, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(account) DO UPDATE SET login = ?2, refresh_token = ?3, seed = ?4,
                                                updated_at = ?5, needs_login = NULL",
            params![account, login, refresh_token, seed, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that the identity provider refused the account's refresh token: the token is
    /// dropped and, the first time, one notice to the admins asks for `eingang oauth login`.
    /// Returns whether this call wrote that notice.
    pub fn refuse_refresh_token(
        &self,
        account: &str,
        login: &str,
        seed: Option<&str>,
        why: &str,
    ) -> Result<bool, Error> {
        let conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let already: Option<Option<String>> = tx
            .query_row(
                "SELECT needs_login FROM oauth_account WHERE account = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO oauth_account (account, login, refresh_token, seed, updated_at, needs_login)
             VALUES (?1, ?2, NULL, ?3, ?4, ?5)
             ON CONFLICT(account) DO UPDATE SET refresh_token = NULL, seed = ?3, updated_at = ?4,
                                                needs_login = COALESCE(oauth_account.needs_login, ?5)",
            params![account, login, seed, at, why],
        )?;
        let first = !matches!(already, Some(Some(_)));
        if first {
            tx.execute(
                "INSERT INTO outbox (source, kind, created_at, last_error)
                 VALUES (?1, 'reauth', ?2, ?3)",
                params![login, at, why],
            )?;
        }
        tx.commit()?;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_refresh_token_gives_one_notice_until_a_new_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_at(&crate::store::test_location(dir.path())).unwrap();
        let account = "https://idp.example/token app u@example.com mail";
        assert_eq!(store.oauth_grant(account).unwrap(), None);
        store
            .save_refresh_token(account, "mail", "rt-1", Some("seed"))
            .unwrap();
        let grant = store.oauth_grant(account).unwrap().unwrap();
        assert_eq!(grant.refresh_token.as_deref(), Some("rt-1"));
        assert!(!format!("{grant:?}").contains("rt-1"));
        assert!(
            store
                .refuse_refresh_token(account, "mail", Some("seed"), "revoked")
                .unwrap()
        );
        assert!(
            !store
                .refuse_refresh_token(account, "mail", Some("seed"), "again")
                .unwrap()
        );
        let grant = store.oauth_grant(account).unwrap().unwrap();
        assert_eq!(grant.refresh_token, None);
        assert_eq!(grant.needs_login.as_deref(), Some("revoked"));
        let notices: i64 = store
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'reauth'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(notices, 1);
        store
            .save_refresh_token(account, "mail", "rt-2", None)
            .unwrap();
        assert_eq!(
            store.oauth_grant(account).unwrap().unwrap().needs_login,
            None
        );
        assert!(
            store
                .refuse_refresh_token(account, "mail", None, "revoked again")
                .unwrap()
        );
    }
}
