//! The evidence API: what the recorder holds, and its video, over HTTP.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/events?camera&label&from&to&limit` | recorded events (newest first), each with its clip and snapshot URL |
//! | `GET /api/review?camera&label&from&to&limit` | review items: consecutive or overlapping events of a camera |
//! | `GET /api/clips/<event or review id>.mp4` | the clip, made from the segments by copy; HTTP ranges, so a `<video>` seeks |
//! | `GET /api/snapshots/<event id>.jpg` | the event's snapshot |
//! | `GET /api/export.mp4?camera&from&to` | any span the store holds; its gaps in `X-Perch-Gaps` |
//! | `DELETE /api/events/<id>` | forgets an ended event and frees the video only it held |
//!
//! Times (`from`, `to`) are RFC 3339 (`2026-12-01T10:00:00Z`) or ms since the epoch. Clips and exports say
//! what they cover in `X-Perch-Start` / `X-Perch-End` (the requested span) and `X-Perch-Gaps` (the missing
//! stretches inside it, `start/end` pairs in RFC 3339, comma-separated; empty when complete). Every route
//! takes the bearer token of `/status`, or a loopback client under a loopback name (the status page's
//! rule: its review list plays clips in the page, and a `<video>` cannot send a token).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::auth::{Peer, Refusal, Token};
use crate::events::schema::rfc3339;
use crate::record::Evidence;
use crate::record::evidence::{EvidenceError, Filter, ReviewItem};
use crate::record::handle::Served;
use crate::record::store::EventRef;

/// Events or review items listed when the request names no `limit`, and the most it may name.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

#[derive(Clone)]
struct Api {
    evidence: Option<Arc<Evidence>>,
    token: Token,
}

/// The `/api` routes; without a recorder (no camera records) they answer 404 saying so.
pub fn router<S: Clone + Send + Sync + 'static>(evidence: Option<Arc<Evidence>>, token: Token) -> Router<S> {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/events/{id}", axum::routing::delete(delete))
        .route("/api/review", get(review))
        .route("/api/clips/{file}", get(clip))
        .route("/api/snapshots/{file}", get(snapshot))
        .route("/api/export.mp4", get(export))
        .with_state(Api { evidence, token })
}

/// The caller may ask, and a recorder runs.
fn admit(api: &Api, Peer(peer): &Peer, headers: &HeaderMap) -> Result<Arc<Evidence>, Refusal> {
    api.token.check_or_loopback(peer, headers)?;
    api.evidence.clone().ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "no camera records: set [camera.record] enabled = true on an RTSP or file camera"))
}

fn refuse(e: EvidenceError) -> Refusal {
    let code = match &e {
        EvidenceError::NotFound(_) | EvidenceError::NoVideo => StatusCode::NOT_FOUND,
        EvidenceError::BadRequest(_) => StatusCode::BAD_REQUEST,
        EvidenceError::Open(_) => StatusCode::CONFLICT,
        EvidenceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        EvidenceError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        EvidenceError::Record(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!("http: {e}");
    }
    Refusal::new(code, e.to_string())
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, msg)
}

/// Parses the query string; `allowed` names every key the route takes.
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, Refusal> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(bad(format!("unknown parameter {k:?}: this route takes {}", allowed.join(", "))));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(out)
}

/// RFC 3339 or ms since the epoch.
fn time(q: &HashMap<String, String>, key: &str) -> Result<Option<u64>, Refusal> {
    let Some(v) = q.get(key) else { return Ok(None) };
    crate::util::parse_time(v).map(Some).ok_or_else(|| bad(format!("{key}={v:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z) or ms since the epoch")))
}

fn filter(raw: Option<&str>) -> Result<Filter, Refusal> {
    let q = query(raw, &["camera", "label", "from", "to", "limit"])?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| bad(format!("limit={v:?}: use 1..={MAX_LIMIT}")))?,
    };
    Ok(Filter { camera: q.get("camera").cloned(), label: q.get("label").cloned(), from_ms: time(&q, "from")?, to_ms: time(&q, "to")?, limit })
}

fn at(ms: u64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// An event as the API lists it.
#[derive(Serialize)]
struct EventView<'a> {
    id: &'a str,
    camera: &'a str,
    kind: &'a str,
    label: Option<&'a str>,
    start: String,
    end: Option<String>,
    /// The video it holds (with pre- and post-roll); the end is unset while it grows (the event lasts and
    /// its object moves).
    video_start: String,
    video_end: Option<String>,
    open: bool,
    /// Its object stands still (a parked car): its video ends where it stopped, plus post-roll.
    stationary: bool,
    interrupted: bool,
    clip: String,
    snapshot: Option<String>,
}

impl<'a> From<&'a EventRef> for EventView<'a> {
    fn from(e: &'a EventRef) -> Self {
        Self {
            id: &e.id,
            camera: &e.camera,
            kind: &e.kind,
            label: e.label.as_deref(),
            start: at(e.start_ms),
            end: e.end_ms.map(at),
            video_start: at(e.from_ms),
            video_end: e.to_ms.or(e.still_to_ms).map(at),
            open: e.is_open(),
            stationary: e.is_open() && e.still_to_ms.is_some(),
            interrupted: e.interrupted,
            clip: format!("/api/clips/{}.mp4", e.id),
            snapshot: e.snapshot_bytes.map(|_| format!("/api/snapshots/{}.jpg", e.id)),
        }
    }
}

#[derive(Serialize)]
struct ReviewView<'a> {
    #[serde(flatten)]
    item: &'a ReviewItem,
    start: String,
    end: Option<String>,
    clip: String,
}

async fn events(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Response, Refusal> {
    let ev = admit(&api, &peer, &headers)?;
    let list = ev.events(filter(raw.as_deref())?).await.map_err(refuse)?;
    Ok(axum::Json(serde_json::json!({ "events": list.iter().map(EventView::from).collect::<Vec<_>>() })).into_response())
}

async fn review(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Result<Response, Refusal> {
    let ev = admit(&api, &peer, &headers)?;
    let items = ev.review(filter(raw.as_deref())?).await.map_err(refuse)?;
    let view: Vec<ReviewView> =
        items.iter().map(|item| ReviewView { item, start: at(item.from_ms), end: item.to_ms.map(at), clip: format!("/api/clips/{}.mp4", item.id) }).collect();
    Ok(axum::Json(serde_json::json!({ "review": view })).into_response())
}

async fn clip(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>, Path(file): Path<String>, req: Request) -> Result<Response, Refusal> {
    let ev = admit(&api, &peer, req.headers())?;
    let id = file.strip_suffix(".mp4").ok_or_else(|| bad(format!("{file:?}: clips are <event or review id>.mp4")))?;
    let served = ev.clip(id).await.map_err(refuse)?;
    Ok(serve(served, req).await)
}

async fn export(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>, RawQuery(raw): RawQuery, req: Request) -> Result<Response, Refusal> {
    let ev = admit(&api, &peer, req.headers())?;
    let q = query(raw.as_deref(), &["camera", "from", "to"])?;
    let camera = q.get("camera").ok_or_else(|| bad("camera is missing: name the camera to export, e.g. ?camera=gate&from=…&to=…"))?;
    let (from, to) = match (time(&q, "from")?, time(&q, "to")?) {
        (Some(f), Some(t)) if f < t => (f, t),
        (Some(_), Some(_)) => return Err(bad("from must be before to")),
        _ => return Err(bad("from and to are both needed: the span to export")),
    };
    let served = ev.export(camera, from, to).await.map_err(refuse)?;
    Ok(serve(served, req).await)
}

/// Serves a clip file with ranges and conditional requests (tower-http), and says what it covers.
async fn serve(served: Served, req: Request) -> Response {
    let mut res = match ServeFile::new_with_mime(&served.path, &mime_mp4()).oneshot(req).await {
        Ok(r) => r.map(axum::body::Body::new),
        Err(e) => match e {},
    };
    let gaps: Vec<String> = served.gaps.iter().map(|&(a, b)| format!("{}/{}", at(a), at(b))).collect();
    let h = res.headers_mut();
    for (name, value) in [("x-perch-start", at(served.span.from_ms)), ("x-perch-end", at(served.span.to_ms)), ("x-perch-gaps", gaps.join(","))] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    res
}

fn mime_mp4() -> mime::Mime {
    "video/mp4".parse().expect("a valid MIME type")
}

async fn snapshot(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>, Path(file): Path<String>, req: Request) -> Result<Response, Refusal> {
    let ev = admit(&api, &peer, req.headers())?;
    let id = file.strip_suffix(".jpg").ok_or_else(|| bad(format!("{file:?}: snapshots are <event id>.jpg")))?;
    let path = ev.snapshot(id).await.map_err(refuse)?;
    match ServeFile::new_with_mime(&path, &mime::IMAGE_JPEG).oneshot(req).await {
        Ok(r) => Ok(r.map(axum::body::Body::new).into_response()),
        Err(e) => match e {},
    }
}

async fn delete(State(api): State<Api>, ConnectInfo(peer): ConnectInfo<Peer>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, Refusal> {
    let ev = admit(&api, &peer, &headers)?;
    Ok(axum::Json(ev.delete(&id).await.map_err(refuse)?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_name_their_mistakes() {
        let f = filter(Some("camera=gate&from=2026-12-01T10:00:00Z&to=1796119300000&limit=5")).unwrap();
        assert_eq!(f.camera.as_deref(), Some("gate"));
        assert_eq!(f.from_ms, Some(1_796_119_200_000));
        assert_eq!((f.to_ms, f.limit), (Some(1_796_119_300_000), 5));
        assert_eq!(filter(None).unwrap().limit, DEFAULT_LIMIT);
        for (raw, says) in [("cam=gate", "unknown parameter \"cam\""), ("from=yesterday", "RFC 3339"), ("limit=0", "use 1..=")] {
            let r = filter(Some(raw)).unwrap_err();
            assert_eq!(r.code, StatusCode::BAD_REQUEST, "{raw}");
            assert!(r.message.contains(says), "{raw}: {}", r.message);
        }
    }
}
