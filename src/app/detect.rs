//! `perch detect`: one-shot detection on images and video files, printing JSON lines.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::capture::for_each_frame;
use crate::detect::{Detection, Detections, Detector, DetectorConfig};

/// Settings of a one-shot run.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    pub detector: DetectorConfig,
    pub engine_cache: PathBuf,
    /// Frames per second sampled from videos.
    pub fps: f64,
    pub min_score: f32,
}

/// One line of output: one detection.
#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    frame: u64,
    pts_ms: Option<f64>,
    #[serde(flatten)]
    detection: &'a Detection,
}

/// Detects objects in each file and prints one JSON line per detection; returns how many were printed.
pub fn run(files: &[PathBuf], opts: &DetectOptions, out: &mut impl Write) -> anyhow::Result<usize> {
    let mut detector = Detector::load(&opts.detector, &opts.engine_cache, &|_| {}).context("cannot load the detector")?;
    let input = (detector.manifest().input.width, detector.manifest().input.height);
    let mut found = Detections::new();
    let mut printed = 0;
    for file in files {
        let name = file.display().to_string();
        for_each_frame(file, Some(opts.fps), input, |frame| {
            detector.detect(&frame.view(), opts.min_score, &mut found)?;
            for d in &found {
                let line = Line { file: &name, frame: frame.info.seq, pts_ms: frame.info.pts.map(|p| p.as_secs_f64() * 1e3), detection: d };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
                printed += 1;
            }
            Ok(())
        })?;
    }
    out.flush()?;
    Ok(printed)
}
