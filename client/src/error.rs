//! The client's error type, and the one place that decides which gRPC
//! failures are worth retrying on another master.
//!
//! The masters' contract: `UNAVAILABLE` means "this master cannot serve
//! right now, ask another"; `OUT_OF_RANGE` with a message starting
//! `compacted:` means a revision below the compaction point; the other codes
//! a master returns on purpose (`NOT_FOUND`, `INVALID_ARGUMENT`,
//! `FAILED_PRECONDITION`, `ALREADY_EXISTS`, ...) are answers, not failures.
//! Transport trouble (refused connections, resets, timeouts) is indeterminate:
//! the request may or may not have been applied, and the only safe thing is to
//! ask again — which is fine because reads have no effect and writes carry a
//! [`WriteId`](crate::WriteId) the masters de-duplicate on.

use std::error::Error as StdError;
use std::fmt::Write as _;

use tonic::{Code, Status};

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client was created with an empty endpoint list.
    #[error("no endpoints given: pass at least one master as host:port")]
    NoEndpoints,

    /// An endpoint is not a usable `host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The token holds characters a request header cannot carry.
    #[error("the token is not valid: it must be printable ASCII without spaces")]
    InvalidToken,

    /// The requested revision (a watch start or a past Range revision) is
    /// below the master's compaction point: its history is gone. The caller
    /// should read the current state again and watch from there.
    #[error(
        "revision {requested} has been compacted (compact revision {compact_revision}); \
         read the current state and watch from a newer revision"
    )]
    Compacted {
        /// The revision that was asked for.
        requested: u64,
        /// The oldest revision still available, 0 when the master did not say.
        compact_revision: u64,
    },

    /// No master gave an answer before the overall timeout. `tried` holds,
    /// per endpoint in the order first tried, the last reason it failed.
    #[error("no master answered: {}", format_tried(.tried))]
    Unavailable {
        /// `(endpoint, reason)` pairs.
        tried: Vec<(String, String)>,
    },

    /// A master answered with a definite error (the request was refused and
    /// changed nothing), e.g. `NOT_FOUND` for an unknown lease.
    // The status is the error itself, not its cause, so it is not marked
    // `#[source]`: error reports would otherwise print its message twice.
    #[error("server error ({:?}): {}", .status.code(), .status.message())]
    Status {
        /// The master's answer.
        status: Status,
        /// The master that gave it (`host:port` as configured), when the
        /// error came from a call rather than from the client itself.
        endpoint: Option<String>,
    },
}

impl Error {
    /// The gRPC status of a definite server error, if this is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The master that gave a definite server error, if known. (A success
    /// names its master in the response header's `member_id`.)
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Error::Status { endpoint, .. } => endpoint.as_deref(),
            _ => None,
        }
    }

    /// Names `endpoint` as the master that gave a definite server error
    /// (other errors are returned as they are).
    pub(crate) fn answered_by(self, endpoint: &str) -> Self {
        match self {
            Error::Status { status, .. } => Error::Status {
                status,
                endpoint: Some(endpoint.to_string()),
            },
            other => other,
        }
    }

    /// A definite error that did not come from a master's answer (e.g. a
    /// reply the client could not decode).
    pub fn local_status(status: Status) -> Self {
        Error::Status {
            status,
            endpoint: None,
        }
    }

    /// The gRPC code of a definite server error, if this is one.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// True for a definite `NOT_FOUND` answer.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// The object API's description of a definite error (reason, message,
    /// field causes), when the master sent one.
    pub fn api_status(&self) -> Option<rafter_proto::api::ApiStatus> {
        use prost::Message;
        let s = self.status()?;
        if s.details().is_empty() {
            return None;
        }
        rafter_proto::api::ApiStatus::decode(s.details()).ok()
    }

    /// The object API's reason ("NotFound", "Conflict", "Gone", ...), if any.
    pub fn reason(&self) -> Option<String> {
        self.api_status().map(|s| s.reason)
    }

    /// True when the object API answered with `reason`.
    pub fn is_reason(&self, reason: &str) -> bool {
        self.reason().as_deref() == Some(reason)
    }
}

fn format_tried(tried: &[(String, String)]) -> String {
    if tried.is_empty() {
        return "no endpoint was tried".to_string();
    }
    let mut out = String::new();
    for (i, (endpoint, reason)) in tried.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{endpoint}: {reason}");
    }
    out
}

/// What one failed attempt means for the failover loop.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Indeterminate or "not here": try the next endpoint. Holds a short
    /// description for [`Error::Unavailable`].
    Retry(String),
    /// A definite answer: stop and return it.
    Fail(Error),
}

/// Sorts a failed call into "try elsewhere" or "this is the answer".
/// `requested_revision` fills in [`Error::Compacted::requested`] when the
/// caller knows it (0 otherwise: then it is parsed from the message).
pub(crate) fn classify(status: Status, requested_revision: u64) -> Outcome {
    if let Some(err) = compacted(&status, requested_revision) {
        return Outcome::Fail(err);
    }
    match status.code() {
        // Unavailable: the master's "ask another one", and what tonic maps
        // refused or failed connections to. DeadlineExceeded / Cancelled: a
        // timeout, the request may or may not have run. Unknown and Internal:
        // what broken HTTP/2 streams and connections resets turn into.
        // Aborted: the server gave up on the request (e.g. leadership moved
        // mid-proposal); retrying is its documented remedy.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::Aborted => Outcome::Retry(describe(&status)),
        // The caller names the endpoint (`Error::answered_by`).
        _ => Outcome::Fail(Error::Status {
            status,
            endpoint: None,
        }),
    }
}

/// `Some(Error::Compacted)` when the status is the masters' "compacted:"
/// answer. The message is free text; the compact revision is taken from
/// "compact revision [is] N" / "compact_revision=N" if
/// present, else from the last number in the message, else 0.
pub(crate) fn compacted(status: &Status, requested_revision: u64) -> Option<Error> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    let msg = status.message().trim_start();
    let rest = msg.strip_prefix("compacted:")?;
    let compact_revision = number_after(rest, &["compact revision", "compact_revision"])
        .or_else(|| numbers(rest).last().copied())
        .unwrap_or(0);
    let requested = if requested_revision != 0 {
        requested_revision
    } else {
        number_after(
            rest,
            &["required revision", "requested revision", "revision"],
        )
        .unwrap_or(0)
    };
    Some(Error::Compacted {
        requested,
        compact_revision,
    })
}

/// The first number after any of `labels` (skipping spaces, `=`, `:` and
/// the word "is").
fn number_after(text: &str, labels: &[&str]) -> Option<u64> {
    labels.iter().find_map(|label| {
        let start = text.find(label)? + label.len();
        let rest = text[start..].trim_start_matches([' ', '=', ':']);
        let rest = rest.strip_prefix("is ").unwrap_or(rest).trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A one-line reason for a failed attempt: the status message, followed by
/// the innermost cause when there is one (for transport errors the message
/// alone is "tcp connect error" — the cause says "Connection refused").
pub(crate) fn describe(status: &Status) -> String {
    let mut text = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    };
    let mut cause: Option<&(dyn StdError + 'static)> = status.source();
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    if let Some(c) = innermost {
        let c = c.to_string();
        if !c.is_empty() && !text.contains(&c) {
            let _ = write!(text, ": {c}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_answer_becomes_compacted_error() {
        let s =
            Status::out_of_range("compacted: requested revision 3 is below compact revision 10");
        match classify(s, 0) {
            Outcome::Fail(Error::Compacted {
                requested,
                compact_revision,
            }) => {
                assert_eq!(requested, 3);
                assert_eq!(compact_revision, 10);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn compacted_message_of_raft_store_is_understood() {
        let s = Status::out_of_range(
            "compacted: required revision 5 has been compacted; compact revision is 120",
        );
        match classify(s, 0) {
            Outcome::Fail(Error::Compacted {
                requested: 5,
                compact_revision: 120,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn compacted_uses_known_request_revision() {
        let s = Status::out_of_range("compacted: compact_revision=42");
        match classify(s, 7) {
            Outcome::Fail(Error::Compacted {
                requested: 7,
                compact_revision: 42,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn other_out_of_range_is_definite() {
        let s = Status::out_of_range("limit too large");
        assert!(matches!(
            classify(s, 0),
            Outcome::Fail(Error::Status { .. })
        ));
    }

    #[test]
    fn unavailable_and_transport_errors_are_retried() {
        for s in [
            Status::unavailable("no leader"),
            Status::deadline_exceeded("slow"),
            Status::cancelled("timeout expired"),
            Status::unknown("transport"),
        ] {
            assert!(matches!(classify(s, 0), Outcome::Retry(_)));
        }
    }

    #[test]
    fn definite_answers_are_not_retried() {
        for s in [
            Status::not_found("lease not found"),
            Status::invalid_argument("empty key"),
            Status::failed_precondition("learner"),
            Status::already_exists("member"),
        ] {
            assert!(matches!(
                classify(s, 0),
                Outcome::Fail(Error::Status { .. })
            ));
        }
    }

    #[test]
    fn unavailable_lists_every_endpoint_tried() {
        let e = Error::Unavailable {
            tried: vec![
                ("a:1".into(), "connection refused".into()),
                ("b:2".into(), "no leader".into()),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no master answered: a:1: connection refused; b:2: no leader"
        );
    }
}
