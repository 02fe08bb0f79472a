//! Model manifests: a small TOML file beside each `.onnx` describing how to feed it and read it.
//!
//! Keeping this out of code means a new model is a new manifest, not a new build: input size and layout,
//! channel order and normalisation, letterbox style, output decoder (`yolox` or `yolov8`), labels, and the
//! pinned SHA-256 that perch checks before loading the file. See `models/README.md`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::util::fs::hex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Bgr,
    Rgb,
}

/// Where the scaled picture sits in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Letterbox {
    /// YOLOX style: picture at the top-left, padding right and bottom.
    TopLeft,
    /// Ultralytics style: picture centred.
    Center,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub channels: ChannelOrder,
    /// Each pixel value (0–255) is multiplied by `scale`, then `(v - mean[c]) / std[c]`.
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default)]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
    /// Pixel value (0–255) of the padding.
    pub pad_value: u8,
    pub letterbox: Letterbox,
    /// The graph computes any input whose sides are multiples of its largest stride (no size baked into
    /// it): perch may then declare the input's size free and feed the letterboxed picture padded only to
    /// that multiple — 416×256 instead of 416×416 for a 16:9 camera (see `detector.rectangular`).
    #[serde(default)]
    pub rectangular: bool,
}

fn one() -> f32 {
    1.0
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

/// How to turn the output tensor into boxes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputFormat {
    /// `[1, N, 5 + C]`: per anchor (cx, cy, w, h) relative to its grid cell, objectness, C class scores
    /// (already sigmoided), anchors ordered by stride then row-major over each grid.
    Yolox { name: String, strides: Vec<u32> },
    /// `[1, 4 + C, N]`: per anchor (cx, cy, w, h) in input pixels, then C class scores; no objectness.
    Yolov8 { name: String },
}

impl OutputFormat {
    pub fn name(&self) -> &str {
        match self {
            OutputFormat::Yolox { name, .. } | OutputFormat::Yolov8 { name } => name,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The ONNX file, relative to the manifest.
    pub file: PathBuf,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    pub license: String,
    #[serde(default)]
    pub source: String,
    pub labels: Vec<String>,
    pub input: InputSpec,
    pub output: OutputFormat,
    /// Folder of the manifest; set by [`ModelManifest::load`].
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "cannot read model manifest {path}: {source} (set detector.model to a manifest such as models/yolox_nano.toml, or run scripts/setup.sh to install the default model)"
    )]
    Read { path: PathBuf, source: std::io::Error },
    #[error("model manifest {path}: `{key}`: {message}")]
    Parse { path: PathBuf, key: String, message: String },
    #[error("model manifest {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("model file {path} is missing: {source} (install it with scripts/setup.sh, or copy the file named in the manifest next to it)")]
    ModelMissing { path: PathBuf, source: std::io::Error },
    #[error(
        "model file {path} has SHA-256 {actual} but its manifest pins {expected}: the file is corrupt or a different model; reinstall it (scripts/setup.sh) or update the manifest"
    )]
    Checksum { path: PathBuf, expected: String, actual: String },
}

impl ModelManifest {
    /// Loads and validates a manifest. Accepts the manifest itself or the `.onnx` beside it.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let path = if path.extension().is_some_and(|e| e == "onnx") { path.with_extension("toml") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read { path: path.clone(), source })?;
        let de = toml::Deserializer::parse(&text).map_err(|e| ManifestError::Parse { path: path.clone(), key: "(syntax)".into(), message: e.to_string() })?;
        let mut m: ModelManifest = serde_path_to_error::deserialize(de).map_err(|e| ManifestError::Parse {
            path: path.clone(),
            key: e.path().to_string(),
            message: e.into_inner().message().to_string(),
        })?;
        m.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        m.validate().map_err(|message| ManifestError::Invalid { path: path.clone(), message })?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("`labels` is empty: list the class names in output order".into());
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`sha256` {:?} is not 64 hex digits", self.sha256));
        }
        let i = &self.input;
        if !(32..=4096).contains(&i.width) || !(32..=4096).contains(&i.height) {
            return Err(format!("`input` size {}x{} is out of range (32..=4096)", i.width, i.height));
        }
        if i.std.contains(&0.0) || i.scale == 0.0 {
            return Err("`input.std` and `input.scale` must not be zero".into());
        }
        if i.rectangular && (!i.width.is_multiple_of(self.stride_multiple()) || !i.height.is_multiple_of(self.stride_multiple())) {
            return Err(format!("`input.rectangular`: the input size {}x{} must be a multiple of {}", i.width, i.height, self.stride_multiple()));
        }
        if let OutputFormat::Yolox { strides, .. } = &self.output
            && (strides.is_empty() || strides.iter().any(|s| *s == 0 || !i.width.is_multiple_of(*s) || !i.height.is_multiple_of(*s)))
        {
            return Err(format!("`output.strides` {strides:?} must be non-zero and divide the input size"));
        }
        Ok(())
    }

    /// The multiple each side of a rectangular input must be: the largest stride of a YOLOX head; 32 for
    /// YOLOv8-style heads (their largest stride).
    pub fn stride_multiple(&self) -> u32 {
        match &self.output {
            OutputFormat::Yolox { strides, .. } => strides.iter().copied().max().unwrap_or(32),
            OutputFormat::Yolov8 { .. } => 32,
        }
    }

    /// Absolute path of the ONNX file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Checks the model file against the pinned SHA-256 and returns its bytes.
    pub fn read_verified(&self) -> Result<Vec<u8>, ManifestError> {
        let path = self.model_path();
        let bytes = std::fs::read(&path).map_err(|source| ManifestError::ModelMissing { path: path.clone(), source })?;
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&self.sha256) {
            return Err(ManifestError::Checksum { path, expected: self.sha256.to_lowercase(), actual });
        }
        Ok(bytes)
    }

    /// Index of a label name, if the model knows it.
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }
}
