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

/// Config keys whose values are secrets, wherever they appear (`password = "…"` in an error excerpt).
const SECRET_KEYS: &[&str] = &["password", "passwd", "pass", "pwd", "token", "access_token", "secret", "auth"];

/// Masks secrets in text that quotes a config file (a TOML error shows the offending line): the value of
/// every `secret_key = …` assignment, and the password and secret query values of every URI in it.
pub fn mask_config_text(text: &str) -> String {
    text.lines().map(mask_config_line).collect::<Vec<_>>().join("\n")
}

fn mask_config_line(line: &str) -> String {
    let line = mask_uris_in_line(line);
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    // `…password = "x"` / `{ token = "x" }`: everything after a secret key's `=` on this line goes.
    let mut search = 0;
    while let Some(eq) = line[search..].find('=').map(|i| i + search) {
        // A quoted key (`"password" = …`) counts as well.
        let before = line[..eq].trim_end().trim_end_matches(['"', '\'']);
        let start = before.rfind(|c: char| !ident(c)).map_or(0, |i| i + 1);
        let key = &before[start..];
        if SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k)) {
            return format!("{} ***", &line[..=eq]);
        }
        search = eq + 1;
    }
    line
}

/// Masks each `scheme://…` word of a line with [`mask_uri`] (a word ends at white space or a quote).
fn mask_uris_in_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let start = rest[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))).map_or(0, |j| j + 1);
        let end = rest[i..].find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`')).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        let word = &rest[start..end];
        // An unparsable word with an `@` (a half-typed URI) loses what stands before the `@`.
        let masked = mask_uri(word);
        out.push_str(if masked == word && word.contains('@') { "***" } else { &masked });
        rest = &rest[end..];
    }
    out.push_str(rest);
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
    fn masks_secrets_in_config_excerpts() {
        let excerpt = "TOML parse error at line 3, column 10\n  |\n3 | source = \"rtsp://admin:hunter2@cam/x?token=abc123\n  |          ^\n";
        let m = mask_config_text(excerpt);
        assert!(!m.contains("hunter2") && !m.contains("abc123"), "{m}");
        assert!(m.contains("rtsp://admin:***@cam/x") && m.contains("line 3, column 10"), "{m}");
        for line in
            ["5 | password = \"s3cret", "password=s3cret", "  [mqtt] token = 's3cret'", "x = { user = \"u\", pass = \"s3cret\" }", "\"password\" = \"s3cret\""]
        {
            let m = mask_config_text(line);
            assert!(!m.contains("s3cret") && m.ends_with("= ***"), "{line} -> {m}");
        }
        // Keys that only end in a secret word, and paths, stay readable.
        for line in ["key_file = \"/etc/perch/client.key\"", "token_file = \"/var/lib/perch/token\"", "url = \"mqtt://broker:1883\""] {
            assert_eq!(mask_config_text(line), line);
        }
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
