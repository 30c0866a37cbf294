//! The namespace controller: empties a namespace that is being deleted,
//! then lets it go.
//!
//! Deleting a namespace only marks it: the API server sets its
//! deletionTimestamp, phase Terminating and the `kubernetes` finalizer, and
//! from then on refuses to create anything in it. This controller deletes
//! every namespaced object of every kind in it, waits until they are all
//! gone (objects with finalizers of their own go when those are removed),
//! and then removes the finalizer, which removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use rafter_client::informer::{Cache, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::api;
use rafter_proto::object::{KINDS, Object};
use rafter_proto::with_kind;
use tokio_util::sync::CancellationToken;

use crate::informer_events::{forward, object};
use crate::runtime::{self, Action, Key, Queue, Reconciler};

/// The finalizer the API server gives a namespace being deleted.
pub const FINALIZER: &str = "kubernetes";

/// How often a namespace whose content is still going is looked at again.
const RECHECK: Duration = Duration::from_millis(500);

/// The namespace controller.
pub struct NamespaceController {
    client: Client,
    namespaces: Cache<api::Namespace>,
}

impl NamespaceController {
    /// Deletes every object of kind `K` in `namespace`; returns how many
    /// there were (those with finalizers may stay a while).
    async fn delete_all<K: Object>(&self, namespace: &str) -> Result<usize, Error> {
        let list = self.client.list::<K>(namespace, "", "").await?;
        for obj in &list.items {
            let m = obj.metadata();
            if !m.deletion_timestamp.is_empty() {
                continue;
            }
            match self
                .client
                .delete_object::<K>(namespace, &m.name, &DeleteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_reason("NotFound") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(list.items.len())
    }
}

impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let name = &key.1;
        let Some(ns) = self.namespaces.get("", name) else {
            return Ok(Action::Done);
        };
        let m = ns.metadata();
        if m.deletion_timestamp.is_empty() || !m.finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(Action::Done);
        }
        let mut remaining = 0;
        for info in KINDS.iter().filter(|k| k.namespaced) {
            remaining += with_kind!(info.kind, K => self.delete_all::<K>(name).await?, _ => 0);
        }
        if remaining > 0 {
            tracing::debug!(namespace = %name, remaining, "namespace content still being deleted");
            return Ok(Action::RequeueAfter(RECHECK));
        }
        let mut next = ns.clone();
        next.metadata_mut().finalizers.retain(|f| f != FINALIZER);
        match self.client.update(&next).await {
            Ok(_) => {}
            Err(e) if e.is_reason("NotFound") => {}
            Err(e) => return Err(e),
        }
        tracing::info!(namespace = %name, "namespace emptied and deleted");
        Ok(Action::Done)
    }
}

/// Runs the namespace controller until `shutdown`.
pub async fn run(client: Client, informers: &Informers, shutdown: CancellationToken) {
    let (namespaces, events) = informers.start::<api::Namespace>("", "");
    let queue = Queue::new();
    let q = queue.clone();
    forward(events, shutdown.clone(), move |e| {
        q.add(runtime::key_of(object(&e)));
    });
    tokio::select! {
        _ = namespaces.wait_synced() => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = NamespaceController { client, namespaces };
    runtime::run(Arc::new(controller), queue, 2, shutdown).await;
}
