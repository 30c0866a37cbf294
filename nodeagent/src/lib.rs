//! Rafter's node agent (`rafter agent`): the kubelet and kube-proxy of a
//! Rafter cluster in one process.
//!
//! Module map:
//!
//! - `agent`: the main loop — join, register, pod network, heartbeat, pods.
//! - `join`: the node credential, from a bootstrap token, kept on disk.
//! - `node`: the Node object (capacity, labels, addresses, Ready).
//! - `lease`: the heartbeat, a Lease renewed every second.
//! - `pods`: the pod manager — containers to match the bound pods.
//! - `status`: container and pod status from what runs (pure rules).
//! - `probe`: liveness and readiness probes.
//! - `volumes`: env and volumes from ConfigMaps and Secrets.
//! - `proxy`: the service proxy — `clusterIP:port` to ready endpoints.
//! - `dns`: service DNS for the node's pods.
//! - `server`: the agent's gRPC port (logs, exec) for the masters.
//! - `runtime`: the [`ContainerRuntime`](runtime::ContainerRuntime) trait the
//!   agent drives, and the labels it puts on containers.
//! - `docker`: the Docker implementation, through bollard.
//! - `process`: the plain-process implementation, for machines without
//!   Docker (host network, images as directories).

pub mod agent;
pub mod dns;
pub mod docker;
pub mod join;
pub mod lease;
pub mod node;
pub mod pods;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod status;
pub mod volumes;
