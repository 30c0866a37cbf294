//! The suite end to end with real network partitions: three masters, each
//! in its own network namespace, partitioned with iptables drops (isolated
//! leader, halves, bridge, ring) while the register workload runs.
//!
//! Needs root, `ip` (iproute2) and `iptables`. Without them this test fails
//! (it never passes or skips silently): partitions are part of what the
//! suite must show.

mod common;

use std::process::Command;

#[test]
fn register_workload_is_linearizable_under_partitions() {
    if let Err(why) = rafter_jepsen::netns::check_available() {
        panic!(
            "partition test cannot run: {why}. It needs root with `ip` (Debian package iproute2) and `iptables` (package iptables) installed"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let (stdout, results) = common::run_valid(
        &[
            "--workload",
            "register",
            "--nemesis",
            "partition",
            "--net",
            "netns",
            "--nodes",
            "3",
            "--time-limit",
            "20",
            "--fault-interval",
            "3",
        ],
        &run_dir,
    );
    assert!(stdout.contains("(netns "), "{stdout}");

    assert_eq!(results["verdict"], "valid");
    assert!(results["ops"]["ok"].as_u64().unwrap() > 100, "{results}");
    let faults = results["faults"].as_array().unwrap();
    let partitions = faults
        .iter()
        .filter(|f| f["fault"].as_str().unwrap().starts_with("partition-"))
        .count();
    assert!(partitions >= 2, "expected several partitions: {results}");
    assert_eq!(partitions, faults.len(), "{results}");

    // Each partition is logged with start and stop, naming the cut links.
    let history = std::fs::read_to_string(run_dir.join("history.jsonl")).unwrap();
    let nemesis: Vec<serde_json::Value> = history
        .lines()
        .filter(|l| l.contains(r#""process":"nemesis""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(nemesis.len(), 2 * faults.len());
    for e in &nemesis {
        assert!(
            !e["value"]["cut"].as_array().unwrap().is_empty(),
            "a partition that cuts nothing: {e}"
        );
    }

    // The namespaces and bridge are gone.
    let network = results["network"].as_str().unwrap();
    let id = network.split('.').nth(2).unwrap();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !netns.lines().any(|l| l.starts_with(&format!("rj{id}-"))),
        "namespaces of {network} left behind: {netns}"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains(&format!(" rjb{id}:")),
        "bridge of {network} left behind"
    );
}
