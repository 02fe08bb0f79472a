//! Detector configuration (`[detector]` table).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util::config::{Problem, Section};

/// ONNX Runtime execution providers perch knows how to configure, tried in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// TensorRT: fp16 and an engine cache on disk (the first start builds the engine: minutes on a Jetson).
    Tensorrt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Tensorrt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    pub fn is_gpu(self) -> bool {
        self != Provider::Cpu
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// The model manifest (`.toml` beside the `.onnx`, see `models/README.md`).
    pub model: PathBuf,
    /// Execution providers in order of preference, e.g. `["tensorrt", "cuda", "cpu"]`.
    pub providers: Vec<Provider>,
    /// When a configured GPU provider cannot be used, run on CPU with a warning instead of failing.
    pub allow_cpu_fallback: bool,
    /// `libonnxruntime.so` to load. Default: `ORT_DYLIB_PATH`, then `/usr/lib/perch/libonnxruntime.so`.
    pub ort_library: Option<PathBuf>,
    /// Threads for one inference (0: ONNX Runtime's default, one per core). One by default: the detector
    /// runs one inference at a time while every camera's decoder wants a core too, and splitting an
    /// inference over the cores costs more CPU in all than it saves in latency (four 720p cameras on two
    /// cores: 0.64 cores with 1 thread, 0.74 with 2). Raise it on a box with few cameras and idle cores.
    pub intra_threads: usize,
    /// Let the intra-op threads spin (busy-wait) between the parallel parts of an inference instead of
    /// sleeping. ONNX Runtime's own default is on: a few percent lower latency, paid for with cores kept
    /// busy while there is nothing to do. Off by default: a camera box has decoders waiting for the CPU.
    pub intra_spinning: bool,
    /// Rectangular inference: when the model's manifest says its graph takes any size (`[input]
    /// rectangular = true`), a frame is letterboxed into the smallest input that holds it (sides rounded up
    /// to the model's stride) instead of the full square. A 16:9 camera then costs a 416×256 inference
    /// instead of 416×416. Not with TensorRT, whose engines are built for one size.
    pub rectangular: bool,
    /// The CPU provider's arena allocator: tensors come from a pool that grows to the model's peak and is
    /// reused, instead of being allocated and freed (and their pages faulted in again) at every inference.
    pub cpu_arena: bool,
    /// TensorRT: build fp16 engines.
    pub fp16: bool,
    /// CUDA device for the GPU providers.
    pub device_id: i32,
    /// TensorRT engine cache. Default: `<state_dir>/engine-cache`.
    pub engine_cache_dir: Option<PathBuf>,
    /// IoU above which two boxes of the same class are one object.
    pub nms_iou: f32,
    /// At most this many detections per frame (highest scores kept).
    pub max_detections: usize,
    /// Model blue/green: how a candidate model is tried in shadow before it may serve.
    pub trial: TrialConfig,
}

/// `[detector.trial]`: a candidate model (a `…/cmd/model` install) runs beside the current one on a sample
/// of the frames, and replaces it only if it agrees, is about as fast, and does not fail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrialConfig {
    /// Compare on every n-th detected frame (the candidate's inference is the trial's cost).
    pub sample_every: u32,
    /// Frames to compare before deciding.
    pub frames: usize,
    /// When `timeout_s` passes first, decide on the frames compared if at least this many; else reject.
    pub min_frames: usize,
    pub timeout_s: u64,
    /// Largest share of detections without a counterpart in the other model.
    pub max_disagreement: f64,
    /// Largest p95 latency increase of the candidate (0.1: +10 %).
    pub max_latency_increase: f64,
    /// The candidate's error rate must stay below this.
    pub max_error_rate: f64,
    /// Two detections match when their labels are equal and their boxes overlap at least this much.
    pub match_iou: f32,
}

impl Default for TrialConfig {
    fn default() -> Self {
        let c = crate::detect::shadow::ShadowCriteria::default();
        Self {
            sample_every: 5,
            frames: 200,
            min_frames: 20,
            timeout_s: 3600,
            max_disagreement: c.max_disagreement,
            max_latency_increase: c.max_latency_increase,
            max_error_rate: c.max_error_rate,
            match_iou: c.match_iou,
        }
    }
}

impl TrialConfig {
    pub fn criteria(&self) -> crate::detect::shadow::ShadowCriteria {
        crate::detect::shadow::ShadowCriteria {
            max_disagreement: self.max_disagreement,
            max_latency_increase: self.max_latency_increase,
            max_error_rate: self.max_error_rate,
            match_iou: self.match_iou,
        }
    }

    fn validate(&self, key: &str, p: &mut Vec<Problem>) {
        let mut bad = |k: &str, m: String| p.push(Problem::new(format!("{key}.trial.{k}"), m));
        if !(1..=1000).contains(&self.sample_every) {
            bad("sample_every", format!("{} is out of range: use 1..=1000 (5 compares one frame in five)", self.sample_every));
        }
        if !(1..=100_000).contains(&self.frames) {
            bad("frames", format!("{} is out of range: use 1..=100000", self.frames));
        }
        if self.min_frames == 0 || self.min_frames > self.frames {
            bad("min_frames", format!("{} is out of range: use 1..=frames ({})", self.min_frames, self.frames));
        }
        if !(10..=7 * 86_400).contains(&self.timeout_s) {
            bad("timeout_s", format!("{} is out of range: use 10..=604800", self.timeout_s));
        }
        for (k, v) in [("max_disagreement", self.max_disagreement), ("max_error_rate", self.max_error_rate)] {
            if !(0.0..=1.0).contains(&v) {
                bad(k, format!("{v} is out of range: use a fraction 0..=1 (0.2 is 20 %)"));
            }
        }
        if !(0.0..=10.0).contains(&self.max_latency_increase) {
            bad("max_latency_increase", format!("{} is out of range: use a fraction 0..=10 (0.1 is +10 %)", self.max_latency_increase));
        }
        if !(0.05..=0.95).contains(&self.match_iou) {
            bad("match_iou", format!("{} is out of range: use 0.05..=0.95", self.match_iou));
        }
    }
}

/// Hard cap on detections per frame: the per-frame result lives in a fixed-capacity vector.
pub const MAX_DETECTIONS: usize = 256;

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("/usr/share/perch/models/yolox_nano.toml"),
            providers: vec![Provider::Cpu],
            allow_cpu_fallback: false,
            ort_library: None,
            intra_threads: 1,
            intra_spinning: false,
            rectangular: true,
            cpu_arena: true,
            fp16: true,
            device_id: 0,
            engine_cache_dir: None,
            nms_iou: 0.45,
            max_detections: 100,
            trial: TrialConfig::default(),
        }
    }
}

impl Section for DetectorConfig {
    fn resolve_paths(&mut self, base: &Path) {
        crate::util::config::resolve(base, &mut self.model);
        for p in [&mut self.ort_library, &mut self.engine_cache_dir].into_iter().flatten() {
            crate::util::config::resolve(base, p);
        }
    }

    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.providers.is_empty() {
            p.push(Problem::new(format!("{key}.providers"), "empty: list at least one of \"tensorrt\", \"cuda\", \"cpu\""));
        }
        let mut seen = Vec::new();
        for prov in &self.providers {
            if seen.contains(prov) {
                p.push(Problem::new(format!("{key}.providers"), format!("{:?} is listed twice", prov.name())));
            }
            seen.push(*prov);
        }
        if !(0.05..=0.95).contains(&self.nms_iou) {
            p.push(Problem::new(format!("{key}.nms_iou"), format!("{} is out of range: use 0.05..=0.95 (0.45 is usual)", self.nms_iou)));
        }
        if self.max_detections == 0 || self.max_detections > MAX_DETECTIONS {
            p.push(Problem::new(format!("{key}.max_detections"), format!("{} is out of range: use 1..={MAX_DETECTIONS}", self.max_detections)));
        }
        if self.intra_threads > 256 {
            p.push(Problem::new(format!("{key}.intra_threads"), format!("{} is out of range: use 0 (automatic) up to 256", self.intra_threads)));
        }
        self.trial.validate(key, &mut p);
        if self.model.as_os_str().is_empty() {
            p.push(Problem::new(format!("{key}.model"), "missing: point it at a model manifest, e.g. /usr/share/perch/models/yolox_nano.toml"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_settings_are_checked_each_by_name() {
        let cfg: DetectorConfig = toml::from_str("[trial]\nframes = 50\nmax_disagreement = 0.1").unwrap();
        assert!(cfg.validate("detector").is_empty());
        assert_eq!((cfg.trial.frames, cfg.trial.sample_every, cfg.trial.criteria().max_disagreement), (50, 5, 0.1));
        let cfg: DetectorConfig = toml::from_str(
            "[trial]\nsample_every = 0\nframes = 10\nmin_frames = 11\ntimeout_s = 1\nmax_disagreement = 2\nmax_latency_increase = -1\nmatch_iou = 1",
        )
        .unwrap();
        let keys: Vec<String> = cfg.validate("detector").into_iter().map(|p| p.key).collect();
        for k in ["sample_every", "min_frames", "timeout_s", "max_disagreement", "max_latency_increase", "match_iou"] {
            assert!(keys.contains(&format!("detector.trial.{k}")), "{k} not named: {keys:?}");
        }
        assert!(toml::from_str::<DetectorConfig>("[trial]\nframe = 5").is_err(), "unknown keys are refused");
    }
}
