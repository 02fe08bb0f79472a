//! What every config section shares: a [`Problem`] names a key and what to do about it, and a
//! [`Section`] validates itself and resolves its relative paths. A leaf module: the stages' sections use
//! it, and `crate::config` composes them, so no section needs the composed configuration.

use std::path::{Path, PathBuf};

/// One problem found in a configuration: the key it is about and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// One section of the configuration file (`[detector]`, `[ota]`, a `[[camera]]`).
pub trait Section {
    /// Every problem in this section, each key prefixed with `key` (`camera[1]`).
    fn validate(&self, key: &str) -> Vec<Problem>;

    /// Makes the section's relative paths relative to `base`, the config file's folder.
    fn resolve_paths(&mut self, _base: &Path) {}
}

/// Joins a relative, non-empty `path` to `base`.
pub fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() && !path.as_os_str().is_empty() {
        *path = base.join(&*path);
    }
}

/// Letters, digits, `-` and `_`: safe in MQTT topics, file names and metric labels.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
