//! The lease workload: each worker grants a lease (with an id it picks, so
//! that even a lease whose grant was indeterminate is known), puts one key
//! attached to it, then keeps the lease alive and reads the key back for a
//! random while, and finally abandons it (stops keeping it alive) and starts
//! over with a new one. When the run ends every lease is abandoned; after
//! the faults are healed and the cluster has recovered, the run waits the
//! TTL plus `expiry_bound`, and one final read must find no key left.
//! Checked by [`crate::checker::lease`].
//!
//! History (`key` is `l<id>` for every operation on lease `id` and its key
//! `jepsen/lease/l<id>`):
//! - `grant`: invoke value the TTL asked for, `ok` value the TTL granted;
//! - `put`: the key attached to the lease; value the lease id;
//! - `keepalive`: invoke value `null`; `ok` value the TTL the lease was
//!   refreshed to, or `null` when the masters said the lease does not exist
//!   (a definite answer, so `ok`);
//! - `read`: the key; `ok` value the lease id it is attached to (0 for
//!   none), or `null` when absent;
//! - the final `read` (no `key`): `ok` value `{"l<id>": lease, ...}` for
//!   every key left under the prefix.
//!
//! Outcomes: `Error::Unavailable` of a grant, put or keepalive is `info`
//! (the worker continues with the same lease as a new process); any other
//! error `fail`; a failed read is `fail`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rafter_client::Client;
use rafter_proto::kv::{LeaseGrantRequest, PutRequest, RangeRequest};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::history::{Answer, Completion, EventType, HistoryError, Process, Recorder};

/// The stored key prefix.
pub const PREFIX: &str = "jepsen/lease/";

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Concurrent workers, each holding one lease at a time.
    pub concurrency: usize,
    /// TTL asked for, seconds.
    pub ttl_secs: i64,
    /// Pause between keep-alives (each followed by a read of the key).
    pub keepalive_interval: Duration,
    /// A lease is kept alive for a random time up to this long, then
    /// abandoned.
    pub max_hold: Duration,
    /// How long after TTL expiry (counted from the later of the last
    /// keep-alive and the recovery after healing) every abandoned lease's
    /// key must be gone.
    pub expiry_bound: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            concurrency: 5,
            ttl_secs: 3,
            keepalive_interval: Duration::from_millis(500),
            max_hold: Duration::from_secs(8),
            expiry_bound: Duration::from_secs(5),
        }
    }
}

/// The workload's shared state.
#[derive(Clone)]
pub struct LeaseWorkload {
    config: LeaseConfig,
    recorder: Recorder,
    next_process: Arc<AtomicU64>,
    next_lease: Arc<AtomicI64>,
}

impl LeaseWorkload {
    /// A workload recording into `recorder`.
    pub fn new(config: LeaseConfig, recorder: Recorder) -> Self {
        // Lease ids unique to this run, positive, below 2^53 so that they
        // are exact in JSON for every reader.
        let base = rand::rng().random_range(1i64..1 << 20) << 24;
        LeaseWorkload {
            config,
            recorder,
            next_process: Arc::new(AtomicU64::new(0)),
            next_lease: Arc::new(AtomicI64::new(base)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs `concurrency` workers until `stop` turns true.
    pub async fn run(
        &self,
        client: Client,
        stop: watch::Receiver<bool>,
    ) -> Result<(), HistoryError> {
        super::run_workers(self.config.concurrency, || {
            let this = self.clone();
            let client = client.clone();
            let stop = stop.clone();
            async move { this.worker(client, stop).await }
        })
        .await
    }

    /// Records `f` on lease key `key` around `call`.
    async fn op<F>(
        &self,
        process: &mut u64,
        f: &str,
        key: &str,
        input: Value,
        call: F,
    ) -> Result<(EventType, Value), HistoryError>
    where
        F: std::future::Future<Output = Completion>,
    {
        let p = Process::Client(*process);
        self.recorder
            .record(p, EventType::Invoke, f, Some(key), input, None)?;
        let d = call.await;
        self.recorder.complete(p, f, Some(key), &d)?;
        if d.kind == EventType::Info {
            *process = self.new_process();
        }
        Ok((d.kind, d.value))
    }

    async fn worker(
        &self,
        client: Client,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), HistoryError> {
        let mut process = self.new_process();
        let ttl = self.config.ttl_secs;
        while !*stop.borrow() {
            let id = self.next_lease.fetch_add(1, Ordering::SeqCst);
            let key = format!("l{id}");
            let full_key = format!("{PREFIX}{key}");
            let (grant, _) = self
                .op(&mut process, "grant", &key, json!(ttl), async {
                    let req = LeaseGrantRequest {
                        ttl,
                        id,
                        write_id: None,
                    };
                    match client.lease_grant_request(req).await {
                        Ok(r) => Completion::ok(json!(r.ttl), r.header.as_ref()),
                        Err(e) => Completion::of_write_error(json!(ttl), &e),
                    }
                })
                .await?;
            if grant == EventType::Fail {
                crate::nemesis::sleep_or_stop(self.config.keepalive_interval, &mut stop).await;
                continue;
            }
            let (put, _) = self
                .op(&mut process, "put", &key, json!(id), async {
                    let req = PutRequest {
                        key: full_key.clone().into_bytes(),
                        value: b"x".to_vec(),
                        lease: id,
                        ..Default::default()
                    };
                    match client.put_request(req).await {
                        Ok(r) => Completion::ok(json!(id), r.header.as_ref()),
                        Err(e) => Completion::of_write_error(json!(id), &e),
                    }
                })
                .await?;
            if put == EventType::Fail {
                continue;
            }
            let hold = rand::rng().random_range(Duration::ZERO..self.config.max_hold);
            let until = Instant::now() + hold;
            while Instant::now() < until {
                if crate::nemesis::sleep_or_stop(self.config.keepalive_interval, &mut stop).await {
                    return Ok(());
                }
                let (kind, ttl_left) = self
                    .op(&mut process, "keepalive", &key, Value::Null, async {
                        match client.lease_keep_alive(id).await {
                            Ok(r) => Completion::ok(json!(r.ttl), r.header.as_ref()),
                            // A definite "no such lease": `ok` with null.
                            Err(e) if e.is_not_found() => Completion {
                                kind: EventType::Ok,
                                ..Completion::failed(Value::Null, &e)
                            },
                            Err(e) => Completion::of_write_error(Value::Null, &e),
                        }
                    })
                    .await?;
                self.read(&client, &mut process, &key).await?;
                if kind == EventType::Ok && ttl_left.is_null() {
                    break; // The lease is gone; nothing left to keep alive.
                }
            }
            // Abandoned: no revoke, the lease must expire by itself.
        }
        Ok(())
    }

    /// A recorded linearizable read of the lease's key.
    async fn read(
        &self,
        client: &Client,
        process: &mut u64,
        key: &str,
    ) -> Result<(EventType, Value), HistoryError> {
        let full_key = format!("{PREFIX}{key}");
        self.op(process, "read", key, Value::Null, async {
            let req = RangeRequest {
                key: full_key.clone().into_bytes(),
                ..Default::default()
            };
            match client.range(req).await {
                Ok(r) => {
                    let value = r.kvs.first().map_or(Value::Null, |kv| json!(kv.lease));
                    Completion::ok(value, r.header.as_ref())
                }
                Err(e) => Completion::failed(Value::Null, &e),
            }
        })
        .await
    }

    /// The final read of every key left, as a fresh process; returns its
    /// type.
    pub async fn final_read(&self, client: &Client) -> Result<EventType, HistoryError> {
        let p = Process::Client(self.new_process());
        self.recorder
            .record(p, EventType::Invoke, "read", None, Value::Null, None)?;
        let req = RangeRequest {
            key: PREFIX.into(),
            prefix: true,
            ..Default::default()
        };
        let done = match client.range(req).await {
            Ok(resp) if resp.more => {
                Completion::fail(Value::Null, "prefix read truncated (more = true)")
                    .answered(Answer::of(resp.header.as_ref()))
            }
            Ok(resp) => {
                let mut found = Map::new();
                for kv in &resp.kvs {
                    let key = String::from_utf8_lossy(&kv.key);
                    let key = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
                    found.insert(key, json!(kv.lease));
                }
                Completion::ok(Value::Object(found), resp.header.as_ref())
            }
            Err(e) => Completion::failed(Value::Null, &e),
        };
        self.recorder.complete(p, "read", None, &done)?;
        Ok(done.kind)
    }
}
