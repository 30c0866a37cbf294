//! The typed object client: the verbs of the Objects service for any kind
//! `K`, with the same failover loop as KV calls, and exactly-once writes
//! (each write gets one [`WriteId`](rafter_proto::api::WriteId) before the
//! loop, so a resend after a master died cannot apply twice).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use rafter_proto::api::objects_client::ObjectsClient;
use rafter_proto::api::{
    self, CreateRequest, DeleteRequest, GetRequest, ListRequest, PatchRequest, UpdateRequest,
    WatchRequest,
};
use rafter_proto::object::Object;
use tonic::Streaming;

use crate::client::{Conn, backoff};
use crate::error::{Outcome, classify};
use crate::{Client, Error};

/// A list's items and the revision it was read at (watch from there).
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub resource_version: String,
}

/// How a delete proceeds.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Only delete this uid / resourceVersion (Conflict otherwise).
    pub preconditions: Option<api::Preconditions>,
    /// "Background" (default), "Foreground" or "Orphan".
    pub propagation_policy: String,
    /// Seconds a Pod bound to a node gets to stop (None: its own
    /// terminationGracePeriodSeconds); `Some(0)` removes it at once.
    pub grace_period_seconds: Option<i64>,
}

impl DeleteOptions {
    /// Deletes only the object with this uid: a newer object that took the
    /// same name meanwhile is left alone (Conflict).
    pub fn with_uid(uid: &str) -> Self {
        DeleteOptions {
            preconditions: Some(api::Preconditions {
                uid: uid.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The same with grace period 0: a Pod is removed at once, without
    /// waiting for its node agent to stop it (only its agent, or someone
    /// who knows that no agent will, should do this).
    pub fn force(self) -> Self {
        DeleteOptions {
            grace_period_seconds: Some(0),
            ..self
        }
    }
}

/// One change seen by an object watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// Everything up to this resourceVersion has been delivered.
    Bookmark(String),
}

fn objects_client(conn: Conn) -> ObjectsClient<Conn> {
    ObjectsClient::new(conn)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

fn decode<K: Object>(bytes: &[u8]) -> Result<K, Error> {
    K::decode(bytes).map_err(|e| {
        Error::local_status(tonic::Status::internal(format!(
            "the master sent an undecodable {}: {e}",
            K::INFO.kind
        )))
    })
}

fn api_write_id(client: &Client) -> api::WriteId {
    let id = client.next_write_id();
    api::WriteId {
        client_id: id.client_id,
        seq: id.seq,
    }
}

impl Client {
    async fn objects_call<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(ObjectsClient<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (resp, _) = self
            .with_failover(self.policy(), |ch, _| attempt(objects_client(ch)))
            .await?;
        Ok(resp)
    }

    /// Creates `obj`; returns it as stored (uid, resourceVersion, defaults).
    pub async fn create<K: Object>(&self, obj: &K) -> Result<K, Error> {
        let req = CreateRequest {
            kind: K::INFO.kind.into(),
            object: obj.encode_to_vec(),
            write_id: Some(api_write_id(self)),
        };
        let resp = self
            .objects_call(|mut c| {
                let r = req.clone();
                async move { c.create(r).await }
            })
            .await?;
        decode(&resp.object)
    }

    /// The object `namespace/name` (namespace ignored for cluster-scoped
    /// kinds), read linearizably.
    pub async fn get_object<K: Object>(&self, namespace: &str, name: &str) -> Result<K, Error> {
        let req = GetRequest {
            kind: K::INFO.kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            serializable: false,
        };
        let resp = self
            .objects_call(|mut c| {
                let r = req.clone();
                async move { c.get(r).await }
            })
            .await?;
        decode(&resp.object)
    }

    /// Objects of kind `K` in `namespace` ("" for all) passing the label
    /// and field selectors ("" for none).
    pub async fn list<K: Object>(
        &self,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<ObjectList<K>, Error> {
        let req = ListRequest {
            kind: K::INFO.kind.into(),
            namespace: namespace.into(),
            label_selector: label_selector.into(),
            field_selector: field_selector.into(),
            serializable: false,
        };
        let resp = self
            .objects_call(|mut c| {
                let r = req.clone();
                async move { c.list(r).await }
            })
            .await?;
        let items = resp
            .items
            .iter()
            .map(|b| decode(b))
            .collect::<Result<Vec<K>, Error>>()?;
        Ok(ObjectList {
            items,
            resource_version: resp.resource_version,
        })
    }

    async fn update_inner<K: Object>(&self, obj: &K, status: bool) -> Result<K, Error> {
        let req = UpdateRequest {
            kind: K::INFO.kind.into(),
            object: obj.encode_to_vec(),
            write_id: Some(api_write_id(self)),
        };
        let resp = self
            .objects_call(|mut c| {
                let r = req.clone();
                async move {
                    if status {
                        c.update_status(r).await
                    } else {
                        c.update(r).await
                    }
                }
            })
            .await?;
        decode(&resp.object)
    }

    /// Replaces spec and metadata; a compare-and-swap on
    /// metadata.resourceVersion when set (Conflict if it is not current).
    pub async fn update<K: Object>(&self, obj: &K) -> Result<K, Error> {
        self.update_inner(obj, false).await
    }

    /// Replaces the status only.
    pub async fn update_status<K: Object>(&self, obj: &K) -> Result<K, Error> {
        self.update_inner(obj, true).await
    }

    /// Applies a JSON merge patch to the object (or its status).
    pub async fn patch<K: Object>(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
        status: bool,
    ) -> Result<K, Error> {
        let req = PatchRequest {
            kind: K::INFO.kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            merge_patch: patch.to_string().into_bytes(),
            status,
            write_id: Some(api_write_id(self)),
        };
        let resp = self
            .objects_call(|mut c| {
                let r = req.clone();
                async move { c.patch(r).await }
            })
            .await?;
        decode(&resp.object)
    }

    /// Deletes the object; with finalizers it is only marked (returned with
    /// its deletionTimestamp) and goes when they are removed. A Pod bound
    /// to a node is marked too, with its grace period, and goes when its
    /// node agent has stopped it.
    pub async fn delete_object<K: Object>(
        &self,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<K, Error> {
        let req = DeleteRequest {
            kind: K::INFO.kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            preconditions: options.preconditions.clone(),
            propagation_policy: options.propagation_policy.clone(),
            write_id: Some(api_write_id(self)),
            grace_period_seconds: options.grace_period_seconds,
        };
        let resp = self
            .objects_call(|mut c| {
                let r = req.clone();
                async move { c.delete(r).await }
            })
            .await?;
        decode(&resp.object)
    }

    /// Watches objects of kind `K` after `resource_version` ("" for "the
    /// current objects as Added, then changes"). The stream survives master
    /// failures: it resumes elsewhere from the last revision delivered
    /// (bookmarks included), so nothing is missed or repeated. It ends with
    /// an error whose reason is "Gone" when that revision is compacted away:
    /// list again and watch from the list's revision.
    pub fn watch_objects<K: Object>(
        &self,
        namespace: &str,
        label_selector: &str,
        field_selector: &str,
        resource_version: &str,
    ) -> ObjectWatch<K> {
        let req = WatchRequest {
            kind: K::INFO.kind.into(),
            namespace: namespace.into(),
            label_selector: label_selector.into(),
            field_selector: field_selector.into(),
            resource_version: resource_version.into(),
            allow_bookmarks: true,
        };
        let state = WatchState {
            client: self.clone(),
            req,
            stream: None,
            finished: false,
            breaks: 0,
            _kind: std::marker::PhantomData,
        };
        ObjectWatch {
            inner: Box::pin(futures::stream::unfold(state, WatchState::<K>::step)),
        }
    }
}

/// See [`Client::watch_objects`].
pub struct ObjectWatch<K> {
    inner: Pin<Box<dyn Stream<Item = Result<WatchEvent<K>, Error>> + Send>>,
}

impl<K> std::fmt::Debug for ObjectWatch<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWatch").finish_non_exhaustive()
    }
}

impl<K> Stream for ObjectWatch<K> {
    type Item = Result<WatchEvent<K>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct WatchState<K> {
    client: Client,
    req: WatchRequest,
    stream: Option<(Streaming<api::WatchEvent>, usize)>,
    finished: bool,
    breaks: u32,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Object> WatchState<K> {
    async fn step(mut self) -> Option<(Result<WatchEvent<K>, Error>, Self)> {
        loop {
            if self.finished {
                return None;
            }
            let Some((stream, endpoint)) = self.stream.as_mut() else {
                let req = self.req.clone();
                let opened = self
                    .client
                    .with_failover(self.client.policy(), |ch, _| {
                        let mut c = objects_client(ch);
                        let r = tonic::Request::new(req.clone());
                        async move { c.watch(r).await }
                    })
                    .await;
                match opened {
                    Ok(s) => self.stream = Some(s),
                    Err(e) => {
                        self.finished = true;
                        return Some((Err(e), self));
                    }
                }
                continue;
            };
            let endpoint = *endpoint;
            let reason = match stream.message().await {
                Ok(Some(ev)) => {
                    self.breaks = 0;
                    // Resume after the highest revision delivered. (The
                    // initial replay of current objects comes in key
                    // order; resuming from its highest revision may repeat
                    // a change, never skip one.)
                    let seen: u64 = ev.resource_version.parse().unwrap_or(0);
                    let resume: u64 = self.req.resource_version.parse().unwrap_or(0);
                    if seen > resume {
                        self.req.resource_version = seen.to_string();
                    }
                    let event = match ev.r#type.as_str() {
                        "BOOKMARK" => Ok(WatchEvent::Bookmark(ev.resource_version)),
                        "ADDED" => decode(&ev.object).map(WatchEvent::Added),
                        "MODIFIED" => decode(&ev.object).map(WatchEvent::Modified),
                        "DELETED" => decode(&ev.object).map(WatchEvent::Deleted),
                        other => {
                            tracing::warn!(r#type = other, "unknown watch event type; skipped");
                            continue;
                        }
                    };
                    return Some((event, self));
                }
                Ok(None) => "the master ended the stream".to_string(),
                Err(status) => match classify(status, 0) {
                    Outcome::Fail(e) => {
                        self.finished = true;
                        let e = e.answered_by(&self.client.endpoint_name(endpoint));
                        return Some((Err(e), self));
                    }
                    Outcome::Retry(reason) => reason,
                },
            };
            tracing::debug!(%reason, "object watch broke; resuming at another master");
            self.stream = None;
            self.client.endpoint_failed(endpoint);
            self.breaks += 1;
            tokio::time::sleep(backoff(self.breaks)).await;
        }
    }
}
