//! Association: which detection continues which track.
//!
//! A pair is allowed (gated) when the detection is of the track's class group, its sides are within a
//! factor of two of the predicted box's, and it either overlaps the prediction (IoU ≥ `iou_match`) or lies
//! within the prediction's 95 % region over centre and sides (squared Mahalanobis distance ≤ [`GATE`]) — the
//! second is what finds a fast object whose consecutive boxes do not overlap, and it widens by itself while a
//! track goes unseen; the sides in it tell the walker behind from the one in front. Allowed pairs are taken
//! greedily, cheapest first; the cost adds the missing overlap to the normalised distance, so a detection
//! that both overlaps and sits where the track was heading wins. (Optimal assignment, the Hungarian method
//! with the most pairs first, was tried: on TUD-Stadtmitte at 2 fps it made 481 identity switches where
//! greedy makes 323 — forcing every possible pair takes the doubtful ones too.)

use crate::detect::decode::iou;

use super::kalman::BoxFilter;

/// χ² with 4 degrees of freedom (centre and sides) at 95 %: the gate.
pub const GATE: f32 = 9.49;
/// A sighting vouches for a tentative object — counts toward its becoming an event — when it lies this
/// close to the prediction (squared Mahalanobis distance over centre and sides; the gate is [`GATE`]). The
/// filter's noise is set wide enough for a walker turning or a car braking, so the object's own next box
/// lands well inside this; a detection near the gate's edge is as often another walker who stepped where
/// this one was heading. Such a sighting continues the object (it is still the best candidate) without
/// vouching for it. On TUD-Campus at 2 fps (bench/track_eval.sh) identity switches fell from 15 to 3 with
/// it, IDF1 from 0.40 to 0.32 (objects become events a sighting later where the crowd is dense); 2.0 and 3.0
/// gave 3 and 4 switches.
pub const VOUCH: f32 = 2.5;
/// A detection whose width or height differs from the prediction's by more than this factor is another
/// object (a person standing in front of a bus).
const SIZE_RATIO: f32 = 2.0;

/// The cost of continuing a track (its filter, predicted box) with a detection's box, or `None` when the
/// pair is outside the gate.
pub fn cost(filter: &BoxFilter, predicted: &[f32; 4], det: &[f32; 4], iou_match: f32) -> Option<f32> {
    let (overlap, d2) = fit(filter, predicted, det)?;
    (overlap >= iou_match || d2 <= GATE).then(|| price(overlap, d2))
}

/// The cost of continuing a track with a weak box (the second stage), or `None`: the box must overlap the
/// prediction — near is not enough for what may be a false detection (as in ByteTrack) — and lie within
/// its 95 % region too. Overlapping is not enough either: a passer-by merged with a person standing still
/// gives a weak box, taller and off-centre, that overlaps the standing person's prediction; taken, it pulls
/// that track onto the passer-by's path, and the next frame it takes the passer-by's own box (on the own
/// clips at 5 fps, bench/track_eval.sh: 11 → 10 identity switches; TUD-Stadtmitte at 5 fps 77 → 65).
pub fn weak_cost(filter: &BoxFilter, predicted: &[f32; 4], det: &[f32; 4], iou_match: f32) -> Option<f32> {
    let (overlap, d2) = fit(filter, predicted, det)?;
    (overlap >= iou_match && d2 <= GATE).then(|| price(overlap, d2))
}

/// The overlap with the prediction and the squared distance from it, or `None` when the sides differ too
/// much for one object.
fn fit(filter: &BoxFilter, predicted: &[f32; 4], det: &[f32; 4]) -> Option<(f32, f32)> {
    let ratio = |a: f32, b: f32| a.max(1.0) / b.max(1.0);
    let (pw, ph) = (predicted[2] - predicted[0], predicted[3] - predicted[1]);
    let (dw, dh) = (det[2] - det[0], det[3] - det[1]);
    let off = |r: f32| !(1.0 / SIZE_RATIO..=SIZE_RATIO).contains(&r);
    if off(ratio(dw, pw)) || off(ratio(dh, ph)) {
        return None;
    }
    Some((iou(predicted, det), filter.distance2(det)))
}

/// The missing overlap plus the normalised distance: a detection that both overlaps and sits where the
/// track was heading wins.
fn price(overlap: f32, d2: f32) -> f32 {
    (1.0 - overlap) + (d2 / GATE).min(1.0)
}

/// Greedy assignment over `pairs` (cost, track, detection): cheapest first, each track and each detection
/// at most once. Sorts `pairs`; marks what it takes in `tracks_taken` / `dets_taken` (already-set entries
/// are skipped) and calls `take` for each match.
pub fn assign(pairs: &mut [(f32, usize, usize)], tracks_taken: &mut [bool], dets_taken: &mut [bool], mut take: impl FnMut(usize, usize)) {
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    for &(_, t, d) in pairs.iter() {
        if tracks_taken[t] || dets_taken[d] {
            continue;
        }
        tracks_taken[t] = true;
        dets_taken[d] = true;
        take(t, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(x: f32) -> [f32; 4] {
        [x, 100.0, x + 60.0, 260.0]
    }

    fn settled_at(x: f32) -> (BoxFilter, [f32; 4]) {
        let mut f = BoxFilter::settled(&person(x), 0.2);
        f.predict(0.2);
        (f, f.bbox())
    }

    #[test]
    fn overlap_and_distance_gate_and_order_the_pairs() {
        let (f, pred) = settled_at(100.0);
        let near = cost(&f, &pred, &person(104.0), 0.3).expect("a small step matches");
        let farther = cost(&f, &pred, &person(130.0), 0.3).expect("half a width still overlaps");
        assert!(near < farther);
        assert_eq!(cost(&f, &pred, &person(400.0), 0.3), None, "far away");
        // Same place, but a bus-sized box is another object.
        assert_eq!(cost(&f, &pred, &[80.0, 0.0, 400.0, 300.0], 0.3), None);
    }

    #[test]
    fn a_weak_box_must_overlap_and_fit_the_prediction() {
        let (f, pred) = settled_at(100.0);
        assert!(weak_cost(&f, &pred, &person(104.0), 0.3).is_some(), "the walker, half hidden");
        // Near but not overlapping enough (IoU 0.2, within the gate): a confident box is a candidate, a
        // weak one not.
        let beside = person(140.0);
        assert!(cost(&f, &pred, &beside, 0.3).is_some());
        assert_eq!(weak_cost(&f, &pred, &beside, 0.3), None);
        // Overlapping (IoU 0.63), but a third taller and reaching higher: a passer-by merged with this
        // walker. A confident box there is still a candidate (the overlap gates it); a weak one is not.
        let merged = [94.0, 50.0, 166.0, 262.0];
        assert!(cost(&f, &pred, &merged, 0.3).is_some());
        assert_eq!(weak_cost(&f, &pred, &merged, 0.3), None);
    }

    #[test]
    fn greedy_takes_the_cheapest_pairs_once() {
        // Track 0 is close to both detections; track 1 only to detection 1.
        let mut pairs = vec![(0.5, 0, 1), (0.1, 0, 0), (0.2, 1, 1), (0.3, 1, 0)];
        let (mut tt, mut dt) = (vec![false; 2], vec![false; 2]);
        let mut got = Vec::new();
        assign(&mut pairs, &mut tt, &mut dt, |t, d| got.push((t, d)));
        assert_eq!(got, vec![(0, 0), (1, 1)]);
        // Already taken tracks are left alone (the second stage).
        let mut pairs = vec![(0.1, 0, 0), (0.2, 1, 0)];
        let (mut tt, mut dt) = (vec![true, false], vec![false]);
        got.clear();
        assign(&mut pairs, &mut tt, &mut dt, |t, d| got.push((t, d)));
        assert_eq!(got, vec![(1, 0)]);
    }
}
