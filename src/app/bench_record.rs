//! `perch bench-record`: the CPU cost of recording N streams by copy, next to `ffmpeg -c copy -f segment`
//! on the same input in the same run.
//!
//! Both sides are child processes of this driver, timed with `getrusage(RUSAGE_CHILDREN)` around each:
//! perch's side is `perch bench-record --side perch` (one process for N streams, as the service), ffmpeg's
//! is N `ffmpeg` processes. Each side does the same work to the end: the segments are written, closed
//! (the MP4 index at the end of each file) and made durable — perch's through the recorder's store
//! (`Store::add_segment`: fsync, rename, folder sync), ffmpeg's by a `sync` of its files once it exits.
//!
//! Start-up is charged alike by taking it out of both: each side records the whole input and a short cut
//! of it (its first seconds), and the figure is the difference, CPU seconds per second of video between the
//! two runs. What a process costs to start (GStreamer's registry, ffmpeg's libraries, four ffmpeg processes
//! against one perch process) cancels out; it is reported beside as each side's fixed cost. Rounds alternate
//! which side goes first.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::{Deserialize, Serialize};

use crate::capture::encoded::{self, EncodedWriter, SharedWriter};
use crate::record::store::Store;
use crate::record::writer::SegmentWriter;
use crate::record::{RecordStats, RecorderMsg, SegmentSink};

/// One side recording one input once.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub cpu_s: f64,
    pub wall_s: f64,
    pub segments: usize,
    /// Frames perch's writer dropped (its queue was full): must be 0 for a fair comparison.
    pub dropped_frames: u64,
}

/// One side in one round: the short cut and the whole input.
#[derive(Debug, Serialize)]
pub struct Side {
    pub short: Run,
    pub long: Run,
    /// CPU milliseconds per second of video per stream, start-up taken out: (long − short) / video seconds
    /// between them / streams.
    pub cpu_ms_per_video_s: f64,
    /// The share of one core one real-time stream takes (%).
    pub core_percent_per_stream: f64,
    /// CPU milliseconds the side costs whatever the length (process start-up, finishing): short − its
    /// video's share.
    pub fixed_cpu_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Round {
    pub first: &'static str,
    pub perch: Side,
    pub ffmpeg: Option<Side>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub input: PathBuf,
    pub streams: usize,
    /// Seconds of video in the whole input and in the short cut.
    pub video_s: f64,
    pub short_video_s: f64,
    pub rounds: Vec<Round>,
}

/// What `perch bench-record --side perch` prints (one JSON line) for the driver.
#[derive(Debug, Serialize, Deserialize)]
pub struct SideOutput {
    pub segments: usize,
    pub dropped_frames: u64,
    pub video_s: f64,
}

/// User + system CPU seconds of the waited-for children of this process (all their threads).
fn children_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Runs `f` (which starts and waits for child processes) and returns its result with the children's CPU
/// seconds and the wall seconds.
fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, f64, f64)> {
    let (cpu0, t0) = (children_cpu(), Instant::now());
    let out = f()?;
    Ok((out, children_cpu() - cpu0, t0.elapsed().as_secs_f64()))
}

/// perch's side, in this process (`--side perch`): records `streams` copies of `input` at once through the
/// service's path — `parsebin` → tap appsink → [`SegmentWriter`] (`appsrc → splitmuxsink`) → the
/// recorder's store, which syncs and renames each finished segment.
pub fn perch_side(input: &Path, streams: usize, segment: Duration, out: &Path) -> anyhow::Result<SideOutput> {
    crate::capture::pipeline::init()?;
    let cameras: Vec<String> = (0..streams).map(|i| format!("s{i}")).collect();
    let (mut store, _) = Store::open(out, &cameras)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecorderMsg>(1 << 16);
    let stats = Arc::new(RecordStats::new(cameras.iter().map(|c| (c.clone(), true))));
    let mut runs = Vec::new();
    for (i, cam) in cameras.iter().enumerate() {
        let sink = SegmentSink { camera: i, dir: store.segment_dir(cam), segment, tx: tx.clone(), stats: stats.clone() };
        let writer: SharedWriter = Arc::new(Mutex::new(Some(Box::new(SegmentWriter::new(sink, "h264").with_backpressure()) as Box<dyn EncodedWriter>)));
        runs.push((play(input, writer.clone())?, writer));
    }
    drop(tx);
    let mut video_s = 0.0;
    let mut segments = 0;
    for (pipeline, writer) in &runs {
        let bus = pipeline.bus().expect("bus");
        loop {
            if let Some(w) = writer.lock().unwrap().as_mut() {
                w.poll(0);
            }
            // The recorder's work on each finished segment, as it comes (sync, rename, folder sync).
            while let Ok(msg) = rx.try_recv() {
                segments += finalise(&mut store, &cameras, msg)?;
            }
            match bus.timed_pop_filtered(gst::ClockTime::from_mseconds(50), &[gst::MessageType::Eos, gst::MessageType::Error]).map(|m| m.type_()) {
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
    while let Ok(msg) = rx.try_recv() {
        segments += finalise(&mut store, &cameras, msg)?;
    }
    let dropped_frames = stats.cameras.iter().map(|c| c.dropped_frames.load(std::sync::atomic::Ordering::Relaxed)).sum();
    Ok(SideOutput { segments, dropped_frames, video_s })
}

/// `filesrc → parsebin → tap appsink` feeding `writer`, playing.
fn play(input: &Path, writer: SharedWriter) -> anyhow::Result<gst::Pipeline> {
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc").property("location", input).build()?;
    let parse = gst::ElementFactory::make("parsebin").build()?;
    let tap = encoded::tap(writer, "h264");
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
    Ok(pipeline)
}

fn finalise(store: &mut Store, cameras: &[String], msg: RecorderMsg) -> anyhow::Result<usize> {
    let RecorderMsg::Segment { camera, part, start_ms, end_ms } = msg else { return Ok(0) };
    store.add_segment(&cameras[camera], &part, start_ms, end_ms)?;
    Ok(1)
}

/// perch's side as a child process: `perch bench-record --side perch …`.
fn perch_run(input: &Path, streams: usize, segment: Duration, out: &Path) -> anyhow::Result<(Run, f64)> {
    let exe = std::env::current_exe()?;
    let (output, cpu_s, wall_s) = timed(|| {
        let o = std::process::Command::new(&exe)
            .args(["bench-record", "--side", "perch", "--streams", &streams.to_string(), "--segment-s", &segment.as_secs_f64().to_string(), "--input"])
            .arg(input)
            .arg("--out")
            .arg(out)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        anyhow::ensure!(o.status.success(), "perch's side failed ({}): see its messages above", o.status);
        Ok(serde_json::from_slice::<SideOutput>(&o.stdout)?)
    })?;
    Ok((Run { cpu_s, wall_s, segments: output.segments, dropped_frames: output.dropped_frames }, output.video_s))
}

/// ffmpeg's side: `streams` ffmpeg processes at once, then a `sync` of every file they wrote.
fn ffmpeg_run(input: &Path, streams: usize, segment: Duration, out: &Path) -> anyhow::Result<Run> {
    let dirs: Vec<PathBuf> = (0..streams).map(|i| out.join(format!("ffmpeg-{i}"))).collect();
    let (segments, cpu_s, wall_s) = timed(|| {
        let mut children = Vec::new();
        for dir in &dirs {
            std::fs::create_dir_all(dir)?;
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
        let files: Vec<PathBuf> = dirs.iter().flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path())).collect();
        // coreutils `sync FILE…` fsyncs each file (perch's store syncs each segment too).
        anyhow::ensure!(std::process::Command::new("sync").args(&files).status()?.success(), "sync failed");
        Ok(files.len())
    })?;
    Ok(Run { cpu_s, wall_s, segments, dropped_frames: 0 })
}

fn side(short: Run, long: Run, video: (f64, f64), streams: usize) -> Side {
    let per = (long.cpu_s - short.cpu_s) / ((video.1 - video.0) * streams as f64);
    let fixed_cpu_ms = (short.cpu_s - per * video.0 * streams as f64) * 1e3;
    Side { short, long, cpu_ms_per_video_s: per * 1e3, core_percent_per_stream: per * 100.0, fixed_cpu_ms }
}

/// The driver: `rounds` rounds over `input` and its short cut `short`, alternating which side goes first.
pub fn run(input: &Path, short: &Path, streams: usize, rounds: usize, segment: Duration, with_ffmpeg: bool) -> anyhow::Result<Report> {
    let mut results = Vec::new();
    let mut video = (0.0, 0.0);
    for round in 0..rounds {
        let out = tempfile_dir(round)?;
        let perch_first = round % 2 == 0 || !with_ffmpeg;
        let ffmpeg = || -> anyhow::Result<(Run, Run)> {
            Ok((ffmpeg_run(short, streams, segment, &out.join("fs"))?, ffmpeg_run(input, streams, segment, &out.join("fl"))?))
        };
        let mut ff = if perch_first { None } else { Some(ffmpeg()?) };
        let (ps, vs) = perch_run(short, streams, segment, &out.join("ps"))?;
        let (pl, vl) = perch_run(input, streams, segment, &out.join("pl"))?;
        anyhow::ensure!(vl > vs && vs > 0.0, "cannot tell the durations of {} ({vl} s) and {} ({vs} s)", input.display(), short.display());
        video = (vs, vl);
        if perch_first && with_ffmpeg {
            ff = Some(ffmpeg()?);
        }
        let _ = std::fs::remove_dir_all(&out);
        results.push(Round {
            first: if perch_first { "perch" } else { "ffmpeg" },
            perch: side(ps, pl, video, streams),
            ffmpeg: ff.map(|(s, l)| side(s, l, video, streams)),
        });
    }
    Ok(Report { input: input.to_path_buf(), streams, video_s: video.1, short_video_s: video.0, rounds: results })
}

fn tempfile_dir(round: usize) -> anyhow::Result<PathBuf> {
    // On disk (/var/tmp), not tmpfs: the segments are synced as on a device.
    let dir = Path::new("/var/tmp").join(format!("perch-bench-record-{}-{round}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
