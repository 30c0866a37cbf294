//! The Service cluster-IP allocator, run in the create path of the API
//! server (as Kubernetes does) so a taken or out-of-range requested IP is
//! refused at create time.
//!
//! Each allocated IP is one KV key, `/registry/clusterips/<ip>`, whose
//! value names the Service holding it. The key is created in the same Txn
//! as the Service, guarded by `create_revision == 0`, and deleted in the
//! same Txn as the Service: so no IP is ever handed out twice, even by two
//! masters racing, and none leaks when a Service goes.
//!
//! A clusterIP of "None" (a headless Service) allocates nothing. The
//! clusterIP of a Service never changes after creation; an update that
//! leaves it out keeps it.

use std::any::Any;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rafter_proto::api::{self, FieldCause};
use rafter_proto::object::Object;

/// The key prefix of allocated cluster IPs.
pub const PREFIX: &str = "/registry/clusterips/";

/// Kubernetes' default service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

/// The key recording that `ip` is allocated.
pub fn ip_key(ip: IpAddr) -> String {
    format!("{PREFIX}{ip}")
}

/// The IP in an allocation key, if it is one.
pub fn ip_of_key(key: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(PREFIX)?
        .parse()
        .ok()
}

/// Offsets inside `cidr` that may be handed out: all but the network
/// address and the last (broadcast) address. A /31 or /32 (or IPv6 /127,
/// /128) has none.
fn usable(cidr: &IpNet) -> Option<(u128, u128)> {
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    if host_bits < 2 {
        return None;
    }
    // At most 2^64 addresses are considered (a /64 is already plenty).
    let size: u128 = 1u128 << host_bits.min(64);
    Some((1, size - 2))
}

fn base(cidr: &IpNet) -> u128 {
    match cidr.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn at(cidr: &IpNet, offset: u128) -> IpAddr {
    let v = base(cidr) + offset;
    match cidr {
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

fn offset_of(cidr: &IpNet, ip: IpAddr) -> Option<u128> {
    if !cidr.contains(&ip) {
        return None;
    }
    let v = match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    Some(v - base(cidr))
}

/// Checks a requested clusterIP: an address inside `cidr` that may be
/// handed out. The error is the field cause to report.
pub fn check_requested(cidr: &IpNet, requested: &str) -> Result<IpAddr, FieldCause> {
    let cause = |why: String| FieldCause {
        field: "spec.clusterIP".into(),
        message: format!("Invalid value: {requested:?}: {why}"),
    };
    let ip: IpAddr = requested
        .parse()
        .map_err(|_| cause("must be a valid IP address or \"None\"".into()))?;
    let in_range = match (offset_of(cidr, ip), usable(cidr)) {
        (Some(o), Some((lo, hi))) => o >= lo && o <= hi,
        _ => false,
    };
    if !in_range {
        return Err(cause(format!(
            "provided IP is not in the valid range. The range of valid IPs is {cidr}"
        )));
    }
    Ok(ip)
}

/// The cause reported when a requested IP belongs to another Service.
pub fn already_allocated(ip: IpAddr) -> FieldCause {
    FieldCause {
        field: "spec.clusterIP".into(),
        message: format!(
            "Invalid value: \"{ip}\": provided IP is already allocated; leave clusterIP empty to get a free one"
        ),
    }
}

/// The first free address of `cidr` at or after offset `start` (modulo the
/// usable range), skipping `taken`; None when the range is full.
pub fn choose_free(cidr: &IpNet, taken: &BTreeSet<IpAddr>, start: u128) -> Option<IpAddr> {
    let (lo, hi) = usable(cidr)?;
    let count = hi - lo + 1;
    let taken_here = taken.iter().filter(|ip| cidr.contains(*ip)).count() as u128;
    if taken_here >= count {
        return None;
    }
    let first = lo + start % count;
    // Walk at most `count` addresses; a free one exists, so this ends.
    (0..count)
        .map(|i| at(cidr, lo + (first - lo + i) % count))
        .find(|ip| !taken.contains(ip))
}

/// A random starting offset, so allocations spread over the range (as
/// Kubernetes' allocator does) instead of piling up at its start.
pub fn random_start() -> u128 {
    u128::from(rand::random::<u64>())
}

/// The Service's clusterIP field, if `obj` is a Service.
pub fn requested<K: Object>(obj: &K) -> Option<&str> {
    let svc = (obj as &dyn Any).downcast_ref::<api::Service>()?;
    Some(
        svc.spec
            .as_ref()
            .map(|s| s.cluster_ip.as_str())
            .unwrap_or(""),
    )
}

/// Sets the Service's clusterIP (no-op for other kinds).
pub fn set<K: Object>(obj: &mut K, ip: IpAddr) {
    if let Some(svc) = (obj as &mut dyn Any).downcast_mut::<api::Service>() {
        svc.spec.get_or_insert_default().cluster_ip = ip.to_string();
    }
}

/// The IP a stored object holds an allocation key for (Services only).
pub fn held<K: Object>(obj: &K) -> Option<IpAddr> {
    requested(obj)?.parse().ok()
}

/// On update: an omitted clusterIP keeps the stored one; a changed one is
/// refused (the allocation key belongs to the stored IP).
pub fn on_update<K: Object>(current: &K, next: &mut K) -> Result<(), Vec<FieldCause>> {
    let Some(old) = requested(current).map(str::to_string) else {
        return Ok(());
    };
    let Some(svc) = (next as &mut dyn Any).downcast_mut::<api::Service>() else {
        return Ok(());
    };
    let spec = svc.spec.get_or_insert_default();
    if spec.cluster_ip.is_empty() {
        spec.cluster_ip = old;
        return Ok(());
    }
    if spec.cluster_ip != old {
        return Err(vec![FieldCause {
            field: "spec.clusterIP".into(),
            message: format!(
                "Invalid value: {:?}: field is immutable (it is {old:?}); delete and recreate the Service to change it",
                spec.cluster_ip
            ),
        }]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_requested_ip_must_be_inside_the_range() {
        let c = cidr(DEFAULT_SERVICE_CIDR);
        assert_eq!(check_requested(&c, "10.96.0.10").unwrap(), ip("10.96.0.10"));
        assert_eq!(
            check_requested(&c, "10.111.255.254").unwrap(),
            ip("10.111.255.254")
        );
        for bad in ["192.168.1.1", "10.112.0.1", "10.96.0.0", "10.111.255.255"] {
            let e = check_requested(&c, bad).unwrap_err();
            assert_eq!(e.field, "spec.clusterIP");
            assert!(e.message.contains("not in the valid range"), "{bad}: {e:?}");
            assert!(e.message.contains("10.96.0.0/12"), "{e:?}");
        }
        let e = check_requested(&c, "ten").unwrap_err();
        assert!(e.message.contains("valid IP"), "{e:?}");
    }

    #[test]
    fn choosing_never_returns_a_taken_ip_and_fills_the_range() {
        let c = cidr("10.0.0.0/29"); // usable: .1 .. .6
        let mut taken = BTreeSet::new();
        for round in 0..6u128 {
            let got = choose_free(&c, &taken, round * 7 + 3).expect("free IP");
            assert!(c.contains(&got));
            assert_ne!(got, ip("10.0.0.0"), "network address");
            assert_ne!(got, ip("10.0.0.7"), "broadcast address");
            assert!(taken.insert(got), "{got} handed out twice");
        }
        assert_eq!(taken.len(), 6);
        assert_eq!(choose_free(&c, &taken, 0), None, "the range is full");
        // A release makes exactly that IP free again.
        taken.remove(&ip("10.0.0.4"));
        assert_eq!(choose_free(&c, &taken, 12345), Some(ip("10.0.0.4")));
    }

    #[test]
    fn choosing_starts_at_the_offset_and_skips_taken() {
        let c = cidr("10.96.0.0/12");
        let taken = BTreeSet::from([ip("10.96.0.1"), ip("10.96.0.2")]);
        assert_eq!(choose_free(&c, &taken, 0), Some(ip("10.96.0.3")));
        assert_eq!(choose_free(&c, &taken, 9), Some(ip("10.96.0.10")));
        let v6 = cidr("fd00::/112");
        assert_eq!(choose_free(&v6, &BTreeSet::new(), 0), Some(ip("fd00::1")));
        assert_eq!(choose_free(&cidr("10.0.0.0/31"), &BTreeSet::new(), 0), None);
    }

    #[test]
    fn keys_round_trip() {
        let k = ip_key(ip("10.96.3.4"));
        assert_eq!(k, "/registry/clusterips/10.96.3.4");
        assert_eq!(ip_of_key(k.as_bytes()), Some(ip("10.96.3.4")));
        assert_eq!(ip_of_key(b"/registry/pods/x"), None);
    }

    fn service(ip: &str) -> api::Service {
        api::Service {
            spec: Some(api::ServiceSpec {
                cluster_ip: ip.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_update_keeps_an_omitted_cluster_ip_and_refuses_a_change() {
        let current = service("10.96.0.5");
        let mut next = service("");
        on_update(&current, &mut next).unwrap();
        assert_eq!(requested(&next), Some("10.96.0.5"));
        let mut same = service("10.96.0.5");
        on_update(&current, &mut same).unwrap();
        let mut moved = service("10.96.0.6");
        let e = on_update(&current, &mut moved).unwrap_err();
        assert!(e[0].message.contains("immutable"), "{e:?}");
        assert_eq!(held(&current), Some(ip("10.96.0.5")));
        assert_eq!(held(&service("None")), None);
        assert_eq!(requested(&api::Pod::default()), None);
    }
}
