//! Tracking: detections of successive frames → objects with stable ids → `new` / `update` / `end` events.
//!
//! Each track carries a constant-velocity Kalman filter ([`kalman`]): at every frame the tracks are moved
//! to the frame's time, and detections are matched against where each track is predicted to be, not where
//! it was last seen — so a car crossing the picture in two seconds, whose consecutive boxes barely overlap,
//! stays one object, and a frame dropped while the detector was busy is a longer step, not a lost track.
//! Association is two-stage, like ByteTrack: detections at or above the camera's `min_score` are matched
//! first (and only they start tracks); weaker ones (down to `low_score`) then continue the tracks still
//! unmatched — a walker half hidden behind a post scores low but is the same walker. Pairs are gated and
//! costed in [`assoc`] and taken greedily, cheapest first. Classes of one group (car, truck, bus,
//! motorbike by default) match each other, so a car the model calls a truck for a frame stays one object;
//! its label is the class with the highest summed score over its sightings.
//!
//! An object becomes an event after `min_hits` sightings that each landed close to where its motion so far
//! predicted it (a sighting further off, though within the gate, continues it but does not vouch for it:
//! in a crowd seen at 2 fps it is as often another walker who stepped in); while it is not yet one
//! (tentative), it survives `tentative_misses` frames without a sighting — but only one when that leaves it
//! unseen for longer than [`TENTATIVE_GAP_S`] — so a single missed detection does not restart it, and a
//! one-frame false positive never reaches the broker. A confirmed object ends when it has not been seen
//! for `end_after_s` (time, not frames, so it holds when the frame rate drops). Updates are throttled:
//! sent on a significant change (score, movement, zones) or as a heartbeat, never more often than
//! `update_min_interval_s`. An object whose box stays put for `stationary_after_s` (a parked car) becomes
//! `stationary`: one update says so and heartbeats stop; moving again ends its event and starts a new one
//! (new activity), so a car parked all day is two short events, not one endless one. Masks and zones both
//! test the box's bottom centre (where the object stands). Pure logic: time comes from the frames.

pub mod assoc;
pub mod config;
pub mod kalman;
pub mod zone;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use config::{Direction, Line, TrackerConfig, Zone};

use crate::capture::FrameInfo;
use crate::detect::Detection;
use crate::detect::decode::iou;
use kalman::BoxFilter;

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
    /// The counting lines it crossed, in order (the latest [`MAX_CROSSINGS`]).
    pub crossings: Vec<Crossing>,
    /// The zones it has loitered in (indices into the config's zones).
    pub loitering: Vec<usize>,
}

/// One crossing of a counting line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossing {
    /// Index into the config's lines.
    pub line: usize,
    /// The side it crossed to ([`Direction::Left`] or [`Direction::Right`]).
    pub to: Direction,
    pub at: SystemTime,
}

/// Crossings kept per object: someone pacing across a line all day must not grow its events without end
/// (every crossing is still counted in the metrics).
pub const MAX_CROSSINGS: usize = 16;

/// Where a track stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackState {
    /// Seen fewer than `min_hits` times: not an event yet.
    Tentative,
    /// An event, seen in the latest frame.
    Confirmed,
    /// An event, not seen in the latest frame; it ends after `end_after_s`.
    Lost,
}

/// A track as the latest frame left it (for `perch track` and debugging).
#[derive(Debug, Clone, Serialize)]
pub struct TrackView {
    pub track_id: u64,
    /// The latest sighting's box, or the predicted one for a track not seen in this frame.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub label: Arc<str>,
    pub score: f32,
    pub state: TrackState,
}

/// A box overlapping where the object was by at least this much has not moved.
pub const STILL_IOU: f32 = 0.9;
/// A stationary object has moved again only once its box overlaps where it stood by less than this: the
/// boxes of a parked car jitter by more than 0.9 allows (light, people passing in front), and each jitter
/// would otherwise end its event and start a new one.
pub const MOVE_IOU: f32 = 0.7;

/// Boxes of two classes of one group overlapping this much are one object seen twice.
const DUPLICATE_IOU: f32 = 0.7;

/// A tentative object unseen for longer than this survives no second missed frame: its speed, guessed from
/// a sighting or two, says little about where it is a second later, and what it finds there is mostly
/// another object (at 2 fps a second miss is a 1 s gap; at 5 fps `tentative_misses` decides). On
/// TUD-Campus at 2 fps (bench/track_eval.sh) identity switches fell from 20 to 15 with it, IDF1 unchanged.
pub const TENTATIVE_GAP_S: f64 = 0.8;

/// Class groups: a class in a configured group matches the group's other classes; a class in no group
/// matches only itself.
type Group = u32;
const UNGROUPED: Group = 1 << 16;

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    group: Group,
    /// Every class the object was seen as, with its summed score: the label is the largest.
    classes: Vec<(u16, Arc<str>, f32)>,
    class_id: u16,
    label: Arc<str>,
    bbox: [f32; 4],
    score: f32,
    top_score: f32,
    /// Sightings that vouched for the object (the first always does; see [`observe`]).
    hits: u32,
    /// Frames since the last sighting.
    misses: u32,
    filter: BoxFilter,
    /// The filter's time, and its box predicted for the frame being processed.
    filter_at: SystemTime,
    predicted: [f32; 4],
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
    /// Ground point of the latest sighting (for line crossings).
    ground: Option<[f32; 2]>,
    crossings: Vec<Crossing>,
    /// Crossings made in all, and how many of them are counted (in the metrics: once it is an event).
    crossed: usize,
    counted: usize,
    /// Since when it has been in each zone it is in; the zones it has loitered in.
    zone_since: Vec<(usize, SystemTime)>,
    loitering: Vec<usize>,
    /// What the last message said about crossings and loitering.
    sent_crossed: usize,
    sent_loitering: usize,
}

/// Where and when a confirmed object left, for the trigger cooldown.
#[derive(Debug, Clone, Copy)]
struct Ended {
    group: Group,
    bbox: [f32; 4],
    at: SystemTime,
}

/// Tracks the objects of one camera.
pub struct Tracker {
    cfg: TrackerConfig,
    camera: usize,
    /// Detections at or above this score are matched first and may start tracks.
    high_score: f32,
    tracks: Vec<Track>,
    /// Recently ended objects, kept for `cooldown_s`.
    ended: Vec<Ended>,
    next_id: u64,
    events: Vec<TrackEvent>,
    /// Reused per frame: candidate pairs, what is taken, the kept detections and their groups.
    pairs: Vec<(f32, usize, usize)>,
    /// How many candidate pairs each track and each detection is in.
    track_pairs: Vec<u16>,
    det_pairs: Vec<u16>,
    tracks_taken: Vec<bool>,
    dets_taken: Vec<bool>,
    kept: Vec<bool>,
    groups: Vec<Group>,
    /// Each class id's label and group, found once from the label (the configured groups list labels; a
    /// model promoted at run time may give a class id another label, so the label is checked).
    class_groups: Vec<Option<(Arc<str>, Group)>>,
    /// Line crossings of objects that are events, made (or confirmed) in the last update.
    new_crossings: Vec<(usize, Direction)>,
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    a.duration_since(b).unwrap_or(Duration::ZERO).as_secs_f64()
}

/// Whether an object is predicted to have walked out of the picture: no part of its predicted box is in it.
/// It is then matched to nothing: whatever box is there is someone else — most often someone entering
/// where it left, who would take its identity (on TUD-Stadtmitte at 2 fps, 325 identity switches without
/// this, 256 with it). Only wholly: a walker leaving at the bottom is seen cut short by the edge while the
/// prediction, at full height, is already half out (testing the centre instead split such walkers in the
/// demo's video).
fn left_the_picture(p: &[f32; 4], size: (u32, u32)) -> bool {
    p[2] <= 0.0 || p[3] <= 0.0 || p[0] >= size.0 as f32 || p[1] >= size.1 as f32
}

/// Bottom centre of a box, as a fraction of the picture: where the object stands.
fn ground(b: &[f32; 4], size: (u32, u32)) -> [f32; 2] {
    [(b[0] + b[2]) / 2.0 / size.0 as f32, b[3] / size.1 as f32]
}

impl Tracker {
    /// `high_score`: the camera's `min_score` (detections below it, down to `low_score`, only continue
    /// tracks).
    pub fn new(camera: usize, cfg: TrackerConfig, high_score: f32) -> Self {
        Self {
            cfg,
            camera,
            high_score,
            tracks: Vec::new(),
            ended: Vec::new(),
            next_id: 1,
            events: Vec::new(),
            pairs: Vec::new(),
            track_pairs: Vec::new(),
            det_pairs: Vec::new(),
            tracks_taken: Vec::new(),
            dets_taken: Vec::new(),
            kept: Vec::new(),
            groups: Vec::new(),
            class_groups: Vec::new(),
            new_crossings: Vec::new(),
        }
    }

    /// Number of objects currently tracked (confirmed or not).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    fn group_of(&mut self, d: &Detection) -> Group {
        let i = usize::from(d.class_id);
        if self.class_groups.len() <= i {
            self.class_groups.resize(i + 1, None);
        }
        match &self.class_groups[i] {
            Some((label, g)) if Arc::ptr_eq(label, &d.label) || *label == d.label => *g,
            _ => {
                let g = self.cfg.groups.iter().position(|g| g.iter().any(|l| **l == *d.label));
                let g = g.map_or(UNGROUPED | Group::from(d.class_id), |i| i as Group);
                self.class_groups[i] = Some((d.label.clone(), g));
                g
            }
        }
    }

    /// Feeds one processed frame (with all its detections, possibly none); returns the events it caused.
    pub fn update(&mut self, frame: &FrameInfo, detections: &[Detection]) -> &[TrackEvent] {
        self.events.clear();
        self.new_crossings.clear();
        let now = frame.wall;
        let size = (frame.source_width.max(1), frame.source_height.max(1));
        self.predict(now);
        self.select(detections, size);

        for t in &mut self.tracks {
            t.matched = false;
        }
        self.tracks_taken.clear();
        self.tracks_taken.resize(self.tracks.len(), false);
        self.dets_taken.clear();
        self.dets_taken.resize(detections.len(), false);
        // Stage 1: confident detections against every track. Stage 2: weak ones against the events still
        // unmatched that were seen in the previous frame (as in ByteTrack: a weak box, too often a false
        // one, neither revives a lost track nor helps a tentative one become an event).
        self.associate(detections, frame, size, true);
        self.associate(detections, frame, size, false);

        // New objects: confident detections nothing claimed.
        for (di, d) in detections.iter().enumerate() {
            if self.dets_taken[di] || !self.kept[di] || d.score < self.high_score {
                continue;
            }
            let t = self.start_track(d, self.groups[di], frame, size);
            self.tracks.push(t);
        }
        let cooldown = self.cfg.cooldown_s;
        self.ended.retain(|e| secs(now, e.at) < cooldown);
        self.decide(frame);
        &self.events
    }

    /// Moves every track's filter to `now` and notes its predicted box.
    fn predict(&mut self, now: SystemTime) {
        for t in &mut self.tracks {
            t.filter.predict(secs(now, t.filter_at) as f32);
            t.filter_at = now;
            t.predicted = t.filter.bbox();
        }
    }

    /// Which detections are worth tracking (big enough, standing outside every mask), and their groups.
    fn select(&mut self, detections: &[Detection], size: (u32, u32)) {
        let area = size.0 as f32 * size.1 as f32;
        self.kept.clear();
        self.groups.clear();
        for d in detections {
            let b = d.bbox;
            let a = (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
            let masked = self.cfg.masks.iter().any(|m| zone::contains(m, ground(&b, size)));
            self.kept.push(a / area >= self.cfg.min_area && d.score >= self.cfg.low_score.min(self.high_score) && !masked);
            let g = self.group_of(d);
            self.groups.push(g);
        }
        // The detector suppresses overlapping boxes per class only: a pickup reported as both a car and a
        // truck is two boxes of one group. The weaker one goes, or it would start an object of its own.
        for i in 0..detections.len() {
            for j in 0..detections.len() {
                let (a, b) = (&detections[i], &detections[j]);
                let weaker = b.score > a.score || (b.score == a.score && j < i);
                if i != j
                    && self.kept[i]
                    && self.kept[j]
                    && self.groups[i] == self.groups[j]
                    && a.class_id != b.class_id
                    && weaker
                    && iou(&a.bbox, &b.bbox) >= DUPLICATE_IOU
                {
                    self.kept[i] = false;
                    break;
                }
            }
        }
    }

    /// One association stage: confident detections against all tracks, or weak ones against the confirmed
    /// tracks left unmatched that were seen last frame.
    fn associate(&mut self, detections: &[Detection], frame: &FrameInfo, size: (u32, u32), confident: bool) {
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            if self.tracks_taken[ti] || (!confident && (t.misses > 0 || !t.confirmed)) || left_the_picture(&t.predicted, size) {
                continue;
            }
            for (di, d) in detections.iter().enumerate() {
                if !self.kept[di] || self.dets_taken[di] || (d.score >= self.high_score) != confident || self.groups[di] != t.group {
                    continue;
                }
                let pair = if confident { assoc::cost } else { assoc::weak_cost };
                if let Some(c) = pair(&t.filter, &t.predicted, &d.bbox, self.cfg.iou_match) {
                    self.pairs.push((c, ti, di));
                }
            }
        }
        self.drop_doubtful_leaps(detections);
        let (tracks, cfg) = (&mut self.tracks, &self.cfg);
        assoc::assign(&mut self.pairs, &mut self.tracks_taken, &mut self.dets_taken, |ti, di| {
            let t = &mut tracks[ti];
            t.matched = true;
            observe(t, &detections[di], frame, cfg, size);
        });
    }

    /// A tentative object that missed a frame has only a sighting or two behind it and a gate widened by
    /// the gap: a detection that does not overlap its prediction is a leap, and in a crowd most such leaps
    /// land on another walker, which then becomes an event under this object's identity (on TUD-Campus at 2
    /// fps, about half of the identity switches). Such a pair stays only when it is the object's one
    /// candidate and the detection's one candidate: a lone fast car still is found again.
    fn drop_doubtful_leaps(&mut self, detections: &[Detection]) {
        // Most frames have no such object: then there is nothing to count.
        if !self.tracks.iter().any(|t| !t.confirmed && t.misses > 0) {
            return;
        }
        self.track_pairs.clear();
        self.track_pairs.resize(self.tracks.len(), 0);
        self.det_pairs.clear();
        self.det_pairs.resize(detections.len(), 0);
        for &(_, ti, di) in &self.pairs {
            self.track_pairs[ti] += 1;
            self.det_pairs[di] += 1;
        }
        let (tracks, track_pairs, det_pairs, iou_match) = (&self.tracks, &self.track_pairs, &self.det_pairs, self.cfg.iou_match);
        self.pairs.retain(|&(_, ti, di)| {
            let t = &tracks[ti];
            let leap = !t.confirmed && t.misses > 0 && iou(&t.predicted, &detections[di].bbox) < iou_match;
            !leap || (track_pairs[ti] == 1 && det_pairs[di] == 1)
        });
    }

    fn start_track(&mut self, d: &Detection, group: Group, frame: &FrameInfo, size: (u32, u32)) -> Track {
        let now = frame.wall;
        let id = self.next_id;
        self.next_id += 1;
        let filter = BoxFilter::new(&d.bbox);
        let mut t = Track {
            id,
            group,
            classes: Vec::new(),
            class_id: d.class_id,
            label: d.label.clone(),
            bbox: d.bbox,
            score: d.score,
            top_score: 0.0,
            hits: 1,
            misses: 0,
            filter,
            filter_at: now,
            predicted: d.bbox,
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
            ground: None,
            crossings: Vec::new(),
            crossed: 0,
            counted: 0,
            zone_since: Vec::new(),
            loitering: Vec::new(),
            sent_crossed: 0,
            sent_loitering: 0,
        };
        // The filter starts at this box: updating it with the same box would count it twice.
        observe_box(&mut t, d, frame, &self.cfg, size);
        t
    }

    /// Decides what to say about each track after a frame's association.
    fn decide(&mut self, frame: &FrameInfo) {
        let now = frame.wall;
        let (camera, cfg, ended) = (self.camera, &self.cfg, &mut self.ended);
        let mut i = 0;
        while i < self.tracks.len() {
            let t = &mut self.tracks[i];
            if t.confirmed {
                count_crossings(t, &mut self.new_crossings);
            }
            if !t.matched {
                t.misses += 1;
                // A tentative object may miss a frame or two; a confirmed one ends after end_after_s.
                let gone = if t.confirmed {
                    secs(now, t.last_seen) > cfg.end_after_s
                } else {
                    t.misses > cfg.tentative_misses || (t.misses > 1 && secs(now, t.last_seen) > TENTATIVE_GAP_S)
                };
                if gone {
                    let t = self.tracks.swap_remove(i);
                    if t.confirmed {
                        self.events.push(event(EventKind::End, camera, &t));
                        if cfg.cooldown_s > 0.0 {
                            ended.push(Ended { group: t.group, bbox: t.bbox, at: now });
                        }
                    }
                    continue;
                }
            } else if !t.confirmed {
                let in_zone = !cfg.require_zone || !t.zones.is_empty();
                // Within the cooldown, an object where a same-group one just left stays silent: one object
                // flickering at the edge of detection cannot raise a stream of new/end events.
                let cooling = ended.iter().any(|e| e.group == t.group && iou(&e.bbox, &t.bbox) >= cfg.iou_match);
                if t.hits >= cfg.min_hits && in_zone && !cooling {
                    t.confirmed = true;
                    count_crossings(t, &mut self.new_crossings);
                    mark_sent(t, now);
                    self.events.push(event(EventKind::New, camera, t));
                }
            } else if t.still_since.is_some() {
                if !t.moved && t.loitering.len() != t.sent_loitering {
                    mark_sent(t, now);
                    self.events.push(event(EventKind::Update, camera, t));
                } else if t.moved {
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
    }

    /// Line crossings counted in the last [`Self::update`]: (line index, side crossed to), each once, for
    /// objects that are events (a tentative object's crossings are counted when it becomes one).
    pub fn crossings(&self) -> &[(usize, Direction)] {
        &self.new_crossings
    }

    /// The events of the last [`Self::update`] or [`Self::finish`].
    pub fn events(&self) -> &[TrackEvent] {
        &self.events
    }

    /// Every track after the last [`Self::update`].
    pub fn tracks(&self) -> impl Iterator<Item = TrackView> + '_ {
        self.tracks.iter().map(|t| TrackView {
            track_id: t.id,
            bbox: if t.matched { t.bbox } else { t.predicted },
            label: t.label.clone(),
            score: t.score,
            state: match (t.confirmed, t.matched) {
                (false, _) => TrackState::Tentative,
                (true, true) => TrackState::Confirmed,
                (true, false) => TrackState::Lost,
            },
        })
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

/// A sighting of a track: the filter learns from it, then everything else. A tentative object's sighting
/// counts toward its becoming an event only when it vouches for the object's motion (see [`assoc::VOUCH`]).
fn observe(t: &mut Track, d: &Detection, frame: &FrameInfo, cfg: &TrackerConfig, size: (u32, u32)) {
    let vouches = t.confirmed || t.filter.distance2(&d.bbox) <= assoc::VOUCH;
    t.filter.update(&d.bbox);
    observe_box(t, d, frame, cfg, size);
    t.hits += u32::from(vouches);
}

fn observe_box(t: &mut Track, d: &Detection, frame: &FrameInfo, cfg: &TrackerConfig, size: (u32, u32)) {
    t.bbox = d.bbox;
    t.score = d.score;
    t.misses = 0;
    t.last_seen = frame.wall;
    t.size = size;
    vote(t, d);
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
    let g = ground(&d.bbox, size);
    t.zones.clear();
    t.zones.extend(cfg.zones.iter().enumerate().filter(|(_, z)| zone::contains(&z.polygon, g)).map(|(i, _)| i));
    if let Some(prev) = t.ground {
        cross(t, cfg, prev, g, frame.wall);
    }
    t.ground = Some(g);
    loiter(t, cfg, frame.wall);
}

/// Notes the counting lines crossed by the move from `prev` to `g`.
fn cross(t: &mut Track, cfg: &TrackerConfig, prev: [f32; 2], g: [f32; 2], at: SystemTime) {
    for (i, l) in cfg.line.iter().enumerate() {
        let Some(to) = zone::crossing(l.from, l.to, prev, g) else { continue };
        if l.direction != Direction::Any && l.direction != to {
            continue;
        }
        if t.crossings.len() == MAX_CROSSINGS {
            t.crossings.remove(0);
        }
        t.crossings.push(Crossing { line: i, to, at });
        t.crossed += 1;
    }
}

/// Keeps when the object entered each zone it is in, and which zones it has loitered in.
fn loiter(t: &mut Track, cfg: &TrackerConfig, now: SystemTime) {
    let zones = &t.zones;
    t.zone_since.retain(|(z, _)| zones.contains(z));
    for &z in zones {
        if !t.zone_since.iter().any(|(s, _)| *s == z) {
            t.zone_since.push((z, now));
        }
    }
    for &(z, since) in &t.zone_since {
        let long = cfg.zones[z].loitering_s.is_some_and(|l| secs(now, since) >= l);
        if long && !t.loitering.contains(&z) {
            t.loitering.push(z);
        }
    }
}

/// Hands the crossings not yet counted to the metrics.
fn count_crossings(t: &mut Track, out: &mut Vec<(usize, Direction)>) {
    let new = t.crossed - t.counted;
    // Those still in the list (all but a flood's oldest).
    let listed = new.min(t.crossings.len());
    out.extend(t.crossings[t.crossings.len() - listed..].iter().map(|c| (c.line, c.to)));
    t.counted = t.crossed;
}

/// Adds a sighting's class to the track's tally; the label is the class with the highest summed score.
fn vote(t: &mut Track, d: &Detection) {
    match t.classes.iter_mut().find(|c| c.0 == d.class_id) {
        Some(c) => c.2 += d.score,
        None => t.classes.push((d.class_id, d.label.clone(), d.score)),
    }
    if let Some(best) = t.classes.iter().max_by(|a, b| a.2.total_cmp(&b.2)) {
        t.class_id = best.0;
        t.label.clone_from(&best.1);
    }
}

fn significant(t: &Track, now: SystemTime, cfg: &TrackerConfig) -> bool {
    let since = secs(now, t.sent_at);
    if since < cfg.update_min_interval_s {
        return false;
    }
    let news = t.crossed != t.sent_crossed || t.loitering.len() != t.sent_loitering;
    if since >= cfg.update_heartbeat_s || news || t.zones != t.sent_zones || (t.score - t.sent_score).abs() >= cfg.score_delta {
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
    // The new event starts with none of the old one's crossings or loitering.
    t.crossings.clear();
    t.loitering.clear();
    for (_, since) in &mut t.zone_since {
        *since = frame.wall;
    }
}

fn mark_sent(t: &mut Track, now: SystemTime) {
    t.sent_at = now;
    t.sent_bbox = t.bbox;
    t.sent_score = t.score;
    t.sent_zones.clone_from(&t.zones);
    t.sent_crossed = t.crossed;
    t.sent_loitering = t.loitering.len();
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
        crossings: t.crossings.clone(),
        loitering: t.loitering.clone(),
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
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let events = run(&mut t, 20, 5.0, |i| if i == 3 { vec![person(100.0, 0.9)] } else { vec![] });
        assert!(events.is_empty(), "{events:?}");
        assert!(t.is_empty());
    }

    #[test]
    fn an_object_walking_through_is_one_event() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
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
        let mut t = Tracker::new(0, cfg, 0.5);
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
        let mut t = Tracker::new(0, TrackerConfig { stationary_after_s: 5.0, ..TrackerConfig::default() }, 0.5);
        let events = run(&mut t, 40, 2.0, |i| if i < 30 { vec![car(100.0)] } else { vec![] });
        assert_eq!(kinds(&events), [(EventKind::New, 1), (EventKind::Update, 1), (EventKind::End, 1)]);
        assert_eq!(events[2].stationary_since, Some(frame(0, 0.0).wall));
    }

    #[test]
    fn stationary_detection_can_be_turned_off() {
        let mut t = Tracker::new(0, TrackerConfig { stationary_after_s: 0.0, update_heartbeat_s: 10.0, ..TrackerConfig::default() }, 0.5);
        let events = run(&mut t, 200, 2.0, |_| vec![car(100.0)]);
        assert!(events.iter().all(|e| e.stationary_since.is_none()));
        assert_eq!(events.iter().filter(|e| e.kind == EventKind::Update).count(), 9, "heartbeats every 10 s for 100 s");
    }

    #[test]
    fn updates_are_throttled_and_sent_on_change() {
        let cfg = TrackerConfig { update_heartbeat_s: 5.0, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg, 0.5);
        // Standing still with jitter for 12 s at 10 fps: only heartbeats, never per frame.
        let still = run(&mut t, 120, 10.0, |i| vec![person(100.0 + (i % 3) as f32, 0.8 + (i % 2) as f32 * 0.02)]);
        let updates = still.iter().filter(|e| e.kind == EventKind::Update).count();
        assert_eq!(updates, 2, "heartbeats at ~5 s and ~10 s: {:?}", kinds(&still));
        // Running: moves half its size every frame, but at most one update per second.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let moving = run(&mut t, 50, 10.0, |i| vec![det(0, "person", 0.8, [10.0 * i as f32, 0.0, 10.0 * i as f32 + 20.0, 20.0])]);
        let updates: Vec<_> = moving.iter().filter(|e| e.kind == EventKind::Update).collect();
        assert!((3..=5).contains(&updates.len()), "{} updates in 5 s", updates.len());
        for w in updates.windows(2) {
            assert!(secs(w[1].last_seen, w[0].last_seen) >= 1.0);
        }
        // A big score change is significant too.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let score = run(&mut t, 30, 10.0, |i| vec![person(100.0, if i < 15 { 0.5 } else { 0.9 })]);
        let up: Vec<_> = score.iter().filter(|e| e.kind == EventKind::Update).collect();
        assert_eq!(up.len(), 1);
        assert_eq!((up[0].score, up[0].top_score), (0.9, 0.9));
    }

    #[test]
    fn objects_of_other_classes_and_places_are_separate() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let events = run(&mut t, 10, 5.0, |_| vec![person(100.0, 0.8), det(1, "bicycle", 0.7, [100.0, 450.0, 200.0, 700.0]), person(600.0, 0.7)]);
        let new: Vec<_> = events.iter().filter(|e| e.kind == EventKind::New).map(|e| (e.track_id, e.label.to_string())).collect();
        assert_eq!(new.len(), 3, "{new:?}");
        let mut ids: Vec<_> = new.iter().map(|n| n.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn zones_masks_and_minimum_area() {
        let zone = Zone { name: "door".into(), polygon: vec![[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]], loitering_s: None };
        let cfg =
            TrackerConfig { zones: vec![zone], masks: vec![vec![[0.0, 0.0], [0.3, 0.0], [0.3, 0.3], [0.0, 0.3]]], min_area: 0.001, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg.clone(), 0.5);
        // Walks from x = 100 into the zone (ground point x > 500) after a while.
        let events = run(&mut t, 40, 5.0, |i| vec![person(100.0 + 20.0 * i as f32, 0.8)]);
        assert!(events[0].zones.is_empty());
        let entered = events.iter().find(|e| e.kind == EventKind::Update && e.zones == vec![0]).expect("entering the zone is an update");
        assert!((entered.bbox[0] + entered.bbox[2]) / 2.0 >= 500.0);
        // Inside the mask, or too small: ignored.
        let mut t = Tracker::new(0, cfg.clone(), 0.5);
        assert!(
            run(&mut t, 10, 5.0, |_| vec![det(0, "person", 0.9, [100.0, 100.0, 200.0, 200.0]), det(0, "person", 0.9, [800.0, 800.0, 820.0, 820.0])]).is_empty()
        );
        // require_zone: an object outside every zone stays silent until it enters one.
        let mut t = Tracker::new(0, TrackerConfig { require_zone: true, ..cfg }, 0.5);
        let events = run(&mut t, 40, 5.0, |i| vec![person(100.0 + 20.0 * i as f32, 0.8)]);
        assert_eq!(events[0].kind, EventKind::New);
        assert_eq!(events[0].zones, vec![0]);
    }

    #[test]
    fn cooldown_stops_new_end_flapping() {
        let cfg = TrackerConfig { end_after_s: 0.5, cooldown_s: 5.0, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg.clone(), 0.5);
        // Visible 2 s, hidden 1 s, visible again for 8 s, in the same place.
        let seen = |i: usize| if !(10..15).contains(&i) { vec![person(100.0, 0.8)] } else { vec![] };
        let events = run(&mut t, 55, 5.0, seen);
        let k: Vec<_> = events.iter().filter(|e| e.kind != EventKind::Update).map(|e| (e.kind, e.track_id, e.last_seen)).collect();
        assert_eq!(k.len(), 3, "{k:?}");
        assert_eq!((k[0].0, k[1].0, k[2].0), (EventKind::New, EventKind::End, EventKind::New));
        // The second `new` waits for the cooldown after the end (ended at ~2.6 s → not before ~7.6 s).
        assert!(secs(k[2].2, k[1].2) >= 5.0 - 1e-6, "{k:?}");
        // Without a cooldown it comes back at once.
        let mut t = Tracker::new(0, TrackerConfig { cooldown_s: 0.0, ..cfg }, 0.5);
        let events = run(&mut t, 55, 5.0, seen);
        let second_new = events.iter().filter(|e| e.kind == EventKind::New).nth(1).unwrap();
        assert!(secs(second_new.last_seen, frame(0, 0.0).wall) < 4.0);
    }

    #[test]
    fn finish_ends_every_confirmed_object() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        run(&mut t, 5, 5.0, |i| if i < 5 { vec![person(100.0, 0.8), person(600.0, 0.8)] } else { vec![] });
        t.update(&frame(5, 1.0), &[person(100.0, 0.8), person(600.0, 0.8), person(900.0, 0.8)]);
        let ends = t.finish();
        assert_eq!(ends.len(), 2, "the unconfirmed third object raises nothing");
        assert!(ends.iter().all(|e| e.kind == EventKind::End));
        assert!(t.is_empty());
    }

    /// A car 300 px wide crossing a 1280 px picture in 2 s: 640 px/s.
    fn crossing(fps: f64) -> impl Fn(usize) -> Vec<Detection> {
        move |i| {
            let x = -150.0 + 640.0 * (i as f64 / fps) as f32;
            if x < 1130.0 { vec![det(2, "car", 0.8, [x.max(0.0), 500.0, (x + 300.0).min(1280.0), 650.0])] } else { vec![] }
        }
    }

    #[test]
    fn a_fast_car_is_one_event_at_5_and_2_fps() {
        for fps in [5.0, 2.0] {
            let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
            let events = run(&mut t, (10.0 * fps) as usize, fps, crossing(fps));
            let k = kinds(&events);
            let news = k.iter().filter(|e| e.0 == EventKind::New).count();
            let ends = k.iter().filter(|e| e.0 == EventKind::End).count();
            assert_eq!((news, ends), (1, 1), "at {fps} fps: {k:?}");
        }
    }

    #[test]
    fn a_tentative_object_survives_a_missed_frame_but_not_three() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        // Seen, missed, seen, seen: the third sighting confirms it.
        let events = run(&mut t, 30, 5.0, |i| if i == 1 || i >= 4 { vec![] } else { vec![person(100.0 + 5.0 * i as f32, 0.9)] });
        assert_eq!(kinds(&events)[0], (EventKind::New, 1), "{events:?}");
        // Seen twice, missed three times: gone, and the next sighting is a new object.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        run(&mut t, 5, 5.0, |i| if i < 2 { vec![person(100.0, 0.9)] } else { vec![] });
        assert!(t.is_empty());
    }

    #[test]
    fn a_tentative_object_unseen_for_a_second_survives_no_second_miss() {
        let seen_twice = |fps: f64, frames: usize| {
            let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
            run(&mut t, frames, fps, |i| if i < 2 { vec![person(100.0 + 10.0 * i as f32, 0.9)] } else { vec![] });
            t
        };
        // 5 fps: two misses are 0.4 s unseen; it is still there.
        assert_eq!(seen_twice(5.0, 4).len(), 1);
        // 2 fps: the first miss is forgiven, the second leaves it unseen for a second.
        assert_eq!(seen_twice(2.0, 3).len(), 1);
        assert!(seen_twice(2.0, 4).is_empty());
        // 1 fps: one miss is always forgiven, however long the gap.
        assert_eq!(seen_twice(1.0, 3).len(), 1);
    }

    #[test]
    fn a_sighting_off_the_predicted_course_continues_a_tentative_object_without_vouching_for_it() {
        // A walker at 100 px/s (5 fps); its third box is 70 px ahead of where it was heading: within the
        // gate, so it continues the object, but too far off to count toward its becoming an event.
        let off = person(210.0, 0.9);
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let events = run(&mut t, 3, 5.0, |i| vec![if i < 2 { person(100.0 + 20.0 * i as f32, 0.9) } else { off.clone() }]);
        assert!(events.is_empty(), "three sightings, one off course: not yet an event: {events:?}");
        let got: Vec<_> = t.tracks().map(|v| (v.track_id, v.bbox, v.state)).collect();
        assert_eq!(got, vec![(1, off.bbox, TrackState::Tentative)], "it continued the object");
        // Sightings on its course from there vouch again: it becomes an event.
        let mut events = Vec::new();
        for i in 3..6 {
            events.extend_from_slice(t.update(&frame(i, i as f64 / 5.0), &[person(210.0 + 20.0 * (i - 2) as f32, 0.9)]));
        }
        assert_eq!(kinds(&events), vec![(EventKind::New, 1)], "{events:?}");
        // The same three sightings on course make it an event at the third.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let events = run(&mut t, 3, 5.0, |i| vec![person(100.0 + 20.0 * i as f32, 0.9)]);
        assert_eq!(kinds(&events), vec![(EventKind::New, 1)]);
    }

    #[test]
    fn a_tentative_object_that_missed_a_frame_leaps_only_to_a_lone_candidate() {
        // Seen at x = 400, missed, then 150 px away (no overlap with where it was) at 2 fps.
        let boxes_of = |t: &Tracker| t.tracks().map(|v| (v.track_id, v.bbox)).collect::<Vec<_>>();
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        run(&mut t, 3, 2.0, |i| match i {
            0 => vec![person(400.0, 0.9)],
            2 => vec![person(550.0, 0.9)],
            _ => vec![],
        });
        assert!(boxes_of(&t).contains(&(1, person(550.0, 0.9).bbox)), "the lone walker is found again: {:?}", boxes_of(&t));
        // Two walkers there instead, one on each side: either could be it, so neither continues it.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        run(&mut t, 3, 2.0, |i| match i {
            0 => vec![person(400.0, 0.9)],
            2 => vec![person(550.0, 0.9), person(250.0, 0.9)],
            _ => vec![],
        });
        let got = boxes_of(&t);
        assert!(got.iter().all(|&(id, b)| id != 1 || (b != person(550.0, 0.9).bbox && b != person(250.0, 0.9).bbox)), "{got:?}");
        assert_eq!(got.iter().filter(|(id, _)| *id != 1).count(), 2, "both start objects of their own: {got:?}");
    }

    #[test]
    fn a_walker_who_left_the_picture_does_not_become_the_one_entering_there() {
        // A walks left at 2 fps, 100 px a frame, and leaves the picture; B enters at the same edge a second
        // later, when A's prediction is wholly outside.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let a = |i: usize| person(400.0 - 100.0 * i as f32, 0.9);
        run(&mut t, 6, 2.0, |i| if i < 5 { vec![a(i)] } else { vec![] });
        let entering = det(0, "person", 0.9, [0.0, 400.0, 60.0, 700.0]);
        t.update(&frame(6, 3.0), std::slice::from_ref(&entering));
        let got: Vec<_> = t.tracks().map(|v| (v.track_id, v.bbox)).collect();
        assert!(got.iter().all(|&(id, b)| id != 1 || b != entering.bbox), "A took B's box: {got:?}");
        assert!(got.iter().any(|&(id, b)| id != 1 && b == entering.bbox), "B is an object of its own: {got:?}");
    }

    #[test]
    fn a_walker_of_another_size_in_the_same_place_is_another_object() {
        // A walker settled at x = 400; the next frame has a box a third taller overlapping it and one of the
        // walker's size a little further on: the tracker continues with the second.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        run(&mut t, 5, 5.0, |_| vec![person(400.0, 0.9)]);
        let taller = det(0, "person", 0.9, [390.0, 300.0, 520.0, 700.0]);
        t.update(&frame(5, 1.0), &[taller, person(470.0, 0.9)]);
        let got: Vec<_> = t.tracks().map(|v| (v.track_id, v.bbox)).collect();
        assert!(got.contains(&(1, person(470.0, 0.9).bbox)), "{got:?}");
    }

    #[test]
    fn frames_dropped_while_the_detector_was_busy_do_not_split_a_walker() {
        // 5 fps, but frames 10..15 never reach the tracker (a second of drops); the walker moves on.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let mut events = Vec::new();
        for i in (0..40).filter(|i| !(10..15).contains(i)) {
            let x = 100.0 + 25.0 * i as f32;
            events.extend_from_slice(t.update(&frame(i, i as f64 / 5.0), &[person(x, 0.9)]));
        }
        let k = kinds(&events);
        assert!(k.iter().all(|(_, id)| *id == 1), "one object: {k:?}");
    }

    #[test]
    fn a_car_called_a_truck_for_a_frame_stays_one_event_labelled_car() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let events = run(&mut t, 40, 5.0, |i| {
            let x = 100.0 + 20.0 * i as f32;
            if i >= 20 {
                vec![]
            } else if i % 4 == 1 {
                vec![det(7, "truck", 0.6, [x, 500.0, x + 300.0, 700.0])]
            } else {
                vec![det(2, "car", 0.8, [x, 500.0, x + 300.0, 700.0])]
            }
        });
        let k = kinds(&events);
        assert!(k.iter().all(|(_, id)| *id == 1), "{k:?}");
        assert!(events.iter().all(|e| e.label.as_ref() == "car"), "{events:?}");
        // Without the group, the flip is two objects.
        let cfg = TrackerConfig { groups: vec![], ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg, 0.5);
        let events = run(&mut t, 12, 5.0, |i| {
            let x = 100.0 + 20.0 * i as f32;
            vec![det(if i % 2 == 0 { 2 } else { 7 }, if i % 2 == 0 { "car" } else { "truck" }, 0.8, [x, 500.0, x + 300.0, 700.0])]
        });
        let news = kinds(&events).iter().filter(|e| e.0 == EventKind::New).count();
        assert_eq!(news, 2, "without groups, a car and a truck: {events:?}");
    }

    #[test]
    fn weak_boxes_continue_a_track_but_never_start_one() {
        // A walker whose score drops to 0.3 for a second (half hidden): one event, no end in between.
        let mut t = Tracker::new(0, TrackerConfig { end_after_s: 0.5, ..TrackerConfig::default() }, 0.5);
        let events = run(&mut t, 40, 5.0, |i| {
            let score = if (8..13).contains(&i) { 0.3 } else { 0.9 };
            if i < 25 { vec![person(100.0 + 10.0 * i as f32, score)] } else { vec![] }
        });
        assert_eq!(kinds(&events).iter().filter(|e| e.0 != EventKind::Update).count(), 2, "{events:?}");
        // Without the second stage, the same walker ends and comes back.
        let cfg = TrackerConfig { end_after_s: 0.5, low_score: 0.5, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg, 0.5);
        let events = run(&mut t, 40, 5.0, |i| {
            let score = if (8..13).contains(&i) { 0.3 } else { 0.9 };
            if i < 25 { vec![person(100.0 + 10.0 * i as f32, score)] } else { vec![] }
        });
        assert_eq!(kinds(&events).iter().filter(|e| e.0 == EventKind::New).count(), 2, "{events:?}");
        // Weak boxes alone raise nothing.
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        assert!(run(&mut t, 20, 5.0, |_| vec![person(100.0, 0.3)]).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn the_track_states_are_reported() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let state = |t: &Tracker| t.tracks().map(|v| v.state).collect::<Vec<_>>();
        t.update(&frame(0, 0.0), &[person(100.0, 0.9)]);
        assert_eq!(state(&t), [TrackState::Tentative]);
        t.update(&frame(1, 0.2), &[person(110.0, 0.9)]);
        t.update(&frame(2, 0.4), &[person(120.0, 0.9)]);
        assert_eq!(state(&t), [TrackState::Confirmed]);
        t.update(&frame(3, 0.6), &[]);
        assert_eq!(state(&t), [TrackState::Lost]);
        // A lost track reports where it is predicted to be: still walking right.
        let b = t.tracks().next().unwrap().bbox;
        assert!(b[0] > 120.0, "{b:?}");
    }

    #[test]
    fn a_pickup_reported_as_car_and_truck_at_once_is_one_object() {
        let mut t = Tracker::new(0, TrackerConfig::default(), 0.5);
        let events = run(&mut t, 20, 5.0, |i| {
            let x = 100.0 + 30.0 * i as f32;
            if i < 10 { vec![det(2, "car", 0.8, [x, 500.0, x + 300.0, 700.0]), det(7, "truck", 0.6, [x + 5.0, 495.0, x + 305.0, 702.0])] } else { vec![] }
        });
        let news: Vec<_> = events.iter().filter(|e| e.kind == EventKind::New).collect();
        assert_eq!(news.len(), 1, "{events:?}");
        assert_eq!(news[0].label.as_ref(), "car");
    }

    #[test]
    fn crossing_a_line_is_reported_once_in_its_direction_and_counted() {
        // A vertical line in the middle, drawn bottom to top: walking rightwards crosses to its right.
        let line = |direction| Line { name: "gate".into(), from: [0.5, 1.0], to: [0.5, 0.0], direction };
        let cfg = TrackerConfig { line: vec![line(Direction::Any), Line { name: "left-only".into(), ..line(Direction::Left) }], ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg, 0.5);
        let mut counted = Vec::new();
        let mut events = Vec::new();
        for i in 0..50 {
            let dets = if i < 30 { vec![person(300.0 + 15.0 * i as f32, 0.9)] } else { vec![] };
            events.extend_from_slice(t.update(&frame(i, i as f64 / 5.0), &dets));
            counted.extend_from_slice(t.crossings());
        }
        // Crossed at x = 500 (ground point 450 + 50): one crossing of "gate", none of the left-only line.
        assert_eq!(counted, [(0, Direction::Right)]);
        let end = events.iter().find(|e| e.kind == EventKind::End).unwrap();
        assert_eq!(end.crossings.len(), 1);
        assert_eq!((end.crossings[0].line, end.crossings[0].to), (0, Direction::Right));
        // The crossing was news: an update carries it as soon as the throttle allows.
        let first = events.iter().position(|e| !e.crossings.is_empty()).unwrap();
        assert_eq!(events[first].kind, EventKind::Update);
    }

    #[test]
    fn a_tentative_objects_crossing_counts_once_it_is_an_event_and_never_if_it_is_not() {
        let cfg =
            TrackerConfig { line: vec![Line { name: "l".into(), from: [0.5, 1.0], to: [0.5, 0.0], direction: Direction::Any }], ..TrackerConfig::default() };
        // Seen twice across the line, then gone: never an event, never counted.
        let mut t = Tracker::new(0, cfg.clone(), 0.5);
        let mut counted = 0;
        for i in 0..10 {
            let dets = if i < 2 { vec![person(430.0 + 40.0 * i as f32, 0.9)] } else { vec![] };
            t.update(&frame(i, i as f64 / 5.0), &dets);
            counted += t.crossings().len();
        }
        assert_eq!(counted, 0);
        // Crossing on its second sighting, confirmed on its third: counted then.
        let mut t = Tracker::new(0, cfg, 0.5);
        let mut at = Vec::new();
        for i in 0..5 {
            t.update(&frame(i, i as f64 / 5.0), &[person(430.0 + 40.0 * i as f32, 0.9)]);
            at.extend(t.crossings().iter().map(|_| i));
        }
        assert_eq!(at, [2]);
    }

    #[test]
    fn loitering_in_a_zone_is_an_update() {
        let zone = Zone { name: "door".into(), polygon: vec![[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]], loitering_s: Some(10.0) };
        let cfg = TrackerConfig { zones: vec![zone], stationary_after_s: 0.0, ..TrackerConfig::default() };
        let mut t = Tracker::new(0, cfg, 0.5);
        // Strolling inside the zone (ground point x 0.15 to 0.35, y 0.7) for 20 s.
        let events = run(&mut t, 100, 5.0, |i| vec![person(100.0 + 2.0 * i as f32, 0.9)]);
        let first = events.iter().find(|e| !e.loitering.is_empty()).expect("a loitering update");
        assert_eq!(first.kind, EventKind::Update);
        assert_eq!(first.loitering, [0]);
        let after = secs(first.last_seen, first.start);
        assert!((10.0..11.5).contains(&after), "loitering reported {after} s after it entered");
    }
}
