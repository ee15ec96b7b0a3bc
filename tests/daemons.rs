//! Several daemons on one PostgreSQL store (issue 17): each source is worked by exactly one
//! daemon at a time; a daemon that dies, freezes or loses the database gives its sources up
//! and the others take them within 30 seconds; a daemon that lost a source commits and moves
//! nothing for it again. Always on a real PostgreSQL (the harness starts it), whatever
//! `EINGANG_TEST_STORE` says.

#[path = "support/dovecot.rs"]
mod dovecot;
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::{Daemons, Workspace, dns_section, opentrans, wait_until};

/// What the issue asks: a dead daemon's sources are worked again within this.
const TAKEOVER: Duration = Duration::from_secs(30);
const BRANCHES: usize = 4;

/// A workspace with `BRANCHES` drop folders, `branch-1` …, on a fresh database of `server`.
fn branches(server: &Postgres, test: &str) -> Workspace {
    let ws = Workspace {
        dir: tempfile::tempdir().expect("temp dir"),
        store_url: Some(server.fresh_database(test)),
    };
    write_config(&ws, ws.store_url.as_deref().unwrap(), "eingang.toml");
    std::fs::create_dir_all(ws.path("formats")).unwrap();
    for n in 1..=BRANCHES {
        for folder in ["in", "archiv", "fehler"] {
            std::fs::create_dir_all(ws.path(&format!("{folder}-{n}"))).unwrap();
        }
    }
    ws
}

/// The config of `branches` with the store at `url`, written to `file`.
fn write_config(ws: &Workspace, url: &str, file: &str) {
    let mut config = format!(
        "formats = \"formats\"\n[store]\nurl = \"{url}\"\n{}",
        dns_section()
    );
    for n in 1..=BRANCHES {
        config.push_str(&format!(
            "[[source]]\nname = \"branch-{n}\"\nkind = \"dir\"\npath = \"in-{n}\"\n\
             archive = \"archiv-{n}\"\nerror = \"fehler-{n}\"\nsettle = \"1s\"\nrescan = \"2s\"\n"
        ));
    }
    std::fs::write(ws.path(file), config).unwrap();
}

/// `eingang run` with `config`, its log in `<name>.log` of the workspace (a pipe nobody reads
/// would stall it).
fn daemon(ws: &Workspace, name: &str, config: &str, fault: Option<&str>) -> Child {
    let log = std::fs::File::create(ws.path(&format!("{name}.log"))).unwrap();
    let mut cmd = ws.command(&["--config", config, "run"], &[]);
    if let Some(fault) = fault {
        cmd.env("EINGANG_FAULT", fault);
    }
    cmd.env("EINGANG_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn eingang run")
}

fn log_of(ws: &Workspace, name: &str) -> String {
    std::fs::read_to_string(ws.path(&format!("{name}.log"))).unwrap_or_default()
}

/// `status --json`: the owner's process id of each source (`None` while nobody owns it).
fn owners(ws: &Workspace) -> HashMap<String, Option<u32>> {
    let out = ws.run(&["status", "--json"]);
    assert!(out.status.success(), "status: {}", support::stderr(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    status["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            let pid = s["owner"]["pid"].as_u64().map(|p| p as u32);
            (s["name"].as_str().unwrap().to_owned(), pid)
        })
        .collect()
}

/// Waits until every source is owned by one of `pids`; returns who owns which.
fn all_owned_by(ws: &Workspace, pids: &[u32], within: Duration) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    let owned = wait_until(within, || {
        seen = owners(ws);
        seen.len() == BRANCHES && seen.values().all(|p| p.is_some_and(|p| pids.contains(&p)))
    });
    assert!(
        owned,
        "not every source owned by {pids:?} within {within:?}: {seen:?}"
    );
    seen.into_iter().map(|(s, p)| (s, p.unwrap())).collect()
}

/// Drops `count` delivery notes into every branch's inbox, numbered from `first`.
fn drop_notes(ws: &Workspace, first: usize, count: usize) {
    for n in 1..=BRANCHES {
        for i in first..first + count {
            let number = format!("LS-{n}-{i:04}");
            ws.drop_file(
                &format!("in-{n}"),
                &format!("{number}.xml"),
                &opentrans(&number, "2"),
            );
        }
    }
}

/// Waits until every branch has archived `count` files and nothing waits or failed; then the
/// store must hold exactly one document per file.
fn all_archived(ws: &Workspace, count: usize, within: Duration) {
    let done = wait_until(within, || {
        (1..=BRANCHES).all(|n| {
            ws.files(&format!("archiv-{n}")).len() == count
                && ws.files(&format!("in-{n}")).is_empty()
        })
    });
    let folders: Vec<(usize, usize, usize)> = (1..=BRANCHES)
        .map(|n| {
            (
                ws.files(&format!("in-{n}")).len(),
                ws.files(&format!("archiv-{n}")).len(),
                ws.files(&format!("fehler-{n}")).len(),
            )
        })
        .collect();
    assert!(
        done,
        "not all archived within {within:?} (inbox, archive, error): {folders:?}"
    );
    for n in 1..=BRANCHES {
        assert!(
            ws.files(&format!("fehler-{n}")).is_empty(),
            "branch-{n} rejected items"
        );
    }
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM documents") as usize,
        count * BRANCHES,
        "one document per file, none twice"
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM items WHERE outcome = 'imported'") as usize,
        count * BRANCHES,
        "one imported ledger row per file"
    );
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

/// Whether the process is stopped (SIGSTOP), as /proc tells.
fn is_frozen(child: &Child) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim().starts_with('T'))
        })
        .unwrap_or(false)
}

/// A takes every source before B starts; then they share them, half each, and status names
/// each source's owner.
#[test]
fn each_source_is_worked_by_one_daemon_and_status_names_it() {
    let server = Postgres::shared();
    let ws = branches(server, "one_owner");
    let mut daemons = Daemons(vec![daemon(&ws, "a", "eingang.toml", None)]);
    all_owned_by(&ws, &[daemons.0[0].id()], TAKEOVER);
    daemons.0.push(daemon(&ws, "b", "eingang.toml", None));
    let pids: Vec<u32> = daemons.0.iter().map(Child::id).collect();
    let mut shares = Vec::new();
    let shared = wait_until(Duration::from_secs(90), || {
        let owned = all_owned_by(&ws, &pids, TAKEOVER);
        shares = pids
            .iter()
            .map(|p| owned.values().filter(|o| *o == p).count())
            .collect();
        shares == [BRANCHES / 2, BRANCHES / 2]
    });
    assert!(shared, "A gives B its share: {shares:?}");

    drop_notes(&ws, 1, 6);
    all_archived(&ws, 6, Duration::from_secs(60));

    let out = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: HashSet<u64> = status["daemons"]
        .as_array()
        .expect("a shared store lists its daemons")
        .iter()
        .map(|d| d["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, pids.iter().map(|&p| u64::from(p)).collect());
    for source in status["sources"].as_array().unwrap() {
        assert!(
            source["owner"]["host"]
                .as_str()
                .is_some_and(|h| !h.is_empty()),
            "an owner names its host: {source}"
        );
    }
    let check = ws.run(&["check"]);
    let said = support::stdout(&check);
    assert!(check.status.success(), "check: {said}");
    assert!(
        said.contains("store: PostgreSQL ") && said.contains("2 daemon(s) working it"),
        "check tells the database and its daemons: {said}"
    );
    for child in &mut daemons.0 {
        assert!(support::stop(child).success());
    }
    assert!(
        owners(&ws).values().all(Option::is_none),
        "stopped daemons own nothing"
    );
}

#[test]
fn a_killed_daemons_sources_are_taken_over_within_30_seconds() {
    let server = Postgres::shared();
    let ws = branches(server, "killed");
    let mut daemons = Daemons(vec![daemon(&ws, "a", "eingang.toml", None)]);
    let a = daemons.0[0].id();
    all_owned_by(&ws, &[a], TAKEOVER);
    daemons.0.push(daemon(&ws, "b", "eingang.toml", None));
    let b = daemons.0[1].id();
    // B waits for A's sources; none is its own while A lives.
    std::thread::sleep(Duration::from_secs(3));
    assert!(owners(&ws).values().all(|p| *p == Some(a)), "A keeps them");

    signal(&daemons.0[0], libc::SIGKILL);
    let killed = Instant::now();
    all_owned_by(&ws, &[b], TAKEOVER);
    eprintln!("taken over {:?} after the kill", killed.elapsed());
    drop_notes(&ws, 1, 3);
    all_archived(&ws, 3, Duration::from_secs(60));
}

/// A freezes right after it committed a batch, before it moves it. B takes the source over
/// and moves what A committed; A, resumed, finds the source gone and moves nothing.
#[test]
fn a_frozen_daemon_loses_its_sources_and_commits_nothing_after_it_resumes() {
    let server = Postgres::shared();
    let ws = branches(server, "frozen");
    let mut daemons = Daemons(vec![daemon(
        &ws,
        "a",
        "eingang.toml",
        Some("freeze:after_commit"),
    )]);
    let a = daemons.0[0].id();
    all_owned_by(&ws, &[a], TAKEOVER);
    daemons.0.push(daemon(&ws, "b", "eingang.toml", None));
    let b = daemons.0[1].id();

    drop_notes(&ws, 1, 2);
    assert!(
        wait_until(Duration::from_secs(30), || is_frozen(&daemons.0[0])),
        "A never reached its commit"
    );
    let frozen = Instant::now();
    all_owned_by(&ws, &[b], TAKEOVER);
    eprintln!("taken over {:?} after the freeze", frozen.elapsed());
    all_archived(&ws, 2, Duration::from_secs(60));
    let rows = ws.query_i64("SELECT count(*) FROM items");

    signal(&daemons.0[0], libc::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(30), || log_of(&ws, "a")
            .contains("this daemon lost the source")),
        "A never noticed: {}",
        log_of(&ws, "a")
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM items"),
        rows,
        "A wrote nothing more"
    );
    all_archived(&ws, 2, Duration::from_secs(5));
    assert!(owners(&ws).values().all(|p| *p == Some(b)), "B keeps them");

    // B stops: A, alive again, takes everything over.
    assert!(support::stop(&mut daemons.0[1]).success());
    all_owned_by(&ws, &[a], TAKEOVER);
    drop_notes(&ws, 3, 1);
    all_archived(&ws, 3, Duration::from_secs(60));
}

/// The database goes away for a minute: every item stays where it is, and afterwards the
/// daemons take their sources again and carry on.
#[test]
fn the_daemons_carry_on_after_the_database_was_gone_for_a_minute() {
    let server = Postgres::start();
    let ws = branches(&server, "db_gone");
    let daemons = Daemons(vec![
        daemon(&ws, "a", "eingang.toml", None),
        daemon(&ws, "b", "eingang.toml", None),
    ]);
    let pids: Vec<u32> = daemons.0.iter().map(Child::id).collect();
    all_owned_by(&ws, &pids, TAKEOVER);
    drop_notes(&ws, 1, 2);
    all_archived(&ws, 2, Duration::from_secs(60));

    server.stop();
    drop_notes(&ws, 3, 2);
    std::thread::sleep(Duration::from_secs(60));
    for n in 1..=BRANCHES {
        assert_eq!(
            ws.files(&format!("in-{n}")).len(),
            2,
            "items wait in their inbox"
        );
        assert_eq!(ws.files(&format!("archiv-{n}")).len(), 2);
        assert!(
            ws.files(&format!("fehler-{n}")).is_empty(),
            "nothing rejected"
        );
    }
    server.resume();
    all_owned_by(&ws, &pids, TAKEOVER);
    all_archived(&ws, 4, Duration::from_secs(90));
    for (child, name) in daemons.0.iter().zip(["a", "b"]) {
        assert!(
            std::fs::read_to_string(format!("/proc/{}/stat", child.id())).is_ok(),
            "daemon {name} still runs"
        );
    }
}

/// A TCP relay to the database whose traffic can be swallowed, as by a cut cable: nothing
/// arrives, nothing is refused, no connection is closed.
struct Cable {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Cable {
    fn to(target: u16) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let is_cut = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let is_cut = is_cut.clone();
                    std::thread::spawn(move || relay(from, to, &is_cut));
                }
            }
        });
        Cable { port, cut }
    }
}

fn relay(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                if !cut.load(Ordering::Relaxed) {
                    let _ = to.shutdown(std::net::Shutdown::Both);
                }
                return;
            }
            Ok(n) if !cut.load(Ordering::Relaxed) => {
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
            Ok(_) => {}
        }
    }
}

/// A's link to the database is cut (B's is not): B takes A's sources within 30 seconds; when
/// the link comes back, A works nothing of them and nothing is stored twice.
#[test]
fn a_daemon_cut_off_from_the_database_gives_its_sources_up() {
    let server = Postgres::shared();
    let ws = branches(server, "cut");
    let url = ws.store_url.clone().unwrap();
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the port of the store's URL");
    let cable = Cable::to(port);
    write_config(
        &ws,
        &url.replace(&format!(":{port}/"), &format!(":{}/", cable.port)),
        "a.toml",
    );
    let mut daemons = Daemons(vec![daemon(&ws, "a", "a.toml", None)]);
    let a = daemons.0[0].id();
    all_owned_by(&ws, &[a], TAKEOVER);
    daemons.0.push(daemon(&ws, "b", "eingang.toml", None));
    let b = daemons.0[1].id();

    cable.cut.store(true, Ordering::Relaxed);
    let cut = Instant::now();
    all_owned_by(&ws, &[b], TAKEOVER);
    eprintln!("taken over {:?} after the cut", cut.elapsed());
    drop_notes(&ws, 1, 3);
    all_archived(&ws, 3, Duration::from_secs(60));
    let rows = ws.query_i64("SELECT count(*) FROM items");

    cable.cut.store(false, Ordering::Relaxed);
    drop_notes(&ws, 4, 1);
    all_archived(&ws, 4, Duration::from_secs(60));
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM items"),
        rows + BRANCHES as i64,
        "one ledger row per new file"
    );
    assert!(owners(&ws).values().all(|p| *p == Some(b)), "B keeps them");
    // A's calls into the swallowed link give up after their timeout; then it knows.
    assert!(
        wait_until(Duration::from_secs(90), || log_of(&ws, "a")
            .contains("this daemon lost the source")),
        "A never noticed: {}",
        log_of(&ws, "a")
    );
    assert!(
        support::stop(&mut daemons.0[0]).success(),
        "A stops cleanly"
    );
}

const MAILBOXES: usize = 6;
/// The folders of the mailboxes, by their server names.
const INBOX: &str = "INBOX.Lieferscheine.Eingang";
const ARCHIVE: &str = "INBOX.Lieferscheine.Archiv";
const ERROR: &str = "INBOX.Lieferscheine.Fehler";
const PER_MAILBOX: usize = 300;
const FOLDERS: usize = 2;
const PER_FOLDER: usize = 100;
/// Every 20th item is broken: rejected, told by a notice.
const BROKEN_EVERY: usize = 20;

fn is_broken(i: usize) -> bool {
    i.is_multiple_of(BROKEN_EVERY)
}

fn note_or_broken(number: &str, i: usize) -> Vec<u8> {
    if is_broken(i) {
        format!("<DISPATCHNOTIFICATION><broken {number}").into_bytes()
    } else {
        opentrans(number, "1")
    }
}

/// The sources of the big run: `MAILBOXES` IMAP mailboxes of `users` on `dovecot`, and
/// `FOLDERS` drop folders, with notices to `smtp`.
fn fleet_config(
    ws: &Workspace,
    dovecot: &dovecot::Dovecot,
    users: &[String],
    smtp: &support::smtp::SmtpServer,
) {
    std::fs::write(ws.path("ca.pem"), &dovecot::shared_certificates().0).unwrap();
    std::fs::write(ws.path("password"), format!("{}\n", dovecot::PASSWORD)).unwrap();
    let mut config = format!(
        "formats = \"formats\"\n{}{}{}",
        ws.store_section(),
        dns_section(),
        smtp.notify_section("")
    );
    for (n, user) in users.iter().enumerate() {
        config.push_str(&format!(
            "[[source]]\nname = \"mail-{n}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\n\
             tls = \"implicit\"\nca_file = \"ca.pem\"\nuser = \"{user}\"\npassword_file = \"password\"\n\
             inbox = \"Lieferscheine/Eingang\"\narchive = \"Lieferscheine/Archiv\"\n\
             error = \"Lieferscheine/Fehler\"\n",
            dovecot.imaps_port
        ));
    }
    for n in 1..=FOLDERS {
        config.push_str(&format!(
            "[[source]]\nname = \"branch-{n}\"\nkind = \"dir\"\npath = \"in-{n}\"\n\
             archive = \"archiv-{n}\"\nerror = \"fehler-{n}\"\nsettle = \"1s\"\nrescan = \"2s\"\n"
        ));
        for folder in ["in", "archiv", "fehler"] {
            std::fs::create_dir_all(ws.path(&format!("{folder}-{n}"))).unwrap();
        }
    }
    std::fs::create_dir_all(ws.path("formats")).unwrap();
    std::fs::write(ws.path("eingang.toml"), config).unwrap();
}

/// Waits until every source is owned by one of `pids`.
fn fleet_owned_by(ws: &Workspace, pids: &[u32], within: Duration) -> Duration {
    let start = Instant::now();
    let mut seen = HashMap::new();
    let owned = wait_until(within, || {
        seen = owners(ws);
        seen.len() == MAILBOXES + FOLDERS
            && seen.values().all(|p| p.is_some_and(|p| pids.contains(&p)))
    });
    assert!(
        owned,
        "not every source owned by {pids:?} within {within:?}: {seen:?}"
    );
    start.elapsed()
}

/// The run: three daemons, six mailboxes and two drop folders, 2000 items; one daemon
/// killed mid-drain, another frozen and resumed. Nothing lost, nothing twice, each notice
/// once, every source worked again within 30 s.
#[test]
fn three_daemons_drain_2000_items_through_a_kill_and_a_freeze() {
    let dovecot = dovecot::Dovecot::shared();
    let smtp = support::smtp::SmtpServer::start();
    let ws = Workspace {
        dir: tempfile::tempdir().expect("temp dir"),
        store_url: Some(Postgres::shared().fresh_database("fleet")),
    };
    let users: Vec<String> = (0..MAILBOXES)
        .map(|n| dovecot::new_user(&format!("fleet{n}")))
        .collect();
    fleet_config(&ws, dovecot, &users, &smtp);
    let out = ws.run(&["check", "--create-folders"]);
    assert!(out.status.success(), "check: {}", support::stdout(&out));

    let mut broken = 0;
    for (n, user) in users.iter().enumerate() {
        let messages: Vec<Vec<u8>> = (0..PER_MAILBOX)
            .map(|i| {
                let number = format!("M{n}-{i:04}");
                broken += usize::from(is_broken(i));
                support::message(
                    "lieferant@example.com",
                    &format!("{number}@example.com"),
                    &format!("{number}.xml"),
                    "application/xml",
                    &note_or_broken(&number, i),
                )
            })
            .collect();
        dovecot.client(user).append_all(INBOX, &messages);
    }
    for n in 1..=FOLDERS {
        for i in 0..PER_FOLDER {
            let number = format!("D{n}-{i:04}");
            broken += usize::from(is_broken(i));
            ws.drop_file(
                &format!("in-{n}"),
                &format!("{number}.xml"),
                &note_or_broken(&number, i),
            );
        }
    }
    let total = MAILBOXES * PER_MAILBOX + FOLDERS * PER_FOLDER;

    let mut daemons = Daemons(
        ["a", "b", "c"]
            .iter()
            .map(|name| daemon(&ws, name, "eingang.toml", None))
            .collect(),
    );
    let pids: Vec<u32> = daemons.0.iter().map(Child::id).collect();
    fleet_owned_by(&ws, &pids, TAKEOVER);
    let done = || ws.query_i64("SELECT count(*) FROM items WHERE disposed_at IS NOT NULL") as usize;
    assert!(
        wait_until(Duration::from_secs(120), || done() >= total / 5),
        "the drain never got going: {} of {total}",
        done()
    );

    // A daemon that owns something dies mid-drain.
    let owned = owners(&ws);
    let victim = (0..3)
        .find(|&i| owned.values().any(|p| *p == Some(pids[i])))
        .expect("someone owns something");
    signal(&daemons.0[victim], libc::SIGKILL);
    let alive: Vec<u32> = (0..3).filter(|&i| i != victim).map(|i| pids[i]).collect();
    let took = fleet_owned_by(&ws, &alive, TAKEOVER);
    eprintln!("after the kill, every source worked again within {took:?}");

    // Another freezes for a while and comes back.
    let frozen = (0..3).find(|&i| i != victim).unwrap();
    signal(&daemons.0[frozen], libc::SIGSTOP);
    let last: Vec<u32> = (0..3)
        .filter(|&i| i != victim && i != frozen)
        .map(|i| pids[i])
        .collect();
    let took = fleet_owned_by(&ws, &last, TAKEOVER);
    eprintln!("after the freeze, every source worked again within {took:?}");
    signal(&daemons.0[frozen], libc::SIGCONT);

    assert!(
        wait_until(Duration::from_secs(600), || done() == total),
        "not drained: {} of {total}",
        done()
    );
    for user in &users {
        let client = dovecot.client(user);
        assert_eq!(client.count(INBOX), 0, "{user}: inbox empty");
        let (archived, rejected) = (client.count(ARCHIVE), client.count(ERROR));
        assert_eq!(
            archived + rejected,
            PER_MAILBOX,
            "{user}: every message moved once"
        );
        assert_eq!(
            rejected,
            PER_MAILBOX.div_ceil(BROKEN_EVERY),
            "{user}: the broken ones"
        );
    }
    for n in 1..=FOLDERS {
        // Beside each rejected file lies its note (`<name>.error.txt`).
        let rejected = ws
            .files(&format!("fehler-{n}"))
            .iter()
            .filter(|f| !f.ends_with(".error.txt"))
            .count();
        let moved = ws.files(&format!("archiv-{n}")).len() + rejected;
        assert_eq!(moved, PER_FOLDER, "branch-{n}: every file moved once");
    }
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM documents") as usize,
        total - broken,
        "one document per good item, none twice"
    );
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM items WHERE outcome = 'rejected'") as usize,
        broken
    );

    // Each notice once: every rejection is in a notice that went out, and no mail came twice.
    assert!(
        wait_until(Duration::from_secs(120), || ws
            .query_i64("SELECT count(*) FROM outbox WHERE state = 'pending'")
            == 0),
        "notices still pending"
    );
    let received = smtp.received();
    let ids: HashSet<String> = received.iter().map(|m| m.message_id()).collect();
    assert_eq!(ids.len(), received.len(), "a notice came twice");
    assert_eq!(
        ws.query_i64("SELECT count(*) FROM outbox WHERE kind = 'rejected' AND state = 'sent'")
            as usize,
        broken,
        "every rejection told, by a mail of its own or in a summary"
    );
    let sent_mails = ws
        .query_i64("SELECT count(*) FROM outbox WHERE state = 'sent' AND summary_id IS NULL")
        as usize;
    assert_eq!(received.len(), sent_mails, "one mail per notice sent");
    for (i, child) in daemons.0.iter_mut().enumerate() {
        if i != victim {
            assert!(support::stop(child).success());
        }
    }
}
