//! perch's configuration: one TOML file (default `/etc/perch/perch.toml`).
//!
//! Each stage owns its section (`detect::DetectorConfig`, `ota::OtaConfig`), which validates itself
//! and resolves its own paths ([`Section`], in the leaf module `util::config`); this module only composes
//! them, parses with unknown keys rejected, and runs one validation pass that reports every problem with
//! the exact key (`cameras[1].detect_fps`) and what to do about it. Defaults live in the `Default` impls of
//! the section structs, and nowhere else.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod camera;

pub use camera::CameraConfig;

use crate::detect::DetectorConfig;
use crate::events::config::{MqttConfig, OutboxConfig};
use crate::health::HttpConfig;
use crate::ota::OtaConfig;
use crate::record::RecordConfig;
use crate::util::config::resolve;
pub use crate::util::config::{Problem, Section, is_identifier};

/// Where perch looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/perch/perch.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identifies this box to the fleet: MQTT topics, event ids, logs. Letters, digits, `-` and `_`.
    /// Empty: `perch-` and the first 12 characters of `/etc/machine-id`, so one image serves a whole fleet.
    pub device_id: String,
    /// Where perch keeps state that must survive restarts (engine cache, outbox, recordings index).
    pub state_dir: PathBuf,
    pub detector: DetectorConfig,
    pub outbox: OutboxConfig,
    /// The broker events, health and state go to. Without it, events stay in the outbox (bounded).
    pub mqtt: Option<MqttConfig>,
    /// Rolling segments, clips and their retention (`[record]`; each camera opts in with `[camera.record]`).
    pub record: RecordConfig,
    #[serde(rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    /// Updates (A/B slots, health-gated commit). Without it, `perch ota` is unavailable.
    pub ota: Option<OtaConfig>,
    /// Local HTTP endpoints: health, readiness, status, metrics and the status page (`[http]`).
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_id: String::new(),
            state_dir: PathBuf::from("/var/lib/perch"),
            detector: DetectorConfig::default(),
            outbox: OutboxConfig::default(),
            mqtt: None,
            record: RecordConfig::default(),
            cameras: Vec::new(),
            ota: None,
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (check the path, or pass --config FILE)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: `{key}`: {message}")]
    Parse { path: PathBuf, key: String, message: String },
    #[error("{path}: invalid configuration:\n{}", format_problems(.problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn format_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - `{}`: {}", p.key, p.message)).collect::<Vec<_>>().join("\n")
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Self::parse(&text).map_err(|(key, message)| ConfigError::Parse { path: path.to_path_buf(), key, message })?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        if config.device_id.is_empty() {
            config.device_id = default_device_id().unwrap_or_default();
        }
        let problems = config.validate();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { path: path.to_path_buf(), problems }) }
    }

    /// Parses TOML text; on error returns the dotted key path and the message.
    pub fn parse(text: &str) -> Result<Self, (String, String)> {
        // Error excerpts quote the config (the offending line, a bad value): secrets in them are masked.
        let mask = crate::util::secret::mask_config_text;
        let de = toml::Deserializer::parse(text).map_err(|e| ("(syntax)".to_string(), mask(e.to_string().trim())))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { "(top level)".to_string() } else { key };
            (key, mask(e.into_inner().message().trim()))
        })
    }

    /// Each section resolves its own relative paths against `base`, the config file's folder.
    fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.state_dir);
        self.detector.resolve_paths(base);
        self.record.resolve_paths(base);
        for cam in &mut self.cameras {
            cam.resolve_paths(base);
        }
        if let Some(ota) = self.ota.as_mut() {
            ota.resolve_paths(base);
        }
        self.http.resolve_paths(base);
        if let Some(mqtt) = self.mqtt.as_mut() {
            mqtt.resolve_paths(base);
        }
    }

    /// Every problem in the configuration, each naming its key. Empty when the config is usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.device_id.is_empty() {
            problems
                .push(Problem::new("device_id", "missing and /etc/machine-id is unreadable: set a unique id for this box, e.g. device_id = \"site12-gate\""));
        } else if !is_identifier(&self.device_id) {
            problems.push(Problem::new(
                "device_id",
                format!("{:?} may only contain letters, digits, `-` and `_` (it becomes part of MQTT topics)", self.device_id),
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            problems.push(Problem::new("state_dir", "must not be empty"));
        }
        problems.extend(self.detector.validate("detector"));
        if let Some(mqtt) = &self.mqtt {
            problems.extend(mqtt.validate("mqtt"));
        }
        if let Some(ota) = &self.ota {
            problems.extend(ota.validate("ota"));
        }
        if self.outbox.max_bytes < 64 << 10 {
            problems.push(Problem::new("outbox.max_bytes", format!("{} is too small: allow at least 65536 bytes", self.outbox.max_bytes)));
        }
        problems.extend(self.record.validate("record"));
        problems.extend(self.http.validate("http"));
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let key = format!("camera[{i}]");
            problems.extend(cam.validate(&key));
            problems.extend(cam.record.validate(&format!("{key}.record"), &self.record));
            if !cam.id.is_empty() && !seen.insert(cam.id.as_str()) {
                problems.push(Problem::new(format!("{key}.id"), format!("duplicate camera id {:?}: each camera needs its own id", cam.id)));
            }
        }
        problems
    }

    /// The directory for recordings: configured, or `<state_dir>/recordings`.
    pub fn record_dir(&self) -> PathBuf {
        self.record.dir.clone().unwrap_or_else(|| self.state_dir.join("recordings"))
    }

    /// The directory for TensorRT engines: configured, or `<state_dir>/engine-cache`.
    pub fn engine_cache_dir(&self) -> PathBuf {
        self.detector.engine_cache_dir.clone().unwrap_or_else(|| self.state_dir.join("engine-cache"))
    }
}

/// `perch-<first 12 hex digits of /etc/machine-id>`, the device id of a box whose config sets none.
pub fn default_device_id() -> Option<String> {
    let id = std::fs::read_to_string("/etc/machine-id").ok()?;
    let id = id.trim();
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| format!("perch-{}", &id[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
device_id = "gate-1"
state_dir = "/tmp/perch"
[detector]
model = "models/yolox_nano.toml"
providers = ["cpu"]
[[camera]]
id = "front"
source = "rtsp://user:pw@127.0.0.1:8554/cam"
detect_fps = 5.0
labels = ["person", "car"]
min_score = 0.4
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.device_id, "gate-1");
        assert_eq!(c.cameras.len(), 1);
        assert_eq!(c.cameras[0].detect_fps, 5.0);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let bad = GOOD.replace("detect_fps = 5.0", "detect_fsp = 5.0");
        let (key, msg) = Config::parse(&bad).unwrap_err();
        assert_eq!(key, "camera[0].detect_fsp");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let bad = GOOD.replace("min_score = 0.4", "min_score = \"high\"");
        let (key, _) = Config::parse(&bad).unwrap_err();
        assert_eq!(key, "camera[0].min_score");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let bad = GOOD.replace("detect_fps = 5.0", "detect_fps = 0.0").replace("gate-1", "gate 1");
        let c = Config::parse(&bad).unwrap();
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"camera[0].detect_fps".to_string()), "{keys:?}");
        assert!(keys.contains(&"device_id".to_string()), "{keys:?}");
    }

    #[test]
    fn duplicate_camera_ids_are_refused() {
        let dup = format!("{GOOD}\n[[camera]]\nid = \"front\"\nsource = \"test://ball\"\n");
        let c = Config::parse(&dup).unwrap();
        assert!(c.validate().iter().any(|p| p.key == "camera[1].id"));
    }
}
