//! Small helpers shared by every stage.

pub mod alloc;
pub mod backoff;
pub mod config;
pub mod fs;
pub mod heartbeat;
pub mod process;
pub mod secret;
pub mod stdout;
pub mod tasks;

pub use backoff::Backoff;
pub use heartbeat::Heartbeat;
pub use secret::mask_uri;

/// Milliseconds since the Unix epoch (0 for a time before it): how perch stamps wall-clock times in
/// messages, file names and counters.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A time given by a person or a client: ms since the epoch, or RFC 3339 (`2026-12-01T10:00:00Z`).
pub fn parse_time(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| humantime::parse_rfc3339_weak(s).ok().map(unix_ms))
}

/// Sleeps for `d` unless cancelled first, beating `heartbeat` meanwhile; returns true when cancelled.
pub fn sleep_cancellable(d: std::time::Duration, cancel: &tokio_util::sync::CancellationToken, heartbeat: Option<&Heartbeat>) -> bool {
    let deadline = std::time::Instant::now() + d;
    loop {
        if let Some(hb) = heartbeat {
            hb.beat();
        }
        if cancel.is_cancelled() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(50)));
    }
}
