//! Who may call the API: every client-facing request carries
//! `authorization: Bearer <token>`, checked here and nowhere else, so the
//! security work can extend this one place (node credentials, TLS
//! identities). Masters talk to each other on the Raft service, which this
//! check does not cover.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::error::{ApiError, Reason};

/// The tokens a master accepts.
#[derive(Clone, Debug)]
pub struct Tokens {
    admin: Arc<Vec<u8>>,
}

impl Tokens {
    /// Accepts exactly `admin` (must not be empty).
    pub fn new(admin: &str) -> Self {
        Tokens {
            admin: Arc::new(admin.trim().as_bytes().to_vec()),
        }
    }

    /// The check, as a tonic interceptor.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Err(unauthenticated(
                "no bearer token: give one with --token, $RAFTER_TOKEN or the client config's token",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if !constant_time_eq(token.as_bytes(), &self.admin) {
            return Err(unauthenticated(
                "the bearer token is not valid for this cluster",
            ));
        }
        Ok(req)
    }
}

fn unauthenticated(message: &str) -> Status {
    ApiError::new(Reason::Unauthenticated, message).into()
}

/// Compares without returning early on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
