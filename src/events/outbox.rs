//! The durable outbox: every event is on disk before anyone tries to send it, and leaves the disk only after
//! the broker acknowledged it.
//!
//! One sled tree holds the queue (`q` + big-endian sequence number → payload) and the counters (`m:…`),
//! so an append — the entries, the next sequence number and the eviction count — is one atomic batch, made
//! durable by one flush however many events it carries (group commit). Sequence numbers are per device and
//! only ever grow, across restarts and power cuts. The queue is bounded in bytes: when full, the oldest
//! entries are evicted, and the eviction is counted and persisted, never silent.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled's page cache. Its default is 1 GiB, and it fills with every page written: with the broker away
/// for hours, a box's memory would grow with its backlog (measured: +160 MB/h with four busy cameras and
/// no broker). The outbox appends at one end and reads at the other, so a few MB hold both ends.
const CACHE_BYTES: u64 = 8 << 20;

/// Key prefix of queued entries.
const QUEUE: &[u8] = b"q";
const NEXT_SEQ: &[u8] = b"m:next_seq";
const EVICTED: &[u8] = b"m:evicted";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the event outbox at {path}: {source} (check that the state dir is writable and not used by another perch)")]
    Open { path: PathBuf, source: sled::Error },
    #[error("event outbox write failed: {0} (is the disk full or read-only?)")]
    Write(#[from] sled::Error),
    #[error("event outbox entry {0} is corrupt")]
    Corrupt(String),
}

fn queue_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = QUEUE[0];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number of a queue key.
fn seq_of(key: &[u8]) -> Result<u64, OutboxError> {
    key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(|| OutboxError::Corrupt(format!("key {key:?}")))
}

fn read_u64(v: Option<sled::IVec>) -> Result<u64, OutboxError> {
    match v {
        None => Ok(0),
        Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| OutboxError::Corrupt("counter".into())),
    }
}

/// What the outbox holds in memory besides sled: counters kept in step with the batches written.
#[derive(Debug)]
struct State {
    next_seq: u64,
    evicted: u64,
    bytes: u64,
    /// Sequence numbers and sizes of the queued entries, oldest first (for eviction without a disk scan).
    sizes: std::collections::VecDeque<(u64, u64)>,
}

/// The open database. sled keeps the first I/O error it meets (a full disk) and fails every later
/// operation with it, so after a failed write the database is closed and opened again before the next one:
/// what was flushed before is intact, and appends work again as soon as there is room.
struct Store {
    db: sled::Db,
    tree: sled::Tree,
}

/// A durable, bounded, ordered queue of events.
pub struct Outbox {
    dir: PathBuf,
    /// `None` after a failed write, until it is reopened.
    store: std::sync::RwLock<Option<Store>>,
    max_bytes: u64,
    state: Mutex<State>,
}

/// Counters for health and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    pub depth: u64,
    pub bytes: u64,
    pub evicted: u64,
    pub next_seq: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, bounded to `max_bytes` of payload.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, OutboxError> {
        // The database's file lock can outlive a previous handle briefly (sled's flusher thread, or the
        // previous process still exiting under a quick restart): retry for a second before giving up.
        let mut tries = 0;
        let store = loop {
            match Self::open_store(dir) {
                Ok(store) => break store,
                Err(OutboxError::Open { source: sled::Error::Io(e), .. }) if tries < 20 => {
                    tries += 1;
                    tracing::debug!("outbox busy ({e}); retrying");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        let state = Self::load(&store.tree)?;
        Ok(Self { dir: dir.to_path_buf(), store: std::sync::RwLock::new(Some(store)), max_bytes, state: Mutex::new(state) })
    }

    fn open_store(dir: &Path) -> Result<Store, OutboxError> {
        let open_err = |source| OutboxError::Open { path: dir.to_path_buf(), source };
        let db = sled::Config::new().path(dir).mode(sled::Mode::LowSpace).cache_capacity(CACHE_BYTES).open().map_err(open_err)?;
        let tree = db.open_tree("outbox").map_err(open_err)?;
        Ok(Store { db, tree })
    }

    /// Runs `f` on the open database, reopening it first after a failed write. A failure of `f` closes
    /// it, so the next call starts from what is on disk.
    fn with_store<R>(&self, f: impl FnOnce(&Store) -> Result<R, OutboxError>) -> Result<R, OutboxError> {
        {
            let guard = self.store.read().unwrap_or_else(|e| e.into_inner());
            if let Some(store) = guard.as_ref() {
                let r = f(store);
                if r.is_ok() {
                    return r;
                }
                drop(guard);
                // Close it: the next call reopens (sled would fail every later call with this error).
                *self.store.write().unwrap_or_else(|e| e.into_inner()) = None;
                return r;
            }
        }
        let mut guard = self.store.write().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(Self::open_store(&self.dir)?);
            tracing::info!(dir = %self.dir.display(), "event outbox reopened after a failed write");
        }
        let r = f(guard.as_ref().expect("just opened"));
        if r.is_err() {
            *guard = None;
        }
        r
    }

    /// Reads the counters and the queue index from disk.
    fn load(tree: &sled::Tree) -> Result<State, OutboxError> {
        let mut sizes = std::collections::VecDeque::new();
        let mut bytes = 0;
        let mut last = None;
        for item in tree.scan_prefix(QUEUE) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            sizes.push_back((seq, v.len() as u64));
            bytes += v.len() as u64;
            last = Some(seq);
        }
        // The stored counter is authoritative; the last key guards against a counter that lags behind.
        let next_seq = read_u64(tree.get(NEXT_SEQ)?)?.max(last.map_or(0, |s| s + 1)).max(1);
        let evicted = read_u64(tree.get(EVICTED)?)?;
        Ok(State { next_seq, evicted, bytes, sizes })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one payload per item, each built from the sequence number it is given, durably (one flush
    /// for the whole batch). Returns the sequence numbers. Evicts the oldest entries if the bound is passed.
    pub fn append_batch<T>(&self, items: &[T], build: impl Fn(u64, &T) -> Vec<u8>) -> Result<Vec<u64>, OutboxError> {
        let mut st = self.state();
        let mut batch = sled::Batch::default();
        let mut seqs = Vec::with_capacity(items.len());
        let mut next = st.next_seq;
        let mut added = Vec::with_capacity(items.len());
        for item in items {
            let payload = build(next, item);
            added.push((next, payload.len() as u64));
            batch.insert(&queue_key(next), payload);
            seqs.push(next);
            next += 1;
        }
        // Evict the oldest (possibly some of this batch) until the payload fits the bound.
        // Nothing in memory changes until the batch is on disk (a full disk leaves the view as it was).
        let mut bytes = st.bytes + added.iter().map(|a| a.1).sum::<u64>();
        let mut evicted = 0;
        for &(seq, size) in st.sizes.iter().chain(&added) {
            if bytes <= self.max_bytes {
                break;
            }
            batch.remove(&queue_key(seq));
            bytes -= size;
            evicted += 1;
        }
        batch.insert(NEXT_SEQ, &next.to_be_bytes());
        if evicted > 0 {
            batch.insert(EVICTED, &(st.evicted + evicted).to_be_bytes());
        }
        // On an error the caller retries; the next append starts from this same view.
        self.with_store(|s| Ok(s.tree.apply_batch(batch).and_then(|_| s.db.flush().map(|_| ()))?))?;
        if evicted > 0 {
            tracing::warn!(evicted, total_evicted = st.evicted + evicted, max_bytes = self.max_bytes, "event outbox full: oldest events evicted");
        }
        st.next_seq = next;
        st.evicted += evicted;
        st.bytes = bytes;
        let from_queue = (evicted as usize).min(st.sizes.len());
        st.sizes.drain(..from_queue);
        st.sizes.extend(added.into_iter().skip(evicted as usize - from_queue));
        Ok(seqs)
    }

    /// Appends one payload durably; see [`Self::append_batch`].
    pub fn append(&self, build: impl Fn(u64) -> Vec<u8>) -> Result<u64, OutboxError> {
        Ok(self.append_batch(&[()], |seq, _| build(seq))?[0])
    }

    /// Up to `limit` queued entries with a sequence number above `after`, oldest first.
    pub fn pending(&self, after: Option<u64>, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, OutboxError> {
        let start = queue_key(after.map_or(0, |s| s.saturating_add(1)));
        self.with_store(|s| {
            let mut out = Vec::new();
            for item in s.tree.range(start..).take(limit) {
                let (k, v) = item?;
                if k.first() != Some(&QUEUE[0]) {
                    break;
                }
                let seq = seq_of(&k)?;
                out.push((seq, v.to_vec()));
            }
            Ok(out)
        })
    }

    /// Removes an entry the broker acknowledged. Acknowledging an entry that is gone (evicted, or a
    /// duplicate acknowledgement) is not an error.
    pub fn ack(&self, seq: u64) -> Result<(), OutboxError> {
        let mut st = self.state();
        if let Some(old) = self.with_store(|s| Ok(s.tree.remove(queue_key(seq))?))? {
            st.bytes -= old.len() as u64;
            if let Some(pos) = st.sizes.iter().position(|(s, _)| *s == seq) {
                st.sizes.remove(pos);
            }
        }
        Ok(())
    }

    /// Makes acknowledgements durable (they need not be flushed one by one: a lost ack only means a resend).
    pub fn flush(&self) -> Result<(), OutboxError> {
        self.with_store(|s| Ok(s.db.flush().map(|_| ())?))
    }

    /// Disk space the outbox may need at its bound (sled's log holds up to about twice the payload,
    /// plus its own files): what other writers on the same disk must leave free. Recording keeps its
    /// free-space watermark at least this high, so video can never take the room events need.
    pub fn reserve_bytes(&self) -> u64 {
        2 * self.max_bytes + (16 << 20)
    }

    pub fn stats(&self) -> OutboxStats {
        let st = self.state();
        OutboxStats { depth: st.sizes.len() as u64, bytes: st.bytes, evicted: st.evicted, next_seq: st.next_seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64) -> Vec<u8> {
        format!("{{\"seq\":{seq:08},\"pad\":\"{}\"}}", "x".repeat(80)).into_bytes()
    }

    #[test]
    fn appends_in_order_and_removes_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        let seqs = o.append_batch(&[1, 2, 3], |seq, _| payload(seq)).unwrap();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(o.append(payload).unwrap(), 4);
        let p = o.pending(None, 10).unwrap();
        assert_eq!(p.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(p[1].1, payload(2));
        o.ack(2).unwrap();
        o.ack(2).unwrap();
        assert_eq!(o.pending(None, 10).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert_eq!(o.pending(Some(3), 10).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), vec![4]);
        assert_eq!(o.stats().depth, 3);
    }

    #[test]
    fn survives_reopen_and_never_reuses_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path(), 1 << 20).unwrap();
            o.append_batch(&[(); 5], |seq, _| payload(seq)).unwrap();
            for s in 1..=5 {
                o.ack(s).unwrap();
            }
            o.append(payload).unwrap();
            o.flush().unwrap();
        }
        let o = Outbox::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(o.pending(None, 10).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), vec![6]);
        assert_eq!(o.append(payload).unwrap(), 7, "sequence continues after a restart, even past acked entries");
        let s = o.stats();
        assert_eq!((s.depth, s.bytes), (2, payload(6).len() as u64 + payload(7).len() as u64));
    }

    #[test]
    fn the_byte_bound_evicts_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = payload(1).len() as u64;
        let o = Outbox::open(dir.path(), one * 10).unwrap();
        o.append_batch(&[(); 25], |seq, _| payload(seq)).unwrap();
        let left: Vec<u64> = o.pending(None, 100).unwrap().iter().map(|e| e.0).collect();
        assert_eq!(left, (16..=25).collect::<Vec<_>>(), "the newest ten are kept");
        assert_eq!(o.stats().evicted, 15);
        drop(o);
        let o = Outbox::open(dir.path(), one * 10).unwrap();
        assert_eq!(o.stats().evicted, 15, "the eviction count is persisted");
        o.append(payload).unwrap();
        assert_eq!(o.stats().evicted, 16);
        assert_eq!(o.pending(None, 100).unwrap().first().unwrap().0, 17);
    }
}
