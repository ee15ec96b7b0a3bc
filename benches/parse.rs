//! `cargo bench`: parse throughput per format (documents/s, MB/s) and `eingang import` of a
//! folder of 2000 `.eml` messages into a fresh store (messages/s). Prints figures; asserts
//! nothing about speed.

use std::fmt::Write as _;

use base64::Engine;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use eingang::format::{self, Attachment, Limits, Parsed, Registry};

const LINES: usize = 20;
const MESSAGES: usize = 2000;

const SUPPLIER_FORMAT: &str = r#"kind = "csv"
senders = ["@bench-lieferant.de"]
files = ["LS_*.csv"]
encoding = "windows-1252"
delimiter = ";"
decimal = ","
thousands = "."
header_row = 1
date_formats = ["%d.%m.%Y"]

[columns]
number = "Lieferschein"
date = "Datum"
order_ref = "Bestellung"
supplier_part_id = "Artikel"
description = "Bezeichnung"
quantity = "Menge"
unit = "Einheit"
"#;

fn cxml_order(n: usize) -> String {
    let mut items = String::new();
    for i in 1..=LINES {
        write!(
            items,
            r#"<ItemOut quantity="{i}" lineNumber="{i}"><ItemID><SupplierPartID>A-{i}</SupplierPartID></ItemID>
<ItemDetail><UnitPrice><Money currency="EUR">1.{i:02}</Money></UnitPrice><Description xml:lang="de">Kugelschreiber blau {i}</Description>
<UnitOfMeasure>EA</UnitOfMeasure></ItemDetail></ItemOut>"#
        )
        .unwrap();
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/1.2.014/cXML.dtd">
<cXML payloadID="bench-{n}@buyer.example.com" timestamp="2026-11-20T10:00:00+01:00">
<Header><From><Credential domain="DUNS"><Identity>1</Identity></Credential></From>
<To><Credential domain="DUNS"><Identity>2</Identity></Credential></To>
<Sender><Credential domain="DUNS"><Identity>1</Identity></Credential><UserAgent>bench</UserAgent></Sender></Header>
<Request><OrderRequest><OrderRequestHeader orderID="PO-{n}" orderDate="2026-11-20T10:00:00+01:00" type="new">
<Total><Money currency="EUR">187.60</Money></Total>
<ShipTo><Address><Name xml:lang="de">Lager</Name><PostalAddress><Street>Hauptstr. 1</Street><City>Berlin</City>
<PostalCode>10115</PostalCode><Country isoCountryCode="DE">Deutschland</Country></PostalAddress></Address></ShipTo>
</OrderRequestHeader>{items}</OrderRequest></Request></cXML>"#
    )
}

fn cxml_ship_notice(n: usize) -> String {
    let mut items = String::new();
    for i in 1..=LINES {
        write!(
            items,
            r#"<ShipNoticeItem quantity="{i}" lineNumber="{i}"><ItemID><SupplierPartID>A-{i}</SupplierPartID></ItemID><UnitOfMeasure>EA</UnitOfMeasure></ShipNoticeItem>"#
        )
        .unwrap();
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<cXML payloadID="asn-{n}@supplier.example.com" timestamp="2026-11-20T10:00:00+01:00"><Header/>
<Request><ShipNoticeRequest><ShipNoticeHeader shipmentID="S-{n}" noticeDate="2026-11-20T10:00:00+01:00" shipmentDate="2026-11-20T08:00:00+01:00"/>
<ShipNoticePortion><OrderReference orderID="PO-{n}"><DocumentReference payloadID="bench-{n}@buyer.example.com"/></OrderReference>{items}</ShipNoticePortion>
</ShipNoticeRequest></Request></cXML>"#
    )
}

fn opentrans(n: usize) -> String {
    let mut items = String::new();
    for i in 1..=LINES {
        write!(
            items,
            r#"<DISPATCHNOTIFICATION_ITEM><LINE_ITEM_ID>{i}</LINE_ITEM_ID><PRODUCT_ID><bmecat:SUPPLIER_PID>A-{i}</bmecat:SUPPLIER_PID>
<bmecat:DESCRIPTION_SHORT>Schraube M{i}</bmecat:DESCRIPTION_SHORT></PRODUCT_ID><QUANTITY>{i}</QUANTITY><bmecat:ORDER_UNIT>C62</bmecat:ORDER_UNIT>
<ORDER_REFERENCE><ORDER_ID>PO-{n}</ORDER_ID><LINE_ITEM_ID>{i}</LINE_ITEM_ID></ORDER_REFERENCE></DISPATCHNOTIFICATION_ITEM>"#
        )
        .unwrap();
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DISPATCHNOTIFICATION xmlns="http://www.opentrans.org/XMLSchema/2.1" xmlns:bmecat="http://www.bmecat.org/bmecat/2005" version="2.1">
<DISPATCHNOTIFICATION_HEADER><DISPATCHNOTIFICATION_INFO><DISPATCHNOTIFICATION_ID>LS-{n}</DISPATCHNOTIFICATION_ID>
<DISPATCHNOTIFICATION_DATE>2026-11-20</DISPATCHNOTIFICATION_DATE></DISPATCHNOTIFICATION_INFO></DISPATCHNOTIFICATION_HEADER>
<DISPATCHNOTIFICATION_ITEM_LIST>{items}</DISPATCHNOTIFICATION_ITEM_LIST></DISPATCHNOTIFICATION>"#
    )
}

fn ubl(n: usize) -> String {
    let mut lines = String::new();
    for i in 1..=LINES {
        write!(
            lines,
            r#"<cac:DespatchLine><cbc:ID>{i}</cbc:ID><cbc:DeliveredQuantity unitCode="C62">{i}</cbc:DeliveredQuantity>
<cac:OrderLineReference><cbc:LineID>{i}</cbc:LineID></cac:OrderLineReference><cac:Item><cbc:Name>Artikel {i}</cbc:Name>
<cac:SellersItemIdentification><cbc:ID>A-{i}</cbc:ID></cac:SellersItemIdentification>
<cac:StandardItemIdentification><cbc:ID schemeID="0160">40123456789{i:02}</cbc:ID></cac:StandardItemIdentification></cac:Item></cac:DespatchLine>"#
        )
        .unwrap();
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DespatchAdvice xmlns="urn:oasis:names:specification:ubl:schema:xsd:DespatchAdvice-2" xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2" xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
<cbc:UBLVersionID>2.1</cbc:UBLVersionID><cbc:ID>DA-{n}</cbc:ID><cbc:IssueDate>2026-11-20</cbc:IssueDate>
<cac:OrderReference><cbc:ID>PO-{n}</cbc:ID></cac:OrderReference>{lines}</DespatchAdvice>"#
    )
}

/// Windows-1252 bytes of a supplier CSV with `;` and decimal commas.
fn csv(n: usize) -> Vec<u8> {
    let mut text =
        String::from("Lieferschein;Datum;Bestellung;Artikel;Bezeichnung;Menge;Einheit\r\n");
    for i in 1..=LINES {
        writeln!(
            text,
            "LS-{n};20.11.2026;PO-{n};A-{i};Käse „Gouda“ 48%;{i},5;Stk\r"
        )
        .unwrap();
    }
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
    bytes.into_owned()
}

fn measure(
    name: &str,
    attachment: &Attachment,
    supplier: Option<&format::TableFormat>,
    limits: &Limits,
) {
    let start = Instant::now();
    let mut documents = 0usize;
    let mut bytes = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        match format::parse(attachment, supplier, limits) {
            Ok(Parsed::Documents(d)) => documents += d.len(),
            other => panic!("{name}: the benchmark input did not parse: {other:?}"),
        }
        bytes += attachment.bytes.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<28} {:>10.0} documents/s {:>8.1} MB/s  ({} lines each)",
        documents as f64 / secs,
        bytes as f64 / secs / 1e6,
        LINES
    );
}

fn eml(n: usize) -> Vec<u8> {
    let (from, name, ctype, body) = if n.is_multiple_of(2) {
        (
            "ls@bench-lieferant.de",
            format!("LS_{n}.csv"),
            "text/csv",
            csv(n),
        )
    } else {
        (
            "orders@buyer.example.com",
            format!("order-{n}.xml"),
            "application/xml",
            cxml_order(n).into_bytes(),
        )
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
    let b64: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    let b64 = b64.join("\r\n");
    format!(
        "From: Lieferant <{from}>\r\nTo: lager@example.com\r\nSubject: Lieferschein {n}\r\nMessage-ID: <bench-{n}@example.com>\r\n\
         Date: Fri, 20 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei.\r\n--b\r\nContent-Type: {ctype}\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
    )
    .into_bytes()
}

/// A DNS server on loopback that answers every query with NXDOMAIN, for the import's sender
/// checks: the benchmark measures eingang, not the machine's resolver (nor sends look-ups off
/// the machine). Its thread ends with the process.
fn nxdomain_server() -> std::net::SocketAddr {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a udp port");
    let addr = udp.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            // The header and question back, with QR, RA and NXDOMAIN set (RFC 1035 §4.1).
            let query = buf.get(..n).unwrap_or_default();
            let mut end = 12;
            while let Some(&len) = query.get(end) {
                end += 1 + usize::from(len);
                if len == 0 {
                    break;
                }
            }
            let Some(question) = query.get(..end + 4) else {
                continue;
            };
            let mut reply = question.to_vec();
            reply[2] = 0x80 | (reply[2] & 0x01);
            reply[3] = 0x80 | 3;
            reply[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            let _ = udp.send_to(&reply, peer);
        }
    });
    addr
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("formats")).unwrap();
    std::fs::write(dir.path().join("formats/bench.toml"), SUPPLIER_FORMAT).unwrap();
    let registry = Registry::load(&dir.path().join("formats")).expect("bench format loads");
    let limits = Limits::with_defaults(PathBuf::from(env!("CARGO_BIN_EXE_eingang")));
    let att = |name: &str, bytes: Vec<u8>| Attachment {
        name: name.to_owned(),
        content_type: None,
        bytes,
    };
    println!("parse throughput, one attachment at a time, single thread:");
    measure(
        "cxml-order-request",
        &att("o.xml", cxml_order(1).into_bytes()),
        None,
        &limits,
    );
    measure(
        "cxml-ship-notice",
        &att("s.xml", cxml_ship_notice(1).into_bytes()),
        None,
        &limits,
    );
    measure(
        "opentrans-2.1",
        &att("d.xml", opentrans(1).into_bytes()),
        None,
        &limits,
    );
    measure(
        "ubl-despatch-advice",
        &att("u.xml", ubl(1).into_bytes()),
        None,
        &limits,
    );
    measure(
        "table:bench (CSV, cp1252)",
        &att("LS_1.csv", csv(1)),
        registry.by_name("bench"),
        &limits,
    );

    let inbox = dir.path().join("eml");
    std::fs::create_dir(&inbox).unwrap();
    let mut total = 0usize;
    for n in 0..MESSAGES {
        let bytes = eml(n);
        total += bytes.len();
        std::fs::write(inbox.join(format!("{n:05}.eml")), bytes).unwrap();
    }
    std::fs::write(
        dir.path().join("eingang.toml"),
        format!(
            "[store]\npath = \"bench.db\"\n[dns]\nserver = \"{}\"\n",
            nxdomain_server()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_eingang"))
        .current_dir(dir.path())
        .args(["import", "eml"])
        .output()
        .expect("run eingang import");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "import of {MESSAGES} .eml (half CSV, half cXML, {:.1} MB) into a fresh store: {:.0} messages/s ({secs:.2} s)",
        total as f64 / 1e6,
        MESSAGES as f64 / secs
    );
}
