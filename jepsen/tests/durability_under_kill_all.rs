//! The durability workload end to end: `rafter-jepsen test --workload
//! durability` against a real three-master cluster on loopback; the nemesis
//! is always kill-all (every master kill -9 at once, then restarted).

mod common;

#[test]
fn acknowledged_writes_survive_killing_every_master() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    // `--nemesis pause` is overridden: durability always kills everything.
    let (_, results) = common::run_valid(
        &[
            "--workload",
            "durability",
            "--nemesis",
            "pause",
            "--net",
            "loopback",
            "--time-limit",
            "15",
            "--fault-interval",
            "3",
        ],
        &run_dir,
    );

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
