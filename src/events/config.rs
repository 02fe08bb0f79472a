//! Settings of the event pipeline: the outbox (`[outbox]`) and the MQTT connection (`[mqtt]`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::util::config::{Problem, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Payload bytes the outbox may hold while the broker is unreachable; beyond, the oldest are evicted
    /// (counted). 64 MiB is about 100,000 events.
    pub max_bytes: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { max_bytes: 64 << 20 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883` (TLS).
    pub url: String,
    /// Default: `perch-<device_id>`.
    pub client_id: Option<String>,
    /// Default: `perch/<device_id>`.
    pub topic_prefix: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS: CA certificate (PEM) to verify the broker; client certificate and key (PEM) for mutual TLS.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub keep_alive_s: u64,
    /// Interval of the retained health snapshot on `<prefix>/health`.
    pub health_interval_s: f64,
    /// Events published and not yet acknowledged at most.
    pub max_inflight: u16,
    /// The largest MQTT packet perch sends. The health snapshot is summarised to fit (a box with hundreds
    /// of cameras); any other message that would not fit is dropped and counted, never sent to break the
    /// connection.
    pub max_packet_bytes: usize,
    /// The largest MQTT packet perch accepts from the broker. A bigger one makes the client drop the
    /// connection (it cannot be skipped), so this is well above the command limit.
    pub max_incoming_bytes: usize,
    /// Commands larger than this are refused with an error reply.
    pub max_command_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            client_id: None,
            topic_prefix: None,
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keep_alive_s: 30,
            health_interval_s: 30.0,
            max_inflight: 64,
            max_packet_bytes: 256 << 10,
            max_incoming_bytes: 4 << 20,
            max_command_bytes: 64 << 10,
        }
    }
}

impl MqttConfig {
    pub fn tls(&self) -> bool {
        self.url.starts_with("mqtts://") || self.url.starts_with("ssl://")
    }
}

impl Section for MqttConfig {
    fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file].into_iter().flatten() {
            crate::util::config::resolve(base, p);
        }
    }

    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "mqtt" | "mqtts" | "tcp" | "ssl") && u.host_str().is_some_and(|h| !h.is_empty()) => {}
            _ => p.push(Problem::new(
                format!("{key}.url"),
                format!("{:?} is not a broker URL: use mqtt://HOST:1883 or mqtts://HOST:8883", crate::util::mask_uri(&self.url)),
            )),
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(Problem::new(format!("{key}.cert_file"), "mutual TLS needs both cert_file and key_file"));
        }
        if let Some(prefix) = &self.topic_prefix
            && (prefix.is_empty() || prefix.contains(['+', '#']) || prefix.ends_with('/'))
        {
            p.push(Problem::new(
                format!("{key}.topic_prefix"),
                format!("{prefix:?}: use a plain topic without wildcards or a trailing slash, e.g. \"site7/perch/gate-1\""),
            ));
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            p.push(Problem::new(format!("{key}.keep_alive_s"), format!("{} is out of range: use 5..=3600", self.keep_alive_s)));
        }
        if !(self.health_interval_s >= 1.0 && self.health_interval_s <= 3600.0) {
            p.push(Problem::new(format!("{key}.health_interval_s"), format!("{} is out of range: use 1..=3600", self.health_interval_s)));
        }
        if !(1..=1000).contains(&self.max_inflight) {
            p.push(Problem::new(format!("{key}.max_inflight"), format!("{} is out of range: use 1..=1000", self.max_inflight)));
        }
        if !((16 << 10)..=(256 << 20)).contains(&self.max_packet_bytes) {
            p.push(Problem::new(format!("{key}.max_packet_bytes"), format!("{} is out of range: use 16 KiB (16384) to 256 MiB", self.max_packet_bytes)));
        }
        if !((1 << 10)..=(16 << 20)).contains(&self.max_command_bytes) {
            p.push(Problem::new(format!("{key}.max_command_bytes"), format!("{} is out of range: use 1 KiB (1024) to 16 MiB", self.max_command_bytes)));
        }
        if !(self.max_command_bytes..=(256 << 20)).contains(&self.max_incoming_bytes) {
            p.push(Problem::new(
                format!("{key}.max_incoming_bytes"),
                format!("{} is out of range: use at least max_command_bytes ({}) and at most 256 MiB", self.max_incoming_bytes, self.max_command_bytes),
            ));
        }
        p
    }
}
