//! Monte-Carlo dropout (Gal & Ghahramani, 2016): the same input run N times with dropout active gives N
//! predictions whose spread measures how unsure the model is. Per input this module summarizes the N probability
//! vectors into their mean, their standard deviation, the predictive entropy `H[mean p]` and the mutual information
//! `H[mean p] − mean H[p]` (the part of the uncertainty that comes from the weights, not from the data); for
//! regression, the mean and standard deviation of the values.

use serde_json::{Value as Json, json};

/// Entropy in nats of a probability vector (0·log 0 = 0).
pub fn entropy(p: &[f32]) -> f64 {
    p.iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| {
            let x = x as f64;
            -x * x.ln()
        })
        .sum()
}

/// The probabilities of a binary head (one sigmoid output p) as the two-class vector [1 − p, p].
pub fn two_class(p: &[f32]) -> Vec<f32> {
    if p.len() == 1 {
        vec![1.0 - p[0], p[0]]
    } else {
        p.to_vec()
    }
}

/// The summary of one input's N stochastic predictions (each `[K]`).
#[derive(Debug, Clone, PartialEq)]
pub struct McSummary {
    pub mean: Vec<f32>,
    /// Population standard deviation over the passes, per output.
    pub std: Vec<f32>,
    /// H[mean p], in nats (classification only).
    pub entropy: f64,
    /// `H[mean p] − mean over passes of H[p]`, in nats (classification only; ≥ 0).
    pub mutual_information: f64,
}

/// Summarizes `samples` (N passes × K values). `classification`: the values are class probabilities.
pub fn summarize(samples: &[Vec<f32>], classification: bool) -> McSummary {
    let n = samples.len().max(1) as f64;
    let k = samples.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; k];
    for s in samples {
        for (m, &v) in mean.iter_mut().zip(s) {
            *m += v as f64 / n;
        }
    }
    let mut var = vec![0f64; k];
    for s in samples {
        for ((acc, &v), m) in var.iter_mut().zip(s).zip(&mean) {
            *acc += (v as f64 - m).powi(2) / n;
        }
    }
    let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let (entropy_of_mean, mutual_information) = if classification {
        let h = entropy(&two_class(&mean32));
        let expected: f64 = samples.iter().map(|s| entropy(&two_class(s))).sum::<f64>() / n;
        (h, (h - expected).max(0.0))
    } else {
        (0.0, 0.0)
    };
    McSummary {
        mean: mean32,
        std: var.iter().map(|v| v.sqrt() as f32).collect(),
        entropy: entropy_of_mean,
        mutual_information,
    }
}

impl McSummary {
    /// The extra fields of a `predict` line.
    pub fn fields(&self, classification: bool) -> Vec<(&'static str, Json)> {
        let mut out = vec![("std", json!(self.std))];
        if classification {
            out.push(("entropy", json!(self.entropy)));
            out.push(("mutual_information", json!(self.mutual_information)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_and_mutual_information_have_their_closed_forms() {
        // Two confident passes that disagree: the mean is uniform (entropy ln 2), each pass has entropy
        // -(0.9 ln 0.9 + 0.1 ln 0.1), and the mutual information is the difference.
        let s = summarize(&[vec![0.9, 0.1], vec![0.1, 0.9]], true);
        let h_pass = -(0.9f64 * 0.9f64.ln() + 0.1f64 * 0.1f64.ln());
        assert!((s.entropy - 2f64.ln()).abs() < 1e-6);
        assert!((s.mutual_information - (2f64.ln() - h_pass)).abs() < 1e-6);
        assert!((s.std[0] - 0.4).abs() < 1e-6 && (s.mean[0] - 0.5).abs() < 1e-6);
        // Passes that agree: no mutual information, however uncertain each pass is.
        let s = summarize(&[vec![0.5, 0.5], vec![0.5, 0.5]], true);
        assert!((s.entropy - 2f64.ln()).abs() < 1e-6);
        assert!(s.mutual_information.abs() < 1e-12);
        assert_eq!(s.std, vec![0.0, 0.0]);
        // A uniform 4-class vector has entropy ln 4; a one-hot vector 0.
        assert!((entropy(&[0.25; 4]) - 4f64.ln()).abs() < 1e-12);
        assert_eq!(entropy(&[0.0, 1.0, 0.0]), 0.0);
        // A binary head's single sigmoid output counts as two classes.
        let s = summarize(&[vec![0.9], vec![0.1]], true);
        assert!((s.entropy - 2f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn regression_gets_mean_and_spread() {
        let s = summarize(&[vec![1.0, 10.0], vec![3.0, 10.0]], false);
        assert_eq!(s.mean, vec![2.0, 10.0]);
        assert_eq!(s.std, vec![1.0, 0.0]);
        assert_eq!(s.fields(false).len(), 1);
    }
}
