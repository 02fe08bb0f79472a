//! Fleet updates over MQTT.
//!
//! - [`agent`]: the device side, `<prefix>/cmd/ota` (`install`, `cancel`, `rollback`) through [`crate::ota`].
//! - [`model`]: the device side of model releases, `<prefix>/cmd/model`: a candidate tried in shadow,
//!   promoted or rejected ([`crate::detect::trial`]).
//! - [`rollout`]: the fleet side, `perch fleet rollout` (waves, failure threshold, pause/resume/abort) and
//!   `perch fleet status`, both over the devices' retained `…/ota/state`.
//! - [`sim`]: `perch fleet simulate`, N real agents on file slots in one process.
//! - [`serve`]: `perch fleet serve DIR`, a small HTTP server for bundles.

pub mod agent;
pub mod model;
pub mod rollout;
pub mod serve;
pub mod sim;
