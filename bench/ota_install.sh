#!/usr/bin/env bash
# OTA install throughput: a signed bundle with one 1 GiB image streamed by `perch ota install` into a file
# slot (signature check, SHA-256 of every chunk against the manifest, write, fsync, flag and state writes),
# next to the physical limit measured in the same run on the same bytes: a raw sequential read → write of the
# bundle with SHA-256 computed on the way (`dd | tee SLOT | openssl dgst -sha256`, then `sync SLOT`; openssl
# uses the CPU's SHA instructions, coreutils' sha256sum does not, so it is shown too), and the disk alone
# (`dd conv=fsync`, no hashing).
#
#   bash bench/ota_install.sh                 # 1 GiB, 3 rounds
#   SIZE_MIB=256 ROUNDS=5 bash bench/ota_install.sh
#
# Goal: perch ≥ 0.8× the limit (single pass over the payload). WORK picks the folder (default: a new one
# under /var/tmp, on disk rather than tmpfs); it is removed at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-3}
WORK=${WORK:-$(mktemp -d -p /var/tmp perch-ota-bench.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT

cargo build --release --locked
PERCH=$ROOT/target/release/perch
now() { date +%s.%N; }

echo "making a ${SIZE_MIB} MiB random image and its bundle in $WORK" >&2
head -c "${SIZE_MIB}M" /dev/urandom >"$WORK/rootfs.img"
"$PERCH" bundle build --compatible bench --version 2.0.0 --image "rootfs=$WORK/rootfs.img" --key ota/dev-keys/dev-1.key -o "$WORK/bench.bundle" >/dev/null
rm -f "$WORK/rootfs.img"
BYTES=$(stat -c %s "$WORK/bench.bundle")
cat >"$WORK/perch.toml" <<EOF
device_id = "bench"
state_dir = "$WORK/state"
[ota]
backend = "file"
compatible = "bench"
keyring = "$ROOT/ota/dev-keys/dev-1.pub"
slot_a = "$WORK/slot-a.img"
slot_b = "$WORK/slot-b.img"
EOF
: >"$WORK/slot-a.img"
# Warm the page cache with the bundle so both sides read it from memory: the comparison is about the work
# on the bytes and the write to disk, not the first read.
cat "$WORK/bench.bundle" >/dev/null

HASH=(openssl dgst -sha256)
command -v openssl >/dev/null || HASH=(sha256sum)

# The limit: read, write and hash the same bytes in one sequential pass, synced (hash: $1...).
limit() {
  rm -f "$WORK/slot-b.img"
  sync
  local t0 t1
  t0=$(now)
  dd if="$WORK/bench.bundle" bs=1M status=none | tee "$WORK/slot-b.img" | "$@" >/dev/null
  sync "$WORK/slot-b.img"
  t1=$(now)
  echo "$t0 $t1" | awk '{print $2 - $1}'
}

# The disk alone: the same bytes written and synced, no hashing.
disk() {
  rm -f "$WORK/slot-b.img"
  sync
  local t0 t1
  t0=$(now)
  dd if="$WORK/bench.bundle" of="$WORK/slot-b.img" bs=1M conv=fsync status=none
  t1=$(now)
  echo "$t0 $t1" | awk '{print $2 - $1}'
}

install() {
  rm -rf "$WORK/slot-b.img" "$WORK/state"
  sync
  local t0 t1
  t0=$(now)
  PERCH_LOG=warn "$PERCH" ota install --quiet -c "$WORK/perch.toml" "$WORK/bench.bundle" >/dev/null
  t1=$(now)
  echo "$t0 $t1" | awk '{print $2 - $1}'
}

L=()
P=()
S=()
D=()
for r in $(seq 1 "$ROUNDS"); do
  # Alternate which goes first, so drift in the machine hits both alike.
  if [ $((r % 2)) -eq 1 ]; then
    L+=("$(limit "${HASH[@]}")")
    P+=("$(install)")
  else
    P+=("$(install)")
    L+=("$(limit "${HASH[@]}")")
  fi
  S+=("$(limit sha256sum)")
  D+=("$(disk)")
  echo "round $r: limit ${L[-1]} s, perch ${P[-1]} s, limit with sha256sum ${S[-1]} s, disk alone ${D[-1]} s" >&2
done
install >/dev/null # leave the slot as perch wrote it, for the check below
cmp -s <(tail -c "$((SIZE_MIB << 20))" "$WORK/bench.bundle") "$WORK/slot-b.img" || { echo "slot B does not hold the image" >&2; exit 1; }

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ML=$(median "${L[@]}")
MP=$(median "${P[@]}")
MS=$(median "${S[@]}")
MD=$(median "${D[@]}")
awk -v b="$BYTES" -v l="$ML" -v p="$MP" -v s="$MS" -v d="$MD" -v n="$ROUNDS" -v cpu="$(nproc)" -v h="${HASH[*]}" 'BEGIN {
  m = b / 1048576
  printf "bundle %.0f MiB, %d rounds, %d CPUs, medians:\n", m, n, cpu
  printf "  limit: dd | tee slot | %-18s; sync  %6.2f s  %7.1f MiB/s\n", h, l, m / l
  printf "  perch ota install                               %6.2f s  %7.1f MiB/s\n", p, m / p
  printf "  (limit with coreutils sha256sum                 %6.2f s  %7.1f MiB/s)\n", s, m / s
  printf "  (disk alone: dd conv=fsync, no hashing          %6.2f s  %7.1f MiB/s)\n", d, m / d
  r = l / p
  printf "  perch / limit throughput: %.2fx  (goal >= 0.8x: %s)\n", r, (r >= 0.8) ? "met" : "NOT met"
}'
