//! The frame contract between capture and detection, and the drop-to-latest hand-off between them.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use gstreamer as gst;

/// What is known about a frame besides its pixels; it travels on with the frame's detections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameInfo {
    /// Index of the camera in the service's camera list.
    pub camera: usize,
    /// Per-camera frame counter since the service started (not reset on reconnect).
    pub seq: u64,
    /// Stream time of the frame, as the source stamped it.
    pub pts: Option<Duration>,
    /// Wall-clock capture time.
    pub wall: SystemTime,
    /// Size of the decoded stream before scaling; boxes are reported in these pixels.
    pub source_width: u32,
    pub source_height: u32,
}

/// A decoded frame ready for detection: packed 8-bit BGR, already scaled by the pipeline to fit the camera's
/// detect size. It holds the GStreamer buffer itself (no copy); dropping the frame returns the memory to the
/// pipeline's buffer pool.
#[derive(Debug)]
pub struct Frame {
    pub info: FrameInfo,
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    buffer: gst::MappedBuffer<gst::buffer::Readable>,
}

impl Frame {
    pub(crate) fn new(info: FrameInfo, size: (u32, u32), stride: usize, buffer: gst::MappedBuffer<gst::buffer::Readable>) -> Self {
        Self { info, width: size.0, height: size.1, stride, buffer }
    }

    pub fn view(&self) -> FrameView<'_> {
        FrameView {
            data: self.buffer.as_slice(),
            width: self.width,
            height: self.height,
            stride: self.stride,
            source_width: self.info.source_width,
            source_height: self.info.source_height,
        }
    }
}

/// A borrowed BGR image: what the detector reads. Also built from plain byte slices in benches and tests.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next (≥ width × 3).
    pub stride: usize,
    /// Size of the original picture the boxes are mapped back to.
    pub source_width: u32,
    pub source_height: u32,
}

impl<'a> FrameView<'a> {
    /// A tightly packed BGR image that is its own source.
    pub fn packed(data: &'a [u8], width: u32, height: u32) -> Self {
        Self { data, width, height, stride: width as usize * 3, source_width: width, source_height: height }
    }
}

/// Latest-frame slots, one per camera, shared by the capture threads and the detector.
///
/// A camera that produces a frame while its previous one is still waiting replaces it: the detector always
/// works on the newest picture and a slow detector can never build a backlog. Each replacement is a drop,
/// counted by the caller. The detector takes the oldest waiting frame across cameras, so one busy camera
/// cannot starve the others.
pub struct FrameHub {
    slots: Mutex<Vec<Option<Frame>>>,
    ready: Condvar,
}

impl FrameHub {
    pub fn new(cameras: usize) -> Self {
        Self { slots: Mutex::new((0..cameras).map(|_| None).collect()), ready: Condvar::new() }
    }

    /// Offers a frame; returns true when it replaced one the detector had not taken yet (a drop).
    pub fn publish(&self, frame: Frame) -> bool {
        let camera = frame.info.camera;
        let old = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots[camera].replace(frame)
        };
        self.ready.notify_one();
        // The replaced buffer goes back to its pool here, outside the lock.
        old.is_some()
    }

    /// Waits up to `timeout` for a frame and takes the oldest one waiting.
    pub fn take(&self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let oldest = slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|f| (i, f.info.wall))).min_by_key(|(_, wall)| *wall).map(|(i, _)| i);
            if let Some(i) = oldest {
                return slots[i].take();
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            slots = self.ready.wait_timeout(slots, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Removes a camera's waiting frame (used when a camera stops, so no stale frame is detected later).
    pub fn clear(&self, camera: usize) {
        let old = self.slots.lock().unwrap_or_else(|e| e.into_inner())[camera].take();
        drop(old);
    }

    /// Wakes a waiting detector (on shutdown).
    pub fn wake(&self) {
        self.ready.notify_all();
    }
}
