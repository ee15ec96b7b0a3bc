//! Supplier table formats end to end: the example formats and fixtures, CSV decoding, and the
//! spreadsheet child process with its pre-scan, run as the real `eingang parse-sheet`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eingang::error::Reject;
use eingang::format::{Attachment, Limits, Registry, TableFormat, table};
use eingang::model::{self, DeliveryNote, Document};
use zip::write::SimpleFileOptions;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The limits eingang runs with, and the real binary as the spreadsheet child.
fn limits() -> Limits {
    Limits::with_defaults(PathBuf::from(env!("CARGO_BIN_EXE_eingang")))
}

/// The day the fixtures are validated on.
fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 12, 1).expect("a date")
}

fn example(name: &str) -> TableFormat {
    TableFormat::load(&root().join("formats").join(format!("{name}.toml"))).unwrap()
}

fn attachment(name: &str, bytes: Vec<u8>) -> Attachment {
    Attachment {
        name: name.to_owned(),
        content_type: None,
        bytes,
    }
}

fn fixture(supplier: &str, file: &str) -> Attachment {
    let bytes = std::fs::read(root().join("fixtures").join(supplier).join(file)).unwrap();
    attachment(file, bytes)
}

fn notes(
    file: &Attachment,
    format: &TableFormat,
    limits: &Limits,
) -> Result<Vec<DeliveryNote>, Reject> {
    let documents = table::parse(file, format, limits)?;
    Ok(documents
        .into_iter()
        .map(|d| match d {
            Document::DeliveryNote(note) => note,
            Document::Order(_) => panic!("a table gives delivery notes only"),
        })
        .collect())
}

/// A format from TOML text, written to a file as the registry would read it.
fn format_from(dir: &tempfile::TempDir, name: &str, text: &str) -> Result<TableFormat, String> {
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    TableFormat::load(&path)
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in entries {
        writer
            .start_file(*name, SimpleFileOptions::default())
            .unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A minimal XLSX (no styles) with one sheet "Tabelle1" and the given parts.
fn workbook(shared_strings: &str, sheet: &str) -> Vec<u8> {
    const RELS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let content_types = r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#;
    let root_rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{RELS}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
    );
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="{RELS}"><sheets><sheet name="Tabelle1" sheetId="1" r:id="rId1"/></sheets></workbook>"#
    );
    let workbook_rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{RELS}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{RELS}/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#
    );
    zip_of(&[
        ("[Content_Types].xml", content_types.as_bytes()),
        ("_rels/.rels", root_rels.as_bytes()),
        ("xl/workbook.xml", workbook.as_bytes()),
        ("xl/_rels/workbook.xml.rels", workbook_rels.as_bytes()),
        ("xl/worksheets/sheet1.xml", sheet.as_bytes()),
        ("xl/sharedStrings.xml", shared_strings.as_bytes()),
    ])
}

const SST_NS: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";

fn shared_strings(unique_count: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{SST_NS}" count="4" uniqueCount="{unique_count}"><si><t>LS</t></si><si><t>Datum</t></si><si><t>Menge</t></si><si><t>LS-1</t></si></sst>"#
    )
}

fn sheet(dimension: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{SST_NS}"><dimension ref="{dimension}"/><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row><row r="2"><c r="A2" t="s"><v>3</v></c><c r="B2" t="inlineStr"><is><t>20.11.2026</t></is></c><c r="C2"><v>2.5</v></c></row></sheetData></worksheet>"#
    )
}

fn sheet_format(dir: &tempfile::TempDir) -> TableFormat {
    let text =
        "kind = \"sheet\"\n[columns]\nnumber = \"LS\"\ndate = \"Datum\"\nquantity = \"Menge\"\n";
    format_from(dir, "blatt", text).unwrap()
}

/// A shell script standing in for the spreadsheet child. It is run once (`probe`) before use:
/// executing a file that another thread's fork still holds open for writing fails (ETXTBSY).
fn fake_reader(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        format!("#!/bin/sh\n[ \"$1\" = probe ] && exit 0\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for _ in 0..100 {
        match Command::new(&path).arg("probe").status() {
            Ok(_) => return path,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{} stayed busy", path.display());
}

#[test]
fn every_example_fixture_gives_its_expected_output() {
    let mut checked = 0;
    for supplier in ["acme", "amparex", "optikhaus"] {
        let format = example(supplier);
        let dir = root().join("fixtures").join(supplier);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let Some((case, _)) = name.rsplit_once('.') else {
                continue;
            };
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("csv" | "xlsx")
            ) {
                continue;
            }
            // Validated as the pipeline does, on a fixed day.
            let result = table::parse(&fixture(supplier, &name), &format, &limits())
                .and_then(|documents| model::validate(&documents, today()).map(|()| documents));
            let expected_json = dir.join(format!("{case}.expected.json"));
            let expected_reject = dir.join(format!("{case}.expected-reject.txt"));
            match result {
                Ok(documents) => {
                    let want: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(&expected_json).unwrap())
                            .unwrap();
                    let got = serde_json::json!({ "documents": documents });
                    assert_eq!(got, want, "{}", path.display());
                }
                Err(reject) => {
                    let want = std::fs::read_to_string(&expected_reject)
                        .unwrap_or_else(|_| panic!("{}: {reject}", path.display()));
                    assert_eq!(reject.to_string(), want.trim_end(), "{}", path.display());
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 10, "fixtures checked");
}

#[test]
fn the_example_formats_load_as_a_registry() {
    let registry = Registry::load(&root().join("formats")).unwrap();
    let names: Vec<&str> = registry.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["acme", "amparex", "optikhaus"]);
}

#[test]
fn windows_1252_csv_keeps_umlauts_and_comma_decimals() {
    let notes = notes(
        &fixture("acme", "lieferschein-2026-11.csv"),
        &example("acme"),
        &limits(),
    )
    .unwrap();
    let lines: Vec<_> = notes.iter().flat_map(|n| &n.lines).collect();
    let cheese = lines[2];
    assert_eq!(
        cheese.description.as_deref(),
        Some("Bergkäse 45 % Fett i. Tr., am Stück")
    );
    assert_eq!(cheese.quantity.unwrap().to_string(), "2.45");
    assert_eq!(cheese.unit.as_deref(), Some("KGM"));
    assert_eq!(lines[1].description.as_deref(), Some("Dübel 8 mm; Nylon"));
    assert_eq!(lines[1].quantity.unwrap().to_string(), "1250");
    assert_eq!(lines[3].quantity.unwrap().to_string(), "1234.5");
    assert_eq!(lines[3].line_total.unwrap().to_string(), "641.94");
    assert_eq!(
        lines[4].description.as_deref(),
        Some("Kühlschrank-Thermometer weiß")
    );
}

/// The header row of Acme's CSV export (`formats/acme.toml`).
const ACME_HEADER: &str = "Lieferschein-Nr.;Lieferdatum;Ihre Bestellung;Pos.;Artikel-Nr.;\
                           Ihre Art.-Nr.;EAN;Bezeichnung;Menge;ME;Einzelpreis;Gesamt netto";

#[test]
fn several_notes_in_one_file_are_grouped_by_number_in_order_of_first_appearance() {
    let csv = format!(
        "{ACME_HEADER}\r\n\
         LS-2;21.11.2026;PO-7;1;F-1;;;Fräser;1;Stk;;\r\n\
         LS-1;20.11.2026;PO-6;1;S-1;;;Säge;2;Stk;;\r\n\
         LS-2;21.11.2026;PO-7;2;B-1;;;Bohrer;3;Stk;;\r\n"
    );
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&csv);
    let notes = notes(
        &attachment("LS_gemischt.csv", bytes.into_owned()),
        &example("acme"),
        &limits(),
    )
    .unwrap();
    let summary: Vec<(String, Vec<String>)> = notes
        .iter()
        .map(|n| {
            let texts = n
                .lines
                .iter()
                .map(|l| l.description.clone().unwrap())
                .collect();
            (n.number.clone(), texts)
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "LS-2".to_owned(),
                vec!["Fräser".to_owned(), "Bohrer".to_owned()]
            ),
            ("LS-1".to_owned(), vec!["Säge".to_owned()]),
        ]
    );
    assert_eq!(notes[0].lines[1].line_no, "2");
    assert_eq!(notes[0].format, "table:acme");
    assert_eq!(notes[0].supplier.as_deref(), Some("acme"));
    assert_eq!(notes[0].file, "LS_gemischt.csv");
}

#[test]
fn amparex_reads_yyyymmdd_dates_and_line_totals() {
    let notes = notes(
        &fixture("amparex", "lieferung-20261120.csv"),
        &example("amparex"),
        &limits(),
    )
    .unwrap();
    let numbers: Vec<&str> = notes.iter().map(|n| n.number.as_str()).collect();
    assert_eq!(numbers, ["LS0004711", "LS0004712", "LS0004719"]);
    let dates: Vec<String> = notes.iter().map(|n| n.date.unwrap().to_string()).collect();
    assert_eq!(dates, ["2026-11-20", "2026-11-20", "2026-11-21"]);
    let frame = &notes[0].lines[1];
    assert_eq!(frame.line_total.unwrap().to_string(), "64.9");
    assert_eq!(frame.quantity.unwrap().to_string(), "1");
    assert_eq!(frame.gtin.as_deref(), Some("4025378100011"));
    assert_eq!(frame.supplier_part_id.as_deref(), Some("TI5218-SW"));
    assert_eq!(frame.manufacturer_part_id.as_deref(), Some("T-5218-01"));
    assert_eq!(frame.serial_number.as_deref(), Some("HB7923920"));
    assert_eq!(frame.comment.as_deref(), Some("Kommission Müller"));
    assert_eq!(notes[0].lines[0].line_total.unwrap().to_string(), "250.5");
}

#[test]
fn xlsx_number_and_date_cells_are_read_as_typed() {
    let notes = notes(
        &fixture("optikhaus", "lieferschein-2026-11-20.xlsx"),
        &example("optikhaus"),
        &limits(),
    )
    .unwrap();
    assert_eq!(notes.len(), 2);
    let first = &notes[0];
    assert_eq!(first.number, "OH-2026-0815");
    assert_eq!(first.date.unwrap().to_string(), "2026-11-20");
    assert_eq!(first.order_refs, ["B-77120", "B-77121"]);
    let frame = &first.lines[0];
    assert_eq!(
        frame.gtin.as_deref(),
        Some("4260123450014"),
        "a 13-digit number cell"
    );
    assert_eq!(frame.line_total.unwrap().to_string(), "59.97");
    assert_eq!(frame.order_line.as_deref(), Some("10"));
    assert_eq!(
        first.lines[2].quantity.unwrap().to_string(),
        "2.5",
        "text cell \"2,5\""
    );
    let pads = &notes[1].lines[0];
    assert_eq!(
        pads.line_total.unwrap().to_string(),
        "4.2",
        "stored as 4.199999999999999"
    );
    assert_eq!(pads.unit.as_deref(), Some("PR"));
}

#[test]
fn a_hand_built_workbook_parses_in_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = workbook(&shared_strings("4"), &sheet("A1:C2"));
    let notes = notes(
        &attachment("ls.xlsx", bytes),
        &sheet_format(&dir),
        &limits(),
    )
    .unwrap();
    assert_eq!(notes[0].number, "LS-1");
    assert_eq!(notes[0].lines[0].quantity.unwrap().to_string(), "2.5");
}

#[test]
fn hostile_shared_strings_count_is_rejected_and_this_process_survives() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = workbook(&shared_strings("4000000000"), &sheet("A1:C2"));
    let reject = notes(
        &attachment("boese.xlsx", bytes),
        &sheet_format(&dir),
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(reject, Reject::TooLarge { .. }), "{reject}");
    assert!(
        reject.to_string().contains("uniqueCount=\"4000000000\""),
        "{reject}"
    );
}

#[test]
fn hostile_workbook_kills_only_the_child_that_reads_it() {
    // Without the pre-scan, calamine reserves room for 4e9 strings: the child aborts.
    let bytes = workbook(&shared_strings("4000000000"), &sheet("A1:C2"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_eingang"))
        .args([
            "parse-sheet",
            "--memory-bytes",
            "2147483648",
            "--cpu-seconds",
            "10",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{output:?}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_child_over_its_memory_limit_is_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = workbook(&shared_strings("4"), &sheet("A1:C2"));
    let limits = Limits {
        sheet_memory_bytes: 1024 * 1024,
        ..limits()
    };
    let reject = notes(&attachment("ls.xlsx", bytes), &sheet_format(&dir), &limits).unwrap_err();
    // Where the first refused allocation happens decides between an abort, a panic or (for
    // the stack) a segmentation fault; each is one line naming the reader.
    let text = reject.to_string();
    assert!(matches!(reject, Reject::Malformed { .. }), "{text}");
    assert!(
        text.starts_with("ls.xlsx: the spreadsheet reader stopped: killed by signal ")
            || text.starts_with("ls.xlsx: the spreadsheet reader panicked: "),
        "{text}"
    );
    assert!(!text.contains('\n') && !text.contains(".rs:"), "{text}");
}

#[test]
fn a_reader_that_hangs_is_killed_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        sheet_reader: fake_reader(&dir, "haengt", "exec sleep 30"),
        sheet_timeout: Duration::from_millis(300),
        ..limits()
    };
    let bytes = workbook(&shared_strings("4"), &sheet("A1:C2"));
    let started = Instant::now();
    let reject = notes(&attachment("ls.xlsx", bytes), &sheet_format(&dir), &limits).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        reject.to_string(),
        "ls.xlsx: too large: the spreadsheet reader took longer than 300ms"
    );
}

#[test]
fn a_reader_error_line_or_bad_output_is_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = workbook(&shared_strings("4"), &sheet("A1:C2"));
    let cases = [
        (
            "fehler",
            "echo 'not a readable workbook: broken' >&2; exit 1",
            "ls.xlsx: not a readable workbook: broken",
        ),
        (
            "abbruch",
            "kill -ABRT $$",
            "ls.xlsx: the spreadsheet reader stopped: killed by signal 6 (abort)",
        ),
        (
            "unsinn",
            "echo '{\"oops\"'",
            "ls.xlsx: the spreadsheet reader stopped: its output is not rows",
        ),
    ];
    for (name, body, want) in cases {
        let limits = Limits {
            sheet_reader: fake_reader(&dir, name, body),
            ..limits()
        };
        let reject = notes(
            &attachment("ls.xlsx", bytes.clone()),
            &sheet_format(&dir),
            &limits,
        )
        .unwrap_err();
        assert!(reject.to_string().starts_with(want), "{name}: {reject}");
    }
}

#[test]
fn zip_bomb_is_rejected_by_its_declared_size_before_inflating() {
    let dir = tempfile::tempdir().unwrap();
    let padding = vec![b' '; 2 * 1024 * 1024];
    let bytes = zip_of(&[("xl/worksheets/sheet1.xml", &padding)]);
    let limits = Limits {
        max_inflated_bytes: 1024 * 1024,
        ..limits()
    };
    let reject = notes(
        &attachment("bombe.xlsx", bytes),
        &sheet_format(&dir),
        &limits,
    )
    .unwrap_err();
    assert_eq!(
        reject.to_string(),
        "bombe.xlsx: too large: its zip entries declare 2097152 bytes uncompressed; \
         the limit is 1048576 bytes (limits.max_inflated_mib)"
    );
}

#[test]
fn a_steep_compression_ratio_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let padding = vec![b' '; 8 * 1024 * 1024];
    let bytes = zip_of(&[("xl/worksheets/sheet1.xml", &padding)]);
    let reject = notes(
        &attachment("bombe.xlsx", bytes),
        &sheet_format(&dir),
        &limits(),
    )
    .unwrap_err();
    assert!(reject.to_string().contains("would inflate"), "{reject}");
}

#[test]
fn a_sheet_dimension_beyond_the_row_limit_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = workbook(&shared_strings("4"), &sheet("A1:XFD1048576"));
    let reject = notes(
        &attachment("weit.xlsx", bytes),
        &sheet_format(&dir),
        &limits(),
    )
    .unwrap_err();
    assert!(matches!(reject, Reject::TooLarge { .. }), "{reject}");
    assert!(
        reject.to_string().contains("reaches row 1048576"),
        "{reject}"
    );
}

#[test]
fn a_file_named_xlsx_that_is_no_workbook_is_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = b"LS;Datum;Menge\nLS-1;20.11.2026;1\n".to_vec();
    let reject = notes(
        &attachment("ls.xlsx", bytes),
        &sheet_format(&dir),
        &limits(),
    )
    .unwrap_err();
    assert_eq!(
        reject.to_string(),
        "ls.xlsx: is not a spreadsheet: neither an XLSX/ODS zip container nor an XLS file"
    );
    // A zip that is no workbook gets as far as the child, which says so.
    let bytes = zip_of(&[("hallo.txt", b"Hallo")]);
    let reject = notes(
        &attachment("ls.xlsx", bytes),
        &sheet_format(&dir),
        &limits(),
    )
    .unwrap_err();
    assert!(
        reject
            .to_string()
            .starts_with("ls.xlsx: not a readable workbook"),
        "{reject}"
    );
}

#[test]
fn rows_beyond_the_limit_are_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let format = format_from(
        &dir,
        "kurz",
        "kind = \"csv\"\n[columns]\nnumber = 1\ndate = 2\nquantity = 3\n",
    )
    .unwrap();
    let csv = "LS,Datum,Menge\nLS-1,2026-11-20,1\nLS-1,2026-11-20,2\nLS-1,2026-11-20,3\n";
    let limits = Limits {
        max_rows: 3,
        ..limits()
    };
    let reject = notes(&attachment("LS_1.csv", csv.into()), &format, &limits).unwrap_err();
    assert_eq!(reject.to_string(), "LS_1.csv: too large: more than 3 rows");
}

#[test]
fn a_missing_header_column_is_named_in_the_reason() {
    let csv = format!(
        "{}\nLS-1;20.11.2026;PO-1;1;A-1;;;Schraube;1;Stk;;\n",
        ACME_HEADER.replace("Menge", "Anzahl")
    );
    let reject = notes(
        &attachment("LS_1.csv", csv.into()),
        &example("acme"),
        &limits(),
    )
    .unwrap_err();
    let text = reject.to_string();
    assert!(matches!(reject, Reject::Unsupported { .. }), "{text}");
    assert!(
        text.starts_with(
            "LS_1.csv: no column \"Menge\" (quantity) in the header row 1 of format acme; \
             it has \"Lieferschein-Nr.\", \"Lieferdatum\""
        ),
        "{text}"
    );
    assert!(text.contains("\"Anzahl\""), "{text}");
}

#[test]
fn senders_domains_and_globs_route_to_the_supplier() {
    let acme = example("acme");
    for sender in [
        "lieferschein@acme-grosshandel.de",
        "LieferSchein@ACME-Grosshandel.de",
        "<lieferschein@acme-grosshandel.de>",
        "disposition@acme-logistik.de",
    ] {
        assert!(acme.matches_sender(sender), "{sender}");
    }
    for sender in [
        "vertrieb@acme-grosshandel.de",
        "x@lager.acme-logistik.de",
        "lieferschein@acme-grosshandel.de.example.com",
        "acme-logistik.de",
    ] {
        assert!(!acme.matches_sender(sender), "{sender}");
    }
    for name in [
        "LS_4711.CSV",
        "lieferschein-2026-11.csv",
        "eingang/LS_1.csv",
    ] {
        assert!(acme.matches_file(name), "{name}");
    }
    assert!(!acme.matches_file("rechnung-2026-11.csv"));

    let by_name = |name: &str, content_type: Option<&str>| Attachment {
        name: name.to_owned(),
        content_type: content_type.map(str::to_owned),
        bytes: Vec::new(),
    };
    assert!(
        acme.accepts(&by_name("rechnung.csv", None)),
        "a CSV by its extension"
    );
    assert!(acme.accepts(&by_name("part-2", Some("text/csv; charset=windows-1252"))));
    assert!(!acme.accepts(&by_name("foto.jpg", Some("image/jpeg"))));
    let optikhaus = example("optikhaus");
    let xlsx_type = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    assert!(optikhaus.accepts(&by_name("part-1", Some(xlsx_type))));
    assert!(optikhaus.accepts(&by_name("Bestand.ODS", None)));
    assert!(!optikhaus.accepts(&by_name("ls.csv", None)));
}

#[test]
fn format_files_with_mistakes_give_clear_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let unknown =
        format_from(&dir, "tippfehler", "kind = \"csv\"\ndelimeter = \";\"\n").unwrap_err();
    assert!(
        unknown.starts_with("line 2: unknown field `delimeter`, expected one of"),
        "{unknown}"
    );
    let incomplete = format_from(
        &dir,
        "unvollstaendig",
        "kind = \"csv\"\nencoding = \"klingonisch\"\n[columns]\nnumber = \"LS\"\nmenge = \"Menge\"\n",
    )
    .unwrap_err();
    assert!(
        incomplete.contains("unknown variant `menge`"),
        "{incomplete}"
    );
    let incomplete = format_from(
        &dir,
        "unvollstaendig",
        "kind = \"csv\"\nencoding = \"klingonisch\"\n[columns]\nnumber = \"LS\"\n",
    )
    .unwrap_err();
    assert_eq!(
        incomplete,
        "encoding \"klingonisch\" is unknown (e.g. \"utf-8\", \"windows-1252\"); \
         columns.quantity is required; columns.date (or from_file_name.date) is required"
    );
}

#[test]
fn format_files_that_claim_the_same_sender_domain_or_file_are_load_errors_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let columns = "[columns]\nnumber = \"LS\"\ndate = \"Datum\"\nquantity = \"Menge\"\n";
    let write = |name: &str, head: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("kind = \"csv\"\n{head}{columns}")).unwrap();
        path.display().to_string()
    };
    let a = write(
        "a",
        "senders = [\"ls@acme.de\", \"@lager.de\"]\nfiles = [\"LS_*.csv\", \"we-*.csv\"]\n",
    );
    let b = write(
        "b",
        "senders = [\"LS@acme.de\", \"@lager.de\"]\nfiles = [\"ls_*.CSV\"]\n",
    );
    let c = write(
        "c",
        "senders = [\"versand@lager.de\", \"@c.de\"]\nfiles = [\"*-2026.csv\"]\n",
    );
    let problems = Registry::load(dir.path()).unwrap_err();
    let expected = [
        format!(
            "formats: {a} and {b} both list the sender \"ls@acme.de\": a sender belongs to one supplier, remove it from one of the files"
        ),
        format!(
            "formats: {a} and {b} both list the domain \"@lager.de\": a sender belongs to one supplier, remove it from one of the files"
        ),
        format!(
            "formats: {a} and {b} both list the file glob \"LS_*.csv\": a file name belongs to one supplier, remove it from one of the files"
        ),
        format!(
            "formats: {a} lists the whole domain \"@lager.de\" and {c} the address \"versand@lager.de\" in it: a message from that address would go to whichever file sorts first; remove the address, or list the domain's addresses one by one"
        ),
        format!(
            "formats: the file glob \"LS_*.csv\" in {a} and \"*-2026.csv\" in {c} both match a name such as \"LS_-2026.csv\": such a file would go to whichever file sorts first; make the globs exclusive"
        ),
        format!(
            "formats: the file glob \"we-*.csv\" in {a} and \"*-2026.csv\" in {c} both match a name such as \"we-2026.csv\": such a file would go to whichever file sorts first; make the globs exclusive"
        ),
        format!(
            "formats: {b} lists the whole domain \"@lager.de\" and {c} the address \"versand@lager.de\" in it: a message from that address would go to whichever file sorts first; remove the address, or list the domain's addresses one by one"
        ),
        format!(
            "formats: the file glob \"ls_*.CSV\" in {b} and \"*-2026.csv\" in {c} both match a name such as \"ls_-2026.CSV\": such a file would go to whichever file sorts first; make the globs exclusive"
        ),
    ];
    assert_eq!(problems, expected);

    // Exclusive files load.
    std::fs::remove_file(dir.path().join("b.toml")).unwrap();
    std::fs::remove_file(dir.path().join("c.toml")).unwrap();
    write(
        "d",
        "senders = [\"@d.de\"]\nfiles = [\"LS_[0-9]*.xlsx\", \"lieferung-*.csv\"]\n",
    );
    assert!(Registry::load(dir.path()).is_ok());
}
