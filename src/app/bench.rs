//! `perch bench`: per-frame cost of preprocess + inference + postprocess on one image, for comparison with
//! other implementations (see `bench/`). The image is decoded once at full size; each iteration letterboxes
//! it from that size, as the Python baseline does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::capture::FrameView;
use crate::detect::{Detections, Detector, DetectorConfig, Timings};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub iterations: usize,
    pub intra_threads: usize,
    pub provider: &'static str,
    /// The model input the image went into: the model's size, or smaller with rectangular inference.
    pub input: [u32; 2],
    pub detections: usize,
    pub median_ms: Stage,
    pub p90_ms: Stage,
}

#[derive(Debug, Serialize)]
pub struct Stage {
    pub preprocess: f64,
    pub inference: f64,
    pub postprocess: f64,
    pub total: f64,
}

pub fn run(image: &Path, detector_cfg: &DetectorConfig, engine_cache: &Path, iterations: usize, warmup: usize, min_score: f32) -> anyhow::Result<BenchReport> {
    let mut pixels = Vec::new();
    let (mut w, mut h) = (0, 0);
    crate::capture::for_each_frame(image, None, (16384, 16384), |frame| {
        let v = frame.view();
        w = v.width;
        h = v.height;
        for y in 0..h as usize {
            pixels.extend_from_slice(&v.data[y * v.stride..y * v.stride + w as usize * 3]);
        }
        Ok(())
    })
    .with_context(|| format!("cannot read {}", image.display()))?;
    let mut detector = Detector::load(detector_cfg, engine_cache, &|_| {})?;
    let view = FrameView::packed(&pixels, w, h);
    let mut found = Detections::new();
    for _ in 0..warmup {
        detector.detect(&view, min_score, &mut found)?;
    }
    let mut runs: Vec<Timings> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        runs.push(detector.detect(&view, min_score, &mut found)?);
    }
    let stage = |q: f64| Stage {
        preprocess: quantile(runs.iter().map(|t| t.preprocess), q),
        inference: quantile(runs.iter().map(|t| t.inference), q),
        postprocess: quantile(runs.iter().map(|t| t.postprocess), q),
        total: quantile(runs.iter().map(|t| t.total()), q),
    };
    Ok(BenchReport {
        image: PathBuf::from(image).display().to_string(),
        width: w,
        height: h,
        iterations,
        intra_threads: detector_cfg.intra_threads,
        provider: detector.provider().name(),
        input: detector.input_size(&view).into(),
        detections: found.len(),
        median_ms: stage(0.5),
        p90_ms: stage(0.9),
    })
}

fn quantile(values: impl Iterator<Item = Duration>, q: f64) -> f64 {
    let mut v: Vec<f64> = values.map(|d| d.as_secs_f64() * 1e3).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}
