//! The update's state machine as a plain value, its pure transitions, and its atomic persistence.
//!
//! idle → installing → installed (pending boot) → trial (booted, tries armed) → committed | rolled_back,
//! and failed when an install is refused half-way or interrupted. The file is replaced atomically (write,
//! fsync, rename, fsync the folder), so a SIGKILL or power cut leaves either the old or the new state.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::OtaError;
use super::flags::{BootFlags, Slot};

/// Where the update is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Idle,
    /// Writing `version` into `slot`; the slot is not bootable.
    Installing {
        slot: Slot,
        version: String,
        written: u64,
        total: u64,
    },
    /// Written and verified; the next boot tries it.
    Installed {
        slot: Slot,
        version: String,
    },
    /// Booted from the new slot; committed once the health gate passes.
    Trial {
        slot: Slot,
        version: String,
    },
    Committed {
        slot: Slot,
        version: String,
    },
    /// `version` in `slot` failed; the previous slot runs again.
    RolledBack {
        slot: Slot,
        version: String,
        reason: String,
    },
    /// An install that did not complete; nothing was made bootable.
    Failed {
        version: String,
        reason: String,
    },
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Installing { .. } => "installing",
            Phase::Installed { .. } => "installed",
            Phase::Trial { .. } => "trial",
            Phase::Committed { .. } => "committed",
            Phase::RolledBack { .. } => "rolled_back",
            Phase::Failed { .. } => "failed",
        }
    }
}

/// What happens to the update.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    StartInstall {
        slot: Slot,
        version: String,
        total: u64,
    },
    Progress {
        written: u64,
    },
    InstallDone,
    InstallFailed {
        reason: String,
    },
    /// Service start (or `perch ota boot`): the slot the bootloader chose, and the flags after its choice.
    Booted {
        slot: Slot,
        flags: BootFlags,
    },
    Commit,
    Rollback {
        reason: String,
    },
}

/// One logged transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub ts: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The persisted OTA state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtaState {
    #[serde(flatten)]
    pub phase: Phase,
    /// The release each slot holds, when known (`None`: factory image or being written).
    pub versions: [Option<String>; 2],
    /// The most recent transitions, newest last.
    pub history: Vec<Transition>,
}

impl Default for OtaState {
    fn default() -> Self {
        Self { phase: Phase::Idle, versions: [None, None], history: Vec::new() }
    }
}

const HISTORY: usize = 32;

/// The next phase after `event`, or why the event is not allowed now. Pure.
pub fn next(phase: &Phase, event: &Event) -> Result<Phase, String> {
    use Phase::*;
    Ok(match (phase, event) {
        (Trial { slot, version }, Event::StartInstall { .. }) => {
            return Err(format!("release {version} in slot {slot} is on trial: wait for the health gate to commit or roll it back"));
        }
        (_, Event::StartInstall { slot, version, total }) => Installing { slot: *slot, version: version.clone(), written: 0, total: *total },
        (Installing { slot, version, total, .. }, Event::Progress { written }) => {
            Installing { slot: *slot, version: version.clone(), written: *written, total: *total }
        }
        (Installing { slot, version, .. }, Event::InstallDone) => Installed { slot: *slot, version: version.clone() },
        (Installing { version, .. }, Event::InstallFailed { reason }) => Failed { version: version.clone(), reason: reason.clone() },
        (Installed { slot, version } | Trial { slot, version }, Event::Booted { slot: booted, flags }) if booted == slot => {
            if flags.get(*slot).successful {
                Committed { slot: *slot, version: version.clone() }
            } else {
                Trial { slot: *slot, version: version.clone() }
            }
        }
        (Installed { slot, version }, Event::Booted { flags, .. }) if flags.can_boot(*slot) => Installed { slot: *slot, version: version.clone() },
        (Installed { slot, version } | Trial { slot, version }, Event::Booted { .. }) => RolledBack {
            slot: *slot,
            version: version.clone(),
            reason: format!("slot {slot} used up its boot tries without passing the health gate (crash loop); the bootloader fell back"),
        },
        // A boot ends any install still marked as running: the process that ran it is gone. If the flags
        // already point at the new slot, only the final state write was lost: the slot was verified.
        (Installing { slot, version, .. }, Event::Booted { slot: booted, flags }) => {
            if booted == slot && flags.get(*slot).bootable {
                if flags.get(*slot).successful { Committed { slot: *slot, version: version.clone() } } else { Trial { slot: *slot, version: version.clone() } }
            } else {
                Failed { version: version.clone(), reason: "the install was interrupted (power loss, reboot or kill); install again".into() }
            }
        }
        (p, Event::Booted { .. }) => p.clone(),
        (Trial { slot, version }, Event::Commit) => Committed { slot: *slot, version: version.clone() },
        (Installed { slot, version } | Trial { slot, version }, Event::Rollback { reason }) => {
            RolledBack { slot: *slot, version: version.clone(), reason: reason.clone() }
        }
        (p, e) => return Err(format!("{e:?} is not possible in phase {}", p.name())),
    })
}

impl OtaState {
    /// Applies `event`, recording the transition (progress updates are not recorded).
    pub fn apply(&mut self, event: Event, reason: &str) -> Result<(), OtaError> {
        let phase = next(&self.phase, &event).map_err(OtaError::State)?;
        match (&event, &phase) {
            (Event::StartInstall { slot, .. }, _) => self.versions[slot.index()] = None,
            (_, Phase::Installed { slot, version } | Phase::Trial { slot, version } | Phase::Committed { slot, version }) => {
                self.versions[slot.index()] = Some(version.clone())
            }
            _ => {}
        }
        if !matches!(event, Event::Progress { .. }) && phase != self.phase {
            tracing::info!(from = self.phase.name(), to = phase.name(), "ota: {reason}");
            self.history.push(Transition {
                ts: crate::events::schema::rfc3339(std::time::SystemTime::now()),
                from: self.phase.name().into(),
                to: phase.name().into(),
                reason: reason.into(),
            });
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.phase = phase;
        Ok(())
    }

    /// Reads the state; a missing file is the idle state of a fresh box.
    pub fn load(path: &Path) -> Result<Self, OtaError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| OtaError::caused(format!("OTA state {} is unreadable (restore it or delete it to start from idle)", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(OtaError::io(format!("cannot read OTA state {}", path.display()), e)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), OtaError> {
        write_atomic(path, &serde_json::to_vec_pretty(self).expect("state serializes"))
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content
/// ([`crate::util::fs::write_atomic`]), as an OTA error that names the folder to fix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OtaError> {
    crate::util::fs::write_atomic(path, bytes).map_err(|e| {
        let dir = path.parent().unwrap_or(Path::new("."));
        OtaError::io(format!("cannot write {} (check that {} is writable)", path.display(), dir.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases() -> Vec<Phase> {
        let v = || "2.0.0".to_string();
        vec![
            Phase::Idle,
            Phase::Installing { slot: Slot::B, version: v(), written: 5, total: 10 },
            Phase::Installed { slot: Slot::B, version: v() },
            Phase::Trial { slot: Slot::B, version: v() },
            Phase::Committed { slot: Slot::B, version: v() },
            Phase::RolledBack { slot: Slot::B, version: v(), reason: "x".into() },
            Phase::Failed { version: v(), reason: "x".into() },
        ]
    }

    fn flags_after_install() -> BootFlags {
        BootFlags::factory(Slot::A).finish_install(Slot::B, 3)
    }

    #[test]
    fn the_happy_path() {
        let mut s = OtaState::default();
        s.apply(Event::StartInstall { slot: Slot::B, version: "2.0.0".into(), total: 10 }, "t").unwrap();
        s.apply(Event::Progress { written: 10 }, "t").unwrap();
        s.apply(Event::InstallDone, "t").unwrap();
        assert_eq!(s.versions[1].as_deref(), Some("2.0.0"));
        let (flags, booted) = flags_after_install().boot();
        s.apply(Event::Booted { slot: booted.unwrap(), flags }, "t").unwrap();
        assert_eq!(s.phase, Phase::Trial { slot: Slot::B, version: "2.0.0".into() });
        s.apply(Event::Commit, "t").unwrap();
        assert_eq!(s.phase.name(), "committed");
        assert_eq!(s.history.iter().map(|t| t.to.as_str()).collect::<Vec<_>>(), ["installing", "installed", "trial", "committed"]);
    }

    #[test]
    fn every_phase_answers_every_event() {
        let flags = flags_after_install();
        let events = vec![
            Event::StartInstall { slot: Slot::B, version: "3".into(), total: 1 },
            Event::Progress { written: 1 },
            Event::InstallDone,
            Event::InstallFailed { reason: "r".into() },
            Event::Booted { slot: Slot::A, flags },
            Event::Booted { slot: Slot::B, flags },
            Event::Booted { slot: Slot::A, flags: BootFlags::factory(Slot::A) },
            Event::Commit,
            Event::Rollback { reason: "r".into() },
        ];
        for p in phases() {
            for e in &events {
                let r = next(&p, e);
                let expect_ok = match (&p, e) {
                    (Phase::Trial { .. }, Event::StartInstall { .. }) => false,
                    (_, Event::StartInstall { .. }) | (_, Event::Booted { .. }) => true,
                    (Phase::Installing { .. }, Event::Progress { .. } | Event::InstallDone | Event::InstallFailed { .. }) => true,
                    (Phase::Trial { .. }, Event::Commit) => true,
                    (Phase::Installed { .. } | Phase::Trial { .. }, Event::Rollback { .. }) => true,
                    _ => false,
                };
                assert_eq!(r.is_ok(), expect_ok, "{p:?} + {e:?} -> {r:?}");
                if let Err(msg) = r {
                    assert!(!msg.is_empty());
                }
            }
        }
    }

    #[test]
    fn boots_reconcile_with_what_the_bootloader_did() {
        let v = "2.0.0".to_string();
        let installed = Phase::Installed { slot: Slot::B, version: v.clone() };
        let trial = Phase::Trial { slot: Slot::B, version: v.clone() };
        let pending = flags_after_install();
        // Not rebooted yet: still pending.
        assert_eq!(next(&installed, &Event::Booted { slot: Slot::A, flags: pending }).unwrap(), installed);
        // Booted the new slot: trial.
        assert_eq!(next(&installed, &Event::Booted { slot: Slot::B, flags: pending }).unwrap(), trial);
        assert_eq!(next(&trial, &Event::Booted { slot: Slot::B, flags: pending }).unwrap(), trial);
        // The bootloader fell back: rolled back, whether the trial ever started or not.
        let exhausted = BootFlags { b: super::super::flags::SlotFlags { bootable: true, tries_left: 0, successful: false }, ..pending };
        for p in [&installed, &trial] {
            assert!(matches!(next(p, &Event::Booted { slot: Slot::A, flags: exhausted }).unwrap(), Phase::RolledBack { slot: Slot::B, .. }));
        }
        // An install cut short by a reboot failed; one cut after its flags were written is on trial.
        let installing = Phase::Installing { slot: Slot::B, version: v.clone(), written: 1, total: 2 };
        let begun = BootFlags::factory(Slot::A).begin_install(Slot::B);
        assert!(matches!(next(&installing, &Event::Booted { slot: Slot::A, flags: begun }).unwrap(), Phase::Failed { .. }));
        assert_eq!(next(&installing, &Event::Booted { slot: Slot::B, flags: pending }).unwrap(), trial);
        // A committed slot that boots stays committed.
        let committed = Phase::Committed { slot: Slot::B, version: v };
        assert_eq!(next(&committed, &Event::Booted { slot: Slot::B, flags: pending.mark_good(Slot::B) }).unwrap(), committed);
    }

    #[test]
    fn save_and_load_round_trip_and_missing_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ota/state.json");
        assert_eq!(OtaState::load(&path).unwrap(), OtaState::default());
        let mut s = OtaState::default();
        s.apply(Event::StartInstall { slot: Slot::A, version: "1".into(), total: 1 }, "because").unwrap();
        s.save(&path).unwrap();
        assert_eq!(OtaState::load(&path).unwrap(), s);
        std::fs::write(&path, b"{garbage").unwrap();
        let e = OtaState::load(&path).unwrap_err().to_string();
        assert!(e.contains("unreadable"), "{e}");
    }
}
