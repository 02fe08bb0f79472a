//! The recordings on disk, and the index of them.
//!
//! Layout under the recording directory:
//!
//! ```text
//! segments/<camera>/<start_ms>-<end_ms>.mp4   finished segments (wall-clock start and end, ms since the epoch)
//! segments/<camera>/*.part                    the segment being written
//! clips/<id>.mp4, <id>.jpg, <id>.json         a clip, its snapshot and its description
//! clips/pending/<id>.json                     a clip still to be made (waiting for its post-roll)
//! ```
//!
//! The directory is the index: a segment only gets its final name after its file is complete and synced
//! (`fsync`, then `rename`, then `fsync` of the directory), and the name carries its times. So there is no
//! second index that power loss could leave disagreeing with the files; at start the directory is read back,
//! unfinished `.part` files are removed, and a named segment that is not a complete MP4 is removed too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RecordError;

/// A finished segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub bytes: u64,
    pub path: PathBuf,
}

/// A finished clip (its files share the id).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipEntry {
    pub id: String,
    pub made_ms: u64,
    pub bytes: u64,
}

/// A clip to make: what the event stage or a manual recording asked for. Persisted until done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipJob {
    pub id: String,
    pub camera: String,
    pub from_ms: u64,
    pub to_ms: u64,
    /// `event` or `manual`.
    pub kind: String,
    pub label: Option<String>,
}

/// What was cleaned up when the store was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Segments being written when perch stopped without finishing them (SIGKILL, power loss).
    pub unfinished_removed: u64,
    /// Named segments whose file turned out incomplete.
    pub broken_removed: u64,
    /// Files of cameras no longer configured, clips without a description, stray files.
    pub orphans_removed: u64,
}

pub struct Store {
    root: PathBuf,
    segments: HashMap<String, BTreeMap<u64, Segment>>,
    clips: BTreeMap<String, ClipEntry>,
}

pub use crate::util::unix_ms as ms;

impl Store {
    /// Opens (creating) the store for `cameras`, cleaning up after an unclean stop. Returns the pending clip
    /// jobs found on disk too.
    pub fn open(root: &Path, cameras: &[String]) -> Result<(Self, Vec<ClipJob>, Recovery), RecordError> {
        let io = |what: &str, p: &Path, e: std::io::Error| RecordError::Io { what: format!("{what} {}", p.display()), source: e };
        let seg_root = root.join("segments");
        let clip_root = root.join("clips");
        let pending_root = clip_root.join("pending");
        for d in [&seg_root, &clip_root, &pending_root].into_iter().cloned().chain(cameras.iter().map(|c| seg_root.join(c))) {
            std::fs::create_dir_all(&d).map_err(|e| io("cannot create", &d, e))?;
        }
        let mut rec = Recovery::default();
        let wanted: HashSet<&str> = cameras.iter().map(String::as_str).collect();
        let mut segments: HashMap<String, BTreeMap<u64, Segment>> = cameras.iter().map(|c| (c.clone(), BTreeMap::new())).collect();
        for entry in std::fs::read_dir(&seg_root).map_err(|e| io("cannot read", &seg_root, e))?.flatten() {
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

        let mut jobs = Vec::new();
        for f in std::fs::read_dir(&pending_root).map_err(|e| io("cannot read", &pending_root, e))?.flatten() {
            let job = std::fs::read(f.path()).ok().and_then(|b| serde_json::from_slice::<ClipJob>(&b).ok());
            match job {
                Some(job) if wanted.contains(job.camera.as_str()) => jobs.push(job),
                _ => {
                    let _ = std::fs::remove_file(f.path());
                    rec.orphans_removed += 1;
                }
            }
        }
        let pending: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let mut files: BTreeMap<String, Vec<(PathBuf, u64, String)>> = BTreeMap::new();
        for f in std::fs::read_dir(&clip_root).map_err(|e| io("cannot read", &clip_root, e))?.flatten() {
            let path = f.path();
            if path.is_dir() {
                continue;
            }
            let name = f.file_name().to_string_lossy().into_owned();
            let Some((id, ext)) = name.rsplit_once('.') else {
                let _ = std::fs::remove_file(&path);
                rec.orphans_removed += 1;
                continue;
            };
            let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            files.entry(id.to_string()).or_default().push((path, bytes, ext.to_string()));
        }
        let mut clips = BTreeMap::new();
        for (id, parts) in files {
            let described = parts.iter().any(|(_, _, ext)| ext == "json");
            if described || pending.contains(&id) {
                let made_ms = parts.iter().filter_map(|(p, _, _)| std::fs::metadata(p).and_then(|m| m.modified()).ok()).map(ms).max().unwrap_or(0);
                let mut bytes = 0;
                for (p, b, ext) in &parts {
                    if ext == "part" {
                        let _ = std::fs::remove_file(p);
                        rec.unfinished_removed += 1;
                    } else {
                        bytes += b;
                    }
                }
                if described {
                    clips.insert(id.clone(), ClipEntry { id, made_ms, bytes });
                }
            } else {
                // A snapshot or video whose event is gone (its description was never written).
                for (p, _, _) in parts {
                    let _ = std::fs::remove_file(p);
                    rec.orphans_removed += 1;
                }
            }
        }
        Ok((Self { root: root.to_path_buf(), segments, clips }, jobs, rec))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn segment_dir(&self, camera: &str) -> PathBuf {
        self.root.join("segments").join(camera)
    }

    pub fn clip_path(&self, id: &str, ext: &str) -> PathBuf {
        self.root.join("clips").join(format!("{id}.{ext}"))
    }

    pub fn pending_path(&self, id: &str) -> PathBuf {
        self.root.join("clips").join("pending").join(format!("{id}.json"))
    }

    /// The newest segment of `camera`.
    pub fn last_segment(&self, camera: &str) -> Option<&Segment> {
        self.segments.get(camera).and_then(|s| s.values().next_back())
    }

    /// Indexes a finished segment: syncs `part`, renames it to its final name, syncs the directory.
    pub fn add_segment(&mut self, camera: &str, part: &Path, start_ms: u64, end_ms: u64) -> Result<Segment, RecordError> {
        let io = |what: &str, e: std::io::Error| RecordError::Io { what: format!("{what} {}", part.display()), source: e };
        let file = File::open(part).map_err(|e| io("cannot open", e))?;
        file.sync_all().map_err(|e| io("cannot sync", e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        drop(file);
        let dir = self.segment_dir(camera);
        let path = dir.join(format!("{start_ms}-{end_ms}.mp4"));
        std::fs::rename(part, &path).map_err(|e| io("cannot rename", e))?;
        sync_dir(&dir);
        let seg = Segment { start_ms, end_ms, bytes, path };
        self.segments.entry(camera.to_string()).or_default().insert(start_ms, seg.clone());
        Ok(seg)
    }

    /// Segments of `camera` that overlap `[from_ms, to_ms]`, oldest first.
    pub fn segments_between(&self, camera: &str, from_ms: u64, to_ms: u64) -> Vec<Segment> {
        self.segments.get(camera).map(|s| s.values().filter(|s| s.end_ms > from_ms && s.start_ms < to_ms).cloned().collect()).unwrap_or_default()
    }

    pub fn add_clip(&mut self, entry: ClipEntry) {
        self.clips.insert(entry.id.clone(), entry);
    }

    /// Every segment (with its camera) and clip.
    pub fn segments(&self) -> impl Iterator<Item = (&str, &Segment)> {
        self.segments.iter().flat_map(|(c, s)| s.values().map(move |seg| (c.as_str(), seg)))
    }

    pub fn clips(&self) -> impl Iterator<Item = &ClipEntry> {
        self.clips.values()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.values().map(BTreeMap::len).sum()
    }

    pub fn clip_count(&self) -> usize {
        self.clips.len()
    }

    pub fn bytes(&self) -> u64 {
        self.segments().map(|(_, s)| s.bytes).sum::<u64>() + self.clips.values().map(|c| c.bytes).sum::<u64>()
    }

    pub fn remove_segment(&mut self, camera: &str, start_ms: u64) -> u64 {
        let Some(seg) = self.segments.get_mut(camera).and_then(|s| s.remove(&start_ms)) else { return 0 };
        let _ = std::fs::remove_file(&seg.path);
        seg.bytes
    }

    pub fn remove_clip(&mut self, id: &str) -> u64 {
        let Some(c) = self.clips.remove(id) else { return 0 };
        for ext in ["mp4", "jpg", "json"] {
            let _ = std::fs::remove_file(self.clip_path(id, ext));
        }
        c.bytes
    }

    /// Free and total bytes of the file system holding the recordings.
    pub fn disk_space(&self) -> Option<(u64, u64)> {
        crate::util::fs::disk_space(&self.root)
    }
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

    #[test]
    fn open_cleans_up_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let good = [mp4_box(b"ftyp", 8), mp4_box(b"mdat", 100), mp4_box(b"moov", 40)].concat();
        std::fs::create_dir_all(root.join("segments/gate")).unwrap();
        std::fs::create_dir_all(root.join("segments/removed-camera")).unwrap();
        std::fs::create_dir_all(root.join("clips/pending")).unwrap();
        std::fs::write(root.join("segments/gate/1000-3000.mp4"), &good).unwrap();
        std::fs::write(root.join("segments/gate/3000-5000.mp4"), &good[..50]).unwrap();
        std::fs::write(root.join("segments/gate/rec-1-000001.part"), b"partial").unwrap();
        std::fs::write(root.join("segments/removed-camera/1-2.mp4"), &good).unwrap();
        std::fs::write(root.join("clips/ev1.mp4"), &good).unwrap();
        std::fs::write(root.join("clips/ev1.json"), b"{}").unwrap();
        std::fs::write(root.join("clips/ev2.jpg"), b"jpeg").unwrap();
        let job = ClipJob { id: "ev3".into(), camera: "gate".into(), from_ms: 1, to_ms: 2, kind: "event".into(), label: None };
        std::fs::write(root.join("clips/pending/ev3.json"), serde_json::to_vec(&job).unwrap()).unwrap();
        std::fs::write(root.join("clips/ev3.jpg"), b"jpeg").unwrap();

        let (store, jobs, rec) = Store::open(root, &["gate".to_string()]).unwrap();
        assert_eq!(rec, Recovery { unfinished_removed: 1, broken_removed: 1, orphans_removed: 2 });
        assert_eq!(store.segment_count(), 1);
        assert_eq!(store.segments_between("gate", 0, 10_000)[0].start_ms, 1000);
        assert_eq!(jobs, vec![job]);
        assert_eq!(store.clip_count(), 1);
        assert!(!root.join("segments/removed-camera").exists());
        assert!(!root.join("clips/ev2.jpg").exists(), "a snapshot without its event is an orphan");
        assert!(root.join("clips/ev3.jpg").exists(), "a pending clip keeps its snapshot");
    }

    #[test]
    fn overlap_query() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _, _) = Store::open(dir.path(), &["c".to_string()]).unwrap();
        for (a, b) in [(0, 2000), (2000, 4000), (4000, 6000)] {
            let part = store.segment_dir("c").join(format!("{a}.part"));
            std::fs::write(&part, b"x").unwrap();
            store.add_segment("c", &part, a, b).unwrap();
        }
        let starts: Vec<u64> = store.segments_between("c", 2500, 4500).iter().map(|s| s.start_ms).collect();
        assert_eq!(starts, [2000, 4000]);
        assert_eq!(store.segments_between("c", 6000, 9000), vec![]);
        assert!(store.segment_dir("c").join("2000-4000.mp4").exists());
        assert_eq!(store.remove_segment("c", 2000), 1);
        assert_eq!(store.segment_count(), 2);
    }
}
