//! Node agents for the agent tests: `rafter agent` processes joined to a
//! test [`Cluster`], and the Docker clean-up around them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rafter_client::Client;
use rafter_nodeagent::docker::Docker;
use rafter_nodeagent::runtime::{self as rt, ContainerRuntime};
use rafter_proto::api;

use super::{Cluster, rafter_bin, wait_for};

/// This machine's Docker engine; these tests fail, loudly, without it.
pub async fn docker() -> Docker {
    Docker::connect()
        .await
        .expect("these tests need the Docker engine (is dockerd running? /var/run/docker.sock)")
}

/// Removes the containers, pod networks and proxy interfaces of `nodes`
/// (left by an earlier run, or by this one).
pub async fn clean_docker(nodes: &[&str]) {
    let d = docker().await;
    for node in nodes {
        for c in d.list(&[(rt::LABEL_NODE, node)]).await.unwrap_or_default() {
            let _ = d.remove(&c.id).await;
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("rafter-{node}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The service proxy's interface (a killed agent leaves it).
        let _ = Command::new("ip")
            .args([
                "link",
                "del",
                &rafter_nodeagent::proxy::interface_name(node),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One `rafter agent` process of a test cluster: killed on drop, its log's
/// tail printed when the test failed.
pub struct Agent {
    pub name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Flags beyond the common ones (e.g. `--container-runtime process`).
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl Agent {
    pub fn new(cluster: &Cluster, name: &str) -> Agent {
        Agent {
            name: name.into(),
            data_dir: cluster.dir.path().join(format!("agent-{name}")),
            log: cluster.dir.path().join(format!("agent-{name}.log")),
            extra_args: Vec::new(),
            child: None,
        }
    }

    /// The same agent with `args` added to its command line.
    pub fn with_args(mut self, args: &[&str]) -> Agent {
        self.extra_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn command(&self, cluster: &Cluster, token: Option<&str>) -> Command {
        let mut c = Command::new(rafter_bin());
        c.args([
            "agent",
            "--server",
            &cluster.endpoint_flag(),
            "--name",
            &self.name,
            "--data-dir",
            &self.data_dir.to_string_lossy(),
            "--heartbeat",
            "500ms",
            "--agent-port",
            "0",
        ]);
        c.args(&self.extra_args);
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        c.env("RUST_LOG", "info,rafter_nodeagent=debug");
        c
    }

    /// Starts it (with the bootstrap `token` the first time; later starts
    /// use the credential it saved), its output appended to its log.
    pub fn start(&mut self, cluster: &Cluster, token: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = self
            .command(cluster, token)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rafter agent");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The node credential it saved.
    pub fn credential(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("credential"))
            .expect("the agent saved its credential")
            .trim()
            .to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("==== last lines of agent {} ====", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

pub fn build_demo_image(cluster: &Cluster) {
    let (ok, out, err) = cluster.cli(&["image", "build-demo"]);
    assert!(ok, "rafter image build-demo failed: {out}{err}");
}

/// A bootstrap token, checked to be in kubeadm's format.
pub fn create_token(cluster: &Cluster, ttl: &str) -> String {
    let (ok, out, err) = cluster.cli(&["token", "create", "--ttl", ttl]);
    assert!(ok, "token create: {err}");
    let token = out.trim().to_string();
    assert!(
        rafter_apiserver::auth::parse_bootstrap_token(&token).is_some(),
        "not a kubeadm-style token: {token:?}"
    );
    token
}

pub fn is_ready_node(n: &api::Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The nodes `names`, once each is Ready with a podCIDR.
pub async fn wait_nodes_ready(client: &Client, names: &[&str]) -> Vec<api::Node> {
    wait_for("nodes Ready", Duration::from_secs(60), || async {
        let mut out = Vec::new();
        for n in names {
            match client.get_object::<api::Node>("", n).await {
                Ok(node)
                    if is_ready_node(&node)
                        && !node.spec.clone().unwrap_or_default().pod_cidr.is_empty() =>
                {
                    out.push(node)
                }
                _ => return None,
            }
        }
        Some(out)
    })
    .await
}

/// Joins one node `name` with a fresh bootstrap token and waits until it is
/// Ready with a podCIDR.
pub async fn join_node(cluster: &Cluster, client: &Client, name: &str) -> Agent {
    let token = create_token(cluster, "1h");
    let mut agent = Agent::new(cluster, name);
    agent.start(cluster, Some(&token));
    wait_nodes_ready(client, &[name]).await;
    agent
}
