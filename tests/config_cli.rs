//! `perch check-config`: good configs pass, bad ones exit non-zero naming the key.

mod common;

use common::{model, perch, write_config};

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("perch.toml");
    std::fs::write(&path, text).unwrap();
    let out = perch().arg("check-config").arg(&path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn base(camera: &str) -> String {
    format!("device_id = \"box-1\"\nstate_dir = \"/tmp/perch-test\"\n[detector]\nmodel = \"{}\"\n[[camera]]\n{camera}\n", model().display())
}

#[test]
fn a_good_config_passes() {
    let (ok, out) = check(&base("id = \"gate\"\nsource = \"rtsp://admin:pw@127.0.0.1:8554/cam\"\nlabels = [\"person\", \"car\"]"));
    assert!(ok, "{out}");
    assert!(out.contains("ok (1 camera(s), model yolox_nano)"), "{out}");
    assert!(!out.contains(":pw@"), "password printed: {out}");
}

#[test]
fn unknown_key_is_named() {
    let (ok, out) = check(&base("id = \"gate\"\nsource = \"test://ball\"\ndetect_fsp = 5"));
    assert!(!ok);
    assert!(out.contains("camera[0]") && out.contains("detect_fsp"), "{out}");
}

#[test]
fn bad_values_are_named_each() {
    let (ok, out) = check(&base("id = \"gate\"\nsource = \"ftp://cam/x\"\ndetect_fps = 0\nmin_score = 1.5"));
    assert!(!ok);
    for key in ["camera[0].source", "camera[0].detect_fps", "camera[0].min_score"] {
        assert!(out.contains(&format!("`{key}`")), "{key} not named in: {out}");
    }
    let (ok, out) = check(&base("id = \"gate\"\nsource = \"test://ball\"\ndetect_fps = \"fast\""));
    assert!(!ok);
    assert!(out.contains("camera[0].detect_fps"), "{out}");
}

#[test]
fn labels_are_checked_against_the_model() {
    let (ok, out) = check(&base("id = \"gate\"\nsource = \"test://ball\"\nlabels = [\"persn\"]"));
    assert!(!ok);
    assert!(out.contains("camera[0].labels") && out.contains("persn") && out.contains("person"), "{out}");
}

#[test]
fn missing_model_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &["id = \"a\"\nsource = \"test://ball\"".into()], "");
    let text = std::fs::read_to_string(&path).unwrap().replace("yolox_nano.toml", "missing.toml");
    std::fs::write(&path, text).unwrap();
    let out = perch().arg("check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("detector.model") && err.contains("missing.toml"), "{err}");
}

#[test]
fn shipped_configs_are_valid() {
    // The default config of the rootfs overlay: valid as it stands (its model lives at the installed path).
    let overlay = common::root().join("overlay/etc/perch/perch.toml");
    let config = perch::Config::load(&overlay).unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.cameras.is_empty());
    // The demo config, model included.
    let out = perch().arg("check-config").arg(common::root().join("examples/demo.toml")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
