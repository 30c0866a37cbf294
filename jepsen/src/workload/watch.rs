//! The watch workload: writers put (and now and then delete) a handful of
//! keys under `jepsen/watch/`, while watchers — at least one per master,
//! each pinned to its master — stream every change under that prefix from
//! the revision after warm-up. Checked by [`crate::checker::watch`]: every
//! watcher must see the same ordered, gap-free, duplicate-free sequence of
//! revisions, with the same events per revision, and that sequence must
//! agree with the writes' acknowledged revisions and the final state.
//!
//! The watchers use the raw gRPC `Watch` stream rather than
//! [`rafter_client::WatchStream`]: that one drops repeated revisions on the
//! client side, which would hide a master that sends one twice. When a
//! stream breaks (its master was killed, removed, or the stream erred) the
//! watcher opens a new one at the same master from the revision after the
//! last one it received — the resume the masters promise.
//!
//! History (keys are recorded without the prefix):
//! - `put`: invoke value `{"value": n}` (n unique in the run); `ok` value
//!   `{"value": n, "revision": R}`, R the revision the put created.
//! - `delete`: invoke value `{}`; `ok` value `{"revision": R, "deleted": d}`
//!   (for `d` = 0 no revision was created; R is the current one).
//! - `watch` (no key): one chunk of one watcher's stream, at most
//!   [`CHUNK`] long. Invoke value `{"watcher": w, "node": "n2", "from": S}`
//!   (S is the revision the watcher asks for next); `ok` value the same plus
//!   `"revisions": [{"revision": R, "events": [{"type": "put", "key": "k1",
//!   "value": 5}, {"type": "delete", "key": "k2"}]}, ...]`, the responses
//!   received in order, exactly as received. A chunk whose stream broke is
//!   still `ok` with what it received (and an `error` saying why); a chunk
//!   that could not open a stream, or broke before receiving anything, is
//!   `fail` (a watch has no effect).
//!
//! At the end (after the faults are healed) one writer puts the key `end`;
//! every watcher must then catch up to its revision. Then a `read` (no key)
//! takes the final state, `ok` value `{"revision": H, "kvs": {"k1": 5,
//! ...}}`, and a final watcher (its invoke values also have `"final":
//! true`; it moves on to the next master when a stream breaks) reads the
//! whole sequence from the start once more, until past the end key and
//! quiet for a chunk.
//!
//! Outcomes of writes as everywhere: `Error::Unavailable` is `info`, any
//! other error `fail`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rafter_client::Client;
use rafter_proto::kv::event::EventType as PbEventType;
use rafter_proto::kv::kv_client::KvClient;
use rafter_proto::kv::{DeleteRangeRequest, PutRequest, RangeRequest, WatchRequest, WatchResponse};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::history::{Answer, Completion, EventType, HistoryError, Process, Recorder};

/// The stored key prefix.
pub const PREFIX: &str = "jepsen/watch/";

/// The key put once at the end, that every watcher must reach.
pub const END_KEY: &str = "end";

/// Longest time one `watch` operation collects responses.
pub const CHUNK: Duration = Duration::from_secs(1);

/// Settings of the workload.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Concurrent writers.
    pub writers: usize,
    /// Watchers per master.
    pub watchers_per_node: usize,
    /// Keys written.
    pub keys: usize,
    /// Pause between one writer's writes.
    pub op_delay: Duration,
    /// Share of writes that are deletes, in percent.
    pub delete_percent: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            writers: 4,
            watchers_per_node: 1,
            keys: 5,
            op_delay: Duration::from_millis(20),
            delete_percent: 10,
        }
    }
}

/// The workload's shared state.
#[derive(Clone)]
pub struct WatchWorkload {
    config: WatchConfig,
    recorder: Recorder,
    /// (name, address) of every master.
    nodes: Vec<(String, String)>,
    /// The first revision every watcher asks for.
    start_revision: u64,
    next_process: Arc<AtomicU64>,
    next_value: Arc<AtomicU64>,
    /// Set at the end: the end key's revision and the deadline for catching
    /// up to it.
    target: Arc<watch::Sender<Option<(u64, Instant)>>>,
    /// The running watchers.
    tasks: Arc<Mutex<Vec<JoinHandle<Result<(), HistoryError>>>>>,
}

/// One watcher: its masters (one, pinned, for the watchers during the run;
/// every master in turn for the final one), and its stream, kept open
/// between operations.
struct Watcher {
    id: usize,
    /// The final watcher, reading everything once more after the run.
    last: bool,
    masters: Vec<(String, RawKv)>,
    current: usize,
    process: u64,
    /// The revision to ask for when (re)opening the stream.
    next: u64,
    stream: Option<tonic::Streaming<WatchResponse>>,
}

/// How one `watch` chunk ended.
struct Chunk {
    kind: EventType,
    revisions: Vec<Value>,
    error: Option<String>,
}

/// Adds the cluster's bearer token to a request.
type TokenInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A raw KV client of one master, with the token.
type RawKv = KvClient<InterceptedService<Channel, TokenInterceptor>>;

fn add_token(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let value = format!("Bearer {}", crate::cluster::TOKEN)
        .parse()
        .expect("the token is ASCII");
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// A raw KV client for one master that notices a dead connection within a
/// few seconds (HTTP/2 pings).
fn kv_client(addr: &str) -> RawKv {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("master addresses are host:port")
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true);
    let auth: TokenInterceptor = add_token;
    KvClient::new(InterceptedService::new(endpoint.connect_lazy(), auth))
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// The history form of one watch response.
fn revision_json(resp: &WatchResponse) -> (u64, Value) {
    let events: Vec<Value> = resp
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let key = String::from_utf8_lossy(&kv.key);
            let key = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
            if e.r#type == PbEventType::Delete as i32 {
                json!({"type": "delete", "key": key})
            } else {
                json!({"type": "put", "key": key, "value": number_or_text(&kv.value)})
            }
        })
        .collect();
    let revision = match resp.header.as_ref().map(|h| h.revision) {
        Some(r) if r > 0 => r,
        _ => resp
            .events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max()
            .unwrap_or(0),
    };
    (revision, json!({"revision": revision, "events": events}))
}

fn number_or_text(bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    text.parse::<u64>()
        .map_or_else(|_| json!(text), |n| json!(n))
}

impl WatchWorkload {
    /// A workload recording into `recorder`; `nodes` are (name, address) of
    /// every master; watchers start at `start_revision`.
    pub fn new(
        config: WatchConfig,
        recorder: Recorder,
        nodes: Vec<(String, String)>,
        start_revision: u64,
    ) -> Self {
        WatchWorkload {
            config,
            recorder,
            nodes,
            start_revision,
            next_process: Arc::new(AtomicU64::new(0)),
            next_value: Arc::new(AtomicU64::new(1)),
            target: Arc::new(watch::channel(None).0),
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }

    /// Starts the watchers (they run until [`WatchWorkload::finish`]), then
    /// runs the writers until `stop` turns true.
    pub async fn run(
        &self,
        client: Client,
        stop: watch::Receiver<bool>,
    ) -> Result<(), HistoryError> {
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            for round in 0..self.config.watchers_per_node.max(1) {
                for (i, (name, addr)) in self.nodes.iter().enumerate() {
                    let watcher = Watcher {
                        id: round * self.nodes.len() + i,
                        last: false,
                        masters: vec![(name.clone(), kv_client(addr))],
                        current: 0,
                        process: self.new_process(),
                        next: self.start_revision,
                        stream: None,
                    };
                    let this = self.clone();
                    tasks.push(tokio::spawn(async move { this.watch_loop(watcher).await }));
                }
            }
        }
        super::run_workers(self.config.writers, || {
            let this = self.clone();
            let client = client.clone();
            let stop = stop.clone();
            async move { this.writer(client, stop).await }
        })
        .await
    }

    async fn writer(
        &self,
        client: Client,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), HistoryError> {
        let mut process = self.new_process();
        while !crate::nemesis::sleep_or_stop(self.config.op_delay, &mut stop).await {
            let (key, delete) = {
                let mut rng = rand::rng();
                (
                    format!("k{}", rng.random_range(0..self.config.keys.max(1))),
                    rng.random_range(0..100) < self.config.delete_percent,
                )
            };
            let kind = if delete {
                self.delete(&client, process, &key).await?
            } else {
                self.put(&client, process, &key).await?
            };
            if kind == EventType::Info {
                process = self.new_process();
            }
        }
        Ok(())
    }

    /// One recorded put of a fresh value; returns its completion type and
    /// revision.
    async fn put_value(
        &self,
        client: &Client,
        process: u64,
        key: &str,
    ) -> Result<(EventType, u64), HistoryError> {
        let n = self.next_value.fetch_add(1, Ordering::SeqCst);
        let p = Process::Client(process);
        self.recorder.record(
            p,
            EventType::Invoke,
            "put",
            Some(key),
            json!({"value": n}),
            None,
        )?;
        let req = PutRequest {
            key: format!("{PREFIX}{key}").into_bytes(),
            value: n.to_string().into_bytes(),
            ..Default::default()
        };
        let (done, revision) = match client.put_request(req).await {
            Ok(resp) => {
                let r = resp.header.as_ref().map_or(0, |h| h.revision);
                let value = json!({"value": n, "revision": r});
                (Completion::ok(value, resp.header.as_ref()), r)
            }
            Err(e) => (Completion::of_write_error(json!({"value": n}), &e), 0),
        };
        self.recorder.complete(p, "put", Some(key), &done)?;
        Ok((done.kind, revision))
    }

    async fn put(
        &self,
        client: &Client,
        process: u64,
        key: &str,
    ) -> Result<EventType, HistoryError> {
        Ok(self.put_value(client, process, key).await?.0)
    }

    async fn delete(
        &self,
        client: &Client,
        process: u64,
        key: &str,
    ) -> Result<EventType, HistoryError> {
        let p = Process::Client(process);
        self.recorder
            .record(p, EventType::Invoke, "delete", Some(key), json!({}), None)?;
        let req = DeleteRangeRequest {
            key: format!("{PREFIX}{key}").into_bytes(),
            ..Default::default()
        };
        let done = match client.delete_request(req).await {
            Ok(resp) => {
                let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                let value = json!({"revision": revision, "deleted": resp.deleted});
                Completion::ok(value, resp.header.as_ref())
            }
            Err(e) => Completion::of_write_error(json!({}), &e),
        };
        self.recorder.complete(p, "delete", Some(key), &done)?;
        Ok(done.kind)
    }

    /// Watch chunks until the end target is set and reached (or its deadline
    /// passed).
    async fn watch_loop(&self, mut w: Watcher) -> Result<(), HistoryError> {
        let mut target = self.target.subscribe();
        loop {
            if let Some((end, deadline)) = *target.borrow_and_update()
                && (w.next > end || Instant::now() > deadline)
            {
                return Ok(());
            }
            let chunk = self.chunk(&mut w).await?;
            if chunk == EventType::Fail {
                // Nothing to stream from right now; try again shortly (or as
                // soon as the end is announced).
                let _ = tokio::time::timeout(Duration::from_millis(200), target.changed()).await;
            }
        }
    }

    /// One recorded `watch` operation: up to [`CHUNK`] of responses (less
    /// when the end target is reached first).
    async fn chunk(&self, w: &mut Watcher) -> Result<EventType, HistoryError> {
        let p = Process::Client(w.process);
        let node = w.masters[w.current].0.clone();
        let from = w.next;
        let mut header = json!({"watcher": w.id, "node": node, "from": from});
        if w.last {
            header["final"] = json!(true);
        }
        self.recorder
            .record(p, EventType::Invoke, "watch", None, header.clone(), None)?;
        let c = self.collect(w).await;
        let mut value = header;
        if c.kind == EventType::Ok {
            value["revisions"] = Value::Array(c.revisions);
        }
        self.recorder
            .record(p, c.kind, "watch", None, value, c.error)?;
        Ok(c.kind)
    }

    async fn collect(&self, w: &mut Watcher) -> Chunk {
        let chunk_end = tokio::time::Instant::now() + CHUNK;
        let end = || self.target.borrow().map(|(e, _)| e);
        let mut revisions = Vec::new();
        if w.stream.is_none() {
            let mut kv = w.masters[w.current].1.clone();
            let req = WatchRequest {
                key: PREFIX.into(),
                prefix: true,
                start_revision: w.next,
                prev_kv: false,
                ..Default::default()
            };
            match tokio::time::timeout_at(chunk_end, kv.watch(req)).await {
                Ok(Ok(resp)) => w.stream = Some(resp.into_inner()),
                Ok(Err(status)) => return self.broke(w, revisions, status.to_string()),
                Err(_) => return self.broke(w, revisions, "stream not opened in time".into()),
            }
        }
        let stream = w.stream.as_mut().expect("opened above");
        loop {
            if end().is_some_and(|e| w.next > e) {
                break;
            }
            match tokio::time::timeout_at(chunk_end, stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    if resp.events.is_empty() {
                        continue;
                    }
                    let (revision, value) = revision_json(&resp);
                    w.next = w.next.max(revision + 1);
                    revisions.push(value);
                }
                Ok(Ok(None)) => {
                    return self.broke(w, revisions, "the master ended the stream".into());
                }
                Ok(Err(status)) => return self.broke(w, revisions, status.to_string()),
                Err(_) => break,
            }
        }
        Chunk {
            kind: EventType::Ok,
            revisions,
            error: None,
        }
    }

    /// The stream broke: drop it, move to the watcher's next master, and end
    /// the chunk (`ok` with what arrived, or `fail` when nothing did).
    fn broke(&self, w: &mut Watcher, revisions: Vec<Value>, why: String) -> Chunk {
        w.stream = None;
        w.current = (w.current + 1) % w.masters.len();
        Chunk {
            kind: if revisions.is_empty() {
                EventType::Fail
            } else {
                EventType::Ok
            },
            revisions,
            error: Some(why),
        }
    }

    /// The end of the run, after healing: put the end key (retrying as fresh
    /// processes), let every watcher catch up to its revision, read the
    /// whole sequence once more with a fresh watcher over every master, and
    /// read the final state. Returns the final read's type, or `None` when
    /// the end key could not be written before `deadline`.
    pub async fn finish(
        &self,
        client: &Client,
        deadline: Instant,
    ) -> Result<Option<EventType>, HistoryError> {
        let end = loop {
            let (kind, revision) = self.put_value(client, self.new_process(), END_KEY).await?;
            if kind == EventType::Ok {
                break revision;
            }
            if Instant::now() > deadline {
                self.target.send_replace(Some((0, deadline)));
                self.join_watchers().await?;
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.target.send_replace(Some((end, deadline)));
        self.join_watchers().await?;

        // The final state, then the whole sequence again from the start.
        loop {
            if self.final_read(client).await? == EventType::Ok {
                break;
            }
            if Instant::now() > deadline {
                return Ok(Some(EventType::Fail));
            }
        }
        let mut w = Watcher {
            id: self.nodes.len() * self.config.watchers_per_node.max(1),
            last: true,
            masters: self
                .nodes
                .iter()
                .map(|(name, addr)| (name.clone(), kv_client(addr)))
                .collect(),
            current: 0,
            process: self.new_process(),
            next: self.start_revision,
            stream: None,
        };
        // Until past the end key and a whole chunk brought nothing new.
        self.target.send_replace(None);
        loop {
            let before = w.next;
            let kind = self.chunk(&mut w).await?;
            if kind == EventType::Ok && w.next > end && w.next == before {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            if kind == EventType::Fail {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(Some(EventType::Ok))
    }

    async fn join_watchers(&self) -> Result<(), HistoryError> {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut result = Ok(());
        for t in tasks {
            match t.await {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
                _ => {}
            }
        }
        result
    }

    /// The final state: one prefix read by a fresh process; returns its
    /// type.
    async fn final_read(&self, client: &Client) -> Result<EventType, HistoryError> {
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
                let mut kvs = Map::new();
                for kv in &resp.kvs {
                    let key = String::from_utf8_lossy(&kv.key);
                    let key = key.strip_prefix(PREFIX).unwrap_or(&key).to_string();
                    kvs.insert(key, number_or_text(&kv.value));
                }
                let revision = resp.header.as_ref().map_or(0, |h| h.revision);
                let value = json!({"revision": revision, "kvs": kvs});
                Completion::ok(value, resp.header.as_ref())
            }
            Err(e) => Completion::failed(Value::Null, &e),
        };
        self.recorder.complete(p, "read", None, &done)?;
        Ok(done.kind)
    }
}
