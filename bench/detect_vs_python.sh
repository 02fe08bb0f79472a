#!/usr/bin/env bash
# Per-frame detection cost: perch vs the same work in Python (onnxruntime + numpy + OpenCV).
#
# Builds perch (release), sets up a Python venv with the same ONNX Runtime version, then for each thread count
# runs `perch bench` and bench/python_frame.py alternately, ROUNDS times each, and prints per stage the
# perch median, the Python median and perch/python, with the goals (total <= 0.8, inference <= 1.02).
# See bench/README.md.
#
# Usage (from anywhere; a relative image path is looked up from the repo root, then from the current directory):
#   bash bench/detect_vs_python.sh [--image PATH] [--iterations N] [--warmup N] [--threads "1 2"] [--rounds N]
# or the same through the environment: IMAGE, ITERATIONS, WARMUP, THREADS, ROUNDS.
# STRICT=1 makes it exit 3 when a goal is missed (default: report only).
# BENCH_SMOKE=1: 20 iterations, 5 warm-up, 2 rounds: that it runs (CI).
set -euo pipefail

CALLER_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ORT_VERSION=1.31.1 # the version scripts/setup.sh installs for perch; Python must run the same one
ORT_LIB=.local/onnxruntime/libonnxruntime.so
MODEL=models/yolox_nano.toml
MIN_SCORE=0.3
GOAL_TOTAL=0.8
GOAL_INFERENCE=1.02

if [[ -z "${IMAGE:-}" ]]; then
    IMAGE=.local/media/pedestrians-frame.jpg # the media set setup installed (scripts/setup.sh)
fi
if [ "${BENCH_SMOKE:-0}" = 1 ]; then ITERATIONS=${ITERATIONS:-20}; WARMUP=${WARMUP:-5}; ROUNDS=${ROUNDS:-2}; fi
ITERATIONS=${ITERATIONS:-200}
WARMUP=${WARMUP:-20}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
STRICT=${STRICT:-0}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --image) IMAGE=$2; shift 2 ;;
        --iterations) ITERATIONS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for n in "$ITERATIONS" "$WARMUP" "$ROUNDS" $THREADS; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "not a number: $n (ITERATIONS, WARMUP, ROUNDS and THREADS take whole numbers)" >&2; exit 2; }
done
[[ "$ITERATIONS" -ge 1 && "$ROUNDS" -ge 1 ]] || { echo "ITERATIONS and ROUNDS must be at least 1" >&2; exit 2; }

# --- what perch needs, installed by scripts/setup.sh ------------------------------------------------------
missing=()
[[ -e "$ORT_LIB" ]] || missing+=("$ORT_LIB")
[[ -e models/yolox_nano.onnx ]] || missing+=(models/yolox_nano.onnx)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "missing: ${missing[*]}" >&2
    echo "run scripts/setup.sh first (it installs ONNX Runtime $ORT_VERSION and the model), then rerun this." >&2
    exit 1
fi
# A relative --image / IMAGE is taken from the repo root, or else from where the script was started.
if [[ "$IMAGE" != /* && ! -f "$IMAGE" && -f "$CALLER_PWD/$IMAGE" ]]; then IMAGE="$CALLER_PWD/$IMAGE"; fi
[[ -f "$IMAGE" ]] || { echo "image not found: $IMAGE (set IMAGE or --image)" >&2; exit 1; }
export ORT_DYLIB_PATH="$ROOT/$ORT_LIB"

# --- Python venv (idempotent) ---------------------------------------------------------------------------
# shellcheck source=bench/venv.sh
source bench/venv.sh

# --- perch ----------------------------------------------------------------------------------------------
echo "== cargo build --release" >&2
cargo build --release --quiet
PERCH="$ROOT/target/release/perch"

# The ONNX Runtime version perch loads, asked of the library itself (OrtGetApiBase()->GetVersionString()).
perch_ort_version=$("$PY" - "$ORT_DYLIB_PATH" <<'EOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)  # struct { GetApi, GetVersionString }
get_version = ctypes.CFUNCTYPE(ctypes.c_char_p)(lib.OrtGetApiBase().contents[1])
print(get_version().decode())
EOF
)

# --- the runs ---------------------------------------------------------------------------------------------
LOAD_START=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
OUT=$(mktemp -d "${TMPDIR:-/tmp}/perch-vs-python.XXXXXX")
trap 'rm -rf "$OUT"' EXIT

run_perch() { # threads round
    # The model's full square input, as Python feeds it: the like-for-like comparison.
    "$PERCH" bench --model "$MODEL" --image "$IMAGE" --iterations "$ITERATIONS" --warmup "$WARMUP" \
        --threads "$1" --min-score "$MIN_SCORE" --square >"$OUT/perch-t$1-r$2.json"
    # What perch runs in service: rectangular inference (the picture rounded up to the stride).
    "$PERCH" bench --model "$MODEL" --image "$IMAGE" --iterations "$ITERATIONS" --warmup "$WARMUP" \
        --threads "$1" --min-score "$MIN_SCORE" >"$OUT/rect-t$1-r$2.json"
}
run_python() { # threads round
    # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when the environment sets them, slow a current numpy: not for Python.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/python_frame.py --model "$MODEL" --image "$IMAGE" \
        --iterations "$ITERATIONS" --warmup "$WARMUP" --threads "$1" --min-score "$MIN_SCORE" >"$OUT/python-t$1-r$2.json"
}

for t in $THREADS; do
    for ((r = 1; r <= ROUNDS; r++)); do
        # Alternate which side goes first, so a slow start or a noisy neighbour does not always hit the same one.
        if ((r % 2)); then
            echo "== threads $t, round $r/$ROUNDS: perch, python" >&2
            run_perch "$t" "$r"
            run_python "$t" "$r"
        else
            echo "== threads $t, round $r/$ROUNDS: python, perch" >&2
            run_python "$t" "$r"
            run_perch "$t" "$r"
        fi
    done
done

# --- the table --------------------------------------------------------------------------------------------
# shellcheck disable=SC2086 # THREADS is a checked list of numbers: one argument each
"$PY" - "$OUT" "$perch_ort_version" "$GOAL_TOTAL" "$GOAL_INFERENCE" "$STRICT" "$LOAD_START" $THREADS <<'EOF'
import json, os, statistics, sys
from pathlib import Path
sys.path.insert(0, "bench")
from ratio import ratio_line

out, perch_ort, goal_total, goal_inf, strict = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
load_start, threads = sys.argv[6], sys.argv[7:]
stages = ["preprocess", "inference", "postprocess", "total"]
missed = False

def load(side, t):
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{side}-t{t}-r*.json"), key=lambda p: int(p.stem.rsplit("-r", 1)[1]))]

first = load("python", threads[0])[0]
print(f"image {first['image']} ({first['width']}x{first['height']}), {first['iterations']} iterations per run, "
      f"{len(load('python', threads[0]))} interleaved rounds per side; figures are the median over rounds of each run's median")
print(f"ONNX Runtime: perch {perch_ort}, python {first['onnxruntime']}"
      + ("" if perch_ort == first["onnxruntime"] else "  <-- DIFFERENT VERSIONS: the comparison is not like for like")
      + f"; numpy {first['numpy']}, opencv {first['opencv']}")
try:
    load_end = open("/proc/loadavg").read().split()[0]
except OSError:
    load_end = "?"
# Other work on the machine shows up as scattered rounds; the load average says whether there was any.
print(f"load average (1 min): {load_start} before, {load_end} after, on {os.cpu_count()} cores")
for t in threads:
    perch, python = load("perch", t), load("python", t)
    print()
    print(f"threads {t} ({'ONNX Runtime default' if t == '0' else 'intra-op'}):")
    print(f"  {'stage':<12} {'perch ms':>9} {'python ms':>10} {'perch/python':>13}  {'rounds perch / python (ms)'}")
    ratio = {}
    for s in stages:
        pv = [r["median_ms"][s] for r in perch]
        yv = [r["median_ms"][s] for r in python]
        p, y = statistics.median(pv), statistics.median(yv)
        ratio[s] = p / y if y > 0 else float("inf")
        spread = " ".join(f"{v:.2f}" for v in pv) + " / " + " ".join(f"{v:.2f}" for v in yv)
        print(f"  {s:<12} {p:>9.3f} {y:>10.3f} {ratio[s]:>12.3f}x  {spread}")
    ok_total, ok_inf = ratio["total"] <= goal_total, ratio["inference"] <= goal_inf
    missed |= not (ok_total and ok_inf)
    print(f"  goal total <= {goal_total}x: {'met' if ok_total else 'NOT met'} ({ratio['total']:.3f}x); "
          f"goal inference <= {goal_inf}x: {'met' if ok_inf else 'NOT met'} ({ratio['inference']:.3f}x)")
    # Round r of each side ran back to back: the per-round ratios and their spread.
    for s in ("total", "inference"):
        goal = goal_total if s == "total" else goal_inf
        print("  " + ratio_line(f"perch/python {s} ms, {t} thread(s)", [r["median_ms"][s] for r in perch],
                                [r["median_ms"][s] for r in python], goal=f"<={goal}"))
    rect = load("rect", t)
    if rect and rect[0]["input"] != perch[0]["input"]:
        rm = {s: statistics.median(r["median_ms"][s] for r in rect) for s in stages}
        ym = {s: statistics.median(r["median_ms"][s] for r in python) for s in stages}
        print(f"  rectangular input {rect[0]['input'][0]}x{rect[0]['input'][1]} (what perch runs in service): inference "
              f"{rm['inference']:.3f} ms ({rm['inference'] / ym['inference']:.3f}x python), total {rm['total']:.3f} ms "
              f"({rm['total'] / ym['total']:.3f}x python); detections {', '.join(str(d) for d in sorted({r['detections'] for r in rect}))}")
    pd, yd = sorted({r["detections"] for r in perch}), sorted({r["detections"] for r in python})
    note = "" if abs(pd[0] - yd[0]) <= max(2, 0.1 * yd[0]) else "  <-- differ by more than expected: check both decoders"
    print(f"  detections: perch {', '.join(map(str, pd))}, python {', '.join(map(str, yd))}{note}")
sys.exit(3 if strict and missed else 0)
EOF
