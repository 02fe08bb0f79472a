//! `perch detect`: one-shot detection on images and video files, printing JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::capture::{CapturePipeline, Frame, Pacing, PipelineSpec, Pull, Source, config::RtspTransport};
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

/// How long a file may go without producing a frame before perch gives up on it.
const FILE_STALL: Duration = Duration::from_secs(30);

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

/// Decodes `file` (image or video) and calls `f` for each frame, scaled to fit `fit`, at most `fps` per
/// second of video.
pub fn for_each_frame(file: &Path, fps: Option<f64>, fit: (u32, u32), mut f: impl FnMut(&Frame) -> anyhow::Result<()>) -> anyhow::Result<u64> {
    let abs = std::path::absolute(file).with_context(|| format!("bad path {}", file.display()))?;
    if !abs.is_file() {
        anyhow::bail!("{}: no such file (give an image or a video file)", file.display());
    }
    let spec = PipelineSpec {
        source: Source::File(abs),
        max_fps: fps,
        fit,
        pacing: Pacing::AsFastAsConsumed,
        rtsp_transport: RtspTransport::Tcp,
        rtsp_latency_ms: 0,
        connect_timeout: FILE_STALL,
        record: None,
    };
    let mut pipeline = CapturePipeline::build(&spec, 0)?;
    pipeline.start().with_context(|| format!("cannot decode {}", file.display()))?;
    let mut seq = 0;
    loop {
        match pipeline.pull(FILE_STALL, seq).with_context(|| format!("cannot decode {}", file.display()))? {
            Pull::Frame(frame) => {
                f(&frame)?;
                seq += 1;
            }
            Pull::Eos if seq == 0 => anyhow::bail!("{}: no video frame could be decoded from this file", file.display()),
            Pull::Eos => return Ok(seq),
            Pull::Timeout => anyhow::bail!("{}: decoding stalled for {} s", file.display(), FILE_STALL.as_secs()),
        }
    }
}
