//! The HTTP side's handle on the recorder: asks it over its queue ([`super::evidence`]), then makes the
//! clip from the segments the answer named, on a blocking thread. A segment that retention deletes
//! meanwhile is still readable through the file the muxer opened, or is left out and reported as a gap.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::RecordError;
use super::cache::ClipCache;
use super::clip;
use crate::util::fs::write_atomic;

/// JPEG quality of snapshots decoded from the recording.
const SNAPSHOT_QUALITY: u8 = 85;
use super::evidence::{Ask, Deleted, EvidenceError, Filter, ReviewItem, Span, gaps};
use super::recorder::RecorderMsg;
use super::store::{EventRef, Segment};

/// A clip or export ready to serve.
#[derive(Debug, Clone)]
pub struct Served {
    pub path: PathBuf,
    pub span: Span,
    pub gaps: Vec<(u64, u64)>,
}

/// The HTTP side's handle on the recorder.
pub struct Evidence {
    /// Weak: the HTTP server must not keep the recorder alive at shutdown.
    tx: mpsc::WeakSender<RecorderMsg>,
    cache: Arc<ClipCache>,
}

impl Evidence {
    pub fn new(tx: &mpsc::Sender<RecorderMsg>, cache: Arc<ClipCache>) -> Self {
        Self { tx: tx.downgrade(), cache }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Ask) -> Result<T, EvidenceError> {
        let tx = self.tx.upgrade().ok_or(EvidenceError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        tx.send(RecorderMsg::Ask(make(reply))).await.map_err(|_| EvidenceError::Stopped)?;
        rx.await.map_err(|_| EvidenceError::Stopped)
    }

    pub async fn events(&self, f: Filter) -> Result<Vec<EventRef>, EvidenceError> {
        self.ask(|r| Ask::Events(f, r)).await
    }

    pub async fn review(&self, f: Filter) -> Result<Vec<ReviewItem>, EvidenceError> {
        self.ask(|r| Ask::Review(f, r)).await
    }

    /// The snapshot of an event: its best sighting decoded from the recording at the stream's resolution
    /// (made once, then cached), else the picture kept at detection resolution.
    pub async fn snapshot(&self, id: &str) -> Result<PathBuf, EvidenceError> {
        let plan = self.ask(|r| Ask::Snapshot(id.to_string(), r)).await??;
        if let Some((segment, offset, best)) = plan.frame.clone() {
            let (cache, name) = (self.cache.clone(), plan.name.clone());
            let made = tokio::task::spawn_blocking(move || {
                cache.get_or_make(&name, |out| {
                    let jpeg = clip::snapshot_from_segment(&segment, offset, best.bbox, best.frame_size, SNAPSHOT_QUALITY)?;
                    write_atomic(out, &jpeg).map_err(|e| RecordError::Io { what: format!("cannot write {}", out.display()), source: e })?;
                    Ok((jpeg.len() as u64, ()))
                })
            })
            .await;
            match made {
                Ok(Ok((path, _))) => return Ok(path),
                Ok(Err(e)) => tracing::warn!(event = %id, "the snapshot could not be decoded from the recording ({e}); serving the detection-resolution one"),
                Err(_) => return Err(EvidenceError::Stopped),
            }
        }
        plan.fallback.ok_or(EvidenceError::NoVideo)
    }

    pub async fn delete(&self, id: &str) -> Result<Deleted, EvidenceError> {
        self.ask(|r| Ask::Delete(id.to_string(), r)).await?
    }

    /// The clip of an event or review item.
    pub async fn clip(&self, id: &str) -> Result<Served, EvidenceError> {
        let span = self.ask(|r| Ask::Clip(id.to_string(), r)).await??;
        self.make(span).await
    }

    /// Any span of one camera that the store holds.
    pub async fn export(&self, camera: &str, from_ms: u64, to_ms: u64) -> Result<Served, EvidenceError> {
        let span = self.ask(|reply| Ask::Export { camera: camera.to_string(), from_ms, to_ms, reply }).await??;
        self.make(span).await
    }

    async fn make(&self, span: Span) -> Result<Served, EvidenceError> {
        if span.segments.is_empty() {
            return Err(EvidenceError::NoVideo);
        }
        if span.bytes() > self.cache.limit() {
            return Err(EvidenceError::TooLarge { bytes: span.bytes(), limit: self.cache.limit() });
        }
        let cache = self.cache.clone();
        tokio::task::spawn_blocking(move || {
            let paths: Vec<PathBuf> = span.segments.iter().map(|s| s.path.clone()).collect();
            let (path, used) = cache.clip(&span.name, &paths).map_err(|e| match e {
                RecordError::NoSegments => EvidenceError::NoVideo,
                e => EvidenceError::Record(e),
            })?;
            // Segments the muxer could not read count as missing too.
            let used: Vec<Segment> = match used {
                Some(used) => used.iter().map(|&i| span.segments[i].clone()).collect(),
                None => span.segments.clone(),
            };
            let gaps = gaps(span.from_ms, span.to_ms, &used);
            Ok(Served { path, span, gaps })
        })
        .await
        .map_err(|_| EvidenceError::Stopped)?
    }
}
