//! Live state of each camera, shared between its capture thread and whoever reports status.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Where a camera is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Opening the stream (first time or after a failure).
    Connecting,
    /// Delivering frames.
    Online,
    /// Failed; waiting to retry.
    Offline,
    /// A non-looping file source reached its end.
    Ended,
    /// Configured with `enabled = false`.
    Disabled,
}

impl CameraState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Online,
            2 => Self::Offline,
            3 => Self::Ended,
            _ => Self::Disabled,
        }
    }
}

/// A camera delivers when online with a frame this recent (or two of its frame intervals, when slower).
pub const FRAME_FRESH: Duration = Duration::from_secs(5);

/// Counters and state of one camera. All updates are lock-free except the last error text.
#[derive(Debug)]
pub struct CameraStatus {
    pub id: String,
    /// Source URI with credentials masked: safe to print.
    pub source: String,
    state: AtomicU8,
    /// Frames delivered to the detector hand-off.
    pub frames: AtomicU64,
    /// Frames replaced in the hand-off before the detector took them (detector busy).
    pub dropped_detector_busy: AtomicU64,
    /// Frames the pipeline's sink dropped before perch pulled them (capture thread late).
    pub dropped_sink: AtomicU64,
    /// Times the stream was opened again after a failure.
    pub reconnects: AtomicU64,
    /// Frames not detected because the camera was idle and nothing moved (adaptive cadence).
    pub skipped_idle: AtomicU64,
    /// Set by the detector while the camera is idle and its picture still (adaptive cadence: nothing seen
    /// for `idle_after_s`, nothing moved for 2 s); with `decode = "keyframes_when_idle"` the capture
    /// pipeline then feeds its decoder keyframes only.
    pub still: AtomicBool,
    /// Frames not decoded at all: dropped before the decoder while the camera was idle.
    pub skipped_decode: AtomicU64,
    /// Wall-clock time of the last encoded frame that reached the decoder's gate (`decode =
    /// "keyframes_when_idle"`), in ms since the Unix epoch (0: none). While only keyframes are decoded, a
    /// camera with a long GOP hands out a picture every few seconds; this says the stream is still alive.
    pub last_input_ms: AtomicU64,
    /// Wall-clock time of the last frame, in ms since the Unix epoch (0: never).
    pub last_frame_ms: AtomicU64,
    /// How old the last frame may be while the camera still counts as delivering (see [`Self::delivering`]).
    fresh_ms: u64,
    last_error: Mutex<Option<String>>,
    /// The capture thread beats on every turn of its loops, connected or not: a thread stuck inside
    /// GStreamer stops beating, and the systemd watchdog stops being fed.
    pub heartbeat: crate::util::Heartbeat,
}

/// A point-in-time copy of a camera's status, for logs and status output.
#[derive(Debug, Clone, Serialize)]
pub struct CameraSnapshot {
    pub id: String,
    pub source: String,
    pub state: CameraState,
    pub frames: u64,
    pub dropped_detector_busy: u64,
    pub dropped_sink: u64,
    pub reconnects: u64,
    pub skipped_idle: u64,
    pub skipped_decode: u64,
    pub still: bool,
    pub last_frame_ms: Option<u64>,
    pub last_error: Option<String>,
}

impl CameraStatus {
    pub fn new(id: &str, masked_source: String, enabled: bool) -> Self {
        Self {
            id: id.to_string(),
            source: masked_source,
            state: AtomicU8::new(if enabled { CameraState::Connecting as u8 } else { CameraState::Disabled as u8 }),
            frames: AtomicU64::new(0),
            dropped_detector_busy: AtomicU64::new(0),
            dropped_sink: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            skipped_idle: AtomicU64::new(0),
            still: AtomicBool::new(false),
            skipped_decode: AtomicU64::new(0),
            last_input_ms: AtomicU64::new(0),
            last_frame_ms: AtomicU64::new(0),
            fresh_ms: FRAME_FRESH.as_millis() as u64,
            last_error: Mutex::new(None),
            heartbeat: Default::default(),
        }
    }

    /// A camera that hands out a frame every `interval` (its `detect_fps`): at a slow rate (0.1 fps, a frame
    /// every 10 s) a frame can be older than [`FRAME_FRESH`] on a healthy stream, so two intervals count.
    pub fn with_frame_interval(mut self, interval: Duration) -> Self {
        self.fresh_ms = FRAME_FRESH.max(interval * 2).as_millis() as u64;
        self
    }

    /// Online with a recent frame: what `/ready` and the OTA health gate ask of every enabled camera. A
    /// camera decoding keyframes only (idle and still) counts by the last frame that reached its decoder's
    /// gate, so a long GOP does not make a healthy idle camera look stalled.
    pub fn delivering(&self, now_ms: u64) -> bool {
        let last = self.last_frame_ms.load(Ordering::Relaxed).max(self.last_input_ms.load(Ordering::Relaxed));
        self.state() == CameraState::Online && self.last_frame_ms.load(Ordering::Relaxed) != 0 && now_ms.saturating_sub(last) <= self.fresh_ms
    }

    /// How long ago the last encoded frame reached the decoder's gate; `None` without a gate.
    pub fn input_age(&self, now_ms: u64) -> Option<Duration> {
        let last = self.last_input_ms.load(Ordering::Relaxed);
        (last != 0).then(|| Duration::from_millis(now_ms.saturating_sub(last)))
    }

    pub fn state(&self) -> CameraState {
        CameraState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; returns the previous one.
    pub fn set_state(&self, state: CameraState) -> CameraState {
        CameraState::from_u8(self.state.swap(state as u8, Ordering::Relaxed))
    }

    /// Whether the camera has finished its first attempt to open the stream (delivering, or failed once).
    pub fn settled(&self) -> bool {
        self.state() != CameraState::Connecting || self.reconnects.load(Ordering::Relaxed) > 0
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    pub fn record_frame(&self, wall: SystemTime) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.last_frame_ms.store(crate::util::unix_ms(wall), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CameraSnapshot {
        let last = self.last_frame_ms.load(Ordering::Relaxed);
        CameraSnapshot {
            id: self.id.clone(),
            source: self.source.clone(),
            state: self.state(),
            frames: self.frames.load(Ordering::Relaxed),
            dropped_detector_busy: self.dropped_detector_busy.load(Ordering::Relaxed),
            dropped_sink: self.dropped_sink.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            skipped_idle: self.skipped_idle.load(Ordering::Relaxed),
            skipped_decode: self.skipped_decode.load(Ordering::Relaxed),
            still: self.still.load(Ordering::Relaxed),
            last_frame_ms: (last != 0).then_some(last),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(interval: Option<Duration>, age_ms: u64) -> bool {
        let mut s = CameraStatus::new("c", "test://ball".into(), true);
        if let Some(i) = interval {
            s = s.with_frame_interval(i);
        }
        s.set_state(CameraState::Online);
        s.last_frame_ms.store(1_000_000, Ordering::Relaxed);
        s.delivering(1_000_000 + age_ms)
    }

    #[test]
    fn a_slow_camera_delivers_while_its_last_frame_is_within_two_intervals() {
        // The 5 s floor for ordinary rates.
        assert!(at(None, 5_000));
        assert!(!at(None, 5_001));
        assert!(!at(Some(Duration::from_millis(200)), 5_001));
        // 0.1 fps: a frame every 10 s.
        assert!(at(Some(Duration::from_secs(10)), 19_000));
        assert!(!at(Some(Duration::from_secs(10)), 20_001));
    }

    #[test]
    fn a_camera_decoding_keyframes_only_delivers_while_its_stream_reaches_the_decoder() {
        let s = CameraStatus::new("c", "test://ball".into(), true);
        s.set_state(CameraState::Online);
        s.last_frame_ms.store(1_000_000, Ordering::Relaxed);
        assert!(!s.delivering(1_009_000), "no picture for 9 s");
        assert_eq!(s.input_age(1_009_000), None);
        // A 10 s GOP: the decoder got its last keyframe 8 s ago, but delta frames keep arriving at the gate.
        s.last_input_ms.store(1_008_960, Ordering::Relaxed);
        assert!(s.delivering(1_009_000));
        assert_eq!(s.input_age(1_009_000), Some(Duration::from_millis(40)));
    }

    #[test]
    fn a_camera_that_is_not_online_never_delivers() {
        let s = CameraStatus::new("c", "test://ball".into(), true);
        s.last_frame_ms.store(1_000_000, Ordering::Relaxed);
        assert!(!s.delivering(1_000_000));
    }
}
