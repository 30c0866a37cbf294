//! Ownership between workload objects, shared by the ReplicaSet controller
//! (which owns pods) and the Deployment controller (which owns
//! ReplicaSets): who an object's controller is, the owner reference a
//! controller puts on what it makes, and the claim rule that decides
//! whether an object is to be kept, adopted or released.
//!
//! The rule is Kubernetes': an object belongs to the owner its controller
//! reference (`controller: true`) names by uid. An owner adopts an orphan
//! (no controller reference) whose labels its selector matches, and
//! releases an object it owns whose labels no longer match. An owner that
//! is being deleted adopts nothing, and nothing being deleted is adopted.

use std::collections::BTreeMap;

use rafter_proto::api;
use rafter_proto::object::Object;
use rafter_proto::selector::LabelSelector;

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(meta: &api::ObjectMeta) -> Option<&api::OwnerReference> {
    meta.owner_references
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The controller reference an owner of kind `O` puts on what it makes:
/// `controller` and `blockOwnerDeletion` set, as Kubernetes does.
pub fn owner_ref<O: Object>(owner: &O) -> api::OwnerReference {
    let m = owner.metadata();
    api::OwnerReference {
        api_version: O::INFO.api_version.to_string(),
        kind: O::INFO.kind.to_string(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A workload's selector, parsed. `None` when it is missing or does not
/// parse: such an owner selects nothing (an empty selector would select
/// everything, which the API server refuses for workloads anyway).
pub fn parse_selector(selector: &Option<api::LabelSelector>) -> Option<LabelSelector> {
    let s = selector.as_ref()?;
    if s.match_labels.is_empty() && s.match_expressions.is_empty() {
        return None;
    }
    let exprs: Vec<(String, String, Vec<String>)> = s
        .match_expressions
        .iter()
        .map(|e| (e.key.clone(), e.operator.clone(), e.values.clone()))
        .collect();
    LabelSelector::from_parts(&s.match_labels, &exprs).ok()
}

/// What an owner should do about one object in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It is the owner's and matches: count it.
    Owned,
    /// An orphan that matches: take it (add the controller reference).
    Adopt,
    /// The owner's but no longer matching: let go (remove the reference).
    Release,
    /// Someone else's, or an orphan that does not match.
    Ignore,
}

/// The claim rule (see the module doc). `owner_deleting`: the owner has a
/// deletionTimestamp.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: Option<&LabelSelector>,
    obj: &api::ObjectMeta,
) -> Claim {
    let matches = |labels: &BTreeMap<String, String>| selector.is_some_and(|s| s.matches(labels));
    match controller_ref(obj) {
        Some(r) if r.uid == owner_uid => {
            if matches(&obj.labels) {
                Claim::Owned
            } else if owner_deleting {
                // Releasing while being deleted would orphan it from the
                // garbage collector's cascade; keep it.
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None => {
            if !owner_deleting && obj.deletion_timestamp.is_empty() && matches(&obj.labels) {
                Claim::Adopt
            } else {
                Claim::Ignore
            }
        }
    }
}

/// `obj` with a controller reference to `owner` added.
pub fn adopted<K: Object, O: Object>(obj: &K, owner: &O) -> K {
    let mut o = obj.clone();
    o.metadata_mut().owner_references.push(owner_ref(owner));
    o
}

/// `obj` without its references to the owner with `owner_uid`.
pub fn released<K: Object>(obj: &K, owner_uid: &str) -> K {
    let mut o = obj.clone();
    o.metadata_mut()
        .owner_references
        .retain(|r| r.uid != owner_uid);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(labels: &[(&str, &str)], owner: Option<&str>) -> api::ObjectMeta {
        api::ObjectMeta {
            name: "p".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            owner_references: owner
                .map(|uid| {
                    vec![api::OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn sel() -> LabelSelector {
        parse_selector(&Some(api::LabelSelector {
            match_labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }))
        .expect("selector")
    }

    #[test]
    fn an_owner_keeps_matching_objects_and_releases_the_rest() {
        let s = sel();
        let mine = meta(&[("app", "web")], Some("u1"));
        assert_eq!(claim("u1", false, Some(&s), &mine), Claim::Owned);
        let relabelled = meta(&[("app", "other")], Some("u1"));
        assert_eq!(claim("u1", false, Some(&s), &relabelled), Claim::Release);
        assert_eq!(claim("u1", true, Some(&s), &relabelled), Claim::Owned);
    }

    #[test]
    fn orphans_are_adopted_only_when_they_match_and_nobody_is_deleting() {
        let s = sel();
        let orphan = meta(&[("app", "web")], None);
        assert_eq!(claim("u1", false, Some(&s), &orphan), Claim::Adopt);
        assert_eq!(claim("u1", true, Some(&s), &orphan), Claim::Ignore);
        let mut dying = orphan.clone();
        dying.deletion_timestamp = "2026-11-27T00:00:00Z".into();
        assert_eq!(claim("u1", false, Some(&s), &dying), Claim::Ignore);
        let stranger = meta(&[("app", "db")], None);
        assert_eq!(claim("u1", false, Some(&s), &stranger), Claim::Ignore);
        assert_eq!(claim("u1", false, None, &orphan), Claim::Ignore);
    }

    #[test]
    fn objects_of_another_controller_are_left_alone() {
        let s = sel();
        let theirs = meta(&[("app", "web")], Some("u2"));
        assert_eq!(claim("u1", false, Some(&s), &theirs), Claim::Ignore);
    }

    #[test]
    fn adopting_and_releasing_edit_only_the_owner_reference() {
        let mut rs = api::ReplicaSet::default();
        rs.metadata_mut().name = "web-1".into();
        rs.metadata_mut().uid = "u1".into();
        let mut pod = api::Pod::default();
        pod.metadata_mut().name = "p".into();
        let a = adopted(&pod, &rs);
        let r = controller_ref(a.metadata()).expect("controller ref");
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
            ("ReplicaSet", "web-1", "u1")
        );
        assert_eq!(r.block_owner_deletion, Some(true));
        assert_eq!(released(&a, "u1"), pod);
    }
}
