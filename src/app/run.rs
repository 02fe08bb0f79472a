//! `perch run`: the long-running service.
//!
//! Wiring: one capture thread per camera → [`FrameHub`] (newest frame per camera) → the detection thread →
//! a bounded channel → the event stage → the outbox → the publisher; cameras that record also feed the
//! recorder. [`run`] reads as that list: [`Service`] holds what the stages share, and each `start_*`
//! builds one stage and spawns its task. Shutdown is one [`CancellationToken`]: SIGTERM/SIGINT (or every
//! file camera finishing) cancels it, captures stop, the detector drains the frames already captured, the
//! event stage drains the channel, and the [`JoinSet`] is awaited before exit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::capture::encoded::EncodedSink;
use crate::capture::{self, Camera, CameraSnapshot, CameraState, CameraStatus, FrameHub};
use crate::config::Config;
use crate::detect::worker::{DetectStats, DetectWorker, FrameDetections};
use crate::detect::{DetectorState, ModelManifest};
use crate::events::publisher::{CommandFn, HealthFn, Publisher, PublisherStats};
use crate::events::schema::rfc3339;
use crate::events::stage::{EventSinks, EventStage};
use crate::events::{Outbox, OutboxStats, StoreStats};
use crate::fleet::device::agent::Agent;
use crate::fleet::device::model::ModelUpdater;
use crate::ota::Ota;
use crate::record::recorder::OpenRecorder;
use crate::record::{CameraRecordConfig, Evidence, RecordControl, RecordStats, Recorder, RecorderMsg, SegmentSink};
use crate::util::tasks::{Drained, Tasks};

/// How the service reports what it detects (until events and MQTT take over).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One JSON line per processed frame on stdout.
    pub print_detections: bool,
}

/// Depth of the detector → event stage channel.
const OUTPUT_QUEUE: usize = 64;
/// How long a clean shutdown may take before perch gives up waiting for its tasks (the unit's
/// `TimeoutStopSec` must be longer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// On shutdown, how long the publisher may spend delivering what is in the outbox.
const PUBLISH_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of the periodic status line in the log.
const STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the service until SIGTERM/SIGINT, or until every camera is a finished non-looping file.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    capture::pipeline::init()?;
    let mut s = Service::open(config)?;
    let recorder = s.open_recorder();
    s.start_cameras(recorder.as_ref().is_some_and(|r| r.is_open()));
    let detections = s.start_detector();
    s.start_events(detections, recorder.is_some(), opts.print_detections);
    s.start_recorder(recorder);
    s.start_publisher();
    s.start_ota_gate();
    s.start_http();
    s.start_watchdog();
    s.serve().await
}

/// What the stages share, in the order the data flows; built by [`Service::open`], used by `start_*`.
struct Service {
    config: Config,
    cancel: CancellationToken,
    tasks: Tasks,
    /// Model releases: what serves, and a candidate's shadow trial.
    models: Arc<ModelUpdater>,
    /// The detector's input size: frames are scaled to it in the capture pipeline.
    model_input: (u32, u32),
    hub: Arc<FrameHub>,
    statuses: Vec<Arc<CameraStatus>>,
    /// Per camera: its recording settings when it is recorded.
    recording: Vec<Option<CameraRecordConfig>>,
    record_stats: Arc<RecordStats>,
    /// The recorder's queue; the service's own sender is dropped once every stage holds its clone, so the
    /// recorder ends when the last of them is gone.
    rec: Option<(mpsc::Sender<RecorderMsg>, mpsc::Receiver<RecorderMsg>)>,
    record_control: Arc<RecordControl>,
    /// The evidence API's handle on the recorder, once it runs.
    evidence: Option<Arc<Evidence>>,
    detector: watch::Receiver<DetectorState>,
    detect_stats: Arc<DetectStats>,
    outbox: Arc<Outbox>,
    /// Wakes the publisher when something was stored.
    wake: Arc<Notify>,
    store_stats: Arc<StoreStats>,
    live: Arc<crate::health::Live>,
    publisher_stats: Arc<PublisherStats>,
    /// Cancelled once nothing can add to the outbox any more: then the publisher drains it.
    inputs_done: CancellationToken,
    /// One view of the update state per process: the fleet agent, the health gate and the status share it.
    ota: Option<Arc<Ota>>,
    /// Kept until the detector starts: its sender.
    detector_tx: Option<watch::Sender<DetectorState>>,
}

impl Service {
    /// The model to serve, the outbox (events are on disk before anything else happens to them: no
    /// outbox, no service), and the handles every stage reports into.
    fn open(mut config: Config) -> anyhow::Result<Self> {
        // A promoted model (an earlier `…/cmd/model` install) serves instead of the configured one.
        let labels = config.cameras.iter().map(|c| (c.id.clone(), c.labels.clone())).collect();
        let (models, serving) = ModelUpdater::open(&config.state_dir, config.ota.clone(), config.detector.clone(), config.engine_cache_dir(), labels);
        config.detector.model = serving;
        let model_input = model_input(&config)?;
        std::fs::create_dir_all(&config.state_dir).map_err(|e| anyhow::anyhow!("cannot create state_dir {}: {e}", config.state_dir.display()))?;
        let outbox = Arc::new(Outbox::open(&config.state_dir.join("outbox"), config.outbox.max_bytes)?);
        let backlog = outbox.stats();
        if backlog.depth > 0 {
            tracing::info!(events = backlog.depth, "outbox holds events from before the restart; they will be delivered first");
        }
        let recording: Vec<Option<CameraRecordConfig>> = config.cameras.iter().map(|c| c.records().then(|| c.record.clone())).collect();
        let (rec_tx, rec_rx) = mpsc::channel::<RecorderMsg>(crate::record::recorder::QUEUE);
        let record_control = Arc::new(RecordControl::new(
            &rec_tx,
            config.cameras.iter().zip(&recording).map(|(c, r)| (c.id.clone(), r.clone())).collect(),
            Duration::from_secs_f64(config.record.manual_max_s),
        ));
        let (detector_tx, detector) = watch::channel(DetectorState::Loading);
        Ok(Self {
            cancel: CancellationToken::new(),
            tasks: Tasks::new(),
            models,
            model_input,
            hub: Arc::new(FrameHub::new(config.cameras.len())),
            statuses: config
                .cameras
                .iter()
                .map(|c| Arc::new(CameraStatus::new(&c.id, c.masked_source(), c.enabled).with_frame_interval(c.frame_interval())))
                .collect(),
            record_stats: Arc::new(RecordStats::new(config.cameras.iter().map(|c| (c.id.clone(), c.records())))),
            recording,
            rec: Some((rec_tx, rec_rx)),
            record_control,
            evidence: None,
            detector,
            detect_stats: Arc::new(DetectStats::default()),
            outbox,
            wake: Arc::new(Notify::new()),
            store_stats: Arc::new(StoreStats::default()),
            live: Arc::new(crate::health::Live::new(config.cameras.iter().map(|c| c.id.clone()).collect())),
            publisher_stats: Arc::new(PublisherStats::default()),
            inputs_done: CancellationToken::new(),
            ota: config.ota.as_ref().map(|c| Arc::new(Ota::open(c, &config.state_dir))),
            detector_tx: Some(detector_tx),
            config,
        })
    }

    fn rec_tx(&self) -> mpsc::Sender<RecorderMsg> {
        self.rec.as_ref().expect("the recorder queue is open while the stages are built").0.clone()
    }

    /// The recording store, opened (and cleaned up after an unclean stop) before any camera writes to it;
    /// `None` when no camera records.
    fn open_recorder(&self) -> Option<OpenRecorder> {
        let c = &self.config;
        self.recording.iter().any(Option::is_some).then(|| {
            Recorder {
                config: c.record.clone(),
                dir: c.record_dir(),
                device_id: c.device_id.clone(),
                cameras: c.cameras.iter().zip(&self.recording).map(|(c, r)| (c.id.clone(), r.clone())).collect(),
                outbox: self.outbox.clone(),
                wake: self.wake.clone(),
                stats: self.record_stats.clone(),
            }
            .open()
        })
    }

    /// One capture thread per enabled camera; recorded cameras also feed the segment writer when the
    /// store is open.
    fn start_cameras(&mut self, store_open: bool) {
        for (index, cam) in self.config.cameras.iter().enumerate() {
            if !cam.enabled {
                tracing::info!(camera = %cam.id, "camera disabled in config");
                continue;
            }
            let record = self.recording[index].as_ref().filter(|_| store_open).map(|_| -> Arc<dyn EncodedSink> {
                Arc::new(SegmentSink {
                    camera: index,
                    dir: self.config.record_dir().join("segments").join(&cam.id),
                    segment: Duration::from_secs_f64(self.config.record.segment_s),
                    tx: self.rec_tx(),
                    stats: self.record_stats.clone(),
                })
            });
            let camera = Camera {
                index,
                config: cam.capture(),
                fit: cam.detect_size.map(|[w, h]| (w, h)).unwrap_or(self.model_input),
                hub: self.hub.clone(),
                status: self.statuses[index].clone(),
                record,
            };
            let cancel = self.cancel.clone();
            self.tasks.spawn_blocking(format!("camera {}", cam.id), move || camera.run(cancel));
        }
    }

    /// The detection thread: newest frames from the hub in, detections out on a bounded channel.
    fn start_detector(&mut self) -> mpsc::Receiver<FrameDetections> {
        let c = &self.config;
        let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
        let worker = DetectWorker {
            config: c.detector.clone(),
            engine_cache: c.engine_cache_dir(),
            labels: c.cameras.iter().map(|c| c.labels.clone()).collect(),
            min_scores: c.cameras.iter().map(|c| (c.min_score, c.min_score.min(c.track.low_score))).collect(),
            hub: self.hub.clone(),
            out: tx,
            state: self.detector_tx.take().expect("one detector"),
            stats: self.detect_stats.clone(),
            keep_images: self.recording.iter().map(Option::is_some).collect(),
            preview_every: c.http.enabled.then_some(crate::health::PREVIEW_EVERY),
            cadence: c.cameras.iter().zip(&self.statuses).map(|(c, s)| (crate::detect::cadence::Cadence::new(c.cadence.clone()), s.clone())).collect(),
            trial: Some(self.models.slot()),
        };
        let cancel = self.cancel.clone();
        self.tasks.spawn_blocking("detector", move || worker.run(cancel));
        rx
    }

    /// Tracking into events in the outbox (and clip requests to the recorder). Without a recorder, the
    /// event stage is the last input of the outbox: its end lets the publisher drain.
    fn start_events(&mut self, detections: mpsc::Receiver<FrameDetections>, recorder: bool, print: bool) {
        let sinks = EventSinks {
            outbox: self.outbox.clone(),
            wake: self.wake.clone(),
            recorder: recorder.then(|| self.rec_tx()),
            record_stats: self.record_stats.clone(),
            live: self.live.clone(),
            store_stats: self.store_stats.clone(),
        };
        let trackers: Vec<_> = self.config.cameras.iter().map(|c| (c.id.clone(), c.track.clone(), c.min_score)).collect();
        let events = EventStage::new(&self.config.device_id, &trackers, self.recording.clone(), sinks);
        let done = (!recorder).then(|| self.inputs_done.clone());
        self.tasks.spawn("events", events.run(detections, print, done));
    }

    /// The recorder thread, when a camera records. It ends when every sender of its queue is gone (the
    /// cameras and the event stage, at shutdown); its clip messages are the outbox's last input.
    fn start_recorder(&mut self, recorder: Option<OpenRecorder>) {
        let Some((tx, rx)) = self.rec.take() else { return };
        let Some(recorder) = recorder else { return };
        self.evidence = recorder.cache().map(|cache| Arc::new(Evidence::new(&tx, cache)));
        if let Some(evidence) = &self.evidence {
            self.record_control.serve_exports(evidence.clone(), tokio::runtime::Handle::current());
        }
        drop(tx);
        let (handle, done) = (tokio::runtime::Handle::current(), self.inputs_done.clone());
        self.tasks.spawn_blocking("recorder", move || {
            recorder.run(rx, handle);
            done.cancel();
        });
    }

    /// The MQTT publisher: the outbox, health and state out; `…/cmd/*` commands in.
    fn start_publisher(&mut self) {
        let Some(mqtt) = self.config.mqtt.clone() else {
            tracing::warn!("no [mqtt] broker configured: events are kept in the outbox (bounded by outbox.max_bytes)");
            return;
        };
        // State changes of an update or a model trial are published at once.
        let republish = Arc::new(Notify::new());
        let on_change: Arc<dyn Fn() + Send + Sync> = {
            let r = republish.clone();
            Arc::new(move || r.notify_one())
        };
        *self.models.on_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(on_change.clone());
        // `ota`: fleet updates through the same verified install as `perch ota install`; after one, the
        // service stops to be started again in the new release.
        let restart: Arc<dyn Fn() + Send + Sync> = Arc::new({
            let cancel = self.cancel.clone();
            move || cancel.cancel()
        });
        let fleet = self.ota.clone().map(|ota| Agent::for_service(ota, restart, Some(on_change)));
        let publisher = Publisher {
            cfg: mqtt,
            device_id: self.config.device_id.clone(),
            outbox: self.outbox.clone(),
            wake: self.wake.clone(),
            health: self.health_fn(fleet.clone()),
            commands: Some(self.commands(fleet)),
            stats: self.publisher_stats.clone(),
            inputs_done: self.inputs_done.clone(),
            drain_timeout: PUBLISH_DRAIN_TIMEOUT,
            republish,
        };
        self.tasks.spawn("publisher", publisher.run(self.cancel.clone()));
    }

    /// The health message: cameras, detector, outbox, broker, recording, and the update and model state.
    fn health_fn(&self, fleet: Option<Arc<Agent>>) -> HealthFn {
        let (statuses, detector, outbox, stats, mqtt) =
            (self.statuses.clone(), self.detector.clone(), self.outbox.clone(), self.detect_stats.clone(), self.publisher_stats.clone());
        let (device_id, record_stats, models, store) =
            (self.config.device_id.clone(), self.record_stats.clone(), self.models.clone(), self.store_stats.clone());
        Arc::new(move || {
            let mut h = health_snapshot(&device_id, &statuses, &detector.borrow(), &stats, outbox.stats(), &mqtt, &record_stats);
            h["events_store"] = serde_json::json!({ "held": store.held.load(std::sync::atomic::Ordering::Relaxed), "dropped": store.dropped_total(), "failing": store.failing() });
            if let Some(agent) = &fleet {
                h["ota"] = agent.state();
            }
            h["model"] = models.state();
            h
        })
    }

    /// `…/cmd/record`, `…/cmd/ota` (when `[ota]` is set) and `…/cmd/model`.
    fn commands(&self, fleet: Option<Arc<Agent>>) -> CommandFn {
        let (control, models) = (self.record_control.clone(), self.models.clone());
        Arc::new(move |name, request| match name {
            "record" => Some(control.command(request)),
            "ota" => fleet.as_ref().map(|a| a.command(request)),
            "model" => Some(models.command(request)),
            _ => None,
        })
    }

    /// The OTA health gate, when `[ota]` is set: records the boot and judges a release on trial.
    fn start_ota_gate(&mut self) {
        let Some(ota) = self.ota.clone() else { return };
        let inputs = crate::ota::health::HealthInputs {
            cameras: self.statuses.clone(),
            detector: self.detector.clone(),
            mqtt: self.config.mqtt.is_some().then(|| self.publisher_stats.clone()),
            state_dir: self.config.state_dir.clone(),
        };
        let check = crate::ota::health::GoldenCheck { detector: self.config.detector.clone(), engine_cache: self.config.engine_cache_dir() };
        crate::ota::health::spawn(&mut self.tasks, ota, check, inputs, self.cancel.clone());
    }

    /// The local HTTP endpoints (`[http]`).
    fn start_http(&mut self) {
        let models = self.models.clone();
        let handles = crate::health::Handles {
            device_id: self.config.device_id.clone(),
            cameras: self.statuses.clone(),
            detector: self.detector.clone(),
            detect: self.detect_stats.clone(),
            outbox: self.outbox.clone(),
            store: self.store_stats.clone(),
            mqtt: self.config.mqtt.is_some().then(|| self.publisher_stats.clone()),
            record: self.record_stats.clone(),
            evidence: self.evidence.clone(),
            ota: self.ota.clone().map(crate::ota::health::status_fn),
            model_state: Some(Arc::new(move || models.state())),
            live: self.live.clone(),
            state_dir: self.config.state_dir.clone(),
            model: self.config.detector.model.clone(),
            started: std::time::Instant::now(),
        };
        crate::health::server::spawn(&mut self.tasks, &self.config.http, handles, self.cancel.clone());
    }

    /// systemd's watchdog (fed only while the pipeline makes progress) and the periodic status line.
    fn start_watchdog(&mut self) {
        let watchdog = crate::health::systemd::Watchdog {
            notifier: crate::health::systemd::Notifier::from_env(),
            cameras: self.statuses.clone(),
            detector: self.detector.clone(),
            stats: self.detect_stats.clone(),
        };
        self.tasks.spawn("watchdog", watchdog.run(self.cancel.clone()));
        self.tasks.spawn("status", watch_status(self.statuses.clone(), self.detector.clone(), self.detect_stats.clone(), self.cancel.clone()));
    }

    /// Runs until a stop is asked for, then drains. Captures stop and finish their segments, the
    /// detector takes what was captured, open events end and their clips are made, the outbox is
    /// delivered. A second SIGTERM/SIGINT, or the timeout, ends it at once: everything on disk is
    /// crash-safe (the outbox is durable per batch, unfinished segments are removed at the next start,
    /// clip requests are persisted), so cutting the drain short loses no data.
    async fn serve(mut self) -> anyhow::Result<()> {
        let any_enabled = self.config.cameras.iter().any(|c| c.enabled);
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutdown requested; draining"),
            _ = all_finished(self.statuses.clone()), if any_enabled => tracing::info!("every camera has finished; stopping"),
            _ = self.cancel.cancelled() => tracing::info!("stopping (requested by the OTA health gate)"),
        }
        self.cancel.cancel();
        self.hub.wake();
        let mut tasks = std::mem::take(&mut self.tasks);
        tokio::select! {
            drained = tasks.drain(DRAIN_TIMEOUT) => {
                if let Drained::TimedOut(left) = drained {
                    tracing::warn!("{} did not stop within {} s; exiting anyway (stored data is safe)", left.join(", "), DRAIN_TIMEOUT.as_secs());
                }
            }
            _ = shutdown_signal() => {
                tracing::warn!("second stop signal: exiting now without finishing the drain (stored data is safe); still running: {}", tasks.running().join(", "));
                return Ok(());
            }
        }
        log_totals(&self.statuses);
        Ok(())
    }
}

/// The detector's input size, after checking every camera's labels against the model. A model that does
/// not load is not fatal here: the detector keeps retrying and reports itself failed, and the cameras
/// still run, scaled to a common size.
fn model_input(config: &Config) -> anyhow::Result<(u32, u32)> {
    match ModelManifest::load(&config.detector.model) {
        Ok(manifest) => {
            let problems = super::model::check_labels(config, &manifest);
            if !problems.is_empty() {
                anyhow::bail!("{}", problems.iter().map(|p| format!("`{}`: {}", p.key, p.message)).collect::<Vec<_>>().join("\n"));
            }
            Ok((manifest.input.width, manifest.input.height))
        }
        Err(e) => {
            tracing::error!("{e}");
            Ok((640, 640))
        }
    }
}

fn log_totals(statuses: &[Arc<CameraStatus>]) {
    for s in statuses {
        let snap = s.snapshot();
        tracing::info!(
            camera = %snap.id,
            frames = snap.frames,
            dropped_detector_busy = snap.dropped_detector_busy,
            dropped_sink = snap.dropped_sink,
            skipped_idle = snap.skipped_idle,
            skipped_decode = snap.skipped_decode,
            reconnects = snap.reconnects,
            "camera totals"
        );
    }
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
