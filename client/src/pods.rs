//! A pod's logs and exec, through any master (which proxies to the pod's
//! node agent).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use rafter_proto::api::exec_input::Input;
use rafter_proto::api::pods_client::PodsClient;
use rafter_proto::api::{
    ExecInput, ExecOutputFrame, ExecRequest, ExecResponse, ExecStart, LogChunk, LogsRequest,
};
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

    /// Starts an interactive exec (`rafter exec -i/-t`): `start` says what
    /// to run; `input` carries the later messages (stdin, resizes, stdin
    /// closed) for as long as the caller has any. Returns the command's
    /// output frames, the last of which is its exit code. Returns once the
    /// command has started.
    ///
    /// Each master is tried once until one accepts the start; `input` goes
    /// to that one only (it is taken only after the start was accepted, so
    /// nothing of it is lost on a master that refused). The stream is not
    /// moved to another master if this one fails later.
    pub async fn pod_exec_stream<S>(
        &self,
        start: ExecStart,
        input: S,
    ) -> Result<Streaming<ExecOutputFrame>, Error>
    where
        S: Stream<Item = ExecInput> + Send + 'static,
    {
        let mut policy = self.policy();
        policy.max_rounds = Some(1);
        // Starting includes the master's call to the agent and the agent's
        // to its runtime.
        policy.attempt_timeout = policy.attempt_timeout.max(Duration::from_secs(15));
        let input: Arc<Mutex<Option<BoxStream<'static, ExecInput>>>> =
            Arc::new(Mutex::new(Some(input.boxed())));
        // Which attempt was accepted: its request stream then takes `input`.
        let (accepted, _) = tokio::sync::watch::channel(None::<u32>);
        let mut attempts = 0u32;
        let (frames, _) = self
            .with_failover(policy, |ch, _| {
                attempts += 1;
                let attempt = attempts;
                let first = ExecInput {
                    input: Some(Input::Start(start.clone())),
                };
                let input = input.clone();
                let mut accepted = accepted.subscribe();
                let rest = futures::stream::once(async move {
                    let ours = accepted
                        .wait_for(|a| a.is_some())
                        .await
                        .is_ok_and(|a| *a == Some(attempt));
                    let taken = if ours {
                        input.lock().unwrap_or_else(|e| e.into_inner()).take()
                    } else {
                        None
                    };
                    futures::stream::iter(taken).flatten()
                })
                .flatten();
                let upstream = futures::stream::once(async move { first }).chain(rest);
                async move { PodsClient::<Conn>::new(ch).exec_stream(upstream).await }
            })
            .await?;
        accepted.send_replace(Some(attempts));
        Ok(frames)
    }
}
