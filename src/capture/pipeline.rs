//! One GStreamer pipeline per camera: source → decode → rate limit → scale → BGR → appsink, and, for a
//! recorded camera, a second branch that hands the encoded stream on (to the recorder's segments).
//!
//! A recorded camera's pipeline opens the source once (`urisourcebin`: one RTSP session), depayloads and
//! parses it (`parsebin`), and splits the encoded stream with a `tee`: one branch goes to the decoder, the
//! other to an appsink that hands each encoded frame to the camera's [`EncodedWriter`] (the recorder's
//! segment writer, a pipeline of its own, so a failing disk never stops detection). Each branch has its own queue; on live sources both are
//! leaky, so a slow decoder never stalls recording and a slow disk never stalls detection, and whatever
//! they drop is counted.
//!
//! All the per-frame work that can be done before perch sees a frame happens inside GStreamer: frames above
//! the detect rate are dropped right after decoding (`videorate drop-only`), the rest are scaled to fit the
//! detect size and converted to BGR, and the appsink keeps only the newest frame (`max-buffers=1 drop=true`)
//! for live use. Decoding goes through `decodebin`, which picks the highest-ranked decoder: NVDEC
//! (`nvh264dec`) on a T4 box or `nvv4l2decoder` on a Jetson when their plugins are installed, software
//! otherwise. On Jetson the NVMM frames are scaled by `nvvidconv`, found at run time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

#[cfg(doc)]
use super::encoded::EncodedWriter;
use super::encoded::{self, EncodedSink, SharedWriter as Writer};
use super::frame::{Frame, FrameInfo};
use super::settings::RtspTransport;
use super::source::Source;
use super::status::CameraStatus;
use crate::util::secret::{mask_in_text, secrets_of};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("GStreamer could not start: {0}. Install the GStreamer runtime (scripts/setup.sh does) and check GST_PLUGIN_PATH")]
    Init(String),
    #[error(
        "GStreamer element `{0}` is missing: install the plugin package that provides it (see `gst-inspect-1.0 {0}`; scripts/setup.sh installs the usual set)"
    )]
    MissingElement(String),
    #[error("could not build the capture pipeline: {0}")]
    Build(String),
    #[error("stream error from {element}: {message}")]
    Stream { element: String, message: String },
    #[error("no frame for {0:.1} s: the stream stalled (check the camera and the network; perch reconnects by itself)")]
    Stalled(f64),
    #[error("the source ended before delivering a frame: check that it holds a video stream perch can decode")]
    NoFrames,
}

/// How frames are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Service use: live sources as they come, files played at their own speed; the sink keeps only the newest
    /// frame, so a slow consumer never stalls the camera.
    RealTime,
    /// One-shot use (`perch detect`): files decoded as fast as the consumer takes frames, none dropped.
    AsFastAsConsumed,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub source: Source,
    /// Maximum frames per second handed out; `None` for every frame.
    pub max_fps: Option<f64>,
    /// Frames are scaled down (aspect kept) to fit this box.
    pub fit: (u32, u32),
    pub pacing: Pacing,
    pub rtsp_transport: RtspTransport,
    pub rtsp_latency_ms: u32,
    /// How long to wait for an RTSP server to answer.
    pub connect_timeout: Duration,
    /// Record the encoded stream into segments (RTSP and file sources carrying H.264/H.265).
    pub record: Option<Arc<dyn EncodedSink>>,
    /// The stream to record when it is not `source`: a camera's main stream, while `source` is its
    /// lower-resolution sub-stream, the only one decoded.
    pub record_source: Option<Source>,
    /// Threads of a software decoder (0: its own choice).
    pub decode_threads: u32,
    /// `decode = "keyframes_when_idle"`: the camera whose idle flag gates the decoder's input, and where
    /// the frames kept from it are counted.
    pub keyframes_when_idle: Option<Arc<CameraStatus>>,
}

/// The result of waiting for a frame.
#[derive(Debug)]
pub enum Pull {
    Frame(Frame),
    /// Nothing within the timeout; the stream may still be fine.
    Timeout,
    /// The source ended.
    Eos,
}

/// A built, running capture pipeline.
pub struct CapturePipeline {
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    bus: gst::Bus,
    secrets: Vec<String>,
    /// Decoded source size, packed as `w << 32 | h`, learnt when the decoder exposes its pad.
    source_size: Arc<AtomicU64>,
    /// Buffers that reached the sink, to count the ones it dropped.
    arrived: Arc<AtomicU64>,
    pulled: u64,
    pacing: Pacing,
    camera: usize,
    /// The camera's segment writer, once the stream turned out to be recordable.
    writer: Writer,
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), CaptureError> {
    gst::init().map_err(|e| CaptureError::Init(e.to_string()))
}

fn make(factory: &str) -> Result<gst::Element, CaptureError> {
    gst::ElementFactory::make(factory).build().map_err(|_| CaptureError::MissingElement(factory.to_string()))
}

/// Scaled size that fits `fit` with the aspect ratio kept, never upscaling, with the width a multiple of 4
/// so BGR rows need no padding (stride == width × 3).
pub fn fit_size(src: (u32, u32), fit: (u32, u32)) -> (u32, u32) {
    let (w, h) = (src.0.max(1) as f64, src.1.max(1) as f64);
    let r = (fit.0 as f64 / w).min(fit.1 as f64 / h).min(1.0);
    let sw = ((w * r).floor() as u32 / 4 * 4).max(4);
    let sh = ((h * r).round() as u32).max(2);
    (sw, sh)
}

fn fps_fraction(fps: f64) -> gst::Fraction {
    let denom = 1000;
    let numer = (fps * denom as f64).round().max(1.0) as i32;
    gst::Fraction::new(numer, denom)
}

impl CapturePipeline {
    /// Builds the pipeline for `spec` (not yet playing).
    pub fn build(spec: &PipelineSpec, camera: usize) -> Result<Self, CaptureError> {
        init()?;
        let secrets =
            [Some(&spec.source), spec.record_source.as_ref()].into_iter().flatten().filter_map(|s| s.gst_uri()).flat_map(|u| secrets_of(&u)).collect();
        let pipeline = gst::Pipeline::new();
        configure_decoders(&pipeline, spec);

        // Tail: [videorate → rate caps] → scaler → size caps → appsink.
        let mut tail: Vec<gst::Element> = Vec::new();
        if let Some(fps) = spec.max_fps.filter(|_| !spec.source.is_image()) {
            let rate = make("videorate")?;
            rate.set_property("drop-only", true);
            let rate_caps = make("capsfilter")?;
            let range = gst::FractionRange::new(gst::Fraction::new(0, 1), fps_fraction(fps));
            rate_caps.set_property("caps", gst::Caps::builder("video/x-raw").field("framerate", range).build());
            tail.push(rate);
            tail.push(rate_caps);
        }
        let size_filter = make("capsfilter")?;
        let jetson = gst::ElementFactory::find("nvvidconv").is_some();
        let size_format = if jetson {
            // nvvidconv reads NVMM memory from the hardware decoder and scales on the VIC.
            tail.push(make("nvvidconv")?);
            tail.push(size_filter.clone());
            tail.push(make("videoconvert")?);
            "BGRx"
        } else {
            tail.push(make("videoscale")?);
            tail.push(make("videoconvert")?);
            tail.push(size_filter.clone());
            "BGR"
        };
        let live = spec.pacing == Pacing::RealTime;
        let appsink = gst_app::AppSink::builder()
            .caps(&gst::Caps::builder("video/x-raw").field("format", "BGR").build())
            .max_buffers(if live { 1 } else { 2 })
            .drop(live)
            // Files in the service play at their own speed, like a camera; live sources are taken as they come.
            .sync(live && !spec.source.is_live())
            .enable_last_sample(false)
            .build();
        tail.push(appsink.clone().upcast());
        pipeline.add_many(&tail).map_err(|e| CaptureError::Build(e.to_string()))?;
        gst::Element::link_many(&tail).map_err(|e| CaptureError::Build(e.to_string()))?;

        let arrived = Arc::new(AtomicU64::new(0));
        if let Some(pad) = appsink.static_pad("sink") {
            let arrived = arrived.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                arrived.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }

        let source_size = Arc::new(AtomicU64::new(0));
        let tail_sink = tail[0].static_pad("sink").ok_or_else(|| CaptureError::Build("tail has no sink pad".into()))?;
        let fit = spec.fit;
        let on_video_pad = {
            let source_size = source_size.clone();
            let size_filter = size_filter.clone();
            move |caps: &gst::CapsRef| {
                let s = caps.structure(0)?;
                let (w, h) = (s.get::<i32>("width").ok()? as u32, s.get::<i32>("height").ok()? as u32);
                source_size.store(((w as u64) << 32) | h as u64, Ordering::Relaxed);
                let (sw, sh) = fit_size((w, h), fit);
                size_filter.set_property(
                    "caps",
                    gst::Caps::builder("video/x-raw").field("format", size_format).field("width", sw as i32).field("height", sh as i32).build(),
                );
                Some(())
            }
        };

        let mut writer = None;
        match &spec.source {
            Source::Test { pattern, width, height, fps } => {
                if let Some(rec) = &spec.record {
                    rec.recordable(Some("test patterns are not recorded: there is no encoded stream to copy".into()));
                }
                let src = make("videotestsrc")?;
                src.set_property("is-live", true);
                src.set_property_from_str("pattern", pattern);
                let caps = gst::Caps::builder("video/x-raw")
                    .field("width", *width as i32)
                    .field("height", *height as i32)
                    .field("framerate", gst::Fraction::new(*fps as i32, 1))
                    .build();
                let filter = make("capsfilter")?;
                filter.set_property("caps", &caps);
                pipeline.add_many([&src, &filter]).map_err(|e| CaptureError::Build(e.to_string()))?;
                src.link(&filter).map_err(|e| CaptureError::Build(e.to_string()))?;
                on_video_pad(&caps);
                filter.link(&tail[0]).map_err(|e| CaptureError::Build(e.to_string()))?;
            }
            other @ (Source::Rtsp(_) | Source::File(_)) if spec.record.is_some() && spec.record_source.is_none() && !other.is_image() => {
                let sink = spec.record.clone().expect("checked");
                writer = Some(build_split(&pipeline, other, spec, camera, &sink, tail_sink.clone(), Arc::new(on_video_pad))?);
            }
            other => {
                if let (Some(rec), Some(main)) = (&spec.record, &spec.record_source) {
                    writer = Some(build_record_only(&pipeline, main, spec, camera, rec)?);
                } else if let (Some(rec), Source::V4l2(_)) = (&spec.record, other) {
                    rec.recordable(Some("V4L2 cameras deliver raw or MJPEG frames: recording copies an encoded H.264/H.265 stream".into()));
                }
                let decode = uri_bin("uridecodebin", &pipeline, other, spec)?;
                let linked = Arc::new(AtomicBool::new(false));
                let pipeline_weak = pipeline.downgrade();
                decode.connect_pad_added(move |_, pad| {
                    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                    let is_video = caps.structure(0).is_some_and(|s| s.name().starts_with("video/"));
                    if is_video && !linked.swap(true, Ordering::SeqCst) {
                        on_video_pad(&caps);
                        if let Err(e) = pad.link(&tail_sink) {
                            tracing::warn!("could not link the decoded video: {e:?}");
                        }
                        return;
                    }
                    discard(&pipeline_weak, pad);
                });
            }
        }

        if live {
            // Timestamps in the realtime clock make base_time + running time a wall-clock capture time.
            let clock: gst::SystemClock = gst::glib::Object::builder().property("clock-type", gst::ClockType::Realtime).build();
            pipeline.use_clock(Some(&clock));
        }
        let bus = pipeline.bus().ok_or_else(|| CaptureError::Build("pipeline has no bus".into()))?;
        let writer = writer.unwrap_or_default();
        Ok(Self { pipeline, appsink, bus, secrets, source_size, arrived, pulled: 0, pacing: spec.pacing, camera, writer })
    }

    /// Sets the pipeline playing. Errors in opening the source arrive later, on the bus, through [`Self::pull`].
    pub fn start(&mut self) -> Result<(), CaptureError> {
        match self.pipeline.set_state(gst::State::Playing) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.bus_error().unwrap_or_else(|| CaptureError::Build("the pipeline refused to start".into()))),
        }
    }

    fn bus_error(&mut self) -> Option<CaptureError> {
        if let Some(w) = self.writer.lock().unwrap().as_mut() {
            w.poll(self.pipeline.base_time().map(|t| t.nseconds()).unwrap_or(0));
        }
        while let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Warning]) {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    let element = msg.src().map(|s| s.name().to_string()).unwrap_or_else(|| "pipeline".into());
                    let mut message = err.error().to_string();
                    if let Some(debug) = err.debug() {
                        message = format!("{message} ({})", debug.replace('\n', "; "));
                    }
                    return Some(CaptureError::Stream { element, message: mask_in_text(&message, &self.secrets) });
                }
                gst::MessageView::Warning(w) => {
                    tracing::debug!(camera = self.camera, "gstreamer warning: {}", mask_in_text(&w.error().to_string(), &self.secrets));
                }
                _ => {}
            }
        }
        None
    }

    /// Waits up to `timeout` for the next frame. `seq` numbers it.
    pub fn pull(&mut self, timeout: Duration, seq: u64) -> Result<Pull, CaptureError> {
        if let Some(e) = self.bus_error() {
            return Err(e);
        }

        let Some(sample) = self.appsink.try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64)) else {
            if let Some(e) = self.bus_error() {
                return Err(e);
            }
            return Ok(if self.appsink.is_eos() { Pull::Eos } else { Pull::Timeout });
        };
        self.pulled += 1;
        let caps = sample.caps().ok_or_else(|| CaptureError::Build("sample without caps".into()))?;
        let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| CaptureError::Build(e.to_string()))?;
        let buffer = sample.buffer_owned().ok_or_else(|| CaptureError::Build("sample without buffer".into()))?;
        let pts = buffer.pts();
        let wall = self.wall_clock(&sample, pts);
        let mapped = buffer.into_mapped_buffer_readable().map_err(|_| CaptureError::Build("could not map a frame buffer".into()))?;
        let packed = self.source_size.load(Ordering::Relaxed);
        let (sw, sh) = if packed == 0 { (info.width(), info.height()) } else { ((packed >> 32) as u32, packed as u32) };
        let meta = FrameInfo { camera: self.camera, seq, pts: pts.map(|t| Duration::from_nanos(t.nseconds())), wall, source_width: sw, source_height: sh };
        let frame = Frame::new(meta, (info.width(), info.height()), info.stride()[0] as usize, mapped);
        Ok(Pull::Frame(frame))
    }

    /// Capture time: for real-time pipelines (clocked by the realtime system clock) the frame's running time
    /// plus the pipeline's base time; the current time otherwise, or when that looks wrong.
    fn wall_clock(&self, sample: &gst::Sample, pts: Option<gst::ClockTime>) -> SystemTime {
        let now = SystemTime::now();
        if self.pacing != Pacing::RealTime {
            return now;
        }
        let running = pts.and_then(|pts| sample.segment().and_then(|seg| seg.downcast_ref::<gst::format::Time>().and_then(|seg| seg.to_running_time(pts))));
        match (running, self.pipeline.base_time()) {
            (Some(rt), Some(base)) => {
                let wall = UNIX_EPOCH + Duration::from_nanos((base + rt).nseconds());
                let skew = now.duration_since(wall).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
                if skew < Duration::from_secs(10) { wall } else { now }
            }
            _ => now,
        }
    }

    /// Frames the sink dropped because perch had not pulled the previous one yet.
    pub fn sink_drops(&self) -> u64 {
        self.arrived.load(Ordering::Relaxed).saturating_sub(self.pulled + 1)
    }

    /// Decoded size of the source, once known.
    pub fn source_size(&self) -> Option<(u32, u32)> {
        let packed = self.source_size.load(Ordering::Relaxed);
        (packed != 0).then_some(((packed >> 32) as u32, packed as u32))
    }
}

impl Drop for CapturePipeline {
    fn drop(&mut self) {
        // The stream stops first, then the segment being written is finished from what arrived.
        let _ = self.pipeline.set_state(gst::State::Ready);
        if let Some(w) = self.writer.lock().unwrap().as_mut() {
            w.finish(self.pipeline.base_time().map(|t| t.nseconds()).unwrap_or(0));
        }
        // Tears down sockets and decoder state; blocking is fine on the capture thread.
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Settings for the video decoder `decodebin` picks, whichever bin it ends up in: software decoders
/// (`avdec_*`) get the camera's thread count and copy their pictures into the pipeline's buffer pool
/// (`direct-rendering=false`), and with `keyframes_when_idle` every video decoder's input is gated.
///
/// Why no direct rendering: libav keeps each reference picture it decoded into, so the base class finds
/// the buffer shared when it pushes it and copies it into fresh memory — for a P-frame stream, every
/// frame, a malloc and a page-fault storm of 1.4 MB at 720p (measured: a fifth of perch's CPU with four
/// cameras). Without it, libav decodes into its own pool and one copy goes into a pooled buffer.
fn configure_decoders(pipeline: &gst::Pipeline, spec: &PipelineSpec) {
    let threads = spec.decode_threads;
    let gate = spec.keyframes_when_idle.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        let Some(factory) = element.factory() else { return };
        if !factory.metadata(gst::ELEMENT_METADATA_KLASS).is_some_and(|k| k.contains("Decoder") && k.contains("Video")) {
            return;
        }
        if factory.name().starts_with("avdec_") {
            if threads > 0 {
                element.set_property("max-threads", threads as i32);
            }
            element.set_property("direct-rendering", false);
        }
        if let (Some(status), Some(pad)) = (&gate, element.static_pad("sink")) {
            gate_keyframes(&pad, status.clone());
        }
    });
}

/// Drops everything but keyframes on `pad` while `status` says the camera is idle and still. The gate only
/// changes at a keyframe, so the decoder always sees whole GOPs or lone keyframes, never a delta frame
/// whose reference it did not get.
fn gate_keyframes(pad: &gst::Pad, status: Arc<CameraStatus>) {
    // Only the pad's streaming thread runs the probe; the atomic just makes the closure `Fn`.
    let dropping = AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else { return gst::PadProbeReturn::Ok };
        status.last_input_ms.store(crate::util::unix_ms(SystemTime::now()), Ordering::Relaxed);
        if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            dropping.store(status.still.load(Ordering::Relaxed), Ordering::Relaxed);
            return gst::PadProbeReturn::Ok;
        }
        if dropping.load(Ordering::Relaxed) {
            status.skipped_decode.fetch_add(1, Ordering::Relaxed);
            return gst::PadProbeReturn::Drop;
        }
        gst::PadProbeReturn::Ok
    });
}

/// `uridecodebin` or `urisourcebin` for `source`, with the spec's RTSP settings, added to `pipeline`.
fn uri_bin(factory: &str, pipeline: &gst::Pipeline, source: &Source, spec: &PipelineSpec) -> Result<gst::Element, CaptureError> {
    let bin = make(factory)?;
    bin.set_property("uri", source.gst_uri().expect("non-test sources have a URI"));
    if let Source::Rtsp(_) = source {
        configure_rtsp(&bin, spec);
    }
    pipeline.add(&bin).map_err(|e| CaptureError::Build(e.to_string()))?;
    Ok(bin)
}

/// rtspsrc settings, applied when `uridecodebin`/`urisourcebin` creates the source.
fn configure_rtsp(bin: &gst::Element, spec: &PipelineSpec) {
    let transport = spec.rtsp_transport;
    let latency = spec.rtsp_latency_ms;
    let tcp_timeout_us = spec.connect_timeout.as_micros() as u64;
    bin.connect("source-setup", false, move |args| {
        if let Some(src) = args.get(1).and_then(|v| v.get::<gst::Element>().ok())
            && src.has_property("latency")
        {
            src.set_property("latency", latency);
            src.set_property("drop-on-latency", true);
            // A camera that accepts the connection but never answers is a stall too.
            src.set_property("tcp-timeout", tcp_timeout_us);
            let protocols = match transport {
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
                RtspTransport::Auto => "udp+udp-mcast+tcp",
            };
            src.set_property_from_str("protocols", protocols);
        }
        None
    });
}

/// Consumes and discards a stream perch does not use (audio, subtitles, a second video), so the demuxer
/// never sees not-linked.
pub(crate) fn discard(pipeline: &gst::glib::WeakRef<gst::Pipeline>, pad: &gst::Pad) {
    if let Some(pipeline) = pipeline.upgrade()
        && let Ok(sink) = gst::ElementFactory::make("fakesink").property("sync", false).property("async", false).build()
        && pipeline.add(&sink).is_ok()
    {
        let _ = sink.sync_state_with_parent();
        if let Some(sink_pad) = sink.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
    }
}

type OnVideoPad = Arc<dyn Fn(&gst::CapsRef) -> Option<()> + Send + Sync>;

/// Opens `source` (`urisourcebin`: for RTSP one session) and parses it (`parsebin`); the first parsed
/// video pad is handed to `on_video` with its caps name, everything else is discarded.
fn parsed_video(
    pipeline: &gst::Pipeline,
    source: &Source,
    spec: &PipelineSpec,
    on_video: impl Fn(&gst::glib::WeakRef<gst::Pipeline>, &gst::Pad, &str) + Clone + Send + Sync + 'static,
) -> Result<(), CaptureError> {
    let src = uri_bin("urisourcebin", pipeline, source, spec)?;
    let weak = pipeline.downgrade();
    let video_taken = Arc::new(AtomicBool::new(false));
    src.connect_pad_added(move |_, pad| {
        // RTSP: one pad per media; only video is parsed. Files: one byte stream, demuxed by parsebin.
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_other_media = caps.structure(0).is_some_and(|s| s.name() == "application/x-rtp" && s.get::<&str>("media").is_ok_and(|m| m != "video"));
        if is_other_media || video_taken.load(Ordering::SeqCst) {
            discard(&weak, pad);
            return;
        }
        let Some(pipeline) = weak.upgrade() else { return };
        let Ok(parse) = make("parsebin") else {
            tracing::warn!("GStreamer element `parsebin` is missing: install gstreamer1.0-plugins-base");
            return;
        };
        let _ = pipeline.add(&parse);
        let _ = parse.sync_state_with_parent();
        if let Some(sink_pad) = parse.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
        let (weak, video_taken, on_video) = (weak.clone(), video_taken.clone(), on_video.clone());
        parse.connect_pad_added(move |_, pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
            if !name.starts_with("video/") || video_taken.swap(true, Ordering::SeqCst) {
                discard(&weak, pad);
                return;
            }
            on_video(&weak, pad, &name);
        });
    });
    Ok(())
}

/// Source → parse → tee → (decode → tail) + (encoded frames → segment writer). Returns the slot that
/// will hold the writer once the stream's video pad shows it is recordable.
fn build_split(
    pipeline: &gst::Pipeline,
    source: &Source,
    spec: &PipelineSpec,
    camera: usize,
    sink: &Arc<dyn EncodedSink>,
    tail_sink: gst::Pad,
    on_video_pad: OnVideoPad,
) -> Result<Writer, CaptureError> {
    let writer: Writer = Arc::default();
    let (live, sink, slot) = (source.is_live(), sink.clone(), writer.clone());
    parsed_video(pipeline, source, spec, move |weak, pad, name| {
        if let Err(e) = link_video(weak, pad, name, live, &sink, &slot, &tail_sink, &on_video_pad) {
            tracing::warn!(camera, "cannot set up the camera's stream: {e}");
        }
    })?;
    Ok(writer)
}

/// A second source, only recorded: source → parse → segment writer, never decoded (a camera's main stream
/// while its sub-stream is detected on). Returns the slot that will hold the writer.
fn build_record_only(
    pipeline: &gst::Pipeline,
    source: &Source,
    spec: &PipelineSpec,
    camera: usize,
    sink: &Arc<dyn EncodedSink>,
) -> Result<Writer, CaptureError> {
    let writer: Writer = Arc::default();
    let (live, sink, slot) = (source.is_live(), sink.clone(), writer.clone());
    parsed_video(pipeline, source, spec, move |weak, pad, name| {
        let Some(codec) = codec_of(name) else {
            sink.recordable(Some(format!("the main stream is {name}: only H.264 and H.265 are recorded (by copy, without re-encoding)")));
            discard(weak, pad);
            return;
        };
        let linked = record_branch(weak, codec, live, &sink, &slot)
            .and_then(|q| pad.link(&q.static_pad("sink").expect("queue sink")).map_err(|e| CaptureError::Build(format!("{e:?}"))));
        match linked {
            Ok(_) => sink.recordable(None),
            Err(e) => tracing::warn!(camera, "cannot record the camera's main stream: {e}"),
        }
    })?;
    Ok(writer)
}

/// The codec perch records a parsed stream as, when it records it at all.
fn codec_of(caps_name: &str) -> Option<&'static str> {
    match caps_name {
        "video/x-h264" => Some("h264"),
        "video/x-h265" => Some("h265"),
        _ => None,
    }
}

/// A queue, leaky on live sources (so a slow branch never stalls the other), holding up to `max_time`.
fn branch_queue(max_time: Duration, live: bool) -> Result<gst::Element, CaptureError> {
    let q = make("queue")?;
    q.set_property("max-size-time", max_time.as_nanos() as u64);
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 0u32);
    if live {
        q.set_property_from_str("leaky", "downstream");
    }
    Ok(q)
}

/// The recording branch: queue → the tap handing encoded frames to the camera's segment writer (opened
/// now, into `slot`). Returns the queue, to link the stream into.
fn record_branch(
    weak: &gst::glib::WeakRef<gst::Pipeline>,
    codec: &'static str,
    live: bool,
    sink: &Arc<dyn EncodedSink>,
    slot: &Writer,
) -> Result<gst::Element, CaptureError> {
    let pipeline = weak.upgrade().ok_or_else(|| CaptureError::Build("pipeline gone".into()))?;
    let err = |e: gst::glib::BoolError| CaptureError::Build(e.to_string());
    let q_record = branch_queue(Duration::from_secs(2), live)?;
    if live {
        // A leaky queue signals overrun once for each frame it is about to drop. A file's queues block
        // instead (reading waits for the slower branch): they signal overrun too, but nothing is lost.
        let sink = sink.clone();
        q_record.connect("overrun", false, move |_| {
            sink.dropped();
            None
        });
    }
    *slot.lock().unwrap() = Some(sink.open(codec));
    let tap = encoded::tap(slot.clone(), codec);
    pipeline.add_many([&q_record, tap.upcast_ref()]).map_err(err)?;
    q_record.link(&tap).map_err(err)?;
    tap.sync_state_with_parent().map_err(err)?;
    q_record.sync_state_with_parent().map_err(err)?;
    Ok(q_record)
}

/// Links a parsed video pad: straight to a decoder, or through a tee to a decoder and the segment writer.
#[allow(clippy::too_many_arguments)]
fn link_video(
    weak: &gst::glib::WeakRef<gst::Pipeline>,
    pad: &gst::Pad,
    caps_name: &str,
    live: bool,
    sink: &Arc<dyn EncodedSink>,
    slot: &Writer,
    tail_sink: &gst::Pad,
    on_video_pad: &OnVideoPad,
) -> Result<(), CaptureError> {
    let pipeline = weak.upgrade().ok_or_else(|| CaptureError::Build("pipeline gone".into()))?;
    let err = |e: gst::glib::BoolError| CaptureError::Build(e.to_string());
    let decode = make("decodebin")?;
    {
        let (weak, tail_sink, on_video_pad) = (weak.clone(), tail_sink.clone(), on_video_pad.clone());
        decode.connect_pad_added(move |_, dpad| {
            let caps = dpad.current_caps().unwrap_or_else(|| dpad.query_caps(None));
            if caps.structure(0).is_some_and(|s| s.name().starts_with("video/")) && !tail_sink.is_linked() {
                on_video_pad(&caps);
                if let Err(e) = dpad.link(&tail_sink) {
                    tracing::warn!("could not link the decoded video: {e:?}");
                }
            } else {
                discard(&weak, dpad);
            }
        });
    }
    let Some(codec) = codec_of(caps_name) else {
        sink.recordable(Some(format!("the stream is {caps_name}: only H.264 and H.265 are recorded (by copy, without re-encoding)")));
        pipeline.add(&decode).map_err(err)?;
        decode.sync_state_with_parent().map_err(err)?;
        pad.link(&decode.static_pad("sink").expect("decodebin sink")).map_err(|e| CaptureError::Build(format!("{e:?}")))?;
        return Ok(());
    };
    let tee = make("tee")?;
    let q_decode = branch_queue(Duration::from_secs(2), live)?;
    pipeline.add_many([&tee, &q_decode, &decode]).map_err(err)?;
    gst::Element::link_many([&tee, &q_decode, &decode]).map_err(err)?;
    let q_record = record_branch(weak, codec, live, sink, slot)?;
    tee.link(&q_record).map_err(err)?;
    for e in [&decode, &q_decode, &tee] {
        e.sync_state_with_parent().map_err(err)?;
    }
    pad.link(&tee.static_pad("sink").expect("tee sink")).map_err(|e| CaptureError::Build(format!("{e:?}")))?;
    sink.recordable(None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_aligns_width() {
        assert_eq!(fit_size((1280, 720), (416, 416)), (416, 234));
        assert_eq!(fit_size((768, 576), (416, 416)), (416, 312));
        assert_eq!(fit_size((720, 1280), (416, 416)), (232, 416));
        // Never upscales.
        assert_eq!(fit_size((320, 240), (416, 416)), (320, 240));
        // Width rounded down to a multiple of 4.
        assert_eq!(fit_size((1001, 500), (1001, 1001)).0 % 4, 0);
    }

    #[test]
    fn fps_fractions() {
        assert_eq!(fps_fraction(5.0), gst::Fraction::new(5000, 1000));
        assert_eq!(fps_fraction(0.5), gst::Fraction::new(500, 1000));
    }
}
