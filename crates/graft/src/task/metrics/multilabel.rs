//! Multi-label classification (independent sigmoid outputs): per-label counts at 0.5 or a tuned threshold, the
//! probabilities kept for the ranking metrics, and the metrics computed from them.

use serde_json::{Map, Value};

use super::ranking::{curves_json, mean_defined};
use super::{json_f64, json_f64s, mean, ratio};
use crate::task::curves::Ranking;

/// Accumulates a multi-label model's outputs (independent sigmoid probabilities) over an epoch.
///
/// A label is predicted when its probability is `> 0.5` (so 0.5 itself is negative, matching the argmax rule of
/// [`ClassificationAccumulator`](super::ClassificationAccumulator) for `[1 - p, p]`); a target cell is positive when
/// `> 0.5`, which reads 0/1 targets and label-smoothed ones alike. Only counts are kept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MultiLabelAccumulator {
    num_labels: usize,
    /// A label is predicted when its probability exceeds this (0.5 unless tuned; `p ≥ t` when tuned).
    thresholds: Option<Vec<f64>>,
    rows: usize,
    exact_rows: usize,
    wrong_cells: usize,
    true_pos: Vec<usize>,
    false_pos: Vec<usize>,
    false_neg: Vec<usize>,
    /// Kept for the ranking metrics (ROC-AUC, average precision).
    probs: Vec<f32>,
    positive: Vec<bool>,
}

impl MultiLabelAccumulator {
    /// # Panics
    /// If `num_labels` is 0.
    pub fn new(num_labels: usize) -> Self {
        assert!(num_labels > 0, "a multi-label model needs at least one label");
        MultiLabelAccumulator {
            num_labels,
            thresholds: None,
            rows: 0,
            exact_rows: 0,
            wrong_cells: 0,
            true_pos: vec![0; num_labels],
            false_pos: vec![0; num_labels],
            false_neg: vec![0; num_labels],
            probs: Vec::new(),
            positive: Vec::new(),
        }
    }

    /// Tuned per-label decision thresholds instead of 0.5.
    pub fn with_thresholds(mut self, thresholds: Option<Vec<f64>>) -> Self {
        self.thresholds = thresholds.filter(|t| t.len() == self.num_labels);
        self
    }

    /// Adds one batch: `probs` and 0/1 `targets` are both row-major `[batch, num_labels]`.
    ///
    /// # Panics
    /// If the two lengths differ or are not a multiple of `num_labels`.
    pub fn update(&mut self, probs: &[f32], targets: &[f32]) {
        assert_eq!(probs.len(), targets.len(), "probabilities and targets differ in length");
        assert_eq!(
            targets.len() % self.num_labels,
            0,
            "{} values do not make rows of {} labels",
            targets.len(),
            self.num_labels
        );
        for (prob_row, target_row) in probs
            .chunks_exact(self.num_labels)
            .zip(targets.chunks_exact(self.num_labels))
        {
            self.rows += 1;
            self.probs.extend_from_slice(prob_row);
            self.positive.extend(target_row.iter().map(|&t| t > 0.5));
            let mut row_wrong = 0;
            for (j, (&p, &t)) in prob_row.iter().zip(target_row).enumerate() {
                let predicted = match &self.thresholds {
                    Some(th) => p as f64 >= th[j],
                    None => p > 0.5,
                };
                match (predicted, t > 0.5) {
                    (true, true) => self.true_pos[j] += 1,
                    (true, false) => {
                        self.false_pos[j] += 1;
                        row_wrong += 1;
                    }
                    (false, true) => {
                        self.false_neg[j] += 1;
                        row_wrong += 1;
                    }
                    (false, false) => {}
                }
            }
            self.wrong_cells += row_wrong;
            self.exact_rows += usize::from(row_wrong == 0);
        }
    }

    /// Number of rows accumulated so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Computes the metrics over all rows seen; all 0.0 when empty.
    pub fn compute(&self) -> MultiLabelMetrics {
        let cells = (self.rows * self.num_labels) as f64;
        let f1_per_class: Vec<f64> = (0..self.num_labels)
            .map(|j| {
                let tp = self.true_pos[j] as f64;
                ratio(2.0 * tp, 2.0 * tp + self.false_pos[j] as f64 + self.false_neg[j] as f64)
            })
            .collect();
        let tp: usize = self.true_pos.iter().sum();
        let fp: usize = self.false_pos.iter().sum();
        let fn_: usize = self.false_neg.iter().sum();
        let rankings = self.rankings();
        MultiLabelMetrics {
            precision_per_class: (0..self.num_labels)
                .map(|j| ratio(self.true_pos[j] as f64, (self.true_pos[j] + self.false_pos[j]) as f64))
                .collect(),
            recall_per_class: (0..self.num_labels)
                .map(|j| ratio(self.true_pos[j] as f64, (self.true_pos[j] + self.false_neg[j]) as f64))
                .collect(),
            support: (0..self.num_labels)
                .map(|j| self.true_pos[j] + self.false_neg[j])
                .collect(),
            roc_auc: mean_defined(rankings.iter().map(|(_, r)| r.roc_auc())),
            average_precision: mean_defined(rankings.iter().map(|(_, r)| r.average_precision())),
            accuracy: ratio(cells - self.wrong_cells as f64, cells),
            subset_accuracy: ratio(self.exact_rows as f64, self.rows as f64),
            hamming_loss: ratio(self.wrong_cells as f64, cells),
            f1_macro: mean(&f1_per_class),
            f1_micro: ratio(2.0 * tp as f64, (2 * tp + fp + fn_) as f64),
            f1_per_class,
        }
    }

    fn rankings(&self) -> Vec<(usize, Ranking)> {
        let k = self.num_labels;
        (0..k)
            .map(|j| {
                let column = self
                    .probs
                    .chunks_exact(k)
                    .zip(self.positive.chunks_exact(k))
                    .map(move |(p, t)| (p[j] as f64, t[j]));
                (j, Ranking::new(column))
            })
            .collect()
    }

    /// Per-label ROC and precision–recall curves, as
    /// [`ClassificationAccumulator::curves`](super::ClassificationAccumulator::curves) gives them.
    pub fn curves(&self, max_points: usize) -> Value {
        curves_json(self.rankings(), max_points)
    }
}

/// Multi-label metrics over one epoch at threshold 0.5.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiLabelMetrics {
    /// Fraction of label cells predicted right (binary accuracy over all cells): `1 - hamming_loss`.
    pub accuracy: f64,
    /// Fraction of rows with every label right: `accuracy_score` on indicator matrices.
    pub subset_accuracy: f64,
    /// Fraction of label cells predicted wrong: `hamming_loss`.
    pub hamming_loss: f64,
    /// Unweighted mean of the per-label F1 over all labels: `f1_score(average="macro", zero_division=0)`.
    pub f1_macro: f64,
    /// F1 from the summed counts of all labels: `f1_score(average="micro", zero_division=0)`.
    pub f1_micro: f64,
    /// `2tp / (2tp + fp + fn)` per label, 0 for a label never true nor predicted: `f1_score(average=None)`.
    pub f1_per_class: Vec<f64>,
    /// `tp / predicted` per label: `precision_score(average=None, zero_division=0)`.
    pub precision_per_class: Vec<f64>,
    /// `tp / true` per label: `recall_score(average=None, zero_division=0)`.
    pub recall_per_class: Vec<f64>,
    /// Rows where each label is true.
    pub support: Vec<usize>,
    /// Mean ROC-AUC over the labels with both outcomes (`roc_auc_score(average="macro")` when every label has both).
    pub roc_auc: Option<f64>,
    /// Mean average precision over the labels that occur (`average_precision_score(average="macro")` when every
    /// label occurs).
    pub average_precision: Option<f64>,
}

impl MultiLabelMetrics {
    /// JSON object with the keys `accuracy`, `subset_accuracy`, `hamming_loss`, `f1_macro`, `f1_micro` and
    /// `f1_per_class`, `precision_per_class`, `recall_per_class`, `support` (arrays in label order), `roc_auc` and
    /// `average_precision` (null when undefined); non-finite numbers become null.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("accuracy".into(), json_f64(self.accuracy));
        m.insert("subset_accuracy".into(), json_f64(self.subset_accuracy));
        m.insert("hamming_loss".into(), json_f64(self.hamming_loss));
        m.insert("f1_macro".into(), json_f64(self.f1_macro));
        m.insert("f1_micro".into(), json_f64(self.f1_micro));
        m.insert("f1_per_class".into(), json_f64s(&self.f1_per_class));
        m.insert("precision_per_class".into(), json_f64s(&self.precision_per_class));
        m.insert("recall_per_class".into(), json_f64s(&self.recall_per_class));
        m.insert("support".into(), Value::from(self.support.clone()));
        m.insert("roc_auc".into(), self.roc_auc.map_or(Value::Null, json_f64));
        m.insert(
            "average_precision".into(),
            self.average_precision.map_or(Value::Null, json_f64),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::metrics::tests::{all_close, close, f32s};

    #[test]
    fn multilabel_matches_sklearn() {
        const PROBS: [[f64; 4]; 6] = [
            [0.9, 0.2, 0.6, 0.1],
            [0.4, 0.7, 0.5, 0.0],
            [0.6, 0.8, 0.1, 0.3],
            [0.2, 0.1, 0.9, 0.2],
            [0.5, 0.55, 0.45, 0.4],
            [0.7, 0.3, 0.8, 0.1],
        ];
        const TARGETS: [[f64; 4]; 6] = [
            [1., 0., 1., 0.],
            [0., 1., 1., 0.],
            [1., 0., 0., 0.],
            [0., 0., 1., 0.],
            [1., 1., 0., 0.],
            [1., 0., 1., 0.],
        ];
        let mut acc = MultiLabelAccumulator::new(4);
        let (probs, targets) = (f32s(&PROBS), f32s(&TARGETS));
        acc.update(&probs[..12], &targets[..12]);
        acc.update(&probs[12..], &targets[12..]);
        assert_eq!(acc.len(), 6);
        let m = acc.compute();
        close(m.accuracy, 0.875, "accuracy_score(Y.ravel(), (P > 0.5).ravel())");
        close(m.subset_accuracy, 0.5, "accuracy_score(Y, P > 0.5)");
        close(m.hamming_loss, 0.125, "hamming_loss(Y, P > 0.5)");
        close(
            m.f1_macro,
            0.6285714285714286,
            "f1_score(average='macro', zero_division=0)",
        );
        close(
            m.f1_micro,
            0.8421052631578947,
            "f1_score(average='micro', zero_division=0)",
        );
        all_close(
            &m.f1_per_class,
            &[0.8571428571428571, 0.8, 0.8571428571428571, 0.0],
            "f1_score(average=None, zero_division=0)",
        );
        all_close(
            &m.precision_per_class,
            &[1.0, 0.6666666666666666, 1.0, 0.0],
            "precision_score(average=None)",
        );
        all_close(
            &m.recall_per_class,
            &[0.75, 1.0, 0.75, 0.0],
            "recall_score(average=None)",
        );
        assert_eq!(m.support, vec![4, 2, 4, 0]);
        // Label 3 is never true, so it has neither; sklearn on the other three labels:
        close(
            m.roc_auc.expect("defined"),
            0.9166666666666666,
            "roc_auc_score(Y[:, :3], average='macro')",
        );
        close(
            m.average_precision.expect("defined"),
            0.861111111111111,
            "average_precision_score(Y[:, :3], average='macro')",
        );
    }
}
