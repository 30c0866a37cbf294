//! The container runtime interface the agent drives (STYLE convention 7):
//! create / start / stop / remove / inspect / list / logs / exec (run to
//! completion, or interactive with stdin and a terminal), and the per-node
//! network. Docker (`docker.rs`, through bollard) implements it;
//! tests use the same trait.
//!
//! The agent keeps no container bookkeeping of its own: every container it
//! creates carries the labels below, and after a restart it rebuilds its
//! view from `list`, adopting what runs instead of starting duplicates.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;

/// Labels on every container the agent creates.
pub const LABEL_NODE: &str = "io.rafter.node";
pub const LABEL_POD_UID: &str = "io.rafter.pod.uid";
pub const LABEL_POD_NAMESPACE: &str = "io.rafter.pod.namespace";
pub const LABEL_POD_NAME: &str = "io.rafter.pod.name";
/// The pod's container name, or [`SANDBOX`] for the pod's network holder.
pub const LABEL_CONTAINER: &str = "io.rafter.container.name";
/// How many times this container of the pod was started before this one.
pub const LABEL_RESTART_COUNT: &str = "io.rafter.container.restart-count";
/// The container's spec hash: a changed spec means a new container.
pub const LABEL_SPEC_HASH: &str = "io.rafter.container.hash";

/// The container name label value of a pod's sandbox: the container that
/// holds the pod's network namespace (and so its IP) for its whole life.
pub const SANDBOX: &str = "POD";

/// The sandbox image the agent builds locally (no registry assumed).
pub const SANDBOX_IMAGE: &str = "rafter/pause:latest";

/// Runtime errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not on this machine and cannot be pulled.
    #[error(
        "image {image} is not present on this node and no registry is configured; build or load it with `docker build`/`docker load` first"
    )]
    ImageNotPresent { image: String },
    /// The container (or network) does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The engine refused or failed the call.
    #[error("container runtime: {message}")]
    Engine { message: String },
    /// The engine cannot be reached at all.
    #[error("cannot reach the container runtime: {message}")]
    Unavailable { message: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// A bind mount from the node into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// Which network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkAttachment {
    /// The node's pod network (a sandbox): the runtime assigns an IP from
    /// the network's subnet.
    PodNetwork { network: String },
    /// Shares the network namespace of another container (the pod's
    /// sandbox), as every app container of a pod does.
    Container { id: String },
    /// No network.
    None,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The runtime-level container name (unique on the node).
    pub name: String,
    pub image: String,
    /// Overrides the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Overrides the image's cmd when not empty.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub mounts: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    pub network: NetworkAttachment,
    /// Hostname (sandbox only; app containers share the sandbox's UTS).
    pub hostname: String,
    /// Resolver for the container (sandbox only).
    pub dns_servers: Vec<String>,
    pub dns_search: Vec<String>,
    /// Resource limits: CPU in millicores and memory in bytes, 0 = none.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRunState {
    /// Created, never started.
    Created,
    Running {
        started_at: SystemTime,
    },
    Exited {
        exit_code: i64,
        /// "OOMKilled", "Error" or "Completed".
        reason: String,
        started_at: Option<SystemTime>,
        finished_at: Option<SystemTime>,
    },
}

/// What the runtime reports about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerRunState,
    /// The IP on the pod network (sandboxes), if attached.
    pub ip: Option<Ipv4Addr>,
}

/// How much of a container's log to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the container stops.
    pub follow: bool,
    /// Only the last N lines (None = all).
    pub tail: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
}

/// The result of a non-interactive exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The size of a terminal in character cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

/// What an interactive exec runs and how it is attached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InteractiveExec {
    pub command: Vec<String>,
    /// Attach the command's stdin to the input stream's [`ExecInput::Stdin`].
    pub stdin: bool,
    /// Run the command on a pseudo-terminal (stderr then arrives merged
    /// into stdout).
    pub tty: bool,
    /// The terminal's size at start (with `tty`).
    pub size: Option<TerminalSize>,
}

/// Input to a running interactive exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(bytes::Bytes),
    Resize(TerminalSize),
    /// Close the command's stdin (it reads EOF). The end of the input
    /// stream does the same.
    StdinClosed,
}

/// Output of a running interactive exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(bytes::Bytes),
    Stderr(bytes::Bytes),
    /// The command exited: always the stream's last item.
    Exited(i64),
}

/// A container runtime on one node.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    /// "docker://28.2.2": shown as the node's containerRuntimeVersion.
    async fn version(&self) -> Result<String>;

    /// Makes sure the node's pod network exists with `subnet` (the node's
    /// podCIDR) and `gateway`; an existing network with another subnet is
    /// an error naming both.
    async fn ensure_network(
        &self,
        name: &str,
        subnet: ipnet::Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<()>;

    /// Whether `image` is on this node.
    async fn image_present(&self, image: &str) -> Result<bool>;

    /// Makes sure the sandbox image ([`SANDBOX_IMAGE`]) exists, building it
    /// locally when missing.
    async fn ensure_sandbox_image(&self) -> Result<()>;

    /// Creates (does not start) a container; returns its id.
    async fn create(&self, config: &ContainerConfig) -> Result<String>;

    async fn start(&self, id: &str) -> Result<()>;

    /// SIGTERM, then SIGKILL after `grace`. Stopping a stopped container is
    /// not an error.
    async fn stop(&self, id: &str, grace: Duration) -> Result<()>;

    /// Removes a container (force: stops it first). Removing a missing one
    /// is not an error.
    async fn remove(&self, id: &str) -> Result<()>;

    async fn inspect(&self, id: &str) -> Result<ContainerInfo>;

    /// Every container (running or not) carrying all of `labels`.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>>;

    /// The container's output (stdout and stderr interleaved).
    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes>>>;

    /// Runs `command` in the running container and waits for it, with
    /// `timeout` (exec probes and `rafter exec`).
    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput>;

    /// Starts `exec` in the running container and returns its output as it
    /// comes, ending with [`ExecEvent::Exited`]; `input` feeds its stdin and
    /// terminal (`rafter exec -i/-t`). The command is started when this
    /// returns. Dropping the output detaches from it (its stdin closes).
    ///
    /// Runtimes without terminals or attachable processes keep this default,
    /// which refuses.
    async fn exec_interactive(
        &self,
        id: &str,
        exec: InteractiveExec,
        input: BoxStream<'static, ExecInput>,
    ) -> Result<BoxStream<'static, Result<ExecEvent>>> {
        let _ = (id, exec, input);
        Err(RuntimeError::Engine {
            message: "interactive exec is not supported by this runtime".into(),
        })
    }
}
