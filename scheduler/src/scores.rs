//! Scoring the nodes that passed the filters: pure functions of a pod and
//! one node's [`NodeInfo`], each from 0 to [`MAX_SCORE`], summed with
//! weights; the best node wins and ties are broken at random (so equal
//! nodes share the load rather than the first one taking everything).
//!
//! - **Least allocated**: prefers the node with the most cpu and memory left
//!   after placing the pod (spreads load).
//! - **Balanced allocation**: prefers the node whose cpu and memory would be
//!   used in the same proportion (avoids nodes full of cpu but empty of
//!   memory, whose memory nobody could then use).
//! - **Spread**: prefers the node with the fewest replicas of the pod's
//!   controller (a ReplicaSet's pods over many nodes survive a node loss).
//!
//! Like kube-scheduler, scoring uses requests with defaults for containers
//! that request nothing (see [`crate::resources::non_zero_requests`]).

use rand::Rng;

use crate::node_info::{NodeInfo, PodInfo};
use crate::resources::{CPU, MEMORY};

pub const MAX_SCORE: i64 = 100;

/// Weights of the scores (kube-scheduler's defaults: spreading counts
/// double).
const LEAST_ALLOCATED_WEIGHT: i64 = 1;
const BALANCED_WEIGHT: i64 = 1;
const SPREAD_WEIGHT: i64 = 2;

/// (requested after placing the pod, allocatable) for cpu and memory.
fn usage(pod: &PodInfo, node: &NodeInfo) -> [(i128, i128); 2] {
    [
        (
            node.non_zero_requested.0 + pod.non_zero.0,
            node.allocatable.get(CPU),
        ),
        (
            node.non_zero_requested.1 + pod.non_zero.1,
            node.allocatable.get(MEMORY),
        ),
    ]
}

/// Mean over cpu and memory of the share left free after placing the pod,
/// 0..=100.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let free = |(requested, allocatable): (i128, i128)| -> i128 {
        if allocatable <= 0 || requested > allocatable {
            0
        } else {
            (allocatable - requested) * MAX_SCORE as i128 / allocatable
        }
    };
    let [cpu, mem] = usage(pod, node);
    ((free(cpu) + free(mem)) / 2) as i64
}

/// 100 × (1 − the standard deviation of the cpu and memory fractions used
/// after placing the pod); 0 when either would be over-used.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fraction = |(requested, allocatable): (i128, i128)| -> f64 {
        if allocatable <= 0 {
            1.0
        } else {
            requested as f64 / allocatable as f64
        }
    };
    let [cpu, mem] = usage(pod, node);
    let (c, m) = (fraction(cpu), fraction(mem));
    if c > 1.0 || m > 1.0 {
        return 0;
    }
    // The standard deviation of two values is half their difference.
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * MAX_SCORE as f64) as i64
}

/// The replicas of the pod's controller on each candidate node, turned into
/// 100 × (most − here) / most: the emptiest nodes score 100. A pod without
/// a controller scores the same everywhere.
pub fn spread(pod: &PodInfo, candidates: &[&NodeInfo]) -> Vec<i64> {
    let Some(owner) = &pod.owner else {
        return vec![MAX_SCORE; candidates.len()];
    };
    let counts: Vec<i64> = candidates
        .iter()
        .map(|n| i64::from(n.replicas_of(owner)))
        .collect();
    let most = counts.iter().copied().max().unwrap_or(0);
    if most == 0 {
        return vec![MAX_SCORE; candidates.len()];
    }
    counts
        .iter()
        .map(|c| MAX_SCORE * (most - c) / most)
        .collect()
}

/// The weighted score of every candidate, in their order.
pub fn score(pod: &PodInfo, candidates: &[&NodeInfo]) -> Vec<i64> {
    let spread = spread(pod, candidates);
    candidates
        .iter()
        .zip(spread)
        .map(|(n, s)| {
            LEAST_ALLOCATED_WEIGHT * least_allocated(pod, n)
                + BALANCED_WEIGHT * balanced_allocation(pod, n)
                + SPREAD_WEIGHT * s
        })
        .collect()
}

/// The index of the highest score, a random one among equals; `None` for
/// no scores.
pub fn pick_best(scores: &[i64], rng: &mut impl Rng) -> Option<usize> {
    let best = *scores.iter().max()?;
    let mut chosen = None;
    let mut seen = 0u32;
    // Reservoir sampling over the ties: each has the same chance.
    for (i, s) in scores.iter().enumerate() {
        if *s == best {
            seen += 1;
            if rng.random_range(0..seen) == 0 {
                chosen = Some(i);
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node_info::tests::{node, pod, with_owner};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn info(cpu: &str, memory: &str) -> NodeInfo {
        NodeInfo::new(node("n", cpu, memory, "110"))
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let p = PodInfo::new(pod("p", "1", "1Gi"));
        let empty = info("4", "4Gi");
        let mut busy = info("4", "4Gi");
        busy.add_pod(&PodInfo::new(pod("b", "2", "2Gi")));
        assert_eq!(least_allocated(&p, &empty), 75);
        assert_eq!(least_allocated(&p, &busy), 25);
    }

    #[test]
    fn balanced_allocation_prefers_even_cpu_and_memory_use() {
        let p = PodInfo::new(pod("p", "1", "1Gi"));
        let mut cpu_heavy = info("4", "4Gi");
        cpu_heavy.add_pod(&PodInfo::new(pod("b", "2", "")));
        let even = info("4", "4Gi");
        assert_eq!(balanced_allocation(&p, &even), 100);
        // cpu 3/4 (2 + the pod's 1), memory 1Gi + 200Mi default of b: 0.3.
        assert!(balanced_allocation(&p, &cpu_heavy) < 80);
    }

    #[test]
    fn spread_scores_nodes_without_replicas_highest() {
        let p = PodInfo::new(with_owner(pod("p", "100m", ""), "rs-1"));
        let mut two = info("4", "4Gi");
        two.add_pod(&PodInfo::new(with_owner(pod("a", "100m", ""), "rs-1")));
        two.add_pod(&PodInfo::new(with_owner(pod("b", "100m", ""), "rs-1")));
        let mut one = info("4", "4Gi");
        one.add_pod(&PodInfo::new(with_owner(pod("c", "100m", ""), "rs-1")));
        // Another controller's pods do not count.
        let mut other = info("4", "4Gi");
        other.add_pod(&PodInfo::new(with_owner(pod("d", "100m", ""), "rs-2")));
        assert_eq!(spread(&p, &[&two, &one, &other]), vec![0, 50, 100]);
        let bare = PodInfo::new(pod("bare", "100m", ""));
        assert_eq!(spread(&bare, &[&two, &one]), vec![100, 100]);
    }

    #[test]
    fn spreading_outweighs_a_slightly_emptier_node() {
        // Node a is emptier but already runs a replica; b runs none.
        let p = PodInfo::new(with_owner(pod("p", "100m", "100Mi"), "rs-1"));
        let mut a = info("4", "8Gi");
        a.add_pod(&PodInfo::new(with_owner(pod("r", "100m", "100Mi"), "rs-1")));
        let mut b = info("4", "8Gi");
        b.add_pod(&PodInfo::new(pod("x", "500m", "500Mi")));
        let scores = score(&p, &[&a, &b]);
        assert!(scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn ties_are_broken_at_random_among_the_best() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut hits = [0; 4];
        for _ in 0..400 {
            hits[pick_best(&[5, 9, 3, 9], &mut rng).unwrap()] += 1;
        }
        assert_eq!((hits[0], hits[2]), (0, 0));
        assert!(hits[1] > 100 && hits[3] > 100, "{hits:?}");
        assert_eq!(pick_best(&[], &mut rng), None);
    }
}
