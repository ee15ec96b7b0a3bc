//! `[cxml]` and its `[[cxml.partner]]` tables, checked into `CxmlConfig`: where the receiver
//! listens, its TLS certificate and key (required unless it listens on loopback), the limits
//! that keep one client from hurting the others, and the procurement partners whose requests
//! it takes. A partner's shared secret is kept only as its SHA-256 digest.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the receiver listens when `[cxml]` gives no `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// The largest request body taken (a large OrderRequest of a few thousand lines is well under
/// 1 MiB; RECIPES.md §4 suggests 4 MiB).
const DEFAULT_MAX_REQUEST_MIB: u64 = 4;
/// Connections served at once; more are answered 503 and closed.
const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// TLS handshake plus the request line and headers (slowloris).
const DEFAULT_HEADER_TIMEOUT: &str = "10s";
/// The whole body, once the headers are in.
const DEFAULT_BODY_TIMEOUT: &str = "30s";
/// Every request's source name starts with this; the partner's name follows.
pub const SOURCE_PREFIX: &str = "cxml:";

/// `[cxml]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCxml {
    listen: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    max_request_mib: Option<u64>,
    max_connections: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    #[serde(default)]
    partner: Vec<RawPartner>,
}

/// One `[[cxml.partner]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    name: Option<String>,
    domain: Option<String>,
    identity: Option<String>,
    shared_secret_env: Option<String>,
    shared_secret_file: Option<String>,
    shared_secret: Option<String>,
}

/// `[cxml]`, checked.
#[derive(Clone)]
pub struct CxmlConfig {
    /// The address the receiver listens on.
    pub listen: SocketAddr,
    /// The server's certificate and key; `None`: plaintext (loopback only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The largest request body taken, in bytes.
    pub max_request_bytes: u64,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a client has for the TLS handshake and then for each request's headers.
    pub header_timeout: Duration,
    /// How long a client has for a request's body.
    pub body_timeout: Duration,
    /// The partners, in file order.
    pub partners: Vec<Partner>,
}

impl std::fmt::Debug for CxmlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CxmlConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls.is_some())
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("partners", &self.partners)
            .finish()
    }
}

impl CxmlConfig {
    /// The source names its items are recorded under, one per partner.
    pub fn sources(&self) -> impl Iterator<Item = String> + '_ {
        self.partners.iter().map(Partner::source)
    }
}

/// A procurement partner: the credential its requests carry and the digest of its secret.
#[derive(Clone)]
pub struct Partner {
    /// Its name, shown as the sender of its items.
    pub name: String,
    /// `Credential@domain` (compared without regard to case).
    pub domain: String,
    /// `Credential/Identity`.
    pub identity: String,
    /// The SHA-256 of `domain` (lowercased), a NUL and `identity`: what `auth` compares.
    pub(super) credential_digest: [u8; 32],
    /// The SHA-256 of the shared secret.
    pub(super) secret_digest: [u8; 32],
}

impl std::fmt::Debug for Partner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partner")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("identity", &self.identity)
            .field("shared_secret", &"***")
            .finish()
    }
}

impl Partner {
    /// A partner with this credential and secret.
    pub fn new(name: &str, domain: &str, identity: &str, secret: &str) -> Partner {
        Partner {
            name: name.to_owned(),
            domain: domain.to_owned(),
            identity: identity.to_owned(),
            credential_digest: credential_digest(domain, identity),
            secret_digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// The source name its items are recorded under: `cxml:<name>`.
    pub fn source(&self) -> String {
        format!("{SOURCE_PREFIX}{}", self.name)
    }
}

/// The digest a credential is compared by: domains are case-insensitive (`NetworkID` and
/// `NetworkId` both circulate), identities are taken as written.
pub(super) fn credential_digest(domain: &str, identity: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain.trim().to_ascii_lowercase().as_bytes());
    hasher.update([0]);
    hasher.update(identity.trim().as_bytes());
    hasher.finalize().into()
}

/// Checks `[cxml]`; `resolve` makes a path relative to the config file's folder, `sources`
/// are the `[[source]]` names (none may look like a partner's). Every problem is returned,
/// each without the `config: cxml: ` prefix.
pub fn check(
    raw: RawCxml,
    resolve: &dyn Fn(&str) -> PathBuf,
    sources: &[&str],
) -> Result<CxmlConfig, Vec<String>> {
    let mut problems = Vec::new();
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text
        .trim()
        .parse::<SocketAddr>()
        .map_err(|_| {
            problems.push(format!(
                "listen {listen_text:?} is not an address IP:PORT (e.g. 0.0.0.0:8443)"
            ))
        })
        .ok();
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => server_tls(&resolve(cert), &resolve(key))
            .map_err(|e| problems.push(e))
            .ok(),
        (None, None) => {
            if let Some(addr) = listen.filter(|a| !a.ip().is_loopback()) {
                problems.push(format!(
                    "listen {addr} is reachable from other machines: set tls_cert and tls_key (plaintext is allowed only on a loopback address)"
                ));
            }
            None
        }
        (Some(_), None) => {
            problems.push("tls_cert is set without tls_key".to_owned());
            None
        }
        (None, Some(_)) => {
            problems.push("tls_key is set without tls_cert".to_owned());
            None
        }
    };
    let duration =
        |key: &str, value: &Option<String>, default: &str, problems: &mut Vec<String>| {
            let text = value.as_deref().unwrap_or(default);
            match crate::schedule::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    problems.push(format!("{key} must be longer than zero"));
                    None
                }
                Err(e) => {
                    problems.push(format!("{key} {text:?}: {e}"));
                    None
                }
            }
        };
    let header_timeout = duration(
        "header_timeout",
        &raw.header_timeout,
        DEFAULT_HEADER_TIMEOUT,
        &mut problems,
    );
    let body_timeout = duration(
        "body_timeout",
        &raw.body_timeout,
        DEFAULT_BODY_TIMEOUT,
        &mut problems,
    );
    if raw.max_request_mib == Some(0) {
        problems.push("max_request_mib must be greater than zero".to_owned());
    }
    if raw.max_connections == Some(0) {
        problems.push("max_connections must be greater than zero".to_owned());
    }
    if raw.partner.is_empty() {
        problems.push(
            "no [[cxml.partner]]: the receiver would take nothing; add the partners (name, domain, identity, shared_secret_env)".to_owned(),
        );
    }
    let mut partners = Vec::new();
    let (mut names, mut credentials) = (HashSet::new(), HashSet::new());
    for (i, partner) in raw.partner.into_iter().enumerate() {
        let label = format!("partner[{i}] {:?}", partner.name.as_deref().unwrap_or(""));
        match check_partner(partner, resolve) {
            Ok(p) => {
                if !names.insert(p.name.clone()) {
                    problems.push(format!("{label}: the name is used twice"));
                }
                if !credentials.insert(p.credential_digest) {
                    problems.push(format!(
                        "{label}: another partner has the same domain and identity"
                    ));
                }
                if sources.contains(&p.source().as_str()) {
                    problems.push(format!(
                        "{label}: a [[source]] is named {:?}, the name of this partner's items: rename the source",
                        p.source()
                    ));
                }
                partners.push(p);
            }
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{label}: {e}"))),
        }
    }
    match (listen, header_timeout, body_timeout) {
        (Some(listen), Some(header_timeout), Some(body_timeout)) if problems.is_empty() => {
            Ok(CxmlConfig {
                listen,
                tls,
                max_request_bytes: raw
                    .max_request_mib
                    .unwrap_or(DEFAULT_MAX_REQUEST_MIB)
                    .saturating_mul(1024 * 1024),
                max_connections: raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
                header_timeout,
                body_timeout,
                partners,
            })
        }
        _ => Err(problems),
    }
}

fn check_partner(
    raw: RawPartner,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Partner, Vec<String>> {
    let mut problems = Vec::new();
    let name = raw.name.unwrap_or_default();
    if name.is_empty() {
        problems.push("name is required".to_owned());
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push(format!(
            "name {name:?}: use letters, digits, '-', '_' and '.' only (it names the partner's items)"
        ));
    }
    let mut required = |key: &str, value: Option<String>| match value {
        Some(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => {
            problems.push(format!(
                "{key} is required (the Header's Sender/Credential {})",
                if key == "domain" {
                    "domain attribute"
                } else {
                    "Identity"
                }
            ));
            String::new()
        }
    };
    let domain = required("domain", raw.domain);
    let identity = required("identity", raw.identity);
    let secret = crate::config::read_secret(
        "shared_secret",
        &raw.shared_secret_env,
        &raw.shared_secret_file,
        &raw.shared_secret,
        resolve,
    );
    match &secret {
        Ok(s) if s.expose().is_empty() => problems.push("the shared secret is empty".to_owned()),
        Ok(_) => {}
        Err(e) if raw.shared_secret.is_some() => problems.push(format!(
            "{e} (shared_secret_env, shared_secret_file or shared_secret: only one)"
        )),
        Err(e) => problems.push(e.clone()),
    }
    match secret {
        Ok(secret) if problems.is_empty() => {
            Ok(Partner::new(&name, &domain, &identity, secret.expose()))
        }
        _ => Err(problems),
    }
}

/// The server's TLS config from a PEM certificate chain and key (ring, TLS 1.2 and 1.3).
fn server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls_cert {}: no PEM certificate in it",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls_key {}: no PEM private key in it ({e})", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "tls_cert {} and tls_key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(toml: &str) -> Result<CxmlConfig, Vec<String>> {
        let raw: RawCxml = toml::from_str(toml).unwrap();
        check(raw, &|p| PathBuf::from(p), &["drop"])
    }

    const PARTNER: &str = "[[partner]]\nname = \"ariba\"\ndomain = \"NetworkID\"\nidentity = \"AN01\"\nshared_secret = \"geheim\"\n";

    #[test]
    fn loopback_needs_no_certificate_and_defaults_apply() {
        let cxml = checked(PARTNER).unwrap();
        assert_eq!(cxml.listen.to_string(), DEFAULT_LISTEN);
        assert!(cxml.tls.is_none());
        assert_eq!(cxml.max_request_bytes, 4 * 1024 * 1024);
        assert_eq!(cxml.header_timeout, Duration::from_secs(10));
        assert_eq!(cxml.partners[0].source(), "cxml:ariba");
        assert!(!format!("{cxml:?}").contains("geheim"));
    }

    #[test]
    fn another_address_needs_a_certificate_and_every_mistake_is_told() {
        let problems = checked(&format!(
            "listen = \"0.0.0.0:8443\"\nbody_timeout = \"soon\"\n{PARTNER}[[partner]]\nname = \"ariba\"\ndomain = \"networkid\"\nidentity = \"AN01\"\n"
        ))
        .unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("set tls_cert and tls_key"), "{all}");
        assert!(all.contains("body_timeout \"soon\""), "{all}");
        assert!(
            all.contains("shared_secret_env or shared_secret_file is required"),
            "{all}"
        );
        assert_eq!(problems.len(), 3, "{all}");
        let twice = checked(&format!("{PARTNER}{}", PARTNER.replace("AN01", "AN02"))).unwrap_err();
        assert!(twice[0].contains("the name is used twice"), "{twice:?}");
        let same = checked(&format!(
            "{PARTNER}{}",
            PARTNER
                .replace("ariba", "coupa")
                .replace("NetworkID", "networkid")
        ))
        .unwrap_err();
        assert!(same[0].contains("same domain and identity"), "{same:?}");
    }

    #[test]
    fn a_receiver_without_partners_or_with_a_missing_key_file_is_refused() {
        assert!(checked("").unwrap_err()[0].contains("no [[cxml.partner]]"));
        let problems = checked(&format!(
            "tls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n{PARTNER}"
        ))
        .unwrap_err();
        assert!(
            problems[0].starts_with("tls_cert /nonexistent/c.pem"),
            "{problems:?}"
        );
    }
}
