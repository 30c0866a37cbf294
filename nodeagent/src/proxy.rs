//! The service proxy: a connection to a Service's `clusterIP:port` reaches
//! one of its ready endpoints.
//!
//! The mechanism is a user-space TCP proxy, with no iptables rules:
//!
//! - the agent puts every clusterIP, as a /32, on a bridge interface of its
//!   own with no ports ([`interface_name`]): the host then owns the address,
//!   so a connection from the host is delivered locally, and so is one from
//!   a pod (routed to its gateway, the host);
//! - it listens on each service port of each clusterIP with `SO_REUSEPORT`;
//! - each accepted connection is joined to the next ready endpoint in
//!   round-robin order; an endpoint that refuses, or does not accept within
//!   [`CONNECT_TIMEOUT`], is skipped for the next one.
//!
//! Several agents on one host (`rafter local up`, the tests) each own an
//! interface carrying the same addresses and all listen with
//! `SO_REUSEPORT`: the kernel spreads connections over them, and a killed
//! agent's sockets go away with it, leaving the others to serve.
//!
//! What it costs: every byte goes through the agent (one copy in, one out,
//! per direction), which adds a little latency and CPU per connection where
//! iptables DNAT would not; the endpoint sees the host's address as the
//! client's. What it buys: skipping endpoints that refuse, no dependency on
//! the host's iptables flavour, and nothing to undo but one interface. Only
//! TCP ports are proxied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rafter_client::informer::{Cache, Event};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long an endpoint may take to accept before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the proxy re-applies its rules even when nothing changed
/// (an address removed by hand, a listener that could not bind).
const RESYNC: Duration = Duration::from_secs(10);

/// The interface that carries a node's clusterIPs: `rft` and a hash of the
/// node name (interface names are at most 15 bytes).
pub fn interface_name(node: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("rft{h:08x}")
}

/// The proxy rules wanted: each `clusterIP:port` (TCP) and the ready
/// endpoints behind it, in a stable order.
pub fn desired(
    services: &[api::Service],
    endpoints: &[api::Endpoints],
) -> BTreeMap<SocketAddrV4, Vec<SocketAddr>> {
    let by_name: HashMap<(&str, &str), &api::Endpoints> = endpoints
        .iter()
        .map(|e| {
            let m = e.metadata();
            ((m.namespace.as_str(), m.name.as_str()), e)
        })
        .collect();
    let mut out = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Ok(ip) = spec.cluster_ip.parse::<Ipv4Addr>() else {
            // Not allocated yet, headless ("None") or IPv6: nothing to proxy.
            continue;
        };
        let m = svc.metadata();
        let eps = by_name.get(&(m.namespace.as_str(), m.name.as_str()));
        for sp in &spec.ports {
            if !is_tcp(&sp.protocol) {
                continue;
            }
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let mut backends = BTreeSet::new();
            for subset in eps.map(|e| e.subsets.as_slice()).unwrap_or_default() {
                let Some(target) = subset
                    .ports
                    .iter()
                    .find(|p| p.name == sp.name && is_tcp(&p.protocol))
                    .and_then(|p| u16::try_from(p.port).ok())
                else {
                    continue;
                };
                for a in &subset.addresses {
                    if let Ok(ip) = a.ip.parse::<std::net::IpAddr>() {
                        backends.insert(SocketAddr::new(ip, target));
                    }
                }
            }
            out.insert(SocketAddrV4::new(ip, port), backends.into_iter().collect());
        }
    }
    out
}

fn is_tcp(protocol: &str) -> bool {
    protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP")
}

/// The endpoints of one frontend and the round-robin position.
#[derive(Default)]
struct Backends {
    list: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Backends {
    fn set(&self, list: Vec<SocketAddr>) {
        *self.list.write().unwrap_or_else(|e| e.into_inner()) = list;
    }

    /// The endpoints in the order this connection should try them: all of
    /// them, starting at the next one in turn.
    fn order(&self) -> Vec<SocketAddr> {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % list.len();
        list[start..]
            .iter()
            .chain(&list[..start])
            .copied()
            .collect()
    }
}

/// A listening `clusterIP:port`.
struct Frontend {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

/// The proxy of one node: its interface, listeners and endpoints.
pub struct ServiceProxy {
    interface: String,
    frontends: HashMap<SocketAddrV4, Frontend>,
    interface_ready: bool,
}

/// Proxy failures (logged; the proxy retries on its next sync).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("`ip {args}` failed: {why}")]
    Ip { args: String, why: String },
}

impl ServiceProxy {
    pub fn new(node: &str) -> Self {
        Self {
            interface: interface_name(node),
            frontends: HashMap::new(),
            interface_ready: false,
        }
    }

    /// Makes the interface, addresses and listeners match `want`.
    pub async fn apply(
        &mut self,
        want: &BTreeMap<SocketAddrV4, Vec<SocketAddr>>,
    ) -> Result<(), ProxyError> {
        if !self.interface_ready {
            ensure_interface(&self.interface).await?;
            self.interface_ready = true;
        }
        let ips: BTreeSet<Ipv4Addr> = want.keys().map(|a| *a.ip()).collect();
        let have = addresses(&self.interface).await?;
        for ip in ips.difference(&have) {
            ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", &self.interface]).await?;
        }
        // Listeners go before their address, or accepted connections of a
        // removed service would linger.
        self.frontends.retain(|addr, f| {
            let keep = want.contains_key(addr);
            if !keep {
                f.task.abort();
                tracing::info!(frontend = %addr, "service port no longer proxied");
            }
            keep
        });
        for ip in have.difference(&ips) {
            ip_cmd(&["addr", "del", &format!("{ip}/32"), "dev", &self.interface]).await?;
        }
        for (addr, list) in want {
            if let Some(f) = self.frontends.get(addr) {
                f.backends.set(list.clone());
                continue;
            }
            match listen(*addr) {
                Ok(listener) => {
                    let backends = Arc::new(Backends::default());
                    backends.set(list.clone());
                    let task = tokio::spawn(serve(*addr, listener, backends.clone()));
                    tracing::info!(frontend = %addr, endpoints = list.len(), "proxying service port");
                    self.frontends.insert(*addr, Frontend { backends, task });
                }
                // Retried on the next sync.
                Err(e) => {
                    tracing::warn!(frontend = %addr, error = %e, "cannot listen on the service port")
                }
            }
        }
        Ok(())
    }

    /// Stops every listener and removes the interface.
    pub async fn shutdown(&mut self) {
        for (_, f) in self.frontends.drain() {
            f.task.abort();
        }
        if self.interface_ready
            && let Err(e) = ip_cmd(&["link", "del", &self.interface]).await
        {
            tracing::warn!(error = %e, "proxy interface not removed");
        }
    }
}

fn listen(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    // Every agent on this host listens on the same clusterIP:port.
    socket.set_reuseport(true)?;
    socket.bind(SocketAddr::V4(addr))?;
    socket.listen(1024)
}

async fn serve(frontend: SocketAddrV4, listener: TcpListener, backends: Arc<Backends>) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%frontend, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            let Some((server, endpoint)) = connect_any(&backends.order()).await else {
                // Dropping the connection: no ready endpoint accepted.
                tracing::debug!(%frontend, %peer, "no endpoint accepted the connection");
                return;
            };
            tracing::trace!(%frontend, %peer, %endpoint, "proxying");
            let (mut client, mut server) = (client, server);
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

/// Connects to the first endpoint of `order` that accepts.
async fn connect_any(order: &[SocketAddr]) -> Option<(TcpStream, SocketAddr)> {
    for &endpoint in order {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(s)) => return Some((s, endpoint)),
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "endpoint refused; trying the next")
            }
            Err(_) => tracing::debug!(%endpoint, "endpoint did not answer; trying the next"),
        }
    }
    None
}

async fn ip_cmd(args: &[&str]) -> Result<String, ProxyError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| ProxyError::Ip {
            args: args.join(" "),
            why: format!("{e} (is iproute2 installed?)"),
        })?;
    if !out.status.success() {
        return Err(ProxyError::Ip {
            args: args.join(" "),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the interface (a bridge with no ports, which only holds
/// addresses) unless it exists, and brings it up.
async fn ensure_interface(name: &str) -> Result<(), ProxyError> {
    if ip_cmd(&["link", "show", "dev", name]).await.is_err() {
        ip_cmd(&["link", "add", name, "type", "bridge"]).await?;
    }
    ip_cmd(&["link", "set", name, "up"]).await?;
    Ok(())
}

/// The IPv4 addresses on `interface`.
async fn addresses(interface: &str) -> Result<BTreeSet<Ipv4Addr>, ProxyError> {
    let out = ip_cmd(&["-4", "-o", "addr", "show", "dev", interface]).await?;
    Ok(parse_addresses(&out))
}

/// Parses `ip -4 -o addr show` lines (`6: rft… inet 10.96.0.1/32 scope …`).
fn parse_addresses(out: &str) -> BTreeSet<Ipv4Addr> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The informers the proxy follows.
pub struct Watched {
    pub services: Cache<api::Service>,
    pub service_events: mpsc::Receiver<Event<api::Service>>,
    pub endpoints: Cache<api::Endpoints>,
    pub endpoint_events: mpsc::Receiver<Event<api::Endpoints>>,
}

/// Runs the proxy of `node` until `shutdown`: applies the rules at once
/// when Services or Endpoints change (and every [`RESYNC`]), then removes
/// its interface.
pub async fn run(watched: Watched, node: String, shutdown: CancellationToken) {
    let Watched {
        services,
        mut service_events,
        endpoints,
        mut endpoint_events,
    } = watched;
    tokio::select! {
        _ = async { services.wait_synced().await; endpoints.wait_synced().await } => {}
        _ = shutdown.cancelled() => return,
    }
    let mut proxy = ServiceProxy::new(&node);
    let mut applied = None;
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The interval's first tick is at once: the rules are applied on start.
        let periodic = tokio::select! {
            _ = tick.tick() => true,
            _ = service_events.recv() => false,
            _ = endpoint_events.recv() => false,
            _ = shutdown.cancelled() => break,
        };
        // Take every change already queued before applying once.
        while service_events.try_recv().is_ok() {}
        while endpoint_events.try_recv().is_ok() {}
        let want = desired(&services.list(), &endpoints.list());
        if !periodic && applied.as_ref() == Some(&want) {
            continue;
        }
        match proxy.apply(&want).await {
            Ok(()) => applied = Some(want),
            Err(e) => {
                tracing::warn!(error = %e, "service proxy rules not applied; retrying");
                applied = None;
            }
        }
    }
    proxy.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> api::Service {
        api::Service {
            metadata: Some(api::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(api::ServiceSpec {
                cluster_ip: ip.into(),
                ports: ports
                    .iter()
                    .map(|(n, p, proto)| api::ServicePort {
                        name: (*n).into(),
                        port: *p,
                        protocol: (*proto).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn endpoints(
        name: &str,
        ready: &[&str],
        not_ready: &[&str],
        ports: &[(&str, i32)],
    ) -> api::Endpoints {
        let addr = |ip: &&str| api::EndpointAddress {
            ip: (*ip).into(),
            ..Default::default()
        };
        api::Endpoints {
            metadata: Some(api::ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            subsets: vec![api::EndpointSubset {
                addresses: ready.iter().map(addr).collect(),
                not_ready_addresses: not_ready.iter().map(addr).collect(),
                ports: ports
                    .iter()
                    .map(|(n, p)| api::EndpointPort {
                        name: (*n).into(),
                        port: *p,
                        protocol: "TCP".into(),
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_service_port_maps_to_the_ready_endpoints_on_its_named_target_port() {
        let svcs = [service(
            "web",
            "10.96.0.5",
            &[("http", 80, "TCP"), ("metrics", 9090, "")],
        )];
        let eps = [endpoints(
            "web",
            &["10.244.1.3", "10.244.0.2"],
            &["10.244.0.9"],
            &[("http", 8080), ("metrics", 9100)],
        )];
        let want = desired(&svcs, &eps);
        assert_eq!(
            want,
            BTreeMap::from([
                (
                    "10.96.0.5:80".parse().unwrap(),
                    vec![sa("10.244.0.2:8080"), sa("10.244.1.3:8080")]
                ),
                (
                    "10.96.0.5:9090".parse().unwrap(),
                    vec![sa("10.244.0.2:9100"), sa("10.244.1.3:9100")]
                ),
            ])
        );
    }

    #[test]
    fn a_service_without_endpoints_listens_with_none_and_headless_or_udp_ones_are_skipped() {
        let svcs = [
            service("empty", "10.96.0.6", &[("", 80, "TCP")]),
            service("headless", "None", &[("", 80, "TCP")]),
            service("pending", "", &[("", 80, "TCP")]),
            service("dns", "10.96.0.10", &[("", 53, "UDP")]),
        ];
        let want = desired(&svcs, &[]);
        assert_eq!(
            want,
            BTreeMap::from([("10.96.0.6:80".parse().unwrap(), vec![])])
        );
    }

    #[test]
    fn endpoints_of_another_namespace_are_not_used() {
        let svcs = [service("web", "10.96.0.5", &[("", 80, "TCP")])];
        let mut eps = endpoints("web", &["10.244.0.2"], &[], &[("", 80)]);
        eps.metadata.as_mut().unwrap().namespace = "other".into();
        let want = desired(&svcs, &[eps]);
        assert_eq!(want.values().next().unwrap(), &Vec::<SocketAddr>::new());
    }

    #[test]
    fn connections_take_the_endpoints_in_turn() {
        let b = Backends::default();
        b.set(vec![
            sa("10.0.0.1:80"),
            sa("10.0.0.2:80"),
            sa("10.0.0.3:80"),
        ]);
        let firsts: Vec<SocketAddr> = (0..6).map(|_| b.order()[0]).collect();
        assert_eq!(
            firsts,
            [
                "10.0.0.1:80",
                "10.0.0.2:80",
                "10.0.0.3:80",
                "10.0.0.1:80",
                "10.0.0.2:80",
                "10.0.0.3:80"
            ]
            .map(sa)
        );
        // Every endpoint is in each order, so a refusing one is skipped.
        assert_eq!(b.order().len(), 3);
    }

    #[tokio::test]
    async fn a_refusing_endpoint_is_skipped_for_the_next() {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        // A port nothing listens on: bind, note, close.
        let down_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (_, chosen) = connect_any(&[down_addr, up_addr])
            .await
            .expect("one accepts");
        assert_eq!(chosen, up_addr);
        assert!(connect_any(&[down_addr]).await.is_none());
    }

    #[test]
    fn interface_names_fit_linux_and_differ_per_node() {
        let a = interface_name("a-very-long-node-name.example.com");
        assert!(a.len() <= 15, "{a}");
        assert_ne!(interface_name("node-1"), interface_name("node-2"));
        assert_eq!(interface_name("node-1"), interface_name("node-1"));
    }

    #[test]
    fn parses_ip_addr_output() {
        let out = "6: rft1a2b3c4d    inet 10.96.0.1/32 scope global rft1a2b3c4d\\       valid_lft forever preferred_lft forever\n\
                   6: rft1a2b3c4d    inet 10.96.0.7/32 scope global rft1a2b3c4d\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_addresses(out),
            BTreeSet::from(["10.96.0.1".parse().unwrap(), "10.96.0.7".parse().unwrap()])
        );
    }
}
