//! The lease checker (history format: [`crate::workload::lease`]).
//!
//! A refresh — an `ok` grant, or an `ok` keep-alive that found the lease —
//! happened at some moment after its invoke, and promises that the lease
//! lives at least its TTL from that moment. So, per lease:
//!
//! - **expired early**: the lease was seen absent (a keep-alive answered
//!   "not found", or a read found its key absent although the put of the
//!   key had been acknowledged before the read began), the lease is known
//!   to have existed before (an acknowledged grant, keep-alive or put ended
//!   before the observation began), and the observation ended before some
//!   refresh's invoke + TTL. This also catches a lease that comes back after
//!   it was seen gone (its refresh began after the observation ended);
//! - **came back**: a read found the key after the lease or its key had been
//!   seen absent;
//! - **wrong lease**: a read found the key attached to another lease;
//! - **not expired**: the final read — taken TTL + a bound after the faults
//!   were healed and nobody kept any lease alive any more — found keys.
//!
//! No successful final read: `unknown`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::checker::linearizability::Verdict;
use crate::checker::set::short_list;
use crate::history::{Event, HistoryError, Operation, Outcome};

/// The lease checker's report.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseReport {
    /// Valid when no rule is broken.
    pub verdict: Verdict,
    /// Leases whose grant was invoked.
    pub leases: usize,
    /// Of them, granted `ok`.
    pub granted: usize,
    /// Acknowledged keep-alives that found the lease.
    pub keepalives_ok: usize,
    /// Keep-alives answered "not found".
    pub keepalives_not_found: usize,
    /// Reads of a key that found it absent (after its put was acknowledged).
    pub reads_absent: usize,
    /// Keys in the final read, if there was one.
    pub final_read_keys: Option<usize>,
    /// Broken rules, for people.
    pub problems: Vec<String>,
    /// Keys still present at the final read.
    pub not_expired: Vec<String>,
    /// Why the verdict is unknown, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Checks a history (events as read from a file).
pub fn check_events(events: &[Event]) -> Result<LeaseReport, HistoryError> {
    Ok(check_operations(&crate::history::operations(events)?))
}

#[derive(Default)]
struct Lease<'a> {
    id: Option<i64>,
    /// (invoke, ttl ns) of every refresh.
    refreshes: Vec<(u64, u64)>,
    /// Earliest completion of an acknowledged grant, keep-alive or put.
    known_alive: Option<u64>,
    /// Earliest completion of an acknowledged put.
    put_acked: Option<u64>,
    /// (invoke, completion, what) of every absence seen.
    absences: Vec<(u64, u64, &'static str)>,
    /// Reads that found the key: (invoke, lease found).
    present: Vec<(u64, i64)>,
    ops: Vec<&'a Operation>,
}

/// Checks paired operations.
pub fn check_operations(ops: &[Operation]) -> LeaseReport {
    let mut report = LeaseReport {
        verdict: Verdict::Valid,
        leases: 0,
        granted: 0,
        keepalives_ok: 0,
        keepalives_not_found: 0,
        reads_absent: 0,
        final_read_keys: None,
        problems: Vec::new(),
        not_expired: Vec::new(),
        note: None,
    };
    let secs = |v: &Value| v.as_i64().map(|s| s.max(0) as u64 * 1_000_000_000);
    let mut leases: BTreeMap<&str, Lease> = BTreeMap::new();
    let mut final_read = None;
    for op in ops {
        let Some(key) = op.key.as_deref() else {
            if op.f == "read" && op.outcome == Outcome::Ok {
                final_read = Some(op);
            }
            continue;
        };
        let l = leases.entry(key).or_default();
        l.ops.push(op);
        let ok = op.outcome == Outcome::Ok;
        let Some(ret) = op.ret.filter(|_| ok) else {
            if op.f == "grant" {
                report.leases += 1;
            }
            continue;
        };
        let alive = |l: &mut Lease| {
            l.known_alive = Some(l.known_alive.map_or(ret, |a| a.min(ret)));
        };
        match op.f.as_str() {
            "grant" => {
                report.leases += 1;
                report.granted += 1;
                if let Some(ttl) = secs(&op.output) {
                    l.refreshes.push((op.call, ttl));
                }
                alive(l);
            }
            "put" => {
                l.id = op.output.as_i64();
                l.put_acked = Some(l.put_acked.map_or(ret, |a| a.min(ret)));
                alive(l);
            }
            "keepalive" => match secs(&op.output) {
                Some(ttl) => {
                    report.keepalives_ok += 1;
                    l.refreshes.push((op.call, ttl));
                    alive(l);
                }
                None => {
                    report.keepalives_not_found += 1;
                    l.absences
                        .push((op.call, ret, "a keep-alive found the lease gone"));
                }
            },
            "read" => match op.output.as_i64() {
                Some(found) => l.present.push((op.call, found)),
                None => {
                    if l.put_acked.is_some_and(|p| p < op.call) {
                        report.reads_absent += 1;
                        l.absences.push((op.call, ret, "a read found the key gone"));
                    }
                }
            },
            _ => {}
        }
    }

    let ms = |ns: u64| ns as f64 / 1e6;
    for (key, l) in &leases {
        for &(inv, ret, what) in &l.absences {
            if l.known_alive.is_none_or(|a| a >= inv) {
                continue;
            }
            if let Some(&(f_inv, ttl)) = l
                .refreshes
                .iter()
                .filter(|(f_inv, ttl)| ret < f_inv + ttl)
                .max_by_key(|(f_inv, ttl)| f_inv + ttl)
            {
                report.problems.push(format!(
                    "expired early: {key}: {what} at [{:.1} ms, {:.1} ms], but a refresh invoked at {:.1} ms promised it until {:.1} ms",
                    ms(inv),
                    ms(ret),
                    ms(f_inv),
                    ms(f_inv + ttl)
                ));
            }
        }
        if let Some(first_gone) = l.absences.iter().map(|a| a.1).min()
            && let Some(&(inv, _)) = l.present.iter().find(|(inv, _)| *inv > first_gone)
        {
            report.problems.push(format!(
                "came back: {key}: a read invoked at {:.1} ms found the key, which was seen gone by {:.1} ms",
                ms(inv),
                ms(first_gone)
            ));
        }
        if let Some(id) = l.id {
            for &(inv, found) in &l.present {
                if found != id {
                    report.problems.push(format!(
                        "wrong lease: {key}: a read invoked at {:.1} ms found it attached to lease {found}, not {id}",
                        ms(inv)
                    ));
                }
            }
        }
    }

    let Some(read) = final_read else {
        report.verdict = Verdict::Unknown;
        report.note = Some("no successful final read".into());
        return report;
    };
    let found = read.output.as_object().cloned().unwrap_or_default();
    report.final_read_keys = Some(found.len());
    report.not_expired = found.keys().cloned().collect();
    if !report.problems.is_empty() || !report.not_expired.is_empty() {
        report.verdict = Verdict::Invalid;
    }
    report
}

impl LeaseReport {
    /// A few lines for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "leases: {} ({} granted ok); keep-alives: {} ok, {} not found; reads that found a key gone: {}",
            self.leases,
            self.granted,
            self.keepalives_ok,
            self.keepalives_not_found,
            self.reads_absent
        );
        match self.final_read_keys {
            Some(n) => {
                let _ = writeln!(out, "final read: {n} keys left");
            }
            None => {
                let _ = writeln!(out, "final read: none");
            }
        }
        for p in self.problems.iter().take(30) {
            let _ = writeln!(out, "{p}");
        }
        if self.problems.len() > 30 {
            let _ = writeln!(out, "... and {} more", self.problems.len() - 30);
        }
        if !self.not_expired.is_empty() {
            let _ = writeln!(
                out,
                "not expired (abandoned, still present at the final read): {} {}",
                self.not_expired.len(),
                short_list(&self.not_expired)
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
    use serde_json::json;

    const S: u64 = 1_000_000_000;

    /// An operation: (process, f, key, type, invoke value, completion
    /// value, invoke s, completion s).
    type Op = (
        u64,
        &'static str,
        Option<&'static str>,
        &'static str,
        Value,
        Value,
        f64,
        f64,
    );

    fn check(ops: &[Op]) -> LeaseReport {
        let mut events = Vec::new();
        for (p, f, key, kind, inv, out, t0, t1) in ops {
            let mut e = json!({"process": p, "type": "invoke", "f": f, "value": inv,
                "time": (t0 * S as f64) as u64});
            if let Some(k) = key {
                e["key"] = json!(k);
            }
            events.push(e.clone());
            e["type"] = json!(kind);
            e["value"] = out.clone();
            e["time"] = json!((t1 * S as f64) as u64);
            events.push(e);
        }
        events.sort_by_key(|e| e["time"].as_u64().unwrap());
        let text: Vec<String> = events.iter().map(|e| e.to_string()).collect();
        check_operations(
            &crate::history::operations(&parse_history(text.join("\n").as_bytes()).unwrap())
                .unwrap(),
        )
    }

    fn lease_life(read_at: f64, read: Value) -> Vec<Op> {
        let k = Some("l7");
        vec![
            (0, "grant", k, "ok", json!(3), json!(3), 0.0, 0.1),
            (0, "put", k, "ok", json!(7), json!(7), 0.2, 0.3),
            (0, "keepalive", k, "ok", Value::Null, json!(3), 1.0, 1.1),
            (
                0,
                "read",
                k,
                "ok",
                Value::Null,
                read,
                read_at,
                read_at + 0.01,
            ),
            (9, "read", None, "ok", Value::Null, json!({}), 20.0, 20.1),
        ]
    }

    #[test]
    fn a_kept_alive_key_present_and_an_expired_one_gone_are_valid() {
        let r = check(&lease_life(2.0, json!(7)));
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.render());
        // Gone 5 s after the last refresh: allowed (TTL 3 s).
        let r = check(&lease_life(5.0, Value::Null));
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.render());
        assert_eq!(r.reads_absent, 1);
    }

    #[test]
    fn a_key_gone_within_ttl_of_a_refresh_expired_early() {
        let r = check(&lease_life(2.0, Value::Null));
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.render().contains("expired early: l7"), "{}", r.render());
    }

    #[test]
    fn a_lease_back_after_it_was_gone_or_a_wrong_lease_is_invalid() {
        let k = Some("l7");
        let mut ops = lease_life(5.0, Value::Null);
        ops.push((0, "read", k, "ok", Value::Null, json!(7), 6.0, 6.1));
        let r = check(&ops);
        assert!(r.render().contains("came back: l7"), "{}", r.render());

        let r = check(&lease_life(2.0, json!(8)));
        assert!(r.render().contains("wrong lease: l7"), "{}", r.render());

        // A refresh acknowledged after a keep-alive said "not found".
        let mut ops = lease_life(1.5, json!(7));
        ops.push((0, "keepalive", k, "ok", Value::Null, Value::Null, 5.0, 5.1));
        ops.push((0, "keepalive", k, "ok", Value::Null, json!(3), 6.0, 6.1));
        let r = check(&ops);
        assert!(r.render().contains("expired early: l7"), "{}", r.render());
    }

    #[test]
    fn keys_left_at_the_final_read_are_not_expired() {
        let mut ops = lease_life(2.0, json!(7));
        ops.pop();
        ops.push((
            9,
            "read",
            None,
            "ok",
            Value::Null,
            json!({"l7": 7}),
            20.0,
            20.1,
        ));
        let r = check(&ops);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.not_expired, vec!["l7".to_string()]);
        ops.pop();
        assert_eq!(check(&ops).verdict, Verdict::Unknown);
    }

    #[test]
    fn an_indeterminate_grant_seen_absent_is_no_violation() {
        let k = Some("l8");
        let r = check(&[
            (0, "grant", k, "info", json!(3), json!(3), 0.0, 3.0),
            (1, "keepalive", k, "ok", Value::Null, Value::Null, 3.1, 3.2),
            (1, "keepalive", k, "ok", Value::Null, json!(3), 3.7, 3.8),
            (9, "read", None, "ok", Value::Null, json!({}), 20.0, 20.1),
        ]);
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.render());
    }
}
