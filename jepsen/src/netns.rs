//! Real networks for the masters: one Linux network namespace per master,
//! each with its own IP on a bridge in the host namespace, so that the
//! nemesis can partition them with real packet drops (iptables `DROP` per
//! peer inside each namespace).
//!
//! Layout for run id `ID` and base `B` (default `10.77`), subnet `B.ID.0/24`:
//!
//! - bridge `rjbID` in the host namespace with address `B.ID.1`; the harness
//!   (clients, nemesis) reaches the masters through it;
//! - namespace `rjID-nI` for master `nI`, with `lo` up and one end of a veth
//!   pair (`rjIDpI` inside, `rjIDhI` on the bridge) with address
//!   `B.ID.(10+I)`;
//! - a host `FORWARD ... ACCEPT` rule for traffic within the bridge (hosts
//!   with `br_netfilter` loaded, e.g. with Docker, would otherwise drop it).
//!
//! A partition is a set of cut links; for each cut link `a`–`b` the
//! namespace of `a` gets `INPUT -s b -j DROP` and `OUTPUT -d b -j DROP` and
//! likewise for `b`. Traffic from the host address is never dropped, so
//! clients reach every side, as in Jepsen. Healing flushes those chains.
//!
//! Everything is removed when the [`Netns`] is dropped, and leftovers with
//! the same names (from a run that crashed, including masters still running
//! in those namespaces) are removed before setting up.
//! Needs root, `ip` (iproute2) and `iptables`.

use std::collections::BTreeSet;
use std::process::Command;

/// Failures setting up or changing the network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Network namespaces cannot be used here.
    #[error("network namespaces unavailable: {0}")]
    Unavailable(String),
    /// A command failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr / exit status.
        output: String,
    },
}

/// Whether namespaces can be used: root, `ip` and `iptables` present, and
/// a namespace with iptables in it can be made.
/// `Err` says what is missing.
pub fn check_available() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Err(format!(
            "not running as root (effective uid {uid}); network namespaces and iptables need root"
        ));
    }
    for (tool, args, package) in [
        ("ip", ["netns", "list"], "iproute2"),
        ("iptables", ["-V", ""], "iptables"),
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        match Command::new(tool).args(&args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "`{tool} {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "`{tool}` not found ({e}); install the {package} package"
                ));
            }
        }
    }
    // Root is not always enough (e.g. a container without CAP_SYS_ADMIN, a
    // kernel without nf_tables): try a namespace with iptables in it.
    let probe = format!("rjprobe{}", std::process::id());
    let tried = sh("ip", &["netns", "add", &probe]).and_then(|()| {
        sh(
            "ip",
            &["netns", "exec", &probe, "iptables", "-w", "-S", "INPUT"],
        )
    });
    quiet("ip", &["netns", "del", &probe]);
    tried.map_err(|e| format!("cannot use a network namespace with iptables: {e}"))
}

/// Where the network lives.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Run id, 0–255: names the bridge and namespaces and is the third octet
    /// of the subnet.
    pub id: u8,
    /// First two octets of the subnet, e.g. `10.77`.
    pub base: String,
}

impl NetConfig {
    /// A config with an id whose bridge does not exist and whose subnet is
    /// not routed on this host yet, chosen at random (so that concurrent
    /// runs do not collide).
    pub fn pick(base: &str) -> Result<NetConfig, NetError> {
        use rand::seq::SliceRandom;
        let links = output(Command::new("ip").args(["-o", "link", "show"]))?;
        let routes = output(Command::new("ip").args(["-4", "route", "show"]))?;
        let mut ids: Vec<u8> = (1..=254).collect();
        ids.shuffle(&mut rand::rng());
        ids.into_iter()
            .find(|id| {
                !links.contains(&format!(" rjb{id}:"))
                    && !links.contains(&format!(" rjb{id}@"))
                    && !routes.contains(&format!("{base}.{id}."))
            })
            .map(|id| NetConfig {
                id,
                base: base.to_string(),
            })
            .ok_or_else(|| NetError::Unavailable(format!("no free subnet under {base}.0.0/16")))
    }

    fn bridge(&self) -> String {
        format!("rjb{}", self.id)
    }

    /// The host's address on the bridge.
    pub fn host_ip(&self) -> String {
        format!("{}.{}.1", self.base, self.id)
    }

    /// Node `i`'s (0-based) address.
    pub fn node_ip(&self, i: usize) -> String {
        format!("{}.{}.{}", self.base, self.id, 11 + i)
    }

    /// Node `i`'s (0-based) namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("rj{}-n{}", self.id, i + 1)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("rj{}h{}", self.id, i + 1)
    }

    fn ns_veth(&self, i: usize) -> String {
        format!("rj{}p{}", self.id, i + 1)
    }

    fn forward_rule(&self) -> Vec<String> {
        let b = self.bridge();
        ["FORWARD", "-i", &b, "-o", &b, "-j", "ACCEPT"]
            .into_iter()
            .map(String::from)
            .collect()
    }
}

/// The namespaces and bridge of one run; removed on drop.
#[derive(Debug)]
pub struct Netns {
    config: NetConfig,
    nodes: usize,
    cut: BTreeSet<(usize, usize)>,
    /// Whether links are redirected through slow-link proxies.
    redirected: bool,
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output(cmd: &mut Command) -> Result<String, NetError> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(NetError::Command {
            command: describe(cmd),
            output: format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        }),
        Err(e) => Err(NetError::Command {
            command: describe(cmd),
            output: e.to_string(),
        }),
    }
}

fn sh(program: &str, args: &[&str]) -> Result<(), NetError> {
    output(Command::new(program).args(args)).map(|_| ())
}

/// Runs a command and ignores failure (cleanup of things that may not exist).
fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// Creates the bridge and `nodes` namespaces (after removing leftovers
    /// with the same names).
    pub fn setup(config: NetConfig, nodes: usize) -> Result<Netns, NetError> {
        check_available().map_err(NetError::Unavailable)?;
        let net = Netns {
            config,
            nodes,
            cut: BTreeSet::new(),
            redirected: false,
        };
        net.teardown();
        // From here on, `net` is dropped (and torn down) on any error.
        let c = &net.config;
        let bridge = c.bridge();
        sh("ip", &["link", "add", &bridge, "type", "bridge"])?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", c.host_ip()),
                "dev",
                &bridge,
            ],
        )?;
        sh("ip", &["link", "set", &bridge, "up"])?;
        let rule = c.forward_rule();
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        sh("iptables", &[&["-I"], &rule[..]].concat())?;
        for i in 0..nodes {
            let ns = c.namespace(i);
            let (host, inner) = (c.host_veth(i), c.ns_veth(i));
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &[
                    "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns,
                ],
            )?;
            sh("ip", &["link", "set", &host, "master", &bridge])?;
            sh("ip", &["link", "set", &host, "up"])?;
            let in_ns = |args: &[&str]| sh("ip", &[&["netns", "exec", &ns], args].concat());
            in_ns(&["ip", "link", "set", "lo", "up"])?;
            in_ns(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", c.node_ip(i)),
                "dev",
                &inner,
            ])?;
            in_ns(&["ip", "link", "set", &inner, "up"])?;
        }
        Ok(net)
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.config.namespace(i),
        ]
    }

    /// Cuts the links `(a, b)` (node indices, both directions), in addition
    /// to any already cut.
    pub fn cut(&mut self, links: &[(usize, usize)]) -> Result<(), NetError> {
        for &(a, b) in links {
            let link = (a.min(b), a.max(b));
            if a == b || !self.cut.insert(link) {
                continue;
            }
            for (me, peer) in [(link.0, link.1), (link.1, link.0)] {
                let ns = self.config.namespace(me);
                let ip = self.config.node_ip(peer);
                for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                    sh(
                        "ip",
                        &[
                            "netns", "exec", &ns, "iptables", "-w", "-A", chain, dir, &ip, "-j",
                            "DROP",
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Sends new connections from master `from` to master `to`'s `port`
    /// to `host_port` on the host (a slow-link proxy), for each `(from, to,
    /// host_port)`; and resets `from`'s connections still open directly to
    /// `to`, so that they are made again, through the proxy. (Filtering
    /// runs after the DNAT, so proxied connections do not match the reset
    /// rule.)
    pub fn redirect(&mut self, links: &[(usize, usize, u16)], port: u16) -> Result<(), NetError> {
        self.redirected = true;
        let host = self.config.host_ip();
        for &(from, to, host_port) in links {
            let ns = self.config.namespace(from);
            let ip = self.config.node_ip(to);
            let port = port.to_string();
            let dest = format!("{host}:{host_port}");
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-w",
                    "-t",
                    "nat",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-d",
                    &ip,
                    "--dport",
                    &port,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &dest,
                ],
            )?;
            sh(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-w",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-d",
                    &ip,
                    "-j",
                    "REJECT",
                    "--reject-with",
                    "tcp-reset",
                ],
            )?;
        }
        Ok(())
    }

    /// The links cut now.
    pub fn cut_links(&self) -> Vec<(usize, usize)> {
        self.cut.iter().copied().collect()
    }

    /// Restores full connectivity: flushes INPUT and OUTPUT in every
    /// namespace (and the nat table's OUTPUT, after a redirect).
    pub fn heal(&mut self) -> Result<(), NetError> {
        if self.cut.is_empty() && !self.redirected {
            return Ok(());
        }
        for i in 0..self.nodes {
            let ns = self.config.namespace(i);
            for chain in ["INPUT", "OUTPUT"] {
                sh("ip", &["netns", "exec", &ns, "iptables", "-w", "-F", chain])?;
            }
            if self.redirected {
                sh(
                    "ip",
                    &[
                        "netns", "exec", &ns, "iptables", "-w", "-t", "nat", "-F", "OUTPUT",
                    ],
                )?;
            }
        }
        self.cut.clear();
        self.redirected = false;
        Ok(())
    }

    /// Kills any process still in the namespaces (kill -9) and removes the
    /// namespaces, veths, bridge and FORWARD rule; whatever does not exist
    /// is skipped.
    pub fn teardown(&self) {
        let c = &self.config;
        // Namespaces of leftover runs may have more nodes than this one.
        for i in 0..self.nodes.max(9) {
            // Masters orphaned by a harness that was killed would keep a
            // namespace alive (and their data directory busy).
            let ns = c.namespace(i);
            if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", &ns])) {
                for pid in pids.split_whitespace() {
                    quiet("kill", &["-9", pid]);
                }
            }
            quiet("ip", &["link", "del", &c.host_veth(i)]);
            quiet("ip", &["netns", "del", &c.namespace(i)]);
        }
        quiet("ip", &["link", "del", &c.bridge()]);
        let rule = c.forward_rule();
        let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
        while quiet("iptables", &[&["-w", "-D"], &rule[..]].concat()) {}
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Every link between `a` and `b` (pairs with one end in each).
pub fn links_between(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .filter(|(x, y)| x != y)
        .collect()
}
