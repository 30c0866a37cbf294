//! The node agents of `rafter bench pods`: real `rafter agent` processes
//! on this machine, one per node, and the Docker state they leave.
//!
//! The agents run as [`rafter_bench::process::Server`]s, the launcher the
//! masters use, so an error or a panic never leaves one behind (they are
//! killed when dropped). A normal end stops them with SIGTERM first, so
//! each removes what it set up on the host (the service proxy's
//! interface). Their pods' containers outlive an agent by design, so the
//! bench removes them itself, by the node label every container carries
//! (`io.rafter.node=<node>`), together with each node's pod network
//! (`rafter-<node>`) — before a run (leftovers of one that was killed)
//! and after.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rafter_bench::process::{Server, ServerSpec};
use rafter_nodeagent::agent::network_name;
use rafter_nodeagent::docker::Docker;
use rafter_nodeagent::runtime::{self as rt, ContainerRuntime};

/// How long a SIGTERM'd agent gets before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How long a pod network may keep endpoints of containers being removed.
const NETWORK_WAIT: Duration = Duration::from_secs(5);

/// The agents of one run.
pub struct Agents {
    servers: Vec<Server>,
}

impl Agents {
    /// Starts one agent per node name, joining through `endpoints` with the
    /// bootstrap token `token`; data and logs go under `dir`.
    pub fn start(
        bin: &Path,
        dir: &Path,
        nodes: &[String],
        endpoints: &[String],
        token: &str,
        max_pods: u32,
        extra_args: &[String],
    ) -> anyhow::Result<Agents> {
        let mut agents = Agents {
            servers: Vec::new(),
        };
        for node in nodes {
            let args: Vec<OsString> = [
                "agent",
                "--server",
                &endpoints.join(","),
                "--token",
                token,
                "--name",
                node,
                "--max-pods",
                &max_pods.to_string(),
                // Any free port for the masters' logs and exec calls:
                // several agents share this machine.
                "--agent-port",
                "0",
            ]
            .iter()
            .map(OsString::from)
            .chain([
                OsString::from("--data-dir"),
                dir.join(format!("agent-{node}")).into(),
            ])
            .chain(extra_args.iter().map(OsString::from))
            .collect();
            let mut server = Server::new(ServerSpec {
                name: node.clone(),
                program: bin.to_path_buf(),
                args,
                // Info: the agent logs each sandbox and container start
                // with its time, which --keep-data keeps for a closer look.
                env: vec![("RUST_LOG".into(), "info".into())],
                log: log_path(dir, node),
            });
            server
                .start()
                .with_context(|| format!("starting the agent of node {node}"))?;
            agents.servers.push(server);
        }
        Ok(agents)
    }

    /// The last `lines` lines of every agent's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let text = std::fs::read_to_string(&s.spec.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "---- agent {} ({})\n",
                s.spec.name,
                s.spec.log.display()
            ));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// SIGTERM to every agent, then SIGKILL to those still running after
    /// [`STOP_WAIT`].
    pub async fn stop(&mut self) {
        for s in &self.servers {
            if let Some(pid) = s.pid() {
                // kill(1): the workspace forbids the unsafe a kill(2) call needs.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline
            && self
                .servers
                .iter()
                .filter_map(Server::pid)
                .any(still_running)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for s in &mut self.servers {
            s.kill();
        }
    }
}

fn log_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("agent-{node}.log"))
}

/// Whether `pid` runs, i.e. exists and is not a zombie waiting to be reaped.
fn still_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // `pid (comm) S ...`: the state follows the last ')'.
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// The containers of `nodes` (any state), by the node label.
pub async fn containers_of(docker: &Docker, nodes: &[String]) -> Vec<rt::ContainerInfo> {
    let mut all = Vec::new();
    for node in nodes {
        all.extend(
            docker
                .list(&[(rt::LABEL_NODE, node.as_str())])
                .await
                .unwrap_or_default(),
        );
    }
    all
}

/// Removes every container of `nodes` and their pod networks; returns how
/// many containers there were.
pub async fn remove_docker_state(docker: &Docker, nodes: &[String]) -> usize {
    let containers = containers_of(docker, nodes).await;
    let removed = containers.len();
    // App containers first, then the sandboxes whose network namespace
    // they share, as the kubelet stops a pod.
    let is_sandbox = |c: &rt::ContainerInfo| {
        c.labels.get(rt::LABEL_CONTAINER).map(String::as_str) == Some(rt::SANDBOX)
    };
    let (sandboxes, apps): (Vec<_>, Vec<_>) = containers.into_iter().partition(is_sandbox);
    for batch in [apps, sandboxes] {
        let removals = batch.iter().map(|c| docker.remove(&c.id));
        for (c, r) in batch.iter().zip(futures::future::join_all(removals).await) {
            if let Err(e) = r {
                tracing::warn!(container = %c.name, error = %e, "container not removed");
            }
        }
    }
    // A removal an agent started is still finishing when ours returns
    // ("already in progress"), and the engine refuses to remove a network
    // with endpoints: retry for a while.
    let deadline = Instant::now() + NETWORK_WAIT;
    let mut left: Vec<String> = nodes.iter().map(|n| network_name(n)).collect();
    loop {
        let mut refused = Vec::new();
        for network in left {
            match docker.client().remove_network(&network).await {
                Ok(()) => {}
                Err(e) if e.to_string().contains("status code 404") => {}
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(%network, error = %e, "network not removed yet");
                    refused.push(network);
                }
                Err(e) if e.to_string().contains("active endpoints") => tracing::warn!(
                    %network,
                    "network not removed: the engine still counts an endpoint of a removed \
                     container (moby/moby#42119; a restart of dockerd clears it, and the next \
                     run with these node names reuses the network)"
                ),
                Err(e) => tracing::warn!(%network, error = %e, "network not removed"),
            }
        }
        if refused.is_empty() {
            return removed;
        }
        left = refused;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_missing_one_does_not() {
        assert!(still_running(std::process::id()));
        assert!(!still_running(u32::MAX));
    }
}
