//! One master: the store opened from its data directory, the openraft
//! instance, and the machinery around it — group commit of proposals,
//! forwarding to the leader, linearizable reads from any master, the leader's
//! lease duties, history compaction and membership changes.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::ChangeMembers;
use openraft::Config;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use prost::Message;
use rafter_proto::kv as pb;
use rocksdb::WriteBatch;
use tokio::sync::Semaphore;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;

use crate::data_dir::DataDir;
use crate::db;
use crate::db::CF_HISTORY;
use crate::db::CF_SM;
use crate::db::u64_key;
use crate::elections::Elections;
use crate::error::Error;
use crate::log_store::LogStore;
use crate::metrics::Metrics;
use crate::network::ForwardRequest;
use crate::network::ForwardResponse;
use crate::network::NetworkFactory;
use crate::network::Peers;
use crate::network::Proposed;
use crate::read_index::ReadIndexBatcher;
use crate::read_index::Round;
use crate::state_machine::KEY_COMPACT;
use crate::state_machine::Shared;
use crate::state_machine::StateMachine;
use crate::types::LogCommand;
use crate::types::Member;
use crate::types::NodeId;
use crate::types::Raft;
use crate::types::node_id_of;

/// Election rounds the leader watchdog starts, a heartbeat apart, once the
/// leader's process is gone (see `run_leader_watchdog`).
const ELECTION_ROUNDS: u32 = 3;

/// Forward RPCs a follower keeps in flight before it queues proposals for
/// the next one. Well above the leader's `max_in_flight` log batches, so a
/// follower with a few writers sends each at once (a queued proposal waits
/// for a whole commit), while hundreds of writers share a few RPCs.
const FORWARDS_IN_FLIGHT: usize = 16;

/// Tunables of a master. Defaults suit a LAN or one machine.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries.
    pub snapshot_logs: u64,
    /// Entries kept in the log behind the last snapshot (for slow followers).
    pub keep_logs: u64,
    /// Revisions of watch history kept; older ones are compacted.
    pub history_revisions: u64,
    pub compaction_interval: Duration,
    /// Entries of the exactly-once table.
    pub dedup_capacity: u64,
    /// Proposals per log entry at most.
    pub max_batch: usize,
    /// Log entries proposed and not yet applied at most. One: openraft
    /// 0.9's core stalls for each entry's fsync, so a second entry in
    /// flight only delays the commit of the first (docs/BENCHMARKS.md,
    /// "One batch in flight").
    pub max_in_flight: usize,
    /// How long a request may take on this master before failing.
    pub request_timeout: Duration,
    /// How long a request waits for an unknown leader to appear.
    pub leader_wait: Duration,
    /// TEST ONLY: answer "linearizable" reads from local state without the
    /// read index. Exists so the Jepsen suite can show it catches stale
    /// reads; never use it in production.
    pub unsafe_local_reads: bool,
}

impl Default for NodeOptions {
    /// Election timing. In openraft 0.9 a follower that hears nothing
    /// starts an election after `election_timeout_max` (the leader lease,
    /// during which followers also refuse votes) plus its random timeout in
    /// [min, max); the heartbeat interval is also the timeout of every
    /// AppendEntries and read-index round, so it cannot be short on a busy
    /// machine. 100 ms heartbeats and 250–300 ms timeouts make a follower
    /// wait 550–600 ms of silence before it disrupts a leader, while the
    /// leader watchdog (`run_leader_watchdog`) starts the election as soon
    /// as the 300 ms lease has passed when the leader's process is gone.
    /// `rafter bench kv` measures both (docs/BENCHMARKS.md).
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 300,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            history_revisions: 100_000,
            compaction_interval: Duration::from_secs(5),
            dedup_capacity: 100_000,
            max_batch: 1024,
            max_in_flight: 1,
            request_timeout: Duration::from_secs(10),
            leader_wait: Duration::from_secs(2),
            unsafe_local_reads: false,
        }
    }
}

/// How a master joins its group on first start.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// A member of the initial cluster: every listed member initializes the
    /// same membership.
    Initial(Vec<Member>),
    /// Joins an existing cluster through any of its members.
    Join,
    /// Restart: the data directory already knows everything.
    Resume,
}

struct Pending {
    bytes: Vec<u8>,
    started: Instant,
    tx: oneshot::Sender<Result<Vec<u8>, Error>>,
}

/// A proposal waiting on a follower to be forwarded to the leader.
struct Forward {
    bytes: Vec<u8>,
    tx: oneshot::Sender<Result<Proposed, Error>>,
}

/// A running master.
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    pub cluster_id: u64,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub peers: Peers,
    pub options: NodeOptions,
    /// What vote requests and answers told this master (for the watchdog).
    pub(crate) elections: Arc<Elections>,
    data_path: std::path::PathBuf,
    proposals: mpsc::Sender<Pending>,
    /// Proposals this master forwards to the leader as follower.
    forwards: mpsc::Sender<Forward>,
    /// Read-index rounds this master runs as leader (for its own reads and
    /// followers' `ReadIndex` requests).
    leader_reads: ReadIndexBatcher,
    /// `ReadIndex` requests this master sends to the leader as follower.
    remote_reads: ReadIndexBatcher,
    /// When this master last received an AppendEntries (heartbeat or
    /// entries), in milliseconds since `started`.
    last_leader_contact_ms: AtomicU64,
    started: Instant,
    shutdown: watch::Sender<bool>,
}

impl Node {
    /// Opens the store in `data_dir` and starts Raft and the background
    /// tasks. `data_dir` must already have been checked and its identity
    /// recorded by the caller.
    pub async fn start(
        data_dir: &DataDir,
        name: &str,
        addr: &str,
        cluster_id: u64,
        bootstrap: Bootstrap,
        options: NodeOptions,
    ) -> Result<Arc<Self>, Error> {
        let id = node_id_of(name);
        let metrics = Arc::new(Metrics::new());
        let database = db::open(&data_dir.db_path())?;
        let shared = Shared::new(database.clone(), metrics.clone());
        let log = LogStore::new(database, metrics, shared.committed.clone());
        let sm = StateMachine::open(
            shared.clone(),
            data_dir.snapshot_dir(),
            options.dedup_capacity,
        )
        .map_err(|e| Error::Raft(e.to_string()))?;
        let config = Config {
            cluster_name: format!("{cluster_id:016x}"),
            heartbeat_interval: options.heartbeat_ms,
            election_timeout_min: options.election_timeout_min_ms,
            election_timeout_max: options.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_logs),
            max_in_snapshot_log_to_keep: options.keep_logs,
            // Entries are batches; keep AppendEntries messages moderate.
            max_payload_entries: 64,
            snapshot_max_chunk_size: 4 << 20,
            install_snapshot_timeout: 2_000,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| Error::Raft(e.to_string()))?);
        let network = NetworkFactory::default();
        let peers = network.peers.clone();
        let elections = network.elections.clone();
        let raft = Raft::new(id, config, network, log, sm)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        if let (Bootstrap::Initial(members), false) = (bootstrap, initialized) {
            let nodes: BTreeMap<NodeId, Member> = members
                .into_iter()
                .map(|m| (node_id_of(&m.name), m))
                .collect();
            match raft.initialize(nodes).await {
                Ok(()) => {}
                // Already initialized (by us earlier, or through a peer).
                Err(RaftError::APIError(_)) => {}
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }

        let (tx, rx) = mpsc::channel(65_536);
        let (forwards, forwards_rx) = mpsc::channel(65_536);
        let (shutdown, _) = watch::channel(false);
        // The batchers' rounds hold the node only weakly, so dropping the
        // node drops the batchers and ends their tasks.
        let node = Arc::new_cyclic(|me: &Weak<Self>| {
            let (a, b) = (me.clone(), me.clone());
            Self {
                id,
                name: name.to_string(),
                addr: addr.to_string(),
                cluster_id,
                raft,
                shared,
                peers,
                options,
                elections,
                data_path: data_dir.path.clone(),
                proposals: tx,
                forwards,
                leader_reads: ReadIndexBatcher::spawn(move || {
                    let me = a.upgrade();
                    async move {
                        match me {
                            Some(node) => node.leader_read_round().await,
                            None => Err(Arc::new(Error::ShuttingDown)),
                        }
                    }
                }),
                remote_reads: ReadIndexBatcher::spawn(move || {
                    let me = b.upgrade();
                    async move {
                        match me {
                            Some(node) => node.remote_read_round().await,
                            None => Err(Arc::new(Error::ShuttingDown)),
                        }
                    }
                }),
                last_leader_contact_ms: AtomicU64::new(0),
                started: Instant::now(),
                shutdown,
            }
        });
        tokio::spawn(node.clone().run_proposer(rx));
        tokio::spawn(node.clone().run_forwarder(forwards_rx));
        tokio::spawn(node.clone().run_leader_duties());
        tokio::spawn(node.clone().run_compactor());
        tokio::spawn(node.clone().run_leader_watchdog());
        Ok(node)
    }

    /// Stops Raft and the background tasks, and makes everything applied
    /// durable.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let _ = self.raft.shutdown().await;
        let _ = self.shared.db.flush_wal(true);
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    // ---- leadership --------------------------------------------------------

    /// The leader as this master knows it.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Waits until some leader is known, up to `deadline` but no longer than
    /// `leader_wait`: a master without a leader answers "unavailable" soon,
    /// so the client tries another one instead of waiting here.
    async fn wait_leader(&self, deadline: Instant) -> Result<(NodeId, Member), Error> {
        let deadline = deadline.min(Instant::now() + self.options.leader_wait);
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader);
            }
            if tokio::time::timeout(left, rx.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(Error::ShuttingDown);
            }
        }
    }

    async fn forward(
        &self,
        leader: &Member,
        req: &ForwardRequest,
    ) -> Result<ForwardResponse, Error> {
        // Adding a member waits for it to catch up (up to a minute).
        let timeout = match req {
            ForwardRequest::AddMember { .. } => Duration::from_secs(70),
            _ => self.options.request_timeout,
        };
        self.peers
            .forward(&leader.addr, req, timeout)
            .await
            .map_err(|s| Error::LeaderUnreachable {
                addr: leader.addr.clone(),
                message: s.message().to_string(),
            })
    }

    // ---- writes ------------------------------------------------------------

    /// Commits one proposal through the leader (wherever it is) and returns
    /// its result. A "not leader" answer given before the proposal entered
    /// the log is retried here; anything indeterminate is returned as an
    /// error, and the client retries with the same write id.
    ///
    /// When the leader cannot be reached (it died), a proposal with a write
    /// id waits here for the next leader and is resent to it, instead of
    /// failing and making the client fail over and back off: resending is
    /// as safe as the client's own retry, because the state machine applies
    /// each write id once. This takes the client's back-off out of the
    /// failover time.
    pub async fn propose(&self, proposal: &pb::Proposal) -> Result<pb::ProposalResult, Error> {
        let bytes = proposal.encode_to_vec();
        let deadline = Instant::now() + self.options.request_timeout;
        let mut waited_for_new_leader = false;
        loop {
            let (leader_id, _) = self.wait_leader(deadline).await?;
            let result = if leader_id == self.id {
                match self.propose_local(bytes.clone()).await {
                    Err(Error::NoLeader) => None,
                    other => Some(other?),
                }
            } else {
                let term = self.raft.metrics().borrow().current_term;
                match self.forward_proposal(bytes.clone()).await {
                    Ok(Proposed::Applied(r)) => Some(r),
                    Ok(Proposed::NotLeader) => None,
                    Ok(Proposed::Failed { code, message }) => {
                        return Err(Error::Proposal { code, message });
                    }
                    Err(e) if proposal.write_id.is_some() && !waited_for_new_leader => {
                        waited_for_new_leader = true;
                        if self.wait_new_leader(leader_id, term).await {
                            continue;
                        }
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
            };
            match result {
                Some(r) => {
                    return pb::ProposalResult::decode(r.as_slice()).map_err(Error::Corrupt);
                }
                None if Instant::now() >= deadline => return Err(Error::NoLeader),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// After the leader `old` (known in `term`) could not be reached: waits
    /// until this master knows another leader, or a leader of a later term,
    /// for about as long as an election takes. Returns whether it does.
    async fn wait_new_leader(&self, old: NodeId, term: u64) -> bool {
        let bound = Duration::from_millis(
            self.options.election_timeout_max_ms * 2 + self.options.heartbeat_ms * 2,
        );
        let mut rx = self.raft.metrics();
        let changed = async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if m.current_leader
                        .is_some_and(|l| l != old || m.current_term > term)
                    {
                        return true;
                    }
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(bound, changed).await.unwrap_or(false)
    }

    /// Hands a proposal to this master's batcher. `NoLeader` means it was
    /// refused before entering the log (safe to retry elsewhere).
    pub async fn propose_local(&self, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
        if !self.is_leader() {
            return Err(Error::NoLeader);
        }
        let (tx, rx) = oneshot::channel();
        self.shared.metrics.proposals_in_flight.inc();
        let sent = self
            .proposals
            .send(Pending {
                bytes,
                started: Instant::now(),
                tx,
            })
            .await;
        let result = match sent {
            Ok(()) => rx.await.unwrap_or(Err(Error::ShuttingDown)),
            Err(_) => Err(Error::ShuttingDown),
        };
        self.shared.metrics.proposals_in_flight.dec();
        result
    }

    /// Hands a proposal to this follower's forwarder and waits for the
    /// leader's outcome. `NotLeader` when no other master is known as
    /// leader at the moment it is sent.
    async fn forward_proposal(&self, bytes: Vec<u8>) -> Result<Proposed, Error> {
        let (tx, rx) = oneshot::channel();
        self.forwards
            .send(Forward { bytes, tx })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.unwrap_or(Err(Error::ShuttingDown))
    }

    /// Forwards proposals to the leader in batches: one RPC carries every
    /// proposal that arrived while [`FORWARDS_IN_FLIGHT`] earlier RPCs were
    /// in flight, instead of one RPC (an HTTP/2 stream, its headers and
    /// framing on both ends) per proposal. A proposal arriving when fewer
    /// are in flight is sent at once.
    async fn run_forwarder(self: Arc<Self>, rx: mpsc::Receiver<Forward>) {
        let max = self.options.max_batch;
        run_batched(rx, FORWARDS_IN_FLIGHT, max, move |batch| {
            let node = self.clone();
            async move { node.forward_batch(batch).await }
        })
        .await;
    }

    async fn forward_batch(&self, batch: Vec<Forward>) {
        let (proposals, waiters): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|f| (f.bytes, f.tx)).unzip();
        let leader = match self.leader() {
            Some((id, leader)) if id != self.id => leader,
            _ => {
                for tx in waiters {
                    let _ = tx.send(Ok(Proposed::NotLeader));
                }
                return;
            }
        };
        let m = &self.shared.metrics;
        m.forward_batches.inc();
        m.forwarded_proposals.inc_by(proposals.len() as u64);
        let sent = proposals.len();
        let answer = self
            .forward(&leader, &ForwardRequest::ProposeBatch(proposals))
            .await;
        // The leader answers a batch only with one outcome per proposal.
        let outcomes: Result<Vec<Proposed>, Error> = match answer {
            Ok(ForwardResponse::ProposedBatch(outcomes)) if outcomes.len() == sent => Ok(outcomes),
            Ok(other) => Err(Error::Raft(format!(
                "unexpected answer to {sent} forwarded proposals: {other:?}"
            ))),
            Err(e) => Err(e),
        };
        match outcomes {
            Ok(outcomes) => {
                for (tx, outcome) in waiters.into_iter().zip(outcomes) {
                    let _ = tx.send(Ok(outcome));
                }
            }
            Err(e) => {
                for tx in waiters {
                    let _ = tx.send(Err(e.copy()));
                }
            }
        }
    }

    /// Group commit: proposals that arrive while earlier log entries are in
    /// flight are gathered into one entry, one append, one fsync.
    async fn run_proposer(self: Arc<Self>, rx: mpsc::Receiver<Pending>) {
        let (in_flight, max) = (self.options.max_in_flight, self.options.max_batch);
        run_batched(rx, in_flight, max, move |batch| {
            let node = self.clone();
            async move { node.commit_batch(batch).await }
        })
        .await;
    }

    async fn commit_batch(&self, batch: Vec<Pending>) {
        let mut waiters = Vec::with_capacity(batch.len());
        let mut proposals = Vec::with_capacity(batch.len());
        for p in batch {
            proposals.push(p.bytes);
            waiters.push((p.started, p.tx));
        }
        let m = &self.shared.metrics;
        match self.raft.client_write(LogCommand { proposals }).await {
            Ok(resp) => {
                for ((started, tx), r) in waiters.into_iter().zip(resp.data.results) {
                    m.proposals_total.inc();
                    m.proposal_seconds.observe(started.elapsed().as_secs_f64());
                    let _ = tx.send(Ok(r));
                }
            }
            Err(e) => {
                // Leadership was lost or Raft stopped with the entry maybe
                // in the log: the outcome is unknown to us.
                let err = match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                        Error::Raft("leadership changed while proposing; the write may or may not have been applied".into())
                    }
                    RaftError::Fatal(_) => Error::ShuttingDown,
                    other => Error::Raft(other.to_string()),
                };
                for (_, tx) in waiters {
                    m.proposals_failed.inc();
                    let _ = tx.send(Err(Error::Raft(err.to_string())));
                }
            }
        }
    }

    // ---- reads -------------------------------------------------------------

    /// Returns once this master has applied everything committed before the
    /// call: the leader confirms its leadership with a quorum (read index);
    /// a follower asks the leader for that index and waits to apply it.
    /// Concurrent reads share one confirmation (see [`crate::read_index`]).
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.options.request_timeout;
        loop {
            let (leader_id, _) = self.wait_leader(deadline).await?;
            let index = if leader_id == self.id {
                self.leader_reads.read_index().await?
            } else {
                self.remote_reads.read_index().await?
            };
            if let Some(index) = index {
                let left = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(Some(index), "read barrier")
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::Timeout(format!("waiting to apply index {index}: {e}")));
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leader side of a keep-alive: first a read-index round (leadership
    /// confirmed by a quorum) and this master applying everything committed
    /// so far, so an expiry already in the log has removed the lease; then
    /// the refresh, unless this master has proposed the lease's expiry.
    /// `None` when not leader. (A leader without a quorum used to answer
    /// from its clock alone — found by the Jepsen lease workload.)
    pub async fn keep_alive_local(&self, id: i64) -> Result<Option<Option<i64>>, Error> {
        let Some(index) = self.leader_reads.read_index().await? else {
            return Ok(None);
        };
        self.raft
            .wait(Some(self.options.request_timeout))
            .applied_index_at_least(Some(index), "keep-alive")
            .await
            .map_err(|e| Error::Timeout(format!("waiting to apply index {index}: {e}")))?;
        if !self.is_leader() {
            return Ok(None);
        }
        if let Some(ttl) = self.shared.leases.keep_alive(id) {
            return Ok(Some(Some(ttl)));
        }
        // Not refreshed: unknown, or its expiry has been proposed. "Not
        // found" is said only once the lease is gone from the applied state:
        // an expiry proposed without a quorum may be lost and proposed
        // again, and a client told "not found" while its key can still be
        // read would see the key come back (found by the Jepsen lease
        // workload under kill-majority).
        let deadline = Instant::now() + self.options.request_timeout;
        while self.shared.leases.contains(id) {
            if Instant::now() >= deadline || !self.is_leader() {
                return Err(Error::Timeout(format!(
                    "lease {id:x} is expiring but its expiry is not committed yet; retry"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some(None))
    }

    /// Leader side of a follower's read-index request: an index confirmed
    /// by a quorum after the request arrived, or `None` when not leader.
    pub async fn local_read_index(&self) -> Result<Option<u64>, Error> {
        self.leader_reads.read_index().await
    }

    /// One leadership confirmation for a batch of reads (openraft sends a
    /// heartbeat to every follower and waits for a quorum).
    async fn leader_read_round(&self) -> Round {
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _)) => Ok(Some(read_log_id.map(|l| l.index).unwrap_or(0))),
            Err(RaftError::Fatal(_)) => Err(Arc::new(Error::ShuttingDown)),
            Err(_) => Ok(None),
        }
    }

    /// One `ReadIndex` request to the leader for a batch of reads.
    async fn remote_read_round(&self) -> Round {
        let Some((leader_id, leader)) = self.leader() else {
            return Ok(None);
        };
        if leader_id == self.id {
            return Ok(None);
        }
        match self.forward(&leader, &ForwardRequest::ReadIndex).await {
            Ok(ForwardResponse::ReadIndex(i)) => Ok(Some(i)),
            Ok(_) => Ok(None),
            Err(e) => Err(Arc::new(e)),
        }
    }

    // ---- leases ------------------------------------------------------------

    /// Refreshes a lease on the leader; returns its TTL.
    pub async fn keep_alive(&self, id: i64) -> Result<i64, Error> {
        let deadline = Instant::now() + self.options.request_timeout;
        loop {
            let (leader_id, leader) = self.wait_leader(deadline).await?;
            let answer = if leader_id == self.id {
                self.keep_alive_local(id).await?
            } else {
                match self
                    .forward(&leader, &ForwardRequest::KeepAlive(id))
                    .await?
                {
                    ForwardResponse::KeptAlive(ttl) => Some(ttl),
                    _ => None,
                }
            };
            match answer {
                Some(Some(ttl)) => return Ok(ttl),
                Some(None) => return Err(Error::NotFound(format!("lease {id:x} not found"))),
                None if Instant::now() >= deadline => return Err(Error::NoLeader),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The leader's duties, checked every 100 ms: give every lease a full
    /// TTL on becoming leader, then propose the expiry of overdue leases.
    /// Also keeps the Raft metrics gauges current.
    async fn run_leader_duties(self: Arc<Self>) {
        let mut stop = self.stopped();
        let mut was_leader = false;
        let mut last_leader = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let (state, leader, term) = {
                let m = self.raft.metrics();
                let m = m.borrow();
                (m.state, m.current_leader, m.current_term)
            };
            let metrics = &self.shared.metrics;
            metrics.term.set(term as i64);
            metrics
                .commit_index
                .set(self.shared.committed.load(Ordering::Relaxed) as i64);
            if leader != last_leader {
                if leader.is_some() {
                    metrics.leader_changes.inc();
                }
                last_leader = leader;
            }
            let is_leader = state == ServerState::Leader;
            metrics.is_leader.set(i64::from(is_leader));
            if is_leader && !was_leader {
                self.shared.leases.grant_grace();
            }
            was_leader = is_leader;
            if !is_leader {
                continue;
            }
            let expired = self.shared.leases.take_expired(Duration::from_secs(2));
            if !expired.is_empty() {
                let proposal = pb::Proposal {
                    write_id: None,
                    op: Some(pb::proposal::Op::LeaseExpire(pb::LeaseExpire {
                        ids: expired,
                    })),
                    fence_term: 0,
                };
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.propose_local(proposal.encode_to_vec()).await {
                        tracing::debug!("lease expiry not proposed: {e}");
                    }
                });
            }
        }
    }

    // ---- fast failover ------------------------------------------------------

    /// Records that an AppendEntries arrived (called by the Raft service).
    pub fn note_leader_contact(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_leader_contact_ms
            .fetch_max(now, Ordering::Relaxed);
    }

    fn since_leader_contact(&self) -> Duration {
        let last = Duration::from_millis(self.last_leader_contact_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Starts an election as soon as it can succeed when the leader's
    /// process is gone, instead of after the full election timeout.
    ///
    /// A follower whose leader has been silent for two heartbeats tries to
    /// open a TCP connection to it. Refused means nothing listens there any
    /// more: the leader died (kill -9, crash, restart). The follower then
    /// waits until the leader lease has passed — until then the other
    /// voters refuse every vote — plus a random part of a heartbeat, so the
    /// followers do not stand at the same moment and split the vote, and
    /// triggers the election. A leader that is slow, paused or cut off
    /// still accepts connections or times out, and is left to the normal
    /// election timeout. Elections are always safe in Raft; this only
    /// changes when one starts.
    ///
    /// The leases of the other voters run from their own last contact,
    /// which may be a heartbeat later than ours, and the other follower
    /// may have stood at nearly the same moment: either way our first
    /// round can be refused, and openraft would only try again after a
    /// full election timeout (~0.4 s, measured in `rafter bench
    /// scheduler`). So a follower that is still a candidate a heartbeat
    /// (plus jitter) after standing stands again in the next term, a few
    /// times at most; one that has voted for someone else stops.
    ///
    /// Only a follower with the longest log can win, and the followers'
    /// logs differ by the last AppendEntries (`crate::elections`). A
    /// follower that refused a candidate with a shorter log stands at once,
    /// in a term above that candidate's; a candidate refused by a longer
    /// log stops standing and lets that follower win.
    async fn run_leader_watchdog(self: Arc<Self>) {
        let mut stop = self.stopped();
        let heartbeat = Duration::from_millis(self.options.heartbeat_ms);
        let lease = Duration::from_millis(self.options.election_timeout_max_ms);
        // 10 ms to half a heartbeat, so the followers do not act in step.
        let jitter =
            || Duration::from_millis(rand::random_range(10..=10 + self.options.heartbeat_ms / 2));
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut triggered: Option<(NodeId, u64)> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let (state, term) = self.state_and_term();
            if state != ServerState::Follower || self.since_leader_contact() < 2 * heartbeat {
                continue;
            }
            let Some((leader_id, leader)) = self.leader() else {
                continue;
            };
            if leader_id == self.id || triggered == Some((leader_id, term)) {
                continue;
            }
            let probe = tokio::net::TcpStream::connect(leader.addr.as_str());
            let refused = matches!(
                tokio::time::timeout(heartbeat, probe).await,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
            );
            if !refused {
                continue;
            }
            // A candidate with a shorter log gave up its own lease by
            // standing and cannot win: nothing to wait for.
            let shorter_log = self.elections.shorter_log_seen();
            let hurried = self.elections.stand_now(term)
                || tokio::select! {
                    _ = tokio::time::sleep(
                        (lease + jitter()).saturating_sub(self.since_leader_contact()),
                    ) => false,
                    _ = shorter_log => true,
                    _ = stop.changed() => return,
                };
            if self.leader().map(|(id, _)| id) != Some(leader_id) || self.is_leader() {
                continue;
            }
            triggered = Some((leader_id, term));
            tracing::info!(
                leader = format!("{leader_id:016x}"),
                after_shorter_log_candidate = hurried,
                "leader process gone: starting an election"
            );
            for round in 1..=ELECTION_ROUNDS {
                if round > 1 {
                    tracing::info!(round, "still a candidate: standing again");
                }
                // Each election is one term up; a candidate we refused has
                // spent its vote in its own term, so stand above it.
                let (_, term) = self.state_and_term();
                for _ in 0..self.elections.terms_to_climb(term) {
                    let _ = self.raft.trigger().elect().await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(heartbeat + jitter()) => {}
                    _ = stop.changed() => return,
                }
                let (state, term) = self.state_and_term();
                if state != ServerState::Candidate {
                    break;
                }
                if self.elections.outlogged_in(term) {
                    tracing::info!(term, "a voter has a longer log: leaving the election to it");
                    break;
                }
            }
        }
    }

    fn state_and_term(&self) -> (ServerState, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.state, m.current_term)
    }

    // ---- compaction --------------------------------------------------------

    /// Drops watch history older than `history_revisions`. Runs beside the
    /// writers: it only deletes revisions they will never write again.
    async fn run_compactor(self: Arc<Self>) {
        let mut stop = self.stopped();
        let mut tick = tokio::time::interval(self.options.compaction_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let revision = self.shared.revision.load(Ordering::Acquire);
            let target = revision.saturating_sub(self.options.history_revisions);
            if target <= self.shared.compact_revision.load(Ordering::Acquire) {
                continue;
            }
            if let Err(e) = self.compact(target) {
                tracing::warn!("history compaction to revision {target} failed: {e}");
            }
        }
    }

    /// Removes history below `revision`; watches and reads before it get the
    /// Compacted error from then on.
    pub fn compact(&self, revision: u64) -> Result<(), Error> {
        let db = &self.shared.db;
        // Publish the new point first so no reader trusts history being
        // deleted.
        self.shared
            .compact_revision
            .fetch_max(revision, Ordering::AcqRel);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            db.cf_handle(CF_SM).expect("cf"),
            KEY_COMPACT,
            u64_key(revision),
        );
        batch.delete_range_cf(
            db.cf_handle(CF_HISTORY).expect("cf"),
            u64_key(0),
            u64_key(revision),
        );
        db.write(batch)?;
        Ok(())
    }

    // ---- membership --------------------------------------------------------

    /// Every member: (id, member, is_learner).
    pub fn members(&self) -> Vec<(NodeId, Member, bool)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| (*id, n.clone(), !voters.contains(id)))
            .collect()
    }

    /// Adds a master as learner, waits for it to catch up, then makes it a
    /// voter. Runs on the leader; followers forward.
    pub async fn add_member(
        &self,
        name: &str,
        addr: &str,
    ) -> Result<Vec<(NodeId, Member, bool)>, Error> {
        let req = ForwardRequest::AddMember {
            name: name.into(),
            addr: addr.into(),
        };
        self.on_leader(req, || self.add_member_local(name, addr))
            .await
    }

    /// Removes a master from the voters and the group.
    pub async fn remove_member(&self, name: &str) -> Result<Vec<(NodeId, Member, bool)>, Error> {
        let req = ForwardRequest::RemoveMember { name: name.into() };
        self.on_leader(req, || self.remove_member_local(name)).await
    }

    async fn on_leader<F, Fut>(
        &self,
        req: ForwardRequest,
        local: F,
    ) -> Result<Vec<(NodeId, Member, bool)>, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(NodeId, Member, bool)>, Error>>,
    {
        let deadline = Instant::now() + self.options.request_timeout;
        loop {
            let (leader_id, leader) = self.wait_leader(deadline).await?;
            if leader_id == self.id {
                return local().await;
            }
            match self.forward(&leader, &req).await? {
                ForwardResponse::Members(m) => return Ok(m),
                ForwardResponse::Failed { code, message } => {
                    return Err(Error::Proposal { code, message });
                }
                _ if Instant::now() >= deadline => return Err(Error::NoLeader),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn add_member_local(
        &self,
        name: &str,
        addr: &str,
    ) -> Result<Vec<(NodeId, Member, bool)>, Error> {
        if name.is_empty() || addr.is_empty() {
            return Err(Error::InvalidArgument(
                "member name and address must not be empty".into(),
            ));
        }
        let id = node_id_of(name);
        let members = self.members();
        if let Some((_, m, learner)) = members.iter().find(|(i, _, _)| *i == id) {
            if m.addr != addr {
                return Err(Error::FailedPrecondition(format!(
                    "member {name} already exists with address {}; remove it first to change its address",
                    m.addr
                )));
            }
            if !learner {
                return Ok(members);
            }
        } else {
            if let Some((_, m, _)) = members.iter().find(|(_, m, _)| m.addr == addr) {
                return Err(Error::FailedPrecondition(format!(
                    "address {addr} is already used by member {}",
                    m.name
                )));
            }
            let node = Member {
                name: name.into(),
                addr: addr.into(),
            };
            self.raft
                .add_learner(id, node, false)
                .await
                .map_err(raft_write_error)?;
        }
        // Wait until the learner is close to the leader's log before it may
        // vote, so adding it never stalls commits.
        let timeout = Duration::from_secs(60);
        let caught_up = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map(|l| l.index)
                        .unwrap_or(0);
                    matched + 100 >= last && matched > 0
                },
                "learner caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(Error::Timeout(format!(
                "{name} was added as a learner but did not catch up within {timeout:?}; is `rafter server --name {name} --listen {addr} --join ...` running?"
            )));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(raft_write_error)?;
        Ok(self.members())
    }

    pub async fn remove_member_local(
        &self,
        name: &str,
    ) -> Result<Vec<(NodeId, Member, bool)>, Error> {
        let id = node_id_of(name);
        let members = self.members();
        let Some((_, _, learner)) = members.iter().find(|(i, _, _)| *i == id) else {
            return Err(Error::NotFound(format!("member {name} not found")));
        };
        let voters = members.iter().filter(|(_, _, l)| !l).count();
        if !learner && voters <= 1 {
            return Err(Error::FailedPrecondition(format!(
                "{name} is the last voter and cannot be removed"
            )));
        }
        let change = if *learner {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(raft_write_error)?;
        Ok(self.members())
    }

    // ---- status ------------------------------------------------------------

    /// This master's view for the Status RPC.
    pub fn status(&self) -> pb::StatusResponse {
        // Copy what is needed and release the metrics lock at once: it is a
        // writer-preferring RwLock, so borrowing it again while holding it
        // (as `header()` does) deadlocks with Raft publishing new metrics,
        // and walking the data dir under it would stall Raft.
        let (leader_id, raft_term, applied_index, is_learner) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let is_voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == self.id);
            (
                m.current_leader.unwrap_or(0),
                m.current_term,
                m.last_applied.map(|l| l.index).unwrap_or(0),
                !is_voter,
            )
        };
        pb::StatusResponse {
            header: Some(self.header()),
            name: self.name.clone(),
            member_id: self.id,
            leader_id,
            raft_term,
            commit_index: self.shared.committed.load(Ordering::Relaxed),
            applied_index,
            db_size: DataDir::size(&self.data_path),
            is_learner,
            revision: self.shared.revision.load(Ordering::Acquire),
            compact_revision: self.shared.compact_revision.load(Ordering::Acquire),
            address: self.addr.clone(),
        }
    }

    /// A response header describing this master now.
    pub fn header(&self) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision: self.shared.revision.load(Ordering::Acquire),
            raft_term: self.raft.metrics().borrow().current_term,
        }
    }
}

fn raft_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NoLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::FailedPrecondition(e.to_string())
        }
        RaftError::Fatal(_) => Error::ShuttingDown,
    }
}

/// Hands the items of `rx` to `handle` in batches, each on its own task: the
/// first item waiting and everything else already queued, up to `max`. At
/// most `in_flight` batches are handled at once; items that arrive
/// meanwhile wait and form the next batch. Ends when `rx` closes.
async fn run_batched<T, F, Fut>(mut rx: mpsc::Receiver<T>, in_flight: usize, max: usize, handle: F)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < max {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let work = handle(batch);
        tokio::spawn(async move {
            work.await;
            drop(permit);
        });
    }
}
