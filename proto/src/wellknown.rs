//! Names every component agrees on: system namespaces, the Secrets that
//! hold bootstrap tokens and node credentials, and node leases. The API
//! server checks tokens with them, the CLI writes them, the token cleaner
//! and the node agent read them.

use std::time::SystemTime;

use crate::api;

/// Where bootstrap tokens and node credentials live.
pub const SYSTEM_NAMESPACE: &str = "rafter-system";
/// Where node agents renew their heartbeat Leases (named after the node).
pub const NODE_LEASE_NAMESPACE: &str = "rafter-node-lease";
/// Secret type of a bootstrap token (`bootstrap-token-<id>`): keys
/// `token-id`, `token-secret`, `expiration` (RFC 3339, optional),
/// `description`, as kubeadm keeps them.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.rafter.io/token";
/// Secret type of a node credential (`node-credential-<node>`): keys `node`
/// and `secret`.
pub const NODE_CREDENTIAL_TYPE: &str = "rafter.io/node-credential";

/// The Secret name of bootstrap token `id`.
pub fn bootstrap_secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// The Secret name of `node`'s credential.
pub fn credential_secret_name(node: &str) -> String {
    format!("node-credential-{node}")
}

/// When a bootstrap token Secret expires, if it does.
pub fn token_expiration(s: &api::Secret) -> Option<SystemTime> {
    let text = std::str::from_utf8(s.data.get("expiration")?).ok()?;
    crate::age::parse_rfc3339_utc(text)
}
