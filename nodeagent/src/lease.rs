//! The node heartbeat: the node's Lease in `rafter-node-lease`, renewed
//! every interval. A renewal is one small compare-and-swap write (the lease
//! as last written, with a new renewTime), so a thousand nodes heartbeating
//! every second cost the masters little, and Node watchers (scheduler,
//! every agent) hear nothing of it. The node lifecycle controller watches
//! the leases.

use std::time::{Duration, SystemTime};

use rafter_client::{Client, Error};
use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;
use rafter_proto::object::Object;
use rafter_proto::wellknown::NODE_LEASE_NAMESPACE;

/// Renews one node's lease.
#[derive(Debug)]
pub struct LeaseRenewer {
    node: String,
    duration: Duration,
    /// The lease as last written (its resourceVersion is the next CAS).
    last: Option<api::Lease>,
}

impl LeaseRenewer {
    /// A renewer of `node`'s lease, valid `duration` per renewal.
    pub fn new(node: &str, duration: Duration) -> Self {
        LeaseRenewer {
            node: node.into(),
            duration,
            last: None,
        }
    }

    fn fresh(&self, now: &str) -> api::Lease {
        let mut lease = api::Lease {
            spec: Some(api::LeaseSpec {
                holder_identity: self.node.clone(),
                lease_duration_seconds: self.duration.as_secs().max(1) as i32,
                acquire_time: now.into(),
                renew_time: now.into(),
                lease_transitions: 0,
            }),
            ..Default::default()
        };
        let m = lease.metadata_mut();
        m.name = self.node.clone();
        m.namespace = NODE_LEASE_NAMESPACE.into();
        lease
    }

    /// Renews the lease (creating it the first time). A lost race re-reads
    /// the lease and tries again once.
    pub async fn renew(&mut self, client: &Client) -> Result<(), Error> {
        for _ in 0..2 {
            let now = format_rfc3339_utc(SystemTime::now());
            let result = match self.last.take() {
                Some(mut lease) => {
                    lease.spec.get_or_insert_default().renew_time = now;
                    client.update(&lease).await
                }
                None => match client
                    .get_object::<api::Lease>(NODE_LEASE_NAMESPACE, &self.node)
                    .await
                {
                    Ok(mut lease) => {
                        let spec = lease.spec.get_or_insert_default();
                        if spec.holder_identity != self.node {
                            spec.holder_identity = self.node.clone();
                            spec.lease_transitions += 1;
                            spec.acquire_time = now.clone();
                        }
                        spec.renew_time = now;
                        client.update(&lease).await
                    }
                    Err(e) if e.is_reason("NotFound") => client.create(&self.fresh(&now)).await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(lease) => {
                    self.last = Some(lease);
                    return Ok(());
                }
                Err(e)
                    if e.is_reason("Conflict")
                        || e.is_reason("AlreadyExists")
                        || e.is_reason("NotFound") =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::local_status(tonic_status_conflict(&self.node)))
    }
}

fn tonic_status_conflict(node: &str) -> tonic::Status {
    tonic::Status::aborted(format!(
        "the lease of node {node} changed twice while being renewed; will retry"
    ))
}
