//! The Nodes service: how a node agent joins (a bootstrap token exchanged
//! for a node credential) and finds the masters.

use rafter_proto::api::nodes_server::{Nodes, NodesServer};
use rafter_proto::api::{JoinRequest, JoinResponse, MastersRequest, MastersResponse};
use tonic::{Request, Response, Status};

use crate::auth::{Identity, identity_of};
use crate::error::{ApiError, Reason, Result};
use crate::node_auth;
use crate::store::Store;

/// The Nodes service of one master.
#[derive(Clone)]
pub struct NodesService {
    pub(crate) store: Store,
}

impl NodesService {
    /// The gRPC service.
    pub fn service(self) -> NodesServer<NodesService> {
        NodesServer::new(self)
    }

    /// The masters' client addresses, voters first.
    fn masters(&self) -> Vec<String> {
        let mut members = self.store.node.members();
        members.sort_by_key(|(_, m, learner)| (*learner, m.name.clone()));
        members.into_iter().map(|(_, m, _)| m.addr).collect()
    }

    /// Issues (or replaces) `node`'s credential.
    async fn issue(&self, node: &str) -> Result<String> {
        let secret = node_auth::new_credential_secret();
        let wanted = node_auth::credential_object(node, &secret);
        loop {
            match self.store.create(wanted.clone(), None).await {
                Ok(_) => break,
                Err(e) if e.reason == Reason::AlreadyExists => {
                    let mut current: rafter_proto::api::Secret = self
                        .store
                        .get(
                            node_auth::SYSTEM_NAMESPACE,
                            &node_auth::credential_secret_name(node),
                            false,
                        )
                        .await?;
                    current.data = wanted.data.clone();
                    current.r#type = wanted.r#type.clone();
                    match self.store.update(current, false, None).await {
                        Ok(_) => break,
                        Err(e) if e.reason == Reason::Conflict || e.reason == Reason::NotFound => {
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(node_auth::credential(node, &secret))
    }
}

fn valid_node_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid node name {name:?}: a node name must be a lowercase DNS subdomain (letters, digits, '-' and '.'), e.g. worker-1; pick one with --name"
        )))
    }
}

#[tonic::async_trait]
impl Nodes for NodesService {
    async fn join(
        &self,
        req: Request<JoinRequest>,
    ) -> std::result::Result<Response<JoinResponse>, Status> {
        let identity = identity_of(&req);
        let node = req.into_inner().node_name;
        let r = async {
            valid_node_name(&node)?;
            match &identity {
                Identity::Admin => {}
                Identity::Bootstrap { id, secret } => {
                    node_auth::verify_bootstrap(&self.store, id, secret).await?
                }
                Identity::Node { .. } => {
                    return Err(ApiError::new(
                        Reason::Forbidden,
                        "a node credential cannot join another node; give a bootstrap token (`rafter token create`)",
                    ));
                }
            }
            let credential = self.issue(&node).await?;
            tracing::info!(node = %node, "node joined");
            Ok(JoinResponse {
                credential,
                masters: self.masters(),
            })
        }
        .await;
        r.map(Response::new)
            .map_err(|e| e.with_leader(&self.store).into())
    }

    async fn masters(
        &self,
        req: Request<MastersRequest>,
    ) -> std::result::Result<Response<MastersResponse>, Status> {
        match identity_of(&req) {
            Identity::Admin => {}
            Identity::Bootstrap { id, secret } => {
                node_auth::verify_bootstrap(&self.store, &id, &secret).await?
            }
            Identity::Node { name, secret } => {
                node_auth::verify_node(&self.store, &name, &secret).await?
            }
        }
        Ok(Response::new(MastersResponse {
            masters: self.masters(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_must_be_dns_subdomains() {
        for good in ["worker-1", "n1.example.com", "a"] {
            assert!(valid_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Worker", "-a", "a-", "a..b", "a_b", "a:b"] {
            assert!(valid_node_name(bad).is_err(), "{bad}");
        }
    }
}
