//! TLS for every remote source: rustls with the ring provider, the system's roots (with the
//! Mozilla set as a fallback on images without any) plus an optional `ca_file`, and host names
//! verified. There is no switch to turn verification off.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A client config trusting the system roots and, if given, the certificates in `ca_file`
/// (PEM). One config per source: its session cache lets FTPS data channels resume the control
/// channel's session, which vsftpd requires (`require_ssl_reuse`).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "a system root certificate could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS failure in an admin's words, with what to change; the library's own text stays at the
/// end for whoever needs it. `host` is the name eingang connected to.
pub fn plain_words(why: &str, host: &str) -> String {
    let hint = if why.contains("UnknownIssuer")
        || why.contains("UnknownCa")
        || why.contains("BadSignature")
    {
        "the server's certificate is signed by an authority eingang does not trust: if the server uses its own CA or a self-signed certificate, give that certificate as ca_file".to_owned()
    } else if why.contains("NotValidForName") {
        format!(
            "the server's certificate is not made out to {host}: connect by the name on its certificate"
        )
    } else if why.contains("Expired") {
        "the server's certificate has expired: it must be renewed on the server".to_owned()
    } else if why.contains("InvalidContentType") || why.contains("corrupt message") {
        "the server answered without TLS: this port speaks plain text; use tls = \"starttls\" on it (IMAP 143, SMTP 587, FTP 21 with tls = \"explicit\"), or the TLS port with tls = \"implicit\" (IMAP 993, SMTP 465, FTPS 990)".to_owned()
    } else if why.contains("HandshakeFailure") || why.contains("PeerIncompatible") {
        "the server and eingang share no TLS version or cipher: the server may be too old (TLS 1.2 is the least eingang takes)".to_owned()
    } else {
        return why.to_owned();
    };
    format!("{hint} ({why})")
}

/// The name the server's certificate must carry.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: not a valid host name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_say_what_to_change() {
        let unknown = plain_words(
            "invalid peer certificate: UnknownIssuer",
            "mail.example.com",
        );
        assert!(
            unknown.contains("give that certificate as ca_file"),
            "{unknown}"
        );
        assert!(
            unknown.ends_with("(invalid peer certificate: UnknownIssuer)"),
            "{unknown}"
        );
        let name = plain_words("invalid peer certificate: NotValidForName", "10.0.0.5");
        assert!(name.contains("not made out to 10.0.0.5"), "{name}");
        let plain = plain_words("received corrupt message of type InvalidContentType", "h");
        assert!(plain.contains("answered without TLS"), "{plain}");
        assert_eq!(plain_words("something else", "h"), "something else");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        assert!(client_config(None).is_ok());
    }
}
