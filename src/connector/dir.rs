//! A dir connector's file: written under a hidden temporary name in the target folder
//! (`.<name>.tmp`, which ERP imports and eingang's own drop folders pass over), synced, then
//! renamed to its name without ever replacing a file, and the folder synced; so an importer
//! sees either no file or the whole one, and a crash leaves at most the temporary file, which
//! the next attempt removes. Blocking: run it on the blocking pool.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags};
use rustix::io::Errno;

/// What a write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file is in place now.
    New,
    /// A file of that name with these very bytes was there already: an earlier attempt wrote
    /// it and did not live to record that.
    AlreadyThere,
}

/// The file name of a document: its store id (zero-padded, so names sort as the store does),
/// its kind, its number (letters, digits, `-`, `_` and `.` only), and the event when it is not
/// a plain store (`-update`, `-delete`).
pub fn file_name(document_id: i64, kind: &str, number: &str, event: &str, ext: &str) -> String {
    let number: String = number
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let number = number.trim_start_matches('.');
    let suffix = match event {
        "document.updated" => "-update",
        "document.deleted" => "-delete",
        _ => "",
    };
    if number.is_empty() {
        format!("{document_id:010}-{kind}{suffix}.{ext}")
    } else {
        format!("{document_id:010}-{kind}-{number}{suffix}.{ext}")
    }
}

/// The temporary name beside `name`.
pub fn temporary(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Writes `bytes` as `folder/name`, atomically and never over another file.
pub fn write_new(folder: &Path, name: &str, bytes: &[u8]) -> Result<Written, String> {
    let target = folder.join(name);
    let temp = folder.join(temporary(name));
    let shown = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    // A temporary file of this name is a crashed attempt's: ours to remove.
    match std::fs::remove_file(&temp) {
        Ok(()) => {
            tracing::debug!(file = %temp.display(), "removed a crashed attempt's temporary file")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(shown(&temp, &e)),
    }
    let result = (|| {
        // create_new is O_EXCL: it follows no link and opens nothing that is there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| shown(&temp, &e))?;
        file.write_all(bytes).map_err(|e| shown(&temp, &e))?;
        file.sync_all().map_err(|e| shown(&temp, &e))?;
        drop(file);
        crate::fault::point("handoff_file_before_rename");
        place(&temp, &target)
    })();
    if !matches!(result, Ok(Written::New)) {
        let _ = std::fs::remove_file(&temp);
    }
    if let Ok(Written::AlreadyThere) = result {
        let there = std::fs::read(&target).map_err(|e| shown(&target, &e))?;
        if there != bytes {
            return Err(format!(
                "{}: a different file of that name is there already; eingang does not replace it",
                target.display()
            ));
        }
    }
    let written = result?;
    File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| shown(folder, &e))?;
    Ok(written)
}

/// Renames without replacing (renameat2 RENAME_NOREPLACE); where the file system cannot, a
/// hard link (which never replaces either) and the temporary name removed.
fn place(temp: &Path, target: &Path) -> Result<Written, String> {
    match rustix::fs::renameat_with(CWD, temp, CWD, target, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(Written::New),
        Err(Errno::EXIST) => Ok(Written::AlreadyThere),
        Err(Errno::INVAL | Errno::NOSYS) => {
            match rustix::fs::linkat(CWD, temp, CWD, target, rustix::fs::AtFlags::empty()) {
                Ok(()) => {
                    let _ = std::fs::remove_file(temp);
                    Ok(Written::New)
                }
                Err(Errno::EXIST) => Ok(Written::AlreadyThere),
                Err(e) => Err(format!("{}: {e}", target.display())),
            }
        }
        Err(e) => Err(format!("{}: {e}", target.display())),
    }
}

/// `eingang check`: the folder is there (made with `create`) and a file can be written,
/// synced and removed in it.
pub fn check_writable(folder: &Path, create: bool) -> Result<(), String> {
    if create {
        std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    }
    if !folder.is_dir() {
        return Err(format!(
            "{}: no such folder (eingang check --create-folders makes it)",
            folder.display()
        ));
    }
    let probe: PathBuf = folder.join(temporary(&format!("eingang-check-{}", std::process::id())));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(b"eingang check\n")?;
            f.sync_all()
        });
    let _ = std::fs::remove_file(&probe);
    result.map_err(|e| format!("{}: cannot write: {e}", folder.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_placed_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let name = file_name(12, "order", "DO/12 34", "document.updated", "json");
        assert_eq!(name, "0000000012-order-DO_12_34-update.json");
        assert_eq!(write_new(dir.path(), &name, b"one").unwrap(), Written::New);
        assert_eq!(
            write_new(dir.path(), &name, b"one").unwrap(),
            Written::AlreadyThere
        );
        let err = write_new(dir.path(), &name, b"two").unwrap_err();
        assert!(err.contains("a different file of that name"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"one");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }

    #[test]
    fn a_crashed_attempts_temporary_file_is_replaced_by_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let name = file_name(1, "delivery_note", "..LS-1", "document.stored", "csv");
        assert_eq!(name, "0000000001-delivery_note-LS-1.csv");
        std::fs::write(dir.path().join(temporary(&name)), b"half").unwrap();
        write_new(dir.path(), &name, b"whole").unwrap();
        assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"whole");
        assert!(!dir.path().join(temporary(&name)).exists());
    }

    #[test]
    fn a_missing_folder_fails_the_check_until_created() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("export/erp");
        assert!(
            check_writable(&folder, false)
                .unwrap_err()
                .contains("no such folder")
        );
        check_writable(&folder, true).unwrap();
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    }
}
