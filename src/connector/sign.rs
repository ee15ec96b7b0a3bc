//! Standard Webhooks signatures (standardwebhooks.com, RECIPES.md §5): `webhook-signature`
//! is `v1,` and the base64 HMAC-SHA256, keyed with the decoded `whsec_` secret, over
//! `<webhook-id>.<webhook-timestamp>.<body>`, the body exactly as sent.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The spec's bounds on a key: 24 to 64 bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// A connector's signing key, decoded; its `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl SigningKey {
    /// Reads a `whsec_<base64>` secret. The error never repeats the secret.
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let Some(encoded) = secret.trim().strip_prefix("whsec_") else {
            return Err(
                "the secret is not a Standard Webhooks key: it must start with whsec_".into(),
            );
        };
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the secret after whsec_ is not base64".to_owned())?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(format!(
                "the secret holds {} bytes; a Standard Webhooks key holds 24 to 64",
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }

    /// The `webhook-signature` value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_test_vector_signs_as_published() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(format!("{key:?}"), "***");
    }

    #[test]
    fn a_key_that_is_not_whsec_base64_of_24_to_64_bytes_is_refused_without_echo() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!",
            "whsec_c2hvcnQ=",
        ] {
            let err = SigningKey::parse(bad).unwrap_err();
            assert!(!err.contains(bad), "{err}");
        }
    }
}
