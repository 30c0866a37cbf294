//! The `rafter-jepsen` command line: options and what each subcommand does.
//!
//! Exit codes: 0 valid, 1 invalid, 2 unknown (the checker ran out of time),
//! 3 when the run itself failed (unreadable history, bad arguments, a
//! cluster that would not start). Only 0 is a pass.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::checker::linearizability::{self, CheckOptions, Verdict};
use crate::history;
use crate::nemesis::Fault;
use crate::netns::{self, NetConfig};
use crate::run::{self, CheckerReport, TestConfig, WorkloadKind};
use crate::workload::durability::DurabilityConfig;
use crate::workload::lease::LeaseConfig;
use crate::workload::register::RegisterConfig;
use crate::workload::set::SetConfig;
use crate::workload::watch::WatchConfig;

/// Jepsen-style fault-injection tests for Rafter.
#[derive(Debug, Parser)]
#[command(name = "rafter-jepsen", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a history file and print the verdict per key and overall.
    Check {
        /// The model to check against.
        #[arg(long, value_enum, default_value_t = Model::Register)]
        model: Model,
        /// How long the checker may search, in seconds, before it gives up
        /// with "unknown".
        #[arg(long, default_value_t = 60)]
        check_time_limit: u64,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The history (JSON Lines, see jepsen/README.md).
        file: PathBuf,
    },
    /// Start a cluster, run a workload under faults, check the history.
    Test(TestArgs),
}

/// Options of `rafter-jepsen test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The workload to run.
    #[arg(long, value_enum, default_value_t = Workload::Register)]
    pub workload: Workload,
    /// Faults, comma-separated: `kill`, `pause`, `partition` (every fault of
    /// the family), or exact names (kill-random, kill-leader, kill-majority,
    /// kill-all, pause-random, pause-leader, pause-majority,
    /// partition-leader, partition-halves, partition-bridge, partition-ring,
    /// member-remove, slow-links; `member` and `slow` name the last two);
    /// `none` for no faults. Partitions and slow links need `--net netns`.
    /// The durability workload ignores this and always uses `kill-all`.
    #[arg(long, default_value = "kill,pause")]
    pub nemesis: String,
    /// Seconds of workload with faults.
    #[arg(long, default_value_t = 30)]
    pub time_limit: u64,
    /// Number of masters.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Seconds between faults, and how long each lasts.
    #[arg(long, default_value_t = 5)]
    pub fault_interval: u64,
    /// Milliseconds every link between masters is delayed, each direction,
    /// under the slow-links fault. Keep the round trip (twice this) below
    /// the masters' `--heartbeat-ms` (100 by default): openraft uses the
    /// heartbeat interval as the AppendEntries timeout, so slower links
    /// make the cluster unavailable rather than slow (docs/JEPSEN.md).
    #[arg(long, default_value_t = 40)]
    pub link_delay_ms: u64,
    /// Seconds the cluster may take to recover after healing.
    #[arg(long, default_value_t = 30)]
    pub recovery_bound: u64,
    /// Seconds the checker may search before answering "unknown".
    #[arg(long, default_value_t = 120)]
    pub check_time_limit: u64,
    /// Milliseconds a client operation may keep failing over between
    /// masters before it is given up (then `info` for writes and cas).
    #[arg(long, default_value_t = 3000)]
    pub op_timeout_ms: u64,
    /// The `rafter` binary; default: `rafter` next to this program.
    #[arg(long, env = "RAFTER_BIN")]
    pub rafter_bin: Option<PathBuf>,
    /// Directory for logs, data, history.jsonl and results.json; default
    /// `jepsen-runs/<workload>-<unix time>`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Concurrent client processes (writers, for set, durability and watch;
    /// lease holders for lease).
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Watchers per master (watch only).
    #[arg(long, default_value_t = 1)]
    pub watchers_per_node: usize,
    /// Lease TTL in seconds (lease only).
    #[arg(long, default_value_t = 3)]
    pub lease_ttl: i64,
    /// Seconds after the TTL (counted from recovery after healing) by which
    /// every abandoned lease's key must be gone (lease only).
    #[arg(long, default_value_t = 5)]
    pub lease_expiry_bound: u64,
    /// Keys in use at a time (register), or keys written (watch).
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Operations per key before the workers move to fresh keys (register
    /// only).
    #[arg(long, default_value_t = 300)]
    pub ops_per_key: u64,
    /// Where the masters live: `netns` (each in its own network namespace on
    /// a bridge; needs root, `ip` and `iptables`; partitions possible) or
    /// `loopback` (127.0.0.1 ports; no partitions). Default: netns when
    /// available, else loopback.
    #[arg(long, value_enum)]
    pub net: Option<Net>,
    /// With `--net netns`: first two octets of the masters' subnet; the
    /// subnet is BASE.ID.0/24, the host (clients) is BASE.ID.1, master nI is
    /// BASE.ID.(10+I).
    #[arg(long, default_value = "10.77")]
    pub net_base: String,
    /// With `--net netns`: the run id (1-254), naming the bridge `rjbID` and
    /// namespaces `rjID-n1`...; leftovers of an earlier run with this id are
    /// removed first. Default: a random id not in use on this host.
    #[arg(long)]
    pub net_id: Option<u8>,
    /// Extra flag for every `rafter server` (repeatable), e.g.
    /// `--server-arg=--heartbeat-ms=50`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// Workloads `test` can run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Workload {
    /// Per-key read / write / cas, checked for linearizability.
    Register,
    /// Unique elements added to one key by read-modify-cas; the final read
    /// must hold every acknowledged element exactly once.
    Set,
    /// `set`, resending a write that got no answer with the same write id.
    SetRetry,
    /// Unique keys written while every master is killed at once; every
    /// acknowledged write must survive. Forces the `kill-all` nemesis.
    Durability,
    /// Writers put and delete keys while a watcher on every master streams
    /// the changes; every watcher must see every revision exactly once, in
    /// order, agreeing with the writes and the final state.
    Watch,
    /// Keys attached to leases that are kept alive, then abandoned; no key
    /// may vanish while its lease is kept alive, every abandoned one must
    /// vanish within TTL + a bound.
    Lease,
}

impl Workload {
    fn kind(self) -> WorkloadKind {
        match self {
            Workload::Register => WorkloadKind::Register,
            Workload::Set => WorkloadKind::Set,
            Workload::SetRetry => WorkloadKind::SetRetry,
            Workload::Durability => WorkloadKind::Durability,
            Workload::Watch => WorkloadKind::Watch,
            Workload::Lease => WorkloadKind::Lease,
        }
    }
}

/// Where the masters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Net {
    /// One network namespace per master, on a bridge.
    Netns,
    /// 127.0.0.1 ports.
    Loopback,
}

/// Models a history can be checked against.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Model {
    /// A read / write / cas register per key, checked for linearizability.
    Register,
    /// The set workload's history (`add`s and a final `read`): every
    /// acknowledged element exactly once, nothing unexpected.
    Set,
    /// The durability workload's history (`write`s of fresh keys and a final
    /// `read` of all of them): no acknowledged write lost.
    Durability,
    /// The watch workload's history: every watcher saw the same ordered,
    /// gap-free, duplicate-free revisions, agreeing with writes and final
    /// state.
    Watch,
    /// The lease workload's history: no key vanished while its lease was
    /// kept alive, none left at the final read.
    Lease,
}

/// Exit code of a verdict.
pub fn exit_code(verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Valid => ExitCode::SUCCESS,
        Verdict::Invalid => ExitCode::from(1),
        Verdict::Unknown => ExitCode::from(2),
    }
}

/// Exit code when the run itself failed.
pub const EXIT_ERROR: u8 = 3;

/// Parses the arguments (usage errors exit 3, not clap's 2, which means
/// "unknown" here) and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check {
            model,
            check_time_limit,
            json,
            file,
        } => {
            let events = history::read_history(&file)?;
            let opts = CheckOptions {
                time_limit: Duration::from_secs(check_time_limit),
            };
            let check = || -> anyhow::Result<CheckerReport> {
                Ok(match model {
                    Model::Register => {
                        CheckerReport::Register(linearizability::check_events(&events, &opts)?)
                    }
                    Model::Set => CheckerReport::Set(crate::checker::set::check_events(&events)?),
                    Model::Durability => CheckerReport::Durability(
                        crate::checker::durability::check_events(&events)?,
                    ),
                    Model::Watch => {
                        CheckerReport::Watch(crate::checker::watch::check_events(&events)?)
                    }
                    Model::Lease => {
                        CheckerReport::Lease(crate::checker::lease::check_events(&events)?)
                    }
                })
            };
            let report = check().with_context(|| format!("cannot check {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(exit_code(report.verdict()))
        }
        Command::Test(args) => {
            let config = test_config(args)?;
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let run_dir = config.run_dir.clone();
            let runtime = tokio::runtime::Runtime::new()?;
            // On Ctrl-C the run is dropped, and with it the cluster: the
            // masters are killed and the namespaces removed.
            let outcome = runtime.block_on(async {
                tokio::select! {
                    r = run::run_test(config) => Some(r),
                    _ = tokio::signal::ctrl_c() => None,
                }
            });
            // Drops the nemesis and workload tasks (the cluster's other
            // owners) too.
            drop(runtime);
            let Some(outcome) = outcome else {
                anyhow::bail!("interrupted; masters stopped, network removed");
            };
            let results =
                outcome.with_context(|| format!("run in {} failed", run_dir.display()))?;
            print!("{}", results.summary());
            println!("results: {}", run_dir.join("results.json").display());
            Ok(exit_code(results.verdict))
        }
    }
}

fn net_config(base: &str, id: Option<u8>) -> anyhow::Result<NetConfig> {
    let parts: Vec<&str> = base.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.parse::<u8>().is_err()) {
        anyhow::bail!("--net-base must be two octets like 10.77, not {base:?}");
    }
    match id {
        Some(0 | 255) => anyhow::bail!("--net-id must be within 1-254"),
        Some(id) => Ok(NetConfig {
            id,
            base: base.to_string(),
        }),
        None => Ok(NetConfig::pick(base)?),
    }
}

fn test_config(args: TestArgs) -> anyhow::Result<TestConfig> {
    let workload = args.workload.kind();
    let faults = if workload == WorkloadKind::Durability {
        if args.nemesis != "kill-all" {
            eprintln!(
                "the durability workload always uses the kill-all nemesis; ignoring --nemesis"
            );
        }
        vec![Fault::KillAll]
    } else if args.nemesis == "none" {
        Vec::new()
    } else {
        Fault::parse_list(&args.nemesis).map_err(anyhow::Error::msg)?
    };
    let net = match args.net {
        Some(Net::Loopback) => None,
        Some(Net::Netns) => {
            netns::check_available()
                .map_err(|why| anyhow::anyhow!("--net netns unavailable: {why}"))?;
            Some(net_config(&args.net_base, args.net_id)?)
        }
        None => match netns::check_available() {
            Ok(()) => Some(net_config(&args.net_base, args.net_id)?),
            Err(why) => {
                eprintln!(
                    "network namespaces unavailable ({why}); using loopback, where partition and slow-link nemeses cannot run"
                );
                None
            }
        },
    };
    if net.is_none() {
        let partitions: Vec<&str> = faults
            .iter()
            .filter(|f| f.needs_network())
            .map(|f| f.name())
            .collect();
        if !partitions.is_empty() {
            let why = netns::check_available()
                .err()
                .unwrap_or_else(|| "--net loopback was asked for".into());
            anyhow::bail!(
                "cannot run nemeses {} on loopback: partitions and slow links need every master in its own network namespace ({why}); run as root with `ip` (iproute2) and `iptables` installed, with --net netns; on loopback only kill, pause and member faults are available",
                partitions.join(", ")
            );
        }
    }
    let rafter_bin = match args.rafter_bin {
        Some(p) => p,
        None => std::env::current_exe()
            .context("cannot locate this program to find rafter next to it; pass --rafter-bin")?
            .with_file_name("rafter"),
    };
    let run_dir = args.run_dir.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("jepsen-runs").join(format!("{}-{secs}", workload.name()))
    });
    Ok(TestConfig {
        rafter_bin,
        nodes: args.nodes,
        run_dir,
        time_limit: Duration::from_secs(args.time_limit),
        faults,
        fault_interval: Duration::from_secs(args.fault_interval),
        link_delay: Duration::from_millis(args.link_delay_ms),
        recovery_bound: Duration::from_secs(args.recovery_bound),
        check_time_limit: Duration::from_secs(args.check_time_limit),
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        server_args: args.server_args,
        net,
        workload,
        register: RegisterConfig {
            concurrency: args.concurrency,
            keys: args.keys,
            ops_per_key: args.ops_per_key,
            ..RegisterConfig::default()
        },
        set: SetConfig {
            concurrency: args.concurrency,
            ..SetConfig::default()
        },
        durability: DurabilityConfig {
            concurrency: args.concurrency,
            ..DurabilityConfig::default()
        },
        watch: WatchConfig {
            writers: args.concurrency,
            watchers_per_node: args.watchers_per_node,
            keys: args.keys,
            ..WatchConfig::default()
        },
        lease: LeaseConfig {
            concurrency: args.concurrency,
            ttl_secs: args.lease_ttl,
            expiry_bound: Duration::from_secs(args.lease_expiry_bound),
            ..LeaseConfig::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn masters_flags(extra: &[&str]) -> Vec<String> {
        let mut argv = vec!["rafter-jepsen", "test", "--net", "loopback"];
        argv.extend_from_slice(&[
            "--rafter-bin",
            "/nonexistent/rafter",
            "--run-dir",
            "/nonexistent/run",
        ]);
        argv.extend_from_slice(extra);
        let Command::Test(args) = Cli::try_parse_from(argv).expect("arguments parse").command
        else {
            panic!("not the test subcommand");
        };
        crate::run::server_args(&test_config(args).expect("a test config"))
    }

    #[test]
    fn the_watch_workload_keeps_every_revision_for_its_final_watcher() {
        // The final watcher reads the whole run again from revision 1: the
        // masters' default history (100 000 revisions) is shorter than a
        // 10-minute run, so the watch workload raises it...
        let flags = masters_flags(&["--workload", "watch"]);
        assert_eq!(flags, vec!["--history-revisions=1000000000".to_string()]);
        // ...unless the user chose a history themselves,
        let chosen = masters_flags(&[
            "--workload",
            "watch",
            "--server-arg=--history-revisions=500",
        ]);
        assert_eq!(chosen, vec!["--history-revisions=500".to_string()]);
        // and other workloads leave the masters' default alone.
        assert!(masters_flags(&["--workload", "register"]).is_empty());
    }
}
