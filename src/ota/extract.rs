//! Unpacks a signed bundle into a folder, for releases that are files rather than a slot (a model).
//!
//! The same checks as a slot install, in the same order: the signature against the keyring and the
//! device type before anything is written, every chunk against the signed manifest as it streams by, the
//! whole file against the SHA-256 a command names. The files go to `<dest>.part` and the folder is renamed
//! to `dest` only once all of it was verified and synced, so `dest` is either complete or absent.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::OtaError;
use super::bundle::{Header, Keyring, Manifest, Tap, check_release, expect_end, read_chunk};

/// What the bundle must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The device type (`ota.compatible`).
    pub compatible: String,
    /// SHA-256 (hex) of the whole bundle file.
    pub sha256: Option<String>,
    /// The release the manifest must carry.
    pub version: Option<String>,
}

/// Verifies the bundle read from `source` and writes its images as files under `dest`.
pub fn extract(source: &mut dyn Read, keyring: &Keyring, expect: &Expect, dest: &Path, cancel: Option<Arc<AtomicBool>>) -> Result<Manifest, OtaError> {
    let mut r = Tap::new(source, expect.sha256.as_deref(), cancel);
    let (header, _) = Header::read(&mut r)?.verify(keyring)?;
    let m = header.manifest;
    m.check()?;
    check_release(&m, &expect.compatible, expect.version.as_deref())?;
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let io = |what: &str, p: &Path, e: std::io::Error| OtaError::io(format!("cannot {what} {}", p.display()), e);
    if part.exists() {
        std::fs::remove_dir_all(&part).map_err(|e| io("clear", &part, e))?;
    }
    std::fs::create_dir_all(&part).map_err(|e| io("create", &part, e))?;
    let result = (|| {
        let mut buf = vec![0u8; m.chunk_size as usize];
        for img in &m.images {
            let path = part.join(&img.name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
            }
            let mut f = File::create(&path).map_err(|e| io("create", &path, e))?;
            let mut left = img.size;
            for i in 0..img.chunks.len() {
                let n = left.min(m.chunk_size as u64) as usize;
                read_chunk(&mut r, &mut buf[..n], img, i, m.chunk_size)?;
                f.write_all(&buf[..n]).map_err(|e| io("write", &path, e))?;
                left -= n as u64;
            }
            f.sync_all().map_err(|e| io("sync", &path, e))?;
        }
        expect_end(&mut r)?;
        r.check_sha()?;
        let manifest = serde_json::to_vec_pretty(&m).expect("manifest serializes");
        super::state::write_atomic(&part.join("bundle.json"), &manifest)?;
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| io("replace", dest, e))?;
        }
        std::fs::rename(&part, dest).map_err(|e| io("rename", &part, e))?;
        if let Some(parent) = dest.parent()
            && let Ok(d) = File::open(parent)
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&part);
    }
    result.map(|_| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::bundle::{ImageSource, build};
    use crate::util::fs::hex;
    use ed25519_dalek::SigningKey;
    use sha2::{Digest, Sha256};

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn make(dir: &Path, signer: Option<&SigningKey>) -> PathBuf {
        let model = dir.join("m.onnx");
        std::fs::write(&model, (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
        let toml = dir.join("m.toml");
        std::fs::write(&toml, "name = \"m\"\n").unwrap();
        let out = dir.join("m.bundle");
        let images =
            [ImageSource { name: "m.onnx".into(), path: model, executable: false }, ImageSource { name: "m.toml".into(), path: toml, executable: false }];
        build(&out, "box", "2", 4096, &images, signer).unwrap();
        out
    }

    #[test]
    fn a_signed_bundle_is_unpacked_and_anything_else_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring { keys: vec![key(1).verifying_key()] };
        let good = make(dir.path(), Some(&key(1)));
        let sha = hex(&Sha256::digest(std::fs::read(&good).unwrap()));
        let expect = Expect { compatible: "box".into(), sha256: Some(sha.clone()), version: Some("2".into()) };
        let dest = dir.path().join("out/2");
        let m = extract(&mut File::open(&good).unwrap(), &ring, &expect, &dest, None).unwrap();
        assert_eq!(m.images.len(), 2);
        assert_eq!(std::fs::read(dest.join("m.onnx")).unwrap(), std::fs::read(dir.path().join("m.onnx")).unwrap());
        assert!(dest.join("bundle.json").exists());

        // Wrong SHA, wrong device, wrong version, wrong key, truncated: refused, and no folder left behind.
        let cases: Vec<(Expect, &Path, &str)> = vec![
            (Expect { sha256: Some("00".repeat(32)), ..expect.clone() }, &good, "SHA-256"),
            (Expect { compatible: "other".into(), ..expect.clone() }, &good, "ota.compatible"),
            (Expect { version: Some("3".into()), ..expect.clone() }, &good, "release 3"),
        ];
        for (i, (e, b, msg)) in cases.into_iter().enumerate() {
            let d = dir.path().join(format!("bad/{i}"));
            let err = extract(&mut File::open(b).unwrap(), &ring, &e, &d, None).unwrap_err().to_string();
            assert!(err.contains(msg), "{err}");
            assert!(!d.exists() && !PathBuf::from(format!("{}.part", d.display())).exists());
        }
        let other = tempfile::tempdir().unwrap();
        let forged = make(other.path(), Some(&key(2)));
        let d = dir.path().join("bad/forged");
        let err = extract(&mut File::open(&forged).unwrap(), &ring, &Expect { sha256: None, ..expect.clone() }, &d, None).unwrap_err();
        assert!(matches!(err, OtaError::Signature(_)), "{err}");
        assert!(!d.exists() && !dir.path().join("bad/forged.part").exists());
        let bytes = std::fs::read(&good).unwrap();
        let d = dir.path().join("bad/cut");
        let err = extract(&mut &bytes[..bytes.len() - 100], &ring, &Expect { sha256: None, ..expect }, &d, None).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(!d.exists() && !dir.path().join("bad/cut.part").exists());
    }
}
