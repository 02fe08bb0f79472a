"""perch's tracker against norfair (the tracker Frigate uses) on the same detections, scored with motmetrics.

Two kinds of input. (1) Derived detections on real trajectories, below. (2) With --clip: own clips with
known trajectories (bench/track_clip.py: real walkers' pictures moved over a real plaza, encoded to H.264)
on which perch's real detector runs; both trackers get its boxes.

Ground truth: the real pedestrian trajectories shipped inside the motmetrics package (TUD-Campus and
TUD-Stadtmitte of MOTChallenge 2015, 640x480 at 25 fps). Each sequence is taken at FPS frames a second
(every phase of the subsampling), and detections are derived from its ground truth per seed: boxes jittered
(centre and size by a few percent of the size), some missed, some weak (an occluded walker: scored below
min_score), and false boxes scattered in. Both trackers get the same detections of each run; each reports,
per frame, the tracks it matched in that frame with the detection's box, so the scores differ only by who
was linked to whom. motmetrics then gives IDF1, MOTA and ID switches over all runs of a sequence and rate.

perch: `perch track --format mot` with its defaults (min_score 0.5, low_score 0.1). Two peers, both norfair
2.3.0 given the detections from min_score on (norfair has no second stage), the same confirmation (3
sightings) and the same persistence (end_after_s, 3 s, in frames at the rate): "norfair" with its IoU
distance (links boxes that overlap by 0.3), and "frigate", norfair with the distance Frigate gives it
(size-relative, threshold 2.5; see frigate_distance). The verdict (exit 3 where perch is behind) is over
both.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

import motmetrics as mm
import numpy as np
from norfair import Detection, Tracker

import track_clip
from ratio import ratio_line

# norfair warns, once per tracker, that a distance written in Python is slower than its built-in ones.
logging.getLogger().setLevel(logging.ERROR)

MIN_SCORE = 0.5
MIN_HITS = 3
END_AFTER_S = 3.0
SOURCE_FPS = 25
SIZE = (640, 480)


def load_gt(path):
    """frame -> list of (id, [x1, y1, x2, y2])."""
    gt = {}
    for row in np.loadtxt(path, delimiter=","):
        frame, tid, x, y, w, h = int(row[0]), int(row[1]), *row[2:6]
        gt.setdefault(frame, []).append((tid, [x, y, x + w, y + h]))
    return gt


def derive(gt_frames, rng, miss, weak, false_rate):
    """Detections for each frame: (box, score) lists."""
    out = []
    for objs in gt_frames:
        dets = []
        for _, (x1, y1, x2, y2) in objs:
            w, h = x2 - x1, y2 - y1
            r = rng.random()
            if r < miss:
                continue
            score = rng.uniform(0.2, MIN_SCORE - 0.01) if r < miss + weak else rng.uniform(MIN_SCORE, 0.95)
            cx, cy = (x1 + x2) / 2 + rng.normal(0, 0.04 * w), (y1 + y2) / 2 + rng.normal(0, 0.04 * h)
            w, h = w * rng.normal(1, 0.05), h * rng.normal(1, 0.05)
            dets.append(([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], score))
        for _ in range(rng.poisson(false_rate)):
            h = rng.uniform(80, 250)
            w = h * rng.uniform(0.35, 0.5)
            x, y = rng.uniform(0, SIZE[0] - w), rng.uniform(0, SIZE[1] - h)
            dets.append(([x, y, x + w, y + h], rng.uniform(0.3, 0.65)))
        out.append(dets)
    return out


def run_perch(perch, dets, fps, work, size=SIZE):
    path = os.path.join(work, "det.txt")
    with open(path, "w") as f:
        for i, frame in enumerate(dets, start=1):
            for (x1, y1, x2, y2), s in frame:
                f.write(f"{i},-1,{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.3f},-1,-1,-1\n")
    res = subprocess.run([perch, "track", "--format", "mot", "--fps", str(fps), "--size", f"{size[0]}x{size[1]}",
                          "--min-score", str(MIN_SCORE), path], capture_output=True, text=True, check=True)
    hyps = {i: [] for i in range(1, len(dets) + 1)}
    for line in res.stdout.splitlines():
        v = json.loads(line)
        if "tracks" in v:
            hyps[v["seq"]] = [(t["track_id"], t["box"]) for t in v["tracks"] if t["state"] == "confirmed"]
    return hyps


def run_norfair(dets, fps, peer="norfair"):
    distance, threshold = PEERS[peer]
    tracker = Tracker(distance_function=distance, distance_threshold=threshold, initialization_delay=MIN_HITS - 1,
                      hit_counter_max=max(1, round(END_AFTER_S * fps)))
    hyps = {}
    for i, frame in enumerate(dets, start=1):
        ds = [Detection(np.array([[b[0], b[1]], [b[2], b[3]]]), scores=np.array([s, s])) for b, s in frame if s >= MIN_SCORE]
        objs = tracker.update(detections=ds)
        # Tracks matched in this frame, with the detection's box (as perch reports them).
        hyps[i] = [(o.id, o.last_detection.points.reshape(-1).tolist()) for o in objs if any(o.last_detection is d for d in ds)]
    return hyps


def frigate_distance(detection, tracked):
    """The distance Frigate gives norfair (frigate/track/norfair_tracker.py), written here from what it
    measures: the bottom centre's move as a share of the estimate's width and height, and how much wider
    or taller one box is than the other, as one Euclidean length. Frigate links below 2.5."""
    det, est = detection.points, tracked.estimate
    dw, dh = np.maximum(np.diff(det, axis=0).flatten(), 1.0)
    ew, eh = np.maximum(np.diff(est, axis=0).flatten(), 1.0)
    dx = (det[:, 0].mean() - est[:, 0].mean()) / ew
    dy = (det[:, 1].max() - est[:, 1].max()) / eh
    return float(np.linalg.norm([dx, dy, max(dw, ew) / min(dw, ew) - 1.0, max(dh, eh) / min(dh, eh) - 1.0]))


# The peers: norfair with its IoU distance (links boxes that overlap by 0.3), and norfair as Frigate
# configures it (its own size-relative distance, threshold 2.5).
PEERS = {"norfair": ("iou", 0.7), "frigate": (frigate_distance, 2.5)}


def accumulate(acc, gt_frames, hyps, run):
    """Adds one run; ids are offset per run, so a walker of one run is not the same identity in the next."""
    base = run * 100_000
    for i, objs in enumerate(gt_frames, start=1):
        g = [b for _, b in objs]
        h = [b for _, b in hyps.get(i, [])]
        to_xywh = lambda bs: np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in bs]).reshape(-1, 4)
        dist = mm.distances.iou_matrix(to_xywh(g), to_xywh(h), max_iou=0.5)
        acc.update([base + t for t, _ in objs], [base + t for t, _ in hyps.get(i, [])], dist)


def score(rows, accs, seq, fps, runs):
    mh = mm.metrics.create()
    for side, acc in accs.items():
        s = mh.compute(acc, metrics=["idf1", "mota", "recall", "num_switches", "num_fragmentations"], name=side)
        rows.append({"sequence": seq, "fps": fps, "tracker": side, "runs": runs,
                     "idf1": float(s["idf1"].iloc[0]), "mota": float(s["mota"].iloc[0]), "recall": float(s["recall"].iloc[0]),
                     "id_switches": int(s["num_switches"].iloc[0]), "fragmentations": int(s["num_fragmentations"].iloc[0])})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--perch", required=True)
    ap.add_argument("--fps", default="5,2")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--miss", type=float, default=0.1)
    ap.add_argument("--weak", type=float, default=0.15)
    ap.add_argument("--false-rate", type=float, default=0.3, help="false boxes per frame")
    ap.add_argument("--json")
    ap.add_argument("--no-verdict", action="store_true", help="exit 0 even where perch is behind (smoke mode: that it runs)")
    ap.add_argument("--clip", help="folder for the own clips (made once); without it, only the TUD sequences")
    ap.add_argument("--clips", type=int, default=3, help="how many own clips (each its own walkers and paths)")
    ap.add_argument("--media", help="folder with pedestrians-frame.jpg and pedestrians-720p-gop1s.mp4 (for --clip)")
    args = ap.parse_args()
    data = os.path.join(os.path.dirname(mm.__file__), "data")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seq in ("TUD-Campus", "TUD-Stadtmitte"):
            gt = load_gt(os.path.join(data, seq, "gt.txt"))
            last = max(gt)
            for fps in (float(f) for f in args.fps.split(",")):
                step = round(SOURCE_FPS / fps)
                accs = {side: mm.MOTAccumulator(auto_id=True) for side in ("perch", *PEERS)}
                runs = 0
                for phase in range(step):
                    frames = [gt.get(f, []) for f in range(1 + phase, last + 1, step)]
                    for seed in range(args.seeds):
                        rng = np.random.default_rng(seed * 1000 + phase)
                        dets = derive(frames, rng, args.miss, args.weak, args.false_rate)
                        accumulate(accs["perch"], frames, run_perch(args.perch, dets, fps, work), runs)
                        for peer in PEERS:
                            accumulate(accs[peer], frames, run_norfair(dets, fps, peer), runs)
                        runs += 1
                score(rows, accs, seq, fps, runs)
        if args.clip:
            # The own clip (bench/track_clip.py): the real detector's boxes on known trajectories.
            clips = [track_clip.make(args.perch, args.media, args.clip, seed) for seed in range(1, args.clips + 1)]
            for fps in (float(f) for f in args.fps.split(",")):
                accs = {side: mm.MOTAccumulator(auto_id=True) for side in ("perch", *PEERS)}
                for run, (video, gt) in enumerate(clips):
                    sampled = track_clip.detect(args.perch, video, fps)
                    frames = [gt.get(f, []) for f, _ in sampled]
                    dets = [d for _, d in sampled]
                    accumulate(accs["perch"], frames, run_perch(args.perch, dets, fps, work, track_clip.SIZE), run)
                    for peer in PEERS:
                        accumulate(accs[peer], frames, run_norfair(dets, fps, peer), run)
                score(rows, accs, "own clips+model", fps, len(clips))
    # recall: the share of ground-truth boxes a track covered (a tracker that tracks nothing switches nothing).
    print(f"{'sequence':16} {'fps':>4} {'tracker':8} {'runs':>5} {'IDF1':>7} {'MOTA':>7} {'recall':>7} {'IDsw':>6} {'frag':>6}")
    for r in rows:
        print(f"{r['sequence']:16} {r['fps']:>4g} {r['tracker']:8} {r['runs']:>5} {r['idf1']:7.3f} {r['mota']:7.3f} {r['recall']:7.3f} "
              f"{r['id_switches']:6d} {r['fragmentations']:6d}")
    ok = True
    sides = 1 + len(PEERS)
    for i in range(0, len(rows), sides):
        p = rows[i]
        for n in rows[i + 1:i + sides]:
            good = p["idf1"] >= n["idf1"] and p["id_switches"] <= n["id_switches"]
            ok &= good
            # Switches per unit of recall: a tracker that covers less of the ground truth has fewer chances
            # to switch; this says how often each switches for what it tracks (printed, not judged).
            per = lambda r: r["id_switches"] / max(r["recall"], 1e-9)
            peer = n["tracker"]
            print(f"{p['sequence']} at {p['fps']:g} fps: IDF1 perch/{peer} {p['idf1'] / max(n['idf1'], 1e-9):.3f}x, "
                  f"ID switches {p['id_switches']} vs {n['id_switches']} (per unit of recall {per(p):.0f} vs {per(n):.0f})"
                  f"{'' if good else '  <- perch behind'}")
            # The scores are deterministic (same detections, same seeds): one round, no spread to show.
            print(ratio_line(f"{p['sequence']} {p['fps']:g} fps IDF1 perch/{peer}", [p["idf1"]], [max(n["idf1"], 1e-9)], goal=">=1"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    sys.exit(0 if ok or args.no_verdict else 3)


if __name__ == "__main__":
    main()
