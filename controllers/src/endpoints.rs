//! The endpoints controller: for each Service with a selector, an Endpoints
//! object of the same name listing the pods that match it — ready ones in
//! `addresses`, not-ready ones in `notReadyAddresses` — with the target
//! ports resolved per pod (a named targetPort is looked up among the pod's
//! container ports, so pods that number it differently land in different
//! subsets, as in Kubernetes).
//!
//! Written only when it changes; deleted with its Service. Services without
//! a selector are left alone (their Endpoints are the user's).

use std::collections::BTreeMap;
use std::sync::Arc;

use rafter_client::informer::{Cache, Event, Informers};
use rafter_client::{Client, DeleteOptions, Error};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio_util::sync::CancellationToken;

use crate::informer_events::{forward, object};
use crate::runtime::{self, Action, Key, Queue, Reconciler};

fn pod_ready(pod: &api::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

fn protocol_or_tcp(p: &str) -> &str {
    if p.is_empty() { "TCP" } else { p }
}

/// The container port a Service port targets on `pod`: the number itself,
/// or the pod's container port of that name and protocol.
pub fn resolve_target_port(port: &api::ServicePort, pod: &api::Pod) -> Option<i32> {
    let target = if port.target_port.is_empty() {
        port.port.to_string()
    } else {
        port.target_port.clone()
    };
    if let Ok(n) = target.parse::<i32>() {
        return Some(n);
    }
    let protocol = protocol_or_tcp(&port.protocol);
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .find(|p| p.name == target && protocol_or_tcp(&p.protocol) == protocol)
        .map(|p| p.container_port)
}

/// Whether a pod belongs in its Service's endpoints at all: selected,
/// not being deleted, not finished, and given an IP.
fn serves(selector: &BTreeMap<String, String>, pod: &api::Pod) -> bool {
    let m = pod.metadata();
    let status = pod.status.as_ref();
    let phase = status.map(|s| s.phase.as_str()).unwrap_or("");
    selector.iter().all(|(k, v)| m.labels.get(k) == Some(v))
        && m.deletion_timestamp.is_empty()
        && phase != "Succeeded"
        && phase != "Failed"
        && status.is_some_and(|s| !s.pod_ip.is_empty())
}

/// The subsets of `service`'s Endpoints, given the pods of its namespace.
/// Deterministic (sorted), so equal inputs give equal objects.
pub fn subsets(service: &api::Service, pods: &[api::Pod]) -> Vec<api::EndpointSubset> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    if spec.selector.is_empty() {
        return Vec::new();
    }
    let namespace = &service.metadata().namespace;
    // Pods with the same resolved ports share a subset.
    let mut groups: BTreeMap<Vec<(String, i32, String)>, api::EndpointSubset> = BTreeMap::new();
    for pod in pods {
        if &pod.metadata().namespace != namespace || !serves(&spec.selector, pod) {
            continue;
        }
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .iter()
            .filter_map(|p| {
                resolve_target_port(p, pod)
                    .map(|n| (p.name.clone(), n, protocol_or_tcp(&p.protocol).to_string()))
            })
            .collect();
        if ports.is_empty() && !spec.ports.is_empty() {
            continue; // none of the Service's ports exists on this pod
        }
        let m = pod.metadata();
        let address = api::EndpointAddress {
            ip: pod
                .status
                .as_ref()
                .map(|s| s.pod_ip.clone())
                .unwrap_or_default(),
            hostname: String::new(),
            node_name: pod
                .spec
                .as_ref()
                .map(|s| s.node_name.clone())
                .unwrap_or_default(),
            target_ref: Some(api::ObjectReference {
                kind: "Pod".into(),
                namespace: m.namespace.clone(),
                name: m.name.clone(),
                uid: m.uid.clone(),
                ..Default::default()
            }),
        };
        let subset = groups
            .entry(ports.clone())
            .or_insert_with(|| api::EndpointSubset {
                ports: ports
                    .iter()
                    .map(|(name, port, protocol)| api::EndpointPort {
                        name: name.clone(),
                        port: *port,
                        protocol: protocol.clone(),
                    })
                    .collect(),
                ..Default::default()
            });
        if pod_ready(pod) {
            subset.addresses.push(address);
        } else {
            subset.not_ready_addresses.push(address);
        }
    }
    let by_ip = |a: &api::EndpointAddress, b: &api::EndpointAddress| {
        (
            a.ip.as_str(),
            a.target_ref.as_ref().map(|r| r.name.as_str()),
        )
            .cmp(&(
                b.ip.as_str(),
                b.target_ref.as_ref().map(|r| r.name.as_str()),
            ))
    };
    groups
        .into_values()
        .map(|mut s| {
            s.addresses.sort_by(by_ip);
            s.not_ready_addresses.sort_by(by_ip);
            s
        })
        .collect()
}

/// The endpoints controller.
pub struct EndpointsController {
    client: Client,
    services: Cache<api::Service>,
    pods: Cache<api::Pod>,
    endpoints: Cache<api::Endpoints>,
}

impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &Key) -> Result<Action, Error> {
        let (namespace, name) = key;
        let existing = self.endpoints.get(namespace, name);
        let Some(service) = self.services.get(namespace, name) else {
            if existing.is_some() {
                match self
                    .client
                    .delete_object::<api::Endpoints>(namespace, name, &DeleteOptions::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_reason("NotFound") => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Action::Done);
        };
        if service.spec.as_ref().is_none_or(|s| s.selector.is_empty()) {
            return Ok(Action::Done);
        }
        let pods: Vec<api::Pod> = self
            .pods
            .list()
            .into_iter()
            .filter(|p| &p.metadata().namespace == namespace)
            .collect();
        let wanted = subsets(&service, &pods);
        match existing {
            Some(e) if e.subsets == wanted => {}
            Some(mut e) => {
                e.subsets = wanted;
                self.client.update(&e).await?;
            }
            None => {
                let mut e = api::Endpoints {
                    subsets: wanted,
                    ..Default::default()
                };
                let m = e.metadata_mut();
                m.namespace = namespace.clone();
                m.name = name.clone();
                m.labels = service.metadata().labels.clone();
                self.client.create(&e).await?;
            }
        }
        Ok(Action::Done)
    }
}

/// Runs the endpoints controller until `shutdown`.
pub async fn run(client: Client, informers: &Informers, shutdown: CancellationToken) {
    let (services, service_events) = informers.start::<api::Service>("", "");
    let (pods, pod_events) = informers.start::<api::Pod>("", "");
    let (endpoints, endpoints_events) = informers.start::<api::Endpoints>("", "");
    let queue = Queue::new();
    let q = queue.clone();
    forward(service_events, shutdown.clone(), move |e| {
        q.add(runtime::key_of(object(&e)));
    });
    let q = queue.clone();
    forward(endpoints_events, shutdown.clone(), move |e| {
        q.add(runtime::key_of(object(&e)));
    });
    // A pod's change may concern any Service of its namespace (it may
    // have gained or lost labels): queue them all; reconcile sorts it out.
    let q = queue.clone();
    let svcs = services.clone();
    forward(pod_events, shutdown.clone(), move |e: Event<api::Pod>| {
        let ns = &object(&e).metadata().namespace;
        for s in svcs.list() {
            if &s.metadata().namespace == ns {
                q.add(runtime::key_of(&s));
            }
        }
    });
    tokio::select! {
        _ = async {
            services.wait_synced().await;
            pods.wait_synced().await;
            endpoints.wait_synced().await;
        } => {}
        _ = shutdown.cancelled() => return,
    }
    let controller = EndpointsController {
        client,
        services,
        pods,
        endpoints,
    };
    runtime::run(Arc::new(controller), queue, 4, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(selector: &[(&str, &str)], ports: &[(&str, i32, &str)]) -> api::Service {
        let mut s = api::Service {
            spec: Some(api::ServiceSpec {
                selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ports: ports
                    .iter()
                    .map(|(name, port, target)| api::ServicePort {
                        name: name.to_string(),
                        port: *port,
                        target_port: target.to_string(),
                        protocol: "TCP".into(),
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metadata_mut().namespace = "default".into();
        s.metadata_mut().name = "web".into();
        s
    }

    fn pod(name: &str, app: &str, ip: &str, ready: bool, http_port: i32) -> api::Pod {
        let mut p = api::Pod {
            spec: Some(api::PodSpec {
                node_name: "n1".into(),
                containers: vec![api::Container {
                    name: "c".into(),
                    ports: vec![api::ContainerPort {
                        name: "http".into(),
                        container_port: http_port,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(api::PodStatus {
                phase: "Running".into(),
                pod_ip: ip.into(),
                conditions: vec![api::Condition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = p.metadata_mut();
        m.namespace = "default".into();
        m.name = name.into();
        m.uid = format!("uid-{name}");
        m.labels.insert("app".into(), app.into());
        p
    }

    fn ips(addrs: &[api::EndpointAddress]) -> Vec<&str> {
        addrs.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_matching_pods_are_listed_apart() {
        let svc = service(&[("app", "web")], &[("", 80, "8080")]);
        let mut gone = pod("gone", "web", "10.244.0.9", true, 8080);
        gone.metadata_mut().deletion_timestamp = "2026-11-27T20:00:00Z".into();
        let mut no_ip = pod("new", "web", "", false, 8080);
        no_ip.status.as_mut().unwrap().pod_ip.clear();
        let mut elsewhere = pod("other-ns", "web", "10.244.0.8", true, 8080);
        elsewhere.metadata_mut().namespace = "shop".into();
        let pods = vec![
            pod("b", "web", "10.244.0.3", true, 8080),
            pod("a", "web", "10.244.0.2", true, 8080),
            pod("slow", "web", "10.244.0.4", false, 8080),
            pod("db", "db", "10.244.0.5", true, 8080),
            gone,
            no_ip,
            elsewhere,
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 1);
        assert_eq!(ips(&s[0].addresses), ["10.244.0.2", "10.244.0.3"]);
        assert_eq!(ips(&s[0].not_ready_addresses), ["10.244.0.4"]);
        assert_eq!(s[0].ports.len(), 1);
        assert_eq!(s[0].ports[0].port, 8080);
        assert_eq!(s[0].ports[0].protocol, "TCP");
        let a = &s[0].addresses[0];
        assert_eq!(a.node_name, "n1");
        let r = a.target_ref.as_ref().unwrap();
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
            ("Pod", "a", "uid-a")
        );
    }

    #[test]
    fn a_named_target_port_is_resolved_per_pod_into_subsets() {
        let svc = service(&[("app", "web")], &[("web", 80, "http")]);
        let pods = vec![
            pod("a", "web", "10.244.0.2", true, 8080),
            pod("b", "web", "10.244.0.3", true, 9090),
            pod("c", "web", "10.244.0.4", false, 8080),
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 2);
        let by_port: BTreeMap<i32, &api::EndpointSubset> =
            s.iter().map(|x| (x.ports[0].port, x)).collect();
        assert_eq!(ips(&by_port[&8080].addresses), ["10.244.0.2"]);
        assert_eq!(ips(&by_port[&8080].not_ready_addresses), ["10.244.0.4"]);
        assert_eq!(ips(&by_port[&9090].addresses), ["10.244.0.3"]);
        assert_eq!(by_port[&9090].ports[0].name, "web");
    }

    #[test]
    fn a_pod_without_the_named_port_is_left_out() {
        let svc = service(&[("app", "web")], &[("web", 80, "metrics")]);
        let pods = vec![pod("a", "web", "10.244.0.2", true, 8080)];
        assert!(subsets(&svc, &pods).is_empty());
    }

    #[test]
    fn a_service_without_selector_selects_nothing() {
        let svc = service(&[], &[("", 80, "80")]);
        assert!(subsets(&svc, &[pod("a", "web", "10.244.0.2", true, 80)]).is_empty());
    }

    #[test]
    fn subsets_do_not_depend_on_pod_order() {
        let svc = service(&[("app", "web")], &[("", 80, "8080")]);
        let mut pods = vec![
            pod("a", "web", "10.244.0.2", true, 8080),
            pod("b", "web", "10.244.0.3", true, 8080),
            pod("c", "web", "10.244.0.1", false, 8080),
        ];
        let first = subsets(&svc, &pods);
        pods.reverse();
        assert_eq!(subsets(&svc, &pods), first);
    }
}
