//! The benchmark's results: per-system figures, the comparisons Rafter/etcd
//! with the targets of DESIGN.md, the stdout table and the JSON file.

use std::fmt::Write as _;

use serde::Deserialize;
use serde::Serialize;

use crate::load::LoadResult;
use crate::stats::Latency;

/// Everything one `rafter bench kv` run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub systems: Vec<SystemReport>,
    pub comparisons: Vec<Comparison>,
}

/// The machine and the physical floor measured on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_mib: u64,
    /// Directory holding both clusters' data, and its filesystem.
    pub data_dir: String,
    pub filesystem: String,
    pub fdatasync: Latency,
    pub loopback_rtt: Latency,
    /// fdatasync p50 + 2 × loopback round trip p50, µs.
    pub floor_us: f64,
}

/// How the run was configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub measure_secs: f64,
    pub warmup_secs: f64,
    pub kills: usize,
    pub members: usize,
    pub keyspace: u64,
    pub value_bytes: usize,
    pub rafter_server_args: Vec<String>,
}

/// One system's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemReport {
    pub system: String,
    pub version: String,
    pub workloads: Vec<Workload>,
    pub watch: Watch,
    pub failover: Failover,
    pub rss: Rss,
    /// Raft terms that passed during the fault-free workloads (puts and
    /// gets): 0 means no election happened.
    pub fault_free_term_changes: u64,
}

impl SystemReport {
    pub fn workload(&self, name: &str, clients: usize) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.name == name && w.clients == clients)
    }
}

/// One load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    /// `put`, `get-linearizable` or `get-serializable`.
    pub name: String,
    pub clients: usize,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub latency: Latency,
}

impl Workload {
    pub fn from_load(name: &str, clients: usize, r: LoadResult) -> Workload {
        let ops = r.latencies_us.len() as u64;
        Workload {
            name: name.into(),
            clients,
            ops,
            errors: r.errors,
            ops_per_sec: ops as f64 / r.seconds.max(1e-9),
            latency: Latency::of(r.latencies_us),
        }
    }
}

/// Watch latency from a put on one member to its event on another.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Watch {
    pub puts: u64,
    /// Puts whose event never arrived.
    pub missed: u64,
    /// Events that arrived before their put was acknowledged (counted as 0
    /// in `after_ack`).
    pub seen_before_ack: u64,
    /// Put acknowledged → event seen.
    pub after_ack: Latency,
    /// Put sent → event seen.
    pub from_send: Latency,
}

/// Leader kills under 16 writers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Failover {
    pub kills: Vec<Kill>,
    /// Median over kills of `first_write_ms` (kills without a write count
    /// as infinite).
    pub median_first_write_ms: Option<f64>,
    pub max_stall_ms: f64,
}

impl Failover {
    pub fn from_kills(kills: Vec<Kill>) -> Failover {
        let mut firsts: Vec<f64> = kills
            .iter()
            .map(|k| k.first_write_ms.unwrap_or(f64::INFINITY))
            .collect();
        firsts.sort_by(f64::total_cmp);
        let median = firsts
            .get(firsts.len().saturating_sub(1) / 2)
            .copied()
            .filter(|m| m.is_finite());
        let max_stall = kills.iter().map(|k| k.longest_stall_ms).fold(0.0, f64::max);
        Failover {
            kills,
            median_first_write_ms: median,
            max_stall_ms: max_stall,
        }
    }
}

/// One leader kill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kill {
    /// The member killed.
    pub member: String,
    /// The leader's term before the kill.
    pub term_before: u64,
    /// Kill → first write acknowledged in a later term; `None` if none
    /// came within 30 s.
    pub first_write_ms: Option<f64>,
    /// Longest time without any acknowledged write around the kill.
    pub longest_stall_ms: f64,
}

/// Resident memory of each member, KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rss {
    /// After start-up and election, before any load.
    pub idle_kib: Vec<u64>,
    /// Right after the 256-client put run.
    pub loaded_kib: Vec<u64>,
    /// The anonymous part of `idle_kib` (heap and stacks, without the
    /// program's code and other file-backed pages).
    pub idle_anon_kib: Vec<u64>,
    /// The anonymous part of `loaded_kib`.
    pub loaded_anon_kib: Vec<u64>,
}

/// One figure of both systems side by side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub figure: String,
    pub unit: String,
    pub etcd: f64,
    pub rafter: f64,
    /// rafter / etcd; `None` when etcd's figure is 0.
    pub ratio: Option<f64>,
    /// The target from DESIGN.md, when there is one.
    pub target: Option<String>,
    pub met: Option<bool>,
}

/// What a target compares.
enum Target {
    /// ratio ≥ x
    RatioAtLeast(f64),
    /// ratio ≤ x
    RatioAtMost(f64),
    /// rafter ≤ x (absolute)
    AtMost(f64, String),
    /// rafter < x (absolute)
    Below(f64, String),
}

fn compare(
    figure: impl Into<String>,
    unit: &str,
    etcd: f64,
    rafter: f64,
    target: Option<Target>,
) -> Comparison {
    let ratio = (etcd != 0.0).then(|| rafter / etcd);
    let (target, met) = match target {
        None => (None, None),
        Some(Target::RatioAtLeast(x)) => (Some(format!("≥ {x} × etcd")), ratio.map(|r| r >= x)),
        Some(Target::RatioAtMost(x)) => (Some(format!("≤ {x} × etcd")), ratio.map(|r| r <= x)),
        Some(Target::AtMost(x, text)) => (Some(text), Some(rafter <= x)),
        Some(Target::Below(x, text)) => (Some(text), Some(rafter < x)),
    };
    Comparison {
        figure: figure.into(),
        unit: unit.into(),
        etcd,
        rafter,
        ratio,
        target,
        met,
    }
}

/// The comparisons of two systems' reports, in table order.
pub fn comparisons(etcd: &SystemReport, rafter: &SystemReport, floor_us: f64) -> Vec<Comparison> {
    let mut out = Vec::new();
    for w in &etcd.workloads {
        let Some(r) = rafter.workload(&w.name, w.clients) else {
            continue;
        };
        let label = format!("{} {}c", w.name, w.clients);
        let heavy = w.clients >= 256;
        let throughput_target = match (w.name.as_str(), heavy) {
            ("put", true) => Some(Target::RatioAtLeast(2.0)),
            ("get-linearizable", true) => Some(Target::RatioAtLeast(3.0)),
            _ => None,
        };
        out.push(compare(
            format!("{label} throughput"),
            "ops/s",
            w.ops_per_sec,
            r.ops_per_sec,
            throughput_target,
        ));
        let p50_target = (w.name == "put" && w.clients == 1).then(|| {
            Target::AtMost(
                2.0 * floor_us / 1e3,
                format!("≤ 2 × floor = {:.2} ms", 2.0 * floor_us / 1e3),
            )
        });
        out.push(compare(
            format!("{label} p50"),
            "ms",
            w.latency.p50_us / 1e3,
            r.latency.p50_us / 1e3,
            p50_target,
        ));
        let p99_target = (w.name == "put" && heavy).then_some(Target::RatioAtMost(0.5));
        out.push(compare(
            format!("{label} p99"),
            "ms",
            w.latency.p99_us / 1e3,
            r.latency.p99_us / 1e3,
            p99_target,
        ));
        out.push(compare(
            format!("{label} p99.9"),
            "ms",
            w.latency.p999_us / 1e3,
            r.latency.p999_us / 1e3,
            None,
        ));
    }
    out.push(compare(
        "watch ack→event p50",
        "ms",
        etcd.watch.after_ack.p50_us / 1e3,
        rafter.watch.after_ack.p50_us / 1e3,
        None,
    ));
    out.push(compare(
        "watch ack→event p99",
        "ms",
        etcd.watch.after_ack.p99_us / 1e3,
        rafter.watch.after_ack.p99_us / 1e3,
        None,
    ));
    out.push(compare(
        "watch put→event p50",
        "ms",
        etcd.watch.from_send.p50_us / 1e3,
        rafter.watch.from_send.p50_us / 1e3,
        None,
    ));
    out.push(compare(
        "watch put→event p99",
        "ms",
        etcd.watch.from_send.p99_us / 1e3,
        rafter.watch.from_send.p99_us / 1e3,
        None,
    ));
    // No write within the 30 s bound counts as the bound.
    let none = 30_000.0;
    out.push(compare(
        "failover first write (median)",
        "ms",
        etcd.failover.median_first_write_ms.unwrap_or(none),
        rafter.failover.median_first_write_ms.unwrap_or(none),
        Some(Target::Below(500.0, "< 500 ms".into())),
    ));
    out.push(compare(
        "failover longest stall (max)",
        "ms",
        etcd.failover.max_stall_ms,
        rafter.failover.max_stall_ms,
        None,
    ));
    out.push(compare(
        "elections without faults",
        "terms",
        etcd.fault_free_term_changes as f64,
        rafter.fault_free_term_changes as f64,
        Some(Target::AtMost(0.0, "0".into())),
    ));
    let max_mib = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    out.push(compare(
        "RSS idle (max member)",
        "MiB",
        max_mib(&etcd.rss.idle_kib),
        max_mib(&rafter.rss.idle_kib),
        Some(Target::RatioAtMost(0.5)),
    ));
    out.push(compare(
        "RSS after put 256c (max member)",
        "MiB",
        max_mib(&etcd.rss.loaded_kib),
        max_mib(&rafter.rss.loaded_kib),
        Some(Target::RatioAtMost(0.5)),
    ));
    out.push(compare(
        "anon memory idle (max member)",
        "MiB",
        max_mib(&etcd.rss.idle_anon_kib),
        max_mib(&rafter.rss.idle_anon_kib),
        None,
    ));
    out.push(compare(
        "anon memory after put 256c (max member)",
        "MiB",
        max_mib(&etcd.rss.loaded_anon_kib),
        max_mib(&rafter.rss.loaded_anon_kib),
        None,
    ));
    out
}

/// A number for the table: thousands separated, 2 decimals below 100.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if x.abs() >= 100.0 {
        let s = format!("{:.0}", x);
        let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else {
        format!("{x:.2}")
    }
}

/// Rows as aligned columns, kubectl style: the figures (the third to the
/// fifth column: etcd, Rafter, their ratio) right-aligned, the rest
/// left-aligned.
pub(crate) fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if (2..=4).contains(&i) {
                let _ = write!(line, "{pad}{cell}   ");
            } else {
                let _ = write!(line, "{cell}{pad}   ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

impl Report {
    /// The comparison table as printed on stdout, kubectl style.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 7]> = vec![[
            "FIGURE".into(),
            "UNIT".into(),
            "ETCD".into(),
            "RAFTER".into(),
            "RAFTER/ETCD".into(),
            "TARGET".into(),
            "MET".into(),
        ]];
        for c in &self.comparisons {
            rows.push([
                c.figure.clone(),
                c.unit.clone(),
                num(c.etcd),
                num(c.rafter),
                c.ratio.map(|r| format!("{r:.2}")).unwrap_or("-".into()),
                c.target.clone().unwrap_or_default(),
                match c.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
            ]);
        }
        columns(&rows)
    }

    /// Per-kill failover figures and the floor, printed under the table.
    pub fn details(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "machine: {} × {}, {} MiB, Linux {}, data on {} ({})\n\
             floor: fdatasync p50 {:.2} ms + 2 × loopback RTT p50 {:.3} ms = {:.2} ms\n",
            m.cpus,
            m.cpu_model,
            m.memory_mib,
            m.kernel,
            m.data_dir,
            m.filesystem,
            m.fdatasync.p50_us / 1e3,
            m.loopback_rtt.p50_us / 1e3,
            m.floor_us / 1e3
        );
        for s in &self.systems {
            let kills: Vec<String> = s
                .failover
                .kills
                .iter()
                .map(|k| {
                    format!(
                        "{}: {} / stall {:.0}",
                        k.member,
                        k.first_write_ms
                            .map(|f| format!("{f:.0}"))
                            .unwrap_or("none".into()),
                        k.longest_stall_ms
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "{} ({}): failover kill → first write ms: {}",
                s.system,
                s.version,
                kills.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_or_decimal() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(123.0), "123");
        assert_eq!(num(3.456), "3.46");
        assert_eq!(num(f64::INFINITY), "-");
    }

    #[test]
    fn failover_median_counts_missing_writes_as_infinite() {
        let k = |f: Option<f64>| Kill {
            member: "m1".into(),
            term_before: 1,
            first_write_ms: f,
            longest_stall_ms: 1.0,
        };
        let f = Failover::from_kills(vec![k(Some(100.0)), k(None), k(Some(300.0))]);
        assert_eq!(f.median_first_write_ms, Some(300.0));
        let f = Failover::from_kills(vec![k(None)]);
        assert_eq!(f.median_first_write_ms, None);
    }
}
