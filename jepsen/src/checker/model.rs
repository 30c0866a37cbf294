//! The sequential specification the linearizability checker tests against:
//! a single register per key with read, write and compare-and-set.
//!
//! Values are integers; `None` is an absent key. The model is deterministic
//! given the operation's output, so the checker needs no set of states.

use std::fmt;

use serde_json::Value;

use crate::history::{Operation, Outcome};

/// The register's state: its value, `None` when the key does not exist.
pub type RegisterState = Option<i64>;

/// What an operation asked for and, when known, what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned the given value.
    Read(Option<i64>),
    /// A write of the value; `ok` or `info` alike (an `info` write placed
    /// last is the same as one that never happened).
    Write(i64),
    /// A compare-and-set that certainly succeeded (`ok`).
    Cas {
        /// The value compared against.
        expected: i64,
        /// The value written on a match.
        new: i64,
    },
    /// A compare-and-set of unknown outcome (`info`): if the register holds
    /// `expected` it may have been set, otherwise it did nothing.
    CasMaybe {
        /// The value compared against.
        expected: i64,
        /// The value written on a match.
        new: i64,
    },
}

/// An operation that cannot be expressed in the register model.
#[derive(Debug, thiserror::Error)]
#[error("process {process} {f} at {call} ns: {reason}")]
pub struct ModelError {
    /// The operation's process.
    pub process: u64,
    /// Its function.
    pub f: String,
    /// Its invoke time.
    pub call: u64,
    /// What is wrong.
    pub reason: String,
}

impl RegisterOp {
    /// Translates a history operation; `Ok(None)` for operations with no
    /// effect on the check (`fail`ed ones, reads of unknown outcome).
    pub fn from_operation(op: &Operation) -> Result<Option<RegisterOp>, ModelError> {
        let err = |reason: String| ModelError {
            process: op.process,
            f: op.f.clone(),
            call: op.call,
            reason,
        };
        if op.outcome == Outcome::Fail {
            return Ok(None);
        }
        let info = op.outcome == Outcome::Info;
        let int = |v: &Value, what: &str| {
            v.as_i64()
                .ok_or_else(|| err(format!("{what} must be an integer, got {v}")))
        };
        match op.f.as_str() {
            "read" if info => Ok(None),
            "read" => match &op.output {
                Value::Null => Ok(Some(RegisterOp::Read(None))),
                v => Ok(Some(RegisterOp::Read(Some(int(v, "a read's value")?)))),
            },
            "write" => Ok(Some(RegisterOp::Write(int(&op.input, "a write's value")?))),
            "cas" => {
                let pair = op
                    .input
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| {
                        err(format!(
                            "a cas value must be [expected, new], got {}",
                            op.input
                        ))
                    })?;
                let (expected, new) = (int(&pair[0], "cas expected")?, int(&pair[1], "cas new")?);
                Ok(Some(if info {
                    RegisterOp::CasMaybe { expected, new }
                } else {
                    RegisterOp::Cas { expected, new }
                }))
            }
            other => Err(err(format!(
                "unknown function {other:?} for the register model"
            ))),
        }
    }

    /// Applies the operation to `state`: the next state, or `None` when the
    /// operation could not have happened in that state.
    pub fn step(&self, state: RegisterState) -> Option<RegisterState> {
        match *self {
            RegisterOp::Read(v) => (v == state).then_some(state),
            RegisterOp::Write(v) => Some(Some(v)),
            RegisterOp::Cas { expected, new } => (state == Some(expected)).then_some(Some(new)),
            RegisterOp::CasMaybe { expected, new } => {
                // Placing it last is "never happened", so when it matches we
                // may as well assume it took effect.
                Some(if state == Some(expected) {
                    Some(new)
                } else {
                    state
                })
            }
        }
    }
}

impl fmt::Display for RegisterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<i64>| v.map_or("nil".to_string(), |v| v.to_string());
        match *self {
            RegisterOp::Read(v) => write!(f, "read -> {}", show(v)),
            RegisterOp::Write(v) => write!(f, "write {v}"),
            RegisterOp::Cas { expected, new } => write!(f, "cas {expected} -> {new}"),
            RegisterOp::CasMaybe { expected, new } => write!(f, "cas {expected} -> {new} (info)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_accept_the_current_value() {
        assert_eq!(RegisterOp::Read(None).step(None), Some(None));
        assert_eq!(RegisterOp::Read(Some(1)).step(None), None);
        assert_eq!(RegisterOp::Read(Some(1)).step(Some(1)), Some(Some(1)));
    }

    #[test]
    fn cas_sets_only_on_a_match_and_info_cas_never_blocks() {
        let cas = RegisterOp::Cas {
            expected: 1,
            new: 2,
        };
        assert_eq!(cas.step(Some(1)), Some(Some(2)));
        assert_eq!(cas.step(Some(3)), None);
        let maybe = RegisterOp::CasMaybe {
            expected: 1,
            new: 2,
        };
        assert_eq!(maybe.step(Some(1)), Some(Some(2)));
        assert_eq!(maybe.step(None), Some(None));
    }
}
