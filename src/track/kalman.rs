//! Constant-velocity Kalman filter of one box, in continuous time.
//!
//! The state is the box's centre x, centre y, width and height, each with its rate of change per second
//! (SORT and ByteTrack filter the same quantities, per frame; here time comes from the frames' clocks, so a
//! frame dropped while the detector is busy is a longer step, not a lost one). The motion model, the
//! process noise and the measurement noise treat the four coordinates independently, so the 8×8
//! covariance stays block-diagonal: four 2×2 filters (position, velocity), updated in closed form, with no
//! matrix library and no allocation.
//!
//! Noise is relative to the object's size (`scale`, the larger side of its box): a walker 100 px tall and
//! a bus 600 px wide are both "about one size per second" of speed, and their detections jitter by a few
//! percent of their size.

/// Measurement noise: a detection's centre and sides are this fraction of the object's size off (1 σ).
const MEASUREMENT_STD: f32 = 0.05;
/// Process noise: accelerations of this many sizes per second² (1 σ) — a walker turning, a car braking.
const ACCELERATION_STD: f32 = 0.5;
/// The sides change more slowly than the position.
const SIZE_ACCELERATION_STD: f32 = 0.3;
/// The fastest the predicted sides may grow or shrink, in sizes per second. A detection cut short by a
/// walker passing in front (a box half as wide for one frame) teaches the filter a shrinking rate; carried
/// on through the frames the object is hidden, it shrinks the prediction to nothing and the object, seen
/// whole again, no longer fits the gate. Real sides change slowly (a walker approaching the camera: a few
/// percent a second), so the rate is held to this. On the own clips at 2 fps (bench/track_eval.sh, 6
/// clips) identity switches fell from 28 to 11 with it; 0.05 and 0.15 did worse there.
const MAX_SIZE_RATE: f32 = 0.1;
/// Velocity of a new track, before a second sighting says anything: up to this many sizes a second (1 σ).
/// Wide, so a car crossing the picture in two seconds is found again on the next frame.
const INITIAL_VELOCITY_STD: f32 = 1.5;
/// How fast a new track's sides may be changing: objects move across the picture much faster than they
/// grow or shrink, so a box of a very different size nearby is another object (in a crowd seen at 2 fps, the
/// walker behind, not the same one).
const INITIAL_SIZE_RATE_STD: f32 = 0.3;

/// One coordinate: value, rate per second, and their covariance `[[pp, pv], [pv, vv]]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    p: f32,
    v: f32,
    pp: f32,
    pv: f32,
    vv: f32,
}

impl Axis {
    fn new(p: f32, p_std: f32, v_std: f32) -> Self {
        Self { p, v: 0.0, pp: p_std * p_std, pv: 0.0, vv: v_std * v_std }
    }

    /// Moves `dt` seconds ahead; `q` is the acceleration's variance (white-noise acceleration model).
    fn predict(&mut self, dt: f32, q: f32) {
        self.p += self.v * dt;
        let (dt2, dt3) = (dt * dt, dt * dt * dt);
        self.pp += 2.0 * dt * self.pv + dt2 * self.vv + q * dt3 / 3.0;
        self.pv += dt * self.vv + q * dt2 / 2.0;
        self.vv += q * dt;
    }

    /// Folds in a measurement `z` with variance `r`.
    fn update(&mut self, z: f32, r: f32) {
        let s = self.pp + r;
        let (kp, kv) = (self.pp / s, self.pv / s);
        let y = z - self.p;
        self.p += kp * y;
        self.v += kv * y;
        let (pp, pv, vv) = (self.pp, self.pv, self.vv);
        self.pp = pp - kp * pp;
        self.pv = pv - kp * pv;
        self.vv = vv - kv * pv;
    }

    /// Variance of the innovation for a measurement with variance `r`.
    fn innovation_var(&self, r: f32) -> f32 {
        self.pp + r
    }
}

/// The filter of one tracked box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxFilter {
    axes: [Axis; 4],
}

/// `[x1, y1, x2, y2]` → centre x, centre y, width, height.
fn to_cwh(b: &[f32; 4]) -> [f32; 4] {
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, (b[2] - b[0]).max(1.0), (b[3] - b[1]).max(1.0)]
}

fn scale_of(cwh: &[f32; 4]) -> f32 {
    cwh[2].max(cwh[3])
}

impl BoxFilter {
    /// A filter at the first sighting: at rest, with a wide uncertainty about its speed.
    pub fn new(bbox: &[f32; 4]) -> Self {
        let z = to_cwh(bbox);
        let s = scale_of(&z);
        let axis = |i: usize| Axis::new(z[i], 2.0 * MEASUREMENT_STD * s, if i < 2 { INITIAL_VELOCITY_STD } else { INITIAL_SIZE_RATE_STD } * s);
        Self { axes: [axis(0), axis(1), axis(2), axis(3)] }
    }

    /// The object's size now (the larger side).
    pub fn scale(&self) -> f32 {
        self.axes[2].p.max(self.axes[3].p).max(1.0)
    }

    /// Moves the state `dt` seconds ahead.
    pub fn predict(&mut self, dt: f32) {
        if dt <= 0.0 {
            return;
        }
        let s = self.scale();
        let (q, qs) = ((ACCELERATION_STD * s).powi(2), (SIZE_ACCELERATION_STD * s).powi(2));
        for a in &mut self.axes[2..] {
            a.v = a.v.clamp(-MAX_SIZE_RATE * s, MAX_SIZE_RATE * s);
        }
        for (i, a) in self.axes.iter_mut().enumerate() {
            a.predict(dt, if i < 2 { q } else { qs });
        }
        // A box never shrinks to nothing, however fast its sides were shrinking.
        for a in &mut self.axes[2..] {
            a.p = a.p.max(1.0);
        }
    }

    /// Folds in a detection's box.
    pub fn update(&mut self, bbox: &[f32; 4]) {
        let z = to_cwh(bbox);
        let r = (MEASUREMENT_STD * scale_of(&z)).powi(2);
        for (a, z) in self.axes.iter_mut().zip(z) {
            a.update(z, r);
        }
    }

    /// The predicted box, `[x1, y1, x2, y2]`.
    pub fn bbox(&self) -> [f32; 4] {
        let [cx, cy, w, h] = self.axes.map(|a| a.p);
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    /// Velocity of the centre, pixels per second.
    pub fn velocity(&self) -> [f32; 2] {
        [self.axes[0].v, self.axes[1].v]
    }

    /// Squared Mahalanobis distance between the predicted box and `bbox`, over centre and sides: how many
    /// standard deviations of the prediction (plus the detection's own noise) apart they are: χ² with 4
    /// degrees of freedom for a true match (below 9.49 for 95 % of them).
    pub fn distance2(&self, bbox: &[f32; 4]) -> f32 {
        let z = to_cwh(bbox);
        let r = (MEASUREMENT_STD * scale_of(&z)).powi(2);
        self.axes.iter().zip(z).map(|(a, z)| (z - a.p).powi(2) / a.innovation_var(r)).sum()
    }
}

#[cfg(test)]
impl BoxFilter {
    /// A filter that has seen `bbox` stand still for ten sightings `dt` seconds apart (tests).
    pub(crate) fn settled(bbox: &[f32; 4], dt: f32) -> Self {
        let mut f = Self::new(bbox);
        for _ in 0..10 {
            f.predict(dt);
            f.update(bbox);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(cx: f32, cy: f32) -> [f32; 4] {
        [cx - 50.0, cy - 100.0, cx + 50.0, cy + 100.0]
    }

    #[test]
    fn it_learns_a_constant_velocity_and_predicts_ahead() {
        // 200 px/s to the right, seen at 5 fps.
        let mut f = BoxFilter::new(&boxed(100.0, 300.0));
        for k in 1..=10 {
            f.predict(0.2);
            f.update(&boxed(100.0 + 40.0 * k as f32, 300.0));
        }
        let v = f.velocity();
        assert!((v[0] - 200.0).abs() < 10.0, "velocity {v:?}");
        assert!(v[1].abs() < 5.0, "velocity {v:?}");
        // One second without a sighting: the prediction walks on.
        f.predict(1.0);
        let b = f.bbox();
        let cx = (b[0] + b[2]) / 2.0;
        assert!((cx - 700.0).abs() < 15.0, "predicted centre {cx}");
        assert!(((b[2] - b[0]) - 100.0).abs() < 5.0 && ((b[3] - b[1]) - 200.0).abs() < 5.0, "{b:?}");
    }

    #[test]
    fn uncertainty_grows_without_sightings_and_shrinks_with_them() {
        let f = BoxFilter::settled(&boxed(500.0, 500.0), 0.2);
        let probe = boxed(560.0, 500.0);
        let settled = f.distance2(&probe);
        let mut lost = f;
        lost.predict(2.0);
        assert!(lost.distance2(&probe) < settled / 4.0, "a longer gap must gate wider");
        assert!(settled > crate::track::assoc::GATE, "60 px off a still 200 px object is no match: {settled}");
        // Right place, but a third taller: another object (a walker behind this one).
        let taller = [450.0, 300.0, 550.0, 566.0];
        assert!(f.distance2(&taller) > crate::track::assoc::GATE, "{}", f.distance2(&taller));
    }

    #[test]
    fn a_fast_object_is_within_the_gate_on_its_second_frame() {
        // A car 300 px wide crossing 1280 px in 2 s seen at 2 fps: 320 px between frames, no overlap.
        let car = |x: f32| [x, 400.0, x + 300.0, 550.0];
        let mut f = BoxFilter::new(&car(0.0));
        f.predict(0.5);
        assert!(f.distance2(&car(320.0)) < crate::track::assoc::GATE);
        f.update(&car(320.0));
        f.predict(0.5);
        // Now it knows the speed: the third sighting is close to the prediction.
        let b = f.bbox();
        assert!((b[0] - 640.0).abs() < 120.0, "{b:?}");
        assert!(f.distance2(&car(640.0)) < crate::track::assoc::GATE);
    }

    #[test]
    fn a_box_cut_short_for_a_frame_does_not_shrink_the_prediction_away() {
        let mut f = BoxFilter::settled(&boxed(300.0, 300.0), 0.5);
        // A walker passes in front: the box is half as wide for one frame, then the object is hidden.
        f.predict(0.5);
        f.update(&[275.0, 200.0, 325.0, 400.0]);
        let width = |f: &BoxFilter| f.bbox()[2] - f.bbox()[0];
        let seen = width(&f);
        assert!(seen < 95.0, "the narrow box counted: {seen}");
        // A second unseen: without the limit, the rate it learnt (about -75 px/s) leaves a sliver of a box.
        f.predict(1.0);
        assert!(width(&f) >= seen / 2.0, "shrank from {seen} to {}", width(&f));
        assert!(f.distance2(&boxed(300.0, 300.0)) < crate::track::assoc::GATE, "the whole box is found again");
    }

    #[test]
    fn a_non_positive_step_changes_nothing() {
        let mut f = BoxFilter::new(&boxed(10.0, 10.0));
        let before = f;
        f.predict(0.0);
        f.predict(-1.0);
        assert_eq!(f, before);
    }
}
