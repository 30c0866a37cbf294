//! One test run, in Jepsen's phases: start the cluster and warm up, run the
//! workload with the nemesis for the time limit, heal everything, wait for
//! recovery (bounded: a cluster that does not recover fails the run), do
//! final reads, then check the history and write `results.json` and the
//! latency plot `latency.svg`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::checker::durability::{self, DurabilityReport};
use crate::checker::lease::{self, LeaseReport};
use crate::checker::linearizability::{self, CheckError, CheckOptions, Report, Verdict};
use crate::checker::set::{self, SetReport};
use crate::checker::watch::{self as watch_checker, WatchReport};
use crate::cluster::{self, Cluster, ClusterConfig, ClusterError};
use crate::history::{self, EventType, HistoryError, HistoryWriter, Process, Recorder};
use crate::nemesis::{Fault, FaultRecord, Nemesis, NemesisError};
use crate::netns::NetConfig;
use crate::workload::durability::{DurabilityConfig, DurabilityWorkload};
use crate::workload::lease::{LeaseConfig, LeaseWorkload};
use crate::workload::register::{RegisterConfig, RegisterWorkload};
use crate::workload::set::{SetConfig, SetWorkload};
use crate::workload::watch::{WatchConfig, WatchWorkload};

/// Failures that stop a run before it has a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Starting or controlling the cluster failed.
    #[error("cluster control failed")]
    Cluster(#[from] ClusterError),
    /// The history could not be written or read back.
    #[error("history I/O failed")]
    History(#[from] HistoryError),
    /// The nemesis failed.
    #[error("nemesis failed")]
    Nemesis(#[from] NemesisError),
    /// The cluster did not serve a write before the workload.
    #[error("cluster did not accept a write within {0:?} of starting")]
    NotReady(Duration),
    /// After healing, the cluster did not elect a leader or answer the final
    /// reads within the bound.
    #[error("cluster did not recover within {0:?} after the faults were healed")]
    NotRecovered(Duration),
    /// The history is not checkable.
    #[error("history cannot be checked")]
    Check(#[from] CheckError),
    /// `results.json` could not be written.
    #[error("cannot write {path}")]
    Results {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// The `rafter` binary.
    pub rafter_bin: PathBuf,
    /// Number of masters.
    pub nodes: usize,
    /// The run directory (created).
    pub run_dir: PathBuf,
    /// Length of the workload + nemesis phase.
    pub time_limit: Duration,
    /// Faults to choose from; empty for none.
    pub faults: Vec<Fault>,
    /// Quiet time between faults and length of each.
    pub fault_interval: Duration,
    /// One-way delay of every link under the slow-links fault.
    pub link_delay: Duration,
    /// How long the cluster may take to recover after healing.
    pub recovery_bound: Duration,
    /// The checker's time budget.
    pub check_time_limit: Duration,
    /// How long one client operation may keep failing over before it is
    /// given up (`info` for writes, `fail` for reads).
    pub op_timeout: Duration,
    /// Extra flags for every `rafter server`.
    pub server_args: Vec<String>,
    /// Network namespaces for the masters; `None` for loopback.
    pub net: Option<NetConfig>,
    /// Which workload runs.
    pub workload: WorkloadKind,
    /// The register workload's settings.
    pub register: RegisterConfig,
    /// The set workloads' settings (`retry_same_write` is set from
    /// `workload`).
    pub set: SetConfig,
    /// The durability workload's settings.
    pub durability: DurabilityConfig,
    /// The watch workload's settings.
    pub watch: WatchConfig,
    /// The lease workload's settings.
    pub lease: LeaseConfig,
}

/// The workloads a run can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Per-key read / write / cas, checked for linearizability.
    Register,
    /// Exactly-once adds to a set by read-modify-cas.
    Set,
    /// Like `Set`, resending an indeterminate write with the same write id.
    SetRetry,
    /// Unique keys written while every master is killed at once.
    Durability,
    /// Writers and watchers on every master; every watcher sees every
    /// revision once, in order.
    Watch,
    /// Keys on kept-alive leases stay; keys of abandoned leases expire.
    Lease,
}

impl WorkloadKind {
    /// The name on the command line and in `results.json`.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Register => "register",
            WorkloadKind::Set => "set",
            WorkloadKind::SetRetry => "set-retry",
            WorkloadKind::Durability => "durability",
            WorkloadKind::Watch => "watch",
            WorkloadKind::Lease => "lease",
        }
    }
}

/// A checker's report; serialized as the report itself.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CheckerReport {
    /// Linearizability, per key.
    Register(Report),
    /// The set checker.
    Set(SetReport),
    /// The durability checker.
    Durability(DurabilityReport),
    /// The watch checker.
    Watch(WatchReport),
    /// The lease checker.
    Lease(LeaseReport),
}

impl CheckerReport {
    /// The overall verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            CheckerReport::Register(r) => r.verdict,
            CheckerReport::Set(r) => r.verdict,
            CheckerReport::Durability(r) => r.verdict,
            CheckerReport::Watch(r) => r.verdict,
            CheckerReport::Lease(r) => r.verdict,
        }
    }

    /// The report for people.
    pub fn render(&self) -> String {
        match self {
            CheckerReport::Register(r) => r.render(),
            CheckerReport::Set(r) => r.render(),
            CheckerReport::Durability(r) => r.render(),
            CheckerReport::Watch(r) => r.render(),
            CheckerReport::Lease(r) => r.render(),
        }
    }
}

/// The running workload.
#[derive(Clone)]
enum Active {
    Register(RegisterWorkload),
    Set(SetWorkload),
    Durability(DurabilityWorkload),
    Watch(WatchWorkload),
    Lease(LeaseWorkload),
}

impl Active {
    async fn run(
        self,
        client: rafter_client::Client,
        stop: watch::Receiver<bool>,
    ) -> Result<(), history::HistoryError> {
        match self {
            Active::Register(w) => w.run(client, stop).await,
            Active::Set(w) => w.run(client, stop).await,
            Active::Durability(w) => w.run(client, stop).await,
            Active::Watch(w) => w.run(client, stop).await,
            Active::Lease(w) => w.run(client, stop).await,
        }
    }
}

/// Operation counts by completion type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpCounts {
    /// Operations started.
    pub invoke: usize,
    /// Completed `ok`.
    pub ok: usize,
    /// Completed `fail`.
    pub fail: usize,
    /// Completed `info`, or never completed.
    pub info: usize,
}

/// The contents of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// The workload's name.
    pub workload: &'static str,
    /// The checker's overall verdict.
    pub verdict: Verdict,
    /// Number of masters.
    pub nodes: usize,
    /// `loopback`, or `netns <subnet>` when the masters ran in network
    /// namespaces.
    pub network: String,
    /// Workload phase length, seconds.
    pub time_limit_secs: f64,
    /// Client operations by outcome.
    pub ops: OpCounts,
    /// The faults injected, in order.
    pub faults: Vec<FaultRecord>,
    /// Time from heal to a leader all masters agree on, ms.
    pub recovery_ms: u64,
    /// The checker's report.
    pub checker: CheckerReport,
}

/// Watch history the masters keep under the watch workload: its final
/// watcher reads every revision of the run again from the first, so none
/// may be compacted away (the masters' default keeps 100 000, which a
/// 10-minute run passes: the final watcher then got Compacted and nothing).
const WATCH_HISTORY_REVISIONS: u64 = 1_000_000_000;

/// The masters' extra flags: the user's, plus for the watch workload a
/// history long enough for the final watcher unless the user set one.
pub(crate) fn server_args(config: &TestConfig) -> Vec<String> {
    let mut args = config.server_args.clone();
    let set = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if config.workload == WorkloadKind::Watch && !set("--history-revisions") {
        args.push(format!("--history-revisions={WATCH_HISTORY_REVISIONS}"));
    }
    args
}

/// Runs one test; writes `history.jsonl` and `results.json` to the run
/// directory and returns the results.
pub async fn run_test(config: TestConfig) -> Result<Results, RunError> {
    // Shared with the nemesis; dropping the last handle kills the cluster,
    // also on every error path.
    let cluster = Arc::new(Mutex::new(Cluster::start(ClusterConfig {
        rafter_bin: config.rafter_bin.clone(),
        nodes: config.nodes,
        dir: config.run_dir.clone(),
        server_args: server_args(&config),
        net: config.net.clone(),
    })?));
    let endpoints = lock(&cluster).endpoints();
    let all: Vec<(usize, String)> = endpoints.iter().cloned().enumerate().collect();
    let client = cluster::client(&endpoints, config.op_timeout).await?;

    // Warm-up: a leader and one acknowledged write outside the history.
    let warmup = Duration::from_secs(30);
    cluster::wait_for_leader(&client, &all, warmup).await?;
    let names = lock(&cluster).names_and_endpoints();
    let masters = cluster::masters(&client, &names).await?;
    let history_path = config.run_dir.join("history.jsonl");
    let recorder = Recorder::with_masters(HistoryWriter::create(&history_path)?, masters);
    let deadline = Instant::now() + warmup;
    let warmup_revision = loop {
        if let Ok(r) = client.put("jepsen/warmup", "1", 0, false).await {
            break r.header.map_or(0, |h| h.revision);
        }
        if Instant::now() > deadline {
            return Err(RunError::NotReady(warmup));
        }
    };
    tracing::info!(nodes = config.nodes, "cluster ready; starting workload");

    // Workload + nemesis.
    let (stop_tx, stop_rx) = watch::channel(false);
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        recorder: recorder.clone(),
        faults: config.faults.clone(),
        interval: config.fault_interval,
        link_delay: config.link_delay,
    };
    let nemesis_task = tokio::spawn(nemesis.run(stop_rx.clone()));
    let workload = match config.workload {
        WorkloadKind::Register => Active::Register(RegisterWorkload::new(
            config.register.clone(),
            recorder.clone(),
        )),
        WorkloadKind::Set | WorkloadKind::SetRetry => Active::Set(SetWorkload::new(
            SetConfig {
                retry_same_write: config.workload == WorkloadKind::SetRetry,
                ..config.set.clone()
            },
            recorder.clone(),
        )),
        WorkloadKind::Durability => Active::Durability(DurabilityWorkload::new(
            config.durability.clone(),
            recorder.clone(),
        )),
        WorkloadKind::Watch => {
            let nodes = lock(&cluster).names_and_endpoints();
            Active::Watch(WatchWorkload::new(
                config.watch.clone(),
                recorder.clone(),
                nodes,
                warmup_revision + 1,
            ))
        }
        WorkloadKind::Lease => {
            Active::Lease(LeaseWorkload::new(config.lease.clone(), recorder.clone()))
        }
    };
    let workload_task = {
        let workload = workload.clone();
        let client = client.clone();
        tokio::spawn(async move { workload.run(client, stop_rx).await })
    };
    tokio::time::sleep(config.time_limit).await;
    let _ = stop_tx.send(true);
    let faults = join(nemesis_task).await?;
    join(workload_task).await?;

    // Heal and recover.
    lock(&cluster).heal()?;
    tracing::info!("healed; waiting for recovery");
    let healed = Instant::now();
    cluster::wait_for_leader(&client, &all, config.recovery_bound)
        .await
        .map_err(|_| RunError::NotRecovered(config.recovery_bound))?;
    let recovery_ms = healed.elapsed().as_millis() as u64;

    // Final reads: one successful read per key, each by a fresh process
    // (for set and durability, one read of everything).
    let deadline = healed + config.recovery_bound;
    match &workload {
        Active::Register(workload) => {
            let mut process = 1_000_000;
            for key in workload.keys_used() {
                loop {
                    process += 1;
                    let kind = workload
                        .invoke(&client, process, "read", &key, Value::Null)
                        .await?;
                    if kind == EventType::Ok {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(RunError::NotRecovered(config.recovery_bound));
                    }
                }
            }
        }
        Active::Watch(w) => {
            if w.finish(&client, deadline).await? != Some(EventType::Ok) {
                return Err(RunError::NotRecovered(config.recovery_bound));
            }
        }
        Active::Lease(w) => {
            // Every lease was abandoned when the workload stopped; the
            // masters may give them a full TTL from the latest leader
            // change, which is at the latest when recovery ended.
            let ttl = Duration::from_secs(w.config().ttl_secs.max(0) as u64);
            tokio::time::sleep(ttl + w.config().expiry_bound).await;
            loop {
                if w.final_read(&client).await? == EventType::Ok {
                    break;
                }
                if Instant::now() > deadline + ttl + w.config().expiry_bound {
                    return Err(RunError::NotRecovered(config.recovery_bound));
                }
            }
        }
        Active::Set(_) | Active::Durability(_) => loop {
            let kind = match &workload {
                Active::Set(w) => w.final_read(&client).await?,
                Active::Durability(w) => w.final_read(&client).await?,
                _ => unreachable!("handled above"),
            };
            if kind == EventType::Ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(RunError::NotRecovered(config.recovery_bound));
            }
        },
    }
    recorder.flush()?;
    drop(cluster);

    // Check.
    let events = history::read_history(&history_path)?;
    let ops = count_ops(&events);
    let checker = match config.workload {
        WorkloadKind::Register => CheckerReport::Register(linearizability::check_events(
            &events,
            &CheckOptions {
                time_limit: config.check_time_limit,
            },
        )?),
        WorkloadKind::Set | WorkloadKind::SetRetry => {
            CheckerReport::Set(set::check_events(&events)?)
        }
        WorkloadKind::Durability => CheckerReport::Durability(durability::check_events(&events)?),
        WorkloadKind::Watch => CheckerReport::Watch(watch_checker::check_events(&events)?),
        WorkloadKind::Lease => CheckerReport::Lease(lease::check_events(&events)?),
    };
    let results = Results {
        workload: config.workload.name(),
        verdict: checker.verdict(),
        nodes: config.nodes,
        network: match &config.net {
            Some(net) => format!("netns {}.{}.0/24", net.base, net.id),
            None => "loopback".into(),
        },
        time_limit_secs: config.time_limit.as_secs_f64(),
        ops,
        faults,
        recovery_ms,
        checker,
    };
    let title = format!(
        "{} on {} masters, {}: {} (faults: {})",
        results.workload,
        results.nodes,
        results.network,
        results.verdict,
        fault_names(&results.faults)
    );
    let path = config.run_dir.join("latency.svg");
    std::fs::write(&path, crate::plot::latency_svg(&events, &title))
        .map_err(|source| RunError::Results { path, source })?;
    let path = config.run_dir.join("results.json");
    let text = serde_json::to_string_pretty(&results).expect("results serialize");
    std::fs::write(&path, text).map_err(|source| RunError::Results { path, source })?;
    Ok(results)
}

/// The distinct fault kinds, comma-separated (or their number, when there
/// are too many for a title); `none` for none.
fn fault_names(faults: &[FaultRecord]) -> String {
    let mut kinds: Vec<&str> = faults.iter().map(|f| f.fault).collect();
    kinds.sort_unstable();
    kinds.dedup();
    match kinds.len() {
        0 => "none".into(),
        1..=3 => kinds.join(", "),
        n => format!("{} of {n} kinds", faults.len()),
    }
}

fn count_ops(events: &[history::Event]) -> OpCounts {
    let mut c = OpCounts::default();
    for e in events {
        if e.process == Process::Nemesis {
            continue;
        }
        match e.kind {
            EventType::Invoke => c.invoke += 1,
            EventType::Ok => c.ok += 1,
            EventType::Fail => c.fail += 1,
            EventType::Info => c.info += 1,
        }
    }
    // Invokes never completed count as info.
    c.info = c.invoke - c.ok - c.fail;
    c
}

async fn join<T, E>(task: tokio::task::JoinHandle<Result<T, E>>) -> Result<T, RunError>
where
    RunError: From<E>,
{
    match task.await {
        Ok(r) => r.map_err(RunError::from),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl Results {
    /// A one-screen summary for people.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "workload {} on {} masters ({}) for {:.0} s",
            self.workload, self.nodes, self.network, self.time_limit_secs
        );
        let _ = writeln!(
            out,
            "operations: {} invoked, {} ok, {} fail, {} info",
            self.ops.invoke, self.ops.ok, self.ops.fail, self.ops.info
        );
        let _ = writeln!(out, "faults: {}", self.faults.len());
        let mut kinds: Vec<&str> = self.faults.iter().map(|f| f.fault).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            let n = self.faults.iter().filter(|f| f.fault == k).count();
            let _ = writeln!(out, "  {k:<16} {n}");
        }
        let _ = writeln!(out, "recovered {} ms after healing", self.recovery_ms);
        out.push_str(&self.checker.render());
        out
    }
}
