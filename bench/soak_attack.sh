#!/usr/bin/env bash
# Soak under attack: perch (release build) runs the sample video as a looping camera with MQTT, HTTP and
# [ota], while bench/soak_attack.py sends the adversarial review's traffic mix for DURATION seconds. Its
# RSS is sampled every SAMPLE seconds; the script prints the samples, the peak, and the slope of a
# least-squares line over the whole run and over its second half (MB per 10 minutes). Afterwards it checks
# that perch still answers /health and a ping, and stops it cleanly.
#
#   bash bench/soak_attack.sh                 # 10 minutes
#   DURATION=120 bash bench/soak_attack.sh    # a shorter look
#   BENCH_SMOKE=1 bash bench/soak_attack.sh   # 20 s, for CI: checks the script runs and prints its figures
#
# Loopback only; everything it starts is stopped at exit. Needs scripts/setup.sh (model, ONNX Runtime,
# mosquitto, media).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=/dev/null
source .local/env
DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-10}
if [ "${BENCH_SMOKE:-0}" = 1 ]; then DURATION=20; SAMPLE=2; fi
PERCH=${PERCH:-}
if [ -z "$PERCH" ]; then
  cargo build --release --locked -q
  PERCH=$ROOT/target/release/perch
fi
WORK=$(mktemp -d /tmp/perch-soak.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQ=$(port); HTTP=$(port); SERVE=$(port)
VIDEO=${PERCH_MEDIA:-$ROOT/.local/media}/pedestrians-720p-gop1s.mp4

printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 5000\nuser root\n' "$MQ" > "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" >/dev/null 2>&1 & pids+=($!)

# The update server holds one crafted bundle: unsigned, with a 16 MiB manifest.
mkdir -p "$WORK/bundles"
python3 - "$WORK/bundles/huge.bundle" <<'EOF'
import struct, sys
entry = b'{"name":"a","size":0,"sha256":"","chunks":[]},'
body = b'{"format":1,"compatible":"soak","version":"9.0.0","created":"x","chunk_size":4096,"images":['
body += entry * ((16 * 1024 * 1024 - len(body) - 2) // len(entry))
body = body[:-1] + b']}'
with open(sys.argv[1], "wb") as f:
    f.write(b"PERCHBN1" + struct.pack("<I", len(body)) + body + bytes(384))
EOF
"$PERCH" fleet serve "$WORK/bundles" --listen "127.0.0.1:$SERVE" >/dev/null 2>&1 & pids+=($!)

mkdir -p "$WORK/slots"
head -c 1048576 /dev/urandom > "$WORK/slots/a.img"
cat > "$WORK/perch.toml" <<EOF
device_id = "soak"
state_dir = "$WORK/state"
[http]
listen = "127.0.0.1:$HTTP"
token = "soak-token-0123456789abcdef"
[mqtt]
url = "mqtt://127.0.0.1:$MQ"
health_interval_s = 5
[detector]
model = "$ROOT/models/yolox_nano.toml"
[[camera]]
id = "street"
source = "file://$VIDEO"
loop_file = true
detect_fps = 5
[ota]
backend = "file"
compatible = "soak"
keyring = "$ROOT/ota/dev-keys/dev-1.pub"
slot_a = "$WORK/slots/a.img"
slot_b = "$WORK/slots/b.img"
EOF
"$PERCH" run -c "$WORK/perch.toml" > "$WORK/perch.log" 2>&1 & PERCH_PID=$!; pids+=($PERCH_PID)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$HTTP/health" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$HTTP/health" >/dev/null || { echo "perch did not start:"; tail -20 "$WORK/perch.log"; exit 1; }
sleep 5  # the model loads and the camera runs before the first sample

python3 bench/soak_attack.py --http "$HTTP" --mqtt "$MQ" --prefix perch/soak --bundle-url "http://127.0.0.1:$SERVE/huge.bundle" \
  --seconds "$DURATION" & ATTACK=$!; pids+=($ATTACK)
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PERCH_PID/status"; }
echo "t_s rss_kib"
: > "$WORK/rss.txt"
t0=$(date +%s)
while kill -0 "$ATTACK" 2>/dev/null; do
  kill -0 "$PERCH_PID" 2>/dev/null || { echo "perch died:"; tail -30 "$WORK/perch.log"; exit 1; }
  now=$(( $(date +%s) - t0 )); r=$(rss); echo "$now $r" | tee -a "$WORK/rss.txt"
  sleep "$SAMPLE"
done
wait "$ATTACK"
# Still serving after the attack: liveness, and a command answered.
health=$(curl -fs -m 5 "http://127.0.0.1:$HTTP/health" || echo FAIL)
reply=$(timeout 20 mosquitto_sub -h 127.0.0.1 -p "$MQ" -t perch/soak/cmd/ping/result -C 1 & sleep 1; mosquitto_pub -h 127.0.0.1 -p "$MQ" -t perch/soak/cmd/ping -m '{"id":"after"}'; wait)
python3 - "$WORK/rss.txt" <<'EOF'
import sys
pts = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
def slope(p):
    if len(p) < 2:
        return float("nan")
    n = len(p); mx = sum(x for x, _ in p) / n; my = sum(y for _, y in p) / n
    den = sum((x - mx) ** 2 for x, _ in p)
    return sum((x - mx) * (y - my) for x, y in p) / den if den else float("nan")
mb = lambda k: k / 1024
half = [p for p in pts if p[0] >= pts[-1][0] / 2]
print("soak: %d samples over %.0f s; RSS first %.1f MB, peak %.1f MB, last %.1f MB" % (len(pts), pts[-1][0], mb(pts[0][1]), mb(max(y for _, y in pts)), mb(pts[-1][1])))
print("soak: RSS slope %.2f MB/10min over the run, %.2f MB/10min over its second half" % (mb(slope(pts)) * 600, mb(slope(half)) * 600))
EOF
# No peer here: the ratio is perch against itself, RSS at the end over RSS when the attack began (1x: no growth).
python3 bench/ratio.py "RSS end/start of the attack" "$(tail -1 "$WORK/rss.txt" | cut -d' ' -f2)" "$(head -1 "$WORK/rss.txt" | cut -d' ' -f2)"
echo "soak: after the attack /health says '${health//$'\n'/}' and the ping reply is ${reply:-missing}"
grep -c 'WARN\|ERROR' "$WORK/perch.log" | xargs printf 'soak: %s warning/error lines in the log\n'
kill -TERM "$PERCH_PID"; wait "$PERCH_PID" || true
[ "$health" = ok ] && [ -n "$reply" ]
