//! Manual recording on command (`<prefix>/cmd/record`): the same path as events — a reference to the
//! camera's video from `now − pre_roll` when started, up to `now + post_roll` when stopped.
//!
//! ```json
//! {"action": "start", "camera": "gate"}   → {"ok": true, "id": "gate-manual-…", "clip": "/api/clips/gate-manual-….mp4", …}
//! {"action": "stop",  "camera": "gate"}   → {"ok": true, "id": "gate-manual-…", …}
//! ```
//!
//! Starting twice returns the running recording; a recording never stopped ends after `record.manual_max_s`.
//!
//! ```json
//! {"action": "export", "camera": "gate", "from": "2026-12-01T10:00:00Z", "to": "2026-12-01T10:05:00Z"}
//!   → {"ok": true, "url": "/api/export.mp4?camera=gate&from=…&to=…", …}
//! ```
//!
//! An export is made from the segments (by copy) into the clip cache right away, so fetching the URL (with
//! the HTTP bearer token) serves it at once; times are RFC 3339 or ms since the epoch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::config::CameraRecordConfig;
use super::handle::Evidence;
use super::recorder::RecorderMsg;
use super::store::{EventRef, ms};
use crate::events::schema::rfc3339;

pub struct RecordControl {
    /// Weak: commands must not keep the recorder alive at shutdown.
    tx: mpsc::WeakSender<RecorderMsg>,
    /// Per camera: id, and its recording settings when it is recorded.
    cameras: Vec<(String, Option<CameraRecordConfig>)>,
    manual_max: Duration,
    running: Mutex<HashMap<usize, (String, u64)>>,
    /// Makes exports, once the recorder runs.
    exports: std::sync::OnceLock<(std::sync::Arc<Evidence>, tokio::runtime::Handle)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    action: String,
    camera: String,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<Value>,
    /// The span of an export.
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    to: Option<Value>,
}

/// RFC 3339 or ms since the epoch.
fn time_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| crate::util::parse_time(v.as_str()?))
}

fn err(msg: String) -> Value {
    json!({ "ok": false, "error": msg })
}

impl RecordControl {
    pub fn new(tx: &mpsc::Sender<RecorderMsg>, cameras: Vec<(String, Option<CameraRecordConfig>)>, manual_max: Duration) -> Self {
        Self { tx: tx.downgrade(), cameras, manual_max, running: Mutex::new(HashMap::new()), exports: Default::default() }
    }

    /// Exports are made through `evidence`, on `runtime`, from now on.
    pub fn serve_exports(&self, evidence: std::sync::Arc<Evidence>, runtime: tokio::runtime::Handle) {
        let _ = self.exports.set((evidence, runtime));
    }

    fn export(&self, camera: &str, from: Option<&Value>, to: Option<&Value>) -> Value {
        let (Some(from), Some(to)) = (from.and_then(time_of), to.and_then(time_of)) else {
            return err("an export needs \"from\" and \"to\": RFC 3339 times or ms since the epoch".into());
        };
        if from >= to {
            return err("\"from\" must be before \"to\"".into());
        }
        let Some((evidence, runtime)) = self.exports.get() else { return err("recording has not started yet: try again in a moment".into()) };
        let (evidence, id) = (evidence.clone(), camera.to_string());
        runtime.spawn(async move {
            match evidence.export(&id, from, to).await {
                Ok(made) => tracing::info!(camera = %id, gaps = made.gaps.len(), segments = made.span.segments.len(), "export made on command"),
                Err(e) => tracing::warn!(camera = %id, "export on command failed: {e}"),
            }
        });
        let url = format!("/api/export.mp4?camera={camera}&from={from}&to={to}");
        let at = |t: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(t));
        json!({ "ok": true, "camera": camera, "from": at(from), "to": at(to), "url": url })
    }

    /// Answers one `record` command.
    pub fn command(&self, payload: &Value) -> Value {
        let req: Request = match serde_json::from_value(payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                return err(format!(
                    "bad record command ({e}): send {{\"action\": \"start\"|\"stop\"|\"export\", \"camera\": \"<camera id>\"}} (export: with \"from\" and \"to\")"
                ));
            }
        };
        let Some(index) = self.cameras.iter().position(|(id, _)| *id == req.camera) else {
            let known: Vec<&str> = self.cameras.iter().map(|(id, _)| id.as_str()).collect();
            return err(format!("unknown camera {:?}: cameras are {}", req.camera, known.join(", ")));
        };
        let Some(rec) = &self.cameras[index].1 else {
            return err(format!(
                "camera {:?} is not recorded: set [camera.record] enabled = true, with an RTSP or file source carrying H.264/H.265",
                req.camera
            ));
        };
        if req.action == "export" {
            return self.export(&req.camera, req.from.as_ref(), req.to.as_ref());
        }
        let Some(tx) = self.tx.upgrade() else { return err("recording has stopped: perch is shutting down".into()) };
        let now = SystemTime::now();
        let now_ms = ms(now);
        let mut running = self.running.lock().unwrap();
        // A recording that ended by itself (manual_max_s) is no longer running.
        if running.get(&index).is_some_and(|(_, started)| now_ms >= started + self.manual_max.as_millis() as u64) {
            running.remove(&index);
        }
        let clip = |id: &str| format!("/api/clips/{id}.mp4");
        let pre = (rec.pre_roll_s * 1000.0) as u64;
        let manual = |id: &str, started: u64, ended: Option<u64>| EventRef {
            end_ms: ended,
            to_ms: ended.map(|t| t + (rec.post_roll_s * 1000.0) as u64),
            auto_end_ms: Some(started + self.manual_max.as_millis() as u64),
            ..EventRef::starting(id.to_string(), req.camera.clone(), "manual", None, started, started.saturating_sub(pre))
        };
        match req.action.as_str() {
            "start" => {
                if let Some((id, started)) = running.get(&index) {
                    return json!({ "ok": true, "id": id, "camera": req.camera, "already_running": true, "started": rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(*started)), "clip": clip(id) });
                }
                let id = format!("{}-manual-{now_ms:x}", req.camera);
                let auto = now_ms + self.manual_max.as_millis() as u64;
                if tx.try_send(RecorderMsg::Event { ev: manual(&id, now_ms, None), snapshot: None }).is_err() {
                    return err("the recorder is busy: try again in a moment".into());
                }
                running.insert(index, (id.clone(), now_ms));
                json!({ "ok": true, "id": id, "camera": req.camera, "started": rfc3339(now), "auto_stop": rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(auto)), "clip": clip(&id) })
            }
            "stop" => {
                let Some((id, started)) = running.remove(&index) else {
                    return err(format!("no manual recording is running on camera {:?}: send action \"start\" first", req.camera));
                };
                if tx.try_send(RecorderMsg::Event { ev: manual(&id, started, Some(now_ms)), snapshot: None }).is_err() {
                    running.insert(index, (id, started));
                    return err("the recorder is busy: try again in a moment".into());
                }
                json!({ "ok": true, "id": id, "camera": req.camera, "stopped": rfc3339(now), "clip": clip(&id) })
            }
            other => err(format!("unknown action {other:?}: use \"start\", \"stop\" or \"export\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_stop_and_mistakes() {
        let (tx, mut rx) = mpsc::channel(8);
        let ctl = RecordControl::new(&tx, vec![("gate".into(), Some(CameraRecordConfig::default())), ("yard".into(), None)], Duration::from_secs(600));
        let r = ctl.command(&json!({"action": "start", "camera": "gate"}));
        assert_eq!(r["ok"], true, "{r}");
        let id = r["id"].as_str().unwrap().to_string();
        assert!(matches!(rx.try_recv(), Ok(RecorderMsg::Event { ev, .. }) if ev.kind == "manual" && ev.camera == "gate" && ev.is_open()));
        // Idempotent.
        let again = ctl.command(&json!({"action": "start", "camera": "gate"}));
        assert_eq!((again["id"].as_str(), again["already_running"].as_bool()), (Some(id.as_str()), Some(true)));
        assert!(rx.try_recv().is_err());
        let stop = ctl.command(&json!({"action": "stop", "camera": "gate"}));
        assert_eq!(stop["id"].as_str(), Some(id.as_str()));
        match rx.try_recv() {
            Ok(RecorderMsg::Event { ev, .. }) => {
                assert_eq!(ev.id, id);
                assert!(ev.to_ms.unwrap() - ev.from_ms >= 15_000, "pre-roll 5 s + post-roll 10 s");
            }
            _ => panic!("no end of the recording"),
        }
        for (cmd, says) in [
            (json!({"action": "stop", "camera": "gate"}), "send action \"start\" first"),
            (json!({"action": "start", "camera": "nope"}), "cameras are gate, yard"),
            (json!({"action": "start", "camera": "yard"}), "enabled = true"),
            (json!({"action": "pause", "camera": "gate"}), "use \"start\", \"stop\" or \"export\""),
            (json!({"action": "export", "camera": "gate", "from": 5}), "needs \"from\" and \"to\""),
            (json!({"action": "export", "camera": "gate", "from": 5, "to": 2}), "before"),
            (json!({"action": "export", "camera": "gate", "from": "2026-12-01T10:00:00Z", "to": 1_796_119_300_000u64}), "not started yet"),
            (json!({"camera": "gate"}), "bad record command"),
        ] {
            let r = ctl.command(&cmd);
            assert_eq!(r["ok"], false);
            assert!(r["error"].as_str().unwrap().contains(says), "{r}");
        }
    }
}
