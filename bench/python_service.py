#!/usr/bin/env python3
"""The peer of `perch run` for bench/service_vs_python.sh: a camera box written the way Python users build one.

Frigate's architecture, reduced to what perch does for the benchmark's cameras:
  - one `ffmpeg` process per camera decodes the stream, keeps FPS frames a second (`-vf fps=…`), scales them
    to fit the detector's input and pipes raw BGR frames to Python;
  - one reader thread per camera keeps only the newest frame (a frame not yet taken is dropped, and counted);
  - one detection loop takes the waiting frames in turn and runs the same per-frame work as
    bench/python_frame.py (letterbox, onnxruntime, YOLOX decode + NMS) in one ONNX Runtime session;
  - with --record, one more `ffmpeg -c copy -f segment` per camera writes 2 s MP4 segments.

One JSON line per detected frame goes to stdout (`{"camera": i, "detections": n}`), as `perch run
--print-detections` prints one per frame, so the driver counts the same work on both sides. SIGTERM stops it:
the ffmpeg processes are ended and waited for (their CPU time is then charged to this process's parent), and
a summary goes to stderr as JSON.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import python_frame  # noqa: E402  (the per-frame work, shared with the per-frame benchmark)


def fit(src_w: int, src_h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """The size ffmpeg scales to: fit the detector's input, aspect kept, even dimensions."""
    r = min(box_w / src_w, box_h / src_h, 1.0)
    return int(src_w * r) // 4 * 4, int(src_h * r) // 2 * 2


def probe_size(video: str) -> tuple[int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", video],
        check=True, capture_output=True, text=True,
    ).stdout
    w, h = out.strip().split(",")[:2]
    return int(w), int(h)


class Latest:
    """The newest frame of one camera, and how many were replaced before the detector took them."""

    def __init__(self) -> None:
        self.frame: bytes | None = None
        self.dropped = 0
        self.received = 0


def reader(proc: subprocess.Popen, size: int, slot: Latest, cond: threading.Condition) -> None:
    while True:
        data = proc.stdout.read(size)  # buffered: a whole frame, or less only at the end of the stream
        if len(data) < size:
            return
        with cond:
            if slot.frame is not None:
                slot.dropped += 1
            slot.frame = data
            slot.received += 1
            cond.notify()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/yolox_nano.toml"))
    ap.add_argument("--video", required=True)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--record", type=Path, help="also write each camera's stream into 2 s segments here")
    args = ap.parse_args()

    m = python_frame.load_manifest(args.model)
    session = python_frame.make_session(m["onnx"], args.threads)
    grids, strides = python_frame.make_grids(m["width"], m["height"], m["strides"])
    src_w, src_h = probe_size(args.video)
    w, h = fit(src_w, src_h, m["width"], m["height"])
    frame_bytes = w * h * 3

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    loop = ["-re", "-stream_loop", "-1", "-i", args.video, "-an"]
    procs: list[subprocess.Popen] = []
    cond = threading.Condition()
    slots = [Latest() for _ in range(args.cameras)]
    for cam in range(args.cameras):
        detect = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *loop,
                  "-vf", f"fps={args.fps},scale={w}:{h}", "-pix_fmt", "bgr24", "-f", "rawvideo", "pipe:1"]
        p = subprocess.Popen(detect, stdout=subprocess.PIPE, bufsize=frame_bytes)
        procs.append(p)
        threading.Thread(target=reader, args=(p, frame_bytes, slots[cam], cond), daemon=True).start()
        if args.record:
            out = args.record / f"cam{cam}"
            out.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(
                ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *loop, "-c", "copy", "-f", "segment",
                 "-segment_time", "2", "-segment_format", "mp4", "-reset_timestamps", "1", str(out / "%06d.mp4")]))

    input_name = m["input_name"]
    canvas = np.full((m["height"], m["width"], 3), m["pad"], dtype=np.uint8)
    detected = [0] * args.cameras
    out = sys.stdout
    turn = 0
    while not stop.is_set():
        with cond:
            ready = [c for c in range(args.cameras) if slots[c].frame is not None]
            if not ready:
                cond.wait(0.1)
                continue
            # Round robin from the camera after the last one served, so none starves.
            cam = min(ready, key=lambda c: (c - turn) % args.cameras)
            data, slots[cam].frame = slots[cam].frame, None
        turn = cam + 1
        img = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
        canvas[:h, :w] = img
        chw = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)[None]
        pred = session.run(None, {input_name: chw})[0]
        boxes, _, _ = python_frame.postprocess(pred, grids, strides, 1.0, w, h, args.min_score)
        detected[cam] += 1
        out.write(json.dumps({"camera": cam, "detections": len(boxes)}) + "\n")
        out.flush()

    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
    summary = {
        "detected": detected,
        "received": [s.received for s in slots],
        "dropped_detector_busy": [s.dropped for s in slots],
        "onnxruntime": python_frame.ort.__version__,
        "pid": os.getpid(),
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
