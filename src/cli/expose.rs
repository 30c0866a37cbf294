//! `rafter expose`: a ClusterIP Service in front of a deployment's,
//! replicaset's or pod's pods, as `kubectl expose` makes one.

use std::collections::BTreeMap;

use anyhow::bail;
use rafter_proto::api;
use rafter_proto::object::Object;

use crate::cli::GlobalArgs;
use crate::cli::objects::{NamespaceArgs, namespace, server_error};

#[derive(Debug, clap::Args)]
pub struct ExposeArgs {
    /// deployment, replicaset or pod, or TYPE/NAME.
    pub resource: String,
    pub name: Option<String>,
    /// The Service's port.
    #[arg(long)]
    pub port: i32,
    /// The pods' port, a number or a container port's name (default: --port).
    #[arg(long)]
    pub target_port: Option<String>,
    /// The Service's name (default: the exposed object's).
    #[arg(long = "name")]
    pub service_name: Option<String>,
    /// Ask for this clusterIP (default: the next free one of the service CIDR).
    #[arg(long)]
    pub cluster_ip: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

pub async fn expose(g: &GlobalArgs, a: ExposeArgs) -> anyhow::Result<()> {
    let (kind, name) = match (a.resource.split_once('/'), &a.name) {
        (Some((k, n)), None) => (k.to_string(), n.to_string()),
        (None, Some(n)) => (a.resource.clone(), n.clone()),
        (Some(_), Some(_)) => bail!("give TYPE/NAME or TYPE NAME, not both"),
        (None, None) => {
            bail!("give what to expose: TYPE NAME, e.g. `rafter expose deployment web --port 80`")
        }
    };
    if !(1..=65535).contains(&a.port) {
        bail!("--port {} is not a port: give 1-65535", a.port);
    }
    let target_port = a.target_port.clone().unwrap_or_else(|| a.port.to_string());
    if let Ok(n) = target_port.parse::<i64>()
        && !(1..=65535).contains(&n)
    {
        bail!("--target-port {n} is not a port: give 1-65535 or a container port's name");
    }
    let client = g.client().await?;
    let ns = namespace(&a.ns)?;
    let selector = match kind.as_str() {
        "deployment" | "deployments" | "deploy" => {
            let d: api::Deployment = client.get_object(&ns, &name).await.map_err(server_error)?;
            match_labels(d.spec.and_then(|s| s.selector), "deployment", &name)?
        }
        "replicaset" | "replicasets" | "rs" => {
            let rs: api::ReplicaSet = client.get_object(&ns, &name).await.map_err(server_error)?;
            match_labels(rs.spec.and_then(|s| s.selector), "replicaset", &name)?
        }
        "pod" | "pods" | "po" => {
            let p: api::Pod = client.get_object(&ns, &name).await.map_err(server_error)?;
            let labels = p.metadata().labels.clone();
            if labels.is_empty() {
                bail!(
                    "pod {name} has no labels to select it by: label it first (`rafter label pod {name} app={name}`)"
                );
            }
            labels
        }
        other => bail!("cannot expose {other:?}: expose a deployment, replicaset or pod"),
    };
    let service = api::Service {
        metadata: Some(api::ObjectMeta {
            name: a.service_name.clone().unwrap_or_else(|| name.clone()),
            namespace: ns.clone(),
            labels: selector.clone(),
            ..Default::default()
        }),
        spec: Some(api::ServiceSpec {
            selector,
            ports: vec![api::ServicePort {
                protocol: "TCP".into(),
                port: a.port,
                target_port,
                ..Default::default()
            }],
            r#type: "ClusterIP".into(),
            cluster_ip: a.cluster_ip.clone().unwrap_or_default(),
        }),
        ..Default::default()
    };
    let created = client.create(&service).await.map_err(server_error)?;
    let ip = created
        .spec
        .as_ref()
        .map(|s| s.cluster_ip.as_str())
        .unwrap_or_default();
    outln!(
        "service/{} exposed ({ip}:{})",
        created.metadata().name,
        a.port
    )?;
    Ok(())
}

/// A workload's selector as the Service's: only matchLabels, as a Service
/// cannot select by expressions.
fn match_labels(
    selector: Option<api::LabelSelector>,
    kind: &str,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let s = selector.unwrap_or_default();
    if !s.match_expressions.is_empty() {
        bail!(
            "{kind} {name} selects pods with matchExpressions, which a Service cannot: write the Service by hand with a label selector"
        );
    }
    if s.match_labels.is_empty() {
        bail!("{kind} {name} has no matchLabels selector to expose");
    }
    Ok(s.match_labels.into_iter().collect())
}
