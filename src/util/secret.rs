//! Masking of credentials in URIs.
//!
//! Camera URIs often carry a user and password (`rtsp://admin:hunter2@cam/stream`) or a token in the query
//! string. Every log line and status output goes through [`mask_uri`] (or [`mask_in_text`] for free text such
//! as GStreamer error messages, which quote the URI they failed on), so a secret never reaches the journal.

/// Query parameters whose values are treated as secrets.
const SECRET_PARAMS: &[&str] = &["password", "passwd", "pass", "pwd", "token", "access_token", "key", "secret", "auth", "signature", "sig"];

/// Returns `uri` with the password (and any secret-looking query value) replaced by `***`.
///
/// The user name is kept: it helps an operator see which account a camera uses. Strings that do not parse as
/// URIs are returned unchanged unless they contain an `@`, in which case everything before it is masked.
pub fn mask_uri(uri: &str) -> String {
    match url::Url::parse(uri) {
        // `user:pass@host` without `//` parses with `user` as the scheme: treat it as unparsable.
        Ok(mut url) if !url.cannot_be_a_base() => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                        (k.into_owned(), if secret { "***".to_string() } else { v.into_owned() })
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            // `Url` percent-encodes the stars; an operator should read them as stars.
            url.to_string().replace("%2A%2A%2A", "***")
        }
        _ => match uri.rfind('@') {
            Some(at) => format!("***{}", &uri[at..]),
            None => uri.to_string(),
        },
    }
}

/// Masks every URI with credentials found inside free text (error messages, debug output).
pub fn mask_in_text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The secret strings contained in `uri` (password and secret query values), raw and percent-decoded, so
/// they can be scrubbed from text that quotes the URI in either form.
pub fn secrets_of(uri: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(uri) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(p) = url.password() {
        out.push(p.to_string());
        if let Ok(decoded) = percent_encoding::percent_decode_str(p).decode_utf8() {
            out.push(decoded.into_owned());
        }
    }
    for (k, v) in url.query_pairs() {
        if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) && !v.is_empty() {
            out.push(v.into_owned());
        }
    }
    // Longest first, so a secret that contains another is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_keeps_user_and_host() {
        let m = mask_uri("rtsp://admin:hunter2@10.0.0.5:554/stream1");
        assert_eq!(m, "rtsp://admin:***@10.0.0.5:554/stream1");
    }

    #[test]
    fn masks_secret_query_values() {
        let m = mask_uri("rtsp://cam.local/live?channel=1&token=abc123");
        assert!(m.contains("channel=1"), "{m}");
        assert!(m.contains("token=***"), "{m}");
        assert!(!m.contains("abc123"), "{m}");
    }

    #[test]
    fn leaves_uris_without_secrets_alone() {
        assert_eq!(mask_uri("file:///var/media/a.mp4"), "file:///var/media/a.mp4");
        assert_eq!(mask_uri("test://ball"), "test://ball");
    }

    #[test]
    fn unparsable_uri_with_at_is_masked() {
        assert_eq!(mask_uri("admin:pw@cam"), "***@cam");
    }

    #[test]
    fn scrubs_raw_and_decoded_password_from_text() {
        let uri = "rtsp://u:p%40ss@h/x";
        let secrets = secrets_of(uri);
        let text = "could not open rtsp://u:p%40ss@h/x (user u, password p@ss)";
        let clean = mask_in_text(text, &secrets);
        assert!(!clean.contains("p%40ss") && !clean.contains("p@ss"), "{clean}");
    }
}
