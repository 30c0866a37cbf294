//! The two 3-member clusters under test, as sets of [`Server`] processes on
//! 127.0.0.1 with data directories under one run directory (so both write
//! to the same filesystem).
//!
//! etcd runs with its defaults (heartbeat 100 ms, election timeout 1 s,
//! fdatasync on every commit); Rafter with `rafter server`'s defaults. Both
//! are restarted after a kill with the flags they were first started with;
//! each then recovers from its data directory.

use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;

use rand::Rng;

use crate::error::BenchError;
use crate::process::Server;
use crate::process::ServerSpec;

/// Which system a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Etcd,
    Rafter,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Rafter => "rafter",
        }
    }
}

/// A running cluster: member `i` serves clients at `endpoints[i]`.
#[derive(Debug)]
pub struct Cluster {
    pub system: System,
    pub servers: Vec<Server>,
    pub endpoints: Vec<String>,
}

impl Cluster {
    /// Starts a new etcd cluster of `n` members with data under `dir`.
    pub fn etcd(bin: &Path, dir: &Path, n: usize) -> Result<Cluster, BenchError> {
        check_binary(
            bin,
            "etcd",
            "install Debian's etcd-server (scripts/install-build-deps.sh does), or pass --etcd-bin",
        )?;
        let ports = free_ports(2 * n);
        let client: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", ports[i])).collect();
        let peer: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", ports[n + i]))
            .collect();
        let initial = (0..n)
            .map(|i| format!("e{}={}", i + 1, peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        let servers = (0..n)
            .map(|i| {
                let name = format!("e{}", i + 1);
                let url = format!("http://{}", client[i]);
                let args: Vec<OsString> = [
                    "--name",
                    name.as_str(),
                    "--listen-client-urls",
                    url.as_str(),
                    "--advertise-client-urls",
                    url.as_str(),
                    "--listen-peer-urls",
                    peer[i].as_str(),
                    "--initial-advertise-peer-urls",
                    peer[i].as_str(),
                    "--initial-cluster",
                    initial.as_str(),
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "rafter-bench",
                    "--logger",
                    "zap",
                    "--log-level",
                    "warn",
                ]
                .iter()
                .map(OsString::from)
                .chain([OsString::from("--data-dir"), dir.join(&name).into()])
                .collect();
                Server::new(ServerSpec {
                    log: dir.join(format!("{name}.log")),
                    name,
                    program: bin.to_path_buf(),
                    args,
                    env: Vec::new(),
                })
            })
            .collect();
        Self::start(System::Etcd, servers, client)
    }

    /// Starts a new Rafter cluster of `n` masters with data under `dir`.
    pub fn rafter(
        bin: &Path,
        dir: &Path,
        n: usize,
        extra_args: &[String],
    ) -> Result<Cluster, BenchError> {
        check_binary(bin, "rafter", "build it with `cargo build --release`")?;
        let ports = free_ports(n);
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let initial = (0..n)
            .map(|i| format!("m{}={}", i + 1, addrs[i]))
            .collect::<Vec<_>>()
            .join(",");
        // Every master accepts the same admin token; the driver sends it.
        let token_file = dir.join("admin-token");
        std::fs::write(&token_file, crate::rafter_driver::TOKEN).map_err(|source| {
            BenchError::Io {
                context: format!("writing {}", token_file.display()),
                source,
            }
        })?;
        // Warnings only, unless RAFTER_BENCH_SERVER_LOG names a filter
        // (`info`, `rafter_scheduler=debug`, ...) to profile a run by.
        let log_filter =
            std::env::var("RAFTER_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_string());
        let servers = (0..n)
            .map(|i| {
                let name = format!("m{}", i + 1);
                let args: Vec<OsString> = [
                    "server",
                    "--name",
                    name.as_str(),
                    "--listen",
                    addrs[i].as_str(),
                ]
                .iter()
                .map(OsString::from)
                .chain([OsString::from("--data-dir"), dir.join(&name).into()])
                .chain([OsString::from("--token-file"), token_file.clone().into()])
                .chain([OsString::from("--initial-cluster"), initial.clone().into()])
                .chain(extra_args.iter().map(OsString::from))
                .collect();
                Server::new(ServerSpec {
                    log: dir.join(format!("{name}.log")),
                    name,
                    program: bin.to_path_buf(),
                    args,
                    env: vec![("RUST_LOG".into(), log_filter.clone())],
                })
            })
            .collect();
        Self::start(System::Rafter, servers, addrs)
    }

    fn start(
        system: System,
        servers: Vec<Server>,
        endpoints: Vec<String>,
    ) -> Result<Cluster, BenchError> {
        let mut cluster = Cluster {
            system,
            servers,
            endpoints,
        };
        for s in &mut cluster.servers {
            s.start()?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), BenchError> {
        self.servers[i].start()
    }

    /// Resident memory of every running member, KiB, in member order.
    pub fn rss_kib(&self) -> Vec<u64> {
        self.servers.iter().filter_map(Server::rss_kib).collect()
    }

    /// Resident anonymous memory of every running member, KiB.
    pub fn anon_kib(&self) -> Vec<u64> {
        self.servers.iter().filter_map(Server::anon_kib).collect()
    }

    /// Kills every member.
    pub fn stop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
    }
}

fn check_binary(bin: &Path, what: &'static str, hint: &'static str) -> Result<(), BenchError> {
    if bin.is_file() {
        Ok(())
    } else {
        Err(BenchError::MissingBinary {
            what,
            path: bin.to_path_buf(),
            hint,
        })
    }
}

/// `n` distinct ports free right now, picked at random below Linux's
/// ephemeral range (32768–60999), where outgoing connections would compete
/// for them (the same reasoning as jepsen's cluster launcher).
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut rng = rand::rng();
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let p = rng.random_range(20_000..32_000);
        if !ports.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
    }
    ports
}

/// The etcd binary: `etcd` on $PATH, else /usr/bin/etcd (Debian's etcd-server).
pub fn default_etcd_bin() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// First line of `etcd --version`, e.g. `etcd Version: 3.4.23`.
pub fn etcd_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
