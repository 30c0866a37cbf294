//! The node agent against real masters and the real Docker engine of this
//! machine: joining with bootstrap tokens, pods running as containers with
//! IPs from their node's podCIDR, restarts with back-off, probes, config,
//! adoption after an agent restart, master failover, node loss, and what a
//! node credential may not do.
//!
//! These tests need Docker (CI runs it); without it they fail, loudly.
//! Each test uses its own node names and pod CIDR, and removes its
//! containers and networks before and after.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::agent::{
    Agent, build_demo_image, clean_docker, create_token, docker, is_ready_node, join_node,
    wait_nodes_ready,
};
use common::{Cluster, wait_for};
use rafter_client::Client;
use rafter_nodeagent::runtime::{self as rt, ContainerRuntime};
use rafter_proto::api;
use rafter_proto::object::Object;
use serde_json::json;

/// The containers of `node`, running or not: id → (pod name, container).
async fn containers_of(node: &str) -> BTreeMap<String, (String, String, bool)> {
    docker()
        .await
        .list(&[(rt::LABEL_NODE, node)])
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| {
            let running = matches!(c.state, rt::ContainerRunState::Running { .. });
            let pod = c
                .labels
                .get(rt::LABEL_POD_NAME)
                .cloned()
                .unwrap_or_default();
            let name = c
                .labels
                .get(rt::LABEL_CONTAINER)
                .cloned()
                .unwrap_or_default();
            (c.id, (pod, name, running))
        })
        .collect()
}

fn is_ready_pod(p: &api::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase == "Running"
            && s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The pods of deployment `app`, once `count` of them are Running, Ready
/// and (when given) on `nodes` only.
async fn wait_ready_pods(
    client: &Client,
    app: &str,
    count: usize,
    nodes: Option<&[&str]>,
) -> Vec<api::Pod> {
    wait_for(
        &format!("{count} ready pods of {app}"),
        Duration::from_secs(90),
        || async {
            let pods = client
                .list::<api::Pod>("default", &format!("app={app}"), "")
                .await
                .ok()?
                .items;
            let ready: Vec<api::Pod> = pods.iter().filter(|p| is_ready_pod(p)).cloned().collect();
            let placed = |p: &api::Pod| {
                let node = p.spec.clone().unwrap_or_default().node_name;
                nodes.is_none_or(|ns| ns.contains(&node.as_str()))
            };
            (ready.len() == count && pods.len() == count && ready.iter().all(placed))
                .then_some(ready)
        },
    )
    .await
}

async fn http_get(ip: &str, port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    .ok()?
    .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.trim().to_string())
}

fn restarts(p: &api::Pod) -> i32 {
    p.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

async fn lease_renewed(client: &Client, node: &str) -> String {
    client
        .get_object::<api::Lease>("rafter-node-lease", node)
        .await
        .ok()
        .and_then(|l| l.spec)
        .map(|s| s.renew_time)
        .unwrap_or_default()
}

/// Show items 1, 4 and 5 of the agent issue: a deployment runs in Docker
/// across two agents, its pods answer HTTP on IPs from their node's
/// podCIDR; a killed agent leaves its containers running and adopts them
/// when it comes back; a master failover restarts nothing; a node lost for
/// good has its pods replaced on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_run_pods_in_docker_and_survive_agent_and_master_failures() {
    const NODES: [&str; 2] = ["agt1-a", "agt1-b"];
    clean_docker(&NODES).await;
    let mut cluster = Cluster::start(
        3,
        &[
            "--pod-cidr",
            "10.201.0.0/16",
            "--node-grace-period",
            "3s",
            "--pod-eviction-timeout",
            "4s",
        ],
    );
    let client = cluster.client().await;
    build_demo_image(&cluster);

    // An unknown token is refused with a clear error.
    let stranger = Agent::new(&cluster, "agt1-x");
    let out = stranger
        .command(&cluster, Some("abcdef.0123456789abcdef"))
        .output()
        .expect("run rafter agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not known to this cluster"), "{err}");

    let token = create_token(&cluster, "1h");
    let mut a = Agent::new(&cluster, NODES[0]);
    let mut b = Agent::new(&cluster, NODES[1]);
    a.start(&cluster, Some(&token));
    b.start(&cluster, Some(&token));
    let nodes = wait_nodes_ready(&client, &NODES).await;
    let cidr_of: BTreeMap<String, ipnet::Ipv4Net> = nodes
        .iter()
        .map(|n| {
            let cidr = n.spec.clone().unwrap_or_default().pod_cidr;
            (n.metadata().name.clone(), cidr.parse().expect("podCIDR"))
        })
        .collect();
    let (ok, _, err) = cluster.cli(&["get", "nodes"]);
    assert!(ok, "{err}");

    // 1. Three demo pods run in Docker with IPs from their nodes' ranges.
    let (ok, _, err) = cluster.cli(&[
        "create",
        "deployment",
        "web",
        "--image=rafter/demo:latest",
        "--replicas=3",
        "--port=80",
    ]);
    assert!(ok, "{err}");
    let pods = wait_ready_pods(&client, "web", 3, None).await;
    let mut seen_nodes = BTreeSet::new();
    for p in &pods {
        let s = p.status.clone().unwrap();
        let node = p.spec.clone().unwrap().node_name;
        let ip: std::net::Ipv4Addr = s.pod_ip.parse().expect("pod IP");
        assert!(
            cidr_of[&node].contains(&ip),
            "pod {} has {ip}, outside {node}'s {}",
            p.metadata().name,
            cidr_of[&node]
        );
        assert!(!s.host_ip.is_empty());
        // The demo server answers with its pod's name.
        let body = wait_for("the pod to answer HTTP", Duration::from_secs(20), || {
            http_get(&s.pod_ip, 80)
        })
        .await;
        assert_eq!(body, p.metadata().name);
        seen_nodes.insert(node);
    }
    assert_eq!(seen_nodes.len(), 2, "three replicas spread over both nodes");
    // exec through a master, with the command's exit code.
    let first = pods[0].metadata().name.clone();
    let (ok, out, err) = cluster.cli(&["exec", &first, "--", "hostname"]);
    assert!(ok, "exec: {err}");
    assert_eq!(out.trim(), first);
    let out = cluster
        .cli_command(&["exec", &first, "--", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let (ok, wide, _) = cluster.cli(&["get", "pods", "-o", "wide"]);
    assert!(ok);
    for p in &pods {
        let line = wide
            .lines()
            .find(|l| l.starts_with(&p.metadata().name))
            .expect("pod listed");
        assert!(
            line.contains(&p.status.clone().unwrap().pod_ip)
                && line.contains(&p.spec.clone().unwrap().node_name),
            "{line}"
        );
    }

    // 4a. kill -9 the agent: its containers keep running; restarted (with
    // no token: the saved credential), it adopts them.
    let before_a = containers_of(NODES[0]).await;
    assert!(before_a.values().all(|(_, _, running)| *running));
    a.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        containers_of(NODES[0]).await,
        before_a,
        "containers run on without their agent"
    );
    a.start(&cluster, None);
    let renewed = lease_renewed(&client, NODES[0]).await;
    wait_for("agent a back", Duration::from_secs(30), || async {
        (lease_renewed(&client, NODES[0]).await != renewed).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        containers_of(NODES[0]).await,
        before_a,
        "the restarted agent adopted its containers"
    );
    let pods_now = wait_ready_pods(&client, "web", 3, None).await;
    assert!(pods_now.iter().all(|p| restarts(p) == 0));

    // 4b. kill -9 the leader master: agents keep heartbeating through the
    // others; nothing restarts, no node goes NotReady.
    let before_b = containers_of(NODES[1]).await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let survivors = cluster.endpoints_except(leader);
    let client = cluster.client_for(&survivors).await;
    let renewed: Vec<String> = {
        let mut r = Vec::new();
        for n in NODES {
            r.push(lease_renewed(&client, n).await);
        }
        r
    };
    wait_for(
        "leases renewed after the master kill",
        Duration::from_secs(30),
        || async {
            for (n, old) in NODES.iter().zip(&renewed) {
                if lease_renewed(&client, n).await == *old {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in wait_nodes_ready(&client, &NODES).await {
        assert!(is_ready_node(&n));
    }
    assert_eq!(containers_of(NODES[0]).await, before_a);
    assert_eq!(containers_of(NODES[1]).await, before_b);
    let pods_now = wait_ready_pods(&client, "web", 3, None).await;
    assert!(pods_now.iter().all(|p| restarts(p) == 0));
    cluster.restart(leader);

    // 5. Stop agent b for good: its node goes NotReady and its pods come
    // back on a, answering HTTP.
    b.kill();
    wait_for("node b NotReady", Duration::from_secs(30), || async {
        let n: api::Node = client.get_object("", NODES[1]).await.ok()?;
        (!is_ready_node(&n)).then_some(())
    })
    .await;
    let moved = wait_ready_pods(&client, "web", 3, Some(&[NODES[0]])).await;
    for p in &moved {
        let ip = p.status.clone().unwrap().pod_ip;
        let body = wait_for(
            "a replacement pod to answer",
            Duration::from_secs(20),
            || http_get(&ip, 80),
        )
        .await;
        assert_eq!(body, p.metadata().name);
    }
    drop(a);
    drop(b);
    clean_docker(&NODES).await;
}

/// Items 3, 6 and 7: restarts with back-off and CrashLoopBackOff, liveness
/// and readiness probes, a missing image, ConfigMap and Secret in env and
/// files (a changed ConfigMap reaches the file without a restart), and a
/// node credential refused what its node does not need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_restart_probe_and_read_config_and_nodes_stay_in_their_lane() {
    const NODE: &str = "agt2-a";
    clean_docker(&[NODE]).await;
    let cluster = Cluster::start(3, &["--pod-cidr", "10.202.0.0/16"]);
    let client = cluster.client().await;
    build_demo_image(&cluster);
    let agent = join_node(&cluster, &client, NODE).await;

    let mut cm = api::ConfigMap::default();
    cm.metadata_mut().name = "settings".into();
    cm.metadata_mut().namespace = "default".into();
    cm.data.insert("greeting".into(), "hello".into());
    client.create(&cm).await.expect("configmap");
    let mut secret = api::Secret::default();
    secret.metadata_mut().name = "creds".into();
    secret.metadata_mut().namespace = "default".into();
    secret.data.insert("password".into(), b"s3cret".to_vec());
    client.create(&secret).await.expect("secret");
    let mut other = secret.clone();
    other.metadata_mut().name = "unrelated".into();
    client.create(&other).await.expect("secret");

    let pod = |name: &str, spec: serde_json::Value| -> api::Pod {
        let mut p: api::Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("pod manifest");
        p.spec.get_or_insert_default().node_name = NODE.into();
        p
    };
    let sleeper = |cmd: &str| json!(["/bin/sh", "-c", cmd]);
    client
        .create(&pod(
            "config",
            json!({
                "containers": [{
                    "name": "main", "image": "rafter/demo:latest",
                    "command": sleeper("sleep 600"),
                    "env": [
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    ],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"}],
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "settings"}},
                    {"name": "sec", "secret": {"secretName": "creds"}},
                ],
            }),
        ))
        .await
        .expect("config pod");
    client
        .create(&pod(
            "crasher",
            json!({"containers": [{"name": "main", "image": "rafter/demo:latest", "command": sleeper("echo bye from crasher; exit 3")}]}),
        ))
        .await
        .expect("crasher pod");
    client
        .create(&pod(
            "unhealthy",
            json!({"containers": [{
                "name": "main", "image": "rafter/demo:latest",
                "command": sleeper("touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 600"),
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1},
            }]}),
        ))
        .await
        .expect("unhealthy pod");
    client
        .create(&pod(
            "flaky",
            // Only the subshell that later removes /ready runs in the
            // background: /www must exist before httpd starts.
            json!({"containers": [{
                "name": "web", "image": "rafter/demo:latest",
                "command": sleeper("mkdir -p /www && hostname > /www/index.html && touch /www/ready || exit 1; (sleep 15; rm /www/ready) & exec httpd -f -p 80 -h /www"),
                "ports": [{"name": "http", "containerPort": 80}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
            }]}),
        ))
        .await
        .expect("flaky pod");
    client
        .create(&pod(
            "missing",
            json!({"containers": [{"name": "main", "image": "rafter/not-built-here:1"}]}),
        ))
        .await
        .expect("missing-image pod");

    let get = |name: &'static str| {
        let client = client.clone();
        async move { client.get_object::<api::Pod>("default", name).await.ok() }
    };
    let container_state = |p: &api::Pod| {
        p.status
            .clone()
            .unwrap_or_default()
            .container_statuses
            .first()
            .cloned()
            .unwrap_or_default()
    };

    // A missing image is reported, never pulled.
    let missing = wait_for("ErrImageNeverPull", Duration::from_secs(30), || async {
        let p = get("missing").await?;
        let w = container_state(&p).state?.waiting?;
        (w.reason == "ErrImageNeverPull").then_some(w)
    })
    .await;
    assert!(
        missing.message.contains("rafter/not-built-here"),
        "{}",
        missing.message
    );

    // Readiness: ready first, then not ready when /ready goes away (15 s
    // after start: a window wide enough for a loaded CI machine to see).
    wait_for("flaky ready", Duration::from_secs(30), || async {
        get("flaky").await.filter(is_ready_pod)
    })
    .await;
    wait_for("flaky not ready", Duration::from_secs(30), || async {
        let p = get("flaky").await?;
        (p.status.clone()?.phase == "Running" && !is_ready_pod(&p)).then_some(())
    })
    .await;

    // A container that exits is restarted with back-off: CrashLoopBackOff.
    let crashed = wait_for("CrashLoopBackOff", Duration::from_secs(60), || async {
        let p = get("crasher").await?;
        let c = container_state(&p);
        let waiting = c.state.clone()?.waiting?;
        (waiting.reason == "CrashLoopBackOff" && c.restart_count >= 1).then_some(c)
    })
    .await;
    assert_eq!(crashed.last_state.unwrap().terminated.unwrap().exit_code, 3);
    let (ok, table, _) = cluster.cli(&["get", "pods"]);
    assert!(ok);
    let line = table
        .lines()
        .find(|l| l.starts_with("crasher"))
        .expect("crasher listed");
    assert!(line.contains("CrashLoopBackOff"), "{line}");

    // Its logs, the current and the previous container's, through a master.
    let (ok, out, err) = cluster.cli(&["logs", "crasher"]);
    assert!(ok && out.contains("bye from crasher"), "logs: {out}{err}");
    let (ok, out, err) = cluster.cli(&["logs", "crasher", "--previous", "--tail", "1"]);
    assert!(
        ok && out.trim() == "bye from crasher",
        "logs --previous: {out}{err}"
    );

    // A liveness failure restarts the container.
    wait_for("liveness restart", Duration::from_secs(60), || async {
        let p = get("unhealthy").await?;
        (restarts(&p) >= 1).then_some(())
    })
    .await;

    // Env and files from the ConfigMap and the Secret.
    wait_for("config pod running", Duration::from_secs(30), || async {
        get("config").await.filter(is_ready_pod)
    })
    .await;
    let d = docker().await;
    let main = d
        .list(&[
            (rt::LABEL_NODE, NODE),
            (rt::LABEL_POD_NAME, "config"),
            (rt::LABEL_CONTAINER, "main"),
        ])
        .await
        .unwrap()
        .into_iter()
        .find(|c| matches!(c.state, rt::ContainerRunState::Running { .. }))
        .expect("config container");
    let sh = |cmd: &str| vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let out = d
        .exec(
            &main.id,
            &sh("echo $GREETING $PASSWORD; cat /etc/cfg/greeting /etc/sec/password"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello s3cret\nhellos3cret"
    );
    let mut cm: api::ConfigMap = client.get_object("default", "settings").await.unwrap();
    cm.data.insert("greeting".into(), "bonjour".into());
    client.update(&cm).await.unwrap();
    wait_for(
        "the mounted file to change",
        Duration::from_secs(20),
        || async {
            let out = d
                .exec(
                    &main.id,
                    &sh("cat /etc/cfg/greeting"),
                    Duration::from_secs(5),
                )
                .await
                .ok()?;
            (out.stdout == b"bonjour").then_some(())
        },
    )
    .await;
    let p = get("config").await.unwrap();
    assert_eq!(
        restarts(&p),
        0,
        "a config change does not restart the container"
    );

    // 7. The node's credential: what its pods use, nothing more.
    let cred = agent.credential();
    let as_node = |args: &[&str]| cluster.cli_with_env(args, &[("RAFTER_TOKEN", cred.as_str())]);
    let (ok, out, err) = as_node(&["get", "secret", "creds", "-o", "name"]);
    assert!(ok, "a node reads a secret its pod uses: {err}");
    assert!(out.contains("creds"));
    for forbidden in [
        vec!["get", "secret", "unrelated"],
        vec!["get", "secrets"],
        vec!["create", "namespace", "intruders"],
        vec!["label", "node", NODE, "evil=yes"],
    ] {
        let (ok, _, err) = as_node(&forbidden);
        assert!(
            !ok && err.contains("Forbidden"),
            "{forbidden:?} should be Forbidden: {err}"
        );
    }
    // Another node's status.
    let mut other_node = api::Node::default();
    other_node.metadata_mut().name = "someone-else".into();
    client.create(&other_node).await.unwrap();
    let node_client = Client::connect_with_options(
        cluster.endpoints(),
        rafter_client::ClientOptions {
            token: Some(cred.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut theirs: api::Node = node_client
        .get_object("", "someone-else")
        .await
        .expect("nodes may read nodes");
    theirs
        .status
        .get_or_insert_default()
        .conditions
        .push(api::Condition {
            r#type: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        });
    let e = node_client.update_status(&theirs).await.unwrap_err();
    assert!(e.is_reason("Forbidden"), "{e}");
    // The KV API is the admin's only.
    assert!(
        node_client
            .get("/registry/secrets/default/unrelated")
            .await
            .is_err()
    );
    // An admin can still do all of it.
    assert!(
        client
            .get_object::<api::Secret>("default", "unrelated")
            .await
            .is_ok()
    );

    drop(agent);
    clean_docker(&[NODE]).await;
}

/// Item 2 and the traffic half of item 5: a Service's clusterIP answers
/// HTTP from the host and, by DNS name, from inside a pod, spreading over
/// its ready pods; a pod that fails readiness leaves the endpoints and gets
/// no more connections; when a node is lost for good, the replacement pods
/// take the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_ready_pods_by_cluster_ip_and_dns() {
    const NODES: [&str; 2] = ["agt3-a", "agt3-b"];
    clean_docker(&NODES).await;
    let cluster = Cluster::start(
        3,
        &[
            "--pod-cidr",
            "10.205.0.0/16",
            // Its own range: every test cluster's agents put their
            // clusterIPs on this host.
            "--service-cidr",
            "10.215.0.0/24",
            "--node-grace-period",
            "3s",
            "--pod-eviction-timeout",
            "4s",
        ],
    );
    let client = cluster.client().await;
    build_demo_image(&cluster);
    let token = create_token(&cluster, "1h");
    let mut a = Agent::new(&cluster, NODES[0]);
    let mut b = Agent::new(&cluster, NODES[1]);
    a.start(&cluster, Some(&token));
    b.start(&cluster, Some(&token));
    wait_nodes_ready(&client, &NODES).await;

    // The demo server, ready while /www/unready does not exist.
    let deployment: api::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "demo", "image": "rafter/demo:latest",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "readinessProbe": {
                        "exec": {"command": ["/bin/sh", "-c", "test ! -f /www/unready"]},
                        "periodSeconds": 1, "failureThreshold": 1,
                    },
                }]},
            },
        },
    }))
    .expect("deployment manifest");
    client.create(&deployment).await.expect("create deployment");
    let (ok, out, err) = cluster.cli(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "8080",
        "--target-port",
        "http",
    ]);
    assert!(ok, "expose: {err}");
    assert!(out.contains("service/web exposed"), "{out}");
    let svc: api::Service = client.get_object("default", "web").await.expect("service");
    let cluster_ip = svc.spec.clone().unwrap().cluster_ip;
    assert!(cluster_ip.starts_with("10.215.0."), "{cluster_ip}");
    let pods = wait_ready_pods(&client, "web", 3, None).await;
    let names: BTreeSet<String> = pods.iter().map(|p| p.metadata().name.clone()).collect();

    // Every ready pod answers through the clusterIP, from the host, in
    // turn: a few rounds reach them all.
    let answered = |want: BTreeSet<String>| {
        let ip = cluster_ip.clone();
        async move {
            wait_for(
                "the clusterIP to reach exactly the ready pods",
                Duration::from_secs(30),
                || {
                    let ip = ip.clone();
                    let want = want.clone();
                    async move {
                        let mut seen = BTreeSet::new();
                        for _ in 0..4 * want.len() {
                            seen.insert(http_get(&ip, 8080).await?);
                        }
                        (seen == want).then_some(seen)
                    }
                },
            )
            .await
        }
    };
    answered(names.clone()).await;

    // From inside a pod, by the Service's DNS name (full and short).
    let first = pods[0].metadata().name.clone();
    // (busybox nc: the static busybox's wget crashes on this image.)
    for name in ["web.default.svc.cluster.local", "web"] {
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 8080");
        let (ok, out, err) = cluster.cli(&["exec", &first, "--", "sh", "-c", &script]);
        assert!(ok, "{script} in pod {first}: {out}{err}");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
        assert!(names.contains(body), "{name}:8080 answered {out:?}");
    }
    let (ok, out, err) = cluster.cli(&[
        "exec",
        &first,
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    assert!(ok && out.contains(&cluster_ip), "nslookup: {out}{err}");

    // A pod failing readiness leaves the endpoints and the rotation.
    let unready = pods[1].metadata().name.clone();
    let (ok, _, err) = cluster.cli(&["exec", &unready, "--", "touch", "/www/unready"]);
    assert!(ok, "{err}");
    let rest: BTreeSet<String> = names.iter().filter(|n| **n != unready).cloned().collect();
    answered(rest.clone()).await;
    for _ in 0..12 {
        let body = http_get(&cluster_ip, 8080)
            .await
            .expect("the service answers");
        assert_ne!(body, unready, "a not-ready pod still gets traffic");
    }
    let (ok, _, err) = cluster.cli(&["exec", &unready, "--", "rm", "/www/unready"]);
    assert!(ok, "{err}");
    answered(names.clone()).await;

    // Node b lost for good: its pods come back on a, and the clusterIP
    // reaches exactly the pods running now.
    b.kill();
    let moved = wait_ready_pods(&client, "web", 3, Some(&[NODES[0]])).await;
    let moved: BTreeSet<String> = moved.iter().map(|p| p.metadata().name.clone()).collect();
    answered(moved).await;

    drop(a);
    drop(b);
    clean_docker(&NODES).await;
}

/// Graceful deletion (issue 7): a deleted pod stays, Terminating, with its
/// status reported, while its container handles SIGTERM; when the container
/// has stopped, the pod's last status says so, the pod is gone and so are
/// its containers. A second delete with a shorter grace period cuts a long
/// one short, and `rafter delete` waits until the pod is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_terminates_gracefully_and_goes_when_its_container_stops() {
    use futures::StreamExt;
    use rafter_client::WatchEvent;

    const NODE: &str = "agt4-a";
    clean_docker(&[NODE]).await;
    let cluster = Cluster::start(1, &["--pod-cidr", "10.206.0.0/16"]);
    let client = cluster.client().await;
    build_demo_image(&cluster);
    let agent = join_node(&cluster, &client, NODE).await;

    let pod = |name: &str, script: &str, grace: i64| -> api::Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {
                "nodeName": NODE,
                "terminationGracePeriodSeconds": grace,
                "containers": [{
                    "name": "main", "image": "rafter/demo:latest",
                    "command": ["/bin/sh", "-c", script],
                }],
            },
        }))
        .expect("pod manifest")
    };
    // Takes 2 s to shut down on SIGTERM, then exits 0.
    let trapper = "trap 'sleep 2; exit 0' TERM; while true; do sleep 0.2; done";
    // A shell as PID 1 without a trap ignores SIGTERM: only SIGKILL stops it.
    let stubborn = "while true; do sleep 0.2; done";
    client
        .create(&pod("trapper", trapper, 30))
        .await
        .expect("create trapper");
    client
        .create(&pod("stubborn", stubborn, 120))
        .await
        .expect("create stubborn");
    let running = wait_ready_pods(&client, "trapper", 1, None).await;
    wait_ready_pods(&client, "stubborn", 1, None).await;
    let rv = running[0].metadata().resource_version.clone();
    let mut events = client.watch_objects::<api::Pod>("default", "", "metadata.name=trapper", &rv);

    // Deleted: still there, Terminating, its container still running.
    let asked = std::time::Instant::now();
    let (ok, out, err) = cluster.cli(&["delete", "pod", "trapper", "--wait=false"]);
    assert!(ok, "delete: {err}");
    assert_eq!(out.trim(), "pod \"trapper\" deleted");
    let terminating: api::Pod = client
        .get_object("default", "trapper")
        .await
        .expect("a deleted pod stays while it terminates");
    assert_eq!(
        terminating.metadata().deletion_grace_period_seconds,
        Some(30)
    );
    let (ok, out, _) = cluster.cli(&["get", "pods", "trapper"]);
    assert!(ok && out.contains("Terminating"), "{out}");
    assert!(
        containers_of(NODE)
            .await
            .values()
            .any(|(p, c, up)| p == "trapper" && c == "main" && *up),
        "the container runs its SIGTERM handler"
    );

    // Watched to the end: status reported while terminating, the last one
    // with the container's exit, then DELETED once it stopped (after its
    // 2 s handler, long before the 30 s grace period).
    let mut last = None;
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            match ev.expect("watch") {
                WatchEvent::Modified(p) if !p.metadata().deletion_timestamp.is_empty() => {
                    last = Some(p)
                }
                WatchEvent::Deleted(p) => return p,
                _ => {}
            }
        }
        panic!("the watch ended before the pod was deleted");
    })
    .await
    .expect("the pod is deleted once its container stops");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "gone after {took:?}: neither before its SIGTERM handler finished nor after the grace period"
    );
    let last = last.expect("status written while terminating");
    let status = last.status.clone().unwrap_or_default();
    assert_eq!(status.phase, "Succeeded", "{status:?}");
    let exit = status.container_statuses[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(exit, Some(0), "{status:?}");
    assert_eq!(gone.metadata().uid, running[0].metadata().uid);
    assert!(
        client
            .get_object::<api::Pod>("default", "trapper")
            .await
            .is_err()
    );
    wait_for(
        "the trapper's containers removed",
        Duration::from_secs(10),
        || async {
            (!containers_of(NODE)
                .await
                .values()
                .any(|(p, _, _)| p == "trapper"))
            .then_some(())
        },
    )
    .await;

    // A 120 s grace period, shortened to 1 s by a second delete, which
    // waits (kubectl's default) until the pod is gone.
    let (ok, _, err) = cluster.cli(&["delete", "pod", "stubborn", "--wait=false"]);
    assert!(ok, "{err}");
    let asked = std::time::Instant::now();
    let (ok, out, err) = cluster.cli(&["delete", "pod", "stubborn", "--grace-period", "1"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("waiting: pod \"stubborn\" is Terminating"),
        "{err}"
    );
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        client
            .get_object::<api::Pod>("default", "stubborn")
            .await
            .is_err(),
        "`rafter delete` returned before the pod was gone"
    );
    assert!(
        !containers_of(NODE)
            .await
            .values()
            .any(|(p, _, _)| p == "stubborn"),
        "the killed container is removed before the pod goes"
    );

    // Force-deleted (gone from the API at once): the agent stops its
    // container anyway, then removes its volume directory.
    let mut scratch = pod("scratch", stubborn, 1);
    let spec = scratch.spec.as_mut().expect("spec");
    spec.volumes =
        vec![serde_json::from_value(json!({"name": "work", "emptyDir": {}})).expect("volume")];
    spec.containers[0].volume_mounts =
        vec![serde_json::from_value(json!({"name": "work", "mountPath": "/work"})).expect("mount")];
    client.create(&scratch).await.expect("create scratch");
    let scratch = wait_ready_pods(&client, "scratch", 1, None).await;
    let volumes = agent.data_dir.join("pods").join(&scratch[0].metadata().uid);
    assert!(
        volumes.is_dir(),
        "{} exists while the pod runs",
        volumes.display()
    );
    let (ok, out, err) = cluster.cli(&["delete", "pod", "scratch", "--force"]);
    assert!(ok, "{out}{err}");
    wait_for(
        "the force-deleted pod's container and volumes removed",
        Duration::from_secs(20),
        || async {
            let gone = !containers_of(NODE)
                .await
                .values()
                .any(|(p, _, _)| p == "scratch");
            (gone && !volumes.exists()).then_some(())
        },
    )
    .await;

    drop(agent);
    clean_docker(&[NODE]).await;
}
