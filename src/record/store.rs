//! The recordings on disk, and the index of them.
//!
//! Layout under the recording directory:
//!
//! ```text
//! segments/<camera>/<start_ms>-<end_ms>.mp4   finished segments (wall-clock start and end, ms since the epoch)
//! segments/<camera>/*.part                    the segment being written
//! events/<id>.json                            an event's (or manual recording's) reference to its video
//! events/<id>.jpg                             its snapshot
//! cache/*.mp4                                 clips and exports made on request (see `cache`)
//! ```
//!
//! Segments are the only stored video: an event holds a time range of its camera's segments, and a clip is
//! made from them only when asked for. The directory is the index: a segment only gets its final name after
//! its file is complete and synced (`fsync`, then `rename`, then `fsync` of the directory), and the name
//! carries its times; an event's reference is written the same way (`write_atomic`) when it starts and when
//! it ends. So there is no second index that power loss could leave disagreeing with the files; at start the
//! directory is read back, unfinished `.part` files are removed, and a named segment that is not a complete
//! MP4 is removed too.
//!
//! Before perch kept one copy of the video, every event had its own clip under `clips/`. At the first start
//! after the upgrade that folder is removed (its clips were copies of segments), and the clip requests still
//! pending in it become event references.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RecordError;
use crate::util::fs::write_atomic;

/// A finished segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

/// An event's (or a manual recording's) reference to its camera's video. Persisted from its start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRef {
    pub id: String,
    pub camera: String,
    /// `event` or `manual`.
    pub kind: String,
    pub label: Option<String>,
    /// When the object was first and last seen (the recording's start and stop, for manual ones).
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// The video it holds: `[start − pre_roll, end + post_roll]`; `to_ms` is unset while it lasts.
    pub from_ms: u64,
    pub to_ms: Option<u64>,
    /// While it lasts, a stationary object (a parked car) holds video only up to here: when it stopped,
    /// plus post-roll.
    #[serde(default)]
    pub still_to_ms: Option<u64>,
    /// A manual recording never stopped ends by itself then.
    #[serde(default)]
    pub auto_end_ms: Option<u64>,
    /// Seq of its `clip` message, once stored in the outbox.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Bytes of its snapshot at detection resolution (`events/<id>.jpg`), when it has one.
    #[serde(default)]
    pub snapshot_bytes: Option<u64>,
    /// Its best sighting: when (ms since the epoch), and the box in the pixels of a `frame_size` picture.
    /// The snapshot served is decoded from the recorded segment at that time, at the stream's resolution.
    #[serde(default)]
    pub best: Option<Sighting>,
    /// Perch stopped without ending it (SIGKILL, power loss): it was closed at the next start, at the end
    /// of its camera's recording.
    #[serde(default)]
    pub interrupted: bool,
}

/// Where and when an object was seen best.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub at_ms: u64,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub frame_size: [u32; 2],
}

impl EventRef {
    /// An event (`kind` `event`) or manual recording (`manual`) of `camera`, first seen at `start_ms`,
    /// holding video from `from_ms` on; the rest is set as it goes.
    pub fn starting(id: String, camera: String, kind: &str, label: Option<String>, start_ms: u64, from_ms: u64) -> Self {
        Self {
            id,
            camera,
            kind: kind.into(),
            label,
            start_ms,
            end_ms: None,
            from_ms,
            to_ms: None,
            still_to_ms: None,
            auto_end_ms: None,
            seq: None,
            snapshot_bytes: None,
            best: None,
            interrupted: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.to_ms.is_none()
    }

    /// Where the video it holds ends: its end, or while it lasts now (or when it stood still).
    pub fn video_end(&self, now_ms: u64) -> u64 {
        self.to_ms.or(self.still_to_ms).unwrap_or(now_ms).max(self.from_ms)
    }
}

/// What was cleaned up when the store was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Segments being written when perch stopped without finishing them (SIGKILL, power loss).
    pub unfinished_removed: u64,
    /// Named segments whose file turned out incomplete.
    pub broken_removed: u64,
    /// Files of cameras no longer configured, unreadable event references, stray files.
    pub orphans_removed: u64,
    /// Events that were still open when perch stopped, closed at the end of their camera's recording.
    pub events_closed: u64,
    /// Clips of the old clip-per-event layout that were removed, and their bytes.
    pub legacy_clips_removed: u64,
    pub legacy_bytes_removed: u64,
}

pub struct Store {
    root: PathBuf,
    segments: HashMap<String, BTreeMap<u64, Segment>>,
    events: BTreeMap<String, EventRef>,
    /// Ids of the events still open or whose `clip` message is not sent: what the recorder looks at every
    /// tick, without walking days of finished events.
    unfinished: BTreeSet<String>,
}

pub use crate::util::unix_ms as ms;

fn io(what: &str, p: &Path, e: std::io::Error) -> RecordError {
    RecordError::Io { what: format!("{what} {}", p.display()), source: e }
}

impl Store {
    /// Opens (creating) the store for `cameras`, cleaning up after an unclean stop and migrating the old
    /// clip-per-event layout.
    pub fn open(root: &Path, cameras: &[String]) -> Result<(Self, Recovery), RecordError> {
        let seg_root = root.join("segments");
        let event_root = root.join("events");
        for d in [&seg_root, &event_root].into_iter().cloned().chain(cameras.iter().map(|c| seg_root.join(c))) {
            std::fs::create_dir_all(&d).map_err(|e| io("cannot create", &d, e))?;
        }
        let mut rec = Recovery::default();
        let wanted: HashSet<&str> = cameras.iter().map(String::as_str).collect();
        let segments = read_segments(&seg_root, cameras, &wanted, &mut rec)?;
        let mut store = Self { root: root.to_path_buf(), segments, events: BTreeMap::new(), unfinished: BTreeSet::new() };
        store.read_events(&wanted, &mut rec)?;
        store.migrate_clips(&wanted, &mut rec);
        store.close_interrupted(&mut rec);
        Ok((store, rec))
    }

    /// Reads `events/`: references of configured cameras, and their snapshots.
    fn read_events(&mut self, wanted: &HashSet<&str>, rec: &mut Recovery) -> Result<(), RecordError> {
        let dir = self.root.join("events");
        let mut snapshots = Vec::new();
        for f in std::fs::read_dir(&dir).map_err(|e| io("cannot read", &dir, e))?.flatten() {
            let path = f.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<EventRef>(&b).ok()) {
                    Some(ev) if wanted.contains(ev.camera.as_str()) && path.file_stem().is_some_and(|s| *s == *ev.id) => {
                        self.index(ev);
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        rec.orphans_removed += 1;
                    }
                },
                Some("jpg") => snapshots.push(path),
                _ => {
                    if path.extension().is_some_and(|e| e == "part") {
                        rec.unfinished_removed += 1;
                    } else {
                        rec.orphans_removed += 1;
                    }
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        for path in snapshots {
            let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            match self.events.get_mut(&id) {
                Some(ev) => ev.snapshot_bytes = std::fs::metadata(&path).ok().map(|m| m.len()),
                None => {
                    let _ = std::fs::remove_file(&path);
                    rec.orphans_removed += 1;
                }
            }
        }
        Ok(())
    }

    /// The old layout (`clips/<id>.mp4|jpg|json`, `clips/pending/<id>.json`): clips were copies of segments
    /// and go; requests still pending become event references, so the next `clip` message is not lost.
    fn migrate_clips(&mut self, wanted: &HashSet<&str>, rec: &mut Recovery) {
        #[derive(Deserialize)]
        struct OldJob {
            id: String,
            camera: String,
            from_ms: u64,
            to_ms: u64,
            kind: String,
            label: Option<String>,
        }
        let old = self.root.join("clips");
        if !old.is_dir() {
            return;
        }
        for f in std::fs::read_dir(old.join("pending")).into_iter().flatten().flatten() {
            let job = std::fs::read(f.path()).ok().and_then(|b| serde_json::from_slice::<OldJob>(&b).ok());
            if let Some(j) = job.filter(|j| wanted.contains(j.camera.as_str()) && !self.events.contains_key(&j.id)) {
                let ev = EventRef { end_ms: Some(j.to_ms), to_ms: Some(j.to_ms), ..EventRef::starting(j.id, j.camera, &j.kind, j.label, j.from_ms, j.from_ms) };
                if self.put_event(&ev).is_ok() {
                    self.index(ev);
                }
            }
        }
        let (mut n, mut bytes) = (0, 0);
        for f in walk(&old) {
            n += u64::from(f.extension().is_some_and(|e| e == "mp4"));
            bytes += std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        }
        match std::fs::remove_dir_all(&old) {
            Ok(()) => tracing::warn!(
                clips = n,
                bytes,
                "removed {} of the old clip-per-event layout ({n} clips, {:.1} MB): perch now keeps one copy of the video and makes clips on request (GET /api/clips/<event id>.mp4); the events still pending were kept",
                old.display(),
                bytes as f64 / 1e6
            ),
            Err(e) => tracing::error!("cannot remove the old clip folder {}: {e}; remove it by hand to free its space", old.display()),
        }
        rec.legacy_clips_removed = n;
        rec.legacy_bytes_removed = bytes;
    }

    /// Events still open from before an unclean stop end where their camera's recording ended.
    fn close_interrupted(&mut self, rec: &mut Recovery) {
        let open: Vec<String> = self.unfinished().filter(|e| e.is_open()).map(|e| e.id.clone()).collect();
        for id in open {
            let Some(mut ev) = self.events.get(&id).cloned() else { continue };
            let last = self.last_segment(&ev.camera).map(|s| s.end_ms).unwrap_or(ev.from_ms).max(ev.from_ms);
            ev.to_ms = Some(ev.auto_end_ms.or(ev.still_to_ms).map_or(last, |t| t.min(last)).max(ev.from_ms));
            ev.end_ms = Some(ev.end_ms.unwrap_or(last).max(ev.start_ms));
            ev.interrupted = true;
            if self.put_event(&ev).is_ok() {
                self.index(ev);
                rec.events_closed += 1;
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn segment_dir(&self, camera: &str) -> PathBuf {
        self.root.join("segments").join(camera)
    }

    pub fn event_path(&self, id: &str, ext: &str) -> PathBuf {
        self.root.join("events").join(format!("{id}.{ext}"))
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn has_camera(&self, camera: &str) -> bool {
        self.segments.contains_key(camera)
    }

    /// The newest segment of `camera`.
    pub fn last_segment(&self, camera: &str) -> Option<&Segment> {
        self.segments.get(camera).and_then(|s| s.values().next_back())
    }

    /// Indexes a finished segment: syncs `part`, renames it to its final name, syncs the directory.
    pub fn add_segment(&mut self, camera: &str, part: &Path, start_ms: u64, end_ms: u64) -> Result<Segment, RecordError> {
        let file = File::open(part).map_err(|e| io("cannot open", part, e))?;
        file.sync_all().map_err(|e| io("cannot sync", part, e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        let dir = self.segment_dir(camera);
        let path = dir.join(format!("{start_ms}-{end_ms}.mp4"));
        std::fs::rename(part, &path).map_err(|e| io("cannot rename", part, e))?;
        sync_dir(&dir);
        let seg = Segment { start_ms, end_ms, bytes, path };
        self.segments.entry(camera.to_string()).or_default().insert(start_ms, seg.clone());
        Ok(seg)
    }

    /// Segments of `camera` that overlap `[from_ms, to_ms]`, oldest first.
    pub fn segments_between(&self, camera: &str, from_ms: u64, to_ms: u64) -> Vec<Segment> {
        let Some(s) = self.segments.get(camera) else { return Vec::new() };
        // Segments of a camera never overlap, so only the one starting before `from_ms` can reach into it.
        let before = s.range(..=from_ms).next_back().map(|(_, seg)| seg).filter(|seg| seg.end_ms > from_ms);
        before
            .into_iter()
            .chain(s.range(from_ms.saturating_add(1)..to_ms.max(from_ms.saturating_add(1))).map(|(_, seg)| seg))
            .filter(|seg| seg.start_ms < to_ms)
            .cloned()
            .collect()
    }

    /// Every segment, with its camera: per camera, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = (&str, &Segment)> {
        self.segments.iter().flat_map(|(c, s)| s.values().map(move |seg| (c.as_str(), seg)))
    }

    pub fn segment_count(&self) -> usize {
        self.segments.values().map(BTreeMap::len).sum()
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segments().map(|(_, s)| s.bytes).sum()
    }

    pub fn remove_segment(&mut self, camera: &str, start_ms: u64) -> u64 {
        let Some(seg) = self.segments.get_mut(camera).and_then(|s| s.remove(&start_ms)) else { return 0 };
        let _ = std::fs::remove_file(&seg.path);
        seg.bytes
    }

    pub fn event(&self, id: &str) -> Option<&EventRef> {
        self.events.get(id)
    }

    pub fn events(&self) -> impl Iterator<Item = &EventRef> {
        self.events.values()
    }

    /// Writes an event's reference (atomically, synced) and indexes it.
    pub fn save_event(&mut self, ev: EventRef) -> Result<(), RecordError> {
        self.put_event(&ev)?;
        self.index(ev);
        Ok(())
    }

    fn index(&mut self, ev: EventRef) {
        if ev.is_open() || ev.seq.is_none() {
            self.unfinished.insert(ev.id.clone());
        } else {
            self.unfinished.remove(&ev.id);
        }
        self.events.insert(ev.id.clone(), ev);
    }

    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// Events still open, or whose `clip` message is not sent yet.
    pub fn unfinished(&self) -> impl Iterator<Item = &EventRef> {
        self.unfinished.iter().filter_map(|id| self.events.get(id))
    }

    fn put_event(&self, ev: &EventRef) -> Result<(), RecordError> {
        let path = self.event_path(&ev.id, "json");
        write_atomic(&path, &serde_json::to_vec(ev).unwrap_or_default()).map_err(|e| io("cannot write", &path, e))
    }

    /// Forgets an event and deletes its files; returns the bytes of its snapshot.
    pub fn remove_event(&mut self, id: &str) -> Option<EventRef> {
        let ev = self.events.remove(id)?;
        self.unfinished.remove(id);
        for ext in ["json", "jpg"] {
            let _ = std::fs::remove_file(self.event_path(id, ext));
        }
        Some(ev)
    }

    /// Bytes of the events' snapshots.
    pub fn snapshot_bytes(&self) -> u64 {
        self.events.values().filter_map(|e| e.snapshot_bytes).sum()
    }

    /// Free and total bytes of the file system holding the recordings.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        crate::util::fs::disk_space(&self.root)
    }
}

/// Reads `segments/`: complete segments of configured cameras are indexed; the rest is removed and counted.
fn read_segments(
    seg_root: &Path,
    cameras: &[String],
    wanted: &HashSet<&str>,
    rec: &mut Recovery,
) -> Result<HashMap<String, BTreeMap<u64, Segment>>, RecordError> {
    let mut segments: HashMap<String, BTreeMap<u64, Segment>> = cameras.iter().map(|c| (c.clone(), BTreeMap::new())).collect();
    for entry in std::fs::read_dir(seg_root).map_err(|e| io("cannot read", seg_root, e))?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || !wanted.contains(name.as_str()) {
            tracing::info!(path = %path.display(), "removing recordings of a camera that is no longer configured");
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            rec.orphans_removed += 1;
            continue;
        }
        let index = segments.get_mut(&name).expect("configured camera");
        for f in std::fs::read_dir(&path).map_err(|e| io("cannot read", &path, e))?.flatten() {
            let fpath = f.path();
            let fname = f.file_name().to_string_lossy().into_owned();
            match parse_segment_name(&fname) {
                Some((start_ms, end_ms)) if mp4_complete(&fpath) => {
                    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    index.insert(start_ms, Segment { start_ms, end_ms, bytes, path: fpath });
                }
                Some(_) => {
                    tracing::warn!(path = %fpath.display(), "removing an incomplete segment");
                    let _ = std::fs::remove_file(&fpath);
                    rec.broken_removed += 1;
                }
                None if fname.ends_with(".part") => {
                    let _ = std::fs::remove_file(&fpath);
                    rec.unfinished_removed += 1;
                }
                None => {
                    let _ = std::fs::remove_file(&fpath);
                    rec.orphans_removed += 1;
                }
            }
        }
    }
    Ok(segments)
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// `<start_ms>-<end_ms>.mp4` → the times.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let (a, b) = name.strip_suffix(".mp4")?.split_once('-')?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (b >= a).then_some((a, b))
}

/// Whether an MP4 file is complete: its top-level boxes run exactly to the end of the file and it has both
/// its media (`mdat`) and its index (`moov`). A file cut short by a crash fails one of these.
pub fn mp4_complete(path: &Path) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return false };
    let (mut pos, mut moov, mut mdat) = (0u64, false, false);
    let mut head = [0u8; 16];
    while pos < len {
        if f.seek(SeekFrom::Start(pos)).is_err() || f.read_exact(&mut head[..8]).is_err() {
            return false;
        }
        let mut size = u32::from_be_bytes(head[..4].try_into().unwrap()) as u64;
        match &head[4..8] {
            b"moov" => moov = true,
            b"mdat" => mdat = true,
            _ => {}
        }
        if size == 1 {
            if f.read_exact(&mut head[8..16]).is_err() {
                return false;
            }
            size = u64::from_be_bytes(head[8..16].try_into().unwrap());
        } else if size == 0 {
            size = len - pos;
        }
        if size < 8 {
            return false;
        }
        pos += size;
    }
    pos == len && moov && mdat
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], size: u32) -> Vec<u8> {
        let mut b = size.to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(size as usize, 0);
        b
    }

    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name("1700000000000-1700000002000.mp4"), Some((1_700_000_000_000, 1_700_000_002_000)));
        assert_eq!(parse_segment_name("rec-1.part"), None);
        assert_eq!(parse_segment_name("5-4.mp4"), None);
    }

    #[test]
    fn mp4_completeness_is_read_from_the_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.mp4");
        let full = [mp4_box(b"ftyp", 8), mp4_box(b"mdat", 100), mp4_box(b"moov", 40)].concat();
        std::fs::write(&p, &full).unwrap();
        assert!(mp4_complete(&p));
        // Cut short, as after power loss.
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        assert!(!mp4_complete(&p));
        // The index never written (killed while recording).
        std::fs::write(&p, [mp4_box(b"ftyp", 8), mp4_box(b"mdat", 100)].concat()).unwrap();
        assert!(!mp4_complete(&p));
        std::fs::write(&p, b"").unwrap();
        assert!(!mp4_complete(&p));
    }

    fn event(id: &str, to_ms: Option<u64>) -> EventRef {
        EventRef { end_ms: to_ms.map(|t| t - 500), to_ms, ..EventRef::starting(id.into(), "gate".into(), "event", Some("person".into()), 1500, 1000) }
    }

    #[test]
    fn open_cleans_up_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let good = [mp4_box(b"ftyp", 8), mp4_box(b"mdat", 100), mp4_box(b"moov", 40)].concat();
        std::fs::create_dir_all(root.join("segments/gate")).unwrap();
        std::fs::create_dir_all(root.join("segments/removed-camera")).unwrap();
        std::fs::create_dir_all(root.join("events")).unwrap();
        std::fs::write(root.join("segments/gate/1000-3000.mp4"), &good).unwrap();
        std::fs::write(root.join("segments/gate/3000-5000.mp4"), &good[..50]).unwrap();
        std::fs::write(root.join("segments/gate/rec-1-000001.part"), b"partial").unwrap();
        std::fs::write(root.join("segments/removed-camera/1-2.mp4"), &good).unwrap();
        // An ended event with its snapshot, one still open at the crash, a snapshot without its event.
        std::fs::write(root.join("events/ev1.json"), serde_json::to_vec(&event("ev1", Some(2500))).unwrap()).unwrap();
        std::fs::write(root.join("events/ev1.jpg"), b"jpeg").unwrap();
        std::fs::write(root.join("events/ev2.json"), serde_json::to_vec(&event("ev2", None)).unwrap()).unwrap();
        std::fs::write(root.join("events/ev3.jpg"), b"jpeg").unwrap();
        std::fs::write(root.join("events/bad.json"), b"{not json").unwrap();

        let (store, rec) = Store::open(root, &["gate".to_string()]).unwrap();
        assert_eq!(rec, Recovery { unfinished_removed: 1, broken_removed: 1, orphans_removed: 3, events_closed: 1, ..Default::default() });
        assert_eq!(store.segment_count(), 1);
        assert_eq!(store.segments_between("gate", 0, 10_000)[0].start_ms, 1000);
        assert!(!root.join("segments/removed-camera").exists());
        assert!(!root.join("events/ev3.jpg").exists(), "a snapshot without its event is an orphan");
        assert_eq!(store.event("ev1").unwrap().snapshot_bytes, Some(4));
        // The open event ends where the recording ended, and says it was interrupted, on disk too.
        let ev2 = store.event("ev2").unwrap();
        assert_eq!((ev2.to_ms, ev2.interrupted), (Some(3000), true));
        let on_disk: EventRef = serde_json::from_slice(&std::fs::read(root.join("events/ev2.json")).unwrap()).unwrap();
        assert_eq!(&on_disk, ev2);
    }

    #[test]
    fn the_clip_per_event_layout_is_removed_and_its_pending_requests_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("clips/pending")).unwrap();
        std::fs::write(root.join("clips/ev1.mp4"), vec![0u8; 1000]).unwrap();
        std::fs::write(root.join("clips/ev1.json"), b"{}").unwrap();
        let job = r#"{"id":"ev2","camera":"gate","from_ms":1000,"to_ms":9000,"kind":"event","label":"car"}"#;
        std::fs::write(root.join("clips/pending/ev2.json"), job).unwrap();
        let (store, rec) = Store::open(root, &["gate".to_string()]).unwrap();
        assert_eq!((rec.legacy_clips_removed, rec.legacy_bytes_removed), (1, 1002 + job.len() as u64));
        assert!(!root.join("clips").exists());
        let ev = store.event("ev2").expect("the pending request became an event reference");
        assert_eq!((ev.from_ms, ev.to_ms, ev.label.as_deref(), ev.seq), (1000, Some(9000), Some("car"), None));
        assert!(root.join("events/ev2.json").exists());
        // Until its clip message is sent, it is among the unfinished; then it is not, on disk too.
        let ids = |s: &Store| s.unfinished().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&store), ["ev2"]);
        let mut store = store;
        let sent = EventRef { seq: Some(7), ..store.event("ev2").unwrap().clone() };
        store.save_event(sent).unwrap();
        assert!(ids(&store).is_empty());
        let (reopened, _) = Store::open(root, &["gate".to_string()]).unwrap();
        assert!(ids(&reopened).is_empty());
        assert_eq!(reopened.event_count(), 1);
        drop(reopened);
        // A second start finds nothing more to migrate.
        let (_, rec) = Store::open(root, &["gate".to_string()]).unwrap();
        assert_eq!(rec, Recovery::default());
    }

    #[test]
    fn overlap_query() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path(), &["c".to_string()]).unwrap();
        for (a, b) in [(0, 2000), (2000, 4000), (4000, 6000)] {
            let part = store.segment_dir("c").join(format!("{a}.part"));
            std::fs::write(&part, b"x").unwrap();
            store.add_segment("c", &part, a, b).unwrap();
        }
        let starts: Vec<u64> = store.segments_between("c", 2500, 4500).iter().map(|s| s.start_ms).collect();
        assert_eq!(starts, [2000, 4000]);
        let starts: Vec<u64> = store.segments_between("c", 2000, 2000).iter().map(|s| s.start_ms).collect();
        assert!(starts.is_empty(), "an empty span overlaps nothing: {starts:?}");
        let starts: Vec<u64> = store.segments_between("c", 0, 6000).iter().map(|s| s.start_ms).collect();
        assert_eq!(starts, [0, 2000, 4000]);
        assert_eq!(store.segments_between("c", 6000, 9000), vec![]);
        assert!(store.segment_dir("c").join("2000-4000.mp4").exists());
        assert_eq!(store.remove_segment("c", 2000), 1);
        assert_eq!(store.segment_count(), 2);
    }
}
