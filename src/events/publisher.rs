//! Publishing over MQTT (rumqttc): events from the outbox at QoS 1, deleted only on the broker's PUBACK;
//! availability on `<prefix>/status` (`online` retained on connect, `offline` as the retained Last Will);
//! a retained health snapshot on `<prefix>/health`; commands on `<prefix>/cmd/<name>`, answered on
//! `<prefix>/cmd/<name>/result`.
//!
//! rumqttc keeps its own queue in memory only, so perch never relies on it: each connection is a fresh
//! client, and after a reconnect everything still in the outbox is sent again, oldest first. A message may
//! thus arrive twice, with the same `seq` and `event_id`; it is never lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::MqttConfig;
use super::outbox::Outbox;
use crate::util::Backoff;

/// Produces the health snapshot published on `<prefix>/health`.
pub type HealthFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Answers the commands other stages own (`record`, …): `None` when the name is not one of them.
pub type CommandFn = Arc<dyn Fn(&str, &serde_json::Value) -> Option<serde_json::Value> + Send + Sync>;

/// Counters of the publisher, for health.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub connected: AtomicBool,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub connects: AtomicU64,
}

pub struct Publisher {
    pub cfg: MqttConfig,
    pub device_id: String,
    pub outbox: Arc<Outbox>,
    /// Signalled when events were appended to the outbox.
    pub wake: Arc<Notify>,
    pub health: HealthFn,
    /// Commands beyond `ping` and `health`.
    pub commands: Option<CommandFn>,
    pub stats: Arc<PublisherStats>,
    /// Fires once the stages feeding the outbox have stopped: on shutdown the publisher keeps sending
    /// until then and until the outbox is empty, or `drain_timeout` passes.
    pub inputs_done: CancellationToken,
    pub drain_timeout: Duration,
    /// Signalled when the update or model state changed: health and the state topics are published at
    /// once rather than at the next tick.
    pub republish: Arc<Notify>,
}

#[derive(Deserialize)]
struct Head<'a> {
    camera: &'a str,
}

impl Publisher {
    pub fn prefix(&self) -> String {
        self.cfg.topic_prefix.clone().unwrap_or_else(|| format!("perch/{}", self.device_id))
    }

    fn options(&self) -> anyhow::Result<MqttOptions> {
        let url = url::Url::parse(&self.cfg.url)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port().unwrap_or(if self.cfg.tls() { 8883 } else { 1883 });
        let client_id = self.cfg.client_id.clone().unwrap_or_else(|| format!("perch-{}", self.device_id));
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(Duration::from_secs(self.cfg.keep_alive_s));
        o.set_clean_session(true);
        o.set_inflight(self.cfg.max_inflight.max(1) + 8);
        o.set_last_will(LastWill::new(format!("{}/status", self.prefix()), "offline", QoS::AtLeastOnce, true));
        if let Some(user) = &self.cfg.username {
            o.set_credentials(user.clone(), self.cfg.password.clone().unwrap_or_default());
        }
        if self.cfg.tls() {
            let read = |p: &Option<std::path::PathBuf>, what: &str| -> anyhow::Result<Option<Vec<u8>>> {
                p.as_ref().map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read mqtt.{what} {}: {e}", p.display()))).transpose()
            };
            let ca = read(&self.cfg.ca_file, "ca_file")?
                .ok_or_else(|| anyhow::anyhow!("mqtt.url is mqtts:// but mqtt.ca_file is not set: give the CA that signed the broker's certificate"))?;
            let client_auth = match (read(&self.cfg.cert_file, "cert_file")?, read(&self.cfg.key_file, "key_file")?) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            };
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
        }
        Ok(o)
    }

    /// Runs until cancelled, reconnecting with backoff.
    pub async fn run(self, cancel: CancellationToken) {
        // rustls needs a process-wide crypto provider; ring is the one built in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.2);
        let masked = crate::util::mask_uri(&self.cfg.url);
        loop {
            let outcome = match self.options() {
                Ok(opts) => {
                    let (client, eventloop) = AsyncClient::new(opts, 256);
                    self.session(client, eventloop, &cancel, &mut backoff).await
                }
                Err(e) => Err(e.to_string()),
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(broker = %masked, "MQTT connection lost or refused: {e}; retrying in {:.1} s (events wait in the outbox)", delay.as_secs_f64());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection: Ok on cancellation, Err when it broke.
    async fn session(&self, client: AsyncClient, mut eventloop: EventLoop, cancel: &CancellationToken, backoff: &mut Backoff) -> Result<(), String> {
        let prefix = self.prefix();
        let mut connected = false;
        // For every publish request, in order: the outbox seq it carries (None for status, health, replies).
        let mut requested: VecDeque<Option<u64>> = VecDeque::new();
        let mut inflight: HashMap<u16, u64> = HashMap::new();
        let mut last_sent: Option<u64> = None;
        let mut health = tokio::time::interval(Duration::from_secs_f64(self.cfg.health_interval_s));
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            // Shutting down: leave once everything stored is acknowledged (or the drain time is up).
            if let Some(deadline) = drain_until {
                let drained = self.inputs_done.is_cancelled() && inflight.is_empty() && self.outbox.stats().depth == 0;
                if !connected || drained || tokio::time::Instant::now() >= deadline {
                    if connected {
                        let left = self.outbox.stats().depth;
                        if left > 0 {
                            tracing::warn!(events = left, "shutdown: events not yet acknowledged stay in the outbox for the next start");
                        }
                        // The last word on the update and model state (an install that restarts perch
                        // leaves here: its fleet must see "installed", not the state of the last tick).
                        self.publish_health(&client, &mut requested, &prefix);
                        let _ = client.try_publish(format!("{prefix}/status"), QoS::AtLeastOnce, true, "offline");
                        let _ = client.try_disconnect();
                        // Let the goodbye go out.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async { while eventloop.poll().await.is_ok() {} }).await;
                    }
                    return Ok(());
                }
            }
            tokio::select! {
                _ = cancel.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(tokio::time::Instant::now() + self.drain_timeout);
                }
                _ = tick.tick(), if drain_until.is_some() => {
                    self.feed(&client, &mut requested, &inflight, &mut last_sent, &prefix);
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff.reset();
                        self.stats.connected.store(true, Ordering::Relaxed);
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(broker = %crate::util::mask_uri(&self.cfg.url), "MQTT connected");
                        self.request(&client, &mut requested, format!("{prefix}/status"), true, b"online".to_vec(), None);
                        let _ = client.try_subscribe(format!("{prefix}/cmd/+"), QoS::AtLeastOnce);
                        self.publish_health(&client, &mut requested, &prefix);
                        self.feed(&client, &mut requested, &inflight, &mut last_sent, &prefix);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(seq)) = requested.pop_front() {
                            inflight.insert(pkid, seq);
                            self.stats.published.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = inflight.remove(&ack.pkid) {
                            if let Err(e) = self.outbox.ack(seq) {
                                tracing::error!("{e}");
                            }
                            self.stats.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        self.feed(&client, &mut requested, &inflight, &mut last_sent, &prefix);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(name) = p.topic.strip_prefix(&format!("{prefix}/cmd/")) {
                            let reply = self.command(name, &p.payload);
                            let body = serde_json::to_vec(&reply).unwrap_or_default();
                            self.request(&client, &mut requested, format!("{prefix}/cmd/{name}/result"), false, body, None);
                            if name == "health" {
                                self.publish_health(&client, &mut requested, &prefix);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                },
                _ = self.republish.notified(), if connected => {
                    self.publish_health(&client, &mut requested, &prefix);
                }
                _ = self.wake.notified(), if connected => {
                    self.feed(&client, &mut requested, &inflight, &mut last_sent, &prefix);
                }
                _ = health.tick(), if connected => {
                    self.publish_health(&client, &mut requested, &prefix);
                    // Also catches events appended while the request queue was full.
                    self.feed(&client, &mut requested, &inflight, &mut last_sent, &prefix);
                }
            }
        }
    }

    fn request(&self, client: &AsyncClient, requested: &mut VecDeque<Option<u64>>, topic: String, retain: bool, payload: Vec<u8>, seq: Option<u64>) -> bool {
        match client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
            Ok(()) => {
                requested.push_back(seq);
                true
            }
            Err(_) => false,
        }
    }

    fn publish_health(&self, client: &AsyncClient, requested: &mut VecDeque<Option<u64>>, prefix: &str) {
        let health = (self.health)();
        // The update's state rides along with health, and is also retained on its own topic.
        if let Some(ota) = health.get("ota") {
            self.request(client, requested, format!("{prefix}/ota/state"), true, serde_json::to_vec(ota).unwrap_or_default(), None);
        }
        if let Some(model) = health.get("model") {
            self.request(client, requested, format!("{prefix}/model/state"), true, serde_json::to_vec(model).unwrap_or_default(), None);
        }
        self.request(client, requested, format!("{prefix}/health"), true, serde_json::to_vec(&health).unwrap_or_default(), None);
    }

    /// Sends outbox entries after `last_sent` while fewer than `max_inflight` events are unacknowledged.
    fn feed(&self, client: &AsyncClient, requested: &mut VecDeque<Option<u64>>, inflight: &HashMap<u16, u64>, last_sent: &mut Option<u64>, prefix: &str) {
        let busy = inflight.len() + requested.iter().filter(|r| r.is_some()).count();
        let room = (self.cfg.max_inflight as usize).saturating_sub(busy);
        if room == 0 {
            return;
        }
        let batch = match self.outbox.pending(*last_sent, room) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for (seq, payload) in batch {
            let camera = serde_json::from_slice::<Head>(&payload).map(|h| h.camera.to_string()).unwrap_or_else(|_| "unknown".into());
            if !self.request(client, requested, format!("{prefix}/events/{camera}"), false, payload, Some(seq)) {
                break;
            }
            *last_sent = Some(seq);
        }
    }

    /// Answers a command. Malformed or unknown commands get an error reply and change nothing.
    fn command(&self, name: &str, payload: &[u8]) -> serde_json::Value {
        let request: serde_json::Value = if payload.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(payload) {
                Ok(v) => v,
                Err(e) => return serde_json::json!({ "ok": false, "error": format!("payload is not JSON ({e}): send a JSON object, e.g. {{}}") }),
            }
        };
        let id = request.get("id").cloned();
        let mut reply = match name {
            "ping" => serde_json::json!({ "ok": true, "pong": true }),
            "health" => serde_json::json!({ "ok": true, "health": (self.health)() }),
            other => match self.commands.as_ref().and_then(|f| f(other, &request)) {
                Some(reply) => reply,
                None => {
                    serde_json::json!({ "ok": false, "error": format!("unknown command {other:?}: known commands are ping, health, record, model, and ota where [ota] is configured") })
                }
            },
        };
        if let (Some(id), Some(obj)) = (id, reply.as_object_mut()) {
            obj.insert("id".into(), id);
        }
        reply
    }
}
