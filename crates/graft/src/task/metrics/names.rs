//! The names of the single-number metrics each task logs, and the check of the names an experiment's `metrics`
//! list asks for, so a typo fails before training with the closest valid name.

use crate::error::{Error, Result};
use graft_data::suggest::hint;

/// The single-number metrics of a classifier (the numeric keys of
/// [`ClassificationMetrics::to_json`](super::ClassificationMetrics::to_json)).
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

/// The single-number metrics of a multi-label model
/// ([`MultiLabelMetrics::to_json`](super::MultiLabelMetrics::to_json)).
pub const MULTILABEL_METRICS: [&str; 7] = [
    "accuracy",
    "subset_accuracy",
    "hamming_loss",
    "f1_macro",
    "f1_micro",
    "roc_auc",
    "average_precision",
];

/// The metrics of a regression ([`RegressionMetrics::to_json`](super::RegressionMetrics::to_json)).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::metrics::{ClassificationAccumulator, MultiLabelAccumulator, RegressionAccumulator};
    use serde_json::{Map, Value};

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
}
