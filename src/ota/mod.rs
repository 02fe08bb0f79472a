//! Over-the-air updates, firmware style: signed bundles streamed into the inactive slot, try-once boot,
//! a health-gated commit and automatic rollback. A box must never be bricked by an update.
//!
//! - [`bundle`]: the bundle format (signed manifest with per-chunk SHA-256, then payloads), build/sign/verify.
//! - [`flags`]: the two slots' boot flags as a value with pure transitions; [`boot`]: the bootloader
//!   backends (uboot, grub, tegra, file, app) that only read and write those flags.
//! - [`state`]: the update's state machine, persisted atomically.
//! - [`install`]: streaming install, verified chunk by chunk, made bootable only when complete.
//! - [`health`]: the health gate that commits a trial release or rolls it back.
//! - [`version`]: the release version grammar and its order.

pub mod boot;
pub mod bundle;
pub mod config;
pub mod extract;
pub mod flags;
pub mod health;
pub mod install;
pub mod state;
pub mod version;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use config::{BackendKind, OtaConfig};
pub use flags::{BootFlags, Slot};
pub use state::{Event, OtaState, Phase};

#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    #[error("bundle rejected: {0}")]
    Bundle(String),
    #[error("signature rejected: {0}")]
    Signature(String),
    #[error("install refused: {0}")]
    Refused(String),
    #[error("bootloader: {0}")]
    Boot(String),
    #[error("{0}")]
    Io(String),
    #[error("OTA state: {0}")]
    State(String),
}

/// The OTA side of one box: its config, state file and bootloader.
pub struct Ota {
    pub cfg: OtaConfig,
    /// Holds `state.json` (and the file backend's flags).
    pub dir: PathBuf,
    pub backend: Box<dyn boot::Bootloader>,
}

/// What `perch ota status` prints and `…/ota/state` carries.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub backend: &'static str,
    pub booted: Option<Slot>,
    pub running_version: String,
    #[serde(flatten)]
    pub state: OtaState,
    pub flags: Option<BootFlags>,
}

impl Ota {
    pub fn open(cfg: &OtaConfig, state_dir: &Path) -> Self {
        let dir = cfg.state_dir.clone().unwrap_or_else(|| state_dir.join("ota"));
        let backend = boot::open(cfg, &dir);
        Self { cfg: cfg.clone(), dir, backend }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load_state(&self) -> Result<OtaState, OtaError> {
        OtaState::load(&self.state_path())
    }

    /// Load, apply, save: every transition is on disk before anything acts on it.
    fn transition(&self, event: Event, reason: &str) -> Result<OtaState, OtaError> {
        let mut s = self.load_state()?;
        s.apply(event, reason)?;
        s.save(&self.state_path())?;
        Ok(s)
    }

    /// The release the booted slot holds (`perch`'s own version for a factory image).
    pub fn running_version(&self) -> Result<String, OtaError> {
        let booted = self.backend.booted()?;
        Ok(self.load_state()?.versions[booted.index()].clone().unwrap_or_else(|| crate::VERSION.to_string()))
    }

    pub fn status(&self) -> Result<Status, OtaError> {
        let state = self.load_state()?;
        let booted = self.backend.booted().ok();
        let running_version = booted.and_then(|b| state.versions[b.index()].clone()).unwrap_or_else(|| crate::VERSION.to_string());
        Ok(Status { backend: self.backend.name(), booted, running_version, state, flags: self.backend.read().ok() })
    }

    /// Where a slot's payload goes: a block device or file, or a directory in app mode.
    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        match (self.cfg.backend, slot) {
            (BackendKind::App, s) => self.cfg.app_dir.join(s.lower()),
            (_, Slot::A) => self.cfg.slot_a.clone(),
            (_, Slot::B) => self.cfg.slot_b.clone(),
        }
    }

    /// Start-up: let the bootloader choose (where perch plays it), then reconcile the state with its
    /// choice. A release whose tries ran out is recorded as rolled back, with why.
    pub fn boot(&self) -> Result<OtaState, OtaError> {
        self.backend.power_on()?;
        self.reconcile()
    }

    /// Records which slot runs (idempotent; what the service does at start).
    pub fn reconcile(&self) -> Result<OtaState, OtaError> {
        let state = self.load_state()?;
        // An install still running in another process (app mode restarts the service without a reboot)
        // is not interrupted: leave its state alone.
        if matches!(state.phase, Phase::Installing { .. }) && self.install_running() {
            return Ok(state);
        }
        let slot = self.backend.booted()?;
        let flags = self.backend.read()?;
        let state = self.transition(Event::Booted { slot, flags }, &format!("booted slot {slot}"))?;
        if let Phase::RolledBack { slot: failed, .. } = &state.phase
            && *failed != slot
            && flags.get(*failed).bootable
        {
            self.backend.write(&flags.mark_bad(*failed))?;
        }
        Ok(state)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("install.lock")
    }

    /// Whether a `perch ota install` holds the install lock now.
    pub fn install_running(&self) -> bool {
        std::fs::File::open(self.lock_path()).is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
    }

    /// The health gate passed: the trial slot becomes the one to boot.
    pub fn commit(&self, reason: &str) -> Result<OtaState, OtaError> {
        let state = self.load_state()?;
        let Phase::Trial { slot, .. } = state.phase else {
            return Err(OtaError::State(format!("nothing to commit: the update is {} (only a trial is committed)", state.phase.name())));
        };
        let booted = self.backend.booted()?;
        if booted != slot {
            return Err(OtaError::State(format!("the trial is slot {slot} but slot {booted} is running: boot the trial slot first")));
        }
        // Flags first: if perch dies here, the next boot sees a successful slot and records the commit.
        self.backend.write(&self.backend.read()?.mark_good(slot))?;
        self.transition(Event::Commit, reason)
    }

    /// The release on trial (or pending) failed: boot the previous slot again.
    pub fn rollback(&self, reason: &str) -> Result<OtaState, OtaError> {
        let state = self.load_state()?;
        let (Phase::Trial { slot, .. } | Phase::Installed { slot, .. }) = state.phase else {
            return Err(OtaError::State(format!("nothing to roll back: the update is {}", state.phase.name())));
        };
        self.backend.write(&self.backend.read()?.mark_bad(slot))?;
        let state = self.transition(Event::Rollback { reason: reason.to_string() }, reason)?;
        self.backend.activate(slot.other())?;
        Ok(state)
    }

    /// The golden image for the health gate, resolved against the running slot in app mode.
    pub fn golden_image(&self) -> Option<PathBuf> {
        let g = &self.cfg.golden_image;
        if g.as_os_str().is_empty() {
            return None;
        }
        if g.is_relative() && self.cfg.backend == BackendKind::App {
            return self.backend.booted().ok().map(|s| self.slot_path(s).join(g));
        }
        Some(g.clone())
    }
}
