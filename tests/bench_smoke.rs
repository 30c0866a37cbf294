//! Short runs of the benchmarks, so they keep working: `rafter bench kv`
//! against a real etcd, twice for a few seconds (each report must hold
//! every figure for both systems, and the summary both runs), and `rafter bench pods` with a few pods on
//! real node agents and Docker (every pod must run, every figure must be
//! printed, nothing may be left in Docker). No assertion on speed — the
//! benchmarks themselves are for that (docs/BENCHMARKS.md).

use std::process::Command;

use rafter_bench::Report;
use rafter_nodeagent::docker::Docker;
use rafter_nodeagent::runtime::{self as rt, ContainerRuntime};

#[test]
fn bench_kv_reports_every_figure_for_both_systems_and_sums_up_its_runs() {
    let etcd = rafter_bench::cluster::default_etcd_bin();
    assert!(
        etcd.is_file(),
        "etcd not found at {}: install Debian's etcd-server (scripts/install-build-deps.sh)",
        etcd.display()
    );
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_rafter"))
        .args([
            "bench",
            "kv",
            "--duration",
            "300ms",
            "--kills",
            "1",
            "--runs",
            "2",
            "--out",
        ])
        .arg(out.path())
        .arg("--data-dir")
        .arg(out.path())
        .output()
        .expect("run rafter bench kv");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "rafter bench kv failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("RAFTER/ETCD"), "{stdout}");
    assert!(stdout.contains("RUN 2 OF 2"), "{stdout}");
    assert!(stdout.contains("MEAN OF 2 RUNS"), "{stdout}");

    // Each run's report in its own directory; the summary over both.
    let run2 = std::fs::read_to_string(out.path().join("run-2/bench-kv.json")).unwrap();
    let run2: Report = serde_json::from_str(&run2).unwrap();
    let summary = std::fs::read_to_string(out.path().join("bench-kv-summary.json")).unwrap();
    let summary: rafter_bench::Summary = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary.runs, 2);
    assert_eq!(summary.figures.len(), run2.comparisons.len());

    let run1 = out.path().join("run-1");
    let json = std::fs::read_to_string(run1.join("bench-kv.json")).unwrap();
    let report: Report = serde_json::from_str(&json).unwrap();
    assert!(report.machine.fdatasync.count > 0 && report.machine.floor_us > 0.0);
    let names: Vec<&str> = report.systems.iter().map(|s| s.system.as_str()).collect();
    assert_eq!(names, ["etcd", "rafter"]);
    for s in &report.systems {
        for clients in rafter_bench::PUT_CLIENTS {
            let w = s.workload("put", clients).unwrap();
            assert!(w.ops > 0 && w.latency.p50_us > 0.0, "{}: {w:?}", s.system);
        }
        for name in ["get-linearizable", "get-serializable"] {
            for clients in rafter_bench::GET_CLIENTS {
                let w = s.workload(name, clients).unwrap();
                assert!(w.ops > 0 && w.latency.p50_us > 0.0, "{}: {w:?}", s.system);
            }
        }
        assert!(
            s.watch.puts > 0 && s.watch.from_send.count > 0,
            "{}: {:?}",
            s.system,
            s.watch
        );
        assert_eq!(s.failover.kills.len(), 1, "{}", s.system);
        assert!(
            s.failover.kills[0].first_write_ms.is_some(),
            "{}: no write after the leader kill: {:?}",
            s.system,
            s.failover
        );
        assert_eq!(s.rss.idle_kib.len(), 3, "{}", s.system);
        assert_eq!(s.rss.loaded_kib.len(), 3, "{}", s.system);
        assert!(s.rss.idle_kib.iter().all(|k| *k > 0));
        assert_eq!(s.rss.loaded_anon_kib.len(), 3, "{}", s.system);
    }
    assert!(report.comparisons.len() >= 30);
    assert!(
        report
            .comparisons
            .iter()
            .all(|c| c.ratio.is_some() || c.etcd == 0.0)
    );
    let svg = std::fs::read_to_string(run1.join("bench-kv.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("put 256c throughput"));
    // Nothing left behind: the run directory is gone.
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rafter-bench-"))
        .collect();
    assert!(left.is_empty(), "run directory left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_pods_runs_every_pod_and_prints_the_figures() {
    // Names and pod range of this test only, so it can run beside the
    // agent tests and a real benchmark run on the same Docker engine.
    const PREFIX: &str = "smoke-pods";
    const PODS: usize = 6;
    let docker = Docker::connect()
        .await
        .expect("this test needs the Docker engine (is dockerd running?)");
    let out = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_rafter"))
        .args([
            "bench",
            "pods",
            "--nodes",
            "2",
            "--pods",
            &PODS.to_string(),
            "--concurrency",
            "3",
            "--pod-cidr",
            "10.211.0.0/16",
            "--node-prefix",
            PREFIX,
            "--out",
        ])
        .arg(out.path())
        .arg("--data-dir")
        .arg(out.path())
        .output()
        .await
        .expect("run rafter bench pods");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "rafter bench pods failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for figure in [
        "create acknowledged → all containers running",
        "create acknowledged → Ready",
        "P50",
        "P90",
        "P99",
        "throughput:",
        "target: create acknowledged → all containers running p99 < 1.00 s",
        "sandbox: created → started",
        "container start: created → started",
    ] {
        assert!(stdout.contains(figure), "no {figure:?} in\n{stdout}");
    }

    let json = std::fs::read_to_string(out.path().join("bench-pods.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pods = report["pods"].as_array().unwrap();
    assert_eq!(pods.len(), PODS, "{json}");
    for p in pods {
        for step in [
            "acked_ms",
            "bound_ms",
            "sandbox_created_ms",
            "sandbox_started_ms",
            "container_created_ms",
            "container_started_ms",
            "running_ms",
            "ready_ms",
        ] {
            assert!(p[step].as_f64().is_some(), "pod without {step}: {p}");
        }
    }
    let figures = report["figures"].as_array().unwrap();
    let running = figures
        .iter()
        .find(|f| f["key"] == "create_ack_to_running")
        .unwrap();
    assert_eq!(running["count"].as_u64(), Some(PODS as u64), "{running}");
    assert!(running["p99_ms"].as_f64().unwrap() > 0.0, "{running}");
    assert_eq!(report["phases"].as_array().unwrap().len(), 8);

    // Nothing left behind: no container or network of the bench's nodes,
    // no run directory.
    for node in [format!("{PREFIX}-1"), format!("{PREFIX}-2")] {
        let left = docker
            .list(&[(rt::LABEL_NODE, node.as_str())])
            .await
            .unwrap();
        assert!(left.is_empty(), "containers of {node} left: {left:?}");
        // The network must be gone, unless the engine refused with its
        // stale-endpoint bug (moby/moby#42119): then nothing is attached.
        let network = rafter_nodeagent::agent::network_name(&node);
        if let Ok(n) = docker.client().inspect_network(&network, None).await {
            let attached: Vec<String> = n.containers.unwrap_or_default().into_keys().collect();
            assert!(
                attached.is_empty(),
                "network {network} left with {attached:?}"
            );
            eprintln!("network {network} left by the engine's stale-endpoint bug");
        }
    }
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rafter-bench-"))
        .collect();
    assert!(left.is_empty(), "run directory left behind: {left:?}");
}
