//! Small helpers shared by every stage.

pub mod backoff;
pub mod secret;

pub use backoff::Backoff;
pub use secret::mask_uri;
