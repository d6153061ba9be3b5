//! Summaries of samples: nearest-rank percentiles, so each reported figure is a measured one.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The `p`th percentile (0..=100) of sorted samples, by nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// None for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        min: s[0],
        p25: percentile(&s, 25.0),
        p50: percentile(&s, 50.0),
        p75: percentile(&s, 75.0),
        p95: percentile(&s, 95.0),
        p99: percentile(&s, 99.0),
        max: s[s.len() - 1],
        mean: s.iter().sum::<f64>() / s.len() as f64,
    })
}

impl Summary {
    /// Relative spread of the middle half: how much this figure moves from run to run.
    pub fn relative_iqr(&self) -> f64 {
        if self.p50 == 0.0 {
            return 0.0;
        }
        (self.p75 - self.p25) / self.p50
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_samples_and_ordered() {
        let xs: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = summarize(&xs).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p95, s.p99, s.max),
            (1.0, 50.0, 95.0, 99.0, 100.0)
        );
        let one = summarize(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(summarize(&[]).is_none());
    }
}
