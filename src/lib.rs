//! perch: an edge video-analytics appliance.
//!
//! The module tree follows the data: [`capture`] (camera streams → frames) → [`detect`] (frames → boxes) →
//! [`track`] (boxes → events) → [`events`] (outbox → MQTT), with [`record`] keeping the video. [`app`] holds the commands the CLI runs;
//! [`config`] the configuration file shared by all stages.

pub mod app;
pub mod capture;
pub mod config;
pub mod detect;
pub mod events;
pub mod fleet;
pub mod health;
pub mod logging;
pub mod ota;
pub mod record;
pub mod track;
pub mod util;

pub use config::Config;

/// perch's version, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
