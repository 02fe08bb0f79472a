//! Adaptive cadence: a camera that has seen nothing for a while is detected at a lower idle rate, and a
//! cheap motion check on the already downscaled frame brings it back to full rate the moment something
//! moves. Skipped frames are counted per camera.
//!
//! The motion check compares a 64×36 grey thumbnail of the frame (a few samples per cell, no allocation)
//! with the thumbnail of the last frame that was detected: motion is enough cells changing by at least
//! `motion_cell_delta` grey levels. Averaging over a cell smooths sensor noise and compression artefacts;
//! a person far away still covers a cell or two.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::capture::FrameView;
use crate::util::config::{Problem, Section};

const TW: usize = 64;
const TH: usize = 36;
/// After motion, an idle camera counts as still again only once nothing has moved for this long.
const MOTION_HOLD: Duration = Duration::from_secs(2);

/// `[camera.cadence]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CadenceConfig {
    /// Off: every frame at `detect_fps` is detected.
    pub enabled: bool,
    /// After this long without any detection the camera is idle.
    pub idle_after_s: f64,
    /// Detection rate of an idle camera when nothing moves.
    pub idle_fps: f64,
    /// A thumbnail cell changed when its grey level moved by at least this much (0–255).
    pub motion_cell_delta: u8,
    /// Motion: at least this fraction of the cells changed.
    pub motion_cells: f64,
}

impl Default for CadenceConfig {
    fn default() -> Self {
        // An idle camera is checked every 5 s, and at once when something moves: with `decode =
        // "keyframes_when_idle"` its cost is then mostly one decoded keyframe per GOP (measured with
        // bench/idle_camera.sh: 0.14× a busy camera at 0.2 fps, 0.24× at 1 fps).
        Self { enabled: true, idle_after_s: 30.0, idle_fps: 0.2, motion_cell_delta: 12, motion_cells: 0.002 }
    }
}

impl Section for CadenceConfig {
    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if !(self.idle_after_s >= 1.0 && self.idle_after_s <= 86_400.0) {
            p.push(Problem::new(format!("{key}.idle_after_s"), format!("{} is out of range: use 1..=86400 seconds", self.idle_after_s)));
        }
        if !(self.idle_fps > 0.0 && self.idle_fps <= 60.0) {
            p.push(Problem::new(format!("{key}.idle_fps"), format!("{} is out of range: use a rate above 0 and at most 60", self.idle_fps)));
        }
        if !(0.0..=1.0).contains(&self.motion_cells) {
            p.push(Problem::new(format!("{key}.motion_cells"), format!("{} is out of range: use a fraction between 0 and 1", self.motion_cells)));
        }
        p
    }
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Detect,
    /// Idle camera, nothing moved, not yet time for the idle-rate check.
    Skip,
}

/// The cadence state of one camera.
pub struct Cadence {
    cfg: CadenceConfig,
    thumb: [u8; TW * TH],
    last: [u8; TW * TH],
    has_last: bool,
    last_detect: Option<SystemTime>,
    last_seen: Option<SystemTime>,
    started: Option<SystemTime>,
    /// Nothing seen for `idle_after_s`, as of the last frame.
    idle: bool,
    /// When the motion check last found motion.
    last_motion: Option<SystemTime>,
    /// Idle, and no motion for [`MOTION_HOLD`], as of the last frame.
    still: bool,
}

impl Cadence {
    pub fn new(cfg: CadenceConfig) -> Self {
        Self {
            cfg,
            thumb: [0; TW * TH],
            last: [0; TW * TH],
            has_last: false,
            last_detect: None,
            last_seen: None,
            started: None,
            idle: false,
            last_motion: None,
            still: false,
        }
    }

    fn secs(a: SystemTime, b: Option<SystemTime>) -> f64 {
        b.map_or(f64::INFINITY, |b| a.duration_since(b).unwrap_or(Duration::ZERO).as_secs_f64())
    }

    /// Whether the frame taken at `now` should be detected.
    pub fn decide(&mut self, frame: &FrameView<'_>, now: SystemTime) -> Decision {
        if !self.cfg.enabled {
            return Decision::Detect;
        }
        let started = *self.started.get_or_insert(now);
        // Active: something was seen recently, or the camera has only just started.
        let quiet_for = Self::secs(now, self.last_seen).min(Self::secs(now, Some(started)));
        self.idle = quiet_for >= self.cfg.idle_after_s;
        self.still = self.idle && Self::secs(now, self.last_motion) >= MOTION_HOLD.as_secs_f64();
        if !self.idle {
            return Decision::Detect;
        }
        if Self::secs(now, self.last_detect) >= 1.0 / self.cfg.idle_fps {
            return Decision::Detect;
        }
        thumbnail(frame, &mut self.thumb);
        if self.has_last && self.moved() {
            self.last_motion = Some(now);
            self.still = false;
            return Decision::Detect;
        }
        Decision::Skip
    }

    fn moved(&self) -> bool {
        let delta = self.cfg.motion_cell_delta;
        let changed = self.thumb.iter().zip(&self.last).filter(|(a, b)| a.abs_diff(**b) >= delta).count();
        changed as f64 >= (self.cfg.motion_cells * (TW * TH) as f64).max(1.0)
    }

    /// Records a detected frame: its thumbnail becomes the reference, and whether it held anything.
    pub fn detected(&mut self, frame: &FrameView<'_>, now: SystemTime, found_something: bool) {
        if !self.cfg.enabled {
            return;
        }
        thumbnail(frame, &mut self.last);
        self.has_last = true;
        self.last_detect = Some(now);
        if found_something {
            self.last_seen = Some(now);
            self.idle = false;
            self.still = false;
        }
    }

    /// Whether the camera is idle: nothing detected for `idle_after_s` (never when the cadence is off).
    pub fn idle(&self) -> bool {
        self.idle
    }

    /// Idle, and the motion check has found nothing for 2 s: capture may then feed the decoder keyframes
    /// only (`decode = "keyframes_when_idle"`). Motion on a keyframe clears it at once, so decoding is back
    /// to every frame from the next keyframe and the detector sees the full rate while things move, even
    /// before it recognises anything.
    pub fn still(&self) -> bool {
        self.still
    }
}

/// Grey 64×36 thumbnail: the mean of four samples per cell, (B + 2G + R) / 4.
fn thumbnail(frame: &FrameView<'_>, out: &mut [u8; TW * TH]) {
    let (w, h) = (frame.width as usize, frame.height as usize);
    if w < TW || h < TH {
        out.fill(0);
        return;
    }
    for cy in 0..TH {
        for cx in 0..TW {
            let mut sum = 0u32;
            for (fx, fy) in [(1, 1), (3, 1), (1, 3), (3, 3)] {
                let x = (cx * 4 + fx) * w / (TW * 4);
                let y = (cy * 4 + fy) * h / (TH * 4);
                let i = y * frame.stride + x * 3;
                let px = &frame.data[i..i + 3];
                sum += (px[0] as u32 + 2 * px[1] as u32 + px[2] as u32) / 4;
            }
            out[cy * TW + cx] = (sum / 4) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000_000.0 + s)
    }

    /// A grey 416×234 frame with a dark square at `x`.
    fn frame(x: Option<usize>) -> Vec<u8> {
        let (w, h) = (416, 234);
        let mut v = vec![128u8; w * h * 3];
        if let Some(x0) = x {
            for y in 100..130 {
                for x in x0..x0 + 20 {
                    v[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[20, 20, 20]);
                }
            }
        }
        v
    }

    #[test]
    fn idle_cameras_slow_down_and_wake_on_motion() {
        let cfg = CadenceConfig { idle_after_s: 5.0, idle_fps: 1.0, ..Default::default() };
        let mut c = Cadence::new(cfg);
        let still = frame(None);
        let view = FrameView::packed(&still, 416, 234);
        // Active for the first idle_after_s: every frame (10 fps).
        let mut detected = 0;
        for i in 0..50 {
            let t = at(i as f64 * 0.1);
            if c.decide(&view, t) == Decision::Detect {
                detected += 1;
                c.detected(&view, t, false);
            }
        }
        assert_eq!(detected, 50);
        // Idle, nothing moving: one frame a second.
        let mut detected = 0;
        for i in 50..100 {
            let t = at(i as f64 * 0.1);
            if c.decide(&view, t) == Decision::Detect {
                detected += 1;
                c.detected(&view, t, false);
            }
        }
        assert!((4..=6).contains(&detected), "{detected} frames in 5 idle seconds at 1 fps");
        // A small object moves in: detected at once.
        let moved = frame(Some(200));
        let mv = FrameView::packed(&moved, 416, 234);
        assert_eq!(c.decide(&mv, at(10.05)), Decision::Detect);
        c.detected(&mv, at(10.05), true);
        // Something was seen: active again, every frame.
        assert!(!c.idle(), "a detection wakes the camera at once");
        assert_eq!(c.decide(&mv, at(10.1)), Decision::Detect);
    }

    #[test]
    fn the_idle_flag_follows_what_is_seen() {
        let mut c = Cadence::new(CadenceConfig { idle_after_s: 2.0, ..Default::default() });
        let still = frame(None);
        let view = FrameView::packed(&still, 416, 234);
        c.decide(&view, at(0.0));
        c.detected(&view, at(0.0), false);
        assert!(!c.idle(), "a camera that has just started is active");
        c.decide(&view, at(2.5));
        assert!(c.idle() && c.still(), "nothing seen for idle_after_s, nothing moving");
        c.detected(&view, at(2.5), false);
        assert!(c.idle(), "an empty detection keeps it idle");
        c.detected(&view, at(3.0), true);
        assert!(!c.idle());
        c.decide(&view, at(4.0));
        assert!(!c.idle(), "seen 1 s ago");
        let mut off = Cadence::new(CadenceConfig { enabled: false, idle_after_s: 1.0, ..Default::default() });
        off.decide(&view, at(100.0));
        assert!(!off.idle() && !off.still(), "without the cadence a camera is never idle");
    }

    #[test]
    fn motion_keeps_an_idle_camera_from_counting_as_still_for_a_while() {
        let mut c = Cadence::new(CadenceConfig { idle_after_s: 1.0, idle_fps: 0.01, ..Default::default() });
        let (a, b) = (frame(None), frame(Some(200)));
        let (still, moved) = (FrameView::packed(&a, 416, 234), FrameView::packed(&b, 416, 234));
        assert_eq!(c.decide(&still, at(0.0)), Decision::Detect);
        c.detected(&still, at(0.0), false);
        assert_eq!(c.decide(&still, at(5.0)), Decision::Skip);
        assert!(c.still());
        // Motion, but the detector finds nothing in it: still idle, no longer still.
        assert_eq!(c.decide(&moved, at(6.0)), Decision::Detect);
        c.detected(&moved, at(6.0), false);
        assert!(c.idle() && !c.still());
        // The same picture again: nothing moves, but for less than the hold.
        assert_eq!(c.decide(&moved, at(7.0)), Decision::Skip);
        assert!(!c.still(), "1 s after motion");
        assert_eq!(c.decide(&moved, at(8.5)), Decision::Skip);
        assert!(c.still(), "2.5 s after motion");
    }

    #[test]
    fn disabled_detects_everything() {
        let mut c = Cadence::new(CadenceConfig { enabled: false, idle_after_s: 1.0, ..Default::default() });
        let still = frame(None);
        let view = FrameView::packed(&still, 416, 234);
        assert!((0..100).all(|i| c.decide(&view, at(i as f64)) == Decision::Detect));
    }

    #[test]
    fn bad_settings_are_named() {
        let keys: Vec<_> =
            CadenceConfig { idle_fps: 0.0, motion_cells: 2.0, ..Default::default() }.validate("camera[0].cadence").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["camera[0].cadence.idle_fps", "camera[0].cadence.motion_cells"]);
    }
}
