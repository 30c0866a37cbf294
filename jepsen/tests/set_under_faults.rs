//! The set (exactly-once) workload end to end: `rafter-jepsen test
//! --workload set` and `--workload set-retry` against a real three-master
//! cluster with kills and pauses, on loopback.

mod common;

use std::path::Path;

/// Runs the workload for 15 s and returns `results.json`, asserting a
/// valid verdict.
fn run(workload: &str, run_dir: &Path) -> serde_json::Value {
    let (_, results) = common::run_valid(
        &[
            "--workload",
            workload,
            "--nemesis",
            "kill,pause",
            "--net",
            "loopback",
            "--time-limit",
            "15",
            "--fault-interval",
            "3",
        ],
        run_dir,
    );
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
