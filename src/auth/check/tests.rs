//! The check without a DNS server: records pre-loaded into the resolver's cache (any other
//! name is NXDOMAIN), messages signed here with a fresh Ed25519 key. `tests/sender_auth.rs` does the same against a real DNS server.

use base64::Engine as _;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_auth::dmarc::Dmarc;

use super::*;
use crate::auth::{Resolver, authenticate};

struct Key {
    pkcs8: Vec<u8>,
    record: String,
}

fn key() -> Key {
    let pkcs8 = Ed25519Key::generate_pkcs8().expect("generate an ed25519 key");
    let public = Ed25519Key::from_pkcs8_der(&pkcs8)
        .expect("read the key back")
        .public_key();
    let record = format!(
        "v=DKIM1; k=ed25519; p={}",
        base64::engine::general_purpose::STANDARD.encode(public)
    );
    Key { pkcs8, record }
}

fn sign(key: &Key, domain: &str, message: &str) -> Vec<u8> {
    let signer = Ed25519Key::from_pkcs8_der(&key.pkcs8).expect("key");
    let signature = DkimSigner::from_key(signer)
        .domain(domain)
        .selector("sel")
        .headers(["From", "To", "Subject", "Date", "Message-ID"])
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(message.as_bytes())
        .expect("sign");
    format!("{}{message}", signature.to_header()).into_bytes()
}

fn message(from: &str) -> String {
    format!(
        "From: Lieferant <{from}>\r\nTo: lager@shop.example\r\nSubject: Lieferschein LS-1\r\n\
         Date: Fri, 20 Nov 2026 10:00:00 +0100\r\nMessage-ID: <ls-1@supplier.example>\r\n\r\n\
         Anbei der Lieferschein.\r\n"
    )
}

/// A resolver that knows `records` and answers NXDOMAIN for `missing` (and for any other name:
/// the lists say which names each case touches).
fn resolver(records: &[(&str, &str)], missing: &[&str]) -> Resolver {
    let resolver = Resolver::offline();
    for (name, record) in records {
        if name.contains("._domainkey.") {
            resolver.preload::<DomainKey>(name, record);
        } else {
            resolver.preload::<Dmarc>(name, record);
        }
    }
    for name in missing {
        resolver.preload_missing(name);
    }
    resolver
}

#[tokio::test]
async fn a_subdomain_signature_aligns_relaxed_but_not_strict() {
    let k = key();
    let raw = sign(
        &k,
        "mail.supplier.example",
        &message("lager@supplier.example"),
    );
    let missing = ["_dmarc.mail.supplier.example.", "_dmarc.example."];
    let relaxed = resolver(
        &[
            ("sel._domainkey.mail.supplier.example.", &k.record),
            ("_dmarc.supplier.example.", "v=DMARC1; p=reject"),
        ],
        &missing,
    );
    let v = authenticate(&raw, &Trust::Nothing, &relaxed).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert_eq!(v.aligned_domain.as_deref(), Some("mail.supplier.example"));
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(
        v.text,
        "dkim=pass header.d=mail.supplier.example, dmarc=pass"
    );

    let strict = resolver(
        &[
            ("sel._domainkey.mail.supplier.example.", &k.record),
            (
                "_dmarc.supplier.example.",
                "v=DMARC1; p=quarantine; adkim=s",
            ),
        ],
        &missing,
    );
    let v = authenticate(&raw, &Trust::Nothing, &strict).await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::Quarantine));
    assert_eq!(v.aligned_domain, None);
}

#[tokio::test]
async fn a_from_subdomain_gets_the_subdomain_policy() {
    let r = resolver(
        &[(
            "_dmarc.supplier.example.",
            "v=DMARC1; p=none; sp=reject; np=reject",
        )],
        &["_dmarc.news.supplier.example.", "_dmarc.example."],
    );
    let v = authenticate(
        message("info@news.supplier.example").as_bytes(),
        &Trust::Nothing,
        &r,
    )
    .await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(
        v.text,
        "dkim=none, dmarc=fail (p=reject) header.from=news.supplier.example"
    );
}

#[tokio::test]
async fn from_addresses_in_several_domains_fail_with_the_strictest_policy() {
    let r = resolver(
        &[("_dmarc.supplier.example.", "v=DMARC1; p=reject")],
        &["_dmarc.attacker.example."],
    );
    let raw = message("lager@supplier.example").replace("To:", "From: x@attacker.example\r\nTo:");
    let v = authenticate(raw.as_bytes(), &Trust::Nothing, &r).await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
    assert_eq!(v.policy, Some(Published::Reject));
    assert_eq!(v.from_domain.as_deref(), Some("supplier.example"));
    assert!(v.text.contains("several domains"), "{}", v.text);
}

#[tokio::test]
async fn a_trusted_fail_without_a_policy_looks_the_policy_up() {
    let r = resolver(
        &[("_dmarc.supplier.example.", "v=DMARC1; p=quarantine")],
        &[],
    );
    let raw = format!(
        "Authentication-Results: mx.shop.example; dmarc=fail header.from=supplier.example\r\n{}",
        message("lager@supplier.example")
    );
    let trust = Trust::AuthservId("mx.shop.example".into());
    let v = authenticate(raw.as_bytes(), &trust, &r).await;
    assert_eq!(v.status, Status::Fail);
    assert_eq!(v.decided_by, DecidedBy::TrustedHeader);
    assert_eq!(v.authserv_id.as_deref(), Some("mx.shop.example"));
    assert_eq!(v.policy, Some(Published::Quarantine));
    assert_eq!(
        v.text,
        "trusted header of mx.shop.example: dmarc=fail header.from=supplier.example"
    );
}

#[tokio::test]
async fn a_trusted_pass_needs_no_dns_and_names_the_aligned_domain() {
    let raw = format!(
        "Authentication-Results: mx.google.com; dkim=pass header.i=@mail.supplier.example; \
         spf=pass smtp.mailfrom=bounce@other.example; dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=supplier.example\r\n{}",
        message("lager@supplier.example")
    );
    let trust = Trust::AuthservId("mx.google.com".into());
    let v = authenticate(raw.as_bytes(), &trust, &Resolver::unavailable("offline")).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert_eq!(v.aligned_domain.as_deref(), Some("mail.supplier.example"));
    assert_eq!(v.policy, Some(Published::Reject));
}

#[tokio::test]
async fn a_trusted_temperror_is_checked_again_by_eingang() {
    let k = key();
    let signed = String::from_utf8(sign(
        &k,
        "supplier.example",
        &message("lager@supplier.example"),
    ))
    .expect("utf-8");
    let raw = format!(
        "Authentication-Results: mx.shop.example; dmarc=temperror header.from=supplier.example\r\n{signed}"
    );
    let r = resolver(
        &[
            ("sel._domainkey.supplier.example.", &k.record),
            ("_dmarc.supplier.example.", "v=DMARC1; p=reject"),
        ],
        &["_dmarc.example."],
    );
    let trust = Trust::AuthservId("mx.shop.example".into());
    let v = authenticate(raw.as_bytes(), &trust, &r).await;
    assert_eq!(
        (v.status, v.decided_by),
        (Status::Pass, DecidedBy::Eingang),
        "{v:?}"
    );
}

#[tokio::test]
async fn a_trusted_result_about_another_domain_is_not_used() {
    let raw = format!(
        "Authentication-Results: mx.shop.example; dmarc=pass header.from=attacker.example\r\n{}",
        message("lager@supplier.example")
    );
    let trust = Trust::AuthservId("mx.shop.example".into());
    let v = authenticate(raw.as_bytes(), &trust, &Resolver::unavailable("offline")).await;
    assert_eq!(v.decided_by, DecidedBy::Eingang);
    assert_eq!(v.status, Status::TempError, "own check, no dns: {v:?}");
}

#[tokio::test]
async fn a_trusted_spf_pass_aligns_for_dmarc() {
    let r = resolver(
        &[("_dmarc.supplier.example.", "v=DMARC1; p=reject")],
        &["_dmarc.bounce.supplier.example.", "_dmarc.example."],
    );
    let raw = format!(
        "Authentication-Results: mx.shop.example; spf=pass smtp.mailfrom=x@bounce.supplier.example\r\n{}",
        message("lager@supplier.example")
    );
    let trust = Trust::AuthservId("mx.shop.example".into());
    let v = authenticate(raw.as_bytes(), &trust, &r).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert_eq!(v.decided_by, DecidedBy::Eingang);
    assert_eq!(v.aligned_domain.as_deref(), Some("bounce.supplier.example"));
    // The same header from an untrusted server adds nothing.
    let v = authenticate(raw.as_bytes(), &Trust::Nothing, &r).await;
    assert_eq!(v.status, Status::Fail, "{v:?}");
}

#[tokio::test]
async fn no_dns_at_all_is_a_temporary_error() {
    let v = authenticate(
        message("lager@supplier.example").as_bytes(),
        &Trust::Nothing,
        &Resolver::unavailable("no /etc/resolv.conf"),
    )
    .await;
    assert_eq!(v.status, Status::TempError);
    assert_eq!(v.from_domain.as_deref(), Some("supplier.example"));
    assert!(v.text.contains("no /etc/resolv.conf"), "{}", v.text);
}

#[tokio::test]
async fn messages_without_a_from_domain_have_nothing_to_judge() {
    let r = Resolver::unavailable("not needed");
    let v = authenticate(b"Subject: x\r\n\r\nbody", &Trust::Nothing, &r).await;
    assert_eq!((v.status, v.from_domain), (Status::None, None));
    let v = authenticate(b"", &Trust::Nothing, &r).await;
    assert_eq!(v.status, Status::None);
}

#[tokio::test]
async fn a_flood_of_signatures_is_checked_only_in_part() {
    let k = key();
    let mut raw = String::new();
    for n in 0..50 {
        // An unsupported canonicalization: malformed, reported as neutral.
        raw.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=x{n}.example; s=sel; c=odd/odd; h=from; bh=YQ==; b=YQ==\r\n"
        ));
    }
    let signed = String::from_utf8(sign(
        &k,
        "supplier.example",
        &message("lager@supplier.example"),
    ))
    .expect("utf-8");
    raw.push_str(&signed);
    let r = resolver(
        &[
            ("sel._domainkey.supplier.example.", &k.record),
            ("_dmarc.supplier.example.", "v=DMARC1; p=reject"),
        ],
        &["_dmarc.example."],
    );
    let v = authenticate(raw.as_bytes(), &Trust::Nothing, &r).await;
    assert_eq!(v.status, Status::Pass, "{v:?}");
    assert!(
        v.text.contains("46 more signatures not checked"),
        "{}",
        v.text
    );
    assert!(v.text.chars().count() <= MAX_TEXT_CHARS + 2, "{}", v.text);
}

#[test]
fn bare_lf_messages_get_their_crlf_back() {
    assert_eq!(wire_form(b"a\nb\n").as_ref(), b"a\r\nb\r\n");
    assert_eq!(
        wire_form(b"a\r\nb\n").as_ref(),
        b"a\r\nb\n",
        "mixed: left alone"
    );
    assert!(matches!(wire_form(b"a\r\n"), Cow::Borrowed(_)));
    assert!(matches!(wire_form(b"no line end"), Cow::Borrowed(_)));
}

#[test]
fn only_signers_sharing_two_labels_may_align() {
    assert!(may_align("supplier.example", "supplier.example"));
    assert!(may_align("mail.supplier.example", "supplier.example"));
    assert!(may_align("a.supplier.example", "b.supplier.example"));
    assert!(may_align("Supplier.Example.", "supplier.example"));
    assert!(!may_align("attacker.example", "supplier.example"));
    assert!(!may_align("example", "supplier.example"));
    assert!(!may_align("", "supplier.example"));
}

#[tokio::test]
async fn mangled_messages_never_panic() {
    let k = key();
    let good = sign(&k, "supplier.example", &message("lager@supplier.example"));
    let r = resolver(&[("sel._domainkey.supplier.example.", &k.record)], &[]);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut raw = good.clone();
        for _ in 0..(next() % 8 + 1) {
            let at = (next() as usize) % raw.len();
            match next() % 3 {
                0 => raw[at] = (next() & 0xff) as u8,
                1 => {
                    raw.remove(at);
                }
                _ => raw.insert(at, b";=:\r\n"[(next() % 5) as usize]),
            }
        }
        let v = authenticate(&raw, &Trust::Topmost, &r).await;
        assert!(!v.text.chars().any(char::is_control), "{:?}", v.text);
    }
}
