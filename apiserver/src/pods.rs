//! The Pods service: `rafter logs` and `rafter exec` through any master.
//! The master finds the pod's node, the node agent's address (InternalIP
//! and `status.daemonEndpoints.agentEndpoint.port`) and the node's
//! credential, and forwards the request to the agent (`Agent` service),
//! streaming the answer back. Interactive exec (`ExecStream`) is proxied
//! both ways: the client's messages to the agent, the agent's frames back,
//! until either side ends. Admin only.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rafter_proto::api::agent_client::AgentClient;
use rafter_proto::api::exec_input::Input;
use rafter_proto::api::pods_server::{Pods, PodsServer};
use rafter_proto::api::{
    self, ExecInput, ExecOutputFrame, ExecRequest, ExecResponse, LogChunk, LogsRequest,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Identity, identity_of};
use crate::error::{ApiError, Reason, Result};
use crate::node_auth::{SYSTEM_NAMESPACE, credential, credential_secret_name};
use crate::store::Store;

/// The Pods service of one master.
#[derive(Clone)]
pub struct PodsService {
    pub(crate) store: Store,
}

impl PodsService {
    pub fn service(self) -> PodsServer<PodsService> {
        PodsServer::new(self)
    }

    /// The agent of the node pod `namespace/name` is bound to, and the
    /// bearer token it takes.
    async fn agent_of(&self, namespace: &str, name: &str) -> Result<(String, String)> {
        let pod: api::Pod = self.store.get(namespace, name, false).await?;
        let node_name = pod.spec.map(|s| s.node_name).unwrap_or_default();
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {namespace}/{name} is not scheduled to a node yet; wait until it is (rafter get pod {name} -o wide)"
            )));
        }
        let node: api::Node = self.store.get("", &node_name, false).await?;
        let status = node.status.unwrap_or_default();
        let ip = status
            .addresses
            .iter()
            .find(|a| a.r#type == "InternalIP")
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let port = status
            .daemon_endpoints
            .and_then(|d| d.agent_endpoint)
            .map(|e| e.port)
            .unwrap_or(0);
        if ip.is_empty() || port <= 0 {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!(
                    "node {node_name} reports no agent endpoint (InternalIP and daemonEndpoints.agentEndpoint.port): it is not run by `rafter agent`"
                ),
            ));
        }
        let secret: api::Secret = self
            .store
            .get(SYSTEM_NAMESPACE, &credential_secret_name(&node_name), false)
            .await
            .map_err(|e| {
                ApiError::new(
                    Reason::InternalError,
                    format!(
                        "node {node_name} has no credential to call its agent with: {}",
                        e.message
                    ),
                )
            })?;
        let secret = String::from_utf8_lossy(
            secret
                .data
                .get("secret")
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
        .into_owned();
        let addr = if ip.contains(':') {
            format!("http://[{ip}]:{port}")
        } else {
            format!("http://{ip}:{port}")
        };
        Ok((addr, credential(&node_name, &secret)))
    }

    async fn connect(
        &self,
        namespace: &str,
        pod: &str,
    ) -> std::result::Result<(AgentClient<Channel>, MetadataValue<tonic::metadata::Ascii>), Status>
    {
        let (addr, bearer) = self.agent_of(namespace, pod).await?;
        let channel = Channel::from_shared(addr.clone())
            .map_err(|e| Status::internal(format!("bad agent address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot reach the node agent at {addr}: {e}"))
            })?;
        let value = format!("Bearer {bearer}")
            .parse()
            .map_err(|_| Status::internal("node credential is not a valid header"))?;
        Ok((AgentClient::new(channel), value))
    }
}

fn admin_only<T>(req: &Request<T>) -> std::result::Result<(), Status> {
    match identity_of(req) {
        Identity::Admin => Ok(()),
        _ => Err(ApiError::new(Reason::Forbidden, "logs and exec need the admin token").into()),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<LogChunk, Status>> + Send>>;
type FrameStream = Pin<Box<dyn Stream<Item = std::result::Result<ExecOutputFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Pods for PodsService {
    type LogsStream = ChunkStream;
    type ExecStreamStream = FrameStream;

    async fn logs(
        &self,
        req: Request<LogsRequest>,
    ) -> std::result::Result<Response<Self::LogsStream>, Status> {
        admin_only(&req)?;
        let r = req.into_inner();
        let (mut agent, bearer) = self.connect(&r.namespace, &r.pod).await?;
        let mut forwarded = Request::new(r);
        forwarded.metadata_mut().insert("authorization", bearer);
        let stream = agent.logs(forwarded).await?.into_inner();
        Ok(Response::new(Box::pin(stream.map(|c| c))))
    }

    async fn exec(
        &self,
        req: Request<ExecRequest>,
    ) -> std::result::Result<Response<ExecResponse>, Status> {
        admin_only(&req)?;
        let r = req.into_inner();
        let (mut agent, bearer) = self.connect(&r.namespace, &r.pod).await?;
        let mut forwarded = Request::new(r);
        forwarded.metadata_mut().insert("authorization", bearer);
        agent.exec(forwarded).await
    }

    async fn exec_stream(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> std::result::Result<Response<Self::ExecStreamStream>, Status> {
        admin_only(&req)?;
        let mut inbound = req.into_inner();
        // The start says which pod, hence which agent; it is forwarded as
        // the agent's first message too.
        let first = inbound.message().await?;
        let Some(Input::Start(start)) = first.as_ref().and_then(|m| m.input.as_ref()) else {
            return Err(ApiError::bad_request(
                "an exec stream must begin with its start message (namespace, pod, command)",
            )
            .into());
        };
        let (mut agent, bearer) = self.connect(&start.namespace, &start.pod).await?;
        // The client's input ends at its first error (it went away): the
        // agent then closes the command's stdin.
        let rest = inbound
            .take_while(|m| futures::future::ready(m.is_ok()))
            .filter_map(|m| futures::future::ready(m.ok()));
        let upstream = futures::stream::iter(first).chain(rest);
        let mut forwarded = Request::new(upstream);
        forwarded.metadata_mut().insert("authorization", bearer);
        let frames = agent.exec_stream(forwarded).await?.into_inner();
        Ok(Response::new(Box::pin(frames)))
    }
}
