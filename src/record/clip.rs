//! Making clips: segments concatenated into one MP4 without re-encoding, and the snapshot JPEG.
//!
//! Each segment is demuxed (`qtdemux`) and its encoded frames are pushed, with timestamps shifted so the
//! segments follow each other, into one `mp4mux` (`faststart`, so players can start before the whole file
//! is loaded). A segment whose stream format differs from the first one (the camera changed resolution
//! between two sessions) ends the clip there: MP4 cannot change codec setup mid-track. Everything runs on
//! the calling thread and takes a few milliseconds per segment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::RecordError;

/// What went into a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    /// Indexes into the given segments of those in the clip, in order: a segment without frames is
    /// skipped, and a change of stream setup ends the clip there (`truncated`).
    pub used: Vec<usize>,
    /// Media time in the clip.
    pub duration: Duration,
    /// The clip stopped early at a segment with a different stream format.
    pub truncated: bool,
    pub bytes: u64,
}

fn element(factory: &str) -> Result<gst::Element, RecordError> {
    gst::ElementFactory::make(factory).build().map_err(|_| RecordError::Gst(format!("GStreamer element `{factory}` is missing: install its plugin package")))
}

/// Reads every encoded frame of one MP4 segment, in decode order.
fn read_segment(path: &Path, mut each: impl FnMut(gst::Sample) -> bool) -> Result<(), RecordError> {
    let pipeline = gst::Pipeline::new();
    let src = element("filesrc")?;
    src.set_property("location", path);
    let demux = element("qtdemux")?;
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(64).build();
    pipeline.add_many([&src, &demux, sink.upcast_ref()]).map_err(|e| RecordError::Gst(e.to_string()))?;
    src.link(&demux).map_err(|e| RecordError::Gst(e.to_string()))?;
    let sink_pad = sink.static_pad("sink").expect("appsink has a sink pad");
    demux.connect_pad_added(move |_, pad| {
        if pad.name().starts_with("video") && !sink_pad.is_linked() {
            let _ = pad.link(&sink_pad);
        }
    });
    let result = (|| {
        pipeline.set_state(gst::State::Playing).map_err(|_| RecordError::Gst(format!("cannot read segment {}", path.display())))?;
        loop {
            match sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
                Some(sample) => {
                    if !each(sample) {
                        return Ok(());
                    }
                }
                None if sink.is_eos() => return Ok(()),
                None => {
                    let bus = pipeline.bus().expect("pipeline bus");
                    let err = bus.pop_filtered(&[gst::MessageType::Error]).and_then(|m| match m.view() {
                        gst::MessageView::Error(e) => Some(e.error().to_string()),
                        _ => None,
                    });
                    return Err(RecordError::Gst(format!("segment {} is unreadable: {}", path.display(), err.unwrap_or_else(|| "timed out".into()))));
                }
            }
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Whether two segments carry the same stream setup (codec, size, SPS/PPS), so one MP4 track can hold both.
/// The demuxer's frame rate is an estimate per file and is left out.
fn same_stream(a: &gst::CapsRef, b: &gst::CapsRef) -> bool {
    let key = |c: &gst::CapsRef| {
        c.structure(0).map(|s| {
            let mut s = s.to_owned();
            s.remove_fields(["framerate", "level", "profile", "colorimetry", "chroma-site"]);
            s.to_string()
        })
    };
    key(a).is_some() && key(a) == key(b)
}

/// Assumed length of a frame whose duration is not known (25 fps).
const DEFAULT_FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

/// Concatenates `segments` (oldest first) into the MP4 at `out`, written to `out.part` and renamed when
/// complete, so a crash never leaves a half clip under the final name.
pub fn assemble(segments: &[PathBuf], out: &Path) -> Result<Assembled, RecordError> {
    if segments.is_empty() {
        return Err(RecordError::NoSegments);
    }
    let part = out.with_extension("mp4.part");
    let pipeline = gst::Pipeline::new();
    let src = gst_app::AppSrc::builder().format(gst::Format::Time).is_live(false).block(true).max_bytes(8 << 20).build();
    let mux = element("mp4mux")?;
    mux.set_property("faststart", true);
    let sink = element("filesink")?;
    sink.set_property("location", &part);
    sink.set_property("sync", false);
    pipeline.add_many([src.upcast_ref(), &mux, &sink]).map_err(|e| RecordError::Gst(e.to_string()))?;
    // Linked by hand: caps are only known with the first frame, and the muxer must give a video pad.
    let video_pad = mux.request_pad_simple("video_%u").ok_or_else(|| RecordError::Gst("mp4mux has no video pad".into()))?;
    src.static_pad("src").expect("appsrc src pad").link(&video_pad).map_err(|e| RecordError::Gst(format!("{e:?}")))?;
    mux.link(&sink).map_err(|e| RecordError::Gst(e.to_string()))?;
    pipeline.set_state(gst::State::Playing).map_err(|_| RecordError::Gst("cannot start the clip muxer".into()))?;

    let mut caps: Option<gst::Caps> = None;
    let mut used = Vec::new();
    let mut truncated = false;
    // Where the next segment starts in the clip's timeline.
    let mut offset = gst::ClockTime::ZERO;
    let mut push_error = None;
    for (index, path) in segments.iter().enumerate() {
        let mut first_dts: Option<gst::ClockTime> = None;
        let mut end = offset;
        let mut last_dts: Option<gst::ClockTime> = None;
        let mut stop = false;
        let read = read_segment(path, |sample| {
            let Some(sc) = sample.caps() else { return true };
            match &caps {
                None => {
                    src.set_caps(Some(&sc.to_owned()));
                    caps = Some(sc.to_owned());
                }
                Some(c) if !same_stream(c, sc) => {
                    stop = true;
                    return false;
                }
                Some(_) => {}
            }
            let Some(buf) = sample.buffer() else { return true };
            let mut buf = buf.copy();
            let dts = buf.dts().or(buf.pts()).unwrap_or(gst::ClockTime::ZERO);
            let base = *first_dts.get_or_insert(dts);
            let shift = |t: gst::ClockTime| offset + t.saturating_sub(base);
            {
                let b = buf.make_mut();
                let new_dts = shift(dts);
                b.set_dts(new_dts);
                if let Some(pts) = b.pts() {
                    // B-frames: the presentation time runs ahead of decode time by the reorder delay.
                    b.set_pts(new_dts + pts.saturating_sub(dts));
                }
                // A frame lasts its stated duration; one the demuxer could not tell (or got wrong: more
                // than a second) lasts as long as the step from the frame before.
                let step = last_dts.map(|l| new_dts.saturating_sub(l)).filter(|s| !s.is_zero()).unwrap_or(DEFAULT_FRAME);
                let duration = b.duration().filter(|d| *d <= gst::ClockTime::SECOND).unwrap_or(step);
                end = end.max(new_dts + duration);
                last_dts = Some(new_dts);
            }
            if let Err(e) = src.push_buffer(buf) {
                push_error = Some(e);
                return false;
            }
            true
        });
        if let Err(e) = read {
            // One bad segment costs its own seconds (reported as a gap), not the whole clip.
            tracing::warn!("clip {} leaves out a segment: {e}", out.display());
        }
        if let Some(e) = push_error {
            let _ = pipeline.set_state(gst::State::Null);
            let _ = std::fs::remove_file(&part);
            return Err(RecordError::Gst(format!("the clip muxer refused a frame: {e:?}")));
        }
        if stop {
            truncated = true;
            break;
        }
        if first_dts.is_some() {
            used.push(index);
            offset = end;
        }
    }
    let _ = src.end_of_stream();
    let bus = pipeline.bus().expect("pipeline bus");
    let msg = bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos, gst::MessageType::Error]);
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => {}
        Some(gst::MessageView::Error(e)) => {
            let _ = std::fs::remove_file(&part);
            return Err(RecordError::Gst(format!("could not write the clip: {}", e.error())));
        }
        _ => {
            let _ = std::fs::remove_file(&part);
            return Err(RecordError::Gst("the clip muxer did not finish within 30 s".into()));
        }
    }
    if used.is_empty() {
        let _ = std::fs::remove_file(&part);
        return Err(RecordError::NoSegments);
    }
    let bytes = std::fs::File::open(&part).and_then(|f| f.sync_all().and_then(|_| f.metadata())).map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&part, out).map_err(|e| RecordError::Io { what: format!("cannot rename {}", part.display()), source: e })?;
    Ok(Assembled { used, duration: Duration::from_nanos(offset.nseconds()), truncated, bytes })
}

/// Decodes the frame of the MP4 segment `path` nearest `offset` from its start, as packed BGR: (width,
/// height, pixels). The segment starts with a keyframe, so this decodes at most one segment's frames.
pub fn frame_at(path: &Path, offset: Duration) -> Result<(u32, u32, Vec<u8>), RecordError> {
    let desc = "filesrc name=src ! qtdemux ! decodebin ! videoconvert ! video/x-raw,format=BGR ! appsink name=sink sync=false max-buffers=4";
    let pipeline = gst::parse::launch(desc)
        .map_err(|e| RecordError::Snapshot(format!("cannot build the decoder ({e}): install gstreamer1.0-libav")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| RecordError::Snapshot("not a pipeline".into()))?;
    pipeline.by_name("src").expect("named filesrc").set_property("location", path);
    let sink = pipeline.by_name("sink").expect("named appsink").downcast::<gst_app::AppSink>().expect("an appsink");
    let result = (|| {
        pipeline.set_state(gst::State::Playing).map_err(|_| RecordError::Snapshot(format!("cannot read segment {}", path.display())))?;
        let (mut base, mut best): (Option<gst::ClockTime>, Option<gst::Sample>) = (None, None);
        let want = gst::ClockTime::from_nseconds(offset.as_nanos() as u64);
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
            let pts = sample.buffer().and_then(|b| b.pts()).unwrap_or(gst::ClockTime::ZERO);
            let at = pts.saturating_sub(*base.get_or_insert(pts));
            let past = at >= want;
            best = Some(sample);
            if past {
                break;
            }
        }
        let sample = best.ok_or_else(|| RecordError::Snapshot(format!("segment {} has no frame", path.display())))?;
        bgr(&sample)
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// A decoded BGR sample as packed rows.
fn bgr(sample: &gst::Sample) -> Result<(u32, u32, Vec<u8>), RecordError> {
    let caps = sample.caps().ok_or_else(|| RecordError::Snapshot("a frame without caps".into()))?;
    let info = gstreamer_video::VideoInfo::from_caps(caps).map_err(|e| RecordError::Snapshot(e.to_string()))?;
    let buffer = sample.buffer().ok_or_else(|| RecordError::Snapshot("a frame without data".into()))?;
    let map = buffer.map_readable().map_err(|e| RecordError::Snapshot(e.to_string()))?;
    let (w, h, stride) = (info.width() as usize, info.height() as usize, info.stride()[0] as usize);
    if map.len() < stride * h.saturating_sub(1) + w * 3 {
        return Err(RecordError::Snapshot(format!("a {w}x{h} frame of {} bytes", map.len())));
    }
    let mut px = Vec::with_capacity(w * h * 3);
    for row in map.chunks(stride).take(h) {
        px.extend_from_slice(&row[..w * 3]);
    }
    Ok((w as u32, h as u32, px))
}

/// The snapshot of a sighting from the recorded stream: the frame nearest it, at the stream's own
/// resolution, with the box (given in a `frame_size` picture: the detection stream's) scaled onto it.
pub fn snapshot_from_segment(path: &Path, offset: Duration, bbox: [f32; 4], frame_size: [u32; 2], quality: u8) -> Result<Vec<u8>, RecordError> {
    let (w, h, mut px) = frame_at(path, offset)?;
    draw_box(&mut px, w as usize, h as usize, scale_box(bbox, frame_size, [w, h]));
    encode_jpeg(&px, w as usize, h as usize, quality)
}

/// A box in the pixels of a `from` picture, in those of a `to` picture of the same scene.
pub fn scale_box(bbox: [f32; 4], from: [u32; 2], to: [u32; 2]) -> [f32; 4] {
    let (sx, sy) = (to[0] as f32 / from[0].max(1) as f32, to[1] as f32 / from[1].max(1) as f32);
    [bbox[0] * sx, bbox[1] * sy, bbox[2] * sx, bbox[3] * sy]
}

/// The best frame of an event: packed BGR at detection resolution, with the object's box in its pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub width: u32,
    pub height: u32,
    pub bgr: Vec<u8>,
    /// `[x1, y1, x2, y2]` in this picture's pixels.
    pub bbox: [f32; 4],
}

/// Draws the box (3 px, green) and encodes a JPEG.
pub fn snapshot_jpeg(snap: &Snapshot, quality: u8) -> Result<Vec<u8>, RecordError> {
    let (w, h) = (snap.width as usize, snap.height as usize);
    if w == 0 || h == 0 || snap.bgr.len() < w * h * 3 || w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(RecordError::Snapshot(format!("bad picture {w}x{h} with {} bytes", snap.bgr.len())));
    }
    let mut px = snap.bgr[..w * h * 3].to_vec();
    draw_box(&mut px, w, h, snap.bbox);
    encode_jpeg(&px, w, h, quality)
}

/// Draws a 3 px green rectangle into packed BGR pixels; a box outside the picture is clamped.
pub fn draw_box(px: &mut [u8], w: usize, h: usize, bbox: [f32; 4]) {
    if w == 0 || h == 0 || px.len() < w * h * 3 {
        return;
    }
    let clamp = |v: f32, max: usize| (v.round().max(0.0) as usize).min(max - 1);
    let (x1, y1, x2, y2) = (clamp(bbox[0], w), clamp(bbox[1], h), clamp(bbox[2], w), clamp(bbox[3], h));
    let mut put = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        px[i..i + 3].copy_from_slice(&[0, 255, 0]);
    };
    for t in 0..3usize {
        for x in x1..=x2 {
            put(x, (y1 + t).min(h - 1));
            put(x, y2.saturating_sub(t));
        }
        for y in y1..=y2 {
            put((x1 + t).min(w - 1), y);
            put(x2.saturating_sub(t), y);
        }
    }
}

/// Encodes packed BGR pixels as a JPEG.
pub fn encode_jpeg(px: &[u8], w: usize, h: usize, quality: u8) -> Result<Vec<u8>, RecordError> {
    if w == 0 || h == 0 || px.len() < w * h * 3 || w > u16::MAX as usize || h > u16::MAX as usize {
        return Err(RecordError::Snapshot(format!("bad picture {w}x{h} with {} bytes", px.len())));
    }
    let mut out = Vec::with_capacity(w * h / 4);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(&px[..w * h * 3], w as u16, h as u16, jpeg_encoder::ColorType::Bgr)
        .map_err(|e| RecordError::Snapshot(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_is_a_jpeg_with_the_box_drawn() {
        let snap = Snapshot { width: 64, height: 48, bgr: vec![40; 64 * 48 * 3], bbox: [10.0, 10.0, 30.0, 40.0] };
        let jpeg = snapshot_jpeg(&snap, 85).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start-of-image marker");
        assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9], "JPEG end-of-image marker");
        // A box far outside the picture is clamped, not a panic.
        let wild = Snapshot { bbox: [-50.0, -50.0, 900.0, 900.0], ..snap.clone() };
        assert!(snapshot_jpeg(&wild, 85).is_ok());
        let short = Snapshot { bgr: vec![0; 10], ..snap };
        assert!(matches!(snapshot_jpeg(&short, 85), Err(RecordError::Snapshot(_))));
    }
}

#[cfg(test)]
mod gst_tests {
    use super::*;

    /// Cuts the test video into 2 s MP4 segments by copy, with ffmpeg (an independent muxer).
    fn segments(dir: &Path) -> Vec<PathBuf> {
        let media = std::env::var("PERCH_MEDIA").map(PathBuf::from).unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/media"));
        let video = media.join("pedestrians-720p-gop1s.mp4");
        let status = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-i"])
            .arg(&video)
            .args(["-c", "copy", "-f", "segment", "-segment_time", "2", "-reset_timestamps", "1"])
            .arg(dir.join("seg%03d.mp4"))
            .status()
            .expect("ffmpeg (scripts/setup.sh installs it)");
        assert!(status.success());
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    }

    #[test]
    fn concatenates_segments_without_reencoding() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let segs = segments(dir.path());
        assert!(segs.len() >= 6, "{segs:?}");
        let out = dir.path().join("clip.mp4");
        let a = assemble(&segs[1..4], &out).unwrap();
        assert_eq!(a.used, [0, 1, 2]);
        assert!(!a.truncated);
        assert!((a.duration.as_secs_f64() - 6.0).abs() < 0.2, "{a:?}");
        assert!(crate::record::store::mp4_complete(&out));
        assert!(!out.with_extension("mp4.part").exists());
        assert!(matches!(assemble(&[], &out), Err(RecordError::NoSegments)));
    }

    #[test]
    fn a_snapshot_is_decoded_from_a_segment_at_its_resolution() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let segs = segments(dir.path());
        let (w, h, px) = frame_at(&segs[1], Duration::from_millis(1000)).unwrap();
        assert_eq!((w, h, px.len()), (1280, 720, 1280 * 720 * 3));
        // A box found on a 640×360 detection stream lands on the same spot of the 1280×720 picture.
        assert_eq!(scale_box([100.0, 50.0, 200.0, 150.0], [640, 360], [1280, 720]), [200.0, 100.0, 400.0, 300.0]);
        let jpeg = snapshot_from_segment(&segs[1], Duration::from_millis(1000), [100.0, 50.0, 200.0, 150.0], [640, 360], 85).unwrap();
        // The JPEG's frame header (SOF0: FF C0, length, precision, height, width) says its size.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG");
        let (jh, jw) = (u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]), u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]));
        assert_eq!((jw, jh), (1280, 720));
        assert!(matches!(frame_at(&dir.path().join("missing.mp4"), Duration::ZERO), Err(RecordError::Snapshot(_))));
    }

    #[test]
    fn an_unreadable_segment_is_left_out_and_the_rest_is_kept() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let segs = segments(dir.path());
        std::fs::write(&segs[2], b"not an mp4 at all").unwrap();
        let out = dir.path().join("clip.mp4");
        let a = assemble(&segs[1..4], &out).unwrap();
        assert_eq!(a.used, [0, 2]);
        assert!((a.duration.as_secs_f64() - 4.0).abs() < 0.2, "{a:?}");
        assert!(crate::record::store::mp4_complete(&out));
    }
}
