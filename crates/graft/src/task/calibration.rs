//! Calibration: whether a classifier's confidence matches how often it is right, and temperature scaling to make
//! it so (Guo et al., "On Calibration of Modern Neural Networks", 2017).
//!
//! - Expected calibration error: the rows are put in 15 equal-width bins of top-label confidence (the largest
//!   probability); ECE = Σ_b |B_b|/n · |accuracy(B_b) − mean confidence(B_b)|. The bins themselves are the
//!   reliability diagram.
//! - Temperature scaling: one scalar T > 0 divides the logits before the softmax (sigmoid for a binary head),
//!   chosen to minimize the negative log-likelihood on the validation split. It never changes which class wins.

use serde::Serialize;

/// Bins of the reliability diagram and of the ECE.
pub const BINS: usize = 15;

/// One bin of the reliability diagram: confidence in `[lower, upper)` (the last bin includes 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean top-label confidence of the bin's rows (0 when empty).
    pub confidence: f64,
    /// Fraction of the bin's rows whose top label is right (0 when empty).
    pub accuracy: f64,
}

/// The ECE and the reliability bins of row-major probabilities `[n, c]` against `labels`.
pub fn expected_calibration_error(probs: &[f32], labels: &[usize], c: usize) -> (f64, Vec<ReliabilityBin>) {
    let mut count = [0usize; BINS];
    let mut conf = [0f64; BINS];
    let mut right = [0usize; BINS];
    for (row, &label) in probs.chunks_exact(c).zip(labels) {
        let (best, p) = row.iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |(b, bp), (j, &v)| if v > bp { (j, v) } else { (b, bp) },
        );
        let b = ((p as f64 * BINS as f64) as usize).min(BINS - 1);
        count[b] += 1;
        conf[b] += p as f64;
        right[b] += usize::from(best == label);
    }
    let n = labels.len().max(1) as f64;
    let mut ece = 0.0;
    let bins = (0..BINS)
        .map(|b| {
            let k = count[b].max(1) as f64;
            let (confidence, accuracy) = if count[b] > 0 {
                (conf[b] / k, right[b] as f64 / k)
            } else {
                (0.0, 0.0)
            };
            ece += count[b] as f64 / n * (accuracy - confidence).abs();
            ReliabilityBin {
                lower: b as f64 / BINS as f64,
                upper: (b + 1) as f64 / BINS as f64,
                count: count[b],
                confidence,
                accuracy,
            }
        })
        .collect();
    (ece, bins)
}

/// Mean negative log-likelihood of the labels under probabilities `[n, c]` (probabilities floored at 1e-12).
pub fn nll(probs: &[f32], labels: &[usize], c: usize) -> f64 {
    let n = labels.len().max(1) as f64;
    probs
        .chunks_exact(c)
        .zip(labels)
        .map(|(row, &l)| -(row[l] as f64).max(1e-12).ln())
        .sum::<f64>()
        / n
}

/// Mean NLL of `logits` `[n, k]` divided by `t`: softmax over k > 1 columns, sigmoid of one column (binary).
fn nll_at(logits: &[f32], labels: &[usize], k: usize, t: f64) -> f64 {
    let n = labels.len().max(1) as f64;
    logits
        .chunks_exact(k)
        .zip(labels)
        .map(|(row, &l)| {
            if k == 1 {
                // −log σ(z) for label 1, −log σ(−z) for label 0, computed stably.
                let z = row[0] as f64 / t;
                let s = if l == 1 { z } else { -z };
                (-s).max(0.0) + (-s.abs()).exp().ln_1p()
            } else {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / t));
                let log_sum = row.iter().map(|&v| (v as f64 / t - max).exp()).sum::<f64>().ln() + max;
                log_sum - row[l] as f64 / t
            }
        })
        .sum::<f64>()
        / n
}

/// The temperature minimizing the validation NLL of `logits` `[n, k]` (k = 1: a binary sigmoid head), searched
/// over log T in [ln 0.05, ln 20] by golden-section (the NLL is convex in 1/T, so unimodal in log T).
pub fn fit_temperature(logits: &[f32], labels: &[usize], k: usize) -> f64 {
    let f = |log_t: f64| nll_at(logits, labels, k, log_t.exp());
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// The validation NLL at temperature `t` (for reports: before, t = 1, and after).
pub fn nll_with_temperature(logits: &[f32], labels: &[usize], k: usize, t: f64) -> f64 {
    nll_at(logits, labels, k, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_by_hand() {
        // Two rows at confidence 0.9 (bin 13), one right; one row at 0.6 (bin 9), right.
        // ECE = 2/3·|0.5 − 0.9| + 1/3·|1 − 0.6| = 0.4.
        let probs = [0.9, 0.1, 0.1, 0.9, 0.6, 0.4];
        let (ece, bins) = expected_calibration_error(&probs, &[0, 0, 0], 2);
        assert!((ece - 0.4).abs() < 1e-6, "{ece}");
        assert_eq!(bins.len(), BINS);
        assert_eq!((bins[13].count, bins[9].count), (2, 1));
        assert!((bins[13].accuracy - 0.5).abs() < 1e-12 && (bins[13].confidence - 0.9).abs() < 1e-6);
        // Perfectly calibrated: confidence 1 and always right.
        assert_eq!(expected_calibration_error(&[1.0, 0.0], &[0], 2).0, 0.0);
    }

    #[test]
    fn temperature_scaling_lowers_the_nll_of_an_overconfident_model() {
        // Logits scaled up 4×: right 70% of the time but nearly certain every time.
        let mut logits = vec![];
        let mut labels = vec![];
        for i in 0..100 {
            let label = i % 3;
            let predicted = if i % 10 < 7 { label } else { (label + 1) % 3 };
            let mut row = [0f32; 3];
            row[predicted] = 4.0 * 2.0;
            row[(predicted + 2) % 3] = 4.0 * 0.5;
            logits.extend(row);
            labels.push(label);
        }
        let t = fit_temperature(&logits, &labels, 3);
        let before = nll_with_temperature(&logits, &labels, 3, 1.0);
        let after = nll_with_temperature(&logits, &labels, 3, t);
        assert!(t > 1.5, "an overconfident model needs T > 1, found {t}");
        assert!(after < before - 0.3, "NLL {before} → {after}");
        // The minimum: a nearby temperature is no better.
        for dt in [0.9, 1.1] {
            assert!(nll_with_temperature(&logits, &labels, 3, t * dt) >= after - 1e-9);
        }
        // A binary sigmoid head works the same way.
        let binary: Vec<f32> = (0..50).map(|i| if i % 5 == 0 { -6.0 } else { 6.0 }).collect();
        let ones = vec![1usize; 50];
        let t = fit_temperature(&binary, &ones, 1);
        assert!(nll_with_temperature(&binary, &ones, 1, t) < nll_with_temperature(&binary, &ones, 1, 1.0));
    }
}
