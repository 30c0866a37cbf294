//! Workloads: what the client processes do during a run, and how their
//! outcomes are classified as ok / fail / info.

pub mod durability;
pub mod lease;
pub mod register;
pub mod set;
pub mod watch;

use rafter_client::Error as ClientError;
use rafter_proto::kv::ResponseHeader;
use serde_json::Value;

use crate::history::{Answer, Completion, EventType};

impl Answer {
    /// The master a response `header` names.
    pub fn of(header: Option<&ResponseHeader>) -> Self {
        header.map_or(Answer::Unknown, |h| Answer::Member(h.member_id))
    }
}

impl Completion {
    /// `ok` with `value`, answered by the master the response `header` names.
    pub fn ok(value: Value, header: Option<&ResponseHeader>) -> Self {
        Completion {
            kind: EventType::Ok,
            value,
            error: None,
            answer: Answer::of(header),
        }
    }

    /// The same, answered by `answer`.
    pub fn answered(self, answer: Answer) -> Self {
        Completion { answer, ..self }
    }

    /// `fail` for a reason the client decided on (no master's error).
    pub fn fail(value: Value, reason: impl Into<String>) -> Self {
        Completion {
            kind: EventType::Fail,
            value,
            error: Some(reason.into()),
            answer: Answer::Unknown,
        }
    }

    /// `fail` with the master's answer `error`: for reads, which change
    /// nothing whatever happened, and for refusals.
    pub fn failed(value: Value, error: &ClientError) -> Self {
        Completion {
            kind: EventType::Fail,
            value,
            error: Some(error.to_string()),
            answer: error
                .endpoint()
                .map_or(Answer::Unknown, |e| Answer::Endpoint(e.to_string())),
        }
    }

    /// A write's error: `info` when no master answered (it may have been
    /// applied), `fail` for a definite error.
    pub fn of_write_error(value: Value, error: &ClientError) -> Self {
        let mut done = Self::failed(value, error);
        if matches!(error, ClientError::Unavailable { .. }) {
            done.kind = EventType::Info;
        }
        done
    }
}

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
