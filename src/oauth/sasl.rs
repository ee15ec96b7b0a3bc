//! The SASL messages that carry an access token to a mail server, for IMAP `AUTHENTICATE`
//! and SMTP `AUTH`: Google's and Microsoft's XOAUTH2 and RFC 7628 OAUTHBEARER, the answer a
//! client owes the server's error challenge, and that challenge in words. Pure functions; the
//! bytes returned hold the token and are sent, never logged.

use crate::config::SaslMechanism;

/// Longest piece of a server's error challenge kept for a message.
const MAX_CHALLENGE_CHARS: usize = 300;

/// The client's first message: `user=U^Aauth=Bearer T^A^A` (XOAUTH2) or
/// `n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A` (RFC 7628 §3.1).
pub fn initial_response(
    mechanism: SaslMechanism,
    user: &str,
    host: &str,
    port: u16,
    token: &str,
) -> Vec<u8> {
    match mechanism {
        SaslMechanism::XOAuth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
        SaslMechanism::OAuthBearer => format!(
            "n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01",
            saslname(user)
        ),
    }
    .into_bytes()
}

/// What the client sends after the server's error challenge, so that the server ends the
/// exchange with its failure reply: nothing for XOAUTH2, a single `%x01` for OAUTHBEARER
/// (RFC 7628 §3.2.3).
pub fn error_answer(mechanism: SaslMechanism) -> Vec<u8> {
    match mechanism {
        SaslMechanism::XOAuth2 => Vec::new(),
        SaslMechanism::OAuthBearer => vec![0x01],
    }
}

/// RFC 5801 §4 `saslname`: `,` and `=` are escaped as `=2C` and `=3D`.
fn saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// A server's error challenge (base64-decoded), in words: the JSON's `status`, `scope` and
/// `schemes` (RFC 7628 §3.2.2), else the text itself, on one line and bounded.
pub fn describe_challenge(challenge: &[u8]) -> String {
    let text = String::from_utf8_lossy(challenge);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match one_line.char_indices().nth(MAX_CHALLENGE_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_and_oauthbearer_messages_are_as_the_specs_write_them() {
        assert_eq!(
            initial_response(SaslMechanism::XOAuth2, "u@example.com", "h", 993, "T"),
            b"user=u@example.com\x01auth=Bearer T\x01\x01"
        );
        assert_eq!(
            initial_response(
                SaslMechanism::OAuthBearer,
                "a,b=c",
                "imap.example.com",
                993,
                "T"
            ),
            b"n,a=a=2Cb=3Dc,\x01host=imap.example.com\x01port=993\x01auth=Bearer T\x01\x01"
        );
        assert!(error_answer(SaslMechanism::XOAuth2).is_empty());
        assert_eq!(error_answer(SaslMechanism::OAuthBearer), [1]);
    }

    #[test]
    fn a_challenge_is_one_bounded_line() {
        assert_eq!(
            describe_challenge(b"{\"status\":\"401\",\n\"scope\":\"mail\"}"),
            "{\"status\":\"401\", \"scope\":\"mail\"}"
        );
        assert!(describe_challenge(&[b'x'; 1000]).chars().count() <= MAX_CHALLENGE_CHARS + 1);
    }
}
