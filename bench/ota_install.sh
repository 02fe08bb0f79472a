#!/usr/bin/env bash
# OTA install throughput: a signed bundle with one random image streamed by `perch ota install` into a file
# slot (signature check, SHA-256 of every chunk against the manifest, write with early writeback, fsync,
# flag and state writes), side by side in one invocation with:
#
# - the limit (examples/ota_limit.rs): the same bundle read once, each byte hashed once with SHA-256 (the
#   same sha2 crate), written with the same writeback as perch (1 MiB writes from a second thread,
#   sync_file_range every 8 MiB, one fsync at the end), nothing else. perch does strictly more work (the
#   signature, the manifest, state and flag writes), so it should not beat it by more than the noise.
# - RAUC (Debian's rauc, bench/rauc_side.sh): `rauc install` of a plain bundle holding the same image into a
#   raw file slot (bootloader=noop), its service started once before the rounds, as on a device. Skipped,
#   with a line saying so, when rauc is not installed (scripts/setup.sh installs it).
#
#   bash bench/ota_install.sh                 # 1 GiB, 5 rounds
#   SIZE_MIB=256 ROUNDS=3 bash bench/ota_install.sh
#   BENCH_SMOKE=1 bash bench/ota_install.sh   # 32 MiB, 2 rounds: that it runs (CI)
#   PERCH_BASELINE=/path/to/older/perch bash bench/ota_install.sh   # adds that build as a side, "before"
#
# Each round runs every side once, in an order that rotates from round to round; before each side the slot
# is removed, `sync` flushes what the previous side left, and the bundle is read into the page cache, so
# each side starts from the same state and pays its own writeback. Every side starts a process (perch's CLI,
# the limit's binary, RAUC's client) and is timed from its start to its exit. Prints each side's median and the ratio
# lines (bench/ratio.py): perch's throughput over the limit's (goal >= 0.8x) and over RAUC's. WORK picks the
# folder (default: a new one under /var/tmp, on disk rather than tmpfs); it is removed at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ "${BENCH_SMOKE:-0}" = 1 ]; then SIZE_MIB=${SIZE_MIB:-32}; ROUNDS=${ROUNDS:-2}; fi
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-5}
WORK=${WORK:-$(mktemp -d -p /var/tmp perch-ota-bench.XXXXXX)}
RAUC=$ROOT/bench/rauc_side.sh
trap 'bash "$RAUC" stop "$WORK" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

cargo build --release --locked -q --bin perch --example ota_limit
PERCH=$ROOT/target/release/perch
LIMIT=$ROOT/target/release/examples/ota_limit
now() { date +%s.%N; }

echo "making a ${SIZE_MIB} MiB random image and its bundles in $WORK" >&2
head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/rootfs.img"
"$PERCH" bundle build --compatible bench --version 2.0.0 --image "rootfs=$WORK/rootfs.img" --key ota/dev-keys/dev-1.key -o "$WORK/bench.bundle" >/dev/null
cat >"$WORK/perch.toml" <<CONF
device_id = "bench"
state_dir = "$WORK/state"
[ota]
backend = "file"
compatible = "bench"
keyring = "$ROOT/ota/dev-keys/dev-1.pub"
slot_a = "$WORK/slot-a.img"
slot_b = "$WORK/slot-b.img"
CONF
: >"$WORK/slot-a.img"
SIDES=(perch limit)
[ -z "${PERCH_BASELINE:-}" ] || SIDES+=(before)
if command -v rauc >/dev/null; then
  bash "$RAUC" prepare "$WORK/rauc" "$WORK/rootfs.img"
  SIDES+=(rauc)
else
  echo "rauc: not installed, its side is left out (apt-get install rauc squashfs-tools dbus)" >&2
fi

# Every side starts from the same state: nothing dirty left by the side before, its input in the page cache.
fresh() {
  rm -rf "$WORK/slot-b.img" "$WORK/limit.img" "$WORK/state"
  sync
  cat "$@" >/dev/null
}

run_side() {
  local t0
  case $1 in
    perch | before)
      local bin=$PERCH
      [ "$1" = perch ] || bin=$PERCH_BASELINE
      fresh "$WORK/bench.bundle"
      t0=$(now)
      PERCH_LOG=warn "$bin" ota install --quiet -c "$WORK/perch.toml" "$WORK/bench.bundle" >/dev/null
      ;;
    limit)
      fresh "$WORK/bench.bundle"
      t0=$(now)
      "$LIMIT" "$WORK/bench.bundle" "$WORK/limit.img" >/dev/null
      ;;
    rauc)
      fresh "$WORK/rauc/bench.raucb"
      t0=$(now)
      bash "$RAUC" install "$WORK/rauc"
      ;;
  esac
  echo "$t0 $(now)" | awk '{printf "%.3f", $2 - $1}'
}

declare -A T
for r in $(seq 1 "$ROUNDS"); do
  n=${#SIDES[@]}
  line="round $r:"
  for i in $(seq 0 $((n - 1))); do
    side=${SIDES[$(((i + r - 1) % n))]}
    t=$(run_side "$side")
    T[$side]="${T[$side]:-} $t"
    line="$line $side $t s,"
  done
  echo "${line%,}" >&2
done
# Each side starts by removing perch's slot: install once more, untimed, to check what it wrote. RAUC's
# slot holds its last install.
run_side perch >/dev/null
cmp -s "$WORK/rootfs.img" "$WORK/slot-b.img" || { echo "perch's slot B does not hold the image" >&2; exit 1; }
if [ -n "${T[rauc]:-}" ]; then bash "$RAUC" verify "$WORK/rauc" "$WORK/rootfs.img"; fi

BYTES=$(stat -c %s "$WORK/bench.bundle")
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
echo "bundle $((BYTES >> 20)) MiB, $ROUNDS rounds, $(nproc) CPUs; median seconds and MiB/s:"
for side in "${SIDES[@]}"; do
  # shellcheck disable=SC2086
  m=$(median ${T[$side]})
  awk -v s="$side" -v m="$m" -v b="$BYTES" 'BEGIN { printf "  %-6s %7.2f s  %7.1f MiB/s\n", s, m, b / 1048576 / m }'
done
# Throughput ratios are time ratios inverted: limit time / perch time.
python3 bench/ratio.py "perch/limit throughput" "${T[limit]}" "${T[perch]}" --goal '>=0.8'
if [ -n "${T[rauc]:-}" ]; then python3 bench/ratio.py "perch/rauc throughput" "${T[rauc]}" "${T[perch]}"; fi
if [ -n "${T[before]:-}" ]; then python3 bench/ratio.py "perch/before throughput" "${T[before]}" "${T[perch]}"; fi
