//! The lease workload end to end: keys on leases kept alive for a while,
//! then abandoned, under a mixed nemesis (leader kills, a majority killed,
//! pauses, the leader isolated, halves, a master removed and added back),
//! three masters in network namespaces. No key may vanish while its lease
//! is kept alive; every key must be gone TTL + a bound after the faults are
//! healed.
//!
//! kill-majority and the partitions are the faults that found the
//! keep-alive bugs of docs/JEPSEN.md ("Found by these runs"); they stay in
//! the mix so that those cannot come back.
//!
//! Needs root, `ip` and `iptables` (partitions); fails without them.

mod common;

#[test]
fn kept_alive_leases_stay_and_abandoned_ones_expire_under_mixed_faults() {
    if let Err(why) = rafter_jepsen::netns::check_available() {
        panic!("lease test cannot run: {why}. It needs root with `ip` (iproute2) and `iptables`");
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (_, results) = common::run_valid(
        &[
            "--workload",
            "lease",
            "--nemesis",
            "kill-leader,kill-majority,pause-random,partition-leader,partition-halves,member-remove",
            "--net",
            "netns",
            "--concurrency",
            "5",
            "--time-limit",
            "20",
            "--fault-interval",
            "3",
        ],
        &run_dir,
    );
    assert_eq!(results["workload"], "lease");
    assert!(
        results["faults"].as_array().unwrap().len() >= 2,
        "expected faults: {results}"
    );
    let checker = &results["checker"];
    assert!(
        checker["granted"].as_u64().unwrap() >= 10,
        "too few leases: {results}"
    );
    assert!(
        checker["keepalives_ok"].as_u64().unwrap() >= 50,
        "too few keep-alives: {results}"
    );
    assert_eq!(checker["final_read_keys"], 0, "{results}");
    assert!(run_dir.join("latency.svg").is_file());
}
