//! The set (exactly-once) checker.
//!
//! The history holds `add` operations, each adding one unique integer
//! element, and a final `read` whose `ok` value is the whole set as read
//! (a list, which may contain an element twice). The last `ok` read is the
//! final one. Rules:
//!
//! - every element whose add was `ok` must be in the final read (else
//!   **lost**);
//! - no element may appear more than once (else **duplicated**), whatever
//!   its add's outcome;
//! - an element nobody tried to add, or whose add was `fail` (certainly not
//!   applied), must not appear (else **unexpected**);
//! - an element whose add was `info` (or never completed) may be present
//!   once or absent.
//!
//! A history without an `ok` read has no verdict: `unknown`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::checker::linearizability::Verdict;
use crate::history::{Event, HistoryError, Operation, Outcome};

/// The set checker's report.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    /// Valid when nothing is lost, duplicated or unexpected.
    pub verdict: Verdict,
    /// Adds invoked.
    pub attempted: usize,
    /// Adds that were `ok`.
    pub acknowledged: usize,
    /// Adds that were `fail`.
    pub failed: usize,
    /// Adds that were `info` or never completed.
    pub indeterminate: usize,
    /// Size of the final read (with duplicates), if there was one.
    pub final_read_size: Option<usize>,
    /// Indeterminate adds whose element is in the final read.
    pub indeterminate_present: usize,
    /// Acknowledged elements missing from the final read.
    pub lost: Vec<u64>,
    /// Elements the final read holds more than once.
    pub duplicated: Vec<u64>,
    /// Elements in the final read that were never added, or whose add
    /// failed.
    pub unexpected: Vec<u64>,
    /// Why the verdict is not valid when the lists above do not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Checks a history (events as read from a file).
pub fn check_events(events: &[Event]) -> Result<SetReport, HistoryError> {
    Ok(check_operations(&crate::history::operations(events)?))
}

/// Checks paired operations.
pub fn check_operations(ops: &[Operation]) -> SetReport {
    let mut outcome: BTreeMap<u64, Outcome> = BTreeMap::new();
    let mut report = SetReport {
        verdict: Verdict::Valid,
        attempted: 0,
        acknowledged: 0,
        failed: 0,
        indeterminate: 0,
        final_read_size: None,
        indeterminate_present: 0,
        lost: Vec::new(),
        duplicated: Vec::new(),
        unexpected: Vec::new(),
        note: None,
    };
    let mut final_read: Option<&Value> = None;
    let mut bad_adds = Vec::new();
    for op in ops {
        match op.f.as_str() {
            "add" => {
                let Some(e) = op.input.as_u64() else {
                    bad_adds.push(op.input.to_string());
                    continue;
                };
                report.attempted += 1;
                match op.outcome {
                    Outcome::Ok => report.acknowledged += 1,
                    Outcome::Fail => report.failed += 1,
                    Outcome::Info => report.indeterminate += 1,
                }
                outcome.insert(e, op.outcome);
            }
            "read" if op.outcome == Outcome::Ok => final_read = Some(&op.output),
            _ => {}
        }
    }
    if !bad_adds.is_empty() {
        report.verdict = Verdict::Unknown;
        report.note = Some(format!(
            "adds of non-integer elements: {}",
            bad_adds.join(", ")
        ));
        return report;
    }
    let Some(read) = final_read else {
        report.verdict = Verdict::Unknown;
        report.note = Some("no successful final read".into());
        return report;
    };
    let Some(elements) = read
        .as_array()
        .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
    else {
        report.verdict = Verdict::Invalid;
        report.note = Some(format!("final read is not a list of integers: {read}"));
        return report;
    };
    report.final_read_size = Some(elements.len());
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for &e in &elements {
        *counts.entry(e).or_default() += 1;
    }
    report.duplicated = counts
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&e, _)| e)
        .collect();
    for &e in counts.keys() {
        match outcome.get(&e) {
            None | Some(Outcome::Fail) => report.unexpected.push(e),
            Some(Outcome::Info) => report.indeterminate_present += 1,
            Some(Outcome::Ok) => {}
        }
    }
    let present: BTreeSet<u64> = counts.keys().copied().collect();
    report.lost = outcome
        .iter()
        .filter(|&(e, &o)| o == Outcome::Ok && !present.contains(e))
        .map(|(&e, _)| e)
        .collect();
    if !(report.lost.is_empty() && report.duplicated.is_empty() && report.unexpected.is_empty()) {
        report.verdict = Verdict::Invalid;
    }
    report
}

impl SetReport {
    /// A few lines for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "adds: {} attempted, {} ok, {} fail, {} indeterminate ({} of them present)",
            self.attempted,
            self.acknowledged,
            self.failed,
            self.indeterminate,
            self.indeterminate_present
        );
        match self.final_read_size {
            Some(n) => {
                let _ = writeln!(out, "final read: {n} elements");
            }
            None => {
                let _ = writeln!(out, "final read: none");
            }
        }
        for (name, list) in [
            ("lost (acknowledged, missing)", &self.lost),
            ("duplicated", &self.duplicated),
            ("unexpected (never added, or add failed)", &self.unexpected),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "{name}: {} {}", list.len(), short_list(list));
            }
        }
        if let Some(note) = &self.note {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(out, "\noverall: {}", self.verdict);
        out
    }
}

/// The first few items of a list, for a summary line.
pub(crate) fn short_list<T: std::fmt::Display>(list: &[T]) -> String {
    let shown: Vec<String> = list.iter().take(20).map(ToString::to_string).collect();
    let more = if list.len() > 20 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::parse_history;

    fn check(lines: &str) -> SetReport {
        check_events(&parse_history(lines.as_bytes()).unwrap()).unwrap()
    }

    /// Adds 1 (ok), 2 (ok), 3 (info), 4 (fail), then the final read.
    fn history(read: &str) -> String {
        format!(
            r#"{{"process":0,"type":"invoke","f":"add","key":"s","value":1,"time":1}}
{{"process":1,"type":"invoke","f":"add","key":"s","value":2,"time":2}}
{{"process":0,"type":"ok","f":"add","key":"s","value":1,"time":3}}
{{"process":2,"type":"invoke","f":"add","key":"s","value":3,"time":4}}
{{"process":1,"type":"ok","f":"add","key":"s","value":2,"time":5}}
{{"process":3,"type":"invoke","f":"add","key":"s","value":4,"time":6}}
{{"process":2,"type":"info","f":"add","key":"s","value":3,"time":7,"error":"no master answered"}}
{{"process":3,"type":"fail","f":"add","key":"s","value":4,"time":8}}
{{"process":9,"type":"invoke","f":"read","key":"s","value":null,"time":10}}
{{"process":9,"type":"ok","f":"read","key":"s","value":{read},"time":11}}
"#
        )
    }

    #[test]
    fn acknowledged_elements_present_once_are_valid_with_or_without_info() {
        for read in ["[1,2]", "[2,1,3]"] {
            let r = check(&history(read));
            assert_eq!(r.verdict, Verdict::Valid, "{read}: {}", r.render());
            assert_eq!((r.attempted, r.acknowledged, r.failed), (4, 2, 1));
        }
        assert_eq!(check(&history("[1,2,3]")).indeterminate_present, 1);
    }

    #[test]
    fn a_lost_element_is_invalid() {
        let r = check(&history("[1,3]"));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.lost, vec![2]);
        assert!(r.duplicated.is_empty() && r.unexpected.is_empty());
        assert!(r.render().contains("lost"), "{}", r.render());
    }

    #[test]
    fn a_duplicated_element_is_invalid_even_if_its_add_was_info() {
        let r = check(&history("[1,2,1]"));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.duplicated, vec![1]);
        let r = check(&history("[1,2,3,3]"));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.duplicated, vec![3]);
        assert!(r.lost.is_empty() && r.unexpected.is_empty());
    }

    #[test]
    fn unexpected_elements_are_invalid() {
        // 7 was never added; 4's add failed.
        let r = check(&history("[1,2,7]"));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.unexpected, vec![7]);
        let r = check(&history("[1,2,4]"));
        assert_eq!(r.unexpected, vec![4]);
    }

    #[test]
    fn no_final_read_is_unknown_and_garbage_is_invalid() {
        let h = history("[1,2]");
        let without_read: String = h.lines().take(8).map(|l| format!("{l}\n")).collect();
        assert_eq!(check(&without_read).verdict, Verdict::Unknown);
        assert_eq!(check(&history("\"1,2\"")).verdict, Verdict::Invalid);
    }
}
