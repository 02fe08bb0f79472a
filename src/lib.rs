//! perch: an edge video-analytics appliance.
//!
//! The module tree follows the data: [`capture`] (camera streams → frames) → [`detect`] (frames → boxes) →
//! [`track`] (boxes → events) → [`events`] (outbox → MQTT), with [`record`] keeping the video, [`health`]
//! reporting, and [`ota`]/[`fleet`] updating the box. [`app`] holds the commands the CLI runs; [`config`]
//! composes the stages' own config sections.
//!
//! Imports run one way, down these layers (`tests/architecture.rs` fails on a loop or an upward import):
//!
//! ```text
//! main.rs          the CLI
//!   ↓
//! app              the commands and the service wiring
//!   ↓
//! config           the file: composes the sections, cross-section checks
//!   ↓
//! stages           capture, detect, track, events, record, health, ota, fleet: each owns its section
//!   ↓              (and never imports app or config); between stages imports follow the data:
//!   ↓              capture → detect → track → events, capture → record (capture imports only util)
//! util             leaf helpers: Problem/Section, backoff, secrets, heartbeat
//! ```

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
