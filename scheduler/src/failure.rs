//! Why a pod fits nowhere, in kube-scheduler's words: each filter that
//! rejects a node gives a [`Reason`]; [`unschedulable_message`] counts the
//! nodes per reason and writes the PodScheduled condition's message, e.g.
//! `0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable.`

use std::collections::BTreeMap;
use std::fmt;

/// Why one node cannot take a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Its Ready condition is not True.
    NotReady,
    /// Cordoned (spec.unschedulable).
    Unschedulable,
    /// A NoSchedule/NoExecute taint the pod does not tolerate: (key, value).
    UntoleratedTaint(String, String),
    /// Its labels miss one of the pod's nodeSelector pairs.
    NodeSelectorMismatch,
    /// A host port the pod asks for is taken.
    HostPortTaken,
    /// Not enough of this resource left ("cpu", "memory", ...).
    Insufficient(String),
    /// As many pods as its `pods` allocatable already.
    TooManyPods,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => write!(f, "node(s) were not ready"),
            Reason::Unschedulable => write!(f, "node(s) were unschedulable"),
            Reason::UntoleratedTaint(k, v) => {
                write!(f, "node(s) had untolerated taint {{{k}: {v}}}")
            }
            Reason::NodeSelectorMismatch => {
                write!(f, "node(s) didn't match Pod's node affinity/selector")
            }
            Reason::HostPortTaken => {
                write!(
                    f,
                    "node(s) didn't have free ports for the requested pod ports"
                )
            }
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => write!(f, "Too many pods"),
        }
    }
}

/// The message when there are no nodes at all (kube-scheduler's).
pub const NO_NODES: &str = "no nodes available to schedule pods";

/// The PodScheduled=False message for a pod that fits on none of
/// `total_nodes` nodes, given every rejected node's reasons (a node may give
/// several, e.g. both Insufficient cpu and Insufficient memory).
///
/// Reasons are counted and listed most frequent first, ties by their text,
/// so the commonest obstacle leads.
pub fn unschedulable_message<'a>(
    total_nodes: usize,
    rejections: impl IntoIterator<Item = &'a [Reason]>,
) -> String {
    if total_nodes == 0 {
        return NO_NODES.to_string();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for reasons in rejections {
        for r in reasons {
            *counts.entry(r.to_string()).or_insert(0) += 1;
        }
    }
    let mut counted: Vec<(usize, String)> = counts.into_iter().map(|(r, n)| (n, r)).collect();
    counted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut msg = format!("0/{total_nodes} nodes are available");
    if !counted.is_empty() {
        let parts: Vec<String> = counted.iter().map(|(n, r)| format!("{n} {r}")).collect();
        msg.push_str(": ");
        msg.push_str(&parts.join(", "));
    }
    msg.push('.');
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_like_kube_scheduler() {
        assert_eq!(
            Reason::Insufficient("cpu".into()).to_string(),
            "Insufficient cpu"
        );
        assert_eq!(Reason::TooManyPods.to_string(), "Too many pods");
        assert_eq!(
            Reason::UntoleratedTaint("dedicated".into(), "gpu".into()).to_string(),
            "node(s) had untolerated taint {dedicated: gpu}"
        );
        assert_eq!(
            Reason::Unschedulable.to_string(),
            "node(s) were unschedulable"
        );
    }

    #[test]
    fn message_counts_reasons_most_frequent_first() {
        let cpu = vec![Reason::Insufficient("cpu".into())];
        let cordoned = vec![Reason::Unschedulable];
        let msg = unschedulable_message(3, [&cpu[..], &cordoned[..], &cpu[..]]);
        assert_eq!(
            msg,
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn message_counts_every_reason_of_a_node_and_breaks_ties_by_text() {
        let both = vec![
            Reason::Insufficient("cpu".into()),
            Reason::Insufficient("memory".into()),
        ];
        let ports = vec![Reason::HostPortTaken];
        let msg = unschedulable_message(2, [&both[..], &ports[..]]);
        assert_eq!(
            msg,
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
             1 node(s) didn't have free ports for the requested pod ports."
        );
    }

    #[test]
    fn message_without_nodes_says_so() {
        assert_eq!(unschedulable_message(0, []), NO_NODES);
    }
}
