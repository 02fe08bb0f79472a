//! SIGKILL during an install, at many points: while the header arrives, all through the payload, and around
//! the final flag and state writes. After each kill the booted slot is untouched and still the one that
//! boots, the state file is readable, a slot marked bootable holds exactly the new image, and a later
//! install succeeds.

mod common;
mod ota_common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use ota_common::*;

#[test]
fn sigkill_at_any_point_of_an_install_never_breaks_the_booted_slot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
    std::fs::write(&slot_a, data(256 << 10, 20)).unwrap();
    let factory = sha256(&slot_a);
    let config = config(d, &format!("backend = \"file\"\nslot_a = \"{}\"\nslot_b = \"{}\"\n", slot_a.display(), slot_b.display()));
    let c = config.to_str().unwrap();
    let img = d.join("rootfs");
    std::fs::write(&img, data(4 << 20, 21)).unwrap();
    let new = sha256(&img);
    let bundle = std::fs::read(bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), 64 << 10)).unwrap();
    let len = bundle.len();

    // Offsets into the bundle: the header, then across the payload. The pipe holds 64 KiB, so perch has
    // read at least `offset - 64 KiB` when it is killed, and may be hashing or writing any chunk.
    let mut kills: Vec<(usize, u64)> = [0, 7, 200, 5_000, 70_000].into_iter().map(|o| (o, 0)).collect();
    kills.extend((1..=12).map(|i| (len * i / 13, 0)));
    // The whole bundle sent, then killed a little later (µs): around fsync, the flag writes, the state writes.
    kills.extend([0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000, 8000, 12_000, 20_000, 40_000, 80_000].into_iter().map(|us| (len, us)));
    let mut seen_bootable = 0;
    for (i, (offset, delay_us)) in kills.iter().enumerate() {
        let (mut child, mut stdin) = install_from_stdin(c);
        let _ = stdin.write_all(&bundle[..*offset]);
        if *offset == len {
            drop(stdin); // end of the bundle: perch goes on to sync, flags and state
        } else {
            std::mem::forget(stdin); // closed when the test ends; perch waits for more bytes meanwhile
        }
        std::thread::sleep(Duration::from_micros(*delay_us));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        assert_eq!(sha256(&slot_a), factory, "kill #{i} at {offset}: the booted slot was written");
        eprintln!("kill #{i} at byte {offset} + {delay_us} µs: {}", phase(&config));
        let s = status(&config); // the state and the flags are readable
        let flags = &s["flags"];
        assert_eq!(flags["a"]["bootable"], true, "kill #{i}: {s:#}");
        assert!(["idle", "installing", "installed", "failed"].contains(&s["phase"].as_str().unwrap()), "kill #{i}: {s:#}");
        if flags["b"]["bootable"] == true {
            seen_bootable += 1;
            assert_eq!(sha256(&slot_b), new, "kill #{i}: slot B is bootable with a partial image");
            assert_eq!(flags["primary"], "b");
        } else {
            assert_eq!(flags["primary"], "a", "kill #{i}: an unbootable slot is primary: {s:#}");
        }
    }
    eprintln!("{} kills, {seen_bootable} after the slot was complete", kills.len());

    // A later install succeeds and boots.
    ok(&["ota", "install", "--quiet", "-c", c, d.join("v2.bundle").to_str().unwrap()]);
    assert_eq!(sha256(&slot_b), new);
    assert!(ok(&["ota", "boot", "-c", c]).contains("booted slot B; update trial"));
    ok(&["ota", "commit", "-c", c]);
    assert_eq!(phase(&config), "committed");
    assert_eq!(sha256(&slot_a), factory);
}

/// `perch ota install` reading the bundle from stdin, with config `c`.
fn install_from_stdin(c: &str) -> (std::process::Child, std::process::ChildStdin) {
    let mut child =
        common::perch().args(["ota", "install", "--quiet", "-c", c, "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// `perch ota install` from stdin into file slots, fed half of the bundle and seen to be installing.
struct HalfInstall {
    config: std::path::PathBuf,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    bundle: Vec<u8>,
}

impl HalfInstall {
    fn start(d: &std::path::Path, seed: u64, image_bytes: usize) -> Self {
        let (slot_a, slot_b) = (d.join("slot-a.img"), d.join("slot-b.img"));
        std::fs::write(&slot_a, data(64 << 10, seed)).unwrap();
        let config = config(d, &format!("backend = \"file\"\nslot_a = \"{}\"\nslot_b = \"{}\"\n", slot_a.display(), slot_b.display()));
        let img = d.join("rootfs");
        std::fs::write(&img, data(image_bytes, seed + 1)).unwrap();
        let bundle = std::fs::read(bundle(&d.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), 64 << 10)).unwrap();
        let (child, mut stdin) = install_from_stdin(config.to_str().unwrap());
        stdin.write_all(&bundle[..bundle.len() / 2]).unwrap();
        // Wait (bounded) until perch has recorded that it is installing.
        let installing = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(25));
            phase(&config) == "installing"
        });
        assert!(installing, "the install never started");
        Self { config, child, stdin, bundle }
    }
}

#[test]
fn a_reboot_after_an_interrupted_install_boots_the_old_slot_and_records_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let half = HalfInstall::start(dir.path(), 30, 2 << 20);
    let (config, mut child) = (half.config, half.child);
    let c = config.to_str().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(ok(&["ota", "boot", "-c", c]).contains("booted slot A; update failed"));
    let s = status(&config);
    assert!(s["reason"].as_str().unwrap().contains("interrupted"), "{s:#}");
    assert_eq!(s["running_version"], perch_version());
}

fn perch_version() -> String {
    ok(&["--version"]).split_whitespace().nth(1).unwrap().to_string()
}

/// App mode restarts the service without a reboot: a start while `perch ota install` still runs must not
/// declare that install interrupted.
#[test]
fn a_start_during_a_running_install_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let half = HalfInstall::start(dir.path(), 50, 1 << 20);
    let (config, child, mut stdin, bundle) = (half.config, half.child, half.stdin, half.bundle);
    let c = config.to_str().unwrap();
    assert!(ok(&["ota", "boot", "-c", c]).contains("booted slot A; update installing"));
    stdin.write_all(&bundle[bundle.len() / 2..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(phase(&config), "installed");
    assert_eq!(sha256(&dir.path().join("slot-b.img")), sha256(&dir.path().join("rootfs")));
}
