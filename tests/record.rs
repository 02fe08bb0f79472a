//! Recording end to end: segments from an RTSP camera that events reference (one copy of the video),
//! clips, snapshots and exports over the evidence API, review items, a small quota, SIGKILL. Real parts
//! throughout: gst-rtsp-server serving the H.264 test video, mosquitto, curl as the HTTP client, ffprobe to
//! read what perch served, headless Chromium to play a clip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{Got, fetch, fetch_video, jpeg_size, probe};
use common::{Line, Proc, free_port, media, mosquitto, perch, rtsp_server, serial, subscriber, wait_port, write_config};
use serde_json::Value;

use common::http::TOKEN;

/// A config with one camera (`source`, a file source looping when it ends in ` (looping)`), MQTT on
/// `port`, HTTP on `http` and the given extra `[record]` and `[camera.record]` settings.
fn config(dir: &Path, port: u16, http: u16, source: &str, record: &str, camera_record: &str) -> PathBuf {
    let (source, looping) = match source.strip_suffix(" (looping)") {
        Some(s) => (s, "loop_file = true\n"),
        None => (source, ""),
    };
    let cam = format!(
        "id = \"gate\"\nsource = \"{source}\"\n{looping}detect_fps = 5\nlabels = [\"person\"]\n[camera.track]\nend_after_s = 1\n[camera.record]\n{camera_record}"
    );
    let path = write_config(dir, &[cam], "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[detector]",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nhealth_interval_s = 1\n\n[record]\nsegment_s = 2\n{record}\n\n[detector]"
        ),
    );
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

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// Bytes per second of a media file (its size over its duration).
fn bytes_per_s(video: &Path) -> f64 {
    let (_, duration, _) = probe(video);
    video.metadata().unwrap().len() as f64 / duration
}

/// Video bytes on disk (every file under the recordings but event references) over the bytes the source
/// spends on the span the segments cover: 1.0 is one copy.
fn amplification(state: &Path, source_bytes_per_s: f64) -> (f64, u64, f64) {
    let rec = state.join("recordings");
    let video: u64 = walk(&rec).iter().filter(|p| p.extension().is_some_and(|e| e == "mp4")).map(|p| p.metadata().unwrap().len()).sum();
    let span_s: f64 = segments(state).iter().map(|(a, b, _)| (b - a) as f64 / 1000.0).sum();
    (video as f64 / (span_s * source_bytes_per_s), video, span_s)
}

/// The span a clip or export says it covers, from its headers.
fn covered(got: &Got) -> (u64, u64, String) {
    let h = |k: &str| got.headers.get(k).unwrap_or_else(|| panic!("no {k} header")).clone();
    (ms(&Value::String(h("x-perch-start"))), ms(&Value::String(h("x-perch-end"))), h("x-perch-gaps"))
}

#[test]
fn an_rtsp_camera_is_recorded_once_and_events_reference_its_segments() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, rtsp_port, http) = (free_port(), free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "record-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    let camera = rtsp_server(rtsp_port, &video, None);
    let cfg = config(dir.path(), port, http, &format!("rtsp://127.0.0.1:{rtsp_port}/cam"), "clip_wait_s = 5", "pre_roll_s = 2\npost_roll_s = 2");
    let state = dir.path().join("state");
    let mut p = run(&cfg);
    wait_port(http, &p);

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
    let out = sub.stdout();

    // An event's clip, served on request: it covers its requested window within one segment length, and
    // plays for what it claims.
    let c = complete(&out).unwrap();
    let (req_start, req_end, start, end) = (ms(&c["requested_start"]), ms(&c["requested_end"]), ms(&c["start"]), ms(&c["end"]));
    assert!(start <= req_start + 2000 && end + 2000 >= req_end, "window {req_start}..{req_end}, clip {start}..{end}");
    let clip_url = c["clip"].as_str().unwrap();
    assert_eq!(clip_url, format!("/api/clips/{}.mp4", c["event_id"].as_str().unwrap()));
    let (got, (codec, duration, width)) = fetch_video(http, clip_url, dir.path());
    assert_eq!((codec.as_str(), width), ("h264", 1280));
    assert!((duration * 1000.0 - (end - start) as f64).abs() < 500.0, "clip {start}..{end} plays {duration} s");
    assert!((duration - c["duration_s"].as_f64().unwrap()).abs() < 0.2);
    assert_eq!(covered(&got), (req_start, req_end, String::new()), "a complete clip reports no gap");
    // Its snapshot is a JPEG of the recorded frame, at the stream's resolution (detection sees 416 px).
    let snap = fetch(http, c["snapshot"].as_str().unwrap(), &[]);
    assert_eq!(snap.code, 200, "{}", snap.text());
    assert_eq!((&snap.body[..2], &snap.body[snap.body.len() - 2..]), (&[0xFF, 0xD8][..], &[0xFF, 0xD9][..]));
    assert_eq!(jpeg_size(&snap.body), (1280, 720));
    // The event's `end` names both.
    let end_msg =
        messages(&out, "/events/gate").into_iter().find(|m| m["type"] == "end" && m["event_id"] == c["event_id"]).expect("end message of the clip's event");
    assert_eq!((&end_msg["clip"], &end_msg["snapshot"]), (&c["clip"], &c["snapshot"]));

    // The manual recording: answered, and its clip spans at least the 3 s it ran plus the rolls.
    let replies = messages(&out, "/cmd/record/result");
    assert!(replies.iter().all(|r| r["ok"] == true), "{replies:?}");
    assert_eq!(replies[0]["id"], 7, "the request id is echoed");
    let m = manual(&out).unwrap();
    assert_eq!(m["clip"], replies[0]["clip"]);
    let (_, (codec, duration, _)) = fetch_video(http, m["clip"].as_str().unwrap(), dir.path());
    assert_eq!(codec, "h264");
    assert!(duration >= 4.0, "manual clip of {duration} s");

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
    // One copy of the video: the clips served were made in the bounded cache, which a restart empties;
    // the store itself is the segments.
    let (ratio, bytes, span_s) = amplification(&state, bytes_per_s(&video));
    let cache: u64 = walk(&state.join("recordings/cache")).iter().map(|p| p.metadata().unwrap().len()).sum();
    let ratio_without_cache = (bytes - cache) as f64 / (span_s * bytes_per_s(&video));
    eprintln!("storage: {bytes} bytes of video ({cache} in the clip cache) for {span_s:.1} s of source: {ratio_without_cache:.3}x, {ratio:.3}x with the cache");
    assert!(
        ratio_without_cache <= 1.1,
        "{bytes} bytes of video ({cache} cached) for {span_s} s of source: {ratio_without_cache:.2}x (with the cache {ratio:.2}x)"
    );

    // Health reports the recording.
    let health = messages(&out, "/health").pop().expect("health");
    let rec = &health["recording"];
    assert!(rec["segments"].as_u64().unwrap() >= 3, "{rec}");
    assert!(rec["events"].as_u64().unwrap() >= 2, "{rec}");
    assert!(rec["cameras"][0]["bytes"].as_u64().unwrap() > 0, "{rec}");
    assert_eq!(rec["cameras"][0]["unsupported"], Value::Null, "{rec}");
}

#[test]
fn the_evidence_api_serves_review_items_ranges_exports_and_deletes_and_a_browser_plays_a_clip() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "evidence-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    // A busy street, looping: dozens of people, each an event with 5 s of pre-roll and 10 s of post-roll.
    let source = format!("file://{} (looping)", video.display());
    let cfg = config(dir.path(), port, http, &source, "clip_wait_s = 2\nclip_cache_bytes = 67108864\nreview_max_s = 10", "pre_roll_s = 5\npost_roll_s = 10");
    let state = dir.path().join("state");
    let mut p = run(&cfg);
    wait_port(http, &p);
    assert!(
        sub.wait_for(Duration::from_secs(90), |out, _| clips(out).iter().filter(|c| c["status"] != "failed").count() >= 8),
        "too few clips: {}",
        p.stderr_text()
    );
    // A review item that has ended and whose video is all recorded.
    let recorded_item = || {
        let segs = segments(&state);
        let (first, last) = (segs.first().map_or(u64::MAX, |s| s.0), segs.last().map_or(0, |s| s.1));
        fetch(http, "/api/review?limit=10000", &[]).json()["review"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["from_ms"].as_u64() >= Some(first) && r["to_ms"].as_u64().is_some_and(|t| t <= last))
            .cloned()
    };
    assert!(wait(Duration::from_secs(120), || recorded_item().is_some()), "no review item ended: {}", p.stderr_text());
    let item = recorded_item().unwrap();
    // A manual recording stays open while we look.
    command(port, "record", r#"{"action": "start", "camera": "gate"}"#);
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| !messages(out, "/cmd/record/result").is_empty()));
    let manual_id = messages(&sub.stdout(), "/cmd/record/result")[0]["id"].as_str().unwrap().to_string();

    // Events and review items: overlapping events form one item, so there are fewer items than events,
    // and every event is in exactly one.
    let events = fetch(http, "/api/events?camera=gate&limit=10000", &[]).json()["events"].as_array().unwrap().clone();
    let review = fetch(http, "/api/review?limit=10000", &[]).json()["review"].as_array().unwrap().clone();
    let in_items: Vec<&str> = review.iter().flat_map(|r| r["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap())).collect();
    let mut listed: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut grouped = in_items.clone();
    listed.sort();
    grouped.sort();
    assert_eq!(listed, grouped, "every event in one review item");
    assert!(review.len() < events.len(), "{} review items for {} events", review.len(), events.len());
    assert!(events.iter().any(|e| e["id"] == manual_id.as_str() && e["open"] == true), "the running manual recording is listed as open");
    let person = fetch(http, "/api/events?label=person&limit=10000", &[]).json()["events"].as_array().unwrap().len();
    assert_eq!(person, events.len() - 1, "every event but the manual one is a person");

    // The review item's clip: it covers its span, within a segment on each side, and plays.
    let (got, (codec, duration, _)) = fetch_video(http, item["clip"].as_str().unwrap(), dir.path());
    let (from, to, gaps) = covered(&got);
    assert_eq!((from, to), (item["from_ms"].as_u64().unwrap(), item["to_ms"].as_u64().unwrap()));
    assert_eq!(codec, "h264");
    assert_eq!(gaps, "", "recorded video has no gap");
    let span_s = (to - from) as f64 / 1000.0;
    assert!(duration >= span_s - 0.3 && duration <= span_s + 2.0 * 2.4, "review item of {span_s} s plays {duration} s");
    // A range of it: what a `<video>` asks for when it seeks.
    let total = got.body.len();
    let range = fetch(http, item["clip"].as_str().unwrap(), &["-r", "1000-1999"]);
    assert_eq!(range.code, 206, "{:?}", range.headers);
    assert_eq!(range.headers.get("content-range"), Some(&format!("bytes 1000-1999/{total}")));
    assert_eq!(range.body, got.body[1000..2000], "the range is the same file's bytes");

    // An export of a span that starts before anything was recorded: served, with the gap named.
    let first = segments(&state)[0].0;
    let (got, (codec, duration, _)) = fetch_video(http, &format!("/api/export.mp4?camera=gate&from={}&to={}", first - 10_000, first + 6_000), dir.path());
    let (_, _, gaps) = covered(&got);
    assert_eq!(codec, "h264");
    assert!(gaps.starts_with(&format!("{}/", rfc(first - 10_000))), "export gaps: {gaps:?}");
    assert!((4.0..=8.5).contains(&duration), "a 6 s export plays {duration} s");
    // An export asked for over MQTT is made at once; fetching its URL then serves it from the cache.
    let (a, b) = (first + 2_000, first + 8_000);
    // `clips_made` is a gauge the recorder refreshes within 5 s.
    let made = || fetch(http, "/status", &[]).json()["recording"]["clips_made"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let before = made();
    command(port, "record", &format!(r#"{{"action": "export", "camera": "gate", "from": {a}, "to": {b}}}"#));
    let reply = |lines: &[Line]| messages(lines, "/cmd/record/result").into_iter().find(|r| r["url"].is_string());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| reply(out).is_some()), "no export reply");
    let url = reply(&sub.stdout()).unwrap()["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("/api/export.mp4?camera=gate&from={a}&to={b}"));
    assert!(wait(Duration::from_secs(10), || p.stderr_text().contains("export made on command")), "{}", p.stderr_text());
    let (_, (codec, _, _)) = fetch_video(http, &url, dir.path());
    assert_eq!(codec, "h264");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(made(), before + 1, "made once, on the command; the download came from the cache");
    for (path, code, says) in [
        ("/api/export.mp4?camera=nope&from=1&to=2", 400, "no camera \"nope\""),
        ("/api/export.mp4?camera=gate&from=5&to=2", 400, "before"),
        ("/api/export.mp4?camera=gate&from=1&to=2", 404, "nothing is recorded"),
        ("/api/clips/nope.mp4", 404, "GET /api/events"),
        ("/api/events?since=1", 400, "unknown parameter"),
    ] {
        let got = fetch(http, path, &[]);
        assert_eq!(got.code, code, "{path}: {}", got.text());
        assert!(got.text().contains(says), "{path}: {}", got.text());
    }

    // Deleting: an open event is refused; an ended one goes, with the video only it held.
    let open = fetch(http, &format!("/api/events/{manual_id}"), &["-X", "DELETE"]);
    assert_eq!(open.code, 409, "{}", open.text());
    let victim = events.iter().find(|e| e["open"] == false && e["snapshot"].is_string()).expect("an ended event with a snapshot");
    let id = victim["id"].as_str().unwrap();
    let snap = fetch(http, victim["snapshot"].as_str().unwrap(), &[]);
    assert_eq!(snap.code, 200, "{}", snap.text());
    assert_eq!(jpeg_size(&snap.body), (1280, 720));
    let deleted = fetch(http, &format!("/api/events/{id}"), &["-X", "DELETE"]);
    assert_eq!(deleted.code, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["id"], id);
    assert_eq!(fetch(http, &format!("/api/clips/{id}.mp4"), &[]).code, 404);
    assert_eq!(fetch(http, victim["snapshot"].as_str().unwrap(), &[]).code, 404);
    assert_eq!(fetch(http, &format!("/api/events/{id}"), &["-X", "DELETE"]).code, 404);

    // The status page's review list plays in a real browser.
    let browser = Command::new("python3")
        .arg(common::root().join("tests/helpers/browser_video.py"))
        .args(["--url", &format!("http://127.0.0.1:{http}/"), "--selector", "#review video", "--timeout", "60"])
        .output()
        .expect("python3");
    let report = String::from_utf8_lossy(&browser.stdout).to_string();
    assert!(browser.status.success(), "the browser did not play the review clips: {report} {}", String::from_utf8_lossy(&browser.stderr));
    let played: Value = serde_json::from_str(report.trim()).unwrap();
    let videos = played["videos"].as_array().unwrap();
    assert!(!videos.is_empty() && videos.iter().all(|v| v["readyState"].as_u64() >= Some(3) && v["videoWidth"] == 1280), "{report}");

    // A file camera's queues block rather than drop: nothing is counted as dropped.
    let status = fetch(http, "/status", &[]).json();
    assert_eq!(status["recording"]["cameras"][0]["dropped_frames"], 0, "{}", status["recording"]);

    // One copy of the video on the busy street, however many events overlap it.
    command(port, "record", r#"{"action": "stop", "camera": "gate"}"#);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(30)).success(), "{}", p.stderr_text());
    let (ratio, bytes, span_s) = amplification(&state, bytes_per_s(&video));
    let cache: u64 = walk(&state.join("recordings/cache")).iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(cache <= 64 << 20, "the clip cache holds {cache} bytes");
    let without_cache = (bytes - cache) as f64 / (span_s * bytes_per_s(&video));
    let events = clips(&sub.stdout()).len();
    eprintln!(
        "storage: {events} events, {bytes} bytes of video ({cache} in the clip cache) for {span_s:.1} s of source: {without_cache:.3}x, {ratio:.3}x with the cache"
    );
    assert!(without_cache <= 1.1, "{bytes} bytes of video ({cache} cached) for {span_s} s of source: {without_cache:.2}x ({ratio:.2}x with the cache)");
    assert!(!state.join("recordings/clips").exists());
}

fn rfc(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The sample video re-encoded at `w`×`h` like a camera stream (H.264, a keyframe every second).
fn encoded(dir: &Path, w: u32, h: u32) -> PathBuf {
    let out = dir.join(format!("street-{w}x{h}.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(media("pedestrians-720p-gop1s.mp4"))
        .args([
            "-vf",
            &format!("scale={w}:{h}"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-an",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success());
    out
}

#[test]
fn a_camera_detects_on_its_sub_stream_and_records_its_main_stream() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (main, sub) = (encoded(dir.path(), 1920, 1080), encoded(dir.path(), 640, 360));
    let (port, http, rtsp_main, rtsp_sub) = (free_port(), free_port(), free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub_proc = subscriber(port, "perch/test-box/#", "substream-test");
    let (_main_cam, _sub_cam) = (rtsp_server(rtsp_main, &main, None), rtsp_server(rtsp_sub, &sub, None));
    let cfg = config(dir.path(), port, http, &format!("rtsp://127.0.0.1:{rtsp_main}/cam"), "clip_wait_s = 5", "pre_roll_s = 2\npost_roll_s = 2");
    let text =
        std::fs::read_to_string(&cfg).unwrap().replace("detect_fps = 5\n", &format!("detect_source = \"rtsp://127.0.0.1:{rtsp_sub}/cam\"\ndetect_fps = 5\n"));
    std::fs::write(&cfg, text).unwrap();
    let mut p = run(&cfg);
    wait_port(http, &p);
    // Any clip with a snapshot will do, complete or partial: what is checked here is which stream it comes
    // from. (The test camera serves its file once per connection and perch reconnects, so an event that
    // starts with a pass lacks its pre-roll and one still going at the pass's end has a gap: on the
    // opencv-doc street, whose walkers are in view all through a pass, every clip is partial.)
    let ready = |lines: &[Line]| clips(lines).into_iter().find(|c| c["status"] != "failed" && c["snapshot"].is_string() && c["clip"].is_string());
    assert!(sub_proc.wait_for(Duration::from_secs(60), |out, _| ready(out).is_some()), "no clip: {}", p.stderr_text());
    let out = sub_proc.stdout();
    let c = ready(&out).unwrap();
    // Detection saw the sub-stream's pictures...
    let new = messages(&out, "/events/gate").into_iter().find(|m| m["type"] == "new").unwrap();
    assert_eq!(new["frame_size"], serde_json::json!([640, 360]), "{new}");
    // ...while the recording, its clips and its snapshots are the main stream's.
    let (_, (codec, _, width)) = fetch_video(http, c["clip"].as_str().unwrap(), dir.path());
    assert_eq!((codec.as_str(), width), ("h264", 1920));
    let snap = fetch(http, c["snapshot"].as_str().unwrap(), &[]);
    assert_eq!(snap.code, 200, "{}", snap.text());
    assert_eq!(jpeg_size(&snap.body), (1920, 1080));
    assert_eq!(probe(&segments(&dir.path().join("state"))[0].2).2, 1920);
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(20)).success(), "{}", p.stderr_text());
}

#[test]
fn a_small_quota_evicts_the_oldest_recordings_and_events_keep_flowing() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "quota-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    // About 0.45 MB per 2 s segment: 4 MiB fill in a few seconds.
    let quota = 4u64 << 20;
    let cfg = config(
        dir.path(),
        port,
        http,
        &format!("file://{}", video.display()),
        &format!("max_bytes = {quota}\nclip_cache_bytes = 1048576"),
        "pre_roll_s = 1\npost_roll_s = 1",
    );
    let state = dir.path().join("state");
    let mut p = run(&cfg);

    let evictions = |lines: &[Line]| messages(lines, "/health").last().map(|h| h["recording"]["evicted_segments"]["quota"].as_u64().unwrap_or(0));
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
    // The store stays within the quota (plus the segment being written).
    let on_disk: u64 = walk(&state.join("recordings")).iter().filter(|p| p.extension().is_none_or(|e| e != "part")).map(|p| p.metadata().unwrap().len()).sum();
    assert!(on_disk <= quota + (1 << 20), "{on_disk} bytes on disk for a quota of {quota}");
    assert!(p.child.try_wait().unwrap().is_none(), "perch must keep running");
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(20)).success(), "{}", p.stderr_text());
    assert!(p.stderr_text().contains("evicted a segment"), "evictions are logged");
}

#[test]
fn after_sigkill_the_store_is_consistent_and_clip_messages_are_sent() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "kill-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    let cfg = config(dir.path(), port, http, &format!("file://{}", video.display()), "clip_wait_s = 1", "pre_roll_s = 2\npost_roll_s = 4");
    let state = dir.path().join("state");
    // A store of the clip-per-event layout, as an older perch left it: its clips go, its pending request
    // becomes an event reference whose clip message is sent.
    let old = state.join("recordings/clips");
    std::fs::create_dir_all(old.join("pending")).unwrap();
    std::fs::write(old.join("gate-old-1.mp4"), vec![0u8; 4096]).unwrap();
    std::fs::write(old.join("gate-old-1.json"), b"{}").unwrap();
    let old_job = r#"{"id":"gate-old-2","camera":"gate","from_ms":1000,"to_ms":3000,"kind":"event","label":"person"}"#;
    std::fs::write(old.join("pending/gate-old-2.json"), old_job).unwrap();
    let mut p = run(&cfg);
    assert!(wait(Duration::from_secs(30), || segments(&state).len() >= 3), "no segments: {}", p.stderr_text());
    assert!(!old.exists(), "the old layout is removed at start");
    assert!(p.stderr_text().contains("old clip-per-event layout (1 clips"), "{}", p.stderr_text());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| clips(out).iter().any(|c| c["event_id"] == "gate-old-2" && c["status"] == "failed")));

    // A manual recording stopped just before the kill: its clip message waits for 4 s of post-roll.
    command(port, "record", r#"{"action": "start", "camera": "gate"}"#);
    std::thread::sleep(Duration::from_secs(2));
    command(port, "record", r#"{"action": "stop", "camera": "gate"}"#);
    let id = |lines: &[Line]| messages(lines, "/cmd/record/result").iter().find(|r| r["stopped"].is_string()).map(|r| r["id"].as_str().unwrap().to_string());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| id(out).is_some()), "no reply to stop");
    let id = id(&sub.stdout()).unwrap();
    let reference = state.join(format!("recordings/events/{id}.json"));
    let ended = || std::fs::read(&reference).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).is_some_and(|v| v["to_ms"].is_u64());
    assert!(wait(Duration::from_secs(3), ended), "the ended recording is on disk before its clip message");
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
    wait_port(http, &p);
    let made = |lines: &[Line]| clips(lines).into_iter().find(|c| c["event_id"] == id.as_str());
    assert!(sub.wait_for(Duration::from_secs(40), |out, _| made(out).is_some()), "the clip message was not sent: {}", p.stderr_text());
    let c = made(&sub.stdout()).unwrap();
    assert!(c["status"] == "complete" || c["status"] == "partial", "{c}");
    let (_, (codec, duration, _)) = fetch_video(http, c["clip"].as_str().unwrap(), dir.path());
    assert_eq!(codec, "h264");
    assert!(duration >= 2.0, "clip of {duration} s");
    // The reference on disk names the seq its clip message was sent with.
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&reference).unwrap()).unwrap();
    assert_eq!(on_disk["seq"], c["seq"]);
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
}

#[test]
fn sigterm_mid_event_ends_every_event_and_delivers_the_outbox() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let (port, http) = (free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "drain-test");
    let video = media("pedestrians-720p-gop1s.mp4");
    let cfg = config(dir.path(), port, http, &format!("file://{}", video.display()), "", "pre_roll_s = 2\npost_roll_s = 10");
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
    // Everything stored was delivered before exit: each `new` has its `end` and its clip message.
    assert!(sub.wait_for(Duration::from_secs(5), |out, _| out.iter().any(|l| l.text == "perch/test-box/status offline")));
    let out = sub.stdout();
    let msgs = messages(&out, "/events/gate");
    let stored: std::collections::BTreeSet<u64> =
        err.lines().filter(|l| l.contains(" event ")).filter_map(|l| l.split("seq=").nth(1)?.split(' ').next()?.parse().ok()).collect();
    let received: std::collections::BTreeSet<u64> = msgs.iter().filter(|m| m["type"] != "clip").filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(received, stored, "the outbox was delivered before exit");
    let mut clip_msgs = Vec::new();
    for new in msgs.iter().filter(|m| m["type"] == "new") {
        let id = &new["event_id"];
        assert!(msgs.iter().any(|m| m["type"] == "end" && &m["event_id"] == id), "no end for {id}");
        let clip = msgs.iter().find(|m| m["type"] == "clip" && &m["event_id"] == id).unwrap_or_else(|| panic!("no clip for {id}"));
        // Stopped before the post-roll: partial or complete.
        assert!(clip["status"] == "complete" || clip["status"] == "partial", "{clip}");
        clip_msgs.push(clip.clone());
    }
    assert!(parts(&state).is_empty(), "the segment being written was finished");
    let waiting: Vec<Value> = walk(&state.join("recordings/events"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .filter(|v: &Value| v["seq"].is_null() || v["to_ms"].is_null())
        .collect();
    assert!(waiting.is_empty(), "events left open or without their clip message: {waiting:?}");

    // After a restart, every clip plays for the span its message claims. The file's first frames decode
    // before they show (B-frames), which once gave the first segment a broken timeline and a clip of
    // "20 days".
    let segs = segments(&state);
    assert!(clip_msgs.iter().any(|m| ms(&m["start"]) == segs[0].0), "no clip from the first segment");
    // The next run records again: it starts after every window asked for, or its video would join them.
    let last_end = clip_msgs.iter().map(|m| ms(&m["requested_end"])).max().unwrap();
    while (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64) <= last_end + 500 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut p = run(&cfg);
    wait_port(http, &p);
    for clip in &clip_msgs {
        let (_, (codec, duration, _)) = fetch_video(http, clip["clip"].as_str().unwrap(), dir.path());
        assert_eq!(codec, "h264");
        let span = (ms(&clip["end"]) - ms(&clip["start"])) as f64 / 1000.0;
        assert!((duration - span).abs() < 0.3, "clip {clip} plays {duration} s");
        assert!((duration - clip["duration_s"].as_f64().unwrap()).abs() < 0.2, "clip {clip} plays {duration} s");
    }
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(30)).success(), "{}", p.stderr_text());
    for (a, b, path) in &segs {
        let (_, duration, _) = probe(path);
        assert!((duration * 1000.0 - (*b - *a) as f64).abs() < 300.0, "{} plays {duration} s", path.display());
    }
}
