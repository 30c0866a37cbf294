//! Rafter's scheduler: binds pending pods to nodes. Runs on the Raft leader
//! only; its client carries the leader's term, so a deposed leader's
//! bindings are rejected by the state machine. docs/SCHEDULER.md tells the
//! whole story.
//!
//! Module map, from the pure parts to the loop that drives them:
//!
//! - `resources`: what a pod requests and a node can give, per resource.
//! - `node_info`: one node and the sums over the pods placed on it
//!   ([`NodeInfo`]); the digest of a pod the scheduler works with
//!   ([`PodInfo`]).
//! - `filters`: can this node take this pod? (Ready, cordon, taints,
//!   nodeSelector, host ports, resources), each a pure function.
//! - `scores`: how good is this node? (least allocated, balanced
//!   allocation, spreading a controller's replicas), ties broken at random.
//! - `failure`: why a pod fits nowhere, as kube-scheduler words it.
//! - `cache`: nodes and placed pods, including *assumed* ones whose
//!   binding is in flight, and the choice of a node.
//! - `queue`: which pending pod to try next (active, backoff,
//!   unschedulable until the cluster changes).
//! - `scheduler`: [`Scheduler`], the loop: informers in, decisions in
//!   memory, many bindings written at once.

pub mod cache;
pub mod failure;
pub mod filters;
pub mod node_info;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod scores;

pub use cache::Cache;
pub use node_info::{NodeInfo, PodInfo};
pub use scheduler::{Options, Scheduler};
