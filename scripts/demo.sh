#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), builds perch, starts a local mosquitto on 127.0.0.1:18830 and runs
# the service on the sample street video: frames at 5 fps → YOLOX-Nano → tracking → events through the
# durable outbox to the broker. The events are printed as they arrive (mosquitto_sub). The video plays once
# in real time (about 14 s), then perch stops by itself, ending every open event. The video is recorded
# too: 2 s segments under .local/demo-state/recordings — the only copy of the video — that each event
# references by time range (each event's `clip` message names its clip, served on request by the evidence
# API while perch runs: http://127.0.0.1:8080/api/clips/<event id>.mp4; see README "Recording").
# Extra arguments go to `perch run` (e.g. --print-detections for one JSON line per frame).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
cargo build --release --locked
PORT=18830
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if ! (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
  conf=$(mktemp)
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$PORT" >"$conf"
  mosquitto -c "$conf" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
fi
mosquitto_sub -h 127.0.0.1 -p "$PORT" -v -t 'perch/demo/events/#' -t 'perch/demo/status' &
pids+=($!)
sleep 0.3
./target/release/perch run --config examples/demo.toml "$@"
sleep 1
