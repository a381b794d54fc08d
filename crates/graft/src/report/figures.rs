//! Which charts a training report draws from the run's history and test metrics, and the PNG file each one is
//! written to (metric names come from data, so their file names are made safe and unique).

use std::path::Path;

use serde_json::{Map, Value};

use super::history::{ConfusionInput, class_label, curve, epoch_axis, scalar_metric_names, x_span};
use super::{Chart, charts};
use crate::error::Result;

pub(super) fn write_charts(
    dir: &Path,
    history: &[Map<String, Value>],
    confusion: &ConfusionInput,
    classes: &[String],
) -> Result<Vec<Chart>> {
    let mut charts = Vec::new();
    if !history.is_empty() {
        let epochs = epoch_axis(history);
        charts.push(write_curve_chart(dir, "loss.png", "loss", history, &epochs, "loss")?);
        let mut used = vec!["loss.png".to_string()];
        for name in scalar_metric_names(history) {
            let file = unique_file_name(&mut used, &name);
            charts.push(write_curve_chart(dir, &file, &name, history, &epochs, &name)?);
        }
    }
    if let ConfusionInput::Matrix(counts) = confusion {
        let labels: Vec<String> = (0..counts.len()).map(|i| class_label(classes, i)).collect();
        charts::confusion_chart(&dir.join("confusion_matrix.png"), counts, &labels)?;
        let caption = "Test confusion matrix, normalized by true class".to_string();
        charts.push(Chart {
            file: "confusion_matrix.png".to_string(),
            caption,
        });
    }
    Ok(charts)
}

/// The reliability diagram of the test set, when its metrics carry the bins.
pub(super) fn write_reliability(dir: &Path, test: &Map<String, Value>) -> Result<Option<Chart>> {
    let Some(bins) = test.get("reliability").and_then(Value::as_array) else {
        return Ok(None);
    };
    let bins: Vec<(f64, f64, f64, usize)> = bins
        .iter()
        .filter_map(|b| {
            Some((
                b.get("lower")?.as_f64()?,
                b.get("upper")?.as_f64()?,
                b.get("accuracy")?.as_f64()?,
                b.get("count")?.as_u64()? as usize,
            ))
        })
        .collect();
    if bins.iter().all(|b| b.3 == 0) {
        return Ok(None);
    }
    let ece = test.get("ece").and_then(Value::as_f64).unwrap_or(f64::NAN);
    charts::reliability_chart(
        &dir.join("reliability.png"),
        &format!("reliability (test ECE {ece:.4})"),
        &bins,
    )?;
    Ok(Some(Chart {
        file: "reliability.png".to_string(),
        caption: "Reliability diagram of the test set: accuracy per confidence bin against the diagonal".to_string(),
    }))
}

/// The test set's ROC and precision–recall curves (one line per class, at most ten), when its metrics carry them.
pub(super) fn write_ranking_curves(dir: &Path, test: &Map<String, Value>, classes: &[String]) -> Result<Vec<Chart>> {
    const MAX_LINES: usize = 10;
    let Some(curves) = test.get("curves") else {
        return Ok(vec![]);
    };
    let read = |kind: &str, figure: &str| -> Vec<(String, Vec<(f64, f64)>)> {
        let entries = curves.get(kind).and_then(Value::as_array).cloned().unwrap_or_default();
        entries
            .iter()
            .take(MAX_LINES)
            .filter_map(|e| {
                let class = e.get("class")?.as_u64()? as usize;
                let value = e.get(figure).and_then(Value::as_f64).unwrap_or(f64::NAN);
                let points: Vec<(f64, f64)> = e
                    .get("points")?
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                    .collect();
                Some((format!("{} ({figure} {value:.3})", class_label(classes, class)), points))
            })
            .collect()
    };
    let mut charts = vec![];
    for (kind, figure, file, title, caption, axes) in [
        (
            "roc",
            "auc",
            "roc.png",
            "ROC (test)",
            "Test ROC curves, one-vs-rest per class",
            ("false-positive rate", "true-positive rate (recall)"),
        ),
        (
            "pr",
            "average_precision",
            "precision_recall.png",
            "precision–recall (test)",
            "Test precision–recall curves, one-vs-rest per class",
            ("recall", "precision"),
        ),
    ] {
        let found = read(kind, figure);
        if found.is_empty() {
            continue;
        }
        let lines: Vec<charts::Line> = found
            .iter()
            .map(|(label, points)| charts::Line {
                label,
                points: points.clone(),
            })
            .collect();
        charts::curve_chart(&dir.join(file), title, axes, kind == "roc", &lines)?;
        charts.push(Chart {
            file: file.to_string(),
            caption: caption.to_string(),
        });
    }
    Ok(charts)
}

fn write_curve_chart(
    dir: &Path,
    file: &str,
    name: &str,
    history: &[Map<String, Value>],
    epochs: &[f64],
    key: &str,
) -> Result<Chart> {
    let lines = [
        charts::Line {
            label: "train",
            points: curve(history, epochs, key),
        },
        charts::Line {
            label: "validation",
            points: curve(history, epochs, &format!("val_{key}")),
        },
    ];
    charts::line_chart(&dir.join(file), name, name, x_span(epochs), &lines)?;
    Ok(Chart {
        file: file.to_string(),
        caption: format!("{name} per epoch (train and validation)"),
    })
}

/// Metric names come from the run's data, so they are reduced to characters that are safe in a file
/// name (no `/` or `..`) and made unique, because two names may reduce to the same file.
fn unique_file_name(used: &mut Vec<String>, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let mut file = format!("metric_{safe}.png");
    let mut n = 2;
    while used.contains(&file) {
        file = format!("metric_{safe}_{n}.png");
        n += 1;
    }
    used.push(file.clone());
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_file_names_are_safe_and_unique() {
        let mut used = vec!["loss.png".to_string()];
        assert_eq!(unique_file_name(&mut used, "../top-5 acc"), "metric____top-5_acc.png");
        assert_eq!(unique_file_name(&mut used, "a/b"), "metric_a_b.png");
        assert_eq!(unique_file_name(&mut used, "a.b"), "metric_a_b_2.png");
    }
}
