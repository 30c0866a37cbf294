//! A cluster of real `rafter server` processes in a run directory, that the
//! nemesis can kill, restart, pause, resume and (with network namespaces)
//! partition.
//!
//! Networking: on loopback every master listens on its own 127.0.0.1 port;
//! with [`crate::netns`] every master runs in its own network namespace
//! (`ip netns exec`) and listens on its own address, port 7001.
//!
//! Each node keeps its data directory across restarts (so a restart after
//! kill -9 recovers from disk, as after power loss) and appends its output
//! to `<name>.log` in the run directory. A node removed from the group by
//! the membership nemesis is the exception: its directory is wiped and it
//! comes back with `--join`, as a new member.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rafter_client::{Client, ClientOptions};
use rand::Rng;

use crate::history::Masters;
use crate::netns::{NetConfig, NetError, Netns};

/// Failures starting or controlling the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `rafter` binary is not where it was looked for.
    #[error(
        "rafter binary not found at {0}: build it with `cargo build --workspace` or pass --rafter-bin / RAFTER_BIN"
    )]
    MissingBinary(PathBuf),
    /// A process could not be started.
    #[error("cannot start {name}")]
    Spawn {
        /// The node.
        name: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file in the run directory could not be created.
    #[error("cannot create {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// `kill` could not signal a node.
    #[error("cannot send {signal} to {name}")]
    Signal {
        /// The node.
        name: String,
        /// The signal, e.g. `-STOP`.
        signal: String,
    },
    /// The client could not be built.
    #[error("cannot build a client")]
    Client(#[source] rafter_client::Error),
    /// No single leader that all running nodes agree on within the bound.
    #[error("no agreed leader within {0:?}")]
    NoLeader(Duration),
    /// Setting up or changing the network namespaces failed.
    #[error("network namespaces")]
    Net(#[from] NetError),
    /// A partition was asked for on loopback.
    #[error("partitions need network namespaces (--net netns)")]
    NoNetwork,
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The `rafter` binary.
    pub rafter_bin: PathBuf,
    /// Number of masters.
    pub nodes: usize,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    /// Extra flags for every `rafter server`.
    pub server_args: Vec<String>,
    /// Network namespaces to run the masters in; `None` for loopback.
    pub net: Option<NetConfig>,
}

/// One master process.
#[derive(Debug)]
pub struct Node {
    /// Its name, `n1`...
    pub name: String,
    /// host:port it serves on.
    pub addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Removed from the group once and wiped: (re)starts with `--join`
    /// instead of `--initial-cluster`.
    joins: bool,
}

impl Node {
    /// Whether its process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is stopped with SIGSTOP.
    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

/// The running cluster; dropping it kills every process.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    initial_cluster: String,
    /// The masters, in name order.
    pub nodes: Vec<Node>,
    /// The namespaces; declared last so that it is dropped (torn down) after
    /// `Drop::drop` has killed the processes.
    net: Option<Netns>,
}

/// A port free right now, picked at random below Linux's ephemeral range
/// (32768–60999): `bind(0)` would hand out ephemeral ports that outgoing
/// connections also take, and a restart could then find its port taken.
fn free_port(taken: &[u16]) -> u16 {
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(20_000..32_000);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `config.nodes` masters forming a new cluster.
    pub fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        if !config.rafter_bin.is_file() {
            return Err(ClusterError::MissingBinary(config.rafter_bin.clone()));
        }
        std::fs::create_dir_all(&config.dir).map_err(|source| ClusterError::Io {
            path: config.dir.clone(),
            source,
        })?;
        let net = match &config.net {
            Some(c) => Some(Netns::setup(c.clone(), config.nodes)?),
            None => None,
        };
        let addrs: Vec<String> = match &net {
            Some(net) => (0..config.nodes)
                .map(|i| format!("{}:7001", net.config().node_ip(i)))
                .collect(),
            None => {
                let mut ports = Vec::new();
                for _ in 0..config.nodes {
                    let p = free_port(&ports);
                    ports.push(p);
                }
                ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
            }
        };
        let nodes: Vec<Node> = addrs
            .into_iter()
            .enumerate()
            .map(|(i, addr)| {
                let name = format!("n{}", i + 1);
                Node {
                    addr,
                    data_dir: config.dir.join(&name),
                    log: config.dir.join(format!("{name}.log")),
                    name,
                    child: None,
                    paused: false,
                    joins: false,
                }
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            config,
            initial_cluster,
            nodes,
            net,
        };
        for i in 0..cluster.nodes.len() {
            cluster.restart(i)?;
        }
        Ok(cluster)
    }

    /// Every master's address.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Every master's name and address.
    pub fn names_and_endpoints(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.addr.clone()))
            .collect()
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Starts node `i` if it is not running.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        let seeds = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.addr.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|source| ClusterError::Io {
                path: node.log.clone(),
                source,
            })?;
        let spawn_err = |source| ClusterError::Spawn {
            name: node.name.clone(),
            source,
        };
        let stderr = log.try_clone().map_err(spawn_err)?;
        // `ip netns exec` execs the program, so the child's pid is the
        // master's and signals reach it directly.
        let mut command = match &self.net {
            Some(net) => {
                let prefix = net.exec_prefix(i);
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(&self.config.rafter_bin);
                c
            }
            None => Command::new(&self.config.rafter_bin),
        };
        let token_file = node
            .data_dir
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("admin-token");
        if !token_file.exists() {
            std::fs::write(&token_file, TOKEN).map_err(|source| ClusterError::Io {
                path: token_file.clone(),
                source,
            })?;
        }
        command
            .args(["server", "--name", &node.name, "--listen", &node.addr])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--token-file")
            .arg(&token_file);
        if node.joins {
            command.args(["--join", &seeds]);
        } else {
            command.args(["--initial-cluster", &self.initial_cluster]);
        }
        let child = command
            .args(&self.config.server_args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                name: node.name.clone(),
                source,
            })?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// kill -9 of node `i` (resumed first if paused, so it dies at once).
    pub fn kill(&mut self, i: usize) {
        if self.nodes[i].paused {
            let _ = self.resume(i);
        }
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Node `i` was removed from the group: kill it, delete its data
    /// directory, and from now on start it with `--join` (a removed master
    /// may only come back as a new, empty member).
    pub fn wipe_removed(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i);
        let node = &mut self.nodes[i];
        match std::fs::remove_dir_all(&node.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ClusterError::Io {
                    path: node.data_dir.clone(),
                    source,
                });
            }
        }
        node.joins = true;
        Ok(())
    }

    /// SIGSTOP to node `i`.
    pub fn pause(&mut self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, "-STOP")?;
        self.nodes[i].paused = true;
        Ok(())
    }

    /// SIGCONT to node `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, "-CONT")?;
        self.nodes[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), ClusterError> {
        let node = &self.nodes[i];
        let err = || ClusterError::Signal {
            name: node.name.clone(),
            signal: signal.into(),
        };
        let pid = node.child.as_ref().ok_or_else(err)?.id();
        // `kill(1)` rather than libc: the workspace forbids unsafe code.
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .map_err(|_| err())?;
        if status.success() { Ok(()) } else { Err(err()) }
    }

    /// Whether the masters run in network namespaces (so partitions work).
    pub fn has_network(&self) -> bool {
        self.net.is_some()
    }

    /// The network namespaces' settings, if the masters run in them.
    pub fn net_config(&self) -> Option<NetConfig> {
        self.net.as_ref().map(|n| n.config().clone())
    }

    /// Steers new connections between masters through proxies on the host:
    /// `(from, to, host_port)`; see [`Netns::redirect`].
    pub fn redirect(&mut self, links: &[(usize, usize, u16)]) -> Result<(), ClusterError> {
        let net = self.net.as_mut().ok_or(ClusterError::NoNetwork)?;
        Ok(net.redirect(links, 7001)?)
    }

    /// Cuts the links between the nodes of each pair (indices), both ways.
    pub fn cut(&mut self, links: &[(usize, usize)]) -> Result<(), ClusterError> {
        let net = self.net.as_mut().ok_or(ClusterError::NoNetwork)?;
        Ok(net.cut(links)?)
    }

    /// Restores every cut link.
    pub fn heal_network(&mut self) -> Result<(), ClusterError> {
        if let Some(net) = self.net.as_mut() {
            net.heal()?;
        }
        Ok(())
    }

    /// Heals the network, resumes paused nodes and restarts dead ones.
    pub fn heal(&mut self) -> Result<(), ClusterError> {
        self.heal_network()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i)?;
            }
            if self.nodes[i].child.is_none() {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    /// Kills every process.
    pub fn shutdown(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The admin token of the clusters the suite starts (they are local and
/// short-lived; the token only has to be the same on every master).
pub const TOKEN: &str = "jepsen-admin-token";

/// A client with short timeouts, so that an operation against a dead or
/// paused master turns into `info` within `op_timeout` rather than minutes.
pub async fn client(endpoints: &[String], op_timeout: Duration) -> Result<Client, ClusterError> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(1).min(op_timeout),
        overall_timeout: op_timeout,
        connect_timeout: Duration::from_millis(500),
        token: Some(TOKEN.into()),
        ..ClientOptions::default()
    };
    Client::connect_with_options(endpoints, options)
        .await
        .map_err(ClusterError::Client)
}

/// The masters `(name, address)` with their member ids, asked of each, to
/// name in the history the master that answered an operation. Every master
/// must answer (they all do once a leader has been agreed on).
pub async fn masters(client: &Client, nodes: &[(String, String)]) -> Result<Masters, ClusterError> {
    let mut masters = Masters::default();
    for (name, addr) in nodes {
        let s = client.status_of(addr).await.map_err(ClusterError::Client)?;
        masters.add(name, addr, s.member_id);
    }
    Ok(masters)
}

/// The index of the leader, if the running, unpaused nodes among `nodes`
/// (index, address) all name the same one and it is among them.
pub async fn leader(client: &Client, nodes: &[(usize, String)]) -> Option<usize> {
    let mut leader_ids = Vec::new();
    let mut own = Vec::new();
    for (i, addr) in nodes {
        let s = client.status_of(addr).await.ok()?;
        leader_ids.push(s.leader_id);
        own.push((*i, s.member_id));
    }
    let first = *leader_ids.first()?;
    if first == 0 || leader_ids.iter().any(|l| *l != first) {
        return None;
    }
    own.into_iter().find(|(_, id)| *id == first).map(|(i, _)| i)
}

/// Waits until every node in `nodes` agrees on a leader among them; returns
/// its index.
pub async fn wait_for_leader(
    client: &Client,
    nodes: &[(usize, String)],
    bound: Duration,
) -> Result<usize, ClusterError> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(l) = leader(client, nodes).await {
            return Ok(l);
        }
        if Instant::now() > deadline {
            return Err(ClusterError::NoLeader(bound));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
