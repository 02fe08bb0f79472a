//! `decode = "keyframes_when_idle"` end to end: an empty scene (a still photo with the camera's noise,
//! encoded like a camera: H.264, a keyframe every second, no B-frames) that a person walks into after 20 s.
//! The same clip is played by two cameras of one service, one decoding every frame and one decoding only
//! keyframes while idle; both must report the walker as exactly one event, seen by a real MQTT subscriber,
//! while the idle camera skips decoding most frames before the person comes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proc, event_messages, free_port, mosquitto, perch, photo, publish_to, serial, street_frame, subscriber, write_config};

/// When the person enters, and how long the clip is (s).
const ENTERS_S: f64 = 20.0;
const LENGTH_S: f64 = 36.0;

/// The clip: the photo with vehicles and nobody in it as the empty scene (the camera reports persons only),
/// and a person cut from the street frame (a margin around one of its reference people), 400 px tall,
/// walking in at 80 px/s from `ENTERS_S`, still in view when the clip ends. Slow enough that today's tracker
/// keeps one identity through the frames the detector misses (issue 17).
fn walk_in_clip(dir: &Path) -> PathBuf {
    let out = dir.join("walk-in.mp4");
    let frame = street_frame();
    let [x0, y0, x1, y1] = frame.people[0];
    let (x, y, w, h) = ((x0 - 14.0).round(), (y0 - 13.0).round(), (x1 - x0 + 30.0).round(), (y1 - y0 + 25.0).round());
    let filter = format!(
        "[0]scale=1280:720,setsar=1,noise=alls=6:allf=t,format=yuv420p[bg];[1]crop={w}:{h}:{x}:{y},scale=-2:400[p];\
         [bg][p]overlay=x='-overlay_w+(t-{ENTERS_S})*80':y=300:enable='gte(t,{ENTERS_S})'"
    );
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-loop", "1", "-t", &LENGTH_S.to_string(), "-i"])
        .arg(photo().path)
        .args(["-loop", "1", "-t", &LENGTH_S.to_string(), "-i"])
        .arg(&frame.path)
        .args(["-filter_complex", &filter, "-r", "25", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-keyint_min", "25", "-bf", "0"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make the clip");
    out
}

/// `key=value` from the camera's totals line, logged as the service stops.
fn total(err: &str, camera: &str, key: &str) -> u64 {
    err.lines()
        .find(|l| l.contains("camera totals") && l.contains(&format!("camera={camera}")))
        .and_then(|l| l.split(&format!("{key}=")).nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in the totals of {camera}:\n{err}"))
}

#[test]
fn an_idle_camera_decoding_keyframes_only_still_reports_the_person_walking_in() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let clip = walk_in_clip(dir.path());
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "idle-decode-test");
    std::thread::sleep(Duration::from_millis(300));
    let camera = |id: &str, decode: &str| {
        format!(
            "id = \"{id}\"\nsource = \"file://{}\"\ndetect_fps = 5\nloop_file = false\nlabels = [\"person\"]\ndecode = \"{decode}\"\n\
             [camera.cadence]\nidle_after_s = 5\nidle_fps = 0.2\n[camera.record]\nenabled = false",
            clip.display()
        )
    };
    let config = write_config(dir.path(), &[camera("all", "all"), camera("keyframes", "keyframes_when_idle")], "");
    publish_to(&config, port);
    let mut p = Proc::spawn({
        let mut c = perch();
        c.arg("run").arg("--config").arg(&config);
        c
    });
    assert!(p.wait_exit(Duration::from_secs(LENGTH_S as u64 + 60)).success(), "{}", p.stderr_text());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| out.iter().any(|l| l.text == "perch/test-box/status offline")));
    let evs = event_messages(&sub.stdout());
    let err = p.stderr_text();

    // One person, one event, on each camera: opened and closed once.
    let ids = |cam: &str, kind: &str| -> BTreeSet<String> {
        evs.iter().filter(|e| e["camera"] == cam && e["type"] == kind).map(|e| e["event_id"].as_str().unwrap().to_string()).collect()
    };
    for cam in ["all", "keyframes"] {
        assert_eq!(ids(cam, "new").len(), 1, "camera {cam}: one new event for the walker, got {evs:#?}\n{err}");
        assert_eq!(ids(cam, "new"), ids(cam, "end"), "camera {cam}: the event ends");
    }
    // The idle camera wakes within a GOP or two of the other (a keyframe a second).
    let start = |cam: &str| -> f64 {
        let e = evs.iter().find(|e| e["camera"] == cam && e["type"] == "new").unwrap();
        humantime::parse_rfc3339(e["start"].as_str().unwrap()).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
    };
    let late = start("keyframes") - start("all");
    assert!(late < 2.5, "the keyframes-only camera saw the person {late:.2} s after the one decoding everything");

    // Decoding skipped: from idle (5 s) until the person (20 s), 24 of 25 frames a second never reach the
    // decoder — well over 200 frames — and none on the camera that decodes everything.
    let skipped = total(&err, "keyframes", "skipped_decode");
    assert!(skipped >= 200, "only {skipped} frames skipped before the decoder");
    assert_eq!(total(&err, "all", "skipped_decode"), 0);
    eprintln!("keyframes_when_idle: the walker's event {late:+.2} s against decoding everything; {skipped} frames never decoded");
}
