//! What to delete, decided as a pure function of what is stored, what is still needed and how full the disk
//! is, so that every rule is unit-tested without touching a disk.
//!
//! Order of the rules:
//! 1. segments older than the rolling window that no clip or open event needs (`window`);
//! 2. clips older than their maximum age (`age`);
//! 3. while recordings exceed their quota (`quota`) or the file system is below its low watermark
//!    (`low_disk`): the oldest of what is left, segments nobody needs and clips first, then — only when
//!    that is not enough — segments held for a clip, oldest first. A full disk would stop everything,
//!    including the outbox; a clip that loses its first seconds is the lesser harm.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Window,
    Age,
    Quota,
    LowDisk,
}

/// One stored thing, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    pub kind: ItemKind,
    /// Segments: end time; clips: when they were made (ms since the epoch).
    pub time_ms: u64,
    pub bytes: u64,
    /// A segment some pending clip or open event still needs.
    pub held: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Segment,
    Clip,
}

/// Limits in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window_ms: u64,
    pub clip_max_age_ms: u64,
    pub max_bytes: u64,
    /// Free bytes wanted on the file system.
    pub min_free: u64,
}

/// Indices of `items` to delete, each with its reason, in the order to delete them. `free` is the file
/// system's free space now, when known.
pub fn plan(now_ms: u64, items: &[Item], limits: &Limits, free: Option<u64>) -> Vec<(usize, Reason)> {
    let mut out = Vec::new();
    let mut gone = vec![false; items.len()];
    for (i, it) in items.iter().enumerate() {
        let age = now_ms.saturating_sub(it.time_ms);
        let reason = match it.kind {
            ItemKind::Segment if !it.held && age > limits.window_ms => Some(Reason::Window),
            ItemKind::Clip if age > limits.clip_max_age_ms => Some(Reason::Age),
            _ => None,
        };
        if let Some(r) = reason {
            out.push((i, r));
            gone[i] = true;
        }
    }
    let freed_by_rules: u64 = out.iter().map(|&(i, _)| items[i].bytes).sum();
    let mut total: u64 = items.iter().zip(&gone).filter(|(_, g)| !**g).map(|(it, _)| it.bytes).sum();
    let mut free = free.map(|f| f.saturating_add(freed_by_rules));
    let over = |total: u64, free: Option<u64>| -> Option<Reason> {
        if total > limits.max_bytes {
            Some(Reason::Quota)
        } else if free.is_some_and(|f| f < limits.min_free) {
            Some(Reason::LowDisk)
        } else {
            None
        }
    };
    if over(total, free).is_none() {
        return out;
    }
    let mut order: Vec<usize> = (0..items.len()).filter(|&i| !gone[i]).collect();
    // Unneeded first, then oldest first.
    order.sort_by_key(|&i| (items[i].held, items[i].time_ms));
    for i in order {
        let Some(reason) = over(total, free) else { break };
        out.push((i, reason));
        total -= items[i].bytes;
        free = free.map(|f| f.saturating_add(items[i].bytes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { window_ms: 120_000, clip_max_age_ms: 86_400_000, max_bytes: 1000, min_free: 100 };

    fn seg(time_ms: u64, bytes: u64, held: bool) -> Item {
        Item { kind: ItemKind::Segment, time_ms, bytes, held }
    }
    fn clip(time_ms: u64, bytes: u64) -> Item {
        Item { kind: ItemKind::Clip, time_ms, bytes, held: false }
    }

    #[test]
    fn window_drops_old_unheld_segments_only() {
        let now = 1_000_000;
        let items = [seg(now - 130_000, 10, false), seg(now - 130_000, 10, true), seg(now - 10_000, 10, false)];
        assert_eq!(plan(now, &items, &LIMITS, Some(10_000)), vec![(0, Reason::Window)]);
    }

    #[test]
    fn old_clips_age_out() {
        let now = 100_000_000;
        let items = [clip(now - 86_400_001, 10), clip(now - 1000, 10)];
        assert_eq!(plan(now, &items, &LIMITS, None), vec![(0, Reason::Age)]);
    }

    #[test]
    fn quota_takes_oldest_unheld_first_then_held() {
        let now = 1_000_000;
        // 1200 bytes against a quota of 1000: the oldest unheld item (the clip) goes, not the older held
        // segment; that is enough.
        let items = [seg(now - 50, 400, true), clip(now - 40, 300), seg(now - 30, 500, false)];
        assert_eq!(plan(now, &items, &LIMITS, None), vec![(1, Reason::Quota)]);
        // 2100 bytes: both unheld go, then still over → the held one too.
        let items = [seg(now - 50, 1200, true), clip(now - 40, 400), seg(now - 30, 500, false)];
        assert_eq!(plan(now, &items, &LIMITS, None), vec![(1, Reason::Quota), (2, Reason::Quota), (0, Reason::Quota)]);
    }

    #[test]
    fn low_disk_evicts_until_the_watermark_is_met() {
        let now = 1_000_000;
        let items = [seg(now - 3000, 30, false), seg(now - 2000, 30, false), seg(now - 1000, 30, false)];
        // 50 free, 100 wanted: two segments (60 bytes) bring it to 110.
        assert_eq!(plan(now, &items, &LIMITS, Some(50)), vec![(0, Reason::LowDisk), (1, Reason::LowDisk)]);
        // Nothing to do with enough room.
        assert!(plan(now, &items, &LIMITS, Some(500)).is_empty());
    }

    #[test]
    fn rule_evictions_count_towards_the_watermark() {
        let now = 1_000_000;
        let items = [seg(now - 200_000, 60, false), seg(now - 1000, 30, false)];
        // The window rule frees 60 → 110 free: no low-disk eviction needed.
        assert_eq!(plan(now, &items, &LIMITS, Some(50)), vec![(0, Reason::Window)]);
    }

    #[test]
    fn empty_store_with_a_full_disk_is_not_an_error() {
        assert!(plan(5, &[], &LIMITS, Some(0)).is_empty());
    }
}
