//! Events: what the tracker reports, made durable in the [`outbox`] before they are published.

pub mod config;
pub mod outbox;
pub mod publisher;
pub mod schema;

pub use outbox::{Outbox, OutboxError, OutboxStats};
