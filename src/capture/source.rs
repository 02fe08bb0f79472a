//! Camera source URIs and what kind of stream each one is.

use std::path::PathBuf;

/// Where frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An RTSP camera or NVR stream; credentials may be in the URI (they are masked in every output).
    Rtsp(String),
    /// A video or image file, decoded as fast as the consumer takes frames (one-shot) or in real time (service).
    File(PathBuf),
    /// A USB (UVC) camera through V4L2.
    V4l2(PathBuf),
    /// GStreamer's `videotestsrc` with a named pattern, live at `fps`.
    Test { pattern: String, width: u32, height: u32, fps: u32 },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("missing: set the camera's source URI (rtsp://, file://, v4l2:///dev/videoN or test://)")]
    Empty,
    #[error("unsupported scheme in {0:?}: use rtsp://, rtsps://, file://, v4l2:///dev/videoN or test://PATTERN")]
    Scheme(String),
    #[error("{uri:?} is not a valid URI ({reason}); percent-encode special characters in the user name or password")]
    Invalid { uri: String, reason: String },
    #[error("{0:?} has no host: write rtsp://HOST[:PORT]/PATH")]
    NoHost(String),
    #[error("{0:?}: a V4L2 source names a device node, e.g. v4l2:///dev/video0")]
    V4l2Path(String),
    #[error("{0:?}: file sources need an absolute path, e.g. file:///var/lib/perch/sample.mp4")]
    FilePath(String),
    #[error("test pattern {0:?} is unknown: use one of {1}")]
    Pattern(String, String),
    #[error("{uri:?}: bad test source parameter {param:?}: use width, height and fps with whole numbers, e.g. test://ball?width=640&height=480&fps=25")]
    TestParam { uri: String, param: String },
}

/// Patterns of `videotestsrc` that make sense as a test camera.
const PATTERNS: &[&str] = &[
    "smpte",
    "snow",
    "black",
    "white",
    "red",
    "green",
    "blue",
    "checkers-1",
    "checkers-8",
    "circular",
    "blink",
    "ball",
    "gamut",
    "pinwheel",
    "spokes",
    "gradient",
    "colors",
];

/// File extensions decoded as single still images by `perch detect`.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "pnm", "ppm"];

impl Source {
    pub fn parse(uri: &str) -> Result<Self, SourceError> {
        let uri = uri.trim();
        if uri.is_empty() {
            return Err(SourceError::Empty);
        }
        let scheme = uri.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("rtsp") | Some("rtsps") | Some("rtspt") => {
                let url = url::Url::parse(uri).map_err(|e| SourceError::Invalid { uri: crate::util::mask_uri(uri), reason: e.to_string() })?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(SourceError::NoHost(crate::util::mask_uri(uri)));
                }
                Ok(Source::Rtsp(uri.to_string()))
            }
            Some("file") => {
                let path = &uri["file://".len()..];
                if !path.starts_with('/') {
                    return Err(SourceError::FilePath(uri.to_string()));
                }
                Ok(Source::File(PathBuf::from(path)))
            }
            Some("v4l2") => {
                let path = &uri["v4l2://".len()..];
                if !path.starts_with("/dev/") {
                    return Err(SourceError::V4l2Path(uri.to_string()));
                }
                Ok(Source::V4l2(PathBuf::from(path)))
            }
            Some("test") => Self::parse_test(uri),
            _ => Err(SourceError::Scheme(crate::util::mask_uri(uri))),
        }
    }

    fn parse_test(uri: &str) -> Result<Self, SourceError> {
        let rest = &uri["test://".len()..];
        let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
        let pattern = if pattern.is_empty() { "ball" } else { pattern.trim_end_matches('/') };
        if !PATTERNS.contains(&pattern) {
            return Err(SourceError::Pattern(pattern.to_string(), PATTERNS.join(", ")));
        }
        let (mut width, mut height, mut fps) = (640, 480, 25);
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let bad = || SourceError::TestParam { uri: uri.to_string(), param: kv.to_string() };
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            let v: u32 = v.parse().map_err(|_| bad())?;
            match k {
                "width" if (16..=7680).contains(&v) => width = v,
                "height" if (16..=4320).contains(&v) => height = v,
                "fps" if (1..=120).contains(&v) => fps = v,
                _ => return Err(bad()),
            }
        }
        Ok(Source::Test { pattern: pattern.to_string(), width, height, fps })
    }

    /// Live sources run in real time and are reconnected after errors and EOS.
    pub fn is_live(&self) -> bool {
        !matches!(self, Source::File(_))
    }

    /// A still image (by file extension): one frame, no rate limiting.
    pub fn is_image(&self) -> bool {
        match self {
            Source::File(p) => p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())),
            _ => false,
        }
    }

    /// The URI GStreamer's `uridecodebin` takes for this source (`None` for test patterns).
    pub fn gst_uri(&self) -> Option<String> {
        match self {
            Source::Rtsp(u) => Some(u.clone()),
            Source::File(p) => Some(format!("file://{}", p.display())),
            Source::V4l2(p) => Some(format!("v4l2://{}", p.display())),
            Source::Test { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(Source::parse("rtsp://a:b@cam:554/x").unwrap(), Source::Rtsp("rtsp://a:b@cam:554/x".into()));
        assert_eq!(Source::parse("file:///v/a.mp4").unwrap(), Source::File("/v/a.mp4".into()));
        assert_eq!(Source::parse("v4l2:///dev/video0").unwrap(), Source::V4l2("/dev/video0".into()));
        assert_eq!(
            Source::parse("test://ball?width=320&height=240&fps=10").unwrap(),
            Source::Test { pattern: "ball".into(), width: 320, height: 240, fps: 10 }
        );
        assert_eq!(Source::parse("test://").unwrap(), Source::Test { pattern: "ball".into(), width: 640, height: 480, fps: 25 });
    }

    #[test]
    fn refuses_bad_uris_with_a_fix() {
        assert_eq!(Source::parse(""), Err(SourceError::Empty));
        assert!(matches!(Source::parse("http://cam/x"), Err(SourceError::Scheme(_))));
        assert!(matches!(Source::parse("v4l2://video0"), Err(SourceError::V4l2Path(_))));
        assert!(matches!(Source::parse("file://rel.mp4"), Err(SourceError::FilePath(_))));
        assert!(matches!(Source::parse("test://nope"), Err(SourceError::Pattern(..))));
        assert!(matches!(Source::parse("test://ball?fps=0"), Err(SourceError::TestParam { .. })));
    }

    #[test]
    fn errors_never_show_the_password() {
        let e = Source::parse("rtsp://admin:s3cret@/x").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn images_and_live() {
        assert!(Source::parse("file:///a/b.JPG").unwrap().is_image());
        assert!(!Source::parse("file:///a/b.mp4").unwrap().is_image());
        assert!(!Source::parse("file:///a/b.mp4").unwrap().is_live());
        assert!(Source::parse("test://ball").unwrap().is_live());
    }
}
