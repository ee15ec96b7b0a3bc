//! DKIM signatures made by the tests, with the test-only key of `tests/data/dkim/` (its public
//! half is what the tests' DNS publishes as `sel._domainkey.<domain>`): by mail-auth's signer,
//! and independently by dkimpy from PyPI, run as `python3 tests/support/dkimpy_sign.py`.
#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The test-only RSA key (tests/data/dkim/README.md).
pub const RSA_PEM: &str = include_str!("../data/dkim/test-only-rsa-2048.pem");
/// The selector every test signature uses.
pub const SELECTOR: &str = "sel";
/// The headers every test signature covers.
pub const SIGNED_HEADERS: [&str; 5] = ["From", "To", "Subject", "Date", "Message-ID"];

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A DER length.
fn der_len(len: usize) -> Vec<u8> {
    match len {
        0..=0x7f => vec![len as u8],
        0x80..=0xff => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

/// A PKCS#1 RSA public key wrapped as SubjectPublicKeyInfo, the form `openssl pkey -pubout`
/// prints and DKIM records carry.
fn spki(pkcs1: &[u8]) -> Vec<u8> {
    let algorithm = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    bits.extend(der_len(pkcs1.len() + 1));
    bits.push(0x00);
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(algorithm.len() + bits.len()));
    out.extend_from_slice(&algorithm);
    out.extend(bits);
    out
}

/// The test key, for mail-auth's signer.
pub fn rsa_key() -> RsaKey<Sha256> {
    let der = PrivatePkcs8KeyDer::from_pem_slice(RSA_PEM.as_bytes()).expect("the test key is PEM");
    RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).expect("the test key is RSA")
}

/// The DKIM key record of the test key: `v=DKIM1; k=rsa; p=…`.
pub fn rsa_record() -> String {
    format!("v=DKIM1; k=rsa; p={}", b64(&spki(&rsa_key().public_key())))
}

/// `raw` with a relaxed/relaxed RSA signature of `domain` (selector `sel`) on top.
pub fn sign(domain: &str, raw: &[u8]) -> Vec<u8> {
    sign_with(domain, raw, Canonicalization::Relaxed)
}

/// `raw` signed with the given canonicalization for header and body.
pub fn sign_with(domain: &str, raw: &[u8], canonicalization: Canonicalization) -> Vec<u8> {
    let signature = DkimSigner::from_key(rsa_key())
        .domain(domain)
        .selector(SELECTOR)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(canonicalization)
        .body_canonicalization(canonicalization)
        .sign(raw)
        .expect("sign");
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(raw);
    out
}

/// `raw` signed by dkimpy (relaxed/simple, dkimpy's default, for `domain`, selector `sel`).
/// Fails with the install command when Python or dkimpy is missing.
pub fn sign_with_dkimpy(domain: &str, raw: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("key.pem");
    std::fs::write(&key, RSA_PEM).expect("write the test key");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/dkimpy_sign.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args([domain, SELECTOR])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 not found: install it with `apt-get install -y python3` (.ci/run does)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(raw)
        .expect("write the message to dkimpy");
    let out = child.wait_with_output().expect("run dkimpy");
    assert!(
        out.status.success(),
        "dkimpy failed (install it with `python3 -m pip install dkimpy==1.1.8`; .ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
