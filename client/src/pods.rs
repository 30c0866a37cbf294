//! A pod's logs and exec, through any master (which proxies to the pod's
//! node agent).

use rafter_proto::api::pods_client::PodsClient;
use rafter_proto::api::{ExecRequest, ExecResponse, LogChunk, LogsRequest};
use tonic::Streaming;

use crate::client::Conn;
use crate::{Client, Error};

impl Client {
    /// The log of a pod's container, as a stream of chunks (with `follow`,
    /// until the container stops or the stream is dropped). The stream is
    /// not resumed on another master if this one fails.
    pub async fn pod_logs(&self, req: LogsRequest) -> Result<Streaming<LogChunk>, Error> {
        let (resp, _) = self
            .with_failover(self.policy(), |ch, _| {
                let r = req.clone();
                async move { PodsClient::<Conn>::new(ch).logs(r).await }
            })
            .await?;
        Ok(resp)
    }

    /// Runs a command in a pod's container and returns its exit code and
    /// output. Not retried on another master once sent (it may have run).
    pub async fn pod_exec(&self, req: ExecRequest) -> Result<ExecResponse, Error> {
        let mut policy = self.policy();
        policy.max_rounds = Some(1);
        // The call lasts as long as the command may run.
        let runs = std::time::Duration::from_secs(if req.timeout_seconds > 0 {
            req.timeout_seconds as u64
        } else {
            60
        }) + std::time::Duration::from_secs(10);
        policy.attempt_timeout = policy.attempt_timeout.max(runs);
        policy.overall_timeout = policy.overall_timeout.max(runs);
        let (resp, _) = self
            .with_failover(policy, |ch, _| {
                let r = req.clone();
                async move { PodsClient::<Conn>::new(ch).exec(r).await }
            })
            .await?;
        Ok(resp)
    }
}
