//! What a pod's containers see of the cluster's configuration: environment
//! variables (literals, ConfigMap and Secret keys) and volumes (emptyDir,
//! hostPath, configMap and secret as files).
//!
//! Volumes live under `<data-dir>/pods/<uid>/volumes/<name>` and are bind
//! mounted into the containers. ConfigMap and Secret volumes are rewritten
//! on every sync: a changed key replaces its file (write to a temporary
//! name, then rename), so containers see the update without restarting.
//! ConfigMaps and Secrets are fetched one by one (a node may not list
//! them), cached for a couple of seconds.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rafter_client::Client;
use rafter_proto::api;

use crate::runtime::Mount;

/// How long a fetched ConfigMap or Secret is reused.
const CACHE_FOR: Duration = Duration::from_secs(2);

/// Why a container cannot be configured (shown as
/// CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The data of a ConfigMap or Secret: key → bytes.
type Data = BTreeMap<String, Vec<u8>>;

/// Fetches ConfigMaps and Secrets for pods, with a short cache.
pub struct ConfigSource {
    client: Client,
    cache: Mutex<HashMap<(bool, String, String), (Instant, Option<Data>)>>,
}

impl ConfigSource {
    pub fn new(client: Client) -> Self {
        ConfigSource {
            client,
            cache: Mutex::default(),
        }
    }

    /// The data of Secret (`secret`) or ConfigMap `namespace/name`; None
    /// when it does not exist.
    pub async fn data(
        &self,
        secret: bool,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Data>, ConfigError> {
        let key = (secret, namespace.to_string(), name.to_string());
        if let Some((at, data)) = self.cache.lock().expect("cache lock").get(&key)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(data.clone());
        }
        let what = if secret { "secret" } else { "configmap" };
        let fetched = if secret {
            self.client
                .get_object::<api::Secret>(namespace, name)
                .await
                .map(|s| s.data)
        } else {
            self.client
                .get_object::<api::ConfigMap>(namespace, name)
                .await
                .map(|c| {
                    let mut d: Data = c.binary_data;
                    d.extend(c.data.into_iter().map(|(k, v)| (k, v.into_bytes())));
                    d
                })
        };
        let data = match fetched {
            Ok(d) => Some(d),
            Err(e) if e.is_reason("NotFound") => None,
            Err(e) => {
                return Err(ConfigError(format!(
                    "cannot read {what} {namespace}/{name}: {e}"
                )));
            }
        };
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, (Instant::now(), data.clone()));
        Ok(data)
    }

    /// The container's environment, in order.
    pub async fn env(
        &self,
        namespace: &str,
        c: &api::Container,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for e in &c.env {
            let Some(from) = &e.value_from else {
                out.push((e.name.clone(), e.value.clone()));
                continue;
            };
            let (secret, sel) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                (Some(k), _) => (false, k),
                (None, Some(k)) => (true, k),
                (None, None) => {
                    out.push((e.name.clone(), e.value.clone()));
                    continue;
                }
            };
            let what = if secret { "secret" } else { "configmap" };
            let optional = sel.optional.unwrap_or(false);
            match self.data(secret, namespace, &sel.name).await? {
                Some(d) => match d.get(&sel.key) {
                    Some(v) => out.push((e.name.clone(), String::from_utf8_lossy(v).into_owned())),
                    None if optional => {}
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in {what} {namespace}/{}",
                            sel.key, sel.name
                        )));
                    }
                },
                None if optional => {}
                None => {
                    return Err(ConfigError(format!("{what} \"{}\" not found", sel.name)));
                }
            }
        }
        Ok(out)
    }

    /// Makes the pod's volumes exist under `dir` (its volumes directory)
    /// with current content; returns each volume's host path.
    pub async fn prepare_volumes(
        &self,
        pod: &api::Pod,
        dir: &Path,
    ) -> Result<HashMap<String, (PathBuf, bool)>, ConfigError> {
        let namespace = pod
            .metadata
            .as_ref()
            .map(|m| m.namespace.as_str())
            .unwrap_or("");
        let mut paths = HashMap::new();
        let volumes = pod
            .spec
            .as_ref()
            .map(|s| s.volumes.as_slice())
            .unwrap_or_default();
        for v in volumes {
            let own = dir.join(&v.name);
            let io = |e: std::io::Error| {
                ConfigError(format!("volume {:?}: {}: {e}", v.name, own.display()))
            };
            if let Some(h) = &v.host_path {
                paths.insert(v.name.clone(), (PathBuf::from(&h.path), false));
            } else if v.empty_dir.is_some() {
                std::fs::create_dir_all(&own).map_err(io)?;
                paths.insert(v.name.clone(), (own, false));
            } else if let Some(cm) = &v.config_map {
                let data = self.data(false, namespace, &cm.name).await?;
                let data = match (data, cm.optional.unwrap_or(false)) {
                    (Some(d), _) => d,
                    (None, true) => Data::new(),
                    (None, false) => {
                        return Err(ConfigError(format!("configmap \"{}\" not found", cm.name)));
                    }
                };
                write_files(&own, &data, &cm.items, cm.default_mode.unwrap_or(0o644))
                    .map_err(io)?;
                paths.insert(v.name.clone(), (own, true));
            } else if let Some(s) = &v.secret {
                let data = self.data(true, namespace, &s.secret_name).await?;
                let data = match (data, s.optional.unwrap_or(false)) {
                    (Some(d), _) => d,
                    (None, true) => Data::new(),
                    (None, false) => {
                        return Err(ConfigError(format!(
                            "secret \"{}\" not found",
                            s.secret_name
                        )));
                    }
                };
                write_files(&own, &data, &s.items, s.default_mode.unwrap_or(0o644)).map_err(io)?;
                paths.insert(v.name.clone(), (own, true));
            } else {
                return Err(ConfigError(format!(
                    "volume {:?} has no source this agent supports (emptyDir, hostPath, configMap, secret)",
                    v.name
                )));
            }
        }
        Ok(paths)
    }
}

/// The container's bind mounts from its volumeMounts.
pub fn mounts(
    c: &api::Container,
    volumes: &HashMap<String, (PathBuf, bool)>,
) -> Result<Vec<Mount>, ConfigError> {
    c.volume_mounts
        .iter()
        .map(|m| {
            let (path, read_only) = volumes.get(&m.name).ok_or_else(|| {
                ConfigError(format!(
                    "volumeMount {:?} of container {:?} names no volume of the pod",
                    m.name, c.name
                ))
            })?;
            let host = if m.sub_path.is_empty() {
                path.clone()
            } else {
                path.join(&m.sub_path)
            };
            Ok(Mount {
                host_path: host.to_string_lossy().into_owned(),
                container_path: m.mount_path.clone(),
                read_only: m.read_only || *read_only,
            })
        })
        .collect()
}

/// Writes `data` (or only `items`) as files of `dir`, replacing changed
/// ones atomically and removing files of keys that are gone.
fn write_files(
    dir: &Path,
    data: &Data,
    items: &[api::KeyToPath],
    mode: i32,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let wanted: Vec<(String, &Vec<u8>, i32)> = if items.is_empty() {
        data.iter().map(|(k, v)| (k.clone(), v, mode)).collect()
    } else {
        items
            .iter()
            .filter_map(|i| {
                data.get(&i.key).map(|v| {
                    let path = if i.path.is_empty() {
                        i.key.clone()
                    } else {
                        i.path.clone()
                    };
                    (path, v, i.mode.unwrap_or(mode))
                })
            })
            .collect()
    };
    for (name, bytes, mode) in &wanted {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_ref() == Some(*bytes) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = dir.join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, bytes)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode as u32 & 0o777))?;
        std::fs::rename(&tmp, &path)?;
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !wanted.iter().any(|(n, _, _)| *n == name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_follow_the_data_and_are_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("v");
        let mut data = Data::new();
        data.insert("a".into(), b"1".to_vec());
        data.insert("b".into(), b"2".to_vec());
        write_files(&d, &data, &[], 0o644).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"1");
        data.insert("a".into(), b"changed".to_vec());
        data.remove("b");
        write_files(&d, &data, &[], 0o644).unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"changed");
        assert!(!d.join("b").exists());
        let items = [api::KeyToPath {
            key: "a".into(),
            path: "conf/a.txt".into(),
            mode: None,
        }];
        let d2 = dir.path().join("w");
        write_files(&d2, &data, &items, 0o600).unwrap();
        assert_eq!(std::fs::read(d2.join("conf/a.txt")).unwrap(), b"changed");
    }

    #[test]
    fn mounts_name_pod_volumes() {
        let c = api::Container {
            name: "c".into(),
            volume_mounts: vec![api::VolumeMount {
                name: "cfg".into(),
                mount_path: "/etc/cfg".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut v = HashMap::new();
        assert!(mounts(&c, &v).is_err());
        v.insert("cfg".to_string(), (PathBuf::from("/x/cfg"), true));
        let m = mounts(&c, &v).unwrap();
        assert_eq!(m[0].host_path, "/x/cfg");
        assert!(m[0].read_only);
    }
}
