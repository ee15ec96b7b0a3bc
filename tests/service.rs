//! From clone to service, as a new admin meets it: the config found from anywhere and said on
//! stderr, command lines that reach the same store from any folder, every config problem at
//! once, `check` catching bindings without a format and folders eingang cannot write, the
//! start-up line, SIGHUP reloading the formats, `backup` while the daemon runs, the example
//! config and the systemd unit as shipped.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{Workspace, opentrans, stderr, stdout, wait_until};

/// Runs the binary in `dir` with the environment given (no `--config`).
fn run_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_eingang"));
    cmd.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("EINGANG_CONFIG")
        .env_remove("EINGANG_LOG")
        .env_remove("EINGANG_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn the_config_is_found_from_anywhere_and_said_on_stderr() {
    let ws = Workspace::new("");
    let elsewhere = tempfile::tempdir().unwrap();
    let config = ws.path("eingang.toml");
    let config = config.to_str().unwrap();
    ws.drop_file("in", "ls.xml", &opentrans("LS-C1", "1"));
    // $EINGANG_CONFIG from another folder reaches the workspace's store.
    let out = run_in(elsewhere.path(), &["sync"], &[("EINGANG_CONFIG", config)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().next(),
        Some(format!("using config {config}").as_str())
    );
    assert_eq!(ws.files("archiv"), ["ls.xml"]);
    // ./eingang.toml: said with its full path.
    let here = run_in(ws.dir.path(), &["status"], &[]);
    assert!(
        stderr(&here).starts_with(&format!("using config {config}\n")),
        "{}",
        stderr(&here)
    );
    assert!(stdout(&here).contains("archived 1"), "{}", stdout(&here));
    // --config: nothing said.
    let flag = run_in(elsewhere.path(), &["status", "--config", config], &[]);
    assert!(!stderr(&flag).contains("using"), "{}", stderr(&flag));
    // parse says nothing either.
    let parse = run_in(ws.dir.path(), &["parse", "archiv/ls.xml"], &[]);
    assert!(parse.status.success());
    assert!(stderr(&parse).is_empty(), "{}", stderr(&parse));
    // Nothing anywhere: the embedded default, said with its folder; status makes no store.
    let nothing = run_in(elsewhere.path(), &["status"], &[]);
    assert!(nothing.status.success());
    assert!(
        stderr(&nothing).contains(&format!(
            "using the embedded default in {}",
            elsewhere.path().join("eingang-data").display()
        )),
        "{}",
        stderr(&nothing)
    );
    assert!(
        stderr(&nothing).contains("no store at"),
        "{}",
        stderr(&nothing)
    );
    assert!(!elsewhere.path().join("eingang-data/eingang.db").exists());
}

#[test]
fn the_reprocess_line_of_a_note_reaches_the_same_store_from_any_folder() {
    let ws = Workspace::new("");
    let config = ws.path("eingang.toml").display().to_string();
    ws.drop_file("in", "kaputt.xml", b"<broken");
    let out = run_in(ws.dir.path(), &["sync"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let note = std::fs::read_to_string(ws.path("fehler/kaputt.xml.error.txt")).unwrap();
    let line = note
        .lines()
        .find(|l| l.contains(" reprocess "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        line.starts_with(&format!("eingang --config {config} reprocess ")),
        "{line}"
    );
    // Run it as written, from elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let again = run_in(elsewhere.path(), &args, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(ws.files("in"), ["kaputt.xml"]);
}

#[test]
fn every_problem_of_a_config_is_reported_at_once() {
    let ws = Workspace::new(
        "[[source]]\nname = \"mail\"\nkind = \"imap\"\nhostt = \"x\"\nsettel = \"1s\"\n",
    );
    std::fs::write(ws.path("formats/kaputt.toml"), "name = [").unwrap();
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for needle in [
        "unknown key `source.1.hostt`",
        "unknown key `source.1.settel`",
        "kaputt.toml",
    ] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
    assert!(err.lines().all(|l| l.starts_with("error: ")), "{err}");
}

#[test]
fn a_source_bound_to_a_supplier_without_a_format_is_refused() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    std::fs::write(
        ws.path("eingang.toml"),
        config.replace("rescan = \"2s\"", "rescan = \"2s\"\nsupplier = \"acmee\""),
    )
    .unwrap();
    let check = ws.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("supplier \"acmee\" has no format file")
            && stdout(&check).contains("the formats are: acme"),
        "{}",
        stdout(&check)
    );
    let run = ws.run(&["run"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("supplier \"acmee\" has no format file"));
}

#[test]
fn check_says_when_eingang_cannot_write_a_folder() {
    let ws = Workspace::new("");
    let archive = ws.path("archiv");
    let lock = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&archive)
            .status()
            .expect("chattr (e2fsprogs) is needed: apt-get install -y e2fsprogs");
        assert!(
            ok.success(),
            "chattr {flag} failed: the test needs an ext4 /tmp"
        );
    };
    lock("+i");
    let out = ws.run(&["check"]);
    lock("-i");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("archive folder") && l.contains("FAILED: not writable by eingang")),
        "{}",
        stdout(&out)
    );
    assert!(ws.run(&["check"]).status.success());
}

#[test]
fn run_says_what_it_watches_in_one_start_up_line_and_sighup_reloads_the_formats() {
    let ws = Workspace::new("");
    let log = std::fs::File::create(ws.path("run.log")).unwrap();
    let mut daemon = ws
        .command(&["run"], &[])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let logged = |text: &str| {
        let text = text.to_owned();
        let path = ws.path("run.log");
        move || std::fs::read_to_string(&path).is_ok_and(|l| l.contains(&text))
    };
    assert!(wait_until(
        Duration::from_secs(10),
        logged("started: config ")
    ));
    let start = std::fs::read_to_string(ws.path("run.log")).unwrap();
    let line = start
        .lines()
        .find(|l| l.contains("started: config "))
        .unwrap();
    assert!(
        line.contains(&ws.path("eingang.toml").display().to_string())
            && line.contains("store ")
            && line.contains("sources: drop (dir, idle)"),
        "{line}"
    );
    // A new supplier: its file, then SIGHUP; no restart.
    ws.with_format("acme");
    let hup = |pid: u32| {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    };
    hup(daemon.id());
    assert!(
        wait_until(Duration::from_secs(10), logged("format acme added")),
        "{}",
        std::fs::read_to_string(ws.path("run.log")).unwrap()
    );
    ws.drop_file(
        "in",
        "lieferschein-2026-11.csv",
        &support::fixture("acme/lieferschein-2026-11.csv"),
    );
    assert!(wait_until(Duration::from_secs(15), || ws
        .files("archiv")
        .len()
        == 1));
    // A broken file: the old set stays, and the log says why.
    std::fs::write(ws.path("formats/kaputt.toml"), "name = [").unwrap();
    hup(daemon.id());
    assert!(wait_until(
        Duration::from_secs(10),
        logged("formats not taken; the old ones stay in use")
    ));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "SIGHUP stopped the daemon"
    );
    support::stop(&mut daemon);
}

#[test]
fn backup_while_the_daemon_runs_is_a_consistent_copy() {
    let ws = Workspace::sqlite("");
    for n in 1..=3 {
        ws.drop_file(
            "in",
            &format!("ls-{n}.xml"),
            &opentrans(&format!("LS-K{n}"), "1"),
        );
    }
    let mut daemon = ws
        .command(&["run"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(15), || ws
        .files("archiv")
        .len()
        == 3));
    let out = ws.run(&["backup", "kopie.db"]);
    support::stop(&mut daemon);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("3 documents, integrity ok"),
        "{}",
        stdout(&out)
    );
    let copy = rusqlite::Connection::open(ws.path("kopie.db")).unwrap();
    let docs: i64 = copy
        .query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(docs, 3);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ws.path("kopie.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let again = ws.run(&["backup", "kopie.db"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("exists already"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn the_example_config_loads_as_it_is_shipped() {
    // The example names system paths; here they move below a temporary root.
    let root = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/eingang.example.toml"))
            .unwrap();
    let moved = text
        .replace("/etc/eingang/", &format!("{}/etc/", root.path().display()))
        .replace(
            "/var/lib/eingang/",
            &format!("{}/var/", root.path().display()),
        )
        .replace("/srv/", &format!("{}/srv/", root.path().display()));
    for dir in ["etc", "var", "srv", "formats"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    let secret = |name: &str, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        let path = root.path().join("etc").join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    secret("edi.password", "geheim\n");
    // The admin password's hash, made as the README says.
    let mut hash = std::process::Command::new(env!("CARGO_BIN_EXE_eingang"));
    hash.arg("hash-password");
    let out = support::run_with_input(hash, b"admin-passwort\n");
    secret("admin.hash", &String::from_utf8_lossy(&out.stdout));
    let config = root.path().join("eingang.toml");
    std::fs::write(&config, moved).unwrap();
    let out = run_in(
        root.path(),
        &["status", "--config", config.to_str().unwrap()],
        &[
            ("EINGANG_IMAP_PASSWORD", "x"),
            ("EINGANG_SMTP_PASSWORD", "y"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for source in ["lieferscheine", "ablage", "edi"] {
        assert!(
            stdout(&out).contains(&format!("{source}: received 0")),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn the_systemd_unit_verifies_reloads_with_sighup_and_waits_longer_than_the_daemon() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/eingang.service"
    ))
    .unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit has no {key}="))
            .to_owned()
    };
    // The binary where the README's `cargo install --path . --root /usr/local` puts it, the
    // config where the README's install steps put it.
    assert_eq!(value("ExecStart"), "/usr/local/bin/eingang run");
    assert!(unit.contains("Environment=EINGANG_CONFIG=/etc/eingang/eingang.toml"));
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    // The daemon finishes the batch in hand for up to 60 s after SIGTERM: systemd must not
    // kill it sooner.
    let stop: u64 = value("TimeoutStopSec").parse().unwrap();
    assert!(stop > 60, "TimeoutStopSec={stop}");
    // systemd itself reads the unit, with ExecStart pointing at this build.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("eingang.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/eingang", env!("CARGO_BIN_EXE_eingang")),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}: apt-get install -y --no-install-recommends systemd")
        });
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
}
