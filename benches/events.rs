//! Event pipeline benchmark (not a test): `bash bench/events.sh` or `cargo bench --bench events`.
//!
//! 1. Outbox appends with durability (one flush per batch), next to the physical limit measured in the same
//!    run: the same bytes appended to a plain file with one fdatasync per batch.
//! 2. Drain to a real mosquitto at QoS 1 (delete on PUBACK), next to rumqttc publishing the same messages at
//!    QoS 1 straight from memory (no outbox).
//! 3. Frame timestamp → subscriber latency through the whole service (`target/release/perch run` on the
//!    sample video, events received by an in-process rumqttc subscriber), next to the inference time.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use perch::events::Outbox;
use perch::events::config::MqttConfig;
use perch::events::publisher::{Publisher, PublisherStats};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

fn payload(seq: u64) -> Vec<u8> {
    // About the size of a real event message.
    format!(
        r#"{{"schema_version":1,"seq":{seq},"event_id":"street-1a2093d5e91-be165173-{seq}","type":"update","device_id":"bench","camera":"street","label":"person","class_id":0,"score":0.80064183,"top_score":0.859154,"box":[503.91733,277.36353,544.7215,387.38376],"frame_size":[1280,720],"start":"2026-11-23T16:29:06.577Z","end":null,"last_seen":"2026-11-23T16:29:06.977Z","zones":["left"],"clip":null,"snapshot":null,"ts":"2026-11-23T16:29:07.014Z"}}"#
    )
    .into_bytes()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto(dir: &Path, port: u16) -> Kill {
    let conf = dir.join("m.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nuser root\n")).unwrap();
    let child =
        Command::new("mosquitto").arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("mosquitto (scripts/setup.sh installs it)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Kill(child)
}

fn appends(dir: &Path, n: u64, batch: usize) -> (f64, f64) {
    let outbox = Outbox::open(&dir.join(format!("ob-{batch}")), 1 << 30).unwrap();
    let items: Vec<()> = vec![(); batch];
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        outbox.append_batch(&items, |seq, _| payload(seq)).unwrap();
        done += batch as u64;
    }
    let perch = done as f64 / t.elapsed().as_secs_f64();
    // The physical limit: the same bytes, appended to a file, one fdatasync per batch.
    let mut f = std::fs::File::create(dir.join(format!("raw-{batch}"))).unwrap();
    let t = Instant::now();
    let mut seq = 0;
    while seq < done {
        for _ in 0..batch {
            f.write_all(&payload(seq)).unwrap();
            seq += 1;
        }
        f.sync_data().unwrap();
    }
    (perch, done as f64 / t.elapsed().as_secs_f64())
}

async fn drain(dir: &Path, port: u16, n: u64) -> (f64, f64) {
    let outbox = Arc::new(Outbox::open(&dir.join("drain"), 1 << 30).unwrap());
    outbox.append_batch(&vec![(); n as usize], |seq, _| payload(seq)).unwrap();
    let cancel = CancellationToken::new();
    let stats = Arc::new(PublisherStats::default());
    let publisher = Publisher {
        commands: None,
        cfg: MqttConfig { url: format!("mqtt://127.0.0.1:{port}"), health_interval_s: 3600.0, ..MqttConfig::default() },
        device_id: "bench".into(),
        outbox: outbox.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        health: Arc::new(|| serde_json::json!({})),
        stats: stats.clone(),
        inputs_done: CancellationToken::new(),
        drain_timeout: Duration::from_secs(1),
        republish: Arc::new(tokio::sync::Notify::new()),
    };
    let t = Instant::now();
    let task = tokio::spawn(publisher.run(cancel.clone()));
    while outbox.stats().depth > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let perch = n as f64 / t.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = task.await;

    // Baseline: rumqttc at QoS 1 from memory, same in-flight window.
    let mut o = MqttOptions::new("bench-raw", "127.0.0.1", port);
    o.set_inflight(72);
    let (client, mut eventloop) = AsyncClient::new(o, 256);
    let t = Instant::now();
    let producer = tokio::spawn(async move {
        for seq in 0..n {
            client.publish("bench/raw", QoS::AtLeastOnce, false, payload(seq)).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            acked += 1;
        }
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();
    drop(producer.await);
    (perch, raw)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

async fn latency(dir: &Path, port: u16) -> Option<(f64, f64, f64, usize)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let perch = root.join("target/release/perch");
    let video = root.join(".local/media/demo.mp4");
    if !perch.exists() || !video.exists() {
        eprintln!("latency: skipped (needs target/release/perch and .local/media; run bash bench/events.sh)");
        return None;
    }
    let config = dir.join("lat.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"bench\"\nstate_dir = \"{}\"\n[detector]\nmodel = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n[[camera]]\nid = \"street\"\nsource = \"file://{}\"\ndetect_fps = 5\nloop_file = false\nlabels = [\"person\"]\n",
            dir.join("lat-state").display(),
            root.join("models/yolox_nano.toml").display(),
            video.display()
        ),
    )
    .unwrap();
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("bench-sub", "127.0.0.1", port), 64);
    client.subscribe("perch/bench/events/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    let mut child = Kill(
        Command::new(&perch).arg("run").arg("--config").arg(&config).arg("--print-detections").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let frames = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok()?["inference_ms"].as_f64())
            .collect::<Vec<f64>>()
    });
    let mut lat = Vec::new();
    // Messages of other types on the same topic (`clip`: a recording is ready) carry no `last_seen`.
    let mut other = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(3), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let now = SystemTime::now();
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                // The frame that caused a new/update is the one last seen; an `end` is sent end_after_s later.
                match (v["type"].as_str(), v["last_seen"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok())) {
                    (Some("new" | "update"), Some(seen)) => lat.push(now.duration_since(seen).unwrap_or_default().as_secs_f64() * 1e3),
                    (Some("end"), _) => {}
                    _ => other += 1,
                }
            }
            Ok(Ok(_)) => {}
            _ if child.0.try_wait().unwrap().is_some() => break,
            _ => {}
        }
    }
    let mut inference = frames.join().unwrap();
    println!("  ({other} messages of other types, e.g. clip, not timed)");
    if lat.is_empty() || inference.is_empty() {
        return None;
    }
    let n = lat.len();
    Some((percentile(&mut lat, 0.5), percentile(&mut lat, 0.99), percentile(&mut inference, 0.5), n))
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    println!("== outbox appends (durable: one flush per batch) vs raw file append + fdatasync per batch");
    for batch in [1usize, 10, 100] {
        let n = if batch == 1 { 2_000 } else { 50_000 };
        let (perch, raw) = appends(d, n, batch);
        println!(
            "  batch {batch:>3}: perch {perch:>9.0} events/s   raw file {raw:>9.0} events/s   ratio {:.2}   goal >= 20000/s: {}",
            perch / raw,
            if perch >= 20_000.0 { "met" } else { "NOT met" }
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let port = free_port();
    let _broker = mosquitto(d, port);
    let n = 20_000;
    let (perch, raw) = rt.block_on(drain(d, port, n));
    println!("== drain to mosquitto at QoS 1, {n} events");
    println!(
        "  perch outbox → broker {perch:>8.0} events/s   rumqttc from memory {raw:>8.0} events/s   ratio {:.2}   goal >= 5000/s: {}",
        perch / raw,
        if perch >= 5000.0 { "met" } else { "NOT met" }
    );
    println!("== frame timestamp → subscriber latency (whole service, sample video at 5 fps)");
    match rt.block_on(latency(d, port)) {
        Some((p50, p99, inf, count)) => {
            println!(
                "  {count} new/update events: p50 {p50:.1} ms, p99 {p99:.1} ms; inference median {inf:.1} ms; goal p99 <= inference + 50 = {:.1} ms: {}",
                inf + 50.0,
                if p99 <= inf + 50.0 { "met" } else { "NOT met" }
            );
        }
        None => println!("  skipped"),
    }
}
