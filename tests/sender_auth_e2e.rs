//! Only the authentic counts (DESIGN.md promise 8), end to end through the built binary: mail
//! from a real Dovecot, `.eml` files in a drop folder and through `eingang import`, signed here
//! by mail-auth's signer and by dkimpy, checked against a private dnsmasq given as
//! `[dns] server`. What happens to each item by its supplier's `authenticate` setting, how the
//! verdict shows in `export`, `status`, `check` and the notices, DNS that goes down and comes
//! back, conflicts over a business key, and cXML deletes from another sender.
//!
//! Published in this binary's DNS (every other name is NXDOMAIN):
//! - `supplier.example`: DKIM key `sel`, `p=reject`; the supplier format `lieferant`
//!   (`authenticate = "required"`);
//! - `monitor.example`: DKIM key `sel`, `p=none`; the format `monitor` (default);
//! - `nodmarc.example`: nothing; the format `strict` (`required`);
//! - `buyer.example`: DKIM key `sel`, `p=reject` (a buyer sending cXML orders, no format);
//! - `attacker.example`: DKIM key `sel`, `p=none`.

#[path = "support/dkim.rs"]
mod dkim;
#[path = "support/dovecot.rs"]
mod dovecot;
mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use dovecot::{Client, Dovecot, PASSWORD, new_user};
use support::dns::Dnsmasq;
use support::smtp::SmtpServer;
use support::{Workspace, message, opentrans, stderr, stdout, wait_until};

const INBOX: &str = "INBOX.Lieferscheine.Eingang";
const ARCHIVE: &str = "INBOX.Lieferscheine.Archiv";
const ERROR: &str = "INBOX.Lieferscheine.Fehler";

fn records() -> Vec<(String, String)> {
    let key = dkim::rsa_record();
    let mut records: Vec<(String, String)> = [
        "supplier.example",
        "monitor.example",
        "buyer.example",
        "attacker.example",
    ]
    .iter()
    .map(|d| (format!("sel._domainkey.{d}"), key.clone()))
    .collect();
    for (domain, policy) in [
        ("supplier.example", "reject"),
        ("monitor.example", "none"),
        ("buyer.example", "reject"),
        ("attacker.example", "none"),
    ] {
        records.push((format!("_dmarc.{domain}"), format!("v=DMARC1; p={policy}")));
    }
    records
}

/// The DNS of the tests that do not stop or change it.
fn dns() -> SocketAddr {
    static DNS: OnceLock<Dnsmasq> = OnceLock::new();
    DNS.get_or_init(|| Dnsmasq::start(&records())).addr()
}

/// `[dns] server` for `addr`.
fn dns_section(addr: SocketAddr) -> String {
    format!("[dns]\nserver = \"{addr}\"\n")
}

/// A supplier format: Acme's CSV layout, for the senders of `domain`, with `authenticate` as
/// given (`None`: the default).
fn supplier_format(domain: &str, authenticate: Option<&str>) -> String {
    let acme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/formats/acme.toml"))
        .expect("formats/acme.toml");
    let stem = domain.split('.').next().unwrap_or(domain);
    let mut out = String::new();
    if let Some(setting) = authenticate {
        out.push_str(&format!("authenticate = \"{setting}\"\n"));
    }
    for line in acme.lines() {
        if line.starts_with("senders = ") {
            out.push_str(&format!("senders = [\"@{domain}\"]\n"));
        } else if line.starts_with("files = ") {
            out.push_str(&format!("files = [\"{stem}-*.csv\"]\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The three supplier formats of this file into `formats/` of the workspace.
fn write_formats(ws: &Workspace) {
    for (name, domain, setting) in [
        ("lieferant", "supplier.example", Some("required")),
        ("monitor", "monitor.example", None),
        ("strict", "nodmarc.example", Some("required")),
    ] {
        std::fs::write(
            ws.path(&format!("formats/{name}.toml")),
            supplier_format(domain, setting),
        )
        .expect("write a format");
    }
}

/// A drop-folder workspace with the formats, asking `dns`; `extra` goes to the source.
fn drop_workspace(dns: SocketAddr, extra: &str) -> Workspace {
    let ws = Workspace::new(&format!("{extra}\n{}", dns_section(dns)));
    write_formats(&ws);
    ws
}

/// An IMAP workspace for a new user on `dovecot` with the formats, asking `dns`; `extra` goes
/// to the source, `tail` after it (e.g. `[notify]`). The folders are made by `check`.
fn imap_workspace(
    dovecot: &Dovecot,
    test: &str,
    dns: SocketAddr,
    extra: &str,
    tail: &str,
) -> (Workspace, Client) {
    let user = new_user(test);
    let ws = Workspace::bare();
    std::fs::create_dir_all(ws.path("formats")).expect("formats");
    write_formats(&ws);
    std::fs::write(ws.path("ca.pem"), &dovecot::shared_certificates().0).expect("ca");
    std::fs::write(ws.path("password"), format!("{PASSWORD}\n")).expect("password");
    let config = format!(
        "formats = \"formats\"\n{}{}\
         [[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\n\
         ca_file = \"ca.pem\"\nuser = \"{user}\"\npassword_file = \"password\"\n\
         inbox = \"Lieferscheine/Eingang\"\narchive = \"Lieferscheine/Archiv\"\nerror = \"Lieferscheine/Fehler\"\n\
         {extra}\n{tail}",
        ws.store_section(),
        dns_section(dns),
        dovecot.imaps_port,
    );
    std::fs::write(ws.path("eingang.toml"), config).expect("config");
    let out = ws.run(&["check", "--create-folders"]);
    assert!(
        out.status.success(),
        "check --create-folders failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    (ws, dovecot.client(&user))
}

/// A mail from `from` with one openTRANS delivery note.
fn note_mail(from: &str, number: &str, quantity: &str) -> Vec<u8> {
    let domain = from.rsplit('@').next().unwrap_or("example");
    message(
        from,
        &format!("{number}.{quantity}@{domain}"),
        &format!("{number}.xml"),
        "application/xml",
        &opentrans(number, quantity),
    )
}

/// A mail from `from` with one cXML file of `fixtures/standard/cxml`.
fn cxml_mail(from: &str, fixture: &str) -> Vec<u8> {
    let domain = from.rsplit('@').next().unwrap_or("example");
    message(
        from,
        &format!("{fixture}@{domain}"),
        fixture,
        "application/xml",
        &support::fixture(&format!("standard/cxml/{fixture}")),
    )
}

/// The reasons of the rejected items, by id.
fn reasons(ws: &Workspace) -> Vec<String> {
    ws.query_column("SELECT reason FROM items WHERE outcome = 'rejected' ORDER BY id")
        .into_iter()
        .map(|reason| reason.expect("a reason"))
        .collect()
}

fn status_json(ws: &Workspace) -> serde_json::Value {
    let out = ws.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status json")
}

#[test]
fn only_the_authentic_counts_through_dovecot() {
    let dovecot = Dovecot::shared();
    let (ws, mbox) = imap_workspace(dovecot, "auth-imap", dns(), "", "");
    let from = "lager@supplier.example";
    let signed = dkim::sign("supplier.example", &note_mail(from, "LS-A1", "12"));
    // Forwarded on the way: headers added above the signature, which still holds.
    let mut forwarded =
        b"Received: from relay.forwarder.example (192.0.2.99) by mx.shop.example\r\n\
        X-Forwarded-For: lager@forwarder.example\r\n"
            .to_vec();
    forwarded.extend(dkim::sign(
        "supplier.example",
        &note_mail(from, "LS-A2", "3"),
    ));
    let unsigned = note_mail(from, "LS-A3", "999");
    let altered = String::from_utf8(dkim::sign(
        "supplier.example",
        &note_mail(from, "LS-A4", "1"),
    ))
    .unwrap()
    .replace("<QUANTITY>1</QUANTITY>", "<QUANTITY>100</QUANTITY>");
    let other_domain = dkim::sign("attacker.example", &note_mail(from, "LS-A5", "7"));
    let dkimpy = dkim::sign_with_dkimpy("supplier.example", &note_mail(from, "LS-A6", "5"));
    for raw in [
        &signed,
        &forwarded,
        &unsigned,
        altered.as_bytes(),
        &other_domain,
        &dkimpy,
    ] {
        mbox.append(INBOX, raw, None);
    }
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mbox.count(INBOX), 0);
    assert_eq!(mbox.count(ARCHIVE), 3);
    assert_eq!(mbox.count(ERROR), 3);

    let docs = ws.exported();
    let numbers: Vec<&str> = docs.iter().map(|d| d["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["LS-A1", "LS-A2", "LS-A6"]);
    for doc in &docs {
        assert_eq!(doc["supplier"], "lieferant");
        assert_eq!(doc["origin"]["sender_auth"], "pass", "{doc}");
        assert_eq!(doc["origin"]["auth_domain"], "supplier.example", "{doc}");
    }
    let reasons = reasons(&ws);
    assert_eq!(reasons.len(), 3);
    for reason in &reasons {
        assert!(
            reason.starts_with(
                "sender not authenticated: DMARC fails for supplier.example and the supplier requires authentication"
            ),
            "{reason}"
        );
    }
    assert!(reasons[0].contains("dkim=none"), "{}", reasons[0]);
    assert!(
        reasons[1].contains("dkim=neutral (body hash did not verify)"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("header.d=attacker.example (not aligned)"),
        "{}",
        reasons[2]
    );

    let status = ws.run(&["status"]);
    assert!(
        stdout(&status).contains("mail: senders: 3 pass (supplier.example 3), 3 fail"),
        "{}",
        stdout(&status)
    );
    let counts = &status_json(&ws)["sources"][0]["sender_auth"];
    assert_eq!(
        (counts["pass"].as_i64(), counts["fail"].as_i64()),
        (Some(3), Some(3))
    );
    let check = stdout(&ws.run(&["check"]));
    assert!(
        check.contains(
            "supplier lieferant: 3 of 6 passed DKIM for supplier.example; 3 failed in the last 30 days (authenticate = \"required\")"
        ),
        "{check}"
    );
}

#[test]
fn a_trusted_receiving_server_decides_and_a_forged_header_below_it_is_ignored() {
    let dovecot = Dovecot::shared();
    let (ws, mbox) = imap_workspace(
        dovecot,
        "auth-ar",
        dns(),
        "trusted_authserv_id = \"mx.shop.example\"",
        "",
    );
    let from = "lager@supplier.example";
    let with_header = |header: &str, number: &str| {
        let mut raw = header.as_bytes().to_vec();
        raw.extend(note_mail(from, number, "1"));
        raw
    };
    // No signature: the trusted server's word decides.
    mbox.append(
        INBOX,
        &with_header(
            "Authentication-Results: mx.shop.example; dkim=pass header.d=supplier.example; \
             dmarc=pass header.from=supplier.example\r\n",
            "LS-T1",
        ),
        None,
    );
    // The server says fail; the sender wrote a pass below it.
    mbox.append(
        INBOX,
        &with_header(
            "Authentication-Results: mx.shop.example; dkim=none; dmarc=fail (p=reject) header.from=supplier.example\r\n\
             Received: from evil.example by mx.shop.example\r\n\
             Authentication-Results: mx.shop.example; dkim=pass header.d=supplier.example; dmarc=pass header.from=supplier.example\r\n",
            "LS-T2",
        ),
        None,
    );
    // A header of another server is not trusted: eingang's own check finds no signature.
    mbox.append(
        INBOX,
        &with_header(
            "Authentication-Results: mx.evil.example; dmarc=pass header.from=supplier.example\r\n",
            "LS-T3",
        ),
        None,
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!((mbox.count(ARCHIVE), mbox.count(ERROR)), (1, 2));
    let docs = ws.exported();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["number"], "LS-T1");
    assert_eq!(docs[0]["origin"]["sender_auth"], "pass");
    let reasons = reasons(&ws);
    assert!(
        reasons[0].contains("trusted header of mx.shop.example: dkim=none, dmarc=fail"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("dkim=none, dmarc=fail (p=reject)"),
        "{}",
        reasons[1]
    );
    assert!(!reasons[1].contains("trusted"), "{}", reasons[1]);
}

#[test]
fn dns_down_a_required_note_stays_in_the_inbox_and_is_imported_once_dns_is_back() {
    let _ = dns(); // the shared server first, so that it cannot take this one's port
    let own = Dnsmasq::start(&records());
    let dovecot = Dovecot::shared();
    let (ws, mbox) = imap_workspace(dovecot, "auth-dnsdown", own.addr(), "", "");
    own.stop();
    let raw = dkim::sign(
        "supplier.example",
        &note_mail("lager@supplier.example", "LS-D1", "4"),
    );
    mbox.append(INBOX, &raw, None);
    // Tried again and again (each try waits out the dead server, 8 s): never moved, and never
    // counted as a crash (store::tests has more tries than the crash counter allows).
    for _ in 0..2 {
        let out = ws.run(&["sync"]);
        // Not handled yet: transient, so not exit 0.
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("error: source mail: 1 message(s) left in the inbox: their sender could not be checked (DNS failed)"),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out)
                .contains("mail: imported 0, rejected 0, left in the inbox until DNS answers 1"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        (mbox.count(INBOX), mbox.count(ARCHIVE), mbox.count(ERROR)),
        (1, 0, 0)
    );
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 1);
    assert_eq!(ws.query_i64("SELECT attempts FROM items"), 1);
    assert_eq!(ws.query_i64("SELECT deferrals FROM items"), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox"), 0);
    let status = status_json(&ws);
    assert_eq!(status["sources"][0]["sender_auth"]["waiting"], 1);
    assert_eq!(status["sources"][0]["pending"], 1);
    assert!(
        stdout(&ws.run(&["status"])).contains("mail: senders: 1 waiting for DNS"),
        "status says why it waits"
    );

    own.restart_with(&records());
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        (mbox.count(INBOX), mbox.count(ARCHIVE), mbox.count(ERROR)),
        (0, 1, 0)
    );
    let docs = ws.exported();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["origin"]["sender_auth"], "pass");
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 1);
}

#[test]
fn dns_down_the_daemon_tries_a_required_note_again_with_backoff() {
    let _ = dns();
    let own = Dnsmasq::start(&records());
    let dovecot = Dovecot::shared();
    let (ws, mbox) = imap_workspace(dovecot, "auth-daemon", own.addr(), "", "");
    own.stop();
    mbox.append(
        INBOX,
        &dkim::sign(
            "supplier.example",
            &note_mail("lager@supplier.example", "LS-D2", "4"),
        ),
        None,
    );
    let mut daemon = ws.spawn(&["run"]);
    let deferred = wait_until(Duration::from_secs(20), || {
        ws.query_i64("SELECT COUNT(*) FROM items WHERE deferred_until IS NOT NULL") == 1
    });
    assert!(deferred, "the note was not left waiting");
    assert_eq!(mbox.count(INBOX), 1);
    own.restart_with(&records());
    // The first wait is 5 s; no new mail wakes the daemon, the retry time does.
    let archived = wait_until(Duration::from_secs(30), || mbox.count(ARCHIVE) == 1);
    let status = support::stop(&mut daemon);
    assert!(archived, "not imported after DNS came back");
    assert!(status.success());
    assert_eq!((mbox.count(INBOX), mbox.count(ERROR)), (0, 0));
    assert_eq!(ws.exported()[0]["origin"]["sender_auth"], "pass");
}

#[test]
fn dns_down_the_default_policy_accepts_with_temperror_and_one_warning() {
    // A resolver whose upstream is broken (SERVFAIL at once): DNS fails temporarily.
    let broken = support::dns::Failing::start(2);
    let ws = drop_workspace(broken.addr(), "");
    std::fs::create_dir(ws.path("mails")).unwrap();
    let monitor = ws.drop_file(
        "mails",
        "monitor.eml",
        &dkim::sign(
            "monitor.example",
            &note_mail("versand@monitor.example", "LS-M1", "2"),
        ),
    );
    let out = ws.run(&["import", monitor.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("temperror")).collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&out));
    assert!(
        warnings[0]
            .contains("sender authenticity of monitor.example not checked: DNS failed temporarily"),
        "{}",
        warnings[0]
    );
    let docs = ws.exported();
    assert_eq!(docs[0]["origin"]["sender_auth"], "none");
    assert_eq!(docs[0]["origin"]["auth_verdict"], "temperror");

    // `import` under `required`: not imported yet, and again once DNS answers.
    let required = ws.drop_file(
        "mails",
        "lieferant.eml",
        &dkim::sign(
            "supplier.example",
            &note_mail("lager@supplier.example", "LS-M2", "2"),
        ),
    );
    let out = ws.run(&["import", required.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("error: lieferant.eml: not imported yet: sender authenticity of supplier.example not known yet"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not decided yet 1"),
        "{}",
        stderr(&out)
    );
    // DNS answers again.
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    let config = config.replace(&broken.addr().to_string(), &dns().to_string());
    std::fs::write(ws.path("eingang.toml"), config).unwrap();
    let out = ws.run(&["import", required.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(ws.exported().len(), 2);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 2);
}

#[test]
fn no_signature_is_judged_by_the_published_policy_and_the_supplier_setting() {
    let ws = drop_workspace(dns(), "");
    std::fs::create_dir(ws.path("mails")).unwrap();
    for (name, from, number) in [
        ("reject.eml", "lager@supplier.example", "LS-N1"), // p=reject, required
        ("none.eml", "versand@monitor.example", "LS-N2"),  // p=none, default
        ("strict.eml", "info@nodmarc.example", "LS-N3"),   // no record, required
        ("other.eml", "info@other.example", "LS-N4"),      // no record, no format
    ] {
        ws.drop_file("mails", name, &note_mail(from, number, "1"));
    }
    let out = ws.run(&["import", "mails"]);
    assert_eq!(out.status.code(), Some(1));
    let numbers: Vec<String> = ws
        .exported()
        .iter()
        .map(|d| d["number"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(numbers, ["LS-N2", "LS-N4"]);
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: reject.eml: sender not authenticated: DMARC fails for supplier.example"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "error: strict.eml: sender not authenticated: nothing authenticates nodmarc.example"
        ),
        "{err}"
    );
    let docs = ws.exported();
    assert_eq!(docs[0]["origin"]["sender_auth"], "fail");
    assert_eq!(docs[1]["origin"]["sender_auth"], "none");
}

#[test]
fn a_forged_note_stored_first_makes_the_genuine_one_a_conflict_with_a_notice_saying_so() {
    let smtp = SmtpServer::start();
    let ws = drop_workspace(dns(), &smtp.notify_section("language = \"en\"\n"));
    // The forger knows the note's number and sends it first, unsigned (p=none lets it in).
    let forged = note_mail("versand@monitor.example", "LS-4711", "999");
    ws.drop_file("in", "forged.eml", &forged);
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv"), ["forged.eml"]);
    let genuine = dkim::sign(
        "monitor.example",
        &note_mail("versand@monitor.example", "LS-4711", "12"),
    );
    ws.drop_file("in", "genuine.eml", &genuine);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("fehler"), ["genuine.eml", "genuine.eml.error.txt"]);
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    let reason = &reasons(&ws)[0];
    assert!(
        reason.starts_with(
            "duplicate delivery note LS-4711 from monitor from another sender: document 1 was stored first, \
             from versand@monitor.example (not authenticated: fail), item 1 of the source drop"
        ),
        "{reason}"
    );
    assert!(
        reason.contains(
            "this one is from versand@monitor.example (authenticated for monitor.example)"
        ),
        "{reason}"
    );
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    let body = mails[0].body();
    assert!(
        mails[0].subject().contains("monitor: conflict"),
        "{}",
        mails[0].subject()
    );
    for part in [
        "document 1 was stored first",
        "(not authenticated: fail)",
        "Sender auth: authenticated: pass (dkim=pass header.d=monitor.example, dmarc=pass)",
        "Ask the supplier which of the two documents is genuine",
        "it takes the stored one's place",
        &format!(" reprocess {id}"),
    ] {
        assert!(body.contains(part), "{part:?} not in:\n{body}");
    }
    assert!(
        !body.contains("Nothing to do"),
        "a conflict is not a plain duplicate:\n{body}"
    );

    // The admin asked the supplier: the stored one is the forgery.
    let out = ws.run(&["reprocess", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.run(&["sync"]).status.success());
    let docs = ws.exported();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["lines"][0]["quantity"], "999");
    assert_eq!(docs[0]["superseded_by"], docs[1]["id"]);
    assert_eq!(docs[1]["lines"][0]["quantity"], "12");
    assert_eq!(docs[1]["origin"]["sender_auth"], "pass");
    assert!(docs[1].get("superseded_by").is_none());
}

#[test]
fn a_forged_note_cannot_replace_the_genuine_one_stored_first() {
    let ws = drop_workspace(dns(), "");
    let genuine = dkim::sign(
        "monitor.example",
        &note_mail("versand@monitor.example", "LS-4712", "12"),
    );
    ws.drop_file("in", "genuine.eml", &genuine);
    assert!(ws.run(&["sync"]).status.success());
    ws.drop_file(
        "in",
        "forged.eml",
        &note_mail("versand@monitor.example", "LS-4712", "999"),
    );
    assert!(ws.run(&["sync"]).status.success());
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    assert!(
        reasons(&ws)[0].ends_with("this one cannot replace it: its sender is not authenticated"),
        "{}",
        reasons(&ws)[0]
    );
    assert!(ws.run(&["reprocess", &id.to_string()]).status.success());
    assert!(ws.run(&["sync"]).status.success());
    let docs = ws.exported();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["lines"][0]["quantity"], "12");
}

#[test]
fn a_cxml_delete_from_another_sender_does_not_supersede_the_order() {
    let ws = drop_workspace(dns(), "");
    std::fs::create_dir(ws.path("mails")).unwrap();
    let import = |name: &str, raw: &[u8]| {
        let path = ws.drop_file("mails", name, raw);
        ws.run(&["import", path.to_str().unwrap()])
    };
    let order = dkim::sign(
        "buyer.example",
        &cxml_mail("einkauf@buyer.example", "order-request.xml"),
    );
    assert_eq!(import("order.eml", &order).status.code(), Some(0));
    // Signed, but by another domain that passes for itself.
    let other = dkim::sign(
        "attacker.example",
        &cxml_mail("einkauf@attacker.example", "order-request-delete.xml"),
    );
    let out = import("other.eml", &other);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "delete of order PO-2026-1001 not accepted: an update or delete is accepted only from the sender of the order it changes; \
             the order (document 1) came from einkauf@buyer.example (authenticated for buyer.example)"
        ),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(
            "this one is from einkauf@attacker.example (authenticated for attacker.example)"
        ),
        "{}",
        stderr(&out)
    );
    // Forged in the buyer's name, unsigned: its policy rejects it outright.
    let forged = cxml_mail("einkauf@buyer.example", "order-request-delete.xml")
        .into_iter()
        .chain(b"\r\n".iter().copied())
        .collect::<Vec<u8>>();
    let out = import("forged.eml", &forged);
    assert!(
        stderr(&out).contains(
            "sender not authenticated: DMARC fails for buyer.example, which publishes p=reject"
        ),
        "{}",
        stderr(&out)
    );
    let docs = ws.exported();
    assert_eq!(docs.len(), 1);
    assert!(docs[0].get("superseded_by").is_none());
    // The buyer itself cancels: that supersedes.
    let delete = dkim::sign(
        "buyer.example",
        &cxml_mail("einkauf@buyer.example", "order-request-delete.xml"),
    );
    assert_eq!(import("delete.eml", &delete).status.code(), Some(0));
    let docs = ws.exported();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["superseded_by"], docs[1]["id"]);
    assert_eq!(docs[1]["operation"], "delete");
}

#[test]
fn reprocess_keeps_the_verdict_taken_at_first_sight_after_the_dkim_key_is_gone() {
    let _ = dns();
    let own = Dnsmasq::start(&records());
    let ws = drop_workspace(own.addr(), "");
    // At first no format knows the sender: rejected for that, with a passing verdict.
    std::fs::remove_file(ws.path("formats/lieferant.toml")).unwrap();
    let csv = support::fixture("acme/lieferschein-2026-11.csv");
    let mail = |id: &str| {
        dkim::sign(
            "supplier.example",
            &message(
                "lager@supplier.example",
                id,
                "lieferant-2026-11.csv",
                "text/csv",
                &csv,
            ),
        )
    };
    ws.drop_file("in", "ls.eml", &mail("ls-1@supplier.example"));
    assert!(ws.run(&["sync"]).status.success());
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    assert!(
        reasons(&ws)[0].starts_with("unknown sender lager@supplier.example"),
        "{}",
        reasons(&ws)[0]
    );
    // The supplier gets its format (authentication required), and rotates its DKIM key: the
    // old one is gone from DNS.
    std::fs::write(
        ws.path("formats/lieferant.toml"),
        supplier_format("supplier.example", Some("required")),
    )
    .unwrap();
    let without_key: Vec<(String, String)> = records()
        .into_iter()
        .filter(|(name, _)| name != "sel._domainkey.supplier.example")
        .collect();
    own.restart_with(&without_key);
    assert!(ws.run(&["reprocess", &id.to_string()]).status.success());
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(ws.files("archiv"), ["ls.eml"]);
    let docs = ws.exported();
    assert!(!docs.is_empty());
    assert!(docs.iter().all(|d| d["origin"]["sender_auth"] == "pass"));
    // Since the restart, nobody asked for anything: the reprocess used the stored verdict.
    let log = own.log();
    let since_restart = log.rsplit("started, version").next().unwrap_or_default();
    assert!(
        !since_restart.contains("query[TXT]"),
        "a look-up for the reprocess:\n{log}"
    );
    // New mail signed with the removed key is checked now, and fails.
    ws.drop_file("in", "neu.eml", &mail("ls-2@supplier.example"));
    assert!(ws.run(&["sync"]).status.success());
    assert!(
        reasons(&ws)
            .last()
            .unwrap()
            .starts_with("sender not authenticated: DMARC fails for supplier.example"),
        "{:?}",
        reasons(&ws)
    );
}

#[test]
fn a_rejected_mailbox_item_is_attached_to_its_notice_only_when_its_sender_is_authenticated() {
    let smtp = SmtpServer::start();
    let dovecot = Dovecot::shared();
    let (ws, mbox) = imap_workspace(
        dovecot,
        "auth-notice",
        dns(),
        "",
        &smtp.notify_section("language = \"en\"\n"),
    );
    let from = "lager@supplier.example";
    let broken = dkim::sign(
        "supplier.example",
        &message(
            from,
            "broken@supplier.example",
            "kaputt.xml",
            "application/xml",
            b"<DISPATCHNOTIFICATION><oops>",
        ),
    );
    mbox.append(INBOX, &broken, None);
    mbox.append(INBOX, &note_mail(from, "LS-F1", "9"), None);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mbox.count(ERROR), 2);
    let mails = smtp.wait_for(2, Duration::from_secs(10));
    assert_eq!(mails.len(), 2);
    let by_subject = |needle: &str| {
        mails
            .iter()
            .find(|m| m.subject().contains(needle))
            .unwrap_or_else(|| panic!("no notice about {needle}"))
    };
    let authentic = by_subject("kaputt.xml");
    let parsed = authentic.parsed();
    let attachment = parsed
        .attachments()
        .next()
        .expect("an authenticated item is attached");
    assert_eq!(attachment.contents(), broken.as_slice());
    assert!(
        authentic.body().contains(
            "Sender auth: authenticated: pass (dkim=pass header.d=supplier.example, dmarc=pass)"
        ),
        "{}",
        authentic.body()
    );
    let forged = by_subject("LS-F1");
    assert_eq!(
        forged.parsed().attachments().count(),
        0,
        "a forged item is not passed on"
    );
    let body = forged.body();
    for part in [
        "sender not authenticated",
        "Sender auth: not authenticated: fail (dkim=none, dmarc=fail (p=reject) header.from=supplier.example)",
        "its sender is not authenticated, and eingang does not pass on what an unknown sender wrote",
        "Do not use its content",
    ] {
        assert!(body.contains(part), "{part:?} not in:\n{body}");
    }
}
