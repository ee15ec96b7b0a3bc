//! A local folder that other people write, held open by its handle. Everything eingang does
//! in a drop folder goes through here, relative to the handle and by the raw bytes of each
//! name, following the rules mail systems settled on for such folders (Postfix `safe_open`):
//! a file is opened without following a link and without blocking (a FIFO answers at once),
//! and trusted only when the opened descriptor is the regular file that was listed (device,
//! inode, size) with a single link; a move never replaces anything; a note is created new,
//! never through a link. The folder's own identity is checked before the handle is used, so
//! a folder swapped for a link or another folder is noticed, not followed.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

/// The longest file name the usual Linux file systems take, in bytes.
pub const NAME_MAX: usize = 255;
/// Mode of the notes eingang writes (`<name>.error.txt`): no one but the owner and the group.
const NOTE_MODE: u32 = 0o640;

/// A folder opened once and then used only by its handle.
#[derive(Debug)]
pub struct Folder {
    path: PathBuf,
    fd: OwnedFd,
    id: (u64, u64),
}

/// What a listing saw of one name, without following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The raw name.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Device and inode.
    pub id: (u64, u64),
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// Last status change (any write changes it; `cp -p` cannot set it back).
    pub changed: SystemTime,
}

/// The kind of a listed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file with one link: a candidate item.
    File,
    /// A regular file with more than one name: it may be a link to a file elsewhere.
    HardLinked(u64),
    /// A symbolic link.
    Link,
    /// A folder.
    Folder,
    /// A FIFO, socket or device.
    Special,
}

impl Kind {
    /// Why eingang leaves such an entry alone, in plain words; `None` for a regular file.
    pub fn why_not_taken(self) -> Option<String> {
        match self {
            Kind::File => None,
            Kind::HardLinked(n) => Some(format!(
                "a file with {n} hard links (it may be another file's name); eingang reads only files with one link: put a copy there instead"
            )),
            Kind::Link => Some(
                "a symbolic link; eingang never follows links: put the file itself there"
                    .to_owned(),
            ),
            Kind::Folder => Some(
                "a folder; eingang reads only files directly in the inbox: move its files up"
                    .to_owned(),
            ),
            Kind::Special => Some(
                "not a regular file (a FIFO, socket or device); eingang does not read it: remove it"
                    .to_owned(),
            ),
        }
    }
}

impl Folder {
    /// Opens a folder; its last path component must be a real folder, not a link (parents
    /// may be links: they are the admin's configuration).
    pub fn open(path: &Path) -> std::io::Result<Folder> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR if is_link(path) => std::io::Error::other(
                "is a symbolic link; eingang never follows links: configure the folder it points to",
            ),
            e => e.into(),
        })?;
        let stat = rustix::fs::fstat(&fd)?;
        Ok(Folder {
            path: path.to_owned(),
            fd,
            id: identity(&stat),
        })
    }

    /// The configured path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the folder this handle holds. A folder renamed away and
    /// replaced (by a link or another folder) while eingang works in it is not followed.
    pub fn is_still_there(&self) -> bool {
        rustix::fs::lstat(&self.path).is_ok_and(|s| {
            FileType::from_raw_mode(s.st_mode) == FileType::Directory && identity(&s) == self.id
        })
    }

    /// Every name in the folder with what it is, without following any.
    pub fn list(&self) -> std::io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        let dir = rustix::fs::Dir::read_from(&self.fd)?;
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue; // gone between the listing and the look
            };
            out.push(listed(name.to_vec(), &stat));
        }
        Ok(out)
    }

    /// What a name is now, without following it; `None` when nothing has that name.
    pub fn look(&self, name: &[u8]) -> std::io::Result<Option<Listed>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(listed(name.to_vec(), &stat))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the listed regular file for reading: never through a link, never blocking, and
    /// only if the descriptor is that file (same device, inode and size, one link). `None`
    /// when something else has the name now (it changed, was swapped, or vanished).
    pub fn open_listed(&self, listed: &Listed) -> std::io::Result<Option<File>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            listed.name.as_slice(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NXIO | Errno::ISDIR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stat = rustix::fs::fstat(&fd)?;
        let same = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
            && identity(&stat) == listed.id
            && stat.st_nlink == 1
            && u64::try_from(stat.st_size).ok() == Some(listed.size);
        Ok(same.then(|| File::from(fd)))
    }

    /// Reads at most `limit + 1` bytes of an opened file (one more than the limit tells a file
    /// that grew).
    pub fn read_all(file: File, limit: u64) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Whether anything (a file, a link, even a dangling one) has this name.
    pub fn has(&self, name: &[u8]) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Moves `name` from this folder into `to` as `new_name`, never replacing anything there
    /// (`RENAME_NOREPLACE`); the file is never in two places at once. `AlreadyExists` when the
    /// name is taken.
    pub fn move_into(&self, name: &[u8], to: &Folder, new_name: &[u8]) -> std::io::Result<()> {
        match rustix::fs::renameat_with(&self.fd, name, &to.fd, new_name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            // File systems without RENAME_NOREPLACE (some network mounts): a hard link claims
            // the name atomically, then the old name goes.
            Err(Errno::INVAL | Errno::NOSYS) => {
                rustix::fs::linkat(&self.fd, name, &to.fd, new_name, AtFlags::empty())?;
                Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
            }
            // Another file system: copy under the claimed name, make it durable, then remove.
            Err(Errno::XDEV) => {
                let from = rustix::fs::openat(
                    &self.fd,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let mut out = File::from(to.create(new_name, 0o600)?);
                std::io::copy(&mut File::from(from), &mut out)?;
                out.sync_all()?;
                Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a new file (a note), never through a link and never over an existing name,
    /// readable by owner and group only, and makes it durable.
    pub fn write_new(&self, name: &[u8], bytes: &[u8]) -> std::io::Result<()> {
        let mut file = File::from(self.create(name, NOTE_MODE)?);
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn create(&self, name: &[u8], mode: u32) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// Whether eingang can write here: a hidden probe file is created and removed again (the
    /// only sure test: read-only mounts, immutable folders and ACLs all say no at once).
    pub fn check_writable(&self) -> std::io::Result<()> {
        let probe = format!(".eingang-check-{}", std::process::id());
        self.create(probe.as_bytes(), 0o600)?;
        self.remove(probe.as_bytes())
    }

    /// Removes a name if it is there.
    pub fn remove(&self, name: &[u8]) -> std::io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the renames into this folder durable. Best effort: not every file system can
    /// sync a folder.
    pub fn sync(&self) {
        let _ = rustix::fs::fsync(self.fd.as_fd());
    }

    /// The file in this folder named `name` or one of its numbered variants whose bytes hash
    /// to `sha256`, read as `open_listed` reads.
    pub fn find_by_hash(&self, name: &[u8], sha256: &str) -> Option<Vec<u8>> {
        let stem = split_extension(name).0;
        self.list()
            .ok()?
            .into_iter()
            .filter(|l| l.kind == Kind::File && l.name.starts_with(stem))
            .find(|l| {
                self.open_listed(l)
                    .ok()
                    .flatten()
                    .and_then(|f| crate::item::ItemKey::of_reader(f).ok())
                    .is_some_and(|key| key.as_str() == sha256)
            })
            .map(|l| l.name)
    }

    /// The path of a name in this folder, for people (escaped, printable).
    pub fn shown(&self, name: &[u8]) -> String {
        format!(
            "{}/{}",
            crate::escape::text(&self.path.display().to_string()),
            crate::escape::bytes(name)
        )
    }
}

fn identity(stat: &Stat) -> (u64, u64) {
    (stat.st_dev, stat.st_ino)
}

fn is_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn listed(name: Vec<u8>, stat: &Stat) -> Listed {
    let kind = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_nlink > 1 => Kind::HardLinked(stat.st_nlink),
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Link,
        FileType::Directory => Kind::Folder,
        _ => Kind::Special,
    };
    let time = |secs: i64, nanos: i64| {
        let nanos = u32::try_from(nanos).unwrap_or(0);
        match u64::try_from(secs) {
            Ok(s) => SystemTime::UNIX_EPOCH + Duration::new(s, nanos),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    };
    Listed {
        name,
        kind,
        id: identity(stat),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        modified: time(stat.st_mtime, stat.st_mtime_nsec as i64),
        changed: time(stat.st_ctime, stat.st_ctime_nsec as i64),
    }
}

/// `ls.csv` → (`ls`, `.csv`); a name without a dot (or only a leading one) has no extension.
pub fn split_extension(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, &[]),
    }
}

/// The `n`-th name tried for `name` in a folder (`name`, then `stem-2.ext`, `stem-3.ext`, …),
/// at most `max_len` bytes: a stem too long is shortened, the extension kept, and a UTF-8
/// character never cut in half.
pub fn numbered(name: &[u8], n: u32, max_len: usize) -> Vec<u8> {
    let (stem, ext) = split_extension(name);
    let suffix = if n <= 1 {
        Vec::new()
    } else {
        format!("-{n}").into_bytes()
    };
    let room = max_len.saturating_sub(suffix.len() + ext.len());
    let mut stem = stem.get(..room.min(stem.len())).unwrap_or(stem).to_vec();
    if stem.len() < split_extension(name).0.len() {
        // Cut back to a character boundary when the cut fell inside a UTF-8 sequence.
        while stem.last().is_some_and(|b| b & 0xC0 == 0x80) {
            stem.pop();
        }
        if stem.last().is_some_and(|b| *b >= 0xC0) {
            stem.pop();
        }
    }
    let mut out = stem;
    out.extend_from_slice(&suffix);
    out.extend_from_slice(ext);
    out
}

/// Whether an IO error means "the name is taken".
pub fn is_taken(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::AlreadyExists
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_keep_the_extension_and_fit() {
        assert_eq!(numbered(b"ls.csv", 1, NAME_MAX), b"ls.csv");
        assert_eq!(numbered(b"ls.csv", 3, NAME_MAX), b"ls-3.csv");
        assert_eq!(numbered(b"README", 2, NAME_MAX), b"README-2");
        assert_eq!(numbered(b".hidden", 2, NAME_MAX), b".hidden-2");
        let long = [b'a'; 254];
        let mut name = long.to_vec();
        name.extend_from_slice(b".x");
        let two = numbered(&name, 2, NAME_MAX);
        assert_eq!(two.len(), NAME_MAX);
        assert!(two.ends_with(b"-2.x"));
        // A multi-byte character at the cut is dropped whole.
        let mut umlauts = "ü".repeat(130).into_bytes();
        umlauts.extend_from_slice(b".csv");
        let cut = numbered(&umlauts, 12, 245);
        assert!(cut.len() <= 245);
        assert!(std::str::from_utf8(&cut).is_ok());
        assert!(cut.ends_with(b"-12.csv"));
    }

    #[test]
    fn a_listed_file_is_opened_only_while_it_is_that_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Folder::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("a.csv"), b"one").unwrap();
        let listed = dir.look(b"a.csv").unwrap().unwrap();
        assert_eq!(listed.kind, Kind::File);
        assert!(dir.open_listed(&listed).unwrap().is_some());
        // Swapped for a link to another file: not opened.
        std::fs::write(tmp.path().join("secret"), b"two").unwrap();
        std::fs::remove_file(tmp.path().join("a.csv")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), tmp.path().join("a.csv")).unwrap();
        assert!(dir.open_listed(&listed).unwrap().is_none());
        assert_eq!(dir.look(b"a.csv").unwrap().unwrap().kind, Kind::Link);
        // A FIFO does not block the open.
        let fifo = tmp.path().join("pipe");
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let pipe = dir.look(b"pipe").unwrap().unwrap();
        assert_eq!(pipe.kind, Kind::Special);
        assert!(dir.open_listed(&pipe).unwrap().is_none());
    }

    #[test]
    fn moves_and_notes_never_replace_or_follow() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("in")).unwrap();
        std::fs::create_dir(tmp.path().join("out")).unwrap();
        let inbox = Folder::open(&tmp.path().join("in")).unwrap();
        let out = Folder::open(&tmp.path().join("out")).unwrap();
        std::fs::write(tmp.path().join("in/ls.csv"), b"new").unwrap();
        std::fs::write(tmp.path().join("out/ls.csv"), b"old").unwrap();
        assert!(is_taken(
            &inbox.move_into(b"ls.csv", &out, b"ls.csv").unwrap_err()
        ));
        inbox.move_into(b"ls.csv", &out, b"ls-2.csv").unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("out/ls.csv")).unwrap(),
            b"old"
        );
        assert_eq!(
            std::fs::read(tmp.path().join("out/ls-2.csv")).unwrap(),
            b"new"
        );
        // A dangling link planted as the note's name: nothing is created where it points.
        let target = tmp.path().join("planted");
        std::os::unix::fs::symlink(&target, tmp.path().join("out/x.error.txt")).unwrap();
        assert!(out.has(b"x.error.txt"));
        assert!(out.write_new(b"x.error.txt", b"reason").is_err());
        assert!(!target.exists());
        out.write_new(b"y.error.txt", b"reason").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("out/y.error.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "{mode:o}");
    }

    #[test]
    fn a_folder_replaced_by_a_link_is_noticed_and_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("fehler");
        std::fs::create_dir(&path).unwrap();
        let held = Folder::open(&path).unwrap();
        assert!(held.is_still_there());
        std::fs::rename(&path, tmp.path().join("weg")).unwrap();
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &path).unwrap();
        assert!(!held.is_still_there());
        let refused = Folder::open(&path).unwrap_err();
        assert!(refused.to_string().contains("symbolic link"), "{refused}");
    }
}
