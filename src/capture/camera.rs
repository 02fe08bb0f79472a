//! The supervisor of one camera: keeps its pipeline running for as long as the service runs.
//!
//! It opens the stream, hands frames to the [`FrameHub`], and on any failure — the source cannot be opened,
//! a stream error, end of stream, or no frame for `stall_timeout_s` — tears the pipeline down, reports the
//! camera offline and tries again after an exponential backoff with jitter. It never gives up and never
//! takes the service or the other cameras down with it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::encoded::EncodedSink;
use super::frame::FrameHub;
use super::pipeline::{CaptureError, CapturePipeline, Pacing, PipelineSpec, Pull};
use super::settings::{CaptureSettings, DecodeMode};
use super::source::Source;
use super::status::{CameraState, CameraStatus};
use crate::util::Backoff;

/// How often the capture thread wakes up to check for cancellation while waiting for a frame.
const POLL: Duration = Duration::from_millis(100);

/// Why a pipeline session ended.
enum SessionEnd {
    Cancelled,
    /// A non-looping file reached its end.
    Finished,
    /// End of stream on a live source or a looping file.
    Eos,
    Failed(CaptureError),
}

/// Everything a camera's capture thread needs.
pub struct Camera {
    pub index: usize,
    pub config: CaptureSettings,
    /// The box frames are scaled to fit (the camera's detect size or the model input).
    pub fit: (u32, u32),
    pub hub: Arc<FrameHub>,
    pub status: Arc<CameraStatus>,
    /// Where to record this camera's stream, when it is recorded.
    pub record: Option<Arc<dyn EncodedSink>>,
}

impl Camera {
    /// Runs until `cancel` fires (or a non-looping file ends). Blocking: run it on its own thread.
    pub fn run(self, cancel: CancellationToken) {
        let id = self.config.id.clone();
        let source = match Source::parse(&self.config.source) {
            Ok(s) => s,
            Err(e) => {
                // Validation catches this at start; kept for callers that skip it.
                self.status.set_state(CameraState::Offline);
                self.status.set_error(Some(e.to_string()));
                tracing::error!(camera = %id, "camera cannot start: {e}");
                return;
            }
        };
        // With a sub-stream, it is the one decoded, and the main stream is only recorded.
        let (source, record_source) = match self.config.detect_source.as_deref().map(Source::parse) {
            Some(Ok(sub)) => (sub, Some(source)),
            Some(Err(e)) => {
                self.status.set_state(CameraState::Offline);
                self.status.set_error(Some(e.to_string()));
                tracing::error!(camera = %id, "camera cannot start: detect_source: {e}");
                return;
            }
            None => (source, None),
        };
        let spec = PipelineSpec {
            source: source.clone(),
            max_fps: Some(self.config.detect_fps),
            fit: self.fit,
            pacing: Pacing::RealTime,
            rtsp_transport: self.config.rtsp_transport,
            rtsp_latency_ms: self.config.rtsp_latency_ms,
            connect_timeout: self.config.connect_timeout,
            record: self.record.clone(),
            record_source,
            decode_threads: self.config.decode_threads,
            keyframes_when_idle: (self.config.decode == DecodeMode::KeyframesWhenIdle).then(|| self.status.clone()),
        };
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max, 0.2);
        let mut seq = 0u64;
        let mut first = true;
        tracing::info!(camera = %id, source = %self.status.source, "camera starting");
        loop {
            if !first {
                self.status.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            self.status.set_state(CameraState::Connecting);
            let (end, delivered) = self.session(&spec, &mut seq, &cancel);
            // On shutdown or at the end of a file, the last frame stays for the detector to finish.
            let (reason, eos) = match end {
                SessionEnd::Cancelled => break,
                SessionEnd::Finished => {
                    self.status.set_state(CameraState::Ended);
                    tracing::info!(camera = %id, frames = self.status.frames.load(Ordering::Relaxed), "file source finished");
                    return;
                }
                SessionEnd::Eos => ("end of stream".to_string(), true),
                SessionEnd::Failed(e) => (e.to_string(), false),
            };
            // A frame from a failed session is stale by the time the stream is back.
            self.hub.clear(self.index);
            if delivered > 0 {
                backoff.reset();
            }
            // A looping file that ran to its end starts over at once; anything else waits.
            let replay = eos && !source.is_live() && delivered > 0;
            let delay = if replay { Duration::ZERO } else { backoff.next_delay() };
            self.status.set_state(CameraState::Offline);
            self.status.set_error(Some(reason.clone()));
            if replay {
                tracing::debug!(camera = %id, "file source ended; starting over");
            } else {
                tracing::warn!(camera = %id, source = %self.status.source, "camera offline: {reason}; retrying in {:.1} s", delay.as_secs_f64());
            }
            if crate::util::sleep_cancellable(delay, &cancel, Some(&self.status.heartbeat)) {
                break;
            }
        }
        self.status.set_state(CameraState::Offline);
        self.status.set_error(Some("service stopped".into()));
        tracing::debug!(camera = %id, "camera stopped");
    }

    /// One pipeline session; returns how it ended and how many frames it delivered.
    fn session(&self, spec: &PipelineSpec, seq: &mut u64, cancel: &CancellationToken) -> (SessionEnd, u64) {
        let id = &self.config.id;
        let mut pipeline = match CapturePipeline::build(spec, self.index).and_then(|mut p| p.start().map(|_| p)) {
            Ok(p) => p,
            Err(e) => return (SessionEnd::Failed(e), 0),
        };
        let stall = self.config.stall_timeout;
        let mut last_frame = Instant::now();
        let mut delivered = 0u64;
        let mut sink_drops_seen = 0u64;
        loop {
            self.status.heartbeat.beat();
            if cancel.is_cancelled() {
                return (SessionEnd::Cancelled, delivered);
            }
            match pipeline.pull(POLL, *seq) {
                Ok(Pull::Frame(frame)) => {
                    if delivered == 0 {
                        self.status.set_state(CameraState::Online);
                        self.status.set_error(None);
                        let (w, h) = pipeline.source_size().unwrap_or((frame.width, frame.height));
                        tracing::info!(camera = %id, width = w, height = h, detect_width = frame.width, detect_height = frame.height, "camera online");
                    }
                    delivered += 1;
                    *seq += 1;
                    last_frame = Instant::now();
                    self.status.record_frame(frame.info.wall);
                    if self.hub.publish(frame) {
                        self.status.dropped_detector_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    let drops = pipeline.sink_drops();
                    if drops > sink_drops_seen {
                        self.status.dropped_sink.fetch_add(drops - sink_drops_seen, Ordering::Relaxed);
                        sink_drops_seen = drops;
                    }
                }
                Ok(Pull::Timeout) => {
                    // A camera decoding keyframes only (idle) is alive while its stream reaches the decoder.
                    let input = self.status.input_age(crate::util::unix_ms(std::time::SystemTime::now()));
                    let quiet = input.map_or(last_frame.elapsed(), |age| age.min(last_frame.elapsed()));
                    if quiet > stall {
                        return (SessionEnd::Failed(CaptureError::Stalled(quiet.as_secs_f64())), delivered);
                    }
                }
                Ok(Pull::Eos) => {
                    if delivered == 0 {
                        return (SessionEnd::Failed(CaptureError::NoFrames), 0);
                    }
                    if !spec.source.is_live() && !self.config.loop_file {
                        return (SessionEnd::Finished, delivered);
                    }
                    return (SessionEnd::Eos, delivered);
                }
                Err(e) => return (SessionEnd::Failed(e), delivered),
            }
        }
    }
}
