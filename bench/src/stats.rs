//! Order statistics of a set of samples: median, quartiles, extremes; and how the subject
//! that gave them fared ([`Status`]), which the report and the metrics both keep.

use serde::Serialize;

/// How a subject or a series fared in a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every run succeeded.
    Ok,
    /// Not run: not installed, or it failed the pre-flight check (see `error`).
    Skipped,
    /// Failed during the timed runs (see `error`); the samples before the failure are kept.
    Failed,
}

/// Summary of samples in milliseconds. Quantiles interpolate linearly between the closest ranks
/// (the "type 7" definition of R and numpy's default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none (or any is not a number).
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Summary {
            n: s.len(),
            median: quantile(&s, 0.5),
            p25: quantile(&s, 0.25),
            p75: quantile(&s, 0.75),
            min: s[0],
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        })
    }
}

/// The `q` quantile of sorted, non-empty `s`.
fn quantile(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Rounds to microseconds for reports (values are milliseconds).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.p25, 1.75);
        assert_eq!(s.p75, 3.25);
        assert_eq!((s.min, s.max, s.mean), (1.0, 4.0, 2.5));
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.p25, one.p75), (7.0, 7.0, 7.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }
}
