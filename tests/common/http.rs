//! The evidence API from outside: curl as the HTTP client, ffprobe to read what was served.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The bearer token the tests configure (`[http] token`).
pub const TOKEN: &str = "record-test-token-0123456789";

/// An HTTP response as curl got it.
pub struct Got {
    pub code: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One request with curl, with the bearer token; `extra` are more curl arguments (`-r 0-99`, `-X DELETE`).
pub fn fetch(http: u16, path: &str, extra: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-H", &format!("Authorization: Bearer {TOKEN}"), "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{http}{path}"))
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    Got { code: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0), headers, body: std::fs::read(&body).unwrap_or_default() }
}

/// Fetches a clip (or export) into `dir` and reads it with ffprobe: the response, and (codec, duration, width).
pub fn fetch_video(http: u16, path: &str, dir: &Path) -> (Got, (String, f64, u64)) {
    let got = fetch(http, path, &[]);
    assert_eq!(got.code, 200, "{path}: {}", got.text());
    assert_eq!(got.headers.get("content-type").map(String::as_str), Some("video/mp4"), "{path}");
    let file = dir.join(format!("got-{}.mp4", fastrand_name(path)));
    std::fs::write(&file, &got.body).unwrap();
    let probed = probe(&file);
    (got, probed)
}

fn fastrand_name(path: &str) -> String {
    path.bytes().filter(u8::is_ascii_alphanumeric).map(char::from).collect::<String>().chars().rev().take(40).collect()
}

/// What ffprobe reads from a media file: (codec, duration in s, width).
pub fn probe(path: &Path) -> (String, f64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name,width:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe (scripts/setup.sh installs ffmpeg)");
    assert!(out.status.success(), "ffprobe cannot read {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (s["codec_name"].as_str().unwrap_or_default().to_string(), duration, s["width"].as_u64().unwrap_or(0))
}

/// Width and height of a baseline JPEG, from its frame header (SOF0).
pub fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline JPEG");
    (u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]), u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]))
}
