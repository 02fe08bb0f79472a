//! Files decoded frame by frame, as fast as they are consumed: `perch detect` and the OTA golden-frame
//! check run the detector over every frame of an image or a video with the same pipeline a camera uses.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::settings::RtspTransport;
use super::{CapturePipeline, Frame, Pacing, PipelineSpec, Pull, Source};

/// How long a file may go without producing a frame before perch gives up on it.
const FILE_STALL: Duration = Duration::from_secs(30);

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
        record_source: None,
        decode_threads: 0,
        keyframes_when_idle: None,
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
