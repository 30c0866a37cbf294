//! The scheduler on real clusters: 3 `rafter server` masters, whose leader
//! runs the scheduler, and simulated nodes (`rafter sim nodes`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, wait_for};
use futures::StreamExt;
use rafter_client::{Client, DeleteOptions, WatchEvent};
use rafter_proto::api;
use rafter_proto::object::Object;

/// `rafter sim nodes`, killed when dropped.
struct SimNodes(Child);

impl SimNodes {
    fn start(cluster: &Cluster, count: usize, cpu: &str, memory: &str) -> SimNodes {
        let log = std::fs::File::create(cluster.dir.path().join("sim.log")).expect("sim log");
        let child = cluster
            .cli_command(&[
                "sim",
                "nodes",
                "--count",
                &count.to_string(),
                "--cpu",
                cpu,
                "--memory",
                memory,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn rafter sim nodes");
        SimNodes(child)
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_nodes_ready(client: &Client, count: usize) {
    wait_for(
        "the simulated nodes to be Ready",
        Duration::from_secs(30),
        || async {
            let nodes = client.list::<api::Node>("", "", "").await.ok()?;
            let ready = nodes
                .items
                .iter()
                .filter(|n| rafter_scheduler::filters::node_ready(n).is_ok())
                .count();
            (ready == count).then_some(())
        },
    )
    .await;
}

fn pod(name: &str, cpu: &str) -> api::Pod {
    let mut p = api::Pod {
        spec: Some(api::PodSpec {
            containers: vec![api::Container {
                name: "app".into(),
                image: "demo/httpd".into(),
                resources: Some(api::ResourceRequirements {
                    requests: [
                        ("cpu".to_string(), cpu.to_string()),
                        ("memory".to_string(), "64Mi".to_string()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = p.metadata_mut();
    m.name = name.into();
    m.namespace = "default".into();
    p
}

async fn create_pods(client: &Client, names: &[String], cpu: &str) {
    let results = futures::future::join_all(
        names
            .iter()
            .map(|n| async move { client.create(&pod(n, cpu)).await }),
    )
    .await;
    for r in results {
        r.expect("create pod");
    }
}

fn node_of(p: &api::Pod) -> &str {
    p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("")
}

fn scheduled_condition(p: &api::Pod) -> Option<&api::Condition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "PodScheduled")
}

/// (pods per node, names of unbound pods) in the default namespace.
async fn placements(client: &Client) -> (BTreeMap<String, usize>, Vec<api::Pod>) {
    let pods = client
        .list::<api::Pod>("default", "", "")
        .await
        .expect("list pods");
    let mut per_node = BTreeMap::new();
    let mut pending = Vec::new();
    for p in pods.items {
        match node_of(&p) {
            "" => pending.push(p),
            n => *per_node.entry(n.to_string()).or_insert(0) += 1,
        }
    }
    (per_node, pending)
}

/// Whether every pod in `pending` says PodScheduled=False, Unschedulable,
/// with exactly `message`.
fn all_say(pending: &[api::Pod], message: &str) -> bool {
    pending.iter().all(|p| {
        scheduled_condition(p).is_some_and(|c| {
            c.status == "False" && c.reason == "Unschedulable" && c.message == message
        })
    })
}

async fn set_cordon(client: &Client, node: &str, cordoned: bool) {
    client
        .patch::<api::Node>(
            "",
            node,
            &serde_json::json!({"spec": {"unschedulable": cordoned}}),
            false,
        )
        .await
        .expect("cordon patch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_beyond_capacity_stay_pending_with_the_reason_and_bind_when_room_frees() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let _sims = SimNodes::start(&cluster, 5, "2", "4Gi");
    wait_nodes_ready(&client, 5).await;

    // 30 pods of 500m on 5 nodes of 2 cpu: room for 20.
    let names: Vec<String> = (0..30).map(|i| format!("web-{i}")).collect();
    create_pods(&client, &names, "500m").await;
    let message = "0/5 nodes are available: 5 Insufficient cpu.";
    let (per_node, pending) = wait_for(
        "20 pods bound, 10 unschedulable",
        Duration::from_secs(30),
        || async {
            let (per_node, pending) = placements(&client).await;
            let bound: usize = per_node.values().sum();
            (bound == 20 && pending.len() == 10 && all_say(&pending, message))
                .then_some((per_node, pending))
        },
    )
    .await;
    // Evenly spread, and no node beyond its 2 cpu (4 pods of 500m).
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![4; 5],
        "{per_node:?}"
    );

    // A FailedScheduling event tells the same story.
    let stuck = pending[0].metadata().name.clone();
    wait_for(
        "a FailedScheduling event",
        Duration::from_secs(10),
        || async {
            let events = client.list::<api::Event>("default", "", "").await.ok()?;
            events
                .items
                .iter()
                .any(|e| {
                    e.reason == "FailedScheduling"
                        && e.r#type == "Warning"
                        && e.message == message
                        && e.involved_object.as_ref().is_some_and(|o| o.name == stuck)
                })
                .then_some(())
        },
    )
    .await;

    // Delete three bound pods: three pending ones take their place.
    let pods = client.list::<api::Pod>("default", "", "").await.unwrap();
    let victims: Vec<String> = pods
        .items
        .iter()
        .filter(|p| !node_of(p).is_empty())
        .take(3)
        .map(|p| p.metadata().name.clone())
        .collect();
    for v in &victims {
        client
            .delete_object::<api::Pod>("default", v, &DeleteOptions::default())
            .await
            .expect("delete pod");
    }
    let was_pending: Vec<String> = pending.iter().map(|p| p.metadata().name.clone()).collect();
    let (per_node, still) = wait_for("3 pending pods bound", Duration::from_secs(30), || async {
        let (per_node, pending) = placements(&client).await;
        let bound: usize = per_node.values().sum();
        (bound == 20 && pending.len() == 7 && all_say(&pending, message))
            .then_some((per_node, pending))
    })
    .await;
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![4; 5],
        "{per_node:?}"
    );
    assert!(
        still
            .iter()
            .all(|p| was_pending.contains(&p.metadata().name))
    );
    // The newly bound pods got a Scheduled event.
    let newly_bound: Vec<&String> = was_pending
        .iter()
        .filter(|n| !still.iter().any(|p| p.metadata().name == **n))
        .collect();
    assert_eq!(newly_bound.len(), 3);
    wait_for("Scheduled events", Duration::from_secs(10), || async {
        let events = client.list::<api::Event>("default", "", "").await.ok()?;
        newly_bound
            .iter()
            .all(|n| {
                events.items.iter().any(|e| {
                    e.reason == "Scheduled"
                        && e.involved_object.as_ref().is_some_and(|o| o.name == **n)
                })
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordoned_nodes_hold_pods_until_uncordoned_and_a_leader_kill_binds_each_once() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let _sims = SimNodes::start(&cluster, 5, "2", "4Gi");
    wait_nodes_ready(&client, 5).await;
    let nodes: Vec<String> = (1..=5).map(|i| format!("sim-{i}")).collect();
    for n in &nodes {
        set_cordon(&client, n, true).await;
    }

    // Every binding the API ever shows, through the failover.
    let start = client.list::<api::Pod>("default", "", "").await.unwrap();
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    {
        let seen = seen.clone();
        let mut watch =
            client.watch_objects::<api::Pod>("default", "", "", &start.resource_version);
        tokio::spawn(async move {
            while let Some(Ok(ev)) = watch.next().await {
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev {
                    let node = node_of(&p).to_string();
                    if node.is_empty() {
                        continue;
                    }
                    let mut s = seen.lock().unwrap();
                    let nodes = s.entry(p.metadata().name.clone()).or_default();
                    if !nodes.contains(&node) {
                        nodes.push(node);
                    }
                }
            }
        });
    }

    // 40 pods of 250m fill the 5 nodes of 2 cpu exactly, once uncordoned.
    let names: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
    create_pods(&client, &names, "250m").await;
    let message = "0/5 nodes are available: 5 node(s) were unschedulable.";
    wait_for(
        "40 pods pending on cordoned nodes",
        Duration::from_secs(30),
        || async {
            let (per_node, pending) = placements(&client).await;
            (per_node.is_empty() && pending.len() == 40 && all_say(&pending, message)).then_some(())
        },
    )
    .await;

    // Uncordon, and kill the leader while it is binding.
    let leader = cluster.leader().await;
    futures::future::join_all(nodes.iter().map(|n| set_cordon(&client, n, false))).await;
    cluster.kill(leader);

    let per_node = wait_for(
        "all 40 pods bound after the kill",
        Duration::from_secs(60),
        || async {
            let (per_node, pending) = placements(&client).await;
            pending.is_empty().then_some(per_node)
        },
    )
    .await;
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![8; 5],
        "{per_node:?}"
    );
    // Each pod was only ever seen on one node.
    let seen = wait_for(
        "the watch to see every binding",
        Duration::from_secs(30),
        || async {
            let s = seen.lock().unwrap();
            (s.len() == 40).then(|| s.clone())
        },
    )
    .await;
    let moved: Vec<_> = seen.iter().filter(|(_, n)| n.len() != 1).collect();
    assert!(
        moved.is_empty(),
        "pods seen on more than one node: {moved:?}"
    );
}

#[test]
fn bench_scheduler_reports_throughput_and_failover() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_rafter"))
        .args([
            "bench",
            "scheduler",
            "--nodes",
            "3",
            "--pods",
            "60",
            "--failover-pods",
            "40",
            "--data-dir",
        ])
        .arg(out.path())
        .output()
        .expect("run rafter bench scheduler");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "rafter bench scheduler failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("bound   60 pods in"), "{stdout}");
    assert!(stdout.contains("scheduling resumed"), "{stdout}");
    assert!(stdout.contains("all 40 bound"), "{stdout}");
    assert!(stdout.contains("pods whose node changed: 0;"), "{stdout}");
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}
