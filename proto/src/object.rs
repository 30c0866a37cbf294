//! What every kind of object has in common, so the API server, the typed
//! client and the CLI handle all kinds with one generic code path.

use std::sync::LazyLock;

use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api;
use crate::api::ObjectMeta;

/// A kind of cluster object (Pod, Deployment, ...).
pub trait Object:
    Message + Default + Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// This kind's registry entry.
    const INFO: &'static KindInfo;

    /// The object's metadata (an empty one when unset).
    fn metadata(&self) -> &ObjectMeta;
    /// The object's metadata, created when unset.
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Sets apiVersion and kind to this kind's.
    fn set_type_meta(&mut self);
    /// apiVersion and kind as the object carries them (may be empty).
    fn type_meta(&self) -> (&str, &str);
    /// The spec's encoding, compared to decide whether generation moves;
    /// `None` for kinds without a spec.
    fn spec_bytes(&self) -> Option<Vec<u8>>;
    /// Replaces this object's status with `other`'s (no-op without status).
    fn copy_status_from(&mut self, other: &Self);
    /// Replaces everything but the status with `other`'s.
    fn copy_all_but_status_from(&mut self, other: &Self);
}

/// A kind's names and shape, for the CLI's type names and the server's keys.
#[derive(Debug)]
pub struct KindInfo {
    /// "Deployment"
    pub kind: &'static str,
    /// "v1" or "apps/v1"
    pub api_version: &'static str,
    /// "deployments"
    pub plural: &'static str,
    /// "deployment"
    pub singular: &'static str,
    /// "deploy"
    pub short_names: &'static [&'static str],
    /// Lives in a namespace (false: cluster-scoped, like Node).
    pub namespaced: bool,
    /// Has a status written separately from the rest (UpdateStatus).
    pub has_status: bool,
    /// Has a spec whose changes bump metadata.generation.
    pub has_spec: bool,
}

impl KindInfo {
    /// The API group ("" for core, "apps").
    pub fn group(&self) -> &'static str {
        match self.api_version.split_once('/') {
            Some((g, _)) => g,
            None => "",
        }
    }

    /// The store key of an object of this kind.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{}/{}", self.plural, namespace, name)
        } else {
            format!("/registry/{}/{}", self.plural, name)
        }
    }

    /// The store prefix of every object of this kind in `namespace` (all
    /// namespaces when it is empty or the kind is cluster-scoped).
    pub fn prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("/registry/{}/{}/", self.plural, namespace)
        } else {
            format!("/registry/{}/", self.plural)
        }
    }

    /// How kubectl names the resource in messages: "deployments.apps",
    /// "pods".
    pub fn qualified_plural(&self) -> String {
        match self.group() {
            "" => self.plural.to_string(),
            g => format!("{}.{g}", self.plural),
        }
    }
}

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

macro_rules! kinds {
    ($(
        $ty:ident {
            api_version: $av:literal, plural: $plural:literal, singular: $singular:literal,
            short: [$($short:literal),*], namespaced: $ns:literal,
            spec: $spec:tt, status: $status:tt $(,)?
        }
    )*) => {
        /// Every kind, in the order `rafter api-resources` lists them.
        pub const KINDS: &[&KindInfo] = &[$(<api::$ty as Object>::INFO),*];

        $(
            impl Object for api::$ty {
                const INFO: &'static KindInfo = &KindInfo {
                    kind: stringify!($ty),
                    api_version: $av,
                    plural: $plural,
                    singular: $singular,
                    short_names: &[$($short),*],
                    namespaced: $ns,
                    has_status: kinds!(@has $status),
                    has_spec: kinds!(@has $spec),
                };

                fn metadata(&self) -> &ObjectMeta {
                    self.metadata.as_ref().unwrap_or(&EMPTY_META)
                }

                fn metadata_mut(&mut self) -> &mut ObjectMeta {
                    self.metadata.get_or_insert_with(ObjectMeta::default)
                }

                fn set_type_meta(&mut self) {
                    self.api_version = $av.to_string();
                    self.kind = stringify!($ty).to_string();
                }

                fn type_meta(&self) -> (&str, &str) {
                    (&self.api_version, &self.kind)
                }

                fn spec_bytes(&self) -> Option<Vec<u8>> {
                    kinds!(@spec self $spec)
                }

                fn copy_status_from(&mut self, _other: &Self) {
                    kinds!(@copy_status self _other $status)
                }

                fn copy_all_but_status_from(&mut self, other: &Self) {
                    let mut copy = other.clone();
                    copy.copy_status_from(self);
                    *self = copy;
                }
            }
        )*
    };
    (@has yes) => { true };
    (@has no) => { false };
    (@spec $self:ident yes) => { Some($self.spec.clone().unwrap_or_default().encode_to_vec()) };
    (@spec $self:ident no) => { None };
    (@copy_status $self:ident $other:ident yes) => { $self.status = $other.status.clone() };
    (@copy_status $self:ident $other:ident no) => { () };
}

kinds! {
    Namespace {
        api_version: "v1", plural: "namespaces", singular: "namespace", short: ["ns"],
        namespaced: false, spec: no, status: yes,
    }
    Node {
        api_version: "v1", plural: "nodes", singular: "node", short: ["no"],
        namespaced: false, spec: yes, status: yes,
    }
    Pod {
        api_version: "v1", plural: "pods", singular: "pod", short: ["po"],
        namespaced: true, spec: yes, status: yes,
    }
    ReplicaSet {
        api_version: "apps/v1", plural: "replicasets", singular: "replicaset", short: ["rs"],
        namespaced: true, spec: yes, status: yes,
    }
    Deployment {
        api_version: "apps/v1", plural: "deployments", singular: "deployment",
        short: ["deploy"], namespaced: true, spec: yes, status: yes,
    }
    Service {
        api_version: "v1", plural: "services", singular: "service", short: ["svc"],
        namespaced: true, spec: yes, status: no,
    }
    Endpoints {
        api_version: "v1", plural: "endpoints", singular: "endpoints", short: ["ep"],
        namespaced: true, spec: no, status: no,
    }
    ConfigMap {
        api_version: "v1", plural: "configmaps", singular: "configmap", short: ["cm"],
        namespaced: true, spec: no, status: no,
    }
    Secret {
        api_version: "v1", plural: "secrets", singular: "secret", short: [],
        namespaced: true, spec: no, status: no,
    }
    Event {
        api_version: "v1", plural: "events", singular: "event", short: ["ev"],
        namespaced: true, spec: no, status: no,
    }
    Lease {
        api_version: "coordination.rafter.io/v1", plural: "leases", singular: "lease",
        short: [], namespaced: true, spec: yes, status: no,
    }
}

/// The kind a user means by `name`: a kind ("Deployment"), plural, singular
/// or short name, any case, optionally qualified by group
/// ("deployments.apps").
pub fn resolve_kind(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (base, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower, None),
    };
    KINDS.iter().copied().find(|k| {
        let named = k.kind.eq_ignore_ascii_case(&base)
            || k.plural == base
            || k.singular == base
            || k.short_names.contains(&base.as_str());
        named && group.as_deref().is_none_or(|g| g == k.group())
    })
}

/// Runs `$body` with `$K` bound to the Rust type of the kind named
/// `$kind` (a kind name such as "Pod"), or evaluates `$otherwise`.
#[macro_export]
macro_rules! with_kind {
    ($kind:expr, $K:ident => $body:expr, _ => $otherwise:expr) => {
        match $kind {
            "Namespace" => {
                type $K = $crate::api::Namespace;
                $body
            }
            "Node" => {
                type $K = $crate::api::Node;
                $body
            }
            "Pod" => {
                type $K = $crate::api::Pod;
                $body
            }
            "ReplicaSet" => {
                type $K = $crate::api::ReplicaSet;
                $body
            }
            "Deployment" => {
                type $K = $crate::api::Deployment;
                $body
            }
            "Service" => {
                type $K = $crate::api::Service;
                $body
            }
            "Endpoints" => {
                type $K = $crate::api::Endpoints;
                $body
            }
            "ConfigMap" => {
                type $K = $crate::api::ConfigMap;
                $body
            }
            "Secret" => {
                type $K = $crate::api::Secret;
                $body
            }
            "Event" => {
                type $K = $crate::api::Event;
                $body
            }
            "Lease" => {
                type $K = $crate::api::Lease;
                $body
            }
            _ => $otherwise,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_resolves_by_each_of_its_names() {
        for k in KINDS {
            assert_eq!(resolve_kind(k.kind).unwrap().kind, k.kind);
            assert_eq!(resolve_kind(k.plural).unwrap().kind, k.kind);
            assert_eq!(resolve_kind(k.singular).unwrap().kind, k.kind);
            for s in k.short_names {
                assert_eq!(resolve_kind(s).unwrap().kind, k.kind);
            }
            let dispatched = with_kind!(k.kind, K => K::INFO.kind, _ => "none");
            assert_eq!(dispatched, k.kind);
        }
        assert_eq!(resolve_kind("deployments.apps").unwrap().kind, "Deployment");
        assert!(resolve_kind("deployments.batch").is_none());
        assert!(resolve_kind("po").is_some());
        assert!(resolve_kind("widgets").is_none());
    }

    #[test]
    fn keys_separate_namespaces_and_scopes() {
        let pod = <api::Pod as Object>::INFO;
        assert_eq!(pod.key("default", "web"), "/registry/pods/default/web");
        assert_eq!(pod.prefix("default"), "/registry/pods/default/");
        assert_eq!(pod.prefix(""), "/registry/pods/");
        let node = <api::Node as Object>::INFO;
        assert_eq!(node.key("ignored", "n1"), "/registry/nodes/n1");
        assert_eq!(
            <api::Deployment as Object>::INFO.qualified_plural(),
            "deployments.apps"
        );
    }

    #[test]
    fn status_and_rest_are_copied_separately() {
        let mut a = api::Pod::default();
        a.metadata_mut().name = "a".into();
        a.status = Some(api::PodStatus {
            phase: "Running".into(),
            ..Default::default()
        });
        let mut b = api::Pod::default();
        b.metadata_mut().name = "b".into();
        let mut x = a.clone();
        x.copy_all_but_status_from(&b);
        assert_eq!(x.metadata().name, "b");
        assert_eq!(x.status.as_ref().unwrap().phase, "Running");
        let mut y = b.clone();
        y.copy_status_from(&a);
        assert_eq!(y.metadata().name, "b");
        assert_eq!(y.status.as_ref().unwrap().phase, "Running");
    }
}
