#!/usr/bin/env bash
# Recording benchmark: CPU cost of recording N 1080p H.264 streams by copy (perch's segment writer and
# recorder store) next to `ffmpeg -c copy -f segment` on the same input, in the same run, alternating which
# side goes first each round. Each side records the input played LOOPS times over (copied end to end: 4 x
# 54.7 s) and its first seconds; the difference is its cost per second of video with start-up taken out of
# both. See bench/README.md.
#
#   STREAMS=4 ROUNDS=5 bash bench/record.sh
#   BENCH_SMOKE=1 bash bench/record.sh        # 2 streams, 2 rounds: that it runs (CI)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
# shellcheck source=/dev/null
source .local/env
# Smoke: the same input (a shorter one leaves ffmpeg's cost per second of video inside the noise of its
# start-up: ratio.py then refuses the figure), fewer streams and rounds.
if [ "${BENCH_SMOKE:-0}" = 1 ]; then STREAMS=${STREAMS:-2}; ROUNDS=${ROUNDS:-2}; fi
STREAMS=${STREAMS:-4}
# ffmpeg's start-up (about 80 ms a process) scatters by more than it spends on a 55 s stream (about 25 ms):
# the long run plays the input LOOPS times, so the difference between the two runs stands above that noise.
LOOPS=${LOOPS:-4}
ROUNDS=${ROUNDS:-5}
SHORT_S=${SHORT_S:-6}
INPUT=${INPUT:-$ROOT/.local/bench/pedestrians-1080p-60s.mp4}
mkdir -p .local/bench
if [ ! -f "$INPUT" ]; then
  # A camera-like 1080p stream: the test scene scaled up, 4 Mbit/s, a keyframe every second, 55 s long.
  mkdir -p "$(dirname "$INPUT")"
  ffmpeg -nostdin -v error -stream_loop 3 -i "$PERCH_MEDIA/pedestrians-720p-gop1s.mp4" -an -vf scale=1920:1080 \
    -c:v libx264 -preset veryfast -profile:v main -b:v 4M -maxrate 4M -bufsize 8M -g 25 -keyint_min 25 -sc_threshold 0 \
    -movflags +faststart "$INPUT.tmp.mp4"
  mv "$INPUT.tmp.mp4" "$INPUT"
fi
# The short cut: the input's first SHORT_S seconds, copied (it starts on a keyframe; cuts at one).
SHORT=.local/bench/record-short-$(basename "$INPUT" .mp4)-${SHORT_S}s.mp4
[ -f "$SHORT" ] || ffmpeg -nostdin -v error -i "$INPUT" -t "$SHORT_S" -an -c copy "$SHORT"
# The long run: the input LOOPS times, copied end to end (timestamps continue).
LONG=.local/bench/record-long-$(basename "$INPUT" .mp4)-x${LOOPS}.mp4
[ -f "$LONG" ] || ffmpeg -nostdin -v error -stream_loop $((LOOPS - 1)) -i "$INPUT" -an -c copy "$LONG"
cargo build --release --locked -q
target/release/perch bench-record --input "$LONG" --short "$SHORT" --streams "$STREAMS" --rounds "$ROUNDS" >.local/bench/record.json
python3 - .local/bench/record.json <<'PY'
import functools, json, statistics, sys
sys.path.insert(0, "bench")
from ratio import ratio_line
r = json.load(open(sys.argv[1]))
rounds = r["rounds"]
print(f"{r['streams']} streams x {r['video_s']:.1f} s (and x {r['short_video_s']:.1f} s, the short cut), {len(rounds)} rounds (medians)")
print(f"{'':8} {'CPU ms / video s':>17} {'% of a core per real-time stream':>33} {'fixed CPU ms':>13} {'segments':>9} {'dropped':>8}")
for name in ("perch", "ffmpeg"):
    s = [x[name] for x in rounds]
    med = lambda k: statistics.median(x[k] for x in s)
    print(f"{name:8} {med('cpu_ms_per_video_s'):17.2f} {med('core_percent_per_stream'):33.3f} {med('fixed_cpu_ms'):13.0f} "
          f"{s[-1]['long']['segments']:9d} {max(x['long']['dropped_frames'] for x in s):8d}")
if any(x["perch"]["long"]["dropped_frames"] for x in rounds):
    sys.exit("perch's writer dropped frames: the comparison is not fair (the disk could not keep up)")
per_round = lambda path: [functools.reduce(dict.__getitem__, path.split("."), x) for x in rounds]
print(ratio_line("perch/ffmpeg CPU per video second", per_round("perch.cpu_ms_per_video_s"), per_round("ffmpeg.cpu_ms_per_video_s"), goal="<=1"))
# For reference, start-up included: one perch process against STREAMS ffmpeg processes.
print(ratio_line("perch/ffmpeg CPU with start-up (whole input)", per_round("perch.long.cpu_s"), per_round("ffmpeg.long.cpu_s")))
PY
