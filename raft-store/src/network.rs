//! The client side of master-to-master gRPC: openraft's `RaftNetwork` over
//! the `rafter.raft.v1.Raft` service, and the forwarding of client requests
//! to the leader.
//!
//! One lazily connected tonic channel per peer address is kept and reused.
//! Payloads are bincode-encoded openraft types. A peer that cannot be
//! connected is reported as `Unreachable`, so openraft backs off instead of
//! hammering it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::RaftNetwork;
use openraft::RaftNetworkFactory;
use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use rafter_proto::raft::RaftPayload;
use rafter_proto::raft::raft_client::RaftClient;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::elections::Elections;
use crate::types::Member;
use crate::types::NodeId;
use crate::types::TypeConfig;

/// Largest gRPC message between masters (AppendEntries batches, snapshot
/// chunks, forwarded requests).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A request a follower hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// One prost-encoded `Proposal`. Followers of this version send
    /// [`ForwardRequest::ProposeBatch`]; the leader still serves this for
    /// followers of earlier versions during a rolling upgrade.
    Propose(Vec<u8>),
    /// Confirm leadership and return an index that reads must wait for.
    ReadIndex,
    /// Refresh a lease on the leader's lease clock.
    KeepAlive(i64),
    AddMember {
        name: String,
        addr: String,
    },
    RemoveMember {
        name: String,
    },
    /// Prost-encoded `Proposal`s that reached this follower while earlier
    /// forwards were in flight, sent in one RPC. The leader proposes each
    /// on its own (its group commit usually puts them in one log entry) and
    /// answers each in [`ForwardResponse::ProposedBatch`], in order.
    ProposeBatch(Vec<Vec<u8>>),
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// A prost-encoded `ProposalResult`.
    Proposed(Vec<u8>),
    ReadIndex(u64),
    KeptAlive(Option<i64>),
    Members(Vec<(NodeId, Member, bool)>),
    /// The receiver is not the leader (any more); retry at `leader`.
    NotLeader {
        leader: Option<Member>,
    },
    /// The request failed with a gRPC code and message.
    Failed {
        code: i32,
        message: String,
    },
    /// One outcome per proposal of a [`ForwardRequest::ProposeBatch`], in
    /// the order they were sent.
    ProposedBatch(Vec<Proposed>),
}

/// The leader's outcome for one forwarded proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposed {
    /// A prost-encoded `ProposalResult`.
    Applied(Vec<u8>),
    /// Refused before it entered the log: the receiver is not the leader
    /// (any more), so the proposal may be sent again.
    NotLeader,
    /// Failed with a gRPC code and message; whether it was applied is what
    /// the code says (e.g. UNAVAILABLE for an unknown outcome).
    Failed { code: i32, message: String },
}

/// Shared pool of gRPC channels to peers, keyed by address.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, RaftClient<Channel>>>>,
}

impl Peers {
    /// The (lazily connected) client for `addr`.
    pub fn client(&self, addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer pool poisoned");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        channels.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Sends a request to the leader at `addr`.
    pub async fn forward(
        &self,
        addr: &str,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, tonic::Status> {
        let mut client = self
            .client(addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let data = bincode::serialize(req).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(timeout);
        let reply = client.forward(request).await?.into_inner();
        bincode::deserialize(&reply.data).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// openraft's network factory: one [`PeerConnection`] per target.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    pub peers: Peers,
    pub elections: Arc<Elections>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        PeerConnection {
            target,
            node: node.clone(),
            peers: self.peers.clone(),
            elections: self.elections.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerConnection {
    target: NodeId,
    node: Member,
    peers: Peers,
    elections: Arc<Elections>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

/// Whether a gRPC failure means the peer is down rather than misbehaving.
fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        kind: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.node.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let data = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            Rpc::Vote => client.vote(request).await,
            Rpc::Append => client.append_entries(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            if is_unreachable(&status) {
                RPCError::Unreachable(Unreachable::new(&status))
            } else {
                RPCError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    Append,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        let resp = self.call(Rpc::Vote, &rpc, &option).await?;
        self.elections.got_answer(&rpc, &resp);
        Ok(resp)
    }
}
