//! Recording settings: `[record]` for the store as a whole, `[camera.record]` per camera.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::util::config::{Problem, Section};

/// Where recordings live and how long they stay (`[record]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Segments and clips. Default: `<state_dir>/recordings`.
    pub dir: Option<PathBuf>,
    /// Length of a rolling segment. Cuts happen on keyframes, so a segment is at most this long when the
    /// camera's keyframe interval divides it, and one keyframe interval longer otherwise.
    pub segment_s: f64,
    /// The rolling buffer every recorded camera keeps, so that an event can start with its pre-roll.
    /// Older segments stay only while a retained event (or `continuous_days`) needs them.
    pub window_s: f64,
    /// Default of `[camera.record] event_days`. (`clip_max_age_days`, its name before clips were made on
    /// request, is still read.)
    #[serde(alias = "clip_max_age_days")]
    pub event_days: f64,
    /// Everything recorded (segments, snapshots, the clip cache) never takes more than this; beyond, the
    /// oldest go first, across cameras.
    pub max_bytes: u64,
    /// The largest share of `max_bytes` one event may hold: a longer event keeps the first and last half of
    /// its share (its start and its end), and the middle follows the camera's ordinary retention.
    pub max_event_share: f64,
    /// Clips and exports are made on request by copying segments; the files made are kept in a cache of at
    /// most this many bytes (oldest-used evicted first), so that a player's range requests and repeated
    /// downloads do not make them again. Default: 128 MiB, or an eighth of `max_bytes` when that is less.
    pub clip_cache_bytes: Option<u64>,
    /// Low watermarks of the recording file system: below either, the oldest recordings are deleted before
    /// the disk can fill (other writers on the same disk included).
    pub min_free_bytes: u64,
    pub min_free_percent: f64,
    /// A manual recording (`cmd/record` start) that is never stopped ends by itself after this long.
    pub manual_max_s: f64,
    /// Consecutive or overlapping events of a camera form one review item of at most about this long: on a
    /// street busy all day, a new item begins once the current one is this long.
    pub review_max_s: f64,
    /// How long an ended event waits for its post-roll to be recorded before its `clip` message says what
    /// exists.
    pub clip_wait_s: f64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            dir: None,
            segment_s: 2.0,
            window_s: 120.0,
            event_days: 7.0,
            max_bytes: 4 << 30,
            max_event_share: 0.25,
            clip_cache_bytes: None,
            min_free_bytes: 256 << 20,
            min_free_percent: 5.0,
            manual_max_s: 600.0,
            clip_wait_s: 30.0,
            review_max_s: 300.0,
        }
    }
}

impl RecordConfig {
    /// The clip cache's size: as set, else 128 MiB or an eighth of the quota, whichever is less (at least
    /// 1 MiB).
    pub fn clip_cache_bytes(&self) -> u64 {
        self.clip_cache_bytes.unwrap_or((128 << 20).min(self.max_bytes / 8).max(1 << 20))
    }
}

impl Section for RecordConfig {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(dir) = self.dir.as_mut() {
            crate::util::config::resolve(base, dir);
        }
    }

    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if !(0.5..=60.0).contains(&self.segment_s) {
            p.push(Problem::new(format!("{key}.segment_s"), format!("{} is out of range: use 0.5..=60 seconds (2 is a good start)", self.segment_s)));
        }
        if !(self.window_s >= 10.0 && self.window_s <= 86_400.0) || self.window_s < 2.0 * self.segment_s {
            p.push(Problem::new(
                format!("{key}.window_s"),
                format!("{} is out of range: use 10..=86400 seconds and at least two segments; it must cover the longest pre-roll", self.window_s),
            ));
        }
        p.extend(days(&format!("{key}.event_days"), self.event_days));
        if !(self.max_event_share > 0.0 && self.max_event_share <= 1.0) {
            p.push(Problem::new(
                format!("{key}.max_event_share"),
                format!("{} is out of range: use a fraction above 0 and at most 1 (0.25 is a good start)", self.max_event_share),
            ));
        }
        if let Some(c) = self.clip_cache_bytes
            && self.max_bytes >= 1 << 20
            && (c < 1 << 20 || c > self.max_bytes / 2)
        {
            p.push(Problem::new(format!("{key}.clip_cache_bytes"), format!("{c} is out of range: use at least 1 MiB (1048576) and at most half of max_bytes")));
        }
        if self.max_bytes < 1 << 20 {
            p.push(Problem::new(
                format!("{key}.max_bytes"),
                format!("{} is too small: allow at least 1 MiB (1048576); a few minutes of one camera take 50 MiB", self.max_bytes),
            ));
        }
        if !(0.0..=50.0).contains(&self.min_free_percent) {
            p.push(Problem::new(format!("{key}.min_free_percent"), format!("{} is out of range: use 0..=50", self.min_free_percent)));
        } else if self.min_free_bytes == 0 && self.min_free_percent == 0.0 {
            p.push(Problem::new(
                format!("{key}.min_free_bytes"),
                "0 with min_free_percent = 0 would let recording fill the disk: keep a free-space watermark (e.g. min_free_bytes = 268435456 or min_free_percent = 5)",
            ));
        }
        if !(self.manual_max_s >= 1.0 && self.manual_max_s <= 86_400.0) {
            p.push(Problem::new(format!("{key}.manual_max_s"), format!("{} is out of range: use 1..=86400 seconds", self.manual_max_s)));
        }
        if !(self.review_max_s >= 5.0 && self.review_max_s <= 86_400.0) {
            p.push(Problem::new(format!("{key}.review_max_s"), format!("{} is out of range: use 5..=86400 seconds", self.review_max_s)));
        }
        if !(self.clip_wait_s >= 0.0 && self.clip_wait_s <= 3600.0) {
            p.push(Problem::new(format!("{key}.clip_wait_s"), format!("{} is out of range: use 0..=3600 seconds", self.clip_wait_s)));
        }
        p
    }
}

/// Recording of one camera (`[camera.record]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraRecordConfig {
    /// Keep rolling segments of this camera's encoded stream (H.264/H.265 from RTSP or files; copied, never
    /// re-encoded); each event keeps the part of them it covers.
    pub enabled: bool,
    /// Seconds kept before an event starts, and after it ends.
    pub pre_roll_s: f64,
    pub post_roll_s: f64,
    /// Keep every segment of this camera this many days (0: only what events and the rolling window need).
    pub continuous_days: f64,
    /// Keep the video of this camera's events this many days after they end (default: `[record]
    /// event_days`).
    pub event_days: Option<f64>,
}

impl Default for CameraRecordConfig {
    fn default() -> Self {
        Self { enabled: true, pre_roll_s: 5.0, post_roll_s: 10.0, continuous_days: 0.0, event_days: None }
    }
}

/// A number of days within 0 (exclusive) and ten years.
fn days(key: &str, v: f64) -> Option<Problem> {
    (!(v > 0.0 && v <= 3650.0)).then(|| Problem::new(key, format!("{v} is out of range: use a number of days above 0 (at most 3650)")))
}

impl CameraRecordConfig {
    pub fn validate(&self, key: &str, store: &RecordConfig) -> Vec<Problem> {
        let mut p = Vec::new();
        if !(0.0..=300.0).contains(&self.pre_roll_s) {
            p.push(Problem::new(format!("{key}.pre_roll_s"), format!("{} is out of range: use 0..=300 seconds", self.pre_roll_s)));
        } else if self.pre_roll_s + store.segment_s > store.window_s {
            p.push(Problem::new(
                format!("{key}.pre_roll_s"),
                format!("{} s does not fit in record.window_s ({} s): raise the window or shorten the pre-roll", self.pre_roll_s, store.window_s),
            ));
        }
        if !(0.0..=300.0).contains(&self.post_roll_s) {
            p.push(Problem::new(format!("{key}.post_roll_s"), format!("{} is out of range: use 0..=300 seconds", self.post_roll_s)));
        }
        if !(0.0..=3650.0).contains(&self.continuous_days) {
            p.push(Problem::new(
                format!("{key}.continuous_days"),
                format!("{} is out of range: use 0..=3650 days (0 keeps only events)", self.continuous_days),
            ));
        }
        if let Some(d) = self.event_days {
            p.extend(days(&format!("{key}.event_days"), d));
        }
        p
    }

    /// How long this camera's events keep their video after they end.
    pub fn event_days(&self, store: &RecordConfig) -> f64 {
        self.event_days.unwrap_or(store.event_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let store = RecordConfig::default();
        assert!(store.validate("record").is_empty());
        assert!(CameraRecordConfig::default().validate("camera[0].record", &store).is_empty());
    }

    #[test]
    fn event_and_continuous_retention_per_camera() {
        // The key's old name is still read, so a box's config survives the upgrade.
        let store: RecordConfig = toml::from_str("clip_max_age_days = 3").unwrap();
        assert_eq!(store.event_days, 3.0);
        let cam: CameraRecordConfig = toml::from_str("continuous_days = 2\nevent_days = 30").unwrap();
        assert!(cam.validate("camera[0].record", &store).is_empty());
        assert_eq!((cam.event_days(&store), CameraRecordConfig::default().event_days(&store)), (30.0, 3.0));
        let bad = CameraRecordConfig { continuous_days: -1.0, event_days: Some(0.0), ..Default::default() };
        let keys: Vec<_> = bad.validate("camera[0].record", &store).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["camera[0].record.continuous_days", "camera[0].record.event_days"]);
        assert_eq!(RecordConfig::default().clip_cache_bytes(), 128 << 20);
        assert_eq!(RecordConfig { max_bytes: 64 << 20, ..Default::default() }.clip_cache_bytes(), 8 << 20);
        let share = RecordConfig { max_event_share: 0.0, clip_cache_bytes: Some(3 << 30), ..Default::default() };
        let keys: Vec<_> = share.validate("record").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["record.max_event_share", "record.clip_cache_bytes"]);
    }

    #[test]
    fn problems_name_the_key() {
        let store = RecordConfig { segment_s: 0.1, window_s: 5.0, max_bytes: 1, ..Default::default() };
        let keys: Vec<_> = store.validate("record").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["record.segment_s", "record.window_s", "record.max_bytes"]);
        let no_watermark = RecordConfig { min_free_bytes: 0, min_free_percent: 0.0, ..Default::default() };
        let p = no_watermark.validate("record");
        assert_eq!(p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["record.min_free_bytes"]);
        assert!(p[0].message.contains("fill the disk"), "{}", p[0].message);
        assert!(RecordConfig { min_free_bytes: 0, ..Default::default() }.validate("record").is_empty(), "a percentage alone is a watermark");
        let cam = CameraRecordConfig { pre_roll_s: 200.0, ..Default::default() };
        let p = cam.validate("camera[0].record", &RecordConfig::default());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "camera[0].record.pre_roll_s");
        assert!(p[0].message.contains("window_s"), "{}", p[0].message);
    }
}
