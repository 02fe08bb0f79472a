//! Helpers for the OTA end-to-end tests: dev keys, bundles built with the real CLI, configs, status.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::{perch, root};

/// A development signing key from `ota/dev-keys` (never trusted on a real device).
pub fn dev_key(n: u32) -> PathBuf {
    root().join(format!("ota/dev-keys/dev-{n}.key"))
}

pub fn dev_pub(n: u32) -> PathBuf {
    root().join(format!("ota/dev-keys/dev-{n}.pub"))
}

/// Deterministic pseudo-random bytes (xorshift), so images differ and do not compress.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn run(args: &[&str]) -> Output {
    let mut c = perch();
    c.args(args);
    c.output().expect("run perch")
}

/// Runs perch, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "perch {args:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs perch, asserts failure, returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "perch {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Builds a bundle with the CLI; signs with dev key `key` when given.
pub fn bundle(out: &Path, compatible: &str, version: &str, images: &[(&str, &Path)], key: Option<u32>, chunk: u32) -> PathBuf {
    let mut args: Vec<String> =
        ["bundle", "build", "--compatible", compatible, "--version", version, "--chunk-size", &chunk.to_string(), "-o"].iter().map(|s| s.to_string()).collect();
    args.push(out.display().to_string());
    for (name, path) in images {
        args.push("--image".into());
        args.push(format!("{name}={}", path.display()));
    }
    if let Some(k) = key {
        args.push("--key".into());
        args.push(dev_key(k).display().to_string());
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    out.to_path_buf()
}

/// A perch config with no camera and an `[ota]` section (`ota_body`: its keys).
pub fn config(dir: &Path, ota_body: &str) -> PathBuf {
    let text = format!(
        "device_id = \"ota-box\"\nstate_dir = \"{}\"\n[detector]\nmodel = \"{}\"\n[ota]\ncompatible = \"perch-test\"\nkeyring = \"{}\"\n{ota_body}\n",
        dir.join("state").display(),
        crate::common::root().join("models/yolox_nano.toml").display(),
        dev_pub(1).display(),
    );
    let p = dir.join("perch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

pub fn status(config: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(&["ota", "status", "-c", config.to_str().unwrap()])).expect("status is JSON")
}

pub fn phase(config: &Path) -> String {
    status(config)["phase"].as_str().unwrap().to_string()
}

pub fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}
