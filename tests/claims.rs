//! Notices and hand-offs go out once, whichever daemon of a shared store sends them (issue 17,
//! CONTRACT.md "Several daemons on PostgreSQL"): two `eingang run` on one PostgreSQL store,
//! each running its notifier and its connectors over the same outbox and hand-off rows, mail
//! every notice once to one SMTP server and post every document once to one webhook. Always
//! on a real PostgreSQL (the harness starts it), whatever `EINGANG_TEST_STORE` says.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::postgres::Postgres;
use support::smtp::SmtpServer;
use support::webhook::{Mode, Receiver, SECRET};
use support::{Daemons, Workspace, dns_section, opentrans};

const BRANCHES: usize = 4;
const BROKEN_PER_BRANCH: usize = 4;
const NOTES_PER_BRANCH: usize = 3;

/// `BRANCHES` drop folders and one source whose inbox is missing (it stays down), on a fresh
/// database; notices to `smtp` (each rejection its own mail: no burst summary), documents to
/// the webhook `receiver`.
fn shared_store(smtp: &SmtpServer, receiver: &Receiver) -> Workspace {
    let ws = Workspace {
        dir: tempfile::tempdir().expect("temp dir"),
        store_url: Some(Postgres::shared().fresh_database("claims")),
    };
    let mut config = format!(
        "formats = \"formats\"\n{}{}",
        ws.store_section(),
        dns_section()
    );
    for n in 1..=BRANCHES {
        config.push_str(&format!(
            "[[source]]\nname = \"branch-{n}\"\nkind = \"dir\"\npath = \"in-{n}\"\n\
             archive = \"archiv-{n}\"\nerror = \"fehler-{n}\"\nsettle = \"1s\"\nrescan = \"2s\"\n"
        ));
        for folder in ["in", "archiv", "fehler"] {
            std::fs::create_dir_all(ws.path(&format!("{folder}-{n}"))).unwrap();
        }
    }
    config.push_str(
        "[[source]]\nname = \"gone\"\nkind = \"dir\"\npath = \"gone-in\"\narchive = \"gone-archiv\"\n\
         error = \"gone-fehler\"\nschedule = \"every 1s\"\n",
    );
    config.push_str(&format!(
        "[[connector]]\nname = \"erp\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url()
    ));
    config.push_str(&smtp.notify_section("burst = 100\ndown_after = \"2s\"\n"));
    std::fs::create_dir_all(ws.path("formats")).unwrap();
    std::fs::write(ws.path("eingang.toml"), config).unwrap();
    ws
}

#[test]
fn two_daemons_on_one_store_send_each_notice_and_each_document_once() {
    let smtp = SmtpServer::start();
    let receiver = Receiver::start(Mode::Accept, 0);
    let ws = shared_store(&smtp, &receiver);
    let _daemons = Daemons(vec![
        ws.spawn_logged(&["run"], "a.log"),
        ws.spawn_logged(&["run"], "b.log"),
    ]);
    for n in 1..=BRANCHES {
        for i in 0..BROKEN_PER_BRANCH {
            ws.drop_file(&format!("in-{n}"), &format!("kaputt-{i}.xml"), b"<broken");
        }
        for i in 0..NOTES_PER_BRANCH {
            let number = format!("LS-{n}-{i}");
            ws.drop_file(
                &format!("in-{n}"),
                &format!("{number}.xml"),
                &opentrans(&number, "1"),
            );
        }
    }
    let rejections = BRANCHES * BROKEN_PER_BRANCH;
    let documents = BRANCHES * NOTES_PER_BRANCH;
    // Every rejection, and the one outage of `gone`.
    let mails = smtp.wait_for(rejections + 1, Duration::from_secs(90));
    let posted = receiver.wait_applied(documents, Duration::from_secs(90));
    assert_eq!(posted.len(), documents, "every document handed off");
    // The daemons go on looking at the outbox for a while: nothing goes out again.
    std::thread::sleep(Duration::from_secs(5));
    let mails_later = smtp.received();
    assert_eq!(
        mails_later.len(),
        mails.len(),
        "a notice went out again after all were sent"
    );
    let mut notices: HashMap<String, usize> = HashMap::new();
    for mail in &mails_later {
        let notice = mail.header("X-Eingang-Notice").expect("an eingang notice");
        *notices.entry(notice).or_default() += 1;
    }
    let twice: Vec<&String> = notices
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(
        notices
            .keys()
            .filter(|k| k.starts_with("rejected "))
            .count(),
        rejections
    );
    assert_eq!(
        notices.keys().filter(|k| k.starts_with("down ")).count(),
        1,
        "one down notice for the outage, though both daemons watch it: {notices:?}"
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'down'"),
        1
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND attempts = 1"),
        (rejections + 1) as i64,
        "one attempt each"
    );
    let requests = receiver.requests();
    let mut ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (requests.len(), ids.len()),
        (documents, documents),
        "each document posted once"
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM handoff WHERE state = 'delivered' AND attempts = 1"),
        documents as i64
    );
    eprintln!(
        "notices sent by: {:?}",
        ws.query_column("SELECT claimed_by || ': ' || COUNT(*) FROM outbox GROUP BY claimed_by")
    );
}
