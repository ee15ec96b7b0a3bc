//! One owner per store (DESIGN.md promise 9): a second daemon on a SQLite store refuses (on a
//! PostgreSQL store it is welcome: `tests/daemons.rs`), and `sync`, `reprocess` and `import`
//! never work an inbox while a daemon does: the first two hand their work to it, `import`
//! refuses.

mod support;

use std::process::{Child, Stdio};
use std::time::Duration;

use support::{Workspace, opentrans, stderr, stdout, wait_until};

/// A workspace whose drop source passes once at start, then only when asked.
fn workspace() -> Workspace {
    only_asked(Workspace::new(""))
}

fn only_asked(ws: Workspace) -> Workspace {
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    std::fs::write(
        ws.path("eingang.toml"),
        config.replace(
            "settle = \"1s\"",
            "settle = \"1s\"\nschedule = \"every 1h\"",
        ),
    )
    .unwrap();
    ws
}

fn daemon(ws: &Workspace) -> Child {
    let log = std::fs::File::create(ws.path("run.log")).unwrap();
    let child = ws
        .command(&["run"], &[])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let holds = wait_until(Duration::from_secs(10), || {
        ws.store_holder()
            .is_some_and(|t| t == format!("{} run", child.id()))
    });
    assert!(holds, "the daemon never took the store");
    // Its first pass, over an empty inbox, is done once the source is recorded.
    assert!(wait_until(Duration::from_secs(10), || {
        ws.try_query_text("SELECT COUNT(*) FROM source_state WHERE last_ok IS NOT NULL")
            .is_ok_and(|n| n.as_deref() == Some("1"))
    }));
    child
}

#[test]
fn a_second_daemon_on_one_store_refuses_and_names_the_first() {
    let ws = only_asked(Workspace::sqlite(""));
    let mut first = daemon(&ws);
    let started = std::time::Instant::now();
    let second = ws.run(&["run"]);
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(started.elapsed() < Duration::from_secs(5));
    let said = stderr(&second);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("eingang run (process {})", first.id())),
        "{}",
        stderr(&second)
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first daemon was disturbed"
    );
    ws.drop_file("in", "ls.xml", &opentrans("LS-O1", "1"));
    let synced = ws.run(&["sync"]);
    assert!(synced.status.success(), "{}", stderr(&synced));
    assert_eq!(ws.files("archiv"), ["ls.xml"]);
    support::stop(&mut first);
}

#[test]
fn sync_while_the_daemon_runs_is_handed_to_it_and_nothing_is_done_twice() {
    let ws = workspace();
    let mut running = daemon(&ws);
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-S1", "1"));
    ws.drop_file("in", "ls-2.xml", &opentrans("LS-S2", "1"));
    ws.drop_file("in", "kaputt.xml", b"<broken");
    // Two commands at once: both are answered by the daemon's passes.
    let other = ws
        .command(&["sync"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = ws.run(&["sync"]);
    let other = other.wait_with_output().unwrap();
    support::stop(&mut running);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(other.status.success(), "{}", stderr(&other));
    assert!(
        stderr(&out).contains(&format!(
            "eingang run (process {}) works this store: asking it for a pass now",
            running.id()
        )),
        "{}",
        stderr(&out)
    );
    let handled = |s: &str| {
        s.contains("drop: imported 2, rejected 1") || s.contains("drop: imported 0, rejected 0")
    };
    assert!(handled(&stderr(&out)), "{}", stderr(&out));
    assert!(handled(&stderr(&other)), "{}", stderr(&other));
    assert_eq!(ws.files("archiv"), ["ls-1.xml", "ls-2.xml"]);
    assert_eq!(ws.files("fehler"), ["kaputt.xml", "kaputt.xml.error.txt"]);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 3);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 1);
}

#[test]
fn reprocess_while_the_daemon_runs_is_handed_to_it() {
    let ws = workspace();
    ws.drop_file("in", "ls.xml", b"<broken");
    assert!(ws.run(&["sync"]).status.success());
    let id = ws.query_i64("SELECT id FROM items");
    let mut running = daemon(&ws);
    std::fs::write(ws.path("fehler/ls.xml"), opentrans("LS-R1", "1")).unwrap();
    let out = ws.run(&["reprocess", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("item {id}: put back into ")),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("asking it to put the items back"));
    assert!(ws.files("fehler").is_empty(), "{:?}", ws.files("fehler"));
    let synced = ws.run(&["sync"]);
    support::stop(&mut running);
    assert!(synced.status.success(), "{}", stderr(&synced));
    assert_eq!(ws.files("archiv"), ["ls.xml"]);
    let again = ws.run(&["reprocess", &id.to_string()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("not a failed item"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn import_while_the_daemon_runs_refuses() {
    let ws = workspace();
    let mut running = daemon(&ws);
    let file = ws.path("ls.xml");
    std::fs::write(&file, opentrans("LS-I1", "1")).unwrap();
    let out = ws.run(&["import", file.to_str().unwrap()]);
    support::stop(&mut running);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("works this store; drop the files into a folder it watches"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 0);
}

#[test]
fn two_syncs_at_once_without_a_daemon_take_turns() {
    let ws = workspace();
    for n in 0..20 {
        ws.drop_file(
            "in",
            &format!("ls-{n}.xml"),
            &opentrans(&format!("LS-T{n}"), "1"),
        );
    }
    let first = ws
        .command(&["sync"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = ws.run(&["sync"]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(ws.files("archiv").len(), 20);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 20);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 20);
}
