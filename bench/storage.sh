#!/usr/bin/env bash
# Storage amplification on a busy scene: bytes of video perch keeps per byte of the camera's stream, and
# the hours of history a fixed quota then holds. The camera is the sample street video (dozens of people,
# each an event with 5 s of pre-roll and 10 s of post-roll), looping, for DURATION seconds.
#
# With PERCH_BASELINE=<binary> (e.g. a build of an earlier commit, which made a clip file per event), both
# binaries run in one invocation, alternating over ROUNDS, and the ratios are printed.
#
#   bash bench/storage.sh                                 # this checkout only
#   PERCH_BASELINE=/tmp/perch-old bash bench/storage.sh   # before/after
#   BENCH_SMOKE=1 bash bench/storage.sh                   # a few seconds, for CI
#
# Settings: DURATION (60 s; smoke 12), ROUNDS (2; smoke 2), QUOTA_GIB (4: the default record.max_bytes).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=/dev/null
[ -f .local/env ] || bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
if [ "${BENCH_SMOKE:-0}" = 1 ]; then DURATION=${DURATION:-12}; ROUNDS=${ROUNDS:-2}; fi
DURATION=${DURATION:-60}
ROUNDS=${ROUNDS:-2}
QUOTA_GIB=${QUOTA_GIB:-4}
cargo build --release --locked -q
NEW="$ROOT/target/release/perch"
VIDEO="$ROOT/.local/media/pedestrians-720p-gop1s.mp4"
[ -f "$VIDEO" ] || { echo "no test video at $VIDEO: run scripts/setup.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Bytes per second of the source stream.
src_bps=$(python3 - "$VIDEO" <<'EOF'
import json, os, subprocess, sys
p = sys.argv[1]
d = json.loads(subprocess.check_output(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", p]))
print(os.path.getsize(p) / float(d["format"]["duration"]))
EOF
)

# One run: prints "events video_bytes segment_bytes span_s" for binary $1.
run_side() {
  local bin=$1 dir=$work/$2
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/perch.toml" <<EOF
device_id = "bench"
state_dir = "$dir/state"
[http]
enabled = false
[record]
segment_s = 2
window_s = 120
[detector]
model = "$ROOT/models/yolox_nano.toml"
providers = ["cpu"]
[[camera]]
id = "street"
source = "file://$VIDEO"
loop_file = true
detect_fps = 5
labels = ["person"]
[camera.record]
pre_roll_s = 5
post_roll_s = 10
EOF
  "$bin" run --config "$dir/perch.toml" >"$dir/out.log" 2>"$dir/err.log" &
  local pid=$!
  sleep "$DURATION"
  kill -TERM "$pid"
  wait "$pid" || true
  python3 - "$dir" <<'EOF'
import os, re, sys
d = os.path.join(sys.argv[1], "state", "recordings")
video = seg = 0
span = 0.0
for root, _, files in os.walk(d):
    for f in files:
        p = os.path.join(root, f)
        if f.endswith(".mp4"):
            n = os.path.getsize(p)
            video += n
            m = re.fullmatch(r"(\d+)-(\d+)\.mp4", f)
            if m and "segments" in root:
                seg += n
                span += (int(m.group(2)) - int(m.group(1))) / 1000
err = open(os.path.join(sys.argv[1], "err.log")).read()
events = len(re.findall(r" event .*kind=New", err))
print(events, video, seg, f"{span:.1f}")
EOF
}

sides=(new)
[ -n "${PERCH_BASELINE:-}" ] && sides=(baseline new)
declare -A amp
for round in $(seq "$ROUNDS"); do
  order=("${sides[@]}")
  # Alternate which side goes first.
  if [ $((round % 2)) = 0 ] && [ ${#sides[@]} = 2 ]; then order=(new baseline); fi
  for side in "${order[@]}"; do
    bin=$NEW
    [ "$side" = baseline ] && bin=$PERCH_BASELINE
    read -r events video seg span < <(run_side "$bin" "$side-$round")
    a=$(python3 -c "print(f'{$video / ($span * $src_bps):.3f}')")
    amp[$side]="${amp[$side]:-} $a"
    hours=$(python3 -c "print(f'{$QUOTA_GIB * 2**30 / ($a * $src_bps * 3600):.1f}')")
    printf 'round %d %-8s events %4d  video %10d bytes for %6.1f s of source (%d in segments): amplification %6.3fx, %s h in %s GiB\n' \
      "$round" "$side" "$events" "$video" "$span" "$seg" "$a" "$hours" "$QUOTA_GIB"
  done
done
median() { python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'{statistics.median(v):.3f} (rounds {min(v):.3f}..{max(v):.3f})')" "$@"; }
# shellcheck disable=SC2086
echo "new: amplification $(median ${amp[new]})"
# Amplification is already a ratio: bytes stored over the source stream's bytes for the same span (1x: the
# stream stored once).
ones=$(for _ in ${amp[new]}; do printf '1 '; done)
python3 bench/ratio.py "stored/source bytes" "${amp[new]}" "$ones"
if [ ${#sides[@]} = 2 ]; then
  # shellcheck disable=SC2086
  echo "baseline: amplification $(median ${amp[baseline]})"
  python3 bench/ratio.py "new/baseline storage" "${amp[new]}" "${amp[baseline]}"
  python3 bench/ratio.py "new/baseline retained hours" "${amp[baseline]}" "${amp[new]}"
fi
