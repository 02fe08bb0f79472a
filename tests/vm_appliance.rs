//! The appliance for real: perch's x86 box as a QEMU virtual machine built by `ota/vm/build.sh` (Debian
//! bookworm, UEFI firmware, GRUB with the shipped `ota/boot/grub.cfg`, systemd with the units from
//! `overlay/`, the release binary, an i6300esb hardware watchdog armed by systemd), driven from outside.
//!
//! What each scenario asserts comes from outside perch: the slot GRUB chose and the tries it left, printed
//! by GRUB on the serial console; the slot the kernel booted (`/proc/cmdline`) and the release in it
//! (`/etc/perch-release` of the root file system), read by a test agent over a virtio serial port; the
//! grubenv as GRUB's own tool reads it; and what the box published on the host's MQTT broker. Power cuts
//! kill QEMU (no shutdown: the guest's page cache is lost). A reset (reboot or watchdog) ends QEMU and the
//! test powers the box on again with the same disk and firmware variables.
//!
//! Runs under TCG (software emulation): `/dev/kvm` exists here but a Debian kernel hangs under it. A boot is
//! about 30 s there. Needs root (the image builder keeps file owners), the packages of scripts/setup.sh and
//! `target/release/perch` built from the current sources (scripts/test.sh builds it).

mod common;
mod ota_common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use common::{Proc, free_port, mosquitto};

const CONFIG: &str = "/etc/perch/perch.toml";
const GRUBENV: &str = "/boot/efi/EFI/perch/grubenv";
const COMPATIBLE: &str = "perch-vm-x86";
/// The releases built besides the factory one (name, version, variant of ota/vm/build.sh).
const RELEASES: [(&str, &str, &str); 4] =
    [("v2", "2.0.0", "good"), ("gate-fail", "3.0.0", "gate-fail"), ("crash-loop", "3.1.0", "crash-loop"), ("hang", "3.2.0", "hang")];
/// A boot under TCG, firmware to the agent, is about 30 s; this leaves room for a loaded machine.
const BOOT: Duration = Duration::from_secs(240);

/// One of the VMs that may run at once (`PERCH_VM_LANES`, default 2), each with its share of the host's
/// CPUs. A scenario spends much of its time waiting on the box (its gate window, systemd's restart delays,
/// the watchdog's timeout, a boot's serial console), so scenario 1's 20 reboots run beside the other four
/// (`PERCH_VM_LANES=1` runs them one after another with every CPU in one box).
struct Lane;

static LANES: (std::sync::Mutex<usize>, std::sync::Condvar) = (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl Lane {
    fn lanes() -> usize {
        std::env::var("PERCH_VM_LANES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2)
    }

    /// The vCPUs of each VM: the host's CPUs shared by the lanes, at least one.
    fn cpus() -> usize {
        let host = std::thread::available_parallelism().map_or(1, |n| n.get());
        (host / Self::lanes()).max(1)
    }

    fn take() -> Lane {
        let (lock, freed) = &LANES;
        let mut busy = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= Self::lanes() {
            busy = freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy += 1;
        Lane
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        let (lock, freed) = &LANES;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

struct Image {
    disk: PathBuf,
    dir: PathBuf,
}

impl Image {
    fn bundle(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.bundle"))
    }
}

/// Builds the image and the release bundles once per run of this file.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let root = common::root();
        let release = root.join("target/release/perch");
        let built = std::fs::metadata(&release)
            .and_then(|m| m.modified())
            .unwrap_or_else(|e| panic!("{}: {e}: the VM runs the release binary: cargo build --release (scripts/test.sh does)", release.display()));
        let newest = newest_mtime(&root.join("src"));
        assert!(built >= newest, "target/release/perch is older than src/: cargo build --release (scripts/test.sh does), or the VM would test an old perch");
        let dir = root.join("target/vm");
        let t = Instant::now();
        let mut c = Command::new("bash");
        c.arg(root.join("ota/vm/build.sh")).arg("--out").arg(&dir);
        for (name, version, variant) in RELEASES {
            c.arg("--release").arg(format!("{name}={version}:{variant}"));
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "ota/vm/build.sh: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("vm: image and {} release rootfs built in {:.0} s", RELEASES.len(), t.elapsed().as_secs_f64());
        let t = Instant::now();
        for (name, version, _) in RELEASES {
            let mut b = Command::new(&release);
            b.args(["bundle", "build", "--compatible", COMPATIBLE, "--version", version, "--key"]).arg(ota_common::dev_key(1));
            b.arg("--image").arg(format!("rootfs={}", dir.join(format!("{name}.ext4")).display())).arg("-o").arg(dir.join(format!("{name}.bundle")));
            let out = b.output().unwrap();
            assert!(out.status.success(), "bundle {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        eprintln!("vm: {} bundles signed in {:.0} s", RELEASES.len(), t.elapsed().as_secs_f64());
        Image { disk: dir.join("disk.img"), dir }
    })
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        let t = if m.is_dir() { newest_mtime(&e.path()) } else { m.modified().unwrap() };
        newest = newest.max(t);
    }
    newest
}

/// One boot as GRUB printed it: `perch: booting slot B (BOOT_ORDER=B A A: ok=1 left=0 B: ok=0 left=2)`.
#[derive(Debug, Clone)]
struct GrubBoot {
    slot: char,
    line: String,
}

impl GrubBoot {
    /// The value of `key=` for `slot` in the line (`ok`, `left`).
    fn of(&self, slot: char, key: &str) -> String {
        let part = self.line.split(&format!("{slot}: ")).nth(1).unwrap_or_default();
        part.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap_or_default().trim_end_matches(')').to_string()
    }
}

/// What the booted system says about itself, through the agent.
#[derive(Debug)]
struct Booted {
    slot: String,
    release: String,
}

/// The host side of the box's network: the MQTT broker and an update server (`perch fleet serve` of the
/// bundles) on loopback, and each bundle also offered on a guest address of its own (QEMU's `guestfwd`
/// connects it to `cat` of the file: a plain stream, no HTTP).
struct Host {
    dir: tempfile::TempDir,
    mqtt_port: u16,
    http_port: u16,
    _broker: Proc,
    _server: Proc,
}

impl Host {
    fn new(image: &Image) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mqtt_port = free_port();
        let broker = mosquitto(dir.path(), mqtt_port);
        let http_port = free_port();
        let mut c = common::perch();
        c.args(["fleet", "serve"]).arg(&image.dir).args(["--listen", &format!("127.0.0.1:{http_port}")]);
        let server = Proc::spawn(c);
        common::wait_port(http_port, &server);
        Host { dir, mqtt_port, http_port, _broker: broker, _server: server }
    }

    /// Sends `perch/perch-vm/cmd/<name>` as a fleet operator does, once the box is online, and returns its
    /// answer. Sent up to three times (a command id makes a repeat harmless): a command published while
    /// the box's session was being set up is not delivered.
    fn command(&self, name: &str, cmd: &serde_json::Value) -> serde_json::Value {
        let port = self.mqtt_port.to_string();
        let online =
            Command::new("mosquitto_sub").args(["-h", "127.0.0.1", "-p", &port, "-t", "perch/perch-vm/status", "-W", "180"]).stdout(Stdio::piped()).spawn();
        let mut online = online.unwrap();
        let seen = std::io::BufRead::lines(std::io::BufReader::new(online.stdout.take().unwrap())).map_while(Result::ok).any(|l| l.trim() == "online");
        let _ = online.kill();
        let _ = online.wait();
        assert!(seen, "the box did not come online on the broker within 180 s");
        let topic = format!("perch/perch-vm/cmd/{name}");
        for _ in 0..3 {
            let sub = Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &port, "-t", &format!("{topic}/result"), "-C", "1", "-W", "40"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            let sent = Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", &topic, "-m", &cmd.to_string()]).status().unwrap();
            assert!(sent.success(), "mosquitto_pub {topic}");
            let out = sub.wait_with_output().unwrap();
            if let Ok(v) = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()) {
                return v;
            }
        }
        panic!("no answer to {cmd} in three tries of 40 s")
    }

    /// Watches `topic` (retained message first) for up to `timeout` until a message has `phase`; every
    /// payload seen, in order, as the error.
    fn wait_published(&self, topic: &str, phase: &str, timeout: Duration) -> Result<serde_json::Value, Vec<String>> {
        let mut sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.mqtt_port.to_string(), "-t", topic, "-W", &timeout.as_secs().max(1).to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut seen = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(sub.stdout.take().unwrap())).map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["phase"] == phase
            {
                let _ = sub.kill();
                let _ = sub.wait();
                return Ok(v);
            }
            seen.push(line);
        }
        let _ = sub.wait();
        Err(seen)
    }
}

/// The guest port a bundle is offered on (10.0.2.102:<port>).
fn bundle_port(name: &str) -> u16 {
    1000 + RELEASES.iter().position(|r| r.0 == name).unwrap_or_else(|| panic!("no release {name}")) as u16
}

struct Vm {
    dir: tempfile::TempDir,
    disk: PathBuf,
    vars: PathBuf,
    net: String,
    qemu: Option<Child>,
    agent: Option<UnixStream>,
    pending: Vec<u8>,
    boot_id: String,
    power_ons: usize,
    /// GRUB boots already looked at.
    grub_seen: usize,
}

impl Vm {
    fn new(image: &Image, host: &Host) -> Vm {
        let dir = tempfile::tempdir_in(host.dir.path()).unwrap();
        let disk = dir.path().join("disk.img");
        let t = Instant::now();
        let ok = Command::new("cp").arg("--sparse=always").arg(&image.disk).arg(&disk).status().unwrap().success();
        assert!(ok, "copying the disk image");
        let vars = dir.path().join("vars.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).expect("OVMF (ovmf package): run scripts/setup.sh");
        // `cmd:` starts a new socat for each connection the box opens (a `tcp:` target is one chardev,
        // connected once: a second MQTT connection of the same boot would go nowhere).
        let mut net = format!(
            "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:1883-cmd:socat - TCP:127.0.0.1:{},guestfwd=tcp:10.0.2.101:80-cmd:socat - TCP:127.0.0.1:{}",
            host.mqtt_port, host.http_port
        );
        for (name, _, _) in RELEASES {
            net += &format!(",guestfwd=tcp:10.0.2.102:{}-cmd:cat {}", bundle_port(name), image.bundle(name).display());
        }
        eprintln!("vm: disk copied in {:.1} s", t.elapsed().as_secs_f64());
        Vm { dir, disk, vars, net, qemu: None, agent: None, pending: Vec::new(), boot_id: String::new(), power_ons: 0, grub_seen: 0 }
    }

    fn console(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("console-{n}.log"))
    }

    fn power_on(&mut self) {
        assert!(self.qemu.is_none(), "already on");
        self.power_ons += 1;
        let sock = self.dir.path().join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let mut c = Command::new("qemu-system-x86_64");
        let cpus = Lane::cpus().to_string();
        c.args(["-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", &cpus, "-display", "none", "-no-user-config", "-nodefaults", "-no-reboot"]);
        c.args(["-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"]);
        c.arg("-drive").arg(format!("if=pflash,format=raw,file={}", self.vars.display()));
        c.arg("-drive").arg(format!("file={},format=raw,if=virtio", self.disk.display()));
        c.arg("-serial").arg(format!("file:{}", self.console(self.power_ons).display()));
        c.args(["-device", "i6300esb", "-watchdog-action", "reset"]);
        c.arg("-netdev").arg(&self.net).args(["-device", "virtio-net-pci,netdev=n0"]);
        c.args(["-device", "virtio-serial-pci"]);
        c.arg("-chardev").arg(format!("socket,id=agent,path={},server=on,wait=off", sock.display()));
        c.args(["-device", "virtserialport,chardev=agent,name=perch.agent"]);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child = c.spawn().expect("qemu-system-x86_64 (qemu-system-x86 package): run scripts/setup.sh");
        self.qemu = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "QEMU's agent socket did not appear: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        self.agent = Some(stream);
        self.pending.clear();
    }

    /// Kills QEMU: a power cut (the guest's page cache is gone, nothing is shut down).
    fn power_cut(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            q.kill().unwrap();
            q.wait().unwrap();
        }
        self.agent = None;
    }

    /// The next line from the agent, or None at `deadline`.
    fn line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.check_running();
            let mut buf = [0u8; 8192];
            match self.agent.as_mut().expect("powered on").read(&mut buf) {
                Ok(0) => std::thread::sleep(Duration::from_millis(200)),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                // QEMU went away under the read (a reset): the next turn's check_running powers it on again.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => panic!("agent socket: {e}"),
            }
        }
    }

    /// A board reset (a reboot, the watchdog) ends QEMU (`-no-reboot`); it is powered on again at once
    /// with the same disk and firmware variables. QEMU 7.2's in-place reset of this machine now and then
    /// hung in the firmware under TCG, and a new process is the same reset as far as the box can tell.
    fn check_running(&mut self) {
        if let Some(q) = self.qemu.as_mut()
            && let Some(st) = q.try_wait().unwrap()
        {
            if st.success() {
                self.qemu = None;
                self.power_on();
                return;
            }
            let mut err = String::new();
            q.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("QEMU exited ({st}): {err}\nconsole:\n{}", self.console_tail());
        }
    }

    /// Waits for the agent of a new boot (another boot id than the last one seen).
    fn wait_boot(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(l) = self.line(deadline) {
            if let Some(id) = l.strip_prefix("AGENT-READY ")
                && id != self.boot_id
            {
                self.boot_id = id.to_string();
                return self.boot_id.clone();
            }
        }
        panic!("no new boot within {timeout:?}; console:\n{}", self.console_tail())
    }

    /// Runs a shell command in the box as root; its exit code and output.
    fn sh(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        let stream = self.agent.as_mut().expect("powered on");
        stream.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let deadline = Instant::now() + timeout;
        let mut out = String::new();
        while let Some(l) = self.line(deadline) {
            if let Some(code) = l.strip_prefix("AGENT-DONE ") {
                return (code.trim().parse().unwrap_or(-1), out);
            }
            if let Some(id) = l.strip_prefix("AGENT-READY ") {
                // The same boot: the agent reopened its port and lost the command, so it goes again.
                assert_eq!(id, self.boot_id, "the box rebooted while running {cmd:?}: {out}\nconsole:\n{}", self.console_tail());
                self.agent.as_mut().unwrap().write_all(format!("{cmd}\n").as_bytes()).unwrap();
                out.clear();
                continue;
            }
            out.push_str(&l);
            out.push('\n');
        }
        panic!("{cmd:?} did not finish within {timeout:?}: {out}\nconsole:\n{}", self.console_tail())
    }

    /// Runs a command that must succeed; its output.
    fn ok(&mut self, cmd: &str) -> String {
        let (code, out) = self.sh(cmd, Duration::from_secs(120));
        assert_eq!(code, 0, "{cmd:?} failed in the box: {out}");
        out
    }

    fn booted(&mut self) -> Booted {
        let cmdline = self.ok("cat /proc/cmdline");
        let slot = cmdline.split_whitespace().find_map(|w| w.strip_prefix("perch.slot=")).unwrap_or_else(|| panic!("no perch.slot= in {cmdline}")).to_string();
        let rel = self.ok("cat /etc/perch-release");
        let release = rel.lines().find_map(|l| l.strip_prefix("PERCH_RELEASE=")).unwrap_or_default().to_string();
        Booted { slot, release }
    }

    fn ota(&mut self) -> serde_json::Value {
        let out = self.ok(&format!("perch ota status -c {CONFIG}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Polls `perch ota status` until its phase is `phase`; panics naming what it was.
    fn wait_phase(&mut self, phase: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.ota();
            if st["phase"] == phase {
                return st;
            }
            if Instant::now() >= deadline {
                let journal = self.sh("journalctl -b -u perch -u perch-ota-install -n 60 --no-pager", Duration::from_secs(60)).1;
                panic!("phase is not {phase} after {timeout:?}: {st}\n{journal}");
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// Waits until perch.service is up (READY=1: it has looked at this boot's slot and loaded its detector).
    fn wait_active(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, out) = self.sh("systemctl is-active perch", Duration::from_secs(60));
            if code == 0 {
                return;
            }
            if Instant::now() >= deadline {
                let journal = self.sh("journalctl -b -u perch -n 40 --no-pager", Duration::from_secs(60)).1;
                panic!("perch is not active after {timeout:?} ({}): {journal}", out.trim());
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The journal of perch and its install unit in this boot (for a failure's message).
    fn journal(&mut self) -> String {
        self.sh("journalctl -b --no-pager -u perch -u perch-ota-install -u perch-reboot | grep -v ' frame' | tail -n 60", Duration::from_secs(60)).1
    }

    /// The grubenv as GRUB's tool reads it in the box.
    fn grubenv(&mut self) -> String {
        self.ok(&format!("grub-editenv {GRUBENV} list"))
    }

    /// Every boot GRUB announced since power-on 1, in order.
    fn grub_boots(&self) -> Vec<GrubBoot> {
        let mut boots = Vec::new();
        for n in 1..=self.power_ons {
            let text = String::from_utf8_lossy(&std::fs::read(self.console(n)).unwrap_or_default()).into_owned();
            for l in text.lines() {
                if let Some(i) = l.find("perch: booting slot ") {
                    let line = l[i..].trim_end().to_string();
                    boots.push(GrubBoot { slot: line["perch: booting slot ".len()..].chars().next().unwrap(), line });
                }
            }
        }
        boots
    }

    /// GRUB's boots since the last call.
    fn new_grub_boots(&mut self) -> Vec<GrubBoot> {
        let all = self.grub_boots();
        let new = all[self.grub_seen.min(all.len())..].to_vec();
        self.grub_seen = all.len();
        new
    }

    fn console_tail(&self) -> String {
        let text = String::from_utf8_lossy(&std::fs::read(self.console(self.power_ons)).unwrap_or_default()).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// `systemctl reboot` in the box, then the next boot's agent.
    fn reboot(&mut self) {
        self.request_reboot();
        self.wait_boot(BOOT);
    }

    /// Hands a bundle to the box as an operator would: into `/var/lib/perch/ota/incoming` (written beside,
    /// then renamed), where perch-ota-install.path starts the hardened install unit.
    fn drop_bundle(&mut self, name: &str) {
        let inc = "/var/lib/perch/ota/incoming";
        let cmd = format!(
            "cat </dev/tcp/10.0.2.102/{} >{inc}/update.bundle.part && chown perch:perch {inc}/update.bundle.part && mv {inc}/update.bundle.part {inc}/update.bundle",
            bundle_port(name)
        );
        let (code, out) = self.sh(&format!("bash -c '{cmd}'"), Duration::from_secs(300));
        assert_eq!(code, 0, "fetching bundle {name} into the box: {out}");
    }

    /// Drops a bundle in and waits until perch-ota-install.service has written it.
    fn install(&mut self, name: &str) -> serde_json::Value {
        let t = Instant::now();
        self.drop_bundle(name);
        let st = self.wait_phase("installed", Duration::from_secs(600));
        eprintln!("vm: {name} installed in {:.0} s", t.elapsed().as_secs_f64());
        st
    }

    /// Waits until no install runs or waits to run (the install unit idle, nothing in incoming); the state.
    fn wait_install_idle(&mut self) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        // A oneshot service is `activating` while it runs.
        let idle = "[ \"$(systemctl is-active perch-ota-install)\" != activating ] && [ ! -e /var/lib/perch/ota/incoming/update.bundle ]";
        while self.sh(idle, Duration::from_secs(60)).0 != 0 {
            assert!(Instant::now() < deadline, "the install unit did not settle");
            std::thread::sleep(Duration::from_secs(2));
        }
        self.ota()
    }

    /// Asks for a reboot without waiting for the next boot.
    fn request_reboot(&mut self) {
        self.agent.as_mut().expect("powered on").write_all(b"systemctl reboot\n").unwrap();
    }

    /// Follows boots (with or without an agent: a wedged boot has none) until GRUB boots `slot` and its
    /// agent is up; every GRUB boot since the last look.
    fn until_slot(&mut self, slot: char, timeout: Duration) -> Vec<GrubBoot> {
        let deadline = Instant::now() + timeout;
        let mut boots = self.new_grub_boots();
        while boots.last().map(|b| b.slot) != Some(slot) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "GRUB did not boot slot {slot} within {timeout:?}: {boots:?}\n{}", self.console_tail());
            self.wait_boot(left);
            boots.extend(self.new_grub_boots());
        }
        boots
    }

    /// The console of every power-on, split at GRUB's announcements: the text of each boot.
    fn boot_texts(&self) -> Vec<String> {
        let mut all = String::new();
        for n in 1..=self.power_ons {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(self.console(n)).unwrap_or_default()));
        }
        all.split("perch: booting slot ").skip(1).map(str::to_string).collect()
    }

    /// Waits for the first boot after power-on and checks GRUB booted slot A with the factory release.
    fn first_boot(&mut self) {
        self.power_on();
        self.wait_boot(BOOT);
        let b = self.booted();
        assert_eq!((b.slot.as_str(), b.release.as_str()), ("A", "1.0.0"), "{b:?}");
        let boots = self.new_grub_boots();
        assert_eq!(boots.len(), 1, "{boots:?}");
        assert_eq!(boots[0].slot, 'A');
    }
}

impl Drop for Vm {
    /// Powers off and keeps the consoles in target/vm/logs/<test>/ (the test's temporary files go).
    fn drop(&mut self) {
        self.power_cut();
        let name = std::thread::current().name().unwrap_or("vm").replace("::", "-");
        let logs = common::root().join("target/vm/logs").join(name);
        let _ = std::fs::remove_dir_all(&logs);
        let _ = std::fs::create_dir_all(&logs);
        for n in 1..=self.power_ons {
            let _ = std::fs::copy(self.console(n), logs.join(format!("console-{n}.log")));
        }
    }
}

/// Scenario 1: a good release sent as a fleet `cmd/ota` (the hardened service downloads and checks it,
/// the install unit writes slot B, perch-reboot.path reboots) boots on trial, passes the gate, is
/// committed, and 20 more reboots stay on it.
#[test]
fn a_good_release_is_committed_and_stays_through_twenty_reboots() {
    let _lane = Lane::take();
    let image = image();
    let host = Host::new(image);
    let mut vm = Vm::new(image, &host);
    let t = Instant::now();
    vm.first_boot();
    eprintln!("vm: first boot in {:.0} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let sha = String::from_utf8(Command::new("sha256sum").arg(image.bundle("v2")).output().unwrap().stdout).unwrap();
    let install = serde_json::json!({"op":"install","id":"vm-1","url":"http://10.0.2.101/v2.bundle","bundle_sha256":&sha[..64],"version":"2.0.0"});
    let reply = host.command("ota", &install);
    assert_eq!((reply["ok"].as_bool(), reply["started"].as_bool()), (Some(true), Some(true)), "{reply}");
    let published = host.wait_published("perch/perch-vm/ota/state", "installed", Duration::from_secs(600));
    let st = match published {
        Ok(st) if st["last_error"].is_null() => st,
        other => panic!("the box did not publish installed without an error: {other:?}\n{}", vm.journal()),
    };
    assert_eq!(st["bundle_sha256"].as_str(), Some(&sha[..64]), "{st}");
    eprintln!("vm: v2 downloaded by perch, written by perch-ota-install.service in {:.0} s", t.elapsed().as_secs_f64());

    // The service asks for the reboot itself (perch-reboot.path).
    let t = Instant::now();
    vm.wait_boot(BOOT);
    let b = vm.booted();
    assert_eq!((b.slot.as_str(), b.release.as_str()), ("B", "2.0.0"), "{b:?}");
    let boots = vm.new_grub_boots();
    assert_eq!(boots.len(), 1, "{boots:?}");
    assert_eq!((boots[0].slot, boots[0].of('B', "ok"), boots[0].of('B', "left")), ('B', "0".into(), "2".into()), "{}", boots[0].line);
    assert!(vm.grubenv().contains("BOOT_B_LEFT=2"), "GRUB did not spend the trial's try");
    let st = vm.wait_phase("committed", Duration::from_secs(300));
    eprintln!("vm: trial boot and commit in {:.0} s", t.elapsed().as_secs_f64());
    assert_eq!(st["running_version"], "2.0.0", "{st}");
    assert!(vm.grubenv().contains("PERCH_B_OK=1"));
    host.wait_published("perch/perch-vm/ota/state", "committed", Duration::from_secs(60))
        .unwrap_or_else(|seen| panic!("the box did not publish committed: {seen:?}"));

    let t = Instant::now();
    for i in 0..20 {
        vm.reboot();
        let b = vm.booted();
        assert_eq!((b.slot.as_str(), b.release.as_str()), ("B", "2.0.0"), "reboot {i}: {b:?}");
        let boots = vm.new_grub_boots();
        assert_eq!(boots.len(), 1, "reboot {i}: {boots:?}");
        assert_eq!((boots[0].slot, boots[0].of('B', "ok")), ('B', "1".into()), "reboot {i}: {}", boots[0].line);
        // perch has looked at this boot: still committed, nothing rolled back.
        vm.wait_active(Duration::from_secs(120));
        let st = vm.ota();
        assert_eq!((st["phase"].as_str(), st["booted"].as_str()), (Some("committed"), Some("b")), "reboot {i}: {st}");
    }
    eprintln!("vm: 20 reboots on B in {:.0} s", t.elapsed().as_secs_f64());
}

fn slots(boots: &[GrubBoot]) -> String {
    boots.iter().map(|b| b.slot).collect()
}

/// Why perch says the release ended where it is (`reason` of its OTA state).
fn reason(st: &serde_json::Value) -> String {
    st["reason"].as_str().unwrap_or_else(|| panic!("no reason in {st}")).to_string()
}

/// After a fallback, slot A runs the factory release, perch there says `rolled_back` for `why`, and the
/// box published that on the broker.
fn assert_rolled_back(vm: &mut Vm, host: &Host, why: &str) {
    let b = vm.booted();
    assert_eq!((b.slot.as_str(), b.release.as_str()), ("A", "1.0.0"), "{b:?}");
    vm.wait_active(Duration::from_secs(180));
    let st = vm.wait_phase("rolled_back", Duration::from_secs(60));
    let reason = reason(&st);
    assert!(reason.contains(why), "rolled back for {reason:?}, expected {why:?}: {st}");
    let env = vm.grubenv();
    assert!(env.contains("PERCH_A_OK=1") && env.contains("PERCH_B_OK=0"), "{env}");
    let published = host
        .wait_published("perch/perch-vm/ota/state", "rolled_back", Duration::from_secs(60))
        .unwrap_or_else(|seen| panic!("the box did not publish rolled_back: {seen:?}"));
    assert!(published["reason"].as_str().is_some_and(|r| r.contains(why)), "{published}");
    eprintln!("vm: rolled back: {reason}");
}

/// A box on the factory release installs `release` and reboots into it: the host, the box, every GRUB boot
/// until slot A runs again, and how long that took from the reboot.
fn fall_back_from(release: &str, timeout: Duration) -> (Host, Vm, Vec<GrubBoot>, Duration) {
    let host = Host::new(image());
    let mut vm = Vm::new(image(), &host);
    vm.first_boot();
    vm.install(release);
    let t = Instant::now();
    vm.request_reboot();
    let boots = vm.until_slot('A', timeout);
    (host, vm, boots, t.elapsed())
}

/// Scenario 2: a release that boots but fails its health gate (its golden frame expects a giraffe) is
/// rolled back by perch itself, which reboots into A well within the gate's timeout.
#[test]
fn a_release_that_fails_its_health_gate_is_rolled_back_by_perch() {
    let _lane = Lane::take();
    let (host, mut vm, boots, took) = fall_back_from("gate-fail", Duration::from_secs(600));
    assert_eq!(slots(&boots), "BA", "{boots:?}");
    assert_eq!((boots[0].of('B', "ok"), boots[0].of('B', "left")), ("0".into(), "2".into()), "{}", boots[0].line);
    assert!(took < Duration::from_secs(240), "back on A after {took:?}: not within the gate's 240 s");
    eprintln!("vm: gate failure to slot A in {:.0} s", took.as_secs_f64());
    assert_rolled_back(&mut vm, &host, "giraffe");
}

/// Scenario 3: a release whose service cannot start (invalid config: perch exits at every start) reboots
/// through systemd's start limit until its tries run out; GRUB then boots A, where perch says why.
#[test]
fn a_release_that_crash_loops_runs_out_of_tries_and_grub_falls_back() {
    let _lane = Lane::take();
    let (host, mut vm, boots, took) = fall_back_from("crash-loop", Duration::from_secs(1200));
    assert_eq!(slots(&boots), "BBBA", "{boots:?}");
    let left: Vec<String> = boots[..3].iter().map(|b| b.of('B', "left")).collect();
    assert_eq!(left, ["2", "1", "0"], "{boots:?}");
    eprintln!("vm: crash loop to slot A in {:.0} s", took.as_secs_f64());
    assert_rolled_back(&mut vm, &host, "tries");
}

/// Scenario 3, wedged: a release that starves every CPU at top real-time priority (PID 1 cannot ping the
/// watchdog) is reset by the i6300esb watchdog, with no reboot of its own, until its tries run out.
#[test]
fn a_release_that_wedges_the_box_is_reset_by_the_watchdog_until_grub_falls_back() {
    let _lane = Lane::take();
    let (host, mut vm, boots, took) = fall_back_from("hang", Duration::from_secs(1200));
    assert_eq!(slots(&boots), "BBBA", "{boots:?}");
    let texts = vm.boot_texts();
    let n = texts.len();
    // The boot before the B boots rebooted cleanly (the kernel says so); each B boot was wedged and ended
    // without the kernel restarting it: the watchdog reset the board.
    assert!(texts[n - 5].contains("reboot: Restarting system"), "the install boot did not reboot cleanly");
    for (i, text) in texts[n - 4..n - 1].iter().enumerate() {
        assert!(text.contains("Using hardware watchdog") || text.contains("i6300ESB"), "B boot {i}: no watchdog:\n{text}");
        assert!(!text.contains("reboot: Restarting system"), "B boot {i} rebooted by itself instead of hanging:\n{text}");
    }
    eprintln!("vm: wedged release to slot A in {:.0} s", took.as_secs_f64());
    assert_rolled_back(&mut vm, &host, "tries");
}

/// Scenario 4: power cuts while the slot is written, right after its flags are written, during the trial
/// and right at the commit. Every boot runs a whole slot that matches its release, a slot is only ever
/// committed by a gate that passed, and the interrupted install goes in again.
#[test]
fn power_cuts_never_boot_an_unverified_slot_and_an_interrupted_install_goes_again() {
    let _lane = Lane::take();
    let image = image();
    let host = Host::new(image);
    let mut vm = Vm::new(image, &host);
    vm.first_boot();

    // 1. While the slot is written (the write takes about 20 s here).
    vm.drop_bundle("v2");
    let deadline = Instant::now() + Duration::from_secs(120);
    while vm.ota()["phase"] != "installing" {
        assert!(Instant::now() < deadline, "the install did not start");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(5));
    vm.power_cut();
    vm.power_on();
    vm.wait_boot(BOOT);
    let boots = vm.new_grub_boots();
    assert_eq!(slots(&boots), "A", "a half-written slot B must not boot: {boots:?}");
    let b = vm.booted();
    assert_eq!((b.slot.as_str(), b.release.as_str()), ("A", "1.0.0"));
    vm.wait_active(Duration::from_secs(180));
    // The renamed bundle may have survived the cut (its contents only partly): then the path unit installs
    // it again at boot and refuses it as truncated. Once that settles, the same bundle must go in.
    let st = vm.wait_install_idle();
    eprintln!("vm: after a cut mid-write: {} ({})", st["phase"], st["reason"]);
    assert_ne!(st["phase"], "committed");
    assert!(!vm.grubenv().contains("PERCH_B_OK=1"));
    if st["phase"] != "installed" {
        vm.install("v2");
    }

    // 2. Right after the flags are written: the next boot is B on trial (the write was durable).
    vm.power_cut();
    vm.power_on();
    vm.wait_boot(BOOT);
    let boots = vm.new_grub_boots();
    assert_eq!(slots(&boots), "B", "the flags perch wrote before the cut were lost: {boots:?}");
    assert_eq!(boots[0].of('B', "ok"), "0");
    let b = vm.booted();
    assert_eq!((b.slot.as_str(), b.release.as_str()), ("B", "2.0.0"));

    // 3. During the trial (before the gate's window is over).
    vm.wait_phase("trial", Duration::from_secs(180));
    vm.power_cut();
    vm.power_on();
    vm.wait_boot(BOOT);
    let boots = vm.new_grub_boots();
    assert_eq!((slots(&boots).as_str(), boots[0].of('B', "ok").as_str(), boots[0].of('B', "left").as_str()), ("B", "0", "1"), "{boots:?}");

    // 4. Right at the commit.
    vm.wait_phase("committed", Duration::from_secs(300));
    vm.power_cut();
    vm.power_on();
    vm.wait_boot(BOOT);
    let boots = vm.new_grub_boots();
    assert_eq!(slots(&boots), "B", "{boots:?}");
    let b = vm.booted();
    assert_eq!((b.slot.as_str(), b.release.as_str()), ("B", "2.0.0"));
    vm.wait_active(Duration::from_secs(180));
    let st = vm.ota();
    // GRUB trusted B only if perch had committed it, and perch's record agrees with GRUB's block.
    let ok = boots[0].of('B', "ok");
    if ok == "1" {
        assert_eq!(st["phase"], "committed", "GRUB treats B as proven but perch never committed it: {st}");
    } else {
        assert_eq!(st["phase"], "trial", "{st}");
        vm.wait_phase("committed", Duration::from_secs(300));
    }
    assert!(vm.grubenv().contains("PERCH_B_OK=1"));
    eprintln!("vm: power cuts: B committed, GRUB saw ok={ok} after the cut at the commit");
}
