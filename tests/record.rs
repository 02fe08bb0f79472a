//! Recording end to end: segments from an RTSP camera, event and manual clips, a small quota, SIGKILL.
//! Real parts throughout: gst-rtsp-server serving the H.264 test video, mosquitto, ffprobe to read what
//! perch wrote.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Line, Proc, free_port, media, mosquitto, perch, rtsp_server, serial, subscriber, write_config};
use serde_json::Value;

/// A config with one camera (`source`), MQTT on `port` and the given extra `[record]`, `[camera.record]`
/// and `[camera.track]` settings.
fn config(dir: &Path, port: u16, source: &str, record: &str, camera_record: &str) -> PathBuf {
    let cam = format!(
        "id = \"gate\"\nsource = \"{source}\"\ndetect_fps = 5\nlabels = [\"person\"]\n[camera.track]\nend_after_s = 1\n[camera.record]\n{camera_record}"
    );
    let path = write_config(dir, &[cam], "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[detector]", &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nhealth_interval_s = 1\n\n[record]\nsegment_s = 2\n{record}\n\n[detector]"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(config: &Path) -> Proc {
    let mut cmd = perch();
    cmd.arg("run").arg("--config").arg(config);
    Proc::spawn(cmd)
}

/// Messages received on topics under `perch/test-box/` ending with `suffix`.
fn messages(lines: &[Line], suffix: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| l.text.split_once(' ').filter(|(t, _)| t.starts_with("perch/test-box/") && t.ends_with(suffix)))
        .filter_map(|(_, p)| serde_json::from_str(p).ok())
        .collect()
}

fn clips(lines: &[Line]) -> Vec<Value> {
    messages(lines, "/events/gate").into_iter().filter(|m| m["type"] == "clip").collect()
}

fn command(port: u16, name: &str, body: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", &format!("perch/test-box/cmd/{name}"), "-m", body])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mosquitto_pub failed");
}

/// What ffprobe reads from a media file: (codec, duration in s, width).
fn probe(path: &Path) -> (String, f64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe (scripts/setup.sh installs ffmpeg)");
    assert!(out.status.success(), "ffprobe cannot read {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (s["codec_name"].as_str().unwrap_or_default().to_string(), duration, s["width"].as_u64().unwrap_or(0))
}

/// Finished segments of camera `gate`: (start_ms, end_ms, path).
fn segments(state: &Path) -> Vec<(u64, u64, PathBuf)> {
    let dir = state.join("recordings/segments/gate");
    let mut v: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.strip_suffix(".mp4")?.to_string();
            let (a, b) = name.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?, p))
        })
        .collect();
    v.sort();
    v
}

fn parts(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("recordings/segments/gate"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect()
}

fn ms(rfc3339: &Value) -> u64 {
    humantime::parse_rfc3339(rfc3339.as_str().unwrap()).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn an_rtsp_camera_is_recorded_into_segments_and_clips_from_one_session() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, rtsp_port) = (free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "record-test");
    let camera = rtsp_server(rtsp_port, &media("pedestrians-720p-gop1s.mp4"), None);
    let cfg = config(dir.path(), port, &format!("rtsp://127.0.0.1:{rtsp_port}/cam"), "clip_wait_s = 5", "pre_roll_s = 2\npost_roll_s = 2");
    let state = dir.path().join("state");
    let mut p = run(&cfg);

    assert!(wait(Duration::from_secs(30), || segments(&state).len() >= 3), "no segments: {}", p.stderr_text());
    // Detection and recording share the camera's one RTSP session.
    let clients = camera.stdout().iter().filter(|l| l.text == "CLIENT").count();
    assert_eq!(clients, 1, "one RTSP session per camera");

    command(port, "record", r#"{"action": "start", "camera": "gate", "id": 7}"#);
    std::thread::sleep(Duration::from_secs(3));
    command(port, "record", r#"{"action": "stop", "camera": "gate"}"#);
    let manual = |lines: &[Line]| clips(lines).into_iter().find(|c| c["source"] == "manual");
    let complete = |lines: &[Line]| clips(lines).into_iter().find(|c| c["source"] == "event" && c["status"] == "complete");
    assert!(sub.wait_for(Duration::from_secs(40), |out, _| manual(out).is_some() && complete(out).is_some()), "no clips: {}", p.stderr_text());
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(20)).success(), "{}", p.stderr_text());
    let out = sub.stdout();

    // Segments: cut on the 1 s keyframes at about the set 2 s, each a playable MP4 of that length.
    let segs = segments(&state);
    let lens: Vec<u64> = segs.iter().map(|(a, b, _)| b - a).collect();
    let mut sorted = lens.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    assert!((1800..=2300).contains(&median), "segment lengths {lens:?}");
    assert!(lens.iter().all(|&l| l <= 2400), "segment lengths {lens:?}");
    let (codec, duration, width) = probe(&segs[1].2);
    assert_eq!((codec.as_str(), width), ("h264", 1280));
    assert!((duration * 1000.0 - lens[1] as f64).abs() < 200.0, "segment of {} ms plays {duration} s", lens[1]);
    assert!(parts(&state).is_empty(), "the last segment was finished on shutdown: {:?}", parts(&state));

    // An event clip covers its requested window within one segment length, and plays.
    let c = complete(&out).unwrap();
    let (req_start, req_end, start, end) = (ms(&c["requested_start"]), ms(&c["requested_end"]), ms(&c["start"]), ms(&c["end"]));
    assert!(start <= req_start + 2000 && end + 2000 >= req_end, "window {req_start}..{req_end}, clip {start}..{end}");
    let clip_path = state.join("recordings").join(c["clip"].as_str().unwrap());
    let (codec, duration, width) = probe(&clip_path);
    assert_eq!((codec.as_str(), width), ("h264", 1280));
    assert!((duration * 1000.0 - (end - start) as f64).abs() < 500.0, "clip {start}..{end} plays {duration} s");
    assert!((duration - c["duration_s"].as_f64().unwrap()).abs() < 0.2);
    // Its snapshot is a JPEG of the detection frame.
    let snap_path = state.join("recordings").join(c["snapshot"].as_str().unwrap());
    let jpeg = std::fs::read(&snap_path).unwrap();
    assert_eq!((&jpeg[..2], &jpeg[jpeg.len() - 2..]), (&[0xFF, 0xD8][..], &[0xFF, 0xD9][..]));
    assert_eq!(probe(&snap_path).0, "mjpeg");
    // The event's `end` names both.
    let end_msg =
        messages(&out, "/events/gate").into_iter().find(|m| m["type"] == "end" && m["event_id"] == c["event_id"]).expect("end message of the clip's event");
    assert_eq!((&end_msg["clip"], &end_msg["snapshot"]), (&c["clip"], &c["snapshot"]));

    // The manual recording: answered, and its clip spans at least the 3 s it ran plus the rolls.
    let replies = messages(&out, "/cmd/record/result");
    assert!(replies.iter().all(|r| r["ok"] == true), "{replies:?}");
    assert_eq!(replies[0]["id"], 7, "the request id is echoed");
    let m = manual(&out).unwrap();
    assert_eq!(m["event_id"], replies[0]["clip"].as_str().unwrap().trim_start_matches("clips/").trim_end_matches(".mp4"));
    let (codec, duration, _) = probe(&state.join("recordings").join(m["clip"].as_str().unwrap()));
    assert_eq!(codec, "h264");
    assert!(duration >= 4.0, "manual clip of {duration} s");

    // Health reports the recording.
    let health = messages(&out, "/health").pop().expect("health");
    let rec = &health["recording"];
    assert!(rec["segments"].as_u64().unwrap() >= 3, "{rec}");
    assert!(rec["cameras"][0]["bytes"].as_u64().unwrap() > 0, "{rec}");
    assert_eq!(rec["cameras"][0]["unsupported"], Value::Null, "{rec}");
}

#[test]
fn a_small_quota_evicts_the_oldest_recordings_and_events_keep_flowing() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "quota-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    // About 0.45 MB per 2 s segment: 2 MiB fill in a few seconds.
    let quota = 2u64 << 20;
    let cfg = config(dir.path(), port, &format!("file://{}", video.display()), &format!("max_bytes = {quota}"), "pre_roll_s = 1\npost_roll_s = 1");
    let state = dir.path().join("state");
    let mut p = run(&cfg);

    let evictions = |lines: &[Line]| {
        messages(lines, "/health").last().map(|h| {
            let r = &h["recording"];
            r["evicted_segments"]["quota"].as_u64().unwrap_or(0) + r["evicted_clips"]["quota"].as_u64().unwrap_or(0)
        })
    };
    assert!(sub.wait_for(Duration::from_secs(60), |out, _| evictions(out).unwrap_or(0) >= 3), "no evictions: {}", p.stderr_text());
    let first_eviction_seq = messages(&sub.stdout(), "/events/gate").iter().filter_map(|m| m["seq"].as_u64()).max().unwrap_or(0);
    // Events keep coming after the store is full.
    assert!(
        sub.wait_for(Duration::from_secs(30), |out, _| messages(out, "/events/gate")
            .iter()
            .any(|m| m["type"] == "new" && m["seq"].as_u64() > Some(first_eviction_seq))),
        "events stopped: {}",
        p.stderr_text()
    );
    // The store stays within the quota (plus the segment being written and one clip in the making).
    let on_disk: u64 = walk(&state.join("recordings")).iter().filter(|p| p.extension().is_none_or(|e| e != "part")).map(|p| p.metadata().unwrap().len()).sum();
    assert!(on_disk <= quota + (1 << 20), "{on_disk} bytes on disk for a quota of {quota}");
    assert!(p.child.try_wait().unwrap().is_none(), "perch must keep running");
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(20)).success(), "{}", p.stderr_text());
    assert!(p.stderr_text().contains("evicted a"), "evictions are logged");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn after_sigkill_the_store_is_consistent_and_pending_clips_are_made() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "kill-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    let cfg = config(dir.path(), port, &format!("file://{}", video.display()), "clip_wait_s = 1", "pre_roll_s = 2\npost_roll_s = 4");
    let state = dir.path().join("state");
    let mut p = run(&cfg);
    assert!(wait(Duration::from_secs(30), || segments(&state).len() >= 3), "no segments: {}", p.stderr_text());

    // A manual recording stopped just before the kill: its clip waits for 4 s of post-roll.
    command(port, "record", r#"{"action": "start", "camera": "gate"}"#);
    std::thread::sleep(Duration::from_secs(2));
    command(port, "record", r#"{"action": "stop", "camera": "gate"}"#);
    let id = |lines: &[Line]| messages(lines, "/cmd/record/result").iter().find(|r| r["stopped"].is_string()).map(|r| r["id"].as_str().unwrap().to_string());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| id(out).is_some()), "no reply to stop");
    let id = id(&sub.stdout()).unwrap();
    let pending = state.join(format!("recordings/clips/pending/{id}.json"));
    assert!(wait(Duration::from_secs(3), || pending.exists()), "the clip request is on disk before the clip is made");
    assert!(wait(Duration::from_secs(5), || !parts(&state).is_empty()), "a segment is being written");
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(10));
    let unfinished = parts(&state);
    assert!(!unfinished.is_empty());
    // Power loss on top: the newest finished segment lost its tail.
    let (_, _, newest) = segments(&state).pop().unwrap();
    let len = newest.metadata().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(len / 2).unwrap();

    let mut p = run(&cfg);
    let made = |lines: &[Line]| clips(lines).into_iter().find(|c| c["event_id"] == id.as_str());
    assert!(sub.wait_for(Duration::from_secs(40), |out, _| made(out).is_some()), "the pending clip was not made: {}", p.stderr_text());
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(20)).success(), "{}", p.stderr_text());
    let err = p.stderr_text();
    assert!(err.contains("recordings cleaned up after the last stop"), "{err}");
    assert!(err.contains("broken=1"), "{err}");

    // Files and index agree: the unfinished and the broken segment are gone, every segment plays.
    for u in &unfinished {
        assert!(!u.exists(), "{} survived", u.display());
    }
    assert!(!newest.exists(), "the cut segment was removed");
    let segs = segments(&state);
    assert!(segs.len() >= 3);
    for (a, b, path) in &segs {
        let (codec, duration, _) = probe(path);
        assert_eq!(codec, "h264");
        assert!((duration * 1000.0 - (*b - *a) as f64).abs() < 300.0, "{} plays {duration} s", path.display());
    }
    assert!(!pending.exists(), "the request is done");
    let c = made(&sub.stdout()).unwrap();
    assert!(c["status"] == "complete" || c["status"] == "partial", "{c}");
    let (codec, duration, _) = probe(&state.join("recordings").join(c["clip"].as_str().unwrap()));
    assert_eq!(codec, "h264");
    assert!(duration >= 2.0, "clip of {duration} s");
}

#[test]
fn sigterm_mid_event_finishes_the_clip_and_delivers_the_outbox() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "drain-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    let cfg = config(dir.path(), port, &format!("file://{}", video.display()), "", "pre_roll_s = 2\npost_roll_s = 10");
    let state = dir.path().join("state");
    let mut p = run(&cfg);
    // Wait until objects are mid-event, with segments recorded.
    assert!(
        sub.wait_for(Duration::from_secs(40), |out, _| messages(out, "/events/gate").iter().filter(|m| m["type"] == "new").count() >= 3),
        "no events: {}",
        p.stderr_text()
    );
    assert!(wait(Duration::from_secs(10), || segments(&state).len() >= 2));
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(30)).success(), "{}", p.stderr_text());
    let err = p.stderr_text();
    // Everything stored was delivered before exit: each `new` has its `end` and its clip.
    assert!(sub.wait_for(Duration::from_secs(5), |out, _| out.iter().any(|l| l.text == "perch/test-box/status offline")));
    let out = sub.stdout();
    let msgs = messages(&out, "/events/gate");
    let stored: std::collections::BTreeSet<u64> =
        err.lines().filter(|l| l.contains(" event ")).filter_map(|l| l.split("seq=").nth(1)?.split(' ').next()?.parse().ok()).collect();
    let received: std::collections::BTreeSet<u64> = msgs.iter().filter(|m| m["type"] != "clip").filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(received, stored, "the outbox was delivered before exit");
    for new in msgs.iter().filter(|m| m["type"] == "new") {
        let id = &new["event_id"];
        assert!(msgs.iter().any(|m| m["type"] == "end" && &m["event_id"] == id), "no end for {id}");
        let clip = msgs.iter().find(|m| m["type"] == "clip" && &m["event_id"] == id).unwrap_or_else(|| panic!("no clip for {id}"));
        // Stopped before the post-roll: partial or complete, but made and playable.
        assert!(clip["status"] == "complete" || clip["status"] == "partial", "{clip}");
        let (codec, duration, _) = probe(&state.join("recordings").join(clip["clip"].as_str().unwrap()));
        assert_eq!(codec, "h264");
        // It plays for the span it claims. The file's first frames decode before they show (B-frames), which
        // once gave the first segment a broken timeline and a clip of "20 days".
        let span = (ms(&clip["end"]) - ms(&clip["start"])) as f64 / 1000.0;
        assert!((duration - span).abs() < 0.3, "clip {clip} plays {duration} s");
        assert!((duration - clip["duration_s"].as_f64().unwrap()).abs() < 0.2, "clip {clip} plays {duration} s");
    }
    // Among them one that starts with the file, and every segment plays for its span, the first one too.
    let segs = segments(&state);
    assert!(msgs.iter().any(|m| m["type"] == "clip" && ms(&m["start"]) == segs[0].0), "no clip from the first segment");
    for (a, b, path) in &segs {
        let (_, duration, _) = probe(path);
        assert!((duration * 1000.0 - (*b - *a) as f64).abs() < 300.0, "{} plays {duration} s", path.display());
    }
    assert!(parts(&state).is_empty(), "the segment being written was finished");
    let pending = std::fs::read_dir(state.join("recordings/clips/pending")).unwrap().count();
    assert_eq!(pending, 0, "no clip left waiting");
}
