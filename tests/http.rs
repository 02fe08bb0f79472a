//! The local HTTP endpoints end to end, against real `perch run` processes: readiness that follows a real
//! RTSP camera going away and coming back, the bearer token on `/status`, Prometheus `/metrics`,
//! `perch status`, and the status page rendered by headless Chromium (its screenshot is kept in
//! `target/test-artifacts/status-page.png`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, free_port, media, perch, rtsp_server, serial, wait_port, write_config};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789abcdef";

/// `perch run` with `[http]` on `port` and the test token.
fn service(dir: &Path, cameras: &[String], port: u16) -> (Proc, std::path::PathBuf) {
    let config = write_config(dir, cameras, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    // `[http]` must come before the `[[camera]]` tables (TOML), so it goes right after the top-level keys.
    text = text.replacen("[detector]", &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n[detector]"), 1);
    std::fs::write(&config, text).unwrap();
    let mut cmd = perch();
    cmd.arg("run").arg("--config").arg(&config);
    let p = Proc::spawn(cmd);
    wait_port(port, &p);
    (p, config)
}

/// One HTTP/1.1 GET on loopback: status code and body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // The server sends small bodies with a length; chunked ones are joined here.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { unchunk(body) } else { body.to_string() };
    (code, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `path` until `cond` holds on (code, body), for at most `timeout`; returns the last answer.
fn poll(port: u16, path: &str, timeout: Duration, cond: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = get(port, path, None);
        if cond(code, &body) || Instant::now() > deadline {
            return (code, body);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn ready_flips_as_the_camera_stream_stops_and_comes_back() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (rtsp, port) = (free_port(), free_port());
    let video = media("pedestrians-720p-gop1s.mp4");
    let server = rtsp_server(rtsp, &video, None);
    let cam =
        format!("id = \"door\"\nsource = \"rtsp://127.0.0.1:{rtsp}/cam\"\ndetect_fps = 4\nstall_timeout_s = 3\nreconnect_initial_s = 0.3\nreconnect_max_s = 1");
    let (p, _) = service(dir.path(), &[cam], port);

    assert_eq!(get(port, "/health", None), (200, "ok\n".to_string()));
    let (code, body) = poll(port, "/ready", Duration::from_secs(60), |c, _| c == 200);
    assert_eq!(code, 200, "never ready: {body}\n{}", p.stderr_text());
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);

    // The camera goes away: not ready, and the answer says which camera.
    drop(server);
    let (code, body) = poll(port, "/ready", Duration::from_secs(30), |c, _| c == 503);
    assert_eq!(code, 503, "still ready without its camera: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert!(v["not_ready"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("camera door")), "{body}");

    // It comes back on the same address: ready again.
    let _server = rtsp_server(rtsp, &video, None);
    let (code, body) = poll(port, "/ready", Duration::from_secs(60), |c, _| c == 200);
    assert_eq!(code, 200, "not ready after the camera came back: {body}\n{}", p.stderr_text());
}

#[test]
fn status_needs_the_token_metrics_parse_and_perch_status_prints_both_forms() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cam = "id = \"yard\"\nsource = \"test://ball?width=640&height=360&fps=15\"\ndetect_fps = 5".to_string();
    let (p, config) = service(dir.path(), &[cam], port);
    let (code, body) = poll(port, "/ready", Duration::from_secs(60), |c, _| c == 200);
    assert_eq!(code, 200, "never ready: {body}\n{}", p.stderr_text());

    // /status: refused without the token and with a wrong one, answered with it.
    assert_eq!(get(port, "/status", None).0, 401);
    assert_eq!(get(port, "/status", Some("test-token-0123456789abcdeX")).0, 401);
    assert_eq!(get(port, "/status", Some("")).0, 401);
    let (code, body) = get(port, "/status", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["device_id"], "test-box");
    assert_eq!(s["cameras"][0]["id"], "yard");
    assert_eq!(s["cameras"][0]["state"], "online");
    assert_eq!(s["detector"]["state"]["state"], "ready");
    assert_eq!(s["detector"]["provider"], "cpu");
    for key in ["outbox", "recording", "disk", "versions", "recent_events"] {
        assert!(!s[key].is_null(), "/status lacks {key}: {body}");
    }
    assert!(s["cameras"][0]["dropped"]["detector_busy"].is_u64());
    assert!(!p.stderr_text().contains(TOKEN), "the token leaked into the log");

    // /metrics: Prometheus text; a few families with their labels; cumulative histogram buckets.
    // Once frames flow and the detector has run at least once (a loaded machine loads the model late).
    let (code, metrics) = poll(port, "/metrics", Duration::from_secs(60), |_, b| {
        b.contains("perch_camera_fps{camera=\"yard\"} ")
            && !b.contains("perch_camera_fps{camera=\"yard\"} 0\n")
            && b.contains("perch_inference_seconds_count ")
            && !b.contains("perch_inference_seconds_count 0\n")
    });
    assert_eq!(code, 200);
    let mut buckets = Vec::new();
    let mut count = None;
    for line in metrics.lines().filter(|l| !l.is_empty()) {
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP ") || line.starts_with("# TYPE "), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name: {line}");
        assert!(!series.contains('{') || series.ends_with('}'), "bad labels: {line}");
        if name == "perch_inference_seconds_bucket" {
            buckets.push(value);
        }
        if name == "perch_inference_seconds_count" {
            count = Some(value);
        }
    }
    for needle in [
        "# TYPE perch_inference_seconds histogram",
        "perch_camera_dropped_frames_total{camera=\"yard\",reason=\"detector_busy\"} ",
        "perch_events_total{camera=\"yard\",kind=\"new\"} ",
        "perch_outbox_depth 0",
        "perch_outbox_evicted_total 0",
        "perch_recording_bytes_total{camera=\"yard\"} ",
        "perch_detector_state{state=\"ready\"} 1",
        "perch_inference_seconds_bucket{le=\"+Inf\"} ",
        "perch_camera_skipped_decode_total{camera=\"yard\"} 0",
        "perch_camera_still{camera=\"yard\"} ",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle:?}:\n{metrics}");
    }
    assert!(buckets.len() >= 2 && buckets.windows(2).all(|w| w[0] <= w[1]), "buckets not cumulative: {buckets:?}");
    assert_eq!(Some(*buckets.last().unwrap()), count, "+Inf bucket equals the count");
    assert!(count.unwrap() > 0.0, "no inference counted");
    // The process collector's figures are this service's: its CPU time is counting, and its RSS is the
    // kernel's figure for its pid.
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}:\n{metrics}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert!(value("process_cpu_seconds_total") > 0.0);
    let rss = value("process_resident_memory_bytes");
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let kernel_rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse::<f64>().unwrap() * 1024.0;
    assert!((rss - kernel_rss).abs() < kernel_rss * 0.25, "process_resident_memory_bytes {rss} against VmRSS {kernel_rss}");

    // perch status: a table for people, JSON for scripts, both from the running service.
    let out = perch().arg("status").arg("--config").arg(&config).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let row = table.lines().find(|l| l.starts_with("yard")).unwrap_or_else(|| panic!("no camera row:\n{table}"));
    assert!(row.contains("online"), "{table}");
    assert!(table.contains("READY") && table.contains("detector") && table.contains("outbox"), "{table}");
    let out = perch().arg("status").arg("--json").arg("--config").arg(&config).output().unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).expect("perch status --json prints JSON");
    assert_eq!(json["cameras"][0]["id"], "yard");

    // With another token than the service's, perch status says so and fails.
    let wrong = std::fs::read_to_string(&config).unwrap().replace(TOKEN, "another-token-0123456789");
    let wrong_config = dir.path().join("wrong.toml");
    std::fs::write(&wrong_config, wrong).unwrap();
    let out = perch().arg("status").arg("--config").arg(&wrong_config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn status_page_shows_each_camera_tile_in_headless_chromium() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let video = media("pedestrians-720p-gop1s.mp4");
    let cam = format!("id = \"street\"\nsource = \"file://{}\"\nloop_file = true\ndetect_fps = 5\nlabels = [\"person\"]", video.display());
    let (p, _) = service(dir.path(), &[cam], port);
    // Wait for a picture with people in it (the page draws their boxes).
    let (_, body) = poll(port, "/page.json", Duration::from_secs(60), |c, b| {
        c == 200 && serde_json::from_str::<Value>(b).is_ok_and(|v| v["cameras"][0]["detections"].as_u64().unwrap_or(0) > 0)
    });
    let data: Value = serde_json::from_str(&body).unwrap();
    assert!(data["cameras"][0]["detections"].as_u64().unwrap_or(0) > 0, "no picture with detections: {body}\n{}", p.stderr_text());
    let (code, jpeg) = {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /frame/street HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8_lossy(&raw[9..12]).to_string(), raw[at..].to_vec())
    };
    assert_eq!(code, "200");
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "the frame endpoint serves a JPEG");
    assert_eq!(get(port, "/frame/nope", None).0, 404);

    let url = format!("http://127.0.0.1:{port}/");
    let chromium = |extra: &[&str], profile: &str| {
        let mut c = Command::new("chromium");
        c.args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000", "--window-size=1280,800"])
            .arg(format!("--user-data-dir={}", dir.path().join(profile).display()))
            .args(extra)
            .arg(&url);
        let mut proc = Proc::spawn(c);
        let status = proc.wait_exit(Duration::from_secs(120));
        assert!(status.success(), "chromium failed (apt-get install chromium; scripts/setup.sh does): {}", proc.stderr_text());
        proc.stdout().into_iter().map(|l| l.text).collect::<Vec<_>>().join("\n")
    };
    let dom = chromium(&["--dump-dom"], "profile-dom");
    assert!(dom.contains("id=\"cam-street\""), "no tile for the camera:\n{dom}");
    assert!(dom.contains("src=\"frame/street?seq="), "the tile has no picture:\n{dom}");
    assert!(dom.contains(" fps"), "the tile shows no rate:\n{dom}");
    assert!(dom.contains("detections"), "the tile shows no detections:\n{dom}");

    let artifacts = common::root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(&[&format!("--screenshot={}", png.display())], "profile-shot");
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // A blank 1280×800 page compresses to a few KB; one with a camera picture is far larger.
    assert!(bytes.len() > 50_000, "screenshot suspiciously small ({} bytes): the picture did not render", bytes.len());
}
