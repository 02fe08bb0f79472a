//! `perch run` end to end: a real H.264 file, a real RTSP camera (gst-rtsp-server on loopback) that goes
//! away and comes back, and a camera that cannot be opened at all.

mod common;

use std::time::{Duration, Instant};

use common::{Proc, free_port, json_lines, media, perch, rtsp_server, serial, write_config};
use serde_json::Value;

fn run(config: &std::path::Path) -> Proc {
    let mut cmd = perch();
    cmd.arg("run").arg("--config").arg(config).arg("--print-detections");
    Proc::spawn(cmd)
}

fn frames_of<'a>(frames: &'a [Value], camera: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["camera"] == camera).collect()
}

#[test]
fn file_camera_is_processed_at_the_detect_rate() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let video = media("pedestrians-720p-gop1s.mp4");
    let cam = format!("id = \"street\"\nsource = \"file://{}\"\ndetect_fps = 5\nloop_file = false\nlabels = [\"person\"]", video.display());
    let mut p = run(&write_config(dir.path(), &[cam], ""));
    // 13.8 s of video played in real time; the service stops by itself when the file ends.
    let status = p.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "{}", p.stderr_text());
    let frames = json_lines(&p.stdout());
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    let captured = seqs.iter().max().unwrap() + 1;
    // Rate check from the stream's own timestamps: 13.8 s × 5 fps = 69 frames, 200 ms apart.
    assert!((66..=71).contains(&captured), "captured {captured} frames");
    assert!(frames.len() as u64 >= captured * 9 / 10, "detector skipped too many frames: {} of {captured}", frames.len());
    let mut gaps: Vec<f64> = frames
        .windows(2)
        .filter(|w| w[1]["seq"].as_u64().unwrap() == w[0]["seq"].as_u64().unwrap() + 1)
        .map(|w| w[1]["pts_ms"].as_f64().unwrap() - w[0]["pts_ms"].as_f64().unwrap())
        .collect();
    gaps.sort_by(f64::total_cmp);
    assert!(gaps.len() > 50);
    let median = gaps[gaps.len() / 2];
    assert!((median - 200.0).abs() <= 10.0, "median frame interval {median} ms");
    assert!(gaps[0] >= 190.0, "frames closer than the rate allows: {} ms", gaps[0]);
    // Detections: people, in source pixels, only the configured label; from the tracker's low_score (0.1)
    // on, since the weak boxes are printed too (they feed its second stage), and in most frames one from
    // min_score (0.5) on.
    let strong = |f: &&Value| f["detections"].as_array().unwrap().iter().any(|d| d["score"].as_f64().unwrap() >= 0.5);
    let with_people = frames.iter().filter(strong).count();
    assert!(with_people as u64 >= captured * 3 / 4, "people found in only {with_people} frames");
    for f in &frames {
        assert_eq!((f["width"].as_u64(), f["height"].as_u64()), (Some(1280), Some(720)));
        for d in f["detections"].as_array().unwrap() {
            assert_eq!(d["label"], "person");
            assert!(d["score"].as_f64().unwrap() >= 0.1);
            assert!(d["box"][2].as_f64().unwrap() <= 1280.0 && d["box"][3].as_f64().unwrap() <= 720.0);
        }
    }
    // Wall-clock stamps follow the stream: consecutive frames ~200 ms apart in wall time too.
    let first = frames.first().unwrap()["ts_ms"].as_u64().unwrap();
    let last = frames.last().unwrap()["ts_ms"].as_u64().unwrap();
    let span = (last - first) as f64 / 1000.0;
    assert!((12.0..16.0).contains(&span), "wall-clock span {span} s");
}

#[test]
fn a_camera_that_cannot_open_leaves_the_service_and_other_cameras_running() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let cams = [
        "id = \"good\"\nsource = \"test://ball?width=640&height=360&fps=15\"\ndetect_fps = 4\nmin_score = 0.9".to_string(),
        format!("id = \"bad\"\nsource = \"rtsp://admin:Sup3rSecret@127.0.0.1:{closed}/stream\"\nreconnect_initial_s = 0.2\nreconnect_max_s = 1"),
        "id = \"gone\"\nsource = \"file:///nonexistent/clip.mp4\"\nreconnect_initial_s = 0.2\nreconnect_max_s = 1".to_string(),
        // A USB camera that is not plugged in.
        "id = \"usb\"\nsource = \"v4l2:///dev/video97\"\nreconnect_initial_s = 0.2\nreconnect_max_s = 1".to_string(),
    ];
    let p = run(&write_config(dir.path(), &cams, ""));
    let started = Instant::now();
    assert!(
        p.wait_for(Duration::from_secs(30), |_, err| {
            let e = |needle: &str| err.iter().filter(|l| l.text.contains(needle)).count();
            e("camera offline") >= 6 && e("camera=bad") >= 2 && e("camera=gone") >= 2 && e("camera=usb") >= 2
        }),
        "offline cameras not reported and retried: {}",
        p.stderr_text()
    );
    // Meanwhile the good camera keeps delivering, for several seconds.
    assert!(p.wait_for(Duration::from_secs(30), |out, _| {
        let good: Vec<_> = json_lines(out).into_iter().filter(|f| f["camera"] == "good").collect();
        good.len() >= 12 && good.last().unwrap()["ts_ms"].as_u64().unwrap() - good[0]["ts_ms"].as_u64().unwrap() >= 3000
    }));
    assert!(p.child.id() > 0 && started.elapsed() < Duration::from_secs(60));
    p.signal("TERM");
    let mut p = p;
    let status = p.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM should be a clean exit: {status:?}");
    let err = p.stderr_text();
    assert!(!err.contains("Sup3rSecret"), "password leaked into the log:\n{err}");
    assert!(err.contains("rtsp://admin:***@127.0.0.1"), "{err}");
    let frames = json_lines(&p.stdout());
    assert!(frames_of(&frames, "bad").is_empty() && frames_of(&frames, "gone").is_empty() && frames_of(&frames, "usb").is_empty());
    assert!(err.contains("/dev/video97"), "the missing USB camera is named: {err}");
    // Reconnect attempts back off: retry delays are reported and grow.
    let delays: Vec<f64> = err
        .lines()
        .filter(|l| l.contains("camera=bad") && l.contains("retrying in"))
        .filter_map(|l| l.split("retrying in ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(delays.len() >= 2 && delays.iter().cloned().fold(0.0, f64::max) > delays[0], "delays {delays:?}");
}

#[test]
fn rtsp_camera_reconnects_after_the_server_comes_back() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let video = media("pedestrians-720p-gop1s.mp4");
    // The camera demands a password with characters that need percent-encoding in the URI.
    let server = rtsp_server(port, &video, Some(("viewer", "p@ss:w0rd")));
    let cam = format!(
        "id = \"door\"\nsource = \"rtsp://viewer:p%40ss%3Aw0rd@127.0.0.1:{port}/cam\"\ndetect_fps = 4\nstall_timeout_s = 3\nreconnect_initial_s = 0.3\nreconnect_max_s = 1\nmin_score = 0.3"
    );
    let p = run(&write_config(dir.path(), &[cam], ""));
    let count = |out: &[common::Line]| frames_of(&json_lines(out), "door").len();
    assert!(p.wait_for(Duration::from_secs(30), |out, _| count(out) >= 6), "no frames over RTSP: {}", p.stderr_text());
    let people = json_lines(&p.stdout()).iter().filter(|f| !f["detections"].as_array().unwrap().is_empty()).count();
    assert!(people > 0, "the RTSP stream should show people");

    // The camera disappears: perch notices and keeps retrying.
    drop(server);
    let lost_at = Instant::now();
    assert!(p.wait_for(Duration::from_secs(20), |_, err| err.iter().any(|l| l.at > lost_at && l.text.contains("camera offline"))), "{}", p.stderr_text());
    std::thread::sleep(Duration::from_secs(2));
    let before = count(&p.stdout());

    // It comes back on the same address: perch reconnects by itself and frames flow again.
    let _server = rtsp_server(port, &video, Some(("viewer", "p@ss:w0rd")));
    let back_at = Instant::now();
    assert!(
        p.wait_for(Duration::from_secs(30), |out, _| out.iter().filter(|l| l.at > back_at).filter_map(|l| serde_json::from_str::<Value>(&l.text).ok()).count()
            >= 4),
        "no frames after the server came back: {}",
        p.stderr_text()
    );
    assert!(count(&p.stdout()) > before);
    let err = p.stderr_text();
    assert!(err.matches("camera online").count() >= 2, "{err}");
    for secret in ["p@ss:w0rd", "p%40ss%3Aw0rd", "p%40ss"] {
        assert!(!err.contains(secret), "password leaked ({secret}):\n{err}");
    }
}

#[test]
fn a_stalled_stream_is_detected_and_reopened() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let video = media("pedestrians-720p-gop1s.mp4");
    let server = rtsp_server(port, &video, None);
    let cam =
        format!("id = \"cam\"\nsource = \"rtsp://127.0.0.1:{port}/cam\"\ndetect_fps = 4\nstall_timeout_s = 2\nreconnect_initial_s = 0.3\nreconnect_max_s = 1");
    let p = run(&write_config(dir.path(), &[cam], ""));
    assert!(p.wait_for(Duration::from_secs(30), |out, _| json_lines(out).len() >= 4), "no frames: {}", p.stderr_text());
    // The camera hangs (process frozen): the TCP connection stays up but no frame arrives.
    server.signal("STOP");
    let frozen_at = Instant::now();
    assert!(
        p.wait_for(Duration::from_secs(20), |_, err| err.iter().any(|l| l.at > frozen_at && l.text.contains("stalled"))),
        "stall not detected: {}",
        p.stderr_text()
    );
    server.signal("CONT");
    let thawed_at = Instant::now();
    assert!(
        p.wait_for(Duration::from_secs(40), |out, _| out.iter().filter(|l| l.at > thawed_at).count() >= 4),
        "no frames after the camera recovered: {}",
        p.stderr_text()
    );
}

#[test]
fn an_idle_camera_is_detected_at_the_idle_rate_until_something_moves() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cadence = "[camera.cadence]\nidle_after_s = 1\nidle_fps = 0.2";
    let still = format!("id = \"still\"\nsource = \"test://black?width=320&height=240&fps=10\"\ndetect_fps = 10\n{cadence}");
    // The ball pattern moves every frame: its camera stays at the full rate although nothing is detected.
    let moving = format!("id = \"moving\"\nsource = \"test://ball?width=320&height=240&fps=10\"\ndetect_fps = 10\n{cadence}");
    let mut p = run(&write_config(dir.path(), &[still, moving], ""));
    assert!(p.wait_for(Duration::from_secs(60), |out, _| json_lines(out).len() >= 20), "{}", p.stderr_text());
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(30)).success(), "{}", p.stderr_text());
    // Frames detected in the 6 s window (after the first second: both cameras idle).
    let late: Vec<Value> = p.stdout().iter().filter(|l| l.at >= start + Duration::from_secs(1)).filter_map(|l| serde_json::from_str(&l.text).ok()).collect();
    let (still_n, moving_n) = (frames_of(&late, "still").len(), frames_of(&late, "moving").len());
    // One frame every 5 s at most, however fast frames come.
    assert!(still_n <= 2, "a static idle camera at 0.2 fps: {still_n} frames in ~5 s");
    // The full rate is 10 fps; a loaded machine may not keep up with it, so compare.
    assert!(moving_n >= 4 && moving_n >= 2 * still_n, "motion keeps the full rate: {moving_n} frames in ~5 s, {still_n} for the still camera");
    let err = p.stderr_text();
    let skipped = |cam: &str| {
        err.lines()
            .find(|l| l.contains("camera totals") && l.contains(&format!("camera={cam}")))
            .and_then(|l| l.split("skipped_idle=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no totals for {cam}: {err}"))
    };
    let (still_skipped, moving_skipped) = (skipped("still"), skipped("moving"));
    assert!(still_skipped >= 3, "skipped frames are counted: {still_skipped} skipped, {still_n} detected");
    assert!(moving_skipped <= 5, "{moving_skipped} frames of the moving camera skipped");
}
