//! `rafter agent`: runs the node agent (the `rafter-nodeagent` crate) on
//! this machine, with the Docker engine or plain processes
//! (`--container-runtime process`) as its container runtime.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rafter_nodeagent::agent::{AgentOptions, run};
use rafter_nodeagent::docker::Docker;
use rafter_nodeagent::process::ProcessRuntime;
use rafter_nodeagent::runtime::ContainerRuntime;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// What runs the pods' containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// The local Docker engine (pod network, images, isolation).
    Docker,
    /// Plain host processes, for machines without Docker: host network
    /// (pod IP = node IP), images are directories under
    /// <data-dir>/process-runtime/images (docs/AGENT.md).
    Process,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Masters to join through, comma-separated host:port (any one that
    /// answers will do; the agent learns the rest from the cluster).
    #[arg(
        long,
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        required = true
    )]
    server: Vec<String>,
    /// Bootstrap token from `rafter token create` (needed the first time
    /// only: the node credential is kept in --data-dir).
    #[arg(long, env = "RAFTER_JOIN_TOKEN")]
    token: Option<String>,
    /// The node's name (a lowercase DNS name).
    #[arg(long)]
    name: String,
    /// Where the node credential, the master list and pod volumes are kept.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Most pods this node runs.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// How often the node's lease is renewed.
    #[arg(long, default_value = "1s", value_parser = crate::cli::duration::parse_positive_duration)]
    heartbeat: Duration,
    /// The node's address (default: the one that routes to the masters).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Node labels, key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Port for the masters' logs and exec requests (0: any free port;
    /// the Node's status says which).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// How often every pod is checked even when nothing changed.
    #[arg(long, default_value = "1s", value_parser = crate::cli::duration::parse_positive_duration)]
    sync_period: Duration,
    /// Do not proxy Service traffic nor answer service DNS for pods (both
    /// need root: an interface for the clusterIPs, port 53).
    #[arg(long)]
    no_service_proxy: bool,
    /// The cluster's DNS domain: pods resolve NAME.NAMESPACE.svc.DOMAIN.
    #[arg(long, default_value = rafter_nodeagent::dns::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// What runs the pods: the Docker engine, or plain processes on this
    /// host for machines without Docker (see docs/AGENT.md for its limits).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Docker)]
    container_runtime: RuntimeKind,
}

pub async fn main(args: AgentArgs) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l:?}: expected key=value");
        };
        labels.insert(k.to_string(), v.to_string());
    }
    let runtime: Arc<dyn ContainerRuntime> = match args.container_runtime {
        RuntimeKind::Docker => Arc::new(Docker::connect().await.context(
            "the node agent runs pods with Docker: start the Docker engine, or run them as \
             plain processes with `--container-runtime process`",
        )?),
        RuntimeKind::Process => {
            // The IP the agent will register for the node: pods share it.
            let ip = match rafter_nodeagent::node::node_ip(args.node_ip, &args.server) {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(ip) => bail!(
                    "the process runtime gives pods the node's IPv4 address, but the node's \
                     address is {ip}; pass an IPv4 --node-ip"
                ),
            };
            let root = args.data_dir.join("process-runtime");
            let runtime = ProcessRuntime::new(&root, ip)
                .with_context(|| format!("the process runtime in {}", root.display()))?;
            tracing::info!(
                root = %root.display(),
                %ip,
                "pods run as plain processes on this host (images are directories under {}/images)",
                root.display()
            );
            Arc::new(runtime)
        }
    };
    let options = AgentOptions {
        servers: args.server,
        token: args.token,
        name: args.name,
        data_dir: args.data_dir,
        max_pods: args.max_pods,
        heartbeat: args.heartbeat,
        node_ip: args.node_ip,
        labels,
        sync_period: args.sync_period,
        agent_listen: std::net::SocketAddr::from(([0, 0, 0, 0], args.agent_port)),
        services: !args.no_service_proxy,
        cluster_domain: args.cluster_domain,
    };
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut agent = tokio::spawn(run(options, runtime, shutdown.clone()));
    tokio::select! {
        r = &mut agent => return Ok(r??),
        _ = term.recv() => tracing::info!("SIGTERM: stopping the agent (containers keep running)"),
        _ = int.recv() => tracing::info!("SIGINT: stopping the agent (containers keep running)"),
    }
    shutdown.cancel();
    // Let it stop its servers and remove the proxy's interface.
    match tokio::time::timeout(Duration::from_secs(10), agent).await {
        Ok(r) => Ok(r??),
        Err(_) => bail!("the agent did not stop within 10 s"),
    }
}
