//! Resource amounts as the scheduler counts them: what a pod requests and
//! what a node can give (its allocatable), in milli-units per resource name
//! (`cpu` in millicores, `memory` in millibytes, any extended resource such
//! as `example.com/gpu` alike).
//!
//! The API server has already parsed and canonicalised every quantity, so a
//! string that does not parse here counts as zero rather than failing the
//! whole scheduler.

use std::collections::BTreeMap;

use rafter_proto::api;
use rafter_proto::quantity::Quantity;

/// The resource names Kubernetes gives meaning to.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const PODS: &str = "pods";

/// What a pod with no cpu request is taken to use when *scoring* (never
/// when filtering), so that many request-less pods do not all pile onto one
/// node: kube-scheduler's defaults, 100m cpu and 200Mi memory.
pub const DEFAULT_MILLI_CPU: i128 = 100;
pub const DEFAULT_MEMORY_MILLIS: i128 = 200 * 1024 * 1024 * 1000;

/// Amounts per resource name, in milli-units. Missing means zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(BTreeMap<String, i128>);

impl Resources {
    /// The amount of `name`, in milli-units.
    pub fn get(&self, name: &str) -> i128 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Sets `name` to `millis`.
    pub fn set(&mut self, name: &str, millis: i128) {
        self.0.insert(name.to_string(), millis);
    }

    /// Adds every amount of `other`.
    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Subtracts every amount of `other`.
    pub fn sub(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// The (name, millis) pairs with a non-zero amount, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        self.0
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k.as_str(), *v))
    }

    /// Parses a map of quantity strings (a node's allocatable).
    pub fn from_quantities(map: &BTreeMap<String, String>) -> Resources {
        let mut r = Resources::default();
        for (k, v) in map {
            r.set(k, parse_millis(v));
        }
        r
    }
}

fn parse_millis(s: &str) -> i128 {
    s.parse::<Quantity>().map(|q| q.millis()).unwrap_or(0)
}

/// What `pod` requests: the sum over its containers of each container's
/// requests, a resource with only a limit requesting its limit (as
/// Kubernetes defaults it). The pod count is not included.
pub fn pod_requests(pod: &api::Pod) -> Resources {
    let mut total = Resources::default();
    let Some(spec) = &pod.spec else {
        return total;
    };
    for c in &spec.containers {
        let Some(res) = &c.resources else { continue };
        for (name, q) in &res.requests {
            *total.0.entry(name.clone()).or_insert(0) += parse_millis(q);
        }
        for (name, q) in &res.limits {
            if !res.requests.contains_key(name) {
                *total.0.entry(name.clone()).or_insert(0) += parse_millis(q);
            }
        }
    }
    total
}

/// The (cpu, memory) a pod is taken to use when scoring: its requests, with
/// kube-scheduler's defaults for a container that requests neither.
pub fn non_zero_requests(pod: &api::Pod) -> (i128, i128) {
    let Some(spec) = &pod.spec else {
        return (0, 0);
    };
    let mut cpu = 0;
    let mut memory = 0;
    for c in &spec.containers {
        let r = c.resources.as_ref();
        let get = |name: &str| {
            r.and_then(|r| r.requests.get(name).or_else(|| r.limits.get(name)))
                .map(|q| parse_millis(q))
        };
        cpu += get(CPU).unwrap_or(DEFAULT_MILLI_CPU);
        memory += get(MEMORY).unwrap_or(DEFAULT_MEMORY_MILLIS);
    }
    (cpu, memory)
}

/// What `node` can give to pods: its allocatable, or its capacity where it
/// reports no allocatable.
pub fn node_allocatable(node: &api::Node) -> Resources {
    let Some(status) = &node.status else {
        return Resources::default();
    };
    if status.allocatable.is_empty() {
        Resources::from_quantities(&status.capacity)
    } else {
        Resources::from_quantities(&status.allocatable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> api::Container {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        api::Container {
            name: "c".into(),
            resources: Some(api::ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<api::Container>) -> api::Pod {
        api::Pod {
            spec: Some(api::PodSpec {
                containers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resources_add_and_subtract_per_name() {
        let mut a = Resources::default();
        a.set(CPU, 500);
        let mut b = Resources::default();
        b.set(CPU, 250);
        b.set(MEMORY, 1000);
        a.add(&b);
        assert_eq!((a.get(CPU), a.get(MEMORY)), (750, 1000));
        a.sub(&b);
        assert_eq!((a.get(CPU), a.get(MEMORY)), (500, 0));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![(CPU, 500)]);
    }

    #[test]
    fn pod_requests_sum_containers_and_fall_back_to_limits() {
        let p = pod(vec![
            container(&[("cpu", "500m"), ("memory", "1Gi")], &[("cpu", "1")]),
            container(&[], &[("cpu", "250m"), ("example.com/gpu", "1")]),
        ]);
        let r = pod_requests(&p);
        assert_eq!(r.get(CPU), 750);
        assert_eq!(r.get(MEMORY), 1024 * 1024 * 1024 * 1000);
        assert_eq!(r.get("example.com/gpu"), 1000);
    }

    #[test]
    fn non_zero_requests_default_what_a_container_leaves_out() {
        let p = pod(vec![
            container(&[("cpu", "200m")], &[]),
            container(&[], &[]),
        ]);
        assert_eq!(
            non_zero_requests(&p),
            (200 + DEFAULT_MILLI_CPU, 2 * DEFAULT_MEMORY_MILLIS)
        );
    }

    #[test]
    fn node_allocatable_falls_back_to_capacity() {
        let mut node = api::Node {
            status: Some(api::NodeStatus {
                capacity: [("cpu".to_string(), "4".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(node_allocatable(&node).get(CPU), 4000);
        node.status.as_mut().unwrap().allocatable =
            [("cpu".to_string(), "3500m".to_string())].into();
        assert_eq!(node_allocatable(&node).get(CPU), 3500);
    }
}
