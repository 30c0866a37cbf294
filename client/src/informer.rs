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

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use rafter_proto::object::Object;
use tokio::sync::{mpsc, watch};

use crate::{Client, Error, WatchEvent};

/// A change the informer applied to its cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// Added or modified: the object as it now is.
    Applied(K),
    /// Gone from the cache: its last state.
    Deleted(K),
}

/// The cache an informer keeps; cheap to clone, shared with the informer.
#[derive(Debug)]
pub struct Cache<K> {
    objects: Arc<RwLock<BTreeMap<(String, String), K>>>,
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
                objects.into_iter().map(|o| (key_of(&o), o)).collect(),
            )),
            synced,
        }
    }

    /// The cached object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<K> {
        let key = (namespace.to_string(), name.to_string());
        self.objects.read().expect("cache lock").get(&key).cloned()
    }

    /// Every cached object, by namespace then name.
    pub fn list(&self) -> Vec<K> {
        self.objects
            .read()
            .expect("cache lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.objects.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_synced(&self) {
        let mut s = self.synced.clone();
        let _ = s.wait_for(|v| *v).await;
    }
}

fn key_of<K: Object>(obj: &K) -> (String, String) {
    let m = obj.metadata();
    (m.namespace.clone(), m.name.clone())
}

/// Starts an informer for kind `K` in `namespace` ("" for all) with a label
/// selector ("" for all). Returns the cache and the stream of changes (in
/// the order applied). The informer runs until the receiver is dropped.
pub fn start<K: Object>(
    client: Client,
    namespace: &str,
    label_selector: &str,
) -> (Cache<K>, mpsc::Receiver<Event<K>>) {
    start_selected(client, namespace, label_selector, "")
}

/// [`start`] with a field selector too (e.g. `spec.nodeName=n1`: a node
/// agent's own pods).
pub fn start_selected<K: Object>(
    client: Client,
    namespace: &str,
    label_selector: &str,
    field_selector: &str,
) -> (Cache<K>, mpsc::Receiver<Event<K>>) {
    let objects = Arc::new(RwLock::new(BTreeMap::new()));
    let (synced_tx, synced) = watch::channel(false);
    let (tx, rx) = mpsc::channel(1024);
    let cache = Cache {
        objects: objects.clone(),
        synced,
    };
    let namespace = namespace.to_string();
    let selector = label_selector.to_string();
    let fields = field_selector.to_string();
    tokio::spawn(async move {
        run::<K>(client, namespace, selector, fields, objects, synced_tx, tx).await;
    });
    (cache, rx)
}

async fn run<K: Object>(
    client: Client,
    namespace: String,
    selector: String,
    fields: String,
    objects: Arc<RwLock<BTreeMap<(String, String), K>>>,
    synced: watch::Sender<bool>,
    tx: mpsc::Sender<Event<K>>,
) {
    loop {
        // List, and turn the difference from the cache into events.
        let list = match client.list::<K>(&namespace, &selector, &fields).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(kind = K::INFO.kind, error = %e, "informer list failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut events = Vec::new();
        {
            let mut cache = objects.write().expect("cache lock");
            let fresh: BTreeMap<_, _> = list.items.into_iter().map(|o| (key_of(&o), o)).collect();
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
        }
        let _ = synced.send(true);
        for e in events {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        let mut stream =
            client.watch_objects::<K>(&namespace, &selector, &fields, &list.resource_version);
        let err: Error = loop {
            let event = tokio::select! {
                e = stream.next() => e,
                _ = tx.closed() => return,
            };
            let applied = match event {
                None => break Error::Unavailable { tried: Vec::new() },
                Some(Err(e)) => break e,
                Some(Ok(WatchEvent::Bookmark(_))) => continue,
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    objects
                        .write()
                        .expect("cache lock")
                        .insert(key_of(&o), o.clone());
                    Event::Applied(o)
                }
                Some(Ok(WatchEvent::Deleted(o))) => {
                    objects.write().expect("cache lock").remove(&key_of(&o));
                    Event::Deleted(o)
                }
            };
            if tx.send(applied).await.is_err() {
                return;
            }
        };
        tracing::info!(kind = K::INFO.kind, error = %err, "informer watch ended; listing again");
    }
}
