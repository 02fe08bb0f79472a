//! Event pipeline benchmark (not a test): `bash bench/events.sh` or `cargo bench --bench events`.
//!
//! 1. Outbox appends with durability (one flush per batch), next to the physical limit measured in the same
//!    run: the same bytes appended to a plain file with one fdatasync per batch.
//! 2. Drain to a real mosquitto at QoS 1 (delete on PUBACK), next to rumqttc publishing the same messages at
//!    QoS 1 straight from memory (no outbox).
//! 3. Frame timestamp → subscriber latency through the whole service (`target/release/perch run` on the
//!    sample video, events received by an in-process rumqttc subscriber), next to the inference time.
//!
//! Parts 1 and 2 run both sides once per round (5; `BENCH_SMOKE=1`: 2 rounds of small inputs, for CI),
//! alternating which goes first, and print a `ratio` line each: the median of the per-round ratios with
//! every round's ratio and their spread. The latency part fails the bench when it timed no event.

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

/// How much each part does: `BENCH_SMOKE=1` (CI) runs a few rounds of small inputs, to prove the bench runs.
struct Settings {
    rounds: usize,
    /// Events appended per round at batch 1, and at the larger batches.
    appends: (u64, u64),
    drained: u64,
}

impl Settings {
    fn from_env() -> Self {
        match std::env::var("BENCH_SMOKE").as_deref() {
            Ok("1") => Settings { rounds: 2, appends: (200, 5_000), drained: 2_000 },
            _ => Settings { rounds: 5, appends: (2_000, 50_000), drained: 20_000 },
        }
    }
}

/// perch's side: `n` events appended to a fresh outbox, `batch` per durable append. Events per second.
fn outbox_appends(dir: &Path, n: u64, batch: usize) -> f64 {
    let outbox = Outbox::open(dir, 1 << 30).unwrap();
    let items: Vec<()> = vec![(); batch];
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        outbox.append_batch(&items, |seq, _| payload(seq)).unwrap();
        done += batch as u64;
    }
    done as f64 / t.elapsed().as_secs_f64()
}

/// The physical limit: the same bytes appended to a plain file, one fdatasync per batch.
fn file_appends(path: &Path, n: u64, batch: usize) -> f64 {
    let mut f = std::fs::File::create(path).unwrap();
    let t = Instant::now();
    let mut seq = 0;
    while seq < n {
        for _ in 0..batch {
            f.write_all(&payload(seq)).unwrap();
            seq += 1;
        }
        f.sync_data().unwrap();
    }
    seq as f64 / t.elapsed().as_secs_f64()
}

/// perch's side: `n` events already in the outbox (not timed), drained to the broker at QoS 1 by the
/// service's publisher (delete on PUBACK). Events per second.
async fn outbox_drain(dir: &Path, port: u16, n: u64) -> f64 {
    let outbox = Arc::new(Outbox::open(dir, 1 << 30).unwrap());
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
    let rate = n as f64 / t.elapsed().as_secs_f64();
    cancel.cancel();
    let _ = task.await;
    rate
}

/// The baseline: rumqttc publishing the same messages at QoS 1 straight from memory, same in-flight window.
async fn memory_publish(port: u16, n: u64, round: usize) -> f64 {
    let mut o = MqttOptions::new(format!("bench-raw-{round}"), "127.0.0.1", port);
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
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let client = producer.await.unwrap();
    let _ = client.disconnect().await;
    rate
}

/// Runs `a` and `b` once per round, alternating which goes first (machine drift hits both alike); returns
/// each side's figure per round.
fn alternate<A: FnMut(usize) -> f64, B: FnMut(usize) -> f64>(rounds: usize, mut a: A, mut b: B) -> (Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            xs.push(a(round));
            ys.push(b(round));
        } else {
            ys.push(b(round));
            xs.push(a(round));
        }
    }
    (xs, ys)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// The ratio line every bench prints (the format of bench/ratio.py): the median of the per-round ratios,
/// each round's ratio and their spread.
fn ratio_line(name: &str, num: &[f64], den: &[f64]) -> String {
    let r: Vec<f64> = num.iter().zip(den).map(|(n, d)| n / d).collect();
    let (lo, hi) = r.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let rounds: Vec<String> = r.iter().map(|x| format!("{x:.3}")).collect();
    format!("ratio {name}: {:.3}x (rounds {}; spread {lo:.3}..{hi:.3})", median(&r), rounds.join(" "))
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
        eprintln!("latency: needs target/release/perch and .local/media: run bash bench/events.sh");
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
    let mut other = std::collections::BTreeMap::<String, usize>::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(3), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let now = SystemTime::now();
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                // The frame that caused a new/update is the one last seen; an `end` is sent end_after_s later.
                match (v["type"].as_str(), v["last_seen"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok())) {
                    (Some("new" | "update"), Some(seen)) => lat.push(now.duration_since(seen).unwrap_or_default().as_secs_f64() * 1e3),
                    (t, _) => *other.entry(t.unwrap_or("(no type)").to_string()).or_default() += 1,
                }
            }
            Ok(Ok(_)) => {}
            _ if child.0.try_wait().unwrap().is_some() => break,
            _ => {}
        }
    }
    let mut inference = frames.join().unwrap();
    // An `end` is sent end_after_s after its last frame; a message without `last_seen` (a recording's
    // `clip`) has no frame to time it from: counted, not timed.
    println!("  messages not timed, by type: {other:?}");
    if lat.is_empty() || inference.is_empty() {
        return None;
    }
    let n = lat.len();
    Some((percentile(&mut lat, 0.5), percentile(&mut lat, 0.99), percentile(&mut inference, 0.5), n))
}

fn main() {
    let set = Settings::from_env();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    println!("== outbox appends (durable: one flush per batch) vs raw file append + fdatasync per batch, {} rounds", set.rounds);
    for batch in [1usize, 10, 100] {
        let n = if batch == 1 { set.appends.0 } else { set.appends.1 };
        let (perch, raw) = alternate(
            set.rounds,
            |round| outbox_appends(&d.join(format!("ob-{batch}-{round}")), n, batch),
            |round| file_appends(&d.join(format!("raw-{batch}-{round}")), n, batch),
        );
        let p = median(&perch);
        println!(
            "  batch {batch:>3}: perch {p:>9.0} events/s   raw file {:>9.0} events/s   goal >= 20000/s: {}",
            median(&raw),
            if p >= 20_000.0 { "met" } else { "NOT met" }
        );
        println!("  {}", ratio_line(&format!("outbox/file appends at batch {batch}"), &perch, &raw));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let port = free_port();
    let _broker = mosquitto(d, port);
    let n = set.drained;
    println!("== drain to mosquitto at QoS 1, {n} events, {} rounds", set.rounds);
    let (perch, raw) = alternate(
        set.rounds,
        |round| rt.block_on(outbox_drain(&d.join(format!("drain-{round}")), port, n)),
        |round| rt.block_on(memory_publish(port, n, round)),
    );
    let p = median(&perch);
    println!(
        "  perch outbox → broker {p:>8.0} events/s   rumqttc from memory {:>8.0} events/s   goal >= 5000/s: {}",
        median(&raw),
        if p >= 5000.0 { "met" } else { "NOT met" }
    );
    println!("  {}", ratio_line("outbox drain/rumqttc from memory", &perch, &raw));
    println!("== frame timestamp → subscriber latency (whole service, sample video at 5 fps)");
    match rt.block_on(latency(d, port)) {
        Some((p50, p99, inf, count)) => {
            println!(
                "  {count} new/update events: p50 {p50:.1} ms, p99 {p99:.1} ms; inference median {inf:.1} ms; goal p99 <= inference + 50 = {:.1} ms: {}",
                inf + 50.0,
                if p99 <= inf + 50.0 { "met" } else { "NOT met" }
            );
            // One run of the service (no peer to alternate with): the ratio to the goal's bound.
            println!("  {}", ratio_line("latency p99/(inference + 50 ms)", &[p99], &[inf + 50.0]));
        }
        None => {
            eprintln!("latency: no new/update event was timed: see the messages above");
            std::process::exit(1);
        }
    }
}
