//! The ReplicaSet controller: keeps `spec.replicas` pods that match a
//! ReplicaSet's selector and are owned by it, made from its pod template.
//!
//! One reconcile of a ReplicaSet:
//!
//! 1. **Claims** the pods of its namespace (`workload_owner::claim`): adopts
//!    matching orphans, releases owned pods that no longer match, counts
//!    the owned ones. Pods with a deletionTimestamp, and pods that have
//!    finished (Succeeded, Failed), do not count.
//! 2. **Manages** the count, unless an earlier reconcile's writes are still
//!    on their way into the pod cache (expectations, below): creates the
//!    missing pods in slow-start batches of 1, 2, 4, ... (the writes of a
//!    batch in parallel; a failed batch stops the rest, so a failing
//!    quota or namespace costs one write, not hundreds), at most
//!    [`BURST`] per reconcile; or deletes the surplus, least valuable
//!    first ([`deletion_order`]).
//! 3. **Reports** status (replicas, fullyLabeledReplicas, readyReplicas,
//!    availableReplicas, observedGeneration), written only when it changed.
//!
//! ## Expectations
//!
//! The pod cache lags the writes. Counting from it right after creating 3
//! pods would see none of them and create 3 more. So each reconcile that
//! writes records, for its ReplicaSet, the highest revision its writes
//! committed at, and the next reconcile does not create or delete until
//! the pod informer has delivered an event at or past that revision (the
//! watch is ordered, so then the cache holds every one of those writes) —
//! or until [`EXPECTATION_TIMEOUT`] has passed, in case a write's outcome
//! was never seen. A delete answered NotFound has no revision; its pod must
//! simply be gone from the cache. A controller started on a new leader
//! begins with no expectations and counts from caches that have synced,
//! which a linearizable list makes current: every write the old leader
//! committed is in them, and the ones it had not committed are fenced.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use rafter_client::events::{EventType, Recorder};
use rafter_client::informer::{Cache, Event, Events, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::age::parse_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::informer_events;
use crate::runtime::{self, Action, Key, Queue, Reconciler, key_of};
use crate::workload_owner::{Claim, adopted, claim, controller_ref, parse_selector, released};

/// At most this many pods created or deleted by one reconcile
/// (Kubernetes' burstReplicas).
pub const BURST: usize = 500;

/// How long unobserved writes hold a ReplicaSet back at most.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Concurrent reconciles (of different ReplicaSets).
const WORKERS: usize = 4;

/// Runs the ReplicaSet controller until `shutdown` is cancelled.
pub async fn run(client: Client, informers: &Informers, shutdown: CancellationToken) {
    let (replica_sets, rs_events) = informers.start::<api::ReplicaSet>("", "");
    let (pods, pod_events) = informers.start::<api::Pod>("", "");
    let synced = async {
        replica_sets.wait_synced().await;
        pods.wait_synced().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = Arc::new(ReplicaSetController {
        recorder: Recorder::new(client.clone(), "replicaset-controller"),
        client,
        replica_sets: replica_sets.clone(),
        pods,
        observed: Arc::new(AtomicU64::new(0)),
        expectations: Mutex::default(),
    });
    let queue = Queue::new();
    {
        let queue = queue.clone();
        informer_events::forward(rs_events, shutdown.clone(), move |e| {
            queue.add(key_of(informer_events::object(&e)))
        });
    }
    tokio::spawn(forward_pods(
        pod_events,
        replica_sets,
        controller.observed.clone(),
        queue.clone(),
        shutdown.clone(),
    ));
    runtime::run(controller, queue, WORKERS, shutdown).await;
}

/// Pod changes: note the revision seen (for expectations) and queue the
/// owning ReplicaSet, or for an orphan every ReplicaSet that could adopt it.
async fn forward_pods(
    mut events: Events<api::Pod>,
    replica_sets: Cache<api::ReplicaSet>,
    observed: Arc<AtomicU64>,
    queue: Queue,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.cancelled() => return,
        };
        let pod = match ev {
            Some(Event::Applied(p) | Event::Deleted(p)) => p,
            None => return,
        };
        let m = pod.metadata();
        if let Ok(rev) = m.resource_version.parse::<u64>() {
            observed.fetch_max(rev, Ordering::SeqCst);
        }
        match controller_ref(m) {
            Some(r) if r.kind == "ReplicaSet" => queue.add((m.namespace.clone(), r.name.clone())),
            Some(_) => {}
            None => {
                for rs in replica_sets.list() {
                    let rm = rs.metadata();
                    if rm.namespace != m.namespace {
                        continue;
                    }
                    let spec = rs.spec.as_ref();
                    if parse_selector(&spec.and_then(|s| s.selector.clone()))
                        .is_some_and(|s| s.matches(&m.labels))
                    {
                        queue.add(key_of(&rs));
                    }
                }
            }
        }
    }
}

/// Writes of one ReplicaSet not yet seen in the pod cache.
#[derive(Debug, Clone)]
struct Expectation {
    /// The highest revision the writes committed at.
    revision: u64,
    /// Pods whose delete found them gone already: wait until the cache
    /// agrees.
    absent: Vec<String>,
    /// Give up waiting after this.
    deadline: Instant,
}

/// See the module doc.
pub struct ReplicaSetController {
    client: Client,
    recorder: Recorder,
    replica_sets: Cache<api::ReplicaSet>,
    pods: Cache<api::Pod>,
    /// The highest pod revision the pod informer has delivered.
    observed: Arc<AtomicU64>,
    expectations: Mutex<HashMap<Key, Expectation>>,
}

impl ReplicaSetController {
    /// Whether the cache has caught up with `key`'s last writes; `Err`
    /// with how long to wait at most otherwise.
    fn expectations_met(&self, key: &Key) -> Result<(), Duration> {
        let mut all = self.expectations.lock().expect("expectations lock");
        let Some(e) = all.get(key) else {
            return Ok(());
        };
        let now = Instant::now();
        let seen = self.observed.load(Ordering::SeqCst) >= e.revision
            && e.absent.iter().all(|n| self.pods.get(&key.0, n).is_none());
        if seen || now >= e.deadline {
            all.remove(key);
            return Ok(());
        }
        Err(e.deadline - now)
    }

    fn expect(&self, key: &Key, revision: u64, absent: Vec<String>) {
        if revision == 0 && absent.is_empty() {
            return;
        }
        let mut all = self.expectations.lock().expect("expectations lock");
        let e = all.entry(key.clone()).or_insert_with(|| Expectation {
            revision: 0,
            absent: Vec::new(),
            deadline: Instant::now(),
        });
        e.revision = e.revision.max(revision);
        e.absent.extend(absent);
        e.deadline = Instant::now() + EXPECTATION_TIMEOUT;
    }

    /// Creates `count` pods from `rs`'s template in slow-start batches.
    async fn create_pods(
        &self,
        key: &Key,
        rs: &api::ReplicaSet,
        count: usize,
    ) -> Result<(), Error> {
        let template = pod_from_template(rs);
        let mut remaining = count;
        let mut batch = 1;
        let mut names = Vec::new();
        let mut failure = None;
        while remaining > 0 && failure.is_none() {
            let n = batch.min(remaining);
            let results = join_all((0..n).map(|_| self.client.create(&template))).await;
            let mut revision = 0;
            for r in results {
                match r {
                    Ok(p) => {
                        revision = revision.max(revision_of(&p));
                        names.push(p.metadata().name.clone());
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            self.expect(key, revision, Vec::new());
            remaining -= n;
            batch *= 2;
        }
        if !names.is_empty() {
            let message = summary("Created", &names);
            self.recorder
                .record(rs, EventType::Normal, "SuccessfulCreate", &message)
                .await;
        }
        if let Some(e) = &failure {
            let message = format!("Error creating: {e}");
            self.recorder
                .record(rs, EventType::Warning, "FailedCreate", &message)
                .await;
        }
        failure.map_or(Ok(()), Err)
    }

    /// Deletes `victims` (all at once).
    async fn delete_pods(
        &self,
        key: &Key,
        rs: &api::ReplicaSet,
        victims: Vec<api::Pod>,
    ) -> Result<(), Error> {
        let results = join_all(victims.iter().map(|p| {
            let m = p.metadata();
            let options = DeleteOptions::with_uid(&m.uid);
            let client = self.client.clone();
            let (ns, name) = (m.namespace.clone(), m.name.clone());
            async move { client.delete_object::<api::Pod>(&ns, &name, &options).await }
        }))
        .await;
        let mut revision = 0;
        let mut absent = Vec::new();
        let mut names = Vec::new();
        let mut failure = None;
        for (p, r) in victims.iter().zip(results) {
            let name = p.metadata().name.clone();
            match r {
                Ok(gone) => {
                    revision = revision.max(revision_of(&gone));
                    names.push(name);
                }
                Err(e) if e.is_reason("NotFound") => absent.push(name),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        self.expect(key, revision, absent);
        if !names.is_empty() {
            let message = summary("Deleted", &names);
            self.recorder
                .record(rs, EventType::Normal, "SuccessfulDelete", &message)
                .await;
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let Some(rs) = self.replica_sets.get(&key.0, &key.1) else {
            self.expectations
                .lock()
                .expect("expectations lock")
                .remove(key);
            return Ok(Action::Done);
        };
        let rm = rs.metadata();
        let deleting = !rm.deletion_timestamp.is_empty();
        let spec = rs.spec.clone().unwrap_or_default();
        let selector = parse_selector(&spec.selector);

        // 1. Claim.
        let mut owned = Vec::new();
        let mut adopt = Vec::new();
        let mut release = Vec::new();
        for pod in self.pods.list() {
            if pod.metadata().namespace != rm.namespace {
                continue;
            }
            match claim(&rm.uid, deleting, selector.as_ref(), pod.metadata()) {
                Claim::Owned => owned.push(pod),
                Claim::Adopt => adopt.push(pod),
                Claim::Release => release.push(pod),
                Claim::Ignore => {}
            }
        }
        let mut revision = 0;
        if !adopt.is_empty() {
            // Adopt only on the word of a fresh read: the cached
            // ReplicaSet may have been deleted (and a namesake created).
            let fresh = self
                .client
                .get_object::<api::ReplicaSet>(&key.0, &key.1)
                .await?;
            if fresh.metadata().uid == rm.uid && fresh.metadata().deletion_timestamp.is_empty() {
                for pod in &adopt {
                    match self.client.update(&adopted(pod, &rs)).await {
                        Ok(p) => {
                            revision = revision.max(revision_of(&p));
                            owned.push(p);
                        }
                        Err(e) if e.is_reason("NotFound") => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        for pod in &release {
            match self.client.update(&released(pod, &rm.uid)).await {
                Ok(p) => revision = revision.max(revision_of(&p)),
                Err(e) if e.is_reason("NotFound") => {}
                Err(e) => return Err(e),
            }
        }
        self.expect(key, revision, Vec::new());
        let active: Vec<api::Pod> = owned.into_iter().filter(is_active).collect();

        // 2. Manage.
        let mut result = Ok(());
        let mut wait = None;
        if !deleting {
            match self.expectations_met(key) {
                Err(left) => wait = Some(left),
                Ok(()) => {
                    let want = spec.replicas.unwrap_or(1).max(0) as usize;
                    if active.len() < want {
                        let n = (want - active.len()).min(BURST);
                        result = self.create_pods(key, &rs, n).await;
                    } else if active.len() > want {
                        let n = (active.len() - want).min(BURST);
                        let now = SystemTime::now();
                        let mut ranked = active.clone();
                        ranked.sort_by_key(|p| deletion_order(p, now));
                        ranked.truncate(n);
                        result = self.delete_pods(key, &rs, ranked).await;
                    }
                }
            }
        }

        // 3. Status (from the pods counted above, as Kubernetes does).
        let now = SystemTime::now();
        let (status, recheck) = replica_set_status(&rs, &active, now);
        if rs.status.as_ref() != Some(&status) {
            let mut next = rs.clone();
            next.status = Some(status);
            self.client.update_status(&next).await?;
        }
        result?;
        Ok(match (wait, recheck) {
            (Some(a), Some(b)) => Action::RequeueAfter(a.min(b)),
            (Some(d), None) | (None, Some(d)) => Action::RequeueAfter(d),
            (None, None) => Action::Done,
        })
    }
}

fn revision_of<K: Object>(obj: &K) -> u64 {
    obj.metadata().resource_version.parse().unwrap_or(0)
}

/// "Created pod: web-abc" or "Created 12 pods: web-abc, web-def, ..." (an
/// event per batch rather than per pod keeps a scale-up of thousands from
/// doubling its writes).
fn summary(verb: &str, names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names {
        [one] => format!("{verb} pod: {one}"),
        _ => {
            let mut shown = names[..names.len().min(SHOWN)].join(", ");
            if names.len() > SHOWN {
                shown.push_str(", ...");
            }
            format!("{verb} {} pods: {shown}", names.len())
        }
    }
}

/// A new pod for `rs`: its template's labels, annotations and spec, a
/// generated name `<rs>-<random>` and a controller reference to `rs`.
pub fn pod_from_template(rs: &api::ReplicaSet) -> api::Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let rm = rs.metadata();
    let mut pod = api::Pod {
        spec: template.spec,
        ..Default::default()
    };
    let m = pod.metadata_mut();
    m.generate_name = format!("{}-", rm.name);
    m.namespace = rm.namespace.clone();
    m.labels = tm.labels;
    m.annotations = tm.annotations;
    m.finalizers = tm.finalizers;
    m.owner_references = vec![crate::workload_owner::owner_ref(rs)];
    pod
}

/// Counts toward replicas: not being deleted, not finished.
pub fn is_active(pod: &api::Pod) -> bool {
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    pod.metadata().deletion_timestamp.is_empty() && phase != "Succeeded" && phase != "Failed"
}

/// The Ready condition's status is True.
pub fn is_ready(pod: &api::Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &api::Pod) -> Option<&api::Condition> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
}

/// When the pod last became ready (None when not ready).
fn ready_since(pod: &api::Pod) -> Option<SystemTime> {
    let c = ready_condition(pod).filter(|c| c.status == "True")?;
    parse_rfc3339_utc(&c.last_transition_time).or(Some(SystemTime::UNIX_EPOCH))
}

/// Ready for at least `min_ready` at `now`; else, when ready, how long
/// until it will be.
pub fn availability(pod: &api::Pod, min_ready: Duration, now: SystemTime) -> Result<(), Duration> {
    let Some(since) = ready_since(pod) else {
        return Err(Duration::MAX);
    };
    if min_ready.is_zero() {
        return Ok(());
    }
    let ready_for = now.duration_since(since).unwrap_or_default();
    if ready_for >= min_ready {
        Ok(())
    } else {
        Err(min_ready - ready_for)
    }
}

/// A pod's place in [`deletion_order`] (smaller goes first).
pub type DeletionRank = (
    bool,
    u8,
    bool,
    Duration,
    Reverse<i64>,
    Reverse<SystemTime>,
    String,
);

/// The order in which surplus pods are deleted, least valuable first
/// (Kubernetes' ActivePods ranking): unscheduled before scheduled; Pending
/// before Unknown before Running; not ready before ready; ready for a
/// shorter time before longer; more container restarts before fewer;
/// newer before older; then by name, so the order is total.
pub fn deletion_order(pod: &api::Pod, now: SystemTime) -> DeletionRank {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let scheduled = spec.is_some_and(|s| !s.node_name.is_empty());
    let phase = match status.map(|s| s.phase.as_str()).unwrap_or("") {
        "" | "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let ready = is_ready(pod);
    // Ready longer = more valuable = later in the order.
    let ready_for = ready_since(pod)
        .map(|t| now.duration_since(t).unwrap_or_default())
        .unwrap_or_default();
    let restarts: i64 = status
        .map(|s| {
            s.container_statuses
                .iter()
                .map(|c| i64::from(c.restart_count))
                .sum()
        })
        .unwrap_or(0);
    let created =
        parse_rfc3339_utc(&pod.metadata().creation_timestamp).unwrap_or(SystemTime::UNIX_EPOCH);
    (
        scheduled,
        phase,
        ready,
        ready_for,
        Reverse(restarts),
        Reverse(created),
        pod.metadata().name.clone(),
    )
}

/// The status of `rs` given its active pods at `now`, and when to look
/// again for a pod that is ready but not yet available (minReadySeconds).
pub fn replica_set_status(
    rs: &api::ReplicaSet,
    active: &[api::Pod],
    now: SystemTime,
) -> (api::ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = Duration::from_secs(spec.min_ready_seconds.max(0) as u64);
    let template_labels = spec
        .template
        .and_then(|t| t.metadata)
        .map(|m| m.labels)
        .unwrap_or_default();
    let mut status = api::ReplicaSetStatus {
        replicas: active.len() as i32,
        observed_generation: rs.metadata().generation,
        conditions: rs
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut recheck: Option<Duration> = None;
    for p in active {
        let labels = &p.metadata().labels;
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            status.fully_labeled_replicas += 1;
        }
        if is_ready(p) {
            status.ready_replicas += 1;
            match availability(p, min_ready, now) {
                Ok(()) => status.available_replicas += 1,
                Err(left) => {
                    // A second's slack: timestamps are whole seconds.
                    let left = left + Duration::from_secs(1);
                    recheck = Some(recheck.map_or(left, |r| r.min(left)));
                }
            }
        }
    }
    (status, recheck)
}

#[cfg(test)]
mod tests {
    use rafter_proto::age::format_rfc3339_utc;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    /// A pod created at `created`, on a node or not, in `phase`, ready
    /// since `ready` (None: not ready).
    fn pod(name: &str, created: u64, node: bool, phase: &str, ready: Option<u64>) -> api::Pod {
        let mut p = api::Pod {
            spec: Some(api::PodSpec {
                node_name: if node { "n1".into() } else { String::new() },
                ..Default::default()
            }),
            status: Some(api::PodStatus {
                phase: phase.into(),
                conditions: ready
                    .map(|t| {
                        vec![api::Condition {
                            r#type: "Ready".into(),
                            status: "True".into(),
                            last_transition_time: format_rfc3339_utc(at(t)),
                            ..Default::default()
                        }]
                    })
                    .unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = p.metadata_mut();
        m.name = name.into();
        m.creation_timestamp = format_rfc3339_utc(at(created));
        m.labels = [("app".to_string(), "web".to_string())].into();
        p
    }

    fn order(pods: &[api::Pod]) -> Vec<String> {
        let mut v = pods.to_vec();
        v.sort_by_key(|p| deletion_order(p, at(1000)));
        v.iter().map(|p| p.metadata().name.clone()).collect()
    }

    #[test]
    fn unscheduled_pods_go_before_scheduled_ones() {
        let pods = [
            pod("bound", 0, true, "Pending", None),
            pod("unbound", 0, false, "Pending", None),
        ];
        assert_eq!(order(&pods), ["unbound", "bound"]);
    }

    #[test]
    fn pending_goes_before_running_and_not_ready_before_ready() {
        let pods = [
            pod("ready", 0, true, "Running", Some(10)),
            pod("running", 0, true, "Running", None),
            pod("pending", 0, true, "Pending", None),
            pod("unknown", 0, true, "Unknown", None),
        ];
        assert_eq!(order(&pods), ["pending", "unknown", "running", "ready"]);
    }

    #[test]
    fn among_ready_pods_the_most_recently_ready_goes_first() {
        let pods = [
            pod("old-ready", 0, true, "Running", Some(10)),
            pod("new-ready", 0, true, "Running", Some(500)),
        ];
        assert_eq!(order(&pods), ["new-ready", "old-ready"]);
    }

    #[test]
    fn among_equal_pods_the_newest_goes_first() {
        let pods = [
            pod("older", 10, true, "Running", Some(100)),
            pod("newer", 20, true, "Running", Some(100)),
        ];
        assert_eq!(order(&pods), ["newer", "older"]);
    }

    #[test]
    fn more_restarts_go_before_fewer() {
        let mut flaky = pod("flaky", 0, true, "Running", Some(100));
        flaky
            .status
            .as_mut()
            .expect("status")
            .container_statuses
            .push(api::ContainerStatus {
                restart_count: 3,
                ..Default::default()
            });
        let steady = pod("steady", 0, true, "Running", Some(100));
        assert_eq!(order(&[steady, flaky]), ["flaky", "steady"]);
    }

    fn rs(replicas: i32, min_ready: i32) -> api::ReplicaSet {
        let mut rs = api::ReplicaSet {
            spec: Some(api::ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: min_ready,
                selector: Some(api::LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(api::PodTemplateSpec {
                    metadata: Some(api::ObjectMeta {
                        labels: [
                            ("app".to_string(), "web".to_string()),
                            ("tier".to_string(), "front".to_string()),
                        ]
                        .into(),
                        annotations: [("a".to_string(), "b".to_string())].into(),
                        ..Default::default()
                    }),
                    spec: Some(api::PodSpec {
                        containers: vec![api::Container {
                            name: "web".into(),
                            image: "demo:1".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                }),
            }),
            ..Default::default()
        };
        let m = rs.metadata_mut();
        m.name = "web-abc".into();
        m.namespace = "default".into();
        m.uid = "rs-uid".into();
        m.generation = 4;
        rs
    }

    #[test]
    fn pods_are_made_from_the_template_with_a_controller_reference() {
        let p = pod_from_template(&rs(3, 0));
        let m = p.metadata();
        assert_eq!(m.name, "");
        assert_eq!(m.generate_name, "web-abc-");
        assert_eq!(m.namespace, "default");
        assert_eq!(m.labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(m.annotations.get("a").map(String::as_str), Some("b"));
        let r = controller_ref(m).expect("controller reference");
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("ReplicaSet", "rs-uid"));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert_eq!(
            p.spec.expect("spec").containers[0].image,
            "demo:1".to_string()
        );
    }

    #[test]
    fn terminating_and_finished_pods_do_not_count() {
        let mut dying = pod("dying", 0, true, "Running", Some(1));
        dying.metadata_mut().deletion_timestamp = format_rfc3339_utc(at(5));
        assert!(!is_active(&dying));
        assert!(!is_active(&pod("done", 0, true, "Succeeded", None)));
        assert!(!is_active(&pod("failed", 0, true, "Failed", None)));
        assert!(is_active(&pod("fine", 0, false, "", None)));
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let mut partial = pod("partial", 0, true, "Running", Some(100));
        partial
            .metadata_mut()
            .labels
            .insert("tier".into(), "back".into());
        let mut full = pod("full", 0, true, "Running", Some(100));
        full.metadata_mut()
            .labels
            .insert("tier".into(), "front".into());
        let mut fresh = pod("fresh", 0, true, "Running", Some(995));
        fresh
            .metadata_mut()
            .labels
            .insert("tier".into(), "front".into());
        let pending = pod("pending", 0, false, "Pending", None);
        let (s, recheck) =
            replica_set_status(&rs(4, 10), &[partial, full, fresh, pending], at(1000));
        assert_eq!(s.replicas, 4);
        assert_eq!(s.fully_labeled_replicas, 2);
        assert_eq!(s.ready_replicas, 3);
        assert_eq!(s.available_replicas, 2, "fresh has been ready 5 s of 10");
        assert_eq!(s.observed_generation, 4);
        assert_eq!(recheck, Some(Duration::from_secs(6)));
        let (s, recheck) = replica_set_status(
            &rs(4, 0),
            &[pod("x", 0, true, "Running", Some(999))],
            at(1000),
        );
        assert_eq!(s.available_replicas, 1);
        assert_eq!(recheck, None);
    }

    #[test]
    fn event_summaries_name_a_few_pods() {
        assert_eq!(summary("Created", &["a".into()]), "Created pod: a");
        let many: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
        assert_eq!(
            summary("Deleted", &many),
            "Deleted 7 pods: p0, p1, p2, p3, p4, ..."
        );
    }
}
