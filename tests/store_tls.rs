//! A PostgreSQL store reached over TLS: the server's certificate is checked against `ca_file`
//! (or the system's roots) and its host name, every session of eingang is encrypted, and a
//! certificate eingang cannot trust is refused in words that say what to do.

#[path = "support/dovecot.rs"]
mod dovecot;
mod support;

use std::time::Duration;

use support::postgres::{Postgres, query};
use support::{Workspace, stdout, wait_until};

fn workspace(url: &str, store_extra: &str) -> Workspace {
    let ws = Workspace {
        dir: tempfile::tempdir().expect("temp dir"),
        store_url: Some(url.to_owned()),
    };
    std::fs::create_dir_all(ws.path("formats")).unwrap();
    for d in ["in", "archiv", "fehler"] {
        std::fs::create_dir_all(ws.path(d)).unwrap();
    }
    std::fs::write(
        ws.path("eingang.toml"),
        format!(
            "formats = \"formats\"\n[store]\nurl = \"{url}\"\n{store_extra}{}\
             [[source]]\nname = \"drop\"\nkind = \"dir\"\npath = \"in\"\narchive = \"archiv\"\n\
             error = \"fehler\"\nsettle = \"1s\"\nrescan = \"2s\"\n",
            support::dns_section()
        ),
    )
    .unwrap();
    ws
}

#[test]
fn a_store_over_tls_checks_the_servers_certificate_and_encrypts_every_session() {
    let (ca, cert, key) = dovecot::certificates();
    let server = Postgres::start_with_tls(&cert, &key);
    let plain = server.fresh_database("tls");
    let name = plain.rsplit('/').next().unwrap().to_owned();
    let url = format!(
        "{}?sslmode=verify-full",
        plain.replace("127.0.0.1", "localhost")
    );

    let ws = workspace(&url, "ca_file = \"ca.pem\"\n");
    std::fs::write(ws.path("ca.pem"), &ca).unwrap();
    let out = ws.run(&["check"]);
    assert!(out.status.success(), "check over TLS: {}", stdout(&out));

    let mut daemon = ws.spawn(&["run"]);
    ws.drop_file("in", "LS-1.xml", &support::opentrans("LS-1", "3"));
    let archived = wait_until(Duration::from_secs(30), || ws.files("archiv").len() == 1);
    let sessions = query(
        &plain,
        &format!(
            "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = '{name}' AND a.application_name LIKE 'eingang%'"
        ),
    )
    .unwrap();
    support::stop(&mut daemon);
    assert!(archived, "the daemon stored the file over TLS");
    assert!(
        sessions.len() >= 3,
        "the store, its lock and the source's lease: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|r| r[0].as_deref() == Some("true")),
        "every session of eingang is encrypted: {sessions:?}"
    );

    // Without the CA the certificate is not trusted, and the admin is told what to give.
    let untrusting = workspace(&url, "");
    let out = untrusting.run(&["check"]);
    let said = stdout(&out);
    assert!(!out.status.success(), "an untrusted certificate is refused");
    assert!(
        said.contains("give that certificate as ca_file"),
        "the refusal says what to do: {said}"
    );

    // A server that speaks no TLS is not talked to in plain text when TLS was asked for.
    let plain_server = Postgres::shared();
    let plain_only = format!("{}?sslmode=require", plain_server.fresh_database("no_tls"));
    let out = workspace(&plain_only, "").run(&["check"]);
    assert!(
        !out.status.success(),
        "no fallback to plain text: {}",
        stdout(&out)
    );
}
