//! Runs every fixture through `eingang parse`: `fixtures/<supplier>/<case>.<ext>` with
//! `--supplier <supplier>`, `fixtures/standard/**` without. Each case has either
//! `<case>.expected.json` (the documents as printed) or `<case>.expected-reject.txt` (the
//! reason). On a mismatch `<case>.actual.json` is written beside it; `EINGANG_BLESS=1`
//! rewrites the expectations instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            cases(&path, out);
        } else if !(name.starts_with('.')
            || name.contains(".expected")
            || name.ends_with(".actual.json")
            || name.ends_with(".md")
            || name.ends_with(".py"))
        {
            out.push(path);
        }
    }
}

fn sibling(case: &Path, suffix: &str) -> PathBuf {
    let stem = case.file_stem().unwrap().to_string_lossy().into_owned();
    case.with_file_name(format!("{stem}{suffix}"))
}

#[test]
fn every_fixture_parses_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("fixtures");
    let mut all = Vec::new();
    cases(&fixtures, &mut all);
    assert!(
        all.len() >= 10,
        "found only {} fixtures under {}",
        all.len(),
        fixtures.display()
    );
    let bless = std::env::var("EINGANG_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &all {
        let rel = case.strip_prefix(&fixtures).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eingang"));
        cmd.current_dir(root).arg("parse").arg(case);
        if top != "standard" {
            cmd.args(["--supplier", &top]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let expected_json = sibling(case, ".expected.json");
        let expected_reject = sibling(case, ".expected-reject.txt");
        if expected_json.exists() {
            checked += 1;
            let actual: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
            let expected: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&expected_json).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", expected_json.display()));
            if out.status.code() == Some(0) && actual.as_ref() == Some(&expected) {
                continue;
            }
            if bless && out.status.code() == Some(0) {
                std::fs::write(&expected_json, &out.stdout).unwrap();
                continue;
            }
            let actual_path = sibling(case, ".actual.json");
            std::fs::write(&actual_path, &out.stdout).unwrap();
            failures.push(format!(
                "{}: see {} (stderr: {stderr})",
                rel.display(),
                actual_path.display()
            ));
        } else if expected_reject.exists() {
            checked += 1;
            let want = std::fs::read_to_string(&expected_reject)
                .unwrap()
                .trim()
                .to_owned();
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let short = want
                .strip_prefix(&format!("{name}: "))
                .unwrap_or(&want)
                .to_owned();
            let ok = out.status.code() == Some(1)
                && stderr.lines().count() == 1
                && stderr.starts_with("error: ")
                && (stderr.contains(&want) || stderr.ends_with(&short));
            if ok {
                continue;
            }
            if bless && out.status.code() == Some(1) {
                std::fs::write(
                    &expected_reject,
                    format!("{}\n", stderr.trim_start_matches("error: ")),
                )
                .unwrap();
                continue;
            }
            failures.push(format!(
                "{}: expected rejection {want:?}, got exit {:?} stderr {stderr:?}",
                rel.display(),
                out.status.code()
            ));
        } else {
            failures.push(format!(
                "{}: no .expected.json or .expected-reject.txt beside it",
                rel.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
    assert!(checked >= 10);
}
