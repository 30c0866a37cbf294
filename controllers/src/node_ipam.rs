//! Node IPAM: gives each node a spec.podCIDR, one /24 (an IPv6 pool: one
//! /64) of the cluster's pod CIDR (`--pod-cidr`, default 10.244.0.0/16), so
//! the node can hand its pods addresses nobody else uses.
//!
//! The CIDRs in use are read from the node cache; the ones this controller
//! has just written but its cache does not show yet are remembered, and one
//! worker assigns them one at a time, so no CIDR is handed out twice. Every
//! write is a compare-and-swap on the node. A deleted node's CIDR is free
//! again as soon as it leaves the cache.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use rafter_client::events::{EventType, Recorder};
use rafter_client::informer::{Cache, Event, Informers};
use rafter_client::{Client, Error};
use rafter_proto::api;
use tokio_util::sync::CancellationToken;

use crate::informer_events::{forward, object};
use crate::runtime::{self, Action, Key, Queue, Reconciler};

/// The prefix length of one node's CIDR inside `pool`.
pub fn node_prefix(pool: &IpNet) -> u8 {
    let per_node = match pool {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 64,
    };
    per_node.max(pool.prefix_len())
}

/// The first per-node CIDR of `pool` overlapping none of `taken`.
pub fn choose(pool: &IpNet, taken: &BTreeSet<IpNet>) -> Option<IpNet> {
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    pool.subnets(node_prefix(pool))
        .ok()?
        .find(|c| !taken.iter().any(|t| overlaps(c, t)))
}

fn pod_cidr(node: &api::Node) -> &str {
    node.spec
        .as_ref()
        .map(|s| s.pod_cidr.as_str())
        .unwrap_or("")
}

/// The node IPAM controller.
pub struct NodeIpam {
    client: Client,
    nodes: Cache<api::Node>,
    recorder: Recorder,
    pool: IpNet,
    /// CIDRs written by this controller, by node, until the cache shows them.
    written: Mutex<HashMap<String, IpNet>>,
}

impl NodeIpam {
    fn taken(&self, except: &str) -> BTreeSet<IpNet> {
        let mut taken: BTreeSet<IpNet> = self
            .nodes
            .list()
            .iter()
            .filter_map(|n| pod_cidr(n).parse().ok())
            .collect();
        let written = self.written.lock().expect("written lock");
        taken.extend(
            written
                .iter()
                .filter(|(node, _)| node.as_str() != except)
                .map(|(_, c)| *c),
        );
        taken
    }
}

impl Reconciler for NodeIpam {
    fn name(&self) -> &'static str {
        "node-ipam"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let name = &key.1;
        let Some(node) = self.nodes.get("", name) else {
            self.written.lock().expect("written lock").remove(name);
            return Ok(Action::Done);
        };
        if !pod_cidr(&node).is_empty() {
            self.written.lock().expect("written lock").remove(name);
            return Ok(Action::Done);
        }
        if let Some(mine) = self.written.lock().expect("written lock").get(name) {
            // Written, the cache has not caught up: wait for its event.
            tracing::debug!(node = %name, cidr = %mine, "pod CIDR written; waiting for the cache");
            return Ok(Action::RequeueAfter(Duration::from_secs(1)));
        }
        let Some(cidr) = choose(&self.pool, &self.taken(name)) else {
            self.recorder
                .record(
                    &node,
                    EventType::Warning,
                    "CIDRNotAvailable",
                    &format!(
                        "Node {name} status is now: CIDRNotAvailable (every /{} of {} is in use)",
                        node_prefix(&self.pool),
                        self.pool
                    ),
                )
                .await;
            return Ok(Action::RequeueAfter(Duration::from_secs(30)));
        };
        let mut next = node.clone();
        next.spec.get_or_insert_default().pod_cidr = cidr.to_string();
        self.client.update(&next).await?;
        self.written
            .lock()
            .expect("written lock")
            .insert(name.clone(), cidr);
        tracing::info!(node = %name, %cidr, "assigned pod CIDR");
        self.recorder
            .record(
                &node,
                EventType::Normal,
                "CIDRAssigned",
                &format!("Node {name} was given pod CIDR {cidr}"),
            )
            .await;
        Ok(Action::Done)
    }
}

/// Runs node IPAM until `shutdown`.
pub async fn run(client: Client, informers: &Informers, pool: IpNet, shutdown: CancellationToken) {
    let (nodes, events) = informers.start::<api::Node>("", "");
    let queue = Queue::new();
    let q = queue.clone();
    let cache = nodes.clone();
    forward(events, shutdown.clone(), move |e: Event<api::Node>| {
        q.add(runtime::key_of(object(&e)));
        if let Event::Deleted(_) = e {
            // A CIDR came free: nodes still waiting for one may get it.
            for n in cache.list() {
                if pod_cidr(&n).is_empty() {
                    q.add(runtime::key_of(&n));
                }
            }
        }
    });
    tokio::select! {
        _ = nodes.wait_synced() => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = NodeIpam {
        recorder: Recorder::new(client.clone(), "node-ipam-controller"),
        client,
        nodes,
        pool,
        written: Mutex::default(),
    };
    // One worker: assignments are decided one at a time.
    runtime::run(Arc::new(controller), queue, 1, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn each_node_gets_a_different_slash_24() {
        let pool = net("10.244.0.0/16");
        let mut taken = BTreeSet::new();
        for i in 0..256 {
            let c = choose(&pool, &taken).expect("a free /24");
            assert_eq!(c.prefix_len(), 24);
            assert!(pool.contains(&c.network()));
            assert!(taken.insert(c), "{c} handed out twice (round {i})");
        }
        assert_eq!(choose(&pool, &taken), None, "the pool is used up");
        // A deleted node's CIDR is free again.
        taken.remove(&net("10.244.7.0/24"));
        assert_eq!(choose(&pool, &taken), Some(net("10.244.7.0/24")));
    }

    #[test]
    fn cidrs_overlapping_a_taken_one_are_skipped() {
        let pool = net("10.244.0.0/16");
        // Someone set a /23 by hand: both /24s inside it are taken.
        let taken = BTreeSet::from([net("10.244.0.0/23")]);
        assert_eq!(choose(&pool, &taken), Some(net("10.244.2.0/24")));
    }

    #[test]
    fn small_and_ipv6_pools() {
        assert_eq!(node_prefix(&net("10.0.0.0/26")), 26);
        assert_eq!(
            choose(&net("10.0.0.0/26"), &BTreeSet::new()),
            Some(net("10.0.0.0/26"))
        );
        assert_eq!(
            choose(&net("fd00::/48"), &BTreeSet::new()),
            Some(net("fd00::/64"))
        );
    }
}
