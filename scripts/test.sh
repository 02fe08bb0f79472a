#!/usr/bin/env bash
# Installs everything (scripts/setup.sh), then runs the whole test suite: formatting, lints, unit and
# end-to-end tests. Idempotent; this is what CI runs (.ci/run).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo build --release (the binary the VM appliance runs: tests/vm_appliance.rs)"
cargo build --locked --release
echo "== cargo test"
cargo test --locked --no-fail-fast
