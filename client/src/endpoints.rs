//! The master endpoints a client knows, and which one it asks first.
//!
//! Every call starts at the *current* endpoint — the last one that answered —
//! and walks the list round-robin from there on failure. The current index is
//! shared by all calls of a client, so one call's discovery that a master is
//! down saves the next call the timeout. Moving it is a compare-and-swap: when
//! several calls fail on the same endpoint at once, it advances by one, not by
//! one per call, so no healthy endpoint is skipped.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Error;

/// An ordered, non-empty list of endpoints, each with a value of type `T`
/// (the client keeps one gRPC channel per endpoint).
pub(crate) struct Endpoints<T> {
    entries: Vec<(String, T)>,
    current: AtomicUsize,
}

impl<T> Endpoints<T> {
    /// Builds the list; the first entry starts as current.
    pub(crate) fn new(entries: Vec<(String, T)>) -> Result<Self, Error> {
        if entries.is_empty() {
            return Err(Error::NoEndpoints);
        }
        Ok(Endpoints {
            entries,
            current: AtomicUsize::new(0),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where the next call should start.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.entries.len()
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.entries[i].0
    }

    pub(crate) fn value(&self, i: usize) -> &T {
        &self.entries[i].1
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The index of the endpoint called `name`, if it is in the list.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    /// Endpoint `i` answered: later calls start there.
    pub(crate) fn succeeded(&self, i: usize) {
        self.current.store(i, Ordering::Relaxed);
    }

    /// Endpoint `i` failed: if it is still the current one, make the next one
    /// current. Returns the endpoint this caller should try next.
    pub(crate) fn failed(&self, i: usize) -> usize {
        let next = (i + 1) % self.entries.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
        next
    }
}

/// Checks and normalizes one endpoint as given by a user: `host:port`,
/// optionally prefixed with `http://`. Returns `(name, uri)`: the name is
/// `host:port` (how the endpoint is shown and compared), the uri what the
/// gRPC channel connects to.
pub(crate) fn parse_endpoint(given: &str) -> Result<(String, String), Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: given.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = given.trim();
    if trimmed.starts_with("https://") {
        return Err(invalid("TLS is not supported yet; use host:port"));
    }
    let name = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(invalid("empty; expected host:port"));
    }
    if name.contains('/') {
        return Err(invalid("expected host:port, without a path"));
    }
    let Some((host, port)) = name.rsplit_once(':') else {
        return Err(invalid("missing port; expected host:port"));
    };
    if host.is_empty() {
        return Err(invalid("missing host; expected host:port"));
    }
    if port.parse::<u16>().is_err() {
        return Err(invalid("port is not a number between 0 and 65535"));
    }
    Ok((name.to_string(), format!("http://{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Endpoints<()> {
        Endpoints::new(vec![("a".into(), ()), ("b".into(), ()), ("c".into(), ())]).unwrap()
    }

    #[test]
    fn empty_list_is_rejected() {
        assert!(matches!(
            Endpoints::<()>::new(vec![]),
            Err(Error::NoEndpoints)
        ));
    }

    #[test]
    fn failure_rotates_to_the_next_endpoint_and_wraps() {
        let e = three();
        assert_eq!(e.current(), 0);
        assert_eq!(e.failed(0), 1);
        assert_eq!(e.current(), 1);
        assert_eq!(e.failed(1), 2);
        assert_eq!(e.failed(2), 0);
        assert_eq!(e.current(), 0);
    }

    #[test]
    fn concurrent_failures_on_one_endpoint_advance_once() {
        let e = three();
        // Two calls both started at 0 and both failed there.
        assert_eq!(e.failed(0), 1);
        assert_eq!(e.failed(0), 1);
        assert_eq!(e.current(), 1, "endpoint b must not be skipped");
    }

    #[test]
    fn success_makes_an_endpoint_current() {
        let e = three();
        e.succeeded(2);
        assert_eq!(e.current(), 2);
        assert_eq!(e.name(e.current()), "c");
        assert_eq!(e.find("b"), Some(1));
    }

    #[test]
    fn endpoints_are_normalized_to_host_port() {
        assert_eq!(
            parse_endpoint(" 127.0.0.1:7001 ").unwrap(),
            ("127.0.0.1:7001".into(), "http://127.0.0.1:7001".into())
        );
        assert_eq!(parse_endpoint("http://m1:7001/").unwrap().0, "m1:7001");
        assert_eq!(parse_endpoint("[::1]:7001").unwrap().0, "[::1]:7001");
    }

    #[test]
    fn malformed_endpoints_are_rejected() {
        for bad in [
            "",
            "localhost",
            ":7001",
            "h:port",
            "h:70000",
            "https://h:1",
            "h:1/x",
        ] {
            assert!(
                matches!(parse_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
