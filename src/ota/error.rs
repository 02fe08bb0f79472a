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
    /// The bootloader's tool or file failed at the OS level.
    #[error("bootloader: {what}: {source}")]
    BootFile {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A file, device or download failed, or a file perch wrote does not parse: `what` names it (and what
    /// to do), `source` is the OS's, HTTP client's or parser's error.
    #[error("{what}: {source}")]
    Caused {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("OTA state: {0}")]
    State(String),
}

impl OtaError {
    /// An I/O failure with what it was doing; the OS error is kept as the cause.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::caused(what, source)
    }

    /// The bootloader's tool or file failed at the OS level; the OS error is kept as the cause.
    pub fn boot_io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::BootFile { what: what.into(), source }
    }

    /// A library's error (HTTP, JSON) with what it was doing; kept as the cause.
    pub fn caused(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Caused { what: what.into(), source: Box::new(source) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_failure_names_what_failed_and_keeps_the_os_error_as_its_cause() {
        let e = OtaError::io("cannot read keyring /etc/perch/ota-keys", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "cannot read keyring /etc/perch/ota-keys: entity not found");
        let cause = std::error::Error::source(&e).expect("a cause");
        assert_eq!(cause.to_string(), "entity not found");
    }
}
