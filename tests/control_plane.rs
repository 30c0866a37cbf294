//! The leader supervisor and term fencing against real 3-master clusters:
//! the control loops run on the leader and move with it, and a component
//! of a deposed leader (a write fenced with an old term) can never write.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Cluster, TOKEN};
use rafter_client::{Client, ClientOptions};
use rafter_proto::api;
use rafter_proto::object::Object;

const CONTROL_PLANE_KEY: &str = "/rafter/control-plane";

/// (master, term) of the control-plane record.
async fn control_plane(client: &Client) -> Option<(String, u64)> {
    let kv = client.get(CONTROL_PLANE_KEY).await.ok()??;
    let v: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
    Some((v["master"].as_str()?.to_string(), v["term"].as_u64()?))
}

async fn wait_control_plane(client: &Client, what: impl Fn(&str, u64) -> bool) -> (String, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((m, t)) = control_plane(client).await
            && what(&m, t)
        {
            return (m, t);
        }
        assert!(
            Instant::now() < deadline,
            "control-plane record not as expected within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fenced_client(endpoints: &[String], term: u64) -> Client {
    let options = ClientOptions {
        token: Some(TOKEN.into()),
        fence_term: Some(term),
        overall_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    Client::connect_with_options(endpoints, options)
        .await
        .unwrap()
}

fn config_map(name: &str) -> api::ConfigMap {
    let mut cm = api::ConfigMap {
        data: BTreeMap::from([("k".to_string(), "v".to_string())]),
        ..Default::default()
    };
    cm.metadata_mut().name = name.into();
    cm.metadata_mut().namespace = "default".into();
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_loops_follow_the_leader_and_a_stale_term_cannot_write() {
    let mut cluster = Cluster::start(3, &[]);
    let client = cluster.client().await;
    let leader = cluster.leader().await;
    let old_name = cluster.masters[leader].name.clone();
    let (_, old_term) = wait_control_plane(&client, |m, _| m == old_name).await;

    let (ok, out, err) = cluster.cli(&["cluster", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "control loops (scheduler, controllers): {old_name} since"
        )) && out.contains(&format!("term {old_term}")),
        "cluster status must say who runs the control loops:\n{out}"
    );

    // Freeze the leader: its components stop mid-flight, still holding
    // term `old_term`. The others elect a leader, whose supervisor starts.
    cluster.signal(leader, "-STOP");
    let frozen = Instant::now();
    let others = cluster.endpoints_except(leader);
    let live = cluster.client_for(&others).await;
    let (new_name, new_term) =
        wait_control_plane(&live, |m, t| m != old_name && t > old_term).await;
    eprintln!(
        "control loops moved from {old_name} (term {old_term}) to {new_name} (term {new_term}) {:?} after the leader froze",
        frozen.elapsed()
    );

    // A component of the old term writes through the new leader: refused.
    let stale = fenced_client(&others, old_term).await;
    let err = stale.create(&config_map("stale")).await.unwrap_err();
    assert!(err.is_reason("Conflict"), "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    let gone = live
        .get_object::<api::ConfigMap>("default", "stale")
        .await
        .unwrap_err();
    assert!(
        gone.is_reason("NotFound"),
        "a fenced create must leave nothing: {gone}"
    );

    // Scaling a deployment, the controllers' kind of write, likewise.
    let mut d: api::Deployment = deployment();
    d = live.create(&d).await.unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut cur: api::Deployment = live.get_object("default", "web").await.unwrap();
        cur.spec.as_mut().unwrap().replicas = Some(7);
        match stale.update(&cur).await {
            Ok(_) => panic!("a deployment was scaled by a component of term {old_term}"),
            Err(e) if e.to_string().contains("fenced") => break,
            // Its status moved meanwhile (the live controllers): read again.
            Err(e) if e.is_reason("Conflict") && attempts < 20 => continue,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let cur: api::Deployment = live.get_object("default", "web").await.unwrap();
    assert_eq!(
        cur.spec.unwrap().replicas,
        Some(d.spec.unwrap().replicas.unwrap())
    );

    // The same write in the current term goes through.
    let current = fenced_client(&others, new_term).await;
    current.create(&config_map("fresh")).await.unwrap();

    // The old leader wakes up with its components of the old term: they
    // cannot overwrite the record of the new one (only a later election
    // could move the control loops again).
    cluster.signal(leader, "-CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (m, t) = control_plane(&live).await.unwrap();
    assert!(
        (m == new_name && t == new_term) || t > new_term,
        "after the old leader woke up the record says {m} term {t}"
    );
    let _ = &mut cluster;
}

fn deployment() -> api::Deployment {
    let json = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "demo/web:v1"}]}
            }
        }
    });
    rafter_proto::json::from_value(json).expect("valid deployment")
}
