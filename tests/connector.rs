//! The ERP hand-off end to end, through the built binary, against a real HTTP receiver on
//! loopback (hyper, verifying every signature, dropping repeats by webhook-id) and the
//! reference implementation of Standard Webhooks (PyPI `standardwebhooks`): none lost, none
//! under a second webhook-id; TLS verified; redirects not followed; timeouts; the dead path
//! with one notice; crashes between send and record; dir connectors in JSON and CSV, written
//! atomically; `check` and `status`.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::smtp::SmtpServer;
use support::webhook::{Certificates, Mode, Receiver, SECRET, verify_with_reference};
use support::{Workspace, opentrans, stderr, stdout, wait_until};

/// A webhook `[[connector]]` named `name` for `url`, with `extra` lines.
fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n"
    )
}

/// Imports files into the store as `eingang import` does (placed where they are).
fn import(ws: &Workspace, files: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(ws.path("import")).unwrap();
    let paths: Vec<String> = files
        .iter()
        .map(|(name, bytes)| {
            let path = ws.path("import").join(name);
            std::fs::write(&path, bytes).unwrap();
            path.display().to_string()
        })
        .collect();
    let mut args = vec!["import"];
    args.extend(paths.iter().map(String::as_str));
    let out = ws.run(&args);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
}

fn status(ws: &Workspace) -> Value {
    let out = ws.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `(pending, delivered, dead)` of a connector, as `status --json` gives them.
fn counts(ws: &Workspace, name: &str) -> (i64, i64, i64) {
    let s = status(ws);
    let c = s["connectors"]
        .as_array()
        .expect("connectors")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no connector {name} in {s}"))
        .clone();
    (
        c["pending"].as_i64().unwrap(),
        c["delivered"].as_i64().unwrap(),
        c["dead"].as_i64().unwrap(),
    )
}

fn last_error(ws: &Workspace, name: &str) -> String {
    status(ws)["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["last_error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn spawn_logged(ws: &Workspace) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ws.path("run.log"))
        .expect("open run.log");
    ws.command(&["run"], &[])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn eingang run")
}

fn run_log(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path("run.log")).unwrap_or_default()
}

/// A delivery note with a description and a quantity, written for these tests.
fn note_with(number: &str, quantity: &str, description: &str) -> Vec<u8> {
    let xml = String::from_utf8(opentrans(number, quantity)).unwrap();
    xml.replace(
        "<bmecat:SUPPLIER_PID>A-100</bmecat:SUPPLIER_PID>",
        &format!(
            "<bmecat:SUPPLIER_PID>A-100</bmecat:SUPPLIER_PID><bmecat:DESCRIPTION_SHORT>{description}</bmecat:DESCRIPTION_SHORT>"
        ),
    )
    .into_bytes()
}

#[test]
fn a_stored_document_reaches_the_webhook_signed_once_after_a_failed_first_attempt() {
    let receiver = Receiver::start(Mode::Accept, 1);
    let ws = Workspace::new(&webhook(
        "erp",
        &receiver.url(),
        "retry = [\"1s\"]\n[connector.defaults]\nwarehouse = \"HAUPT\"\n\
         [connector.fields]\nBelegnummer = \"number\"\nDatei = \"origin.file\"\n\"lines[].Menge\" = \"lines[].quantity\"",
    ));
    let mut child = spawn_logged(&ws);
    ws.drop_file("in", "LS-1.xml", &opentrans("LS-1", "12"));
    let applied = receiver.wait_applied(1, Duration::from_secs(20));
    support::stop(&mut child);
    assert_eq!(applied.len(), 1, "log:\n{}", run_log(&ws));
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        2,
        "the first attempt failed, the second went in"
    );
    assert!(requests.iter().all(|r| r.verified), "every signature holds");
    assert_eq!(
        requests[0].id, requests[1].id,
        "one webhook-id for every attempt"
    );
    assert!(requests[0].id.starts_with("msg_"), "{}", requests[0].id);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the same bytes each time"
    );
    let body = applied[0].json();
    assert_eq!(body["type"], "document.stored");
    assert_eq!(body["kind"], "delivery_note");
    assert_eq!(body["Belegnummer"], "LS-1");
    assert!(body.get("number").is_none(), "renamed, not copied: {body}");
    assert_eq!(body["Datei"], "LS-1.xml");
    assert_eq!(body["warehouse"], "HAUPT");
    assert_eq!(body["lines"][0]["Menge"], "12");
    assert_eq!(body["origin"]["source"], "drop");
    assert!(
        body["origin"]["archived"]
            .as_str()
            .is_some_and(|a| a.contains("archiv")),
        "the hand-off waits for the move: {body}"
    );
    assert_eq!(body["id"], ws.exported()[0]["id"]);
    verify_with_reference(SECRET, &requests);
    assert_eq!(counts(&ws, "erp"), (0, 1, 0));
    let text = stdout(&ws.run(&["status"]));
    assert!(
        text.contains("connector erp: pending 0, delivered 1, dead 0, last error: none"),
        "{text}"
    );
}

#[test]
fn a_superseding_cxml_update_and_delete_are_handed_off_and_say_so() {
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = Workspace::new(&webhook("erp", &receiver.url(), "documents = [\"order\"]"));
    let cxml = |name: &str| support::fixture(&format!("standard/cxml/{name}.xml"));
    import(
        &ws,
        &[
            ("1-new.xml", cxml("order-request")),
            ("2-update.xml", cxml("order-request-update")),
            ("3-delete.xml", cxml("order-request-delete")),
            ("LS-9.xml", opentrans("LS-9", "1")),
        ],
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let applied = receiver.applied();
    let events: Vec<(Value, Value)> = applied
        .iter()
        .map(|r| (r.json()["type"].clone(), r.json()["supersedes"].clone()))
        .collect();
    let ids: Vec<Value> = applied.iter().map(|r| r.json()["id"].clone()).collect();
    assert_eq!(
        events,
        [
            ("document.stored".into(), Value::Null),
            ("document.updated".into(), ids[0].clone()),
            ("document.deleted".into(), ids[1].clone()),
        ],
        "only orders, each event named, the delivery note not taken"
    );
    assert_eq!(
        applied
            .iter()
            .map(|r| r.id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    assert!(applied[2].id.ends_with("_deleted"), "{}", applied[2].id);
    assert_eq!(counts(&ws, "erp"), (0, 3, 0));
}

#[test]
fn a_redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let elsewhere = Receiver::start(Mode::Accept, 0);
    let receiver = Receiver::start(Mode::Redirect(elsewhere.url()), 0);
    let ws = Workspace::new(&webhook("erp", &receiver.url(), ""));
    import(&ws, &[("LS-1.xml", opentrans("LS-1", "1"))]);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hand-off: 0 delivered, 1 waiting"),
        "{}",
        stderr(&out)
    );
    assert_eq!(receiver.requests().len(), 1);
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    assert_eq!(counts(&ws, "erp"), (1, 0, 0));
    let error = last_error(&ws, "erp");
    assert!(error.starts_with("HTTP 302: a redirect"), "{error}");
}

#[test]
fn a_receiver_that_is_down_leaves_the_document_pending_and_the_sources_working() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ws = Workspace::new(&webhook(
        "erp",
        &format!("http://127.0.0.1:{port}/hook?token=s3cret"),
        "",
    ));
    ws.drop_file("in", "LS-1.xml", &opentrans("LS-1", "1"));
    std::thread::sleep(Duration::from_millis(1200));
    let out = ws.run(&["sync"]);
    assert!(
        out.status.success(),
        "the source pass is not the hand-off's: {}",
        stderr(&out)
    );
    assert_eq!(
        ws.files("archiv"),
        ["LS-1.xml"],
        "the item was archived all the same"
    );
    assert_eq!(counts(&ws, "erp"), (1, 0, 0));
    let error = last_error(&ws, "erp");
    assert!(error.contains("Connection refused"), "{error}");
    assert!(
        !error.contains("s3cret") && !stderr(&out).contains("s3cret"),
        "{error}"
    );
}

#[test]
fn a_receiver_that_hangs_or_breaks_off_its_answer_is_tried_again_under_the_same_webhook_id() {
    let receiver = Receiver::start(Mode::Hang(Duration::from_secs(10)), 0);
    let ws = Workspace::new(&webhook(
        "erp",
        &receiver.url(),
        "timeout = \"1s\"\nretry = [\"1s\", \"1s\"]",
    ));
    import(&ws, &[("LS-1.xml", opentrans("LS-1", "1"))]);
    let started = Instant::now();
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "sync waited {:?}",
        started.elapsed()
    );
    assert!(
        last_error(&ws, "erp").contains("no answer within 1 s"),
        "{}",
        last_error(&ws, "erp")
    );
    receiver.set_mode(Mode::CloseMidBody);
    std::thread::sleep(Duration::from_millis(1300));
    ws.run(&["sync"]);
    assert_eq!(
        counts(&ws, "erp"),
        (1, 0, 0),
        "a cut-off answer is no delivery"
    );
    receiver.set_mode(Mode::Accept);
    std::thread::sleep(Duration::from_millis(1300));
    ws.run(&["sync"]);
    assert_eq!(counts(&ws, "erp"), (0, 1, 0));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.id == requests[0].id));
    assert_eq!(receiver.applied().len(), 1);
}

#[test]
fn after_the_last_attempt_the_document_is_dead_with_one_notice_to_the_admins() {
    let smtp = SmtpServer::start();
    let receiver = Receiver::start(Mode::Status(500), 0);
    let ws = Workspace::new(&format!(
        "{}\n{}",
        webhook("erp", &receiver.url(), "retry = [\"1s\"]"),
        smtp.notify_section("")
    ));
    let mut child = spawn_logged(&ws);
    ws.drop_file("in", "LS-1.xml", &opentrans("LS-1", "1"));
    // The notice gathers the connector's documents that die within 15 s, mailed after 20 s.
    let mails = smtp.wait_for(1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    support::stop(&mut child);
    assert_eq!(receiver.requests().len(), 2, "two attempts, then dead");
    assert_eq!(counts(&ws, "erp"), (0, 0, 1));
    assert!(
        last_error(&ws, "erp").starts_with("HTTP 500"),
        "{}",
        last_error(&ws, "erp")
    );
    assert!(!mails.is_empty(), "no notice; log:\n{}", run_log(&ws));
    let mails = smtp.received();
    assert_eq!(
        mails.len(),
        1,
        "one notice: {:?}",
        mails.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    let mail = &mails[0];
    assert_eq!(
        mail.subject(),
        "eingang: Übergabe an erp gescheitert – 1 Dokument nicht zugestellt"
    );
    assert_eq!(mail.rcpt_tos, ["it@example.com"]);
    let body = mail.body();
    assert!(body.contains("Lieferschein »LS-1«"), "{body}");
    assert!(body.contains("HTTP 500"), "{body}");
    assert!(
        body.contains("eingang connector replay erp --dead"),
        "{body}"
    );
    // Once the receiver works again, the dead document is queued again by hand.
    receiver.set_mode(Mode::Accept);
    let out = ws.run(&["connector", "replay", "erp", "--dead"]);
    assert!(
        stdout(&out).contains("connector erp: 1 document(s) queued again"),
        "{}",
        stdout(&out)
    );
    ws.run(&["sync"]);
    assert_eq!(counts(&ws, "erp"), (0, 1, 0));
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_between_send_and_record_the_document_is_sent_again_under_the_same_webhook_id() {
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = Workspace::new(&webhook("erp", &receiver.url(), ""));
    import(&ws, &[("LS-1.xml", opentrans("LS-1", "1"))]);
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_handoff_before_mark")]);
    assert!(!out.status.success(), "the fault point killed it");
    assert_eq!(receiver.applied().len(), 1);
    assert_eq!(
        counts(&ws, "erp"),
        (1, 0, 0),
        "the store did not learn of it"
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].id, requests[1].id);
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(
        receiver.applied().len(),
        1,
        "the receiver dropped the repeat"
    );
    assert_eq!(counts(&ws, "erp"), (0, 1, 0));
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_after_commit_the_document_is_still_handed_off() {
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = Workspace::new(&webhook("erp", &receiver.url(), ""));
    ws.drop_file("in", "LS-1.xml", &opentrans("LS-1", "1"));
    std::thread::sleep(Duration::from_millis(1200));
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_commit")]);
    assert!(!out.status.success(), "the fault point killed it");
    assert!(receiver.requests().is_empty());
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(receiver.applied().len(), 1);
    assert_eq!(counts(&ws, "erp"), (0, 1, 0));
}

#[test]
fn tls_is_verified_with_the_ca_file_and_a_wrong_ca_is_refused_without_holding_up_the_other() {
    let certs = Certificates::new();
    let other_ca = Certificates::new();
    let ca = certs.ca_file();
    let receiver = Receiver::start_tls(Mode::Accept, 0, certs);
    let ws = Workspace::new(&format!(
        "{}{}",
        webhook(
            "trusted",
            &receiver.url(),
            &format!("ca_file = \"{}\"", ca.display())
        ),
        webhook(
            "wrong-ca",
            &receiver.url(),
            &format!("ca_file = \"{}\"", other_ca.ca_file().display())
        ),
    ));
    let out = ws.run(&["check"]);
    let text = stdout(&out);
    let url = receiver.url();
    assert!(
        text.contains(&format!("connector trusted: test event to {url}: ok")),
        "{text}"
    );
    let refused = text
        .lines()
        .find(|l| l.starts_with("connector wrong-ca: test event to"))
        .unwrap_or_default();
    assert!(refused.contains(": FAILED: "), "{text}");
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    assert_eq!(out.status.code(), Some(1));
    let test_event = receiver.applied()[0].json();
    assert_eq!(test_event["type"], "connector.test");
    import(&ws, &[("LS-1.xml", opentrans("LS-1", "1"))]);
    ws.run(&["sync"]);
    assert_eq!(counts(&ws, "trusted"), (0, 1, 0));
    assert_eq!(counts(&ws, "wrong-ca"), (1, 0, 0));
    assert!(
        last_error(&ws, "wrong-ca")
            .to_lowercase()
            .contains("certificate")
    );
}

#[test]
fn check_sends_a_signed_test_event_and_finds_each_folder_writable() {
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = Workspace::new(&format!(
        "{}[[connector]]\nname = \"files\"\nkind = \"dir\"\npath = \"export/erp\"\n",
        webhook("erp", &receiver.url(), "")
    ));
    let out = ws.run(&["check"]);
    let text = stdout(&out);
    // Paths in the config are relative to its folder, and shown in full.
    let folder = ws.path("export/erp");
    let folder = folder.as_path();
    assert!(
        text.contains(&format!(
            "connector erp: test event to {}: ok",
            receiver.url()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "connector files: folder {} writable: FAILED: {}: no such folder",
            folder.display(),
            folder.display()
        )),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));
    let out = ws.run(&["check", "--create-folders"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "connector files: folder {} writable: ok",
            folder.display()
        )),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        support::files_in(&ws.path("export/erp")).is_empty(),
        "the probe is removed"
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.verified));
    verify_with_reference(SECRET, &requests);
}

#[test]
fn a_dir_connector_writes_one_whole_json_file_per_document_with_fields_and_defaults() {
    let ws = Workspace::new(
        "[[connector]]\nname = \"files\"\nkind = \"dir\"\npath = \"export\"\n\
         [connector.defaults]\nLager = \"HAUPT\"\n[connector.fields]\nLieferschein = \"number\"\n",
    );
    std::fs::create_dir_all(ws.path("export")).unwrap();
    import(
        &ws,
        &[
            ("a.xml", opentrans("LS-1", "1")),
            ("b.xml", opentrans("LS/2", "3")),
        ],
    );
    ws.run(&["sync"]);
    let files = ws.files("export");
    assert_eq!(
        files,
        [
            "0000000001-delivery_note-LS-1.json",
            "0000000002-delivery_note-LS_2.json"
        ]
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(ws.path("export").join(&files[1])).unwrap()).unwrap();
    assert_eq!(doc["Lieferschein"], "LS/2");
    assert_eq!(doc["Lager"], "HAUPT");
    assert_eq!(doc["type"], "document.stored");
    assert_eq!(
        doc["lines"][0]["quantity"], "3",
        "JSON keeps canonical decimals"
    );
    assert_eq!(counts(&ws, "files"), (0, 2, 0));
    // Another sync writes nothing again.
    ws.run(&["sync"]);
    assert_eq!(ws.files("export").len(), 2);
}

#[test]
fn a_csv_dir_connector_writes_german_decimals_semicolons_a_header_and_defused_formulas() {
    let ws = Workspace::new(
        "[[connector]]\nname = \"lager\"\nkind = \"dir\"\npath = \"export\"\nformat = \"csv\"\n\
         csv_delimiter = \";\"\ndecimal_comma = true\n[connector.fields]\nBeleg = \"number\"\n\"lines[].Menge\" = \"lines[].quantity\"\n",
    );
    std::fs::create_dir_all(ws.path("export")).unwrap();
    import(
        &ws,
        &[(
            "a.xml",
            note_with("LS-1", "2.5", "=HYPERLINK(\"http://x?\"&amp;A1,\"x\")"),
        )],
    );
    ws.run(&["sync"]);
    let files = ws.files("export");
    assert_eq!(files, ["0000000001-delivery_note-LS-1.csv"]);
    let text =
        String::from_utf8(std::fs::read(ws.path("export").join(&files[0])).unwrap()).unwrap();
    let rows: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(rows.len(), 2, "a header and one row per line: {text}");
    let header: Vec<&str> = rows[0].split(';').collect();
    let row: Vec<&str> = rows[1].split(';').collect();
    let cell = |name: &str| {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"));
        row[i]
    };
    assert_eq!(cell("Beleg"), "LS-1");
    assert_eq!(cell("Menge"), "2,5");
    assert_eq!(cell("unit"), "C62");
    assert_eq!(
        cell("description"),
        "\"'=HYPERLINK(\"\"http://x?\"\"&A1,\"\"x\"\")\"",
        "quoted, with a leading ' against formula injection"
    );
}

#[cfg(feature = "fault-points")]
#[test]
fn a_crash_before_the_rename_leaves_only_a_hidden_temporary_file_never_a_half_one() {
    let ws = Workspace::new("[[connector]]\nname = \"files\"\nkind = \"dir\"\npath = \"export\"\n");
    std::fs::create_dir_all(ws.path("export")).unwrap();
    import(&ws, &[("a.xml", opentrans("LS-1", "1"))]);
    let out = ws.run_env(
        &["sync"],
        &[("EINGANG_FAULT", "handoff_file_before_rename")],
    );
    assert!(!out.status.success(), "the fault point killed it");
    assert_eq!(
        ws.files("export"),
        [".0000000001-delivery_note-LS-1.json.tmp"],
        "only the hidden temporary name"
    );
    ws.run(&["sync"]);
    assert_eq!(ws.files("export"), ["0000000001-delivery_note-LS-1.json"]);
    let doc: Value = serde_json::from_slice(
        &std::fs::read(ws.path("export/0000000001-delivery_note-LS-1.json")).unwrap(),
    )
    .expect("a whole JSON file");
    assert_eq!(doc["number"], "LS-1");
}

/// A tmpfs of `kib` KiB mounted on `dir` (the tests run as root, as CI does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, kib: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a small tmpfs needs root (as CI runs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_no_partial_file_and_the_document_waits_for_space() {
    let ws = Workspace::new(
        "[[connector]]\nname = \"files\"\nkind = \"dir\"\npath = \"export\"\nretry = [\"1s\", \"1s\"]\n",
    );
    let disk = Tmpfs::mount(&ws.path("export"), 64);
    let filler = ws.path("export/filler");
    let mut big = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut big, &chunk).is_ok() {}
    drop(big);
    let long = "x".repeat(200);
    import(&ws, &[("a.xml", note_with("LS-1", "1", &long))]);
    ws.run(&["sync"]);
    assert_eq!(
        ws.files("export"),
        ["filler"],
        "no file, not even a temporary one"
    );
    assert_eq!(counts(&ws, "files"), (1, 0, 0));
    let error = last_error(&ws, "files");
    assert!(error.contains("No space left on device"), "{error}");
    std::fs::remove_file(&filler).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    ws.run(&["sync"]);
    assert_eq!(ws.files("export"), ["0000000001-delivery_note-LS-1.json"]);
    assert_eq!(counts(&ws, "files"), (0, 1, 0));
    drop(disk);
}

#[test]
fn documents_stored_before_a_connector_wait_for_a_replay_which_keeps_their_webhook_id() {
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = Workspace::new("");
    import(&ws, &[("a.xml", opentrans("LS-1", "1"))]);
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    std::fs::write(
        ws.path("eingang.toml"),
        format!("{config}{}", webhook("erp", &receiver.url(), "")),
    )
    .unwrap();
    import(&ws, &[("b.xml", opentrans("LS-2", "1"))]);
    ws.run(&["sync"]);
    let applied = receiver.applied();
    assert_eq!(applied.len(), 1, "no back-fill");
    assert_eq!(applied[0].json()["number"], "LS-2");
    let out = ws.run(&["connector", "replay", "erp", "--since", "0"]);
    assert!(
        stdout(&out).contains("2 document(s) queued again"),
        "{}",
        stdout(&out)
    );
    ws.run(&["sync"]);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        receiver.applied().len(),
        2,
        "the repeat of LS-2 was dropped by its id"
    );
    assert_eq!(counts(&ws, "erp"), (0, 2, 0));
    let out = ws.run(&["connector", "replay", "nope", "--dead"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no connector named \"nope\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn many_documents_go_out_and_the_receiver_applies_each_once() {
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = Workspace::new(&webhook("erp", &receiver.url(), ""));
    let files: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| (format!("LS-{i}.xml"), opentrans(&format!("LS-{i}"), "1")))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    import(&ws, &refs);
    let started = Instant::now();
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(wait_until(Duration::from_secs(1), || receiver
        .applied()
        .len()
        == 120));
    eprintln!("120 hand-offs in {:?}", started.elapsed());
    assert_eq!(counts(&ws, "erp"), (0, 120, 0));
}
