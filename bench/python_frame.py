#!/usr/bin/env python3
"""Python baseline for `perch bench`: the same per-frame detection work in onnxruntime + numpy + OpenCV.

Written the way YOLOX's own ONNX Runtime demo does it (demo/ONNXRuntime/onnx_inference.py with
yolox/utils/demo_utils.py), with the obvious fair improvements a competent developer would make: grids
computed once, vectorised best-class selection, class-aware NMS in one pass with the class-offset trick.

Per frame, each stage timed on its own:
  preprocess   cv2.resize (INTER_LINEAR) to fit 416x416 keeping aspect, top-left on a 114 canvas,
               HWC -> CHW, float32, batch dimension.
  inference    session.run (ORT_ENABLE_ALL, 1 inter-op thread, T intra-op threads, sequential, CPU).
  postprocess  grid decode, objectness x best class score, threshold, class-aware NMS (IoU 0.45,
               at most 100), boxes mapped back to source pixels.

The image is read once, outside the timed loop, as `perch bench` does. Prints a JSON report with the same
fields as `perch bench` so the two can be compared key by key (see bench/detect_vs_python.sh).
"""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

NMS_IOU = 0.45  # perch's default detector.nms_iou
MAX_DETECTIONS = 100  # perch's default detector.max_detections


def load_manifest(path: Path) -> dict:
    """The model manifest perch uses (models/*.toml): input size, pad value, strides, tensor names."""
    with open(path, "rb") as f:
        m = tomllib.load(f)
    inp, out = m["input"], m["output"]
    # This script implements the one layout perch's manifest for YOLOX-Nano describes; refuse anything else
    # rather than silently benchmarking different work.
    expected = {"layout": "nchw", "channels": "bgr", "letterbox": "top_left"}
    for key, value in expected.items():
        if inp.get(key, value) != value:
            sys.exit(f"{path}: input.{key} = {inp[key]!r}; this baseline only implements {value!r}")
    if inp.get("scale", 1.0) != 1.0 or "mean" in inp or "std" in inp:
        sys.exit(f"{path}: input normalisation is not raw 0-255; this baseline does not implement it")
    if out.get("format") != "yolox":
        sys.exit(f"{path}: output.format = {out.get('format')!r}; this baseline only implements 'yolox'")
    return {
        "onnx": path.parent / m["file"],
        "input_name": inp["name"],
        "width": int(inp["width"]),
        "height": int(inp["height"]),
        "pad": int(inp.get("pad_value", 114)),
        "output_name": out["name"],
        "strides": [int(s) for s in out["strides"]],
        "classes": len(m["labels"]),
    }


def make_session(onnx_path: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with the same options perch sets (perch leaves intra-op threads at ORT's default for 0)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads > 0:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])


def make_grids(width: int, height: int, strides: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor grid cell (x, y) and stride, in the model's output order. Computed once: they depend only
    on the input size (YOLOX's demo_postprocess rebuilds them every frame, which no one should copy)."""
    grids, expanded = [], []
    for s in strides:
        xv, yv = np.meshgrid(np.arange(width // s), np.arange(height // s))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((grids[-1].shape[0], 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def preprocess(img: np.ndarray, width: int, height: int, pad: int) -> tuple[np.ndarray, float]:
    """YOLOX's `preproc`: letterbox top-left onto a pad-value canvas, HWC -> CHW float32, batch of 1."""
    r = min(width / img.shape[1], height / img.shape[0])
    nw, nh = int(img.shape[1] * r), int(img.shape[0] * r)
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((height, width, 3), pad, dtype=np.uint8)
    canvas[:nh, :nw] = resized
    chw = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)
    return chw[None], r


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy NMS (YOLOX's demo_utils.nms, without its +1 pixel convention, as perch). Returns kept indices,
    best score first, stopping after `max_keep`."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0 and len(keep) < max_keep:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    out: np.ndarray, grids: np.ndarray, strides: np.ndarray, ratio: float, src_w: int, src_h: int, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[1, N, 5 + C] YOLOX output -> (boxes x1y1x2y2 in source pixels, scores, class ids) after NMS."""
    pred = out[0]
    # score = objectness x best class score, and class scores are sigmoids (<= 1), so an anchor whose
    # objectness is below the threshold can never pass: select on objectness first (exact, and perch does the
    # same), so the 80-wide argmax runs on a handful of rows instead of all 3549.
    cand = np.flatnonzero(pred[:, 4] >= min_score)
    p = pred[cand]
    cls = p[:, 5:].argmax(axis=1)
    scores = p[:, 4] * p[np.arange(len(p)), 5 + cls]
    ok = scores >= min_score
    p, cls, scores, cand = p[ok], cls[ok], scores[ok], cand[ok]
    # Grid decode (vectorised, on the surviving anchors only).
    s = strides[cand]
    xy = (p[:, :2] + grids[cand]) * s
    wh = np.exp(p[:, 2:4]) * s
    boxes = np.concatenate((xy - wh / 2, xy + wh / 2), axis=1)
    # Class-aware NMS in one pass: shifting each class's boxes by class x (a span larger than any box
    # coordinate) means boxes of different classes never overlap.
    offset = cls[:, None].astype(np.float32) * (float(np.abs(boxes).max(initial=0.0)) * 2 + 1)
    keep = nms(boxes + offset, scores, NMS_IOU, MAX_DETECTIONS)
    boxes = boxes[keep] / ratio
    np.clip(boxes, 0, [src_w, src_h, src_w, src_h], out=boxes)
    return boxes, scores[keep], cls[keep]


def quantile(values: list[float], q: float) -> float:
    """Same definition as perch's: the sorted value at round((n - 1) q)."""
    v = sorted(values)
    return v[round((len(v) - 1) * q)] if v else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/yolox_nano.toml"), help="model manifest (.toml)")
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    ap.add_argument("--min-score", type=float, default=0.3)
    ap.add_argument("--print-detections", action="store_true", help="also list the detections")
    args = ap.parse_args()

    m = load_manifest(args.model)
    img = cv2.imread(str(args.image), cv2.IMREAD_COLOR)  # BGR, decoded once (not timed), as perch bench
    if img is None:
        sys.exit(f"cannot read {args.image}")
    src_h, src_w = img.shape[:2]
    session = make_session(m["onnx"], args.threads)
    grids, strides = make_grids(m["width"], m["height"], m["strides"])
    expected_anchors = grids.shape[0]

    iterations = max(args.iterations, 1)
    runs = []
    dets = None
    for i in range(args.warmup + iterations):
        t0 = time.perf_counter()
        blob, ratio = preprocess(img, m["width"], m["height"], m["pad"])
        t1 = time.perf_counter()
        out = session.run([m["output_name"]], {m["input_name"]: blob})[0]
        t2 = time.perf_counter()
        dets = postprocess(out, grids, strides, ratio, src_w, src_h, args.min_score)
        t3 = time.perf_counter()
        if i == 0 and out.shape != (1, expected_anchors, 5 + m["classes"]):
            sys.exit(f"output shape {out.shape} does not match the manifest ([1, {expected_anchors}, {5 + m['classes']}])")
        if i >= args.warmup:
            runs.append((t1 - t0, t2 - t1, t3 - t2))

    def stage(q: float) -> dict:
        ms = lambda xs: quantile([x * 1e3 for x in xs], q)  # noqa: E731
        return {
            "preprocess": ms([r[0] for r in runs]),
            "inference": ms([r[1] for r in runs]),
            "postprocess": ms([r[2] for r in runs]),
            "total": ms([sum(r) for r in runs]),
        }

    boxes, scores, classes = dets
    report = {
        "image": str(args.image),
        "width": src_w,
        "height": src_h,
        "iterations": iterations,
        "intra_threads": args.threads,
        "provider": "cpu",
        "detections": int(len(scores)),
        "median_ms": stage(0.5),
        "p90_ms": stage(0.9),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    if args.print_detections:
        report["detection_list"] = [
            {"class_id": int(c), "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
            for b, s, c in zip(boxes, scores, classes)
        ]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
