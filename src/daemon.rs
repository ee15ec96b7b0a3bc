//! `eingang run`: one task per source, each watching on its schedule until a signal, plus the
//! notifier that mails the outbox, all under a supervisor. A task stops between batches (the
//! notifier between notices), never inside one; on a source error it backs off (doubling,
//! capped, with jitter, back to the start after a pass that moved something) and records the
//! error for `status`. A task that panics or ends on its own is noticed: logged by name,
//! recorded as the source's error (so `status` shows it down and the notifier sends one down
//! notice, then one up notice once a pass succeeds again), and restarted with backoff.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use crate::intake::Intake;
use crate::notify::Notifier;
use crate::schedule::Schedule;
use crate::source::{Mode, Source};
use crate::stop::{Stop, StopSignal};

/// How long tasks get to finish their batch after a signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A task that ran this long before it died starts its restart backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// What a supervised task runs.
#[derive(Clone)]
enum Job {
    Source(Arc<Source>),
    Notifier(Arc<Notifier>),
}

/// A running task as the supervisor knows it.
struct Task {
    name: String,
    job: Job,
    started: Instant,
    restarts: u32,
}

/// Runs every source and the notifier until SIGTERM or SIGINT, then waits for the batches in
/// hand.
pub async fn run(
    sources: Vec<Arc<Source>>,
    intake: Intake,
    notifier: Notifier,
) -> std::io::Result<()> {
    let signal = StopSignal::new();
    let mut supervisor = Supervisor {
        tasks: JoinSet::new(),
        running: HashMap::new(),
        intake,
        stop: signal.stop(),
    };
    for source in sources {
        let name = source.name().to_owned();
        supervisor.spawn(name, Job::Source(source), 0, Duration::ZERO);
    }
    supervisor.spawn(
        "notify".to_owned(),
        Job::Notifier(Arc::new(notifier)),
        0,
        Duration::ZERO,
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: finishing the items in hand");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
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
}

impl Supervisor {
    /// Starts a task after `delay` (its restart backoff, which a stop cuts short).
    fn spawn(&mut self, name: String, job: Job, restarts: u32, delay: Duration) {
        let (intake, stop, run) = (self.intake.clone(), self.stop.clone(), job.clone());
        let handle = self.tasks.spawn(async move {
            if stop.sleep(delay).await {
                return;
            }
            match run {
                Job::Source(source) => watch_source(&source, &intake, &stop).await,
                Job::Notifier(notifier) => notifier.run(stop).await,
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
        if let Job::Source(_) = &task.job {
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

async fn watch_source(source: &Source, intake: &Intake, stop: &Stop) {
    let mut backoff = BACKOFF_START;
    let mut last_start: Option<chrono::NaiveDateTime> = None;
    // An `idle` source looks at its inbox right away; the others keep to their schedule.
    let mut first = matches!(source.config.schedule, Schedule::Idle);
    // Messages left in the inbox until DNS answers are looked at again when due, whatever the
    // schedule says.
    let mut retry_at: Option<String> = None;
    loop {
        if !first {
            let now = chrono::Local::now().naive_local();
            let next = source.config.schedule.next_after(now, last_start);
            let retry = retry_at.take().map(|at| time_until(&at));
            tokio::select! {
                () = stop.wait() => return,
                () = wait(source, next, now, retry) => {}
            }
        }
        first = false;
        if stop.is_set() {
            return;
        }
        last_start = Some(chrono::Local::now().naive_local());
        let pass = source.pass(intake, stop, Mode::Daemon).await;
        let report = &pass.report;
        retry_at.clone_from(&report.retry_at);
        if report.made_progress() {
            tracing::info!(source = %source.name(), imported = report.imported, rejected = report.rejected, "pass done");
        }
        let error = pass.result.err().map(|e| e.to_string());
        intake.record_pass(source.name(), error.clone()).await;
        // A pass that moved something before it failed is progress: the pause starts over.
        if report.made_progress() {
            backoff = BACKOFF_START;
        }
        if let Some(error) = error {
            tracing::error!(source = %source.name(), %error, retry_in = ?backoff, "source failed");
            if stop.sleep(jittered(backoff)).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        } else {
            backoff = BACKOFF_START;
        }
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
    fn a_panic_is_told_by_its_message() {
        assert_eq!(panic_text(Box::new("boom")), "boom");
        assert_eq!(panic_text(Box::new(String::from("bang"))), "bang");
        assert_eq!(panic_text(Box::new(7)), "a panic");
    }
}
