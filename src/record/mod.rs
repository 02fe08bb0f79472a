//! Recording: rolling segments of each camera's encoded stream — the only copy of the video — that events
//! reference by time range, clips made on request, and retention that never lets the disk fill.
//!
//! The capture pipeline splits each camera's stream after depayloading and parsing (one RTSP session): one
//! branch is decoded for detection, the other goes to the camera's [`writer::SegmentWriter`], which cuts it
//! on keyframes into short MP4 segments with `splitmuxsink` — copied, never re-encoded. Finished segments go
//! to the [`Recorder`] over a bounded channel; it indexes them ([`store`]), keeps each event's reference to
//! the span it covers, answers the evidence API ([`evidence`], [`handle`]: clips concatenated from segments by
//! [`clip`], kept in a bounded [`cache`]) and applies [`retention`].

pub mod cache;
pub mod clip;
pub mod config;
pub mod control;
pub mod evidence;
pub mod handle;
pub mod recorder;
pub mod retention;
pub mod stats;
pub mod store;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config::{CameraRecordConfig, RecordConfig};
pub use control::RecordControl;
pub use handle::Evidence;
pub use recorder::{Recorder, RecorderMsg};
pub use stats::{CameraRecordStats, RecordStats};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{what}: {source} (check that the recording directory is on a writable, mounted disk)")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Gst(String),
    #[error("no recording covers the clip's time: the camera was offline or its segments were already evicted")]
    NoSegments,
    #[error("cannot make the snapshot: {0}")]
    Snapshot(String),
}

/// What a camera's capture pipeline needs to record: where to write, how long a segment is, and where to
/// report finished segments.
#[derive(Debug, Clone)]
pub struct SegmentSink {
    pub camera: usize,
    pub dir: PathBuf,
    pub segment: Duration,
    pub tx: tokio::sync::mpsc::Sender<RecorderMsg>,
    pub stats: Arc<RecordStats>,
}

impl SegmentSink {
    pub fn camera_stats(&self) -> Option<&CameraRecordStats> {
        self.stats.cameras.get(self.camera)
    }

    /// Hands a finished segment to the recorder; a full queue loses it (counted) rather than stalling capture.
    pub fn finished(&self, part: PathBuf, start_ms: u64, end_ms: u64) {
        if self.tx.try_send(RecorderMsg::Segment { camera: self.camera, part: part.clone(), start_ms, end_ms }).is_err() {
            let _ = std::fs::remove_file(&part);
            if let Some(s) = self.camera_stats() {
                s.lost_segments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}
