//! Rafter's controllers: reconcile loops that run on the Raft leader only,
//! started and stopped by the master's leader supervisor, each write fenced
//! with the Raft term they were started under (the client they are given
//! carries it).
//!
//! Each controller is one file with a `reconcile` and an `error_policy`
//! ([`runtime::Reconciler`]); it reads through informer caches, writes every
//! change as a compare-and-swap on resourceVersion, and never calls another
//! controller. [`run`] starts them all.

pub mod bootstrap_token;
pub mod deployment;
pub mod endpoints;
pub mod gc;
mod informer_events;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod runtime;
pub mod workload_owner;

use std::time::Duration;

use ipnet::IpNet;
use rafter_client::Client;
use rafter_client::informer::Informers;
use tokio_util::sync::CancellationToken;

/// Settings of the controllers (`rafter server` flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Where Service cluster IPs come from (`--service-cidr`).
    pub service_cidr: IpNet,
    /// Where node pod CIDRs come from (`--pod-cidr`), one /24 per node.
    pub pod_cidr: IpNet,
    /// A node that has not heartbeated for this long is NotReady.
    pub node_grace_period: Duration,
    /// Pods of a NotReady node are deleted after this long.
    pub pod_eviction_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            service_cidr: "10.96.0.0/12".parse().expect("valid CIDR"),
            pod_cidr: "10.244.0.0/16".parse().expect("valid CIDR"),
            node_grace_period: Duration::from_secs(5),
            pod_eviction_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs every controller until `shutdown` is cancelled, reading through
/// `informers` (shared with the scheduler of the same term) and writing
/// through `client`.
pub async fn run(
    client: Client,
    informers: &Informers,
    options: Options,
    shutdown: CancellationToken,
) {
    tokio::join!(
        // Workloads.
        replicaset::run(client.clone(), informers, shutdown.clone()),
        deployment::run(client.clone(), informers, shutdown.clone()),
        // Cluster infrastructure: nodes, endpoints, namespaces, ownership.
        node_lifecycle::run(
            client.clone(),
            informers,
            options.node_grace_period,
            options.pod_eviction_timeout,
            shutdown.clone(),
        ),
        node_ipam::run(
            client.clone(),
            informers,
            options.pod_cidr,
            shutdown.clone()
        ),
        endpoints::run(client.clone(), informers, shutdown.clone()),
        namespace::run(client.clone(), informers, shutdown.clone()),
        gc::run(client.clone(), informers, shutdown.clone()),
        bootstrap_token::run(client.clone(), informers, shutdown.clone()),
    );
}
