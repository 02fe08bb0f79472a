//! Events end to end against a real mosquitto: schema, broker outage, perch killed with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Line, Proc, free_port, media, mosquitto, perch, serial, subscriber, wait_port, write_config};
use serde_json::Value;

fn config(dir: &std::path::Path, port: u16, loop_file: bool) -> std::path::PathBuf {
    let video = media("pedestrians-720p-gop1s.mp4");
    let cam = format!(
        "id = \"street\"\nsource = \"file://{}\"\ndetect_fps = 5\nloop_file = {loop_file}\nlabels = [\"person\"]\n[camera.track]\nzones = [{{ name = \"left\", polygon = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]] }}]\n\
         [[camera.track.line]]\nname = \"middle\"\nfrom = [0.0, 0.6]\nto = [1.0, 0.6]",
        video.display()
    );
    let path = write_config(dir, &[cam], "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text.replace("[detector]", &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nhealth_interval_s = 1\n\n[detector]"));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(config: &std::path::Path) -> Proc {
    let mut cmd = perch();
    cmd.arg("run").arg("--config").arg(config);
    Proc::spawn(cmd)
}

/// Messages received on `perch/test-box/events/...`: events and, for recorded cameras, clip messages.
fn messages(lines: &[Line]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| l.text.split_once(' ').filter(|(t, _)| t.starts_with("perch/test-box/events/")).and_then(|(_, p)| serde_json::from_str(p).ok()))
        .collect()
}

/// Event messages (`new`, `update`, `end`) received.
fn events(lines: &[Line]) -> Vec<Value> {
    messages(lines).into_iter().filter(|m| m["type"] != "clip").collect()
}

/// Sequence numbers perch logged as stored in its outbox.
fn stored(err: &str) -> BTreeSet<u64> {
    err.lines().filter_map(stored_seq).collect()
}

fn stored_seq(line: &str) -> Option<u64> {
    line.contains(" event ").then(|| line.split("seq=").nth(1)?.split(' ').next()?.parse().ok()).flatten()
}

/// The same, from collected stderr lines.
fn stored_lines(err: &[Line]) -> BTreeSet<u64> {
    err.iter().filter_map(|l| stored_seq(&l.text)).collect()
}

fn received(lines: &[Line]) -> BTreeSet<u64> {
    events(lines).iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn events_from_a_real_video_arrive_with_every_field() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/#", "schema-test");
    std::thread::sleep(Duration::from_millis(300));
    let mut p = run(&config(dir.path(), port, false));
    assert!(p.wait_exit(Duration::from_secs(90)).success(), "{}", p.stderr_text());
    assert!(sub.wait_for(Duration::from_secs(10), |out, _| out.iter().any(|l| l.text == "perch/test-box/status offline")));
    let out = sub.stdout();
    let evs = events(&out);
    assert!(evs.len() >= 20, "only {} events", evs.len());
    let rfc = |v: &Value| v.as_str().is_some_and(|s| humantime::parse_rfc3339(s).is_ok());
    for e in &evs {
        assert_eq!(e["schema_version"], 1);
        assert_eq!(e["device_id"], "test-box");
        assert_eq!(e["camera"], "street");
        assert_eq!(e["label"], "person");
        assert_eq!(e["class_id"], 0);
        assert!(["new", "update", "end"].contains(&e["type"].as_str().unwrap()), "{e}");
        assert!(e["event_id"].as_str().is_some_and(|s| s.starts_with("street-")));
        let (score, top) = (e["score"].as_f64().unwrap(), e["top_score"].as_f64().unwrap());
        // The latest sighting may be a weak box (the tracker's second stage, from low_score 0.1); the
        // object itself was seen from min_score (0.5) on.
        assert!(score >= 0.1 && top >= 0.5 && top >= score && top <= 1.0, "{e}");
        let b: Vec<f64> = e["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(b[0] < b[2] && b[1] < b[3] && b[2] <= 1280.0 && b[3] <= 720.0, "{e}");
        assert_eq!(e["frame_size"], serde_json::json!([1280, 720]));
        assert!(rfc(&e["start"]) && rfc(&e["last_seen"]) && rfc(&e["ts"]), "{e}");
        assert_eq!(rfc(&e["end"]), e["type"] == "end", "end time only on end: {e}");
        assert!(e["zones"].as_array().unwrap().iter().all(|z| z == "left"));
        assert!(e.get("clip").is_some() && e.get("snapshot").is_some());
        assert_eq!(e["loitering"], serde_json::json!([]), "no zone has loitering_s: {e}");
        for c in e["crossings"].as_array().unwrap() {
            assert!(c["line"] == "middle" && ["left", "right"].contains(&c["direction"].as_str().unwrap()) && rfc(&c["at"]), "{e}");
        }
    }
    // Walkers go up and down the street: some cross the line across the middle, and say so.
    let crossed = evs.iter().filter(|e| e["type"] == "end" && !e["crossings"].as_array().unwrap().is_empty()).count();
    assert!(crossed >= 1, "no walker's end event lists a crossing of the middle line");
    // Every object's event opens and closes once, with one id; seq strictly increases.
    let ids = |kind: &str| evs.iter().filter(|e| e["type"] == kind).map(|e| e["event_id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (new, end) = (ids("new"), ids("end"));
    assert_eq!(new.iter().collect::<BTreeSet<_>>(), end.iter().collect::<BTreeSet<_>>());
    assert_eq!(new.len(), new.iter().collect::<BTreeSet<_>>().len());
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(received(&out), stored(&p.stderr_text()), "every stored event was delivered");
    // The camera is recorded: each `end` names its clip, and the clip message follows (at the latest when
    // the service stops at the end of the file).
    let clips: Vec<Value> = messages(&out).into_iter().filter(|m| m["type"] == "clip").collect();
    for e in evs.iter().filter(|e| e["type"] == "end") {
        let id = e["event_id"].as_str().unwrap();
        assert_eq!(e["clip"], format!("/api/clips/{id}.mp4"), "{e}");
        let c = clips.iter().find(|c| c["event_id"] == id).unwrap_or_else(|| panic!("no clip message for {id}"));
        assert!(c["status"] == "complete" || c["status"] == "partial", "{c}");
    }
    assert!(out.iter().any(|l| l.text.starts_with("perch/test-box/health {")), "health snapshot");
    assert!(out.iter().any(|l| l.text == "perch/test-box/status online"));
}

#[test]
fn a_broker_outage_loses_nothing() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/events/#", "outage-test");
    std::thread::sleep(Duration::from_millis(300));
    let p = run(&config(dir.path(), port, true));
    assert!(sub.wait_for(Duration::from_secs(30), |out, _| events(out).len() >= 5), "no events: {}", p.stderr_text());

    // The broker is stopped for a while (cleanly, so it keeps what it already acknowledged); events keep
    // coming and wait in perch's outbox.
    broker.signal("TERM");
    let mut broker = broker;
    broker.wait_exit(Duration::from_secs(10));
    drop(broker);
    let down = stored(&p.stderr_text()).len();
    assert!(p.wait_for(Duration::from_secs(30), |_, err| stored_lines(err).len() >= down + 10));
    let broker = mosquitto(dir.path(), port);
    // Back: the outbox drains, then perch stops cleanly.
    std::thread::sleep(Duration::from_secs(4));
    p.signal("TERM");
    let mut p = p;
    assert!(p.wait_exit(Duration::from_secs(30)).success());
    let sent = stored(&p.stderr_text());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !received(&sub.stdout()).is_superset(&sent) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = received(&sub.stdout());
    let missing: Vec<_> = sent.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "lost {} of {} events: {missing:?}\nreceived in order: {:?}\nsubscriber: {}\nperch: {}",
        missing.len(),
        sent.len(),
        events(&sub.stdout()).iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        sub.stderr_text(),
        p.stderr_text().lines().filter(|l| l.contains("MQTT") || l.contains("outbox")).collect::<Vec<_>>().join("\n")
    );
    // Repeats, if any, are the same message.
    let evs = events(&sub.stdout());
    for e in &evs {
        let same: Vec<_> = evs.iter().filter(|o| o["seq"] == e["seq"]).collect();
        assert!(same.iter().all(|o| o["event_id"] == e["event_id"] && o["type"] == e["type"]));
    }
    drop(broker);
}

#[test]
fn events_in_the_outbox_survive_sigkill() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, true);
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/events/#", "kill-test");
    std::thread::sleep(Duration::from_millis(300));
    // perch publishes for a while, then is killed without warning, mid-stream.
    let p = run(&cfg);
    assert!(p.wait_for(Duration::from_secs(40), |_, err| stored_lines(err).len() >= 25), "{}", p.stderr_text());
    p.signal("KILL");
    let mut p = p;
    let _ = p.wait_exit(Duration::from_secs(10));
    let before = stored(&p.stderr_text());
    drop(p);

    // Restarted, it delivers everything that reached its outbox before the kill.
    let p = run(&cfg);
    assert!(
        sub.wait_for(Duration::from_secs(30), |out, _| received(out).is_superset(&before)),
        "events stored before SIGKILL not delivered: missing {:?}\n{}",
        before.difference(&received(&sub.stdout())).collect::<Vec<_>>(),
        p.stderr_text()
    );
    // Numbering continues after the restart.
    assert!(p.wait_for(Duration::from_secs(30), |_, err| { stored_lines(err).iter().next().is_some_and(|first| first > before.iter().max().unwrap()) }));
}

/// A test CA with a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl.
fn make_pki(dir: &std::path::Path) {
    let sh = |args: &str| {
        let out = std::process::Command::new("sh").arg("-c").arg(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=perch-test-ca");
    for name in ["server", "client"] {
        sh(&format!("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"));
        std::fs::write(dir.join(format!("{name}.ext")), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        sh(&format!("openssl x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {name}.pem -days 2 -extfile {name}.ext"));
    }
}

#[test]
fn tls_with_client_certificates() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_pki(d);
    let port = free_port();
    let conf = d.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\nallow_anonymous true\nuser root\n",
            d.display()
        ),
    )
    .unwrap();
    let broker = Proc::spawn({
        let mut c = std::process::Command::new("mosquitto");
        c.arg("-c").arg(&conf);
        c
    });
    wait_port(port, &broker);
    let tls_sub = |with_cert: bool| {
        let mut c = std::process::Command::new("mosquitto_sub");
        c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-q", "1", "-t", "perch/test-box/#", "--cafile"]).arg(d.join("ca.pem"));
        if with_cert {
            c.arg("--cert").arg(d.join("client.pem")).arg("--key").arg(d.join("client.key"));
        }
        Proc::spawn(c)
    };
    let sub = tls_sub(true);

    let cfg = config(d, port, false);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("url = \"mqtt://127.0.0.1:{port}\""),
        &format!("url = \"mqtts://127.0.0.1:{port}\"\nca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/client.pem\"\nkey_file = \"{0}/client.key\"", d.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    let p = run(&cfg);
    assert!(
        sub.wait_for(Duration::from_secs(40), |out, _| out.iter().any(|l| l.text == "perch/test-box/status online") && !events(out).is_empty()),
        "perch did not publish over TLS: {}\nsubscriber: {}",
        p.stderr_text(),
        sub.stderr_text()
    );
    // A client without a certificate is refused by the broker.
    let mut anonymous = tls_sub(false);
    let refused = anonymous.wait_exit(Duration::from_secs(15));
    assert!(!refused.success(), "a client without a certificate was let in");
    assert!(events(&anonymous.stdout()).is_empty());
}

#[test]
fn commands_are_answered_and_malformed_ones_change_nothing() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = mosquitto(dir.path(), port);
    let sub = subscriber(port, "perch/test-box/cmd/#", "cmd-test");
    let p = run(&config(dir.path(), port, true));
    assert!(p.wait_for(Duration::from_secs(30), |_, err| err.iter().any(|l| l.text.contains("MQTT connected"))), "{}", p.stderr_text());
    std::thread::sleep(Duration::from_millis(500));
    let publish = |topic: &str, payload: &str| {
        let ok = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-m", payload])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    publish("perch/test-box/cmd/ping", r#"{"id": 7}"#);
    publish("perch/test-box/cmd/ping", "{not json");
    publish("perch/test-box/cmd/reboot-now", "{}");
    let result = |out: &[Line], n: usize| -> Vec<Value> {
        out.iter()
            .filter_map(|l| l.text.split_once(' ').filter(|(t, _)| t.ends_with("/result")).and_then(|(_, b)| serde_json::from_str(b).ok()))
            .take(n)
            .collect()
    };
    assert!(sub.wait_for(Duration::from_secs(15), |out, _| result(out, 3).len() == 3), "replies: {:?}", sub.stdout());
    let r = result(&sub.stdout(), 3);
    assert_eq!(r[0], serde_json::json!({"ok": true, "pong": true, "id": 7}));
    assert_eq!(r[1]["ok"], false);
    assert!(r[1]["error"].as_str().unwrap().contains("not JSON"));
    assert_eq!(r[2]["ok"], false);
    assert!(r[2]["error"].as_str().unwrap().contains("unknown command"));
    // And the service carries on.
    assert!(p.child.id() > 0);
    let before = stored(&p.stderr_text()).len();
    assert!(p.wait_for(Duration::from_secs(20), |_, err| stored_lines(err).len() > before));
}

#[test]
fn broker_credentials_are_used_and_masked() {
    let _s = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let passwords = d.join("passwords");
    let made = std::process::Command::new("mosquitto_passwd").arg("-c").arg("-b").arg(&passwords).args(["perch", "s3cr3t-pass"]).status().unwrap();
    assert!(made.success());
    let conf = d.join("auth.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nuser root\n", passwords.display())).unwrap();
    let broker = Proc::spawn({
        let mut c = std::process::Command::new("mosquitto");
        c.arg("-c").arg(&conf);
        c
    });
    wait_port(port, &broker);
    let sub = Proc::spawn({
        let mut c = std::process::Command::new("mosquitto_sub");
        c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", "perch", "-P", "s3cr3t-pass", "-v", "-t", "perch/test-box/status"]);
        c
    });
    // Wrong password first: refused, retried, and the password never logged.
    let cfg = config(d, port, true);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let url = format!("url = \"mqtt://127.0.0.1:{port}\"");
    std::fs::write(&cfg, base.replace(&url, &format!("{url}\nusername = \"perch\"\npassword = \"wrong-pass\""))).unwrap();
    let p = run(&cfg);
    assert!(
        p.wait_for(Duration::from_secs(20), |_, err| err.iter().filter(|l| l.text.contains("MQTT connection lost or refused")).count() >= 2),
        "{}",
        p.stderr_text()
    );
    assert!(!p.stderr_text().contains("wrong-pass"));
    drop(p);
    std::fs::write(&cfg, base.replace(&url, &format!("{url}\nusername = \"perch\"\npassword = \"s3cr3t-pass\""))).unwrap();
    let p = run(&cfg);
    assert!(sub.wait_for(Duration::from_secs(20), |out, _| out.iter().any(|l| l.text == "perch/test-box/status online")), "{}", p.stderr_text());
    assert!(!p.stderr_text().contains("s3cr3t-pass"));
}
