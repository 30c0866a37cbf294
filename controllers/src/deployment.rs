//! The Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets it owns, one per template.
//!
//! The ReplicaSet of a template is named `<deployment>-<hash>`, where the
//! hash ([`template_hash`]) is of the Deployment's pod template; its
//! selector and template labels carry `pod-template-hash: <hash>` so the
//! pods of different templates never mix. The ReplicaSet whose template
//! equals the Deployment's (ignoring that label) is the *new* one; every
//! other owned ReplicaSet is *old*.
//!
//! One reconcile follows Kubernetes' `syncDeployment`:
//!
//! - claim ReplicaSets (adopt matching orphans, release non-matching ones);
//! - keep the Progressing condition's pause state (DeploymentPaused /
//!   DeploymentResumed);
//! - paused, or a scaling event (an active ReplicaSet's
//!   `deployment.kubernetes.io/desired-replicas` differs from
//!   spec.replicas): scale only ([`proportional_sizes`] spreads a change
//!   over the ReplicaSets of an unfinished rollout);
//! - otherwise roll: **RollingUpdate** scales the new ReplicaSet up within
//!   replicas + maxSurge ([`new_replica_set_replicas`]) and old ones down
//!   while at least replicas - maxUnavailable stay available
//!   ([`old_scale_down`]); **Recreate** scales every old ReplicaSet to 0,
//!   waits until their pods are gone, then scales the new one up;
//! - when complete, deletes old ReplicaSets beyond revisionHistoryLimit;
//! - writes status ([`calculate_status`]) with the Available and
//!   Progressing conditions and requeues for the progress deadline.
//!
//! Revisions: each ReplicaSet carries `deployment.kubernetes.io/revision`;
//! a ReplicaSet that becomes the new one gets the highest revision + 1 (a
//! rollback — `rafter rollout undo`, which copies an old ReplicaSet's
//! template into the Deployment as kubectl does — thus gives an old
//! ReplicaSet a new revision, and its old one is kept in
//! `deployment.kubernetes.io/revision-history`). The Deployment carries the
//! new ReplicaSet's revision, and its annotations (so
//! `kubernetes.io/change-cause`) are copied onto the new ReplicaSet.
//!
//! Every write is a compare-and-swap on the cached object; a Conflict
//! requeues. After writing a ReplicaSet the controller waits for the cache
//! to show that write before deciding again, so it never scales from a
//! ReplicaSet count it has already changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rafter_client::events::{EventType, Recorder};
use rafter_client::informer::{Cache, Event, Events, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::age::{format_rfc3339_utc, parse_rfc3339_utc};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::informer_events;
use crate::runtime::{self, Action, Key, Queue, Reconciler, key_of};
use crate::workload_owner::{
    Claim, adopted, claim, controller_ref, owner_ref, parse_selector, released,
};

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// A ReplicaSet's revision, and the Deployment's current one.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// spec.replicas of the Deployment when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge of the Deployment when it last scaled this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Why a revision was made (set by the user on the Deployment).
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Annotations not copied from a Deployment to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Progressing condition reasons, as Kubernetes spells them.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// How long a ReplicaSet write may take to show in the cache before the
/// controller stops waiting for it.
const CACHE_WAIT: Duration = Duration::from_secs(10);

const WORKERS: usize = 2;

/// Runs the Deployment controller until `shutdown` is cancelled.
pub async fn run(client: Client, informers: &Informers, shutdown: CancellationToken) {
    let (deployments, d_events) = informers.start::<api::Deployment>("", "");
    let (replica_sets, rs_events) = informers.start::<api::ReplicaSet>("", "");
    let synced = async {
        deployments.wait_synced().await;
        replica_sets.wait_synced().await;
    };
    tokio::select! {
        _ = synced => {}
        _ = shutdown.cancelled() => return,
    }
    let queue = Queue::new();
    {
        let queue = queue.clone();
        informer_events::forward(d_events, shutdown.clone(), move |e| {
            queue.add(key_of(informer_events::object(&e)))
        });
    }
    tokio::spawn(forward_replica_sets(
        rs_events,
        deployments.clone(),
        queue.clone(),
        shutdown.clone(),
    ));
    let controller = Arc::new(DeploymentController {
        recorder: Recorder::new(client.clone(), "deployment-controller"),
        client,
        deployments,
        replica_sets,
        written: Mutex::default(),
    });
    runtime::run(controller, queue, WORKERS, shutdown).await;
}

/// A ReplicaSet change queues its Deployment, or for an orphan every
/// Deployment that could adopt it.
async fn forward_replica_sets(
    mut events: Events<api::ReplicaSet>,
    deployments: Cache<api::Deployment>,
    queue: Queue,
    shutdown: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            e = events.recv() => e,
            _ = shutdown.cancelled() => return,
        };
        let rs = match ev {
            Some(Event::Applied(rs) | Event::Deleted(rs)) => rs,
            None => return,
        };
        let m = rs.metadata();
        match controller_ref(m) {
            Some(r) if r.kind == "Deployment" => queue.add((m.namespace.clone(), r.name.clone())),
            Some(_) => {}
            None => {
                for d in deployments.list() {
                    let dm = d.metadata();
                    let selector = d.spec.as_ref().and_then(|s| s.selector.clone());
                    if dm.namespace == m.namespace
                        && parse_selector(&selector).is_some_and(|s| s.matches(&m.labels))
                    {
                        queue.add(key_of(&d));
                    }
                }
            }
        }
    }
}

/// See the module doc.
pub struct DeploymentController {
    client: Client,
    recorder: Recorder,
    deployments: Cache<api::Deployment>,
    replica_sets: Cache<api::ReplicaSet>,
    /// ReplicaSets this controller wrote: the revision written, when, and
    /// for which Deployment.
    written: Mutex<HashMap<Key, (u64, Instant, String)>>,
}

fn revision_of<K: Object>(obj: &K) -> u64 {
    obj.metadata().resource_version.parse().unwrap_or(0)
}

fn now_string() -> String {
    format_rfc3339_utc(SystemTime::now())
}

impl DeploymentController {
    /// Remembers a ReplicaSet write, so the next reconcile of its
    /// Deployment waits until the cache shows it.
    fn note_written(&self, rs: &api::ReplicaSet, d: &api::Deployment) {
        self.written.lock().expect("written lock").insert(
            key_of(rs),
            (revision_of(rs), Instant::now(), d.metadata().name.clone()),
        );
    }

    /// Whether every ReplicaSet write made for Deployment `key` shows in
    /// the cache (or the wait for it has timed out).
    fn cache_caught_up(&self, key: &Key) -> bool {
        let mut written = self.written.lock().expect("written lock");
        written.retain(|rs_key, (rev, at, _)| {
            if at.elapsed() > CACHE_WAIT {
                return false;
            }
            match self.replica_sets.get(&rs_key.0, &rs_key.1) {
                Some(rs) => revision_of(&rs) < *rev,
                None => true,
            }
        });
        !written
            .iter()
            .any(|(rs_key, (_, _, owner))| rs_key.0 == key.0 && *owner == key.1)
    }

    /// Sets `rs` to `replicas` (and the replica annotations); records a
    /// ScalingReplicaSet event when the size changed. Returns it as written.
    async fn scale(
        &self,
        rs: &api::ReplicaSet,
        replicas: i32,
        d: &api::Deployment,
    ) -> Result<api::ReplicaSet, Error> {
        let current = rs_replicas(rs);
        let mut next = rs.clone();
        let annotations_changed =
            set_replicas_annotations(&mut next, d_replicas(d), d_replicas(d) + max_surge(d));
        if current == replicas && !annotations_changed {
            return Ok(rs.clone());
        }
        next.spec.get_or_insert_default().replicas = Some(replicas);
        let written = self.client.update(&next).await?;
        self.note_written(&written, d);
        if current != replicas {
            let verb = if replicas > current { "up" } else { "down" };
            let message = format!(
                "Scaled {verb} replica set {} to {replicas}",
                rs.metadata().name
            );
            self.recorder
                .record(d, EventType::Normal, "ScalingReplicaSet", &message)
                .await;
        }
        Ok(written)
    }

    /// The owned ReplicaSets of `d`, after adopting and releasing.
    async fn claim_replica_sets(&self, d: &api::Deployment) -> Result<Vec<api::ReplicaSet>, Error> {
        let dm = d.metadata();
        let deleting = !dm.deletion_timestamp.is_empty();
        let selector = parse_selector(&d.spec.as_ref().and_then(|s| s.selector.clone()));
        let mut owned = Vec::new();
        let mut fresh_checked = false;
        for rs in self.replica_sets.list() {
            if rs.metadata().namespace != dm.namespace {
                continue;
            }
            match claim(&dm.uid, deleting, selector.as_ref(), rs.metadata()) {
                Claim::Owned => owned.push(rs),
                Claim::Adopt => {
                    if !fresh_checked {
                        let fresh = self
                            .client
                            .get_object::<api::Deployment>(&dm.namespace, &dm.name)
                            .await?;
                        if fresh.metadata().uid != dm.uid
                            || !fresh.metadata().deletion_timestamp.is_empty()
                        {
                            return Ok(owned);
                        }
                        fresh_checked = true;
                    }
                    match self.client.update(&adopted(&rs, d)).await {
                        Ok(rs) => {
                            self.note_written(&rs, d);
                            owned.push(rs);
                        }
                        Err(e) if e.is_reason("NotFound") => {}
                        Err(e) => return Err(e),
                    }
                }
                Claim::Release => match self.client.update(&released(&rs, &dm.uid)).await {
                    Ok(rs) => self.note_written(&rs, d),
                    Err(e) if e.is_reason("NotFound") => {}
                    Err(e) => return Err(e),
                },
                Claim::Ignore => {}
            }
        }
        Ok(owned)
    }

    /// Kubernetes' getAllReplicaSetsAndSyncRevision: the new ReplicaSet
    /// (created when `create` and missing) and the old ones; brings the new
    /// one's revision and annotations, and the Deployment's revision, up to
    /// date. `d` is replaced by the Deployment as written.
    async fn new_and_old(
        &self,
        d: &mut api::Deployment,
        rs_list: &[api::ReplicaSet],
        create: bool,
        progress: &mut Option<api::Condition>,
    ) -> Result<(Option<api::ReplicaSet>, Vec<api::ReplicaSet>), Error> {
        let template = d_template(d);
        let mut sorted = rs_list.to_vec();
        sorted.sort_by_key(creation_order);
        let new_pos = sorted
            .iter()
            .position(|rs| equal_ignore_hash(&rs_template(rs), &template));
        let new = new_pos.map(|i| sorted.remove(i));
        let old = sorted;
        let max_old = old.iter().map(rs_revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        let new = match new {
            Some(rs) => {
                let mut next = rs.clone();
                let mut changed = set_new_rs_annotations(d, &mut next, new_revision, true);
                let min_ready = d.spec.as_ref().map(|s| s.min_ready_seconds).unwrap_or(0);
                let spec = next.spec.get_or_insert_default();
                if spec.min_ready_seconds != min_ready {
                    spec.min_ready_seconds = min_ready;
                    changed = true;
                }
                let rs = if changed {
                    let w = self.client.update(&next).await?;
                    self.note_written(&w, d);
                    w
                } else {
                    rs
                };
                if has_progress_deadline(d) && condition(d_status(d), "Progressing").is_none() {
                    *progress = Some(new_condition(
                        "Progressing",
                        "True",
                        FOUND_NEW_RS,
                        &format!("Found new replica set \"{}\"", rs.metadata().name),
                    ));
                }
                Some(rs)
            }
            None if create => {
                let rs = self.create_new(d, &old, new_revision).await?;
                *progress = Some(new_condition(
                    "Progressing",
                    "True",
                    NEW_RS_CREATED,
                    &format!("Created new replica set \"{}\"", rs.metadata().name),
                ));
                Some(rs)
            }
            None => None,
        };
        if let Some(rs) = &new {
            let revision = rs
                .metadata()
                .annotations
                .get(REVISION)
                .cloned()
                .unwrap_or_default();
            if d.metadata().annotations.get(REVISION) != Some(&revision) {
                let mut next = d.clone();
                next.metadata_mut()
                    .annotations
                    .insert(REVISION.to_string(), revision);
                *d = self.client.update(&next).await?;
            }
        }
        Ok((new, old))
    }

    /// Creates the ReplicaSet of `d`'s template; on a name collision with a
    /// ReplicaSet of another template, tries the hash with a collision
    /// count, as Kubernetes does.
    async fn create_new(
        &self,
        d: &api::Deployment,
        old: &[api::ReplicaSet],
        revision: i64,
    ) -> Result<api::ReplicaSet, Error> {
        let template = d_template(d);
        let mut last_err = None;
        for collisions in 0..10u32 {
            let hash = template_hash(&template, collisions);
            let mut rs = new_replica_set(d, &hash);
            let replicas = new_replica_set_replicas(d, old, None);
            rs.spec.get_or_insert_default().replicas = Some(replicas);
            set_new_rs_annotations(d, &mut rs, revision, false);
            set_replicas_annotations(&mut rs, d_replicas(d), d_replicas(d) + max_surge(d));
            match self.client.create(&rs).await {
                Ok(created) => {
                    self.note_written(&created, d);
                    if replicas > 0 {
                        let message = format!(
                            "Scaled up replica set {} to {replicas}",
                            created.metadata().name
                        );
                        self.recorder
                            .record(d, EventType::Normal, "ScalingReplicaSet", &message)
                            .await;
                    }
                    return Ok(created);
                }
                Err(e) if e.is_reason("AlreadyExists") => {
                    let m = rs.metadata();
                    let existing = self
                        .client
                        .get_object::<api::ReplicaSet>(&m.namespace, &m.name)
                        .await?;
                    let ours = controller_ref(existing.metadata())
                        .is_some_and(|r| r.uid == d.metadata().uid);
                    if ours && equal_ignore_hash(&rs_template(&existing), &template) {
                        // Made by an earlier reconcile; the cache lags.
                        self.note_written(&existing, d);
                        return Ok(existing);
                    }
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("ten collisions recorded an error"))
    }

    /// Deletes old ReplicaSets without pods beyond revisionHistoryLimit,
    /// oldest revision first.
    async fn cleanup(&self, d: &api::Deployment, old: &[api::ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        for rs in history_to_delete(old, limit.max(0) as usize) {
            let m = rs.metadata();
            let options = DeleteOptions {
                preconditions: Some(api::Preconditions {
                    uid: m.uid.clone(),
                    resource_version: m.resource_version.clone(),
                }),
                ..Default::default()
            };
            match self
                .client
                .delete_object::<api::ReplicaSet>(&m.namespace, &m.name, &options)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_reason("NotFound") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Scale only (paused, or spec.replicas changed): Kubernetes' `sync`.
    async fn sync(
        &self,
        mut d: api::Deployment,
        rs_list: Vec<api::ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut progress = None;
        let (new, old) = self
            .new_and_old(&mut d, &rs_list, false, &mut progress)
            .await?;
        let scaled = self.scale_all(&d, new.as_ref(), &old).await?;
        if scaled {
            return Ok(Action::Done);
        }
        if d.spec.as_ref().is_some_and(|s| s.paused) {
            self.cleanup(&d, &old).await?;
        }
        let all: Vec<_> = old.iter().chain(new.iter()).cloned().collect();
        let mut status = calculate_status(&all, new.as_ref(), &d);
        if let Some(c) = progress {
            set_condition(&mut status, c);
        }
        self.write_status(&d, status).await?;
        Ok(Action::Done)
    }

    /// Kubernetes' `scale`: one active ReplicaSet takes spec.replicas; a
    /// saturated new one retires the old; otherwise the change is spread
    /// proportionally. Returns whether anything was written.
    async fn scale_all(
        &self,
        d: &api::Deployment,
        new: Option<&api::ReplicaSet>,
        old: &[api::ReplicaSet],
    ) -> Result<bool, Error> {
        let replicas = d_replicas(d);
        if let Some(rs) = active_or_latest(new, old) {
            if rs_replicas(&rs) == replicas {
                return Ok(false);
            }
            self.scale(&rs, replicas, d).await?;
            return Ok(true);
        }
        if new.is_some_and(|n| is_saturated(d, n)) {
            let mut any = false;
            for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
                self.scale(rs, 0, d).await?;
                any = true;
            }
            return Ok(any);
        }
        if !is_rolling(d) {
            return Ok(false);
        }
        let active: Vec<api::ReplicaSet> = old
            .iter()
            .chain(new)
            .filter(|rs| rs_replicas(rs) > 0)
            .cloned()
            .collect();
        let sizes = proportional_sizes(d, &active);
        let mut any = false;
        for (rs, size) in active.iter().zip(sizes) {
            if size != rs_replicas(rs) {
                self.scale(rs, size, d).await?;
                any = true;
            }
        }
        Ok(any)
    }

    async fn rolling(
        &self,
        mut d: api::Deployment,
        rs_list: Vec<api::ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut progress = None;
        let (new, old) = self
            .new_and_old(&mut d, &rs_list, true, &mut progress)
            .await?;
        let Some(new) = new else {
            return Ok(Action::Done);
        };
        let all: Vec<_> = old.iter().chain(Some(&new)).cloned().collect();
        // Scale the new ReplicaSet up (or down to spec.replicas).
        let want_new = if rs_replicas(&new) > d_replicas(&d) {
            d_replicas(&d)
        } else {
            new_replica_set_replicas(&d, &all, Some(&new))
        };
        if want_new != rs_replicas(&new) {
            let new = self.scale(&new, want_new, &d).await?;
            let all: Vec<_> = old.iter().chain(Some(&new)).cloned().collect();
            return self.rollout_status(&d, &all, Some(&new), progress).await;
        }
        // Scale old ones down as far as availability allows.
        let plan = old_scale_down(&d, &old, &new);
        if !plan.is_empty() {
            let mut all = Vec::new();
            for rs in &old {
                match plan.iter().find(|(name, _)| *name == rs.metadata().name) {
                    Some((_, size)) => all.push(self.scale(rs, *size, &d).await?),
                    None => all.push(rs.clone()),
                }
            }
            all.push(new.clone());
            return self.rollout_status(&d, &all, Some(&new), progress).await;
        }
        if deployment_complete(&d, d_status(&d)) {
            self.cleanup(&d, &old).await?;
        }
        self.rollout_status(&d, &all, Some(&new), progress).await
    }

    async fn recreate(
        &self,
        mut d: api::Deployment,
        rs_list: Vec<api::ReplicaSet>,
    ) -> Result<Action, Error> {
        let mut progress = None;
        let (new, old) = self
            .new_and_old(&mut d, &rs_list, false, &mut progress)
            .await?;
        let mut scaled_down = Vec::new();
        let mut any = false;
        for rs in &old {
            if rs_replicas(rs) > 0 {
                scaled_down.push(self.scale(rs, 0, &d).await?);
                any = true;
            } else {
                scaled_down.push(rs.clone());
            }
        }
        let all: Vec<_> = scaled_down.iter().chain(new.iter()).cloned().collect();
        if any || old.iter().any(pods_may_remain) {
            return self.rollout_status(&d, &all, new.as_ref(), progress).await;
        }
        let new = match new {
            Some(n) => n,
            None => {
                let (n, _) = self
                    .new_and_old(&mut d, &rs_list, true, &mut progress)
                    .await?;
                n.expect("created when missing")
            }
        };
        let new = self.scale(&new, d_replicas(&d), &d).await?;
        if deployment_complete(&d, d_status(&d)) {
            self.cleanup(&d, &old).await?;
        }
        let all: Vec<_> = old.iter().chain(Some(&new)).cloned().collect();
        self.rollout_status(&d, &all, Some(&new), progress).await
    }

    /// Kubernetes' syncRolloutStatus: status with the Progressing
    /// condition; requeues for the progress deadline.
    async fn rollout_status(
        &self,
        d: &api::Deployment,
        all: &[api::ReplicaSet],
        new: Option<&api::ReplicaSet>,
        progress: Option<api::Condition>,
    ) -> Result<Action, Error> {
        let mut status = calculate_status(all, new, d);
        if let Some(c) = progress {
            set_condition(&mut status, c);
        }
        let now = SystemTime::now();
        progress_condition(d, new, &mut status, now);
        let requeue = stuck_requeue(d, &status, now);
        self.write_status(d, status).await?;
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }

    async fn write_status(
        &self,
        d: &api::Deployment,
        status: api::DeploymentStatus,
    ) -> Result<(), Error> {
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut next = d.clone();
        next.status = Some(status);
        self.client.update_status(&next).await?;
        Ok(())
    }

    /// Kubernetes' checkPausedConditions: the Progressing condition says
    /// DeploymentPaused while paused and DeploymentResumed after. Returns
    /// the Deployment as written.
    async fn paused_conditions(&self, d: api::Deployment) -> Result<api::Deployment, Error> {
        if !has_progress_deadline(&d) {
            return Ok(d);
        }
        let reason = condition(d_status(&d), "Progressing").map(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT) {
            return Ok(d);
        }
        let paused = d.spec.as_ref().is_some_and(|s| s.paused);
        let c = if paused && reason.as_deref() != Some(PAUSED) {
            new_condition("Progressing", "Unknown", PAUSED, "Deployment is paused")
        } else if !paused && reason.as_deref() == Some(PAUSED) {
            new_condition("Progressing", "Unknown", RESUMED, "Deployment is resumed")
        } else {
            return Ok(d);
        };
        let mut next = d.clone();
        set_condition(next.status.get_or_insert_default(), c);
        self.client.update_status(&next).await
    }
}

impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let Some(d) = self.deployments.get(&key.0, &key.1) else {
            return Ok(Action::Done);
        };
        if !self.cache_caught_up(key) {
            return Ok(Action::RequeueAfter(Duration::from_millis(20)));
        }
        let rs_list = self.claim_replica_sets(&d).await?;
        if !d.metadata().deletion_timestamp.is_empty() {
            let mut d = d;
            let mut progress = None;
            let (new, old) = self
                .new_and_old(&mut d, &rs_list, false, &mut progress)
                .await?;
            let all: Vec<_> = old.iter().chain(new.iter()).cloned().collect();
            self.write_status(&d, calculate_status(&all, new.as_ref(), &d))
                .await?;
            return Ok(Action::Done);
        }
        if parse_selector(&d.spec.as_ref().and_then(|s| s.selector.clone())).is_none() {
            return Ok(Action::Done);
        }
        let d = self.paused_conditions(d).await?;
        if d.spec.as_ref().is_some_and(|s| s.paused) || is_scaling_event(&d, &rs_list) {
            return self.sync(d, rs_list).await;
        }
        if d.spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .is_some_and(|s| s.r#type == "Recreate")
        {
            self.recreate(d, rs_list).await
        } else {
            self.rolling(d, rs_list).await
        }
    }
}

// ---- accessors --------------------------------------------------------------------

fn d_replicas(d: &api::Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn d_status(d: &api::Deployment) -> &api::DeploymentStatus {
    static EMPTY: api::DeploymentStatus = api::DeploymentStatus {
        observed_generation: 0,
        replicas: 0,
        updated_replicas: 0,
        ready_replicas: 0,
        available_replicas: 0,
        unavailable_replicas: 0,
        conditions: Vec::new(),
    };
    d.status.as_ref().unwrap_or(&EMPTY)
}

fn d_template(d: &api::Deployment) -> api::PodTemplateSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

fn rs_template(rs: &api::ReplicaSet) -> api::PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

fn rs_replicas(rs: &api::ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &api::ReplicaSet) -> api::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

/// The ReplicaSet's revision annotation (0 when missing or not a number).
pub fn rs_revision(rs: &api::ReplicaSet) -> i64 {
    rs.metadata()
        .annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn creation_order(rs: &api::ReplicaSet) -> (SystemTime, String) {
    let m = rs.metadata();
    (
        parse_rfc3339_utc(&m.creation_timestamp).unwrap_or(SystemTime::UNIX_EPOCH),
        m.name.clone(),
    )
}

fn is_rolling(d: &api::Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .is_none_or(|s| s.r#type != "Recreate")
}

fn has_progress_deadline(d: &api::Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

/// An old ReplicaSet whose pods may not all be gone yet (Recreate waits
/// for them): it reports pods, or its status has not caught up with its
/// spec.
fn pods_may_remain(rs: &api::ReplicaSet) -> bool {
    let s = rs_status(rs);
    s.replicas > 0 || s.observed_generation < rs.metadata().generation
}

// ---- templates and hashes -------------------------------------------------------------

/// The ReplicaSet name suffix for a pod template: FNV-1a (32 bit) of the
/// template's encoding (and the collision count, when not zero), its
/// decimal digits spelled in Kubernetes' vowel-free alphabet, so names
/// never spell words (`web-5d8f7c9b6`).
pub fn template_hash(template: &api::PodTemplateSpec, collisions: u32) -> String {
    use prost::Message;
    let mut bytes = template.encode_to_vec();
    if collisions > 0 {
        bytes.extend_from_slice(&collisions.to_le_bytes());
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// Whether two templates are the same but for the hash label.
pub fn equal_ignore_hash(a: &api::PodTemplateSpec, b: &api::PodTemplateSpec) -> bool {
    fn strip(t: &api::PodTemplateSpec) -> api::PodTemplateSpec {
        let mut t = t.clone();
        let m = t.metadata.get_or_insert_default();
        m.labels.remove(HASH_LABEL);
        t.spec.get_or_insert_default();
        t
    }
    strip(a) == strip(b)
}

/// The ReplicaSet for `d`'s template with hash `hash` (replicas unset).
pub fn new_replica_set(d: &api::Deployment, hash: &str) -> api::ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.unwrap_or_default();
    template
        .metadata
        .get_or_insert_default()
        .labels
        .insert(HASH_LABEL.to_string(), hash.to_string());
    let mut selector = spec.selector.unwrap_or_default();
    selector
        .match_labels
        .insert(HASH_LABEL.to_string(), hash.to_string());
    let labels = template
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    let mut rs = api::ReplicaSet {
        spec: Some(api::ReplicaSetSpec {
            replicas: None,
            min_ready_seconds: spec.min_ready_seconds,
            selector: Some(selector),
            template: Some(template),
        }),
        ..Default::default()
    };
    let dm = d.metadata();
    let m = rs.metadata_mut();
    m.name = format!("{}-{hash}", dm.name);
    m.namespace = dm.namespace.clone();
    m.labels = labels;
    m.owner_references = vec![owner_ref(d)];
    rs
}

/// Copies `d`'s annotations to `rs` and gives it `revision` if its own is
/// lower (keeping the old one in the revision history). Returns whether
/// anything changed.
pub fn set_new_rs_annotations(
    d: &api::Deployment,
    rs: &mut api::ReplicaSet,
    revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let from: BTreeMap<String, String> = d.metadata().annotations.clone();
    let annotations = &mut rs.metadata_mut().annotations;
    for (k, v) in from {
        if NOT_COPIED.contains(&k.as_str()) {
            continue;
        }
        if annotations.get(&k) != Some(&v) {
            annotations.insert(k, v);
            changed = true;
        }
    }
    let old = annotations.get(REVISION).cloned().unwrap_or_default();
    let old_num: i64 = old.parse().unwrap_or(0);
    if old_num < revision {
        annotations.insert(REVISION.to_string(), revision.to_string());
        changed = true;
        if exists && !old.is_empty() {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            annotations.insert(REVISION_HISTORY.to_string(), history);
        }
    }
    changed
}

/// Sets the desired-replicas and max-replicas annotations; whether they
/// changed.
pub fn set_replicas_annotations(rs: &mut api::ReplicaSet, desired: i32, max: i32) -> bool {
    let a = &mut rs.metadata_mut().annotations;
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

// ---- rollout math -----------------------------------------------------------------------

/// An int-or-percent ("3", "25%") scaled to `total`; percentages round up
/// or down. Unparsable values count as 0 (the API server rejects them).
pub fn scaled_value(value: &str, total: i32, round_up: bool) -> i32 {
    match value.strip_suffix('%') {
        Some(p) => {
            let p: i64 = p.parse().unwrap_or(0);
            let x = p * i64::from(total);
            let v = if round_up { (x + 99) / 100 } else { x / 100 };
            v as i32
        }
        None => value.parse().unwrap_or(0),
    }
}

/// (maxSurge, maxUnavailable) for `replicas` (Kubernetes'
/// ResolveFenceposts): surge rounds up, unavailable down, and when both
/// come to 0 unavailable is 1 so a rollout can move.
pub fn resolve_fenceposts(max_surge: &str, max_unavailable: &str, replicas: i32) -> (i32, i32) {
    let surge = scaled_value(max_surge, replicas, true);
    let mut unavailable = scaled_value(max_unavailable, replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn rolling_params(d: &api::Deployment) -> Option<(String, String)> {
    let s = d.spec.as_ref()?.strategy.as_ref()?;
    if s.r#type == "Recreate" {
        return None;
    }
    let ru = s.rolling_update.clone().unwrap_or_default();
    let or = |v: String| if v.is_empty() { "25%".to_string() } else { v };
    Some((or(ru.max_surge), or(ru.max_unavailable)))
}

/// maxSurge in pods (0 for Recreate).
pub fn max_surge(d: &api::Deployment) -> i32 {
    match rolling_params(d) {
        Some((s, u)) => resolve_fenceposts(&s, &u, d_replicas(d)).0,
        None => 0,
    }
}

/// maxUnavailable in pods, at most replicas (0 for Recreate).
pub fn max_unavailable(d: &api::Deployment) -> i32 {
    let replicas = d_replicas(d);
    match rolling_params(d) {
        Some(_) if replicas == 0 => 0,
        Some((s, u)) => resolve_fenceposts(&s, &u, replicas).1.min(replicas),
        None => 0,
    }
}

/// How many replicas the new ReplicaSet should have now (Kubernetes'
/// NewRSNewReplicas): RollingUpdate grows it as far as replicas + maxSurge
/// pods in all allow, never past replicas; Recreate gives it all.
pub fn new_replica_set_replicas(
    d: &api::Deployment,
    all: &[api::ReplicaSet],
    new: Option<&api::ReplicaSet>,
) -> i32 {
    let replicas = d_replicas(d);
    if !is_rolling(d) {
        return replicas;
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = replicas + max_surge(d);
    let new_now = new.map(rs_replicas).unwrap_or(0);
    if current >= max_total {
        return new_now;
    }
    let up = (max_total - current).min(replicas - new_now).max(0);
    new_now + up
}

/// Old ReplicaSets to scale down now and their new sizes (Kubernetes'
/// reconcileOldReplicaSets): first the unhealthy pods of old ReplicaSets
/// (which cost no availability), then healthy ones, oldest ReplicaSet
/// first, as long as replicas - maxUnavailable pods stay available. An
/// old ReplicaSet counts at most spec.replicas pods as available, so a
/// status that has not caught up with a scale-down cannot make pods look
/// spare twice.
pub fn old_scale_down(
    d: &api::Deployment,
    old: &[api::ReplicaSet],
    new: &api::ReplicaSet,
) -> Vec<(String, i32)> {
    let old_pods: i32 = old.iter().map(rs_replicas).sum();
    if old_pods == 0 {
        return Vec::new();
    }
    let all_pods = old_pods + rs_replicas(new);
    let min_available = d_replicas(d) - max_unavailable(d);
    let new_unavailable = (rs_replicas(new) - rs_status(new).available_replicas).max(0);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sorted: Vec<&api::ReplicaSet> = old.iter().collect();
    sorted.sort_by_key(|rs| creation_order(rs));
    let available = |rs: &api::ReplicaSet| rs_status(rs).available_replicas.min(rs_replicas(rs));
    let mut sizes: Vec<(String, i32)> = Vec::new();
    let mut size_of: HashMap<String, i32> = sorted
        .iter()
        .map(|rs| (rs.metadata().name.clone(), rs_replicas(rs)))
        .collect();
    // Unhealthy first.
    let mut cleaned = 0;
    for rs in &sorted {
        if cleaned >= max_scaled_down {
            break;
        }
        let size = size_of[&rs.metadata().name];
        if size == 0 {
            continue;
        }
        let unhealthy = size - available(rs);
        if unhealthy <= 0 {
            continue;
        }
        let n = unhealthy.min(max_scaled_down - cleaned);
        size_of.insert(rs.metadata().name.clone(), size - n);
        cleaned += n;
    }
    // Then healthy, keeping min_available.
    let available_now: i32 = sorted
        .iter()
        .map(|rs| available(rs).min(size_of[&rs.metadata().name]))
        .sum::<i32>()
        + rs_status(new).available_replicas.min(rs_replicas(new));
    if available_now > min_available {
        let mut to_go = available_now - min_available;
        for rs in &sorted {
            if to_go == 0 {
                break;
            }
            let size = size_of[&rs.metadata().name];
            if size == 0 {
                continue;
            }
            let n = size.min(to_go);
            size_of.insert(rs.metadata().name.clone(), size - n);
            to_go -= n;
        }
    }
    for rs in &sorted {
        let size = size_of[&rs.metadata().name];
        if size != rs_replicas(rs) {
            sizes.push((rs.metadata().name.clone(), size));
        }
    }
    sizes
}

/// The one ReplicaSet with replicas, else the new one or the newest old
/// one when none has any; `None` when several have replicas.
fn active_or_latest(
    new: Option<&api::ReplicaSet>,
    old: &[api::ReplicaSet],
) -> Option<api::ReplicaSet> {
    if new.is_none() && old.is_empty() {
        return None;
    }
    let mut sorted: Vec<&api::ReplicaSet> = old.iter().collect();
    sorted.sort_by_key(|rs| std::cmp::Reverse(creation_order(rs)));
    let active: Vec<&api::ReplicaSet> = sorted
        .iter()
        .copied()
        .chain(new)
        .filter(|rs| rs_replicas(rs) > 0)
        .collect();
    match active.as_slice() {
        [] => new.or(sorted.first().copied()).cloned(),
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// The new ReplicaSet runs the whole Deployment, all available.
fn is_saturated(d: &api::Deployment, new: &api::ReplicaSet) -> bool {
    let desired = new
        .metadata()
        .annotations
        .get(DESIRED_REPLICAS)
        .and_then(|v| v.parse::<i32>().ok());
    desired == Some(d_replicas(d))
        && rs_replicas(new) == d_replicas(d)
        && rs_status(new).available_replicas == d_replicas(d)
}

/// An active ReplicaSet was last scaled for another spec.replicas.
pub fn is_scaling_event(d: &api::Deployment, rs_list: &[api::ReplicaSet]) -> bool {
    let want = d_replicas(d).to_string();
    rs_list.iter().filter(|rs| rs_replicas(rs) > 0).any(|rs| {
        rs.metadata()
            .annotations
            .get(DESIRED_REPLICAS)
            .is_some_and(|v| *v != want)
    })
}

/// New sizes for the active ReplicaSets of an unfinished rollout when
/// spec.replicas changed (Kubernetes' proportional scaling): the pods to
/// add (or remove) up to replicas + maxSurge are spread in proportion to
/// each ReplicaSet's share when it was last scaled, the rounding leftover
/// going to the largest (newest on ties).
pub fn proportional_sizes(d: &api::Deployment, active: &[api::ReplicaSet]) -> Vec<i32> {
    let replicas = d_replicas(d);
    let current: i32 = active.iter().map(rs_replicas).sum();
    let allowed = if replicas > 0 {
        replicas + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - current;
    let mut order: Vec<usize> = (0..active.len()).collect();
    // Larger first; on ties newer first when growing, older when shrinking.
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&active[a], &active[b]);
        rs_replicas(rb).cmp(&rs_replicas(ra)).then_with(|| {
            if to_add > 0 {
                creation_order(rb).cmp(&creation_order(ra))
            } else {
                creation_order(ra).cmp(&creation_order(rb))
            }
        })
    });
    let mut sizes: Vec<i32> = active.iter().map(rs_replicas).collect();
    let mut added = 0;
    for &i in &order {
        if to_add == 0 || to_add == added {
            break;
        }
        let rs = &active[i];
        let size = rs_replicas(rs);
        let fraction = if replicas == 0 {
            -size
        } else {
            let annotated = rs
                .metadata()
                .annotations
                .get(MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(d_status(d).replicas.max(1));
            let target = (f64::from(size) * f64::from(replicas + max_surge(d))
                / f64::from(annotated))
            .round() as i32;
            target - size
        };
        let allowed = to_add - added;
        let share = if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        };
        sizes[i] += share;
        added += share;
    }
    if let Some(&first) = order.first() {
        sizes[first] = (sizes[first] + to_add - added).max(0);
    }
    sizes
}

/// Old ReplicaSets to delete for revisionHistoryLimit `limit`: those with
/// no pods and nothing pending, lowest revision first.
pub fn history_to_delete(old: &[api::ReplicaSet], limit: usize) -> Vec<api::ReplicaSet> {
    let mut cleanable: Vec<&api::ReplicaSet> = old
        .iter()
        .filter(|rs| {
            let s = rs_status(rs);
            rs_replicas(rs) == 0
                && s.replicas == 0
                && s.observed_generation >= rs.metadata().generation
                && rs.metadata().deletion_timestamp.is_empty()
        })
        .collect();
    if cleanable.len() <= limit {
        return Vec::new();
    }
    cleanable.sort_by(|a, b| {
        rs_revision(a)
            .cmp(&rs_revision(b))
            .then_with(|| creation_order(a).cmp(&creation_order(b)))
    });
    let n = cleanable.len() - limit;
    cleanable.into_iter().take(n).cloned().collect()
}

// ---- status and conditions --------------------------------------------------------------

/// The condition of `type` in `status`.
pub fn condition<'a>(
    status: &'a api::DeploymentStatus,
    r#type: &str,
) -> Option<&'a api::Condition> {
    status.conditions.iter().find(|c| c.r#type == r#type)
}

fn new_condition(r#type: &str, status: &str, reason: &str, message: &str) -> api::Condition {
    let now = now_string();
    api::Condition {
        r#type: r#type.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now.clone(),
        last_update_time: now,
        ..Default::default()
    }
}

/// Kubernetes' SetDeploymentCondition: no change when status and reason
/// are the same; the transition time kept when only the reason changes.
fn set_condition(status: &mut api::DeploymentStatus, mut c: api::Condition) {
    if let Some(cur) = condition(status, &c.r#type) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    status.conditions.retain(|x| x.r#type != c.r#type);
    status.conditions.push(c);
}

/// The status counts as Kubernetes computes them (from the ReplicaSets'
/// spec and status), with the Available condition.
pub fn calculate_status(
    all: &[api::ReplicaSet],
    new: Option<&api::ReplicaSet>,
    d: &api::Deployment,
) -> api::DeploymentStatus {
    let available: i32 = all.iter().map(|rs| rs_status(rs).available_replicas).sum();
    let total: i32 = all.iter().map(rs_replicas).sum();
    let mut status = api::DeploymentStatus {
        observed_generation: d.metadata().generation,
        replicas: all.iter().map(|rs| rs_status(rs).replicas).sum(),
        updated_replicas: new.map(|n| rs_status(n).replicas).unwrap_or(0),
        ready_replicas: all.iter().map(|rs| rs_status(rs).ready_replicas).sum(),
        available_replicas: available,
        unavailable_replicas: (total - available).max(0),
        conditions: d_status(d).conditions.clone(),
    };
    if available >= d_replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
        );
    }
    status
}

/// Every replica is updated and available, and the status is current.
pub fn deployment_complete(d: &api::Deployment, s: &api::DeploymentStatus) -> bool {
    let r = d_replicas(d);
    s.updated_replicas == r
        && s.replicas == r
        && s.available_replicas == r
        && s.observed_generation >= d.metadata().generation
}

/// The rollout moved since the stored status.
fn deployment_progressing(d: &api::Deployment, s: &api::DeploymentStatus) -> bool {
    let old = d_status(d);
    s.updated_replicas > old.updated_replicas
        || s.replicas - s.updated_replicas < old.replicas - old.updated_replicas
        || s.ready_replicas > old.ready_replicas
        || s.available_replicas > old.available_replicas
}

fn deadline_left(d: &api::Deployment, c: &api::Condition, now: SystemTime) -> Option<Duration> {
    let secs = d.spec.as_ref()?.progress_deadline_seconds?;
    let from = parse_rfc3339_utc(&c.last_update_time)?;
    let end = from + Duration::from_secs(secs.max(0) as u64);
    Some(end.duration_since(now).unwrap_or_default())
}

/// Kubernetes' progress estimate in syncRolloutStatus: NewReplicaSetAvailable
/// when complete, ReplicaSetUpdated while it moves, ProgressDeadlineExceeded
/// when it has not moved for progressDeadlineSeconds.
pub fn progress_condition(
    d: &api::Deployment,
    new: Option<&api::ReplicaSet>,
    status: &mut api::DeploymentStatus,
    now: SystemTime,
) {
    if !has_progress_deadline(d) {
        return;
    }
    let current = condition(status, "Progressing").cloned();
    let complete_before = status.replicas == status.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason == NEW_RS_AVAILABLE);
    if complete_before {
        return;
    }
    let name = new.map(|n| n.metadata().name.clone());
    if deployment_complete(d, status) {
        let message = match &name {
            Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
            None => format!(
                "Deployment \"{}\" has successfully progressed.",
                d.metadata().name
            ),
        };
        set_condition(
            status,
            new_condition("Progressing", "True", NEW_RS_AVAILABLE, &message),
        );
    } else if deployment_progressing(d, status) {
        let message = format!(
            "ReplicaSet \"{}\" is progressing.",
            name.unwrap_or_default()
        );
        let mut c = new_condition("Progressing", "True", RS_UPDATED, &message);
        if let Some(cur) = &current
            && cur.status == "True"
        {
            c.last_transition_time = cur.last_transition_time.clone();
        }
        status.conditions.retain(|x| x.r#type != "Progressing");
        status.conditions.push(c);
    } else if let Some(cur) = &current
        && cur.reason != NEW_RS_AVAILABLE
        && (cur.reason == TIMED_OUT || deadline_left(d, cur, now) == Some(Duration::ZERO))
    {
        let message = format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            name.unwrap_or_default()
        );
        set_condition(
            status,
            new_condition("Progressing", "False", TIMED_OUT, &message),
        );
    }
}

/// When to look again so a stuck rollout is marked ProgressDeadlineExceeded
/// on time.
fn stuck_requeue(
    d: &api::Deployment,
    status: &api::DeploymentStatus,
    now: SystemTime,
) -> Option<Duration> {
    if !has_progress_deadline(d) || deployment_complete(d, status) {
        return None;
    }
    let c = condition(status, "Progressing")?;
    if c.reason == TIMED_OUT || c.reason == NEW_RS_AVAILABLE {
        return None;
    }
    let left = deadline_left(d, c, now)?;
    Some(left + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> api::Deployment {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let mut d = api::Deployment {
            spec: Some(api::DeploymentSpec {
                replicas: Some(replicas),
                selector: Some(api::LabelSelector {
                    match_labels: labels.clone(),
                    ..Default::default()
                }),
                template: Some(api::PodTemplateSpec {
                    metadata: Some(api::ObjectMeta {
                        labels,
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
                strategy: Some(api::DeploymentStrategy {
                    r#type: "RollingUpdate".into(),
                    rolling_update: Some(api::RollingUpdateDeployment {
                        max_surge: surge.into(),
                        max_unavailable: unavailable.into(),
                    }),
                }),
                revision_history_limit: Some(2),
                progress_deadline_seconds: Some(600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = d.metadata_mut();
        m.name = "web".into();
        m.namespace = "default".into();
        m.uid = "d-uid".into();
        m.generation = 1;
        d
    }

    /// A ReplicaSet with `replicas` wanted, `available` available, created
    /// at second `created`.
    fn rs(name: &str, replicas: i32, available: i32, created: u64) -> api::ReplicaSet {
        let mut rs = api::ReplicaSet {
            spec: Some(api::ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(api::ReplicaSetStatus {
                replicas: replicas.max(available),
                ready_replicas: available,
                available_replicas: available,
                observed_generation: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = rs.metadata_mut();
        m.name = name.into();
        m.generation = 1;
        m.creation_timestamp = format_rfc3339_utc(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + created),
        );
        rs
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        assert_eq!(resolve_fenceposts("25%", "25%", 10), (3, 2));
        assert_eq!(resolve_fenceposts("1", "0", 10), (1, 0));
        assert_eq!(resolve_fenceposts("0", "30%", 5), (0, 1));
        assert_eq!(resolve_fenceposts("100%", "0%", 3), (3, 0));
    }

    #[test]
    fn both_fenceposts_zero_after_rounding_allow_one_unavailable() {
        assert_eq!(resolve_fenceposts("0%", "10%", 3), (0, 1));
        assert_eq!(resolve_fenceposts("0", "0", 3), (0, 1));
    }

    #[test]
    fn max_unavailable_never_exceeds_replicas_and_is_zero_without_replicas() {
        assert_eq!(max_unavailable(&deployment(2, "0", "5")), 2);
        assert_eq!(max_unavailable(&deployment(0, "1", "1")), 0);
        let mut recreate = deployment(4, "1", "1");
        recreate.spec.as_mut().unwrap().strategy = Some(api::DeploymentStrategy {
            r#type: "Recreate".into(),
            rolling_update: None,
        });
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
    }

    #[test]
    fn template_hash_is_stable_and_tracks_the_template() {
        let d = deployment(3, "1", "0");
        let t = d_template(&d);
        let h = template_hash(&t, 0);
        assert_eq!(h, template_hash(&t.clone(), 0));
        assert!(!h.is_empty() && h.len() <= 10, "{h}");
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        let mut t2 = t.clone();
        t2.spec.as_mut().unwrap().containers[0].image = "demo:2".into();
        assert_ne!(template_hash(&t2, 0), h);
        assert_ne!(
            template_hash(&t, 1),
            h,
            "a collision count changes the hash"
        );
    }

    #[test]
    fn the_new_replica_set_selects_by_hash_and_is_owned() {
        let d = deployment(3, "1", "0");
        let rs = new_replica_set(&d, "abc");
        assert_eq!(rs.metadata().name, "web-abc");
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector
                .as_ref()
                .unwrap()
                .match_labels
                .get(HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        assert_eq!(
            spec.template
                .as_ref()
                .unwrap()
                .metadata
                .as_ref()
                .unwrap()
                .labels
                .get(HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        assert!(equal_ignore_hash(&rs_template(&rs), &d_template(&d)));
        let r = controller_ref(rs.metadata()).unwrap();
        assert_eq!((r.kind.as_str(), r.uid.as_str()), ("Deployment", "d-uid"));
    }

    #[test]
    fn revisions_move_forward_and_keep_history_and_change_cause() {
        let mut d = deployment(3, "1", "0");
        d.metadata_mut()
            .annotations
            .insert(CHANGE_CAUSE.into(), "set image demo:2".into());
        d.metadata_mut()
            .annotations
            .insert(REVISION.into(), "9".into());
        let mut r = rs("web-a", 0, 0, 0);
        r.metadata_mut()
            .annotations
            .insert(REVISION.into(), "1".into());
        assert!(set_new_rs_annotations(&d, &mut r, 3, true));
        let a = &r.metadata().annotations;
        assert_eq!(a.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        assert_eq!(
            a.get(CHANGE_CAUSE).map(String::as_str),
            Some("set image demo:2")
        );
        assert!(
            !set_new_rs_annotations(&d, &mut r, 3, true),
            "already current"
        );
        assert!(
            !set_new_rs_annotations(&d, &mut r, 2, true),
            "never backwards"
        );
    }

    #[test]
    fn the_new_replica_set_grows_within_max_surge() {
        let d = deployment(10, "3", "0");
        let old = rs("old", 10, 10, 0);
        assert_eq!(
            new_replica_set_replicas(&d, std::slice::from_ref(&old), None),
            3
        );
        let new = rs("new", 3, 0, 1);
        assert_eq!(
            new_replica_set_replicas(&d, &[old.clone(), new.clone()], Some(&new)),
            3
        );
        let old7 = rs("old", 7, 7, 0);
        assert_eq!(
            new_replica_set_replicas(&d, &[old7, new.clone()], Some(&new)),
            6
        );
        let old1 = rs("old", 1, 1, 0);
        let new9 = rs("new", 9, 9, 1);
        assert_eq!(
            new_replica_set_replicas(&d, &[old1, new9.clone()], Some(&new9)),
            10
        );
    }

    #[test]
    fn old_replica_sets_shrink_only_while_enough_stay_available() {
        // maxUnavailable 0: nothing goes until a new pod is available.
        let d = deployment(4, "1", "0");
        let old = rs("old", 4, 4, 0);
        let new = rs("new", 1, 0, 1);
        assert!(old_scale_down(&d, std::slice::from_ref(&old), &new).is_empty());
        let new = rs("new", 1, 1, 1);
        assert_eq!(
            old_scale_down(&d, std::slice::from_ref(&old), &new),
            [("old".to_string(), 3)]
        );
        // A status that still counts pods already scaled away does not
        // make them spare twice.
        let mut stale = rs("old", 3, 4, 0);
        stale.status.as_mut().unwrap().available_replicas = 4;
        assert!(old_scale_down(&d, &[stale], &new).is_empty());
    }

    #[test]
    fn unhealthy_old_pods_go_first_and_oldest_replica_sets_first() {
        let d = deployment(6, "0", "2");
        let older = rs("older", 3, 3, 0);
        let sick = rs("sick", 3, 1, 5);
        let new = rs("new", 0, 0, 9);
        // 6 pods, 4 available, may drop to 4: only the 2 unhealthy go.
        let plan = old_scale_down(&d, &[older.clone(), sick.clone()], &new);
        assert_eq!(plan, [("sick".to_string(), 1)]);
        let healthy = rs("sick", 3, 3, 5);
        let plan = old_scale_down(&d, &[older, healthy], &new);
        assert_eq!(plan, [("older".to_string(), 1)]);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let mut d = deployment(20, "3", "0");
        let mut a = rs("a", 8, 8, 0);
        let mut b = rs("b", 5, 0, 1);
        for r in [&mut a, &mut b] {
            set_replicas_annotations(r, 10, 13);
        }
        d.status = Some(api::DeploymentStatus {
            replicas: 13,
            ..Default::default()
        });
        let sizes = proportional_sizes(&d, &[a.clone(), b.clone()]);
        assert_eq!(sizes.iter().sum::<i32>(), 23, "20 + surge 3");
        assert_eq!(sizes, [14, 9]);
        let mut down = d.clone();
        down.spec.as_mut().unwrap().replicas = Some(0);
        assert_eq!(proportional_sizes(&down, &[a, b]), [0, 0]);
    }

    #[test]
    fn a_scaling_event_is_a_changed_desired_replicas() {
        let d = deployment(5, "1", "0");
        let mut r = rs("a", 3, 3, 0);
        set_replicas_annotations(&mut r, 3, 4);
        assert!(is_scaling_event(&d, std::slice::from_ref(&r)));
        set_replicas_annotations(&mut r, 5, 6);
        assert!(!is_scaling_event(&d, &[r]));
    }

    #[test]
    fn history_beyond_the_limit_goes_lowest_revision_first() {
        let mut olds = Vec::new();
        for (i, rev) in [3, 1, 2, 4].iter().enumerate() {
            let mut r = rs(&format!("r{rev}"), 0, 0, i as u64);
            r.status.as_mut().unwrap().replicas = 0;
            r.metadata_mut()
                .annotations
                .insert(REVISION.into(), rev.to_string());
            olds.push(r);
        }
        let mut busy = rs("busy", 1, 1, 9);
        busy.metadata_mut()
            .annotations
            .insert(REVISION.into(), "0".into());
        olds.push(busy);
        let names: Vec<String> = history_to_delete(&olds, 2)
            .iter()
            .map(|r| r.metadata().name.clone())
            .collect();
        assert_eq!(names, ["r1", "r2"]);
        assert!(history_to_delete(&olds, 4).is_empty());
    }

    #[test]
    fn status_sums_replica_sets_and_sets_available() {
        let d = deployment(4, "1", "1");
        let old = rs("old", 1, 1, 0);
        let new = rs("new", 4, 2, 1);
        let s = calculate_status(&[old.clone(), new.clone()], Some(&new), &d);
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (5, 4, 3, 3, 2)
        );
        assert_eq!(s.observed_generation, 1);
        assert_eq!(condition(&s, "Available").unwrap().status, "True");
        let s = calculate_status(&[rs("new", 4, 1, 1)], None, &d);
        assert_eq!(
            condition(&s, "Available").unwrap().reason,
            "MinimumReplicasUnavailable"
        );
    }

    #[test]
    fn progressing_reports_updates_completion_and_deadline() {
        let now = SystemTime::now();
        let mut d = deployment(2, "1", "0");
        let new = rs("web-new", 2, 1, 1);
        let mut s = calculate_status(std::slice::from_ref(&new), Some(&new), &d);
        progress_condition(&d, Some(&new), &mut s, now);
        let c = condition(&s, "Progressing").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", RS_UPDATED));
        assert_eq!(c.message, "ReplicaSet \"web-new\" is progressing.");

        let done = rs("web-new", 2, 2, 1);
        let mut s = calculate_status(std::slice::from_ref(&done), Some(&done), &d);
        progress_condition(&d, Some(&done), &mut s, now);
        assert_eq!(
            condition(&s, "Progressing").unwrap().reason,
            NEW_RS_AVAILABLE
        );

        // No progress since a condition older than the deadline.
        let mut stale = new_condition("Progressing", "True", RS_UPDATED, "x");
        stale.last_update_time = format_rfc3339_utc(now - Duration::from_secs(601));
        d.status = Some(api::DeploymentStatus {
            replicas: 2,
            updated_replicas: 2,
            ready_replicas: 1,
            available_replicas: 1,
            conditions: vec![stale],
            ..Default::default()
        });
        let mut s = calculate_status(std::slice::from_ref(&new), Some(&new), &d);
        progress_condition(&d, Some(&new), &mut s, now);
        let c = condition(&s, "Progressing").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", TIMED_OUT));
        assert_eq!(stuck_requeue(&d, &s, now), None);
    }
}
