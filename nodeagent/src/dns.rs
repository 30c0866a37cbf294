//! Service DNS for pods: `NAME.NAMESPACE.svc.cluster.local` answers the
//! Service's clusterIP (a headless Service, `clusterIP: None`, answers its
//! ready endpoints' IPs).
//!
//! Each agent runs one small UDP responder on its pod network's gateway
//! address, port 53, and makes it the resolver of every pod on the node,
//! with the search path `<namespace>.svc.<domain> svc.<domain> <domain>`
//! so `web` finds the Service `web` of the pod's own namespace. Docker's
//! embedded resolver (127.0.0.11 in every container on a user-defined
//! network) forwards to it whatever is not a container name.
//!
//! Names outside the cluster domain are forwarded to the host's resolvers
//! (`/etc/resolv.conf`); without any, they get SERVFAIL. Only UDP is served:
//! answers are a handful of addresses and fit in a datagram.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use rafter_client::informer::Cache;
use rafter_proto::api;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The cluster's DNS domain unless `--cluster-domain` says otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// TTL of the answers: short, as Services come and go.
const TTL: u32 = 5;
/// How long an upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// What a name is in the cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A Service: its addresses (none when it has no clusterIP yet).
    Found(Vec<Ipv4Addr>),
    /// Inside the cluster domain, but nothing has that name.
    NoSuchName,
    /// Outside the cluster domain: for the upstream resolvers.
    Outside,
}

/// Looks `name` up (any case, with or without the final dot).
pub fn lookup(
    name: &str,
    domain: &str,
    services: &Cache<api::Service>,
    endpoints: &Cache<api::Endpoints>,
) -> Lookup {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let Some(inside) = name
        .strip_suffix(&domain)
        .and_then(|rest| rest.strip_suffix('.').or(rest.is_empty().then_some("")))
    else {
        return Lookup::Outside;
    };
    // `<service>.<namespace>.svc`
    let parts: Vec<&str> = inside.split('.').collect();
    let [service, namespace, "svc"] = parts.as_slice() else {
        return Lookup::NoSuchName;
    };
    let Some(svc) = services.get(namespace, service) else {
        return Lookup::NoSuchName;
    };
    let cluster_ip = svc.spec.map(|s| s.cluster_ip).unwrap_or_default();
    if cluster_ip == "None" {
        let ips = endpoints
            .get(namespace, service)
            .map(|e| {
                e.subsets
                    .iter()
                    .flat_map(|s| &s.addresses)
                    .filter_map(|a| a.ip.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        return Lookup::Found(ips);
    }
    Lookup::Found(cluster_ip.parse().into_iter().collect())
}

/// The answer to one query datagram, or None when it is to be forwarded
/// upstream (or is not a query at all).
pub fn answer(
    query: &[u8],
    domain: &str,
    services: &Cache<api::Service>,
    endpoints: &Cache<api::Endpoints>,
) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
        Err(_) => return None,
    };
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    let [question] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return response.to_vec().ok();
    };
    response.add_query(question.clone());
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return response.to_vec().ok();
    }
    match lookup(&question.name().to_ascii(), domain, services, endpoints) {
        Lookup::Outside => return None,
        Lookup::NoSuchName => {
            response
                .set_authoritative(true)
                .set_response_code(ResponseCode::NXDomain);
        }
        Lookup::Found(ips) => {
            response.set_authoritative(true);
            // Other record types of a name that exists: no data, no error.
            if question.query_type() == RecordType::A {
                for ip in ips {
                    response.add_answer(Record::from_rdata(
                        question.name().clone(),
                        TTL,
                        RData::A(A(ip)),
                    ));
                }
            }
        }
    }
    response.to_vec().ok()
}

/// The host's resolvers, from `/etc/resolv.conf`.
pub fn upstream_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|s| parse_resolv_conf(&s))
        .unwrap_or_default()
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Binds the responder on `addr` (the pod network's gateway, port 53).
pub async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Answers queries on `socket` until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    domain: String,
    services: Cache<api::Service>,
    endpoints: Cache<api::Endpoints>,
    shutdown: CancellationToken,
) {
    let socket = std::sync::Arc::new(socket);
    let upstream = upstream_servers();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "dns: receive failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let query = &buf[..n];
        if let Some(reply) = answer(query, &domain, &services, &endpoints) {
            let _ = socket.send_to(&reply, peer).await;
            continue;
        }
        // Forwarded in the background: an upstream's slowness must not
        // hold up cluster names.
        let socket = socket.clone();
        let query = query.to_vec();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let reply = match forward(&query, &upstream).await {
                Some(r) => r,
                None => match Message::from_vec(&query) {
                    Ok(m) => {
                        let mut fail =
                            Message::error_msg(m.id(), m.op_code(), ResponseCode::ServFail);
                        fail.add_queries(m.queries().to_vec());
                        match fail.to_vec() {
                            Ok(v) => v,
                            Err(_) => return,
                        }
                    }
                    Err(_) => return,
                },
            };
            let _ = socket.send_to(&reply, peer).await;
        });
    }
}

/// Asks each upstream resolver in turn; the first reply wins.
async fn forward(query: &[u8], upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    for server in upstream {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.send_to(query, server).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn service(ns: &str, name: &str, ip: &str) -> api::Service {
        api::Service {
            metadata: Some(api::ObjectMeta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            }),
            spec: Some(api::ServiceSpec {
                cluster_ip: ip.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn caches() -> (Cache<api::Service>, Cache<api::Endpoints>) {
        let services = Cache::from_objects(vec![
            service("default", "web", "10.96.0.7"),
            service("shop", "db", "None"),
        ]);
        let endpoints = Cache::from_objects(vec![api::Endpoints {
            metadata: Some(api::ObjectMeta {
                name: "db".into(),
                namespace: "shop".into(),
                ..Default::default()
            }),
            subsets: vec![api::EndpointSubset {
                addresses: vec![
                    api::EndpointAddress {
                        ip: "10.244.0.5".into(),
                        ..Default::default()
                    },
                    api::EndpointAddress {
                        ip: "10.244.1.9".into(),
                        ..Default::default()
                    },
                ],
                not_ready_addresses: vec![api::EndpointAddress {
                    ip: "10.244.1.10".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        (services, endpoints)
    }

    #[test]
    fn service_names_resolve_to_the_cluster_ip_or_the_ready_endpoints_when_headless() {
        let (s, e) = caches();
        let d = DEFAULT_CLUSTER_DOMAIN;
        assert_eq!(
            lookup("web.default.svc.cluster.local.", d, &s, &e),
            Lookup::Found(vec!["10.96.0.7".parse().unwrap()])
        );
        assert_eq!(
            lookup("WEB.Default.SVC.cluster.local", d, &s, &e),
            Lookup::Found(vec!["10.96.0.7".parse().unwrap()])
        );
        assert_eq!(
            lookup("db.shop.svc.cluster.local.", d, &s, &e),
            Lookup::Found(vec![
                "10.244.0.5".parse().unwrap(),
                "10.244.1.9".parse().unwrap()
            ])
        );
        assert_eq!(
            lookup("web.shop.svc.cluster.local.", d, &s, &e),
            Lookup::NoSuchName
        );
        assert_eq!(
            lookup("default.svc.cluster.local.", d, &s, &e),
            Lookup::NoSuchName
        );
        assert_eq!(lookup("cluster.local.", d, &s, &e), Lookup::NoSuchName);
        assert_eq!(lookup("example.com.", d, &s, &e), Lookup::Outside);
        assert_eq!(lookup("notcluster.local.", d, &s, &e), Lookup::Outside);
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_a_queries_on_the_wire_and_nxdomain_for_unknown_cluster_names() {
        let (s, e) = caches();
        let d = DEFAULT_CLUSTER_DOMAIN;
        let reply = answer(
            &query("web.default.svc.cluster.local.", RecordType::A),
            d,
            &s,
            &e,
        )
        .expect("a cluster name is answered here");
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.id(), 4242);
        assert_eq!(reply.message_type(), MessageType::Response);
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        let ips: Vec<_> = reply
            .answers()
            .iter()
            .map(|r| match r.data() {
                RData::A(a) => a.0,
                other => panic!("not an A record: {other:?}"),
            })
            .collect();
        assert_eq!(ips, vec!["10.96.0.7".parse::<Ipv4Addr>().unwrap()]);

        let aaaa = answer(
            &query("web.default.svc.cluster.local.", RecordType::AAAA),
            d,
            &s,
            &e,
        )
        .unwrap();
        let aaaa = Message::from_vec(&aaaa).unwrap();
        assert_eq!(aaaa.response_code(), ResponseCode::NoError);
        assert!(aaaa.answers().is_empty());

        let missing = answer(
            &query("nope.default.svc.cluster.local.", RecordType::A),
            d,
            &s,
            &e,
        )
        .unwrap();
        assert_eq!(
            Message::from_vec(&missing).unwrap().response_code(),
            ResponseCode::NXDomain
        );

        assert!(answer(&query("example.com.", RecordType::A), d, &s, &e).is_none());
        let garbage = answer(&[0x12, 0x34, 0xff], d, &s, &e).unwrap();
        let garbage = Message::from_vec(&garbage).unwrap();
        assert_eq!(
            (garbage.id(), garbage.response_code()),
            (0x1234, ResponseCode::FormErr)
        );
    }

    #[test]
    fn resolv_conf_nameservers_are_the_upstreams() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver fd00::1\noptions ndots:1\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fd00::1]:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn the_responder_answers_over_udp() {
        let (s, e) = caches();
        let socket = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            socket,
            DEFAULT_CLUSTER_DOMAIN.into(),
            s,
            e,
            stop.clone(),
        ));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(
                &query("web.default.svc.cluster.local.", RecordType::A),
                addr,
            )
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let reply = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(reply.answers().len(), 1);
        stop.cancel();
    }
}
