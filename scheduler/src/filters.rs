//! The filter pipeline: pure functions of a pod and one node's
//! [`NodeInfo`], each answering "can this node take this pod?" and, when it
//! cannot, why ([`Reason`]). [`run`] applies them in kube-scheduler's
//! order and stops at the first that rejects the node, except that the
//! resource check names every resource that is short.

use rafter_proto::api;

use crate::failure::Reason;
use crate::node_info::{NodeInfo, PodInfo};
use crate::resources::PODS;

/// The taint Kubernetes puts on a cordoned node; a pod tolerating it may
/// go to a cordoned node (DaemonSet pods do).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Every filter on `node` for `pod`: `Ok` when the node can take it.
pub fn run(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<Reason>> {
    let Some(n) = &node.node else {
        return Err(vec![Reason::NotReady]);
    };
    let one = |r: Result<(), Reason>| r.map_err(|r| vec![r]);
    one(node_ready(n))?;
    one(node_schedulable(&pod.pod, n))?;
    one(taints_tolerated(&pod.pod, n))?;
    one(node_selector_matches(&pod.pod, n))?;
    one(host_ports_free(pod, node))?;
    resources_fit(pod, node)
}

/// The node's Ready condition is True.
pub fn node_ready(node: &api::Node) -> Result<(), Reason> {
    let ready = node
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .any(|c| c.r#type == "Ready" && c.status == "True");
    if ready { Ok(()) } else { Err(Reason::NotReady) }
}

/// The node is not cordoned, or the pod tolerates the cordon.
pub fn node_schedulable(pod: &api::Pod, node: &api::Node) -> Result<(), Reason> {
    let cordoned = node.spec.as_ref().is_some_and(|s| s.unschedulable);
    let cordon = api::Taint {
        key: UNSCHEDULABLE_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if cordoned && !tolerations(pod).iter().any(|t| tolerates(t, &cordon)) {
        Err(Reason::Unschedulable)
    } else {
        Ok(())
    }
}

/// Every NoSchedule or NoExecute taint of the node is tolerated by the pod
/// (PreferNoSchedule only ever lowers a score, which Rafter does not do).
pub fn taints_tolerated(pod: &api::Pod, node: &api::Node) -> Result<(), Reason> {
    let tolerations = tolerations(pod);
    let untolerated = node
        .spec
        .iter()
        .flat_map(|s| &s.taints)
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)));
    match untolerated {
        Some(t) => Err(Reason::UntoleratedTaint(t.key.clone(), t.value.clone())),
        None => Ok(()),
    }
}

fn tolerations(pod: &api::Pod) -> &[api::Toleration] {
    pod.spec
        .as_ref()
        .map(|s| s.tolerations.as_slice())
        .unwrap_or(&[])
}

/// Whether `toleration` tolerates `taint`, by Kubernetes' rules: an empty
/// effect matches every effect, an empty key with `Exists` every key;
/// `Exists` ignores the value, `Equal` (the default) compares it.
pub fn tolerates(toleration: &api::Toleration, taint: &api::Taint) -> bool {
    if !toleration.effect.is_empty() && toleration.effect != taint.effect {
        return false;
    }
    if !toleration.key.is_empty() && toleration.key != taint.key {
        return false;
    }
    match toleration.operator.as_str() {
        "Exists" => true,
        "" | "Equal" => toleration.key == taint.key && toleration.value == taint.value,
        _ => false,
    }
}

/// The node has every label of the pod's nodeSelector.
pub fn node_selector_matches(pod: &api::Pod, node: &api::Node) -> Result<(), Reason> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    let labels = node.metadata.as_ref().map(|m| &m.labels);
    let ok = spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    if ok {
        Ok(())
    } else {
        Err(Reason::NodeSelectorMismatch)
    }
}

/// No host port the pod asks for is taken on the node.
pub fn host_ports_free(pod: &PodInfo, node: &NodeInfo) -> Result<(), Reason> {
    let taken = pod
        .host_ports
        .iter()
        .any(|want| node.host_ports.keys().any(|used| used.conflicts(want)));
    if taken {
        Err(Reason::HostPortTaken)
    } else {
        Ok(())
    }
}

/// The node has room for one more pod, and for each resource the pod
/// requests, what the pods placed there request plus this pod's is within
/// the node's allocatable. Names every resource that is short.
pub fn resources_fit(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<Reason>> {
    let mut short = Vec::new();
    let allowed_pods = node.allocatable.get(PODS) / 1000;
    if node.pods.len() as i128 + 1 > allowed_pods {
        short.push(Reason::TooManyPods);
    }
    for (name, want) in pod.requests.iter() {
        if name == PODS || want <= 0 {
            continue;
        }
        if node.requested.get(name) + want > node.allocatable.get(name) {
            short.push(Reason::Insufficient(name.to_string()));
        }
    }
    if short.is_empty() { Ok(()) } else { Err(short) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_info::tests::{node, pod, with_host_port};

    fn info(n: api::Node) -> NodeInfo {
        NodeInfo::new(n)
    }

    fn toleration(key: &str, operator: &str, value: &str, effect: &str) -> api::Toleration {
        api::Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> api::Taint {
        api::Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn toleration_matching_follows_kubernetes_rules() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "", "gpu", ""), &t));
        assert!(!tolerates(&toleration("dedicated", "Equal", "cpu", ""), &t));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &t));
        assert!(!tolerates(
            &toleration("dedicated", "Exists", "", "NoExecute"),
            &t
        ));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
        // An empty key with Exists tolerates everything.
        assert!(tolerates(&toleration("", "Exists", "", ""), &t));
        assert!(!tolerates(&toleration("dedicated", "Lt", "gpu", ""), &t));
    }

    #[test]
    fn node_ready_needs_a_true_ready_condition() {
        let mut n = node("n1", "2", "4Gi", "110");
        assert_eq!(node_ready(&n), Ok(()));
        n.status.as_mut().unwrap().conditions[0].status = "Unknown".into();
        assert_eq!(node_ready(&n), Err(Reason::NotReady));
        n.status.as_mut().unwrap().conditions.clear();
        assert_eq!(node_ready(&n), Err(Reason::NotReady));
    }

    #[test]
    fn cordoned_node_rejects_pods_unless_tolerated() {
        let mut n = node("n1", "2", "4Gi", "110");
        let mut p = pod("a", "100m", "");
        assert_eq!(node_schedulable(&p, &n), Ok(()));
        n.spec.as_mut().unwrap().unschedulable = true;
        assert_eq!(node_schedulable(&p, &n), Err(Reason::Unschedulable));
        p.spec.as_mut().unwrap().tolerations =
            vec![toleration(UNSCHEDULABLE_TAINT, "Exists", "", "NoSchedule")];
        assert_eq!(node_schedulable(&p, &n), Ok(()));
    }

    #[test]
    fn no_schedule_taints_need_a_toleration() {
        let mut n = node("n1", "2", "4Gi", "110");
        n.spec.as_mut().unwrap().taints = vec![
            taint("soft", "", "PreferNoSchedule"),
            taint("dedicated", "gpu", "NoSchedule"),
        ];
        let mut p = pod("a", "100m", "");
        assert_eq!(
            taints_tolerated(&p, &n),
            Err(Reason::UntoleratedTaint("dedicated".into(), "gpu".into()))
        );
        p.spec.as_mut().unwrap().tolerations =
            vec![toleration("dedicated", "Equal", "gpu", "NoSchedule")];
        assert_eq!(taints_tolerated(&p, &n), Ok(()));
        n.spec
            .as_mut()
            .unwrap()
            .taints
            .push(taint("evict", "", "NoExecute"));
        assert_eq!(
            taints_tolerated(&p, &n),
            Err(Reason::UntoleratedTaint("evict".into(), "".into()))
        );
        p.spec.as_mut().unwrap().tolerations = vec![toleration("", "Exists", "", "")];
        assert_eq!(taints_tolerated(&p, &n), Ok(()));
    }

    #[test]
    fn node_selector_needs_every_label() {
        let mut n = node("n1", "2", "4Gi", "110");
        let mut p = pod("a", "100m", "");
        assert_eq!(node_selector_matches(&p, &n), Ok(()));
        p.spec.as_mut().unwrap().node_selector = [("disk".to_string(), "ssd".to_string())].into();
        assert_eq!(
            node_selector_matches(&p, &n),
            Err(Reason::NodeSelectorMismatch)
        );
        n.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("disk".into(), "hdd".into());
        assert_eq!(
            node_selector_matches(&p, &n),
            Err(Reason::NodeSelectorMismatch)
        );
        n.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("disk".into(), "ssd".into());
        assert_eq!(node_selector_matches(&p, &n), Ok(()));
    }

    #[test]
    fn host_port_taken_by_a_placed_pod_rejects_the_node() {
        let mut n = info(node("n1", "2", "4Gi", "110"));
        let web = PodInfo::new(with_host_port(pod("web", "100m", ""), 8080));
        assert_eq!(host_ports_free(&web, &n), Ok(()));
        n.add_pod(&PodInfo::new(with_host_port(pod("other", "", ""), 9090)));
        assert_eq!(host_ports_free(&web, &n), Ok(()));
        n.add_pod(&PodInfo::new(with_host_port(pod("first", "", ""), 8080)));
        assert_eq!(host_ports_free(&web, &n), Err(Reason::HostPortTaken));
    }

    #[test]
    fn resources_count_placed_pods_against_allocatable() {
        let mut n = info(node("n1", "2", "4Gi", "110"));
        n.add_pod(&PodInfo::new(pod("a", "1500m", "1Gi")));
        assert_eq!(
            resources_fit(&PodInfo::new(pod("b", "500m", "3Gi")), &n),
            Ok(())
        );
        assert_eq!(
            resources_fit(&PodInfo::new(pod("c", "501m", "1Gi")), &n),
            Err(vec![Reason::Insufficient("cpu".into())])
        );
        assert_eq!(
            resources_fit(&PodInfo::new(pod("d", "600m", "4Gi")), &n),
            Err(vec![
                Reason::Insufficient("cpu".into()),
                Reason::Insufficient("memory".into())
            ])
        );
        // A pod requesting nothing fits however full the node is.
        assert_eq!(resources_fit(&PodInfo::new(pod("e", "", "")), &n), Ok(()));
    }

    #[test]
    fn pod_count_is_limited_by_allocatable_pods() {
        let mut n = info(node("n1", "2", "4Gi", "2"));
        n.add_pod(&PodInfo::new(pod("a", "", "")));
        let next = PodInfo::new(pod("next", "", ""));
        assert_eq!(resources_fit(&next, &n), Ok(()));
        n.add_pod(&PodInfo::new(pod("b", "", "")));
        assert_eq!(resources_fit(&next, &n), Err(vec![Reason::TooManyPods]));
    }

    #[test]
    fn pipeline_stops_at_the_first_rejecting_filter() {
        let mut n = node("n1", "1", "4Gi", "110");
        n.spec.as_mut().unwrap().unschedulable = true;
        let big = PodInfo::new(pod("big", "2", ""));
        // Cordoned and too small: only the cordon is reported.
        assert_eq!(
            run(&big, &info(n.clone())),
            Err(vec![Reason::Unschedulable])
        );
        n.spec.as_mut().unwrap().unschedulable = false;
        assert_eq!(
            run(&big, &info(n.clone())),
            Err(vec![Reason::Insufficient("cpu".into())])
        );
        assert_eq!(run(&PodInfo::new(pod("small", "1", "")), &info(n)), Ok(()));
        // Pods on a node the scheduler has not seen: never a candidate.
        assert_eq!(
            run(&PodInfo::new(pod("small", "1", "")), &NodeInfo::default()),
            Err(vec![Reason::NotReady])
        );
    }
}
