//! Helpers shared by the end-to-end tests: locating the perch binary, the ONNX Runtime library, the model
//! and the test media; running processes whose output is collected line by line; free loopback ports.
#![allow(dead_code)]

pub mod http;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `libonnxruntime.so`: `ORT_DYLIB_PATH`, or the one scripts/setup.sh installs in `.local/`.
pub fn ort_library() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = root().join(".local/onnxruntime/libonnxruntime.so");
    assert!(local.exists(), "ONNX Runtime is not installed: run scripts/setup.sh (or set ORT_DYLIB_PATH)");
    local
}

pub fn model() -> PathBuf {
    let m = root().join("models/yolox_nano.toml");
    assert!(root().join("models/yolox_nano.onnx").exists(), "the model is not installed: run scripts/setup.sh");
    m
}

/// A test media file: `PERCH_MEDIA`, or `.local/media`, where scripts/setup.sh links the set it installed
/// (`MediaSet`). Never `../shared` itself: setup decides which set is in use.
pub fn media(name: &str) -> PathBuf {
    let dir = std::env::var_os("PERCH_MEDIA").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| root().join(".local/media"));
    let p = dir.join(name);
    assert!(p.exists(), "test media {name} not found in {}: run scripts/setup.sh", dir.display());
    std::fs::canonicalize(p).unwrap()
}

/// The set of test media scripts/setup.sh installed (its `set` file). Both play the same parts under the
/// same names where they can — `pedestrians-720p-gop1s.mp4` (a street with walkers: H.264 Main, 1280×720,
/// 25 fps, a keyframe every second, 13.68 s, no audio), `pedestrians-frame.jpg` (its frame at 5 s) and
/// `demo.mp4` — and differ in the photo (`photo()`); what each one shows is written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSet {
    /// `../shared/media`: the pedestrian street video and the dog-bicycle-car photo.
    Shared,
    /// Made by setup from OpenCV's `vtest.avi` (Debian's opencv-doc): a campus street with walkers, and the
    /// same scene emptied of them with one parked van.
    OpencvDoc,
}

pub fn media_set() -> MediaSet {
    let text = std::fs::read_to_string(media("set")).unwrap();
    match text.trim() {
        "shared" => MediaSet::Shared,
        "opencv-doc" => MediaSet::OpencvDoc,
        other => panic!("unknown media set {other:?}: run scripts/setup.sh"),
    }
}

/// A still photo with vehicles and no person: what it shows, as the model finds it.
pub struct Photo {
    pub path: PathBuf,
    /// Its size in pixels.
    pub size: (f64, f64),
    /// Objects the model finds (score > 0.6): the labels it may give each, and the box (source pixels).
    pub objects: Vec<(&'static [&'static str], [f64; 4])>,
    /// The vehicle (as `objects`), for tests that watch it parked.
    pub vehicle: [f64; 4],
    /// How to cut the vehicle out to move it over another picture: the part of the photo (x, y, width,
    /// height) and the height to scale it to, so that the model finds it as a vehicle in every frame of a
    /// clip (the van is small: it keeps some of its street around it and is scaled up 4.7×, about 380 px wide;
    /// either fits below y = 400 of a 1280×720 picture).
    pub vehicle_cut: ([u32; 4], u32),
    /// Labels the detector finds in it at 0.3 (a golden frame's `golden_labels`).
    pub labels: &'static [&'static str],
}

pub fn photo() -> Photo {
    match media_set() {
        // Reference boxes from ../shared/README.md (the model's documented output).
        MediaSet::Shared => Photo {
            path: media("dog-bicycle-car.jpg"),
            size: (768.0, 576.0),
            objects: vec![
                (&["dog"], [133.0, 207.0, 325.0, 542.0]),
                (&["bicycle"], [46.0, 132.0, 572.0, 431.0]),
                (&["car", "truck"], [467.0, 78.0, 692.0, 172.0]),
            ],
            vehicle: [467.0, 78.0, 692.0, 172.0],
            vehicle_cut: ([466, 72, 226, 100], 200),
            labels: &["dog", "bicycle", "car"],
        },
        // Measured on the photo setup makes (truck 0.75 and car 0.61 for the same van).
        MediaSet::OpencvDoc => Photo {
            path: media("parked-van.jpg"),
            size: (768.0, 576.0),
            objects: vec![(&["car", "truck"], [686.0, 45.0, 766.0, 107.0])],
            vehicle: [686.0, 45.0, 766.0, 107.0],
            vehicle_cut: ([676, 40, 100, 68], 320),
            labels: &["truck", "car"],
        },
    }
}

/// `pedestrians-frame.jpg` (1280×720) and two of the people in it, as the model finds them (score > 0.6).
pub struct StreetFrame {
    pub path: PathBuf,
    pub people: [[f64; 4]; 2],
}

pub fn street_frame() -> StreetFrame {
    let people = match media_set() {
        MediaSet::Shared => [[804.0, 433.0, 864.0, 558.0], [1062.0, 188.0, 1113.0, 296.0]],
        MediaSet::OpencvDoc => [[852.0, 354.0, 899.0, 488.0], [623.0, 302.0, 663.0, 437.0]],
    };
    StreetFrame { path: media("pedestrians-frame.jpg"), people }
}

/// `perch` with the environment the tests need.
pub fn perch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_perch"));
    c.env("ORT_DYLIB_PATH", ort_library()).env_remove("PERCH_LOG").env_remove("RUST_LOG").env_remove("JOURNAL_STREAM");
    c
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A line of output and when it arrived.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// A child process whose stdout and stderr are collected in the background; killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<Line>>>,
    pub stderr: Arc<Mutex<Vec<Line>>>,
}

fn collect(r: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<Line>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(Line { at: Instant::now(), text: line });
        }
    });
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Self { child, stdout, stderr }
    }

    pub fn stdout(&self) -> Vec<Line> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// Waits until `cond` holds on (stdout, stderr) or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&[Line], &[Line]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            {
                let out = self.stdout.lock().unwrap();
                let err = self.stderr.lock().unwrap();
                if cond(&out, &err) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits for the process to exit by itself, up to `timeout` (then kills it and panics).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {timeout:?}; stderr:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The RTSP test camera (tests/helpers/rtsp_server.py) serving `file` on `port`.
pub fn rtsp_server(port: u16, file: &Path, user: Option<(&str, &str)>) -> Proc {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(root().join("tests/helpers/rtsp_server.py")).arg("--port").arg(port.to_string()).arg("--file").arg(file);
    if let Some((u, p)) = user {
        cmd.args(["--user", u, "--password", p]);
    }
    let p = Proc::spawn(cmd);
    assert!(
        p.wait_for(Duration::from_secs(10), |out, _| out.iter().any(|l| l.text.starts_with("READY"))),
        "RTSP test server did not start: {}",
        p.stderr_text()
    );
    p
}

/// The event messages (`new`, `update`, `end`; clip messages left out) a subscriber got on
/// `perch/test-box/events/…`.
pub fn event_messages(lines: &[Line]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| {
            l.text.split_once(' ').filter(|(t, _)| t.starts_with("perch/test-box/events/")).and_then(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
        })
        .filter(|m| m["type"] != "clip")
        .collect()
}

/// Points a config written by [`write_config`] at the MQTT broker on `port`.
pub fn publish_to(config: &Path, port: u16) {
    let text = std::fs::read_to_string(config).unwrap().replace("[detector]", &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n\n[detector]"));
    std::fs::write(config, text).unwrap();
}

/// Parses JSON lines, skipping anything that is not JSON.
pub fn json_lines(lines: &[Line]) -> Vec<serde_json::Value> {
    lines.iter().filter_map(|l| serde_json::from_str(&l.text).ok()).collect()
}

/// Writes a perch config for `cameras` (TOML `[[camera]]` bodies) into `dir`.
pub fn write_config(dir: &Path, cameras: &[String], detector_extra: &str) -> PathBuf {
    let mut text = format!(
        "device_id = \"test-box\"\nstate_dir = \"{}\"\n[detector]\nmodel = \"{}\"\n{}\n",
        dir.join("state").display(),
        model().display(),
        detector_extra
    );
    for c in cameras {
        text.push_str("[[camera]]\n");
        text.push_str(c);
        text.push('\n');
    }
    let path = dir.join("perch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Tests that run a real-time service take this lock, so their timing does not depend on how many others
/// share the two cores.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until something listens on `port` (loopback); panics with `proc`'s stderr after 10 s.
pub fn wait_port(port: u16, proc: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}: {}", proc.stderr_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mosquitto broker on `port` (loopback), persisting its sessions in `dir` so a restart keeps queued
/// messages for persistent subscribers.
pub fn mosquitto(dir: &Path, port: u16) -> Proc {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        // `user root`: started as root, mosquitto would switch to its own user, which cannot write the temp dir.
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nuser root\n", dir.display()),
    )
    .unwrap();
    let p = Proc::spawn({
        let mut c = Command::new("mosquitto");
        c.arg("-c").arg(&conf);
        c
    });
    wait_port(port, &p);
    p
}

/// `mosquitto_sub` printing `topic payload` lines for `topic`, with a persistent QoS 1 session `id`.
pub fn subscriber(port: u16, topic: &str, id: &str) -> Proc {
    let mut c = Command::new("mosquitto_sub");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-q", "1", "-c", "-i", id, "-t", topic]);
    Proc::spawn(c)
}

/// The bytes `candidate_model` flips for a model that loads and runs but finds other things: 64 KiB of the
/// weights. Half of that was enough on ../shared's media (disagreement 0.55) but not on the opencv-doc set
/// (0.09, promoted); 64 KiB gives 0.87 and 0.42 (`perch model shadow` on the photo, the frame, the video).
pub const PERTURBED: (usize, usize) = (841_821, 65_536);

/// A candidate model beside the real one: its ONNX is the real one with `flip` (offset, length) ranges of
/// bytes XORed with 0x80, and its manifest the real one pointing at it with its checksum.
pub fn candidate_model(dir: &Path, name: &str, flip: Option<(usize, usize)>) -> PathBuf {
    let manifest = std::fs::read_to_string(model()).unwrap();
    let mut onnx = std::fs::read(model().with_file_name("yolox_nano.onnx")).unwrap();
    if let Some((at, len)) = flip {
        // Inside the weights, XOR 0x80 flips signs and halves or doubles values: the same graph computing
        // something else. At the front it hits the protobuf framing: a file that does not load.
        for b in &mut onnx[at..at + len] {
            *b ^= 0x80;
        }
    }
    let sha = <sha2::Sha256 as sha2::Digest>::digest(&onnx).iter().map(|b| format!("{b:02x}")).collect::<String>();
    std::fs::write(dir.join(format!("{name}.onnx")), &onnx).unwrap();
    let mut top = true;
    let text: String = manifest
        .lines()
        .map(|l| match l {
            // Tables ([input], [output]) have names of their own.
            l if l.starts_with('[') => {
                top = false;
                l.to_string()
            }
            l if l.starts_with("sha256 = ") => format!("sha256 = \"{sha}\""),
            l if l.starts_with("file = ") => format!("file = \"{name}.onnx\""),
            l if top && l.starts_with("name = ") => format!("name = \"{name}\""),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}
