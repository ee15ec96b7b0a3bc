//! Test-only crash points (cargo feature `fault-points`). `EINGANG_FAULT=<point>` kills the
//! process with SIGKILL when it reaches that point; `EINGANG_FAULT=parse:<name>` when it starts
//! to parse the item of that name. Without the feature every call is a no-op. Points:
//! `after_commit`, `after_move` (sources), `after_send_before_mark` (notify: the SMTP server
//! took a notice, the outbox does not know yet), `oauth_after_refresh_saved` (a rotated refresh
//! token is committed, its access token not yet used), `after_handoff_before_mark` (a connector
//! took a document, the store does not know yet), `handoff_file_before_rename` (a dir
//! connector's temporary file is written and synced, not yet renamed). `EINGANG_FAULT=panic:<point>:<n>`
//! panics at a `panic_point` the first n times it is reached in the process (`mid_pass`: a
//! source task between a batch's commit and its move), for the daemon's supervisor.
//! `EINGANG_FAULT=wait:<point>:<ms>` sleeps at a `wait_point` (`before_read`: a drop folder
//! between its listing and the read of each file), for tests that swap files in that gap.
//! `EINGANG_FAULT=freeze:<point>` stops the whole process with SIGSTOP the first time it
//! reaches that point, as a stalled machine would, until the test sends SIGCONT.

/// Kills the process here when `EINGANG_FAULT` names this point; freezes it the first time
/// when it is `freeze:<point>`.
#[cfg(feature = "fault-points")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static FROZEN: AtomicBool = AtomicBool::new(false);
    let Ok(value) = std::env::var("EINGANG_FAULT") else {
        return;
    };
    if value == name {
        kill();
    }
    if value.strip_prefix("freeze:") == Some(name) && !FROZEN.swap(true, Ordering::Relaxed) {
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGSTOP);
        }
    }
}

/// Kills the process when `EINGANG_FAULT` is `parse:<item name>`.
#[cfg(feature = "fault-points")]
pub fn parsing(item_name: &str) {
    if std::env::var("EINGANG_FAULT").is_ok_and(|v| v.strip_prefix("parse:") == Some(item_name)) {
        kill();
    }
}

/// Panics here the first n times when `EINGANG_FAULT` is `panic:<name>:<n>`.
#[cfg(feature = "fault-points")]
pub fn panic_point(name: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HITS: AtomicU32 = AtomicU32::new(0);
    let Ok(value) = std::env::var("EINGANG_FAULT") else {
        return;
    };
    let Some((point, times)) = value
        .strip_prefix("panic:")
        .and_then(|rest| rest.rsplit_once(':'))
    else {
        return;
    };
    let times: u32 = times.parse().unwrap_or(0);
    if point == name && HITS.fetch_add(1, Ordering::Relaxed) < times {
        panic!("fault point {name}");
    }
}

/// Sleeps here when `EINGANG_FAULT` is `wait:<name>:<milliseconds>`.
#[cfg(feature = "fault-points")]
pub fn wait_point(name: &str) {
    let Ok(value) = std::env::var("EINGANG_FAULT") else {
        return;
    };
    if let Some((point, ms)) = value
        .strip_prefix("wait:")
        .and_then(|rest| rest.rsplit_once(':'))
        && point == name
    {
        let ms = ms.parse().unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

#[cfg(feature = "fault-points")]
fn kill() {
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// No-op without the `fault-points` feature.
#[cfg(not(feature = "fault-points"))]
pub fn point(_name: &str) {}

/// No-op without the `fault-points` feature.
#[cfg(not(feature = "fault-points"))]
pub fn parsing(_item_name: &str) {}

/// No-op without the `fault-points` feature.
#[cfg(not(feature = "fault-points"))]
pub fn panic_point(_name: &str) {}

/// No-op without the `fault-points` feature.
#[cfg(not(feature = "fault-points"))]
pub fn wait_point(_name: &str) {}
