//! Epoch-level evaluation metrics, defined as scikit-learn defines them.
//!
//! Every metric here is computed once over the whole epoch from accumulated predictions: averaging per-batch
//! precision, F1, ROC-AUC or R² gives a different (and batch-size dependent) number. Arithmetic is in f64 on the f32
//! model outputs. Where a ratio has a zero denominator the result is 0.0 (scikit-learn's `zero_division=0`), so an
//! empty accumulator yields zeros and `None`, never a panic or a NaN. The reference numbers in the tests come from
//! `tools/reference/metrics_reference.py`.

mod classification;
mod multilabel;
mod names;
mod ranking;
mod regression;

pub use classification::{ClassificationAccumulator, ClassificationMetrics};
pub use multilabel::{MultiLabelAccumulator, MultiLabelMetrics};
pub use names::{CLASSIFICATION_METRICS, MULTILABEL_METRICS, REGRESSION_METRICS, check_metric_names, metric_names};
pub(crate) use ranking::roc_auc_f64;
pub use regression::{RegressionAccumulator, RegressionMetrics};

use serde_json::Value;

/// `num / den`, or 0.0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

fn mean(values: &[f64]) -> f64 {
    ratio(values.iter().sum(), values.len() as f64)
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

    pub(super) const TOL: f64 = 1e-9;

    pub(super) fn close(actual: f64, expected: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= TOL,
            "{what}: got {actual}, sklearn says {expected}"
        );
    }

    pub(super) fn all_close(actual: &[f64], expected: &[f64], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            close(a, e, &format!("{what}[{i}]"));
        }
    }

    /// numpy's `np.asarray(x, float64).astype(float32)`: round the f64 literal to f32.
    pub(super) fn f32s<const N: usize>(rows: &[[f64; N]]) -> Vec<f32> {
        rows.iter().flatten().map(|&x| x as f32).collect()
    }

    /// Case 1: three classes, class 2 occurs in the labels but is never predicted.
    pub(super) const PROBS_3: [[f64; 3]; 10] = [
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
    pub(super) const LABELS_3: [usize; 10] = [0, 1, 1, 2, 2, 0, 0, 1, 2, 1];

    pub(super) fn classify<const N: usize>(
        probs: &[[f64; N]],
        labels: &[usize],
        top_k: usize,
    ) -> ClassificationMetrics {
        let mut acc = ClassificationAccumulator::new(N);
        acc.update(&f32s(probs), labels);
        acc.compute(top_k)
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
}
