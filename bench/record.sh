#!/usr/bin/env bash
# Recording benchmark: CPU cost of recording N 1080p H.264 streams by copy (perch's segment writer) next to
# `ffmpeg -c copy -f segment` on the same input, in the same run. See bench/README.md.
#
#   STREAMS=4 ROUNDS=3 bash bench/record.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
# shellcheck source=/dev/null
source .local/env
STREAMS=${STREAMS:-4}
ROUNDS=${ROUNDS:-3}
INPUT=${INPUT:-$ROOT/.local/bench/pedestrians-1080p-60s.mp4}
if [ ! -f "$INPUT" ]; then
  # A camera-like 1080p stream: the test scene scaled up, 4 Mbit/s, a keyframe every second, 55 s long.
  mkdir -p "$(dirname "$INPUT")"
  ffmpeg -nostdin -v error -stream_loop 3 -i "$PERCH_MEDIA/pedestrians-720p-gop1s.mp4" -an -vf scale=1920:1080 \
    -c:v libx264 -preset veryfast -profile:v main -b:v 4M -maxrate 4M -bufsize 8M -g 25 -keyint_min 25 -sc_threshold 0 \
    -movflags +faststart "$INPUT.tmp.mp4"
  mv "$INPUT.tmp.mp4" "$INPUT"
fi
cargo build --release --locked
target/release/perch bench-record --input "$INPUT" --streams "$STREAMS" --rounds "$ROUNDS" | tee "$ROOT/.local/bench/record.json"
python3 - "$ROOT/.local/bench/record.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
p = [x[0] for x in r["rounds"]]; f = [x[1] for x in r["rounds"] if x[1]]
med = lambda xs, k: statistics.median(x[k] for x in xs)
print(f"\n{r['streams']} streams x {r['video_s']:.1f} s of 1080p H.264, {len(p)} rounds (medians)")
print(f"{'':8} {'CPU ms / video s':>18} {'% of a core per real-time stream':>34}")
print(f"{'perch':8} {med(p,'cpu_ms_per_video_s'):18.2f} {med(p,'core_percent_per_stream'):34.3f}")
if f:
    print(f"{'ffmpeg':8} {med(f,'cpu_ms_per_video_s'):18.2f} {med(f,'core_percent_per_stream'):34.3f}")
    print(f"perch / ffmpeg CPU: {r['ratio']:.3f}x")
PY
