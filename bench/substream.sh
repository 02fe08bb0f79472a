#!/usr/bin/env bash
# What a detection sub-stream saves: perch's CPU time for one recorded 1920×1080 camera that is decoded for
# detection (source only), against the same camera with a 640×360 `detect_source` (the main stream is then
# only copied to disk). Both are the sample street video re-encoded at those sizes, looping, detection at
# 5 fps; the two configurations run in one invocation, alternating over ROUNDS, each for DURATION seconds
# after the same start-up, and the ratio of the medians is printed.
#
#   bash bench/substream.sh
#   BENCH_SMOKE=1 bash bench/substream.sh     # a few seconds, for CI
#
# Settings: DURATION (40 s; smoke 8), ROUNDS (3; smoke 2), WARMUP (5 s: start-up, not counted, on both).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
if [ "${BENCH_SMOKE:-0}" = 1 ]; then DURATION=${DURATION:-8}; ROUNDS=${ROUNDS:-2}; fi
DURATION=${DURATION:-40}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-5}
cargo build --release --locked -q
PERCH="$ROOT/target/release/perch"
SRC="$ROOT/.local/media/pedestrians-720p-gop1s.mp4"
media="$ROOT/target/bench-media"
mkdir -p "$media"
for size in 1920x1080 640x360; do
  out="$media/street-$size.mp4"
  if [ ! -f "$out" ]; then
    ffmpeg -nostdin -v error -y -i "$SRC" -vf "scale=${size/x/:}" -c:v libx264 -preset veryfast -g 25 -keyint_min 25 \
      -bf 0 -pix_fmt yuv420p -an "$out.tmp.mp4"
    mv "$out.tmp.mp4" "$out"
  fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)

# CPU seconds perch spends in DURATION seconds after WARMUP, with or without the sub-stream.
run_side() {
  local side=$1 dir=$work/$1
  rm -rf "$dir" && mkdir -p "$dir"
  local sub=""
  [ "$side" = substream ] && sub="detect_source = \"file://$media/street-640x360.mp4\""
  cat >"$dir/perch.toml" <<EOF
device_id = "bench"
state_dir = "$dir/state"
[http]
enabled = false
[detector]
model = "$ROOT/models/yolox_nano.toml"
providers = ["cpu"]
[[camera]]
id = "street"
source = "file://$media/street-1920x1080.mp4"
$sub
loop_file = true
detect_fps = 5
labels = ["person"]
EOF
  "$PERCH" run --config "$dir/perch.toml" >/dev/null 2>"$dir/err.log" &
  local pid=$!
  sleep "$WARMUP"
  local a b
  a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  sleep "$DURATION"
  b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM "$pid"
  wait "$pid" || true
  python3 -c "print(f'{($b - $a) / $ticks / $DURATION:.3f}')"
}

declare -A cores
for round in $(seq "$ROUNDS"); do
  order=(main substream)
  [ $((round % 2)) = 0 ] && order=(substream main)
  for side in "${order[@]}"; do
    c=$(run_side "$side")
    cores[$side]="${cores[$side]:-} $c"
    printf 'round %d %-9s %s cores\n' "$round" "$side" "$c"
  done
done
# shellcheck disable=SC2086
python3 -c "
import statistics, sys
m = [float(x) for x in sys.argv[1].split()]; s = [float(x) for x in sys.argv[2].split()]
print(f'decode the 1080p main stream: {statistics.median(m):.3f} cores (rounds {min(m):.3f}..{max(m):.3f})')
print(f'decode the 360p sub-stream, copy the main: {statistics.median(s):.3f} cores (rounds {min(s):.3f}..{max(s):.3f})')
" "${cores[main]}" "${cores[substream]}"
python3 bench/ratio.py "substream/main CPU" "${cores[substream]}" "${cores[main]}"
