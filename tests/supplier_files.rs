//! Supplier files end to end, through the built binary and a drop folder: ZIP archives opened
//! (members routed like attachments, bombs and nested archives refused), a source's supplier
//! binding kept to table files, hints that name the right format file, implausible dates
//! rejected, and overlapping format files refused by `check`.

mod support;

use std::time::{Duration, Instant};

use support::{Workspace, fixture, opentrans, stderr, stdout};

/// A message from `from` with one base64-encoded attachment of the given type.
fn message_with(from: &str, name: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "From: Lager <{from}>\r\nTo: lager@example.com\r\nSubject: Lieferscheine\r\n\
         Message-ID: <zip-1@example.test>\r\nDate: Tue, 24 Nov 2026 08:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n\
         --b0\r\nContent-Type: text/plain\r\n\r\nAnbei die Lieferscheine.\r\n\
         --b0\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{}\r\n--b0--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

/// The `.error.txt` note beside a rejected file: the item, its reason, the reprocess line.
fn reason(ws: &Workspace, file: &str) -> String {
    std::fs::read_to_string(ws.path(&format!("fehler/{file}.error.txt")))
        .unwrap_or_else(|e| panic!("no note for {file}: {e}; fehler: {:?}", ws.files("fehler")))
}

fn numbers(docs: &[serde_json::Value]) -> Vec<String> {
    let mut numbers: Vec<String> = docs
        .iter()
        .map(|d| d["number"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort();
    numbers
}

#[test]
fn a_zip_of_two_csvs_from_a_known_sender_is_imported_as_two_notes() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    let mail = message_with(
        "lieferschein@acme-grosshandel.de",
        "lieferungen.zip",
        "application/zip",
        &fixture("acme/lieferungen.zip"),
    );
    ws.drop_file("in", "mail.eml", &mail);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("archiv"), ["mail.eml"], "{:?}", ws.files("fehler"));
    let docs = ws.exported();
    assert_eq!(numbers(&docs), ["LS-26-04801", "LS-26-04802"]);
    assert!(docs.iter().all(|d| d["supplier"] == "acme"), "{docs:?}");
    assert_eq!(docs[0]["lines"][1]["unit_price"], "18.9");
    // Each note remembers the member it came from, named after its archive.
    assert_eq!(
        ws.query_i64(
            "SELECT COUNT(*) FROM documents WHERE file = 'lieferungen.zip/Versand/LS_26-04802.csv'"
        ),
        1
    );
}

#[test]
fn zip_members_in_a_drop_folder_are_routed_by_their_own_names_and_one_bad_member_rejects_the_item()
{
    let ws = Workspace::new("");
    ws.with_format("acme");
    // Neither archive name matches a glob of acme; the members' names (LS_*.csv) do.
    ws.drop_file("in", "lieferungen.zip", &fixture("acme/lieferungen.zip"));
    ws.drop_file("in", "gemischt.zip", &fixture("acme/zip-mit-fehler.zip"));
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("archiv"), ["lieferungen.zip"]);
    assert_eq!(numbers(&ws.exported()), ["LS-26-04801", "LS-26-04802"]);
    // One item, one outcome: the good member of the bad archive is not imported either.
    let why = reason(&ws, "gemischt.zip");
    assert!(
        why.contains("gemischt.zip/LS_26-04803.csv: row 3: quantity is missing"),
        "{why}"
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'rejected'"),
        1
    );
    // Both items are acme's, found by their members' names: the notice says so.
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM items WHERE supplier = 'acme'"),
        2
    );
}

#[test]
fn a_zip_bomb_is_rejected_within_a_second_and_the_watcher_goes_on() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    // 100 members that all point at one 16 MiB stream: 1.6 GiB declared in 22 KB.
    let bomb = ws.drop_file("in", "bombe.zip", &fixture("acme/zip-bombe.zip"));
    let started = Instant::now();
    let out = ws.run(&["parse", bomb.to_str().unwrap(), "--supplier", "acme"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < Duration::from_secs(1), "parse took {took:?}");
    assert!(
        stderr(&out).contains("its zip entries declare 1677721600 bytes uncompressed"),
        "{}",
        stderr(&out)
    );

    ws.drop_file("in", "nested.zip", &fixture("acme/zip-im-zip.zip"));
    ws.drop_file("in", "ls-1.xml", &opentrans("LS-1", "2"));
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("archiv"), ["ls-1.xml"]);
    assert!(
        reason(&ws, "bombe.zip").contains("bombe.zip: too large: its zip entries declare"),
        "{}",
        reason(&ws, "bombe.zip")
    );
    assert!(
        reason(&ws, "nested.zip")
            .contains("nested.zip/nachlieferung.zip: is a ZIP archive inside a ZIP archive"),
        "{}",
        reason(&ws, "nested.zip")
    );
}

#[test]
fn a_drop_folders_supplier_is_not_stamped_on_an_opentrans_file() {
    let ws = Workspace::new("supplier = \"acme\"\n");
    ws.with_format("acme");
    ws.drop_file("in", "fremd.xml", &opentrans("LS-OT-1", "4"));
    // Not matching acme's globs: the binding alone makes it acme's.
    ws.drop_file(
        "in",
        "export.csv",
        &fixture("acme/lieferschein-2026-11.csv"),
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("archiv"), ["export.csv", "fremd.xml"]);
    let docs = ws.exported();
    let opentrans: Vec<_> = docs.iter().filter(|d| d["number"] == "LS-OT-1").collect();
    assert_eq!(opentrans.len(), 1);
    assert_eq!(opentrans[0]["supplier"], serde_json::Value::Null);
    let tables: Vec<_> = docs.iter().filter(|d| d["number"] != "LS-OT-1").collect();
    assert!(tables.len() >= 2);
    assert!(tables.iter().all(|d| d["supplier"] == "acme"), "{tables:?}");
}

#[test]
fn an_unknown_senders_hint_never_names_another_suppliers_file() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    ws.with_format("optikhaus");
    let csv = fixture("acme/lieferschein-2026-11.csv");
    // The attachment's name matches acme's glob LS_*.csv, but the sender is nobody acme knows:
    // the hint is a new file, not acme's.
    ws.drop_file(
        "in",
        "fremd.eml",
        &message_with("versand@fremd-handel.de", "LS_4711.csv", "text/csv", &csv),
    );
    // An address at a domain only acme lists: acme's file.
    ws.drop_file(
        "in",
        "neu.eml",
        &message_with("lager@acme-grosshandel.de", "export.csv", "text/csv", &csv),
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fremd = reason(&ws, "fremd.eml");
    assert!(
        fremd.contains(
            "unknown sender versand@fremd-handel.de for LS_4711.csv: add \
             \"versand@fremd-handel.de\" to `senders` in "
        ),
        "{fremd}"
    );
    assert!(
        fremd.contains("formats/fremd-handel.toml (a new supplier file)"),
        "{fremd}"
    );
    assert!(!fremd.contains("acme.toml"), "{fremd}");
    let neu = reason(&ws, "neu.eml");
    assert!(
        neu.contains("formats/acme.toml (acme lists other addresses at acme-grosshandel.de)"),
        "{neu}"
    );
}

#[test]
fn a_two_digit_year_read_with_a_four_digit_format_is_rejected_naming_the_value() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    ws.drop_file(
        "in",
        "LS_26-04804.csv",
        &fixture("acme/zweistelliges-jahr.csv"),
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.files("archiv").is_empty());
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 0);
    let why = reason(&ws, "LS_26-04804.csv");
    assert!(
        why.contains(
            "LS_26-04804.csv: date \"24.11.26\" reads as 0026-11-24, before the year 2000: \
             check date_formats in the format file of acme: a two-digit year needs %y"
        ),
        "{why}"
    );
}

#[test]
fn check_names_both_files_of_an_overlapping_sender_and_glob() {
    let ws = Workspace::new("");
    ws.with_format("acme");
    let copy = std::fs::read_to_string(ws.path("formats/acme.toml"))
        .unwrap()
        .replace(
            "senders = [\"lieferschein@acme-grosshandel.de\", \"@acme-logistik.de\"]",
            "senders = [\"lieferschein@acme-grosshandel.de\"]",
        )
        .replace(
            "files = [\"lieferschein-*.csv\", \"LS_*.csv\"]",
            "files = [\"*.csv\"]",
        );
    std::fs::write(ws.path("formats/zweitlieferant.toml"), copy).unwrap();
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "both list the sender \"lieferschein@acme-grosshandel.de\": a sender belongs to one \
             supplier"
        ),
        "{text}"
    );
    assert!(
        text.contains("the file glob \"lieferschein-*.csv\" in")
            && text.contains("and \"*.csv\" in")
            && text.contains("zweitlieferant.toml"),
        "{text}"
    );
    // A broken set of formats keeps sync from working on the wrong supplier.
    let out = ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
