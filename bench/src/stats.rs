//! Latency samples and their percentiles.

use serde::Deserialize;
use serde::Serialize;

/// Percentiles of a set of latency samples, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    /// Summarizes samples given in microseconds.
    pub fn of(mut samples: Vec<u32>) -> Latency {
        samples.sort_unstable();
        Latency {
            count: samples.len() as u64,
            p50_us: percentile(&samples, 0.50),
            p99_us: percentile(&samples, 0.99),
            p999_us: percentile(&samples, 0.999),
            max_us: samples.last().copied().unwrap_or(0) as f64,
        }
    }
}

/// Nearest-rank percentile of sorted samples; 0 when there are none.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// Microseconds of a duration, saturating at `u32::MAX` (71 minutes).
pub fn micros(d: std::time::Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&s, 0.5), 500.0);
        assert_eq!(percentile(&s, 0.99), 990.0);
        assert_eq!(percentile(&s, 0.999), 999.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        let l = Latency::of(vec![3, 1, 2]);
        assert_eq!((l.count, l.p50_us, l.max_us), (3, 2.0, 3.0));
    }
}
