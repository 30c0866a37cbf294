//! The service proxy: a connection to a Service's `clusterIP:port` reaches
//! one of its ready endpoints.
//!
//! The mechanism is a user-space proxy, with no iptables rules:
//!
//! - the agent puts every clusterIP, as a /32, on a bridge interface of its
//!   own with no ports ([`interface_name`]): the host then owns the address,
//!   so a connection from the host is delivered locally, and so is one from
//!   a pod (routed to its gateway, the host);
//! - it listens on each service port of each clusterIP with `SO_REUSEPORT`;
//! - TCP: each accepted connection is joined to the next ready endpoint in
//!   round-robin order; an endpoint that refuses, or does not accept within
//!   [`CONNECT_TIMEOUT`], is skipped for the next one;
//! - UDP: each client address is a flow, given the next ready endpoint in
//!   round-robin order; its datagrams go there and the endpoint's replies
//!   come back from the clusterIP:port. A flow ends after [`UDP_IDLE`]
//!   without a reply, or when the endpoint's port is closed (ICMP port
//!   unreachable): the client's next datagram starts a flow to the next
//!   endpoint.
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
//! the host's iptables flavour, and nothing to undo but one interface. TCP
//! and UDP ports are proxied (SCTP ones are not).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rafter_client::informer::{Cache, Events};
use rafter_proto::api;
use rafter_proto::object::Object;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long an endpoint may take to accept before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a UDP flow lives without a reply from its endpoint (the
/// kernel's conntrack keeps unreplied UDP for 30 s too).
pub const UDP_IDLE: Duration = Duration::from_secs(30);
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

/// The transport of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// A ServicePort's protocol (empty: TCP); None for one not proxied.
    fn parse(protocol: &str) -> Option<Self> {
        if protocol.is_empty() || protocol.eq_ignore_ascii_case("TCP") {
            Some(Protocol::Tcp)
        } else if protocol.eq_ignore_ascii_case("UDP") {
            Some(Protocol::Udp)
        } else {
            None
        }
    }
}

/// A proxied service port: its protocol and `clusterIP:port`.
pub type Frontend = (Protocol, SocketAddrV4);

/// The proxy rules wanted: each service port (`clusterIP:port`, TCP or
/// UDP) and the ready endpoints behind it, in a stable order.
pub fn desired(
    services: &[api::Service],
    endpoints: &[api::Endpoints],
) -> BTreeMap<Frontend, Vec<SocketAddr>> {
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
            let Some(protocol) = Protocol::parse(&sp.protocol) else {
                continue;
            };
            let Ok(port) = u16::try_from(sp.port) else {
                continue;
            };
            let mut backends = BTreeSet::new();
            for subset in eps.map(|e| e.subsets.as_slice()).unwrap_or_default() {
                let Some(target) = subset
                    .ports
                    .iter()
                    .find(|p| p.name == sp.name && Protocol::parse(&p.protocol) == Some(protocol))
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
            out.insert(
                (protocol, SocketAddrV4::new(ip, port)),
                backends.into_iter().collect(),
            );
        }
    }
    out
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

/// A listening service port.
struct Listener {
    backends: Arc<Backends>,
    task: JoinHandle<()>,
}

/// The proxy of one node: its interface, listeners and endpoints.
pub struct ServiceProxy {
    interface: String,
    frontends: HashMap<Frontend, Listener>,
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
        want: &BTreeMap<Frontend, Vec<SocketAddr>>,
    ) -> Result<(), ProxyError> {
        if !self.interface_ready {
            ensure_interface(&self.interface).await?;
            self.interface_ready = true;
        }
        let ips: BTreeSet<Ipv4Addr> = want.keys().map(|(_, a)| *a.ip()).collect();
        let have = addresses(&self.interface).await?;
        for ip in ips.difference(&have) {
            ip_cmd(&["addr", "add", &format!("{ip}/32"), "dev", &self.interface]).await?;
        }
        // Listeners go before their address, or accepted connections of a
        // removed service would linger.
        self.frontends.retain(|key, f| {
            let keep = want.contains_key(key);
            if !keep {
                f.task.abort();
                tracing::info!(frontend = %key.1, protocol = ?key.0, "service port no longer proxied");
            }
            keep
        });
        for ip in have.difference(&ips) {
            ip_cmd(&["addr", "del", &format!("{ip}/32"), "dev", &self.interface]).await?;
        }
        for (key, list) in want {
            if let Some(f) = self.frontends.get(key) {
                f.backends.set(list.clone());
                continue;
            }
            let (protocol, addr) = *key;
            let backends = Arc::new(Backends::default());
            backends.set(list.clone());
            let task = match protocol {
                Protocol::Tcp => {
                    listen(addr).map(|l| tokio::spawn(serve(addr, l, backends.clone())))
                }
                Protocol::Udp => {
                    listen_udp(addr).map(|s| tokio::spawn(serve_udp(addr, s, backends.clone())))
                }
            };
            match task {
                Ok(task) => {
                    tracing::info!(frontend = %addr, ?protocol, endpoints = list.len(), "proxying service port");
                    self.frontends.insert(*key, Listener { backends, task });
                }
                // Retried on the next sync.
                Err(e) => {
                    tracing::warn!(frontend = %addr, ?protocol, error = %e, "cannot listen on the service port")
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

/// A UDP socket bound to `addr` with `SO_REUSEPORT`.
fn listen_udp(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    // Every agent on this host binds the same clusterIP:port; the kernel
    // keeps each client address on one of them.
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    UdpSocket::from_std(socket.into())
}

/// The UDP flows of one frontend: the client's address and the socket
/// connected to its endpoint.
type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

async fn serve_udp(frontend: SocketAddrV4, socket: UdpSocket, backends: Arc<Backends>) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%frontend, error = %e, "receive failed");
                continue;
            }
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let upstream = match existing {
            Some(u) => u,
            None => match open_flow(&socket, &flows, client, &backends).await {
                Some(u) => u,
                // No ready endpoint: the datagram is dropped.
                None => continue,
            },
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            tracing::debug!(%frontend, %client, error = %e, "datagram not forwarded");
            end_flow(&flows, client, &upstream);
        }
    }
}

/// Starts a flow for `client` to the next endpoint in turn, with the task
/// that sends its replies back from the frontend.
async fn open_flow(
    frontend: &Arc<UdpSocket>,
    flows: &Flows,
    client: SocketAddr,
    backends: &Backends,
) -> Option<Arc<UdpSocket>> {
    let endpoint = *backends.order().first()?;
    let upstream = async {
        let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
        s.connect(endpoint).await?;
        std::io::Result::Ok(Arc::new(s))
    }
    .await
    .inspect_err(|e| tracing::debug!(%endpoint, error = %e, "cannot open a UDP flow"))
    .ok()?;
    flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(client, upstream.clone());
    let (frontend, flows, reply) = (frontend.clone(), flows.clone(), upstream.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match tokio::time::timeout(UDP_IDLE, reply.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let _ = frontend.send_to(&buf[..n], client).await;
                }
                // The endpoint's port is closed (ICMP port unreachable):
                // the client's next datagram goes to the next endpoint.
                Ok(Err(e)) => {
                    tracing::debug!(%endpoint, %client, error = %e, "UDP flow ended");
                    break;
                }
                Err(_) => break, // idle
            }
        }
        end_flow(&flows, client, &reply);
    });
    Some(upstream)
}

/// Forgets `client`'s flow if it is still `upstream`.
fn end_flow(flows: &Flows, client: SocketAddr, upstream: &Arc<UdpSocket>) {
    let mut flows = flows.lock().unwrap_or_else(|e| e.into_inner());
    if flows.get(&client).is_some_and(|u| Arc::ptr_eq(u, upstream)) {
        flows.remove(&client);
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
    pub service_events: Events<api::Service>,
    pub endpoints: Cache<api::Endpoints>,
    pub endpoint_events: Events<api::Endpoints>,
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
                    (Protocol::Tcp, "10.96.0.5:80".parse().unwrap()),
                    vec![sa("10.244.0.2:8080"), sa("10.244.1.3:8080")]
                ),
                (
                    (Protocol::Tcp, "10.96.0.5:9090".parse().unwrap()),
                    vec![sa("10.244.0.2:9100"), sa("10.244.1.3:9100")]
                ),
            ])
        );
    }

    #[test]
    fn a_service_without_endpoints_listens_with_none_and_headless_or_sctp_ones_are_skipped() {
        let svcs = [
            service("empty", "10.96.0.6", &[("", 80, "TCP")]),
            service("headless", "None", &[("", 80, "TCP")]),
            service("pending", "", &[("", 80, "TCP")]),
            service("sig", "10.96.0.11", &[("", 3868, "SCTP")]),
        ];
        let want = desired(&svcs, &[]);
        assert_eq!(
            want,
            BTreeMap::from([((Protocol::Tcp, "10.96.0.6:80".parse().unwrap()), vec![])])
        );
    }

    #[test]
    fn udp_ports_map_to_the_endpoints_udp_port_of_the_same_name() {
        let svcs = [service(
            "dns",
            "10.96.0.10",
            &[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        )];
        let mut eps = endpoints("dns", &["10.244.0.4"], &[], &[("dns-tcp", 5353)]);
        eps.subsets[0].ports.push(api::EndpointPort {
            name: "dns".into(),
            port: 5300,
            protocol: "UDP".into(),
        });
        let want = desired(&svcs, &[eps]);
        assert_eq!(
            want,
            BTreeMap::from([
                (
                    (Protocol::Tcp, "10.96.0.10:53".parse().unwrap()),
                    vec![sa("10.244.0.4:5353")]
                ),
                (
                    (Protocol::Udp, "10.96.0.10:53".parse().unwrap()),
                    vec![sa("10.244.0.4:5300")]
                ),
            ])
        );
    }

    /// A UDP endpoint that answers each datagram with its name.
    async fn udp_echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let reply = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                let _ = s.send_to(reply.as_bytes(), from).await;
            }
        });
        (addr, task)
    }

    async fn ask(client: &UdpSocket, frontend: SocketAddr, what: &str) -> String {
        client.send_to(what.as_bytes(), frontend).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(from, frontend, "replies come from the service address");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn udp_flows_stick_to_one_endpoint_take_turns_and_leave_a_closed_one() {
        let (a, _a) = udp_echo("a").await;
        let (b, b_task) = udp_echo("b").await;
        let frontend = listen_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let front = frontend.local_addr().unwrap();
        let backends = Arc::new(Backends::default());
        backends.set(vec![a, b]);
        tokio::spawn(serve_udp(
            "127.0.0.1:0".parse().unwrap(),
            frontend,
            backends.clone(),
        ));

        let one = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let two = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A flow keeps its endpoint; a second client gets the other one.
        assert_eq!(ask(&one, front, "x").await, "a:x");
        assert_eq!(ask(&one, front, "y").await, "a:y");
        assert_eq!(ask(&two, front, "z").await, "b:z");
        assert_eq!(ask(&two, front, "w").await, "b:w");

        // b's port closes: two's next datagram is refused (ICMP), which
        // ends its flow; the one after goes to a.
        b_task.abort();
        let _ = b_task.await;
        two.send_to(b"lost", front).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                two.send_to(b"again", front).await.unwrap();
                let mut buf = [0u8; 512];
                if let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(200), two.recv_from(&mut buf)).await
                {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        })
        .await
        .expect("the flow moves to a live endpoint");
        assert_eq!(answer, "a:again");
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
