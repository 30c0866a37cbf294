//! `rafter server`: one master. Checks its flags and data directory before
//! touching anything, binds its one gRPC port, starts the store, joins the
//! cluster when asked to, serves until SIGTERM/SIGINT, then shuts down
//! cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use rafter_raft_store::data_dir::DataDir;
use rafter_raft_store::data_dir::FORMAT_VERSION;
use rafter_raft_store::data_dir::Identity;
use rafter_raft_store::node::Bootstrap;
use rafter_raft_store::node::Node;
use rafter_raft_store::node::NodeOptions;
use rafter_raft_store::types::Member;
use rafter_raft_store::types::node_id_of;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::signal::unix::SignalKind;
use tokio::signal::unix::signal;

/// Options of `rafter server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// This master's name; unique in the cluster.
    #[arg(long)]
    pub name: String,
    /// Directory for the Raft log, the state and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the gRPC port (Raft, KV and Cluster services), host:port.
    #[arg(long)]
    pub listen: String,
    /// Address other masters and clients use to reach this one, when it
    /// differs from --listen (e.g. --listen 0.0.0.0:7001).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Members of a new cluster: name=host:port,name=host:port,...
    #[arg(long, conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Join an existing cluster through any of these masters (host:port,...).
    #[arg(long)]
    pub join: Option<String>,
    /// Serve Prometheus metrics over HTTP at host:port.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = NodeOptions::default().heartbeat_ms)]
    pub heartbeat_ms: u64,
    /// Minimum election timeout in milliseconds.
    #[arg(long, default_value_t = NodeOptions::default().election_timeout_min_ms)]
    pub election_timeout_ms: u64,
    /// Maximum election timeout in milliseconds, also the leader lease
    /// (default: 6/5 of the minimum).
    #[arg(long)]
    pub election_timeout_max_ms: Option<u64>,
    /// Log entries between snapshots; older entries are then purged.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_logs: u64,
    /// Log entries kept behind a snapshot for slow followers.
    #[arg(long, default_value_t = 1_000)]
    pub keep_logs: u64,
    /// Log entries the leader proposes ahead of their commit (group-commit
    /// batches in flight); writes arriving meanwhile join the next batch.
    #[arg(long, default_value_t = NodeOptions::default().max_in_flight as u64,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub proposal_batches_in_flight: u64,
    /// Revisions of watch history kept before automatic compaction.
    #[arg(long, default_value_t = 100_000)]
    pub history_revisions: u64,
    /// How often history compaction runs, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub compaction_interval_ms: u64,
    /// TEST ONLY, UNSAFE: answer linearizable reads from this master's local
    /// state without confirming leadership (stale reads are possible). For
    /// showing that the Jepsen suite catches the anomaly.
    #[arg(long)]
    pub unsafe_local_reads: bool,
    /// File holding the admin bearer token every client request must carry
    /// (give all masters the same file). Without it, the token is read
    /// from DATA_DIR/admin-token, created with a random token on first
    /// start.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// How often object watches that ask for bookmarks get one, in
    /// milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub bookmark_interval_ms: u64,
    /// The range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cidr: ipnet::IpNet,
    /// The range node pod CIDRs (one /24 per node) are allocated from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: ipnet::IpNet,
    /// A node whose agent has not heartbeated for this long is NotReady
    /// (e.g. 5s, 500ms); the clock starts over on a new leader.
    #[arg(long, default_value = "5s", value_parser = crate::cli::duration::parse_positive_duration)]
    pub node_grace_period: Duration,
    /// Pods of a NotReady node are deleted (and so recreated elsewhere by
    /// their controllers) after this long.
    #[arg(long, default_value = "30s", value_parser = crate::cli::duration::parse_positive_duration)]
    pub pod_eviction_timeout: Duration,
}

/// The admin token: from --token-file, else DATA_DIR/admin-token (created
/// on first start, readable by the owner only).
fn load_token(args: &ServerArgs) -> anyhow::Result<String> {
    let path = match &args.token_file {
        Some(p) => p.clone(),
        None => {
            let p = args.data_dir.join("admin-token");
            if rafter_apiserver::auth::ensure_token_file(&p)
                .with_context(|| format!("cannot create {}", p.display()))?
            {
                tracing::info!(path = %p.display(), "generated the admin token");
            }
            p
        }
    };
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = token.trim().to_string();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "the token file {} must hold one token (no spaces); write e.g. `openssl rand -hex 16` into it",
            path.display()
        );
    }
    Ok(token)
}

/// An `--initial-cluster` value, parsed and checked.
fn parse_initial_cluster(spec: &str) -> anyhow::Result<Vec<Member>> {
    let mut members: Vec<Member> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, addr)) = part.split_once('=') else {
            bail!(
                "malformed --initial-cluster entry {part:?}: expected name=host:port, e.g. m1=127.0.0.1:7001"
            );
        };
        let (name, addr) = (name.trim(), addr.trim());
        if name.is_empty() {
            bail!("malformed --initial-cluster entry {part:?}: the member name is empty");
        }
        check_host_port(addr)
            .with_context(|| format!("malformed --initial-cluster entry {part:?}"))?;
        if members.iter().any(|m| m.name == name) {
            bail!("malformed --initial-cluster: member {name:?} appears twice");
        }
        if members.iter().any(|m| m.addr == addr) {
            bail!("malformed --initial-cluster: address {addr} appears twice");
        }
        members.push(Member {
            name: name.to_string(),
            addr: addr.to_string(),
        });
    }
    if members.is_empty() {
        bail!("malformed --initial-cluster: no members given; expected name=host:port,...");
    }
    Ok(members)
}

fn check_host_port(addr: &str) -> anyhow::Result<()> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        bail!("address {addr:?} has no port; expected host:port");
    };
    if host.is_empty() {
        bail!("address {addr:?} has no host; expected host:port");
    }
    port.parse::<u16>()
        .map_err(|_| anyhow::anyhow!("address {addr:?} has an invalid port {port:?}"))?;
    Ok(())
}

/// The cluster id of an initial member list: the same on every member.
fn cluster_id_of(members: &[Member]) -> u64 {
    let mut parts: Vec<String> = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.addr))
        .collect();
    parts.sort();
    node_id_of(&parts.join(","))
}

/// Runs a master until it is told to stop.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    if args.name.trim().is_empty() {
        bail!("--name must not be empty");
    }
    check_host_port(&args.listen).context("invalid --listen")?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.clone());
    check_host_port(&advertise).context("invalid --advertise")?;
    if args.pod_cidr.prefix_len() > 24 || args.pod_cidr.max_prefix_len() != 32 {
        bail!(
            "--pod-cidr {} must be an IPv4 range of /24 or larger: each node gets a /24 of it",
            args.pod_cidr
        );
    }
    if args.service_cidr.max_prefix_len() - args.service_cidr.prefix_len() < 2 {
        bail!(
            "--service-cidr {} is too small: give a range with room for services, e.g. 10.96.0.0/12",
            args.service_cidr
        );
    }
    let initial = match &args.initial_cluster {
        Some(spec) => {
            let members = parse_initial_cluster(spec)?;
            match members.iter().find(|m| m.name == args.name) {
                None => {
                    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                    bail!(
                        "--name {} is not in --initial-cluster (members: {}); add it or fix the name",
                        args.name,
                        names.join(", ")
                    );
                }
                Some(me) if me.addr != advertise => bail!(
                    "--initial-cluster gives {} the address {}, but this master listens at {advertise}; make them agree",
                    args.name,
                    me.addr
                ),
                Some(_) => {}
            }
            Some(members)
        }
        None => None,
    };
    let join: Option<Vec<String>> = args.join.as_ref().map(|j| {
        j.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(seeds) = &join {
        if seeds.is_empty() {
            bail!("--join needs at least one master address (host:port)");
        }
        for s in seeds {
            check_host_port(s).context("invalid --join")?;
        }
    }

    let mut data_dir = DataDir::open(&args.data_dir)?;
    if data_dir.identity.is_none() && initial.is_none() && join.is_none() {
        bail!(
            "data dir {} is empty: start a new cluster with --initial-cluster, or join one with --join",
            args.data_dir.display()
        );
    }
    let expected_cluster = initial.as_deref().map(cluster_id_of);
    data_dir.check(&args.name, expected_cluster)?;

    // Bind before writing anything, so a port in use leaves no trace.
    let listener = TcpListener::bind(&args.listen).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen on {}: address already in use (is another rafter server running?)",
                args.listen
            )
        } else {
            anyhow::anyhow!("cannot listen on {}: {e}", args.listen)
        }
    })?;
    let metrics_listener = match &args.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot serve metrics on {addr}: address already in use")
            } else {
                anyhow::anyhow!("cannot serve metrics on {addr}: {e}")
            }
        })?),
        None => None,
    };

    let token = load_token(&args)?;
    let cluster_id = match (&data_dir.identity, expected_cluster, &join) {
        (Some(id), _, _) => id.cluster_id,
        (None, Some(c), _) => c,
        (None, None, Some(seeds)) => fetch_cluster_id(seeds, &token).await?,
        (None, None, None) => unreachable!("checked above"),
    };
    if data_dir.identity.is_none() {
        data_dir.record(Identity {
            format_version: FORMAT_VERSION,
            cluster_id,
            name: args.name.clone(),
        })?;
    }

    let options = NodeOptions {
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_min_ms: args.election_timeout_ms,
        election_timeout_max_ms: args
            .election_timeout_max_ms
            .unwrap_or(args.election_timeout_ms * 6 / 5),
        snapshot_logs: args.snapshot_logs,
        keep_logs: args.keep_logs,
        history_revisions: args.history_revisions,
        compaction_interval: Duration::from_millis(args.compaction_interval_ms.max(100)),
        unsafe_local_reads: args.unsafe_local_reads,
        max_in_flight: args.proposal_batches_in_flight as usize,
        ..NodeOptions::default()
    };
    let bootstrap = match initial {
        Some(members) => Bootstrap::Initial(members),
        None if join.is_some() => Bootstrap::Join,
        None => Bootstrap::Resume,
    };
    if args.unsafe_local_reads {
        tracing::warn!("--unsafe-local-reads: linearizable reads may be stale; for testing only");
    }
    let node = Node::start(
        &data_dir, &args.name, &advertise, cluster_id, bootstrap, options,
    )
    .await?;
    tracing::info!(name = %args.name, id = format!("{:016x}", node.id), listen = %args.listen, "master started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut grpc_stop = stop_rx.clone();
    let tokens = rafter_apiserver::auth::Tokens::new(&token);
    let api = rafter_apiserver::ApiServer::new(
        node.clone(),
        rafter_apiserver::ApiOptions {
            bookmark_interval: Duration::from_millis(args.bookmark_interval_ms.max(10)),
        },
    )
    .with_service_cidr(args.service_cidr);
    let check = {
        let tokens = tokens.clone();
        move |r| tokens.check(r)
    };
    let check_admin = {
        let tokens = tokens.clone();
        move |r| tokens.check_admin(r)
    };
    let router = rafter_raft_store::service::router(node.clone(), check_admin)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            api.clone().service(),
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            api.nodes_service(),
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            api.pods_service(),
            check,
        ));
    let grpc = tokio::spawn(router.serve_with_incoming_shutdown(
        // The incoming stream sets TCP_NODELAY: the server builder's setting
        // is ignored for a listener passed in (see raft-store service.rs).
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        },
    ));
    tokio::spawn(async move { api.ensure_system_namespaces().await });
    let supervisor_stop = tokio_util::sync::CancellationToken::new();
    let supervisor = tokio::spawn(
        crate::supervisor::Supervisor {
            node: node.clone(),
            endpoint: advertise.clone(),
            token: token.clone(),
            controllers: rafter_controllers::Options {
                service_cidr: args.service_cidr,
                pod_cidr: args.pod_cidr,
                node_grace_period: args.node_grace_period,
                pod_eviction_timeout: args.pod_eviction_timeout,
            },
        }
        .run(supervisor_stop.clone()),
    );
    if let Some(l) = metrics_listener {
        tokio::spawn(serve_metrics(node.clone(), l, stop_rx.clone()));
    }
    if let Some(seeds) = join {
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = join_cluster(&node, &seeds, &token).await {
                tracing::error!("joining the cluster failed: {e:#}");
            }
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        r = &mut Box::pin(grpc) => {
            bail!("gRPC server stopped: {:?}", r);
        }
    }
    supervisor_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), supervisor).await;
    let _ = stop_tx.send(true);
    node.shutdown().await;
    drop(data_dir);
    Ok(())
}

async fn fetch_cluster_id(seeds: &[String], token: &str) -> anyhow::Result<u64> {
    let client = rafter_client::Client::connect_with_options(seeds, token_options(token)).await?;
    let mut last = None;
    for seed in seeds {
        match client.status_of(seed).await {
            Ok(s) => return Ok(s.header.map(|h| h.cluster_id).unwrap_or(0)),
            Err(e) => last = Some(e),
        }
    }
    bail!(
        "cannot reach any master given to --join ({}): {}",
        seeds.join(", "),
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// Asks the cluster to add this master (as learner, then voter) until it
/// is a voter. Also finishes a join interrupted by a restart.
async fn join_cluster(node: &Arc<Node>, seeds: &[String], token: &str) -> anyhow::Result<()> {
    let client = rafter_client::Client::connect_with_options(seeds, token_options(token)).await?;
    loop {
        if node
            .members()
            .iter()
            .any(|(id, _, learner)| *id == node.id && !learner)
        {
            tracing::info!("member of the cluster as a voter");
            return Ok(());
        }
        match client.member_add(&node.name, &node.addr).await {
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("join through {} not done yet: {e}", seeds.join(","));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn token_options(token: &str) -> rafter_client::ClientOptions {
    rafter_client::ClientOptions {
        token: Some(token.to_string()),
        ..Default::default()
    }
}

/// A minimal HTTP/1.0 responder: every request gets the metrics text.
async fn serve_metrics(
    node: Arc<Node>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((mut stream, _peer)): Result<(tokio::net::TcpStream, SocketAddr), _> = conn else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let status = node.status();
            node.shared.metrics.db_size_bytes.set(status.db_size as i64);
            let body = node.shared.metrics.render();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_is_parsed_and_checked() {
        let m = parse_initial_cluster("m1=127.0.0.1:7001, m2=127.0.0.1:7002").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].addr, "127.0.0.1:7002");
        assert!(
            parse_initial_cluster("m1")
                .unwrap_err()
                .to_string()
                .contains("name=host:port")
        );
        assert!(parse_initial_cluster("m1=h:x").is_err());
        assert!(parse_initial_cluster("m1=a:1,m1=b:2").is_err());
        assert!(parse_initial_cluster("").is_err());
        let a = cluster_id_of(&parse_initial_cluster("a=h:1,b=h:2").unwrap());
        let b = cluster_id_of(&parse_initial_cluster("b=h:2,a=h:1").unwrap());
        assert_eq!(a, b);
    }

    #[derive(Debug, clap::Parser)]
    struct Server {
        #[command(flatten)]
        args: ServerArgs,
    }

    fn parse(extra: &[&str]) -> Result<ServerArgs, clap::Error> {
        use clap::Parser;
        let base = [
            "rafter",
            "--name",
            "m1",
            "--data-dir",
            "/tmp/x",
            "--listen",
            "127.0.0.1:1",
        ];
        Server::try_parse_from(base.iter().chain(extra)).map(|s| s.args)
    }

    #[test]
    fn the_leader_keeps_one_proposal_batch_in_flight_unless_told_otherwise() {
        assert_eq!(parse(&[]).unwrap().proposal_batches_in_flight, 1);
        let two = parse(&["--proposal-batches-in-flight", "2"]).unwrap();
        assert_eq!(two.proposal_batches_in_flight, 2);
        let err = parse(&["--proposal-batches-in-flight", "0"]).unwrap_err();
        assert!(
            err.to_string().contains("--proposal-batches-in-flight"),
            "{err}"
        );
    }
}
