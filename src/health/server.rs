//! The HTTP server (axum, HTTP/1.1 only): routes, the bearer check, and the loopback-only status page.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /health` | none | `ok`: the process answers (liveness) |
//! | `GET /ready` | none | 200 when every enabled camera delivers frames and the detector is ready, else 503 naming what is not |
//! | `GET /status` | bearer token | the detailed JSON status |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /`, `/page.json`, `/frame/{camera}` | loopback clients only | the status page, its data, each camera's latest picture |

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Handles, metrics, page};
use crate::config::Config;

/// How often the measured rates (fps) are updated.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Wait before trying to listen again when the address is taken.
const REBIND_DELAY: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept, so stuck clients cannot use up file descriptors.
const MAX_CONNECTIONS: usize = 32;
/// A connection on which nothing moves for this long is closed (hyper has no timer under `axum::serve`, so
/// neither slow request headers nor idle keep-alive connections would ever time out otherwise).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
            match TcpListener::bind(addr).await {
                Ok(inner) => break Limited::new(inner, MAX_CONNECTIONS, IDLE_TIMEOUT),
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
        if let Err(e) =
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
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

async fn page_html(ConnectInfo(Peer(peer)): ConnectInfo<Peer>) -> Response {
    if let Some(r) = loopback(&peer) {
        return r;
    }
    Html(page::HTML).into_response()
}

async fn page_data(State(s): State<Arc<Server>>, ConnectInfo(Peer(peer)): ConnectInfo<Peer>) -> Response {
    if let Some(r) = loopback(&peer) {
        return r;
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(s.h.page_data())).into_response()
}

async fn frame(State(s): State<Arc<Server>>, ConnectInfo(Peer(peer)): ConnectInfo<Peer>, Path(camera): Path<String>) -> Response {
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

/// The client's address, for the loopback-only routes.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, Limited>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Limited>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A TCP listener that serves at most [`MAX_CONNECTIONS`] at once and closes idle connections.
struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl Limited {
    fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Self { inner, permits: Arc::new(Semaphore::new(max)), idle }
    }
}

impl Listener for Limited {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => return (Guarded { stream, _permit: permit, timeout: self.idle, idle: Box::pin(tokio::time::sleep(self.idle)) }, addr),
                Err(_) => tracing::debug!(%addr, "http: too many connections open; closing a new one"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slot until closed, failing with `TimedOut` once idle for [`IDLE_TIMEOUT`].
struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Guarded {
    /// Progress restarts the idle clock; waiting past it is an error, which makes hyper close the connection.
    fn idle_check<T>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.idle.as_mut().reset(tokio::time::Instant::now() + self.timeout);
                Poll::Ready(v)
            }
            Poll::Pending if self.idle.as_mut().poll(cx).is_ready() => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.idle_check(cx, r)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.idle_check(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.idle_check(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
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

    #[test]
    fn the_page_is_for_loopback_clients_only() {
        for ok in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(loopback(&ok.parse().unwrap()).is_none(), "{ok} refused");
        }
        for remote in ["10.1.2.3:5000", "192.168.0.9:80", "[2001:db8::1]:443"] {
            assert_eq!(loopback(&remote.parse().unwrap()).map(|r| r.status()), Some(StatusCode::FORBIDDEN), "{remote} served");
        }
    }

    #[tokio::test]
    async fn connections_are_capped_and_idle_ones_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let app = Router::new().route("/health", get(|| async { "ok\n" }));
        tokio::spawn(async move { axum::serve(Limited::new(inner, 1, Duration::from_millis(300)), app).await });
        let eof_within = |mut c: TcpStream, t: Duration| async move {
            let mut buf = [0u8; 64];
            matches!(tokio::time::timeout(t, c.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
        };
        // The one slot: an idle connection holds it...
        let first = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so a second one is closed at once, while the first is still open.
        let second = TcpStream::connect(addr).await.unwrap();
        assert!(eof_within(second, Duration::from_millis(200)).await, "a connection over the cap was served");
        // The idle one is closed after the idle timeout, and the slot serves again.
        assert!(eof_within(first, Duration::from_secs(3)).await, "an idle connection was kept open");
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(3), third.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
    }
}
