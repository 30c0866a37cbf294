//! The history file: every client operation and every fault of a run, one
//! JSON object per line (JSON Lines), in the order they happened.
//!
//! The format is stable and documented in `jepsen/README.md`; checkers read
//! nothing else, so any tool that writes this format can be checked with
//! `rafter-jepsen check`. A client operation is an `invoke` event followed
//! later by exactly one completion (`ok`, `fail` or `info`) of the same
//! process; [`operations`] pairs them.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Failures reading or writing a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be opened, read or written.
    #[error("cannot read or write history file {path}")]
    Io {
        /// The history file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid event.
    #[error("line {line} is not a history event")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A completion without an open invoke of the same process, or a second
    /// invoke before the first completed.
    #[error("line {line}: {reason}")]
    Unpaired {
        /// 1-based line number (event index + 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Who performed an event: a numbered client process, or the nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    /// A client process; a process that got `info` never runs again, its
    /// worker continues under a fresh id.
    Client(u64),
    /// The fault injector; written as the string `"nemesis"`.
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(n) => s.serialize_u64(*n),
            Process::Nemesis => s.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(Process::Client)
                .ok_or_else(|| serde::de::Error::custom("process must be a non-negative integer")),
            Value::String(s) if s == "nemesis" => Ok(Process::Nemesis),
            other => Err(serde::de::Error::custom(format!(
                "process must be an integer or \"nemesis\", got {other}"
            ))),
        }
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(n) => write!(f, "{n}"),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

/// The `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation was started.
    Invoke,
    /// It certainly happened; the value is its result.
    Ok,
    /// It certainly did not happen.
    Fail,
    /// Unknown whether it happened (timeout, lost connection); also the type
    /// of nemesis events.
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Who did it.
    pub process: Process,
    /// Invoke or one of the completions.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function: `read`, `write`, `cas` for the register workload;
    /// `start` / `stop` for nemesis events.
    pub f: String,
    /// The key the operation works on; absent for nemesis events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Argument (invoke) or result (ok); `[expected, new]` for `cas`.
    #[serde(default)]
    pub value: Value,
    /// Nanoseconds since the start of the run.
    pub time: u64,
    /// Why an operation failed or is indeterminate; free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The master that answered (`n1`, ...), on `ok` and `fail` completions
    /// when the client knows it; absent otherwise (an `info` has no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Which master answered an operation, as the client saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Answer {
    /// No master's answer (indeterminate, or decided by the client).
    #[default]
    Unknown,
    /// The member id in a response header.
    Member(u64),
    /// The endpoint (`host:port`) a definite error came from.
    Endpoint(String),
}

/// The masters of a run by member id and by endpoint, to name the one that
/// answered each operation in the history.
#[derive(Debug, Clone, Default)]
pub struct Masters {
    by_id: std::collections::HashMap<u64, String>,
    by_endpoint: std::collections::HashMap<String, String>,
}

impl Masters {
    /// Adds master `name`, serving at `endpoint`, with member id `id`.
    pub fn add(&mut self, name: &str, endpoint: &str, id: u64) {
        self.by_id.insert(id, name.to_string());
        self.by_endpoint
            .insert(endpoint.to_string(), name.to_string());
    }

    /// The name of the master behind `answer`; an id or endpoint not of this
    /// run is written as it is.
    pub fn name(&self, answer: &Answer) -> Option<String> {
        match answer {
            Answer::Unknown => None,
            Answer::Member(id) => Some(
                self.by_id
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| format!("{id:x}")),
            ),
            Answer::Endpoint(e) => Some(self.by_endpoint.get(e).cloned().unwrap_or(e.clone())),
        }
    }
}

/// How a client operation ended: its completion event's type, value and
/// error, and who answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `ok`, `fail` or `info`.
    pub kind: EventType,
    /// The result (`ok`) or the argument again.
    pub value: Value,
    /// Why it failed or is indeterminate.
    pub error: Option<String>,
    /// The master that answered.
    pub answer: Answer,
}

/// Writes events to a history file, stamping them with the time since the
/// writer was created.
pub struct HistoryWriter {
    out: BufWriter<File>,
    path: PathBuf,
    start: Instant,
}

impl HistoryWriter {
    /// Creates (truncates) `path`; time 0 is now.
    pub fn create(path: &Path) -> Result<Self, HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(HistoryWriter {
            out: BufWriter::new(file),
            path: path.to_owned(),
            start: Instant::now(),
        })
    }

    /// Nanoseconds since the writer was created.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends one event (its `time` as given).
    pub fn append(&mut self, event: &Event) -> Result<(), HistoryError> {
        let io = |source| HistoryError::Io {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, event).map_err(|e| io(e.into()))?;
        self.out.write_all(b"\n").map_err(io)
    }

    /// Flushes buffered events to the file.
    pub fn flush(&mut self) -> Result<(), HistoryError> {
        self.out.flush().map_err(|source| HistoryError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// A [`HistoryWriter`] shared by the clients and the nemesis of a run.
/// Each event is stamped and written under one lock, so the file is in time
/// order.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<(HistoryWriter, Masters)>>);

impl Recorder {
    /// Shares `writer`; completions name no master.
    pub fn new(writer: HistoryWriter) -> Self {
        Self::with_masters(writer, Masters::default())
    }

    /// Shares `writer`; completions name the master that answered them,
    /// as found in `masters`.
    pub fn with_masters(writer: HistoryWriter, masters: Masters) -> Self {
        Recorder(Arc::new(Mutex::new((writer, masters))))
    }

    /// Appends the completion `done` of operation `f` by `process`; returns
    /// its time.
    pub fn complete(
        &self,
        process: Process,
        f: &str,
        key: Option<&str>,
        done: &Completion,
    ) -> Result<u64, HistoryError> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (w, masters) = &mut *guard;
        let time = w.now();
        w.append(&Event {
            process,
            kind: done.kind,
            f: f.to_string(),
            key: key.map(str::to_string),
            value: done.value.clone(),
            time,
            error: done.error.clone(),
            node: masters.name(&done.answer),
        })?;
        Ok(time)
    }

    /// Appends an event stamped with the current time; returns the time.
    pub fn record(
        &self,
        process: Process,
        kind: EventType,
        f: &str,
        key: Option<&str>,
        value: Value,
        error: Option<String>,
    ) -> Result<u64, HistoryError> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut guard.0;
        let time = w.now();
        w.append(&Event {
            process,
            kind,
            f: f.to_string(),
            key: key.map(str::to_string),
            value,
            time,
            error,
            node: None,
        })?;
        Ok(time)
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0.now()
    }

    /// Flushes the file.
    pub fn flush(&self) -> Result<(), HistoryError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0.flush()
    }
}

/// Reads a whole history file.
pub fn read_history(path: &Path) -> Result<Vec<Event>, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_history(BufReader::new(file)).map_err(|e| match e {
        HistoryError::Io { source, .. } => HistoryError::Io {
            path: path.to_owned(),
            source,
        },
        other => other,
    })
}

/// Parses JSON Lines events; blank lines are skipped.
pub fn parse_history(input: impl BufRead) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| HistoryError::Io {
            path: PathBuf::new(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            line: i + 1,
            source,
        })?;
        events.push(event);
    }
    Ok(events)
}

/// How a client operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It did not happen.
    Fail,
    /// It may or may not have happened; also used for an invoke that has no
    /// completion in the history (the run ended first).
    Info,
}

/// A client operation: an invoke paired with its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The process that ran it.
    pub process: u64,
    /// `read`, `write`, `cas`, ...
    pub f: String,
    /// The key, if any.
    pub key: Option<String>,
    /// The invoke's value (the argument).
    pub input: Value,
    /// The completion's value (the result); null for `info`.
    pub output: Value,
    /// Invoke time, ns.
    pub call: u64,
    /// Completion time, ns; `None` for `info` (open-ended).
    pub ret: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The completion's `error`, if it had one.
    pub error: Option<String>,
}

/// Pairs each client invoke with its process's next completion; nemesis
/// events are skipped. Invokes still open at the end become `info`.
pub fn operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    use std::collections::HashMap;

    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut ops: Vec<Operation> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Process::Client(p) = e.process else {
            continue;
        };
        match e.kind {
            EventType::Invoke => {
                if open.contains_key(&p) {
                    return Err(HistoryError::Unpaired {
                        line: i + 1,
                        reason: format!("process {p} invokes while its previous operation is open"),
                    });
                }
                open.insert(p, ops.len());
                ops.push(Operation {
                    process: p,
                    f: e.f.clone(),
                    key: e.key.clone(),
                    input: e.value.clone(),
                    output: Value::Null,
                    call: e.time,
                    ret: None,
                    outcome: Outcome::Info,
                    error: None,
                });
            }
            kind => {
                let Some(idx) = open.remove(&p) else {
                    return Err(HistoryError::Unpaired {
                        line: i + 1,
                        reason: format!("process {p} completes an operation it never invoked"),
                    });
                };
                let op = &mut ops[idx];
                op.error.clone_from(&e.error);
                if op.f != e.f {
                    return Err(HistoryError::Unpaired {
                        line: i + 1,
                        reason: format!("process {p} invoked {} but completes {}", op.f, e.f),
                    });
                }
                match kind {
                    EventType::Ok => {
                        op.outcome = Outcome::Ok;
                        op.output = e.value.clone();
                        op.ret = Some(e.time);
                    }
                    EventType::Fail => {
                        op.outcome = Outcome::Fail;
                        op.ret = Some(e.time);
                    }
                    _ => op.outcome = Outcome::Info,
                }
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_through_the_documented_json() {
        let text = r#"{"process":7,"type":"invoke","f":"cas","key":"k3","value":[1,2],"time":10}
{"process":7,"type":"fail","f":"cas","key":"k3","value":[1,2],"time":20}
{"process":"nemesis","type":"info","f":"start","value":{"fault":"kill","nodes":["n1"]},"time":30}
"#;
        let events = parse_history(text.as_bytes()).unwrap();
        assert_eq!(events[0].process, Process::Client(7));
        assert_eq!(events[0].kind, EventType::Invoke);
        assert_eq!(events[0].value, json!([1, 2]));
        assert_eq!(events[2].process, Process::Nemesis);
        assert_eq!(events[2].key, None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut w = HistoryWriter::create(&path).unwrap();
        for e in &events {
            w.append(e).unwrap();
        }
        w.flush().unwrap();
        assert_eq!(read_history(&path).unwrap(), events);
    }

    #[test]
    fn completions_name_the_master_that_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut masters = Masters::default();
        masters.add("n1", "10.0.0.1:2379", 11);
        masters.add("n2", "10.0.0.2:2379", 22);
        let recorder = Recorder::with_masters(HistoryWriter::create(&path).unwrap(), masters);
        let done = |answer| Completion {
            kind: EventType::Ok,
            value: json!(1),
            error: None,
            answer,
        };
        for (p, answer) in [
            (1, Answer::Member(22)),
            (2, Answer::Endpoint("10.0.0.1:2379".into())),
            (3, Answer::Unknown),
            (4, Answer::Member(0xabc)),
        ] {
            let p = Process::Client(p);
            recorder
                .record(p, EventType::Invoke, "write", Some("k"), json!(1), None)
                .unwrap();
            recorder
                .complete(p, "write", Some("k"), &done(answer))
                .unwrap();
        }
        recorder.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let nodes: Vec<Option<String>> = read_history(&path)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventType::Ok)
            .map(|e| e.node)
            .collect();
        let expected = [Some("n2"), Some("n1"), None, Some("abc")];
        assert_eq!(nodes, expected.map(|n| n.map(String::from)));
        // Invokes and unknown answers carry no `node` key at all.
        assert_eq!(text.matches(r#""node""#).count(), 3, "{text}");
    }

    #[test]
    fn operations_pair_invokes_with_completions_and_leave_open_ones_info() {
        let ev = |process, kind, f: &str, value, time| Event {
            process: Process::Client(process),
            kind,
            f: f.into(),
            key: Some("k".into()),
            value,
            time,
            error: None,
            node: None,
        };
        let events = vec![
            ev(1, EventType::Invoke, "write", json!(3), 1),
            ev(2, EventType::Invoke, "read", Value::Null, 2),
            ev(1, EventType::Ok, "write", json!(3), 3),
            ev(2, EventType::Ok, "read", json!(3), 4),
            ev(3, EventType::Invoke, "write", json!(4), 5),
        ];
        let ops = operations(&events).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[1].output, json!(3));
        assert_eq!(ops[1].ret, Some(4));
        assert_eq!(ops[2].outcome, Outcome::Info);
        assert_eq!(ops[2].ret, None);
    }

    #[test]
    fn a_completion_without_invoke_is_rejected() {
        let text = r#"{"process":1,"type":"ok","f":"read","key":"k","value":null,"time":1}"#;
        let events = parse_history(text.as_bytes()).unwrap();
        assert!(matches!(
            operations(&events),
            Err(HistoryError::Unpaired { line: 1, .. })
        ));
    }
}
