//! The durability workload: concurrent writers put fresh keys
//! (`jepsen/durability/k<n>` = `<n>`, each key written once) while the
//! nemesis kills every master at once (kill -9, power-loss style) and
//! restarts them. After recovery one prefix read collects everything; every
//! acknowledged write must be there with its value
//! ([`crate::checker::durability`]).
//!
//! History: `write` with `key` `k<n>` and value `n`; at the end a `read`
//! without a key whose `ok` value is an object `{"k<n>": n, ...}` of every
//! key found. Outcomes: `Error::Unavailable` is `info` (the worker continues
//! as a new process), any other error `fail`; a failed read is `fail`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rafter_client::Client;
use rafter_proto::kv::{PutRequest, RangeRequest};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::history::{Answer, Completion, EventType, HistoryError, Process, Recorder};

const PREFIX: &str = "jepsen/durability/";

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct DurabilityConfig {
    /// Concurrent writers.
    pub concurrency: usize,
    /// Pause between one writer's writes.
    pub op_delay: Duration,
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            concurrency: 10,
            op_delay: Duration::from_millis(10),
        }
    }
}

/// The workload's shared state.
#[derive(Clone)]
pub struct DurabilityWorkload {
    config: DurabilityConfig,
    recorder: Recorder,
    next_process: Arc<AtomicU64>,
    next_key: Arc<AtomicU64>,
}

impl DurabilityWorkload {
    /// A workload recording into `recorder`.
    pub fn new(config: DurabilityConfig, recorder: Recorder) -> Self {
        DurabilityWorkload {
            config,
            recorder,
            next_process: Arc::new(AtomicU64::new(0)),
            next_key: Arc::new(AtomicU64::new(1)),
        }
    }

    fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs `concurrency` writers until `stop` turns true.
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

    async fn worker(
        &self,
        client: Client,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), HistoryError> {
        let mut process = self.new_process();
        while !crate::nemesis::sleep_or_stop(self.config.op_delay, &mut stop).await {
            let n = self.next_key.fetch_add(1, Ordering::SeqCst);
            let key = format!("k{n}");
            let p = Process::Client(process);
            self.recorder
                .record(p, EventType::Invoke, "write", Some(&key), json!(n), None)?;
            let req = PutRequest {
                key: format!("{PREFIX}{key}").into_bytes(),
                value: n.to_string().into_bytes(),
                ..Default::default()
            };
            let done = match client.put_request(req).await {
                Ok(r) => Completion::ok(json!(n), r.header.as_ref()),
                Err(e) => Completion::of_write_error(json!(n), &e),
            };
            self.recorder.complete(p, "write", Some(&key), &done)?;
            if done.kind == EventType::Info {
                process = self.new_process();
            }
        }
        Ok(())
    }

    /// One final prefix read as a fresh process, recorded; returns its type.
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
                    let text = String::from_utf8_lossy(&kv.value);
                    let value = text
                        .parse::<u64>()
                        .map_or_else(|_| json!(text), |n| json!(n));
                    found.insert(key, value);
                }
                Completion::ok(Value::Object(found), resp.header.as_ref())
            }
            Err(e) => Completion::failed(Value::Null, &e),
        };
        self.recorder.complete(p, "read", None, &done)?;
        Ok(done.kind)
    }
}
