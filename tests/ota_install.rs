//! `perch bundle` and `perch ota install` on file slots (file backend): the whole cycle, every refusal,
//! HTTP and stdin sources, key rotation.

mod common;
mod ota_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ota_common::*;

const CHUNK: u32 = 64 << 10;

struct Box_ {
    dir: tempfile::TempDir,
    config: PathBuf,
    slot_a: PathBuf,
    slot_b: PathBuf,
    factory_sha: String,
}

fn file_box(extra: &str) -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let (slot_a, slot_b) = (dir.path().join("slot-a.img"), dir.path().join("slot-b.img"));
    std::fs::write(&slot_a, data(1 << 20, 1)).unwrap();
    let config = config(dir.path(), &format!("backend = \"file\"\nslot_a = \"{}\"\nslot_b = \"{}\"\ntries = 2\n{extra}", slot_a.display(), slot_b.display()));
    let factory_sha = sha256(&slot_a);
    Box_ { dir, config, slot_a, slot_b, factory_sha }
}

fn image(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data(len, seed)).unwrap();
    p
}

fn cfg(b: &Box_) -> &str {
    b.config.to_str().unwrap()
}

/// The new slot is not bootable and the booted slot untouched.
fn assert_nothing_bootable_changed(b: &Box_) {
    let s = status(&b.config);
    assert_eq!(s["flags"]["b"]["bootable"], false, "{s:#}");
    assert_eq!(s["flags"]["primary"], "a", "{s:#}");
    assert_eq!(sha256(&b.slot_a), b.factory_sha, "the booted slot was modified");
}

#[test]
fn install_boot_commit_then_the_next_release_goes_to_the_other_slot() {
    let b = file_box("");
    let img = image(b.dir.path(), "rootfs-2", 3 * (1 << 20) + 123, 2);
    let v2 = bundle(&b.dir.path().join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    let info = ok(&["bundle", "info", v2.to_str().unwrap()]);
    assert!(info.contains("version:    2.0.0") && info.contains("49 chunk(s)") && info.contains("signed by key"), "{info}");
    assert!(ok(&["bundle", "verify", "--keyring", dev_pub(1).to_str().unwrap(), v2.to_str().unwrap()]).contains(": ok"));

    let out = ok(&["ota", "install", "--quiet", "-c", cfg(&b), v2.to_str().unwrap()]);
    assert!(out.contains("installed 2.0.0"), "{out}");
    let s = status(&b.config);
    assert_eq!(s["phase"], "installed");
    assert_eq!(s["flags"]["b"], serde_json::json!({"bootable": true, "tries_left": 2, "successful": false}));
    assert_eq!(s["flags"]["primary"], "b");
    assert_eq!(sha256(&b.slot_b), sha256(&img), "slot B holds exactly the image");
    assert_eq!(sha256(&b.slot_a), b.factory_sha);

    assert!(ok(&["ota", "boot", "-c", cfg(&b)]).contains("booted slot B; update trial"));
    assert_eq!(status(&b.config)["running_version"], "2.0.0");
    // During the trial, slot A is the way back: no install may touch it.
    let e = fails(&["ota", "install", "--quiet", "-c", cfg(&b), v2.to_str().unwrap()]);
    assert!(e.contains("is on trial"), "{e}");
    assert_eq!(sha256(&b.slot_a), b.factory_sha);
    assert_eq!(status(&b.config)["flags"]["a"]["bootable"], true);
    ok(&["ota", "commit", "-c", cfg(&b)]);
    let s = status(&b.config);
    assert_eq!(s["phase"], "committed");
    assert_eq!(s["flags"]["b"]["successful"], true);
    let history: Vec<&str> = s["history"].as_array().unwrap().iter().map(|t| t["to"].as_str().unwrap()).collect();
    assert_eq!(history, ["installing", "installed", "trial", "committed"]);
    // Committed boots stay on B without spending tries.
    for _ in 0..3 {
        assert!(ok(&["ota", "boot", "-c", cfg(&b)]).contains("booted slot B; update committed"));
    }
    // The next release is written to A, the slot that is not running.
    let img3 = image(b.dir.path(), "rootfs-3", 200_000, 3);
    let bundle3 = bundle(&b.dir.path().join("v3.bundle"), "perch-test", "3.0.0", &[("rootfs", &img3)], Some(1), CHUNK);
    ok(&["ota", "install", "--quiet", "-c", cfg(&b), bundle3.to_str().unwrap()]);
    assert_eq!(sha256(&b.slot_a), sha256(&img3));
    assert_eq!(std::fs::metadata(&b.slot_a).unwrap().len(), 200_000, "a file slot is cut to the image's size");
}

#[test]
fn every_refusal_is_explained_and_leaves_the_new_slot_unbootable() {
    let b = file_box("");
    let d = b.dir.path();
    let img = image(d, "rootfs", 1 << 20, 4);
    let good = bundle(&d.join("good.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    let bytes = std::fs::read(&good).unwrap();
    let install = |path: &Path, extra: &[&str]| {
        let mut args = vec!["ota", "install", "--quiet", "-c", cfg(&b)];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        fails(&args)
    };

    let unsigned = bundle(&d.join("unsigned.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], None, CHUNK);
    let e = install(&unsigned, &[]);
    assert!(e.contains("not signed") && e.contains("perch bundle sign"), "{e}");
    assert_nothing_bootable_changed(&b);

    let other_key = bundle(&d.join("k2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(2), CHUNK);
    let e = install(&other_key, &[]);
    assert!(e.contains("unknown key") && e.contains("ota.keyring"), "{e}");
    assert_nothing_bootable_changed(&b);

    // The manifest altered after signing (a chunk hash changed to match a forged payload).
    let mut forged = bytes.clone();
    let at = forged.windows(7).position(|w| w == b"\"2.0.0\"").unwrap();
    forged[at + 1] = b'9';
    std::fs::write(d.join("forged.bundle"), &forged).unwrap();
    let e = install(&d.join("forged.bundle"), &[]);
    assert!(e.contains("bad signature") && e.contains("altered"), "{e}");
    assert_nothing_bootable_changed(&b);

    let e = install(&bundle(&d.join("other.bundle"), "other-device", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK), &[]);
    assert!(e.contains("\"other-device\"") && e.contains("this device is \"perch-test\""), "{e}");
    assert_nothing_bootable_changed(&b);

    let old = bundle(&d.join("old.bundle"), "perch-test", "0.0.9", &[("rootfs", &img)], Some(1), CHUNK);
    let e = install(&old, &[]);
    assert!(e.contains("older than the running 0.1.0") && e.contains("--allow-downgrade"), "{e}");
    assert_nothing_bootable_changed(&b);

    let e = install(&good, &["--slot", "a"]);
    assert!(e.contains("slot A is the booted slot"), "{e}");
    assert_nothing_bootable_changed(&b);

    let e = install(&bundle(&d.join("noroot.bundle"), "perch-test", "2.0.0", &[("kernel", &img)], Some(1), CHUNK), &[]);
    assert!(e.contains("no image \"rootfs\""), "{e}");
    assert_nothing_bootable_changed(&b);

    // Payload errors are found while streaming: the slot was partly written, and stays unbootable.
    let mut corrupt = bytes.clone();
    let n = corrupt.len();
    corrupt[n - 100_000] ^= 0x40;
    std::fs::write(d.join("corrupt.bundle"), &corrupt).unwrap();
    let e = install(&d.join("corrupt.bundle"), &[]);
    assert!(e.contains("does not match the signed manifest") && e.contains("download it again"), "{e}");
    assert_nothing_bootable_changed(&b);
    assert_eq!(phase(&b.config), "failed");

    std::fs::write(d.join("short.bundle"), &bytes[..n - 1000]).unwrap();
    let e = install(&d.join("short.bundle"), &[]);
    assert!(e.contains("truncated") && e.contains("of 1048576 bytes"), "{e}");
    assert_nothing_bootable_changed(&b);

    let mut long = bytes.clone();
    long.extend_from_slice(b"junk");
    std::fs::write(d.join("long.bundle"), &long).unwrap();
    let e = install(&d.join("long.bundle"), &[]);
    assert!(e.contains("data after its last image"), "{e}");
    assert_nothing_bootable_changed(&b);

    let s = status(&b.config);
    assert!(s["history"].as_array().unwrap().iter().any(|t| t["reason"].as_str().unwrap().contains("does not match")), "failures are logged with their reason");

    // After all that, the good bundle installs; and a downgrade goes through when asked for.
    ok(&["ota", "install", "--quiet", "-c", cfg(&b), good.to_str().unwrap()]);
    assert_eq!(sha256(&b.slot_b), sha256(&img));
    ok(&["ota", "install", "--quiet", "--allow-downgrade", "-c", cfg(&b), old.to_str().unwrap()]);
    assert_eq!(status(&b.config)["phase"], "installed");
}

#[test]
fn a_rotated_key_is_trusted_when_the_keyring_holds_it() {
    let b = file_box("");
    let ring = b.dir.path().join("keyring");
    std::fs::create_dir(&ring).unwrap();
    std::fs::copy(dev_pub(1), ring.join("dev-1.pub")).unwrap();
    std::fs::copy(dev_pub(2), ring.join("dev-2.pub")).unwrap();
    let text = std::fs::read_to_string(&b.config).unwrap().replace(dev_pub(1).to_str().unwrap(), ring.to_str().unwrap());
    std::fs::write(&b.config, text).unwrap();
    let img = image(b.dir.path(), "rootfs", 100_000, 5);
    let signed2 = bundle(&b.dir.path().join("k2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(2), CHUNK);
    ok(&["ota", "install", "--quiet", "-c", cfg(&b), signed2.to_str().unwrap()]);
    // Signed by both: each key alone would do.
    ok(&["bundle", "sign", "--key", dev_key(1).to_str().unwrap(), signed2.to_str().unwrap()]);
    let info = ok(&["bundle", "info", signed2.to_str().unwrap()]);
    assert_eq!(info.matches("signed by key").count(), 2, "{info}");
    assert!(ok(&["bundle", "verify", "--keyring", dev_pub(1).to_str().unwrap(), signed2.to_str().unwrap()]).contains(": ok"));
}

#[test]
fn installs_from_http_and_from_stdin() {
    let b = file_box("");
    let d = b.dir.path();
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let img = image(d, "rootfs", 2 << 20, 6);
    bundle(&www.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    let port = common::free_port();
    let server = common::Proc::spawn({
        let mut c = Command::new("python3");
        c.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory", www.to_str().unwrap()]);
        c
    });
    common::wait_port(port, &server);
    let e = fails(&["ota", "install", "--quiet", "-c", cfg(&b), &format!("http://127.0.0.1:{port}/missing.bundle")]);
    assert!(e.contains("cannot download") && e.contains("404"), "{e}");
    ok(&["ota", "install", "--quiet", "-c", cfg(&b), &format!("http://127.0.0.1:{port}/v2.bundle")]);
    assert_eq!(sha256(&b.slot_b), sha256(&img));
    assert_eq!(phase(&b.config), "installed");

    // stdin: `curl … | perch ota install -`.
    let img3 = image(d, "rootfs3", 300_000, 7);
    let b3 = bundle(&d.join("v3.bundle"), "perch-test", "3.0.0", &[("rootfs", &img3)], Some(1), CHUNK);
    let mut child = common::perch()
        .args(["ota", "install", "--quiet", "-c", cfg(&b), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&std::fs::read(&b3).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256(&b.slot_b), sha256(&img3));
}

/// HTTPS from a server whose certificate is signed by a private CA: refused with the built-in roots,
/// installed once `ota.ca_file` names that CA.
#[test]
fn installs_over_https_from_a_server_of_the_configured_ca() {
    let b = file_box("");
    let d = b.dir.path();
    let sh = |args: &str| {
        let out = Command::new("sh").arg("-c").arg(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=perch-test-update-ca");
    sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=updates");
    std::fs::write(d.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext");
    let www = d.join("www");
    std::fs::create_dir(&www).unwrap();
    let img = image(d, "rootfs", 1 << 20, 8);
    bundle(&www.join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    let port = common::free_port();
    const SERVER: &str = "import functools, http.server, ssl, sys\n\
        port, root, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain(cert, key)\n\
        srv = http.server.HTTPServer(('127.0.0.1', port), functools.partial(http.server.SimpleHTTPRequestHandler, directory=root))\n\
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        srv.serve_forever()\n";
    let server = common::Proc::spawn({
        let mut c = Command::new("python3");
        c.arg("-c").arg(SERVER).arg(port.to_string()).arg(&www).arg(d.join("server.pem")).arg(d.join("server.key"));
        c
    });
    common::wait_port(port, &server);
    let url = format!("https://127.0.0.1:{port}/v2.bundle");
    let e = fails(&["ota", "install", "--quiet", "-c", cfg(&b), &url]);
    assert!(e.contains("cannot download") && e.contains("UnknownIssuer"), "{e}");
    assert_nothing_bootable_changed(&b);
    let text = std::fs::read_to_string(&b.config).unwrap() + &format!("ca_file = \"{}\"\n", d.join("ca.pem").display());
    std::fs::write(&b.config, text).unwrap();
    ok(&["ota", "install", "--quiet", "-c", cfg(&b), &url]);
    assert_eq!(sha256(&b.slot_b), sha256(&img));
}

/// A slot that cannot be written (a missing device, a read-only file system): the install fails saying
/// which slot and why, the state records it, nothing becomes bootable.
#[test]
fn an_unwritable_slot_fails_the_install_cleanly() {
    let b = file_box("");
    let text = std::fs::read_to_string(&b.config).unwrap().replace(b.slot_b.to_str().unwrap(), "/proc/perch-no-such-slot");
    std::fs::write(&b.config, text).unwrap();
    let img = image(b.dir.path(), "rootfs", 300_000, 9);
    let v2 = bundle(&b.dir.path().join("v2.bundle"), "perch-test", "2.0.0", &[("rootfs", &img)], Some(1), CHUNK);
    let e = fails(&["ota", "install", "--quiet", "-c", cfg(&b), v2.to_str().unwrap()]);
    assert!(e.contains("cannot open slot /proc/perch-no-such-slot"), "{e}");
    assert_nothing_bootable_changed(&b);
    let s = status(&b.config);
    assert_eq!(s["phase"], "failed");
    assert!(s["reason"].as_str().unwrap().contains("/proc/perch-no-such-slot"), "{s:#}");
}
