//! The IMAP source end to end against a real Dovecot, through the built binary: the right
//! folders and rows for a mixed batch, IDLE, crashes around the move, a server restart in the
//! middle of a pass, the COPY fallback, STARTTLS and certificate refusals, reprocess.

#[path = "support/dovecot.rs"]
mod dovecot;
mod support;

use std::time::Duration;

use dovecot::{Caps, Client, Dovecot, PASSWORD, Proxy, StartTlsRefuser, new_user, time_until};
use support::{Workspace, message, opentrans, stderr, stdout, wait_until};

/// The server names of the configured folders: Dovecot here keeps every folder below `INBOX.`
/// with `.` as the delimiter, and the error folder has an umlaut (modified UTF-7).
const INBOX: &str = "INBOX.Lieferscheine.Eingang";
const ARCHIVE: &str = "INBOX.Lieferscheine.Archiv";
const ERROR: &str = "INBOX.Lieferscheine.R&APw-ckl&AOQ-ufer";

/// How eingang reaches the server in a test.
struct Reach<'a> {
    tls: &'a str,
    port: u16,
    ca: String,
}

impl Reach<'_> {
    fn implicit(dovecot: &Dovecot) -> Reach<'static> {
        Reach::on(dovecot.imaps_port, "implicit")
    }

    /// A port on loopback (a proxy or a fake server in front of Dovecot) with this `tls`.
    fn on(port: u16, tls: &str) -> Reach<'_> {
        Reach {
            tls,
            port,
            ca: dovecot::shared_certificates().0.clone(),
        }
    }
}

/// A workspace whose config has one IMAP source `mail` for `user` (folders as configured:
/// `Lieferscheine/Eingang`, `Lieferscheine/Archiv`, `Lieferscheine/Rückläufer`), the Acme
/// supplier format, and `extra` appended to the source.
fn workspace(user: &str, reach: &Reach<'_>, extra: &str) -> Workspace {
    let ws = Workspace::bare();
    std::fs::create_dir_all(ws.path("formats")).expect("formats");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/formats/acme.toml"),
        ws.path("formats/acme.toml"),
    )
    .expect("copy acme.toml");
    std::fs::write(ws.path("ca.pem"), &reach.ca).expect("ca");
    std::fs::write(ws.path("password"), format!("{PASSWORD}\n")).expect("password");
    let config = format!(
        "formats = \"formats\"\n{}{}\
         [[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{}\"\n\
         ca_file = \"ca.pem\"\nuser = \"{user}\"\npassword_file = \"password\"\n\
         inbox = \"Lieferscheine/Eingang\"\narchive = \"Lieferscheine/Archiv\"\nerror = \"Lieferscheine/Rückläufer\"\n{extra}",
        ws.store_section(),
        support::dns_section(),
        reach.port,
        reach.tls
    );
    std::fs::write(ws.path("eingang.toml"), config).expect("config");
    ws
}

/// A workspace for a new user on `dovecot` over implicit TLS whose folders exist, made by
/// `eingang check --create-folders`, and a client for that mailbox.
fn mailbox(dovecot: &Dovecot, test: &str, extra: &str) -> (Workspace, Client) {
    mailbox_via(dovecot, test, &Reach::implicit(dovecot), extra)
}

/// The same, with the server reached as `reach` says (through a proxy, say).
fn mailbox_via(
    dovecot: &Dovecot,
    test: &str,
    reach: &Reach<'_>,
    extra: &str,
) -> (Workspace, Client) {
    let user = new_user(test);
    let ws = workspace(&user, reach, extra);
    let out = ws.run(&["check", "--create-folders"]);
    assert!(
        out.status.success(),
        "check --create-folders failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    (ws, dovecot.client(&user))
}

fn acme_csv() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/acme/lieferschein-2026-11.csv"
    ))
    .expect("acme fixture")
}

fn cxml_ship_notice() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/standard/cxml/ship-notice.xml"
    ))
    .expect("cxml fixture")
}

fn note_message(number: &str) -> Vec<u8> {
    message(
        "lieferant@example.com",
        &format!("{number}@example.com"),
        &format!("{number}.xml"),
        "application/xml",
        &opentrans(number, "1"),
    )
}

fn headers_with(messages: &[(u32, Vec<u8>, Vec<String>)], needle: &str) -> usize {
    messages
        .iter()
        .filter(|(_, body, _)| String::from_utf8_lossy(body).contains(needle))
        .count()
}

#[test]
fn mixed_batch_ends_in_the_right_folders_with_the_right_rows() {
    let dovecot = Dovecot::shared();
    let (ws, mbox) = mailbox(dovecot, "mixed", "");
    let check = ws.run(&["check"]);
    let lines = stdout(&check);
    assert!(check.status.success(), "{lines}");
    for folder in [
        "inbox folder Lieferscheine/Eingang: ok",
        "archive folder Lieferscheine/Archiv: ok",
        "error folder Lieferscheine/Rückläufer: ok",
    ] {
        assert!(lines.contains(&format!("source mail: {folder}")), "{lines}");
    }
    mbox.append(
        INBOX,
        &message(
            "asn@supplier.example",
            "cxml-1@example.com",
            "ship-notice.xml",
            "text/xml",
            &cxml_ship_notice(),
        ),
        None,
    );
    mbox.append(
        INBOX,
        &message(
            "lieferschein@acme-grosshandel.de",
            "acme-1@example.com",
            "lieferschein-2026-11.csv",
            "text/csv",
            &acme_csv(),
        ),
        None,
    );
    mbox.append(
        INBOX,
        &message(
            "fremd@unbekannt.example",
            "unknown-1@example.com",
            "lieferschein-2026-11.csv",
            "text/csv",
            &acme_csv(),
        ),
        None,
    );
    mbox.append(
        INBOX,
        &message(
            "asn@supplier.example",
            "broken-1@example.com",
            "kaputt.xml",
            "text/xml",
            b"<cXML><Request><ShipNoticeRequest><oops></cXML>",
        ),
        None,
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "sync failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("mail: imported 2, rejected 2"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mbox.count(INBOX), 0, "inbox not drained");
    let archived = mbox.messages(ARCHIVE);
    let failed = mbox.messages(ERROR);
    assert_eq!(archived.len(), 2);
    assert_eq!(failed.len(), 2);
    assert_eq!(headers_with(&archived, "cxml-1@example.com"), 1);
    assert_eq!(headers_with(&archived, "acme-1@example.com"), 1);
    assert_eq!(headers_with(&failed, "unknown-1@example.com"), 1);
    assert_eq!(headers_with(&failed, "broken-1@example.com"), 1);
    // Fetched with BODY.PEEK[]: nothing was marked read on the way.
    assert!(
        archived
            .iter()
            .all(|(_, _, flags)| !flags.iter().any(|f| f.contains("Seen"))),
        "{archived:?}"
    );
    let docs = ws.exported();
    let acme: Vec<_> = docs.iter().filter(|d| d["supplier"] == "acme").collect();
    assert_eq!(acme.len(), 2, "the CSV holds two delivery notes");
    assert_eq!(acme[0]["number"], "LS-26-04711");
    assert_eq!(acme[0]["lines"].as_array().map(Vec::len), Some(3));
    assert_eq!(acme[1]["lines"][0]["quantity"], "1234.5");
    assert_eq!(
        docs.iter()
            .filter(|d| d["format"] == "cxml-ship-notice")
            .count(),
        1
    );
    assert_eq!(docs.len(), 3);
    for doc in &docs {
        assert_eq!(doc["origin"]["source"], "mail");
        assert_eq!(doc["origin"]["archived"], "Lieferscheine/Archiv");
    }
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE outcome = 'rejected' AND archived = 'Lieferscheine/Rückläufer'"),
        2
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 2);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
    // The destination UID is kept for reprocess.
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE archived_ref LIKE '%:%'"),
        4
    );
    // A second sync finds nothing and changes nothing.
    let again = ws.run(&["sync"]);
    assert!(
        stderr(&again).contains("mail: imported 0, rejected 0"),
        "{}",
        stderr(&again)
    );
    assert_eq!(ws.exported().len(), 3);
    let status = ws.run(&["status"]);
    assert!(
        stdout(&status)
            .contains("mail: received 4, archived 2, failed 2, pending 0, last error: none"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn an_oversized_message_is_rejected_without_downloading_it() {
    let dovecot = Dovecot::shared();
    let user = new_user("oversized");
    let proxy = Proxy::start(dovecot.imap_port);
    let reach = Reach::on(proxy.port, "none");
    let ws = workspace(&user, &reach, "");
    std::fs::write(
        ws.path("eingang.toml"),
        std::fs::read_to_string(ws.path("eingang.toml"))
            .unwrap()
            .replace("[store]", "[limits]\nmax_item_mib = 1\n[store]"),
    )
    .unwrap();
    assert!(ws.run(&["check", "--create-folders"]).status.success());
    let mbox = dovecot.client(&user);
    mbox.append(INBOX, &note_message("LS-SMALL"), None);
    let big = message(
        "lieferant@example.com",
        "big@example.com",
        "gross.xml",
        "application/xml",
        &vec![b'x'; 1_200_000],
    );
    mbox.append(INBOX, &big, None);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(headers_with(&mbox.messages(ERROR), "big@example.com"), 1);
    assert_eq!(ws.exported().len(), 1);
    let reason = ws
        .query_text("SELECT reason FROM items WHERE outcome = 'rejected'")
        .unwrap();
    assert!(reason.contains("too large"), "{reason}");
    // The big message is UID 2: its size was asked for, its body never.
    let bodies: Vec<String> = proxy
        .commands()
        .into_iter()
        .filter(|c| c.contains("BODY.PEEK[]"))
        .collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies[0].contains("UID FETCH 1 "), "{bodies:?}");
}

#[test]
fn idle_picks_up_an_appended_message_within_5_s() {
    let dovecot = Dovecot::shared();
    let (ws, mbox) = mailbox(dovecot, "idle", "schedule = \"idle\"\n");
    let mut daemon = ws.spawn(&["run"]);
    mbox.append(INBOX, &note_message("LS-IDLE-1"), None);
    let first = time_until(Duration::from_secs(20), || mbox.count(ARCHIVE) == 1);
    assert!(
        first.is_some(),
        "the daemon did not archive the first message"
    );
    // Now it waits in IDLE; a new message must be handled promptly.
    std::thread::sleep(Duration::from_millis(500));
    mbox.append(INBOX, &note_message("LS-IDLE-2"), None);
    let took = time_until(Duration::from_secs(10), || mbox.count(ARCHIVE) == 2);
    let status = support::stop(&mut daemon);
    let took = took.expect("the appended message was not archived within 10 s");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(status.success(), "daemon exit {status:?}");
    assert_eq!(ws.exported().len(), 2);
}

#[test]
fn a_dead_idle_connection_is_noticed_within_a_minute_and_replaced() {
    use std::io::BufRead;
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(dovecot.imap_port);
    let (ws, mbox) = mailbox_via(
        dovecot,
        "deadlink",
        &Reach::on(proxy.port, "none"),
        "schedule = \"idle\"\n",
    );
    let mut daemon = ws.spawn(&["run"]);
    let log = daemon.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            let _ = tx.send((std::time::Instant::now(), line));
        }
    });
    mbox.append(INBOX, &note_message("LS-D1"), None);
    assert!(
        time_until(Duration::from_secs(20), || mbox.count(ARCHIVE) == 1).is_some(),
        "first message not archived"
    );
    std::thread::sleep(Duration::from_secs(1)); // in IDLE now
    proxy.black_hole_current();
    let cut = std::time::Instant::now();
    let give_up = cut + Duration::from_secs(90);
    let mut noticed = None;
    while let Ok((at, line)) =
        rx.recv_timeout(give_up.saturating_duration_since(std::time::Instant::now()))
    {
        if line.contains("idle ended") {
            noticed = Some(at.duration_since(cut));
            break;
        }
    }
    mbox.append(INBOX, &note_message("LS-D2"), None);
    let recovered = time_until(Duration::from_secs(20), || mbox.count(ARCHIVE) == 2);
    support::stop(&mut daemon);
    let noticed = noticed.expect("the dead connection was never noticed");
    assert!(
        noticed < Duration::from_secs(60),
        "noticed after {noticed:?}"
    );
    assert!(
        recovered.is_some(),
        "no reconnect after the dead connection"
    );
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_commit_is_moved_not_imported_twice() {
    use std::os::unix::process::ExitStatusExt;
    let dovecot = Dovecot::shared();
    let proxy = Proxy::start(dovecot.imap_port);
    let (ws, mbox) = mailbox_via(dovecot, "killcommit", &Reach::on(proxy.port, "none"), "");
    mbox.append(INBOX, &note_message("LS-K1"), None);
    mbox.append(INBOX, &note_message("LS-K2"), None);
    mbox.append(
        INBOX,
        &message(
            "x@example.com",
            "bad@example.com",
            "bad.xml",
            "text/xml",
            b"<broken",
        ),
        None,
    );
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_commit")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    // Committed, not moved.
    assert_eq!(mbox.count(INBOX), 3);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 2);
    let fetched_before = proxy.commands().len();
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Moved by UID from the ledger's outcome, without downloading them again.
    let resumed = proxy.commands().split_off(fetched_before);
    assert!(
        !resumed.iter().any(|c| c.contains("BODY.PEEK[]")),
        "{resumed:?}"
    );
    assert_eq!(mbox.count(INBOX), 0);
    assert_eq!(mbox.count(ARCHIVE), 2);
    assert_eq!(mbox.count(ERROR), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 3);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_the_move_is_recorded_not_moved_again() {
    use std::os::unix::process::ExitStatusExt;
    let dovecot = Dovecot::shared();
    let (ws, mbox) = mailbox(dovecot, "killmove", "");
    mbox.append(INBOX, &note_message("LS-M1"), None);
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_move")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    assert_eq!(mbox.count(ARCHIVE), 1);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        1
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
    assert_eq!(mbox.count(ARCHIVE), 1);
    assert_eq!(mbox.count(ERROR), 0);
    assert_eq!(
        ws.exported()[0]["origin"]["archived"],
        "Lieferscheine/Archiv"
    );
    // Found again in the archive by Message-ID and bytes: its UID there is known.
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE archived_ref LIKE '%:%'"),
        1
    );
}

#[cfg(feature = "fault-points")]
#[test]
fn a_changed_uidvalidity_does_not_import_twice() {
    use std::os::unix::process::ExitStatusExt;
    let dovecot = Dovecot::shared();
    let user = new_user("uidvalidity");
    let ws = workspace(&user, &Reach::implicit(dovecot), "");
    assert!(ws.run(&["check", "--create-folders"]).status.success());
    let mbox = dovecot.client(&user);
    mbox.append(INBOX, &note_message("LS-V1"), None);
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_commit")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    // The server renumbers the inbox (RFC 3501 §2.3.1.1): the stored UID means nothing now.
    dovecot.doveadm(&[
        "mailbox",
        "update",
        "-u",
        &user,
        "--uid-validity",
        "4242",
        INBOX,
    ]);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mbox.count(INBOX), 0);
    assert_eq!(mbox.count(ARCHIVE), 1);
    assert_eq!(mbox.count(ERROR), 0, "not rejected as already imported");
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 1);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
}

#[test]
fn dovecot_restarted_during_a_pass_leaves_everything_in_place_and_nothing_twice() {
    const N: usize = 1600;
    let dovecot = Dovecot::start(Caps::Full);
    let proxy = Proxy::start(dovecot.imap_port);
    let (ws, mbox) = mailbox_via(
        &dovecot,
        "restart",
        &Reach::on(proxy.port, "none"),
        "schedule = \"idle\"\n",
    );
    let notes: Vec<Vec<u8>> = (0..N)
        .map(|i| note_message(&format!("LS-R{i:04}")))
        .collect();
    mbox.append_all(INBOX, &notes);
    // The first move of the pass reaches the server, its answer never comes back, and the
    // server goes down right then: more batches wait, one may be committed and not moved.
    proxy.freeze_after("UID MOVE");
    let mut daemon = ws.spawn(&["run"]);
    let frozen = time_until(Duration::from_secs(60), || proxy.frozen());
    dovecot.stop();
    assert!(frozen.is_some(), "the pass never moved a batch");
    std::thread::sleep(Duration::from_secs(2));
    dovecot.restart();
    let done = wait_until(Duration::from_secs(180), || {
        mbox.try_search(INBOX, "ALL").is_some_and(|u| u.is_empty())
            && ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL") == 0
    });
    support::stop(&mut daemon);
    assert!(done, "not drained after the restart");
    assert_eq!(mbox.count(ARCHIVE), N, "archive count");
    assert_eq!(
        mbox.count(ERROR),
        0,
        "nothing may be rejected as already imported"
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), N as i64);
    assert_eq!(
        ws.query_i64("SELECT COUNT(DISTINCT number) FROM documents"),
        N as i64
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), N as i64);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE archived = 'Lieferscheine/Archiv'"),
        N as i64
    );
}

#[test]
fn a_refused_move_leaves_the_message_in_the_inbox_until_the_folder_is_back() {
    let dovecot = Dovecot::shared();
    let (ws, mbox) = mailbox(dovecot, "refusedmove", "schedule = \"idle\"\n");
    mbox.append(INBOX, &note_message("LS-T1"), None);
    let mut daemon = ws.spawn(&["run"]);
    let first = time_until(Duration::from_secs(20), || mbox.count(ARCHIVE) == 1);
    // Someone deletes the archive folder while the daemon waits in IDLE.
    mbox.delete(ARCHIVE);
    mbox.append(INBOX, &note_message("LS-T2"), None);
    let committed = time_until(Duration::from_secs(20), || {
        ws.query_i64("SELECT COUNT(*) FROM documents") == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let inbox_while_missing = mbox.count(INBOX);
    let last_error = ws
        .try_query_text("SELECT last_error FROM source_state WHERE source = 'mail'")
        .unwrap_or_default()
        .unwrap_or_default();
    mbox.create(ARCHIVE);
    let moved = time_until(Duration::from_secs(40), || {
        mbox.try_search(ARCHIVE, "ALL")
            .is_some_and(|u| u.len() == 1)
            && mbox.count(INBOX) == 0
    });
    support::stop(&mut daemon);
    assert!(first.is_some(), "the first message was not archived");
    assert!(committed.is_some(), "the second message was not handled");
    assert_eq!(
        inbox_while_missing, 1,
        "the message left the inbox without a place to go"
    );
    assert!(last_error.contains("Archiv"), "last error: {last_error:?}");
    assert!(moved.is_some(), "not moved once the folder was back");
    assert_eq!(mbox.count(ERROR), 0);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 2);
}

#[test]
fn without_move_the_fallback_is_used_and_another_clients_deleted_message_survives() {
    let dovecot = Dovecot::shared_without_move();
    let proxy = Proxy::start(dovecot.imap_port);
    let (ws, mbox) = mailbox_via(dovecot, "nomove", &Reach::on(proxy.port, "none"), "");
    let foreign = message(
        "kollege@example.com",
        "foreign@example.com",
        "notiz.txt",
        "text/plain",
        b"deleted by a colleague's mail client, not yet expunged",
    );
    mbox.append(INBOX, &foreign, Some("(\\Deleted)"));
    mbox.append(INBOX, &note_message("LS-F1"), None);
    mbox.append(INBOX, &note_message("LS-F2"), None);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mbox.count(ARCHIVE), 2);
    let left = mbox.messages(INBOX);
    assert_eq!(left.len(), 1, "only the foreign message stays");
    assert_eq!(headers_with(&left, "foreign@example.com"), 1);
    assert_eq!(ws.exported().len(), 2);
    let commands = proxy.commands();
    let verbs = |word: &str| commands.iter().filter(|c| c.contains(word)).count();
    assert_eq!(verbs("MOVE"), 0, "{commands:?}");
    assert_eq!(verbs("UID COPY"), 1, "{commands:?}");
    assert_eq!(verbs("UID EXPUNGE"), 1, "{commands:?}");
    assert!(
        !commands
            .iter()
            .any(|c| c.split_whitespace().nth(1) == Some("EXPUNGE")),
        "an unscoped EXPUNGE was sent: {commands:?}"
    );
}

#[test]
fn without_uidplus_handled_messages_stay_flagged_and_are_not_taken_again() {
    let dovecot = Dovecot::shared_without_uidplus();
    let (ws, mbox) = mailbox(dovecot, "nouidplus", "");
    mbox.append(INBOX, &note_message("LS-U1"), None);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot expunge selectively"),
        "said once in the log: {}",
        stderr(&out)
    );
    assert_eq!(mbox.count(ARCHIVE), 1);
    let left = mbox.messages(INBOX);
    assert_eq!(left.len(), 1, "never expunged");
    assert!(left[0].2.iter().any(|f| f.contains("Deleted")), "{left:?}");
    assert!(left[0].2.iter().any(|f| f.contains("Seen")), "{left:?}");
    let again = ws.run(&["sync"]);
    assert!(
        stderr(&again).contains("mail: imported 0, rejected 0"),
        "{}",
        stderr(&again)
    );
    assert_eq!(mbox.count(ARCHIVE), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 1);
    let status = stdout(&ws.run(&["status"]));
    assert!(
        status.contains("mail: note: the server cannot expunge selectively"),
        "{status}"
    );
}

#[test]
fn starttls_refused_means_no_login_is_sent() {
    let fake = StartTlsRefuser::start();
    let reach = Reach::on(fake.port, "starttls");
    let ws = workspace(&new_user("starttls"), &reach, "");
    let out = ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("STARTTLS refused"),
        "{}",
        stderr(&out)
    );
    let received = fake.received();
    assert!(received.contains("STARTTLS"), "{received}");
    assert!(
        !received.to_ascii_uppercase().contains("LOGIN"),
        "{received}"
    );
    assert!(!received.contains(PASSWORD), "{received}");
    let check = ws.run(&["check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(stdout(&check).contains("FAILED: "), "{}", stdout(&check));
}

#[test]
fn logindisabled_means_no_login_is_sent() {
    let fake = StartTlsRefuser::start();
    let reach = Reach::on(fake.port, "none");
    let ws = workspace(&new_user("logindisabled"), &reach, "");
    let out = ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("LOGINDISABLED"), "{}", stderr(&out));
    let received = fake.received();
    assert!(received.contains("CAPABILITY"), "{received}");
    assert!(
        !received.to_ascii_uppercase().contains("LOGIN "),
        "{received}"
    );
}

#[test]
fn a_server_without_idle_is_polled() {
    let dovecot = Dovecot::start(Caps::WithoutIdle);
    let proxy = Proxy::start(dovecot.imap_port);
    let (ws, mbox) = mailbox_via(
        &dovecot,
        "poll",
        &Reach::on(proxy.port, "none"),
        "schedule = \"idle\"\n",
    );
    mbox.append(INBOX, &note_message("LS-P1"), None);
    let mut daemon = ws.spawn(&["run"]);
    let first = time_until(Duration::from_secs(20), || mbox.count(ARCHIVE) == 1);
    mbox.append(INBOX, &note_message("LS-P2"), None);
    // The poll interval is a minute.
    let second = time_until(Duration::from_secs(75), || mbox.count(ARCHIVE) == 2);
    support::stop(&mut daemon);
    assert!(first.is_some(), "the first pass did not archive");
    assert!(
        second.is_some(),
        "the poll did not pick up the second message"
    );
    let commands = proxy.commands();
    assert!(
        !commands.iter().any(|c| c.contains(" IDLE")),
        "IDLE sent to a server without it: {commands:?}"
    );
}

#[test]
fn a_wrong_ca_file_is_refused() {
    let dovecot = Dovecot::shared();
    let user = new_user("wrongca");
    let (other_ca, _, _) = dovecot::certificates();
    for (tls, port) in [
        ("implicit", dovecot.imaps_port),
        ("starttls", dovecot.imap_port),
    ] {
        let reach = Reach {
            tls,
            port,
            ca: other_ca.clone(),
        };
        let ws = workspace(&user, &reach, "");
        let out = ws.run(&["check"]);
        assert_eq!(out.status.code(), Some(1));
        let text = stdout(&out);
        assert!(
            text.contains("FAILED: ") && text.contains("TLS"),
            "{tls}: {text}"
        );
        assert!(text.to_lowercase().contains("certificate"), "{tls}: {text}");
    }
    assert!(
        !dovecot.log().contains(&format!("user=<{user}>")),
        "a login reached the server"
    );
}

#[test]
fn starttls_with_the_right_ca_works_and_the_password_never_shows() {
    let dovecot = Dovecot::shared();
    let user = new_user("secret");
    let reach = Reach::on(dovecot.imap_port, "starttls");
    let ws = workspace(&user, &reach, "");
    let out = ws.run_env(&["check", "--create-folders"], &[("EINGANG_LOG", "trace")]);
    assert!(out.status.success(), "{}", stdout(&out));
    dovecot
        .client(&user)
        .append(INBOX, &note_message("LS-S1"), None);
    let out = ws.run_env(&["sync"], &[("EINGANG_LOG", "trace")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.exported().len(), 1);
    for text in [stderr(&out), stdout(&out)] {
        assert!(
            !text.contains("pa\\ss") && !text.contains("S3cr3t"),
            "password in the log"
        );
    }
    let db = ws.store_bytes();
    assert!(
        !String::from_utf8_lossy(&db).contains("S3cr3t"),
        "password in the store"
    );
}

#[test]
fn reprocess_moves_a_failed_message_back_and_the_next_pass_imports_it() {
    let dovecot = Dovecot::shared();
    let (ws, mbox) = mailbox(dovecot, "reprocess", "");
    mbox.append(
        INBOX,
        &message(
            "neu@acme-grosshandel.de",
            "new-sender@example.com",
            "lieferschein-2026-11.csv",
            "text/csv",
            &acme_csv(),
        ),
        None,
    );
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(mbox.count(ERROR), 1);
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    // The fix: Acme's new sender goes into its format file.
    let format = std::fs::read_to_string(ws.path("formats/acme.toml")).unwrap();
    std::fs::write(
        ws.path("formats/acme.toml"),
        format.replace("senders = [", "senders = [\"neu@acme-grosshandel.de\", "),
    )
    .unwrap();
    let out = ws.run(&["reprocess", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("put back into Lieferscheine/Eingang"),
        "{}",
        stdout(&out)
    );
    assert_eq!(mbox.count(ERROR), 0);
    assert_eq!(mbox.count(INBOX), 1);
    let out = ws.run(&["sync"]);
    assert!(
        stderr(&out).contains("mail: imported 1, rejected 0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mbox.count(ARCHIVE), 1);
    assert_eq!(ws.exported().len(), 2);
    // Once reprocessed, it is no longer a failed item.
    assert_eq!(
        ws.run(&["reprocess", &id.to_string()]).status.code(),
        Some(1)
    );
}

#[test]
fn connection_mistakes_are_told_in_an_admins_words_without_long_waits() {
    let dovecot = Dovecot::shared();
    let user = new_user("wording");
    let ca = dovecot::shared_certificates().0.clone();
    let reach = |tls, port| Reach {
        tls,
        port,
        ca: ca.clone(),
    };
    let check = |reach: &Reach<'_>, extra: &str| {
        let ws = workspace(&user, reach, extra);
        let started = std::time::Instant::now();
        let out = ws.run(&["check"]);
        (stdout(&out), started.elapsed())
    };
    // Implicit TLS on the plain port: the server answers in plain text at once.
    let (text, took) = check(&reach("implicit", dovecot.imap_port), "");
    assert!(text.contains("the server answered without TLS"), "{text}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // STARTTLS on the TLS port: the server waits for a TLS hello, eingang for a greeting.
    let (text, took) = check(&reach("starttls", dovecot.imaps_port), "");
    assert!(
        text.contains("seems to expect TLS from the first byte; use tls = \"implicit\""),
        "{text}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    // A certificate of another CA: what to give.
    let (other, _, _) = dovecot::certificates();
    let (text, _) = check(
        &Reach {
            tls: "implicit",
            port: dovecot.imaps_port,
            ca: other,
        },
        "",
    );
    assert!(text.contains("give that certificate as ca_file"), "{text}");
    // A wrong password: the server's words, no library dump, and what to check.
    let ws = workspace(&user, &Reach::implicit(dovecot), "");
    std::fs::write(ws.path("password"), "falsch\n").unwrap();
    let text = stdout(&ws.run(&["check"]));
    assert!(text.contains("refused: [AUTHENTICATIONFAILED]"), "{text}");
    assert!(text.contains("(check user and password)"), "{text}");
    assert!(
        !text.contains("code: None") && !text.contains("info: Some"),
        "{text}"
    );
}
