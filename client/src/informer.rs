//! Informers: a local, always-current copy of the objects of one kind
//! (list, then watch from the list's revision), with change notifications.
//! The scheduler, the controllers and the node agent read their caches
//! from here instead of asking the masters each time.
//!
//! The watch resumes after a master failure from the last revision it
//! delivered (bookmarks keep that revision fresh even when nothing
//! changes), so no change is missed; only when that revision has been
//! compacted away (Gone) does the informer list again, and then it reports
//! the difference between its cache and the new list as events.
//!
//! Components that run together share informers through [`Informers`]:
//! one list and one watch per kind and selector, however many components
//! read it (as client-go's shared informer factory). Each subscriber gets
//! its own change stream, which begins with the objects already cached;
//! the streams are unbounded, so a slow subscriber delays no one else.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use rafter_proto::object::Object;
use tokio::sync::{mpsc, watch};

use crate::{Client, Error, WatchEvent};

/// A change the informer applied to its cache. The object is shared with
/// the cache and every other subscriber (one copy per object, not one per
/// subscriber); `Arc::unwrap_or_clone` gives an owned one.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// Added or modified: the object as it now is.
    Applied(Arc<K>),
    /// Gone from the cache: its last state.
    Deleted(Arc<K>),
}

/// The stream of changes one subscriber receives, in the order applied.
pub type Events<K> = mpsc::UnboundedReceiver<Event<K>>;

/// The cache an informer keeps; cheap to clone, shared with the informer.
#[derive(Debug)]
pub struct Cache<K> {
    objects: Arc<RwLock<Objects<K>>>,
    synced: watch::Receiver<bool>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            objects: self.objects.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<K: Object> Cache<K> {
    /// A synced cache holding `objects` and fed by no informer: for tests
    /// of code that reads caches, and for callers with a fixed set.
    pub fn from_objects(objects: impl IntoIterator<Item = K>) -> Self {
        let (_, synced) = watch::channel(true);
        Cache {
            objects: Arc::new(RwLock::new(
                objects
                    .into_iter()
                    .map(|o| (key_of(&o), Arc::new(o)))
                    .collect(),
            )),
            synced,
        }
    }

    /// The cached object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<K> {
        let key = (namespace.to_string(), name.to_string());
        let objects = self.objects.read().expect("cache lock");
        objects.get(&key).map(|o| K::clone(o))
    }

    /// Every cached object, by namespace then name.
    pub fn list(&self) -> Vec<K> {
        self.objects
            .read()
            .expect("cache lock")
            .values()
            .map(|o| K::clone(o))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.objects.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list has been loaded. By then, the change
    /// stream returned with this cache already holds an event for every
    /// object of that list (the list's events are sent before the cache
    /// says it is synced; a later subscriber's stream starts with the
    /// cache's objects), so a consumer may build its state from the stream
    /// alone by draining what is queued.
    pub async fn wait_synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }
}

/// The cached objects by (namespace, name), each shared with the events
/// that announced it.
type Objects<K> = BTreeMap<(String, String), Arc<K>>;

fn key_of<K: Object>(obj: &K) -> (String, String) {
    let m = obj.metadata();
    (m.namespace.clone(), m.name.clone())
}

/// Starts an informer of its own for kind `K` in `namespace` ("" for all)
/// with a label selector ("" for all). Returns the cache and the stream of
/// changes. The informer runs until the stream is dropped.
pub fn start<K: Object>(
    client: Client,
    namespace: &str,
    label_selector: &str,
) -> (Cache<K>, Events<K>) {
    start_selected(client, namespace, label_selector, "")
}

/// [`start`] with a field selector too (e.g. `spec.nodeName=n1`: a node
/// agent's own pods).
pub fn start_selected<K: Object>(
    client: Client,
    namespace: &str,
    label_selector: &str,
    field_selector: &str,
) -> (Cache<K>, Events<K>) {
    let (shared, synced) = Shared::new();
    let subscription = shared.subscribe();
    let only = shared.subscribers.lock().expect("subscribers lock")[0].clone();
    let until: Until = Box::pin(async move { only.closed().await });
    let selection = Selection::new(namespace, label_selector, field_selector);
    tokio::spawn(run::<K>(client, selection, shared, synced, until));
    subscription
}

/// Informers shared by the components that run together (the scheduler
/// and the controllers of one leader term): the first request for a kind
/// and selection starts its informer, later ones subscribe to it. Cheap to
/// clone; the informers stop when the last clone is dropped.
#[derive(Clone)]
pub struct Informers {
    inner: Arc<Factory>,
}

struct Factory {
    client: Client,
    informers: Mutex<HashMap<(TypeId, Selection), Arc<dyn Any + Send + Sync>>>,
    /// Dropped with the factory, which ends every informer it started.
    alive: watch::Sender<()>,
}

impl std::fmt::Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informers")
            .field("running", &self.running())
            .finish()
    }
}

impl Informers {
    /// Informers that list and watch through `client`.
    pub fn new(client: Client) -> Self {
        Informers {
            inner: Arc::new(Factory {
                client,
                informers: Mutex::default(),
                alive: watch::Sender::new(()),
            }),
        }
    }

    /// How many informers run: one per kind and selection asked for.
    pub fn running(&self) -> usize {
        self.inner.informers.lock().expect("informers lock").len()
    }

    /// The cache and a new change stream of kind `K` in `namespace` ("" for
    /// all) with a label selector ("" for all).
    pub fn start<K: Object>(&self, namespace: &str, label_selector: &str) -> (Cache<K>, Events<K>) {
        self.start_selected(namespace, label_selector, "")
    }

    /// [`Informers::start`] with a field selector too.
    pub fn start_selected<K: Object>(
        &self,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
    ) -> (Cache<K>, Events<K>) {
        let selection = Selection::new(namespace, label_selector, field_selector);
        let mut informers = self.inner.informers.lock().expect("informers lock");
        let entry = informers
            .entry((TypeId::of::<K>(), selection.clone()))
            .or_insert_with(|| {
                let (shared, synced) = Shared::<K>::new();
                let mut alive = self.inner.alive.subscribe();
                let until: Until = Box::pin(async move { while alive.changed().await.is_ok() {} });
                tokio::spawn(run::<K>(
                    self.inner.client.clone(),
                    selection,
                    shared.clone(),
                    synced,
                    until,
                ));
                shared
            });
        entry
            .clone()
            .downcast::<Shared<K>>()
            .expect("one kind per type id")
            .subscribe()
    }
}

/// What an informer lists and watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Selection {
    namespace: String,
    labels: String,
    fields: String,
}

impl Selection {
    fn new(namespace: &str, labels: &str, fields: &str) -> Self {
        Selection {
            namespace: namespace.to_string(),
            labels: labels.to_string(),
            fields: fields.to_string(),
        }
    }
}

/// Resolves when the informer should stop.
type Until = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One informer's cache and subscribers.
struct Shared<K> {
    objects: Arc<RwLock<Objects<K>>>,
    synced: watch::Receiver<bool>,
    /// Locked before `objects` by both the informer (apply, then send) and
    /// a new subscriber (snapshot, then join), so that every subscriber
    /// sees each change exactly once, after the objects it began with.
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Event<K>>>>,
}

impl<K: Object> Shared<K> {
    fn new() -> (Arc<Self>, watch::Sender<bool>) {
        let (synced_tx, synced) = watch::channel(false);
        let shared = Shared {
            objects: Arc::default(),
            synced,
            subscribers: Mutex::default(),
        };
        (Arc::new(shared), synced_tx)
    }

    fn subscribe(&self) -> (Cache<K>, Events<K>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        for o in self.objects.read().expect("cache lock").values() {
            let _ = tx.send(Event::Applied(o.clone()));
        }
        subscribers.push(tx);
        let cache = Cache {
            objects: self.objects.clone(),
            synced: self.synced.clone(),
        };
        (cache, rx)
    }

    /// Changes the cache with `change`, which says what it changed, and
    /// tells every subscriber.
    fn apply(&self, change: impl FnOnce(&mut Objects<K>) -> Vec<Event<K>>) {
        let mut subscribers = self.subscribers.lock().expect("subscribers lock");
        let events = change(&mut self.objects.write().expect("cache lock"));
        subscribers.retain(|s| events.iter().all(|e| s.send(e.clone()).is_ok()));
    }
}

async fn run<K: Object>(
    client: Client,
    selection: Selection,
    shared: Arc<Shared<K>>,
    synced: watch::Sender<bool>,
    mut until: Until,
) {
    let Selection {
        namespace,
        labels,
        fields,
    } = &selection;
    loop {
        // List, and turn the difference from the cache into events.
        let listing = std::time::Instant::now();
        let listed = tokio::select! {
            l = client.list::<K>(namespace, labels, fields) => l,
            _ = &mut until => return,
        };
        let list = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(kind = K::INFO.kind, error = %e, "informer list failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => continue,
                    _ = &mut until => return,
                }
            }
        };
        let (objects, list_took) = (list.items.len(), listing.elapsed());
        shared.apply(|cache| {
            let mut events = Vec::new();
            let fresh: Objects<K> = list
                .items
                .into_iter()
                .map(|o| (key_of(&o), Arc::new(o)))
                .collect();
            for (k, old) in cache.iter() {
                if !fresh.contains_key(k) {
                    events.push(Event::Deleted(old.clone()));
                }
            }
            for (k, new) in &fresh {
                if cache.get(k) != Some(new) {
                    events.push(Event::Applied(new.clone()));
                }
            }
            *cache = fresh;
            events
        });
        let _ = synced.send(true);
        tracing::info!(
            kind = K::INFO.kind,
            objects,
            list_ms = list_took.as_millis() as u64,
            applied_ms = (listing.elapsed() - list_took).as_millis() as u64,
            "informer listed"
        );
        let mut stream =
            client.watch_objects::<K>(namespace, labels, fields, &list.resource_version);
        let err: Error = loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = &mut until => return,
            };
            match event {
                None => break Error::Unavailable { tried: Vec::new() },
                Some(Err(e)) => break e,
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => shared.apply(|cache| {
                    let o = Arc::new(o);
                    cache.insert(key_of(&*o), o.clone());
                    vec![Event::Applied(o)]
                }),
                Some(Ok(WatchEvent::Deleted(o))) => shared.apply(|cache| {
                    cache.remove(&key_of(&o));
                    vec![Event::Deleted(Arc::new(o))]
                }),
            }
        };
        tracing::info!(kind = K::INFO.kind, error = %err, "informer watch ended; listing again");
    }
}
