//! Deployments and ReplicaSets on real 3-master clusters with simulated
//! nodes (`rafter sim nodes`) and the leader's scheduler and controllers:
//! scaling within node capacity, a rolling update that never drops below
//! the replica count in ready pods, rollout history and undo, and a leader
//! killed mid-rollout.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Cluster;
use futures::StreamExt;
use rafter_client::{Client, WatchEvent};
use rafter_controllers::replicaset::is_ready;
use rafter_proto::api;
use rafter_proto::object::Object;

/// Simulated nodes, stopped when dropped.
struct Sim(Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `count` simulated nodes that take at most `max_pods` pods each.
fn sim_nodes(cluster: &Cluster, count: usize, max_pods: usize) -> Sim {
    let log = std::fs::File::create(cluster.dir.path().join("sim.log")).expect("sim log");
    let child = cluster
        .cli_command(&[
            "sim",
            "nodes",
            "--count",
            &count.to_string(),
            "--max-pods",
            &max_pods.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn rafter sim nodes");
    Sim(child)
}

/// Polls `check` every 100 ms until it returns Some, for at most `limit`.
async fn wait_for<T, F, Fut>(cluster: &Cluster, what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pods(client: &Client, selector: &str) -> Vec<api::Pod> {
    client
        .list::<api::Pod>("default", selector, "")
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn image(p: &api::Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.image.clone())
        .unwrap_or_default()
}

fn node(p: &api::Pod) -> String {
    p.spec
        .as_ref()
        .map(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// A deployment `name` (label app=NAME) of `replicas` pods running
/// `image`, RollingUpdate with the given surge and unavailability.
fn deployment(
    name: &str,
    replicas: i32,
    image: &str,
    surge: &str,
    unavailable: &str,
) -> api::Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    let mut d = api::Deployment {
        spec: Some(api::DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(api::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(api::PodTemplateSpec {
                metadata: Some(api::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(api::PodSpec {
                    containers: vec![api::Container {
                        name: name.into(),
                        image: image.into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(api::DeploymentStrategy {
                r#type: "RollingUpdate".into(),
                rolling_update: Some(api::RollingUpdateDeployment {
                    max_surge: surge.into(),
                    max_unavailable: unavailable.into(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = d.metadata_mut();
    m.name = name.into();
    m.namespace = "default".into();
    d
}

/// Waits until deployment `name` reports `replicas` updated, ready and
/// available pods and exactly that many pods exist, all running `image`
/// and ready.
async fn wait_rolled_out(
    cluster: &Cluster,
    client: &Client,
    name: &str,
    replicas: usize,
    image_want: &str,
) {
    let selector = format!("app={name}");
    let selector = selector.as_str();
    wait_for(
        cluster,
        &format!("{name} rolled out to {image_want}"),
        Duration::from_secs(60),
        || async move {
            let d = client
                .get_object::<api::Deployment>("default", name)
                .await
                .ok()?;
            let s = d.status.clone()?;
            let r = replicas as i32;
            let status_done = s.observed_generation >= d.metadata().generation
                && s.replicas == r
                && s.updated_replicas == r
                && s.available_replicas == r;
            let ps = pods(client, selector).await;
            let pods_done =
                ps.len() == replicas && ps.iter().all(|p| is_ready(p) && image(p) == image_want);
            (status_done && pods_done).then_some(())
        },
    )
    .await;
}

/// Follows every pod of `selector` from now on and records the fewest
/// ready pods seen at any revision, the most pods at once, and every node
/// each pod was bound to.
struct PodWatch {
    min_ready: Arc<Mutex<usize>>,
    bindings: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    async fn start(client: &Client, selector: &str) -> PodWatch {
        let list = client
            .list::<api::Pod>("default", selector, "")
            .await
            .expect("list pods");
        let mut current: HashMap<String, api::Pod> = list
            .items
            .into_iter()
            .map(|p| (p.metadata().uid.clone(), p))
            .collect();
        let ready = |c: &HashMap<String, api::Pod>| c.values().filter(|p| is_ready(p)).count();
        let min_ready = Arc::new(Mutex::new(ready(&current)));
        let bindings: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
        let mut stream =
            client.watch_objects::<api::Pod>("default", selector, "", &list.resource_version);
        let (m, b) = (min_ready.clone(), bindings.clone());
        let task = tokio::spawn(async move {
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => {
                        let n = node(&p);
                        if !n.is_empty() {
                            b.lock()
                                .unwrap()
                                .entry(p.metadata().uid.clone())
                                .or_default()
                                .insert(n);
                        }
                        current.insert(p.metadata().uid.clone(), p);
                    }
                    Ok(WatchEvent::Deleted(p)) => {
                        current.remove(&p.metadata().uid);
                    }
                    Ok(WatchEvent::Bookmark(_)) => continue,
                    Err(e) => panic!("pod watch failed: {e}"),
                }
                let r = ready(&current);
                let mut min = m.lock().unwrap();
                *min = (*min).min(r);
            }
        });
        PodWatch {
            min_ready,
            bindings,
            task,
        }
    }

    fn min_ready(&self) -> usize {
        *self.min_ready.lock().unwrap()
    }

    /// Pods seen bound to more than one node.
    fn bound_twice(&self) -> Vec<String> {
        self.bindings
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, nodes)| nodes.len() > 1)
            .map(|(uid, nodes)| format!("{uid}: {nodes:?}"))
            .collect()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_scales_within_node_capacity_and_extra_pods_stay_pending() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let client = &client;
    // 5 nodes of 8 pods: room for 40.
    let _sim = sim_nodes(&cluster, 5, 8);
    let (ok, out, err) = cluster.cli(&[
        "create",
        "deployment",
        "web",
        "--image=demo/web:v1",
        "--replicas=20",
    ]);
    assert!(ok, "{out}{err}");
    wait_rolled_out(&cluster, client, "web", 20, "demo/web:v1").await;
    let ps = pods(client, "app=web").await;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in &ps {
        *per_node.entry(node(p)).or_default() += 1;
        let owner = p.metadata().owner_references.first().expect("owned");
        assert_eq!(owner.kind, "ReplicaSet");
        assert!(owner.name.starts_with("web-"), "{}", owner.name);
        assert!(p.metadata().name.starts_with(&format!("{}-", owner.name)));
    }
    assert!(
        per_node.len() >= 3,
        "20 pods spread over the nodes: {per_node:?}"
    );
    assert!(per_node.values().all(|n| *n <= 8), "{per_node:?}");

    let (ok, out, err) = cluster.cli(&["scale", "deployment", "web", "--replicas=5"]);
    assert!(ok, "{out}{err}");
    wait_rolled_out(&cluster, client, "web", 5, "demo/web:v1").await;

    let (ok, out, err) = cluster.cli(&["scale", "deployment/web", "--replicas=50"]);
    assert!(ok, "{out}{err}");
    let (running, pending) = wait_for(
        &cluster,
        "40 pods running, 10 pending",
        Duration::from_secs(60),
        || async move {
            let ps = pods(client, "app=web").await;
            let running: Vec<_> = ps.iter().filter(|p| is_ready(p)).cloned().collect();
            let pending: Vec<_> = ps.iter().filter(|p| node(p).is_empty()).cloned().collect();
            (ps.len() == 50 && running.len() == 40 && pending.len() == 10)
                .then_some((running, pending))
        },
    )
    .await;
    assert_eq!(running.len() + pending.len(), 50);
    for p in &pending {
        let scheduled = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.r#type == "PodScheduled"));
        let reason = scheduled.map(|c| c.message.clone()).unwrap_or_default();
        assert!(
            reason.contains("0/5 nodes are available"),
            "a pending pod says why: {reason:?}"
        );
    }
    let d = wait_for(
        &cluster,
        "status of 50 with 40 available",
        Duration::from_secs(30),
        || async move {
            let d = client
                .get_object::<api::Deployment>("default", "web")
                .await
                .ok()?;
            let s = d.status.clone()?;
            (s.replicas == 50 && s.available_replicas == 40 && s.unavailable_replicas == 10)
                .then_some(d)
        },
    )
    .await;
    assert_eq!(d.status.expect("status").updated_replicas, 50);
    // The ReplicaSet did not overshoot: still exactly 50 pods.
    assert_eq!(pods(client, "app=web").await.len(), 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_update_keeps_every_replica_ready_and_undo_returns_to_v1() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let client = &client;
    let _sim = sim_nodes(&cluster, 5, 20);
    client
        .create(&deployment("web", 5, "demo/web:v1", "1", "0"))
        .await
        .expect("create deployment");
    wait_rolled_out(&cluster, client, "web", 5, "demo/web:v1").await;

    let watch = PodWatch::start(client, "app=web").await;
    let (ok, out, err) = cluster.cli(&["set", "image", "deployment/web", "web=demo/web:v2"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out, "deployment.apps/web image updated\n");
    // As with kubectl, the change-cause is annotated after the change (the
    // controller copies it onto the current ReplicaSet).
    let (ok, out, err) = cluster.cli(&[
        "annotate",
        "deployment",
        "web",
        "kubernetes.io/change-cause=image v2",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cluster.cli(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    wait_rolled_out(&cluster, client, "web", 5, "demo/web:v2").await;
    assert!(
        watch.min_ready() >= 5,
        "ready pods fell to {} during a rollout with maxUnavailable=0",
        watch.min_ready()
    );

    let (ok, out, err) = cluster.cli(&["rollout", "history", "deployment/web"]);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "deployment.apps/web");
    assert!(
        lines[1].starts_with("REVISION") && lines[1].ends_with("CHANGE-CAUSE"),
        "{out}"
    );
    assert!(
        lines[2].starts_with('1') && lines[2].ends_with("<none>"),
        "{out}"
    );
    assert!(
        lines[3].starts_with('2') && lines[3].ends_with("image v2"),
        "{out}"
    );
    let (ok, out, err) =
        cluster.cli(&["rollout", "history", "deployment", "web", "--revision", "1"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("with revision #1") && out.contains("demo/web:v1"),
        "{out}"
    );

    let (ok, out, err) = cluster.cli(&["rollout", "undo", "deployment/web"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out, "deployment.apps/web rolled back\n");
    let (ok, out, err) = cluster.cli(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(ok, "{out}{err}");
    wait_rolled_out(&cluster, client, "web", 5, "demo/web:v1").await;
    assert!(
        watch.min_ready() >= 5,
        "ready pods fell to {}",
        watch.min_ready()
    );

    // Revision 1 came back as revision 3.
    let (ok, out, err) = cluster.cli(&["rollout", "history", "deployment/web"]);
    assert!(ok, "{out}{err}");
    let revisions: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{out}");
    let d = client
        .get_object::<api::Deployment>("default", "web")
        .await
        .expect("deployment");
    assert_eq!(
        d.metadata()
            .annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_a_rollout_until_resume() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let client = &client;
    let _sim = sim_nodes(&cluster, 3, 20);
    client
        .create(&deployment("api", 3, "demo/api:v1", "1", "0"))
        .await
        .expect("create deployment");
    wait_rolled_out(&cluster, client, "api", 3, "demo/api:v1").await;
    let (ok, out, err) = cluster.cli(&["rollout", "pause", "deployment/api"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out, "deployment.apps/api paused\n");
    let (ok, _, err) = cluster.cli(&["rollout", "pause", "deployment/api"]);
    assert!(!ok && err.contains("already paused"), "{err}");
    let (ok, out, err) = cluster.cli(&["set", "image", "deployment/api", "api=demo/api:v2"]);
    assert!(ok, "{out}{err}");
    // The controller sees the paused template change (generation observed,
    // Progressing says DeploymentPaused) and makes no new ReplicaSet.
    wait_for(
        &cluster,
        "paused condition",
        Duration::from_secs(30),
        || async move {
            let d = client
                .get_object::<api::Deployment>("default", "api")
                .await
                .ok()?;
            let s = d.status.clone()?;
            let paused = s
                .conditions
                .iter()
                .any(|c| c.r#type == "Progressing" && c.reason == "DeploymentPaused");
            (paused && s.observed_generation >= d.metadata().generation).then_some(())
        },
    )
    .await;
    let rss = client
        .list::<api::ReplicaSet>("default", "app=api", "")
        .await
        .expect("list");
    assert_eq!(rss.items.len(), 1, "no rollout while paused");
    assert!(
        pods(client, "app=api")
            .await
            .iter()
            .all(|p| image(p) == "demo/api:v1")
    );
    let (ok, out, err) = cluster.cli(&["rollout", "resume", "deployment", "api"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out, "deployment.apps/api resumed\n");
    wait_rolled_out(&cluster, client, "api", 3, "demo/api:v2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_leader_finishes_a_rollout_without_extra_pods() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let client = &client;
    let _sim = sim_nodes(&cluster, 5, 20);
    client
        .create(&deployment("web", 10, "demo/web:v1", "2", "0"))
        .await
        .expect("create deployment");
    wait_rolled_out(&cluster, client, "web", 10, "demo/web:v1").await;
    let watch = PodWatch::start(client, "app=web").await;

    let (ok, out, err) = cluster.cli(&["set", "image", "deployment/web", "web=demo/web:v2"]);
    assert!(ok, "{out}{err}");
    // Mid-rollout: some v2 pods exist, some v1 pods remain.
    wait_for(
        &cluster,
        "rollout under way",
        Duration::from_secs(30),
        || async move {
            let ps = pods(client, "app=web").await;
            let v2 = ps.iter().filter(|p| image(p) == "demo/web:v2").count();
            let v1 = ps.iter().filter(|p| image(p) == "demo/web:v1").count();
            (v2 >= 2 && v1 >= 5).then_some(())
        },
    )
    .await;
    let leader = cluster.leader().await;
    cluster.kill(leader);

    wait_rolled_out(&cluster, client, "web", 10, "demo/web:v2").await;
    // Nothing left behind: the old ReplicaSet is at 0 and no stray pods.
    let rss = client
        .list::<api::ReplicaSet>("default", "app=web", "")
        .await
        .expect("list");
    let sizes: Vec<(i32, i32)> = rss
        .items
        .iter()
        .map(|rs| {
            (
                rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                rs.status.as_ref().map(|s| s.replicas).unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(sizes.iter().map(|s| s.0).sum::<i32>(), 10, "{sizes:?}");
    assert_eq!(pods(client, "app=web").await.len(), 10);
    assert!(watch.bound_twice().is_empty(), "{:?}", watch.bound_twice());
}

/// Graceful deletion seen by the ReplicaSet controller: a pod being
/// deleted no longer counts, so its replacement is made at once while the
/// old pod is still Terminating (its node has no agent to finish it). When
/// the node is declared dead, its pods are force-deleted, the terminating
/// one included: nobody else would ever remove it.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminating_pod_is_replaced_at_once_and_a_dead_node_does_not_keep_it() {
    let cluster = Cluster::start(
        1,
        &["--node-grace-period", "4s", "--pod-eviction-timeout", "4s"],
    );
    cluster.objects_ready().await;
    let client = cluster.client().await;
    let client = &client;
    // A node without an agent: it never heartbeats.
    let mut quiet = api::Node::default();
    quiet.metadata_mut().name = "quiet".into();
    client.create(&quiet).await.expect("create node");
    let rs: api::ReplicaSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "keep", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "keep"}},
            "template": {
                "metadata": {"labels": {"app": "keep"}},
                "spec": {
                    "nodeName": "quiet",
                    "containers": [{"name": "c", "image": "demo/keep:v1"}],
                },
            },
        },
    }))
    .expect("replicaset manifest");
    client.create(&rs).await.expect("create replicaset");
    let first = wait_for(&cluster, "2 pods", Duration::from_secs(10), || async move {
        let ps = pods(client, "app=keep").await;
        (ps.len() == 2).then_some(ps)
    })
    .await;
    let victim = first[0].metadata().clone();
    let marked: api::Pod = client
        .delete_object("default", &victim.name, &Default::default())
        .await
        .expect("delete pod");
    assert!(!marked.metadata().deletion_timestamp.is_empty());
    assert_eq!(marked.metadata().deletion_grace_period_seconds, Some(30));

    // Replaced at once: 2 live pods beside the terminating one.
    let uid = victim.uid.clone();
    wait_for(
        &cluster,
        "a replacement beside the terminating pod",
        Duration::from_secs(10),
        || {
            let uid = uid.clone();
            async move {
                let ps = pods(client, "app=keep").await;
                let live = ps
                    .iter()
                    .filter(|p| p.metadata().deletion_timestamp.is_empty())
                    .count();
                let terminating = ps.iter().any(|p| p.metadata().uid == uid);
                (live == 2 && terminating && ps.len() == 3).then_some(())
            }
        },
    )
    .await;
    let (ok, out, _) = cluster.cli(&["get", "pods", &victim.name]);
    assert!(ok && out.contains("Terminating"), "{out}");

    // The dead node's pods are force-deleted, the terminating one too.
    wait_for(
        &cluster,
        "the terminating pod of the dead node removed",
        Duration::from_secs(30),
        || {
            let uid = uid.clone();
            async move {
                let ps = pods(client, "app=keep").await;
                (!ps.iter().any(|p| p.metadata().uid == uid)).then_some(())
            }
        },
    )
    .await;
}
