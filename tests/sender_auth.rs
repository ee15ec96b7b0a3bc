//! Sender authenticity (DESIGN.md promise 8, "only the authentic counts") against a real DNS
//! server: a private dnsmasq on a loopback port publishes the DKIM keys and DMARC policies, the
//! messages are signed here with mail-auth's signer, and `eingang::auth` checks them through
//! its hickory resolver pointed at that server, as `[dns] server` does.
//!
//! Published in this DNS (every other name is NXDOMAIN):
//! - `supplier.example`: DKIM key `sel` (RSA) and `ed` (Ed25519), `p=reject`;
//! - `attacker.example`: DKIM key `sel`, no DMARC policy;
//! - `monitor.example`: `p=none` (monitoring only);
//! - `nodmarc.example`: nothing.

#[path = "support/dkim.rs"]
mod dkim;
#[path = "support/dns.rs"]
mod dns;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};

use dns::{Dnsmasq, Failing, Silent};
use eingang::auth::{
    CHECK_DEADLINE, DecidedBy, Decision, Published, Requirement, Resolver, Status, Trust, Verdict,
    authenticate, decide,
};

struct Keys {
    rsa_record: String,
    ed_pkcs8: Vec<u8>,
    ed_record: String,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ed_pkcs8 = Ed25519Key::generate_pkcs8().expect("generate an ed25519 key");
        let ed_public = Ed25519Key::from_pkcs8_der(&ed_pkcs8)
            .expect("ed25519 key")
            .public_key();
        Keys {
            rsa_record: dkim::rsa_record(),
            ed_record: format!("v=DKIM1; k=ed25519; p={}", b64(&ed_public)),
            ed_pkcs8,
        }
    })
}

fn records() -> Vec<(String, String)> {
    let k = keys();
    [
        ("sel._domainkey.supplier.example", k.rsa_record.as_str()),
        ("ed._domainkey.supplier.example", k.ed_record.as_str()),
        ("sel._domainkey.attacker.example", k.rsa_record.as_str()),
        ("sel._domainkey.monitor.example", k.rsa_record.as_str()),
        (
            "_dmarc.supplier.example",
            "v=DMARC1; p=reject; rua=mailto:dmarc@supplier.example",
        ),
        ("_dmarc.monitor.example", "v=DMARC1; p=none"),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_owned(), t.to_owned()))
    .collect()
}

/// The dnsmasq of this test binary; names under `slow.example` go to a server that never
/// answers.
fn dns() -> &'static Dnsmasq {
    static SILENT: OnceLock<Silent> = OnceLock::new();
    static DNS: OnceLock<Dnsmasq> = OnceLock::new();
    let silent = SILENT.get_or_init(Silent::start);
    DNS.get_or_init(|| Dnsmasq::start_forwarding(&records(), &[("slow.example", silent.addr())]))
}

/// A resolver asking the shared dnsmasq (one per test: each test has its own runtime).
fn resolver() -> Resolver {
    let resolver = Resolver::new(Some(dns().addr()));
    assert_eq!(resolver.problem(), None);
    resolver
}

fn message(from: &str) -> String {
    format!(
        "From: Lieferant <{from}>\r\nTo: lager@shop.example\r\nSubject: Lieferschein LS-4711\r\n\
         Date: Fri, 20 Nov 2026 10:00:00 +0100\r\nMessage-ID: <ls-4711@mail.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Anbei der Lieferschein LS-4711: 12 Stk A-100.\r\n"
    )
}

use dkim::{SIGNED_HEADERS, b64};

/// `message` with an RSA signature of `domain` (selector `sel`), relaxed/relaxed.
fn signed(domain: &str, message: &str) -> Vec<u8> {
    dkim::sign(domain, message.as_bytes())
}

fn signed_with(domain: &str, message: &str, canonicalization: Canonicalization) -> Vec<u8> {
    dkim::sign_with(domain, message.as_bytes(), canonicalization)
}

async fn check(raw: &[u8], trust: &Trust) -> Verdict {
    authenticate(raw, trust, &resolver()).await
}

fn is_reject(decision: &Decision) -> bool {
    matches!(decision, Decision::Reject(reason) if reason.starts_with("sender not authenticated"))
}

#[tokio::test]
async fn aligned_dkim_signature_is_authentic() {
    let raw = signed("supplier.example", &message("lager@supplier.example"));
    let v = check(&raw, &Trust::Nothing).await;
    assert_eq!(v.status, Status::Pass, "{v:?}\n{}", dns().log());
    assert_eq!(v.aligned_domain.as_deref(), Some("supplier.example"));
    assert_eq!(v.from_domain.as_deref(), Some("supplier.example"));
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(v.decided_by, DecidedBy::Eingang);
    assert_eq!(v.text, "dkim=pass header.d=supplier.example, dmarc=pass");
    assert_eq!(decide(Requirement::Required, &v), Decision::Accept);
}

#[tokio::test]
async fn ed25519_signature_is_authentic() {
    let key = Ed25519Key::from_pkcs8_der(&keys().ed_pkcs8).expect("ed25519 key");
    let text = message("lager@supplier.example");
    let signature = DkimSigner::from_key(key)
        .domain("supplier.example")
        .selector("ed")
        .headers(SIGNED_HEADERS)
        .sign(text.as_bytes())
        .expect("sign");
    let raw = format!("{}{text}", signature.to_header());
    let v = check(raw.as_bytes(), &Trust::Nothing).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
}

#[tokio::test]
async fn signature_by_another_domain_is_not_authentic() {
    let raw = signed("attacker.example", &message("lager@supplier.example"));
    let v = check(&raw, &Trust::Nothing).await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(v.aligned_domain, None);
    assert_eq!(
        v.text,
        "dkim=pass header.d=attacker.example (not aligned), dmarc=fail (p=reject) header.from=supplier.example"
    );
    assert!(is_reject(&decide(Requirement::IfPublished, &v)));
}

#[tokio::test]
async fn altered_body_is_not_authentic() {
    let raw = String::from_utf8(signed(
        "supplier.example",
        &message("lager@supplier.example"),
    ))
    .expect("utf-8")
    .replace("12 Stk", "120 Stk");
    let v = check(raw.as_bytes(), &Trust::Nothing).await;
    // mail-auth says Neutral(FailedBodyHashMatch), not Fail: only a pass may count.
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert!(
        v.text
            .starts_with("dkim=neutral (body hash did not verify) header.d=supplier.example"),
        "{}",
        v.text
    );
    assert!(is_reject(&decide(Requirement::IfPublished, &v)));
}

#[tokio::test]
async fn forged_from_with_dmarc_fail_is_not_authenticated() {
    let v = check(
        message("lager@supplier.example").as_bytes(),
        &Trust::Nothing,
    )
    .await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(
        v.text,
        "dkim=none, dmarc=fail (p=reject) header.from=supplier.example"
    );
    let Decision::Reject(reason) = decide(Requirement::IfPublished, &v) else {
        panic!("rejected under the default");
    };
    assert_eq!(
        reason,
        "sender not authenticated: DMARC fails for supplier.example, which publishes p=reject \
         (dkim=none, dmarc=fail (p=reject) header.from=supplier.example)"
    );
}

#[tokio::test]
async fn unsigned_mail_under_p_none_is_accepted_unless_required() {
    let v = check(
        message("versand@monitor.example").as_bytes(),
        &Trust::Nothing,
    )
    .await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::None));
    assert_eq!(decide(Requirement::IfPublished, &v), Decision::Accept);
    assert!(is_reject(&decide(Requirement::Required, &v)));
    assert_eq!(decide(Requirement::Off, &v), Decision::Accept);
    // Signed, the same domain passes even though it only monitors.
    let raw = signed("monitor.example", &message("versand@monitor.example"));
    assert_eq!(check(&raw, &Trust::Nothing).await.status, Status::Pass);
}

#[tokio::test]
async fn no_dmarc_record_means_nothing_to_judge_by() {
    let v = check(message("info@nodmarc.example").as_bytes(), &Trust::Nothing).await;
    assert_eq!(v.status, Status::None, "{v:?}");
    assert_eq!(v.policy, None);
    assert_eq!(
        v.text,
        "dkim=none, dmarc=none (no policy published) header.from=nodmarc.example"
    );
    assert_eq!(decide(Requirement::IfPublished, &v), Decision::Accept);
    assert!(is_reject(&decide(Requirement::Required, &v)));
}

#[tokio::test]
async fn lf_only_message_still_verifies() {
    // Maildir copies and saved .eml files often have bare LF; IMAP FETCH gives CRLF.
    let raw = String::from_utf8(signed(
        "supplier.example",
        &message("lager@supplier.example"),
    ))
    .expect("utf-8")
    .replace("\r\n", "\n");
    assert!(!raw.contains('\r'));
    let v = check(raw.as_bytes(), &Trust::Nothing).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
}

#[tokio::test]
async fn lf_only_message_with_simple_canonicalization_still_verifies() {
    // c=simple hashes the header lines as they are: mail-auth alone fails the bare-LF copy
    // ("signature did not verify"); eingang gives it its CRLF back first.
    let raw = signed_with(
        "supplier.example",
        &message("lager@supplier.example"),
        Canonicalization::Simple,
    );
    assert_eq!(check(&raw, &Trust::Nothing).await.status, Status::Pass);
    let lf = String::from_utf8(raw).expect("utf-8").replace("\r\n", "\n");
    let v = check(lf.as_bytes(), &Trust::Nothing).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
}

#[tokio::test]
async fn microsoft_365_header_is_trusted_with_topmost() {
    let raw = format!(
        "Authentication-Results: spf=pass (sender IP is 192.0.2.7)\r\n smtp.mailfrom=supplier.example; dkim=pass\r\n \
         (signature was verified) header.d=supplier.example;dmarc=pass action=none\r\n header.from=supplier.example;compauth=pass reason=100\r\n\
         Received: from mail.supplier.example (192.0.2.7) by AM0PR01MB0001.eurprd01.prod.outlook.com\r\n{}",
        message("lager@supplier.example")
    );
    let v = check(raw.as_bytes(), &Trust::Topmost).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert_eq!(v.decided_by, DecidedBy::TrustedHeader);
    assert_eq!(v.authserv_id, None);
    assert_eq!(v.aligned_domain.as_deref(), Some("supplier.example"));
    assert_eq!(
        v.text,
        "trusted topmost header: spf=pass smtp.mailfrom=supplier.example, dkim=pass header.d=supplier.example, \
         dmarc=pass header.from=supplier.example"
    );
    // Trusted by id, a header without an id is not believed: eingang's own check finds no
    // signature, and the domain publishes p=reject.
    let by_id = Trust::AuthservId("mx.shop.example".into());
    let own = check(raw.as_bytes(), &by_id).await;
    assert_eq!(
        (own.status, own.decided_by),
        (Status::Fail, DecidedBy::Eingang)
    );
}

#[tokio::test]
async fn forged_header_below_the_trusted_one_is_ignored() {
    let trust = Trust::AuthservId("mx.shop.example".into());
    // The forger's header came with the message; the server's own is on top.
    let raw = format!(
        "Authentication-Results: mx.shop.example; dkim=none; dmarc=fail (p=reject dis=none) header.from=supplier.example\r\n\
         Received: from evil.example by mx.shop.example\r\n\
         Authentication-Results: mx.shop.example; dkim=pass header.d=supplier.example; dmarc=pass header.from=supplier.example\r\n{}",
        message("lager@supplier.example")
    );
    let v = check(raw.as_bytes(), &trust).await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.decided_by, DecidedBy::TrustedHeader);
    assert_eq!(v.policy, Some(Published::Reject));
    assert!(is_reject(&decide(Requirement::IfPublished, &v)));

    // The server's header says nothing about DMARC: the forged one right below it, even with
    // the trusted id, is not merged in; eingang's own check decides.
    let raw = format!(
        "Authentication-Results: mx.shop.example; spf=none smtp.mailfrom=evil.example\r\n\
         Authentication-Results: mx.shop.example; dmarc=pass header.from=supplier.example\r\n{}",
        message("lager@supplier.example")
    );
    let v = check(raw.as_bytes(), &trust).await;
    assert_eq!(
        (v.status, v.decided_by),
        (Status::Fail, DecidedBy::Eingang),
        "{v:?}"
    );
}

#[tokio::test]
async fn trusted_id_that_is_not_topmost_is_ignored() {
    let raw = format!(
        "Authentication-Results: spamfilter.shop.example; spam=no\r\n\
         Authentication-Results: mx.shop.example; dmarc=pass header.from=supplier.example\r\n{}",
        message("lager@supplier.example")
    );
    let v = check(raw.as_bytes(), &Trust::AuthservId("mx.shop.example".into())).await;
    assert_eq!(
        (v.status, v.decided_by),
        (Status::Fail, DecidedBy::Eingang),
        "{v:?}"
    );
}

#[tokio::test]
async fn stopped_dns_server_is_a_temporary_error() {
    // The shared server starts first, so that it cannot take this one's port once freed.
    let _ = dns();
    let own = Dnsmasq::start(&records());
    let resolver = Resolver::new(Some(own.addr()));
    let raw = signed("supplier.example", &message("lager@supplier.example"));
    let up = authenticate(&raw, &Trust::Nothing, &resolver).await;
    assert_eq!(up.status, Status::Pass, "{up:?}");
    own.stop();
    let started = Instant::now();
    let down = authenticate(&raw, &Trust::Nothing, &resolver).await;
    let took = started.elapsed();
    assert_eq!(down.status, Status::TempError, "{down:?}");
    assert!(
        took <= CHECK_DEADLINE + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(matches!(
        decide(Requirement::Required, &down),
        Decision::RetryLater(_)
    ));
    assert!(matches!(
        decide(Requirement::IfPublished, &down),
        Decision::AcceptWithWarning(_)
    ));
    // A trusted header needs no DNS: an offline site that trusts its server still decides.
    let with_header = format!(
        "Authentication-Results: mx.shop.example; dmarc=pass header.from=supplier.example\r\n{}",
        String::from_utf8(raw).expect("utf-8")
    );
    let trust = Trust::AuthservId("mx.shop.example".into());
    let v = authenticate(with_header.as_bytes(), &trust, &resolver).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
}

#[tokio::test]
async fn silent_dns_server_is_a_temporary_error_within_the_deadline() {
    let silent = Silent::start();
    let resolver = Resolver::new(Some(silent.addr()));
    let started = Instant::now();
    let v = authenticate(
        &signed("supplier.example", &message("lager@supplier.example")),
        &Trust::Nothing,
        &resolver,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(v.status, Status::TempError, "{v:?}");
    assert_eq!(v.from_domain.as_deref(), Some("supplier.example"));
    assert!(
        took <= CHECK_DEADLINE + Duration::from_secs(1),
        "took {took:?}"
    );
}

#[tokio::test]
async fn servfail_and_refused_are_temporary_errors() {
    let raw = signed("supplier.example", &message("lager@supplier.example"));
    for (rcode, name) in [(2, "SERVFAIL"), (5, "REFUSED")] {
        let server = Failing::start(rcode);
        let started = Instant::now();
        let v = authenticate(&raw, &Trust::Nothing, &Resolver::new(Some(server.addr()))).await;
        assert_eq!(v.status, Status::TempError, "{name}: {v:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn slow_dns_of_an_unaligned_signer_cannot_turn_a_fail_into_temperror() {
    // The forger signs with a domain whose DNS never answers; the verdict about the From
    // domain must still be fail, not temperror (which the default would accept).
    let raw = signed("slow.example", &message("lager@supplier.example"));
    let started = Instant::now();
    let v = check(&raw, &Trust::Nothing).await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(
        v.text,
        "dkim signature header.d=slow.example not checked (not aligned), \
         dmarc=fail (p=reject) header.from=supplier.example"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_config_names_the_dns_server_and_the_trusted_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("eingang.toml");
    std::fs::write(
        &path,
        format!(
            "[dns]\nserver = \"{}\"\n\n[[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\n\
             tls = \"none\"\nuser = \"lager\"\npassword = \"x\"\ninbox = \"in\"\narchive = \"archiv\"\n\
             error = \"fehler\"\ntrusted_authserv_id = \"MX.Shop.Example\"\n",
            dns().addr()
        ),
    )
    .expect("write config");
    let config = eingang::config::Config::load(&path).expect("the config loads");
    assert_eq!(config.dns_server, Some(dns().addr()));
    let source = config.source("mail").expect("the source");
    assert_eq!(source.trust, Trust::AuthservId("mx.shop.example".into()));
    let resolver = Resolver::new(config.dns_server);
    let raw = signed("supplier.example", &message("lager@supplier.example"));
    let v = authenticate(&raw, &source.trust, &resolver).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
}
