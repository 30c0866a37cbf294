//! Who is calling: every client-facing request carries
//! `authorization: Bearer <token>`, classified here into an [`Identity`]
//! that the services find in the request's extensions.
//!
//! Three kinds of bearer token exist:
//!
//! - the cluster's **admin token** (checked here, constant time);
//! - a **bootstrap token** in kubeadm's format `[a-z0-9]{6}.[a-z0-9]{16}`
//!   (`rafter token create`), good only for the Nodes service's Join;
//! - a **node credential** `rafter-node:<node>:<secret>`, handed out by
//!   Join and limited to what that node's agent needs (`node_auth.rs`).
//!
//! Bootstrap tokens and node credentials live in the cluster (as Secrets in
//! `rafter-system`), so checking them needs a store read: this interceptor
//! only recognises their shape, and the service checks them before serving
//! (`node_auth::verify_*`). Masters talk to each other on the Raft service,
//! which this check does not cover; the KV and Cluster services take the
//! admin token only ([`Tokens::check_admin`]).

use std::sync::Arc;

use tonic::{Request, Status};

use crate::error::{ApiError, Reason};

/// Prefix of a node credential.
pub const NODE_CREDENTIAL_PREFIX: &str = "rafter-node:";

/// Who sent a request, as far as its bearer token's shape tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The cluster admin: may do everything.
    Admin,
    /// A bootstrap token (not yet checked against the cluster).
    Bootstrap { id: String, secret: String },
    /// A node agent's credential (not yet checked against the cluster).
    Node { name: String, secret: String },
}

/// The tokens a master accepts.
#[derive(Clone, Debug)]
pub struct Tokens {
    admin: Arc<Vec<u8>>,
}

impl Tokens {
    /// Accepts exactly `admin` (must not be empty) as the admin token.
    pub fn new(admin: &str) -> Self {
        Tokens {
            admin: Arc::new(admin.trim().as_bytes().to_vec()),
        }
    }

    /// Classifies the bearer token into an [`Identity`].
    pub fn identify(&self, token: &str) -> Result<Identity, Status> {
        if constant_time_eq(token.as_bytes(), &self.admin) {
            return Ok(Identity::Admin);
        }
        if let Some((id, secret)) = parse_bootstrap_token(token) {
            return Ok(Identity::Bootstrap {
                id: id.into(),
                secret: secret.into(),
            });
        }
        if let Some(rest) = token.strip_prefix(NODE_CREDENTIAL_PREFIX)
            && let Some((name, secret)) = rest.rsplit_once(':')
            && !name.is_empty()
            && !secret.is_empty()
        {
            return Ok(Identity::Node {
                name: name.into(),
                secret: secret.into(),
            });
        }
        Err(unauthenticated(
            "the bearer token is not valid for this cluster",
        ))
    }

    /// The check of the object and node services, as a tonic interceptor:
    /// any well-formed token passes, its [`Identity`] attached.
    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let identity = self.identify(bearer(&req)?)?;
        req.extensions_mut().insert(identity);
        Ok(req)
    }

    /// The check of the KV and Cluster services: the admin token only.
    pub fn check_admin(&self, req: Request<()>) -> Result<Request<()>, Status> {
        match self.identify(bearer(&req)?)? {
            Identity::Admin => Ok(req),
            _ => Err(ApiError::new(
                Reason::Forbidden,
                "only the admin token may use the key-value and cluster services; node and bootstrap tokens may not",
            )
            .into()),
        }
    }
}

/// The request's bearer token.
fn bearer<T>(req: &Request<T>) -> Result<&str, Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Err(unauthenticated(
            "no bearer token: give one with --token, $RAFTER_TOKEN or the client config's token",
        ));
    };
    Ok(value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default())
}

/// The identity the interceptor attached (Admin when none was: requests
/// that reach a service without passing the interceptor come from tests
/// that serve the API unauthenticated).
pub fn identity_of<T>(req: &Request<T>) -> Identity {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or(Identity::Admin)
}

/// Splits a kubeadm-format bootstrap token `abcdef.0123456789abcdef` into
/// its id and secret.
pub fn parse_bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// A new random bootstrap token: (id, secret).
pub fn generate_bootstrap_token() -> (String, String) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    (pick(6), pick(16))
}

fn unauthenticated(message: &str) -> Status {
    ApiError::new(Reason::Unauthenticated, message).into()
}

/// Compares without returning early on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random admin token (32 hex characters).
pub fn generate_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new random token to `path` (readable by its owner only, synced)
/// unless the file exists. Returns whether it created one.
pub fn ensure_token_file(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    writeln!(f, "{}", generate_token())?;
    f.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let t = Tokens::new("secret");
        assert!(t.check(request(Some("Bearer secret"))).is_ok());
        for bad in [None, Some("Bearer other"), Some("secret"), Some("Bearer ")] {
            let e = t.check(request(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        assert!(!constant_time_eq(b"", b""));
        assert_eq!(generate_token().len(), 32);
    }

    #[test]
    fn bootstrap_tokens_and_node_credentials_are_recognised_by_shape() {
        let t = Tokens::new("secret");
        assert_eq!(
            t.identify("abcdef.0123456789abcdef").unwrap(),
            Identity::Bootstrap {
                id: "abcdef".into(),
                secret: "0123456789abcdef".into()
            }
        );
        assert_eq!(
            t.identify("rafter-node:n1.example:s3cr3t").unwrap(),
            Identity::Node {
                name: "n1.example".into(),
                secret: "s3cr3t".into()
            }
        );
        for bad in [
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "rafter-node::x",
            "rafter-node:n1:",
        ] {
            assert!(t.identify(bad).is_err(), "{bad}");
        }
        let (id, secret) = generate_bootstrap_token();
        assert!(parse_bootstrap_token(&format!("{id}.{secret}")).is_some());
        let node = request(Some("Bearer rafter-node:n1:x"));
        assert_eq!(
            t.check_admin(node).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let checked = t.check(request(Some("Bearer rafter-node:n1:x"))).unwrap();
        assert!(matches!(identity_of(&checked), Identity::Node { .. }));
    }

    #[test]
    fn a_token_file_is_created_once() {
        let dir = std::env::temp_dir().join(format!("rafter-token-{}", generate_token()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin-token");
        assert!(ensure_token_file(&path).unwrap());
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(!ensure_token_file(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        assert_eq!(first.trim().len(), 32);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
