//! Detection: a frame in, boxes with labels and scores (in source pixels) out.
//!
//! - [`manifest`]: what a model expects and produces, with its pinned checksum.
//! - [`preprocess`]: letterbox into a reused input buffer.
//! - [`engine`]: ONNX Runtime sessions and execution providers.
//! - [`decode`]: YOLOX / YOLOv8-style decoders and class-aware NMS.
//! - [`worker`]: the service loop between the capture hand-off and the next stage.
//! - [`shadow`], [`trial`]: model blue/green, a candidate in shadow beside the current model.

pub mod cadence;
pub mod config;
pub mod decode;
pub mod engine;
pub mod manifest;
pub mod onnx_shape;
pub mod preprocess;
pub mod shadow;
pub mod trial;
pub mod worker;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use config::{DetectorConfig, MAX_DETECTIONS, Provider};
use decode::Candidate;
pub use engine::{Engine, EngineError};
pub use manifest::{ManifestError, ModelManifest, OutputFormat};
use preprocess::{PreprocessError, Preprocessor};

use crate::capture::FrameView;

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub class_id: u16,
    /// The model's name for the class (shared, so cloning a detection never allocates).
    pub label: Arc<str>,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in source pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Detections of one frame: bounded, allocated once.
pub type Detections = heapless::Vec<Detection, MAX_DETECTIONS>;

/// Where the detector is in its life; exposed by health and readiness checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DetectorState {
    Loading,
    /// TensorRT is building (or loading from its cache) an engine for this GPU.
    BuildingEngine,
    Ready {
        provider: Provider,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Decode(#[from] decode::DecodeError),
}

/// Time spent in each step of one frame.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.preprocess + self.inference + self.postprocess
    }
}

/// A model ready to run: preprocessor, session and decoder with their reusable buffers.
pub struct Detector {
    manifest: ModelManifest,
    labels: Vec<Arc<str>>,
    engine: Engine,
    pre: Preprocessor,
    candidates: Vec<Candidate>,
    scratch: Vec<bool>,
    nms_iou: f32,
    max_detections: usize,
}

impl Detector {
    /// Loads the model named by `cfg.model` (checksum verified) and creates its session.
    pub fn load(cfg: &DetectorConfig, engine_cache: &Path, state: &dyn Fn(DetectorState)) -> Result<Self, DetectError> {
        state(DetectorState::Loading);
        let manifest = ModelManifest::load(&cfg.model)?;
        let bytes = manifest.read_verified()?;
        let engine = Engine::create(&manifest, &bytes, cfg, engine_cache, state)?;
        tracing::info!(model = %manifest.name, provider = engine.provider.name(), "detector ready");
        state(DetectorState::Ready { provider: engine.provider });
        Ok(Self {
            labels: manifest.labels.iter().map(|l| Arc::from(l.as_str())).collect(),
            pre: Preprocessor::new(&manifest.input).rectangular(engine.rectangular),
            candidates: Vec::with_capacity(1024),
            scratch: Vec::with_capacity(1024),
            nms_iou: cfg.nms_iou,
            max_detections: cfg.max_detections.min(MAX_DETECTIONS),
            manifest,
            engine,
        })
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn provider(&self) -> Provider {
        self.engine.provider
    }

    /// The model input `frame` goes into (width, height): the model's size, or smaller with rectangular
    /// inference.
    pub fn input_size(&self, frame: &FrameView<'_>) -> (u32, u32) {
        self.pre.input_size(frame)
    }

    /// Detects objects scoring at least `min_score` in `frame`, writing them to `out` (cleared first).
    pub fn detect(&mut self, frame: &FrameView<'_>, min_score: f32, out: &mut Detections) -> Result<Timings, DetectError> {
        let t0 = Instant::now();
        let size = self.pre.input_size(frame);
        let letterbox = self.pre.run(frame, self.engine.input_mut(size)?)?;
        let t1 = Instant::now();
        let input = (letterbox.input_width, letterbox.input_height);
        let classes = self.labels.len();
        let cands = &mut self.candidates;
        cands.clear();
        let (decoded, t2) = match &self.manifest.output {
            OutputFormat::Yolox { strides, .. } => self.engine.run(|shape, data| {
                let t = Instant::now();
                (decode::decode_yolox(data, shape, input, strides, classes, min_score, cands), t)
            })?,
            OutputFormat::Yolov8 { .. } => self.engine.run(|shape, data| {
                let t = Instant::now();
                (decode::decode_yolov8(data, shape, classes, min_score, cands), t)
            })?,
        };
        decoded?;
        decode::nms(cands, self.nms_iou, self.max_detections, &mut self.scratch);
        out.clear();
        for c in cands.iter() {
            let det = Detection { class_id: c.class, label: self.labels[c.class as usize].clone(), score: c.score, bbox: letterbox.to_source(c.bbox) };
            if out.push(det).is_err() {
                break;
            }
        }
        let t3 = Instant::now();
        // Decoding runs inside the session's output borrow, from t2 on: it counts as postprocessing.
        Ok(Timings { preprocess: t1 - t0, inference: t2.saturating_duration_since(t1), postprocess: t3.saturating_duration_since(t2) })
    }
}
