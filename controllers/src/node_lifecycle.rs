//! The node lifecycle controller: notices nodes whose agent stopped
//! heartbeating, marks them NotReady, and evicts their pods so their
//! controllers recreate them elsewhere.
//!
//! A node is alive while its heartbeat keeps changing: its Lease in
//! `rafter-node-lease` (renewed every second by the agent, a small write)
//! or, for agents that post no lease, its Ready condition's
//! lastHeartbeatTime. The silence is measured on this controller's own clock (DESIGN
//! decision 9): the clock starts when the controller first sees a node, so
//! on a new leader nothing is declared dead before a full grace period has
//! passed there, and a master failover alone never marks a node NotReady.
//!
//! After `node_grace_period` of silence the node's Ready condition becomes
//! Unknown (`NodeStatusUnknown`, shown as NotReady), it gets the
//! `node.kubernetes.io/unreachable:NoExecute` taint and its pods are marked
//! not ready at once, so endpoints drop them. After a further
//! `pod_eviction_timeout` its pods are deleted. A cordoned node
//! (spec.unschedulable) is being looked after by someone: it is marked
//! NotReady and its pods not ready, but it gets no taint and nothing is
//! evicted. A node whose agent posts Ready again loses the taint.
//!
//! Evicted pods are deleted with grace period 0 (force), those already
//! terminating included: a graceful deletion waits for the node's agent to
//! stop the pod, and that agent is silent. If it comes back, it stops and
//! removes the containers of pods that are gone. For the same reason a
//! terminating pod bound to a node that does not exist (deleted, or never
//! registered) is force-deleted: nobody would ever finish it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rafter_client::events::{EventType, Recorder};
use rafter_client::informer::{Cache, Event, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;
use rafter_proto::wellknown::NODE_LEASE_NAMESPACE;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::informer_events::{forward, object};
use crate::runtime::{self, Action, Key, Queue, Reconciler};

/// The taint of a node that stopped heartbeating.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Reason of the Ready condition the controller sets.
pub const STATUS_UNKNOWN_REASON: &str = "NodeStatusUnknown";
/// Message of the Ready condition the controller sets.
pub const STATUS_UNKNOWN_MESSAGE: &str = "Agent stopped posting node status.";

/// When each node's heartbeat last changed, on the controller's clock.
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: HashMap<String, (String, Instant)>,
}

impl Heartbeats {
    /// Records `node`'s current heartbeat at `now`; returns how long it has
    /// gone unchanged. A node seen for the first time starts at zero.
    pub fn observe(&mut self, node: &str, heartbeat: &str, now: Instant) -> Duration {
        match self.seen.get_mut(node) {
            Some((last, since)) if *last == heartbeat => now.saturating_duration_since(*since),
            Some(entry) => {
                *entry = (heartbeat.to_string(), now);
                Duration::ZERO
            }
            None => {
                self.seen
                    .insert(node.to_string(), (heartbeat.to_string(), now));
                Duration::ZERO
            }
        }
    }

    /// Forgets a deleted node.
    pub fn forget(&mut self, node: &str) {
        self.seen.remove(node);
    }
}

/// What a node's silence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Heartbeating; look again after this long if nothing changes.
    Alive { recheck_in: Duration },
    /// NotReady; its pods are evicted after this long.
    NotReady { evict_in: Duration },
    /// NotReady for the whole eviction timeout: evict its pods.
    Evict,
}

/// Judges a node silent for `silence`.
pub fn verdict(silence: Duration, grace: Duration, eviction: Duration) -> Verdict {
    if silence < grace {
        Verdict::Alive {
            recheck_in: grace - silence,
        }
    } else if silence < grace + eviction {
        Verdict::NotReady {
            evict_in: grace + eviction - silence,
        }
    } else {
        Verdict::Evict
    }
}

/// What changes while `node`'s agent is alive: its lease's renewTime and
/// its Ready condition's lastHeartbeatTime.
pub fn heartbeat(node: &api::Node, lease: Option<&api::Lease>) -> String {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .map(|s| s.renew_time.as_str())
        .unwrap_or("");
    let posted = ready_condition(node)
        .map(|c| c.last_heartbeat_time.as_str())
        .unwrap_or("");
    format!("{renewed}|{posted}")
}

/// The node's Ready condition.
pub fn ready_condition(node: &api::Node) -> Option<&api::Condition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
}

fn has_unreachable_taint(node: &api::Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == UNREACHABLE_TAINT))
}

fn cordoned(node: &api::Node) -> bool {
    node.spec.as_ref().is_some_and(|s| s.unschedulable)
}

fn now_rfc3339() -> String {
    format_rfc3339_utc(SystemTime::now())
}

/// `node` with its Ready condition set to Unknown (the heartbeat kept);
/// None when it already is.
pub fn mark_unknown(node: &api::Node, now: &str) -> Option<api::Node> {
    if ready_condition(node).is_some_and(|c| c.status == "Unknown") {
        return None;
    }
    let mut next = node.clone();
    let status = next.status.get_or_insert_default();
    let cond = match status
        .conditions
        .iter_mut()
        .position(|c| c.r#type == "Ready")
    {
        Some(i) => &mut status.conditions[i],
        None => {
            status.conditions.push(api::Condition {
                r#type: "Ready".into(),
                ..Default::default()
            });
            status.conditions.last_mut().expect("just pushed")
        }
    };
    cond.status = "Unknown".into();
    cond.reason = STATUS_UNKNOWN_REASON.into();
    cond.message = STATUS_UNKNOWN_MESSAGE.into();
    cond.last_transition_time = now.to_string();
    cond.last_probe_time = now.to_string();
    Some(next)
}

/// `pod` with Ready and ContainersReady False; None when they already are.
pub fn mark_pod_not_ready(pod: &api::Pod, now: &str) -> Option<api::Pod> {
    let mut next = pod.clone();
    let status = next.status.get_or_insert_default();
    let mut changed = false;
    for kind in ["Ready", "ContainersReady"] {
        match status.conditions.iter_mut().find(|c| c.r#type == kind) {
            Some(c) if c.status == "False" => {}
            Some(c) => {
                c.status = "False".into();
                c.reason = "NodeNotReady".into();
                c.message = "the pod's node stopped posting its status".into();
                c.last_transition_time = now.to_string();
                changed = true;
            }
            None => {
                status.conditions.push(api::Condition {
                    r#type: kind.into(),
                    status: "False".into(),
                    reason: "NodeNotReady".into(),
                    message: "the pod's node stopped posting its status".into(),
                    last_transition_time: now.to_string(),
                    ..Default::default()
                });
                changed = true;
            }
        }
    }
    for cs in &mut status.container_statuses {
        if cs.ready {
            cs.ready = false;
            changed = true;
        }
    }
    changed.then_some(next)
}

/// Deleted with grace 0 already (it only waits for finalizers), or marked
/// for finalizers alone: deleting it again changes nothing.
fn forced(pod: &api::Pod) -> bool {
    let m = pod.metadata();
    !m.deletion_timestamp.is_empty() && m.deletion_grace_period_seconds.unwrap_or(0) == 0
}

/// The node lifecycle controller.
pub struct NodeLifecycle {
    client: Client,
    nodes: Cache<api::Node>,
    leases: Cache<api::Lease>,
    pods: Cache<api::Pod>,
    recorder: Recorder,
    grace: Duration,
    eviction: Duration,
    heartbeats: Mutex<Heartbeats>,
    /// Nodes currently judged NotReady (their pod changes concern us).
    silent: Arc<Mutex<HashSet<String>>>,
}

impl NodeLifecycle {
    fn pods_on(&self, node: &str) -> Vec<api::Pod> {
        self.pods
            .list()
            .into_iter()
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name == node))
            .collect()
    }

    /// The silence of `node`, after checking a stale-looking heartbeat
    /// against the masters (the cache may lag behind).
    async fn silence(&self, node: &api::Node) -> Result<Duration, Error> {
        let name = &node.metadata().name;
        let lease = self.leases.get(NODE_LEASE_NAMESPACE, name);
        let silence = self.observe(name, &heartbeat(node, lease.as_ref()));
        if silence < self.grace {
            return Ok(silence);
        }
        let fresh: api::Node = self.client.get_object("", name).await?;
        let lease = match self
            .client
            .get_object::<api::Lease>(NODE_LEASE_NAMESPACE, name)
            .await
        {
            Ok(l) => Some(l),
            Err(e) if e.is_reason("NotFound") => None,
            Err(e) => return Err(e),
        };
        Ok(self.observe(name, &heartbeat(&fresh, lease.as_ref())))
    }

    /// Force-deletes the terminating pods bound to `node`, which does not
    /// exist (checked with the masters: the cache may lag): no agent will
    /// finish them.
    async fn finish_orphans(&self, node: &str) -> Result<(), Error> {
        let orphans: Vec<api::Pod> = self
            .pods_on(node)
            .into_iter()
            .filter(|p| !p.metadata().deletion_timestamp.is_empty() && !forced(p))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        match self.client.get_object::<api::Node>("", node).await {
            Ok(_) => return Ok(()), // it exists after all: its agent finishes them
            Err(e) if e.is_reason("NotFound") => {}
            Err(e) => return Err(e),
        }
        for pod in &orphans {
            if self.force_delete(pod).await? {
                let m = pod.metadata();
                tracing::info!(node, pod = %m.name, namespace = %m.namespace, "terminating pod of a missing node deleted");
            }
        }
        Ok(())
    }

    /// Deletes `pod` at once (grace 0), if it is still the same pod.
    /// Returns whether this call deleted it: false when it is gone already
    /// or was replaced by a namesake (NotFound, Conflict).
    async fn force_delete(&self, pod: &api::Pod) -> Result<bool, Error> {
        let m = pod.metadata();
        let options = DeleteOptions::with_uid(&m.uid).force();
        match self
            .client
            .delete_object::<api::Pod>(&m.namespace, &m.name, &options)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_reason("NotFound") || e.is_reason("Conflict") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn observe(&self, name: &str, heartbeat: &str) -> Duration {
        self.heartbeats
            .lock()
            .expect("heartbeats lock")
            .observe(name, heartbeat, Instant::now())
    }

    async fn alive(&self, node: &api::Node) -> Result<(), Error> {
        let name = node.metadata().name.clone();
        self.silent.lock().expect("silent lock").remove(&name);
        let ready_again = ready_condition(node).is_some_and(|c| c.status == "True");
        if has_unreachable_taint(node) && ready_again {
            let mut next = node.clone();
            if let Some(spec) = next.spec.as_mut() {
                spec.taints.retain(|t| t.key != UNREACHABLE_TAINT);
            }
            self.client.update(&next).await?;
            self.recorder
                .record(
                    node,
                    EventType::Normal,
                    "NodeReady",
                    &format!("Node {name} status is now: NodeReady"),
                )
                .await;
        }
        Ok(())
    }

    async fn not_ready(&self, node: &api::Node, evict: bool) -> Result<(), Error> {
        let name = node.metadata().name.clone();
        self.silent
            .lock()
            .expect("silent lock")
            .insert(name.clone());
        let now = now_rfc3339();
        let mut node = node.clone();
        if let Some(next) = mark_unknown(&node, &now) {
            node = self.client.update_status(&next).await?;
            tracing::info!(node = %name, "node stopped heartbeating: NotReady");
            self.recorder
                .record(
                    &node,
                    EventType::Normal,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
        }
        let cordoned = cordoned(&node);
        if !cordoned && !has_unreachable_taint(&node) {
            let mut next = node.clone();
            next.spec.get_or_insert_default().taints.push(api::Taint {
                key: UNREACHABLE_TAINT.into(),
                value: String::new(),
                effect: "NoExecute".into(),
                time_added: now.clone(),
            });
            self.client.update(&next).await?;
        }
        let pods = self.pods_on(&name);
        for pod in &pods {
            if let Some(next) = mark_pod_not_ready(pod, &now) {
                match self.client.update_status(&next).await {
                    Ok(_) => {}
                    Err(e) if e.is_reason("NotFound") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if !evict || cordoned {
            return Ok(());
        }
        // Everything not yet removed, except pods already forced that only
        // wait for their finalizers.
        let live: Vec<&api::Pod> = pods.iter().filter(|p| !forced(p)).collect();
        if live.is_empty() {
            return Ok(());
        }
        self.recorder
            .record(
                &node,
                EventType::Normal,
                "DeletingAllPods",
                &format!("Deleting all Pods from Node {name}."),
            )
            .await;
        for pod in live {
            if self.force_delete(pod).await? {
                let m = pod.metadata();
                tracing::info!(node = %name, pod = %m.name, namespace = %m.namespace, "evicted");
                self.recorder
                    .record(
                        pod,
                        EventType::Normal,
                        "NodeControllerEviction",
                        &format!("Marking for deletion Pod {} from Node {name}", m.name),
                    )
                    .await;
            }
        }
        Ok(())
    }
}

impl Reconciler for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let name = &key.1;
        let Some(node) = self.nodes.get("", name) else {
            self.heartbeats
                .lock()
                .expect("heartbeats lock")
                .forget(name);
            self.silent.lock().expect("silent lock").remove(name);
            self.finish_orphans(name).await?;
            return Ok(Action::Done);
        };
        let silence = self.silence(&node).await?;
        match verdict(silence, self.grace, self.eviction) {
            Verdict::Alive { recheck_in } => {
                self.alive(&node).await?;
                Ok(Action::RequeueAfter(recheck_in))
            }
            Verdict::NotReady { evict_in } => {
                self.not_ready(&node, false).await?;
                Ok(Action::RequeueAfter(evict_in))
            }
            Verdict::Evict => {
                self.not_ready(&node, true).await?;
                // New pods may still be bound to it: look again now and then.
                Ok(Action::RequeueAfter(self.grace))
            }
        }
    }
}

/// Runs the node lifecycle controller until `shutdown`.
pub async fn run(
    client: Client,
    informers: &Informers,
    grace: Duration,
    eviction: Duration,
    shutdown: CancellationToken,
) {
    let (nodes, node_events) = informers.start::<api::Node>("", "");
    let (pods, pod_events) = informers.start::<api::Pod>("", "");
    let (leases, lease_events) = informers.start::<api::Lease>(NODE_LEASE_NAMESPACE, "");
    let queue = Queue::new();
    let q = queue.clone();
    forward(
        lease_events,
        shutdown.clone(),
        move |e: Event<api::Lease>| {
            q.add((String::new(), object(&e).metadata().name.clone()));
        },
    );
    let silent: Arc<Mutex<HashSet<String>>> = Arc::default();
    let q = queue.clone();
    forward(node_events, shutdown.clone(), move |e| {
        q.add(runtime::key_of(object(&e)));
    });
    let q = queue.clone();
    let s = silent.clone();
    let known = nodes.clone();
    forward(pod_events, shutdown.clone(), move |e: Event<api::Pod>| {
        let pod = object(&e);
        let node = pod
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or("");
        if node.is_empty() {
            return;
        }
        let orphan = matches!(e, Event::Applied(_))
            && !pod.metadata().deletion_timestamp.is_empty()
            && known.get("", node).is_none();
        if orphan || s.lock().expect("silent lock").contains(node) {
            q.add((String::new(), node.to_string()));
        }
    });
    tokio::select! {
        _ = async { nodes.wait_synced().await; pods.wait_synced().await; leases.wait_synced().await } => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = NodeLifecycle {
        recorder: Recorder::new(client.clone(), "node-controller"),
        client,
        nodes,
        leases,
        pods,
        grace,
        eviction,
        heartbeats: Mutex::default(),
        silent,
    };
    runtime::run(Arc::new(controller), queue, 4, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);
    const EVICTION: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn silence_counts_from_the_last_change_on_our_clock() {
        let mut hb = Heartbeats::default();
        assert_eq!(hb.observe("n1", "t1", Instant::now()), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            hb.observe("n1", "t1", Instant::now()),
            Duration::from_secs(3)
        );
        // A new heartbeat starts the count over.
        assert_eq!(hb.observe("n1", "t2", Instant::now()), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(6)).await;
        let s = hb.observe("n1", "t2", Instant::now());
        assert!(matches!(
            verdict(s, GRACE, EVICTION),
            Verdict::NotReady { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_controller_waits_a_full_grace_period_even_for_an_old_heartbeat() {
        // The node's heartbeat is an hour old, but a controller that has
        // just started (a new leader) has only just seen it.
        let mut hb = Heartbeats::default();
        let s = hb.observe("n1", "2026-11-27T20:00:00Z", Instant::now());
        assert!(matches!(
            verdict(s, GRACE, EVICTION),
            Verdict::Alive { recheck_in } if recheck_in == GRACE
        ));
        tokio::time::advance(Duration::from_secs(4)).await;
        let s = hb.observe("n1", "2026-11-27T20:00:00Z", Instant::now());
        assert_eq!(
            verdict(s, GRACE, EVICTION),
            Verdict::Alive {
                recheck_in: Duration::from_secs(1)
            }
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let s = hb.observe("n1", "2026-11-27T20:00:00Z", Instant::now());
        assert_eq!(
            verdict(s, GRACE, EVICTION),
            Verdict::NotReady { evict_in: EVICTION }
        );
        hb.forget("n1");
        assert_eq!(hb.observe("n1", "x", Instant::now()), Duration::ZERO);
    }

    #[test]
    fn eviction_comes_after_grace_plus_timeout() {
        assert_eq!(
            verdict(Duration::from_secs(34), GRACE, EVICTION),
            Verdict::NotReady {
                evict_in: Duration::from_secs(1)
            }
        );
        assert_eq!(
            verdict(Duration::from_secs(35), GRACE, EVICTION),
            Verdict::Evict
        );
    }

    fn node(ready: &str) -> api::Node {
        api::Node {
            status: Some(api::NodeStatus {
                conditions: vec![api::Condition {
                    r#type: "Ready".into(),
                    status: ready.into(),
                    last_heartbeat_time: "2026-11-27T20:00:00Z".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_renewed_lease_is_a_heartbeat_as_is_a_posted_status() {
        let n = node("True");
        let lease = |at: &str| api::Lease {
            spec: Some(api::LeaseSpec {
                renew_time: at.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = heartbeat(&n, Some(&lease("2026-11-28T01:00:00Z")));
        let b = heartbeat(&n, Some(&lease("2026-11-28T01:00:01Z")));
        assert_ne!(a, b);
        assert_eq!(heartbeat(&n, None), "|2026-11-27T20:00:00Z");
    }

    #[test]
    fn marking_unknown_keeps_the_heartbeat_and_is_done_once() {
        let n = mark_unknown(&node("True"), "2026-11-27T20:00:09Z").unwrap();
        let c = ready_condition(&n).unwrap();
        assert_eq!(c.status, "Unknown");
        assert_eq!(c.reason, STATUS_UNKNOWN_REASON);
        assert_eq!(c.message, STATUS_UNKNOWN_MESSAGE);
        assert_eq!(c.last_heartbeat_time, "2026-11-27T20:00:00Z");
        assert_eq!(mark_unknown(&n, "later"), None);
        // A node that never posted a condition gets one.
        let bare = mark_unknown(&api::Node::default(), "now").unwrap();
        assert_eq!(ready_condition(&bare).unwrap().status, "Unknown");
    }

    #[test]
    fn a_pod_is_marked_not_ready_once() {
        let pod = api::Pod {
            status: Some(api::PodStatus {
                conditions: vec![api::Condition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                container_statuses: vec![api::ContainerStatus {
                    ready: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let next = mark_pod_not_ready(&pod, "now").unwrap();
        let st = next.status.as_ref().unwrap();
        for kind in ["Ready", "ContainersReady"] {
            let c = st.conditions.iter().find(|c| c.r#type == kind).unwrap();
            assert_eq!(c.status, "False", "{kind}");
        }
        assert!(!st.container_statuses[0].ready);
        assert_eq!(mark_pod_not_ready(&next, "later"), None);
    }
}
