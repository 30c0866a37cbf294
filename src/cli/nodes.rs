//! `rafter cordon|uncordon|drain NODE`, as kubectl has them.
//!
//! Cordon sets the node's spec.unschedulable (the scheduler then places no
//! new pod there); uncordon clears it. Drain cordons, then deletes (evicts)
//! every pod bound to the node and waits until they are gone, so their
//! controllers recreate them on other nodes. Like kubectl, drain refuses
//! pods that no controller would recreate unless --force, and pods of a
//! DaemonSet unless --ignore-daemonsets (which leaves them be).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;
use rafter_client::{Client, DeleteOptions};
use rafter_proto::api;
use rafter_proto::object::Object;
use serde_json::json;

use super::GlobalArgs;
use super::objects::server_error;

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's name.
    pub node: String,
}

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The node's name.
    pub node: String,
    /// Leave DaemonSet-managed pods on the node (they would come back).
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Also delete pods no controller manages (they are gone for good).
    #[arg(long)]
    pub force: bool,
    /// Give up after this long (e.g. 60s, 2m; 0: wait for ever).
    #[arg(long, default_value = "0s", value_parser = crate::cli::duration::parse_duration)]
    pub timeout: Duration,
}

/// Sets spec.unschedulable; returns whether it changed.
async fn set_unschedulable(client: &Client, node: &str, value: bool) -> anyhow::Result<bool> {
    let current: api::Node = client.get_object("", node).await.map_err(server_error)?;
    if current.spec.as_ref().is_some_and(|s| s.unschedulable) == value {
        return Ok(false);
    }
    let patch = json!({"spec": {"unschedulable": value}});
    client
        .patch::<api::Node>("", node, &patch, false)
        .await
        .map_err(server_error)?;
    Ok(true)
}

pub async fn cordon(g: &GlobalArgs, a: NodeArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let changed = set_unschedulable(&client, &a.node, true).await?;
    let word = if changed {
        "cordoned"
    } else {
        "already cordoned"
    };
    outln!("node/{} {word}", a.node)?;
    Ok(())
}

pub async fn uncordon(g: &GlobalArgs, a: NodeArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let changed = set_unschedulable(&client, &a.node, false).await?;
    let word = if changed {
        "uncordoned"
    } else {
        "already uncordoned"
    };
    outln!("node/{} {word}", a.node)?;
    Ok(())
}

/// The kind of the pod's managing controller, if any.
fn controller_kind(pod: &api::Pod) -> Option<&str> {
    pod.metadata()
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.kind.as_str())
}

fn shown(pod: &api::Pod) -> String {
    let m = pod.metadata();
    format!("{}/{}", m.namespace, m.name)
}

/// What drain does with the pods of a node.
#[derive(Debug, Default, PartialEq)]
pub struct DrainPlan {
    /// Pods to delete.
    pub evict: Vec<api::Pod>,
    /// DaemonSet pods left in place (--ignore-daemonsets).
    pub ignored: Vec<String>,
    /// Why drain cannot go on (without --force / --ignore-daemonsets).
    pub refusals: Vec<String>,
}

/// Sorts the node's pods into those to evict, to leave, and to refuse.
pub fn plan(pods: Vec<api::Pod>, force: bool, ignore_daemonsets: bool) -> DrainPlan {
    let mut plan = DrainPlan::default();
    let mut unmanaged = Vec::new();
    let mut daemons = Vec::new();
    for pod in pods {
        match controller_kind(&pod) {
            Some("DaemonSet") if ignore_daemonsets => plan.ignored.push(shown(&pod)),
            Some("DaemonSet") => daemons.push(shown(&pod)),
            None if !force => unmanaged.push(shown(&pod)),
            _ => plan.evict.push(pod),
        }
    }
    if !unmanaged.is_empty() {
        plan.refusals.push(format!(
            "cannot delete Pods that declare no controller (use --force to override): {}",
            unmanaged.join(", ")
        ));
    }
    if !daemons.is_empty() {
        plan.refusals.push(format!(
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {}",
            daemons.join(", ")
        ));
    }
    plan
}

async fn pods_on(client: &Client, node: &str) -> anyhow::Result<Vec<api::Pod>> {
    let list = client
        .list::<api::Pod>("", "", &format!("spec.nodeName={node}"))
        .await
        .map_err(server_error)?;
    Ok(list.items)
}

pub async fn drain(g: &GlobalArgs, a: DrainArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let changed = set_unschedulable(&client, &a.node, true).await?;
    let word = if changed {
        "cordoned"
    } else {
        "already cordoned"
    };
    outln!("node/{} {word}", a.node)?;
    let plan = plan(
        pods_on(&client, &a.node).await?,
        a.force,
        a.ignore_daemonsets,
    );
    if !plan.refusals.is_empty() {
        bail!(
            "unable to drain node {:?} due to error: {}; the node stays cordoned (rafter uncordon {} to undo)",
            a.node,
            plan.refusals.join("; "),
            a.node
        );
    }
    if !plan.ignored.is_empty() {
        outln!(
            "Warning: ignoring DaemonSet-managed Pods: {}",
            plan.ignored.join(", ")
        )?;
    }
    let deadline = (!a.timeout.is_zero()).then(|| tokio::time::Instant::now() + a.timeout);
    let mut waiting = BTreeSet::new();
    for pod in &plan.evict {
        let m = pod.metadata();
        waiting.insert(m.uid.clone());
        if !m.deletion_timestamp.is_empty() {
            continue; // already going
        }
        outln!("evicting pod {}", shown(pod))?;
        let options = DeleteOptions::with_uid(&m.uid);
        match client
            .delete_object::<api::Pod>(&m.namespace, &m.name, &options)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_reason("NotFound") || e.is_reason("Conflict") => {}
            Err(e) => return Err(server_error(e)),
        }
    }
    // Wait until every evicted pod is gone (a pod of the same name may be
    // back already: only the uids count).
    let mut reported = BTreeSet::new();
    loop {
        let present: BTreeSet<String> = pods_on(&client, &a.node)
            .await?
            .iter()
            .map(|p| p.metadata().uid.clone())
            .collect();
        for pod in &plan.evict {
            let m = pod.metadata();
            if !present.contains(&m.uid) && reported.insert(m.uid.clone()) {
                outln!("pod/{} evicted", m.name)?;
            }
        }
        waiting.retain(|uid| present.contains(uid));
        if waiting.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            bail!(
                "drain did not complete within {:?}: {} pod(s) still on node {:?}; the node stays cordoned",
                a.timeout,
                waiting.len(),
                a.node
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outln!("node/{} drained", a.node)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owner_kind: Option<&str>) -> api::Pod {
        let mut p = api::Pod::default();
        let m = p.metadata_mut();
        m.namespace = "default".into();
        m.name = name.into();
        if let Some(kind) = owner_kind {
            m.owner_references.push(api::OwnerReference {
                kind: kind.into(),
                name: "owner".into(),
                controller: Some(true),
                ..Default::default()
            });
        }
        p
    }

    #[test]
    fn drain_refuses_unmanaged_pods_unless_forced() {
        let pods = vec![pod("web-1", Some("ReplicaSet")), pod("solo", None)];
        let p = plan(pods.clone(), false, false);
        assert_eq!(p.refusals.len(), 1);
        assert!(p.refusals[0].contains("default/solo"), "{:?}", p.refusals);
        assert!(p.refusals[0].contains("--force"));
        let p = plan(pods, true, false);
        assert!(p.refusals.is_empty());
        assert_eq!(p.evict.len(), 2);
    }

    #[test]
    fn daemonset_pods_are_refused_or_left_in_place() {
        let pods = vec![
            pod("agent-x", Some("DaemonSet")),
            pod("web-1", Some("ReplicaSet")),
        ];
        let p = plan(pods.clone(), false, false);
        assert!(
            p.refusals[0].contains("--ignore-daemonsets"),
            "{:?}",
            p.refusals
        );
        let p = plan(pods, false, true);
        assert!(p.refusals.is_empty());
        assert_eq!(p.ignored, ["default/agent-x"]);
        assert_eq!(p.evict.len(), 1);
        assert_eq!(p.evict[0].metadata().name, "web-1");
    }
}
