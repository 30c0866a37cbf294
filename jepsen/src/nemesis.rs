//! The nemesis: injects one fault at a time into the cluster on a schedule
//! (quiet for an interval, fault for an interval, heal, repeat) and logs each
//! fault's start and end to the history.
//!
//! Faults: kill -9 and restart (random node, leader, majority, all),
//! SIGSTOP / SIGCONT (random node, leader, majority), and network partitions
//! (isolate the leader, random halves, a bridge, a ring of overlapping
//! majorities), and a membership change (remove a master, wipe it, add it
//! back). Partitions are real packet drops and need the masters in
//! network namespaces ([`crate::netns`]); on loopback they are unavailable.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::{self, Cluster, ClusterError};
use crate::history::{EventType, HistoryError, Process, Recorder};
use crate::slow_links::SlowLinks;

/// Failures of the nemesis.
#[derive(Debug, thiserror::Error)]
pub enum NemesisError {
    /// Injecting or healing a fault failed.
    #[error("fault injection failed")]
    Cluster(#[from] ClusterError),
    /// The history could not be written.
    #[error("cannot record a fault")]
    History(#[from] HistoryError),
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 one random node, restart it on heal.
    KillRandom,
    /// kill -9 the leader.
    KillLeader,
    /// kill -9 a random majority.
    KillMajority,
    /// kill -9 every node (power loss).
    KillAll,
    /// SIGSTOP one random node, SIGCONT on heal.
    PauseRandom,
    /// SIGSTOP the leader.
    PauseLeader,
    /// SIGSTOP a random majority.
    PauseMajority,
    /// Cut the leader off from every other node.
    PartitionLeader,
    /// Split the nodes at random into a minority and a majority.
    PartitionHalves,
    /// Two halves with one node that sees both sides (for 3 nodes: a and c
    /// cut, b sees both).
    PartitionBridge,
    /// Nodes in a random ring, each seeing only its nearest neighbours, so
    /// that each sees a majority (itself included) but every node a
    /// different one. With 3 nodes symmetric links cannot do that: one link
    /// is cut, as for the bridge.
    PartitionRing,
    /// Remove a random master from the group (MemberRemove), kill it and
    /// wipe its data; on heal start it empty with `--join`, so that it is
    /// added back (as a learner, then a voter once caught up).
    MemberRemove,
    /// Every link between masters delayed (both directions) by a TCP proxy
    /// in the harness ([`crate::slow_links`]).
    SlowLinks,
}

impl Fault {
    /// Every fault, in a stable order.
    pub const ALL: [Fault; 13] = [
        Fault::KillRandom,
        Fault::KillLeader,
        Fault::KillMajority,
        Fault::KillAll,
        Fault::PauseRandom,
        Fault::PauseLeader,
        Fault::PauseMajority,
        Fault::PartitionLeader,
        Fault::PartitionHalves,
        Fault::PartitionBridge,
        Fault::PartitionRing,
        Fault::MemberRemove,
        Fault::SlowLinks,
    ];

    /// The name used on the command line and in the history.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillRandom => "kill-random",
            Fault::KillLeader => "kill-leader",
            Fault::KillMajority => "kill-majority",
            Fault::KillAll => "kill-all",
            Fault::PauseRandom => "pause-random",
            Fault::PauseLeader => "pause-leader",
            Fault::PauseMajority => "pause-majority",
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionHalves => "partition-halves",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionRing => "partition-ring",
            Fault::MemberRemove => "member-remove",
            Fault::SlowLinks => "slow-links",
        }
    }

    /// Whether it is a network partition (needs network namespaces).
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader
                | Fault::PartitionHalves
                | Fault::PartitionBridge
                | Fault::PartitionRing
        )
    }

    /// Whether it needs the masters in network namespaces: partitions and
    /// slow links.
    pub fn needs_network(self) -> bool {
        self.is_partition() || self == Fault::SlowLinks
    }

    fn is_kill(self) -> bool {
        matches!(
            self,
            Fault::KillRandom | Fault::KillLeader | Fault::KillMajority | Fault::KillAll
        )
    }

    /// Parses a comma-separated list: exact names, or `kill` / `pause` /
    /// `partition` for every fault of that family.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let family: Vec<Fault> = Fault::ALL
                .into_iter()
                .filter(|f| f.name().split('-').next() == Some(part))
                .collect();
            if !family.is_empty() {
                out.extend(family);
            } else {
                out.push(part.parse()?);
            }
        }
        out.dedup();
        Ok(out)
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown fault {s:?}; use kill, pause, partition, member, slow, none or one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A fault that was injected, for `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Its kind.
    pub fault: &'static str,
    /// The nodes it hit.
    pub nodes: Vec<String>,
    /// History time it started, ns.
    pub start: u64,
    /// History time it was healed, ns.
    pub end: u64,
}

/// Injects faults into a cluster until told to stop.
pub struct Nemesis {
    /// The cluster, shared with the run for the final heal.
    pub cluster: Arc<Mutex<Cluster>>,
    /// Where start and stop events go.
    pub recorder: Recorder,
    /// Faults to choose from at random.
    pub faults: Vec<Fault>,
    /// Time between faults, and how long each lasts.
    pub interval: Duration,
    /// One-way delay of every link under the slow-links fault.
    pub link_delay: Duration,
}

impl Nemesis {
    /// Runs the schedule until `stop` turns true; the fault active then is
    /// healed before returning.
    pub async fn run(
        self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Vec<FaultRecord>, NemesisError> {
        let mut records = Vec::new();
        if self.faults.is_empty() {
            return Ok(records);
        }
        let endpoints = lock(&self.cluster).endpoints();
        let client = cluster::client(&endpoints, Duration::from_secs(2)).await?;
        loop {
            if sleep_or_stop(self.interval, &mut stop).await {
                break;
            }
            let fault = *self
                .faults
                .choose(&mut rand::rng())
                .expect("faults is not empty");
            let targets = self.targets(fault, &client).await;
            if fault == Fault::SlowLinks {
                let record = self.slow_links(&mut stop).await?;
                records.push(record.0);
                if record.1 {
                    break;
                }
                continue;
            }
            if fault == Fault::MemberRemove {
                if let Some(record) = self.remove_and_rejoin(targets[0], &mut stop).await? {
                    records.push(record.0);
                    if record.1 {
                        break;
                    }
                }
                continue;
            }
            let (names, value) = {
                let mut c = lock(&self.cluster);
                let names: Vec<String>;
                let mut value = json!({"fault": fault.name()});
                if fault.is_partition() {
                    let n = c.nodes.len();
                    let cut = partition_links(fault, &targets, n);
                    c.cut(&cut)?;
                    // `nodes`: every node; `cut`: the links cut; `views`: the distinct
                    // sets of nodes that reach each other directly.
                    names = c.nodes.iter().map(|node| node.name.clone()).collect();
                    let links: Vec<[&str; 2]> = cut
                        .iter()
                        .map(|&(a, b)| [names[a].as_str(), names[b].as_str()])
                        .collect();
                    value["cut"] = json!(links);
                    value["views"] = json!(
                        views(&cut, n)
                            .iter()
                            .map(|g| g.iter().map(|&i| names[i].clone()).collect::<Vec<_>>())
                            .collect::<Vec<_>>()
                    );
                } else {
                    for &i in &targets {
                        if fault.is_kill() {
                            c.kill(i);
                        } else {
                            c.pause(i)?;
                        }
                    }
                    names = targets.iter().map(|&i| c.nodes[i].name.clone()).collect();
                }
                value["nodes"] = json!(names);
                (names, value)
            };
            let start = self.recorder.record(
                Process::Nemesis,
                EventType::Info,
                "start",
                None,
                value.clone(),
                None,
            )?;
            tracing::info!(fault = fault.name(), nodes = ?names, "fault injected");
            let stopped = sleep_or_stop(self.interval, &mut stop).await;
            {
                let mut c = lock(&self.cluster);
                if fault.is_partition() {
                    c.heal_network()?;
                }
                for &i in targets.iter().filter(|_| !fault.is_partition()) {
                    if fault.is_kill() {
                        c.restart(i)?;
                    } else {
                        c.resume(i)?;
                    }
                }
            }
            let end = self.recorder.record(
                Process::Nemesis,
                EventType::Info,
                "stop",
                None,
                value,
                None,
            )?;
            tracing::info!(fault = fault.name(), "fault healed");
            records.push(FaultRecord {
                fault: fault.name(),
                nodes: names,
                start,
                end,
            });
            if stopped {
                break;
            }
        }
        Ok(records)
    }

    /// The membership fault on node `i`: remove it from the group, wipe it,
    /// wait an interval, start it with `--join` and wait (bounded) until it
    /// is a voter again. Returns the record and whether `stop` turned true,
    /// or `None` when the removal could not be confirmed (then nothing was
    /// wiped: wiping a master that is still a voter would break Raft's
    /// assumptions, not test them).
    async fn remove_and_rejoin(
        &self,
        i: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<(FaultRecord, bool)>, NemesisError> {
        let (endpoints, name) = {
            let c = lock(&self.cluster);
            (c.endpoints(), c.nodes[i].name.clone())
        };
        // Membership changes wait for a commit (and an add for catch-up):
        // give them longer than client operations.
        let admin = cluster::client(&endpoints, Duration::from_secs(10)).await?;
        let removed = match admin.member_remove(name.as_str()).await {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(node = %name, "member remove: {e}; asking the member list");
                is_member(&admin, &name, Duration::from_secs(20)).await == Some(false)
            }
        };
        if !removed {
            tracing::warn!(node = %name, "member remove not confirmed; fault skipped");
            return Ok(None);
        }
        lock(&self.cluster).wipe_removed(i)?;
        let value = json!({"fault": Fault::MemberRemove.name(), "nodes": [name]});
        let start = self.recorder.record(
            Process::Nemesis,
            EventType::Info,
            "start",
            None,
            value.clone(),
            None,
        )?;
        tracing::info!(fault = "member-remove", node = %name, "master removed and wiped");
        let stopped = sleep_or_stop(self.interval, stop).await;
        lock(&self.cluster).restart(i)?;
        let bound = Duration::from_secs(30).max(self.interval);
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if is_voter(&admin, &name).await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(node = %name, ?bound, "not a voter again within the bound");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let end =
            self.recorder
                .record(Process::Nemesis, EventType::Info, "stop", None, value, None)?;
        tracing::info!(fault = "member-remove", node = %name, "master joined again");
        Ok(Some((
            FaultRecord {
                fault: Fault::MemberRemove.name(),
                nodes: vec![name],
                start,
                end,
            },
            stopped,
        )))
    }

    /// The slow-links fault: every link between masters through a delaying
    /// proxy for an interval. Returns the record and whether `stop` turned
    /// true.
    async fn slow_links(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(FaultRecord, bool), NemesisError> {
        let (net, names, targets) = {
            let c = lock(&self.cluster);
            let net = c.net_config().ok_or(ClusterError::NoNetwork)?;
            let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
            (net, names, c.endpoints())
        };
        let n = names.len();
        let links: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b)))
            .collect();
        let (proxies, ports) = SlowLinks::start(&net.host_ip(), &targets, &links, self.link_delay)
            .await
            .map_err(|source| ClusterError::Io {
                path: "slow-link proxy".into(),
                source,
            })?;
        let redirects: Vec<(usize, usize, u16)> = links
            .iter()
            .zip(&ports)
            .map(|(&(a, b), &p)| (a, b, p))
            .collect();
        lock(&self.cluster).redirect(&redirects)?;
        let value = json!({
            "fault": Fault::SlowLinks.name(),
            "nodes": names,
            "delay_ms": self.link_delay.as_millis() as u64,
        });
        let start = self.recorder.record(
            Process::Nemesis,
            EventType::Info,
            "start",
            None,
            value.clone(),
            None,
        )?;
        tracing::info!(fault = "slow-links", delay = ?self.link_delay, "links slowed");
        let stopped = sleep_or_stop(self.interval, stop).await;
        lock(&self.cluster).heal_network()?;
        drop(proxies);
        let end =
            self.recorder
                .record(Process::Nemesis, EventType::Info, "stop", None, value, None)?;
        tracing::info!(fault = "slow-links", "links back to full speed");
        Ok((
            FaultRecord {
                fault: Fault::SlowLinks.name(),
                nodes: names,
                start,
                end,
            },
            stopped,
        ))
    }

    /// The nodes `fault` hits now. The leader is asked of the running nodes;
    /// when they do not agree on one, a random node stands in. For
    /// partitions: every node, leader first for `partition-leader`, else in
    /// random order (the order [`partition_links`] splits by).
    async fn targets(&self, fault: Fault, client: &rafter_client::Client) -> Vec<usize> {
        let (n, up): (usize, Vec<(usize, String)>) = {
            let c = lock(&self.cluster);
            let up = c
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, node)| node.is_running() && !node.is_paused())
                .map(|(i, node)| (i, node.addr.clone()))
                .collect();
            (c.nodes.len(), up)
        };
        let mut all: Vec<usize> = (0..n).collect();
        all.shuffle(&mut rand::rng());
        match fault {
            Fault::KillRandom | Fault::PauseRandom | Fault::MemberRemove => vec![all[0]],
            Fault::KillMajority | Fault::PauseMajority => all[..n / 2 + 1].to_vec(),
            Fault::KillAll => (0..n).collect(),
            Fault::KillLeader | Fault::PauseLeader => {
                vec![cluster::leader(client, &up).await.unwrap_or(all[0])]
            }
            Fault::PartitionLeader => {
                let l = cluster::leader(client, &up).await.unwrap_or(all[0]);
                all.retain(|&i| i != l);
                all.insert(0, l);
                all
            }
            Fault::PartitionHalves
            | Fault::PartitionBridge
            | Fault::PartitionRing
            | Fault::SlowLinks => all,
        }
    }
}

/// The links to cut for partition `fault`, given every node index in the
/// order to split by (`order[0]` is the leader for `partition-leader`).
pub fn partition_links(fault: Fault, order: &[usize], n: usize) -> Vec<(usize, usize)> {
    use crate::netns::links_between;
    let mut cut = match fault {
        Fault::PartitionLeader => links_between(&order[..1], &order[1..]),
        // Minority first: n / 2 nodes against the rest.
        Fault::PartitionHalves => links_between(&order[..n / 2], &order[n / 2..]),
        // order[n / 2] is the bridge: both halves without it are cut apart.
        Fault::PartitionBridge => links_between(&order[..n / 2], &order[n / 2 + 1..]),
        Fault::PartitionRing => {
            if n <= 3 {
                // A line a–b–c: a and c each see a majority, b sees all.
                links_between(&order[..1], &order[n - 1..])
            } else {
                // Each node keeps its neighbours within distance d on the
                // ring, d the smallest with 2d + 1 >= a majority.
                let majority = n / 2 + 1;
                let d = majority / 2;
                let mut cut = Vec::new();
                for a in 0..n {
                    for b in a + 1..n {
                        let dist = (b - a).min(n - (b - a));
                        if dist > d {
                            cut.push((order[a], order[b]));
                        }
                    }
                }
                cut
            }
        }
        _ => Vec::new(),
    };
    for link in &mut cut {
        *link = (link.0.min(link.1), link.0.max(link.1));
    }
    cut.sort_unstable();
    cut
}

/// For each node, the nodes it can reach directly (itself included), when
/// `cut` links are down; distinct sets only, sorted.
pub fn views(cut: &[(usize, usize)], n: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (0..n)
        .map(|a| {
            (0..n)
                .filter(|&b| !cut.contains(&(a.min(b), a.max(b))))
                .collect()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether `name` is in the member list, asking until an answer or `bound`.
async fn is_member(client: &rafter_client::Client, name: &str, bound: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Ok(list) = client.member_list().await {
            return Some(list.members.iter().any(|m| m.name == name));
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `name` is a voter, by one member list.
async fn is_voter(client: &rafter_client::Client, name: &str) -> bool {
    client
        .member_list()
        .await
        .is_ok_and(|l| l.members.iter().any(|m| m.name == name && !m.is_learner))
}

fn lock(c: &Mutex<Cluster>) -> std::sync::MutexGuard<'_, Cluster> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sleeps for `d`; true when `stop` turned true first (or already was).
pub async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => None,
        r = stop.wait_for(|s| *s) => Some(r.is_ok()),
    };
    stopped.unwrap_or_else(|| *stop.borrow())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_expand_families_and_reject_unknown_names() {
        let all = Fault::parse_list("kill,pause,partition,member,slow").unwrap();
        assert_eq!(all, Fault::ALL.to_vec());
        let partitions = Fault::parse_list("partition").unwrap();
        assert_eq!(partitions.len(), 4);
        assert!(partitions.iter().all(|f| f.is_partition()));
        assert_eq!(
            Fault::parse_list("pause-leader").unwrap(),
            vec![Fault::PauseLeader]
        );
        assert!(Fault::parse_list("partition-everything").is_err());
        assert!(Fault::parse_list("").unwrap().is_empty());
    }

    fn reach(cut: &[(usize, usize)], n: usize) -> Vec<usize> {
        (0..n)
            .map(|a| {
                (0..n)
                    .filter(|&b| !cut.contains(&(a.min(b), a.max(b))))
                    .count()
            })
            .collect()
    }

    #[test]
    fn partitions_cut_the_expected_links() {
        let order = [2, 0, 1];
        // Leader 2 isolated.
        let cut = partition_links(Fault::PartitionLeader, &order, 3);
        assert_eq!(cut, vec![(0, 2), (1, 2)]);
        assert_eq!(views(&cut, 3), vec![vec![0, 1], vec![2]]);
        // Halves: {2} against {0, 1}.
        assert_eq!(partition_links(Fault::PartitionHalves, &order, 3), cut);
        // Bridge: 0 sees both 2 and 1, which are cut apart.
        let cut = partition_links(Fault::PartitionBridge, &order, 3);
        assert_eq!(cut, vec![(1, 2)]);
        assert_eq!(reach(&cut, 3), vec![3, 2, 2]);

        // Five nodes.
        let order = [0, 1, 2, 3, 4];
        let cut = partition_links(Fault::PartitionHalves, &order, 5);
        assert_eq!(cut.len(), 6);
        assert_eq!(views(&cut, 5), vec![vec![0, 1], vec![2, 3, 4]]);
        let cut = partition_links(Fault::PartitionBridge, &order, 5);
        assert_eq!(reach(&cut, 5), vec![3, 3, 5, 3, 3]);
        // Ring: everyone sees exactly a majority, each a different one.
        let cut = partition_links(Fault::PartitionRing, &order, 5);
        assert_eq!(reach(&cut, 5), vec![3; 5]);
        assert_eq!(views(&cut, 5).len(), 5);
        let cut = partition_links(Fault::PartitionRing, &[0, 1, 2], 3);
        assert_eq!(reach(&cut, 3), vec![2, 3, 2]);
    }
}
