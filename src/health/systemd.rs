//! systemd integration (`Type=notify`): `READY=1` once perch is up, `WATCHDOG=1` only while its loops make
//! progress, `STATUS=` lines for `systemctl status`, `STOPPING=1` on shutdown.
//!
//! The protocol is one datagram per message to the socket in `$NOTIFY_SOCKET` (a path, or an abstract
//! name starting with `@`); without it (not under systemd) nothing is sent. The watchdog interval comes
//! from `$WATCHDOG_USEC`.
//!
//! Pings are earned, not timed: each one needs every capture thread and the detection loop to have beaten
//! recently (see [`crate::util::Heartbeat`]). A thread stuck inside GStreamer or an inference that never
//! returns stops the pings, and systemd restarts perch after `WatchdogSec`. A camera that is merely
//! offline is not stuck — its supervisor keeps beating while it waits to retry.
//!
//! `READY=1` means "up": the detector has loaded and every enabled camera has finished its first attempt
//! to connect (delivering, or offline with a reason). Waiting for every camera to deliver would hold the
//! boot (and restart perch in a loop) whenever one camera is down; whether all cameras deliver is what
//! `STATUS=` and the health snapshot say.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::capture::{CameraState, CameraStatus};
use crate::detect::DetectorState;
use crate::detect::worker::DetectStats;

/// The notification socket, when perch runs under systemd.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (`$WATCHDOG_PID`, when set, must be ours).
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let ours = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()).is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC").ok().and_then(|u| u.parse::<u64>().ok()).filter(|&u| u > 0 && ours).map(Duration::from_micros);
        Self { socket, watchdog }
    }

    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// The interval systemd expects pings within.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.active())
    }

    /// Sends one message (`KEY=value` lines). Errors are logged once by the caller's choice; a lost
    /// notification is retried by the next tick.
    pub fn notify(&self, msg: &str) -> std::io::Result<()> {
        match &self.socket {
            Some((sock, addr)) => sock.send_to_addr(msg.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// What the watchdog looks at.
pub struct Watchdog {
    pub notifier: Notifier,
    pub cameras: Vec<Arc<CameraStatus>>,
    pub detector: watch::Receiver<DetectorState>,
    pub stats: Arc<DetectStats>,
}

/// Why perch is not making progress, if it is not.
pub fn stuck(cameras: &[Arc<CameraStatus>], detector: &DetectorState, stats: &DetectStats, limit: Duration) -> Option<String> {
    for c in cameras.iter().filter(|c| !matches!(c.state(), CameraState::Disabled | CameraState::Ended)) {
        let age = c.heartbeat.age();
        if age > limit {
            return Some(format!("camera {} has been stuck for {:.0} s (its capture thread stopped turning)", c.id, age.as_secs_f64()));
        }
    }
    // Loading a model (a TensorRT engine build takes minutes) or waiting to retry is not being stuck.
    if matches!(detector, DetectorState::Ready { .. }) && stats.heartbeat.age() > limit {
        return Some(format!("the detection loop has been stuck for {:.0} s", stats.heartbeat.age().as_secs_f64()));
    }
    None
}

/// A one-line summary for `STATUS=`.
pub fn summary(cameras: &[Arc<CameraStatus>], detector: &DetectorState) -> String {
    let enabled: Vec<_> = cameras.iter().filter(|c| c.state() != CameraState::Disabled).collect();
    let online = enabled.iter().filter(|c| c.state() == CameraState::Online).count();
    let offline: Vec<&str> = enabled.iter().filter(|c| c.state() == CameraState::Offline).map(|c| c.id.as_str()).collect();
    let det = match detector {
        DetectorState::Ready { provider } => format!("detector ready ({provider:?})").to_lowercase(),
        DetectorState::Failed { .. } => "detector failed".into(),
        other => format!("detector {other:?}").to_lowercase(),
    };
    let mut s = format!("{online}/{} cameras online, {det}", enabled.len());
    if !offline.is_empty() {
        s.push_str(&format!("; offline: {}", offline.join(", ")));
    }
    s
}

impl Watchdog {
    /// Runs until cancelled; then says `STOPPING=1`.
    pub async fn run(mut self, cancel: CancellationToken) {
        if !self.notifier.active() {
            return;
        }
        // Pings well within the interval; a stuck loop must be older than most of it to count.
        let (tick, limit) = match self.notifier.watchdog() {
            Some(w) => ((w / 3).min(Duration::from_secs(1)), (w * 2 / 3).max(Duration::from_secs(2))),
            None => (Duration::from_secs(1), Duration::MAX),
        };
        let mut interval = tokio::time::interval(tick);
        let (mut ready, mut last_status, mut was_stuck) = (false, String::new(), false);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {}
            }
            let detector = self.detector.borrow_and_update().clone();
            let mut msg = String::new();
            let status = summary(&self.cameras, &detector);
            if !ready && matches!(detector, DetectorState::Ready { .. }) && self.cameras.iter().all(|c| c.state() == CameraState::Disabled || c.settled()) {
                ready = true;
                msg.push_str("READY=1\n");
                tracing::info!("ready: {status}");
            }
            let stuck = stuck(&self.cameras, &detector, &self.stats, limit);
            match (&stuck, self.notifier.watchdog()) {
                (None, Some(_)) => msg.push_str("WATCHDOG=1\n"),
                (Some(why), _) if !was_stuck => tracing::error!("{why}: the systemd watchdog is no longer fed, so perch will be restarted"),
                _ => {}
            }
            was_stuck = stuck.is_some();
            let status = stuck.map(|why| format!("stuck: {why}")).unwrap_or(status);
            if status != last_status {
                msg.push_str(&format!("STATUS={status}\n"));
                last_status = status;
            }
            if !msg.is_empty()
                && let Err(e) = self.notifier.notify(&msg)
            {
                tracing::debug!("systemd notification failed: {e}");
            }
        }
        let _ = self.notifier.notify("STOPPING=1\nSTATUS=stopping: draining events, clips and the outbox\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_names_the_loop_that_stopped() {
        let cam = Arc::new(CameraStatus::new("gate", "rtsp://x".into(), true));
        let cams = [cam.clone()];
        let stats = DetectStats::default();
        let ready = DetectorState::Ready { provider: crate::detect::Provider::Cpu };
        assert_eq!(stuck(&cams, &ready, &stats, Duration::from_secs(60)), None);
        std::thread::sleep(Duration::from_millis(20));
        let why = stuck(&cams, &ready, &stats, Duration::from_millis(10)).unwrap();
        assert!(why.contains("camera gate"), "{why}");
        cam.heartbeat.beat();
        let why = stuck(&cams, &ready, &stats, Duration::from_millis(10)).unwrap();
        assert!(why.contains("detection loop"), "{why}");
        // A model still loading is not stuck.
        assert_eq!(stuck(&cams, &DetectorState::Loading, &stats, Duration::from_millis(10)), None);
        cam.set_state(CameraState::Disabled);
        assert_eq!(stuck(&cams, &DetectorState::Loading, &stats, Duration::from_millis(10)), None);
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { socket: Some((UnixDatagram::unbound().unwrap(), std::os::unix::net::SocketAddr::from_pathname(&path).unwrap())), watchdog: None };
        n.notify("READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\n");
    }
}
