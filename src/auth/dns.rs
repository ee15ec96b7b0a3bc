//! The DNS look-ups of the authenticity check: DKIM keys (`sel._domainkey.domain`) and DMARC
//! policies (`_dmarc.domain`), through mail-auth's hickory resolver.
//!
//! It uses the system's resolver config (`/etc/resolv.conf`) unless `[dns] server` names one
//! (UDP and TCP to that address). Every query has a short timeout and one retry, and the whole
//! check of one message a deadline (`check`), so a machine without working DNS waits a bounded
//! time per item and gets `temperror`, never a hang. A resolver that cannot even be built (no
//! `/etc/resolv.conf`) is kept as "unavailable": every look-up through it is a temporary error.
//!
//! Failures are sorted as the verdict needs them: a timeout, SERVFAIL, REFUSED or an
//! unreachable server is transient (`temperror`); NXDOMAIN or an empty answer means there is no
//! such record (`none`).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{DnsError, MessageAuthenticator, ResolverCache, Txt};

/// One round of one query. A working resolver answers from its cache in milliseconds and a
/// cold recursive look-up of a `_domainkey` or `_dmarc` name in well under a second; 2 s
/// leaves room for a slow upstream without holding an item long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a query after a timeout: one, for a lost UDP datagram.
pub const QUERY_RETRIES: usize = 1;
/// The most parsed records kept between messages (records carry their own TTL; this only
/// bounds memory).
const MAX_CACHED_RECORDS: usize = 4096;

/// How a failed look-up counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Timeout, SERVFAIL, REFUSED, no resolver reachable: try again later (`temperror`).
    Transient,
    /// NXDOMAIN or no record of that type: there is nothing published (`none`).
    Missing,
    /// A record is there but is not a valid DKIM key or DMARC policy (`permerror`).
    Invalid,
}

/// How a mail-auth error of a look-up counts.
pub fn classify(err: &mail_auth::Error) -> Failure {
    match err {
        mail_auth::Error::Dns(DnsError::Resolver(_)) => Failure::Transient,
        mail_auth::Error::Dns(DnsError::RecordNotFound(_)) => Failure::Missing,
        _ => Failure::Invalid,
    }
}

/// The resolver of eingang's own DKIM and DMARC look-ups; one per process, shared by every
/// source (it is cheap to share: the queries run on the tokio runtime).
pub struct Resolver {
    inner: Option<MessageAuthenticator>,
    problem: Option<String>,
    /// Parsed records by name (FQDN with the trailing dot), until they expire.
    pub(crate) cache: Records,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("available", &self.inner.is_some())
            .field("problem", &self.problem)
            .finish()
    }
}

impl Resolver {
    /// The resolver for `[dns] server` (`Some`: UDP and TCP to that address) or the system's
    /// config (`None`). It never fails: a resolver that cannot be built is kept as unavailable
    /// and says why in [`Resolver::problem`], so that eingang keeps working without DNS.
    pub fn new(server: Option<SocketAddr>) -> Resolver {
        let built = match server {
            Some(addr) => {
                let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut name_server.connections {
                    connection.port = addr.port();
                }
                Ok((
                    ResolverConfig::from_name_servers(vec![name_server]),
                    ResolverOpts::default(),
                ))
            }
            None => mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("the system's DNS config cannot be read: {e}")),
        }
        .and_then(|(config, mut options)| {
            options.timeout = QUERY_TIMEOUT;
            options.attempts = QUERY_RETRIES;
            MessageAuthenticator::new(config, options)
                .map_err(|e| format!("the DNS resolver cannot start: {e}"))
        });
        match built {
            Ok(inner) => Resolver {
                inner: Some(inner),
                problem: None,
                cache: Records::default(),
            },
            Err(problem) => Resolver::unavailable(problem),
        }
    }

    /// A resolver that answers every look-up with a temporary error (no DNS at all).
    pub fn unavailable(why: impl Into<String>) -> Resolver {
        Resolver {
            inner: None,
            problem: Some(why.into()),
            cache: Records::default(),
        }
    }

    /// Why this resolver cannot look anything up, if it cannot: for one warning at start-up.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// The mail-auth authenticator, or the reason there is none.
    pub(crate) fn authenticator(&self) -> Result<&MessageAuthenticator, &str> {
        self.inner
            .as_ref()
            .ok_or_else(|| self.problem.as_deref().unwrap_or("no DNS resolver"))
    }

    /// A resolver for unit tests that never asks DNS: a name that was not preloaded is
    /// NXDOMAIN.
    #[cfg(test)]
    pub(crate) fn offline() -> Resolver {
        // A port nobody listens on, should anything get past the cache.
        let resolver = Resolver::new(Some(SocketAddr::from(([127, 0, 0, 1], 9))));
        resolver
            .cache
            .offline
            .store(true, std::sync::atomic::Ordering::Relaxed);
        resolver
    }

    /// Puts a record into the cache as if DNS had answered it, valid for an hour: unit tests
    /// run the whole check this way without a DNS server.
    #[cfg(test)]
    pub(crate) fn preload<T>(&self, name: &str, record: &str)
    where
        T: mail_auth::common::parse::TxtRecordParser + Into<Txt>,
    {
        let txt: Txt = T::parse(record.as_bytes()).into();
        self.cache
            .insert(name.into(), txt, Instant::now() + Duration::from_secs(3600));
    }

    /// Puts an NXDOMAIN answer for `name` into the cache.
    #[cfg(test)]
    pub(crate) fn preload_missing(&self, name: &str) {
        use mail_auth::hickory_resolver::proto::op::ResponseCode;
        let txt = Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(
            ResponseCode::NXDomain,
        )));
        self.cache
            .insert(name.into(), txt, Instant::now() + Duration::from_secs(3600));
    }
}

/// Parsed TXT records (DKIM keys, DMARC policies) with their expiry, in mail-auth's cache
/// shape. A full cache is emptied rather than grown.
#[derive(Default)]
pub(crate) struct Records {
    entries: Mutex<HashMap<Box<str>, (Txt, Instant)>>,
    /// Unit tests: a name that was not preloaded is NXDOMAIN instead of a DNS query.
    #[cfg(test)]
    offline: std::sync::atomic::AtomicBool,
}

impl ResolverCache<Box<str>, Txt> for Records {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = entries
            .get(name)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(txt, _)| txt.clone());
        #[cfg(test)]
        if found.is_none() && self.offline.load(std::sync::atomic::Ordering::Relaxed) {
            use mail_auth::hickory_resolver::proto::op::ResponseCode;
            return Some(Txt::Error(mail_auth::Error::Dns(DnsError::RecordNotFound(
                ResponseCode::NXDomain,
            ))));
        }
        found
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(name).map(|(txt, _)| txt)
    }

    fn insert(&self, name: Box<str>, value: Txt, valid_until: Instant) {
        if valid_until <= Instant::now() {
            return; // TTL 0: not to be kept
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_RECORDS {
            entries.clear();
        }
        entries.insert(name, (value, valid_until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::hickory_resolver::proto::op::ResponseCode;

    #[test]
    fn failures_are_sorted_by_what_follows() {
        use mail_auth::Error;
        let timeout = Error::Dns(DnsError::Resolver("request timed out".into()));
        let servfail = Error::Dns(DnsError::Resolver("error response: SERVFAIL".into()));
        assert_eq!(classify(&timeout), Failure::Transient);
        assert_eq!(classify(&servfail), Failure::Transient);
        let nx = Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain));
        let nodata = Error::Dns(DnsError::RecordNotFound(ResponseCode::NoError));
        assert_eq!(classify(&nx), Failure::Missing);
        assert_eq!(classify(&nodata), Failure::Missing);
        assert_eq!(classify(&Error::ParseError), Failure::Invalid);
        assert_eq!(
            classify(&Error::Dns(DnsError::InvalidRecordType)),
            Failure::Invalid
        );
    }

    #[test]
    fn an_unavailable_resolver_says_why() {
        let r = Resolver::unavailable("no resolv.conf");
        assert_eq!(r.problem(), Some("no resolv.conf"));
        assert!(r.authenticator().is_err());
    }

    #[tokio::test]
    async fn a_configured_server_builds_without_any_network() {
        let r = Resolver::new(Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(r.problem(), None);
        assert!(r.authenticator().is_ok());
    }

    #[test]
    fn a_resolver_can_be_built_outside_the_runtime() {
        // The daemon may build it while loading the config, before it enters tokio.
        let r = Resolver::new(Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(r.problem(), None);
    }

    #[test]
    fn expired_and_ttl_zero_records_are_not_kept() {
        let cache = Records::default();
        let txt = || Txt::Error(mail_auth::Error::ParseError);
        cache.insert("a.".into(), txt(), Instant::now());
        assert!(cache.get("a.").is_none());
        cache.insert("b.".into(), txt(), Instant::now() + Duration::from_secs(60));
        assert!(cache.get("b.").is_some());
        assert!(cache.remove("b.").is_some());
        assert!(cache.get("b.").is_none());
    }
}
