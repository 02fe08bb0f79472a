//! App mode end to end with real processes: two slot directories, a `current` link switched atomically,
//! and a small supervisor standing in for systemd (`ExecStartPre=<app>/committed/perch ota boot`,
//! `ExecStart=<app>/current/perch run`, `Restart=always`).
//!
//! 1. A new perch release is installed, started, passes the health gate (camera frames, detector ready,
//!    golden frame, MQTT broker, state dir) and is committed; `…/ota/state` (retained) says so.
//! 2. A broken build that exits at start uses up its tries; the bootloader step falls back and the old
//!    release runs again, reporting the failed release and why.
//! 3. A build that starts but fails its golden frame is rolled back by the health gate itself.
//!
//! And in slot mode: a trial whose camera never delivers times out, rolls back and runs the reboot command.

mod common;
mod ota_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Proc;
use ota_common::*;

fn link(app: &Path, name: &str) -> String {
    std::fs::read_link(app.join(name)).unwrap().display().to_string()
}

/// What happened in one supervised start.
struct Start {
    slot: String,
    exit_ok: Option<bool>,
    log: String,
}

/// systemd, in small: before each start the known-good release plays the bootloader (`ota boot`), then
/// `current/perch run` runs until it exits (and is started again) or `done` holds (then it is stopped).
fn supervise(app: &Path, config: &Path, max_starts: usize, done: impl Fn(&Proc) -> bool) -> Vec<Start> {
    let mut starts = Vec::new();
    for _ in 0..max_starts {
        let boot = Command::new(app.join("committed/perch")).args(["ota", "boot", "-c"]).arg(config).output().unwrap();
        assert!(boot.status.success(), "ota boot failed: {}", String::from_utf8_lossy(&boot.stderr));
        let slot = link(app, "current");
        let mut cmd = Command::new(app.join("current/perch"));
        cmd.args(["run", "-c"]).arg(config).env("ORT_DYLIB_PATH", common::ort_library()).env_remove("RUST_LOG").env_remove("PERCH_LOG");
        let mut p = Proc::spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(120);
        let exit_ok = loop {
            if let Some(st) = p.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                break Some(st.success());
            }
            if done(&p) {
                p.signal("TERM");
                p.wait_exit(Duration::from_secs(20));
                break None;
            }
            assert!(Instant::now() < deadline, "perch from slot {slot} neither exited nor got done:\n{}", p.stderr_text());
            std::thread::sleep(Duration::from_millis(100));
        };
        starts.push(Start { slot, exit_ok, log: p.stderr_text() });
        if exit_ok.is_none() {
            return starts;
        }
    }
    panic!("not done after {max_starts} starts:\n{}", starts.iter().map(|s| format!("--- slot {}:\n{}", s.slot, s.log)).collect::<Vec<_>>().join("\n"));
}

fn phase_is(config: &Path, want: &str) -> bool {
    let out = common::perch().args(["ota", "status", "-c"]).arg(config).output().unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| v["phase"] == want)
}

fn logged(p: &Proc, text: &str) -> bool {
    p.stderr.lock().unwrap().iter().any(|l| l.text.contains(text))
}

#[test]
fn app_mode_commits_a_healthy_release_and_rolls_back_broken_ones() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let app = d.join("app");
    let perch_bin = PathBuf::from(env!("CARGO_BIN_EXE_perch"));
    let photo = common::photo();
    let golden = photo.path.clone();
    // The factory release in slot a.
    std::fs::create_dir_all(app.join("a")).unwrap();
    std::fs::copy(&perch_bin, app.join("a/perch")).unwrap();
    std::fs::copy(&golden, app.join("a/golden.jpg")).unwrap();
    std::os::unix::fs::symlink("a", app.join("current")).unwrap();
    std::os::unix::fs::symlink("a", app.join("committed")).unwrap();

    let port = common::free_port();
    let _broker = common::mosquitto(d, port);
    let config = ota_common::config(
        d,
        &format!(
            "backend = \"app\"\napp_dir = \"{}\"\ntries = 2\nhealth_window_s = 2\nhealth_timeout_s = 90\ngolden_image = \"golden.jpg\"\ngolden_labels = {:?}\n",
            app.display(),
            photo.labels
        ),
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replacen(
        "[ota]",
        &format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nhealth_interval_s = 1\n[[camera]]\nid = \"yard\"\nsource = \"test://ball?width=320&height=240&fps=10\"\ndetect_fps = 2\n[ota]"
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();

    // 1. A healthy new release: installed into b, started, committed by the health gate.
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("perch", &perch_bin), ("golden.jpg", &golden)], Some(1), 1 << 20);
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    assert!(std::fs::metadata(app.join("b/perch")).unwrap().permissions().mode() & 0o111 != 0, "the binary is executable");
    assert_eq!(link(&app, "current"), "a", "installing does not switch");
    let retained = || -> serde_json::Value {
        let sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "perch/ota-box/ota/state", "-C", "1", "-W", "5"])
            .output()
            .unwrap();
        serde_json::from_slice(&sub.stdout).unwrap_or_default()
    };
    let starts = supervise(&app, &config, 2, |p| logged(p, "ota: release committed") && retained()["phase"] == "committed");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].slot, "b");
    assert!(starts[0].log.contains("running release 2.0.0 from slot B"), "{}", starts[0].log);
    assert!(starts[0].log.contains("golden frame check passed"), "{}", starts[0].log);
    assert!(phase_is(&config, "committed"));
    assert_eq!(link(&app, "committed"), "b");
    // The retained …/ota/state says committed.
    let state = retained();
    assert_eq!((state["phase"].as_str(), state["version"].as_str(), state["running_version"].as_str()), (Some("committed"), Some("2.0.0"), Some("2.0.0")));

    // 2. A build that exits at start: each start spends a try; then the old release runs again.
    let broken = d.join("broken-perch");
    std::fs::write(&broken, "#!/bin/sh\necho 'broken build: cannot start' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let v3 = bundle(&d.join("v3.bundle"), "perch-test", "3.0.0", &[("perch", &broken), ("golden.jpg", &golden)], Some(1), 1 << 20);
    ok(&["ota", "install", "--quiet", "-c", c, v3.to_str().unwrap()]);
    let starts = supervise(&app, &config, 5, |p| logged(p, "ota: running release"));
    let slots: Vec<(&str, Option<bool>)> = starts.iter().map(|s| (s.slot.as_str(), s.exit_ok)).collect();
    assert_eq!(slots, [("a", Some(false)), ("a", Some(false)), ("b", None)], "two tries of the broken build, then the old one");
    assert!(starts[0].log.contains("broken build"));
    let old = &starts[2].log;
    assert!(old.contains("running release 2.0.0 from slot B"), "{old}");
    assert!(old.contains("release 3.0.0 was rolled back") && old.contains("used up its boot tries"), "{old}");
    let st = status(&config);
    assert_eq!((st["phase"].as_str(), st["version"].as_str()), (Some("rolled_back"), Some("3.0.0")));
    assert_eq!(st["flags"]["a"]["bootable"], false);

    // 3. A build that starts but whose detector fails the golden frame: the gate rolls it back.
    let gray = d.join("gray.jpg");
    let ff = Command::new("ffmpeg").args(["-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=320x240", "-frames:v", "1"]).arg(&gray).status().unwrap();
    assert!(ff.success());
    let v4 = bundle(&d.join("v4.bundle"), "perch-test", "4.0.0", &[("perch", &perch_bin), ("golden.jpg", &gray)], Some(1), 1 << 20);
    ok(&["ota", "install", "--quiet", "-c", c, v4.to_str().unwrap()]);
    let starts = supervise(&app, &config, 3, |p| logged(p, "ota: running release 2.0.0"));
    let slots: Vec<(&str, Option<bool>)> = starts.iter().map(|s| (s.slot.as_str(), s.exit_ok)).collect();
    assert_eq!(slots, [("a", Some(true)), ("b", None)], "the failing release stops itself; the old one runs");
    assert!(starts[0].log.contains("running release 4.0.0 from slot A"), "{}", starts[0].log);
    assert!(starts[1].log.contains("release 4.0.0 was rolled back: golden frame"), "{}", starts[1].log);
    let st = status(&config);
    assert_eq!((st["phase"].as_str(), st["running_version"].as_str()), (Some("rolled_back"), Some("2.0.0")));
    assert!(st["reason"].as_str().unwrap().contains(&format!("missing {:?}", photo.labels)), "{st:#}");
    assert_eq!(link(&app, "current"), "b");
    assert_eq!(link(&app, "committed"), "b");
}

/// Slot mode (file backend): the service itself records the trial boot, its gate times out on a camera that
/// never delivers, rolls back, and runs the reboot command; the next boot is the old slot.
/// A file-slot box whose one camera never delivers (nothing listens on its port): any trial on it times out
/// after `timeout_s`; `reboot` is `ota.reboot_command` as TOML.
fn dead_camera_box(d: &Path, slot_a: &Path, slot_b: &Path, timeout_s: u32, reboot: &str) -> PathBuf {
    let dead = common::free_port();
    let config = ota_common::config(
        d,
        &format!(
            "backend = \"file\"\nslot_a = \"{}\"\nslot_b = \"{}\"\nhealth_window_s = 1\nhealth_timeout_s = {timeout_s}\nreboot_command = {reboot}\n",
            slot_a.display(),
            slot_b.display()
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[ota]",
        &format!("[[camera]]\nid = \"gate\"\nsource = \"rtsp://127.0.0.1:{dead}/none\"\nreconnect_initial_s = 1\nreconnect_max_s = 1\n[ota]"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn the_gate_times_out_on_a_dead_camera_rolls_back_and_reboots() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
    std::fs::write(&slot_a, data(64 << 10, 40)).unwrap();
    let marker = d.join("rebooted");
    let config = dead_camera_box(d, &slot_a, &slot_b, 4, &format!("[\"sh\", \"-c\", \"echo reboot > {}\"]", marker.display()));
    let c = config.to_str().unwrap();
    let img = d.join("rootfs");
    std::fs::write(&img, data(300_000, 41)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), 64 << 10);
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    assert!(ok(&["ota", "boot", "-c", c]).contains("booted slot B; update trial"));

    let mut p = Proc::spawn({
        let mut cmd = common::perch();
        cmd.args(["run", "-c", c]);
        cmd
    });
    let exit = p.wait_exit(Duration::from_secs(60));
    assert!(exit.success(), "{}", p.stderr_text());
    let log = p.stderr_text();
    assert!(log.contains("running release 2.0.0 from slot B") && log.contains("on trial"), "{log}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "reboot", "the reboot command ran");
    let st = status(&config);
    assert_eq!((st["phase"].as_str(), st["version"].as_str()), (Some("rolled_back"), Some("2.0.0")));
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("health gate not passed within 4 s") && reason.contains("camera gate delivers no frames"), "{reason}");
    assert_eq!(st["flags"]["b"]["bootable"], false);
    assert!(ok(&["ota", "boot", "-c", c]).contains("booted slot A; update rolled_back"));
    assert_ne!(status(&config)["running_version"], "2.0.0");
}

/// A release that crashes every couple of seconds, in the same boot (slower than systemd's start limit, so
/// systemd keeps restarting it): the health gate's deadline counts from the trial's first start, so the
/// restarts do not postpone it and the release is rolled back once `health_timeout_s` has passed in all.
#[test]
fn the_trial_deadline_survives_restarts() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
    std::fs::write(&slot_a, data(64 << 10, 42)).unwrap();
    let config = dead_camera_box(d, &slot_a, &slot_b, 6, "[\"true\"]");
    let c = config.to_str().unwrap();
    let img = d.join("rootfs");
    std::fs::write(&img, data(100_000, 43)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), 64 << 10);
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    assert!(ok(&["ota", "boot", "-c", c]).contains("booted slot B; update trial"));
    let started = Instant::now();
    // Each run lives 2.5 s, less than the 6 s timeout: only a deadline kept across restarts can expire.
    let mut runs = 0;
    while !phase_is(&config, "rolled_back") {
        assert!(runs < 8, "still on trial after {runs} crashing runs ({:?})", started.elapsed());
        let mut p = Proc::spawn({
            let mut cmd = common::perch();
            cmd.args(["run", "-c", c]);
            cmd
        });
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2500) && p.child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        if p.child.try_wait().unwrap().is_none() {
            p.signal("KILL");
        }
        let _ = p.wait_exit(Duration::from_secs(20));
        runs += 1;
    }
    assert!(runs >= 3, "rolled back after {runs} runs: sooner than the timeout allows");
    let st = status(&config);
    assert!(st["reason"].as_str().unwrap().contains("health gate not passed within 6 s"), "{st:#}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}
