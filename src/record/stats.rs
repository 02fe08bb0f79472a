//! Counters of recording, shared between the capture threads, the recorder and health.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::json;

use super::store::Recovery;

/// A pause between two segments longer than this is a recording gap.
pub const GAP_TOLERANCE_MS: u64 = 500;

/// One camera's recording.
#[derive(Debug, Default)]
pub struct CameraRecordStats {
    pub id: String,
    pub enabled: bool,
    pub segments: AtomicU64,
    pub bytes: AtomicU64,
    /// Pauses between consecutive segments (camera offline, perch stopped), and their total length.
    pub gaps: AtomicU64,
    pub gap_ms: AtomicU64,
    pub last_end_ms: AtomicU64,
    /// Encoded frames dropped before the disk because writing fell behind.
    pub dropped_frames: AtomicU64,
    /// Finished segments that could not be indexed (recorder queue full, I/O error).
    pub lost_segments: AtomicU64,
    /// Why this camera is not recorded although enabled (raw V4L2 video, a test pattern…).
    pub unsupported: Mutex<Option<String>>,
}

impl CameraRecordStats {
    pub fn segment(&self, start_ms: u64, end_ms: u64, bytes: u64) {
        self.segments.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        let last = self.last_end_ms.swap(end_ms, Relaxed);
        if last > 0 && start_ms > last + GAP_TOLERANCE_MS {
            self.gaps.fetch_add(1, Relaxed);
            self.gap_ms.fetch_add(start_ms - last, Relaxed);
        }
    }

    pub fn set_unsupported(&self, why: Option<String>) {
        *self.unsupported.lock().unwrap() = why;
    }
}

/// The whole store. Eviction counters are indexed by [`super::retention::Reason`].
#[derive(Debug, Default)]
pub struct RecordStats {
    pub cameras: Vec<CameraRecordStats>,
    pub evicted_segments: [AtomicU64; 4],
    /// Event references forgotten (their age, or all their video evicted).
    pub evicted_events: [AtomicU64; 4],
    /// `clip` messages sent, by status.
    pub clips_complete: AtomicU64,
    pub clips_partial: AtomicU64,
    pub clips_failed: AtomicU64,
    /// Ended events whose `clip` message waits for their post-roll.
    pub pending_clips: AtomicU64,
    pub segments: AtomicU64,
    /// Event references held.
    pub events: AtomicU64,
    /// Clip and export files made on request (the rest were served from the cache).
    pub clips_made: AtomicU64,
    /// Everything the store holds; the segments (the only video) and the clip cache of it.
    pub store_bytes: AtomicU64,
    pub segment_bytes: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub free_bytes: AtomicU64,
    /// Requests the recorder's queue had no room for.
    pub dropped_messages: AtomicU64,
    pub recovery: Mutex<Recovery>,
    /// Why recording is off altogether (the directory cannot be used).
    pub error: Mutex<Option<String>>,
}

impl RecordStats {
    pub fn new(cameras: impl IntoIterator<Item = (String, bool)>) -> Self {
        Self { cameras: cameras.into_iter().map(|(id, enabled)| CameraRecordStats { id, enabled, ..Default::default() }).collect(), ..Default::default() }
    }

    pub fn camera(&self, id: &str) -> Option<&CameraRecordStats> {
        self.cameras.iter().find(|c| c.id == id)
    }

    /// For health and status.
    pub fn snapshot(&self) -> serde_json::Value {
        let reasons = |a: &[AtomicU64; 4]| json!({ "window": a[0].load(Relaxed), "age": a[1].load(Relaxed), "quota": a[2].load(Relaxed), "low_disk": a[3].load(Relaxed) });
        json!({
            "cameras": self.cameras.iter().map(|c| json!({
                "id": c.id,
                "enabled": c.enabled,
                "segments": c.segments.load(Relaxed),
                "bytes": c.bytes.load(Relaxed),
                "gaps": c.gaps.load(Relaxed),
                "gap_s": c.gap_ms.load(Relaxed) as f64 / 1000.0,
                "dropped_frames": c.dropped_frames.load(Relaxed),
                "lost_segments": c.lost_segments.load(Relaxed),
                "unsupported": c.unsupported.lock().unwrap().clone(),
            })).collect::<Vec<_>>(),
            "segments": self.segments.load(Relaxed),
            "events": self.events.load(Relaxed),
            "bytes": self.store_bytes.load(Relaxed),
            "segment_bytes": self.segment_bytes.load(Relaxed),
            "cache_bytes": self.cache_bytes.load(Relaxed),
            "clips_made": self.clips_made.load(Relaxed),
            "free_bytes": self.free_bytes.load(Relaxed),
            "evicted_segments": reasons(&self.evicted_segments),
            "evicted_events": reasons(&self.evicted_events),
            "clips_complete": self.clips_complete.load(Relaxed),
            "clips_partial": self.clips_partial.load(Relaxed),
            "clips_failed": self.clips_failed.load(Relaxed),
            "pending_clips": self.pending_clips.load(Relaxed),
            "dropped_messages": self.dropped_messages.load(Relaxed),
            "recovered": *self.recovery.lock().unwrap(),
            "error": self.error.lock().unwrap().clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_between_segments_are_measured() {
        let s = CameraRecordStats::default();
        s.segment(0, 2000, 10);
        s.segment(2000, 4000, 10);
        s.segment(4040, 6000, 10); // one frame apart: no gap
        s.segment(9000, 11_000, 10);
        assert_eq!((s.segments.load(Relaxed), s.gaps.load(Relaxed), s.gap_ms.load(Relaxed)), (4, 1, 3000));
    }
}
