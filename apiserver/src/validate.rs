//! Defaulting and validation of every kind, before anything is stored.
//!
//! `prepare` fills defaults as Kubernetes does (replicas 1, strategy
//! 25 %/25 %, restartPolicy Always, protocol TCP, ...), canonicalises
//! quantities, then checks the object and returns every problem found as a
//! field cause (`spec.template.spec.containers[0].image: Required value`).

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};

use rafter_proto::api::{self, FieldCause};
use rafter_proto::object::Object;
use rafter_proto::quantity::Quantity;
use rafter_proto::selector::{
    LabelSelector, validate_dns1123_label, validate_dns1123_subdomain, validate_label_key,
    validate_label_value,
};

/// Largest object the API stores, encoded.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// Collected field errors.
#[derive(Default)]
pub struct Errs(pub Vec<FieldCause>);

impl Errs {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldCause {
            field: field.into(),
            message: message.into(),
        });
    }

    fn required(&mut self, field: impl Into<String>) {
        self.add(field, "Required value");
    }

    fn invalid(&mut self, field: impl Into<String>, value: impl std::fmt::Debug, why: &str) {
        self.add(field, format!("Invalid value: {value:?}: {why}"));
    }

    fn unsupported(&mut self, field: impl Into<String>, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        self.add(
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        );
    }
}

/// Checks what an update may not change: a pod's `spec.nodeName` once set
/// (a pod is bound once, to one node; the scheduler binds by setting it).
pub fn transition<K: Object>(current: &K, next: &K) -> Result<(), Vec<FieldCause>> {
    let mut errs = Errs::default();
    if let (Some(old), Some(new)) = (
        (current as &dyn Any).downcast_ref::<api::Pod>(),
        (next as &dyn Any).downcast_ref::<api::Pod>(),
    ) {
        let old_node = old
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or("");
        let new_node = new
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or("");
        if !old_node.is_empty() && new_node != old_node {
            errs.invalid(
                "spec.nodeName",
                new_node,
                &format!("the pod is already bound to node {old_node:?}; a bound pod cannot move (delete it and let its controller create another)"),
            );
        }
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs.0)
    }
}

/// Fills defaults and validates `obj`. Returns the field errors, if any.
pub fn prepare<K: Object>(obj: &mut K) -> Result<(), Vec<FieldCause>> {
    let mut errs = Errs::default();
    validate_meta(K::INFO.kind, K::INFO.namespaced, obj.metadata(), &mut errs);
    let any = obj as &mut dyn Any;
    if let Some(o) = any.downcast_mut::<api::Pod>() {
        pod(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::ReplicaSet>() {
        replica_set(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Deployment>() {
        deployment(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Service>() {
        service(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Node>() {
        node(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Namespace>() {
        let status = o.status.get_or_insert_default();
        if status.phase.is_empty() {
            status.phase = "Active".into();
        }
    } else if let Some(o) = any.downcast_mut::<api::ConfigMap>() {
        config_map(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Secret>() {
        secret(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Event>() {
        event(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Endpoints>() {
        endpoints(o, &mut errs);
    } else if let Some(o) = any.downcast_mut::<api::Lease>() {
        lease(o, &mut errs);
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs.0)
    }
}

fn validate_meta(kind: &str, namespaced: bool, m: &api::ObjectMeta, errs: &mut Errs) {
    if m.name.is_empty() {
        if m.generate_name.is_empty() {
            errs.add(
                "metadata.name",
                "Required value: name or generateName is required",
            );
        }
    } else {
        // Namespaces and Services become DNS labels; the rest are subdomains.
        let check = if matches!(kind, "Namespace" | "Service") {
            validate_dns1123_label(&m.name)
        } else {
            validate_dns1123_subdomain(&m.name)
        };
        if let Err(why) = check {
            errs.invalid("metadata.name", &m.name, &why);
        }
    }
    if namespaced {
        if m.namespace.is_empty() {
            errs.required("metadata.namespace");
        } else if let Err(why) = validate_dns1123_label(&m.namespace) {
            errs.invalid("metadata.namespace", &m.namespace, &why);
        }
    } else if !m.namespace.is_empty() {
        errs.add(
            "metadata.namespace",
            format!("Forbidden: {kind} is not namespaced; remove metadata.namespace"),
        );
    }
    labels("metadata.labels", &m.labels, errs);
    for key in m.annotations.keys() {
        if let Err(why) = validate_label_key(key) {
            errs.invalid("metadata.annotations", key, &why);
        }
    }
    for (i, o) in m.owner_references.iter().enumerate() {
        let f = format!("metadata.ownerReferences[{i}]");
        for (name, v) in [
            ("apiVersion", &o.api_version),
            ("kind", &o.kind),
            ("name", &o.name),
            ("uid", &o.uid),
        ] {
            if v.is_empty() {
                errs.required(format!("{f}.{name}"));
            }
        }
    }
    if m.owner_references
        .iter()
        .filter(|o| o.controller == Some(true))
        .count()
        > 1
    {
        errs.add(
            "metadata.ownerReferences",
            "Invalid value: only one reference can have Controller set to true",
        );
    }
}

fn labels(field: &str, map: &BTreeMap<String, String>, errs: &mut Errs) {
    for (k, v) in map {
        if let Err(why) = validate_label_key(k) {
            errs.invalid(field, k, &why);
        }
        if let Err(why) = validate_label_value(v) {
            errs.invalid(format!("{field}.{k}"), v, &why);
        }
    }
}

/// Parses and canonicalises every quantity of a resource map.
fn quantities(field: &str, map: &mut BTreeMap<String, String>, errs: &mut Errs) {
    for (name, value) in map.iter_mut() {
        match value.parse::<Quantity>() {
            Ok(q) if q.is_negative() => errs.invalid(
                format!("{field}.{name}"),
                &*value,
                "must be greater than or equal to 0",
            ),
            Ok(q) => *value = q.to_string(),
            Err(e) => errs.invalid(format!("{field}.{name}"), &*value, &e.to_string()),
        }
    }
}

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn protocol(field: String, p: &mut String, errs: &mut Errs) {
    if p.is_empty() {
        *p = "TCP".into();
    } else if !PROTOCOLS.contains(&p.as_str()) {
        errs.unsupported(field, p, PROTOCOLS);
    }
}

fn port_number(field: String, port: i32, errs: &mut Errs) {
    if !(1..=65535).contains(&port) {
        errs.invalid(field, port, "must be between 1 and 65535, inclusive");
    }
}

/// An int-or-string port: a number 1–65535 or an IANA service name.
fn named_port(field: String, port: &str, errs: &mut Errs) {
    if port.is_empty() {
        errs.required(field);
    } else if let Ok(n) = port.parse::<i64>() {
        if !(1..=65535).contains(&n) {
            errs.invalid(field, port, "must be between 1 and 65535, inclusive");
        }
    } else if port.len() > 15
        || !port
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !port.chars().any(|c| c.is_ascii_lowercase())
    {
        errs.invalid(field, port, "must be a port number or a port name (at most 15 lower case letters, digits and '-', with at least one letter)");
    }
}

fn non_negative(errs: &mut Errs, field: String, v: i64) {
    if v < 0 {
        errs.invalid(field, v, "must be greater than or equal to 0");
    }
}

fn pod(p: &mut api::Pod, errs: &mut Errs) {
    let spec = p.spec.get_or_insert_default();
    pod_spec("spec", spec, errs);
    let status = p.status.get_or_insert_default();
    if status.phase.is_empty() {
        status.phase = "Pending".into();
    }
    const PHASES: &[&str] = &["Pending", "Running", "Succeeded", "Failed", "Unknown"];
    if !PHASES.contains(&status.phase.as_str()) {
        errs.unsupported("status.phase", &status.phase.clone(), PHASES);
    }
}

fn probe(field: String, p: &mut api::Probe, errs: &mut Errs) {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 => errs.required(format!("{field}: one of exec, httpGet, tcpSocket")),
        1 => {}
        _ => errs.add(
            field.clone(),
            "Forbidden: may not specify more than 1 handler type",
        ),
    }
    if let Some(h) = &mut p.http_get {
        named_port(format!("{field}.httpGet.port"), &h.port, errs);
        if h.path.is_empty() {
            h.path = "/".into();
        }
        if h.scheme.is_empty() {
            h.scheme = "HTTP".into();
        } else if !["HTTP", "HTTPS"].contains(&h.scheme.as_str()) {
            errs.unsupported(
                format!("{field}.httpGet.scheme"),
                &h.scheme.clone(),
                &["HTTP", "HTTPS"],
            );
        }
    }
    if let Some(t) = &p.tcp_socket {
        named_port(format!("{field}.tcpSocket.port"), &t.port, errs);
    }
    if let Some(e) = &p.exec
        && e.command.is_empty()
    {
        errs.required(format!("{field}.exec.command"));
    }
    for (name, v, default) in [
        ("timeoutSeconds", &mut p.timeout_seconds, 1),
        ("periodSeconds", &mut p.period_seconds, 10),
        ("successThreshold", &mut p.success_threshold, 1),
        ("failureThreshold", &mut p.failure_threshold, 3),
    ] {
        if *v == 0 {
            *v = default;
        } else if *v < 0 {
            errs.invalid(
                format!("{field}.{name}"),
                *v,
                "must be greater than or equal to 1",
            );
        }
    }
    non_negative(
        errs,
        format!("{field}.initialDelaySeconds"),
        p.initial_delay_seconds.into(),
    );
}

pub(crate) fn pod_spec(field: &str, spec: &mut api::PodSpec, errs: &mut Errs) {
    if spec.containers.is_empty() {
        errs.required(format!("{field}.containers"));
    }
    let mut volume_names = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let f = format!("{field}.volumes[{i}]");
        if let Err(why) = validate_dns1123_label(&v.name) {
            errs.invalid(format!("{f}.name"), &v.name, &why);
        }
        if !volume_names.insert(v.name.clone()) {
            errs.add(
                format!("{f}.name"),
                format!("Duplicate value: {:?}", v.name),
            );
        }
        let sources = [
            v.empty_dir.is_some(),
            v.host_path.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => errs.required(format!("{f}: one of emptyDir, hostPath, configMap, secret")),
            1 => {}
            _ => errs.add(
                f.clone(),
                "Forbidden: may not specify more than 1 volume type",
            ),
        }
        if let Some(h) = &v.host_path
            && !h.path.starts_with('/')
        {
            errs.invalid(
                format!("{f}.hostPath.path"),
                &h.path,
                "must be an absolute path",
            );
        }
        if let Some(c) = &v.config_map
            && c.name.is_empty()
        {
            errs.required(format!("{f}.configMap.name"));
        }
        if let Some(s) = &v.secret
            && s.secret_name.is_empty()
        {
            errs.required(format!("{f}.secret.secretName"));
        }
    }
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        let f = format!("{field}.containers[{i}]");
        if c.name.is_empty() {
            errs.required(format!("{f}.name"));
        } else if let Err(why) = validate_dns1123_label(&c.name) {
            errs.invalid(format!("{f}.name"), &c.name, &why);
        } else if !names.insert(c.name.clone()) {
            errs.add(
                format!("{f}.name"),
                format!("Duplicate value: {:?}", c.name),
            );
        }
        if c.image.trim().is_empty() {
            errs.required(format!("{f}.image"));
        }
        if c.image_pull_policy.is_empty() {
            c.image_pull_policy = "IfNotPresent".into();
        } else if !["Always", "IfNotPresent", "Never"].contains(&c.image_pull_policy.as_str()) {
            errs.unsupported(
                format!("{f}.imagePullPolicy"),
                &c.image_pull_policy.clone(),
                &["Always", "IfNotPresent", "Never"],
            );
        }
        for (j, p) in c.ports.iter_mut().enumerate() {
            let pf = format!("{f}.ports[{j}]");
            port_number(format!("{pf}.containerPort"), p.container_port, errs);
            protocol(format!("{pf}.protocol"), &mut p.protocol, errs);
            if p.host_port != 0 {
                port_number(format!("{pf}.hostPort"), p.host_port, errs);
                if !host_ports.insert((p.host_port, p.protocol.clone())) {
                    errs.add(
                        format!("{pf}.hostPort"),
                        format!("Duplicate value: \"{}/{}\"", p.host_port, p.protocol),
                    );
                }
            }
        }
        for (j, e) in c.env.iter().enumerate() {
            let ef = format!("{f}.env[{j}]");
            if e.name.is_empty() {
                errs.required(format!("{ef}.name"));
            }
            if let Some(from) = &e.value_from {
                if !e.value.is_empty() {
                    errs.add(
                        format!("{ef}.valueFrom"),
                        "Invalid value: may not be specified when `value` is not empty",
                    );
                }
                let refs = [
                    ("configMapKeyRef", &from.config_map_key_ref),
                    ("secretKeyRef", &from.secret_key_ref),
                ];
                let set: Vec<_> = refs.iter().filter(|(_, r)| r.is_some()).collect();
                if set.len() != 1 {
                    errs.add(
                        format!("{ef}.valueFrom"),
                        "Invalid value: must specify exactly one of configMapKeyRef, secretKeyRef",
                    );
                }
                for (name, r) in set {
                    let r = r.as_ref().expect("filtered on is_some");
                    if r.name.is_empty() {
                        errs.required(format!("{ef}.valueFrom.{name}.name"));
                    }
                    if r.key.is_empty() {
                        errs.required(format!("{ef}.valueFrom.{name}.key"));
                    }
                }
            }
        }
        let resources = c.resources.get_or_insert_default();
        quantities(
            &format!("{f}.resources.requests"),
            &mut resources.requests,
            errs,
        );
        quantities(
            &format!("{f}.resources.limits"),
            &mut resources.limits,
            errs,
        );
        for (name, req) in &resources.requests {
            if let Some(limit) = resources.limits.get(name)
                && let (Ok(r), Ok(l)) = (req.parse::<Quantity>(), limit.parse::<Quantity>())
                && r > l
            {
                errs.invalid(
                    format!("{f}.resources.requests.{name}"),
                    req,
                    &format!("must be less than or equal to {name} limit of {limit}"),
                );
            }
        }
        if resources.requests.is_empty() && resources.limits.is_empty() {
            c.resources = None;
        }
        if let Some(p) = &mut c.liveness_probe {
            probe(format!("{f}.livenessProbe"), p, errs);
        }
        if let Some(p) = &mut c.readiness_probe {
            probe(format!("{f}.readinessProbe"), p, errs);
        }
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let mf = format!("{f}.volumeMounts[{j}]");
            if !volume_names.contains(&m.name) {
                errs.add(format!("{mf}.name"), format!("Not found: {:?}", m.name));
            }
            if !m.mount_path.starts_with('/') {
                errs.invalid(
                    format!("{mf}.mountPath"),
                    &m.mount_path,
                    "must be an absolute path",
                );
            }
        }
    }
    const POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
    if spec.restart_policy.is_empty() {
        spec.restart_policy = "Always".into();
    } else if !POLICIES.contains(&spec.restart_policy.as_str()) {
        errs.unsupported(
            format!("{field}.restartPolicy"),
            &spec.restart_policy.clone(),
            POLICIES,
        );
    }
    match spec.termination_grace_period_seconds {
        None => spec.termination_grace_period_seconds = Some(30),
        Some(s) => non_negative(errs, format!("{field}.terminationGracePeriodSeconds"), s),
    }
    labels(&format!("{field}.nodeSelector"), &spec.node_selector, errs);
    if !spec.node_name.is_empty()
        && let Err(why) = validate_dns1123_subdomain(&spec.node_name)
    {
        errs.invalid(format!("{field}.nodeName"), &spec.node_name, &why);
    }
    for (i, t) in spec.tolerations.iter_mut().enumerate() {
        let f = format!("{field}.tolerations[{i}]");
        if t.operator.is_empty() {
            t.operator = "Equal".into();
        }
        match t.operator.as_str() {
            "Equal" => {}
            "Exists" if t.value.is_empty() => {}
            "Exists" => errs.invalid(
                format!("{f}.operator"),
                &t.value,
                "value must be empty when `operator` is 'Exists'",
            ),
            other => errs.unsupported(format!("{f}.operator"), other, &["Equal", "Exists"]),
        }
        taint_effect(format!("{f}.effect"), &t.effect, true, errs);
    }
}

fn taint_effect(field: String, effect: &str, empty_ok: bool, errs: &mut Errs) {
    const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
    if effect.is_empty() && empty_ok {
        return;
    }
    if !EFFECTS.contains(&effect) {
        errs.unsupported(field, effect, EFFECTS);
    }
}

/// Checks a workload's selector and pod template, and that the selector
/// selects the template's labels.
fn workload(
    field: &str,
    selector: &Option<api::LabelSelector>,
    template: &mut Option<api::PodTemplateSpec>,
    errs: &mut Errs,
) {
    let parsed = match selector {
        None => {
            errs.required(format!("{field}.selector"));
            None
        }
        Some(s) if s.match_labels.is_empty() && s.match_expressions.is_empty() => {
            errs.invalid(
                format!("{field}.selector"),
                "{}",
                "empty selector is invalid for deployment",
            );
            None
        }
        Some(s) => {
            let exprs: Vec<(String, String, Vec<String>)> = s
                .match_expressions
                .iter()
                .map(|e| (e.key.clone(), e.operator.clone(), e.values.clone()))
                .collect();
            match LabelSelector::from_parts(&s.match_labels, &exprs) {
                Ok(sel) => Some(sel),
                Err(e) => {
                    errs.invalid(format!("{field}.selector"), "", &e.to_string());
                    None
                }
            }
        }
    };
    let Some(t) = template else {
        errs.required(format!("{field}.template"));
        return;
    };
    let meta = t.metadata.get_or_insert_default();
    labels(
        &format!("{field}.template.metadata.labels"),
        &meta.labels,
        errs,
    );
    if let Some(sel) = parsed
        && !sel.matches(&meta.labels)
    {
        let shown: Vec<String> = meta
            .labels
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        errs.invalid(
            format!("{field}.template.metadata.labels"),
            format!("map[{}]", shown.join(" ")),
            "`selector` does not match template `labels`",
        );
    }
    let spec = t.spec.get_or_insert_default();
    pod_spec(&format!("{field}.template.spec"), spec, errs);
    if spec.restart_policy != "Always" {
        errs.unsupported(
            format!("{field}.template.spec.restartPolicy"),
            &spec.restart_policy.clone(),
            &["Always"],
        );
    }
}

fn replicas(field: &str, r: &mut Option<i32>, errs: &mut Errs) {
    match *r {
        None => *r = Some(1),
        Some(n) => non_negative(errs, format!("{field}.replicas"), n.into()),
    }
}

fn replica_set(rs: &mut api::ReplicaSet, errs: &mut Errs) {
    let spec = rs.spec.get_or_insert_default();
    replicas("spec", &mut spec.replicas, errs);
    non_negative(
        errs,
        "spec.minReadySeconds".into(),
        spec.min_ready_seconds.into(),
    );
    workload("spec", &spec.selector, &mut spec.template, errs);
}

/// Parses an int-or-percent ("25%", "1") for maxSurge/maxUnavailable.
fn int_or_percent(field: String, v: &str, errs: &mut Errs) -> Option<(i64, bool)> {
    let (num, pct) = match v.strip_suffix('%') {
        Some(n) => (n, true),
        None => (v, false),
    };
    match num.parse::<i64>() {
        Ok(n) if n >= 0 && (!pct || n <= 100) => Some((n, pct)),
        _ => {
            errs.invalid(
                field,
                v,
                "must be a non-negative integer or a percentage between 0% and 100% (e.g. '25%')",
            );
            None
        }
    }
}

fn deployment(d: &mut api::Deployment, errs: &mut Errs) {
    let spec = d.spec.get_or_insert_default();
    replicas("spec", &mut spec.replicas, errs);
    non_negative(
        errs,
        "spec.minReadySeconds".into(),
        spec.min_ready_seconds.into(),
    );
    workload("spec", &spec.selector, &mut spec.template, errs);
    let strategy = spec.strategy.get_or_insert_default();
    if strategy.r#type.is_empty() {
        strategy.r#type = "RollingUpdate".into();
    }
    match strategy.r#type.as_str() {
        "RollingUpdate" => {
            let ru = strategy.rolling_update.get_or_insert_default();
            if ru.max_surge.is_empty() {
                ru.max_surge = "25%".into();
            }
            if ru.max_unavailable.is_empty() {
                ru.max_unavailable = "25%".into();
            }
            let surge = int_or_percent(
                "spec.strategy.rollingUpdate.maxSurge".into(),
                &ru.max_surge,
                errs,
            );
            let unavail = int_or_percent(
                "spec.strategy.rollingUpdate.maxUnavailable".into(),
                &ru.max_unavailable,
                errs,
            );
            if let (Some((0, _)), Some((0, _))) = (surge, unavail) {
                errs.invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    &ru.max_unavailable,
                    "may not be 0 when `maxSurge` is 0",
                );
            }
        }
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errs.add(
                    "spec.strategy.rollingUpdate",
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                );
            }
        }
        other => errs.unsupported("spec.strategy.type", other, &["Recreate", "RollingUpdate"]),
    }
    match spec.revision_history_limit {
        None => spec.revision_history_limit = Some(10),
        Some(n) => non_negative(errs, "spec.revisionHistoryLimit".into(), n.into()),
    }
    match spec.progress_deadline_seconds {
        None => spec.progress_deadline_seconds = Some(600),
        Some(n) if n <= spec.min_ready_seconds => errs.invalid(
            "spec.progressDeadlineSeconds",
            n,
            "must be greater than minReadySeconds",
        ),
        Some(_) => {}
    }
}

fn service(s: &mut api::Service, errs: &mut Errs) {
    let spec = s.spec.get_or_insert_default();
    if spec.r#type.is_empty() {
        spec.r#type = "ClusterIP".into();
    } else if spec.r#type != "ClusterIP" {
        errs.unsupported("spec.type", &spec.r#type.clone(), &["ClusterIP"]);
    }
    if spec.ports.is_empty() {
        errs.required("spec.ports");
    }
    let many = spec.ports.len() > 1;
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter_mut().enumerate() {
        let f = format!("spec.ports[{i}]");
        if p.name.is_empty() && many {
            errs.required(format!("{f}.name"));
        } else if !p.name.is_empty() {
            if let Err(why) = validate_dns1123_label(&p.name) {
                errs.invalid(format!("{f}.name"), &p.name, &why);
            }
            if !names.insert(p.name.clone()) {
                errs.add(
                    format!("{f}.name"),
                    format!("Duplicate value: {:?}", p.name),
                );
            }
        }
        port_number(format!("{f}.port"), p.port, errs);
        protocol(format!("{f}.protocol"), &mut p.protocol, errs);
        if p.target_port.is_empty() || p.target_port == "0" {
            p.target_port = p.port.to_string();
        }
        named_port(format!("{f}.targetPort"), &p.target_port, errs);
    }
    labels("spec.selector", &spec.selector, errs);
    if !spec.cluster_ip.is_empty()
        && spec.cluster_ip != "None"
        && spec.cluster_ip.parse::<std::net::IpAddr>().is_err()
    {
        errs.invalid(
            "spec.clusterIP",
            &spec.cluster_ip,
            "must be a valid IP address or \"None\"",
        );
    }
}

fn node(n: &mut api::Node, errs: &mut Errs) {
    let spec = n.spec.get_or_insert_default();
    if !spec.pod_cidr.is_empty() && !valid_cidr(&spec.pod_cidr) {
        errs.invalid(
            "spec.podCIDR",
            &spec.pod_cidr,
            "must be a valid CIDR (e.g. 10.244.1.0/24)",
        );
    }
    for (i, t) in spec.taints.iter().enumerate() {
        if let Err(why) = validate_label_key(&t.key) {
            errs.invalid(format!("spec.taints[{i}].key"), &t.key, &why);
        }
        taint_effect(format!("spec.taints[{i}].effect"), &t.effect, false, errs);
    }
    let status = n.status.get_or_insert_default();
    quantities("status.capacity", &mut status.capacity, errs);
    quantities("status.allocatable", &mut status.allocatable, errs);
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    len.parse::<u8>().is_ok_and(|l| l <= max)
}

fn data_keys<'a>(field: &str, keys: impl Iterator<Item = &'a String>, errs: &mut Errs) {
    for k in keys {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            && k != "."
            && k != "..";
        if !ok {
            errs.invalid(
                format!("{field}[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            );
        }
    }
}

fn config_map(c: &mut api::ConfigMap, errs: &mut Errs) {
    data_keys("data", c.data.keys(), errs);
    data_keys("binaryData", c.binary_data.keys(), errs);
    for k in c.binary_data.keys() {
        if c.data.contains_key(k) {
            errs.invalid(
                format!("data[{k}]"),
                k,
                "duplicate of key present in binaryData",
            );
        }
    }
}

fn secret(s: &mut api::Secret, errs: &mut Errs) {
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data.insert(k, v.into_bytes());
    }
    data_keys("data", s.data.keys(), errs);
    if s.r#type.is_empty() {
        s.r#type = "Opaque".into();
    }
}

fn event(e: &mut api::Event, errs: &mut Errs) {
    let involved = e.involved_object.get_or_insert_default();
    if involved.kind.is_empty() {
        errs.required("involvedObject.kind");
    }
    if involved.name.is_empty() {
        errs.required("involvedObject.name");
    }
    if e.r#type.is_empty() {
        e.r#type = "Normal".into();
    } else if !["Normal", "Warning"].contains(&e.r#type.as_str()) {
        errs.unsupported("type", &e.r#type.clone(), &["Normal", "Warning"]);
    }
    if e.count == 0 {
        e.count = 1;
    }
}

fn lease(l: &mut api::Lease, errs: &mut Errs) {
    let spec = l.spec.get_or_insert_default();
    if spec.lease_duration_seconds < 0 {
        errs.invalid(
            "spec.leaseDurationSeconds",
            spec.lease_duration_seconds.to_string(),
            "must be greater than or equal to 0",
        );
    }
    for (field, value) in [
        ("spec.acquireTime", &spec.acquire_time),
        ("spec.renewTime", &spec.renew_time),
    ] {
        if !value.is_empty() && rafter_proto::age::parse_rfc3339_utc(value).is_none() {
            errs.invalid(
                field,
                value,
                "must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z",
            );
        }
    }
}

fn endpoints(e: &mut api::Endpoints, errs: &mut Errs) {
    for (i, s) in e.subsets.iter_mut().enumerate() {
        for (j, a) in s
            .addresses
            .iter()
            .chain(s.not_ready_addresses.iter())
            .enumerate()
        {
            if a.ip.parse::<std::net::IpAddr>().is_err() {
                errs.invalid(
                    format!("subsets[{i}].addresses[{j}].ip"),
                    &a.ip,
                    "must be a valid IP address",
                );
            }
        }
        for (j, p) in s.ports.iter_mut().enumerate() {
            port_number(format!("subsets[{i}].ports[{j}].port"), p.port, errs);
            protocol(
                format!("subsets[{i}].ports[{j}].protocol"),
                &mut p.protocol,
                errs,
            );
        }
    }
}
