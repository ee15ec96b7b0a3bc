//! The admin page of `eingang run` (`[http]`), in a real browser (chromium over WebDriver)
//! and by plain HTTP: login and its limit, the error queue with reprocess and "handled by
//! hand", sync now, test connection, the document search with the original to download, the
//! CSRF and same-origin checks, bad requests, `/healthz`, `/readyz` and `/metrics`.

mod support;

#[path = "support/browser.rs"]
mod browser;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use browser::{Browser, free_port};
use support::{Workspace, opentrans, stderr, wait_until};

const PASSWORD: &str = "Lager-Tür-2026";

/// `eingang run` with the admin page on a free port; SIGTERM (then SIGKILL) on drop.
struct Site {
    ws: Workspace,
    port: u16,
    daemon: Child,
}

impl Site {
    /// A drop source `drop` that passes at start and when asked, the page on loopback, and
    /// `extra` appended to the config.
    fn start(extra: &str, env: &[(&str, &str)]) -> Site {
        Site::start_on(Workspace::new(""), extra, env)
    }

    /// `start` in the workspace `ws`.
    fn start_on(ws: Workspace, extra: &str, env: &[(&str, &str)]) -> Site {
        let hash = ws.hash_of(PASSWORD);
        let port = free_port();
        let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
        let config = config.replace(
            "settle = \"1s\"",
            "settle = \"1s\"\nschedule = \"every 1h\"",
        );
        std::fs::write(
            ws.path("eingang.toml"),
            format!(
                "{config}\n[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_password_hash = \"{hash}\"\n{extra}"
            ),
        )
        .unwrap();
        Site::run(ws, port, env)
    }

    fn run(ws: Workspace, port: u16, env: &[(&str, &str)]) -> Site {
        let log = std::fs::File::create(ws.path("run.log")).unwrap();
        let daemon = ws
            .command(&["run"], env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start eingang run");
        let site = Site { ws, port, daemon };
        assert!(
            wait_until(Duration::from_secs(20), || site
                .get("/readyz", &[])
                .is_some_and(|a| a.status == 200)),
            "the page never became ready: {}",
            site.log()
        );
        site
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.ws.path("run.log")).unwrap_or_default()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Option<Answer> {
        request(self.port, "GET", path, headers, b"")
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        request(self.port, "POST", path, headers, body.as_bytes())
            .unwrap_or_else(|| panic!("no answer to POST {path}"))
    }

    /// Logs in by plain HTTP; the session cookie (`eingang_session=…`).
    fn login(&self) -> String {
        let answer = self.post("/login", &[], &format!("password={}", urlencode(PASSWORD)));
        assert_eq!(answer.status, 303, "{}", answer.text());
        answer
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned()
    }

    /// The CSRF token of a session, as the page carries it.
    fn csrf(&self, cookie: &str) -> String {
        let page = self.get("/fehler", &[("cookie", cookie)]).unwrap().text();
        let start = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        page[start..start + 64].to_owned()
    }

    /// `eingang sync` while the daemon runs: it asks the daemon for a pass.
    fn sync(&self) {
        let out = self.ws.run(&["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        support::stop_quietly(&mut self.daemon);
    }
}

/// An HTTP answer read off the socket.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a connection of its own, exactly as written (no header added but
/// Host, Content-Length and the form type), so that the test controls Origin and
/// Sec-Fetch-Site. `None` when nobody answers.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Answer> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    parse(&exchange(port, &raw)?)
}

/// Sends raw bytes, reads until the server closes (30 s at most).
fn exchange(port: u16, raw: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    // A server may answer (413) and close before it read all of a large body: what it said
    // still counts.
    let _ = stream.write_all(raw);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) if !out.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(out)
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut plain = Vec::new();
        let mut rest = &body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..end]).ok()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            plain.extend_from_slice(rest.get(end + 2..end + 2 + size)?);
            rest = rest.get(end + 4 + size..)?;
        }
        body = plain;
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The state of an item as `eingang items --json` tells it.
fn item_state(ws: &Workspace, id: i64) -> String {
    let out = ws.run(&["items", "--json", "--limit", "100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .map(|i| i["state"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_fixes_reprocesses_and_finds_a_delivery_note_in_the_browser() {
    let site = Site::start("", &[]);
    let ws = &site.ws;
    ws.drop_file("in", "ls-kaputt.xml", b"<DISPATCHNOTIFICATION><kaputt");
    ws.drop_file("in", "fremd.xml", b"<broken");
    site.sync();
    assert_eq!(
        ws.files("fehler"),
        [
            "fremd.xml",
            "fremd.xml.error.txt",
            "ls-kaputt.xml",
            "ls-kaputt.xml.error.txt"
        ]
    );
    let broken = ws.query_i64("SELECT id FROM items WHERE file_name = 'ls-kaputt.xml'");
    let other = ws.query_i64("SELECT id FROM items WHERE file_name = 'fremd.xml'");

    let b = Browser::start().await;
    // Not logged in: the page sends the browser to the login.
    b.goto(&site.url("/fehler")).await;
    b.find("input[name=password]").await;
    b.screenshot("login").await;
    // A wrong password is refused, without a session.
    b.find("#password").await.send_keys("falsch").await.unwrap();
    b.find("#login").await.click().await.unwrap();
    assert!(
        b.text("#login-message").await.contains("Falsches Passwort"),
        "{}",
        b.text("body").await
    );
    assert_eq!(b.cookie("eingang_session").await, None);
    b.find("#password").await.send_keys(PASSWORD).await.unwrap();
    b.find("#login").await.click().await.unwrap();

    // The error queue: the failed item with its reason, where it lies, German by default.
    let row = format!("#item-{broken}");
    b.find(&row).await;
    assert!(b.cookie("eingang_session").await.is_some());
    let reason = b.text(&format!("{row} .reason")).await;
    assert!(reason.contains("ls-kaputt.xml"), "{reason}");
    assert!(reason.contains("XML"), "{reason}");
    assert!(
        b.text(&format!("{row} .lies"))
            .await
            .contains("fehler/ls-kaputt.xml"),
        "{}",
        b.text(&row).await
    );
    assert_eq!(b.text("#open-failures").await, "2");
    b.screenshot("fehler").await;

    // The supplier sends a corrected file; it replaces the broken one in the error folder,
    // and the admin reprocesses it from the page.
    std::fs::write(
        ws.path("fehler/ls-kaputt.xml"),
        opentrans("LS-WEB-1", "12.000"),
    )
    .unwrap();
    b.find(&format!("{row} button.reprocess"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text(&format!("Posten {broken} liegt wieder im Eingang"))
        .await;
    assert!(
        !b.has(&row).await,
        "the reprocessed item is still in the queue"
    );
    assert!(
        b.has(&format!("#item-{other}")).await,
        "the other item left the queue"
    );
    assert!(ws.files("in").contains(&"ls-kaputt.xml".to_owned()));

    // Sources: sync now runs a pass through the source's task; the item is archived.
    b.find("nav a[href='/quellen']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#source-drop button.sync")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text("drop: abgerufen; 1 verbucht, 0 abgelehnt.")
        .await;
    assert_eq!(ws.files("archiv"), ["ls-kaputt.xml"]);
    assert!(
        b.text("#source-drop .state")
            .await
            .starts_with("läuft seit")
    );
    assert_eq!(b.text("#source-drop .pending").await, "0");
    // Test connection: the checks of `eingang check`.
    b.find("#source-drop button.check")
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text("drop: Verbindung in Ordnung.").await;
    let checks = b.text("#source-drop ul.checks").await;
    assert!(checks.contains("inbox folder"), "{checks}");
    assert!(checks.contains("error folder"), "{checks}");
    assert!(!checks.contains("FAILED"), "{checks}");
    b.screenshot("quellen").await;

    // The other item is closed by hand: it leaves the queue and stays in the error folder.
    b.find("nav a[href='/fehler']").await.click().await.unwrap();
    b.find(&format!("#item-{other} button.handled"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_for_text(&format!(
        "Posten {other} ist als von Hand erledigt geschlossen"
    ))
    .await;
    b.find("#no-errors").await;
    assert_eq!(item_state(ws, other), "handled");
    assert_eq!(item_state(ws, broken), "reprocessed");
    assert!(ws.files("fehler").contains(&"fremd.xml".to_owned()));
    let status = support::stdout(&ws.run(&["status"]));
    assert!(
        status.contains(
            "drop: received 2, archived 1, failed 0, handled by hand 1, pending 0, last error: none"
        ),
        "{status}"
    );

    // Documents: search by number, open the note, its lines and origin, its original.
    b.find("nav a[href='/dokumente']")
        .await
        .click()
        .await
        .unwrap();
    b.find("#q-number").await.send_keys("WEB-1").await.unwrap();
    b.find("#q-search").await.click().await.unwrap();
    b.find("#documents a.number").await;
    assert!(b.current_url_contains("number=WEB-1").await);
    b.screenshot("dokumente").await;
    b.find("#documents a.number").await.click().await.unwrap();
    assert_eq!(b.text("#doc-number").await, "LS-WEB-1");
    let lines = b.text("#lines").await;
    assert!(lines.contains("A-100"), "{lines}");
    assert_eq!(b.text("#lines .quantity").await, "12");
    assert!(
        b.text("#lies-in").await.contains("archiv/ls-kaputt.xml"),
        "{}",
        b.text("#origin").await
    );
    b.screenshot("dokument").await;
    let href = b
        .find("#download")
        .await
        .attr("href")
        .await
        .unwrap()
        .expect("a download link");
    // The original, fetched with the browser's session: the bytes that were imported, as a
    // download (never shown inline).
    let cookie = format!(
        "eingang_session={}",
        b.cookie("eingang_session").await.unwrap()
    );
    let original = site.get(&href, &[("cookie", &cookie)]).unwrap();
    assert_eq!(original.status, 200);
    assert_eq!(original.body, opentrans("LS-WEB-1", "12.000"));
    assert!(
        original
            .header("content-disposition")
            .unwrap()
            .starts_with("attachment; filename=\"ls-kaputt.xml\""),
        "{:?}",
        original.headers
    );
    assert_eq!(
        original.header("content-type"),
        Some("application/octet-stream")
    );
    // A search that matches nothing says so.
    b.goto(&site.url("/dokumente?number=LS-GIBT-ES-NICHT"))
        .await;
    b.find("#no-documents").await;
    b.close().await;
}

impl Browser {
    async fn current_url_contains(&self, part: &str) -> bool {
        self.client
            .current_url()
            .await
            .is_ok_and(|u| u.as_str().contains(part))
    }
}

#[test]
fn a_change_without_the_token_or_from_another_site_is_refused() {
    let site = Site::start("", &[]);
    site.ws.drop_file("in", "kaputt.xml", b"<broken");
    site.sync();
    let id = site.ws.query_i64("SELECT id FROM items");
    let cookie = site.login();
    let token = site.csrf(&cookie);
    let with_token = format!("csrf={token}&handled={id}");
    let refused = [
        (
            "no token",
            vec![("cookie", cookie.as_str())],
            format!("handled={id}"),
        ),
        (
            "a wrong token",
            vec![("cookie", cookie.as_str())],
            format!("csrf={}&handled={id}", "0".repeat(64)),
        ),
        (
            "cross-site",
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            with_token.clone(),
        ),
        (
            "same-site",
            vec![("cookie", cookie.as_str()), ("sec-fetch-site", "same-site")],
            with_token.clone(),
        ),
        (
            "a foreign Origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "http://evil.example"),
            ],
            with_token.clone(),
        ),
    ];
    for (what, headers, body) in &refused {
        let answer = site.post("/fehler", headers, body);
        assert_eq!(answer.status, 403, "{what}: {}", answer.text());
        assert!(
            answer.text().contains("Abgelehnt"),
            "{what}: {}",
            answer.text()
        );
    }
    // A token in the header (as htmx sends it) without a session is no session.
    let answer = site.post(
        "/fehler",
        &[("x-csrf-token", &token)],
        &format!("handled={id}"),
    );
    assert_eq!(answer.status, 303);
    assert_eq!(answer.header("location"), Some("/login"));
    assert_eq!(
        item_state(&site.ws, id),
        "failed",
        "a refused request acted"
    );
    // The same request from the page itself is done.
    let answer = site.post(
        "/fehler",
        &[
            ("cookie", &cookie),
            ("sec-fetch-site", "same-origin"),
            ("origin", &site.url("")),
        ],
        &with_token,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(item_state(&site.ws, id), "handled");
    // The login form is refused from another site too.
    let answer = site.post(
        "/login",
        &[("sec-fetch-site", "cross-site")],
        &format!("password={}", urlencode(PASSWORD)),
    );
    assert_eq!(answer.status, 403);
    assert!(answer.header("set-cookie").is_none());
    // Logging out ends the session on the server.
    let answer = site.post("/logout", &[("cookie", &cookie)], &format!("csrf={token}"));
    assert_eq!(answer.status, 303);
    let after = site.get("/fehler", &[("cookie", &cookie)]).unwrap();
    assert_eq!(after.status, 303);
}

#[test]
fn logins_wait_after_five_wrong_passwords() {
    let site = Site::start("", &[]);
    let form = site.get("/login", &[]).unwrap();
    assert_eq!(form.status, 200);
    assert!(form.text().contains("name=\"password\""), "{}", form.text());
    for n in 1..=5 {
        let answer = site.post("/login", &[], "password=falsch");
        assert_eq!(answer.status, 401, "try {n}: {}", answer.text());
        assert!(answer.header("set-cookie").is_none());
        assert!(answer.text().contains("Falsches Passwort"));
    }
    // The sixth try waits, even with the right password.
    let answer = site.post("/login", &[], &format!("password={}", urlencode(PASSWORD)));
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert!(answer.header("set-cookie").is_none());
    let wait: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(
        answer.text().contains("Zu viele Fehlversuche"),
        "{}",
        answer.text()
    );
    // The pages stay closed to a request without a session.
    assert_eq!(site.get("/quellen", &[]).unwrap().status, 303);
}

#[test]
fn health_readiness_and_metrics_follow_the_source_tasks() {
    let site = Site::start("", &[("EINGANG_FAULT", "panic:mid_pass:1")]);
    let healthz = site.get("/healthz", &[]).unwrap();
    assert_eq!((healthz.status, healthz.text().as_str()), (200, "ok\n"));
    // The daemon's first pass (over the empty inbox) is over before the items arrive, so
    // that the pass that meets them is the one `sync` asks for.
    assert!(wait_until(Duration::from_secs(10), || {
        site.ws
            .try_query_text("SELECT COUNT(*) FROM source_state WHERE last_ok IS NOT NULL")
            .is_ok_and(|n| n.as_deref() == Some("1"))
    }));
    site.ws.drop_file("in", "ls.xml", &opentrans("LS-M1", "1"));
    site.ws.drop_file("in", "kaputt.xml", b"<broken");
    // The pass panics between its commit and its move: the task is down until the
    // supervisor restarts it (1 s later), and /readyz says so meanwhile.
    let sync = site.ws.command(&["sync"], &[]).output().unwrap();
    assert!(!sync.status.success(), "{}", stderr(&sync));
    let mut saw_down = false;
    let mut metrics_down = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let ready = site.get("/readyz", &[]).unwrap();
            if ready.status == 503 {
                assert!(
                    ready
                        .text()
                        .contains("source drop: its task is not running"),
                    "{}",
                    ready.text()
                );
                if !saw_down {
                    metrics_down = site.get("/metrics", &[]).unwrap().text();
                }
                saw_down = true;
            }
            saw_down
        }),
        "/readyz never said the task was down: {}",
        site.log()
    );
    assert!(
        metrics_down.contains("eingang_source_up{source=\"drop\"} 0"),
        "{metrics_down}"
    );
    // Restarted, the task finishes the moves the crash left: ready again.
    assert!(
        wait_until(Duration::from_secs(10), || site
            .get("/readyz", &[])
            .is_some_and(|a| a.status == 200)),
        "{}",
        site.log()
    );
    assert!(wait_until(Duration::from_secs(10), || site
        .ws
        .files("archiv")
        == ["ls.xml"]));
    site.sync();
    let metrics = site.get("/metrics", &[]).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    for line in [
        "# TYPE eingang_items_total counter",
        "eingang_items_total{source=\"drop\",outcome=\"imported\"} 1",
        "eingang_items_total{source=\"drop\",outcome=\"rejected\"} 1",
        "eingang_source_up{source=\"drop\"} 1",
        "eingang_outbox_pending ",
        "eingang_items_failed{source=\"drop\"} 1",
        "eingang_source_last_success_timestamp_seconds{source=\"drop\"} ",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[test]
fn bad_requests_are_answered_and_the_listener_keeps_serving() {
    let site = Site::start("", &[]);
    let garbage = exchange(site.port, b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n").unwrap();
    assert!(
        garbage.is_empty() || garbage.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&garbage)
    );
    let cookie = site.login();
    let token = site.csrf(&cookie);
    for path in [
        "/dokumente/abc",
        "/dokumente/99999",
        "/original/-1",
        "/original/%00",
        "/gibt-es-nicht",
    ] {
        let answer = site.get(path, &[("cookie", &cookie)]).unwrap();
        assert_eq!(answer.status, 404, "{path}: {}", answer.text());
    }
    let answer = site
        .get(
            "/dokumente?from=gestern&number=%E2%80%AE",
            &[("cookie", &cookie)],
        )
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        answer.text().contains("ist kein Datum"),
        "{}",
        answer.text()
    );
    // An oversized form, an unknown source, an id that is no number: clean answers.
    let huge = format!("csrf={token}&id={}", "1".repeat(100_000));
    let answer = site.post("/fehler", &[("cookie", &cookie)], &huge);
    assert_eq!(answer.status, 413, "{}", answer.text());
    let answer = site.post(
        "/quellen",
        &[("cookie", &cookie)],
        &format!("csrf={token}&sync=nirgends"),
    );
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("nirgends"), "{}", answer.text());
    let answer = site.post(
        "/fehler",
        &[("cookie", &cookie)],
        &format!("csrf={token}&reprocess=sieben"),
    );
    assert_eq!(answer.status, 200);
    assert!(
        answer.text().contains("Keine Postennummer"),
        "{}",
        answer.text()
    );
    let answer = site.post(
        "/fehler",
        &[("cookie", &cookie)],
        &format!("csrf={token}&reprocess=4242"),
    );
    assert!(
        answer.text().contains("not a failed item"),
        "{}",
        answer.text()
    );
    assert_eq!(site.get("/healthz", &[]).unwrap().status, 200);
    // Every page answer forbids framing and outside scripts.
    let page = site.get("/fehler", &[("cookie", &cookie)]).unwrap();
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // htmx comes from eingang itself.
    let htmx = site.get("/static/htmx.min.js", &[]).unwrap();
    assert_eq!(htmx.status, 200);
    assert!(htmx.text().starts_with("var htmx="));
}

#[test]
fn the_page_speaks_english_with_the_notice_language() {
    let smtp = free_port();
    let site = Site::start(
        &format!(
            "[notify]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp}\ntls = \"none\"\nfrom = \"eingang@example.com\"\nadmins = [\"it@example.com\"]\nlanguage = \"en\"\n"
        ),
        &[],
    );
    let wrong = site.post("/login", &[], "password=wrong");
    assert!(wrong.text().contains("Wrong password."), "{}", wrong.text());
    let cookie = site.login();
    let page = site.get("/quellen", &[("cookie", &cookie)]).unwrap().text();
    assert!(page.contains("<html lang=\"en\">"), "{page}");
    assert!(page.contains("Sync now"), "{page}");
    assert!(page.contains("Test connection"), "{page}");
}

#[test]
fn a_listen_address_beyond_loopback_needs_a_password_hash() {
    let ws = Workspace::new(&format!("[http]\nlisten = \"0.0.0.0:{}\"\n", free_port()));
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("error: config: http: listen 0.0.0.0:")
            && err.contains("set admin_password_hash"),
        "{err}"
    );
    // A port that is taken is a start-up error too, not a task that keeps dying.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ws = Workspace::new(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    let out = ws.run(&["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("http: listen 127.0.0.1:{port}")));
}

#[test]
fn without_a_hash_the_page_explains_and_monitoring_still_answers() {
    let ws = Workspace::new("");
    let port = free_port();
    let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
    std::fs::write(
        ws.path("eingang.toml"),
        format!("{config}\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let site = Site::run(ws, port, &[]);
    let form = site.get("/login", &[]).unwrap();
    assert!(
        form.text().contains("eingang hash-password"),
        "{}",
        form.text()
    );
    assert!(!form.text().contains("name=\"password\""));
    assert_eq!(site.post("/login", &[], "password=x").status, 403);
    assert_eq!(site.get("/metrics", &[]).unwrap().status, 200);
}

#[test]
fn a_selection_of_failed_items_is_reprocessed_in_one_go() {
    let site = Site::start("", &[]);
    for name in ["a.xml", "b.xml", "c.xml"] {
        site.ws.drop_file("in", name, b"<broken");
    }
    site.sync();
    let id = |name: &str| {
        site.ws
            .query_i64(&format!("SELECT id FROM items WHERE file_name = '{name}'"))
    };
    let (a, b, c) = (id("a.xml"), id("b.xml"), id("c.xml"));
    let cookie = site.login();
    let token = site.csrf(&cookie);
    let answer = site.post(
        "/fehler",
        &[("cookie", &cookie)],
        &format!("csrf={token}&id={a}&id={c}&reprocess_selected=1"),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let page = answer.text();
    assert!(
        page.contains(&format!("Posten {a} liegt wieder im Eingang")),
        "{page}"
    );
    assert!(
        page.contains(&format!("Posten {c} liegt wieder im Eingang")),
        "{page}"
    );
    assert!(page.contains(&format!("id=\"item-{b}\"")), "{page}");
    assert!(!page.contains(&format!("id=\"item-{a}\"")), "{page}");
    assert_eq!(answer.header("hx-push-url"), Some("/fehler"));
    assert_eq!(site.ws.files("in"), ["a.xml", "c.xml"]);
    assert_eq!(item_state(&site.ws, b), "failed");
    // Nothing selected is said, not done.
    let answer = site.post(
        "/fehler",
        &[("cookie", &cookie)],
        &format!("csrf={token}&handled_selected=1"),
    );
    assert!(
        answer.text().contains("Nichts ausgewählt."),
        "{}",
        answer.text()
    );
    assert_eq!(item_state(&site.ws, b), "failed");
}

#[test]
fn the_sources_page_shows_each_connector_with_pending_delivered_and_dead() {
    let site = Site::start(
        "[[connector]]\nname = \"erp-dateien\"\nkind = \"dir\"\npath = \"export\"\n",
        &[],
    );
    std::fs::create_dir_all(site.ws.path("export")).unwrap();
    site.ws.drop_file("in", "ls.xml", &opentrans("LS-W1", "1"));
    let sync = site.ws.command(&["sync"], &[]).output().unwrap();
    assert!(sync.status.success(), "{}", stderr(&sync));
    assert!(wait_until(Duration::from_secs(15), || {
        support::files_in(&site.ws.path("export")).len() == 1
    }));
    let cookie = site.login();
    let page = site.get("/quellen", &[("cookie", &cookie)]).unwrap().text();
    assert!(page.contains("Weitergabe an die Warenwirtschaft"), "{page}");
    assert!(page.contains("id=\"connector-erp-dateien\""), "{page}");
    assert!(
        page.contains("<dd class=\"delivered\">1</dd>")
            && page.contains("<dd class=\"dead\">0</dd>"),
        "{page}"
    );
}

/// On a shared store the sources page lists the daemons working it, with the sources each
/// works, and says of a source which daemon works it.
#[test]
fn the_sources_page_lists_the_daemons_of_a_shared_store() {
    let site = Site::start_on(Workspace::postgres("web_daemons", ""), "", &[]);
    let cookie = site.login();
    let me = format!(" {}<", site.daemon.id());
    let mut page = String::new();
    let listed = wait_until(Duration::from_secs(20), || {
        page = site.get("/quellen", &[("cookie", &cookie)]).unwrap().text();
        page.contains("class=\"daemons\"") && page.contains(&me)
    });
    assert!(listed, "the daemon is listed: {page}");
    let table = &page[page.find("class=\"daemons\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains("class=\"daemon here\""),
        "this daemon is marked: {table}"
    );
    assert!(
        table.contains(": drop<"),
        "with the source it works: {table}"
    );
}
