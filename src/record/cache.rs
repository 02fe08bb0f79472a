//! Clips and exports, made on request from segments (by copy) and kept in a bounded cache.
//!
//! A player fetches a clip in several range requests, and the same clip is often downloaded more than once:
//! making it each time would cost a pass over its segments per request, and could hand one player two
//! different files (the muxer stamps its creation time). So the file made is kept under `cache/`, named by
//! what went into it (the segments and the requested span), and reused while it is there. The cache never
//! holds more than `clip_cache_bytes`: the least recently used files go first. A file unused for
//! [`IDLE`] goes too, so at rest the store holds one copy of the video. The cache is emptied at start, and
//! whenever retention needs room (everything in it can be made again).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use super::RecordError;
use super::clip;

/// A cached clip unused this long is deleted: a player has long finished with it.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(600);

pub struct ClipCache {
    dir: PathBuf,
    limit: u64,
    /// Held while a clip is made or files are evicted: two requests for the same clip must not write the
    /// same file at once.
    lock: Mutex<()>,
    bytes: AtomicU64,
    pub made: AtomicU64,
    pub hits: AtomicU64,
}

impl ClipCache {
    /// Opens `dir`, removing whatever an earlier run left there.
    pub fn open(dir: &Path, limit: u64) -> Result<Self, RecordError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| RecordError::Io { what: format!("cannot create {}", dir.display()), source: e })?;
        Ok(Self { dir: dir.to_path_buf(), limit, lock: Mutex::new(()), bytes: AtomicU64::new(0), made: AtomicU64::new(0), hits: AtomicU64::new(0) })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The file `name` (safe characters only, no `/`) from the cache, or made now by `make`, given the
    /// path to write (atomically) and returning the bytes written and what else it learnt (`None` when the
    /// file was already there). Blocking: call it off the async runtime. The file stays readable by
    /// whoever opened it even if the cache evicts it afterwards.
    pub fn get_or_make<T>(&self, name: &str, make: impl FnOnce(&Path) -> Result<(u64, T), RecordError>) -> Result<(PathBuf, Option<T>), RecordError> {
        debug_assert!(!name.contains('/'));
        let path = self.dir.join(name);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            // Marks it recently used, for eviction.
            let _ = f.set_modified(SystemTime::now());
            self.hits.fetch_add(1, Relaxed);
            return Ok((path, None));
        }
        let (bytes, made) = make(&path)?;
        self.made.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.trim_locked(self.limit, Some(&path));
        Ok((path, Some(made)))
    }

    /// The clip `name` (ending in `.mp4`) of `segments`, with the indexes of the segments that went into it
    /// when it was made now (see [`clip::assemble`]).
    pub fn clip(&self, name: &str, segments: &[PathBuf]) -> Result<(PathBuf, Option<Vec<usize>>), RecordError> {
        debug_assert!(name.ends_with(".mp4"));
        self.get_or_make(name, |path| clip::assemble(segments, path).map(|a| (a.bytes, a.used)))
    }

    /// Evicts least recently used files until the cache holds at most `limit` bytes; returns the bytes
    /// freed.
    pub fn trim(&self, limit: u64) -> u64 {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.trim_locked(limit, None)
    }

    /// Deletes files unused for `idle`; returns the bytes freed.
    pub fn expire(&self, idle: std::time::Duration) -> u64 {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let cutoff = SystemTime::now() - idle;
        self.trim_where(|modified| modified < cutoff)
    }

    /// The cached files, least recently used first: (last use, bytes, path).
    fn files(&self) -> Vec<(SystemTime, u64, PathBuf)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), e.path()))
            })
            .collect();
        files.sort();
        files
    }

    fn trim_where(&self, old: impl Fn(SystemTime) -> bool) -> u64 {
        let (mut freed, mut total) = (0, 0);
        for (modified, len, path) in self.files() {
            if old(modified) && std::fs::remove_file(&path).is_ok() {
                freed += len;
            } else {
                total += len;
            }
        }
        self.bytes.store(total, Relaxed);
        freed
    }

    fn trim_locked(&self, limit: u64, keep: Option<&Path>) -> u64 {
        let files = self.files();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let mut freed = 0;
        for (_, len, path) in files {
            if total <= limit {
                break;
            }
            if Some(path.as_path()) == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
                freed += len;
            }
        }
        self.bytes.store(total, Relaxed);
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_evicts_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ClipCache::open(&dir.path().join("cache"), 1000).unwrap();
        let t0 = SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, name) in ["a.mp4", "b.mp4", "c.mp4"].iter().enumerate() {
            let f = std::fs::File::create(dir.path().join("cache").join(name)).unwrap();
            f.set_len(400).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(10 * i as u64)).unwrap();
        }
        // "a" is the oldest, but was used last.
        std::fs::File::options().append(true).open(dir.path().join("cache/a.mp4")).unwrap().set_modified(SystemTime::now()).unwrap();
        assert_eq!(cache.trim(800), 400);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path().join("cache")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["a.mp4", "c.mp4"]);
        assert_eq!(cache.bytes(), 800);
        // "c" was last used 80 s ago, "a" just now.
        assert_eq!(cache.expire(std::time::Duration::from_secs(60)), 400);
        assert_eq!(cache.bytes(), 400);
        assert_eq!(cache.trim(0), 400);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn open_empties_what_an_earlier_run_left() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        std::fs::write(dir.path().join("cache/old.mp4"), b"x").unwrap();
        let cache = ClipCache::open(&dir.path().join("cache"), 1000).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("cache")).unwrap().count(), 0);
        assert_eq!(cache.bytes(), 0);
    }
}
