//! `eingang run`: one task per source, each watching on its schedule until a signal, plus the
//! notifier that mails the outbox. A task stops between batches (the notifier between
//! notices), never inside one; on a source error it backs off (doubling, capped, with jitter)
//! and records the error for `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::notify::Notifier;
use crate::pipeline::Context;
use crate::schedule::Schedule;
use crate::source::Source;

/// How long tasks get to finish their batch after a signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Runs every source and the notifier until SIGTERM or SIGINT, then waits for the batches in
/// hand.
pub async fn run(
    sources: Vec<Arc<Source>>,
    cx: Arc<Context>,
    notifier: Notifier,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for source in sources {
        let (cx, stop_rx, stop_flag) = (cx.clone(), stop_rx.clone(), stop_flag.clone());
        tasks.spawn(async move {
            let name = source.name().to_owned();
            watch_source(source, cx, stop_rx, stop_flag).await;
            name
        });
    }
    let notifier_stop = stop_rx.clone();
    tasks.spawn(async move {
        notifier.run(notifier_stop).await;
        "notify".to_owned()
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: finishing the items in hand"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing the items in hand"),
    }
    stop_flag.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => {
                if let Some(Ok(name)) = done {
                    tracing::info!(task = %name, "stopped");
                }
            }
            _ = &mut deadline => {
                tracing::error!(tasks = tasks.len(), "sources did not stop within the grace period");
                break;
            }
        }
    }
    Ok(())
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
    source: Arc<Source>,
    cx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    stop_flag: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_START;
    let mut last_start: Option<chrono::NaiveDateTime> = None;
    // An `idle` source looks at its inbox right away; the others keep to their schedule.
    let mut first = matches!(source.config.schedule, Schedule::Idle);
    loop {
        if !first {
            let now = chrono::Local::now().naive_local();
            let next = source.config.schedule.next_after(now, last_start);
            tokio::select! {
                _ = stop.changed() => return,
                _ = wait(&source, next, now) => {}
            }
        }
        first = false;
        if *stop.borrow() {
            return;
        }
        last_start = Some(chrono::Local::now().naive_local());
        let result = source.pass(&cx, &stop_flag, false).await;
        let error = match &result {
            Ok(report) => {
                if report.imported + report.rejected > 0 {
                    tracing::info!(source = %source.name(), imported = report.imported, rejected = report.rejected, "pass done");
                }
                None
            }
            Err(e) => Some(e.to_string()),
        };
        let (store_cx, name, recorded) = (cx.clone(), source.name().to_owned(), error.clone());
        let _ = tokio::task::spawn_blocking(move || {
            store_cx
                .store
                .record_pass(&name, recorded.as_deref().map_or(Ok(()), Err))
        })
        .await;
        if let Some(error) = error {
            tracing::error!(source = %source.name(), %error, retry_in = ?backoff, "source failed");
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(jittered(backoff)) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        } else {
            backoff = BACKOFF_START;
        }
    }
}

/// Waits for the next pass: news (or the rescan interval) for `idle`, else the schedule.
async fn wait(source: &Source, next: Option<chrono::NaiveDateTime>, now: chrono::NaiveDateTime) {
    match (&source.config.schedule, next) {
        (Schedule::Idle, _) | (_, None) => source.wait_for_news(idle_limit(source)).await,
        (_, Some(at)) => tokio::time::sleep((at - now).to_std().unwrap_or_default()).await,
    }
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
