//! A recorded camera's encoded stream, handed on by capture without knowing who takes it.
//!
//! The capture pipeline of a recorded camera tees the parsed stream (after depayloading: the same RTSP
//! session as detection) into an appsink, [`tap`], that hands each encoded frame to an [`EncodedWriter`].
//! The recorder implements both traits (`record::SegmentSink`, `record::writer::SegmentWriter`), so data
//! flows capture → record while capture imports nothing of record.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer_app as gst_app;

/// Where a recorded camera's encoded frames go: opened once per pipeline session, when the stream's codec
/// is known; told whether the stream can be recorded at all, and of frames capture had to drop.
pub trait EncodedSink: Send + Sync + std::fmt::Debug {
    /// `Some(why)`: this camera's stream cannot be copied (a test pattern, V4L2's raw frames, a codec other
    /// than H.264/H.265); `None`: it can (again).
    fn recordable(&self, why_not: Option<String>);
    /// A frame the recording branch dropped before the writer saw it (its queue overran).
    fn dropped(&self);
    /// The writer for one pipeline session's stream of `codec` (`h264` or `h265`).
    fn open(&self, codec: &'static str) -> Box<dyn EncodedWriter>;
}

/// One pipeline session's consumer of encoded frames.
pub trait EncodedWriter: Send {
    /// One encoded frame, stamped with its running time in the capture pipeline (its streaming thread).
    fn push(&mut self, sample: &gst::Sample);
    /// Lets the writer look at its own work (errors, finished files); `base_ns` is the capture pipeline's
    /// base time, which turns running times into wall-clock times.
    fn poll(&mut self, base_ns: u64);
    /// The capture pipeline stopped: finish what was written.
    fn finish(&mut self, base_ns: u64);
}

/// A camera's writer, shared by the tap (streaming thread) and the capture thread; `None` until the stream
/// turns out to be recordable.
pub type SharedWriter = Arc<Mutex<Option<Box<dyn EncodedWriter>>>>;

/// The appsink that feeds `writer` from a capture pipeline, asking for the form MP4 stores (`avc`/`hvc1`,
/// one access unit per buffer): the parser upstream converts to it.
pub fn tap(writer: SharedWriter, codec: &str) -> gst_app::AppSink {
    let caps = match codec {
        "h264" => gst::Caps::builder("video/x-h264").field("stream-format", gst::List::new(["avc", "avc3"])).field("alignment", "au").build(),
        _ => gst::Caps::builder("video/x-h265").field("stream-format", gst::List::new(["hvc1", "hev1"])).field("alignment", "au").build(),
    };
    let sink = gst_app::AppSink::builder().caps(&caps).sync(false).max_buffers(64).enable_last_sample(false).build();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |tap| {
                let sample = tap.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(w) = writer.lock().unwrap().as_mut() {
                    w.push(&sample);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    sink
}
