"""An own clip with known trajectories, for the tracker evaluation with the real detector (bench/track_eval.py).

Walkers cut from a real photo (pedestrians-frame.jpg, the boxes perch's detector finds in it) are moved over
the empty plaza of the sample video (the per-pixel median of its frames, so the walkers of the video vanish;
the few who stood still stay, and are ground truth as standing people)
along straight paths at walking speeds, crossing and hiding each other (nearer walkers, lower in the picture,
are drawn last). The clip is encoded to H.264 at 25 fps; the ground truth is each walker's pasted box in each
frame. perch's detector then runs on the encoded video (`perch detect`), so the detections carry the real
model's misses, jitter and false boxes, and both trackers get the same ones.
"""

import functools
import json
import os
import subprocess

import numpy as np
from PIL import Image

FPS = 25
SIZE = (1280, 720)
SECONDS = 24
WALKERS = 14


def _frames(video, count):
    """`count` frames spread over `video`, as RGB arrays."""
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", video, "-vf", f"fps={count}/13.6,scale={SIZE[0]}:{SIZE[1]}",
                          "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    n = len(raw) // (SIZE[0] * SIZE[1] * 3)
    return np.frombuffer(raw[: n * SIZE[0] * SIZE[1] * 3], np.uint8).reshape(n, SIZE[1], SIZE[0], 3)


@functools.lru_cache(maxsize=None)
def _sprites(perch, photo):
    """Walkers of the photo: the detector's confident, unclipped person boxes that overlap no other."""
    out = subprocess.run([perch, "detect", "--min-score", "0.6", photo], capture_output=True, text=True, check=True).stdout
    boxes = [json.loads(line)["box"] for line in out.splitlines() if json.loads(line)["label"] == "person"]
    img = np.asarray(Image.open(photo).convert("RGB"))
    alone = []
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        lonely = all(j == i or o[2] < b[0] or o[0] > b[2] or o[3] < b[1] or o[1] > b[3] for j, o in enumerate(boxes))
        if lonely and y2 - y1 >= 80 and x1 > 0 and y1 > 0 and x2 < img.shape[1] and y2 < img.shape[0]:
            alone.append(img[y1:y2, x1:x2].copy())
    if len(alone) < 4:
        raise SystemExit(f"only {len(alone)} lone walkers found in {photo}: the clip needs at least 4")
    return alone


def _paths(rng, sprites):
    """Per walker: sprite index, scale, start time (s), start point and velocity (px/s) of its top-left."""
    paths = []
    for k in range(WALKERS):
        s = sprites[k % len(sprites)]
        scale = rng.uniform(0.9, 1.25)
        h, w = s.shape[0] * scale, s.shape[1] * scale
        speed = rng.uniform(0.6, 1.4) * h  # walking: about a body height a second
        # Across the picture (left or right) with some drift, or up/down it; a band of rows so that paths cross.
        if k % 3 != 2:
            d = 1 if k % 2 == 0 else -1
            x0 = -w if d > 0 else SIZE[0]
            y0 = rng.uniform(0.25, 0.75) * SIZE[1] - h / 2
            v = (d * speed, rng.uniform(-0.15, 0.15) * speed)
        else:
            d = 1 if rng.random() < 0.5 else -1
            x0 = rng.uniform(0.2, 0.8) * SIZE[0] - w / 2
            y0 = -h if d > 0 else SIZE[1]
            v = (rng.uniform(-0.2, 0.2) * speed, d * speed)
        start = (k / WALKERS) * (SECONDS - 8) + rng.uniform(0, 1.0)
        paths.append((k % len(sprites), scale, start, x0, y0, v))
    return paths


def _boxes_at(paths, sprites, t):
    """Ground truth at time t: (walker id, [x1, y1, x2, y2] clipped to the picture, unclipped box)."""
    out = []
    for wid, (si, scale, start, x0, y0, (vx, vy)) in enumerate(paths, start=1):
        if t < start:
            continue
        h, w = sprites[si].shape[0] * scale, sprites[si].shape[1] * scale
        x, y = x0 + vx * (t - start), y0 + vy * (t - start)
        b = [max(x, 0), max(y, 0), min(x + w, SIZE[0]), min(y + h, SIZE[1])]
        # In the ground truth while at least 60 % of it is in the picture.
        if (b[2] - b[0]) * (b[3] - b[1]) >= 0.6 * w * h:
            out.append((wid, b, [x, y, x + w, y + h]))
    return out


@functools.lru_cache(maxsize=None)
def _standing(perch, plaza_png):
    """The people the detector finds in the empty plaza (the same for every clip)."""
    out = subprocess.run([perch, "detect", "--min-score", "0.5", plaza_png], capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(line)["box"] for line in out.splitlines() if json.loads(line)["label"] == "person")


def make(perch, media, work, seed=7):
    """Writes the clip (if missing) and returns (video path, ground truth: frame number -> [(id, box)])."""
    video = os.path.join(work, f"walkers-{seed}.mp4")
    rng = np.random.default_rng(seed)
    sprites = _sprites(perch, os.path.join(media, "pedestrians-frame.jpg"))
    paths = _paths(rng, sprites)
    gt = {}
    for f in range(SECONDS * FPS):
        gt[f] = [(wid, b) for wid, b, _ in _boxes_at(paths, sprites, f / FPS)]
    plaza_png = os.path.join(work, "plaza.png")
    if not os.path.exists(plaza_png):
        plaza = np.median(_frames(os.path.join(media, "pedestrians-720p-gop1s.mp4"), 31), axis=0).astype(np.uint8)
        Image.fromarray(plaza).save(plaza_png)
    plaza = np.asarray(Image.open(plaza_png).convert("RGB"))
    # Walkers of the video who stood still stay in the median: they are people in the picture, so they are
    # in the ground truth too (standing, ids from 1000).
    standing = _standing(perch, plaza_png)
    for f in gt:
        gt[f] += [(1000 + i, b) for i, b in enumerate(standing)]
    if os.path.exists(video):
        return video, gt
    scaled = []
    for si, scale, *_ in paths:
        s = sprites[si]
        scaled.append(np.asarray(Image.fromarray(s).resize((round(s.shape[1] * scale), round(s.shape[0] * scale)), Image.BILINEAR)))
    enc = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE[0]}x{SIZE[1]}",
                            "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", str(FPS),
                            "-pix_fmt", "yuv420p", video + ".part.mp4"], stdin=subprocess.PIPE)
    for f in range(SECONDS * FPS):
        img = plaza.copy()
        # Farther walkers (higher bottom edge) first, so nearer ones hide them.
        for wid, _, (x1, y1, x2, y2) in sorted(_boxes_at(paths, sprites, f / FPS), key=lambda g: g[2][3]):
            s = scaled[wid - 1]
            xi, yi = int(round(x1)), int(round(y1))
            sx, sy = max(0, -xi), max(0, -yi)
            ex, ey = min(s.shape[1], SIZE[0] - xi), min(s.shape[0], SIZE[1] - yi)
            if ex > sx and ey > sy:
                img[yi + sy : yi + ey, xi + sx : xi + ex] = s[sy:ey, sx:ex]
        enc.stdin.write(img.tobytes())
    enc.stdin.close()
    if enc.wait() != 0:
        raise SystemExit("ffmpeg failed to encode the clip")
    os.replace(video + ".part.mp4", video)
    return video, gt


def detect(perch, video, fps):
    """The real detector on the clip at `fps`: per sampled frame, in order, (frame number of the source,
    [(box, score), ...]). `perch detect` prints detections only, so a sampled frame without any is placed
    by its neighbours' timestamps."""
    out = subprocess.run([perch, "detect", "--fps", str(fps), "--min-score", "0.1", video], capture_output=True, text=True, check=True).stdout
    pts, dets = {}, {}
    for line in out.splitlines():
        v = json.loads(line)
        pts[v["frame"]] = v["pts_ms"]
        if v["label"] == "person":
            dets.setdefault(v["frame"], []).append((v["box"], v["score"]))
    if not pts:
        raise SystemExit(f"perch detect found nothing in {video}")
    frames = []
    for k in range(max(pts) + 1):
        near = min(pts, key=lambda j: abs(j - k))
        ms = pts[near] + (k - near) * 1000.0 / fps
        frames.append((round(ms * FPS / 1000.0), dets.get(k, [])))
    return frames
