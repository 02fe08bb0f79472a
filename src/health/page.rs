//! The status page at `/`: one self-contained HTML document (no CDN, no build step) that polls
//! `/page.json` every second and shows each camera's latest picture (`/frame/<camera>`, detections drawn),
//! its rates, the recent events, and the newest review items of the recordings (`/api/review`), each
//! playing its clip in the page (`/api/clips/<id>.mp4`).
//!
//! The page, its data and the pictures are answered to loopback clients only (see `server.rs`): camera
//! pictures are private, and a browser cannot easily send the bearer token. From elsewhere, use an SSH
//! tunnel (`ssh -L 8080:127.0.0.1:8080 box`).

pub const HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>perch status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
  header { padding: 10px 16px; background: #222; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  .ok { color: #6c6; } .bad { color: #e66; }
  main { display: flex; flex-wrap: wrap; gap: 12px; padding: 12px; }
  .tile { background: #1c1c1c; border-radius: 6px; padding: 8px; width: 420px; }
  .tile img { width: 100%; background: #000; min-height: 120px; display: block; }
  .tile h2 { font-size: 15px; margin: 0 0 6px; }
  .meta { color: #aaa; font-size: 13px; }
  table { border-collapse: collapse; margin: 0 12px 12px; }
  td, th { padding: 2px 10px; text-align: left; border-bottom: 1px solid #333; }
  #review { display: flex; flex-wrap: wrap; gap: 12px; padding: 0 12px 12px; }
  #review figure { margin: 0; background: #1c1c1c; border-radius: 6px; padding: 8px; width: 420px; }
  #review video { width: 100%; background: #000; display: block; }
</style>
</head>
<body>
<header><h1>perch <span id="device"></span></h1><span id="ready"></span><span id="detector" class="meta"></span></header>
<main id="cameras"></main>
<h3 style="margin: 0 12px">Recent events</h3>
<table><thead><tr><th>time</th><th>camera</th><th>kind</th><th>label</th><th>score</th></tr></thead><tbody id="events"></tbody></table>
<h3 style="margin: 0 12px 8px">Review <span id="review-note" class="meta"></span></h3>
<section id="review"></section>
<script>
"use strict";
function tile(cam) {
  let t = document.getElementById("cam-" + cam.id);
  if (!t) {
    t = document.createElement("section");
    t.className = "tile";
    t.id = "cam-" + cam.id;
    t.dataset.camera = cam.id;
    const h = document.createElement("h2");
    h.textContent = cam.id;
    const img = document.createElement("img");
    img.alt = "latest frame of " + cam.id;
    const meta = document.createElement("div");
    meta.className = "meta";
    t.append(h, img, meta);
    document.getElementById("cameras").append(t);
  }
  return t;
}
function render(d) {
  document.getElementById("device").textContent = d.device_id;
  const r = document.getElementById("ready");
  r.textContent = d.ready ? "ready" : "not ready";
  r.className = d.ready ? "ok" : "bad";
  document.getElementById("detector").textContent = "detector: " + d.detector.state + (d.detector.provider ? " (" + d.detector.provider + ")" : "");
  for (const cam of d.cameras) {
    const t = tile(cam);
    const img = t.querySelector("img");
    if (cam.frame_seq !== null && img.dataset.seq !== String(cam.frame_seq)) {
      img.dataset.seq = String(cam.frame_seq);
      img.src = "frame/" + encodeURIComponent(cam.id) + "?seq=" + cam.frame_seq;
    }
    t.querySelector(".meta").textContent = cam.state + " · " + cam.fps.toFixed(1) + " fps · detect " + cam.detect_fps.toFixed(1) + " fps"
      + (cam.detections === null ? "" : " · " + cam.detections + " detections");
  }
  const rows = d.recent_events.map(e => {
    const tr = document.createElement("tr");
    for (const v of [e.ts.slice(11, 19), e.camera, e.kind, e.label, e.score.toFixed(2)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  document.getElementById("events").replaceChildren(...rows);
}
async function poll() {
  try {
    const res = await fetch("page.json", { cache: "no-store" });
    if (res.ok) render(await res.json());
  } catch (e) { document.getElementById("ready").textContent = "perch unreachable"; }
  setTimeout(poll, 1000);
}
// The newest ended review items, each playing its clip (made from the recorded segments on request).
const REVIEW_SHOWN = 4;
function reviewItem(item) {
  const id = "review-item-" + item.id;
  let f = document.getElementById(id);
  if (!f) {
    f = document.createElement("figure");
    f.id = id;
    const v = document.createElement("video");
    v.controls = true;
    v.muted = true;
    v.preload = "auto";
    v.src = item.clip.replace(/^\//, "");
    const c = document.createElement("figcaption");
    c.className = "meta";
    c.textContent = item.start.slice(0, 19).replace("T", " ") + " · " + item.camera + " · " + item.labels.join(", ") + " · " + item.events.length + " event(s)";
    f.append(v, c);
  }
  return f;
}
async function pollReview() {
  try {
    const res = await fetch("api/review?limit=50", { cache: "no-store" });
    const note = document.getElementById("review-note");
    if (res.ok) {
      const items = (await res.json()).review.filter(r => r.to_ms !== null).slice(0, REVIEW_SHOWN);
      document.getElementById("review").replaceChildren(...items.map(reviewItem));
      note.textContent = items.length ? "" : "nothing recorded yet";
    } else {
      note.textContent = (await res.text()).trim();
    }
  } catch (e) {}
  setTimeout(pollReview, 5000);
}
poll();
pollReview();
</script>
</body>
</html>
"##;
