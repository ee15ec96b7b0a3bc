//! Shared helpers for the integration tests: a temporary workspace with a config, the built
//! binary, sample documents, and polling with deadlines.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod dns;
pub mod ftp;
pub mod postgres;
pub mod smtp;
pub mod webhook;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The DNS server of this test binary for the tests that are not about sender authenticity:
/// a dnsmasq on loopback that publishes nothing, so every sender check finds no DMARC policy
/// (`none`) at once, and no test asks the machine's resolver.
pub fn quiet_dns() -> &'static dns::Dnsmasq {
    static DNS: OnceLock<dns::Dnsmasq> = OnceLock::new();
    DNS.get_or_init(|| dns::Dnsmasq::start(&[]))
}

/// `[dns] server` for `quiet_dns`, a table of its own to put after the top-level keys.
pub fn dns_section() -> String {
    format!("[dns]\nserver = \"{}\"\n", quiet_dns().addr())
}

/// A temporary folder with `eingang.toml`, a drop folder and a store: a SQLite file in the
/// folder, or with `EINGANG_TEST_STORE=postgres` a fresh PostgreSQL database (`store_url`).
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL store's URL, when the tests run on PostgreSQL.
    pub store_url: Option<String>,
}

impl Workspace {
    /// An empty workspace for a test that writes its own config, with `store_section` in it.
    pub fn bare() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
            store_url: postgres::store_url("workspace"),
        }
    }

    /// The config's `[store]` table: the SQLite file `eingang.db`, or the PostgreSQL URL.
    pub fn store_section(&self) -> String {
        match &self.store_url {
            Some(url) => format!("[store]\nurl = \"{url}\"\n"),
            None => "[store]\npath = \"eingang.db\"\n".to_owned(),
        }
    }

    /// A workspace whose config has one dir source `drop` (settle 1 s) and `extra` appended;
    /// its sender checks ask `quiet_dns` unless `extra` has a `[dns]` of its own.
    pub fn new(extra: &str) -> Workspace {
        Workspace::with_store(Workspace::bare(), extra)
    }

    /// `new` on a SQLite store whatever `EINGANG_TEST_STORE` says: for what only a store file
    /// has (a copy of the file restored, SQLite's online backup).
    pub fn sqlite(extra: &str) -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
            store_url: None,
        };
        Workspace::with_store(ws, extra)
    }

    /// `new` on a fresh database of the harness's PostgreSQL whatever `EINGANG_TEST_STORE`
    /// says: for what only a shared store has.
    pub fn postgres(test: &str, extra: &str) -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
            store_url: Some(postgres::Postgres::shared().fresh_database(test)),
        };
        Workspace::with_store(ws, extra)
    }

    fn with_store(ws: Workspace, extra: &str) -> Workspace {
        let dns = if extra.contains("[dns]") {
            String::new()
        } else {
            dns_section()
        };
        let config = format!(
            "formats = \"formats\"\n{}{dns}\
             [[source]]\nname = \"drop\"\nkind = \"dir\"\npath = \"in\"\narchive = \"archiv\"\nerror = \"fehler\"\nsettle = \"1s\"\nrescan = \"2s\"\n{extra}",
            ws.store_section()
        );
        std::fs::write(ws.path("eingang.toml"), config).expect("write config");
        for d in ["in", "archiv", "fehler", "formats"] {
            std::fs::create_dir_all(ws.path(d)).expect("mkdir");
        }
        ws
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `eingang <args>` in the workspace with its config.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args, &[]).output().expect("run eingang")
    }

    /// Runs `eingang <args>` with `input` on its stdin (`hash-password`).
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        run_with_input(self.command(args, &[]), input)
    }

    /// The argon2id hash of a password, made by `eingang hash-password` from stdin.
    pub fn hash_of(&self, password: &str) -> String {
        let out = self.run_with_input(&["hash-password"], format!("{password}\n").as_bytes());
        assert!(out.status.success(), "{}", stderr(&out));
        let hash = stdout(&out).trim().to_owned();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        hash
    }

    /// The same, with extra environment variables (e.g. a fault point).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run eingang")
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eingang"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .env_remove("EINGANG_FAULT")
            .env_remove("EINGANG_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `eingang <args>` (a daemon) with its stderr in the workspace file `log` (a
    /// pipe nobody reads would stall it).
    pub fn spawn_logged(&self, args: &[&str], log: &str) -> Child {
        let log = std::fs::File::create(self.path(log)).expect("create the log");
        self.command(args, &[])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn eingang")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn eingang")
    }

    /// Writes a file into a folder of the workspace and backdates nothing: the settle time
    /// applies as for a real drop.
    pub fn drop_file(&self, folder: &str, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(folder).join(name);
        std::fs::write(&path, bytes).expect("write drop file");
        path
    }

    /// File names in a folder, sorted.
    pub fn files(&self, folder: &str) -> Vec<String> {
        files_in(&self.path(folder))
    }

    /// `export --jsonl` parsed.
    pub fn exported(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["export", "--jsonl"]);
        assert!(out.status.success(), "export failed: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("jsonl line"))
            .collect()
    }

    /// Copies a supplier format of the repository into the workspace's formats folder.
    pub fn with_format(&self, supplier: &str) {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("formats/{supplier}.toml"));
        std::fs::copy(src, self.path(&format!("formats/{supplier}.toml"))).expect("copy format");
    }

    /// One number from the store, read as a second process would.
    pub fn query_i64(&self, sql: &str) -> i64 {
        self.query_text(sql)
            .expect("a value")
            .parse()
            .expect("a number")
    }

    /// The first value of a query on the store (SQL both databases read alike), as text;
    /// `None` for NULL. Panics when the store cannot be read.
    pub fn query_text(&self, sql: &str) -> Option<String> {
        self.try_query_text(sql).expect("query the store")
    }

    /// `query_text`, or why the store could not be read (not made yet, say).
    pub fn try_query_text(&self, sql: &str) -> Result<Option<String>, String> {
        Ok(self.try_query_column(sql)?.into_iter().next().flatten())
    }

    /// The first column of every row of a query on the store, as text (`None` for NULL).
    pub fn query_column(&self, sql: &str) -> Vec<Option<String>> {
        self.try_query_column(sql).expect("query the store")
    }

    fn try_query_column(&self, sql: &str) -> Result<Vec<Option<String>>, String> {
        if let Some(url) = &self.store_url {
            let rows = postgres::query(url, sql)?;
            return Ok(rows
                .into_iter()
                .map(|r| r.into_iter().next().flatten())
                .collect());
        }
        let conn =
            rusqlite::Connection::open(self.path("eingang.db")).map_err(|e| e.to_string())?;
        let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| {
                r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                    rusqlite::types::Value::Null => None,
                    rusqlite::types::Value::Integer(n) => Some(n.to_string()),
                    rusqlite::types::Value::Real(x) => Some(x.to_string()),
                    rusqlite::types::Value::Text(t) => Some(t),
                    rusqlite::types::Value::Blob(b) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                })
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }

    /// Everything the store holds, as bytes to search for a secret: the SQLite file and its
    /// write-ahead log, or every row of every table of the PostgreSQL database as text.
    pub fn store_bytes(&self) -> Vec<u8> {
        let Some(url) = &self.store_url else {
            let mut bytes = Vec::new();
            for file in ["eingang.db", "eingang.db-wal"] {
                bytes.extend(std::fs::read(self.path(file)).unwrap_or_default());
            }
            return bytes;
        };
        let tables = postgres::query(
            url,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .expect("the tables");
        let mut bytes = Vec::new();
        for table in tables
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
        {
            for row in
                postgres::query(url, &format!("SELECT t::text FROM {table} t")).expect("the rows")
            {
                for cell in row.into_iter().flatten() {
                    bytes.extend(cell.into_bytes());
                }
            }
        }
        bytes
    }

    /// Who holds the store's lock, as `<pid> <role>`: the lock file beside a SQLite store,
    /// the application name of the lock's session on PostgreSQL. `None` while nobody does
    /// (or the store cannot be read yet).
    pub fn store_holder(&self) -> Option<String> {
        let Some(url) = &self.store_url else {
            return std::fs::read_to_string(self.path("eingang.db.lock"))
                .ok()
                .map(|t| t.trim().to_owned());
        };
        let rows = postgres::query(
            url,
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objid = 2 AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .ok()?;
        // `eingang <pid> <role> <host>`
        let name = rows.first()?.first()?.clone()?;
        let words: Vec<&str> = name.split_whitespace().collect();
        match words.as_slice() {
            ["eingang", pid, role, ..] => Some(format!("{pid} {role}")),
            _ => None,
        }
    }
}

/// File names in a folder, sorted (none when it is missing).
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A sample file of the repository's `fixtures/` folder.
pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(rel),
    )
    .expect("read fixture")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 50 ms until it holds or the deadline passes.
pub fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Stops `eingang run` with SIGTERM; fails the test if it does not stop within 10 s.
pub fn stop(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    for _ in 0..200 {
        if let Some(status) = child.try_wait().expect("wait for eingang") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill eingang");
    panic!("eingang run did not stop within 10 s of SIGTERM");
}

/// Daemons a test runs, stopped however the test ends: each is woken (SIGCONT, should the
/// test have frozen it), then `stop_quietly`.
pub struct Daemons(pub Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: kill(2) with a pid we spawned.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
            }
            stop_quietly(child);
        }
    }
}

/// Stops a daemon a test left running (a `Drop`): SIGTERM, up to 10 s, then SIGKILL. Never
/// panics, so a failing test's own message is the one shown.
pub fn stop_quietly(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A minimal openTRANS 2.1 DISPATCHNOTIFICATION with one line, written for these tests.
pub fn opentrans(number: &str, quantity: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DISPATCHNOTIFICATION xmlns="http://www.opentrans.org/XMLSchema/2.1" xmlns:bmecat="http://www.bmecat.org/bmecat/2005" version="2.1">
  <DISPATCHNOTIFICATION_HEADER>
    <DISPATCHNOTIFICATION_INFO>
      <DISPATCHNOTIFICATION_ID>{number}</DISPATCHNOTIFICATION_ID>
      <DISPATCHNOTIFICATION_DATE>2026-11-20</DISPATCHNOTIFICATION_DATE>
    </DISPATCHNOTIFICATION_INFO>
  </DISPATCHNOTIFICATION_HEADER>
  <DISPATCHNOTIFICATION_ITEM_LIST>
    <DISPATCHNOTIFICATION_ITEM>
      <LINE_ITEM_ID>1</LINE_ITEM_ID>
      <PRODUCT_ID><bmecat:SUPPLIER_PID>A-100</bmecat:SUPPLIER_PID></PRODUCT_ID>
      <QUANTITY>{quantity}</QUANTITY>
      <bmecat:ORDER_UNIT>C62</bmecat:ORDER_UNIT>
      <ORDER_REFERENCE><ORDER_ID>PO-1001</ORDER_ID><LINE_ITEM_ID>3</LINE_ITEM_ID></ORDER_REFERENCE>
    </DISPATCHNOTIFICATION_ITEM>
  </DISPATCHNOTIFICATION_ITEM_LIST>
</DISPATCHNOTIFICATION>
"#
    )
    .into_bytes()
}

/// A message from `from` carrying one attachment.
pub fn message(
    from: &str,
    message_id: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "From: Lieferant <{from}>\r\nTo: lager@example.com\r\nSubject: Lieferschein {name}\r\n\
         Message-ID: <{message_id}>\r\nDate: Fri, 20 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n--b0\r\nContent-Type: text/plain\r\n\r\n\
         Anbei der Lieferschein.\r\n--b0\r\nContent-Type: {content_type}\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n--b0--\r\n");
    out
}

/// Runs `cmd` with `input` on its stdin; its output.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run eingang");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("run eingang")
}
