//! The closed-loop load generator: `clients` workers, each sending its next
//! request as soon as the previous one is answered, for a warm-up and then
//! a measured period. Requests that *finish* inside the measured period
//! count, with their whole latency (counting only those that also started
//! inside it would drop the slowest ones of a short run).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::error::BenchError;
use crate::stats::micros;

/// What one load run measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Latencies of the successful requests, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Failed requests (after the client's own retries).
    pub errors: u64,
    /// Length of the measured period.
    pub seconds: f64,
}

/// Runs `op(worker, n)` (the worker's `n`-th request) from `clients`
/// concurrent workers.
pub async fn closed_loop<F, Fut>(
    clients: usize,
    warmup: Duration,
    measure: Duration,
    op: F,
) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let op = Arc::new(op);
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let r = op(w, n).await;
                    n += 1;
                    let t1 = Instant::now();
                    let counted = t1 >= begin && t1 <= end;
                    match r {
                        Ok(()) if counted => lat.push(micros(t1 - t0)),
                        Ok(()) => {}
                        Err(e) => {
                            if counted {
                                errors += 1;
                            }
                            tracing::debug!("request failed: {e}");
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut result = LoadResult {
        seconds: measure.as_secs_f64(),
        ..Default::default()
    };
    for w in workers {
        if let Ok((lat, errors)) = w.await {
            result.latencies_us.extend(lat);
            result.errors += errors;
        }
    }
    result
}
