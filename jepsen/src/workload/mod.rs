//! Workloads: what the client processes do during a run, and how their
//! outcomes are classified as ok / fail / info.

pub mod durability;
pub mod lease;
pub mod register;
pub mod set;
pub mod watch;

/// Runs `concurrency` workers made by `worker` until they all finish, and
/// returns the first history write error any of them hit. A worker's panic is
/// passed on.
pub(crate) async fn run_workers<F, Fut>(
    concurrency: usize,
    mut worker: F,
) -> Result<(), crate::history::HistoryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::history::HistoryError>> + Send + 'static,
{
    let workers: Vec<_> = (0..concurrency).map(|_| tokio::spawn(worker())).collect();
    let mut result = Ok(());
    for w in workers {
        match w.await {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
            _ => {}
        }
    }
    result
}
