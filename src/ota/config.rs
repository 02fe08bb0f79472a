//! `[ota]`: which bootloader switches slots, where the slots are, which keys are trusted, and the health gate.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::util::config::{Problem, Section};

/// How the active slot is switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// U-Boot environment through `fw_printenv`/`fw_setenv` (RAUC-style `BOOT_ORDER`, `BOOT_x_LEFT`).
    Uboot,
    /// GRUB environment block through `grub-editenv`.
    Grub,
    /// Jetson boot chain through `nvbootctrl`.
    Tegra,
    /// A state file; the boot choice is made by `perch ota boot` (tests, simulation).
    File,
    /// App mode: two slot directories under `app_dir`, switched by renaming a `current` symlink.
    App,
}

/// Who writes the slot when a fleet `cmd/ota` arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallBy {
    /// The service streams the bundle into the slot itself (app mode, file slots, or a service that may
    /// write the slot devices).
    Service,
    /// The service downloads the bundle into `<ota dir>/incoming/`, checks it, and hands it to
    /// `perch-ota-install.service`, the only shipped unit allowed to write the slot partitions.
    InstallUnit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtaConfig {
    pub backend: BackendKind,
    /// Must equal a bundle's `compatible` string, so one device type never installs another's image.
    pub compatible: String,
    /// Trusted public keys: a directory of `*.pub` files or one file with a key per line (hex ed25519).
    pub keyring: PathBuf,
    /// Block devices or files of slots A and B (not used in app mode).
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    /// The bundle image written to a slot device (block backends).
    pub image: String,
    /// App mode: holds `a/`, `b/`, and the `current` and `committed` links.
    pub app_dir: PathBuf,
    /// Boots a new slot gets to pass the health gate before the bootloader falls back.
    pub tries: u8,
    /// Health checks must pass without a break for this long before a trial slot is committed.
    pub health_window_s: f64,
    /// A trial that has not passed the gate within this long is rolled back.
    pub health_timeout_s: f64,
    /// Image the detector must find `golden_labels` in (relative: to the running slot in app mode, else
    /// to the config file). Empty: no golden-frame check.
    pub golden_image: PathBuf,
    pub golden_labels: Vec<String>,
    /// Where the OTA state file lives (default `<state_dir>/ota`).
    pub state_dir: Option<PathBuf>,
    /// uboot: the `fw_env.config` to pass with `-c` (default: the tools' own, `/etc/fw_env.config`).
    pub fw_env_config: Option<PathBuf>,
    /// grub: the environment block.
    pub grubenv: PathBuf,
    /// uboot/grub: the kernel command line that names the booted slot (`perch.slot=A` or `rauc.slot=A`).
    pub cmdline: PathBuf,
    /// tegra: the `nvbootctrl` program.
    pub nvbootctrl: PathBuf,
    /// Command run to reboot after a rollback or a fleet install on a block backend. Empty (the default):
    /// perch creates `<ota dir>/reboot-requested`, which the shipped `perch-reboot.path` turns into a
    /// reboot (the hardened service has no right to reboot by itself).
    pub reboot_command: Vec<String>,
    /// Who writes the slot for a fleet install (default: `install_unit` on block backends, `service` in app
    /// mode and with file slots).
    pub install_by: Option<InstallBy>,
    /// HTTPS downloads: CA certificates (PEM) of the update server, instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// A download during which the server sends nothing for this long fails (the slot stays unbootable),
    /// and a cancelled install waiting on such a server ends within it.
    pub download_stall_s: f64,
}

impl Default for OtaConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::File,
            compatible: String::new(),
            keyring: PathBuf::from("/etc/perch/ota-keys"),
            slot_a: PathBuf::new(),
            slot_b: PathBuf::new(),
            image: "rootfs".into(),
            app_dir: PathBuf::from("/opt/perch"),
            tries: 3,
            health_window_s: 60.0,
            health_timeout_s: 600.0,
            golden_image: PathBuf::new(),
            golden_labels: Vec::new(),
            state_dir: None,
            fw_env_config: None,
            grubenv: PathBuf::from("/boot/grub/grubenv"),
            cmdline: PathBuf::from("/proc/cmdline"),
            nvbootctrl: PathBuf::from("nvbootctrl"),
            reboot_command: Vec::new(),
            install_by: None,
            ca_file: None,
            download_stall_s: 60.0,
        }
    }
}

impl OtaConfig {
    /// Who writes the slot for a fleet install: the configured choice, else by backend.
    pub fn install_by(&self) -> InstallBy {
        self.install_by.unwrap_or(match self.backend {
            BackendKind::App | BackendKind::File => InstallBy::Service,
            BackendKind::Uboot | BackendKind::Grub | BackendKind::Tegra => InstallBy::InstallUnit,
        })
    }

    /// The longest silence of an update server within a download.
    pub fn download_stall(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.download_stall_s)
    }
}

impl Section for OtaConfig {
    fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &mut PathBuf| crate::util::config::resolve(base, p);
        for p in [&mut self.keyring, &mut self.slot_a, &mut self.slot_b, &mut self.app_dir, &mut self.grubenv] {
            abs(p);
        }
        // In app mode the golden image travels with the release: resolved against the running slot later.
        if self.backend != BackendKind::App {
            abs(&mut self.golden_image);
        }
        for p in [&mut self.state_dir, &mut self.fw_env_config, &mut self.ca_file].into_iter().flatten() {
            abs(p);
        }
    }

    fn validate(&self, key: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.compatible.is_empty() {
            p.push(Problem::new(format!("{key}.compatible"), "must be set: the device type bundles are built for, e.g. \"perch-orin-nano\""));
        }
        if self.backend != BackendKind::App {
            for (name, path) in [("slot_a", &self.slot_a), ("slot_b", &self.slot_b)] {
                if path.as_os_str().is_empty() {
                    p.push(Problem::new(format!("{key}.{name}"), "must be set: the block device or file of this slot"));
                }
            }
            if !self.slot_a.as_os_str().is_empty() && self.slot_a == self.slot_b {
                p.push(Problem::new(format!("{key}.slot_b"), "is the same as slot_a: A/B needs two different slots"));
            }
        }
        if self.tries == 0 {
            p.push(Problem::new(format!("{key}.tries"), "0 would never boot a new slot: use 1 to 10"));
        }
        if !(self.health_window_s >= 0.0 && self.health_window_s.is_finite()) {
            p.push(Problem::new(format!("{key}.health_window_s"), "must be 0 or more seconds"));
        }
        if !(self.health_timeout_s > self.health_window_s && self.health_timeout_s.is_finite()) {
            p.push(Problem::new(format!("{key}.health_timeout_s"), "must be longer than health_window_s, or no trial could ever pass"));
        }
        if !(1.0..=3600.0).contains(&self.download_stall_s) {
            p.push(Problem::new(format!("{key}.download_stall_s"), format!("{} is out of range: use 1..=3600 seconds", self.download_stall_s)));
        }
        if !self.compatible.is_empty() && !super::bundle::valid_compatible(&self.compatible) {
            p.push(Problem::new(format!("{key}.compatible"), format!("{:?}: use letters, digits, '.', '_' and '-' only", self.compatible)));
        }
        if !self.golden_image.as_os_str().is_empty() && self.golden_labels.is_empty() {
            p.push(Problem::new(format!("{key}.golden_labels"), "golden_image is set: list the labels the detector must find in it"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_compatible_and_slots() {
        let keys: Vec<_> = OtaConfig::default().validate("ota").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["ota.compatible", "ota.slot_a", "ota.slot_b"]);
    }

    #[test]
    fn app_mode_needs_no_slot_devices() {
        let c = OtaConfig { backend: BackendKind::App, compatible: "x".into(), ..Default::default() };
        assert!(c.validate("ota").is_empty());
    }

    #[test]
    fn the_shipped_example_parses_and_validates_when_uncommented() {
        let shipped = include_str!("../../overlay/etc/perch/perch.toml");
        let block: String =
            shipped.lines().skip_while(|l| *l != "# [ota]").take_while(|l| l.starts_with('#')).map(|l| format!("{}\n", l.trim_start_matches("# "))).collect();
        assert!(block.starts_with("[ota]\n"), "{block}");
        let c = crate::config::Config::parse(&format!("device_id = \"x\"\n{block}")).unwrap();
        let ota = c.ota.unwrap();
        assert_eq!(ota.backend, BackendKind::Uboot);
        assert!(ota.validate("ota").is_empty(), "{:?}", ota.validate("ota"));
    }

    #[test]
    fn block_backends_hand_fleet_installs_to_the_install_unit() {
        let by = |backend| OtaConfig { backend, ..Default::default() }.install_by();
        assert_eq!(by(BackendKind::Grub), InstallBy::InstallUnit);
        assert_eq!(by(BackendKind::Uboot), InstallBy::InstallUnit);
        assert_eq!(by(BackendKind::Tegra), InstallBy::InstallUnit);
        assert_eq!(by(BackendKind::App), InstallBy::Service);
        assert_eq!(by(BackendKind::File), InstallBy::Service);
        let c = crate::config::Config::parse("device_id = \"x\"\n[ota]\nbackend = \"grub\"\ninstall_by = \"service\"\n").unwrap();
        assert_eq!(c.ota.unwrap().install_by(), InstallBy::Service);
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let (key, msg) = crate::config::Config::parse("[ota]\nbakend = \"uboot\"\n").unwrap_err();
        assert_eq!(key, "ota.bakend");
        assert!(msg.contains("unknown field"), "{msg}");
        let (key, _) = crate::config::Config::parse("[ota]\nbackend = \"lilo\"\n").unwrap_err();
        assert_eq!(key, "ota.backend");
    }

    #[test]
    fn bad_values_are_named() {
        let c = OtaConfig {
            compatible: "x".into(),
            slot_a: "/a".into(),
            slot_b: "/a".into(),
            tries: 0,
            health_window_s: 10.0,
            health_timeout_s: 5.0,
            golden_image: "g.jpg".into(),
            ..Default::default()
        };
        let keys: Vec<_> = c.validate("ota").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["ota.slot_b", "ota.tries", "ota.health_timeout_s", "ota.golden_labels"]);
    }
}
