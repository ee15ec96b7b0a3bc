//! A seeded fault proxy for RELIABILITY.md scenario 9 ("random cuts and delays"): a TCP proxy
//! on loopback that cuts connections after a random byte count (in either direction) and holds
//! back a share of the chunks it forwards (both directions) for a random time. A connection
//! chosen for a cut gets a byte budget per direction, drawn from an exponential distribution
//! (every byte is equally likely to be the last, so cuts fall in proportion to the traffic, at
//! any point of the protocol) or fixed; it is cut once either budget is used up. It keeps a transcript of every connection, stamped with one clock shared by both
//! directions, so that the order in which the client sent and could first have read bytes is
//! known: a chunk from the client is stamped when the proxy has read it (the client sent it
//! before), a chunk to the client just before the proxy starts writing it (the client cannot
//! have read it before).
//!
//! A cut: both directions stop forwarding, the server side is closed, and the client reads
//! end-of-stream; what the client still sends afterwards is read (for two seconds) and kept
//! in the transcript, unforwarded.
//!
//! `imap_findings` reads the transcripts as IMAP: for every tagged command, when the client
//! began to send it and when the proxy began to write the line that completed it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::storm::Rng;

/// How long the client is listened to after a cut.
const AFTER_CUT: Duration = Duration::from_secs(2);

/// The faults, all drawn from `seed`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub seed: u64,
    /// Share of connections that get byte budgets (and are cut once one is used up).
    pub cut_share: f64,
    /// How many bytes each direction of such a connection may carry.
    pub budget: Budget,
    /// Share of chunks held back before they are forwarded.
    pub delay_share: f64,
    /// The longest a chunk is held back.
    pub max_delay: Duration,
    /// Once, on the first connection whose client sends this text: it is forwarded, then
    /// that connection is cut (the server acts on the command, its answer is lost).
    pub cut_after_client_sends: Option<&'static str>,
}

/// The byte budgets of a connection that is to be cut.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Drawn per connection, with these means (from the client, from the server).
    Exponential { mean_up: f64, mean_down: f64 },
    /// The same for every connection.
    Fixed { up: u64, down: u64 },
}

/// A direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Some bytes of one connection, as stamped by the shared clock.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub at: u64,
    pub way: Way,
    pub bytes: Vec<u8>,
    /// False for what the client sent after the cut.
    pub forwarded: bool,
}

/// The transcript of one connection.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub number: usize,
    pub chunks: Vec<Chunk>,
    /// When the connection was cut, and in which direction.
    pub cut: Option<(u64, Way)>,
}

struct Shared {
    plan: Plan,
    /// Whether `cut_after_client_sends` has fired.
    fired: AtomicBool,
    clock: AtomicU64,
    delays: AtomicUsize,
    conns: Mutex<Vec<Arc<Mutex<Transcript>>>>,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

/// A running chaos proxy.
pub struct ChaosProxy {
    /// The port to give the client.
    pub port: u16,
    shared: Arc<Shared>,
}

impl ChaosProxy {
    /// Forwards every connection to `target` on 127.0.0.1, with the faults of `plan`.
    pub fn start(target: u16, plan: Plan) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind chaos proxy");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            plan,
            fired: AtomicBool::new(false),
            clock: AtomicU64::new(0),
            delays: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            let root = Rng::new(plan.seed);
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let transcript = Arc::new(Mutex::new(Transcript::default()));
                let number = {
                    let mut conns = accepting.conns.lock().unwrap();
                    conns.push(transcript.clone());
                    conns.len() - 1
                };
                transcript.lock().unwrap().number = number;
                let mut rng = root.fork(number as u64 + 1);
                let budgets = rng.chance(plan.cut_share).then(|| match plan.budget {
                    Budget::Exponential { mean_up, mean_down } => (
                        (rng.exponential(mean_up).ceil() as u64).max(1),
                        (rng.exponential(mean_down).ceil() as u64).max(1),
                    ),
                    Budget::Fixed { up, down } => (up, down),
                });
                let link = Arc::new(Link {
                    client,
                    server,
                    cut_done: AtomicBool::new(false),
                    transcript,
                    shared: accepting.clone(),
                });
                for way in [Way::Up, Way::Down] {
                    let link = link.clone();
                    let rng = rng.fork(way as u64 + 7);
                    let cut_after = budgets.map(|(up, down)| match way {
                        Way::Up => up,
                        Way::Down => down,
                    });
                    std::thread::spawn(move || link.forward(way, rng, cut_after));
                }
            }
        });
        ChaosProxy { port, shared }
    }

    /// Every connection's transcript so far.
    pub fn transcripts(&self) -> Vec<Transcript> {
        self.shared
            .conns
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.lock().unwrap().clone())
            .collect()
    }

    /// Whether `cut_after_client_sends` has fired.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// How many chunks were held back.
    pub fn delays(&self) -> usize {
        self.shared.delays.load(Ordering::SeqCst)
    }
}

/// Both ends of one proxied connection.
struct Link {
    client: TcpStream,
    server: TcpStream,
    cut_done: AtomicBool,
    transcript: Arc<Mutex<Transcript>>,
    shared: Arc<Shared>,
}

impl Link {
    fn record(&self, at: u64, way: Way, bytes: &[u8], forwarded: bool) {
        if bytes.is_empty() {
            return;
        }
        self.transcript.lock().unwrap().chunks.push(Chunk {
            at,
            way,
            bytes: bytes.to_vec(),
            forwarded,
        });
    }

    /// Cuts the connection: nothing more is forwarded, the server side closes, the client
    /// reads end-of-stream and is listened to for a while.
    fn cut(&self, way: Way) {
        if self.cut_done.swap(true, Ordering::SeqCst) {
            return;
        }
        let at = self.shared.tick();
        self.transcript.lock().unwrap().cut = Some((at, way));
        let _ = self.server.shutdown(Shutdown::Both);
        let _ = self.client.shutdown(Shutdown::Write);
        let _ = self.client.set_read_timeout(Some(AFTER_CUT));
    }

    fn forward(&self, way: Way, mut rng: Rng, cut_after: Option<u64>) {
        let plan = self.shared.plan;
        let (mut from, mut to) = match way {
            Way::Up => (&self.client, &self.server),
            Way::Down => (&self.server, &self.client),
        };
        let mut buf = vec![0u8; 16 * 1024];
        let mut forwarded = 0u64;
        // The client's last bytes, to find `cut_after_client_sends` across chunk ends.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let data = &buf[..n];
            // The client sent this by now.
            let read_at = (way == Way::Up).then(|| self.shared.tick());
            if self.cut_done.load(Ordering::SeqCst) {
                match way {
                    Way::Up => {
                        self.record(read_at.unwrap_or_default(), way, data, false);
                        continue;
                    }
                    Way::Down => break,
                }
            }
            if rng.chance(plan.delay_share) {
                self.shared.delays.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(rng.duration(Duration::ZERO, plan.max_delay));
            }
            let now = match cut_after {
                Some(limit) if forwarded + n as u64 >= limit => (limit - forwarded) as usize,
                _ => n,
            };
            let (pass, rest) = data.split_at(now);
            if self.cut_done.load(Ordering::SeqCst) {
                // The other direction cut while this chunk was held back.
                match way {
                    Way::Up => {
                        self.record(read_at.unwrap_or_default(), way, data, false);
                        continue;
                    }
                    Way::Down => break,
                }
            }
            // To the client: stamped before the write starts.
            let at = read_at.unwrap_or_else(|| self.shared.tick());
            self.record(at, way, pass, true);
            if to.write_all(pass).is_err() {
                break;
            }
            forwarded += pass.len() as u64;
            if let (Way::Up, Some(pattern)) = (way, plan.cut_after_client_sends) {
                tail.extend_from_slice(pass);
                let seen = String::from_utf8_lossy(&tail).contains(pattern);
                let keep = tail.len().saturating_sub(pattern.len());
                tail.drain(..keep);
                if seen && !self.shared.fired.swap(true, Ordering::SeqCst) {
                    self.cut(way);
                    continue;
                }
            }
            if cut_after.is_some_and(|limit| forwarded >= limit) {
                self.cut(way);
                match way {
                    Way::Up => {
                        self.record(at, way, rest, false);
                        continue;
                    }
                    Way::Down => break,
                }
            }
        }
        match way {
            Way::Up => {
                let _ = self.server.shutdown(Shutdown::Write);
                if self.cut_done.load(Ordering::SeqCst) {
                    let _ = self.client.shutdown(Shutdown::Both);
                }
            }
            Way::Down => {
                let _ = self.client.shutdown(Shutdown::Write);
            }
        }
    }
}

/// One tagged IMAP command as the transcript shows it.
#[derive(Debug, Clone)]
pub struct Command {
    pub tag: String,
    /// `LOGIN`, `SELECT`, `UID FETCH`, ...
    pub verb: String,
    /// The stamp of its first byte.
    pub sent_at: u64,
    /// The stamp of the line that completed it (tagged OK/NO/BAD), if it was written.
    pub answered_at: Option<u64>,
}

/// What the transcripts show, read as IMAP.
#[derive(Debug, Default)]
pub struct Findings {
    pub connections: usize,
    /// Connections that were cut (the cut fell within their bytes).
    pub cuts: usize,
    /// Commands whose answer the client never got, by verb.
    pub unanswered: BTreeMap<String, usize>,
    /// A command the client began to send before the answer to an earlier one reached it,
    /// or after a cut left an earlier one unanswered.
    pub violations: Vec<String>,
    /// Commands sent at all.
    pub commands: usize,
    /// Commands the client began to send after their connection was cut.
    pub sent_after_cut: usize,
}

/// A byte stream joined from chunks, with the stamp of each byte's chunk.
struct Stream {
    bytes: Vec<u8>,
    /// (end offset, stamp, forwarded) per chunk.
    marks: Vec<(usize, u64, bool)>,
}

impl Stream {
    fn of(t: &Transcript, way: Way) -> Stream {
        let mut chunks: Vec<&Chunk> = t.chunks.iter().filter(|c| c.way == way).collect();
        chunks.sort_by_key(|c| c.at);
        let mut bytes = Vec::new();
        let mut marks = Vec::new();
        for c in chunks {
            bytes.extend_from_slice(&c.bytes);
            marks.push((bytes.len(), c.at, c.forwarded));
        }
        Stream { bytes, marks }
    }

    /// The stamp and forwarded flag of the chunk holding byte `offset`.
    fn mark(&self, offset: usize) -> (u64, bool) {
        self.marks
            .iter()
            .find(|(end, _, _)| offset < *end)
            .map(|(_, at, fwd)| (*at, *fwd))
            .unwrap_or((u64::MAX, false))
    }

    /// Logical lines (a literal `{n}` / `{n+}` at a line's end joins the next n bytes and
    /// what follows them): (start, end) offsets, end past the CRLF or at the stream's end.
    fn lines(&self) -> Vec<(usize, usize)> {
        let b = &self.bytes;
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\n' {
                let line = &b[start..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(n) = literal_length(line) {
                    i = (i + 1 + n).min(b.len());
                    continue;
                }
                out.push((start, i + 1));
                start = i + 1;
            }
            i += 1;
        }
        if start < b.len() {
            out.push((start, b.len()));
        }
        out
    }
}

/// The length of a literal announced at the end of a line: `{12}` or `{12+}`.
fn literal_length(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&c| c == b'{')?;
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads every transcript as an IMAP conversation and checks that the client never sends a
/// command while an earlier one is unanswered (so nothing after an unanswered command on a
/// dead connection either); `DONE` (which ends IDLE) is not a command.
pub fn imap_findings(transcripts: &[Transcript]) -> Findings {
    let mut f = Findings {
        connections: transcripts.len(),
        ..Findings::default()
    };
    for t in transcripts {
        let up = Stream::of(t, Way::Up);
        let down = Stream::of(t, Way::Down);
        let mut commands: Vec<Command> = Vec::new();
        for (start, end) in up.lines() {
            let text = String::from_utf8_lossy(&up.bytes[start..end]);
            let mut words = text.split_whitespace();
            let Some(tag) = words.next() else { continue };
            if tag.eq_ignore_ascii_case("DONE") {
                continue;
            }
            let mut verb = words.next().unwrap_or_default().to_ascii_uppercase();
            if verb == "UID" {
                verb = format!(
                    "UID {}",
                    words.next().unwrap_or_default().to_ascii_uppercase()
                );
            }
            commands.push(Command {
                tag: tag.to_owned(),
                verb,
                sent_at: up.mark(start).0,
                answered_at: None,
            });
        }
        for (start, end) in down.lines() {
            let line = String::from_utf8_lossy(&down.bytes[start..end]);
            let mut words = line.split_whitespace();
            let (Some(tag), Some(status)) = (words.next(), words.next()) else {
                continue;
            };
            if !["OK", "NO", "BAD"].contains(&status.to_ascii_uppercase().as_str())
                || !down.bytes[..end].ends_with(b"\n")
            {
                continue;
            }
            if let Some(c) = commands
                .iter_mut()
                .find(|c| c.tag == tag && c.answered_at.is_none())
            {
                c.answered_at = Some(down.mark(end - 1).0);
            }
        }
        if let Some((cut_at, _)) = t.cut {
            f.cuts += 1;
            // Not a violation by itself: the client may have sent it before it read the end
            // of the stream. One sent while an earlier command was unanswered is, below.
            f.sent_after_cut += commands.iter().filter(|c| c.sent_at > cut_at).count();
        }
        for (i, c) in commands.iter().enumerate() {
            if c.answered_at.is_none() {
                *f.unanswered.entry(c.verb.clone()).or_default() += 1;
            }
            if let Some(earlier) = commands[..i]
                .iter()
                .find(|e| e.answered_at.is_none_or(|a| a > c.sent_at))
            {
                f.violations.push(format!(
                    "connection {}: {} {} sent while {} {} was unanswered{}",
                    t.number,
                    c.tag,
                    c.verb,
                    earlier.tag,
                    earlier.verb,
                    if earlier.answered_at.is_none() {
                        " (for good)"
                    } else {
                        ""
                    }
                ));
            }
        }
        f.commands += commands.len();
    }
    f
}

impl std::fmt::Display for Findings {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            out,
            "{} connections, {} cut, {} commands ({} begun after a cut), unanswered by verb {:?}",
            self.connections, self.cuts, self.commands, self.sent_after_cut, self.unanswered
        )
    }
}
