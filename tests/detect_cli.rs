//! `perch detect` on real images and a real H.264 video, with the real YOLOX-Nano model.

mod common;

use common::{media, model, perch, photo, street_frame};
use serde_json::Value;

fn detect(args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = perch().arg("detect").arg("--model").arg(model()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    (out.status.success(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn bbox(d: &Value) -> [f64; 4] {
    let b = d["box"].as_array().unwrap();
    [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap())
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// The best detection of `label` overlapping `expected` (IoU), if any.
fn find(dets: &[Value], labels: &[&str], expected: [f64; 4]) -> Option<(f64, f64)> {
    dets.iter()
        .filter(|d| labels.contains(&d["label"].as_str().unwrap()))
        .map(|d| (iou(bbox(d), expected), d["score"].as_f64().unwrap()))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[test]
fn photo_with_vehicles_and_no_person() {
    let photo = photo();
    let name = photo.path.file_name().unwrap().to_str().unwrap().to_string();
    let (ok, dets, err) = detect(&[photo.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(dets.iter().all(|d| d["file"].as_str().unwrap().ends_with(&name)));
    // Reference boxes (source pixels of the photo) of what the model finds in it (tests/common: MediaSet).
    for (labels, expected) in &photo.objects {
        let (overlap, score) = find(&dets, labels, *expected).unwrap_or_else(|| panic!("no {labels:?} in {dets:?}"));
        assert!(overlap > 0.8, "{labels:?} box overlaps the expected one only {overlap:.2}: {dets:?}");
        assert!(score > 0.6, "{labels:?} score {score}");
    }
    // Boxes are in source pixels, inside the picture.
    let (w, h) = photo.size;
    for d in &dets {
        let b = bbox(d);
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h && b[0] < b[2] && b[1] < b[3], "{d}");
    }
    assert!(!dets.iter().any(|d| d["label"] == "person" && d["score"].as_f64().unwrap() > 0.5), "no person in this photo: {dets:?}");
}

#[test]
fn video_frame_with_pedestrians() {
    let frame = street_frame();
    let (ok, dets, err) = detect(&["--min-score", "0.5", frame.path.to_str().unwrap()]);
    assert!(ok, "{err}");
    let people: Vec<_> = dets.iter().filter(|d| d["label"] == "person").collect();
    assert!(people.len() >= 5, "expected several people, got {dets:?}");
    for expected in frame.people {
        let (overlap, score) = find(&dets, &["person"], expected).unwrap();
        assert!(overlap > 0.7 && score > 0.6, "person near {expected:?}: iou {overlap:.2} score {score}");
    }
    assert!(dets.iter().all(|d| d["score"].as_f64().unwrap() >= 0.5), "min-score not applied");
}

#[test]
fn video_file_is_sampled_at_the_requested_rate() {
    let video = media("pedestrians-720p-gop1s.mp4");
    let (ok, dets, err) = detect(&["--fps", "2", video.to_str().unwrap()]);
    assert!(ok, "{err}");
    let mut frames: Vec<(u64, f64)> = dets.iter().map(|d| (d["frame"].as_u64().unwrap(), d["pts_ms"].as_f64().unwrap())).collect();
    frames.dedup();
    // 13.8 s at 2 fps: ~28 frames, 500 ms apart in stream time; people in most of them.
    let (first, last) = (frames.first().unwrap(), frames.last().unwrap());
    assert!(last.0 >= 24 && last.0 <= 28, "last frame index {}", last.0);
    for w in frames.windows(2) {
        let per_frame = (w[1].1 - w[0].1) / (w[1].0 - w[0].0) as f64;
        assert!((per_frame - 500.0).abs() < 25.0, "frames {:?} → {:?} are {per_frame} ms apart", w[0], w[1]);
    }
    assert!(frames.len() as u64 >= (last.0 - first.0) * 3 / 4, "most sampled frames should have people");
}

#[test]
fn missing_file_and_bad_provider_fail_clearly() {
    let (ok, _, err) = detect(&["/nonexistent/clip.mp4"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/clip.mp4") && err.contains("no such file"), "{err}");

    // The CPU build of ONNX Runtime has no CUDA: asking for it must fail loudly, naming the way out.
    let img = photo().path;
    let (ok, dets, err) = detect(&["--providers", "cuda,cpu", img.to_str().unwrap()]);
    assert!(!ok, "cuda must not silently fall back to cpu; got {dets:?}");
    assert!(err.contains("`cuda`") && err.contains("allow_cpu_fallback"), "{err}");
}

#[test]
fn cpu_fallback_is_allowed_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), &[], "providers = [\"tensorrt\", \"cuda\", \"cpu\"]\nallow_cpu_fallback = true");
    let photo = photo();
    let out = perch().args(["detect", "--config"]).arg(&cfg).arg(&photo.path).env("PERCH_LOG", "warn").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(photo.labels.iter().all(|l| stdout.contains(&format!("\"label\":\"{l}\""))), "{stdout}");
    // The fallback is never silent.
    assert!(err.contains("tensorrt") && err.contains("allow_cpu_fallback"), "fallback not reported: {err}");
}

#[test]
fn corrupt_model_is_refused_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(model()).unwrap();
    std::fs::write(dir.path().join("m.toml"), manifest.replace("file = \"yolox_nano.onnx\"", "file = \"m.onnx\"")).unwrap();
    let mut bytes = std::fs::read(model().with_extension("onnx")).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(dir.path().join("m.onnx"), bytes).unwrap();
    let out = perch().args(["detect", "--model"]).arg(dir.path().join("m.toml")).arg(photo().path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("SHA-256") && err.contains("m.onnx"), "{err}");
}

/// Rectangular inference (the default for a model whose manifest allows it): the 16:9 frame goes into a
/// 416×256 input instead of 416×416 and the same people are found in the same places as with the square.
#[test]
fn a_rectangular_input_finds_what_the_square_one_finds() {
    let img = street_frame().path;
    let bench = |square: bool| -> Value {
        let mut c = perch();
        c.args(["bench", "--iterations", "2", "--warmup", "0", "--threads", "1", "--min-score", "0.5", "--model"]).arg(model()).arg("--image").arg(&img);
        if square {
            c.arg("--square");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (rect, square) = (bench(false), bench(true));
    assert_eq!(rect["input"], serde_json::json!([416, 256]), "{rect}");
    assert_eq!(square["input"], serde_json::json!([416, 416]), "{square}");
    let (r, s) = (rect["detections"].as_u64().unwrap() as i64, square["detections"].as_u64().unwrap() as i64);
    assert!(s >= 5 && (r - s).abs() <= 2, "rectangular {r} detections, square {s}");
    // Boxes through `perch detect` (rectangular) land where the square input puts them (the test above
    // checks two of them against the reference).
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(cfg_dir.path(), &[], "rectangular = false");
    let out = perch().arg("detect").arg("--config").arg(&cfg).args(["--min-score", "0.5"]).arg(&img).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let square_dets: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Every confident square detection (score ≥ 0.6) is found again, in the same place, by the rectangular
    // input at a lower threshold: scores near a threshold move a little between the two inputs.
    let (ok, rect_dets, err) = detect(&["--min-score", "0.3", img.to_str().unwrap()]);
    assert!(ok, "{err}");
    let confident: Vec<&Value> = square_dets.iter().filter(|d| d["score"].as_f64().unwrap() >= 0.6).collect();
    assert!(confident.len() >= 5, "{square_dets:?}");
    for s in confident {
        let best = rect_dets.iter().filter(|r| r["label"] == s["label"]).map(|r| iou(bbox(r), bbox(s))).fold(0.0, f64::max);
        assert!(best > 0.75, "{s} has no counterpart with the rectangular input (best IoU {best:.2})");
    }
}
