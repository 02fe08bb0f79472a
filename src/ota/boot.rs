//! Bootloader backends: each only reads and writes [`BootFlags`] in its bootloader's own terms.
//!
//! - `uboot`: the U-Boot environment through `fw_printenv`/`fw_setenv` (libubootenv), RAUC-style variables
//!   `BOOT_ORDER="B A"`, `BOOT_A_LEFT=3`, plus `PERCH_A_OK=1` for a slot that passed the health gate.
//! - `grub`: the same variables in a GRUB environment block through `grub-editenv`.
//! - `tegra`: the Jetson boot chain through `nvbootctrl` (active slot, unbootable, mark-boot-successful).
//! - `file`: a JSON file; `perch ota boot` plays the bootloader (tests, simulation).
//! - `app`: app mode; the file backend's flags plus a `current` symlink that systemd starts perch through.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::OtaError;
use super::config::{BackendKind, OtaConfig};
use super::flags::{BootFlags, Slot, SlotFlags};
use super::state::write_atomic;

/// A bootloader, seen as two slots' flags.
pub trait Bootloader: Send + Sync {
    fn name(&self) -> &'static str;
    fn read(&self) -> Result<BootFlags, OtaError>;
    fn write(&self, flags: &BootFlags) -> Result<(), OtaError>;
    /// The slot the running system was booted from.
    fn booted(&self) -> Result<Slot, OtaError>;
    /// Where perch is its own bootloader (file, app): choose a slot as the firmware would, spend a try,
    /// switch to it. Others: the firmware already did; returns the booted slot.
    fn power_on(&self) -> Result<Slot, OtaError> {
        self.booted()
    }
    /// Makes `slot` the one that runs at the next start without a reboot (app mode); others: nothing.
    fn activate(&self, _slot: Slot) -> Result<(), OtaError> {
        Ok(())
    }
}

pub fn open(cfg: &OtaConfig, state_dir: &Path) -> Box<dyn Bootloader> {
    match cfg.backend {
        BackendKind::Uboot => Box::new(EnvBackend { tool: EnvTool::Uboot { config: cfg.fw_env_config.clone() }, cmdline: cfg.cmdline.clone() }),
        BackendKind::Grub => Box::new(EnvBackend { tool: EnvTool::Grub { env: cfg.grubenv.clone() }, cmdline: cfg.cmdline.clone() }),
        BackendKind::Tegra => Box::new(Tegra { program: cfg.nvbootctrl.clone(), record: state_dir.join("tegra-slots.json") }),
        BackendKind::File => Box::new(FileBackend { path: state_dir.join("bootflags.json") }),
        BackendKind::App => Box::new(AppBackend { dir: cfg.app_dir.clone(), flags: FileBackend { path: cfg.app_dir.join("bootflags.json") } }),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, OtaError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| OtaError::boot_io(format!("cannot run {shown} ({what}; is the tool installed and on PATH?)"), e))?;
    if !out.status.success() {
        return Err(OtaError::Boot(format!(
            "{shown} ({what}) failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or("no message")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_with_input(cmd: &mut Command, input: &[u8], what: &str) -> Result<(), OtaError> {
    use std::io::Write;
    use std::process::Stdio;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| OtaError::boot_io(format!("cannot run {shown} ({what}; is the tool installed and on PATH?)"), e))?;
    let _ = child.stdin.take().expect("piped").write_all(input);
    let out = child.wait_with_output().map_err(|e| OtaError::boot_io(format!("{shown} ({what})"), e))?;
    if !out.status.success() {
        return Err(OtaError::Boot(format!("{shown} ({what}) failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

/// The slot named on a kernel command line: `perch.slot=A` or RAUC's `rauc.slot=A`.
pub fn slot_from_cmdline(text: &str) -> Option<Slot> {
    text.split_whitespace().find_map(|w| w.strip_prefix("perch.slot=").or_else(|| w.strip_prefix("rauc.slot=")).and_then(Slot::parse))
}

/// Maps flags to RAUC-style environment variables and back.
pub mod env_vars {
    use super::*;

    pub fn to_vars(f: &BootFlags) -> Vec<(String, String)> {
        let order: Vec<&str> = [f.primary, f.primary.other()].into_iter().filter(|s| f.get(*s).bootable).map(Slot::letter).collect();
        let mut v = vec![("BOOT_ORDER".to_string(), order.join(" "))];
        for s in Slot::BOTH {
            let sf = f.get(s);
            v.push((format!("BOOT_{s}_LEFT"), sf.tries_left.to_string()));
            v.push((format!("PERCH_{s}_OK"), u8::from(sf.successful).to_string()));
        }
        v
    }

    /// `None` when the environment holds no slot variables yet (a fresh box).
    pub fn from_vars(vars: &HashMap<String, String>) -> Option<BootFlags> {
        let order: Vec<Slot> = vars.get("BOOT_ORDER").filter(|o| !o.trim().is_empty())?.split_whitespace().filter_map(Slot::parse).collect();
        let flags = |s: Slot| SlotFlags {
            bootable: order.contains(&s),
            tries_left: vars.get(&format!("BOOT_{s}_LEFT")).and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            successful: vars.get(&format!("PERCH_{s}_OK")).is_some_and(|v| v.trim() == "1"),
        };
        Some(BootFlags { primary: *order.first()?, a: flags(Slot::A), b: flags(Slot::B) })
    }

    pub fn parse_list(text: &str) -> HashMap<String, String> {
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.to_string())).collect()
    }
}

enum EnvTool {
    Uboot { config: Option<PathBuf> },
    Grub { env: PathBuf },
}

/// U-Boot or GRUB: flags as environment variables; the booted slot from the kernel command line.
struct EnvBackend {
    tool: EnvTool,
    cmdline: PathBuf,
}

impl EnvBackend {
    fn list(&self) -> Result<HashMap<String, String>, OtaError> {
        let text = match &self.tool {
            EnvTool::Uboot { config } => {
                let mut c = Command::new("fw_printenv");
                if let Some(cfg) = config {
                    c.arg("-c").arg(cfg);
                }
                run(&mut c, "reading the U-Boot environment")?
            }
            EnvTool::Grub { env } => run(Command::new("grub-editenv").arg(env).arg("list"), "reading the GRUB environment")?,
        };
        Ok(env_vars::parse_list(&text))
    }
}

impl Bootloader for EnvBackend {
    fn name(&self) -> &'static str {
        match self.tool {
            EnvTool::Uboot { .. } => "uboot",
            EnvTool::Grub { .. } => "grub",
        }
    }

    fn read(&self) -> Result<BootFlags, OtaError> {
        match env_vars::from_vars(&self.list()?) {
            Some(f) => Ok(f),
            None => Ok(BootFlags::factory(self.booted()?)),
        }
    }

    fn write(&self, flags: &BootFlags) -> Result<(), OtaError> {
        let vars = env_vars::to_vars(flags);
        match &self.tool {
            // One script: libubootenv writes all variables in one environment update (the redundant copy
            // keeps the old one intact until the new one is complete).
            EnvTool::Uboot { config } => {
                let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                let mut c = Command::new("fw_setenv");
                if let Some(cfg) = config {
                    c.arg("-c").arg(cfg);
                }
                run_with_input(c.args(["-s", "-"]), text.as_bytes(), "writing the U-Boot environment")
            }
            // grub-editenv rewrites its single 1 KiB block: all variables change together.
            EnvTool::Grub { env } => {
                let mut c = Command::new("grub-editenv");
                c.arg(env).arg("set");
                for (k, v) in &vars {
                    c.arg(format!("{k}={v}"));
                }
                run(&mut c, "writing the GRUB environment")?;
                sync_env_file(env)
            }
        }
    }

    fn booted(&self) -> Result<Slot, OtaError> {
        let text = std::fs::read_to_string(&self.cmdline).map_err(|e| OtaError::boot_io(format!("cannot read {}", self.cmdline.display()), e))?;
        slot_from_cmdline(&text).ok_or_else(|| {
            OtaError::Boot(format!("{} names no slot: the boot script must pass perch.slot=A or perch.slot=B to the kernel", self.cmdline.display()))
        })
    }
}

/// grub-editenv syncs the new block but not the directory its rename changed: on the box's FAT partition a
/// power cut right after a commit could bring back the old block (the release on trial again, or an install
/// that never happened). Syncing both makes the write durable before perch records the transition.
fn sync_env_file(env: &Path) -> Result<(), OtaError> {
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    let dir = env.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync(env).and_then(|()| sync(dir)).map_err(|e| OtaError::boot_io(format!("syncing {} (check the boot partition is mounted read-write)", env.display()), e))
}

/// Jetson: `nvbootctrl -t rootfs` (L4T). The firmware keeps the retry counter; perch switches the active
/// slot, marks slots unbootable, and marks a good boot successful.
///
/// What the firmware does not report, perch's own record (`tegra-slots.json` beside the OTA state) says:
/// JetPack 5/6 (UEFI, L4T 35/36) print no `boot_successful`, and some outputs no `retry_count`. A missing
/// field is never taken as proof: a slot is proven only if the firmware says so or perch marked it so.
struct Tegra {
    program: PathBuf,
    record: PathBuf,
}

/// What perch last wrote for each slot: proven, and the tries it armed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TegraRecord {
    pub successful: [bool; 2],
    pub tries: [u8; 2],
}

impl Tegra {
    fn ctl(&self, args: &[&str]) -> Result<String, OtaError> {
        run(Command::new(&self.program).args(["-t", "rootfs"]).args(args), "Jetson boot control")
    }

    fn load_record(&self) -> Result<Option<TegraRecord>, OtaError> {
        match std::fs::read(&self.record) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                OtaError::Boot(format!("{} is unreadable ({e}): restore it, or delete it only on a box with no update pending", self.record.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(OtaError::boot_io(format!("cannot read {}", self.record.display()), e)),
        }
    }

    fn save_record(&self, flags: &BootFlags) -> Result<(), OtaError> {
        let r = TegraRecord { successful: [flags.a.successful, flags.b.successful], tries: [flags.a.tries_left, flags.b.tries_left] };
        write_atomic(&self.record, &serde_json::to_vec(&r).expect("record serializes"))
    }
}

/// One slot as `dump-slots-info` reports it; a field it does not print is `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportedSlot {
    pub bootable: bool,
    pub retry_count: Option<u8>,
    pub successful: Option<bool>,
}

/// `nvbootctrl dump-slots-info` as parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotsInfo {
    pub active: Slot,
    pub slots: [ReportedSlot; 2],
}

/// Parses `nvbootctrl [-t rootfs] dump-slots-info`: the active slot and, per slot, status, and
/// retry_count / boot_successful where the firmware prints them. Both the cboot-era format (L4T 32:
/// `slot: 0, retry_count: 3, status: normal, boot_successful: 1`) and the UEFI one (L4T 35/36: `Active rootfs
/// slot: A`, `slot: 0,             retry_count: 3,             status: normal`, or only `status` for the
/// bootloader target) are read.
pub fn parse_dump_slots_info(text: &str) -> Option<SlotsInfo> {
    let mut active = None;
    let mut slots = [None, None];
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Active bootloader slot:").or_else(|| line.strip_prefix("Active rootfs slot:")) {
            active = Slot::parse(v);
            continue;
        }
        let Some(rest) = line.strip_prefix("slot:") else { continue };
        let fields: HashMap<&str, &str> = rest
            .split(',')
            .enumerate()
            .filter_map(|(i, f)| if i == 0 { Some(("slot", f.trim())) } else { f.split_once(':').map(|(k, v)| (k.trim(), v.trim())) })
            .collect();
        let Some(slot) = fields.get("slot").and_then(|s| Slot::parse(s)) else { continue };
        slots[slot.index()] = Some(ReportedSlot {
            bootable: fields.get("status").is_none_or(|s| *s != "unbootable"),
            retry_count: fields.get("retry_count").and_then(|v| v.parse().ok()),
            successful: fields.get("boot_successful").map(|v| *v == "1"),
        });
    }
    Some(SlotsInfo { active: active?, slots: [slots[0]?, slots[1]?] })
}

impl SlotsInfo {
    /// The flags, with what the firmware does not print taken from perch's record. Without a record (no
    /// update was ever installed) the booted slot is the proven factory image and the other is unproven.
    pub fn flags(&self, record: Option<&TegraRecord>, booted: Slot) -> BootFlags {
        let slot = |s: Slot| {
            let r = &self.slots[s.index()];
            let recorded_ok = record.map_or(s == booted, |rec| rec.successful[s.index()]);
            let bootable = r.bootable;
            SlotFlags {
                bootable,
                tries_left: r.retry_count.or(record.map(|rec| rec.tries[s.index()])).unwrap_or(0),
                successful: bootable && r.successful.unwrap_or(recorded_ok),
            }
        };
        BootFlags { primary: self.active, a: slot(Slot::A), b: slot(Slot::B) }
    }
}

impl Bootloader for Tegra {
    fn name(&self) -> &'static str {
        "tegra"
    }

    fn read(&self) -> Result<BootFlags, OtaError> {
        let text = self.ctl(&["dump-slots-info"])?;
        let info = parse_dump_slots_info(&text).ok_or_else(|| OtaError::Boot(format!("cannot understand `nvbootctrl -t rootfs dump-slots-info`:\n{text}")))?;
        Ok(info.flags(self.load_record()?.as_ref(), self.booted()?))
    }

    fn write(&self, new: &BootFlags) -> Result<(), OtaError> {
        let old = self.read()?;
        let current = self.booted()?;
        for s in Slot::BOTH {
            if old.get(s).bootable && !new.get(s).bootable {
                self.ctl(&["set-slot-as-unbootable", &s.index().to_string()])?;
            }
        }
        // Setting the active slot also makes it bootable and re-arms the firmware's retry counter (and may
        // clear its boot-successful mark).
        let activate = new.get(new.primary).bootable
            && (new.primary != old.primary || !old.get(new.primary).bootable || new.get(new.primary).tries_left > old.get(new.primary).tries_left);
        if activate {
            self.ctl(&["set-active-boot-slot", &new.primary.index().to_string()])?;
        }
        // A proven running slot stays proven, even after being made active again.
        if new.get(current).successful && (!old.get(current).successful || (activate && new.primary == current)) {
            self.ctl(&["mark-boot-successful"])?;
        }
        // What the firmware may not report is what perch wrote: kept for the next read.
        self.save_record(new)
    }

    fn booted(&self) -> Result<Slot, OtaError> {
        let out = self.ctl(&["get-current-slot"])?;
        Slot::parse(out.trim()).ok_or_else(|| OtaError::Boot(format!("`nvbootctrl get-current-slot` printed {:?}: expected 0 or 1", out.trim())))
    }
}

/// Flags and the booted slot in one JSON file. perch itself plays the firmware at `perch ota boot`.
struct FileBackend {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct FileFlags {
    flags: BootFlags,
    booted: Slot,
}

impl FileBackend {
    fn load(&self) -> Result<FileFlags, OtaError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| OtaError::Boot(format!("boot flags {} are unreadable ({e}): restore or delete them", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileFlags { flags: BootFlags::factory(Slot::A), booted: Slot::A }),
            Err(e) => Err(OtaError::boot_io(format!("cannot read {}", self.path.display()), e)),
        }
    }

    fn save(&self, f: &FileFlags) -> Result<(), OtaError> {
        write_atomic(&self.path, &serde_json::to_vec_pretty(f).expect("flags serialize"))
    }
}

impl Bootloader for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn read(&self) -> Result<BootFlags, OtaError> {
        Ok(self.load()?.flags)
    }

    fn write(&self, flags: &BootFlags) -> Result<(), OtaError> {
        let booted = self.load()?.booted;
        self.save(&FileFlags { flags: *flags, booted })
    }

    fn booted(&self) -> Result<Slot, OtaError> {
        Ok(self.load()?.booted)
    }

    fn power_on(&self) -> Result<Slot, OtaError> {
        let f = self.load()?;
        let (flags, chosen) = f.flags.boot();
        let booted = chosen.ok_or_else(|| OtaError::Boot("no slot is bootable: reinstall a release (perch ota install)".into()))?;
        self.save(&FileFlags { flags, booted })?;
        Ok(booted)
    }
}

/// App mode: `<app_dir>/a`, `<app_dir>/b`, `current` → the slot systemd runs, `committed` → the last slot that
/// passed the health gate (its perch runs `perch ota boot` before each start, so a broken release cannot stop
/// its own rollback).
struct AppBackend {
    dir: PathBuf,
    flags: FileBackend,
}

impl AppBackend {
    fn link(&self, name: &str, slot: Slot) -> Result<(), OtaError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let io = |e: std::io::Error| OtaError::io(format!("cannot point {}/{name} at {}", self.dir.display(), slot.lower()), e);
        std::os::unix::fs::symlink(slot.lower(), &tmp).map_err(io)?;
        // rename(2) replaces the link atomically: a start sees the old or the new slot, never none.
        std::fs::rename(&tmp, self.dir.join(name)).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }

    fn read_link(&self, name: &str) -> Result<Slot, OtaError> {
        let p = self.dir.join(name);
        let target = std::fs::read_link(&p).map_err(|e| {
            OtaError::Boot(format!(
                "cannot read the link {}: {e}: set up app mode with the factory release in {}/a and `current` → a",
                p.display(),
                self.dir.display()
            ))
        })?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(Slot::parse)
            .ok_or_else(|| OtaError::Boot(format!("{} points at {}: expected a or b", p.display(), target.display())))
    }
}

impl Bootloader for AppBackend {
    fn name(&self) -> &'static str {
        "app"
    }

    fn read(&self) -> Result<BootFlags, OtaError> {
        match std::fs::exists(&self.flags.path) {
            Ok(true) => self.flags.read(),
            _ => Ok(BootFlags::factory(self.booted()?)),
        }
    }

    fn write(&self, flags: &BootFlags) -> Result<(), OtaError> {
        let booted = self.booted()?;
        self.flags.save(&FileFlags { flags: *flags, booted })?;
        // The known-good release is what runs `perch ota boot`; it follows every commit.
        let good = [flags.primary, flags.primary.other()].into_iter().find(|s| flags.get(*s).successful);
        match good {
            Some(s) if self.read_link("committed").ok() != Some(s) => self.link("committed", s),
            _ => Ok(()),
        }
    }

    fn booted(&self) -> Result<Slot, OtaError> {
        self.read_link("current")
    }

    fn power_on(&self) -> Result<Slot, OtaError> {
        let (flags, chosen) = self.read()?.boot();
        let slot = chosen.ok_or_else(|| OtaError::Boot("no slot is bootable: reinstall a release (perch ota install)".into()))?;
        self.flags.save(&FileFlags { flags, booted: slot })?;
        if self.booted()? != slot {
            self.link("current", slot)?;
        }
        Ok(slot)
    }

    fn activate(&self, slot: Slot) -> Result<(), OtaError> {
        self.link("current", slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_round_trip_every_reachable_flag_set() {
        let mut f = BootFlags::factory(Slot::A);
        let steps: Vec<Box<dyn Fn(BootFlags) -> BootFlags>> = vec![
            Box::new(|f| f.begin_install(Slot::B)),
            Box::new(|f| f.finish_install(Slot::B, 3)),
            Box::new(|f| f.boot().0),
            Box::new(|f| f.mark_good(Slot::B)),
            Box::new(|f| f.begin_install(Slot::A)),
            Box::new(|f| f.finish_install(Slot::A, 2)),
            Box::new(|f| f.mark_bad(Slot::A)),
        ];
        for step in steps {
            f = step(f);
            let vars: HashMap<String, String> = env_vars::to_vars(&f).into_iter().collect();
            assert_eq!(env_vars::from_vars(&vars), Some(f), "{vars:?}");
        }
        assert_eq!(env_vars::from_vars(&HashMap::new()), None);
    }

    #[test]
    fn rauc_style_names() {
        let f = BootFlags::factory(Slot::A).finish_install(Slot::B, 3);
        let vars: HashMap<String, String> = env_vars::to_vars(&f).into_iter().collect();
        assert_eq!(vars["BOOT_ORDER"], "B A");
        assert_eq!(vars["BOOT_B_LEFT"], "3");
        assert_eq!(vars["PERCH_A_OK"], "1");
        assert_eq!(vars["PERCH_B_OK"], "0");
    }

    #[test]
    fn cmdline_names_the_slot() {
        assert_eq!(slot_from_cmdline("console=ttyS0 root=/dev/mmcblk0p2 perch.slot=B quiet"), Some(Slot::B));
        assert_eq!(slot_from_cmdline("rauc.slot=A"), Some(Slot::A));
        assert_eq!(slot_from_cmdline("root=/dev/sda1"), None);
    }

    #[test]
    fn dump_slots_info_both_formats() {
        let old = "Current bootloader slot: A\nActive bootloader slot: B\nnum_slots: 2\nslot: 0, retry_count: 0, status: normal, boot_successful: 1\nslot: 1, retry_count: 3, status: normal, boot_successful: 0\n";
        // cboot era: every field printed; the record is not needed.
        let f = parse_dump_slots_info(old).unwrap().flags(None, Slot::A);
        assert_eq!(f.primary, Slot::B);
        assert_eq!(f.a, SlotFlags { bootable: true, tries_left: 0, successful: true });
        assert_eq!(f.b, SlotFlags { bootable: true, tries_left: 3, successful: false });
        // UEFI, `-t rootfs` (L4T 35.4.1): no boot_successful. A new release in B is pending, not proven.
        let rootfs = "Current rootfs slot: A\nActive rootfs slot: B\nnum_slots: 2\nslot: 0,             retry_count: 3,             status: normal\nslot: 1,             retry_count: 3,             status: normal\n";
        let info = parse_dump_slots_info(rootfs).unwrap();
        assert_eq!(info.slots[1], ReportedSlot { bootable: true, retry_count: Some(3), successful: None });
        let pending = TegraRecord { successful: [true, false], tries: [0, 3] };
        let f = info.flags(Some(&pending), Slot::B);
        assert!(!f.b.successful, "a missing boot_successful was taken as proof");
        assert!(f.a.successful);
        assert_eq!(f.b.tries_left, 3);
        // Without a record (nothing ever installed), only the booted slot counts as proven.
        let f = info.flags(None, Slot::A);
        assert!(f.a.successful && !f.b.successful);
        // UEFI, bootloader target (L4T 35.4.1): no retry_count either; the tries perch armed stand, so a
        // pending slot does not look exhausted when the service restarts before the reboot.
        let uefi = "Current version: 35.4.1\nCapsule update status: 0\nCurrent bootloader slot: A\nActive bootloader slot: A\nnum_slots: 2\nslot: 0,             status: normal\nslot: 1,             status: unbootable\n";
        let f = parse_dump_slots_info(uefi).unwrap().flags(None, Slot::A);
        assert_eq!(f.primary, Slot::A);
        assert!(f.a.bootable && f.a.successful);
        assert!(!f.b.bootable);
        let both = uefi.replace("status: unbootable", "status: normal").replace("Active bootloader slot: A", "Active bootloader slot: B");
        let f = parse_dump_slots_info(&both).unwrap().flags(Some(&pending), Slot::A);
        assert!(f.can_boot(Slot::B) && !f.b.successful && f.b.tries_left == 3, "{f:?}");
        assert_eq!(parse_dump_slots_info("garbage"), None);
    }
}
