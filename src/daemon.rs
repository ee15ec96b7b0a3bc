//! `eingang run`: one task per source, each watching on its schedule until a signal, plus the
//! notifier that mails the outbox, all under a supervisor. A task stops between batches (the
//! notifier between notices), never inside one; on a source error it backs off (doubling,
//! capped, with jitter, back to the start after a pass that moved something) and records the
//! error for `status`. A task that panics or ends on its own is noticed: logged by name,
//! recorded as the source's error (so `status` shows it down and the notifier sends one down
//! notice, then one up notice once a pass succeeds again), and restarted with backoff.
//!
//! While the daemon runs it alone works its sources: `Control` asks a source task for a pass
//! now (the web page's button, or an `eingang sync` that found the daemon running and wrote a
//! request into the store, which the `requests` task hands on) and puts failed items back.
//! `Tasks` is what the supervisor tells the web page and `/readyz`: which task runs, since
//! when, and when each source passes next. With `[http]` the web page is one more task, and
//! with `[cxml]` the cXML receiver (`cxml`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use crate::connector::Handoff;
use crate::cxml_http::Receiver;
use crate::intake::Intake;
use crate::notify::Notifier;
use crate::schedule::Schedule;
use crate::source::{Mode, PassReport, Source};
use crate::stop::{Stop, StopSignal};
use crate::store::Request;
use crate::web::Web;

/// How long tasks get to finish their batch after a signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A task that ran this long before it died starts its restart backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(300);
/// How often the daemon looks for requests that commands wrote into the store.
const REQUEST_POLL: Duration = Duration::from_millis(300);
/// Requests for a pass that may wait for a busy source task.
const QUEUED_PASSES: usize = 16;
/// How often a daemon on a shared store tries to take a source another daemon works: a dead
/// daemon's sources are taken over within `lease::SILENCE` and this.
const LEASE_POLL: Duration = Duration::from_secs(4);
/// How often a source task on a shared store looks whether its daemon holds more than its
/// share of the sources (and gives this one to another daemon).
const BALANCE_EVERY: Duration = Duration::from_secs(30);
/// How long a request forwarded to the daemon that owns a source may take to be answered.
const FORWARD_WAIT: Duration = Duration::from_secs(600);

/// A pass asked for now, and where its result goes.
struct PassRequest {
    reply: oneshot::Sender<(PassReport, Option<String>)>,
}

/// The way to the running sources: a pass now, a failed item put back.
#[derive(Clone)]
pub struct Control {
    sources: Vec<Arc<Source>>,
    intake: Intake,
    passes: HashMap<String, mpsc::Sender<PassRequest>>,
    tasks: Arc<Tasks>,
}

/// When a source passes next, as its task last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPass {
    /// A pass runs now.
    Running,
    /// At this local time (its schedule).
    At(chrono::NaiveDateTime),
    /// On news in the inbox (IDLE, file events), at the latest after this long.
    OnNews(Duration),
    /// Not here: another daemon on the shared store works the source (host and process id,
    /// when known); this one takes it over should that one stop.
    Elsewhere(Option<String>),
}

/// What the supervisor knows of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHealth {
    /// Whether it runs (not dead, not waiting for its restart).
    pub alive: bool,
    /// Since when it runs, or since when it is dead.
    pub since: chrono::DateTime<chrono::Utc>,
    /// Restarts after it died, in a row.
    pub restarts: u32,
    /// For a source task: when it passes next.
    pub next: Option<NextPass>,
}

/// The supervisor's board of its tasks, by name, for the web page and `/readyz`.
#[derive(Debug, Default)]
pub struct Tasks {
    board: std::sync::Mutex<HashMap<String, TaskHealth>>,
}

impl Tasks {
    fn update(&self, name: &str, f: impl FnOnce(&mut TaskHealth)) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        let health = board.entry(name.to_owned()).or_insert_with(|| TaskHealth {
            alive: false,
            since: chrono::Utc::now(),
            restarts: 0,
            next: None,
        });
        f(health);
    }

    fn started(&self, name: &str, restarts: u32) {
        self.update(name, |h| {
            (h.alive, h.since, h.restarts) = (true, chrono::Utc::now(), restarts);
        });
    }

    fn died(&self, name: &str) {
        self.update(name, |h| {
            (h.alive, h.since, h.next) = (false, chrono::Utc::now(), None);
        });
    }

    fn next_pass(&self, name: &str, next: NextPass) {
        self.update(name, |h| h.next = Some(next));
    }

    /// One task's health; `None` for a name the supervisor never started.
    pub fn get(&self, name: &str) -> Option<TaskHealth> {
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.get(name).cloned()
    }
}

/// The receiving end of one source's pass requests, kept across restarts of its task.
type PassQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<PassRequest>>>;

impl Control {
    /// Runs a pass of `source` now (after the one in hand, if any) and returns what it did
    /// and the error it ended with. On a shared store the daemon that owns the source runs it.
    pub async fn sync(&self, source: &str) -> Result<(PassReport, Option<String>), String> {
        if self.intake.store().elsewhere(source) {
            let answer = self.forward("sync", Some(source), None).await?;
            let count = |key: &str| answer[key].as_u64().unwrap_or(0) as usize;
            let report = PassReport {
                imported: count("imported"),
                rejected: count("rejected"),
                ..PassReport::default()
            };
            return Ok((report, answer["error"].as_str().map(str::to_owned)));
        }
        let queue = self
            .passes
            .get(source)
            .ok_or_else(|| format!("no source named {source:?} in the config"))?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(PassRequest { reply })
            .await
            .map_err(|_| "the daemon is stopping".to_owned())?;
        answer
            .await
            .map_err(|_| format!("the task of source {source} stopped before its pass ended"))
    }

    /// Puts the archived items of a source the store did not know back into its inbox.
    pub async fn recover(
        &self,
        source: &str,
    ) -> Result<Vec<(String, Result<String, String>)>, String> {
        if self.intake.store().elsewhere(source) {
            let answer = self.forward("recover", Some(source), None).await?;
            if let Some(error) = answer["error"].as_str() {
                return Err(error.to_owned());
            }
            let items = answer["items"].as_array().cloned().unwrap_or_default();
            return Ok(items
                .iter()
                .map(|item| {
                    let at = item["at"].as_str().unwrap_or_default().to_owned();
                    match item["place"].as_str() {
                        Some(place) => (at, Ok(place.to_owned())),
                        None => (
                            at,
                            Err(item["error"].as_str().unwrap_or_default().to_owned()),
                        ),
                    }
                })
                .collect());
        }
        crate::source::recover(&self.sources, &self.intake, source)
            .await
            .map_err(|e| e.to_string())
    }

    /// Puts a failed item back into its inbox; returns where it lies now.
    pub async fn reprocess(&self, id: i64) -> Result<String, String> {
        let item = self
            .intake
            .failed_item(id)
            .await
            .map_err(|e| e.to_string())?;
        if item.is_some_and(|item| self.intake.store().elsewhere(&item.source)) {
            let answer = self.forward("reprocess", None, Some(id)).await?;
            return match answer["place"].as_str() {
                Some(place) => Ok(place.to_owned()),
                None => Err(answer["error"].as_str().unwrap_or_default().to_owned()),
            };
        }
        crate::source::reprocess(&self.sources, &self.intake, id)
            .await
            .map_err(|e| e.to_string())
    }

    /// Hands a request to the daemon that owns its source on a shared store (its requests
    /// task takes it) and waits for the answer.
    async fn forward(
        &self,
        kind: &'static str,
        source: Option<&str>,
        item: Option<i64>,
    ) -> Result<serde_json::Value, String> {
        let store = self.intake.store().clone();
        let of = source.map(str::to_owned);
        let id = store
            .call(move |s| s.add_request(kind, of.as_deref(), item))
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + FORWARD_WAIT;
        loop {
            let answer = store
                .call(move |s| s.request_result(id))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(text) = answer {
                return serde_json::from_str(&text).map_err(|e| e.to_string());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the daemon that works the source did not answer within {FORWARD_WAIT:?}"
                ));
            }
            tokio::time::sleep(REQUEST_POLL).await;
        }
    }

    /// The configured sources.
    pub fn sources(&self) -> &[Arc<Source>] {
        &self.sources
    }

    /// Closes a failed item without reprocessing it ("handled by hand"); it stays where it
    /// lies.
    pub async fn mark_handled(&self, id: i64) -> Result<(), String> {
        match self
            .intake
            .store()
            .call(move |store| store.mark_handled(id))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::source::ReprocessError::NotFailed.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The store, for reading the ledger.
    pub fn store(&self) -> &Arc<crate::store::Store> {
        self.intake.store()
    }

    /// What the supervisor knows of its tasks.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Whether every source task runs (for `/readyz`).
    pub fn sources_alive(&self) -> bool {
        self.sources
            .iter()
            .all(|s| self.tasks.get(s.name()).is_some_and(|h| h.alive))
    }
}

/// What a supervised task runs.
#[derive(Clone)]
enum Job {
    Source(Arc<Source>, PassQueue),
    Notifier(Arc<Notifier>),
    Requests(Control),
    Handoff(Arc<Handoff>),
    Web(Arc<Web>, Control),
    Cxml(Arc<Receiver>),
}

/// A running task as the supervisor knows it.
struct Task {
    name: String,
    job: Job,
    started: Instant,
    restarts: u32,
}

/// Runs every source and the notifier (and the web page and the cXML receiver, when given)
/// until SIGTERM or SIGINT, then waits for the batches (and requests) in hand. `start` is
/// the formats folder (read again on SIGHUP) and the start-up line, logged once the signals
/// are taken: whoever reads it may send them.
pub async fn run(
    sources: Vec<Arc<Source>>,
    intake: Intake,
    notifier: Notifier,
    handoff: Handoff,
    listeners: (Option<Web>, Option<Receiver>),
    start: (std::path::PathBuf, String),
) -> std::io::Result<()> {
    let (web, cxml) = listeners;
    let (formats, started) = start;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tracing::info!("{started}");
    let signal = StopSignal::new();
    let board = Arc::new(Tasks::default());
    let mut supervisor = Supervisor {
        tasks: JoinSet::new(),
        running: HashMap::new(),
        intake: intake.clone(),
        stop: signal.stop(),
        board: board.clone(),
    };
    let mut control = Control {
        sources: sources.clone(),
        intake: intake.clone(),
        passes: HashMap::new(),
        tasks: board,
    };
    let store = intake.store().clone();
    if store.shared().is_some() {
        tracing::info!(daemon = %crate::lock::daemon_name(), "the store is shared: each source is worked by the daemon that holds its lease");
    }
    for source in sources {
        let name = source.name().to_owned();
        if store.shared().is_some() {
            // Nothing is written for a source before its lease is taken.
            store.release(&name);
        }
        let (tx, rx) = mpsc::channel(QUEUED_PASSES);
        control.passes.insert(name.clone(), tx);
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        supervisor.spawn(name, Job::Source(source, queue), 0, Duration::ZERO);
    }
    supervisor.spawn(
        "notify".to_owned(),
        Job::Notifier(Arc::new(notifier)),
        0,
        Duration::ZERO,
    );
    // Requests an earlier daemon took and never answered: their commands gave up long ago.
    // On a shared store the others may be answering theirs: a daemon that takes a source over
    // ends the requests for it instead (`own`).
    if store.shared().is_none() {
        let abandoned = json!({ "error": "the daemon stopped before it answered" }).to_string();
        if let Err(e) = store
            .call(move |store| store.abandon_requests(&abandoned))
            .await
        {
            tracing::warn!(error = %e, "cannot clear old requests");
        }
    }
    if let Some(web) = web {
        supervisor.spawn(
            "http".to_owned(),
            Job::Web(Arc::new(web), control.clone()),
            0,
            Duration::ZERO,
        );
    }
    if let Some(cxml) = cxml {
        let job = Job::Cxml(Arc::new(cxml));
        supervisor.spawn("cxml".to_owned(), job, 0, Duration::ZERO);
    }
    supervisor.spawn(
        "requests".to_owned(),
        Job::Requests(control),
        0,
        Duration::ZERO,
    );
    if !handoff.is_empty() {
        let job = Job::Handoff(Arc::new(handoff));
        supervisor.spawn("handoff".to_owned(), job, 0, Duration::ZERO);
    }
    loop {
        tokio::select! {
            _ = hangup.recv() => reload_formats(&intake, &formats),
            _ = term.recv() => {
                tracing::info!("SIGTERM: finishing the items in hand");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: finishing the items in hand");
                break;
            }
            Some(done) = supervisor.tasks.join_next_with_id() => supervisor.ended(done).await,
        }
    }
    signal.set();
    supervisor.shut_down().await;
    Ok(())
}

struct Supervisor {
    tasks: JoinSet<()>,
    running: HashMap<Id, Task>,
    intake: Intake,
    stop: Stop,
    board: Arc<Tasks>,
}

impl Supervisor {
    /// Starts a task after `delay` (its restart backoff, which a stop cuts short).
    fn spawn(&mut self, name: String, job: Job, restarts: u32, delay: Duration) {
        let (intake, stop, run) = (self.intake.clone(), self.stop.clone(), job.clone());
        let (board, task_name) = (self.board.clone(), name.clone());
        let handle = self.tasks.spawn(async move {
            if stop.sleep(delay).await {
                return;
            }
            board.started(&task_name, restarts);
            match run {
                Job::Source(source, queue) => {
                    let mut queue = queue.lock().await;
                    watch_source(&source, &intake, &stop, &mut queue, &board).await;
                }
                Job::Notifier(notifier) => notifier.run(stop).await,
                Job::Requests(control) => serve_requests(&control, &stop).await,
                Job::Handoff(handoff) => handoff.run(stop).await,
                Job::Web(web, control) => web.serve(control, stop).await,
                Job::Cxml(receiver) => receiver.serve(&intake, stop).await,
            }
        });
        let task = Task {
            name,
            job,
            started: Instant::now() + delay,
            restarts,
        };
        self.running.insert(handle.id(), task);
    }

    /// A task ended although nobody stopped it: say so, record it, start it again.
    async fn ended(&mut self, done: Result<(Id, ()), tokio::task::JoinError>) {
        let (id, why) = match done {
            Ok((id, ())) => (id, "the task ended unexpectedly".to_owned()),
            Err(e) if e.is_panic() => {
                let id = e.id();
                (
                    id,
                    format!("the task failed: {}", panic_text(e.into_panic())),
                )
            }
            Err(e) => (e.id(), format!("the task was cancelled: {e}")),
        };
        let Some(task) = self.running.remove(&id) else {
            return;
        };
        self.board.died(&task.name);
        if self.stop.is_set() {
            return;
        }
        let restarts = if task.started.elapsed() >= HEALTHY_RUN {
            0
        } else {
            task.restarts + 1
        };
        let delay = backoff_after(restarts);
        tracing::error!(task = %task.name, error = %why, restart_in = ?delay, "task stopped; restarting it");
        if let Job::Source(..) = &task.job {
            self.intake.record_pass(&task.name, Some(why)).await;
        }
        self.spawn(task.name, task.job, restarts, delay);
    }

    /// Waits for every task to finish its item in hand, within the grace period, and names
    /// the ones that did not.
    async fn shut_down(mut self) {
        let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(deadline);
        while !self.tasks.is_empty() {
            tokio::select! {
                done = self.tasks.join_next_with_id() => {
                    let id = match &done {
                        Some(Ok((id, ()))) => *id,
                        Some(Err(e)) => e.id(),
                        None => break,
                    };
                    if let Some(task) = self.running.remove(&id) {
                        tracing::info!(task = %task.name, "stopped");
                    }
                }
                _ = &mut deadline => {
                    let names: Vec<&str> = self.running.values().map(|t| t.name.as_str()).collect();
                    tracing::error!(tasks = ?names, "tasks did not stop within the grace period");
                    break;
                }
            }
        }
    }
}

/// The restart delay after `restarts` restarts in a row: 1 s, doubling, capped.
fn backoff_after(restarts: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(2u32.saturating_pow(restarts.saturating_sub(1)))
        .min(BACKOFF_CAP)
}

/// Binds a listener of the daemon (`[http]`, `[cxml]`) before it starts, so that a taken port
/// is a start-up error, not a task that keeps dying; non-blocking, for tokio.
pub fn listen(section: &str, addr: std::net::SocketAddr) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("{section}: listen {addr}: {e}"))
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "a panic".to_owned(), |s| (*s).to_owned()),
    }
}

/// How long an `idle` source waits for news before it lists its inbox anyway.
fn idle_limit(source: &Source) -> Duration {
    match &source.config.kind {
        crate::config::SourceKind::Dir(d) => d.rescan,
        // The config refuses `idle` for ftp, which polls on its schedule.
        crate::config::SourceKind::Ftp(_) => Duration::from_secs(60),
        crate::config::SourceKind::Imap(_) => crate::source::imap::IDLE_WAIT,
    }
}

async fn watch_source(
    source: &Source,
    intake: &Intake,
    stop: &Stop,
    asked: &mut mpsc::Receiver<PassRequest>,
    board: &Tasks,
) {
    let mut backoff = BACKOFF_START;
    let mut last_start: Option<chrono::NaiveDateTime> = None;
    // An `idle` source looks at its inbox right away; the others keep to their schedule.
    let mut first = matches!(source.config.schedule, Schedule::Idle);
    // Once per start, after the first pass that went through (so that what a crash left
    // between move and record is recorded first): does the archive hold items the store does
    // not know?
    let mut audited = false;
    // Messages left in the inbox until DNS answers are looked at again when due, whatever the
    // schedule says.
    let mut retry_at: Option<String> = None;
    let mut balanced = Instant::now();
    loop {
        match own(source, intake, stop, asked, board).await {
            Ownership::Stopped => return,
            Ownership::Kept => {}
            // Taken over: what the last owner left between commit and move is finished now,
            // and its archive looked through once more.
            Ownership::Taken => (first, audited, balanced) = (true, false, Instant::now()),
        }
        if balanced.elapsed() >= BALANCE_EVERY {
            balanced = Instant::now();
            if give_back(source, intake).await {
                continue;
            }
        }
        let mut lost = intake.store().lease_lost(source.name());
        let mut waiting: Vec<PassRequest> = Vec::new();
        if !first && let Ok(request) = asked.try_recv() {
            waiting.push(request);
        } else if !first {
            let now = chrono::Local::now().naive_local();
            let next = source.config.schedule.next_after(now, last_start);
            board.next_pass(source.name(), next_pass(source, next));
            let retry = retry_at.take().map(|at| time_until(&at));
            tokio::select! {
                () = stop.wait() => return,
                () = wait(source, next, now, retry) => {}
                Some(request) = asked.recv() => waiting.push(request),
                // The lease went while the source waited (this daemon froze, or lost the
                // database): the source is another daemon's now, or to be taken again.
                () = lease_lost(&mut lost) => continue,
            }
        }
        first = false;
        if stop.is_set() {
            return;
        }
        // Everyone who asked by now shares this pass; asked for, it waits for items still
        // being written, as `eingang sync` does.
        while let Ok(request) = asked.try_recv() {
            waiting.push(request);
        }
        let mode = if waiting.is_empty() {
            Mode::Daemon
        } else {
            Mode::Sync
        };
        last_start = Some(chrono::Local::now().naive_local());
        board.next_pass(source.name(), NextPass::Running);
        let pass = source.pass(intake, stop, mode).await;
        let fenced = matches!(
            &pass.result,
            Err(crate::source::Error::Store(crate::store::Error::Fenced(_)))
        );
        let store = intake.store();
        if fenced || (pass.result.is_err() && store.elsewhere(source.name())) {
            // Not a failure of the source: the lease is gone (another daemon took the source
            // over, or the database was out of reach for longer than the lease lasts), and
            // whoever works the source now says how it goes.
            tracing::warn!(source = %source.name(), "this daemon lost the source (another daemon took it over, or the database was out of reach); it stops working it");
            store.release(source.name());
            for request in waiting {
                let _ = request
                    .reply
                    .send((pass.report.clone(), Some(elsewhere(source.name()))));
            }
            continue;
        }
        let report = &pass.report;
        retry_at.clone_from(&report.retry_at);
        if report.made_progress() {
            tracing::info!(source = %source.name(), imported = report.imported, rejected = report.rejected, "pass done");
        }
        let error = pass.result.err().map(|e| e.to_string());
        intake.record_pass(source.name(), error.clone()).await;
        if !audited && error.is_none() {
            audited = true;
            if let Err(e) = source.audit(intake).await {
                tracing::warn!(source = %source.name(), error = %e, "cannot look through the archive for items the store does not know");
            }
        }
        for request in waiting {
            let _ = request.reply.send((report.clone(), error.clone()));
        }
        let (pause, next) = retry_pause(backoff, report.made_progress(), error.is_some());
        backoff = next;
        if let (Some(error), Some(pause)) = (error, pause) {
            tracing::error!(source = %source.name(), %error, retry_in = ?pause, "source failed");
            let pause = jittered(pause);
            let retry_at = chrono::Local::now().naive_local()
                + chrono::Duration::from_std(pause).unwrap_or_default();
            board.next_pass(source.name(), NextPass::At(retry_at));
            if stop.sleep(pause).await {
                return;
            }
        }
    }
}

/// Whether a source task may pass: on a shared store, whether this daemon owns the source.
enum Ownership {
    /// It did and does (always on a store of one daemon).
    Kept,
    /// It took the source just now.
    Taken,
    /// The daemon stops.
    Stopped,
}

/// The answer to a pass asked of a daemon that does not own the source.
fn elsewhere(source: &str) -> String {
    format!("source {source} is worked by another daemon on the shared store")
}

/// On a shared store, makes sure this daemon owns `source` before a pass: takes the source's
/// lease when it is free, and while another daemon holds it tries again every `LEASE_POLL`,
/// answering the passes asked for meanwhile with where the source is worked.
async fn own(
    source: &Source,
    intake: &Intake,
    stop: &Stop,
    asked: &mut mpsc::Receiver<PassRequest>,
    board: &Tasks,
) -> Ownership {
    let store = intake.store();
    let Some(target) = store.shared().cloned() else {
        return Ownership::Kept;
    };
    let name = source.name().to_owned();
    if store.holds(&name) {
        return Ownership::Kept;
    }
    // Polls in which the source was free but this daemon held its share already: the next
    // one takes it anyway, so that no source waits for a daemon that is not coming.
    let mut free_before = false;
    loop {
        store.release(&name);
        let of = name.clone();
        let seen = store
            .call(move |s| Ok((s.source_owners()?.remove(&of), s.daemons()?.len())))
            .await;
        let (total, held) = store.lease_counts();
        let wait = match seen {
            Ok((Some(owner), _)) => {
                board.next_pass(&name, NextPass::Elsewhere(Some(owner)));
                true
            }
            Ok((None, daemons)) if held >= total.div_ceil(daemons.max(1)) && !free_before => {
                free_before = true;
                true
            }
            _ => false,
        };
        if wait {
            if pause(&name, stop, asked).await {
                return Ownership::Stopped;
            }
            continue;
        }
        let (at, of) = (target.clone(), name.clone());
        let taken = tokio::task::spawn_blocking(move || {
            crate::store::lease::SourceLease::take(&at, &of, &crate::lock::daemon_name())
        })
        .await
        .map_err(|e| crate::store::Error::Task(e.to_string()))
        .and_then(|taken| taken);
        match taken {
            Ok(Some(lease)) => {
                let epoch = lease.fence().epoch;
                store.hold(lease);
                tracing::info!(source = %name, epoch, "this daemon works the source now");
                let abandoned = json!({
                    "error": "the daemon that took this request lost its source; run the command again"
                })
                .to_string();
                let of = name.clone();
                if let Err(e) = store
                    .call(move |s| s.abandon_requests_of(&of, &abandoned))
                    .await
                {
                    tracing::warn!(source = %name, error = %e, "cannot end the requests the last owner took");
                }
                return Ownership::Taken;
            }
            Ok(None) => board.next_pass(&name, NextPass::Elsewhere(None)),
            Err(e) => {
                tracing::warn!(source = %name, error = %e, retry_in = ?LEASE_POLL, "cannot take the source's lease");
                board.next_pass(&name, NextPass::Elsewhere(None));
            }
        }
        if pause(&name, stop, asked).await {
            return Ownership::Stopped;
        }
    }
}

/// Waits `LEASE_POLL` for a source this daemon does not own, answering the passes asked for
/// meanwhile with where the source is worked. Whether the daemon stops.
async fn pause(name: &str, stop: &Stop, asked: &mut mpsc::Receiver<PassRequest>) -> bool {
    let poll = tokio::time::sleep(LEASE_POLL);
    tokio::pin!(poll);
    loop {
        tokio::select! {
            () = stop.wait() => return true,
            () = &mut poll => return false,
            Some(request) = asked.recv() => {
                let _ = request.reply.send((PassReport::default(), Some(elsewhere(name))));
            }
        }
    }
}

/// Waits until the lease `lost` watches is lost (for ever without one).
async fn lease_lost(lost: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    match lost {
        Some(lost) => {
            let _ = lost.wait_for(|lost| *lost).await;
        }
        None => std::future::pending().await,
    }
}

/// On a shared store, gives `source` to another daemon when this one holds more than its
/// share of the sources (say it took them all before the others started): it drops the lease
/// and leaves the source to them for a poll. Whether it did.
async fn give_back(source: &Source, intake: &Intake) -> bool {
    let store = intake.store();
    if store.shared().is_none() {
        return false;
    }
    let Ok(daemons) = store.call(|s| s.daemons()).await else {
        return false;
    };
    let (total, held) = store.lease_counts();
    let share = total.div_ceil(daemons.len().max(1));
    if held <= share {
        return false;
    }
    tracing::info!(source = %source.name(), held, share, daemons = daemons.len(), "giving the source to another daemon: this one holds more than its share");
    store.release(source.name());
    true
}

/// After a pass: the pause before the next try (`None` after a pass without error) and the
/// pause after that. The pause doubles from 1 s to a cap while passes fail, and starts over
/// after a pass that moved something, even one that failed later: under steady packet loss a
/// source that makes progress must not wait longer and longer.
fn retry_pause(
    current: Duration,
    made_progress: bool,
    failed: bool,
) -> (Option<Duration>, Duration) {
    let current = if made_progress {
        BACKOFF_START
    } else {
        current
    };
    if failed {
        (Some(current), (current * 2).min(BACKOFF_CAP))
    } else {
        (None, BACKOFF_START)
    }
}

/// SIGHUP: the format files are read again; a broken one keeps the old set, and says why.
fn reload_formats(intake: &Intake, formats: &std::path::Path) {
    match intake.reload_formats(formats) {
        Ok(changes) if changes.is_empty() => {
            tracing::info!(folder = %formats.display(), "SIGHUP: formats read again, nothing changed");
        }
        Ok(changes) => {
            tracing::info!(folder = %formats.display(), changes = %changes.join(", "), "SIGHUP: formats read again");
        }
        Err(problems) => {
            for problem in problems {
                tracing::error!(%problem, "SIGHUP: formats not taken; the old ones stay in use");
            }
        }
    }
}

/// Hands on what commands asked of the daemon through the store (an `eingang sync` or
/// `reprocess` that found it running), and writes each answer back.
async fn serve_requests(control: &Control, stop: &Stop) {
    let store = control.intake.store().clone();
    loop {
        match store
            .call(|s| s.take_requests(s.elsewhere_sources().as_deref()))
            .await
        {
            Ok(requests) => {
                for request in requests {
                    let (control, store) = (control.clone(), store.clone());
                    // Each in its own task: a long pass of one source holds up no other.
                    tokio::spawn(async move {
                        let id = request.id;
                        let result = answer(&control, request).await;
                        if let Err(e) = store.call(move |s| s.finish_request(id, &result)).await {
                            tracing::error!(request = id, error = %e, "cannot record the answer");
                        }
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read requests"),
        }
        if stop.sleep(REQUEST_POLL).await {
            return;
        }
    }
}

/// The answer to one request, as the JSON the waiting command reads.
async fn answer(control: &Control, request: Request) -> String {
    match (request.kind.as_str(), request.source, request.item_id) {
        ("sync", Some(source), _) => match control.sync(&source).await {
            Ok((report, error)) => json!({
                "imported": report.imported, "rejected": report.rejected, "error": error,
            }),
            Err(error) => json!({ "imported": 0, "rejected": 0, "error": error }),
        },
        ("recover", Some(source), _) => match control.recover(&source).await {
            Ok(results) => json!({ "items": results.into_iter().map(|(at, r)| match r {
                Ok(place) => json!({ "at": at, "place": place }),
                Err(error) => json!({ "at": at, "error": error }),
            }).collect::<Vec<_>>() }),
            Err(error) => json!({ "error": error }),
        },
        ("reprocess", _, Some(id)) => match control.reprocess(id).await {
            Ok(place) => json!({ "place": place }),
            Err(error) => json!({ "error": error }),
        },
        (kind, ..) => json!({ "error": format!("unknown request {kind:?}") }),
    }
    .to_string()
}

/// What `wait` will wait for, in the board's words.
fn next_pass(source: &Source, next: Option<chrono::NaiveDateTime>) -> NextPass {
    match (&source.config.schedule, next) {
        (Schedule::Idle, _) | (_, None) => NextPass::OnNews(idle_limit(source)),
        (_, Some(at)) => NextPass::At(at),
    }
}

/// Waits for the next pass: news (or the rescan interval) for `idle`, else the schedule; at
/// most `retry` (messages left in the inbox are due then).
async fn wait(
    source: &Source,
    next: Option<chrono::NaiveDateTime>,
    now: chrono::NaiveDateTime,
    retry: Option<Duration>,
) {
    let capped = |d: Duration| retry.map_or(d, |r| d.min(r));
    match (&source.config.schedule, next) {
        (Schedule::Idle, _) | (_, None) => source.wait_for_news(capped(idle_limit(source))).await,
        (_, Some(at)) => tokio::time::sleep(capped((at - now).to_std().unwrap_or_default())).await,
    }
}

/// How long until an RFC 3339 time (zero if it is past or unreadable).
fn time_until(at: &str) -> Duration {
    chrono::DateTime::parse_from_rfc3339(at)
        .ok()
        .and_then(|at| {
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or_default()
}

/// Up to a quarter more or less, so that many daemons do not retry in step.
pub(crate) fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_a_second_doubling_to_a_cap() {
        let delays: Vec<u64> = (1..=10).map(|n| backoff_after(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff_after(40), BACKOFF_CAP);
    }

    #[test]
    fn the_retry_pause_starts_over_after_a_pass_that_made_progress() {
        let s = Duration::from_secs;
        assert_eq!(retry_pause(s(1), false, true), (Some(s(1)), s(2)));
        assert_eq!(retry_pause(s(32), false, true), (Some(s(32)), s(64)));
        assert_eq!(retry_pause(s(64), true, true), (Some(s(1)), s(2)));
        assert_eq!(
            retry_pause(s(256), false, true),
            (Some(s(256)), BACKOFF_CAP)
        );
        assert_eq!(retry_pause(s(64), false, false), (None, s(1)));
    }

    #[test]
    fn a_panic_is_told_by_its_message() {
        assert_eq!(panic_text(Box::new("boom")), "boom");
        assert_eq!(panic_text(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_text(Box::new(7)), "a panic");
    }
}
