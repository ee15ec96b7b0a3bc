//! A real DNS server for the sender-authenticity tests: a private dnsmasq on a free loopback
//! port, with no upstream (`--no-resolv --no-hosts`), answering every name itself (`--local=/#/`)
//! so that every name it was not given is NXDOMAIN and no query ever leaves the machine,
//! serving the TXT records a test binary needs (DKIM keys, DMARC policies). It runs in the foreground (`-k`) under a small `sh` watcher that kills it
//! when its stdin closes, which happens when the test binary exits, however it exits
//! (`PR_SET_PDEATHSIG` does not do here: dnsmasq changes its credentials at start, and that
//! clears the death signal). An owned one is also stopped on drop. Also here: a "server" that
//! takes every query and never answers.
#![allow(dead_code)] // each test uses a different part

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long dnsmasq may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a stop may take before the watcher is killed outright.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Runs `"$@"` (dnsmasq) in the background and kills it once stdin reaches its end; exits when
/// dnsmasq does, so an early exit (a port clash) is seen. The reader gets stdin as fd 3: an
/// asynchronous list in a non-interactive shell otherwise reads /dev/null.
const WATCHER: &str = r#"exec 3<&0
"$@" &
pid=$!
( read -r _ <&3; kill "$pid" 2>/dev/null ) &
wait "$pid""#;

/// A running dnsmasq.
pub struct Dnsmasq {
    dir: tempfile::TempDir,
    /// Its UDP and TCP port on 127.0.0.1.
    pub port: u16,
    forwards: Vec<(String, SocketAddr)>,
    /// The watcher shell, and the write end of its stdin (closing it stops dnsmasq).
    child: Mutex<Option<(Child, ChildStdin)>>,
}

fn dnsmasq_binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/dnsmasq",
        "/usr/local/sbin/dnsmasq",
        "/usr/bin/dnsmasq",
    ] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "dnsmasq not found: install it with `apt-get install -y --no-install-recommends dnsmasq-base` (.ci/run does)"
    );
}

/// A port free for both TCP and UDP on 127.0.0.1 (dnsmasq binds both).
fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a tcp port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both tcp and udp");
}

/// A TXT record as dnsmasq takes it on its command line: `name,part,part`, each part at most
/// 255 bytes (one DNS character-string; resolvers join them, RFC 6376 §3.6.2.2). Quotes are
/// taken literally there (only a config file unquotes), so a text must not hold a comma.
fn txt_option(name: &str, text: &str) -> String {
    assert!(
        !text.contains(','),
        "a dnsmasq txt-record argument cannot hold a comma: {text}"
    );
    let parts: Vec<&str> = text
        .as_bytes()
        .chunks(255)
        .map(|chunk| std::str::from_utf8(chunk).expect("ASCII record text"))
        .collect();
    format!("--txt-record={name},{}", parts.join(","))
}

/// Starts dnsmasq under its watcher on `port`, logging into `dir`.
fn spawn(
    dir: &Path,
    port: u16,
    records: &[(String, String)],
    forwards: &[(String, SocketAddr)],
) -> (Child, ChildStdin) {
    let binary = dnsmasq_binary();
    let mut command = Command::new("sh");
    command
        .args(["-c", WATCHER, "dnsmasq-watcher"])
        .arg(binary)
        .arg("-k")
        .arg("--conf-file=/dev/null")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg(format!("--port={port}"))
        .arg("--listen-address=127.0.0.1")
        .arg("--bind-interfaces")
        .arg("--local=/#/")
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .arg(format!(
            "--log-facility={}",
            dir.join("dnsmasq.log").display()
        ))
        .arg("--log-queries")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root, dnsmasq would drop to `nobody`, who cannot write the private log.
        command.arg("--user=root");
    }
    for (name, text) in records {
        command.arg(txt_option(name, text));
    }
    for (domain, server) in forwards {
        command.arg(format!(
            "--server=/{domain}/{}#{}",
            server.ip(),
            server.port()
        ));
    }
    command.stdin(Stdio::piped());
    let mut child = command.spawn().expect("start dnsmasq under sh");
    let stdin = child.stdin.take().expect("the watcher's stdin is piped");
    (child, stdin)
}

impl Dnsmasq {
    /// Starts a dnsmasq serving `records` (name, TXT text); every other name under `example`
    /// is NXDOMAIN.
    pub fn start(records: &[(String, String)]) -> Dnsmasq {
        Dnsmasq::start_forwarding(records, &[])
    }

    /// The same, but queries for names under each `(domain, server)` go to that server (e.g.
    /// a [`Silent`] one, to make one domain's DNS slow).
    pub fn start_forwarding(
        records: &[(String, String)],
        forwards: &[(&str, SocketAddr)],
    ) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let forwards: Vec<(String, SocketAddr)> = forwards
            .iter()
            .map(|(d, a)| ((*d).to_owned(), *a))
            .collect();
        let child = spawn(dir.path(), port, records, &forwards);
        let server = Dnsmasq {
            dir,
            port,
            forwards,
            child: Mutex::new(Some(child)),
        };
        server.wait_until_listening();
        server
    }

    /// Starts it again on the same port (after `stop`, or stopping it first), now serving
    /// `records`: DNS that comes back, or whose records changed (a DKIM key removed).
    pub fn restart_with(&self, records: &[(String, String)]) {
        self.stop();
        let child = spawn(self.dir.path(), self.port, records, &self.forwards);
        *self.child.lock().unwrap() = Some(child);
        self.wait_until_listening();
    }

    fn wait_until_listening(&self) {
        let end = Instant::now() + START_DEADLINE;
        while Instant::now() < end {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some((child, _)) = self.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("dnsmasq exited at start ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "dnsmasq did not listen within {START_DEADLINE:?}: {}",
            self.log()
        );
    }

    /// Where it listens, as `[dns] server` takes it.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its query log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// Stops it and waits until it has exited: the port then answers nothing.
    pub fn stop(&self) {
        let Some((mut child, stdin)) = self.child.lock().unwrap().take() else {
            return;
        };
        drop(stdin); // the watcher kills dnsmasq, then `wait` returns and the shell exits
        let end = Instant::now() + STOP_DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("dnsmasq did not stop within {STOP_DEADLINE:?}");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A "DNS server" that takes every query, over UDP and TCP, and never answers: what a resolver
/// behind a dead link looks like.
pub struct Silent {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Silent {
    /// Binds a free port for both; nothing is ever read or accepted.
    pub fn start() -> Silent {
        for _ in 0..50 {
            let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a tcp port");
            let port = tcp.local_addr().expect("local addr").port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                return Silent { udp, tcp };
            }
        }
        panic!("no port free for both tcp and udp");
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.tcp.local_addr().expect("local addr")
    }
}

/// A DNS server that answers every UDP query with one response code (SERVFAIL = 2,
/// REFUSED = 5) and nothing else: a resolver whose upstream is broken.
pub struct Failing {
    addr: SocketAddr,
}

impl Failing {
    /// Starts it on a free port; its thread ends with the test binary.
    pub fn start(rcode: u8) -> Failing {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a udp port");
        let addr = udp.local_addr().expect("local addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = udp.recv_from(&mut buf) {
                if let Some(reply) = failure_reply(buf.get(..n).unwrap_or_default(), rcode) {
                    let _ = udp.send_to(&reply, peer);
                }
            }
        });
        Failing { addr }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The query's header and question with QR, RA and the response code set and no records
/// (RFC 1035 §4.1); `None` for a datagram that is no query.
fn failure_reply(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let mut end = 12;
    loop {
        let len = usize::from(*query.get(end)?);
        end += 1;
        if len == 0 {
            break;
        }
        end += len;
    }
    end += 4; // QTYPE, QCLASS
    let mut reply = query.get(..end)?.to_vec();
    reply[2] = 0x80 | (reply[2] & 0x01); // QR, keep RD
    reply[3] = 0x80 | (rcode & 0x0f); // RA, RCODE
    reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question, no records
    Some(reply)
}
