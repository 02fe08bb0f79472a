//! `perch bench-record`: the CPU cost of recording N streams by copy, next to `ffmpeg -c copy -f segment`
//! on the same input in the same run.
//!
//! Both sides read the file as fast as they can, so the figure is CPU seconds per second of video; per
//! stream and in real time, that is the share of one core recording takes. perch's side is exactly the
//! service's recording path from the parsed stream on: `parsebin` → tap appsink → [`SegmentWriter`]
//! (`appsrc → splitmuxsink`), with the recorder's channel drained.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Serialize;

use crate::capture::encoded::{self, EncodedWriter, SharedWriter};
use crate::record::writer::SegmentWriter;
use crate::record::{RecordStats, RecorderMsg, SegmentSink};

#[derive(Debug, Serialize)]
pub struct Side {
    pub cpu_s: f64,
    pub wall_s: f64,
    pub segments: usize,
    /// Frames perch's writer dropped (its queue was full): must be 0 for a fair comparison.
    pub dropped_frames: u64,
    /// CPU milliseconds per second of video, per stream.
    pub cpu_ms_per_video_s: f64,
    /// The share of one core one real-time stream takes (%).
    pub core_percent_per_stream: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub input: PathBuf,
    pub streams: usize,
    pub video_s: f64,
    pub rounds: Vec<(Side, Option<Side>)>,
    /// perch / ffmpeg CPU, median over the rounds.
    pub ratio: Option<f64>,
}

/// User + system CPU seconds of this process (`libc::RUSAGE_SELF`, all threads) or of its waited-for
/// children (`libc::RUSAGE_CHILDREN`).
fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut u);
        u
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn side(cpu_s: f64, wall_s: f64, segments: usize, dropped_frames: u64, video_s: f64, streams: usize) -> Side {
    let per = cpu_s / (video_s * streams as f64);
    Side { cpu_s, wall_s, segments, dropped_frames, cpu_ms_per_video_s: per * 1e3, core_percent_per_stream: per * 100.0 }
}

/// Records `streams` copies of `input` at once; returns (CPU s, wall s, segments, dropped frames, video s
/// of one copy).
fn perch_side(input: &Path, streams: usize, segment: Duration, out: &Path) -> anyhow::Result<(f64, f64, usize, u64, f64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecorderMsg>(1 << 16);
    let stats = Arc::new(RecordStats::new((0..streams).map(|i| (format!("s{i}"), true))));
    let mut runs = Vec::new();
    let cpu0 = cpu(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    for i in 0..streams {
        let dir = out.join(format!("perch-{i}"));
        std::fs::create_dir_all(&dir)?;
        let sink = SegmentSink { camera: i, dir, segment, tx: tx.clone(), stats: stats.clone() };
        let writer: SharedWriter = Arc::new(Mutex::new(Some(Box::new(SegmentWriter::new(sink, "h264").with_backpressure()) as Box<dyn EncodedWriter>)));
        let pipeline = gst::Pipeline::new();
        let src = gst::ElementFactory::make("filesrc").property("location", input).build()?;
        let parse = gst::ElementFactory::make("parsebin").build()?;
        let tap = encoded::tap(writer.clone(), "h264");
        pipeline.add_many([&src, &parse, tap.upcast_ref()])?;
        src.link(&parse)?;
        let tap_pad = tap.static_pad("sink").expect("appsink pad");
        let weak = pipeline.downgrade();
        parse.connect_pad_added(move |_, pad| {
            let video = pad.current_caps().is_some_and(|c| c.structure(0).is_some_and(|s| s.name().starts_with("video/")));
            if video && !tap_pad.is_linked() {
                let _ = pad.link(&tap_pad);
            } else {
                crate::capture::pipeline::discard(&weak, pad);
            }
        });
        pipeline.set_state(gst::State::Playing)?;
        runs.push((pipeline, writer));
    }
    drop(tx);
    let mut video_s = 0.0;
    for (pipeline, writer) in &runs {
        let bus = pipeline.bus().expect("bus");
        loop {
            if let Some(w) = writer.lock().unwrap().as_mut() {
                w.poll(0);
            }
            match bus.timed_pop_filtered(gst::ClockTime::from_mseconds(100), &[gst::MessageType::Eos, gst::MessageType::Error]).map(|m| m.type_()) {
                Some(gst::MessageType::Eos) => break,
                Some(_) => anyhow::bail!("cannot read {}", input.display()),
                None => {}
            }
        }
        if let Some(d) = pipeline.query_duration::<gst::ClockTime>() {
            video_s = d.nseconds() as f64 / 1e9;
        }
        if let Some(w) = writer.lock().unwrap().as_mut() {
            w.finish(0);
        }
        let _ = pipeline.set_state(gst::State::Null);
    }
    let (cpu_s, wall_s) = (cpu(libc::RUSAGE_SELF) - cpu0, t0.elapsed().as_secs_f64());
    let mut segments = 0;
    while let Ok(RecorderMsg::Segment { .. }) = rx.try_recv() {
        segments += 1;
    }
    let dropped = stats.cameras.iter().map(|c| c.dropped_frames.load(std::sync::atomic::Ordering::Relaxed)).sum();
    Ok((cpu_s, wall_s, segments, dropped, video_s))
}

/// The same with `streams` ffmpeg processes at once.
fn ffmpeg_side(input: &Path, streams: usize, segment: Duration, out: &Path) -> anyhow::Result<(f64, f64, usize)> {
    let cpu0 = cpu(libc::RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let mut children = Vec::new();
    for i in 0..streams {
        let dir = out.join(format!("ffmpeg-{i}"));
        std::fs::create_dir_all(&dir)?;
        children.push(
            std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-i"])
                .arg(input)
                .args(["-an", "-c", "copy", "-f", "segment", "-segment_format", "mp4", "-reset_timestamps", "1", "-segment_time"])
                .arg(format!("{}", segment.as_secs_f64()))
                .arg(dir.join("seg%05d.mp4"))
                .spawn()?,
        );
    }
    for mut c in children {
        anyhow::ensure!(c.wait()?.success(), "ffmpeg failed");
    }
    let (cpu_s, wall_s) = (cpu(libc::RUSAGE_CHILDREN) - cpu0, t0.elapsed().as_secs_f64());
    let segments = (0..streams).map(|i| std::fs::read_dir(out.join(format!("ffmpeg-{i}"))).map(|d| d.count()).unwrap_or(0)).sum();
    Ok((cpu_s, wall_s, segments))
}

pub fn run(input: &Path, streams: usize, rounds: usize, segment: Duration, with_ffmpeg: bool) -> anyhow::Result<Report> {
    crate::capture::pipeline::init()?;
    let mut results = Vec::new();
    let mut video = 0.0;
    for round in 0..rounds {
        let out = tempfile_dir(round)?;
        let (cpu_s, wall_s, segs, dropped, video_s) = perch_side(input, streams, segment, &out)?;
        video = video_s;
        anyhow::ensure!(video_s > 0.0, "cannot tell the duration of {}", input.display());
        let p = side(cpu_s, wall_s, segs, dropped, video_s, streams);
        let f = if with_ffmpeg {
            let (cpu_s, wall_s, segs) = ffmpeg_side(input, streams, segment, &out)?;
            Some(side(cpu_s, wall_s, segs, 0, video_s, streams))
        } else {
            None
        };
        let _ = std::fs::remove_dir_all(&out);
        results.push((p, f));
    }
    let mut ratios: Vec<f64> = results.iter().filter_map(|(p, f)| f.as_ref().map(|f| p.cpu_s / f.cpu_s)).collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios.get(ratios.len() / 2).copied();
    Ok(Report { input: input.to_path_buf(), streams, video_s: video, rounds: results, ratio })
}

fn tempfile_dir(round: usize) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("perch-bench-record-{}-{round}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
