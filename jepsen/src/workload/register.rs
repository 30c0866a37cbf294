//! The register workload: concurrent processes read, write and
//! compare-and-set integer registers, one register per key, through
//! `rafter_client`; the history is checked for linearizability per key.
//!
//! Keys rotate: each key takes about `ops_per_key` operations before the
//! workers move on to fresh keys, because the checker's cost grows with the
//! number of operations (and open `info` operations) on one key.
//!
//! Outcomes:
//! - a read that fails in any way is `fail` (it had no effect);
//! - `Error::Status` is a definite answer: `fail`;
//! - `Error::Unavailable` (no master answered in time, possibly after the
//!   request was sent) is `info`, and the worker continues as a new process;
//! - a cas whose compare did not match is `fail`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rafter_client::Client;
use rafter_proto::kv::compare::{CompareResult, CompareTarget, TargetUnion};
use rafter_proto::kv::request_op::Request;
use rafter_proto::kv::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::history::{Answer, Completion, EventType, HistoryError, Process, Recorder};

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct RegisterConfig {
    /// Concurrent worker tasks.
    pub concurrency: usize,
    /// Keys in use at a time.
    pub keys: usize,
    /// Operations per key before it is retired.
    pub ops_per_key: u64,
    /// Pause between one worker's operations.
    pub op_delay: Duration,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        RegisterConfig {
            concurrency: 10,
            keys: 5,
            ops_per_key: 300,
            op_delay: Duration::from_millis(10),
        }
    }
}

/// The workload's shared state: the id counters and the recorder.
#[derive(Clone)]
pub struct RegisterWorkload {
    config: RegisterConfig,
    recorder: Recorder,
    next_process: Arc<AtomicU64>,
    next_op: Arc<AtomicU64>,
    next_value: Arc<AtomicU64>,
}

/// The key prefix, so that register keys never collide with other data.
const PREFIX: &str = "jepsen/register/";

/// The completion of one operation.
impl RegisterWorkload {
    /// A workload recording into `recorder`.
    pub fn new(config: RegisterConfig, recorder: Recorder) -> Self {
        RegisterWorkload {
            config,
            recorder,
            next_process: Arc::new(AtomicU64::new(0)),
            next_op: Arc::new(AtomicU64::new(0)),
            next_value: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Every key used so far.
    pub fn keys_used(&self) -> Vec<String> {
        let ops = self.next_op.load(Ordering::SeqCst);
        let per_block = self.config.ops_per_key * self.config.keys as u64;
        let blocks = ops.div_ceil(per_block.max(1)).max(1);
        (0..blocks * self.config.keys as u64)
            .map(|k| format!("k{k}"))
            .collect()
    }

    fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs `concurrency` workers until `stop` turns true; each finishes the
    /// operation it is in. Returns the first history write error, if any.
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
            let (f, key, input) = self.next_operation();
            let kind = self.invoke(&client, process, f, &key, input).await?;
            if kind == EventType::Info {
                process = self.new_process();
            }
        }
        Ok(())
    }

    fn next_operation(&self) -> (&'static str, String, Value) {
        let n = self.next_op.fetch_add(1, Ordering::SeqCst);
        let keys = self.config.keys as u64;
        let block = n / (self.config.ops_per_key * keys).max(1);
        let mut rng = rand::rng();
        let key = format!("k{}", block * keys + rng.random_range(0..keys));
        match rng.random_range(0..3) {
            0 => ("read", key, Value::Null),
            1 => ("write", key, json!(self.value())),
            _ => ("cas", key, json!([rng.random_range(0..5), self.value()])),
        }
    }

    fn value(&self) -> u64 {
        // Small and cycling, so that cas compares often match.
        self.next_value.fetch_add(1, Ordering::SeqCst) % 5
    }

    /// Runs one operation and records its invoke and completion; returns the
    /// completion type.
    pub async fn invoke(
        &self,
        client: &Client,
        process: u64,
        f: &str,
        key: &str,
        input: Value,
    ) -> Result<EventType, HistoryError> {
        let p = Process::Client(process);
        self.recorder
            .record(p, EventType::Invoke, f, Some(key), input.clone(), None)?;
        let mut done = match f {
            "read" => read(client, key).await,
            "write" => write(client, key, &input).await,
            _ => cas(client, key, &input).await,
        };
        if !(done.kind == EventType::Ok && f == "read") {
            done.value = input;
        }
        self.recorder.complete(p, f, Some(key), &done)?;
        Ok(done.kind)
    }
}

fn full_key(key: &str) -> Vec<u8> {
    format!("{PREFIX}{key}").into_bytes()
}

fn encode(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

async fn read(client: &Client, key: &str) -> Completion {
    let req = RangeRequest {
        key: full_key(key),
        ..Default::default()
    };
    match client.range(req).await {
        Ok(resp) => {
            let value = match resp.kvs.first() {
                None => Value::Null,
                Some(kv) => match std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(v) => json!(v),
                    // Not ours to judge here: record the raw text; the
                    // checker will reject it as outside the model.
                    None => json!(String::from_utf8_lossy(&kv.value)),
                },
            };
            Completion::ok(value, resp.header.as_ref())
        }
        Err(e) => Completion::failed(Value::Null, &e),
    }
}

async fn write(client: &Client, key: &str, value: &Value) -> Completion {
    let req = PutRequest {
        key: full_key(key),
        value: encode(value),
        ..Default::default()
    };
    match client.put_request(req).await {
        Ok(r) => Completion::ok(value.clone(), r.header.as_ref()),
        Err(e) => Completion::of_write_error(Value::Null, &e),
    }
}

async fn cas(client: &Client, key: &str, pair: &Value) -> Completion {
    let req = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: full_key(key),
            target_union: Some(TargetUnion::Value(encode(&pair[0]))),
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: full_key(key),
                value: encode(&pair[1]),
                ..Default::default()
            })),
        }],
        failure: vec![],
        write_id: None,
    };
    match client.txn(req).await {
        Ok(r) if r.succeeded => Completion::ok(pair.clone(), r.header.as_ref()),
        Ok(r) => {
            Completion::fail(Value::Null, "compare failed").answered(Answer::of(r.header.as_ref()))
        }
        Err(e) => Completion::of_write_error(Value::Null, &e),
    }
}
