//! Prometheus metrics of one master, rendered in the text exposition format
//! for `--metrics-listen`. Names follow etcd's where an etcd user would look
//! for them.

use prometheus::Encoder;
use prometheus::Histogram;
use prometheus::HistogramOpts;
use prometheus::IntCounter;
use prometheus::IntGauge;
use prometheus::Registry;
use prometheus::TextEncoder;

/// Every metric a master exports.
pub struct Metrics {
    registry: Registry,
    pub term: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes: IntCounter,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub proposals_in_flight: IntGauge,
    pub proposals_total: IntCounter,
    pub proposals_failed: IntCounter,
    pub proposal_seconds: Histogram,
    pub forward_batches: IntCounter,
    pub forwarded_proposals: IntCounter,
    pub fsync_seconds: Histogram,
    pub apply_seconds: Histogram,
    pub db_size_bytes: IntGauge,
    pub revision: IntGauge,
    pub watchers: IntGauge,
}

fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 18).expect("valid buckets")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets()))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        Self {
            term: gauge("rafter_raft_term", "Current Raft term."),
            is_leader: gauge(
                "rafter_raft_is_leader",
                "1 when this master is the Raft leader.",
            ),
            leader_changes: counter(
                "rafter_raft_leader_changes_seen_total",
                "Leader changes seen by this master.",
            ),
            commit_index: gauge(
                "rafter_raft_commit_index",
                "Highest committed log index known.",
            ),
            applied_index: gauge("rafter_raft_applied_index", "Highest applied log index."),
            proposals_in_flight: gauge(
                "rafter_proposals_pending",
                "Client proposals accepted by this master and not yet answered.",
            ),
            proposals_total: counter("rafter_proposals_total", "Client proposals handled."),
            proposals_failed: counter(
                "rafter_proposals_failed_total",
                "Client proposals that failed.",
            ),
            forward_batches: counter(
                "rafter_forward_batches_total",
                "RPCs that carried proposals from this master to the leader.",
            ),
            forwarded_proposals: counter(
                "rafter_forwarded_proposals_total",
                "Proposals this master forwarded to the leader.",
            ),
            proposal_seconds: histogram(
                "rafter_proposal_duration_seconds",
                "Time from accepting a proposal to its applied result.",
            ),
            fsync_seconds: histogram(
                "rafter_wal_fsync_duration_seconds",
                "Latency of write-ahead-log syncs.",
            ),
            apply_seconds: histogram(
                "rafter_apply_duration_seconds",
                "Time to apply one batch of committed entries.",
            ),
            db_size_bytes: gauge(
                "rafter_db_total_size_in_bytes",
                "Size of the data directory.",
            ),
            revision: gauge("rafter_kv_revision", "Current key-value store revision."),
            watchers: gauge("rafter_watchers", "Open watch streams on this master."),
            registry,
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
