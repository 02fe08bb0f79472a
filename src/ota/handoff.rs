//! A fleet install on a hardened box (`ota.install_by = "install_unit"`, the default on block backends).
//! The service may not write the slot partitions, so the work is split at the one place a file can carry
//! it:
//!
//! 1. the service downloads the bundle into `<ota dir>/incoming/update.bundle.part`, checks the SHA-256
//!    the command names and the header (signature, release, device type, booted slot, trial state), syncs
//!    it, and renames it to `update.bundle`;
//! 2. `perch-ota-install.path` starts `perch-ota-install.service` (the only unit with the slot devices),
//!    which streams the bundle into the inactive slot, checking every chunk against the signed manifest
//!    again, and records how it ended in `<ota dir>/install-result.json`;
//! 3. the service waits for that record and answers from it (and from `state.json`).
//!
//! Nothing the service checked is trusted by the install unit: it verifies the bundle on its own.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::bundle::Manifest;
use super::bundle::Tap;
use super::install::{InstallOptions, open_source};
use super::{Ota, OtaError, Phase};

/// The bundle `perch-ota-install.path` waits for, in [`Ota::incoming_dir`].
pub const BUNDLE: &str = "update.bundle";
/// The file a handed-off download is written to before it is renamed.
const PART: &str = "update.bundle.part";
/// How `perch ota install` ended, in the OTA directory.
const RESULT: &str = "install-result.json";

/// A handed-off bundle that nothing takes within this long means the path unit is not running (a slow box
/// under load can take a minute to start the unit's process).
const PICKUP: Duration = Duration::from_secs(300);
/// The install unit's own limit (`TimeoutStartSec=30min`) and some room.
const INSTALL_LIMIT: Duration = Duration::from_secs(35 * 60);
/// After the bundle is consumed, the result follows within this long (it is written before the `rm`).
const RESULT_GRACE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);
/// A download stops before the data partition's free space falls below this: the outbox, the OTA state
/// and the recordings share it, and a bundle must never be what fills it.
const FREE_RESERVE: u64 = 128 << 20;
/// Free space is looked at after each this many bytes.
const FREE_CHECK_STEP: u64 = 16 << 20;

/// How one `perch ota install` ended (`install-result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallResult {
    pub ok: bool,
    /// The release installed (ok) or, where the header was read, the one refused.
    pub version: Option<String>,
    pub error: Option<String>,
    pub finished: String,
}

impl Ota {
    fn result_path(&self) -> PathBuf {
        self.dir.join(RESULT)
    }

    /// Records how an install ended, for a service that handed it the bundle (best effort: the state file
    /// already holds a written slot's outcome).
    pub fn record_install(&self, result: &Result<Manifest, OtaError>) {
        let r = InstallResult {
            ok: result.is_ok(),
            version: result.as_ref().ok().map(|m| m.version.clone()),
            error: result.as_ref().err().map(ToString::to_string),
            finished: crate::events::schema::rfc3339(std::time::SystemTime::now()),
        };
        if let Err(e) = super::state::write_atomic(&self.result_path(), &serde_json::to_vec(&r).expect("result serializes")) {
            tracing::warn!("ota: cannot record the install's result: {e}");
        }
    }

    /// Downloads `url`, checks it, and hands it to the install unit; returns when the unit has finished.
    pub fn install_by_unit(&self, url: &str, opts: &InstallOptions) -> Result<Manifest, OtaError> {
        let incoming = self.incoming_dir();
        std::fs::create_dir_all(&incoming).map_err(|e| OtaError::io(format!("cannot create {}", incoming.display()), e))?;
        let bundle = incoming.join(BUNDLE);
        if bundle.exists() || self.install_running() {
            return Err(OtaError::Refused(format!("an install is already waiting or running ({}): wait for perch-ota-install to finish", bundle.display())));
        }
        let part = incoming.join(PART);
        let checked = self.download(url, &part, opts).and_then(|_| {
            let mut f = File::open(&part).map_err(|e| OtaError::io(format!("cannot read {}", part.display()), e))?;
            self.check_header(&mut f, opts)
        });
        let manifest = match checked {
            Ok(c) => c.header.manifest,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        let _ = std::fs::remove_file(self.result_path());
        let io = |e: std::io::Error| OtaError::io(format!("cannot hand {} to the install unit", bundle.display()), e);
        let handed = std::time::SystemTime::now();
        std::fs::rename(&part, &bundle).map_err(io)?;
        File::open(&incoming).and_then(|d| d.sync_all()).map_err(io)?;
        tracing::info!(version = %manifest.version, "ota: bundle checked and handed to perch-ota-install");
        self.wait_for_install_unit(&bundle, handed)?;
        Ok(manifest)
    }

    /// Streams `url` into `dest` (synced), failing on a cancel, a stalled server or another SHA-256 than
    /// the command names.
    fn download(&self, url: &str, dest: &Path, opts: &InstallOptions) -> Result<(), OtaError> {
        let mut source = open_source(url, self.cfg.ca_file.as_deref(), self.cfg.download_stall())?;
        let mut r = Tap::new(&mut *source, opts.expect_sha256.as_deref(), opts.cancel.clone());
        let io = |what: &str, e: std::io::Error| OtaError::io(format!("cannot {what} {}", dest.display()), e);
        let mut f = File::create(dest).map_err(|e| io("create", e))?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut written, mut checked) = (0u64, 0u64);
        loop {
            let n = r.read(&mut buf).map_err(|e| OtaError::io(format!("cannot download {}", crate::util::mask_uri(url)), e))?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).map_err(|e| io("write", e))?;
            written += n as u64;
            if written - checked >= FREE_CHECK_STEP {
                checked = written;
                check_free(dest, written)?;
            }
        }
        f.sync_all().map_err(|e| io("sync", e))?;
        r.check_sha()
    }

    /// Waits until the install unit has consumed `bundle` (handed over at `handed`) and recorded how it
    /// ended.
    fn wait_for_install_unit(&self, bundle: &Path, handed: std::time::SystemTime) -> Result<(), OtaError> {
        let start = Instant::now();
        let mut consumed: Option<Instant> = None;
        let mut picked_up = false;
        loop {
            if let Some(r) = self.read_result() {
                return match (r.ok, r.error) {
                    (true, _) => Ok(()),
                    (false, e) => Err(OtaError::Refused(format!("perch-ota-install: {}", e.unwrap_or_default()))),
                };
            }
            let waiting = bundle.exists();
            let running = self.install_running() || matches!(self.load_state().map(|s| s.phase), Ok(Phase::Installing { .. }));
            // The install creates its lock file first thing: a fresh one means the unit has started.
            picked_up |= running || std::fs::metadata(self.lock_path()).and_then(|m| m.modified()).is_ok_and(|t| t >= handed);
            if waiting && !picked_up && start.elapsed() > PICKUP {
                return Err(OtaError::Io(format!(
                    "nothing took the bundle within {} s: enable the install unit (systemctl enable --now perch-ota-install.path); the bundle stays in {}",
                    PICKUP.as_secs(),
                    bundle.display()
                )));
            }
            if !waiting && !running && consumed.get_or_insert_with(Instant::now).elapsed() > RESULT_GRACE {
                return Err(OtaError::Io("perch-ota-install ended without recording a result: see journalctl -u perch-ota-install".into()));
            }
            if start.elapsed() > INSTALL_LIMIT {
                return Err(OtaError::Io(format!(
                    "perch-ota-install has not finished in {} min: see journalctl -u perch-ota-install",
                    INSTALL_LIMIT.as_secs() / 60
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn read_result(&self) -> Option<InstallResult> {
        std::fs::read(self.result_path()).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }
}

/// Fails once the file system holding `dest` has less than [`FREE_RESERVE`] left.
fn check_free(dest: &Path, written: u64) -> Result<(), OtaError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let Some((free, _)) = crate::util::fs::disk_space(dir) else { return Ok(()) };
    if free < FREE_RESERVE {
        return Err(OtaError::Io(format!(
            "the bundle does not fit: {} MiB downloaded and {} MiB left on {} (perch keeps {} MiB free): free space there (recordings: [record] quota) and retry",
            written >> 20,
            free >> 20,
            dir.display(),
            FREE_RESERVE >> 20
        )));
    }
    Ok(())
}
