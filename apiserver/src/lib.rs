//! The API server every master runs: the generic object verbs of
//! `rafter.api.v1.Objects` over raft-store, with validation and defaulting,
//! selectors, watches with bookmarks, and the bearer-token check.
//!
//! Requests name their kind; [`rafter_proto::with_kind`] turns the name into
//! the kind's Rust type, and everything below is generic over
//! [`Object`](rafter_proto::object::Object).

pub mod auth;
pub mod cluster_ip;
pub mod error;
pub mod node_auth;
pub mod nodes;
pub mod pods;
pub mod store;
pub mod validate;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rafter_proto::api::objects_server::{Objects, ObjectsServer};
use rafter_proto::api::{
    self, CreateRequest, DeleteRequest, GetRequest, ListRequest, ListResponse, ObjectResponse,
    PatchRequest, UpdateRequest, WatchEvent, WatchRequest,
};
use rafter_proto::object::Object;
use rafter_proto::with_kind;
use rafter_raft_store::node::Node;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Identity, identity_of};
use crate::error::{ApiError, Reason, Result};
use crate::node_auth::Verb;
use crate::store::Store;

/// Settings of the API server.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            bookmark_interval: store::DEFAULT_BOOKMARK_INTERVAL,
        }
    }
}

/// The Objects service of one master.
#[derive(Clone)]
pub struct ApiServer {
    store: Store,
    options: ApiOptions,
}

/// The request header carrying a leader-only component's Raft term (the
/// client library's `FENCE_TERM_HEADER`).
pub const FENCE_TERM_HEADER: &str = "rafter-fence-term";

/// Namespaces that exist from the start.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "rafter-system", "rafter-node-lease"];

impl ApiServer {
    pub fn new(node: Arc<Node>, options: ApiOptions) -> Self {
        ApiServer {
            store: Store {
                node,
                fence_term: 0,
                service_cidr: cluster_ip::DEFAULT_SERVICE_CIDR
                    .parse()
                    .expect("valid CIDR"),
            },
            options,
        }
    }

    /// Allocates Service cluster IPs from `cidr` (`--service-cidr`;
    /// default 10.96.0.0/12). Every master must be given the same range.
    pub fn with_service_cidr(mut self, cidr: ipnet::IpNet) -> Self {
        self.store.service_cidr = cidr;
        self
    }

    /// The gRPC service.
    pub fn service(self) -> ObjectsServer<ApiServer> {
        ObjectsServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// The Nodes service (join, masters) over the same store.
    pub fn nodes_service(
        &self,
    ) -> rafter_proto::api::nodes_server::NodesServer<nodes::NodesService> {
        nodes::NodesService {
            store: self.store.clone(),
        }
        .service()
    }

    /// The Pods service (logs, exec through the node agents).
    pub fn pods_service(&self) -> rafter_proto::api::pods_server::PodsServer<pods::PodsService> {
        pods::PodsService {
            store: self.store.clone(),
        }
        .service()
    }

    /// Creates the system namespaces when missing; retries until the
    /// cluster has a leader. Every master runs it; the losers of the race
    /// see AlreadyExists.
    pub async fn ensure_system_namespaces(&self) {
        for name in SYSTEM_NAMESPACES {
            loop {
                let mut ns = api::Namespace::default();
                ns.metadata_mut().name = name.to_string();
                match self.store.create(ns, None).await {
                    Ok(_) => break,
                    Err(e) if e.reason == Reason::AlreadyExists => break,
                    Err(e) => {
                        tracing::debug!(namespace = name, error = %e.message, "namespace not created yet; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}

impl ApiError {
    /// Adds the leader's address to an Unavailable error.
    pub fn with_leader(mut self, store: &Store) -> Self {
        if self.reason == Reason::Unavailable
            && let Some((_, m)) = store.node.leader()
        {
            self.leader = m.addr;
        }
        self
    }
}

fn unknown_kind(kind: &str) -> ApiError {
    let known: Vec<&str> = rafter_proto::object::KINDS.iter().map(|k| k.kind).collect();
    ApiError::new(
        Reason::NotFound,
        format!(
            "the server doesn't have a resource type {kind:?}; known kinds: {}",
            known.join(", ")
        ),
    )
}

fn decode_request<K: Object>(bytes: &[u8]) -> Result<K> {
    let obj = K::decode(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request's object is not a valid {}: {e}",
            K::INFO.kind
        ))
    })?;
    let (av, kind) = obj.type_meta();
    if !kind.is_empty() && kind != K::INFO.kind {
        return Err(ApiError::bad_request(format!(
            "the object's kind {kind:?} does not match the request's kind {:?}",
            K::INFO.kind
        )));
    }
    if !av.is_empty() && av != K::INFO.api_version {
        return Err(ApiError::bad_request(format!(
            "{} is served as apiVersion {:?}, not {av:?}",
            K::INFO.kind,
            K::INFO.api_version
        )));
    }
    Ok(obj)
}

fn reply<K: Object>(obj: K) -> ObjectResponse {
    ObjectResponse {
        object: obj.encode_to_vec(),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = std::result::Result<WatchEvent, Status>> + Send>>;

impl ApiServer {
    /// Update, or UpdateStatus when `status_only`.
    async fn update_object(
        &self,
        req: Request<UpdateRequest>,
        status_only: bool,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        let s = &self.writer(&req)?;
        let identity = identity_of(&req);
        let verb = if status_only {
            Verb::UpdateStatus
        } else {
            Verb::Update
        };
        let req = req.into_inner();
        let r = with_kind!(req.kind.as_str(), K => async {
            let obj: K = decode_request(&req.object)?;
            let m = obj.metadata();
            self.guard(&identity, verb, K::INFO.kind, &m.namespace, &m.name).await?;
            s.update(obj, status_only, req.write_id).await.map(reply)
        }.await, _ => Err(unknown_kind(&req.kind)));
        self.finish(r)
    }

    /// The store a write request writes through: fenced with the Raft term
    /// in its `rafter-fence-term` header when it has one.
    fn writer<T>(&self, req: &Request<T>) -> std::result::Result<Store, Status> {
        let Some(v) = req.metadata().get(FENCE_TERM_HEADER) else {
            return Ok(self.store.clone());
        };
        let term = v
            .to_str()
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                Status::from(ApiError::bad_request(format!(
                    "the {} header must be a positive Raft term",
                    FENCE_TERM_HEADER
                )))
            })?;
        Ok(Store {
            fence_term: term,
            ..self.store.clone()
        })
    }

    /// Lets `identity` do `verb` on `kind` `namespace/name`, or says why
    /// not: the admin may do everything, a bootstrap token nothing here, a
    /// node what the node authorizer allows once its credential checks out.
    async fn guard(
        &self,
        identity: &Identity,
        verb: Verb,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<()> {
        match identity {
            Identity::Admin => Ok(()),
            Identity::Bootstrap { id, .. } => Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "bootstrap token {id:?} may only join a node (`rafter agent --token`); use the admin token for the object API"
                ),
            )),
            Identity::Node { name: node, secret } => {
                node_auth::verify_node(&self.store, node, secret).await?;
                match node_auth::kind_info(kind) {
                    Some(info) => {
                        node_auth::authorize(&self.store, node, verb, info, namespace, name).await
                    }
                    // The request itself reports the unknown kind.
                    None => Ok(()),
                }
            }
        }
    }

    fn finish<T>(&self, r: Result<T>) -> std::result::Result<Response<T>, Status> {
        r.map(Response::new)
            .map_err(|e| e.with_leader(&self.store).into())
    }
}

#[tonic::async_trait]
impl Objects for ApiServer {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        let s = &self.writer(&req)?;
        let identity = identity_of(&req);
        let req = req.into_inner();
        let r = with_kind!(req.kind.as_str(), K => async {
            let obj: K = decode_request(&req.object)?;
            let m = obj.metadata();
            self.guard(&identity, Verb::Create, K::INFO.kind, &m.namespace, &m.name).await?;
            s.create(obj, req.write_id).await.map(reply)
        }.await, _ => Err(unknown_kind(&req.kind)));
        self.finish(r)
    }

    async fn get(
        &self,
        req: Request<GetRequest>,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        let identity = identity_of(&req);
        let req = req.into_inner();
        let s = &self.store;
        let r = match self
            .guard(&identity, Verb::Get, &req.kind, &req.namespace, &req.name)
            .await
        {
            Err(e) => Err(e),
            Ok(()) => with_kind!(req.kind.as_str(), K => s
                .get::<K>(&req.namespace, &req.name, req.serializable)
                .await
                .map(reply), _ => Err(unknown_kind(&req.kind))),
        };
        self.finish(r)
    }

    async fn list(
        &self,
        req: Request<ListRequest>,
    ) -> std::result::Result<Response<ListResponse>, Status> {
        let identity = identity_of(&req);
        let req = req.into_inner();
        let s = &self.store;
        let r = with_kind!(req.kind.as_str(), K => async {
            self.guard(&identity, Verb::List, K::INFO.kind, &req.namespace, "").await?;
            let (labels, fields) = store::parse_selectors(&req.label_selector, &req.field_selector)?;
            let started = std::time::Instant::now();
            let (items, revision) =
                s.list_encoded::<K>(&req.namespace, &labels, &fields, req.serializable).await?;
            tracing::debug!(
                kind = K::INFO.kind,
                objects = items.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "listed"
            );
            Ok(ListResponse {
                items,
                resource_version: revision.to_string(),
            })
        }.await, _ => Err(unknown_kind(&req.kind)));
        self.finish(r)
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        self.update_object(req, false).await
    }

    async fn update_status(
        &self,
        req: Request<UpdateRequest>,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        self.update_object(req, true).await
    }

    async fn patch(
        &self,
        req: Request<PatchRequest>,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        let s = &self.writer(&req)?;
        let identity = identity_of(&req);
        let req = req.into_inner();
        let verb = if req.status {
            Verb::PatchStatus
        } else {
            Verb::Patch
        };
        let r = match self
            .guard(&identity, verb, &req.kind, &req.namespace, &req.name)
            .await
        {
            Err(e) => Err(e),
            Ok(()) => with_kind!(req.kind.as_str(), K => s
                .patch::<K>(&req.namespace, &req.name, &req.merge_patch, req.status, req.write_id)
                .await
                .map(reply), _ => Err(unknown_kind(&req.kind))),
        };
        self.finish(r)
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> std::result::Result<Response<ObjectResponse>, Status> {
        let s = &self.writer(&req)?;
        let identity = identity_of(&req);
        let req = req.into_inner();
        if let Err(e) = self
            .guard(
                &identity,
                Verb::Delete,
                &req.kind,
                &req.namespace,
                &req.name,
            )
            .await
        {
            return self.finish(Err(e));
        }
        let r = with_kind!(req.kind.as_str(), K => s
            .delete::<K>(&req.namespace, &req.name, req.preconditions, &req.propagation_policy, req.grace_period_seconds, req.write_id)
            .await
            .map(reply), _ => Err(unknown_kind(&req.kind)));
        self.finish(r)
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> std::result::Result<Response<Self::WatchStream>, Status> {
        let identity = identity_of(&req);
        let req = req.into_inner();
        if let Err(e) = self
            .guard(&identity, Verb::Watch, &req.kind, &req.namespace, "")
            .await
        {
            return Err(e.with_leader(&self.store).into());
        }
        let (tx, rx) = mpsc::channel(256);
        let store = self.store.clone();
        let ms = self.options.bookmark_interval.as_millis().max(1) as u64;
        with_kind!(req.kind.as_str(), K => {
            tokio::spawn(watch::serve::<K>(store, req, ms, tx));
        }, _ => return Err(unknown_kind(&req.kind).into()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
