//! `perch fleet serve DIR`: a small read-only HTTP/1.1 file server for bundles in labs and tests (GET and
//! HEAD, one thread per connection, one request per connection). Any HTTP(S) server does the same job in
//! production; devices check the signature, so the server is not trusted.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};

/// Serves `dir` on `listen` until the process ends; prints `serving DIR on http://ADDR/` once bound.
pub fn run(dir: &Path, listen: &str) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(dir).map_err(|e| anyhow::anyhow!("cannot serve {}: {e}", dir.display()))?;
    let listener = TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}: pick a free address with --listen"))?;
    println!("serving {} on http://{}/", dir.display(), listener.local_addr()?);
    for stream in listener.incoming().flatten() {
        let dir = dir.clone();
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &dir) {
                tracing::debug!("fleet serve: {e}");
            }
        });
    }
    Ok(())
}

/// The file a request path names inside `dir`, refusing anything that leaves it.
fn resolve(dir: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8().ok()?;
    let rel = Path::new(decoded.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(rel))
}

fn handle(stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut out = std::io::BufWriter::new(stream);
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let reply =
        |out: &mut dyn Write, status: &str, body: &str| write!(out, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    if method != "GET" && method != "HEAD" {
        return reply(&mut out, "405 Method Not Allowed", "only GET and HEAD\n");
    }
    let file = resolve(dir, target).and_then(|p| std::fs::File::open(p).ok()).filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
    let Some(mut file) = file else {
        return reply(&mut out, "404 Not Found", "not found\n");
    };
    let len = file.metadata()?.len();
    write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")?;
    if method == "GET" {
        std::io::copy(&mut file, &mut out)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let d = Path::new("/srv/b");
        assert_eq!(resolve(d, "/x.bundle"), Some(PathBuf::from("/srv/b/x.bundle")));
        assert_eq!(resolve(d, "/a%20b?x=1"), Some(PathBuf::from("/srv/b/a b")));
        assert_eq!(resolve(d, "/../etc/passwd"), None);
        assert_eq!(resolve(d, "/a/%2e%2e/%2e%2e/etc"), None);
    }
}
