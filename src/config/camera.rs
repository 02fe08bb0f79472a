//! Per-camera configuration (`[[camera]]` tables): capture's settings and the camera's sections of the
//! stages its frames go through (`[camera.track]`, `[camera.record]`, `[camera.cadence]`). It composes
//! those stages' sections, so it sits in the config layer; each stage gets only its part
//! ([`CameraConfig::capture`], `track`, `record`, `cadence`).

use std::path::Path;

use serde::Deserialize;

use crate::capture::{CaptureSettings, DecodeMode, RtspTransport, Source};
use crate::record::CameraRecordConfig;
use crate::track::TrackerConfig;
use crate::util::config::{Problem, Section, is_identifier};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Short unique name (letters, digits, `-`, `_`): used in topics, file names and logs.
    pub id: String,
    /// `rtsp://[user:pass@]host[:port]/path`, `file:///path/video.mp4`, `v4l2:///dev/video0`, `test://PATTERN`.
    pub source: String,
    /// The camera's sub-stream (RTSP or file), decoded for detection while `source` (its main stream) is
    /// only copied to disk: decoding 640×360 costs a fraction of 1080p. Snapshots still come from the main
    /// stream's recording, at its resolution.
    pub detect_source: Option<String>,
    /// A disabled camera is configured but not opened.
    pub enabled: bool,
    /// Frames per second handed to the detector; the pipeline drops the rest before decoding work downstream.
    pub detect_fps: f64,
    /// `[width, height]` box that frames are scaled into (aspect kept) before detection. Default: the model's
    /// input size, which makes letterboxing a plain copy.
    pub detect_size: Option<[u32; 2]>,
    /// Labels to report (model label names). Empty: all labels.
    pub labels: Vec<String>,
    /// Detections scoring below this are not reported.
    pub min_score: f32,
    /// A stream that delivers no frame for this long is treated as failed and reconnected (at least three
    /// frame intervals at a slow `detect_fps`).
    pub stall_timeout_s: f64,
    /// First reconnect delay; doubles on each failure up to `reconnect_max_s`, with ±20 % jitter.
    pub reconnect_initial_s: f64,
    pub reconnect_max_s: f64,
    /// `file://` sources: start over at the end of the file (true), or end the camera (false).
    pub loop_file: bool,
    pub rtsp_transport: RtspTransport,
    /// RTSP jitter-buffer latency.
    pub rtsp_latency_ms: u32,
    /// `"all"`, or `"keyframes_when_idle"`: an idle camera's decoder gets keyframes only (see
    /// [`DecodeMode`]).
    pub decode: DecodeMode,
    /// Threads of a software decoder. One is enough for a camera stream up to 1080p at 25 fps, and several
    /// cameras spread over the cores by themselves; frame threads each hold pictures of their own (memory)
    /// and hand work between them (CPU). 0: the decoder's own choice, for one large stream on many cores.
    pub decode_threads: u32,
    /// Tracking and event triggers (`[camera.track]`).
    pub track: TrackerConfig,
    /// Rolling segments and event clips (`[camera.record]`).
    pub record: CameraRecordConfig,
    /// Lower detection rate while nothing is seen and nothing moves (`[camera.cadence]`).
    pub cadence: crate::detect::cadence::CadenceConfig,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            source: String::new(),
            detect_source: None,
            enabled: true,
            detect_fps: 5.0,
            detect_size: None,
            labels: Vec::new(),
            min_score: 0.5,
            stall_timeout_s: 10.0,
            reconnect_initial_s: 1.0,
            reconnect_max_s: 60.0,
            loop_file: true,
            rtsp_transport: RtspTransport::Tcp,
            rtsp_latency_ms: 200,
            decode: DecodeMode::All,
            decode_threads: 1,
            track: TrackerConfig::default(),
            record: CameraRecordConfig::default(),
            cadence: Default::default(),
        }
    }
}

impl CameraConfig {
    /// Whether this camera's stream is recorded: enabled, and a source that carries an encoded stream.
    pub fn records(&self) -> bool {
        self.enabled && self.record.enabled && matches!(Source::parse(&self.source), Ok(Source::Rtsp(_) | Source::File(_)))
    }

    /// What the camera's capture thread needs.
    pub fn capture(&self) -> CaptureSettings {
        CaptureSettings {
            id: self.id.clone(),
            source: self.source.clone(),
            detect_source: self.detect_source.clone(),
            detect_fps: self.detect_fps,
            rtsp_transport: self.rtsp_transport,
            rtsp_latency_ms: self.rtsp_latency_ms,
            connect_timeout: std::time::Duration::from_secs_f64(self.stall_timeout_s),
            stall_timeout: self.stall_timeout(),
            reconnect_initial: std::time::Duration::from_secs_f64(self.reconnect_initial_s),
            reconnect_max: std::time::Duration::from_secs_f64(self.reconnect_max_s),
            loop_file: self.loop_file,
            decode: self.decode,
            decode_threads: self.decode_threads,
        }
    }

    /// The time between two frames handed to the detector.
    pub fn frame_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.detect_fps)
    }

    /// How long without a frame before the stream counts as stalled: `stall_timeout_s`, or three frame
    /// intervals when `detect_fps` is slower than that (at 0.1 fps a frame comes only every 10 s).
    pub fn stall_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.stall_timeout_s).max(self.frame_interval() * 3)
    }

    /// The masked source URI, for logs and status output.
    pub fn masked_source(&self) -> String {
        crate::util::mask_uri(&self.source)
    }
}

/// `file://relative/path` is not a valid URI; a bare relative path is accepted for convenience in demos.
fn resolve_file_uri(source: &mut String, base: &Path) {
    if let Some(rest) = source.strip_prefix("file://")
        && !rest.starts_with('/')
    {
        let path = base.join(rest);
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        *source = format!("file://{}", path.display());
    }
}

impl Section for CameraConfig {
    fn resolve_paths(&mut self, base: &Path) {
        resolve_file_uri(&mut self.source, base);
        if let Some(sub) = self.detect_source.as_mut() {
            resolve_file_uri(sub, base);
        }
    }

    /// Problems with this camera's settings; `key` is its position, e.g. `camera[2]`.
    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.id.is_empty() {
            p.push(Problem::new(format!("{key}.id"), "missing: give the camera a short name, e.g. id = \"gate\""));
        } else if !is_identifier(&self.id) {
            p.push(Problem::new(format!("{key}.id"), format!("{:?} may only contain letters, digits, `-` and `_`", self.id)));
        }
        let main = Source::parse(&self.source);
        if let Err(e) = &main {
            p.push(Problem::new(format!("{key}.source"), e.to_string()));
        }
        if let Some(sub) = &self.detect_source {
            match (Source::parse(sub), &main) {
                (Err(e), _) => p.push(Problem::new(format!("{key}.detect_source"), e.to_string())),
                (Ok(Source::Rtsp(_) | Source::File(_)), Ok(Source::Rtsp(_) | Source::File(_))) => {}
                _ => p.push(Problem::new(
                    format!("{key}.detect_source"),
                    "a sub-stream needs RTSP or file sources on both: source (the main stream, recorded) and detect_source (decoded for detection)",
                )),
            }
        }
        if !(self.detect_fps > 0.0 && self.detect_fps <= 60.0) {
            p.push(Problem::new(format!("{key}.detect_fps"), format!("{} is out of range: use a rate above 0 and at most 60", self.detect_fps)));
        }
        if let Some([w, h]) = self.detect_size
            && !((32..=4096).contains(&w) && (32..=4096).contains(&h))
        {
            p.push(Problem::new(format!("{key}.detect_size"), format!("[{w}, {h}] is out of range: each side must be 32..=4096 pixels")));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            p.push(Problem::new(format!("{key}.min_score"), format!("{} is out of range: use a score between 0 and 1", self.min_score)));
        }
        if !(self.stall_timeout_s >= 1.0 && self.stall_timeout_s <= 3600.0) {
            p.push(Problem::new(format!("{key}.stall_timeout_s"), format!("{} is out of range: use 1..=3600 seconds", self.stall_timeout_s)));
        }
        if !(self.reconnect_initial_s >= 0.05 && self.reconnect_initial_s <= 3600.0) {
            p.push(Problem::new(format!("{key}.reconnect_initial_s"), format!("{} is out of range: use 0.05..=3600 seconds", self.reconnect_initial_s)));
        }
        if !(self.reconnect_max_s >= self.reconnect_initial_s && self.reconnect_max_s <= 3600.0) {
            p.push(Problem::new(format!("{key}.reconnect_max_s"), format!("{} must be at least reconnect_initial_s and at most 3600", self.reconnect_max_s)));
        }
        p.extend(self.track.validate(&format!("{key}.track")));
        p.extend(self.cadence.validate(&format!("{key}.cadence")));
        if self.decode == DecodeMode::KeyframesWhenIdle && !self.cadence.enabled {
            p.push(Problem::new(
                format!("{key}.decode"),
                "\"keyframes_when_idle\" needs the adaptive cadence, which decides when the camera is idle: set cadence.enabled = true, or decode = \"all\"",
            ));
        }
        if self.decode_threads > 64 {
            p.push(Problem::new(format!("{key}.decode_threads"), format!("{} is out of range: use 0 (the decoder's choice) up to 64", self.decode_threads)));
        }
        if self.rtsp_latency_ms > 10_000 {
            p.push(Problem::new(format!("{key}.rtsp_latency_ms"), format!("{} is out of range: use at most 10000 ms", self.rtsp_latency_ms)));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sub_stream_needs_encoded_sources_on_both_sides() {
        let cam = |source: &str, sub: &str| CameraConfig { id: "gate".into(), source: source.into(), detect_source: Some(sub.into()), ..Default::default() };
        let keys = |c: CameraConfig| c.validate("camera[0]").into_iter().map(|p| p.key).collect::<Vec<_>>();
        assert!(keys(cam("rtsp://cam/main", "rtsp://cam/sub")).is_empty());
        assert_eq!(keys(cam("rtsp://cam/main", "test://ball")), ["camera[0].detect_source"]);
        assert_eq!(keys(cam("v4l2:///dev/video0", "rtsp://cam/sub")), ["camera[0].detect_source"]);
        assert_eq!(keys(cam("rtsp://cam/main", "ftp://nope")), ["camera[0].detect_source"]);
        let mut c = cam("file://main.mp4", "file://sub.mp4");
        c.resolve_paths(Path::new("/videos"));
        assert_eq!((c.source.as_str(), c.detect_source.as_deref()), ("file:///videos/main.mp4", Some("file:///videos/sub.mp4")));
        assert_eq!(c.capture().detect_source.as_deref(), Some("file:///videos/sub.mp4"));
    }

    #[test]
    fn decoding_keyframes_only_needs_the_cadence_that_says_when_a_camera_is_idle() {
        let cam: CameraConfig = toml::from_str("id = \"gate\"\nsource = \"rtsp://cam/main\"\ndecode = \"keyframes_when_idle\"").unwrap();
        assert!(cam.validate("camera[0]").is_empty());
        assert_eq!((cam.capture().decode, cam.capture().decode_threads), (DecodeMode::KeyframesWhenIdle, 1));
        let off: CameraConfig =
            toml::from_str("id = \"gate\"\nsource = \"rtsp://cam/main\"\ndecode = \"keyframes_when_idle\"\ndecode_threads = 65\n[cadence]\nenabled = false")
                .unwrap();
        let problems = off.validate("camera[0]");
        assert_eq!(problems.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["camera[0].decode", "camera[0].decode_threads"]);
        assert!(problems[0].message.contains("cadence.enabled = true"), "{}", problems[0].message);
        assert!(toml::from_str::<CameraConfig>("id = \"gate\"\nsource = \"rtsp://cam/main\"\ndecode = \"some\"").is_err(), "unknown modes are refused");
    }

    #[test]
    fn a_slow_camera_is_given_three_frame_intervals_before_it_counts_as_stalled() {
        let mut c = CameraConfig { detect_fps: 5.0, ..Default::default() };
        assert_eq!(c.stall_timeout(), Duration::from_secs(10));
        c.detect_fps = 0.1;
        assert_eq!(c.frame_interval(), Duration::from_secs(10));
        assert_eq!(c.stall_timeout(), Duration::from_secs(30));
    }
}
