//! The fast-crossing car (issue 17): a pickup cut from a still photo, panned across a 1280 px picture in
//! 2 s (866 px/s: at 2 fps its boxes in consecutive frames do not overlap at all), played by two cameras of
//! one service detecting at 5 and at 2 frames a second. Each must report it as exactly one event — one
//! `new`, one `end`, one id — as seen by a real MQTT subscriber, though the detector calls it a car in some
//! frames and a truck (or both at once) in others.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proc, event_messages, free_port, mosquitto, perch, photo, publish_to, serial, subscriber, write_config};

/// Clip length, and when the car enters (s).
const LENGTH_S: u64 = 5;
const ENTERS_S: f64 = 1.0;

/// A grey road with a camera's noise; the pickup (452×200 px) enters at the left edge at `ENTERS_S` and has
/// left at the right two seconds later.
fn crossing_clip(dir: &Path) -> PathBuf {
    let out = dir.join("fast-car.mp4");
    let photo = photo();
    let ([x, y, w, h], height) = photo.vehicle_cut;
    let filter = format!(
        "[0]noise=alls=6:allf=t,format=yuv420p[bg];[1]crop={w}:{h}:{x}:{y},scale=-2:{height}[c];\
         [bg][c]overlay=x='-overlay_w+(t-{ENTERS_S})*866':y=400:enable='gte(t,{ENTERS_S})'"
    );
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", &format!("color=c=0x707070:s=1280x720:d={LENGTH_S}:r=25")])
        .args(["-loop", "1", "-t", &LENGTH_S.to_string(), "-i"])
        .arg(&photo.path)
        .args(["-filter_complex", &filter, "-r", "25", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg could not make the clip");
    out
}

#[test]
fn a_car_crossing_the_picture_in_two_seconds_is_one_event_at_5_and_2_fps() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let clip = crossing_clip(dir.path());
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "fast-car-test");
    std::thread::sleep(Duration::from_millis(300));
    let camera = |id: &str, fps: u32| {
        format!(
            "id = \"{id}\"\nsource = \"file://{}\"\ndetect_fps = {fps}\nloop_file = false\nlabels = [\"car\", \"truck\", \"bus\"]\n\
             [camera.cadence]\nenabled = false\n[camera.record]\nenabled = false",
            clip.display()
        )
    };
    let config = write_config(dir.path(), &[camera("fps5", 5), camera("fps2", 2)], "");
    publish_to(&config, port);
    let mut p = Proc::spawn({
        let mut c = perch();
        c.arg("run").arg("--config").arg(&config);
        c
    });
    assert!(p.wait_exit(Duration::from_secs(LENGTH_S + 60)).success(), "{}", p.stderr_text());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| out.iter().any(|l| l.text == "perch/test-box/status offline")));
    let evs = event_messages(&sub.stdout());
    let err = p.stderr_text();
    for cam in ["fps5", "fps2"] {
        let ids = |kind: &str| -> BTreeSet<String> {
            evs.iter().filter(|e| e["camera"] == cam && e["type"] == kind).map(|e| e["event_id"].as_str().unwrap().to_string()).collect()
        };
        let news = evs.iter().filter(|e| e["camera"] == cam && e["type"] == "new").count();
        assert_eq!(news, 1, "camera {cam}: one new event for the car, got {evs:#?}\n{err}");
        assert_eq!(ids("new"), ids("end"), "camera {cam}: the same event ends, once: {evs:#?}");
        assert_eq!(evs.iter().filter(|e| e["camera"] == cam && e["type"] == "end").count(), 1, "camera {cam}: {evs:#?}");
        let ev = evs.iter().find(|e| e["camera"] == cam && e["type"] == "new").unwrap();
        assert!(["car", "truck"].contains(&ev["label"].as_str().unwrap()), "{ev}");
    }
}
