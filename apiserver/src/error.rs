//! API errors: a Kubernetes-style reason plus message (and field causes for
//! Invalid), sent as a gRPC status whose details carry the [`ApiStatus`], so
//! clients act on the reason, not on text.

use prost::Message;
use rafter_proto::api::{ApiStatus, FieldCause};
use rafter_proto::object::KindInfo;
use rafter_raft_store::Error as StoreError;
use tonic::{Code, Status};

/// Why a request failed, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    Gone,
    Unavailable,
    Forbidden,
    Unauthenticated,
    BadRequest,
    MethodNotAllowed,
    Timeout,
    InternalError,
}

impl Reason {
    fn name(&self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::Gone => "Gone",
            Reason::Unavailable => "Unavailable",
            Reason::Forbidden => "Forbidden",
            Reason::Unauthenticated => "Unauthenticated",
            Reason::BadRequest => "BadRequest",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::Timeout => "Timeout",
            Reason::InternalError => "InternalError",
        }
    }

    /// The gRPC code. Only Unavailable, Timeout and InternalError are ones
    /// clients retry at another master.
    fn code(&self) -> Code {
        match self {
            Reason::NotFound => Code::NotFound,
            Reason::AlreadyExists => Code::AlreadyExists,
            Reason::Conflict => Code::FailedPrecondition,
            Reason::Invalid | Reason::BadRequest => Code::InvalidArgument,
            Reason::Gone => Code::OutOfRange,
            Reason::Unavailable => Code::Unavailable,
            Reason::Forbidden => Code::PermissionDenied,
            Reason::Unauthenticated => Code::Unauthenticated,
            Reason::MethodNotAllowed => Code::Unimplemented,
            Reason::Timeout => Code::DeadlineExceeded,
            Reason::InternalError => Code::Internal,
        }
    }
}

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    pub causes: Vec<FieldCause>,
    pub leader: String,
    pub kind: String,
    pub name: String,
}

pub type Result<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            causes: Vec::new(),
            leader: String::new(),
            kind: String::new(),
            name: String::new(),
        }
    }

    /// `deployments.apps "web" not found`
    pub fn not_found(info: &KindInfo, name: &str) -> Self {
        ApiError {
            kind: info.kind.into(),
            name: name.into(),
            ..Self::new(
                Reason::NotFound,
                format!("{} \"{name}\" not found", info.qualified_plural()),
            )
        }
    }

    pub fn already_exists(info: &KindInfo, name: &str) -> Self {
        ApiError {
            kind: info.kind.into(),
            name: name.into(),
            ..Self::new(
                Reason::AlreadyExists,
                format!("{} \"{name}\" already exists", info.qualified_plural()),
            )
        }
    }

    pub fn conflict(info: &KindInfo, name: &str, why: &str) -> Self {
        ApiError {
            kind: info.kind.into(),
            name: name.into(),
            ..Self::new(
                Reason::Conflict,
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    info.qualified_plural()
                ),
            )
        }
    }

    /// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be ...`
    pub fn invalid(info: &KindInfo, name: &str, causes: Vec<FieldCause>) -> Self {
        let kind = match info.group() {
            "" => info.kind.to_string(),
            g => format!("{}.{g}", info.kind),
        };
        let list: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let detail = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        ApiError {
            kind: info.kind.into(),
            name: name.into(),
            causes,
            ..Self::new(
                Reason::Invalid,
                format!("{kind} \"{name}\" is invalid: {detail}"),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::InternalError, message)
    }

    pub fn status(&self) -> ApiStatus {
        ApiStatus {
            reason: self.reason.name().into(),
            message: self.message.clone(),
            causes: self.causes.clone(),
            leader: self.leader.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let details = e.status().encode_to_vec();
        Status::with_details(e.reason.code(), e.message, details.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match e {
            StoreError::Compacted { .. } => ApiError::new(
                Reason::Gone,
                format!(
                    "too old resource version: {message}; list again and watch from the list's resourceVersion"
                ),
            ),
            StoreError::NoLeader
            | StoreError::LeaderUnreachable { .. }
            | StoreError::ShuttingDown
            | StoreError::Raft(_) => ApiError::new(Reason::Unavailable, message),
            StoreError::Timeout(_) => ApiError::new(Reason::Timeout, message),
            StoreError::Proposal { code, message } => {
                let reason = match Code::from(code) {
                    Code::Unavailable | Code::Aborted => Reason::Unavailable,
                    Code::DeadlineExceeded => Reason::Timeout,
                    Code::InvalidArgument => Reason::BadRequest,
                    // Term fencing: the writer's master is no longer leader.
                    Code::FailedPrecondition => Reason::Conflict,
                    _ => Reason::InternalError,
                };
                ApiError::new(reason, message)
            }
            StoreError::FutureRevision { .. } | StoreError::InvalidArgument(_) => {
                ApiError::new(Reason::BadRequest, message)
            }
            StoreError::NotFound(_) => ApiError::new(Reason::NotFound, message),
            StoreError::FailedPrecondition(_) => ApiError::new(Reason::Unavailable, message),
            StoreError::Rocks(_) | StoreError::Corrupt(_) => ApiError::internal(message),
        }
    }
}
