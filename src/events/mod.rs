//! Events: what the tracker reports ([`stage`]: detections → tracks → events), made durable in the
//! [`outbox`] before they are published.

pub mod config;
pub mod outbox;
pub mod publisher;
pub mod schema;
pub mod stage;

pub use outbox::{Outbox, OutboxError, OutboxStats};

/// Events the outbox could not store (a full or failing disk): held in memory and retried, up to a bound;
/// beyond it the oldest are dropped, counted, and the service reports itself not ready.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Events waiting in memory for the outbox to take them.
    pub held: std::sync::atomic::AtomicU64,
    /// Events given up on, by reason ([`DROP_REASONS`]).
    pub dropped: [std::sync::atomic::AtomicU64; 2],
    /// Set while appends fail; the last error, for readiness and status.
    pub failing: std::sync::Mutex<Option<String>>,
}

/// Why events were dropped: the in-memory hold overflowed while the outbox could not store, or the
/// service stopped while they were still held.
pub const DROP_REASONS: [&str; 2] = ["outbox_write_failed", "shutdown_unstored"];

impl StoreStats {
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_failing(&self, error: Option<String>) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }
}
