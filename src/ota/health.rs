//! The health gate: after a trial boot, perch commits the new release only when its health checks pass
//! without a break for `health_window_s`; a failed golden frame, or no pass within `health_timeout_s`, rolls
//! it back (a crash loop is caught by the bootloader's tries, see [`super::Ota::boot`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::tasks::Tasks;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BackendKind, Ota, Phase};
use crate::capture::{CameraState, CameraStatus};
use crate::detect::{Detections, Detector, DetectorConfig, DetectorState};
use crate::events::publisher::PublisherStats;

/// What the gate decides after a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Wait,
    Commit,
    Rollback(String),
}

/// The gate's timing as a value: healthy without a break for `window`, within `timeout`.
#[derive(Debug, Clone)]
pub struct Gate {
    pub window: Duration,
    pub timeout: Duration,
    healthy_since: Option<Duration>,
}

impl Gate {
    pub fn new(window: Duration, timeout: Duration) -> Self {
        Self { window, timeout, healthy_since: None }
    }

    /// One check at `elapsed` since the trial started; `failures` names every failing check.
    pub fn step(&mut self, elapsed: Duration, failures: &[String]) -> Verdict {
        if failures.is_empty() {
            let since = *self.healthy_since.get_or_insert(elapsed);
            if elapsed - since >= self.window {
                return Verdict::Commit;
            }
        } else {
            self.healthy_since = None;
        }
        if elapsed >= self.timeout {
            let why = if failures.is_empty() { "healthy, but not for a whole window".to_string() } else { failures.join("; ") };
            return Verdict::Rollback(format!("health gate not passed within {:.0} s: {why}", self.timeout.as_secs_f64()));
        }
        Verdict::Wait
    }
}

/// What the gate looks at in the running service.
pub struct HealthInputs {
    pub cameras: Vec<Arc<CameraStatus>>,
    pub detector: watch::Receiver<DetectorState>,
    /// Set when a broker is configured.
    pub mqtt: Option<Arc<PublisherStats>>,
    pub state_dir: PathBuf,
}

const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Every failing check, each naming what failed.
pub fn failures(inputs: &HealthInputs) -> Vec<String> {
    let mut f = Vec::new();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    for cam in &inputs.cameras {
        let state = cam.state();
        if state == CameraState::Disabled {
            continue;
        }
        if !cam.delivering(now_ms) {
            f.push(format!("camera {} delivers no frames ({state:?})", cam.id));
        }
    }
    match &*inputs.detector.borrow() {
        DetectorState::Ready { .. } => {}
        other => f.push(format!("detector not ready ({other:?})")),
    }
    if let Some(m) = &inputs.mqtt
        && !m.connected.load(std::sync::atomic::Ordering::Relaxed)
    {
        f.push("MQTT broker unreachable".into());
    }
    let probe = inputs.state_dir.join(".ota-health-probe");
    if let Err(e) = std::fs::write(&probe, b"ok").and_then(|_| std::fs::remove_file(&probe)) {
        f.push(format!("state_dir {} not writable: {e}", inputs.state_dir.display()));
    }
    f
}

/// Runs the detector on the golden image; Err names what is missing.
pub fn golden_check(image: &Path, expected: &[String], detector: &DetectorConfig, engine_cache: &Path) -> Result<(), String> {
    let mut d = Detector::load(detector, engine_cache, &|_| {}).map_err(|e| format!("golden frame: the detector does not load: {e}"))?;
    let input = (d.manifest().input.width, d.manifest().input.height);
    let mut found = Detections::new();
    let mut labels = BTreeSet::new();
    crate::capture::for_each_frame(image, None, input, |frame| {
        d.detect(&frame.view(), 0.3, &mut found)?;
        labels.extend(found.iter().map(|x| x.label.to_string()));
        Ok(())
    })
    .map_err(|e| format!("golden frame {}: {e:#}", image.display()))?;
    let missing: Vec<&String> = expected.iter().filter(|l| !labels.contains(*l)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("golden frame {}: expected {expected:?}, the detector found {labels:?} (missing {missing:?})", image.display()))
    }
}

/// The OTA status for health and `…/ota/state`.
pub fn status_fn(ota: Arc<Ota>) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    Arc::new(move || match ota.status() {
        Ok(s) => serde_json::to_value(&s).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    })
}

/// The detector a trial's golden-frame check runs (`[detector]` and its engine cache); the image and the
/// labels it must find are `ota.golden_image` and `ota.golden_labels`.
#[derive(Debug, Clone)]
pub struct GoldenCheck {
    pub detector: DetectorConfig,
    pub engine_cache: PathBuf,
}

/// The service's hook: records the boot, and when a release is on trial, spawns the gate. Logs which
/// release runs from which slot.
pub fn spawn(tasks: &mut Tasks, ota: Arc<Ota>, check: GoldenCheck, inputs: HealthInputs, cancel: CancellationToken) {
    let cfg = &ota.cfg;
    let state = match ota.reconcile() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("ota: cannot read the update state: {e}");
            return;
        }
    };
    let booted = ota.backend.booted().ok();
    let version = ota.running_version().unwrap_or_else(|_| crate::VERSION.into());
    tracing::info!(phase = state.phase.name(), "ota: running release {version} from slot {}", booted.map_or("?".into(), |s| s.to_string()));
    if let Phase::RolledBack { version: failed, reason, .. } = &state.phase {
        tracing::warn!("ota: release {failed} was rolled back: {reason}");
    }
    let Phase::Trial { slot, version } = state.phase else { return };
    if booted != Some(slot) {
        return;
    }
    let golden = ota.golden_image().map(|g| (g, cfg.golden_labels.clone(), check.detector, check.engine_cache));
    let gate = Gate::new(Duration::from_secs_f64(cfg.health_window_s), Duration::from_secs_f64(cfg.health_timeout_s));
    let already = ota.trial_elapsed();
    tracing::info!(
        "ota: release {version} is on trial in slot {slot}: committing once healthy for {:.0} s (on trial for {:.0} s of {:.0} s)",
        cfg.health_window_s,
        already.as_secs_f64(),
        cfg.health_timeout_s
    );
    tasks.spawn("ota gate", run_gate(ota, gate, golden, inputs, already, cancel));
}

async fn run_gate(
    ota: Arc<Ota>,
    mut gate: Gate,
    golden: Option<(PathBuf, Vec<String>, DetectorConfig, PathBuf)>,
    inputs: HealthInputs,
    already: Duration,
    cancel: CancellationToken,
) {
    // The deadline counts from the trial's first start in this boot (see `Ota::trial_elapsed`).
    let start = Instant::now();
    let mut golden = golden.map(|(image, labels, det, cache)| tokio::task::spawn_blocking(move || golden_check(&image, &labels, &det, &cache)));
    let mut golden_ok = golden.is_none();
    let verdict = loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        if let Some(h) = golden.as_mut().filter(|h| h.is_finished()) {
            match h.await {
                Ok(Ok(())) => {
                    tracing::info!("ota: golden frame check passed");
                    golden_ok = true;
                }
                Ok(Err(why)) => break Verdict::Rollback(why),
                Err(e) => break Verdict::Rollback(format!("golden frame check crashed: {e}")),
            }
            golden = None;
        }
        let mut failing = failures(&inputs);
        if !golden_ok {
            failing.push("golden frame check still running".into());
        }
        match gate.step(already + start.elapsed(), &failing) {
            Verdict::Wait => {}
            v => break v,
        }
    };
    let o = ota.clone();
    let outcome = tokio::task::spawn_blocking(move || match &verdict {
        Verdict::Commit => o.commit(&format!("health checks passed for {:.0} s", o.cfg.health_window_s)).map(|_| false),
        Verdict::Rollback(why) => o.rollback(why).map(|_| true),
        Verdict::Wait => Ok(false),
    })
    .await;
    match outcome {
        Ok(Ok(false)) => tracing::info!("ota: release committed"),
        Ok(Ok(true)) => {
            tracing::error!("ota: release rolled back; restarting into the previous slot");
            if ota.cfg.backend != BackendKind::App
                && let Err(e) = ota.request_reboot()
            {
                tracing::error!("ota: {e}");
            }
            // systemd (Restart=always) starts perch again: from the previous slot in app mode.
            cancel.cancel();
        }
        Ok(Err(e)) => tracing::error!("ota: {e}"),
        Err(e) => tracing::error!("ota: the gate's last step crashed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn commits_after_a_whole_healthy_window() {
        let mut g = Gate::new(s(10.0), s(60.0));
        assert_eq!(g.step(s(0.0), &[]), Verdict::Wait);
        assert_eq!(g.step(s(9.9), &[]), Verdict::Wait);
        assert_eq!(g.step(s(10.0), &[]), Verdict::Commit);
    }

    #[test]
    fn a_failure_restarts_the_window() {
        let mut g = Gate::new(s(10.0), s(60.0));
        g.step(s(0.0), &[]);
        assert_eq!(g.step(s(5.0), &["camera x".into()]), Verdict::Wait);
        assert_eq!(g.step(s(12.0), &[]), Verdict::Wait);
        assert_eq!(g.step(s(21.9), &[]), Verdict::Wait);
        assert_eq!(g.step(s(22.0), &[]), Verdict::Commit);
    }

    #[test]
    fn times_out_naming_the_failures() {
        let mut g = Gate::new(s(10.0), s(30.0));
        assert_eq!(g.step(s(29.0), &["camera x delivers no frames".into()]), Verdict::Wait);
        match g.step(s(30.0), &["camera x delivers no frames".into()]) {
            Verdict::Rollback(why) => assert!(why.contains("camera x delivers no frames") && why.contains("30 s"), "{why}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn zero_window_commits_at_the_first_healthy_check() {
        let mut g = Gate::new(s(0.0), s(1.0));
        assert_eq!(g.step(s(0.5), &["x".into()]), Verdict::Wait);
        assert_eq!(g.step(s(0.6), &[]), Verdict::Commit);
    }
}
