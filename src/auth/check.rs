//! The verdict for one message: the trusted `Authentication-Results` header if it states a
//! DMARC result, otherwise eingang's own DKIM verification and DMARC evaluation (mail-auth).
//!
//! DMARC here is DKIM-aligned only: eingang fetches mail from a mailbox and never sees the
//! SMTP peer, so SPF counts only when the trusted header says `spf=pass` for the envelope
//! sender. Alignment (relaxed or strict, the published `adkim`/`aspf`) and the organizational
//! domain (the RFC 9989 DNS tree walk) are mail-auth's. A DKIM result counts only when it is
//! `pass`: a changed body is `neutral` in mail-auth, not `fail`.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use mail_auth::dmarc::Dmarc;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, Parameters, SpfOutput,
    SpfResult,
};

use super::dns::{Failure, QUERY_TIMEOUT, Resolver, classify};
use super::results::{self, ArHeader, Trust, clean};
use super::{CHECK_DEADLINE, DecidedBy, Published, Status, Verdict};

/// Signatures that can align with the From domain that are verified (real mail has one or
/// two); more are a sign of abuse, not of a sender.
const MAX_ALIGNED_SIGNATURES: usize = 4;
/// Signatures of other domains (an ESP's, a forwarder's) verified only to explain a failure.
const MAX_OTHER_SIGNATURES: usize = 4;
/// Those others get this long, alongside the real check: their domains' DNS is in anyone's
/// hands, and a slow one must not turn a verdict into `temperror`.
const OTHER_SIGNATURES_BUDGET: Duration = QUERY_TIMEOUT;
/// Malformed DKIM-Signature headers reported in the verdict's text.
const MAX_MALFORMED_SIGNATURES: usize = 4;
/// The verdict's text is cut at this many characters (it goes into notices and `status`).
const MAX_TEXT_CHARS: usize = 1000;

/// The check of one message, bounded by `CHECK_DEADLINE`.
pub(super) async fn run(raw: &[u8], trust: &Trust, resolver: &Resolver) -> Verdict {
    let raw = wire_form(raw);
    let raw = raw.as_ref();
    let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| AuthenticatedMessage::parse(raw)));
    let message = match parsed {
        Ok(Some(message)) => message,
        Ok(None) => return verdict(Status::None, None, "no message header to check".into()),
        Err(_) => return internal_error(None),
    };
    let domains = from_domains(&message);
    let from = match domains.as_slice() {
        [] => return verdict(Status::None, None, "the message has no From address".into()),
        [one] => one.clone(),
        several @ [first, ..] => {
            let first = first.clone();
            return guarded(first, several_from(several.to_vec(), resolver)).await;
        }
    };
    let trusted = results::trusted(message.headers.iter().copied(), trust);
    let work = {
        let from = from.clone();
        async move {
            if let Some(header) = &trusted
                && let Some(verdict) = from_trusted_header(header, &from, resolver).await
            {
                return verdict;
            }
            own_check(message, &from, trusted.as_ref(), resolver).await
        }
    };
    guarded(from, work).await
}

/// The message as it was signed: mail on the wire has CRLF line ends, and a copy saved with
/// bare LF (Maildir, `.eml` files) fails every signature with `c=simple` headers. A message
/// without a single CR gets its CRLF back; one with mixed line ends is left as it is.
fn wire_form(raw: &[u8]) -> Cow<'_, [u8]> {
    if raw.contains(&b'\r') || !raw.contains(&b'\n') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for &byte in raw {
        if byte == b'\n' {
            out.push(b'\r');
        }
        out.push(byte);
    }
    Cow::Owned(out)
}

/// Runs the asynchronous part under the deadline, and turns a panic inside mail-auth into a
/// failing verdict instead of a dead task.
async fn guarded(from: String, work: impl Future<Output = Verdict>) -> Verdict {
    match tokio::time::timeout(CHECK_DEADLINE, AssertUnwindSafe(work).catch_unwind()).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) => internal_error(Some(from)),
        Err(_) => {
            let text = format!(
                "dmarc=temperror (dns did not answer within {} s) header.from={from}",
                CHECK_DEADLINE.as_secs()
            );
            verdict(Status::TempError, Some(from), text)
        }
    }
}

fn verdict(status: Status, from: Option<String>, text: String) -> Verdict {
    Verdict {
        status,
        from_domain: from,
        aligned_domain: None,
        policy: None,
        decided_by: DecidedBy::Eingang,
        authserv_id: None,
        text,
    }
}

/// A bug in the check must not let a message through as authentic, nor keep it forever.
fn internal_error(from: Option<String>) -> Verdict {
    verdict(
        Status::Fail,
        from,
        "the check failed on this message (internal error)".into(),
    )
}

/// The distinct domains of the From addresses, lowercased, in header order.
fn from_domains(message: &AuthenticatedMessage<'_>) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    for address in &message.from {
        if let Some((_, domain)) = address.rsplit_once('@') {
            let domain = normalize(domain);
            if !domain.is_empty() && !domains.contains(&domain) {
                domains.push(domain);
            }
        }
    }
    domains
}

fn normalize(domain: &str) -> String {
    clean(domain.trim().trim_end_matches('.')).to_ascii_lowercase()
}

/// Whether a signing domain could align with the From domain at all: they share at least the
/// last two labels. A superset of DMARC's relaxed alignment; mail-auth decides the rest.
fn may_align(signer: &str, from: &str) -> bool {
    let signer = signer.trim_end_matches('.');
    let shared = signer
        .rsplit('.')
        .zip(from.rsplit('.'))
        .take_while(|(a, b)| a.eq_ignore_ascii_case(b))
        .count();
    shared >= 2 || signer.eq_ignore_ascii_case(from)
}

/// From addresses in several domains: DMARC exempts such a message (RFC 7489 §6.6.1 leaves
/// rejecting it to the receiver). eingang counts it as failing, with the strictest policy
/// any of the domains publishes, so a second From cannot switch a supplier's policy off.
async fn several_from(domains: Vec<String>, resolver: &Resolver) -> Verdict {
    let mut policy = None;
    let mut unknown = false;
    for domain in &domains {
        match published_policy(domain, resolver).await {
            Ok(found) => policy = policy.max(found),
            Err(_) => unknown = true,
        }
    }
    let mut text = format!(
        "dmarc=fail (From addresses in several domains: {})",
        domains.join(", ")
    );
    if let Some(p) = policy {
        text.push_str(&format!(", strictest policy p={}", p.as_str()));
    }
    if unknown {
        text.push_str(", some policies unknown (dns did not answer)");
    }
    Verdict {
        policy,
        ..verdict(Status::Fail, domains.first().cloned(), text)
    }
}

/// The policy a domain publishes: `p=` of its own `_dmarc` record, else `sp=` of the nearest
/// parent's, down to two labels. `Ok(None)`: nothing published.
async fn published_policy(domain: &str, resolver: &Resolver) -> Result<Option<Published>, Failure> {
    let auth = resolver.authenticator().map_err(|_| Failure::Transient)?;
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    for start in 0..labels.len().saturating_sub(1) {
        let name = labels.get(start..).unwrap_or_default().join(".");
        match auth
            .txt_lookup::<Dmarc>(format!("_dmarc.{name}."), Some(&resolver.cache))
            .await
        {
            Ok(record) => {
                let p = if start == 0 { record.p } else { record.sp };
                return Ok(Some(published(p)));
            }
            Err(e) if classify(&e) == Failure::Transient => return Err(Failure::Transient),
            Err(_) => {}
        }
    }
    Ok(None)
}

fn published(policy: mail_auth::dmarc::Policy) -> Published {
    match policy {
        mail_auth::dmarc::Policy::Reject => Published::Reject,
        mail_auth::dmarc::Policy::Quarantine => Published::Quarantine,
        mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => Published::None,
    }
}

/// The trusted header's `dmarc=` result, if it has one about this From domain. `None` sends
/// the message to eingang's own check (no `dmarc=` in the header, one about another domain,
/// `temperror`, or a result word eingang does not know).
async fn from_trusted_header(
    header: &ArHeader,
    from: &str,
    resolver: &Resolver,
) -> Option<Verdict> {
    let dmarc = header.first("dmarc")?;
    if let Some(stated) = dmarc.domain("header.from")
        && stated != from
    {
        return None;
    }
    let status = match dmarc.result.as_str() {
        "pass" => Status::Pass,
        "fail" => Status::Fail,
        // permerror: a broken record counts as none; bestguesspass (Microsoft): no record.
        "none" | "permerror" | "bestguesspass" => Status::None,
        // temperror was the server's DNS at delivery time; the header would say so on every
        // retry, so eingang asks DNS itself. Unknown words are not guessed at.
        _ => return None,
    };
    let who = match &header.authserv_id {
        Some(id) => format!("trusted header of {id}"),
        None => "trusted topmost header".to_owned(),
    };
    let mut text = format!("{who}: {}", header_results(header));
    let mut policy = stated_policy(dmarc);
    if status == Status::Fail && policy.is_none() {
        match published_policy(from, resolver).await {
            Ok(found) => policy = found,
            Err(_) => text.push_str("; policy unknown (dns did not answer)"),
        }
    }
    let aligned_domain = (status == Status::Pass).then(|| {
        let dkim = header
            .all("dkim")
            .filter(|r| r.result == "pass")
            .filter_map(|r| r.domain("header.d").or_else(|| r.domain("header.i")));
        let spf = header
            .all("spf")
            .filter(|r| r.result == "pass")
            .filter_map(|r| r.domain("smtp.mailfrom"));
        dkim.chain(spf)
            .find(|d| may_align(d, from))
            .unwrap_or_else(|| from.to_owned())
    });
    Some(Verdict {
        status,
        from_domain: Some(from.to_owned()),
        aligned_domain,
        policy,
        decided_by: DecidedBy::TrustedHeader,
        authserv_id: header.authserv_id.clone(),
        text,
    })
}

/// `policy.published-domain-policy=reject`, or `p=reject` / `policy=reject` in a comment
/// (`dmarc=fail (p=REJECT sp=REJECT dis=NONE)` as Gmail and OpenDMARC write it).
fn stated_policy(dmarc: &results::MethodResult) -> Option<Published> {
    if let Some(p) = dmarc
        .property("policy.published-domain-policy")
        .and_then(Published::parse)
    {
        return Some(p);
    }
    dmarc.comments.iter().find_map(|comment| {
        comment.split_whitespace().find_map(|word| {
            let (key, value) = word.split_once('=')?;
            let key = key.to_ascii_lowercase();
            (key == "p" || key == "policy")
                .then(|| Published::parse(value.trim_end_matches([',', ';'])))
                .flatten()
        })
    })
}

/// The DKIM, SPF and DMARC results of a header, as one short text.
fn header_results(header: &ArHeader) -> String {
    let parts: Vec<String> = header
        .results
        .iter()
        .filter(|r| matches!(r.method.as_str(), "dkim" | "spf" | "dmarc"))
        .map(|r| {
            let key = match r.method.as_str() {
                "dkim" => "header.d",
                "spf" => "smtp.mailfrom",
                _ => "header.from",
            };
            let value = r
                .domain(key)
                .or_else(|| (r.method == "dkim").then(|| r.domain("header.i")).flatten());
            match value {
                Some(v) => format!("{}={} {key}={v}", r.method, r.result),
                None => format!("{}={}", r.method, r.result),
            }
        })
        .collect();
    if parts.is_empty() {
        "no dkim, spf or dmarc result".to_owned()
    } else {
        parts.join(", ")
    }
}

/// eingang's own DKIM verification and DMARC evaluation; `trusted` may add an SPF pass.
async fn own_check(
    mut message: AuthenticatedMessage<'_>,
    from: &str,
    trusted: Option<&ArHeader>,
    resolver: &Resolver,
) -> Verdict {
    let auth = match resolver.authenticator() {
        Ok(auth) => auth,
        Err(why) => {
            let text = format!(
                "dmarc=temperror (no dns: {}) header.from={from}",
                clean(why)
            );
            return verdict(Status::TempError, Some(from.to_owned()), text);
        }
    };
    let (aligned, others): (Vec<_>, Vec<_>) = std::mem::take(&mut message.dkim_headers)
        .into_iter()
        .partition(|h| may_align(&h.header.d, from));
    let skipped = aligned.len().saturating_sub(MAX_ALIGNED_SIGNATURES)
        + others.len().saturating_sub(MAX_OTHER_SIGNATURES);
    // mail-auth reports the malformed signatures it keeps here as `neutral`, one by one.
    message
        .errors
        .retain(|h| matches!(h.header, mail_auth::Error::Dkim(_)));
    let malformed = message.errors.len();
    message.errors.truncate(MAX_MALFORMED_SIGNATURES);
    let skipped = skipped + malformed.saturating_sub(MAX_MALFORMED_SIGNATURES);
    let mut other_message = message.clone();
    other_message.errors.clear(); // malformed signatures are reported once, by the main check
    other_message.dkim_headers = others.into_iter().take(MAX_OTHER_SIGNATURES).collect();
    message.dkim_headers = aligned.into_iter().take(MAX_ALIGNED_SIGNATURES).collect();

    // SPF only from the trusted header: eingang never saw the SMTP session.
    let spf_domain = trusted.and_then(|h| {
        h.all("spf")
            .filter(|r| r.result == "pass")
            .find_map(|r| r.domain("smtp.mailfrom"))
    });
    let spf = match &spf_domain {
        Some(domain) => SpfOutput::new(domain.clone()).with_result(SpfResult::Pass),
        None => SpfOutput::default(),
    };
    let mail_from = spf_domain.clone().unwrap_or_default();

    let main = async {
        let dkim = auth
            .verify_dkim(Parameters::new(&message).with_txt_cache(&resolver.cache))
            .await;
        let dmarc = auth
            .verify_dmarc(
                Parameters::new(DmarcParameters::new(&message, &dkim, &mail_from, &spf))
                    .with_txt_cache(&resolver.cache),
            )
            .await;
        (dkim, dmarc)
    };
    let explain = async {
        if other_message.dkim_headers.is_empty() {
            return Some(Vec::new());
        }
        let params = Parameters::new(&other_message).with_txt_cache(&resolver.cache);
        tokio::time::timeout(OTHER_SIGNATURES_BUDGET, auth.verify_dkim(params))
            .await
            .ok()
    };
    let ((dkim, dmarc), others) = tokio::join!(main, explain);

    let mut parts: Vec<String> = dkim.iter().map(dkim_part).collect();
    match &others {
        Some(outputs) => parts.extend(
            outputs
                .iter()
                .map(|o| format!("{} (not aligned)", dkim_part(o))),
        ),
        None => parts.extend(other_message.dkim_headers.iter().map(|h| {
            format!(
                "dkim signature header.d={} not checked (not aligned)",
                normalize(&h.header.d)
            )
        })),
    }
    if skipped > 0 {
        parts.push(format!("{skipped} more signatures not checked"));
    }
    if parts.is_empty() {
        parts.push("dkim=none".to_owned());
    }
    if let Some(domain) = &spf_domain {
        parts.push(format!("spf=pass smtp.mailfrom={domain} (trusted header)"));
    }
    dmarc_verdict(&dkim, &dmarc, spf_domain, from, parts)
}

/// Maps mail-auth's DMARC output to the verdict. Only `pass` counts as a pass.
fn dmarc_verdict(
    dkim: &[DkimOutput<'_>],
    dmarc: &DmarcOutput,
    spf_domain: Option<String>,
    from: &str,
    mut parts: Vec<String>,
) -> Verdict {
    let dkim_pass = *dmarc.dkim_result() == DmarcResult::Pass;
    let spf_pass = *dmarc.spf_result() == DmarcResult::Pass;
    let temporary = [dmarc.dkim_result(), dmarc.spf_result()]
        .iter()
        .any(|r| matches!(r, DmarcResult::TempError(_)));
    let record = dmarc.dmarc_record().is_some();
    let policy = record.then(|| published(dmarc.policy()));
    let status = if dkim_pass || spf_pass {
        Status::Pass
    } else if temporary {
        Status::TempError
    } else if record {
        Status::Fail
    } else {
        Status::None
    };
    let dmarc_text = match (status, policy) {
        (Status::Pass, _) => "dmarc=pass".to_owned(),
        (Status::TempError, _) => {
            format!("dmarc=temperror (dns did not answer) header.from={from}")
        }
        (Status::Fail, Some(p)) => format!("dmarc=fail (p={}) header.from={from}", p.as_str()),
        _ => format!("dmarc=none (no policy published) header.from={from}"),
    };
    parts.push(dmarc_text);
    let aligned_domain = if dkim_pass {
        let passed: Vec<String> = dkim
            .iter()
            .filter(|o| *o.result() == DkimResult::Pass)
            .filter_map(|o| o.signature().map(|s| normalize(&s.d)))
            .collect();
        passed
            .iter()
            .find(|d| *d == from)
            .or_else(|| passed.iter().find(|d| may_align(d, from)))
            .cloned()
    } else if spf_pass {
        spf_domain
    } else {
        None
    };
    let mut text = parts.join(", ");
    if text.chars().count() > MAX_TEXT_CHARS {
        text = text.chars().take(MAX_TEXT_CHARS).collect::<String>() + " …";
    }
    Verdict {
        aligned_domain,
        policy,
        ..verdict(status, Some(from.to_owned()), text)
    }
}

/// `dkim=pass header.d=supplier.example`, `dkim=neutral (body hash did not verify) header.d=…`.
fn dkim_part(output: &DkimOutput<'_>) -> String {
    let (word, why) = match output.result() {
        DkimResult::Pass => ("pass", None),
        DkimResult::Neutral(e) => ("neutral", Some(reason(e))),
        DkimResult::Fail(e) => ("fail", Some(reason(e))),
        DkimResult::PermError(e) => ("permerror", Some(reason(e))),
        DkimResult::TempError(e) => ("temperror", Some(reason(e))),
        DkimResult::None => ("none", None),
    };
    let mut text = format!("dkim={word}");
    if let Some(why) = why {
        text.push_str(&format!(" ({why})"));
    }
    if let Some(signature) = output.signature() {
        text.push_str(&format!(" header.d={}", normalize(&signature.d)));
    }
    text
}

/// Why a DKIM signature did not pass, in a few words.
fn reason(err: &mail_auth::Error) -> String {
    use mail_auth::common::crypto::CryptoError;
    use mail_auth::dkim::DkimError;
    use mail_auth::{DnsError, Error};
    match err {
        Error::Dkim(DkimError::FailedBodyHashMatch) => "body hash did not verify".into(),
        Error::Crypto(CryptoError::FailedVerification) => "signature did not verify".into(),
        Error::Dkim(DkimError::SignatureExpired) => "signature expired".into(),
        Error::Dkim(DkimError::RevokedPublicKey) => "key revoked".into(),
        Error::Dkim(DkimError::SignatureLength) => "l= signatures are not accepted".into(),
        Error::Dns(DnsError::RecordNotFound(_)) => "no key published".into(),
        Error::Dns(DnsError::Resolver(_)) => "dns did not answer".into(),
        other => clean(&other.to_string()).to_lowercase(),
    }
}

#[cfg(test)]
mod tests;
