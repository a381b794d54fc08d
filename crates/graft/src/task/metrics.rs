//! Epoch-level evaluation metrics, defined as scikit-learn defines them.
//!
//! Every metric here is computed once over the whole epoch from accumulated predictions: averaging per-batch
//! precision, F1, ROC-AUC or R² gives a different (and batch-size dependent) number. Arithmetic is in f64 on the f32
//! model outputs. Where a ratio has a zero denominator the result is 0.0 (scikit-learn's `zero_division=0`), so an
//! empty accumulator yields zeros and `None`, never a panic or a NaN. The reference numbers in the tests come from
//! `tools/reference/metrics_reference.py`.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::task::curves::Ranking;
use graft_data::suggest::hint;

/// The single-number metrics of a classifier (the numeric keys of [`ClassificationMetrics::to_json`]).
pub const CLASSIFICATION_METRICS: [&str; 14] = [
    "accuracy",
    "top_k_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_micro",
    "f1_weighted",
    "roc_auc",
    "average_precision",
    "balanced_accuracy",
    "precision_weighted",
    "recall_weighted",
    "ece",
    "nll",
];

/// The single-number metrics of a multi-label model ([`MultiLabelMetrics::to_json`]).
pub const MULTILABEL_METRICS: [&str; 7] = [
    "accuracy",
    "subset_accuracy",
    "hamming_loss",
    "f1_macro",
    "f1_micro",
    "roc_auc",
    "average_precision",
];

/// The metrics of a regression ([`RegressionMetrics::to_json`]).
pub const REGRESSION_METRICS: [&str; 4] = ["mse", "mae", "rmse", "r2"];

/// Every name `metrics` may list: the metrics of any task, and `loss` (always logged).
pub fn metric_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = vec![];
    for name in CLASSIFICATION_METRICS
        .iter()
        .chain(&MULTILABEL_METRICS)
        .chain(&REGRESSION_METRICS)
        .chain(&["loss"])
    {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

/// An error for the first name in `names` that no task logs, with the closest known name.
pub fn check_metric_names(names: &[String]) -> Result<()> {
    let known = metric_names();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        None => Ok(()),
        Some(name) => Err(Error::new(format!(
            "unknown metric `{name}`{}; valid metrics: {}",
            hint(name, known.iter().copied()),
            known.join(", ")
        ))),
    }
}

/// Accumulates the predictions of a single-label classifier over an epoch.
///
/// The class probabilities are kept (ROC-AUC and top-k need them), so memory grows with `rows * num_classes`.
#[derive(Debug, Clone)]
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

/// The mean of the defined values, `None` when none is.
fn mean_defined(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let defined: Vec<f64> = values.flatten().collect();
    (!defined.is_empty()).then(|| mean(&defined))
}

fn curves_json(rankings: Vec<(usize, Ranking)>, max_points: usize) -> Value {
    let points = |pts: Vec<(f64, f64)>| -> Value {
        Value::Array(
            crate::task::curves::thin(&pts, max_points)
                .into_iter()
                .map(|(x, y)| Value::Array(vec![json_f64(x), json_f64(y)]))
                .collect(),
        )
    };
    let (mut roc, mut pr) = (vec![], vec![]);
    for (class, r) in rankings {
        if let Some(auc) = r.roc_auc() {
            roc.push(serde_json::json!({"class": class, "auc": json_f64(auc), "points": points(r.roc_points())}));
            let ap = r.average_precision().map_or(Value::Null, json_f64);
            pr.push(serde_json::json!({"class": class, "average_precision": ap, "points": points(r.pr_points())}));
        }
    }
    serde_json::json!({"roc": roc, "pr": pr})
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

/// Accumulates a regression model's outputs (any number of output columns, row-major) over an epoch.
///
/// Only running sums are kept (Welford's update for the target variance), so memory does not grow with the epoch.
#[derive(Debug, Clone)]
pub struct RegressionAccumulator {
    num_outputs: usize,
    rows: usize,
    /// Per output: running mean of the target, sum of squared deviations from it, sum of squared errors, sum of
    /// absolute errors.
    target_mean: Vec<f64>,
    target_m2: Vec<f64>,
    squared_error: Vec<f64>,
    absolute_error: Vec<f64>,
}

impl RegressionAccumulator {
    /// # Panics
    /// If `num_outputs` is 0.
    pub fn new(num_outputs: usize) -> Self {
        assert!(num_outputs > 0, "a regression model needs at least one output");
        RegressionAccumulator {
            num_outputs,
            rows: 0,
            target_mean: vec![0.0; num_outputs],
            target_m2: vec![0.0; num_outputs],
            squared_error: vec![0.0; num_outputs],
            absolute_error: vec![0.0; num_outputs],
        }
    }

    /// Adds one batch: `predictions` and `targets` are both row-major `[batch, num_outputs]`.
    ///
    /// # Panics
    /// If the two lengths differ or are not a multiple of `num_outputs`.
    pub fn update(&mut self, predictions: &[f32], targets: &[f32]) {
        assert_eq!(
            predictions.len(),
            targets.len(),
            "predictions and targets differ in length"
        );
        assert_eq!(
            targets.len() % self.num_outputs,
            0,
            "{} values do not make rows of {} outputs",
            targets.len(),
            self.num_outputs
        );
        for (pred_row, target_row) in predictions
            .chunks_exact(self.num_outputs)
            .zip(targets.chunks_exact(self.num_outputs))
        {
            self.rows += 1;
            let n = self.rows as f64;
            for (j, (&p, &t)) in pred_row.iter().zip(target_row).enumerate() {
                let (p, t) = (f64::from(p), f64::from(t));
                let delta = t - self.target_mean[j];
                self.target_mean[j] += delta / n;
                self.target_m2[j] += delta * (t - self.target_mean[j]);
                self.squared_error[j] += (t - p) * (t - p);
                self.absolute_error[j] += (t - p).abs();
            }
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
    pub fn compute(&self) -> RegressionMetrics {
        let cells = (self.rows * self.num_outputs) as f64;
        let r2_per_output: Vec<f64> = self
            .squared_error
            .iter()
            .zip(&self.target_m2)
            .map(|(&ss_res, &ss_tot)| {
                // scikit-learn's force_finite: a constant target scores 1 if predicted exactly, else 0.
                if ss_tot != 0.0 {
                    1.0 - ss_res / ss_tot
                } else if ss_res == 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mse = ratio(self.squared_error.iter().sum(), cells);
        RegressionMetrics {
            mse,
            mae: ratio(self.absolute_error.iter().sum(), cells),
            rmse: mse.sqrt(),
            // scikit-learn returns NaN below two samples; 0.0 keeps the JSON numeric.
            r2: if self.rows < 2 { 0.0 } else { mean(&r2_per_output) },
        }
    }
}

/// Regression metrics over one epoch, averaged uniformly over the output columns.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionMetrics {
    /// Mean squared error: `mean_squared_error(multioutput="uniform_average")`.
    pub mse: f64,
    /// Mean absolute error: `mean_absolute_error(multioutput="uniform_average")`.
    pub mae: f64,
    /// Root mean squared error, `sqrt(mse)`, in the target's own unit.
    pub rmse: f64,
    /// Coefficient of determination `1 - SS_res / SS_tot` per output, then the mean:
    /// `r2_score(multioutput="uniform_average")` (with its `force_finite=True`). 0.0 with fewer than two rows.
    pub r2: f64,
}

impl RegressionMetrics {
    /// JSON object with the keys `mse`, `mae`, `rmse` and `r2`; non-finite numbers become null.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("mse".into(), json_f64(self.mse));
        m.insert("mae".into(), json_f64(self.mae));
        m.insert("rmse".into(), json_f64(self.rmse));
        m.insert("r2".into(), json_f64(self.r2));
        m
    }
}

/// Accumulates a multi-label model's outputs (independent sigmoid probabilities) over an epoch.
///
/// A label is predicted when its probability is `> 0.5` (so 0.5 itself is negative, matching the argmax rule of
/// [`ClassificationAccumulator`] for `[1 - p, p]`); a target cell is positive when `> 0.5`, which reads 0/1 targets
/// and label-smoothed ones alike. Only counts are kept.
#[derive(Debug, Clone)]
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

    /// Per-label ROC and precision–recall curves, as [`ClassificationAccumulator::curves`] gives them.
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

/// `num / den`, or 0.0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

fn mean(values: &[f64]) -> f64 {
    ratio(values.iter().sum(), values.len() as f64)
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

/// ROC-AUC of float64 scores (compared in float32, as the metrics are).
pub(crate) fn roc_auc_f64(scored: &[(f64, bool)]) -> Option<f64> {
    binary_roc_auc(scored.iter().map(|&(s, p)| (s as f32, p)).collect())
}

/// ROC-AUC of `scores` for the positive rows: the probability that a random positive outscores a random negative,
/// ties counted 1/2. `None` unless both kinds of row occur.
fn binary_roc_auc(scored: Vec<(f32, bool)>) -> Option<f64> {
    Ranking::new(scored.into_iter().map(|(s, p)| (s as f64, p))).roc_auc()
}

fn json_f64(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn json_f64s(xs: &[f64]) -> Value {
    Value::Array(xs.iter().map(|&x| json_f64(x)).collect())
}

#[cfg(test)]
mod tests {
    //! Reference numbers come from `python3 tools/reference/metrics_reference.py` (scikit-learn 1.9.1, numpy 2.4.6);
    //! each literal names the call that printed it. The inputs are the script's, rounded to f32 the same way.
    use super::*;

    const TOL: f64 = 1e-9;

    fn close(actual: f64, expected: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= TOL,
            "{what}: got {actual}, sklearn says {expected}"
        );
    }

    fn all_close(actual: &[f64], expected: &[f64], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            close(a, e, &format!("{what}[{i}]"));
        }
    }

    /// numpy's `np.asarray(x, float64).astype(float32)`: round the f64 literal to f32.
    fn f32s<const N: usize>(rows: &[[f64; N]]) -> Vec<f32> {
        rows.iter().flatten().map(|&x| x as f32).collect()
    }

    /// Case 1: three classes, class 2 occurs in the labels but is never predicted.
    const PROBS_3: [[f64; 3]; 10] = [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.6, 0.3],
        [0.45, 0.15, 0.4],
        [0.3, 0.45, 0.25],
        [0.8, 0.05, 0.15],
        [0.35, 0.4, 0.25],
        [0.5, 0.3, 0.2],
        [0.15, 0.55, 0.3],
    ];
    const LABELS_3: [usize; 10] = [0, 1, 1, 2, 2, 0, 0, 1, 2, 1];

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

    fn classify<const N: usize>(probs: &[[f64; N]], labels: &[usize], top_k: usize) -> ClassificationMetrics {
        let mut acc = ClassificationAccumulator::new(N);
        acc.update(&f32s(probs), labels);
        acc.compute(top_k)
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
    fn auc_counts_ties_as_half() {
        // One positive and one negative at the same score: a coin flip.
        assert_eq!(binary_roc_auc(vec![(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(
            binary_roc_auc(vec![(0.0, true), (-0.0, false), (1.0, true)]),
            Some(0.75)
        );
        assert_eq!(binary_roc_auc(vec![(0.2, false), (0.9, true)]), Some(1.0));
    }

    #[test]
    fn empty_accumulators_give_zeros_and_no_nan() {
        let m = ClassificationAccumulator::new(3).compute(2);
        assert!(ClassificationAccumulator::new(3).is_empty());
        for x in [
            m.accuracy,
            m.top_k_accuracy,
            m.f1_macro,
            m.f1_micro,
            m.f1_weighted,
            m.balanced_accuracy,
        ] {
            assert_eq!(x, 0.0);
        }
        assert_eq!(m.roc_auc, None);
        assert_eq!(m.confusion_matrix, vec![vec![0; 3]; 3]);
        let r = RegressionAccumulator::new(2).compute();
        assert_eq!(
            r,
            RegressionMetrics {
                mse: 0.0,
                mae: 0.0,
                rmse: 0.0,
                r2: 0.0
            }
        );
        let l = MultiLabelAccumulator::new(2).compute();
        assert_eq!(
            (l.accuracy, l.subset_accuracy, l.hamming_loss, l.f1_macro, l.f1_micro),
            (0.0, 0.0, 0.0, 0.0, 0.0)
        );
        // Every number is representable: serialising must not fail or produce null except the ranking metrics.
        let text = serde_json::to_string(&Value::Object(m.to_json())).expect("serialises");
        assert_eq!(text.matches("null").count(), 2, "{text}");
    }

    /// The keys of `json` that hold one number (or null, when undefined), sorted.
    fn scalar_keys(json: Map<String, Value>) -> Vec<String> {
        let mut keys: Vec<String> = json
            .into_iter()
            .filter(|(_, v)| v.is_number() || v.is_null())
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn metric_name_lists_are_the_scalar_keys_of_the_json() {
        let mut c = ClassificationAccumulator::new(2);
        c.update(&[0.3, 0.7, 0.6, 0.4], &[1, 0]);
        assert_eq!(scalar_keys(c.compute(1).to_json()), sorted(&CLASSIFICATION_METRICS));
        let mut m = MultiLabelAccumulator::new(2);
        m.update(&[0.3, 0.7], &[0.0, 1.0]);
        assert_eq!(scalar_keys(m.compute().to_json()), sorted(&MULTILABEL_METRICS));
        let mut r = RegressionAccumulator::new(1);
        r.update(&[0.5, 1.0], &[1.0, 2.0]);
        assert_eq!(scalar_keys(r.compute().to_json()), sorted(&REGRESSION_METRICS));
    }

    #[test]
    fn unknown_metric_names_get_a_suggestion() {
        assert!(check_metric_names(&["accuracy".into(), "r2".into(), "loss".into()]).is_ok());
        let e = check_metric_names(&["accuracy".into(), "acuracy".into()]).unwrap_err();
        assert!(
            e.message.starts_with(
                "unknown metric `acuracy`; did you mean `accuracy`?; valid metrics: accuracy, top_k_accuracy,"
            ),
            "{e}"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_keys_and_nulls_non_finite() {
        let m = classify(&PROBS_3, &LABELS_3, 2);
        let json = m.to_json();
        let mut keys: Vec<&str> = json.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = vec![
            "accuracy",
            "top_k_accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "f1_micro",
            "f1_weighted",
            "precision_per_class",
            "recall_per_class",
            "f1_per_class",
            "roc_auc",
            "average_precision",
            "confusion_matrix",
            "balanced_accuracy",
            "precision_weighted",
            "recall_weighted",
            "ece",
            "nll",
            "reliability",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(
            json["confusion_matrix"],
            serde_json::json!([[2, 1, 0], [1, 3, 0], [2, 1, 0]])
        );
        assert_eq!(json["f1_per_class"], serde_json::json!([0.5, m.f1_per_class[1], 0.0]));
        assert_eq!(json["accuracy"], serde_json::json!(0.5));

        let r = RegressionMetrics {
            mse: f64::NAN,
            mae: f64::INFINITY,
            rmse: f64::NAN,
            r2: 0.25,
        }
        .to_json();
        assert_eq!(
            Value::Object(r),
            serde_json::json!({"mse": null, "mae": null, "rmse": null, "r2": 0.25})
        );
        let l = MultiLabelAccumulator::new(2).compute().to_json();
        let mut keys: Vec<&str> = l.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "accuracy",
                "average_precision",
                "f1_macro",
                "f1_micro",
                "f1_per_class",
                "hamming_loss",
                "precision_per_class",
                "recall_per_class",
                "roc_auc",
                "subset_accuracy",
                "support"
            ]
        );
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

    const PRED_REG: [[f64; 2]; 6] = [
        [1.0, -2.0],
        [2.5, 0.5],
        [0.3, 1.2],
        [4.0, 3.0],
        [-1.0, 0.0],
        [2.2, -0.7],
    ];
    const TARGET_REG: [[f64; 2]; 6] = [
        [1.5, -1.0],
        [2.0, 0.0],
        [0.0, 1.0],
        [3.5, 2.5],
        [-0.5, 0.25],
        [2.0, -1.5],
    ];
    const TARGET_REG_CONST: [[f64; 2]; 6] = [[1.5, 2.0], [2.0, 2.0], [0.0, 2.0], [3.5, 2.0], [-0.5, 2.0], [2.0, 2.0]];

    #[test]
    fn regression_with_two_outputs_matches_sklearn() {
        let mut acc = RegressionAccumulator::new(2);
        let (pred, target) = (f32s(&PRED_REG), f32s(&TARGET_REG));
        // Uneven batches: the running sums must not care.
        acc.update(&pred[..2], &target[..2]);
        acc.update(&pred[2..8], &target[2..8]);
        acc.update(&pred[8..], &target[8..]);
        assert_eq!(acc.len(), 6);
        let m = acc.compute();
        close(m.mse, 0.2810416720310851, "mean_squared_error");
        close(m.mae, 0.47916667660077417, "mean_absolute_error");
        close(m.r2, 0.8384001417072946, "r2_score(multioutput='uniform_average')");
    }

    #[test]
    fn a_constant_target_scores_r2_zero_like_sklearn_force_finite() {
        let mut acc = RegressionAccumulator::new(2);
        acc.update(&f32s(&PRED_REG), &f32s(&TARGET_REG_CONST));
        let m = acc.compute();
        close(m.mse, 2.6924999904632574, "mean_squared_error");
        close(m.mae, 1.2083333333333333, "mean_absolute_error");
        close(m.r2, 0.44723735286104066, "r2_score(multioutput='uniform_average')");

        let mut exact = RegressionAccumulator::new(1);
        exact.update(&[3.0, 3.0], &[3.0, 3.0]);
        close(exact.compute().r2, 1.0, "constant target predicted exactly");
        let mut single = RegressionAccumulator::new(1);
        single.update(&[1.0], &[2.0]);
        assert_eq!(
            single.compute(),
            RegressionMetrics {
                mse: 1.0,
                mae: 1.0,
                rmse: 1.0,
                r2: 0.0
            }
        );
    }

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
