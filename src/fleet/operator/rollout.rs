//! `perch fleet rollout` and `perch fleet status`: the fleet side, over the devices' retained
//! `<prefix>/<device>/ota/state` topics (and `…/model/state` for model releases, `--model`).
//!
//! A rollout sends `install` to the devices wave by wave (cumulative percentages of the device list), waits
//! until each device of the wave has committed the release, rolled it back or failed (or the wave timeout
//! passed), and pauses when the wave's failures exceed `--max-failures` (hawkBit's per-group error
//! threshold). Its progress is a JSON file written after every change, so a rollout survives the
//! orchestrator and is resumed (`--resume`, which continues with the next wave after a pause) or aborted.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sim::mqtt_options;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Running,
    Paused,
    Done,
    Aborted,
}

/// What a rollout releases: the device's software (`…/cmd/ota`, done when committed) or its model
/// (`…/cmd/model`, done when promoted after its shadow trial; a rejection is a failure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Firmware,
    Model,
}

impl Kind {
    /// The command topic's last part.
    pub fn command(self) -> &'static str {
        match self {
            Kind::Firmware => "cmd/ota",
            Kind::Model => "cmd/model",
        }
    }

    /// The retained state topic's last parts.
    pub fn state(self) -> &'static str {
        match self {
            Kind::Firmware => "ota/state",
            Kind::Model => "model/state",
        }
    }

    /// What a device that reached the release did.
    fn done(self) -> &'static str {
        match self {
            Kind::Firmware => "committed",
            Kind::Model => "promoted",
        }
    }

    fn cancel(self) -> &'static str {
        match self {
            Kind::Firmware => "cancel",
            Kind::Model => "abort",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pending,
    Committed,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceResult {
    pub outcome: Outcome,
    pub wave: usize,
    pub detail: String,
}

/// The persisted rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub id: String,
    #[serde(default)]
    pub kind: Kind,
    pub bundle_url: String,
    pub bundle_sha256: String,
    pub version: String,
    pub topic_prefix: String,
    pub devices: Vec<String>,
    /// Cumulative percentages of `devices`, ending at 100.
    pub waves: Vec<f64>,
    pub max_failures_pct: f64,
    pub wave_timeout_s: f64,
    pub status: RolloutStatus,
    /// The wave running, or the one paused at.
    pub wave: usize,
    pub reason: Option<String>,
    pub results: BTreeMap<String, DeviceResult>,
}

/// `10%` or `10` → 10.0.
pub fn parse_pct(s: &str) -> anyhow::Result<f64> {
    let v: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| anyhow::anyhow!("{s:?} is not a percentage: write e.g. 2% or 2"))?;
    if !(0.0..=100.0).contains(&v) {
        anyhow::bail!("{s:?} is out of range: use 0 to 100 %");
    }
    Ok(v)
}

pub fn parse_waves(s: &str) -> anyhow::Result<Vec<f64>> {
    let waves = s.split(',').map(parse_pct).collect::<anyhow::Result<Vec<_>>>()?;
    if waves.is_empty() || waves.windows(2).any(|w| w[0] >= w[1]) || waves.last() != Some(&100.0) || waves[0] <= 0.0 {
        anyhow::bail!("--waves {s:?}: give increasing cumulative percentages ending at 100, e.g. 1,10,50,100");
    }
    Ok(waves)
}

/// How many of `n` devices the waves up to `wave` cover (at least one per wave).
pub fn wave_end(n: usize, waves: &[f64], wave: usize) -> usize {
    let end = ((n as f64) * waves[wave] / 100.0).ceil() as usize;
    let prev = if wave == 0 { 0 } else { wave_end(n, waves, wave - 1) };
    end.max(prev + 1).min(n)
}

/// Whether a wave with `failed` of `total` devices failing pauses the rollout.
pub fn exceeds(failed: usize, total: usize, max_pct: f64) -> bool {
    total > 0 && (failed as f64) * 100.0 / (total as f64) > max_pct
}

/// `*` and `?` wildcards.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What a device's `…/ota/state` says about this rollout's release.
pub fn outcome(state: &serde_json::Value, version: &str, sha256: &str) -> (Outcome, String) {
    let phase = state["phase"].as_str().unwrap_or_default();
    let v = state["version"].as_str().unwrap_or_default();
    let sha = state["bundle_sha256"].as_str();
    let ours = sha.is_none_or(|s| s.eq_ignore_ascii_case(sha256));
    match phase {
        "committed" if v == version => (Outcome::Committed, "committed".into()),
        "rolled_back" if v == version => (Outcome::Failed, format!("rolled back: {}", state["reason"].as_str().unwrap_or_default())),
        "failed" if v == version && ours => (Outcome::Failed, format!("install failed: {}", state["reason"].as_str().unwrap_or_default())),
        "installing" | "installed" | "trial" => (Outcome::Pending, phase.into()),
        _ if sha.is_some() && ours && !state["last_error"].is_null() => {
            (Outcome::Failed, format!("install refused: {}", state["last_error"].as_str().unwrap_or_default()))
        }
        _ => (Outcome::Pending, phase.into()),
    }
}

/// What a device's `…/model/state` says about this rollout's model release.
pub fn model_outcome(state: &serde_json::Value, version: &str, sha256: &str) -> (Outcome, String) {
    let phase = state["phase"].as_str().unwrap_or_default();
    let ours = state["version"] == version && state["bundle_sha256"].as_str().is_none_or(|s| s.eq_ignore_ascii_case(sha256));
    let reasons = || state["verdict"]["reasons"].as_array().map(|r| r.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")).unwrap_or_default();
    match phase {
        "promoted" if ours => (Outcome::Committed, "promoted".into()),
        "rejected" if ours => (Outcome::Failed, format!("rejected: {}", reasons())),
        "failed" if ours => (Outcome::Failed, format!("failed: {}", state["error"].as_str().unwrap_or_default())),
        // Already serving (an earlier rollout, or a replay after the device was restarted).
        _ if state["current"]["version"] == version => (Outcome::Committed, "already serving".into()),
        _ => (Outcome::Pending, phase.into()),
    }
}

impl Rollout {
    fn outcome(&self, state: &serde_json::Value) -> (Outcome, String) {
        match self.kind {
            Kind::Firmware => outcome(state, &self.version, &self.bundle_sha256),
            Kind::Model => model_outcome(state, &self.version, &self.bundle_sha256),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::util::fs::write_atomic(path, &serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read rollout {}: {e}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("rollout {} is unreadable ({e}): start a new rollout", path.display()))
    }

    fn counts(&self, devices: &[String]) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for d in devices {
            match self.results.get(d).map(|r| &r.outcome) {
                Some(Outcome::Committed) => c.0 += 1,
                Some(Outcome::Failed) => c.1 += 1,
                _ => c.2 += 1,
            }
        }
        c
    }
}

/// Downloads the bundle once: its SHA-256 and the release it holds.
pub fn fingerprint(url: &str) -> anyhow::Result<(String, String)> {
    let mut r = crate::ota::install::open_source(url, None, std::time::Duration::from_secs(60))?;
    let mut head = Vec::new();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if head.len() < 1 << 20 {
            head.extend_from_slice(&buf[..n]);
        }
    }
    // Only to name the release in the rollout's table; every device checks the signature itself.
    let header = crate::ota::bundle::Header::read(&mut head.as_slice())?.parse_unverified()?;
    Ok((crate::util::fs::hex(&hasher.finalize()), header.manifest.version))
}

/// Connects and collects the retained `…/+/<leaf>` messages until the broker goes quiet.
async fn retained(
    client: &AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    prefix: &str,
    leaves: &[&str],
) -> anyhow::Result<HashMap<(String, String), Vec<u8>>> {
    let mut out = HashMap::new();
    for leaf in leaves {
        client.subscribe(format!("{prefix}/+/{leaf}"), QoS::AtLeastOnce).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut quiet = Duration::from_secs(3); // until the first message
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, eventloop.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => anyhow::bail!("MQTT: {e}: check --broker"),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                if let Some(key) = split_topic(prefix, &p.topic) {
                    out.insert(key, p.payload.to_vec());
                }
                quiet = Duration::from_millis(700);
            }
            Ok(Ok(_)) => {}
        }
    }
    Ok(out)
}

/// `<prefix>/<device>/<leaf…>` → (device, leaf).
fn split_topic(prefix: &str, topic: &str) -> Option<(String, String)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, leaf) = rest.split_once('/')?;
    Some((device.to_string(), leaf.to_string()))
}

fn client(broker: &str, role: &str) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut o = mqtt_options(broker, &format!("perch-fleet-{role}-{}", std::process::id()))?;
    o.set_inflight(100);
    Ok(AsyncClient::new(o, 10_000))
}

/// `perch fleet status`: one line per device from the retained topics.
pub async fn status(broker: &str, prefix: &str, json: bool) -> anyhow::Result<()> {
    let (client, mut eventloop) = client(broker, "status")?;
    let msgs = retained(&client, &mut eventloop, prefix, &["ota/state", "model/state", "status"]).await?;
    // Per device: update state, model state, online.
    type Row = (Option<serde_json::Value>, Option<serde_json::Value>, String);
    let mut devices: BTreeMap<String, Row> = BTreeMap::new();
    for ((device, leaf), payload) in msgs {
        let e = devices.entry(device).or_insert((None, None, "unknown".into()));
        match leaf.as_str() {
            "ota/state" => e.0 = serde_json::from_slice(&payload).ok(),
            "model/state" => e.1 = serde_json::from_slice(&payload).ok(),
            _ => e.2 = String::from_utf8_lossy(&payload).into_owned(),
        }
    }
    if json {
        for (d, (s, m, online)) in &devices {
            crate::outln!("{}", serde_json::json!({ "device": d, "online": online, "ota": s, "model": m }));
        }
        return Ok(());
    }
    crate::outln!("{:<16} {:<12} {:<5} {:<12} {:<12} {:<8} {:<25} last error", "DEVICE", "VERSION", "SLOT", "PHASE", "MODEL", "HEALTH", "LAST SEEN");
    for (d, (s, m, online)) in &devices {
        let s = s.clone().unwrap_or_default();
        let m = m.clone().unwrap_or_default();
        let str_of = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        let error = s["last_error"].as_str().or(m["error"].as_str()).unwrap_or("");
        crate::outln!(
            "{:<16} {:<12} {:<5} {:<12} {:<12} {:<8} {:<25} {}",
            d,
            str_of("running_version"),
            str_of("booted"),
            str_of("phase"),
            m["current"]["version"].as_str().unwrap_or("-"),
            online,
            str_of("ts"),
            error
        );
    }
    crate::outln!("{} device(s)", devices.len());
    Ok(())
}

/// The devices named by `spec`: a file with one id per line, or a glob over the devices with a retained state.
async fn resolve_devices(spec: &str, broker: &str, prefix: &str, kind: Kind) -> anyhow::Result<Vec<String>> {
    if Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec)?;
        return Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect());
    }
    let (client, mut eventloop) = client(broker, "list")?;
    let msgs = retained(&client, &mut eventloop, prefix, &[kind.state()]).await?;
    let _ = client.disconnect().await;
    let mut devices: Vec<String> = msgs.into_keys().map(|(d, _)| d).filter(|d| glob_match(spec, d)).collect();
    devices.sort();
    devices.dedup();
    Ok(devices)
}

pub struct StartOptions {
    pub bundle_url: String,
    pub devices: String,
    pub waves: Vec<f64>,
    pub max_failures_pct: f64,
    pub wave_timeout: Duration,
    pub prefix: String,
    pub kind: Kind,
}

/// Starts a rollout, saved at `path`.
pub async fn start(broker: &str, path: &Path, o: StartOptions) -> anyhow::Result<RolloutStatus> {
    if path.exists()
        && let Ok(r) = Rollout::load(path)
        && matches!(r.status, RolloutStatus::Running | RolloutStatus::Paused)
    {
        anyhow::bail!("{} holds rollout {} that is {:?}: pass --resume or --abort, or use another --state file", path.display(), r.id, r.status);
    }
    let (sha, version) = fingerprint(&o.bundle_url)?;
    let devices = resolve_devices(&o.devices, broker, &o.prefix, o.kind).await?;
    if devices.is_empty() {
        anyhow::bail!(
            "--devices {:?} names no device: give a file of ids or a glob matching devices that publish {}/<id>/{}",
            o.devices,
            o.prefix,
            o.kind.state()
        );
    }
    let r = Rollout {
        id: format!("r{}-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0), &sha[..8]),
        kind: o.kind,
        bundle_url: o.bundle_url,
        bundle_sha256: sha,
        version,
        topic_prefix: o.prefix,
        devices,
        waves: o.waves,
        max_failures_pct: o.max_failures_pct,
        wave_timeout_s: o.wave_timeout.as_secs_f64(),
        status: RolloutStatus::Running,
        wave: 0,
        reason: None,
        results: BTreeMap::new(),
    };
    r.save(path)?;
    crate::outln!("rollout {}: {} to {} device(s) in {} wave(s) ({:?} %)", r.id, r.version, r.devices.len(), r.waves.len(), r.waves);
    drive(broker, path, r).await
}

/// Resumes a saved rollout: after a pause it continues with the next wave; an interrupted wave runs again.
pub async fn resume(broker: &str, path: &Path) -> anyhow::Result<RolloutStatus> {
    let mut r = Rollout::load(path)?;
    match r.status {
        RolloutStatus::Done | RolloutStatus::Aborted => anyhow::bail!("rollout {} is {:?}: nothing to resume; start a new one", r.id, r.status),
        RolloutStatus::Paused => {
            r.wave += 1;
            r.reason = None;
            r.status = if r.wave >= r.waves.len() { RolloutStatus::Done } else { RolloutStatus::Running };
        }
        RolloutStatus::Running => {}
    }
    r.save(path)?;
    crate::outln!("rollout {}: resuming at wave {}/{}", r.id, r.wave + 1, r.waves.len());
    drive(broker, path, r).await
}

/// Aborts a saved rollout: devices still installing are sent `cancel`.
pub async fn abort(broker: &str, path: &Path) -> anyhow::Result<RolloutStatus> {
    let mut r = Rollout::load(path)?;
    let (client, mut eventloop) = client(broker, "abort")?;
    let pending: Vec<String> = r.results.iter().filter(|(_, d)| d.outcome == Outcome::Pending).map(|(k, _)| k.clone()).collect();
    for d in &pending {
        let cmd = serde_json::json!({ "op": r.kind.cancel(), "id": format!("{}-cancel-{d}", r.id) });
        client.publish(format!("{}/{d}/{}", r.topic_prefix, r.kind.command()), QoS::AtLeastOnce, false, serde_json::to_vec(&cmd)?).await?;
    }
    let _ = client.disconnect().await;
    // Let the cancels (QoS 1) go out before leaving.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while eventloop.poll().await.is_ok() {} }).await;
    r.status = RolloutStatus::Aborted;
    r.reason = Some("aborted by hand".into());
    r.save(path)?;
    crate::outln!("rollout {}: aborted ({} pending device(s) sent cancel)", r.id, pending.len());
    Ok(r.status)
}

async fn drive(broker: &str, path: &Path, mut r: Rollout) -> anyhow::Result<RolloutStatus> {
    let (client, mut eventloop) = client(broker, "rollout")?;
    client.subscribe(format!("{}/+/{}", r.topic_prefix, r.kind.state()), QoS::AtLeastOnce).await?;
    let tty = std::io::stdout().is_terminal();
    let n = r.devices.len();
    while r.status == RolloutStatus::Running && r.wave < r.waves.len() {
        let wave = r.wave;
        let start = if wave == 0 { 0 } else { wave_end(n, &r.waves, wave - 1) };
        let members: Vec<String> = r.devices[start..wave_end(n, &r.waves, wave)].to_vec();
        let began = Instant::now();
        for d in &members {
            r.results.entry(d.clone()).or_insert(DeviceResult { outcome: Outcome::Pending, wave, detail: "sent".into() });
            let cmd = serde_json::json!({
                "op": "install", "id": format!("{}-{d}", r.id), "url": r.bundle_url, "bundle_sha256": r.bundle_sha256, "version": r.version,
            });
            client.publish(format!("{}/{d}/{}", r.topic_prefix, r.kind.command()), QoS::AtLeastOnce, false, serde_json::to_vec(&cmd)?).await?;
        }
        r.save(path)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(r.wave_timeout_s);
        let mut shown = (usize::MAX, 0, 0);
        loop {
            let c = r.counts(&members);
            if c != shown {
                shown = c;
                let line = format!(
                    "wave {}/{} ({} %): {} device(s): {} {}, {} failed, {} pending  [{:.1} s]",
                    wave + 1,
                    r.waves.len(),
                    r.waves[wave],
                    members.len(),
                    c.0,
                    r.kind.done(),
                    c.1,
                    c.2,
                    began.elapsed().as_secs_f64()
                );
                if tty {
                    crate::out!("\r\x1b[K{line}");
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                } else {
                    crate::outln!("{line}");
                }
            }
            if c.2 == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Err(_) => {
                    for d in &members {
                        if let Some(res) = r.results.get_mut(d)
                            && res.outcome == Outcome::Pending
                        {
                            res.outcome = Outcome::Failed;
                            res.detail = format!("no outcome within the wave timeout ({} s); last seen: {}", r.wave_timeout_s, res.detail);
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!("MQTT: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // A new connection needs the subscription again; retained states come back with it.
                    let _ = client.try_subscribe(format!("{}/+/{}", r.topic_prefix, r.kind.state()), QoS::AtLeastOnce);
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if let Some((device, _)) = split_topic(&r.topic_prefix, &p.topic)
                        && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        && let (o, detail) = r.outcome(&state)
                        && let Some(res) = r.results.get_mut(&device)
                        && res.outcome == Outcome::Pending
                    {
                        res.detail = detail;
                        if o != Outcome::Pending {
                            res.outcome = o;
                            r.save(path)?;
                        }
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
        if tty {
            crate::outln!();
        }
        let (_, failed, _) = r.counts(&members);
        if exceeds(failed, members.len(), r.max_failures_pct) {
            r.status = RolloutStatus::Paused;
            r.reason = Some(format!("wave {}: {failed} of {} device(s) failed, above --max-failures {} %", wave + 1, members.len(), r.max_failures_pct));
            for d in &members {
                if let Some(res) = r.results.get(d).filter(|x| x.outcome == Outcome::Failed) {
                    crate::outln!("  {d}: {}", res.detail);
                }
            }
        } else {
            r.wave += 1;
            if r.wave == r.waves.len() {
                r.status = RolloutStatus::Done;
            }
        }
        r.save(path)?;
    }
    let (ok, failed, _) = r.counts(&r.devices);
    match r.status {
        RolloutStatus::Paused => {
            crate::outln!("rollout {} PAUSED: {}; fix and `--resume` (continues with the next wave) or `--abort`", r.id, r.reason.clone().unwrap_or_default())
        }
        _ => crate::outln!("rollout {} {:?}: {ok} {}, {failed} failed of {n}", r.id, r.status, r.kind.done()),
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while eventloop.poll().await.is_ok() {} }).await;
    Ok(r.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_cover_every_device_once() {
        let w = parse_waves("1,10,50,100").unwrap();
        assert_eq!((0..4).map(|i| wave_end(20, &w, i)).collect::<Vec<_>>(), [1, 2, 10, 20]);
        assert_eq!((0..4).map(|i| wave_end(1000, &w, i)).collect::<Vec<_>>(), [10, 100, 500, 1000]);
        assert_eq!((0..4).map(|i| wave_end(2, &w, i)).collect::<Vec<_>>(), [1, 2, 2, 2]);
        assert!(parse_waves("10,5,100").is_err());
        assert!(parse_waves("10,50").is_err());
    }

    #[test]
    fn model_outcomes() {
        let st = |phase: &str, version: &str, current: &str| {
            serde_json::json!({"phase": phase, "version": version, "bundle_sha256": "ab", "current": {"version": current},
                "verdict": {"reasons": ["disagreement 40.0 % is not below 20.0 %"]}, "error": "no"})
        };
        assert_eq!(model_outcome(&st("promoted", "2", "2"), "2", "AB").0, Outcome::Committed);
        let (o, d) = model_outcome(&st("rejected", "2", "1"), "2", "ab");
        assert_eq!(o, Outcome::Failed);
        assert!(d.contains("rejected: disagreement"), "{d}");
        assert_eq!(model_outcome(&st("failed", "2", "1"), "2", "ab").0, Outcome::Failed);
        // Another release's verdict, or a trial still running, is not this one's outcome.
        assert_eq!(model_outcome(&st("rejected", "3", "1"), "2", "ab").0, Outcome::Pending);
        assert_eq!(model_outcome(&st("shadow", "2", "1"), "2", "ab").0, Outcome::Pending);
        assert_eq!(model_outcome(&st("rejected", "2", "1"), "2", "cd").0, Outcome::Pending);
        // Serving already (a rollout resumed after the device promoted it): done.
        assert_eq!(model_outcome(&st("idle", "", "2"), "2", "ab").0, Outcome::Committed);
    }

    #[test]
    fn threshold_globs_and_outcomes() {
        assert!(!exceeds(0, 10, 2.0));
        assert!(exceeds(1, 10, 2.0));
        assert!(!exceeds(2, 100, 2.0));
        assert!(exceeds(3, 100, 2.0));
        assert!(glob_match("sim-*", "sim-0001"));
        assert!(glob_match("*-00?1", "sim-0011"));
        assert!(!glob_match("sim-*", "cam-1"));
        let s = |v: serde_json::Value| outcome(&v, "2.0.0", "ab").0;
        assert_eq!(s(serde_json::json!({"phase":"committed","version":"2.0.0"})), Outcome::Committed);
        assert_eq!(s(serde_json::json!({"phase":"committed","version":"1.0.0"})), Outcome::Pending);
        assert_eq!(s(serde_json::json!({"phase":"rolled_back","version":"2.0.0"})), Outcome::Failed);
        assert_eq!(s(serde_json::json!({"phase":"idle","bundle_sha256":"ab","last_error":"signature rejected"})), Outcome::Failed);
        assert_eq!(s(serde_json::json!({"phase":"idle","bundle_sha256":"cd","last_error":"x"})), Outcome::Pending);
    }
}
