//! A few-second run of `rafter bench kv` against a real etcd: the report
//! must hold every figure for both systems. No assertion on speed — the
//! benchmark itself is for that (docs/BENCHMARKS.md).

use std::process::Command;

use rafter_bench::Report;

#[test]
fn bench_kv_reports_every_figure_for_both_systems() {
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

    let json = std::fs::read_to_string(out.path().join("bench-kv.json")).unwrap();
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
    let svg = std::fs::read_to_string(out.path().join("bench-kv.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("put 256c throughput"));
    // Nothing left behind: the run directory is gone.
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rafter-bench-"))
        .collect();
    assert!(left.is_empty(), "run directory left behind: {left:?}");
}
