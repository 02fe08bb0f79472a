//! Finding the model manifest for commands that take `--model` or fall back to the installed default.

use std::path::{Path, PathBuf};

use crate::config::{Config, Problem};
use crate::detect::ModelManifest;

/// Where an installed perch keeps its default model manifest.
pub const INSTALLED_MODEL: &str = "/usr/share/perch/models/yolox_nano.toml";

/// The model to use: `--model`, else the config's `detector.model` (when a config was given or the default
/// config exists), else `PERCH_MODEL`, `./models/yolox_nano.toml` (a source checkout), the installed one.
pub fn resolve(explicit: Option<&Path>, config: Option<&Config>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(c) = config {
        return c.detector.model.clone();
    }
    if let Some(p) = std::env::var_os("PERCH_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("models/yolox_nano.toml");
    if local.exists() { local } else { PathBuf::from(INSTALLED_MODEL) }
}

/// Problems between a config and the model it names: labels the model does not know.
pub fn check_labels(config: &Config, manifest: &ModelManifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, cam) in config.cameras.iter().enumerate() {
        for label in &cam.labels {
            if manifest.label_index(label).is_none() {
                let mut known = manifest.labels.clone();
                known.sort();
                problems.push(Problem::new(
                    format!("camera[{i}].labels"),
                    format!("{label:?} is not a label of model {:?}; known labels: {}", manifest.name, known.join(", ")),
                ));
            }
        }
    }
    problems
}
