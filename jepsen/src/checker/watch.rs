//! The watch checker (history format: [`crate::workload::watch`]).
//!
//! The final watcher's sequence of revisions (read once more from the start
//! after the faults) is the reference. Rules, each violation named in the
//! report:
//!
//! - every watcher's revisions strictly increase (**duplicate** or
//!   **out of order** otherwise);
//! - every revision a watcher received is in the reference with the same
//!   events, in the same order (**unknown revision**, **events differ**);
//! - between its first asked-for revision and the last it received, a
//!   watcher missed no revision of the reference (**gap**);
//! - every watcher caught up to the end key's revision (**behind**);
//! - the reference agrees with the writes: each acknowledged put or delete
//!   is there at the revision it was acknowledged with, each value put is
//!   there at most once and only if its put did not `fail`, each delete
//!   comes from a delete of that key that did not `fail`, and acknowledged
//!   writes got revisions in real-time order (**write mismatch**);
//! - replaying the reference up to the final read's revision gives exactly
//!   the final read (**final state**).
//!
//! No end key, no final read or no final watcher: `unknown`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::checker::linearizability::Verdict;
use crate::history::{Event, HistoryError, Operation, Outcome};
use crate::workload::watch::END_KEY;

/// Most problems listed per kind; the rest are counted.
const SHOWN: usize = 20;

/// One watcher's view.
#[derive(Debug, Clone, Serialize)]
pub struct WatcherSummary {
    /// Its id.
    pub watcher: u64,
    /// The masters that served it.
    pub nodes: Vec<String>,
    /// Whether it is the final watcher.
    pub is_final: bool,
    /// Revisions received.
    pub revisions: usize,
    /// The last revision received (0 for none).
    pub last_revision: u64,
    /// Chunks that could not open a stream, or whose stream broke before
    /// anything arrived (`fail`).
    pub failed_chunks: usize,
    /// Of them, those a master refused as compacted: the revision the
    /// watcher asked for was older than the master's history.
    pub compacted_chunks: usize,
}

/// The watch checker's report.
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    /// Valid when no rule is broken.
    pub verdict: Verdict,
    /// Puts and deletes invoked.
    pub writes_attempted: usize,
    /// Of them, `ok`.
    pub writes_acknowledged: usize,
    /// Of them, `fail`.
    pub writes_failed: usize,
    /// Of them, `info` or never completed.
    pub writes_indeterminate: usize,
    /// Revisions in the reference sequence.
    pub reference_revisions: usize,
    /// The end key's revision.
    pub end_revision: Option<u64>,
    /// Every watcher.
    pub watchers: Vec<WatcherSummary>,
    /// Broken rules, for people (at most [`SHOWN`] per kind).
    pub problems: Vec<String>,
    /// Problems found in all, including those not listed.
    pub problem_count: usize,
    /// Why the verdict is unknown, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One received revision.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    revision: u64,
    events: Value,
}

#[derive(Default)]
struct Problems {
    by_kind: BTreeMap<&'static str, (usize, Vec<String>)>,
}

impl Problems {
    fn add(&mut self, kind: &'static str, text: String) {
        let e = self.by_kind.entry(kind).or_default();
        e.0 += 1;
        if e.1.len() < SHOWN {
            e.1.push(format!("{kind}: {text}"));
        }
    }
    fn count(&self) -> usize {
        self.by_kind.values().map(|(n, _)| n).sum()
    }
    fn list(self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, (n, shown)) in self.by_kind {
            let more = n - shown.len();
            out.extend(shown);
            if more > 0 {
                out.push(format!("{kind}: ... and {more} more"));
            }
        }
        out
    }
}

/// Checks a history (events as read from a file).
pub fn check_events(events: &[Event]) -> Result<WatchReport, HistoryError> {
    Ok(check_operations(&crate::history::operations(events)?))
}

/// A write as the checker needs it.
struct Write<'a> {
    f: &'a str,
    key: &'a str,
    value: Option<u64>,
    outcome: Outcome,
    revision: Option<u64>,
    deleted: i64,
    call: u64,
    ret: Option<u64>,
}

/// Checks paired operations.
pub fn check_operations(ops: &[Operation]) -> WatchReport {
    let mut report = WatchReport {
        verdict: Verdict::Valid,
        writes_attempted: 0,
        writes_acknowledged: 0,
        writes_failed: 0,
        writes_indeterminate: 0,
        reference_revisions: 0,
        end_revision: None,
        watchers: Vec::new(),
        problems: Vec::new(),
        problem_count: 0,
        note: None,
    };
    let mut p = Problems::default();

    // Writes.
    let mut writes: Vec<Write> = Vec::new();
    for op in ops {
        let (f @ ("put" | "delete"), Some(key)) = (op.f.as_str(), op.key.as_deref()) else {
            continue;
        };
        report.writes_attempted += 1;
        match op.outcome {
            Outcome::Ok => report.writes_acknowledged += 1,
            Outcome::Fail => report.writes_failed += 1,
            Outcome::Info => report.writes_indeterminate += 1,
        }
        let ok = op.outcome == Outcome::Ok;
        writes.push(Write {
            f,
            key,
            value: op.input.get("value").and_then(Value::as_u64),
            outcome: op.outcome,
            revision: ok
                .then(|| op.output.get("revision").and_then(Value::as_u64))
                .flatten(),
            deleted: op
                .output
                .get("deleted")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            call: op.call,
            ret: op.ret,
        });
    }
    report.end_revision = writes
        .iter()
        .filter(|w| w.key == END_KEY && w.outcome == Outcome::Ok)
        .filter_map(|w| w.revision)
        .max();
    let final_read = ops
        .iter()
        .rev()
        .find(|o| o.f == "read" && o.key.is_none() && o.outcome == Outcome::Ok);

    // Watchers, each in call order.
    let mut watches: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.f == "watch") {
        if let Some(w) = op.input.get("watcher").and_then(Value::as_u64) {
            watches.entry(w).or_default().push(op);
        }
    }
    let mut sequences: BTreeMap<u64, (Vec<Received>, u64)> = BTreeMap::new();
    let mut final_watcher = None;
    for (w, list) in &mut watches {
        list.sort_by_key(|o| o.call);
        let mut summary = WatcherSummary {
            watcher: *w,
            nodes: Vec::new(),
            is_final: list
                .iter()
                .any(|o| o.input.get("final") == Some(&Value::Bool(true))),
            revisions: 0,
            last_revision: 0,
            failed_chunks: 0,
            compacted_chunks: 0,
        };
        let first_from = list
            .first()
            .and_then(|o| o.input.get("from"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut seq = Vec::new();
        for op in list.iter() {
            if let Some(node) = op.input.get("node").and_then(Value::as_str)
                && !summary.nodes.iter().any(|n| n == node)
            {
                summary.nodes.push(node.to_string());
            }
            if op.outcome != Outcome::Ok {
                summary.failed_chunks += 1;
                if op.error.as_deref().is_some_and(is_compacted) {
                    summary.compacted_chunks += 1;
                }
                continue;
            }
            for r in op
                .output
                .get("revisions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                seq.push(Received {
                    revision: r.get("revision").and_then(Value::as_u64).unwrap_or(0),
                    events: r.get("events").cloned().unwrap_or(Value::Null),
                });
            }
        }
        summary.revisions = seq.len();
        summary.last_revision = seq.last().map_or(0, |r| r.revision);
        if summary.is_final {
            final_watcher = Some(*w);
        }
        report.watchers.push(summary);
        sequences.insert(*w, (seq, first_from));
    }

    let (Some(end), Some(read), Some(fw)) = (report.end_revision, final_read, final_watcher) else {
        report.verdict = Verdict::Unknown;
        report.note = Some(
            match (report.end_revision, final_read, final_watcher) {
                (None, _, _) => "the end key was never acknowledged",
                (_, None, _) => "no successful final read",
                _ => "no final watcher",
            }
            .into(),
        );
        report.problem_count = p.count();
        report.problems = p.list();
        return report;
    };

    // Order within every watcher, the final one included.
    for (w, (seq, _)) in &sequences {
        for pair in seq.windows(2) {
            let (a, b) = (pair[0].revision, pair[1].revision);
            if b == a {
                p.add(
                    "duplicate",
                    format!("watcher {w} received revision {b} twice"),
                );
            } else if b < a {
                p.add(
                    "out of order",
                    format!("watcher {w} received revision {b} after {a}"),
                );
            }
        }
    }

    // The reference.
    let (fseq, _) = &sequences[&fw];
    let mut reference: BTreeMap<u64, &Value> = BTreeMap::new();
    for r in fseq {
        reference.entry(r.revision).or_insert(&r.events);
    }
    report.reference_revisions = reference.len();

    // Every other watcher against it.
    for (w, (seq, from)) in &sequences {
        if *w == fw {
            continue;
        }
        let got: BTreeSet<u64> = seq.iter().map(|r| r.revision).collect();
        for r in seq {
            match reference.get(&r.revision) {
                None => p.add(
                    "unknown revision",
                    format!(
                        "watcher {w} received revision {} that the final watcher did not: {}",
                        r.revision, r.events
                    ),
                ),
                Some(events) if **events != r.events => p.add(
                    "events differ",
                    format!(
                        "watcher {w} revision {}: {} but the final watcher saw {}",
                        r.revision, r.events, events
                    ),
                ),
                _ => {}
            }
        }
        let last = seq.last().map_or(0, |r| r.revision);
        let missed: Vec<u64> = if *from <= last {
            reference
                .range(*from..=last)
                .map(|(r, _)| *r)
                .filter(|r| !got.contains(r))
                .collect()
        } else {
            Vec::new()
        };
        if !missed.is_empty() {
            p.add(
                "gap",
                format!(
                    "watcher {w} missed {} revisions between {from} and {last}: {}",
                    missed.len(),
                    short(&missed)
                ),
            );
        }
        if last < end {
            p.add(
                "behind",
                format!(
                    "watcher {w} stopped at revision {last}, before the end key's {end}{}",
                    compacted_cause(&report.watchers, *w)
                ),
            );
        }
    }
    if !reference.contains_key(&end) {
        p.add(
            "behind",
            format!(
                "the final watcher never received the end key's revision {end}{}",
                compacted_cause(&report.watchers, fw)
            ),
        );
    }

    check_writes(&writes, &reference, &mut p);

    // The final state.
    let final_revision = read
        .output
        .get("revision")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut state: BTreeMap<String, Value> = BTreeMap::new();
    for (_, events) in reference.range(..=final_revision) {
        for e in events.as_array().into_iter().flatten() {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match e.get("type").and_then(Value::as_str) {
                Some("delete") => {
                    state.remove(&key);
                }
                _ => {
                    state.insert(key, e.get("value").cloned().unwrap_or(Value::Null));
                }
            }
        }
    }
    let found: BTreeMap<String, Value> = read
        .output
        .get("kvs")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if found != state {
        let keys: BTreeSet<&String> = found.keys().chain(state.keys()).collect();
        for k in keys {
            if found.get(k) != state.get(k) {
                p.add(
                    "final state",
                    format!(
                        "key {k}: final read {} but the watched history up to revision {final_revision} gives {}",
                        found.get(k).unwrap_or(&Value::Null),
                        state.get(k).unwrap_or(&Value::Null)
                    ),
                );
            }
        }
    }

    report.problem_count = p.count();
    report.problems = p.list();
    if report.problem_count > 0 {
        report.verdict = Verdict::Invalid;
    }
    report
}

/// The reference against the writes.
fn check_writes(writes: &[Write], reference: &BTreeMap<u64, &Value>, p: &mut Problems) {
    let events_at = |r: u64| -> Vec<&Value> {
        reference
            .get(&r)
            .and_then(|e| e.as_array())
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    };
    let mut puts: HashMap<(&str, u64), &Write> = HashMap::new();
    let mut deleters: HashMap<&str, (usize, Vec<u64>)> = HashMap::new();
    for w in writes {
        match (w.f, w.value) {
            ("put", Some(v)) => {
                puts.insert((w.key, v), w);
            }
            ("delete", _) if w.outcome != Outcome::Fail => {
                let d = deleters.entry(w.key).or_default();
                match w.revision {
                    Some(r) if w.deleted > 0 => d.1.push(r),
                    _ => d.0 += usize::from(w.outcome == Outcome::Info),
                }
            }
            _ => {}
        }
        let (Outcome::Ok, Some(r)) = (w.outcome, w.revision) else {
            continue;
        };
        let expected = match w.f {
            "put" => serde_json::json!({"type": "put", "key": w.key, "value": w.value}),
            _ if w.deleted > 0 => serde_json::json!({"type": "delete", "key": w.key}),
            _ => continue,
        };
        if !events_at(r).contains(&&expected) {
            p.add(
                "write mismatch",
                format!(
                    "acknowledged {} of {}{} at revision {r} is not in the watched history there",
                    w.f,
                    w.key,
                    w.value.map(|v| format!(" = {v}")).unwrap_or_default()
                ),
            );
        }
    }
    let mut seen_values: HashMap<(String, u64), u64> = HashMap::new();
    for (&r, events) in reference {
        for e in events.as_array().into_iter().flatten() {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            match e.get("type").and_then(Value::as_str) {
                Some("put") => {
                    let Some(v) = e.get("value").and_then(Value::as_u64) else {
                        p.add(
                            "write mismatch",
                            format!("revision {r}: unexpected put {e}"),
                        );
                        continue;
                    };
                    match puts.get(&(key, v)) {
                        None => p.add(
                            "write mismatch",
                            format!("revision {r} puts {key} = {v}, which no put wrote"),
                        ),
                        Some(w) if w.outcome == Outcome::Fail => p.add(
                            "write mismatch",
                            format!("revision {r} puts {key} = {v}, whose put failed"),
                        ),
                        _ => {}
                    }
                    if let Some(first) = seen_values.insert((key.to_string(), v), r) {
                        p.add(
                            "write mismatch",
                            format!("{key} = {v} put twice, at revisions {first} and {r}"),
                        );
                    }
                }
                Some("delete") => {
                    let ok = deleters
                        .get(key)
                        .is_some_and(|(info, acked)| *info > 0 || acked.contains(&r));
                    if !ok {
                        p.add(
                            "write mismatch",
                            format!("revision {r} deletes {key}, which no delete did"),
                        );
                    }
                }
                _ => p.add(
                    "write mismatch",
                    format!("revision {r}: malformed event {e}"),
                ),
            }
        }
    }
    // Real-time order: an acknowledged write that began after another was
    // acknowledged has a higher revision.
    // A delete that deleted nothing creates no revision (it answers with
    // the current one), so it is left out.
    let mut acked: Vec<(u64, u64, u64)> = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok && (w.f == "put" || w.deleted > 0))
        .filter_map(|w| Some((w.call, w.ret?, w.revision?)))
        .collect();
    let mut by_ret = acked.clone();
    by_ret.sort_by_key(|&(_, ret, _)| ret);
    acked.sort_by_key(|&(call, _, _)| call);
    let (mut i, mut max_before) = (0, (0u64, 0u64));
    for &(call, _, rev) in &acked {
        while i < by_ret.len() && by_ret[i].1 < call {
            if by_ret[i].2 > max_before.0 {
                max_before = (by_ret[i].2, by_ret[i].1);
            }
            i += 1;
        }
        if rev <= max_before.0 {
            p.add(
                "write mismatch",
                format!(
                    "a write invoked at {:.3} s got revision {rev}, but revision {} was acknowledged earlier",
                    call as f64 / 1e9,
                    max_before.0
                ),
            );
        }
    }
}

/// Whether a chunk's error is a master's "compacted" answer.
fn is_compacted(error: &str) -> bool {
    error.contains("compacted:")
}

/// "; N chunks were refused as compacted ..." for a watcher that got such
/// answers, else "": a watcher that asks for history its masters no longer
/// keep falls behind for that reason, not because the store lost events.
fn compacted_cause(watchers: &[WatcherSummary], w: u64) -> String {
    match watchers.iter().find(|s| s.watcher == w) {
        Some(s) if s.compacted_chunks > 0 => format!(
            "; {} of its chunks were refused as compacted: the masters no longer keep \
             that history (start them with a larger --history-revisions)",
            s.compacted_chunks
        ),
        _ => String::new(),
    }
}

fn short(revisions: &[u64]) -> String {
    let shown: Vec<String> = revisions.iter().take(10).map(u64::to_string).collect();
    if revisions.len() > 10 {
        format!("{} ...", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl WatchReport {
    /// A few lines for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "writes: {} attempted, {} ok, {} fail, {} indeterminate",
            self.writes_attempted,
            self.writes_acknowledged,
            self.writes_failed,
            self.writes_indeterminate
        );
        let _ = writeln!(
            out,
            "reference sequence: {} revisions; end key at revision {}",
            self.reference_revisions,
            self.end_revision
                .map_or_else(|| "none".to_string(), |r| r.to_string())
        );
        for w in &self.watchers {
            let _ = writeln!(
                out,
                "watcher {:<3} {:<14} {} revisions, last {}, {} failed chunks{}{}",
                w.watcher,
                w.nodes.join(","),
                w.revisions,
                w.last_revision,
                w.failed_chunks,
                if w.compacted_chunks > 0 {
                    format!(" ({} compacted)", w.compacted_chunks)
                } else {
                    String::new()
                },
                if w.is_final { " (final)" } else { "" }
            );
        }
        for problem in &self.problems {
            let _ = writeln!(out, "{problem}");
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
    use serde_json::json;

    struct H {
        lines: Vec<String>,
        t: u64,
    }

    impl H {
        fn new() -> Self {
            H {
                lines: Vec::new(),
                t: 0,
            }
        }
        fn op(&mut self, p: u64, kind: &str, f: &str, key: Option<&str>, inv: Value, out: Value) {
            self.t += 1;
            let mut e =
                json!({"process": p, "type": "invoke", "f": f, "value": inv, "time": self.t});
            if let Some(k) = key {
                e["key"] = json!(k);
            }
            self.lines.push(e.to_string());
            self.t += 1;
            e["type"] = json!(kind);
            e["value"] = out;
            e["time"] = json!(self.t);
            self.lines.push(e.to_string());
        }
        fn put(&mut self, key: &str, v: u64, rev: Option<u64>) {
            let out = match rev {
                Some(r) => json!({"value": v, "revision": r}),
                None => json!({"value": v}),
            };
            let kind = if rev.is_some() { "ok" } else { "info" };
            self.op(1, kind, "put", Some(key), json!({"value": v}), out);
        }
        fn watch(&mut self, w: u64, fin: bool, from: u64, revs: &[(u64, Value)]) {
            let mut inv = json!({"watcher": w, "node": format!("n{}", w + 1), "from": from});
            if fin {
                inv["final"] = json!(true);
            }
            let mut out = inv.clone();
            out["revisions"] = revs
                .iter()
                .map(|(r, e)| json!({"revision": r, "events": e}))
                .collect();
            self.op(100 + w, "ok", "watch", None, inv, out);
        }
        /// A watch chunk of watcher `w` that a master refused with `error`.
        fn refused(&mut self, w: u64, fin: bool, from: u64, error: &str) {
            let mut inv = json!({"watcher": w, "node": "n1", "from": from});
            if fin {
                inv["final"] = json!(true);
            }
            self.t += 1;
            let e = json!({"process": 100 + w, "type": "invoke", "f": "watch", "value": inv, "time": self.t});
            self.lines.push(e.to_string());
            self.t += 1;
            let e = json!({"process": 100 + w, "type": "fail", "f": "watch", "value": inv,
                           "time": self.t, "error": error});
            self.lines.push(e.to_string());
        }
        fn read(&mut self, rev: u64, kvs: Value) {
            self.op(
                200,
                "ok",
                "read",
                None,
                Value::Null,
                json!({"revision": rev, "kvs": kvs}),
            );
        }
        fn check(&self) -> WatchReport {
            let text = self.lines.join("\n");
            check_events(&parse_history(text.as_bytes()).unwrap()).unwrap()
        }
    }

    fn put_ev(key: &str, v: u64) -> Value {
        json!([{"type": "put", "key": key, "value": v}])
    }

    /// Puts k1=1 (rev 2), k2=2 (rev 3), end=3 (rev 4); two watchers and the
    /// final one see `seq0` / `seq1` / everything.
    fn history(seq0: &[(u64, Value)], seq1: &[(u64, Value)], read: Value) -> H {
        let mut h = H::new();
        h.put("k1", 1, Some(2));
        h.put("k2", 2, Some(3));
        h.put(END_KEY, 3, Some(4));
        h.watch(0, false, 2, seq0);
        h.watch(1, false, 2, seq1);
        h.read(4, read);
        let all = [
            (2, put_ev("k1", 1)),
            (3, put_ev("k2", 2)),
            (4, put_ev("end", 3)),
        ];
        h.watch(2, true, 2, &all);
        h
    }

    fn all() -> Vec<(u64, Value)> {
        vec![
            (2, put_ev("k1", 1)),
            (3, put_ev("k2", 2)),
            (4, put_ev("end", 3)),
        ]
    }

    fn state() -> Value {
        json!({"k1": 1, "k2": 2, "end": 3})
    }

    #[test]
    fn watchers_seeing_everything_once_in_order_are_valid() {
        let r = history(&all(), &all(), state()).check();
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.render());
        assert_eq!(r.reference_revisions, 3);
        assert_eq!(r.watchers.len(), 3);
    }

    #[test]
    fn duplicates_gaps_reordering_and_wrong_events_are_invalid() {
        let mut dup = all();
        dup.insert(1, dup[0].clone());
        let r = history(&dup, &all(), state()).check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.render().contains("duplicate"), "{}", r.render());

        let gap = vec![all()[0].clone(), all()[2].clone()];
        let r = history(&all(), &gap, state()).check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.render().contains("gap: watcher 1 missed 1"),
            "{}",
            r.render()
        );

        let reordered = vec![all()[1].clone(), all()[0].clone(), all()[2].clone()];
        let r = history(&reordered, &all(), state()).check();
        assert!(r.render().contains("out of order"), "{}", r.render());

        let mut wrong = all();
        wrong[1].1 = put_ev("k2", 7);
        let r = history(&all(), &wrong, state()).check();
        assert!(r.render().contains("events differ"), "{}", r.render());
    }

    #[test]
    fn a_watcher_behind_the_end_or_a_wrong_final_state_is_invalid() {
        let r = history(&all()[..2], &all(), state()).check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.render().contains("behind"), "{}", r.render());

        let r = history(&all(), &all(), json!({"k1": 1, "end": 3})).check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.render().contains("final state: key k2"), "{}", r.render());
    }

    #[test]
    fn a_final_watcher_refused_as_compacted_is_invalid_and_says_why() {
        let mut h = H::new();
        h.put("k1", 1, Some(2));
        h.put(END_KEY, 3, Some(3));
        let seq = vec![(2, put_ev("k1", 1)), (3, put_ev("end", 3))];
        h.watch(0, false, 2, &seq);
        h.read(3, json!({"k1": 1, "end": 3}));
        let compacted = "status: OutOfRange, message: \"compacted: required revision 1 has \
                         been compacted; compact revision is 2\"";
        h.refused(1, true, 1, compacted);
        h.refused(1, true, 1, compacted);
        h.refused(1, true, 1, "stream not opened in time");
        let r = h.check();
        assert_eq!(r.verdict, Verdict::Invalid);
        let final_watcher = r.watchers.iter().find(|w| w.is_final).unwrap();
        assert_eq!(
            (final_watcher.failed_chunks, final_watcher.compacted_chunks),
            (3, 2)
        );
        let text = r.render();
        assert!(
            text.contains(
                "never received the end key's revision 3; 2 of its chunks were refused as compacted"
            ),
            "{text}"
        );
        assert!(
            text.contains("3 failed chunks (2 compacted) (final)"),
            "{text}"
        );
    }

    #[test]
    fn the_history_must_agree_with_acknowledged_writes() {
        // k2's put was acknowledged at 3, but every watcher saw it at 5.
        let mut h = H::new();
        h.put("k1", 1, Some(2));
        h.put("k2", 2, Some(3));
        h.put("k3", 9, None);
        h.put(END_KEY, 3, Some(6));
        let seq = vec![
            (2, put_ev("k1", 1)),
            (5, put_ev("k2", 2)),
            (6, put_ev("end", 3)),
        ];
        h.watch(0, false, 2, &seq);
        h.read(6, json!({"k1": 1, "k2": 2, "end": 3}));
        h.watch(1, true, 2, &seq);
        let r = h.check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.render()
                .contains("acknowledged put of k2 = 2 at revision 3"),
            "{}",
            r.render()
        );

        // A value nobody put; an indeterminate put may or may not show up.
        let mut h = H::new();
        h.put("k1", 1, Some(2));
        h.put("k3", 9, None);
        h.put(END_KEY, 3, Some(5));
        let seq = vec![
            (2, put_ev("k1", 1)),
            (3, put_ev("k3", 9)),
            (4, put_ev("k4", 4)),
            (5, put_ev("end", 3)),
        ];
        h.watch(0, false, 2, &seq);
        h.read(5, json!({"k1": 1, "k3": 9, "k4": 4, "end": 3}));
        h.watch(1, true, 2, &seq);
        let r = h.check();
        assert_eq!(r.problem_count, 1, "{}", r.render());
        assert!(r.render().contains("k4 = 4, which no put wrote"));
    }

    #[test]
    fn revisions_against_real_time_are_invalid_but_empty_deletes_are_not_writes() {
        // k2's put began after k1's was acknowledged at 3, yet got 2.
        let mut h = H::new();
        h.put("k1", 1, Some(3));
        h.put("k2", 2, Some(2));
        // A delete of an absent key creates no revision and answers with
        // the current one: no conflict with the put at 3.
        h.op(
            1,
            "ok",
            "delete",
            Some("k9"),
            json!({}),
            json!({"revision": 3, "deleted": 0}),
        );
        h.put(END_KEY, 3, Some(4));
        let seq = vec![
            (2, put_ev("k2", 2)),
            (3, put_ev("k1", 1)),
            (4, put_ev("end", 3)),
        ];
        h.watch(0, false, 2, &seq);
        h.read(4, json!({"k1": 1, "k2": 2, "end": 3}));
        h.watch(1, true, 2, &seq);
        let r = h.check();
        assert_eq!(r.problem_count, 1, "{}", r.render());
        assert!(
            r.render()
                .contains("got revision 2, but revision 3 was acknowledged earlier"),
            "{}",
            r.render()
        );
    }

    #[test]
    fn without_end_key_or_final_read_the_verdict_is_unknown() {
        let mut h = H::new();
        h.put("k1", 1, Some(2));
        h.watch(0, false, 2, &[(2, put_ev("k1", 1))]);
        assert_eq!(h.check().verdict, Verdict::Unknown);
    }
}
