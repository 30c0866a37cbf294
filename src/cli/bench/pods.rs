//! `rafter bench pods`: how long a pod takes from its create to all its
//! containers running, with the image present (issue 7's target: p99
//! under 1 s), on real node agents and this machine's Docker engine.
//!
//! It starts 3 masters with the `rafter-bench` crate's launcher (as `bench
//! kv` and `bench scheduler` do), builds the demo and sandbox images so
//! both are present, joins `--nodes` real `rafter agent` processes with a
//! bootstrap token ([`pod_agents`](super::pod_agents)), and watches the
//! pods through an informer. After one warm-up pod per node it creates
//! `--pods` pods of `rafter/demo`, `--concurrency` at a time in a closed
//! loop: each of that many workers creates a pod and waits until its
//! status shows every container running before creating the next. Per pod
//! it takes the time the create was acknowledged, and the first watch
//! event showing it bound, running and Ready; at the end it reads Docker's
//! own creation and start times of each pod's sandbox and container, so
//! the total splits into phases ([`pod_report`](super::pod_report)).
//!
//! Then it deletes the pods, lets the agents remove their containers,
//! stops the agents and masters and removes whatever the nodes left in
//! Docker — also on an error, Ctrl-C or SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use rafter_bench::cluster::Cluster;
use rafter_client::informer::{self, Event};
use rafter_client::{Client, ClientOptions, DeleteOptions};
use rafter_nodeagent::docker::{DEMO_IMAGE, Docker};
use rafter_nodeagent::runtime::{self as rt, ContainerRuntime};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::sync::watch;

use super::pod_agents::{self, Agents};
use super::pod_report::{Clock, Machine, PodsReport, Settings, Timeline};

/// Options of `rafter bench pods`.
#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Node agents (`rafter agent` processes on this machine).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Pods to create and time.
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Pods starting at once: each of this many workers creates a pod and
    /// waits until all its containers run before creating the next.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Directory for bench-pods.json.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// The masters' --pod-cidr: each node's Docker network gets a /24 of
    /// it, so it must not overlap another Docker network of this machine.
    #[arg(long, default_value = "10.210.0.0/16")]
    pub pod_cidr: ipnet::Ipv4Net,
    /// Node names are PREFIX-1 ... PREFIX-N; containers and networks of
    /// these names left by an earlier run are removed first.
    #[arg(long, default_value = "bench-node")]
    pub node_prefix: String,
    /// The rafter binary the masters and agents run (default: this one).
    #[arg(long)]
    pub rafter_bin: Option<PathBuf>,
    /// Where the run directory goes (default: the system temp directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the run directory (data, master and agent logs) afterwards.
    #[arg(long)]
    pub keep_data: bool,
    /// Extra flag for every `rafter server` (repeatable).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Extra flag for every `rafter agent` (repeatable), e.g.
    /// --agent-arg=--sync-period --agent-arg=500ms.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
}

/// The namespace of the benchmark's pods.
const NAMESPACE: &str = "default";
/// Masters of the cluster.
const MASTERS: usize = 3;
/// How long one pod may take to run before the run fails.
const POD_LIMIT: Duration = Duration::from_secs(120);
/// Prefix of the measured pods' names (warm-up pods have another).
const MEASURED: &str = "pod-";

/// Runs the benchmark, prints its figures and writes bench-pods.json.
pub async fn run(a: PodsArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.pods == 0 || a.concurrency == 0 {
        bail!("--nodes, --pods and --concurrency must be at least 1");
    }
    // Node IPAM gives each node a /24 of the range.
    let node_bits = a.nodes.next_power_of_two().trailing_zeros();
    if u32::from(a.pod_cidr.prefix_len()) + node_bits > 24 {
        bail!(
            "--pod-cidr {} has no room for {} nodes' /24s",
            a.pod_cidr,
            a.nodes
        );
    }
    let bin = match &a.rafter_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this program's path")?,
    };
    let parent = a.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("rafter-bench-pods-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a run directory in {}", parent.display()))?;
    let nodes: Vec<String> = (1..=a.nodes)
        .map(|i| format!("{}-{i}", a.node_prefix))
        .collect();
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    outln!(
        "rafter bench pods: {MASTERS} masters, {} node agents, {} pods of {DEMO_IMAGE}, {} starting at once ({build} build)",
        a.nodes,
        a.pods,
        a.concurrency
    )?;

    let docker = Docker::connect()
        .await
        .context("rafter bench pods runs its pods in Docker")?;
    let left = pod_agents::remove_docker_state(&docker, &nodes).await;
    if left > 0 {
        outln!("removed {left} containers left by an earlier run")?;
    }
    docker.ensure_sandbox_image().await?;
    docker.build_demo_image().await?;
    outln!("images {} and {DEMO_IMAGE} present", rt::SANDBOX_IMAGE)?;
    let machine = Machine::this(docker.version().await?);

    let mut server_args = vec!["--pod-cidr".to_string(), a.pod_cidr.to_string()];
    server_args.extend(a.server_args.iter().cloned());
    let mut cluster = Cluster::rafter(&bin, dir.path(), MASTERS, &server_args)?;
    let mut agents: Option<Agents> = None;
    let settings = Settings {
        masters: MASTERS,
        nodes: a.nodes,
        pods: a.pods,
        concurrency: a.concurrency,
        image: DEMO_IMAGE.into(),
        build: build.into(),
        rafter_bin: bin.display().to_string(),
        pod_cidr: a.pod_cidr.to_string(),
        server_args,
        agent_args: a.agent_args.clone(),
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let run = Run {
        args: &a,
        bin: &bin,
        dir: dir.path().to_path_buf(),
        nodes: &nodes,
        docker: &docker,
        endpoints: cluster.endpoints.clone(),
    };
    let result = tokio::select! {
        r = run.measure(&mut agents) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if let (Err(_), Some(agents)) = (&result, &agents) {
        eprint!("{}", agents.log_tails(15));
    }

    // Clean up whatever happened: the pods through the API while masters
    // and agents run, then by force what is left in Docker.
    if result.is_ok()
        && let Err(e) = run.delete_pods().await
    {
        eprintln!("deleting the pods through the API failed ({e:#}); removing them in Docker");
    }
    if let Some(agents) = &mut agents {
        agents.stop().await;
    }
    let left = pod_agents::remove_docker_state(&docker, &nodes).await;
    if result.is_ok() && left > 0 {
        outln!("removed {left} containers the agents had not removed")?;
    }
    cluster.stop();
    if a.keep_data {
        let kept = dir.keep();
        outln!("data and logs kept in {}", kept.display())?;
    }

    let timelines = result?;
    let report = PodsReport::new(settings, machine, &timelines);
    outln!()?;
    out!("{}", report.text())?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let json = a.out.join("bench-pods.json");
    let text = serde_json::to_string_pretty(&report).expect("the report serializes");
    std::fs::write(&json, text + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    outln!("report: {}", json.display())?;
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

/// A pod of the benchmark: one `rafter/demo` container, no probes (Ready
/// as soon as it runs), a short grace period so the cleanup is quick.
fn pod(name: &str, node: Option<&str>) -> api::Pod {
    let mut p = api::Pod {
        spec: Some(api::PodSpec {
            containers: vec![api::Container {
                name: "app".into(),
                image: DEMO_IMAGE.into(),
                ..Default::default()
            }],
            node_name: node.unwrap_or_default().into(),
            termination_grace_period_seconds: Some(1),
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

/// Timelines by pod name, written by the watch and the workers; the
/// version counter tells waiters that something changed.
#[derive(Clone)]
struct Seen {
    pods: Arc<Mutex<HashMap<String, Timeline>>>,
    changed: watch::Sender<u64>,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            pods: Arc::default(),
            changed: watch::Sender::new(0),
        }
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut Timeline)) {
        f(self
            .pods
            .lock()
            .expect("timeline lock")
            .entry(name.to_string())
            .or_default());
        self.changed.send_modify(|v| *v += 1);
    }

    fn get(&self, name: &str) -> Timeline {
        self.pods
            .lock()
            .expect("timeline lock")
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `done` holds for pod `name`.
    async fn wait(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Timeline) -> bool,
    ) -> anyhow::Result<()> {
        let mut rx = self.changed.subscribe();
        let waited = tokio::time::timeout(POD_LIMIT, async {
            loop {
                rx.borrow_and_update();
                if done(&self.get(name)) {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    bail!("the pod watch stopped");
                }
            }
        })
        .await;
        match waited {
            Ok(r) => r,
            Err(_) => {
                let t = self.get(name);
                bail!(
                    "pod {name} not {what} after {POD_LIMIT:?} (node {:?}, last reason {:?})",
                    t.node,
                    t.last_reason
                )
            }
        }
    }
}

/// Every container of the pod running, per its status.
fn all_running(p: &api::Pod) -> bool {
    let want = p.spec.as_ref().map_or(0, |s| s.containers.len());
    let Some(status) = &p.status else {
        return false;
    };
    want > 0
        && status.container_statuses.len() == want
        && status
            .container_statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

fn is_ready(p: &api::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Why a pod is not running yet, from its status (for error messages).
fn reason(p: &api::Pod) -> String {
    let Some(s) = &p.status else {
        return String::new();
    };
    s.container_statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .map(|w| format!("{}: {}", w.reason, w.message))
        .next()
        .unwrap_or_else(|| s.phase.clone())
}

/// Records, per pod, the first event that showed it bound, running, Ready.
fn watch_pods(client: Client, seen: Seen, clock: Clock) {
    let (_cache, mut events) = informer::start::<api::Pod>(client, NAMESPACE, "");
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let Event::Applied(p) = e else { continue };
            let now = clock.now();
            let node = p
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            seen.update(&p.metadata().name, |t| {
                if !node.is_empty() && t.bound.is_none() {
                    t.bound = Some(now);
                    t.node = node;
                }
                if t.running.is_none() && all_running(&p) {
                    t.running = Some(now);
                    t.status_started_at = p
                        .status
                        .iter()
                        .flat_map(|s| &s.container_statuses)
                        .filter_map(|c| c.state.as_ref()?.running.as_ref())
                        .filter_map(|r| rafter_proto::age::parse_rfc3339_utc(&r.started_at))
                        .max();
                }
                if t.ready.is_none() && is_ready(&p) {
                    t.ready = Some(now);
                }
                if let Some(s) = &p.status {
                    t.restarts = s.container_statuses.iter().map(|c| c.restart_count).sum();
                }
                let why = reason(&p);
                if !why.is_empty() {
                    t.last_reason = why;
                }
            });
        }
    });
}

/// What one run works with.
struct Run<'a> {
    args: &'a PodsArgs,
    bin: &'a PathBuf,
    dir: PathBuf,
    nodes: &'a [String],
    docker: &'a Docker,
    endpoints: Vec<String>,
}

impl Run<'_> {
    /// Brings the agents up, runs the pods, returns the measured pods'
    /// timelines by name.
    async fn measure(
        &self,
        agents: &mut Option<Agents>,
    ) -> anyhow::Result<Vec<(String, Timeline)>> {
        let a = self.args;
        let client = Client::connect_with_options(self.endpoints.clone(), options()).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = client.list::<api::Namespace>("", "", "").await {
            if Instant::now() > deadline {
                return Err(anyhow::Error::new(e).context("the masters did not come up in 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Join the agents with a bootstrap token, as `rafter local up` does.
        let (id, secret) = rafter_apiserver::auth::generate_bootstrap_token();
        let token = crate::cli::token::token_secret(
            &id,
            &secret,
            Duration::from_secs(600),
            "rafter bench pods",
        );
        crate::cli::token::store_token(&client, &token).await?;
        // Room for every pod, with a quarter to spare.
        let max_pods = ((a.pods + a.nodes) * 5 / 4).div_ceil(a.nodes).max(110) as u32;
        *agents = Some(Agents::start(
            self.bin,
            &self.dir,
            self.nodes,
            &self.endpoints,
            &format!("{id}.{secret}"),
            max_pods,
            &a.agent_args,
        )?);
        let t_agents = Instant::now();
        self.wait_nodes_ready(&client).await?;
        outln!(
            "{} node agents joined, Ready with pod networks in {:.1} s",
            a.nodes,
            t_agents.elapsed().as_secs_f64()
        )?;

        let clock = Clock::start();
        let seen = Seen::new();
        watch_pods(client.clone(), seen.clone(), clock);

        // One pod per node first, bound there directly: every agent has
        // started a pod (and its first-use costs) before the measurement.
        let warmups: Vec<String> = self.nodes.iter().map(|n| format!("warmup-{n}")).collect();
        for (name, node) in warmups.iter().zip(self.nodes) {
            client.create(&pod(name, Some(node))).await?;
        }
        for name in &warmups {
            seen.wait(name, "running", |t| t.running.is_some()).await?;
        }
        outln!("a warm-up pod runs on every node; creating {} pods", a.pods)?;

        // The measured pods, a closed loop of `concurrency` workers.
        let names: Vec<String> = (0..a.pods).map(|i| format!("{MEASURED}{i:05}")).collect();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(names.iter().cloned())
            .map(|name| {
                let client = client.clone();
                let seen = seen.clone();
                async move {
                    seen.update(&name, |t| t.sent = Some(clock.now()));
                    client
                        .create(&pod(&name, None))
                        .await
                        .with_context(|| format!("creating pod {name}"))?;
                    seen.update(&name, |t| t.acked = Some(clock.now()));
                    seen.wait(&name, "running", |t| t.running.is_some()).await
                }
            })
            .buffer_unordered(a.concurrency)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
        for name in &names {
            seen.wait(name, "Ready", |t| t.ready.is_some()).await?;
        }

        // Docker's own times of each pod's sandbox and container.
        for c in pod_agents::containers_of(self.docker, self.nodes).await {
            let pod = c
                .labels
                .get(rt::LABEL_POD_NAME)
                .cloned()
                .unwrap_or_default();
            let container = c
                .labels
                .get(rt::LABEL_CONTAINER)
                .cloned()
                .unwrap_or_default();
            let restart = c.labels.get(rt::LABEL_RESTART_COUNT).map(String::as_str);
            if !pod.starts_with(MEASURED) || restart != Some("0") {
                continue;
            }
            let (created, started) = self.engine_times(&c.id).await?;
            seen.update(&pod, |t| {
                if container == rt::SANDBOX {
                    t.sandbox_created = created;
                    t.sandbox_started = started;
                } else if t.container_started.is_none_or(|s| started > Some(s)) {
                    t.container_created = created;
                    t.container_started = started;
                }
            });
        }
        Ok(names
            .into_iter()
            .map(|n| {
                let t = seen.get(&n);
                (n, t)
            })
            .collect())
    }

    /// Waits until every node is Ready with a podCIDR.
    async fn wait_nodes_ready(&self, client: &Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = client
                .list::<api::Node>("", "", "")
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|n| self.nodes.contains(&n.metadata().name))
                        .filter(|n| rafter_scheduler::filters::node_ready(n).is_ok())
                        .filter(|n| n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty()))
                        .count()
                })
                .unwrap_or(0);
            if ready == self.nodes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {ready} of {} nodes Ready with a podCIDR after 120 s",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The engine's `Created` and `State.StartedAt` of a container.
    async fn engine_times(
        &self,
        id: &str,
    ) -> anyhow::Result<(Option<SystemTime>, Option<SystemTime>)> {
        let raw = self
            .docker
            .client()
            .inspect_container(id, None)
            .await
            .with_context(|| format!("inspecting container {id}"))?;
        // Through JSON: the Rust type of `Created` depends on bollard's
        // features (a string, or a chrono or time date), the JSON does not.
        let v = serde_json::to_value(&raw).context("the inspect answer as JSON")?;
        let time =
            |s: &serde_json::Value| s.as_str().and_then(rafter_proto::age::parse_rfc3339_utc);
        Ok((time(&v["Created"]), time(&v["State"]["StartedAt"])))
    }

    /// Deletes every pod of the namespace (each stops with its 1 s grace
    /// period, or goes at once where deletes are not graceful) and waits
    /// until the agents have removed their containers.
    async fn delete_pods(&self) -> anyhow::Result<()> {
        let client = Client::connect_with_options(self.endpoints.clone(), options()).await?;
        let pods = client.list::<api::Pod>(NAMESPACE, "", "").await?;
        let t0 = Instant::now();
        let deletes: Vec<Result<api::Pod, rafter_client::Error>> =
            futures::stream::iter(pods.items.iter().map(|p| {
                let client = client.clone();
                let name = p.metadata().name.clone();
                async move {
                    client
                        .delete_object::<api::Pod>(NAMESPACE, &name, &DeleteOptions::default())
                        .await
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        for d in deletes {
            match d {
                Ok(_) => {}
                Err(e) if e.is_reason("NotFound") => {}
                Err(e) => return Err(anyhow::Error::new(e).context("deleting the bench's pods")),
            }
        }
        let deadline = t0 + Duration::from_secs(30);
        loop {
            let left = pod_agents::containers_of(self.docker, self.nodes)
                .await
                .len();
            if left == 0 {
                outln!(
                    "deleted {} pods; the agents removed their containers in {:.1} s",
                    pods.items.len(),
                    t0.elapsed().as_secs_f64()
                )?;
                return Ok(());
            }
            if Instant::now() > deadline {
                outln!(
                    "deleted {} pods; {left} containers still there after 30 s",
                    pods.items.len()
                )?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
