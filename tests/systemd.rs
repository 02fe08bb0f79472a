//! systemd integration against a real notification socket (the test binds it, as systemd would): READY=1
//! once perch is up, WATCHDOG=1 only while its loops turn, STOPPING=1 on shutdown.
//!
//! The wedge is real: the camera is a FIFO fed with the test video. When the writer is stopped (SIGSTOP),
//! GStreamer's reader blocks in read(2); perch sees the stall and tears the pipeline down, and the teardown
//! blocks until the read returns — the capture thread is stuck inside GStreamer, as with a hung driver or
//! NFS.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, media, perch, serial, write_config};

/// Datagrams received on the notification socket, with their arrival times.
type Received = Arc<Mutex<Vec<(Instant, String)>>>;

fn listen(path: &std::path::Path) -> Received {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let got: Received = Arc::default();
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends once the test has dropped its handle.
        while Arc::strong_count(&sink) > 1 {
            if let Ok(n) = sock.recv(&mut buf) {
                sink.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
    });
    got
}

fn wait_msg(got: &Received, after: Instant, timeout: Duration, what: &str) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((t, _)) = got.lock().unwrap().iter().find(|(t, m)| *t >= after && m.contains(what)) {
            return Some(*t);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn count(got: &Received, from: Instant, to: Instant, what: &str) -> usize {
    got.lock().unwrap().iter().filter(|(t, m)| *t >= from && *t <= to && m.contains(what)).count()
}

#[test]
fn ready_after_readiness_and_no_watchdog_pings_while_wedged() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("cam.ts");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // The camera: the test video as MPEG-TS, written into the FIFO at about its bit rate, over and over, by
    // a writer that opens the FIFO once (ffmpeg writing to it directly may open it more than once).
    let ts = dir.path().join("cam-src.ts");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(media("pedestrians-720p-gop1s.mp4"))
        .args(["-c", "copy", "-f", "mpegts", "-y"])
        .arg(&ts)
        .status()
        .unwrap();
    assert!(made.success());
    let mut writer = Command::new("/usr/bin/python3");
    writer.arg("-c").arg(
        "import sys, time\ndata = open(sys.argv[1], 'rb').read()\nout = open(sys.argv[2], 'r+b', buffering=0)\n\
         out.write(data[:32768])\nprint('STARTED', flush=True)\n\
         while True:\n    for i in range(0, len(data), 32768):\n        out.write(data[i:i + 32768])\n        time.sleep(0.1)\n",
    );
    writer.arg(&ts).arg(&fifo);
    let writer = Proc::spawn(writer);
    // Opened read-write, the FIFO takes the first data before perch opens it: the camera works at once.
    assert!(writer.wait_for(Duration::from_secs(10), |out, _| out.iter().any(|l| l.text == "STARTED")), "{}", writer.stderr_text());
    let cam = format!(
        "id = \"gate\"\nsource = \"file://{}\"\ndetect_fps = 5\nloop_file = false\nstall_timeout_s = 2\n[camera.record]\nenabled = false",
        fifo.display()
    );
    let cfg = write_config(dir.path(), &[cam], "");
    let socket = dir.path().join("notify");
    let got = listen(&socket);
    let mut cmd = perch();
    // 3 s watchdog: a ping a second, and a loop silent for 2 s is stuck.
    cmd.arg("run").arg("--config").arg(&cfg).env("NOTIFY_SOCKET", &socket).env("WATCHDOG_USEC", "3000000");
    let start = Instant::now();
    let mut p = Proc::spawn(cmd);

    let ready = wait_msg(&got, start, Duration::from_secs(60), "READY=1").unwrap_or_else(|| panic!("no READY=1: {}", p.stderr_text()));
    // perch logs `ready:` as it sends READY=1: in its own log (one ordered stream), the camera is online first.
    assert!(p.wait_for(Duration::from_secs(5), |_, err| err.iter().any(|l| l.text.contains(" ready: "))), "{}", p.stderr_text());
    let err = p.stderr_text();
    let (online, said_ready) = (err.find("camera online"), err.find(" ready: "));
    assert!(online.is_some() && online < said_ready, "READY=1 only once the camera delivers and the detector is ready: {err}");
    assert!(wait_msg(&got, ready + Duration::from_secs(3), Duration::from_secs(10), "WATCHDOG=1").is_some(), "pings while healthy");
    let healthy_until = Instant::now();
    assert!(count(&got, ready, healthy_until, "WATCHDOG=1") >= 3);

    // Wedge the camera: its reader blocks, the stall teardown blocks with it.
    writer.signal("STOP");
    let stuck = wait_msg(&got, healthy_until, Duration::from_secs(20), "STATUS=stuck: camera gate")
        .unwrap_or_else(|| panic!("never reported stuck: {}", p.stderr_text()));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(count(&got, stuck, Instant::now(), "WATCHDOG=1"), 0, "no pings while the capture thread is stuck");
    assert!(p.stderr_text().contains("the systemd watchdog is no longer fed"));

    // Unwedge: the writer goes away, the read returns end-of-file, the loops turn again.
    writer.signal("CONT");
    writer.signal("KILL");
    let unstuck = Instant::now();
    assert!(wait_msg(&got, unstuck, Duration::from_secs(15), "WATCHDOG=1").is_some(), "pings resume: {}", p.stderr_text());

    // The camera reopens the FIFO, which has no writer now: its thread blocks in open(2), stuck again, so the
    // drain cannot finish. A second SIGTERM ends it at once, and the stuck thread does not hold the exit.
    p.signal("TERM");
    assert!(wait_msg(&got, unstuck, Duration::from_secs(10), "STOPPING=1").is_some(), "{}", p.stderr_text());
    p.signal("TERM");
    assert!(p.wait_exit(Duration::from_secs(15)).success(), "{}", p.stderr_text());
    let err = p.stderr_text();
    assert!(err.contains("second stop signal") || err.contains("camera totals"), "{err}");
}
