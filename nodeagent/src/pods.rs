//! The pod manager: makes the containers on this node match the pods bound
//! to it, and reports their status.
//!
//! Each pod has its own **worker** (as the kubelet's pod workers): a change
//! of the pod starts a sync of that pod alone, at once, so a slow pod (an
//! image being created, a container being stopped) holds up no other, and
//! a pod's syncs never overlap (a change during one asks for one more).
//! Every second a pass lists the runtime's containers carrying this node's
//! label once and hands each pod its own, so probes and restarts happen
//! without events. The event of the agent's own status write (same
//! resource version) starts nothing. At most 8 pods sync at once. A sync:
//!
//! 1. its **sandbox** (a tiny container holding the pod's network namespace
//!    and IP on the node's pod network) exists and runs; a dead sandbox
//!    takes the pod's containers with it and is recreated;
//! 2. each **container** of the spec runs: created when missing (image
//!    present locally, else `ErrImageNeverPull`), restarted after it exits
//!    as the restartPolicy says, with the back-off of `status.rs`
//!    (`CrashLoopBackOff` while waiting), killed when its liveness probe
//!    fails;
//! 3. the **status** computed from what runs (and the readiness probes) is
//!    written when it differs from the stored one.
//!
//! A pod being deleted (deletionTimestamp set: the API server's graceful
//! deletion) is **terminated** instead: its containers get SIGTERM, then
//! SIGKILL after the deletion's grace period (deletionGracePeriodSeconds;
//! a shorter one given later cuts the wait), nothing is restarted, and its
//! status is written as it goes. Once none of its containers runs, the last
//! status (phase Succeeded or Failed, as Kubernetes' kubelet reports a pod
//! it stopped), then its containers and volume directory are removed and
//! the agent deletes the pod for good: grace period 0, with the pod's uid
//! as precondition, so a namesake created meanwhile is left alone.
//!
//! Containers of pods that are gone anyway (force-deleted, or deleted
//! while the agent was down) are stopped (SIGTERM, then SIGKILL after the
//! pod's grace period) and removed, then their volume directory. Nothing is remembered outside the
//! runtime: the labels say which pod and container each one is and how
//! often it was restarted, so a restarted agent adopts what runs.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rafter_client::informer::{Cache, Event, Events};
use rafter_client::{Client, DeleteOptions};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::probe::{ProbeKind, Probers, Target};
use crate::runtime::{
    self as rt, ContainerConfig, ContainerInfo, ContainerRunState, ContainerRuntime,
    NetworkAttachment,
};
use crate::status::{self, ContainerView};
use crate::volumes::{ConfigSource, mounts};

/// How many pods are synced at once.
const PARALLEL_PODS: usize = 8;
/// Grace period of a pod that does not say.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Label with the pod's termination grace period (seconds), so a pod that
/// is gone can still be stopped as it asked.
pub const LABEL_GRACE: &str = "io.rafter.pod.termination-grace-period";

/// What the pod manager needs to know about its node.
#[derive(Debug, Clone)]
pub struct PodManagerOptions {
    pub node: String,
    pub host_ip: String,
    /// The node's pod network (a Docker bridge network with its podCIDR).
    pub network: String,
    /// `<data-dir>/pods`: per-pod volume directories.
    pub pods_dir: PathBuf,
    /// The resolver of pods (the agent's DNS responder), if any.
    pub dns_servers: Vec<String>,
    /// The cluster's DNS domain (`cluster.local`): pods search
    /// `<namespace>.svc.<domain>`, `svc.<domain>` and `<domain>`, so a
    /// Service is found by its bare name in its own namespace.
    pub cluster_domain: String,
}

/// The pod manager of one node.
pub struct PodManager {
    runtime: Arc<dyn ContainerRuntime>,
    client: Client,
    pods: Cache<api::Pod>,
    options: PodManagerOptions,
    config: ConfigSource,
    probers: Probers,
    /// Containers being stopped in the background, with when their stop
    /// turns into SIGKILL.
    stopping: Arc<Mutex<HashMap<String, Instant>>>,
    workers: Mutex<Workers>,
    /// At most [`PARALLEL_PODS`] pods are synced at once.
    slots: tokio::sync::Semaphore,
}

/// The containers of one pod, by container name (sandbox under
/// [`rt::SANDBOX`]), newest first.
type PodContainers = HashMap<String, Vec<ContainerInfo>>;

/// Groups containers by pod uid, then by container name, newest first.
fn by_pod(containers: Vec<ContainerInfo>) -> HashMap<String, PodContainers> {
    let mut by_pod: HashMap<String, PodContainers> = HashMap::new();
    for c in containers {
        let uid = label(&c, rt::LABEL_POD_UID).to_string();
        let name = label(&c, rt::LABEL_CONTAINER).to_string();
        by_pod
            .entry(uid)
            .or_default()
            .entry(name)
            .or_default()
            .push(c);
    }
    for pod in by_pod.values_mut() {
        for list in pod.values_mut() {
            list.sort_by_key(|c| std::cmp::Reverse(restart_count(c)));
        }
    }
    by_pod
}

/// The pod uids with a volume directory under `pods_dir`.
async fn pod_dirs(pods_dir: &std::path::Path) -> Vec<String> {
    let mut uids = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(pods_dir).await else {
        return uids;
    };
    while let Ok(Some(e)) = entries.next_entry().await {
        if let Some(name) = e.file_name().to_str() {
            uids.push(name.to_string());
        }
    }
    uids
}

/// Which pod a worker syncs: the uid tells a namesake apart.
#[derive(Debug, Clone)]
struct PodKey {
    namespace: String,
    name: String,
    uid: String,
}

impl PodKey {
    fn of(pod: &api::Pod) -> Self {
        let m = pod.metadata();
        PodKey {
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
        }
    }
}

/// The pod workers' bookkeeping.
#[derive(Debug, Default)]
struct Workers {
    /// Pods whose worker runs, with whether one more sync was asked.
    busy: HashMap<String, bool>,
    /// How many syncs finished on this node, and when (in that count)
    /// each pod's last one did.
    finishes: u64,
    finished: HashMap<String, u64>,
    /// The resource version of each pod's last status written here.
    written: HashMap<String, String>,
}

fn label<'a>(c: &'a ContainerInfo, key: &str) -> &'a str {
    c.labels.get(key).map(String::as_str).unwrap_or("")
}

fn restart_count(c: &ContainerInfo) -> u32 {
    label(c, rt::LABEL_RESTART_COUNT).parse().unwrap_or(0)
}

fn running(c: &ContainerInfo) -> bool {
    matches!(c.state, ContainerRunState::Running { .. })
}

/// A runtime name for a pod's container: unique per pod and restart.
fn container_name(pod: &api::Pod, container: &str, restart: u32) -> String {
    let m = pod.metadata();
    let uid: String = m
        .uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    format!(
        "rafter_{container}_{}_{}_{uid}_{restart}",
        m.name, m.namespace
    )
}

fn grace_of(pod: &api::Pod) -> Duration {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(DEFAULT_GRACE)
}

/// The grace period of a pod being deleted: the deletion's, which may be
/// shorter than the spec's.
fn deletion_grace_of(pod: &api::Pod) -> Duration {
    pod.metadata()
        .deletion_grace_period_seconds
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or_else(|| grace_of(pod))
}

/// CPU millicores and memory bytes of a container's limits (requests when
/// no limit is given for cpu: the share it asked for).
fn limits(c: &api::Container) -> (u64, u64) {
    let r = c.resources.clone().unwrap_or_default();
    let cpu = r
        .limits
        .get("cpu")
        .and_then(|q| q.parse::<rafter_proto::quantity::Quantity>().ok())
        .map(|q| q.millis().max(0) as u64)
        .unwrap_or(0);
    let memory = r
        .limits
        .get("memory")
        .and_then(|q| q.parse::<rafter_proto::quantity::Quantity>().ok())
        .map(|q| q.value().max(0) as u64)
        .unwrap_or(0);
    (cpu, memory)
}

impl PodManager {
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        client: Client,
        pods: Cache<api::Pod>,
        options: PodManagerOptions,
    ) -> Self {
        PodManager {
            config: ConfigSource::new(client.clone()),
            runtime,
            client,
            pods,
            options,
            probers: Probers::default(),
            stopping: Arc::default(),
            workers: Mutex::default(),
            slots: tokio::sync::Semaphore::new(PARALLEL_PODS),
        }
    }

    /// The DNS search path of a pod in `namespace` (none without a resolver).
    fn dns_search(&self, namespace: &str) -> Vec<String> {
        if self.options.dns_servers.is_empty() || self.options.cluster_domain.is_empty() {
            return Vec::new();
        }
        let domain = &self.options.cluster_domain;
        vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ]
    }

    fn labels(
        &self,
        pod: &api::Pod,
        container: &str,
        restart: u32,
    ) -> std::collections::BTreeMap<String, String> {
        let m = pod.metadata();
        [
            (rt::LABEL_NODE, self.options.node.clone()),
            (rt::LABEL_POD_UID, m.uid.clone()),
            (rt::LABEL_POD_NAMESPACE, m.namespace.clone()),
            (rt::LABEL_POD_NAME, m.name.clone()),
            (rt::LABEL_CONTAINER, container.to_string()),
            (rt::LABEL_RESTART_COUNT, restart.to_string()),
            (LABEL_GRACE, grace_of(pod).as_secs().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs the pod workers until `shutdown`: a pod is synced by its own
    /// worker as soon as it changes (`events`: the informer of the node's
    /// pods), and every pod of the node, with the containers of pods that
    /// are gone, every `period`.
    pub async fn run(
        self: Arc<Self>,
        mut events: Events<api::Pod>,
        period: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.sync_all().await {
                        tracing::warn!(error = %e, "pod sync pass failed");
                    }
                }
                e = events.recv() => match e {
                    Some(Event::Applied(pod)) => {
                        if !self.own_write(&pod) {
                            self.dispatch(PodKey::of(&pod), None);
                        }
                    }
                    Some(Event::Deleted(pod)) => self.dispatch(PodKey::of(&pod), None),
                    None => break,
                },
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Whether `pod` is exactly what this agent's last status write made
    /// it: the event of our own write, with nothing new to do.
    fn own_write(&self, pod: &api::Pod) -> bool {
        let m = pod.metadata();
        let workers = self.workers.lock().expect("workers lock");
        workers.written.get(&m.uid) == Some(&m.resource_version)
    }

    /// One pass over every pod and container of the node: each pod (and
    /// each pod that is gone but has containers) goes to its worker with
    /// the containers just listed.
    pub async fn sync_all(self: &Arc<Self>) -> Result<(), rt::RuntimeError> {
        let listed_after = self.workers.lock().expect("workers lock").finishes;
        let containers = self
            .runtime
            .list(&[(rt::LABEL_NODE, self.options.node.as_str())])
            .await?;
        let alive: HashSet<String> = containers
            .iter()
            .filter(|c| running(c))
            .map(|c| c.id.clone())
            .collect();
        self.probers.retain(&alive);
        let mut by_pod = by_pod(containers);
        // Volume directories, read before the pods: a directory is made by
        // a worker of a pod already in the cache, so one whose pod is not
        // in the list below belongs to a pod that is gone.
        let dirs = pod_dirs(&self.options.pods_dir).await;
        let pods: Vec<api::Pod> = self
            .pods
            .list()
            .into_iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.node_name == self.options.node)
            })
            .collect();
        let wanted: HashSet<String> = pods.iter().map(|p| p.metadata().uid.clone()).collect();
        {
            let mut workers = self.workers.lock().expect("workers lock");
            // Volumes of pods that are gone (force-deleted, or deleted while
            // the agent was down) once none of their containers is left and
            // no worker of theirs ran since the containers were listed.
            for uid in dirs {
                let idle = !workers.busy.contains_key(&uid)
                    && workers
                        .finished
                        .get(&uid)
                        .is_none_or(|at| *at <= listed_after);
                if !wanted.contains(&uid) && !by_pod.contains_key(&uid) && idle {
                    let dir = self.options.pods_dir.join(&uid);
                    tracing::info!(dir = %dir.display(), "removing the volumes of a pod that is gone");
                    if let Err(e) = std::fs::remove_dir_all(&dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "pod volumes not removed");
                    }
                }
            }
            workers.finished.retain(|uid, _| wanted.contains(uid));
            workers.written.retain(|uid, _| wanted.contains(uid));
        }
        for pod in &pods {
            let existing = by_pod.remove(&pod.metadata().uid).unwrap_or_default();
            self.dispatch_listed(PodKey::of(pod), existing, listed_after);
        }
        // Containers of pods that are gone.
        for (uid, existing) in by_pod {
            let Some(c) = existing.values().flatten().next() else {
                continue;
            };
            let key = PodKey {
                namespace: label(c, rt::LABEL_POD_NAMESPACE).to_string(),
                name: label(c, rt::LABEL_POD_NAME).to_string(),
                uid,
            };
            self.dispatch_listed(key, existing, listed_after);
        }
        Ok(())
    }

    /// Hands a pod to its worker with containers listed when the workers
    /// had finished `listed_after` syncs: a pod whose worker finished a
    /// sync since (or is busy) lists its containers again rather than act
    /// on a list that misses what it just started.
    fn dispatch_listed(self: &Arc<Self>, key: PodKey, existing: PodContainers, listed_after: u64) {
        let fresh = {
            let workers = self.workers.lock().expect("workers lock");
            workers
                .finished
                .get(&key.uid)
                .is_none_or(|at| *at <= listed_after)
        };
        self.dispatch(key, fresh.then_some(existing));
    }

    /// Starts the pod's worker, or asks the running one for one more sync
    /// (with a fresh list of its containers).
    fn dispatch(self: &Arc<Self>, key: PodKey, listed: Option<PodContainers>) {
        {
            let mut workers = self.workers.lock().expect("workers lock");
            if let Some(again) = workers.busy.get_mut(&key.uid) {
                *again = true;
                return;
            }
            workers.busy.insert(key.uid.clone(), false);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut listed = listed;
            loop {
                let synced = {
                    let _slot = this.slots.acquire().await.expect("slots never close");
                    this.sync_one(&key, listed.take()).await
                };
                if let Err(e) = synced {
                    tracing::warn!(pod = %key.name, namespace = %key.namespace, error = %e, "pod sync failed; retrying");
                }
                let mut workers = this.workers.lock().expect("workers lock");
                workers.finishes += 1;
                let at = workers.finishes;
                workers.finished.insert(key.uid.clone(), at);
                match workers.busy.get_mut(&key.uid) {
                    Some(again) if *again => *again = false,
                    _ => {
                        workers.busy.remove(&key.uid);
                        return;
                    }
                }
            }
        });
    }

    /// One sync of one pod: its containers made to match the pod, or, when
    /// the pod is gone (or is a namesake now), stopped and removed.
    async fn sync_one(
        self: &Arc<Self>,
        key: &PodKey,
        listed: Option<PodContainers>,
    ) -> Result<(), rt::RuntimeError> {
        let existing = match listed {
            Some(l) => l,
            None => {
                let containers = self
                    .runtime
                    .list(&[
                        (rt::LABEL_NODE, self.options.node.as_str()),
                        (rt::LABEL_POD_UID, key.uid.as_str()),
                    ])
                    .await?;
                by_pod(containers).remove(&key.uid).unwrap_or_default()
            }
        };
        let pod = self.pods.get(&key.namespace, &key.name).filter(|p| {
            p.metadata().uid == key.uid
                && p.spec
                    .as_ref()
                    .is_some_and(|s| s.node_name == self.options.node)
        });
        match pod {
            Some(pod) if pod.metadata().deletion_timestamp.is_empty() => {
                self.sync_pod(pod, existing).await
            }
            Some(pod) => self.terminate_pod(pod, existing).await,
            None => {
                // Gone: force-deleted, or deleted while the agent was down.
                // Stopped in the background (grace periods may be long).
                for c in existing.values().flatten() {
                    self.stop_and_remove(c.clone());
                }
                Ok(())
            }
        }
    }

    /// Stops (and removes) a container of a pod that is gone, with the
    /// grace period it was created with.
    fn stop_and_remove(self: &Arc<Self>, c: ContainerInfo) {
        let grace = label(&c, LABEL_GRACE)
            .parse()
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_GRACE);
        self.stop_in_background(c, grace, true);
    }

    /// SIGTERM, SIGKILL after `grace`, then remove when asked — in a task of
    /// its own, so a long grace period holds up no other pod. A container
    /// already being stopped is left to that task, unless this stop would
    /// kill it sooner (a deletion's grace period shortened): then a second
    /// stop with the shorter grace runs beside the first.
    fn stop_in_background(&self, c: ContainerInfo, grace: Duration, remove: bool) {
        let kill_at = Instant::now() + grace;
        {
            let mut stopping = self.stopping.lock().expect("stopping lock");
            if stopping.get(&c.id).is_some_and(|at| *at <= kill_at) {
                return;
            }
            stopping.insert(c.id.clone(), kill_at);
        }
        let runtime = self.runtime.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            if running(&c) {
                tracing::info!(container = %c.name, ?grace, "stopping container");
                if let Err(e) = runtime.stop(&c.id, grace).await {
                    tracing::warn!(container = %c.name, error = %e, "stop failed");
                }
            }
            if remove && let Err(e) = runtime.remove(&c.id).await {
                tracing::warn!(container = %c.name, error = %e, "remove failed");
            }
            let mut stopping = stopping.lock().expect("stopping lock");
            // A shorter stop started meanwhile owns the entry now.
            if stopping.get(&c.id) == Some(&kill_at) {
                stopping.remove(&c.id);
            }
        });
    }

    /// A pod being deleted: stops its containers with the deletion's grace
    /// period and reports its status until none runs; then writes the last
    /// status, removes its containers and volumes, and deletes the pod for
    /// good (grace 0, its uid as precondition). Nothing is restarted.
    async fn terminate_pod(
        &self,
        pod: api::Pod,
        mut existing: PodContainers,
    ) -> Result<(), rt::RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let m = pod.metadata().clone();
        let grace = deletion_grace_of(&pod);
        let sandboxes = existing.remove(rt::SANDBOX).unwrap_or_default();
        // Every app container of the pod, in the spec or not any more.
        let app: Vec<ContainerInfo> = existing.values().flatten().cloned().collect();
        let views: Vec<ContainerView> = spec
            .containers
            .iter()
            .map(|c| {
                let list = existing.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
                ContainerView {
                    current: list.first().cloned(),
                    previous: list.get(1).cloned(),
                    waiting: None,
                    ready: false,
                    restart_count: list.first().map(restart_count).unwrap_or(0),
                }
            })
            .collect();
        let mut stopped = true;
        for c in app.iter().filter(|c| running(c)) {
            stopped = false;
            self.stop_in_background(c.clone(), grace, false);
        }
        let pod_ip = sandboxes
            .iter()
            .find(|c| running(c))
            .and_then(|c| c.ip)
            .map(|ip| ip.to_string())
            .or_else(|| pod.status.as_ref().map(|s| s.pod_ip.clone()))
            .unwrap_or_default();
        let now = SystemTime::now();
        let mut next = status::pod_status(&pod, &views, &pod_ip, &self.options.host_ip, now);
        if !stopped {
            self.write_status(&pod, next).await;
            return Ok(());
        }
        // Nothing runs any more. A pod with no container left (a round
        // whose delete below failed) has nothing new to report.
        if !app.is_empty() {
            next.phase = status::stopped_phase(&next.container_statuses).into();
            if !self.write_status(&pod, next).await {
                return Ok(()); // the last status first: again next sync
            }
        }
        for c in app.iter().chain(sandboxes.iter()) {
            self.runtime.remove(&c.id).await?;
        }
        match tokio::fs::remove_dir_all(self.options.pods_dir.join(&m.uid)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pod = %m.name, error = %e, "pod volumes not removed");
            }
        }
        if m.deletion_grace_period_seconds == Some(0) {
            // Already deleted with grace 0: it only waits for finalizers.
            return Ok(());
        }
        let options = DeleteOptions::with_uid(&m.uid).force();
        match self
            .client
            .delete_object::<api::Pod>(&m.namespace, &m.name, &options)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %m.name, namespace = %m.namespace, "pod terminated and deleted");
            }
            // Gone already, or a namesake: nothing of ours is left.
            Err(e) if e.is_reason("NotFound") || e.is_reason("Conflict") => {}
            Err(e) => {
                tracing::warn!(pod = %m.name, error = %e, "terminated pod not deleted; retrying");
            }
        }
        Ok(())
    }

    /// Makes one pod's containers match its spec, then reports its status.
    async fn sync_pod(
        &self,
        pod: api::Pod,
        mut existing: PodContainers,
    ) -> Result<(), rt::RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let m = pod.metadata().clone();

        // 1. The sandbox.
        let sandboxes = existing.remove(rt::SANDBOX).unwrap_or_default();
        let sandbox = match sandboxes.iter().find(|c| running(c)) {
            Some(s) => s.clone(),
            None => {
                // A dead sandbox takes the pod's containers with it (their
                // network namespace is gone); restart counts carry on.
                for c in sandboxes.iter().chain(existing.values().flatten()) {
                    self.runtime.remove(&c.id).await?;
                }
                let attempt = sandboxes.first().map(|c| restart_count(c) + 1).unwrap_or(0);
                let hostname = if spec.hostname.is_empty() {
                    m.name.clone()
                } else {
                    spec.hostname.clone()
                };
                let config = ContainerConfig {
                    name: container_name(&pod, rt::SANDBOX, attempt),
                    image: rt::SANDBOX_IMAGE.into(),
                    command: Vec::new(),
                    args: Vec::new(),
                    env: Vec::new(),
                    working_dir: String::new(),
                    mounts: Vec::new(),
                    labels: self.labels(&pod, rt::SANDBOX, attempt),
                    network: NetworkAttachment::PodNetwork {
                        network: self.options.network.clone(),
                    },
                    hostname: hostname.chars().take(63).collect(),
                    dns_servers: self.options.dns_servers.clone(),
                    dns_search: self.dns_search(&m.namespace),
                    cpu_millis: 0,
                    memory_bytes: 0,
                };
                let id = self.runtime.create(&config).await?;
                self.runtime.start(&id).await?;
                tracing::info!(pod = %m.name, namespace = %m.namespace, "pod sandbox started");
                // Keep the previous containers' restart counts: the app
                // containers are recreated with the next count.
                let carried: HashMap<String, u32> = existing
                    .iter()
                    .filter_map(|(name, list)| {
                        list.first().map(|c| (name.clone(), restart_count(c) + 1))
                    })
                    .collect();
                existing.clear();
                let info = self.runtime.inspect(&id).await?;
                return self.sync_containers(&pod, &info, existing, carried).await;
            }
        };
        for extra in sandboxes.iter().filter(|c| c.id != sandbox.id) {
            self.runtime.remove(&extra.id).await?;
        }
        self.sync_containers(&pod, &sandbox, existing, HashMap::new())
            .await
    }

    async fn sync_containers(
        &self,
        pod: &api::Pod,
        sandbox: &ContainerInfo,
        mut existing: PodContainers,
        carried: HashMap<String, u32>,
    ) -> Result<(), rt::RuntimeError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let m = pod.metadata().clone();
        let pod_ip = sandbox.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let now = SystemTime::now();
        let volumes_dir = self.options.pods_dir.join(&m.uid).join("volumes");
        let volumes = self.config.prepare_volumes(pod, &volumes_dir).await;
        let volumes = &volumes;
        let m = &m;

        let mut views = Vec::new();
        for c in &spec.containers {
            let mut list = existing.remove(&c.name).unwrap_or_default();
            let mut view = ContainerView {
                ready: true,
                ..Default::default()
            };
            // Keep the newest two (current and last state); remove older.
            for old in list.iter().skip(2) {
                self.runtime.remove(&old.id).await?;
            }
            list.truncate(2);
            let current = list.first().cloned();
            view.previous = list.get(1).cloned();
            view.restart_count = current
                .as_ref()
                .map(restart_count)
                .or_else(|| carried.get(&c.name).copied())
                .unwrap_or(0);

            let start_new = |restart: u32| async move {
                let volumes = volumes.as_ref().map_err(|e| e.0.clone())?;
                let env = self.config.env(&m.namespace, c).await.map_err(|e| e.0)?;
                let mounts = mounts(c, volumes).map_err(|e| e.0)?;
                let (cpu_millis, memory_bytes) = limits(c);
                let config = ContainerConfig {
                    name: container_name(pod, &c.name, restart),
                    image: c.image.clone(),
                    command: c.command.clone(),
                    args: c.args.clone(),
                    env,
                    working_dir: c.working_dir.clone(),
                    mounts,
                    labels: self.labels(pod, &c.name, restart),
                    network: NetworkAttachment::Container {
                        id: sandbox.id.clone(),
                    },
                    hostname: String::new(),
                    dns_servers: Vec::new(),
                    dns_search: Vec::new(),
                    cpu_millis,
                    memory_bytes,
                };
                let result: Result<ContainerInfo, rt::RuntimeError> = async {
                    let id = self.runtime.create(&config).await?;
                    self.runtime.start(&id).await?;
                    self.runtime.inspect(&id).await
                }
                .await;
                result.map_err(|e| match e {
                    rt::RuntimeError::ImageNotPresent { .. } => {
                        format!("ErrImageNeverPull\u{0}{e}")
                    }
                    other => other.to_string(),
                })
            };

            match &current {
                None => match start_new(view.restart_count).await {
                    Ok(info) => {
                        tracing::info!(pod = %m.name, container = %c.name, "container started");
                        view.current = Some(info);
                    }
                    Err(why) => view.waiting = Some(waiting_for(&why)),
                },
                Some(cur) => match &cur.state {
                    ContainerRunState::Running { .. } => {
                        view.current = Some(cur.clone());
                        let target = Target {
                            container_id: cur.id.clone(),
                            pod_ip: pod_ip.clone(),
                            container: c.clone(),
                        };
                        if let Some(p) = &c.liveness_probe
                            && !self
                                .probers
                                .verdict(&self.runtime, ProbeKind::Liveness, p, &target)
                        {
                            // Stopped in the background (the grace period may
                            // be long); the next syncs restart it per policy.
                            tracing::info!(pod = %m.name, container = %c.name, "liveness probe failed; restarting");
                            self.stop_in_background(cur.clone(), grace_of(pod), false);
                            view.ready = false;
                        }
                        view.ready = match &c.readiness_probe {
                            Some(p) => self.probers.verdict(
                                &self.runtime,
                                ProbeKind::Readiness,
                                p,
                                &target,
                            ),
                            None => true,
                        } && view.current.as_ref().is_some_and(running);
                    }
                    ContainerRunState::Created => {
                        self.runtime.start(&cur.id).await?;
                        view.current = Some(self.runtime.inspect(&cur.id).await?);
                    }
                    ContainerRunState::Exited {
                        exit_code,
                        started_at,
                        finished_at,
                        ..
                    } => {
                        view.current = Some(cur.clone());
                        view.ready = false;
                        if status::should_restart(&spec.restart_policy, *exit_code) {
                            let ran = match (started_at, finished_at) {
                                (Some(s), Some(f)) => f.duration_since(*s).unwrap_or_default(),
                                _ => Duration::ZERO,
                            };
                            let wait = status::backoff(view.restart_count, ran);
                            let since = finished_at
                                .and_then(|f| now.duration_since(f).ok())
                                .unwrap_or(wait);
                            if since >= wait {
                                match start_new(view.restart_count + 1).await {
                                    Ok(info) => {
                                        tracing::info!(pod = %m.name, container = %c.name, restarts = view.restart_count + 1, "container restarted");
                                        view.previous = Some(cur.clone());
                                        view.current = Some(info);
                                        view.restart_count += 1;
                                        if let Some(p) = list.get(1) {
                                            self.runtime.remove(&p.id).await?;
                                        }
                                    }
                                    Err(why) => view.waiting = Some(waiting_for(&why)),
                                }
                            } else {
                                view.waiting = Some((
                                    "CrashLoopBackOff".into(),
                                    format!(
                                        "back-off {} restarting failed container={} pod={}",
                                        rafter_proto::age::human_duration(wait),
                                        c.name,
                                        m.name
                                    ),
                                ));
                            }
                        }
                    }
                },
            }
            if view.current.as_ref().is_none_or(|c| !running(c)) {
                view.ready = false;
            }
            views.push(view);
        }
        // Containers no longer in the spec.
        for c in existing.values().flatten() {
            self.runtime.remove(&c.id).await?;
        }
        self.report(pod, &views, &pod_ip, now).await;
        Ok(())
    }

    /// Writes the pod's status when it changed.
    async fn report(&self, pod: &api::Pod, views: &[ContainerView], pod_ip: &str, now: SystemTime) {
        let next = status::pod_status(pod, views, pod_ip, &self.options.host_ip, now);
        self.write_status(pod, next).await;
    }

    /// Writes `next` as the pod's status unless that is what it says.
    /// Whether the stored status is `next` now.
    async fn write_status(&self, pod: &api::Pod, next: api::PodStatus) -> bool {
        if pod.status.as_ref() == Some(&next) {
            return true;
        }
        let mut updated = pod.clone();
        updated.status = Some(next);
        match self.client.update_status(&updated).await {
            Ok(written) => {
                let m = written.metadata();
                let mut workers = self.workers.lock().expect("workers lock");
                workers
                    .written
                    .insert(m.uid.clone(), m.resource_version.clone());
                true
            }
            // The cache was behind (the next sync has the newer pod), or
            // the pod is gone.
            Err(e) if e.is_reason("Conflict") || e.is_reason("NotFound") => false,
            Err(e) => {
                tracing::warn!(pod = %pod.metadata().name, error = %e, "pod status not written");
                false
            }
        }
    }
}

/// The waiting reason and message of a container that could not start.
fn waiting_for(why: &str) -> (String, String) {
    match why.split_once('\u{0}') {
        Some((reason, message)) => (reason.to_string(), message.to_string()),
        None => ("CreateContainerConfigError".into(), why.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_are_unique_per_pod_and_restart() {
        let mut pod = api::Pod::default();
        let m = pod.metadata_mut();
        m.name = "web-1".into();
        m.namespace = "default".into();
        m.uid = "0123abcd-ef".into();
        assert_eq!(
            container_name(&pod, "web", 2),
            "rafter_web_web-1_default_0123abcd_2"
        );
        assert_eq!(
            waiting_for("ErrImageNeverPull\u{0}image x missing").0,
            "ErrImageNeverPull"
        );
        assert_eq!(
            waiting_for("secret \"s\" not found").0,
            "CreateContainerConfigError"
        );
    }

    #[test]
    fn limits_come_from_the_container_resources() {
        let c = api::Container {
            resources: Some(api::ResourceRequirements {
                limits: [
                    ("cpu".to_string(), "500m".to_string()),
                    ("memory".to_string(), "64Mi".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(limits(&c), (500, 64 << 20));
        assert_eq!(limits(&api::Container::default()), (0, 0));
    }
}
