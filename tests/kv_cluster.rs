//! The key-value store as users see it, on real 3-process clusters:
//! follower writes, linearizable reads, leader kills, whole-cluster crashes,
//! watch resumption, compare-and-swap, leases and exactly-once retries.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use common::Cluster;
use futures::StreamExt;
use rafter_client::Client;
use rafter_client::Error;
use rafter_proto::kv as pb;

fn prefix_range(prefix: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.as_bytes().to_vec(),
        prefix: true,
        ..Default::default()
    }
}

async fn values(client: &Client, prefix: &str) -> BTreeMap<String, String> {
    let resp = client.range(prefix_range(prefix)).await.expect("range");
    resp.kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

/// Keeps putting `prefix/N = N` until stopped; returns acknowledged keys
/// and the errors the client returned.
fn spawn_writer(
    client: Client,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{prefix}/{i:06}");
            match client.put(key.clone(), i.to_string(), 0, false).await {
                Ok(_) => acked.lock().unwrap().push(key),
                Err(e) => errors.push(e.to_string()),
            }
            i += 1;
        }
        errors
    })
}

async fn wait_acks(acked: &Arc<Mutex<Vec<String>>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "writer did not reach {n} acknowledged writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_sent_to_a_follower_is_linearizably_readable_from_every_master() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let to_follower = cluster
        .client_for(&[cluster.masters[follower].addr.clone()])
        .await;
    let put = to_follower
        .put("greeting", "hello", 0, false)
        .await
        .expect("put via follower");
    let revision = put.header.expect("header").revision;
    for m in &cluster.masters {
        let only = cluster.client_for(std::slice::from_ref(&m.addr)).await;
        // Linearizable (the default): must see the write at once.
        let resp = only
            .range(pb::RangeRequest {
                key: b"greeting".to_vec(),
                ..Default::default()
            })
            .await
            .expect("linearizable read");
        assert_eq!(resp.kvs.len(), 1, "{} does not see the write", m.name);
        assert_eq!(resp.kvs[0].value, b"hello");
        assert_eq!(resp.kvs[0].mod_revision, revision);
    }

    let (ok, out, err) = cluster.cli(&["cluster", "status", "-o", "json"]);
    assert!(ok, "cluster status failed: {err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(rows.len(), 3);
    let leaders = rows
        .iter()
        .filter(|r| r["leader"] == serde_json::Value::Bool(true))
        .count();
    assert_eq!(leaders, 1, "exactly one leader expected: {out}");
    let (ok, out, _) = cluster.cli(&["cluster", "status"]);
    assert!(ok);
    assert!(out.starts_with("NAME"), "table header expected: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_kill_keeps_the_client_working_and_the_restarted_member_catches_up() {
    let mut cluster = Cluster::start(3, &[]);
    let client = cluster.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = spawn_writer(client.clone(), "w", stop.clone(), acked.clone());
    wait_acks(&acked, 50).await;

    let leader = cluster.leader().await;
    cluster.kill(leader);
    let before = acked.lock().unwrap().len();
    wait_acks(&acked, before + 50).await;
    // Reads keep working too.
    assert!(!values(&client, "w/").await.is_empty());

    cluster.restart(leader);
    wait_acks(&acked, before + 100).await;
    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.unwrap();
    assert!(
        errors.is_empty(),
        "the client surfaced errors across the failover: {errors:?}"
    );

    let stored = values(&client, "w/").await;
    for key in acked.lock().unwrap().iter() {
        assert!(
            stored.contains_key(key),
            "acknowledged write {key} was lost"
        );
    }
    // The restarted member catches up and holds the same data.
    let new_leader = cluster.leader().await;
    let status = client
        .status_of(&cluster.masters[new_leader].addr)
        .await
        .unwrap();
    cluster.wait_applied(leader, status.applied_index).await;
    let expected = common::dump(&client, &cluster.masters[new_leader].addr).await;
    assert_eq!(
        common::dump(&client, &cluster.masters[leader].addr).await,
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_every_master_at_once_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let prefixes = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let mut writers = Vec::new();
    for p in prefixes {
        writers.push(spawn_writer(
            cluster.client().await,
            p,
            stop.clone(),
            acked.clone(),
        ));
    }
    wait_acks(&acked, 400).await;
    for i in 0..3 {
        cluster.kill(i);
    }
    let acknowledged: Vec<String> = acked.lock().unwrap().clone();
    for w in &writers {
        w.abort();
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.leader().await;
    let client = cluster.client().await;
    let mut stored = BTreeMap::new();
    for p in prefixes {
        stored.extend(values(&client, &format!("{p}/")).await);
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|k| !stored.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    // Values are the ones written.
    for k in &acknowledged {
        let n = k.split('/').nth(1).unwrap().parse::<u64>().unwrap();
        assert_eq!(stored[k], n.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_from_a_revision_resumes_across_leader_kill_and_compacted_start_is_refused() {
    let mut cluster = Cluster::start(
        3,
        &[
            "--history-revisions",
            "60",
            "--compaction-interval-ms",
            "200",
        ],
    );
    let leader = cluster.leader().await;
    let client = cluster.client().await;
    let first = client
        .put("w/000", "0", 0, false)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    for i in 1..10 {
        client
            .put(format!("w/{i:03}"), i.to_string(), 0, false)
            .await
            .unwrap();
    }
    // Watch through the leader first, so killing it breaks the stream.
    let leader_addr = cluster.masters[leader].addr.clone();
    let mut order = vec![leader_addr.clone()];
    order.extend(
        cluster
            .endpoints()
            .into_iter()
            .filter(|a| *a != leader_addr),
    );
    let watcher = cluster.client_for(&order).await;
    let mut stream = watcher.watch(pb::WatchRequest {
        key: b"w/".to_vec(),
        prefix: true,
        start_revision: first,
        prev_kv: false,
        ..Default::default()
    });
    let mut seen: Vec<(u64, String)> = Vec::new();
    let collect = |seen: &mut Vec<(u64, String)>, resp: pb::WatchResponse| {
        let rev = resp.header.unwrap().revision;
        for e in resp.events {
            seen.push((rev, String::from_utf8(e.kv.unwrap().key).unwrap()));
        }
    };
    while seen.len() < 10 {
        let resp = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("watch response");
        collect(&mut seen, resp);
    }
    cluster.kill(leader);
    for i in 10..20 {
        client
            .put(format!("w/{i:03}"), i.to_string(), 0, false)
            .await
            .unwrap();
    }
    while seen.len() < 20 {
        let resp = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("watch resumed in time")
            .expect("stream open")
            .expect("watch response");
        collect(&mut seen, resp);
    }
    let keys: Vec<String> = seen.iter().map(|(_, k)| k.clone()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("w/{i:03}")).collect();
    assert_eq!(
        keys, expected,
        "every event after the start revision exactly once, in order"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions strictly increase: {seen:?}"
    );
    assert_eq!(seen[0].0, first);
    drop(stream);

    // Push history past the retention so `first` is compacted everywhere.
    cluster.restart(leader);
    for i in 0..120 {
        client
            .put(format!("filler/{i}"), "x", 0, false)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &cluster.masters {
        loop {
            let s = client.status_of(&m.addr).await;
            if s.as_ref().is_ok_and(|s| s.compact_revision > first) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not compact past {first}",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut stale = client.watch(pb::WatchRequest {
        key: b"w/".to_vec(),
        prefix: true,
        start_revision: first,
        prev_kv: false,
        ..Default::default()
    });
    let item = tokio::time::timeout(Duration::from_secs(20), stale.next())
        .await
        .expect("answer in time")
        .expect("one item");
    assert!(
        matches!(item, Err(Error::Compacted { .. })),
        "expected Compacted, got {item:?}"
    );
    // A past-revision read below the compaction point is refused the same way.
    let past = client
        .range(pb::RangeRequest {
            key: b"w/".to_vec(),
            prefix: true,
            revision: first,
            ..Default::default()
        })
        .await;
    assert!(
        matches!(past, Err(Error::Compacted { .. })),
        "expected Compacted, got {past:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn txn_compare_and_swap_under_contention_has_exactly_one_winner_per_round() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader().await;
    let setup = cluster.client().await;
    setup.put("cas", "0", 0, false).await.unwrap();
    let mut clients = Vec::new();
    for i in 0..12 {
        // Spread the contenders over the masters.
        let mut eps = cluster.endpoints();
        eps.rotate_left(i % 3);
        clients.push(cluster.client_for(&eps).await);
    }
    for round in 0..10u32 {
        let mut tasks = Vec::new();
        for (id, c) in clients.iter().enumerate() {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let txn = pb::TxnRequest {
                    compare: vec![pb::Compare {
                        result: pb::compare::CompareResult::Equal as i32,
                        target: pb::compare::CompareTarget::Value as i32,
                        key: b"cas".to_vec(),
                        target_union: Some(pb::compare::TargetUnion::Value(
                            round.to_string().into_bytes(),
                        )),
                    }],
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: b"cas".to_vec(),
                            value: (round + 1).to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                    write_id: None,
                };
                let resp = c.txn(txn).await.expect("txn");
                (id, resp.succeeded)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (id, won) = t.await.unwrap();
            if won {
                winners.push(id);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let kv = setup.get("cas").await.unwrap().expect("cas exists");
        assert_eq!(kv.value, (round + 1).to_string().into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_keys_vanish_without_keep_alive_and_survive_leader_kill_with_it() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.leader().await;
    let client = cluster.client().await;

    let short = client.lease_grant(2).await.unwrap().id;
    client.put("lease/short", "x", short, false).await.unwrap();
    let kept = client.lease_grant(3).await.unwrap().id;
    client.put("lease/kept", "y", kept, false).await.unwrap();
    assert!(client.get("lease/short").await.unwrap().is_some());

    let stop = Arc::new(AtomicBool::new(false));
    let keeper = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client.lease_keep_alive(kept).await.expect("keep-alive");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // Without keep-alive the key goes (the TTL is 2 s; allow for scheduling).
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get("lease/short").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "lease/short outlived its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        client.get("lease/kept").await.unwrap().is_some(),
        "kept-alive key expired"
    );

    // A leader kill must not expire a kept-alive lease.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    cluster.leader().await;
    tokio::time::sleep(Duration::from_secs(7)).await; // > 2 x TTL on the new leader
    assert!(
        client.get("lease/kept").await.unwrap().is_some(),
        "kept-alive key expired after failover"
    );

    stop.store(true, Ordering::Relaxed);
    keeper.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get("lease/kept").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "lease/kept did not expire once keep-alives stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let revoked = client.lease_revoke(kept).await;
    assert!(
        revoked.as_ref().is_err_and(|e| e.is_not_found()),
        "expired lease is gone: {revoked:?}"
    );
    // A definite answer names the master that gave it.
    let answered = revoked.as_ref().unwrap_err().endpoint().map(str::to_string);
    assert!(
        answered
            .as_ref()
            .is_some_and(|e| client.endpoints().contains(e)),
        "the NOT_FOUND names one of {:?}: {answered:?}",
        client.endpoints()
    );
}

/// The followers' logs differ after a leader dies, and only the longer one
/// can win. When the follower with the shorter log stands first, the other
/// must not wait out its lease and then ask for a term the first has
/// already voted in (refusing each other round after round, about a second
/// in all): it stands at once, above that candidate's term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_leader_kill_the_longer_log_stands_at_once_over_a_shorter_candidate() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let (lagging, ahead) = match leader {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let client = cluster
        .client_for(&[cluster.masters[leader].addr.clone()])
        .await;
    // Paused, the lagging follower misses the last writes, which commit on
    // the leader and the other follower.
    cluster.signal(lagging, "-STOP");
    for i in 0..20 {
        client
            .put(format!("lag/{i:02}"), "v", 0, false)
            .await
            .unwrap();
    }
    cluster.kill(leader);
    // Resumed with its leader long silent, it stands at once, with the
    // shorter log.
    cluster.signal(lagging, "-CONT");

    let new_leader = cluster.leader().await;
    assert_eq!(
        new_leader, ahead,
        "only the follower with every write can win"
    );
    let log = std::fs::read_to_string(&cluster.masters[ahead].log).unwrap();
    assert!(
        log.contains("after_shorter_log_candidate=true"),
        "the follower with the longer log waited out its lease instead of standing \
         at once over the shorter candidate:\n{}",
        cluster.log_tails()
    );
    let client = cluster.client_for(&cluster.endpoints_except(leader)).await;
    assert_eq!(values(&client, "lag/").await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_retried_with_the_same_id_after_leader_change_is_applied_once() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let client = cluster.client().await;
    let id = client.next_write_id();
    let first = client
        .put_with_id("once", "v1", 0, false, id)
        .await
        .unwrap();
    let first_rev = first.header.unwrap().revision;

    cluster.kill(leader);
    cluster.leader().await;
    // The retry (even with another value) returns the first result and
    // changes nothing.
    let retry = client
        .put_with_id("once", "v2", 0, false, id)
        .await
        .unwrap();
    assert_eq!(retry.header.unwrap().revision, first_rev);
    let kv = client.get("once").await.unwrap().unwrap();
    assert_eq!(kv.version, 1);
    assert_eq!(kv.mod_revision, first_rev);
    assert_eq!(kv.value, b"v1");

    // A fresh id is a new write.
    let second = client.put("once", "v3", 0, false).await.unwrap();
    assert!(second.header.unwrap().revision > first_rev);
    assert_eq!(client.get("once").await.unwrap().unwrap().version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_at_a_past_revision_sees_the_state_of_that_revision() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader().await;
    let client = cluster.client().await;
    let r1 = client
        .put("p/a", "1", 0, false)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    let r2 = client
        .put("p/a", "2", 0, false)
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    client.delete("p/a", false, false).await.unwrap();
    client.put("p/b", "3", 0, false).await.unwrap();
    let at = |rev: u64| {
        let client = client.clone();
        async move {
            let req = pb::RangeRequest {
                key: b"p/".to_vec(),
                prefix: true,
                revision: rev,
                ..Default::default()
            };
            let resp = client.range(req).await.unwrap();
            resp.kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key).unwrap(),
                        String::from_utf8(kv.value).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(at(r1).await, vec![("p/a".to_string(), "1".to_string())]);
    assert_eq!(at(r2).await, vec![("p/a".to_string(), "2".to_string())]);
    assert_eq!(at(0).await, vec![("p/b".to_string(), "3".to_string())]);
    let future = client
        .range(pb::RangeRequest {
            key: b"p/".to_vec(),
            prefix: true,
            revision: r2 + 100,
            ..Default::default()
        })
        .await;
    assert!(future.is_err(), "a future revision is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_cli_puts_gets_deletes_runs_txns_and_grants_leases() {
    let cluster = Cluster::start(3, &[]);
    cluster.leader().await;
    let (ok, out, err) = cluster.cli(&["kv", "put", "tour/hello", "world"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "OK");
    let (ok, out, _) = cluster.cli(&["kv", "get", "tour/hello"]);
    assert!(ok);
    assert_eq!(out, "tour/hello\nworld\n");
    let (ok, out, _) = cluster.cli(&["kv", "get", "tour/", "--prefix", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kvs"][0]["key"], "tour/hello");
    assert_eq!(v["kvs"][0]["value"], "world");
    assert_eq!(v["count"], 1);

    let dir = tempfile::tempdir().unwrap();
    let txn = dir.path().join("txn");
    std::fs::write(
        &txn,
        "value(\"tour/hello\") = \"world\"\n---\nput tour/hello moon\n---\nget tour/hello\n",
    )
    .unwrap();
    let (ok, out, err) = cluster.cli(&["kv", "txn", "--file", txn.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.starts_with("SUCCESS"), "{out}");
    let (ok, out, _) = cluster.cli(&["kv", "txn", "--file", txn.to_str().unwrap()]);
    assert!(ok);
    assert!(out.starts_with("FAILURE"), "{out}");

    let (ok, out, err) = cluster.cli(&["kv", "lease", "grant", "30"]);
    assert!(ok, "{err}");
    let id = out.split_whitespace().nth(1).expect("lease id").to_string();
    let (ok, _, err) = cluster.cli(&["kv", "put", "tour/leased", "x", "--lease", &id]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.cli(&["kv", "lease", "revoke", &id]);
    assert!(ok, "{err}");
    let (ok, out, _) = cluster.cli(&["kv", "get", "tour/leased"]);
    assert!(ok);
    assert_eq!(out, "", "revoking the lease deletes its keys");

    let (ok, out, _) = cluster.cli(&["kv", "del", "tour/", "--prefix"]);
    assert!(ok);
    assert_eq!(out.trim(), "1");
    let (ok, _, err) = cluster.cli(&["kv", "put", "tour/x", "y", "--lease", "ffff"]);
    assert!(!ok, "a put with an unknown lease fails");
    assert!(err.contains("lease ffff not found"), "{err}");
}
