//! Events: what the tracker reports, made durable in the [`outbox`] before they are published.

pub mod outbox;

pub use outbox::{Outbox, OutboxError, OutboxStats};
