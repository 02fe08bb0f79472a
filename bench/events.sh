#!/usr/bin/env bash
# Event pipeline benchmark: outbox append throughput (durable) vs raw fdatasync, drain rate to mosquitto vs
# rumqttc from memory, and frame → subscriber latency through the whole service. See benches/events.rs.
#
#   bash bench/events.sh                  # 5 rounds, each side alternating first
#   BENCH_SMOKE=1 bash bench/events.sh    # 2 rounds of small inputs: that it runs (CI; read by benches/events.rs)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || { echo "run scripts/setup.sh first" >&2; exit 1; }
# shellcheck source=/dev/null
source .local/env
cargo build --release --locked
cargo bench --locked --bench events
