//! Reading the run's JSON for the report: the epoch axis and curves of the history, the scalar metric names it
//! logs, class labels, and the test confusion matrix (a malformed one is noted on the page, not fatal).

use serde_json::{Map, Value};

/// The x coordinate of each epoch: its recorded `epoch` when there is one, else its 1-based position.
pub(super) fn epoch_axis(history: &[Map<String, Value>]) -> Vec<f64> {
    history
        .iter()
        .enumerate()
        .map(|(i, row)| finite(row.get("epoch")).unwrap_or((i + 1) as f64))
        .collect()
}

pub(super) fn x_span(epochs: &[f64]) -> (f64, f64) {
    let lo = epochs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = epochs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
}

/// The finite points of one key; nulls, absences and non-numbers are gaps the line simply bridges.
pub(super) fn curve(history: &[Map<String, Value>], epochs: &[f64], key: &str) -> Vec<(f64, f64)> {
    history
        .iter()
        .zip(epochs)
        .filter_map(|(row, &x)| finite(row.get(key)).map(|y| (x, y)))
        .collect()
}

fn finite(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64).filter(|v| v.is_finite())
}

/// Scalar metrics in first-seen order, named without the `val_` prefix. A metric counts when either its
/// train or its validation twin has a number somewhere; per-class arrays never do.
pub(super) fn scalar_metric_names(history: &[Map<String, Value>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (key, value) in history.iter().flat_map(|row| row.iter()) {
        let name = key.strip_prefix("val_").unwrap_or(key);
        if name != "epoch" && name != "loss" && finite(Some(value)).is_some() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

pub(super) fn class_label(classes: &[String], index: usize) -> String {
    classes.get(index).cloned().unwrap_or_else(|| index.to_string())
}

/// What the test metrics say about a confusion matrix; a malformed one is reported on the page
/// rather than failing the whole report.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ConfusionInput {
    Absent,
    Malformed,
    Matrix(Vec<Vec<u64>>),
}

impl ConfusionInput {
    pub(super) fn from_test(test: &Map<String, Value>) -> Self {
        match test.get("confusion_matrix") {
            None | Some(Value::Null) => ConfusionInput::Absent,
            Some(value) => parse_square_counts(value).map_or(ConfusionInput::Malformed, ConfusionInput::Matrix),
        }
    }
}

fn parse_square_counts(value: &Value) -> Option<Vec<Vec<u64>>> {
    let rows = value.as_array()?;
    let counts: Vec<Vec<u64>> = rows.iter().map(parse_count_row).collect::<Option<_>>()?;
    let square = !counts.is_empty() && counts.iter().all(|row| row.len() == counts.len());
    square.then_some(counts)
}

fn parse_count_row(row: &Value) -> Option<Vec<u64>> {
    row.as_array()?.iter().map(parse_count).collect()
}

/// Counts may arrive as floats (`3.0`) from code that accumulates in f64; those are accepted.
fn parse_count(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let v = value.as_f64()?;
        (v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::history;
    use serde_json::json;

    #[test]
    fn metric_names_skip_arrays_and_merge_val_twins() {
        let rows = history(vec![
            json!({"epoch": 1, "loss": 1.0, "val_loss": 1.0, "accuracy": 0.5, "val_accuracy": 0.4,
                   "per_class_f1": [0.1, 0.2], "val_auc": 0.6, "note": "x"}),
            json!({"epoch": 2, "lr": null}),
        ]);
        assert_eq!(scalar_metric_names(&rows), ["accuracy", "auc"]);
    }

    #[test]
    fn epochs_default_to_positions() {
        let rows = history(vec![json!({"loss": 1.0}), json!({"epoch": 7, "loss": 0.5})]);
        assert_eq!(epoch_axis(&rows), [1.0, 7.0]);
    }
}
