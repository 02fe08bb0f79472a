//! Tracking: detections of successive frames → objects with stable ids → `new` / `update` / `end` events.
//!
//! Greedy IoU matching per class (SORT without the motion model: at 2–10 detections per second on fixed
//! cameras the last box is a good enough prediction). An object becomes an event after `min_hits`
//! consecutive frames, so a one-frame false positive never reaches the broker; it ends when it has not been
//! seen for `end_after_s` (time, not frames, so it holds when the frame rate drops). Updates are throttled:
//! sent on a significant change (score, movement, zones) or as a heartbeat, never more often than
//! `update_min_interval_s`. An object whose box stays put for `stationary_after_s` (a parked car) becomes
//! `stationary`: one update says so and heartbeats stop; moving again ends its event and starts a new one
//! (new activity), so a car parked all day is two short events, not one endless one. Pure logic: time comes
//! from the frames.

pub mod config;
pub mod zone;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use config::{TrackerConfig, Zone};

use crate::capture::FrameInfo;
use crate::detect::Detection;
use crate::detect::decode::iou;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    New,
    Update,
    End,
}

/// The best sighting of an object so far: the frame to take a snapshot from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BestFrame {
    pub seq: u64,
    pub wall: SystemTime,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// One event about one tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackEvent {
    pub kind: EventKind,
    pub camera: usize,
    /// Per-camera track id, stable for the object's life.
    pub track_id: u64,
    pub class_id: u16,
    pub label: Arc<str>,
    /// Score of the latest sighting, and the best so far.
    pub score: f32,
    pub top_score: f32,
    /// Latest box, in source pixels.
    pub bbox: [f32; 4],
    /// Picture size the box refers to.
    pub frame_size: (u32, u32),
    pub start: SystemTime,
    /// Last time the object was seen (for `end`: when it left).
    pub last_seen: SystemTime,
    /// The zones the object's ground point is in (indices into the config's zones).
    pub zones: Vec<usize>,
    pub best: BestFrame,
    /// When a stationary object stopped moving (`None` while it moves).
    pub stationary_since: Option<SystemTime>,
}

/// A box overlapping where the object was by at least this much has not moved.
pub const STILL_IOU: f32 = 0.9;
/// A stationary object has moved again only once its box overlaps where it stood by less than this: the
/// boxes of a parked car jitter by more than 0.9 allows (light, people passing in front), and each jitter
/// would otherwise end its event and start a new one.
pub const MOVE_IOU: f32 = 0.7;

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    class_id: u16,
    label: Arc<str>,
    bbox: [f32; 4],
    score: f32,
    top_score: f32,
    hits: u32,
    start: SystemTime,
    last_seen: SystemTime,
    /// Whether `new` was sent.
    confirmed: bool,
    zones: Vec<usize>,
    best: BestFrame,
    /// What the last message said, to decide whether an update is worth sending.
    sent_at: SystemTime,
    sent_bbox: [f32; 4],
    sent_score: f32,
    sent_zones: Vec<usize>,
    /// Seen in the frame being processed.
    matched: bool,
    /// Picture size of the latest sighting.
    size: (u32, u32),
    /// Where the object last moved to, and when: it stands still while its box stays within [`STILL_IOU`]
    /// of this one.
    anchor: [f32; 4],
    anchor_at: SystemTime,
    /// The same with [`MOVE_IOU`]: where it settled, and since when (detections jitter, so the strict
    /// anchor moves now and then while the object does not). A stationary object stopped then, and moves
    /// again when it leaves this box.
    settled: [f32; 4],
    settled_at: SystemTime,
    /// It left its settled box in the frame being processed.
    moved: bool,
    /// Since when it has stood still, once it is stationary.
    still_since: Option<SystemTime>,
}

/// Where and when a confirmed object left, for the trigger cooldown.
#[derive(Debug, Clone, Copy)]
struct Ended {
    class_id: u16,
    bbox: [f32; 4],
    at: SystemTime,
}

/// Tracks the objects of one camera.
pub struct Tracker {
    cfg: TrackerConfig,
    camera: usize,
    tracks: Vec<Track>,
    /// Recently ended objects, kept for `cooldown_s`.
    ended: Vec<Ended>,
    next_id: u64,
    events: Vec<TrackEvent>,
    pairs: Vec<(f32, usize, usize)>,
    taken: Vec<bool>,
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    a.duration_since(b).unwrap_or(Duration::ZERO).as_secs_f64()
}

impl Tracker {
    pub fn new(camera: usize, cfg: TrackerConfig) -> Self {
        Self { cfg, camera, tracks: Vec::new(), ended: Vec::new(), next_id: 1, events: Vec::new(), pairs: Vec::new(), taken: Vec::new() }
    }

    /// Number of objects currently tracked (confirmed or not).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Feeds one processed frame (with all its detections, possibly none); returns the events it caused.
    pub fn update(&mut self, frame: &FrameInfo, detections: &[Detection]) -> &[TrackEvent] {
        self.events.clear();
        let now = frame.wall;
        let size = (frame.source_width.max(1), frame.source_height.max(1));
        let area = size.0 as f32 * size.1 as f32;

        // Detections worth tracking: big enough, outside every mask.
        let keep = |d: &Detection| {
            let b = d.bbox;
            let a = (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
            let centre = [(b[0] + b[2]) / 2.0 / size.0 as f32, (b[1] + b[3]) / 2.0 / size.1 as f32];
            a / area >= self.cfg.min_area && !self.cfg.masks.iter().any(|m| zone::contains(m, centre))
        };

        // Greedy matching, best overlaps first, same class only.
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                if d.class_id == t.class_id && keep(d) {
                    let o = iou(&t.bbox, &d.bbox);
                    if o >= self.cfg.iou_match {
                        self.pairs.push((o, ti, di));
                    }
                }
            }
        }
        self.pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        self.taken.clear();
        self.taken.resize(detections.len(), false);
        for t in &mut self.tracks {
            t.matched = false;
        }
        for &(_, ti, di) in &self.pairs {
            if self.tracks[ti].matched || self.taken[di] {
                continue;
            }
            self.taken[di] = true;
            let t = &mut self.tracks[ti];
            t.matched = true;
            observe(t, &detections[di], frame, &self.cfg, size);
        }

        // New objects.
        for (di, d) in detections.iter().enumerate() {
            if self.taken[di] || !keep(d) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let mut t = Track {
                id,
                class_id: d.class_id,
                label: d.label.clone(),
                bbox: d.bbox,
                score: d.score,
                top_score: 0.0,
                hits: 0,
                start: now,
                last_seen: now,
                confirmed: false,
                zones: Vec::new(),
                best: BestFrame { seq: frame.seq, wall: now, score: d.score, bbox: d.bbox },
                sent_at: now,
                sent_bbox: d.bbox,
                sent_score: d.score,
                sent_zones: Vec::new(),
                matched: true,
                size,
                anchor: d.bbox,
                anchor_at: now,
                settled: d.bbox,
                settled_at: now,
                moved: false,
                still_since: None,
            };
            observe(&mut t, d, frame, &self.cfg, size);
            self.tracks.push(t);
        }
        let cooldown = self.cfg.cooldown_s;
        self.ended.retain(|e| secs(now, e.at) < cooldown);

        // Decide what to say about each track.
        let (camera, cfg, ended) = (self.camera, &self.cfg, &mut self.ended);
        let mut i = 0;
        while i < self.tracks.len() {
            let t = &mut self.tracks[i];
            if !t.matched {
                // Unconfirmed objects must be seen in consecutive frames; confirmed ones may miss a few.
                let gone = !t.confirmed || secs(now, t.last_seen) > cfg.end_after_s;
                if gone {
                    let t = self.tracks.swap_remove(i);
                    if t.confirmed {
                        self.events.push(event(EventKind::End, camera, &t));
                        if cfg.cooldown_s > 0.0 {
                            ended.push(Ended { class_id: t.class_id, bbox: t.bbox, at: now });
                        }
                    }
                    continue;
                }
            } else if !t.confirmed {
                let in_zone = !cfg.require_zone || !t.zones.is_empty();
                // Within the cooldown, an object where a same-class one just left stays silent: one object
                // flickering at the edge of detection cannot raise a stream of new/end events.
                let cooling = ended.iter().any(|e| e.class_id == t.class_id && iou(&e.bbox, &t.bbox) >= cfg.iou_match);
                if t.hits >= cfg.min_hits && in_zone && !cooling {
                    t.confirmed = true;
                    mark_sent(t, now);
                    self.events.push(event(EventKind::New, camera, t));
                }
            } else if t.still_since.is_some() {
                if t.moved {
                    // New activity: the parked object's event ends, and its moving on is a new one.
                    self.events.push(event(EventKind::End, camera, t));
                    restart(t, self.next_id, frame);
                    self.next_id += 1;
                    mark_sent(t, now);
                    self.events.push(event(EventKind::New, camera, t));
                }
            } else if cfg.stationary_after_s > 0.0 && secs(now, t.anchor_at) >= cfg.stationary_after_s {
                t.still_since = Some(t.settled_at);
                mark_sent(t, now);
                self.events.push(event(EventKind::Update, camera, t));
            } else if significant(t, now, cfg) {
                mark_sent(t, now);
                self.events.push(event(EventKind::Update, camera, t));
            }
            i += 1;
        }
        &self.events
    }

    /// The events of the last [`Self::update`] or [`Self::finish`].
    pub fn events(&self) -> &[TrackEvent] {
        &self.events
    }

    /// Tracks whose best sighting so far is in frame `seq` (normally the frame just processed), with that
    /// box: the snapshot of each should be taken from this frame.
    pub fn best_in_frame(&self, seq: u64) -> impl Iterator<Item = (u64, [f32; 4])> + '_ {
        self.tracks.iter().filter(move |t| t.best.seq == seq).map(|t| (t.id, t.best.bbox))
    }

    /// Whether `track_id` is still tracked.
    pub fn has(&self, track_id: u64) -> bool {
        self.tracks.iter().any(|t| t.id == track_id)
    }

    /// Ends every confirmed object now (shutdown, camera removed): their `end` events.
    pub fn finish(&mut self) -> &[TrackEvent] {
        self.events.clear();
        for t in self.tracks.drain(..) {
            if t.confirmed {
                self.events.push(event(EventKind::End, self.camera, &t));
            }
        }
        self.ended.clear();
        &self.events
    }
}

fn observe(t: &mut Track, d: &Detection, frame: &FrameInfo, cfg: &TrackerConfig, size: (u32, u32)) {
    t.bbox = d.bbox;
    t.score = d.score;
    t.hits += 1;
    t.last_seen = frame.wall;
    t.size = size;
    if d.score > t.top_score {
        t.top_score = d.score;
        t.best = BestFrame { seq: frame.seq, wall: frame.wall, score: d.score, bbox: d.bbox };
    }
    if iou(&t.anchor, &d.bbox) < STILL_IOU {
        (t.anchor, t.anchor_at) = (d.bbox, frame.wall);
    }
    t.moved = iou(&t.settled, &d.bbox) < MOVE_IOU;
    if t.moved {
        (t.settled, t.settled_at) = (d.bbox, frame.wall);
        (t.anchor, t.anchor_at) = (d.bbox, frame.wall);
    }
    let ground = [(d.bbox[0] + d.bbox[2]) / 2.0 / size.0 as f32, d.bbox[3] / size.1 as f32];
    t.zones.clear();
    t.zones.extend(cfg.zones.iter().enumerate().filter(|(_, z)| zone::contains(&z.polygon, ground)).map(|(i, _)| i));
}

fn significant(t: &Track, now: SystemTime, cfg: &TrackerConfig) -> bool {
    let since = secs(now, t.sent_at);
    if since < cfg.update_min_interval_s {
        return false;
    }
    if since >= cfg.update_heartbeat_s || t.zones != t.sent_zones || (t.score - t.sent_score).abs() >= cfg.score_delta {
        return true;
    }
    let (a, b) = (&t.bbox, &t.sent_bbox);
    let moved = (((a[0] + a[2]) - (b[0] + b[2])) / 2.0).hypot(((a[1] + a[3]) - (b[1] + b[3])) / 2.0);
    let size = (b[2] - b[0]).max(b[3] - b[1]).max(1.0);
    moved >= cfg.move_fraction * size
}

/// A stationary object that moves again: the same object under a new id, its event starting now.
fn restart(t: &mut Track, id: u64, frame: &FrameInfo) {
    t.id = id;
    t.start = frame.wall;
    t.still_since = None;
    t.top_score = t.score;
    t.best = BestFrame { seq: frame.seq, wall: frame.wall, score: t.score, bbox: t.bbox };
}

fn mark_sent(t: &mut Track, now: SystemTime) {
    t.sent_at = now;
    t.sent_bbox = t.bbox;
    t.sent_score = t.score;
    t.sent_zones.clone_from(&t.zones);
}

fn event(kind: EventKind, camera: usize, t: &Track) -> TrackEvent {
    TrackEvent {
        kind,
        camera,
        track_id: t.id,
        class_id: t.class_id,
        label: t.label.clone(),
        score: t.score,
        top_score: t.top_score,
        bbox: t.bbox,
        frame_size: t.size,
        start: t.start,
        last_seen: t.last_seen,
        zones: t.zones.clone(),
        best: t.best,
        stationary_since: t.still_since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const W: u32 = 1000;
    const H: u32 = 1000;

    fn frame(seq: u64, t: f64) -> FrameInfo {
        FrameInfo { camera: 0, seq, pts: None, wall: UNIX_EPOCH + Duration::from_secs_f64(1_000_000.0 + t), source_width: W, source_height: H }
    }

    fn det(class_id: u16, label: &str, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { class_id, label: Arc::from(label), score, bbox }
    }

    fn person(x: f32, score: f32) -> Detection {
        det(0, "person", score, [x, 400.0, x + 100.0, 700.0])
    }

    /// Runs frames at `fps` from t = 0, each with the detections `at(i)` gives; collects every event.
    fn run(tracker: &mut Tracker, frames: usize, fps: f64, at: impl Fn(usize) -> Vec<Detection>) -> Vec<TrackEvent> {
        let mut out = Vec::new();
        for i in 0..frames {
            out.extend_from_slice(tracker.update(&frame(i as u64, i as f64 / fps), &at(i)));
        }
        out
    }

    fn kinds(events: &[TrackEvent]) -> Vec<(EventKind, u64)> {
        events.iter().map(|e| (e.kind, e.track_id)).collect()
    }

    #[test]
    fn a_one_frame_false_positive_raises_nothing() {
        let mut t = Tracker::new(0, TrackerConfig::default());
        let events = run(&mut t, 20, 5.0, |i| if i == 3 { vec![person(100.0, 0.9)] } else { vec![] });
        assert!(events.is_empty(), "{events:?}");
        assert!(t.is_empty());
    }

    #[test]
    fn an_object_walking_through_is_one_event() {
        let mut t = Tracker::new(0, TrackerConfig::default());
        // Seen for 4 s at 5 fps, walking 10 px per frame, then gone.
        let events = run(&mut t, 50, 5.0, |i| if i < 20 { vec![person(100.0 + 10.0 * i as f32, 0.8)] } else { vec![] });
        let k = kinds(&events);
        assert_eq!(k.first(), Some(&(EventKind::New, 1)));
        assert_eq!(k.last(), Some(&(EventKind::End, 1)));
        assert!(k.iter().all(|(_, id)| *id == 1), "one object, one id: {k:?}");
        let new = &events[0];
        assert_eq!(new.label.as_ref(), "person");
        // New after min_hits (3) frames; start is the first sighting.
        assert_eq!(new.best.seq, 0);
        assert_eq!(secs(new.start, frame(0, 0.0).wall), 0.0);
        let end = events.last().unwrap();
        assert_eq!(secs(end.last_seen, frame(0, 0.0).wall), 19.0 / 5.0);
        assert_eq!(end.bbox, person(290.0, 0.8).bbox);
        assert_eq!(end.frame_size, (W, H));
    }

    fn car(x: f32) -> Detection {
        det(2, "car", 0.9, [x, 500.0, x + 300.0, 700.0])
    }

    #[test]
    fn a_parked_car_becomes_stationary_goes_quiet_and_moving_on_is_new_activity() {
        let cfg = TrackerConfig { stationary_after_s: 30.0, update_heartbeat_s: 10.0, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg);
        // Parked for 15 minutes at 2 fps (a pixel of jitter), then it drives off, 40 px a frame.
        let parked = 15 * 60 * 2;
        let events =
            run(&mut t, parked + 20, 2.0, |i| if i < parked { vec![car(100.0 + (i % 2) as f32)] } else { vec![car(100.0 + 40.0 * (i - parked) as f32)] });
        let k: Vec<(EventKind, u64, bool)> = events.iter().map(|e| (e.kind, e.track_id, e.stationary_since.is_some())).collect();
        // new; heartbeats at 10 and 20 s; the one update saying it is stationary; nothing for 15 minutes;
        // then its end, and a new event for the car moving on (and its updates as it drives).
        let (new_at, still_at) = (events[0].last_seen, events[3].last_seen);
        assert!(k[6..].iter().all(|&e| e == (EventKind::Update, 2, false)), "{k:?}");
        assert_eq!(
            k[..6],
            [
                (EventKind::New, 1, false),
                (EventKind::Update, 1, false),
                (EventKind::Update, 1, false),
                (EventKind::Update, 1, true),
                (EventKind::End, 1, true),
                (EventKind::New, 2, false)
            ]
        );
        assert!((secs(still_at, new_at) - 29.0).abs() <= 1.0, "stationary after 30 s of standing still: {}", secs(still_at, new_at));
        assert_eq!(events[4].stationary_since, Some(frame(0, 0.0).wall), "it stood still from its first frame");
        assert_eq!(events[5].start, events[4].last_seen, "the new activity starts when it moved");
        // Leaving while stationary (no longer detected) ends it too, still saying since when it stood.
        let mut t = Tracker::new(0, TrackerConfig { stationary_after_s: 5.0, ..TrackerConfig::default() });
        let events = run(&mut t, 40, 2.0, |i| if i < 30 { vec![car(100.0)] } else { vec![] });
        assert_eq!(kinds(&events), [(EventKind::New, 1), (EventKind::Update, 1), (EventKind::End, 1)]);
        assert_eq!(events[2].stationary_since, Some(frame(0, 0.0).wall));
    }

    #[test]
    fn stationary_detection_can_be_turned_off() {
        let mut t = Tracker::new(0, TrackerConfig { stationary_after_s: 0.0, update_heartbeat_s: 10.0, ..TrackerConfig::default() });
        let events = run(&mut t, 200, 2.0, |_| vec![car(100.0)]);
        assert!(events.iter().all(|e| e.stationary_since.is_none()));
        assert_eq!(events.iter().filter(|e| e.kind == EventKind::Update).count(), 9, "heartbeats every 10 s for 100 s");
    }

    #[test]
    fn updates_are_throttled_and_sent_on_change() {
        let cfg = TrackerConfig { update_heartbeat_s: 5.0, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg);
        // Standing still with jitter for 12 s at 10 fps: only heartbeats, never per frame.
        let still = run(&mut t, 120, 10.0, |i| vec![person(100.0 + (i % 3) as f32, 0.8 + (i % 2) as f32 * 0.02)]);
        let updates = still.iter().filter(|e| e.kind == EventKind::Update).count();
        assert_eq!(updates, 2, "heartbeats at ~5 s and ~10 s: {:?}", kinds(&still));
        // Running: moves half its size every frame, but at most one update per second.
        let mut t = Tracker::new(0, TrackerConfig::default());
        let moving = run(&mut t, 50, 10.0, |i| vec![det(0, "person", 0.8, [10.0 * i as f32, 0.0, 10.0 * i as f32 + 20.0, 20.0])]);
        let updates: Vec<_> = moving.iter().filter(|e| e.kind == EventKind::Update).collect();
        assert!((3..=5).contains(&updates.len()), "{} updates in 5 s", updates.len());
        for w in updates.windows(2) {
            assert!(secs(w[1].last_seen, w[0].last_seen) >= 1.0);
        }
        // A big score change is significant too.
        let mut t = Tracker::new(0, TrackerConfig::default());
        let score = run(&mut t, 30, 10.0, |i| vec![person(100.0, if i < 15 { 0.5 } else { 0.9 })]);
        let up: Vec<_> = score.iter().filter(|e| e.kind == EventKind::Update).collect();
        assert_eq!(up.len(), 1);
        assert_eq!((up[0].score, up[0].top_score), (0.9, 0.9));
    }

    #[test]
    fn objects_of_other_classes_and_places_are_separate() {
        let mut t = Tracker::new(0, TrackerConfig::default());
        let events = run(&mut t, 10, 5.0, |_| vec![person(100.0, 0.8), det(1, "bicycle", 0.7, [100.0, 450.0, 200.0, 700.0]), person(600.0, 0.7)]);
        let new: Vec<_> = events.iter().filter(|e| e.kind == EventKind::New).map(|e| (e.track_id, e.label.to_string())).collect();
        assert_eq!(new.len(), 3, "{new:?}");
        let mut ids: Vec<_> = new.iter().map(|n| n.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn zones_masks_and_minimum_area() {
        let zone = Zone { name: "door".into(), polygon: vec![[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]] };
        let cfg =
            TrackerConfig { zones: vec![zone], masks: vec![vec![[0.0, 0.0], [0.3, 0.0], [0.3, 0.3], [0.0, 0.3]]], min_area: 0.001, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg.clone());
        // Walks from x = 100 into the zone (ground point x > 500) after a while.
        let events = run(&mut t, 40, 5.0, |i| vec![person(100.0 + 20.0 * i as f32, 0.8)]);
        assert!(events[0].zones.is_empty());
        let entered = events.iter().find(|e| e.kind == EventKind::Update && e.zones == vec![0]).expect("entering the zone is an update");
        assert!((entered.bbox[0] + entered.bbox[2]) / 2.0 >= 500.0);
        // Inside the mask, or too small: ignored.
        let mut t = Tracker::new(0, cfg.clone());
        assert!(
            run(&mut t, 10, 5.0, |_| vec![det(0, "person", 0.9, [100.0, 100.0, 200.0, 200.0]), det(0, "person", 0.9, [800.0, 800.0, 820.0, 820.0])]).is_empty()
        );
        // require_zone: an object outside every zone stays silent until it enters one.
        let mut t = Tracker::new(0, TrackerConfig { require_zone: true, ..cfg });
        let events = run(&mut t, 40, 5.0, |i| vec![person(100.0 + 20.0 * i as f32, 0.8)]);
        assert_eq!(events[0].kind, EventKind::New);
        assert_eq!(events[0].zones, vec![0]);
    }

    #[test]
    fn cooldown_stops_new_end_flapping() {
        let cfg = TrackerConfig { end_after_s: 0.5, cooldown_s: 5.0, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg.clone());
        // Visible 2 s, hidden 1 s, visible again for 8 s, in the same place.
        let seen = |i: usize| if !(10..15).contains(&i) { vec![person(100.0, 0.8)] } else { vec![] };
        let events = run(&mut t, 55, 5.0, seen);
        let k: Vec<_> = events.iter().filter(|e| e.kind != EventKind::Update).map(|e| (e.kind, e.track_id, e.last_seen)).collect();
        assert_eq!(k.len(), 3, "{k:?}");
        assert_eq!((k[0].0, k[1].0, k[2].0), (EventKind::New, EventKind::End, EventKind::New));
        // The second `new` waits for the cooldown after the end (ended at ~2.6 s → not before ~7.6 s).
        assert!(secs(k[2].2, k[1].2) >= 5.0 - 1e-6, "{k:?}");
        // Without a cooldown it comes back at once.
        let mut t = Tracker::new(0, TrackerConfig { cooldown_s: 0.0, ..cfg });
        let events = run(&mut t, 55, 5.0, seen);
        let second_new = events.iter().filter(|e| e.kind == EventKind::New).nth(1).unwrap();
        assert!(secs(second_new.last_seen, frame(0, 0.0).wall) < 4.0);
    }

    #[test]
    fn finish_ends_every_confirmed_object() {
        let mut t = Tracker::new(0, TrackerConfig::default());
        run(&mut t, 5, 5.0, |i| if i < 5 { vec![person(100.0, 0.8), person(600.0, 0.8)] } else { vec![] });
        t.update(&frame(5, 1.0), &[person(100.0, 0.8), person(600.0, 0.8), person(900.0, 0.8)]);
        let ends = t.finish();
        assert_eq!(ends.len(), 2, "the unconfirmed third object raises nothing");
        assert!(ends.iter().all(|e| e.kind == EventKind::End));
        assert!(t.is_empty());
    }
}
