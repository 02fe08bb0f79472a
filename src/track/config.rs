//! Tracking and event-trigger settings of one camera (`[camera.track]`).

use serde::Deserialize;

use crate::util::config::{Problem, Section};

/// A named polygon in normalised picture coordinates (0..1 from the top-left corner).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<[f32; 2]>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Minimum IoU between a track's last box and a detection of the same class to be the same object.
    pub iou_match: f32,
    /// Consecutive frames an object must be seen before it becomes an event (`new`).
    pub min_hits: u32,
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
    /// When non-empty, only objects inside at least one zone become events.
    pub require_zone: bool,
    /// Areas where detections are ignored (a tree moving in the wind, a TV on the wall).
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
            end_after_s: 3.0,
            update_min_interval_s: 1.0,
            update_heartbeat_s: 10.0,
            score_delta: 0.1,
            move_fraction: 0.5,
            min_area: 0.0,
            zones: Vec::new(),
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
                Zone { name: "a".into(), polygon: vec![[0.0, 0.0], [1.0, 0.0]] },
                Zone { name: "a".into(), polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]] },
            ],
            ..TrackerConfig::default()
        };
        let keys: Vec<String> = bad.validate("t").into_iter().map(|p| p.key).collect();
        for k in ["t.min_hits", "t.zones[0].polygon", "t.zones[1].name", "t.masks[0]"] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        let no_zones = TrackerConfig { require_zone: true, ..TrackerConfig::default() };
        assert_eq!(no_zones.validate("t")[0].key, "t.require_zone");
    }
}
