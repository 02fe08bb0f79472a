//! Streaming install: the bundle is read once, from a file, stdin or HTTP(S), straight into the inactive
//! slot. The signature and every refusal are checked before the slot is touched; each chunk is checked
//! against the signed manifest before it is written; the slot is made bootable only after the last chunk
//! was verified and synced. No temporary copy of the payload is ever made.
//!
//! Reading + hashing and writing run on two threads with a few recycled chunk buffers between them, so the
//! disk and the SHA-256 work overlap (one pass over the payload).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use super::bundle::{Header, Keyring, Manifest, Tap, check_release, expect_end, read_chunk};
use super::state::Event;
use super::version::Version;
use super::{BackendKind, Ota, OtaError, Slot};

#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Install a release older than the running one.
    pub allow_downgrade: bool,
    /// Write this slot instead of the inactive one (refused if it is the booted slot).
    pub slot: Option<Slot>,
    /// The SHA-256 (hex) the whole bundle file must have, as a fleet command names it: checked over the
    /// stream before the slot is made bootable. It identifies the bundle; the signature still decides trust.
    pub expect_sha256: Option<String>,
    /// The release the bundle must carry (a fleet command's `version`).
    pub expect_version: Option<String>,
    /// Set by a `cancel` command: the next read fails, the install is recorded as failed, nothing boots.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Buffers in flight between the reader and the writer.
pub const BUFFERS: usize = 4;
/// Written bytes between two writeback kicks.
pub const WRITEBACK_STEP: u64 = 8 << 20;
/// Progress is saved to the state file (and so reaches `…/ota/state`) at most this often.
const PROGRESS_STEP: u64 = 64 << 20;

const HTTP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `source` names a download (`http://` or `https://`).
fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Checks a source that a remote command names: only an `http://` or `https://` URL. A device never opens
/// a local path (or a FIFO, or `/proc/…`) because a message said so, and the error does not say whether
/// such a path exists.
pub fn check_remote_source(source: &str) -> Result<(), OtaError> {
    match url::Url::parse(source) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(OtaError::Refused(format!(
            "{:?} is not an http:// or https:// URL: a command may only name a bundle on an update server (serve it with `perch fleet serve DIR`)",
            crate::util::mask_uri(source)
        ))),
    }
}

/// Opens `-` (stdin), an `http://`/`https://` URL, or a file. `ca_file`: the CAs an HTTPS server must be
/// signed by (default: the built-in Mozilla roots); `stall`: the longest silence of the server.
pub fn open_source(source: &str, ca_file: Option<&Path>, stall: std::time::Duration) -> Result<Box<dyn Read + Send>, OtaError> {
    if source == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    if is_url(source) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A stalled server must fail the install (the slot stays unbootable), not hang it forever.
        let mut config = ureq::Agent::config_builder().timeout_connect(Some(HTTP_CONNECT_TIMEOUT)).timeout_per_read(Some(stall));
        if let Some(ca) = ca_file {
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(load_certs(ca)?))).build());
        }
        let config = config.build();
        let resp = ureq::Agent::new_with_config(config).get(source).call().map_err(|e| {
            OtaError::caused(format!("cannot download {} (check the URL, the network, and ota.ca_file for a private CA)", crate::util::mask_uri(source)), e)
        })?;
        return Ok(Box::new(resp.into_body().into_reader()));
    }
    let f = File::open(source).map_err(|e| OtaError::io(format!("cannot open bundle {source}"), e))?;
    Ok(Box::new(f))
}

fn load_certs(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, OtaError> {
    let pem = std::fs::read(path).map_err(|e| OtaError::io(format!("cannot read ota.ca_file {}", path.display()), e))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(OtaError::Io(format!("ota.ca_file {} holds no PEM certificate: give the CA that signed the update server", path.display())));
    }
    Ok(certs)
}

/// A bundle header that passed every check before a write.
pub(super) struct Checked {
    pub(super) header: Header,
    /// The slot the payload goes to.
    pub(super) target: Slot,
    /// The bytes written into it.
    pub(super) total: u64,
}

/// Where one image goes.
struct Target {
    path: PathBuf,
    len: u64,
    executable: bool,
}

enum Op {
    Open(Target),
    Data(Vec<u8>),
    Close,
}

impl Ota {
    /// Installs the bundle at `source` into the inactive slot. `progress(written, total)` is called per chunk.
    pub fn install(&self, source: &str, opts: &InstallOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<Manifest, OtaError> {
        let mut r = open_source(source, self.cfg.ca_file.as_deref(), self.cfg.download_stall())?;
        self.install_from(&mut *r, opts, progress)
    }

    /// Installs the bundle read from `source` (see [`Ota::install`]).
    pub fn install_from(&self, source: &mut dyn Read, opts: &InstallOptions, progress: &mut dyn FnMut(u64, u64)) -> Result<Manifest, OtaError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| OtaError::io(format!("cannot create {}", self.dir.display()), e))?;
        let lock_path = self.lock_path();
        let lock = File::create(&lock_path).map_err(|e| OtaError::io(format!("cannot create {}", lock_path.display()), e))?;
        if lock.try_lock().is_err() {
            return Err(OtaError::Refused("another install is running: wait for it to finish".into()));
        }
        let mut r = Tap::new(source, opts.expect_sha256.as_deref(), opts.cancel.clone());
        let Checked { header, target, total } = self.check_header(&mut r, opts)?;
        let m = &header.manifest;
        let start = Event::StartInstall { slot: target, version: m.version.clone(), total };

        // From here the slot is written: first make sure the bootloader can never pick it half-written.
        let flags = self.backend.read()?;
        self.backend.write(&flags.begin_install(target))?;
        self.transition(start, &format!("installing {} into slot {target}", m.version))?;

        let result = self.write_payload(&mut r, m, target, opts.cancel.as_deref(), progress).and_then(|_| r.check_sha());
        if let Err(e) = result {
            self.transition(Event::InstallFailed { reason: e.to_string() }, &format!("install failed: {e}"))?;
            return Err(e);
        }
        // Everything verified and synced: now, and only now, the slot may boot.
        let flags = self.backend.read()?;
        self.backend.write(&flags.finish_install(target, self.cfg.tries))?;
        self.transition(Event::InstallDone, &format!("{} installed in slot {target}; it boots next ({} tries)", m.version, self.cfg.tries))?;
        Ok(m.clone())
    }

    /// Reads the bundle's header and makes every check that needs no write: the signature, the release
    /// and device type, the downgrade rule, the slot to write and the bootloader's view of the booted one.
    pub(super) fn check_header(&self, r: &mut dyn Read, opts: &InstallOptions) -> Result<Checked, OtaError> {
        let raw = Header::read(&mut &mut *r)?;
        let keyring = Keyring::load(&self.cfg.keyring)?;
        let (header, key) = raw.verify(&keyring)?;
        let m = &header.manifest;
        m.check()?;
        check_release(m, &self.cfg.compatible, opts.expect_version.as_deref())?;
        self.check_downgrade(m, opts.allow_downgrade)?;
        let booted = self.backend.booted()?;
        let target = opts.slot.unwrap_or(booted.other());
        if target == booted {
            return Err(OtaError::Refused(format!("slot {target} is the booted slot: perch never writes the slot it runs from")));
        }
        // The bootloader's flags, not only perch's state, decide: at boot the install unit can run before
        // the service has recorded the trial (a bundle left in incoming/ by a power cut), and writing the
        // other slot then would destroy the way back.
        if !self.backend.read()?.get(booted).successful {
            return Err(OtaError::Refused(format!(
                "the booted slot {booted} is on trial (not yet committed): the other slot is the way back; install after the health gate commits or rolls back"
            )));
        }
        if self.cfg.backend != BackendKind::App && !m.images.iter().any(|i| i.name == self.cfg.image) {
            return Err(OtaError::Refused(format!(
                "the bundle has no image {:?} (ota.image) for the slot device: it has {}",
                self.cfg.image,
                m.images.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let total = match self.cfg.backend {
            BackendKind::App => m.payload_size(),
            _ => m.images.iter().find(|i| i.name == self.cfg.image).map_or(0, |i| i.size),
        };
        // During a trial the other slot is the way back: it must not be touched.
        let start = Event::StartInstall { slot: target, version: m.version.clone(), total };
        super::state::next(&self.load_state()?.phase, &start).map_err(OtaError::Refused)?;
        tracing::info!(version = %m.version, slot = %target, key = %super::bundle::key_id(key.as_bytes()), "ota: signature ok");
        Ok(Checked { header, target, total })
    }

    /// Refuses a release older than the running one (unless allowed). A running version that does not
    /// parse (a release from before the version grammar) cannot be compared: it never blocks an update.
    fn check_downgrade(&self, m: &Manifest, allow: bool) -> Result<(), OtaError> {
        let new = Version::parse(&m.version).map_err(|e| OtaError::Bundle(format!("{e}: rebuild the bundle with such a version")))?;
        let running = self.running_version()?;
        match Version::parse(&running) {
            Ok(current) if new < current && !allow => {
                Err(OtaError::Refused(format!("release {} is older than the running {running}: pass --allow-downgrade to install it anyway", m.version)))
            }
            Ok(_) => Ok(()),
            Err(_) => {
                tracing::warn!(running = %running, new = %m.version, "ota: the running release's version is not a release version; installing without a downgrade check");
                Ok(())
            }
        }
    }

    fn write_payload(
        &self,
        r: &mut dyn Read,
        m: &Manifest,
        slot: Slot,
        cancel: Option<&AtomicBool>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), OtaError> {
        let app = self.cfg.backend == BackendKind::App;
        let dest = self.slot_path(slot);
        if app {
            // The slot directory is replaced as a whole: no file of the old release survives.
            if dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(|e| OtaError::io(format!("cannot clear slot {}", dest.display()), e))?;
            }
            std::fs::create_dir_all(&dest).map_err(|e| OtaError::io(format!("cannot create slot {}", dest.display()), e))?;
        }
        let total = if app { m.payload_size() } else { m.images.iter().find(|i| i.name == self.cfg.image).map_or(0, |i| i.size) };
        let (tx, rx) = mpsc::sync_channel::<Op>(BUFFERS);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let writer = std::thread::Builder::new().name("ota-writer".into()).spawn(move || write_loop(rx, back_tx)).expect("spawn the writer thread");
        let mut pool = Pool { spare: Vec::new(), allocated: 0, capacity: m.chunk_size as usize };
        let mut written = 0u64;
        let mut saved = 0u64;
        let chunk = m.chunk_size as usize;
        let cancel = cancel.unwrap_or(&NOT_CANCELLED);
        let read_result = (|| -> Result<(), OtaError> {
            for img in &m.images {
                let target = match app {
                    true => Some(Target { path: dest.join(&img.name), len: img.size, executable: img.executable }),
                    false if img.name == self.cfg.image => Some(Target { path: dest.clone(), len: img.size, executable: false }),
                    false => None,
                };
                let writes = target.is_some();
                if let Some(t) = target
                    && tx.send(Op::Open(t)).is_err()
                {
                    return Ok(()); // the writer failed: its error is reported below
                }
                let mut left = img.size;
                for i in 0..img.chunks.len() {
                    let n = left.min(chunk as u64) as usize;
                    let mut buf = pool.take(&back_rx, cancel)?;
                    buf.resize(n, 0);
                    read_chunk(r, &mut buf, img, i, m.chunk_size)?;
                    left -= n as u64;
                    if !writes {
                        // Read only to check it: the buffer stays here for the next chunk.
                        pool.keep(buf);
                        continue;
                    }
                    written += n as u64;
                    if tx.send(Op::Data(buf)).is_err() {
                        return Ok(());
                    }
                    progress(written, total);
                    if written - saved >= PROGRESS_STEP && written < total {
                        saved = written;
                        self.transition(Event::Progress { written }, "progress")?;
                    }
                }
                if writes && tx.send(Op::Close).is_err() {
                    return Ok(());
                }
            }
            expect_end(r)
        })();
        drop(tx);
        let write_result = writer.join().unwrap_or_else(|_| Err(OtaError::Io("the slot writer panicked".into())));
        read_result?;
        write_result?;
        if app {
            let manifest = serde_json::to_vec_pretty(m).expect("manifest serializes");
            super::state::write_atomic(&dest.join("bundle.json"), &manifest)?;
        }
        Ok(())
    }
}

static NOT_CANCELLED: AtomicBool = AtomicBool::new(false);

/// The chunk buffers of one install: at most [`BUFFERS`] + 1 exist; those the writer holds come back on
/// its return channel, those only read (images not written to this slot) are kept here.
struct Pool {
    spare: Vec<Vec<u8>>,
    allocated: usize,
    capacity: usize,
}

impl Pool {
    /// A free buffer: a kept one, one the writer returned, a new one while under the limit, or the next
    /// one the writer returns. The wait ends when the writer stops (its error is reported by the caller)
    /// or the install is cancelled, so a stuck writer never holds the reader forever.
    fn take(&mut self, back: &mpsc::Receiver<Vec<u8>>, cancel: &AtomicBool) -> Result<Vec<u8>, OtaError> {
        if let Some(b) = self.spare.pop() {
            return Ok(b);
        }
        if let Ok(b) = back.try_recv() {
            return Ok(b);
        }
        if self.allocated <= BUFFERS {
            self.allocated += 1;
            return Ok(Vec::with_capacity(self.capacity));
        }
        loop {
            match back.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(b) => return Ok(b),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(Vec::with_capacity(self.capacity)),
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.load(Ordering::Relaxed) => {
                    return Err(OtaError::Io("the install was cancelled".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn keep(&mut self, buf: Vec<u8>) {
        self.spare.push(buf);
    }
}

fn write_loop(rx: mpsc::Receiver<Op>, back: mpsc::Sender<Vec<u8>>) -> Result<(), OtaError> {
    let mut open: Option<(File, Target)> = None;
    // Bytes written to the open target, and up to where the kernel was asked to start writing them back.
    let (mut pos, mut kicked) = (0u64, 0u64);
    let io = |t: &Target, what: &str, e: std::io::Error| OtaError::io(format!("cannot {what} slot {}", t.path.display()), e);
    for op in rx {
        match op {
            Op::Open(t) => {
                if let Some(dir) = t.path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io(&t, "create the folder of", e))?;
                }
                // A block device is written in place; a file slot is created if needed (never truncated
                // first: its length is set at the end).
                let f = OpenOptions::new().write(true).create(!is_block_device(&t.path)).truncate(false).open(&t.path).map_err(|e| io(&t, "open", e))?;
                open = Some((f, t));
                (pos, kicked) = (0, 0);
            }
            Op::Data(buf) => {
                let (f, t) = open.as_mut().expect("data after open");
                f.write_all(&buf).map_err(|e| io(t, "write", e))?;
                pos += buf.len() as u64;
                if pos - kicked >= WRITEBACK_STEP {
                    start_writeback(f, kicked, pos - kicked);
                    kicked = pos;
                }
                let _ = back.send(buf);
            }
            Op::Close => {
                let (f, t) = open.take().expect("close after open");
                let meta = f.metadata().map_err(|e| io(&t, "inspect", e))?;
                if meta.file_type().is_file() {
                    f.set_len(t.len).map_err(|e| io(&t, "resize", e))?;
                    if t.executable {
                        f.set_permissions(std::fs::Permissions::from_mode(0o755)).map_err(|e| io(&t, "chmod", e))?;
                    }
                }
                f.sync_all().map_err(|e| io(&t, "sync", e))?;
            }
        }
    }
    Ok(())
}

/// Asks the kernel to start writing a range to the disk now, without waiting: the disk works while the next
/// chunks are hashed, and the final fsync has little left to do.
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open file descriptor; the call only schedules I/O on it.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn is_block_device(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}
