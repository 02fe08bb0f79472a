//! Packaging and deployment: the systemd units in `overlay/` (hardening score, syntax, privilege split),
//! sysusers/tmpfiles, and the Yocto layer in `yocto/meta-perch` (oelint-adv, crates in step with
//! Cargo.lock, the factory U-Boot environment perch's uboot backend reads). Real tools: systemd-analyze,
//! systemd-sysusers, mkenvimage, fw_printenv, oelint-adv (installed by scripts/setup.sh).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use perch::ota::boot::env_vars;
use perch::ota::{BootFlags, Slot};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `systemd-analyze security` exposure every shipped unit must stay at or below.
const MAX_EXPOSURE: f64 = 3.0;

fn root() -> &'static Path {
    Path::new(ROOT)
}

fn units() -> PathBuf {
    root().join("overlay/usr/lib/systemd/system")
}

fn layer() -> PathBuf {
    root().join("yocto/meta-perch")
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output().unwrap_or_else(|e| panic!("cannot run {shown}: {e} (installed by scripts/setup.sh?)"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The values of `key=` in a unit file, in order (drop-in style repeats included).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_string())).collect()
}

/// "→ Overall exposure level for perch.service: 1.6 OK 🙂" → 1.6
fn exposure(report: &str) -> Option<f64> {
    let line = report.lines().find(|l| l.contains("Overall exposure level for"))?;
    line.split_once("):").map(|(_, r)| r).or_else(|| line.rsplit_once(".service:").map(|(_, r)| r))?.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_line_is_parsed() {
    assert_eq!(exposure("x\n→ Overall exposure level for perch.service: 1.6 OK 🙂\n"), Some(1.6));
    assert_eq!(exposure("→ Overall exposure level for a.service: 9.6 UNSAFE 😨"), Some(9.6));
    assert_eq!(exposure("no summary"), None);
}

#[test]
fn every_shipped_unit_has_an_exposure_of_at_most_3() {
    let mut services: Vec<PathBuf> =
        std::fs::read_dir(units()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "service")).collect();
    services.sort();
    let names: Vec<String> = services.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.len() >= 3 && names.contains(&"perch-reboot.service".to_string()), "{names:?}");
    for unit in &services {
        let out = run(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager"]).arg(unit));
        let report = text(&out);
        let level = exposure(&report).unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
        assert!(level <= MAX_EXPOSURE, "{} exposure {level} > {MAX_EXPOSURE}:\n{report}", unit.display());
        // The tool's own threshold (tenths) agrees with the parsed figure.
        let th = run(Command::new("systemd-analyze").args(["security", "--offline=true", "--no-pager", "--threshold=30"]).arg(unit));
        assert!(th.status.success(), "systemd-analyze --threshold=30 failed for {}:\n{}", unit.display(), text(&th));
    }
}

#[test]
fn units_verify_cleanly() {
    // verify needs the units they depend on (multi-user.target, …) and the programs they run, under one
    // root: the host's system units, our overlay on top, and stand-ins for /usr/bin/perch and /bin/rm.
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let sys = r.join("usr/lib/systemd/system");
    std::fs::create_dir_all(sys.parent().unwrap()).unwrap();
    let cp = run(Command::new("cp").arg("-a").arg("/usr/lib/systemd/system").arg(&sys));
    assert!(cp.status.success(), "{}", text(&cp));
    let cp = run(Command::new("cp").arg("-a").arg(format!("{}/.", units().display())).arg(&sys));
    assert!(cp.status.success(), "{}", text(&cp));
    for (prog, target) in [("/bin/true", "usr/bin/perch"), ("/bin/rm", "bin/rm")] {
        std::fs::create_dir_all(r.join(target).parent().unwrap()).unwrap();
        std::fs::copy(prog, r.join(target)).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(units())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".service") || n.ends_with(".path"))
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    let out = run(Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", r.display())).args(&names));
    let report = text(&out);
    assert!(out.status.success() && report.trim().is_empty(), "systemd-analyze verify {names:?}:\n{report}");
}

#[test]
fn only_the_install_unit_can_write_slots() {
    let main = read(units().join("perch.service"));
    let jetson = read(units().join("perch.service.d/jetson.conf"));
    let install = read(units().join("perch-ota-install.service"));
    for unit in [&main, &jetson] {
        let settings: String = unit.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        assert!(!settings.contains("rootA") && !settings.contains("rootB") && !settings.contains("perch-ota"), "{settings}");
    }
    assert_eq!(unit_values(&main, "DevicePolicy"), ["closed"]);
    assert_eq!(unit_values(&main, "CapabilityBoundingSet"), [""]);
    assert_eq!(unit_values(&main, "User"), ["perch"]);
    assert_eq!(unit_values(&main, "PrivateDevices"), Vec::<String>::new(), "PrivateDevices would hide the GPU");
    assert_eq!(unit_values(&install, "SupplementaryGroups"), ["perch-ota"]);
    let allowed = unit_values(&install, "DeviceAllow");
    for slot in ["rootA", "rootB"] {
        assert!(allowed.contains(&format!("/dev/disk/by-partlabel/{slot} rw")), "{allowed:?}");
    }
    // The udev rule hands the slots to that group, and the partition labels are the image's.
    let rules = read(root().join("overlay/usr/lib/udev/rules.d/70-perch.rules"));
    assert!(rules.contains(r#"ENV{ID_PART_ENTRY_NAME}=="rootA|rootB", GROUP="perch-ota""#), "{rules}");
    let wks = read(layer().join("wic/perch-ab.wks.in"));
    for label in ["boot", "ubootenv", "rootA", "rootB", "data"] {
        assert!(wks.contains(&format!("--part-name {label} ")), "{label} missing from perch-ab.wks.in");
    }
    let config = read(root().join("overlay/etc/perch/perch.toml"));
    assert!(config.contains(r#"slot_a = "/dev/disk/by-partlabel/rootA""#) && config.contains(r#"slot_b = "/dev/disk/by-partlabel/rootB""#));
}

#[test]
fn path_units_agree_with_their_services_and_the_config() {
    let value = |file: &str, key: &str| unit_values(&read(units().join(file)), key);
    let bundle = "/var/lib/perch/ota/incoming/update.bundle";
    assert_eq!(value("perch-ota-install.path", "PathExists"), [bundle]);
    assert!(value("perch-ota-install.service", "ExecStart")[0].ends_with(&format!(" {bundle}")));
    assert_eq!(value("perch-ota-install.service", "ExecStopPost"), [format!("/bin/rm -f {bundle}"), "/bin/sync -f /var/lib/perch/ota/incoming".to_string()]);
    let request = "/var/lib/perch/ota/reboot-requested";
    assert_eq!(value("perch-reboot.path", "PathExists"), [request]);
    assert_eq!(value("perch-reboot.service", "ExecStart"), [format!("/bin/rm -f {request}")]);
    assert_eq!(value("perch-reboot.service", "SuccessAction"), ["reboot"]);
    // perch's default reboot request: `<state_dir>/ota/reboot-requested` under the shipped state_dir.
    let config = read(root().join("overlay/etc/perch/perch.toml"));
    let state_dir = config.lines().find_map(|l| l.strip_prefix("state_dir = ")).map(|v| v.trim().trim_matches('"').to_string());
    assert_eq!(
        state_dir.map(|d| format!("{d}/ota/reboot-requested")).as_deref(),
        Some(request),
        "perch's default request is not the one perch-reboot.path waits for"
    );
    assert!(config.contains("# reboot_command = []"), "perch.toml must keep the default reboot request");
}

#[test]
fn sysusers_creates_perch_outside_the_slot_group() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/sysusers.d")).unwrap();
    std::fs::copy(root().join("overlay/usr/lib/sysusers.d/perch.conf"), r.join("usr/lib/sysusers.d/perch.conf")).unwrap();
    let out = run(Command::new("systemd-sysusers").arg(format!("--root={}", r.display())).arg("perch.conf"));
    assert!(out.status.success(), "{}", text(&out));
    let passwd = read(r.join("etc/passwd"));
    let group = read(r.join("etc/group"));
    let user = passwd.lines().find(|l| l.starts_with("perch:")).unwrap_or_else(|| panic!("{passwd}"));
    assert!(user.ends_with(":/var/lib/perch:/usr/sbin/nologin"), "{user}");
    let members = |g: &str| -> Vec<String> {
        let line = group.lines().find(|l| l.starts_with(&format!("{g}:"))).unwrap_or_else(|| panic!("no group {g} in\n{group}"));
        line.rsplit(':').next().unwrap().split(',').filter(|m| !m.is_empty()).map(str::to_string).collect()
    };
    assert_eq!(members("video"), ["perch"]);
    assert_eq!(members("render"), ["perch"]);
    assert!(members("perch-ota").is_empty(), "perch must not be in perch-ota: {group}");
    // tmpfiles only names owners sysusers creates.
    let tmpfiles = read(root().join("overlay/usr/lib/tmpfiles.d/perch.conf"));
    let known: BTreeSet<&str> = ["root", "perch"].into();
    for l in tmpfiles.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f.len() >= 5 && known.contains(f[3]) && known.contains(f[4]), "tmpfiles line {l:?}");
    }
}

#[test]
fn factory_uboot_environment_is_what_perch_writes_for_a_new_box() {
    let files = layer().join("recipes-bsp/perch-ab-layout/files");
    let shipped: Vec<(String, String)> =
        read(files.join("perch-env.txt")).lines().map(|l| l.split_once('=').expect("NAME=value")).map(|(k, v)| (k.into(), v.into())).collect();
    assert_eq!(shipped, env_vars::to_vars(&BootFlags::factory(Slot::A)));

    // Build the partition content as the recipe does (two redundant copies) and read it back with
    // libubootenv through a config shaped like the shipped fw_env.config.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let copy = d.join("copy.bin");
    let out = run(Command::new("mkenvimage").args(["-r", "-s", "0x4000", "-o"]).arg(&copy).arg(files.join("perch-env.txt")));
    assert!(out.status.success(), "{}", text(&out));
    let one = std::fs::read(&copy).unwrap();
    std::fs::write(d.join("ubootenv"), [one.as_slice(), one.as_slice()].concat()).unwrap();
    let shipped_cfg = read(files.join("fw_env.config"));
    let cfg: String = shipped_cfg
        .lines()
        .filter(|l| l.starts_with("/dev/"))
        .map(|l| l.replacen("/dev/disk/by-partlabel/ubootenv", &d.join("ubootenv").display().to_string(), 1) + "\n")
        .collect();
    assert_eq!(cfg.lines().count(), 2, "fw_env.config: two redundant copies expected:\n{shipped_cfg}");
    std::fs::write(d.join("fw_env.config"), cfg).unwrap();
    let out = run(Command::new("fw_printenv").arg("-c").arg(d.join("fw_env.config")));
    assert!(out.status.success(), "{}", text(&out));
    let vars = env_vars::parse_list(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(env_vars::from_vars(&vars), Some(BootFlags::factory(Slot::A)));
}

/// What `perch-crates.inc` must hold for the current Cargo.lock.
fn crates_inc() -> String {
    let lock: toml::Table = toml::from_str(&read(root().join("Cargo.lock"))).expect("Cargo.lock parses");
    let mut crates = Vec::new();
    for p in lock["package"].as_array().expect("[[package]]") {
        let Some(source) = p.get("source").and_then(|s| s.as_str()) else { continue };
        assert!(source.starts_with("registry+"), "{source}: only crates.io crates can be fetched with crate://");
        let field = |k: &str| p[k].as_str().unwrap().to_string();
        crates.push((field("name"), field("version"), field("checksum")));
    }
    let mut s = String::from(
        "# Generated from Cargo.lock by tests/packaging.rs (PERCH_BLESS=1 cargo test --test packaging): the crates\n\
         # perch is built from, fetched by bitbake's crate fetcher so that do_compile needs no network.\n",
    );
    for (i, (name, version, _)) in crates.iter().enumerate() {
        s += &format!("{}crate://crates.io/{name}/{version} \\\n", if i == 0 { "SRC_URI += \"" } else { "            " });
    }
    s += "\"\n\n";
    for (name, version, sum) in &crates {
        s += &format!("SRC_URI[{name}-{version}.sha256sum] = \"{sum}\"\n");
    }
    s
}

#[test]
fn yocto_crates_match_cargo_lock() {
    let path = layer().join("recipes-perch/perch/perch-crates.inc");
    let want = crates_inc();
    if std::env::var_os("PERCH_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    assert!(read(&path) == want, "{} is stale: run PERCH_BLESS=1 cargo test --test packaging", path.display());
}

#[test]
fn yocto_layer_passes_oelint_adv() {
    let oelint = root().join(".local/oelint/bin/oelint-adv");
    assert!(oelint.exists(), "{} missing: run scripts/setup.sh", oelint.display());
    let mut recipes: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![layer()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "bb" || x == "bbappend") {
                recipes.push(p);
            }
        }
    }
    recipes.sort();
    assert!(recipes.len() >= 3, "{recipes:?}");
    // scarthgap (JetPack 6 via meta-tegra) and kirkstone (JetPack 5). Suppressed, and only this:
    // oelint.vars.homepageping fetches HOMEPAGE over the network, which CI does not have.
    for release in ["scarthgap", "kirkstone"] {
        let out = run(Command::new(&oelint)
            .args(["--quiet", "--jobs", "1", "--release", release, "--suppress", "oelint.vars.homepageping"])
            .args(&recipes)
            .current_dir(layer()));
        let report = text(&out);
        assert!(out.status.success() && report.trim().is_empty(), "oelint-adv --release {release}:\n{report}");
    }
}
