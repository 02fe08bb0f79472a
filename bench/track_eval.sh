#!/usr/bin/env bash
# perch's tracker against norfair (the tracker Frigate uses; with its IoU distance, and with the distance
# Frigate configures) on the same detections: IDF1, MOTA and ID
# switches from motmetrics, at 5 and 2 frames a second, on the real pedestrian trajectories (ground truth
# of TUD-Campus and TUD-Stadtmitte, MOTChallenge 2015) that ship inside the motmetrics package, and on own
# clips with known trajectories that perch's real detector runs on (bench/track_clip.py). See
# bench/track_eval.py for how the detections are derived and how both sides are run.
#
#   bash bench/track_eval.sh                  # 10 seeds x every subsampling phase, 5 and 2 fps
#   SEEDS=3 FPS=5 CLIPS=1 bash bench/track_eval.sh
#   BENCH_SMOKE=1 bash bench/track_eval.sh    # 1 seed, 5 fps: that it runs (CI)
#
# Exit status 3 when perch's IDF1 is below a peer's or its ID switches above, for some sequence and rate
# (not in smoke mode, which only shows that it runs).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[ -f .local/env ] || bash scripts/setup.sh
# shellcheck source=/dev/null
source .local/env
if [ "${BENCH_SMOKE:-0}" = 1 ]; then SEEDS=${SEEDS:-1}; FPS=${FPS:-5}; CLIPS=${CLIPS:-1}; fi
VENV=$ROOT/.local/track-venv
if ! "$VENV/bin/python" -c "import motmetrics, norfair" 2>/dev/null; then
    echo "== setting up $VENV (motmetrics, norfair)" >&2
    python3 -m venv "$VENV" || { echo "cannot create a venv: on Debian, apt-get install python3-venv" >&2; exit 1; }
    "$VENV/bin/python" -m pip install --quiet motmetrics==1.4.0 norfair==2.3.0 >&2
fi
cargo build --release --locked -q
# The own clips are made once under .local/track-clip from the media setup installs.
mkdir -p .local/track-clip
exec "$VENV/bin/python" bench/track_eval.py --perch "$ROOT/target/release/perch" --seeds "${SEEDS:-10}" --fps "${FPS:-5,2}" \
    --clip .local/track-clip --clips "${CLIPS:-3}" --media "$PERCH_MEDIA" ${JSON:+--json "$JSON"} \
    ${BENCH_SMOKE:+--no-verdict}
