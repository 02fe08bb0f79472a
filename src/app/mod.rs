//! The commands behind the CLI: the service (`run`), one-shot detection, the frame benchmark.

pub mod bench;
pub mod detect;
pub mod model;
pub mod ota;
pub mod run;
