//! The agent's Node object: what this machine offers (capacity from
//! /proc, labels, addresses, versions), registered when the agent starts and
//! kept Ready while it runs.
//!
//! The status is written when it changes (registration, a Ready condition
//! somebody else turned Unknown, a new address) and otherwise left alone:
//! liveness is the lease's job (`lease.rs`). A fresh lastHeartbeatTime is
//! written with every status write, as the kubelet does.

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::time::SystemTime;

use rafter_client::{Client, Error};
use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;

/// What the agent says about its node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub ip: IpAddr,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    pub labels: BTreeMap<String, String>,
    pub runtime_version: String,
    /// Where the agent serves logs and exec for the masters.
    pub agent_port: u16,
    /// /etc/os-release's PRETTY_NAME and the kernel release, read once at
    /// start-up (the status is compared every heartbeat).
    pub os_image: String,
    pub kernel_version: String,
}

/// The memory of this machine (MemTotal of /proc/meminfo), in bytes.
pub fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// The number of CPUs this process may use.
pub fn cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// The address this machine uses to reach `master` ("host:port"): the
/// node's InternalIP unless given. No packet is sent (a UDP connect only
/// picks the route).
pub fn route_ip(master: &str) -> Option<IpAddr> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(master)
        .ok()?
        .next()?;
    let socket = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The node's InternalIP: `given` (`--node-ip`), else the address that
/// routes to the first of `masters` that resolves, else 127.0.0.1. The
/// agent registers it; the process runtime gives it to pods as their IP.
pub fn node_ip(given: Option<IpAddr>, masters: &[String]) -> IpAddr {
    given
        .or_else(|| masters.iter().find_map(|m| route_ip(m)))
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

pub fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The Ready condition of a healthy agent, heartbeat now.
pub fn ready_condition(now: &str, since: &str) -> api::Condition {
    api::Condition {
        r#type: "Ready".into(),
        status: "True".into(),
        reason: "AgentReady".into(),
        message: "rafter agent is posting ready status".into(),
        last_heartbeat_time: now.into(),
        last_transition_time: since.into(),
        ..Default::default()
    }
}

impl NodeFacts {
    /// The node's labels: the given ones plus hostname, os and arch.
    pub fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert("rafter.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), std::env::consts::OS.into());
        labels.insert("kubernetes.io/arch".into(), std::env::consts::ARCH.into());
        labels
    }

    /// The status this node reports, with the Ready condition's transition
    /// time kept from `previous` when it was already Ready.
    pub fn status(&self, previous: Option<&api::NodeStatus>) -> api::NodeStatus {
        let now = format_rfc3339_utc(SystemTime::now());
        let since = previous
            .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
            .filter(|c| c.status == "True")
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        let capacity: BTreeMap<String, String> = [
            ("cpu".to_string(), self.cpus.to_string()),
            (
                "memory".to_string(),
                format!("{}Ki", self.memory_bytes / 1024),
            ),
            ("pods".to_string(), self.max_pods.to_string()),
        ]
        .into();
        api::NodeStatus {
            allocatable: capacity.clone(),
            capacity,
            conditions: vec![ready_condition(&now, &since)],
            addresses: vec![
                api::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: self.ip.to_string(),
                },
                api::NodeAddress {
                    r#type: "Hostname".into(),
                    address: self.name.clone(),
                },
            ],
            node_info: Some(api::NodeSystemInfo {
                agent_version: format!("rafter-agent/{}", env!("CARGO_PKG_VERSION")),
                container_runtime_version: self.runtime_version.clone(),
                os_image: self.os_image.clone(),
                kernel_version: self.kernel_version.clone(),
                operating_system: std::env::consts::OS.into(),
                architecture: std::env::consts::ARCH.into(),
            }),
            daemon_endpoints: Some(api::NodeDaemonEndpoints {
                agent_endpoint: Some(api::DaemonEndpoint {
                    port: i32::from(self.agent_port),
                }),
            }),
        }
    }

    /// Whether `node`'s status already says what this agent would (apart
    /// from heartbeat times).
    pub fn status_is_current(&self, node: &api::Node) -> bool {
        let Some(s) = &node.status else { return false };
        let wanted = self.status(Some(s));
        let ready_ok = s
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True");
        ready_ok
            && s.capacity == wanted.capacity
            && s.addresses == wanted.addresses
            && s.daemon_endpoints == wanted.daemon_endpoints
            && s.node_info.as_ref().map(|i| &i.container_runtime_version)
                == wanted
                    .node_info
                    .as_ref()
                    .map(|i| &i.container_runtime_version)
    }

    /// Registers the node (or takes over its existing object, keeping its
    /// spec: podCIDR, taints, cordon) and reports the status. Returns the
    /// stored node.
    pub async fn register(&self, client: &Client) -> Result<api::Node, Error> {
        let mut node = api::Node {
            spec: Some(api::NodeSpec::default()),
            status: Some(self.status(None)),
            ..Default::default()
        };
        let m = node.metadata_mut();
        m.name = self.name.clone();
        m.labels = self.all_labels();
        loop {
            match client.create(&node).await {
                Ok(n) => return Ok(n),
                Err(e) if e.is_reason("AlreadyExists") => {
                    let current: api::Node = client.get_object("", &self.name).await?;
                    match self.post_status(client, &current).await {
                        Ok(n) => return Ok(n),
                        Err(e) if e.is_reason("Conflict") => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes this agent's status over `current`'s.
    pub async fn post_status(
        &self,
        client: &Client,
        current: &api::Node,
    ) -> Result<api::Node, Error> {
        let mut next = current.clone();
        next.status = Some(self.status(current.status.as_ref()));
        client.update_status(&next).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "n1".into(),
            ip: "10.0.0.5".parse().unwrap(),
            cpus: 2,
            memory_bytes: 4 << 30,
            max_pods: 110,
            labels: [("zone".to_string(), "a".to_string())].into(),
            runtime_version: "docker://20.10.24".into(),
            agent_port: 10250,
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel_version: "6.1.0".into(),
        }
    }

    #[test]
    fn the_node_ip_is_the_given_one_else_the_route_to_a_master() {
        let given: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(node_ip(Some(given), &["127.0.0.1:7000".into()]), given);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            node_ip(
                None,
                &["no-such-host.invalid:1".into(), "127.0.0.1:7000".into()]
            ),
            local
        );
        assert_eq!(node_ip(None, &[]), local);
    }

    #[test]
    fn the_status_reports_capacity_addresses_and_ready() {
        let f = facts();
        let s = f.status(None);
        assert_eq!(s.capacity["cpu"], "2");
        assert_eq!(s.capacity["memory"], "4194304Ki");
        assert_eq!(s.capacity["pods"], "110");
        assert_eq!(s.addresses[0].address, "10.0.0.5");
        assert_eq!(s.conditions[0].status, "True");
        let labels = f.all_labels();
        assert_eq!(labels["rafter.io/hostname"], "n1");
        assert_eq!(labels["zone"], "a");
        let node = api::Node {
            status: Some(s),
            ..Default::default()
        };
        assert!(f.status_is_current(&node));
        let mut unknown = node.clone();
        unknown.status.as_mut().unwrap().conditions[0].status = "Unknown".into();
        assert!(!f.status_is_current(&unknown));
    }

    #[test]
    fn this_machine_has_memory_and_cpus() {
        assert!(memory_bytes() > 0);
        assert!(cpus() >= 1);
        assert!(route_ip("127.0.0.1:1").is_some());
    }
}
