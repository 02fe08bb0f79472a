//! Defects found by an adversarial review, each reproduced with real processes (perch, mosquitto, HTTP
//! clients, a full file system) and held fixed: MQTT messages over the client's old 10 KiB limit, retained
//! and oversize commands, bursts of commands, slow HTTP clients, foreign `Host:` headers on the status page,
//! a full disk under the outbox, and the command-line tools' refusals (versions, manifests, keyrings,
//! secrets in config errors, closed pipes).

mod common;
mod ota_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, free_port, media, perch, serial, subscriber, wait_port, write_config};
use ota_common::*;

const TOKEN: &str = "hardening-token-0123456789";
/// A camera that always delivers (a test pattern), detected twice a second.
const LIVE: &str = "id = \"live\"\nsource = \"test://ball?width=320&height=240&fps=10\"\ndetect_fps = 2";

/// A mosquitto that queues enough for a burst of a thousand commands and their replies.
fn broker(dir: &Path, port: u16) -> Proc {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 5000\nuser root\n")).unwrap();
    let mut c = Command::new("mosquitto");
    c.arg("-c").arg(&conf);
    let p = Proc::spawn(c);
    wait_port(port, &p);
    p
}

/// A service with MQTT on `mqtt` and HTTP on `http`; `mqtt_extra` goes into `[mqtt]`, `tables` before it.
fn service(dir: &Path, cameras: &[String], mqtt: u16, http: u16, mqtt_extra: &str, tables: &str) -> (Proc, PathBuf) {
    let config = write_config(dir, cameras, "");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[detector]",
        &format!(
            "{tables}\n[http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt}\"\nhealth_interval_s = 1\n{mqtt_extra}\n[detector]"
        ),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut cmd = perch();
    cmd.arg("run").arg("--config").arg(&config);
    let p = Proc::spawn(cmd);
    wait_port(http, &p);
    (p, config)
}

/// One HTTP/1.1 GET: status code and body; `host` is sent as the Host header.
fn get(port: u16, path: &str, host: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The value of an unlabelled or labelled sample in `/metrics`.
fn metric(port: u16, sample: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics", "127.0.0.1", None);
    body.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

fn publish(port: u16, topic: &str, args: &[&str]) {
    let st = Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic]).args(args).status().unwrap();
    assert!(st.success(), "mosquitto_pub {args:?}");
}

/// Payloads a `subscriber` printed for `topic` exactly.
fn payloads(lines: &[common::Line], topic: &str) -> Vec<String> {
    lines.iter().filter_map(|l| l.text.split_once(' ').filter(|(t, _)| *t == topic).map(|(_, p)| p.to_string())).collect()
}

fn disabled_cameras(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("id = \"cam-{i:03}-with-a-long-descriptive-name\"\nsource = \"rtsp://127.0.0.1:9/stream{i}\"\nenabled = false")).collect()
}

/// The health snapshot of a box with many cameras outgrew the client's 10 KiB default packet size, and a
/// retained command over it made perch reconnect every second. Now: the snapshot is summarised to fit
/// `mqtt.max_packet_bytes`, a retained command replayed at connect is ignored (counted), an oversize command
/// gets an error reply, a megabyte command does not drop the link, and the connection stays up throughout.
#[test]
fn big_messages_never_break_the_mqtt_link() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mq, http) = (free_port(), free_port());
    let _broker = broker(dir.path(), mq);
    // Waiting for perch before it starts: a retained 11 KB command (over the old 10 KiB limit).
    let big_ping = format!("{{\"id\":\"retained\",\"pad\":\"{}\"}}", "x".repeat(11_000));
    publish(mq, "perch/test-box/cmd/ping", &["-r", "-m", &big_ping]);
    let mut cams = disabled_cameras(80);
    cams.push(LIVE.into());
    let sub = subscriber(mq, "perch/test-box/#", "hardening-big");
    let (p, _) = service(dir.path(), &cams, mq, http, "max_packet_bytes = 16384", "");
    let health_topic = "perch/test-box/health";
    assert!(sub.wait_for(Duration::from_secs(30), |out, _| out.iter().filter(|l| l.text.starts_with(health_topic)).count() >= 3), "{}", p.stderr_text());
    // A 100 KB command (over max_command_bytes' 64 KiB, under the 4 MiB the client accepts) and a 1 MB one.
    for (id, size) in [("big", 100_000), ("huge", 1_000_000)] {
        let body = dir.path().join(format!("{id}.json"));
        std::fs::write(&body, format!("{{\"id\":\"{id}\",\"pad\":\"{}\"}}", "y".repeat(size))).unwrap();
        publish(mq, "perch/test-box/cmd/ping", &["-f", body.to_str().unwrap()]);
    }
    publish(mq, "perch/test-box/cmd/ping", &["-m", "{\"id\":\"small\"}"]);
    let results = "perch/test-box/cmd/ping/result";
    assert!(
        sub.wait_for(Duration::from_secs(20), |out, _| payloads(out, results).len() >= 3),
        "replies: {:?}\n{}",
        payloads(&sub.stdout(), results),
        p.stderr_text()
    );
    std::thread::sleep(Duration::from_secs(4));
    let replies: Vec<serde_json::Value> = payloads(&sub.stdout(), results).iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_eq!(replies.len(), 3, "one reply each to the 100 KB, 1 MB and small commands, none to the retained replay: {replies:?}");
    let refused: Vec<_> = replies.iter().filter(|r| r["ok"] == false).collect();
    assert_eq!(refused.len(), 2, "{replies:?}");
    assert!(refused.iter().all(|r| r["error"].as_str().unwrap().contains("mqtt.max_command_bytes")), "{refused:?}");
    assert!(replies.iter().any(|r| r["id"] == "small" && r["pong"] == true), "{replies:?}");
    // Health: summarised under the limit, with every camera counted.
    let last: serde_json::Value = serde_json::from_str(payloads(&sub.stdout(), health_topic).last().unwrap()).unwrap();
    assert!(payloads(&sub.stdout(), health_topic).iter().all(|h| h.len() <= 16384), "a health message over max_packet_bytes was sent");
    assert_eq!(last["summarised"], true, "{last}");
    assert_eq!(last["cameras_summary"]["count"], 81, "{last}");
    assert_eq!(last["cameras_summary"]["by_state"]["disabled"], 80, "{last}");
    // One connection all along.
    assert_eq!(last["mqtt"]["connects"], 1, "{last}");
    assert_eq!(metric(http, "perch_mqtt_connects_total"), Some(1.0));
    assert_eq!(metric(http, "perch_mqtt_commands_ignored_total{reason=\"retained\"}"), Some(1.0));
    assert_eq!(metric(http, "perch_mqtt_commands_ignored_total{reason=\"too_large\"}"), Some(2.0));
    assert!(metric(http, "perch_mqtt_health_summarised_total").unwrap() >= 3.0);
    assert!(p.stderr_text().contains("ignoring a retained command"), "{}", p.stderr_text());
}

/// Of 1,000 commands sent at once, 753 got replies: the client's request queue was full and replies were
/// dropped silently. Now every command gets exactly one reply.
#[test]
fn every_command_of_a_burst_gets_exactly_one_reply() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mq, http) = (free_port(), free_port());
    let _broker = broker(dir.path(), mq);
    let cams = vec![LIVE.to_string()];
    let sub = subscriber(mq, "perch/test-box/cmd/+/result", "hardening-burst");
    let (p, _) = service(dir.path(), &cams, mq, http, "", "");
    let online = subscriber(mq, "perch/test-box/status", "hardening-online");
    assert!(online.wait_for(Duration::from_secs(30), |out, _| out.iter().any(|l| l.text.ends_with("online"))), "{}", p.stderr_text());
    let n = 1000;
    let mut pub_ = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mq.to_string(), "-q", "1", "-t", "perch/test-box/cmd/record", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = pub_.stdin.as_mut().unwrap();
        for i in 0..n {
            // A record command for a camera that does not exist: answered with an error, changes nothing.
            writeln!(stdin, "{{\"id\":\"c{i}\",\"camera\":\"nope\",\"action\":\"start\"}}").unwrap();
        }
    }
    drop(pub_.stdin.take());
    assert!(pub_.wait().unwrap().success());
    let ids = |lines: &[common::Line]| -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for r in payloads(lines, "perch/test-box/cmd/record/result") {
            let v: serde_json::Value = serde_json::from_str(&r).unwrap();
            *m.entry(v["id"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
        m
    };
    sub.wait_for(Duration::from_secs(60), |out, _| ids(out).len() >= n);
    std::thread::sleep(Duration::from_secs(2));
    let got = ids(&sub.stdout());
    assert_eq!(got.len(), n, "commands without a reply: {}", n - got.len());
    assert!(got.values().all(|c| *c == 1), "a command was answered twice");
    assert_eq!(metric(http, "perch_mqtt_messages_dropped_total{reason=\"queue_full\"}"), Some(0.0));
}

/// 32 connections trickling a header line every 2 s held every slot of the HTTP server, so `/health` and
/// `/status` never answered. Now a request has a deadline that bytes do not extend, and a reserve of slots
/// answers while slow clients hold the rest. The status page answers only under a loopback name.
#[test]
fn slow_http_clients_cannot_block_health_and_the_page_checks_host() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (mq, http) = (free_port(), free_port());
    let _broker = broker(dir.path(), mq);
    let cams = vec![LIVE.to_string()];
    let (p, _) = service(dir.path(), &cams, mq, http, "", "");
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..32)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/health", "/status"] {
        let t = Instant::now();
        let (code, _) = get(http, path, "127.0.0.1", Some(TOKEN));
        assert_eq!(code, 200, "{path} did not answer while 32 slow clients were connected: {}", p.stderr_text());
        assert!(t.elapsed() < Duration::from_secs(2), "{path} took {:?}", t.elapsed());
    }
    // The slow clients keep sending; the server closes each at its deadline (10 s) anyway.
    let mut open = slow.len();
    while open > 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(2));
        open = 0;
        for s in &mut slow {
            if s.write_all(b"X-Trickle: 1\r\n").is_ok() {
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                let mut b = [0u8; 1];
                if !matches!(s.read(&mut b), Ok(0)) {
                    open += 1;
                }
            }
        }
    }
    assert_eq!(open, 0, "{open} trickling clients were still connected after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(9), "closed before their deadline: {:?}", started.elapsed());

    // DNS rebinding: the page and its data answer only as localhost, 127.0.0.1 or [::1].
    for host in ["evil.example", "evil.example:80", &format!("127.0.0.1.nip.io:{http}")] {
        for path in ["/", "/page.json", "/frame/live"] {
            assert_eq!(get(http, path, host, None).0, 421, "{path} answered Host: {host}");
        }
    }
    for host in [format!("127.0.0.1:{http}"), format!("localhost:{http}"), "localhost".to_string()] {
        assert_eq!(get(http, "/page.json", &host, None).0, 200, "the page refused Host: {host}");
    }
    assert_eq!(get(http, "/health", "evil.example", None).0, 200, "/health is for any client");
}

fn mount_tmpfs(dir: &Path, size: &str) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).status().unwrap();
    assert!(st.success(), "mount -t tmpfs failed: this test needs root (CI runs as root)");
    Mounted(dir.to_path_buf())
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system at `dir` with one file until writes fail.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0xa5u8; 1 << 16];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    filler
}

/// On a full disk, events vanished with a log line while `/ready` said 200. Now the events the outbox
/// cannot store are held in memory and stored once there is room, the service says it is not ready and
/// why, and no event is lost: every `new` reaches the subscriber with its `end`, and the sequence numbers
/// the broker delivered have no gap.
#[test]
fn a_full_disk_loses_no_event_and_makes_perch_not_ready() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _mount = mount_tmpfs(&state, "64m");
    let (mq, http) = (free_port(), free_port());
    let _broker = broker(dir.path(), mq);
    let video = media("pedestrians-720p-gop1s.mp4");
    let cam = format!(
        "id = \"street\"\nsource = \"file://{}\"\nloop_file = false\ndetect_fps = 5\nlabels = [\"person\"]\n[camera.record]\nenabled = false",
        video.display()
    );
    let sub = subscriber(mq, "perch/test-box/events/#", "hardening-disk");
    // A small outbox: its reserve is small, and the disk fills well before it does.
    let (mut p, _) = service(dir.path(), &[cam], mq, http, "", "[outbox]\nmax_bytes = 1048576");
    assert!(sub.wait_for(Duration::from_secs(30), |out, _| !out.is_empty()), "no event before the disk filled: {}", p.stderr_text());
    let filler = fill(&state);
    // Not ready, naming the outbox, while events are held.
    let mut saw_not_ready = false;
    for _ in 0..60 {
        let (code, body) = get(http, "/ready", "127.0.0.1", None);
        if code == 503 && body.contains("events cannot be stored") {
            saw_not_ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_not_ready, "/ready never reported the full disk: {}", p.stderr_text());
    assert!(metric(http, "perch_events_held").unwrap() > 0.0);
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&filler).unwrap();
    let status = p.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", p.stderr_text());
    std::thread::sleep(Duration::from_secs(2));
    let events: Vec<serde_json::Value> = sub.stdout().iter().filter_map(|l| serde_json::from_str(l.text.split_once(' ')?.1).ok()).collect();
    let seqs: std::collections::BTreeSet<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let (first, last) = (*seqs.first().unwrap(), *seqs.last().unwrap());
    assert_eq!(seqs.len() as u64, last - first + 1, "sequence numbers missing at the subscriber: {seqs:?}");
    let news: std::collections::BTreeSet<&str> = events.iter().filter(|e| e["type"] == "new").map(|e| e["event_id"].as_str().unwrap()).collect();
    let ends: std::collections::BTreeSet<&str> = events.iter().filter(|e| e["type"] == "end").map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(!news.is_empty());
    assert_eq!(news, ends, "every new has its end");
    let log = p.stderr_text();
    assert!(log.contains("events could not be stored") && log.contains("stores again"), "{log}");
    assert!(!log.contains("these events are lost") && !log.contains("were dropped"), "{log}");
}

/// `record.min_free_bytes = 0` with `min_free_percent = 0` lets video fill the disk under the outbox.
#[test]
fn a_config_without_a_free_space_watermark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &[], "");
    let text = std::fs::read_to_string(&config).unwrap().replacen("[detector]", "[record]\nmin_free_bytes = 0\nmin_free_percent = 0\n[detector]", 1);
    std::fs::write(&config, text).unwrap();
    let out = perch().args(["check-config"]).arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("record.min_free_bytes") && err.contains("fill the disk"), "{err}");
}

/// A syntax error's excerpt quoted the offending line: an RTSP password or `password = …` in clear.
#[test]
fn config_errors_never_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    for (i, broken) in [
        "[[camera]]\nid = \"gate\"\nsource = \"rtsp://admin:hunter2-secret@10.0.0.5/stream?token=tok-secret\n",
        "[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\npassword = \"hunter2-secret\n",
        "[http]\ntoken = \"hunter2-secret\" junk\n",
        "[mqtt]\nurl = \"mqtt://u:hunter2-secret@127.0.0.1:1883\"\nkeep_alive_s = \"x\"\n",
    ]
    .iter()
    .enumerate()
    {
        let path = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&path, format!("device_id = \"x\"\n{broken}")).unwrap();
        let out = perch().arg("check-config").arg(&path).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{text}");
        assert!(!text.contains("hunter2-secret") && !text.contains("tok-secret"), "a secret in the error:\n{text}");
        assert!(text.contains(&format!("broken-{i}.toml")), "the error names the file:\n{text}");
    }
}

/// A file-slot box for the OTA command-line tests.
fn file_box() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("slot-a.img"), dir.path().join("slot-b.img"));
    std::fs::write(&a, data(64 << 10, 3)).unwrap();
    let config = config(dir.path(), &format!("backend = \"file\"\nslot_a = \"{}\"\nslot_b = \"{}\"\n", a.display(), b.display()));
    (dir, config)
}

/// A slot bundle carrying an extra image that is only checked, not written (a golden frame of 20 MB, over
/// five chunks), hung `perch ota install` forever: the buffers read for it were never returned.
#[test]
fn an_install_with_an_image_it_does_not_write_finishes() {
    let (dir, config) = file_box();
    let rootfs = dir.path().join("rootfs");
    std::fs::write(&rootfs, data(300 << 10, 4)).unwrap();
    let golden = dir.path().join("golden.jpg");
    std::fs::write(&golden, data(20 << 20, 5)).unwrap();
    let b = bundle(&dir.path().join("two.bundle"), "perch-test", "2.0.0", &[("rootfs", &rootfs), ("golden.jpg", &golden)], Some(1), 64 << 10);
    let mut c = perch();
    c.args(["ota", "install", "--quiet", "-c"]).arg(&config).arg(&b);
    let mut p = Proc::spawn(c);
    let status = p.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", p.stderr_text());
    assert_eq!(phase(&config), "installed");
    assert_eq!(sha256(&dir.path().join("slot-b.img")), sha256(&rootfs), "slot B holds the rootfs image");
}

/// Release versions follow one grammar: `zzz` committed once refused every numbered release after it.
#[test]
fn versions_follow_one_grammar_and_an_odd_running_version_blocks_nothing() {
    let (dir, config) = file_box();
    let img = dir.path().join("rootfs");
    std::fs::write(&img, data(100 << 10, 6)).unwrap();
    let out = dir.path().join("x.bundle");
    let build = |compatible: &str, version: &str| {
        let mut c = perch();
        c.args(["bundle", "build", "--compatible", compatible, "--version", version, "-o"]).arg(&out).arg("--image").arg(format!("rootfs={}", img.display()));
        c.output().unwrap()
    };
    for (compatible, version, says) in
        [("perch-test", "zzz", "2026.01.1"), ("perch-test", "", "2026.01.1"), ("", "1.0.0", "compatible"), ("a b", "1.0.0", "compatible")]
    {
        let o = build(compatible, version);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "build {compatible:?} {version:?}: {err}");
    }
    // A box whose running release was named before the grammar existed still takes numbered releases.
    let state = dir.path().join("state/ota");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.json"), r#"{"phase":"idle","versions":["zzz",null],"history":[]}"#).unwrap();
    assert_eq!(status(&config)["running_version"], "zzz");
    for (n, version) in ["3.0.0", "2026.01.1"].iter().enumerate() {
        let b = bundle(&dir.path().join(format!("v{n}.bundle")), "perch-test", version, &[("rootfs", &img)], Some(1), 64 << 10);
        ok(&["ota", "install", "--quiet", "-c", config.to_str().unwrap(), b.to_str().unwrap()]);
        assert_eq!(status(&config)["version"], *version);
        // Leave the slot for the next release: the install is rolled back by hand (still booted from A).
        ok(&["ota", "rollback", "-c", config.to_str().unwrap(), "--reason", "test"]);
        ok(&["ota", "boot", "-c", config.to_str().unwrap()]);
    }
}

/// Writes a bundle with `manifest` (any bytes) and no payload, signed by dev key `key` when given.
fn crafted(path: &Path, manifest: &[u8], key: Option<u32>) {
    use ed25519_dalek::Signer;
    let mut signed = b"PERCHBN1".to_vec();
    signed.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    signed.extend_from_slice(manifest);
    let mut block = [0u8; 384];
    if let Some(k) = key {
        let text = std::fs::read_to_string(dev_key(k)).unwrap();
        let hex = text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap().trim();
        let seed: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed.try_into().unwrap());
        block[..32].copy_from_slice(sk.verifying_key().as_bytes());
        block[32..96].copy_from_slice(&sk.sign(&signed).to_bytes());
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&signed).unwrap();
    f.write_all(&block).unwrap();
}

/// Runs perch to its exit and returns (success, stderr, peak RSS in KiB).
#[allow(clippy::zombie_processes)] // reaped by wait4, which also reports the child's peak RSS
fn run_measured(args: &[&str]) -> (bool, String, i64) {
    let mut child = perch().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, err, usage.ru_maxrss)
}

/// An unsigned 16 MiB manifest was parsed before its signature was looked at (RSS 158 MB before "not
/// signed"); duplicate and reserved image names were accepted; `bundle verify` without a keyring passed a
/// bundle signed by anyone.
#[test]
fn bundles_are_judged_by_their_signature_first_and_their_names_are_unique() {
    let (dir, config) = file_box();
    // 16 MiB of manifest: a list of four million image entries' worth of JSON.
    let mut huge = b"{\"format\":1,\"compatible\":\"perch-test\",\"version\":\"9.0.0\",\"created\":\"x\",\"chunk_size\":4096,\"images\":[".to_vec();
    let entry = b"{\"name\":\"a\",\"size\":0,\"sha256\":\"\",\"chunks\":[]},";
    while huge.len() + entry.len() + 2 < 16 << 20 {
        huge.extend_from_slice(entry);
    }
    huge.pop();
    huge.extend_from_slice(b"]}");
    let unsigned = dir.path().join("huge.bundle");
    crafted(&unsigned, &huge, None);
    let (ok_, err, rss_kib) = run_measured(&["ota", "install", "--quiet", "-c", config.to_str().unwrap(), unsigned.to_str().unwrap()]);
    assert!(!ok_ && err.contains("not signed"), "{err}");
    assert!(rss_kib < 80 * 1024, "peak RSS {rss_kib} KiB refusing an unsigned manifest");
    // Signed by a key the device does not trust: refused for that, before parsing.
    let foreign = dir.path().join("foreign.bundle");
    crafted(&foreign, &huge, Some(2));
    let (ok_, err, rss_kib) = run_measured(&["ota", "install", "--quiet", "-c", config.to_str().unwrap(), foreign.to_str().unwrap()]);
    assert!(!ok_ && err.contains("unknown key"), "{err}");
    assert!(rss_kib < 80 * 1024, "peak RSS {rss_kib} KiB refusing a foreign manifest");

    // Duplicate and reserved names: refused at build...
    let img = dir.path().join("rootfs");
    std::fs::write(&img, data(10 << 10, 8)).unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"100 bytes").unwrap();
    for (images, says) in [(vec![("rootfs", &img), ("rootfs", &small)], "appears twice"), (vec![("rootfs", &img), ("bundle.json", &small)], "reserved")] {
        let mut c = perch();
        c.args(["bundle", "build", "--compatible", "perch-test", "--version", "2.0.0", "-o"]).arg(dir.path().join("dup.bundle"));
        for (n, p) in images {
            c.arg("--image").arg(format!("{n}={}", p.display()));
        }
        let o = c.output().unwrap();
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(says), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // ...and at install, even when signed by a trusted key.
    let entry = |d: &[u8]| serde_json::json!({"name": "rootfs", "size": d.len(), "sha256": sha256_hex(d), "chunks": [sha256_hex(d)]});
    let dup = serde_json::json!({"format": 1, "compatible": "perch-test", "version": "2.0.0", "created": "x", "chunk_size": 4096,
        "images": [entry(b"AAAAAAAAA"), entry(b"BBBBBBBBB")]})
    .to_string();
    let signed_dup = dir.path().join("signed-dup.bundle");
    crafted(&signed_dup, dup.as_bytes(), Some(1));
    std::fs::OpenOptions::new().append(true).open(&signed_dup).unwrap().write_all(b"AAAAAAAAABBBBBBBBB").unwrap();
    let err = fails(&["ota", "install", "--quiet", "-c", config.to_str().unwrap(), signed_dup.to_str().unwrap()]);
    assert!(err.contains("appears twice"), "{err}");
    assert_eq!(phase(&config), "idle");
    assert!(!dir.path().join("slot-b.img").exists(), "slot B was written");

    // `bundle verify` needs a keyring, or says --no-keyring explicitly.
    let b = bundle(&dir.path().join("ok.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(2), 4096);
    let err = fails(&["bundle", "verify", b.to_str().unwrap()]);
    assert!(err.contains("--keyring") && err.contains("--no-keyring"), "{err}");
    let err = fails(&["bundle", "verify", "--keyring", dev_pub(1).to_str().unwrap(), b.to_str().unwrap()]);
    assert!(err.contains("unknown key"), "{err}");
    let out = ok(&["bundle", "verify", "--no-keyring", b.to_str().unwrap()]);
    assert!(out.contains("NOT checked"), "{out}");
}

fn sha256_hex(d: &[u8]) -> String {
    <sha2::Sha256 as sha2::Digest>::digest(d).iter().map(|b| format!("{b:02x}")).collect()
}

/// `perch fleet status --json | head -2` panicked on the closed pipe; CLI output ends quietly there.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for i in 0..300 {
        let p = dir.path().join(format!("f{i}"));
        std::fs::write(&p, [i as u8; 16]).unwrap();
        images.push(p);
    }
    let b = dir.path().join("many.bundle");
    let mut c = perch();
    c.args(["bundle", "build", "--compatible", "perch-test", "--version", "1.0.0", "-o"]).arg(&b);
    for (i, p) in images.iter().enumerate() {
        c.arg("--image").arg(format!("f{i}={}", p.display()));
    }
    assert!(c.status().unwrap().success());
    let mut info = perch().args(["bundle", "info"]).arg(&b).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Read two lines, then close the pipe, as `head -2` does.
    let mut out = info.stdout.take().unwrap();
    let mut first = [0u8; 64];
    let _ = out.read(&mut first).unwrap();
    drop(out);
    let o = info.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert!(o.status.success(), "{:?}", o.status);
}
