//! Single-label classification: the epoch accumulator, which keeps every row's class probabilities (ROC-AUC and
//! top-k need them), and the metrics computed from it, confusion matrix and per-class values included.

use serde_json::{Map, Value};

use super::ranking::{curves_json, mean_defined};
use super::{json_f64, json_f64s, mean, ratio};
use crate::task::curves::Ranking;

/// Accumulates the predictions of a single-label classifier over an epoch.
///
/// The class probabilities are kept (ROC-AUC and top-k need them), so memory grows with `rows * num_classes`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClassificationAccumulator {
    num_classes: usize,
    /// Two classes: class 1 is predicted when its probability is at least this (a tuned threshold), not by argmax.
    threshold: Option<f64>,
    probs: Vec<f32>,
    labels: Vec<usize>,
}

impl ClassificationAccumulator {
    /// # Panics
    /// If `num_classes` is 0.
    pub fn new(num_classes: usize) -> Self {
        assert!(num_classes > 0, "a classifier needs at least one class");
        ClassificationAccumulator {
            num_classes,
            threshold: None,
            probs: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// With two classes, class 1 is predicted at probability ≥ `threshold` (a tuned threshold) instead of by argmax.
    pub fn with_threshold(mut self, threshold: Option<f64>) -> Self {
        self.threshold = threshold;
        self
    }

    /// Adds one batch. `probs` is row-major `[batch, num_classes]` class probabilities (rows sum to 1); a binary
    /// model with a single sigmoid output `p` passes two columns `[1 - p, p]`. `labels` holds the true class index
    /// of each row. Sample weights are deliberately not taken: the metrics are unweighted, as scikit-learn's are by
    /// default.
    ///
    /// # Panics
    /// If `probs.len() != labels.len() * num_classes` or a label is not below `num_classes` (a caller bug: the
    /// metrics would silently be wrong otherwise).
    pub fn update(&mut self, probs: &[f32], labels: &[usize]) {
        assert_eq!(
            probs.len(),
            labels.len() * self.num_classes,
            "probabilities must be [batch, num_classes] = [{}, {}]",
            labels.len(),
            self.num_classes
        );
        if let Some(&bad) = labels.iter().find(|&&l| l >= self.num_classes) {
            panic!("label {bad} is out of range for {} classes", self.num_classes);
        }
        self.probs.extend_from_slice(probs);
        self.labels.extend_from_slice(labels);
    }

    /// Number of rows accumulated so far.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Computes every metric over all rows seen. The predicted class of a row is its argmax, the lowest index
    /// winning ties (numpy's rule). `top_k` is the `k` of [`ClassificationMetrics::top_k_accuracy`].
    pub fn compute(&self, top_k: usize) -> ClassificationMetrics {
        let c = self.num_classes;
        let rows = || self.probs.chunks_exact(c).zip(self.labels.iter().copied());

        let mut confusion_matrix = vec![vec![0usize; c]; c];
        for (row, label) in rows() {
            let predicted = match self.threshold {
                Some(t) if c == 2 => usize::from(row[1] as f64 >= t),
                _ => argmax(row),
            };
            confusion_matrix[label][predicted] += 1;
        }
        let support: Vec<usize> = confusion_matrix.iter().map(|r| r.iter().sum()).collect();
        let predicted: Vec<usize> = (0..c).map(|j| confusion_matrix.iter().map(|r| r[j]).sum()).collect();
        let true_pos: Vec<usize> = (0..c).map(|j| confusion_matrix[j][j]).collect();

        let mut precision_per_class = Vec::with_capacity(c);
        let mut recall_per_class = Vec::with_capacity(c);
        let mut f1_per_class = Vec::with_capacity(c);
        for j in 0..c {
            let (tp, sup, pred) = (true_pos[j] as f64, support[j] as f64, predicted[j] as f64);
            precision_per_class.push(ratio(tp, pred));
            recall_per_class.push(ratio(tp, sup));
            // 2tp / (2tp + fp + fn), not 2PR / (P + R): scikit-learn >= 1.3 does this, and it differs when P or R
            // hit the zero-division rule.
            f1_per_class.push(ratio(2.0 * tp, sup + pred));
        }

        let n = self.len() as f64;
        let tp_sum = true_pos.iter().sum::<usize>() as f64;
        let support_sum = support.iter().sum::<usize>() as f64;
        let predicted_sum = predicted.iter().sum::<usize>() as f64;
        let weighted = |values: &[f64]| ratio(values.iter().zip(&support).map(|(v, &s)| v * s as f64).sum(), n);

        let supported_recalls: Vec<f64> = recall_per_class
            .iter()
            .zip(&support)
            .filter(|&(_, &s)| s > 0)
            .map(|(&r, _)| r)
            .collect();

        let top_k_hits = rows().filter(|&(row, label)| in_top_k(row, label, top_k)).count();

        ClassificationMetrics {
            accuracy: ratio(tp_sum, n),
            top_k_accuracy: ratio(top_k_hits as f64, n),
            precision_macro: mean(&precision_per_class),
            recall_macro: mean(&recall_per_class),
            f1_macro: mean(&f1_per_class),
            precision_micro: ratio(tp_sum, predicted_sum),
            recall_micro: ratio(tp_sum, support_sum),
            f1_micro: ratio(2.0 * tp_sum, predicted_sum + support_sum),
            precision_weighted: weighted(&precision_per_class),
            recall_weighted: weighted(&recall_per_class),
            f1_weighted: weighted(&f1_per_class),
            balanced_accuracy: mean(&supported_recalls),
            roc_auc: self.roc_auc(),
            average_precision: self.average_precision(),
            ece: crate::task::calibration::expected_calibration_error(&self.probs, &self.labels, c).0,
            nll: crate::task::calibration::nll(&self.probs, &self.labels, c),
            reliability: crate::task::calibration::expected_calibration_error(&self.probs, &self.labels, c).1,
            precision_per_class,
            recall_per_class,
            f1_per_class,
            support,
            confusion_matrix,
        }
    }

    /// The one-vs-rest ranking of each class that gets one: class 1 alone for two classes, every class otherwise.
    fn rankings(&self) -> Vec<(usize, Ranking)> {
        let c = self.num_classes;
        let classes: Vec<usize> = match c {
            1 => vec![],
            2 => vec![1],
            _ => (0..c).collect(),
        };
        classes
            .into_iter()
            .map(|j| {
                let column = self
                    .probs
                    .chunks_exact(c)
                    .zip(&self.labels)
                    .map(move |(row, &label)| (row[j] as f64, label == j));
                (j, Ranking::new(column))
            })
            .collect()
    }

    fn roc_auc(&self) -> Option<f64> {
        mean_defined(self.rankings().iter().map(|(_, r)| r.roc_auc()))
    }

    fn average_precision(&self) -> Option<f64> {
        mean_defined(self.rankings().iter().map(|(_, r)| r.average_precision()))
    }

    /// ROC and precision–recall curves (at most `max_points` each) of every class that has both outcomes, for the
    /// report: `{"roc": [{"class", "auc", "points": [[fpr, tpr], ...]}], "pr": [{"class", "average_precision",
    /// "points": [[recall, precision], ...]}]}`.
    pub fn curves(&self, max_points: usize) -> Value {
        curves_json(self.rankings(), max_points)
    }
}

/// Classification metrics over one epoch, each equal to the scikit-learn function named in its doc (with
/// `labels=range(num_classes)` and `zero_division=0` where those apply).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationMetrics {
    /// Fraction of rows whose argmax is the label: `accuracy_score`.
    pub accuracy: f64,
    /// Fraction of rows whose label is among the `k` highest probabilities: `top_k_accuracy_score`, ties included.
    /// scikit-learn ranks equal scores by descending class index, so a row `[0.3, 0.3, 0.1, 0.3]` with label 3 is
    /// a top-1 hit even though its argmax is class 0; for two classes it is the binary rule, class 1 when `p > 0.5`
    /// (the argmax) for `k = 1` and every row for `k >= 2`. `k = 0` scores 0.
    pub top_k_accuracy: f64,
    /// Unweighted mean of the per-class values over all `num_classes` classes: `average="macro"`.
    pub precision_macro: f64,
    pub recall_macro: f64,
    pub f1_macro: f64,
    /// From the summed true positives, predictions and supports: `average="micro"`. For single-label data all three
    /// equal `accuracy`.
    pub precision_micro: f64,
    pub recall_micro: f64,
    pub f1_micro: f64,
    /// Mean of the per-class values weighted by support: `average="weighted"`.
    pub precision_weighted: f64,
    pub recall_weighted: f64,
    pub f1_weighted: f64,
    /// `tp / predicted` per class (0 for a class never predicted): `precision_score(average=None)`.
    pub precision_per_class: Vec<f64>,
    /// `tp / support` per class (0 for a class absent from the labels): `recall_score(average=None)`.
    pub recall_per_class: Vec<f64>,
    /// `2tp / (2tp + fp + fn)` per class: `f1_score(average=None)`.
    pub f1_per_class: Vec<f64>,
    /// Number of rows with each true class.
    pub support: Vec<usize>,
    /// Mean recall over the classes that occur in the labels: `balanced_accuracy_score`.
    pub balanced_accuracy: f64,
    /// Area under the ROC curve, ties in score counted half (the Mann–Whitney statistic, equal to scikit-learn's
    /// trapezoid over distinct thresholds). Two classes: `roc_auc_score(labels, probs[:, 1])`. More classes:
    /// `roc_auc_score(multi_class="ovr", average="macro")`, the mean of the one-vs-rest AUCs; where scikit-learn
    /// refuses because a class is missing from the labels (or is every label), that class is left out of the mean.
    /// `None` when no class has an AUC (fewer than two distinct labels, or one class).
    pub roc_auc: Option<f64>,
    /// Average precision (area under the precision–recall curve as scikit-learn's `average_precision_score` sums
    /// it). Two classes: of class 1. More classes: the mean of the one-vs-rest values over the classes present in
    /// the labels (scikit-learn counts an absent class as 0). `None` when no class is present.
    pub average_precision: Option<f64>,
    /// Row counts indexed `[true class][predicted class]`: `confusion_matrix`.
    pub confusion_matrix: Vec<Vec<usize>>,
    /// Expected calibration error over 15 confidence bins (see [`crate::task::calibration`]).
    pub ece: f64,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// The reliability diagram's bins.
    pub reliability: Vec<crate::task::calibration::ReliabilityBin>,
}

impl ClassificationMetrics {
    /// JSON object with the keys `accuracy`, `top_k_accuracy`, `precision_macro`, `recall_macro`, `f1_macro`,
    /// `f1_micro`, `f1_weighted`, `precision_per_class`, `recall_per_class`, `f1_per_class` (arrays in class-index
    /// order), `roc_auc` and `average_precision` (null when undefined), `confusion_matrix` (array of rows), `balanced_accuracy`,
    /// `precision_weighted`, `recall_weighted`, `ece`, `nll` and `reliability` (the 15 bins). Non-finite numbers become null, since JSON has no NaN.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("accuracy".into(), json_f64(self.accuracy));
        m.insert("top_k_accuracy".into(), json_f64(self.top_k_accuracy));
        m.insert("precision_macro".into(), json_f64(self.precision_macro));
        m.insert("recall_macro".into(), json_f64(self.recall_macro));
        m.insert("f1_macro".into(), json_f64(self.f1_macro));
        m.insert("f1_micro".into(), json_f64(self.f1_micro));
        m.insert("f1_weighted".into(), json_f64(self.f1_weighted));
        m.insert("precision_per_class".into(), json_f64s(&self.precision_per_class));
        m.insert("recall_per_class".into(), json_f64s(&self.recall_per_class));
        m.insert("f1_per_class".into(), json_f64s(&self.f1_per_class));
        m.insert("roc_auc".into(), self.roc_auc.map_or(Value::Null, json_f64));
        m.insert(
            "average_precision".into(),
            self.average_precision.map_or(Value::Null, json_f64),
        );
        m.insert(
            "confusion_matrix".into(),
            Value::Array(
                self.confusion_matrix
                    .iter()
                    .map(|r| Value::Array(r.iter().map(|&x| Value::from(x)).collect()))
                    .collect(),
            ),
        );
        m.insert("balanced_accuracy".into(), json_f64(self.balanced_accuracy));
        m.insert("precision_weighted".into(), json_f64(self.precision_weighted));
        m.insert("recall_weighted".into(), json_f64(self.recall_weighted));
        m.insert("ece".into(), json_f64(self.ece));
        m.insert("nll".into(), json_f64(self.nll));
        m.insert(
            "reliability".into(),
            serde_json::to_value(&self.reliability).unwrap_or(Value::Null),
        );
        m
    }
}

/// Index of the largest value, the first one on ties (numpy's argmax). A NaN never wins unless it is first.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate().skip(1) {
        if v > row[best] {
            best = j;
        }
    }
    best
}

/// scikit-learn's `top_k_accuracy_score` rule for one row; see [`ClassificationMetrics::top_k_accuracy`].
fn in_top_k(row: &[f32], label: usize, k: usize) -> bool {
    if row.len() == 2 {
        return match k {
            0 => false,
            1 => (row[1] > 0.5) == (label == 1),
            _ => true,
        };
    }
    // Stable ascending sort then reversal: a class outranks the label if it scores higher, or scores the same and
    // has a higher index.
    let score = row[label];
    let rank = row
        .iter()
        .enumerate()
        .filter(|&(j, &v)| v > score || (v == score && j > label))
        .count();
    rank < k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::metrics::tests::{LABELS_3, PROBS_3, all_close, classify, close, f32s};

    /// Case 2: single sigmoid output `p`, ties across rows and at 0.5.
    const P_BIN: [f64; 12] = [0.1, 0.4, 0.4, 0.35, 0.8, 0.8, 0.5, 0.5, 0.65, 0.2, 0.4, 0.9];
    const LABELS_BIN: [usize; 12] = [0, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1];

    /// Case 3: four classes, ties within columns and within rows.
    const PROBS_4: [[f64; 4]; 12] = [
        [0.4, 0.3, 0.2, 0.1],
        [0.1, 0.6, 0.2, 0.1],
        [0.25, 0.25, 0.4, 0.1],
        [0.1, 0.2, 0.3, 0.4],
        [0.5, 0.1, 0.1, 0.3],
        [0.2, 0.2, 0.2, 0.4],
        [0.3, 0.4, 0.2, 0.1],
        [0.05, 0.15, 0.7, 0.1],
        [0.3, 0.3, 0.1, 0.3],
        [0.1, 0.1, 0.2, 0.6],
        [0.6, 0.1, 0.2, 0.1],
        [0.2, 0.35, 0.25, 0.2],
    ];
    const LABELS_4: [usize; 12] = [0, 1, 2, 3, 0, 3, 1, 2, 3, 2, 1, 0];
    /// Case 3b: same scores, class 3 never a label.
    const LABELS_4_NO3: [usize; 12] = [0, 1, 2, 0, 0, 1, 1, 2, 2, 2, 1, 0];

    fn binary_probs() -> Vec<f32> {
        P_BIN.iter().flat_map(|&p| [1.0 - p as f32, p as f32]).collect()
    }

    #[test]
    fn three_classes_with_a_class_never_predicted_match_sklearn() {
        let m = classify(&PROBS_3, &LABELS_3, 2);
        close(m.accuracy, 0.5, "accuracy_score");
        close(m.top_k_accuracy, 0.9, "top_k_accuracy_score(k=2, labels=[0, 1, 2])");
        // precision/recall/f1_score(labels=[0, 1, 2], zero_division=0, average=...)
        close(m.precision_macro, 0.3333333333333333, "precision macro");
        close(m.recall_macro, 0.47222222222222215, "recall macro");
        close(m.f1_macro, 0.38888888888888884, "f1 macro");
        close(m.precision_micro, 0.5, "precision micro");
        close(m.recall_micro, 0.5, "recall micro");
        close(m.f1_micro, 0.5, "f1 micro");
        close(m.precision_weighted, 0.36, "precision weighted");
        close(m.recall_weighted, 0.5, "recall weighted");
        close(m.f1_weighted, 0.41666666666666663, "f1 weighted");
        all_close(&m.precision_per_class, &[0.4, 0.6, 0.0], "precision per class");
        all_close(
            &m.recall_per_class,
            &[0.6666666666666666, 0.75, 0.0],
            "recall per class",
        );
        all_close(&m.f1_per_class, &[0.5, 0.6666666666666666, 0.0], "f1 per class");
        assert_eq!(m.support, vec![3, 4, 3]);
        close(m.balanced_accuracy, 0.47222222222222215, "balanced_accuracy_score");
        close(
            m.roc_auc.expect("defined"),
            0.7668650793650794,
            "roc_auc_score(multi_class='ovr', average='macro')",
        );
        close(
            m.average_precision.expect("defined"),
            0.6789682539682539,
            "mean of average_precision_score(labels == c, probs[:, c])",
        );
        // confusion_matrix(labels, pred, labels=[0, 1, 2])
        assert_eq!(m.confusion_matrix, vec![vec![2, 1, 0], vec![1, 3, 0], vec![2, 1, 0]]);
    }

    #[test]
    fn binary_with_tied_scores_matches_sklearn() {
        let mut acc = ClassificationAccumulator::new(2);
        acc.update(&binary_probs(), &LABELS_BIN);
        let m = acc.compute(1);
        close(m.accuracy, 0.5833333333333334, "accuracy_score(y, p > 0.5)");
        close(m.top_k_accuracy, 0.5833333333333334, "top_k_accuracy_score(y, p, k=1)");
        // precision/recall/f1_score(labels=[0, 1], zero_division=0, average=...)
        close(m.precision_macro, 0.625, "precision macro");
        close(m.recall_macro, 0.6142857142857143, "recall macro");
        close(m.f1_macro, 0.5804195804195804, "f1 macro");
        close(m.precision_micro, 0.5833333333333334, "precision micro");
        close(m.recall_micro, 0.5833333333333334, "recall micro");
        close(m.f1_micro, 0.5833333333333334, "f1 micro");
        close(m.precision_weighted, 0.6458333333333334, "precision weighted");
        close(m.recall_weighted, 0.5833333333333334, "recall weighted");
        close(m.f1_weighted, 0.5745920745920746, "f1 weighted");
        all_close(&m.precision_per_class, &[0.5, 0.75], "precision per class");
        all_close(&m.recall_per_class, &[0.8, 0.42857142857142855], "recall per class");
        all_close(
            &m.f1_per_class,
            &[0.6153846153846154, 0.5454545454545454],
            "f1 per class",
        );
        assert_eq!(m.support, vec![5, 7]);
        close(m.balanced_accuracy, 0.6142857142857143, "balanced_accuracy_score");
        close(m.roc_auc.expect("defined"), 0.6857142857142857, "roc_auc_score(y, p)");
        close(
            m.average_precision.expect("defined"),
            0.730952380952381,
            "average_precision_score(y, p)",
        );
        assert_eq!(m.confusion_matrix, vec![vec![4, 1], vec![4, 3]]);
        close(acc.compute(2).top_k_accuracy, 1.0, "binary top-2 is every row");
    }

    #[test]
    fn four_class_one_vs_rest_matches_sklearn() {
        let m = classify(&PROBS_4, &LABELS_4, 2);
        close(m.accuracy, 0.6666666666666666, "accuracy_score");
        close(
            m.top_k_accuracy,
            0.8333333333333334,
            "top_k_accuracy_score(k=2, labels=[0, 1, 2, 3])",
        );
        close(m.precision_macro, 0.7083333333333333, "precision macro");
        close(m.recall_macro, 0.6666666666666666, "recall macro");
        close(m.f1_macro, 0.6761904761904761, "f1 macro");
        close(m.f1_micro, 0.6666666666666666, "f1 micro");
        close(m.precision_weighted, 0.7083333333333334, "precision weighted");
        close(m.recall_weighted, 0.6666666666666666, "recall weighted");
        close(m.f1_weighted, 0.6761904761904761, "f1 weighted");
        all_close(
            &m.precision_per_class,
            &[0.5, 0.6666666666666666, 1.0, 0.6666666666666666],
            "precision per class",
        );
        all_close(&m.recall_per_class, &[0.6666666666666666; 4], "recall per class");
        all_close(
            &m.f1_per_class,
            &[0.5714285714285714, 0.6666666666666666, 0.8, 0.6666666666666666],
            "f1 per class",
        );
        close(m.balanced_accuracy, 0.6666666666666666, "balanced_accuracy_score");
        close(
            m.roc_auc.expect("defined"),
            0.7916666666666667,
            "roc_auc_score(multi_class='ovr', average='macro')",
        );
        close(
            m.average_precision.expect("defined"),
            0.66875,
            "mean of average_precision_score(labels == c, probs[:, c])",
        );
        assert_eq!(
            m.confusion_matrix,
            vec![vec![2, 1, 0, 0], vec![1, 2, 0, 0], vec![0, 0, 2, 1], vec![1, 0, 0, 2]]
        );
    }

    #[test]
    fn top_k_breaks_ties_towards_the_higher_class_like_sklearn() {
        // Row [0.3, 0.3, 0.1, 0.3] with label 3 is a top-1 hit for sklearn, an accuracy miss by argmax.
        let m = classify(&PROBS_4, &LABELS_4, 1);
        close(m.top_k_accuracy, 0.75, "top_k_accuracy_score(k=1, labels=[0, 1, 2, 3])");
        close(m.accuracy, 0.6666666666666666, "accuracy_score");
        close(classify(&PROBS_4, &LABELS_4, 4).top_k_accuracy, 1.0, "k = num_classes");
        close(classify(&PROBS_4, &LABELS_4, 0).top_k_accuracy, 0.0, "k = 0");
    }

    #[test]
    fn a_class_missing_from_the_labels_is_left_out_of_the_auc() {
        let m = classify(&PROBS_4, &LABELS_4_NO3, 3);
        close(m.accuracy, 0.5, "accuracy_score");
        close(
            m.top_k_accuracy,
            0.6666666666666666,
            "top_k_accuracy_score(k=3, labels=[0, 1, 2, 3])",
        );
        close(m.precision_macro, 0.5416666666666666, "precision macro");
        close(m.recall_macro, 0.375, "recall macro");
        close(m.f1_macro, 0.43452380952380953, "f1 macro");
        close(m.precision_weighted, 0.7222222222222222, "precision weighted");
        close(m.f1_weighted, 0.5793650793650794, "f1 weighted");
        all_close(
            &m.f1_per_class,
            &[0.5, 0.5714285714285714, 0.6666666666666666, 0.0],
            "f1 per class",
        );
        assert_eq!(m.support, vec![4, 4, 4, 0]);
        // balanced_accuracy_score ignores the class with no support; recall_macro does not.
        close(m.balanced_accuracy, 0.5, "balanced_accuracy_score");
        close(
            m.roc_auc.expect("defined"),
            0.625,
            "mean of roc_auc_score(labels == c, probs[:, c]) for c in 0..3",
        );
        close(
            m.average_precision.expect("defined"),
            0.6039141414141413,
            "mean of average_precision_score(labels == c, probs[:, c]) over the present classes",
        );
        assert_eq!(m.confusion_matrix[3], vec![0, 0, 0, 0]);
    }

    #[test]
    fn batches_accumulate_to_the_whole_epoch() {
        let whole = classify(&PROBS_3, &LABELS_3, 2);
        let mut acc = ClassificationAccumulator::new(3);
        let probs = f32s(&PROBS_3);
        for (lo, hi) in [(0, 3), (3, 4), (4, 10)] {
            acc.update(&probs[lo * 3..hi * 3], &LABELS_3[lo..hi]);
        }
        assert_eq!(acc.len(), 10);
        assert_eq!(acc.compute(2), whole);
    }

    #[test]
    fn auc_is_undefined_with_a_single_label_value() {
        let mut acc = ClassificationAccumulator::new(2);
        acc.update(&[0.3, 0.7, 0.6, 0.4], &[1, 1]);
        let m = acc.compute(1);
        assert_eq!(m.roc_auc, None);
        assert_eq!(m.to_json()["roc_auc"], Value::Null);
        assert_eq!(ClassificationAccumulator::new(1).compute(1).roc_auc, None);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn a_label_past_the_last_class_is_rejected() {
        ClassificationAccumulator::new(2).update(&[0.5, 0.5], &[2]);
    }

    #[test]
    #[should_panic(expected = "[batch, num_classes]")]
    fn a_ragged_batch_is_rejected() {
        ClassificationAccumulator::new(3).update(&[0.5, 0.5], &[0]);
    }
}
