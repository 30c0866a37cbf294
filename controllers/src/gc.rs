//! The garbage collector: acts on ownerReferences, as Kubernetes' does.
//!
//! - **Background** (the default): once every owner of an object is gone,
//!   the object is deleted; an object that lost some owners but keeps
//!   others only loses the references to the gone ones.
//! - **Foreground**: the API server marks the owner with the
//!   `foregroundDeletion` finalizer; the collector deletes its dependents
//!   (in foreground themselves when they own objects in turn) and removes
//!   the finalizer once no dependent with `blockOwnerDeletion` is left,
//!   which lets the owner go.
//! - **Orphan**: the API server marks the owner with the `orphan`
//!   finalizer; the collector removes the references to it from its
//!   dependents, then the finalizer.
//!
//! It watches every kind but Event, and keeps an index from owner uid to
//! dependents, fed by the informers, so a deletion finds its dependents
//! without scanning. An owner that looks gone in the cache is confirmed
//! gone by a read from the masters before anything is deleted (the cache
//! of its kind may simply lag behind the dependent's).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rafter_client::informer::{Cache, Event, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::api;
use rafter_proto::object::{KINDS, KindInfo, Object};
use rafter_proto::with_kind;
use tokio_util::sync::CancellationToken;

use crate::informer_events::forward;
use crate::runtime::{self, Action, Key, Queue, Reconciler};

/// The finalizer of a Foreground delete.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an Orphan delete.
pub const ORPHAN: &str = "orphan";

/// An object: (kind, namespace, name).
pub type ObjectId = (&'static str, String, String);

/// The work-queue key of an object (the kind rides along the namespace).
pub fn queue_key(id: &ObjectId) -> Key {
    (format!("{}/{}", id.0, id.1), id.2.clone())
}

fn parse_key(key: &Key) -> Option<ObjectId> {
    let (kind, ns) = key.0.split_once('/')?;
    let info = KINDS.iter().find(|k| k.kind == kind)?;
    Some((info.kind, ns.to_string(), key.1.clone()))
}

/// The object an owner reference names, seen from a dependent in
/// `namespace` (a cluster-scoped owner has none). None for a kind the
/// collector does not know.
pub fn owner_id(reference: &api::OwnerReference, namespace: &str) -> Option<ObjectId> {
    let info = KINDS.iter().find(|k| k.kind == reference.kind)?;
    let ns = if info.namespaced { namespace } else { "" };
    Some((info.kind, ns.to_string(), reference.name.clone()))
}

/// Owner uid → dependents, and each object's owner uids (to update the
/// first when an object's references change).
#[derive(Debug, Default)]
pub struct DependentIndex {
    dependents: HashMap<String, BTreeSet<ObjectId>>,
    owners: HashMap<ObjectId, Vec<String>>,
}

impl DependentIndex {
    /// Records `id`'s current owner references.
    pub fn set(&mut self, id: ObjectId, owners: &[api::OwnerReference]) {
        self.remove(&id);
        if owners.is_empty() {
            return;
        }
        let uids: Vec<String> = owners.iter().map(|o| o.uid.clone()).collect();
        for uid in &uids {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert(id.clone());
        }
        self.owners.insert(id, uids);
    }

    /// Forgets `id` (deleted).
    pub fn remove(&mut self, id: &ObjectId) {
        for uid in self.owners.remove(id).unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&uid) {
                set.remove(id);
                if set.is_empty() {
                    self.dependents.remove(&uid);
                }
            }
        }
    }

    /// The objects that name `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<ObjectId> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What to do with a dependent, given which of its owners still exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every owner exists (or cannot be judged).
    Keep,
    /// Every owner is gone: delete it.
    Delete,
    /// Some owners are gone: drop the references (by uid) to them.
    DropReferences(Vec<String>),
}

/// Decides from `gone`, the uids of the owners found missing.
pub fn decide(references: &[api::OwnerReference], gone: &[String]) -> Decision {
    if gone.is_empty() || references.is_empty() {
        Decision::Keep
    } else if references.iter().all(|r| gone.contains(&r.uid)) {
        Decision::Delete
    } else {
        Decision::DropReferences(gone.to_vec())
    }
}

/// Whether `dependent` keeps its owner `owner_uid` from going in a
/// Foreground delete.
pub fn blocks(dependent: &api::ObjectMeta, owner_uid: &str) -> bool {
    dependent
        .owner_references
        .iter()
        .any(|r| r.uid == owner_uid && r.block_owner_deletion == Some(true))
}

/// A kind's cache, seen only through its objects' metadata.
trait MetaCache: Send + Sync {
    fn get(&self, namespace: &str, name: &str) -> Option<api::ObjectMeta>;
}

impl<K: Object> MetaCache for Cache<K> {
    fn get(&self, namespace: &str, name: &str) -> Option<api::ObjectMeta> {
        Cache::get(self, namespace, name).map(|o| o.metadata().clone())
    }
}

/// The garbage collector.
pub struct GarbageCollector {
    client: Client,
    caches: HashMap<&'static str, Box<dyn MetaCache>>,
    index: Arc<Mutex<DependentIndex>>,
}

impl GarbageCollector {
    fn meta(&self, id: &ObjectId) -> Option<api::ObjectMeta> {
        self.caches.get(id.0)?.get(&id.1, &id.2)
    }

    fn dependents(&self, uid: &str) -> Vec<ObjectId> {
        self.index.lock().expect("index lock").dependents(uid)
    }

    /// Whether the owner `reference` of an object in `namespace` is gone:
    /// missing from the cache and confirmed missing (or replaced by another
    /// uid) by the masters.
    async fn owner_gone(
        &self,
        reference: &api::OwnerReference,
        namespace: &str,
    ) -> Result<bool, Error> {
        let Some(id) = owner_id(reference, namespace) else {
            return Ok(false); // a kind we cannot see: never judged gone
        };
        if self.meta(&id).is_some_and(|m| m.uid == reference.uid) {
            return Ok(false);
        }
        let live = with_kind!(id.0, K => match self.client.get_object::<K>(&id.1, &id.2).await {
            Ok(o) => Ok(Some(o.metadata().uid.clone())),
            Err(e) if e.is_reason("NotFound") => Ok(None),
            Err(e) => Err(e),
        }, _ => Ok(Some(reference.uid.clone())))?;
        Ok(live.as_deref() != Some(reference.uid.as_str()))
    }

    /// Applies `change` to the live object `id` and writes it (CAS).
    async fn modify(
        &self,
        id: &ObjectId,
        uid: &str,
        change: impl Fn(&mut api::ObjectMeta) + Send + Sync,
    ) -> Result<(), Error> {
        with_kind!(id.0, K => {
            let mut obj = match self.client.get_object::<K>(&id.1, &id.2).await {
                Ok(o) => o,
                Err(e) if e.is_reason("NotFound") => return Ok(()),
                Err(e) => return Err(e),
            };
            if obj.metadata().uid != uid {
                return Ok(()); // another object of the same name
            }
            let before = obj.metadata().clone();
            change(obj.metadata_mut());
            if *obj.metadata() != before {
                match self.client.update(&obj).await {
                    Ok(_) => {}
                    Err(e) if e.is_reason("NotFound") => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }, _ => Ok(()))
    }

    async fn delete(&self, id: &ObjectId, uid: &str, propagation: &str) -> Result<(), Error> {
        let options = DeleteOptions {
            propagation_policy: propagation.to_string(),
            ..DeleteOptions::with_uid(uid)
        };
        let r = with_kind!(id.0, K => self
            .client
            .delete_object::<K>(&id.1, &id.2, &options)
            .await
            .map(|_| ()), _ => Ok(()));
        match r {
            Ok(()) => {
                tracing::info!(kind = id.0, namespace = %id.1, name = %id.2, propagation, "garbage collector deleted");
                Ok(())
            }
            // Gone already, or another object of that name now.
            Err(e) if e.is_reason("NotFound") || e.is_reason("Conflict") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An Orphan delete: release the dependents, then the owner.
    async fn orphan(&self, id: &ObjectId, meta: &api::ObjectMeta) -> Result<(), Error> {
        for dep in self.dependents(&meta.uid) {
            let Some(dm) = self.meta(&dep) else { continue };
            let owner = meta.uid.clone();
            self.modify(&dep, &dm.uid, move |m| {
                m.owner_references.retain(|r| r.uid != owner)
            })
            .await?;
        }
        self.modify(id, &meta.uid, |m| m.finalizers.retain(|f| f != ORPHAN))
            .await
    }

    /// A Foreground delete: delete the dependents; release the owner once
    /// none that blocks it is left. Returns whether it was released.
    async fn foreground(&self, id: &ObjectId, meta: &api::ObjectMeta) -> Result<bool, Error> {
        let mut blocking = 0;
        for dep in self.dependents(&meta.uid) {
            let Some(dm) = self.meta(&dep) else { continue };
            if dm.deletion_timestamp.is_empty() {
                // Dependents that own objects themselves go in foreground
                // too, so the whole tree is gone before the owner.
                let owns = !self.dependents(&dm.uid).is_empty();
                let policy = if owns { "Foreground" } else { "Background" };
                self.delete(&dep, &dm.uid, policy).await?;
            }
            if blocks(&dm, &meta.uid) {
                blocking += 1;
            }
        }
        if blocking > 0 {
            return Ok(false);
        }
        self.modify(id, &meta.uid, |m| m.finalizers.retain(|f| f != FOREGROUND))
            .await?;
        Ok(true)
    }
}

impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let Some(id) = parse_key(key) else {
            return Ok(Action::Done);
        };
        let Some(meta) = self.meta(&id) else {
            return Ok(Action::Done);
        };
        if !meta.deletion_timestamp.is_empty() {
            if meta.finalizers.iter().any(|f| f == ORPHAN) {
                self.orphan(&id, &meta).await?;
                return Ok(Action::Done);
            }
            if meta.finalizers.iter().any(|f| f == FOREGROUND) {
                if self.foreground(&id, &meta).await? {
                    return Ok(Action::Done);
                }
                // Dependents' deletions queue it again; look anyway now
                // and then in case one was missed.
                return Ok(Action::RequeueAfter(Duration::from_secs(2)));
            }
        }
        if meta.owner_references.is_empty() {
            return Ok(Action::Done);
        }
        let mut gone = Vec::new();
        for r in &meta.owner_references {
            if self.owner_gone(r, &id.1).await? {
                gone.push(r.uid.clone());
            }
        }
        match decide(&meta.owner_references, &gone) {
            Decision::Keep => {}
            Decision::Delete => {
                if meta.deletion_timestamp.is_empty() {
                    self.delete(&id, &meta.uid, "Background").await?;
                }
            }
            Decision::DropReferences(uids) => {
                self.modify(&id, &meta.uid, move |m| {
                    m.owner_references.retain(|r| !uids.contains(&r.uid))
                })
                .await?;
            }
        }
        Ok(Action::Done)
    }
}

/// Starts the informer of kind `K`, feeding the index and the queue.
fn watch_kind<K: Object>(
    informers: &Informers,
    index: &Arc<Mutex<DependentIndex>>,
    queue: &Queue,
    shutdown: &CancellationToken,
) -> Cache<K> {
    let (cache, events) = informers.start::<K>("", "");
    let index = index.clone();
    let queue = queue.clone();
    let info: &'static KindInfo = K::INFO;
    forward(events, shutdown.clone(), move |e: Event<K>| {
        let (obj, deleted) = match &e {
            Event::Applied(o) => (o, false),
            Event::Deleted(o) => (o, true),
        };
        let m = obj.metadata();
        let id: ObjectId = (info.kind, m.namespace.clone(), m.name.clone());
        let dependents = {
            let mut index = index.lock().expect("index lock");
            if deleted {
                index.remove(&id);
                index.dependents(&m.uid)
            } else {
                index.set(id.clone(), &m.owner_references);
                Vec::new()
            }
        };
        // Gone: its dependents may have lost their last owner.
        for d in &dependents {
            queue.add(queue_key(d));
        }
        let deleting = !m.deletion_timestamp.is_empty();
        if !deleted
            && (!m.owner_references.is_empty()
                || (deleting && m.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND)))
        {
            queue.add(queue_key(&id));
        }
        // Going or gone: an owner deleting in foreground may be waiting.
        if deleted || deleting {
            for r in &m.owner_references {
                if let Some(owner) = owner_id(r, &m.namespace) {
                    queue.add(queue_key(&owner));
                }
            }
        }
    });
    cache
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(client: Client, informers: &Informers, shutdown: CancellationToken) {
    let index: Arc<Mutex<DependentIndex>> = Arc::default();
    let queue = Queue::new();
    let mut caches: HashMap<&'static str, Box<dyn MetaCache>> = HashMap::new();
    let mut synced = Vec::new();
    for info in KINDS.iter().filter(|k| k.kind != "Event") {
        with_kind!(info.kind, K => {
            let cache = watch_kind::<K>(informers, &index, &queue, &shutdown);
            let c = cache.clone();
            synced.push(tokio::spawn(async move { c.wait_synced().await }));
            caches.insert(info.kind, Box::new(cache));
        }, _ => {});
    }
    tokio::select! {
        _ = futures::future::join_all(synced) => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = GarbageCollector {
        client,
        caches,
        index,
    };
    runtime::run(Arc::new(controller), queue, 4, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str, uid: &str, block: bool) -> api::OwnerReference {
        api::OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn id(kind: &'static str, name: &str) -> ObjectId {
        (kind, "default".into(), name.into())
    }

    #[test]
    fn the_index_follows_reference_changes_and_deletions() {
        let mut ix = DependentIndex::default();
        ix.set(id("Pod", "p1"), &[owner("ReplicaSet", "rs", "u-rs", true)]);
        ix.set(id("Pod", "p2"), &[owner("ReplicaSet", "rs", "u-rs", true)]);
        assert_eq!(ix.dependents("u-rs"), [id("Pod", "p1"), id("Pod", "p2")]);
        // p1 is orphaned (its reference removed), p2 deleted.
        ix.set(id("Pod", "p1"), &[]);
        ix.remove(&id("Pod", "p2"));
        assert!(ix.dependents("u-rs").is_empty());
        assert!(ix.owners.is_empty() && ix.dependents.is_empty());
    }

    #[test]
    fn a_dependent_goes_only_when_all_its_owners_are_gone() {
        let refs = [
            owner("ReplicaSet", "a", "u-a", false),
            owner("Deployment", "b", "u-b", false),
        ];
        assert_eq!(decide(&refs, &[]), Decision::Keep);
        assert_eq!(
            decide(&refs, &["u-a".to_string()]),
            Decision::DropReferences(vec!["u-a".to_string()])
        );
        assert_eq!(
            decide(&refs, &["u-a".to_string(), "u-b".to_string()]),
            Decision::Delete
        );
        assert_eq!(decide(&[], &[]), Decision::Keep);
    }

    #[test]
    fn only_block_owner_deletion_blocks_a_foreground_delete() {
        let mut m = api::ObjectMeta {
            owner_references: vec![owner("ReplicaSet", "rs", "u-rs", true)],
            ..Default::default()
        };
        assert!(blocks(&m, "u-rs"));
        assert!(!blocks(&m, "u-other"));
        m.owner_references[0].block_owner_deletion = None;
        assert!(!blocks(&m, "u-rs"));
    }

    #[test]
    fn keys_carry_the_kind_and_owner_scope_follows_the_kind() {
        let d = id("Deployment", "web");
        assert_eq!(parse_key(&queue_key(&d)), Some(d));
        let n = ("Node", String::new(), "n1".to_string());
        assert_eq!(parse_key(&queue_key(&n)), Some(n));
        assert_eq!(parse_key(&("Nope/x".into(), "y".into())), None);
        let node_ref = api::OwnerReference {
            kind: "Node".into(),
            name: "n1".into(),
            ..Default::default()
        };
        assert_eq!(
            owner_id(&node_ref, "default"),
            Some(("Node", String::new(), "n1".into()))
        );
        let rs_ref = owner("ReplicaSet", "rs", "u", false);
        assert_eq!(
            owner_id(&rs_ref, "shop"),
            Some(("ReplicaSet", "shop".into(), "rs".into()))
        );
        let unknown = api::OwnerReference {
            kind: "CronJob".into(),
            ..Default::default()
        };
        assert_eq!(owner_id(&unknown, "default"), None);
    }
}
