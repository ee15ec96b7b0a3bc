//! A private PostgreSQL server for the tests of a shared store: `initdb` and `postgres` from
//! Debian's packages in a temp folder, on a free loopback port, run as `nobody` when the tests
//! run as root (initdb refuses root). One server per test binary (`shared`), or one of a test's
//! own (`start`) when the test stops and restarts it; a fresh database per test either way. A
//! missing server fails the test with the install command; it never skips.
//!
//! `EINGANG_TEST_STORE=postgres` runs the store's tests on it (`store_url`): the unit tests of
//! `src/store` (which include this file) and every workspace of the integration tests.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "PostgreSQL not found: install it with `apt-get install -y --no-install-recommends postgresql-15` (.ci/run does)";
/// initdb and a first start take about a second here; a loaded CI machine gets ample room.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// One running server and its data folder.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    child: Mutex<Option<Child>>,
}

/// The folder of the PostgreSQL binaries: the newest version installed.
fn binaries() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("{INSTALL_HINT}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The uid and gid the server runs as: `nobody` when we are root, else ourselves.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |args: &[&str]| -> u32 {
        let out = Command::new("id").args(args).output().expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    Some((id(&["-u", "nobody"]), id(&["-g", "nobody"])))
}

fn as_server_user(command: &mut Command) {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid);
    }
}

/// Spawns `command` from a thread that lives as long as the test binary: the parent-death
/// signal fires when the spawning *thread* ends, and a test's own thread ends with the test.
fn spawn_from_a_lasting_thread(mut command: Command) -> Child {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .expect("the spawning thread answers")
        .expect("start postgres")
}

/// Servers left running when a test binary ends are stopped and their folders removed.
static RUNNING: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

extern "C" fn stop_all() {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|p| p.into_inner()));
    for (pid, dir) in running {
        // SAFETY: kill(2) on a server this binary started. SIGQUIT: immediate shutdown.
        unsafe {
            libc::kill(pid as i32, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Postgres {
    /// The server of this test binary, started on first use.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// A server of the caller's own, stopped when it is dropped.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// A server of the caller's own that also speaks TLS with this certificate and key (PEM).
    pub fn start_with_tls(cert: &str, key: &str) -> Postgres {
        Postgres::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Postgres {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("eingang-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if let Some((uid, gid)) = server_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the server folder");
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut initdb);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some((cert, key)) = tls {
            let data = dir.join("data");
            for (name, pem) in [("server.crt", cert), ("server.key", key)] {
                let path = data.join(name);
                std::fs::write(&path, pem).expect("write the server's TLS files");
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .expect("chmod");
                if let Some((uid, gid)) = server_user() {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown");
                }
            }
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .expect("postgresql.conf");
            std::io::Write::write_all(&mut conf, b"ssl = on\n").expect("turn ssl on");
        }
        let server = Postgres {
            dir,
            bin,
            port: free_port(),
            child: Mutex::new(None),
        };
        server.run();
        static HOOK: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function without captured state.
        HOOK.call_once(|| unsafe {
            libc::atexit(stop_all);
        });
        server
    }

    /// Starts the server process on its port and waits until it answers.
    fn run(&self) {
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        as_server_user(&mut command);
        // SAFETY: prctl in the forked child before exec (after its uid changed, which would
        // clear the signal); async-signal-safe. The server dies with the test binary.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let child = spawn_from_a_lasting_thread(command);
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((child.id(), self.dir.clone()));
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while self.sql("postgres", "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not answer within {START_DEADLINE:?}: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: every session ends) and waits until it is gone.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid. SIGINT: fast shutdown.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let _ = child.wait();
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(pid, _)| *pid != child.id());
    }

    /// Starts it again after `stop`, on the same port with the same data.
    pub fn resume(&self) {
        self.run();
    }

    /// The URL of database `name` for eingang's `[store] url`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database, by its URL.
    pub fn fresh_database(&self, test: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name: String = format!(
            "t_{}_{}_{}",
            test.chars()
                .map(|c| if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                })
                .take(30)
                .collect::<String>(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // One at a time: PostgreSQL refuses to copy its template while another copy of it runs.
        static CREATING: Mutex<()> = Mutex::new(());
        let _one = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        self.sql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.url(&name)
    }

    /// Runs SQL statements in `database`, returning their rows as text.
    pub fn sql(&self, database: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        query(&self.url(database), sql)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which store the tests run on: `None` for SQLite (the default), or the URL of a fresh
/// database of this binary's server with `EINGANG_TEST_STORE=postgres`.
pub fn store_url(test: &str) -> Option<String> {
    match std::env::var("EINGANG_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => None,
        Ok("postgres") => Some(Postgres::shared().fresh_database(test)),
        Ok(other) => panic!("EINGANG_TEST_STORE={other}: give sqlite or postgres"),
    }
}

/// Runs SQL statements (the simple query protocol) against `url`, returning their rows
/// as text, as a second client would see them.
pub fn query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    // On a thread of its own: a test on a tokio runtime cannot block on another one.
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || query_here(&url, &sql))
        .join()
        .expect("the query thread ends")
}

fn query_here(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
        let driver = tokio::spawn(connection);
        let messages = tokio::time::timeout(Duration::from_secs(60), client.simple_query(sql))
            .await
            .map_err(|_| "query timed out".to_owned())?
            .map_err(|e| match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            })?;
        drop(client);
        let _ = driver.await;
        let mut rows = Vec::new();
        for message in messages {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
        }
        Ok(rows)
    })
}
