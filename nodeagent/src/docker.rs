//! The Docker implementation of [`ContainerRuntime`], through bollard.
//!
//! Every call goes to the local engine's API (`/var/run/docker.sock`, or
//! `DOCKER_HOST`). Nothing is ever pulled: a missing image is reported as
//! [`RuntimeError::ImageNotPresent`], and the two images Rafter needs on a
//! node without a registry — the pod sandbox ([`SANDBOX_IMAGE`]) and the demo
//! web server ([`DEMO_IMAGE`]) — are built here through the engine's build
//! API from a static busybox binary taken from the node (Debian's
//! `busybox-static` package).
//!
//! Pods map onto Docker the way the kubelet's dockershim did: a sandbox
//! container attached to the node's bridge network holds the pod's network
//! namespace and IP; every app container joins it with
//! `--network container:<sandbox>`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig, Ipam,
    IpamConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use rafter_proto::age::parse_rfc3339_utc;

use crate::runtime::{
    ContainerConfig, ContainerInfo, ContainerRunState, ContainerRuntime, ExecEvent, ExecInput,
    ExecOutput, InteractiveExec, LogOptions, NetworkAttachment, Result, RuntimeError,
    SANDBOX_IMAGE, TerminalSize,
};

/// The demo image [`Docker::build_demo_image`] builds: busybox httpd on port
/// 80 answering `GET /` with the container's hostname (the pod name).
pub const DEMO_IMAGE: &str = "rafter/demo:latest";

/// Where Debian's `busybox-static` package puts its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// The label on networks the agent creates, so an operator can tell them
/// from their own.
const LABEL_NETWORK: &str = "io.rafter.network";

/// The socket bollard's local defaults use when `DOCKER_HOST` is unset.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// bollard's per-request timeout (it bounds the wait for response headers,
/// not a streamed body). `stop` may legitimately take longer: see there.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The sandbox: sleeps until SIGTERM (or SIGINT) and then exits 0 at once.
/// A bare `sleep` as PID 1 would ignore SIGTERM (PID 1 has no default
/// handlers), so every pod stop would wait out the grace period; the `trap`
/// makes the shell exit, and `sleep & wait` lets it run the trap while the
/// sleep is still going.
const SANDBOX_DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
LABEL io.rafter.image="sandbox"
ENTRYPOINT ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait; done"]
"#;

/// The demo web server. `RUN` in exec form works on `FROM scratch` with
/// Docker 20.10's legacy builder (the only builder bollard can drive without
/// a BuildKit session): it needs no `/bin/sh`, only the binary it names.
/// httpd runs as the shell's child, not as PID 1, for the same reason as in
/// the sandbox: PID 1 without a handler ignores SIGTERM, and the shell's
/// `trap` makes a stop take milliseconds instead of the grace period. `-v`
/// logs each request to stderr, which `logs` then shows.
const DEMO_DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
LABEL io.rafter.image="demo"
EXPOSE 80
ENTRYPOINT ["/bin/sh", "-c", "mkdir -p /www; hostname > /www/index.html; trap 'exit 0' TERM INT; httpd -f -v -p 80 -h /www & wait"]
"#;

/// The Docker runtime: a bollard client on the local engine.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
}

impl Docker {
    /// Connects to the local engine (`DOCKER_HOST`, else
    /// `/var/run/docker.sock`) and negotiates the API version.
    ///
    /// Negotiation is required, not a nicety: bollard 0.21 speaks API 1.53 by
    /// default and an older engine (Docker 20.10 speaks 1.41) rejects every
    /// request made with a newer version in the path.
    pub async fn connect() -> Result<Docker> {
        let target = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_SOCKET.to_string());
        let client =
            bollard::Docker::connect_with_local_defaults().map_err(|e| unavailable(&target, &e))?;
        Self::negotiate(client, &target).await
    }

    /// Connects to the engine listening on the Unix socket `path`.
    pub async fn connect_socket(path: &Path) -> Result<Docker> {
        let target = path.display().to_string();
        let client = bollard::Docker::connect_with_socket(
            &target,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unavailable(&target, &e))?;
        Self::negotiate(client, &target).await
    }

    async fn negotiate(client: bollard::Docker, target: &str) -> Result<Docker> {
        let client = client
            .negotiate_version()
            .await
            .map_err(|e| unavailable(target, &e))?;
        tracing::debug!(api = %client.client_version(), "connected to the Docker engine");
        Ok(Docker { client })
    }

    /// The bollard client, for what the trait does not cover.
    pub fn client(&self) -> &bollard::Docker {
        &self.client
    }

    /// Builds [`DEMO_IMAGE`] (always: the build cache makes a rebuild
    /// cheap), a web server whose `GET /` answers with the container's
    /// hostname and a newline.
    pub async fn build_demo_image(&self) -> Result<()> {
        self.build_busybox_image(DEMO_IMAGE, DEMO_DOCKERFILE, Path::new(BUSYBOX_PATH))
            .await
    }

    /// Builds `tag` from `dockerfile` with a context holding only the static
    /// busybox at `busybox` (as `busybox`).
    async fn build_busybox_image(&self, tag: &str, dockerfile: &str, busybox: &Path) -> Result<()> {
        let binary = read_static_busybox(busybox)?;
        let context = build_context(dockerfile, &binary).map_err(|e| RuntimeError::Engine {
            message: format!("building the context for image {tag}: {e}"),
        })?;
        // The legacy builder (version 1, bollard's default): BuildKit needs a
        // gRPC session that bollard only offers behind its `buildkit`
        // feature, and the legacy builder is all this engine needs.
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut progress =
            self.client
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream.as_deref().map(str::trim_end)
                        && !line.is_empty()
                    {
                        tracing::debug!(image = tag, "{line}");
                    }
                }
                Err(e) => {
                    return Err(engine_error(&format!("building image {tag}"), e));
                }
            }
        }
        if self.image_present(tag).await? {
            tracing::info!(image = tag, "built image");
            Ok(())
        } else {
            Err(RuntimeError::Engine {
                message: format!("building image {tag} reported success but the image is absent"),
            })
        }
    }

    async fn inspect_raw(&self, id: &str) -> Result<ContainerInspectResponse> {
        self.client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| not_found_or(&format!("container {id}"), "inspecting", e))
    }
}

#[async_trait]
impl ContainerRuntime for Docker {
    async fn version(&self) -> Result<String> {
        let version = self
            .client
            .version()
            .await
            .map_err(|e| engine_error("reading the engine version", e))?;
        Ok(format!(
            "docker://{}",
            version.version.unwrap_or_else(|| "unknown".into())
        ))
    }

    async fn ensure_network(
        &self,
        name: &str,
        subnet: ipnet::Ipv4Net,
        gateway: Ipv4Addr,
    ) -> Result<()> {
        // Inspect, create when missing, and inspect again when the create
        // lost a race with another creator (409).
        for _ in 0..2 {
            match self
                .client
                .inspect_network(name, None::<InspectNetworkOptions>)
                .await
            {
                Ok(network) => {
                    let existing: Vec<String> = network
                        .ipam
                        .and_then(|ipam| ipam.config)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|config| config.subnet)
                        .collect();
                    let matches = existing.iter().any(|s| {
                        s.parse::<ipnet::Ipv4Net>()
                            .is_ok_and(|s| s.trunc() == subnet.trunc())
                    });
                    if matches {
                        return Ok(());
                    }
                    let existing = if existing.is_empty() {
                        "no subnet".to_string()
                    } else {
                        existing.join(", ")
                    };
                    return Err(RuntimeError::Engine {
                        message: format!(
                            "network {name} exists with subnet {existing}, but this node's pod \
                             CIDR is {subnet}; remove it with `docker network rm {name}` (after \
                             removing the containers attached to it) and restart the agent"
                        ),
                    });
                }
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => return Err(engine_error(&format!("inspecting network {name}"), e)),
            }
            let request = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.trunc().to_string()),
                        gateway: Some(gateway.to_string()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                labels: Some(HashMap::from([(LABEL_NETWORK.into(), "pod".into())])),
                ..Default::default()
            };
            match self.client.create_network(request).await {
                Ok(_) => {
                    tracing::info!(network = name, %subnet, %gateway, "created the pod network");
                    return Ok(());
                }
                Err(e) if status(&e) == Some(409) => continue,
                // Most often "Pool overlaps with other one on this address
                // space": another Docker network already uses part of the
                // subnet.
                Err(e) => {
                    return Err(engine_error(
                        &format!(
                            "creating network {name} with subnet {subnet} (check `docker network \
                             ls` for a network using an overlapping subnet)"
                        ),
                        e,
                    ));
                }
            }
        }
        Err(RuntimeError::Engine {
            message: format!("network {name} keeps appearing and disappearing; retry"),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool> {
        match self.client.inspect_image(&normalise_image(image)).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine_error(&format!("inspecting image {image}"), e)),
        }
    }

    async fn ensure_sandbox_image(&self) -> Result<()> {
        if self.image_present(SANDBOX_IMAGE).await? {
            return Ok(());
        }
        self.build_busybox_image(SANDBOX_IMAGE, SANDBOX_DOCKERFILE, Path::new(BUSYBOX_PATH))
            .await
    }

    async fn create(&self, config: &ContainerConfig) -> Result<String> {
        let image = normalise_image(&config.image);
        if !self.image_present(&image).await? {
            return Err(RuntimeError::ImageNotPresent {
                image: config.image.clone(),
            });
        }
        let body = create_body(config, &image);
        let options = CreateContainerOptionsBuilder::new()
            .name(&config.name)
            .build();
        match self.client.create_container(Some(options), body).await {
            Ok(created) => {
                for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
                    tracing::warn!(container = %config.name, "{warning}");
                }
                Ok(created.id)
            }
            Err(e) if status(&e) == Some(404) && message(&e).contains("image") => {
                Err(RuntimeError::ImageNotPresent {
                    image: config.image.clone(),
                })
            }
            Err(e) => Err(engine_error(
                &format!("creating container {}", config.name),
                e,
            )),
        }
    }

    async fn start(&self, id: &str) -> Result<()> {
        // 304 (already started) is a success for bollard.
        self.client
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|e| not_found_or(&format!("container {id}"), "starting", e))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let t = i32::try_from(seconds).unwrap_or(i32::MAX);
        // The engine answers only once the container has stopped, which can
        // take the whole grace period: lengthen bollard's request timeout
        // for this call so a long grace is not cut short by the client.
        let client = if grace + Duration::from_secs(30) > REQUEST_TIMEOUT {
            self.client
                .clone()
                .with_timeout(grace + Duration::from_secs(30))
        } else {
            self.client.clone()
        };
        let options = StopContainerOptionsBuilder::new().t(t).build();
        // 304 (not running) is a success for bollard.
        client
            .stop_container(id, Some(options))
            .await
            .map_err(|e| not_found_or(&format!("container {id}"), "stopping", e))
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // Someone else is already removing it: the outcome is the same.
            Err(e) if status(&e) == Some(409) && message(&e).contains("already in progress") => {
                Ok(())
            }
            Err(e) => Err(engine_error(&format!("removing container {id}"), e)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo> {
        let raw = self.inspect_raw(id).await?;
        Ok(container_info(raw))
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerInfo>> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !labels.is_empty() {
            filters.insert(
                "label".into(),
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            );
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error("listing containers", e))?;
        // The summary's state lacks exit codes and start times: inspect each.
        let mut infos = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            match self.inspect_raw(&id).await {
                Ok(raw) => infos.push(container_info(raw)),
                // Removed between the list and the inspect.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(infos)
    }

    async fn logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        // bollard reports a missing container only as the stream's first
        // item; inspect first so that it is an error of the call.
        self.inspect_raw(id).await?;
        let tail = options
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let query = LogsOptionsBuilder::new()
            .follow(options.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(options.timestamps)
            .tail(&tail)
            .build();
        let what = format!("container {id}");
        let stream = self
            .client
            .logs(id, Some(query))
            .map_ok(|output| output.into_bytes())
            .map_err(move |e| not_found_or(&what, "reading the logs of", e));
        Ok(stream.boxed())
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let what = format!("container {id}");
        let created = self
            .client
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(command.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| not_found_or(&what, "running a command in", e))?;
        let run = async {
            let started = self
                .client
                .start_exec(&created.id, None)
                .await
                .map_err(|e| engine_error(&format!("starting a command in {what}"), e))?;
            let mut output = ExecOutput::default();
            if let StartExecResults::Attached {
                output: mut out, ..
            } = started
            {
                while let Some(item) = out.next().await {
                    match item
                        .map_err(|e| engine_error(&format!("reading exec output of {what}"), e))?
                    {
                        bollard::container::LogOutput::StdErr { message } => {
                            output.stderr.extend_from_slice(&message)
                        }
                        other => output.stdout.extend_from_slice(other.as_ref()),
                    }
                }
            }
            output.exit_code = exit_code(&self.client, &created.id, &what).await?;
            Ok(output)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            // The engine has no API to kill an exec'd process: it runs on
            // until it exits or the container stops.
            Err(_) => Err(RuntimeError::Engine {
                message: format!("exec in {what} timed out after {timeout:?}"),
            }),
        }
    }

    async fn exec_interactive(
        &self,
        id: &str,
        exec: InteractiveExec,
        input: BoxStream<'static, ExecInput>,
    ) -> Result<BoxStream<'static, Result<ExecEvent>>> {
        let what = format!("container {id}");
        let created = self
            .client
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdin: Some(exec.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(exec.tty),
                    cmd: Some(exec.command),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| not_found_or(&what, "running a command in", e))?;
        let started = self
            .client
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: exec.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| engine_error(&format!("starting a command in {what}"), e))?;
        let StartExecResults::Attached {
            output,
            input: stdin,
        } = started
        else {
            return Err(RuntimeError::Engine {
                message: format!("the engine did not attach to the command in {what}"),
            });
        };
        // The engine's exec start API takes no size (before API 1.42), so
        // the terminal starts at the engine's default and is resized at
        // once, before any input can reach the command.
        if exec.tty
            && let Some(size) = exec.size
        {
            resize(&self.client, &created.id, size, &what).await;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(attach(
            self.client.clone(),
            created.id,
            what,
            output,
            stdin,
            input,
            tx,
        ));
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|event| (event, rx))
        })
        .boxed())
    }
}

/// Waits for the exit code of exec `exec_id`. Its output ends when the
/// process closes it, which can be a moment before the engine records the
/// exit code.
async fn exit_code(client: &bollard::Docker, exec_id: &str, what: &str) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let inspect = client
            .inspect_exec(exec_id)
            .await
            .map_err(|e| engine_error(&format!("inspecting a command in {what}"), e))?;
        match (inspect.running, inspect.exit_code) {
            (Some(false), Some(code)) => return Ok(code),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(RuntimeError::Engine {
                    message: format!("the command in {what} closed its output but did not exit"),
                });
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Resizes the terminal of exec `exec_id`; a failure only costs the right
/// size, so it is logged, not returned.
async fn resize(client: &bollard::Docker, exec_id: &str, size: TerminalSize, what: &str) {
    let options = ResizeExecOptions {
        height: size.rows,
        width: size.cols,
    };
    if let Err(e) = client.resize_exec(exec_id, options).await {
        tracing::debug!(%what, error = %e, "resizing an exec's terminal failed");
    }
}

/// The attached side of an interactive exec, run as a task: forwards
/// `output` to `events` and, meanwhile, `input` to the command's stdin and
/// terminal; when the output ends, sends the exit code. Stops early (and
/// closes the command's stdin by dropping the connection) when `events`'
/// receiver is dropped.
async fn attach(
    client: bollard::Docker,
    exec_id: String,
    what: String,
    mut output: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LogOutput, BollardError>> + Send>,
    >,
    stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    input: BoxStream<'static, ExecInput>,
    events: tokio::sync::mpsc::Sender<Result<ExecEvent>>,
) {
    let feeder = tokio::spawn(feed(
        client.clone(),
        exec_id.clone(),
        what.clone(),
        input,
        stdin,
    ));
    loop {
        let item = tokio::select! {
            _ = events.closed() => {
                feeder.abort();
                return;
            }
            item = output.next() => item,
        };
        let event = match item {
            None => break,
            Some(Ok(LogOutput::StdErr { message })) => Ok(ExecEvent::Stderr(message)),
            Some(Ok(LogOutput::StdIn { .. })) => continue,
            // StdOut, or Console: a terminal's merged output.
            Some(Ok(other)) => Ok(ExecEvent::Stdout(other.into_bytes())),
            Some(Err(e)) => Err(engine_error(&format!("reading exec output of {what}"), e)),
        };
        let failed = event.is_err();
        if events.send(event).await.is_err() || failed {
            feeder.abort();
            return;
        }
    }
    feeder.abort();
    let exited = exit_code(&client, &exec_id, &what)
        .await
        .map(ExecEvent::Exited);
    let _ = events.send(exited).await;
}

/// Feeds an interactive exec's `input` to its stdin and terminal until the
/// input ends; closing stdin half-closes the attached connection, which the
/// engine turns into EOF on the command's stdin.
async fn feed(
    client: bollard::Docker,
    exec_id: String,
    what: String,
    mut input: BoxStream<'static, ExecInput>,
    mut stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
) {
    use tokio::io::AsyncWriteExt;
    let mut open = true;
    while let Some(item) = input.next().await {
        match item {
            ExecInput::Stdin(data) if open => {
                if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
                    open = false;
                }
            }
            ExecInput::Stdin(_) => {}
            ExecInput::Resize(size) => resize(&client, &exec_id, size, &what).await,
            ExecInput::StdinClosed => {
                if open {
                    let _ = stdin.shutdown().await;
                    open = false;
                }
            }
        }
    }
    if open {
        let _ = stdin.shutdown().await;
    }
}

/// The create request for `config` (`image` already normalised).
fn create_body(config: &ContainerConfig, image: &str) -> ContainerCreateBody {
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let (network_mode, shares_namespace) = match &config.network {
        NetworkAttachment::PodNetwork { network } => (network.clone(), false),
        NetworkAttachment::Container { id } => (format!("container:{id}"), true),
        NetworkAttachment::None => ("none".to_string(), false),
    };
    // A container in another's network namespace takes its hostname and
    // resolver from it: Docker rejects both options ("conflicting options").
    let (hostname, dns, dns_search) = if shares_namespace {
        (None, None, None)
    } else {
        (
            (!config.hostname.is_empty()).then(|| config.hostname.clone()),
            non_empty(&config.dns_servers),
            non_empty(&config.dns_search),
        )
    };
    let binds: Vec<String> = config
        .mounts
        .iter()
        .map(|m| {
            let mut bind = format!("{}:{}", m.host_path, m.container_path);
            if m.read_only {
                bind.push_str(":ro");
            }
            bind
        })
        .collect();
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: non_empty(&config.command),
        cmd: non_empty(&config.args),
        env: (!config.env.is_empty())
            .then(|| config.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
        labels: Some(
            config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        hostname,
        host_config: Some(HostConfig {
            network_mode: Some(network_mode),
            binds: (!binds.is_empty()).then_some(binds),
            dns,
            dns_search,
            nano_cpus: (config.cpu_millis > 0)
                .then(|| to_i64(config.cpu_millis.saturating_mul(1_000_000))),
            memory: (config.memory_bytes > 0).then(|| to_i64(config.memory_bytes)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Maps the engine's inspect answer to what the agent needs.
fn container_info(raw: ContainerInspectResponse) -> ContainerInfo {
    let config = raw.config.unwrap_or_default();
    let state = raw.state.unwrap_or_default();
    let started_at = state.started_at.as_deref().and_then(parse_docker_time);
    let finished_at = state.finished_at.as_deref().and_then(parse_docker_time);
    let run_state = match state.status {
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => ContainerRunState::Running {
            started_at: started_at.unwrap_or(SystemTime::UNIX_EPOCH),
        },
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => {
            let exit_code = state.exit_code.unwrap_or(0);
            let reason = if state.oom_killed == Some(true) {
                "OOMKilled"
            } else if exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            ContainerRunState::Exited {
                exit_code,
                reason: reason.to_string(),
                started_at,
                finished_at,
            }
        }
        Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY) | None => {
            ContainerRunState::Created
        }
    };
    // Map order is arbitrary: take the first network by name.
    let ip = raw
        .network_settings
        .and_then(|settings| settings.networks)
        .map(|networks| networks.into_iter().collect::<BTreeMap<_, _>>())
        .and_then(|networks| {
            networks
                .into_values()
                .filter_map(|endpoint| endpoint.ip_address)
                .find_map(|ip| ip.parse::<Ipv4Addr>().ok())
        });
    ContainerInfo {
        id: raw.id.unwrap_or_default(),
        name: raw
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id: raw.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: run_state,
        ip,
    }
}

/// Parses one of the engine's timestamps; its zero time
/// (`0001-01-01T00:00:00Z`, "never") is `None`.
fn parse_docker_time(s: &str) -> Option<SystemTime> {
    if s.is_empty() || s.starts_with("0001-01-01") {
        return None;
    }
    parse_rfc3339_utc(s)
}

/// Adds the `:latest` Docker assumes when a reference names no tag or
/// digest. A colon before the last `/` belongs to a registry port
/// (`localhost:5000/app`), not a tag.
pub fn normalise_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Reads the busybox at `path`, refusing a dynamically linked one: in a
/// `FROM scratch` image there is no loader or libc for it to run with.
fn read_static_busybox(path: &Path) -> Result<Vec<u8>> {
    let install = "install the static build with `apt-get install busybox-static`";
    let binary = std::fs::read(path).map_err(|e| RuntimeError::Engine {
        message: format!(
            "building the images needs a static busybox at {}: {e}; {install}",
            path.display()
        ),
    })?;
    match elf_is_static(&binary) {
        Some(true) => Ok(binary),
        Some(false) => Err(RuntimeError::Engine {
            message: format!(
                "{} is dynamically linked and cannot run in a scratch image; {install}",
                path.display()
            ),
        }),
        None => Err(RuntimeError::Engine {
            message: format!(
                "{} is not a 64-bit little-endian ELF executable; {install}",
                path.display()
            ),
        }),
    }
}

/// Whether a 64-bit little-endian ELF file has no `PT_INTERP` program
/// header, i.e. needs no dynamic loader. `None` when it is not such a file.
fn elf_is_static(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| -> Option<usize> {
        Some(usize::from(u16::from_le_bytes(
            elf.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        if p_type == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

/// A build context (an uncompressed tar) holding `Dockerfile` and `busybox`.
fn build_context(dockerfile: &str, busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("busybox", busybox, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        archive.append_data(&mut header, name, data)?;
    }
    archive.into_inner()
}

/// The HTTP status of an engine error answer.
fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's message of an error answer (or the error's text).
fn message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// 404 → [`RuntimeError::NotFound`] on `what`; anything else as
/// [`engine_error`] of "`doing` `what`".
fn not_found_or(what: &str, doing: &str, e: BollardError) -> RuntimeError {
    if status(&e) == Some(404) {
        RuntimeError::NotFound {
            what: what.to_string(),
        }
    } else {
        engine_error(&format!("{doing} {what}"), e)
    }
}

/// An engine error while `context`; failures to reach the engine at all
/// become [`RuntimeError::Unavailable`].
fn engine_error(context: &str, e: BollardError) -> RuntimeError {
    match e {
        BollardError::HyperLegacyError { .. }
        | BollardError::IOError { .. }
        | BollardError::SocketNotFoundError(_) => RuntimeError::Unavailable {
            message: format!("{context}: {e}"),
        },
        _ => RuntimeError::Engine {
            message: format!("{context}: {}", message(&e)),
        },
    }
}

fn unavailable(target: &str, e: &BollardError) -> RuntimeError {
    RuntimeError::Unavailable {
        message: format!(
            "Docker engine at {target}: {e}; is the Docker engine running? (it listens on \
             /var/run/docker.sock unless DOCKER_HOST says otherwise; start it with \
             `systemctl start docker` or `dockerd`)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Mount;

    #[test]
    fn image_references_without_tag_get_latest() {
        assert_eq!(normalise_image("nginx"), "nginx:latest");
        assert_eq!(normalise_image("nginx:1.27"), "nginx:1.27");
        assert_eq!(normalise_image("rafter/pause"), "rafter/pause:latest");
        assert_eq!(
            normalise_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalise_image("localhost:5000/app:v2"),
            "localhost:5000/app:v2"
        );
        assert_eq!(
            normalise_image("app@sha256:0123456789abcdef"),
            "app@sha256:0123456789abcdef"
        );
    }

    #[test]
    fn docker_zero_time_is_none() {
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_docker_time(""), None);
        assert_eq!(
            parse_docker_time("2026-11-27T19:00:00.123456789Z"),
            parse_rfc3339_utc("2026-11-27T19:00:00.123456789Z")
        );
        assert!(parse_docker_time("2026-11-27T19:00:00.123456789Z").is_some());
    }

    fn config(network: NetworkAttachment) -> ContainerConfig {
        ContainerConfig {
            name: "c".into(),
            image: "app".into(),
            command: vec![],
            args: vec!["--port".into(), "80".into()],
            env: vec![("A".into(), "1".into())],
            working_dir: String::new(),
            mounts: vec![
                Mount {
                    host_path: "/data".into(),
                    container_path: "/d".into(),
                    read_only: true,
                },
                Mount {
                    host_path: "/tmp/x".into(),
                    container_path: "/x".into(),
                    read_only: false,
                },
            ],
            labels: BTreeMap::from([("k".into(), "v".into())]),
            network,
            hostname: "web-0".into(),
            dns_servers: vec!["10.96.0.10".into()],
            dns_search: vec!["default.svc".into()],
            cpu_millis: 250,
            memory_bytes: 64 << 20,
        }
    }

    #[test]
    fn create_body_maps_the_config() {
        let body = create_body(
            &config(NetworkAttachment::PodNetwork {
                network: "rafter-pods".into(),
            }),
            "app:latest",
        );
        assert_eq!(body.image.as_deref(), Some("app:latest"));
        assert_eq!(body.entrypoint, None, "empty command keeps the image's");
        assert_eq!(body.cmd, Some(vec!["--port".into(), "80".into()]));
        assert_eq!(body.env, Some(vec!["A=1".into()]));
        assert_eq!(body.working_dir, None);
        assert_eq!(body.hostname.as_deref(), Some("web-0"));
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("rafter-pods"));
        assert_eq!(
            host.binds,
            Some(vec!["/data:/d:ro".into(), "/tmp/x:/x".into()])
        );
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.dns, Some(vec!["10.96.0.10".into()]));
    }

    #[test]
    fn a_container_in_the_sandbox_namespace_sets_no_hostname_or_dns() {
        let body = create_body(
            &config(NetworkAttachment::Container { id: "abc".into() }),
            "app:latest",
        );
        assert_eq!(body.hostname, None);
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("container:abc"));
        assert_eq!(host.dns, None);
        assert_eq!(host.dns_search, None);
        let body = create_body(&config(NetworkAttachment::None), "app:latest");
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some("none")
        );
    }

    #[test]
    fn elf_static_detection() {
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        if let Ok(busybox) = std::fs::read(BUSYBOX_PATH) {
            // Debian's busybox-static; the dynamic `busybox` package would
            // give Some(false).
            assert!(elf_is_static(&busybox).is_some());
        }
    }

    #[test]
    fn the_build_context_is_a_tar_with_both_files() {
        let tar = build_context("FROM scratch\n", b"\x7fELF").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![("Dockerfile".into(), 0o644), ("busybox".into(), 0o755)]
        );
    }
}
