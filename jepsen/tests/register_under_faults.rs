//! The whole suite end to end: `rafter-jepsen test` against a real
//! three-master cluster of the built `rafter` binary, with kills and pauses,
//! on loopback (so the loopback path stays tested; partitions run in network
//! namespaces in `register_under_partitions.rs`).

mod common;

#[test]
fn register_workload_is_linearizable_under_kills_and_pauses() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (_, results) = common::run_valid(
        &[
            "--workload",
            "register",
            "--nemesis",
            "kill,pause",
            "--net",
            "loopback",
            "--time-limit",
            "20",
            "--fault-interval",
            "3",
        ],
        &run_dir,
    );

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

    // Every `ok` names the master that answered it, one of the run's.
    let mut answered = std::collections::BTreeSet::new();
    for line in history.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["type"] == "ok" {
            let node = event["node"]
                .as_str()
                .unwrap_or_else(|| panic!("no node: {line}"));
            assert!(["n1", "n2", "n3"].contains(&node), "{line}");
            answered.insert(node.to_string());
        }
    }
    assert!(!answered.is_empty());
}
