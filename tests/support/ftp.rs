//! A real vsftpd (Debian's 3.0.3) for the FTP tests, one per test: its own config, test CA
//! and leaf certificate (for `127.0.0.1` and `localhost`), ports and folder tree in a
//! temporary folder. It logs in the local user `eingang-ftp`, which PAM needs as a real
//! account: the harness creates it (with a known password) on first use. A missing vsftpd
//! fails the test with the install command; it never skips.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use tokio::io::AsyncWriteExt;

/// The FTP login every test server accepts.
pub const USER: &str = "eingang-ftp";
/// Its password: distinctive, so that tests can look for it in logs and output.
pub const PASSWORD: &str = "S3cr3t-ftp-4b7e91";

const VSFTPD: &str = "/usr/sbin/vsftpd";
const INSTALL_HINT: &str =
    "vsftpd is not installed: run `apt-get install -y --no-install-recommends vsftpd` (or .ci/run)";

/// What kind of server to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// TLS from the first byte (FTPS on its own port) instead of `AUTH TLS`.
    pub implicit: bool,
    /// vsftpd's `local_max_rate`: bytes per second per session, to make transfers slow.
    pub max_bytes_per_second: Option<u32>,
}

/// A running vsftpd; killed with its sessions when dropped.
pub struct FtpServer {
    /// Config, certificates, logs, and `root/`, the FTP root (`/` for the client).
    pub dir: tempfile::TempDir,
    /// The control port on 127.0.0.1.
    pub port: u16,
    implicit: bool,
    child: Option<Child>,
}

impl FtpServer {
    /// A server with explicit FTPS and the folders `/in`, `/archiv` and `/fehler`.
    pub fn start() -> FtpServer {
        FtpServer::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> FtpServer {
        assert!(Path::new(VSFTPD).exists(), "{INSTALL_HINT}");
        let uid = ftp_user();
        let dir = tempfile::tempdir().expect("temp dir");
        // The session runs as the FTP user, which must reach its root through this folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        let root = dir.path().join("root");
        for folder in ["", "in", "archiv", "fehler"] {
            let path = root.join(folder);
            std::fs::create_dir_all(&path).expect("mkdir");
            std::os::unix::fs::chown(&path, Some(uid), None).expect("chown to the ftp user");
        }
        std::fs::create_dir_all(dir.path().join("empty")).expect("mkdir empty");
        write_certificates(dir.path());
        std::fs::write(dir.path().join("password"), PASSWORD).expect("write password file");
        let port = free_port();
        let pasv = passive_ports();
        let d = dir.path().display();
        let mut config = format!(
            "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
             anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n\
             chroot_local_user=YES\nallow_writeable_chroot=YES\nlocal_root={d}/root\n\
             secure_chroot_dir={d}/empty\nseccomp_sandbox=NO\n\
             pasv_enable=YES\npasv_address=127.0.0.1\npasv_min_port={}\npasv_max_port={}\n\
             ssl_enable=YES\nrequire_ssl_reuse=YES\nforce_local_logins_ssl=NO\nforce_local_data_ssl=NO\n\
             rsa_cert_file={d}/cert.pem\nrsa_private_key_file={d}/key.pem\n\
             vsftpd_log_file={d}/vsftpd.log\nlog_ftp_protocol=YES\nxferlog_enable=YES\n",
            pasv.0, pasv.1
        );
        if options.implicit {
            config.push_str("implicit_ssl=YES\n");
        }
        if let Some(rate) = options.max_bytes_per_second {
            config.push_str(&format!("local_max_rate={rate}\n"));
        }
        std::fs::write(dir.path().join("vsftpd.conf"), config).expect("write vsftpd.conf");
        let mut server = FtpServer {
            dir,
            port,
            implicit: options.implicit,
            child: None,
        };
        server.spawn();
        server
    }

    /// The folder the client sees as `/`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The test CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// vsftpd's log of commands and transfers.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vsftpd.log")).unwrap_or_default()
    }

    /// File names in a folder under the root, sorted.
    pub fn files(&self, folder: &str) -> Vec<String> {
        super::files_in(&self.root().join(folder))
    }

    /// Kills the server with every session it has open, as a crash or a restart of the
    /// machine would, and starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Uploads a file over explicit FTPS, as a supplier would.
    pub fn put(&self, path: &str, bytes: &[u8]) {
        self.put_slowly(path, bytes, 1, Duration::ZERO);
    }

    /// Uploads a file in `pieces` over explicit FTPS, pausing `gap` after each piece but the
    /// last, so that the file grows on the server for a while.
    pub fn put_slowly(&self, path: &str, bytes: &[u8], pieces: usize, gap: Duration) {
        runtime().block_on(async {
            let mut ftp = self.login().await;
            let mut upload = ftp.put_with_stream(path).await.expect("STOR");
            let size = bytes.len().div_ceil(pieces.max(1)).max(1);
            let mut chunks = bytes.chunks(size).peekable();
            while let Some(chunk) = chunks.next() {
                upload.write_all(chunk).await.expect("upload");
                upload.flush().await.expect("upload");
                if chunks.peek().is_some() {
                    tokio::time::sleep(gap).await;
                }
            }
            upload.finish().await.expect("upload finished");
            let _ = ftp.quit().await;
        });
    }

    /// An `[[source]]` of kind ftp for this server, with the folders `/in`, `/archiv` and
    /// `/fehler`, settle 1 s and `extra` lines appended.
    pub fn source(&self, name: &str, extra: &str) -> String {
        format!(
            "[[source]]\nname = \"{name}\"\nkind = \"ftp\"\nhost = \"127.0.0.1\"\nport = {}\n\
             tls = \"{}\"\nca_file = \"{}\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n\
             inbox = \"/in\"\narchive = \"/archiv\"\nerror = \"/fehler\"\nsettle = \"1s\"\n{extra}",
            self.port,
            if self.implicit {
                "implicit"
            } else {
                "explicit"
            },
            self.ca_file().display(),
            self.dir.path().join("password").display()
        )
    }

    async fn login(&self) -> AsyncRustlsFtpStream {
        let config =
            eingang::source::tls::client_config(Some(&self.ca_file())).expect("tls config");
        let connector = AsyncRustlsConnector::from(tokio_rustls::TlsConnector::from(config));
        let address = ("127.0.0.1", self.port);
        let mut ftp = if self.implicit {
            let mut ftp =
                AsyncRustlsFtpStream::connect_secure_implicit(address, connector, "127.0.0.1")
                    .await
                    .expect("implicit TLS");
            for command in ["PBSZ 0", "PROT P"] {
                ftp.custom_command(command, &[suppaftp::Status::CommandOk])
                    .await
                    .expect(command);
            }
            ftp
        } else {
            AsyncRustlsFtpStream::connect(address)
                .await
                .expect("connect")
                .into_secure(connector, "127.0.0.1")
                .await
                .expect("AUTH TLS")
        };
        ftp.login(USER, PASSWORD).await.expect("login");
        ftp.transfer_type(FileType::Binary).await.expect("TYPE I");
        ftp
    }

    fn spawn(&mut self) {
        let child = Command::new(VSFTPD)
            .arg(self.dir.path().join("vsftpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(INSTALL_HINT);
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "vsftpd exited with {status}; config in {}",
                    self.dir.path().display()
                );
            }
            assert!(Instant::now() < end, "vsftpd did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server and its sessions: vsftpd forks one process per connection (and one
    /// more after login), each in a session of its own, so they are found by their parents.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut pids = vec![child.id()];
            let mut i = 0;
            while let Some(&parent) = pids.get(i) {
                pids.extend(children_of(parent));
                i += 1;
            }
            for pid in pids {
                // SAFETY: kill(2) on the server we spawned and the processes it forked.
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The processes whose parent is `pid`, from `/proc/<pid>/stat` (field 4 is the parent).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            std::fs::read_to_string(format!("/proc/{candidate}/stat")).is_ok_and(|stat| {
                // The command name in field 2 may hold spaces: count from its closing paren.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// The uid of the FTP user, created with its password on first use.
fn ftp_user() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| {
        let uid = || {
            Command::new("id")
                .args(["-u", USER])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        };
        // Debian's PAM stack for vsftpd wants a login shell listed in /etc/shells, and vsftpd
        // changes into the home folder before it applies `local_root`: the home must exist
        // (`500 OOPS: cannot change directory` otherwise). An account left from an earlier run
        // is brought to the same state.
        let (tool, create) = match uid() {
            None => ("useradd", vec!["--no-create-home"]),
            Some(_) => ("usermod", vec![]),
        };
        let status = Command::new(tool)
            .args(create)
            .args(["--home", "/", "--shell", "/bin/bash", USER])
            .status()
            .unwrap_or_else(|e| panic!("{tool} (the FTP tests run as root): {e}"));
        assert!(status.success(), "{tool} {USER} failed");
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        std::io::Write::write_all(
            chpasswd.stdin.as_mut().expect("stdin"),
            format!("{USER}:{PASSWORD}\n").as_bytes(),
        )
        .expect("chpasswd input");
        assert!(
            chpasswd.wait().expect("chpasswd").success(),
            "chpasswd failed"
        );
        uid().expect("the FTP user exists")
    })
}

/// A test CA (`ca.pem`) and a leaf for 127.0.0.1 and localhost signed by it (`cert.pem`,
/// `key.pem`): rustls refuses a CA certificate used as the server's own.
fn write_certificates(dir: &Path) {
    let (ca_pem, issuer) = test_ca("eingang test ca");
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("leaf params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = params.signed_by(&key, &issuer).expect("sign leaf");
    std::fs::write(dir.join("ca.pem"), ca_pem).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key.pem");
}

/// A self-signed CA: its PEM and the issuer to sign with.
pub fn test_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("ca key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign ca");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Twenty passive ports below the kernel's ephemeral range, different for every server of
/// this process (vsftpd retries another port of the range when one is taken).
fn passive_ports() -> (u16, u16) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = 20_000 + (std::process::id().wrapping_mul(97).wrapping_add(n * 20) % 12_000);
    let base = u16::try_from(base).expect("below 32000");
    (base, base + 19)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
