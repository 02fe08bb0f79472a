//! Model blue/green in the running service: a candidate model runs in shadow beside the current one, on a
//! sample of the frames the service detects anyway, until enough frames were compared; then
//! [`shadow::evaluate`] decides, and a promoted candidate replaces the current model in place.
//!
//! The candidate runs on the detection thread, right beside the current model, on every `sample_every`-th
//! frame: both see the same picture on the same cores, so their latencies compare (their order alternates
//! so neither gets the warmer cache), and detection never waits on a second thread. The price is the
//! candidate's inference on the sampled frames during the trial; drop-to-latest absorbs it.
//!
//! A trial is handed over through a [`TrialSlot`], which the detection loop looks at with one atomic load
//! per frame; its end is reported back on a channel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use super::shadow::{Found, ShadowCriteria, ShadowFrame, ShadowVerdict, evaluate};
use super::{Detections, Detector};

/// Runs on the detection thread when the verdict is "promote", before the candidate takes over: records
/// the promotion on disk. An error turns the promotion into a rejection with that reason.
pub type Commit = Box<dyn FnOnce(&ShadowVerdict) -> Result<(), String> + Send>;

/// A candidate ready to run, and the rules of its trial.
pub struct Trial {
    pub version: String,
    pub candidate: Detector,
    /// Compare on every n-th detected frame.
    pub sample_every: u32,
    /// Frames to compare before deciding.
    pub frames: usize,
    /// At the deadline, decide on what was compared if at least this many; else reject.
    pub min_frames: usize,
    pub deadline: Instant,
    pub criteria: ShadowCriteria,
    pub commit: Commit,
    pub report: mpsc::SyncSender<TrialOutcome>,
}

/// How a trial ended.
#[derive(Debug, Clone)]
pub struct TrialOutcome {
    pub version: String,
    pub verdict: ShadowVerdict,
    /// The candidate now serves.
    pub promoted: bool,
    /// Ended by [`TrialSlot::abort`], not by a verdict.
    pub aborted: bool,
}

/// Where the service's detection loop picks up a trial, and how far it got.
#[derive(Default)]
pub struct TrialSlot {
    offered: Mutex<Option<Trial>>,
    pending: AtomicBool,
    abort: AtomicBool,
    /// Frames compared so far in the running trial.
    pub compared: AtomicUsize,
}

impl TrialSlot {
    /// Hands a trial to the detection loop; it starts with the next frame.
    pub fn offer(&self, trial: Trial) {
        self.abort.store(false, Ordering::Relaxed);
        self.compared.store(0, Ordering::Relaxed);
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) = Some(trial);
        self.pending.store(true, Ordering::Release);
    }

    /// Ends the running (or offered) trial without a promotion.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.pending.store(true, Ordering::Release);
    }

    fn take(&self) -> Option<Trial> {
        if !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        self.offered.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The detection loop's side of a trial.
pub(crate) struct Running {
    trial: Trial,
    seen: u64,
    samples: Vec<ShadowFrame>,
    found: Detections,
}

/// What the detection loop does with a frame.
pub(crate) enum Step {
    /// Not a sampled frame.
    Skip,
    /// Run the candidate before the current model.
    CandidateFirst,
    /// Run it after.
    CandidateAfter,
}

/// The objects of a frame: detections from `min_score` on (the current model also reports weaker boxes for
/// the tracker's second stage, which the candidate is not asked for).
fn found(d: &Detections, min_score: f32) -> Vec<Found> {
    d.iter().filter(|x| x.score >= min_score).map(|x| Found { label: x.label.to_string(), bbox: x.bbox }).collect()
}

impl Running {
    /// A new trial from the slot, or the end of the running one on abort. `current`: the running trial.
    pub(crate) fn poll(slot: &TrialSlot, current: &mut Option<Running>) {
        if !slot.pending.load(Ordering::Relaxed) {
            return;
        }
        if slot.abort.swap(false, Ordering::Relaxed) {
            let offered = slot.offered.lock().unwrap_or_else(|e| e.into_inner()).take();
            for t in current.take().map(|r| r.trial).into_iter().chain(offered) {
                tracing::warn!(version = %t.version, "model trial: aborted by a command; the current model stays");
                let _ = t.report.try_send(TrialOutcome { version: t.version, verdict: ShadowVerdict::default(), promoted: false, aborted: true });
            }
            slot.pending.store(false, Ordering::Relaxed);
            return;
        }
        if let Some(t) = slot.take() {
            tracing::info!(version = %t.version, every = t.sample_every, frames = t.frames, "model trial: the candidate runs in shadow");
            *current = Some(Running::new(t));
        }
    }

    fn new(trial: Trial) -> Self {
        let samples = Vec::with_capacity(trial.frames);
        Self { trial, seen: 0, samples, found: Detections::new() }
    }

    fn verdict_with(&self, reason: String) -> ShadowVerdict {
        let mut v = evaluate(&self.samples, &self.trial.criteria);
        v.promote = false;
        v.reasons.insert(0, reason);
        v
    }

    /// Whether (and in which order) this frame is compared.
    pub(crate) fn step(&mut self) -> Step {
        self.seen += 1;
        if !(self.seen - 1).is_multiple_of(self.trial.sample_every.max(1) as u64) {
            return Step::Skip;
        }
        if self.samples.len().is_multiple_of(2) { Step::CandidateAfter } else { Step::CandidateFirst }
    }

    /// Runs the candidate on the frame; returns its wall time in ms, and whether it succeeded.
    pub(crate) fn run_candidate(&mut self, frame: &crate::capture::FrameView<'_>, min_score: f32) -> (bool, f64) {
        let t = Instant::now();
        let ok = self.trial.candidate.detect(frame, min_score, &mut self.found).is_ok();
        (ok, t.elapsed().as_secs_f64() * 1e3)
    }

    /// Records one compared frame: the candidate ran at `min_score`, the current model at or below it.
    pub(crate) fn record(&mut self, current: &Detections, min_score: f32, current_ms: f64, candidate: (bool, f64), slot: &TrialSlot) {
        let (ok, candidate_ms) = candidate;
        let candidate = ok.then(|| found(&self.found, min_score));
        self.samples.push(ShadowFrame { current: found(current, min_score), current_ms, candidate, candidate_ms });
        slot.compared.store(self.samples.len(), Ordering::Relaxed);
    }

    /// The trial's end, once it has its frames or its time is up: the verdict, and the candidate when it
    /// is to replace the current model (its promotion already committed).
    pub(crate) fn finish(current: &mut Option<Running>) -> Option<Detector> {
        let r = current.as_ref()?;
        let enough = r.samples.len() >= r.trial.frames;
        let late = Instant::now() >= r.trial.deadline;
        if !enough && !late {
            return None;
        }
        let r = current.take()?;
        let mut verdict = if !enough && r.samples.len() < r.trial.min_frames {
            r.verdict_with(format!(
                "only {} frames were compared before the trial's time ran out (at least {} needed): are the cameras delivering?",
                r.samples.len(),
                r.trial.min_frames
            ))
        } else {
            evaluate(&r.samples, &r.trial.criteria)
        };
        let Running { trial, .. } = r;
        let Trial { version, candidate, commit, report, .. } = trial;
        if verdict.promote
            && let Err(e) = commit(&verdict)
        {
            verdict.promote = false;
            verdict.reasons.push(format!("the promotion could not be recorded: {e}"));
        }
        let promoted = verdict.promote;
        match promoted {
            true => tracing::warn!(%version, disagreement = verdict.disagreement, "model trial: the candidate is promoted and now serves"),
            false => tracing::warn!(%version, reasons = ?verdict.reasons, "model trial: the candidate is rejected; the current model stays"),
        }
        let _ = report.try_send(TrialOutcome { version, verdict, promoted, aborted: false });
        promoted.then_some(candidate)
    }
}
