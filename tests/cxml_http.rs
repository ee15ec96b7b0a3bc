//! The cXML receiver against `eingang run`: a real listener with TLS on a test CA (rcgen), an
//! HTTP client (reqwest over rustls with ring), raw TLS sockets for the slow and oversized
//! clients, and the store, `export`, `items`, the admin page and a dir connector to see what
//! became of each request. Each test names the promise it checks (CONTRACT.md, HTTP; issue 12).

mod support;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::webhook::Certificates;
use support::{Workspace, stderr, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ARIBA_SECRET: &str = "Ge+heim&1ä";
const COUPA_SECRET: &str = "coupa-secret";
const ARIBA: (&str, &str, &str) = ("NetworkID", "AN01000000001", ARIBA_SECRET);
const COUPA: (&str, &str, &str) = ("DUNS", "123456789", COUPA_SECRET);

/// `eingang run` with `[cxml]` on a free loopback port, TLS on a test CA, two partners;
/// SIGTERM (then SIGKILL) on drop.
struct Receiver {
    ws: Workspace,
    port: u16,
    daemon: Child,
    client: reqwest::Client,
    ca: PathBuf,
    _certificates: Certificates,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Receiver {
    /// `cxml` is added to `[cxml]`, `extra` to the end of the config.
    fn start(cxml: &str, extra: &str) -> Receiver {
        let ws = Workspace::new("");
        let certificates = Certificates::new();
        let (cert, key) = certificates.write_leaf();
        let port = free_port();
        let config = std::fs::read_to_string(ws.path("eingang.toml")).unwrap();
        std::fs::write(
            ws.path("eingang.toml"),
            format!(
                "{config}\n[cxml]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
                 header_timeout = \"2s\"\nbody_timeout = \"3s\"\n{cxml}\n\
                 [[cxml.partner]]\nname = \"ariba\"\ndomain = \"NetworkID\"\nidentity = \"AN01000000001\"\nshared_secret = \"{ARIBA_SECRET}\"\n\
                 [[cxml.partner]]\nname = \"coupa\"\ndomain = \"DUNS\"\nidentity = \"123456789\"\nshared_secret_file = \"coupa.secret\"\n\
                 {extra}",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let secret = ws.path("coupa.secret");
        std::fs::write(&secret, format!("{COUPA_SECRET}\n")).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let log = std::fs::File::create(ws.path("run.log")).unwrap();
        let mut daemon = ws
            .command(&["run"], &[])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start eingang run");
        let up = wait_until(Duration::from_secs(20), || {
            daemon.try_wait().ok().flatten().is_none()
                && std::fs::read_to_string(ws.path("run.log"))
                    .is_ok_and(|l| l.contains("cxml receiver listening"))
        });
        let ca = certificates.ca_file();
        let tls = eingang::source::tls::client_config(Some(&ca)).expect("client TLS");
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let receiver = Receiver {
            ws,
            port,
            daemon,
            client,
            ca,
            _certificates: certificates,
        };
        assert!(up, "the receiver never listened: {}", receiver.log());
        receiver
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.ws.path("run.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// POSTs a body and returns the HTTP status and the answer's text.
    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
        let answer = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}; {}", self.log()));
        let status = answer.status().as_u16();
        (status, answer.text().await.expect("answer text"))
    }

    /// POSTs a cXML request document to `/cxml`.
    async fn send(&self, document: &str) -> Status {
        let (http, text) = self
            .post(
                "/cxml",
                "text/xml; charset=UTF-8",
                document.as_bytes().to_vec(),
            )
            .await;
        Status::of(http, &text)
    }

    /// One number from the store.
    fn count(&self, sql: &str) -> i64 {
        self.ws.query_i64(sql)
    }

    /// A TLS connection of our own, for clients that misbehave.
    async fn raw(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tls = eingang::source::tls::client_config(Some(&self.ca)).expect("client TLS");
        let connector = tokio_rustls::TlsConnector::from(tls);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.expect("TLS handshake")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        support::stop_quietly(&mut self.daemon);
    }
}

/// The HTTP status and the cXML Status of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    http: u16,
    code: u16,
    text: String,
    detail: String,
}

impl Status {
    fn of(http: u16, answer: &str) -> Status {
        let re =
            regex::Regex::new(r#"<Status code="(\d+)" text="([^"]*)"(?:/>|>([^<]*)</Status>)"#)
                .unwrap();
        let found = re
            .captures(answer)
            .unwrap_or_else(|| panic!("no cXML Status in the answer (HTTP {http}): {answer}"));
        Status {
            http,
            code: found[1].parse().unwrap(),
            text: found[2].to_owned(),
            detail: found.get(3).map_or("", |m| m.as_str()).to_owned(),
        }
    }
}

/// Escapes a value for XML text.
fn xml_text(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A cXML OrderRequest from `sender` (domain, identity, secret), as a procurement system
/// sends it: DOCTYPE, Header with From/To/Sender, one line.
fn order(
    payload_id: &str,
    order_id: &str,
    kind: &str,
    sender: (&str, &str, &str),
    quantity: &str,
) -> String {
    let (domain, identity, secret) = sender;
    let reference = if kind == "new" {
        String::new()
    } else {
        format!("<DocumentReference payloadID=\"first-{order_id}\"/>")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.063/cXML.dtd">
<cXML payloadID="{payload_id}" timestamp="2026-12-01T09:00:00+01:00" xml:lang="de-DE">
  <Header>
    <From><Credential domain="{domain}"><Identity>{identity}</Identity></Credential></From>
    <To><Credential domain="NetworkID"><Identity>LIEFERANT-77</Identity></Credential></To>
    <Sender><Credential domain="{domain}"><Identity>{identity}</Identity><SharedSecret>{}</SharedSecret></Credential>
      <UserAgent>Beschaffung 3.1</UserAgent></Sender>
  </Header>
  <Request deploymentMode="production">
    <OrderRequest>
      <OrderRequestHeader orderID="{order_id}" orderDate="2026-12-01T08:59:00+01:00" type="{kind}">
        <Total><Money currency="EUR">25.00</Money></Total>
        {reference}
      </OrderRequestHeader>
      <ItemOut quantity="{quantity}" lineNumber="1">
        <ItemID><SupplierPartID>SCH-M6-40</SupplierPartID></ItemID>
        <ItemDetail><UnitPrice><Money currency="EUR">12.50</Money></UnitPrice>
          <Description xml:lang="de">Sechskantschraube M6 x 40</Description>
          <UnitOfMeasure>BX</UnitOfMeasure></ItemDetail>
      </ItemOut>
    </OrderRequest>
  </Request>
</cXML>
"#,
        xml_text(secret)
    )
}

/// A request of another type, with a valid Header.
fn request_of(name: &str, inner: &str, sender: (&str, &str, &str)) -> String {
    let (domain, identity, secret) = sender;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<cXML payloadID="{name}-1@buyer.example" timestamp="2026-12-01T09:00:00+01:00">
  <Header>
    <From><Credential domain="{domain}"><Identity>{identity}</Identity></Credential></From>
    <To><Credential domain="NetworkID"><Identity>LIEFERANT-77</Identity></Credential></To>
    <Sender><Credential domain="{domain}"><Identity>{identity}</Identity><SharedSecret>{}</SharedSecret></Credential></Sender>
  </Header>
  <Request><{name}>{inner}</{name}></Request>
</cXML>
"#,
        xml_text(secret)
    )
}

/// The PunchOutOrderMessage a supplier's shop hands back through the browser: no secret.
fn cart(payload_id: &str, description: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.063/cXML.dtd">
<cXML payloadID="{payload_id}" timestamp="2026-12-01T10:00:00+01:00">
  <Header>
    <From><Credential domain="DUNS"><Identity>123456789</Identity></Credential></From>
    <To><Credential domain="NetworkId"><Identity>EINKAUF-01</Identity></Credential></To>
    <Sender><Credential domain="DUNS"><Identity>123456789</Identity></Credential><UserAgent>Shop</UserAgent></Sender>
  </Header>
  <Message>
    <PunchOutOrderMessage>
      <BuyerCookie>c0ffee-4711</BuyerCookie>
      <PunchOutOrderMessageHeader operationAllowed="edit"><Total><Money currency="EUR">3.20</Money></Total></PunchOutOrderMessageHeader>
      <ItemIn quantity="2">
        <ItemID><SupplierPartID>M8-SET</SupplierPartID></ItemID>
        <ItemDetail><UnitPrice><Money currency="EUR">1.60</Money></UnitPrice>
          <Description xml:lang="de">{}</Description><UnitOfMeasure>EA</UnitOfMeasure></ItemDetail>
      </ItemIn>
    </PunchOutOrderMessage>
  </Message>
</cXML>
"#,
        xml_text(description)
    )
}

/// The exported documents of one source.
fn exported_from(ws: &Workspace, source: &str) -> Vec<serde_json::Value> {
    ws.exported()
        .into_iter()
        .filter(|d| d["origin"]["source"] == source)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_is_answered_200_once_stored_and_shows_in_export_items_the_page_and_the_connector()
 {
    let password = "Lager-Passwort";
    let hash_ws = Workspace::new("");
    let hash = hash_ws.hash_of(password);
    let page = free_port();
    let rx = Receiver::start(
        "",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{page}\"\nadmin_password_hash = \"{hash}\"\n\
             [[connector]]\nname = \"erp-files\"\nkind = \"dir\"\npath = \"erp\"\nformat = \"json\"\n"
        ),
    );
    std::fs::create_dir_all(rx.ws.path("erp")).unwrap();
    let answer = rx
        .send(&order("new-1@buyer.example", "PO-7001", "new", ARIBA, "10"))
        .await;
    assert_eq!(
        (answer.http, answer.code, answer.text.as_str()),
        (200, 200, "OK"),
        "{answer:?}"
    );
    // Committed before the answer: the store has it the moment the answer is read.
    assert_eq!(rx.count("SELECT COUNT(*) FROM documents"), 1);
    let docs = exported_from(&rx.ws, "cxml:ariba");
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["format"], "cxml-order-request");
    assert_eq!(docs[0]["order_id"], "PO-7001");
    assert_eq!(docs[0]["payload_id"], "new-1@buyer.example");
    assert_eq!(docs[0]["lines"][0]["quantity"], "10");
    // The partner's secret is never stored.
    let kept_with = |text: &str| {
        match rx.ws.store_url {
        Some(_) => rx.count(&format!(
            "SELECT COUNT(*) FROM item_original WHERE position(convert_to('{text}', 'UTF8') IN bytes) > 0"
        )),
        None => rx.count(&format!(
            "SELECT COUNT(*) FROM item_original WHERE instr(CAST(bytes AS TEXT), '{text}') > 0"
        )),
    }
    };
    assert_eq!(kept_with("Ge+heim"), 0);
    assert_eq!(kept_with("<SharedSecret>***</SharedSecret>"), 1);
    let items = rx.ws.run(&["items", "--json"]);
    let items: serde_json::Value = serde_json::from_slice(&items.stdout).expect("items JSON");
    let item = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["source"] == "cxml:ariba")
        .expect("the order's item");
    assert_eq!(item["sender"], "ariba");
    assert_eq!(item["state"], "archived");
    assert!(
        item["lies_in"].as_str().unwrap().contains("answered 200"),
        "{item}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || !support::files_in(
            &rx.ws.path("erp")
        )
        .is_empty()),
        "the connector never got the order: {}",
        rx.log()
    );
    let handed = support::files_in(&rx.ws.path("erp"));
    let file = std::fs::read_to_string(rx.ws.path("erp").join(&handed[0])).unwrap();
    assert!(file.contains("PO-7001"), "{file}");
    // The admin page lists it among the documents.
    let tls = eingang::source::tls::client_config(None).expect("client TLS");
    let web = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = web
        .post(format!("http://127.0.0.1:{page}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("password={password}"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let documents = web
        .get(format!("http://127.0.0.1:{page}/dokumente"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(documents.contains("PO-7001"), "{documents}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_payload_id_again_gets_the_same_answer_and_no_second_order() {
    let rx = Receiver::start("", "");
    let document = order("retry-1@buyer.example", "PO-7002", "new", ARIBA, "3");
    let first = rx.send(&document).await;
    let again = rx.send(&document).await;
    // A retry whose bytes differ (a new timestamp) but whose payloadID is the same.
    let rebuilt = rx
        .send(&document.replace("2026-12-01T09:00:00", "2026-12-01T09:05:00"))
        .await;
    assert_eq!(first.code, 200, "{first:?}");
    assert_eq!(again, first);
    assert_eq!(rebuilt, first);
    assert_eq!(rx.count("SELECT COUNT(*) FROM documents"), 1);
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 1);
    assert_eq!(
        rx.count("SELECT COUNT(*) FROM outbox"),
        0,
        "no notice for a retry"
    );
    // A rejected one is answered the same way again too, and recorded once.
    let bad = order("retry-2@buyer.example", "PO-7003", "new", ARIBA, "drei");
    let rejected = rx.send(&bad).await;
    assert_eq!((rejected.http, rejected.code), (200, 400), "{rejected:?}");
    assert!(rejected.detail.contains("quantity"), "{rejected:?}");
    assert_eq!(rx.send(&bad).await, rejected);
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 2);
    assert_eq!(
        rx.count("SELECT COUNT(*) FROM outbox WHERE kind = 'rejected'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_and_a_delete_supersede_the_order_only_from_its_own_partner() {
    let rx = Receiver::start("", "");
    let ok = |s: &Status| s.http == 200 && s.code == 200;
    let new = rx
        .send(&order("u-1@buyer.example", "PO-7100", "new", ARIBA, "1"))
        .await;
    assert!(ok(&new), "{new:?}");
    let update = rx
        .send(&order("u-2@buyer.example", "PO-7100", "update", ARIBA, "2"))
        .await;
    assert!(ok(&update), "{update:?}");
    // Another partner may not change ariba's order.
    let foreign = rx
        .send(&order("c-1@coupa.example", "PO-7100", "delete", COUPA, "2"))
        .await;
    assert_eq!((foreign.http, foreign.code), (200, 403), "{foreign:?}");
    assert!(
        foreign.detail.contains("the source cxml:ariba"),
        "{foreign:?}"
    );
    let delete = rx
        .send(&order("u-3@buyer.example", "PO-7100", "delete", ARIBA, "2"))
        .await;
    assert!(ok(&delete), "{delete:?}");
    let docs = exported_from(&rx.ws, "cxml:ariba");
    let ops: Vec<(&str, Option<i64>)> = docs
        .iter()
        .map(|d| {
            (
                d["operation"].as_str().unwrap(),
                d["superseded_by"].as_i64(),
            )
        })
        .collect();
    let ids: Vec<i64> = docs.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(
        ops,
        [
            ("new", Some(ids[1])),
            ("update", Some(ids[2])),
            ("delete", None)
        ],
        "{docs:?}"
    );
    assert!(exported_from(&rx.ws, "cxml:coupa").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_and_an_unknown_partner_are_both_401_and_leave_no_trace() {
    let rx = Receiver::start("", "");
    let wrong = rx
        .send(&order(
            "w-1@buyer.example",
            "PO-7200",
            "new",
            ("NetworkID", "AN01000000001", "geheim"),
            "1",
        ))
        .await;
    let unknown = rx
        .send(&order(
            "w-2@buyer.example",
            "PO-7201",
            "new",
            ("NetworkID", "AN09999999999", ARIBA_SECRET),
            "1",
        ))
        .await;
    let coupa_with_arbias_secret = rx
        .send(&order(
            "w-3@buyer.example",
            "PO-7202",
            "new",
            ("DUNS", "123456789", ARIBA_SECRET),
            "1",
        ))
        .await;
    assert_eq!((wrong.http, wrong.code), (200, 401), "{wrong:?}");
    // Nothing tells an unknown partner from a known one with the wrong secret.
    assert_eq!(unknown, wrong);
    assert_eq!(coupa_with_arbias_secret, wrong);
    let no_secret = order("w-4@buyer.example", "PO-7203", "new", ARIBA, "1").replace(
        &format!("<SharedSecret>{}</SharedSecret>", xml_text(ARIBA_SECRET)),
        "",
    );
    assert_eq!(rx.send(&no_secret).await, wrong);
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 0);
    assert_eq!(rx.count("SELECT COUNT(*) FROM outbox"), 0);
    // The right one still goes through.
    let right = rx
        .send(&order("w-5@buyer.example", "PO-7204", "new", ARIBA, "1"))
        .await;
    assert_eq!(right.code, 200, "{right:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_xml_entities_and_a_wrong_content_type_are_406_and_the_listener_keeps_serving() {
    let rx = Receiver::start("", "");
    let sentinel = rx.ws.path("sentinel.txt");
    std::fs::write(&sentinel, "token-5f1e").unwrap();
    let cases = [
        ("text/xml", "<cXML><Header></cXML>".to_owned(), "not well-formed"),
        (
            "text/xml",
            format!(
                "<!DOCTYPE cXML [<!ENTITY e SYSTEM \"file://{}\">]>{}",
                sentinel.display(),
                order("x-1@buyer.example", "PO-7300", "new", ARIBA, "1")
                    .replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE cXML SYSTEM \"http://xml.cxml.org/schemas/cXML/1.2.063/cXML.dtd\">\n", "")
                    .replace("Sechskantschraube", "&e;")
            ),
            "entity",
        ),
        (
            "text/xml",
            "<!DOCTYPE lol [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]><cXML>&b;</cXML>"
                .to_owned(),
            "entity",
        ),
        ("text/xml", "<Bestellung/>".to_owned(), "not a cXML document"),
        ("text/xml", "Bestellung PO-1".to_owned(), "not XML"),
        (
            "application/json",
            order("x-2@buyer.example", "PO-7301", "new", ARIBA, "1"),
            "text/xml",
        ),
    ];
    for (content_type, body, why) in cases {
        let (http, text) = rx.post("/cxml", content_type, body.into_bytes()).await;
        let status = Status::of(http, &text);
        assert_eq!((status.http, status.code), (200, 406), "{why}: {status:?}");
        assert!(status.detail.contains(why), "{why}: {status:?}");
        assert!(!text.contains("token-5f1e"));
    }
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 0);
    let fine = rx
        .send(&order("x-3@buyer.example", "PO-7302", "new", ARIBA, "1"))
        .await;
    assert_eq!(fine.code, 200, "{fine:?}");
    let (http, _) = rx.post("/elsewhere", "text/xml", Vec::new()).await;
    assert_eq!(http, 404);
    let get = rx.client.get(rx.url("/cxml")).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_request_is_450_and_a_profile_request_names_the_transactions() {
    let rx = Receiver::start("", "");
    let invoice = rx
        .send(&request_of(
            "InvoiceDetailRequest",
            "<InvoiceDetailRequestHeader/>",
            ARIBA,
        ))
        .await;
    assert_eq!(
        (invoice.http, invoice.code, invoice.text.as_str()),
        (200, 450, "Not Implemented")
    );
    assert!(
        invoice.detail.contains("InvoiceDetailRequest"),
        "{invoice:?}"
    );
    // Unauthenticated, even the request type is not told.
    let stranger = rx
        .send(&request_of(
            "InvoiceDetailRequest",
            "",
            ("NetworkID", "AN0", "x"),
        ))
        .await;
    assert_eq!(stranger.code, 401);
    let (http, profile) = rx
        .post(
            "/cxml",
            "text/xml",
            request_of("ProfileRequest", "", COUPA).into_bytes(),
        )
        .await;
    assert_eq!(http, 200);
    assert_eq!(Status::of(http, &profile).code, 200);
    assert!(profile.contains("<ProfileResponse"), "{profile}");
    for name in ["OrderRequest", "ShipNoticeRequest", "ProfileRequest"] {
        assert!(
            profile.contains(&format!(
                "<Transaction requestName=\"{name}\"><URL>https://localhost:{}/cxml</URL>",
                rx.port
            )),
            "{name}: {profile}"
        );
    }
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 0);
}

/// Sets or clears ext4's immutable flag (root only, as the tests run).
fn chattr(flag: &str, paths: &[PathBuf]) {
    let ok = std::process::Command::new("chattr")
        .arg(flag)
        .args(paths)
        .status()
        .expect("chattr (e2fsprogs) is needed: apt-get install -y e2fsprogs");
    assert!(
        ok.success(),
        "chattr {flag} failed: the test needs an ext4 /tmp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_answers_http_500_and_the_retry_is_stored_once_it_can() {
    let rx = Receiver::start("", "");
    let warm = rx
        .send(&order("s-0@buyer.example", "PO-7400", "new", ARIBA, "1"))
        .await;
    assert_eq!(warm.code, 200);
    // The database and its write-ahead log refuse every write, even root's. (Not the -shm:
    // SQLite maps it into memory, and a write fault there is a SIGBUS, not an error.) On
    // PostgreSQL a trigger refuses every new item.
    let files: Vec<PathBuf> = ["eingang.db", "eingang.db-wal"]
        .iter()
        .map(|f| rx.ws.path(f))
        .collect();
    let refuse_writes = |refuse: bool| match &rx.ws.store_url {
        Some(url) => {
            let sql = if refuse {
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'no writes'; END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON items
                 FOR EACH STATEMENT EXECUTE FUNCTION refuse();"
            } else {
                "DROP TRIGGER refuse ON items; DROP FUNCTION refuse();"
            };
            support::postgres::query(url, sql).expect("the trigger");
        }
        None => chattr(if refuse { "+i" } else { "-i" }, &files),
    };
    refuse_writes(true);
    let document = order("s-1@buyer.example", "PO-7401", "new", ARIBA, "1");
    let refused = rx.send(&document).await;
    refuse_writes(false);
    assert_eq!((refused.http, refused.code), (500, 500), "{refused:?}");
    assert!(refused.detail.contains("same payloadID"), "{refused:?}");
    let retried = rx.send(&document).await;
    assert_eq!(
        (retried.http, retried.code),
        (200, 200),
        "{retried:?}: {}",
        rx.log()
    );
    assert_eq!(
        rx.count("SELECT COUNT(*) FROM documents WHERE payload_id = 's-1@buyer.example'"),
        1
    );
    assert_eq!(rx.send(&document).await, retried);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn punchout_carts_arrive_intact_in_both_encodings_with_plus_ampersand_and_umlauts() {
    use base64::Engine as _;
    let rx = Receiver::start("", "");
    let description = "Schraube M8+Mutter & Scheibe 100% Größe";
    let urlencoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("cXML-urlencoded", &cart("cart-1@shop.example", description))
        .finish();
    assert!(urlencoded.contains("%2B"), "the + goes encoded");
    let base64 = base64::engine::general_purpose::STANDARD
        .encode(cart("cart-2@shop.example", &format!("{description} (b64)")));
    let base64: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("BuyerCookie", "c0ffee-4711")
        .append_pair("CXML-BASE64", &base64)
        .finish();
    for form in [urlencoded, base64] {
        let (http, text) = rx
            .post(
                "/cxml/punchout",
                "application/x-www-form-urlencoded",
                form.into_bytes(),
            )
            .await;
        let status = Status::of(http, &text);
        assert_eq!((status.http, status.code), (200, 200), "{status:?}");
    }
    let carts = exported_from(&rx.ws, "cxml:coupa");
    let descriptions: Vec<&str> = carts
        .iter()
        .map(|c| c["lines"][0]["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        [description.to_owned(), format!("{description} (b64)")]
    );
    assert_eq!(carts[0]["format"], "cxml-punchout-order-message");
    assert_eq!(carts[0]["buyer_cookie"], "c0ffee-4711");
    // A browser is shown a page; a cart with a wrong secret, or from nobody, is refused.
    let page = rx
        .client
        .post(rx.url("/cxml/punchout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html,application/xhtml+xml")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("cxml-urlencoded", &cart("cart-1@shop.example", description))
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("Warenkorb übernommen"));
    let forged = cart("cart-3@shop.example", "x").replace(
        "<Identity>123456789</Identity></Credential><UserAgent>",
        "<Identity>123456789</Identity><SharedSecret>falsch</SharedSecret></Credential><UserAgent>",
    );
    let stranger = cart("cart-4@shop.example", "x").replace("123456789", "987654321");
    for document in [forged, stranger] {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("cxml-urlencoded", &document)
            .finish();
        let (http, text) = rx
            .post(
                "/cxml/punchout",
                "application/x-www-form-urlencoded",
                form.into_bytes(),
            )
            .await;
        assert_eq!(Status::of(http, &text).code, 401, "{text}");
    }
    let (http, text) = rx
        .post(
            "/cxml/punchout",
            "application/x-www-form-urlencoded",
            b"cart=1".to_vec(),
        )
        .await;
    assert_eq!(Status::of(http, &text).code, 406);
    assert_eq!(exported_from(&rx.ws, "cxml:coupa").len(), 2);
}

/// Reads an HTTP answer off a raw connection until the head is complete (or it closes).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_body_is_refused_before_it_is_read() {
    let rx = Receiver::start("", "");
    // Announced: refused on the headers alone, before a byte of the body is sent.
    let mut stream = rx.raw().await;
    stream
        .write_all(
            b"POST /cxml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: 10485760\r\n\r\n",
        )
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .expect("an answer without the body");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Streamed without a length (chunked): cut off at the limit, long before 10 MB went in.
    let stream = rx.raw().await;
    let (mut read, mut write) = tokio::io::split(stream);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let head = b"POST /cxml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n";
        write.write_all(head).await?;
        let chunk = [b' '; 64 * 1024];
        let mut sent = 0usize;
        while sent < 10 * 1024 * 1024 {
            write
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            write.write_all(&chunk).await?;
            write.write_all(b"\r\n").await?;
            sent += chunk.len();
        }
        write.write_all(b"0\r\n\r\n").await?;
        Ok::<usize, std::io::Error>(sent)
    });
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut read))
        .await
        .expect("an answer while the body is still coming");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    writer.abort();
    assert!(started.elapsed() < Duration::from_secs(10));
    let fine = rx
        .send(&order("big-1@buyer.example", "PO-7500", "new", ARIBA, "1"))
        .await;
    assert_eq!(fine.code, 200);
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_while_others_are_served() {
    let rx = Receiver::start("", "");
    // Headers one byte at a time (slowloris), a body that trickles, a TCP peer that never
    // starts TLS: each is cut off at its deadline (2 s for headers, 3 s for a body).
    let slow_head = {
        let mut stream = rx.raw().await;
        tokio::spawn(async move {
            let started = Instant::now();
            for byte in b"POST /cxml HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            started.elapsed()
        })
    };
    let slow_body = {
        let mut stream = rx.raw().await;
        tokio::spawn(async move {
            let started = Instant::now();
            stream
                .write_all(b"POST /cxml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: 5000\r\n\r\n<cXML>")
                .await
                .unwrap();
            let (mut read, mut write) = tokio::io::split(stream);
            let writer = tokio::spawn(async move {
                for _ in 0..100 {
                    if write.write_all(b" ").await.is_err() {
                        break;
                    }
                    let _ = write.flush().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let head = read_head(&mut read).await;
            writer.abort();
            (head, started.elapsed())
        })
    };
    let silent = tokio::net::TcpStream::connect(("127.0.0.1", rx.port))
        .await
        .unwrap();
    // Meanwhile everyone else is served at once.
    for n in 0..5 {
        let started = Instant::now();
        let answer = rx
            .send(&order(
                &format!("fast-{n}@buyer.example"),
                &format!("PO-76{n:02}"),
                "new",
                ARIBA,
                "1",
            ))
            .await;
        assert_eq!(answer.code, 200, "{answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let cut = tokio::time::timeout(Duration::from_secs(15), slow_head)
        .await
        .expect("the slow head is cut off")
        .unwrap();
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_secs(8),
        "{cut:?}"
    );
    let (head, took) = tokio::time::timeout(Duration::from_secs(15), slow_body)
        .await
        .expect("the slow body is answered")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let mut silent = silent;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_orders_are_each_stored_once() {
    let rx = Arc::new(Receiver::start("", ""));
    let send_all = |round: u32| {
        let rx = rx.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for n in 0..200 {
                let rx = rx.clone();
                tasks.spawn(async move {
                    let document = order(
                        &format!("load-{n}@buyer.example"),
                        &format!("PO-8{n:03}"),
                        "new",
                        if n % 2 == 0 { ARIBA } else { COUPA },
                        "1",
                    );
                    (n, rx.send(&document).await)
                });
            }
            let mut answers = Vec::new();
            while let Some(done) = tasks.join_next().await {
                answers.push(done.unwrap());
            }
            answers.sort_by_key(|(n, _)| *n);
            (round, answers)
        }
    };
    let (_, first) = send_all(1).await;
    for (n, answer) in &first {
        assert_eq!(
            (answer.http, answer.code),
            (200, 200),
            "order {n}: {answer:?}"
        );
    }
    // All of them again at once: the same answers, nothing stored twice.
    let (_, again) = send_all(2).await;
    assert_eq!(again, first);
    assert_eq!(rx.count("SELECT COUNT(*) FROM documents"), 200);
    assert_eq!(rx.count("SELECT COUNT(*) FROM items"), 200);
    assert_eq!(
        rx.count("SELECT COUNT(DISTINCT payload_id) FROM documents"),
        200
    );
    assert_eq!(rx.count("SELECT COUNT(*) FROM outbox"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_are_answered_503_while_the_served_ones_go_on() {
    let rx = Receiver::start("max_connections = 3", "");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(rx.raw().await);
    }
    let mut extra = rx.raw().await;
    extra
        .write_all(b"POST /cxml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut extra))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // A held connection is served as usual.
    let document = order("held-1@buyer.example", "PO-7700", "new", ARIBA, "1");
    let request = format!(
        "POST /cxml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{document}",
        document.len()
    );
    held[0].write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut held[0]))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(held);
    drop(extra);
    // Once they are gone, new ones are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = rx
            .client
            .post(rx.url("/cxml"))
            .header("content-type", "text/xml")
            .body(order("held-2@buyer.example", "PO-7701", "new", ARIBA, "1"))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status().as_u16() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served again: {}",
            rx.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_rejections_from_one_partner_is_one_notice() {
    let rx = Receiver::start("", "");
    for n in 0..6 {
        let answer = rx
            .send(&order(
                &format!("bad-{n}@buyer.example"),
                &format!("PO-79{n:02}"),
                "new",
                ARIBA,
                "viele",
            ))
            .await;
        assert_eq!(answer.code, 400, "{answer:?}");
    }
    let lone = rx
        .send(&order("bad-c@coupa.example", "PO-7999", "new", COUPA, "x"))
        .await;
    assert_eq!(lone.code, 400);
    // Gathered for 15 s, then one summary per partner, every rejection in it.
    assert!(
        wait_until(Duration::from_secs(40), || rx.count(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'summary' AND state != 'pending'"
        ) == 2),
        "{}",
        rx.log()
    );
    assert_eq!(
        rx.count("SELECT COUNT(*) FROM outbox WHERE kind = 'summary'"),
        2
    );
    assert_eq!(
        rx.count(
            "SELECT COUNT(*) FROM outbox o JOIN outbox s ON s.id = o.summary_id
             WHERE o.kind = 'rejected' AND s.source = 'cxml:ariba' AND o.source = 'cxml:ariba'"
        ),
        6
    );
    assert_eq!(
        rx.count("SELECT COUNT(*) FROM outbox WHERE kind = 'rejected' AND summary_id IS NULL"),
        0,
        "no rejection went out on its own"
    );
    assert!(
        rx.log()
            .contains("cXML partner ariba – 6 request(s) rejected")
            || rx
                .log()
                .contains("cXML-Partner ariba – 6 Anfrage(n) abgelehnt"),
        "{}",
        rx.log()
    );
    // There is no inbox to put such an item back into: reprocess says so and what to do.
    let id = rx.count("SELECT MIN(id) FROM items WHERE source = 'cxml:ariba'");
    let out = rx.ws.run(&["reprocess", &id.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("came over HTTP from the cXML partner \"ariba\"")
            && stderr.contains("mark it handled by hand"),
        "{stderr}"
    );
}

#[test]
fn a_listener_beyond_loopback_without_a_certificate_or_on_a_taken_port_does_not_start() {
    let ws = Workspace::new(
        "[cxml]\nlisten = \"0.0.0.0:18443\"\n[[cxml.partner]]\nname = \"ariba\"\ndomain = \"NetworkID\"\nidentity = \"AN01\"\nshared_secret = \"x\"\n",
    );
    let run = ws.run(&["run"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run)
            .contains("config: cxml: listen 0.0.0.0:18443 is reachable from other machines"),
        "{}",
        stderr(&run)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ws = Workspace::new(&format!(
        "[cxml]\nlisten = \"127.0.0.1:{port}\"\n[[cxml.partner]]\nname = \"ariba\"\ndomain = \"NetworkID\"\nidentity = \"AN01\"\nshared_secret = \"x\"\n"
    ));
    let run = ws.run(&["run"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains(&format!("cxml: listen 127.0.0.1:{port}")),
        "{}",
        stderr(&run)
    );
}
