//! The scheduling loop: informers on Nodes and Pods feed the [`Cache`] and
//! the [`SchedulingQueue`]; one task decides placements one pod at a time,
//! in memory, and hands each binding to a concurrent write, so that up to
//! [`Options::max_binds_in_flight`] bindings are committed together (the
//! Raft group commit batches them) while the next decisions are made.
//!
//! Safety rests on three things:
//! - a binding is a compare-and-swap on the pod's resourceVersion setting
//!   spec.nodeName, and the API server refuses to change a nodeName once
//!   set, so a pod is never bound twice;
//! - a placement is counted on its node (assumed) from the moment it is
//!   decided until the API shows it bound or the write fails, so decisions
//!   made while earlier bindings are in flight never overcommit a node;
//! - the client carries the leader's term (fencing): a deposed leader's
//!   bindings fail, and a new leader's scheduler starts from what is
//!   committed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rafter_client::events::{EventType, Recorder};
use rafter_client::informer::{Event, Informers};
use rafter_client::{Client, Error};
use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Cache};
use crate::node_info::{PodInfo, PodKey};
use crate::queue::{self, SchedulingQueue};

/// The component name on the events the scheduler records.
pub const COMPONENT: &str = "default-scheduler";

/// How often a FailedScheduling event is repeated for a pod whose reason
/// has not changed (the event's count goes up).
const EVENT_REPEAT: Duration = Duration::from_secs(60);

/// Retry delay after a binding lost a compare-and-swap: the pod changed,
/// and its new version is usually already on its way from the informer
/// (which retries it at once).
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// Tuning of the scheduler.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bindings written at once. Enough to fill the Raft group commit;
    /// decisions go on while they are written.
    pub max_binds_in_flight: usize,
    /// Status updates and events written at once.
    pub max_other_writes_in_flight: usize,
    /// Record a `Scheduled` event for every binding, as kube-scheduler does.
    pub scheduled_events: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_binds_in_flight: 256,
            max_other_writes_in_flight: 64,
            scheduled_events: true,
        }
    }
}

/// The scheduler of one leader term.
#[derive(Debug)]
pub struct Scheduler {
    client: Client,
    options: Options,
}

impl Scheduler {
    /// A scheduler writing through `client` (which the leader supervisor
    /// gives the term's fence), with the default [`Options`].
    pub fn new(client: Client) -> Self {
        Self::with_options(client, Options::default())
    }

    pub fn with_options(client: Client, options: Options) -> Self {
        Scheduler { client, options }
    }

    /// Schedules until `shutdown` is cancelled, reading nodes and pods
    /// through `informers` (shared with the controllers of the same term).
    /// Waits for the first list of nodes and pods before deciding anything,
    /// so that it never places a pod on a node whose pods it has not
    /// counted yet.
    pub async fn run(self, informers: &Informers, shutdown: CancellationToken) {
        let (nodes, mut node_events) = informers.start::<api::Node>("", "");
        let (pods, mut pod_events) = informers.start::<api::Pod>("", "");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { nodes.wait_synced().await; pods.wait_synced().await } => {}
        }
        // Once a cache is synced its stream already holds every object of
        // the first list (and any change since, in order): take the state
        // from the streams alone, so each pod is applied once and never an
        // older version after a newer one.
        let mut s = State::new(self.client, self.options);
        while let Ok(e) = node_events.try_recv() {
            s.node_event(e);
        }
        while let Ok(e) = pod_events.try_recv() {
            s.pod_event(e);
        }
        tracing::info!(
            nodes = s.cache.node_count(),
            pending = s.pending.len(),
            "scheduler started"
        );
        while !shutdown.is_cancelled() {
            s.schedule_ready();
            let due = s.queue.next_due();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(done) = s.binds.join_next(), if !s.binds.is_empty() => {
                    if let Ok((key, node, result)) = done {
                        s.bind_done(key, node, result);
                    }
                }
                Some(e) = pod_events.recv() => s.pod_event(e),
                Some(e) = node_events.recv() => s.node_event(e),
                Some(done) = s.writes.join_next(), if !s.writes.is_empty() => {
                    if let Ok(Some(pod)) = done {
                        s.pod_applied(Arc::new(pod));
                    }
                }
                _ = sleep_until(due), if due.is_some() => {}
            }
        }
        tracing::info!(bound = s.bound, "scheduler stopped");
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// A pod waiting for a node.
#[derive(Debug)]
struct Pending {
    info: PodInfo,
    /// Failed attempts in a row (for the backoff).
    failures: u32,
    /// Its last binding lost a compare-and-swap: retry on its next version.
    conflicted: bool,
    last_event: Option<Instant>,
}

/// Whether a pod, as the API shows it, waits for the scheduler.
fn wants_node(pod: &api::Pod) -> bool {
    let unbound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_empty());
    unbound && pod.metadata().deletion_timestamp.is_empty() && !cache::is_finished(pod)
}

type BindResult = (PodKey, String, Result<api::Pod, Error>);

/// Everything the loop owns; one task mutates it, so nothing is locked.
struct State {
    client: Client,
    recorder: Recorder,
    options: Options,
    cache: Cache,
    queue: SchedulingQueue,
    pending: HashMap<PodKey, Pending>,
    /// (uid, resourceVersion) of the newest version seen of every pod, so
    /// that an older view (a write's answer racing the informer) is ignored.
    known: HashMap<PodKey, (String, u64)>,
    /// Pods whose binding is being written.
    in_flight: HashSet<PodKey>,
    binds: JoinSet<BindResult>,
    /// Status updates and events; a status update returns the pod written.
    writes: JoinSet<Option<api::Pod>>,
    write_slots: Arc<Semaphore>,
    rng: StdRng,
    bound: u64,
}

impl State {
    fn new(client: Client, options: Options) -> State {
        State {
            recorder: Recorder::new(client.clone(), COMPONENT),
            write_slots: Arc::new(Semaphore::new(options.max_other_writes_in_flight.max(1))),
            client,
            options,
            cache: Cache::new(),
            queue: SchedulingQueue::new(),
            pending: HashMap::new(),
            known: HashMap::new(),
            in_flight: HashSet::new(),
            binds: JoinSet::new(),
            writes: JoinSet::new(),
            rng: StdRng::from_os_rng(),
            bound: 0,
        }
    }

    fn node_event(&mut self, event: Event<api::Node>) {
        match event {
            Event::Applied(n) => self.node_applied(Arc::unwrap_or_clone(n)),
            Event::Deleted(n) => self.node_deleted(&n),
        }
    }

    fn pod_event(&mut self, event: Event<api::Pod>) {
        match event {
            Event::Applied(p) => self.pod_applied(p),
            Event::Deleted(p) => self.pod_deleted(&p),
        }
    }

    fn node_applied(&mut self, node: api::Node) {
        if self.cache.upsert_node(node) {
            self.queue.move_unschedulable();
        }
    }

    fn node_deleted(&mut self, node: &api::Node) {
        self.cache.remove_node(&node.metadata().name);
        // The count of nodes in every failure message changed.
        self.queue.move_unschedulable();
    }

    fn pod_applied(&mut self, pod: Arc<api::Pod>) {
        let info = PodInfo::new(pod);
        let m = info.pod.metadata();
        let uid = m.uid.clone();
        let rv: u64 = m.resource_version.parse().unwrap_or(0);
        if let Some((known_uid, known_rv)) = self.known.get(&info.key)
            && *known_uid == uid
            && rv <= *known_rv
        {
            return;
        }
        self.known.insert(info.key.clone(), (uid.clone(), rv));
        let key = info.key.clone();
        let wants = wants_node(&info.pod);
        let freed = self.cache.upsert_pod(info.clone());
        if wants {
            let retry = match self.pending.entry(key.clone()) {
                Entry::Occupied(mut e) => {
                    let p = e.get_mut();
                    let retry = p.conflicted
                        || p.info.pod.metadata().uid != uid
                        || p.info.pod.spec != info.pod.spec;
                    p.info = info;
                    p.conflicted = false;
                    retry
                }
                Entry::Vacant(e) => {
                    e.insert(Pending {
                        info,
                        failures: 0,
                        conflicted: false,
                        last_event: None,
                    });
                    true
                }
            };
            if retry && !self.in_flight.contains(&key) {
                self.queue.add(key);
            }
        } else {
            self.pending.remove(&key);
        }
        if freed {
            self.queue.move_unschedulable();
        }
    }

    fn pod_deleted(&mut self, pod: &api::Pod) {
        let m = pod.metadata();
        let key = (m.namespace.clone(), m.name.clone());
        self.known.remove(&key);
        self.pending.remove(&key);
        if self.cache.remove_pod(&key) {
            self.queue.move_unschedulable();
        }
    }

    /// Decides placements for queued pods while there is room for more
    /// bindings in flight.
    fn schedule_ready(&mut self) {
        let now = Instant::now();
        while self.in_flight.len() < self.options.max_binds_in_flight {
            let Some(key) = self.queue.pop(now) else {
                break;
            };
            self.schedule_one(key, now);
        }
    }

    fn schedule_one(&mut self, key: PodKey, now: Instant) {
        if self.in_flight.contains(&key) {
            return;
        }
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        match self.cache.choose_node(&p.info, &mut self.rng) {
            Ok(node) => {
                self.cache.assume(&p.info, &node);
                self.in_flight.insert(key.clone());
                let mut pod = api::Pod::clone(&p.info.pod);
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name = node.clone();
                }
                let client = self.client.clone();
                self.binds.spawn(async move {
                    let result = bind(&client, &pod).await;
                    (key, node, result)
                });
            }
            Err(message) => {
                p.failures += 1;
                self.queue
                    .add_unschedulable(key, now + queue::backoff(p.failures));
                let update = with_unschedulable_condition(&p.info.pod, &message, SystemTime::now());
                let event_due = update.is_some()
                    || p.last_event
                        .is_none_or(|at| now.duration_since(at) >= EVENT_REPEAT);
                if update.is_none() && !event_due {
                    return;
                }
                if event_due {
                    p.last_event = Some(now);
                }
                tracing::debug!(pod = %p.info.key.1, %message, "pod is unschedulable");
                let pod = p.info.pod.clone();
                let client = self.client.clone();
                let recorder = self.recorder.clone();
                let slots = self.write_slots.clone();
                self.writes.spawn(async move {
                    let _slot = slots.acquire_owned().await.ok()?;
                    let written = match update {
                        Some(u) => match client.update_status(&u).await {
                            Ok(w) => Some(w),
                            Err(e) => {
                                tracing::debug!(error = %e, "could not write PodScheduled=False");
                                None
                            }
                        },
                        None => None,
                    };
                    if event_due {
                        recorder
                            .record(&*pod, EventType::Warning, "FailedScheduling", &message)
                            .await;
                    }
                    written
                });
            }
        }
    }

    fn bind_done(&mut self, key: PodKey, node: String, result: Result<api::Pod, Error>) {
        self.in_flight.remove(&key);
        match result {
            Ok(bound) => {
                if node_of(&bound) == node {
                    self.bound += 1;
                }
                let same_pod = self
                    .known
                    .get(&key)
                    .is_some_and(|(uid, _)| *uid == bound.metadata().uid);
                if self.options.scheduled_events && node_of(&bound) == node {
                    let message = format!("Successfully assigned {}/{} to {node}", key.0, key.1);
                    let recorder = self.recorder.clone();
                    let slots = self.write_slots.clone();
                    let pod = bound.clone();
                    self.writes.spawn(async move {
                        let _slot = slots.acquire_owned().await.ok()?;
                        recorder
                            .record(&pod, EventType::Normal, "Scheduled", &message)
                            .await;
                        None
                    });
                }
                if same_pod {
                    // Confirms the assumption (the informer may be behind).
                    self.pod_applied(Arc::new(bound));
                } else if self.cache.forget(&key) {
                    // Deleted meanwhile; the informer has said so already.
                    self.queue.move_unschedulable();
                }
            }
            Err(e) => {
                tracing::debug!(pod = %key.1, %node, error = %e, "binding failed");
                if self.cache.forget(&key) {
                    self.queue.move_unschedulable();
                }
                if e.is_not_found() {
                    self.pending.remove(&key);
                    return;
                }
                if let Some(p) = self.pending.get_mut(&key) {
                    let conflict = e.is_reason("Conflict");
                    p.conflicted = conflict;
                    let delay = if conflict {
                        CONFLICT_RETRY
                    } else {
                        p.failures += 1;
                        queue::backoff(p.failures)
                    };
                    self.queue.add_at(key, Instant::now() + delay);
                }
            }
        }
    }
}

/// Writes a binding: a compare-and-swap on the resourceVersion the
/// scheduler saw. When the outcome is unknown (no master answered in time:
/// the write may still have been committed), reads the pod back before
/// calling it failed, so that a binding that did land is not forgotten and
/// its resources given to another pod.
async fn bind(client: &Client, pod: &api::Pod) -> Result<api::Pod, Error> {
    let err = match client.update(pod).await {
        Ok(bound) => return Ok(bound),
        Err(e) if e.reason().is_some() => return Err(e),
        Err(e) => e,
    };
    let m = pod.metadata();
    match client.get_object::<api::Pod>(&m.namespace, &m.name).await {
        Ok(now) if now.metadata().uid == m.uid && !node_of(&now).is_empty() => Ok(now),
        _ => Err(err),
    }
}

fn node_of(pod: &api::Pod) -> &str {
    pod.spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .unwrap_or("")
}

/// `pod` with its PodScheduled condition set to False, reason
/// Unschedulable and `message`, or `None` when it says so already (so the
/// status is written only when it changes).
pub fn with_unschedulable_condition(
    pod: &api::Pod,
    message: &str,
    now: SystemTime,
) -> Option<api::Pod> {
    let mut pod = pod.clone();
    let status = pod.status.get_or_insert_with(Default::default);
    let now = format_rfc3339_utc(now);
    match status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == "PodScheduled")
    {
        Some(c) if c.status == "False" && c.reason == "Unschedulable" && c.message == message => {
            return None;
        }
        Some(c) => {
            if c.status != "False" {
                c.last_transition_time = now.clone();
            }
            c.status = "False".into();
            c.reason = "Unschedulable".into();
            c.message = message.into();
            c.last_probe_time = now;
        }
        None => status.conditions.push(api::Condition {
            r#type: "PodScheduled".into(),
            status: "False".into(),
            reason: "Unschedulable".into(),
            message: message.into(),
            last_transition_time: now.clone(),
            last_probe_time: now,
            ..Default::default()
        }),
    }
    if status.phase.is_empty() {
        status.phase = "Pending".into();
    }
    Some(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_info::tests::pod;

    #[test]
    fn unbound_live_pods_want_a_node() {
        let mut p = pod("a", "1", "");
        assert!(wants_node(&p));
        p.metadata_mut().deletion_timestamp = "2026-11-27T00:00:00Z".into();
        assert!(!wants_node(&p));
        let mut p = pod("b", "1", "");
        p.spec.as_mut().unwrap().node_name = "n1".into();
        assert!(!wants_node(&p));
        let mut p = pod("c", "1", "");
        p.status = Some(api::PodStatus {
            phase: "Failed".into(),
            ..Default::default()
        });
        assert!(!wants_node(&p));
    }

    #[test]
    fn unschedulable_condition_is_written_only_when_it_changes() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let msg = "0/1 nodes are available: 1 Insufficient cpu.";
        let p = with_unschedulable_condition(&pod("a", "1", ""), msg, t0).unwrap();
        let status = p.status.as_ref().unwrap();
        assert_eq!(status.phase, "Pending");
        let c = &status.conditions[0];
        assert_eq!(
            (
                c.r#type.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.message.as_str()
            ),
            ("PodScheduled", "False", "Unschedulable", msg)
        );
        assert_eq!(c.last_transition_time, format_rfc3339_utc(t0));
        // Same message: nothing to write.
        assert_eq!(with_unschedulable_condition(&p, msg, t0), None);
        // A new message keeps the transition time (still False).
        let t1 = t0 + Duration::from_secs(5);
        let msg2 = "0/2 nodes are available: 2 Insufficient cpu.";
        let p2 = with_unschedulable_condition(&p, msg2, t1).unwrap();
        let c2 = &p2.status.as_ref().unwrap().conditions[0];
        assert_eq!(c2.message, msg2);
        assert_eq!(c2.last_transition_time, format_rfc3339_utc(t0));
        assert_eq!(c2.last_probe_time, format_rfc3339_utc(t1));
        assert_eq!(p2.status.as_ref().unwrap().conditions.len(), 1);
    }
}
