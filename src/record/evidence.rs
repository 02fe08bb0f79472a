//! Getting evidence off the box: the questions the HTTP API asks the recorder (which events and review
//! items it holds, which segments a clip needs, deleting an event), and the making of clips from the
//! answers.
//!
//! The recorder thread owns the store, so questions go to it over its queue with a reply channel and are
//! answered here ([`answer`]) from the index without touching video; the clip itself is then made by the
//! asking side ([`super::handle`]), on a blocking thread, from the segment files the answer named (see
//! [`super::cache`]).

use std::path::PathBuf;

use serde::Serialize;
use tokio::sync::oneshot;

use super::RecordError;
use super::stats::GAP_TOLERANCE_MS;
use super::store::{EventRef, Segment, Sighting, Store};

/// Which events (or review items) to list: all filters optional, times in ms since the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Overlapping `[from_ms, to_ms]`.
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl Filter {
    fn overlaps(&self, from: u64, to: u64) -> bool {
        self.from_ms.is_none_or(|f| to >= f) && self.to_ms.is_none_or(|t| from <= t)
    }
}

/// Consecutive or overlapping events of one camera, as one thing to look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReviewItem {
    /// `review-<id of its first event>`.
    pub id: String,
    pub camera: String,
    pub from_ms: u64,
    /// Unset while one of its events lasts.
    pub to_ms: Option<u64>,
    pub labels: Vec<String>,
    pub events: Vec<String>,
}

/// Groups events into review items: per camera, an event whose video overlaps or touches the item before
/// joins it, unless that item began `max_ms` or more before the event (a street busy all day still gives
/// items a person can watch).
pub fn review_items<'a>(events: impl IntoIterator<Item = &'a EventRef>, now_ms: u64, max_ms: u64) -> Vec<ReviewItem> {
    let mut evs: Vec<&EventRef> = events.into_iter().collect();
    evs.sort_by(|a, b| (&a.camera, a.from_ms, &a.id).cmp(&(&b.camera, b.from_ms, &b.id)));
    let mut out: Vec<(ReviewItem, u64)> = Vec::new();
    for e in evs {
        let to = e.video_end(now_ms);
        match out.last_mut() {
            Some((item, end)) if item.camera == e.camera && e.from_ms <= *end && e.from_ms < item.from_ms + max_ms => {
                *end = (*end).max(to);
                item.to_ms = if item.to_ms.is_none() || e.is_open() { None } else { Some(*end) };
                item.events.push(e.id.clone());
                if let Some(l) = e.label.as_ref().filter(|l| !item.labels.contains(l)) {
                    item.labels.push(l.clone());
                }
            }
            _ => out.push((
                ReviewItem {
                    id: format!("review-{}", e.id),
                    camera: e.camera.clone(),
                    from_ms: e.from_ms,
                    to_ms: e.to_ms,
                    labels: e.label.iter().cloned().collect(),
                    events: vec![e.id.clone()],
                },
                to,
            )),
        }
    }
    out.into_iter().map(|(item, _)| item).collect()
}

/// The video of a time span of one camera: what a clip or an export is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Names the file made from it: the same segments and span give the same name.
    pub name: String,
    pub camera: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub segments: Vec<Segment>,
}

impl Span {
    /// The span of `camera` in `[from_ms, to_ms]`, named after `what` (an event or review id, or `export`).
    pub fn of(store: &Store, what: &str, camera: &str, from_ms: u64, to_ms: u64) -> Self {
        let segments = store.segments_between(camera, from_ms, to_ms);
        let (first, last) = (segments.first().map_or(0, |s| s.start_ms), segments.last().map_or(0, |s| s.end_ms));
        let name = format!("{what}.{camera}.{from_ms}-{to_ms}.{first}-{last}-{}.mp4", segments.len());
        Self { name, camera: camera.to_string(), from_ms, to_ms, segments }
    }

    /// Stretches of `[from_ms, to_ms]` that no segment covers (longer than the tolerance).
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        gaps(self.from_ms, self.to_ms, &self.segments)
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// Stretches of `[from_ms, to_ms]` that `segments` (time order) leave uncovered, each longer than
/// [`GAP_TOLERANCE_MS`].
pub fn gaps(from_ms: u64, to_ms: u64, segments: &[Segment]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = from_ms;
    for s in segments {
        if s.start_ms > at + GAP_TOLERANCE_MS {
            out.push((at, s.start_ms.min(to_ms)));
        }
        at = at.max(s.end_ms);
    }
    if to_ms > at + GAP_TOLERANCE_MS {
        out.push((at, to_ms));
    }
    out
}

/// What a question to the recorder is answered with.
pub enum Ask {
    Events(Filter, oneshot::Sender<Vec<EventRef>>),
    Review(Filter, oneshot::Sender<Vec<ReviewItem>>),
    /// The span of an event or review item.
    Clip(String, oneshot::Sender<Result<Span, EvidenceError>>),
    Export {
        camera: String,
        from_ms: u64,
        to_ms: u64,
        reply: oneshot::Sender<Result<Span, EvidenceError>>,
    },
    Snapshot(String, oneshot::Sender<Result<SnapshotPlan, EvidenceError>>),
    /// Forget an ended event and free what only it held.
    Delete(String, oneshot::Sender<Result<Deleted, EvidenceError>>),
}

/// Where an event's snapshot comes from: the recorded frame of its best sighting (decoded on request, at
/// the stream's resolution), else the picture kept at detection resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPlan {
    /// Names the JPEG made: the same event and sighting give the same name.
    pub name: String,
    /// The segment holding the best sighting, and how far into it.
    pub frame: Option<(PathBuf, std::time::Duration, Sighting)>,
    pub fallback: Option<PathBuf>,
}

/// What deleting an event freed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deleted {
    pub id: String,
    pub segments: usize,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("no event or review item {0:?} is stored: list them with GET /api/events or /api/review")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("event {0:?} is still going on: it can be deleted once it ends")]
    Open(String),
    #[error("nothing is recorded for this span: the camera was offline, or its video was already evicted")]
    NoVideo,
    #[error("the span holds {bytes} bytes of video, more than record.clip_cache_bytes ({limit}): ask for a shorter span, or raise the limit")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("recording has stopped: perch is shutting down, or the recording directory could not be opened (see /status)")]
    Stopped,
    #[error("cannot make the clip: {0}")]
    Record(#[source] RecordError),
}

/// Answers a question from the store (on the recorder thread), with review items at most `review_max_ms`
/// long. `Delete` is the recorder's to answer.
pub fn answer(store: &Store, ask: Ask, now_ms: u64, review_max_ms: u64) -> Option<Ask> {
    match ask {
        Ask::Events(f, reply) => {
            let mut v: Vec<EventRef> = store
                .events()
                .filter(|e| f.camera.as_ref().is_none_or(|c| *c == e.camera))
                .filter(|e| f.label.as_ref().is_none_or(|l| e.label.as_ref() == Some(l)))
                .filter(|e| f.overlaps(e.start_ms, e.end_ms.unwrap_or(now_ms)))
                .cloned()
                .collect();
            v.sort_by(|a, b| b.start_ms.cmp(&a.start_ms).then_with(|| a.id.cmp(&b.id)));
            v.truncate(f.limit);
            let _ = reply.send(v);
        }
        Ask::Review(f, reply) => {
            let mut v: Vec<ReviewItem> = review_items(store.events(), now_ms, review_max_ms)
                .into_iter()
                .filter(|r| f.camera.as_ref().is_none_or(|c| *c == r.camera))
                .filter(|r| f.label.as_ref().is_none_or(|l| r.labels.contains(l)))
                .filter(|r| f.overlaps(r.from_ms, r.to_ms.unwrap_or(now_ms)))
                .collect();
            v.sort_by(|a, b| b.from_ms.cmp(&a.from_ms).then_with(|| a.id.cmp(&b.id)));
            v.truncate(f.limit);
            let _ = reply.send(v);
        }
        Ask::Clip(id, reply) => {
            let _ = reply.send(clip_span(store, &id, now_ms, review_max_ms));
        }
        Ask::Export { camera, from_ms, to_ms, reply } => {
            let r = if store.has_camera(&camera) {
                Ok(Span::of(store, "export", &camera, from_ms, to_ms))
            } else {
                Err(EvidenceError::BadRequest(format!("no camera {camera:?} is configured: name one of the [[camera]] ids")))
            };
            let _ = reply.send(r);
        }
        Ask::Snapshot(id, reply) => {
            let _ = reply.send(snapshot_plan(store, &id));
        }
        other @ Ask::Delete(..) => return Some(other),
    }
    None
}

fn snapshot_plan(store: &Store, id: &str) -> Result<SnapshotPlan, EvidenceError> {
    let e = store.event(id).ok_or_else(|| EvidenceError::NotFound(id.to_string()))?;
    let frame = e.best.and_then(|b| {
        let seg = store.segments_between(&e.camera, b.at_ms, b.at_ms + 1).into_iter().next()?;
        Some((seg.path.clone(), std::time::Duration::from_millis(b.at_ms.saturating_sub(seg.start_ms)), b))
    });
    let fallback = e.snapshot_bytes.map(|_| store.event_path(&e.id, "jpg"));
    if frame.is_none() && fallback.is_none() {
        return Err(EvidenceError::BadRequest(format!("event {id:?} has no snapshot: its best sighting is not recorded (yet), and no picture was kept")));
    }
    let name = format!("{}.{}.jpg", e.id, e.best.map_or(0, |b| b.at_ms));
    Ok(SnapshotPlan { name, frame, fallback })
}

/// The span of an event, or of a review item (`review-<first event id>`).
fn clip_span(store: &Store, id: &str, now_ms: u64, review_max_ms: u64) -> Result<Span, EvidenceError> {
    if let Some(e) = store.event(id) {
        return Ok(Span::of(store, &e.id, &e.camera, e.from_ms, e.video_end(now_ms)));
    }
    if id.starts_with("review-") {
        let items = review_items(store.events(), now_ms, review_max_ms);
        if let Some(r) = items.iter().find(|r| r.id == id) {
            return Ok(Span::of(store, &r.id, &r.camera, r.from_ms, r.to_ms.unwrap_or(now_ms)));
        }
    }
    Err(EvidenceError::NotFound(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, camera: &str, from_ms: u64, to_ms: Option<u64>, label: &str) -> EventRef {
        let start = EventRef::starting(id.into(), camera.into(), "event", Some(label.into()), from_ms + 5000, from_ms);
        EventRef { end_ms: to_ms.map(|t| t - 10_000), to_ms, ..start }
    }

    #[test]
    fn overlapping_events_of_a_camera_form_one_review_item() {
        let events = [
            ev("a", "gate", 0, Some(20_000), "person"),
            ev("b", "gate", 15_000, Some(40_000), "car"),
            ev("c", "gate", 40_000, Some(50_000), "person"), // touches b
            ev("d", "gate", 60_000, Some(70_000), "person"), // apart
            ev("e", "yard", 10_000, None, "dog"),            // another camera, still open
        ];
        let items = review_items(&events, 100_000, u64::MAX);
        let item = |id: &str, from_ms, to_ms, events: &[&str], labels: &[&str]| ReviewItem {
            id: id.into(),
            camera: if id == "review-e" { "yard" } else { "gate" }.into(),
            from_ms,
            to_ms,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            events: events.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            items,
            vec![
                item("review-a", 0, Some(50_000), &["a", "b", "c"], &["person", "car"]),
                item("review-d", 60_000, Some(70_000), &["d"], &["person"]),
                item("review-e", 10_000, None, &["e"], &["dog"]),
            ]
        );
        // An open event keeps its item open, and reaches up to now for what joins it.
        let events = [ev("a", "gate", 0, None, "person"), ev("b", "gate", 90_000, Some(95_000), "car")];
        let items = review_items(&events, 100_000, u64::MAX);
        assert_eq!((items.len(), items[0].to_ms, items[0].events.len()), (1, None, 2));
        // Busy all day: an item is cut once it is `max_ms` long.
        let events: Vec<EventRef> = (0..10).map(|i| ev(&format!("e{i}"), "gate", i * 10_000, Some(i * 10_000 + 15_000), "person")).collect();
        let items = review_items(&events, 200_000, 30_000);
        let sizes: Vec<usize> = items.iter().map(|r| r.events.len()).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
    }

    fn seg(start_ms: u64, end_ms: u64) -> Segment {
        Segment { start_ms, end_ms, bytes: 1, path: PathBuf::new() }
    }

    #[test]
    fn gaps_inside_a_span_are_found() {
        assert_eq!(gaps(1000, 9000, &[seg(0, 4000), seg(4040, 9500)]), vec![], "frame-sized pauses are no gaps");
        assert_eq!(gaps(1000, 9000, &[seg(2000, 4000), seg(6000, 7000)]), vec![(1000, 2000), (4000, 6000), (7000, 9000)]);
        assert_eq!(gaps(1000, 9000, &[]), vec![(1000, 9000)]);
    }
}
