//! `rafter local`: a cluster of masters on this machine, for trying Rafter
//! out and for manual testing.
//!
//! `up` starts N `rafter server` processes in the background (each in its
//! own process group, so a Ctrl-C in the terminal does not reach them),
//! waits until they have elected a leader, and writes a client config so
//! that plain `rafter kv ...` talks to them. Everything lives in one
//! directory (default `./.rafter-local`):
//!
//! ```text
//! cluster     number of masters and base port, so later commands need no flags
//! config      client config for this cluster (also written to ~/.rafter/config)
//! mI/         data directory of master mI
//! mI.log      its stdout and stderr
//! mI.pid      its process id while it runs
//! ```
//!
//! Master `mI` listens on `127.0.0.1:(base + I - 1)` and serves metrics
//! 1000 ports higher. `up` on an existing directory restarts the masters
//! that are not running, from their data; `down` stops them and keeps the
//! data.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rafter_client::{Client, ClientOptions, MemberStatus};
use tokio::time::Instant;

use super::cluster::{is_leader, print_status};
use super::config::{self, ClientConfig};
use super::output::{Table, TableFormat};

const DEFAULT_DIR: &str = "./.rafter-local";
const DEFAULT_MASTERS: usize = 3;
const DEFAULT_BASE_PORT: u16 = 7001;
/// Distance between a master's gRPC port and its metrics port.
const METRICS_PORT_OFFSET: u16 = 1000;
/// How long `up` waits for a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// `rafter local ...`
#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start a cluster of masters on this machine, or resume a stopped one.
    Up(UpArgs),
    /// Stop the local masters (SIGTERM, then SIGKILL after 10s); data is kept.
    Down(DirArgs),
    /// Show the local masters' processes and the cluster status.
    Status(DirArgs),
}

/// Where the local cluster lives.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Directory holding the masters' data, logs and pid files.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

/// `rafter local up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of masters [default: 3, or as when DIR was created].
    #[arg(long, value_name = "N")]
    masters: Option<usize>,
    /// gRPC port of m1; mI uses PORT+I-1, metrics +1000 [default: 7001, or as
    /// when DIR was created].
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// Node agents to start (`node-1` ... `node-N`), running pods in this
    /// machine's Docker engine; 0 for none. Skipped, with a note, when no
    /// Docker engine answers.
    #[arg(long, value_name = "N", default_value_t = 2)]
    nodes: usize,
    #[command(flatten)]
    dir: DirArgs,
}

/// Runs one `rafter local` command.
pub async fn run(command: LocalCommand) -> anyhow::Result<()> {
    match command {
        LocalCommand::Up(a) => up(a).await,
        LocalCommand::Down(a) => down(a).await,
        LocalCommand::Status(a) => status(a).await,
    }
}

/// The shape of a local cluster, kept in `DIR/cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    masters: usize,
    base_port: u16,
}

/// One master of a [`Layout`].
#[derive(Debug)]
struct Master {
    name: String,
    address: String,
    metrics_address: String,
}

impl Layout {
    fn path(dir: &Path) -> PathBuf {
        dir.join("cluster")
    }

    fn load(dir: &Path) -> anyhow::Result<Option<Layout>> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let (mut masters, mut base_port) = (None, None);
        for line in text.lines().map(str::trim) {
            match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("masters", v)) => masters = v.parse().ok(),
                Some(("base-port", v)) => base_port = v.parse().ok(),
                _ => {}
            }
        }
        match (masters, base_port) {
            (Some(masters), Some(base_port)) => Ok(Some(Layout { masters, base_port })),
            _ => bail!(
                "{} is damaged (needs `masters = N` and `base-port = P` lines)",
                path.display()
            ),
        }
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# Written by `rafter local up`; read by `rafter local up|down|status`.\n\
             masters = {}\nbase-port = {}\n",
            self.masters, self.base_port
        );
        let path = Self::path(dir);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=99).contains(&self.masters) {
            bail!("--masters must be between 1 and 99, got {}", self.masters);
        }
        let last_metrics =
            u32::from(self.base_port) + self.masters as u32 - 1 + u32::from(METRICS_PORT_OFFSET);
        if self.base_port == 0 || last_metrics > u32::from(u16::MAX) {
            bail!(
                "--base-port {} does not leave room for {} masters and their metrics ports (+{METRICS_PORT_OFFSET})",
                self.base_port,
                self.masters
            );
        }
        Ok(())
    }

    fn masters(&self) -> Vec<Master> {
        (0..self.masters)
            .map(|i| {
                let port = self.base_port + i as u16;
                Master {
                    name: format!("m{}", i + 1),
                    address: format!("127.0.0.1:{port}"),
                    metrics_address: format!("127.0.0.1:{}", port + METRICS_PORT_OFFSET),
                }
            })
            .collect()
    }

    fn endpoints(&self) -> Vec<String> {
        self.masters().into_iter().map(|m| m.address).collect()
    }

    /// `m1=127.0.0.1:7001,m2=...`, for `rafter server --initial-cluster`.
    fn initial_cluster(&self) -> String {
        self.masters()
            .iter()
            .map(|m| format!("{}={}", m.name, m.address))
            .collect::<Vec<_>>()
            .join(",")
    }
}

async fn up(a: UpArgs) -> anyhow::Result<()> {
    let shown_dir = a.dir.dir.clone();
    fs::create_dir_all(&shown_dir)
        .with_context(|| format!("creating directory {}", shown_dir.display()))?;
    let dir = shown_dir.canonicalize()?;

    let layout = match Layout::load(&dir)? {
        Some(stored) => {
            if a.masters.is_some_and(|m| m != stored.masters)
                || a.base_port.is_some_and(|p| p != stored.base_port)
            {
                bail!(
                    "{} holds a cluster of {} masters from port {}; run `up` with the same \
                     flags (or none), or `{}` and delete the directory to start afresh",
                    shown_dir.display(),
                    stored.masters,
                    stored.base_port,
                    with_dir("rafter local down", &shown_dir)
                );
            }
            stored
        }
        None => Layout {
            masters: a.masters.unwrap_or(DEFAULT_MASTERS),
            base_port: a.base_port.unwrap_or(DEFAULT_BASE_PORT),
        },
    };
    layout.validate()?;
    layout.save(&dir)?;

    let exe = std::env::current_exe().context("finding the rafter executable")?;
    let initial_cluster = layout.initial_cluster();
    // One admin token for every master, kept with the cluster.
    let token_path = dir.join("admin-token");
    rafter_apiserver::auth::ensure_token_file(&token_path)
        .with_context(|| format!("creating {}", token_path.display()))?;
    let token = fs::read_to_string(&token_path)
        .with_context(|| format!("reading {}", token_path.display()))?
        .trim()
        .to_string();
    let mut started: Vec<Started> = Vec::new();
    for m in layout.masters() {
        let data_dir = dir.join(&m.name);
        let pid_path = dir.join(format!("{}.pid", m.name));
        if let Some(pid) = read_pid(&pid_path)?
            && is_running(pid, &data_dir)
        {
            outln!("master {} already running (pid {pid})", m.name)?;
            continue;
        }
        let log_path = dir.join(format!("{}.log", m.name));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&exe)
            .arg("server")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", &m.address])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--metrics-listen", &m.metrics_address])
            .arg("--token-file")
            .arg(&token_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: a Ctrl-C meant for this terminal must not
            // stop the cluster.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting master {}", m.name))?;
        fs::write(&pid_path, format!("{}\n", child.id()))
            .with_context(|| format!("writing {}", pid_path.display()))?;
        outln!(
            "master {} started (pid {}, listening on {}, log {})",
            m.name,
            child.id(),
            m.address,
            shown_dir.join(format!("{}.log", m.name)).display()
        )?;
        started.push(Started {
            name: m.name,
            log_path,
            child,
        });
    }

    outln!("Waiting for a leader...")?;
    let (leader, statuses) = wait_for_leader(&layout, &mut started, &token)
        .await
        .with_context(|| {
            format!(
                "the masters are left running: see their logs in {}, or stop them with `{}`",
                shown_dir.display(),
                with_dir("rafter local down", &shown_dir)
            )
        })?;

    let config = ClientConfig {
        endpoints: layout.endpoints(),
        token: Some(token.clone()),
        namespace: None,
    };
    let local_config = dir.join("config");
    config.write(&local_config)?;
    let user_config = config::config_path()?;
    config.write(&user_config)?;

    let nodes = start_agents(&exe, &dir, &layout, &token, a.nodes).await?;
    outln!(
        "Cluster is up: {} masters, leader {leader}{}.\n",
        layout.masters,
        if nodes > 0 {
            format!(", {nodes} node agents")
        } else {
            String::new()
        }
    )?;
    print_status(&statuses, TableFormat::Table)?;
    outln!(
        "\nClient config written to {} (and {}).",
        user_config.display(),
        shown_dir.join("config").display()
    )?;
    outln!("Next, try:")?;
    if nodes > 0 {
        outln!("  rafter get nodes")?;
        outln!("  rafter create deployment web --image=rafter/demo:latest --replicas=3 --port=80")?;
        outln!("  rafter get pods -o wide")?;
    }
    outln!("  rafter kv put hello world")?;
    outln!("  rafter kv get hello")?;
    outln!("  rafter cluster status")?;
    outln!(
        "Stop the masters with `{}`; `{}` resumes them from their data.",
        with_dir("rafter local down", &shown_dir),
        with_dir("rafter local up", &shown_dir)
    )?;
    Ok(())
}

/// Starts `count` node agents (`node-I`, data in DIR/node-I) unless they
/// run already, after building the demo image; returns how many run. No
/// Docker engine: says so and starts none.
async fn start_agents(
    exe: &Path,
    dir: &Path,
    layout: &Layout,
    token: &str,
    count: usize,
) -> anyhow::Result<usize> {
    if count == 0 {
        return Ok(0);
    }
    let docker = match rafter_nodeagent::docker::Docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            outln!("No node agents: {e}")?;
            return Ok(0);
        }
    };
    use rafter_nodeagent::runtime::ContainerRuntime as _;
    docker.ensure_sandbox_image().await?;
    docker.build_demo_image().await?;
    outln!("images rafter/pause and rafter/demo built")?;
    // A short-lived bootstrap token for the agents that have not joined.
    let client = Client::connect_with_options(
        layout.endpoints(),
        ClientOptions {
            token: Some(token.to_string()),
            ..ClientOptions::default()
        },
    )
    .await?;
    let (id, secret) = rafter_apiserver::auth::generate_bootstrap_token();
    let s = super::token::token_secret(&id, &secret, Duration::from_secs(600), "rafter local up");
    super::token::store_token(&client, &s).await?;
    let join_token = format!("{id}.{secret}");
    for i in 1..=count {
        let name = format!("node-{i}");
        let data_dir = dir.join(&name);
        let pid_path = dir.join(format!("{name}.pid"));
        if let Some(pid) = read_pid(&pid_path)?
            && is_running(pid, &data_dir)
        {
            outln!("agent {name} already running (pid {pid})")?;
            continue;
        }
        let log_path = dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(exe)
            .arg("agent")
            .args(["--server", &layout.endpoints().join(",")])
            .args(["--token", &join_token])
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--agent-port", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting agent {name}"))?;
        fs::write(&pid_path, format!("{}\n", child.id()))
            .with_context(|| format!("writing {}", pid_path.display()))?;
        outln!(
            "agent {name} started (pid {}, log {})",
            child.id(),
            log_path.display()
        )?;
    }
    Ok(count)
}

/// A master this `up` started, watched for an early exit.
struct Started {
    name: String,
    log_path: PathBuf,
    child: Child,
}

/// Polls the cluster status until a master reports itself leader. Fails when
/// a master started here exits, or after [`LEADER_WAIT`].
async fn wait_for_leader(
    layout: &Layout,
    started: &mut [Started],
    token: &str,
) -> anyhow::Result<(String, Vec<MemberStatus>)> {
    let options = ClientOptions {
        request_timeout: Duration::from_secs(1),
        overall_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        token: Some(token.to_string()),
        ..Default::default()
    };
    let client = Client::connect_with_options(layout.endpoints(), options).await?;
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        for s in started.iter_mut() {
            if let Some(exit) = s.child.try_wait()? {
                bail!(
                    "master {} exited ({exit}) before the cluster was up; the end of {}:\n{}",
                    s.name,
                    s.log_path.display(),
                    tail(&s.log_path, 20)
                );
            }
        }
        if let Ok(statuses) = client.cluster_status().await
            && let Some(leader) = leader_name(&statuses)
        {
            return Ok((leader, statuses));
        }
        if Instant::now() >= deadline {
            bail!("no leader was elected within {}s", LEADER_WAIT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The name of the leader, if there is one (see [`is_leader`]).
fn leader_name(statuses: &[MemberStatus]) -> Option<String> {
    statuses.iter().find_map(|m| match &m.status {
        Ok(s) if is_leader(s, statuses) => Some(if s.name.is_empty() {
            m.name.clone()
        } else {
            s.name.clone()
        }),
        _ => None,
    })
}

async fn down(a: DirArgs) -> anyhow::Result<()> {
    let shown_dir = a.dir;
    if !shown_dir.exists() {
        outln!("no local cluster in {}", shown_dir.display())?;
        return Ok(());
    }
    let dir = shown_dir.canonicalize()?;

    let mut stopping: Vec<(String, PathBuf, u32)> = Vec::new();
    for (name, pid_path) in pid_files(&dir)? {
        let Some(pid) = read_pid(&pid_path)? else {
            continue;
        };
        if is_running(pid, &dir.join(&name)) {
            signal(pid, "TERM")?;
            stopping.push((name, pid_path, pid));
        } else {
            outln!("{name} was not running")?;
            remove(&pid_path)?;
        }
    }
    if stopping.is_empty() && pid_files(&dir)?.is_empty() {
        outln!("no local masters are running in {}", shown_dir.display())?;
    }

    let deadline = Instant::now() + STOP_WAIT;
    let mut killed = false;
    while !stopping.is_empty() {
        let mut still = Vec::new();
        for (name, pid_path, pid) in stopping {
            if is_running(pid, &dir.join(&name)) {
                still.push((name, pid_path, pid));
            } else {
                outln!("{name} stopped (pid {pid})")?;
                remove(&pid_path)?;
            }
        }
        stopping = still;
        if !killed && Instant::now() >= deadline {
            for (name, _, pid) in &stopping {
                outln!(
                    "{name} did not stop within {}s; killing it (pid {pid})",
                    STOP_WAIT.as_secs()
                )?;
                signal(*pid, "KILL")?;
            }
            killed = true;
        } else if killed && Instant::now() >= deadline + Duration::from_secs(5) {
            let names: Vec<_> = stopping
                .iter()
                .map(|(n, _, p)| format!("{n} (pid {p})"))
                .collect();
            bail!("could not stop {}", names.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outln!(
        "Data is kept in {}; `{}` resumes the cluster.",
        shown_dir.display(),
        with_dir("rafter local up", &shown_dir)
    )?;
    Ok(())
}

async fn status(a: DirArgs) -> anyhow::Result<()> {
    let shown_dir = a.dir;
    let no_cluster = || {
        format!(
            "no local cluster in {}; start one with `{}`",
            shown_dir.display(),
            with_dir("rafter local up", &shown_dir)
        )
    };
    if !shown_dir.exists() {
        bail!(no_cluster());
    }
    let dir = shown_dir.canonicalize()?;
    let layout = Layout::load(&dir)?.with_context(no_cluster)?;

    let mut table = Table::new(&["NAME", "PID", "RUNNING", "ADDRESS", "LOG"]);
    let mut any_running = false;
    for m in layout.masters() {
        let pid = read_pid(&dir.join(format!("{}.pid", m.name)))?;
        let running = pid.is_some_and(|p| is_running(p, &dir.join(&m.name)));
        any_running |= running;
        table.row(vec![
            m.name.clone(),
            pid.map_or("-".into(), |p| p.to_string()),
            running.to_string(),
            m.address,
            shown_dir
                .join(format!("{}.log", m.name))
                .display()
                .to_string(),
        ]);
    }
    table.print()?;
    if any_running {
        outln!()?;
        let options = ClientOptions {
            request_timeout: Duration::from_secs(2),
            overall_timeout: Duration::from_secs(4),
            token: fs::read_to_string(dir.join("admin-token"))
                .ok()
                .map(|t| t.trim().to_string()),
            ..Default::default()
        };
        let client = Client::connect_with_options(layout.endpoints(), options).await?;
        let statuses = client.cluster_status().await?;
        print_status(&statuses, TableFormat::Table)?;
    }
    Ok(())
}

/// `command`, with `--dir` added when the directory is not the default.
fn with_dir(command: &str, dir: &Path) -> String {
    if dir == Path::new(DEFAULT_DIR) {
        command.to_string()
    } else {
        format!("{command} --dir {}", dir.display())
    }
}

/// `(master name, path)` of every `*.pid` file in `dir`, sorted by name.
fn pid_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pid")
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
        {
            out.push((name.to_string(), path.clone()));
        }
    }
    out.sort();
    Ok(out)
}

/// The pid in a pid file; `None` when there is no file or it holds no pid.
fn read_pid(path: &Path) -> anyhow::Result<Option<u32>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Whether `pid` is a live master serving `data_dir`.
///
/// A pid file can outlive its process (a crash, a reboot) and the pid be
/// reused by something else, which `down` must never signal. Where /proc
/// exists, the process's command line must name `data_dir`; a zombie has an
/// empty command line and counts as stopped. Elsewhere `kill -0` is the best
/// available check.
fn is_running(pid: u32, data_dir: &Path) -> bool {
    if Path::new("/proc/self").exists() {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let wanted = data_dir.as_os_str().as_encoded_bytes();
        return args
            .windows(2)
            .any(|w| w[0] == b"--data-dir" && w[1] == wanted);
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sends `SIG<name>` to `pid` with kill(1) (the workspace forbids the unsafe
/// a direct kill(2) call would need).
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        tracing::debug!(
            pid,
            signal = name,
            "kill failed; the process is probably gone"
        );
    }
    Ok(())
}

/// The last `lines` lines of a log file, indented, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_ports_and_initial_cluster() {
        let l = Layout {
            masters: 3,
            base_port: 7001,
        };
        assert_eq!(
            l.initial_cluster(),
            "m1=127.0.0.1:7001,m2=127.0.0.1:7002,m3=127.0.0.1:7003"
        );
        assert_eq!(l.masters()[2].metrics_address, "127.0.0.1:8003");
        assert!(l.validate().is_ok());
        assert!(
            Layout {
                masters: 0,
                base_port: 7001
            }
            .validate()
            .is_err()
        );
        assert!(
            Layout {
                masters: 3,
                base_port: 65000
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn layout_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Layout::load(dir.path()).unwrap(), None);
        let l = Layout {
            masters: 5,
            base_port: 9001,
        };
        l.save(dir.path()).unwrap();
        assert_eq!(Layout::load(dir.path()).unwrap(), Some(l));
    }

    #[test]
    fn this_process_is_not_a_master() {
        assert!(!is_running(std::process::id(), Path::new("/nonexistent")));
    }

    #[test]
    fn hints_mention_a_non_default_dir() {
        assert_eq!(
            with_dir("rafter local down", Path::new(DEFAULT_DIR)),
            "rafter local down"
        );
        assert_eq!(
            with_dir("rafter local down", Path::new("/tmp/c")),
            "rafter local down --dir /tmp/c"
        );
    }
}
