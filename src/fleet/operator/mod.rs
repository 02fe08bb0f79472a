//! The operator side of fleet updates: tools run from a workstation or a lab, never on a box.
//!
//! - [`rollout`]: `perch fleet rollout` (waves, failure threshold, pause/resume/abort) and
//!   `perch fleet status`, both over the devices' retained `…/ota/state`.
//! - [`sim`]: `perch fleet simulate`, N real device agents on file slots in one process.
//! - [`serve`]: `perch fleet serve DIR`, a small HTTP server for bundles.

pub mod rollout;
pub mod serve;
pub mod sim;
