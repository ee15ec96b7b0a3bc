//! A real Dovecot for the IMAP tests, started by the harness: its own config, base_dir and
//! temporary maildirs, free loopback ports, and a test CA with a leaf certificate for
//! `localhost`/`127.0.0.1` (the CA is what eingang gets as `ca_file`). Any user logs in with
//! `PASSWORD`, so each test makes its own mailbox by picking a new user name. Also here: a
//! small IMAP client for seeding and inspecting mailboxes, a recording TCP proxy and a fake
//! server that refuses STARTTLS.
#![allow(dead_code)] // each test uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::TryStreamExt;

/// The password every test user logs in with; tests look for it in logs and the store.
pub const PASSWORD: &str = "S3cr3t-\"pa\\ss\"-4711";

/// Which capabilities the server announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caps {
    /// Dovecot's own: IDLE, MOVE, UIDPLUS, ...
    Full,
    /// No MOVE: eingang must use COPY + STORE + UID EXPUNGE.
    WithoutMove,
    /// Neither MOVE nor UIDPLUS: eingang must not expunge at all.
    WithoutMoveAndUidplus,
    /// No IDLE: eingang must poll.
    WithoutIdle,
}

/// A running Dovecot.
pub struct Dovecot {
    dir: tempfile::TempDir,
    /// Implicit TLS port.
    pub imaps_port: u16,
    /// Plain / STARTTLS port.
    pub imap_port: u16,
    child: Mutex<Option<Child>>,
}

/// A command to start, and where to send the started child.
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Spawns servers from one long-lived thread: they get `PR_SET_PDEATHSIG`, which fires when
/// the spawning thread ends, so they die with the test binary and not with the first test.
pub fn spawn(mut command: Command) -> Child {
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl in the forked child before exec; async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        Ok(())
                    });
                }
                let _ = reply.send(command.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    command.stdin(Stdio::null());
    spawner
        .lock()
        .unwrap()
        .send((command, reply))
        .expect("spawner thread alive");
    answer
        .recv()
        .expect("spawner answers")
        .expect("start dovecot")
}

fn dovecot_binary() -> PathBuf {
    for candidate in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "dovecot not found: install it with `apt-get install -y --no-install-recommends dovecot-imapd` (.ci/run does)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A test CA and a leaf certificate for `localhost` and `127.0.0.1` signed by it, as PEM:
/// (ca, leaf, leaf key).
pub fn certificates() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "eingang test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("ca key")).expect("ca");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&leaf_key, &ca).expect("leaf");
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

static CA_PEM: OnceLock<(String, String, String)> = OnceLock::new();

/// The certificates every Dovecot of this test binary uses.
pub fn shared_certificates() -> &'static (String, String, String) {
    CA_PEM.get_or_init(certificates)
}

impl Dovecot {
    /// The Dovecot with its own capabilities, shared by the tests of this binary.
    pub fn shared() -> &'static Dovecot {
        static FULL: OnceLock<Dovecot> = OnceLock::new();
        FULL.get_or_init(|| Dovecot::start(Caps::Full))
    }

    /// A shared Dovecot that announces no MOVE.
    pub fn shared_without_move() -> &'static Dovecot {
        static NO_MOVE: OnceLock<Dovecot> = OnceLock::new();
        NO_MOVE.get_or_init(|| Dovecot::start(Caps::WithoutMove))
    }

    /// A shared Dovecot that announces neither MOVE nor UIDPLUS.
    pub fn shared_without_uidplus() -> &'static Dovecot {
        static NO_UIDPLUS: OnceLock<Dovecot> = OnceLock::new();
        NO_UIDPLUS.get_or_init(|| Dovecot::start(Caps::WithoutMoveAndUidplus))
    }

    /// A Dovecot of one's own (to stop and restart it).
    pub fn start(caps: Caps) -> Dovecot {
        Dovecot::start_with(caps, |_| {
            format!(
                "auth_mechanisms = plain login\npassdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n"
            )
        })
    }

    /// A Dovecot whose authentication settings (`auth_mechanisms` and the passdbs) are what
    /// `auth` writes, given the instance's folder (for files of its own, e.g. an oauth2
    /// passdb's settings).
    pub fn start_with(caps: Caps, auth: impl FnOnce(&Path) -> String) -> Dovecot {
        dovecot_binary(); // fails with the install hint when missing
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path();
        // Dovecot's mail processes run as `nobody`: they must reach the homes.
        std::fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(base.join(sub)).expect("mkdir");
        }
        let chown = Command::new("chown")
            .args(["nobody:nogroup"])
            .arg(base.join("home"))
            .status()
            .expect("chown");
        assert!(chown.success(), "chown nobody home");
        let (_, leaf, key) = shared_certificates();
        std::fs::write(base.join("cert.pem"), leaf).expect("cert");
        std::fs::write(base.join("key.pem"), key).expect("key");
        let (imap_port, imaps_port) = (free_port(), free_port());
        let capability = match caps {
            Caps::Full => String::new(),
            Caps::WithoutMove => "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS\n".to_owned(),
            Caps::WithoutMoveAndUidplus => "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+\n".to_owned(),
            Caps::WithoutIdle => "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ UIDPLUS MOVE\n".to_owned(),
        };
        let auth = auth(base);
        let d = base.display();
        let config = format!(
            "protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
{auth}userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = .
  prefix = INBOX.
}}
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = 100
{capability}service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"
        );
        std::fs::write(base.join("dovecot.conf"), config).expect("config");
        let dovecot = Dovecot {
            dir,
            imaps_port,
            imap_port,
            child: Mutex::new(None),
        };
        dovecot.run();
        dovecot
    }

    fn run(&self) {
        let mut command = Command::new(dovecot_binary());
        command
            .arg("-F")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn(command);
        *self.child.lock().unwrap() = Some(child);
        let ready = crate::support::wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", self.imaps_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.imap_port)).is_ok()
        });
        assert!(ready, "dovecot did not start: {}", self.log());
    }

    /// Stops the server (SIGTERM to the master, which ends every session) and waits for it.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
        let gone = crate::support::wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.imap_port)).is_err()
        });
        assert!(gone, "dovecot did not stop");
    }

    /// Starts it again on the same ports and mail.
    pub fn restart(&self) {
        self.run();
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Runs `doveadm` against this instance, e.g. to change a folder's UIDVALIDITY.
    pub fn doveadm(&self, args: &[&str]) {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .args(args)
            .output()
            .expect("run doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client for one user's mailbox.
    pub fn client(&self, user: &str) -> Client {
        Client {
            port: self.imap_port,
            user: user.to_owned(),
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

/// A user name no other test of this run uses.
pub fn new_user(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A small IMAP client (plaintext on loopback) to seed and inspect a mailbox, one
/// connection per call.
pub struct Client {
    port: u16,
    user: String,
}

type TestSession = async_imap::Session<tokio::net::TcpStream>;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await })
        .expect("test IMAP client timed out")
}

impl Client {
    async fn session(&self) -> Result<TestSession, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| e.to_string())?;
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.map_err(|e| e.to_string())?;
        client
            .login(&self.user, PASSWORD)
            .await
            .map_err(|(e, _)| e.to_string())
    }

    /// Creates a folder (server name).
    pub fn create(&self, folder: &str) {
        block_on(async {
            let mut s = self.session().await.expect("login");
            s.create(folder).await.expect("create");
            s.logout().await.ok();
        })
    }

    /// Deletes a folder (server name) with its messages.
    pub fn delete(&self, folder: &str) {
        block_on(async {
            let mut s = self.session().await.expect("login");
            s.delete(folder).await.expect("delete");
            s.logout().await.ok();
        })
    }

    /// Appends a message with optional flags, e.g. `(\Deleted)`.
    pub fn append(&self, folder: &str, message: &[u8], flags: Option<&str>) {
        block_on(async {
            let mut s = self.session().await.expect("login");
            s.append(folder, flags, None, message)
                .await
                .expect("append");
            s.logout().await.ok();
        })
    }

    /// Appends many messages over one connection.
    pub fn append_all(&self, folder: &str, messages: &[Vec<u8>]) {
        block_on(async {
            let mut s = self.session().await.expect("login");
            for m in messages {
                s.append(folder, None, None, m).await.expect("append");
            }
            s.logout().await.ok();
        })
    }

    /// UIDs matching `criteria` in a folder; `None` when the server cannot be reached or the
    /// folder is missing.
    pub fn try_search(&self, folder: &str, criteria: &str) -> Option<Vec<u32>> {
        block_on(async {
            let mut s = self.session().await.ok()?;
            s.select(folder).await.ok()?;
            let mut uids: Vec<u32> = s.uid_search(criteria).await.ok()?.into_iter().collect();
            uids.sort_unstable();
            s.logout().await.ok();
            Some(uids)
        })
    }

    /// UIDs matching `criteria`.
    pub fn search(&self, folder: &str, criteria: &str) -> Vec<u32> {
        self.try_search(folder, criteria)
            .unwrap_or_else(|| panic!("search {criteria} in {folder} failed"))
    }

    /// How many messages a folder holds.
    pub fn count(&self, folder: &str) -> usize {
        self.search(folder, "ALL").len()
    }

    /// The raw messages of a folder with their flags, by UID.
    pub fn messages(&self, folder: &str) -> Vec<(u32, Vec<u8>, Vec<String>)> {
        block_on(async {
            let mut s = self.session().await.expect("login");
            s.select(folder).await.expect("select");
            let fetches: Vec<_> = s
                .uid_fetch("1:*", "(UID FLAGS BODY.PEEK[])")
                .await
                .expect("fetch")
                .try_collect()
                .await
                .expect("fetch stream");
            let mut out: Vec<(u32, Vec<u8>, Vec<String>)> = fetches
                .iter()
                .filter_map(|f| {
                    Some((
                        f.uid?,
                        f.body()?.to_vec(),
                        f.flags().map(|fl| format!("{fl:?}")).collect(),
                    ))
                })
                .collect();
            out.sort_by_key(|m| m.0);
            s.logout().await.ok();
            out
        })
    }
}

/// A TCP proxy on loopback that records what the client sends, and can turn the connections
/// it has into black holes (a NAT that dropped the flow: bytes vanish, nothing is closed).
pub struct Proxy {
    /// The port to give eingang.
    pub port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    /// Connections numbered below this forward nothing any more.
    dead_below: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    /// When the client sends this, it is still forwarded, then its connection freezes.
    trigger: Arc<Mutex<Option<String>>>,
}

impl Proxy {
    /// Forwards every connection to `target` on 127.0.0.1.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let dead_below = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let trigger: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (record, dead, count) = (sent.clone(), dead_below.clone(), accepted.clone());
        let armed = trigger.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let number = count.fetch_add(1, Ordering::SeqCst);
                let (dead_up, dead_down) = (dead.clone(), dead.clone());
                let armed = armed.clone();
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_read, mut c_write) = (server, client);
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if number < dead_up.load(Ordering::SeqCst) {
                            continue; // swallowed
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        let mut armed = armed.lock().unwrap();
                        if armed
                            .as_deref()
                            .is_some_and(|p| String::from_utf8_lossy(&buf[..n]).contains(p))
                        {
                            *armed = None;
                            dead_up.fetch_max(number + 1, Ordering::SeqCst);
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = s_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if number < dead_down.load(Ordering::SeqCst) {
                            continue;
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            port,
            sent,
            dead_below,
            accepted,
            trigger,
        }
    }

    /// The next time the client sends `pattern`, it reaches the server, and then that
    /// connection (and every older one) freezes: the server's answer is lost.
    pub fn freeze_after(&self, pattern: &str) {
        *self.trigger.lock().unwrap() = Some(pattern.to_owned());
    }

    /// Whether `freeze_after` has fired.
    pub fn frozen(&self) -> bool {
        self.trigger.lock().unwrap().is_none()
    }

    /// Every connection made so far stops forwarding in both directions, without closing;
    /// new connections work.
    pub fn black_hole_current(&self) {
        self.dead_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// The command lines the client sent, in order.
    pub fn commands(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.sent.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A fake IMAP server that offers STARTTLS and answers it NO, and refuses LOGIN in plaintext
/// (LOGINDISABLED), recording what it is sent.
pub struct StartTlsRefuser {
    /// The port to give eingang.
    pub port: u16,
    received: Arc<Mutex<String>>,
}

impl StartTlsRefuser {
    /// Listens on a free loopback port.
    pub fn start() -> StartTlsRefuser {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(String::new()));
        let record = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = stream.write_all(
                    b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] fake ready\r\n",
                );
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    record.lock().unwrap().push_str(&line);
                    let tag = line.split_whitespace().next().unwrap_or("*").to_owned();
                    let answer = if line.to_ascii_uppercase().contains("STARTTLS") {
                        format!("{tag} NO [ALERT] TLS is not available today\r\n")
                    } else if line.to_ascii_uppercase().contains("CAPABILITY") {
                        format!(
                            "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{tag} OK done\r\n"
                        )
                    } else {
                        format!("{tag} OK whatever you say\r\n")
                    };
                    let _ = stream.write_all(answer.as_bytes());
                    line.clear();
                }
            }
        });
        StartTlsRefuser { port, received }
    }

    /// Everything the client sent.
    pub fn received(&self) -> String {
        self.received.lock().unwrap().clone()
    }
}

/// Waits until `check` holds (polling every 100 ms) or the deadline passes; returns how long
/// it took.
pub fn time_until(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
