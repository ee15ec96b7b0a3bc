//! A real SMTP server for the notice tests: aiosmtpd (from PyPI) on a free loopback port, with
//! STARTTLS on a leaf certificate signed by a test CA made here with rcgen. Every message the
//! server accepts lands in a folder as `<n>.eml` plus `<n>.json` (the envelope); the tests
//! read them from there. A missing aiosmtpd fails the test with the install hint.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `starttls` (default), `implicit` or `none`.
    pub tls: &'static str,
    /// AUTH login and password the server requires.
    pub login: Option<(&'static str, &'static str)>,
    /// Recipients containing this text are refused with 550.
    pub refuse: Option<&'static str>,
    /// AUTH XOAUTH2 and OAUTHBEARER only, each token checked at this introspection URL.
    pub oauth_introspect: Option<String>,
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub raw: Vec<u8>,
}

impl Received {
    /// The header section as text, unfolded lines kept as sent.
    pub fn head(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    /// The message parsed.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("a parsable message")
    }

    /// The decoded Subject.
    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    /// The decoded text body.
    pub fn body(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|b| b.into_owned())
            .unwrap_or_default()
    }

    /// The Message-ID without angle brackets.
    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_owned()
    }

    /// The raw value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head()
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }
}

/// A running aiosmtpd with its certificates and its folder of received messages.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    options: Options,
    child: Option<Child>,
}

fn check_aiosmtpd() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .map_err(|e| {
                format!(
                    "python3 cannot run ({e}); install Python 3, then: pip install aiosmtpd==1.4.6"
                )
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err("aiosmtpd is not installed: pip install aiosmtpd==1.4.6".to_owned())
        }
    });
    if let Err(hint) = result {
        panic!("{hint}");
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A CA and a leaf for `localhost` and `127.0.0.1` signed by it (rustls refuses a CA
/// certificate as the server's own); returns the paths of ca.pem, cert.pem, key.pem.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "eingang test CA");
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
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write ca");
    std::fs::write(&paths.1, leaf_cert.pem()).expect("write cert");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("write key");
    paths
}

impl SmtpServer {
    /// STARTTLS, no AUTH.
    pub fn start() -> SmtpServer {
        SmtpServer::start_with(Options::default())
    }

    /// A server with these options, ready to accept connections.
    pub fn start_with(options: Options) -> SmtpServer {
        check_aiosmtpd();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("mail")).expect("mail dir");
        certificates(dir.path());
        let mut server = SmtpServer {
            port: free_port(),
            dir,
            options,
            child: None,
        };
        server.restart();
        server
    }

    /// Kills the server (the port closes; messages received so far stay readable).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it listens (10 s at most).
    pub fn restart(&mut self) {
        self.stop();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let dir = self.dir.path();
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", &self.port.to_string()])
            .arg("--out")
            .arg(dir.join("mail"))
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .args([
                "--tls",
                if self.options.tls.is_empty() {
                    "starttls"
                } else {
                    self.options.tls
                },
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((user, password)) = self.options.login {
            cmd.args(["--user", user, "--password", password]);
        }
        if let Some(refuse) = self.options.refuse {
            cmd.args(["--refuse", refuse]);
        }
        if let Some(url) = &self.options.oauth_introspect {
            cmd.args(["--oauth-introspect", url]);
        }
        let mut child = cmd.spawn().expect("start python3 smtp_sink.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if ready.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().expect("sink output");
            panic!(
                "the SMTP sink did not start: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the SMTP sink does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// The OAuth2 authentications so far, one line each: `<mechanism> ok|refused <user>`.
    pub fn auth_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("mail/auth.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let folder = self.dir.path().join("mail");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&folder)
            .expect("mail folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|json| {
                let envelope: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&json).expect("read envelope"))
                        .expect("envelope json");
                Received {
                    mail_from: envelope["mail_from"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    rcpt_tos: envelope["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    raw: std::fs::read(json.with_extension("eml")).expect("read message"),
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived (or the deadline passed); returns them all.
    pub fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        super::wait_until(deadline, || self.received().len() >= n);
        self.received()
    }

    /// A `[notify]` section for this server (from eingang@example.com to it@example.com,
    /// trusting the test CA), with `extra` lines appended.
    pub fn notify_section(&self, extra: &str) -> String {
        let tls = if self.options.tls.is_empty() {
            "starttls"
        } else {
            self.options.tls
        };
        format!(
            "[notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"{tls}\"\nca_file = \"{}\"\n\
             from = \"eingang@example.com\"\nadmins = [\"it@example.com\"]\n{extra}",
            self.port,
            self.ca_file().display()
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
