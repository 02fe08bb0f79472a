//! ONNX Runtime: finding the library, one environment per process, sessions with execution providers.
//!
//! perch links ONNX Runtime at run time (`ort`'s `load-dynamic`): the same binary runs with the CPU build
//! from the `onnxruntime` wheel, `onnxruntime-gpu` on a T4 box, or JetPack's build on a Jetson. Providers
//! are registered in the configured order; a GPU provider that cannot be registered is an error unless
//! `allow_cpu_fallback` is set — a box silently running a GPU workload on its CPU is a box that drops frames
//! without anyone knowing why.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use super::DetectorState;
use super::config::{DetectorConfig, Provider};
use super::manifest::{Layout, ModelManifest};

/// Where perch looks for `libonnxruntime.so` when neither the config nor `ORT_DYLIB_PATH` names one.
pub const DEFAULT_ORT_PATHS: &[&str] = &["/usr/lib/perch/libonnxruntime.so", "/usr/local/lib/perch/libonnxruntime.so", "/usr/lib/libonnxruntime.so"];

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("ONNX Runtime library not found (looked at {looked}): install it with scripts/setup.sh, set ORT_DYLIB_PATH, or set detector.ort_library")]
    LibraryNotFound { looked: String },
    #[error("could not load ONNX Runtime from {path}: {message} (check that it is libonnxruntime.so >= 1.20 for this CPU architecture)")]
    Library { path: PathBuf, message: String },
    #[error(
        "execution provider `{provider}` could not be registered: {message}. Install an ONNX Runtime build with {provider} support (onnxruntime-gpu, or JetPack's build on Jetson) and its CUDA/TensorRT libraries, or set detector.allow_cpu_fallback = true to run on the CPU"
    )]
    Provider { provider: &'static str, message: String },
    #[error("ONNX Runtime could not load the model: {0}")]
    Session(String),
    #[error("the model has no {kind} named {name:?} (it has {available:?}): fix `{kind}.name` in the model manifest")]
    Name { kind: &'static str, name: String, available: Vec<String> },
    #[error("inference failed: {0}")]
    Run(String),
}

static ENVIRONMENT: OnceLock<Result<(Environment, PathBuf), String>> = OnceLock::new();

/// Resolves the ONNX Runtime library path: configured, then `ORT_DYLIB_PATH`, then the default locations.
pub fn library_path(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = DEFAULT_ORT_PATHS.iter().map(PathBuf::from).collect();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("libonnxruntime.so"));
    }
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| EngineError::LibraryNotFound { looked: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") })
}

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one).
fn environment(configured: Option<&Path>) -> Result<&'static Environment, EngineError> {
    let path = library_path(configured)?;
    let env = ENVIRONMENT.get_or_init(|| {
        if !path.exists() {
            return Err(format!("{} does not exist", path.display()));
        }
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        builder.with_name("perch").with_telemetry(false).build().map(|env| (env, path.clone())).map_err(|e| e.to_string())
    });
    match env {
        Ok((env, loaded)) => {
            if *loaded != path {
                tracing::warn!(loaded = %loaded.display(), requested = %path.display(), "ONNX Runtime is already loaded from another path; using it");
            }
            Ok(env)
        }
        Err(message) => Err(EngineError::Library { path, message: message.clone() }),
    }
}

/// Input tensors kept for rectangular inference: one per input size in use (cameras of a few aspect
/// ratios); the least recently used goes when another size comes.
const INPUT_SIZES: usize = 4;

/// A loaded model session with its reusable input tensors.
pub struct Engine {
    session: Session,
    /// Input tensors by `(width, height)`, the one in use first.
    inputs: Vec<((u32, u32), Tensor<f32>)>,
    layout: Layout,
    output_name: String,
    /// The first provider that registered, i.e. the one doing the work.
    pub provider: Provider,
    /// Rectangular inference: the multiple each input side is rounded up to; `None`: the manifest's size.
    pub rectangular: Option<u32>,
}

impl Engine {
    /// Creates a session for `manifest`, reporting progress through `state`.
    pub fn create(
        manifest: &ModelManifest,
        model: &[u8],
        cfg: &DetectorConfig,
        engine_cache: &Path,
        state: &dyn Fn(DetectorState),
    ) -> Result<Self, EngineError> {
        let env = environment(cfg.ort_library.as_deref())?;
        let err = |e: ort::Error| EngineError::Session(e.to_string());
        let mut builder = Session::builder(env)
            .map_err(err)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.into()))?
            .with_intra_op_spinning(cfg.intra_spinning)
            .map_err(|e| err(e.into()))?
            .with_inter_op_spinning(false)
            .map_err(|e| err(e.into()))?;
        if cfg.intra_threads > 0 {
            builder = builder.with_intra_threads(cfg.intra_threads).map_err(|e| err(e.into()))?;
        }
        let mut active: Option<Provider> = None;
        for &provider in &cfg.providers {
            let dispatch = match provider {
                Provider::Tensorrt => {
                    if let Err(e) = std::fs::create_dir_all(engine_cache) {
                        tracing::warn!(dir = %engine_cache.display(), "cannot create the TensorRT engine cache ({e}); engines will be rebuilt at every start");
                    }
                    ort::ep::TensorRT::default()
                        .with_device_id(cfg.device_id)
                        .with_fp16(cfg.fp16)
                        .with_engine_cache(true)
                        .with_engine_cache_path(engine_cache.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(engine_cache.display())
                        .build()
                }
                Provider::Cuda => ort::ep::CUDA::default().with_device_id(cfg.device_id).build(),
                Provider::Cpu => ort::ep::CPU::default().with_arena_allocator(cfg.cpu_arena).build(),
            };
            match dispatch.register(&mut builder) {
                Ok(()) => {
                    tracing::info!(provider = provider.name(), "execution provider registered");
                    active.get_or_insert(provider);
                }
                Err(e) if provider.is_gpu() && !cfg.allow_cpu_fallback => {
                    return Err(EngineError::Provider { provider: provider.name(), message: e.to_string() });
                }
                Err(e) => tracing::warn!(
                    provider = provider.name(),
                    "execution provider unavailable ({e}); continuing with the next one because allow_cpu_fallback = true"
                ),
            }
        }
        let provider = active.unwrap_or(Provider::Cpu);
        if active.is_none() {
            tracing::warn!("no configured execution provider registered: running on the CPU (allow_cpu_fallback = true)");
        }
        if provider == Provider::Tensorrt {
            // The first start on a new model or TensorRT version builds an engine: minutes on a Jetson.
            state(DetectorState::BuildingEngine);
        }
        let rectangular = (cfg.rectangular && manifest.input.rectangular && provider != Provider::Tensorrt).then(|| manifest.stride_multiple());
        let session = match rectangular {
            Some(_) => {
                let hw = match manifest.input.layout {
                    Layout::Nchw => (2, 3),
                    Layout::Nhwc => (1, 2),
                };
                let free = super::onnx_shape::free_spatial_dims(model, &manifest.input.name, hw)
                    .map_err(|e| EngineError::Session(format!("{e} (the manifest says `rectangular = true`; set it to false for this model)")))?;
                builder.commit_from_memory(&free).map_err(err)?
            }
            None => builder.commit_from_memory(model).map_err(err)?,
        };

        let inputs: Vec<String> = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        if !inputs.contains(&manifest.input.name) {
            return Err(EngineError::Name { kind: "input", name: manifest.input.name.clone(), available: inputs });
        }
        let output_name = manifest.output.name().to_string();
        if !outputs.contains(&output_name) {
            return Err(EngineError::Name { kind: "output", name: output_name, available: outputs });
        }
        let mut engine = Self { session, inputs: Vec::with_capacity(INPUT_SIZES), layout: manifest.input.layout, output_name, provider, rectangular };
        engine.input_mut((manifest.input.width, manifest.input.height))?;
        if let Some(m) = rectangular {
            tracing::info!(multiple = m, "rectangular inference: frames are letterboxed into the smallest input that holds them");
        }
        Ok(engine)
    }

    /// The values of the input tensor of `size` (width, height), to be filled before [`Self::run`], which
    /// runs this one. Made on first use of a size (rectangular inference), then reused.
    pub fn input_mut(&mut self, size: (u32, u32)) -> Result<&mut [f32], EngineError> {
        match self.inputs.iter().position(|(s, _)| *s == size) {
            Some(0) => {}
            Some(i) => self.inputs[..=i].rotate_right(1),
            None => {
                let (w, h) = (size.0 as usize, size.1 as usize);
                let shape = match self.layout {
                    Layout::Nchw => [1, 3, h, w],
                    Layout::Nhwc => [1, h, w, 3],
                };
                let tensor = Tensor::from_array((shape, vec![0f32; 3 * w * h])).map_err(|e| EngineError::Session(e.to_string()))?;
                if self.inputs.len() == INPUT_SIZES {
                    self.inputs.pop();
                }
                self.inputs.insert(0, (size, tensor));
            }
        }
        Ok(self.inputs[0].1.extract_tensor_mut().1)
    }

    /// Runs the model on the input last returned by [`Self::input_mut`] and hands the output tensor's shape
    /// and values to `f`.
    pub fn run<R>(&mut self, f: impl FnOnce(&[i64], &[f32]) -> R) -> Result<R, EngineError> {
        let input = &self.inputs[0].1;
        let outputs = self.session.run(ort::inputs![input]).map_err(|e| EngineError::Run(e.to_string()))?;
        let value = outputs.get(&self.output_name).ok_or_else(|| EngineError::Run(format!("output {:?} missing", self.output_name)))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| EngineError::Run(e.to_string()))?;
        Ok(f(shape, data))
    }
}
