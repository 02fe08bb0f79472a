//! Over-the-air updates, firmware style: signed bundles streamed into the inactive slot, try-once boot,
//! a health-gated commit and automatic rollback. A box must never be bricked by an update.
//!
//! - [`bundle`]: the bundle format (signed manifest with per-chunk SHA-256, then payloads), build/sign/verify.
//! - [`flags`]: the two slots' boot flags as a value with pure transitions; [`boot`]: the bootloader
//!   backends (uboot, grub, tegra, file, app) that only read and write those flags.
//! - [`state`]: the update's state machine, persisted atomically.
//! - [`install`]: streaming install, verified chunk by chunk, made bootable only when complete.
//! - [`handoff`]: a fleet install on a hardened box: downloaded and checked by the service, written by
//!   the install unit.
//! - [`health`]: the health gate that commits a trial release or rolls it back.
//! - [`version`]: the release version grammar and its order.

pub mod boot;
pub mod bundle;
pub mod config;
pub mod error;
pub mod extract;
pub mod flags;
pub mod handoff;
pub mod health;
pub mod install;
pub mod state;
pub mod version;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use config::{BackendKind, InstallBy, OtaConfig};
pub use error::OtaError;
pub use flags::{BootFlags, Slot};
pub use state::{Event, OtaState, Phase};

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
        if !matches!(state.phase, Phase::Trial { .. }) {
            // The next trial's clock starts afresh.
            let _ = std::fs::remove_file(self.trial_clock_path());
        }
        if let Phase::RolledBack { slot: failed, .. } = &state.phase
            && *failed != slot
            && flags.get(*failed).bootable
        {
            self.backend.write(&flags.mark_bad(*failed))?;
        }
        Ok(state)
    }

    /// Where the trial's start is kept (`trial.json`): the boot it began in and the boot-time clock then.
    fn trial_clock_path(&self) -> PathBuf {
        self.dir.join("trial.json")
    }

    /// How long the release now on trial has been on trial in this boot: its health gate's deadline
    /// counts from the first start, not from each restart, so a release that crashes every few minutes
    /// (slower than systemd's start limit) still times out. A reboot starts the clock again (it spent
    /// one of the bootloader's tries). Records the start on the first call of a trial.
    pub fn trial_elapsed(&self) -> Duration {
        let now = TrialClock::now();
        let path = self.trial_clock_path();
        let stored: Option<TrialClock> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let (start, elapsed) = TrialClock::since(stored, now);
        if stored != Some(start)
            && let Err(e) = state::write_atomic(&path, &serde_json::to_vec(&start).expect("clock serializes"))
        {
            tracing::warn!("ota: cannot record the trial's start ({e}): its deadline counts from this start");
        }
        elapsed
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

    /// Where `perch-ota-install.path` looks for a bundle.
    pub fn incoming_dir(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    /// Boots again after a rollback or a fleet install on a block backend: `ota.reboot_command`, or by
    /// default a durable `<ota dir>/reboot-requested` that the shipped `perch-reboot.path` acts on.
    pub fn request_reboot(&self) -> Result<(), OtaError> {
        if let Some((prog, args)) = self.cfg.reboot_command.split_first() {
            let status = std::process::Command::new(prog)
                .args(args)
                .status()
                .map_err(|e| OtaError::io(format!("cannot run ota.reboot_command {prog:?} (set a command this service may run)"), e))?;
            if !status.success() {
                return Err(OtaError::Io(format!("ota.reboot_command {prog:?} failed ({status}): reboot the box by hand")));
            }
            return Ok(());
        }
        let request = self.dir.join("reboot-requested");
        state::write_atomic(&request, b"")
            .map_err(|e| OtaError::Io(format!("cannot ask for a reboot ({e}): enable perch-reboot.path or set ota.reboot_command")))
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

/// When a trial began: the kernel's boot id and its boot-time clock (monotonic, counts suspend, immune to
/// NTP steps of the wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialClock {
    pub boot_id: u128,
    pub boottime_ms: u64,
}

impl TrialClock {
    /// This boot, now.
    pub fn now() -> Self {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| u128::from_str_radix(&s.trim().replace('-', ""), 16).ok())
            .unwrap_or(0);
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid pointer to a timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        Self { boot_id, boottime_ms: ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000 }
    }

    /// The trial's start and how long ago it was: the stored start if it is of this boot, else now.
    pub fn since(stored: Option<Self>, now: Self) -> (Self, Duration) {
        match stored {
            Some(s) if s.boot_id == now.boot_id && s.boottime_ms <= now.boottime_ms => (s, Duration::from_millis(now.boottime_ms - s.boottime_ms)),
            _ => (now, Duration::ZERO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_clock_runs_across_restarts_and_starts_again_after_a_reboot() {
        let start = TrialClock { boot_id: 7, boottime_ms: 10_000 };
        let later = TrialClock { boot_id: 7, boottime_ms: 250_000 };
        assert_eq!(TrialClock::since(None, start), (start, Duration::ZERO), "the first start records itself");
        assert_eq!(TrialClock::since(Some(start), later), (start, Duration::from_secs(240)), "a restart in the same boot continues");
        let rebooted = TrialClock { boot_id: 8, boottime_ms: 5_000 };
        assert_eq!(TrialClock::since(Some(start), rebooted), (rebooted, Duration::ZERO), "a reboot starts again");
        assert_eq!(TrialClock::since(Some(later), start), (start, Duration::ZERO), "a clock that went back is not trusted");
        assert_ne!(TrialClock::now().boot_id, 0, "this kernel has a boot id");
    }
}
