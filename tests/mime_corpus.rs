//! Every message of the shared MIME corpus and of Python's email test corpus is parsed or
//! rejected, never a panic: the extraction step on real-world and deliberately broken mail.

use std::path::{Path, PathBuf};

use eingang::format::{Limits, Registry};
use eingang::item::{Item, ItemKind, Origin};
use eingang::pipeline::parse_with;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn run_all(files: &[PathBuf]) -> (usize, usize) {
    let registry = Registry::default();
    let limits = Limits::with_defaults(PathBuf::from(env!("CARGO_BIN_EXE_eingang")));
    let (mut parsed, mut rejected) = (0, 0);
    for path in files {
        let bytes = std::fs::read(path).unwrap();
        let item = Item::new(
            bytes,
            ItemKind::Message,
            Origin {
                source: "test".into(),
                location: path.display().to_string(),
                file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
            },
        );
        let result = parse_with(&item, None, &registry, &limits).result;
        match result {
            Ok(_) => parsed += 1,
            Err(reject) => {
                let text = reject.to_string();
                assert!(
                    !text.contains("internal error"),
                    "{}: {text}",
                    path.display()
                );
                assert!(
                    !text.contains('\n'),
                    "{}: multi-line reason",
                    path.display()
                );
                rejected += 1;
            }
        }
    }
    (parsed, rejected)
}

#[test]
fn every_shared_corpus_message_is_parsed_or_rejected_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/mime");
    let mut files = Vec::new();
    files_under(&root, &mut files);
    assert!(
        files.len() > 250,
        "the shared MIME corpus is missing: expected its 280 messages at {} (beside the \
         repository); this suite needs it, plain `cargo test` does not",
        root.display()
    );
    let (parsed, rejected) = run_all(&files);
    assert_eq!(parsed + rejected, files.len());
}

#[test]
fn every_python_email_test_message_is_parsed_or_rejected_without_a_panic() {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import test, os; print(os.path.dirname(test.__file__))",
        ])
        .output()
        .expect("python3 is needed for this test (apt-get install python3)");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("test_email/data");
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    files.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("msg_"))
    });
    assert!(
        files.len() >= 40,
        "expected Python's email test corpus at {}",
        dir.display()
    );
    let (parsed, rejected) = run_all(&files);
    assert_eq!(parsed + rejected, files.len());
}
