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
    /// Messages perch did not send, by reason: larger than `mqtt.max_packet_bytes`, or the reply queue full.
    pub dropped_too_large: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    /// Commands not acted on: larger than `mqtt.max_command_bytes`, or replayed from a retained message.
    pub refused_too_large: AtomicU64,
    pub ignored_retained: AtomicU64,
    /// Health snapshots summarised to fit `mqtt.max_packet_bytes`.
    pub health_summarised: AtomicU64,
}

/// Messages (replies, health, status) waiting for room in the client's request queue, at most; beyond,
/// the newest is dropped and counted.
const QUEUE_MAX: usize = 4096;
/// A connection that stayed up this long was healthy: the reconnect backoff starts from its minimum again.
/// (A broker that drops perch right after every connect gets ever longer pauses instead of a reconnect
/// per second.)
const STABLE: Duration = Duration::from_secs(30);
/// Room left in a packet for its fixed header, topic and packet id.
const PACKET_OVERHEAD: usize = 16;

/// A publish waiting to be handed to the client.
struct Pending {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
    /// The outbox entry it carries (events only).
    seq: Option<u64>,
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

/// What one connection tracks.
struct Session {
    client: AsyncClient,
    /// For every publish handed to the client, in order: the outbox seq it carries (None for the rest).
    requested: VecDeque<Option<u64>>,
    /// Messages waiting for room in the client's request queue.
    queue: VecDeque<Pending>,
    /// Events sent and not yet acknowledged, by packet id.
    inflight: HashMap<u16, u64>,
    last_sent: Option<u64>,
}

impl Session {
    /// Hands one publish to the client; gives it back when the client's request queue is full.
    fn try_publish(&mut self, p: Pending) -> Result<(), Pending> {
        match self.client.try_publish(p.topic.as_str(), QoS::AtLeastOnce, p.retain, p.payload) {
            Ok(()) => {
                self.requested.push_back(p.seq);
                Ok(())
            }
            Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(back)) | rumqttc::ClientError::Request(rumqttc::Request::Publish(back))) => {
                Err(Pending { topic: p.topic, retain: p.retain, payload: back.payload.into(), seq: p.seq })
            }
            Err(_) => Err(Pending { topic: p.topic, retain: p.retain, payload: Vec::new(), seq: p.seq }),
        }
    }
}

/// The health snapshot as JSON of at most `limit` bytes: whole when it fits; else each camera is
/// summarised into counts by state and the ids of those not online (a box with hundreds of cameras);
/// else only the device's identity and the counts. Returns the bytes and whether it was summarised.
pub fn bounded_health(mut health: serde_json::Value, limit: usize) -> (Vec<u8>, bool) {
    let full = serde_json::to_vec(&health).unwrap_or_default();
    if full.len() <= limit {
        return (full, false);
    }
    let cameras = health.get("cameras").and_then(|c| c.as_array()).cloned().unwrap_or_default();
    let mut by_state = serde_json::Map::new();
    let mut not_online = Vec::new();
    for c in &cameras {
        let state = c.get("state").and_then(|s| s.as_str()).unwrap_or("unknown").to_string();
        if state != "online" {
            not_online.push(c.get("id").cloned().unwrap_or_default());
        }
        let n = by_state.entry(state).or_insert(serde_json::json!(0));
        *n = serde_json::json!(n.as_u64().unwrap_or(0) + 1);
    }
    let summary = serde_json::json!({ "count": cameras.len(), "by_state": by_state, "not_online": not_online });
    health["cameras"] = serde_json::json!([]);
    health["cameras_summary"] = summary.clone();
    health["summarised"] = true.into();
    let body = serde_json::to_vec(&health).unwrap_or_default();
    if body.len() <= limit {
        return (body, true);
    }
    let mut minimal = serde_json::json!({ "summarised": true, "cameras_summary": { "count": cameras.len(), "by_state": summary["by_state"] } });
    for key in ["device_id", "version", "ts", "detector", "outbox", "mqtt"] {
        if let Some(v) = health.get(key) {
            minimal[key] = v.clone();
        }
    }
    (serde_json::to_vec(&minimal).unwrap_or_default(), true)
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
        o.set_max_packet_size(self.cfg.max_incoming_bytes, self.cfg.max_packet_bytes);
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
                    self.session(client, eventloop, &cancel).await
                }
                Err(e) => Err((e.to_string(), Duration::ZERO)),
            };
            self.stats.connected.store(false, Ordering::Relaxed);
            match outcome {
                Ok(()) => return,
                Err((e, up)) => {
                    if up >= STABLE {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(broker = %masked, "MQTT connection lost or refused: {}; retrying in {:.1} s (events wait in the outbox)", self.explain(&e), delay.as_secs_f64());
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// A connection error with what to do about it, where perch knows.
    fn explain(&self, e: &str) -> String {
        if e.contains("PayloadSizeLimitExceeded") {
            return format!(
                "{e}: the broker sent a message larger than mqtt.max_incoming_bytes ({} bytes); a retained message on {}/cmd/… may be the cause: \
                 clear it (mosquitto_pub -r -n -t TOPIC) or raise the limit",
                self.cfg.max_incoming_bytes,
                self.prefix()
            );
        }
        e.to_string()
    }

    /// One connection: Ok on cancellation, Err (with how long it was up) when it broke.
    async fn session(&self, client: AsyncClient, mut eventloop: EventLoop, cancel: &CancellationToken) -> Result<(), (String, Duration)> {
        let prefix = self.prefix();
        let mut s = Session { client, requested: VecDeque::new(), queue: VecDeque::new(), inflight: HashMap::new(), last_sent: None };
        let mut connected_at: Option<tokio::time::Instant> = None;
        let mut health = tokio::time::interval(Duration::from_secs_f64(self.cfg.health_interval_s));
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            let connected = connected_at.is_some();
            // Shutting down: leave once everything stored is acknowledged (or the drain time is up).
            if let Some(deadline) = drain_until {
                let drained = self.inputs_done.is_cancelled() && s.inflight.is_empty() && self.outbox.stats().depth == 0;
                if !connected || drained || tokio::time::Instant::now() >= deadline {
                    if connected {
                        self.goodbye(&mut s, &mut eventloop, &prefix).await;
                    }
                    return Ok(());
                }
            }
            // Whatever waits for room goes first, in order.
            self.flush(&mut s);
            tokio::select! {
                _ = cancel.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(tokio::time::Instant::now() + self.drain_timeout);
                }
                _ = tick.tick(), if drain_until.is_some() => {
                    self.feed(&mut s, &prefix);
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected_at = Some(tokio::time::Instant::now());
                        self.stats.connected.store(true, Ordering::Relaxed);
                        self.stats.connects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(broker = %crate::util::mask_uri(&self.cfg.url), "MQTT connected");
                        self.send(&mut s, format!("{prefix}/status"), true, b"online".to_vec());
                        let _ = s.client.try_subscribe(format!("{prefix}/cmd/+"), QoS::AtLeastOnce);
                        self.publish_health(&mut s, &prefix);
                        self.feed(&mut s, &prefix);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(seq)) = s.requested.pop_front() {
                            s.inflight.insert(pkid, seq);
                            self.stats.published.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = s.inflight.remove(&ack.pkid) {
                            if let Err(e) = self.outbox.ack(seq) {
                                tracing::error!("{e}");
                            }
                            self.stats.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        self.feed(&mut s, &prefix);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(name) = p.topic.strip_prefix(&format!("{prefix}/cmd/")) {
                            self.incoming_command(&mut s, &prefix, name, p.retain, &p.payload);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err((e.to_string(), connected_at.map_or(Duration::ZERO, |t| t.elapsed()))),
                },
                _ = self.republish.notified(), if connected => {
                    self.publish_health(&mut s, &prefix);
                }
                _ = self.wake.notified(), if connected => {
                    self.feed(&mut s, &prefix);
                }
                _ = health.tick(), if connected => {
                    self.publish_health(&mut s, &prefix);
                    // Also catches events appended while the request queue was full.
                    self.feed(&mut s, &prefix);
                }
            }
        }
    }

    /// The last word before a clean disconnect: the update and model state (an install that restarts
    /// perch leaves here: its fleet must see "installed", not the state of the last tick), then `offline`.
    async fn goodbye(&self, s: &mut Session, eventloop: &mut EventLoop, prefix: &str) {
        let left = self.outbox.stats().depth;
        if left > 0 {
            tracing::warn!(events = left, "shutdown: events not yet acknowledged stay in the outbox for the next start");
        }
        self.publish_health(s, prefix);
        self.send(s, format!("{prefix}/status"), true, b"offline".to_vec());
        // Let the queue and the goodbye go out.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                self.flush(s);
                if s.queue.is_empty() {
                    break;
                }
                if eventloop.poll().await.is_err() {
                    return;
                }
            }
            let _ = s.client.try_disconnect();
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }

    /// A message on `<prefix>/cmd/<name>`: answered exactly once, or counted and logged where it is not.
    fn incoming_command(&self, s: &mut Session, prefix: &str, name: &str, retained: bool, payload: &[u8]) {
        // A retained command is replayed by the broker at every connect: it was acted on when it was sent,
        // so a replay is ignored (else a retained install, rollback or oversize message would run again
        // and again).
        if retained {
            self.stats.ignored_retained.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                topic = %format!("{prefix}/cmd/{name}"),
                bytes = payload.len(),
                "ignoring a retained command replayed by the broker: commands must not be retained; clear it with mosquitto_pub -r -n -t TOPIC"
            );
            return;
        }
        let reply = if payload.len() > self.cfg.max_command_bytes {
            self.stats.refused_too_large.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(command = name, bytes = payload.len(), limit = self.cfg.max_command_bytes, "refusing an oversize command");
            serde_json::json!({ "ok": false, "error": format!(
                "the command is {} bytes, over the {} bytes commands may have (mqtt.max_command_bytes): send a smaller command",
                payload.len(), self.cfg.max_command_bytes
            ) })
        } else {
            self.command(name, payload)
        };
        let body = serde_json::to_vec(&reply).unwrap_or_default();
        self.send(s, format!("{prefix}/cmd/{name}/result"), false, body);
        if name == "health" {
            self.publish_health(s, prefix);
        }
    }

    /// Queues a message that is not an event (status, health, a reply): sent in order as room allows.
    fn send(&self, s: &mut Session, topic: String, retain: bool, payload: Vec<u8>) {
        if topic.len() + payload.len() + PACKET_OVERHEAD > self.cfg.max_packet_bytes {
            self.stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%topic, bytes = payload.len(), limit = self.cfg.max_packet_bytes, "not sending a message larger than mqtt.max_packet_bytes");
            return;
        }
        // A newer retained state replaces one still waiting for the same topic.
        if retain && let Some(old) = s.queue.iter_mut().find(|p| p.retain && p.topic == topic) {
            old.payload = payload;
            return;
        }
        if s.queue.len() >= QUEUE_MAX {
            self.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%topic, "MQTT send queue full ({QUEUE_MAX} messages): a message was dropped");
            return;
        }
        s.queue.push_back(Pending { topic, retain, payload, seq: None });
    }

    /// Hands queued messages to the client until its request queue is full.
    fn flush(&self, s: &mut Session) {
        while let Some(p) = s.queue.pop_front() {
            if let Err(back) = s.try_publish(p) {
                s.queue.push_front(back);
                return;
            }
        }
    }

    fn publish_health(&self, s: &mut Session, prefix: &str) {
        let health = (self.health)();
        // The update's state rides along with health, and is also retained on its own topic.
        if let Some(ota) = health.get("ota") {
            self.send(s, format!("{prefix}/ota/state"), true, serde_json::to_vec(ota).unwrap_or_default());
        }
        if let Some(model) = health.get("model") {
            self.send(s, format!("{prefix}/model/state"), true, serde_json::to_vec(model).unwrap_or_default());
        }
        let topic = format!("{prefix}/health");
        let limit = self.cfg.max_packet_bytes.saturating_sub(topic.len() + PACKET_OVERHEAD);
        let (body, summarised) = bounded_health(health, limit);
        if summarised {
            self.stats.health_summarised.fetch_add(1, Ordering::Relaxed);
        }
        self.send(s, topic, true, body);
    }

    /// Sends outbox entries after `last_sent` while fewer than `max_inflight` events are unacknowledged.
    fn feed(&self, s: &mut Session, prefix: &str) {
        let busy = s.inflight.len() + s.requested.iter().filter(|r| r.is_some()).count();
        let room = (self.cfg.max_inflight as usize).saturating_sub(busy);
        if room == 0 {
            return;
        }
        let batch = match self.outbox.pending(s.last_sent, room) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for (seq, payload) in batch {
            let camera = serde_json::from_slice::<Head>(&payload).map(|h| h.camera.to_string()).unwrap_or_else(|_| "unknown".into());
            let topic = format!("{prefix}/events/{camera}");
            if topic.len() + payload.len() + PACKET_OVERHEAD > self.cfg.max_packet_bytes {
                // It can never be sent, and would block the queue behind it forever: drop it, loudly.
                self.stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    seq,
                    bytes = payload.len(),
                    limit = self.cfg.max_packet_bytes,
                    "an event is larger than mqtt.max_packet_bytes: dropped from the outbox"
                );
                if let Err(e) = self.outbox.ack(seq) {
                    tracing::error!("{e}");
                }
                s.last_sent = Some(seq);
                continue;
            }
            if s.try_publish(Pending { topic, retain: false, payload, seq: Some(seq) }).is_err() {
                break;
            }
            s.last_sent = Some(seq);
        }
    }

    /// Answers a command. Malformed or unknown commands get an error reply and change nothing.
    /// (A reply echoes the command's `id`; a command is at most `max_command_bytes`, so its reply fits.)
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
            "health" => {
                // The reply must fit a packet like the retained snapshot does.
                let (body, _) = bounded_health((self.health)(), self.cfg.max_packet_bytes.saturating_sub(1024));
                serde_json::json!({ "ok": true, "health": serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default() })
            }
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
