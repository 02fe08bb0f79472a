//! The commands behind the CLI: the service (`run`), one-shot detection, the frame and recording benchmarks.

pub mod bench;
pub mod bench_record;
pub mod detect;
pub mod model;
pub mod ota;
pub mod run;
pub mod shadow;
pub mod status;
pub mod track;
