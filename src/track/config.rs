//! Tracking and event-trigger settings of one camera (`[camera.track]`).

use serde::Deserialize;

use crate::util::config::{Problem, Section};

/// A named polygon in normalised picture coordinates (0..1 from the top-left corner).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<[f32; 2]>,
    /// An object whose ground point stays in the zone this long is loitering: an `update` says so
    /// (`loitering` lists the zone). Unset: no loitering check.
    #[serde(default)]
    pub loitering_s: Option<f64>,
}

/// Which crossings of a line count, by the side the object crosses to, as seen standing at `from` and
/// looking towards `to` (a line drawn from the bottom of the picture to the top: `left` is leftwards).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Any,
    Left,
    Right,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Any => "any",
            Direction::Left => "left",
            Direction::Right => "right",
        }
    }
}

/// A counting line (`[[camera.track.line]]`): an object whose ground point moves across the segment
/// between two sightings has crossed it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub name: String,
    pub from: [f32; 2],
    pub to: [f32; 2],
    #[serde(default)]
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// A detection overlapping a track's predicted box by at least this much (IoU) may continue it; one
    /// that overlaps less still may when its centre is where the track's motion says it should be.
    /// Also the overlap at which an object is "in the same place" as one that just ended (`cooldown_s`).
    pub iou_match: f32,
    /// Sightings an object needs before it becomes an event (`new`): the first, and each later one that
    /// lands close to its prediction ([`super::assoc::VOUCH`]).
    pub min_hits: u32,
    /// Frames in a row an object that is not an event yet may go unseen and still become one (a missed
    /// detection, a frame dropped while the detector was busy); one only, when that leaves it unseen for
    /// longer than [`super::TENTATIVE_GAP_S`].
    pub tentative_misses: u32,
    /// Second-stage detections: boxes scoring from this up to the camera's `min_score` only continue
    /// objects that are already events (a walker half hidden scores low), never start one or confirm it. The
    /// detector reports boxes down to this score for cameras with tracking. Set it to the camera's
    /// `min_score` (or above) to turn the second stage off.
    pub low_score: f32,
    /// Classes that are one object for matching and cooldown (a car the model calls a truck for a frame
    /// stays one event); the event's label is the group's class with the highest summed score.
    pub groups: Vec<Vec<String>>,
    /// An object not seen for this long has left (`end`).
    pub end_after_s: f64,
    /// `update` messages are sent on a significant change, but never more often than this...
    pub update_min_interval_s: f64,
    /// ...and at least this often while the object stays.
    pub update_heartbeat_s: f64,
    /// A score change of at least this much is significant.
    pub score_delta: f32,
    /// A move of the box centre by at least this fraction of the box size is significant.
    pub move_fraction: f32,
    /// Detections smaller than this fraction of the picture are ignored.
    pub min_area: f32,
    /// Named zones; an event lists the zones its object's ground point (bottom centre) is in. Entering or
    /// leaving a zone is a significant change.
    pub zones: Vec<Zone>,
    /// Counting lines: crossings are listed in the object's events and counted in `/metrics`.
    pub line: Vec<Line>,
    /// When non-empty, only objects inside at least one zone become events.
    pub require_zone: bool,
    /// Areas where detections are ignored (a tree moving in the wind, a TV on the wall): a detection whose
    /// bottom centre (where it stands, the point zones test too) is inside one.
    pub masks: Vec<Vec<[f32; 2]>>,
    /// Trigger cooldown: for this long after an object ends, a same-class object in the same place does not
    /// raise a new event (it does once the cooldown is over, if still there). 0 disables.
    pub cooldown_s: f64,
    /// An object whose box has stayed put (IoU ≥ 0.9 with where it was) this long is `stationary` (a
    /// parked car): one update says so, heartbeats stop, and its event holds video only up to when it
    /// stopped (plus post-roll). Moving again ends that event and starts a new one. 0 disables.
    pub stationary_after_s: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            iou_match: 0.3,
            min_hits: 3,
            tentative_misses: 2,
            low_score: 0.1,
            groups: vec![["car", "truck", "bus", "motorbike", "motorcycle"].map(String::from).to_vec()],
            end_after_s: 3.0,
            update_min_interval_s: 1.0,
            update_heartbeat_s: 10.0,
            score_delta: 0.1,
            move_fraction: 0.5,
            min_area: 0.0,
            zones: Vec::new(),
            line: Vec::new(),
            require_zone: false,
            masks: Vec::new(),
            cooldown_s: 5.0,
            stationary_after_s: 30.0,
        }
    }
}

impl Section for TrackerConfig {
    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut range = |name: &str, ok: bool, what: String| {
            if !ok {
                p.push(Problem::new(format!("{key}.{name}"), what));
            }
        };
        range("iou_match", (0.05..=0.95).contains(&self.iou_match), format!("{} is out of range: use 0.05..=0.95", self.iou_match));
        range("min_hits", (1..=100).contains(&self.min_hits), format!("{} is out of range: use 1..=100 frames", self.min_hits));
        range("tentative_misses", self.tentative_misses <= 100, format!("{} is out of range: use 0..=100 frames", self.tentative_misses));
        range("low_score", (0.01..=1.0).contains(&self.low_score), format!("{} is out of range: use a score between 0.01 and 1", self.low_score));
        range(
            "end_after_s",
            self.end_after_s > 0.0 && self.end_after_s <= 3600.0,
            format!("{} is out of range: use a time above 0 and at most 3600 s", self.end_after_s),
        );
        range(
            "update_min_interval_s",
            self.update_min_interval_s >= 0.1 && self.update_min_interval_s <= self.update_heartbeat_s,
            format!("{} must be at least 0.1 s and at most update_heartbeat_s", self.update_min_interval_s),
        );
        range("update_heartbeat_s", self.update_heartbeat_s <= 86400.0, format!("{} is out of range: use at most 86400 s", self.update_heartbeat_s));
        range("score_delta", (0.0..=1.0).contains(&self.score_delta), format!("{} is out of range: use 0..=1", self.score_delta));
        range(
            "move_fraction",
            self.move_fraction > 0.0 && self.move_fraction <= 10.0,
            format!("{} is out of range: use a fraction above 0", self.move_fraction),
        );
        range("min_area", (0.0..1.0).contains(&self.min_area), format!("{} is out of range: use a fraction of the picture in 0..1", self.min_area));
        range("cooldown_s", (0.0..=3600.0).contains(&self.cooldown_s), format!("{} is out of range: use 0..=3600 s", self.cooldown_s));
        range(
            "stationary_after_s",
            (0.0..=86_400.0).contains(&self.stationary_after_s),
            format!("{} is out of range: use 0..=86400 s (0 disables)", self.stationary_after_s),
        );
        range(
            "require_zone",
            !self.require_zone || !self.zones.is_empty(),
            "is true but no zones are defined: add [[camera.track.zones]] or set it to false".into(),
        );
        let mut names = std::collections::HashSet::new();
        for (i, z) in self.zones.iter().enumerate() {
            if z.name.is_empty() || !names.insert(z.name.as_str()) {
                p.push(Problem::new(format!("{key}.zones[{i}].name"), format!("{:?}: each zone needs a unique, non-empty name", z.name)));
            }
            if let Some(msg) = polygon_problem(&z.polygon) {
                p.push(Problem::new(format!("{key}.zones[{i}].polygon"), msg));
            }
            if let Some(l) = z.loitering_s.filter(|l| !(*l > 0.0 && *l <= 86_400.0)) {
                p.push(Problem::new(format!("{key}.zones[{i}].loitering_s"), format!("{l} is out of range: use a time above 0 and at most 86400 s")));
            }
        }
        let mut line_names = std::collections::HashSet::new();
        for (i, l) in self.line.iter().enumerate() {
            let plain = !l.name.is_empty() && l.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !plain || !line_names.insert(l.name.as_str()) {
                p.push(Problem::new(
                    format!("{key}.line[{i}].name"),
                    format!("{:?}: each line needs a unique name of letters, digits, '_', '-' or '.' (it labels a metric)", l.name),
                ));
            }
            let off = [l.from, l.to].into_iter().find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y));
            if let Some(pt) = off {
                p.push(Problem::new(format!("{key}.line[{i}]"), format!("point {pt:?} is outside 0..1: give from and to as fractions of the picture")));
            } else if l.from == l.to {
                p.push(Problem::new(format!("{key}.line[{i}]"), "from and to are the same point: a line needs two ends".to_string()));
            }
        }
        let mut grouped = std::collections::HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            if let Some(l) = g.iter().find(|l| !grouped.insert(l.as_str())) {
                p.push(Problem::new(format!("{key}.groups[{i}]"), format!("{l:?} is in more than one group: a class may belong to one group only")));
            }
        }
        for (i, m) in self.masks.iter().enumerate() {
            if let Some(msg) = polygon_problem(m) {
                p.push(Problem::new(format!("{key}.masks[{i}]"), msg));
            }
        }
        p
    }
}

fn polygon_problem(poly: &[[f32; 2]]) -> Option<String> {
    if poly.len() < 3 {
        return Some(format!("has {} points: a polygon needs at least 3, as [x, y] pairs from 0 to 1", poly.len()));
    }
    poly.iter()
        .find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
        .map(|pt| format!("point {pt:?} is outside 0..1: give coordinates as fractions of the picture width and height"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(TrackerConfig::default().validate("camera[0].track").is_empty());
        let bad = TrackerConfig {
            min_hits: 0,
            require_zone: true,
            masks: vec![vec![[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]]],
            zones: vec![
                Zone { name: "a".into(), polygon: vec![[0.0, 0.0], [1.0, 0.0]], loitering_s: None },
                Zone { name: "a".into(), polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], loitering_s: None },
            ],
            ..TrackerConfig::default()
        };
        let keys: Vec<String> = bad.validate("t").into_iter().map(|p| p.key).collect();
        for k in ["t.min_hits", "t.zones[0].polygon", "t.zones[1].name", "t.masks[0]"] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        let lines = TrackerConfig {
            line: vec![
                Line { name: "a b".into(), from: [0.0, 0.0], to: [1.0, 1.0], direction: Direction::Any },
                Line { name: "c".into(), from: [0.5, 0.5], to: [0.5, 0.5], direction: Direction::Left },
                Line { name: "d".into(), from: [0.5, 1.5], to: [0.5, 0.0], direction: Direction::Left },
            ],
            zones: vec![Zone { name: "z".into(), polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], loitering_s: Some(0.0) }],
            groups: vec![vec!["car".into(), "truck".into()], vec!["truck".into()]],
            ..TrackerConfig::default()
        };
        let keys: Vec<String> = lines.validate("t").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["t.zones[0].loitering_s", "t.line[0].name", "t.line[1]", "t.line[2]", "t.groups[1]"].map(String::from), "{keys:?}");
        let no_zones = TrackerConfig { require_zone: true, ..TrackerConfig::default() };
        assert_eq!(no_zones.validate("t")[0].key, "t.require_zone");
    }
}
