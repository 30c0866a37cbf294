//! The leader supervisor: runs the scheduler and the controllers on this
//! master while, and only while, it is the Raft leader (DESIGN decision 7).
//!
//! When this master becomes leader of term T it first confirms its
//! leadership with a quorum and applies everything committed before (a
//! read-index round), so the components start from the latest state; then
//! it starts them with a client whose every write carries T. It stops them
//! the moment the term changes, this master stops being leader, or a
//! leadership confirmation fails (a quorum is out of reach). The fence is
//! what makes this safe rather than the stop: a write decided under T and
//! committed in any other term is rejected by the state machine at apply.
//!
//! The supervisor records who runs the control loops, and since when, under
//! [`CONTROL_PLANE_KEY`] (`rafter cluster status` shows it).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rafter_client::informer::Informers;
use rafter_proto::kv as pb;
use rafter_raft_store::node::Node;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The KV key holding the current [`ControlPlane`] record.
pub const CONTROL_PLANE_KEY: &str = "/rafter/control-plane";

/// Which master runs the scheduler and controllers, since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPlane {
    /// The master's name.
    pub master: String,
    /// The Raft term its components were started under.
    pub term: u64,
    /// When they started, RFC 3339.
    pub since: String,
}

/// How often a running leader re-confirms its leadership.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// The supervisor of one master.
pub struct Supervisor {
    pub node: Arc<Node>,
    /// This master's own address, which the components' client talks to.
    pub endpoint: String,
    /// The admin token the components authenticate with.
    pub token: String,
    pub controllers: rafter_controllers::Options,
}

impl Supervisor {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let lease = Duration::from_millis(self.node.options.election_timeout_max_ms);
        let confirm_timeout = lease.max(Duration::from_millis(500));
        let mut metrics = self.node.raft.metrics();
        loop {
            // Wait to be leader.
            let term = loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.state == openraft::ServerState::Leader {
                        break m.current_term;
                    }
                }
                tokio::select! {
                    r = metrics.changed() => if r.is_err() { return },
                    _ = shutdown.cancelled() => return,
                }
            };
            // The first linearizable read of the term: leadership confirmed
            // by a quorum, everything committed before applied here.
            if !self.confirm(term, confirm_timeout).await {
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_INTERVAL) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            let started = std::time::Instant::now();
            let stop = shutdown.child_token();
            let mut tasks = self.start(term, stop.clone());
            tracing::info!(term, "leader: scheduler and controllers started");
            let why = loop {
                tokio::select! {
                    r = metrics.changed() => {
                        if r.is_err() {
                            break "the Raft node stopped";
                        }
                        let m = metrics.borrow_and_update();
                        if m.state != openraft::ServerState::Leader {
                            break "no longer the leader";
                        }
                        if m.current_term != term {
                            break "the term moved on";
                        }
                    }
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {
                        if !self.confirm(term, confirm_timeout).await {
                            break "leadership not confirmed by a quorum";
                        }
                    }
                    Some(r) = tasks.join_next() => {
                        // A component never ends on its own; restart the
                        // set after a pause rather than run without it.
                        tracing::error!(term, result = ?r, "a control-plane component stopped");
                        break "a component stopped";
                    }
                    _ = shutdown.cancelled() => break "shutting down",
                }
            };
            stop.cancel();
            tracing::info!(term, reason = why, ran = ?started.elapsed(), "scheduler and controllers stopped");
            // Components stop at their next await point; do not wait on a
            // hung write longer than a moment.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            tasks.abort_all();
            if shutdown.is_cancelled() {
                return;
            }
            if why == "a component stopped" {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Whether this master is leader of `term`, confirmed by a quorum, with
    /// everything committed so far applied.
    async fn confirm(&self, term: u64, limit: Duration) -> bool {
        let confirmed = tokio::time::timeout(limit, async {
            match self.node.local_read_index().await {
                Ok(Some(index)) => self
                    .node
                    .raft
                    .wait(Some(limit))
                    .applied_index_at_least(Some(index), "supervisor")
                    .await
                    .is_ok(),
                _ => false,
            }
        })
        .await
        .unwrap_or(false);
        confirmed && {
            let m = self.node.raft.metrics().borrow().clone();
            m.state == openraft::ServerState::Leader && m.current_term == term
        }
    }

    /// Starts the components of `term` and the control-plane record.
    fn start(&self, term: u64, stop: CancellationToken) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        let options = rafter_client::ClientOptions {
            token: Some(self.token.clone()),
            fence_term: Some(term),
            request_timeout: Duration::from_secs(5),
            overall_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let endpoint = self.endpoint.clone();
        let controllers = self.controllers.clone();
        let node = self.node.clone();
        let stop2 = stop.clone();
        tasks.spawn(async move {
            let client =
                match rafter_client::Client::connect_with_options([endpoint], options).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the control-plane client");
                        return;
                    }
                };
            record(&node, term, &stop2).await;
            // One list and one watch per kind for every component.
            let informers = Informers::new(client.clone());
            let scheduler =
                rafter_scheduler::Scheduler::new(client.clone()).run(&informers, stop2.clone());
            let controllers =
                rafter_controllers::run(client, &informers, controllers, stop2.clone());
            tokio::join!(scheduler, controllers);
        });
        tasks
    }
}

/// Writes the control-plane record, fenced by `term`; retried until it
/// lands or the term's components are stopped.
async fn record(node: &Arc<Node>, term: u64, stop: &CancellationToken) {
    let value = ControlPlane {
        master: node.name.clone(),
        term,
        since: rafter_proto::age::format_rfc3339_utc(SystemTime::now()),
    };
    let proposal = pb::Proposal {
        write_id: None,
        op: Some(pb::proposal::Op::Put(pb::PutRequest {
            key: CONTROL_PLANE_KEY.as_bytes().to_vec(),
            value: serde_json::to_vec(&value).expect("serialisable"),
            ..Default::default()
        })),
        fence_term: term,
    };
    while !stop.is_cancelled() {
        match node.propose(&proposal).await {
            Ok(r) => {
                if let Some(pb::proposal_result::Result::Error(e)) = r.result {
                    tracing::info!(term, error = %e.message, "control-plane record not written");
                }
                return;
            }
            Err(e) => {
                tracing::debug!(term, error = %e, "control-plane record not written yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Decodes a stored control-plane record.
pub fn decode_record(value: &[u8]) -> Option<ControlPlane> {
    serde_json::from_slice(value).ok()
}
