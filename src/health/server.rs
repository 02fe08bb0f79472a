//! The HTTP server (axum, HTTP/1.1 only): routes, the bearer check, and the loopback-only status page.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /health` | none | `ok`: the process answers (liveness) |
//! | `GET /ready` | none | 200 when every enabled camera delivers frames and the detector is ready, else 503 naming what is not |
//! | `GET /status` | bearer token | the detailed JSON status |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /`, `/page.json`, `/frame/{camera}` | loopback clients only | the status page, its data, each camera's latest picture |
//! | `/api/…` | bearer token, or a loopback client | the evidence API (`api`): events, review items, clips, snapshots, exports |

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::util::tasks::Tasks;
use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::HttpConfig;
use super::auth::{Peer, Token, loopback};
use super::{Handles, api, metrics, page};

/// How often the measured rates (fps) are updated.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Wait before trying to listen again when the address is taken.
const REBIND_DELAY: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept, so stuck clients cannot use up file descriptors.
const MAX_CONNECTIONS: usize = 32;
/// Connections admitted beyond that, each with a short request deadline, so `/health` still answers while
/// slow clients hold every regular slot.
const RESERVE_CONNECTIONS: usize = 8;
/// Deadlines of a connection (hyper has no timer under `axum::serve`, so neither slow request headers nor
/// idle keep-alive connections would ever time out otherwise).
const TIMEOUTS: Timeouts = Timeouts { request: Duration::from_secs(10), reserve_request: Duration::from_secs(2), write_stall: Duration::from_secs(30) };

struct Server {
    h: Handles,
    token: Token,
}

/// Starts the server (when `[http] enabled`) as one task of the service; it ends on `cancel`.
pub fn spawn(tasks: &mut Tasks, cfg: &HttpConfig, handles: Handles, cancel: CancellationToken) {
    if !cfg.enabled {
        return;
    }
    let Ok(addr) = cfg.listen.parse::<SocketAddr>() else { return };
    let token = match super::config::load_token(cfg, &handles.state_dir, true) {
        Ok(t) => Token::new(Some(&t)),
        Err(e) => {
            tracing::error!("http: {e}; /status and the evidence API refuse every request until this is fixed and perch restarted");
            Token::new(None)
        }
    };
    let server = Arc::new(Server { h: handles, token });
    tasks.spawn("http", run(addr, server, cancel));
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
                Ok(inner) => break Limited::new(inner, MAX_CONNECTIONS, RESERVE_CONNECTIONS, TIMEOUTS),
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
        .merge(api::router(server.h.evidence.clone(), server.token))
        .with_state(server)
}

async fn ready(State(s): State<Arc<Server>>) -> Response {
    let not_ready = s.h.not_ready();
    let code = if not_ready.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(serde_json::json!({ "ready": not_ready.is_empty(), "not_ready": not_ready }))).into_response()
}

async fn status(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    match s.token.check(&headers) {
        Ok(()) => axum::Json(s.h.status()).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn metrics_text(State(s): State<Arc<Server>>) -> Response {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&s.h)).into_response()
}

async fn page_html(ConnectInfo(Peer(peer)): ConnectInfo<Peer>, headers: HeaderMap) -> Response {
    if let Some(r) = loopback(&peer, &headers) {
        return r;
    }
    Html(page::HTML).into_response()
}

async fn page_data(State(s): State<Arc<Server>>, ConnectInfo(Peer(peer)): ConnectInfo<Peer>, headers: HeaderMap) -> Response {
    if let Some(r) = loopback(&peer, &headers) {
        return r;
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(s.h.page_data())).into_response()
}

async fn frame(State(s): State<Arc<Server>>, ConnectInfo(Peer(peer)): ConnectInfo<Peer>, headers: HeaderMap, Path(camera): Path<String>) -> Response {
    if let Some(r) = loopback(&peer, &headers) {
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

impl Connected<IncomingStream<'_, Limited>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Limited>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// How long a connection may take to send a whole request (from its accept, or from the end of its last
/// response). Bytes do not extend it, so a client trickling one header line at a time is closed anyway.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    request: Duration,
    /// The same for a connection admitted into the reserve (every regular slot was taken): real clients
    /// send a request at once, so a short deadline keeps the reserve free for them.
    reserve_request: Duration,
    /// A response the client stops reading for this long is abandoned.
    write_stall: Duration,
}

/// A TCP listener that serves at most `max` connections at once plus a few in reserve, and closes
/// connections that do not send a request in time.
struct Limited {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    timeouts: Timeouts,
}

impl Limited {
    fn new(inner: TcpListener, max: usize, reserve: usize, timeouts: Timeouts) -> Self {
        Self { inner, permits: Arc::new(Semaphore::new(max)), reserve: Arc::new(Semaphore::new(reserve)), timeouts }
    }
}

impl Listener for Limited {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, addr) = Listener::accept(&mut self.inner).await;
            let (permit, request) = match self.permits.clone().try_acquire_owned() {
                Ok(p) => (p, self.timeouts.request),
                Err(_) => match self.reserve.clone().try_acquire_owned() {
                    Ok(p) => (p, self.timeouts.reserve_request),
                    Err(_) => {
                        tracing::debug!(%addr, "http: too many connections open; closing a new one");
                        continue;
                    }
                },
            };
            return (Guarded::new(stream, permit, request, self.timeouts.write_stall), addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slot until closed. Reading fails with `TimedOut` once the request deadline
/// passes (restarted only when a response is written, never by bytes read); writing fails once the client
/// has taken nothing for `write_stall`. Either error makes hyper close the connection.
struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    request: Duration,
    write_stall: Duration,
    read_deadline: Pin<Box<tokio::time::Sleep>>,
    write_deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Guarded {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, request: Duration, write_stall: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            request,
            write_stall,
            read_deadline: Box::pin(tokio::time::sleep(request)),
            write_deadline: Box::pin(tokio::time::sleep(write_stall)),
        }
    }

    /// A response went out: the client has a new request deadline, and the write stall clock restarts.
    fn wrote(&mut self) {
        let now = tokio::time::Instant::now();
        self.read_deadline.as_mut().reset(now + self.request);
        self.write_deadline.as_mut().reset(now + self.write_stall);
    }
}

fn timed_out<T>(deadline: Pin<&mut tokio::time::Sleep>, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
    match r {
        Poll::Pending if deadline.poll(cx).is_ready() => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
        r => r,
    }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // A read that finds data is served even past the deadline only if it came in time: check first.
        if this.read_deadline.is_elapsed() {
            return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
        }
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        timed_out(this.read_deadline.as_mut(), cx, r)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(_))) {
            this.wrote();
        }
        timed_out(this.write_deadline.as_mut(), cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        timed_out(this.write_deadline.as_mut(), cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_capped_and_slow_ones_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let app = Router::new().route("/health", get(|| async { "ok\n" }));
        let timeouts = Timeouts { request: Duration::from_millis(600), reserve_request: Duration::from_millis(300), write_stall: Duration::from_secs(5) };
        tokio::spawn(async move { axum::serve(Limited::new(inner, 1, 1, timeouts), app).await });
        async fn eof_within(c: &mut TcpStream, t: Duration) -> bool {
            let mut buf = [0u8; 64];
            matches!(tokio::time::timeout(t, c.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
        }
        let get = |mut c: TcpStream| async move {
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(3), c.read_to_string(&mut answer)).await.unwrap().unwrap();
            answer
        };
        // The one regular slot: a client trickling a header line every 100 ms holds it...
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so a second client is served from the reserve, at once.
        let answer = get(TcpStream::connect(addr).await.unwrap()).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
        // With the regular slot and the reserve both held, a third is closed on accept.
        let mut reserve_holder = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(eof_within(&mut third, Duration::from_millis(200)).await, "a connection over the cap was served");
        // The reserve's short deadline frees it first; the trickling client is closed at its deadline,
        // although its bytes keep coming.
        assert!(eof_within(&mut reserve_holder, Duration::from_millis(600)).await, "a reserve connection outlived its deadline");
        let started = tokio::time::Instant::now();
        let closed = loop {
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() || eof_within(&mut slow, Duration::from_millis(100)).await {
                break true;
            }
            if started.elapsed() > Duration::from_secs(3) {
                break false;
            }
        };
        assert!(closed, "a client trickling header lines was kept open past the request deadline");
        let answer = get(TcpStream::connect(addr).await.unwrap()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
