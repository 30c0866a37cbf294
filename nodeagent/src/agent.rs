//! The agent's main loop: join, register the node, set up its pod network,
//! then heartbeat and run the pod manager until shut down.
//!
//! Shutting the agent down (or killing it) leaves the containers running:
//! a restarted agent adopts them (`pods.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rafter_client::informer;
use rafter_client::{Client, ClientOptions};
use rafter_proto::api;
use tokio_util::sync::CancellationToken;

use crate::dns;
use crate::join;
use crate::lease::LeaseRenewer;
use crate::node::{self, NodeFacts};
use crate::pods::{PodManager, PodManagerOptions};
use crate::proxy;
use crate::runtime::ContainerRuntime;

/// How the agent runs (`rafter agent` flags).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Masters to join through (host:port).
    pub servers: Vec<String>,
    /// Bootstrap token; needed only when the data dir has no credential.
    pub token: Option<String>,
    /// The node's name.
    pub name: String,
    /// Where the credential, master list and pod volumes live.
    pub data_dir: PathBuf,
    pub max_pods: u32,
    /// Lease renewal interval.
    pub heartbeat: Duration,
    /// The node's InternalIP (default: the address that routes to a master).
    pub node_ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    /// How often every pod is looked at even when nothing changed.
    pub sync_period: Duration,
    /// Where the agent serves logs and exec for the masters (0: any free
    /// port, reported in the Node's status).
    pub agent_listen: std::net::SocketAddr,
    /// Proxy Service traffic (`clusterIP:port` to ready endpoints) and
    /// answer service DNS for this node's pods (`proxy.rs`, `dns.rs`).
    pub services: bool,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

/// Agent failures.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Join(#[from] join::JoinError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: rafter_client::Error,
    },
    #[error("cannot listen on {addr} for the masters (--agent-port): {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("node {node} has an invalid podCIDR {cidr:?}: {why}")]
    PodCidr {
        node: String,
        cidr: String,
        why: String,
    },
}

fn api(what: &str) -> impl FnOnce(rafter_client::Error) -> AgentError + '_ {
    move |source| AgentError::Api {
        what: what.to_string(),
        source,
    }
}

/// The name of a node's pod network.
pub fn network_name(node: &str) -> String {
    format!("rafter-{node}")
}

/// Runs the agent until `shutdown`.
pub async fn run(
    options: AgentOptions,
    runtime: Arc<dyn ContainerRuntime>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let saved = join::load_or_join(
        &options.data_dir,
        &options.servers,
        options.token.as_deref(),
        &options.name,
    )
    .await?;
    let endpoints = join::endpoints(&saved, &options.servers);
    tracing::info!(node = %options.name, masters = %endpoints.join(","), "joined");
    let client = Client::connect_with_options(
        endpoints.clone(),
        ClientOptions {
            token: Some(saved.credential.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(api("connecting to the masters"))?;

    let listener = tokio::net::TcpListener::bind(options.agent_listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: options.agent_listen.to_string(),
            source,
        })?;
    let agent_port = listener
        .local_addr()
        .map_err(|source| AgentError::Listen {
            addr: options.agent_listen.to_string(),
            source,
        })?
        .port();
    let service = crate::server::AgentService {
        runtime: runtime.clone(),
        node: options.name.clone(),
    }
    .service(saved.credential.clone());
    let server_stop = shutdown.clone();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "the agent's gRPC server stopped");
        }
    });

    let runtime_version = runtime.version().await?;
    runtime.ensure_sandbox_image().await?;
    let ip = options
        .node_ip
        .or_else(|| endpoints.iter().find_map(|m| node::route_ip(m)))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let facts = NodeFacts {
        name: options.name.clone(),
        ip,
        cpus: node::cpus(),
        memory_bytes: node::memory_bytes(),
        max_pods: options.max_pods,
        labels: options.labels.clone(),
        runtime_version,
        agent_port,
        os_image: node::os_image(),
        kernel_version: node::kernel_version(),
    };
    facts
        .register(&client)
        .await
        .map_err(api("registering the node"))?;
    tracing::info!(node = %options.name, %ip, agent_port, "node registered");

    // The pod network needs the node's podCIDR (node IPAM assigns it).
    let (nodes, mut node_events) = informer::start_selected::<api::Node>(
        client.clone(),
        "",
        "",
        &format!("metadata.name={}", options.name),
    );
    let pod_cidr = loop {
        if let Some(n) = nodes.get("", &options.name)
            && let Some(cidr) = n
                .spec
                .as_ref()
                .map(|s| s.pod_cidr.clone())
                .filter(|c| !c.is_empty())
        {
            break cidr;
        }
        tokio::select! {
            _ = node_events.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                tracing::info!(node = %options.name, "waiting for the node's podCIDR (assigned by the leader's node IPAM)");
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
    };
    let subnet: ipnet::Ipv4Net =
        pod_cidr
            .parse()
            .map_err(|e: ipnet::AddrParseError| AgentError::PodCidr {
                node: options.name.clone(),
                cidr: pod_cidr.clone(),
                why: e.to_string(),
            })?;
    let gateway = subnet.hosts().next().ok_or_else(|| AgentError::PodCidr {
        node: options.name.clone(),
        cidr: pod_cidr.clone(),
        why: "the range has no host addresses".into(),
    })?;
    let network = network_name(&options.name);
    runtime
        .ensure_network(&network, subnet.trunc(), gateway)
        .await?;
    tracing::info!(node = %options.name, %network, %subnet, "pod network ready");

    // Heartbeat: the lease every interval, the Node status when it is not
    // what this agent says (e.g. the node controller marked it Unknown),
    // the master list at start and every 30 beats (the client fails over
    // between the masters there are now).
    let heartbeat = {
        let client = client.clone();
        let nodes = nodes.clone();
        let facts = facts.clone();
        let shutdown = shutdown.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let mut lease = LeaseRenewer::new(&options.name, options.heartbeat * 10);
            let mut tick = tokio::time::interval(options.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats: u64 = 0;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                beats += 1;
                if let Err(e) = lease.renew(&client).await {
                    tracing::warn!(error = %e, "lease not renewed");
                }
                if let Some(n) = nodes.get("", &options.name)
                    && !facts.status_is_current(&n)
                {
                    match facts.post_status(&client, &n).await {
                        Ok(_) => tracing::info!(node = %options.name, "node status posted"),
                        Err(e) => tracing::warn!(error = %e, "node status not posted"),
                    }
                }
                if beats % 30 == 1 {
                    match client.masters().await {
                        Ok(m) if !m.is_empty() => {
                            // Fail over between the masters there are now,
                            // and start from them after a restart.
                            if let Err(e) = client.set_endpoints(&m) {
                                tracing::warn!(error = %e, masters = ?m, "master list not usable");
                                continue;
                            }
                            if let Err(e) = join::save_masters(&options.data_dir, &m) {
                                tracing::warn!(error = %e, "master list not saved");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "master list not refreshed"),
                    }
                }
            }
        })
    };

    // Services: the proxy on every clusterIP, DNS on the pod network's
    // gateway for the pods.
    let mut dns_servers = Vec::new();
    let services = if options.services {
        let (services, service_events) = informer::start::<api::Service>(client.clone(), "", "");
        let (endpoints, endpoint_events) =
            informer::start::<api::Endpoints>(client.clone(), "", "");
        let dns_addr = std::net::SocketAddr::from((gateway, 53));
        match dns::bind(dns_addr).await {
            Ok(socket) => {
                tracing::info!(%dns_addr, "service DNS for pods");
                dns_servers.push(gateway.to_string());
                tokio::spawn(dns::serve(
                    socket,
                    options.cluster_domain.clone(),
                    services.clone(),
                    endpoints.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => tracing::warn!(
                %dns_addr,
                error = %e,
                "cannot serve service DNS (needs root for port 53); pods use Docker's resolver only"
            ),
        }
        Some(tokio::spawn(proxy::run(
            proxy::Watched {
                services,
                service_events,
                endpoints,
                endpoint_events,
            },
            options.name.clone(),
            shutdown.clone(),
        )))
    } else {
        None
    };

    // Pods bound to this node.
    let (pods, pod_events) = informer::start_selected::<api::Pod>(
        client.clone(),
        "",
        "",
        &format!("spec.nodeName={}", options.name),
    );
    let manager = Arc::new(PodManager::new(
        runtime.clone(),
        client.clone(),
        pods.clone(),
        PodManagerOptions {
            node: options.name.clone(),
            host_ip: ip.to_string(),
            network,
            pods_dir: options.data_dir.join("pods"),
            dns_servers,
            cluster_domain: options.cluster_domain.clone(),
        },
    ));
    pods.wait_synced().await;
    manager
        .run(pod_events, options.sync_period, shutdown.clone())
        .await;
    heartbeat.abort();
    if let Some(proxy) = services {
        // It removes its interface when told to stop.
        let _ = tokio::time::timeout(Duration::from_secs(5), proxy).await;
    }
    Ok(())
}
