//! The cluster-infrastructure controllers against real 3-master clusters
//! with simulated nodes (`rafter sim nodes`): Service cluster IPs and
//! Endpoints, node lifecycle (a silent node goes NotReady and loses its
//! pods; a master failover alone marks none), node IPAM, namespace
//! deletion, cascading deletes, and cordon/uncordon/drain from the CLI.
//!
//! Pods are created already bound (spec.nodeName set) so these tests do
//! not depend on the scheduler.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Cluster, wait_for};
use rafter_client::{Client, DeleteOptions};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::time::Instant;

/// Short node timings, so the node-lifecycle tests take seconds.
const SHORT_NODE_TIMES: &[&str] = &["--node-grace-period", "2s", "--pod-eviction-timeout", "4s"];

/// `rafter sim nodes` with one node named `<prefix>-1`, heartbeating
/// every 300 ms. Killed when dropped.
struct SimNode {
    child: Child,
    name: String,
}

impl SimNode {
    fn start(cluster: &Cluster, prefix: &str) -> SimNode {
        let child = cluster
            .cli_command(&[
                "sim",
                "nodes",
                "--count",
                "1",
                "--prefix",
                prefix,
                "--heartbeat",
                "300ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rafter sim nodes");
        SimNode {
            child,
            name: format!("{prefix}-1"),
        }
    }

    /// Stops its heartbeats (kill -9).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ready_status(node: &api::Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

async fn wait_node_ready(client: &Client, name: &str) -> api::Node {
    wait_for(
        &format!("node {name} Ready"),
        Duration::from_secs(30),
        || async move {
            let n: api::Node = client.get_object("", name).await.ok()?;
            (ready_status(&n) == "True").then_some(n)
        },
    )
    .await
}

fn pod(ns: &str, name: &str, node: &str, app: &str) -> api::Pod {
    let mut p = api::Pod {
        spec: Some(api::PodSpec {
            node_name: node.into(),
            containers: vec![api::Container {
                name: "app".into(),
                image: "demo/httpd".into(),
                ports: vec![api::ContainerPort {
                    name: "http".into(),
                    container_port: 8080,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = p.metadata_mut();
    m.namespace = ns.into();
    m.name = name.into();
    m.labels.insert("app".into(), app.into());
    p
}

fn pod_ready(p: &api::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        !s.pod_ip.is_empty()
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

async fn wait_pod_ready(client: &Client, ns: &str, name: &str) -> api::Pod {
    wait_for(
        &format!("pod {ns}/{name} ready"),
        Duration::from_secs(30),
        || async move {
            let p: api::Pod = client.get_object(ns, name).await.ok()?;
            pod_ready(&p).then_some(p)
        },
    )
    .await
}

fn service(ns: &str, name: &str, app: &str, cluster_ip: &str) -> api::Service {
    let mut s = api::Service {
        spec: Some(api::ServiceSpec {
            selector: [("app".to_string(), app.to_string())].into(),
            ports: vec![api::ServicePort {
                port: 80,
                target_port: "http".into(),
                ..Default::default()
            }],
            cluster_ip: cluster_ip.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    s.metadata_mut().namespace = ns.into();
    s.metadata_mut().name = name.into();
    s
}

/// (ready pod names, not-ready pod names, ports) of an Endpoints object.
fn endpoint_pods(e: &api::Endpoints) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<i32>) {
    let name = |a: &api::EndpointAddress| a.target_ref.as_ref().unwrap().name.clone();
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for s in &e.subsets {
        ready.extend(s.addresses.iter().map(name));
        not_ready.extend(s.not_ready_addresses.iter().map(name));
        ports.extend(s.ports.iter().map(|p| p.port));
    }
    (ready, not_ready, ports)
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn wait_endpoints(
    client: &Client,
    ns: &str,
    name: &str,
    ready: &[&str],
    not_ready: &[&str],
) -> api::Endpoints {
    let (want_ready, want_not_ready) = (names(ready), names(not_ready));
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(e) = client.get_object::<api::Endpoints>(ns, name).await {
            let (r, n, _) = endpoint_pods(&e);
            if r == want_ready && n == want_not_ready {
                return e;
            }
            last = Some((r, n));
        }
        assert!(
            Instant::now() < deadline,
            "endpoints {ns}/{name}: want ready {want_ready:?}, not ready {want_not_ready:?}; last seen {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn reason(e: &rafter_client::Error) -> String {
    e.api_status().map(|s| s.reason).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_cluster_ips_and_endpoints_follow_ready_matching_pods() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = &cluster.client().await;

    // Cluster IPs: allocated from 10.96.0.0/12, a requested one honoured
    // when free, refused when taken or outside the range, freed on delete.
    let a = client
        .create(&service("default", "a", "x", ""))
        .await
        .unwrap();
    let ip_a: std::net::Ipv4Addr = a.spec.as_ref().unwrap().cluster_ip.parse().unwrap();
    assert!(
        "10.96.0.0/12"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&ip_a),
        "{ip_a}"
    );
    let b = client
        .create(&service("default", "b", "x", "10.96.0.50"))
        .await
        .unwrap();
    assert_eq!(b.spec.as_ref().unwrap().cluster_ip, "10.96.0.50");
    let e = client
        .create(&service("default", "c", "x", "10.96.0.50"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "Invalid", "{e}");
    assert!(e.to_string().contains("already allocated"), "{e}");
    let e = client
        .create(&service("default", "d", "x", "192.168.0.1"))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "Invalid", "{e}");
    assert!(e.to_string().contains("not in the valid range"), "{e}");
    assert!(e.to_string().contains("10.96.0.0/12"), "{e}");
    // Another namespace is no escape: cluster IPs are cluster-wide.
    let e = client
        .create(&service("rafter-system", "c", "x", &ip_a.to_string()))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "Invalid", "{e}");
    let headless = client
        .create(&service("default", "headless", "x", "None"))
        .await
        .unwrap();
    assert_eq!(headless.spec.as_ref().unwrap().cluster_ip, "None");
    // An update leaving clusterIP out keeps it; one changing it is refused.
    let mut a2 = a.clone();
    a2.spec.as_mut().unwrap().cluster_ip.clear();
    a2.metadata_mut()
        .labels
        .insert("tier".into(), "front".into());
    let a2 = client.update(&a2).await.unwrap();
    assert_eq!(a2.spec.as_ref().unwrap().cluster_ip, ip_a.to_string());
    let mut a3 = a2.clone();
    a3.spec.as_mut().unwrap().cluster_ip = "10.96.0.51".into();
    let e = client.update(&a3).await.unwrap_err();
    assert!(e.to_string().contains("immutable"), "{e}");
    // Deleting b frees its IP for c.
    client
        .delete_object::<api::Service>("default", "b", &DeleteOptions::default())
        .await
        .unwrap();
    let c = client
        .create(&service("default", "c", "x", "10.96.0.50"))
        .await
        .unwrap();
    assert_eq!(c.spec.as_ref().unwrap().cluster_ip, "10.96.0.50");
    let all: Vec<String> = client
        .list::<api::Service>("", "", "")
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.spec.as_ref().unwrap().cluster_ip.clone())
        .filter(|ip| ip != "None")
        .collect();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an IP handed out twice: {all:?}");

    // Endpoints: exactly the ready pods matching the selector, named port
    // resolved, as they come and go.
    let sim = SimNode::start(&cluster, "ep");
    wait_node_ready(client, &sim.name).await;
    client
        .create(&service("default", "web", "web", ""))
        .await
        .unwrap();
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        client
            .create(&pod("default", name, &sim.name, app))
            .await
            .unwrap();
    }
    let e = wait_endpoints(client, "default", "web", &["web-1", "web-2"], &[]).await;
    let (_, _, ports) = endpoint_pods(&e);
    assert_eq!(ports, BTreeSet::from([8080]), "the named port resolved");
    let pod1 = wait_pod_ready(client, "default", "web-1").await;
    let addr = e.subsets[0]
        .addresses
        .iter()
        .find(|a| a.target_ref.as_ref().unwrap().name == "web-1")
        .unwrap();
    assert_eq!(addr.ip, pod1.status.as_ref().unwrap().pod_ip);
    assert_eq!(addr.node_name, sim.name);
    // A pod on a node that runs nothing stays not ready: listed apart.
    client
        .create(&pod("default", "web-3", "nowhere", "web"))
        .await
        .unwrap();
    let mut p3: api::Pod = client.get_object("default", "web-3").await.unwrap();
    p3.status = Some(api::PodStatus {
        phase: "Running".into(),
        pod_ip: "10.244.200.3".into(),
        ..Default::default()
    });
    client.update_status(&p3).await.unwrap();
    wait_endpoints(client, "default", "web", &["web-1", "web-2"], &["web-3"]).await;
    // Relabelled out of the selector, then deleted: gone from the list.
    let mut p2: api::Pod = client.get_object("default", "web-2").await.unwrap();
    p2.metadata_mut()
        .labels
        .insert("app".into(), "other".into());
    client.update(&p2).await.unwrap();
    client
        .delete_object::<api::Pod>("default", "web-3", &DeleteOptions::default())
        .await
        .unwrap();
    wait_endpoints(client, "default", "web", &["web-1"], &[]).await;
    client
        .create(&pod("default", "web-4", &sim.name, "web"))
        .await
        .unwrap();
    wait_endpoints(client, "default", "web", &["web-1", "web-4"], &[]).await;
    // Deleted with its Service.
    client
        .delete_object::<api::Service>("default", "web", &DeleteOptions::default())
        .await
        .unwrap();
    wait_for(
        "endpoints deleted with the service",
        Duration::from_secs(30),
        || async move {
            let r = client.get_object::<api::Endpoints>("default", "web").await;
            matches!(r, Err(e) if e.is_reason("NotFound")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_not_ready_and_loses_its_pods_but_a_master_failover_alone_marks_none() {
    let mut cluster = Cluster::start(3, SHORT_NODE_TIMES);
    cluster.objects_ready().await;
    let client = &cluster.client().await;
    let live = SimNode::start(&cluster, "live");
    let mut dead = SimNode::start(&cluster, "dead");
    wait_node_ready(client, &live.name).await;
    wait_node_ready(client, &dead.name).await;
    for (name, node) in [("on-live", &live.name), ("on-dead", &dead.name)] {
        client
            .create(&pod("default", name, node, "web"))
            .await
            .unwrap();
        wait_pod_ready(client, "default", name).await;
    }
    client
        .create(&service("default", "web", "web", ""))
        .await
        .unwrap();
    wait_endpoints(client, "default", "web", &["on-dead", "on-live"], &[]).await;

    // A master failover: the new leader's clock starts over, and the nodes
    // keep heartbeating, so no node is marked NotReady. Watched for three
    // grace periods after the new leader is in place.
    let (_, mut node_events) = rafter_client::informer::start::<api::Node>(client.clone(), "", "");
    let leader = cluster.leader().await;
    cluster.kill(leader);
    cluster.leader().await;
    cluster.restart(leader);
    let watch_until = Instant::now() + Duration::from_secs(6);
    while let Ok(Some(event)) = tokio::time::timeout_at(watch_until, node_events.recv()).await {
        if let rafter_client::informer::Event::Applied(n) = event {
            assert_ne!(
                ready_status(&n),
                "Unknown",
                "node {} marked NotReady after a master failover alone",
                n.metadata().name
            );
        }
    }

    // Stop one node's heartbeats: NotReady (Ready Unknown), tainted
    // unreachable, its pod not ready at once (endpoints drop it), then
    // deleted after the eviction timeout. The other node is untouched.
    let dead_name = dead.name.clone();
    let dn = dead_name.as_str();
    dead.kill();
    let n = wait_for(
        "the silent node NotReady",
        Duration::from_secs(30),
        || async move {
            let n: api::Node = client.get_object("", dn).await.ok()?;
            (ready_status(&n) == "Unknown").then_some(n)
        },
    )
    .await;
    let ready = n
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "NodeStatusUnknown");
    assert_eq!(ready.message, "Agent stopped posting node status.");
    let (ok, out, err) = cluster.cli(&["get", "nodes"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with(&dead.name)).unwrap();
    assert!(line.contains("NotReady"), "{out}");
    wait_for(
        "the unreachable taint",
        Duration::from_secs(30),
        || async move {
            let n: api::Node = client.get_object("", dn).await.ok()?;
            n.spec
                .as_ref()?
                .taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
                .then_some(())
        },
    )
    .await;
    wait_endpoints(client, "default", "web", &["on-live"], &["on-dead"]).await;
    wait_for(
        "the silent node's pod evicted",
        Duration::from_secs(30),
        || async move {
            let r = client.get_object::<api::Pod>("default", "on-dead").await;
            matches!(r, Err(e) if e.is_reason("NotFound")).then_some(())
        },
    )
    .await;
    let events = client.list::<api::Event>("default", "", "").await.unwrap();
    assert!(
        events.items.iter().any(|e| e.reason == "NodeNotReady"
            && e.involved_object
                .as_ref()
                .is_some_and(|o| o.name == dead.name)),
        "a NodeNotReady event"
    );
    let l: api::Node = client.get_object("", &live.name).await.unwrap();
    assert_eq!(ready_status(&l), "True");
    assert!(
        client
            .get_object::<api::Pod>("default", "on-live")
            .await
            .is_ok()
    );

    // Heartbeats again: the taint goes.
    let _back = SimNode::start(&cluster, "dead");
    wait_for(
        "the taint removed",
        Duration::from_secs(30),
        || async move {
            let n: api::Node = client.get_object("", "dead-1").await.ok()?;
            let tainted = n.spec.as_ref().is_some_and(|s| {
                s.taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable")
            });
            (ready_status(&n) == "True" && !tainted).then_some(())
        },
    )
    .await;
}

fn config_map(ns: &str, name: &str, owners: &[&api::ConfigMap]) -> api::ConfigMap {
    let mut cm = api::ConfigMap::default();
    let m = cm.metadata_mut();
    m.namespace = ns.into();
    m.name = name.into();
    for o in owners {
        m.owner_references.push(api::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: o.metadata().name.clone(),
            uid: o.metadata().uid.clone(),
            controller: None,
            block_owner_deletion: Some(true),
        });
    }
    cm
}

async fn gone<K: Object>(client: &Client, ns: &str, name: &str) -> bool {
    matches!(client.get_object::<K>(ns, name).await, Err(e) if e.is_reason("NotFound"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_cascading_deletes_leave_nothing_behind() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = &cluster.client().await;
    let ten = Duration::from_secs(30);

    // Background: the owner goes at once, its dependents after it.
    let owner = client
        .create(&config_map("default", "bg", &[]))
        .await
        .unwrap();
    for d in ["bg-a", "bg-b"] {
        client
            .create(&config_map("default", d, &[&owner]))
            .await
            .unwrap();
    }
    // A dependent with a second owner that stays only loses the reference.
    let keeper = client
        .create(&config_map("default", "keeper", &[]))
        .await
        .unwrap();
    client
        .create(&config_map("default", "bg-shared", &[&owner, &keeper]))
        .await
        .unwrap();
    client
        .delete_object::<api::ConfigMap>("default", "bg", &DeleteOptions::default())
        .await
        .unwrap();
    wait_for("background dependents deleted", ten, || async move {
        (gone::<api::ConfigMap>(client, "default", "bg-a").await
            && gone::<api::ConfigMap>(client, "default", "bg-b").await)
            .then_some(())
    })
    .await;
    let shared = wait_for("the dangling reference dropped", ten, || async move {
        let cm: api::ConfigMap = client.get_object("default", "bg-shared").await.ok()?;
        (cm.metadata().owner_references.len() == 1).then_some(cm)
    })
    .await;
    assert_eq!(shared.metadata().owner_references[0].name, "keeper");

    // Foreground: the owner stays (marked) until its dependents are gone.
    let owner = client
        .create(&config_map("default", "fg", &[]))
        .await
        .unwrap();
    let child = client
        .create(&config_map("default", "fg-child", &[&owner]))
        .await
        .unwrap();
    client
        .create(&config_map("default", "fg-grandchild", &[&child]))
        .await
        .unwrap();
    let marked = client
        .delete_object::<api::ConfigMap>(
            "default",
            "fg",
            &DeleteOptions {
                propagation_policy: "Foreground".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!marked.metadata().deletion_timestamp.is_empty());
    assert!(
        marked
            .metadata()
            .finalizers
            .contains(&"foregroundDeletion".to_string())
    );
    wait_for("the foreground tree deleted", ten, || async move {
        for n in ["fg", "fg-child", "fg-grandchild"] {
            if !gone::<api::ConfigMap>(client, "default", n).await {
                return None;
            }
        }
        Some(())
    })
    .await;

    // Orphan: the owner goes, its dependents stay without the reference.
    let owner = client
        .create(&config_map("default", "or", &[]))
        .await
        .unwrap();
    client
        .create(&config_map("default", "or-a", &[&owner]))
        .await
        .unwrap();
    client
        .delete_object::<api::ConfigMap>(
            "default",
            "or",
            &DeleteOptions {
                propagation_policy: "Orphan".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for("the orphaning owner gone", ten, || async move {
        gone::<api::ConfigMap>(client, "default", "or")
            .await
            .then_some(())
    })
    .await;
    let orphan: api::ConfigMap = client.get_object("default", "or-a").await.unwrap();
    assert!(orphan.metadata().owner_references.is_empty());

    // Namespace deletion: Terminating, refuses new content, empties, goes.
    let (ok, _, err) = cluster.cli(&["create", "namespace", "doomed"]);
    assert!(ok, "{err}");
    client
        .create(&config_map("doomed", "cm-1", &[]))
        .await
        .unwrap();
    client
        .create(&service("doomed", "svc", "web", ""))
        .await
        .unwrap();
    client
        .create(&pod("doomed", "p-1", "nowhere", "web"))
        .await
        .unwrap();
    let (ok, out, err) = cluster.cli(&["delete", "namespace", "doomed"]);
    assert!(ok, "{out}{err}");
    let e = client
        .create(&config_map("doomed", "late", &[]))
        .await
        .unwrap_err();
    // Either refused as Terminating, or the namespace is already gone.
    assert!(reason(&e) == "Forbidden" || reason(&e) == "NotFound", "{e}");
    if reason(&e) == "Forbidden" {
        assert!(e.to_string().contains("being terminated"), "{e}");
    }
    wait_for("the namespace gone", ten, || async move {
        gone::<api::Namespace>(client, "", "doomed")
            .await
            .then_some(())
    })
    .await;
    assert!(
        client
            .list::<api::ConfigMap>("doomed", "", "")
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        client
            .list::<api::Service>("doomed", "", "")
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        client
            .list::<api::Pod>("doomed", "", "")
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The Service's cluster IP went with it: nothing else holds it.
    let ips = common::dump(client, &cluster.masters[0].addr).await;
    let held = ips
        .iter()
        .filter(|(k, _, _)| k.starts_with(b"/registry/clusterips/"))
        .count();
    let services = client
        .list::<api::Service>("", "", "")
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(held, services, "one allocation key per Service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_pod_cidrs_and_cordon_uncordon_drain_work_from_the_cli() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let client = &cluster.client().await;

    // Node IPAM: distinct /24s of 10.244.0.0/16; a deleted node's is reused.
    let mut cidrs = BTreeSet::new();
    for name in ["plain-1", "plain-2", "plain-3"] {
        let mut n = api::Node::default();
        n.metadata_mut().name = name.into();
        client.create(&n).await.unwrap();
    }
    for name in ["plain-1", "plain-2", "plain-3"] {
        let cidr = wait_for(
            &format!("{name}'s pod CIDR"),
            Duration::from_secs(30),
            || async move {
                let n: api::Node = client.get_object("", name).await.ok()?;
                let c = n.spec?.pod_cidr;
                (!c.is_empty()).then_some(c)
            },
        )
        .await;
        let net: ipnet::Ipv4Net = cidr.parse().unwrap();
        assert_eq!(net.prefix_len(), 24);
        assert!(
            "10.244.0.0/16"
                .parse::<ipnet::Ipv4Net>()
                .unwrap()
                .contains(&net)
        );
        assert!(cidrs.insert(cidr.clone()), "{cidr} given twice");
    }
    let n2: api::Node = client.get_object("", "plain-2").await.unwrap();
    let freed = n2.spec.unwrap().pod_cidr;
    client
        .delete_object::<api::Node>("", "plain-2", &DeleteOptions::default())
        .await
        .unwrap();
    let mut n = api::Node::default();
    n.metadata_mut().name = "plain-4".into();
    client.create(&n).await.unwrap();
    let got = wait_for(
        "plain-4's pod CIDR",
        Duration::from_secs(30),
        || async move {
            let n: api::Node = client.get_object("", "plain-4").await.ok()?;
            let c = n.spec?.pod_cidr;
            (!c.is_empty()).then_some(c)
        },
    )
    .await;
    assert_eq!(got, freed, "the deleted node's CIDR is reused");

    // cordon / uncordon.
    let sim = SimNode::start(&cluster, "dr");
    let node = wait_node_ready(client, &sim.name).await;
    let (ok, out, err) = cluster.cli(&["cordon", &sim.name]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("node/{} cordoned", sim.name));
    let (_, out, _) = cluster.cli(&["cordon", &sim.name]);
    assert_eq!(out.trim(), format!("node/{} already cordoned", sim.name));
    let n: api::Node = client.get_object("", &sim.name).await.unwrap();
    assert!(n.spec.unwrap().unschedulable);
    let (ok, out, err) = cluster.cli(&["uncordon", &sim.name]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("node/{} uncordoned", sim.name));
    let n: api::Node = client.get_object("", &sim.name).await.unwrap();
    assert!(!n.spec.unwrap().unschedulable);
    let (ok, _, err) = cluster.cli(&["cordon", "no-such-node"]);
    assert!(!ok);
    assert!(
        err.contains("NotFound") && err.contains("no-such-node"),
        "{err}"
    );

    // drain: refuses unmanaged pods without --force, then evicts and waits.
    for name in ["d-1", "d-2"] {
        client
            .create(&pod("default", name, &node.metadata().name, "d"))
            .await
            .unwrap();
        wait_pod_ready(client, "default", name).await;
    }
    client
        .create(&pod("default", "elsewhere", "plain-1", "d"))
        .await
        .unwrap();
    let (ok, _, err) = cluster.cli(&["drain", &sim.name]);
    assert!(!ok);
    assert!(
        err.contains("--force") && err.contains("default/d-1"),
        "{err}"
    );
    let (ok, out, err) = cluster.cli(&["drain", &sim.name, "--force", "--timeout", "60s"]);
    assert!(ok, "{out}{err}");
    for want in [
        format!("node/{} already cordoned", sim.name),
        "evicting pod default/d-1".to_string(),
        "evicting pod default/d-2".to_string(),
        format!("node/{} drained", sim.name),
    ] {
        assert!(out.contains(&want), "{want:?} missing from:\n{out}");
    }
    assert!(gone::<api::Pod>(client, "default", "d-1").await);
    assert!(gone::<api::Pod>(client, "default", "d-2").await);
    assert!(
        client
            .get_object::<api::Pod>("default", "elsewhere")
            .await
            .is_ok()
    );
    let n: api::Node = client.get_object("", &sim.name).await.unwrap();
    assert!(
        n.spec.unwrap().unschedulable,
        "a drained node stays cordoned"
    );
}
