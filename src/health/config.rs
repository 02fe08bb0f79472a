//! Settings of the local HTTP endpoints (`[http]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::util::config::{Problem, Section};

/// Shortest token accepted: a bearer token is a password, and a short one can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve `/health`, `/ready`, `/status`, `/metrics` and the status page.
    pub enabled: bool,
    /// Address to listen on. Loopback by default: the status page shows camera pictures.
    pub listen: String,
    /// Bearer token for `/status` (prefer `token_file`, which keeps it out of the config).
    pub token: Option<String>,
    /// File holding the bearer token (first line). Neither set: `<state_dir>/http.token`, created with a
    /// random token (mode 0600) on first start, and read from there by `perch status`.
    pub token_file: Option<PathBuf>,
}

// Hand-written so the token never reaches a log through `{:?}`.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { enabled: true, listen: "127.0.0.1:8080".into(), token: None, token_file: None }
    }
}

impl HttpConfig {
    /// Where the token lives when it is not in the config itself.
    pub fn token_path(&self, state_dir: &Path) -> PathBuf {
        self.token_file.clone().unwrap_or_else(|| state_dir.join("http.token"))
    }

    /// The address a client on this box connects to: the listen address, with an unspecified IP
    /// (`0.0.0.0`, `::`) replaced by loopback.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        let mut a: SocketAddr = self.listen.parse().ok()?;
        if a.ip().is_unspecified() {
            a.set_ip(if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        Some(a)
    }
}

impl Section for HttpConfig {
    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            p.push(Problem::new(format!("{key}.listen"), format!("{:?} is not an address: use IP:PORT, e.g. \"127.0.0.1:8080\"", self.listen)));
        }
        if self.token.is_some() && self.token_file.is_some() {
            p.push(Problem::new(format!("{key}.token"), "set either token or token_file, not both"));
        }
        if let Some(t) = &self.token
            && t.trim().len() < MIN_TOKEN_LEN
        {
            p.push(Problem::new(format!("{key}.token"), format!("too short: use at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)")));
        }
        p
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(f) = self.token_file.as_mut() {
            crate::util::config::resolve(base, f);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the HTTP token file {path}: {source} (check [http] token_file, or run as the service's user)")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the HTTP token file {path} is empty or shorter than {MIN_TOKEN_LEN} characters: write a longer token into it")]
    TooShort { path: PathBuf },
    #[error("cannot create the HTTP token file {path}: {source} (check that state_dir is writable)")]
    Create { path: PathBuf, source: std::io::Error },
}

/// Reads the token: from the config, the token file, or (`create`) a new random one in the default file.
pub fn load_token(cfg: &HttpConfig, state_dir: &Path, create: bool) -> Result<String, TokenError> {
    if let Some(t) = &cfg.token {
        return Ok(t.trim().to_string());
    }
    let path = cfg.token_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let t = text.lines().next().unwrap_or("").trim().to_string();
            if t.len() < MIN_TOKEN_LEN { Err(TokenError::TooShort { path }) } else { Ok(t) }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create && cfg.token_file.is_none() => {
            let token = random_token().map_err(|source| TokenError::Create { path: path.clone(), source })?;
            write_private(&path, &token).map_err(|source| TokenError::Create { path: path.clone(), source })?;
            tracing::info!(file = %path.display(), "created a random HTTP bearer token");
            Ok(token)
        }
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

/// 32 bytes from the kernel's CSPRNG, as hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Creates `path` readable by its owner only, without ever being readable by others in between.
fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = HttpConfig::default();
        assert!(c.validate("http").is_empty());
        assert!(c.local_addr().unwrap().ip().is_loopback());
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = HttpConfig { listen: "localhost".into(), token: Some("short".into()), token_file: Some("/x".into()), ..Default::default() };
        let keys: Vec<_> = c.validate("http").into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"http.listen".to_string()) && keys.contains(&"http.token".to_string()), "{keys:?}");
        let any = HttpConfig { listen: "0.0.0.0:9000".into(), ..Default::default() };
        assert_eq!(any.local_addr().unwrap().to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn token_is_created_once_private_and_never_in_debug() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = HttpConfig::default();
        assert!(matches!(load_token(&c, dir.path(), false), Err(TokenError::Read { .. })));
        let t = load_token(&c, dir.path(), true).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(load_token(&c, dir.path(), true).unwrap(), t, "the token is kept across restarts");
        let mode = std::fs::metadata(dir.path().join("http.token")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "token file readable by others: {mode:o}");
        let inline = HttpConfig { token: Some("a-very-secret-token-123".into()), ..Default::default() };
        assert!(!format!("{inline:?}").contains("secret"));
    }
}
