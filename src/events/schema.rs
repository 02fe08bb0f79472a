//! The event message: versioned JSON, one per `new` / `update` / `end`, published on
//! `<prefix>/events/<camera>`.
//!
//! `seq` is the outbox sequence number: per device, strictly increasing, never reused. `event_id` names the
//! object's whole event (the same in its `new`, `update`s and `end`), unique across restarts. A message that
//! is delivered twice (after a lost acknowledgement) carries the same `seq` and `event_id`, so consumers
//! can drop the repeat.

use std::time::SystemTime;

use serde::Serialize;

use crate::track::{EventKind, TrackEvent};

/// Bumped on any incompatible change of the message.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct EventMessage<'a> {
    pub schema_version: u32,
    pub seq: u64,
    pub event_id: &'a str,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub device_id: &'a str,
    pub camera: &'a str,
    pub label: &'a str,
    pub class_id: u16,
    /// The latest sighting's (a weak second-stage box may score below `min_score`), and the best.
    pub score: f32,
    pub top_score: f32,
    /// `[x1, y1, x2, y2]` in source pixels of a `frame_size` picture.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub frame_size: [u32; 2],
    /// When the object was first seen.
    pub start: String,
    /// When it left (`end` only).
    pub end: Option<String>,
    pub last_seen: String,
    pub zones: Vec<&'a str>,
    /// Since when the object has stood still, once it is stationary (a parked car): heartbeats stop, and
    /// its video ends there (plus post-roll).
    pub stationary_since: Option<String>,
    /// The counting lines the object crossed (the latest 16), and the zones it has loitered in.
    pub crossings: Vec<CrossingMessage<'a>>,
    pub loitering: Vec<&'a str>,
    /// The recording of the event and its best frame; filled by the recording stage, `null` until then.
    pub clip: Option<String>,
    pub snapshot: Option<String>,
    /// When this message was made.
    pub ts: String,
}

/// One crossing of a counting line, as sent.
#[derive(Debug, Clone, Serialize)]
pub struct CrossingMessage<'a> {
    pub line: &'a str,
    /// The side crossed to: `left` or `right` of the line, standing at its `from` end looking at `to`.
    pub direction: crate::track::Direction,
    pub at: String,
}

/// A camera's zone and line names, for messages (events refer to them by index).
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub zones: Vec<String>,
    pub lines: Vec<String>,
}

impl Names {
    pub fn of(track: &crate::track::TrackerConfig) -> Self {
        Self { zones: track.zones.iter().map(|z| z.name.clone()).collect(), lines: track.line.iter().map(|l| l.name.clone()).collect() }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A unique id for the event of `track_id`, seen first at `start`, in this run of perch.
pub fn event_id(run_id: u32, camera: &str, track_id: u64, start: SystemTime) -> String {
    let ms = start.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{camera}-{ms:x}-{run_id:08x}-{track_id}")
}

impl<'a> EventMessage<'a> {
    pub fn new(seq: u64, event_id: &'a str, device_id: &'a str, camera: &'a str, names: &'a Names, e: &'a TrackEvent) -> Self {
        let name = |list: &'a [String], i: usize| list.get(i).map(String::as_str);
        Self {
            schema_version: SCHEMA_VERSION,
            seq,
            event_id,
            kind: e.kind,
            device_id,
            camera,
            label: &e.label,
            class_id: e.class_id,
            score: e.score,
            top_score: e.top_score,
            bbox: e.bbox,
            frame_size: [e.frame_size.0, e.frame_size.1],
            start: rfc3339(e.start),
            end: (e.kind == EventKind::End).then(|| rfc3339(e.last_seen)),
            last_seen: rfc3339(e.last_seen),
            zones: e.zones.iter().filter_map(|&i| name(&names.zones, i)).collect(),
            stationary_since: e.stationary_since.map(rfc3339),
            crossings: e
                .crossings
                .iter()
                .filter_map(|c| Some(CrossingMessage { line: name(&names.lines, c.line)?, direction: c.to, at: rfc3339(c.at) }))
                .collect(),
            loitering: e.loitering.iter().filter_map(|&i| name(&names.zones, i)).collect(),
            clip: None,
            snapshot: None,
            ts: rfc3339(SystemTime::now()),
        }
    }
}
