//! The real bootloader backends through a full install → trial → commit, and install → trial → rollback:
//! U-Boot's environment with Debian's `fw_setenv`/`fw_printenv` (libubootenv) on an env image made by
//! `mkenvimage`, GRUB's with `grub-editenv` on a grubenv file, and Jetson's `nvbootctrl` as a faithful fake
//! (tests/helpers/fake_nvbootctrl.py). The test plays the firmware: it reads the flags with the same tools,
//! chooses a slot as the boot script does, spends a try, and writes the kernel command line.

mod common;
mod ota_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ota_common::*;

const CHUNK: u32 = 64 << 10;

fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}: run scripts/setup.sh (libubootenv-tool, grub-common)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The boot firmware, as the test plays it.
trait Firmware {
    /// Power cycle: returns the slot booted ('A' or 'B').
    fn reboot(&self) -> char;
}

/// U-Boot or GRUB environment, read and written with the real tools.
struct EnvFirmware {
    uboot_config: Option<PathBuf>,
    grubenv: Option<PathBuf>,
    cmdline: PathBuf,
}

impl EnvFirmware {
    fn vars(&self) -> HashMap<String, String> {
        let text = match (&self.uboot_config, &self.grubenv) {
            (Some(c), _) => tool(Command::new("fw_printenv").arg("-c").arg(c)),
            (_, Some(g)) => tool(Command::new("grub-editenv").arg(g).arg("list")),
            _ => unreachable!(),
        };
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn set(&self, k: &str, v: &str) {
        match (&self.uboot_config, &self.grubenv) {
            (Some(c), _) => tool(Command::new("fw_setenv").arg("-c").arg(c).arg(k).arg(v)),
            (_, Some(g)) => tool(Command::new("grub-editenv").arg(g).arg("set").arg(format!("{k}={v}"))),
            _ => unreachable!(),
        };
    }
}

impl Firmware for EnvFirmware {
    /// The boot script in ota/README.md: first slot of BOOT_ORDER that is proven (PERCH_x_OK=1) or has
    /// tries left (BOOT_x_LEFT > 0); an unproven slot spends one try.
    fn reboot(&self) -> char {
        let v = self.vars();
        let order = v.get("BOOT_ORDER").cloned().unwrap_or_default();
        for s in order.split_whitespace() {
            let ok = v.get(&format!("PERCH_{s}_OK")).is_some_and(|x| x == "1");
            let left: u32 = v.get(&format!("BOOT_{s}_LEFT")).and_then(|x| x.parse().ok()).unwrap_or(0);
            if ok || left > 0 {
                if !ok {
                    self.set(&format!("BOOT_{s}_LEFT"), &(left - 1).to_string());
                }
                std::fs::write(&self.cmdline, format!("console=ttyS0 root=PARTLABEL=root{s} perch.slot={s} quiet\n")).unwrap();
                return s.chars().next().unwrap();
            }
        }
        panic!("no bootable slot: {v:?}");
    }
}

struct Tegra {
    fake: PathBuf,
}

impl Tegra {
    fn state(&self) -> serde_json::Value {
        let path = self.fake.with_file_name("nvbootctrl-state.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

impl Firmware for Tegra {
    fn reboot(&self) -> char {
        let out = tool(Command::new(&self.fake).arg("fake-reboot"));
        if out.trim() == "0" { 'A' } else { 'B' }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    slot_a: PathBuf,
    slot_b: PathBuf,
}

/// Checks backend-specific expectations (`NAME=value; …`) on the raw bootloader state.
type Check = Box<dyn Fn(&str)>;

fn setup(backend: &str) -> (Setup, Box<dyn Firmware>, Check) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
    std::fs::write(&slot_a, data(512 << 10, 10)).unwrap();
    std::fs::write(&slot_b, b"").unwrap();
    let cmdline = d.join("cmdline");
    std::fs::write(&cmdline, "console=ttyS0 perch.slot=A quiet\n").unwrap();
    let slots = format!("slot_a = \"{}\"\nslot_b = \"{}\"\ntries = 3\ncmdline = \"{}\"\n", slot_a.display(), slot_b.display(), cmdline.display());
    let (body, fw, check): (String, Box<dyn Firmware>, Check) = match backend {
        "uboot" => {
            std::fs::write(d.join("env.txt"), "bootdelay=0\nbootcmd=run perch_boot\n").unwrap();
            tool(Command::new("mkenvimage").args(["-s", "0x4000", "-o"]).arg(d.join("uboot.env")).arg(d.join("env.txt")));
            let conf = d.join("fw_env.config");
            std::fs::write(&conf, format!("{} 0x0000 0x4000\n", d.join("uboot.env").display())).unwrap();
            let fw = EnvFirmware { uboot_config: Some(conf.clone()), grubenv: None, cmdline };
            let probe = EnvFirmware { uboot_config: Some(conf.clone()), grubenv: None, cmdline: d.join("unused") };
            (
                format!("backend = \"uboot\"\nfw_env_config = \"{}\"\n{slots}", conf.display()),
                Box::new(fw),
                Box::new(move |expect: &str| env_check(&probe, expect)),
            )
        }
        "grub" => {
            let env = d.join("grubenv");
            tool(Command::new("grub-editenv").arg(&env).arg("create"));
            let fw = EnvFirmware { uboot_config: None, grubenv: Some(env.clone()), cmdline };
            let probe = EnvFirmware { uboot_config: None, grubenv: Some(env.clone()), cmdline: d.join("unused") };
            (format!("backend = \"grub\"\ngrubenv = \"{}\"\n{slots}", env.display()), Box::new(fw), Box::new(move |expect: &str| env_check(&probe, expect)))
        }
        "tegra" | "tegra-uefi" => {
            let fake = d.join("nvbootctrl");
            let format = if backend == "tegra" { "cboot" } else { "uefi" };
            std::fs::write(
                &fake,
                format!(
                    "#!/bin/sh\n# FAKE nvbootctrl (tests only)\nexec python3 {} --state {} --format {format} \"$@\"\n",
                    common::root().join("tests/helpers/fake_nvbootctrl.py").display(),
                    d.join("nvbootctrl-state.json").display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            let t = Tegra { fake: fake.clone() };
            let probe = Tegra { fake: fake.clone() };
            (
                format!("backend = \"tegra\"\nnvbootctrl = \"{}\"\n{slots}", fake.display()),
                Box::new(t),
                Box::new(move |expect: &str| tegra_check(&probe, expect)),
            )
        }
        _ => unreachable!(),
    };
    let config = config(&d, &body);
    (Setup { dir, config, slot_a, slot_b }, fw, check)
}

/// `expect`: space-separated `NAME=value` the environment must hold.
fn env_check(fw: &EnvFirmware, expect: &str) {
    let vars = fw.vars();
    for kv in expect.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        assert_eq!(vars.get(k).map(String::as_str).unwrap_or(""), v, "{k} in {vars:?}");
    }
}

/// `expect` for the fake's persisted state, e.g. `active=1; slot1.status=normal; slot1.boot_successful=0`.
fn tegra_check(t: &Tegra, expect: &str) {
    let st = t.state();
    for kv in expect.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap();
        let got = match k.split_once('.') {
            Some((slot, field)) => st["slots"][slot.trim_start_matches("slot").parse::<usize>().unwrap()][field].to_string(),
            None => st[k].to_string(),
        };
        assert_eq!(got.trim_matches('"'), v, "{k} in {st}");
    }
}

fn boot(config: &Path) -> String {
    ok(&["ota", "boot", "-c", config.to_str().unwrap()])
}

/// The whole life of two releases on one backend; `raw` holds backend-specific expectations per step.
fn lifecycle(backend: &str, raw: [&str; 6]) {
    let (s, fw, check) = setup(backend);
    let c = s.config.to_str().unwrap();
    let factory = sha256(&s.slot_a);
    let d = s.dir.path();
    let img2 = d.join("rootfs-2");
    std::fs::write(&img2, data(1 << 20, 11)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img2)], Some(1), CHUNK);

    // install → pending: the new slot is primary with its tries armed.
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    assert_eq!(sha256(&s.slot_b), sha256(&img2));
    assert_eq!(sha256(&s.slot_a), factory);
    assert_eq!(phase(&s.config), "installed");
    check(raw[0]);

    // trial → commit.
    assert_eq!(fw.reboot(), 'B');
    assert!(boot(&s.config).contains("booted slot B; update trial"));
    check(raw[1]);
    ok(&["ota", "commit", "-c", c]);
    assert_eq!(phase(&s.config), "committed");
    check(raw[2]);
    for _ in 0..2 {
        assert_eq!(fw.reboot(), 'B', "a committed slot keeps booting");
        assert!(boot(&s.config).contains("update committed"));
    }

    // install → trial that never passes the gate (crash loop) → the firmware falls back → rolled back.
    let img3 = d.join("rootfs-3");
    std::fs::write(&img3, data(700_000, 12)).unwrap();
    let v3 = bundle(&d.join("v3.bundle"), "perch-test", "3.0.0", &[("rootfs", &img3)], Some(1), CHUNK);
    ok(&["ota", "install", "--quiet", "-c", c, v3.to_str().unwrap()]);
    assert_eq!(sha256(&s.slot_a), sha256(&img3));
    check(raw[3]);
    for _ in 0..3 {
        assert_eq!(fw.reboot(), 'A');
        assert!(boot(&s.config).contains("update trial"));
    }
    assert_eq!(fw.reboot(), 'B', "tries used up: the firmware falls back");
    let out = boot(&s.config);
    assert!(out.contains("booted slot B; update rolled_back"), "{out}");
    let st = status(&s.config);
    assert_eq!(st["version"], "3.0.0");
    assert!(st["reason"].as_str().unwrap().contains("used up its boot tries"), "{st:#}");
    assert_eq!(st["running_version"], "2.0.0");
    assert_eq!(st["flags"]["a"]["bootable"], false);
    check(raw[4]);

    // install → trial → rollback by the health gate's verb → the previous slot boots.
    let v4 = bundle(&d.join("v4.bundle"), "perch-test", "4.0.0", &[("rootfs", &img3)], Some(1), CHUNK);
    ok(&["ota", "install", "--quiet", "-c", c, v4.to_str().unwrap()]);
    assert_eq!(fw.reboot(), 'A');
    assert!(boot(&s.config).contains("update trial"));
    ok(&["ota", "rollback", "-c", c, "--reason", "camera gate delivers no frames"]);
    check(raw[5]);
    assert_eq!(fw.reboot(), 'B');
    boot(&s.config);
    let st = status(&s.config);
    assert_eq!((st["phase"].as_str().unwrap(), st["version"].as_str().unwrap()), ("rolled_back", "4.0.0"));
    assert_eq!(st["reason"], "camera gate delivers no frames");
    assert_eq!(st["running_version"], "2.0.0");
}

#[test]
fn uboot_env_through_fw_setenv() {
    lifecycle(
        "uboot",
        [
            "BOOT_ORDER=B A; BOOT_B_LEFT=3; PERCH_B_OK=0; PERCH_A_OK=1; bootdelay=0",
            "BOOT_B_LEFT=2; PERCH_B_OK=0",
            "BOOT_ORDER=B A; PERCH_B_OK=1",
            "BOOT_ORDER=A B; BOOT_A_LEFT=3; PERCH_A_OK=0; PERCH_B_OK=1",
            "BOOT_ORDER=B; BOOT_A_LEFT=0; PERCH_A_OK=0",
            "BOOT_ORDER=B; PERCH_B_OK=1",
        ],
    );
}

#[test]
fn grub_env_through_grub_editenv() {
    lifecycle(
        "grub",
        [
            "BOOT_ORDER=B A; BOOT_B_LEFT=3; PERCH_B_OK=0; PERCH_A_OK=1",
            "BOOT_B_LEFT=2",
            "PERCH_B_OK=1",
            "BOOT_ORDER=A B; BOOT_A_LEFT=3; PERCH_A_OK=0",
            "BOOT_ORDER=B; PERCH_A_OK=0",
            "BOOT_ORDER=B",
        ],
    );
}

/// The fake firmware's own state after each step of the lifecycle, whichever format it prints.
const TEGRA_STEPS: [&str; 6] = [
    "active=1; slot1.status=normal; slot1.boot_successful=0; slot0.boot_successful=1",
    "current=1; slot1.retry_count=2",
    "slot1.boot_successful=1",
    "active=0; slot0.status=normal; slot0.boot_successful=0",
    "current=1; slot0.status=unbootable",
    "slot0.status=unbootable",
];

#[test]
fn tegra_through_a_fake_nvbootctrl() {
    lifecycle("tegra", TEGRA_STEPS);
}

/// JetPack 5/6 (UEFI) print no `boot_successful`: the new release must still be on trial after its first
/// boot (not committed without the gate), committed by the gate, and fall back when it never passes. The
/// raw checks are the fake firmware's own state, the same as on the cboot-era format.
#[test]
fn tegra_uefi_through_a_fake_nvbootctrl() {
    lifecycle("tegra-uefi", TEGRA_STEPS);
}

/// On UEFI, a service restart between the install and the reboot leaves the release pending: the tries
/// perch armed stand where the firmware prints none, so the pending slot does not look exhausted.
#[test]
fn tegra_uefi_pending_release_survives_a_service_restart() {
    let (s, fw, _) = setup("tegra-uefi");
    let c = s.config.to_str().unwrap();
    let d = s.dir.path();
    let img = d.join("rootfs");
    std::fs::write(&img, data(200_000, 14)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    for _ in 0..3 {
        assert!(boot(&s.config).contains("booted slot A; update installed"), "a restart before the reboot changed the pending release");
    }
    assert_eq!(fw.reboot(), 'B');
    assert!(boot(&s.config).contains("booted slot B; update trial"));
    assert!(boot(&s.config).contains("booted slot B; update trial"), "a restart during the trial committed it");
}

/// Installing again while a release is pending (not booted yet) moves the active slot back to the running
/// one first; that must not cost the running slot its proven status, or a few reboots later nothing boots.
#[test]
fn tegra_reinstall_while_pending_keeps_the_running_slot_proven() {
    let (s, fw, check) = setup("tegra");
    let c = s.config.to_str().unwrap();
    let d = s.dir.path();
    let img = d.join("rootfs");
    std::fs::write(&img, data(200_000, 13)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    check("active=1; slot0.boot_successful=1");
    ok(&["ota", "install", "--quiet", "-c", c, v2.to_str().unwrap()]);
    check("active=1; slot0.boot_successful=1; slot0.status=normal");
    ok(&["ota", "rollback", "-c", c, "--reason", "changed my mind"]);
    check("active=0; slot0.boot_successful=1; slot1.status=unbootable");
    for _ in 0..5 {
        assert_eq!(fw.reboot(), 'A', "the running slot keeps booting");
    }
    assert_eq!(sha256(&s.slot_b), sha256(&img));
}
