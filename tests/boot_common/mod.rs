//! Helpers shared by the tests that run the shipped boot logic in a real bootloader (tests/uboot_qemu.rs,
//! tests/grub_emu.rs): the box's disk layout, the line the boot logic prints, and the check of each boot
//! against what perch's flags predict.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Runs a tool and returns its stdout; panics with its output when it fails.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}: run scripts/setup.sh (qemu-system-arm, u-boot-qemu, grub-emu, fdisk, e2fsprogs)"));
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The box's partitions (512-byte sectors): boot (1), spare (2), rootA (3), rootB (4).
pub const PARTS: [(&str, u64, u64); 4] = [("boot", 2048, 16384), ("spare", 18432, 8192), ("rootA", 26624, 32768), ("rootB", 59392, 32768)];

/// A 64 MiB disk image with the box's GPT.
pub fn gpt_disk(disk: &Path) {
    std::fs::File::create(disk).unwrap().set_len(64 << 20).unwrap();
    let table: String =
        std::iter::once("label: gpt\n".to_string()).chain(PARTS.iter().map(|(n, start, size)| format!("start={start}, size={size}, name={n}\n"))).collect();
    let mut sfdisk =
        Command::new("sfdisk").arg("-q").arg(disk).stdin(std::process::Stdio::piped()).spawn().expect("sfdisk (fdisk package): run scripts/setup.sh");
    std::io::Write::write_all(sfdisk.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    assert!(sfdisk.wait().unwrap().success());
}

/// An ext4 image of `sectors` holding `files`.
pub fn ext4(dir: &Path, name: &str, files: &[(&str, &[u8])], sectors: u64) -> std::path::PathBuf {
    let root = dir.join(format!("{name}-files"));
    std::fs::create_dir_all(&root).unwrap();
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let img = dir.join(format!("{name}.ext4"));
    tool(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-d"]).arg(&root).arg(&img).arg(format!("{}k", sectors / 2)));
    img
}

/// Writes `from` into `to` at sector `seek`.
pub fn put(from: &Path, to: &Path, seek: u64) {
    tool(Command::new("dd").arg(format!("if={}", from.display())).arg(format!("of={}", to.display())).args([
        "bs=512",
        &format!("seek={seek}"),
        "conv=notrunc",
        "status=none",
    ]));
}

/// What one boot did, from its console.
#[derive(Debug)]
pub struct Seen {
    /// The slot the boot logic chose, and the tries it left that slot.
    pub slot: char,
    pub left: u32,
    /// It gave up on a slot that did not load and reset or rebooted (instead of a prompt).
    pub restarted: bool,
    pub console: String,
}

/// Reads `perch: booting slot B (BOOT_ORDER=… A: ok=1 left=0 B: ok=0 left=2)` and the restart line.
pub fn seen(console: String, exited_cleanly: bool, restart_line: &str) -> Seen {
    let line = console
        .lines()
        .find_map(|l| l.find("perch: booting slot ").map(|i| l[i..].to_string()))
        .unwrap_or_else(|| panic!("the boot logic did not run:\n{console}"));
    let slot = line["perch: booting slot ".len()..].chars().next().unwrap();
    let left = line
        .split(&format!("{slot}: ok="))
        .nth(1)
        .and_then(|p| p.split("left=").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let restarted = exited_cleanly && console.contains(&format!("perch: slot {slot} did not boot; {restart_line}"));
    Seen { slot, left, restarted, console }
}

/// The flags perch's backend reads now (`perch ota status`).
pub fn flags(config: &Path) -> perch::ota::BootFlags {
    let st = crate::ota_common::status(config);
    serde_json::from_value(st["flags"].clone()).unwrap_or_else(|e| panic!("{e}: {st}"))
}

/// The boot chose the slot `before` says it will boot, spent a try exactly when that slot is unproven, and
/// restarted when the slot did not load.
pub fn check(before: &perch::ota::BootFlags, b: &Seen) {
    let expect = before.will_boot().expect("perch's flags name a bootable slot");
    assert_eq!(b.slot.to_string(), expect.to_string(), "the bootloader chose another slot than perch's flags say ({before:?}):\n{}", b.console);
    let f = before.get(expect);
    let left = if f.successful { f.tries_left as u32 } else { f.tries_left as u32 - 1 };
    assert_eq!(b.left, left, "tries after the boot ({before:?}):\n{}", b.console);
    assert!(b.restarted, "a slot without a kernel left the bootloader waiting instead of restarting:\n{}", b.console);
}
