#!/usr/bin/env python3
"""Makes the INT8 variant of a YOLOX model with ONNX Runtime's static quantization, and its manifest.

    python models/quantize_int8.py --video CALIBRATION.mp4 [--model models/yolox_nano.toml] [--frames 120]

Writes `<name>_int8.onnx` and `<name>_int8.toml` beside the fp32 model: the manifest is the fp32 one with its
own name, file and sha256, and says in `description` what it was calibrated on. The INT8 model is a model
*release* like any other: roll it out with `perch fleet rollout --model` (or try it first with `perch model
shadow --current <fp32> --candidate <int8> MEDIA…`), and the device's shadow trial promotes it only if it
agrees with the model serving now (see README, "Model releases on the device").

How: QDQ format, weights per channel as int8, activations as uint8, calibrated with min/max on frames of the
calibration video prepared exactly as perch prepares them (fit 416x416 keeping the aspect, top-left, pad 114,
BGR 0-255). The prediction convolutions of the head (box, objectness, class) and everything after them stay
in float: their outputs are the boxes and scores themselves, where 8-bit steps would move boxes and push
scores across the threshold, and they are a small share of the work.

Needs the bench venv (bench/venv.sh) plus `onnx`: `.local/bench-venv/bin/pip install onnx`.
"""

import argparse
import hashlib
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


def frames(video: str, count: int, fps: float, width: int, height: int, pad: int):
    """`count` frames of `video` at `fps`, letterboxed like perch's input: float32 NCHW, BGR, 0-255."""
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height", "-of", "csv=p=0", video],
                           check=True, capture_output=True, text=True).stdout.strip().split(",")
    sw, sh = int(probe[0]), int(probe[1])
    r = min(width / sw, height / sh)
    w, h = int(sw * r) // 2 * 2, int(sh * r) // 2 * 2
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", video, "-vf", f"fps={fps},scale={w}:{h}", "-frames:v", str(count),
                          "-pix_fmt", "bgr24", "-f", "rawvideo", "pipe:1"], check=True, capture_output=True).stdout
    n = len(raw) // (w * h * 3)
    for i in range(n):
        img = np.frombuffer(raw, dtype=np.uint8, count=w * h * 3, offset=i * w * h * 3).reshape(h, w, 3)
        canvas = np.full((height, width, 3), pad, dtype=np.uint8)
        canvas[:h, :w] = img
        yield np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)[None]


class Reader(CalibrationDataReader):
    def __init__(self, name: str, batches):
        self.name, self.batches = name, iter(batches)

    def get_next(self):
        b = next(self.batches, None)
        return None if b is None else {self.name: b}


def head_and_after(model: onnx.ModelProto) -> list[str]:
    """The nodes computing the head's predictions (convolutions whose weights are `head.*_preds.*`) and every
    node downstream of them: left in float."""
    nodes = model.graph.node
    start = {n.name for n in nodes if n.op_type == "Conv" and any(".reg_preds." in i or ".obj_preds." in i or ".cls_preds." in i for i in n.input)}
    tainted = {o for n in nodes if n.name in start for o in n.output}
    excluded = set(start)
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.name not in excluded and any(i in tainted for i in n.input):
                excluded.add(n.name)
                tainted.update(n.output)
                changed = True
    return sorted(excluded)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/yolox_nano.toml"))
    ap.add_argument("--video", required=True, help="calibration video: scenes like the cameras'")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--fps", type=float, default=2.0, help="calibration frames taken per second of video")
    ap.add_argument("--calibration", choices=["minmax", "percentile", "entropy"], default="minmax")
    ap.add_argument("--reduce-range", action="store_true", help="7-bit weights (x86 CPUs without VNNI saturate 8-bit products)")
    ap.add_argument("--float-stem", type=int, default=2, help="also keep the first N convolutions in float (they see the raw 0-255 picture)")
    ap.add_argument("--ops", default="Conv", help="operator types to quantize (comma-separated; the rest stays float)")
    args = ap.parse_args()

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}
    with open(args.model, "rb") as f:
        manifest = tomllib.load(f)
    inp = manifest["input"]
    src = args.model.parent / manifest["file"]
    name = f"{manifest['name']}_int8"
    out_onnx = args.model.parent / f"{name}.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        # Per-channel scales (DequantizeLinear's `axis`) need opset 13; YOLOX's export is opset 11.
        upgraded = Path(tmp) / "opset13.onnx"
        fp32 = onnx.load(str(src))
        if max(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")) < 13:
            fp32 = onnx.version_converter.convert_version(fp32, 13)
        onnx.save(fp32, str(upgraded))
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        excluded = head_and_after(model) + [n.name for n in model.graph.node if n.op_type == "Conv"][: args.float_stem]
        batches = list(frames(args.video, args.frames, args.fps, inp["width"], inp["height"], inp.get("pad_value", 114)))
        if len(batches) < 10:
            sys.exit(f"only {len(batches)} calibration frames from {args.video}: give a longer video")
        quantize_static(str(prepared), str(out_onnx), Reader(inp["name"], batches), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=methods[args.calibration],
                        op_types_to_quantize=args.ops.split(","), nodes_to_exclude=excluded, reduce_range=args.reduce_range)
    sha = hashlib.sha256(out_onnx.read_bytes()).hexdigest()
    text = args.model.read_text()
    top, lines = True, []
    for line in text.splitlines():
        if line.startswith("["):
            top = False
        if top and line.startswith("name = "):
            line = f'name = "{name}"'
        elif top and line.startswith("file = "):
            line = f'file = "{out_onnx.name}"'
        elif top and line.startswith("sha256 = "):
            line = f'sha256 = "{sha}"'
        elif top and line.startswith("description = "):
            line = (f'description = "{manifest["description"]}; INT8 (ONNX Runtime static quantization, QDQ, per-channel '
                    f'weights, head in float), calibrated on {len(batches)} frames of {Path(args.video).name}"')
        lines.append(line)
    out_toml = args.model.parent / f"{name}.toml"
    out_toml.write_text("\n".join(lines) + "\n")
    print(f"{out_onnx} ({out_onnx.stat().st_size} bytes, sha256 {sha}), {len(excluded)} nodes left in float, "
          f"{len(batches)} calibration frames; manifest {out_toml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
