#!/usr/bin/env bash
# Every benchmark in smoke mode (BENCH_SMOKE=1: a few iterations, small inputs), one after the other: CI runs
# this (scripts/test.sh) so that no bench rots unnoticed. A bench fails here when it exits non-zero, runs past
# its time limit, or prints no ratio line (`ratio NAME: 0.93x (rounds …; spread …)`, bench/ratio.py), or a
# ratio line not in that form (a negative or missing figure). Smoke figures are not measurements: full runs
# stay manual, on a quiet machine (bench/README.md).
#
#   bash bench/smoke.sh                 # all of them
#   bash bench/smoke.sh ota_install record
#
# Every bench/*.sh is a bench except the helpers listed in HELPERS; a new script is run here from the day it
# is added, and fails if it has no smoke mode. Logs: target/test-artifacts/bench-smoke/NAME.log.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
HELPERS=" smoke venv rauc_side "
LIMIT_S=${LIMIT_S:-600}
LOGS=$ROOT/target/test-artifacts/bench-smoke
mkdir -p "$LOGS"
if [ $# -gt 0 ]; then names=("$@"); else
  names=()
  for f in bench/*.sh; do
    n=$(basename "$f" .sh)
    [[ "$HELPERS" == *" $n "* ]] || names+=("$n")
  done
fi
# A bench dies on `set -e` without a word; this trap, sourced by every bash it starts, names the command.
err_trap=$LOGS/.err-trap.sh
# shellcheck disable=SC2016
echo 'trap '\''echo "${BASH_SOURCE[0]:-bash}: line $LINENO: \`$BASH_COMMAND\` exited $?" >&2'\'' ERR' >"$err_trap"
failed=()
for n in "${names[@]}"; do
  log=$LOGS/$n.log
  if ! grep -q BENCH_SMOKE "bench/$n.sh"; then
    echo "FAIL $n: no smoke mode (BENCH_SMOKE=1) in bench/$n.sh: give it one (a few iterations, small inputs)"
    failed+=("$n")
    continue
  fi
  start=$(date +%s)
  BASH_ENV=$err_trap BENCH_SMOKE=1 timeout --kill-after=10 "$LIMIT_S" bash "bench/$n.sh" >"$log" 2>&1
  rc=$?
  secs=$(($(date +%s) - start))
  good='^ *ratio [^:]+: [0-9.]+x \(rounds [0-9. ]+; spread [0-9.]+\.\.[0-9.]+\)'
  ratios=$(grep -E "$good" "$log")
  bad=$(grep -E '^ *ratio ' "$log" | grep -vE "$good")
  if [ "$rc" -ne 0 ]; then
    why="exit $rc$([ "$rc" = 124 ] && echo " (ran past ${LIMIT_S} s)")"
  elif [ -z "$ratios" ]; then
    why="printed no ratio line"
  elif [ -n "$bad" ]; then
    why="printed a ratio line that is not a positive figure with its rounds: $bad"
  else
    echo "ok   $n (${secs} s)"
    echo "$ratios" | sed 's/^ */       /'
    continue
  fi
  echo "FAIL $n (${secs} s): $why; the end of its output ($log):"
  tail -25 "$log" | sed 's/^/       /'
  failed+=("$n")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench smoke: ${#failed[@]} of ${#names[@]} failed: ${failed[*]}"
  exit 1
fi
echo "bench smoke: all ${#names[@]} ran and printed their ratios"
