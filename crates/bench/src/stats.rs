//! Latency samples and their percentiles.

use std::time::Duration;

/// The measured durations of one benchmark case.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    ms: Vec<f64>,
}

/// Percentiles of a [`Samples`], in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1e3);
    }

    /// Nearest-rank percentiles; `None` when there are no samples.
    pub fn summary(&self) -> Option<Summary> {
        if self.ms.is_empty() {
            return None;
        }
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[i.clamp(1, v.len()) - 1]
        };
        Some(Summary {
            n: v.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            min: v[0],
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        let m = s.summary().unwrap();
        assert_eq!(m.n, 100);
        assert!((m.p50 - 50.0).abs() < 1e-9);
        assert!((m.p90 - 90.0).abs() < 1e-9);
        assert!((m.p99 - 99.0).abs() < 1e-9);
        assert!((m.min - 1.0).abs() < 1e-9 && (m.max - 100.0).abs() < 1e-9);
        assert!(Samples::default().summary().is_none());
    }
}
