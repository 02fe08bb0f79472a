//! The device side of fleet updates: `<prefix>/cmd/ota` commands (`install`, `cancel`, `rollback`) run
//! through the same [`Ota`] install as `perch ota install`, so a command can never skip the keyring check:
//! whatever a command says, only a bundle signed by a trusted key is written.
//!
//! Commands are idempotent. A command id already seen gets the answer it got the first time, and an
//! install of the bundle (by SHA-256) that is already installing, installed, on trial, committed or rolled
//! back is not started again: an MQTT redelivery, a replay or a resumed rollout changes nothing.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::ota::install::InstallOptions;
use crate::ota::{InstallBy, Ota, OtaError, Phase};

/// One `…/cmd/ota` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OtaCommand {
    /// Once installed, the service restarts into the new release (app mode) or asks for a reboot
    /// ([`Ota::request_reboot`]), unless the command says `"reboot": false`.
    Install(super::Install),
    Cancel {
        #[serde(default)]
        id: Option<String>,
    },
    Rollback {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    },
}

impl OtaCommand {
    fn id(&self) -> Option<&str> {
        match self {
            OtaCommand::Install(super::Install { id, .. }) | OtaCommand::Cancel { id } | OtaCommand::Rollback { id, .. } => id.as_deref(),
        }
    }
}

/// What the agent remembers across restarts (`<ota dir>/fleet.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Memory {
    /// The bundle of the most recent install started, and its release.
    last_sha256: Option<String>,
    last_version: Option<String>,
    last_error: Option<String>,
    /// Recent command ids with the reply each got, oldest first.
    seen: super::Answered,
}

/// Runs after an install finished (ok or not), with the command's `reboot`: the service restarts into the
/// new release, the simulator reboots and runs its health gate.
pub type AfterInstall = Arc<dyn Fn(&Agent, Result<(), &OtaError>, bool) + Send + Sync>;
/// Called whenever the state may have changed, so it is published without waiting for the next tick.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

pub struct Agent {
    pub ota: Arc<Ota>,
    memory: Mutex<Memory>,
    /// The running install's cancel flag.
    running: Mutex<Option<Arc<AtomicBool>>>,
    pub after_install: Option<AfterInstall>,
    pub on_change: Option<OnChange>,
}

impl Agent {
    pub fn new(ota: Arc<Ota>) -> Arc<Self> {
        let memory = std::fs::read(ota.dir.join("fleet.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Arc::new(Self { ota, memory: Mutex::new(memory), running: Mutex::new(None), after_install: None, on_change: None })
    }

    pub fn with_hooks(ota: Arc<Ota>, after_install: Option<AfterInstall>, on_change: Option<OnChange>) -> Arc<Self> {
        let mut a = Arc::try_unwrap(Self::new(ota)).unwrap_or_else(|_| unreachable!("just made"));
        a.after_install = after_install;
        a.on_change = on_change;
        Arc::new(a)
    }

    fn save(&self, m: &Memory) {
        if let Err(e) = crate::util::fs::write_atomic(&self.ota.dir.join("fleet.json"), &serde_json::to_vec(m).unwrap_or_default()) {
            tracing::warn!("fleet: {e}");
        }
    }

    /// The state published on `…/ota/state`: the OTA status plus the install's bundle and last error.
    pub fn state(&self) -> serde_json::Value {
        let mut v = match self.ota.status() {
            Ok(s) => serde_json::to_value(s).unwrap_or_default(),
            Err(e) => serde_json::json!({ "phase": "unknown", "error": e.to_string() }),
        };
        if let Some(obj) = v.as_object_mut() {
            obj.remove("history");
            let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            obj.insert("bundle_sha256".into(), m.last_sha256.clone().into());
            obj.insert("last_error".into(), m.last_error.clone().into());
            if let Some(Phase::Installing { written, total, .. }) = self.ota.load_state().ok().map(|s| s.phase) {
                obj.insert("progress".into(), (if total > 0 { written as f64 / total as f64 } else { 0.0 }).into());
            }
            obj.insert("ts".into(), crate::events::schema::rfc3339(std::time::SystemTime::now()).into());
        }
        v
    }

    /// Answers one `…/cmd/ota` payload; an install runs on its own thread and the reply says it started.
    pub fn command(self: &Arc<Self>, request: &serde_json::Value) -> serde_json::Value {
        let cmd: OtaCommand = match serde_json::from_value(request.clone()) {
            Ok(c) => c,
            Err(e) => {
                return serde_json::json!({ "ok": false, "error": format!("bad ota command ({e}): send {{\"op\":\"install\",\"url\":…,\"bundle_sha256\":…,\"version\":…}}, {{\"op\":\"cancel\"}} or {{\"op\":\"rollback\"}}") });
            }
        };
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reply) = cmd.id().and_then(|id| m.seen.replay(id)) {
            return reply;
        }
        let reply = self.execute(&cmd, &mut m);
        if let Some(id) = cmd.id() {
            m.seen.remember(id, &reply);
        }
        self.save(&m);
        drop(m);
        if let Some(f) = &self.on_change {
            f();
        }
        reply
    }

    fn execute(self: &Arc<Self>, cmd: &OtaCommand, m: &mut Memory) -> serde_json::Value {
        let fail = |e: String| serde_json::json!({ "ok": false, "error": e });
        match cmd {
            OtaCommand::Install(super::Install { url, bundle_sha256, version, reboot, .. }) => {
                let reboot = reboot.unwrap_or(true);
                if let Err(e) = crate::ota::install::check_remote_source(url) {
                    return fail(e.to_string());
                }
                let same = m.last_sha256.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(bundle_sha256));
                let phase = match self.ota.load_state() {
                    Ok(s) => s.phase,
                    Err(e) => return fail(e.to_string()),
                };
                let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).is_some();
                if running {
                    return match same {
                        true => serde_json::json!({ "ok": true, "started": false, "phase": "installing", "note": "this bundle is already installing" }),
                        false => fail("another install is running: cancel it first (op cancel)".into()),
                    };
                }
                // The same bundle again: whatever it came to stands (a rolled-back release is not retried
                // by a replay; a failed download is).
                let rolled_back = matches!(&phase, Phase::RolledBack { version: v, .. } if v == version);
                if same && (rolled_back || (m.last_error.is_none() && !matches!(phase, Phase::Failed { .. } | Phase::Idle))) {
                    return serde_json::json!({ "ok": true, "started": false, "phase": phase.name(), "note": "this bundle was already installed; nothing to do" });
                }
                let cancel = Arc::new(AtomicBool::new(false));
                *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(cancel.clone());
                m.last_sha256 = Some(bundle_sha256.to_ascii_lowercase());
                m.last_version = Some(version.clone());
                m.last_error = None;
                let opts = InstallOptions {
                    expect_sha256: Some(bundle_sha256.clone()),
                    expect_version: Some(version.clone()),
                    cancel: Some(cancel),
                    ..Default::default()
                };
                let (me, url, reboot) = (self.clone(), url.clone(), reboot);
                let spawned = std::thread::Builder::new().name("ota-install".into()).spawn(move || me.run_install(&url, &opts, reboot));
                match spawned {
                    Ok(_) => serde_json::json!({ "ok": true, "started": true, "version": version }),
                    Err(e) => {
                        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        fail(format!("cannot start the install thread: {e}"))
                    }
                }
            }
            OtaCommand::Cancel { .. } => match self.running.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                Some(flag) => {
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    serde_json::json!({ "ok": true, "cancelled": true })
                }
                None => serde_json::json!({ "ok": true, "cancelled": false, "note": "no install is running" }),
            },
            OtaCommand::Rollback { reason, .. } => {
                let reason = reason.clone().unwrap_or_else(|| "rolled back by a fleet command".into());
                match self.ota.rollback(&reason) {
                    Ok(s) => {
                        serde_json::json!({ "ok": true, "phase": s.phase.name(), "note": "the previous slot runs after the next reboot (app mode: restart)" })
                    }
                    Err(e) => fail(e.to_string()),
                }
            }
        }
    }

    fn run_install(self: Arc<Self>, url: &str, opts: &InstallOptions, reboot: bool) {
        let on_change = self.on_change.clone();
        let mut last = 0u64;
        let mut progress = |written: u64, total: u64| {
            // A few updates per install are enough for a live table.
            if let Some(f) = &on_change
                && total > 0
                && written * 4 / total > last
            {
                last = written * 4 / total;
                f();
            }
        };
        let result = match self.ota.cfg.install_by() {
            InstallBy::Service => self.ota.install(url, opts, &mut progress),
            // The install unit's progress reaches `…/ota/state` through the state file.
            InstallBy::InstallUnit => self.ota.install_by_unit(url, opts),
        };
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = &result {
            tracing::warn!("fleet install of {url} failed: {e}");
            let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            m.last_error = Some(e.to_string());
            self.save(&m);
        }
        if let Some(f) = &self.on_change {
            f();
        }
        if let Some(after) = &self.after_install {
            after(&self, result.as_ref().map(|_| ()), reboot);
        }
        if let Some(f) = &self.on_change {
            f();
        }
    }

    /// The service's agent: after a successful install with `reboot`, the new release is booted the way the
    /// health gate's rollback does it: a reboot request on slot backends ([`Ota::request_reboot`]), then
    /// `restart` (the service stops; systemd starts it again, and in app mode `perch ota boot` picks the
    /// new slot).
    pub fn for_service(ota: Arc<Ota>, restart: Arc<dyn Fn() + Send + Sync>, on_change: Option<OnChange>) -> Arc<Self> {
        let after: AfterInstall = Arc::new(move |agent: &Agent, result, reboot| {
            if result.is_err() || !reboot {
                return;
            }
            tracing::warn!("ota: fleet install done; restarting into the new release");
            if agent.ota.cfg.backend != crate::ota::BackendKind::App
                && let Err(e) = agent.ota.request_reboot()
            {
                agent.set_error(&e.to_string());
            }
            restart();
        });
        Self::with_hooks(ota, Some(after), on_change)
    }

    /// Records an error for `…/ota/state` (the simulator's failed health gate).
    pub fn set_error(&self, e: &str) {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        m.last_error = Some(e.to_string());
        self.save(&m);
    }
}
