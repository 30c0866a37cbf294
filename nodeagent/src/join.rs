//! The node's identity: a credential obtained once with a bootstrap token
//! (through whichever master answers) and kept in the data directory, so a
//! rebooted node rejoins by itself. The masters' addresses are kept beside
//! it and refreshed from the cluster.

use std::path::{Path, PathBuf};

use rafter_client::{Client, ClientOptions};

/// Agent start-up failures a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "no node credential in {dir} and no --token: create a bootstrap token on a master with `rafter token create` and pass it with --token"
    )]
    NoToken { dir: String },
    #[error(
        "the credential in {path} is for node {found:?}, not {wanted:?}: use --name {found} or another --data-dir"
    )]
    OtherNode {
        path: String,
        found: String,
        wanted: String,
    },
    #[error("joining through {servers}: {source}")]
    Join {
        servers: String,
        #[source]
        source: rafter_client::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JoinError + '_ {
    move |source| JoinError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The saved credential and master list of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub credential: String,
    pub masters: Vec<String>,
}

fn credential_path(dir: &Path) -> PathBuf {
    dir.join("credential")
}

fn masters_path(dir: &Path) -> PathBuf {
    dir.join("masters")
}

/// Writes `text` to `path` durably (temporary file, fsync, rename), owner
/// read-write only.
fn write_durably(path: &Path, text: &str) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// The credential and masters saved in `dir`, if any.
pub fn load(dir: &Path, node: &str) -> Result<Option<Saved>, JoinError> {
    let path = credential_path(dir);
    let credential = match std::fs::read_to_string(&path) {
        Ok(c) => c.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let found = credential
        .strip_prefix("rafter-node:")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(n, _)| n.to_string())
        .unwrap_or_default();
    if found != node {
        return Err(JoinError::OtherNode {
            path: path.display().to_string(),
            found,
            wanted: node.into(),
        });
    }
    let masters = std::fs::read_to_string(masters_path(dir))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(Saved {
        credential,
        masters,
    }))
}

/// Saves the master list.
pub fn save_masters(dir: &Path, masters: &[String]) -> Result<(), JoinError> {
    write_durably(&masters_path(dir), &(masters.join("\n") + "\n"))
}

/// Joins the cluster as `node` with bootstrap `token`, through any of
/// `servers`; saves and returns the credential.
pub async fn join(
    dir: &Path,
    servers: &[String],
    token: &str,
    node: &str,
) -> Result<Saved, JoinError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let options = ClientOptions {
        token: Some(token.to_string()),
        ..Default::default()
    };
    let failed = |source| JoinError::Join {
        servers: servers.join(","),
        source,
    };
    let client = Client::connect_with_options(servers.to_vec(), options)
        .await
        .map_err(failed)?;
    let resp = client.join(node).await.map_err(failed)?;
    write_durably(&credential_path(dir), &(resp.credential.clone() + "\n"))?;
    save_masters(dir, &resp.masters)?;
    Ok(Saved {
        credential: resp.credential,
        masters: resp.masters,
    })
}

/// The saved identity, or a new one from `token`.
pub async fn load_or_join(
    dir: &Path,
    servers: &[String],
    token: Option<&str>,
    node: &str,
) -> Result<Saved, JoinError> {
    if let Some(saved) = load(dir, node)? {
        return Ok(saved);
    }
    let Some(token) = token else {
        return Err(JoinError::NoToken {
            dir: dir.display().to_string(),
        });
    };
    join(dir, servers, token, node).await
}

/// The masters to try: the saved list first, then the given ones.
pub fn endpoints(saved: &Saved, servers: &[String]) -> Vec<String> {
    let mut all = saved.masters.clone();
    for s in servers {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_credential_is_found_again_for_the_same_node_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "n1").unwrap(), None);
        write_durably(&credential_path(dir.path()), "rafter-node:n1:abc\n").unwrap();
        save_masters(dir.path(), &["m1:1".into(), "m2:2".into()]).unwrap();
        let saved = load(dir.path(), "n1").unwrap().unwrap();
        assert_eq!(saved.credential, "rafter-node:n1:abc");
        assert_eq!(saved.masters, ["m1:1", "m2:2"]);
        assert!(matches!(
            load(dir.path(), "n2"),
            Err(JoinError::OtherNode { .. })
        ));
        assert_eq!(
            endpoints(&saved, &["m2:2".into(), "m3:3".into()]),
            ["m1:1", "m2:2", "m3:3"]
        );
    }
}
