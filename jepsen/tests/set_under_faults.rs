//! The set (exactly-once) workload end to end: `rafter-jepsen test
//! --workload set` and `--workload set-retry` against a real three-master
//! cluster with kills and pauses, on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `rafter` binary under test: `$RAFTER_BIN`, else the one cargo built
/// next to `rafter-jepsen`. It must have been built already: `cargo build
/// --workspace`.
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

/// Runs the workload for 15 s and returns `results.json`, asserting a
/// valid verdict.
fn run(workload: &str, run_dir: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rafter-jepsen"))
        .args(["test", "--workload", workload, "--nemesis", "kill,pause"])
        .args(["--net", "loopback"])
        .args(["--time-limit", "15", "--fault-interval", "3"])
        .arg("--rafter-bin")
        .arg(rafter_bin())
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("run rafter-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rafter-jepsen test --workload {workload} exited {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("overall: valid"), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["workload"], workload);
    assert_eq!(results["verdict"], "valid");
    assert!(
        !results["faults"].as_array().unwrap().is_empty(),
        "expected faults: {results}"
    );
    let checker = &results["checker"];
    // A meaningful number of acknowledged adds, all of them in the final
    // read exactly once.
    let acknowledged = checker["acknowledged"].as_u64().unwrap();
    assert!(acknowledged >= 50, "too few acknowledged adds: {results}");
    let final_size = checker["final_read_size"].as_u64().unwrap();
    assert!(final_size >= acknowledged, "{results}");
    assert!(checker["lost"].as_array().unwrap().is_empty());
    assert!(checker["duplicated"].as_array().unwrap().is_empty());
    assert!(checker["unexpected"].as_array().unwrap().is_empty());

    // The history: adds of single elements, and one final read of the list.
    let history = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    let reads: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["f"] == "read" && e["type"] == "ok")
        .collect();
    assert_eq!(reads.len(), 1, "one final read");
    assert_eq!(
        reads[0]["value"].as_array().unwrap().len() as u64,
        final_size
    );
    results
}

#[test]
fn set_workload_is_exactly_once_under_kills_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    run("set", &dir.path().join("run"));
}

#[test]
fn set_retry_workload_is_exactly_once_under_kills_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    run("set-retry", &dir.path().join("run"));
}
