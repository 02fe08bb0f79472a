//! A car parked for 15 minutes in front of an RTSP camera, and a person walking through later: the car is
//! one event that goes quiet once it is stationary and holds only its arrival's video, so the store does
//! not fill and the person's video is kept. Real parts: a still photo encoded as H.264 by ffmpeg and served
//! by gst-rtsp-server, mosquitto, curl and ffprobe.
//!
//! It takes about 16 minutes of wall-clock time (the camera is real time), so it lives in its own test
//! binary, which `scripts/test.sh` runs beside the rest of the suite.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::http::{TOKEN, fetch, fetch_video};
use common::{Line, Proc, free_port, media, mosquitto, perch, photo, rtsp_server, subscriber, wait_port, write_config};
use serde_json::Value;

/// How long the car stands alone before the person comes (`PERCH_PARKED_S` shortens it while working on
/// this test; the quota check then fails), and how long the stream runs after.
fn parked_s() -> u32 {
    std::env::var("PERCH_PARKED_S").ok().and_then(|v| v.parse().ok()).unwrap_or(15 * 60)
}
const TAIL_S: u32 = 120;
const PRE_ROLL_S: f64 = 5.0;
const POST_ROLL_S: f64 = 10.0;
/// 15 minutes of this stream is about 100 MB: an event holding video from the car's arrival would fill it.
const QUOTA: u64 = 48 << 20;

/// The camera's stream: the photo with a vehicle (`common::photo`: a car with a dog and a bicycle, or a
/// parked van) at 5 fps, H.264 with a keyframe every 2 s;
/// after `PARKED_S`, the street video plays in the lower left of the picture (people walk through), below
/// the car.
fn stream(dir: &Path) -> PathBuf {
    let parked_s = parked_s();
    let out = dir.join("parked.mp4");
    let total = parked_s + 14 + TAIL_S;
    let filter = format!(
        "[0]scale=1280:720,format=yuv420p[bg];[1]fps=5,scale=640:360,setpts=PTS+{parked_s}/TB[fg];[bg][fg]overlay=x=0:y=360:enable='between(t,{parked_s},{})':eof_action=pass[v]",
        parked_s + 14
    );
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-loop", "1", "-framerate", "5", "-t", &total.to_string(), "-i"])
        .arg(photo().path)
        .arg("-i")
        .arg(media("pedestrians-720p-gop1s.mp4"))
        .args(["-filter_complex", &filter, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-g", "10", "-keyint_min", "10"])
        .args(["-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success(), "ffmpeg could not make the parked-car stream");
    out
}

fn messages(lines: &[Line]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| l.text.split_once(' ').filter(|(t, _)| *t == "perch/test-box/events/lot"))
        .filter_map(|(_, p)| serde_json::from_str(p).ok())
        .collect()
}

fn ms(v: &Value) -> u64 {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn a_car_parked_for_15_minutes_is_one_quiet_event_that_holds_only_its_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let parked_s = parked_s();
    let video = stream(dir.path());
    let (port, rtsp, http) = (free_port(), free_port(), free_port());
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "parked-test");
    let _camera = rtsp_server(rtsp, &video, None);
    let cam = format!(
        "id = \"lot\"\nsource = \"rtsp://127.0.0.1:{rtsp}/cam\"\ndetect_fps = 2\nlabels = [\"person\", \"car\"]\n[camera.track]\nstationary_after_s = 30\nupdate_heartbeat_s = 10\n[camera.record]\npre_roll_s = {PRE_ROLL_S}\npost_roll_s = {POST_ROLL_S}"
    );
    let config = write_config(dir.path(), &[cam], "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[detector]",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nhealth_interval_s = 5\n[record]\nmax_bytes = {QUOTA}\nclip_wait_s = 5\n[detector]"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = perch();
    cmd.arg("run").arg("--config").arg(&config);
    let mut p = Proc::spawn(cmd);
    wait_port(http, &p);

    // The person comes after PARKED_S; wait for their events' clips (bounded by the stream's length).
    let person_clips = |msgs: &[Value]| msgs.iter().filter(|m| m["type"] == "clip" && m["label"] == "person").count();
    let deadline = Duration::from_secs((parked_s + 14 + TAIL_S - 20) as u64);
    assert!(sub.wait_for(deadline, |out, _| person_clips(&messages(out)) >= 1), "no person event with its clip: {}", p.stderr_text());
    std::thread::sleep(Duration::from_secs(5));
    let msgs = messages(&sub.stdout());

    // Exactly one event for the car, still going on, and quiet: a few heartbeats until it is stationary,
    // one update saying so, then nothing for the rest of the quarter hour.
    let car: Vec<&Value> = msgs.iter().filter(|m| m["label"] == "car" && m["type"] != "clip").collect();
    let kinds: Vec<&str> = car.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "new").count(), 1, "{kinds:?}");
    assert!(!kinds.contains(&"end"), "the parked car never left: {kinds:?}");
    assert!(kinds.len() <= 5, "a heartbeat flood: {} messages about a parked car", kinds.len());
    let last = car.last().unwrap();
    assert!(last["stationary_since"].is_string(), "the last word on the car is that it is stationary: {last}");
    assert_eq!(car.iter().filter(|m| m["stationary_since"].is_string()).count(), 1, "{kinds:?}");
    let parked_for = ms(&msgs.last().unwrap()["ts"]) - ms(&car[0]["start"]);
    assert!(parked_for >= (parked_s as u64 - 10) * 1000, "the car was watched for only {parked_for} ms");

    // Its event holds its arrival: pre-roll, the seconds until it stood still (none: it never moved), post-roll.
    let events = fetch(http, "/api/events?label=car", &[]).json()["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    let held_ms = ms(&events[0]["video_end"]) - ms(&events[0]["video_start"]);
    assert!(held_ms as f64 <= (PRE_ROLL_S + POST_ROLL_S + 1.0) * 1000.0, "the parked car holds {held_ms} ms of video");
    assert_eq!((&events[0]["open"], &events[0]["stationary"]), (&Value::Bool(true), &Value::Bool(true)));
    let (_, (codec, duration, _)) = fetch_video(http, events[0]["clip"].as_str().unwrap(), dir.path());
    assert_eq!(codec, "h264");
    assert!(duration <= PRE_ROLL_S + POST_ROLL_S + 2.0 * 2.4, "the car's clip plays {duration} s");

    // The person's video is complete and plays; the store never needed the quota.
    for c in msgs.iter().filter(|m| m["type"] == "clip" && m["label"] == "person") {
        assert_eq!(c["status"], "complete", "{c}");
        let (_, (codec, duration, _)) = fetch_video(http, c["clip"].as_str().unwrap(), dir.path());
        assert_eq!(codec, "h264");
        assert!((duration - c["duration_s"].as_f64().unwrap()).abs() < 0.3, "{c} plays {duration} s");
    }
    let status = fetch(http, "/status", &[]).json();
    let rec = &status["recording"];
    assert_eq!(rec["evicted_segments"]["quota"], 0, "{rec}");
    assert_eq!(rec["evicted_segments"]["low_disk"], 0, "{rec}");
    let stored = rec["segment_bytes"].as_u64().unwrap();
    let written = rec["cameras"][0]["bytes"].as_u64().unwrap();
    eprintln!("parked car: {written} bytes recorded in {parked_s}+ s, {stored} kept; the car's event holds {held_ms} ms; messages about it: {kinds:?}");
    assert!(written > QUOTA, "the stream wrote {written} bytes: too little to show that the car does not pin it");
    assert!(stored < QUOTA / 2, "{stored} bytes kept");
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(30)).success(), "{}", p.stderr_text());
}
