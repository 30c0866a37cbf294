//! What `rafter bench pods` measured, and how it is printed and saved.
//!
//! Each pod has a [`Timeline`]: the bench's own times (create sent and
//! acknowledged, and when its watch first saw the pod bound, running and
//! Ready) and Docker's (when the sandbox and the app container were created
//! and started). All are wall-clock times: the bench's come from one
//! monotonic clock anchored to the wall clock once ([`Clock`]), so they
//! compare with the engine's timestamps on the same machine. From them come
//! the headline figures (create acknowledged → all containers running, and
//! → Ready) and one figure per phase; the phases follow each other without
//! gaps from the create's sending to the Running status, so their means
//! add up to the mean total and each one's share says what dominates.

use std::time::{Duration, Instant, SystemTime};

use rafter_bench::stats::percentile;
use serde::Serialize;

use crate::cli::output::Table;

/// The target of issue 7 (item 8): create → all containers running, p99
/// under 1 s, with the image present on the node.
pub const TARGET_P99: Duration = Duration::from_secs(1);

/// A wall clock that never goes back: the wall time at one instant, plus
/// the monotonic time since.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    at: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall: SystemTime::now(),
            at: Instant::now(),
        }
    }

    pub fn now(&self) -> SystemTime {
        self.wall + self.at.elapsed()
    }
}

/// When each step of one pod's start happened.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub node: String,
    /// The create request left the bench.
    pub sent: Option<SystemTime>,
    /// Its answer arrived (the pod is stored).
    pub acked: Option<SystemTime>,
    /// The bench's watch first saw the pod with a node.
    pub bound: Option<SystemTime>,
    /// Docker's `Created` and `State.StartedAt` of the pod's sandbox.
    pub sandbox_created: Option<SystemTime>,
    pub sandbox_started: Option<SystemTime>,
    /// The same of its app container (the last one, if several).
    pub container_created: Option<SystemTime>,
    pub container_started: Option<SystemTime>,
    /// The watch first saw every container running in the pod's status.
    pub running: Option<SystemTime>,
    /// The watch first saw the pod's Ready condition True.
    pub ready: Option<SystemTime>,
    /// The latest `state.running.startedAt` in that first Running status
    /// (whole seconds, as the status carries it): a cross-check only.
    pub status_started_at: Option<SystemTime>,
    /// Restarts the status showed (a restarted container's start is not
    /// the first start the phases describe).
    pub restarts: i32,
    /// The last waiting reason or message seen, for error messages.
    pub last_reason: String,
}

fn ms_between(from: Option<SystemTime>, to: Option<SystemTime>) -> Option<f64> {
    let (from, to) = (from?, to?);
    // The engine's clock is this machine's clock; a negative gap can only
    // be a few microseconds of rounding, counted as zero.
    Some(
        to.duration_since(from)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
    )
}

/// One step of a pod's start, from one timeline field to another.
struct Phase {
    /// Stable name for readers of the JSON report.
    key: &'static str,
    name: &'static str,
    from: fn(&Timeline) -> Option<SystemTime>,
    to: fn(&Timeline) -> Option<SystemTime>,
}

/// The headline figures.
const FIGURES: [Phase; 3] = [
    Phase {
        key: "create_ack_to_running",
        name: "create acknowledged → all containers running",
        from: |t| t.acked,
        to: |t| t.running,
    },
    Phase {
        key: "create_ack_to_ready",
        name: "create acknowledged → Ready",
        from: |t| t.acked,
        to: |t| t.ready,
    },
    Phase {
        key: "create_sent_to_running",
        name: "create sent → all containers running",
        from: |t| t.sent,
        to: |t| t.running,
    },
];

/// The phases, back to back from the create's sending to the Running
/// status seen, then on to Ready.
const PHASES: [Phase; 8] = [
    Phase {
        key: "create",
        name: "create: sent → acknowledged (API, Raft commit)",
        from: |t| t.sent,
        to: |t| t.acked,
    },
    Phase {
        key: "schedule",
        name: "schedule: acknowledged → bound seen by watch",
        from: |t| t.acked,
        to: |t| t.bound,
    },
    Phase {
        key: "agent_pickup",
        name: "agent pickup: bound → sandbox created",
        from: |t| t.bound,
        to: |t| t.sandbox_created,
    },
    Phase {
        key: "sandbox_start",
        name: "sandbox: created → started (netns, IP)",
        from: |t| t.sandbox_created,
        to: |t| t.sandbox_started,
    },
    Phase {
        key: "container_create",
        name: "container create: sandbox started → created",
        from: |t| t.sandbox_started,
        to: |t| t.container_created,
    },
    Phase {
        key: "container_start",
        name: "container start: created → started",
        from: |t| t.container_created,
        to: |t| t.container_started,
    },
    Phase {
        key: "status",
        name: "status: started → Running seen by watch",
        from: |t| t.container_started,
        to: |t| t.running,
    },
    Phase {
        key: "ready",
        name: "ready: Running seen → Ready seen",
        from: |t| t.running,
        to: |t| t.ready,
    },
];

/// Percentiles of one figure, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub key: String,
    pub name: String,
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    fn of(key: &str, name: &str, samples_ms: &[f64]) -> Summary {
        // Nearest-rank percentiles on whole microseconds, as `bench kv`.
        let mut us: Vec<u32> = samples_ms
            .iter()
            .map(|ms| (ms * 1e3).round().clamp(0.0, u32::MAX as f64) as u32)
            .collect();
        us.sort_unstable();
        let at = |q| percentile(&us, q) / 1e3;
        Summary {
            key: key.into(),
            name: name.into(),
            count: us.len(),
            mean_ms: if us.is_empty() {
                0.0
            } else {
                samples_ms.iter().sum::<f64>() / samples_ms.len() as f64
            },
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: us.last().map_or(0.0, |u| *u as f64 / 1e3),
        }
    }

    fn over(phase: &Phase, pods: &[Timeline]) -> Summary {
        let samples: Vec<f64> = pods
            .iter()
            .filter_map(|t| ms_between((phase.from)(t), (phase.to)(t)))
            .collect();
        Summary::of(phase.key, phase.name, &samples)
    }
}

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub masters: usize,
    pub nodes: usize,
    pub pods: usize,
    pub concurrency: usize,
    pub image: String,
    /// "debug" or "release": how this `rafter` binary was built.
    pub build: String,
    pub rafter_bin: String,
    pub pod_cidr: String,
    pub server_args: Vec<String>,
    pub agent_args: Vec<String>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_mib: u64,
    pub docker: String,
    /// /proc/loadavg's 1-minute figure when the run started (other work
    /// on the machine).
    pub load_average_at_start: f64,
}

impl Machine {
    pub fn this(docker: String) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
                .unwrap_or_else(|| "unknown".into()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            memory_mib: read("/proc/meminfo")
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                / 1024,
            docker,
            load_average_at_start: read("/proc/loadavg")
                .split_whitespace()
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0.0),
        }
    }
}

/// One pod's timeline as milliseconds after its create was sent.
#[derive(Debug, Clone, Serialize)]
pub struct PodRecord {
    pub name: String,
    pub node: String,
    pub restarts: i32,
    pub acked_ms: Option<f64>,
    pub bound_ms: Option<f64>,
    pub sandbox_created_ms: Option<f64>,
    pub sandbox_started_ms: Option<f64>,
    pub container_created_ms: Option<f64>,
    pub container_started_ms: Option<f64>,
    pub running_ms: Option<f64>,
    pub ready_ms: Option<f64>,
}

/// The status' `startedAt` against the bench's own times.
#[derive(Debug, Clone, Serialize)]
pub struct CrossCheck {
    /// Pods whose Running status carried a startedAt.
    pub checked: usize,
    /// Of those, how many had it between the create's sending (truncated
    /// to the second, as startedAt is) and the Running status seen.
    pub consistent: usize,
}

/// The report `bench-pods.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct PodsReport {
    pub settings: Settings,
    pub machine: Machine,
    pub figures: Vec<Summary>,
    pub phases: Vec<Summary>,
    /// Pods per second from the first create sent to the last pod running.
    pub throughput_pods_per_sec: f64,
    pub wall_secs: f64,
    pub target_p99_ms: f64,
    pub target_met: bool,
    pub cross_check: CrossCheck,
    pub pods: Vec<PodRecord>,
}

impl PodsReport {
    /// Summarizes the timelines of the measured pods (`(name, timeline)`).
    pub fn new(settings: Settings, machine: Machine, pods: &[(String, Timeline)]) -> PodsReport {
        let timelines: Vec<Timeline> = pods.iter().map(|(_, t)| t.clone()).collect();
        let figures: Vec<Summary> = FIGURES
            .iter()
            .map(|p| Summary::over(p, &timelines))
            .collect();
        let phases = PHASES
            .iter()
            .map(|p| Summary::over(p, &timelines))
            .collect();
        let first = timelines.iter().filter_map(|t| t.sent).min();
        let last = timelines.iter().filter_map(|t| t.running).max();
        let wall_secs = ms_between(first, last).unwrap_or(0.0) / 1e3;
        let running = timelines.iter().filter(|t| t.running.is_some()).count();
        let mut checked = 0;
        let mut consistent = 0;
        for t in &timelines {
            if let (Some(started), Some(sent), Some(running)) =
                (t.status_started_at, t.sent, t.running)
            {
                checked += 1;
                let sent_second = sent
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(d.as_secs()))
                    .unwrap_or(sent);
                if started >= sent_second && started <= running {
                    consistent += 1;
                }
            }
        }
        let p99 = figures[0].p99_ms;
        let pods = pods
            .iter()
            .map(|(name, t)| {
                let after = |at: Option<SystemTime>| ms_between(t.sent, at);
                PodRecord {
                    name: name.clone(),
                    node: t.node.clone(),
                    restarts: t.restarts,
                    acked_ms: after(t.acked),
                    bound_ms: after(t.bound),
                    sandbox_created_ms: after(t.sandbox_created),
                    sandbox_started_ms: after(t.sandbox_started),
                    container_created_ms: after(t.container_created),
                    container_started_ms: after(t.container_started),
                    running_ms: after(t.running),
                    ready_ms: after(t.ready),
                }
            })
            .collect();
        PodsReport {
            settings,
            machine,
            target_met: figures[0].count > 0
                && p99 < TARGET_P99.as_secs_f64() * 1e3
                && figures[0].count == timelines.len(),
            figures,
            phases,
            throughput_pods_per_sec: if wall_secs > 0.0 {
                running as f64 / wall_secs
            } else {
                0.0
            },
            wall_secs,
            target_p99_ms: TARGET_P99.as_secs_f64() * 1e3,
            cross_check: CrossCheck {
                checked,
                consistent,
            },
            pods,
        }
    }

    /// The figures and the phases as two kubectl-style tables, then the
    /// target and the cross-check.
    pub fn text(&self) -> String {
        let mut figures = Table::new(&["FIGURE", "COUNT", "P50", "P90", "P99", "MAX"]);
        for s in &self.figures {
            figures.row(vec![
                s.name.clone(),
                s.count.to_string(),
                ms(s.p50_ms),
                ms(s.p90_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
            ]);
        }
        let total = self.figures.get(2).map(|s| s.mean_ms).unwrap_or_default();
        let mut phases = Table::new(&["PHASE", "MEAN", "SHARE", "P50", "P90", "P99", "MAX"]);
        for s in &self.phases {
            let share = if total > 0.0 && s.name != PHASES[PHASES.len() - 1].name {
                format!("{:.0}%", 100.0 * s.mean_ms / total)
            } else {
                "-".into()
            };
            phases.row(vec![
                s.name.clone(),
                ms(s.mean_ms),
                share,
                ms(s.p50_ms),
                ms(s.p90_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
            ]);
        }
        let head = &self.figures[0];
        let verdict = if self.target_met { "met" } else { "NOT met" };
        format!(
            "{}\nthroughput: {} pods running in {:.2} s, {:.1} pods/s ({} starting at once)\n\
             target: create acknowledged → all containers running p99 < {} (image present): {verdict} (p99 {})\n\n\
             where the time goes (share of the mean create sent → running):\n{}\n\
             status startedAt cross-check: {} of {} within [create sent, Running seen]\n",
            figures.render(),
            head.count,
            self.wall_secs,
            self.throughput_pods_per_sec,
            self.settings.concurrency,
            ms(self.target_p99_ms),
            ms(head.p99_ms),
            phases.render(),
            self.cross_check.consistent,
            self.cross_check.checked,
        )
    }
}

/// Milliseconds as the tables print them: `0.8 ms`, `412 ms`, `1.83 s`.
fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(base: SystemTime, steps_ms: [u64; 8]) -> Timeline {
        let at = |i: usize| Some(base + Duration::from_millis(steps_ms[i]));
        Timeline {
            node: "n1".into(),
            sent: at(0),
            acked: at(1),
            bound: at(2),
            sandbox_created: at(3),
            sandbox_started: at(4),
            container_created: at(5),
            container_started: at(6),
            running: at(7),
            ready: at(7),
            status_started_at: Some(base),
            ..Default::default()
        }
    }

    #[test]
    fn phases_add_up_to_the_total_and_percentiles_use_nearest_rank() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let pods: Vec<(String, Timeline)> = (0..100)
            .map(|i| {
                (
                    format!("pod-{i}"),
                    timeline(base, [0, 10, 20, 100, 300, 330, 400, 410 + i]),
                )
            })
            .collect();
        let settings = Settings {
            masters: 3,
            nodes: 1,
            pods: 100,
            concurrency: 1,
            image: "rafter/demo:latest".into(),
            build: "debug".into(),
            rafter_bin: "rafter".into(),
            pod_cidr: "10.210.0.0/16".into(),
            server_args: Vec::new(),
            agent_args: Vec::new(),
        };
        let r = PodsReport::new(settings, Machine::this("test".into()), &pods);
        let head = &r.figures[0];
        assert_eq!(head.count, 100);
        assert_eq!(head.p50_ms, 400.0 + 49.0);
        assert_eq!(head.p99_ms, 400.0 + 98.0);
        assert_eq!(head.max_ms, 499.0);
        assert!(r.target_met);
        let phase_sum: f64 = r.phases[..7].iter().map(|p| p.mean_ms).sum();
        assert!((phase_sum - r.figures[2].mean_ms).abs() < 1e-6);
        assert_eq!(r.phases[3].p50_ms, 200.0);
        assert_eq!(r.cross_check.consistent, 100);
        let text = r.text();
        assert!(text.contains("FIGURE"), "{text}");
        assert!(text.contains("target:") && text.contains(": met"), "{text}");
    }

    #[test]
    fn a_pod_that_never_ran_fails_the_target() {
        let base = SystemTime::UNIX_EPOCH;
        let mut stuck = timeline(base, [0, 1, 2, 3, 4, 5, 6, 7]);
        stuck.running = None;
        let pods = vec![
            ("a".to_string(), timeline(base, [0, 1, 2, 3, 4, 5, 6, 7])),
            ("b".to_string(), stuck),
        ];
        let settings = Settings {
            masters: 3,
            nodes: 1,
            pods: 2,
            concurrency: 1,
            image: String::new(),
            build: String::new(),
            rafter_bin: String::new(),
            pod_cidr: String::new(),
            server_args: Vec::new(),
            agent_args: Vec::new(),
        };
        let r = PodsReport::new(settings, Machine::this(String::new()), &pods);
        assert_eq!(r.figures[0].count, 1);
        assert!(!r.target_met);
    }

    #[test]
    fn milliseconds_print_with_sensible_precision() {
        assert_eq!(ms(0.84), "0.8 ms");
        assert_eq!(ms(412.4), "412 ms");
        assert_eq!(ms(1834.0), "1.83 s");
    }
}
