//! Detector configuration (`[detector]` table).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Problem;

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
    /// Threads for one inference (0: ONNX Runtime's default, one per core).
    pub intra_threads: usize,
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
            intra_threads: 0,
            fp16: true,
            device_id: 0,
            engine_cache_dir: None,
            nms_iou: 0.45,
            max_detections: 100,
        }
    }
}

impl DetectorConfig {
    pub fn validate(&self, key: &str) -> Vec<Problem> {
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
        if self.model.as_os_str().is_empty() {
            p.push(Problem::new(format!("{key}.model"), "missing: point it at a model manifest, e.g. /usr/share/perch/models/yolox_nano.toml"));
        }
        p
    }
}
