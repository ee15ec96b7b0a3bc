//! The FTP/FTPS source: a folder on a server, listed on the source's schedule. A file is taken
//! once its size (and listed time) is the same in two listings a settle time apart; it is
//! downloaded, handled with its batch, and only after its outcome is committed renamed on the
//! server into the archive or error folder, never over an existing name; a failed file gets
//! `<name>.error.txt` uploaded beside it.
//!
//! Each pass opens its own connection: explicit (`AUTH TLS`, then `PROT P` for the data
//! channels) or implicit TLS with the certificate verified (system roots plus `ca_file`), or
//! plaintext, which `config` allows only to loopback hosts; passive mode, with data channels
//! always opened to the control connection's address. Every network call has a deadline. Any
//! network, TLS, login or server error ends the pass and leaves the files where they are; the
//! daemon retries with backoff. The password goes to the `PASS` command and nowhere else.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use suppaftp::list::{File as Listed, ListParser};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;

use super::dir::{error_note, is_temporary};
use super::folder;
use super::reconcile::{Seen, Wanted};
use super::settle::Settling;
use super::{BatchLimits, CheckLine, Disposed, Fetched, Inbox, Listing, Move, Shelf, Stray};
use crate::config::{FtpConfig, TlsMode};
use crate::disposition::Disposition;
use crate::escape;
use crate::item::{Item, ItemKey, ItemKind, KeyHasher, Origin};
use crate::store::Place;

/// TCP connect, greeting and TLS handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// One command on the control channel and its reply, a listing included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// No byte on a data channel for this long: the transfer stalled.
const DATA_TIMEOUT: Duration = Duration::from_secs(60);
/// `QUIT` is a courtesy: the pass's result does not depend on it.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Files per batch, and the bytes a batch holds in memory at most.
const BATCH: BatchLimits = BatchLimits {
    items: 16,
    bytes: 64 * 1024 * 1024,
};
/// Read size on the data channel.
const CHUNK_BYTES: usize = 64 * 1024;
/// How many numbered names (`ls-2.xml`, …) a move tries before it gives up.
const MAX_NAME_TRIES: u32 = 10_000;

/// A failure of the server, the network or TLS. All of them are transient: the files stay
/// where they are and the pass is tried again later.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached, or the TLS handshake failed (an unknown issuer or a
    /// wrong host name among them).
    #[error("{server}: {why}")]
    Connect {
        /// `host:port`.
        server: String,
        /// What failed.
        why: String,
    },
    /// The server refused the login.
    #[error("login as {user} refused: {why}")]
    Login {
        /// The login name.
        user: String,
        /// The server's reply.
        why: String,
    },
    /// The server refused a command (a 4xx or 5xx reply); the connection is fine.
    #[error("{what}: {why}")]
    Refused {
        /// The command and its path.
        what: String,
        /// The server's reply.
        why: String,
    },
    /// A command failed or the connection broke during it.
    #[error("{what}: {why}")]
    Command {
        /// The command and its path.
        what: String,
        /// The server's reply or the broken connection.
        why: String,
    },
    /// A command or transfer got no answer in time.
    #[error("{what}: no answer within {} s", .after.as_secs())]
    Timeout {
        /// The command and its path.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// One of the three folders is not on the server.
    #[error(
        "{role} folder {path} does not exist on the server (eingang check --create-folders creates it)"
    )]
    MissingFolder {
        /// `inbox`, `archive` or `error`.
        role: &'static str,
        /// The configured path.
        path: String,
    },
}

/// One folder on an FTP/FTPS server with its archive and error folders.
#[derive(Debug)]
pub struct FtpSource {
    name: String,
    config: FtpConfig,
    settling: Settling<String>,
}

/// A file or folder as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    name: String,
    size: u64,
    modified: SystemTime,
    is_file: bool,
}

impl super::Entry for Entry {
    fn key(&self) -> String {
        self.name.clone()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// The server's inbox opened for one pass: a logged-in session.
pub struct FtpInbox<'a> {
    source: &'a FtpSource,
    session: Session,
    taken: Taken,
}

/// What a download kept: the bytes, or only their key when there were more than the limit.
enum Body {
    Bytes(Vec<u8>),
    Hashed(KeyHasher),
}

impl Body {
    fn push(&mut self, chunk: &[u8], keep_limit: u64) {
        match self {
            Body::Bytes(bytes) if (bytes.len() + chunk.len()) as u64 <= keep_limit => {
                bytes.extend_from_slice(chunk);
            }
            Body::Bytes(bytes) => {
                let mut hasher = KeyHasher::default();
                hasher.update(bytes);
                hasher.update(chunk);
                *self = Body::Hashed(hasher);
            }
            Body::Hashed(hasher) => hasher.update(chunk),
        }
    }
}

/// Names already present per folder, listed once per pass and kept up to date as files are
/// renamed into them, so that no rename replaces a file (RNTO overwrites on most servers).
#[derive(Debug, Default)]
struct Taken(HashMap<String, HashSet<String>>);

impl FtpSource {
    /// An FTP source.
    pub fn new(name: String, config: FtpConfig) -> FtpSource {
        FtpSource {
            settling: Settling::new(config.settle),
            name,
            config,
        }
    }

    /// Connects, logs in and checks that the three folders are there.
    pub async fn open(&self) -> Result<FtpInbox<'_>, Error> {
        let mut session = self.connect().await?;
        for (role, folder) in self.folders() {
            // vsftpd answers LIST of a missing folder with an empty listing: ask for it.
            match session.has_folder(folder).await {
                Ok(true) => {}
                Ok(false) => {
                    session.quit().await;
                    return Err(Error::MissingFolder {
                        role,
                        path: folder.clone(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(FtpInbox {
            source: self,
            session,
            taken: Taken::default(),
        })
    }

    /// Downloads a settled file. `None` when it vanished or changed since it was listed: it is
    /// still being written, or someone took it.
    async fn fetch(
        &self,
        session: &mut Session,
        entry: &Entry,
        max_bytes: u64,
    ) -> Result<Option<Item>, Error> {
        let path = join(&self.config.remote.inbox, &entry.name);
        let keep_limit = if entry.size <= max_bytes {
            max_bytes
        } else {
            0
        };
        let Some((size, body)) = session.download(&path, keep_limit).await? else {
            return Ok(None);
        };
        if size != entry.size {
            tracing::debug!(source = %self.name, file = %entry.name, listed = entry.size, size, "changed since it was listed");
            return Ok(None);
        }
        let origin = Origin {
            source: self.name.clone(),
            location: path,
            file_name: Some(entry.name.clone()),
        };
        let kind = ItemKind::of_file_name(&entry.name);
        Ok(Some(match body {
            Body::Bytes(bytes) => Item::new(bytes, kind, origin),
            Body::Hashed(hasher) => Item::oversized(hasher.finish(), size, kind, origin),
        }))
    }

    /// Renames a handled file into the archive or error folder under a free name, and uploads
    /// the reason beside a failed one. Returns where it lies now.
    async fn dispose(
        &self,
        session: &mut Session,
        name: &str,
        disposition: &Disposition,
        taken: &mut Taken,
    ) -> Result<String, Error> {
        let remote = &self.config.remote;
        let folder = match disposition {
            Disposition::Archive => &remote.archive,
            Disposition::Error { .. } => &remote.error,
        };
        let target = session.free_name(folder, name, taken).await?;
        let to = join(folder, &target);
        session.rename(&join(&remote.inbox, name), &to).await?;
        taken.add(folder, target.clone());
        if let Disposition::Error { item_id, reason } = disposition {
            let note = format!("{target}.error.txt");
            session
                .upload(
                    &join(folder, &note),
                    error_note(&escape::text(name), *item_id, reason).as_bytes(),
                )
                .await?;
            taken.add(folder, note);
        }
        Ok(to)
    }

    /// The checks of `eingang check`: connect (with TLS), login, and the three folders, which
    /// are created first when asked.
    pub async fn check(&self, create_folders: bool) -> Vec<CheckLine> {
        let remote = &self.config.remote;
        let mut lines = Vec::new();
        let what = format!("connect {}:{} ({})", remote.host, remote.port, remote.tls);
        let ftp = match self.open_control().await {
            Ok(ftp) => ftp,
            Err(e) => {
                lines.push((what, Err(e.to_string())));
                return lines;
            }
        };
        lines.push((what, Ok(())));
        let mut session = match self.start(ftp).await {
            Ok(session) => session,
            Err(e) => {
                lines.push((format!("login {}", remote.user), Err(e.to_string())));
                return lines;
            }
        };
        lines.push((format!("login {}", remote.user), Ok(())));
        for (role, folder) in self.folders() {
            let what = format!("{role} folder {folder}");
            let result = match session.has_folder(folder).await {
                Ok(true) => Ok(()),
                Ok(false) if create_folders => session
                    .create_folder(folder)
                    .await
                    .map_err(|e| format!("could not create it: {e}")),
                Ok(false) => Err("missing (eingang check --create-folders creates it)".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            lines.push((what, result));
        }
        session.quit().await;
        lines
    }

    /// Renames a handled file from the error folder (removing its `.error.txt`, for `eingang
    /// reprocess`) or the archive (for `eingang recover`) back into the inbox, under a free
    /// name. Returns its path in the inbox.
    pub async fn put_back(&self, from: &str, shelf: Shelf) -> Result<String, super::Error> {
        let name = from.rsplit('/').next().unwrap_or(from);
        let inbox = &self.config.remote.inbox;
        let mut session = self.connect().await?;
        let result = async {
            let target = session
                .free_name(inbox, name, &mut Taken::default())
                .await?;
            let to = join(inbox, &target);
            session.rename(from, &to).await?;
            if shelf == Shelf::Error {
                session
                    .remove_if_present(&format!("{from}.error.txt"))
                    .await?;
            }
            Ok(to)
        }
        .await;
        session.quit().await;
        result
    }

    fn folders(&self) -> [(&'static str, &String); 3] {
        let remote = &self.config.remote;
        [
            ("inbox", &remote.inbox),
            ("archive", &remote.archive),
            ("error", &remote.error),
        ]
    }

    /// Connects and logs in.
    async fn connect(&self) -> Result<Session, Error> {
        let ftp = self.open_control().await?;
        self.start(ftp).await
    }

    /// Opens the control connection, TLS included, to the first address of the host that
    /// answers.
    async fn open_control(&self) -> Result<AsyncRustlsFtpStream, Error> {
        let remote = &self.config.remote;
        let server = format!("{}:{}", remote.host, remote.port);
        let connect_error = |why: String| Error::Connect {
            server: server.clone(),
            why,
        };
        let addrs = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((remote.host.as_str(), remote.port)),
        )
        .await
        .map_err(|_| connect_error("the host name did not resolve in time".to_owned()))?
        .map_err(|e| connect_error(e.to_string()))?;
        let mut last = connect_error("the host name resolves to no address".to_owned());
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.open_at(addr)).await {
                Ok(Ok(ftp)) => return Ok(ftp),
                Ok(Err(e)) => {
                    last = connect_error(super::tls::plain_words(&describe(&e), &remote.host));
                }
                Err(_) => {
                    last =
                        connect_error(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()));
                }
            }
        }
        Err(last)
    }

    async fn open_at(&self, addr: SocketAddr) -> Result<AsyncRustlsFtpStream, FtpError> {
        let remote = &self.config.remote;
        let connector = || -> Result<AsyncRustlsConnector, FtpError> {
            // A new config per connection re-reads `ca_file`; within the connection the data
            // channels share its session cache, so they resume the control channel's TLS
            // session as vsftpd requires (`require_ssl_reuse`).
            let config = super::tls::client_config(remote.ca_file.as_deref())
                .map_err(FtpError::SecureError)?;
            Ok(AsyncRustlsConnector::from(TlsConnector::from(config)))
        };
        let mut ftp = match remote.tls {
            // Implicit FTPS (port 990) predates RFC 4217 but is still offered; suppaftp keeps
            // it behind its `deprecated` feature.
            TlsMode::Implicit => {
                let mut ftp =
                    AsyncRustlsFtpStream::connect_secure_implicit(addr, connector()?, &remote.host)
                        .await?;
                // RFC 4217 §9: data channels stay clear until `PROT P`, which suppaftp sends
                // only after `AUTH TLS`; without it the TLS data channel waits forever.
                ftp.custom_command("PBSZ 0", &[Status::CommandOk]).await?;
                ftp.custom_command("PROT P", &[Status::CommandOk]).await?;
                ftp
            }
            TlsMode::Explicit => {
                AsyncRustlsFtpStream::connect_timeout(addr, CONNECT_TIMEOUT)
                    .await?
                    .into_secure(connector()?, &remote.host)
                    .await?
            }
            TlsMode::None | TlsMode::StartTls => {
                AsyncRustlsFtpStream::connect_timeout(addr, CONNECT_TIMEOUT).await?
            }
        };
        // PASV names an address; EPSV only a port. Either way the data channel goes to the
        // server we verified, never to an address a reply names.
        ftp.set_mode(if addr.is_ipv6() {
            Mode::ExtendedPassive
        } else {
            Mode::Passive
        });
        ftp.set_passive_nat_workaround(true);
        Ok(ftp)
    }

    /// Logs in, switches to binary transfers, and learns the login folder and whether the
    /// server lists with MLSD.
    async fn start(&self, mut ftp: AsyncRustlsFtpStream) -> Result<Session, Error> {
        let remote = &self.config.remote;
        let login = format!("login as {}", remote.user);
        deadline(
            &login,
            ftp.login(remote.user.as_str(), remote.password.expose()),
        )
        .await?
        .map_err(|e| Error::Login {
            user: remote.user.clone(),
            why: match describe(&e) {
                why if why.starts_with("530") => format!("{why} (check user and password)"),
                why => why,
            },
        })?;
        within("TYPE I", ftp.transfer_type(FileType::Binary)).await?;
        let home = within("PWD", ftp.pwd()).await?;
        // RFC 3659 §7.8: a server with MLSD lists `MLST` in FEAT. A server without FEAT
        // answers 500, which only means "no MLSD".
        let has_mlsd = match deadline("FEAT", ftp.feat()).await? {
            Ok(features) => features.keys().any(|k| k.eq_ignore_ascii_case("MLST")),
            Err(FtpError::UnexpectedResponse(_)) => false,
            Err(e) => return Err(command_error("FEAT", &e)),
        };
        Ok(Session {
            ftp,
            home,
            has_mlsd,
        })
    }
}

impl FtpInbox<'_> {
    /// Ends the session politely.
    pub async fn close(self) {
        self.session.quit().await;
    }
}

impl Inbox for FtpInbox<'_> {
    type Entry = Entry;

    fn batch_limits(&self) -> BatchLimits {
        BATCH
    }

    async fn list(&mut self, tried: &HashSet<String>) -> Result<Listing<Entry>, super::Error> {
        let listing = self.session.list(&self.source.config.remote.inbox).await?;
        let (listed, others): (Vec<Entry>, Vec<Entry>) = listing
            .into_iter()
            .filter(|e| !is_temporary(e.name.as_bytes()) && e.name != "." && e.name != "..")
            .partition(|e| e.is_file);
        let strays = others
            .into_iter()
            .map(|e| Stray {
                name: escape::text(&e.name).into_owned(),
                why: "not a file (a folder or a link); eingang takes only files directly in the inbox: move it away".to_owned(),
            })
            .collect();
        let mut files: Vec<Entry> = listed
            .into_iter()
            .filter(|e| !tried.contains(&e.name))
            .collect();
        // Oldest first, as they arrived (servers list in directory order).
        files.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.name.cmp(&b.name)));
        let settling = &self.source.settling;
        let (ready, waiting) = settling.split(
            files,
            |e: &Entry| (e.name.clone(), e.size, e.modified),
            |_| false,
        );
        Ok(Listing {
            ready,
            waiting,
            settle_in: settling.time_to_settle(),
            strays: Some(strays),
        })
    }

    async fn fetch(
        &mut self,
        batch: Vec<Entry>,
        max_item_bytes: u64,
    ) -> Result<Vec<Fetched<Entry>>, super::Error> {
        let mut fetched = Vec::with_capacity(batch.len());
        for entry in batch {
            let item = self
                .source
                .fetch(&mut self.session, &entry, max_item_bytes)
                .await?;
            fetched.push(Fetched { entry, item });
        }
        Ok(fetched)
    }

    async fn dispose(&mut self, moves: Vec<Move<Entry>>) -> Disposed {
        let mut disposed = Disposed::default();
        for m in moves {
            match self
                .source
                .dispose(
                    &mut self.session,
                    &m.entry.name,
                    &m.disposition,
                    &mut self.taken,
                )
                .await
            {
                Ok(place) => disposed.placed.push((m.item_id, Place::at(place))),
                // The server refused this file's move: it stays, the others go on.
                Err(e @ Error::Refused { .. }) => disposed.failed.push((m.item_id, e.to_string())),
                Err(e) => {
                    disposed.broken = Some(e.into());
                    break;
                }
            }
        }
        disposed
    }

    async fn locate(&mut self, wanted: Vec<Wanted>) -> Result<Vec<Seen<Entry>>, super::Error> {
        let remote = &self.source.config.remote;
        let listed: HashSet<String> = self
            .session
            .list(&remote.inbox)
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        let mut seen = Vec::with_capacity(wanted.len());
        for w in wanted {
            let name = w.item.file_name.as_deref().unwrap_or_default();
            if listed.contains(name) {
                seen.push(Seen::Listed);
                continue;
            }
            let folder = match &w.look_in {
                Some(Disposition::Archive) => &remote.archive,
                Some(Disposition::Error { .. }) => &remote.error,
                None => {
                    seen.push(Seen::Gone);
                    continue;
                }
            };
            seen.push(
                match self
                    .session
                    .find_by_key(folder, name, &w.item.sha256)
                    .await?
                {
                    Some(path) => {
                        // Renamed into the error folder before the break, maybe without its
                        // note: uploaded now (under a name no file has, so never over one).
                        if let Some(Disposition::Error { item_id, reason }) = &w.look_in {
                            let note = format!("{path}.error.txt");
                            let listed: Vec<String> = self
                                .session
                                .list(folder)
                                .await?
                                .into_iter()
                                .map(|e| join(folder, &e.name))
                                .collect();
                            if !listed.contains(&note) {
                                let shown = path.rsplit('/').next().unwrap_or(&path);
                                let text = error_note(&escape::text(shown), *item_id, reason);
                                self.session.upload(&note, text.as_bytes()).await?;
                            }
                        }
                        Seen::Found(Place::at(path))
                    }
                    None => Seen::NotFound {
                        looked_in: folder.clone(),
                    },
                },
            );
        }
        Ok(seen)
    }

    async fn archived(&mut self) -> Result<Vec<Place>, super::Error> {
        let archive = &self.source.config.remote.archive;
        Ok(self
            .session
            .list(archive)
            .await?
            .into_iter()
            .filter(|e| e.is_file && !e.name.ends_with(".error.txt"))
            .map(|e| Place::at(join(archive, &e.name)))
            .collect())
    }
}

/// A logged-in control connection.
struct Session {
    ftp: AsyncRustlsFtpStream,
    /// The folder the login started in: relative paths are relative to it.
    home: String,
    has_mlsd: bool,
}

impl Session {
    /// Lists a folder: MLSD where the server has it (exact sizes and times), else LIST.
    async fn list(&mut self, folder: &str) -> Result<Vec<Entry>, Error> {
        let (lines, parse): (_, fn(&str) -> Option<Listed>) = if self.has_mlsd {
            let lines = within(&format!("MLSD {folder}"), self.ftp.mlsd(Some(folder))).await?;
            (lines, |l| ListParser::parse_mlsd(l).ok())
        } else {
            let lines = within(&format!("LIST {folder}"), self.ftp.list(Some(folder))).await?;
            // Unix `ls -l` lines, or DOS lines from IIS; "total 8" and the like are skipped.
            (lines, |l| {
                ListParser::parse_posix(l)
                    .or_else(|_| ListParser::parse_dos(l))
                    .ok()
            })
        };
        Ok(lines.iter().filter_map(|l| parse(l)).map(entry).collect())
    }

    /// Whether a folder exists: `CWD` into it and back.
    async fn has_folder(&mut self, folder: &str) -> Result<bool, Error> {
        if unless_missing(&format!("CWD {folder}"), self.ftp.cwd(folder))
            .await?
            .is_none()
        {
            return Ok(false);
        }
        let home = self.home.clone();
        within(&format!("CWD {home}"), self.ftp.cwd(&home)).await?;
        Ok(true)
    }

    /// Creates a folder and its missing parents.
    async fn create_folder(&mut self, folder: &str) -> Result<(), Error> {
        let mut path = String::new();
        for part in folder.split('/') {
            if !path.is_empty() || folder.starts_with('/') {
                path.push('/');
            }
            path.push_str(part);
            if part.is_empty() || self.has_folder(&path).await? {
                continue;
            }
            within(&format!("MKD {path}"), self.ftp.mkdir(&path)).await?;
        }
        Ok(())
    }

    /// Downloads a file: its bytes while they stay within `keep_limit`, else only their key.
    /// `None` when the file is not there (any more).
    async fn download(
        &mut self,
        path: &str,
        keep_limit: u64,
    ) -> Result<Option<(u64, Body)>, Error> {
        let what = format!("RETR {path}");
        let Some(mut stream) = unless_missing(&what, self.ftp.retr_as_stream(path)).await? else {
            return Ok(None);
        };
        let mut body = Body::Bytes(Vec::new());
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match tokio::time::timeout(DATA_TIMEOUT, stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    return Err(Error::Command {
                        what,
                        why: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        what,
                        after: DATA_TIMEOUT,
                    });
                }
            };
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            body.push(chunk, keep_limit);
            size += n as u64;
        }
        // The 226 after the data is the server's word that the file was sent whole.
        within(&what, stream.finish()).await?;
        Ok(Some((size, body)))
    }

    /// Uploads a small file (the `.error.txt` notes).
    async fn upload(&mut self, path: &str, bytes: &[u8]) -> Result<(), Error> {
        let mut reader = bytes;
        within(
            &format!("STOR {path}"),
            self.ftp.put_file(path, &mut reader),
        )
        .await?;
        Ok(())
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        within(&format!("RNFR {from} RNTO {to}"), self.ftp.rename(from, to)).await
    }

    async fn remove_if_present(&mut self, path: &str) -> Result<(), Error> {
        unless_missing(&format!("DELE {path}"), self.ftp.rm(path)).await?;
        Ok(())
    }

    /// The first of `name`, `stem-2.ext`, … that is free in `folder`, where a name is also
    /// taken while its `.error.txt` is there (each note stays with its file).
    async fn free_name(
        &mut self,
        folder: &str,
        name: &str,
        taken: &mut Taken,
    ) -> Result<String, Error> {
        if !taken.0.contains_key(folder) {
            let names = self
                .list(folder)
                .await?
                .into_iter()
                .map(|e| e.name)
                .collect();
            taken.0.insert(folder.to_owned(), names);
        }
        let names = taken.0.get(folder);
        let is_taken = |n: &str| names.is_some_and(|names| names.contains(n));
        (1..=MAX_NAME_TRIES)
            .map(|n| numbered_name(name, n))
            .find(|c| !is_taken(c) && !is_taken(&format!("{c}.error.txt")))
            .ok_or_else(|| Error::Command {
                what: format!("move {name} into {folder}"),
                why: format!("no free name after {MAX_NAME_TRIES} tries"),
            })
    }

    /// The file in `folder` named `name` or `stem-N.ext` whose bytes have this key.
    async fn find_by_key(
        &mut self,
        folder: &str,
        name: &str,
        sha256: &str,
    ) -> Result<Option<String>, Error> {
        let candidates: Vec<String> = self
            .list(folder)
            .await?
            .into_iter()
            .filter(|e| e.is_file && is_numbered_variant(&e.name, name))
            .map(|e| join(folder, &e.name))
            .collect();
        for path in candidates {
            if let Some((_, body)) = self.download(&path, 0).await? {
                let key = match body {
                    Body::Bytes(bytes) => ItemKey::of(&bytes),
                    Body::Hashed(hasher) => hasher.finish(),
                };
                if key.as_str() == sha256 {
                    return Ok(Some(path));
                }
            }
        }
        Ok(None)
    }

    async fn quit(mut self) {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, self.ftp.quit()).await;
    }
}

impl Taken {
    fn add(&mut self, folder: &str, name: String) {
        self.0.entry(folder.to_owned()).or_default().insert(name);
    }
}

/// Runs one FTP call with the command deadline; the server's own answer is left to the
/// caller. A call cut off by the deadline leaves the connection in an unknown state, so the
/// pass ends with it.
async fn deadline<T>(
    what: &str,
    call: impl Future<Output = Result<T, FtpError>>,
) -> Result<Result<T, FtpError>, Error> {
    tokio::time::timeout(COMMAND_TIMEOUT, call)
        .await
        .map_err(|_| Error::Timeout {
            what: what.to_owned(),
            after: COMMAND_TIMEOUT,
        })
}

/// Runs one FTP call with the command deadline, naming the command in any error.
async fn within<T>(
    what: &str,
    call: impl Future<Output = Result<T, FtpError>>,
) -> Result<T, Error> {
    deadline(what, call)
        .await?
        .map_err(|e| command_error(what, &e))
}

/// `within`, with the server's 550 ("no such file or folder") as `None`.
async fn unless_missing<T>(
    what: &str,
    call: impl Future<Output = Result<T, FtpError>>,
) -> Result<Option<T>, Error> {
    match deadline(what, call).await? {
        Ok(value) => Ok(Some(value)),
        Err(FtpError::UnexpectedResponse(r)) if r.status == Status::FileUnavailable => Ok(None),
        Err(e) => Err(command_error(what, &e)),
    }
}

fn command_error(what: &str, e: &FtpError) -> Error {
    let (what, why) = (what.to_owned(), describe(e));
    match e {
        FtpError::UnexpectedResponse(_) => Error::Refused { what, why },
        _ => Error::Command { what, why },
    }
}

/// The server's reply as it sent it (`550 Failed to open file.`), or what broke.
fn describe(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(reply) => {
            let text = String::from_utf8_lossy(&reply.body);
            let text = text.trim();
            let code = reply.status.code().to_string();
            if text.starts_with(&code) {
                text.to_owned()
            } else {
                format!("{code} {text}")
            }
        }
        FtpError::SecureError(why) => format!("TLS: {why}"),
        FtpError::ConnectionError(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn entry(listed: Listed) -> Entry {
    Entry {
        name: listed.name().to_owned(),
        size: listed.size() as u64,
        modified: listed.modified(),
        is_file: listed.is_file(),
    }
}

/// The `n`-th name tried for `name` in a folder: `name`, then `stem-2.ext`, `stem-3.ext`, …
/// (FTP names come as text; the server sets no length limit eingang could know).
fn numbered_name(name: &str, n: u32) -> String {
    String::from_utf8_lossy(&folder::numbered(name.as_bytes(), n, usize::MAX)).into_owned()
}

/// A path in a folder, `/`-separated as FTP paths are (RFC 959 leaves the syntax to the
/// server; every server in use takes `/`).
fn join(folder: &str, name: &str) -> String {
    match folder.trim_end_matches('/') {
        "" if folder.starts_with('/') => format!("/{name}"),
        "" => name.to_owned(),
        folder => format!("{folder}/{name}"),
    }
}

/// Whether `candidate` is `name` or one of the numbered names a move may have given it.
fn is_numbered_variant(candidate: &str, name: &str) -> bool {
    candidate == name
        || (2..=MAX_NAME_TRIES)
            .map(|n| numbered_name(name, n))
            .take_while(|c| c.len() <= candidate.len())
            .any(|c| c == candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse_from_vsftpd_list_and_from_mlsd() {
        let list = "-rw-r--r--    1 1001     1001         1234 Nov 21 17:48 lieferschein 7.csv";
        let e = entry(ListParser::parse_posix(list).unwrap());
        assert_eq!(
            (e.name.as_str(), e.size, e.is_file),
            ("lieferschein 7.csv", 1234, true)
        );
        let dir = "drwxr-xr-x    2 1001     1001         4096 Nov 21 17:47 archiv";
        assert!(!entry(ListParser::parse_posix(dir).unwrap()).is_file);
        let mlsd = "type=file;size=77;modify=20261121174856;UNIX.mode=0644; ls-1.xml";
        let e = entry(ListParser::parse_mlsd(mlsd).unwrap());
        assert_eq!((e.name.as_str(), e.size, e.is_file), ("ls-1.xml", 77, true));
    }

    #[test]
    fn paths_join_with_slashes() {
        assert_eq!(join("/out", "a.xml"), "/out/a.xml");
        assert_eq!(join("/out/", "a.xml"), "/out/a.xml");
        assert_eq!(join("/", "a.xml"), "/a.xml");
        assert_eq!(join("out", "a.xml"), "out/a.xml");
    }

    #[test]
    fn numbered_variants_are_recognized() {
        assert!(is_numbered_variant("ls.xml", "ls.xml"));
        assert!(is_numbered_variant("ls-3.xml", "ls.xml"));
        assert!(!is_numbered_variant("ls-x.xml", "ls.xml"));
        assert!(!is_numbered_variant("ls.xml.error.txt", "ls.xml"));
    }
}
