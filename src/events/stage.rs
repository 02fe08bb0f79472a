//! The event stage of the data flow: each frame's detections through its camera's tracker into events,
//! stored durably in the outbox (held in memory, bounded, while the disk refuses), with clip requests and
//! best-frame snapshots for the recorder and the status page's live view.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::schema::{EventMessage, Names, event_id, rfc3339};
use super::{Outbox, StoreStats};
use crate::detect::Detection;
use crate::detect::worker::FrameDetections;
use crate::record::clip::Snapshot;
use crate::record::store::{EventRef, Sighting};
use crate::record::{CameraRecordConfig, RecordStats, RecorderMsg};
use crate::track::{EventKind, Tracker, TrackerConfig};

/// Best-frame buffers kept at once (one per live object of a recorded camera; ~0.3 MB each at 416×234).
const MAX_SNAPSHOTS: usize = 64;

/// One line per processed frame, as printed by `--print-detections`.
#[derive(Serialize)]
struct FrameLine<'a> {
    camera: &'a str,
    seq: u64,
    pts_ms: Option<f64>,
    ts_ms: u64,
    ts: String,
    width: u32,
    height: u32,
    inference_ms: f64,
    detections: &'a [Detection],
}

/// Tracking and the outbox: turns each frame's detections into events and stores them durably.
pub struct EventStage {
    device_id: String,
    /// Per camera: id, zone and line names.
    cameras: Vec<(String, Names)>,
    trackers: Vec<Tracker>,
    outbox: Arc<Outbox>,
    wake: Arc<tokio::sync::Notify>,
    /// Distinguishes this run's track ids from those of earlier runs in event ids.
    run_id: u32,
    /// Event id of each live track.
    ids: HashMap<(usize, u64), String>,
    /// Where clip requests go, when any camera is recorded.
    recorder: Option<mpsc::Sender<RecorderMsg>>,
    /// Per camera: its recording settings when it is recorded.
    recording: Vec<Option<CameraRecordConfig>>,
    /// The best frame of each live track of a recorded camera (buffers reused as the best improves).
    snapshots: HashMap<(usize, u64), Snapshot>,
    record_stats: Arc<RecordStats>,
    /// The status page's pictures and recent events.
    live: Arc<crate::health::Live>,
    /// Events the outbox could not store yet, oldest first, with their ids (at most [`MAX_UNSTORED`]).
    unstored: std::collections::VecDeque<(String, crate::track::TrackEvent)>,
    store_stats: Arc<StoreStats>,
}

/// Events held in memory while the outbox cannot store them (about 1 KB each).
const MAX_UNSTORED: usize = 2048;

/// Where the event stage's output goes besides the outbox, and the counters it keeps.
pub struct EventSinks {
    pub outbox: Arc<Outbox>,
    /// Wakes the publisher when events were stored.
    pub wake: Arc<tokio::sync::Notify>,
    /// The recorder's queue, when any camera is recorded.
    pub recorder: Option<mpsc::Sender<RecorderMsg>>,
    pub record_stats: Arc<RecordStats>,
    pub live: Arc<crate::health::Live>,
    pub store_stats: Arc<StoreStats>,
}

impl EventStage {
    /// One tracker per camera (its id, `[camera.track]` and `min_score`); `recording` is each camera's
    /// recording settings when it is recorded.
    pub fn new(device_id: &str, cameras: &[(String, TrackerConfig, f32)], recording: Vec<Option<CameraRecordConfig>>, sinks: EventSinks) -> Self {
        Self {
            device_id: device_id.to_string(),
            cameras: cameras.iter().map(|(id, track, _)| (id.clone(), Names::of(track))).collect(),
            trackers: cameras.iter().enumerate().map(|(i, (_, track, min_score))| Tracker::new(i, track.clone(), *min_score)).collect(),
            outbox: sinks.outbox,
            wake: sinks.wake,
            run_id: fastrand::u32(..),
            ids: HashMap::new(),
            recorder: sinks.recorder,
            recording,
            snapshots: HashMap::new(),
            record_stats: sinks.record_stats,
            live: sinks.live,
            unstored: Default::default(),
            store_stats: sinks.store_stats,
        }
    }

    /// Handles every frame's detections until the detector closes the channel, then ends every open
    /// event; with `print_detections`, one JSON line per frame on stdout. Cancels `done` at the end.
    pub async fn run(mut self, mut rx: mpsc::Receiver<FrameDetections>, print_detections: bool, done: Option<CancellationToken>) {
        let mut line = Vec::with_capacity(4096);
        while let Some(f) = rx.recv().await {
            self.frame(&f);
            let info = &f.frame;
            let camera = self.cameras[info.camera].0.as_str();
            tracing::debug!(camera, seq = info.seq, detections = f.detections.len(), inference_ms = f.timings.inference.as_secs_f64() * 1e3, "frame");
            if print_detections {
                print_line(&mut line, camera, &f);
            }
        }
        self.finish();
        drop(self);
        if let Some(done) = done {
            done.cancel();
        }
    }
    fn store(&mut self, events: &[crate::track::TrackEvent]) {
        // Each event with its id: the same for an object's new, updates and end.
        for e in events {
            let id = self.ids.entry((e.camera, e.track_id)).or_insert_with(|| event_id(self.run_id, &self.cameras[e.camera].0, e.track_id, e.start)).clone();
            if e.kind == EventKind::End {
                self.ids.remove(&(e.camera, e.track_id));
            }
            self.request_clip(id.clone(), e);
            self.unstored.push_back((id, e.clone()));
        }
        self.store_unstored();
    }

    /// Stores what waits, in order, in one batch. When the outbox cannot (the disk is full or failing),
    /// the events wait in memory and are tried again with the next frame; past [`MAX_UNSTORED`] the
    /// oldest are dropped, counted by reason, and readiness says why.
    fn store_unstored(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.unstored.is_empty() {
            return;
        }
        let (device, cameras, recording) = (&self.device_id, &self.cameras, &self.recording);
        let items = self.unstored.make_contiguous();
        let stored = self.outbox.append_batch(items, |seq, (id, e)| {
            let (camera, names) = &cameras[e.camera];
            let mut msg = EventMessage::new(seq, id, device, camera, names, e);
            if e.kind == EventKind::End && recording[e.camera].is_some() {
                // Served by the evidence API once its post-roll is recorded; a `clip` message says when.
                msg.clip = Some(format!("/api/clips/{id}.mp4"));
                msg.snapshot = Some(format!("/api/snapshots/{id}.jpg"));
            }
            serde_json::to_vec(&msg).unwrap_or_default()
        });
        match stored {
            Ok(seqs) => {
                for ((id, e), seq) in items.iter().zip(seqs) {
                    self.live.event(e, seq, id);
                    tracing::info!(camera = %self.cameras[e.camera].0, seq, kind = ?e.kind, label = %e.label, track = e.track_id, "event");
                }
                self.unstored.clear();
                if self.store_stats.failing().is_some() {
                    tracing::warn!("the event outbox stores again; the events held meanwhile are stored");
                    self.store_stats.set_failing(None);
                }
                self.wake.notify_one();
            }
            Err(e) => {
                if self.store_stats.failing().is_none() {
                    tracing::error!(held = self.unstored.len(), "events could not be stored: {e}; they are held in memory (up to {MAX_UNSTORED}) and retried");
                }
                self.store_stats.set_failing(Some(e.to_string()));
                let over = self.unstored.len().saturating_sub(MAX_UNSTORED);
                if over > 0 {
                    self.unstored.drain(..over);
                    self.store_stats.dropped[0].fetch_add(over as u64, Relaxed);
                    tracing::error!(dropped = over, "the outbox still cannot store: the oldest held events were dropped");
                }
            }
        }
        self.store_stats.held.store(self.unstored.len() as u64, Relaxed);
    }

    /// `new`: the recorder keeps the camera's video from the pre-roll on; `end`: up to the post-roll.
    fn request_clip(&mut self, id: String, e: &crate::track::TrackEvent) {
        let (Some(tx), Some(rec)) = (&self.recorder, &self.recording[e.camera]) else { return };
        let ms = crate::record::store::ms;
        let roll = |s: f64| (s * 1000.0) as u64;
        let ended = match e.kind {
            EventKind::New => false,
            EventKind::End => true,
            // The one update saying the object became stationary: from now on it holds no more video.
            EventKind::Update if e.stationary_since.is_some() => false,
            EventKind::Update => return,
        };
        let still_to_ms = e.stationary_since.map(|t| ms(t) + roll(rec.post_roll_s));
        let start = ms(e.start);
        let ev = EventRef {
            end_ms: ended.then(|| ms(e.last_seen)),
            to_ms: ended.then(|| still_to_ms.unwrap_or(ms(e.last_seen) + roll(rec.post_roll_s))),
            still_to_ms,
            best: Some(Sighting { at_ms: ms(e.best.wall), bbox: e.best.bbox, frame_size: [e.frame_size.0, e.frame_size.1] }),
            ..EventRef::starting(id, self.cameras[e.camera].0.clone(), "event", Some(e.label.to_string()), start, start.saturating_sub(roll(rec.pre_roll_s)))
        };
        let snapshot = if ended { self.snapshots.remove(&(e.camera, e.track_id)).map(Box::new) } else { None };
        if tx.try_send(RecorderMsg::Event { ev, snapshot }).is_err() {
            self.record_stats.dropped_messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(camera = %self.cameras[e.camera].0, "the recorder is not keeping up: an event's video reference was dropped");
        }
    }

    fn frame(&mut self, f: &FrameDetections) {
        let camera = f.frame.camera;
        self.trackers[camera].update(&f.frame, &f.detections);
        for &(line, to) in self.trackers[camera].crossings() {
            self.live.crossing(camera, &self.cameras[camera].1.lines[line], to);
        }
        self.live.frame(f);
        // Non-recorded cameras get a picture too (the status page's), but no snapshots.
        if let Some(image) = &f.image
            && self.recording[camera].is_some()
        {
            self.take_snapshots(camera, image);
        }
        let events = self.trackers[camera].events().to_vec();
        self.store(&events);
        // Events held while the disk was full are retried with every frame, not only with new events.
        if events.is_empty() {
            self.store_unstored();
        }
        if self.recording[camera].is_some() {
            let tracker = &self.trackers[camera];
            self.snapshots.retain(|&(c, id), _| c != camera || tracker.has(id));
        }
    }

    /// Copies the frame into the snapshot buffer of each track whose best sighting it holds.
    fn take_snapshots(&mut self, camera: usize, image: &crate::capture::Frame) {
        let view = image.view();
        let (w, h) = (view.width as usize, view.height as usize);
        let sx = view.width as f32 / view.source_width.max(1) as f32;
        let sy = view.height as f32 / view.source_height.max(1) as f32;
        for (track, bbox) in self.trackers[camera].best_in_frame(image.info.seq) {
            if self.snapshots.len() >= MAX_SNAPSHOTS && !self.snapshots.contains_key(&(camera, track)) {
                continue; // A crowd: memory stays bounded; later objects get no snapshot.
            }
            let snap = self.snapshots.entry((camera, track)).or_insert_with(|| Snapshot { width: 0, height: 0, bgr: Vec::new(), bbox: [0.0; 4] });
            snap.bgr.clear();
            for row in view.data.chunks(view.stride).take(h) {
                snap.bgr.extend_from_slice(&row[..w * 3]);
            }
            snap.width = view.width;
            snap.height = view.height;
            snap.bbox = [bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy];
        }
    }

    /// Ends every open event (shutdown).
    fn finish(&mut self) {
        for i in 0..self.trackers.len() {
            let events = self.trackers[i].finish().to_vec();
            self.store(&events);
        }
        let left = self.unstored.len() as u64;
        if left > 0 {
            self.store_stats.dropped[1].fetch_add(left, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(events = left, "stopping while the outbox cannot store: these events are lost");
        }
        if let Err(e) = self.outbox.flush() {
            tracing::error!("{e}");
        }
    }
}

/// Writes one `--print-detections` line for a frame to stdout (`line` is the reused buffer).
fn print_line(line: &mut Vec<u8>, camera: &str, f: &FrameDetections) {
    let info = &f.frame;
    let record = FrameLine {
        camera,
        seq: info.seq,
        pts_ms: info.pts.map(|p| p.as_secs_f64() * 1e3),
        ts_ms: crate::util::unix_ms(info.wall),
        ts: rfc3339(info.wall),
        width: info.source_width,
        height: info.source_height,
        inference_ms: f.timings.inference.as_secs_f64() * 1e3,
        detections: &f.detections,
    };
    line.clear();
    if serde_json::to_writer(&mut *line, &record).is_ok() {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line).and_then(|_| out.flush());
    }
}
