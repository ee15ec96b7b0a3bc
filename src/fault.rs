//! Test-only crash points (cargo feature `fault-points`). `EINGANG_FAULT=<point>` kills the
//! process with SIGKILL when it reaches that point; `EINGANG_FAULT=parse:<name>` when it starts
//! to parse the item of that name. Without the feature every call is a no-op. Points:
//! `after_commit`, `after_move` (sources), `after_send_before_mark` (notify: the SMTP server
//! took a notice, the outbox does not know yet), `oauth_after_refresh_saved` (a rotated refresh
//! token is committed, its access token not yet used).

/// Kills the process here when `EINGANG_FAULT` names this point.
#[cfg(feature = "fault-points")]
pub fn point(name: &str) {
    if std::env::var("EINGANG_FAULT").is_ok_and(|v| v == name) {
        kill();
    }
}

/// Kills the process when `EINGANG_FAULT` is `parse:<item name>`.
#[cfg(feature = "fault-points")]
pub fn parsing(item_name: &str) {
    if std::env::var("EINGANG_FAULT").is_ok_and(|v| v.strip_prefix("parse:") == Some(item_name)) {
        kill();
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
