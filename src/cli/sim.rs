//! `rafter sim nodes`: simulated nodes for tests and benchmarks only (see
//! `crate::sim`). They run no containers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

use crate::cli::GlobalArgs;
use crate::cli::duration::parse_duration;
use crate::sim::SimOptions;

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// FOR TESTS AND BENCHMARKS ONLY: register N simulated nodes that
    /// heartbeat and report the pods bound to them Running and Ready
    /// without running anything. Runs until interrupted; stopping it stops
    /// their heartbeats (the nodes then go NotReady).
    Nodes(NodesArgs),
}

#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// Node names are PREFIX-1 ... PREFIX-COUNT.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// CPU capacity of each node (a quantity: 4, 2500m).
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Memory capacity of each node (a quantity: 8Gi).
    #[arg(long, default_value = "8Gi")]
    memory: String,
    /// Pods each node can hold.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Extra node labels, key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Heartbeat interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// How long a bound pod takes to become Running and Ready (0 for at once).
    #[arg(long, default_value = "0")]
    start_delay: String,
}

pub async fn run(global: &GlobalArgs, command: SimCommand) -> anyhow::Result<()> {
    let SimCommand::Nodes(a) = command;
    if a.count == 0 {
        bail!("--count must be at least 1");
    }
    for (what, q) in [("--cpu", &a.cpu), ("--memory", &a.memory)] {
        if q.parse::<rafter_proto::quantity::Quantity>().is_err() {
            bail!("{what} {q:?} is not a quantity (e.g. 4, 2500m, 8Gi)");
        }
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected key=value");
        };
        labels.insert(k.to_string(), v.to_string());
    }
    let start_delay = match a.start_delay.trim() {
        "0" | "" => Duration::ZERO,
        s => parse_duration(s).map_err(anyhow::Error::msg)?,
    };
    let options = SimOptions {
        count: a.count,
        prefix: a.prefix,
        cpu: a.cpu,
        memory: a.memory,
        max_pods: a.max_pods,
        labels,
        heartbeat: a.heartbeat,
        start_delay,
    };
    let client = global.client().await?;
    let names = options.names();
    outln!(
        "simulating {} node(s) {}..{} (for tests and benchmarks only: nothing runs on them); Ctrl-C stops them",
        names.len(),
        names[0],
        names[names.len() - 1]
    )?;
    let shutdown = CancellationToken::new();
    let sim = tokio::spawn(crate::sim::run(client, options, shutdown.clone()));
    tokio::select! {
        _ = crate::cli::ctrl_c() => {}
        _ = terminate() => {}
    }
    shutdown.cancel();
    sim.await??;
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
