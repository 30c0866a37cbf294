//! Real multi-process clusters for the integration tests: `rafter server`
//! processes on 127.0.0.1 with free ports and temporary data directories,
//! which tests kill, pause, restart and extend.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use rafter_client::Client;
use rafter_client::ClientOptions;

pub mod agent;

/// The `rafter` binary under test.
pub fn rafter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rafter"))
}

/// A port nobody listens on right now.
///
/// Picked at random below Linux's ephemeral range (32768–60999), not with
/// `bind(0)`: the kernel hands out ephemeral ports to outgoing connections
/// too, and with many clients and masters running at once one of them
/// regularly took a port between this call and the master's bind (or
/// before a restart), failing the master with "address already in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // Never the same port twice in one test binary: ports handed out are
    // usually bound only later.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    loop {
        // splitmix64 over seed + sequence: distinct per call and per process.
        let mut z = seed.wrapping_add(
            SEQ.fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let port = 20_000 + (z % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// Polls `check` every 100 ms until it returns Some, failing the test
/// with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One master process.
pub struct Master {
    pub name: String,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Flags that say how it joins (`--initial-cluster ...` or `--join ...`).
    pub bootstrap: Vec<String>,
    pub child: Option<Child>,
}

/// A cluster of master processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub masters: Vec<Master>,
    /// Extra flags given to every master.
    pub extra: Vec<String>,
}

/// The admin token every test cluster uses.
pub const TOKEN: &str = "test-admin-token";

/// Flags that make elections and snapshots quick enough for tests.
pub const FAST: &[&str] = &["--heartbeat-ms", "50", "--election-timeout-ms", "300"];

impl Cluster {
    /// Starts `n` masters forming a new cluster.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_each(n, extra, |_| Vec::new())
    }

    fn master(&self, name: &str, addr: &str, bootstrap: Vec<String>) -> Master {
        Master {
            name: name.into(),
            addr: addr.into(),
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
            bootstrap,
            child: None,
        }
    }

    /// Adds a master that joins through the current members (not started
    /// until [`Cluster::restart`] is called with its index).
    pub fn add_joiner(&mut self, name: &str) -> usize {
        let seeds = self
            .masters
            .iter()
            .map(|m| m.addr.clone())
            .collect::<Vec<_>>()
            .join(",");
        let addr = format!("127.0.0.1:{}", free_port());
        let m = self.master(name, &addr, vec!["--join".into(), seeds]);
        self.masters.push(m);
        self.masters.len() - 1
    }

    /// (Re)starts master `i` with its data directory and flags.
    pub fn restart(&mut self, i: usize) {
        let extra = self.extra.clone();
        let token_file = self.dir.path().join("token");
        if !token_file.exists() {
            std::fs::write(&token_file, TOKEN).expect("write token file");
        }
        let m = &mut self.masters[i];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open log");
        let child = Command::new(rafter_bin())
            .args(["server", "--name", &m.name, "--listen", &m.addr])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--token-file")
            .arg(&token_file)
            .args(&m.bootstrap)
            .args(&extra)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn rafter server");
        m.child = Some(child);
    }

    /// kill -9 of master `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.masters[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. "-STOP", "-CONT", "-TERM") to master `i`.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.masters[i].child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGTERM and wait for master `i` to exit; returns its exit status.
    pub fn stop(&mut self, i: usize) -> std::process::ExitStatus {
        self.signal(i, "-TERM");
        let mut c = self.masters[i].child.take().expect("running");
        c.wait().expect("wait")
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.addr.clone()).collect()
    }

    /// The addresses of every master but `i`.
    pub fn endpoints_except(&self, i: usize) -> Vec<String> {
        self.masters
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, m)| m.addr.clone())
            .collect()
    }

    pub fn endpoint_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// A client that knows every master.
    pub async fn client(&self) -> Client {
        self.client_for(&self.endpoints()).await
    }

    /// A client that knows only the given endpoints.
    pub async fn client_for(&self, endpoints: &[String]) -> Client {
        let options = ClientOptions {
            request_timeout: Duration::from_secs(3),
            overall_timeout: Duration::from_secs(30),
            token: Some(TOKEN.into()),
            ..ClientOptions::default()
        };
        Client::connect_with_options(endpoints, options)
            .await
            .expect("client")
    }

    /// Index of the master that reports itself leader, waiting up to 30 s
    /// for exactly one running master to say so and the others to agree.
    pub async fn leader(&self) -> usize {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            let mut leader_ids = Vec::new();
            for (i, m) in self.masters.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                if let Ok(s) = client.status_of(&m.addr).await {
                    if s.leader_id == s.member_id && s.leader_id != 0 {
                        leaders.push(i);
                    }
                    leader_ids.push(s.leader_id);
                }
            }
            let agree =
                !leader_ids.is_empty() && leader_ids.iter().all(|l| *l == leader_ids[0] && *l != 0);
            if leaders.len() == 1 && agree {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single agreed leader within 30 s: {leaders:?} {leader_ids:?}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a leader and for the system namespaces every master
    /// creates at start-up (`default` among them), so a test can create
    /// objects at once.
    pub async fn objects_ready(&self) -> usize {
        let leader = self.leader().await;
        let client = self.client().await;
        wait_for("the default namespace", Duration::from_secs(30), || {
            let client = client.clone();
            async move {
                client
                    .get_object::<rafter_proto::api::Namespace>("", "default")
                    .await
                    .ok()
            }
        })
        .await;
        leader
    }

    /// The last lines of every master's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for m in &self.masters {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ({})\n", m.name, m.log.display()));
            for l in &lines[lines.len().saturating_sub(8)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until master `i` has applied at least `index`.
    pub async fn wait_applied(&self, i: usize, index: u64) {
        let client = self.client().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = client.status_of(&self.masters[i].addr).await
                && s.applied_index >= index
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not apply index {index} within 60 s",
                self.masters[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `rafter ARGS` with this cluster's endpoints; returns (success,
    /// stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        self.cli_with_env(args, &[])
    }

    /// The `rafter` command [`Cluster::cli`] runs, for tests that need a
    /// child process (e.g. `get -w`).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rafter_bin());
        c.args(args)
            .env("RAFTER_ENDPOINTS", self.endpoint_flag())
            .env("RAFTER_TOKEN", TOKEN)
            .env("RAFTER_CONFIG", self.dir.path().join("no-config"));
        c
    }

    /// [`Cluster::cli`] with extra environment variables.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut c = self.cli_command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run rafter");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.masters.len() {
            if let Some(c) = self.masters[i].child.as_ref() {
                // Resume paused masters so they can be killed cleanly.
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(c.id().to_string())
                    .status();
            }
            self.kill(i);
        }
        if std::thread::panicking() {
            for m in &self.masters {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("==== last lines of {} ====", m.name);
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Every key but the API server's objects and Rafter's own records under /rafter/ (serializable) on one master.
pub async fn dump(client: &Client, addr: &str) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    let options = ClientOptions {
        token: Some(TOKEN.into()),
        ..ClientOptions::default()
    };
    let one = rafter_client::Client::connect_with_options([addr], options)
        .await
        .expect("client");
    let _ = client;
    let resp = one
        .range(rafter_proto::kv::RangeRequest {
            key: Vec::new(),
            prefix: true,
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("range");
    // Objects the API server writes by itself (the system namespaces) are
    // not the test's keys.
    resp.kvs
        .into_iter()
        .filter(|kv| !kv.key.starts_with(b"/registry/") && !kv.key.starts_with(b"/rafter/"))
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect()
}

impl Cluster {
    /// Like [`Cluster::start`], with flags for each master on top of
    /// `extra` (e.g. its own `--metrics-listen` port): `per_master(i)` gives
    /// the flags of master `i`.
    pub fn start_each(
        n: usize,
        extra: &[&str],
        per_master: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let names: Vec<(String, String)> = (1..=n)
            .map(|i| (format!("m{i}"), format!("127.0.0.1:{}", free_port())))
            .collect();
        let initial = names
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            masters: Vec::new(),
            extra: FAST.iter().chain(extra).map(|s| s.to_string()).collect(),
            dir,
        };
        for (i, (name, addr)) in names.into_iter().enumerate() {
            // The per-master flags ride along with the bootstrap flags, so
            // `restart` passes them again.
            let mut flags = vec!["--initial-cluster".to_string(), initial.clone()];
            flags.extend(per_master(i));
            let m = cluster.master(&name, &addr, flags);
            cluster.masters.push(m);
        }
        for i in 0..n {
            cluster.restart(i);
        }
        cluster
    }
}
