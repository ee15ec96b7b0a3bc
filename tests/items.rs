//! `eingang items`: the ledger newest first, against what the store holds, also after a
//! reprocess; and `status`, whose counts add up.

mod support;

use support::{Workspace, opentrans, stderr, stdout};

fn items_json(ws: &Workspace, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["items", "--json"];
    all.extend_from_slice(args);
    let out = ws.run(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("items --json")
}

fn status_of(ws: &Workspace, source: &str) -> serde_json::Value {
    let out = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == source)
        .cloned()
        .unwrap()
}

/// received = archived + failed + handled + pending, per source.
fn assert_counts_add_up(ws: &Workspace) {
    let out = ws.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in status["sources"].as_array().unwrap() {
        let n = |k: &str| s[k].as_i64().unwrap();
        assert_eq!(
            n("received"),
            n("archived") + n("failed") + n("handled") + n("pending"),
            "{s}"
        );
    }
}

#[test]
fn items_lists_the_ledger_newest_first_with_reason_place_and_reprocess_line() {
    let ws = Workspace::new("");
    ws.drop_file("in", "ls.xml", &opentrans("LS-I1", "1"));
    assert!(ws.run(&["sync"]).status.success());
    ws.drop_file("in", "kaputt.xml", b"<broken");
    assert!(ws.run(&["sync"]).status.success());
    let (good, bad) = (
        ws.query_i64("SELECT id FROM items WHERE file_name = 'ls.xml'"),
        ws.query_i64("SELECT id FROM items WHERE file_name = 'kaputt.xml'"),
    );

    let out = ws.run(&["items"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(&format!("{bad}  ")), "{text}");
    assert!(lines[0].contains("  drop  failed  kaputt.xml"), "{text}");
    assert!(
        lines[1].starts_with("    reason: kaputt.xml: not well-formed XML"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("    lies in: ") && lines[2].ends_with("fehler/kaputt.xml"),
        "{text}"
    );
    let again = format!(
        "eingang --config {} reprocess {bad}",
        ws.path("eingang.toml").display()
    );
    assert_eq!(lines[3], format!("    {again}"));
    assert!(lines[4].starts_with(&format!("{good}  ")), "{text}");
    assert!(lines[4].contains("  drop  archived  ls.xml"), "{text}");
    assert!(lines[5].ends_with("archiv/ls.xml"), "{text}");
    assert!(!text.contains(&format!("reprocess {good}")), "{text}");

    // The JSON agrees with the store, row for row.
    let json = items_json(&ws, &[]);
    assert_eq!(json["total"], 2);
    let rows = json["items"].as_array().unwrap();
    assert_eq!(rows[0]["id"], bad);
    assert_eq!(rows[0]["state"], "failed");
    assert_eq!(rows[0]["outcome"], "rejected");
    assert_eq!(rows[0]["reprocess"], again);
    assert_eq!(
        rows[0]["reason"].as_str().unwrap(),
        ws.query_text(&format!("SELECT reason FROM items WHERE id = {bad}"))
            .unwrap()
    );
    assert_eq!(rows[1]["state"], "archived");
    assert_eq!(rows[1]["documents"].as_array().unwrap().len(), 1);
    assert_eq!(rows[1]["reprocess"], serde_json::Value::Null);

    // --failed, --source, --limit, and the --config of the reprocess line.
    let failed = items_json(&ws, &["--failed"]);
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["items"][0]["id"], bad);
    assert_eq!(items_json(&ws, &["--source", "import"])["total"], 0);
    let limited = ws.run(&["items", "--limit", "1"]);
    assert_eq!(
        stdout(&limited)
            .lines()
            .filter(|l| !l.starts_with(' '))
            .count(),
        1
    );
    assert!(stderr(&limited).contains("1 of 2 items shown; --limit 2 shows all"));
    assert_counts_add_up(&ws);
}

#[test]
fn after_a_reprocess_items_shows_the_put_back_item_and_status_counts_it_once() {
    let ws = Workspace::new("");
    ws.drop_file("in", "ls.xml", b"<broken");
    assert!(ws.run(&["sync"]).status.success());
    let first = ws.query_i64("SELECT id FROM items");
    assert_eq!(status_of(&ws, "drop")["failed"], 1);
    // The supplier's fixed file replaces the broken one; reprocess puts it back.
    std::fs::write(ws.path("fehler/ls.xml"), opentrans("LS-R9", "2")).unwrap();
    let out = ws.run(&["reprocess", &first.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = items_json(&ws, &[]);
    assert_eq!(json["items"][0]["state"], "reprocessed");
    assert!(
        json["items"][0]["lies_in"]
            .as_str()
            .unwrap()
            .ends_with("in/ls.xml"),
        "{json}"
    );
    assert_eq!(json["items"][0]["reprocess"], serde_json::Value::Null);
    assert_eq!(items_json(&ws, &["--failed"])["total"], 0);
    // Waiting in the drop folder, it is received and pending, once.
    let drop = status_of(&ws, "drop");
    assert_eq!(
        (drop["received"].as_i64(), drop["pending"].as_i64()),
        (Some(1), Some(1))
    );
    assert_counts_add_up(&ws);

    assert!(ws.run(&["sync"]).status.success());
    let json = items_json(&ws, &[]);
    assert_eq!(json["total"], 2);
    let newest = &json["items"][0];
    assert_eq!(newest["state"], "archived");
    assert_eq!(newest["file_name"], "ls.xml");
    assert_eq!(json["items"][1]["id"], first);
    assert_eq!(json["items"][1]["state"], "reprocessed");
    let drop = status_of(&ws, "drop");
    assert_eq!(
        (
            drop["received"].as_i64(),
            drop["archived"].as_i64(),
            drop["failed"].as_i64(),
            drop["pending"].as_i64()
        ),
        (Some(1), Some(1), Some(0), Some(0)),
        "{drop}"
    );
    assert_counts_add_up(&ws);
    let text = stdout(&ws.run(&["status"]));
    assert!(
        text.contains("drop: received 1, archived 1, failed 0, pending 0, last error: none"),
        "{text}"
    );
}

#[test]
fn items_escapes_control_characters_from_outside() {
    let ws = Workspace::new("");
    ws.drop_file("in", "ls\u{1b}[2J\u{202e}lmx.xml", b"<broken\x1b[31m");
    assert!(ws.run(&["sync"]).status.success());
    let out = ws.run(&["items"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains('\u{202e}'), "{text:?}");
    assert!(text.contains("ls\\x1b[2J\\xe2\\x80\\xaelmx.xml"), "{text}");
}

#[test]
fn hash_password_reads_stdin_and_refuses_an_empty_one() {
    let ws = Workspace::new("");
    let hash = |input: &str| ws.run_with_input(&["hash-password"], input.as_bytes());
    let out = hash("geheim\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let phc = stdout(&out);
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert_eq!(phc.lines().count(), 1);
    assert_ne!(stdout(&hash("geheim\n")), phc, "the salt is random");
    let empty = hash("\n");
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("empty password"),
        "{}",
        stderr(&empty)
    );
}
