//! The object API and the kubectl-style CLI against real 3-master
//! clusters: round trips with defaults, validation that stores nothing,
//! compare-and-swap conflicts, gap-free watches and informers across leader
//! kills, CLI failover with exactly-once writes, finalizers, and the token
//! check.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Cluster;
use futures::StreamExt;
use rafter_client::{ClientOptions, DeleteOptions, WatchEvent, informer};
use rafter_proto::api;
use rafter_proto::object::Object;

fn config_map(ns: &str, name: &str, value: &str) -> api::ConfigMap {
    let mut cm = api::ConfigMap {
        data: BTreeMap::from([("v".to_string(), value.to_string())]),
        ..Default::default()
    };
    let m = cm.metadata_mut();
    m.name = name.into();
    m.namespace = ns.into();
    cm
}

const ALL_KINDS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {rafter.io/hostname: node-a}}
spec: {podCIDR: 10.244.1.0/24}
status:
  capacity: {cpu: 4, memory: 8Gi, pods: 110}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: shop}
spec:
  containers:
  - name: app
    image: busybox
    command: [sleep, "3600"]
    env:
    - {name: MODE, value: test}
    - name: FROM_CM
      valueFrom: {configMapKeyRef: {name: settings, key: mode}}
    ports: [{containerPort: 8080}]
    resources: {requests: {cpu: 0.25, memory: 64Mi}, limits: {cpu: 1}}
    readinessProbe: {httpGet: {port: 8080}}
    livenessProbe: {tcpSocket: {port: 8080}, initialDelaySeconds: 5}
    volumeMounts: [{name: cfg, mountPath: /etc/app}]
  volumes: [{name: cfg, configMap: {name: settings}}, {name: scratch, emptyDir: {}}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs1, namespace: shop}
spec:
  selector: {matchLabels: {app: rs1}}
  template:
    metadata: {labels: {app: rs1}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  # No selector: its Endpoints below are the user's, not the endpoints
  # controller's, so applying them again changes nothing.
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: web, namespace: shop}
subsets: [{addresses: [{ip: 10.244.1.7}], ports: [{port: 8080}]}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Event
metadata: {name: web.1, namespace: shop}
involvedObject: {kind: Deployment, name: web, namespace: shop}
reason: ScalingReplicaSet
message: Scaled up replica set web-1 to 3
"#;

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_round_trips_with_defaults_and_invalid_objects_store_nothing() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, ALL_KINDS).unwrap();
    let (ok, out, err) = cluster.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "apply failed: {err}");
    for line in [
        "namespace/shop created",
        "node/node-a created",
        "pod/solo created",
        "replicaset.apps/rs1 created",
        "deployment.apps/web created",
        "service/web created",
        "endpoints/web created",
        "configmap/settings created",
        "secret/creds created",
        "event/web.1 created",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Applying the same manifests again changes nothing.
    let (ok, out, err) = cluster.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("unchanged").count(), 10, "{out}");

    let get = |args: &[&str]| {
        let (ok, out, err) = cluster.cli(args);
        assert!(ok, "rafter {args:?} failed: {err}");
        out
    };
    let pod = get(&["get", "pod", "solo", "-n", "shop", "-o", "yaml"]);
    for want in [
        "restartPolicy: Always",
        "protocol: TCP",
        "terminationGracePeriodSeconds: 30",
        "cpu: 250m",
        "phase: Pending",
        "path: /",
        "periodSeconds: 10",
        "port: 8080",
        "uid: ",
        "creationTimestamp: ",
    ] {
        assert!(pod.contains(want), "pod lacks {want:?}:\n{pod}");
    }
    let deploy = get(&["get", "deploy", "web", "-n", "shop", "-o", "yaml"]);
    for want in [
        "maxSurge: 25%",
        "maxUnavailable: 25%",
        "type: RollingUpdate",
        "revisionHistoryLimit: 10",
        "generation: 1",
    ] {
        assert!(
            deploy.contains(want),
            "deployment lacks {want:?}:\n{deploy}"
        );
    }
    let rs = get(&["get", "rs", "rs1", "-n", "shop", "-o", "yaml"]);
    assert!(rs.contains("replicas: 1"), "{rs}");
    let svc = get(&["get", "svc", "web", "-n", "shop", "-o", "json"]);
    let svc: serde_json::Value = serde_json::from_str(&svc).unwrap();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    let secret = get(&["get", "secret", "creds", "-n", "shop", "-o", "json"]);
    let secret: serde_json::Value = serde_json::from_str(&secret).unwrap();
    assert_eq!(
        secret["data"]["password"], "aHVudGVyMg==",
        "stringData merged into data"
    );
    assert!(secret.get("stringData").is_none());
    assert_eq!(secret["type"], "Opaque");
    let node = get(&["get", "node", "node-a", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&node).unwrap();
    assert_eq!(node["status"]["capacity"]["cpu"], "4");
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24");
    let ns = get(&["get", "ns"]);
    for n in ["default", "rafter-system", "shop"] {
        assert!(ns.contains(n), "{ns}");
    }

    // describe shows fields and the object's events.
    let described = get(&["describe", "deploy", "web", "-n", "shop"]);
    assert!(described.contains("Replicas:  3"), "{described}");
    assert!(
        described.contains("Scaled up replica set web-1 to 3"),
        "{described}"
    );
    // label refuses to overwrite without --overwrite; annotate and edit work.
    get(&["label", "cm", "settings", "-n", "shop", "tier=a"]);
    let (ok, _, err) = cluster.cli(&["label", "cm", "settings", "-n", "shop", "tier=b"]);
    assert!(!ok && err.contains("already has a value (a)"), "{err}");
    get(&[
        "label",
        "cm/settings",
        "-n",
        "shop",
        "tier=b",
        "--overwrite",
    ]);
    get(&["annotate", "cm", "settings", "-n", "shop", "note=x"]);
    let (ok, out, err) = cluster.cli_with_env(
        &["edit", "cm", "settings", "-n", "shop"],
        &[("EDITOR", "sed -i s/fast/slow/")],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "configmap/settings edited");
    let cm = get(&["get", "cm", "settings", "-n", "shop", "-o", "json"]);
    let cm: serde_json::Value = serde_json::from_str(&cm).unwrap();
    assert_eq!(cm["data"]["mode"], "slow");
    assert_eq!(cm["metadata"]["labels"]["tier"], "b");
    assert_eq!(cm["metadata"]["annotations"]["note"], "x");
    // -w streams what changes after the listing.
    let mut watch = cluster
        .cli_command(&["get", "cm", "-n", "shop", "-w", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    get(&["create", "configmap", "late", "-n", "shop"]);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "configmap/late") {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => seen.push(l),
            Err(e) => panic!("get -w did not show configmap/late ({e}); saw {seen:?}"),
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.contains(&"configmap/settings".to_string()),
        "the listing came first: {seen:?}"
    );

    // Each kind of mistake: a precise error, and nothing stored.
    let bad = [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: shop}\ndatta: {a: b}\n",
            "datta",
            ("cm", "typo"),
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name, namespace: shop}\n",
            "metadata.name: Invalid value: \"Bad_Name\"",
            ("cm", "Bad_Name"),
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: hungry, namespace: shop}\nspec: {containers: [{name: c, image: i, resources: {requests: {cpu: 2 cores}}}]}\n",
            "spec.containers[0].resources.requests.cpu",
            ("pod", "hungry"),
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: mismatch, namespace: shop}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
            "`selector` does not match template `labels`",
            ("deploy", "mismatch"),
        ),
    ];
    for (yaml, want, (kind, name)) in bad {
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, yaml).unwrap();
        let (ok, _, err) = cluster.cli(&["apply", "-f", f.to_str().unwrap()]);
        assert!(!ok, "{yaml} was accepted");
        assert!(err.contains(want), "error for {name} lacks {want:?}: {err}");
        let (ok, _, err) = cluster.cli(&["get", kind, name, "-n", "shop"]);
        assert!(
            !ok && err.contains("(NotFound)"),
            "{name} was stored: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_resource_versions_conflict_and_finalizers_hold_deletion() {
    let cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let a = cluster.client().await;
    let b = cluster.client().await;
    a.create(&config_map("default", "shared", "0"))
        .await
        .unwrap();

    // Both read the same version, both try to write it.
    let mut from_a: api::ConfigMap = a.get_object("default", "shared").await.unwrap();
    let mut from_b: api::ConfigMap = b.get_object("default", "shared").await.unwrap();
    from_a.data.insert("v".into(), "a".into());
    from_b.data.insert("v".into(), "b".into());
    let won = a.update(&from_a).await.unwrap();
    let lost = b.update(&from_b).await.unwrap_err();
    assert_eq!(lost.reason().as_deref(), Some("Conflict"), "{lost}");
    let now: api::ConfigMap = b.get_object("default", "shared").await.unwrap();
    assert_eq!(now.data["v"], "a");
    assert_eq!(
        now.metadata().resource_version,
        won.metadata().resource_version
    );

    // Finalizers: delete marks, removing the last finalizer deletes.
    let mut held = config_map("default", "held", "x");
    held.metadata_mut().finalizers = vec!["example.com/hold".into()];
    a.create(&held).await.unwrap();
    let marked: api::ConfigMap = a
        .delete_object("default", "held", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(!marked.metadata().deletion_timestamp.is_empty());
    let still: api::ConfigMap = a.get_object("default", "held").await.unwrap();
    assert!(!still.metadata().deletion_timestamp.is_empty());
    assert_eq!(still.metadata().finalizers, ["example.com/hold"]);
    let cleared: serde_json::Value = serde_json::json!({"metadata": {"finalizers": null}});
    a.patch::<api::ConfigMap>("default", "held", &cleared, false)
        .await
        .unwrap();
    let gone = a
        .get_object::<api::ConfigMap>("default", "held")
        .await
        .unwrap_err();
    assert_eq!(gone.reason().as_deref(), Some("NotFound"), "{gone}");

    // Foreground propagation is recorded as Kubernetes does.
    a.create(&config_map("default", "fg", "x")).await.unwrap();
    let fg: api::ConfigMap = a
        .delete_object(
            "default",
            "fg",
            &DeleteOptions {
                propagation_policy: "Foreground".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fg.metadata().finalizers, ["foregroundDeletion"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_then_watch_misses_nothing_across_master_kills() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.objects_ready().await;
    let follower = (leader + 1) % 3;
    let endpoints = cluster.endpoints();
    // The watcher starts on a follower; the writer writes through the
    // leader (then wherever it fails over to).
    let mut watcher_eps = vec![endpoints[follower].clone()];
    watcher_eps.extend(
        endpoints
            .iter()
            .filter(|e| **e != endpoints[follower])
            .cloned(),
    );
    let watcher = cluster.client_for(&watcher_eps).await;
    let mut writer_eps = vec![endpoints[leader].clone()];
    writer_eps.extend(
        endpoints
            .iter()
            .filter(|e| **e != endpoints[leader])
            .cloned(),
    );
    let writer = cluster.client_for(&writer_eps).await;

    writer
        .create(&config_map("default", "before", "0"))
        .await
        .unwrap();
    let list = watcher
        .list::<api::ConfigMap>("default", "", "")
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let mut stream =
        watcher.watch_objects::<api::ConfigMap>("default", "", "", &list.resource_version);
    let (cache, mut changes) = informer::start::<api::ConfigMap>(watcher.clone(), "default", "");
    cache.wait_synced().await;
    // Once synced, the stream already holds the first list (the scheduler
    // builds its state by draining it).
    let mut applied = queued_names(&mut changes);
    assert_eq!(applied, ["before"], "queued when the cache is synced");
    // Shared informers: one subscriber from the start, one joining half-way.
    let informers = informer::Informers::new(watcher.clone());
    let (shared_cache, mut early) = informers.start::<api::ConfigMap>("default", "");
    let mut late = None;

    const N: usize = 40;
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < N {
            match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
                Ok(Some(Ok(WatchEvent::Added(cm)))) => seen.push((
                    cm.metadata().name.clone(),
                    cm.metadata().resource_version.parse::<u64>().unwrap(),
                )),
                Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
                other => panic!("unexpected watch item {other:?} after {seen:?}"),
            }
        }
        seen
    });
    for i in 0..N {
        if i == 12 {
            cluster.kill(leader);
        }
        if i == 20 {
            late = Some(informers.start::<api::ConfigMap>("default", ""));
        }
        if i == 22 {
            cluster.restart(leader);
            cluster.leader().await;
        }
        if i == 28 {
            // The master serving the watch goes too.
            cluster.kill(follower);
        }
        writer
            .create(&config_map("default", &format!("cm-{i:02}"), "x"))
            .await
            .unwrap_or_else(|e| panic!("create cm-{i:02}: {e}"));
    }
    let seen = collector.await.unwrap();
    let names: Vec<String> = seen.iter().map(|(n, _)| n.clone()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("cm-{i:02}")).collect();
    assert_eq!(names, expected, "every create seen once, in order");
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions increase: {seen:?}"
    );

    // The informer's cache caught up too, and reported each object once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cache.len() < N + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache has {} objects",
            cache.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    applied.extend(queued_names(&mut changes));
    // The initial list reports what was there, then each create once.
    let mut want = vec!["before".to_string()];
    want.extend(expected);
    assert_eq!(applied, want, "informer events");
    assert!(cache.get("default", "cm-39").is_some());

    // Both subscribers of the shared informer saw every object once, in
    // order: the late one first what was cached when it joined (names sort
    // in creation order here), then each later create.
    let (late_cache, mut late) = late.expect("joined");
    while shared_cache.len() < N + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shared cache has {} objects",
            shared_cache.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(late_cache.len(), N + 1, "one cache for every subscriber");
    for (who, rx) in [("early", &mut early), ("late", &mut late)] {
        assert_eq!(queued_names(rx), want, "{who} subscriber's events");
    }
    assert_eq!(informers.running(), 1, "one list and watch for both");
}

/// The names of the objects applied in the events queued on `rx`.
fn queued_names(rx: &mut informer::Events<api::ConfigMap>) -> Vec<String> {
    let mut names = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let informer::Event::Applied(cm) = e {
            names.push(cm.metadata().name.clone());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_commands_survive_a_leader_kill_and_apply_once() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.objects_ready().await;
    let (ok, _, err) = cluster.cli(&[
        "create",
        "deployment",
        "web",
        "--image",
        "nginx",
        "--replicas",
        "1",
    ]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    const N: usize = 12;
    for i in 0..N {
        if i == 4 {
            let leader = cluster.leader().await;
            cluster.kill(leader);
        }
        if i == 8 {
            for m in 0..3 {
                if cluster.masters[m].child.is_none() {
                    cluster.restart(m);
                }
            }
        }
        let name = format!("cm-{i}");
        // create is not idempotent: a resend applied twice would fail with
        // AlreadyExists.
        let (ok, out, err) = cluster.cli(&[
            "create",
            "configmap",
            &name,
            "--from-literal",
            &format!("i={i}"),
        ]);
        assert!(ok, "create {name}: {err}");
        assert_eq!(out.trim(), format!("configmap/{name} created"));
        let f = dir.path().join("applied.yaml");
        std::fs::write(
            &f,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: applied}}\ndata: {{i: \"{i}\"}}\n"),
        )
        .unwrap();
        let (ok, _, err) = cluster.cli(&["apply", "-f", f.to_str().unwrap()]);
        assert!(ok, "apply {i}: {err}");
        let (ok, _, err) =
            cluster.cli(&["scale", "deployment", "web", "--replicas", &i.to_string()]);
        assert!(ok, "scale {i}: {err}");
        let (ok, out, err) = cluster.cli(&["get", "deploy", "web"]);
        assert!(ok, "get {i}: {err}");
        assert!(out.contains(&format!("0/{i}")), "get {i}: {out}");
    }
    let client = cluster.client().await;
    let cms = client
        .list::<api::ConfigMap>("default", "", "")
        .await
        .unwrap();
    let mut names: Vec<_> = cms
        .items
        .iter()
        .map(|c| c.metadata().name.clone())
        .collect();
    names.sort();
    let mut want: Vec<_> = (0..N).map(|i| format!("cm-{i}")).collect();
    want.push("applied".into());
    want.sort();
    assert_eq!(names, want);
    let applied: api::ConfigMap = client.get_object("default", "applied").await.unwrap();
    assert_eq!(applied.data["i"], (N - 1).to_string());
    let web: api::Deployment = client.get_object("default", "web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(N as i32 - 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_token_are_refused() {
    let cluster = Cluster::start(1, &[]);
    cluster.objects_ready().await;
    let anonymous = rafter_client::Client::connect_with_options(
        cluster.endpoints(),
        ClientOptions {
            overall_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = anonymous
        .list::<api::Pod>("default", "", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
    assert_eq!(e.reason().as_deref(), Some("Unauthenticated"));
    let e = anonymous.put("k", "v", 0, false).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
    let e = anonymous
        .create(&config_map("default", "sneaky", "x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
    let (ok, _, err) = cluster.cli(&["--token", "wrong", "get", "pods"]);
    assert!(!ok);
    assert!(err.contains("Error from server (Unauthenticated)"), "{err}");
    // Nothing was written.
    let admin = cluster.client().await;
    assert!(admin.get("k").await.unwrap().is_none());
    assert!(
        admin
            .get_object::<api::ConfigMap>("default", "sneaky")
            .await
            .unwrap_err()
            .is_reason("NotFound")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_from_a_compacted_revision_is_gone() {
    let cluster = Cluster::start(
        1,
        &[
            "--history-revisions",
            "5",
            "--compaction-interval-ms",
            "100",
        ],
    );
    cluster.leader().await;
    let client = cluster.client().await;
    for i in 0..30 {
        client
            .create(&config_map("default", &format!("c{i}"), "x"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = client.watch_objects::<api::ConfigMap>("default", "", "", "2");
    let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .unwrap();
    let e = item.unwrap().unwrap_err();
    assert_eq!(e.reason().as_deref(), Some("Gone"), "{e}");
}
