#!/usr/bin/env python3
"""Driver of bench/service_vs_python.sh: runs `perch run` and the Python peer (bench/python_service.py) on
the same cameras, alternating over rounds, and prints CPU, memory, frames and drops of each, and the ratios.

Both sides are charged alike: each is started, runs for --duration seconds of wall time from its launch
(start-up included), is stopped with SIGTERM and waited for; its CPU time is the user + system time of the
process and of every child it waited for (os.wait4), divided by --duration. Memory is sampled every 0.5 s
over the whole process tree: the sum of RSS (what `ps` shows) and the sum of PSS (shared pages divided
among the processes sharing them, the fair figure for several processes). Frames are counted from each
side's standard output, one line per detected frame.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ratio import ratio_line

ROOT = Path(__file__).resolve().parent.parent


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory(pids: list[int]) -> tuple[int, int]:
    """Sum of RSS and of PSS, in bytes."""
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


class Side:
    def __init__(self, name: str, argv: list[str], env: dict, metrics_url: str | None, camera_key):
        self.name, self.argv, self.env, self.metrics_url, self.camera_key = name, argv, env, metrics_url, camera_key


def manifest_for_old_builds(work: Path) -> Path:
    """The model manifest without the keys an earlier build refuses (`[input] rectangular`), pointing at
    the same ONNX file: a baseline build then runs the same model, as it did."""
    src = ROOT / "models/yolox_nano.toml"
    lines = [l for l in src.read_text().splitlines() if not l.startswith("rectangular")]
    lines = [f'file = "{src.parent / l.split("=", 1)[1].strip().strip(chr(34))}"' if l.startswith("file = ") else l for l in lines]
    out = work / "model.toml"
    out.write_text("\n".join(lines) + "\n")
    return out


def perch_config(work: Path, args, port: int, model: Path = ROOT / "models/yolox_nano.toml") -> Path:
    cams = []
    decode = f'decode = "{args.decode}"' if args.decode != "all" else ""
    for i in range(args.cameras):
        cams.append(f"""
[[camera]]
id = "cam{i}"
source = "file://{args.video}"
loop_file = true
detect_fps = {args.fps}
min_score = {args.min_score}
{decode}
[camera.cadence]
enabled = {str(args.cadence).lower()}
[camera.record]
enabled = {str(args.record).lower()}
""")
    extra = "\n".join(args.perch_set)
    cfg = work / "perch.toml"
    cfg.write_text(f"""device_id = "bench"
state_dir = "{work}/perch-state"
[http]
listen = "127.0.0.1:{port}"
[detector]
model = "{model}"
providers = ["cpu"]
intra_threads = {args.threads}
{extra}
[record]
dir = "{work}/perch-state/recordings"
""" + "".join(cams))
    return cfg


def scrape_drops(url: str) -> int | None:
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    return sum(int(float(m)) for m in re.findall(r'perch_camera_dropped_frames_total\{[^}]*reason="detector_busy"[^}]*\} (\S+)', text))


def run(side: Side, duration: float, work: Path) -> dict:
    stdout_lines: dict[str, int] = {}
    err_path = work / f"{side.name}.err"
    with open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(side.argv, stdout=subprocess.PIPE, stderr=err, env=side.env, cwd=ROOT)

        def count():
            for line in proc.stdout:
                try:
                    cam = str(side.camera_key(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue
                stdout_lines[cam] = stdout_lines.get(cam, 0) + 1

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        samples = []  # (seconds since launch, rss, pss)
        while (t := time.monotonic() - started) < duration:
            if proc.poll() is not None:
                break
            rss, pss = memory(tree(proc.pid))
            samples.append((t, rss, pss))
            time.sleep(min(0.5, max(0.0, duration - (time.monotonic() - started))))
        drops = scrape_drops(side.metrics_url) if side.metrics_url else None
        stopped_early = proc.poll() is not None
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        counter.join(timeout=10)
    if not stdout_lines:
        tail = err_path.read_text(errors="replace")[-2000:]
        sys.exit(f"{side.name} detected no frame in {duration} s: its log ends with\n{tail}")
    if stopped_early:
        tail = err_path.read_text(errors="replace")[-2000:]
        sys.exit(f"{side.name} exited before its {duration} s were up (exit {proc.returncode}):\n{tail}")
    if side.name == "python":
        try:
            summary = json.loads(err_path.read_text().strip().splitlines()[-1])
            drops = sum(summary["dropped_detector_busy"])
        except (ValueError, IndexError, KeyError):
            drops = None
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "cores": (usage.ru_utime + usage.ru_stime) / duration,
        "peak_rss": max((s[1] for s in samples), default=0),
        "peak_pss": max((s[2] for s in samples), default=0),
        "frames": sum(stdout_lines.values()),
        "per_camera": stdout_lines,
        "drops": drops,
        "samples": samples,
    }


def slope_mb_per_hour(samples: list) -> float:
    """Least-squares slope of RSS over the second half of the run (the first half holds the start-up)."""
    pts = samples[len(samples) // 2:]
    if len(pts) < 3:
        return float("nan")
    xs, ys = [p[0] for p in pts], [p[1] / 1e6 for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600 if den else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perch", required=True)
    ap.add_argument("--python", required=True, help="the venv's python, with onnxruntime, numpy, cv2")
    ap.add_argument("--video", required=True)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--cadence", action="store_true", help="perch's adaptive cadence on (default off: same work)")
    ap.add_argument("--decode", default="all")
    ap.add_argument("--sides", default="perch,python")
    ap.add_argument("--baseline", help="another perch binary (an earlier build), run as a third side, `before`")
    ap.add_argument("--perch-set", action="append", default=[], help="extra line for perch's [detector] table")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--json", type=Path, help="write every round's figures here")
    args = ap.parse_args()

    port = 18000 + os.getpid() % 1000
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    sides = {}
    work = args.work
    if "perch" in args.sides:
        cfg = perch_config(work, args, port)
        sides["perch"] = Side("perch", [args.perch, "run", "--config", str(cfg), "--print-detections"],
                              env, f"http://127.0.0.1:{port}/metrics", lambda v: v["camera"])
    if args.baseline:
        # Same configuration; options the earlier build does not know are left out of its copy.
        base_work = work / "before"
        base_work.mkdir(exist_ok=True)
        base_args = argparse.Namespace(**{**vars(args), "decode": "all", "perch_set": []})
        cfg = perch_config(base_work, base_args, port + 1, manifest_for_old_builds(base_work))
        sides["before"] = Side("before", [args.baseline, "run", "--config", str(cfg), "--print-detections"],
                               env, f"http://127.0.0.1:{port + 1}/metrics", lambda v: v["camera"])
    if "python" in args.sides:
        argv = [args.python, str(ROOT / "bench/python_service.py"), "--video", args.video, "--cameras", str(args.cameras),
                "--fps", str(args.fps), "--threads", str(args.threads), "--min-score", str(args.min_score)]
        if args.record:
            argv += ["--record", str(work / "python-segments")]
        sides["python"] = Side("python", argv, env, None, lambda v: v["camera"])

    names = list(sides)
    results: dict[str, list[dict]] = {n: [] for n in names}
    load_before = open("/proc/loadavg").read().split()[0]
    for r in range(args.rounds):
        # Each round starts with another side (two sides: alternating), so none always runs first.
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            for d in ("perch-state", "python-segments", "before/perch-state"):
                subprocess.run(["rm", "-rf", str(work / d)], check=True)
            res = run(sides[n], args.duration, work)
            results[n].append(res)
            print(f"round {r + 1}/{args.rounds} {n:<6}: {res['cores']:.3f} cores, peak RSS {res['peak_rss'] / 1e6:.0f} MB "
                  f"(PSS {res['peak_pss'] / 1e6:.0f} MB), {res['frames']} frames "
                  f"({res['frames'] / args.duration / args.cameras:.2f}/s per camera), detector_busy drops {res['drops']}",
                  flush=True)
    load_after = open("/proc/loadavg").read().split()[0]

    print()
    print(f"{args.cameras} cameras × {Path(args.video).name}, {args.fps:g} detection fps, recording "
          f"{'on' if args.record else 'off'}, {args.threads} intra-op thread(s), {args.duration:g} s × {args.rounds} "
          f"rounds alternating; load average {load_before} before, {load_after} after, on {os.cpu_count()} cores")
    med = {n: {k: statistics.median(r[k] for r in results[n]) for k in ("cores", "peak_rss", "peak_pss", "frames")} for n in names}
    rows = [("CPU (cores)", "cores", 1, "{:.3f}"), ("peak RSS (MB)", "peak_rss", 1e6, "{:.0f}"),
            ("peak PSS (MB)", "peak_pss", 1e6, "{:.0f}"), ("frames detected", "frames", 1, "{:.0f}")]
    pairs = [(a, b) for a, b in (("perch", "python"), ("perch", "before"), ("before", "python")) if a in names and b in names]
    print(f"  {'':<16}" + "".join(f"{n:>10}" for n in names) + "".join(f"{a + '/' + b:>16}" for a, b in pairs) + "   rounds (each ratio's, or the values)")
    for label, key, div, fmt in rows:
        vals = [med[n][key] / div for n in names]
        line = f"  {label:<16}" + "".join(f"{fmt.format(v):>10}" for v in vals)
        for a, b in pairs:
            ratio = med[a][key] / med[b][key] if med[b][key] else float("nan")
            line += f"{ratio:>15.3f}x"
        if pairs:
            a, b = pairs[0]
            line += "   " + " ".join(f"{results[a][i][key] / results[b][i][key]:.3f}" for i in range(args.rounds) if results[b][i][key])
        else:
            line += "   " + " ".join(fmt.format(r[key] / div) for r in results[names[0]])
        print(line)
    for n in names:
        drops = [r["drops"] for r in results[n]]
        print(f"  {n}: detector_busy drops per round {drops}; RSS slope over the second half "
              f"{statistics.median(slope_mb_per_hour(r['samples']) for r in results[n]):+.1f} MB/h")
    for a, b in pairs:
        for label, key in (("cpu", "cores"), ("peak RSS", "peak_rss"), ("peak PSS", "peak_pss")):
            print(ratio_line(f"{a}/{b} {label}", [r[key] for r in results[a]], [r[key] for r in results[b]]))
    if args.json:
        for n in names:
            for r in results[n]:
                r["samples"] = [[round(t, 2), rss, pss] for t, rss, pss in r["samples"]]
        args.json.write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
