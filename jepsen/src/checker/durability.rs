//! The durability checker.
//!
//! The history holds `write` operations, each putting a fresh key once, and
//! a final `read` (no `key`) whose `ok` value is an object mapping every key
//! found under the workload's prefix to its value. The last `ok` read is the
//! final one. Rules:
//!
//! - every key whose write was `ok` must be present with the value written
//!   (else **lost**, or **wrong value**);
//! - a key whose write was `info` (or never completed) may be absent, but if
//!   present must hold the value written (else **wrong value**);
//! - a key nobody wrote, or whose write was `fail`, must be absent (else
//!   **unexpected**).
//!
//! A history without an `ok` read has no verdict: `unknown`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::checker::linearizability::Verdict;
use crate::checker::set::short_list;
use crate::history::{Event, HistoryError, Operation, Outcome};

/// A key holding something other than what was written to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrongValue {
    /// The key.
    pub key: String,
    /// What was written.
    pub written: Value,
    /// What the final read found.
    pub found: Value,
}

/// The durability checker's report.
#[derive(Debug, Clone, Serialize)]
pub struct DurabilityReport {
    /// Valid when nothing is lost, wrong or unexpected.
    pub verdict: Verdict,
    /// Writes invoked.
    pub attempted: usize,
    /// Writes that were `ok`.
    pub acknowledged: usize,
    /// Writes that were `fail`.
    pub failed: usize,
    /// Writes that were `info` or never completed.
    pub indeterminate: usize,
    /// Keys in the final read, if there was one.
    pub final_read_keys: Option<usize>,
    /// Indeterminate writes whose key is in the final read.
    pub indeterminate_present: usize,
    /// Acknowledged keys missing from the final read.
    pub lost: Vec<String>,
    /// Keys holding a value other than the one written.
    pub wrong_value: Vec<WrongValue>,
    /// Keys in the final read never written, or whose write failed.
    pub unexpected: Vec<String>,
    /// Why the verdict is not valid when the lists above do not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Checks a history (events as read from a file).
pub fn check_events(events: &[Event]) -> Result<DurabilityReport, HistoryError> {
    Ok(check_operations(&crate::history::operations(events)?))
}

/// Checks paired operations.
pub fn check_operations(ops: &[Operation]) -> DurabilityReport {
    let mut writes: BTreeMap<&str, (&Value, Outcome)> = BTreeMap::new();
    let mut report = DurabilityReport {
        verdict: Verdict::Valid,
        attempted: 0,
        acknowledged: 0,
        failed: 0,
        indeterminate: 0,
        final_read_keys: None,
        indeterminate_present: 0,
        lost: Vec::new(),
        wrong_value: Vec::new(),
        unexpected: Vec::new(),
        note: None,
    };
    let mut final_read: Option<&Value> = None;
    for op in ops {
        match (op.f.as_str(), &op.key) {
            ("write", Some(key)) => {
                report.attempted += 1;
                match op.outcome {
                    Outcome::Ok => report.acknowledged += 1,
                    Outcome::Fail => report.failed += 1,
                    Outcome::Info => report.indeterminate += 1,
                }
                writes.insert(key, (&op.input, op.outcome));
            }
            ("read", _) if op.outcome == Outcome::Ok => final_read = Some(&op.output),
            _ => {}
        }
    }
    let Some(read) = final_read else {
        report.verdict = Verdict::Unknown;
        report.note = Some("no successful final read".into());
        return report;
    };
    let empty = Map::new();
    let found = match read {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            report.verdict = Verdict::Invalid;
            report.note = Some(format!("final read is not an object of keys: {other}"));
            return report;
        }
    };
    report.final_read_keys = Some(found.len());
    for (key, value) in found {
        match writes.get(key.as_str()) {
            None | Some((_, Outcome::Fail)) => report.unexpected.push(key.clone()),
            Some((written, outcome)) => {
                if *outcome == Outcome::Info {
                    report.indeterminate_present += 1;
                }
                if *written != value {
                    report.wrong_value.push(WrongValue {
                        key: key.clone(),
                        written: (*written).clone(),
                        found: value.clone(),
                    });
                }
            }
        }
    }
    report.lost = writes
        .iter()
        .filter(|(key, (_, o))| *o == Outcome::Ok && !found.contains_key(**key))
        .map(|(key, _)| key.to_string())
        .collect();
    if !(report.lost.is_empty() && report.wrong_value.is_empty() && report.unexpected.is_empty()) {
        report.verdict = Verdict::Invalid;
    }
    report
}

impl DurabilityReport {
    /// A few lines for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "writes: {} attempted, {} ok, {} fail, {} indeterminate ({} of them present)",
            self.attempted,
            self.acknowledged,
            self.failed,
            self.indeterminate,
            self.indeterminate_present
        );
        match self.final_read_keys {
            Some(n) => {
                let _ = writeln!(out, "final read: {n} keys");
            }
            None => {
                let _ = writeln!(out, "final read: none");
            }
        }
        if !self.lost.is_empty() {
            let _ = writeln!(
                out,
                "lost (acknowledged, missing): {} {}",
                self.lost.len(),
                short_list(&self.lost)
            );
        }
        if !self.unexpected.is_empty() {
            let _ = writeln!(
                out,
                "unexpected (never written, or write failed): {} {}",
                self.unexpected.len(),
                short_list(&self.unexpected)
            );
        }
        for w in self.wrong_value.iter().take(20) {
            let _ = writeln!(
                out,
                "wrong value: {} written {} found {}",
                w.key, w.written, w.found
            );
        }
        if let Some(note) = &self.note {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(out, "\noverall: {}", self.verdict);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::parse_history;

    fn check(lines: &str) -> DurabilityReport {
        check_events(&parse_history(lines.as_bytes()).unwrap()).unwrap()
    }

    /// Writes k1 (ok), k2 (ok), k3 (info), k4 (fail), a kill-all, then the
    /// final read.
    fn history(read: &str) -> String {
        format!(
            r#"{{"process":0,"type":"invoke","f":"write","key":"k1","value":1,"time":1}}
{{"process":0,"type":"ok","f":"write","key":"k1","value":1,"time":2}}
{{"process":1,"type":"invoke","f":"write","key":"k2","value":2,"time":3}}
{{"process":1,"type":"ok","f":"write","key":"k2","value":2,"time":4}}
{{"process":"nemesis","type":"info","f":"start","value":{{"fault":"kill-all","nodes":["n1","n2","n3"]}},"time":5}}
{{"process":2,"type":"invoke","f":"write","key":"k3","value":3,"time":6}}
{{"process":3,"type":"invoke","f":"write","key":"k4","value":4,"time":7}}
{{"process":2,"type":"info","f":"write","key":"k3","value":3,"time":8,"error":"no master answered"}}
{{"process":3,"type":"fail","f":"write","key":"k4","value":4,"time":9}}
{{"process":"nemesis","type":"info","f":"stop","value":{{"fault":"kill-all","nodes":["n1","n2","n3"]}},"time":10}}
{{"process":9,"type":"invoke","f":"read","value":null,"time":11}}
{{"process":9,"type":"ok","f":"read","value":{read},"time":12}}
"#
        )
    }

    #[test]
    fn acknowledged_writes_present_are_valid_with_or_without_info() {
        for read in [r#"{"k1":1,"k2":2}"#, r#"{"k1":1,"k2":2,"k3":3}"#] {
            let r = check(&history(read));
            assert_eq!(r.verdict, Verdict::Valid, "{read}: {}", r.render());
            assert_eq!((r.attempted, r.acknowledged, r.failed), (4, 2, 1));
        }
    }

    #[test]
    fn a_lost_durable_write_is_invalid() {
        let r = check(&history(r#"{"k1":1,"k3":3}"#));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.lost, vec!["k2".to_string()]);
        assert!(r.render().contains("lost"), "{}", r.render());
        // Everything lost: the cluster came back empty.
        let r = check(&history("null"));
        assert_eq!(r.lost.len(), 2);
        assert_eq!(r.verdict, Verdict::Invalid);
    }

    #[test]
    fn wrong_and_unexpected_values_are_invalid() {
        let r = check(&history(r#"{"k1":1,"k2":5}"#));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.wrong_value[0].key, "k2");
        let r = check(&history(r#"{"k1":1,"k2":2,"k4":4,"k9":9}"#));
        assert_eq!(r.unexpected, vec!["k4".to_string(), "k9".to_string()]);
    }

    #[test]
    fn no_final_read_is_unknown() {
        let h = history("{}");
        let without_read: String = h.lines().take(10).map(|l| format!("{l}\n")).collect();
        assert_eq!(check(&without_read).verdict, Verdict::Unknown);
    }
}
