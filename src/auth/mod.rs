//! Sender authenticity: whether a message really comes from the domain in its From header
//! (DESIGN.md promise 8, "only the authentic counts").
//!
//! Two ways to a verdict, tried in this order:
//!
//! 1. the **trusted `Authentication-Results` header**: the topmost one, if the source trusts its
//!    authserv-id (`trusted_authserv_id`, or `"topmost"` for Microsoft 365), and it states a
//!    `dmarc=` result for the From domain (`results`);
//! 2. **eingang's own check**: DKIM signatures verified and DMARC evaluated with mail-auth
//!    (`check`). eingang never sees the SMTP peer, so only DKIM can align, unless the trusted
//!    header says `spf=pass` for the envelope sender. Keys and policies come from DNS (`dns`).
//!
//! The result is a [`Verdict`] (`pass`, `fail`, `none`, `temperror`), stored with the item as
//! JSON, and [`decide`] turns it and the supplier's `authenticate` setting into accept, reject or
//! retry later. This module only reads the message bytes and asks DNS: it never touches the
//! store, the sources or the item's place.

mod check;
mod decide;
mod dns;
mod results;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use decide::{Decision, REJECT_PREFIX, Requirement, decide};
pub use dns::{Failure, QUERY_RETRIES, QUERY_TIMEOUT, Resolver, classify};
pub use results::{ArHeader, HEADER_NAME, MethodResult, Trust, parse as parse_results, trusted};

/// The whole check of one message, all its DNS look-ups together. A message needs two to four
/// (a DKIM key per aligned signature, the DMARC policy and its organizational domain); each
/// takes at most `QUERY_TIMEOUT` × (1 + `QUERY_RETRIES`) = 4 s when DNS does not answer. Past
/// this deadline the verdict is `temperror`, so an unreachable DNS costs one item at most this
/// long, and under the default policy the item still goes through.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(10);

/// What the check found, as stored with the item and shown in `export` (`sender_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// DMARC passes for the From domain: an aligned DKIM signature verified (or an aligned SPF
    /// pass, or a pass in the trusted header).
    Pass,
    /// The From domain publishes a DMARC policy and nothing aligned passed (or the trusted
    /// header says `dmarc=fail`, or the message has From addresses in several domains).
    Fail,
    /// Nothing to judge by: no DMARC policy published, no From domain.
    None,
    /// DNS did not answer in time (or failed temporarily): try again later.
    #[serde(rename = "temperror")]
    TempError,
}

impl Status {
    /// The word as stored and exported: `pass`, `fail`, `none`, `temperror`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::None => "none",
            Status::TempError => "temperror",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DMARC policy a From domain publishes (`p=`, or `sp=` for a subdomain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Published {
    /// `p=none`: monitor only.
    None,
    /// `p=quarantine`: treat failing mail as suspicious.
    Quarantine,
    /// `p=reject`: refuse failing mail.
    Reject,
}

impl Published {
    /// Reads `none`, `quarantine` or `reject` (any case).
    pub fn parse(text: &str) -> Option<Published> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Published::None),
            "quarantine" => Some(Published::Quarantine),
            "reject" => Some(Published::Reject),
            _ => None,
        }
    }

    /// The word as in a DMARC record.
    pub fn as_str(self) -> &'static str {
        match self {
            Published::None => "none",
            Published::Quarantine => "quarantine",
            Published::Reject => "reject",
        }
    }

    /// Whether the domain asks receivers to quarantine or reject failing mail.
    pub fn is_enforcing(self) -> bool {
        self != Published::None
    }
}

/// Which of the two ways reached the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedBy {
    /// eingang's own DKIM verification and DMARC evaluation.
    Eingang,
    /// The trusted `Authentication-Results` header of the receiving server.
    TrustedHeader,
}

/// The verdict about one message's sender, taken once at first sight and stored with the item
/// (a reprocess uses the stored one: DKIM keys rotate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// `pass`, `fail`, `none` or `temperror`.
    pub status: Status,
    /// The domain of the From address (lowercased), if the message has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_domain: Option<String>,
    /// On `pass`: the domain that passed aligned with the From domain (the DKIM `d=`, or the
    /// SPF domain), e.g. `supplier.example` or `mail.supplier.example`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aligned_domain: Option<String>,
    /// The DMARC policy the From domain publishes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Published>,
    /// Own check or trusted header.
    pub decided_by: DecidedBy,
    /// The authserv-id of the trusted header that decided, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authserv_id: Option<String>,
    /// A short account for people, e.g. `dkim=pass header.d=supplier.example, dmarc=pass`.
    /// Free of control characters.
    pub text: String,
}

impl Verdict {
    /// One line for logs and notices: `pass (dkim=pass header.d=…, dmarc=pass)`.
    pub fn summary(&self) -> String {
        format!("{} ({})", self.status, self.text)
    }
}

/// Who sent an item, as far as eingang can tell: what a cXML update or delete must match (the
/// sender of the order it changes) and what a second document with a stored business key is
/// compared by (the same sender again, or a conflict). Stored with each document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A message whose From domain passed DMARC: that domain, lowercased.
    Domain(String),
    /// A file: whoever can put files into this source's inbox (a drop folder, an FTP account,
    /// the operator running `eingang import`).
    Source(String),
    /// A message whose sender is not authenticated (`fail`, `none`, `temperror`).
    Unauthenticated,
}

impl Sender {
    /// The sender of a message with this verdict (`None`: never checked).
    pub fn of_message(verdict: Option<&Verdict>) -> Sender {
        match verdict {
            Some(v) if v.status == Status::Pass => {
                match v.from_domain.as_deref().or(v.aligned_domain.as_deref()) {
                    Some(domain) => Sender::Domain(domain.to_ascii_lowercase()),
                    None => Sender::Unauthenticated,
                }
            }
            _ => Sender::Unauthenticated,
        }
    }

    /// The sender of a file found in this source.
    pub fn of_file(source: &str) -> Sender {
        Sender::Source(source.to_owned())
    }

    /// Whether the sender is known (an authenticated domain, or a source's inbox).
    pub fn is_known(&self) -> bool {
        !matches!(self, Sender::Unauthenticated)
    }

    /// The form stored with a document: `domain:supplier.example`, `source:drop`; `None` for
    /// an unauthenticated sender.
    pub fn stored(&self) -> Option<String> {
        match self {
            Sender::Domain(d) => Some(format!("domain:{d}")),
            Sender::Source(s) => Some(format!("source:{s}")),
            Sender::Unauthenticated => None,
        }
    }

    /// Reads the stored form back; anything else (a document stored before eingang recorded
    /// senders) counts as unauthenticated.
    pub fn from_stored(text: Option<&str>) -> Sender {
        match text.and_then(|t| t.split_once(':')) {
            Some(("domain", d)) if !d.is_empty() => Sender::Domain(d.to_owned()),
            Some(("source", s)) if !s.is_empty() => Sender::Source(s.to_owned()),
            _ => Sender::Unauthenticated,
        }
    }

    /// Whether two documents came from the same known sender. Two unauthenticated senders are
    /// never the same: nothing says who they were.
    pub fn same_as(&self, other: &Sender) -> bool {
        self.is_known() && self == other
    }
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sender::Domain(d) => write!(f, "authenticated for {d}"),
            Sender::Source(s) => write!(f, "a file of the source {s}"),
            Sender::Unauthenticated => f.write_str("not authenticated"),
        }
    }
}

/// Checks one message (its raw bytes, as fetched): the trusted header first, then eingang's
/// own DKIM and DMARC check. Never fails and never takes longer than [`CHECK_DEADLINE`]; DNS
/// trouble gives `temperror`.
pub async fn authenticate(raw: &[u8], trust: &Trust, resolver: &Resolver) -> Verdict {
    check::run(raw, trust, resolver).await
}

#[cfg(test)]
mod sender_tests {
    use super::*;

    fn verdict(status: Status) -> Verdict {
        Verdict {
            status,
            from_domain: Some("Supplier.Example".into()),
            aligned_domain: Some("mail.supplier.example".into()),
            policy: None,
            decided_by: DecidedBy::Eingang,
            authserv_id: None,
            text: String::new(),
        }
    }

    #[test]
    fn only_a_pass_makes_a_known_sender_and_it_is_the_from_domain() {
        let pass = Sender::of_message(Some(&verdict(Status::Pass)));
        assert_eq!(pass, Sender::Domain("supplier.example".into()));
        for status in [Status::Fail, Status::None, Status::TempError] {
            assert_eq!(
                Sender::of_message(Some(&verdict(status))),
                Sender::Unauthenticated
            );
        }
        assert_eq!(Sender::of_message(None), Sender::Unauthenticated);
        assert!(pass.same_as(&Sender::Domain("supplier.example".into())));
        assert!(!Sender::Unauthenticated.same_as(&Sender::Unauthenticated));
        assert!(!Sender::of_file("drop").same_as(&pass));
    }

    #[test]
    fn the_stored_form_reads_back() {
        for sender in [
            Sender::Domain("supplier.example".into()),
            Sender::of_file("drop"),
            Sender::Unauthenticated,
        ] {
            assert_eq!(Sender::from_stored(sender.stored().as_deref()), sender);
        }
        assert_eq!(
            Sender::from_stored(Some("partner:")),
            Sender::Unauthenticated
        );
        assert_eq!(
            Sender::Domain("a.example".into()).to_string(),
            "authenticated for a.example"
        );
    }
}
