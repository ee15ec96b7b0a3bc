//! The drop-folder source end to end, through the built binary: moves, settle time, and the
//! promises of DESIGN.md (nothing lost, nothing twice, transient is not permanent, every
//! failure reaches a person, bad input never stops the watcher).

mod support;

use std::io::Write;
use std::time::Duration;

use support::{Workspace, fixture, message, opentrans, stderr, stop, wait_until};

#[test]
fn nothing_lost_every_item_ends_in_archive_or_error_with_its_outcome() {
    let ws = Workspace::new("");
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-1", "12"));
    ws.drop_file("in", "ls-2.xml", &opentrans("LS-2", "3.50"));
    ws.drop_file(
        "in",
        "kaputt.xml",
        b"<DISPATCHNOTIFICATION><oops></DISPATCHNOTIFICATION>",
    );
    ws.drop_file("in", "foto.jpg", b"\xff\xd8\xff\xe0 not a delivery note");
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "sync failed: {}", stderr(&out));
    assert!(
        ws.files("in").is_empty(),
        "inbox not drained: {:?}",
        ws.files("in")
    );
    assert_eq!(ws.files("archiv"), ["ls-1.xml", "ls-2.xml"]);
    assert_eq!(
        ws.files("fehler"),
        [
            "foto.jpg",
            "foto.jpg.error.txt",
            "kaputt.xml",
            "kaputt.xml.error.txt"
        ]
    );
    let docs = ws.exported();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["number"], "LS-1");
    assert_eq!(docs[1]["lines"][0]["quantity"], "3.5");
    let origin = &docs[0]["origin"];
    assert_eq!(origin["source"], "drop");
    assert_eq!(origin["file"], "ls-1.xml");
    assert_eq!(origin["sha256"].as_str().map(str::len), Some(64));
    assert!(
        origin["archived"]
            .as_str()
            .unwrap()
            .ends_with("archiv/ls-1.xml"),
        "{origin}"
    );
    let note = std::fs::read_to_string(ws.path("fehler/kaputt.xml.error.txt")).unwrap();
    assert!(note.starts_with("kaputt.xml: "), "{note}");
    assert!(
        note.contains(&format!(
            "eingang --config {} reprocess",
            ws.path("eingang.toml").display()
        )),
        "{note}"
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
}

#[test]
fn every_failure_reaches_a_person_one_outbox_row_per_rejection() {
    let ws = Workspace::new("");
    ws.drop_file("in", "a.xml", b"not xml at all <");
    ws.drop_file("in", "b.pdf", b"%PDF-1.4");
    ws.drop_file("in", "ok.xml", &opentrans("LS-9", "1"));
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'rejected'"),
        2
    );
    assert_eq!(
        ws.query_i64(
            "SELECT COUNT(*) FROM outbox o JOIN items i ON i.id = o.item_id WHERE i.outcome = 'rejected'"
        ),
        2
    );
    // A second pass over nothing new writes no further notice.
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 2);
}

#[test]
fn nothing_twice_same_bytes_dropped_again_are_rejected_as_already_imported() {
    let ws = Workspace::new("");
    let note = opentrans("LS-7", "5");
    ws.drop_file("in", "ls-7.xml", &note);
    assert!(ws.run(&["sync"]).status.success());
    ws.drop_file("in", "ls-7-nochmal.xml", &note);
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.exported().len(), 1);
    assert_eq!(
        ws.files("fehler"),
        ["ls-7-nochmal.xml", "ls-7-nochmal.xml.error.txt"]
    );
    let reason = std::fs::read_to_string(ws.path("fehler/ls-7-nochmal.xml.error.txt")).unwrap();
    assert!(reason.contains("already imported"), "{reason}");
}

#[test]
fn nothing_twice_same_note_in_new_bytes_is_rejected_as_duplicate() {
    let ws = Workspace::new("");
    ws.drop_file("in", "ls-8.xml", &opentrans("LS-8", "5"));
    assert!(ws.run(&["sync"]).status.success());
    let mut resent = opentrans("LS-8", "5");
    resent.extend_from_slice(b"<!-- resent by the EDI provider -->\n");
    ws.drop_file("in", "ls-8-ftp.xml", &resent);
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.exported().len(), 1);
    let reason = std::fs::read_to_string(ws.path("fehler/ls-8-ftp.xml.error.txt")).unwrap();
    assert!(reason.contains("duplicate delivery note LS-8"), "{reason}");
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_commit_is_moved_not_imported_twice() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::new("");
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-1", "1"));
    ws.drop_file("in", "bad.xml", b"<broken");
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_commit")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    // Committed, not moved: both still in the inbox, outcomes stored.
    assert_eq!(ws.files("in"), ["bad.xml", "ls-1.xml"]);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("archiv"), ["ls-1.xml"]);
    assert_eq!(ws.files("fehler"), ["bad.xml", "bad.xml.error.txt"]);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
}

#[cfg(feature = "fault-points")]
#[test]
fn an_item_that_kills_the_process_goes_to_error_after_three_attempts() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::new("");
    ws.drop_file("in", "gift.xml", &opentrans("LS-66", "1"));
    ws.drop_file("in", "gut.xml", &opentrans("LS-67", "1"));
    let fault = [("EINGANG_FAULT", "parse:gift.xml")];
    let mut kills = 0;
    for _ in 0..6 {
        let out = ws.run_env(&["sync"], &fault);
        if out.status.signal() == Some(libc::SIGKILL) {
            kills += 1;
            continue;
        }
        assert!(out.status.success(), "{}", stderr(&out));
        break;
    }
    assert_eq!(kills, 3, "three attempts, then set aside");
    assert_eq!(ws.files("archiv"), ["gut.xml"]);
    assert_eq!(ws.files("fehler"), ["gift.xml", "gift.xml.error.txt"]);
    let reason = std::fs::read_to_string(ws.path("fehler/gift.xml.error.txt")).unwrap();
    assert!(reason.contains("stopped eingang 3 times"), "{reason}");
}

#[cfg(not(feature = "fault-points"))]
#[test]
fn fault_point_tests_need_the_feature() {
    panic!("run the tests as the README says: cargo test --features fault-points");
}

#[test]
fn transient_is_not_permanent_a_store_that_cannot_open_leaves_items_in_the_inbox() {
    let ws = Workspace::new("");
    std::fs::write(
        ws.path("blocker"),
        b"a file where the store folder should be",
    )
    .unwrap();
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    let config = match &ws.store_url {
        // On PostgreSQL: a database the server does not have.
        Some(url) => {
            let (server, _) = url.rsplit_once('/').unwrap();
            config.replace(url.as_str(), &format!("{server}/no_such_store"))
        }
        None => config.replace("path = \"eingang.db\"", "path = \"blocker/eingang.db\""),
    };
    std::fs::write(ws.path("eingang.toml"), config).unwrap();
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-1", "1"));
    let out = ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(ws.files("in"), ["ls-1.xml"]);
    assert!(ws.files("fehler").is_empty());
    let last = stderr(&out);
    assert!(
        last.lines()
            .last()
            .is_some_and(|l| l.starts_with("error: ")),
        "{last}"
    );
}

#[test]
fn temporary_and_hidden_names_are_left_alone() {
    let ws = Workspace::new("");
    ws.drop_file("in", "ls-1.xml.part", &opentrans("LS-1", "1"));
    ws.drop_file("in", ".ls-2.xml", &opentrans("LS-2", "1"));
    ws.drop_file("in", "upload.tmp", b"half");
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("in"), [".ls-2.xml", "ls-1.xml.part", "upload.tmp"]);
    assert!(ws.files("archiv").is_empty() && ws.files("fehler").is_empty());
}

#[test]
fn moves_never_overwrite_an_archived_file() {
    let ws = Workspace::new("");
    ws.drop_file(
        "archiv",
        "ls.xml",
        b"an older delivery note, archived last week",
    );
    ws.drop_file("in", "ls.xml", &opentrans("LS-3", "1"));
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv"), ["ls-2.xml", "ls.xml"]);
    assert_eq!(
        std::fs::read(ws.path("archiv/ls.xml")).unwrap(),
        b"an older delivery note, archived last week"
    );
    assert!(
        ws.exported()[0]["origin"]["archived"]
            .as_str()
            .unwrap()
            .ends_with("ls-2.xml")
    );
}

#[test]
fn dropped_eml_is_handled_as_a_message_with_its_attachments() {
    let ws = Workspace::new("");
    let mail = message(
        "ls@lieferant.de",
        "m-1@lieferant.de",
        "LS-5.xml",
        "application/octet-stream",
        &opentrans("LS-5", "2"),
    );
    ws.drop_file("in", "lieferung.eml", &mail);
    let csv = message(
        "unbekannt@example.org",
        "m-2@example.org",
        "LS_9.csv",
        "text/csv",
        b"Nr;Menge\r\n1;2\r\n",
    );
    ws.drop_file("in", "unbekannt.eml", &csv);
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv"), ["lieferung.eml"]);
    let docs = ws.exported();
    assert_eq!(docs[0]["origin"]["message_id"], "<m-1@lieferant.de>");
    assert_eq!(docs[0]["origin"]["file"], "LS-5.xml");
    let reason = std::fs::read_to_string(ws.path("fehler/unbekannt.eml.error.txt")).unwrap();
    assert!(
        reason.contains("unknown sender unbekannt@example.org"),
        "{reason}"
    );
    assert!(reason.contains("formats/example.toml"), "{reason}");
}

#[test]
fn settle_time_keeps_a_growing_file_until_it_is_complete() {
    let ws = Workspace::new("");
    let mut daemon = ws.spawn(&["run"]);
    let note = opentrans("LS-11", "7");
    let path = ws.path("in/langsam.xml");
    let mut file = std::fs::File::create(&path).unwrap();
    // Written in pieces over ~2.5 s, each gap shorter than the 1 s settle time.
    for chunk in note.chunks(note.len() / 5 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(path.exists(), "taken while still being written");
    }
    drop(file);
    let archived = wait_until(Duration::from_secs(8), || {
        ws.files("archiv") == ["langsam.xml"]
    });
    stop(&mut daemon);
    assert!(archived, "not archived; fehler: {:?}", ws.files("fehler"));
    assert_eq!(ws.exported()[0]["lines"][0]["quantity"], "7");
}

#[test]
fn bad_input_never_stops_the_watcher() {
    let ws = Workspace::new("");
    let mut daemon = ws.spawn(&["run"]);
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><DISPATCHNOTIFICATION>&lol2;</DISPATCHNOTIFICATION>"#;
    ws.drop_file("in", "laughs.xml", laughs.as_bytes());
    ws.drop_file("in", "deep.xml", "<a>".repeat(200_000).as_bytes());
    ws.drop_file("in", "leer.eml", b"");
    assert!(wait_until(Duration::from_secs(10), || ws
        .files("fehler")
        .len()
        == 6));
    ws.drop_file("in", "gut.xml", &opentrans("LS-12", "1"));
    let archived = wait_until(Duration::from_secs(10), || {
        ws.files("archiv") == ["gut.xml"]
    });
    let alive = daemon.try_wait().unwrap().is_none();
    stop(&mut daemon);
    assert!(alive, "the daemon died");
    assert!(
        archived,
        "the good file was not archived after the bad ones"
    );
}

#[test]
fn run_stops_on_sigterm_with_exit_0() {
    let ws = Workspace::new("");
    let mut daemon = ws.spawn(&["run"]);
    ws.drop_file("in", "ls.xml", &opentrans("LS-13", "1"));
    assert!(wait_until(Duration::from_secs(8), || ws.files("archiv") == ["ls.xml"]));
    let status = stop(&mut daemon);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn reprocess_puts_a_failed_file_back_and_clears_its_failure() {
    let ws = Workspace::new("");
    ws.drop_file("in", "kaputt.xml", b"<broken");
    assert!(ws.run(&["sync"]).status.success());
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    let out = ws.run(&["reprocess", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("in"), ["kaputt.xml"]);
    assert!(ws.files("fehler").is_empty(), "{:?}", ws.files("fehler"));
    let status = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["sources"][0]["failed"], 0);
    // The same bytes get a fresh try (and fail again, as nothing was fixed).
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("fehler"), ["kaputt.xml", "kaputt.xml.error.txt"]);
    assert_eq!(ws.run(&["reprocess", "999"]).status.code(), Some(1));
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_move_before_its_record_is_found_in_the_archive() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::new("");
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-1", "1"));
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_move")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    assert_eq!(ws.files("archiv"), ["ls-1.xml"]);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        1
    );
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    let docs = ws.exported();
    assert!(
        docs[0]["origin"]["archived"]
            .as_str()
            .unwrap()
            .ends_with("archiv/ls-1.xml")
    );
}

#[test]
fn table_files_are_routed_by_file_name_glob() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    ws.with_format("optikhaus");
    ws.drop_file(
        "in",
        "lieferschein-2026-11.csv",
        &fixture("acme/lieferschein-2026-11.csv"),
    );
    ws.drop_file(
        "in",
        "lieferschein-2026-11-20.xlsx",
        &fixture("optikhaus/lieferschein-2026-11-20.xlsx"),
    );
    ws.drop_file("in", "bestand.csv", b"Artikel;Menge\r\nA-1;2\r\n");
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ws.files("archiv"),
        ["lieferschein-2026-11-20.xlsx", "lieferschein-2026-11.csv"]
    );
    let docs = ws.exported();
    let suppliers: std::collections::BTreeSet<&str> = docs
        .iter()
        .map(|d| d["supplier"].as_str().unwrap())
        .collect();
    assert_eq!(
        suppliers.into_iter().collect::<Vec<_>>(),
        ["acme", "optikhaus"]
    );
    let reason = std::fs::read_to_string(ws.path("fehler/bestand.csv.error.txt")).unwrap();
    assert!(
        reason.contains("no supplier format matches the file name bestand.csv"),
        "{reason}"
    );
    assert!(reason.contains("formats/bestand.toml"), "{reason}");
}

#[test]
fn unknown_sender_goes_to_error_and_imports_after_the_format_names_it() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    let mail = message(
        "versand@acme-neu.de",
        "m-7@acme-neu.de",
        "export.csv",
        "text/csv",
        &fixture("acme/lieferschein-2026-11.csv"),
    );
    ws.drop_file("in", "mail.eml", &mail);
    assert!(ws.run(&["sync"]).status.success());
    let reason = std::fs::read_to_string(ws.path("fehler/mail.eml.error.txt")).unwrap();
    assert!(
        reason.contains("unknown sender versand@acme-neu.de"),
        "{reason}"
    );
    // The admin adds the sender, then reprocesses the item.
    let format = std::fs::read_to_string(ws.path("formats/acme.toml"))
        .unwrap()
        .replace("senders = [", "senders = [\"versand@acme-neu.de\", ");
    std::fs::write(ws.path("formats/acme.toml"), format).unwrap();
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    assert!(ws.run(&["reprocess", &id.to_string()]).status.success());
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv"), ["mail.eml"]);
    let docs = ws.exported();
    assert!(docs.len() >= 2, "several notes in one file: {}", docs.len());
    assert!(
        docs.iter()
            .all(|d| d["supplier"] == "acme" && d["origin"]["message_id"] == "<m-7@acme-neu.de>")
    );
}

#[test]
fn an_item_over_the_size_limit_is_rejected_without_being_parsed() {
    let ws = Workspace::new("[limits]\nmax_item_mib = 1\n");
    let mut big = opentrans("LS-20", "1");
    big.extend(std::iter::repeat_n(b' ', 1024 * 1024 + 1));
    ws.drop_file("in", "riesig.xml", &big);
    ws.drop_file("in", "klein.xml", &opentrans("LS-21", "1"));
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv"), ["klein.xml"]);
    let reason = std::fs::read_to_string(ws.path("fehler/riesig.xml.error.txt")).unwrap();
    assert!(reason.starts_with("riesig.xml: too large: "), "{reason}");
    assert!(reason.contains("max_item_mib"), "{reason}");
    // The bytes stay as they were: the file moved whole.
    assert_eq!(std::fs::read(ws.path("fehler/riesig.xml")).unwrap(), big);
}

#[test]
fn nothing_twice_the_same_standard_note_by_mail_and_as_a_file_is_stored_once() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    // By mail from a sender acme lists: the note's supplier is acme.
    let note = opentrans("LS-X1", "4");
    let mail = message(
        "lieferschein@acme-grosshandel.de",
        "x1@acme-grosshandel.de",
        "ls-x1.xml",
        "application/xml",
        &note,
    );
    ws.drop_file("in", "lieferung.eml", &mail);
    assert!(ws.run(&["sync"]).status.success());
    // The same note as a file: no supplier is known for it, yet it is the same note.
    ws.drop_file("in", "ls-x1.xml", &note);
    assert!(ws.run(&["sync"]).status.success());
    let docs = ws.exported();
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["supplier"], "acme");
    assert_eq!(ws.files("fehler"), ["ls-x1.xml", "ls-x1.xml.error.txt"]);
    let reason = std::fs::read_to_string(ws.path("fehler/ls-x1.xml.error.txt")).unwrap();
    assert!(reason.contains("LS-X1"), "{reason}");
}
