//! Output decoders (YOLOX, YOLOv8-style) and class-aware non-maximum suppression.
//!
//! Decoders append candidates above the score threshold to a reused vector; NMS then sorts and compacts that
//! vector in place. Nothing here allocates once the vectors have grown to their working size.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// x1, y1, x2, y2 in model-input pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: u16,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("output shape {shape:?} does not match the manifest ({expected}): the manifest's output format or labels do not fit this model")]
    Shape { shape: Vec<i64>, expected: String },
}

/// YOLOX: `[1, N, 5 + C]`, boxes relative to grid cells over `strides`.
pub fn decode_yolox(
    out: &[f32],
    shape: &[i64],
    input: (u32, u32),
    strides: &[u32],
    classes: usize,
    threshold: f32,
    cands: &mut Vec<Candidate>,
) -> Result<(), DecodeError> {
    let anchors: usize = strides.iter().map(|s| (input.0 / s) as usize * (input.1 / s) as usize).sum();
    let width = 5 + classes;
    let ok = shape.len() == 3 && shape[0] == 1 && shape[1] as usize == anchors && shape[2] as usize == width && out.len() == anchors * width;
    if !ok {
        return Err(DecodeError::Shape { shape: shape.to_vec(), expected: format!("[1, {anchors}, {width}]") });
    }
    let mut rows = out.chunks_exact(width);
    for &s in strides {
        let (gw, gh) = (input.0 / s, input.1 / s);
        let sf = s as f32;
        for gy in 0..gh {
            for gx in 0..gw {
                let row = rows.next().expect("length checked above");
                let obj = row[4];
                // score = objectness × class score ≤ objectness: most anchors stop here.
                if obj < threshold {
                    continue;
                }
                let (class, cls) = argmax(&row[5..]);
                let score = obj * cls;
                if score < threshold {
                    continue;
                }
                let cx = (row[0] + gx as f32) * sf;
                let cy = (row[1] + gy as f32) * sf;
                let w = row[2].exp() * sf;
                let h = row[3].exp() * sf;
                cands.push(Candidate { bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], score, class: class as u16 });
            }
        }
    }
    Ok(())
}

/// YOLOv8-style: `[1, 4 + C, N]`, (cx, cy, w, h) in input pixels, class scores without objectness.
pub fn decode_yolov8(out: &[f32], shape: &[i64], classes: usize, threshold: f32, cands: &mut Vec<Candidate>) -> Result<(), DecodeError> {
    let ok = shape.len() == 3 && shape[0] == 1 && shape[1] as usize == 4 + classes && shape[2] > 0 && out.len() == (4 + classes) * shape[2] as usize;
    if !ok {
        return Err(DecodeError::Shape { shape: shape.to_vec(), expected: format!("[1, {}, N]", 4 + classes) });
    }
    let n = shape[2] as usize;
    let at = |row: usize, j: usize| out[row * n + j];
    for j in 0..n {
        let mut best = (0usize, f32::MIN);
        for c in 0..classes {
            let s = at(4 + c, j);
            if s > best.1 {
                best = (c, s);
            }
        }
        if best.1 < threshold {
            continue;
        }
        let (cx, cy, w, h) = (at(0, j), at(1, j), at(2, j), at(3, j));
        cands.push(Candidate { bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], score: best.1, class: best.0 as u16 });
    }
    Ok(())
}

fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::MIN);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Class-aware greedy NMS: keeps the best box of each overlapping group of the same class, highest scores
/// first, at most `max` boxes. Works in place; `suppressed` is scratch space.
pub fn nms(cands: &mut Vec<Candidate>, iou_threshold: f32, max: usize, suppressed: &mut Vec<bool>) {
    cands.sort_unstable_by(|a, b| b.score.total_cmp(&a.score));
    suppressed.clear();
    suppressed.resize(cands.len(), false);
    let mut kept = 0;
    for i in 0..cands.len() {
        if suppressed[i] {
            continue;
        }
        let c = cands[i];
        for j in i + 1..cands.len() {
            if !suppressed[j] && cands[j].class == c.class && iou(&c.bbox, &cands[j].bbox) > iou_threshold {
                suppressed[j] = true;
            }
        }
        cands[kept] = c;
        kept += 1;
        if kept == max {
            break;
        }
    }
    cands.truncate(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolox_decodes_grid_relative_boxes() {
        // 16x16 input, stride 8 → 2x2 grid = 4 anchors, 2 classes → width 7.
        let mut out = vec![0f32; 4 * 7];
        // Anchor 3 is grid (1, 1): offset (0.5, 0.5), wh = exp(0) * 8 = 8, obj 0.9, class 1 score 0.8.
        out[3 * 7..4 * 7].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 0.8]);
        // Anchor 0: objectness too low.
        out[0..7].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.1, 0.9, 0.9]);
        let mut c = Vec::new();
        decode_yolox(&out, &[1, 4, 7], (16, 16), &[8], 2, 0.3, &mut c).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class, 1);
        assert!((c[0].score - 0.72).abs() < 1e-6);
        assert_eq!(c[0].bbox, [8.0, 8.0, 16.0, 16.0]);
    }

    #[test]
    fn yolox_rejects_wrong_shape() {
        let out = vec![0f32; 10];
        let mut c = Vec::new();
        assert!(decode_yolox(&out, &[1, 2, 5], (16, 16), &[8], 2, 0.3, &mut c).is_err());
    }

    #[test]
    fn yolov8_decodes_transposed_output() {
        // 3 anchors, 2 classes: rows are cx, cy, w, h, c0, c1.
        let n = 3;
        let mut out = vec![0f32; 6 * n];
        let set = |out: &mut Vec<f32>, row: usize, j: usize, v: f32| out[row * n + j] = v;
        for (row, v) in [(0, 50.0), (1, 40.0), (2, 20.0), (3, 10.0), (4, 0.1), (5, 0.9)] {
            set(&mut out, row, 1, v);
        }
        set(&mut out, 4, 2, 0.2); // below threshold
        let mut c = Vec::new();
        decode_yolov8(&out, &[1, 6, 3], 2, 0.25, &mut c).unwrap();
        assert_eq!(c, vec![Candidate { bbox: [40.0, 35.0, 60.0, 45.0], score: 0.9, class: 1 }]);
        assert!(decode_yolov8(&out, &[1, 7, 3], 2, 0.25, &mut c).is_err());
    }

    #[test]
    fn nms_is_class_aware_and_bounded() {
        let b = |x: f32, s: f32, class: u16| Candidate { bbox: [x, 0.0, x + 10.0, 10.0], score: s, class };
        let mut c = vec![b(0.0, 0.6, 0), b(1.0, 0.9, 0), b(1.0, 0.8, 1), b(50.0, 0.5, 0)];
        let mut scratch = Vec::new();
        nms(&mut c, 0.45, 10, &mut scratch);
        // The two overlapping class-0 boxes collapse to the best; the class-1 box overlapping them stays.
        assert_eq!(c.iter().map(|c| (c.class, c.score)).collect::<Vec<_>>(), vec![(0, 0.9), (1, 0.8), (0, 0.5)]);
        let mut c2 = vec![b(0.0, 0.9, 0), b(100.0, 0.8, 0), b(200.0, 0.7, 0)];
        nms(&mut c2, 0.45, 2, &mut scratch);
        assert_eq!(c2.len(), 2);
    }

    #[test]
    fn iou_of_known_boxes() {
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
    }
}
