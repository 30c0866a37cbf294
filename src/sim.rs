//! Simulated nodes, for tests and benchmarks only (like Kubernetes'
//! kubemark hollow nodes): they register Nodes with a chosen capacity,
//! heartbeat, and move the pods bound to them through Pending → Running →
//! Ready as a real agent would — without running anything. A pod deleted
//! gracefully is deleted for good at once (grace 0), as an agent does when
//! its containers have stopped.
//!
//! The heartbeat is the agent's contract with the node-lifecycle
//! controller, the same as the real agent's: every `heartbeat` the node's
//! Lease in `rafter-node-lease` is renewed, and the Ready condition is
//! posted again when it is not True. A node whose heartbeats stop is marked
//! NotReady by the controller after its grace period.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rafter_client::informer::{self, Event};
use rafter_client::{Client, DeleteOptions};
use rafter_nodeagent::lease::LeaseRenewer;
use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the simulated nodes look like.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix>-1` ... `<prefix>-<count>`.
    pub prefix: String,
    /// Capacity per node, as quantities ("4", "8Gi").
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// Extra node labels.
    pub labels: BTreeMap<String, String>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// How long a bound pod takes to become Running and Ready.
    pub start_delay: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            count: 1,
            prefix: "sim".into(),
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            labels: BTreeMap::new(),
            heartbeat: Duration::from_secs(1),
            start_delay: Duration::ZERO,
        }
    }
}

impl SimOptions {
    /// The names of the nodes, in order.
    pub fn names(&self) -> Vec<String> {
        (1..=self.count)
            .map(|i| format!("{}-{i}", self.prefix))
            .collect()
    }
}

fn now() -> String {
    format_rfc3339_utc(SystemTime::now())
}

fn condition(kind: &str, status: &str, reason: &str, at: &str) -> api::Condition {
    api::Condition {
        r#type: kind.into(),
        status: status.into(),
        reason: reason.into(),
        last_transition_time: at.into(),
        ..Default::default()
    }
}

/// The Node object a simulated node registers.
fn node_object(name: &str, index: usize, options: &SimOptions) -> api::Node {
    let capacity: BTreeMap<String, String> = [
        ("cpu".to_string(), options.cpu.clone()),
        ("memory".to_string(), options.memory.clone()),
        ("pods".to_string(), options.max_pods.to_string()),
    ]
    .into();
    let at = now();
    let mut ready = condition("Ready", "True", "AgentReady", &at);
    ready.message = "simulated node is posting ready status".into();
    ready.last_heartbeat_time = at.clone();
    let mut node = api::Node {
        spec: Some(api::NodeSpec::default()),
        status: Some(api::NodeStatus {
            capacity: capacity.clone(),
            allocatable: capacity,
            conditions: vec![ready],
            addresses: vec![
                api::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: sim_host_ip(index).to_string(),
                },
                api::NodeAddress {
                    r#type: "Hostname".into(),
                    address: name.into(),
                },
            ],
            node_info: Some(api::NodeSystemInfo {
                agent_version: format!("rafter-sim/{}", env!("CARGO_PKG_VERSION")),
                container_runtime_version: "simulated://0".into(),
                os_image: "simulated".into(),
                operating_system: std::env::consts::OS.into(),
                architecture: std::env::consts::ARCH.into(),
                ..Default::default()
            }),
            daemon_endpoints: None,
        }),
        ..Default::default()
    };
    let m = node.metadata_mut();
    m.name = name.into();
    m.labels = options.labels.clone();
    m.labels.insert("rafter.io/hostname".into(), name.into());
    m.labels
        .insert("kubernetes.io/os".into(), std::env::consts::OS.into());
    m.labels
        .insert("kubernetes.io/arch".into(), std::env::consts::ARCH.into());
    m.labels.insert("rafter.io/simulated".into(), "true".into());
    node
}

/// A made-up host address for node `index` (1-based), in 192.168.0.0/16.
fn sim_host_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, ((index >> 8) & 0xff) as u8, (index & 0xff) as u8)
}

/// Pod IPs handed out per node: from the node's podCIDR when it has one,
/// else from 10.255.<index>.0/24 (so endpoints still get distinct IPs).
#[derive(Default)]
struct PodIps {
    next: HashMap<String, u32>,
}

impl PodIps {
    fn next(&mut self, node: &str, index: usize, pod_cidr: &str) -> String {
        let base: u32 = match pod_cidr.parse::<ipnet::Ipv4Net>() {
            Ok(net) => u32::from(net.network()),
            Err(_) => u32::from(Ipv4Addr::new(10, 255, (index & 0xff) as u8, 0)),
        };
        let n = self.next.entry(node.to_string()).or_insert(1);
        // .2 to .254, then round again (the simulation never holds 253
        // pods on one node at once in practice).
        *n = if *n >= 254 { 2 } else { *n + 1 };
        Ipv4Addr::from(base + *n).to_string()
    }
}

/// The status a running, ready pod reports.
fn running_status(pod: &api::Pod, host_ip: &str, pod_ip: &str) -> api::PodStatus {
    let at = now();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    api::PodStatus {
        phase: "Running".into(),
        conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
            .iter()
            .map(|k| condition(k, "True", "", &at))
            .collect(),
        host_ip: host_ip.into(),
        pod_ip: pod_ip.into(),
        start_time: at.clone(),
        container_statuses: containers
            .iter()
            .map(|c| api::ContainerStatus {
                name: c.name.clone(),
                state: Some(api::ContainerState {
                    running: Some(api::ContainerStateRunning {
                        started_at: at.clone(),
                    }),
                    ..Default::default()
                }),
                ready: true,
                image: c.image.clone(),
                started: Some(true),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Whether `pod` already reports what the simulated node would.
fn is_running_and_ready(pod: &api::Pod) -> bool {
    let Some(s) = &pod.status else { return false };
    s.phase == "Running"
        && !s.pod_ip.is_empty()
        && s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
}

/// Runs the simulated nodes until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    options: SimOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let names = options.names();
    let index_of: Arc<HashMap<String, usize>> = Arc::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i + 1))
            .collect(),
    );
    // Register (or take over) every node.
    let registering = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let client = client.clone();
        let node = node_object(name, i + 1, &options);
        let permit = registering.clone();
        tasks.push(tokio::spawn(async move {
            let _p = permit.acquire().await;
            register(&client, node).await
        }));
    }
    for t in tasks {
        t.await??;
    }

    let (nodes, _node_events) =
        informer::start::<api::Node>(client.clone(), "", "rafter.io/simulated=true");
    let (pods, mut pod_events) = informer::start::<api::Pod>(client.clone(), "", "");
    nodes.wait_synced().await;

    // Heartbeats: each node's lease every interval, as a real agent does,
    // and its Ready status again when the node controller turned it.
    let heartbeat = {
        let client = client.clone();
        let names = names.clone();
        let nodes = nodes.clone();
        let shutdown = shutdown.clone();
        let interval = options.heartbeat;
        tokio::spawn(async move {
            let renewers: Vec<Arc<tokio::sync::Mutex<LeaseRenewer>>> = names
                .iter()
                .map(|n| Arc::new(tokio::sync::Mutex::new(LeaseRenewer::new(n, interval * 10))))
                .collect();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let limit = Arc::new(Semaphore::new(32));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                for (name, renewer) in names.iter().zip(&renewers) {
                    let node = nodes.get("", name);
                    let client = client.clone();
                    let renewer = renewer.clone();
                    let permit = limit.clone().acquire_owned().await;
                    tokio::spawn(async move {
                        let _p = permit;
                        // A renewal still in flight from the last tick: skip.
                        let Ok(mut renewer) = renewer.try_lock() else {
                            return;
                        };
                        if let Err(e) = renewer.renew(&client).await {
                            tracing::debug!(error = %e, "lease not renewed");
                        }
                        if let Some(node) = node.filter(|n| !is_ready(n))
                            && let Err(e) = beat(&client, node).await
                        {
                            tracing::debug!(error = %e, "node status not posted");
                        }
                    });
                }
            }
        })
    };

    // Pods bound to these nodes become Running and Ready.
    let ips = Arc::new(Mutex::new(PodIps::default()));
    let starting = Arc::new(Semaphore::new(64));
    loop {
        let event = tokio::select! {
            e = pod_events.recv() => e,
            _ = shutdown.cancelled() => break,
        };
        let Some(Event::Applied(pod)) = event else {
            if event.is_none() {
                break;
            }
            continue;
        };
        let node_name = pod
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        let Some(&index) = index_of.get(&node_name) else {
            continue;
        };
        if !pod.metadata().deletion_timestamp.is_empty() {
            // Nothing runs, so nothing to stop: finish the graceful
            // deletion at once, as an agent does once its containers stop.
            let client = client.clone();
            tokio::spawn(async move { finish_deletion(&client, &pod).await });
            continue;
        }
        if is_running_and_ready(&pod) {
            continue;
        }
        let node = nodes.get("", &node_name);
        let pod_cidr = node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .map(|s| s.pod_cidr.clone())
            .unwrap_or_default();
        let host_ip = sim_host_ip(index).to_string();
        let pod_ip = match pod.status.as_ref().map(|s| s.pod_ip.as_str()) {
            Some(ip) if !ip.is_empty() => ip.to_string(),
            _ => ips
                .lock()
                .expect("ips lock")
                .next(&node_name, index, &pod_cidr),
        };
        let client = client.clone();
        let pods = pods.clone();
        let delay = options.start_delay;
        let permit = starting.clone().acquire_owned().await;
        tokio::spawn(async move {
            let _p = permit;
            tokio::time::sleep(delay).await;
            start_pod(&client, &pods, Arc::unwrap_or_clone(pod), &host_ip, &pod_ip).await;
        });
    }
    heartbeat.abort();
    Ok(())
}

/// Deletes a pod being deleted for good (grace 0, its uid as precondition).
async fn finish_deletion(client: &Client, pod: &api::Pod) {
    let m = pod.metadata();
    if m.deletion_grace_period_seconds == Some(0) {
        return; // already forced: it waits for its finalizers
    }
    let options = DeleteOptions::with_uid(&m.uid).force();
    match client
        .delete_object::<api::Pod>(&m.namespace, &m.name, &options)
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_reason("NotFound") || e.is_reason("Conflict") => {}
        Err(e) => tracing::warn!(pod = %m.name, error = %e, "terminating pod not deleted"),
    }
}

async fn register(client: &Client, node: api::Node) -> anyhow::Result<()> {
    let name = node.metadata().name.clone();
    loop {
        match client.create(&node).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_reason("AlreadyExists") => {
                // A restarted simulation takes its nodes over.
                let mut current: api::Node = client.get_object("", &name).await?;
                current.status = node.status.clone();
                match client.update_status(&current).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.is_reason("Conflict") => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot register simulated node {name}: {e}"
                ));
            }
        }
    }
}

/// Whether the node's Ready condition is True.
fn is_ready(node: &api::Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Posts Ready=True with a fresh lastHeartbeatTime.
async fn beat(client: &Client, mut node: api::Node) -> Result<(), rafter_client::Error> {
    let at = now();
    let status = node.status.get_or_insert_default();
    match status.conditions.iter_mut().find(|c| c.r#type == "Ready") {
        Some(c) => {
            if c.status != "True" {
                c.status = "True".into();
                c.reason = "AgentReady".into();
                c.message = "simulated node is posting ready status".into();
                c.last_transition_time = at.clone();
            }
            c.last_heartbeat_time = at;
        }
        None => {
            let mut c = condition("Ready", "True", "AgentReady", &at);
            c.last_heartbeat_time = at;
            status.conditions.push(c);
        }
    }
    client.update_status(&node).await.map(|_| ())
}

async fn start_pod(
    client: &Client,
    pods: &informer::Cache<api::Pod>,
    mut pod: api::Pod,
    host_ip: &str,
    pod_ip: &str,
) {
    for _ in 0..5 {
        pod.status = Some(running_status(&pod, host_ip, pod_ip));
        match client.update_status(&pod).await {
            Ok(_) => return,
            Err(e) if e.is_reason("NotFound") => return,
            Err(e) => {
                tracing::debug!(pod = %pod.metadata().name, error = %e, "pod status not written; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                let m = pod.metadata();
                match pods.get(&m.namespace, &m.name) {
                    Some(p) if !is_running_and_ready(&p) => pod = p,
                    _ => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_come_from_the_node_pod_cidr() {
        let mut ips = PodIps::default();
        assert_eq!(ips.next("a", 1, "10.244.3.0/24"), "10.244.3.2");
        assert_eq!(ips.next("a", 1, "10.244.3.0/24"), "10.244.3.3");
        assert_eq!(ips.next("b", 2, ""), "10.255.2.2");
    }

    #[test]
    fn a_registered_node_has_capacity_labels_and_is_ready() {
        let o = SimOptions {
            cpu: "2".into(),
            memory: "4Gi".into(),
            max_pods: 10,
            ..Default::default()
        };
        let n = node_object("sim-1", 1, &o);
        let s = n.status.unwrap();
        assert_eq!(s.allocatable["cpu"], "2");
        assert_eq!(s.allocatable["memory"], "4Gi");
        assert_eq!(s.allocatable["pods"], "10");
        assert_eq!(n.metadata.unwrap().labels["rafter.io/hostname"], "sim-1");
        assert!(
            s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
        );
    }

    #[test]
    fn a_started_pod_is_running_and_ready() {
        let mut pod = api::Pod {
            spec: Some(api::PodSpec {
                containers: vec![api::Container {
                    name: "c".into(),
                    image: "i".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!is_running_and_ready(&pod));
        pod.status = Some(running_status(&pod, "192.168.0.1", "10.244.0.2"));
        assert!(is_running_and_ready(&pod));
        assert!(pod.status.unwrap().container_statuses[0].ready);
    }
}
