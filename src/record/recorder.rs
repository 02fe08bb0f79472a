//! The recorder: indexes the segments the capture pipelines finish, makes clips when their post-roll is on
//! disk, and enforces retention. One thread for the whole box; everything reaches it over one bounded
//! channel ([`RecorderMsg`]).
//!
//! Clip jobs are written to `clips/pending/` when they arrive and removed only once the clip and its
//! description are on disk, so a job survives a crash or power loss and is finished at the next start from
//! the segments still there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, mpsc};

use super::clip::{self, Snapshot};
use super::config::RecordConfig;
use super::retention::{self, Item, ItemKind, Limits, Reason};
use super::stats::RecordStats;
use super::store::{ClipEntry, ClipJob, Store, ms};
use crate::events::Outbox;
use crate::events::schema::{SCHEMA_VERSION, rfc3339};
use crate::util::fs::write_atomic;

/// Depth of the recorder's channel. Messages are small and rare (one per segment, two per event).
pub const QUEUE: usize = 256;
/// How often retention runs and pending clips are checked.
const TICK: Duration = Duration::from_millis(500);
/// JPEG quality of snapshots.
const SNAPSHOT_QUALITY: u8 = 85;

/// What the recorder is told.
#[derive(Debug)]
pub enum RecorderMsg {
    /// A capture pipeline finished writing a segment file (`part`) covering `[start_ms, end_ms]`.
    Segment { camera: usize, part: PathBuf, start_ms: u64, end_ms: u64 },
    /// An event started (or a manual recording): keep the camera's segments from `from_ms` on until its clip
    /// is made. A hold with `auto_clip_ms` turns into a clip ending then, unless a clip comes first.
    Hold { id: String, camera: usize, from_ms: u64, auto_clip_ms: Option<u64>, kind: &'static str },
    /// Make a clip: an event ended, or a manual recording was stopped.
    Clip { job: ClipJob, snapshot: Option<Box<Snapshot>> },
}

struct Hold {
    camera: String,
    from_ms: u64,
    auto_clip_ms: Option<u64>,
    kind: &'static str,
}

/// The message published (through the outbox) when a clip is done, on the camera's event topic.
#[derive(Debug, Serialize)]
struct ClipMessage<'a> {
    schema_version: u32,
    seq: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    event_id: &'a str,
    device_id: &'a str,
    camera: &'a str,
    source: &'a str,
    label: Option<&'a str>,
    /// `complete`, `partial` (the recording does not cover the whole window: the camera was offline, or
    /// recordings were evicted) or `failed` (no recording at all).
    status: &'static str,
    clip: Option<String>,
    snapshot: Option<String>,
    requested_start: String,
    requested_end: String,
    start: Option<String>,
    end: Option<String>,
    duration_s: f64,
    segments: usize,
    /// Seconds missing inside the clip's window.
    gap_s: f64,
    bytes: u64,
    error: Option<String>,
    ts: String,
}

pub struct Recorder {
    pub config: RecordConfig,
    pub dir: PathBuf,
    pub device_id: String,
    /// Camera ids by index; every configured camera, recording or not.
    pub cameras: Vec<String>,
    pub outbox: Arc<Outbox>,
    pub wake: Arc<Notify>,
    pub stats: Arc<RecordStats>,
}

struct State {
    store: Store,
    holds: HashMap<String, Hold>,
    pending: Vec<ClipJob>,
}

impl Recorder {
    /// Opens the store, cleaning up after an unclean stop. Call before the cameras start: it removes
    /// unfinished segment files, which must not be the ones being written now.
    pub fn open(self) -> OpenRecorder {
        let state = match Store::open(&self.dir, &self.cameras) {
            Ok((store, jobs, recovery)) => {
                if recovery != Default::default() {
                    tracing::info!(
                        unfinished = recovery.unfinished_removed,
                        broken = recovery.broken_removed,
                        orphans = recovery.orphans_removed,
                        "recordings cleaned up after the last stop"
                    );
                }
                *self.stats.recovery.lock().unwrap() = recovery;
                if !jobs.is_empty() {
                    tracing::info!(clips = jobs.len(), "clips requested before the restart will be made");
                }
                for cam in &self.cameras {
                    if let (Some(seg), Some(s)) = (store.last_segment(cam), self.stats.camera(cam)) {
                        s.last_end_ms.store(seg.end_ms, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Some(State { store, holds: HashMap::new(), pending: jobs })
            }
            Err(e) => {
                tracing::error!("recording is off: {e}");
                *self.stats.error.lock().unwrap() = Some(e.to_string());
                None
            }
        };
        OpenRecorder { recorder: self, state }
    }
}

/// A recorder whose store is open.
pub struct OpenRecorder {
    recorder: Recorder,
    state: Option<State>,
}

impl OpenRecorder {
    /// Whether the store could be opened (otherwise nothing is recorded, and health says why).
    pub fn is_open(&self) -> bool {
        self.state.is_some()
    }

    /// Runs until every sender of `rx` is gone. Blocking: run it on its own thread (`spawn_blocking`).
    /// Segments, clips and retention are handled until the end; clips still waiting for their post-roll are
    /// then made from what exists.
    pub fn run(self, mut rx: mpsc::Receiver<RecorderMsg>, runtime: tokio::runtime::Handle) {
        let Self { recorder, state } = self;
        let Some(mut st) = state else {
            // Keep draining so senders never block.
            while runtime.block_on(rx.recv()).is_some() {}
            return;
        };
        recorder.run_loop(&mut st, rx, runtime);
    }
}

impl Recorder {
    fn run_loop(&self, st: &mut State, mut rx: mpsc::Receiver<RecorderMsg>, runtime: tokio::runtime::Handle) {
        self.update_gauges(st);
        loop {
            let msg = runtime.block_on(async { tokio::time::timeout(TICK, rx.recv()).await });
            match msg {
                Ok(Some(m)) => self.handle(st, m),
                Ok(None) => break,
                Err(_) => {}
            }
            self.make_due_clips(st, false);
            self.retention(st);
        }
        self.make_due_clips(st, true);
        self.retention(st);
        tracing::debug!("recorder stopped");
    }

    fn handle(&self, st: &mut State, msg: RecorderMsg) {
        match msg {
            RecorderMsg::Segment { camera, part, start_ms, end_ms } => {
                let Some(cam) = self.cameras.get(camera) else { return };
                let stats = self.stats.camera(cam);
                match st.store.add_segment(cam, &part, start_ms, end_ms) {
                    Ok(seg) => {
                        if let Some(s) = stats {
                            s.segment(seg.start_ms, seg.end_ms, seg.bytes);
                        }
                        tracing::debug!(camera = %cam, start_ms, duration_ms = end_ms - start_ms, bytes = seg.bytes, "segment");
                    }
                    Err(e) => {
                        tracing::warn!(camera = %cam, "segment lost: {e}");
                        let _ = std::fs::remove_file(&part);
                        if let Some(s) = stats {
                            s.lost_segments.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
            RecorderMsg::Hold { id, camera, from_ms, auto_clip_ms, kind } => {
                if let Some(cam) = self.cameras.get(camera) {
                    st.holds.insert(id, Hold { camera: cam.clone(), from_ms, auto_clip_ms, kind });
                }
            }
            RecorderMsg::Clip { job, snapshot } => {
                st.holds.remove(&job.id);
                if st.pending.iter().any(|j| j.id == job.id) || st.store.clips().any(|c| c.id == job.id) {
                    return; // A repeated stop, or a manual recording that already ended by itself.
                }
                if let Some(snap) = snapshot {
                    let path = st.store.clip_path(&job.id, "jpg");
                    match clip::snapshot_jpeg(&snap, SNAPSHOT_QUALITY).and_then(|jpeg| {
                        write_atomic(&path, &jpeg).map_err(|e| super::RecordError::Io { what: format!("cannot write {}", path.display()), source: e })
                    }) {
                        Ok(()) => {}
                        Err(e) => tracing::warn!(event = %job.id, "no snapshot: {e}"),
                    }
                }
                self.queue_job(st, job);
            }
        }
    }

    fn queue_job(&self, st: &mut State, job: ClipJob) {
        let path = st.store.pending_path(&job.id);
        if let Err(e) = write_atomic(&path, &serde_json::to_vec(&job).unwrap_or_default()) {
            tracing::warn!(clip = %job.id, "the clip request is not persisted ({e}); it is lost if perch stops before the clip is made");
        }
        st.pending.push(job);
    }

    /// Makes the clips whose window is recorded (or whose wait is over, or all of them at shutdown).
    fn make_due_clips(&self, st: &mut State, all: bool) {
        let now = ms(SystemTime::now());
        // Manual recordings that were never stopped end by themselves.
        let expired: Vec<String> = st.holds.iter().filter(|(_, h)| h.auto_clip_ms.is_some_and(|t| t <= now)).map(|(id, _)| id.clone()).collect();
        for id in expired {
            if let Some(h) = st.holds.remove(&id) {
                tracing::info!(clip = %id, "manual recording reached record.manual_max_s; stopping it");
                let to_ms = h.auto_clip_ms.unwrap_or(now);
                self.queue_job(st, ClipJob { id, camera: h.camera, from_ms: h.from_ms, to_ms, kind: h.kind.to_string(), label: None });
            }
        }
        let wait_ms = (self.config.clip_wait_s * 1000.0) as u64;
        let mut i = 0;
        while i < st.pending.len() {
            let job = &st.pending[i];
            let recorded = st.store.last_segment(&job.camera).is_some_and(|s| s.end_ms >= job.to_ms);
            if all || recorded || now >= job.to_ms + wait_ms {
                let job = st.pending.remove(i);
                self.make_clip(st, &job);
            } else {
                i += 1;
            }
        }
        self.stats.pending_clips.store(st.pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn make_clip(&self, st: &mut State, job: &ClipJob) {
        use std::sync::atomic::Ordering::Relaxed;
        let segs = st.store.segments_between(&job.camera, job.from_ms, job.to_ms);
        let out = st.store.clip_path(&job.id, "mp4");
        let result = clip::assemble(&segs.iter().map(|s| s.path.clone()).collect::<Vec<_>>(), &out);
        let snapshot_path = st.store.clip_path(&job.id, "jpg");
        let snapshot = snapshot_path.exists().then(|| format!("clips/{}.jpg", job.id));
        let (status, error, duration, used, clip_bytes) = match &result {
            Ok(a) => {
                let used: Vec<_> = a.used.iter().map(|&i| segs[i].clone()).collect();
                let seg_ms = (self.config.segment_s * 1000.0) as u64;
                let covered_start = used.first().map(|s| s.start_ms).unwrap_or(0);
                let covered_end = used.last().map(|s| s.end_ms).unwrap_or(0);
                let complete = !a.truncated
                    && covered_start <= job.from_ms + seg_ms
                    && covered_end + seg_ms >= job.to_ms
                    && used.windows(2).all(|w| w[1].start_ms.saturating_sub(w[0].end_ms) < 500);
                (if complete { "complete" } else { "partial" }, None, a.duration, used, a.bytes)
            }
            Err(e) => ("failed", Some(e.to_string()), Duration::ZERO, Vec::new(), 0),
        };
        let gap_ms: u64 = used.windows(2).map(|w| w[1].start_ms.saturating_sub(w[0].end_ms)).sum::<u64>()
            + used.first().map(|s| s.start_ms.saturating_sub(job.from_ms)).unwrap_or(0)
            + used.last().map(|s| job.to_ms.saturating_sub(s.end_ms)).unwrap_or(job.to_ms - job.from_ms);
        let at = |t: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(t));
        let description = |seq: u64| {
            serde_json::to_vec(&ClipMessage {
                schema_version: SCHEMA_VERSION,
                seq,
                kind: "clip",
                event_id: &job.id,
                device_id: &self.device_id,
                camera: &job.camera,
                source: &job.kind,
                label: job.label.as_deref(),
                status,
                clip: result.is_ok().then(|| format!("clips/{}.mp4", job.id)),
                snapshot: snapshot.clone(),
                requested_start: at(job.from_ms),
                requested_end: at(job.to_ms),
                start: used.first().map(|s| at(s.start_ms)),
                end: used.last().map(|s| at(s.end_ms)),
                duration_s: duration.as_secs_f64(),
                segments: used.len(),
                gap_s: gap_ms as f64 / 1000.0,
                bytes: clip_bytes,
                error: error.clone(),
                ts: rfc3339(SystemTime::now()),
            })
            .unwrap_or_default()
        };
        let desc_path = st.store.clip_path(&job.id, "json");
        if let Err(e) = write_atomic(&desc_path, &description(0)) {
            tracing::warn!(clip = %job.id, "cannot write the clip description: {e}");
        }
        let bytes = clip_bytes + std::fs::metadata(&snapshot_path).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(&desc_path).map(|m| m.len()).unwrap_or(0);
        st.store.add_clip(ClipEntry { id: job.id.clone(), made_ms: ms(SystemTime::now()), bytes });
        let _ = std::fs::remove_file(st.store.pending_path(&job.id));
        match status {
            "complete" => self.stats.clips_complete.fetch_add(1, Relaxed),
            "partial" => self.stats.clips_partial.fetch_add(1, Relaxed),
            _ => self.stats.clips_failed.fetch_add(1, Relaxed),
        };
        match &error {
            None => tracing::info!(camera = %job.camera, clip = %job.id, status, duration_s = duration.as_secs_f64(), segments = used.len(), "clip ready"),
            Some(e) => tracing::warn!(camera = %job.camera, clip = %job.id, "clip failed: {e}"),
        }
        match self.outbox.append(description) {
            Ok(_) => self.wake.notify_one(),
            Err(e) => tracing::error!(clip = %job.id, "the clip message could not be stored: {e}"),
        }
    }

    /// Deletes what the retention rules say, counting each deletion by reason.
    fn retention(&self, st: &mut State) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = ms(SystemTime::now());
        let space = st.store.disk_space();
        // The event outbox's reserve is a floor of the watermark: video never takes the room events need.
        let min_free = space
            .map(|(_, total)| self.config.min_free_bytes.max((total as f64 * self.config.min_free_percent / 100.0) as u64).max(self.outbox.reserve_bytes()))
            .unwrap_or(0);
        let limits = Limits {
            window_ms: (self.config.window_s * 1000.0) as u64,
            clip_max_age_ms: (self.config.clip_max_age_days * 86_400_000.0) as u64,
            max_bytes: self.config.max_bytes,
            min_free,
        };
        enum Ref {
            Seg(String, u64),
            Clip(String),
        }
        let mut refs = Vec::new();
        let mut items = Vec::new();
        for (cam, s) in st.store.segments() {
            let held = st.holds.values().any(|h| h.camera == cam && s.end_ms > h.from_ms)
                || st.pending.iter().any(|j| j.camera == cam && s.end_ms > j.from_ms && s.start_ms < j.to_ms);
            items.push(Item { kind: ItemKind::Segment, time_ms: s.end_ms, bytes: s.bytes, held });
            refs.push(Ref::Seg(cam.to_string(), s.start_ms));
        }
        for c in st.store.clips() {
            items.push(Item { kind: ItemKind::Clip, time_ms: c.made_ms, bytes: c.bytes, held: false });
            refs.push(Ref::Clip(c.id.clone()));
        }
        let plan = retention::plan(now, &items, &limits, space.map(|(free, _)| free));
        for (i, reason) in plan {
            let (counter, freed) = match &refs[i] {
                Ref::Seg(cam, start) => (&self.stats.evicted_segments, st.store.remove_segment(cam, *start)),
                Ref::Clip(id) => (&self.stats.evicted_clips, st.store.remove_clip(id)),
            };
            counter[reason as usize].fetch_add(1, Relaxed);
            if reason != Reason::Window {
                let what = if matches!(refs[i], Ref::Seg(..)) { "segment" } else { "clip" };
                tracing::warn!(reason = ?reason, bytes = freed, "evicted a {what} to stay within record.max_bytes / the free-space watermark");
            }
        }
        self.update_gauges(st);
    }

    fn update_gauges(&self, st: &State) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.store_bytes.store(st.store.bytes(), Relaxed);
        self.stats.segments.store(st.store.segment_count() as u64, Relaxed);
        self.stats.clips.store(st.store.clip_count() as u64, Relaxed);
        if let Some((free, _)) = st.store.disk_space() {
            self.stats.free_bytes.store(free, Relaxed);
        }
    }
}
