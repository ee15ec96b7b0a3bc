//! Storms, sized for CI (RELIABILITY.md scenarios 1 and 9, and the same storm for the drop
//! folder and the FTP source): hundreds of numbered items, about 10 % invalid and 5 % the
//! delivery note of an earlier item in new bytes, put into a source while `eingang run` is
//! killed with SIGKILL at random (or talks through a proxy that cuts and delays at random),
//! then one last run until quiet. The oracle (`support/storm.rs`) then checks what DESIGN.md
//! promises, exactly: nothing lost, nothing placed twice (O1); no document twice (O2); every
//! item in the right folder (O3); one notice per rejection, none for an import (O5); the store
//! intact and every ledger row decided and placed, with the bytes that were put in (O7).
//!
//! The storms run on a SQLite store whatever `EINGANG_TEST_STORE` says: the oracle reads the
//! store file. What they promise on a PostgreSQL store shared by several daemons (kills,
//! freezes, a cut link, the database gone) is in `tests/daemons.rs`.
//!
//! Every storm is seeded: the seed is printed (the harness shows it when a test fails) and
//! `EINGANG_CHAOS_SEED` repeats the same kill times, item mix and faults (the machine's timing
//! still varies, so a repeat hits the same windows only roughly). A failing storm keeps its
//! workspace (store and `run.log`) in the temp folder and says where.
//!
//! Besides the storms: self-tests of the oracle and of the transcript check (so that neither
//! passes vacuously), and one deterministic test per failure the storms found, each named
//! after the promise it shows broken.

#[path = "support/chaos_proxy.rs"]
mod chaos_proxy;
#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/storm.rs"]
mod storm;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use chaos_proxy::ChaosProxy;
use dovecot::{Caps, Client, Dovecot, PASSWORD, new_user};
use storm::{Folder, NoticeRule, Planned, Rng, Seen, Shape, try_query};
use support::Workspace;
use support::smtp::SmtpServer;

/// The server names of the configured folders `Eingang`, `Archiv`, `Fehler`: this Dovecot
/// keeps every folder below `INBOX.`.
const INBOX: &str = "INBOX.Eingang";
const ARCHIVE: &str = "INBOX.Archiv";
const ERROR: &str = "INBOX.Fehler";

/// Notices one by one (no burst summary within a storm) and no source-down notice: the storm
/// is about one notice per rejection.
const NOTIFY_EXTRA: &str = "burst = 100000\ndown_after = \"1h\"\n";

const UNPLACED: &str = "SELECT COUNT(*) FROM items WHERE outcome IS NULL OR disposed_at IS NULL";
const PENDING_NOTICES: &str = "SELECT COUNT(*) FROM outbox WHERE state = 'pending'";

/// An Acme CSV (formats/acme.toml) with one delivery note of two lines.
fn acme_csv(number: &str) -> Vec<u8> {
    format!(
        "Lieferschein-Nr.;Lieferdatum;Ihre Bestellung;Pos.;Artikel-Nr.;Ihre Art.-Nr.;EAN;Bezeichnung;Menge;ME;Einzelpreis;Gesamt netto\r\n\
         {number};20.11.2026;PO-2026-1001;1;A-100;;;Schraube M6;12;Pck;4,95;59,40\r\n\
         {number};20.11.2026;PO-2026-1001;2;A-215;;;Duebel 8 mm;3;Stk;0,06;0,18\r\n"
    )
    .into_bytes()
}

/// An openTRANS 2.1 DISPATCHNOTIFICATION `number` with `lines` lines: big notes keep the
/// daemon busy long enough for kills to land inside its crash windows.
fn note(number: &str, lines: u32) -> Vec<u8> {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <DISPATCHNOTIFICATION xmlns=\"http://www.opentrans.org/XMLSchema/2.1\" xmlns:bmecat=\"http://www.bmecat.org/bmecat/2005\" version=\"2.1\">\n\
         <DISPATCHNOTIFICATION_HEADER><DISPATCHNOTIFICATION_INFO>\
         <DISPATCHNOTIFICATION_ID>{number}</DISPATCHNOTIFICATION_ID>\
         <DISPATCHNOTIFICATION_DATE>2026-11-20</DISPATCHNOTIFICATION_DATE>\
         </DISPATCHNOTIFICATION_INFO></DISPATCHNOTIFICATION_HEADER>\n<DISPATCHNOTIFICATION_ITEM_LIST>\n"
    );
    for line in 1..=lines {
        xml.push_str(&format!(
            "<DISPATCHNOTIFICATION_ITEM><LINE_ITEM_ID>{line}</LINE_ITEM_ID>\
             <PRODUCT_ID><bmecat:SUPPLIER_PID>A-{line:04}</bmecat:SUPPLIER_PID></PRODUCT_ID>\
             <QUANTITY>{}</QUANTITY><bmecat:ORDER_UNIT>C62</bmecat:ORDER_UNIT>\
             <ORDER_REFERENCE><ORDER_ID>PO-1001</ORDER_ID><LINE_ITEM_ID>{line}</LINE_ITEM_ID></ORDER_REFERENCE>\
             </DISPATCHNOTIFICATION_ITEM>\n",
            line % 17 + 1
        ));
    }
    xml.push_str("</DISPATCHNOTIFICATION_ITEM_LIST>\n</DISPATCHNOTIFICATION>\n");
    xml.into_bytes()
}

/// How many lines the note of item `seq` has: 1 to 400, the same for every run of a seed's
/// plan because it only depends on the seq.
fn lines_of(seq: u32) -> u32 {
    Rng::new(u64::from(seq)).between(1, 400) as u32
}

/// The openTRANS note `number` sent once more, in new bytes.
fn resent_note(number: &str, seq: u32) -> Vec<u8> {
    let mut note = note(number, 3);
    note.extend_from_slice(format!("<!-- sent again as item {seq} -->\n").as_bytes());
    note
}

/// Line ends as IMAP has them: a server turns bare LF into CRLF (RFC 3501 §2.2), and the
/// stored sha256 is compared with these bytes.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 20);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Item `seq` as a message, its note 1 to 400 lines long.
fn mail(seq: u32, shape: Shape, number: Option<&str>) -> Vec<u8> {
    message_of(seq, shape, number, lines_of(seq))
}

/// Item `seq` as a message of a few KiB (a note of one line): a proxy that holds back chunks
/// at random would take minutes over big ones.
fn small_mail(seq: u32, shape: Shape, number: Option<&str>) -> Vec<u8> {
    message_of(seq, shape, number, 1)
}

/// Item `seq` as a message: `X-Test-Seq` and a Message-ID that carry the seq, one attachment.
fn message_of(seq: u32, shape: Shape, number: Option<&str>, lines: u32) -> Vec<u8> {
    let number = number.unwrap_or_default();
    let (from, name, content_type, body) = match shape {
        Shape::Note => (
            "lieferant@example.com",
            format!("{number}.xml"),
            "application/xml",
            note(number, lines),
        ),
        Shape::AcmeCsv => (
            "lieferschein@acme-grosshandel.de",
            format!("lieferschein-{seq:06}.csv"),
            "text/csv",
            acme_csv(number),
        ),
        Shape::Unroutable => (
            "fremd@unbekannt.example",
            format!("export-{seq:06}.csv"),
            "text/csv",
            acme_csv(&format!("LS-X{seq:06}")),
        ),
        Shape::Broken => (
            "lieferant@example.com",
            format!("kaputt-{seq:06}.xml"),
            "application/xml",
            b"<DISPATCHNOTIFICATION><oops></DISPATCHNOTIFICATION>".to_vec(),
        ),
        Shape::Resent => (
            "lieferant@example.com",
            format!("{number}.xml"),
            "application/xml",
            resent_note(number, seq),
        ),
    };
    let mut out = format!(
        "From: Lieferant <{from}>\r\nTo: lager@example.com\r\nSubject: Lieferung {seq}\r\n\
         Message-ID: <chaos-{seq:06}@eingang.test>\r\nX-Test-Seq: {seq}\r\n\
         Date: Fri, 20 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n--b0\r\nContent-Type: text/plain\r\n\r\n\
         Anbei die Lieferung {seq}.\r\n--b0\r\nContent-Type: {content_type}\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\r\n--b0--\r\n");
    crlf(&out)
}

/// A workspace with one IMAP source `mail` for `user` on 127.0.0.1:`port`, the Acme format,
/// and notices to `smtp`.
fn imap_workspace(
    user: &str,
    port: u16,
    tls: &str,
    schedule: &str,
    smtp: &SmtpServer,
) -> Workspace {
    let ws = Workspace {
        dir: tempfile::tempdir().expect("temp dir"),
        store_url: None,
    };
    std::fs::create_dir_all(ws.path("formats")).expect("formats");
    ws.with_format("acme");
    std::fs::write(ws.path("ca.pem"), &dovecot::shared_certificates().0).expect("ca");
    std::fs::write(ws.path("password"), format!("{PASSWORD}\n")).expect("password");
    let config = format!(
        "formats = \"formats\"\n[store]\npath = \"eingang.db\"\n\
         [[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n\
         ca_file = \"ca.pem\"\nuser = \"{user}\"\npassword_file = \"password\"\n\
         inbox = \"Eingang\"\narchive = \"Archiv\"\nerror = \"Fehler\"\nschedule = \"{schedule}\"\n{}",
        smtp.notify_section(NOTIFY_EXTRA)
    );
    std::fs::write(ws.path("eingang.toml"), config).expect("config");
    ws
}

/// The messages still to arrive. Whoever takes the next burst appends it while holding the
/// lock, so they arrive in seq order (a duplicate after its original).
struct Feed<'a> {
    mbox: &'a Client,
    rest: std::sync::Mutex<&'a [Vec<u8>]>,
}

impl<'a> Feed<'a> {
    fn new(mbox: &'a Client, messages: &'a [Vec<u8>]) -> Feed<'a> {
        Feed {
            mbox,
            rest: std::sync::Mutex::new(messages),
        }
    }

    /// Appends the next `most` messages (fewer at the end); false once all have arrived.
    fn burst(&self, most: u64) -> bool {
        let mut rest = self.rest.lock().unwrap();
        let take = (most as usize).min(rest.len());
        let (burst, later) = rest.split_at(take);
        if !burst.is_empty() {
            self.mbox.append_all(INBOX, burst);
        }
        *rest = later;
        !rest.is_empty()
    }

    /// Mail that arrives while the daemon runs: bursts of 1 to `most`, `pauses` apart, until
    /// all came.
    fn trickle(&self, rng: &mut Rng, most: u64, pauses: (Duration, Duration)) {
        while self.burst(rng.between(1, most)) {
            std::thread::sleep(rng.duration(pauses.0, pauses.1));
        }
    }
}

/// The seq of a ledger row of a message: its Message-ID carries it.
fn seq_of_message(message_id: Option<&str>, _file: Option<&str>) -> Option<u32> {
    message_id.and_then(storm::seq_in_name)
}

/// The oracle's view of a mailbox after a storm.
fn mailbox_seen(mbox: &Client, db: &Path, smtp: &SmtpServer) -> Seen {
    let mut seen = Seen {
        inbox_left: mbox
            .messages(INBOX)
            .iter()
            .map(|(uid, raw, flags)| {
                format!(
                    "UID {uid} seq {:?} flags {flags:?}",
                    storm::seq_in_message(raw)
                )
            })
            .collect(),
        ..Seen::default()
    };
    for (folder, name) in [(Folder::Archive, ARCHIVE), (Folder::Error, ERROR)] {
        for (uid, raw, _) in mbox.messages(name) {
            seen.placed.push((
                storm::seq_in_message(&raw),
                folder,
                format!("{name} UID {uid}"),
            ));
        }
    }
    storm::read_store(&mut seen, db, seq_of_message, &smtp.received());
    seen
}

fn mix(plan: &[Planned]) -> String {
    let count = |e: storm::Expect| plan.iter().filter(|p| p.expect == e).count();
    format!(
        "{} items: {} valid, {} invalid, {} duplicates",
        plan.len(),
        count(storm::Expect::Valid),
        count(storm::Expect::Invalid),
        count(storm::Expect::Duplicate)
    )
}

/// RELIABILITY.md scenario 1: 500 messages arrive while `eingang run` (IDLE, notices by SMTP)
/// is killed 30 times with SIGKILL at random 0.2–3 s and restarted within a second.
#[test]
fn a_sigkill_storm_loses_nothing_and_imports_nothing_twice() {
    const TEST: &str = "a_sigkill_storm_loses_nothing_and_imports_nothing_twice";
    const N: u32 = 500;
    const KILLS: usize = 30;
    const PRELOAD: usize = 60;
    let started = Instant::now();
    let seed = storm::seed(TEST);
    let rng = Rng::new(seed);
    let dovecot = Dovecot::start(Caps::Full);
    let smtp = SmtpServer::start();
    let user = new_user("storm");
    let ws = imap_workspace(&user, dovecot.imaps_port, "implicit", "idle", &smtp);
    let out = ws.run(&["check", "--create-folders"]);
    assert!(
        out.status.success(),
        "check --create-folders: {}",
        support::stdout(&out)
    );
    let mbox = dovecot.client(&user);
    let plan = storm::plan(N, &mut rng.fork(1), mail);
    let messages: Vec<Vec<u8>> = plan.iter().map(|p| p.bytes.clone()).collect();
    mbox.append_all(INBOX, &messages[..PRELOAD]);
    let feed = Feed::new(&mbox, &messages[PRELOAD..]);
    let pauses = (Duration::from_millis(500), Duration::from_millis(3000));
    let kills = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| feed.trickle(&mut rng.fork(2), 15, pauses));
        // Mail also piles up while the daemon is down: the restart finds a backlog.
        let mut arrivals = rng.fork(5);
        let kills = storm::sigkill_storm(&ws, &mut rng.fork(3), KILLS, || {
            if arrivals.chance(0.7) {
                feed.burst(arrivals.between(1, 25));
            }
        });
        feeder.join().expect("feeder");
        kills
    });
    let db = ws.path("eingang.db");
    let last = storm::run_until_quiet(&ws, Duration::from_secs(120), || {
        mbox.try_search(INBOX, "ALL").is_some_and(|u| u.is_empty())
            && try_query(&db, UNPLACED) == Some(0)
            && try_query(&db, PENDING_NOTICES) == Some(0)
    });
    let mut seen = mailbox_seen(&mbox, &db, &smtp);
    seen.extra.extend(last.clone().err());
    let found = storm::violations(&plan, &seen, NoticeRule { max_copies: 2 });
    let figures = format!(
        "{}; {kills}; last run {}; {} notices; {:.1} s in all",
        mix(&plan),
        storm::took(&last),
        seen.notices.len(),
        started.elapsed().as_secs_f64()
    );
    storm::assert_promises(TEST, seed, &ws, &found, &figures);
}

/// RELIABILITY.md scenario 9: 300 messages arrive while `eingang run` (a pass every second,
/// one connection per pass) reaches Dovecot through a proxy that cuts a share of the
/// connections after a random byte count and holds back a tenth of the chunks for up to 2 s,
/// in both directions. Besides the oracle, the proxy's transcripts show that eingang never sent
/// an IMAP command while an earlier one was unanswered: not on a healthy connection (no
/// pipelining) and so not after a cut left a command unanswered on a dead one.
#[test]
fn cuts_and_delays_on_the_imap_link_lose_nothing_and_import_nothing_twice() {
    const TEST: &str = "cuts_and_delays_on_the_imap_link_lose_nothing_and_import_nothing_twice";
    const N: u32 = 300;
    const PRELOAD: usize = 20;
    let started = Instant::now();
    let seed = storm::seed(TEST);
    let rng = Rng::new(seed);
    let dovecot = Dovecot::start(Caps::Full);
    let smtp = SmtpServer::start();
    let proxy = ChaosProxy::start(
        dovecot.imap_port,
        chaos_proxy::Plan {
            seed: rng.fork(4).next_u64(),
            cut_share: 1.0,
            // Mostly cuts within the client's commands, some within the server's answers.
            // With a mean of 128 KiB from the server, a backlog that grew during a backoff is
            // cut in most fetches and the storm stalls (see the 64 KiB test below); lower it
            // once eingang's batches adapt.
            budget: chaos_proxy::Budget::Exponential {
                mean_up: 1024.0,
                mean_down: 512.0 * 1024.0,
            },
            delay_share: 0.10,
            max_delay: Duration::from_secs(2),
            cut_after_client_sends: None,
        },
    );
    let user = new_user("chaos");
    let ws = imap_workspace(&user, proxy.port, "none", "every 1s", &smtp);
    let mbox = dovecot.client(&user);
    for folder in [INBOX, ARCHIVE, ERROR] {
        mbox.create(folder);
    }
    let plan = storm::plan(N, &mut rng.fork(1), small_mail);
    let messages: Vec<Vec<u8>> = plan.iter().map(|p| p.bytes.clone()).collect();
    mbox.append_all(INBOX, &messages[..PRELOAD]);
    let db = ws.path("eingang.db");
    let feed = Feed::new(&mbox, &messages[PRELOAD..]);
    // Pauses long enough that passes end: every pass is a connection of its own.
    let pauses = (Duration::from_millis(1000), Duration::from_millis(3000));
    let last = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| feed.trickle(&mut rng.fork(2), 25, pauses));
        storm::run_until_quiet(&ws, Duration::from_secs(150), || {
            feeder.is_finished()
                && mbox.try_search(INBOX, "ALL").is_some_and(|u| u.is_empty())
                && try_query(&db, UNPLACED) == Some(0)
                && try_query(&db, PENDING_NOTICES) == Some(0)
        })
    });
    let mut seen = mailbox_seen(&mbox, &db, &smtp);
    seen.extra.extend(last.clone().err());
    let findings = chaos_proxy::imap_findings(&proxy.transcripts());
    if findings.cuts == 0 {
        seen.extra
            .push("the proxy cut no connection: the storm tested nothing".to_owned());
    }
    seen.extra.extend(
        findings
            .violations
            .iter()
            .map(|v| format!("transcript: {v}")),
    );
    let found = storm::violations(&plan, &seen, NoticeRule { max_copies: 1 });
    let figures = format!(
        "{}; proxy: {findings}, {} chunks held back; {}; {} notices; {:.1} s in all",
        mix(&plan),
        proxy.delays(),
        storm::took(&last),
        seen.notices.len(),
        started.elapsed().as_secs_f64()
    );
    storm::assert_promises(TEST, seed, &ws, &found, &figures);
}

/// The transcript check itself: a client that sends its next command before the answer to
/// the last one reached it is caught, and so is one that goes on after a cut left a command
/// unanswered; an orderly conversation with IDLE and a literal is not.
#[test]
fn the_transcript_check_catches_a_command_sent_before_its_predecessor_was_answered() {
    use chaos_proxy::{Chunk, Transcript, Way};
    let chunk = |at: u64, way: Way, text: &str| Chunk {
        at,
        way,
        bytes: text.as_bytes().to_vec(),
        forwarded: true,
    };
    let orderly = Transcript {
        number: 0,
        chunks: vec![
            chunk(0, Way::Down, "* OK ready\r\n"),
            chunk(1, Way::Up, "A1 LOGIN u {3}\r\n"),
            chunk(2, Way::Down, "+ go ahead\r\n"),
            chunk(3, Way::Up, "p\r\n\r\n"),
            chunk(4, Way::Down, "A1 OK logged in\r\n"),
            chunk(5, Way::Up, "A2 UID FETCH 1 BODY.PEEK[]\r\n"),
            chunk(
                6,
                Way::Down,
                "* 1 FETCH (UID 1 BODY[] {14}\r\nA2 OK not me\r\n)\r\n",
            ),
            chunk(7, Way::Down, "A2 OK done\r\n"),
            chunk(8, Way::Up, "A3 IDLE\r\n"),
            chunk(9, Way::Down, "+ idling\r\n"),
            chunk(10, Way::Up, "DONE\r\n"),
            chunk(11, Way::Down, "A3 OK idle done\r\n"),
        ],
        cut: None,
    };
    let findings = chaos_proxy::imap_findings(std::slice::from_ref(&orderly));
    assert!(findings.violations.is_empty(), "{:?}", findings.violations);
    assert_eq!(findings.commands, 3);
    assert!(findings.unanswered.is_empty(), "{:?}", findings.unanswered);
    // Sent at 2, answered at 3: pipelined.
    let pipelined = Transcript {
        number: 1,
        chunks: vec![
            chunk(0, Way::Up, "A1 UID MOVE 1 Archiv\r\n"),
            chunk(2, Way::Up, "A2 UID SEARCH ALL\r\n"),
            chunk(3, Way::Down, "A1 OK moved\r\nA2 OK searched\r\n"),
        ],
        cut: None,
    };
    // The move's answer was lost in the cut at 1; the client went on on the dead connection.
    let dead = Transcript {
        number: 2,
        chunks: vec![
            chunk(0, Way::Up, "A1 UID MOVE 1 Archiv\r\n"),
            Chunk {
                forwarded: false,
                ..chunk(2, Way::Up, "A2 UID SEARCH ALL\r\n")
            },
        ],
        cut: Some((1, Way::Down)),
    };
    let findings = chaos_proxy::imap_findings(&[pipelined, dead]);
    assert_eq!(findings.violations.len(), 2, "{:?}", findings.violations);
    assert!(findings.violations[0].contains("A2 UID SEARCH sent while A1 UID MOVE was unanswered"));
    assert!(
        findings.violations[1].contains("(for good)"),
        "{:?}",
        findings.violations
    );
    assert_eq!(findings.cuts, 1);
    assert_eq!(findings.sent_after_cut, 1);
    assert_eq!(findings.unanswered.get("UID MOVE"), Some(&1));
}

/// A link that resets every connection after 64 KiB from the server must still let a backlog
/// of small messages through (DESIGN.md promise 3, "transient is not permanent", and the
/// liveness bound of RELIABILITY.md scenario 9): 120 messages of about 1.2 KiB each (150 KiB
/// in all), some 50 of them fit into one connection. eingang fetches the whole inbox as one
/// batch, so today every fetch is cut, nothing is ever committed, and the pause between passes
/// doubles.
#[test]
fn a_link_cut_after_every_64_kib_still_drains_a_backlog_of_small_messages() {
    const N: u32 = 120;
    let dovecot = Dovecot::start(Caps::Full);
    let smtp = SmtpServer::start();
    let proxy = ChaosProxy::start(
        dovecot.imap_port,
        chaos_proxy::Plan {
            seed: 1,
            cut_share: 1.0,
            budget: chaos_proxy::Budget::Fixed {
                up: u64::MAX,
                down: 64 * 1024,
            },
            delay_share: 0.0,
            max_delay: Duration::ZERO,
            cut_after_client_sends: None,
        },
    );
    let user = new_user("cut64k");
    let ws = imap_workspace(&user, proxy.port, "none", "every 1s", &smtp);
    let mbox = dovecot.client(&user);
    for folder in [INBOX, ARCHIVE, ERROR] {
        mbox.create(folder);
    }
    let messages: Vec<Vec<u8>> = (1..=N)
        .map(|seq| small_mail(seq, Shape::Note, Some(&storm::note_number(seq))))
        .collect();
    let total: usize = messages.iter().map(Vec::len).sum();
    mbox.append_all(INBOX, &messages);
    let mut daemon = storm::spawn_run(&ws);
    let drained = support::wait_until(Duration::from_secs(45), || {
        mbox.try_search(INBOX, "ALL").is_some_and(|u| u.is_empty())
    });
    support::stop(&mut daemon);
    let findings = chaos_proxy::imap_findings(&proxy.transcripts());
    let archived = mbox.count(ARCHIVE);
    assert!(
        drained,
        "{archived} of {N} messages ({total} bytes) archived within 45 s; proxy: {findings}; \
         log: {}",
        std::fs::read_to_string(ws.path("run.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("source failed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(archived, N as usize);
    assert!(findings.violations.is_empty(), "{:?}", findings.violations);
}

/// The name of item `seq` in a drop folder or on an FTP server.
fn file_name(seq: u32, shape: Shape) -> String {
    match shape {
        Shape::Note | Shape::Resent => format!("ls-{seq:06}.xml"),
        Shape::AcmeCsv => format!("lieferschein-{seq:06}.csv"),
        Shape::Unroutable => format!("bestand-{seq:06}.csv"),
        Shape::Broken => format!("kaputt-{seq:06}.xml"),
    }
}

/// Item `seq` as a file: the note itself, the CSV, or the broken file.
fn file_bytes(seq: u32, shape: Shape, number: Option<&str>) -> Vec<u8> {
    let number = number.unwrap_or_default();
    match shape {
        Shape::Note => note(number, lines_of(seq)),
        Shape::AcmeCsv => acme_csv(number),
        Shape::Unroutable => format!("Artikel;Menge\r\nA-1;{seq}\r\n").into_bytes(),
        Shape::Broken => {
            format!("<DISPATCHNOTIFICATION><oops>{seq}</DISPATCHNOTIFICATION>").into_bytes()
        }
        Shape::Resent => resent_note(number, seq),
    }
}

/// The files still to be dropped into `inbox`, in seq order. Most arrive as a hidden temporary
/// name renamed into place (as an upload tool does), some are written in place at once, and
/// one in ten is written in place slowly: 3–6 pieces 100–400 ms apart (under the settle time
/// of 1 s), by a writer of its own, while the next files arrive.
struct FileFeed<'a> {
    inbox: std::path::PathBuf,
    rest: std::sync::Mutex<(&'a [Planned], Rng)>,
    slow: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    slowly_written: std::sync::atomic::AtomicUsize,
}

impl<'a> FileFeed<'a> {
    fn new(inbox: &Path, plan: &'a [Planned], rng: Rng) -> FileFeed<'a> {
        FileFeed {
            inbox: inbox.to_owned(),
            rest: std::sync::Mutex::new((plan, rng)),
            slow: std::sync::Mutex::new(Vec::new()),
            slowly_written: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Drops the next `most` files; false once all are dropped (slow writers may still write).
    fn burst(&self, most: u64) -> bool {
        let mut guard = self.rest.lock().unwrap();
        let (rest, rng) = &mut *guard;
        let take = (most as usize).min(rest.len());
        let (burst, later) = rest.split_at(take);
        for p in burst {
            let name = file_name(p.seq, p.shape);
            let path = self.inbox.join(&name);
            let roll = rng.unit();
            if roll < 0.10 {
                let pieces = rng.between(3, 6) as usize;
                let gaps: Vec<Duration> = (0..pieces)
                    .map(|_| rng.duration(Duration::from_millis(100), Duration::from_millis(400)))
                    .collect();
                let bytes = p.bytes.clone();
                self.slowly_written
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.slow.lock().unwrap().push(std::thread::spawn(move || {
                    write_slowly(&path, &bytes, &gaps)
                }));
            } else if roll < 0.45 {
                std::fs::write(&path, &p.bytes).expect("drop a file");
            } else {
                let part = self.inbox.join(format!(".{name}.part"));
                std::fs::write(&part, &p.bytes).expect("write the temporary file");
                std::fs::rename(&part, &path).expect("rename it into place");
            }
        }
        *rest = later;
        !rest.is_empty()
    }

    /// Files that arrive while the daemon runs: bursts of 1–15, 0.5–3 s apart.
    fn trickle(&self, rng: &mut Rng) {
        while self.burst(rng.between(1, 15)) {
            std::thread::sleep(
                rng.duration(Duration::from_millis(500), Duration::from_millis(3000)),
            );
        }
    }

    /// Waits for the slow writers.
    fn finish(&self) {
        for writer in self.slow.lock().unwrap().drain(..) {
            writer.join().expect("slow writer");
        }
    }
}

fn write_slowly(path: &Path, bytes: &[u8], gaps: &[Duration]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create a slowly written file");
    let size = bytes.len().div_ceil(gaps.len()).max(1);
    for (piece, gap) in bytes.chunks(size).zip(gaps) {
        file.write_all(piece).expect("write a piece");
        file.flush().expect("flush");
        std::thread::sleep(*gap);
    }
}

/// The seq of a ledger row of a file: its name carries it.
fn seq_of_file(_message_id: Option<&str>, file: Option<&str>) -> Option<u32> {
    file.and_then(storm::seq_in_name)
}

/// The oracle's view of three folders on disk (a drop folder's, or an FTP server's root):
/// every file but the `.error.txt` notes is an item; every item in the error folder has its
/// note and every note its item; what lies in archive or error has the bytes that were
/// dropped.
fn folders_seen(folders: [&Path; 3], plan: &[Planned], db: &Path, smtp: &SmtpServer) -> Seen {
    let [inbox, archive, error] = folders;
    let mut seen = Seen {
        inbox_left: support::files_in(inbox),
        ..Seen::default()
    };
    let dropped: std::collections::HashMap<u32, &Planned> =
        plan.iter().map(|p| (p.seq, p)).collect();
    for (folder, dir) in [(Folder::Archive, archive), (Folder::Error, error)] {
        let names = support::files_in(dir);
        for name in &names {
            if let Some(item) = name.strip_suffix(".error.txt") {
                if folder == Folder::Archive || !names.iter().any(|n| n == item) {
                    seen.extra
                        .push(format!("note {name} in {folder:?} without its item"));
                }
                continue;
            }
            if folder == Folder::Error && !names.contains(&format!("{name}.error.txt")) {
                seen.extra.push(format!(
                    "{name} lies in the error folder without its .error.txt note"
                ));
            }
            let seq = storm::seq_in_name(name);
            if let Some(p) = seq.and_then(|s| dropped.get(&s)) {
                let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
                if bytes != p.bytes {
                    seen.extra.push(format!(
                        "O7: {folder:?}/{name}: {} bytes, {} were dropped",
                        bytes.len(),
                        p.bytes.len()
                    ));
                }
            }
            seen.placed
                .push((seq, folder, format!("{folder:?}/{name}")));
        }
    }
    storm::read_store(&mut seen, db, seq_of_file, &smtp.received());
    seen
}

/// The SIGKILL storm over a drop folder: 300 files arrive (a tenth of them written slowly)
/// while `eingang run` is killed 25 times with SIGKILL at random 0.2–3 s and restarted within
/// a second.
#[test]
fn a_sigkill_storm_over_a_drop_folder_loses_nothing_and_imports_nothing_twice() {
    let smtp = SmtpServer::start();
    let ws = Workspace::sqlite(&smtp.notify_section(NOTIFY_EXTRA));
    storm_over_folders(
        "a_sigkill_storm_over_a_drop_folder_loses_nothing_and_imports_nothing_twice",
        FolderStorm {
            files: 300,
            kills: 25,
            preload: 40,
            quiet_within: Duration::from_secs(120),
        },
        &ws,
        &smtp,
        ws.path(""),
        || ws.files("in").is_empty(),
    );
}

/// The SIGKILL storm over an FTP inbox on a real vsftpd (explicit FTPS): 200 files arrive in
/// its inbox folder (a tenth written slowly) while `eingang run` (a pass every second, settle
/// 1 s) is killed 20 times with SIGKILL at random 0.2–3 s and restarted within a second.
#[test]
fn a_sigkill_storm_over_an_ftp_inbox_loses_nothing_and_imports_nothing_twice() {
    let smtp = SmtpServer::start();
    let server = support::ftp::FtpServer::start();
    let ws = Workspace::sqlite(&format!(
        "{}{}",
        server.source("edi", "schedule = \"every 1s\"\n"),
        smtp.notify_section(NOTIFY_EXTRA)
    ));
    storm_over_folders(
        "a_sigkill_storm_over_an_ftp_inbox_loses_nothing_and_imports_nothing_twice",
        FolderStorm {
            files: 200,
            kills: 20,
            preload: 30,
            quiet_within: Duration::from_secs(150),
        },
        &ws,
        &smtp,
        server.root(),
        || server.files("in").is_empty(),
    );
}

/// The size of a SIGKILL storm over a folder inbox.
struct FolderStorm {
    files: u32,
    kills: usize,
    /// Files in the inbox before the first start.
    preload: u64,
    /// How long the last, undisturbed run may take to finish.
    quiet_within: Duration,
}

/// Files arrive in `root/in` (in bursts, some written slowly) while `eingang run` is killed
/// with SIGKILL again and again; then one last run until the inbox is empty and nothing is
/// left unplaced or unsent; then the promises, checked against `in`, `archiv` and `fehler`
/// below `root`, the store and the notices that arrived.
fn storm_over_folders(
    test: &str,
    size: FolderStorm,
    ws: &Workspace,
    smtp: &SmtpServer,
    root: std::path::PathBuf,
    inbox_empty: impl Fn() -> bool,
) {
    let started = Instant::now();
    let seed = storm::seed(test);
    let rng = Rng::new(seed);
    ws.with_format("acme");
    let plan = storm::plan(size.files, &mut rng.fork(1), file_bytes);
    let feed = FileFeed::new(&root.join("in"), &plan, rng.fork(6));
    feed.burst(size.preload);
    let kills = std::thread::scope(|scope| {
        let feeder = scope.spawn(|| feed.trickle(&mut rng.fork(2)));
        let mut arrivals = rng.fork(5);
        let kills = storm::sigkill_storm(ws, &mut rng.fork(3), size.kills, || {
            if arrivals.chance(0.7) {
                feed.burst(arrivals.between(1, 25));
            }
        });
        feeder.join().expect("feeder");
        feed.finish();
        kills
    });
    let db = ws.path("eingang.db");
    let last = storm::run_until_quiet(ws, size.quiet_within, || {
        inbox_empty()
            && try_query(&db, UNPLACED) == Some(0)
            && try_query(&db, PENDING_NOTICES) == Some(0)
    });
    let folders = [root.join("in"), root.join("archiv"), root.join("fehler")];
    let mut seen = folders_seen(folders.each_ref().map(|p| p.as_path()), &plan, &db, smtp);
    seen.extra.extend(last.clone().err());
    let found = storm::violations(&plan, &seen, NoticeRule { max_copies: 2 });
    let figures = format!(
        "{} ({} written slowly); {kills}; last run {}; {} notices; {:.1} s in all",
        mix(&plan),
        feed.slowly_written
            .load(std::sync::atomic::Ordering::Relaxed),
        storm::took(&last),
        seen.notices.len(),
        started.elapsed().as_secs_f64()
    );
    storm::assert_promises(test, seed, ws, &found, &figures);
}

/// A failed file keeps its `.error.txt` (DESIGN.md, "a failed file gets `<name>.error.txt`
/// beside it"; the note is what tells people why and how to reprocess) even when eingang is
/// interrupted between moving it and writing the note: here the FTP control connection
/// breaks right after the rename reached the server (`RNTO`), as a SIGKILL at that instant
/// would leave it. The next pass finds the file in the error folder and must write the
/// missing note, not only record where the file lies. (Found by the FTP storm.)
#[test]
fn a_rejected_ftp_file_gets_its_error_note_even_if_interrupted_after_its_move() {
    let server = support::ftp::FtpServer::start();
    let proxy = ChaosProxy::start(
        server.port,
        chaos_proxy::Plan {
            seed: 1,
            cut_share: 0.0,
            budget: chaos_proxy::Budget::Fixed { up: 0, down: 0 },
            delay_share: 0.0,
            max_delay: Duration::ZERO,
            cut_after_client_sends: Some("RNTO /fehler/"),
        },
    );
    // Plaintext (loopback) so that the proxy sees the commands; data connections go to
    // vsftpd directly (PASV).
    let ws = Workspace::sqlite(&format!(
        "[[source]]\nname = \"edi\"\nkind = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         user = \"{}\"\npassword_file = \"{}\"\ninbox = \"/in\"\narchive = \"/archiv\"\nerror = \"/fehler\"\n\
         settle = \"1s\"\n",
        proxy.port,
        support::ftp::USER,
        server.dir.path().join("password").display()
    ));
    std::fs::write(
        server.root().join("in/kaputt.xml"),
        b"<DISPATCHNOTIFICATION><oops></DISPATCHNOTIFICATION>",
    )
    .expect("drop a broken file");
    let first = ws.run(&["sync", "--source", "edi"]);
    assert!(
        proxy.fired(),
        "no rename into /fehler was sent: {}",
        support::stderr(&first)
    );
    assert_eq!(
        server.files("fehler"),
        ["kaputt.xml"],
        "moved before the link broke"
    );
    let second = ws.run(&["sync", "--source", "edi"]);
    assert!(second.status.success(), "{}", support::stderr(&second));
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
    assert_eq!(
        server.files("fehler"),
        ["kaputt.xml", "kaputt.xml.error.txt"],
        "the rejected file lies in the error folder without its note"
    );
}

/// The same for a drop folder: killed after its failed file was moved into the error folder
/// and before the note was written (the state is made here from a kill after the commit and
/// the move `dispose` does first), the next pass must write the note.
#[test]
fn a_rejected_dropped_file_gets_its_error_note_even_if_killed_after_its_move() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Workspace::sqlite("");
    ws.drop_file("in", "kaputt.xml", b"<DISPATCHNOTIFICATION><oops>");
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_commit")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    // What `dispose` did before the kill: the move, not yet the note.
    std::fs::rename(ws.path("in/kaputt.xml"), ws.path("fehler/kaputt.xml")).expect("move");
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE disposed_at IS NULL"),
        0
    );
    assert_eq!(
        ws.files("fehler"),
        ["kaputt.xml", "kaputt.xml.error.txt"],
        "the rejected file lies in the error folder without its note"
    );
}

/// The oracle itself: quiet on a storm that kept every promise, and naming each broken one.
#[test]
fn the_oracle_names_every_broken_promise() {
    use storm::{Expect, NoticeSeen, Row};
    let item = |seq: u32, expect, shape, number: Option<&str>| Planned {
        seq,
        expect,
        shape,
        number: number.map(str::to_owned),
        bytes: format!("item {seq}").into_bytes(),
    };
    let plan = vec![
        item(1, Expect::Valid, Shape::Note, Some("LS-1")),
        item(2, Expect::Invalid, Shape::Broken, None),
        item(3, Expect::Duplicate, Shape::Resent, Some("LS-1")),
        item(4, Expect::Valid, Shape::AcmeCsv, Some("LS-4")),
    ];
    let row = |seq: u32, outcome: &str, reason: &str| Row {
        id: i64::from(seq),
        seq: Some(seq),
        outcome: Some(outcome.to_owned()),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        disposed: true,
        sha256: storm::sha256_hex(format!("item {seq}").as_bytes()),
    };
    let notice = |seq: u32, id: &str| NoticeSeen {
        kind: "rejected".to_owned(),
        outbox_id: Some(i64::from(seq)),
        message_id: id.to_owned(),
        seq: Some(seq),
        attempts: 3,
    };
    let good = || Seen {
        inbox_left: Vec::new(),
        placed: vec![
            (Some(1), Folder::Archive, "a/1".into()),
            (Some(2), Folder::Error, "e/2".into()),
            (Some(3), Folder::Error, "e/3".into()),
            (Some(4), Folder::Archive, "a/4".into()),
        ],
        rows: vec![
            row(1, "imported", ""),
            row(2, "rejected", "kaputt.xml: not XML"),
            row(3, "rejected", "duplicate delivery note LS-1"),
            row(4, "imported", ""),
        ],
        documents: vec![("k1".into(), "LS-1".into()), ("k4".into(), "LS-4".into())],
        notices: vec![notice(2, "n2"), notice(3, "n3"), notice(3, "n3")],
        integrity: "ok".into(),
        extra: Vec::new(),
    };
    let rule = NoticeRule { max_copies: 2 };
    assert_eq!(
        storm::violations(&plan, &good(), rule),
        Vec::<String>::new()
    );
    let mut bad = good();
    bad.inbox_left.push("UID 9".into());
    bad.placed.retain(|(seq, _, _)| *seq != Some(4));
    bad.placed.push((Some(2), Folder::Archive, "a/2".into()));
    bad.rows[1].disposed = false;
    bad.rows[2].sha256 = "0".into();
    bad.documents.push(("k1".into(), "LS-1".into()));
    bad.notices = vec![notice(3, "n3"), notice(3, "n3b"), notice(1, "n1")];
    bad.integrity = "*** in database main ***".into();
    let found = storm::violations(&plan, &bad, rule).join("\n");
    for expected in [
        "O1: still in the inbox: UID 9",
        "O1: seq 4 is in neither archive nor error (lost)",
        "O1: seq 2 lies 2 times",
        "O7: ledger row 2 (seq Some(2)) is not placed",
        "O7: seq 3: stored sha256 differs",
        "O2: business key k1 is stored 2 times",
        "O2: 3 documents stored, 2 distinct delivery notes sent",
        "O5: rejected seq 2: no notice",
        "O5: rejected seq 3: 2 different notices",
        "O5: seq 1 was not rejected, yet 1 notices came",
        "O7: PRAGMA integrity_check",
    ] {
        assert!(found.contains(expected), "{expected:?} not in:\n{found}");
    }
    let mut thrice = good();
    thrice.notices.push(notice(3, "n3"));
    assert!(
        storm::violations(&plan, &thrice, rule)
            .join("\n")
            .contains("O5: rejected seq 3: 3 copies of its notice (one per recorded attempt")
    );
    let mut unrecorded = good();
    unrecorded.notices[1].attempts = 1;
    unrecorded.notices[2].attempts = 1;
    assert!(
        storm::violations(&plan, &unrecorded, rule)
            .join("\n")
            .contains("O5: rejected seq 3: 2 copies of its notice, 1 attempts recorded")
    );
}
