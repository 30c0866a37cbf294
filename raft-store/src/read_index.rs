//! Batched read index: many concurrent linearizable reads share one
//! leadership confirmation.
//!
//! A linearizable read needs a read index taken *after* the read arrived,
//! confirmed by a quorum round trip (openraft's `get_read_log_id`, or the
//! leader's answer to a follower's `ReadIndex` request). Doing that per read
//! costs one round of RPCs to every follower per read. Here a read joins the
//! *next* round: one task takes every waiting read, runs one round, and
//! hands its result to all of them. A read that arrives while a round is
//! running waits for the following one, never for the one already started,
//! so every read's index is still taken after it arrived — batching changes
//! the cost, not the guarantee.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::oneshot;

use crate::error::Error;

/// The outcome of one round: the read index, `None` when this master
/// cannot take it now (not the leader, or the leader said it is not), or
/// why it failed.
pub type Round = Result<Option<u64>, Arc<Error>>;

type Waiter = oneshot::Sender<Round>;

/// Coalesces concurrent read-index requests into rounds.
pub struct ReadIndexBatcher {
    waiters: mpsc::UnboundedSender<Waiter>,
}

impl ReadIndexBatcher {
    /// Starts the task that runs `round` for each batch of waiting reads. The
    /// task ends when the batcher is dropped.
    pub fn spawn<F, Fut>(round: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Round> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(w) = rx.try_recv() {
                    batch.push(w);
                }
                let result = round().await;
                for w in batch {
                    let _ = w.send(result.clone());
                }
            }
        });
        Self { waiters: tx }
    }

    /// Joins the next round and returns its outcome.
    pub async fn read_index(&self) -> Result<Option<u64>, Error> {
        let (tx, rx) = oneshot::channel();
        self.waiters.send(tx).map_err(|_| Error::ShuttingDown)?;
        match rx.await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err(e)) => Err(e.copy()),
            Err(_) => Err(Error::ShuttingDown),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_reads_share_a_round_and_late_reads_wait_for_the_next() {
        let rounds = Arc::new(AtomicU64::new(0));
        let counter = rounds.clone();
        let batcher = Arc::new(ReadIndexBatcher::spawn(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Some(n))
            }
        }));
        // The first read starts round 1; the hundred that arrive while it
        // runs all share round 2.
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.read_index().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let late: Vec<_> = (0..100)
            .map(|_| {
                let b = batcher.clone();
                tokio::spawn(async move { b.read_index().await.unwrap() })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Some(1));
        for l in late {
            assert_eq!(l.await.unwrap(), Some(2));
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_round_fails_each_of_its_reads() {
        let batcher = ReadIndexBatcher::spawn(|| async { Err(Arc::new(Error::NoLeader)) });
        assert!(matches!(batcher.read_index().await, Err(Error::NoLeader)));
    }
}
