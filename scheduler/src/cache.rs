//! The scheduler's cache: every node with the pods placed on it, where
//! "placed" means bound (the API shows spec.nodeName) or *assumed*: the
//! scheduler has decided to bind the pod there and the write is in flight.
//!
//! Assumed pods are what let the scheduler decide thousands of placements
//! in memory, one after the other, while their bindings are still being
//! written: each decision already sees the resources the earlier ones took,
//! so a burst of pods never overcommits a node. An assumed pod stays until
//! the API confirms the binding (it is then counted as bound) or the write
//! fails (it is forgotten, and its resources are free again).

use std::collections::{BTreeMap, HashMap};

use rafter_proto::api;
use rafter_proto::object::Object;
use rand::Rng;

use crate::failure::{self, Reason};
use crate::filters;
use crate::node_info::{NodeInfo, PodInfo, PodKey};
use crate::scores;

/// A pod counted on a node.
#[derive(Debug, Clone)]
struct Placed {
    info: PodInfo,
    node: String,
    /// Decided here, not yet seen bound.
    assumed: bool,
}

/// Nodes and the pods placed on them.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: HashMap<String, NodeInfo>,
    placed: HashMap<PodKey, Placed>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Nodes the scheduler knows (whose Node object it has seen).
    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.node.is_some()).count()
    }

    /// The node named `name`, if seen.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|n| n.node.is_some())
    }

    /// Adds or replaces a node. Returns whether anything a filter or score
    /// looks at changed (not just a heartbeat), so that pods which did not
    /// fit are worth trying again.
    pub fn upsert_node(&mut self, node: api::Node) -> bool {
        let name = node.metadata().name.clone();
        let info = self.nodes.entry(name).or_default();
        let changed = match &info.node {
            None => true,
            Some(old) => scheduling_view(old) != scheduling_view(&node),
        };
        info.set_node(node);
        changed
    }

    /// Removes a node; pods still bound to it keep counting against it
    /// should it come back.
    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            info.allocatable = Default::default();
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Takes in a pod as the API now shows it. Bound pods are counted on
    /// their node (an assumed one becomes confirmed); pods that finished
    /// stop counting; an unbound pod that is assumed stays assumed (the
    /// API has not caught up with the binding yet). Returns whether
    /// resources were freed on some node.
    pub fn upsert_pod(&mut self, info: PodInfo) -> bool {
        let node = info.node_name().to_string();
        let finished = is_finished(&info.pod);
        if node.is_empty() && !finished {
            if let Some(p) = self.placed.get(&info.key)
                && p.assumed
            {
                return false;
            }
            return self.remove_pod(&info.key);
        }
        let freed = self.remove_pod(&info.key);
        if finished {
            return freed;
        }
        self.place(info, node, false);
        freed
    }

    /// Stops counting a pod (deleted, or its binding failed). Returns
    /// whether it was counted somewhere.
    pub fn remove_pod(&mut self, key: &PodKey) -> bool {
        let Some(p) = self.placed.remove(key) else {
            return false;
        };
        if let Some(n) = self.nodes.get_mut(&p.node) {
            n.remove_pod(&p.info);
            if n.node.is_none() && n.pods.is_empty() {
                self.nodes.remove(&p.node);
            }
        }
        true
    }

    /// Counts `pod` on `node` while its binding is written.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.remove_pod(&pod.key);
        self.place(pod.clone(), node.to_string(), true);
    }

    /// Forgets an assumed pod whose binding failed. Returns whether it
    /// was still assumed (and so freed resources).
    pub fn forget(&mut self, key: &PodKey) -> bool {
        match self.placed.get(key) {
            Some(p) if p.assumed => self.remove_pod(key),
            _ => false,
        }
    }

    pub fn is_assumed(&self, key: &PodKey) -> bool {
        self.placed.get(key).is_some_and(|p| p.assumed)
    }

    /// The node a pod is counted on, if any.
    pub fn placement_of(&self, key: &PodKey) -> Option<&str> {
        self.placed.get(key).map(|p| p.node.as_str())
    }

    fn place(&mut self, info: PodInfo, node: String, assumed: bool) {
        self.nodes.entry(node.clone()).or_default().add_pod(&info);
        self.placed.insert(
            info.key.clone(),
            Placed {
                info,
                node,
                assumed,
            },
        );
    }

    /// Chooses a node for `pod`: every known node through the filters, the
    /// ones that pass through the scores, the best one (a random one among
    /// equals). Otherwise the kube-scheduler style message saying why no
    /// node fits.
    pub fn choose_node(&self, pod: &PodInfo, rng: &mut impl Rng) -> Result<String, String> {
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut rejections: Vec<Vec<Reason>> = Vec::new();
        for n in self.nodes.values().filter(|n| n.node.is_some()) {
            match filters::run(pod, n) {
                Ok(()) => feasible.push(n),
                Err(reasons) => rejections.push(reasons),
            }
        }
        if feasible.is_empty() {
            return Err(failure::unschedulable_message(
                rejections.len(),
                rejections.iter().map(Vec::as_slice),
            ));
        }
        let scores = scores::score(pod, &feasible);
        let best = scores::pick_best(&scores, rng).expect("at least one feasible node");
        Ok(feasible[best].name().to_string())
    }
}

/// A pod in phase Succeeded or Failed no longer uses its node.
pub fn is_finished(pod: &api::Pod) -> bool {
    matches!(
        pod.status.as_ref().map(|s| s.phase.as_str()),
        Some("Succeeded" | "Failed")
    )
}

/// The parts of a Node the filters and scores read: Ready, labels, spec
/// (cordon, taints), allocatable and capacity.
type SchedulingView<'a> = (
    bool,
    Option<&'a BTreeMap<String, String>>,
    Option<&'a api::NodeSpec>,
    Option<(&'a BTreeMap<String, String>, &'a BTreeMap<String, String>)>,
);

fn scheduling_view(node: &api::Node) -> SchedulingView<'_> {
    let ready = filters::node_ready(node).is_ok();
    let labels = node.metadata.as_ref().map(|m| &m.labels);
    let allocatable = node.status.as_ref().map(|s| (&s.allocatable, &s.capacity));
    (ready, labels, node.spec.as_ref(), allocatable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_info::tests::{node, pod, with_owner};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn cache_with_nodes(names: &[&str], cpu: &str) -> Cache {
        let mut c = Cache::new();
        for n in names {
            c.upsert_node(node(n, cpu, "4Gi", "110"));
        }
        c
    }

    fn bound(mut p: api::Pod, node: &str) -> api::Pod {
        p.spec.as_mut().unwrap().node_name = node.into();
        p
    }

    #[test]
    fn only_scheduling_relevant_node_changes_count() {
        let mut c = Cache::new();
        let mut n = node("n1", "2", "4Gi", "110");
        assert!(c.upsert_node(n.clone()));
        n.status.as_mut().unwrap().conditions[0].last_heartbeat_time = "later".into();
        n.metadata.as_mut().unwrap().resource_version = "2".into();
        assert!(!c.upsert_node(n.clone()), "a heartbeat is not a change");
        n.spec.as_mut().unwrap().unschedulable = true;
        assert!(c.upsert_node(n));
    }

    #[test]
    fn assumed_pods_count_against_the_node_so_a_burst_never_overcommits() {
        // Two nodes of 2 cpu: room for exactly eight 500m pods.
        let mut c = cache_with_nodes(&["n1", "n2"], "2");
        let mut rng = StdRng::seed_from_u64(1);
        let mut per_node: HashMap<String, u32> = HashMap::new();
        let mut failed = Vec::new();
        for i in 0..10 {
            let p = PodInfo::new(pod(&format!("p{i}"), "500m", ""));
            match c.choose_node(&p, &mut rng) {
                Ok(n) => {
                    c.assume(&p, &n);
                    *per_node.entry(n).or_default() += 1;
                }
                Err(msg) => failed.push(msg),
            }
        }
        assert_eq!(per_node.get("n1"), Some(&4));
        assert_eq!(per_node.get("n2"), Some(&4));
        assert_eq!(
            failed,
            vec!["0/2 nodes are available: 2 Insufficient cpu."; 2]
        );
        assert_eq!(c.node("n1").unwrap().requested.get("cpu"), 2000);
    }

    #[test]
    fn forgetting_a_failed_binding_frees_its_resources() {
        let mut c = cache_with_nodes(&["n1"], "1");
        let mut rng = StdRng::seed_from_u64(1);
        let a = PodInfo::new(pod("a", "1", ""));
        let b = PodInfo::new(pod("b", "1", ""));
        c.assume(&a, "n1");
        assert!(c.choose_node(&b, &mut rng).is_err());
        assert!(c.forget(&a.key));
        assert!(!c.forget(&a.key));
        assert_eq!(c.choose_node(&b, &mut rng), Ok("n1".to_string()));
    }

    #[test]
    fn confirmed_binding_replaces_the_assumption_and_stale_unbound_views_keep_it() {
        let mut c = cache_with_nodes(&["n1"], "2");
        let a = PodInfo::new(pod("a", "1", ""));
        c.assume(&a, "n1");
        // The informer still shows the pod unbound: the assumption stays.
        assert!(!c.upsert_pod(a.clone()));
        assert!(c.is_assumed(&a.key));
        assert_eq!(c.node("n1").unwrap().requested.get("cpu"), 1000);
        // Now bound: counted once, no longer assumed, forget does nothing.
        c.upsert_pod(PodInfo::new(bound(pod("a", "1", ""), "n1")));
        assert!(!c.is_assumed(&a.key));
        assert!(!c.forget(&a.key));
        assert_eq!(c.node("n1").unwrap().requested.get("cpu"), 1000);
        assert_eq!(c.placement_of(&a.key), Some("n1"));
    }

    #[test]
    fn deleted_and_finished_pods_free_their_node() {
        let mut c = cache_with_nodes(&["n1"], "2");
        let a = bound(pod("a", "1", ""), "n1");
        let b = bound(pod("b", "1", ""), "n1");
        assert!(!c.upsert_pod(PodInfo::new(a.clone())));
        c.upsert_pod(PodInfo::new(b.clone()));
        assert_eq!(c.node("n1").unwrap().requested.get("cpu"), 2000);
        let mut done = b;
        done.status = Some(api::PodStatus {
            phase: "Succeeded".into(),
            ..Default::default()
        });
        assert!(c.upsert_pod(PodInfo::new(done)));
        assert!(c.remove_pod(&("default".to_string(), "a".to_string())));
        assert_eq!(c.node("n1").unwrap().requested.get("cpu"), 0);
    }

    #[test]
    fn pods_bound_to_an_unknown_node_count_once_it_appears() {
        let mut c = Cache::new();
        c.upsert_pod(PodInfo::new(bound(pod("a", "2", ""), "late")));
        assert_eq!(c.node_count(), 0);
        c.upsert_node(node("late", "2", "4Gi", "110"));
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            c.choose_node(&PodInfo::new(pod("b", "1", "")), &mut rng),
            Err("0/1 nodes are available: 1 Insufficient cpu.".to_string())
        );
        c.remove_node("late");
        assert_eq!(c.node_count(), 0);
        assert_eq!(
            c.choose_node(&PodInfo::new(pod("b", "1", "")), &mut rng),
            Err(failure::NO_NODES.to_string())
        );
    }

    #[test]
    fn replicas_of_one_controller_spread_over_nodes() {
        // n2 and n3 are busier, so without spreading every replica would
        // go to n1.
        let mut c = cache_with_nodes(&["n1", "n2", "n3"], "8");
        c.upsert_pod(PodInfo::new(bound(pod("x2", "1", "1Gi"), "n2")));
        c.upsert_pod(PodInfo::new(bound(pod("x3", "1", "1Gi"), "n3")));
        let mut rng = StdRng::seed_from_u64(3);
        let mut per_node: HashMap<String, u32> = HashMap::new();
        for i in 0..6 {
            let p = PodInfo::new(with_owner(pod(&format!("r{i}"), "100m", ""), "rs-1"));
            let n = c.choose_node(&p, &mut rng).unwrap();
            c.assume(&p, &n);
            *per_node.entry(n).or_default() += 1;
        }
        assert_eq!(
            per_node.values().copied().collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }
}
