//! `rafter get` tables with kubectl's columns for each kind, and the
//! `describe` view.

use std::any::Any;
use std::time::SystemTime;

use rafter_proto::age::{human_age, parse_rfc3339_utc};
use rafter_proto::api;
use rafter_proto::object::Object;
use serde_json::Value;

use super::output::Table;

fn age(ts: &str, now: SystemTime) -> String {
    match parse_rfc3339_utc(ts) {
        Some(t) => human_age(t, now),
        None => "<unknown>".into(),
    }
}

fn headers(kind: &str, wide: bool) -> Vec<&'static str> {
    let (base, extra): (&[&str], &[&str]) = match kind {
        "Pod" => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        ),
        "Node" => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        "Deployment" => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "ReplicaSet" => (
            &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        "Service" => (
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            &["SELECTOR"],
        ),
        "Endpoints" => (&["NAME", "ENDPOINTS", "AGE"], &[]),
        "ConfigMap" => (&["NAME", "DATA", "AGE"], &[]),
        "Secret" => (&["NAME", "TYPE", "DATA", "AGE"], &[]),
        "Namespace" => (&["NAME", "STATUS", "AGE"], &[]),
        "Event" => (&["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        "Lease" => (&["NAME", "HOLDER", "RENEWED", "AGE"], &[]),
        _ => (&["NAME", "AGE"], &[]),
    };
    let mut h = base.to_vec();
    if wide {
        h.extend_from_slice(extra);
    }
    h
}

fn selector_text(s: &Option<api::LabelSelector>) -> String {
    let Some(s) = s else { return String::new() };
    let mut parts: Vec<String> = s
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in &s.match_expressions {
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, e.values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, e.values.join(",")),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

fn containers_images(spec: Option<&api::PodSpec>) -> (String, String) {
    let cs = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    (
        cs.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        cs.iter()
            .map(|c| c.image.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// kubectl's STATUS of a pod: a waiting/terminated reason of a container
/// when there is one, "Terminating" while deleted, else the phase.
fn pod_status(p: &api::Pod) -> String {
    if !p.metadata().deletion_timestamp.is_empty() {
        return "Terminating".into();
    }
    let status = p.status.clone().unwrap_or_default();
    let mut shown = if status.reason.is_empty() {
        status.phase.clone()
    } else {
        status.reason.clone()
    };
    for c in &status.container_statuses {
        if let Some(state) = &c.state {
            if let Some(w) = &state.waiting
                && !w.reason.is_empty()
            {
                shown = w.reason.clone();
            } else if let Some(t) = &state.terminated {
                shown = if t.reason.is_empty() {
                    format!("ExitCode:{}", t.exit_code)
                } else {
                    t.reason.clone()
                };
            }
        }
    }
    shown
}

fn row(obj: &dyn Any, meta: &api::ObjectMeta, wide: bool, now: SystemTime) -> Vec<String> {
    let name = meta.name.clone();
    let created = age(&meta.creation_timestamp, now);
    if let Some(p) = obj.downcast_ref::<api::Pod>() {
        let spec = p.spec.clone().unwrap_or_default();
        let status = p.status.clone().unwrap_or_default();
        let ready = status.container_statuses.iter().filter(|c| c.ready).count();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum();
        let mut r = vec![
            name,
            format!("{ready}/{}", spec.containers.len()),
            pod_status(p),
            restarts.to_string(),
            created,
        ];
        if wide {
            r.extend([status.pod_ip, spec.node_name, String::new(), String::new()]);
        }
        return r;
    }
    if let Some(n) = obj.downcast_ref::<api::Node>() {
        let spec = n.spec.clone().unwrap_or_default();
        let status = n.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.r#type == "Ready");
        let mut st = match ready {
            Some(c) if c.status == "True" => "Ready".to_string(),
            _ => "NotReady".to_string(),
        };
        if spec.unschedulable {
            st.push_str(",SchedulingDisabled");
        }
        let roles: Vec<String> = meta
            .labels
            .keys()
            .filter_map(|k| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_string)
            })
            .collect();
        let info = status.node_info.clone().unwrap_or_default();
        let mut r = vec![
            name,
            st,
            roles.join(","),
            created,
            info.agent_version.clone(),
        ];
        if wide {
            let addr = |t: &str| {
                status
                    .addresses
                    .iter()
                    .find(|a| a.r#type == t)
                    .map(|a| a.address.clone())
                    .unwrap_or_default()
            };
            r.extend([
                addr("InternalIP"),
                addr("ExternalIP"),
                info.os_image.clone(),
                info.kernel_version.clone(),
                info.container_runtime_version.clone(),
            ]);
        }
        return r;
    }
    if let Some(d) = obj.downcast_ref::<api::Deployment>() {
        let spec = d.spec.clone().unwrap_or_default();
        let status = d.status.clone().unwrap_or_default();
        let mut r = vec![
            name,
            format!("{}/{}", status.ready_replicas, spec.replicas.unwrap_or(1)),
            status.updated_replicas.to_string(),
            status.available_replicas.to_string(),
            created,
        ];
        if wide {
            let (c, i) = containers_images(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
            r.extend([c, i, selector_text(&spec.selector)]);
        }
        return r;
    }
    if let Some(rs) = obj.downcast_ref::<api::ReplicaSet>() {
        let spec = rs.spec.clone().unwrap_or_default();
        let status = rs.status.clone().unwrap_or_default();
        let mut r = vec![
            name,
            spec.replicas.unwrap_or(1).to_string(),
            status.replicas.to_string(),
            status.ready_replicas.to_string(),
            created,
        ];
        if wide {
            let (c, i) = containers_images(spec.template.as_ref().and_then(|t| t.spec.as_ref()));
            r.extend([c, i, selector_text(&spec.selector)]);
        }
        return r;
    }
    if let Some(s) = obj.downcast_ref::<api::Service>() {
        let spec = s.spec.clone().unwrap_or_default();
        let ports: Vec<String> = spec
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol))
            .collect();
        let mut r = vec![
            name,
            spec.r#type.clone(),
            spec.cluster_ip.clone(),
            "<none>".into(),
            ports.join(","),
            created,
        ];
        if wide {
            r.push(
                spec.selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        return r;
    }
    if let Some(e) = obj.downcast_ref::<api::Endpoints>() {
        let mut eps = Vec::new();
        for s in &e.subsets {
            for a in &s.addresses {
                for p in &s.ports {
                    eps.push(format!("{}:{}", a.ip, p.port));
                }
            }
        }
        let shown = if eps.len() > 3 {
            format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
        } else {
            eps.join(",")
        };
        return vec![name, shown, created];
    }
    if let Some(c) = obj.downcast_ref::<api::ConfigMap>() {
        return vec![
            name,
            (c.data.len() + c.binary_data.len()).to_string(),
            created,
        ];
    }
    if let Some(s) = obj.downcast_ref::<api::Secret>() {
        return vec![name, s.r#type.clone(), s.data.len().to_string(), created];
    }
    if let Some(n) = obj.downcast_ref::<api::Namespace>() {
        return vec![name, n.status.clone().unwrap_or_default().phase, created];
    }
    if let Some(l) = obj.downcast_ref::<api::Lease>() {
        let spec = l.spec.clone().unwrap_or_default();
        return vec![
            name,
            spec.holder_identity,
            format!("{} ago", age(&spec.renew_time, now)),
            created,
        ];
    }
    if let Some(e) = obj.downcast_ref::<api::Event>() {
        let o = e.involved_object.clone().unwrap_or_default();
        return vec![
            age(&e.last_timestamp, now),
            e.r#type.clone(),
            e.reason.clone(),
            format!("{}/{}", o.kind.to_lowercase(), o.name),
            e.message.clone(),
        ];
    }
    vec![name, created]
}

/// The table `rafter get` prints for `items`.
pub fn table<K: Object>(items: &[K], wide: bool, show_namespace: bool) -> Table {
    table_at(items, wide, show_namespace, SystemTime::now())
}

/// [`table`] with a fixed "now" (golden tests).
pub fn table_at<K: Object>(
    items: &[K],
    wide: bool,
    show_namespace: bool,
    now: SystemTime,
) -> Table {
    let mut h = headers(K::INFO.kind, wide);
    if show_namespace {
        h.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(&h);
    for o in items {
        let mut r = row(o as &dyn Any, o.metadata(), wide, now);
        if show_namespace {
            r.insert(0, o.metadata().namespace.clone());
        }
        t.row(r);
    }
    t
}

/// kubectl describe's layout: `Key:  value` lines, nested maps indented,
/// lists one item per line.
pub fn describe(value: &Value) -> String {
    let mut out = String::new();
    fn walk(out: &mut String, v: &Value, indent: usize) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = title(k);
                    match v {
                        Value::Object(m) if m.is_empty() => {
                            out.push_str(&format!("{pad}{key}:  <none>\n"))
                        }
                        Value::Array(a) if a.is_empty() => {
                            out.push_str(&format!("{pad}{key}:  <none>\n"))
                        }
                        Value::Object(_) | Value::Array(_) => {
                            out.push_str(&format!("{pad}{key}:\n"));
                            walk(out, v, indent + 2);
                        }
                        other => out.push_str(&format!("{pad}{key}:  {}\n", scalar(other))),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(_) | Value::Array(_) => {
                            out.push_str(&format!("{pad}[{i}]\n"));
                            walk(out, item, indent + 2);
                        }
                        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    fn title(k: &str) -> String {
        let mut c = k.chars();
        match c.next() {
            Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
            None => String::new(),
        }
    }
    walk(&mut out, value, 0);
    out
}

/// The Events section of describe.
pub fn describe_events(events: &[&api::Event]) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let now = SystemTime::now();
    let mut t = Table::new(&["Type", "Reason", "Age", "From", "Message"]);
    for e in events {
        t.row(vec![
            e.r#type.clone(),
            e.reason.clone(),
            age(&e.last_timestamp, now),
            e.source.clone().unwrap_or_default().component,
            e.message.clone(),
        ]);
    }
    let mut out = "Events:\n".to_string();
    for line in t.render().lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use rafter_proto::age::format_rfc3339_utc;
    use rafter_proto::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn ago(secs: u64) -> String {
        format_rfc3339_utc(now() - Duration::from_secs(secs))
    }

    fn meta(name: &str, ns: &str, age_secs: u64) -> Option<api::ObjectMeta> {
        Some(api::ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            creation_timestamp: ago(age_secs),
            ..Default::default()
        })
    }

    fn container_status(ready: bool, restarts: i32, waiting: Option<&str>) -> api::ContainerStatus {
        api::ContainerStatus {
            ready,
            restart_count: restarts,
            state: Some(api::ContainerState {
                waiting: waiting.map(|r| api::ContainerStateWaiting {
                    reason: r.into(),
                    ..Default::default()
                }),
                running: if waiting.is_none() {
                    Some(Default::default())
                } else {
                    None
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(
        name: &str,
        age: u64,
        containers: usize,
        phase: &str,
        ip: &str,
        node: &str,
        cs: Vec<api::ContainerStatus>,
    ) -> api::Pod {
        api::Pod {
            metadata: meta(name, "default", age),
            spec: Some(api::PodSpec {
                containers: (0..containers)
                    .map(|i| api::Container {
                        name: format!("c{i}"),
                        image: "img".into(),
                        ..Default::default()
                    })
                    .collect(),
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(api::PodStatus {
                phase: phase.into(),
                pod_ip: ip.into(),
                container_statuses: cs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pods() -> Vec<api::Pod> {
        vec![
            pod(
                "web-1",
                300,
                1,
                "Running",
                "10.0.1.5",
                "node-a",
                vec![container_status(true, 0, None)],
            ),
            pod(
                "web-2",
                2 * 86_400 + 3 * 3_600 + 59,
                2,
                "Running",
                "10.0.1.6",
                "node-b",
                vec![
                    container_status(true, 0, None),
                    container_status(false, 3, Some("CrashLoopBackOff")),
                ],
            ),
            pod("pending", 30, 1, "Pending", "", "", vec![]),
        ]
    }

    fn golden(name: &str) -> String {
        let path = format!("{}/src/cli/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    #[test]
    fn pods_table_matches_kubectl() {
        assert_eq!(
            table_at(&pods(), false, false, now()).render(),
            golden("get_pods.txt")
        );
        assert_eq!(
            table_at(&pods(), true, false, now()).render(),
            golden("get_pods_wide.txt")
        );
    }

    #[test]
    fn nodes_table_matches_kubectl() {
        let node = |name: &str, ready: &str, unschedulable: bool| api::Node {
            metadata: meta(name, "", 10 * 86_400 + 100),
            spec: Some(api::NodeSpec {
                unschedulable,
                ..Default::default()
            }),
            status: Some(api::NodeStatus {
                conditions: vec![api::Condition {
                    r#type: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }],
                node_info: Some(api::NodeSystemInfo {
                    agent_version: "v0.1.0".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = vec![
            node("node-a", "True", false),
            node("node-b", "Unknown", true),
        ];
        assert_eq!(
            table_at(&nodes, false, false, now()).render(),
            golden("get_nodes.txt")
        );
    }

    #[test]
    fn deployments_table_matches_kubectl() {
        let d = api::Deployment {
            metadata: meta("web", "default", 300),
            spec: Some(api::DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(api::DeploymentStatus {
                ready_replicas: 2,
                updated_replicas: 3,
                available_replicas: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            table_at(&[d], false, false, now()).render(),
            golden("get_deploy.txt")
        );
    }

    #[test]
    fn services_table_with_namespaces_matches_kubectl() {
        let port = |p: i32| api::ServicePort {
            port: p,
            protocol: "TCP".into(),
            ..Default::default()
        };
        let s = api::Service {
            metadata: meta("web", "shop", 90 * 60 + 10),
            spec: Some(api::ServiceSpec {
                r#type: "ClusterIP".into(),
                cluster_ip: "10.96.0.10".into(),
                ports: vec![port(80), port(443)],
                selector: BTreeMap::from([("app".into(), "web".into())]),
            }),
            ..Default::default()
        };
        assert_eq!(
            table_at(&[s], false, true, now()).render(),
            golden("get_svc_all_namespaces.txt")
        );
    }

    #[test]
    fn json_output_parses_back_to_the_object() {
        for p in pods() {
            let text = serde_json::to_string_pretty(&json::to_value(&p)).unwrap();
            let mut back: api::Pod = json::from_json_str(&text).unwrap();
            let mut p = p;
            p.set_type_meta();
            back.set_type_meta();
            assert_eq!(back, p);
        }
    }
}
