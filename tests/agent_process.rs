//! The node agent with the plain-process runtime (`rafter agent
//! --container-runtime process`) against a real master, on a machine used
//! as if it had no Docker: a pod runs as a host process with its node's IP,
//! answers logs and exec through the master, survives a kill -9 of its
//! agent (adopted, not duplicated), and is stopped when deleted.
//!
//! Its node name and pod CIDR are its own; whatever process it leaves
//! behind (a failed run) is killed on the way out.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::agent::Agent;
use common::{Cluster, wait_for};
use rafter_client::Client;
use rafter_nodeagent::process::ProcessRuntime;
use rafter_nodeagent::runtime::{self as rt, ContainerRunState, ContainerRuntime};
use rafter_proto::api;

const NODE: &str = "proc-node-1";

/// The pod of docs/AGENT.md's example, as a manifest.
const POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: demo}
spec:
  containers:
  - {name: main, image: demo, command: [sh, -c, "echo started; exec sleep 1000"]}
"#;

/// Kills, on the way out, the process group of every container under the
/// runtime's root that still runs (a test that failed half-way).
struct KillLeftovers(PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("containers")) else {
            return;
        };
        for entry in entries.flatten() {
            let Some(started) = std::fs::read(entry.path().join("started.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            else {
                continue;
            };
            let pid = started["pid"].as_u64().unwrap_or(0);
            // Only the recorded process, not whoever has its pid now.
            if pid != 0 && start_ticks(pid) == started["start_ticks"].as_u64() {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// Field `n` (1-based, as proc(5) counts) of /proc/<pid>/stat.
fn stat_field(pid: u64, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(n - 3).map(str::to_string)
}

fn start_ticks(pid: u64) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// The live processes running `sleep 1000` in process group `pgid`.
fn sleepers_in_group(pgid: u32) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00")
                && stat_field(*pid, 5) == Some(pgid.to_string())
                && stat_field(*pid, 3).is_some_and(|s| s != "Z")
        })
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    stat_field(u64::from(pid), 3).is_some_and(|s| s != "Z")
}

async fn lease_renewed(client: &Client) -> String {
    client
        .get_object::<api::Lease>("rafter-node-lease", NODE)
        .await
        .ok()
        .and_then(|l| l.spec)
        .map(|s| s.renew_time)
        .unwrap_or_default()
}

/// The node's containers by container name (the sandbox is `POD`), with
/// whether each runs.
async fn containers(runtime: &ProcessRuntime) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = runtime
        .list(&[(rt::LABEL_NODE, NODE)])
        .await
        .expect("list")
        .into_iter()
        .map(|c| {
            let name = c
                .labels
                .get(rt::LABEL_CONTAINER)
                .cloned()
                .unwrap_or_default();
            (
                name,
                c.id,
                matches!(c.state, ContainerRunState::Running { .. }),
            )
        })
        .collect();
    out.sort();
    out
}

fn image_dir(root: &Path) -> PathBuf {
    root.join("images").join("demo").join("latest")
}

/// The plain-process runtime end to end: a pod with the node's IP, logs
/// and exec through the master, adoption after kill -9 of the agent (the
/// same process, not a second one), and deletion stopping the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_as_a_host_process_and_outlives_a_killed_agent() {
    let cluster = Cluster::start(1, &["--pod-cidr", "10.207.0.0/16"]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let (ok, token, err) = cluster.cli(&["token", "create", "--ttl", "1h"]);
    assert!(ok, "token create: {err}");

    let data_dir = cluster.dir.path().join(format!("agent-{NODE}"));
    let root = data_dir.join("process-runtime");
    let _leftovers = KillLeftovers(root.clone());
    std::fs::create_dir_all(image_dir(&root)).expect("the image directory");
    let mut agent = Agent::new(&cluster, NODE).with_args(&[
        "--container-runtime",
        "process",
        "--no-service-proxy",
    ]);
    agent.start(&cluster, Some(token.trim()));

    let node_ip = wait_for("the node Ready", Duration::from_secs(60), || async {
        let node = client.get_object::<api::Node>("", NODE).await.ok()?;
        let status = node.status?;
        status
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
            .then(|| {
                status
                    .addresses
                    .iter()
                    .find(|a| a.r#type == "InternalIP")
                    .map(|a| a.address.clone())
            })
            .flatten()
    })
    .await;
    let node = client.get_object::<api::Node>("", NODE).await.unwrap();
    let version = node.status.unwrap().node_info.unwrap_or_default();
    assert!(
        version.container_runtime_version.starts_with("process://"),
        "{version:?}"
    );

    // The pod of the docs, scheduled onto the only node.
    let mut apply = cluster
        .cli_command(&["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rafter apply");
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(POD.as_bytes())
        .unwrap();
    let out = apply.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = wait_for(
        "the pod Running and Ready",
        Duration::from_secs(60),
        || async {
            let pod = client
                .get_object::<api::Pod>("default", "demo")
                .await
                .ok()?;
            let status = pod.status.clone()?;
            (status.phase == "Running"
                && status
                    .conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True"))
            .then_some(pod)
        },
    )
    .await;
    let status = pod.status.clone().unwrap();
    assert_eq!(
        status.pod_ip, node_ip,
        "host network: the pod's IP is the node's"
    );
    assert_eq!(status.host_ip, node_ip);
    let (ok, wide, err) = cluster.cli(&["get", "pod", "demo", "-o", "wide"]);
    assert!(ok, "{err}");
    assert!(
        wide.contains("Running") && wide.contains(&node_ip) && wide.contains(NODE),
        "{wide}"
    );

    let logs = wait_for("the pod's output", Duration::from_secs(20), || async {
        let (ok, out, _) = cluster.cli(&["logs", "demo"]);
        (ok && out.contains("started")).then_some(out)
    })
    .await;
    assert_eq!(logs.trim(), "started");
    let (ok, out, err) = cluster.cli(&["exec", "demo", "--", "echo", "ok"]);
    assert!(ok, "exec: {err}");
    assert_eq!(out.trim(), "ok");

    // What runs: the sandbox record and one process group with one sleep.
    let ip: std::net::Ipv4Addr = node_ip.parse().expect("IPv4 node address");
    let runtime = ProcessRuntime::new(&root, ip).expect("the runtime's state");
    let before = containers(&runtime).await;
    assert_eq!(
        before
            .iter()
            .map(|c| (c.0.as_str(), c.2))
            .collect::<Vec<_>>(),
        vec![("POD", true), ("main", true)],
        "{before:?}"
    );
    let main_id = before[1].1.clone();
    let pid = runtime.pid(&main_id).expect("main runs");
    assert_eq!(sleepers_in_group(pid).len(), 1);

    // kill -9 the agent: the process runs on; the restarted agent (no
    // token: its saved credential) adopts it instead of starting another.
    agent.kill();
    assert!(pid_alive(pid), "the process outlives its agent");
    let renewed = lease_renewed(&client).await;
    agent.start(&cluster, None);
    wait_for("the agent back", Duration::from_secs(30), || async {
        (lease_renewed(&client).await != renewed).then_some(())
    })
    .await;
    // A few of its sync rounds (one a second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(containers(&runtime).await, before, "adopted, nothing new");
    assert_eq!(runtime.pid(&main_id), Some(pid), "the same process");
    assert_eq!(sleepers_in_group(pid).len(), 1, "not duplicated");
    let pod = client
        .get_object::<api::Pod>("default", "demo")
        .await
        .unwrap();
    let restarts: i32 = pod
        .status
        .unwrap()
        .container_statuses
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0);

    // Deleted: SIGTERM reaches the sleep, the process and the records go.
    let (ok, out, err) = cluster.cli(&["delete", "pod", "demo"]);
    assert!(ok, "delete: {out}{err}");
    assert!(
        client
            .get_object::<api::Pod>("default", "demo")
            .await
            .is_err()
    );
    wait_for("the process gone", Duration::from_secs(20), || async {
        (!pid_alive(pid) && sleepers_in_group(pid).is_empty()).then_some(())
    })
    .await;
    wait_for(
        "the containers removed",
        Duration::from_secs(20),
        || async { containers(&runtime).await.is_empty().then_some(()) },
    )
    .await;
    assert!(image_dir(&root).is_dir(), "the image stays");
}
