//! Recognising inputs that belong to no class. Every score is "higher = less like the training data":
//!
//! - `max_softmax`: 1 − the largest class probability (Hendrycks & Gimpel, 2017);
//! - `entropy`: the entropy of the class probabilities, in nats;
//! - `energy`: −logsumexp of the logits (Liu et al., 2020);
//! - `mc_mutual_information`: the mutual information of Monte-Carlo dropout predictions (see
//!   [`super::uncertainty`]);
//! - `mahalanobis`: the smallest squared Mahalanobis distance from the penultimate layer's features to a class mean,
//!   with one covariance shared by the classes, all estimated on the training data (Lee et al., 2018).
//!
//! With `[train] reject = { score = "...", keep = 0.95 }` a threshold is set on the validation split so that the
//! given fraction of in-distribution inputs is kept; it is stored in `ood.json` with the feature statistics, and
//! `predict` marks inputs above it as `"unknown"`.
//!
//! The scores here are functions of a model's outputs (logits, features); running the model for them is
//! `Predictor::ood_scores` in `reject.rs`, so this file needs no predictor.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::uncertainty::entropy;
use crate::data::Array;
use crate::data::fsio::write_atomic;
use crate::error::{Context, Error, Result};
use crate::model::Graph;
use crate::model::graph::Source;

pub const SCORES: [&str; 5] = [
    "max_softmax",
    "entropy",
    "energy",
    "mc_mutual_information",
    "mahalanobis",
];

/// Monte-Carlo passes behind `mc_mutual_information`.
pub const MC_PASSES: usize = 20;

/// What `[train] reject` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectSpec {
    /// One of [`SCORES`].
    #[serde(default = "default_score")]
    pub score: String,
    /// The fraction of validation inputs the threshold keeps (the true-positive rate of in-distribution inputs).
    #[serde(default = "default_keep")]
    pub keep: f64,
}

fn default_score() -> String {
    "mahalanobis".into()
}
fn default_keep() -> f64 {
    0.95
}

impl RejectSpec {
    pub fn check(&self) -> Result<()> {
        if !SCORES.contains(&self.score.as_str()) {
            return Err(Error::new(format!(
                "unknown score \"{}\"{}; expected one of {}",
                self.score,
                graft_data::suggest::hint(&self.score, SCORES),
                SCORES.join(", ")
            ))
            .at("train.reject.score"));
        }
        if !(self.keep > 0.0 && self.keep <= 1.0) {
            return Err(
                Error::new(format!("expected a fraction in (0, 1], found {}", self.keep)).at("train.reject.keep"),
            );
        }
        Ok(())
    }
}

/// Class means and the shared precision matrix of the penultimate layer's features on the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// The node whose outputs are the features.
    pub layer: String,
    pub dim: usize,
    /// Per class; a class without training rows has none (it is left out of the minimum).
    pub means: Vec<Option<Vec<f64>>>,
    /// The inverse of the shared covariance (plus a small ridge), row-major `dim × dim`.
    pub precision: Vec<f64>,
}

/// `ood.json`: the statistics, and the rejection threshold when one was set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodModel {
    pub features: FeatureStats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<Threshold>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub score: String,
    pub keep: f64,
    /// Inputs scoring above this are rejected.
    pub threshold: f64,
}

impl OodModel {
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("ood.json");
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).in_file(&path)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::new(e.to_string()).in_file(&path))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| Error::new(e.to_string()))?;
        write_atomic(&dir.join("ood.json"), text.as_bytes())
    }
}

/// The node whose output feeds the model's first output layer: the penultimate features.
pub fn penultimate(graph: &Graph) -> Result<usize> {
    let Source::Node(out, _) = graph.outputs[0] else {
        return Err(Error::new(
            "the model output is an input; there are no features to measure",
        ));
    };
    let mut node = out;
    // Skip parameter-free layers at the end (a final softmax), then step to what feeds the output layer.
    let counts = crate::model::summary::parameter_counts(graph);
    let has_params = |n: usize| {
        counts
            .get(&graph.nodes[graph.nodes[n].layer_of].name)
            .is_some_and(|c| c.0 + c.1 > 0)
    };
    while !has_params(node) {
        match graph.nodes[node].sources.first() {
            Some(Source::Node(n, _)) => node = *n,
            _ => return Err(Error::new("no layer with weights feeds the model output")),
        }
    }
    match graph.nodes[node].sources.first() {
        Some(Source::Node(n, _)) => Ok(*n),
        _ => Err(Error::new(format!(
            "the output layer '{}' reads the model input directly; there are no features to measure",
            graph.nodes[node].name
        ))),
    }
}

impl FeatureStats {
    /// Fits class means and the shared covariance of `features` `[n, d]` with their `labels`.
    pub fn fit(layer: &str, features: &Array, labels: &[usize], classes: usize) -> Result<Self> {
        let d = features.sample_size();
        let n = features.len();
        if n == 0 || d == 0 {
            return Err(Error::new("no training features to fit the class means on"));
        }
        if d > 4096 {
            return Err(Error::new(format!(
                "the features of '{layer}' have {d} values; the shared covariance is fitted up to 4096"
            )));
        }
        let mut sums = vec![vec![0f64; d]; classes];
        let mut counts = vec![0usize; classes];
        for (row, &l) in features.data.chunks_exact(d).zip(labels) {
            counts[l] += 1;
            for (s, &v) in sums[l].iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        let means: Vec<Option<Vec<f64>>> = sums
            .into_iter()
            .zip(&counts)
            .map(|(s, &c)| (c > 0).then(|| s.into_iter().map(|v| v / c as f64).collect()))
            .collect();
        let mut cov = vec![0f64; d * d];
        let mut centered = vec![0f64; d];
        for (row, &l) in features.data.chunks_exact(d).zip(labels) {
            let mean = means[l].as_ref().expect("a class with rows has a mean");
            for j in 0..d {
                centered[j] = row[j] as f64 - mean[j];
            }
            for a in 0..d {
                let ca = centered[a];
                if ca == 0.0 {
                    continue;
                }
                for b in a..d {
                    cov[a * d + b] += ca * centered[b];
                }
            }
        }
        for a in 0..d {
            for b in a..d {
                cov[a * d + b] /= n as f64;
                cov[b * d + a] = cov[a * d + b];
            }
        }
        // A ridge proportional to the mean variance keeps the matrix invertible (dead ReLU units have none).
        let ridge = 1e-6 * ((0..d).map(|i| cov[i * d + i]).sum::<f64>() / d as f64).max(1e-12);
        for i in 0..d {
            cov[i * d + i] += ridge;
        }
        Ok(FeatureStats {
            layer: layer.to_string(),
            dim: d,
            means,
            precision: invert_spd(&cov, d)?,
        })
    }

    /// The smallest squared Mahalanobis distance of one feature vector to a class mean.
    pub fn score(&self, f: &[f32]) -> f64 {
        let d = self.dim;
        let mut best = f64::INFINITY;
        let mut diff = vec![0f64; d];
        for mean in self.means.iter().flatten() {
            for j in 0..d {
                diff[j] = f[j] as f64 - mean[j];
            }
            let mut total = 0.0;
            for a in 0..d {
                let row = &self.precision[a * d..(a + 1) * d];
                total += diff[a] * row.iter().zip(&diff).map(|(p, x)| p * x).sum::<f64>();
            }
            best = best.min(total);
        }
        best
    }
}

/// The inverse of a symmetric positive-definite matrix, through its Cholesky factor.
fn invert_spd(a: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut l = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let v = a[i * d + i] - s;
                if v.is_nan() || v <= 0.0 {
                    return Err(Error::new("the feature covariance is not positive definite"));
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    // Solve L Lᵀ X = I column by column.
    let mut inv = vec![0f64; d * d];
    let mut y = vec![0f64; d];
    for c in 0..d {
        for i in 0..d {
            let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
            y[i] = (if i == c { 1.0 } else { 0.0 } - s) / l[i * d + i];
        }
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|k| l[k * d + i] * inv[k * d + c]).sum();
            inv[i * d + c] = (y[i] - s) / l[i * d + i];
        }
    }
    Ok(inv)
}

/// The scores computed from a classifier's logits `[N, K]` (`K` = 1: one sigmoid output), with the
/// probabilities at `temperature`: `max_softmax`, `entropy` and `energy`, one value per input.
pub fn logit_scores(logits: &Array, temperature: f64) -> BTreeMap<&'static str, Vec<f64>> {
    let k = logits.sample_size();
    let (mut msp, mut ent, mut energy) = (vec![], vec![], vec![]);
    for row in logits.data.chunks_exact(k) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        energy.push(-lse);
        let probs: Vec<f32> = if k == 1 {
            let p = 1.0 / (1.0 + (-(row[0] as f64) / temperature).exp());
            vec![(1.0 - p) as f32, p as f32]
        } else {
            let t = temperature;
            let m = max / t;
            let z: f64 = row.iter().map(|&v| (v as f64 / t - m).exp()).sum();
            row.iter().map(|&v| ((v as f64 / t - m).exp() / z) as f32).collect()
        };
        msp.push(1.0 - probs.iter().fold(0f32, |m, &p| m.max(p)) as f64);
        ent.push(entropy(&probs));
    }
    BTreeMap::from([("max_softmax", msp), ("entropy", ent), ("energy", energy)])
}

/// `mahalanobis` for every row of `features` (the outputs of the layer `stats` was fitted on).
pub fn mahalanobis_scores(features: &Array, stats: &FeatureStats) -> Result<Vec<f64>> {
    if features.sample_size() != stats.dim {
        return Err(Error::new(format!(
            "the features of '{}' have {} values, the stored statistics {}",
            stats.layer,
            features.sample_size(),
            stats.dim
        )));
    }
    Ok(features.data.chunks_exact(stats.dim).map(|f| stats.score(f)).collect())
}

/// How well a score separates in-distribution (`inside`) from out-of-distribution (`outside`) inputs, OOD being
/// the positive class: AUROC, AUPR (average precision) and the false-positive rate at 95% true-positive rate (the
/// fraction of OOD inputs kept by the threshold that keeps 95% of in-distribution ones).
pub fn separation(inside: &[f64], outside: &[f64]) -> (Option<f64>, Option<f64>, f64) {
    let scored: Vec<(f64, bool)> = inside
        .iter()
        .map(|&s| (s, false))
        .chain(outside.iter().map(|&s| (s, true)))
        .collect();
    let auroc = crate::task::metrics::roc_auc_f64(&scored);
    let aupr = crate::task::curves::Ranking::new(scored.iter().copied()).average_precision();
    let threshold = quantile(inside, 0.95);
    let kept = outside.iter().filter(|&&s| s <= threshold).count();
    (auroc, aupr, kept as f64 / outside.len().max(1) as f64)
}

/// The `q` quantile of `values` by the nearest-rank rule (the smallest value with at least q·n values at or below
/// it): a threshold at it keeps at least that fraction.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::INFINITY;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separation_measures_against_sklearn() {
        // sklearn: roc_auc_score([0,0,0,1,1], [0.1,0.4,0.35,0.8,0.3]) = 0.6667 (4 of 6 pairs in order);
        // average_precision_score(same) = 0.75 (ranks: 0.8 ✓, 0.4 ✗, 0.35 ✗, 0.3 ✓ → 0.5·1 + 0.5·0.5).
        let (auroc, aupr, fpr) = separation(&[0.1, 0.4, 0.35], &[0.8, 0.3]);
        assert!((auroc.unwrap() - 4.0 / 6.0).abs() < 1e-12, "{auroc:?}");
        assert!((aupr.unwrap() - 0.75).abs() < 1e-12, "{aupr:?}");
        // The threshold keeping 95% of {0.1, 0.35, 0.4} is 0.4; it keeps the OOD 0.3 → FPR 0.5.
        assert_eq!(fpr, 0.5);
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.95), 4.0);
    }

    #[test]
    fn mahalanobis_uses_the_shared_covariance() {
        // Two classes around (0, 0) and (10, 0), spread 1 along x and 0.1 along y: a point 1 off in y is far,
        // a point 1 off in x is near.
        let mut data = vec![];
        let mut labels = vec![];
        for i in 0..200 {
            let (cx, l) = if i % 2 == 0 { (0.0, 0) } else { (10.0, 1) };
            let t = i as f32 * 0.7;
            data.extend([cx + t.sin(), 0.1 * (1.3 * t).cos()]);
            labels.push(l);
        }
        let stats = FeatureStats::fit("f", &Array::new(vec![200, 2], data).unwrap(), &labels, 2).unwrap();
        let near = stats.score(&[1.0, 0.0]);
        let far = stats.score(&[0.0, 1.0]);
        assert!(far > 20.0 * near, "{near} vs {far}");
        // The inverse is an inverse.
        let d = 2;
        let cov = [2.0, 0.5, 0.5, 1.0];
        let inv = invert_spd(&cov, d).unwrap();
        for i in 0..d {
            for j in 0..d {
                let v: f64 = (0..d).map(|k| cov[i * d + k] * inv[k * d + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
