//! Notices end to end against a real SMTP server (aiosmtpd with STARTTLS on a test CA),
//! through the built binary: DESIGN.md promise 4, every failure reaches a person exactly once;
//! source down and up alerts; bursts summarized; `eingang check` for `[notify]`.

mod support;

use std::collections::HashSet;

use mail_parser::MimeHeaders;
use std::process::Child;
use std::time::Duration;

use support::smtp::{Options, Received, SmtpServer};
use support::{Workspace, message, stderr, stdout, wait_until};

/// A workspace whose drop source has `source_extra` lines, with `[notify]` for `smtp`.
fn workspace(smtp: &SmtpServer, source_extra: &str, notify_extra: &str) -> Workspace {
    Workspace::new(&format!(
        "{source_extra}\n{}",
        smtp.notify_section(notify_extra)
    ))
}

fn unknown_sender_mail(subject_header: &str) -> Vec<u8> {
    let mail = message(
        "versand@acme-neu.de",
        "m-7@acme-neu.de",
        "export.csv",
        "text/csv",
        b"Artikel;Menge\r\nA-1;2\r\n",
    );
    let text = String::from_utf8(mail).unwrap();
    text.replace("Subject: Lieferschein export.csv", subject_header)
        .into_bytes()
}

fn stop(child: &mut Child) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let stopped = wait_until(Duration::from_secs(15), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !stopped {
        let _ = child.kill();
        panic!("eingang run did not stop within 15 s of SIGTERM");
    }
}

/// `eingang run` with its log in `run.log` of the workspace, to watch for what it did.
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

fn log_has(ws: &Workspace, text: &str) -> bool {
    std::fs::read_to_string(ws.path("run.log")).is_ok_and(|log| log.contains(text))
}

/// A number from the store, or `None` while the daemon has not created it yet.
fn try_query(ws: &Workspace, sql: &str) -> Option<i64> {
    ws.try_query_text(sql).ok()??.parse().ok()
}

fn pending(ws: &Workspace) -> i64 {
    ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
}

fn distinct_ids(mails: &[Received]) -> usize {
    mails
        .iter()
        .map(Received::message_id)
        .collect::<HashSet<_>>()
        .len()
}

#[test]
fn a_rejected_item_gives_one_mail_to_the_source_group_with_its_content() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "notify = [\"lager@example.com\"]", "");
    let original = unknown_sender_mail("Subject: Lieferschein export.csv");
    ws.drop_file("in", "mail.eml", &original);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("notices: 1 done, 0 waiting"),
        "{}",
        stderr(&out)
    );
    let mails = smtp.received();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    let id = ws.query_i64("SELECT id FROM items WHERE outcome = 'rejected'");
    assert_eq!(
        mail.rcpt_tos,
        ["lager@example.com"],
        "the source's group, not the admins"
    );
    assert_eq!(mail.mail_from, "eingang@example.com");
    assert_eq!(mail.header("To").as_deref(), Some("lager@example.com"));
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert_eq!(
        mail.header("X-Eingang-Notice"),
        Some(format!(
            "rejected {}",
            ws.query_i64("SELECT id FROM outbox")
        ))
    );
    assert!(
        mail.message_id().starts_with("eingang."),
        "{}",
        mail.message_id()
    );
    assert!(
        mail.message_id().ends_with("@example.com"),
        "{}",
        mail.message_id()
    );
    let subject = mail.subject();
    for part in [
        "drop",
        "Lieferant unbekannt",
        "unbekannter Absender",
        "Lieferschein export.csv",
    ] {
        assert!(
            subject.contains(part),
            "{part:?} not in subject {subject:?}"
        );
    }
    let body = mail.body();
    for part in [
        "versand@acme-neu.de",
        "Betreff:",
        "Lieferschein export.csv",
        "Datei(en):   export.csv",
        "unbekannter Absender versand@acme-neu.de für export.csv",
        "20.11.2026",
        &format!("{}", ws.path("fehler/mail.eml").display()),
        &format!(
            "unter `senders` in {} (neue Lieferantendatei) eintragen",
            ws.path("formats/acme-neu.toml").display()
        ),
        &format!("eingang.toml reprocess {id}"),
    ] {
        assert!(body.contains(part), "{part:?} not in body:\n{body}");
    }
    let parsed = mail.parsed();
    let attachment = parsed.attachments().next().expect("the item is attached");
    assert_eq!(attachment.attachment_name(), Some("mail.eml"));
    assert_eq!(attachment.contents(), original.as_slice());
    // Sent once: nothing more on the next runs, and the kept bytes are gone.
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox_original"), 0);
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'sent'"),
        1
    );
}

#[test]
fn without_a_source_group_the_admins_get_it_in_english_if_configured() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "language = \"en\"\n");
    ws.drop_file("in", "kaputt.xml", b"<DISPATCHNOTIFICATION><oops>");
    assert!(ws.run(&["sync"]).status.success());
    let mails = smtp.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_tos, ["it@example.com"]);
    let subject = mails[0].subject();
    assert!(
        subject.contains("unknown supplier: unreadable file – »kaputt.xml«"),
        "{subject}"
    );
    assert!(
        mails[0].body().contains("What to do:"),
        "{}",
        mails[0].body()
    );
}

#[test]
fn smtp_down_items_rejected_server_back_every_notice_arrives_once() {
    let mut smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    smtp.stop();
    let mut daemon = spawn_logged(&ws);
    for name in ["a.xml", "b.xml", "c.xml"] {
        ws.drop_file("in", name, b"<broken");
    }
    let rejected = wait_until(Duration::from_secs(15), || ws.files("fehler").len() == 6);
    let tried = wait_until(Duration::from_secs(10), || log_has(&ws, "notices not sent"));
    assert!(smtp.received().is_empty());
    smtp.restart();
    let mails = smtp.wait_for(3, Duration::from_secs(40));
    let drained = wait_until(Duration::from_secs(10), || pending(&ws) == 0);
    stop(&mut daemon);
    assert!(
        rejected && tried,
        "items not rejected: {:?}",
        ws.files("fehler")
    );
    assert!(drained, "notices left in the outbox");
    assert_eq!(mails.len(), 3, "three notices, once each");
    assert_eq!(smtp.received().len(), 3);
    assert_eq!(distinct_ids(&mails), 3);
    let subjects: HashSet<String> = mails.iter().map(Received::subject).collect();
    for name in ["a.xml", "b.xml", "c.xml"] {
        assert!(
            subjects.iter().any(|s| s.ends_with(&format!("»{name}«"))),
            "{name}: {subjects:?}"
        );
    }
}

#[test]
fn a_restart_while_smtp_is_down_loses_none_and_doubles_none() {
    let mut smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    smtp.stop();
    let mut daemon = spawn_logged(&ws);
    ws.drop_file("in", "a.xml", b"<broken");
    ws.drop_file("in", "b.xml", b"not xml");
    let tried = wait_until(Duration::from_secs(20), || {
        ws.files("fehler").len() == 4 && log_has(&ws, "notices not sent")
    });
    stop(&mut daemon);
    assert!(tried, "no attempt was made while the server was down");
    assert_eq!(pending(&ws), 2);
    smtp.restart();
    let mut daemon = spawn_logged(&ws);
    let mails = smtp.wait_for(2, Duration::from_secs(20));
    let drained = wait_until(Duration::from_secs(10), || pending(&ws) == 0);
    stop(&mut daemon);
    assert!(drained, "notices left in the outbox");
    assert_eq!(
        smtp.received().len(),
        2,
        "{:?}",
        mails.iter().map(Received::subject).collect::<Vec<_>>()
    );
    assert_eq!(distinct_ids(&mails), 2);
}

#[cfg(feature = "fault-points")]
#[test]
fn killed_between_send_and_mark_the_retry_repeats_the_message_id() {
    use std::os::unix::process::ExitStatusExt;
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    ws.drop_file("in", "a.xml", b"<broken");
    ws.drop_file("in", "b.xml", b"not xml");
    let out = ws.run_env(&["sync"], &[("EINGANG_FAULT", "after_send_before_mark")]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "fault point not reached"
    );
    let first = smtp.received();
    assert_eq!(first.len(), 1, "the server took the first notice");
    // The attempt and the Message-ID were committed before the send.
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND attempts = 1 AND message_id IS NOT NULL"),
        1
    );
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.run(&["sync"]).status.success());
    let mails = smtp.received();
    assert_eq!(
        mails.len(),
        3,
        "the crash window repeats one notice, nothing else"
    );
    let repeated: Vec<&Received> = mails
        .iter()
        .filter(|m| m.message_id() == first[0].message_id())
        .collect();
    assert_eq!(
        repeated.len(),
        2,
        "the repeat is recognizable by its Message-ID"
    );
    assert_eq!(repeated[0].header("Date"), repeated[1].header("Date"));
    assert_eq!(distinct_ids(&mails), 2);
    assert_eq!(pending(&ws), 0);
    assert_eq!(ws.query_i64("SELECT MAX(attempts) FROM outbox"), 2);
}

#[test]
fn a_burst_of_25_rejections_gives_one_summary() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    for i in 1..=25 {
        ws.drop_file(
            "in",
            &format!("kaputt-{i:02}.xml"),
            format!("<broken {i}").as_bytes(),
        );
    }
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mails = smtp.received();
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        mails.iter().map(Received::subject).collect::<Vec<_>>()
    );
    let subject = mails[0].subject();
    assert!(
        subject.contains("25 Lieferungen abgelehnt (Sammelmeldung)"),
        "{subject}"
    );
    let body = mails[0].body();
    for i in 1..=25 {
        assert!(
            body.contains(&format!("kaputt-{i:02}.xml")),
            "kaputt-{i:02}.xml missing:\n{body}"
        );
    }
    let ids: Vec<String> = (1..=25).map(|i| i.to_string()).collect();
    assert!(
        body.contains(&format!("eingang.toml reprocess {}", ids.join(" "))),
        "{body}"
    );
    assert_eq!(pending(&ws), 0);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM outbox WHERE kind = 'rejected' AND state = 'sent' AND summary_id IS NOT NULL"), 25);
    // A few more right after the burst wait for the next summary instead of going one by one.
    ws.drop_file("in", "nachzuegler.xml", b"<late");
    assert!(ws.run(&["sync"]).status.success());
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(pending(&ws), 1);
}

#[test]
fn a_source_down_longer_than_down_after_gives_one_down_and_one_up_mail() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "down_after = \"2s\"\n");
    let mut daemon = spawn_logged(&ws);
    assert!(wait_until(Duration::from_secs(10), || {
        try_query(
            &ws,
            "SELECT COUNT(*) FROM source_state WHERE last_ok IS NOT NULL",
        ) == Some(1)
    }));
    std::fs::remove_dir_all(ws.path("in")).unwrap();
    let down = smtp.wait_for(1, Duration::from_secs(20));
    // The source keeps failing (its retries back off); no second down mail comes.
    let more = wait_until(Duration::from_secs(5), || smtp.received().len() > 1);
    let failures =
        ws.query_i64("SELECT COUNT(*) FROM source_state WHERE failing_since IS NOT NULL");
    std::fs::create_dir_all(ws.path("in")).unwrap();
    let both = smtp.wait_for(2, Duration::from_secs(40));
    let extra = wait_until(Duration::from_secs(3), || smtp.received().len() > 2);
    stop(&mut daemon);
    assert_eq!(down.len(), 1, "no down mail");
    assert!(
        !more,
        "more than one mail while down: {:?}",
        smtp.received()
            .iter()
            .map(Received::subject)
            .collect::<Vec<_>>()
    );
    assert_eq!(failures, 1, "the source was still failing");
    let subject = down[0].subject();
    assert!(
        subject.starts_with("eingang: Quelle drop ausgefallen seit "),
        "{subject}"
    );
    assert!(subject.contains("No such file or directory"), "{subject}");
    assert_eq!(down[0].rcpt_tos, ["it@example.com"]);
    assert_eq!(both.len(), 2);
    assert_eq!(
        both[1].subject(),
        "eingang: Quelle drop funktioniert wieder"
    );
    assert!(
        !extra,
        "a third mail: {:?}",
        smtp.received()
            .iter()
            .map(Received::subject)
            .collect::<Vec<_>>()
    );
}

#[cfg(feature = "fault-points")]
#[test]
fn a_source_task_that_panics_mid_pass_is_restarted_with_one_down_and_one_up_mail() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "down_after = \"2s\"\n");
    for n in 1..=3 {
        ws.drop_file(
            "in",
            &format!("ls-{n}.xml"),
            &support::opentrans(&format!("LS-P{n}"), "2"),
        );
    }
    // The source task panics between a batch's commit and its move, three times in a row
    // (restarted after 1, 2 and 4 s), then works.
    let log = std::fs::File::create(ws.path("run.log")).unwrap();
    let mut daemon = ws
        .command(&["run"], &[("EINGANG_FAULT", "panic:mid_pass:3")])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let shown_down = wait_until(Duration::from_secs(15), || {
        stdout(&ws.run(&["status"])).contains("last error: the task failed: fault point mid_pass")
    });
    let both = smtp.wait_for(2, Duration::from_secs(40));
    let drained = wait_until(Duration::from_secs(20), || {
        ws.files("archiv").len() == 3 && ws.files("in").is_empty()
    });
    let extra = wait_until(Duration::from_secs(3), || smtp.received().len() > 2);
    let alive = daemon.try_wait().unwrap().is_none();
    let shown_up = stdout(&ws.run(&["status"]));
    stop(&mut daemon);
    assert!(
        alive,
        "the daemon died with its task:\n{}",
        std::fs::read_to_string(ws.path("run.log")).unwrap_or_default()
    );
    assert!(shown_down, "status never showed the failed task");
    assert!(
        log_has(&ws, "task stopped; restarting it"),
        "no word in the log"
    );
    let subjects: Vec<String> = both.iter().map(Received::subject).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(
        subjects[0].starts_with("eingang: Quelle drop ausgefallen seit ")
            && subjects[0].contains("fault point mid_pass"),
        "{subjects:?}"
    );
    assert_eq!(subjects[1], "eingang: Quelle drop funktioniert wieder");
    assert!(!extra, "a third mail: {:?}", smtp.received().len());
    assert!(
        drained,
        "inbox {:?}, archive {:?}",
        ws.files("in"),
        ws.files("archiv")
    );
    assert!(shown_up.contains("last error: none"), "{shown_up}");
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM documents"), 3);
    assert_eq!(ws.query_i64("SELECT COUNT(*) FROM items"), 3);
    assert!(ws.files("fehler").is_empty(), "{:?}", ws.files("fehler"));
}

#[test]
fn a_subject_with_an_injected_crlf_stays_one_header() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    // RFC 2047 lets a sender put any bytes into a decoded Subject, CR and LF included; a file
    // name on Linux may hold them too (it goes into the subject and the attachment name).
    let injected = "Lieferung\r\nBcc: attacker@example.invalid\r\nX-Evil: 1";
    let encoded = base64_encode(injected.as_bytes());
    let mail = unknown_sender_mail(&format!("Subject: =?utf-8?b?{encoded}?="));
    ws.drop_file("in", "injected.eml", &mail);
    ws.drop_file(
        "in",
        "ls\r\nBcc: attacker@example.invalid\r\n.xml",
        b"<broken file name",
    );
    assert!(ws.run(&["sync"]).status.success());
    let mails = smtp.received();
    assert_eq!(mails.len(), 2);
    for notice in &mails {
        assert_eq!(notice.rcpt_tos, ["it@example.com"]);
        let head = notice.head();
        assert!(
            !String::from_utf8_lossy(&notice.raw).lines().any(|l| {
                let l = l.to_ascii_lowercase();
                l.starts_with("bcc:") || l.starts_with("x-evil:")
            }),
            "an injected header line:\n{head}"
        );
        let subject = notice.subject();
        assert!(!subject.contains(['\r', '\n']), "{subject:?}");
        assert!(
            subject.contains("Bcc: attacker@example.invalid"),
            "{subject}"
        );
        assert_eq!(notice.parsed().header_values("Subject").count(), 1);
        assert_eq!(notice.parsed().header_values("To").count(), 1);
    }
    let subjects: Vec<String> = mails.iter().map(Received::subject).collect();
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("Lieferung Bcc: attacker@example.invalid X-Evil: 1")),
        "{subjects:?}"
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn check_asks_the_server_for_sender_and_recipients_without_sending() {
    let smtp = SmtpServer::start_with(Options {
        refuse: Some("niemand"),
        ..Options::default()
    });
    let ws = workspace(&smtp, "notify = [\"lager@example.com\"]", "");
    let out = ws.run(&["check"]);
    let lines = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{lines}{}", stderr(&out));
    for line in [
        format!("notify smtp 127.0.0.1:{} (STARTTLS): ok", smtp.port),
        "notify sender eingang@example.com: ok".to_owned(),
        "notify recipient it@example.com: ok".to_owned(),
        "notify recipient lager@example.com: ok".to_owned(),
    ] {
        assert!(
            lines.lines().any(|l| l == line),
            "{line:?} not in:\n{lines}"
        );
    }
    // A recipient the server refuses fails the check.
    let config = std::fs::read_to_string(ws.path("eingang.toml"))
        .unwrap()
        .replace(
            "admins = [\"it@example.com\"]",
            "admins = [\"it@example.com\", \"niemand@example.com\"]",
        );
    std::fs::write(ws.path("eingang.toml"), config).unwrap();
    let out = ws.run(&["check"]);
    let lines = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{lines}");
    assert!(
        lines.lines().any(
            |l| l.starts_with("notify recipient niemand@example.com: FAILED: ")
                && l.contains("550")
        ),
        "{lines}"
    );
    assert!(smtp.received().is_empty(), "check sent a message");
}

#[test]
fn check_refuses_an_untrusted_certificate_and_a_server_without_starttls() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    let untrusted: String = config
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(ws.path("eingang.toml"), untrusted).unwrap();
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("notify smtp"))
        .map(str::to_owned);
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("FAILED") && l.contains("certificate")),
        "{line:?}"
    );

    let plain = SmtpServer::start_with(Options {
        tls: "none",
        ..Options::default()
    });
    let ws = Workspace::new(
        &plain
            .notify_section("")
            .replace("tls = \"none\"", "tls = \"starttls\""),
    );
    let out = ws.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("does not offer STARTTLS, which tls = \"starttls\" requires"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn implicit_tls_with_auth_and_the_password_never_in_the_log() {
    const PASSWORD: &str = "S3cr3t-notify-7f3a";
    let smtp = SmtpServer::start_with(Options {
        tls: "implicit",
        login: Some(("eingang", PASSWORD)),
        ..Options::default()
    });
    let ws = workspace(
        &smtp,
        "",
        "user = \"eingang\"\npassword_env = \"EINGANG_TEST_SMTP_PASSWORD\"\n",
    );
    let env = [
        ("EINGANG_TEST_SMTP_PASSWORD", PASSWORD),
        ("EINGANG_LOG", "trace"),
    ];
    let out = ws.run_env(&["check"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("notify login eingang: ok"),
        "{}",
        stdout(&out)
    );
    ws.drop_file("in", "kaputt.xml", b"<broken");
    let out = ws.run_env(&["sync"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(smtp.received().len(), 1);
    let plain = base64_encode(format!("\0eingang\0{PASSWORD}").as_bytes());
    for text in [stderr(&out), stdout(&out)] {
        assert!(
            !text.contains(PASSWORD) && !text.contains(&plain),
            "password in the log:\n{text}"
        );
    }
    // A wrong password fails the login line, and the password still does not show.
    let out = ws.run_env(
        &["check"],
        &[("EINGANG_TEST_SMTP_PASSWORD", "wrong-password-1")],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("notify login eingang: FAILED"), "{text}");
    assert!(!text.contains("wrong-password-1"), "{text}");
}

#[test]
fn without_notify_every_notice_goes_to_the_log_once() {
    let ws = Workspace::new("");
    ws.drop_file("in", "kaputt.xml", b"<broken");
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("log only"), "{}", stderr(&out));
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'logged'"),
        1
    );
    let out = ws.run(&["sync"]);
    assert!(
        !stderr(&out).contains("log only"),
        "logged twice: {}",
        stderr(&out)
    );
}

#[test]
fn a_notice_that_comes_back_as_an_item_is_not_mailed_about() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    ws.drop_file("in", "kaputt.xml", b"<broken");
    assert!(ws.run(&["sync"]).status.success());
    let notice = smtp.received().remove(0);
    // The admin mailbox is also a watched one: the notice arrives as an item and is rejected
    // (it carries no delivery note), but a notice about it would come back again.
    ws.drop_file("in", "zurueck.eml", &notice.raw);
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ws.files("fehler").len(), 4, "{:?}", ws.files("fehler"));
    assert_eq!(smtp.received().len(), 1, "a notice about a notice");
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'suppressed'"),
        1
    );
}

#[test]
fn a_mail_forged_from_the_notice_address_is_not_taken_for_our_own_notice() {
    let smtp = SmtpServer::start();
    let ws = workspace(&smtp, "", "");
    // From eingang's own address, even with the header, but with a Message-ID this store
    // never gave: an ordinary item, told about like any other.
    let forged = support::message(
        "eingang@example.com",
        "eingang.0000000000000000.1@example.com",
        "bestellung.csv",
        "text/csv",
        b"Artikel;Menge\r\nA-1;2\r\n",
    );
    let forged = String::from_utf8(forged).unwrap().replacen(
        "MIME-Version",
        "X-Eingang-Notice: rejected 1\r\nMIME-Version",
        1,
    );
    ws.drop_file("in", "gefaelscht.eml", forged.as_bytes());
    let out = ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mails = smtp.wait_for(1, Duration::from_secs(15));
    assert_eq!(
        mails.len(),
        1,
        "the forged mail was taken for our own notice"
    );
    assert_eq!(
        ws.query_i64("SELECT COUNT(*) FROM outbox WHERE state = 'suppressed'"),
        0
    );
}

#[test]
fn a_notice_the_server_refuses_stays_and_does_not_hold_up_the_others() {
    let smtp = SmtpServer::start_with(Options {
        refuse: Some("niemand"),
        ..Options::default()
    });
    // The first source's group is an address the server refuses (550 to RCPT TO).
    let second = "[[source]]\nname = \"zwei\"\nkind = \"dir\"\npath = \"in2\"\narchive = \"archiv\"\n\
                  error = \"fehler\"\nsettle = \"1s\"\nrescan = \"2s\"\n";
    let ws = workspace(
        &smtp,
        &format!("notify = [\"niemand@example.com\"]\n{second}"),
        "",
    );
    std::fs::create_dir_all(ws.path("in2")).unwrap();
    ws.drop_file("in", "eins.xml", b"<broken one");
    ws.drop_file("in2", "zwei.xml", b"<broken two");
    let mut daemon = spawn_logged(&ws);
    let mails = smtp.wait_for(1, Duration::from_secs(20));
    let refused = wait_until(Duration::from_secs(10), || {
        log_has(&ws, "this notice cannot be sent")
    });
    stop(&mut daemon);
    assert!(
        refused,
        "the refusal was not logged:\n{}",
        std::fs::read_to_string(ws.path("run.log")).unwrap_or_default()
    );
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_tos, ["it@example.com"]);
    assert!(
        mails[0].subject().ends_with("»zwei.xml«"),
        "{}",
        mails[0].subject()
    );
    assert_eq!(
        ws.query_i64(
            "SELECT COUNT(*) FROM outbox o JOIN items i ON i.id = o.item_id
             WHERE o.state = 'pending' AND i.file_name = 'eins.xml'"
        ),
        1
    );
}
