//! `rafter bench kv`: Rafter's replicated store against etcd 3.4 on the same
//! machine, one after the other, with the same load generator.
//!
//! A run measures the physical floor (fdatasync of the data filesystem and
//! loopback round trip), then for each system starts a 3-member cluster on
//! 127.0.0.1 and runs: puts from 1, 16 and 256 clients; linearizable and
//! serializable gets from 1 and 256 clients; watch latency from a put on
//! the leader to the event on a follower; five kill -9s of the leader under
//! 16 writers; resident memory at idle and after the 256-client puts. It
//! writes `bench-kv.json` and `bench-kv.svg`, and returns the [`Report`],
//! whose table compares each figure as Rafter / etcd with DESIGN.md's
//! targets.
//!
//! Module map:
//! - `cluster`, `process`: starting, killing and restarting the members;
//!   every process is killed and every directory removed when the run ends,
//!   fails or is interrupted.
//! - `driver`, `etcd_driver`, `rafter_driver`: one client interface over
//!   both systems; etcd's v3 API is generated from `proto/etcd/` (`etcd_pb`).
//! - `load`: the closed-loop load generator. `workloads`: what is measured.
//! - `floor`: fdatasync and loopback round trip. `stats`: percentiles.
//! - `report`: figures, comparisons, table, JSON. `svg`: the chart.
//!   `summary`: the mean and range of several runs (`--runs`).

pub mod cluster;
pub mod driver;
pub mod error;
pub mod etcd_driver;
pub mod floor;
pub mod load;
pub mod process;
pub mod rafter_driver;
pub mod report;
pub mod stats;
pub mod summary;
pub mod svg;
pub mod workloads;

/// etcd's v3 API, the part the benchmark calls.
pub mod etcd_pb {
    /// etcd's stored key-value and event types.
    pub mod mvccpb {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mvccpb");
    }
    /// etcd's KV, Watch and Maintenance services.
    pub mod etcdserverpb {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("etcdserverpb");
    }
}

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

pub use error::BenchError;
pub use report::Report;
pub use summary::Summary;

use crate::cluster::Cluster;
use crate::driver::Driver;
use crate::etcd_driver::EtcdDriver;
use crate::rafter_driver::RafterDriver;
use crate::report::Machine;
use crate::report::Rss;
use crate::report::Settings;
use crate::report::SystemReport;
use crate::workloads::Timing;

/// Members per cluster.
pub const MEMBERS: usize = 3;
/// Connections per member each driver opens; requests rotate over them.
const CONNS_PER_MEMBER: usize = 8;
/// Client counts of the put runs, and of the get runs.
pub const PUT_CLIENTS: [usize; 3] = [1, 16, 256];
pub const GET_CLIENTS: [usize; 2] = [1, 256];

/// What to run and where.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `rafter` binary to run masters with.
    pub rafter_bin: PathBuf,
    /// The `etcd` binary.
    pub etcd_bin: PathBuf,
    /// Measured period of each load run (a quarter of it, at most 1 s, is
    /// warm-up before).
    pub measure: Duration,
    /// Leader kills per system.
    pub kills: usize,
    /// Where `bench-kv.json` and `bench-kv.svg` go.
    pub out_dir: PathBuf,
    /// Parent of the run directory holding both clusters' data.
    pub data_parent: PathBuf,
    /// Keep the run directory (data and server logs) afterwards.
    pub keep_data: bool,
    /// Extra `rafter server` flags.
    pub rafter_server_args: Vec<String>,
    /// Print progress lines to stderr.
    pub progress: bool,
}

/// Where a run wrote its report.
#[derive(Debug, Clone)]
pub struct Written {
    pub json: PathBuf,
    pub svg: PathBuf,
    /// The run directory, when kept.
    pub data: Option<PathBuf>,
}

/// Runs the benchmark, stopping early (and cleaning up) on Ctrl-C or
/// SIGTERM.
pub async fn run_until_interrupted(cfg: BenchConfig) -> Result<(Report, Written), BenchError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| BenchError::io("cannot handle SIGTERM", e))?;
    tokio::select! {
        r = run(cfg) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
        _ = term.recv() => Err(BenchError::Interrupted),
    }
}

/// Runs the benchmark.
pub async fn run(cfg: BenchConfig) -> Result<(Report, Written), BenchError> {
    let say = |msg: String| {
        if cfg.progress {
            eprintln!("{msg}");
        }
    };
    std::fs::create_dir_all(&cfg.data_parent)
        .map_err(|e| BenchError::io(format!("cannot create {}", cfg.data_parent.display()), e))?;
    let dir = tempfile::Builder::new()
        .prefix("rafter-bench-")
        .tempdir_in(&cfg.data_parent)
        .map_err(|e| BenchError::io("cannot create the run directory", e))?;
    let path = dir.path().to_path_buf();

    say(format!(
        "floor: fdatasync and loopback round trips in {}",
        path.display()
    ));
    let fsync_dir = path.clone();
    let fdatasync = tokio::task::spawn_blocking(move || floor::fdatasync(&fsync_dir, 200))
        .await
        .expect("fdatasync probe panicked")?;
    let rtt = tokio::task::spawn_blocking(|| floor::loopback_rtt(2000))
        .await
        .expect("loopback probe panicked")?;
    let machine = machine(&path, fdatasync, rtt);
    say(format!(
        "floor: fdatasync p50 {:.2} ms, loopback RTT p50 {:.3} ms → {:.2} ms",
        machine.fdatasync.p50_us / 1e3,
        machine.loopback_rtt.p50_us / 1e3,
        machine.floor_us / 1e3
    ));

    let timing = Timing {
        warmup: (cfg.measure / 4).min(Duration::from_secs(1)),
        measure: cfg.measure,
    };
    let conns = MEMBERS * CONNS_PER_MEMBER;

    let etcd_dir = path.join("etcd");
    let rafter_dir = path.join("rafter");
    for d in [&etcd_dir, &rafter_dir] {
        std::fs::create_dir_all(d)
            .map_err(|e| BenchError::io(format!("cannot create {}", d.display()), e))?;
    }

    say("etcd: starting 3 members".into());
    let cluster = Cluster::etcd(&cfg.etcd_bin, &etcd_dir, MEMBERS)?;
    let driver = EtcdDriver::connect(&cluster.endpoints, conns)?;
    let version = cluster::etcd_version(&cfg.etcd_bin);
    let etcd = run_system(cluster, driver, version, &cfg, timing, &say).await?;

    say("rafter: starting 3 masters".into());
    let cluster = Cluster::rafter(
        &cfg.rafter_bin,
        &rafter_dir,
        MEMBERS,
        &cfg.rafter_server_args,
    )?;
    let driver = RafterDriver::connect(&cluster.endpoints, conns).await?;
    let version = format!("rafter {}", env!("CARGO_PKG_VERSION"));
    let rafter = run_system(cluster, driver, version, &cfg, timing, &say).await?;

    let comparisons = report::comparisons(&etcd, &rafter, machine.floor_us);
    let report = Report {
        machine,
        settings: Settings {
            measure_secs: timing.measure.as_secs_f64(),
            warmup_secs: timing.warmup.as_secs_f64(),
            kills: cfg.kills,
            members: MEMBERS,
            keyspace: workloads::KEYSPACE,
            value_bytes: workloads::VALUE_BYTES,
            rafter_server_args: cfg.rafter_server_args.clone(),
        },
        systems: vec![etcd, rafter],
        comparisons,
    };
    let written = write(&report, &cfg.out_dir)?;
    let data = if cfg.keep_data {
        Some(dir.keep())
    } else {
        None
    };
    Ok((report, Written { data, ..written }))
}

fn write(report: &Report, out_dir: &Path) -> Result<Written, BenchError> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| BenchError::io(format!("cannot create {}", out_dir.display()), e))?;
    let json = out_dir.join("bench-kv.json");
    let svg = out_dir.join("bench-kv.svg");
    let text = serde_json::to_string_pretty(report).expect("report serializes");
    std::fs::write(&json, text + "\n")
        .map_err(|e| BenchError::io(format!("cannot write {}", json.display()), e))?;
    std::fs::write(&svg, svg::chart(report))
        .map_err(|e| BenchError::io(format!("cannot write {}", svg.display()), e))?;
    Ok(Written {
        json,
        svg,
        data: None,
    })
}

/// Every workload against one running cluster, which is stopped at the end.
async fn run_system<D: Driver>(
    mut cluster: Cluster,
    d: D,
    version: String,
    cfg: &BenchConfig,
    t: Timing,
    say: &impl Fn(String),
) -> Result<SystemReport, BenchError> {
    let name = cluster.system.name();
    let all: Vec<usize> = (0..cluster.len()).collect();
    workloads::wait_leader(&d, &all, Duration::from_secs(60)).await?;
    // Let start-up work (first snapshot, compaction, connections) finish.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rss = Rss {
        idle_kib: cluster.rss_kib(),
        idle_anon_kib: cluster.anon_kib(),
        ..Default::default()
    };
    let term_before = workloads::max_term(&d, cluster.len()).await;
    let mut runs = Vec::new();
    for clients in PUT_CLIENTS {
        let w = workloads::put(&d, clients, t).await;
        say(line(name, &w));
        runs.push(w);
        if clients == 256 {
            rss.loaded_kib = cluster.rss_kib();
            rss.loaded_anon_kib = cluster.anon_kib();
        }
    }
    for serializable in [false, true] {
        for clients in GET_CLIENTS {
            let w = workloads::get(&d, clients, serializable, t).await;
            say(line(name, &w));
            runs.push(w);
        }
    }
    let term_after = workloads::max_term(&d, cluster.len()).await;

    let (leader, _) = workloads::wait_leader(&d, &all, Duration::from_secs(30)).await?;
    let watcher = (leader + 1) % cluster.len();
    let watch = workloads::watch(&d, leader, watcher, t.measure).await?;
    say(format!(
        "{name}: watch ack→event p50 {:.2} ms p99 {:.2} ms ({} puts, {} missed)",
        watch.after_ack.p50_us / 1e3,
        watch.after_ack.p99_us / 1e3,
        watch.puts,
        watch.missed
    ));

    let settle = (t.measure / 2).clamp(Duration::from_millis(300), Duration::from_secs(1));
    let failover = workloads::failover(&d, &mut cluster, cfg.kills, settle).await?;
    say(format!(
        "{name}: failover kill → first write ms: {:?}",
        failover
            .kills
            .iter()
            .map(|k| k.first_write_ms.map(|f| f.round()))
            .collect::<Vec<_>>()
    ));
    cluster.stop();
    Ok(SystemReport {
        system: name.into(),
        version,
        workloads: runs,
        watch,
        failover,
        rss,
        fault_free_term_changes: term_after.saturating_sub(term_before),
    })
}

fn line(system: &str, w: &report::Workload) -> String {
    format!(
        "{system}: {} {} clients: {} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        w.name,
        w.clients,
        report::num(w.ops_per_sec),
        w.latency.p50_us / 1e3,
        w.latency.p99_us / 1e3,
        w.errors
    )
}

/// Facts about this machine, from /proc.
fn machine(data_dir: &Path, fdatasync: stats::Latency, rtt: stats::Latency) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory_mib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    let canonical = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let filesystem = read("/proc/mounts")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && canonical.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} {} on {}", f[2], f[0], f[1])))
        })
        .max()
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        memory_mib,
        data_dir: canonical.display().to_string(),
        filesystem,
        floor_us: fdatasync.p50_us + 2.0 * rtt.p50_us,
        fdatasync,
        loopback_rtt: rtt,
    }
}
