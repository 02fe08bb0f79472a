//! What a camera's capture thread is told: taken from its `[[camera]]` table
//! ([`crate::config::camera::CameraConfig::capture`]), which also holds the sections of the stages after
//! capture (`[camera.track]`, `[camera.record]`, `[camera.cadence]`); capture sees only its own part.

use std::time::Duration;

use serde::Deserialize;

/// How RTSP media is carried. TCP (interleaved) is the default: it survives NAT, firewalls and lossy Wi-Fi
/// bridges that drop UDP, at a small latency cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
    /// Let rtspsrc try UDP, then fall back to TCP.
    Auto,
}

/// What a camera's decoder is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DecodeMode {
    /// Every frame of the stream is decoded (the rate limit applies after the decoder).
    #[default]
    All,
    /// While the camera is idle (adaptive cadence: nothing seen for `idle_after_s`), only keyframes reach
    /// the decoder; the motion check runs on them, and the first keyframe after the camera wakes brings
    /// back every frame. A static camera then decodes one picture per GOP. Wake-up takes up to one GOP,
    /// so it suits cameras with a short keyframe interval (1–2 s).
    KeyframesWhenIdle,
}

/// One camera's capture settings.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// The camera's id, for logs.
    pub id: String,
    /// The source URI (credentials included: only [`super::CameraStatus::source`] is printed).
    pub source: String,
    /// A lower-resolution stream of the same camera to decode for detection instead; `source` is then
    /// only recorded.
    pub detect_source: Option<String>,
    /// Frames per second handed to the detector.
    pub detect_fps: f64,
    pub rtsp_transport: RtspTransport,
    pub rtsp_latency_ms: u32,
    /// How long to wait for an RTSP server to answer.
    pub connect_timeout: Duration,
    /// No frame for this long: the stream stalled and is opened again.
    pub stall_timeout: Duration,
    /// First and longest reconnect delay (doubling, with jitter).
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// `file://` sources: start over at the end (true), or end the camera.
    pub loop_file: bool,
    pub decode: DecodeMode,
    /// Threads of a software decoder (`avdec_*`); 0: the decoder's own choice (one per core, plus one).
    pub decode_threads: u32,
}
