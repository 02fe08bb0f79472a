//! What to delete, decided as a pure function of what is stored, what events reference and how full the
//! disk is, so that every rule is unit-tested without touching a disk.
//!
//! Segments are the only stored video; an event references a time range of its camera's segments. Rules, in
//! order:
//! 1. events that ended more than their camera's `event_days` ago are forgotten (`age`);
//! 2. a segment is kept while a remaining event overlaps it, while it is within its camera's rolling window
//!    (the pre-roll of the next event) or within its camera's `continuous_days`; otherwise it goes
//!    (`window`). One event holds at most `max_event_share` of the quota: the first and the last half of
//!    its share (how it started and how it ended); the middle of a longer event is kept only by the
//!    camera's other rules;
//! 3. while the store exceeds its quota (`quota`) or the file system is below its low watermark
//!    (`low_disk`, whoever filled it): the oldest segments go first, across cameras — those no event holds
//!    before those an event holds. A full disk would stop everything, the outbox included; an event that
//!    loses its oldest seconds is the lesser harm. An ended event whose every segment is gone goes with
//!    its last one.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Window,
    Age,
    Quota,
    LowDisk,
}

/// One stored segment, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seg {
    /// Index into the cameras' rules.
    pub camera: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
}

/// One event's reference to its camera's video: `[from_ms, to_ms]`, up to now when `to_ms` is unset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventSpan {
    pub camera: usize,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
    /// It still lasts: it never ages out, and is never forgotten for want of video.
    pub open: bool,
}

/// Per camera rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraRules {
    /// Every segment younger than this is kept (the rolling window, or `continuous_days` when longer).
    pub keep_all_ms: u64,
    /// Events are forgotten this long after they end.
    pub event_max_age_ms: u64,
}

/// Limits of the whole store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    /// Free bytes wanted on the file system.
    pub min_free: u64,
    /// The most one event may hold, as a share of `max_bytes`.
    pub max_event_share: f64,
}

/// What to delete: indexes into the given segments and events, each with its reason, in the order to
/// delete them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub segments: Vec<(usize, Reason)>,
    pub events: Vec<(usize, Reason)>,
}

/// Decides what goes. `segs` must be sorted by start time per camera (the store's order); `other_bytes` is
/// what the store holds besides segments (snapshots, the clip cache); `free` is the file system's free
/// space now, when known.
pub fn plan(now_ms: u64, segs: &[Seg], events: &[EventSpan], cameras: &[CameraRules], limits: &Limits, other_bytes: u64, free: Option<u64>) -> Plan {
    let mut out = Plan::default();
    let rules = |c: usize| cameras.get(c).copied().unwrap_or(CameraRules { keep_all_ms: 0, event_max_age_ms: 0 });
    let live: Vec<bool> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let aged = !e.open && e.to_ms.is_some_and(|t| now_ms.saturating_sub(t) > rules(e.camera).event_max_age_ms);
            if aged {
                out.events.push((i, Reason::Age));
            }
            !aged
        })
        .collect();
    let share = (limits.max_bytes as f64 * limits.max_event_share) as u64;
    let by_camera = by_camera(segs);
    let overlapping = |e: &EventSpan| overlapping(segs, by_camera.get(e.camera).map(Vec::as_slice).unwrap_or_default(), e, now_ms);
    let mut held = vec![false; segs.len()];
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); segs.len()];
    for (ei, e) in events.iter().enumerate().filter(|(i, _)| live[*i]) {
        for si in capped(&overlapping(e), segs, share) {
            held[si] = true;
            holders[si].push(ei);
        }
    }
    let mut gone = vec![false; segs.len()];
    for (i, s) in segs.iter().enumerate() {
        if !held[i] && now_ms.saturating_sub(s.end_ms) > rules(s.camera).keep_all_ms {
            out.segments.push((i, Reason::Window));
            gone[i] = true;
        }
    }
    let freed: u64 = out.segments.iter().map(|&(i, _)| segs[i].bytes).sum();
    let mut total: u64 = other_bytes + segs.iter().zip(&gone).filter(|(_, g)| !**g).map(|(s, _)| s.bytes).sum::<u64>();
    let mut free = free.map(|f| f.saturating_add(freed));
    let over = |total: u64, free: Option<u64>| {
        if total > limits.max_bytes {
            Some(Reason::Quota)
        } else if free.is_some_and(|f| f < limits.min_free) {
            Some(Reason::LowDisk)
        } else {
            None
        }
    };
    let mut order: Vec<usize> = (0..segs.len()).filter(|&i| !gone[i]).collect();
    order.sort_by_key(|&i| (held[i], segs[i].end_ms));
    let mut last_reason = vec![None; events.len()];
    for i in order {
        let Some(reason) = over(total, free) else { break };
        out.segments.push((i, reason));
        gone[i] = true;
        total -= segs[i].bytes;
        free = free.map(|f| f.saturating_add(segs[i].bytes));
        for &e in &holders[i] {
            last_reason[e] = Some(reason);
        }
    }
    // An ended event whose video was all evicted under pressure has nothing left to show.
    for (ei, e) in events.iter().enumerate() {
        if let Some(reason) = last_reason[ei]
            && !e.open
            && overlapping(e).iter().all(|&si| gone[si])
        {
            out.events.push((ei, reason));
        }
    }
    out
}

/// Per camera, the indexes of its segments in time order.
fn by_camera(segs: &[Seg]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        if out.len() <= s.camera {
            out.resize(s.camera + 1, Vec::new());
        }
        out[s.camera].push(i);
    }
    for v in &mut out {
        v.sort_by_key(|&i| segs[i].start_ms);
    }
    out
}

/// Indexes of the segments (`mine`: one camera's, in time order) that overlap `e`'s span. Segments of a
/// camera do not overlap each other, so both ends are found by binary search: weeks of continuous
/// recording are hundreds of thousands of segments.
fn overlapping(segs: &[Seg], mine: &[usize], e: &EventSpan, now_ms: u64) -> Vec<usize> {
    let to = e.to_ms.unwrap_or(now_ms.max(e.from_ms));
    let a = mine.partition_point(|&i| segs[i].end_ms <= e.from_ms);
    let b = mine.partition_point(|&i| segs[i].start_ms < to);
    mine[a..b.max(a)].to_vec()
}

/// The segments one event holds: all of them when they fit in `share` bytes, else the oldest and the
/// newest, half of the share each.
fn capped(mine: &[usize], segs: &[Seg], share: u64) -> Vec<usize> {
    let total: u64 = mine.iter().map(|&i| segs[i].bytes).sum();
    if total <= share {
        return mine.to_vec();
    }
    let half = share / 2;
    let take = |it: &mut dyn Iterator<Item = &usize>| {
        let mut sum = 0;
        it.take_while(|&&i| {
            sum += segs[i].bytes;
            sum <= half
        })
        .copied()
        .collect::<Vec<_>>()
    };
    let mut head = take(&mut mine.iter());
    let tail = take(&mut mine.iter().rev());
    for i in tail {
        if !head.contains(&i) {
            head.push(i);
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_bytes: 1000, min_free: 100, max_event_share: 1.0 };
    const NOW: u64 = 10_000_000_000;
    /// Camera 0: a 120 s window, events kept a day; camera 1: continuous for 1000 s.
    const RULES: [CameraRules; 2] =
        [CameraRules { keep_all_ms: 120_000, event_max_age_ms: 86_400_000 }, CameraRules { keep_all_ms: 1_000_000, event_max_age_ms: 86_400_000 }];

    /// A 2 s segment of `camera` ending `age_s` seconds ago.
    fn seg(camera: usize, age_s: u64, bytes: u64) -> Seg {
        Seg { camera, start_ms: NOW - age_s * 1000 - 2000, end_ms: NOW - age_s * 1000, bytes }
    }
    fn event(camera: usize, from_age_s: u64, to_age_s: Option<u64>) -> EventSpan {
        EventSpan { camera, from_ms: NOW - from_age_s * 1000, to_ms: to_age_s.map(|a| NOW - a * 1000), open: to_age_s.is_none() }
    }
    fn run(segs: &[Seg], events: &[EventSpan], limits: &Limits, free: Option<u64>) -> Plan {
        plan(NOW, segs, events, &RULES, limits, 0, free)
    }

    #[test]
    fn segments_outside_every_rule_expire() {
        // Camera 0 keeps 120 s; camera 1 keeps 1000 s continuously.
        let segs = [seg(0, 130, 10), seg(0, 10, 10), seg(1, 500, 10), seg(1, 1500, 10)];
        assert_eq!(run(&segs, &[], &LIMITS, None).segments, vec![(0, Reason::Window), (3, Reason::Window)]);
    }

    #[test]
    fn an_event_keeps_the_segments_it_overlaps_and_no_others() {
        // Segments end 300, 298, 296, 294 s ago (each 2 s long); the event spans 299..295 s ago.
        let segs = [seg(0, 300, 10), seg(0, 298, 10), seg(0, 296, 10), seg(0, 294, 10), seg(0, 292, 10)];
        let p = run(&segs, &[event(0, 299, Some(295))], &LIMITS, None);
        assert_eq!(p.segments, vec![(0, Reason::Window), (4, Reason::Window)], "the event holds the middle three");
        assert!(p.events.is_empty());
        // Overlapping events share segments: both keep theirs, nothing is counted twice.
        let p = run(&segs, &[event(0, 299, Some(295)), event(0, 297, Some(293))], &LIMITS, None);
        assert_eq!(p.segments, vec![(0, Reason::Window)]);
    }

    #[test]
    fn an_open_event_holds_up_to_now() {
        let segs = [seg(0, 300, 10), seg(0, 200, 10), seg(0, 150, 10)];
        assert_eq!(run(&segs, &[event(0, 250, None)], &LIMITS, None).segments, vec![(0, Reason::Window)]);
    }

    #[test]
    fn a_stationary_event_holds_only_up_to_when_it_stopped() {
        // Parked since 600 s ago and still there: it holds its first seconds (its span ends 590 s ago),
        // not the ten minutes since, and it never ages out.
        let segs = [seg(0, 598, 10), seg(0, 300, 10), seg(0, 150, 10)];
        let parked = EventSpan { camera: 0, from_ms: NOW - 605_000, to_ms: Some(NOW - 590_000), open: true };
        let p = run(&segs, &[parked], &LIMITS, None);
        assert_eq!(p.segments, vec![(1, Reason::Window), (2, Reason::Window)]);
        assert!(p.events.is_empty());
    }

    #[test]
    fn old_events_are_forgotten_and_free_their_video() {
        let day = 86_400;
        let segs = [seg(0, day + 600, 10)];
        let p = run(&segs, &[event(0, day + 601, Some(day + 1))], &LIMITS, None);
        assert_eq!(p.events, vec![(0, Reason::Age)]);
        assert_eq!(p.segments, vec![(0, Reason::Window)]);
        // An open event never ages out.
        let p = run(&segs, &[event(0, day + 601, None)], &LIMITS, None);
        assert!(p.events.is_empty() && p.segments.is_empty(), "{p:?}");
    }

    #[test]
    fn pressure_evicts_the_oldest_across_cameras_unheld_first() {
        // 1200 bytes against 1000: camera 1's continuous segment is older than camera 0's held one, and
        // both are older than camera 0's window segment. Unheld go first, oldest first.
        let segs = [seg(0, 600, 400), seg(0, 5, 300), seg(1, 700, 500)];
        let p = run(&segs, &[event(0, 603, Some(599))], &LIMITS, None);
        assert_eq!(p.segments, vec![(2, Reason::Quota)]);
        // 900 + 400 + 500 bytes of video and 300 of snapshots: both unheld go, then the held one — and its
        // ended event goes with it.
        let segs = [seg(0, 600, 900), seg(0, 5, 400), seg(1, 700, 500)];
        let p = plan(NOW, &segs, &[event(0, 603, Some(599))], &RULES, &LIMITS, 300, None);
        assert_eq!(p.segments, vec![(2, Reason::Quota), (1, Reason::Quota), (0, Reason::Quota)]);
        assert_eq!(p.events, vec![(0, Reason::Quota)]);
    }

    #[test]
    fn one_long_event_holds_at_most_its_share_its_start_and_its_end() {
        // Ten 100-byte segments under one ended event, share 40 % of 1000 = 400: the first two and the last
        // two stay held; the middle six, outside the window, expire.
        let segs: Vec<Seg> = (0..10).map(|i| seg(0, 1000 - i * 2, 100)).collect();
        let limits = Limits { max_event_share: 0.4, ..LIMITS };
        let p = run(&segs, &[event(0, 1003, Some(981))], &limits, None);
        let dropped: Vec<usize> = p.segments.iter().map(|&(i, _)| i).collect();
        assert_eq!(dropped, [2, 3, 4, 5, 6, 7]);
        assert!(p.segments.iter().all(|&(_, r)| r == Reason::Window));
    }

    #[test]
    fn low_disk_evicts_until_the_watermark_is_met_and_counts_other_bytes() {
        let segs = [seg(0, 30, 30), seg(0, 20, 30), seg(0, 10, 30)];
        // 50 free, 100 wanted: two segments (60 bytes) bring it to 110.
        assert_eq!(run(&segs, &[], &LIMITS, Some(50)).segments, vec![(0, Reason::LowDisk), (1, Reason::LowDisk)]);
        assert!(run(&segs, &[], &LIMITS, Some(500)).segments.is_empty());
        // Snapshots and the clip cache count towards the quota.
        let p = plan(NOW, &segs, &[], &RULES, &LIMITS, 950, None);
        assert_eq!(p.segments, vec![(0, Reason::Quota), (1, Reason::Quota)]);
    }

    #[test]
    fn rule_evictions_count_towards_the_watermark() {
        let segs = [seg(0, 200, 60), seg(0, 1, 30)];
        // The window rule frees 60 → 110 free: no low-disk eviction needed.
        assert_eq!(run(&segs, &[], &LIMITS, Some(50)).segments, vec![(0, Reason::Window)]);
    }

    #[test]
    fn empty_store_with_a_full_disk_is_not_an_error() {
        assert_eq!(run(&[], &[event(0, 5, None)], &LIMITS, Some(0)), Plan::default());
    }
}
