//! OAuth2 logins end to end, through the built binary, against real servers on loopback: a
//! Dovecot whose oauth2 passdb asks the tests' identity provider about every token, aiosmtpd
//! taking XOAUTH2 and OAUTHBEARER the same way, and the identity provider itself
//! (`tests/support/oauth_idp.py`: rotating refresh tokens with reuse detection, client
//! credentials, the device-code flow, introspection, counters). Each test registers its own
//! client and mailbox user, so the tests run side by side.

#[path = "support/dovecot.rs"]
mod dovecot;
#[path = "support/oauth.rs"]
mod idp;
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use dovecot::{Client, Dovecot, new_user};
use idp::{ByeProxy, Idp, IdpClient, activate, oauth_dovecot, shared_oauth_dovecot};
use serde_json::{Value, json};
use support::smtp::{Options, SmtpServer};
use support::{Workspace, message, opentrans, stderr, stdout, wait_until};

/// The server names of the configured folders `Eingang`, `Archiv`, `Fehler` (Dovecot here
/// keeps every folder below `INBOX.`).
const INBOX: &str = "INBOX.Eingang";
const ARCHIVE: &str = "INBOX.Archiv";
const ERROR: &str = "INBOX.Fehler";
/// The scope the tests' clients ask for.
const SCOPE: &str = "mail";

/// One test's mailbox, client at the identity provider, and workspace.
struct Case {
    ws: Workspace,
    mbox: Client,
    user: String,
    client: IdpClient,
}

/// How eingang reaches the IMAP server.
enum Reach {
    /// Implicit TLS to this Dovecot.
    Tls(u16),
    /// Plaintext to this port on loopback (a proxy).
    Plain(u16),
}

/// A mailbox user of `dovecot` with its three folders, a client `settings` at the shared
/// identity provider (its tokens belong to that user unless the settings say otherwise), and
/// a workspace whose source `mail` logs in with OAuth2; `source` lines are added to the
/// source, `tail` (a `[notify]` section, say) to the config.
fn case(
    test: &str,
    dovecot: &Dovecot,
    reach: Reach,
    settings: Value,
    source: &str,
    tail: &str,
) -> Case {
    let idp = Idp::shared();
    let user = new_user(test);
    let mut settings = settings;
    if settings.get("user").is_none() {
        settings["user"] = json!(user);
    }
    let client = idp.client(&format!("app-{user}"), settings);
    let mbox = dovecot.client(&user);
    for folder in [INBOX, ARCHIVE, ERROR] {
        mbox.create(folder);
    }
    let ws = Workspace::bare();
    std::fs::create_dir_all(ws.path("formats")).expect("formats");
    std::fs::write(ws.path("ca.pem"), &dovecot::shared_certificates().0).expect("ca");
    let (port, tls) = match reach {
        Reach::Tls(port) => (port, "implicit"),
        Reach::Plain(port) => (port, "none"),
    };
    let config = format!(
        "formats = \"formats\"\n{}{}\
         [[source]]\nname = \"mail\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n\
         ca_file = \"ca.pem\"\nuser = \"{user}\"\nauth = \"oauth2\"\n\
         oauth_token_url = \"{}\"\noauth_device_url = \"{}\"\noauth_client_id = \"{}\"\noauth_scope = \"{SCOPE}\"\n\
         inbox = \"Eingang\"\narchive = \"Archiv\"\nerror = \"Fehler\"\n{source}\n{tail}",
        ws.store_section(),
        support::dns_section(),
        idp.url("/token"),
        idp.url("/device"),
        client.id,
    );
    std::fs::write(ws.path("eingang.toml"), config).expect("config");
    Case {
        ws,
        mbox,
        user,
        client,
    }
}

impl Case {
    /// Gives the source a refresh token from a first sign-in, as `oauth_refresh_token_file`.
    fn seed_refresh_token(&self) -> String {
        let token = self.client.seed(&self.user, SCOPE);
        std::fs::write(self.ws.path("rt"), format!("{token}\n")).expect("rt");
        token
    }

    /// A `[notify]` section for `smtp`, logging in as the mailbox user with the same OAuth2
    /// account as the source (`oauth` lines), or without AUTH when `oauth` is `None`.
    fn notify(&self, smtp: &SmtpServer, oauth: Option<&str>, extra: &str) -> String {
        let idp = Idp::shared();
        let login = match oauth {
            Some(lines) => format!(
                "user = \"{}\"\nauth = \"oauth2\"\noauth_token_url = \"{}\"\noauth_client_id = \"{}\"\noauth_scope = \"{SCOPE}\"\n{lines}\n",
                self.user,
                idp.url("/token"),
                self.client.id
            ),
            None => String::new(),
        };
        smtp.notify_section(&format!("{login}{extra}"))
    }

    /// Appends `[notify]` (or anything) to the config.
    fn append_config(&self, text: &str) {
        let path = self.ws.path("eingang.toml");
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(text);
        std::fs::write(path, config).expect("config");
    }

    /// The refresh token the store holds for the source's account.
    fn stored_refresh_token(&self) -> Option<String> {
        self.ws
            .try_query_text("SELECT refresh_token FROM oauth_account")
            .ok()
            .flatten()
    }

    /// The kinds of the outbox rows, oldest first.
    fn outbox(&self) -> Vec<String> {
        self.ws
            .query_column("SELECT kind FROM outbox ORDER BY id")
            .into_iter()
            .map(|kind| kind.expect("a kind"))
            .collect()
    }

    /// The source's last error in the store, if it has failed since it last worked.
    fn last_error(&self) -> Option<String> {
        self.ws
            .try_query_text(
                "SELECT last_error FROM source_state WHERE source = 'mail' AND failing_since IS NOT NULL",
            )
            .ok()
            .flatten()
    }

    /// `eingang run`, its log (at `log` level) going to `daemon.log` in the workspace.
    fn daemon(&self, log: &str) -> std::process::Child {
        let file = std::fs::File::create(self.ws.path("daemon.log")).expect("log file");
        self.ws
            .command(&["run"], &[("EINGANG_LOG", log)])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn eingang run")
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.ws.path("daemon.log")).unwrap_or_default()
    }
}

fn note_message(number: &str) -> Vec<u8> {
    message(
        "lieferant@example.com",
        &format!("{number}@example.com"),
        &format!("{number}.xml"),
        "application/xml",
        &opentrans(number, "1"),
    )
}

/// A message no format takes: it is rejected, with one notice.
fn unreadable_message(n: &str) -> Vec<u8> {
    message(
        "unbekannt@example.com",
        &format!("{n}@example.com"),
        "notiz.txt",
        "text/plain",
        b"nur ein Gruss",
    )
}

fn logins(dovecot: &Dovecot, user: &str, method: &str) -> usize {
    dovecot
        .log()
        .lines()
        .filter(|l| l.contains("Login: user=<") && l.contains(&format!("<{user}>")))
        .filter(|l| l.contains(&format!("method={method}")))
        .count()
}

fn stop(child: &mut std::process::Child) {
    let status = support::stop(child);
    assert!(status.success(), "eingang run ended with {status:?}");
}

#[test]
fn imap_logs_in_with_xoauth2_and_each_rotated_refresh_token_is_used_once() {
    let dovecot = shared_oauth_dovecot();
    let c = case(
        "xoauth2",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({}),
        "oauth_mechanism = \"xoauth2\"\noauth_refresh_token_file = \"rt\"\n",
        "",
    );
    let first = c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-XO-1"), None);
    let out = c.ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.mbox.count(ARCHIVE), 1);
    assert_eq!(logins(dovecot, &c.user, "XOAUTH2"), 1, "{}", dovecot.log());
    let rotated = c.client.newest_refresh_token().expect("a rotated token");
    assert_ne!(rotated, first);
    assert_eq!(c.stored_refresh_token().as_deref(), Some(rotated.as_str()));
    // A second run starts from the stored token, not from the configured (spent) one.
    c.mbox.append(INBOX, &note_message("LS-XO-2"), None);
    let out = c.ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.mbox.count(ARCHIVE), 2);
    let stats = c.client.stats();
    assert_eq!(stats["refresh_used"], json!([first, rotated]));
    assert_eq!(stats["reuse"], 0);
}

#[test]
fn imap_logs_in_with_oauthbearer_by_client_credentials() {
    let dovecot = shared_oauth_dovecot();
    let secret = format!("cc-secret-{}", new_user("cc"));
    let c = case(
        "bearer",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"secret": secret, "scope": SCOPE}),
        "oauth_grant = \"client_credentials\"\noauth_client_secret_env = \"EINGANG_TEST_CLIENT_SECRET\"\noauth_mechanism = \"oauthbearer\"\n",
        "",
    );
    c.mbox.append(INBOX, &note_message("LS-OB-1"), None);
    let out =
        c.ws.run_env(&["sync"], &[("EINGANG_TEST_CLIENT_SECRET", &secret)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.mbox.count(ARCHIVE), 1);
    assert_eq!(
        logins(dovecot, &c.user, "OAUTHBEARER"),
        1,
        "{}",
        dovecot.log()
    );
    assert_eq!(c.client.count("client_credentials"), 1);
    assert_eq!(
        c.stored_refresh_token(),
        None,
        "client credentials store nothing"
    );
}

#[test]
fn refused_tokens_and_grants_are_told_in_plain_words_with_the_servers_text() {
    let idp = Idp::shared();
    // Its own Dovecot: refused logins slow down later ones from the same address.
    let dovecot = oauth_dovecot(idp);
    let smtp = SmtpServer::start_with(Options {
        oauth_introspect: Some(idp.url("/introspect")),
        ..Options::default()
    });
    let secret = format!("s-{}", new_user("refused"));
    // The provider issues this client's tokens for another user: both servers refuse them.
    let c = case(
        "refused",
        &dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"secret": secret, "scope": SCOPE, "user": "jemand-anders"}),
        "oauth_grant = \"client_credentials\"\noauth_client_secret_env = \"EINGANG_TEST_CLIENT_SECRET\"\n",
        "",
    );
    let other = |name: &str, lines: &str| {
        format!(
            "[[source]]\nname = \"{name}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\nca_file = \"ca.pem\"\n\
             user = \"{}\"\nauth = \"oauth2\"\noauth_grant = \"client_credentials\"\noauth_token_url = \"{}\"\n\
             oauth_client_id = \"{}\"\ninbox = \"Eingang\"\narchive = \"Archiv\"\nerror = \"Fehler\"\n{lines}\n",
            dovecot.imaps_port,
            c.user,
            idp.url("/token"),
            c.client.id
        )
    };
    c.append_config(&other(
        "scope",
        "oauth_scope = \"other\"\noauth_client_secret_env = \"EINGANG_TEST_CLIENT_SECRET\"",
    ));
    c.append_config(&other(
        "secret",
        &format!("oauth_scope = \"{SCOPE}\"\noauth_client_secret_file = \"wrong-secret\""),
    ));
    std::fs::write(c.ws.path("wrong-secret"), "not-it\n").expect("secret file");
    c.append_config(&c.notify(
        &smtp,
        Some("oauth_grant = \"client_credentials\"\noauth_client_secret_env = \"EINGANG_TEST_CLIENT_SECRET\""),
        "",
    ));
    let out =
        c.ws.run_env(&["check"], &[("EINGANG_TEST_CLIENT_SECRET", &secret)]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let lines = stdout(&out);
    let line = |prefix: &str| {
        lines
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{lines}"))
            .to_owned()
    };
    assert!(
        line("source mail: oauth2 token").ends_with(": ok"),
        "{lines}"
    );
    let imap = line("source mail: imap ");
    for part in [
        "FAILED: login as",
        "XOAUTH2: [AUTHENTICATIONFAILED]",
        "its challenge: {",
        "401",
        "check oauth_scope",
    ] {
        assert!(imap.contains(part), "{part:?} missing in {imap}");
    }
    let scope = line("source scope: oauth2 token");
    assert!(
        scope.contains("FAILED") && scope.contains("the scope \"other\" was refused"),
        "{scope}"
    );
    assert!(scope.contains("invalid_scope: AADSTS70011"), "{scope}");
    let wrong = line("source secret: oauth2 token");
    assert!(
        wrong.contains("the client secret is wrong or expired"),
        "{wrong}"
    );
    assert!(wrong.contains("invalid_client"), "{wrong}");
    let notify = line("notify login ");
    for part in ["FAILED", "535", "its challenge: {", "401"] {
        assert!(notify.contains(part), "{part:?} missing in {notify}");
    }
    assert!(!lines.contains(&secret), "the client secret was printed");
    assert_eq!(smtp.auth_log(), [format!("XOAUTH2 refused {}", c.user)]);
}

#[test]
fn a_rotated_refresh_token_is_committed_before_use_and_survives_a_kill() {
    let dovecot = shared_oauth_dovecot();
    let c = case(
        "rotate-kill",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({}),
        "oauth_refresh_token_file = \"rt\"\n",
        "",
    );
    let first = c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-KILL-1"), None);
    let out =
        c.ws.run_env(&["sync"], &[("EINGANG_FAULT", "oauth_after_refresh_saved")]);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", stderr(&out));
    let rotated = c.client.newest_refresh_token().expect("rotated");
    assert_ne!(rotated, first);
    // Killed after the commit and before the access token was used: the store has the new
    // refresh token, and no server ever saw the access token.
    assert_eq!(c.stored_refresh_token().as_deref(), Some(rotated.as_str()));
    assert_eq!(c.client.count("introspect_active"), 0);
    assert_eq!(c.mbox.count(INBOX), 1);
    let out = c.ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.mbox.count(ARCHIVE), 1);
    let stats = c.client.stats();
    assert_eq!(
        stats["refresh_used"],
        json!([first, rotated]),
        "the old one is not sent again"
    );
    assert_eq!(stats["reuse"], 0);
    assert_eq!(stats["refresh_refused"], 0);
}

#[test]
fn an_old_refresh_token_is_refused_with_one_notice_naming_oauth_login() {
    let dovecot = shared_oauth_dovecot();
    let smtp = SmtpServer::start();
    let c = case(
        "reuse",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({}),
        "oauth_refresh_token_file = \"rt\"\n",
        "",
    );
    c.append_config(&c.notify(&smtp, None, "language = \"en\"\n"));
    c.seed_refresh_token();
    let out = c.ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A second store with the same config (a restored backup, a copied install) sends the
    // configured token again: the provider sees reuse, revokes the family and refuses it.
    let copy = Workspace::bare();
    for file in ["rt", "ca.pem"] {
        std::fs::copy(c.ws.path(file), copy.path(file)).expect("copy");
    }
    let config = std::fs::read_to_string(c.ws.path("eingang.toml")).expect("config");
    std::fs::write(
        copy.path("eingang.toml"),
        config.replace(&c.ws.store_section(), &copy.store_section()),
    )
    .expect("config");
    std::fs::create_dir_all(copy.path("formats")).expect("formats");
    let out = copy.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("run `eingang oauth login mail`"), "{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert_eq!(c.client.count("reuse"), 1);
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt_tos, ["it@example.com"]);
    assert!(
        mails[0].subject().contains("mail must sign in again"),
        "{}",
        mails[0].subject()
    );
    assert!(
        mails[0].body().contains(" oauth login mail"),
        "{}",
        mails[0].body()
    );
    assert!(
        mails[0].body().contains("reuse detected"),
        "{}",
        mails[0].body()
    );
    // Trying again sends no token to the provider and no second notice.
    let used = c.client.stats()["refresh_used"].as_array().map(Vec::len);
    let out = copy.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("eingang oauth login mail"));
    assert_eq!(
        c.client.stats()["refresh_used"].as_array().map(Vec::len),
        used
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(smtp.received().len(), 1);
}

#[test]
fn a_revoked_refresh_token_in_the_daemon_gives_one_notice_and_no_outage_notice() {
    let dovecot = shared_oauth_dovecot();
    let smtp = SmtpServer::start();
    let c = case(
        "revoked",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"ttl": 10}),
        "oauth_refresh_token_file = \"rt\"\nschedule = \"idle\"\n",
        "",
    );
    // A source down this long would be announced; the sign-in notice stands in for it.
    c.append_config(&c.notify(&smtp, None, "down_after = \"1s\"\n"));
    c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-REV-1"), None);
    let mut daemon = c.daemon("info");
    assert!(
        wait_until(Duration::from_secs(20), || c.mbox.count(ARCHIVE) == 1),
        "{}",
        c.daemon_log()
    );
    c.client.revoke();
    // The token lives 10 s and is renewed at 7.5 s: the refresh is refused then.
    let got = wait_until(Duration::from_secs(30), || !smtp.received().is_empty());
    // Retries back off (1 s, 2 s, 4 s ...) while the outage goes on past `down_after`.
    std::thread::sleep(Duration::from_secs(8));
    stop(&mut daemon);
    assert!(got, "no notice; log:\n{}", c.daemon_log());
    let mails = smtp.received();
    assert_eq!(
        mails.len(),
        1,
        "{:?}",
        mails.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    assert!(mails[0].body().contains(" oauth login mail"));
    assert_eq!(c.outbox(), ["reauth"]);
    assert_eq!(
        c.client.count("refresh_refused"),
        1,
        "no token is sent after the refusal"
    );
    assert!(
        c.last_error()
            .is_some_and(|e| e.contains("eingang oauth login mail")),
        "{:?}",
        c.last_error()
    );
}

#[test]
fn concurrent_logins_on_one_account_refresh_once() {
    let dovecot = shared_oauth_dovecot();
    let c = case(
        "single-flight",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"delay": 1}),
        "oauth_refresh_token_file = \"rt\"\n",
        "",
    );
    c.seed_refresh_token();
    let config = eingang::config::Config::load(&c.ws.path("eingang.toml")).expect("config");
    let eingang::config::SourceKind::Imap(remote) = &config.sources[0].kind else {
        panic!("an imap source");
    };
    let oauth = remote.oauth.clone().expect("oauth2");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let mut tokens: Vec<String> = runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let oauth = oauth.clone();
                tokio::spawn(async move {
                    eingang::oauth::access_token(&oauth)
                        .await
                        .map(|t| t.secret().to_owned())
                })
            })
            .collect();
        let mut tokens = Vec::new();
        for task in tasks {
            tokens.push(task.await.expect("task").expect("a token"));
        }
        tokens
    });
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every login got the same token");
    assert_eq!(c.client.count("refresh"), 1);
}

#[test]
fn the_imap_source_and_the_notifier_share_one_account_and_one_refresh() {
    let idp = Idp::shared();
    let dovecot = shared_oauth_dovecot();
    let smtp = SmtpServer::start_with(Options {
        oauth_introspect: Some(idp.url("/introspect")),
        ..Options::default()
    });
    let c = case(
        "shared",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({}),
        "oauth_refresh_token_file = \"rt\"\nschedule = \"idle\"\n",
        "",
    );
    c.append_config(&c.notify(&smtp, Some("oauth_refresh_token_file = \"rt\""), ""));
    c.seed_refresh_token();
    c.mbox.append(INBOX, &unreadable_message("shared-1"), None);
    let mut daemon = c.daemon("info");
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    stop(&mut daemon);
    assert_eq!(mails.len(), 1, "log:\n{}", c.daemon_log());
    assert_eq!(c.mbox.count(ERROR), 1);
    assert_eq!(smtp.auth_log(), [format!("XOAUTH2 ok {}", c.user)]);
    assert_eq!(c.client.count("refresh"), 1, "one refresh for both logins");
}

#[test]
fn token_expiry_during_idle_reauthenticates_without_an_outage() {
    let dovecot = shared_oauth_dovecot();
    let c = case(
        "idle-expiry",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"ttl": 12}),
        "oauth_refresh_token_file = \"rt\"\nschedule = \"idle\"\n",
        "",
    );
    c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-EXP-1"), None);
    let mut daemon = c.daemon("debug");
    assert!(
        wait_until(Duration::from_secs(20), || c.mbox.count(ARCHIVE) == 1),
        "{}",
        c.daemon_log()
    );
    // Each token lives 12 s and is renewed at 9 s: two renewals within about 20 s.
    let renewed = wait_until(Duration::from_secs(40), || c.client.count("refresh") >= 3);
    c.mbox.append(INBOX, &note_message("LS-EXP-2"), None);
    let imported = wait_until(Duration::from_secs(15), || c.mbox.count(ARCHIVE) == 2);
    stop(&mut daemon);
    assert!(renewed, "no renewals; log:\n{}", c.daemon_log());
    assert!(
        imported,
        "mail after a renewal was not imported; log:\n{}",
        c.daemon_log()
    );
    assert!(
        logins(dovecot, &c.user, "XOAUTH2") >= 3,
        "{}",
        dovecot.log()
    );
    assert_eq!(
        c.client.count("introspect_inactive"),
        0,
        "an expired token was offered"
    );
    assert_eq!(c.last_error(), None, "a renewal counted as a failure");
    assert!(!c.outbox().iter().any(|k| k == "down"));
}

#[test]
fn a_bye_saying_the_token_expired_means_refresh_and_reconnect_not_an_outage() {
    let dovecot = shared_oauth_dovecot();
    let proxy = ByeProxy::start(dovecot.imap_port);
    let c = case(
        "bye",
        dovecot,
        Reach::Plain(proxy.port),
        json!({}),
        "oauth_refresh_token_file = \"rt\"\nschedule = \"idle\"\n",
        "",
    );
    c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-BYE-1"), None);
    let mut daemon = c.daemon("info");
    assert!(
        wait_until(Duration::from_secs(20), || c.mbox.count(ARCHIVE) == 1),
        "{}",
        c.daemon_log()
    );
    std::thread::sleep(Duration::from_secs(1)); // in IDLE now
    assert_eq!(proxy.accepted(), 1);
    // The provider no longer takes the token, and the server ends the session, as Exchange
    // Online does (`BYE Session invalidated - AccessTokenExpired`).
    c.client.expire_access_tokens();
    proxy.bye_all("Session invalidated - AccessTokenExpired");
    let back = wait_until(Duration::from_secs(15), || {
        c.client.count("refresh") == 2 && proxy.accepted() == 2
    });
    c.mbox.append(INBOX, &note_message("LS-BYE-2"), None);
    let imported = wait_until(Duration::from_secs(15), || c.mbox.count(ARCHIVE) == 2);
    stop(&mut daemon);
    assert!(back, "no refresh and reconnect; log:\n{}", c.daemon_log());
    assert!(imported, "log:\n{}", c.daemon_log());
    assert_eq!(
        c.client.count("introspect_inactive"),
        0,
        "the expired token was offered again"
    );
    assert_eq!(c.last_error(), None);
    assert!(
        c.daemon_log().contains("the access token expired"),
        "{}",
        c.daemon_log()
    );
}

/// Output of a running `eingang oauth login` after its instructions.
type LoginOutput = BufReader<std::process::ChildStdout>;

/// Spawns `eingang oauth login <name>` and reads its instructions: (child, URL, user code,
/// the rest of its output).
fn start_login(ws: &Workspace, name: &str) -> (std::process::Child, String, String, LoginOutput) {
    let mut child = ws
        .command(&["oauth", "login", name], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn eingang oauth login");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut url, mut code) = (String::new(), String::new());
    let mut line = String::new();
    while code.is_empty() && out.read_line(&mut line).is_ok_and(|n| n > 0) {
        if let Some(u) = line.trim().strip_prefix("open") {
            url = u.trim().to_owned();
        }
        if let Some(c) = line.trim().strip_prefix("and enter") {
            code = c.trim().to_owned();
        }
        line.clear();
    }
    assert!(!code.is_empty(), "no user code printed");
    (child, url, code, out)
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("eingang oauth login did not end within {limit:?}")
    })
}

#[test]
fn device_code_login_end_to_end_honours_slow_down_and_stores_the_refresh_token() {
    let dovecot = shared_oauth_dovecot();
    let c = case(
        "device",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"interval": 1, "slow_down_first": true}),
        "",
        "",
    );
    let out = c.ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no refresh token is stored"),
        "{}",
        stderr(&out)
    );
    let (mut child, url, code, mut out) = start_login(&c.ws, "mail");
    assert_eq!(url, Idp::shared().url("/activate"));
    activate(Idp::shared(), &code, &c.user, true);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("stdout");
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Signed in"), "{rest}");
    let stats = c.client.stats();
    let f = |v: &Value| v.as_f64().expect("a time");
    let started = f(&stats["device_started"][0]);
    let polls: Vec<f64> = stats["device_polls"]
        .as_array()
        .expect("polls")
        .iter()
        .map(f)
        .collect();
    assert_eq!(stats["device_answers"][0], "slow_down");
    assert_eq!(
        stats["device_answers"].as_array().and_then(|a| a.last()),
        Some(&json!("token"))
    );
    assert!(
        polls[0] - started >= 0.9,
        "polled before the interval: {polls:?}"
    );
    assert!(
        polls[1] - polls[0] >= 5.9,
        "slow_down not honoured: {polls:?}"
    );
    assert_eq!(c.stored_refresh_token(), c.client.newest_refresh_token());
    c.mbox.append(INBOX, &note_message("LS-DEV-1"), None);
    let out = c.ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.mbox.count(ARCHIVE), 1);
}

#[test]
fn a_declined_or_expired_device_code_is_told_in_plain_words() {
    let dovecot = shared_oauth_dovecot();
    let c = case(
        "device-no",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"interval": 1, "device_expires_in": 3}),
        "",
        "",
    );
    let (mut child, _, code, _out) = start_login(&c.ws, "mail");
    activate(Idp::shared(), &code, &c.user, false);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let err =
        String::from_utf8_lossy(&child.wait_with_output().expect("output").stderr).into_owned();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("the sign-in was declined") && err.contains("access_denied"),
        "{err}"
    );
    let (mut child, _, _, _out) = start_login(&c.ws, "mail");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let err =
        String::from_utf8_lossy(&child.wait_with_output().expect("output").stderr).into_owned();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("the code expired"), "{err}");
    assert!(err.contains("eingang oauth login mail"), "{err}");
    assert_eq!(c.stored_refresh_token(), None);
}

#[test]
fn check_runs_a_token_round_and_a_login_one_line_each() {
    let idp = Idp::shared();
    let dovecot = shared_oauth_dovecot();
    let smtp = SmtpServer::start_with(Options {
        oauth_introspect: Some(idp.url("/introspect")),
        ..Options::default()
    });
    let c = case(
        "check",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({}),
        "oauth_refresh_token_file = \"rt\"\n",
        "",
    );
    c.append_config(&c.notify(&smtp, Some("oauth_refresh_token_file = \"rt\""), ""));
    c.seed_refresh_token();
    let out = c.ws.run(&["check"]);
    let lines = stdout(&out);
    assert!(out.status.success(), "{lines}");
    let token = format!(
        "oauth2 token (refresh_token grant, client {}) from {}: ok",
        c.client.id,
        idp.url("/token")
    );
    for expected in [
        format!("source mail: {token}"),
        format!(
            "source mail: imap 127.0.0.1:{} (implicit TLS) as {}: ok",
            dovecot.imaps_port, c.user
        ),
        format!("notify {token}"),
        format!("notify login {}: ok", c.user),
    ] {
        assert!(
            lines.lines().any(|l| l == expected),
            "{expected:?} missing in\n{lines}"
        );
    }
    assert_eq!(c.client.count("refresh"), 1, "one account, one refresh");
}

#[test]
fn the_identity_provider_down_is_transient_and_sends_no_notice() {
    let dovecot = shared_oauth_dovecot();
    let smtp = SmtpServer::start();
    let mut c = case(
        "idp-down",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"down": true}),
        "oauth_refresh_token_file = \"rt\"\n",
        "",
    );
    c.append_config(&c.notify(&smtp, None, ""));
    c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-DOWN-1"), None);
    let out = c.ws.run(&["sync"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no token from") && err.contains("HTTP 503"),
        "{err}"
    );
    assert!(err.contains("the identity provider is down"), "{err}");
    assert_eq!(c.mbox.count(INBOX), 1, "the message stays");
    assert!(c.outbox().is_empty());
    c.client.set(json!({"down": false}));
    let out = c.ws.run(&["sync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.mbox.count(ARCHIVE), 1);
    assert!(smtp.received().is_empty());
    // A token endpoint nobody listens on is just as transient, and says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let config = std::fs::read_to_string(c.ws.path("eingang.toml")).expect("config");
    std::fs::write(
        c.ws.path("eingang.toml"),
        config.replace(
            &Idp::shared().url("/token"),
            &format!("http://127.0.0.1:{port}/token"),
        ),
    )
    .expect("config");
    let out = c.ws.run(&["check"]);
    let lines = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("source mail: oauth2 token")
                && l.contains("FAILED: oauth2: no token from")),
        "{lines}"
    );
}

#[test]
fn notices_go_out_with_oauthbearer_and_long_tokens_sent_after_a_334() {
    let idp = Idp::shared();
    let smtp = SmtpServer::start_with(Options {
        oauth_introspect: Some(idp.url("/introspect")),
        ..Options::default()
    });
    let user = new_user("smtp-long");
    let client = idp.client(
        &format!("app-{user}"),
        json!({"user": user, "long_tokens": true}),
    );
    let ws = Workspace::new(&smtp.notify_section(&format!(
        "user = \"{user}\"\nauth = \"oauth2\"\noauth_token_url = \"{}\"\noauth_client_id = \"{}\"\n\
         oauth_scope = \"{SCOPE}\"\noauth_mechanism = \"oauthbearer\"\noauth_refresh_token_file = \"rt\"\n",
        idp.url("/token"),
        client.id
    )));
    std::fs::write(ws.path("rt"), client.seed(&user, SCOPE)).expect("rt");
    ws.drop_file("in", "kaputt.xml", b"<not-a-document/>");
    let out = ws.run(&["sync"]);
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1, "{}", stderr(&out));
    assert_eq!(smtp.auth_log(), [format!("OAUTHBEARER ok {user}")]);
    let token = &client.stats()["access_tokens"][0];
    assert!(
        token.as_str().is_some_and(|t| t.len() > 1500),
        "a long token"
    );
}

#[test]
fn no_secret_reaches_logs_status_export_or_the_store_but_the_refresh_token() {
    let idp = Idp::shared();
    let dovecot = shared_oauth_dovecot();
    let smtp = SmtpServer::start_with(Options {
        oauth_introspect: Some(idp.url("/introspect")),
        ..Options::default()
    });
    let secret = format!("SENTINEL-client-secret-{}", new_user("leak"));
    let c = case(
        "leak",
        dovecot,
        Reach::Tls(dovecot.imaps_port),
        json!({"secret": secret}),
        "oauth_refresh_token_file = \"rt\"\noauth_client_secret_env = \"EINGANG_TEST_CLIENT_SECRET\"\nschedule = \"idle\"\n",
        "",
    );
    c.append_config(&c.notify(
        &smtp,
        Some("oauth_refresh_token_file = \"rt\"\noauth_client_secret_env = \"EINGANG_TEST_CLIENT_SECRET\""),
        "",
    ));
    c.seed_refresh_token();
    c.mbox.append(INBOX, &note_message("LS-LEAK-1"), None);
    c.mbox.append(INBOX, &unreadable_message("leak-2"), None);
    let env = [
        ("EINGANG_TEST_CLIENT_SECRET", secret.as_str()),
        ("EINGANG_LOG", "trace"),
    ];
    let mut printed = String::new();
    for args in [&["check"][..], &["sync"][..]] {
        let out = c.ws.run_env(args, &env);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        printed.push_str(&stdout(&out));
        printed.push_str(&stderr(&out));
    }
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).len(), 1);
    // The daemon too, at trace level, through a renewal-free start and an import.
    c.mbox.append(INBOX, &note_message("LS-LEAK-3"), None);
    let file = std::fs::File::create(c.ws.path("daemon.log")).expect("log");
    let mut daemon =
        c.ws.command(&["run"], &env)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("run");
    let done = wait_until(Duration::from_secs(20), || c.mbox.count(ARCHIVE) == 2);
    stop(&mut daemon);
    assert!(done, "{}", c.daemon_log());
    printed.push_str(&c.daemon_log());
    for args in [
        &["status", "--json"][..],
        &["export", "--jsonl"][..],
        &["status"][..],
    ] {
        let out = c.ws.run(args);
        printed.push_str(&stdout(&out));
        printed.push_str(&stderr(&out));
    }
    assert!(printed.contains("DEBUG"), "verbose logging was on");
    let issued = c.client.issued();
    assert!(issued.len() >= 4, "{issued:?}");
    let mut secrets = issued.clone();
    secrets.push(secret.clone());
    for s in &secrets {
        assert!(!printed.contains(s.as_str()), "a secret was printed: {s}");
    }
    // The store: access tokens and the client secret never; of the refresh tokens only the
    // newest, in its own table.
    let mut bytes = c.ws.store_bytes();
    bytes.extend(std::fs::read(c.ws.path("eingang.db.oauth-lock")).unwrap_or_default());
    let in_store = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for s in c.client.stats()["access_tokens"]
        .as_array()
        .expect("tokens")
    {
        assert!(
            !in_store(s.as_str().expect("a token")),
            "an access token is in the store"
        );
    }
    assert!(!in_store(&secret), "the client secret is in the store");
    assert_eq!(c.stored_refresh_token(), c.client.newest_refresh_token());
}

#[test]
fn oauth_login_notify_signs_in_the_notifier_and_its_notices_go_out() {
    let idp = Idp::shared();
    let smtp = SmtpServer::start_with(Options {
        oauth_introspect: Some(idp.url("/introspect")),
        ..Options::default()
    });
    let user = new_user("notify-login");
    let client = idp.client(&format!("app-{user}"), json!({"user": user, "interval": 1}));
    let ws = Workspace::new(&smtp.notify_section(&format!(
        "user = \"{user}\"\nauth = \"oauth2\"\noauth_token_url = \"{}\"\noauth_device_url = \"{}\"\n\
         oauth_client_id = \"{}\"\noauth_scope = \"{SCOPE}\"\n",
        idp.url("/token"),
        idp.url("/device"),
        client.id
    )));
    let (mut child, _, code, mut out) = start_login(&ws, "notify");
    activate(idp, &code, &user, true);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("stdout");
    assert!(status.success(), "{rest}");
    assert!(
        rest.contains("the refresh token for notify is stored"),
        "{rest}"
    );
    ws.drop_file("in", "kaputt.xml", b"<not-a-document/>");
    let out = ws.run(&["sync"]);
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1, "{}", stderr(&out));
    assert_eq!(smtp.auth_log(), [format!("XOAUTH2 ok {user}")]);
    assert_eq!(client.count("refresh"), 1);
}
