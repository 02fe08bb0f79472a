//! `/metrics`: the Prometheus text exposition format (version 0.0.4), written directly — a handful of
//! families does not need a metrics library.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::{EVENT_KINDS, Handles};
use crate::detect::DetectorState;
use crate::detect::worker::INFERENCE_BUCKETS_MS;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes one family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The process collector's families, under Prometheus' standard names.
fn process(o: &mut String) {
    let Some(p) = crate::util::process::ProcessStats::read() else { return };
    family(o, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    let _ = writeln!(o, "process_cpu_seconds_total {:.3}", p.cpu.as_secs_f64());
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    let _ = writeln!(o, "process_resident_memory_bytes {}", p.resident_bytes);
    family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    let _ = writeln!(o, "process_virtual_memory_bytes {}", p.virtual_bytes);
    family(o, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    let _ = writeln!(o, "process_start_time_seconds {:.2}", p.start_time_s);
    family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    let _ = writeln!(o, "process_open_fds {}", p.open_fds);
    family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    let _ = writeln!(o, "process_max_fds {}", p.max_fds);
    family(o, "process_threads", "gauge", "Number of OS threads in the process.");
    let _ = writeln!(o, "process_threads {}", p.threads);
}

/// The whole exposition.
pub fn render(h: &Handles) -> String {
    let mut o = String::with_capacity(8 << 10);
    let cams: Vec<(usize, String)> = h.cameras.iter().enumerate().map(|(i, c)| (i, esc(&c.id))).collect();

    family(&mut o, "perch_build_info", "gauge", "perch's version (always 1).");
    let _ = writeln!(o, "perch_build_info{{version=\"{}\"}} 1", esc(crate::VERSION));
    family(&mut o, "perch_uptime_seconds", "gauge", "Seconds since the service started.");
    let _ = writeln!(o, "perch_uptime_seconds {}", h.started.elapsed().as_secs());
    process(&mut o);
    family(&mut o, "perch_ready", "gauge", "1 when every enabled camera delivers frames and the detector is ready.");
    let _ = writeln!(o, "perch_ready {}", u8::from(h.not_ready().is_empty()));

    family(&mut o, "perch_camera_online", "gauge", "1 while the camera is online.");
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_online{{camera=\"{id}\"}} {}", u8::from(h.cameras[*i].state() == crate::capture::CameraState::Online));
    }
    family(&mut o, "perch_camera_fps", "gauge", "Frames per second delivered by the camera's capture (after rate limiting).");
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_fps{{camera=\"{id}\"}} {}", h.live.rates(*i).fps);
    }
    family(&mut o, "perch_camera_detect_fps", "gauge", "Frames per second of the camera run through the detector.");
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_detect_fps{{camera=\"{id}\"}} {}", h.live.rates(*i).detect_fps);
    }
    family(&mut o, "perch_camera_frames_total", "counter", "Frames delivered by the camera's capture.");
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_frames_total{{camera=\"{id}\"}} {}", h.cameras[*i].frames.load(Relaxed));
    }
    family(&mut o, "perch_camera_dropped_frames_total", "counter", "Frames dropped, by reason (detector_busy, sink, record).");
    for (i, id) in &cams {
        let c = &h.cameras[*i];
        let record = h.record.camera(&h.cameras[*i].id).map_or(0, |r| r.dropped_frames.load(Relaxed));
        for (reason, v) in [("detector_busy", c.dropped_detector_busy.load(Relaxed)), ("sink", c.dropped_sink.load(Relaxed)), ("record", record)] {
            let _ = writeln!(o, "perch_camera_dropped_frames_total{{camera=\"{id}\",reason=\"{reason}\"}} {v}");
        }
    }
    family(&mut o, "perch_camera_skipped_idle_total", "counter", "Frames not detected because the camera was idle (adaptive cadence).");
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_skipped_idle_total{{camera=\"{id}\"}} {}", h.cameras[*i].skipped_idle.load(Relaxed));
    }
    family(
        &mut o,
        "perch_camera_skipped_decode_total",
        "counter",
        "Frames not decoded at all: dropped before the decoder while the camera was idle (decode = \"keyframes_when_idle\").",
    );
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_skipped_decode_total{{camera=\"{id}\"}} {}", h.cameras[*i].skipped_decode.load(Relaxed));
    }
    family(
        &mut o,
        "perch_camera_still",
        "gauge",
        "1 while the camera is idle and its picture still (adaptive cadence); with decode = \"keyframes_when_idle\" its decoder then gets keyframes only.",
    );
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_still{{camera=\"{id}\"}} {}", u8::from(h.cameras[*i].still.load(Relaxed)));
    }
    family(&mut o, "perch_camera_reconnects_total", "counter", "Times the camera's stream was reopened after a failure.");
    for (i, id) in &cams {
        let _ = writeln!(o, "perch_camera_reconnects_total{{camera=\"{id}\"}} {}", h.cameras[*i].reconnects.load(Relaxed));
    }

    let state = h.detector.borrow().clone();
    family(&mut o, "perch_detector_state", "gauge", "The detector's state (1 for the current one).");
    let current = match &state {
        DetectorState::Loading => "loading",
        DetectorState::BuildingEngine => "building_engine",
        DetectorState::Ready { .. } => "ready",
        DetectorState::Failed { .. } => "failed",
    };
    for s in ["loading", "building_engine", "ready", "failed"] {
        let _ = writeln!(o, "perch_detector_state{{state=\"{s}\"}} {}", u8::from(s == current));
    }
    family(&mut o, "perch_detect_errors_total", "counter", "Frames the detector failed on.");
    let _ = writeln!(o, "perch_detect_errors_total {}", h.detect.errors.load(Relaxed));
    family(&mut o, "perch_inference_seconds", "histogram", "Inference time per frame.");
    let mut cumulative = 0;
    for (i, ms) in INFERENCE_BUCKETS_MS.iter().enumerate() {
        cumulative += h.detect.inference_buckets[i].load(Relaxed);
        let _ = writeln!(o, "perch_inference_seconds_bucket{{le=\"{}\"}} {cumulative}", *ms as f64 / 1000.0);
    }
    cumulative += h.detect.inference_buckets[INFERENCE_BUCKETS_MS.len()].load(Relaxed);
    let _ = writeln!(o, "perch_inference_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(o, "perch_inference_seconds_sum {}", h.detect.inference_sum_us.load(Relaxed) as f64 / 1e6);
    let _ = writeln!(o, "perch_inference_seconds_count {cumulative}");

    family(&mut o, "perch_events_total", "counter", "Events stored in the outbox, by camera and kind.");
    for (i, id) in &cams {
        for (k, kind) in EVENT_KINDS.iter().enumerate() {
            let _ = writeln!(o, "perch_events_total{{camera=\"{id}\",kind=\"{kind}\"}} {}", h.live.event_count(*i, k));
        }
    }
    family(&mut o, "perch_line_crossings_total", "counter", "Objects (events) crossing a counting line, by camera, line and the side crossed to.");
    for (cam, line, to, n) in h.live.crossing_counts() {
        if let Some((_, id)) = cams.get(cam) {
            let _ = writeln!(o, "perch_line_crossings_total{{camera=\"{id}\",line=\"{}\",direction=\"{}\"}} {n}", esc(&line), to.as_str());
        }
    }
    let ob = h.outbox.stats();
    family(&mut o, "perch_outbox_depth", "gauge", "Events waiting in the outbox for the broker's acknowledgement.");
    let _ = writeln!(o, "perch_outbox_depth {}", ob.depth);
    family(&mut o, "perch_outbox_bytes", "gauge", "Payload bytes in the outbox.");
    let _ = writeln!(o, "perch_outbox_bytes {}", ob.bytes);
    family(&mut o, "perch_outbox_evicted_total", "counter", "Events evicted from a full outbox (never delivered).");
    let _ = writeln!(o, "perch_outbox_evicted_total {}", ob.evicted);
    family(&mut o, "perch_events_held", "gauge", "Events waiting in memory because the outbox cannot store them (disk full or failing).");
    let _ = writeln!(o, "perch_events_held {}", h.store.held.load(Relaxed));
    family(&mut o, "perch_events_dropped_total", "counter", "Events lost before the outbox stored them, by reason.");
    for (reason, v) in crate::events::DROP_REASONS.iter().zip(&h.store.dropped) {
        let _ = writeln!(o, "perch_events_dropped_total{{reason=\"{reason}\"}} {}", v.load(Relaxed));
    }
    if let Some(m) = &h.mqtt {
        family(&mut o, "perch_mqtt_connected", "gauge", "1 while connected to the broker.");
        let _ = writeln!(o, "perch_mqtt_connected {}", u8::from(m.connected.load(Relaxed)));
        family(&mut o, "perch_mqtt_connects_total", "counter", "Connections made to the broker.");
        let _ = writeln!(o, "perch_mqtt_connects_total {}", m.connects.load(Relaxed));
        family(
            &mut o,
            "perch_mqtt_messages_dropped_total",
            "counter",
            "Messages perch did not send, by reason (too_large: over mqtt.max_packet_bytes; queue_full).",
        );
        for (reason, v) in [("too_large", &m.dropped_too_large), ("queue_full", &m.dropped_queue_full)] {
            let _ = writeln!(o, "perch_mqtt_messages_dropped_total{{reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
        family(
            &mut o,
            "perch_mqtt_commands_ignored_total",
            "counter",
            "Commands not acted on, by reason (too_large: refused with an error reply; retained: a broker replay).",
        );
        for (reason, v) in [("too_large", &m.refused_too_large), ("retained", &m.ignored_retained)] {
            let _ = writeln!(o, "perch_mqtt_commands_ignored_total{{reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
        family(&mut o, "perch_mqtt_health_summarised_total", "counter", "Health snapshots summarised to fit mqtt.max_packet_bytes.");
        let _ = writeln!(o, "perch_mqtt_health_summarised_total {}", m.health_summarised.load(Relaxed));
    }

    let r = &h.record;
    family(&mut o, "perch_recording_bytes_total", "counter", "Bytes of video segments written, per camera.");
    for c in &r.cameras {
        let _ = writeln!(o, "perch_recording_bytes_total{{camera=\"{}\"}} {}", esc(&c.id), c.bytes.load(Relaxed));
    }
    family(&mut o, "perch_recording_store_bytes", "gauge", "Bytes the recording store holds.");
    let _ = writeln!(o, "perch_recording_store_bytes {}", r.store_bytes.load(Relaxed));
    let reasons = ["window", "age", "quota", "low_disk"];
    family(&mut o, "perch_recording_segment_bytes", "gauge", "Bytes of video segments stored (the only copy of the video).");
    let _ = writeln!(o, "perch_recording_segment_bytes {}", r.segment_bytes.load(Relaxed));
    family(&mut o, "perch_recording_clip_cache_bytes", "gauge", "Bytes of clips made on request and cached.");
    let _ = writeln!(o, "perch_recording_clip_cache_bytes {}", r.cache_bytes.load(Relaxed));
    family(&mut o, "perch_recording_evicted_total", "counter", "Segments and event references deleted by retention, by reason.");
    for (what, counters) in [("segment", &r.evicted_segments), ("event", &r.evicted_events)] {
        for (reason, v) in reasons.iter().zip(counters.iter()) {
            let _ = writeln!(o, "perch_recording_evicted_total{{kind=\"{what}\",reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
    }
    if let Some((total, free)) = h.disk() {
        family(&mut o, "perch_disk_free_bytes", "gauge", "Free bytes on the state directory's file system.");
        let _ = writeln!(o, "perch_disk_free_bytes {free}");
        family(&mut o, "perch_disk_total_bytes", "gauge", "Size of the state directory's file system.");
        let _ = writeln!(o, "perch_disk_total_bytes {total}");
    }
    if let Some(ota) = h.ota.as_ref().map(|f| f()) {
        let phase = ota["phase"].as_str().unwrap_or("unknown");
        let slot = ota["booted"].as_str().unwrap_or("unknown");
        family(&mut o, "perch_ota_info", "gauge", "The update's phase and the booted slot (always 1).");
        let _ = writeln!(o, "perch_ota_info{{phase=\"{}\",booted=\"{}\"}} 1", esc(phase), esc(slot));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
