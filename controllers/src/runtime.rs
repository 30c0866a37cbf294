//! The machinery every controller shares: a work queue of object keys and
//! the loop that feeds them to a [`Reconciler`].
//!
//! The queue is client-go's: a key is queued once however often it is
//! added, one worker at a time reconciles it (an add while it is being
//! reconciled queues it again afterwards), and a key can be added after a
//! delay (backoff, periodic resync). Informer events only say *which*
//! objects to look at; `reconcile` reads the current state from the caches
//! and makes the world match, so it is idempotent and a missed or repeated
//! event is harmless.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rafter_client::Error;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// An object's (namespace, name); namespace is empty for cluster-scoped kinds.
pub type Key = (String, String);

/// The key of an object.
pub fn key_of<K: rafter_proto::object::Object>(obj: &K) -> Key {
    let m = obj.metadata();
    (m.namespace.clone(), m.name.clone())
}

/// What to do with a key after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next event about it.
    Done,
    /// Look again after this long (a deadline, a grace period, a poll).
    RequeueAfter(Duration),
}

/// One controller: makes the world match one object's desired state.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name, for logs and events.
    fn name(&self) -> &'static str;

    /// Brings the object `key` to its desired state. Idempotent.
    fn reconcile(&self, key: &Key) -> impl Future<Output = Result<Action, Error>> + Send;

    /// How long to wait before retrying `key` after its `failures`-th
    /// failure in a row. Default: at once on a Conflict (someone else
    /// wrote first: read again), otherwise exponential from 50 ms to 30 s.
    fn error_policy(&self, key: &Key, error: &Error, failures: u32) -> Duration {
        let _ = key;
        if error.is_reason("Conflict") && failures < 5 {
            return Duration::from_millis(5);
        }
        backoff(failures)
    }
}

/// 50 ms doubling per failure, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 50u64.saturating_mul(1u64 << failures.min(20));
    Duration::from_millis(ms.min(30_000))
}

#[derive(Default)]
struct State {
    ready: VecDeque<Key>,
    /// Keys in `ready` (so a key is queued once).
    queued: HashSet<Key>,
    /// Keys a worker is reconciling.
    active: HashSet<Key>,
    /// Keys added while active: queued again when the worker finishes.
    dirty: HashSet<Key>,
    /// Keys to add at a time.
    delayed: BTreeMap<(Instant, u64), Key>,
    seq: u64,
}

/// A de-duplicating work queue of keys. Cheap to clone; clones share it.
#[derive(Clone, Default)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock().expect("queue lock");
        f.debug_struct("Queue")
            .field("ready", &s.ready.len())
            .field("active", &s.active.len())
            .field("delayed", &s.delayed.len())
            .finish()
    }
}

impl Queue {
    pub fn new() -> Self {
        Queue::default()
    }

    /// Queues `key` now.
    pub fn add(&self, key: Key) {
        let mut s = self.state.lock().expect("queue lock");
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: Key, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut s = self.state.lock().expect("queue lock");
        s.seq += 1;
        let seq = s.seq;
        s.delayed.insert((Instant::now() + delay, seq), key);
        drop(s);
        self.notify.notify_one();
    }

    /// Number of keys waiting (ready or delayed).
    pub fn len(&self) -> usize {
        let s = self.state.lock().expect("queue lock");
        s.ready.len() + s.delayed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next key to work on; waits for one. The caller must call
    /// [`Queue::done`] with it afterwards.
    pub async fn next(&self) -> Key {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("queue lock");
                let now = Instant::now();
                while let Some(entry) = s.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    if s.active.contains(&key) {
                        s.dirty.insert(key);
                    } else if s.queued.insert(key.clone()) {
                        s.ready.push_back(key);
                    }
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    if !s.ready.is_empty() {
                        // Let another worker pick up the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
                s.delayed.keys().next().map(|(at, _)| *at)
            };
            match wait {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, self.notify.notified()).await;
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Marks `key` finished; queues it again if it was added meanwhile.
    pub fn done(&self, key: &Key) {
        let mut s = self.state.lock().expect("queue lock");
        s.active.remove(key);
        if s.dirty.remove(key) && s.queued.insert(key.clone()) {
            s.ready.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }
}

/// Runs `reconciler` over `queue` with `workers` concurrent workers (one
/// key is never worked on by two at once) until `shutdown` is cancelled.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    queue: Queue,
    workers: usize,
    shutdown: CancellationToken,
) {
    let failures: Arc<Mutex<HashMap<Key, u32>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let reconciler = reconciler.clone();
        let queue = queue.clone();
        let failures = failures.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let key = tokio::select! {
                    k = queue.next() => k,
                    _ = shutdown.cancelled() => return,
                };
                let result = tokio::select! {
                    r = reconciler.reconcile(&key) => r,
                    _ = shutdown.cancelled() => return,
                };
                queue.done(&key);
                match result {
                    Ok(action) => {
                        failures.lock().expect("failures lock").remove(&key);
                        if let Action::RequeueAfter(d) = action {
                            queue.add_after(key, d);
                        }
                    }
                    Err(e) => {
                        let n = {
                            let mut f = failures.lock().expect("failures lock");
                            let n = f.entry(key.clone()).or_insert(0);
                            *n += 1;
                            *n
                        };
                        let delay = reconciler.error_policy(&key, &e, n);
                        tracing::debug!(
                            controller = reconciler.name(),
                            namespace = %key.0,
                            name = %key.1,
                            failures = n,
                            error = %e,
                            "reconcile failed; retrying in {delay:?}"
                        );
                        queue.add_after(key, delay);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> Key {
        ("ns".into(), n.into())
    }

    #[tokio::test]
    async fn a_key_is_queued_once() {
        let q = Queue::new();
        q.add(k("a"));
        q.add(k("a"));
        q.add(k("b"));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, k("a"));
        assert_eq!(q.next().await, k("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn an_add_while_active_requeues_after_done() {
        let q = Queue::new();
        q.add(k("a"));
        let key = q.next().await;
        q.add(k("a"));
        assert!(q.is_empty(), "an active key is not handed out twice");
        q.done(&key);
        assert_eq!(q.next().await, k("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_keys_arrive_after_their_delay() {
        let q = Queue::new();
        q.add_after(k("late"), Duration::from_secs(5));
        q.add_after(k("early"), Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(q.next().await, k("early"));
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(q.next().await, k("late"));
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_secs(30));
    }
}
