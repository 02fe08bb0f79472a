//! The OTA error: what went wrong, in words that say what to do. A leaf module, so the bundle, state and
//! bootloader modules share it without depending on the `Ota` that composes them.

#[derive(Debug, thiserror::Error)]
pub enum OtaError {
    #[error("bundle rejected: {0}")]
    Bundle(String),
    #[error("signature rejected: {0}")]
    Signature(String),
    #[error("install refused: {0}")]
    Refused(String),
    #[error("bootloader: {0}")]
    Boot(String),
    #[error("{0}")]
    Io(String),
    #[error("OTA state: {0}")]
    State(String),
}
