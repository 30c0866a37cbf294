//! The durability workload end to end: `rafter-jepsen test --workload
//! durability` against a real three-master cluster on loopback; the nemesis
//! is always kill-all (every master kill -9 at once, then restarted).

use std::path::PathBuf;
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

#[test]
fn acknowledged_writes_survive_killing_every_master() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // `--nemesis pause` is overridden: durability always kills everything.
    let out = Command::new(env!("CARGO_BIN_EXE_rafter-jepsen"))
        .args(["test", "--workload", "durability", "--nemesis", "pause"])
        .args(["--net", "loopback"])
        .args(["--time-limit", "15", "--fault-interval", "3"])
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
    assert_eq!(results["workload"], "durability");
    assert_eq!(results["verdict"], "valid");
    let faults = results["faults"].as_array().unwrap();
    assert!(!faults.is_empty(), "expected a kill-all: {results}");
    for f in faults {
        assert_eq!(f["fault"], "kill-all", "{results}");
        assert_eq!(f["nodes"].as_array().unwrap().len(), 3, "{results}");
    }
    let checker = &results["checker"];
    let acknowledged = checker["acknowledged"].as_u64().unwrap();
    assert!(
        acknowledged >= 100,
        "too few acknowledged writes: {results}"
    );
    assert!(checker["lost"].as_array().unwrap().is_empty());
    assert!(checker["final_read_keys"].as_u64().unwrap() >= acknowledged);

    // Some writes were acknowledged before the first kill-all, so the check
    // covers data that went through a power loss.
    let first_kill = faults[0]["start"].as_u64().unwrap();
    let history = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    let acked_before = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["f"] == "write" && e["type"] == "ok")
        .filter(|e| e["time"].as_u64().unwrap() < first_kill)
        .count();
    assert!(
        acked_before > 0,
        "no write acknowledged before the kill-all"
    );
}
