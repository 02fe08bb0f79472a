//! `bench/smoke.sh`, the runner CI uses to keep every bench alive, judges fake benches: it must pass a
//! bench that prints a well-formed ratio line and fail one that crashes, prints none, prints a negative
//! figure beside a good one, has no smoke mode, or dies silently on `set -e` (the runner names the command).

use std::path::Path;
use std::process::Command;

/// A tree with the real `bench/smoke.sh` and one fake bench `bench/NAME.sh` with `body`; runs the runner on
/// it and returns (success, output).
fn judge(name: &str, body: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("bench");
    std::fs::create_dir_all(&bench).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/smoke.sh"), bench.join("smoke.sh")).unwrap();
    std::fs::write(bench.join(format!("{name}.sh")), body).unwrap();
    let out = Command::new("bash").arg(bench.join("smoke.sh")).arg(name).env("LIMIT_S", "20").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

const GOOD: &str = r#"echo "ratio perch/peer cpu: 0.930x (rounds 0.921 0.930; spread 0.921..0.930)""#;

#[test]
fn a_bench_with_a_well_formed_ratio_line_passes() {
    let (ok, out) = judge("good", &format!("# BENCH_SMOKE=1 keeps it short\n{GOOD}\n"));
    assert!(ok, "{out}");
    assert!(out.contains("ok   good") && out.contains("ratio perch/peer cpu: 0.930x"), "{out}");
}

#[test]
fn a_bench_that_crashes_prints_no_ratio_or_a_negative_one_fails() {
    let cases = [
        ("crash", format!("# BENCH_SMOKE\n{GOOD}\nexit 3\n"), "exit 3"),
        ("silent", "# BENCH_SMOKE\necho 'perch 1.2 ms, peer 1.3 ms'\n".to_string(), "printed no ratio line"),
        ("negative", format!("# BENCH_SMOKE\n{GOOD}\necho 'ratio a/b: -9.233x (rounds -22.216 3.749; spread -22.216..3.749)'\n"), "not a positive figure"),
        ("nosmoke", format!("{GOOD}\n"), "no smoke mode"),
        // A `set -e` death prints nothing of its own: the runner's ERR trap names the command and line.
        ("quiet", "set -euo pipefail\n# BENCH_SMOKE\nx=$(ls /nonexistent / 2>/dev/null | head -1)\n".to_string(), "line 3: `x=$(ls /nonexistent"),
    ];
    for (name, body, why) in cases {
        let (ok, out) = judge(name, &body);
        assert!(!ok, "{name} passed: {out}");
        assert!(out.contains(&format!("FAIL {name}")) && out.contains(why), "{name}: {out}");
    }
}

#[test]
fn a_bench_past_its_time_limit_fails() {
    let (ok, out) = judge("slow", &format!("# BENCH_SMOKE\nsleep 60\n{GOOD}\n"));
    assert!(!ok, "{out}");
    assert!(out.contains("ran past 20 s"), "{out}");
}
