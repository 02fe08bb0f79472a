#!/usr/bin/env python3
"""Attack traffic for bench/soak_attack.sh: the mix of the adversarial review, on loopback, bounded in time.

Each second it runs a few of these, in turn:
  - slowloris: keeps 32 HTTP connections trickling a header line every 10 s (reopened when closed);
  - HTTP: /status with wrong tokens, the status page under a foreign Host, a malformed request line;
  - MQTT: a 1 MB command, a 100 KB command, a burst of 200 pings, cmd/ota naming local paths and an
    unsigned bundle with a 16 MiB manifest on the update server, malformed JSON.
A retained 11 KB command sits on the broker throughout. It prints one line per minute of what it sent.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def http(port, request, timeout=5.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "-"
    except OSError:
        return "err"


def mqtt_pub(port, topic, *args):
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic, *args],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)


class Slowloris:
    def __init__(self, port, n=32):
        self.port, self.n, self.conns, self.opened = port, n, [], 0

    def tick(self, now):
        alive = []
        for s, last in self.conns:
            if now - last >= 10:
                try:
                    s.sendall(b"X-Trickle: 1\r\n")
                    last = now
                except OSError:
                    s.close()
                    continue
            alive.append((s, last))
        self.conns = alive
        while len(self.conns) < self.n:
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                self.conns.append((s, now))
                self.opened += 1
            except OSError:
                break


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--mqtt", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--bundle-url", required=True, help="URL of the crafted unsigned bundle")
    ap.add_argument("--seconds", type=float, required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="perch-soak-")
    files = {}
    for name, size in (("huge", 1_000_000), ("big", 100_000)):
        path = os.path.join(tmp, name + ".json")
        with open(path, "w") as f:
            f.write('{"id":"%s","pad":"%s"}' % (name, "y" * size))
        files[name] = path
    burst = os.path.join(tmp, "burst.txt")
    with open(burst, "w") as f:
        for i in range(200):
            f.write('{"id":"b%d"}\n' % i)
    fifo = os.path.join(tmp, "fifo")
    os.mkfifo(fifo)
    cmd = a.prefix + "/cmd/"
    mqtt_pub(a.mqtt, cmd + "ping", "-r", "-m", '{"id":"retained","pad":"%s"}' % ("x" * 11_000))
    slow = Slowloris(a.http)
    sent = {}
    start = time.time()
    last_report = start
    step = 0
    while time.time() - start < a.seconds:
        now = time.time()
        slow.tick(now)
        k = step % 10
        if k == 0:
            mqtt_pub(a.mqtt, cmd + "ping", "-f", files["huge"])
        elif k == 1:
            mqtt_pub(a.mqtt, cmd + "record", "-f", files["big"])
        elif k == 2:
            with open(burst) as lines:
                subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(a.mqtt), "-q", "1", "-t", cmd + "ping", "-l"],
                               stdin=lines, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
        elif k == 3:
            for url in ("/etc/shadow", "/proc/1/environ", fifo, "file:///etc/shadow"):
                mqtt_pub(a.mqtt, cmd + "ota", "-m", '{"op":"install","url":"%s","bundle_sha256":"%s","version":"9.0.0"}' % (url, "0" * 64))
        elif k == 4:
            mqtt_pub(a.mqtt, cmd + "ota", "-m", '{"op":"install","id":"u%d","url":"%s","bundle_sha256":"%s","version":"9.0.%d"}'
                     % (step, a.bundle_url, "0" * 64, step))
        elif k == 5:
            mqtt_pub(a.mqtt, cmd + "health", "-m", "{not json")
        elif k == 6:
            mqtt_pub(a.mqtt, cmd + "model", "-m", '{"op":"install","url":"%s","bundle_sha256":"%s","version":"%d"}' % (a.bundle_url, "0" * 64, step))
        for req in (b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n",
                    b"GET /page.json HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
                    b"\x16\x03\x01garbage\r\n\r\n",
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"):
            code = http(a.http, req)
            sent[code] = sent.get(code, 0) + 1
        step += 1
        if now - last_report >= 60:
            print("attack: %4.0f s  http answers %s  slowloris opened %d" % (now - start, dict(sorted(sent.items())), slow.opened), flush=True)
            last_report = now
        time.sleep(max(0.0, start + step * 1.0 - time.time()))
    mqtt_pub(a.mqtt, cmd + "ping", "-r", "-n")
    print("attack: done after %.0f s, %d steps" % (time.time() - start, step), flush=True)


if __name__ == "__main__":
    sys.exit(main())
