#!/usr/bin/env bash
# Fleet rollout at scale: N simulated device agents (`perch fleet simulate`: the real OTA agent, install
# with signature and chunk checks, state machine and file slots, one MQTT connection each) on one local
# mosquitto, a signed bundle served by `perch fleet serve`, and `perch fleet rollout` through waves.
#
#   bash bench/fleet_rollout.sh                       # 1000 devices, waves 1,10,50,100
#   DEVICES=2000 WAVES=5,25,100 bash bench/fleet_rollout.sh
#   PERCH=/path/to/another/perch bash bench/fleet_rollout.sh
#   BENCH_SMOKE=1 bash bench/fleet_rollout.sh         # 50 devices, waves 10,100: that it runs (CI)
#
# Reports the time per wave (from the rollout's own table), the broker's message counts over the rollout
# ($SYS/broker/messages/{received,sent}), and the peak RSS of the orchestrator and of the simulator. There is
# no peer to run beside it: its ratio line is the devices that committed the release over those targeted
# (counted from the devices' own retained states after the rollout, not from the orchestrator's table).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ "${BENCH_SMOKE:-0}" = 1 ]; then DEVICES=${DEVICES:-50}; WAVES=${WAVES:-10,100}; fi
DEVICES=${DEVICES:-1000}
WAVES=${WAVES:-1,10,50,100}
PERCH=${PERCH:-$ROOT/target/release/perch}
WORK=${WORK:-$(mktemp -d -p /var/tmp perch-fleet-bench.XXXXXX)}
MQTT_PORT=${MQTT_PORT:-$((20000 + RANDOM % 20000))}
HTTP_PORT=$((MQTT_PORT + 1))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
[ "$PERCH" != "$ROOT/target/release/perch" ] || cargo build --release --locked -q

printf 'listener %s 127.0.0.1\nallow_anonymous true\nsys_interval 1\nmax_queued_messages 100000\nuser root\n' "$MQTT_PORT" >"$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
mkdir -p "$WORK/bundles"
head -c 65536 /dev/urandom >"$WORK/rootfs.img"
"$PERCH" bundle build --compatible perch-sim --version 2.0.0 --image "rootfs=$WORK/rootfs.img" --key ota/dev-keys/dev-1.key -o "$WORK/bundles/good.bundle" >/dev/null
"$PERCH" fleet serve "$WORK/bundles" --listen "127.0.0.1:$HTTP_PORT" >/dev/null 2>&1 &
pids+=($!)
sleep 1
/usr/bin/time -f "simulator peak RSS: %M KiB" -o "$WORK/sim.time" \
    "$PERCH" fleet simulate --devices "$DEVICES" --state-dir "$WORK/devices" --broker "mqtt://127.0.0.1:$MQTT_PORT" \
    --keyring ota/dev-keys/dev-1.pub >"$WORK/sim.log" 2>&1 &
SIM=$!
pids+=($SIM)
touch "$WORK/sim.log"
start=$(date +%s.%N)
until grep -q READY "$WORK/sim.log"; do sleep 0.2; kill -0 $SIM || { cat "$WORK/sim.log"; exit 1; }; done
echo "$DEVICES agents connected in $(echo "$(date +%s.%N) - $start" | bc) s"

sys() { mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -C 1 -W 5 -t "\$SYS/broker/messages/$1"; }
sleep 2
r0=$(sys received) s0=$(sys sent)
start=$(date +%s.%N)
/usr/bin/time -f "orchestrator peak RSS: %M KiB, CPU %U s user %S s sys" -o "$WORK/rollout.time" \
    "$PERCH" fleet rollout --broker "mqtt://127.0.0.1:$MQTT_PORT" --bundle "http://127.0.0.1:$HTTP_PORT/good.bundle" \
    --devices 'sim-*' --waves "$WAVES" --max-failures 2% --wave-timeout 300s --state "$WORK/rollout.json" | tee "$WORK/rollout.log" |
    grep -E 'rollout|pending  \[' | awk '/ 0 pending/ || /rollout/'
end=$(date +%s.%N)
sleep 2
r1=$(sys received) s1=$(sys sent)
echo "rollout wall time: $(echo "$end - $start" | bc) s (includes discovering the devices from retained states)"
echo "broker messages during the rollout: $((r1 - r0)) received, $((s1 - s0)) sent (includes \$SYS and retained replays to the orchestrator)"
cat "$WORK/rollout.time"
# From outside: the devices' retained ota/state as a plain subscriber sees them.
timeout 20 mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t 'perch/+/ota/state' -v -W 3 >"$WORK/states.txt" 2>/dev/null || true
committed=$(python3 - "$WORK/states.txt" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    topic, _, payload = line.partition(" ")
    try:
        s = json.loads(payload)
    except ValueError:
        continue
    # Committed: the health gate passed on the new release, which the device now runs.
    n += s.get("phase") == "committed" and s.get("version") == "2.0.0" and s.get("running_version") == "2.0.0"
print(n)
PY
)
python3 bench/ratio.py "devices committed/targeted" "$committed" "$DEVICES" --goal '>=1'
# /usr/bin/time does not pass signals on: stop the simulator itself (its pid is time's child).
kill -INT "$(pgrep -P $SIM)"; wait $SIM 2>/dev/null || true
cat "$WORK/sim.time"
