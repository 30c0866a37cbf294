//! A master's data directory: an exclusive lock, and an identity file that
//! says which member of which cluster the data belongs to and in which
//! on-disk format, so a wrong flag or a copied directory is refused before
//! anything is written.
//!
//! Layout: `rafter.lock`, `member.json`, `db/` (RocksDB), `snapshots/`.

use std::fs::File;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Why a data directory cannot be used, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data dir {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data dir {path} is locked by another process (is another `rafter server` using it?); stop it or choose another --data-dir"
    )]
    Locked { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Rafter member file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "data dir {path} uses on-disk format version {found}, but this rafter understands only version {FORMAT_VERSION}; use a matching rafter release or a fresh --data-dir"
    )]
    UnknownFormat { path: PathBuf, found: u32 },
    #[error(
        "data dir {path} belongs to member {found:?}, not {expected:?}; pass --name {found} or use a fresh --data-dir"
    )]
    OtherMember {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "data dir {path} belongs to another cluster (id {found:016x}, this --initial-cluster gives {expected:016x}); use the original --initial-cluster or a fresh --data-dir"
    )]
    OtherCluster {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who owns a data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format_version: u32,
    pub cluster_id: u64,
    pub name: String,
}

/// An open, locked data directory. The lock is released on drop.
pub struct DataDir {
    pub path: PathBuf,
    _lock: File,
    /// The identity recorded on disk, `None` for a fresh directory.
    pub identity: Option<Identity>,
}

impl DataDir {
    /// Creates the directory if needed, takes its lock and reads its
    /// identity (checking the on-disk format).
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        std::fs::create_dir_all(path).map_err(|source| DataDirError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join("rafter.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| DataDirError::Create {
                path: lock_path.clone(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(DataDirError::Locked {
                path: path.to_path_buf(),
            });
        }
        let member_path = path.join("member.json");
        let identity = match std::fs::read(&member_path) {
            Ok(bytes) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| DataDirError::Corrupt {
                        path: member_path.clone(),
                        message: e.to_string(),
                    })?;
                let found = value
                    .get("format_version")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0) as u32;
                if found != FORMAT_VERSION {
                    return Err(DataDirError::UnknownFormat {
                        path: path.to_path_buf(),
                        found,
                    });
                }
                Some(
                    serde_json::from_value(value).map_err(|e| DataDirError::Corrupt {
                        path: member_path.clone(),
                        message: e.to_string(),
                    })?,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(DataDirError::Read {
                    path: member_path,
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
            identity,
        })
    }

    /// Checks that the directory belongs to member `name` (and, when given,
    /// to cluster `cluster_id`).
    pub fn check(&self, name: &str, cluster_id: Option<u64>) -> Result<(), DataDirError> {
        let Some(id) = &self.identity else {
            return Ok(());
        };
        if id.name != name {
            return Err(DataDirError::OtherMember {
                path: self.path.clone(),
                found: id.name.clone(),
                expected: name.to_string(),
            });
        }
        if let Some(expected) = cluster_id
            && id.cluster_id != expected
        {
            return Err(DataDirError::OtherCluster {
                path: self.path.clone(),
                found: id.cluster_id,
                expected,
            });
        }
        Ok(())
    }

    /// Records the identity (atomically, synced).
    pub fn record(&mut self, identity: Identity) -> Result<(), DataDirError> {
        let path = self.path.join("member.json");
        let tmp = self.path.join("member.json.tmp");
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec_pretty(&identity).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, bytes)?;
            File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.path)?.sync_all()
        };
        write().map_err(|source| DataDirError::Write {
            path: path.clone(),
            source,
        })?;
        self.identity = Some(identity);
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.path.join("db")
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.path.join("snapshots")
    }

    /// Bytes used by the directory's files.
    pub fn size(path: &Path) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_while_locked_and_identity_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = DataDir::open(dir.path()).unwrap();
        assert!(matches!(
            DataDir::open(dir.path()),
            Err(DataDirError::Locked { .. })
        ));
        d.record(Identity {
            format_version: FORMAT_VERSION,
            cluster_id: 7,
            name: "m1".into(),
        })
        .unwrap();
        assert!(d.check("m1", Some(7)).is_ok());
        assert!(matches!(
            d.check("m2", Some(7)),
            Err(DataDirError::OtherMember { .. })
        ));
        assert!(matches!(
            d.check("m1", Some(8)),
            Err(DataDirError::OtherCluster { .. })
        ));
        drop(d);
        let d = DataDir::open(dir.path()).unwrap();
        assert_eq!(d.identity.unwrap().name, "m1");
    }
}
