//! The FTP/FTPS source end to end, through the built binary against a real vsftpd on loopback
//! (explicit and implicit FTPS with a test CA): moves on the server, settle across listings,
//! TLS verification, and the promises of DESIGN.md (nothing lost, nothing twice, transient is
//! not permanent, secrets stay secret).

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use support::ftp::{FtpServer, Options, PASSWORD};
use support::{Workspace, fixture, opentrans, stderr, stdout, stop, wait_until};

/// A workspace whose config has the drop folder of `Workspace` and the ftp source `edi`.
fn workspace(server: &FtpServer, extra: &str) -> Workspace {
    Workspace::new(&server.source("edi", extra))
}

/// `eingang run`, its log in `daemon.log` of the workspace.
fn daemon(ws: &Workspace) -> Child {
    let log = std::fs::File::create(ws.path("daemon.log")).expect("daemon log");
    ws.command(&["run"], &[])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn eingang run")
}

/// An openTRANS note padded with a comment to about `bytes`, so that transfers take time.
fn padded_note(number: &str, bytes: usize) -> Vec<u8> {
    let mut note = opentrans(number, "1");
    note.extend_from_slice(b"<!-- ");
    note.resize(bytes.max(note.len() + 10), b'x');
    note.extend_from_slice(b" -->\n");
    note
}

#[test]
fn a_mixed_batch_ends_in_the_right_folders_with_the_right_rows() {
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    ws.with_format("acme");
    server.put(
        "/archiv/ls-1.xml",
        b"an older delivery note, archived last week",
    );
    server.put("/in/ls-1.xml", &opentrans("LS-1", "12"));
    server.put(
        "/in/lieferschein-2026-11.csv",
        &fixture("acme/lieferschein-2026-11.csv"),
    );
    server.put(
        "/in/kaputt.xml",
        b"<DISPATCHNOTIFICATION><oops></DISPATCHNOTIFICATION>",
    );
    server.put("/in/bestand.csv", b"Artikel;Menge\r\nA-1;2\r\n");
    // Everything the source does is logged, down to suppaftp's protocol trace.
    let out = ws.run_env(&["sync", "--source", "edi"], &[("EINGANG_LOG", "trace")]);
    assert!(out.status.success(), "sync failed: {}", stderr(&out));
    assert!(
        server.files("in").is_empty(),
        "inbox not drained: {:?}",
        server.files("in")
    );
    // The name clash got a suffix; the old file is untouched.
    assert_eq!(
        server.files("archiv"),
        ["lieferschein-2026-11.csv", "ls-1-2.xml", "ls-1.xml"]
    );
    assert_eq!(
        std::fs::read(server.root().join("archiv/ls-1.xml")).unwrap(),
        b"an older delivery note, archived last week"
    );
    assert_eq!(
        server.files("fehler"),
        [
            "bestand.csv",
            "bestand.csv.error.txt",
            "kaputt.xml",
            "kaputt.xml.error.txt"
        ]
    );
    let note = std::fs::read_to_string(server.root().join("fehler/bestand.csv.error.txt")).unwrap();
    assert!(
        note.contains("no supplier format matches the file name bestand.csv"),
        "{note}"
    );
    assert!(note.contains(" reprocess "), "{note}");
    let docs = ws.exported();
    let standard: Vec<_> = docs.iter().filter(|d| d["number"] == "LS-1").collect();
    assert_eq!(standard.len(), 1);
    assert_eq!(standard[0]["lines"][0]["quantity"], "12");
    assert_eq!(standard[0]["origin"]["source"], "edi");
    assert_eq!(standard[0]["origin"]["file"], "ls-1.xml");
    assert_eq!(standard[0]["origin"]["archived"], "/archiv/ls-1-2.xml");
    let acme: Vec<_> = docs.iter().filter(|d| d["supplier"] == "acme").collect();
    assert!(!acme.is_empty(), "no acme documents: {docs:?}");
    assert!(acme.iter().all(|d| d["format"] == "table:acme"
        && d["origin"]["archived"] == "/archiv/lieferschein-2026-11.csv"));
    assert_eq!(docs.len(), 1 + acme.len());
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE source = 'edi' AND disposed_at IS NOT NULL"),
        4
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE source = 'edi' AND outcome = 'rejected'"),
        2
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 2);
    let status = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let edi = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "edi")
        .expect("edi in status");
    assert_eq!(edi["kind"], "ftp");
    assert_eq!(
        (edi["archived"].as_i64(), edi["failed"].as_i64()),
        (Some(2), Some(2))
    );
    // Secrets stay secret: not in the trace, not in the store.
    assert!(
        !stderr(&out).contains(PASSWORD),
        "the password is in the log"
    );
    assert!(
        stderr(&out).contains("Signin in with user 'eingang-ftp'"),
        "no suppaftp log: the check is void"
    );
    for file in ["eingang.db", "eingang.db-wal"] {
        let bytes = std::fs::read(ws.path(file)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "the password is in {file}"
        );
    }
}

#[test]
fn a_file_uploaded_slowly_is_not_taken_before_it_is_complete() {
    let server = FtpServer::start();
    let ws = workspace(&server, "schedule = \"every 1s\"\n");
    let mut daemon = daemon(&ws);
    let note = opentrans("LS-21", "21");
    // Twelve pieces 300 ms apart: the size changes more often than the 1 s settle time.
    let upload = std::thread::scope(|scope| {
        let uploading = scope
            .spawn(|| server.put_slowly("/in/langsam.xml", &note, 12, Duration::from_millis(300)));
        let mut taken_early = false;
        while !uploading.is_finished() {
            taken_early |= !server.files("archiv").is_empty() || !server.files("fehler").is_empty();
            std::thread::sleep(Duration::from_millis(50));
        }
        (uploading.join(), taken_early)
    });
    assert!(upload.0.is_ok(), "the upload failed");
    assert!(!upload.1, "taken while it was still being uploaded");
    let archived = wait_until(Duration::from_secs(15), || {
        server.files("archiv") == ["langsam.xml"]
    });
    stop(&mut daemon);
    assert!(
        archived,
        "not archived; fehler: {:?}, log: {}",
        server.files("fehler"),
        std::fs::read_to_string(ws.path("daemon.log")).unwrap_or_default()
    );
    let docs = ws.exported();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["lines"][0]["quantity"], "21");
    assert_eq!(
        docs[0]["origin"]["sha256"],
        eingang::item::ItemKey::of(&note).as_str()
    );
}

#[test]
fn the_server_restarted_during_a_pass_loses_nothing_and_imports_nothing_twice() {
    // 4 KB files at 40 KB/s: a batch of 16 takes over a second and a half to download.
    let mut server = FtpServer::start_with(Options {
        max_bytes_per_second: Some(40_000),
        ..Options::default()
    });
    let ws = workspace(&server, "schedule = \"every 1s\"\n");
    let (valid, broken) = (36, 4);
    for n in 0..valid {
        let path = server.root().join(format!("in/ls-{n:02}.xml"));
        std::fs::write(path, padded_note(&format!("LS-{n}"), 4000)).unwrap();
    }
    for n in 0..broken {
        let path = server.root().join(format!("in/kaputt-{n}.xml"));
        std::fs::write(path, format!("<DISPATCHNOTIFICATION>{n}")).unwrap();
    }
    let total = valid + broken;
    let mut daemon = daemon(&ws);
    // The first batch is moved; the next one is still downloading.
    assert!(
        wait_until(Duration::from_secs(30), || !server
            .files("archiv")
            .is_empty()),
        "nothing archived: {}",
        std::fs::read_to_string(ws.path("daemon.log")).unwrap_or_default()
    );
    server.restart();
    let left = server.files("in").len();
    assert!(left > 0, "the pass was over before the restart");
    let done = wait_until(Duration::from_secs(60), || {
        server.files("in").is_empty()
            && ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL") == 0
    });
    let alive = daemon.try_wait().unwrap().is_none();
    stop(&mut daemon);
    let log = std::fs::read_to_string(ws.path("daemon.log")).unwrap_or_default();
    assert!(
        done,
        "not all handled; inbox: {:?}; log: {log}",
        server.files("in")
    );
    assert!(alive, "the daemon died: {log}");
    assert!(
        log.contains("source failed"),
        "the restart went unnoticed: {log}"
    );
    // Nothing lost: every file in exactly one place, under its own name (no second move).
    let archived = server.files("archiv");
    assert_eq!(archived.len(), valid, "{archived:?}");
    assert!(
        archived
            .iter()
            .all(|n| n.starts_with("ls-") && n.len() == "ls-00.xml".len())
    );
    assert_eq!(server.files("fehler").len(), 2 * broken);
    // Nothing twice: one item per file, one document per note, one notice per failure.
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), total as i64);
    assert_eq!(
        ws.query_i64("SELECT COUNT(DISTINCT sha256) FROM items"),
        total as i64
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), valid as i64);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), broken as i64);
}

#[test]
fn the_same_note_by_ftp_and_by_the_drop_folder_is_stored_once() {
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    ws.drop_file("in", "ls-8.xml", &opentrans("LS-8", "5"));
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("archiv"), ["ls-8.xml"]);
    // The EDI provider sends the same note again, in new bytes.
    let mut resent = opentrans("LS-8", "5");
    resent.extend_from_slice(b"<!-- resent by the EDI provider -->\n");
    server.put("/in/LS-8-edi.xml", &resent);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.exported().len(), 1);
    assert_eq!(
        server.files("fehler"),
        ["LS-8-edi.xml", "LS-8-edi.xml.error.txt"]
    );
    let reason =
        std::fs::read_to_string(server.root().join("fehler/LS-8-edi.xml.error.txt")).unwrap();
    assert!(reason.contains("duplicate delivery note LS-8"), "{reason}");
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
}

#[test]
fn twins_in_one_batch_are_both_handled_by_one_sync() {
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    let note = opentrans("LS-9", "9");
    server.put("/in/ls-9.xml", &note);
    server.put("/in/ls-9-kopie.xml", &note);
    let out = ws.run(&["sync", "--source", "edi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.files("in").is_empty(), "{:?}", server.files("in"));
    assert_eq!(server.files("archiv").len(), 1);
    let failed = server.files("fehler");
    assert_eq!(failed.len(), 2, "{failed:?}");
    let reason = std::fs::read_to_string(server.root().join("fehler").join(&failed[1])).unwrap();
    assert!(reason.contains("already imported"), "{reason}");
    assert_eq!(ws.exported().len(), 1);
}

#[test]
fn explicit_ftps_with_a_wrong_ca_file_is_refused_before_login() {
    let server = FtpServer::start();
    let (other_ca, _) = support::ftp::test_ca("not the server's ca");
    let ws = Workspace::new("");
    std::fs::write(ws.path("other-ca.pem"), other_ca).unwrap();
    let config = server
        .source("edi", "")
        .replace(&server.ca_file().display().to_string(), "other-ca.pem");
    let text = std::fs::read_to_string(ws.path("eingang.toml")).unwrap() + &config;
    std::fs::write(ws.path("eingang.toml"), text).unwrap();
    server.put("/in/ls-1.xml", &opentrans("LS-1", "1"));
    let uploaded = server.log().len();
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("source edi: connect"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains("(explicit TLS): FAILED:") && line.contains("UnknownIssuer"),
        "{}",
        stdout(&out)
    );
    let out = ws.run(&["sync", "--source", "edi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: source edi: ") && stderr(&out).contains("UnknownIssuer"),
        "{}",
        stderr(&out)
    );
    // Transient is not permanent: the file stays, nothing is recorded.
    assert_eq!(server.files("in"), ["ls-1.xml"]);
    assert!(server.files("fehler").is_empty());
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 0);
    // The credentials never went out.
    let log = server.log().split_off(uploaded);
    assert!(log.contains("AUTH TLS"), "no protocol log: {log}");
    assert!(!log.contains("\"USER") && !log.contains("PASS"), "{log}");
}

#[test]
fn a_refused_login_leaves_the_files_and_names_the_user() {
    let server = FtpServer::start();
    let config = server
        .source("edi", "")
        .lines()
        .map(|l| match l.starts_with("password_file") {
            true => "password = \"wrong-password\"",
            false => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ws = Workspace::new(&config);
    server.put("/in/ls-1.xml", &opentrans("LS-1", "1"));
    let out = ws.run(&["sync", "--source", "edi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("login as eingang-ftp refused: 530"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("wrong-password"));
    assert_eq!(server.files("in"), ["ls-1.xml"]);
    let status = ws.run(&["status"]);
    assert!(
        stdout(&status).contains("edi: received 0, archived 0, failed 0, pending 0, last error: login as eingang-ftp refused"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn check_reports_each_folder_and_creates_missing_ones() {
    let server = FtpServer::start();
    let ws = Workspace::new(
        &server
            .source("edi", "")
            .replace("\"/archiv\"", "\"/neu/archiv\""),
    );
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    for line in [
        &format!(
            "source edi: connect 127.0.0.1:{} (explicit TLS): ok",
            server.port
        ),
        "source edi: login eingang-ftp: ok",
        "source edi: inbox folder /in: ok",
        "source edi: archive folder /neu/archiv: FAILED: missing (eingang check --create-folders creates it)",
        "source edi: error folder /fehler: ok",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    // A pass refuses to start without its folders rather than to fail on the first move.
    let out = ws.run(&["sync", "--source", "edi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("archive folder /neu/archiv does not exist on the server"),
        "{}",
        stderr(&out)
    );
    let out = ws.run(&["check", "--create-folders"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(server.root().join("neu/archiv").is_dir());
}

#[test]
fn reprocess_renames_a_failed_file_back_into_the_inbox() {
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    server.put("/in/kaputt.xml", b"<broken");
    assert!(ws.run(&["sync", "--source", "edi"]).status.success());
    assert_eq!(
        server.files("fehler"),
        ["kaputt.xml", "kaputt.xml.error.txt"]
    );
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    let out = ws.run(&["reprocess", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("item {id}: put back into /in/kaputt.xml")
    );
    assert_eq!(server.files("in"), ["kaputt.xml"]);
    assert!(
        server.files("fehler").is_empty(),
        "{:?}",
        server.files("fehler")
    );
    // The same bytes get a fresh try (and fail again, as nothing was fixed).
    assert!(ws.run(&["sync", "--source", "edi"]).status.success());
    assert_eq!(
        server.files("fehler"),
        ["kaputt.xml", "kaputt.xml.error.txt"]
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 2);
}

#[test]
fn implicit_ftps_on_its_own_port_works() {
    let server = FtpServer::start_with(Options {
        implicit: true,
        ..Options::default()
    });
    let ws = workspace(&server, "");
    server.put("/in/ls-3.xml", &opentrans("LS-3", "3"));
    let out = ws.run(&["sync", "--source", "edi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.files("archiv"), ["ls-3.xml"]);
    assert_eq!(ws.exported()[0]["number"], "LS-3");
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_commit_is_moved_not_imported_twice() {
    use std::os::unix::process::ExitStatusExt;
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    server.put("/in/ls-1.xml", &opentrans("LS-1", "1"));
    server.put("/in/bad.xml", b"<broken");
    let out = ws.run_env(
        &["sync", "--source", "edi"],
        &[("EINGANG_FAULT", "after_commit")],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    // Committed, not moved: both still on the server's inbox, outcomes stored.
    assert_eq!(server.files("in"), ["bad.xml", "ls-1.xml"]);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    let out = ws.run(&["sync", "--source", "edi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.files("archiv"), ["ls-1.xml"]);
    assert_eq!(server.files("fehler"), ["bad.xml", "bad.xml.error.txt"]);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_move_before_its_record_is_found_in_the_archive() {
    use std::os::unix::process::ExitStatusExt;
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    server.put("/archiv/ls-1.xml", b"another file of the same name");
    server.put("/in/ls-1.xml", &opentrans("LS-1", "1"));
    let out = ws.run_env(
        &["sync", "--source", "edi"],
        &[("EINGANG_FAULT", "after_move")],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    assert_eq!(server.files("archiv"), ["ls-1-2.xml", "ls-1.xml"]);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        1
    );
    let out = ws.run(&["sync", "--source", "edi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    // Found by its bytes, not by its name.
    assert_eq!(ws.exported()[0]["origin"]["archived"], "/archiv/ls-1-2.xml");
}

#[test]
fn a_move_the_server_refuses_costs_that_file_only_and_adds_no_row_or_notice() {
    use std::os::unix::fs::PermissionsExt;
    let server = FtpServer::start();
    let ws = workspace(&server, "");
    server.put("/in/kaputt.xml", b"<broken");
    server.put("/in/ls-1.xml", &opentrans("LS-M1", "1"));
    server.put("/in/ls-2.xml", &opentrans("LS-M2", "1"));
    // The FTP user may no longer write the error folder: the server refuses that rename.
    let error = server.root().join("fehler");
    let mode = |m| std::fs::set_permissions(&error, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o555);
    let first = ws.run(&["sync", "--source", "edi"]);
    let second = ws.run(&["sync", "--source", "edi"]);
    mode(0o755);
    let third = ws.run(&["sync", "--source", "edi"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("edi: imported 2, rejected 0"),
        "{}",
        stderr(&first)
    );
    assert!(stderr(&first).contains("/fehler"), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(server.files("archiv"), ["ls-1.xml", "ls-2.xml"]);
    assert_eq!(
        server.files("fehler"),
        ["kaputt.xml", "kaputt.xml.error.txt"]
    );
    assert!(server.files("in").is_empty());
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items"),
        3,
        "a second row for the same file"
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox"),
        1,
        "a second notice"
    );
}

#[test]
fn implicit_tls_on_the_explicit_port_is_told_in_an_admins_words() {
    let server = FtpServer::start();
    let source = server
        .source("edi", "")
        .replace("tls = \"explicit\"", "tls = \"implicit\"");
    let ws = Workspace::new(&source);
    let started = std::time::Instant::now();
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("the server answered without TLS"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
