//! The watch workload end to end: writers put and delete keys while one
//! watcher per master streams the changes, under a mixed nemesis (kills,
//! pauses, partitions, a master removed and added back), three masters in
//! network namespaces. Every watcher must see every revision exactly once,
//! in order, agreeing with the writes and the final state.
//!
//! Needs root, `ip` and `iptables` (partitions); fails without them.

mod common;

#[test]
fn every_watcher_sees_every_revision_once_in_order_under_mixed_faults() {
    if let Err(why) = rafter_jepsen::netns::check_available() {
        panic!("watch test cannot run: {why}. It needs root with `ip` (iproute2) and `iptables`");
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (stdout, results) = common::run_valid(
        &[
            "--workload",
            "watch",
            "--nemesis",
            "kill-leader,pause-random,partition-leader,partition-halves,member-remove",
            "--net",
            "netns",
            "--concurrency",
            "4",
            "--time-limit",
            "20",
            "--fault-interval",
            "3",
        ],
        &run_dir,
    );
    assert_eq!(results["workload"], "watch");
    assert!(
        results["faults"].as_array().unwrap().len() >= 2,
        "expected faults: {results}"
    );
    let checker = &results["checker"];
    assert!(
        checker["writes_acknowledged"].as_u64().unwrap() >= 50,
        "too few acknowledged writes: {results}"
    );
    // Three pinned watchers and the final one, each past the end key.
    let watchers = checker["watchers"].as_array().unwrap();
    assert_eq!(watchers.len(), 4, "{results}");
    let end = checker["end_revision"].as_u64().unwrap();
    for w in watchers {
        assert!(w["last_revision"].as_u64().unwrap() >= end, "{results}");
    }
    assert!(
        checker["reference_revisions"].as_u64().unwrap() >= 50,
        "{stdout}"
    );
    assert!(run_dir.join("latency.svg").is_file());
}
