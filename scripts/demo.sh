#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), builds perch, and runs the service on the sample street video:
# frames at 5 fps → YOLOX-Nano → one JSON line per processed frame with its detections.
# The video plays once in real time (about 14 s), then perch stops by itself.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
cargo build --release --locked
exec ./target/release/perch run --config examples/demo.toml --print-detections "$@"
