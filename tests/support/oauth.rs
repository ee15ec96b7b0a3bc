//! The OAuth2 test harness: the identity provider of `oauth_idp.py` (one per test binary; each
//! test registers a client of its own), a Dovecot whose oauth2 passdb asks that provider about
//! every bearer token (RFC 7662 introspection; plain LOGIN still works for seeding), and a TCP
//! proxy that can end every session it carries with an untagged BYE, as Exchange Online does
//! when an access token expires. A missing python3 or dovecot fails with an install hint.
#![allow(dead_code)] // each test uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use crate::dovecot::{self, Caps, Dovecot};

/// The running identity provider.
pub struct Idp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Mutex<Child>,
}

impl Idp {
    /// The provider shared by the tests of this binary.
    pub fn shared() -> &'static Idp {
        static IDP: OnceLock<Idp> = OnceLock::new();
        IDP.get_or_init(Idp::start)
    }

    fn start() -> Idp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oauth_idp.py");
        if Command::new("python3").arg("--version").output().is_err() {
            panic!("python3 is not installed: apt-get install -y python3 (.ci/run does)");
        }
        let mut command = Command::new("python3");
        command
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = dovecot::spawn(command);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let port = ready
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the test identity provider did not start: {ready:?}"));
        Idp {
            port,
            child: Mutex::new(child),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Registers a client with these settings (see `oauth_idp.py`); returns its handle.
    pub fn client(&'static self, id: &str, settings: Value) -> IdpClient {
        let mut body = settings;
        body["client_id"] = json!(id);
        post_json(self.port, "/admin/client", &body);
        IdpClient {
            idp: self,
            id: id.to_owned(),
            settings: body,
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// One registered client of the identity provider.
pub struct IdpClient {
    pub idp: &'static Idp,
    pub id: String,
    settings: Value,
}

impl IdpClient {
    /// Changes some of its settings (the others stay).
    pub fn set(&mut self, changes: Value) {
        for (k, v) in changes.as_object().expect("an object") {
            self.settings[k] = v.clone();
        }
        post_json(self.idp.port, "/admin/client", &self.settings);
    }

    /// Its counters and every token issued to it.
    pub fn stats(&self) -> Value {
        get_json(
            self.idp.port,
            &format!("/admin/stats?client_id={}", self.id),
        )
    }

    /// A counter.
    pub fn count(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }

    /// A refresh token for `user`, as a first sign-in would give.
    pub fn seed(&self, user: &str, scope: &str) -> String {
        post_json(
            self.idp.port,
            "/admin/seed",
            &json!({"client_id": self.id, "user": user, "scope": scope}),
        )["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_owned()
    }

    /// Revokes every refresh token of the client.
    pub fn revoke(&self) {
        post_json(
            self.idp.port,
            "/admin/revoke",
            &json!({"client_id": self.id}),
        );
    }

    /// Makes every access token of the client inactive (as if expired).
    pub fn expire_access_tokens(&self) {
        post_json(
            self.idp.port,
            "/admin/expire",
            &json!({"client_id": self.id}),
        );
    }

    /// Every access and refresh token issued to the client so far.
    pub fn issued(&self) -> Vec<String> {
        let stats = self.stats();
        ["access_tokens", "refresh_tokens"]
            .iter()
            .flat_map(|k| stats[*k].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The newest refresh token issued.
    pub fn newest_refresh_token(&self) -> Option<String> {
        self.stats()["refresh_tokens"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    }
}

/// The person at the browser: approves (or declines) a user code at the provider.
pub fn activate(idp: &Idp, user_code: &str, user: &str, approve: bool) {
    let decision = if approve { "approve" } else { "deny" };
    post_json(
        idp.port,
        "/activate",
        &json!({"user_code": user_code, "user": user, "decision": decision}),
    );
}

fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the IdP");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body).expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

pub fn post_json(port: u16, path: &str, body: &Value) -> Value {
    let (status, answer) = request(port, "POST", path, body.to_string().as_bytes());
    assert_eq!(
        status,
        200,
        "POST {path}: {}",
        String::from_utf8_lossy(&answer)
    );
    serde_json::from_slice(&answer).expect("JSON answer")
}

pub fn get_json(port: u16, path: &str) -> Value {
    let (status, answer) = request(port, "GET", path, b"");
    assert_eq!(status, 200, "GET {path}");
    serde_json::from_slice(&answer).expect("JSON answer")
}

/// A Dovecot whose XOAUTH2 and OAUTHBEARER logins are checked at `idp`'s introspection
/// endpoint (RECIPES.md §1); plain LOGIN with `dovecot::PASSWORD` stays for seeding.
pub fn oauth_dovecot(idp: &Idp) -> Dovecot {
    let introspect = idp.url("/introspect");
    Dovecot::start_with(Caps::Full, move |dir| {
        let ext = dir.join("dovecot-oauth2.conf.ext");
        std::fs::write(
            &ext,
            format!(
                "introspection_mode = post\nintrospection_url = {introspect}\nforce_introspection = yes\n\
                 username_attribute = username\nactive_attribute = active\nactive_value = true\n\
                 timeout_msecs = 5000\n"
            ),
        )
        .expect("oauth2 passdb settings");
        format!(
            "auth_mechanisms = plain login xoauth2 oauthbearer\n\
             passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n\
             passdb {{\n  driver = static\n  mechanisms = plain login\n  args = password={}\n}}\n",
            ext.display(),
            dovecot::PASSWORD
        )
    })
}

/// The Dovecot with an oauth2 passdb shared by the tests of this binary, asking the shared
/// identity provider.
pub fn shared_oauth_dovecot() -> &'static Dovecot {
    static DOVECOT: OnceLock<Dovecot> = OnceLock::new();
    DOVECOT.get_or_init(|| oauth_dovecot(Idp::shared()))
}

/// One connection of the proxy: the client side's writer, shared by the forwarding thread and
/// `bye_all`, so that an injected BYE lands between the server's chunks.
struct Carried {
    to_client: Arc<Mutex<TcpStream>>,
    to_server: TcpStream,
}

/// A plaintext TCP proxy in front of an IMAP server that can end every session it carries
/// with an untagged BYE of the test's wording.
pub struct ByeProxy {
    /// The port to give eingang.
    pub port: u16,
    carried: Arc<Mutex<Vec<Carried>>>,
    accepted: Arc<AtomicUsize>,
}

impl ByeProxy {
    /// Forwards every connection to `target` on 127.0.0.1.
    pub fn start(target: u16) -> ByeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let carried: Arc<Mutex<Vec<Carried>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (list, count) = (carried.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let to_client = Arc::new(Mutex::new(client.try_clone().expect("clone")));
                list.lock().unwrap().push(Carried {
                    to_client: to_client.clone(),
                    to_server: server.try_clone().expect("clone"),
                });
                let (mut from_client, mut to_server) = (client, server.try_clone().expect("clone"));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from_client.read(&mut buf) {
                        if n == 0 || to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Both);
                });
                let mut from_server = server;
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from_server.read(&mut buf) {
                        if n == 0 || to_client.lock().unwrap().write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.lock().unwrap().shutdown(std::net::Shutdown::Both);
                });
            }
        });
        ByeProxy {
            port,
            carried,
            accepted,
        }
    }

    /// Connections made so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Sends `* BYE <text>` to the client of every connection so far and closes them.
    pub fn bye_all(&self, text: &str) {
        for c in self.carried.lock().unwrap().drain(..) {
            let mut to_client = c.to_client.lock().unwrap();
            let _ = to_client.write_all(format!("* BYE {text}\r\n").as_bytes());
            let _ = to_client.shutdown(std::net::Shutdown::Both);
            let _ = c.to_server.shutdown(std::net::Shutdown::Both);
        }
    }
}
