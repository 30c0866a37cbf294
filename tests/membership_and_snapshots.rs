//! Real multi-process clusters changing shape: a member that fell behind the
//! leader's purged log comes back through a snapshot, members are added and
//! removed under a running writer, `rafter server` refuses bad flags and
//! data directories with one clear line, and `--metrics-listen` serves
//! Prometheus text.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use common::dump;
use common::free_port;
use common::rafter_bin;
use common::{Cluster, wait_for};

/// The id and last included log index of the snapshot a master keeps in
/// `<data-dir>/snapshots/snapshot.bin`, if it has one.
///
/// The file is `[meta len u64 BE][meta (bincode)][data]`; the meta ends
/// with the snapshot id, `"<term>-<index>-<random>"`, preceded by its
/// length, whose last byte is 0 for any short id. The random part makes the
/// id unique to the master that built the snapshot.
fn snapshot_of(data_dir: &Path) -> Option<(String, u64)> {
    let bytes = std::fs::read(data_dir.join("snapshots").join("snapshot.bin")).ok()?;
    let len = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let meta = bytes.get(8..8 + len)?;
    let start = meta
        .iter()
        .rposition(|b| !(b.is_ascii_digit() || *b == b'-'))
        .map_or(0, |p| p + 1);
    let id = std::str::from_utf8(&meta[start..]).ok()?.to_string();
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(parts.len(), 3, "unexpected snapshot id {id:?}");
    let index = parts[1].parse().expect("snapshot index");
    Some((id, index))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_stopped_behind_purged_log_rejoins_by_snapshot_install() {
    const SNAPSHOT_LOGS: u64 = 50;
    const KEEP_LOGS: u64 = 10;
    let mut cluster = Cluster::start(3, &["--snapshot-logs", "50", "--keep-logs", "10"]);
    let leader = cluster.leader().await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let client = cluster.client().await;
    client
        .put("before", "kill", 0, false)
        .await
        .expect("put before kill");
    let leader_addr = cluster.masters[leader].addr.clone();
    // No writes run now, so the follower's log ends at or before this.
    let follower_log_end = client
        .status_of(&leader_addr)
        .await
        .expect("leader status")
        .commit_index;
    cluster.kill(follower);
    assert_eq!(
        snapshot_of(&cluster.masters[follower].data_dir),
        None,
        "the follower built a snapshot before it was stopped"
    );

    // 2000 puts from 20 sequential writers: a log entry gathers at most the
    // proposals waiting at once, so this is well over a hundred entries.
    let writers: Vec<_> = (0..20)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let key = format!("w{w:02}/k{i:03}");
                    client
                        .put(key.clone(), format!("value {w} {i}"), 0, false)
                        .await
                        .unwrap_or_else(|e| panic!("put {key}: {e}"));
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer task");
    }

    // The leader's snapshot is far past the follower's log, and the log
    // behind it is purged down to KEEP_LOGS entries: the follower cannot be
    // caught up from the log. Snapshots are built in the background; wait
    // for the last one the writes trigger (fewer than SNAPSHOT_LOGS
    // committed entries after it), so the leader has one snapshot to send.
    let leader_dir = cluster.masters[leader].data_dir.clone();
    let commit = client
        .status_of(&leader_addr)
        .await
        .expect("leader status")
        .commit_index;
    let (leader_snapshot, snapshot_index) = wait_for(
        "the leader's last snapshot",
        Duration::from_secs(20),
        || {
            let dir = leader_dir.clone();
            async move { snapshot_of(&dir).filter(|(_, index)| commit - index < SNAPSHOT_LOGS) }
        },
    )
    .await;
    assert!(
        snapshot_index > follower_log_end + KEEP_LOGS + SNAPSHOT_LOGS,
        "leader snapshot at index {snapshot_index} does not leave the follower (log ends at {follower_log_end}) behind the purged log"
    );

    cluster.restart(follower);
    let applied = client
        .status_of(&leader_addr)
        .await
        .expect("leader status")
        .applied_index;
    cluster.wait_applied(follower, applied).await;

    // The follower says which snapshot it installed; its id (made by
    // another master: the random part is not the follower's) must lie
    // past the purged log. (Its snapshot file is no proof: the leader's
    // control loops keep writing, so the follower may build a snapshot of
    // its own soon after the install.)
    let log = std::fs::read_to_string(&cluster.masters[follower].log).expect("follower log");
    let installed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("installed a snapshot from the leader"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("snapshot="))
        })
        .collect();
    let index_of = |id: &str| -> u64 {
        id.split('-')
            .nth(1)
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("unexpected snapshot id {id:?}"))
    };
    assert!(
        installed
            .iter()
            .any(|id| index_of(id) > follower_log_end + KEEP_LOGS),
        "the follower installed no snapshot past its log (which ended at {follower_log_end}); installed: {installed:?}; the leader's: {leader_snapshot}"
    );
    for i in 0..3 {
        cluster.wait_applied(i, applied).await;
    }
    let dumps: Vec<_> = dumps_of(&cluster, &client, &[0, 1, 2]).await;
    assert_eq!(dumps[0].len(), 2001, "keys on {}", cluster.masters[0].name);
    for (i, d) in dumps.iter().enumerate().skip(1) {
        assert!(
            *d == dumps[0],
            "{} and {} hold different data",
            cluster.masters[i].name,
            cluster.masters[0].name
        );
    }
}

/// Serializable full dumps of the given masters, in order.
async fn dumps_of(
    cluster: &Cluster,
    client: &rafter_client::Client,
    which: &[usize],
) -> Vec<Vec<(Vec<u8>, Vec<u8>, u64)>> {
    let mut out = Vec::new();
    for &i in which {
        out.push(dump(client, &cluster.masters[i].addr).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fourth_member_added_and_one_removed_while_writer_runs() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.leader().await;
    let client = cluster.client().await;

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, acks) = (client.clone(), stop.clone(), acks.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, value) = (format!("k{i:06}"), format!("v{i}"));
                match client.put(key.clone(), value.clone(), 0, false).await {
                    Ok(_) => {
                        acked.push((key, value));
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(format!("{key}: {e}")),
                }
                i += 1;
            }
            (acked, errors)
        })
    };
    let acked_at_least = |n: u64| {
        let acks = acks.clone();
        async move {
            wait_for(
                &format!("{n} acknowledged writes"),
                Duration::from_secs(20),
                || {
                    let acks = acks.clone();
                    async move { (acks.load(Ordering::Relaxed) >= n).then_some(()) }
                },
            )
            .await
        }
    };
    acked_at_least(50).await;

    let m4 = cluster.add_joiner("m4");
    cluster.restart(m4);
    let admin = cluster.client().await;
    wait_for("m4 to be a voter", Duration::from_secs(40), || {
        let admin = admin.clone();
        async move {
            let members = admin.member_list().await.ok()?.members;
            members
                .iter()
                .any(|m| m.name == "m4" && !m.is_learner)
                .then_some(())
        }
    })
    .await;
    let seen = acks.load(Ordering::Relaxed);
    acked_at_least(seen + 50).await;

    let leader = cluster.leader().await;
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    let victim_name = cluster.masters[victim].name.clone();
    let left = admin
        .member_remove(victim_name.as_str())
        .await
        .expect("member remove");
    assert!(
        left.members.iter().all(|m| m.name != victim_name),
        "{victim_name} is still listed after removal: {:?}",
        left.members
    );
    cluster.kill(victim);
    let seen = acks.load(Ordering::Relaxed);
    acked_at_least(seen + 50).await;

    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writer.await.expect("writer task");
    assert!(errors.is_empty(), "the writer saw errors: {errors:?}");

    let remaining: Vec<usize> = (0..cluster.masters.len())
        .filter(|i| *i != victim)
        .collect();
    let leader = cluster.leader().await;
    let applied = client
        .status_of(&cluster.masters[leader].addr)
        .await
        .expect("leader status")
        .applied_index;
    for &i in &remaining {
        cluster.wait_applied(i, applied).await;
    }
    let dumps = dumps_of(&cluster, &client, &remaining).await;
    for (d, &i) in dumps.iter().zip(&remaining).skip(1) {
        assert!(
            *d == dumps[0],
            "{} and {} hold different data",
            cluster.masters[i].name,
            cluster.masters[remaining[0]].name
        );
    }
    let stored: BTreeMap<Vec<u8>, Vec<u8>> = dumps[0]
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    for (key, value) in &acked {
        assert_eq!(
            stored.get(key.as_bytes()).map(Vec::as_slice),
            Some(value.as_bytes()),
            "acknowledged write {key} is missing or wrong"
        );
    }

    let (ok, out, err) = cluster.cli(&["cluster", "members"]);
    assert!(ok, "rafter cluster members failed: {err}");
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"m4"),
        "m4 missing from `rafter cluster members`:\n{out}"
    );
    assert!(
        !names.contains(&victim_name.as_str()),
        "{victim_name} still in `rafter cluster members`:\n{out}"
    );
    assert_eq!(
        names.len(),
        3,
        "`rafter cluster members` should list three masters:\n{out}"
    );
}

/// Runs `rafter server ARGS`, asserts that it fails within 10 s with exactly
/// one line on stderr starting `Error: `, and returns that line.
fn server_fails(args: &[&str]) -> String {
    let mut child = Command::new(rafter_bin())
        .arg("server")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rafter server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`rafter server {}` did not exit within 10 s",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(
        !status.success(),
        "`rafter server {}` succeeded; stderr: {stderr}",
        args.join(" ")
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("Error: "),
        "`rafter server {}` should print one `Error: ` line, printed:\n{stderr}",
        args.join(" ")
    );
    lines[0].to_string()
}

fn assert_mentions(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "error {line:?} does not mention {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_user_errors_get_one_line_messages() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.leader().await;
    let m1 = &cluster.masters[0];
    let (dir, addr) = (
        m1.data_dir.to_str().expect("utf-8 path").to_string(),
        m1.addr.clone(),
    );
    let other_addr = format!("127.0.0.1:{}", free_port());

    // Locked by the running master.
    let line = server_fails(&["--name", "m1", "--data-dir", &dir, "--listen", &other_addr]);
    assert_mentions(&line, &["locked by another process", &dir]);

    cluster.stop(0);

    // Another member's data dir.
    let line = server_fails(&["--name", "m9", "--data-dir", &dir, "--listen", &other_addr]);
    assert_mentions(&line, &["belongs to member \"m1\"", "\"m9\"", &dir]);

    // Another cluster's data dir: same name, different initial cluster.
    let initial = format!("m1={addr},m2={other_addr}");
    let line = server_fails(&[
        "--name",
        "m1",
        "--data-dir",
        &dir,
        "--listen",
        &addr,
        "--initial-cluster",
        &initial,
    ]);
    assert_mentions(&line, &["belongs to another cluster", &dir]);

    let scratch = tempfile::tempdir().expect("temp dir");
    let fresh = |name: &str| {
        scratch
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    };

    // An on-disk format this build does not know.
    let future = fresh("future");
    std::fs::create_dir_all(&future).expect("mkdir");
    let mut f = std::fs::File::create(Path::new(&future).join("member.json")).expect("member.json");
    f.write_all(br#"{"format_version": 99, "cluster_id": 1, "name": "m1"}"#)
        .expect("write");
    drop(f);
    let only_me = format!("m1={other_addr}");
    let line = server_fails(&[
        "--name",
        "m1",
        "--data-dir",
        &future,
        "--listen",
        &other_addr,
        "--initial-cluster",
        &only_me,
    ]);
    assert_mentions(&line, &["on-disk format version 99", &future]);

    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let unused = fresh("unused");
    let line = server_fails(&[
        "--name",
        "m1",
        "--data-dir",
        &unused,
        "--listen",
        &taken_addr,
        "--initial-cluster",
        &format!("m1={taken_addr}"),
    ]);
    assert_mentions(&line, &[&taken_addr, "address already in use"]);
    assert!(
        !Path::new(&unused).join("member.json").exists(),
        "a refused start recorded an identity in its data dir"
    );
    drop(taken);

    // Malformed --initial-cluster.
    let line = server_fails(&[
        "--name",
        "m1",
        "--data-dir",
        &fresh("a"),
        "--listen",
        &other_addr,
        "--initial-cluster",
        "m1",
    ]);
    assert_mentions(
        &line,
        &["malformed --initial-cluster", "\"m1\"", "name=host:port"],
    );
    let line = server_fails(&[
        "--name",
        "m1",
        "--data-dir",
        &fresh("b"),
        "--listen",
        &other_addr,
        "--initial-cluster",
        "m1=nohost",
    ]);
    assert_mentions(
        &line,
        &["malformed --initial-cluster", "m1=nohost", "host:port"],
    );

    // --name not among the initial members.
    let two = format!("m1={other_addr},m2=127.0.0.1:{}", free_port());
    let line = server_fails(&[
        "--name",
        "m3",
        "--data-dir",
        &fresh("c"),
        "--listen",
        &other_addr,
        "--initial-cluster",
        &two,
    ]);
    assert_mentions(&line, &["--name m3 is not in --initial-cluster", "m1, m2"]);
}

/// `GET /metrics` over a plain TCP connection; returns the body.
fn scrape(addr: &str) -> String {
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to metrics port");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: rafter\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head and body");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "bad response head: {head}"
    );
    assert!(
        head.contains("text/plain; version=0.0.4"),
        "not Prometheus text: {head}"
    );
    body.to_string()
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        if n != name {
            return None;
        }
        v.trim().parse().ok()
    })
}

/// A 3-master cluster whose masters serve metrics; returns it and the
/// metrics addresses, by master.
fn cluster_with_metrics() -> (Cluster, Vec<String>) {
    let metrics: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let cluster = Cluster::start_each(3, &[], |i| {
        vec!["--metrics-listen".into(), metrics[i].clone()]
    });
    (cluster, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_endpoint_serves_prometheus_text() {
    let (cluster, metrics) = cluster_with_metrics();
    let leader = cluster.leader().await;
    let client = cluster.client().await;
    client.put("metrics", "on", 0, false).await.expect("put");

    for (i, addr) in metrics.iter().enumerate() {
        let is_leader = i == leader;
        let text = wait_for(
            &format!("metrics of {}", cluster.masters[i].name),
            Duration::from_secs(10),
            || {
                let addr = addr.clone();
                async move {
                    let text = tokio::task::spawn_blocking(move || scrape(&addr))
                        .await
                        .expect("scrape");
                    let up = sample(&text, "rafter_raft_term")? >= 1.0
                        && sample(&text, "rafter_raft_commit_index")? >= 1.0
                        && sample(&text, "rafter_raft_leader_changes_seen_total")? >= 1.0
                        && sample(&text, "rafter_wal_fsync_duration_seconds_count")? >= 1.0
                        && sample(&text, "rafter_db_total_size_in_bytes")? > 0.0
                        && (!is_leader
                            || sample(&text, "rafter_proposal_duration_seconds_count")? >= 1.0)
                        // The leader's control loops start their informers
                        // a moment after it is elected.
                        && (!is_leader || sample(&text, "rafter_watchers")? > 0.0);
                    up.then_some(text)
                }
            },
        )
        .await;
        for name in [
            "rafter_raft_term",
            "rafter_raft_commit_index",
            "rafter_proposal_duration_seconds",
            "rafter_wal_fsync_duration_seconds",
            "rafter_db_total_size_in_bytes",
            "rafter_watchers",
            "rafter_raft_leader_changes_seen_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{} metrics lack {name}:\n{text}",
                cluster.masters[i].name
            );
        }
        // Only the leader's control loops (informers) watch, on their own
        // master; the test opens no watch.
        let watchers = sample(&text, "rafter_watchers").expect("rafter_watchers sample");
        if is_leader {
            assert!(
                watchers > 0.0,
                "the leader's informers must show as watchers"
            );
        } else {
            assert_eq!(watchers, 0.0, "no watch is open on a follower");
        }
        assert!(
            text.contains("rafter_proposal_duration_seconds_bucket{le=\""),
            "the proposal histogram has no buckets:\n{text}"
        );
    }
}

/// Writes sent to a follower reach the leader in batched forward RPCs: the
/// follower's forwarder puts every write that arrives while earlier
/// forwards are in flight into the next RPC. Each write still gets its own
/// result (its own revision) and is readable from every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_to_a_follower_share_forward_rpcs() {
    let (cluster, metrics) = cluster_with_metrics();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let to_follower = cluster
        .client_for(&[cluster.masters[follower].addr.clone()])
        .await;
    let counters = |addr: String| async move {
        let text = tokio::task::spawn_blocking(move || scrape(&addr))
            .await
            .expect("scrape");
        (
            sample(&text, "rafter_forward_batches_total").expect("forward batches sample"),
            sample(&text, "rafter_forwarded_proposals_total").expect("forwarded sample"),
        )
    };
    let (batches_before, forwarded_before) = counters(metrics[follower].clone()).await;

    const WRITES: usize = 400;
    let writes = (0..WRITES).map(|i| {
        let client = to_follower.clone();
        tokio::spawn(async move {
            let key = format!("fwd/{i:03}");
            let resp = client
                .put(key.as_str(), format!("v{i}"), 0, false)
                .await
                .unwrap_or_else(|e| panic!("put {key} via the follower: {e}"));
            (key, resp.header.expect("header").revision)
        })
    });
    let mut revisions = BTreeMap::new();
    for w in writes.collect::<Vec<_>>() {
        let (key, revision) = w.await.expect("writer");
        revisions.insert(revision, key);
    }
    assert_eq!(
        revisions.len(),
        WRITES,
        "every forwarded write must get its own revision"
    );

    let (batches, forwarded) = counters(metrics[follower].clone()).await;
    let (batches, forwarded) = (batches - batches_before, forwarded - forwarded_before);
    assert!(
        forwarded >= WRITES as f64,
        "the follower forwarded {forwarded} proposals for {WRITES} writes"
    );
    assert!(
        batches * 2.0 <= forwarded,
        "{forwarded} concurrent proposals took {batches} forward RPCs: they are not batched"
    );

    // Each write is readable, linearizably, from every master, at the
    // revision its own result named.
    for m in &cluster.masters {
        let only = cluster.client_for(std::slice::from_ref(&m.addr)).await;
        let resp = only
            .range(rafter_proto::kv::RangeRequest {
                key: b"fwd/".to_vec(),
                prefix: true,
                ..Default::default()
            })
            .await
            .expect("linearizable range");
        let seen: BTreeMap<u64, String> = resp
            .kvs
            .into_iter()
            .map(|kv| (kv.mod_revision, String::from_utf8(kv.key).expect("utf-8")))
            .collect();
        assert_eq!(seen, revisions, "{} disagrees", m.name);
    }
}
