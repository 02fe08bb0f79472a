//! The service's detection loop: takes the newest frame of each camera, detects, filters per camera, and
//! hands the result to the next stage over a bounded channel.
//!
//! Model loading happens here, on the worker's own thread, so cameras come online while a TensorRT engine
//! is still being built. A model that fails to load is retried with backoff (a GPU driver that comes up late,
//! a model file restored by an update), and the failure is visible in the detector state meanwhile.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cadence::{Cadence, Decision};
use super::trial::{Running, Step, TrialSlot};
use super::{DetectError, Detections, Detector, DetectorConfig, DetectorState, Timings};
use crate::capture::{CameraStatus, Frame, FrameHub, FrameInfo};
use crate::util::Backoff;
use crate::util::sleep_cancellable;

/// What the detector produces for each frame it processed (with or without detections).
#[derive(Debug)]
pub struct FrameDetections {
    pub frame: FrameInfo,
    pub detections: Detections,
    pub timings: Timings,
    /// The frame itself, for cameras that take snapshots, when it has detections (the GStreamer buffer,
    /// not a copy; it returns to the pipeline's pool once the next stage drops it).
    pub image: Option<Frame>,
}

/// Which detections a camera reports.
#[derive(Debug, Clone)]
pub struct CameraFilter {
    /// Class ids to keep; `None` keeps all.
    pub classes: Option<Vec<u16>>,
    /// Detections from this score on are objects (they start tracks, keep the camera active).
    pub min_score: f32,
    /// The detector reports boxes from this score on (at most `min_score`): the tracker's second stage
    /// continues tracks with them.
    pub track_score: f32,
}

/// Upper bounds (ms) of the inference latency histogram's buckets; the last bucket is everything above.
pub const INFERENCE_BUCKETS_MS: [u64; 11] = [5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000];

/// Counters of the detection loop.
#[derive(Debug, Default)]
pub struct DetectStats {
    pub frames: AtomicU64,
    pub errors: AtomicU64,
    /// Last inference time in microseconds.
    pub last_inference_us: AtomicU64,
    /// Inferences per latency bucket (not cumulative; one more than [`INFERENCE_BUCKETS_MS`] for +Inf).
    pub inference_buckets: [AtomicU64; INFERENCE_BUCKETS_MS.len() + 1],
    /// Sum of all inference times in microseconds (with `inference_buckets`, a Prometheus histogram).
    pub inference_sum_us: AtomicU64,
    /// Beats on every turn of the detection loop once the model is loaded: a loop stuck (a wedged
    /// inference, an output stage that stopped taking results) stops beating.
    pub heartbeat: crate::util::Heartbeat,
}

impl DetectStats {
    /// Counts one inference: a few relaxed atomic adds, no allocation.
    pub fn observe_inference(&self, d: Duration) {
        let us = d.as_micros() as u64;
        self.last_inference_us.store(us, Ordering::Relaxed);
        self.inference_sum_us.fetch_add(us, Ordering::Relaxed);
        let i = INFERENCE_BUCKETS_MS.iter().position(|&b| us <= b * 1000).unwrap_or(INFERENCE_BUCKETS_MS.len());
        self.inference_buckets[i].fetch_add(1, Ordering::Relaxed);
    }
}

pub struct DetectWorker {
    pub config: DetectorConfig,
    pub engine_cache: PathBuf,
    /// Filters by camera label names, resolved to class ids once the model is known.
    pub labels: Vec<Vec<String>>,
    /// Per camera: `min_score`, and the lower score the tracker's second stage takes boxes from.
    pub min_scores: Vec<(f32, f32)>,
    pub hub: Arc<FrameHub>,
    pub out: mpsc::Sender<FrameDetections>,
    pub state: watch::Sender<DetectorState>,
    pub stats: Arc<DetectStats>,
    /// Per camera: hand the frame on with its detections (for snapshots).
    pub keep_images: Vec<bool>,
    /// Also hand a camera's frame on at most this often, detections or not (the status page's picture).
    pub preview_every: Option<Duration>,
    /// Per camera: adaptive cadence, and the status its skipped frames are counted in.
    pub cadence: Vec<(Cadence, Arc<CameraStatus>)>,
    /// Where a model trial (blue/green) is handed over, when model updates are enabled.
    pub trial: Option<Arc<TrialSlot>>,
}

impl DetectWorker {
    /// Runs until cancelled; on cancellation, frames already waiting are still detected and handed on.
    pub fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300), 0.2);
        let report = |s: DetectorState| {
            let _ = self.state.send(s);
        };
        let mut detector = loop {
            match Detector::load(&self.config, &self.engine_cache, &report) {
                Ok(d) => break d,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::error!("detector failed to load: {e}; retrying in {:.0} s", delay.as_secs_f64());
                    report(DetectorState::Failed { error: e.to_string() });
                    if sleep_cancellable(delay, &cancel, None) {
                        return;
                    }
                }
            }
        };
        let filters_for = |detector: &Detector| -> Vec<CameraFilter> {
            self.labels
                .iter()
                .zip(&self.min_scores)
                .map(|(labels, &(min_score, track_score))| CameraFilter {
                    classes: (!labels.is_empty()).then(|| labels.iter().filter_map(|l| detector.manifest().label_index(l).map(|i| i as u16)).collect()),
                    min_score,
                    track_score,
                })
                .collect()
        };
        let mut filters = filters_for(&detector);
        let mut trial: Option<Running> = None;

        let mut found = Detections::new();
        // When each camera last handed a preview frame on (allocated once, before the loop).
        let mut last_preview: Vec<Option<std::time::Instant>> = vec![None; self.keep_images.len().max(self.labels.len())];
        loop {
            self.stats.heartbeat.beat();
            // A model trial: picked up, and ended (enough frames, or its time is up even without frames)
            // here, between two frames: the one before was the old model's, the next is the new one's.
            if let Some(slot) = &self.trial {
                Running::poll(slot, &mut trial);
                if let Some(promoted) = Running::finish(&mut trial) {
                    detector = promoted;
                    filters = filters_for(&detector);
                    let _ = self.state.send(DetectorState::Ready { provider: detector.provider() });
                }
            }
            let draining = cancel.is_cancelled();
            let timeout = if draining { Duration::ZERO } else { Duration::from_millis(100) };
            let Some(frame) = self.hub.take(timeout) else {
                if draining {
                    break;
                }
                continue;
            };
            let camera = frame.info.camera;
            if let Some((cadence, status)) = self.cadence.get_mut(camera) {
                let decision = cadence.decide(&frame.view(), frame.info.wall);
                status.still.store(cadence.still(), Ordering::Relaxed);
                if decision == Decision::Skip {
                    status.skipped_idle.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let filter = &filters[camera];
            let step = trial.as_mut().map_or(Step::Skip, Running::step);
            let mut candidate = match (&step, trial.as_mut()) {
                (Step::CandidateFirst, Some(t)) => Some(t.run_candidate(&frame.view(), filter.min_score)),
                _ => None,
            };
            let started = std::time::Instant::now();
            let result = detector.detect(&frame.view(), filter.track_score, &mut found);
            let current_ms = started.elapsed().as_secs_f64() * 1e3;
            if let (Step::CandidateAfter, Some(t)) = (&step, trial.as_mut()) {
                candidate = Some(t.run_candidate(&frame.view(), filter.min_score));
            }
            if let (Ok(_), Some(c), Some(t), Some(slot)) = (&result, candidate, trial.as_mut(), &self.trial) {
                t.record(&found, filter.min_score, current_ms, c, slot);
            }
            match result {
                Ok(timings) => {
                    self.stats.frames.fetch_add(1, Ordering::Relaxed);
                    self.stats.observe_inference(timings.inference);
                    let mut result = FrameDetections { frame: frame.info, detections: Detections::new(), timings, image: None };
                    for d in found.iter().filter(|d| filter.classes.as_ref().is_none_or(|c| c.contains(&d.class_id))) {
                        // Same capacity: cannot overflow.
                        let _ = result.detections.push(d.clone());
                    }
                    if let Some((cadence, status)) = self.cadence.get_mut(camera) {
                        let active = result.detections.iter().any(|d| d.score >= filter.min_score);
                        cadence.detected(&frame.view(), frame.info.wall, active);
                        status.still.store(cadence.still(), Ordering::Relaxed);
                    }
                    let preview = self.preview_every.is_some_and(|every| {
                        let due = last_preview.get(camera).copied().flatten().is_none_or(|t| t.elapsed() >= every);
                        if due && let Some(slot) = last_preview.get_mut(camera) {
                            *slot = Some(std::time::Instant::now());
                        }
                        due
                    });
                    if preview || (!result.detections.is_empty() && self.keep_images.get(camera).copied().unwrap_or(false)) {
                        result.image = Some(frame);
                    }
                    // Blocks when the next stage is behind: frames then drop at the hub, counted per camera.
                    if self.out.blocking_send(result).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let n = self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    log_detect_error(n, &e);
                }
            }
        }
        tracing::debug!("detector stopped");
    }
}

/// Logs the first errors, then one in a hundred: a broken stream must not flood the journal.
fn log_detect_error(count: u64, e: &DetectError) {
    if count < 10 || count.is_multiple_of(100) {
        tracing::error!(errors = count + 1, "detection failed: {e}");
    }
}
