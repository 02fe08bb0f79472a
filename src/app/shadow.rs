//! `perch model shadow`: runs a candidate model beside the current one on the same frames and decides
//! whether it may replace it ([`crate::detect::shadow`]). Prints the verdict with the measured figures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::detect::shadow::{Found, ShadowCriteria, ShadowFrame, ShadowVerdict, evaluate};
use crate::detect::{Detections, Detector, DetectorConfig};

pub struct ShadowOptions {
    pub current: DetectorConfig,
    pub candidate: DetectorConfig,
    pub engine_cache: PathBuf,
    /// Frames per second sampled from videos.
    pub fps: f64,
    pub min_score: f32,
    /// Runs of both models per frame (more latency samples; the order alternates so neither is favoured).
    pub rounds: usize,
    pub criteria: ShadowCriteria,
}

fn found(d: &Detections) -> Vec<Found> {
    d.iter().map(|x| Found { label: x.label.to_string(), bbox: x.bbox }).collect()
}

/// Runs both models on every frame of `files`. A candidate that does not load is rejected with a 100 %
/// error rate; the current model must load.
pub fn run(files: &[PathBuf], o: &ShadowOptions) -> anyhow::Result<(ShadowVerdict, Option<String>)> {
    let mut current = Detector::load(&o.current, &o.engine_cache, &|_| {}).map_err(|e| anyhow::anyhow!("cannot load the current model: {e}"))?;
    let (mut candidate, load_error) = match Detector::load(&o.candidate, &o.engine_cache, &|_| {}) {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(format!("the candidate does not load: {e}"))),
    };
    let fit = (current.manifest().input.width, current.manifest().input.height);
    let (mut a, mut b) = (Detections::new(), Detections::new());
    let mut frames = Vec::new();
    let mut warm = false;
    for file in files {
        crate::capture::for_each_frame(Path::new(file), Some(o.fps), fit, |frame| {
            // First runs allocate and tune: not what either model costs in service.
            if !warm {
                warm = true;
                for _ in 0..3 {
                    current.detect(&frame.view(), o.min_score, &mut a)?;
                    if let Some(c) = candidate.as_mut() {
                        let _ = c.detect(&frame.view(), o.min_score, &mut b);
                    }
                }
            }
            for round in 0..o.rounds.max(1) {
                let view = frame.view();
                let mut run_current = || -> anyhow::Result<f64> {
                    let t = Instant::now();
                    current.detect(&view, o.min_score, &mut a)?;
                    Ok(t.elapsed().as_secs_f64() * 1e3)
                };
                let mut run_candidate = || -> (bool, f64) {
                    let t = Instant::now();
                    let ok = candidate.as_mut().is_some_and(|c| c.detect(&view, o.min_score, &mut b).is_ok());
                    (ok, t.elapsed().as_secs_f64() * 1e3)
                };
                let (current_ms, (ok, candidate_ms)) = if round % 2 == 0 {
                    let c = run_current()?;
                    (c, run_candidate())
                } else {
                    let k = run_candidate();
                    (run_current()?, k)
                };
                frames.push(ShadowFrame { current: found(&a), current_ms, candidate: ok.then(|| found(&b)), candidate_ms });
            }
            Ok(())
        })?;
    }
    let mut v = evaluate(&frames, &o.criteria);
    if let Some(e) = &load_error {
        v.reasons.insert(0, e.clone());
    }
    Ok((v, load_error))
}

/// Publishes `payload` retained at QoS 1 on `topic` and waits for the broker's acknowledgement.
pub fn publish(broker: &str, topic: &str, payload: &serde_json::Value) -> anyhow::Result<()> {
    use rumqttc::{Event, Packet, QoS};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let opts = crate::fleet::operator::sim::mqtt_options(broker, &format!("perch-shadow-{}", std::process::id()))?;
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        client.publish(topic, QoS::AtLeastOnce, true, serde_json::to_vec(payload)?).await?;
        let acked = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::anyhow!("MQTT {}: {e}: check --mqtt", crate::util::mask_uri(broker))),
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("the broker did not acknowledge the verdict within 10 s"))?;
        let _ = client.disconnect().await;
        acked
    })
}
