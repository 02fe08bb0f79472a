//! Who may ask: the bearer token of `/status` and the evidence API, and the loopback rule of the status page.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// The client's address, for the loopback-only routes.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// A request turned away: its status and a message saying what to do.
#[derive(Debug)]
pub struct Refusal {
    pub code: StatusCode,
    pub message: String,
    /// Ask for a bearer token (`WWW-Authenticate`).
    pub challenge: bool,
}

impl Refusal {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), challenge: false }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = self.message;
        if !body.ends_with('\n') {
            body.push('\n');
        }
        if self.challenge { (self.code, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response() } else { (self.code, body).into_response() }
    }
}

/// The bearer token's SHA-256; `None` when no token could be loaded (then bearer routes refuse everyone).
#[derive(Clone, Copy)]
pub struct Token(pub Option<[u8; 32]>);

impl Token {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| Sha256::digest(t.as_bytes()).into()))
    }

    /// `Ok` when the request carries the token, else the answer to give.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        // The scheme is case-insensitive (RFC 9110); the token is not.
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token));
        match (&self.0, given) {
            (Some(expected), Some(given)) if token_matches(expected, given.trim().as_bytes()) => Ok(()),
            (None, _) => Err(Refusal::new(StatusCode::UNAUTHORIZED, "the HTTP token could not be loaded: see perch's log and fix [http] token/token_file")),
            _ => Err(Refusal {
                challenge: true,
                ..Refusal::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (Authorization: Bearer <token from [http] token_file>)")
            }),
        }
    }

    /// The token, or a loopback client under a loopback name: the status page plays clips in a `<video>`,
    /// which cannot send a bearer token, and it is served to such clients only.
    pub fn check_or_loopback(&self, peer: &SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
        match self.check(headers) {
            Ok(()) => Ok(()),
            Err(_) if loopback(peer, headers).is_none() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Compares SHA-256 digests in constant time: neither the token's content nor its length leaks through
/// response timing.
pub fn token_matches(expected: &[u8; 32], given: &[u8]) -> bool {
    let d = Sha256::digest(given);
    expected.iter().zip(d.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The status page and its data are for people on the box (camera pictures are private): loopback clients
/// only, and only under a loopback name. A page from another site that a browser on the box (or at the far
/// end of an `ssh -L` tunnel) opens under a rebound DNS name reaches 127.0.0.1 too, but says its own name in
/// `Host:`, so it is refused.
pub fn loopback(peer: &SocketAddr, headers: &HeaderMap) -> Option<Response> {
    if !peer.ip().to_canonical().is_loopback() {
        return Some(
            (StatusCode::FORBIDDEN, "the status page is served to loopback clients only: use an SSH tunnel (ssh -L 8080:127.0.0.1:8080 <box>)\n")
                .into_response(),
        );
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    (!loopback_host(host)).then(|| {
        (StatusCode::MISDIRECTED_REQUEST, "the status page answers only as localhost, 127.0.0.1 or [::1]: open http://127.0.0.1:<port>/\n").into_response()
    })
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && (name.starts_with('[') || !name.contains(':')) =>
        {
            name
        }
        _ => host,
    };
    ["localhost", "127.0.0.1", "[::1]"].iter().any(|n| name.eq_ignore_ascii_case(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare_accepts_only_the_exact_token() {
        let expected: [u8; 32] = Sha256::digest(b"correct-horse-battery").into();
        assert!(token_matches(&expected, b"correct-horse-battery"));
        assert!(!token_matches(&expected, b"correct-horse-batter"));
        assert!(!token_matches(&expected, b"correct-horse-battery!"));
        assert!(!token_matches(&expected, b""));
    }

    #[test]
    fn the_page_is_for_loopback_clients_only() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        for ok in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(loopback(&ok.parse().unwrap(), &headers).is_none(), "{ok} refused");
        }
        for remote in ["10.1.2.3:5000", "192.168.0.9:80", "[2001:db8::1]:443"] {
            assert_eq!(loopback(&remote.parse().unwrap(), &headers).map(|r| r.status()), Some(StatusCode::FORBIDDEN), "{remote} served");
        }
    }

    #[test]
    fn the_page_answers_only_under_a_loopback_name() {
        for ok in ["localhost", "localhost:8080", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:8080", "[::1]", "[::1]:8080"] {
            assert!(loopback_host(ok), "{ok} refused");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "127.0.0.2",
            "::1",
            "[::1]x",
            "localhost:",
            "localhost:80a",
        ] {
            assert!(!loopback_host(bad), "{bad} accepted");
        }
    }

    #[test]
    fn evidence_takes_the_token_or_a_loopback_client() {
        let token = Token::new(Some("s3cret"));
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        let (local, remote): (SocketAddr, SocketAddr) = ("127.0.0.1:5000".parse().unwrap(), "10.1.2.3:5000".parse().unwrap());
        assert!(token.check_or_loopback(&local, &headers).is_ok());
        assert_eq!(token.check_or_loopback(&remote, &headers).unwrap_err().code, StatusCode::UNAUTHORIZED);
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(token.check_or_loopback(&remote, &headers).is_ok());
        assert!(Token::new(None).check(&headers).is_err(), "no token loaded: nobody passes");
    }
}
