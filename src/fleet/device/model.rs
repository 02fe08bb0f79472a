//! The device side of model releases, blue/green at the edge: `<prefix>/cmd/model`.
//!
//! `install {url, bundle_sha256, version}` downloads a model bundle (a signed perch bundle holding one
//! model manifest `.toml` and its `.onnx`), checks it like any update (the OTA keyring, `ota.compatible`,
//! every chunk, the named SHA-256) and unpacks it beside the current model under
//! `<state_dir>/models/<version>`. The candidate is loaded and tried in shadow on a sample of the camera
//! frames ([`crate::detect::trial`]); it replaces the current model only if the verdict says so, and the
//! promotion is recorded (`active.json`) before it serves, so a restart keeps it. Otherwise it is deleted
//! and the current model goes on as if nothing happened. `abort` ends a download or trial.
//!
//! The state, with the verdict's figures, is published retained on `<prefix>/model/state`. Commands are
//! idempotent like `…/cmd/ota`: a repeated command id gets its first answer, and a bundle already promoted
//! or rejected is not tried again (one that failed to download or load is). A trial cut short by a
//! restart is recorded as failed, so the command can simply be sent again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::detect::shadow::ShadowVerdict;
use crate::detect::trial::{Trial, TrialSlot};
use crate::detect::{Detector, DetectorConfig, ModelManifest};
use crate::events::schema::rfc3339;
use crate::ota::OtaConfig;
use crate::util::fs::write_atomic;

/// One `…/cmd/model` request.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelCommand {
    Install(super::Install),
    Abort {
        #[serde(default)]
        id: Option<String>,
    },
}

impl ModelCommand {
    fn id(&self) -> Option<&str> {
        match self {
            ModelCommand::Install(super::Install { id, .. }) | ModelCommand::Abort { id } => id.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialPhase {
    #[default]
    Idle,
    /// Downloading and checking the bundle.
    Installing,
    /// Loading the candidate (a TensorRT engine build can take minutes).
    Loading,
    /// Running in shadow beside the current model.
    Shadow,
    Promoted,
    Rejected,
    /// The bundle or the candidate could not be used, or the trial was cut short; sending the command
    /// again retries.
    Failed,
}

impl TrialPhase {
    fn busy(self) -> bool {
        matches!(self, TrialPhase::Installing | TrialPhase::Loading | TrialPhase::Shadow)
    }
}

/// The last model release tried (`models/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    phase: TrialPhase,
    version: Option<String>,
    bundle_sha256: Option<String>,
    started: Option<String>,
    finished: Option<String>,
    verdict: Option<ShadowVerdict>,
    error: Option<String>,
    /// Recent command ids with the reply each got, oldest first.
    #[serde(default)]
    seen: super::Answered,
}

/// The promoted model that serves instead of the configured one (`models/active.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Active {
    pub version: String,
    /// The manifest, relative to the models folder.
    pub manifest: PathBuf,
    pub bundle_sha256: String,
    pub promoted: String,
    pub verdict: ShadowVerdict,
}

/// Called whenever the state changed, so it is published at once.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

pub struct ModelUpdater {
    dir: PathBuf,
    ota: Option<OtaConfig>,
    /// Providers, threads and the rest for loading the candidate; its `model` is the candidate's.
    detector: DetectorConfig,
    engine_cache: PathBuf,
    /// Labels the cameras filter on, by camera: a candidate must know them all.
    labels: Vec<(String, Vec<String>)>,
    slot: Arc<TrialSlot>,
    record: Mutex<Record>,
    /// The model serving now: (version, name); "configured" when it is the config's.
    current: Mutex<(String, String)>,
    /// The running install's cancel flag.
    running: Mutex<Option<Arc<AtomicBool>>>,
    pub on_change: Mutex<Option<OnChange>>,
}

fn now() -> String {
    rfc3339(SystemTime::now())
}

/// A release name usable as a folder name.
fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && !v.starts_with('.') && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
}

impl ModelUpdater {
    /// Opens `<state_dir>/models`, settles what a stop left behind, and returns the updater with the
    /// model manifest the service must load: the promoted one if it is intact, else `detector.model`.
    pub fn open(
        state_dir: &Path,
        ota: Option<OtaConfig>,
        detector: DetectorConfig,
        engine_cache: PathBuf,
        labels: Vec<(String, Vec<String>)>,
    ) -> (Arc<Self>, PathBuf) {
        let dir = state_dir.join("models");
        let mut record: Record = std::fs::read(dir.join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        if record.phase.busy() {
            tracing::warn!(version = ?record.version, "model trial: cut short by the last stop; the current model stays (send the command again to retry)");
            record.phase = TrialPhase::Failed;
            record.error = Some("the trial was cut short: perch stopped during it; send the command again".into());
            record.finished = Some(now());
        }
        let configured = detector.model.clone();
        let name_of = |p: &Path| ModelManifest::load(p).map(|m| m.name).unwrap_or_else(|_| "?".into());
        let mut model = configured.clone();
        let mut current = ("configured".to_string(), name_of(&configured));
        let mut keep = None;
        if let Some(active) = std::fs::read(dir.join("active.json")).ok().and_then(|b| serde_json::from_slice::<Active>(&b).ok()) {
            let path = dir.join(&active.manifest);
            // A damaged promoted model must not keep the service from detecting: the configured one serves.
            let missing = |m: &ModelManifest| {
                labels.iter().find_map(|(camera, ls)| {
                    ls.iter().find(|l| m.label_index(l).is_none()).map(|l| format!("camera {camera} uses label {l:?}, which it lacks"))
                })
            };
            match ModelManifest::load(&path).and_then(|m| m.read_verified().map(|_| m)).map_err(|e| e.to_string()).and_then(|m| match missing(&m) {
                Some(why) => Err(why),
                None => Ok(m),
            }) {
                Ok(m) => {
                    tracing::info!(version = %active.version, model = %m.name, "serving the promoted model");
                    current = (active.version.clone(), m.name);
                    keep = active.manifest.components().next().map(|c| dir.join(c));
                    model = path;
                }
                Err(e) => {
                    let msg = format!("the promoted model {} cannot serve ({e}); the configured model serves instead", active.version);
                    tracing::error!("{msg}");
                    record.error = Some(msg);
                    let _ = std::fs::remove_file(dir.join("active.json"));
                }
            }
        }
        // Nothing but the serving model survives a stop: half-unpacked bundles, candidates, old models.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() && Some(&p) != keep.as_ref() {
                    let _ = std::fs::remove_dir_all(&p);
                }
            }
        }
        let me = Arc::new(Self {
            dir,
            ota,
            detector,
            engine_cache,
            labels,
            slot: Arc::new(TrialSlot::default()),
            record: Mutex::new(record),
            current: Mutex::new(current),
            running: Mutex::new(None),
            on_change: Mutex::new(None),
        });
        me.save(&me.record.lock().unwrap_or_else(|e| e.into_inner()));
        (me, model)
    }

    /// Where the detection loop picks up trials.
    pub fn slot(&self) -> Arc<TrialSlot> {
        self.slot.clone()
    }

    fn save(&self, r: &Record) {
        let _ = std::fs::create_dir_all(&self.dir);
        if let Err(e) = write_atomic(&self.dir.join("state.json"), &serde_json::to_vec_pretty(r).unwrap_or_default()) {
            tracing::warn!("model updates: {e}");
        }
    }

    fn changed(&self) {
        let f = self.on_change.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(f) = f {
            f();
        }
    }

    fn update(&self, f: impl FnOnce(&mut Record)) {
        {
            let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut r);
            self.save(&r);
        }
        self.changed();
    }

    /// The state published on `…/model/state`.
    pub fn state(&self) -> serde_json::Value {
        let r = self.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (version, name) = self.current.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut v = serde_json::json!({
            "current": { "version": version, "model": name },
            "phase": r.phase,
            "version": r.version,
            "bundle_sha256": r.bundle_sha256,
            "started": r.started,
            "finished": r.finished,
            "verdict": r.verdict,
            "error": r.error,
            "ts": now(),
        });
        if r.phase == TrialPhase::Shadow {
            v["compared"] = self.slot.compared.load(Ordering::Relaxed).into();
            v["frames"] = self.detector.trial.frames.into();
        }
        v
    }

    /// Answers one `…/cmd/model` payload; an install runs on its own thread and the reply says it started.
    pub fn command(self: &Arc<Self>, request: &serde_json::Value) -> serde_json::Value {
        let cmd: ModelCommand = match serde_json::from_value(request.clone()) {
            Ok(c) => c,
            Err(e) => {
                return serde_json::json!({ "ok": false, "error": format!("bad model command ({e}): send {{\"op\":\"install\",\"url\":…,\"bundle_sha256\":…,\"version\":…}} or {{\"op\":\"abort\"}}") });
            }
        };
        if let Some(reply) = cmd.id().and_then(|id| self.record.lock().unwrap_or_else(|e| e.into_inner()).seen.replay(id)) {
            return reply;
        }
        let reply = self.execute(&cmd);
        if let Some(id) = cmd.id() {
            self.update(|r| r.seen.remember(id, &reply));
        }
        reply
    }

    fn execute(self: &Arc<Self>, cmd: &ModelCommand) -> serde_json::Value {
        let fail = |e: String| serde_json::json!({ "ok": false, "error": e });
        match cmd {
            ModelCommand::Abort { .. } => {
                let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match running {
                    Some(flag) => {
                        flag.store(true, Ordering::Relaxed);
                        self.slot.abort();
                        serde_json::json!({ "ok": true, "aborted": true })
                    }
                    None => serde_json::json!({ "ok": true, "aborted": false, "note": "no model release is being tried" }),
                }
            }
            ModelCommand::Install(super::Install { url, bundle_sha256, version, reboot, .. }) => {
                if reboot.is_some() {
                    return fail("`reboot` is for …/cmd/ota: a model release is tried in shadow without a reboot; remove the field".into());
                }
                let Some(ota) = self.ota.clone() else {
                    return fail("model updates need the [ota] section (its keyring decides which bundles are trusted): configure it".into());
                };
                if let Err(e) = crate::ota::install::check_remote_source(url) {
                    return fail(e.to_string());
                }
                if !valid_version(version) {
                    return fail(format!("version {version:?} cannot name a model folder: use letters, digits and . _ - + (at most 64)"));
                }
                let sha = bundle_sha256.trim().to_ascii_lowercase();
                if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                    return fail("bundle_sha256 must be the 64 hex digits of the bundle file's SHA-256 (sha256sum prints it)".into());
                }
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                let r = self.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let same = r.bundle_sha256.as_deref() == Some(sha.as_str());
                if running.is_some() {
                    return match same {
                        true => serde_json::json!({ "ok": true, "started": false, "phase": r.phase, "note": "this model release is already being tried" }),
                        false => {
                            fail(format!("model release {} is being tried: wait for its verdict or send {{\"op\":\"abort\"}}", r.version.unwrap_or_default()))
                        }
                    };
                }
                if same && matches!(r.phase, TrialPhase::Promoted | TrialPhase::Rejected) {
                    return serde_json::json!({ "ok": true, "started": false, "phase": r.phase, "note": "this model release was already tried; its verdict stands" });
                }
                if self.current.lock().unwrap_or_else(|e| e.into_inner()).0 == *version {
                    return fail(format!("model release {version} already serves: give a new model a new version"));
                }
                let cancel = Arc::new(AtomicBool::new(false));
                *running = Some(cancel.clone());
                drop(running);
                self.update(|r| {
                    *r = Record {
                        phase: TrialPhase::Installing,
                        version: Some(version.clone()),
                        bundle_sha256: Some(sha.clone()),
                        started: Some(now()),
                        seen: std::mem::take(&mut r.seen),
                        ..Default::default()
                    }
                });
                let (me, url, started) = (self.clone(), url.clone(), version.clone());
                let spawned = std::thread::Builder::new().name("model-trial".into()).spawn(move || {
                    let result = me.try_release(&ota, &url, &sha, &started, cancel);
                    *me.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    if let Err(e) = result {
                        tracing::warn!(version = %started, "model release failed: {e}");
                        let _ = std::fs::remove_dir_all(me.dir.join(&started));
                        me.update(|r| {
                            r.phase = TrialPhase::Failed;
                            r.error = Some(e);
                            r.finished = Some(now());
                        });
                    }
                });
                match spawned {
                    Ok(_) => serde_json::json!({ "ok": true, "started": true, "version": version }),
                    Err(e) => {
                        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        fail(format!("cannot start the model trial thread: {e}"))
                    }
                }
            }
        }
    }

    /// Download, check, load, trial, verdict. Err: why the release could not be tried.
    fn try_release(&self, ota: &OtaConfig, url: &str, sha: &str, version: &str, cancel: Arc<AtomicBool>) -> Result<(), String> {
        let keyring = crate::ota::bundle::Keyring::load(&ota.keyring).map_err(|e| e.to_string())?;
        let dest = self.dir.join(version);
        let expect = crate::ota::extract::Expect { compatible: ota.compatible.clone(), sha256: Some(sha.to_string()), version: Some(version.to_string()) };
        let mut source = crate::ota::install::open_source(url, ota.ca_file.as_deref(), ota.download_stall()).map_err(|e| e.to_string())?;
        let manifest = crate::ota::extract::extract(&mut *source, &keyring, &expect, &dest, Some(cancel.clone())).map_err(|e| e.to_string())?;
        let tomls: Vec<_> = manifest.images.iter().filter(|i| !i.name.contains('/') && i.name.ends_with(".toml")).collect();
        let [toml] = tomls[..] else {
            return Err(format!(
                "a model bundle holds exactly one model manifest (.toml) at its top, and this one has {}: build it with the manifest and its .onnx",
                tomls.len()
            ));
        };
        let path = dest.join(&toml.name);
        let m = ModelManifest::load(&path).map_err(|e| e.to_string())?;
        for (camera, labels) in &self.labels {
            if let Some(l) = labels.iter().find(|l| m.label_index(l).is_none()) {
                return Err(format!("the candidate model {:?} has no label {l:?}, which camera {camera} uses: it cannot replace the current model", m.name));
            }
        }
        self.update(|r| r.phase = TrialPhase::Loading);
        let cfg = DetectorConfig { model: path.clone(), ..self.detector.clone() };
        let candidate = Detector::load(&cfg, &self.engine_cache, &|_| {}).map_err(|e| format!("the candidate model does not load: {e}"))?;
        if cancel.load(Ordering::Relaxed) {
            return Err("aborted by a command".into());
        }
        let t = &self.detector.trial;
        let (report, outcome) = mpsc::sync_channel(1);
        let active = Active {
            version: version.to_string(),
            manifest: Path::new(version).join(&toml.name),
            bundle_sha256: sha.to_string(),
            promoted: String::new(),
            verdict: ShadowVerdict::default(),
        };
        let active_path = self.dir.join("active.json");
        let commit = Box::new(move |v: &ShadowVerdict| {
            let a = Active { promoted: now(), verdict: v.clone(), ..active };
            write_atomic(&active_path, &serde_json::to_vec_pretty(&a).unwrap_or_default()).map_err(|e| e.to_string())
        });
        self.slot.offer(Trial {
            version: version.to_string(),
            candidate,
            sample_every: t.sample_every,
            frames: t.frames,
            min_frames: t.min_frames,
            deadline: Instant::now() + Duration::from_secs(t.timeout_s),
            criteria: t.criteria(),
            commit,
            report,
        });
        self.update(|r| r.phase = TrialPhase::Shadow);
        // Progress reaches `…/model/state` with each health tick; the end comes on the channel.
        let outcome = outcome.recv().map_err(|_| "the trial was cut short: perch stopped during it; send the command again".to_string())?;
        if outcome.aborted {
            // Not a verdict: the same release may be tried again later.
            return Err("aborted by a command; the current model stays".into());
        }
        let old = self.current.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
        if outcome.promoted {
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = (version.to_string(), m.name.clone());
            // The model it replaced is not needed any more (the configured one is never touched).
            if old != "configured" && old != version {
                let _ = std::fs::remove_dir_all(self.dir.join(&old));
            }
        } else {
            let _ = std::fs::remove_dir_all(&dest);
        }
        self.update(|r| {
            r.phase = if outcome.promoted { TrialPhase::Promoted } else { TrialPhase::Rejected };
            r.verdict = Some(outcome.verdict);
            r.finished = Some(now());
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_plain_folders() {
        assert!(valid_version("2.1.0-rc1+b7"));
        for bad in ["", "..", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_trial_cut_short_is_failed_and_a_damaged_promoted_model_gives_way() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir_all(models.join("7/x")).unwrap();
        std::fs::create_dir_all(models.join("8.part")).unwrap();
        let rec = Record { phase: TrialPhase::Shadow, version: Some("8".into()), ..Default::default() };
        std::fs::write(models.join("state.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
        let active =
            Active { version: "7".into(), manifest: "7/m.toml".into(), bundle_sha256: "00".repeat(32), promoted: now(), verdict: ShadowVerdict::default() };
        std::fs::write(models.join("active.json"), serde_json::to_vec(&active).unwrap()).unwrap();
        let configured = DetectorConfig { model: dir.path().join("configured.toml"), ..Default::default() };
        let (u, model) = ModelUpdater::open(dir.path(), None, configured.clone(), dir.path().join("cache"), vec![]);
        // 7/m.toml does not exist: the configured model serves, and the damage is reported.
        assert_eq!(model, configured.model);
        let s = u.state();
        assert_eq!(s["phase"], "failed", "{s}");
        assert_eq!(s["current"]["version"], "configured");
        assert!(s["error"].as_str().unwrap().contains("cannot serve"), "{s}");
        assert!(!models.join("active.json").exists());
        assert!(!models.join("7").exists() && !models.join("8.part").exists(), "leftovers are removed");
        // Commands need the keyring and say what is wrong.
        let r = u.command(&serde_json::json!({"op": "install", "url": "x", "bundle_sha256": "ab", "version": "9"}));
        assert!(r["error"].as_str().unwrap().contains("[ota]"), "{r}");
        let r = u.command(&serde_json::json!({"op": "upgrade"}));
        assert!(r["error"].as_str().unwrap().contains("bad model command"), "{r}");
        assert_eq!(u.command(&serde_json::json!({"op": "abort"}))["aborted"], false);
        // A release comes from an update server, never from a local path the command names.
        let ota = crate::ota::OtaConfig { compatible: "x".into(), ..Default::default() };
        let (u, _) = ModelUpdater::open(dir.path(), Some(ota), configured, dir.path().join("cache"), vec![]);
        for url in ["/etc/shadow", "file:///etc/shadow", "-"] {
            let r = u.command(&serde_json::json!({"op": "install", "url": url, "bundle_sha256": "00".repeat(32), "version": "9"}));
            assert!(r["error"].as_str().unwrap().contains("http:// or https://"), "{url}: {r}");
        }
    }
}
