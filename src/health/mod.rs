//! How perch tells others it is alive and well: the systemd notification protocol and its watchdog
//! ([`systemd`]), and local HTTP endpoints for people and machines on the box: liveness (`/health`),
//! readiness (`/ready`), detailed status (`/status`, bearer token), Prometheus metrics (`/metrics`) and a
//! status page (`/`).
//!
//! The service hands this module one [`Handles`] of the counters the stages already keep; the only state
//! added here is [`Live`]: each camera's latest picture with its detections (updated at most once a second,
//! into a reused buffer) and the most recent events, both fed by the output stage.

pub mod api;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod page;
pub mod server;
pub mod systemd;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

pub use config::HttpConfig;

use crate::capture::{CameraState, CameraStatus};
use crate::detect::worker::{DetectStats, FrameDetections};
use crate::detect::{Detections, DetectorState};
use crate::events::Outbox;
use crate::events::publisher::PublisherStats;
use crate::record::RecordStats;
use crate::track::EventKind;

/// How often a camera's picture on the status page is refreshed (and so how often the detector hands a
/// frame on for it).
pub const PREVIEW_EVERY: Duration = Duration::from_secs(1);
/// Event summaries kept for the status page.
pub const RECENT_EVENTS: usize = 20;

/// One camera's latest picture: packed BGR at detection resolution, detections in its pixels.
#[derive(Default)]
struct Preview {
    at: Option<Instant>,
    seq: u64,
    wall_ms: u64,
    width: usize,
    height: usize,
    /// Reused: grows to the frame size once, then only overwritten.
    bgr: Vec<u8>,
    detections: Detections,
}

/// One event as the status page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub seq: u64,
    pub ts: String,
    pub camera: String,
    pub kind: &'static str,
    pub label: String,
    pub score: f32,
    pub event_id: String,
}

/// Measured rates of one camera.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    /// Frames delivered by the capture per second.
    pub fps: f64,
    /// Frames run through the detector per second.
    pub detect_fps: f64,
}

/// What the status endpoints know beyond the stages' own counters.
pub struct Live {
    cameras: Vec<String>,
    previews: Vec<Mutex<Preview>>,
    /// Frames through the detector, per camera.
    processed: Vec<AtomicU64>,
    /// Events per camera and kind (`new`, `update`, `end`).
    events: Vec<[AtomicU64; 3]>,
    recent: Mutex<VecDeque<EventSummary>>,
    rates: Mutex<Vec<Rates>>,
    /// Counting-line crossings per (camera, line, side crossed to). Few keys: the configured lines × 2.
    crossings: Mutex<std::collections::BTreeMap<(usize, String, crate::track::Direction), u64>>,
}

pub const EVENT_KINDS: [&str; 3] = ["new", "update", "end"];

fn kind_index(kind: EventKind) -> usize {
    match kind {
        EventKind::New => 0,
        EventKind::Update => 1,
        EventKind::End => 2,
    }
}

impl Live {
    pub fn new(cameras: Vec<String>) -> Self {
        let n = cameras.len();
        Self {
            previews: (0..n).map(|_| Mutex::new(Preview::default())).collect(),
            processed: (0..n).map(|_| AtomicU64::new(0)).collect(),
            events: (0..n).map(|_| Default::default()).collect(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            rates: Mutex::new(vec![Rates::default(); n]),
            crossings: Mutex::default(),
            cameras,
        }
    }

    pub fn cameras(&self) -> &[String] {
        &self.cameras
    }

    /// Called by the output stage for every processed frame: a counter, and at most once per
    /// [`PREVIEW_EVERY`] a copy of the picture into the camera's reused buffer.
    pub fn frame(&self, f: &FrameDetections) {
        let cam = f.frame.camera;
        let Some(processed) = self.processed.get(cam) else { return };
        processed.fetch_add(1, Relaxed);
        let (Some(image), Some(slot)) = (&f.image, self.previews.get(cam)) else { return };
        let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
        if p.at.is_some_and(|t| t.elapsed() < PREVIEW_EVERY) {
            return;
        }
        let view = image.view();
        let (w, h) = (view.width as usize, view.height as usize);
        p.bgr.clear();
        for row in view.data.chunks(view.stride).take(h) {
            p.bgr.extend_from_slice(&row[..w * 3]);
        }
        let sx = view.width as f32 / view.source_width.max(1) as f32;
        let sy = view.height as f32 / view.source_height.max(1) as f32;
        p.detections.clear();
        for d in &f.detections {
            let mut d = d.clone();
            d.bbox = [d.bbox[0] * sx, d.bbox[1] * sy, d.bbox[2] * sx, d.bbox[3] * sy];
            // Same capacity: cannot overflow.
            let _ = p.detections.push(d);
        }
        (p.width, p.height, p.seq) = (w, h, f.frame.seq);
        p.wall_ms = crate::util::unix_ms(f.frame.wall);
        p.at = Some(Instant::now());
    }

    /// Called by the event stage for each stored event.
    pub fn event(&self, e: &crate::track::TrackEvent, seq: u64, event_id: &str) {
        let Some(counts) = self.events.get(e.camera) else { return };
        counts[kind_index(e.kind)].fetch_add(1, Relaxed);
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT_EVENTS {
            r.pop_front();
        }
        r.push_back(EventSummary {
            seq,
            ts: crate::events::schema::rfc3339(SystemTime::now()),
            camera: self.cameras[e.camera].clone(),
            kind: EVENT_KINDS[kind_index(e.kind)],
            label: e.label.to_string(),
            score: e.score,
            event_id: event_id.to_string(),
        });
    }

    /// Newest first.
    pub fn recent_events(&self) -> Vec<EventSummary> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect()
    }

    pub fn processed(&self, cam: usize) -> u64 {
        self.processed.get(cam).map_or(0, |p| p.load(Relaxed))
    }

    /// Counts one crossing of a camera's counting line.
    pub fn crossing(&self, cam: usize, line: &str, to: crate::track::Direction) {
        let mut c = self.crossings.lock().unwrap_or_else(|e| e.into_inner());
        match c.get_mut(&(cam, line.to_string(), to)) {
            Some(n) => *n += 1,
            None => {
                c.insert((cam, line.to_string(), to), 1);
            }
        }
    }

    /// Every (camera, line, direction) crossed so far, with its count.
    pub fn crossing_counts(&self) -> Vec<(usize, String, crate::track::Direction, u64)> {
        self.crossings.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|((c, l, d), n)| (*c, l.clone(), *d, *n)).collect()
    }

    pub fn event_count(&self, cam: usize, kind: usize) -> u64 {
        self.events.get(cam).map_or(0, |e| e[kind].load(Relaxed))
    }

    pub fn rates(&self, cam: usize) -> Rates {
        self.rates.lock().unwrap_or_else(|e| e.into_inner()).get(cam).copied().unwrap_or_default()
    }

    /// Detections in the camera's latest picture, and that picture's sequence number (`None`: no picture yet).
    pub fn preview_info(&self, cam: usize) -> Option<(u64, u64, usize)> {
        let p = self.previews.get(cam)?.lock().unwrap_or_else(|e| e.into_inner());
        p.at.map(|_| (p.seq, p.wall_ms, p.detections.len()))
    }

    /// The camera's latest picture as a JPEG with its detections drawn (encoded on request, outside the
    /// lock, so the output stage never waits on an encoder).
    pub fn preview_jpeg(&self, cam: usize) -> Option<Vec<u8>> {
        let (mut px, w, h, boxes) = {
            let p = self.previews.get(cam)?.lock().unwrap_or_else(|e| e.into_inner());
            p.at?;
            (p.bgr.clone(), p.width, p.height, p.detections.iter().map(|d| d.bbox).collect::<Vec<_>>())
        };
        for b in boxes {
            crate::record::clip::draw_box(&mut px, w, h, b);
        }
        crate::record::clip::encode_jpeg(&px, w, h, 80).ok()
    }

    /// Updates the measured rates from the counters' growth since the previous call.
    fn sample(&self, cameras: &[Arc<CameraStatus>], prev: &mut Vec<(Instant, u64, u64)>) {
        let now = Instant::now();
        let counts: Vec<(u64, u64)> = cameras.iter().enumerate().map(|(i, c)| (c.frames.load(Relaxed), self.processed(i))).collect();
        if prev.len() == counts.len() {
            let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            for (i, ((t, f0, p0), (f1, p1))) in prev.iter().zip(&counts).enumerate() {
                let dt = now.duration_since(*t).as_secs_f64().max(1e-3);
                if let Some(r) = rates.get_mut(i) {
                    *r = Rates { fps: f1.saturating_sub(*f0) as f64 / dt, detect_fps: p1.saturating_sub(*p0) as f64 / dt };
                }
            }
        }
        *prev = counts.into_iter().map(|(f, p)| (now, f, p)).collect();
    }
}

/// What the running service shares with the HTTP endpoints: handles to counters the stages keep anyway.
pub struct Handles {
    pub device_id: String,
    pub cameras: Vec<Arc<CameraStatus>>,
    pub detector: watch::Receiver<DetectorState>,
    pub detect: Arc<DetectStats>,
    pub outbox: Arc<Outbox>,
    /// Events the outbox could not store.
    pub store: Arc<crate::events::StoreStats>,
    /// Set when a broker is configured.
    pub mqtt: Option<Arc<PublisherStats>>,
    pub record: Arc<RecordStats>,
    /// The evidence API's handle on the recorder, when a camera records.
    pub evidence: Option<Arc<crate::record::Evidence>>,
    /// The OTA status, when `[ota]` is configured.
    pub ota: Option<Arc<dyn Fn() -> Value + Send + Sync>>,
    /// The model release state (what serves, the last trial and its verdict).
    pub model_state: Option<Arc<dyn Fn() -> Value + Send + Sync>>,
    pub live: Arc<Live>,
    /// The disk whose free space is reported (the state directory's).
    pub state_dir: PathBuf,
    pub model: PathBuf,
    pub started: Instant,
}

impl Handles {
    /// Why the service is not ready, one line per reason naming the camera or the detector; empty: ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut f = Vec::new();
        let now_ms = crate::util::unix_ms(SystemTime::now());
        for cam in &self.cameras {
            let state = cam.state();
            if state == CameraState::Disabled {
                continue;
            }
            if !cam.delivering(now_ms) {
                let state = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                f.push(format!("camera {} delivers no frames ({state})", cam.id));
            }
        }
        match &*self.detector.borrow() {
            DetectorState::Ready { .. } => {}
            DetectorState::Failed { error } => f.push(format!("detector failed: {error}")),
            DetectorState::Loading => f.push("detector loading".into()),
            DetectorState::BuildingEngine => f.push("detector building its TensorRT engine".into()),
        }
        if let Some(e) = self.store.failing() {
            f.push(format!(
                "events cannot be stored ({e}): {} held in memory, {} dropped; free space on {}",
                self.store.held.load(Relaxed),
                self.store.dropped_total(),
                self.state_dir.display()
            ));
        }
        f
    }

    /// Total and available bytes of the state directory's file system.
    pub fn disk(&self) -> Option<(u64, u64)> {
        crate::util::fs::disk_space(&self.state_dir).map(|(free, total)| (total, free))
    }

    /// The detailed status (`/status`, `perch status`).
    pub fn status(&self) -> Value {
        let not_ready = self.not_ready();
        let detect = &self.detect;
        let frames = detect.frames.load(Relaxed);
        let cameras: Vec<Value> = self
            .cameras
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let s = c.snapshot();
                let rates = self.live.rates(i);
                let record_drops = self.record.camera(&s.id).map_or(0, |r| r.dropped_frames.load(Relaxed));
                json!({
                    "id": s.id,
                    "source": s.source,
                    "state": s.state,
                    "fps": round2(rates.fps),
                    "detect_fps": round2(rates.detect_fps),
                    "frames": s.frames,
                    "processed": self.live.processed(i),
                    "dropped": { "detector_busy": s.dropped_detector_busy, "sink": s.dropped_sink, "record": record_drops },
                    "skipped_idle": s.skipped_idle,
                    "skipped_decode": s.skipped_decode,
                    "still": s.still,
                    "reconnects": s.reconnects,
                    "last_frame_ms": s.last_frame_ms,
                    "last_error": s.last_error,
                    "events": EVENT_KINDS.iter().enumerate().map(|(k, name)| (name.to_string(), json!(self.live.event_count(i, k)))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        let state = self.detector.borrow().clone();
        let provider = match &state {
            DetectorState::Ready { provider } => serde_json::to_value(provider).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let sum_us = detect.inference_sum_us.load(Relaxed);
        json!({
            "device_id": self.device_id,
            "ts": crate::events::schema::rfc3339(SystemTime::now()),
            "uptime_s": self.started.elapsed().as_secs(),
            "ready": not_ready.is_empty(),
            "not_ready": not_ready,
            "versions": { "perch": crate::VERSION, "gstreamer": gstreamer::version_string().to_string(), "model": self.model.display().to_string() },
            "cameras": cameras,
            "detector": {
                "state": state,
                "provider": provider,
                "frames": frames,
                "errors": detect.errors.load(Relaxed),
                "last_inference_ms": detect.last_inference_us.load(Relaxed) as f64 / 1000.0,
                "mean_inference_ms": if frames > 0 { round2(sum_us as f64 / frames as f64 / 1000.0) } else { 0.0 },
            },
            "outbox": self.outbox.stats(),
            "mqtt": self.mqtt.as_ref().map(|m| json!({ "connected": m.connected.load(Relaxed), "published": m.published.load(Relaxed), "acked": m.acked.load(Relaxed), "connects": m.connects.load(Relaxed) })),
            "recording": self.record.snapshot(),
            "disk": self.disk().map(|(total, free)| json!({ "path": self.state_dir.display().to_string(), "total_bytes": total, "free_bytes": free })),
            "ota": self.ota.as_ref().map(|f| f()),
            "model": self.model_state.as_ref().map(|f| f()),
            "recent_events": self.live.recent_events(),
        })
    }

    /// What the status page shows: no sources, errors or tokens, so it can be served without the token.
    pub fn page_data(&self) -> Value {
        let cameras: Vec<Value> = self
            .cameras
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let rates = self.live.rates(i);
                let preview = self.live.preview_info(i);
                json!({
                    "id": c.id,
                    "state": c.state(),
                    "fps": round2(rates.fps),
                    "detect_fps": round2(rates.detect_fps),
                    "frame_seq": preview.map(|p| p.0),
                    "frame_ms": preview.map(|p| p.1),
                    "detections": preview.map(|p| p.2),
                })
            })
            .collect();
        json!({
            "device_id": self.device_id,
            "ready": self.not_ready().is_empty(),
            "detector": self.detector.borrow().clone(),
            "cameras": cameras,
            "recent_events": self.live.recent_events(),
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_events_are_bounded_newest_first() {
        let live = Live::new(vec!["a".into()]);
        let now = SystemTime::now();
        let mut e = crate::track::TrackEvent {
            kind: EventKind::New,
            camera: 0,
            track_id: 1,
            class_id: 0,
            label: "person".into(),
            score: 0.9,
            top_score: 0.9,
            bbox: [0.0; 4],
            frame_size: (64, 48),
            start: now,
            last_seen: now,
            zones: Vec::new(),
            best: crate::track::BestFrame { seq: 0, wall: now, score: 0.9, bbox: [0.0; 4] },
            stationary_since: None,
            crossings: Vec::new(),
            loitering: Vec::new(),
        };
        for seq in 0..(RECENT_EVENTS as u64 + 5) {
            e.kind = if seq % 2 == 0 { EventKind::New } else { EventKind::End };
            live.event(&e, seq, "id");
        }
        let r = live.recent_events();
        assert_eq!(r.len(), RECENT_EVENTS);
        assert_eq!(r[0].seq, RECENT_EVENTS as u64 + 4);
        assert_eq!(live.event_count(0, 0) + live.event_count(0, 2), RECENT_EVENTS as u64 + 5);
        assert!(live.preview_jpeg(0).is_none(), "no picture before the first frame");
    }
}
