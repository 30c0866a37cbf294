//! The agent's own gRPC port: `Agent.Logs`, `Agent.Exec` and
//! `Agent.ExecStream` (interactive, `-i`/`-t`) for the masters, which proxy
//! `rafter logs` and `rafter exec` here. Callers must
//! present this node's credential (the masters hold it; nobody else
//! should).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rafter_proto::api::agent_server::{Agent, AgentServer};
use rafter_proto::api::exec_input::Input;
use rafter_proto::api::exec_output_frame::Output;
use rafter_proto::api::{
    self, ExecInput, ExecOutputFrame, ExecRequest, ExecResponse, ExecStart, LogChunk, LogsRequest,
};
use tonic::{Request, Response, Status, Streaming};

use crate::runtime::{self as rt, ContainerInfo, ContainerRuntime, InteractiveExec, LogOptions};

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

    /// The running container an exec of `command` goes to: the current
    /// one named `container` (see [`AgentService::containers`]).
    async fn exec_target(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
    ) -> Result<ContainerInfo, Status> {
        if command.is_empty() {
            return Err(Status::invalid_argument(
                "no command given: rafter exec POD -- COMMAND [ARGS...]",
            ));
        }
        let current = self
            .containers(namespace, pod, container)
            .await?
            .swap_remove(0);
        if !matches!(current.state, rt::ContainerRunState::Running { .. }) {
            return Err(Status::failed_precondition(format!(
                "container {} of pod {pod} is not running",
                current
                    .labels
                    .get(rt::LABEL_CONTAINER)
                    .cloned()
                    .unwrap_or_default(),
            )));
        }
        Ok(current)
    }
}

/// The start message an ExecStream must open with.
fn exec_start(first: Option<ExecInput>) -> Result<ExecStart, Status> {
    match first.and_then(|m| m.input) {
        Some(Input::Start(start)) => Ok(start),
        _ => Err(Status::invalid_argument(
            "an exec stream must begin with its start message (namespace, pod, command)",
        )),
    }
}

/// What the runtime runs for `start`.
fn interactive_exec(start: ExecStart) -> InteractiveExec {
    InteractiveExec {
        command: start.command,
        stdin: start.stdin,
        tty: start.tty,
        size: start.terminal_size.map(terminal_size),
    }
}

/// A size from the wire, clamped to what terminals take.
fn terminal_size(size: api::TerminalSize) -> rt::TerminalSize {
    let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    rt::TerminalSize {
        rows: clamp(size.rows),
        cols: clamp(size.cols),
    }
}

/// The runtime's input for one message after the start: `None` for a
/// message with nothing in it, an error for a second start.
fn runtime_input(message: ExecInput) -> Result<Option<rt::ExecInput>, Status> {
    Ok(match message.input {
        None => None,
        Some(Input::Start(_)) => {
            return Err(Status::invalid_argument(
                "an exec stream has one start message, its first",
            ));
        }
        Some(Input::Stdin(data)) => Some(rt::ExecInput::Stdin(data.into())),
        Some(Input::Resize(size)) => Some(rt::ExecInput::Resize(terminal_size(size))),
        Some(Input::StdinClosed(_)) => Some(rt::ExecInput::StdinClosed),
    })
}

/// The wire frame for one runtime event.
fn output_frame(event: rt::ExecEvent) -> ExecOutputFrame {
    let output = match event {
        rt::ExecEvent::Stdout(data) => Output::Stdout(data.to_vec()),
        rt::ExecEvent::Stderr(data) => Output::Stderr(data.to_vec()),
        // Exit codes are 0–255 from a process; the engine's i64 is wider
        // than the wire's int32 only in theory.
        rt::ExecEvent::Exited(code) => Output::ExitCode(i32::try_from(code).unwrap_or(i32::MAX)),
    };
    ExecOutputFrame {
        output: Some(output),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;
type FrameStream = Pin<Box<dyn Stream<Item = Result<ExecOutputFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type LogsStream = ChunkStream;
    type ExecStreamStream = FrameStream;

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
        let current = self
            .exec_target(&r.namespace, &r.pod, &r.container, &r.command)
            .await?;
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

    async fn exec_stream(
        &self,
        req: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        let mut inbound = req.into_inner();
        let start = exec_start(inbound.message().await?)?;
        let current = self
            .exec_target(
                &start.namespace,
                &start.pod,
                &start.container,
                &start.command,
            )
            .await?;
        // The input ends at the client's first error (it went away) or at a
        // message out of place; either closes the command's stdin.
        let input = inbound
            .map(|m| m.and_then(runtime_input))
            .take_while(|m| futures::future::ready(m.is_ok()))
            .filter_map(|m| futures::future::ready(m.ok().flatten()))
            .boxed();
        let events = self
            .runtime
            .exec_interactive(&current.id, interactive_exec(start), input)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Box::pin(events.map(|event| {
            event
                .map(output_frame)
                .map_err(|e| Status::unavailable(e.to_string()))
        }))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(i: Input) -> ExecInput {
        ExecInput { input: Some(i) }
    }

    #[test]
    fn an_exec_stream_must_open_with_its_start() {
        let start = ExecStart {
            pod: "web".into(),
            command: vec!["sh".into()],
            ..Default::default()
        };
        assert_eq!(
            exec_start(Some(input(Input::Start(start.clone())))).unwrap(),
            start
        );
        for first in [
            None,
            Some(ExecInput { input: None }),
            Some(input(Input::Stdin(b"ls\n".to_vec()))),
        ] {
            let e = exec_start(first).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn input_messages_map_to_runtime_input_and_a_second_start_is_refused() {
        assert_eq!(
            runtime_input(input(Input::Stdin(b"x".to_vec()))).unwrap(),
            Some(rt::ExecInput::Stdin(bytes::Bytes::from_static(b"x")))
        );
        assert_eq!(
            runtime_input(input(Input::Resize(api::TerminalSize {
                rows: 37,
                cols: 91
            })))
            .unwrap(),
            Some(rt::ExecInput::Resize(rt::TerminalSize {
                rows: 37,
                cols: 91
            }))
        );
        assert_eq!(
            runtime_input(input(Input::StdinClosed(api::StdinClosed {}))).unwrap(),
            Some(rt::ExecInput::StdinClosed)
        );
        assert_eq!(runtime_input(ExecInput { input: None }).unwrap(), None);
        assert!(runtime_input(input(Input::Start(ExecStart::default()))).is_err());
    }

    #[test]
    fn terminal_sizes_beyond_u16_are_clamped() {
        let size = terminal_size(api::TerminalSize {
            rows: 70_000,
            cols: 80,
        });
        assert_eq!(
            size,
            rt::TerminalSize {
                rows: u16::MAX,
                cols: 80
            }
        );
    }

    #[test]
    fn the_start_becomes_the_runtime_exec() {
        let exec = interactive_exec(ExecStart {
            command: vec!["sh".into()],
            stdin: true,
            tty: true,
            terminal_size: Some(api::TerminalSize { rows: 24, cols: 80 }),
            ..Default::default()
        });
        assert_eq!(
            exec,
            InteractiveExec {
                command: vec!["sh".into()],
                stdin: true,
                tty: true,
                size: Some(rt::TerminalSize { rows: 24, cols: 80 }),
            }
        );
    }

    #[test]
    fn runtime_events_map_to_output_frames() {
        let frame = |e| output_frame(e).output.unwrap();
        assert_eq!(
            frame(rt::ExecEvent::Stdout(bytes::Bytes::from_static(b"out"))),
            Output::Stdout(b"out".to_vec())
        );
        assert_eq!(
            frame(rt::ExecEvent::Stderr(bytes::Bytes::from_static(b"err"))),
            Output::Stderr(b"err".to_vec())
        );
        assert_eq!(frame(rt::ExecEvent::Exited(3)), Output::ExitCode(3));
    }
}
