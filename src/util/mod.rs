//! Small helpers shared by every stage.

pub mod backoff;
pub mod heartbeat;
pub mod secret;

pub use backoff::Backoff;
pub use heartbeat::Heartbeat;
pub use secret::mask_uri;
