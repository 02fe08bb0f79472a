//! The shipped U-Boot boot script (`yocto/…/perch-ab-layout/files/boot.cmd`, compiled with `mkimage`) run by
//! real U-Boot: Debian's `u-boot-qemu` build for `qemu-system-aarch64 -M virt`, reading an environment that
//! perch's `uboot` backend wrote with `fw_setenv`, from a virtio disk laid out like a box (GPT: boot, spare,
//! rootA, rootB). The script's choice and the tries it spends are read from the serial console and compared
//! with what perch's flags say the bootloader must do, through a fresh install, a trial, a commit, and a trial
//! whose tries run out. The slots hold no kernel, so every boot also proves that a slot that does not load
//! resets the board instead of leaving it at a prompt.
//!
//! Debian's qemu_arm64 U-Boot keeps its environment in the second pflash bank (offset 0, 256 KiB, one copy),
//! not in the redundant eMMC layout of the shipped `fw_env.config`; the libubootenv config here describes
//! that bank. Under QEMU 7.2 that U-Boot cannot write its flash ("Flash buffer write timeout": it erases
//! the sectors, then fails), so the script's `saveenv` fails; the test restores the flash as it was and
//! writes back the one variable the script changed — the tries it spent, as U-Boot printed it — with
//! `fw_setenv`, as a working flash would have kept it.

mod boot_common;
mod common;
mod ota_common;

use std::path::PathBuf;
use std::process::Command;

use boot_common::{PARTS, Seen, check, ext4, flags, gpt_disk, put, seen, tool};
use ota_common::*;

const ENV_SIZE: &str = "0x40000";
const UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";

struct Board {
    dir: tempfile::TempDir,
    flash: PathBuf,
    disk: PathBuf,
    fw_env: PathBuf,
    config: PathBuf,
    cmdline: PathBuf,
}

fn board() -> Board {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let script = d.join("boot.scr");
    tool(
        Command::new("mkimage")
            .args(["-A", "arm64", "-T", "script", "-C", "none", "-d"])
            .arg(common::root().join("yocto/meta-perch/recipes-bsp/perch-ab-layout/files/boot.cmd"))
            .arg(&script),
    );
    let disk = d.join("disk.img");
    gpt_disk(&disk);
    let script_bytes = std::fs::read(&script).unwrap();
    let images = [
        ext4(&d, "boot", &[("boot.scr", &script_bytes)], PARTS[0].2),
        ext4(&d, "rootA", &[("etc/slot", b"A")], PARTS[2].2),
        ext4(&d, "rootB", &[("etc/slot", b"B")], PARTS[3].2),
    ];
    for (img, start) in images.iter().zip([PARTS[0].1, PARTS[2].1, PARTS[3].1]) {
        put(img, &disk, start);
    }
    // The factory environment: the board's boot command (find boot.scr on the virtio disk and run it)
    // and the A/B variables a new box ships with (perch-env.txt).
    let shipped = std::fs::read_to_string(common::root().join("yocto/meta-perch/recipes-bsp/perch-ab-layout/files/perch-env.txt")).unwrap();
    let env_txt = d.join("env.txt");
    std::fs::write(
        &env_txt,
        format!(
            "bootcmd=virtio scan; setenv devtype virtio; setenv devnum 0; load virtio 0:1 ${{scriptaddr}} /boot.scr && source ${{scriptaddr}}\n\
             scriptaddr=0x40200000\nkernel_addr_r=0x40400000\nfdt_addr_r=0x40000000\nfdtfile=qemu.dtb\nbootdelay=0\n{shipped}"
        ),
    )
    .unwrap();
    let flash = d.join("flash1.img");
    tool(Command::new("mkenvimage").args(["-s", ENV_SIZE, "-o"]).arg(&flash).arg(&env_txt));
    std::fs::OpenOptions::new().write(true).open(&flash).unwrap().set_len(64 << 20).unwrap();
    let fw_env = d.join("fw_env.config");
    std::fs::write(&fw_env, format!("{} 0x0 {ENV_SIZE} 0x20000\n", flash.display())).unwrap();
    let cmdline = d.join("cmdline");
    let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
    std::fs::write(&slot_a, data(256 << 10, 50)).unwrap();
    std::fs::write(&slot_b, b"").unwrap();
    let config = config(
        &d,
        &format!(
            "backend = \"uboot\"\nfw_env_config = \"{}\"\nslot_a = \"{}\"\nslot_b = \"{}\"\ntries = 2\ncmdline = \"{}\"\n",
            fw_env.display(),
            slot_a.display(),
            slot_b.display(),
            cmdline.display()
        ),
    );
    Board { dir, flash, disk, fw_env, config, cmdline }
}

impl Board {
    fn c(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Powers the board on; it runs until the script resets it (`-no-reboot`: QEMU then exits).
    fn power_on(&self) -> Seen {
        // The failed `saveenv` erases the flash before its write fails: put back what was there, so the
        // environment is what a working flash would hold before `keep_spent_try`.
        let before = std::fs::read(&self.flash).unwrap();
        let out = Command::new("timeout")
            .args([
                "120",
                "qemu-system-aarch64",
                "-M",
                "virt",
                "-cpu",
                "cortex-a57",
                "-m",
                "256",
                "-nographic",
                "-monitor",
                "none",
                "-net",
                "none",
                "-no-reboot",
            ])
            .args(["-bios", UBOOT])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,index=1,file={}", self.flash.display()))
            .arg("-drive")
            .arg(format!("if=none,format=raw,id=d0,file={}", self.disk.display()))
            .args(["-device", "virtio-blk-device,drive=d0"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("qemu-system-aarch64 (qemu-system-arm package): run scripts/setup.sh");
        std::fs::write(&self.flash, before).unwrap();
        seen(String::from_utf8_lossy(&out.stdout).replace('\r', ""), out.status.success(), "resetting")
    }

    /// What a working flash would have kept of the script's `saveenv`: the tries it spent.
    fn keep_spent_try(&self, boot: &Seen) {
        tool(Command::new("fw_setenv").arg("-c").arg(&self.fw_env).arg(format!("BOOT_{}_LEFT", boot.slot)).arg(boot.left.to_string()));
        std::fs::write(&self.cmdline, format!("console=ttyAMA0 perch.slot={} rootwait\n", boot.slot)).unwrap();
    }

    /// Boots, checks the script against perch's own prediction, keeps the spent try, runs `perch ota boot`.
    fn boot_as_predicted(&self) -> Seen {
        let before = flags(&self.config);
        let b = self.power_on();
        check(&before, &b);
        self.keep_spent_try(&b);
        ok(&["ota", "boot", "-c", self.c()]);
        b
    }
}

#[test]
fn the_shipped_boot_script_picks_slots_and_spends_tries_as_perch_expects() {
    let b = board();
    let d = b.dir.path();
    // A new box: the factory slot A, no install.
    std::fs::write(&b.cmdline, "perch.slot=A\n").unwrap();
    assert_eq!(b.boot_as_predicted().slot, 'A');
    assert_eq!(phase(&b.config), "idle");

    // Fresh install of 2.0.0 into B: U-Boot tries B once (2 tries → 1 left); perch sees the trial.
    let img = d.join("rootfs-2");
    std::fs::write(&img, data(300 << 10, 51)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), 64 << 10);
    ok(&["ota", "install", "--quiet", "-c", b.c(), v2.to_str().unwrap()]);
    let boot = b.boot_as_predicted();
    assert_eq!((boot.slot, boot.left), ('B', 1));
    assert_eq!(phase(&b.config), "trial");

    // Commit: B boots without spending tries, boot after boot.
    ok(&["ota", "commit", "-c", b.c()]);
    for _ in 0..2 {
        let boot = b.boot_as_predicted();
        assert_eq!((boot.slot, boot.left), ('B', 1));
        assert_eq!(phase(&b.config), "committed");
    }

    // 3.0.0 into A never passes its gate: two tries, then U-Boot falls back to B and perch records it.
    let v3 = bundle(&d.join("v3.bundle"), "perch-test", "3.0.0", &[("rootfs", &img)], Some(1), 64 << 10);
    ok(&["ota", "install", "--quiet", "-c", b.c(), v3.to_str().unwrap()]);
    for left in [1, 0] {
        let boot = b.boot_as_predicted();
        assert_eq!((boot.slot, boot.left), ('A', left));
        assert_eq!(phase(&b.config), "trial");
    }
    let boot = b.boot_as_predicted();
    assert_eq!(boot.slot, 'B', "tries used up: the script falls back");
    let st = status(&b.config);
    assert_eq!((st["phase"].as_str(), st["version"].as_str()), (Some("rolled_back"), Some("3.0.0")), "{st:#}");
    assert!(st["reason"].as_str().unwrap().contains("used up its boot tries"), "{st:#}");
}
