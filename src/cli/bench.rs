//! `rafter bench kv`: runs the `rafter-bench` crate's benchmark of
//! Rafter's store against etcd, prints the comparison table and where the
//! JSON report and the chart went.
//!
//! `rafter bench scheduler`: scheduling throughput and failover with
//! simulated nodes (see `bench::scheduler`).
//!
//! `rafter bench pods`: pod create → all containers running on real node
//! agents and Docker (see `bench::pods`; `pod_agents` runs the agents,
//! `pod_report` holds the figures).

mod pod_agents;
mod pod_report;
mod pods;
mod scheduler;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use clap::Subcommand;
use rafter_bench::BenchConfig;

/// `rafter bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Compare the KV store with a 3-member etcd on this machine: puts,
    /// gets, watch latency, leader failover, memory (about 2 minutes).
    Kv(KvArgs),
    /// Scheduling throughput on 3 masters with simulated nodes: pods bound
    /// per second, then the time from a leader kill to the first binding
    /// of the new leader's scheduler.
    Scheduler(scheduler::SchedulerArgs),
    /// Pod start-up latency on real node agents and this machine's Docker:
    /// create → all containers running (and → Ready) p50/p90/p99, with
    /// the time split into scheduling, agent, sandbox and container phases.
    Pods(pods::PodsArgs),
}

/// Options of `rafter bench kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// Measured time of each load run, e.g. 3s or 500ms (each run adds a
    /// quarter of it, at most 1s, of warm-up).
    #[arg(long, default_value = "3s", value_parser = crate::cli::duration::parse_positive_duration)]
    pub duration: Duration,
    /// Leader kills per system in the failover run.
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Directory for bench-kv.json and bench-kv.svg.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The etcd binary (default: etcd on $PATH, else /usr/bin/etcd).
    #[arg(long)]
    pub etcd_bin: Option<PathBuf>,
    /// The rafter binary the masters run (default: this one).
    #[arg(long)]
    pub rafter_bin: Option<PathBuf>,
    /// Where the run directory with both clusters' data goes; fdatasync is
    /// measured there too (default: the system temp directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the run directory (data and server logs) afterwards.
    #[arg(long)]
    pub keep_data: bool,
    /// Run the whole benchmark this many times and finish with the mean of
    /// every figure and the range of its ratio (a single run's ratios move
    /// by ±10–15 % on a busy machine). Each run's report goes to OUT/run-N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub runs: u64,
    /// Extra flag for every `rafter server` (repeatable), e.g.
    /// --server-arg=--election-timeout-ms --server-arg=300.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// Runs a `rafter bench` verb.
pub async fn run(c: BenchCommand) -> anyhow::Result<()> {
    let a = match c {
        BenchCommand::Kv(a) => a,
        BenchCommand::Scheduler(a) => return scheduler::run(a).await,
        BenchCommand::Pods(a) => return pods::run(a).await,
    };
    let rafter_bin = match a.rafter_bin {
        Some(b) => b,
        None => std::env::current_exe().context("cannot find this program's path")?,
    };
    let runs = a.runs as usize;
    let mut cfg = BenchConfig {
        rafter_bin,
        etcd_bin: a
            .etcd_bin
            .unwrap_or_else(rafter_bench::cluster::default_etcd_bin),
        measure: a.duration,
        kills: a.kills,
        out_dir: a.out.clone(),
        data_parent: a.data_dir.unwrap_or_else(std::env::temp_dir),
        keep_data: a.keep_data,
        rafter_server_args: a.server_args,
        progress: true,
    };
    let mut reports = Vec::with_capacity(runs);
    for n in 1..=runs {
        if runs > 1 {
            cfg.out_dir = a.out.join(format!("run-{n}"));
            eprintln!("run {n} of {runs}");
        }
        let (report, written) = rafter_bench::run_until_interrupted(cfg.clone()).await?;
        outln!()?;
        if runs > 1 {
            outln!("RUN {n} OF {runs}")?;
        }
        out!("{}", report.table())?;
        outln!()?;
        out!("{}", report.details())?;
        outln!("report: {}", written.json.display())?;
        outln!("chart:  {}", written.svg.display())?;
        if let Some(d) = written.data {
            outln!("data and server logs kept in {}", d.display())?;
        }
        reports.push(report);
    }
    if runs > 1 {
        let summary = rafter_bench::Summary::of(&reports);
        let path = a.out.join("bench-kv-summary.json");
        let text = serde_json::to_string_pretty(&summary).expect("summary serializes");
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        outln!()?;
        outln!(
            "MEAN OF {runs} RUNS (RAFTER/ETCD: mean of the runs' ratios; RANGE: lowest–highest)"
        )?;
        out!("{}", summary.table())?;
        outln!("summary: {}", path.display())?;
    }
    Ok(())
}
