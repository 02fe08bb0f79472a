//! Exponential backoff with jitter for reconnecting to cameras (and, later, brokers).
//!
//! Jitter matters on a site with many cameras behind one switch: after a power cut they must not all hammer
//! the NVR or the switch in lock-step.

use std::time::Duration;

/// Exponential backoff: `initial`, doubling up to `max`, each delay spread by ±`jitter` (a fraction).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    current: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        Self { initial, max: max.max(initial), jitter: jitter.clamp(0.0, 1.0), current: initial, rng: fastrand::Rng::new() }
    }

    /// The delay to wait now; the following one will be twice as long (capped).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let spread = 1.0 + self.jitter * (self.rng.f64() * 2.0 - 1.0);
        base.mul_f64(spread)
    }

    /// Back to the initial delay, after a connection that worked.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_within_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 0.2);
        let expect = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
        for e in expect {
            let d = b.next_delay().as_secs_f64();
            assert!(d >= e * 0.8 - 1e-9 && d <= e * 1.2 + 1e-9, "delay {d} not within 20% of {e}");
        }
        b.reset();
        let d = b.next_delay().as_secs_f64();
        assert!((0.8..=1.2).contains(&d));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10), 0.5);
        let delays: Vec<_> = (0..20).map(|_| b.next_delay()).collect();
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "jitter produced identical delays");
    }
}
