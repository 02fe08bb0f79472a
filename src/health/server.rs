//! The HTTP server (axum, HTTP/1.1 only): routes, the bearer check, and the loopback-only status page.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /health` | none | `ok`: the process answers (liveness) |
//! | `GET /ready` | none | 200 when every enabled camera delivers frames and the detector is ready, else 503 naming what is not |
//! | `GET /status` | bearer token | the detailed JSON status |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /`, `/page.json`, `/frame/{camera}` | loopback clients only | the status page, its data, each camera's latest picture |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Handles, metrics, page};
use crate::config::Config;

/// How often the measured rates (fps) are updated.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Wait before trying to listen again when the address is taken.
const REBIND_DELAY: Duration = Duration::from_secs(10);

struct Server {
    h: Handles,
    /// SHA-256 of the bearer token; `None` when no token could be loaded (then `/status` refuses everyone).
    token: Option<[u8; 32]>,
}

/// Starts the server (when `[http] enabled`) as one task of the service; it ends on `cancel`.
pub fn spawn(tasks: &mut JoinSet<()>, config: &Config, handles: Handles, cancel: CancellationToken) {
    let cfg = &config.http;
    if !cfg.enabled {
        return;
    }
    let Ok(addr) = cfg.listen.parse::<SocketAddr>() else { return };
    let token = match super::config::load_token(cfg, &config.state_dir, true) {
        Ok(t) => Some(Sha256::digest(t.as_bytes()).into()),
        Err(e) => {
            tracing::error!("http: {e}; /status refuses every request until this is fixed and perch restarted");
            None
        }
    };
    let server = Arc::new(Server { h: handles, token });
    tasks.spawn(run(addr, server, cancel));
}

async fn run(addr: SocketAddr, server: Arc<Server>, cancel: CancellationToken) {
    let sampler = {
        let (server, cancel) = (server.clone(), cancel.clone());
        async move {
            let mut prev = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => server.h.live.sample(&server.h.cameras, &mut prev),
                }
            }
        }
    };
    let serve = async {
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::error!(
                        "http: cannot listen on {addr}: {e} (is another process using the port? change [http] listen); retrying in {} s",
                        REBIND_DELAY.as_secs()
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(REBIND_DELAY) => {}
                    }
                }
            }
        };
        tracing::info!(%addr, "http: serving /health, /ready, /status, /metrics and the status page");
        let app = router(server.clone());
        let shutdown = cancel.clone();
        if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!("http: server stopped: {e}");
        }
    };
    tokio::join!(sampler, serve);
}

fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/", get(page_html))
        .route("/page.json", get(page_data))
        .route("/frame/{camera}", get(frame))
        .with_state(server)
}

async fn ready(State(s): State<Arc<Server>>) -> Response {
    let not_ready = s.h.not_ready();
    let code = if not_ready.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(serde_json::json!({ "ready": not_ready.is_empty(), "not_ready": not_ready }))).into_response()
}

async fn status(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token));
    match (&s.token, given) {
        (Some(expected), Some(given)) if token_matches(expected, given.trim().as_bytes()) => axum::Json(s.h.status()).into_response(),
        (None, _) => (StatusCode::UNAUTHORIZED, "the HTTP token could not be loaded: see perch's log and fix [http] token/token_file\n").into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token (Authorization: Bearer <token from [http] token_file>)\n",
        )
            .into_response(),
    }
}

/// Compares SHA-256 digests in constant time: neither the token's content nor its length leaks through
/// response timing.
fn token_matches(expected: &[u8; 32], given: &[u8]) -> bool {
    let d = Sha256::digest(given);
    expected.iter().zip(d.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn metrics_text(State(s): State<Arc<Server>>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&s.h)).into_response()
}

/// The status page and its data are for people on the box (camera pictures are private).
fn loopback(peer: &SocketAddr) -> Option<Response> {
    (!peer.ip().to_canonical().is_loopback()).then(|| {
        (StatusCode::FORBIDDEN, "the status page is served to loopback clients only: use an SSH tunnel (ssh -L 8080:127.0.0.1:8080 <box>)\n").into_response()
    })
}

async fn page_html(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if let Some(r) = loopback(&peer) {
        return r;
    }
    Html(page::HTML).into_response()
}

async fn page_data(State(s): State<Arc<Server>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if let Some(r) = loopback(&peer) {
        return r;
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(s.h.page_data())).into_response()
}

async fn frame(State(s): State<Arc<Server>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, Path(camera): Path<String>) -> Response {
    if let Some(r) = loopback(&peer) {
        return r;
    }
    let Some(i) = s.h.live.cameras().iter().position(|c| *c == camera) else {
        return (StatusCode::NOT_FOUND, "no such camera\n").into_response();
    };
    // JPEG encoding is CPU work: off the async workers.
    let live = s.h.live.clone();
    match tokio::task::spawn_blocking(move || live.preview_jpeg(i)).await {
        Ok(Some(jpeg)) => ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], jpeg).into_response(),
        _ => (StatusCode::NOT_FOUND, "no frame from this camera yet\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare_accepts_only_the_exact_token() {
        let expected: [u8; 32] = Sha256::digest(b"correct-horse-battery").into();
        assert!(token_matches(&expected, b"correct-horse-battery"));
        assert!(!token_matches(&expected, b"correct-horse-batter"));
        assert!(!token_matches(&expected, b"correct-horse-battery!"));
        assert!(!token_matches(&expected, b""));
    }
}
