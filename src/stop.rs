//! The one stop signal of a process: set once (SIGTERM, SIGINT), seen by every task. Tasks look
//! at it between items and while they wait, never in the middle of one item.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The sending side: `stop` tells every `Stop` made from it.
#[derive(Debug)]
pub struct StopSignal(watch::Sender<bool>);

/// A task's view of the stop signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stop {
    rx: watch::Receiver<bool>,
    /// Keeps the channel open for a `Stop` that nobody will ever set.
    _never: Option<Arc<watch::Sender<bool>>>,
}

impl StopSignal {
    /// A new signal, not set.
    pub fn new() -> StopSignal {
        StopSignal(watch::channel(false).0)
    }

    /// A view of this signal for one task.
    pub fn stop(&self) -> Stop {
        Stop {
            rx: self.0.subscribe(),
            _never: None,
        }
    }

    /// Sets the signal.
    pub fn set(&self) {
        self.0.send_replace(true);
    }
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal::new()
    }
}

impl Stop {
    /// A signal that is never set: one-shot commands run to their end.
    pub fn never() -> Stop {
        let (tx, rx) = watch::channel(false);
        Stop {
            rx,
            _never: Some(Arc::new(tx)),
        }
    }

    /// Whether the signal is set.
    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the signal is set.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|set| *set).await.is_err() {
            // The sender is gone without setting it: nobody can stop us any more.
            std::future::pending::<()>().await;
        }
    }

    /// Sleeps for `d` unless the signal is set first; returns whether it was set.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.wait() => true,
            () = tokio::time::sleep(d) => self.is_set(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_early_when_the_signal_is_set() {
        let signal = StopSignal::new();
        let stop = signal.stop();
        assert!(!stop.is_set());
        assert!(!stop.sleep(Duration::from_secs(1)).await);
        let sleeper = tokio::spawn({
            let stop = stop.clone();
            async move { stop.sleep(Duration::from_secs(3600)).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        signal.set();
        assert!(sleeper.await.unwrap());
        assert!(stop.is_set());
        assert!(!Stop::never().sleep(Duration::from_secs(10)).await);
    }
}
