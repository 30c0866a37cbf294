//! The workloads, each generic over [`Driver`] so etcd and Rafter see
//! exactly the same requests: puts, linearizable and serializable gets,
//! watch latency across members, and leader failover under writes.
//!
//! Keys are 8 ASCII digits drawn uniformly from 100 000; values are 256
//! bytes.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use crate::cluster::Cluster;
use crate::driver::Driver;
use crate::error::BenchError;
use crate::load::closed_loop;
use crate::report::Failover;
use crate::report::Kill;
use crate::report::Watch;
use crate::report::Workload;
use crate::stats::Latency;
use crate::stats::micros;

/// Keys are drawn from this many.
pub const KEYSPACE: u64 = 100_000;
/// Bytes per value.
pub const VALUE_BYTES: usize = 256;
/// Writers during the failover workload.
pub const FAILOVER_WRITERS: usize = 16;

/// Key number `n`: 8 ASCII digits.
pub fn key(n: u64) -> Vec<u8> {
    format!("{n:08}").into_bytes()
}

fn value() -> Vec<u8> {
    vec![b'v'; VALUE_BYTES]
}

/// Warm-up and measured period of one load run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
}

/// Puts of random keys from `clients` concurrent clients.
pub async fn put<D: Driver>(d: &D, clients: usize, t: Timing) -> Workload {
    let conns = d.conns();
    let d = d.clone();
    let r = closed_loop(clients, t.warmup, t.measure, move |w, n| {
        let conn = (w + n as usize) % conns;
        let key = key(rand::random_range(0..KEYSPACE));
        let d = d.clone();
        async move { d.put(conn, key, value()).await.map(|_| ()) }
    })
    .await;
    Workload::from_load("put", clients, r)
}

/// Gets of random keys from `clients` concurrent clients.
pub async fn get<D: Driver>(d: &D, clients: usize, serializable: bool, t: Timing) -> Workload {
    let conns = d.conns();
    let d = d.clone();
    let r = closed_loop(clients, t.warmup, t.measure, move |w, n| {
        let conn = (w + n as usize) % conns;
        let key = key(rand::random_range(0..KEYSPACE));
        let d = d.clone();
        async move { d.get(conn, key, serializable).await }
    })
    .await;
    let name = if serializable {
        "get-serializable"
    } else {
        "get-linearizable"
    };
    Workload::from_load(name, clients, r)
}

/// One writer puts keys one after another through member `writer`; a
/// watcher connected to member `watcher` alone receives their events.
/// Measures from each put's acknowledgement (and from its sending) to its
/// event arriving.
pub async fn watch<D: Driver>(
    d: &D,
    writer: usize,
    watcher: usize,
    measure: Duration,
) -> Result<Watch, BenchError> {
    let mut rx = d.watch(watcher, b"w/".to_vec()).await?;
    // The watch is in place once it delivers a key written after it started.
    let deadline = Instant::now() + Duration::from_secs(20);
    'sync: loop {
        d.put(writer, b"w/sync".to_vec(), value()).await?;
        let wait_until = Instant::now() + Duration::from_millis(200);
        while let Ok(Some((k, _))) = tokio::time::timeout_at(wait_until.into(), rx.recv()).await {
            if k == b"w/sync" {
                break 'sync;
            }
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "watch on member {watcher} delivered nothing within 20 s"
            )));
        }
    }
    let mut sent: Vec<(Vec<u8>, Instant, Instant)> = Vec::new();
    let end = Instant::now() + measure;
    let mut i = 0u64;
    while Instant::now() < end {
        let k = format!("w/{i:08}").into_bytes();
        i += 1;
        let t0 = Instant::now();
        if d.put(writer, k.clone(), value()).await.is_ok() {
            sent.push((k, t0, Instant::now()));
        }
    }
    let mut seen = std::collections::HashMap::new();
    let drain_until = Instant::now() + Duration::from_secs(5);
    while seen.len() < sent.len() {
        match tokio::time::timeout_at(drain_until.into(), rx.recv()).await {
            Ok(Some((k, at))) => {
                seen.insert(k, at);
            }
            _ => break,
        }
    }
    let mut after_ack = Vec::new();
    let mut from_send = Vec::new();
    let mut before_ack = 0u64;
    for (k, t0, ack) in &sent {
        if let Some(at) = seen.get(k) {
            from_send.push(micros(at.saturating_duration_since(*t0)));
            if at < ack {
                before_ack += 1;
            }
            after_ack.push(micros(at.saturating_duration_since(*ack)));
        }
    }
    Ok(Watch {
        puts: sent.len() as u64,
        missed: (sent.len() - from_send.len()) as u64,
        seen_before_ack: before_ack,
        after_ack: Latency::of(after_ack),
        from_send: Latency::of(from_send),
    })
}

/// Statuses of `members` asked concurrently; `None` for those that did not
/// answer.
async fn statuses<D: Driver>(d: &D, members: &[usize]) -> Vec<Option<crate::driver::MemberStatus>> {
    futures::future::join_all(
        members
            .iter()
            .map(|&m| async move { d.status(m).await.ok() }),
    )
    .await
}

/// Waits until every member in `members` answers and names the same leader
/// among them; returns the leader's index and term.
pub async fn wait_leader<D: Driver>(
    d: &D,
    members: &[usize],
    bound: Duration,
) -> Result<(usize, u64), BenchError> {
    let deadline = Instant::now() + bound;
    loop {
        let s = statuses(d, members).await;
        if let Some(Some(first)) = s.first()
            && first.leader != 0
            && s.iter()
                .all(|x| x.is_some_and(|x| x.leader == first.leader))
            && let Some(i) = s
                .iter()
                .position(|x| x.is_some_and(|x| x.id == first.leader))
        {
            let term = s.iter().flatten().map(|x| x.term).max().unwrap_or(0);
            return Ok((members[i], term));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(format!(
                "members {members:?} agreed on no leader within {bound:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The highest Raft term any member reports.
pub async fn max_term<D: Driver>(d: &D, n: usize) -> u64 {
    let all: Vec<usize> = (0..n).collect();
    statuses(d, &all)
        .await
        .into_iter()
        .flatten()
        .map(|s| s.term)
        .max()
        .unwrap_or(0)
}

/// Under writes from 16 clients, kills the leader `kills` times (restarting
/// it after each), and measures from each kill to the first write
/// acknowledged in a later term, and the longest gap between acknowledged
/// writes around it.
pub async fn failover<D: Driver>(
    d: &D,
    cluster: &mut Cluster,
    kills: usize,
    settle: Duration,
) -> Result<Failover, BenchError> {
    let all: Vec<usize> = (0..cluster.len()).collect();
    let acked: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let conns = d.conns();
    let writers: Vec<_> = (0..FAILOVER_WRITERS)
        .map(|w| {
            let (d, acked, stop) = (d.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = key(rand::random_range(0..KEYSPACE));
                    match d.put(n % conns, k, value()).await {
                        Ok(term) => acked.lock().expect("lock").push((Instant::now(), term)),
                        Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
            })
        })
        .collect();
    let result = async {
        let mut out = Vec::new();
        for _ in 0..kills {
            let (leader, term) = wait_leader(d, &all, Duration::from_secs(60)).await?;
            tokio::time::sleep(settle).await;
            let scan_from = acked.lock().expect("lock").len();
            let t_kill = Instant::now();
            cluster.kill(leader);
            let deadline = t_kill + Duration::from_secs(30);
            let first = loop {
                let found = acked.lock().expect("lock")[scan_from..]
                    .iter()
                    .filter(|(t, tm)| *t > t_kill && *tm > term)
                    .map(|(t, _)| *t)
                    .min();
                if let Some(t) = found {
                    break Some(t - t_kill);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            tokio::time::sleep(settle / 2).await;
            let t_end = Instant::now();
            cluster.restart(leader)?;
            let mut times: Vec<Instant> = acked
                .lock()
                .expect("lock")
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| *t + settle >= t_kill && *t <= t_end)
                .collect();
            times.sort();
            let stall = times
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or(t_end - t_kill);
            out.push(Kill {
                member: cluster.servers[leader].spec.name.clone(),
                term_before: term,
                first_write_ms: first.map(|f| f.as_secs_f64() * 1e3),
                longest_stall_ms: stall.as_secs_f64() * 1e3,
            });
        }
        Ok::<_, BenchError>(out)
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    Ok(Failover::from_kills(result?))
}
