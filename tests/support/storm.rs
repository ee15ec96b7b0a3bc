//! What the storm tests of `tests/chaos.rs` share (RELIABILITY.md, "Common harness and
//! oracle"): a small seeded PRNG, the seed taken from `EINGANG_CHAOS_SEED` or made up and
//! printed, a plan of numbered items (valid, invalid, duplicates of an earlier delivery note),
//! the SIGKILL loop around `eingang run`, what the store says after the storm, and the oracle
//! O1–O7 that turns all of it into a list of violations.
#![allow(dead_code)] // `Debug` output reads some fields; the compiler does not count that

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::Workspace;

/// splitmix64: small, fast, and good enough to pick kill times and byte counts.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in [lo, hi].
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [lo, hi].
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }

    /// Log-uniform in [lo, hi]: small and large values equally likely per order of magnitude.
    pub fn log_between(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo.max(1) as f64).ln(), (hi.max(1) as f64).ln());
        ((a + (b - a) * self.unit()).exp().round() as u64).clamp(lo, hi)
    }

    /// Exponentially distributed with this mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// An independent stream for one purpose (the feeder, the killer, one connection).
    pub fn fork(&self, label: u64) -> Rng {
        let mut r = Rng(self.0 ^ label.wrapping_mul(0xd6e8_feb8_6659_fd93));
        r.next_u64();
        r
    }
}

/// The seed of one storm: `EINGANG_CHAOS_SEED` (decimal or 0x-hex) when set, else a new one.
/// Printed either way; the test harness shows it when the test fails.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("EINGANG_CHAOS_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("EINGANG_CHAOS_SEED={text:?} is not a number"))
        }
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970");
            let mut r = Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32);
            r.next_u64() % 1_000_000_000
        }
    };
    eprintln!(
        "{test}: seed {seed}; repeat with EINGANG_CHAOS_SEED={seed} cargo test --features fault-points --test chaos {test}"
    );
    seed
}

/// What an item is meant to become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Imported, archived, no notice.
    Valid,
    /// Rejected on its own merits (unknown sender, broken file): error folder, one notice.
    Invalid,
    /// The delivery note of an earlier item in new bytes: error folder, one notice.
    Duplicate,
}

/// The shape of an item, for the generator of each source kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A valid openTRANS delivery note.
    Note,
    /// A valid Acme CSV delivery note.
    AcmeCsv,
    /// A table file nobody can route (unknown sender, unknown file name).
    Unroutable,
    /// An XML file that does not parse.
    Broken,
    /// The openTRANS note of an earlier item, in new bytes.
    Resent,
}

/// One item of a storm, numbered `seq` (1..=N).
#[derive(Debug, Clone)]
pub struct Planned {
    pub seq: u32,
    pub expect: Expect,
    pub shape: Shape,
    /// The delivery note number, for valid items and duplicates.
    pub number: Option<String>,
    /// The bytes as they are put into the source.
    pub bytes: Vec<u8>,
}

/// The delivery note number of item `seq`.
pub fn note_number(seq: u32) -> String {
    format!("LS-C{seq:06}")
}

/// Plans `n` items: about 10 % invalid, about 5 % duplicates of an earlier valid openTRANS
/// note, the rest valid (a fifth of them Acme CSV). `bytes` makes the bytes of each.
pub fn plan(
    n: u32,
    rng: &mut Rng,
    bytes: impl Fn(u32, Shape, Option<&str>) -> Vec<u8>,
) -> Vec<Planned> {
    let mut out: Vec<Planned> = Vec::with_capacity(n as usize);
    let mut originals: Vec<String> = Vec::new();
    for seq in 1..=n {
        let roll = rng.unit();
        let (expect, shape, number) = if roll < 0.10 {
            let shape = if rng.chance(0.5) {
                Shape::Unroutable
            } else {
                Shape::Broken
            };
            (Expect::Invalid, shape, None)
        } else if roll < 0.15 && !originals.is_empty() {
            let pick = rng.below(originals.len() as u64) as usize;
            (
                Expect::Duplicate,
                Shape::Resent,
                Some(originals.swap_remove(pick)),
            )
        } else if rng.chance(0.2) {
            (Expect::Valid, Shape::AcmeCsv, Some(note_number(seq)))
        } else {
            originals.push(note_number(seq));
            (Expect::Valid, Shape::Note, Some(note_number(seq)))
        };
        let bytes = bytes(seq, shape, number.as_deref());
        out.push(Planned {
            seq,
            expect,
            shape,
            number,
            bytes,
        });
    }
    out
}

/// The first run of exactly six digits in a name: the seq of a file of a storm.
pub fn seq_in_name(name: &str) -> Option<u32> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return name[start..i].parse().ok();
            }
        } else {
            i += 1;
        }
    }
    None
}

/// `X-Test-Seq` of a message, from its header section.
pub fn seq_in_message(raw: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| l.strip_prefix("X-Test-Seq:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the SIGKILL loop saw.
#[derive(Debug, Default)]
pub struct KillReport {
    /// Kills sent.
    pub kills: usize,
    /// Kills after which the ledger held items begun (attempt counted) and not decided.
    pub caught_parsing: usize,
    /// Kills after which the ledger held decided items without a recorded place: the crash
    /// window between commit and move (or move and record).
    pub caught_unplaced: usize,
    /// How long the storm took.
    pub took: Duration,
}

impl std::fmt::Display for KillReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} kills in {:.1} s; {} left items begun and undecided, {} left decided items unplaced",
            self.kills,
            self.took.as_secs_f64(),
            self.caught_parsing,
            self.caught_unplaced
        )
    }
}

/// Appends a line to the workspace's `run.log`, where every `eingang run` of a storm writes.
pub fn log_line(ws: &Workspace, line: &str) {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ws.path("run.log"))
        .expect("open run.log");
    writeln!(log, "{line}").expect("write run.log");
}

/// `eingang run` with its log appended to `run.log` (EINGANG_LOG=debug).
pub fn spawn_run(ws: &Workspace) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ws.path("run.log"))
        .expect("open run.log");
    ws.command(&["run"], &[("EINGANG_LOG", "debug")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn eingang run")
}

/// A number from the store as a second process reads it, or `None` (no store yet, busy).
pub fn try_query(db: &Path, sql: &str) -> Option<i64> {
    if !db.exists() {
        return None;
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    conn.query_row(sql, [], |r| r.get(0)).ok()
}

/// Starts `eingang run`, kills it with SIGKILL after a random 0.2–3 s (log-uniform), starts it again within
/// a second, `kills` times. After each kill (nothing runs then) it looks at the ledger to
/// count the crash windows the kill hit, and calls `while_down` (items arrive then).
pub fn sigkill_storm(
    ws: &Workspace,
    rng: &mut Rng,
    kills: usize,
    mut while_down: impl FnMut(),
) -> KillReport {
    let started = Instant::now();
    let db = ws.path("eingang.db");
    let mut report = KillReport::default();
    for k in 1..=kills {
        // Log-uniform: as many kills in 0.2–0.8 s (the restart's pass over the backlog) as
        // in 0.8–3 s.
        let life = Duration::from_millis(rng.log_between(200, 3000));
        log_line(ws, &format!("=== storm run {k}: SIGKILL after {life:?}"));
        let mut child = spawn_run(ws);
        std::thread::sleep(life);
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "eingang run ended by itself during the storm ({status}); see {}",
                ws.path("run.log").display()
            );
        }
        child.kill().expect("SIGKILL eingang run");
        child.wait().expect("reap eingang run");
        report.kills += 1;
        if try_query(&db, "SELECT COUNT(*) FROM items WHERE outcome IS NULL").is_some_and(|n| n > 0)
        {
            report.caught_parsing += 1;
        }
        if try_query(
            &db,
            "SELECT COUNT(*) FROM items WHERE outcome IS NOT NULL AND disposed_at IS NULL",
        )
        .is_some_and(|n| n > 0)
        {
            report.caught_unplaced += 1;
        }
        let down = Instant::now();
        while_down();
        let restart = rng.duration(Duration::ZERO, Duration::from_millis(1000));
        std::thread::sleep(restart.saturating_sub(down.elapsed()));
    }
    report.took = started.elapsed();
    report
}

/// The last `eingang run` after a storm: runs until `quiet` holds twice, a second apart, then
/// stops with SIGTERM. Returns how long that took, or the liveness failure (not quiet within
/// `deadline`, or no clean stop) for the oracle's list.
pub fn run_until_quiet(
    ws: &Workspace,
    deadline: Duration,
    mut quiet: impl FnMut() -> bool,
) -> Result<Duration, String> {
    log_line(ws, "=== last run: until quiet");
    let started = Instant::now();
    let mut child = spawn_run(ws);
    let mut settled = false;
    while started.elapsed() < deadline {
        if quiet() {
            std::thread::sleep(Duration::from_secs(1));
            if quiet() {
                settled = true;
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "O4: the last eingang run ended by itself ({status})"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    let status = stop(&mut child, STOP_DEADLINE)?;
    if !settled {
        return Err(format!(
            "O4: not quiet {deadline:?} after the storm (liveness)"
        ));
    }
    if !status.success() {
        return Err(format!("O4: the last eingang run exited with {status}"));
    }
    Ok(took)
}

/// How long `eingang run` may take to finish the batch in hand after SIGTERM: behind the chaos
/// proxy every chunk of a pass may be held back up to 2 s.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Stops `eingang run` with SIGTERM; an error when it does not stop within `deadline` (it is
/// killed then).
fn stop(
    child: &mut std::process::Child,
    deadline: Duration,
) -> Result<std::process::ExitStatus, String> {
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let asked = Instant::now();
    while asked.elapsed() < deadline {
        if let Some(status) = child.try_wait().expect("wait for eingang run") {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "O4: eingang run did not stop within {deadline:?} of SIGTERM"
    ))
}

/// How long the last run took, or "never quiet".
pub fn took(last: &Result<Duration, String>) -> String {
    match last {
        Ok(d) => format!("quiet after {:.1} s", d.as_secs_f64()),
        Err(_) => "never quiet".to_owned(),
    }
}

/// Which folder an item lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Folder {
    Archive,
    Error,
}

/// One ledger row.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub seq: Option<u32>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub disposed: bool,
    pub sha256: String,
}

/// One notice the SMTP sink received, matched to its outbox row and item.
#[derive(Debug, Clone)]
pub struct NoticeSeen {
    /// `rejected`, `summary`, `down`, `up` (from `X-Eingang-Notice`).
    pub kind: String,
    pub outbox_id: Option<i64>,
    pub message_id: String,
    /// The seq of the item it is about, through the outbox row.
    pub seq: Option<u32>,
    /// Attempts the outbox row records (each may have reached the server once).
    pub attempts: i64,
}

/// Everything the oracle looks at after a storm.
#[derive(Debug, Default)]
pub struct Seen {
    /// What is still in the inbox (should be nothing).
    pub inbox_left: Vec<String>,
    /// Every item in the archive and error folders: its seq (None: not one of ours) and name.
    pub placed: Vec<(Option<u32>, Folder, String)>,
    pub rows: Vec<Row>,
    /// (business_key, number) of every document.
    pub documents: Vec<(String, String)>,
    pub notices: Vec<NoticeSeen>,
    pub integrity: String,
    /// Violations only one source kind can see (missing `.error.txt` notes, say).
    pub extra: Vec<String>,
}

/// Fills in the store's side of `seen`: ledger rows (seq by `seq_of(message_id, file_name)`),
/// documents, the integrity check, and the notices the sink `received`, each matched through
/// its outbox row to the seq of its item.
pub fn read_store(
    seen: &mut Seen,
    db: &Path,
    seq_of: impl Fn(Option<&str>, Option<&str>) -> Option<u32>,
    received: &[crate::support::smtp::Received],
) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    let mut stmt = conn
        .prepare("SELECT id, message_id, file_name, outcome, reason, disposed_at IS NOT NULL, sha256 FROM items ORDER BY id")
        .expect("items");
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            let message_id: Option<String> = r.get(1)?;
            let file_name: Option<String> = r.get(2)?;
            Ok(Row {
                id: r.get(0)?,
                seq: seq_of(message_id.as_deref(), file_name.as_deref()),
                outcome: r.get(3)?,
                reason: r.get(4)?,
                disposed: r.get(5)?,
                sha256: r.get(6)?,
            })
        })
        .expect("query items")
        .collect::<Result<_, _>>()
        .expect("items rows");
    let seq_by_item: HashMap<i64, Option<u32>> = rows.iter().map(|r| (r.id, r.seq)).collect();
    let mut stmt = conn
        .prepare("SELECT business_key, number FROM documents ORDER BY id")
        .expect("documents");
    let documents = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query documents")
        .collect::<Result<_, _>>()
        .expect("document rows");
    let mut stmt = conn
        .prepare("SELECT id, item_id, attempts FROM outbox")
        .expect("outbox");
    let outbox: HashMap<i64, (Option<u32>, i64)> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .expect("query outbox")
        .collect::<Result<Vec<_>, _>>()
        .expect("outbox rows")
        .into_iter()
        .map(|(id, item, attempts)| {
            let seq = item.and_then(|i| seq_by_item.get(&i).copied().flatten());
            (id, (seq, attempts))
        })
        .collect();
    seen.notices = notices_seen(received, &outbox);
    seen.rows = rows;
    seen.documents = documents;
    seen.integrity = integrity;
}

/// The notices the sink received, each matched to its outbox row and the seq of its item.
fn notices_seen(
    received: &[crate::support::smtp::Received],
    outbox: &HashMap<i64, (Option<u32>, i64)>,
) -> Vec<NoticeSeen> {
    received
        .iter()
        .map(|mail| {
            let header = mail.header("X-Eingang-Notice").unwrap_or_default();
            let mut words = header.split_whitespace();
            let kind = words.next().unwrap_or("(no X-Eingang-Notice)").to_owned();
            let outbox_id = words.next().and_then(|w| w.parse().ok());
            let row = outbox_id.and_then(|id| outbox.get(&id).copied());
            NoticeSeen {
                kind,
                outbox_id,
                message_id: mail.message_id(),
                seq: row.and_then(|(seq, _)| seq),
                attempts: row.map_or(0, |(_, attempts)| attempts),
            }
        })
        .collect()
}

/// How many copies of one notice may arrive: 2 when the process was killed (the SMTP window:
/// the server took it, eingang died before it recorded that), else 1. Never more copies than
/// attempts the outbox recorded before sending (README, "Exactly once, and the one window
/// SMTP leaves open").
#[derive(Debug, Clone, Copy)]
pub struct NoticeRule {
    pub max_copies: usize,
}

/// The oracle: every violation of O1, O2, O3, O5 and O7, one line each.
pub fn violations(plan: &[Planned], seen: &Seen, rule: NoticeRule) -> Vec<String> {
    let mut v = Vec::new();
    let n = plan.len() as u32;
    let by_seq: HashMap<u32, &Planned> = plan.iter().map(|p| (p.seq, p)).collect();

    // O1: nothing lost, nothing placed twice.
    for left in &seen.inbox_left {
        v.push(format!("O1: still in the inbox: {left}"));
    }
    let mut placed: BTreeMap<u32, Vec<(Folder, &str)>> = BTreeMap::new();
    for (seq, folder, name) in &seen.placed {
        match seq.filter(|s| (1..=n).contains(s)) {
            Some(seq) => placed.entry(seq).or_default().push((*folder, name)),
            None => v.push(format!("O1: not an item of this storm: {folder:?} {name}")),
        }
    }
    for seq in 1..=n {
        match placed.get(&seq).map(Vec::as_slice) {
            None | Some([]) => v.push(format!(
                "O1: seq {seq} is in neither archive nor error (lost)"
            )),
            Some([_]) => {}
            Some(many) => v.push(format!("O1: seq {seq} lies {} times: {many:?}", many.len())),
        }
    }

    // O3: valid to archive, invalid to error; of the items carrying one delivery note,
    // exactly one is archived and the others rejected as duplicates.
    let mut groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for p in plan {
        if let Some(number) = &p.number {
            groups.entry(number).or_default().push(p.seq);
        }
    }
    let folder_of = |seq: u32| match placed.get(&seq).map(Vec::as_slice) {
        Some([(folder, _)]) => Some(*folder),
        _ => None,
    };
    for p in plan.iter().filter(|p| p.expect == Expect::Invalid) {
        if folder_of(p.seq) == Some(Folder::Archive) {
            v.push(format!(
                "O3: invalid seq {} ({:?}) is in the archive",
                p.seq, p.shape
            ));
        }
    }
    for (number, seqs) in &groups {
        let archived: Vec<u32> = seqs
            .iter()
            .copied()
            .filter(|s| folder_of(*s) == Some(Folder::Archive))
            .collect();
        if seqs.iter().all(|s| folder_of(*s).is_some()) && archived.len() != 1 {
            v.push(format!(
                "O3: delivery note {number} (seqs {seqs:?}) is archived {} times: {archived:?}",
                archived.len()
            ));
        }
    }

    // The ledger: one row per item, each decided and placed (O7), with the right outcome and
    // the bytes that were put in (O7: no truncated or altered item stored).
    let mut rows_by_seq: BTreeMap<u32, Vec<&Row>> = BTreeMap::new();
    for row in &seen.rows {
        match row.seq.filter(|s| (1..=n).contains(s)) {
            Some(seq) => rows_by_seq.entry(seq).or_default().push(row),
            None => v.push(format!(
                "O7: ledger row {} is not an item of this storm: {row:?}",
                row.id
            )),
        }
        if row.outcome.is_none() {
            v.push(format!(
                "O7: ledger row {} (seq {:?}) has no outcome after quiesce",
                row.id, row.seq
            ));
        }
        if !row.disposed {
            v.push(format!(
                "O7: ledger row {} (seq {:?}) is not placed (disposed_at IS NULL) after quiesce",
                row.id, row.seq
            ));
        }
    }
    for seq in 1..=n {
        let p = by_seq[&seq];
        let rows = rows_by_seq.get(&seq).map(Vec::as_slice).unwrap_or_default();
        match rows {
            [] => v.push(format!("O7: seq {seq} has no ledger row")),
            [row] => {
                if row.sha256 != sha256_hex(&p.bytes) {
                    v.push(format!(
                        "O7: seq {seq}: stored sha256 differs from the bytes put in"
                    ));
                }
                let rejected = row.outcome.as_deref() == Some("rejected");
                let reason = row.reason.as_deref().unwrap_or_default();
                match p.expect {
                    Expect::Invalid if !rejected => {
                        v.push(format!(
                            "O3: invalid seq {seq} ({:?}) has outcome {:?}",
                            p.shape, row.outcome
                        ));
                    }
                    Expect::Valid | Expect::Duplicate
                        if rejected && !reason.contains("duplicate") =>
                    {
                        v.push(format!(
                            "O3: seq {seq} ({:?}) rejected for a reason of its own: {reason}",
                            p.shape
                        ));
                    }
                    _ => {}
                }
                if rejected && folder_of(seq) == Some(Folder::Archive) {
                    v.push(format!(
                        "O3: seq {seq} is rejected in the ledger but lies in the archive"
                    ));
                }
                if row.outcome.as_deref() == Some("imported")
                    && folder_of(seq) == Some(Folder::Error)
                {
                    v.push(format!(
                        "O3: seq {seq} is imported in the ledger but lies in the error folder"
                    ));
                }
            }
            many => v.push(format!(
                "O7: seq {seq} has {} ledger rows: {:?}",
                many.len(),
                many.iter()
                    .map(|r| (r.id, r.outcome.as_deref(), r.reason.as_deref()))
                    .collect::<Vec<_>>()
            )),
        }
    }

    // O2: no document twice; exactly one per delivery note.
    let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in &seen.documents {
        *keys.entry(key).or_default() += 1;
    }
    for (key, count) in keys.iter().filter(|(_, c)| **c > 1) {
        v.push(format!("O2: business key {key} is stored {count} times"));
    }
    let stored: BTreeSet<&str> = seen
        .documents
        .iter()
        .map(|(_, number)| number.as_str())
        .collect();
    let expected: BTreeSet<&str> = groups.keys().copied().collect();
    for missing in expected.difference(&stored) {
        v.push(format!("O2: delivery note {missing} is not stored"));
    }
    for extra in stored.difference(&expected) {
        v.push(format!("O2: document {extra} stored that no item carried"));
    }
    if seen.documents.len() != expected.len() {
        v.push(format!(
            "O2: {} documents stored, {} distinct delivery notes sent",
            seen.documents.len(),
            expected.len()
        ));
    }

    // O5: one notice per rejected item (up to `max_copies` copies of it, same Message-ID),
    // none for an imported one, nothing else.
    let mut mails: BTreeMap<u32, Vec<&NoticeSeen>> = BTreeMap::new();
    for notice in &seen.notices {
        match (notice.kind.as_str(), notice.seq) {
            ("rejected", Some(seq)) => mails.entry(seq).or_default().push(notice),
            _ => v.push(format!("O5: unexpected notice {notice:?}")),
        }
    }
    for seq in 1..=n {
        let rejected = rows_by_seq.get(&seq).is_some_and(|rows| {
            rows.iter()
                .any(|r| r.outcome.as_deref() == Some("rejected"))
        });
        let got = mails.get(&seq).map(Vec::as_slice).unwrap_or_default();
        let ids: BTreeSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
        let attempts = got.iter().map(|m| m.attempts).max().unwrap_or(0);
        if rejected {
            if got.is_empty() {
                v.push(format!("O5: rejected seq {seq}: no notice"));
            } else if ids.len() > 1 {
                v.push(format!(
                    "O5: rejected seq {seq}: {} different notices {ids:?}",
                    ids.len()
                ));
            } else if got.len() as i64 > attempts {
                v.push(format!(
                    "O5: rejected seq {seq}: {} copies of its notice, {attempts} attempts recorded",
                    got.len()
                ));
            } else if got.len() > rule.max_copies {
                v.push(format!(
                    "O5: rejected seq {seq}: {} copies of its notice (one per recorded attempt: \
                     each time a kill after the server took it, before it was marked sent)",
                    got.len()
                ));
            }
        } else if !got.is_empty() {
            v.push(format!(
                "O5: seq {seq} was not rejected, yet {} notices came",
                got.len()
            ));
        }
    }

    // O7: the store is intact.
    if seen.integrity != "ok" {
        v.push(format!("O7: PRAGMA integrity_check = {}", seen.integrity));
    }
    v.extend(seen.extra.iter().cloned());
    v
}

/// Panics with every violation, the seed and the storm's figures, after saving the workspace
/// (store and logs) where it can be looked at.
pub fn assert_promises(test: &str, seed: u64, ws: &Workspace, found: &[String], figures: &str) {
    if found.is_empty() {
        eprintln!("{test}: seed {seed}: all promises held; {figures}");
        return;
    }
    let keep = std::env::temp_dir().join(format!("eingang-chaos-{test}-{seed}"));
    let _ = std::fs::remove_dir_all(&keep);
    let saved = copy_tree(ws.dir.path(), &keep).is_ok();
    let shown: Vec<&str> = found.iter().take(40).map(String::as_str).collect();
    panic!(
        "{test}: seed {seed}: {} violations (first {}):\n  {}\n{figures}\n{}repeat with EINGANG_CHAOS_SEED={seed}",
        found.len(),
        shown.len(),
        shown.join("\n  "),
        if saved {
            format!("workspace (store, run.log) saved in {}\n", keep.display())
        } else {
            String::new()
        }
    );
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
