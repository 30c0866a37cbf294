//! Several runs of the benchmark summed up: a single run's ratios move by
//! ±10–15 % on a shared 2-vCPU machine, so figures to quote are the mean
//! of a few runs (`rafter bench kv --runs N`).

use serde::Deserialize;
use serde::Serialize;

use crate::report::Report;
use crate::report::columns;
use crate::report::num;

/// Each figure over every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub runs: usize,
    pub figures: Vec<SummaryRow>,
}

/// One figure over every run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SummaryRow {
    pub figure: String,
    pub unit: String,
    /// Mean of etcd's figure over the runs.
    pub etcd: f64,
    /// Mean of Rafter's figure over the runs.
    pub rafter: f64,
    /// Mean of the runs' Rafter / etcd ratios (not the ratio of the means,
    /// so each run's comparison counts once); `None` when no run had one.
    pub ratio: Option<f64>,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    pub target: Option<String>,
    /// Runs in which the target was met, when the figure has a target.
    pub met_runs: Option<usize>,
}

impl Summary {
    /// Sums up `reports`, matching figures by name (every run has the
    /// same figures; one missing from a run is left out of its means).
    pub fn of(reports: &[Report]) -> Summary {
        let Some(first) = reports.first() else {
            return Summary {
                runs: 0,
                figures: Vec::new(),
            };
        };
        let figures = first
            .comparisons
            .iter()
            .map(|c| {
                let same: Vec<_> = reports
                    .iter()
                    .filter_map(|r| r.comparisons.iter().find(|x| x.figure == c.figure))
                    .collect();
                let mean =
                    |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
                let ratios: Vec<f64> = same.iter().filter_map(|x| x.ratio).collect();
                let met: Vec<bool> = same.iter().filter_map(|x| x.met).collect();
                SummaryRow {
                    figure: c.figure.clone(),
                    unit: c.unit.clone(),
                    etcd: mean(same.iter().map(|x| x.etcd).collect()).unwrap_or(f64::NAN),
                    rafter: mean(same.iter().map(|x| x.rafter).collect()).unwrap_or(f64::NAN),
                    ratio_min: ratios.iter().copied().reduce(f64::min),
                    ratio_max: ratios.iter().copied().reduce(f64::max),
                    ratio: mean(ratios),
                    target: c.target.clone(),
                    met_runs: (!met.is_empty()).then(|| met.iter().filter(|m| **m).count()),
                }
            })
            .collect();
        Summary {
            runs: reports.len(),
            figures,
        }
    }

    /// The summary table as printed on stdout.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 8]> = vec![[
            "FIGURE".into(),
            "UNIT".into(),
            "ETCD".into(),
            "RAFTER".into(),
            "RAFTER/ETCD".into(),
            "RANGE".into(),
            "TARGET".into(),
            "MET".into(),
        ]];
        let two = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or("-".into());
        for f in &self.figures {
            rows.push([
                f.figure.clone(),
                f.unit.clone(),
                num(f.etcd),
                num(f.rafter),
                two(f.ratio),
                match (f.ratio_min, f.ratio_max) {
                    (Some(lo), Some(hi)) => format!("{lo:.2}–{hi:.2}"),
                    _ => "-".into(),
                },
                f.target.clone().unwrap_or_default(),
                f.met_runs
                    .map(|n| format!("{n} of {}", self.runs))
                    .unwrap_or_default(),
            ]);
        }
        columns(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Comparison;

    fn report(figures: &[(&str, f64, f64, Option<bool>)]) -> Report {
        let text = r#"{"machine": {"cpus": 2, "cpu_model": "x", "kernel": "k", "memory_mib": 1,
                "data_dir": "/d", "filesystem": "ext4",
                "fdatasync": {"count": 1, "p50_us": 1, "p99_us": 1, "p999_us": 1, "max_us": 1},
                "loopback_rtt": {"count": 1, "p50_us": 1, "p99_us": 1, "p999_us": 1, "max_us": 1},
                "floor_us": 3},
              "settings": {"measure_secs": 1, "warmup_secs": 0, "kills": 1, "members": 3,
                "keyspace": 1, "value_bytes": 1, "rafter_server_args": []},
              "systems": [], "comparisons": []}"#;
        let mut r: Report = serde_json::from_str(text).expect("report parses");
        r.comparisons = figures
            .iter()
            .map(|(figure, etcd, rafter, met)| Comparison {
                figure: figure.to_string(),
                unit: "ops/s".into(),
                etcd: *etcd,
                rafter: *rafter,
                ratio: (*etcd != 0.0).then(|| rafter / etcd),
                target: met.map(|_| "≥ 2 × etcd".into()),
                met: *met,
            })
            .collect();
        r
    }

    #[test]
    fn figures_are_averaged_with_the_ratio_range_and_the_runs_meeting_the_target() {
        let runs = [
            report(&[("put", 100.0, 300.0, Some(true)), ("get", 0.0, 5.0, None)]),
            report(&[("put", 200.0, 200.0, Some(false)), ("get", 0.0, 7.0, None)]),
        ];
        let s = Summary::of(&runs);
        assert_eq!(s.runs, 2);
        let put = &s.figures[0];
        assert_eq!((put.etcd, put.rafter), (150.0, 250.0));
        // The mean of the runs' ratios (3 and 1), not 250 / 150.
        assert_eq!(put.ratio, Some(2.0));
        assert_eq!((put.ratio_min, put.ratio_max), (Some(1.0), Some(3.0)));
        assert_eq!(put.met_runs, Some(1));
        let get = &s.figures[1];
        assert_eq!(get.rafter, 6.0);
        assert_eq!((get.ratio, get.met_runs), (None, None));

        let table = s.table();
        let put_line = table.lines().find(|l| l.starts_with("put")).unwrap();
        assert!(put_line.contains("2.00"), "{put_line}");
        assert!(put_line.contains("1.00–3.00"), "{put_line}");
        assert!(put_line.ends_with("1 of 2"), "{put_line}");
    }

    #[test]
    fn no_runs_sum_up_to_nothing() {
        let s = Summary::of(&[]);
        assert_eq!(s.runs, 0);
        assert!(s.figures.is_empty());
    }
}
