//! The agent's own gRPC port: `Agent.Logs` and `Agent.Exec` for the
//! masters, which proxy `rafter logs` and `rafter exec` here. Callers must
//! present this node's credential (the masters hold it; nobody else
//! should).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rafter_proto::api::agent_server::{Agent, AgentServer};
use rafter_proto::api::{ExecRequest, ExecResponse, LogChunk, LogsRequest};
use tonic::{Request, Response, Status};

use crate::runtime::{self as rt, ContainerInfo, ContainerRuntime, LogOptions};

/// The Agent service of one node.
#[derive(Clone)]
pub struct AgentService {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub node: String,
}

/// Accepts only `credential` as the bearer token.
pub fn check_credential(
    credential: String,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same = given.len() == credential.len()
            && given
                .bytes()
                .zip(credential.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "the node agent serves its masters only",
            ))
        }
    }
}

impl AgentService {
    /// The gRPC service, behind the credential check.
    pub fn service(
        self,
        credential: String,
    ) -> tonic::service::interceptor::InterceptedService<
        AgentServer<AgentService>,
        impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone,
    > {
        tonic::service::interceptor::InterceptedService::new(
            AgentServer::new(self),
            check_credential(credential),
        )
    }

    /// The containers named `container` of pod `namespace/name`, newest
    /// first; with an empty `container`, the pod's only one.
    async fn containers(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<ContainerInfo>, Status> {
        let all = self
            .runtime
            .list(&[
                (rt::LABEL_NODE, self.node.as_str()),
                (rt::LABEL_POD_NAMESPACE, namespace),
                (rt::LABEL_POD_NAME, pod),
            ])
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let name_of = |c: &ContainerInfo| {
            c.labels
                .get(rt::LABEL_CONTAINER)
                .cloned()
                .unwrap_or_default()
        };
        let mut names: Vec<String> = all
            .iter()
            .map(name_of)
            .filter(|n| n != rt::SANDBOX)
            .collect();
        names.sort();
        names.dedup();
        let wanted = if container.is_empty() {
            match names.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Status::not_found(format!(
                        "pod {namespace}/{pod} has no containers on node {}",
                        self.node
                    )));
                }
                many => {
                    return Err(Status::invalid_argument(format!(
                        "a container name must be specified for pod {pod}, choose one of: [{}]",
                        many.join(" ")
                    )));
                }
            }
        } else {
            container.to_string()
        };
        let mut found: Vec<ContainerInfo> =
            all.into_iter().filter(|c| name_of(c) == wanted).collect();
        if found.is_empty() {
            return Err(Status::not_found(format!(
                "container {wanted:?} is not valid for pod {pod} (its containers: [{}])",
                names.join(" ")
            )));
        }
        let count = |c: &ContainerInfo| {
            c.labels
                .get(rt::LABEL_RESTART_COUNT)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        found.sort_by_key(|c| std::cmp::Reverse(count(c)));
        Ok(found)
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = ChunkStream;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let found = self.containers(&r.namespace, &r.pod, &r.container).await?;
        let target = if r.previous {
            found.get(1).ok_or_else(|| {
                Status::not_found(format!(
                    "previous terminated container of pod {} not found",
                    r.pod
                ))
            })?
        } else {
            &found[0]
        };
        let options = LogOptions {
            follow: r.follow && !r.previous,
            tail: (r.tail_lines >= 0).then_some(r.tail_lines as u64),
            timestamps: r.timestamps,
        };
        let stream = self
            .runtime
            .logs(&target.id, options)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Box::pin(stream.map(|chunk| {
            chunk
                .map(|data| LogChunk {
                    data: data.to_vec(),
                })
                .map_err(|e| Status::unavailable(e.to_string()))
        }))))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = req.into_inner();
        if r.command.is_empty() {
            return Err(Status::invalid_argument(
                "no command given: rafter exec POD -- COMMAND [ARGS...]",
            ));
        }
        let found = self.containers(&r.namespace, &r.pod, &r.container).await?;
        let current = &found[0];
        if !matches!(current.state, rt::ContainerRunState::Running { .. }) {
            return Err(Status::failed_precondition(format!(
                "container {} of pod {} is not running",
                current
                    .labels
                    .get(rt::LABEL_CONTAINER)
                    .cloned()
                    .unwrap_or_default(),
                r.pod
            )));
        }
        let timeout = Duration::from_secs(if r.timeout_seconds > 0 {
            r.timeout_seconds as u64
        } else {
            60
        });
        let out = self
            .runtime
            .exec(&current.id, &r.command, timeout)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ExecResponse {
            exit_code: out.exit_code as i32,
            stdout: out.stdout,
            stderr: out.stderr,
        }))
    }
}
