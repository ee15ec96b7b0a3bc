//! `eingang store copy --to URL` (CONTRACT.md, "Several daemons on PostgreSQL") against the
//! harness's real PostgreSQL: a SQLite store filled by a real `sync` and `import` goes into an
//! empty database cell for cell, bytes and all; a second copy into it is refused and changes
//! nothing; the copy gives new rows fresh ids; a store in use, or a password in the URL, is
//! refused before the database is touched. The source is a SQLite store whatever
//! `EINGANG_TEST_STORE` says: that is what the command reads.

mod support;

use std::time::Duration;

use support::postgres::{Postgres, query};
use support::smtp::SmtpServer;
use support::{Workspace, fixture, opentrans, stderr, stdout, wait_until};

/// Every byte value once: a file no format reads, kept byte for byte for its notice.
fn every_byte() -> Vec<u8> {
    (0..=255u8).collect()
}

/// A table's rows as text, sorted: integers in decimal, bytes as PostgreSQL's `\x` hex.
type Rows = Vec<Vec<Option<String>>>;

/// Every table of the SQLite store with its columns, in the store's own order.
fn tables(ws: &Workspace) -> Vec<(String, Vec<String>)> {
    let conn = rusqlite::Connection::open(ws.path("eingang.db")).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|name| {
            let columns = conn
                .prepare(&format!("PRAGMA table_info({name})"))
                .unwrap()
                .query_map([], |r| r.get(1))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (name, columns)
        })
        .collect()
}

fn sqlite_rows(ws: &Workspace, table: &str, columns: &[String]) -> Rows {
    use rusqlite::types::Value;
    let conn = rusqlite::Connection::open(ws.path("eingang.db")).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
        .unwrap();
    let mut rows: Rows = stmt
        .query_map([], |r| {
            (0..columns.len())
                .map(|i| {
                    Ok(match r.get::<_, Value>(i)? {
                        Value::Null => None,
                        Value::Integer(n) => Some(n.to_string()),
                        Value::Real(x) => Some(x.to_string()),
                        Value::Text(t) => Some(t),
                        Value::Blob(b) => Some(format!(
                            "\\x{}",
                            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                        )),
                    })
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.sort();
    rows
}

fn postgres_rows(url: &str, table: &str, columns: &[String]) -> Rows {
    let mut rows = query(url, &format!("SELECT {} FROM {table}", columns.join(", "))).unwrap();
    rows.sort();
    rows
}

/// Every table of the copy, as `postgres_rows`.
fn dump(url: &str, tables: &[(String, Vec<String>)]) -> Vec<Rows> {
    tables
        .iter()
        .map(|(t, c)| postgres_rows(url, t, c))
        .collect()
}

fn count(url: &str, sql: &str) -> i64 {
    query(url, sql).unwrap()[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// `eingang.toml` with its `[store]` pointed at `url`, as `pg.toml` beside it.
fn postgres_config(ws: &Workspace, url: &str) -> String {
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    let moved = config.replace(
        "[store]\npath = \"eingang.db\"\n",
        &format!("[store]\nurl = \"{url}\"\n"),
    );
    assert_ne!(moved, config, "the config names its SQLite store");
    std::fs::write(ws.path("pg.toml"), moved).unwrap();
    "pg.toml".to_owned()
}

/// A store as a site has it after some weeks: delivery notes and an order with its update
/// (which supersedes it), items that failed with their kept bytes, a burst summary that went
/// out, a notice still pending, hand-offs done and pending, kept originals, source health.
fn filled_store(smtp: &SmtpServer) -> Workspace {
    let ws = Workspace::sqlite(&format!(
        "[[connector]]\nname = \"erp-files\"\nkind = \"dir\"\npath = \"export\"\n{}",
        smtp.notify_section("burst = 1\n")
    ));
    std::fs::create_dir_all(ws.path("export")).unwrap();
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-C1", "12.5"));
    ws.drop_file("in", "kaputt.bin", &every_byte());
    ws.drop_file("in", "kaputt.xml", b"<broken");
    let synced = ws.run(&["sync"]);
    assert!(synced.status.success(), "{}", stderr(&synced));
    assert!(
        smtp.wait_for(1, Duration::from_secs(10)).len() == 1,
        "the burst summary went out"
    );
    std::fs::create_dir_all(ws.path("batch")).unwrap();
    std::fs::write(ws.path("batch/ls-2.xml"), opentrans("LS-C2", "3")).unwrap();
    std::fs::write(
        ws.path("batch/bestellung.xml"),
        fixture("standard/cxml/order-request.xml"),
    )
    .unwrap();
    std::fs::write(
        ws.path("batch/update.xml"),
        fixture("standard/cxml/order-request-update.xml"),
    )
    .unwrap();
    std::fs::write(ws.path("batch/zzz.bin"), [0xff, 0x00, 0xfe, b'\n']).unwrap();
    let imported = ws.run(&["import", "batch"]);
    assert_eq!(imported.status.code(), Some(1), "{}", stderr(&imported));
    let source = |sql: &str| ws.query_i64(sql);
    assert_eq!(source("SELECT COUNT(*) FROM documents"), 4);
    assert_eq!(
        source("SELECT COUNT(*) FROM documents WHERE superseded_by IS NOT NULL"),
        1
    );
    assert_eq!(
        source("SELECT COUNT(*) FROM outbox WHERE summary_id IS NOT NULL"),
        2
    );
    assert_eq!(
        source("SELECT COUNT(*) FROM outbox WHERE state = 'pending'"),
        1
    );
    assert_eq!(
        source("SELECT COUNT(*) FROM handoff WHERE state = 'pending'"),
        3
    );
    assert_eq!(
        source("SELECT COUNT(*) FROM handoff WHERE state = 'delivered'"),
        1
    );
    assert_eq!(source("SELECT COUNT(*) FROM outbox_original"), 1);
    assert!(source("SELECT COUNT(*) FROM item_original") >= 4);
    ws
}

#[test]
fn a_filled_store_arrives_cell_for_cell_and_takes_new_rows_under_fresh_ids() {
    let smtp = SmtpServer::start();
    let ws = filled_store(&smtp);
    let tables = tables(&ws);
    let status_before = ws.run(&["status", "--json"]);
    let export_before = ws.run(&["export", "--jsonl"]);
    let url = Postgres::shared().fresh_database("copy");

    let out = ws.run(&["store", "copy", "--to", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    for (table, _) in tables.iter().filter(|(t, _)| t != "item_original_total") {
        let rows = ws.query_i64(&format!("SELECT COUNT(*) FROM {table}"));
        assert!(
            printed
                .lines()
                .any(|l| l == format!("{table}: {rows} rows")),
            "no line for {table}: {printed}"
        );
    }
    for (table, columns) in &tables {
        assert_eq!(
            postgres_rows(&url, table, columns),
            sqlite_rows(&ws, table, columns),
            "table {table} differs"
        );
    }
    let kept = query(
        &url,
        "SELECT encode(o.bytes, 'hex') FROM outbox_original o JOIN items i ON i.id = o.item_id
         WHERE i.file_name = 'zzz.bin'",
    )
    .unwrap();
    assert_eq!(kept[0][0].as_deref(), Some("ff00fe0a"));

    // What people see of the store is the same on the copy.
    let config = postgres_config(&ws, &url);
    let status_after = ws.run(&["--config", &config, "status", "--json"]);
    assert!(status_after.status.success(), "{}", stderr(&status_after));
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).expect("status JSON")
    };
    let mut shared = json(&status_after);
    let daemons = shared
        .as_object_mut()
        .and_then(|o| o.remove("daemons"))
        .expect("a shared store lists its daemons");
    assert_eq!(daemons, serde_json::json!([]), "none runs yet");
    assert_eq!(shared, json(&status_before));
    let export_after = ws.run(&["--config", &config, "export", "--jsonl"]);
    assert_eq!(stdout(&export_after), stdout(&export_before));

    // A new item, document, line, notice and hand-off each get an id past the copied ones.
    let max = |table: &str| count(&url, &format!("SELECT COALESCE(MAX(id), 0) FROM {table}"));
    let before: Vec<i64> = ["items", "documents", "lines", "outbox"]
        .iter()
        .map(|t| max(t))
        .collect();
    std::fs::create_dir_all(ws.path("later")).unwrap();
    std::fs::write(ws.path("later/ls-3.xml"), opentrans("LS-C3", "1")).unwrap();
    std::fs::write(ws.path("later/kaputt-3.xml"), b"<nope").unwrap();
    let later = ws.run(&["--config", &config, "import", "later"]);
    assert_eq!(later.status.code(), Some(1), "{}", stderr(&later));
    assert!(
        stderr(&later).contains("imported 1, rejected 1"),
        "{}",
        stderr(&later)
    );
    let new_items: Vec<i64> = query(&url, "SELECT id FROM items ORDER BY id")
        .unwrap()
        .iter()
        .rev()
        .take(2)
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(new_items, [before[0] + 2, before[0] + 1]);
    assert_eq!(max("documents"), before[1] + 1);
    assert_eq!(max("lines"), before[2] + 1);
    assert_eq!(max("outbox"), before[3] + 1);
    assert_eq!(
        count(
            &url,
            &format!(
                "SELECT COUNT(*) FROM handoff WHERE document_id = {}",
                before[1] + 1
            )
        ),
        1
    );
}

#[test]
fn a_second_copy_into_the_filled_database_is_refused_and_changes_nothing() {
    let smtp = SmtpServer::start();
    let ws = filled_store(&smtp);
    let tables = tables(&ws);
    let url = Postgres::shared().fresh_database("copy_twice");
    let first = ws.run(&["store", "copy", "--to", &url]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let copied = dump(&url, &tables);

    let again = ws.run(&["store", "copy", "--to", &url]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let said = stderr(&again);
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    assert!(
        errors[0].starts_with("error: store copy: the target is not empty (table "),
        "{said}"
    );
    assert!(stdout(&again).is_empty(), "{}", stdout(&again));
    assert_eq!(dump(&url, &tables), copied);
}

#[test]
fn a_store_worked_by_a_daemon_is_not_copied() {
    let ws = Workspace::sqlite("");
    let url = Postgres::shared().fresh_database("copy_busy");
    let mut daemon = ws.spawn_logged(&["run"], "run.log");
    assert!(
        wait_until(Duration::from_secs(10), || {
            ws.store_holder()
                .is_some_and(|h| h == format!("{} run", daemon.id()))
        }),
        "the daemon never took the store"
    );
    let out = ws.run(&["store", "copy", "--to", &url]);
    support::stop(&mut daemon);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "error: store copy: eingang run (process {}) works ",
            daemon.id()
        )),
        "{said}"
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ),
        0,
        "the target was touched"
    );
}

#[test]
fn a_password_goes_beside_the_url_never_inside_it() {
    let ws = Workspace::sqlite("");
    ws.drop_file("in", "ls.xml", &opentrans("LS-P1", "1"));
    assert!(ws.run(&["sync"]).status.success());
    let url = Postgres::shared().fresh_database("copy_password");
    let inside = url.replace("postgres@", "postgres:geheim@");
    let out = ws.run(&["store", "copy", "--to", &inside]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("url carries a password"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("geheim"), "{}", stderr(&out));
    let unset = ws.run(&[
        "store",
        "copy",
        "--to",
        &url,
        "--password-env",
        "EINGANG_TEST_UNSET_PASSWORD",
    ]);
    assert_eq!(unset.status.code(), Some(2), "{}", stderr(&unset));
    assert!(
        stderr(&unset).contains("EINGANG_TEST_UNSET_PASSWORD is not set"),
        "{}",
        stderr(&unset)
    );
    // The test server trusts every login, so a given password is simply sent along.
    let given = ws.run_env(
        &[
            "store",
            "copy",
            "--to",
            &url,
            "--password-env",
            "EINGANG_TEST_DB_PASSWORD",
        ],
        &[("EINGANG_TEST_DB_PASSWORD", "geheim")],
    );
    assert_eq!(given.status.code(), Some(0), "{}", stderr(&given));
    assert_eq!(count(&url, "SELECT COUNT(*) FROM documents"), 1);
}
