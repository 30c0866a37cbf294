//! The gRPC servers of a master, all on one port: the Raft transport (with
//! forwarding from followers), the KV service and the Cluster service.
//! Errors become gRPC statuses in one place, [`status_of`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::join_all;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use rafter_proto::kv as pb;
use rafter_proto::kv::cluster_server::Cluster;
use rafter_proto::kv::cluster_server::ClusterServer;
use rafter_proto::kv::kv_server::Kv;
use rafter_proto::kv::kv_server::KvServer;
use rafter_proto::kv::proposal::Op;
use rafter_proto::kv::proposal_result::Result as PResult;
use rafter_proto::raft::RaftPayload;
use rafter_proto::raft::raft_server::Raft as RaftRpc;
use rafter_proto::raft::raft_server::RaftServer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::server::TcpIncoming;

use crate::error::Error;
use crate::network::ForwardRequest;
use crate::network::ForwardResponse;
use crate::network::MAX_MESSAGE_BYTES;
use crate::network::Proposed;
use crate::node::Node;
use crate::range::read_range;
use crate::types::Member;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::watch;

/// The gRPC status a client sees for an error.
pub fn status_of(e: Error) -> Status {
    let msg = e.to_string();
    match e {
        Error::Compacted { .. } | Error::FutureRevision { .. } => Status::out_of_range(msg),
        Error::NoLeader
        | Error::LeaderUnreachable { .. }
        | Error::ShuttingDown
        | Error::Raft(_) => Status::unavailable(msg),
        Error::Proposal { code, message } => Status::new(tonic::Code::from(code), message),
        Error::InvalidArgument(_) => Status::invalid_argument(msg),
        Error::NotFound(_) => Status::not_found(msg),
        Error::Timeout(_) => Status::deadline_exceeded(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::Rocks(_) | Error::Corrupt(_) => Status::internal(msg),
    }
}

/// Every service of `node` on one router: the Raft transport (masters
/// only, unauthenticated) and the client-facing KV and Cluster services,
/// each request of which passes `auth` first. Callers add their own
/// services (the object API) and serve it.
pub fn router<I>(node: Arc<Node>, auth: I) -> tonic::transport::server::Router
where
    I: tonic::service::Interceptor + Clone + Send + Sync + 'static,
{
    let raft = RaftServer::new(RaftService { node: node.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let kv = KvServer::new(KvService { node: node.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let cluster = ClusterServer::new(ClusterService { node });
    tonic::transport::Server::builder()
        .add_service(raft)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            kv,
            auth.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            cluster, auth,
        ))
}

/// Serves every service of `node` on `listener` until `shutdown` resolves,
/// without authentication (for tests of the store alone).
pub async fn serve(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // `Server::tcp_nodelay` is ignored for a listener passed in: the
    // incoming stream must set it. Without it, Nagle's algorithm held back
    // the second write of some responses until the client's delayed ACK
    // (~40 ms): about 1 % of requests, found by `rafter bench kv`.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router(node, |r: Request<()>| Ok(r))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

// ---- Raft transport ---------------------------------------------------------

struct RaftService {
    node: Arc<Node>,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    bincode::deserialize(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = bincode::serialize(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { data }))
}

fn leader_member(node: &Node) -> Option<Member> {
    node.leader().map(|(_, m)| m)
}

/// A forwarded proposal's outcome on the leader.
fn proposed(r: Result<Vec<u8>, Error>) -> Proposed {
    match r {
        Ok(r) => Proposed::Applied(r),
        Err(Error::NoLeader) => Proposed::NotLeader,
        Err(e) => {
            let s = status_of(e);
            Proposed::Failed {
                code: s.code() as i32,
                message: s.message().to_string(),
            }
        }
    }
}

fn members_reply(r: Result<Vec<(NodeId, Member, bool)>, Error>) -> ForwardResponse {
    match r {
        Ok(m) => ForwardResponse::Members(m),
        Err(e) => {
            let s = status_of(e);
            ForwardResponse::Failed {
                code: s.code() as i32,
                message: s.message().to_string(),
            }
        }
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req)?;
        let resp = self.node.raft.vote(rpc.clone()).await;
        if let Ok(answer) = &resp {
            self.node.elections.answered(&rpc, answer);
        }
        encode(&resp)
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let started = std::time::Instant::now();
        let bytes = req.get_ref().data.len();
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        let entries = rpc.entries.len();
        self.node.note_leader_contact();
        let reply = encode(&self.node.raft.append_entries(rpc).await);
        // The leader gives up on an AppendEntries after the heartbeat
        // interval (openraft 0.9) and sends it again: say when this
        // follower is that slow, as it keeps the follower behind.
        let took = started.elapsed();
        if took.as_millis() as u64 >= self.node.options.heartbeat_ms {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                entries,
                bytes,
                "AppendEntries took longer than the heartbeat interval; the leader will have given up on it"
            );
        }
        reply
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let node = &self.node;
        let not_leader = || ForwardResponse::NotLeader {
            leader: leader_member(node),
        };
        let reply = match decode::<ForwardRequest>(req)? {
            ForwardRequest::Propose(bytes) => match proposed(node.propose_local(bytes).await) {
                Proposed::Applied(r) => ForwardResponse::Proposed(r),
                Proposed::NotLeader => not_leader(),
                Proposed::Failed { code, message } => ForwardResponse::Failed { code, message },
            },
            ForwardRequest::ProposeBatch(batch) => {
                // All enter the group commit together; each answers alone.
                let results = join_all(batch.into_iter().map(|b| node.propose_local(b))).await;
                ForwardResponse::ProposedBatch(results.into_iter().map(proposed).collect())
            }
            ForwardRequest::ReadIndex => match node.local_read_index().await.map_err(status_of)? {
                Some(i) => ForwardResponse::ReadIndex(i),
                None => not_leader(),
            },
            ForwardRequest::KeepAlive(id) => {
                match node.keep_alive_local(id).await.map_err(status_of)? {
                    Some(ttl) => ForwardResponse::KeptAlive(ttl),
                    None => not_leader(),
                }
            }
            ForwardRequest::AddMember { name, addr } => {
                if node.is_leader() {
                    members_reply(node.add_member_local(&name, &addr).await)
                } else {
                    not_leader()
                }
            }
            ForwardRequest::RemoveMember { name } => {
                if node.is_leader() {
                    members_reply(node.remove_member_local(&name).await)
                } else {
                    not_leader()
                }
            }
        };
        encode(&reply)
    }
}

// ---- KV -----------------------------------------------------------------------

struct KvService {
    node: Arc<Node>,
}

impl KvService {
    /// Fills the parts of a header the state machine leaves to the member.
    fn header(&self, h: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
        let mut own = self.node.header();
        if let Some(h) = h {
            own.revision = h.revision;
        }
        Some(own)
    }

    async fn propose(&self, write_id: Option<pb::WriteId>, op: Op) -> Result<PResult, Status> {
        let proposal = pb::Proposal {
            write_id,
            op: Some(op),
            fence_term: 0,
        };
        let result = self.node.propose(&proposal).await.map_err(status_of)?;
        match result.result {
            Some(PResult::Error(e)) => Err(Status::new(tonic::Code::from(e.code), e.message)),
            Some(r) => Ok(r),
            None => Err(Status::internal("empty proposal result")),
        }
    }
}

fn unexpected() -> Status {
    Status::internal("state machine returned a result of another kind")
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = req.into_inner();
        if req.limit < 0 {
            return Err(Status::invalid_argument(format!(
                "limit must not be negative, got {}",
                req.limit
            )));
        }
        if req.key.is_empty() && !req.prefix {
            return Err(Status::invalid_argument(
                "key is empty: give a key, or set prefix to read every key",
            ));
        }
        if !req.serializable && !self.node.options.unsafe_local_reads {
            self.node.read_barrier().await.map_err(status_of)?;
        }
        let mut resp = read_range(&self.node.shared.db, &req).map_err(status_of)?;
        resp.header = self.header(resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let mut req = req.into_inner();
        if req.key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        let write_id = req.write_id.take();
        match self.propose(write_id, Op::Put(req)).await? {
            PResult::Put(mut r) => {
                r.header = self.header(r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let mut req = req.into_inner();
        if req.key.is_empty() && !req.prefix {
            return Err(Status::invalid_argument("key is empty"));
        }
        let write_id = req.write_id.take();
        match self.propose(write_id, Op::DeleteRange(req)).await? {
            PResult::DeleteRange(mut r) => {
                r.header = self.header(r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let mut req = req.into_inner();
        let write_id = req.write_id.take();
        match self.propose(write_id, Op::Txn(req)).await? {
            PResult::Txn(mut r) => {
                r.header = self.header(r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(watch::serve(self.node.clone(), req, tx));
        let stream = ReceiverStream::new(rx).map(|item| item.map_err(status_of));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let mut req = req.into_inner();
        if req.ttl <= 0 {
            return Err(Status::invalid_argument(format!(
                "lease TTL must be positive, got {}",
                req.ttl
            )));
        }
        let write_id = req.write_id.take();
        match self.propose(write_id, Op::LeaseGrant(req)).await? {
            PResult::LeaseGrant(mut r) => {
                r.header = self.header(r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let mut req = req.into_inner();
        let write_id = req.write_id.take();
        match self.propose(write_id, Op::LeaseRevoke(req)).await? {
            PResult::LeaseRevoke(mut r) => {
                r.header = self.header(r.header);
                Ok(Response::new(r))
            }
            _ => Err(unexpected()),
        }
    }

    async fn lease_keep_alive(
        &self,
        req: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let id = req.into_inner().id;
        let ttl = self.node.keep_alive(id).await.map_err(status_of)?;
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            header: self.header(None),
            id,
            ttl,
        }))
    }
}

// ---- Cluster ------------------------------------------------------------------

struct ClusterService {
    node: Arc<Node>,
}

fn to_pb(members: Vec<(NodeId, Member, bool)>) -> Vec<pb::Member> {
    members
        .into_iter()
        .map(|(id, m, is_learner)| pb::Member {
            id,
            name: m.name,
            address: m.addr,
            is_learner,
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.node.header()),
            members: to_pb(self.node.members()),
        }))
    }

    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = req.into_inner();
        let members = to_pb(
            self.node
                .add_member(&req.name, &req.address)
                .await
                .map_err(status_of)?,
        );
        let member = members.iter().find(|m| m.name == req.name).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.node.header()),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let req = req.into_inner();
        let members = to_pb(
            self.node
                .remove_member(&req.name)
                .await
                .map_err(status_of)?,
        );
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.node.header()),
            members,
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.node.status()))
    }
}
