//! When a listed file is complete enough to take: its size and modification time stayed the
//! same across listings for the settle time. Mtime alone is not enough (`cp -p` and rsync set
//! an old mtime before they write, FTP listings show minutes only), size alone is not either
//! (an upload may stall). Shared by the drop folder and the FTP source; holds no I/O.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The listed state of every file seen so far, and since when it has been unchanged.
#[derive(Debug)]
pub(super) struct Settling<K> {
    settle: Duration,
    seen: Mutex<HashMap<K, (u64, SystemTime, Instant)>>,
}

impl<K: Eq + Hash + Clone> Settling<K> {
    /// Files must stay unchanged for `settle`.
    pub(super) fn new(settle: Duration) -> Settling<K> {
        Settling {
            settle,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Splits a listing into the entries whose `(key, size, mtime)` stayed the same for the
    /// settle time (or that are `quiet` already by what the file system says, for a source
    /// that can tell), and the count of those still settling. Files no longer listed are
    /// forgotten; taken ones too, so that a file put back later settles again.
    pub(super) fn split<T>(
        &self,
        entries: Vec<T>,
        state: impl Fn(&T) -> (K, u64, SystemTime),
        quiet: impl Fn(&T) -> bool,
    ) -> (Vec<T>, usize) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let states: Vec<(K, u64, SystemTime)> = entries.iter().map(&state).collect();
        seen.retain(|key, _| states.iter().any(|(k, _, _)| k == key));
        let mut ready = Vec::new();
        for (entry, (key, size, modified)) in entries.into_iter().zip(states) {
            if quiet(&entry) {
                seen.remove(&key);
                ready.push(entry);
                continue;
            }
            match seen.get(&key) {
                Some(&(s, m, since)) if (s, m) == (size, modified) => {
                    if since.elapsed() >= self.settle {
                        seen.remove(&key);
                        ready.push(entry);
                    }
                }
                _ => {
                    seen.insert(key, (size, modified, Instant::now()));
                }
            }
        }
        (ready, seen.len())
    }

    /// How long until the next waiting file may have settled (`None`: nothing waits).
    pub(super) fn time_to_settle(&self) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values()
            .map(|(_, _, since)| self.settle.saturating_sub(since.elapsed()))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(files: &[(&str, u64)]) -> Vec<(String, u64, SystemTime)> {
        files
            .iter()
            .map(|(n, s)| ((*n).to_owned(), *s, SystemTime::UNIX_EPOCH))
            .collect()
    }

    #[test]
    fn a_file_is_ready_only_after_two_equal_listings_a_settle_time_apart() {
        let settling = Settling::new(Duration::from_millis(50));
        let state = |e: &(String, u64, SystemTime)| e.clone();
        let loud = |_: &(String, u64, SystemTime)| false;
        let (ready, waiting) = settling.split(listing(&[("a", 1), ("b", 5)]), state, loud);
        assert!(ready.is_empty());
        assert_eq!(waiting, 2);
        std::thread::sleep(Duration::from_millis(60));
        // `a` grew: its clock starts again; `b` stayed the same and is taken.
        let (ready, waiting) = settling.split(listing(&[("a", 2), ("b", 5)]), state, loud);
        assert_eq!(ready, listing(&[("b", 5)]));
        assert_eq!(waiting, 1);
        assert!(settling.time_to_settle().is_some());
        // `a` vanished: nothing waits any more.
        let (ready, waiting) = settling.split(listing(&[]), state, loud);
        assert!(ready.is_empty());
        assert_eq!(waiting, 0);
        assert_eq!(settling.time_to_settle(), None);
    }

    #[test]
    fn a_file_quiet_by_its_own_times_is_ready_at_first_sight() {
        let settling = Settling::new(Duration::from_secs(3600));
        let state = |e: &(String, u64, SystemTime)| e.clone();
        let (ready, waiting) =
            settling.split(listing(&[("old", 1), ("new", 2)]), state, |e| e.0 == "old");
        assert_eq!(ready, listing(&[("old", 1)]));
        assert_eq!(waiting, 1);
    }
}
