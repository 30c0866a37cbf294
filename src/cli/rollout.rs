//! `rafter rollout status|history|undo|pause|resume` and `rafter set
//! image`: kubectl's verbs for watching and steering a Deployment's
//! rollout. They only read and write the Deployment (and read its
//! ReplicaSets); the Deployment controller does the rolling.
//!
//! `undo` works as kubectl's does: it copies the pod template (and the
//! annotations, so the change-cause) of the ReplicaSet of the chosen
//! revision into the Deployment; the controller then finds that
//! ReplicaSet is the new one again and gives it the next revision.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use rafter_client::{Client, WatchEvent};
use rafter_controllers::deployment::{
    CHANGE_CAUSE, DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION, REVISION_HISTORY,
    TIMED_OUT, condition, rs_revision,
};
use rafter_controllers::workload_owner::controller_ref;
use rafter_proto::api;
use rafter_proto::object::Object;

use super::GlobalArgs;
use super::objects::{NamespaceArgs, ServerError};

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Wait for a deployment's rollout to finish, printing its progress.
    Status {
        #[command(flatten)]
        target: Target,
        /// Give up after this long (e.g. 30s, 5m; 0 waits forever).
        #[arg(long, default_value = "0s", value_parser = crate::cli::duration::parse_duration)]
        timeout: Duration,
        /// Keep watching until the rollout finishes (false: print once).
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
    },
    /// List a deployment's revisions, or show one (--revision N).
    History {
        #[command(flatten)]
        target: Target,
        /// Show this revision's pod template.
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Roll back to the previous revision, or to --to-revision N.
    Undo {
        #[command(flatten)]
        target: Target,
        /// The revision to go back to (0: the previous one).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Stop rolling out template changes until resumed.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Resume a paused deployment.
    Resume {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SetCommand {
    /// Set container images: set image deployment/NAME CONTAINER=IMAGE... (* for every container).
    Image {
        /// deployment/NAME, or deployment.
        resource: String,
        /// NAME (unless deployment/NAME was given), then CONTAINER=IMAGE pairs.
        args: Vec<String>,
        #[command(flatten)]
        ns: NamespaceArgs,
    },
}

/// The deployment a rollout verb works on: `deployment/NAME` or
/// `deployment NAME`.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// deployment/NAME, or deployment.
    pub resource: String,
    /// NAME, when not given as deployment/NAME.
    pub name: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

fn is_deployment(kind: &str) -> bool {
    matches!(
        kind,
        "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps"
    )
}

/// (namespace, name) of the target deployment.
fn target_name(
    resource: &str,
    name: Option<&str>,
    ns: &NamespaceArgs,
) -> anyhow::Result<(String, String)> {
    let (kind, name) = match resource.split_once('/') {
        Some((k, n)) => {
            if name.is_some() {
                bail!(
                    "there is no need to give a name after {resource}: TYPE/NAME names the object"
                );
            }
            (k, n.to_string())
        }
        None => (
            resource,
            name.map(str::to_string)
                .context("give the deployment as deployment/NAME or deployment NAME")?,
        ),
    };
    if !is_deployment(kind) {
        bail!("no rollouts for {kind:?}: rollout verbs work on deployments (deployment/NAME)");
    }
    let ns = super::config::resolve_namespace(ns.namespace.as_deref())?;
    Ok((ns, name))
}

fn server_error(e: rafter_client::Error) -> anyhow::Error {
    match e.api_status() {
        Some(s) => ServerError {
            reason: s.reason,
            message: s.message,
        }
        .into(),
        None => e.into(),
    }
}

pub async fn run(g: &GlobalArgs, c: RolloutCommand) -> anyhow::Result<()> {
    match c {
        RolloutCommand::Status {
            target,
            timeout,
            watch,
        } => {
            let (ns, name) = target_name(&target.resource, target.name.as_deref(), &target.ns)?;
            let client = g.client().await?;
            let wait = status(&client, &ns, &name, watch);
            if timeout.is_zero() {
                wait.await
            } else {
                match tokio::time::timeout(timeout, wait).await {
                    Ok(r) => r,
                    Err(_) => bail!("timed out waiting for the condition"),
                }
            }
        }
        RolloutCommand::History { target, revision } => {
            let (ns, name) = target_name(&target.resource, target.name.as_deref(), &target.ns)?;
            history(&g.client().await?, &ns, &name, revision).await
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let (ns, name) = target_name(&target.resource, target.name.as_deref(), &target.ns)?;
            undo(&g.client().await?, &ns, &name, to_revision).await
        }
        RolloutCommand::Pause { target } => {
            let (ns, name) = target_name(&target.resource, target.name.as_deref(), &target.ns)?;
            set_paused(&g.client().await?, &ns, &name, true).await
        }
        RolloutCommand::Resume { target } => {
            let (ns, name) = target_name(&target.resource, target.name.as_deref(), &target.ns)?;
            set_paused(&g.client().await?, &ns, &name, false).await
        }
    }
}

// ---- status -------------------------------------------------------------------------

/// kubectl's deployment status viewer: the progress line, whether the
/// rollout is done, or an error when its progress deadline passed.
pub fn status_line(d: &api::Deployment) -> Result<(String, bool), String> {
    let name = &d.metadata().name;
    let s = d.status.clone().unwrap_or_default();
    if d.metadata().generation > s.observed_generation {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    if condition(&s, "Progressing").is_some_and(|c| c.reason == TIMED_OUT) {
        return Err(format!(
            "deployment \"{name}\" exceeded its progress deadline"
        ));
    }
    let replicas = d.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(1);
    let line = if s.updated_replicas < replicas {
        format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} out of {replicas} new replicas have been updated...",
            s.updated_replicas
        )
    } else if s.replicas > s.updated_replicas {
        format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
            s.replicas - s.updated_replicas
        )
    } else if s.available_replicas < s.updated_replicas {
        format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} of {} updated replicas are available...",
            s.available_replicas, s.updated_replicas
        )
    } else {
        return Ok((
            format!("deployment \"{name}\" successfully rolled out"),
            true,
        ));
    };
    Ok((line, false))
}

async fn status(client: &Client, ns: &str, name: &str, watch: bool) -> anyhow::Result<()> {
    let d = client
        .get_object::<api::Deployment>(ns, name)
        .await
        .map_err(server_error)?;
    let mut last = String::new();
    let mut show = |d: &api::Deployment| -> anyhow::Result<bool> {
        let (line, done) = status_line(d).map_err(anyhow::Error::msg)?;
        if line != last {
            outln!("{line}")?;
            last = line;
        }
        Ok(done)
    };
    if show(&d)? || !watch {
        return Ok(());
    }
    let field = format!("metadata.name={name}");
    let mut stream =
        client.watch_objects::<api::Deployment>(ns, "", &field, &d.metadata().resource_version);
    while let Some(ev) = stream.next().await {
        match ev.map_err(server_error)? {
            WatchEvent::Added(d) | WatchEvent::Modified(d) => {
                if show(&d)? {
                    return Ok(());
                }
            }
            WatchEvent::Deleted(_) => bail!("deployment \"{name}\" was deleted"),
            WatchEvent::Bookmark(_) => {}
        }
    }
    bail!("the watch of deployment \"{name}\" ended; run rollout status again")
}

// ---- history and undo -----------------------------------------------------------------

/// The deployment and its ReplicaSets, by revision.
async fn revisions(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<(api::Deployment, Vec<(i64, api::ReplicaSet)>)> {
    let d = client
        .get_object::<api::Deployment>(ns, name)
        .await
        .map_err(server_error)?;
    let list = client
        .list::<api::ReplicaSet>(ns, "", "")
        .await
        .map_err(server_error)?;
    let uid = d.metadata().uid.clone();
    let mut revs: Vec<(i64, api::ReplicaSet)> = list
        .items
        .into_iter()
        .filter(|rs| controller_ref(rs.metadata()).is_some_and(|r| r.uid == uid))
        .map(|rs| (rs_revision(&rs), rs))
        .filter(|(r, _)| *r > 0)
        .collect();
    revs.sort_by_key(|(r, _)| *r);
    Ok((d, revs))
}

/// A ReplicaSet's template as the Deployment would carry it.
fn template_of(rs: &api::ReplicaSet) -> api::PodTemplateSpec {
    let mut t = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    t.metadata.get_or_insert_default().labels.remove(HASH_LABEL);
    t
}

async fn history(
    client: &Client,
    ns: &str,
    name: &str,
    revision: Option<i64>,
) -> anyhow::Result<()> {
    let (_, revs) = revisions(client, ns, name).await?;
    match revision {
        None => {
            if revs.is_empty() {
                outln!("No rollout history found.")?;
                return Ok(());
            }
            outln!("deployment.apps/{name}")?;
            let mut t = super::output::Table::new(&["REVISION", "CHANGE-CAUSE"]);
            for (r, rs) in &revs {
                let cause = rs
                    .metadata()
                    .annotations
                    .get(CHANGE_CAUSE)
                    .cloned()
                    .unwrap_or_default();
                t.row(vec![r.to_string(), cause]);
            }
            out!("{}", t.render())?;
        }
        Some(n) => {
            let Some((_, rs)) = revs.iter().find(|(r, _)| *r == n) else {
                bail!("unable to find the specified revision {n} of deployment \"{name}\"");
            };
            let t = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.clone())
                .unwrap_or_default();
            let cause = rs.metadata().annotations.get(CHANGE_CAUSE);
            outln!("deployment.apps/{name} with revision #{n}")?;
            out!("{}", describe_template(&t, cause))?;
        }
    }
    Ok(())
}

/// A pod template as kubectl's `rollout history --revision` shows it.
fn describe_template(t: &api::PodTemplateSpec, change_cause: Option<&String>) -> String {
    let mut out = String::from("Pod Template:\n");
    let meta = t.metadata.clone().unwrap_or_default();
    let pairs = |m: &std::collections::BTreeMap<String, String>, sep: &str| -> String {
        if m.is_empty() {
            return "<none>".into();
        }
        m.iter()
            .map(|(k, v)| format!("{k}{sep}{v}"))
            .collect::<Vec<_>>()
            .join("\n\t")
    };
    out.push_str(&format!("  Labels:\t{}\n", pairs(&meta.labels, "=")));
    let mut annotations = meta.annotations.clone();
    if let Some(c) = change_cause {
        annotations.insert(CHANGE_CAUSE.to_string(), c.clone());
    }
    out.push_str(&format!("  Annotations:\t{}\n", pairs(&annotations, ": ")));
    out.push_str("  Containers:\n");
    let spec = t.spec.clone().unwrap_or_default();
    for c in &spec.containers {
        out.push_str(&format!("   {}:\n", c.name));
        out.push_str(&format!("    Image:\t{}\n", c.image));
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| {
                let proto = if p.protocol.is_empty() {
                    "TCP"
                } else {
                    &p.protocol
                };
                format!("{}/{proto}", p.container_port)
            })
            .collect();
        let shown = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(", ")
        };
        out.push_str(&format!("    Port:\t{shown}\n"));
        if !c.command.is_empty() {
            out.push_str(&format!("    Command:\t{}\n", c.command.join(" ")));
        }
        if !c.args.is_empty() {
            out.push_str(&format!("    Args:\t{}\n", c.args.join(" ")));
        }
        if let Some(r) = &c.resources {
            if !r.limits.is_empty() {
                out.push_str(&format!("    Limits:\t{}\n", pairs(&r.limits, ": ")));
            }
            if !r.requests.is_empty() {
                out.push_str(&format!("    Requests:\t{}\n", pairs(&r.requests, ": ")));
            }
        }
        let env: Vec<String> = c
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect();
        let shown = if env.is_empty() {
            "<none>".to_string()
        } else {
            env.join("\n\t")
        };
        out.push_str(&format!("    Environment:\t{shown}\n"));
    }
    out
}

/// Annotations a rollback leaves as the Deployment has them.
const KEPT_ON_ROLLBACK: &[&str] = &[
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "kubectl.kubernetes.io/last-applied-configuration",
];

async fn undo(client: &Client, ns: &str, name: &str, to_revision: i64) -> anyhow::Result<()> {
    for _ in 0..5 {
        let (d, revs) = revisions(client, ns, name).await?;
        if d.spec.as_ref().is_some_and(|s| s.paused) {
            bail!(
                "you cannot rollback a paused deployment; resume it first with 'rafter rollout resume deployment/{name}' and try again"
            );
        }
        let target = if to_revision == 0 {
            if revs.len() < 2 {
                bail!("no rollout history found for deployment \"{name}\"");
            }
            &revs[revs.len() - 2]
        } else {
            match revs.iter().find(|(r, _)| *r == to_revision) {
                Some(t) => t,
                None => bail!("unable to find specified revision {to_revision} in history"),
            }
        };
        let (rev, rs) = target;
        let template = template_of(rs);
        let current = d
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        if rafter_controllers::deployment::equal_ignore_hash(&template, &current) {
            outln!(
                "deployment.apps/{name} skipped rollback (current template already matches revision {rev})"
            )?;
            return Ok(());
        }
        let mut next = d.clone();
        next.spec.get_or_insert_default().template = Some(template);
        let annotations = &mut next.metadata_mut().annotations;
        annotations.retain(|k, _| KEPT_ON_ROLLBACK.contains(&k.as_str()));
        for (k, v) in &rs.metadata().annotations {
            if !KEPT_ON_ROLLBACK.contains(&k.as_str()) {
                annotations.insert(k.clone(), v.clone());
            }
        }
        match client.update(&next).await {
            Ok(_) => {
                outln!("deployment.apps/{name} rolled back")?;
                return Ok(());
            }
            Err(e) if e.is_reason("Conflict") => continue,
            Err(e) => return Err(server_error(e)),
        }
    }
    bail!("deployment \"{name}\" kept changing during the rollback; run rollout undo again")
}

// ---- pause and resume -------------------------------------------------------------------

async fn set_paused(client: &Client, ns: &str, name: &str, paused: bool) -> anyhow::Result<()> {
    for _ in 0..5 {
        let d = client
            .get_object::<api::Deployment>(ns, name)
            .await
            .map_err(server_error)?;
        if d.spec.as_ref().is_some_and(|s| s.paused) == paused {
            let state = if paused {
                "already paused"
            } else {
                "not paused"
            };
            bail!("deployments.apps \"{name}\" is {state}");
        }
        let mut next = d.clone();
        next.spec.get_or_insert_default().paused = paused;
        match client.update(&next).await {
            Ok(_) => {
                let word = if paused { "paused" } else { "resumed" };
                outln!("deployment.apps/{name} {word}")?;
                return Ok(());
            }
            Err(e) if e.is_reason("Conflict") => continue,
            Err(e) => return Err(server_error(e)),
        }
    }
    bail!("deployment \"{name}\" kept changing; run rollout again")
}

// ---- set image --------------------------------------------------------------------------

pub async fn set(g: &GlobalArgs, c: SetCommand) -> anyhow::Result<()> {
    let SetCommand::Image { resource, args, ns } = c;
    let (name_arg, pairs) = if resource.contains('/') {
        (None, args.as_slice())
    } else {
        match args.split_first() {
            Some((n, rest)) => (Some(n.as_str()), rest),
            None => bail!("give the deployment as deployment/NAME or deployment NAME"),
        }
    };
    let (ns, name) = target_name(&resource, name_arg, &ns)?;
    if pairs.is_empty() {
        bail!("give at least one CONTAINER=IMAGE");
    }
    let mut images = Vec::new();
    for p in pairs {
        let (c, i) = p
            .split_once('=')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty())
            .with_context(|| format!("{p:?} is not CONTAINER=IMAGE"))?;
        images.push((c.to_string(), i.to_string()));
    }
    let client = g.client().await?;
    for _ in 0..5 {
        let d = client
            .get_object::<api::Deployment>(&ns, &name)
            .await
            .map_err(server_error)?;
        let mut next = d.clone();
        let containers = &mut next
            .spec
            .get_or_insert_default()
            .template
            .get_or_insert_default()
            .spec
            .get_or_insert_default()
            .containers;
        for (c, image) in &images {
            let mut found = false;
            for container in containers.iter_mut() {
                if c == "*" || container.name == *c {
                    container.image = image.clone();
                    found = true;
                }
            }
            if !found {
                bail!("unable to find container named \"{c}\" in deployment \"{name}\"");
            }
        }
        if next == d {
            return Ok(());
        }
        match client.update(&next).await {
            Ok(_) => {
                outln!("deployment.apps/{name} image updated")?;
                return Ok(());
            }
            Err(e) if e.is_reason("Conflict") => continue,
            Err(e) => return Err(server_error(e)),
        }
    }
    bail!("deployment \"{name}\" kept changing; run set image again")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        replicas: i32,
        generation: i64,
        status: api::DeploymentStatus,
    ) -> api::Deployment {
        let mut d = api::Deployment {
            spec: Some(api::DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
            ..Default::default()
        };
        d.metadata_mut().name = "web".into();
        d.metadata_mut().generation = generation;
        d
    }

    fn st(replicas: i32, updated: i32, available: i32) -> api::DeploymentStatus {
        api::DeploymentStatus {
            observed_generation: 2,
            replicas,
            updated_replicas: updated,
            available_replicas: available,
            ..Default::default()
        }
    }

    #[test]
    fn status_lines_follow_kubectl() {
        let line = |d| status_line(&d).expect("no error");
        assert_eq!(
            line(deployment(5, 3, st(5, 5, 5))).0,
            "Waiting for deployment spec update to be observed..."
        );
        assert_eq!(
            line(deployment(5, 2, st(6, 2, 5))).0,
            "Waiting for deployment \"web\" rollout to finish: 2 out of 5 new replicas have been updated..."
        );
        assert_eq!(
            line(deployment(5, 2, st(7, 5, 5))).0,
            "Waiting for deployment \"web\" rollout to finish: 2 old replicas are pending termination..."
        );
        assert_eq!(
            line(deployment(5, 2, st(5, 5, 2))),
            (
                "Waiting for deployment \"web\" rollout to finish: 2 of 5 updated replicas are available...".to_string(),
                false
            )
        );
        assert_eq!(
            line(deployment(5, 2, st(5, 5, 5))),
            (
                "deployment \"web\" successfully rolled out".to_string(),
                true
            )
        );
    }

    #[test]
    fn an_exceeded_deadline_is_an_error() {
        let mut s = st(5, 2, 2);
        s.conditions.push(api::Condition {
            r#type: "Progressing".into(),
            status: "False".into(),
            reason: TIMED_OUT.into(),
            ..Default::default()
        });
        assert_eq!(
            status_line(&deployment(5, 2, s)),
            Err("deployment \"web\" exceeded its progress deadline".to_string())
        );
    }

    #[test]
    fn targets_are_deployment_slash_name_or_two_words() {
        let ns = NamespaceArgs {
            namespace: Some("shop".into()),
        };
        assert_eq!(
            target_name("deployment/web", None, &ns).unwrap(),
            ("shop".to_string(), "web".to_string())
        );
        assert_eq!(
            target_name("deploy", Some("web"), &ns).unwrap(),
            ("shop".to_string(), "web".to_string())
        );
        assert!(target_name("pods/web", None, &ns).is_err());
        assert!(target_name("deployment", None, &ns).is_err());
    }

    #[test]
    fn a_revision_shows_labels_change_cause_and_containers() {
        let t = api::PodTemplateSpec {
            metadata: Some(api::ObjectMeta {
                labels: [
                    ("app".to_string(), "web".to_string()),
                    (HASH_LABEL.to_string(), "abc".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            spec: Some(api::PodSpec {
                containers: vec![api::Container {
                    name: "web".into(),
                    image: "demo/web:v1".into(),
                    ports: vec![api::ContainerPort {
                        container_port: 80,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let text = describe_template(&t, Some(&"image v1".to_string()));
        assert_eq!(
            text,
            "Pod Template:\n  Labels:\tapp=web\n\tpod-template-hash=abc\n  Annotations:\tkubernetes.io/change-cause: image v1\n  Containers:\n   web:\n    Image:\tdemo/web:v1\n    Port:\t80/TCP\n    Environment:\t<none>\n"
        );
    }
}
