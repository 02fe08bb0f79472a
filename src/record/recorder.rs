//! The recorder: indexes the segments the capture pipelines finish, keeps each event's reference to the
//! video it covers, says in a `clip` message when an event's video is recorded, answers the evidence API's
//! questions, and enforces retention. One thread for the whole box; everything reaches it over one bounded
//! channel ([`RecorderMsg`]).
//!
//! No video is copied here: an event holds a time range of its camera's segments, and clips are made only
//! when asked for ([`super::evidence`]). An event's reference is on disk from its start (`events/<id>.json`),
//! so after a crash or power loss the next start knows what video it holds and still sends its `clip`
//! message.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{Notify, mpsc};

use super::cache::ClipCache;
use super::clip::{self, Snapshot};
use super::config::{CameraRecordConfig, RecordConfig};
use super::evidence::{self, Ask, Deleted, EvidenceError, Span};
use super::retention::{self, CameraRules, EventSpan, Limits, Reason, Seg};
use super::stats::RecordStats;
use super::store::{EventRef, Store, ms};
use crate::events::Outbox;
use crate::events::schema::{SCHEMA_VERSION, rfc3339};
use crate::util::fs::write_atomic;

/// Depth of the recorder's channel. Messages are small and rare (one per segment, two per event).
pub const QUEUE: usize = 256;
/// How often due `clip` messages are checked.
const TICK: Duration = Duration::from_millis(500);
/// Retention runs this soon after something was added, and at least this often (the disk's free space
/// changes under other writers too).
const RETENTION_AFTER: Duration = Duration::from_secs(1);
const RETENTION_EVERY: Duration = Duration::from_secs(5);
/// JPEG quality of snapshots.
const SNAPSHOT_QUALITY: u8 = 85;

/// What the recorder is told.
pub enum RecorderMsg {
    /// A capture pipeline finished writing a segment file (`part`) covering `[start_ms, end_ms]`.
    Segment { camera: usize, part: PathBuf, start_ms: u64, end_ms: u64 },
    /// An event (or manual recording) started (`to_ms` unset) or ended: store its reference. A reference
    /// that has already ended is never reopened or changed (a repeated stop, a manual recording that ended
    /// by itself). The snapshot comes with the end.
    Event { ev: EventRef, snapshot: Option<Box<Snapshot>> },
    /// A question of the evidence API.
    Ask(Ask),
}

/// The message published (through the outbox) once an event's video is recorded, on the camera's event
/// topic.
#[derive(Debug, Serialize)]
struct ClipMessage<'a> {
    schema_version: u32,
    seq: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    event_id: &'a str,
    review_id: Option<String>,
    device_id: &'a str,
    camera: &'a str,
    source: &'a str,
    label: Option<&'a str>,
    /// `complete`, `partial` (the recording does not cover the whole window: the camera was offline, or
    /// recordings were evicted) or `failed` (no recording at all).
    status: &'static str,
    /// Where to fetch the clip and the snapshot (`[http]`, with the bearer token).
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
    /// Bytes of the segments the clip is made of (shared with overlapping events; nothing is copied).
    bytes: u64,
    interrupted: bool,
    ts: String,
}

pub struct Recorder {
    pub config: RecordConfig,
    pub dir: PathBuf,
    pub device_id: String,
    /// Every configured camera by index, with its recording settings when it is recorded.
    pub cameras: Vec<(String, Option<CameraRecordConfig>)>,
    pub outbox: Arc<Outbox>,
    pub wake: Arc<Notify>,
    pub stats: Arc<RecordStats>,
}

struct State {
    store: Store,
    cache: Arc<ClipCache>,
    /// Something was added since retention last ran.
    dirty: bool,
    last_retention: Instant,
}

impl Recorder {
    /// Opens the store, cleaning up after an unclean stop. Call before the cameras start: it removes
    /// unfinished segment files, which must not be the ones being written now.
    pub fn open(self) -> OpenRecorder {
        let ids: Vec<String> = self.cameras.iter().map(|(id, _)| id.clone()).collect();
        let opened =
            Store::open(&self.dir, &ids).and_then(|(store, rec)| Ok((ClipCache::open(&store.cache_dir(), self.config.clip_cache_bytes())?, store, rec)));
        let state = match opened {
            Ok((cache, store, recovery)) => {
                if recovery != Default::default() {
                    tracing::info!(
                        unfinished = recovery.unfinished_removed,
                        broken = recovery.broken_removed,
                        orphans = recovery.orphans_removed,
                        events_closed = recovery.events_closed,
                        "recordings cleaned up after the last stop"
                    );
                }
                *self.stats.recovery.lock().unwrap() = recovery;
                for (cam, _) in &self.cameras {
                    if let (Some(seg), Some(s)) = (store.last_segment(cam), self.stats.camera(cam)) {
                        s.last_end_ms.store(seg.end_ms, Relaxed);
                    }
                }
                Some(State { store, cache: Arc::new(cache), dirty: true, last_retention: Instant::now() })
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

    /// The clip cache, for the evidence API's handle ([`super::Evidence`]), when the store is open.
    pub fn cache(&self) -> Option<Arc<ClipCache>> {
        self.state.as_ref().map(|st| st.cache.clone())
    }

    /// Runs until every sender of `rx` is gone. Blocking: run it on its own thread (`spawn_blocking`).
    /// At the end, events still open are ended and every `clip` message due is sent.
    pub fn run(self, mut rx: mpsc::Receiver<RecorderMsg>, runtime: tokio::runtime::Handle) {
        let Self { recorder, state } = self;
        let Some(mut st) = state else {
            // Keep draining so senders never block; questions are answered by the dropped reply.
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
            self.publish_due(st, false);
            let since = st.last_retention.elapsed();
            if (st.dirty && since >= RETENTION_AFTER) || since >= RETENTION_EVERY {
                self.retention(st);
            }
        }
        self.end_open(st);
        self.publish_due(st, true);
        self.retention(st);
        tracing::debug!("recorder stopped");
    }

    fn handle(&self, st: &mut State, msg: RecorderMsg) {
        match msg {
            RecorderMsg::Segment { camera, part, start_ms, end_ms } => self.segment(st, camera, part, start_ms, end_ms),
            RecorderMsg::Event { ev, snapshot } => self.event(st, ev, snapshot),
            RecorderMsg::Ask(ask) => {
                if let Some(Ask::Delete(id, reply)) = evidence::answer(&st.store, ask, ms(SystemTime::now()), self.review_max_ms()) {
                    let _ = reply.send(self.delete(st, &id));
                }
            }
        }
    }

    fn segment(&self, st: &mut State, camera: usize, part: PathBuf, start_ms: u64, end_ms: u64) {
        let Some((cam, _)) = self.cameras.get(camera) else { return };
        let stats = self.stats.camera(cam);
        match st.store.add_segment(cam, &part, start_ms, end_ms) {
            Ok(seg) => {
                if let Some(s) = stats {
                    s.segment(seg.start_ms, seg.end_ms, seg.bytes);
                }
                st.dirty = true;
                tracing::debug!(camera = %cam, start_ms, duration_ms = end_ms - start_ms, bytes = seg.bytes, "segment");
            }
            Err(e) => {
                tracing::warn!(camera = %cam, "segment lost: {e}");
                let _ = std::fs::remove_file(&part);
                if let Some(s) = stats {
                    s.lost_segments.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn event(&self, st: &mut State, mut ev: EventRef, snapshot: Option<Box<Snapshot>>) {
        if st.store.event(&ev.id).is_some_and(|old| !old.is_open()) || !st.store.has_camera(&ev.camera) {
            return;
        }
        if let Some(old) = st.store.event(&ev.id) {
            // The start is what the first message said (a manual stop knows only its own times).
            (ev.start_ms, ev.from_ms) = (old.start_ms, old.from_ms);
        }
        if let Some(snap) = snapshot {
            let path = st.store.event_path(&ev.id, "jpg");
            match clip::snapshot_jpeg(&snap, SNAPSHOT_QUALITY).and_then(|jpeg| {
                write_atomic(&path, &jpeg)
                    .map(|_| jpeg.len() as u64)
                    .map_err(|e| super::RecordError::Io { what: format!("cannot write {}", path.display()), source: e })
            }) {
                Ok(bytes) => ev.snapshot_bytes = Some(bytes),
                Err(e) => tracing::warn!(event = %ev.id, "no snapshot: {e}"),
            }
        }
        let id = ev.id.clone();
        if let Err(e) = st.store.save_event(ev) {
            tracing::warn!(event = %id, "the event's reference to its video is not stored ({e}); its video is kept only by the rolling window");
        }
        st.dirty = true;
    }

    /// Ends what is still open at shutdown: manual recordings (events were ended by the event stage).
    fn end_open(&self, st: &mut State) {
        let now = ms(SystemTime::now());
        let open: Vec<EventRef> = st.store.unfinished().filter(|e| e.is_open()).cloned().collect();
        for mut ev in open {
            let to = ev.auto_end_ms.map_or(now, |t| t.min(now)).max(ev.from_ms);
            (ev.to_ms, ev.end_ms) = (Some(to), Some(to));
            self.event(st, ev, None);
        }
    }

    /// Ends manual recordings that reached `manual_max_s`, and sends the `clip` message of each ended
    /// event whose video is recorded (or whose wait is over, or all of them at shutdown).
    fn publish_due(&self, st: &mut State, all: bool) {
        let now = ms(SystemTime::now());
        let expired: Vec<EventRef> = st.store.unfinished().filter(|e| e.is_open() && e.auto_end_ms.is_some_and(|t| t <= now)).cloned().collect();
        for mut ev in expired {
            tracing::info!(recording = %ev.id, "manual recording reached record.manual_max_s; stopping it");
            (ev.to_ms, ev.end_ms) = (ev.auto_end_ms, ev.auto_end_ms);
            self.event(st, ev, None);
        }
        let wait_ms = (self.config.clip_wait_s * 1000.0) as u64;
        let due: Vec<EventRef> = st
            .store
            .unfinished()
            .filter(|e| e.seq.is_none())
            .filter(|e| e.to_ms.is_some_and(|to| all || now >= to + wait_ms || st.store.last_segment(&e.camera).is_some_and(|s| s.end_ms >= to)))
            .cloned()
            .collect();
        for ev in due {
            self.publish(st, ev);
        }
        let waiting = st.store.unfinished().filter(|e| e.seq.is_none() && !e.is_open()).count();
        self.stats.pending_clips.store(waiting as u64, Relaxed);
    }

    /// Stores the `clip` message of an ended event in the outbox, and its seq in the event's reference.
    fn publish(&self, st: &mut State, mut ev: EventRef) {
        let to = ev.to_ms.unwrap_or(ev.from_ms);
        let span = Span::of(&st.store, &ev.id, &ev.camera, ev.from_ms, to);
        let gaps = span.gaps();
        let status = match (span.segments.is_empty(), gaps.is_empty()) {
            (true, _) => "failed",
            (false, true) => "complete",
            (false, false) => "partial",
        };
        let review_id = evidence::review_items(st.store.events().filter(|e| e.camera == ev.camera), ms(SystemTime::now()), self.review_max_ms())
            .into_iter()
            .find(|r| r.events.contains(&ev.id))
            .map(|r| r.id);
        let at = |t: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(t));
        let gap_ms: u64 = gaps.iter().map(|(a, b)| b - a).sum();
        let duration_ms: u64 = span.segments.iter().map(|s| s.end_ms - s.start_ms).sum();
        let description = |seq: u64| {
            serde_json::to_vec(&ClipMessage {
                schema_version: SCHEMA_VERSION,
                seq,
                kind: "clip",
                event_id: &ev.id,
                review_id: review_id.clone(),
                device_id: &self.device_id,
                camera: &ev.camera,
                source: &ev.kind,
                label: ev.label.as_deref(),
                status,
                clip: (status != "failed").then(|| format!("/api/clips/{}.mp4", ev.id)),
                snapshot: ev.snapshot_bytes.map(|_| format!("/api/snapshots/{}.jpg", ev.id)),
                requested_start: at(ev.from_ms),
                requested_end: at(to),
                start: span.segments.first().map(|s| at(s.start_ms)),
                end: span.segments.last().map(|s| at(s.end_ms)),
                duration_s: duration_ms as f64 / 1000.0,
                segments: span.segments.len(),
                gap_s: gap_ms as f64 / 1000.0,
                bytes: span.bytes(),
                interrupted: ev.interrupted,
                ts: rfc3339(SystemTime::now()),
            })
            .unwrap_or_default()
        };
        let seq = match self.outbox.append(description) {
            Ok(seq) => seq,
            Err(e) => {
                // Tried again with the next tick: the reference stays unpublished.
                tracing::error!(event = %ev.id, "the clip message could not be stored: {e}");
                return;
            }
        };
        self.wake.notify_one();
        match status {
            "complete" => self.stats.clips_complete.fetch_add(1, Relaxed),
            "partial" => self.stats.clips_partial.fetch_add(1, Relaxed),
            _ => self.stats.clips_failed.fetch_add(1, Relaxed),
        };
        tracing::info!(camera = %ev.camera, event = %ev.id, status, seq, segments = span.segments.len(), gap_s = gap_ms as f64 / 1000.0, "clip ready");
        ev.seq = Some(seq);
        let id = ev.id.clone();
        if let Err(e) = st.store.save_event(ev) {
            // Sent again after a restart: a duplicate, never a loss.
            tracing::warn!(event = %id, "cannot note that the clip message was sent: {e}");
        }
    }

    /// Forgets an ended event and frees the video only it held.
    fn delete(&self, st: &mut State, id: &str) -> Result<Deleted, EvidenceError> {
        match st.store.event(id) {
            None => return Err(EvidenceError::NotFound(id.to_string())),
            Some(e) if e.is_open() => return Err(EvidenceError::Open(id.to_string())),
            Some(_) => {}
        }
        let before = (st.store.segment_count(), st.store.segment_bytes());
        st.store.remove_event(id);
        st.cache.trim(0);
        self.retention(st);
        let after = (st.store.segment_count(), st.store.segment_bytes());
        tracing::info!(event = %id, segments = before.0 - after.0, bytes = before.1 - after.1, "event deleted on request");
        Ok(Deleted { id: id.to_string(), segments: before.0.saturating_sub(after.0), bytes: before.1.saturating_sub(after.1) })
    }

    fn review_max_ms(&self) -> u64 {
        (self.config.review_max_s * 1000.0) as u64
    }

    fn limits(&self, st: &State) -> (Limits, Option<u64>) {
        let space = st.store.disk_space();
        // The event outbox's reserve is a floor of the watermark: video never takes the room events need.
        let min_free = space
            .map(|(_, total)| self.config.min_free_bytes.max((total as f64 * self.config.min_free_percent / 100.0) as u64).max(self.outbox.reserve_bytes()))
            .unwrap_or(0);
        (Limits { max_bytes: self.config.max_bytes, min_free, max_event_share: self.config.max_event_share }, space.map(|(free, _)| free))
    }

    fn rules(&self) -> Vec<CameraRules> {
        let day = 86_400_000.0;
        let window = self.config.window_s * 1000.0;
        self.cameras
            .iter()
            .map(|(_, rec)| CameraRules {
                keep_all_ms: rec.as_ref().map_or(window, |r| window.max(r.continuous_days * day)) as u64,
                event_max_age_ms: (rec.as_ref().map_or(self.config.event_days, |r| r.event_days(&self.config)) * day) as u64,
            })
            .collect()
    }

    /// Deletes what the retention rules say, counting each deletion by reason. The clip cache is emptied
    /// before any video is evicted for room.
    fn retention(&self, st: &mut State) {
        st.dirty = false;
        st.last_retention = Instant::now();
        st.cache.expire(super::cache::IDLE);
        let now = ms(SystemTime::now());
        let index: std::collections::HashMap<&str, usize> = self.cameras.iter().enumerate().map(|(i, (id, _))| (id.as_str(), i)).collect();
        let mut seg_refs = Vec::new();
        let mut segs = Vec::new();
        for (cam, s) in st.store.segments() {
            segs.push(Seg { camera: index[cam], start_ms: s.start_ms, end_ms: s.end_ms, bytes: s.bytes });
            seg_refs.push((cam.to_string(), s.start_ms));
        }
        let event_ids: Vec<String> = st.store.events().map(|e| e.id.clone()).collect();
        let spans: Vec<EventSpan> = st
            .store
            .events()
            .map(|e| EventSpan {
                camera: index.get(e.camera.as_str()).copied().unwrap_or(usize::MAX),
                from_ms: e.from_ms,
                to_ms: e.to_ms.or(e.still_to_ms),
                open: e.is_open(),
            })
            .collect();
        let (limits, free) = self.limits(st);
        let rules = self.rules();
        let mut plan = retention::plan(now, &segs, &spans, &rules, &limits, st.store.snapshot_bytes() + st.cache.bytes(), free);
        let pressed = |p: &retention::Plan| p.segments.iter().any(|&(_, r)| matches!(r, Reason::Quota | Reason::LowDisk));
        if pressed(&plan) && st.cache.bytes() > 0 {
            let freed = st.cache.trim(0);
            tracing::info!(bytes = freed, "emptied the clip cache to make room");
            let free = free.map(|f| f + freed);
            plan = retention::plan(now, &segs, &spans, &rules, &limits, st.store.snapshot_bytes(), free);
        }
        for &(i, reason) in &plan.segments {
            let (cam, start) = &seg_refs[i];
            let freed = st.store.remove_segment(cam, *start);
            self.stats.evicted_segments[reason as usize].fetch_add(1, Relaxed);
            if reason != Reason::Window {
                tracing::warn!(reason = ?reason, camera = %cam, bytes = freed, "evicted a segment to stay within record.max_bytes / the free-space watermark");
            }
        }
        for &(i, reason) in &plan.events {
            st.store.remove_event(&event_ids[i]);
            self.stats.evicted_events[reason as usize].fetch_add(1, Relaxed);
        }
        self.update_gauges(st);
    }

    fn update_gauges(&self, st: &State) {
        let segment_bytes = st.store.segment_bytes();
        let cache = st.cache.bytes();
        self.stats.segment_bytes.store(segment_bytes, Relaxed);
        self.stats.cache_bytes.store(cache, Relaxed);
        self.stats.store_bytes.store(segment_bytes + cache + st.store.snapshot_bytes(), Relaxed);
        self.stats.segments.store(st.store.segment_count() as u64, Relaxed);
        self.stats.events.store(st.store.event_count() as u64, Relaxed);
        self.stats.clips_made.store(st.cache.made.load(Relaxed), Relaxed);
        if let Some((free, _)) = st.store.disk_space() {
            self.stats.free_bytes.store(free, Relaxed);
        }
    }
}
