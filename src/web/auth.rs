//! Who may use the admin page: one admin password (an argon2id hash in the config), server-side
//! sessions that expire, a login rate limit, and the checks every state change passes (a
//! same-origin request and the session's CSRF token).
//!
//! Sessions live in memory: a restart of `eingang run` logs everyone out. The cookie holds a
//! random 256-bit id (`HttpOnly; SameSite=Strict`); the store of sessions keeps only its
//! sha256.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "eingang_session";
/// A session unused this long ends.
const SESSION_IDLE: Duration = Duration::from_secs(4 * 3600);
/// A session ends this long after the login, used or not.
const SESSION_MAX: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions at once; a new login ends the oldest.
const MAX_SESSIONS: usize = 32;
/// Failed logins from one address before it must wait.
pub const FREE_TRIES: u32 = 5;
/// The first wait after `FREE_TRIES` failures; it doubles with each further failure.
const LOCK_START: Duration = Duration::from_secs(30);
const LOCK_CAP: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten this long after the last one.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Addresses the limiter remembers; beyond that, new ones share one count.
const MAX_TRACKED: usize = 4096;

/// The argon2id PHC string of a password (the argon2 crate's defaults: m=19456, t=2, p=1, the
/// OWASP minimum), with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether a configured hash is an argon2id PHC string eingang can verify against.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let bad = || {
        "admin_password_hash is not an argon2id hash: make one with `eingang hash-password`"
            .to_owned()
    };
    let parsed = PasswordHash::new(hash).map_err(|_| bad())?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(bad());
    }
    Ok(())
}

/// Whether `password` matches the hash. Takes tens of milliseconds on purpose: call it on the
/// blocking pool.
pub fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system provides random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

struct Session {
    csrf: String,
    created: Instant,
    seen: Instant,
}

/// The logged-in sessions.
#[derive(Default)]
pub struct Sessions {
    by_key: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Starts a session; returns the cookie value and the session's CSRF token.
    pub fn start(&self) -> (String, String) {
        let (token, csrf) = (random_hex(32), random_hex(32));
        let now = Instant::now();
        let mut all = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|_, s| alive(s, now));
        while all.len() >= MAX_SESSIONS {
            let oldest = all.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k);
            match oldest {
                Some(k) => all.remove(&k),
                None => break,
            };
        }
        all.insert(
            key(&token),
            Session {
                csrf: csrf.clone(),
                created: now,
                seen: now,
            },
        );
        (token, csrf)
    }

    /// The CSRF token of a live session (and the session is used now), or `None`.
    pub fn csrf_of(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut all = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(token);
        match all.get_mut(&k) {
            Some(s) if alive(s, now) => {
                s.seen = now;
                Some(s.csrf.clone())
            }
            Some(_) => {
                all.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn end(&self, token: &str) {
        let mut all = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&key(token));
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < SESSION_IDLE && now.duration_since(s.created) < SESSION_MAX
}

/// The session cookie of a request.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value for a new session; `Secure` when a TLS proxy in front says so.
pub fn cookie_for(token: &str, headers: &HeaderMap) -> String {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends the session cookie.
pub fn cookie_gone() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Why a state change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Sec-Fetch-Site` is not `same-origin`: another site made the browser send it.
    CrossSite,
    /// The `Origin` is not this page's.
    ForeignOrigin,
    /// The CSRF token is missing or wrong.
    Token,
}

/// Whether a request comes from this page itself: `Sec-Fetch-Site`, where the browser sends
/// it, must be `same-origin`; an `Origin`, where sent, must be this host's. (A browser sends
/// `Sec-Fetch-Site` only to secure contexts, which a plain-HTTP page on the LAN is not, but
/// it always sends `Origin` with a POST.)
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site.as_bytes() != b"same-origin"
    {
        return Err(Refusal::CrossSite);
    }
    if let Some(origin) = headers.get(axum::http::header::ORIGIN) {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default();
        let ours = !host.is_empty()
            && [("http://", host), ("https://", host)]
                .iter()
                .any(|(scheme, host)| origin.strip_prefix(scheme) == Some(host));
        if !ours {
            return Err(Refusal::ForeignOrigin);
        }
    }
    Ok(())
}

/// Compares a CSRF token in constant time.
pub fn token_matches(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|g| {
        g.len() == expected.len() && bool::from(g.as_bytes().ct_eq(expected.as_bytes()))
    })
}

struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed logins per client address: after `FREE_TRIES`, each further try waits, longer
/// each time. A try is counted before its password is verified, so parallel tries do not
/// slip past the count; a success forgets the address.
#[derive(Default)]
pub struct Limiter {
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
}

impl Limiter {
    /// Counts a try; `Err` with the time left when the address must wait first.
    pub fn attempt(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut all = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_TRACKED {
            all.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        }
        // Beyond the bound, new addresses share the unspecified address's count.
        let ip = if all.len() >= MAX_TRACKED && !all.contains_key(&ip) {
            IpAddr::from([0u8; 4])
        } else {
            ip
        };
        let entry = all.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            (entry.count, entry.locked_until) = (0, None);
        }
        if let Some(until) = entry.locked_until.filter(|u| *u > now) {
            return Err(until - now);
        }
        entry.count += 1;
        entry.last = now;
        if entry.count >= FREE_TRIES {
            let doublings = entry.count - FREE_TRIES;
            let wait = LOCK_START
                .saturating_mul(2u32.saturating_pow(doublings))
                .min(LOCK_CAP);
            entry.locked_until = Some(now + wait);
        }
        Ok(())
    }

    /// A try succeeded: the address starts afresh.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut all = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("Lager-2026").unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        check_hash(&hash).unwrap();
        assert!(verify(&hash, "Lager-2026"));
        assert!(!verify(&hash, "lager-2026"));
        assert!(!verify("kaputt", "Lager-2026"));
        assert!(check_hash("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA").is_err());
    }

    #[test]
    fn sessions_give_their_token_and_end() {
        let sessions = Sessions::default();
        let (token, csrf) = sessions.start();
        assert_eq!(token.len(), 64);
        assert_eq!(sessions.csrf_of(&token), Some(csrf));
        assert_eq!(sessions.csrf_of("nope"), None);
        sessions.end(&token);
        assert_eq!(sessions.csrf_of(&token), None);
        for _ in 0..MAX_SESSIONS + 3 {
            sessions.start();
        }
        assert_eq!(sessions.by_key.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            HeaderValue::from_static("a=1; eingang_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        assert!(cookie_for("abc", &headers).contains("SameSite=Strict"));
        assert!(!cookie_for("abc", &headers).contains("Secure"));
    }

    #[test]
    fn only_same_origin_requests_pass() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(same_origin(&headers(&[])), Ok(()));
        assert_eq!(
            same_origin(&headers(&[("sec-fetch-site", "same-origin")])),
            Ok(())
        );
        assert_eq!(
            same_origin(&headers(&[("sec-fetch-site", "cross-site")])),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            same_origin(&headers(&[("sec-fetch-site", "same-site")])),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])),
            Ok(())
        );
        assert_eq!(
            same_origin(&headers(&[("origin", "http://evil.example")])),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(
            same_origin(&headers(&[(
                "origin",
                "http://127.0.0.1:8080.evil.example"
            )])),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(
            same_origin(&headers(&[("origin", "null")])),
            Err(Refusal::ForeignOrigin)
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abcd", Some("abcd")));
        assert!(!token_matches("abcd", Some("abc")));
        assert!(!token_matches("abcd", Some("abce")));
        assert!(!token_matches("abcd", None));
    }

    #[test]
    fn logins_wait_after_five_failures_and_longer_after_more() {
        let limiter = Limiter::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..FREE_TRIES {
            assert!(limiter.attempt(ip).is_ok());
        }
        let wait = limiter.attempt(ip).unwrap_err();
        assert!(wait <= LOCK_START && wait > LOCK_START / 2, "{wait:?}");
        // Another address is not held up.
        assert!(limiter.attempt([192, 0, 2, 2].into()).is_ok());
        limiter.succeeded(ip);
        assert!(limiter.attempt(ip).is_ok());
    }
}
