//! `perch bundle …` and `perch ota …`: the command-line side of updates (printing, the progress bar).

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::ota::bundle::{self, ImageSource, Keyring};
use crate::ota::install::InstallOptions;
use crate::ota::{Ota, Slot};

/// `NAME=PATH`; an executable source file stays executable in app mode.
pub fn parse_image(spec: &str) -> anyhow::Result<ImageSource> {
    let (name, path) = spec.split_once('=').with_context(|| format!("--image {spec:?}: use NAME=PATH, e.g. rootfs=build/rootfs.ext4"))?;
    let path = PathBuf::from(path);
    let mode = std::fs::metadata(&path).with_context(|| format!("--image {name}: cannot read {}", path.display()))?.permissions().mode();
    Ok(ImageSource { name: name.to_string(), path, executable: mode & 0o111 != 0 })
}

pub fn build(out: &Path, compatible: &str, version: &str, chunk_size: u32, images: &[String], key: Option<&Path>) -> anyhow::Result<()> {
    let images = images.iter().map(|s| parse_image(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let key = key.map(bundle::load_signing_key).transpose()?;
    let m = bundle::build(out, compatible, version, chunk_size, &images, key.as_ref())?;
    crate::outln!(
        "{}: {} {} ({} image(s), {} bytes){}",
        out.display(),
        m.compatible,
        m.version,
        m.images.len(),
        m.payload_size(),
        if key.is_some() { ", signed" } else { ", unsigned" }
    );
    Ok(())
}

pub fn info(path: &Path) -> anyhow::Result<()> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    // Shown, not trusted: `perch bundle verify --keyring` checks the signature.
    let h = bundle::Header::read(&mut f)?.parse_unverified()?;
    let m = &h.manifest;
    crate::outln!("compatible: {}\nversion:    {}\ncreated:    {}\nchunk size: {}", m.compatible, m.version, m.created, m.chunk_size);
    for img in &m.images {
        crate::outln!(
            "image {}: {} bytes, sha256 {}, {} chunk(s){}",
            img.name,
            img.size,
            img.sha256,
            img.chunks.len(),
            if img.executable { ", executable" } else { "" }
        );
    }
    for (pk, _) in &h.signatures {
        crate::outln!("signed by key {}", bundle::key_id(pk));
    }
    if h.signatures.is_empty() {
        crate::outln!("unsigned");
    }
    Ok(())
}

pub fn verify(path: &Path, keyring: Option<&Path>) -> anyhow::Result<()> {
    let ring = keyring.map(Keyring::load).transpose()?;
    let (h, key) = bundle::verify(path, ring.as_ref())?;
    match key {
        Some(k) => {
            crate::outln!("{}: ok ({} {}, signed by trusted key {})", path.display(), h.manifest.compatible, h.manifest.version, bundle::key_id(k.as_bytes()))
        }
        None => crate::outln!(
            "{}: payload ok ({} {}); signature NOT checked (--no-keyring): check it with --keyring before trusting the bundle",
            path.display(),
            h.manifest.compatible,
            h.manifest.version
        ),
    }
    Ok(())
}

pub fn open(config: &Path) -> anyhow::Result<Ota> {
    let config = Config::load(config)?;
    let cfg = config.ota.as_ref().with_context(|| "the config has no [ota] section: add one (see ota/README.md)")?;
    Ok(Ota::open(cfg, &config.state_dir))
}

pub fn install(config: &Path, source: &str, allow_downgrade: bool, slot: Option<&str>, progress: bool) -> anyhow::Result<()> {
    let ota = open(config)?;
    let slot = slot.map(|s| Slot::parse(s).with_context(|| format!("--slot {s:?}: use a or b"))).transpose()?;
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut on_progress = |written: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(written);
        }
    };
    let result = ota.install(source, &InstallOptions { allow_downgrade, slot, ..Default::default() }, &mut on_progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // For a service that handed this install the bundle (ota.install_by = "install_unit").
    ota.record_install(&result);
    let m = result?;
    let state = ota.load_state()?;
    crate::outln!("installed {} ({}); state: {}; it runs after the next boot (app mode: restart perch)", m.version, m.compatible, state.phase.name());
    Ok(())
}

pub fn status(config: &Path) -> anyhow::Result<()> {
    let ota = open(config)?;
    crate::outln!("{}", serde_json::to_string_pretty(&ota.status()?)?);
    Ok(())
}

pub fn boot(config: &Path) -> anyhow::Result<()> {
    let ota = open(config)?;
    let state = ota.boot()?;
    let booted = ota.backend.booted()?;
    crate::outln!("booted slot {booted}; update {}", state.phase.name());
    if let crate::ota::Phase::RolledBack { version, reason, .. } = &state.phase {
        eprintln!("release {version} was rolled back: {reason}");
    }
    Ok(())
}

pub fn commit(config: &Path) -> anyhow::Result<()> {
    let state = open(config)?.commit("committed by hand (perch ota commit)")?;
    crate::outln!("update {}", state.phase.name());
    Ok(())
}

pub fn rollback(config: &Path, reason: &str) -> anyhow::Result<()> {
    let ota = open(config)?;
    let state = ota.rollback(reason)?;
    crate::outln!("update {}: reboot (app mode: restart perch) to run the previous slot", state.phase.name());
    Ok(())
}
