//! Small helpers shared by every stage.

pub mod alloc;
pub mod backoff;
pub mod heartbeat;
pub mod secret;
pub mod stdout;

pub use backoff::Backoff;
pub use heartbeat::Heartbeat;
pub use secret::mask_uri;

/// Milliseconds since the Unix epoch (0 for a time before it): how perch stamps wall-clock times in
/// messages, file names and counters.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
