//! The commands against CONTRACT.md: exit codes, stdout JSON and the one stderr line.

mod support;

use support::{Workspace, opentrans, stderr, stdout};

#[test]
fn parse_prints_the_documents_and_exits_0() {
    let ws = Workspace::new("");
    let file = ws.drop_file(".", "ls.xml", &opentrans("LS-4711", "12.000"));
    let out = ws.run(&["parse", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let doc = &json["documents"][0];
    assert_eq!(doc["kind"], "delivery_note");
    assert_eq!(doc["format"], "opentrans-2.1");
    assert_eq!(doc["number"], "LS-4711");
    assert_eq!(doc["date"], "2026-11-20");
    assert_eq!(doc["order_refs"], serde_json::json!(["PO-1001"]));
    assert_eq!(doc["lines"][0]["quantity"], "12");
    assert_eq!(doc["lines"][0]["order_line"], "3");
    // parse stores nothing.
    assert!(!ws.path("eingang.db").exists());
}

#[test]
fn parse_rejection_is_one_line_on_stderr_and_exit_1() {
    let ws = Workspace::new("");
    let file = ws.drop_file(".", "ls.xml", &opentrans("LS-1", "zwölf"));
    let out = ws.run(&["parse", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ls.xml: "), "{err}");
    assert!(err.contains("quantity"), "{err}");
}

#[test]
fn parse_usage_errors_exit_2() {
    let ws = Workspace::new("");
    assert_eq!(ws.run(&["parse"]).status.code(), Some(2));
    assert_eq!(
        ws.run(&["parse", "gibt-es-nicht.xml"]).status.code(),
        Some(2)
    );
    let file = ws.drop_file(".", "ls.csv", b"a;b");
    let out = ws.run(&["parse", file.to_str().unwrap(), "--supplier", "nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no such supplier format"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_option_works_after_the_command_and_bad_config_exits_2() {
    let ws = Workspace::new("");
    std::fs::write(
        ws.path("bad.toml"),
        "[[source]]\nname = \"x\"\nkind = \"ftp\"\nhost = \"ftp.example.com\"\ntls = \"none\"\n",
    )
    .unwrap();
    let out = ws.run(&["status", "--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.lines().all(|l| l.starts_with("error: config: ")),
        "{err}"
    );
    assert!(err.contains("loopback"), "{err}");
    let out = ws.run(&["--config", "bad.toml", "run"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn import_then_export_and_status() {
    let ws = Workspace::new("");
    std::fs::create_dir(ws.path("batch")).unwrap();
    ws.drop_file("batch", "a.xml", &opentrans("LS-A", "1"));
    ws.drop_file("batch", "b.xml", &opentrans("LS-B", "2"));
    let out = ws.run(&["import", "batch"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Files are not moved by import.
    assert_eq!(ws.files("batch"), ["a.xml", "b.xml"]);

    let out = ws.run(&["export"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["documents"].as_array().unwrap().len(), 2);
    let first_id = all["documents"][0]["id"].as_i64().unwrap();
    let out = ws.run(&["export", "--jsonl", "--since", &first_id.to_string()]);
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1);
    let doc: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(doc["number"], "LS-B");
    assert_eq!(doc["origin"]["source"], "import");

    ws.drop_file("batch", "c.xml", b"<kaputt");
    let out = ws.run(&["import", "batch/c.xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: c.xml: "), "{}", stderr(&out));

    let out = ws.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["documents"], 2);
    let import = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "import")
        .unwrap();
    assert_eq!(import["received"], 3);
    assert_eq!(import["failed"], 1);
    let drop = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "drop")
        .unwrap();
    assert_eq!(drop["pending"], 0);
}

#[test]
fn check_reports_each_folder_and_creates_missing_ones() {
    let ws = Workspace::new("");
    std::fs::remove_dir(ws.path("fehler")).unwrap();
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.contains("error folder") && l.contains("FAILED: missing")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("inbox folder") && l.ends_with(": ok")),
        "{text}"
    );
    let out = ws.run(&["check", "--create-folders"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(ws.path("fehler").is_dir());
}

#[test]
fn embedded_default_creates_the_drop_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eingang"))
        .current_dir(dir.path())
        .arg("sync")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for folder in ["Eingang", "Archiv", "Fehler"] {
        assert!(
            dir.path().join("eingang-data").join(folder).is_dir(),
            "{folder}"
        );
    }
    assert!(dir.path().join("eingang-data/eingang.db").is_file());
}

fn cxml_fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/standard/cxml")
            .join(name),
    )
    .unwrap()
}

#[test]
fn cxml_update_and_delete_supersede_the_stored_order_and_a_resent_new_is_a_duplicate() {
    let ws = Workspace::new("");
    std::fs::create_dir(ws.path("po")).unwrap();
    for (i, name) in [
        "order-request.xml",
        "order-request-update.xml",
        "order-request-delete.xml",
    ]
    .iter()
    .enumerate()
    {
        let file = ws.drop_file("po", &format!("{i}-{name}"), &cxml_fixture(name));
        let out = ws.run(&["import", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    }
    let docs = ws.exported();
    assert_eq!(docs.len(), 3);
    let ops: Vec<&str> = docs
        .iter()
        .map(|d| d["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["new", "update", "delete"]);
    assert_eq!(docs[0]["superseded_by"], docs[1]["id"]);
    assert_eq!(docs[1]["superseded_by"], docs[2]["id"]);
    assert!(docs[2].get("superseded_by").is_none());

    // The same order number sent again as new (other payloadID): a duplicate, not a third order.
    let resent = String::from_utf8(cxml_fixture("order-request.xml"))
        .unwrap()
        .replace("20261120.0815.4711@einkauf", "20261123.0700.9999@einkauf");
    let file = ws.drop_file("po", "again.xml", resent.as_bytes());
    let out = ws.run(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("duplicate order PO-2026-1001"),
        "{}",
        stderr(&out)
    );
    // The same payloadID again in other bytes: a duplicate too.
    let mut same_payload = cxml_fixture("order-request.xml");
    same_payload.extend_from_slice(b"\n<!-- retry -->\n");
    let file = ws.drop_file("po", "retry.xml", &same_payload);
    assert_eq!(
        ws.run(&["import", file.to_str().unwrap()]).status.code(),
        Some(1)
    );
    assert_eq!(ws.exported().len(), 3);
}

#[test]
fn identical_bytes_in_one_batch_are_imported_once_and_the_copy_rejected() {
    let ws = Workspace::new("");
    std::fs::create_dir(ws.path("batch")).unwrap();
    ws.drop_file("batch", "a.xml", &opentrans("LS-77", "1"));
    ws.drop_file("batch", "b.xml", &opentrans("LS-77", "1"));
    let out = ws.run(&["import", "batch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: b.xml: duplicate delivery note LS-77"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ws.exported().len(), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 2);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE outcome IS NULL"),
        0
    );
}
