//! Writes one camera's encoded stream into segment files, in a pipeline of its own:
//! `appsrc → [h264timestamper] → splitmuxsink`.
//!
//! The capture pipeline taps the parsed stream (after depayloading: the same RTSP session as detection)
//! and hands each encoded frame to the writer through capture's [`EncodedWriter`] (`push`). A separate
//! pipeline keeps recording failures — a full or failing disk — away from detection: the writer reports
//! the error, drops frames (counted) and starts a fresh pipeline at the next keyframe after [`RETRY`],
//! while the camera keeps being analysed.
//!
//! Frames arrive stamped with their running time in the capture pipeline, so `splitmuxsink`'s segment
//! boundaries are in the same timeline, and the capture pipeline's base time (the realtime clock) turns
//! them into wall-clock times. The frames arrive already parsed into MP4's form (`avc`, one access unit per
//! buffer, keyframes flagged), so nothing is parsed twice; for streams without decode timestamps (RTP
//! carries none) `h264timestamper` restores them, which MP4 needs when there are B-frames.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::SegmentSink;
use crate::capture::encoded::{EncodedSink, EncodedWriter};

/// Added to every timestamp handed to the writer, and taken off the segment times it reports. A file's
/// first frames decode before they are shown (B-frames), so their decode times fall before the start of the
/// capture pipeline's timeline; MP4 needs them kept, in order, rather than dropped or clamped to zero.
const LEAD: gst::ClockTime = gst::ClockTime::from_seconds(10);
/// Wait before a failed writer is started again.
pub const RETRY: Duration = Duration::from_secs(10);
/// Encoded bytes the writer may queue when the disk is slow; beyond, frames are dropped (counted).
const MAX_QUEUED_BYTES: u64 = 16 << 20;
/// Longest wait for the segment being written to be finished when the writer stops.
const FINISH_TIMEOUT: Duration = Duration::from_secs(3);

struct Running {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    bus: gst::Bus,
    /// Running time at which each open segment file started, by file name.
    opened: HashMap<String, u64>,
    caps: Option<gst::Caps>,
}

/// The segment writer of one camera's pipeline session.
pub struct SegmentWriter {
    sink: SegmentSink,
    /// `h264` or `h265`.
    codec: &'static str,
    running: Option<Running>,
    failed_at: Option<Instant>,
    /// Frames are dropped until a keyframe after a (re)start: a segment must start with one.
    need_keyframe: bool,
    /// Wait for the disk instead of dropping when the queue is full (benchmarks reading files faster than
    /// real time); a live camera never waits.
    backpressure: bool,
}

fn make(factory: &str, name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).name(name).build().map_err(|_| format!("GStreamer element `{factory}` is missing: install its plugin package"))
}

impl SegmentWriter {
    pub fn new(sink: SegmentSink, codec: &'static str) -> Self {
        Self { sink, codec, running: None, failed_at: None, need_keyframe: true, backpressure: false }
    }

    /// Waits for the disk instead of dropping: for input read faster than real time, where dropping would be wrong.
    pub fn with_backpressure(mut self) -> Self {
        self.backpressure = true;
        self
    }

    /// `timestamps`: the stream lacks decode timestamps (RTP), which are then computed.
    fn start(&mut self, timestamps: bool) -> Result<(), String> {
        let pipeline = gst::Pipeline::new();
        // No clock: frames are written as they come, never waited for.
        pipeline.use_clock(None::<&gst::Clock>);
        let src = gst_app::AppSrc::builder().format(gst::Format::Time).is_live(false).build();
        let mux = make("splitmuxsink", "segments")?;
        // A little over the segment length, so that a keyframe exactly at the boundary (2 GOPs of 1 s)
        // still ends the segment there rather than one GOP earlier.
        mux.set_property("max-size-time", (self.sink.segment + Duration::from_millis(250)).as_nanos() as u64);
        let dir = self.sink.dir.clone();
        let session = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        mux.connect("format-location", false, move |args| {
            let fragment = args.get(1).and_then(|v| v.get::<u32>().ok()).unwrap_or(0);
            Some(dir.join(format!("rec-{session:x}-{fragment:06}.part")).to_string_lossy().into_owned().to_value())
        });
        let mut chain: Vec<gst::Element> = vec![src.clone().upcast()];
        if timestamps {
            match make(&format!("{}timestamper", self.codec), "timestamper") {
                Ok(t) => chain.push(t),
                // GStreamer < 1.22 (JetPack 6 ships 1.20): fine for cameras without B-frames, most of them.
                Err(_) => tracing::warn!(
                    camera = self.sink.camera,
                    "{}timestamper is missing (GStreamer < 1.22): segments of streams with B-frames may be mistimed",
                    self.codec
                ),
            }
        }
        chain.push(mux);
        pipeline.add_many(&chain).map_err(|e| e.to_string())?;
        gst::Element::link_many(&chain).map_err(|e| e.to_string())?;
        pipeline.set_state(gst::State::Playing).map_err(|_| "the segment writer refused to start".to_string())?;
        let bus = pipeline.bus().ok_or("pipeline without a bus")?;
        self.running = Some(Running { pipeline, src, bus, opened: HashMap::new(), caps: None });
        self.need_keyframe = true;
        Ok(())
    }

    fn fail(&mut self, why: &str) {
        if let Some(r) = self.running.take() {
            let _ = r.pipeline.set_state(gst::State::Null);
            for (location, _) in r.opened {
                let _ = std::fs::remove_file(location);
            }
        }
        self.failed_at = Some(Instant::now());
        tracing::error!(camera = self.sink.camera, "recording stopped: {why}; detection goes on, recording restarts in {} s", RETRY.as_secs());
        if let Some(s) = self.sink.camera_stats() {
            s.set_unsupported(Some(format!("recording failed: {why}")));
        }
    }

    fn dropped(&self) {
        if let Some(s) = self.sink.camera_stats() {
            s.dropped_frames.fetch_add(1, Relaxed);
        }
    }
}

impl EncodedWriter for SegmentWriter {
    /// Takes one encoded frame from the capture pipeline (its streaming thread).
    fn push(&mut self, sample: &gst::Sample) {
        if self.running.is_none() {
            if self.failed_at.is_some_and(|t| t.elapsed() < RETRY) {
                return self.dropped();
            }
            if let Err(e) = self.start(sample.buffer().is_some_and(|b| b.dts().is_none())) {
                return self.fail(&e);
            }
            if self.failed_at.take().is_some() {
                tracing::info!(camera = self.sink.camera, "recording restarted");
                if let Some(s) = self.sink.camera_stats() {
                    s.set_unsupported(None);
                }
            }
        }
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else { return };
        if self.need_keyframe {
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return self.dropped();
            }
            self.need_keyframe = false;
        }
        let r = self.running.as_mut().expect("started above");
        while self.backpressure && r.src.current_level_bytes() > MAX_QUEUED_BYTES {
            std::thread::sleep(Duration::from_millis(1));
        }
        if r.src.current_level_bytes() > MAX_QUEUED_BYTES {
            // The disk is not keeping up; the segment will have a hole, so restart at a keyframe.
            self.need_keyframe = true;
            return self.dropped();
        }
        if r.caps.as_ref().is_none_or(|c| c.as_ref() != caps) {
            r.src.set_caps(Some(&caps.to_owned()));
            r.caps = Some(caps.to_owned());
        }
        // Restamp with the capture pipeline's running time: one timeline for segments and frames.
        let segment = sample.segment().and_then(|s| s.downcast_ref::<gst::format::Time>().cloned());
        let running = |t: Option<gst::ClockTime>| -> Result<Option<gst::ClockTime>, ()> {
            let Some(t) = t else { return Ok(None) };
            let Some(segment) = segment.as_ref() else { return Ok(Some(t + LEAD)) };
            match segment.to_running_time_full(t) {
                Some(gst::Signed::Positive(r)) => Ok(Some(r + LEAD)),
                Some(gst::Signed::Negative(r)) => LEAD.checked_sub(r).map(Some).ok_or(()),
                None => Ok(None),
            }
        };
        let (Ok(pts), Ok(dts)) = (running(buffer.pts()), running(buffer.dts())) else {
            // Further back than LEAD before the timeline's start: nothing a real stream does.
            self.need_keyframe = true;
            return self.dropped();
        };
        let mut buf = buffer.copy();
        {
            let b = buf.make_mut();
            b.set_pts(pts);
            b.set_dts(dts);
        }
        if r.src.push_buffer(buf).is_err() {
            self.fail("the segment writer stopped taking frames");
        }
    }

    /// Handles the writer's messages: finished segments go to the recorder, errors stop the writer until
    /// the retry. `base_ns` is the capture pipeline's base time. Called from the capture thread.
    fn poll(&mut self, base_ns: u64) {
        let Some(r) = self.running.as_mut() else { return };
        let mut error = None;
        while let Some(msg) = r.bus.pop_filtered(&[gst::MessageType::Element, gst::MessageType::Error]) {
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure() {
                        segment_message(r, &self.sink, s, base_ns);
                    }
                }
                gst::MessageView::Error(e) => {
                    let mut m = e.error().to_string();
                    if let Some(d) = e.debug() {
                        m = format!("{m} ({})", d.replace('\n', "; "));
                    }
                    error = Some(m);
                }
                _ => {}
            }
        }
        if let Some(e) = error {
            self.fail(&e);
        }
    }

    /// Finishes the segment being written (end of stream, bounded wait) and stops.
    fn finish(&mut self, base_ns: u64) {
        let Some(mut r) = self.running.take() else { return };
        let _ = r.src.end_of_stream();
        let deadline = Instant::now() + FINISH_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(msg) = r.bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Element, gst::MessageType::Eos, gst::MessageType::Error],
            ) else {
                break;
            };
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure() {
                        segment_message(&mut r, &self.sink, s, base_ns);
                    }
                }
                _ => break,
            }
        }
        let _ = r.pipeline.set_state(gst::State::Null);
        // Whatever is still open was never finished: removed now, as it would be at the next start.
        for (location, _) in r.opened.drain() {
            let _ = std::fs::remove_file(location);
        }
    }
}

/// Follows `splitmuxsink`'s files: a finished one goes to the recorder with its wall-clock span.
fn segment_message(r: &mut Running, sink: &SegmentSink, s: &gst::StructureRef, base_ns: u64) {
    let (Ok(location), Ok(running)) = (s.get::<String>("location"), s.get::<u64>("running-time")) else { return };
    let running = running.saturating_sub(LEAD.nseconds());
    match s.name().as_str() {
        "splitmuxsink-fragment-opened" => {
            r.opened.insert(location, running);
        }
        "splitmuxsink-fragment-closed" => {
            let Some(start) = r.opened.remove(&location) else { return };
            if running > start {
                sink.finished(location.into(), (base_ns + start) / 1_000_000, (base_ns + running) / 1_000_000);
            } else {
                let _ = std::fs::remove_file(&location);
            }
        }
        _ => {}
    }
}

/// Capture hands a recorded camera's encoded stream to its segment writer through this.
impl EncodedSink for SegmentSink {
    fn recordable(&self, why_not: Option<String>) {
        if let Some(s) = self.camera_stats() {
            s.set_unsupported(why_not);
        }
    }

    fn dropped(&self) {
        if let Some(s) = self.camera_stats() {
            s.dropped_frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn open(&self, codec: &'static str) -> Box<dyn EncodedWriter> {
        Box::new(SegmentWriter::new(self.clone(), codec))
    }
}
