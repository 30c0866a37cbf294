//! The kubectl-style verbs: get, describe, apply, create, delete, scale,
//! label, annotate, edit, api-resources. Every verb resolves the type name,
//! then runs generically for the kind (`with_kind!`); tables are in
//! `tables`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::StreamExt;
use rafter_client::{Client, DeleteOptions, WatchEvent};
use rafter_proto::api;
use rafter_proto::json;
use rafter_proto::object::{KINDS, KindInfo, Object, resolve_kind};
use rafter_proto::with_kind;
use serde_json::{Value, json};

use super::GlobalArgs;
use super::config;
use super::tables;

/// An error the server answered with, printed as kubectl does:
/// `Error from server (NotFound): deployments.apps "web" not found`.
#[derive(Debug)]
pub struct ServerError {
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "from server ({}): {}", self.reason, self.message)
    }
}

impl std::error::Error for ServerError {}

/// The client error as kubectl prints it when the server gave a reason.
pub(crate) fn server_error(e: rafter_client::Error) -> anyhow::Error {
    match e.api_status() {
        Some(s) => ServerError {
            reason: s.reason,
            message: s.message,
        }
        .into(),
        None => e.into(),
    }
}

/// Output formats of get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Debug, clap::Args)]
pub struct NamespaceArgs {
    /// Namespace (default: the config's namespace, else "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Type (pods, po, deployment, deploy, ...), or TYPE/NAME.
    pub resource: String,
    /// Names to show (all when none).
    pub names: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector (app=web,tier in (a,b),!canary).
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector (metadata.name, metadata.namespace, spec.nodeName, status.phase).
    #[arg(long)]
    pub field_selector: Option<String>,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// After listing, stream changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// Manifest file, directory of .yaml/.yml/.json files, or - for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// Type, or TYPE/NAME.
    pub resource: String,
    pub name: Option<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Type, or TYPE/NAME.
    pub resource: Option<String>,
    pub names: Vec<String>,
    /// Delete what these manifests describe.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub ns: NamespaceArgs,
    /// Background (default), Foreground or Orphan.
    #[arg(long, default_value = "Background")]
    pub cascade_policy: String,
    /// Seconds a pod gets to stop before it is killed (-1: the pod's own
    /// terminationGracePeriodSeconds). 0 counts as 1 unless --force is given.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Remove pods at once (grace period 0 unless one is given), without
    /// waiting for their node agents to confirm they stopped.
    #[arg(long)]
    pub force: bool,
    /// Wait until the objects are gone (`--wait=false`: return at once).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 60s, 2m; 0: no limit).
    #[arg(long, default_value = "0s", value_parser = super::duration::parse_duration)]
    pub timeout: std::time::Duration,
}

/// The grace period a delete asks for, as kubectl computes it from
/// `--grace-period` and `--force`: None for the object's own.
pub fn requested_grace(grace_period: i64, force: bool) -> Option<i64> {
    match (grace_period, force) {
        (g, true) if g < 0 => Some(0),
        (g, _) if g < 0 => None,
        // kubectl's guard against an accidental --grace-period=0.
        (0, false) => Some(1),
        (g, _) => Some(g),
    }
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// deployment or replicaset, or TYPE/NAME.
    pub resource: String,
    pub name: Option<String>,
    #[arg(long)]
    pub replicas: i32,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(Debug, clap::Args)]
pub struct LabelArgs {
    /// Type, or TYPE/NAME.
    pub resource: String,
    /// NAME (unless TYPE/NAME was given), then key=value to set and key- to remove.
    pub args: Vec<String>,
    /// Replace existing values.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub ns: NamespaceArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum CreateCommand {
    /// A namespace.
    Namespace { name: String },
    /// A deployment running one image.
    Deployment {
        name: String,
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 1)]
        replicas: i32,
        #[arg(long)]
        port: Option<i32>,
        #[command(flatten)]
        ns: NamespaceArgs,
    },
    /// A config map from literals and files.
    #[command(name = "configmap", alias = "cm")]
    ConfigMap {
        name: String,
        #[arg(long = "from-literal")]
        literals: Vec<String>,
        #[arg(long = "from-file")]
        files: Vec<String>,
        #[command(flatten)]
        ns: NamespaceArgs,
    },
    /// A secret (`secret generic NAME`).
    Secret {
        /// generic
        secret_type: String,
        name: String,
        #[arg(long = "from-literal")]
        literals: Vec<String>,
        #[arg(long = "from-file")]
        files: Vec<String>,
        #[command(flatten)]
        ns: NamespaceArgs,
    },
}

fn kind_of(name: &str) -> anyhow::Result<&'static KindInfo> {
    resolve_kind(name).with_context(|| {
        format!("the server doesn't have a resource type \"{name}\"; see `rafter api-resources`")
    })
}

/// TYPE or TYPE/NAME, plus names given separately.
fn split_resource(
    resource: &str,
    names: &[String],
) -> anyhow::Result<(&'static KindInfo, Vec<String>)> {
    match resource.split_once('/') {
        Some((t, n)) => {
            if !names.is_empty() {
                bail!(
                    "there is no need to give a name after {resource}: TYPE/NAME names the object"
                );
            }
            Ok((kind_of(t)?, vec![n.to_string()]))
        }
        None => Ok((kind_of(resource)?, names.to_vec())),
    }
}

pub(crate) fn namespace(args: &NamespaceArgs) -> anyhow::Result<String> {
    config::resolve_namespace(args.namespace.as_deref())
}

/// `deployment.apps/web`
fn ref_name(info: &KindInfo, name: &str) -> String {
    match info.group() {
        "" => format!("{}/{name}", info.singular),
        g => format!("{}.{g}/{name}", info.singular),
    }
}

// ---- get ---------------------------------------------------------------------

pub async fn get(g: &GlobalArgs, a: GetArgs) -> anyhow::Result<()> {
    let (info, names) = split_resource(&a.resource, &a.names)?;
    let client = g.client().await?;
    let ns = if a.all_namespaces || !info.namespaced {
        String::new()
    } else {
        namespace(&a.ns)?
    };
    with_kind!(info.kind, K => get_kind::<K>(&client, &a, &ns, &names).await,
        _ => unreachable!("resolved kinds are known"))
}

async fn get_kind<K: Object>(
    client: &Client,
    a: &GetArgs,
    ns: &str,
    names: &[String],
) -> anyhow::Result<()> {
    let info = K::INFO;
    let (items, rv) = if names.is_empty() {
        let list = client
            .list::<K>(
                ns,
                a.selector.as_deref().unwrap_or(""),
                a.field_selector.as_deref().unwrap_or(""),
            )
            .await
            .map_err(server_error)?;
        (list.items, list.resource_version)
    } else {
        let mut items = Vec::new();
        for n in names {
            items.push(client.get_object::<K>(ns, n).await.map_err(server_error)?);
        }
        (items, String::new())
    };
    let show_ns = a.all_namespaces && info.namespaced;
    match a.output {
        Some(Output::Json) => {
            let v = if names.len() == 1 {
                json::to_value(&items[0])
            } else {
                list_value(&items)
            };
            outln!("{}", serde_json::to_string_pretty(&v)?)?;
        }
        Some(Output::Yaml) => {
            let v = if names.len() == 1 {
                json::to_value(&items[0])
            } else {
                list_value(&items)
            };
            out!("{}", serde_yaml_ng::to_string(&v)?)?;
        }
        Some(Output::Name) => {
            for o in &items {
                outln!("{}", ref_name(info, &o.metadata().name))?;
            }
        }
        wide => {
            if items.is_empty() && !a.watch {
                if ns.is_empty() {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {ns} namespace.");
                }
                return Ok(());
            }
            let t = tables::table(&items, wide == Some(Output::Wide), show_ns);
            out!("{}", t.render())?;
        }
    }
    if a.watch {
        let rv = if rv.is_empty() { "0".to_string() } else { rv };
        let mut stream = client.watch_objects::<K>(
            ns,
            a.selector.as_deref().unwrap_or(""),
            a.field_selector.as_deref().unwrap_or(""),
            &rv,
        );
        while let Some(ev) = stream.next().await {
            let obj = match ev.map_err(server_error)? {
                WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
                WatchEvent::Bookmark(_) => continue,
            };
            if !names.is_empty() && !names.contains(&obj.metadata().name) {
                continue;
            }
            match a.output {
                Some(Output::Json) => {
                    outln!("{}", serde_json::to_string_pretty(&json::to_value(&obj))?)?
                }
                Some(Output::Yaml) => {
                    out!("---\n{}", serde_yaml_ng::to_string(&json::to_value(&obj))?)?
                }
                Some(Output::Name) => outln!("{}", ref_name(info, &obj.metadata().name))?,
                wide => {
                    let t = tables::table(
                        std::slice::from_ref(&obj),
                        wide == Some(Output::Wide),
                        show_ns,
                    );
                    out!(
                        "{}",
                        t.render()
                            .lines()
                            .skip(1)
                            .map(|l| format!("{l}\n"))
                            .collect::<String>()
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn list_value<K: Object>(items: &[K]) -> Value {
    json!({
        "apiVersion": "v1",
        "items": items.iter().map(json::to_value).collect::<Vec<_>>(),
        "kind": "List",
    })
}

// ---- manifests -----------------------------------------------------------------

/// Every document of the given files (a directory: its .yaml/.yml/.json
/// files, sorted), with where it came from.
fn read_manifests(files: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    let mut paths: Vec<(String, String)> = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            paths.push(("<stdin>".into(), text));
            continue;
        }
        let p = PathBuf::from(f);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .with_context(|| format!("reading directory {f}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| {
                    matches!(
                        e.extension().and_then(|x| x.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            for e in entries {
                let text = std::fs::read_to_string(&e)
                    .with_context(|| format!("reading {}", e.display()))?;
                paths.push((e.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {f}"))?;
            paths.push((f.clone(), text));
        }
    }
    let mut docs = Vec::new();
    for (origin, text) in paths {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = <Value as serde::Deserialize>::deserialize(doc)
                .with_context(|| format!("{origin}: document {} is not valid YAML/JSON", i + 1))?;
            if value.is_null() {
                continue;
            }
            docs.push((format!("{origin} (document {})", i + 1), value));
        }
    }
    if docs.is_empty() {
        bail!("no objects found in {}", files.join(", "));
    }
    Ok(docs)
}

/// Decodes a manifest into its kind, with the namespace filled in.
fn decode_manifest<K: Object>(origin: &str, value: Value, ns: &str) -> anyhow::Result<K> {
    let mut obj: K = json::from_value(value).map_err(|e| {
        anyhow::anyhow!("error validating {origin}: {} (unknown or mistyped fields are rejected; see `rafter get {} NAME -o yaml` for the shape)", e.message, K::INFO.singular)
    })?;
    if K::INFO.namespaced && obj.metadata().namespace.is_empty() {
        obj.metadata_mut().namespace = ns.to_string();
    }
    Ok(obj)
}

fn manifest_kind(origin: &str, value: &Value) -> anyhow::Result<&'static KindInfo> {
    let kind = value.get("kind").and_then(Value::as_str).with_context(|| {
        format!("error validating {origin}: kind not set (every object needs apiVersion and kind)")
    })?;
    let info = KINDS
        .iter()
        .copied()
        .find(|k| k.kind == kind)
        .with_context(|| {
            let known: Vec<&str> = KINDS.iter().map(|k| k.kind).collect();
            format!(
                "{origin}: no kind \"{kind}\" is known; known kinds: {}",
                known.join(", ")
            )
        })?;
    Ok(info)
}

// ---- apply / create / delete ----------------------------------------------------

pub async fn apply(g: &GlobalArgs, a: FileArgs) -> anyhow::Result<()> {
    let docs = read_manifests(&a.files)?;
    let ns = namespace(&a.ns)?;
    let client = g.client().await?;
    for (origin, value) in docs {
        let info = manifest_kind(&origin, &value)?;
        let line = with_kind!(info.kind, K => apply_one::<K>(&client, &origin, value, &ns).await?,
            _ => unreachable!());
        outln!("{line}")?;
    }
    Ok(())
}

async fn apply_one<K: Object>(
    client: &Client,
    origin: &str,
    value: Value,
    ns: &str,
) -> anyhow::Result<String> {
    let desired: K = decode_manifest(origin, value, ns)?;
    let m = desired.metadata();
    let (obj_ns, name) = (m.namespace.clone(), m.name.clone());
    let shown = ref_name(K::INFO, &name);
    for _ in 0..5 {
        let existing = match client.get_object::<K>(&obj_ns, &name).await {
            Ok(o) => o,
            Err(e) if e.is_reason("NotFound") => match client.create(&desired).await {
                Ok(_) => return Ok(format!("{shown} created")),
                Err(e) if e.is_reason("AlreadyExists") => continue,
                Err(e) => return Err(server_error(e)),
            },
            Err(e) => return Err(server_error(e)),
        };
        let mut next = desired.clone();
        {
            let em = existing.metadata();
            let nm = next.metadata_mut();
            nm.resource_version = em.resource_version.clone();
            // Keep what others annotated (controllers' bookkeeping).
            for (k, v) in &em.annotations {
                nm.annotations.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if nm.finalizers.is_empty() {
                nm.finalizers = em.finalizers.clone();
            }
            if nm.owner_references.is_empty() {
                nm.owner_references = em.owner_references.clone();
            }
        }
        match client.update(&next).await {
            Ok(updated) => {
                let word = if updated.metadata().resource_version
                    == existing.metadata().resource_version
                {
                    "unchanged"
                } else {
                    "configured"
                };
                return Ok(format!("{shown} {word}"));
            }
            Err(e) if e.is_reason("Conflict") => continue,
            Err(e) => return Err(server_error(e)),
        }
    }
    bail!("{shown} kept changing while it was applied; run apply again")
}

pub async fn create_from_files(g: &GlobalArgs, a: FileArgs) -> anyhow::Result<()> {
    let docs = read_manifests(&a.files)?;
    let ns = namespace(&a.ns)?;
    let client = g.client().await?;
    for (origin, value) in docs {
        let info = manifest_kind(&origin, &value)?;
        with_kind!(info.kind, K => {
            let obj: K = decode_manifest(&origin, value, &ns)?;
            let made = client.create(&obj).await.map_err(server_error)?;
            outln!("{} created", ref_name(K::INFO, &made.metadata().name))?;
        }, _ => unreachable!());
    }
    Ok(())
}

fn parse_pairs(literals: &[String], files: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut data = BTreeMap::new();
    for l in literals {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--from-literal {l:?}: expected key=value"))?;
        data.insert(k.to_string(), v.as_bytes().to_vec());
    }
    for f in files {
        let (k, path) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p.to_string()),
            None => {
                let name = Path::new(f)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(f);
                (name.to_string(), f.clone())
            }
        };
        let bytes = std::fs::read(&path).with_context(|| format!("--from-file: reading {path}"))?;
        data.insert(k, bytes);
    }
    Ok(data)
}

pub async fn create(g: &GlobalArgs, c: CreateCommand) -> anyhow::Result<()> {
    let client = g.client().await?;
    let line = match c {
        CreateCommand::Namespace { name } => {
            let mut o = api::Namespace::default();
            o.metadata_mut().name = name;
            let o = client.create(&o).await.map_err(server_error)?;
            format!("namespace/{} created", o.metadata().name)
        }
        CreateCommand::Deployment {
            name,
            image,
            replicas,
            port,
            ns,
        } => {
            let labels = BTreeMap::from([("app".to_string(), name.clone())]);
            let container_name = image
                .rsplit('/')
                .next()
                .unwrap_or(&image)
                .split([':', '@'])
                .next()
                .unwrap_or("app")
                .to_string();
            let mut d = api::Deployment {
                spec: Some(api::DeploymentSpec {
                    replicas: Some(replicas),
                    selector: Some(api::LabelSelector {
                        match_labels: labels.clone(),
                        ..Default::default()
                    }),
                    template: Some(api::PodTemplateSpec {
                        metadata: Some(api::ObjectMeta {
                            labels: labels.clone(),
                            ..Default::default()
                        }),
                        spec: Some(api::PodSpec {
                            containers: vec![api::Container {
                                name: container_name,
                                image,
                                ports: port
                                    .map(|p| {
                                        vec![api::ContainerPort {
                                            container_port: p,
                                            ..Default::default()
                                        }]
                                    })
                                    .unwrap_or_default(),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let m = d.metadata_mut();
            m.name = name;
            m.namespace = namespace(&ns)?;
            m.labels = labels;
            let o = client.create(&d).await.map_err(server_error)?;
            format!("deployment.apps/{} created", o.metadata().name)
        }
        CreateCommand::ConfigMap {
            name,
            literals,
            files,
            ns,
        } => {
            let mut cm = api::ConfigMap::default();
            for (k, v) in parse_pairs(&literals, &files)? {
                match String::from_utf8(v) {
                    Ok(s) => {
                        cm.data.insert(k, s);
                    }
                    Err(e) => {
                        cm.binary_data.insert(k, e.into_bytes());
                    }
                }
            }
            let m = cm.metadata_mut();
            m.name = name;
            m.namespace = namespace(&ns)?;
            let o = client.create(&cm).await.map_err(server_error)?;
            format!("configmap/{} created", o.metadata().name)
        }
        CreateCommand::Secret {
            secret_type,
            name,
            literals,
            files,
            ns,
        } => {
            if secret_type != "generic" {
                bail!(
                    "secret type {secret_type:?} is not supported: use `rafter create secret generic NAME`"
                );
            }
            let mut s = api::Secret {
                data: parse_pairs(&literals, &files)?,
                ..Default::default()
            };
            let m = s.metadata_mut();
            m.name = name;
            m.namespace = namespace(&ns)?;
            let o = client.create(&s).await.map_err(server_error)?;
            format!("secret/{} created", o.metadata().name)
        }
    };
    outln!("{line}")?;
    Ok(())
}

pub async fn delete(g: &GlobalArgs, a: DeleteArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let grace = requested_grace(a.grace_period, a.force);
    let options = DeleteOptions {
        propagation_policy: a.cascade_policy.clone(),
        grace_period_seconds: grace,
        ..Default::default()
    };
    let forced = grace == Some(0);
    if forced {
        eprintln!(
            "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely."
        );
    }
    let ns = namespace(&a.ns)?;
    let mut targets: Vec<(&'static KindInfo, String, String)> = Vec::new();
    if !a.files.is_empty() {
        for (origin, value) in read_manifests(&a.files)? {
            let info = manifest_kind(&origin, &value)?;
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let obj_ns = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(&ns)
                .to_string();
            targets.push((info, obj_ns, name));
        }
    } else {
        let Some(resource) = &a.resource else {
            bail!("give TYPE NAME, TYPE/NAME or -f FILE");
        };
        let (info, names) = split_resource(resource, &a.names)?;
        if names.is_empty() {
            bail!("give the names of the {} to delete", info.plural);
        }
        for n in names {
            targets.push((info, ns.clone(), n));
        }
    }
    let mut deleted = Vec::new();
    for (info, obj_ns, name) in targets {
        let obj_ns = if info.namespaced {
            obj_ns
        } else {
            String::new()
        };
        let uid = with_kind!(info.kind, K => {
            client
                .delete_object::<K>(&obj_ns, &name, &options)
                .await
                .map_err(server_error)?
                .metadata()
                .uid
                .clone()
        }, _ => unreachable!());
        let word = if forced { "force deleted" } else { "deleted" };
        // kubectl's words: `pod "web-1" deleted`, `deployment.apps "web" deleted`.
        let what = match info.group() {
            "" => info.singular.to_string(),
            g => format!("{}.{g}", info.singular),
        };
        outln!("{what} \"{name}\" {word}")?;
        deleted.push((info, obj_ns, name, uid));
    }
    if !a.wait {
        return Ok(());
    }
    // As kubectl: every delete first, then wait for them all.
    let deadline = (!a.timeout.is_zero()).then(|| tokio::time::Instant::now() + a.timeout);
    for (info, obj_ns, name, uid) in deleted {
        with_kind!(info.kind, K => {
            wait_gone::<K>(&client, &obj_ns, &name, &uid, deadline, a.timeout).await?
        }, _ => unreachable!());
    }
    Ok(())
}

/// Why `obj` is still there after its delete, for the waiting message.
fn still_there<K: Object>(obj: &K) -> String {
    let m = obj.metadata();
    let info = K::INFO;
    let what = format!("{} \"{}\"", info.singular, m.name);
    match m.deletion_grace_period_seconds.filter(|g| *g > 0) {
        Some(grace) => {
            let node = (obj as &dyn std::any::Any)
                .downcast_ref::<api::Pod>()
                .and_then(|p| p.spec.as_ref())
                .map(|s| s.node_name.clone())
                .unwrap_or_default();
            format!(
                "{what} is Terminating: the agent of node {node:?} stops it within {grace}s, then it is gone"
            )
        }
        None if !m.finalizers.is_empty() => format!(
            "{what} waits for its finalizers ({}) to be removed",
            m.finalizers.join(", ")
        ),
        None => format!("{what} is being deleted"),
    }
}

/// Waits until the object `name` with `uid` is gone (a namesake with
/// another uid does not count), watching from its current version.
async fn wait_gone<K: Object>(
    client: &Client,
    ns: &str,
    name: &str,
    uid: &str,
    deadline: Option<tokio::time::Instant>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let mut told = false;
    loop {
        let current = match client.get_object::<K>(ns, name).await {
            Ok(o) if o.metadata().uid == uid => o,
            Ok(_) => return Ok(()),
            Err(e) if e.is_reason("NotFound") => return Ok(()),
            Err(e) => return Err(server_error(e)),
        };
        if !told {
            eprintln!(
                "waiting: {} (--wait=false returns at once)",
                still_there(&current)
            );
            told = true;
        }
        let field = format!("metadata.name={name}");
        let rv = current.metadata().resource_version.clone();
        let mut stream = client.watch_objects::<K>(ns, "", &field, &rv);
        let gone = loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => {
                        let hint = if K::INFO.kind == "Pod" {
                            format!(
                                "; `rafter delete pod {name} --grace-period=0 --force` removes it without waiting for its node"
                            )
                        } else {
                            String::new()
                        };
                        bail!(
                            "timed out after {} waiting for {} \"{name}\" to be deleted: {}{hint}",
                            rafter_proto::age::human_duration(timeout),
                            K::INFO.singular,
                            still_there(&current),
                        );
                    }
                },
                None => stream.next().await,
            };
            match next {
                Some(Ok(WatchEvent::Deleted(o))) if o.metadata().uid == uid => break true,
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)))
                    if o.metadata().uid != uid =>
                {
                    break true;
                }
                Some(Ok(_)) => {}
                // Gone (compacted) or ended: look again and watch anew.
                Some(Err(_)) | None => break false,
            }
        };
        if gone {
            return Ok(());
        }
    }
}

// ---- scale / label / annotate / edit ------------------------------------------------

pub async fn scale(g: &GlobalArgs, a: ScaleArgs) -> anyhow::Result<()> {
    let names: Vec<String> = a.name.iter().cloned().collect();
    let (info, names) = split_resource(&a.resource, &names)?;
    if !matches!(info.kind, "Deployment" | "ReplicaSet") {
        bail!(
            "{} cannot be scaled: scale a deployment or a replicaset",
            info.plural
        );
    }
    let [name] = names.as_slice() else {
        bail!("give one name to scale");
    };
    if a.replicas < 0 {
        bail!("--replicas must be 0 or more, got {}", a.replicas);
    }
    let client = g.client().await?;
    let ns = namespace(&a.ns)?;
    let patch = json!({"spec": {"replicas": a.replicas}});
    with_kind!(info.kind, K => {
        client.patch::<K>(&ns, name, &patch, false).await.map_err(server_error)?;
    }, _ => unreachable!());
    outln!("{} scaled", ref_name(info, name))?;
    Ok(())
}

pub async fn label(g: &GlobalArgs, a: LabelArgs, field: &str) -> anyhow::Result<()> {
    let (info, rest) = match a.resource.split_once('/') {
        Some(_) => {
            let (info, names) = split_resource(&a.resource, &[])?;
            (
                info,
                names
                    .into_iter()
                    .chain(a.args.iter().cloned())
                    .collect::<Vec<_>>(),
            )
        }
        None => (kind_of(&a.resource)?, a.args.clone()),
    };
    let Some((name, changes)) = rest.split_first() else {
        bail!("give NAME and key=value or key- changes");
    };
    if changes.is_empty() {
        bail!("give at least one key=value or key- change");
    }
    let ns = if info.namespaced {
        namespace(&a.ns)?
    } else {
        String::new()
    };
    let client = g.client().await?;
    let current: BTreeMap<String, String> = with_kind!(info.kind, K => {
        let o = client.get_object::<K>(&ns, name).await.map_err(server_error)?;
        if field == "labels" { o.metadata().labels.clone() } else { o.metadata().annotations.clone() }
    }, _ => unreachable!());
    let mut patch = serde_json::Map::new();
    for c in changes {
        if let Some(k) = c.strip_suffix('-') {
            patch.insert(k.to_string(), Value::Null);
        } else if let Some((k, v)) = c.split_once('=') {
            if let Some(old) = current.get(k)
                && old != v
                && !a.overwrite
            {
                bail!("'{k}' already has a value ({old}), and --overwrite is false");
            }
            patch.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            bail!("{c:?} is neither key=value nor key-");
        }
    }
    let patch = json!({"metadata": {field: patch}});
    with_kind!(info.kind, K => {
        client.patch::<K>(&ns, name, &patch, false).await.map_err(server_error)?;
    }, _ => unreachable!());
    let verb = if field == "labels" {
        "labeled"
    } else {
        "annotated"
    };
    outln!("{} {verb}", ref_name(info, name))?;
    Ok(())
}

/// The one object a NameArgs names: kind, name, namespace ("" for
/// cluster-scoped kinds).
fn one_object(a: &NameArgs, verb: &str) -> anyhow::Result<(&'static KindInfo, String, String)> {
    let names: Vec<String> = a.name.iter().cloned().collect();
    let (info, names) = split_resource(&a.resource, &names)?;
    let [name] = names.as_slice() else {
        bail!("give one name to {verb}")
    };
    let ns = if info.namespaced {
        namespace(&a.ns)?
    } else {
        String::new()
    };
    Ok((info, name.clone(), ns))
}

pub async fn edit(g: &GlobalArgs, a: NameArgs) -> anyhow::Result<()> {
    let (info, name, ns) = one_object(&a, "edit")?;
    let name = &name;
    let client = g.client().await?;
    with_kind!(info.kind, K => edit_kind::<K>(&client, &ns, name).await, _ => unreachable!())
}

async fn edit_kind<K: Object>(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let current = client
        .get_object::<K>(ns, name)
        .await
        .map_err(server_error)?;
    let text = serde_yaml_ng::to_string(&json::to_value(&current))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(format!("{}-{name}.yaml", K::INFO.singular));
    std::fs::write(&path, &text)?;
    let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("running the editor {editor:?} (set $EDITOR)"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); nothing was changed");
    }
    let edited = std::fs::read_to_string(&path)?;
    if edited == text {
        outln!("Edit cancelled, no changes made.")?;
        return Ok(());
    }
    let value: Value = serde_yaml_ng::from_str(&edited)
        .context("the edited file is not valid YAML; nothing was changed")?;
    let obj: K = decode_manifest("the edited object", value, ns)?;
    match client.update(&obj).await {
        Ok(_) => outln!("{} edited", ref_name(K::INFO, name))?,
        Err(e) if e.is_reason("Conflict") => bail!(
            "{} was changed by someone else while you edited it; nothing was saved. Your version is in {} — run `rafter edit` again",
            ref_name(K::INFO, name),
            {
                let keep = std::env::temp_dir().join(path.file_name().unwrap_or_default());
                let _ = std::fs::copy(&path, &keep);
                keep.display().to_string()
            }
        ),
        Err(e) => return Err(server_error(e)),
    }
    Ok(())
}

pub async fn describe(g: &GlobalArgs, a: NameArgs) -> anyhow::Result<()> {
    let (info, name, ns) = one_object(&a, "describe")?;
    let name = &name;
    let client = g.client().await?;
    let (value, uid) = with_kind!(info.kind, K => {
        let o = client.get_object::<K>(&ns, name).await.map_err(server_error)?;
        (json::to_value(&o), o.metadata().uid.clone())
    }, _ => unreachable!());
    out!("{}", tables::describe(&value))?;
    let events = client
        .list::<api::Event>(if info.namespaced { &ns } else { "" }, "", "")
        .await
        .map_err(server_error)?;
    let mut mine: Vec<&api::Event> = events
        .items
        .iter()
        .filter(|e| {
            e.involved_object
                .as_ref()
                .is_some_and(|o| o.uid == uid || (o.kind == info.kind && o.name == *name))
        })
        .collect();
    mine.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
    out!("{}", tables::describe_events(&mine))?;
    Ok(())
}

pub fn api_resources() -> anyhow::Result<()> {
    let mut t =
        super::output::Table::new(&["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]);
    for k in KINDS {
        t.row(vec![
            k.plural.into(),
            k.short_names.join(","),
            k.api_version.into(),
            k.namespaced.to_string(),
            k.kind.into(),
        ]);
    }
    // kubectl leaves an empty SHORTNAMES cell blank.
    out!("{}", t.render().replace("<none>", "      "))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_periods_follow_kubectl() {
        assert_eq!(requested_grace(-1, false), None, "the pod's own");
        assert_eq!(
            requested_grace(-1, true),
            Some(0),
            "--force alone is immediate"
        );
        assert_eq!(requested_grace(0, true), Some(0));
        assert_eq!(requested_grace(0, false), Some(1), "0 needs --force");
        assert_eq!(requested_grace(5, false), Some(5));
        assert_eq!(requested_grace(5, true), Some(5));
    }
}
