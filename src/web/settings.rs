//! `[http]`: where the admin page listens and the admin's password hash, checked into
//! `HttpConfig`. Loopback by default; any other address needs a password hash, since the page
//! reprocesses items and shows who sent what.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the page listens when `[http]` gives no `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `[http]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    listen: Option<String>,
    admin_password_hash: Option<String>,
    admin_password_hash_file: Option<String>,
}

/// `[http]`, checked.
#[derive(Clone)]
pub struct HttpConfig {
    /// The address the page, `/metrics`, `/healthz` and `/readyz` listen on.
    pub listen: SocketAddr,
    /// The admin's password as an argon2id PHC string; `None`: nobody can log in (loopback
    /// only; the health and metrics endpoints still answer).
    pub admin_password_hash: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field(
                "admin_password_hash",
                &self.admin_password_hash.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// Checks `[http]`; `resolve` makes a path relative to the config file's folder. Every
/// problem is returned, each without the `config: http: ` prefix.
pub fn check(raw: RawHttp, resolve: &dyn Fn(&str) -> PathBuf) -> Result<HttpConfig, Vec<String>> {
    let mut problems = Vec::new();
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_text.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "listen {listen_text:?} is not an address IP:PORT (e.g. {DEFAULT_LISTEN})"
            ));
            None
        }
    };
    let hash = match (raw.admin_password_hash, raw.admin_password_hash_file) {
        (Some(_), Some(_)) => {
            problems.push(
                "give only one of admin_password_hash and admin_password_hash_file".to_owned(),
            );
            None
        }
        (Some(hash), None) => Some(hash.trim().to_owned()),
        (None, Some(file)) => read_hash_file(&resolve(&file))
            .map_err(|e| problems.push(e))
            .ok(),
        (None, None) => None,
    };
    if let Some(hash) = &hash
        && let Err(e) = super::auth::check_hash(hash)
    {
        problems.push(e);
    }
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && hash.is_none()
    {
        problems.push(format!(
            "listen {addr} is reachable from other machines: set admin_password_hash (from `eingang hash-password`) or listen on 127.0.0.1"
        ));
    }
    match listen {
        Some(listen) if problems.is_empty() => Ok(HttpConfig {
            listen,
            admin_password_hash: hash,
        }),
        _ => Err(problems),
    }
}

fn read_hash_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("admin_password_hash_file {}: {e}", path.display()))?;
    let hash = text.trim();
    if hash.is_empty() {
        return Err(format!(
            "admin_password_hash_file {}: the file is empty",
            path.display()
        ));
    }
    Ok(hash.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(toml: &str) -> Result<HttpConfig, Vec<String>> {
        let raw: RawHttp = toml::from_str(toml).unwrap();
        check(raw, &|p| PathBuf::from(p))
    }

    #[test]
    fn loopback_is_the_default_and_needs_no_hash() {
        let http = checked("").unwrap();
        assert_eq!(http.listen.to_string(), DEFAULT_LISTEN);
        assert!(http.admin_password_hash.is_none());
    }

    #[test]
    fn another_address_is_refused_without_a_hash() {
        let problems = checked("listen = \"0.0.0.0:8080\"").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("admin_password_hash"), "{problems:?}");
        let hash = crate::web::auth::hash_password("geheim").unwrap();
        let http = checked(&format!(
            "listen = \"0.0.0.0:8080\"\nadmin_password_hash = \"{hash}\""
        ))
        .unwrap();
        assert_eq!(http.admin_password_hash.as_deref(), Some(hash.as_str()));
        assert!(!format!("{http:?}").contains("argon2"));
    }

    #[test]
    fn a_bad_listen_and_a_bad_hash_are_both_told() {
        let problems =
            checked("listen = \"localhost\"\nadmin_password_hash = \"geheim\"").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("IP:PORT"));
        assert!(problems[1].contains("hash-password"), "{problems:?}");
    }
}
