//! The nemesis: injects one fault at a time into the cluster on a schedule
//! (quiet for an interval, fault for an interval, heal, repeat) and logs each
//! fault's start and end to the history.
//!
//! Faults available on loopback: kill -9 and restart (random node, leader,
//! majority, all) and SIGSTOP / SIGCONT (random node, leader, majority).
//! Partitions need network namespaces and are not implemented yet.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::{self, Cluster, ClusterError};
use crate::history::{EventType, HistoryError, Process, Recorder};

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
}

impl Fault {
    /// Every fault, in a stable order.
    pub const ALL: [Fault; 7] = [
        Fault::KillRandom,
        Fault::KillLeader,
        Fault::KillMajority,
        Fault::KillAll,
        Fault::PauseRandom,
        Fault::PauseLeader,
        Fault::PauseMajority,
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
        }
    }

    fn is_kill(self) -> bool {
        matches!(
            self,
            Fault::KillRandom | Fault::KillLeader | Fault::KillMajority | Fault::KillAll
        )
    }

    /// Parses a comma-separated list: exact names, or `kill` / `pause` for
    /// every fault of that family.
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
                    "unknown fault {s:?} (partitions are not implemented yet); use kill, pause, none or one of {}",
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
            let names: Vec<String> = {
                let mut c = lock(&self.cluster);
                for &i in &targets {
                    if fault.is_kill() {
                        c.kill(i);
                    } else {
                        c.pause(i)?;
                    }
                }
                targets.iter().map(|&i| c.nodes[i].name.clone()).collect()
            };
            let value = json!({"fault": fault.name(), "nodes": names});
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
                for &i in &targets {
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

    /// The nodes `fault` hits now. The leader is asked of the running nodes;
    /// when they do not agree on one, a random node stands in.
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
            Fault::KillRandom | Fault::PauseRandom => vec![all[0]],
            Fault::KillMajority | Fault::PauseMajority => all[..n / 2 + 1].to_vec(),
            Fault::KillAll => (0..n).collect(),
            Fault::KillLeader | Fault::PauseLeader => {
                vec![cluster::leader(client, &up).await.unwrap_or(all[0])]
            }
        }
    }
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
        let kill_pause = Fault::parse_list("kill,pause").unwrap();
        assert_eq!(kill_pause, Fault::ALL.to_vec());
        assert_eq!(
            Fault::parse_list("pause-leader").unwrap(),
            vec![Fault::PauseLeader]
        );
        assert!(Fault::parse_list("partition").is_err());
        assert!(Fault::parse_list("").unwrap().is_empty());
    }
}
