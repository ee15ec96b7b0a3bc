//! `eingang run`: one task per source, each watching on its schedule until a signal. A task
//! stops between batches, never inside one; on a source error it backs off (doubling, capped,
//! with jitter) and records the error for `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::pipeline::Context;
use crate::schedule::Schedule;
use crate::source::dir::DirSource;

/// How long tasks get to finish their batch after a signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// A source with its schedule, ready to watch.
pub struct Watched {
    /// The drop folder.
    pub source: Arc<DirSource>,
    /// When it runs.
    pub schedule: Schedule,
}

/// Runs every source until SIGTERM or SIGINT, then waits for the batches in hand.
pub async fn run(sources: Vec<Watched>, cx: Arc<Context>) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for watched in sources {
        let name = watched.source.name.clone();
        let (cx, stop_rx, stop_flag) = (cx.clone(), stop_rx.clone(), stop_flag.clone());
        tasks.spawn(async move {
            watch_dir(watched, cx, stop_rx, stop_flag).await;
            name
        });
    }
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
                    tracing::info!(source = %name, "source stopped");
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

async fn watch_dir(
    watched: Watched,
    cx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
    stop_flag: Arc<AtomicBool>,
) {
    let source = watched.source;
    let (wake_tx, mut wake) = mpsc::channel::<()>(1);
    // File-system events are hints only; the periodic rescan below is what guarantees that
    // every file is seen (events are lost on overflow and never arrive on network mounts).
    let _watcher = match watched.schedule {
        Schedule::Idle => start_watcher(&source, wake_tx),
        _ => None,
    };
    let mut backoff = BACKOFF_START;
    let mut last_start: Option<chrono::NaiveDateTime> = None;
    loop {
        let now = chrono::Local::now().naive_local();
        let wait = match watched.schedule.next_after(now, last_start) {
            None => source
                .time_to_settle()
                .map_or(source.config.rescan, |d| d.min(source.config.rescan)),
            Some(next) => (next - now).to_std().unwrap_or_default(),
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.recv() => {
                // Let the writer finish: a burst of events becomes one pass.
                tokio::time::sleep(source.config.settle).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        if *stop.borrow() {
            return;
        }
        last_start = Some(chrono::Local::now().naive_local());
        let (src, cxp, flag) = (source.clone(), cx.clone(), stop_flag.clone());
        let result = tokio::task::spawn_blocking(move || src.pass(&cxp, &flag)).await;
        let outcome = match result {
            Ok(Ok(report)) => {
                if report.imported + report.rejected > 0 {
                    tracing::info!(source = %source.name, imported = report.imported, rejected = report.rejected, "pass done");
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the pass stopped: {e}")),
        };
        let store_cx = cx.clone();
        let name = source.name.clone();
        let failed = outcome.clone().err();
        let _ = tokio::task::spawn_blocking(move || {
            store_cx
                .store
                .record_pass(&name, outcome.as_ref().map(|_| ()).map_err(String::as_str))
        })
        .await;
        if let Some(error) = failed {
            tracing::error!(source = %source.name, %error, retry_in = ?backoff, "source failed");
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

fn start_watcher(source: &DirSource, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        let relevant = match event {
            Ok(e) => {
                matches!(
                    e.kind,
                    EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    )) | EventKind::Modify(notify::event::ModifyKind::Name(_))
                        | EventKind::Create(_)
                        | EventKind::Other
                ) || e.need_rescan()
            }
            Err(_) => true,
        };
        if relevant {
            let _ = wake.try_send(()); // a full channel already means "pass pending"
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(source = %source.name, error = %e, "no file-system events; rescanning only");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&source.config.inbox, RecursiveMode::NonRecursive) {
        tracing::warn!(source = %source.name, error = %e, "no file-system events; rescanning only");
        return None;
    }
    Some(watcher)
}

/// Up to a quarter more or less, so that many daemons do not retry in step.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}
