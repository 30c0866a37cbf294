//! The scheduler's view of one node: the Node object and the sum of what
//! the pods placed on it use (requests, pod count, host ports, replicas per
//! owner), kept up to date as pods are added and removed, so that a filter
//! or a score looks at one [`NodeInfo`] and never walks the pods.
//!
//! "Placed" covers pods the API shows bound to the node and pods the
//! scheduler has *assumed* there while their binding is being written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rafter_proto::api;
use rafter_proto::object::Object;

use crate::resources::{self, Resources};

/// A pod's (namespace, name).
pub type PodKey = (String, String);

/// A host port a pod's container asks for: (protocol, host IP, port). An
/// empty host IP means every address (0.0.0.0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods asking for these ports could not share a node: same
    /// protocol and port, and the same address or either one every address.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || wildcard(&self.ip) || wildcard(&other.ip))
    }
}

/// What the scheduler needs to know of a pod, computed once per version.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Shared with the informer's cache and its other subscribers.
    pub pod: Arc<api::Pod>,
    pub key: PodKey,
    pub requests: Resources,
    /// (cpu, memory) with kube-scheduler's defaults, for scoring.
    pub non_zero: (i128, i128),
    pub host_ports: Vec<HostPort>,
    /// The uid of the controller that owns it (its ReplicaSet), if any.
    pub owner: Option<String>,
}

impl PodInfo {
    pub fn new(pod: impl Into<Arc<api::Pod>>) -> PodInfo {
        let pod: Arc<api::Pod> = pod.into();
        let m = pod.metadata();
        let key = (m.namespace.clone(), m.name.clone());
        let owner = m
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let host_ports = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| &c.ports)
            .filter(|p| p.host_port > 0)
            .map(|p| HostPort {
                protocol: if p.protocol.is_empty() {
                    "TCP".into()
                } else {
                    p.protocol.clone()
                },
                ip: p.host_ip.clone(),
                port: p.host_port,
            })
            .collect();
        PodInfo {
            requests: resources::pod_requests(&pod),
            non_zero: resources::non_zero_requests(&pod),
            host_ports,
            owner,
            key,
            pod,
        }
    }

    /// The node the pod is bound to ("" when unbound).
    pub fn node_name(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or("")
    }
}

/// One node and the pods placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The Node object; `None` while pods name a node the scheduler has not
    /// seen (they still count, should it appear).
    pub node: Option<api::Node>,
    pub allocatable: Resources,
    /// Sum of the requests of the pods placed here.
    pub requested: Resources,
    /// Sum of their (cpu, memory) for scoring, defaults included.
    pub non_zero_requested: (i128, i128),
    pub pods: HashSet<PodKey>,
    pub host_ports: HashMap<HostPort, u32>,
    /// Pods placed here per controller uid, for spreading replicas.
    pub owners: HashMap<String, u32>,
}

impl NodeInfo {
    /// A node with nothing placed on it yet.
    pub fn new(node: api::Node) -> NodeInfo {
        let mut info = NodeInfo::default();
        info.set_node(node);
        info
    }

    /// Replaces the Node object (a heartbeat, a label, a cordon).
    pub fn set_node(&mut self, node: api::Node) {
        self.allocatable = resources::node_allocatable(&node);
        self.node = Some(node);
    }

    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .map(|n| n.metadata().name.as_str())
            .unwrap_or("")
    }

    /// Counts `pod` as placed here.
    pub fn add_pod(&mut self, pod: &PodInfo) {
        if !self.pods.insert(pod.key.clone()) {
            return;
        }
        self.requested.add(&pod.requests);
        self.non_zero_requested.0 += pod.non_zero.0;
        self.non_zero_requested.1 += pod.non_zero.1;
        for p in &pod.host_ports {
            *self.host_ports.entry(p.clone()).or_insert(0) += 1;
        }
        if let Some(o) = &pod.owner {
            *self.owners.entry(o.clone()).or_insert(0) += 1;
        }
    }

    /// Stops counting `pod` (the same version that was added).
    pub fn remove_pod(&mut self, pod: &PodInfo) {
        if !self.pods.remove(&pod.key) {
            return;
        }
        self.requested.sub(&pod.requests);
        self.non_zero_requested.0 -= pod.non_zero.0;
        self.non_zero_requested.1 -= pod.non_zero.1;
        for p in &pod.host_ports {
            if let Some(n) = self.host_ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.host_ports.remove(p);
                }
            }
        }
        if let Some(o) = &pod.owner
            && let Some(n) = self.owners.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(o);
            }
        }
    }

    /// Pods of controller `owner` placed here.
    pub fn replicas_of(&self, owner: &str) -> u32 {
        self.owners.get(owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pod named `name` with one container requesting `cpu` and `memory`.
    pub(crate) fn pod(name: &str, cpu: &str, memory: &str) -> api::Pod {
        let mut requests = std::collections::BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_string(), cpu.to_string());
        }
        if !memory.is_empty() {
            requests.insert("memory".to_string(), memory.to_string());
        }
        api::Pod {
            metadata: Some(api::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                resource_version: "1".into(),
                ..Default::default()
            }),
            spec: Some(api::PodSpec {
                containers: vec![api::Container {
                    name: "c".into(),
                    image: "demo".into(),
                    resources: Some(api::ResourceRequirements {
                        requests,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A Ready node with `cpu`, `memory` and `pods` allocatable.
    pub(crate) fn node(name: &str, cpu: &str, memory: &str, pods: &str) -> api::Node {
        api::Node {
            metadata: Some(api::ObjectMeta {
                name: name.into(),
                resource_version: "1".into(),
                labels: [("rafter.io/hostname".to_string(), name.to_string())].into(),
                ..Default::default()
            }),
            spec: Some(api::NodeSpec::default()),
            status: Some(api::NodeStatus {
                allocatable: [
                    ("cpu".to_string(), cpu.to_string()),
                    ("memory".to_string(), memory.to_string()),
                    ("pods".to_string(), pods.to_string()),
                ]
                .into(),
                conditions: vec![api::Condition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn with_owner(mut p: api::Pod, uid: &str) -> api::Pod {
        p.metadata_mut().owner_references = vec![api::OwnerReference {
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }];
        p
    }

    pub(crate) fn with_host_port(mut p: api::Pod, port: i32) -> api::Pod {
        p.spec.as_mut().unwrap().containers[0].ports = vec![api::ContainerPort {
            container_port: 80,
            host_port: port,
            ..Default::default()
        }];
        p
    }

    #[test]
    fn host_ports_conflict_on_same_protocol_port_and_overlapping_address() {
        let hp = |protocol: &str, ip: &str, port| HostPort {
            protocol: protocol.into(),
            ip: ip.into(),
            port,
        };
        assert!(hp("TCP", "", 80).conflicts(&hp("TCP", "10.0.0.1", 80)));
        assert!(hp("TCP", "10.0.0.1", 80).conflicts(&hp("TCP", "0.0.0.0", 80)));
        assert!(hp("TCP", "10.0.0.1", 80).conflicts(&hp("TCP", "10.0.0.1", 80)));
        assert!(!hp("TCP", "10.0.0.1", 80).conflicts(&hp("TCP", "10.0.0.2", 80)));
        assert!(!hp("TCP", "", 80).conflicts(&hp("UDP", "", 80)));
        assert!(!hp("TCP", "", 80).conflicts(&hp("TCP", "", 81)));
    }

    #[test]
    fn pod_info_reads_controller_owner_and_host_ports() {
        let p = PodInfo::new(with_host_port(with_owner(pod("a", "1", ""), "rs-1"), 8080));
        assert_eq!(p.owner.as_deref(), Some("rs-1"));
        assert_eq!(
            p.host_ports,
            vec![HostPort {
                protocol: "TCP".into(),
                ip: "".into(),
                port: 8080
            }]
        );
        assert_eq!(p.key, ("default".to_string(), "a".to_string()));
    }

    #[test]
    fn adding_and_removing_pods_keeps_the_sums() {
        let mut n = NodeInfo::new(node("n1", "4", "8Gi", "110"));
        let a = PodInfo::new(with_host_port(with_owner(pod("a", "1", "1Gi"), "rs"), 80));
        let b = PodInfo::new(with_owner(pod("b", "500m", ""), "rs"));
        n.add_pod(&a);
        n.add_pod(&b);
        n.add_pod(&b); // counted once
        assert_eq!(n.requested.get("cpu"), 1500);
        assert_eq!(n.pods.len(), 2);
        assert_eq!(n.replicas_of("rs"), 2);
        assert_eq!(n.host_ports.len(), 1);
        n.remove_pod(&a);
        assert_eq!(n.requested.get("cpu"), 500);
        assert_eq!(n.requested.get("memory"), 0);
        assert_eq!(n.replicas_of("rs"), 1);
        assert!(n.host_ports.is_empty());
        n.remove_pod(&a); // not there any more: no change
        assert_eq!(n.requested.get("cpu"), 500);
    }
}
