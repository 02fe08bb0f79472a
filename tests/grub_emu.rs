//! The shipped GRUB boot logic (`ota/boot/grub.cfg`) run by real GRUB: Debian's `grub-emu` (GRUB 2.06 in
//! user space) on a disk image laid out like a box (GPT: boot, spare, rootA, rootB; an ext4 boot partition
//! holding `grub/grub.cfg` and `grub/grubenv`). perch's `grub` backend writes the environment block with
//! `grub-editenv`; the test copies it onto the boot partition before each power-on and back after it, as
//! the box's mounted /boot would. GRUB's own `save_env` writes the spent try into the image, so here tries
//! really run out across boots. Each boot's choice and the tries left (from the console) are compared with
//! what perch's flags predict, through a fresh box, an install, a trial, a commit and a trial whose tries
//! run out. grub-emu has no Linux loader, so every boot also proves that a slot whose kernel does not load
//! reboots instead of stopping at a prompt.

mod boot_common;
mod common;
mod ota_common;

use std::path::PathBuf;
use std::process::Command;

use boot_common::{PARTS, Seen, check, flags, gpt_disk, put, seen, tool};
use ota_common::*;

struct Board {
    dir: tempfile::TempDir,
    disk: PathBuf,
    boot_fs: PathBuf,
    grubenv: PathBuf,
    config: PathBuf,
    cmdline: PathBuf,
}

fn board() -> Board {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let files = d.join("bootfs/grub");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::copy(common::root().join("ota/boot/grub.cfg"), files.join("grub.cfg")).unwrap();
    let boot_fs = d.join("boot.ext4");
    tool(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(d.join("bootfs")).arg(&boot_fs).arg(format!("{}k", PARTS[0].2 / 2)));
    let disk = d.join("disk.img");
    gpt_disk(&disk);
    // The factory block: what perch's grub backend reads on a new box (slot A, proven).
    let grubenv = d.join("grubenv");
    tool(Command::new("grub-editenv").arg(&grubenv).arg("create"));
    tool(Command::new("grub-editenv").arg(&grubenv).args(["set", "BOOT_ORDER=A", "BOOT_A_LEFT=0", "PERCH_A_OK=1", "BOOT_B_LEFT=0", "PERCH_B_OK=0"]));
    // grub-emu's own prefix: GRUB then takes the box's config from its boot partition.
    std::fs::create_dir_all(d.join("emu")).unwrap();
    std::fs::write(d.join("emu/grub.cfg"), "set root=(hd0,gpt1)\nset prefix=(hd0,gpt1)/grub\nconfigfile (hd0,gpt1)/grub/grub.cfg\n").unwrap();
    std::fs::write(d.join("device.map"), format!("(hd0) {}\n", disk.display())).unwrap();
    let cmdline = d.join("cmdline");
    std::fs::write(&cmdline, "perch.slot=A\n").unwrap();
    let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
    std::fs::write(&slot_a, data(256 << 10, 60)).unwrap();
    std::fs::write(&slot_b, b"").unwrap();
    let config = config(
        &d,
        &format!(
            "backend = \"grub\"\ngrubenv = \"{}\"\nslot_a = \"{}\"\nslot_b = \"{}\"\ntries = 3\ncmdline = \"{}\"\n",
            grubenv.display(),
            slot_a.display(),
            slot_b.display(),
            cmdline.display()
        ),
    );
    Board { dir, disk, boot_fs, grubenv, config, cmdline }
}

impl Board {
    fn c(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Puts the boot file system (with perch's grubenv) on the disk, runs GRUB until it reboots, and takes
    /// the grubenv back (with the try GRUB spent).
    fn power_on(&self) -> Seen {
        let fs = self.boot_fs.display().to_string();
        let env = self.grubenv.display().to_string();
        tool(Command::new("debugfs").args(["-w", "-R", "rm /grub/grubenv", &fs]));
        tool(Command::new("debugfs").args(["-w", "-R", &format!("write {env} /grub/grubenv"), &fs]));
        put(&self.boot_fs, &self.disk, PARTS[0].1);
        let d = self.dir.path();
        let out = Command::new("timeout")
            .args(["60", "grub-emu", "-m"])
            .arg(d.join("device.map"))
            .args(["-r", "host", "-d"])
            .arg(d.join("emu"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("grub-emu: run scripts/setup.sh");
        // Back: the boot partition as GRUB left it, and its grubenv for perch.
        tool(Command::new("dd").arg(format!("if={}", self.disk.display())).arg(format!("of={fs}")).args([
            "bs=512",
            &format!("skip={}", PARTS[0].1),
            &format!("count={}", PARTS[0].2),
            "status=none",
        ]));
        std::fs::remove_file(&self.grubenv).unwrap();
        tool(Command::new("debugfs").args(["-R", &format!("dump /grub/grubenv {env}"), &fs]));
        seen(String::from_utf8_lossy(&out.stdout).replace('\r', "\n"), out.status.success(), "rebooting")
    }

    /// Boots, checks GRUB against perch's own prediction, and runs `perch ota boot` on the slot it chose.
    fn boot_as_predicted(&self) -> Seen {
        let before = flags(&self.config);
        let b = self.power_on();
        check(&before, &b);
        let saved = tool(Command::new("grub-editenv").arg(&self.grubenv).arg("list"));
        assert!(saved.contains(&format!("BOOT_{}_LEFT={}", b.slot, b.left)), "GRUB did not save the spent try:\n{saved}");
        std::fs::write(&self.cmdline, format!("console=ttyS0 perch.slot={} ro\n", b.slot)).unwrap();
        ok(&["ota", "boot", "-c", self.c()]);
        b
    }
}

#[test]
fn the_shipped_grub_cfg_picks_slots_and_spends_tries_as_perch_expects() {
    let b = board();
    let d = b.dir.path();
    assert_eq!(b.boot_as_predicted().slot, 'A');
    assert_eq!(phase(&b.config), "idle");

    // Install 2.0.0 into B: three tries, the first spent by GRUB itself; perch sees the trial.
    let img = d.join("rootfs-2");
    std::fs::write(&img, data(300 << 10, 61)).unwrap();
    let v2 = bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), 64 << 10);
    ok(&["ota", "install", "--quiet", "-c", b.c(), v2.to_str().unwrap()]);
    let boot = b.boot_as_predicted();
    assert_eq!((boot.slot, boot.left), ('B', 2));
    assert_eq!(phase(&b.config), "trial");
    ok(&["ota", "commit", "-c", b.c()]);
    for _ in 0..2 {
        assert_eq!(b.boot_as_predicted().slot, 'B');
        assert_eq!(phase(&b.config), "committed");
    }

    // 3.0.0 into A never passes its gate: GRUB spends 3, 2, 1 → 0 across boots, then falls back to B.
    let v3 = bundle(&d.join("v3.bundle"), "perch-test", "3.0.0", &[("rootfs", &img)], Some(1), 64 << 10);
    ok(&["ota", "install", "--quiet", "-c", b.c(), v3.to_str().unwrap()]);
    for left in [2, 1, 0] {
        let boot = b.boot_as_predicted();
        assert_eq!((boot.slot, boot.left), ('A', left));
        assert_eq!(phase(&b.config), "trial");
    }
    assert_eq!(b.boot_as_predicted().slot, 'B', "tries used up: GRUB falls back");
    let st = status(&b.config);
    assert_eq!((st["phase"].as_str(), st["version"].as_str()), (Some("rolled_back"), Some("3.0.0")), "{st:#}");
    assert!(st["reason"].as_str().unwrap().contains("used up its boot tries"), "{st:#}");
}
