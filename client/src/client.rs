//! [`Client`]: every KV and Cluster RPC, with failover between masters.
//!
//! All calls go through one loop, `with_failover`: ask the current endpoint;
//! on an indeterminate failure (transport error, timeout) or `UNAVAILABLE`,
//! ask the next one, round-robin, pausing briefly after each full round,
//! until the overall timeout; on a definite answer, return it. The loop may
//! resend a write whose first attempt did or did not take effect — that is
//! safe because a write's [`WriteId`] is chosen once, before the loop, and the
//! masters apply each id only once.
//!
//! One gRPC channel per endpoint is created up front, lazily connecting, and
//! reused by every call; channels reconnect by themselves after a failure.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rafter_proto::kv::cluster_client::ClusterClient;
use rafter_proto::kv::kv_client::KvClient;
use rafter_proto::kv::{
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberRemoveRequest, MemberRemoveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, StatusRequest, StatusResponse, TxnRequest, TxnResponse, WatchRequest,
    WatchResponse, WriteId,
};
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::Error;
use crate::endpoints::{Endpoints, parse_endpoint};
use crate::error::{Outcome, classify};
use crate::watch::WatchStream;
use crate::write_id::WriteIds;

/// The metadata key carrying the Raft term a leader-only component was
/// started under; the masters fence its writes with it (DESIGN decision 7).
pub const FENCE_TERM_HEADER: &str = "rafter-fence-term";

/// Adds the bearer token, and the fence term when set, to every request.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    token: Option<tonic::metadata::AsciiMetadataValue>,
    fence_term: Option<tonic::metadata::AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.token {
            req.metadata_mut().insert("authorization", v.clone());
        }
        if let Some(v) = &self.fence_term {
            req.metadata_mut().insert(FENCE_TERM_HEADER, v.clone());
        }
        Ok(req)
    }
}

/// One master's connection, with the token attached.
pub(crate) type Conn = InterceptedService<Channel, Auth>;

/// Largest message the client sends or accepts. tonic's default (4 MiB) is
/// too small for big prefix reads.
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Timeouts and connection settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one attempt at one endpoint may take before the client gives
    /// up on it and asks the next. Default 5 s.
    pub request_timeout: Duration,
    /// How long a call may keep failing over before it returns
    /// [`Error::Unavailable`]. Default 30 s.
    pub overall_timeout: Duration,
    /// How long opening a TCP connection may take. Default 1 s: masters are
    /// on a LAN, and a longer wait only delays failover.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 pings on connections with open streams, so that a
    /// watch on a master that vanished (power loss, partition, SIGSTOP) is
    /// noticed and resumed elsewhere. `None` disables them. Default 10 s.
    pub keep_alive_interval: Option<Duration>,
    /// How long to wait for a ping's answer. Default 5 s.
    pub keep_alive_timeout: Duration,
    /// The bearer token sent with every request (masters refuse requests
    /// without the cluster's token).
    pub token: Option<String>,
    /// For the scheduler and controllers only: the Raft term they were
    /// started under. Every write then carries it, and the state machine
    /// rejects the write (`Conflict`, "fenced") when it is committed in any
    /// other term, so a deposed leader's components can never write.
    pub fence_term: Option<u64>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            overall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(1),
            keep_alive_interval: Some(Duration::from_secs(10)),
            keep_alive_timeout: Duration::from_secs(5),
            token: None,
            fence_term: None,
        }
    }
}

/// The state of one master as seen by [`Client::cluster_status`].
#[derive(Debug)]
pub struct MemberStatus {
    /// The member's name from the member list; empty when the member list
    /// could not be read and the configured endpoints were asked instead.
    pub name: String,
    /// The member's id from the member list, 0 when unknown.
    pub id: u64,
    /// The address the status was asked at.
    pub address: String,
    /// Whether the member list marks it as a learner.
    pub is_learner: bool,
    /// Its answer, or why there was none.
    pub status: Result<StatusResponse, Error>,
}

/// A handle to a Rafter cluster. Cheap to clone; clones share channels,
/// the current endpoint and the write-id sequence.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints())
            .field("client_id", &self.client_id())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Swapped whole by [`Client::set_endpoints`]; calls take a snapshot.
    endpoints: std::sync::RwLock<Arc<Endpoints<Conn>>>,
    write_ids: WriteIds,
    options: ClientOptions,
}

/// How persistently one call fails over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Limit for one attempt at one endpoint.
    pub(crate) attempt_timeout: Duration,
    /// Limit for the whole call.
    pub(crate) overall_timeout: Duration,
    /// Give up after this many passes over the endpoint list.
    pub(crate) max_rounds: Option<u32>,
    /// The revision the request asks for, to report in [`Error::Compacted`].
    pub(crate) requested_revision: u64,
}

impl Client {
    /// A client for the masters at `endpoints` (`host:port`, optionally with
    /// `http://`), with default [`ClientOptions`]. Connects lazily: this
    /// fails only on malformed endpoints, never because a master is down.
    pub async fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::connect_with_options(endpoints, ClientOptions::default()).await
    }

    /// Like [`Client::connect`], with explicit options.
    pub async fn connect_with_options<I, S>(
        endpoints: I,
        options: ClientOptions,
    ) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut entries: Vec<(String, Conn)> = Vec::new();
        for given in endpoints {
            let (name, uri) = parse_endpoint(given.as_ref())?;
            if entries.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let channel = make_channel(&name, uri, &options)?;
            entries.push((name, channel));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: std::sync::RwLock::new(Arc::new(Endpoints::new(entries)?)),
                write_ids: WriteIds::new(),
                options,
            }),
        })
    }

    /// The endpoints this client fails over between, as `host:port`.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoint_list().names().map(str::to_string).collect()
    }

    /// Replaces the endpoints this client (and every clone of it) fails
    /// over between, e.g. with the master list learnt from the cluster.
    /// Connections to endpoints in both lists are kept, and the one that
    /// answered last stays first. Calls already running finish on the list
    /// they started with.
    pub fn set_endpoints<I, S>(&self, endpoints: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let old = self.endpoint_list();
        let current = old.name(old.current()).to_string();
        let mut entries: Vec<(String, Conn)> = Vec::new();
        for given in endpoints {
            let (name, uri) = parse_endpoint(given.as_ref())?;
            if entries.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let channel = match old.find(&name) {
                Some(i) => old.value(i).clone(),
                None => make_channel(&name, uri, &self.inner.options)?,
            };
            entries.push((name, channel));
        }
        let new = Endpoints::new(entries)?;
        if let Some(i) = new.find(&current) {
            new.succeeded(i);
        }
        *self
            .inner
            .endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        Ok(())
    }

    /// The endpoint list as it is now.
    fn endpoint_list(&self) -> Arc<Endpoints<Conn>> {
        self.inner
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The options the client was created with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// This client's random id, the `client_id` of every [`WriteId`] it hands out.
    pub fn client_id(&self) -> u64 {
        self.inner.write_ids.client_id()
    }

    /// A new write id for one logical write. Pass it to a `*_request` or
    /// `*_with_id` method, and pass the same id again to retry that write
    /// yourself: the masters apply it once and answer repeats with the first
    /// result.
    pub fn next_write_id(&self) -> WriteId {
        self.inner.write_ids.next()
    }

    // ---- KV: reads ---------------------------------------------------------

    /// Reads one key or a prefix. Linearizable unless `req.serializable`.
    /// A past `req.revision` below the compaction point fails with
    /// [`Error::Compacted`].
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        let policy = Policy {
            requested_revision: req.revision,
            ..self.policy()
        };
        self.kv_call(policy, |mut kv, t| {
            let r = with_timeout(req.clone(), t);
            async move { kv.range(r).await }
        })
        .await
    }

    /// The current value of `key`, or `None` when it does not exist
    /// (linearizable read).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, Error> {
        let resp = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    // ---- KV: writes --------------------------------------------------------

    /// Sets `key` to `value`, attached to `lease` (0 for none); with `prev_kv`
    /// the response carries the previous key-value.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
        prev_kv: bool,
    ) -> Result<PutResponse, Error> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            prev_kv,
            write_id: None,
        })
        .await
    }

    /// Like [`Client::put`], as the write `write_id` (see [`Client::next_write_id`]).
    pub async fn put_with_id(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
        prev_kv: bool,
        write_id: WriteId,
    ) -> Result<PutResponse, Error> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            prev_kv,
            write_id: Some(write_id),
        })
        .await
    }

    /// Sends a Put as given; a missing `write_id` gets a fresh one.
    pub async fn put_request(&self, mut req: PutRequest) -> Result<PutResponse, Error> {
        req.write_id.get_or_insert_with(|| self.next_write_id());
        self.kv_call(self.policy(), |mut kv, t| {
            let r = with_timeout(req.clone(), t);
            async move { kv.put(r).await }
        })
        .await
    }

    /// Deletes `key`, or every key under the prefix `key` when `prefix`.
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        prefix: bool,
        prev_kv: bool,
    ) -> Result<DeleteRangeResponse, Error> {
        self.delete_request(DeleteRangeRequest {
            key: key.into(),
            prefix,
            prev_kv,
            write_id: None,
        })
        .await
    }

    /// Sends a DeleteRange as given; a missing `write_id` gets a fresh one.
    pub async fn delete_request(
        &self,
        mut req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        req.write_id.get_or_insert_with(|| self.next_write_id());
        self.kv_call(self.policy(), |mut kv, t| {
            let r = with_timeout(req.clone(), t);
            async move { kv.delete_range(r).await }
        })
        .await
    }

    /// Runs a transaction; a missing `write_id` gets a fresh one.
    pub async fn txn(&self, mut req: TxnRequest) -> Result<TxnResponse, Error> {
        req.write_id.get_or_insert_with(|| self.next_write_id());
        self.kv_call(self.policy(), |mut kv, t| {
            let r = with_timeout(req.clone(), t);
            async move { kv.txn(r).await }
        })
        .await
    }

    // ---- Leases ------------------------------------------------------------

    /// Grants a lease of `ttl_secs` seconds with an id chosen by the store.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrantResponse, Error> {
        self.lease_grant_request(LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
            write_id: None,
        })
        .await
    }

    /// Sends a LeaseGrant as given; a missing `write_id` gets a fresh one.
    pub async fn lease_grant_request(
        &self,
        mut req: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, Error> {
        req.write_id.get_or_insert_with(|| self.next_write_id());
        self.kv_call(self.policy(), |mut kv, t| {
            let r = with_timeout(req, t);
            async move { kv.lease_grant(r).await }
        })
        .await
    }

    /// Revokes lease `id`, deleting every key attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        self.lease_revoke_request(LeaseRevokeRequest { id, write_id: None })
            .await
    }

    /// Sends a LeaseRevoke as given; a missing `write_id` gets a fresh one.
    pub async fn lease_revoke_request(
        &self,
        mut req: LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, Error> {
        req.write_id.get_or_insert_with(|| self.next_write_id());
        self.kv_call(self.policy(), |mut kv, t| {
            let r = with_timeout(req, t);
            async move { kv.lease_revoke(r).await }
        })
        .await
    }

    /// Refreshes lease `id` to its full TTL. Needs no write id: refreshing
    /// twice has the same effect as once.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, Error> {
        self.kv_call(self.policy(), |mut kv, t| {
            let r = with_timeout(LeaseKeepAliveRequest { id }, t);
            async move { kv.lease_keep_alive(r).await }
        })
        .await
    }

    // ---- Watch -------------------------------------------------------------

    /// Watches a key or prefix. The stream fails over between masters and
    /// resumes without gaps or repeats; see [`WatchStream`].
    pub fn watch(&self, req: WatchRequest) -> WatchStream {
        WatchStream::new(self.clone(), req)
    }

    // ---- Cluster -----------------------------------------------------------

    /// The cluster's members.
    pub async fn member_list(&self) -> Result<MemberListResponse, Error> {
        self.cluster_call(self.policy(), |mut c, t| {
            let r = with_timeout(MemberListRequest {}, t);
            async move { c.member_list(r).await }
        })
        .await
    }

    /// Adds a master called `name` listening at `address` (`host:port`). The
    /// masters add it as a learner and promote it once it has caught up,
    /// which can take a while, so each attempt may use the whole overall
    /// timeout. Safe to repeat: adding a present member promotes it.
    pub async fn member_add(
        &self,
        name: impl Into<String>,
        address: impl Into<String>,
    ) -> Result<MemberAddResponse, Error> {
        let req = MemberAddRequest {
            name: name.into(),
            address: address.into(),
        };
        let policy = Policy {
            attempt_timeout: self.inner.options.overall_timeout,
            ..self.policy()
        };
        self.cluster_call(policy, |mut c, t| {
            let r = with_timeout(req.clone(), t);
            async move { c.member_add(r).await }
        })
        .await
    }

    /// Removes the master called `name`.
    ///
    /// Not de-duplicated like KV writes: if an attempt whose outcome is
    /// unknown did remove the member, the retry answers `NOT_FOUND`.
    pub async fn member_remove(
        &self,
        name: impl Into<String>,
    ) -> Result<MemberRemoveResponse, Error> {
        let req = MemberRemoveRequest { name: name.into() };
        self.cluster_call(self.policy(), |mut c, t| {
            let r = with_timeout(req.clone(), t);
            async move { c.member_remove(r).await }
        })
        .await
    }

    /// The status of the master at `endpoint` (`host:port`, need not be one
    /// of the client's endpoints). One attempt, no failover: a master that
    /// does not answer gives [`Error::Unavailable`] naming it.
    pub async fn status_of(&self, endpoint: &str) -> Result<StatusResponse, Error> {
        let (name, uri) = parse_endpoint(endpoint)?;
        let list = self.endpoint_list();
        let channel = match list.find(&name) {
            Some(i) => list.value(i).clone(),
            None => make_channel(&name, uri, &self.inner.options)?,
        };
        let t = self.inner.options.request_timeout;
        let mut c = cluster_client(channel);
        let call = c.status(with_timeout(StatusRequest {}, t));
        let reason = match tokio::time::timeout(t, call).await {
            Ok(Ok(resp)) => return Ok(resp.into_inner()),
            Ok(Err(status)) => match classify(status, 0) {
                Outcome::Fail(e) => return Err(e.answered_by(&name)),
                Outcome::Retry(reason) => reason,
            },
            Err(_) => format!("no answer within {t:?}"),
        };
        Err(Error::Unavailable {
            tried: vec![(name, reason)],
        })
    }

    /// The status of every master, asked concurrently, in member-list order.
    ///
    /// The member list comes from whichever master answers first (one pass
    /// over the endpoints). When none can give it — typically while there
    /// is no leader — the configured endpoints are asked instead, so that
    /// the caller still sees who is up; their `name` is then empty.
    pub async fn cluster_status(&self) -> Result<Vec<MemberStatus>, Error> {
        let policy = Policy {
            max_rounds: Some(1),
            ..self.policy()
        };
        let list = self
            .cluster_call(policy, |mut c, t| {
                let r = with_timeout(MemberListRequest {}, t);
                async move { c.member_list(r).await }
            })
            .await;
        let targets: Vec<(String, u64, String, bool)> = match list {
            Ok(resp) => resp
                .members
                .into_iter()
                .map(|m| (m.name, m.id, m.address, m.is_learner))
                .collect(),
            Err(Error::Unavailable { tried }) => {
                tracing::debug!(
                    ?tried,
                    "member list unavailable; asking the configured endpoints"
                );
                self.endpoints()
                    .into_iter()
                    .map(|e| (String::new(), 0, e, false))
                    .collect()
            }
            Err(e) => return Err(e),
        };
        let asks = targets
            .into_iter()
            .map(|(name, id, address, is_learner)| async move {
                let status = self.status_of(&address).await;
                MemberStatus {
                    name,
                    id,
                    address,
                    is_learner,
                    status,
                }
            });
        Ok(futures::future::join_all(asks).await)
    }

    // ---- The failover loop -------------------------------------------------

    /// The default policy: the options' timeouts, no round limit.
    pub(crate) fn policy(&self) -> Policy {
        Policy {
            attempt_timeout: self.inner.options.request_timeout,
            overall_timeout: self.inner.options.overall_timeout,
            max_rounds: None,
            requested_revision: 0,
        }
    }

    async fn kv_call<T, F, Fut>(&self, policy: Policy, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(KvClient<Conn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (resp, _) = self
            .with_failover(policy, |ch, t| attempt(kv_client(ch), t))
            .await?;
        Ok(resp)
    }

    async fn cluster_call<T, F, Fut>(&self, policy: Policy, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(ClusterClient<Conn>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let (resp, _) = self
            .with_failover(policy, |ch, t| attempt(cluster_client(ch), t))
            .await?;
        Ok(resp)
    }

    /// Opens a watch stream at the first master that accepts it. Returns the
    /// stream and the index of the endpoint serving it.
    pub(crate) async fn open_watch(
        &self,
        req: WatchRequest,
    ) -> Result<(Streaming<WatchResponse>, usize), Error> {
        let policy = Policy {
            requested_revision: req.start_revision,
            ..self.policy()
        };
        // No grpc-timeout on the request: it would end the stream after the
        // attempt timeout. The local timeout only bounds the wait for the
        // stream to open.
        self.with_failover(policy, |ch, _| {
            let mut kv = kv_client(ch);
            let r = tonic::Request::new(req.clone());
            async move { kv.watch(r).await }
        })
        .await
    }

    /// Endpoint `i` broke a stream: make the next one current, as a failed
    /// unary call would.
    pub(crate) fn endpoint_failed(&self, i: usize) {
        let list = self.endpoint_list();
        list.failed(i % list.len());
    }

    pub(crate) fn endpoint_name(&self, i: usize) -> String {
        let list = self.endpoint_list();
        list.name(i % list.len()).to_string()
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoint_list().len()
    }

    /// The loop described in the module docs. `attempt` gets the channel of
    /// the endpoint to try and the time that attempt may take; it is called
    /// again for every retry and must send the same request each time.
    pub(crate) async fn with_failover<T, F, Fut>(
        &self,
        policy: Policy,
        mut attempt: F,
    ) -> Result<(T, usize), Error>
    where
        F: FnMut(Conn, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let endpoints = self.endpoint_list();
        let n = endpoints.len();
        let deadline = Instant::now() + policy.overall_timeout;
        let mut i = endpoints.current();
        let mut tried: Vec<(String, String)> = Vec::new();
        let mut attempts: u32 = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let t = policy
                .attempt_timeout
                .min(left)
                .max(Duration::from_millis(1));
            let channel = endpoints.value(i).clone();
            let reason = match tokio::time::timeout(t, attempt(channel, t)).await {
                Ok(Ok(resp)) => {
                    endpoints.succeeded(i);
                    return Ok((resp.into_inner(), i));
                }
                Ok(Err(status)) => match classify(status, policy.requested_revision) {
                    Outcome::Fail(e) => return Err(e.answered_by(endpoints.name(i))),
                    Outcome::Retry(reason) => reason,
                },
                Err(_) => format!("no answer within {t:?}"),
            };
            let name = endpoints.name(i);
            tracing::debug!(endpoint = name, %reason, "request failed; trying the next master");
            match tried.iter_mut().find(|(e, _)| e == name) {
                Some(entry) => entry.1 = reason,
                None => tried.push((name.to_string(), reason)),
            }
            i = endpoints.failed(i);
            attempts += 1;

            if attempts.is_multiple_of(n as u32) {
                let round = attempts / n as u32;
                if policy.max_rounds.is_some_and(|max| round >= max) {
                    return Err(Error::Unavailable { tried });
                }
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff(round).min(left)).await;
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable { tried });
            }
        }
    }
}

/// The pause after the `round`-th full pass over the endpoints: 50–100 ms,
/// then 100–200 ms, then 150–200 ms. Short, because a new leader is usually
/// elected within a second, and jittered so clients do not retry in step.
pub(crate) fn backoff(round: u32) -> Duration {
    let (lo, hi) = match round {
        0 | 1 => (50, 100),
        2 => (100, 200),
        _ => (150, 200),
    };
    Duration::from_millis(rand::random_range(lo..=hi))
}

fn make_channel(name: &str, uri: String, options: &ClientOptions) -> Result<Conn, Error> {
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidEndpoint {
            endpoint: name.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if let Some(interval) = options.keep_alive_interval {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(options.keep_alive_timeout);
    }
    let auth = Auth {
        token: match &options.token {
            None => None,
            Some(t) => Some(
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| Error::InvalidToken)?,
            ),
        },
        fence_term: options
            .fence_term
            .map(|t| t.to_string().parse().expect("a number is valid metadata")),
    };
    Ok(InterceptedService::new(endpoint.connect_lazy(), auth))
}

fn kv_client(channel: Conn) -> KvClient<Conn> {
    KvClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

fn cluster_client(channel: Conn) -> ClusterClient<Conn> {
    ClusterClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// A request that tells the server how long the client will wait for it
/// (the `grpc-timeout` header), so the server can stop working on it then.
fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_50_and_200_ms() {
        for round in 0..10 {
            let d = backoff(round);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(200));
        }
    }

    #[tokio::test]
    async fn duplicate_endpoints_are_kept_once() {
        let c = Client::connect(["127.0.0.1:1", "http://127.0.0.1:1", "127.0.0.1:2"])
            .await
            .unwrap();
        assert_eq!(c.endpoints(), ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[tokio::test]
    async fn set_endpoints_replaces_the_list_for_every_clone_keeping_the_current_first() {
        let c = Client::connect(["127.0.0.1:1", "127.0.0.1:2"])
            .await
            .unwrap();
        let clone = c.clone();
        c.endpoint_list().succeeded(1);
        c.set_endpoints(["127.0.0.1:3", "127.0.0.1:2", "127.0.0.1:3"])
            .unwrap();
        assert_eq!(clone.endpoints(), ["127.0.0.1:3", "127.0.0.1:2"]);
        // The endpoint that answered last is still asked first.
        let list = clone.endpoint_list();
        assert_eq!(list.name(list.current()), "127.0.0.1:2");
        // A bad list changes nothing.
        assert!(c.set_endpoints(Vec::<String>::new()).is_err());
        assert!(c.set_endpoints(["not an endpoint"]).is_err());
        assert_eq!(c.endpoints(), ["127.0.0.1:3", "127.0.0.1:2"]);
    }

    #[tokio::test]
    async fn no_endpoints_is_an_error() {
        let none: Vec<String> = vec![];
        assert!(matches!(
            Client::connect(none).await,
            Err(Error::NoEndpoints)
        ));
    }

    #[tokio::test]
    async fn unreachable_masters_give_unavailable_listing_each() {
        // Port 1 on loopback: nothing listens, connections are refused.
        let options = ClientOptions {
            overall_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let c = Client::connect_with_options(["127.0.0.1:1", "127.0.0.2:1"], options)
            .await
            .unwrap();
        let err = c.put("k", "v", 0, false).await.unwrap_err();
        match &err {
            Error::Unavailable { tried } => {
                let names: Vec<_> = tried.iter().map(|(e, _)| e.as_str()).collect();
                assert_eq!(names, ["127.0.0.1:1", "127.0.0.2:1"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("no master answered: 127.0.0.1:1: ")
        );
    }

    #[tokio::test]
    async fn status_of_an_unreachable_master_names_it() {
        let c = Client::connect(["127.0.0.1:1"]).await.unwrap();
        let err = c.status_of("127.0.0.1:2").await.unwrap_err();
        assert!(
            matches!(&err, Error::Unavailable { tried } if tried[0].0 == "127.0.0.1:2"),
            "{err:?}"
        );
    }
}
