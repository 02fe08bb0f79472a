//! `perch run`: the long-running service.
//!
//! Wiring: one capture thread per camera → [`FrameHub`] (newest frame per camera) → the detection thread →
//! a bounded channel → the output stage. Shutdown is one [`CancellationToken`]: SIGTERM/SIGINT (or every file
//! camera finishing) cancels it, captures stop, the detector drains the frames already captured, the output
//! stage drains the channel, and the [`JoinSet`] is awaited before exit.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::capture::{self, Camera, CameraSnapshot, CameraState, CameraStatus, FrameHub};
use crate::config::Config;
use crate::detect::worker::{DetectStats, DetectWorker, FrameDetections};
use crate::detect::{Detection, DetectorState, ModelManifest};
use crate::events::publisher::{CommandFn, HealthFn, Publisher, PublisherStats};
use crate::events::schema::{EventMessage, event_id, rfc3339};
use crate::events::{Outbox, OutboxStats, StoreStats};
use crate::fleet::agent::Agent;
use crate::fleet::model::ModelUpdater;
use crate::record::clip::Snapshot;
use crate::record::store::ClipJob;
use crate::record::{CameraRecordConfig, RecordControl, RecordStats, Recorder, RecorderMsg, SegmentSink};
use crate::track::{EventKind, Tracker};

/// How the service reports what it detects (until events and MQTT take over).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One JSON line per processed frame on stdout.
    pub print_detections: bool,
}

/// Best-frame buffers kept at once (one per live object of a recorded camera; ~0.3 MB each at 416×234).
const MAX_SNAPSHOTS: usize = 64;
/// Depth of the detector → output channel.
const OUTPUT_QUEUE: usize = 64;
/// How long a clean shutdown may take before perch gives up waiting for its tasks (the unit's
/// `TimeoutStopSec` must be longer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// On shutdown, how long the publisher may spend delivering what is in the outbox.
const PUBLISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of the periodic status line in the log.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the service until SIGTERM/SIGINT, or until every camera is a finished non-looping file.
pub async fn run(mut config: Config, opts: RunOptions) -> anyhow::Result<()> {
    capture::pipeline::init()?;
    // Model releases: a promoted model (an earlier `…/cmd/model` install) serves instead of the configured one.
    let labels = config.cameras.iter().map(|c| (c.id.clone(), c.labels.clone())).collect();
    let (models, serving) = ModelUpdater::open(&config.state_dir, config.ota.clone(), config.detector.clone(), config.engine_cache_dir(), labels);
    config.detector.model = serving;
    // Frames are scaled in the pipeline to fit the model input, so letterboxing is a plain copy.
    let model_input = match ModelManifest::load(&config.detector.model) {
        Ok(manifest) => {
            let problems = super::model::check_labels(&config, &manifest);
            if !problems.is_empty() {
                anyhow::bail!("{}", problems.iter().map(|p| format!("`{}`: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"));
            }
            (manifest.input.width, manifest.input.height)
        }
        // The detector keeps retrying and reports itself failed; cameras still run, scaled to a common size.
        Err(e) => {
            tracing::error!("{e}");
            (640, 640)
        }
    };

    std::fs::create_dir_all(&config.state_dir).map_err(|e| anyhow::anyhow!("cannot create state_dir {}: {e}", config.state_dir.display()))?;
    // Events are on disk before anything else happens to them: no outbox, no service.
    let outbox = Arc::new(Outbox::open(&config.state_dir.join("outbox"), config.outbox.max_bytes)?);
    let backlog = outbox.stats();
    if backlog.depth > 0 {
        tracing::info!(events = backlog.depth, "outbox holds events from before the restart; they will be delivered first");
    }
    let wake = Arc::new(tokio::sync::Notify::new());

    // Recording: the store is opened (and cleaned up after an unclean stop) before any camera writes to it.
    let record_stats = Arc::new(RecordStats::new(config.cameras.iter().map(|c| (c.id.clone(), c.records()))));
    let recording: Vec<Option<CameraRecordConfig>> = config.cameras.iter().map(|c| c.records().then(|| c.record.clone())).collect();
    let (rec_tx, rec_rx) = mpsc::channel::<RecorderMsg>(crate::record::recorder::QUEUE);
    let recorder = recording.iter().any(Option::is_some).then(|| {
        Recorder {
            config: config.record.clone(),
            dir: config.record_dir(),
            device_id: config.device_id.clone(),
            cameras: config.cameras.iter().map(|c| c.id.clone()).collect(),
            outbox: outbox.clone(),
            wake: wake.clone(),
            stats: record_stats.clone(),
        }
        .open()
    });
    let record_control = Arc::new(RecordControl::new(
        &rec_tx,
        config.cameras.iter().zip(&recording).map(|(c, r)| (c.id.clone(), r.clone())).collect(),
        Duration::from_secs_f64(config.record.manual_max_s),
    ));

    let cancel = CancellationToken::new();
    let hub = Arc::new(FrameHub::new(config.cameras.len()));
    let statuses: Vec<Arc<CameraStatus>> = config.cameras.iter().map(|c| Arc::new(CameraStatus::new(&c.id, c.masked_source(), c.enabled))).collect();

    let mut tasks = JoinSet::new();
    for (index, cam) in config.cameras.iter().enumerate() {
        if !cam.enabled {
            tracing::info!(camera = %cam.id, "camera disabled in config");
            continue;
        }
        let camera = Camera {
            index,
            config: cam.clone(),
            fit: cam.detect_size.map(|[w, h]| (w, h)).unwrap_or(model_input),
            hub: hub.clone(),
            status: statuses[index].clone(),
            record: recording[index].as_ref().filter(|_| recorder.as_ref().is_some_and(|r| r.is_open())).map(|_| SegmentSink {
                camera: index,
                dir: config.record_dir().join("segments").join(&cam.id),
                segment: Duration::from_secs_f64(config.record.segment_s),
                tx: rec_tx.clone(),
                stats: record_stats.clone(),
            }),
        };
        let cancel = cancel.clone();
        tasks.spawn_blocking(move || camera.run(cancel));
    }

    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let (state_tx, state_rx) = watch::channel(DetectorState::Loading);
    let stats = Arc::new(DetectStats::default());
    let worker = DetectWorker {
        config: config.detector.clone(),
        engine_cache: config.engine_cache_dir(),
        labels: config.cameras.iter().map(|c| c.labels.clone()).collect(),
        min_scores: config.cameras.iter().map(|c| c.min_score).collect(),
        hub: hub.clone(),
        out: tx,
        state: state_tx,
        stats: stats.clone(),
        keep_images: recording.iter().map(Option::is_some).collect(),
        preview_every: config.http.enabled.then_some(crate::health::PREVIEW_EVERY),
        cadence: config.cameras.iter().zip(&statuses).map(|(c, s)| (crate::detect::cadence::Cadence::new(c.cadence.clone()), s.clone())).collect(),
        trial: Some(models.slot()),
    };
    {
        let cancel = cancel.clone();
        tasks.spawn_blocking(move || worker.run(cancel));
    }
    let store_stats = Arc::new(StoreStats::default());
    let live = Arc::new(crate::health::Live::new(config.cameras.iter().map(|c| c.id.clone()).collect()));
    let events = EventStage {
        device_id: config.device_id.clone(),
        cameras: config.cameras.iter().map(|c| (c.id.clone(), c.track.zones.iter().map(|z| z.name.clone()).collect())).collect(),
        trackers: config.cameras.iter().enumerate().map(|(i, c)| Tracker::new(i, c.track.clone())).collect(),
        outbox: outbox.clone(),
        wake: wake.clone(),
        run_id: fastrand::u32(..),
        ids: HashMap::new(),
        recorder: recorder.is_some().then(|| rec_tx.clone()),
        recording: recording.clone(),
        snapshots: HashMap::new(),
        record_stats: record_stats.clone(),
        live: live.clone(),
        unstored: Default::default(),
        store_stats: store_stats.clone(),
    };
    // The publisher drains the outbox once nothing can add to it: after the output stage, and after the
    // recorder (its clip messages) when there is one. The recorder stops when every sender is gone.
    let inputs_done = CancellationToken::new();
    drop(rec_tx);
    if let Some(recorder) = recorder {
        let (handle, done) = (tokio::runtime::Handle::current(), inputs_done.clone());
        tasks.spawn_blocking(move || {
            recorder.run(rec_rx, handle);
            done.cancel();
        });
        tasks.spawn(output(rx, events, opts.clone(), None));
    } else {
        tasks.spawn(output(rx, events, opts.clone(), Some(inputs_done.clone())));
    }
    let publisher_stats = Arc::new(PublisherStats::default());
    if let Some(mqtt) = &config.mqtt {
        // State changes of an update or a model trial are published at once.
        let republish = Arc::new(tokio::sync::Notify::new());
        let on_change: Arc<dyn Fn() + Send + Sync> = {
            let r = republish.clone();
            Arc::new(move || r.notify_one())
        };
        *models.on_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(on_change.clone());
        // `ota`: fleet updates through the same verified install as `perch ota install`.
        let restart: Arc<dyn Fn() + Send + Sync> = Arc::new({
            let cancel = cancel.clone();
            move || cancel.cancel()
        });
        let fleet = config.ota.as_ref().map(|c| Agent::for_service(Arc::new(crate::ota::Ota::open(c, &config.state_dir)), restart, Some(on_change)));
        let health: HealthFn = {
            let (statuses, state_rx, outbox, stats, pstats) = (statuses.clone(), state_rx.clone(), outbox.clone(), stats.clone(), publisher_stats.clone());
            let (device_id, record_stats, fleet, models, store) =
                (config.device_id.clone(), record_stats.clone(), fleet.clone(), models.clone(), store_stats.clone());
            Arc::new(move || {
                let mut h = health_snapshot(&device_id, &statuses, &state_rx.borrow(), &stats, outbox.stats(), &pstats, &record_stats);
                h["events_store"] = serde_json::json!({ "held": store.held.load(std::sync::atomic::Ordering::Relaxed), "dropped": store.dropped_total(), "failing": store.failing() });
                if let Some(agent) = &fleet {
                    h["ota"] = agent.state();
                }
                h["model"] = models.state();
                h
            })
        };
        let commands: CommandFn = {
            let (control, models) = (record_control.clone(), models.clone());
            Arc::new(move |name, request| match name {
                "record" => Some(control.command(request)),
                "ota" => fleet.as_ref().map(|a| a.command(request)),
                "model" => Some(models.command(request)),
                _ => None,
            })
        };
        let publisher = Publisher {
            cfg: mqtt.clone(),
            device_id: config.device_id.clone(),
            outbox: outbox.clone(),
            wake: wake.clone(),
            health,
            commands: Some(commands),
            stats: publisher_stats.clone(),
            inputs_done,
            drain_timeout: PUBLISH_DRAIN_TIMEOUT,
            republish,
        };
        tasks.spawn(publisher.run(cancel.clone()));
    } else {
        tracing::warn!("no [mqtt] broker configured: events are kept in the outbox (bounded by outbox.max_bytes)");
    }
    let ota_inputs = crate::ota::health::HealthInputs {
        cameras: statuses.clone(),
        detector: state_rx.clone(),
        mqtt: config.mqtt.is_some().then(|| publisher_stats.clone()),
        state_dir: config.state_dir.clone(),
    };
    crate::ota::health::spawn(&mut tasks, &config, ota_inputs, cancel.clone());
    let http = crate::health::Handles {
        device_id: config.device_id.clone(),
        cameras: statuses.clone(),
        detector: state_rx.clone(),
        detect: stats.clone(),
        outbox: outbox.clone(),
        store: store_stats.clone(),
        mqtt: config.mqtt.is_some().then(|| publisher_stats.clone()),
        record: record_stats.clone(),
        ota: crate::ota::health::status_fn(&config),
        model_state: Some({
            let models = models.clone();
            Arc::new(move || models.state())
        }),
        live,
        state_dir: config.state_dir.clone(),
        model: config.detector.model.clone(),
        started: std::time::Instant::now(),
    };
    crate::health::server::spawn(&mut tasks, &config, http, cancel.clone());
    let watchdog = crate::health::systemd::Watchdog {
        notifier: crate::health::systemd::Notifier::from_env(),
        cameras: statuses.clone(),
        detector: state_rx.clone(),
        stats: stats.clone(),
    };
    tasks.spawn(watchdog.run(cancel.clone()));
    tasks.spawn(watch_status(statuses.clone(), state_rx, stats.clone(), cancel.clone()));

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutdown requested; draining"),
        _ = all_finished(statuses.clone()), if config.cameras.iter().any(|c| c.enabled) => tracing::info!("every camera has finished; stopping"),
        _ = cancel.cancelled() => tracing::info!("stopping (requested by the OTA health gate)"),
    }
    cancel.cancel();
    hub.wake();
    // Drain: captures stop and finish their segments, the detector takes what was captured, open events end
    // and their clips are made, the outbox is delivered. A second SIGTERM/SIGINT, or the timeout, ends it at
    // once: everything on disk is crash-safe (the outbox is durable per batch, unfinished segments are
    // removed at the next start, clip requests are persisted), so cutting the drain short loses no data.
    let drain = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!("task ended abnormally: {e}");
            }
        }
    });
    tokio::select! {
        drained = drain => {
            if drained.is_err() {
                tracing::warn!("some tasks did not stop within {} s; exiting anyway", DRAIN_TIMEOUT.as_secs());
            }
        }
        _ = shutdown_signal() => {
            tracing::warn!("second stop signal: exiting now without finishing the drain (stored data is safe)");
            return Ok(());
        }
    }
    for s in &statuses {
        let snap = s.snapshot();
        tracing::info!(
            camera = %snap.id,
            frames = snap.frames,
            dropped_detector_busy = snap.dropped_detector_busy,
            dropped_sink = snap.dropped_sink,
            skipped_idle = snap.skipped_idle,
            reconnects = snap.reconnects,
            "camera totals"
        );
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Resolves once every enabled camera has ended (only non-looping files do).
async fn all_finished(statuses: Vec<Arc<CameraStatus>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if statuses.iter().all(|s| matches!(s.state(), CameraState::Ended | CameraState::Disabled)) {
            return;
        }
    }
}

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
struct EventStage {
    device_id: String,
    /// Per camera: id and zone names.
    cameras: Vec<(String, Vec<String>)>,
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

impl EventStage {
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
            let (camera, zones) = &cameras[e.camera];
            let mut msg = EventMessage::new(seq, id, device, camera, zones, e);
            if e.kind == EventKind::End && recording[e.camera].is_some() {
                // The clip is made once its post-roll is recorded; a `clip` message says when it is ready.
                msg.clip = Some(format!("clips/{id}.mp4"));
                msg.snapshot = Some(format!("clips/{id}.jpg"));
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

    /// `new`: the recorder keeps the camera's segments from the pre-roll on; `end`: it makes the clip.
    fn request_clip(&mut self, id: String, e: &crate::track::TrackEvent) {
        let (Some(tx), Some(rec)) = (&self.recorder, &self.recording[e.camera]) else { return };
        let at = |t: std::time::SystemTime, shift: f64, back: bool| {
            let t = crate::record::store::ms(t);
            let d = (shift * 1000.0) as u64;
            if back { t.saturating_sub(d) } else { t + d }
        };
        let msg = match e.kind {
            EventKind::New => RecorderMsg::Hold { id, camera: e.camera, from_ms: at(e.start, rec.pre_roll_s, true), auto_clip_ms: None, kind: "event" },
            EventKind::End => {
                let job = ClipJob {
                    id,
                    camera: self.cameras[e.camera].0.clone(),
                    from_ms: at(e.start, rec.pre_roll_s, true),
                    to_ms: at(e.last_seen, rec.post_roll_s, false),
                    kind: "event".into(),
                    label: Some(e.label.to_string()),
                };
                RecorderMsg::Clip { job, snapshot: self.snapshots.remove(&(e.camera, e.track_id)).map(Box::new) }
            }
            EventKind::Update => return,
        };
        if tx.try_send(msg).is_err() {
            self.record_stats.dropped_messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(camera = %self.cameras[e.camera].0, "the recorder is not keeping up: a clip request was dropped");
        }
    }

    fn frame(&mut self, f: &FrameDetections) {
        let camera = f.frame.camera;
        self.trackers[camera].update(&f.frame, &f.detections);
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

/// The output stage: events through the tracker into the outbox, and optionally one JSON line per frame on
/// stdout. Ends when the detector closes the channel, after everything queued was handled and every open
/// event was ended.
async fn output(mut rx: mpsc::Receiver<FrameDetections>, mut events: EventStage, opts: RunOptions, done: Option<CancellationToken>) {
    let mut line = Vec::with_capacity(4096);
    while let Some(f) = rx.recv().await {
        events.frame(&f);
        let info = &f.frame;
        let camera = events.cameras[info.camera].0.as_str();
        tracing::debug!(camera, seq = info.seq, detections = f.detections.len(), inference_ms = f.timings.inference.as_secs_f64() * 1e3, "frame");
        if !opts.print_detections {
            continue;
        }
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
        if serde_json::to_writer(&mut line, &record).is_ok() {
            line.push(b'\n');
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&line).and_then(|_| out.flush());
        }
    }
    events.finish();
    drop(events);
    if let Some(done) = done {
        done.cancel();
    }
}

/// The health snapshot: cameras, detector, outbox and broker connection.
fn health_snapshot(
    device_id: &str,
    statuses: &[Arc<CameraStatus>],
    detector: &DetectorState,
    stats: &DetectStats,
    outbox: OutboxStats,
    mqtt: &PublisherStats,
    recording: &RecordStats,
) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    serde_json::json!({
        "device_id": device_id,
        "version": crate::VERSION,
        "ts": rfc3339(std::time::SystemTime::now()),
        "cameras": statuses.iter().map(|s| s.snapshot()).collect::<Vec<CameraSnapshot>>(),
        "detector": detector,
        "detected_frames": stats.frames.load(Relaxed),
        "detect_errors": stats.errors.load(Relaxed),
        "outbox": outbox,
        "mqtt": { "connected": mqtt.connected.load(Relaxed), "published": mqtt.published.load(Relaxed), "acked": mqtt.acked.load(Relaxed), "connects": mqtt.connects.load(Relaxed) },
        "recording": recording.snapshot(),
    })
}

/// Logs camera and detector state changes as they happen, and a status line every [`STATUS_INTERVAL`].
async fn watch_status(statuses: Vec<Arc<CameraStatus>>, mut detector: watch::Receiver<DetectorState>, stats: Arc<DetectStats>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = detector.changed() => {
                if changed.is_err() { return; }
                let state = detector.borrow_and_update().clone();
                tracing::info!(detector = ?state, "detector state");
            }
            _ = tick.tick() => {
                let cams: Vec<CameraSnapshot> = statuses.iter().map(|s| s.snapshot()).collect();
                let summary = cams.iter().map(|c| format!("{}={:?} frames={} dropped={}", c.id, c.state, c.frames, c.dropped_detector_busy + c.dropped_sink)).collect::<Vec<_>>().join(" ");
                tracing::info!(detected_frames = stats.frames.load(std::sync::atomic::Ordering::Relaxed), "status: {summary}");
            }
        }
    }
}
