//! `perch status`: the service's `/status` for a person on the box (a table) or a script (`--json`).

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches `/status` from the local service, as configured in `config_path`.
pub fn fetch(config_path: &Path) -> anyhow::Result<Value> {
    let config = Config::load(config_path)?;
    let http = &config.http;
    if !http.enabled {
        anyhow::bail!("{}: [http] enabled = false: the service serves no status; enable it and restart perch", config_path.display());
    }
    let addr = http.local_addr().with_context(|| format!("{}: `http.listen` is not an address", config_path.display()))?;
    let token = crate::health::config::load_token(http, &config.state_dir, false)
        .context("perch status needs the token the service uses (run as root, or as the service's user)")?;
    let url = format!("http://{addr}/status");
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build());
    let mut resp = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .with_context(|| format!("cannot reach perch at {url}: is the service running (systemctl status perch)?"))?;
    let status = resp.status();
    let body = resp.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))?;
    if status.as_u16() == 401 {
        anyhow::bail!("{url} refused the token ({}): the service may use another token file; check [http] in {}", body.trim(), config_path.display());
    }
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))
}

/// The status as a table.
pub fn table(s: &Value) -> String {
    let mut o = String::new();
    let str_of = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| if v.is_null() { "-".into() } else { v.to_string() });
    let ready = if s["ready"].as_bool() == Some(true) { "READY" } else { "NOT READY" };
    let _ = writeln!(o, "perch {}  {ready}  (perch {}, up {} s)", str_of(&s["device_id"]), str_of(&s["versions"]["perch"]), s["uptime_s"]);
    for r in s["not_ready"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  not ready: {}", str_of(r));
    }
    let _ = writeln!(o);
    let head = ["CAMERA", "STATE", "FPS", "DETECT", "FRAMES", "DROPPED busy/sink/rec", "RECONNECTS", "EVENTS", "LAST ERROR"];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    for c in s["cameras"].as_array().into_iter().flatten() {
        let d = &c["dropped"];
        let events: u64 = c["events"]["new"].as_u64().unwrap_or(0);
        rows.push(vec![
            str_of(&c["id"]),
            str_of(&c["state"]),
            format!("{:.1}", c["fps"].as_f64().unwrap_or(0.0)),
            format!("{:.1}", c["detect_fps"].as_f64().unwrap_or(0.0)),
            str_of(&c["frames"]),
            format!("{}/{}/{}", d["detector_busy"], d["sink"], d["record"]),
            str_of(&c["reconnects"]),
            events.to_string(),
            str_of(&c["last_error"]),
        ]);
    }
    let widths: Vec<usize> = (0..head.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        let _ = writeln!(o, "{}", line.join("  ").trim_end());
    }
    let det = &s["detector"];
    let _ = writeln!(
        o,
        "\ndetector   {} {}  frames {}  errors {}  inference last {:.1} ms, mean {:.1} ms",
        str_of(&det["state"]["state"]),
        det["provider"].as_str().map(|p| format!("({p})")).unwrap_or_default(),
        det["frames"],
        det["errors"],
        det["last_inference_ms"].as_f64().unwrap_or(0.0),
        det["mean_inference_ms"].as_f64().unwrap_or(0.0),
    );
    if let Some(e) = det["state"]["error"].as_str() {
        let _ = writeln!(o, "           error: {e}");
    }
    let ob = &s["outbox"];
    let mqtt = match &s["mqtt"] {
        Value::Null => "no broker configured".to_string(),
        m => format!("broker {}", if m["connected"].as_bool() == Some(true) { "connected" } else { "DISCONNECTED" }),
    };
    let _ = writeln!(o, "outbox     {} events, {} bytes, {} evicted; {mqtt}", ob["depth"], ob["bytes"], ob["evicted"]);
    let rec = &s["recording"];
    let _ = writeln!(o, "recording  {} segments, {} events, {} bytes in store", rec["segments"], rec["events"], rec["bytes"]);
    if let Some(d) = s["disk"].as_object() {
        let gb = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e9;
        let _ = writeln!(o, "disk       {:.1} GB free of {:.1} GB ({})", gb(&d["free_bytes"]), gb(&d["total_bytes"]), str_of(&d["path"]));
    }
    match &s["ota"] {
        Value::Null => {
            let _ = writeln!(o, "ota        not configured");
        }
        ota => {
            let _ = writeln!(o, "ota        {} (booted slot {}, running {})", str_of(&ota["phase"]), str_of(&ota["booted"]), str_of(&ota["running_version"]));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_cameras_and_reasons() {
        let s = serde_json::json!({
            "device_id": "box", "ready": false, "not_ready": ["camera door delivers no frames (offline)"], "uptime_s": 5,
            "versions": {"perch": "0.1.0"},
            "cameras": [{"id": "door", "state": "offline", "fps": 0.0, "detect_fps": 0.0, "frames": 10,
                         "dropped": {"detector_busy": 1, "sink": 0, "record": 0}, "reconnects": 2, "events": {"new": 3}, "last_error": "gone"}],
            "detector": {"state": {"state": "ready"}, "provider": "cpu", "frames": 10, "errors": 0, "last_inference_ms": 12.0, "mean_inference_ms": 11.0},
            "outbox": {"depth": 0, "bytes": 0, "evicted": 0}, "mqtt": null, "recording": {"segments": 0, "events": 0, "bytes": 0}, "ota": null
        });
        let t = table(&s);
        assert!(t.contains("NOT READY") && t.contains("camera door delivers no frames"), "{t}");
        let row = t.lines().find(|l| l.starts_with("door")).unwrap();
        assert!(row.contains("offline") && row.contains("1/0/0") && row.contains("gone"), "{row}");
        assert!(t.contains("ready (cpu)") && t.contains("not configured"), "{t}");
    }
}
