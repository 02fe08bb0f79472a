//! Capture: camera streams in, scaled BGR frames for detection out.
//!
//! - [`source`]: the camera URIs perch accepts.
//! - [`pipeline`]: one GStreamer pipeline (decode → rate limit → scale → BGR → appsink).
//! - [`camera`]: the supervisor that keeps a camera's pipeline alive (backoff, stall detection).
//! - [`file`]: a file decoded frame by frame (one-shot detection, the golden frame).
//! - [`frame`]: the frame contract and the drop-to-latest hand-off to the detector.

pub mod camera;
pub mod encoded;
pub mod file;
pub mod frame;
pub mod pipeline;
pub mod settings;
pub mod source;
pub mod status;

pub use camera::Camera;
pub use file::for_each_frame;
pub use frame::{Frame, FrameHub, FrameInfo, FrameView};
pub use pipeline::{CaptureError, CapturePipeline, Pacing, PipelineSpec, Pull};
pub use settings::{CaptureSettings, DecodeMode, RtspTransport};
pub use source::Source;
pub use status::{CameraSnapshot, CameraState, CameraStatus};
