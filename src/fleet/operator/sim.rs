//! `perch fleet simulate`: N device agents in one process, each a real [`Agent`] over a real [`Ota`] with
//! the `file` boot backend and file slots, each with its own MQTT connection, so a rollout can be tested
//! (and load-tested) against a broker without N boxes.
//!
//! After an install the simulated box "reboots" (`Ota::boot`, which spends a try of the new slot as the
//! bootloader would) and runs a simulated health gate: it fails when the booted slot's image contains
//! [`FAIL_MARKER`] (or with `--fail-health`), then rolls back and boots the previous slot; otherwise it
//! commits. Everything else is the device code itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};

use crate::fleet::device::agent::{AfterInstall, Agent, OnChange};
use crate::ota::{BackendKind, Ota, OtaConfig};

/// A bundle whose image contains this text fails the simulated health gate.
pub const FAIL_MARKER: &[u8] = b"perch-sim: fail health";

pub struct SimOptions {
    pub devices: usize,
    pub state_dir: PathBuf,
    pub broker: String,
    pub keyring: PathBuf,
    pub compatible: String,
    pub id_prefix: String,
    pub topic_prefix: String,
    pub fail_health: bool,
}

/// MQTT options for `url` (`mqtt://host:port`).
pub fn mqtt_options(url: &str, client_id: &str) -> anyhow::Result<rumqttc::MqttOptions> {
    let u = url::Url::parse(url).map_err(|e| anyhow::anyhow!("--broker {url:?}: {e}: use mqtt://HOST:PORT"))?;
    let host = u.host_str().ok_or_else(|| anyhow::anyhow!("--broker {url:?} has no host: use mqtt://HOST:PORT"))?;
    let mut o = rumqttc::MqttOptions::new(client_id, host, u.port().unwrap_or(1883));
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    Ok(o)
}

fn health_fails(ota: &Ota, fail_all: bool) -> Option<String> {
    if fail_all {
        return Some("simulated health gate failed (--fail-health)".into());
    }
    let slot = ota.backend.booted().ok()?;
    let image = std::fs::read(ota.slot_path(slot)).unwrap_or_default();
    image
        .windows(FAIL_MARKER.len())
        .any(|w| w == FAIL_MARKER)
        .then(|| format!("simulated health gate failed: the release in slot {slot} does not pass its checks"))
}

/// Runs the simulated fleet until SIGINT/SIGTERM; prints `READY n` once every agent is connected.
pub async fn run(opts: SimOptions) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connected = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.devices {
        let id = format!("{}{:04}", opts.id_prefix, i + 1);
        let dir = opts.state_dir.join(&id);
        std::fs::create_dir_all(&dir)?;
        let cfg = OtaConfig {
            backend: BackendKind::File,
            compatible: opts.compatible.clone(),
            keyring: opts.keyring.clone(),
            slot_a: dir.join("slot-a.img"),
            slot_b: dir.join("slot-b.img"),
            image: "rootfs".into(),
            tries: 3,
            state_dir: Some(dir.clone()),
            ..Default::default()
        };
        let ota = Arc::new(Ota::open(&cfg, &dir));
        // Every start of the simulator is a power-on of each box.
        ota.boot().map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        let prefix = format!("{}/{id}", opts.topic_prefix);
        let mut mo = mqtt_options(&opts.broker, &format!("perch-sim-{id}"))?;
        mo.set_last_will(LastWill::new(format!("{prefix}/status"), "offline", QoS::AtLeastOnce, true));
        mo.set_inflight(32);
        let (client, mut eventloop) = AsyncClient::new(mo, 64);
        let agent_slot: Arc<std::sync::OnceLock<Arc<Agent>>> = Arc::new(std::sync::OnceLock::new());
        let on_change: OnChange = {
            let (client, prefix, slot) = (client.clone(), prefix.clone(), agent_slot.clone());
            Arc::new(move || {
                if let Some(a) = slot.get() {
                    let _ = client.try_publish(format!("{prefix}/ota/state"), QoS::AtLeastOnce, true, serde_json::to_vec(&a.state()).unwrap_or_default());
                }
            })
        };
        let fail_all = opts.fail_health;
        let after: AfterInstall = {
            let on_change = on_change.clone();
            Arc::new(move |agent: &Agent, result, reboot| {
                if result.is_err() || !reboot {
                    return;
                }
                // Reboot into the new slot, as the bootloader would.
                if let Err(e) = agent.ota.boot() {
                    agent.set_error(&e.to_string());
                    return;
                }
                on_change();
                match health_fails(&agent.ota, fail_all) {
                    Some(why) => {
                        agent.set_error(&why);
                        let _ = agent.ota.rollback(&why);
                        let _ = agent.ota.boot();
                    }
                    None => {
                        if let Err(e) = agent.ota.commit("simulated health gate passed") {
                            agent.set_error(&e.to_string());
                        }
                    }
                }
            })
        };
        let agent = Agent::with_hooks(ota, Some(after), Some(on_change));
        let _ = agent_slot.set(agent.clone());
        let connected = connected.clone();
        tasks.spawn(async move {
            let mut counted = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_publish(format!("{prefix}/status"), QoS::AtLeastOnce, true, "online");
                        let _ = client.try_subscribe(format!("{prefix}/cmd/ota"), QoS::AtLeastOnce);
                        let _ =
                            client.try_publish(format!("{prefix}/ota/state"), QoS::AtLeastOnce, true, serde_json::to_vec(&agent.state()).unwrap_or_default());
                        if !counted {
                            counted = true;
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/cmd/ota") => {
                        let request: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                        let a = agent.clone();
                        let reply = tokio::task::spawn_blocking(move || a.command(&request)).await.unwrap_or_default();
                        let _ = client.try_publish(format!("{prefix}/cmd/ota/result"), QoS::AtLeastOnce, false, serde_json::to_vec(&reply).unwrap_or_default());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("{prefix}: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }
    let mut announced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !announced && connected.load(Ordering::Relaxed) == opts.devices {
                    announced = true;
                    println!("READY {}", opts.devices);
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    tasks.abort_all();
    Ok(())
}
