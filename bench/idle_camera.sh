#!/usr/bin/env bash
# What an idle camera costs: perch's CPU for N cameras of a static scene (a still photo with sensor noise,
# nothing the camera reports) against N cameras of the busy street, both encoded like cameras (H.264
# 1280x720, 25 fps, a keyframe every second, no B-frames), detection at 5 fps, adaptive cadence with
# idle_after_s = 5. Three configurations in one invocation, alternating over ROUNDS, each measured for
# DURATION seconds after the same WARMUP (long enough for the static cameras to go idle):
#   busy        the street, decode = "all"
#   static      the static scene, decode = "all" (every frame decoded, the motion check on 5 fps)
#   keyframes   the static scene, decode = "keyframes_when_idle" (keyframes only while idle and still)
# and prints each one's cores and its ratio to busy. Goal: keyframes <= 0.15x busy.
#
#   bash bench/idle_camera.sh
#   BENCH_SMOKE=1 bash bench/idle_camera.sh      # a few seconds, for CI
#
# Settings: CAMERAS (4), DURATION (30 s; smoke 6), ROUNDS (3; smoke 2), WARMUP (12 s; smoke 8),
# IDLE_FPS (the cadence's idle_fps; default: perch's own default).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
if [ "${BENCH_SMOKE:-0}" = 1 ]; then DURATION=${DURATION:-6}; ROUNDS=${ROUNDS:-2}; WARMUP=${WARMUP:-8}; fi
CAMERAS=${CAMERAS:-4}
DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-12}
cargo build --release --locked -q
PERCH="$ROOT/target/release/perch"
media="$ROOT/target/bench-media"
mkdir -p "$media"
camera_like=(-r 25 -c:v libx264 -preset veryfast -g 25 -keyint_min 25 -bf 0 -pix_fmt yuv420p -an)
if [ ! -f "$media/street-camera.mp4" ]; then
  ffmpeg -nostdin -v error -y -i "$PERCH_MEDIA/pedestrians-720p-gop1s.mp4" "${camera_like[@]}" "$media/street-camera.tmp.mp4"
  mv "$media/street-camera.tmp.mp4" "$media/street-camera.mp4"
fi
if [ ! -f "$media/static-camera.mp4" ]; then
  # The setup's photo with nobody in it: dog-bicycle-car.jpg (../shared) or parked-van.jpg (opencv-doc).
  # (A loop, not `ls a b | head`: ls exits 2 when one of them is missing, and pipefail ends the script.)
  photo=
  for p in "$PERCH_MEDIA"/dog-bicycle-car.jpg "$PERCH_MEDIA"/parked-van.jpg; do
    [ -f "$p" ] && { photo=$p; break; }
  done
  [ -n "$photo" ] || { echo "no still photo in $PERCH_MEDIA (dog-bicycle-car.jpg or parked-van.jpg): run scripts/setup.sh" >&2; exit 1; }
  ffmpeg -nostdin -v error -y -loop 1 -t 60 -i "$photo" \
    -vf "scale=1280:720,setsar=1,noise=alls=6:allf=t,format=yuv420p" "${camera_like[@]}" "$media/static-camera.tmp.mp4"
  mv "$media/static-camera.tmp.mp4" "$media/static-camera.mp4"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ticks=$(getconf CLK_TCK)

# CPU cores perch spends over DURATION seconds after WARMUP in one configuration.
run_side() {
  local side=$1 dir=$work/$1 video=static-camera decode=all
  rm -rf "$dir" && mkdir -p "$dir"
  [ "$side" = busy ] && video=street-camera
  [ "$side" = keyframes ] && decode=keyframes_when_idle
  {
    printf 'device_id = "bench"\nstate_dir = "%s/state"\n[http]\nenabled = false\n' "$dir"
    printf '[detector]\nmodel = "%s/models/yolox_nano.toml"\nproviders = ["cpu"]\n' "$ROOT"
    for i in $(seq "$CAMERAS"); do
      printf '[[camera]]\nid = "cam%s"\nsource = "file://%s/%s.mp4"\nloop_file = true\ndetect_fps = 5\n' "$i" "$media" "$video"
      printf 'labels = ["person"]\ndecode = "%s"\n[camera.cadence]\nidle_after_s = 5\n' "$decode"
      [ -n "${IDLE_FPS:-}" ] && printf 'idle_fps = %s\n' "$IDLE_FPS"
      printf '[camera.record]\nenabled = false\n'
    done
  } >"$dir/perch.toml"
  "$PERCH" run --config "$dir/perch.toml" >/dev/null 2>"$dir/err.log" &
  local pid=$!
  sleep "$WARMUP"
  local a b
  a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  sleep "$DURATION"
  b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  kill -TERM "$pid"
  wait "$pid" || { echo "perch failed in $side:" >&2; tail -20 "$dir/err.log" >&2; exit 1; }
  python3 -c "print(f'{($b - $a) / $ticks / $DURATION:.3f}')"
}

declare -A cores
sides=(busy static keyframes)
for round in $(seq "$ROUNDS"); do
  order=("${sides[@]}")
  # Rotate the order each round, so no configuration always runs first.
  for ((k = 1; k < round; k++)); do order=("${order[@]:1}" "${order[0]}"); done
  for side in "${order[@]}"; do
    c=$(run_side "$side")
    cores[$side]="${cores[$side]:-} $c"
    printf 'round %d %-9s %s cores\n' "$round" "$side" "$c"
  done
done
python3 - "$CAMERAS" "${cores[busy]}" "${cores[static]}" "${cores[keyframes]}" <<'EOF'
import statistics, sys
n = sys.argv[1]
busy, static, keyframes = ([float(x) for x in a.split()] for a in sys.argv[2:5])
b = statistics.median(busy)
for name, v in (("busy street, decode all", busy), ("static scene, decode all", static), ("static scene, keyframes_when_idle", keyframes)):
    m = statistics.median(v)
    print(f"{n} cameras, {name}: {m:.3f} cores (rounds {min(v):.3f}..{max(v):.3f}), {m / b:.3f}x busy")
EOF
# The configurations of a round ran back to back: each round's ratio compares like with like.
python3 bench/ratio.py "idle/busy (static scene, keyframes_when_idle)" "${cores[keyframes]}" "${cores[busy]}" --goal '<=0.15'
python3 bench/ratio.py "static scene decoding all/busy" "${cores[static]}" "${cores[busy]}"
