//! A linearizability checker for the per-key register model, on the
//! Wing & Gong search with Lowe's memoisation, laid out the way Porcupine
//! (anishathalye/porcupine) does it.
//!
//! - The history is split by key (a register per key is P-compositional:
//!   the whole is linearizable iff every key is), and keys are checked in
//!   parallel.
//! - Per key, every operation becomes a call and a return entry, sorted by
//!   time (a call before a return at the same instant, so touching
//!   operations count as concurrent). The entries form a doubly linked list.
//! - Depth first: take a call that comes before the first remaining return;
//!   if the model accepts it, "lift" its call and return out of the list and
//!   go on; on reaching a return whose call is still in the list, backtrack
//!   (pop the last lifted operation, "unlift" it, try the next call).
//! - A cache of (set of linearized operations, model state) prunes every
//!   configuration already explored.
//! - `fail` operations are dropped; `info` operations return at +infinity:
//!   they may be placed anywhere after their call, and placing one last is
//!   the same as it never having happened.
//! - A time budget bounds the search; running out gives
//!   [`Verdict::Unknown`], which is never a pass.
//! - On a violation the report holds the smallest useful window: the state
//!   and last operations of the longest linearizable prefix found, and the
//!   operations none of which could be placed next.

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checker::model::{ModelError, RegisterOp, RegisterState};
use crate::history::{Event, HistoryError, Operation};

/// Why a history could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The events do not pair into operations.
    #[error("malformed history")]
    History(#[from] HistoryError),
    /// An operation is not a register operation.
    #[error("operation outside the register model")]
    Model(#[from] ModelError),
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Linearizable.
    Valid,
    /// Certainly not linearizable.
    Invalid,
    /// The time budget ran out first; not a pass.
    Unknown,
}

impl Verdict {
    /// Combines verdicts: any invalid makes the whole invalid, otherwise any
    /// unknown makes it unknown.
    pub fn and(self, other: Verdict) -> Verdict {
        use Verdict::*;
        match (self, other) {
            (Invalid, _) | (_, Invalid) => Invalid,
            (Unknown, _) | (_, Unknown) => Unknown,
            _ => Valid,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        })
    }
}

/// Settings of a check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Total wall-clock budget; keys still searching when it runs out are
    /// [`Verdict::Unknown`].
    pub time_limit: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            time_limit: Duration::from_secs(60),
        }
    }
}

/// One operation as the checker saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckedOp {
    /// The process that ran it.
    pub process: u64,
    /// The operation in model terms.
    #[serde(serialize_with = "serialize_display")]
    pub op: RegisterOp,
    /// Invoke time, ns.
    pub call: u64,
    /// Completion time, ns; `None` for `info`.
    pub ret: Option<u64>,
}

fn serialize_display<S: serde::Serializer>(op: &RegisterOp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(op)
}

impl fmt::Display for CheckedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        let ret = self
            .ret
            .map_or("?".to_string(), |r| format!("{:.3}", ms(r)));
        write!(
            f,
            "process {:<4} {:<24} [{:.3} ms, {} ms]",
            self.process,
            self.op.to_string(),
            ms(self.call),
            ret
        )
    }
}

/// Where and why a key's history is not linearizable.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Operations in the longest linearizable prefix found.
    pub linearized: usize,
    /// The register's value after that prefix.
    pub state: RegisterState,
    /// The last few operations of that prefix, in linearization order.
    pub last_linearized: Vec<CheckedOp>,
    /// The operation whose return was reached without it being placed.
    pub blocked: CheckedOp,
    /// Every unplaced operation invoked before `blocked` returned (it
    /// included): none of them can be placed next, in any order that keeps
    /// `blocked` in time.
    pub candidates: Vec<CheckedOp>,
}

/// The result for one key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Operations checked (`fail`ed ones excluded).
    pub ops: usize,
    /// Of those, how many were `info`.
    pub info_ops: usize,
    /// Set when the verdict is invalid.
    pub violation: Option<Violation>,
}

/// The result of checking a history.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// All keys combined.
    pub verdict: Verdict,
    /// Per key, sorted by key.
    pub keys: Vec<KeyReport>,
}

impl Report {
    /// A kubectl-like table of keys and verdicts, then the failing windows.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = self
            .keys
            .iter()
            .map(|k| k.key.len())
            .max()
            .unwrap_or(3)
            .max(3);
        let _ = writeln!(
            out,
            "{:<w$}   {:<8}  {:>6}  {:>5}",
            "KEY", "VERDICT", "OPS", "INFO"
        );
        for k in &self.keys {
            let _ = writeln!(
                out,
                "{:<w$}   {:<8}  {:>6}  {:>5}",
                k.key,
                k.verdict.to_string(),
                k.ops,
                k.info_ops
            );
        }
        for k in &self.keys {
            if let Some(v) = &k.violation {
                let _ = writeln!(out, "\nkey {}: not linearizable", k.key);
                let _ = writeln!(
                    out,
                    "  longest linearizable prefix: {} ops, leaving the register at {}",
                    v.linearized,
                    v.state.map_or("nil".to_string(), |s| s.to_string())
                );
                if !v.last_linearized.is_empty() {
                    let _ = writeln!(out, "  its last operations, in linearization order:");
                    for op in &v.last_linearized {
                        let _ = writeln!(out, "    {op}");
                    }
                }
                let _ = writeln!(
                    out,
                    "  this operation returned but cannot be placed after that prefix:\n    {}",
                    v.blocked
                );
                let _ = writeln!(
                    out,
                    "  unplaced operations invoked before it returned (the failing window):"
                );
                for op in &v.candidates {
                    let _ = writeln!(out, "    {op}");
                }
            }
        }
        let _ = writeln!(out, "\noverall: {}", self.verdict);
        out
    }
}

/// Checks a history (events as read from a file) against the register model.
pub fn check_events(events: &[Event], opts: &CheckOptions) -> Result<Report, CheckError> {
    check_operations(&crate::history::operations(events)?, opts)
}

/// Checks paired operations against the register model. Operations without a
/// key are ignored; every key starts absent.
pub fn check_operations(ops: &[Operation], opts: &CheckOptions) -> Result<Report, CheckError> {
    let mut by_key: BTreeMap<String, Vec<CheckedOp>> = BTreeMap::new();
    for op in ops {
        let Some(key) = &op.key else { continue };
        let entry = by_key.entry(key.clone()).or_default();
        if let Some(model_op) = RegisterOp::from_operation(op)? {
            entry.push(CheckedOp {
                process: op.process,
                op: model_op,
                call: op.call,
                ret: if op.outcome == crate::history::Outcome::Info {
                    None
                } else {
                    op.ret
                },
            });
        }
    }
    let deadline = Instant::now() + opts.time_limit;
    let mut by_key: Vec<(String, Vec<CheckedOp>)> = by_key.into_iter().collect();
    by_key.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    // One thread per core, each taking the next unchecked key.
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(by_key.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<KeyReport>>> =
        by_key.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((key, ops)) = by_key.get(i) else {
                        break;
                    };
                    let (verdict, violation) = check_key(ops, deadline);
                    let report = KeyReport {
                        key: key.clone(),
                        verdict,
                        ops: ops.len(),
                        info_ops: ops.iter().filter(|o| o.ret.is_none()).count(),
                        violation,
                    };
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
                }
            });
        }
    });
    let keys: Vec<KeyReport> = slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every key checked")
        })
        .collect();
    let verdict = keys
        .iter()
        .fold(Verdict::Valid, |acc, k| acc.and(k.verdict));
    Ok(Report { verdict, keys })
}

/// Orders strings with embedded numbers by value: `k2` before `k10`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if i > start
                && c.is_ascii_digit() != s[start..].starts_with(|d: char| d.is_ascii_digit())
            {
                out.push((
                    s[start..].starts_with(|d: char| d.is_ascii_digit()),
                    &s[start..i],
                ));
                start = i;
            }
        }
        if start < s.len() {
            out.push((
                s[start..].starts_with(|d: char| d.is_ascii_digit()),
                &s[start..],
            ));
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len()).then_with(|| a.cmp(b))
}

/// How many search steps between looks at the clock (also looked at on the
/// first step, so an exhausted budget never passes a key unchecked).
const CLOCK_EVERY: u64 = 1 << 12;
/// How many operations of the linearizable prefix a violation shows.
const CONTEXT_OPS: usize = 4;

const NIL: usize = usize::MAX;

/// A node of the entry list: index 0 is the head sentinel.
#[derive(Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    /// The operation this entry belongs to.
    op: usize,
    /// For a call entry, the node of its return; `NIL` for a return.
    ret: usize,
}

/// The entry list with Porcupine's lift / unlift (dancing links: unlifting
/// in reverse order of lifting restores the list exactly).
struct EntryList {
    nodes: Vec<Node>,
}

impl EntryList {
    fn new(ops: &[CheckedOp]) -> Self {
        // (time, is_return, op): calls sort before returns at equal times;
        // info returns sit at +infinity.
        let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            entries.push((op.call, false, i));
            entries.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        entries.sort_unstable();
        let mut nodes = vec![Node {
            prev: NIL,
            next: NIL,
            op: NIL,
            ret: NIL,
        }];
        let mut call_node = vec![NIL; ops.len()];
        for (pos, &(_, is_return, op)) in entries.iter().enumerate() {
            let idx = pos + 1;
            nodes.push(Node {
                prev: idx - 1,
                next: if pos + 1 < entries.len() {
                    idx + 1
                } else {
                    NIL
                },
                op,
                ret: NIL,
            });
            if is_return {
                nodes[call_node[op]].ret = idx;
            } else {
                call_node[op] = idx;
            }
        }
        nodes[0].next = if entries.is_empty() { NIL } else { 1 };
        EntryList { nodes }
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        if next != NIL {
            self.nodes[next].prev = n;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].ret);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].ret);
        self.relink(call);
    }
}

/// A fixed-size set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> Self {
        BitSet(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// The furthest point the search reached, for the violation report.
struct Furthest {
    depth: usize,
    order: Vec<usize>,
    linearized: BitSet,
    state: RegisterState,
    blocked: usize,
}

/// Searches one key's operations for a linearization.
fn check_key(ops: &[CheckedOp], deadline: Instant) -> (Verdict, Option<Violation>) {
    let mut list = EntryList::new(ops);
    let mut state: RegisterState = None;
    let mut linearized = BitSet::new(ops.len());
    let mut cache: HashSet<(BitSet, RegisterState)> = HashSet::new();
    // The lifted calls, with the state before each.
    let mut stack: Vec<(usize, RegisterState)> = Vec::new();
    let mut furthest: Option<Furthest> = None;
    let mut steps: u64 = 0;

    let mut entry = list.nodes[0].next;
    while list.nodes[0].next != NIL {
        steps += 1;
        if (steps == 1 || steps.is_multiple_of(CLOCK_EVERY)) && Instant::now() >= deadline {
            return (Verdict::Unknown, None);
        }
        let node = list.nodes[entry];
        if node.ret != NIL {
            // A call: try to linearize its operation here.
            let next_state = ops[node.op].op.step(state);
            let mut lifted = false;
            if let Some(next_state) = next_state {
                let mut candidate = linearized.clone();
                candidate.set(node.op);
                if cache.insert((candidate, next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    linearized.set(node.op);
                    list.lift(entry);
                    entry = list.nodes[0].next;
                    lifted = true;
                }
            }
            if !lifted {
                entry = node.next;
            }
        } else {
            // A return whose call is still in the list: dead end.
            if furthest.as_ref().is_none_or(|f| stack.len() > f.depth) {
                furthest = Some(Furthest {
                    depth: stack.len(),
                    order: stack.iter().map(|&(n, _)| list.nodes[n].op).collect(),
                    linearized: linearized.clone(),
                    state,
                    blocked: node.op,
                });
            }
            let Some((call, prev_state)) = stack.pop() else {
                return (Verdict::Invalid, furthest.map(|f| violation(ops, f)));
            };
            state = prev_state;
            linearized.clear(list.nodes[call].op);
            list.unlift(call);
            entry = list.nodes[call].next;
        }
    }
    (Verdict::Valid, None)
}

fn violation(ops: &[CheckedOp], f: Furthest) -> Violation {
    let blocked = &ops[f.blocked];
    let horizon = blocked.ret.unwrap_or(u64::MAX);
    let mut candidates: Vec<CheckedOp> = ops
        .iter()
        .enumerate()
        .filter(|&(i, op)| !f.linearized.contains(i) && op.call <= horizon)
        .map(|(_, op)| op.clone())
        .collect();
    candidates.sort_by_key(|op| (op.call, op.process));
    let skip = f.order.len().saturating_sub(CONTEXT_OPS);
    Violation {
        linearized: f.depth,
        state: f.state,
        last_linearized: f.order[skip..].iter().map(|&i| ops[i].clone()).collect(),
        blocked: blocked.clone(),
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{Value, json};

    /// A register operation on key `k` from `call` to `ret` (`None` = info).
    fn op(
        process: u64,
        f: &str,
        input: Value,
        output: Value,
        call: u64,
        ret: Option<u64>,
    ) -> Operation {
        key_op("k", process, f, input, output, call, ret)
    }

    fn key_op(
        key: &str,
        process: u64,
        f: &str,
        input: Value,
        output: Value,
        call: u64,
        ret: Option<u64>,
    ) -> Operation {
        Operation {
            process,
            f: f.into(),
            key: Some(key.into()),
            input,
            output,
            call,
            ret,
            outcome: if ret.is_some() {
                Outcome::Ok
            } else {
                Outcome::Info
            },
            error: None,
        }
    }

    fn write(p: u64, v: i64, call: u64, ret: u64) -> Operation {
        op(p, "write", json!(v), json!(v), call, Some(ret))
    }
    fn read(p: u64, v: Option<i64>, call: u64, ret: u64) -> Operation {
        op(p, "read", Value::Null, json!(v), call, Some(ret))
    }
    fn cas(p: u64, from: i64, to: i64, call: u64, ret: u64) -> Operation {
        op(
            p,
            "cas",
            json!([from, to]),
            json!([from, to]),
            call,
            Some(ret),
        )
    }

    fn verdict(ops: &[Operation]) -> Verdict {
        check_operations(ops, &CheckOptions::default())
            .unwrap()
            .verdict
    }

    #[test]
    fn sequential_and_concurrent_valid_histories_pass() {
        let ops = [
            write(1, 1, 0, 10),
            read(2, Some(1), 11, 20),
            // Concurrent write 2 and read: the read may see either value.
            write(1, 2, 21, 40),
            read(2, Some(1), 22, 30),
            read(3, Some(2), 25, 45),
            cas(2, 2, 3, 50, 60),
            read(1, Some(3), 61, 70),
        ];
        assert_eq!(verdict(&ops), Verdict::Valid);
    }

    #[test]
    fn keys_are_reported_in_natural_order() {
        let mut keys = vec!["k10", "k2", "a", "k1", "k02x"];
        keys.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(keys, ["a", "k1", "k2", "k02x", "k10"]);
    }

    #[test]
    fn reading_an_absent_key_before_any_write_is_valid() {
        assert_eq!(
            verdict(&[read(1, None, 0, 5), write(2, 1, 6, 9)]),
            Verdict::Valid
        );
    }

    #[test]
    fn a_stale_read_is_invalid() {
        let ops = [
            write(1, 1, 0, 10),
            write(1, 2, 11, 20),
            read(2, Some(1), 21, 30),
        ];
        let report = check_operations(&ops, &CheckOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid);
        let v = report.keys[0].violation.as_ref().unwrap();
        assert_eq!(v.blocked.op, RegisterOp::Read(Some(1)));
        assert_eq!(v.linearized, 2);
        assert_eq!(v.state, Some(2));
        assert!(report.render().contains("read -> 1"), "{}", report.render());
    }

    #[test]
    fn a_lost_write_is_invalid() {
        // Write 2 was acknowledged, then a read sees the older value 1.
        let ops = [
            write(1, 1, 0, 10),
            write(2, 2, 5, 15),
            read(3, Some(2), 16, 20),
            read(3, Some(1), 21, 30),
        ];
        assert_eq!(verdict(&ops), Verdict::Invalid);
    }

    #[test]
    fn a_cas_that_succeeded_on_a_value_the_register_never_held_is_invalid() {
        let ops = [
            write(1, 1, 0, 10),
            cas(2, 5, 6, 11, 20),
            read(1, Some(6), 21, 30),
        ];
        assert_eq!(verdict(&ops), Verdict::Invalid);
        // Two cas from the same expected value cannot both succeed.
        let ops = [
            write(1, 1, 0, 10),
            cas(2, 1, 2, 11, 20),
            cas(3, 1, 3, 12, 21),
        ];
        assert_eq!(verdict(&ops), Verdict::Invalid);
    }

    #[test]
    fn an_info_write_is_assumed_applied_when_a_later_read_needs_it() {
        let ops = [
            write(1, 1, 0, 10),
            op(2, "write", json!(2), Value::Null, 11, None),
            read(3, Some(2), 100, 110),
            read(3, Some(2), 120, 130),
        ];
        assert_eq!(verdict(&ops), Verdict::Valid);
    }

    #[test]
    fn an_info_write_may_never_have_taken_effect() {
        let ops = [
            write(1, 1, 0, 10),
            op(2, "write", json!(2), Value::Null, 11, None),
            read(3, Some(1), 100, 110),
            read(3, Some(1), 120, 130),
        ];
        assert_eq!(verdict(&ops), Verdict::Valid);
        // But it cannot take effect before it was invoked.
        let ops = [
            write(1, 1, 0, 10),
            read(3, Some(2), 11, 20),
            op(2, "write", json!(2), Value::Null, 30, None),
        ];
        assert_eq!(verdict(&ops), Verdict::Invalid);
        // Nor take effect, be observed, then be undone.
        let ops = [
            write(1, 1, 0, 10),
            op(2, "write", json!(2), Value::Null, 11, None),
            read(3, Some(2), 20, 30),
            read(3, Some(1), 40, 50),
        ];
        assert_eq!(verdict(&ops), Verdict::Invalid);
    }

    #[test]
    fn an_info_cas_may_or_may_not_have_taken_effect() {
        let info_cas = op(2, "cas", json!([1, 2]), Value::Null, 11, None);
        let applied = [
            write(1, 1, 0, 10),
            info_cas.clone(),
            read(3, Some(2), 50, 60),
        ];
        assert_eq!(verdict(&applied), Verdict::Valid);
        let not_applied = [write(1, 1, 0, 10), info_cas, read(3, Some(1), 50, 60)];
        assert_eq!(verdict(&not_applied), Verdict::Valid);
    }

    #[test]
    fn failed_operations_are_ignored() {
        let mut failed = write(2, 9, 11, 20);
        failed.outcome = Outcome::Fail;
        let ops = [write(1, 1, 0, 10), failed, read(3, Some(1), 21, 30)];
        assert_eq!(verdict(&ops), Verdict::Valid);
    }

    #[test]
    fn an_exhausted_time_budget_is_unknown_not_valid() {
        let ops = generated_history(7, 8, 5, 200);
        let report = check_operations(
            &ops,
            &CheckOptions {
                time_limit: Duration::ZERO,
            },
        )
        .unwrap();
        assert_eq!(report.verdict, Verdict::Unknown);
        assert!(report.keys.iter().all(|k| k.verdict == Verdict::Unknown));
    }

    /// Simulates a real register: each process runs operations one after
    /// another with random durations; each takes effect at a random instant
    /// inside its interval; results follow from applying them in that order.
    /// Failed cas are recorded as `fail`, and a few writes and cas as `info`
    /// (half of which really took effect).
    fn generated_history(
        seed: u64,
        keys: usize,
        procs: usize,
        ops_per_key: usize,
    ) -> Vec<Operation> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::new();
        let mut process = 0;
        for k in 0..keys {
            let mut next_value: i64 = 1;
            let key = format!("k{k}");
            // (effect time, op index, maybe-skipped) for this key
            let mut pending = Vec::new();
            let mut ops = Vec::new();
            for _ in 0..procs {
                process += 1;
                let mut t: u64 = rng.random_range(0..100);
                for _ in 0..ops_per_key / procs {
                    let call = t + rng.random_range(1..50);
                    let ret = call + rng.random_range(1..200);
                    let effect = rng.random_range(call..=ret);
                    let (f, input) = match rng.random_range(0..3) {
                        0 => ("read", Value::Null),
                        1 => {
                            next_value += 1;
                            ("write", json!(next_value))
                        }
                        _ => {
                            next_value += 1;
                            let expected =
                                rng.random_range(next_value.saturating_sub(4).max(1)..next_value);
                            ("cas", json!([expected, next_value]))
                        }
                    };
                    let info = f != "read" && rng.random_bool(0.03);
                    let mut o = key_op(&key, process, f, input, Value::Null, call, Some(ret));
                    if info {
                        o.outcome = Outcome::Info;
                        o.ret = None;
                    }
                    pending.push((effect, ops.len(), info && rng.random_bool(0.5)));
                    ops.push(o);
                    t = ret;
                    if info {
                        // The process is gone; the worker continues anew.
                        process += 1;
                    }
                }
            }
            pending.sort();
            let mut state: Option<i64> = None;
            for (_, i, skipped) in pending {
                let o = &mut ops[i];
                match o.f.as_str() {
                    "read" => o.output = json!(state),
                    "write" => {
                        if !skipped {
                            state = o.input.as_i64();
                        }
                    }
                    _ => {
                        let expected = o.input[0].as_i64();
                        if state == expected {
                            if !skipped {
                                state = o.input[1].as_i64();
                            }
                        } else if o.outcome == Outcome::Ok {
                            o.outcome = Outcome::Fail;
                        }
                    }
                }
                if o.outcome == Outcome::Ok {
                    o.output = o.input.clone();
                    if o.f == "read" {
                        o.output = json!(state);
                    }
                }
            }
            out.extend(ops);
        }
        out.sort_by_key(|o| o.call);
        out
    }

    #[test]
    fn a_generated_concurrent_history_of_hundreds_of_ops_is_valid_within_seconds() {
        let ops = generated_history(42, 5, 5, 100);
        assert!(ops.len() >= 500);
        let start = Instant::now();
        let report = check_operations(&ops, &CheckOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Valid, "{}", report.render());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn one_key_with_ten_overlapping_processes_and_info_ops_checks_within_seconds() {
        for seed in 0..5 {
            let ops = generated_history(seed, 1, 10, 400);
            assert!(ops.iter().filter(|o| o.outcome == Outcome::Info).count() >= 2);
            let start = Instant::now();
            let report = check_operations(&ops, &CheckOptions::default()).unwrap();
            assert_eq!(
                report.verdict,
                Verdict::Valid,
                "seed {seed}: {}",
                report.render()
            );
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "took {:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn the_generated_history_with_one_corrupted_read_is_invalid() {
        let mut ops = generated_history(42, 5, 5, 100);
        let victim = ops
            .iter()
            .position(|o| o.f == "read" && o.key.as_deref() == Some("k2") && o.call > 2000)
            .expect("a read to corrupt");
        ops[victim].output = json!(-7);
        let start = Instant::now();
        let report = check_operations(&ops, &CheckOptions::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Invalid, "{}", report.render());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
        let bad: Vec<_> = report
            .keys
            .iter()
            .filter(|k| k.verdict == Verdict::Invalid)
            .collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].key, "k2");
        let v = bad[0].violation.as_ref().unwrap();
        assert!(
            v.candidates
                .iter()
                .any(|c| c.op == RegisterOp::Read(Some(-7)))
        );
    }
}
