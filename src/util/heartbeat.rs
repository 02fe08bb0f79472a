//! A loop's sign of life: the loop beats on every turn, the watchdog reads how long ago that was.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds of the monotonic clock at the last beat (never goes backwards with the wall clock).
#[derive(Debug)]
pub struct Heartbeat(AtomicU64);

impl Default for Heartbeat {
    fn default() -> Self {
        let hb = Self(AtomicU64::new(0));
        hb.beat();
        hb
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.0.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis((epoch().elapsed().as_millis() as u64).saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_grows_until_the_next_beat() {
        let hb = Heartbeat::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(hb.age() >= Duration::from_millis(30));
        hb.beat();
        assert!(hb.age() < Duration::from_millis(30));
    }
}
