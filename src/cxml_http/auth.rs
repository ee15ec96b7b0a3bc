//! Who sent a request: the Header's Sender credential (`domain`, `Identity`) and its
//! `SharedSecret`, checked against every configured partner.
//!
//! The check takes the same steps whatever the outcome: every credential of the request (up to
//! `MAX_CREDENTIALS`) is compared with every partner, each comparison of SHA-256 digests in
//! constant time (`subtle`), and the first match is picked without a branch. An unknown
//! partner and a known one with a wrong secret therefore cost the same, and both are answered
//! the same 401 (`cxml-php`'s `hash_equals`, RECIPES.md §4).

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::envelope::Credential;
use super::settings::{Partner, credential_digest};

/// A request with more Sender credentials than this is judged by the first ones only; a real
/// Header carries one or two (cXML 1.2.063, `Sender`).
const MAX_CREDENTIALS: usize = 4;

/// Whether a missing `SharedSecret` may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// `POST /cxml`: the secret is required.
    Required,
    /// A PunchOut cart comes back through the buyer's browser and carries no secret (cXML
    /// User's Guide, PunchOutOrderMessage); one that carries a secret must carry the right one.
    IfPresent,
}

/// The partner that sent these credentials, if any matches with its secret.
pub fn partner<'p>(
    partners: &'p [Partner],
    credentials: &[Credential],
    secret: Secret,
) -> Option<&'p Partner> {
    let mut found = 0u32; // index + 1; 0: none
    for credential in credentials.iter().take(MAX_CREDENTIALS) {
        let claimed = credential_digest(&credential.domain, &credential.identity);
        let given: [u8; 32] = Sha256::digest(
            credential
                .shared_secret
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        )
        .into();
        let absent = subtle::Choice::from(u8::from(
            credential.shared_secret.is_none() && secret == Secret::IfPresent,
        ));
        for (i, p) in partners.iter().enumerate() {
            let same =
                claimed.ct_eq(&p.credential_digest) & (given.ct_eq(&p.secret_digest) | absent);
            let unset = found.ct_eq(&0);
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            found.conditional_assign(&index, same & unset);
        }
    }
    let index = usize::try_from(found).ok()?.checked_sub(1)?;
    partners.get(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(domain: &str, identity: &str, secret: Option<&str>) -> Credential {
        Credential {
            domain: domain.into(),
            identity: identity.into(),
            shared_secret: secret.map(str::to_owned),
        }
    }

    fn partners() -> Vec<Partner> {
        vec![
            Partner::new("ariba", "NetworkID", "AN01", "geheim"),
            Partner::new("coupa", "DUNS", "123456789", "anders"),
        ]
    }

    #[test]
    fn the_partner_is_found_by_credential_and_secret() {
        let partners = partners();
        let found = |c: Credential| partner(&partners, &[c], Secret::Required).map(|p| &p.name);
        assert_eq!(
            found(credential("networkid", "AN01", Some("geheim"))),
            Some(&"ariba".to_owned())
        );
        assert_eq!(
            found(credential("DUNS", "123456789", Some("anders"))),
            Some(&"coupa".to_owned())
        );
        assert_eq!(found(credential("NetworkID", "AN01", Some("anders"))), None);
        assert_eq!(found(credential("NetworkID", "AN02", Some("geheim"))), None);
        assert_eq!(found(credential("NetworkID", "AN01", None)), None);
        assert_eq!(found(credential("NetworkID", "AN01", Some(""))), None);
    }

    #[test]
    fn a_cart_without_a_secret_passes_by_its_credential_but_a_wrong_secret_does_not() {
        let partners = partners();
        let cart = |c: Credential| partner(&partners, &[c], Secret::IfPresent).map(|p| &p.name);
        assert_eq!(
            cart(credential("DUNS", "123456789", None)),
            Some(&"coupa".to_owned())
        );
        assert_eq!(cart(credential("DUNS", "123456789", Some("falsch"))), None);
        assert_eq!(cart(credential("DUNS", "999", None)), None);
    }

    #[test]
    fn the_first_matching_credential_wins_and_extra_ones_are_ignored() {
        let partners = partners();
        let many = vec![
            credential("x", "y", Some("z")),
            credential("DUNS", "123456789", Some("anders")),
            credential("NetworkID", "AN01", Some("geheim")),
        ];
        let found = partner(&partners, &many, Secret::Required).unwrap();
        assert_eq!(found.name, "coupa");
        let mut padded = vec![credential("x", "y", Some("z")); MAX_CREDENTIALS];
        padded.push(credential("NetworkID", "AN01", Some("geheim")));
        assert!(partner(&partners, &padded, Secret::Required).is_none());
    }
}
