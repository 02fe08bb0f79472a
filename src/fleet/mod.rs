//! Fleet updates over MQTT, in two halves that share only the message formats:
//!
//! - [`device`]: what every box runs (the `cmd/ota` and `cmd/model` agents);
//! - [`operator`]: the tools that drive a fleet (rollouts, status, the bundle server, simulated devices).

pub mod device;
pub mod operator;
