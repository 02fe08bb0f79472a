//! Model blue/green: the verdict on a candidate model that ran in shadow beside the current one on the same
//! frames. Pure: the runner collects [`ShadowFrame`]s, [`evaluate`] decides.
//!
//! The candidate is promoted only if all three hold: its detections agree with the current model's
//! (matched by label and IoU) on at least `1 - max_disagreement` of them, its p95 latency is within
//! `max_latency_increase` of the current one's, and fewer than `max_error_rate` of its runs failed.

use serde::{Deserialize, Serialize};

use super::decode::iou;

/// The promotion criteria.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowCriteria {
    /// Largest share of detections without a counterpart in the other model (0.2: 20 %).
    pub max_disagreement: f64,
    /// Largest p95 latency increase of the candidate (0.1: +10 %).
    pub max_latency_increase: f64,
    /// The candidate's error rate must stay below this (0.02: 2 %).
    pub max_error_rate: f64,
    /// Two detections match when their labels are equal and their boxes overlap at least this much.
    pub match_iou: f32,
}

impl Default for ShadowCriteria {
    fn default() -> Self {
        Self { max_disagreement: 0.2, max_latency_increase: 0.1, max_error_rate: 0.02, match_iou: 0.5 }
    }
}

/// One detection, as compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub label: String,
    pub bbox: [f32; 4],
}

/// Both models on one frame. `candidate: None`: the candidate failed on it.
#[derive(Debug, Clone)]
pub struct ShadowFrame {
    pub current: Vec<Found>,
    pub current_ms: f64,
    pub candidate: Option<Vec<Found>>,
    pub candidate_ms: f64,
}

/// The measured figures and the decision, as reported on MQTT and printed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ShadowVerdict {
    pub promote: bool,
    pub frames: usize,
    pub current_detections: usize,
    pub candidate_detections: usize,
    pub matched: usize,
    pub disagreement: f64,
    pub current_p95_ms: f64,
    pub candidate_p95_ms: f64,
    pub latency_increase: f64,
    pub error_rate: f64,
    /// Why the candidate was rejected (empty when promoted).
    pub reasons: Vec<String>,
}

/// Greedy one-to-one matching, best overlap first: how many of `a` have a counterpart in `b`.
pub fn matched(a: &[Found], b: &[Found], min_iou: f32) -> usize {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            let o = iou(&x.bbox, &y.bbox);
            if x.label == y.label && o >= min_iou {
                pairs.push((o, i, j));
            }
        }
    }
    pairs.sort_by(|p, q| q.0.total_cmp(&p.0));
    let (mut used_a, mut used_b) = (vec![false; a.len()], vec![false; b.len()]);
    let mut n = 0;
    for (_, i, j) in pairs {
        if !used_a[i] && !used_b[j] {
            used_a[i] = true;
            used_b[j] = true;
            n += 1;
        }
    }
    n
}

/// The 95th percentile (nearest rank); 0 for no samples.
pub fn p95(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((0.95 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub fn evaluate(frames: &[ShadowFrame], c: &ShadowCriteria) -> ShadowVerdict {
    let (mut cur_n, mut cand_n, mut both) = (0, 0, 0);
    let (mut cur_ms, mut cand_ms) = (Vec::new(), Vec::new());
    let mut errors = 0;
    for f in frames {
        cur_ms.push(f.current_ms);
        match &f.candidate {
            Some(cand) => {
                cur_n += f.current.len();
                cand_n += cand.len();
                both += matched(&f.current, cand, c.match_iou);
                cand_ms.push(f.candidate_ms);
            }
            None => errors += 1,
        }
    }
    // Each match accounts for one detection of each model; the rest have no counterpart.
    let total = cur_n + cand_n;
    let disagreement = if total == 0 { 0.0 } else { 1.0 - (2 * both) as f64 / total as f64 };
    let (cp, kp) = (p95(&cur_ms), p95(&cand_ms));
    let latency_increase = if cp > 0.0 && kp > 0.0 { kp / cp - 1.0 } else { 0.0 };
    let error_rate = if frames.is_empty() { 1.0 } else { errors as f64 / frames.len() as f64 };
    let mut reasons = Vec::new();
    if frames.is_empty() {
        reasons.push("no frame was compared: shadow mode needs frames".to_string());
    }
    if disagreement >= c.max_disagreement {
        reasons.push(format!("disagreement {:.1} % is not below {:.1} %", disagreement * 100.0, c.max_disagreement * 100.0));
    }
    // The epsilon keeps "exactly +10 %" within +10 % despite binary fractions.
    if latency_increase > c.max_latency_increase + 1e-9 {
        reasons.push(format!(
            "p95 latency {kp:.1} ms is {:+.1} % over the current {cp:.1} ms (limit +{:.0} %)",
            latency_increase * 100.0,
            c.max_latency_increase * 100.0
        ));
    }
    if error_rate >= c.max_error_rate {
        reasons.push(format!("error rate {:.1} % is not below {:.1} %", error_rate * 100.0, c.max_error_rate * 100.0));
    }
    ShadowVerdict {
        promote: reasons.is_empty(),
        frames: frames.len(),
        current_detections: cur_n,
        candidate_detections: cand_n,
        matched: both,
        disagreement,
        current_p95_ms: cp,
        candidate_p95_ms: kp,
        latency_increase,
        error_rate,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(label: &str, x: f32) -> Found {
        Found { label: label.into(), bbox: [x, 0.0, x + 10.0, 10.0] }
    }

    fn frame(cur: Vec<Found>, cand: Option<Vec<Found>>, ms: (f64, f64)) -> ShadowFrame {
        ShadowFrame { current: cur, current_ms: ms.0, candidate: cand, candidate_ms: ms.1 }
    }

    #[test]
    fn matching_is_one_to_one_by_label_and_overlap() {
        let a = vec![d("car", 0.0), d("car", 1.0), d("person", 50.0)];
        let b = vec![d("car", 0.5), d("person", 80.0), d("dog", 50.0)];
        assert_eq!(matched(&a, &b, 0.5), 1);
        assert_eq!(matched(&a, &a, 0.5), 3);
        assert_eq!(matched(&a, &[], 0.5), 0);
    }

    #[test]
    fn a_copy_is_promoted() {
        let frames: Vec<_> =
            (0..20).map(|i| frame(vec![d("car", i as f32), d("person", 40.0)], Some(vec![d("car", i as f32), d("person", 40.0)]), (10.0, 10.5))).collect();
        let v = evaluate(&frames, &ShadowCriteria::default());
        assert!(v.promote, "{v:?}");
        assert_eq!((v.matched, v.disagreement, v.error_rate), (40, 0.0, 0.0));
    }

    #[test]
    fn each_criterion_rejects_on_its_own() {
        let c = ShadowCriteria::default();
        let same = || vec![d("car", 0.0), d("person", 40.0)];
        // Disagreement: the candidate misses one of two detections on every frame: 1 - 2*1/3 = 33 %.
        let v = evaluate(&(0..10).map(|_| frame(same(), Some(vec![d("car", 0.0)]), (10.0, 10.0))).collect::<Vec<_>>(), &c);
        assert!(!v.promote && v.reasons.len() == 1 && v.reasons[0].contains("disagreement"), "{v:?}");
        assert!((v.disagreement - 1.0 / 3.0).abs() < 1e-9);
        // Latency: +20 % at p95.
        let v = evaluate(&(0..10).map(|_| frame(same(), Some(same()), (10.0, 12.0))).collect::<Vec<_>>(), &c);
        assert!(!v.promote && v.reasons[0].contains("latency"), "{v:?}");
        // +10 % exactly is within.
        assert!(evaluate(&(0..10).map(|_| frame(same(), Some(same()), (10.0, 11.0))).collect::<Vec<_>>(), &c).promote);
        // Errors: 1 of 50 frames is 2 %, not below 2 %.
        let mut frames: Vec<_> = (0..49).map(|_| frame(same(), Some(same()), (10.0, 10.0))).collect();
        frames.push(frame(same(), None, (10.0, 0.0)));
        let v = evaluate(&frames, &c);
        assert!(!v.promote && v.reasons[0].contains("error rate"), "{v:?}");
        // No frames: never promoted.
        assert!(!evaluate(&[], &c).promote);
    }

    #[test]
    fn p95_is_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p95(&s), 95.0);
        assert_eq!(p95(&[3.0]), 3.0);
        assert_eq!(p95(&[]), 0.0);
    }
}
