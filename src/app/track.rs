//! `perch track`: the tracker run offline on recorded detections, printing what it tracked per frame (and,
//! with `--events`, the events it would have sent). For tuning zones and thresholds from a recorded day,
//! and for scoring the tracker against ground truth (`bench/track_eval.sh`).
//!
//! Input, one record per line, the format recognised per line: the frame lines of `perch run
//! --print-detections` (every frame, empty ones included; one tracker per camera), the detection lines of
//! `perch detect` (one per detection; frames without one are filled in from `--fps`), or, with `--format
//! mot`, MOTChallenge `det.txt` rows (`frame,id,left,top,width,height,conf,…`, all `person`, frame `n` at
//! `(n - 1) / fps` seconds).

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::capture::FrameInfo;
use crate::detect::Detection;
use crate::events::schema::{EventMessage, Names, event_id};
use crate::track::{TrackEvent, TrackView, Tracker, TrackerConfig};

/// How the input is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `perch run --print-detections` frame lines or `perch detect` detection lines (told apart per line).
    Json,
    /// MOTChallenge `det.txt` rows.
    Mot,
}

/// Settings of an offline run.
#[derive(Debug, Clone)]
pub struct TrackOptions {
    pub tracker: TrackerConfig,
    /// The camera's `min_score`: detections from it on start tracks, weaker ones only continue them.
    pub min_score: f32,
    pub format: Format,
    /// Frame rate of `perch detect` and MOT input (to time frames and fill in empty ones).
    pub fps: f64,
    /// Picture size for input that does not carry it (`perch detect`, MOT).
    pub size: (u32, u32),
    /// Also print the events.
    pub events: bool,
}

#[derive(Deserialize)]
struct DetIn {
    class_id: u16,
    label: String,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

/// One input line of the JSON formats.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonIn {
    /// `perch run --print-detections`.
    Frame { camera: Option<String>, seq: u64, pts_ms: Option<f64>, ts_ms: Option<u64>, width: u32, height: u32, detections: Vec<DetIn> },
    /// `perch detect`.
    Detection {
        file: String,
        frame: u64,
        pts_ms: Option<f64>,
        #[serde(flatten)]
        det: DetIn,
    },
}

/// One frame of input, however it was written.
struct FrameIn {
    camera: String,
    seq: u64,
    ms: f64,
    size: (u32, u32),
    detections: Vec<Detection>,
}

#[derive(Serialize)]
struct FrameOut<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    camera: &'a str,
    seq: u64,
    pts_ms: f64,
    tracks: &'a [TrackView],
}

/// What a run saw, for the summary on stderr.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub frames: u64,
    pub detections: u64,
    /// Distinct tracks that became events.
    pub confirmed: u64,
    pub events: u64,
}

/// Per camera: its tracker, labels interned (every detection of a label shares one `Arc`).
struct Camera {
    tracker: Tracker,
    views: Vec<TrackView>,
    /// Time of its latest frame.
    last: SystemTime,
}

/// Runs the tracker over `input`; prints a line per frame (and the events) to `out`.
pub fn run(input: impl BufRead, opts: &TrackOptions, out: &mut impl Write) -> anyhow::Result<Summary> {
    let mut cameras: BTreeMap<String, Camera> = BTreeMap::new();
    let mut labels: BTreeMap<String, Arc<str>> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut confirmed = HashSet::new();
    let names = Names::of(&opts.tracker);
    // Counts the events and, with --events, prints them.
    let report = |camera: &str, events: &[TrackEvent], at: SystemTime, summary: &mut Summary, confirmed: &mut HashSet<(String, u64)>, out: &mut dyn Write| {
        for e in events {
            summary.events += 1;
            if confirmed.insert((camera.to_string(), e.track_id)) {
                summary.confirmed += 1;
            }
            if opts.events {
                let name = if camera.is_empty() { "camera" } else { camera };
                let id = event_id(0, name, e.track_id, e.start);
                let mut msg = EventMessage::new(summary.events, &id, "offline", name, &names, e);
                msg.ts = crate::events::schema::rfc3339(at);
                serde_json::to_writer(&mut *out, &msg)?;
                out.write_all(b"\n")?;
            }
        }
        anyhow::Ok(())
    };
    let mut sink = |f: FrameIn, summary: &mut Summary| -> anyhow::Result<()> {
        let cam = cameras.entry(f.camera.clone()).or_insert_with(|| Camera {
            tracker: Tracker::new(0, opts.tracker.clone(), opts.min_score),
            views: Vec::new(),
            last: UNIX_EPOCH,
        });
        let info = FrameInfo {
            camera: 0,
            seq: f.seq,
            pts: Some(Duration::from_secs_f64(f.ms.max(0.0) / 1e3)),
            wall: UNIX_EPOCH + Duration::from_secs_f64(f.ms.max(0.0) / 1e3),
            source_width: f.size.0,
            source_height: f.size.1,
        };
        summary.frames += 1;
        summary.detections += f.detections.len() as u64;
        let events = cam.tracker.update(&info, &f.detections).to_vec();
        cam.views.clear();
        cam.views.extend(cam.tracker.tracks());
        serde_json::to_writer(&mut *out, &FrameOut { camera: &f.camera, seq: f.seq, pts_ms: f.ms, tracks: &cam.views })?;
        out.write_all(b"\n")?;
        cam.last = info.wall;
        report(&f.camera, &events, info.wall, summary, &mut confirmed, &mut *out)
    };
    let mut reader = Reader { opts, pending: None, last: BTreeMap::new() };
    for (n, line) in input.lines().enumerate() {
        let line = line.context("cannot read the input")?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = match opts.format {
            Format::Json => reader.json(&line, &mut labels),
            Format::Mot => reader.mot(&line, &mut labels),
        };
        for f in parsed.with_context(|| format!("line {}: {}", n + 1, excerpt(&line)))? {
            sink(f, &mut summary)?;
        }
    }
    if let Some(f) = reader.pending.take() {
        sink(f, &mut summary)?;
    }
    // The input's end is the end of every object still tracked, as a shutdown is for the service.
    for (camera, cam) in &mut cameras {
        let events = cam.tracker.finish().to_vec();
        report(camera, &events, cam.last, &mut summary, &mut confirmed, &mut *out)?;
    }
    out.flush()?;
    Ok(summary)
}

/// The start of a bad line, for the error message.
fn excerpt(line: &str) -> String {
    let cut: String = line.chars().take(80).collect();
    if cut.len() < line.len() { format!("{cut}…") } else { cut }
}

fn intern(labels: &mut BTreeMap<String, Arc<str>>, label: &str) -> Arc<str> {
    labels.entry(label.to_string()).or_insert_with(|| Arc::from(label)).clone()
}

/// Turns lines into frames: the per-detection formats gather a frame's lines and fill in the frames that
/// had no detection.
struct Reader<'a> {
    opts: &'a TrackOptions,
    /// The frame being gathered (per-detection formats).
    pending: Option<FrameIn>,
    /// Per file: the last frame number handed on, and its time.
    last: BTreeMap<String, (u64, f64)>,
}

impl Reader<'_> {
    fn json(&mut self, line: &str, labels: &mut BTreeMap<String, Arc<str>>) -> anyhow::Result<Vec<FrameIn>> {
        let parsed: JsonIn = serde_json::from_str(line)
            .context("not a line of `perch run --print-detections` or `perch detect` (for MOTChallenge det.txt, pass --format mot)")?;
        match parsed {
            JsonIn::Frame { camera, seq, pts_ms, ts_ms, width, height, detections } => {
                let Some(ms) = pts_ms.or(ts_ms.map(|t| t as f64)) else { bail!("the frame has neither pts_ms nor ts_ms") };
                let detections =
                    detections.into_iter().map(|d| Detection { class_id: d.class_id, label: intern(labels, &d.label), score: d.score, bbox: d.bbox }).collect();
                Ok(vec![FrameIn { camera: camera.unwrap_or_default(), seq, ms, size: (width, height), detections }])
            }
            JsonIn::Detection { file, frame, pts_ms, det } => {
                let ms = pts_ms.unwrap_or(frame as f64 * 1e3 / self.opts.fps);
                let d = Detection { class_id: det.class_id, label: intern(labels, &det.label), score: det.score, bbox: det.bbox };
                Ok(self.gather(file, frame, ms, d))
            }
        }
    }

    fn mot(&mut self, line: &str, labels: &mut BTreeMap<String, Arc<str>>) -> anyhow::Result<Vec<FrameIn>> {
        let v: Vec<f64> =
            line.split(',').map(|s| s.trim().parse::<f64>()).collect::<Result<_, _>>().context("a MOTChallenge row is comma-separated numbers")?;
        let [frame, _, left, top, w, h, conf, ..] = v[..] else { bail!("a MOTChallenge row has at least 7 fields: frame,id,left,top,width,height,conf") };
        if frame < 1.0 {
            bail!("frame {frame}: MOTChallenge frames count from 1");
        }
        let ms = (frame - 1.0) * 1e3 / self.opts.fps;
        let bbox = [left as f32, top as f32, (left + w) as f32, (top + h) as f32];
        Ok(self.gather(String::new(), frame as u64, ms, Detection { class_id: 0, label: intern(labels, "person"), score: conf as f32, bbox }))
    }

    /// Adds a detection to the frame being gathered; returns the frames completed by it (the previous one
    /// and the empty ones between).
    fn gather(&mut self, file: String, frame: u64, ms: f64, d: Detection) -> Vec<FrameIn> {
        let mut done = Vec::new();
        match &mut self.pending {
            Some(p) if p.camera == file && p.seq == frame => {
                p.detections.push(d);
                return done;
            }
            _ => {}
        }
        if let Some(p) = self.pending.take() {
            self.last.insert(p.camera.clone(), (p.seq, p.ms));
            done.push(p);
        }
        // Frames with no detection are frames too (the tracker counts them as misses): those between the
        // file's last frame and this one, or before its first (MOTChallenge counts from 1, `perch detect`
        // from 0).
        let step = 1e3 / self.opts.fps;
        let first = if self.opts.format == Format::Mot { 1 } else { 0 };
        let from = self.last.get(&file).map_or(first, |&(seq, _)| seq + 1);
        for seq in from..frame {
            let at = ms - (frame - seq) as f64 * step;
            done.push(FrameIn { camera: file.clone(), seq, ms: at, size: self.opts.size, detections: Vec::new() });
        }
        self.pending = Some(FrameIn { camera: file, seq: frame, ms, size: self.opts.size, detections: vec![d] });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(format: Format) -> TrackOptions {
        TrackOptions { tracker: TrackerConfig::default(), min_score: 0.5, format, fps: 5.0, size: (1000, 1000), events: true }
    }

    fn lines(out: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn frame_lines_give_one_output_line_per_frame_and_the_events() {
        let mut input = String::new();
        for i in 0..30 {
            let dets = if i < 10 {
                format!(r#"[{{"class_id":0,"label":"person","score":0.9,"box":[{x},100,{x2},300]}}]"#, x = 100 + 10 * i, x2 = 160 + 10 * i)
            } else {
                "[]".into()
            };
            input += &format!(
                r#"{{"camera":"gate","seq":{i},"pts_ms":{},"ts_ms":0,"ts":"","width":1000,"height":1000,"inference_ms":1,"detections":{dets}}}"#,
                i * 200
            );
            input.push('\n');
        }
        let mut out = Vec::new();
        let s = run(input.as_bytes(), &opts(Format::Json), &mut out).unwrap();
        assert_eq!(s, Summary { frames: 30, detections: 10, confirmed: 1, events: s.events });
        let v = lines(&out);
        let frames: Vec<_> = v.iter().filter(|l| l.get("tracks").is_some()).collect();
        assert_eq!(frames.len(), 30);
        assert_eq!(frames[2]["tracks"][0]["state"], "confirmed");
        assert_eq!(frames[2]["tracks"][0]["track_id"], 1);
        assert_eq!(frames[29]["tracks"].as_array().unwrap().len(), 0);
        let kinds: Vec<_> = v.iter().filter_map(|l| l.get("type")).map(|t| t.as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"new"));
        assert_eq!(kinds.last(), Some(&"end"));
    }

    #[test]
    fn mot_rows_fill_in_frames_without_detections() {
        // Frames 1, 2 and 5 have the walker; 3 and 4 none: five frames.
        let input = "1,-1,100,100,50,150,0.9,-1,-1,-1\n1,-1,600,100,50,150,0.8,-1,-1,-1\n2,-1,105,100,50,150,0.9,-1,-1,-1\n5,-1,120,100,50,150,0.9,-1,-1,-1\n";
        let mut out = Vec::new();
        let s = run(input.as_bytes(), &TrackOptions { events: false, ..opts(Format::Mot) }, &mut out).unwrap();
        assert_eq!((s.frames, s.detections), (5, 4));
        let v = lines(&out);
        let seqs: Vec<_> = v.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(v[4]["pts_ms"], 800.0);
    }

    #[test]
    fn bad_lines_name_the_line_and_the_fix() {
        let e = run("{\"x\":1}\n".as_bytes(), &opts(Format::Json), &mut Vec::new()).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("line 1") && msg.contains("--format mot"), "{msg}");
        let e = run("1,2,3\n".as_bytes(), &opts(Format::Mot), &mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains("at least 7 fields"), "{e:#}");
    }

    #[test]
    fn the_end_of_the_input_ends_every_object() {
        let input: String = (1..=5).map(|f| format!("{f},-1,{},100,50,150,0.9,-1,-1,-1\n", 100 + 5 * f)).collect();
        let mut out = Vec::new();
        let s = run(input.as_bytes(), &opts(Format::Mot), &mut out).unwrap();
        let kinds: Vec<_> = lines(&out).iter().filter_map(|l| l.get("type").and_then(|t| t.as_str().map(String::from))).collect();
        assert_eq!(kinds.first().map(String::as_str), Some("new"));
        assert_eq!(kinds.last().map(String::as_str), Some("end"), "{kinds:?}");
        assert_eq!(s.confirmed, 1);
    }
}
