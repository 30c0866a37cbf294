//! `rafter bench scheduler`: how fast the scheduler binds pods, and how
//! soon it resumes after the leader dies (DESIGN's figures: ≥ 1 000 pods/s
//! with 100 simulated nodes and 10 000 pods; < 1 s from leader kill to
//! scheduling again).
//!
//! It starts a 3-master cluster as `rafter bench kv` does (the
//! `rafter-bench` crate's launcher), runs the simulated nodes in this
//! process (`crate::sim`), and watches the pods from here:
//!
//! 1. **Throughput**: creates the pods (many creates in flight) and times
//!    from the first create to the last binding seen by the watch.
//! 2. **Failover**: creates a second batch, kills -9 the leader once a
//!    fifth of it is bound, and times from the kill to the first binding
//!    committed in the new term (a binding whose revision is above the new
//!    leader's control-plane record, which it writes before starting its
//!    scheduler; should the old leader have bound the whole batch before
//!    dying, one more pod is created to see it), then to the last one. Every pod must be bound once, and
//!    no node beyond its pod capacity.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use rafter_bench::cluster::Cluster;
use rafter_client::{Client, ClientOptions, WatchEvent};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio_util::sync::CancellationToken;

use crate::sim::SimOptions;
use crate::supervisor::CONTROL_PLANE_KEY;

/// Options of `rafter bench scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Pods of the throughput run.
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    /// Pods of the failover run (default: a tenth of --pods, at least 10).
    #[arg(long)]
    pub failover_pods: Option<usize>,
    /// Pod creates in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// The rafter binary the masters run (default: this one).
    #[arg(long)]
    pub rafter_bin: Option<PathBuf>,
    /// Where the run directory goes (default: the system temp directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the run directory (data and server logs) afterwards.
    #[arg(long)]
    pub keep_data: bool,
    /// Extra flag for every `rafter server` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// The namespace the benchmark's pods live in.
const NAMESPACE: &str = "default";
/// What each pod requests (small: the pod count is the limit that binds).
const POD_CPU: &str = "10m";
const POD_MEMORY: &str = "16Mi";

/// What the run measured.
#[derive(Debug)]
struct Figures {
    created_secs: f64,
    bound_secs: f64,
    failover_pods: usize,
    pending_at_kill: usize,
    killed: String,
    new_term: u64,
    resumed_secs: f64,
    all_bound_secs: f64,
    moved: usize,
    max_per_node: usize,
    max_pods: u32,
}

/// Runs the benchmark and prints its figures.
pub async fn run(a: SchedulerArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.pods == 0 || a.concurrency == 0 {
        bail!("--nodes, --pods and --concurrency must be at least 1");
    }
    let failover_pods = a.failover_pods.unwrap_or((a.pods / 10).max(10));
    let bin = match &a.rafter_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this program's path")?,
    };
    let parent = a.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("rafter-bench-sched-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a run directory in {}", parent.display()))?;
    outln!(
        "rafter bench scheduler: 3 masters, {} simulated nodes, {} pods, then {} more across a leader kill",
        a.nodes,
        a.pods,
        failover_pods
    )?;
    let mut cluster = rafter_bench::cluster::Cluster::rafter(&bin, dir.path(), 3, &a.server_args)?;
    let sims = CancellationToken::new();
    // Ctrl-C still kills the masters and removes the run directory.
    let result = tokio::select! {
        r = measure(&mut cluster, &a, failover_pods, &sims) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    sims.cancel();
    cluster.stop();
    if a.keep_data {
        let kept = dir.keep();
        outln!("data and server logs kept in {}", kept.display())?;
    }
    let f = result?;
    let pods = a.pods as f64;
    outln!(
        "created {} pods in {:.2} s ({:.0} pods/s, {} at a time)",
        a.pods,
        f.created_secs,
        pods / f.created_secs,
        a.concurrency
    )?;
    outln!(
        "bound   {} pods in {:.2} s: {:.0} pods/s (first create to last binding)",
        a.pods,
        f.bound_secs,
        pods / f.bound_secs
    )?;
    outln!(
        "failover: killed leader {} with {} of {} pods not bound yet",
        f.killed,
        f.pending_at_kill,
        f.failover_pods
    )?;
    outln!(
        "  scheduling resumed {:.3} s after the kill (first binding of term {})",
        f.resumed_secs,
        f.new_term
    )?;
    out!(
        "  all {} bound {:.2} s after the kill; pods whose node changed: {}; ",
        f.failover_pods,
        f.all_bound_secs,
        f.moved
    )?;
    outln!(
        "most pods on one node: {} (capacity {})",
        f.max_per_node,
        f.max_pods
    )?;
    Ok(())
}

fn options() -> ClientOptions {
    ClientOptions {
        token: Some(rafter_bench::rafter_driver::TOKEN.into()),
        request_timeout: Duration::from_secs(5),
        overall_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

/// A pod of the benchmark: one container requesting a little.
fn pod(name: &str) -> api::Pod {
    let requests = [
        ("cpu".to_string(), POD_CPU.to_string()),
        ("memory".to_string(), POD_MEMORY.to_string()),
    ]
    .into();
    let mut p = api::Pod {
        spec: Some(api::PodSpec {
            containers: vec![api::Container {
                name: "app".into(),
                image: "demo/pause".into(),
                resources: Some(api::ResourceRequirements {
                    requests,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.set_type_meta();
    let m = p.metadata_mut();
    m.name = name.into();
    m.namespace = NAMESPACE.into();
    p
}

/// Bindings seen by the watch: pod name → (node, revision, when seen); and
/// how many pods were seen with a node other than their first.
#[derive(Default)]
struct Seen {
    bound: HashMap<String, (String, u64, Instant)>,
    moved: usize,
}

type Shared = Arc<Mutex<Seen>>;

/// Watches the namespace's pods from `revision` and records bindings.
fn watch_bindings(client: Client, revision: String, seen: Shared, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut stream = client.watch_objects::<api::Pod>(NAMESPACE, "", "", &revision);
        loop {
            let ev = tokio::select! {
                e = stream.next() => e,
                _ = stop.cancelled() => return,
            };
            let pod = match ev {
                Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => p,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "bench watch failed");
                    return;
                }
                None => return,
            };
            let node = pod
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            if node.is_empty() {
                continue;
            }
            let m = pod.metadata();
            let rv = m.resource_version.parse().unwrap_or(0);
            let now = Instant::now();
            let mut s = seen.lock().expect("seen lock");
            let moved = match s.bound.get(&m.name) {
                Some((first, _, _)) => *first != node,
                None => {
                    s.bound.insert(m.name.clone(), (node, rv, now));
                    false
                }
            };
            if moved {
                s.moved += 1;
            }
        }
    });
}

/// Creates `names` with `concurrency` creates in flight over `clients`.
async fn create_all(
    clients: &[Client],
    names: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let clients = clients.to_vec();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(names.into_iter().enumerate())
        .map(|(i, name)| {
            let c = clients[i % clients.len()].clone();
            async move {
                match c.create(&pod(&name)).await {
                    Ok(_) => Ok(()),
                    // A retry after a failover whose first attempt landed.
                    Err(e) if e.is_reason("AlreadyExists") => Ok(()),
                    Err(e) => Err(anyhow::Error::new(e).context(format!("creating pod {name}"))),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits until every pod of `names` is bound; returns the last binding's time.
async fn wait_bound(seen: &Shared, names: &[String], limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        {
            let s = seen.lock().expect("seen lock");
            let times: Vec<Instant> = names
                .iter()
                .filter_map(|n| s.bound.get(n).map(|b| b.2))
                .collect();
            if times.len() == names.len() {
                return Ok(times.into_iter().max().unwrap_or_else(Instant::now));
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} pods bound after {:?}",
                    times.len(),
                    names.len(),
                    limit
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bound_count(seen: &Shared, names: &[String]) -> usize {
    let s = seen.lock().expect("seen lock");
    names.iter().filter(|n| s.bound.contains_key(*n)).count()
}

/// (index of the leader, its term) as the members report it.
async fn leader(client: &Client, endpoints: &[String]) -> anyhow::Result<(usize, u64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, ep) in endpoints.iter().enumerate() {
            if let Ok(s) = client.status_of(ep).await
                && s.leader_id != 0
                && s.leader_id == s.member_id
            {
                return Ok((i, s.raft_term));
            }
        }
        if Instant::now() > deadline {
            bail!("no leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The control-plane record's (term, revision), if written.
async fn control_plane(client: &Client) -> Option<(u64, u64)> {
    let kv = client.get(CONTROL_PLANE_KEY).await.ok()??;
    let rec = crate::supervisor::decode_record(&kv.value)?;
    Some((rec.term, kv.mod_revision))
}

async fn measure(
    cluster: &mut Cluster,
    a: &SchedulerArgs,
    failover_pods: usize,
    sims: &CancellationToken,
) -> anyhow::Result<Figures> {
    let endpoints = cluster.endpoints.clone();
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut list = endpoints.clone();
        list.rotate_left(i % endpoints.len());
        clients.push(Client::connect_with_options(list, options()).await?);
    }
    let client = clients[0].clone();
    // The API answers once a leader is elected.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = client.list::<api::Namespace>("", "", "").await {
        if Instant::now() > deadline {
            return Err(anyhow::Error::new(e).context("the cluster did not come up in 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Room for every pod with a quarter to spare, at least 110 per node.
    let total = a.pods + failover_pods + 1;
    let max_pods = (total * 5 / 4).div_ceil(a.nodes).max(110) as u32;
    let sim = SimOptions {
        count: a.nodes,
        prefix: "sim".into(),
        cpu: format!("{}m", 10 * max_pods + 1000),
        memory: format!("{}Mi", 16 * max_pods + 1024),
        max_pods,
        ..SimOptions::default()
    };
    {
        let client = Client::connect_with_options(endpoints.clone(), options()).await?;
        let stop = sims.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::sim::run(client, sim, stop).await {
                tracing::error!(error = %e, "simulated nodes failed");
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .list::<api::Node>("", "", "")
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| rafter_scheduler::filters::node_ready(n).is_ok())
                    .count()
            })
            .unwrap_or(0);
        if ready >= a.nodes {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} simulated nodes Ready after 120 s",
                a.nodes
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outln!("{} simulated nodes Ready", a.nodes)?;

    let start = client.list::<api::Pod>(NAMESPACE, "", "").await?;
    let seen: Shared = Arc::default();
    let stop_watch = sims.child_token();
    watch_bindings(
        client.clone(),
        start.resource_version,
        seen.clone(),
        stop_watch,
    );
    // One pod first: the scheduler is up and the watch sees bindings.
    let warmup = vec!["warmup".to_string()];
    create_all(&clients, warmup.clone(), 1).await?;
    wait_bound(&seen, &warmup, Duration::from_secs(60)).await?;
    outln!("the scheduler bound a first pod; creating {} pods", a.pods)?;

    // 1. Throughput.
    let names: Vec<String> = (0..a.pods).map(|i| format!("b1-{i}")).collect();
    let t0 = Instant::now();
    create_all(&clients, names.clone(), a.concurrency).await?;
    let created_secs = t0.elapsed().as_secs_f64();
    let limit = Duration::from_secs(60 + a.pods as u64 / 20);
    let last = wait_bound(&seen, &names, limit).await?;
    let bound_secs = last.duration_since(t0).as_secs_f64();
    outln!(
        "all {} bound; creating {failover_pods} more and killing the leader",
        a.pods
    )?;

    // 2. Failover.
    let (leader_index, _) = leader(&client, &endpoints).await?;
    let (old_term, _) = control_plane(&client)
        .await
        .context("no control-plane record: is the leader supervisor running?")?;
    let names2: Vec<String> = (0..failover_pods).map(|i| format!("b2-{i}")).collect();
    let creating = {
        let clients = clients.clone();
        let names2 = names2.clone();
        let concurrency = a.concurrency;
        tokio::spawn(async move { create_all(&clients, names2, concurrency).await })
    };
    let fifth = (failover_pods / 5).max(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while bound_count(&seen, &names2) < fifth {
        if Instant::now() > deadline {
            bail!("the second batch was not being bound");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pending_at_kill = failover_pods - bound_count(&seen, &names2);
    let killed = cluster.servers[leader_index].spec.name.clone();
    let t_kill = Instant::now();
    cluster.kill(leader_index);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (new_term, record_rev) = loop {
        if let Some((term, rev)) = control_plane(&client).await
            && term > old_term
        {
            break (term, rev);
        }
        if Instant::now() > deadline {
            bail!("no new leader ran the control plane within 60 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    creating.await.context("the creating task panicked")??;
    let last2 = wait_bound(&seen, &names2, Duration::from_secs(120)).await?;
    let first_new_binding = |seen: &Shared| {
        let s = seen.lock().expect("seen lock");
        s.bound
            .values()
            .filter(|(_, rv, _)| *rv > record_rev)
            .map(|(_, _, at)| *at)
            .min()
    };
    if first_new_binding(&seen).is_none() {
        // The old leader bound the whole batch before it died (small
        // runs): one more pod shows when the new leader schedules.
        let probe = vec!["after-kill".to_string()];
        create_all(&clients, probe.clone(), 1).await?;
        wait_bound(&seen, &probe, Duration::from_secs(60)).await?;
    }
    let first_new = first_new_binding(&seen).context("no binding in the new term")?;
    let moved = seen.lock().expect("seen lock").moved;

    // Nothing over capacity: pods per node from the final state.
    let final_pods = client.list::<api::Pod>(NAMESPACE, "", "").await?;
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in &final_pods.items {
        if let Some(s) = &p.spec
            && !s.node_name.is_empty()
        {
            *per_node.entry(s.node_name.clone()).or_default() += 1;
        }
    }
    Ok(Figures {
        created_secs,
        bound_secs,
        failover_pods,
        pending_at_kill,
        killed,
        new_term,
        resumed_secs: first_new.duration_since(t_kill).as_secs_f64(),
        all_bound_secs: last2.duration_since(t_kill).as_secs_f64(),
        moved,
        max_per_node: per_node.values().copied().max().unwrap_or(0),
        max_pods,
    })
}
