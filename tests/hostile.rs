//! Hostile files, names and neighbours in a drop folder (DESIGN.md promise 7, nothing outside
//! its folders): links and FIFOs swapped in between listing and reading, names no file-system
//! call likes, planted notes, folders swapped for links, control characters, modes of what
//! eingang writes. Real file systems, the built binary; the uploader is the test (root) or,
//! where it matters, the unprivileged `nobody`.

mod support;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Workspace, opentrans, stderr, stdout, wait_until};

/// A file outside every folder of eingang, readable by root only, that looks like a delivery
/// note: if it is ever read, it shows up as document SECRET-1.
fn secret(ws: &Workspace) -> PathBuf {
    let path = ws.path("secret.xml");
    std::fs::write(&path, opentrans("SECRET-1", "1")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
}

fn numbers(ws: &Workspace) -> Vec<String> {
    ws.exported()
        .iter()
        .map(|d| d["number"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Raw names in a folder.
fn raw_names(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

/// `eingang sync` that pauses between listing and reading each file.
fn sync_pausing_before_read(ws: &Workspace, ms: u64) -> std::process::Child {
    let pause = format!("wait:before_read:{ms}");
    ws.command(&["sync"], &[("EINGANG_FAULT", pause.as_str())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut std::process::Child, deadline: Duration) -> Option<i32> {
    let mut code = None;
    wait_until(deadline, || match child.try_wait() {
        Ok(Some(status)) => {
            code = status.code();
            true
        }
        _ => false,
    });
    if code.is_none() {
        let _ = child.kill();
    }
    code
}

#[cfg(feature = "fault-points")]
#[test]
fn a_symlink_swapped_in_between_listing_and_reading_is_never_read() {
    let ws = Workspace::new("");
    let secret = secret(&ws);
    let file = ws.drop_file("in", "ls.xml", &opentrans("LS-1", "1"));
    // Quiet for longer than the settle time, so the first listing takes it.
    std::thread::sleep(Duration::from_millis(1200));
    let mut sync = sync_pausing_before_read(&ws, 1500);
    std::thread::sleep(Duration::from_millis(700));
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&secret, &file).unwrap();
    let code = wait_exit(&mut sync, Duration::from_secs(20));
    assert_eq!(code, Some(0), "sync: {code:?}");
    assert!(
        numbers(&ws).is_empty(),
        "the secret was read: {:?}",
        numbers(&ws)
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 0);
    assert!(
        std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was moved away"
    );
    assert!(ws.files("archiv").is_empty() && ws.files("fehler").is_empty());
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'stray'"),
        1,
        "the link is told once"
    );
    let status = stdout(&ws.run(&["status"]));
    assert!(
        status.contains("drop: left alone in the inbox: ls.xml (a symbolic link"),
        "{status}"
    );
}

#[cfg(feature = "fault-points")]
#[test]
fn a_fifo_swapped_in_never_blocks_the_source() {
    let ws = Workspace::new("");
    let file = ws.drop_file("in", "ls.xml", &opentrans("LS-1", "1"));
    ws.drop_file("in", "ls-2.xml", &opentrans("LS-2", "1"));
    std::thread::sleep(Duration::from_millis(1200));
    let mut sync = sync_pausing_before_read(&ws, 1500);
    std::thread::sleep(Duration::from_millis(700));
    std::fs::remove_file(&file).unwrap();
    mkfifo(&file);
    let code = wait_exit(&mut sync, Duration::from_secs(20));
    assert_eq!(code, Some(0), "sync blocked or failed: {code:?}");
    assert_eq!(numbers(&ws), ["LS-2"]);
    let status = stdout(&ws.run(&["status"]));
    assert!(status.contains("last error: none"), "{status}");
    assert!(
        status.contains("left alone in the inbox: ls.xml (not a regular file"),
        "{status}"
    );
    // Again, and in the daemon: the FIFO never blocks a pass.
    let again = ws.run(&["sync"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'stray'"),
        1
    );
}

#[test]
fn swap_races_looped_never_read_a_link_or_block_on_a_fifo() {
    // An uploader keeps swapping names between real files, links to a root-only file and
    // FIFOs while the daemon works; seeded, so a failure can be repeated.
    let seed: u64 = std::env::var("EINGANG_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let ws = Workspace::new("");
    std::fs::write(
        ws.path("eingang.toml"),
        std::fs::read_to_string(ws.path("eingang.toml"))
            .unwrap()
            .replace("settle = \"1s\"", "settle = \"200ms\"")
            .replace("rescan = \"2s\"", "rescan = \"300ms\""),
    )
    .unwrap();
    let secret = secret(&ws);
    let mut daemon = ws
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut rng = seed;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let rounds = 150;
    for i in 0..rounds {
        let name = ws.path(&format!("in/race-{}.xml", i % 7));
        let tmp = ws.path(&format!("in/.race-{i}.tmp"));
        match next() % 3 {
            0 => {
                std::fs::write(&tmp, opentrans(&format!("RACE-{i}"), "1")).unwrap();
                let _ = std::fs::rename(&tmp, &name);
            }
            1 => {
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&secret, &tmp).unwrap();
                let _ = std::fs::rename(&tmp, &name);
            }
            _ => {
                let _ = std::fs::remove_file(&tmp);
                mkfifo(&tmp);
                let _ = std::fs::rename(&tmp, &name);
            }
        }
        std::thread::sleep(Duration::from_millis(next() % 40));
    }
    // Take away the links and FIFOs; what real files are left, the daemon drains. (A file the
    // uploader replaced after eingang read it is not moved under that outcome: its row is
    // recorded once the name is free.)
    for n in 0..7 {
        let name = ws.path(&format!("in/race-{n}.xml"));
        if std::fs::symlink_metadata(&name).is_ok_and(|m| !m.file_type().is_file()) {
            let _ = std::fs::remove_file(&name);
        }
    }
    let settled = wait_until(Duration::from_secs(30), || {
        ws.files("in").iter().all(|f| f.starts_with('.'))
            && ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL") == 0
    });
    let alive = daemon.try_wait().unwrap().is_none();
    support::stop(&mut daemon);
    assert!(alive, "the daemon died (seed {seed})");
    assert!(
        settled,
        "not drained: inbox {:?}, {} items unplaced (seed {seed})",
        ws.files("in"),
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL")
    );
    assert!(
        !numbers(&ws).iter().any(|n| n == "SECRET-1"),
        "a link was followed (seed {seed})"
    );
    for folder in ["archiv", "fehler"] {
        for entry in std::fs::read_dir(ws.path(folder)).unwrap() {
            let kind = entry.unwrap().file_type().unwrap();
            assert!(kind.is_file(), "{folder} holds a {kind:?} (seed {seed})");
        }
    }
    let archived = ws.files("archiv").len() as i64;
    assert_eq!(
        ws.query_i64(
            "SELECT COUNT(*) FROM items WHERE outcome = 'imported' AND archived LIKE '%/archiv/%'"
        ),
        archived,
        "archived files and their rows differ (seed {seed})"
    );
}

#[test]
fn a_file_name_of_invalid_utf8_is_moved_once_with_one_ledger_row() {
    let ws = Workspace::new("");
    let good = b"lieferung-\xe9t\xe9.xml";
    let bad = b"kaputt-\xff\xfe.xml";
    std::fs::write(
        ws.path("in").join(std::ffi::OsStr::from_bytes(good)),
        opentrans("LS-U1", "2"),
    )
    .unwrap();
    std::fs::write(
        ws.path("in").join(std::ffi::OsStr::from_bytes(bad)),
        b"<DISPATCHNOTIFICATION><broken",
    )
    .unwrap();
    for _ in 0..3 {
        let out = ws.run(&["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(ws.files("in").is_empty(), "{:?}", ws.files("in"));
    assert_eq!(raw_names(&ws.path("archiv")), [good.to_vec()]);
    let mut note = bad.to_vec();
    note.extend_from_slice(b".error.txt");
    assert_eq!(raw_names(&ws.path("fehler")), [bad.to_vec(), note.clone()]);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
    let text = std::fs::read_to_string(ws.path("fehler").join(std::ffi::OsStr::from_bytes(&note)))
        .unwrap();
    assert!(text.starts_with("kaputt-\\xff\\xfe.xml: "), "{text}");
    assert_eq!(numbers(&ws), ["LS-U1"]);
}

#[test]
fn a_254_byte_name_arriving_twice_gets_a_shortened_name_that_keeps_its_extension() {
    let ws = Workspace::new("");
    let name = format!("{}.xml", "a".repeat(250));
    for (round, number) in ["LS-L1", "LS-L2"].iter().enumerate() {
        ws.drop_file("in", &name, &opentrans(number, "1"));
        // A broken file of the same long name for the error folder, where the note needs
        // room too.
        let broken = format!("{}.xml", "b".repeat(250));
        ws.drop_file("in", &broken, format!("<broken {round}").as_bytes());
        let out = ws.run(&["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(ws.files("in").is_empty(), "{:?}", ws.files("in"));
    let archived = ws.files("archiv");
    assert_eq!(archived.len(), 2, "{archived:?}");
    for file in ws.files("archiv").iter().chain(&ws.files("fehler")) {
        assert!(file.len() <= 255, "{} bytes", file.len());
        assert!(
            file.ends_with(".xml") || file.ends_with(".xml.error.txt"),
            "{file}"
        );
    }
    assert_eq!(ws.files("fehler").len(), 4, "{:?}", ws.files("fehler"));
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 4);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 2);
}

#[test]
fn a_dangling_link_planted_as_a_note_creates_nothing_where_it_points() {
    let ws = Workspace::new("");
    let target = ws.path("planted-target");
    std::os::unix::fs::symlink(&target, ws.path("fehler/x.xml.error.txt")).unwrap();
    ws.drop_file("in", "x.xml", b"<broken");
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !target.exists(),
        "a file was created where the planted link points"
    );
    assert_eq!(
        ws.files("fehler"),
        ["x-2.xml", "x-2.xml.error.txt", "x.xml.error.txt"]
    );
    assert!(
        std::fs::symlink_metadata(ws.path("fehler/x.xml.error.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn an_error_folder_replaced_by_a_link_is_not_followed() {
    let ws = Workspace::new("");
    let elsewhere = ws.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir(ws.path("fehler")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, ws.path("fehler")).unwrap();
    ws.drop_file("in", "x.xml", b"<broken");
    let out = ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fehler: is a symbolic link; eingang never follows links"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ws.files("in"), ["x.xml"]);
    assert!(support::files_in(&elsewhere).is_empty());
    let check = ws.run(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stdout(&check).contains("error folder") && stdout(&check).contains("symbolic link"),
        "{}",
        stdout(&check)
    );
}

#[test]
fn links_fifos_folders_and_hard_links_in_the_inbox_are_told_once_and_left_alone() {
    let ws = Workspace::new("");
    let secret = secret(&ws);
    std::os::unix::fs::symlink(&secret, ws.path("in/link.xml")).unwrap();
    mkfifo(&ws.path("in/pipe.xml"));
    std::fs::create_dir(ws.path("in/unterordner")).unwrap();
    std::fs::hard_link(&secret, ws.path("in/hardlink.xml")).unwrap();
    ws.drop_file("in", "ok.xml", &opentrans("LS-OK", "1"));
    for _ in 0..2 {
        let out = ws.run(&["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(numbers(&ws), ["LS-OK"]);
    assert_eq!(
        ws.files("in"),
        ["hardlink.xml", "link.xml", "pipe.xml", "unterordner"]
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'stray'"),
        4
    );
    let status = stdout(&ws.run(&["status"]));
    for (name, why) in [
        ("hardlink.xml", "hard links"),
        ("link.xml", "symbolic link"),
        ("pipe.xml", "not a regular file"),
        ("unterordner", "a folder"),
    ] {
        assert!(
            status.lines().any(
                |l| l.contains(&format!("left alone in the inbox: {name} (")) && l.contains(why)
            ),
            "{name}: {status}"
        );
    }
    // Gone, then back: told again.
    std::fs::remove_file(ws.path("in/link.xml")).unwrap();
    assert!(ws.run(&["sync"]).status.success());
    std::os::unix::fs::symlink(&secret, ws.path("in/link.xml")).unwrap();
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'stray'"),
        5
    );
}

#[test]
fn control_characters_in_names_never_reach_the_log_note_or_status_raw() {
    let ws = Workspace::new("");
    let name = "ls\n2026-12-01T00:00:00Z  INFO forged line\u{1b}[2J.xml";
    ws.drop_file("in", name, b"<broken");
    let sender = message_with_sender("\u{1b}]0;pwned\u{7}evil@example.org");
    ws.drop_file("in", "mail.eml", &sender);
    let out = ws.run_env(&["sync"], &[("EINGANG_LOG", "debug")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(!log.contains('\u{1b}'), "raw ESC in the log");
    assert!(
        !log.contains("\nforged") && !log.contains("\n2026-12-01T00:00:00Z  INFO forged"),
        "{log}"
    );
    assert!(
        log.contains("\\x0a2026-12-01T00:00:00Z  INFO forged line\\x1b[2J.xml"),
        "{log}"
    );
    let notes: Vec<String> = ws
        .files("fehler")
        .into_iter()
        .filter(|f| f.ends_with(".error.txt"))
        .map(|f| std::fs::read_to_string(ws.path("fehler").join(f)).unwrap())
        .collect();
    assert_eq!(notes.len(), 2, "{:?}", ws.files("fehler"));
    for note in &notes {
        assert!(
            !note.chars().any(|c| c.is_control() && c != '\n'),
            "a control character in the note: {note:?}"
        );
        assert_eq!(note.lines().count(), 4, "{note:?}");
    }
    let status = stdout(&ws.run(&["status"]));
    assert!(!status.contains('\u{1b}'), "{status:?}");
    let items = ws.run(&["export", "--jsonl"]);
    assert!(items.status.success());
}

/// A dropped message from `from` with a broken attachment.
fn message_with_sender(from: &str) -> Vec<u8> {
    support::message(
        from,
        "m-1@example.org",
        "x.xml",
        "application/xml",
        b"<broken",
    )
}

#[test]
fn the_store_and_the_notes_are_not_world_readable() {
    let ws = Workspace::new("");
    ws.drop_file("in", "x.xml", b"<broken");
    ws.drop_file("in", "ok.xml", &opentrans("LS-M", "1"));
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    // A PostgreSQL store has no file here: its rights are the database's.
    if ws.store_url.is_none() {
        assert_eq!(mode(ws.path("eingang.db")), 0o600, "store");
        for side in ["eingang.db-wal", "eingang.db-shm"] {
            if ws.path(side).exists() {
                assert_eq!(mode(ws.path(side)) & 0o077, 0, "{side}");
            }
        }
    }
    assert_eq!(mode(ws.path("fehler/x.xml.error.txt")) & 0o027, 0, "note");
}

#[test]
fn settle_times_under_a_second_are_accepted() {
    let ws = Workspace::new("");
    std::fs::write(
        ws.path("eingang.toml"),
        std::fs::read_to_string(ws.path("eingang.toml"))
            .unwrap()
            .replace("settle = \"1s\"", "settle = \"500ms\""),
    )
    .unwrap();
    ws.drop_file("in", "ls.xml", &opentrans("LS-MS", "1"));
    let started = std::time::Instant::now();
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(numbers(&ws), ["LS-MS"]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[cfg(feature = "fault-points")]
#[test]
fn a_crash_loop_faster_than_the_settle_time_still_makes_progress() {
    let ws = Workspace::new("");
    std::fs::write(
        ws.path("eingang.toml"),
        std::fs::read_to_string(ws.path("eingang.toml"))
            .unwrap()
            .replace("settle = \"1s\"", "settle = \"3s\""),
    )
    .unwrap();
    for n in 1..=3 {
        ws.drop_file(
            "in",
            &format!("ls-{n}.xml"),
            &opentrans(&format!("LS-C{n}"), "1"),
        );
    }
    // Every life of the daemon is shorter than the settle time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut lives = 0;
    while ws.files("archiv").len() < 3 && std::time::Instant::now() < deadline {
        let mut daemon = ws
            .command(&["run"], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let _ = daemon.kill();
        let _ = daemon.wait();
        lives += 1;
    }
    assert_eq!(
        ws.files("archiv").len(),
        3,
        "no progress after {lives} short lives"
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 3);
}

#[test]
fn a_failed_move_costs_that_item_only_and_adds_no_row_or_notice() {
    let ws = Workspace::new("");
    // The error folder takes no new entry, not even from root (ext4's immutable flag).
    let error = ws.path("fehler");
    let locked = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&error)
        .status()
        .expect("chattr (e2fsprogs) is needed: apt-get install -y e2fsprogs");
    assert!(
        locked.success(),
        "chattr +i failed: the test needs an ext4 /tmp"
    );
    let unlock = || {
        std::process::Command::new("chattr")
            .arg("-i")
            .arg(&error)
            .status()
            .unwrap();
    };
    ws.drop_file("in", "kaputt.xml", b"<broken");
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-F1", "1"));
    ws.drop_file("in", "ls-2.xml", &opentrans("LS-F2", "1"));
    let first = ws.run(&["sync"]);
    let second = ws.run(&["sync"]);
    unlock();
    let third = ws.run(&["sync"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(stderr(&first).contains("kaputt.xml"), "{}", stderr(&first));
    assert_eq!(second.status.code(), Some(1));
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(ws.files("archiv"), ["ls-1.xml", "ls-2.xml"]);
    assert_eq!(ws.files("fehler"), ["kaputt.xml", "kaputt.xml.error.txt"]);
    assert!(ws.files("in").is_empty());
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
fn a_secret_file_readable_by_others_is_warned_about_at_start_and_in_check() {
    let ws = Workspace::new(
        "[[source]]\nname = \"edi\"\nkind = \"ftp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n\
         user = \"edi\"\npassword_file = \"ftp-password\"\ninbox = \"/out\"\narchive = \"/archiv\"\nerror = \"/fehler\"\n",
    );
    let secret = ws.path("ftp-password");
    std::fs::write(&secret, "S3cr3t-perm\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = ws.run(&["check"]);
    let warning = format!(
        "password_file {} is readable by everyone (mode 644): chmod 600",
        secret.display()
    );
    let warning = warning.as_str();
    assert!(stderr(&check).contains(warning), "{}", stderr(&check));
    assert!(!stderr(&check).contains("S3cr3t-perm") && !stdout(&check).contains("S3cr3t-perm"));
    let log = std::fs::File::create(ws.path("run.log")).unwrap();
    let mut daemon = ws
        .command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let warned = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(ws.path("run.log")).is_ok_and(|l| l.contains(warning))
    });
    support::stop(&mut daemon);
    assert!(
        warned,
        "{}",
        std::fs::read_to_string(ws.path("run.log")).unwrap()
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!stderr(&ws.run(&["check"])).contains("readable by"));
}

#[test]
fn a_store_restored_from_an_older_copy_is_noticed_at_start_and_recovered() {
    let ws = Workspace::sqlite("");
    let copy = |from: &str, to: &str| {
        for side in ["", "-wal"] {
            let source = ws.path(&format!("{from}{side}"));
            let target = ws.path(&format!("{to}{side}"));
            let _ = std::fs::remove_file(&target);
            if source.exists() {
                std::fs::copy(&source, &target).unwrap();
            }
        }
    };
    for n in 1..=2 {
        ws.drop_file(
            "in",
            &format!("ls-{n}.xml"),
            &opentrans(&format!("LS-B{n}"), "1"),
        );
    }
    assert!(ws.run(&["sync"]).status.success());
    copy("eingang.db", "backup.db");
    for n in 3..=4 {
        ws.drop_file(
            "in",
            &format!("ls-{n}.xml"),
            &opentrans(&format!("LS-B{n}"), "1"),
        );
    }
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv").len(), 4);
    // The backup comes back: it knows two of the four archived notes.
    let _ = std::fs::remove_file(ws.path("eingang.db-shm"));
    copy("backup.db", "eingang.db");
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 2);
    for _ in 0..2 {
        let log = std::fs::File::create(ws.path("run.log")).unwrap();
        let mut daemon = ws
            .command(&["run"], &[])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let told = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(ws.path("run.log"))
                .is_ok_and(|l| l.contains("items lie in the archive that the store does not know"))
                || ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'unrecorded'") > 0
        });
        std::thread::sleep(Duration::from_millis(500));
        support::stop(&mut daemon);
        assert!(told);
    }
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'unrecorded'"),
        1,
        "told once, not at every start"
    );
    let detail: String = rusqlite::Connection::open(ws.path("eingang.db"))
        .unwrap()
        .query_row(
            "SELECT detail FROM outbox WHERE kind = 'unrecorded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        detail.contains("ls-3.xml") && detail.contains("ls-4.xml"),
        "{detail}"
    );
    assert!(!detail.contains("ls-1.xml"), "{detail}");
    let recovered = ws.run(&["recover", "drop"]);
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    assert_eq!(
        stdout(&recovered).lines().count(),
        2,
        "{}",
        stdout(&recovered)
    );
    assert_eq!(ws.files("in"), ["ls-3.xml", "ls-4.xml"]);
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv").len(), 4);
    assert_eq!(numbers(&ws).len(), 4);
    let again = ws.run(&["recover", "drop"]);
    assert!(
        stdout(&again).contains("drop: nothing to recover"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn an_unprivileged_uploaders_links_and_hard_links_to_a_root_only_file_are_never_read() {
    let ws = Workspace::new("");
    let secret = secret(&ws);
    // A shared drop folder: everyone may write it, as on a file server.
    std::fs::set_permissions(ws.path("in"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(ws.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let status = std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(args)
            .status()
            .expect("setpriv (util-linux) is needed");
        assert!(status.success(), "{args:?} as nobody failed");
    };
    let link = ws.path("in/lieferung.xml");
    as_nobody(&["ln", "-s", secret.to_str().unwrap(), link.to_str().unwrap()]);
    let own = ws.path("in/eigene.xml");
    as_nobody(&["sh", "-c", &format!("printf '<broken' > {}", own.display())]);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !numbers(&ws).iter().any(|n| n == "SECRET-1"),
        "the link was followed"
    );
    assert_eq!(ws.files("in"), ["lieferung.xml"]);
    assert_eq!(ws.files("fehler"), ["eigene.xml", "eigene.xml.error.txt"]);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'stray'"),
        1
    );
}
