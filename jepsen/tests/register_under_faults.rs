//! The whole suite end to end: `rafter-jepsen test` against a real
//! three-master cluster of the built `rafter` binary, with kills and pauses,
//! on loopback (so the loopback path stays tested; partitions run in network
//! namespaces in `register_under_partitions.rs`).

use std::path::PathBuf;
use std::process::Command;

/// The `rafter` binary under test: `$RAFTER_BIN`, else the one cargo built
/// next to `rafter-jepsen` (target/debug/rafter, honouring CARGO_TARGET_DIR).
/// Cargo does not expose other packages' binaries to a test, so it must have
/// been built already: `cargo build --workspace`.
fn rafter_bin() -> PathBuf {
    let bin = std::env::var_os("RAFTER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_BIN_EXE_rafter-jepsen")).with_file_name("rafter")
        });
    assert!(
        bin.is_file(),
        "rafter binary missing at {}: run `cargo build --workspace` first (or set RAFTER_BIN)",
        bin.display()
    );
    bin
}

#[test]
fn register_workload_is_linearizable_under_kills_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_rafter-jepsen"))
        .args(["test", "--workload", "register", "--nemesis", "kill,pause"])
        .args(["--net", "loopback"])
        .args(["--time-limit", "20", "--fault-interval", "3"])
        .arg("--rafter-bin")
        .arg(rafter_bin())
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .expect("run rafter-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rafter-jepsen test exited {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("overall: valid"), "{stdout}");

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["verdict"], "valid");
    assert!(results["ops"]["ok"].as_u64().unwrap() > 100, "{results}");
    let faults = results["faults"].as_array().unwrap();
    assert!(faults.len() >= 2, "expected several faults: {results}");

    // The history holds the faults' start and stop events too.
    let history = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    let nemesis_events = history
        .lines()
        .filter(|l| l.contains(r#""process":"nemesis""#))
        .count();
    assert_eq!(nemesis_events, 2 * faults.len());
}
