//! The lease workload end to end: keys on leases kept alive for a while,
//! then abandoned, under a mixed nemesis (leader kills, pauses, a master
//! removed and added back), three masters on loopback. No key may vanish
//! while its lease is kept alive; every key must be gone TTL + a bound
//! after the faults are healed.
//!
//! Partitions and kill-majority are left out on purpose: they hit two known
//! store bugs (keep-alives answered by a leader without a quorum, see
//! docs/JEPSEN.md, "Found by these runs"), which would turn this test red
//! at random. Add `partition` and `kill-majority` back once those are
//! fixed.

mod common;

#[test]
fn kept_alive_leases_stay_and_abandoned_ones_expire_under_mixed_faults() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (_, results) = common::run_valid(
        &[
            "--workload",
            "lease",
            "--nemesis",
            "kill-leader,kill-random,pause-random,pause-leader,member-remove",
            "--net",
            "loopback",
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
