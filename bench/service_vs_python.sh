#!/usr/bin/env bash
# The whole service, perch vs a Python camera box doing the same work: N cameras of the 720p street video,
# looping in real time, detection at FPS frames a second each, same model, same ONNX Runtime version and
# intra-op thread count. The Python side is built as its users build it (Frigate's architecture): one
# `ffmpeg -vf fps=…,scale=…` process per camera piping BGR frames to one onnxruntime loop
# (bench/python_service.py); with RECORD=1 perch records every camera and Python adds one
# `ffmpeg -c copy -f segment` per camera. Both run for DURATION seconds from their launch, alternating over
# ROUNDS; the driver (bench/service_vs_python.py) prints CPU, peak RSS/PSS, frames and drops per round, the
# medians and perch/python.
#
#   bash bench/service_vs_python.sh                      # 4 cameras, 5 fps, recording off, 60 s x 3 rounds
#   RECORD=1 bash bench/service_vs_python.sh             # recording on, against Python + ffmpeg segmenters
#   CAMERAS=8 SIDES=perch bash bench/service_vs_python.sh   # one side only (how many cameras it sustains)
#   DURATION=1800 ROUNDS=1 SIDES=perch bash bench/service_vs_python.sh   # memory over 30 minutes (RSS slope)
#   BASELINE=/tmp/perch-old bash bench/service_vs_python.sh   # a third side, `before`: an earlier build
#   BENCH_SMOKE=1 bash bench/service_vs_python.sh        # 2 cameras, 8 s, 2 rounds: that it runs (CI)
#
# Settings: CAMERAS (4), FPS (5), THREADS (1; 0 is ONNX Runtime's default on both sides), DURATION (60),
# ROUNDS (3), RECORD (0), CADENCE (0: perch detects every frame, like the peer; 1: its adaptive cadence on),
# DECODE (all | keyframes_when_idle, perch's per-camera decode mode), SIDES (perch,python), VIDEO (the 720p
# street video), PERCH_SET (extra lines for perch's [detector] table, separated by ';'),
# JSON (a file for every round's figures and memory samples), PERCH (another perch binary, e.g. a baseline build).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
if [ "${BENCH_SMOKE:-0}" = 1 ]; then CAMERAS=${CAMERAS:-2}; DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-2}; fi
CAMERAS=${CAMERAS:-4}
FPS=${FPS:-5}
THREADS=${THREADS:-1}
DURATION=${DURATION:-60}
ROUNDS=${ROUNDS:-3}
RECORD=${RECORD:-0}
CADENCE=${CADENCE:-0}
DECODE=${DECODE:-all}
SIDES=${SIDES:-perch,python}
VIDEO=${VIDEO:-$PERCH_MEDIA/pedestrians-720p-gop1s.mp4}
[ -f "$VIDEO" ] || { echo "no video at $VIDEO: run scripts/setup.sh, or set VIDEO" >&2; exit 1; }
# shellcheck source=bench/venv.sh
source bench/venv.sh
cargo build --release --locked -q
work=$(mktemp -d "${TMPDIR:-/tmp}/perch-service-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
flags=()
[ "$RECORD" = 1 ] && flags+=(--record)
[ "$CADENCE" = 1 ] && flags+=(--cadence)
[ -n "${JSON:-}" ] && flags+=(--json "$JSON")
[ -n "${BASELINE:-}" ] && flags+=(--baseline "$(realpath "$BASELINE")")
IFS=';' read -ra sets <<<"${PERCH_SET:-}"
for s in "${sets[@]}"; do [ -n "$s" ] && flags+=(--perch-set "$s"); done
exec "$PY" bench/service_vs_python.py --perch "${PERCH:-$ROOT/target/release/perch}" --python "$PY" --video "$(realpath "$VIDEO")" \
  --cameras "$CAMERAS" --fps "$FPS" --threads "$THREADS" --duration "$DURATION" --rounds "$ROUNDS" \
  --decode "$DECODE" --sides "$SIDES" --work "$work" "${flags[@]}"
