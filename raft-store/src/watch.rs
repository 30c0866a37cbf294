//! Serving one watch stream: replay retained history from the start
//! revision, then follow newly applied revisions, never skipping or
//! repeating one.
//!
//! The stream subscribes to applied revisions before it reads history, and
//! whenever the live feed jumps (a slow watcher lagged, or a snapshot install
//! moved the revision) it fills the gap from history again, so the client
//! sees every revision once and in order — or, if the gap was compacted
//! away, the Compacted error.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rafter_proto::kv as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::node::Node;
use crate::range::read_history;

/// What a watcher wants to see.
struct Filter {
    key: Vec<u8>,
    prefix: bool,
    prev_kv: bool,
}

impl Filter {
    fn select(&self, record: &pb::RevisionEvents) -> Vec<pb::Event> {
        record
            .events
            .iter()
            .filter(|e| {
                let key =
                    e.kv.as_ref()
                        .map(|kv| kv.key.as_slice())
                        .unwrap_or_default();
                if self.prefix {
                    key.starts_with(&self.key)
                } else {
                    key == self.key.as_slice()
                }
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// Runs a watch until the receiver goes away, sending responses (or one
/// final error) into `out`.
pub async fn serve(
    node: Arc<Node>,
    req: pb::WatchRequest,
    out: mpsc::Sender<Result<pb::WatchResponse, Error>>,
) {
    let metrics = node.shared.metrics.clone();
    metrics.watchers.inc();
    if let Err(e) = run(&node, req, &out).await {
        let _ = out.send(Err(e)).await;
    }
    metrics.watchers.dec();
}

async fn run(
    node: &Node,
    req: pb::WatchRequest,
    out: &mpsc::Sender<Result<pb::WatchResponse, Error>>,
) -> Result<(), Error> {
    let filter = Filter {
        key: req.key,
        prefix: req.prefix,
        prev_kv: req.prev_kv,
    };
    let mut live = node.shared.events.subscribe();
    let current = node.shared.revision.load(Ordering::Acquire);
    // Last revision the client has been brought up to.
    let mut last = if req.start_revision == 0 {
        current
    } else {
        req.start_revision - 1
    };
    let send = |revision: u64, events: Vec<pb::Event>| {
        let mut header = node.header();
        header.revision = revision;
        let compact_revision = node.shared.compact_revision.load(Ordering::Acquire);
        out.send(Ok(pb::WatchResponse {
            header: Some(header),
            events,
            compact_revision,
        }))
    };
    let catch_up = |last: &mut u64, upto: u64| -> Result<Vec<pb::RevisionEvents>, Error> {
        if *last >= upto {
            return Ok(Vec::new());
        }
        let from = *last + 1;
        let records = read_history(&node.shared.db, from, upto)?;
        // Checked after reading: compaction may have run meanwhile.
        let compact = node.shared.compact_revision.load(Ordering::Acquire);
        if from < compact {
            return Err(Error::Compacted {
                requested: from,
                compact_revision: compact,
            });
        }
        Ok(records)
    };
    for record in catch_up(&mut last, current)? {
        let events = filter.select(&record);
        last = record.revision;
        if !events.is_empty() && send(record.revision, events).await.is_err() {
            return Ok(());
        }
    }
    last = last.max(current);
    let progress = (req.progress_notify_ms > 0)
        .then(|| std::time::Duration::from_millis(req.progress_notify_ms));
    let mut progress_timer =
        tokio::time::interval(progress.unwrap_or(std::time::Duration::from_secs(86_400)));
    progress_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    progress_timer.tick().await;
    loop {
        let record = tokio::select! {
            r = live.recv() => r,
            _ = progress_timer.tick(), if progress.is_some() => {
                // Everything up to `last` has been sent.
                if send(last, Vec::new()).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            _ = out.closed() => return Ok(()),
        };
        let record = match record {
            Ok(r) => r,
            Err(RecvError::Lagged(_)) => {
                // Fill from history up to what is applied now.
                let upto = node.shared.revision.load(Ordering::Acquire);
                for r in catch_up(&mut last, upto)? {
                    let events = filter.select(&r);
                    last = r.revision;
                    if !events.is_empty() && send(r.revision, events).await.is_err() {
                        return Ok(());
                    }
                }
                last = last.max(upto);
                continue;
            }
            Err(RecvError::Closed) => return Err(Error::ShuttingDown),
        };
        if record.revision <= last {
            continue;
        }
        // A wake-up (no events) or a jump: take the missing revisions, and
        // for a wake-up the revision itself, from history.
        let wake_up = record.events.is_empty();
        if wake_up || record.revision > last + 1 {
            let upto = if wake_up {
                record.revision
            } else {
                record.revision - 1
            };
            for r in catch_up(&mut last, upto)? {
                let events = filter.select(&r);
                last = r.revision;
                if !events.is_empty() && send(r.revision, events).await.is_err() {
                    return Ok(());
                }
            }
            last = last.max(upto);
        }
        if wake_up {
            continue;
        }
        let events = filter.select(&record);
        last = record.revision;
        if !events.is_empty() && send(record.revision, events).await.is_err() {
            return Ok(());
        }
    }
}
