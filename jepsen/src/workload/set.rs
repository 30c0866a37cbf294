//! The set (exactly-once) workload: concurrent processes add unique integer
//! elements to one key, `jepsen/set/s`, whose value is a JSON list of
//! integers, by read-modify-cas: read the list and its `mod_revision`, then a
//! Txn that compares `mod_revision` equal and puts the list plus the new
//! element; on a compare failure, read again and retry (a fresh write).
//!
//! History: `add` with the element as value (`key` `s`), and at the end a
//! `read` whose `ok` value is the list read. Checked by
//! [`crate::checker::set`]: every acknowledged element exactly once, no
//! duplicates, nothing never attempted.
//!
//! Outcomes of an add:
//! - `ok`: a Txn succeeded;
//! - `fail`: a read failed, a master gave a definite error, or the compare
//!   kept failing for `max_attempts` rounds — in every case before any write
//!   of this add may have taken effect;
//! - `info`: a Txn got `Error::Unavailable` (it may have been applied); the
//!   worker continues as a new process.
//!
//! With `retry_same_write` (`--workload set-retry`), a Txn that got
//! `Error::Unavailable` is sent again, the same request with the same
//! `write_id`, up to [`SAME_WRITE_RETRIES`] times: the masters must apply it
//! at most once and answer the repeat with the first result. A repeat that
//! answers "compare failed" means the write was not applied, and the add
//! goes on with a fresh read; if the masters applied it twice or answered
//! wrongly, the element shows up twice in the final read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rafter_client::{Client, Error as ClientError};
use rafter_proto::kv::compare::{CompareResult, CompareTarget, TargetUnion};
use rafter_proto::kv::request_op::Request;
use rafter_proto::kv::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::history::{Answer, Completion, EventType, HistoryError, Process, Recorder};

/// How often an indeterminate Txn is resent with the same `write_id` under
/// `retry_same_write` before the add is given up as `info`.
pub const SAME_WRITE_RETRIES: u32 = 3;

/// The key, as recorded in the history.
pub const KEY: &str = "s";

const FULL_KEY: &str = "jepsen/set/s";

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct SetConfig {
    /// Concurrent worker tasks.
    pub concurrency: usize,
    /// Pause between one worker's adds.
    pub op_delay: Duration,
    /// Read-modify-cas rounds before an add whose compare keeps failing is
    /// given up (`fail`).
    pub max_attempts: u32,
    /// Resend an indeterminate Txn with the same `write_id`.
    pub retry_same_write: bool,
}

impl Default for SetConfig {
    fn default() -> Self {
        SetConfig {
            concurrency: 10,
            op_delay: Duration::from_millis(10),
            max_attempts: 50,
            retry_same_write: false,
        }
    }
}

/// The workload's shared state.
#[derive(Clone)]
pub struct SetWorkload {
    config: SetConfig,
    recorder: Recorder,
    next_process: Arc<AtomicU64>,
    next_element: Arc<AtomicU64>,
}

impl SetWorkload {
    /// A workload recording into `recorder`.
    pub fn new(config: SetConfig, recorder: Recorder) -> Self {
        SetWorkload {
            config,
            recorder,
            next_process: Arc::new(AtomicU64::new(0)),
            next_element: Arc::new(AtomicU64::new(1)),
        }
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

    async fn worker(
        &self,
        client: Client,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), HistoryError> {
        let mut process = self.new_process();
        while !crate::nemesis::sleep_or_stop(self.config.op_delay, &mut stop).await {
            let element = self.next_element.fetch_add(1, Ordering::SeqCst);
            let p = Process::Client(process);
            self.recorder
                .record(p, EventType::Invoke, "add", Some(KEY), json!(element), None)?;
            let c = self.add(&client, element).await;
            self.recorder.complete(p, "add", Some(KEY), &c)?;
            if c.kind == EventType::Info {
                process = self.new_process();
            }
        }
        Ok(())
    }

    async fn add(&self, client: &Client, element: u64) -> Completion {
        let value = json!(element);
        let mut answer = Answer::Unknown;
        for _ in 0..self.config.max_attempts {
            // Nothing of this add has taken effect yet: any failure is `fail`.
            let (mut list, revision) = match read_list(client).await {
                Ok(r) => r,
                Err(ReadError::Client(e)) => return Completion::failed(value, &e),
                Err(ReadError::NotAList(reason)) => return Completion::fail(value, reason),
            };
            list.push(element);
            let req = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Mod as i32,
                    key: FULL_KEY.into(),
                    target_union: Some(TargetUnion::ModRevision(revision)),
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: FULL_KEY.into(),
                        value: json!(list).to_string().into_bytes(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
                write_id: Some(client.next_write_id()),
            };
            let mut retries = 0;
            loop {
                match client.txn(req.clone()).await {
                    Ok(r) if r.succeeded => return Completion::ok(value, r.header.as_ref()),
                    // Not applied: read again, after a short random pause so
                    // that contending workers spread out.
                    Ok(r) => {
                        answer = Answer::of(r.header.as_ref());
                        let ms = rand::rng().random_range(0..20);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        break;
                    }
                    Err(ClientError::Unavailable { .. })
                        if self.config.retry_same_write && retries < SAME_WRITE_RETRIES =>
                    {
                        retries += 1;
                    }
                    Err(e) => return Completion::of_write_error(value, &e),
                }
            }
        }
        Completion::fail(
            value,
            format!("compare failed {} times in a row", self.config.max_attempts),
        )
        .answered(answer)
    }

    /// One final read as a fresh process, recorded; returns its type.
    pub async fn final_read(&self, client: &Client) -> Result<EventType, HistoryError> {
        let p = Process::Client(self.new_process());
        self.recorder
            .record(p, EventType::Invoke, "read", Some(KEY), Value::Null, None)?;
        let done = match client.range(range_request()).await {
            // Whatever is there, as JSON if it is JSON, else as text: the
            // checker judges it.
            Ok(resp) => {
                let value = resp.kvs.first().map_or(json!([]), |kv| {
                    serde_json::from_slice(&kv.value)
                        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&kv.value)))
                });
                Completion::ok(value, resp.header.as_ref())
            }
            Err(e) => Completion::failed(Value::Null, &e),
        };
        self.recorder.complete(p, "read", Some(KEY), &done)?;
        Ok(done.kind)
    }
}

fn range_request() -> RangeRequest {
    RangeRequest {
        key: FULL_KEY.into(),
        ..Default::default()
    }
}

/// Why the list could not be read.
enum ReadError {
    /// The read failed.
    Client(ClientError),
    /// The value is not a JSON list of integers.
    NotAList(String),
}

/// The list and the key's `mod_revision` (0 when absent).
async fn read_list(client: &Client) -> Result<(Vec<u64>, u64), ReadError> {
    let resp = client
        .range(range_request())
        .await
        .map_err(ReadError::Client)?;
    match resp.kvs.first() {
        None => Ok((Vec::new(), 0)),
        Some(kv) => serde_json::from_slice::<Vec<u64>>(&kv.value)
            .map(|l| (l, kv.mod_revision))
            .map_err(|e| {
                ReadError::NotAList(format!(
                    "value {:?} is not a list of integers: {e}",
                    String::from_utf8_lossy(&kv.value)
                ))
            }),
    }
}
