//! Update bundles: a signed manifest, then the payloads. Format (see `ota/README.md`):
//!
//! ```text
//! 0        8 bytes   magic "PERCHBN1"
//! 8        u32 LE    manifest length M (at most 16 MiB)
//! 12       M bytes   manifest, JSON
//! 12+M     384 bytes signature block: 4 × (ed25519 public key 32 bytes, signature 64 bytes); unused all zero
//! 396+M    payloads: every image in manifest order, back to back
//! ```
//!
//! A signature covers bytes `0..12+M` (magic, length and manifest); the manifest pins every payload chunk
//! by SHA-256, so the signature covers the payloads too, and a reader can check each chunk as it streams by.
//! The signature block has a fixed size, so signing rewrites it in place without moving the payloads.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::OtaError;
use crate::util::fs::hex;

pub const MAGIC: &[u8; 8] = b"PERCHBN1";
pub const FORMAT: u32 = 1;
pub const SIG_SLOTS: usize = 4;
const SIG_ENTRY: usize = 32 + 64;
pub const SIG_BLOCK: usize = SIG_SLOTS * SIG_ENTRY;
const MAX_MANIFEST: u32 = 16 << 20;
pub const DEFAULT_CHUNK: u32 = 1 << 20;

/// What a bundle holds; signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The device type this bundle is for; must equal the device's `ota.compatible`.
    pub compatible: String,
    pub version: String,
    pub created: String,
    /// Payload bytes per hashed chunk (the last chunk of an image may be shorter).
    pub chunk_size: u32,
    pub images: Vec<Image>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// `rootfs` for a slot device; a relative file path (`perch`, `models/x.onnx`) in app mode.
    pub name: String,
    pub size: u64,
    /// SHA-256 of the whole image (what `sha256sum` prints).
    pub sha256: String,
    /// SHA-256 of each chunk, in order.
    pub chunks: Vec<String>,
    /// App mode: the file is made executable.
    #[serde(default)]
    pub executable: bool,
}

impl Manifest {
    pub fn payload_size(&self) -> u64 {
        self.images.iter().map(|i| i.size).sum()
    }

    /// Structural checks, so the installer can trust sizes and names before writing anything.
    pub fn check(&self) -> Result<(), OtaError> {
        let bad = |m: String| Err(OtaError::Bundle(format!("{m}: the bundle is malformed; rebuild it with `perch bundle build`")));
        if self.format != FORMAT {
            return bad(format!("bundle format {} is not supported (this perch reads format {FORMAT})", self.format));
        }
        if !(4096..=(64 << 20)).contains(&self.chunk_size) {
            return bad(format!("chunk_size {} is out of range 4 KiB..64 MiB", self.chunk_size));
        }
        if self.images.is_empty() {
            return bad("the manifest lists no image".into());
        }
        if !valid_compatible(&self.compatible) {
            return bad(format!("compatible {:?} is not a device type: use letters, digits, '.', '_' and '-' (what ota.compatible says)", self.compatible));
        }
        if let Err(e) = super::version::Version::parse(&self.version) {
            return bad(e);
        }
        let mut names = std::collections::HashSet::new();
        for img in &self.images {
            if !valid_image_name(&img.name) {
                return bad(format!("image name {:?} is not a plain relative path", img.name));
            }
            if RESERVED_NAMES.contains(&img.name.as_str()) {
                return bad(format!("image name {:?} is reserved (perch writes it beside the images): rename the image", img.name));
            }
            if !names.insert(img.name.as_str()) {
                return bad(format!("image name {:?} appears twice: every image needs its own name", img.name));
            }
            if img.chunks.len() as u64 != img.size.div_ceil(self.chunk_size as u64) {
                return bad(format!("image {} lists {} chunks for {} bytes", img.name, img.chunks.len(), img.size));
            }
        }
        Ok(())
    }
}

/// Names an image may not take: the file perch writes beside the images of a slot or model folder.
const RESERVED_NAMES: &[&str] = &["bundle.json"];

/// A device type: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn valid_compatible(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A relative path without `..`, empty or hidden components (it becomes a file name in app mode).
pub fn valid_image_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.starts_with('/') && name.split('/').all(|c| !c.is_empty() && !c.starts_with('.'))
}

/// The head of a bundle as read, before anything in it is believed: the signed bytes and the signature
/// entries. The manifest inside is parsed only after a signature over those bytes was checked
/// ([`RawHeader::verify`]), so an unsigned or forged head costs its bytes and nothing more; tools that only
/// show a bundle say so by calling [`RawHeader::parse_unverified`].
#[derive(Debug, Clone)]
pub struct RawHeader {
    /// Bytes `0..12+M`: what signatures cover.
    pub signed: Vec<u8>,
    pub signatures: Vec<([u8; 32], [u8; 64])>,
}

/// A bundle head whose manifest was parsed.
#[derive(Debug, Clone)]
pub struct Header {
    pub manifest: Manifest,
    /// Bytes `0..12+M`: what signatures cover.
    pub signed: Vec<u8>,
    pub signatures: Vec<([u8; 32], [u8; 64])>,
}

impl Header {
    /// Reads the head of a bundle from a stream (no seeking: works on HTTP bodies and pipes).
    pub fn read(r: &mut impl Read) -> Result<RawHeader, OtaError> {
        let mut head = [0u8; 12];
        read_exact(r, &mut head, "its header")?;
        if &head[..8] != MAGIC {
            return Err(OtaError::Bundle("not a perch bundle (bad magic): check the file or URL".into()));
        }
        let len = u32::from_le_bytes(head[8..12].try_into().unwrap());
        if len > MAX_MANIFEST {
            return Err(OtaError::Bundle(format!("manifest length {len} exceeds {MAX_MANIFEST}: the bundle is corrupt")));
        }
        let mut signed = head.to_vec();
        signed.resize(12 + len as usize, 0);
        read_exact(r, &mut signed[12..], "its manifest")?;
        let mut block = [0u8; SIG_BLOCK];
        read_exact(r, &mut block, "its signature block")?;
        let signatures =
            block.chunks_exact(SIG_ENTRY).filter(|e| e.iter().any(|b| *b != 0)).map(|e| (e[..32].try_into().unwrap(), e[32..].try_into().unwrap())).collect();
        Ok(RawHeader { signed, signatures })
    }
}

impl RawHeader {
    /// Checks that a key of `keyring` signed these bytes, then parses the manifest. The message says what
    /// to do in each case.
    pub fn verify(self, keyring: &Keyring) -> Result<(Header, VerifyingKey), OtaError> {
        let key = self.check_signature(keyring)?;
        Ok((self.parse_unverified()?, key))
    }

    /// Parses the manifest without checking any signature: for showing a bundle, never for installing it.
    pub fn parse_unverified(self) -> Result<Header, OtaError> {
        let manifest: Manifest =
            serde_json::from_slice(&self.signed[12..]).map_err(|e| OtaError::Bundle(format!("the manifest is not valid ({e}): the bundle is corrupt")))?;
        Ok(Header { manifest, signed: self.signed, signatures: self.signatures })
    }

    fn check_signature(&self, keyring: &Keyring) -> Result<VerifyingKey, OtaError> {
        if self.signatures.is_empty() {
            return Err(OtaError::Signature("the bundle is not signed: sign it with `perch bundle sign --key KEY BUNDLE`".into()));
        }
        let mut unknown = Vec::new();
        for (pk, sig) in &self.signatures {
            match keyring.keys.iter().find(|k| k.as_bytes() == pk) {
                Some(key) => {
                    return key.verify(&self.signed, &Signature::from_bytes(sig)).map(|_| *key).map_err(|_| {
                        OtaError::Signature(format!(
                            "bad signature by trusted key {}: the bundle was altered after signing; download or rebuild it",
                            key_id(pk)
                        ))
                    });
                }
                None => unknown.push(key_id(pk)),
            }
        }
        Err(OtaError::Signature(format!(
            "signed by unknown key(s) {}: this device trusts {}; sign with a trusted key or add the public key to ota.keyring",
            unknown.join(", "),
            if keyring.keys.is_empty() { "no key".to_string() } else { keyring.keys.iter().map(|k| key_id(k.as_bytes())).collect::<Vec<_>>().join(", ") }
        )))
    }
}

fn read_exact<R: Read + ?Sized>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), OtaError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => OtaError::Bundle(format!("the bundle is truncated in {what}: download it again")),
        _ => OtaError::io(format!("cannot read the bundle ({what})"), e),
    })
}

/// Short id of a public key: the first 8 bytes of its SHA-256, in hex.
pub fn key_id(pk: &[u8]) -> String {
    hex(&Sha256::digest(pk)[..8])
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether `digest` equals the hex string `expected`, without allocating.
pub fn digest_matches(digest: &[u8], expected: &str) -> bool {
    let e = expected.as_bytes();
    e.len() == digest.len() * 2
        && digest.iter().enumerate().all(|(i, b)| {
            let hi = (e[2 * i] as char).to_digit(16);
            let lo = (e[2 * i + 1] as char).to_digit(16);
            matches!((hi, lo), (Some(h), Some(l)) if (h * 16 + l) as u8 == *b)
        })
}

/// The public keys a device trusts (several, so keys can be rotated).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub keys: Vec<VerifyingKey>,
}

impl Keyring {
    /// A directory of `*.pub` files, or one file; each non-comment line is a hex ed25519 public key.
    pub fn load(path: &Path) -> Result<Self, OtaError> {
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| OtaError::io(format!("cannot read keyring {}", path.display()), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut keys = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| OtaError::io(format!("cannot read keyring {} (set ota.keyring to the trusted public keys)", f.display()), e))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let key = unhex(line)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .and_then(|b| VerifyingKey::from_bytes(&b).ok())
                    .ok_or_else(|| OtaError::Io(format!("{}: {line:?} is not a hex ed25519 public key", f.display())))?;
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(OtaError::Io(format!("keyring {} holds no key: add the release signing public key(s)", path.display())));
        }
        Ok(Self { keys })
    }
}

/// Reads a signing key file (hex secret key; comment lines allowed).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, OtaError> {
    let text = std::fs::read_to_string(path).map_err(|e| OtaError::io(format!("cannot read signing key {}", path.display()), e))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(unhex)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(|b| SigningKey::from_bytes(&b))
        .ok_or_else(|| OtaError::Io(format!("{} is not a perch signing key (64 hex digits): make one with `perch bundle keygen`", path.display())))
}

/// Writes a new key pair: `<prefix>.key` (secret, mode 0600) and `<prefix>.pub`.
pub fn keygen(prefix: &Path, comment: &str) -> Result<(PathBuf, PathBuf), OtaError> {
    let mut seed = [0u8; 32];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)).map_err(|e| OtaError::io("cannot read /dev/urandom", e))?;
    let key = SigningKey::from_bytes(&seed);
    let (secret, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    let io = |p: &Path, e: std::io::Error| OtaError::io(format!("cannot write {}", p.display()), e);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&secret).map_err(|e| io(&secret, e))?;
        writeln!(f, "# {comment}\n{}", hex(&seed)).map_err(|e| io(&secret, e))?;
    }
    std::fs::write(&public, format!("# {comment}\n{}\n", hex(key.verifying_key().as_bytes()))).map_err(|e| io(&public, e))?;
    Ok((secret, public))
}

/// Hashes of one image, read from a file.
fn hash_image(path: &Path, chunk: u32) -> Result<(u64, String, Vec<String>), OtaError> {
    let mut f = File::open(path).map_err(|e| OtaError::io(format!("cannot read image {}", path.display()), e))?;
    let mut buf = vec![0u8; chunk as usize];
    let (mut whole, mut chunks, mut size) = (Sha256::new(), Vec::new(), 0u64);
    loop {
        let n = read_full(&mut f, &mut buf).map_err(|e| OtaError::io(format!("cannot read image {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        chunks.push(hex(&Sha256::digest(&buf[..n])));
        size += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok((size, hex(&whole.finalize()), chunks))
}

/// Reads until `buf` is full or the end of the stream; returns the bytes read.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One image to put in a bundle.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub name: String,
    pub path: PathBuf,
    pub executable: bool,
}

/// Writes an unsigned bundle (sign it with [`sign`], or pass `key`).
pub fn build(out: &Path, compatible: &str, version: &str, chunk_size: u32, images: &[ImageSource], key: Option<&SigningKey>) -> Result<Manifest, OtaError> {
    let mut list = Vec::new();
    for img in images {
        if !valid_image_name(&img.name) {
            return Err(OtaError::Bundle(format!("image name {:?} must be a plain relative path (no `..`, no leading `/` or `.`)", img.name)));
        }
        let (size, sha256, chunks) = hash_image(&img.path, chunk_size)?;
        list.push(Image { name: img.name.clone(), size, sha256, chunks, executable: img.executable });
    }
    let manifest = Manifest {
        format: FORMAT,
        compatible: compatible.into(),
        version: version.into(),
        created: crate::events::schema::rfc3339(std::time::SystemTime::now()),
        chunk_size,
        images: list,
    };
    manifest.check()?;
    let json = serde_json::to_vec(&manifest).expect("manifest serializes");
    let io = |e: std::io::Error| OtaError::io(format!("cannot write bundle {}", out.display()), e);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(out).map_err(io)?);
    let mut signed = MAGIC.to_vec();
    signed.extend_from_slice(&(json.len() as u32).to_le_bytes());
    signed.extend_from_slice(&json);
    let mut block = [0u8; SIG_BLOCK];
    if let Some(k) = key {
        block[..32].copy_from_slice(k.verifying_key().as_bytes());
        block[32..SIG_ENTRY].copy_from_slice(&k.sign(&signed).to_bytes());
    }
    w.write_all(&signed).and_then(|_| w.write_all(&block)).map_err(io)?;
    for img in images {
        let mut f = File::open(&img.path).map_err(|e| OtaError::io(format!("cannot read image {}", img.path.display()), e))?;
        std::io::copy(&mut f, &mut w).map_err(io)?;
    }
    w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)?;
    Ok(manifest)
}

/// Adds (or replaces) `key`'s signature in a bundle, in place.
pub fn sign(bundle: &Path, key: &SigningKey) -> Result<(), OtaError> {
    let io = |e: std::io::Error| OtaError::io(format!("cannot sign {}", bundle.display()), e);
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(bundle).map_err(io)?;
    // The signer vouches for the manifest: it must be one this perch would install.
    let header = Header::read(&mut std::io::BufReader::new(&mut f))?.parse_unverified()?;
    header.manifest.check()?;
    let pk = key.verifying_key();
    let index = header.signatures.iter().position(|(k, _)| k == pk.as_bytes()).unwrap_or(header.signatures.len());
    if index >= SIG_SLOTS {
        return Err(OtaError::Bundle(format!("the bundle already carries {SIG_SLOTS} signatures: rebuild it to sign with other keys")));
    }
    let mut entry = [0u8; SIG_ENTRY];
    entry[..32].copy_from_slice(pk.as_bytes());
    entry[32..].copy_from_slice(&key.sign(&header.signed).to_bytes());
    f.seek(SeekFrom::Start((header.signed.len() + index * SIG_ENTRY) as u64)).map_err(io)?;
    f.write_all(&entry).and_then(|_| f.sync_all()).map_err(io)
}

/// Verifies a bundle file completely: signature (when a keyring is given), every chunk and every whole-image
/// hash, and that nothing follows the last image.
pub fn verify(bundle: &Path, keyring: Option<&Keyring>) -> Result<(Header, Option<VerifyingKey>), OtaError> {
    let f = File::open(bundle).map_err(|e| OtaError::io(format!("cannot read {}", bundle.display()), e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let raw = Header::read(&mut r)?;
    let (header, key) = match keyring {
        Some(k) => raw.verify(k).map(|(h, key)| (h, Some(key)))?,
        None => (raw.parse_unverified()?, None),
    };
    header.manifest.check()?;
    let mut buf = vec![0u8; header.manifest.chunk_size as usize];
    for img in &header.manifest.images {
        let mut whole = Sha256::new();
        let mut left = img.size;
        for (i, expected) in img.chunks.iter().enumerate() {
            let n = left.min(buf.len() as u64) as usize;
            let got = read_full(&mut r, &mut buf[..n]).map_err(|e| OtaError::io(format!("cannot read {}", bundle.display()), e))?;
            if got < n {
                return Err(OtaError::Bundle(format!("the bundle is truncated in image {} (chunk {i}): download it again", img.name)));
            }
            if !digest_matches(&Sha256::digest(&buf[..n]), expected) {
                return Err(OtaError::Bundle(format!("image {} chunk {i} does not match its signed hash: the bundle is corrupt", img.name)));
            }
            whole.update(&buf[..n]);
            left -= n as u64;
        }
        if !digest_matches(&whole.finalize(), &img.sha256) {
            return Err(OtaError::Bundle(format!("image {} does not match its signed SHA-256: the bundle is corrupt", img.name)));
        }
    }
    if read_full(&mut r, &mut buf[..1]).unwrap_or(0) != 0 {
        return Err(OtaError::Bundle("the bundle has data after its last image: it is corrupt".into()));
    }
    Ok((header, key))
}

// --- reading a bundle: shared by the slot install (install.rs) and the file install (extract.rs) ---

/// Fails the read once the install is cancelled and, when a command names the SHA-256 of the whole bundle
/// file, hashes what the install reads. Without one nothing is hashed here: the signed manifest's per-chunk
/// SHA-256 already covers every payload byte (`read_chunk`), and a second digest of the same bytes would
/// double the install's hashing for nothing.
pub(super) struct Tap<'a> {
    inner: &'a mut dyn Read,
    /// The digest the command names, and the running hash of the bytes read so far.
    want: Option<(String, Sha256)>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Read for Tap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let cancelled = || self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        if cancelled() {
            return Err(std::io::Error::other("the install was cancelled"));
        }
        // A read that was waiting when the cancel came (a stalled server) ends at the stall timeout: it
        // is the cancel that ended the install.
        let n = self.inner.read(buf).map_err(|e| if cancelled() { std::io::Error::other("the install was cancelled") } else { e })?;
        if let Some((_, hasher)) = self.want.as_mut() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl<'a> Tap<'a> {
    /// `want`: the SHA-256 (hex) the whole bundle file must have, if a command names one.
    pub(super) fn new(inner: &'a mut dyn Read, want: Option<&str>, cancel: Option<Arc<AtomicBool>>) -> Self {
        Tap { inner, want: want.map(|w| (w.trim().to_string(), Sha256::new())), cancel }
    }

    /// Checks the SHA-256 of everything read so far against the one the command names, if it names one.
    pub(super) fn check_sha(&mut self) -> Result<(), OtaError> {
        let Some((want, hasher)) = self.want.take() else { return Ok(()) };
        let got = crate::util::fs::hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(&want) {
            return Err(OtaError::Bundle(format!("the bundle's SHA-256 is {got}, not the {want} the command names: the server holds another file")));
        }
        Ok(())
    }
}

/// Checks a verified manifest against the release a command names and the device type.
pub(super) fn check_release(m: &Manifest, compatible: &str, version: Option<&str>) -> Result<(), OtaError> {
    if let Some(v) = version
        && v != m.version
    {
        return Err(OtaError::Refused(format!("the command names release {v} but the bundle holds {}: check the rollout's bundle URL", m.version)));
    }
    if m.compatible != compatible {
        return Err(OtaError::Refused(format!(
            "the bundle is for {:?} but this device is {:?} (ota.compatible): install the bundle built for this device",
            m.compatible, compatible
        )));
    }
    Ok(())
}

/// Reads chunk `i` of `img` into `buf` (the chunk's length) and checks it against the signed manifest.
pub(super) fn read_chunk(r: &mut dyn Read, buf: &mut [u8], img: &Image, i: usize, chunk_size: u32) -> Result<(), OtaError> {
    let got = read_full(r, buf).map_err(|e| OtaError::io("cannot read the bundle (check the source and retry)", e))?;
    if got < buf.len() {
        return Err(OtaError::Bundle(format!(
            "the bundle is truncated: image {} ended after {} of {} bytes; download it again",
            img.name,
            i as u64 * chunk_size as u64 + got as u64,
            img.size
        )));
    }
    if !digest_matches(&Sha256::digest(&*buf), &img.chunks[i]) {
        return Err(OtaError::Bundle(format!("image {} chunk {i} does not match the signed manifest: the bundle is corrupt; download it again", img.name)));
    }
    Ok(())
}

/// After the last image nothing may follow. A read error here (a cancel, a dropped connection) fails too.
pub(super) fn expect_end(r: &mut dyn Read) -> Result<(), OtaError> {
    let mut extra = [0u8; 1];
    if read_full(r, &mut extra).map_err(|e| OtaError::io("cannot read the bundle", e))? != 0 {
        return Err(OtaError::Bundle("the bundle has data after its last image: it is corrupt; download it again".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads all of `data` through a tap that wants `want`, then checks the digest.
    fn tap_check(data: &[u8], want: Option<&str>) -> Result<(), OtaError> {
        let mut src = data;
        let mut tap = Tap::new(&mut src, want, None);
        std::io::copy(&mut tap, &mut std::io::sink()).unwrap();
        tap.check_sha()
    }

    #[test]
    fn the_whole_bundle_is_checked_against_the_digest_a_command_names_and_only_then() {
        let data = b"a bundle's bytes".repeat(1000);
        assert!(tap_check(&data, None).is_ok(), "no digest named: nothing to check");
        assert!(tap_check(&data, Some(&format!(" {} ", hex(&Sha256::digest(&data)).to_uppercase()))).is_ok());
        let e = tap_check(&data, Some(&"00".repeat(32))).unwrap_err().to_string();
        assert!(e.contains("the server holds another file"), "{e}");
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn bundle(dir: &Path, data: &[u8]) -> PathBuf {
        let img = dir.join("img");
        std::fs::write(&img, data).unwrap();
        let out = dir.join("b.bundle");
        build(&out, "dev", "1.2.3", 4096, &[ImageSource { name: "rootfs".into(), path: img, executable: false }], None).unwrap();
        out
    }

    #[test]
    fn build_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let b = bundle(dir.path(), &data);
        let ring = Keyring { keys: vec![key(1).verifying_key(), key(2).verifying_key()] };
        assert!(verify(&b, Some(&ring)).unwrap_err().to_string().contains("not signed"));
        sign(&b, &key(9)).unwrap();
        assert!(verify(&b, Some(&ring)).unwrap_err().to_string().contains("unknown key"));
        sign(&b, &key(2)).unwrap();
        sign(&b, &key(2)).unwrap(); // re-signing replaces, not appends
        let (h, k) = verify(&b, Some(&ring)).unwrap();
        assert_eq!(k.unwrap(), key(2).verifying_key());
        assert_eq!(h.signatures.len(), 2);
        assert_eq!(h.manifest.images[0].chunks.len(), 3);
        assert_eq!(h.manifest.images[0].sha256, hex(&Sha256::digest(&data)));
    }

    #[test]
    fn tampering_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let b = bundle(dir.path(), &[5u8; 9000]);
        sign(&b, &key(1)).unwrap();
        let ring = Keyring { keys: vec![key(1).verifying_key()] };
        let orig = std::fs::read(&b).unwrap();
        // A manifest byte: bad signature.
        let mut m = orig.clone();
        let pos = m.windows(5).position(|w| w == b"1.2.3").unwrap();
        m[pos] = b'9';
        std::fs::write(&b, &m).unwrap();
        assert!(verify(&b, Some(&ring)).unwrap_err().to_string().contains("bad signature"));
        // A payload byte: chunk mismatch.
        let mut p = orig.clone();
        *p.last_mut().unwrap() ^= 1;
        std::fs::write(&b, &p).unwrap();
        assert!(verify(&b, Some(&ring)).unwrap_err().to_string().contains("chunk 2"));
        // Truncated.
        std::fs::write(&b, &orig[..orig.len() - 10]).unwrap();
        assert!(verify(&b, Some(&ring)).unwrap_err().to_string().contains("truncated"));
        // Trailing data.
        let mut t = orig.clone();
        t.push(0);
        std::fs::write(&b, &t).unwrap();
        assert!(verify(&b, Some(&ring)).unwrap_err().to_string().contains("after its last image"));
    }

    #[test]
    fn hex_and_names() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), [0, 1, 254, 255]);
        assert!(digest_matches(&[0xab, 0x01], "ab01"));
        assert!(!digest_matches(&[0xab, 0x01], "ab02"));
        assert!(!digest_matches(&[0xab, 0x01], "ab0"));
        for good in ["perch", "models/yolox.onnx"] {
            assert!(valid_image_name(good));
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", ".hidden"] {
            assert!(!valid_image_name(bad), "{bad}");
        }
    }

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = keygen(&dir.path().join("k"), "test").unwrap();
        let k = load_signing_key(&secret).unwrap();
        let ring = Keyring::load(&public).unwrap();
        assert_eq!(ring.keys, vec![k.verifying_key()]);
        std::fs::create_dir(dir.path().join("ring")).unwrap();
        std::fs::copy(&public, dir.path().join("ring/one.pub")).unwrap();
        assert_eq!(Keyring::load(&dir.path().join("ring")).unwrap().keys.len(), 1);
        assert!(Keyring::load(&dir.path().join("missing")).is_err());
    }
}
