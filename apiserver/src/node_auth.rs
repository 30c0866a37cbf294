//! Bootstrap tokens and node credentials: where they are kept, how they are
//! checked, and what a node may do (the node authorizer).
//!
//! Both live in the cluster as Secrets in `rafter-system`, so every master
//! sees the same set and `rafter token list|delete` is a plain object edit:
//!
//! - `bootstrap-token-<id>` (type `bootstrap.rafter.io/token`): keys
//!   `token-id`, `token-secret`, `expiration` (RFC 3339, optional) and
//!   `description`, as kubeadm keeps them;
//! - `node-credential-<node>` (type `rafter.io/node-credential`): keys
//!   `node` and `secret`; the bearer credential is
//!   `rafter-node:<node>:<secret>`.
//!
//! A node may read what an agent watches (nodes, pods, services, endpoints,
//! namespaces, events), read a ConfigMap or Secret only when a pod bound to
//! it references it, register its own Node and write its status, renew its
//! own Lease, write the status of pods bound to it and delete them (the end
//! of a graceful deletion), and record events. Everything else is Forbidden.

use std::time::SystemTime;

use rafter_proto::api;
use rafter_proto::object::{KindInfo, Object};
use rafter_proto::selector::{FieldSelector, LabelSelector};

use crate::auth::{NODE_CREDENTIAL_PREFIX, constant_time_eq};
use crate::error::{ApiError, Reason, Result};
use crate::store::Store;

pub use rafter_proto::wellknown::{
    BOOTSTRAP_TOKEN_TYPE, NODE_CREDENTIAL_TYPE, NODE_LEASE_NAMESPACE, SYSTEM_NAMESPACE,
    bootstrap_secret_name, credential_secret_name, token_expiration as expiration,
};

/// The bearer credential of `node`.
pub fn credential(node: &str, secret: &str) -> String {
    format!("{NODE_CREDENTIAL_PREFIX}{node}:{secret}")
}

fn data<'a>(s: &'a api::Secret, key: &str) -> &'a [u8] {
    s.data.get(key).map(Vec::as_slice).unwrap_or_default()
}

/// Checks bootstrap token `id.secret` against the cluster.
pub async fn verify_bootstrap(store: &Store, id: &str, secret: &str) -> Result<()> {
    let unknown = || {
        ApiError::new(
            Reason::Unauthenticated,
            format!(
                "bootstrap token {id:?} is not known to this cluster (deleted, or never created); create one on a master with `rafter token create`"
            ),
        )
    };
    let s: api::Secret = match store
        .get(SYSTEM_NAMESPACE, &bootstrap_secret_name(id), false)
        .await
    {
        Ok(s) => s,
        Err(e) if e.reason == Reason::NotFound => return Err(unknown()),
        Err(e) => return Err(e),
    };
    if s.r#type != BOOTSTRAP_TOKEN_TYPE
        || !constant_time_eq(secret.as_bytes(), data(&s, "token-secret"))
    {
        return Err(unknown());
    }
    if let Some(at) = expiration(&s)
        && at <= SystemTime::now()
    {
        return Err(ApiError::new(
            Reason::Unauthenticated,
            format!(
                "bootstrap token {id:?} expired at {}; create a new one with `rafter token create`",
                rafter_proto::age::format_rfc3339_utc(at)
            ),
        ));
    }
    Ok(())
}

/// Checks node `name`'s credential against the cluster (a local read: a
/// credential replaced a moment ago may still pass on a lagging master).
pub async fn verify_node(store: &Store, name: &str, secret: &str) -> Result<()> {
    let refused = || {
        ApiError::new(
            Reason::Unauthenticated,
            format!(
                "the credential of node {name:?} is not valid (the node was removed or joined again elsewhere); join again with `rafter agent --token`"
            ),
        )
    };
    match store
        .get::<api::Secret>(SYSTEM_NAMESPACE, &credential_secret_name(name), true)
        .await
    {
        Ok(s)
            if s.r#type == NODE_CREDENTIAL_TYPE
                && constant_time_eq(secret.as_bytes(), data(&s, "secret")) =>
        {
            Ok(())
        }
        Ok(_) => Err(refused()),
        Err(e) if e.reason == Reason::NotFound => Err(refused()),
        Err(e) => Err(e),
    }
}

/// What a request does, for the node authorizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    UpdateStatus,
    Patch,
    PatchStatus,
    Delete,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::UpdateStatus => "update the status of",
            Verb::Patch => "patch",
            Verb::PatchStatus => "patch the status of",
            Verb::Delete => "delete",
        }
    }
}

fn forbidden(
    node: &str,
    verb: Verb,
    kind: &KindInfo,
    namespace: &str,
    name: &str,
    why: &str,
) -> ApiError {
    let what = match (name.is_empty(), namespace.is_empty()) {
        (true, true) => kind.plural.to_string(),
        (true, false) => format!("{} in namespace {namespace:?}", kind.plural),
        (false, true) => format!("{} {name:?}", kind.singular),
        (false, false) => format!("{} {namespace}/{name}", kind.singular),
    };
    ApiError::new(
        Reason::Forbidden,
        format!("node {node:?} may not {} {what}: {why}", verb.as_str()),
    )
}

/// Whether a pod's spec references ConfigMap (`secret` false) or Secret
/// (`secret` true) `name` in an env var or a volume.
pub fn pod_references(pod: &api::Pod, secret: bool, name: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let in_env = spec.containers.iter().flat_map(|c| &c.env).any(|e| {
        e.value_from.as_ref().is_some_and(|f| {
            let r = if secret {
                &f.secret_key_ref
            } else {
                &f.config_map_key_ref
            };
            r.as_ref().is_some_and(|k| k.name == name)
        })
    });
    let in_volumes = spec.volumes.iter().any(|v| {
        if secret {
            v.secret.as_ref().is_some_and(|s| s.secret_name == name)
        } else {
            v.config_map.as_ref().is_some_and(|c| c.name == name)
        }
    });
    in_env || in_volumes
}

/// Decides whether node `node` may do `verb` on `kind` `namespace/name`.
pub async fn authorize(
    store: &Store,
    node: &str,
    verb: Verb,
    kind: &KindInfo,
    namespace: &str,
    name: &str,
) -> Result<()> {
    let read = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
    let deny = |why: &str| Err(forbidden(node, verb, kind, namespace, name, why));
    match kind.kind {
        "Node" => match verb {
            _ if read => Ok(()),
            Verb::Create | Verb::UpdateStatus | Verb::PatchStatus if name == node => Ok(()),
            Verb::Create | Verb::UpdateStatus | Verb::PatchStatus => {
                deny("a node may only register and report on itself")
            }
            _ => deny("a node may only register itself and write its own status"),
        },
        "Pod" => match verb {
            _ if read => Ok(()),
            Verb::UpdateStatus | Verb::PatchStatus | Verb::Delete => {
                let bound = match store.get::<api::Pod>(namespace, name, true).await {
                    Ok(p) => p.spec.map(|s| s.node_name).unwrap_or_default(),
                    // Let the request itself report the missing pod.
                    Err(e) if e.reason == Reason::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                };
                if bound == node {
                    Ok(())
                } else {
                    deny("the pod is not bound to this node")
                }
            }
            _ => deny("a node may only write the status of pods bound to it"),
        },
        "Lease" => {
            if namespace == NODE_LEASE_NAMESPACE
                && name == node
                && verb != Verb::List
                && verb != Verb::Watch
            {
                Ok(())
            } else {
                deny(&format!(
                    "a node may only use its own lease {NODE_LEASE_NAMESPACE}/{node}"
                ))
            }
        }
        "Event" => match verb {
            Verb::Create | Verb::Update | Verb::Patch => Ok(()),
            _ if read => Ok(()),
            _ => deny("a node may only record events"),
        },
        "Service" | "Endpoints" | "Namespace" if read => Ok(()),
        "ConfigMap" | "Secret" => {
            if verb != Verb::Get {
                return deny(
                    "a node may only get the config maps and secrets its pods use, one by one",
                );
            }
            let secret = kind.kind == "Secret";
            let on_node =
                FieldSelector::parse(&format!("spec.nodeName={node}"), &["spec.nodeName"])
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let (pods, _) = store
                .list::<api::Pod>(namespace, &LabelSelector::everything(), &on_node, true)
                .await?;
            if pods.iter().any(|p| pod_references(p, secret, name)) {
                Ok(())
            } else {
                deny("no pod bound to this node references it")
            }
        }
        _ => deny("nodes have no access to this kind"),
    }
}

/// The kind info of `kind` (for callers holding only the name).
pub fn kind_info(kind: &str) -> Option<&'static KindInfo> {
    rafter_proto::object::KINDS
        .iter()
        .copied()
        .find(|k| k.kind == kind)
}

/// A new node credential secret (32 hex characters).
pub fn new_credential_secret() -> String {
    crate::auth::generate_token()
}

/// The Secret that stores node `node`'s credential secret.
pub fn credential_object(node: &str, secret: &str) -> api::Secret {
    let mut s = api::Secret {
        r#type: NODE_CREDENTIAL_TYPE.into(),
        ..Default::default()
    };
    s.data.insert("node".into(), node.as_bytes().to_vec());
    s.data.insert("secret".into(), secret.as_bytes().to_vec());
    let m = s.metadata_mut();
    m.name = credential_secret_name(node);
    m.namespace = SYSTEM_NAMESPACE.into();
    m.labels.insert("rafter.io/node".into(), node.into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_using(config_map: &str, secret: &str) -> api::Pod {
        api::Pod {
            spec: Some(api::PodSpec {
                containers: vec![api::Container {
                    env: vec![api::EnvVar {
                        name: "A".into(),
                        value_from: Some(api::EnvVarSource {
                            config_map_key_ref: Some(api::KeySelector {
                                name: config_map.into(),
                                key: "k".into(),
                                optional: None,
                            }),
                            secret_key_ref: None,
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                volumes: vec![api::Volume {
                    name: "s".into(),
                    secret: Some(api::SecretVolumeSource {
                        secret_name: secret.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_references_the_config_maps_and_secrets_of_its_env_and_volumes() {
        let p = pod_using("settings", "password");
        assert!(pod_references(&p, false, "settings"));
        assert!(pod_references(&p, true, "password"));
        assert!(!pod_references(&p, true, "settings"));
        assert!(!pod_references(&p, false, "password"));
        assert!(!pod_references(&p, true, "other"));
    }

    #[test]
    fn credentials_are_stored_under_the_node_name() {
        let s = credential_object("n1", "abc");
        assert_eq!(s.metadata().name, "node-credential-n1");
        assert_eq!(data(&s, "secret"), b"abc");
        assert_eq!(credential("n1", "abc"), "rafter-node:n1:abc");
    }
}
