//! A webhook receiver for the hand-off tests: hyper on a free loopback port (optionally TLS on
//! a leaf certificate of a test CA made with rcgen), in a thread of its own. It verifies each
//! request's Standard Webhooks signature over the raw body (401 when it does not hold), can be
//! told to fail the first attempts, answer a status, redirect, hang or break off its answer,
//! and applies each `webhook-id` once, answering a repeat with 200 "duplicate ignored", as a
//! receiver should (RECIPES.md §5). `verify_with_reference` checks every request again with
//! the PyPI `standardwebhooks` package, the reference implementation.

use std::convert::Infallible;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use sha2::Sha256;

/// A secret in the Standard Webhooks form (24 random-looking bytes), for the tests.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers once the failures asked for are used up.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200, each webhook-id applied once.
    Accept,
    /// This status, always.
    Status(u16),
    /// 302 to this URL.
    Redirect(String),
    /// No answer for this long, then 200.
    Hang(Duration),
    /// A 200 header promising a body that breaks off.
    CloseMidBody,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// Whether the signature held (the receiver's own check).
    pub verified: bool,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

struct State {
    mode: Mode,
    fail_first: usize,
    requests: Vec<Received>,
    applied: Vec<Received>,
}

/// A running receiver.
pub struct Receiver {
    pub port: u16,
    tls: Option<Certificates>,
    state: Arc<Mutex<State>>,
}

/// A test CA and a leaf for localhost and 127.0.0.1 signed by it.
pub struct Certificates {
    pub dir: tempfile::TempDir,
    cert_pem: String,
    key_pem: String,
}

impl Certificates {
    /// A new CA, written to `ca.pem` in a folder of its own.
    pub fn new() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "eingang webhook test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).expect("write ca");
        Certificates {
            dir,
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes the leaf's certificate and key as `leaf.pem` and `leaf-key.pem` beside the CA,
    /// for a server of eingang's own (the cXML receiver); returns both paths.
    pub fn write_leaf(&self) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.path().join("leaf.pem"),
            self.dir.path().join("leaf-key.pem"),
        );
        std::fs::write(&cert, &self.cert_pem).expect("write leaf certificate");
        std::fs::write(&key, &self.key_pem).expect("write leaf key");
        (cert, key)
    }
}

fn free_listener() -> TcpListener {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

impl Receiver {
    /// Plain HTTP on loopback.
    pub fn start(mode: Mode, fail_first: usize) -> Receiver {
        Receiver::start_with(mode, fail_first, None)
    }

    /// HTTPS with a certificate of `tls`'s CA.
    pub fn start_tls(mode: Mode, fail_first: usize, tls: Certificates) -> Receiver {
        Receiver::start_with(mode, fail_first, Some(tls))
    }

    fn start_with(mode: Mode, fail_first: usize, tls: Option<Certificates>) -> Receiver {
        let listener = free_listener();
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            mode,
            fail_first,
            requests: Vec::new(),
            applied: Vec::new(),
        }));
        let acceptor = tls.as_ref().map(|t| {
            use tokio_rustls::rustls::pki_types::pem::PemObject;
            use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let certs = vec![CertificateDer::from_pem_slice(t.cert_pem.as_bytes()).expect("cert")];
            let key = PrivateKeyDer::from_pem_slice(t.key_pem.as_bytes()).expect("key");
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("tls versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, acceptor) = (shared.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(answer(req, &state).await) }
                        });
                        let http = hyper::server::conn::http1::Builder::new();
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    let io = hyper_util::rt::TokioIo::new(tls);
                                    let _ = http.serve_connection(io, service).await;
                                }
                            }
                            None => {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http.serve_connection(io, service).await;
                            }
                        }
                    });
                }
            });
        });
        Receiver { port, tls, state }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/hook", self.port),
            None => format!("http://127.0.0.1:{}/hook", self.port),
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests applied (one per webhook-id), in order.
    pub fn applied(&self) -> Vec<Received> {
        self.state.lock().unwrap().applied.clone()
    }

    /// Answers from now on as `mode`.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Waits until `n` requests are applied, or the deadline passed.
    pub fn wait_applied(&self, n: usize, deadline: Duration) -> Vec<Received> {
        super::wait_until(deadline, || self.applied().len() >= n);
        self.applied()
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::from_u16(status).expect("a status");
    response
}

async fn answer(req: Request<hyper::body::Incoming>, state: &Mutex<State>) -> Response<Body> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return full(400, "no body"),
    };
    let verified = verify(SECRET, &id, &timestamp, &signature, &body);
    let received = Received {
        id: id.clone(),
        timestamp,
        signature,
        body,
        verified,
    };
    let mode = {
        let mut s = state.lock().unwrap();
        s.requests.push(received.clone());
        if !verified {
            return full(401, "bad signature");
        }
        if s.fail_first > 0 {
            s.fail_first -= 1;
            return full(503, "busy, try later");
        }
        s.mode.clone()
    };
    match mode {
        Mode::Accept => {
            let mut s = state.lock().unwrap();
            if s.applied.iter().any(|r| r.id == id) {
                full(200, "duplicate ignored")
            } else {
                s.applied.push(received);
                full(200, "applied")
            }
        }
        Mode::Status(code) => full(code, "refused on purpose"),
        Mode::Redirect(to) => {
            let mut response = full(302, "");
            response
                .headers_mut()
                .insert("location", to.parse().expect("a location"));
            response
        }
        Mode::Hang(d) => {
            tokio::time::sleep(d).await;
            full(200, "late")
        }
        Mode::CloseMidBody => {
            let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(b"applie"))),
                Err(std::io::Error::other("cut off")),
            ];
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(
                futures::stream::iter(chunks),
            )));
            response
                .headers_mut()
                .insert("content-length", "100".parse().expect("a length"));
            response
        }
    }
}

/// The receiver's own check: `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`, within five
/// minutes of now.
pub fn verify(secret: &str, id: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
    else {
        return false;
    };
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    if (now - ts).abs() > 300 {
        return false;
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    signature.split(' ').any(|s| s == expected)
}

/// Checks every request again with the PyPI `standardwebhooks` package (the reference
/// implementation); a missing package fails with the install hint.
pub fn verify_with_reference(secret: &str, requests: &[Received]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let list: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "headers": {"webhook-id": r.id, "webhook-timestamp": r.timestamp, "webhook-signature": r.signature},
                "body": STANDARD.encode(&r.body),
            })
        })
        .collect();
    let file = dir.path().join("requests.json");
    std::fs::write(&file, serde_json::to_vec(&list).expect("json")).expect("write requests");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/verify_webhooks.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .env("WEBHOOK_SECRET", secret)
        .output()
        .expect("run python3 (install Python 3)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("No module named 'standardwebhooks'") {
        panic!("the reference check needs standardwebhooks: pip install standardwebhooks==1.1.0");
    }
    assert!(out.status.success(), "standardwebhooks refused: {text}");
    assert!(
        text.contains(&format!("verified {}", requests.len())),
        "{text}"
    );
}
