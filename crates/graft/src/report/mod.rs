//! The end-of-training report: a self-contained `report.html` plus PNG charts, written next to each
//! other so the page can be opened straight from the run directory (or copied elsewhere as a folder).

mod charts;
mod doctor;
mod figures;
mod history;
mod images;
pub mod introspection;
mod ood;
mod page;
mod regression;

pub use charts::{lr_finder_chart, tune_chart};
pub use doctor::{CheckRow, write_doctor_page};
pub use images::ImageGrid;
pub use ood::{OodScore, write_ood_report};
pub use regression::RegressionPoints;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Context, Error, Result};
pub use graft_data::fsio::{copy_atomic, write_atomic};

use figures::{write_charts, write_ranking_curves, write_reliability};
use history::ConfusionInput;
/// The charts (and `graft doctor`) format their numbers as the page does.
pub use page::fmt_number;
use page::{Page, render_html};

/// The files a report consists of, so callers can print or link them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub charts: Vec<PathBuf>,
}

/// Writes `report.html` and PNG charts into `dir` for a finished training run.
///
/// `history` holds one object per epoch (`epoch`, `loss`, `val_loss`, metrics and their `val_` twins);
/// `test` the test-set metrics (possibly with `confusion_matrix` as `[true][predicted]` counts);
/// `classes` the class names in index order (empty for regression); `warnings` what the run warned about the data.
pub fn write_report(
    dir: &Path,
    title: &str,
    history: &[Map<String, Value>],
    test: &Map<String, Value>,
    classes: &[String],
    warnings: &[String],
) -> Result<ReportFiles> {
    write_report_with(dir, title, history, test, classes, warnings, &Extras::default())
}

/// Figures a report shows when the run has them.
#[derive(Debug, Clone, Default)]
pub struct Extras<'a> {
    /// A regression run's test predictions, for the predicted-vs-actual and residual charts.
    pub regression: Option<&'a RegressionPoints>,
    /// Image grids (reconstructions, samples), in this order after the charts.
    pub grids: &'a [ImageGrid],
    /// Tables of facts about the run (the transfer strategy and its evidence), before the test metrics.
    pub sections: &'a [Section],
    /// Charts the caller drew into the report's folder (introspection), after the others.
    pub charts: &'a [Chart],
}

/// A titled table of name → value rows, with a line of text above it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub title: String,
    pub text: String,
    pub rows: Vec<(String, String)>,
}

/// [`write_report`], with the figures of `extras`.
pub fn write_report_with(
    dir: &Path,
    title: &str,
    history: &[Map<String, Value>],
    test: &Map<String, Value>,
    classes: &[String],
    warnings: &[String],
    extras: &Extras,
) -> Result<ReportFiles> {
    let regression = extras.regression;
    ensure_dir(dir)?;
    let confusion = ConfusionInput::from_test(test);
    let mut charts = write_charts(dir, history, &confusion, classes)?;
    if let Some(points) = regression.filter(|p| !p.actual.is_empty()) {
        regression::predicted_vs_actual_chart(&dir.join("predicted_vs_actual.png"), points)?;
        regression::residual_chart(&dir.join("residuals.png"), points)?;
        charts.push(Chart {
            file: "predicted_vs_actual.png".into(),
            caption: "Test set: predicted against actual values; the diagonal is a perfect prediction".into(),
        });
        charts.push(Chart {
            file: "residuals.png".into(),
            caption: "Test set: residuals (actual − predicted) against the prediction".into(),
        });
    }
    if let Some(chart) = write_reliability(dir, test)? {
        charts.push(chart);
    }
    charts.extend(write_ranking_curves(dir, test, classes)?);
    for grid in extras.grids {
        charts.push(images::write_image_grid(dir, grid)?);
    }
    charts.extend(extras.charts.iter().cloned());
    let page = render_html(&Page {
        title,
        history,
        test,
        classes,
        charts: &charts,
        confusion: &confusion,
        warnings,
        sections: extras.sections,
    });
    let html = dir.join("report.html");
    write_atomic(&html, page.as_bytes())?;
    Ok(ReportFiles {
        html,
        charts: charts.iter().map(|c| dir.join(&c.file)).collect(),
    })
}

fn ensure_dir(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).in_file(dir)?;
    if !meta.is_dir() {
        return Err(Error::new("the report directory is not a directory").in_file(dir));
    }
    Ok(())
}

/// A chart that was written, by file name relative to the report directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub file: String,
    pub caption: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use graft_data::test_util::TempDir;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("expected an object, got {other}"),
        }
    }

    pub(super) fn history(rows: Vec<Value>) -> Vec<Map<String, Value>> {
        rows.into_iter().map(obj).collect()
    }

    fn three_epochs() -> Vec<Map<String, Value>> {
        history(vec![
            json!({"epoch": 1, "loss": 1.2, "val_loss": 1.3, "accuracy": 0.5, "val_accuracy": 0.45,
                   "f1_macro": 0.4, "val_f1_macro": 0.38, "recall": [0.1, 0.2]}),
            json!({"epoch": 2, "loss": 0.8, "val_loss": 0.95, "accuracy": 0.7, "val_accuracy": 0.66,
                   "f1_macro": 0.65, "val_f1_macro": 0.6, "recall": [0.5, 0.6]}),
            json!({"epoch": 3, "loss": 0.55, "val_loss": 0.71, "accuracy": 0.81, "val_accuracy": 0.77,
                   "f1_macro": 0.79, "val_f1_macro": 0.74, "recall": [0.8, 0.7]}),
        ])
    }

    pub(super) fn classification_test() -> Map<String, Value> {
        obj(json!({
            "accuracy": 0.9123, "f1_macro": 0.875, "loss": 0.31,
            "precision": [0.9, 0.8], "recall": [0.95, 0.7], "f1": [0.92, 0.75], "support": [10, 12],
            "confusion_matrix": [[9, 1], [2, 10]],
        }))
    }

    pub(super) fn classes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Width and height from a PNG's IHDR chunk, after checking the signature and the closing IEND chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.len() > 33, "{} is too short for a PNG", path.display());
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} lacks the PNG signature",
            path.display()
        );
        assert_eq!(&bytes[12..16], b"IHDR", "{} does not start with IHDR", path.display());
        assert_eq!(
            &bytes[bytes.len() - 8..bytes.len() - 4],
            b"IEND",
            "{} is truncated",
            path.display()
        );
        let be = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        (be(16), be(20))
    }

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn roc_and_precision_recall_curves_are_drawn_from_the_test_curves() {
        let dir = TempDir::new("curves");
        let mut test = classification_test();
        test.insert(
            "curves".into(),
            json!({
                "roc": [{"class": 1, "auc": 0.75, "points": [[0.0, 0.0], [0.0, 0.5], [0.5, 1.0], [1.0, 1.0]]}],
                "pr": [{"class": 1, "average_precision": 0.8, "points": [[0.0, 1.0], [0.5, 1.0], [1.0, 0.5]]}],
            }),
        );
        let files = write_report(&dir.0, "run", &[], &test, &classes(&["a", "b"]), &[]).expect("report");
        for chart in ["roc.png", "precision_recall.png"] {
            assert!(
                files.charts.contains(&dir.0.join(chart)),
                "{chart} missing from {:?}",
                files.charts
            );
            assert_eq!(png_size(&dir.0.join(chart)), charts::LINE_CHART_SIZE);
        }
        let html = fs::read_to_string(&files.html).expect("read html");
        assert!(html.contains("roc.png") && html.contains("precision_recall.png"));
    }

    #[test]
    fn html_lists_test_metrics_final_epoch_and_charts() {
        let dir = TempDir::new("html");
        let files = write_report(
            &dir.0,
            "mnist.toml",
            &three_epochs(),
            &classification_test(),
            &classes(&["a", "b"]),
            &[],
        )
        .expect("report");
        let html = fs::read_to_string(&files.html).expect("read html");
        for needle in [
            "accuracy",
            "0.9123",
            "f1_macro",
            "0.875",
            "0.31",
            "precision",
            "support",
            "mnist.toml",
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        // Final-epoch train and validation values.
        for needle in ["0.55", "0.71", "0.81", "0.77", "0.79", "0.74", "Epoch 3"] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        for img in [
            "loss.png",
            "metric_accuracy.png",
            "metric_f1_macro.png",
            "confusion_matrix.png",
        ] {
            assert!(html.contains(&format!("<img src=\"{img}\"")), "missing image {img}");
        }
        assert!(
            !html.contains("metric_recall"),
            "per-class arrays must not become curves"
        );
        assert!(
            !html.contains("<script") && !html.contains("http") && !html.contains("//"),
            "not self-contained"
        );
    }

    #[test]
    fn html_escapes_class_names_and_title() {
        let dir = TempDir::new("escape");
        let names = classes(&["cat", "<dog> & \"co\""]);
        let files = write_report(
            &dir.0,
            "<b>run</b>",
            &three_epochs(),
            &classification_test(),
            &names,
            &[],
        )
        .expect("report");
        let html = fs::read_to_string(&files.html).expect("read html");
        assert!(html.contains("&lt;dog&gt; &amp; &quot;co&quot;"));
        assert!(html.contains("&lt;b&gt;run&lt;/b&gt;"));
        assert!(!html.contains("<dog>") && !html.contains("<b>run"));
    }

    #[test]
    fn charts_are_pngs_of_the_expected_size() {
        let dir = TempDir::new("png");
        let files = write_report(
            &dir.0,
            "run",
            &three_epochs(),
            &classification_test(),
            &classes(&["a", "b"]),
            &[],
        )
        .expect("report");
        let names: Vec<String> = files
            .charts
            .iter()
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "loss.png",
                "metric_accuracy.png",
                "metric_f1_macro.png",
                "confusion_matrix.png"
            ]
        );
        for chart in &files.charts[..3] {
            assert_eq!(png_size(chart), charts::LINE_CHART_SIZE, "{}", chart.display());
        }
        assert_eq!(png_size(&files.charts[3]), charts::confusion_chart_size(2));
    }

    #[test]
    fn no_temporary_files_are_left_behind() {
        let dir = TempDir::new("tmp");
        write_report(
            &dir.0,
            "run",
            &three_epochs(),
            &classification_test(),
            &classes(&["a", "b"]),
            &[],
        )
        .expect("report");
        let names = file_names(&dir.0);
        assert_eq!(
            names,
            [
                "confusion_matrix.png",
                "loss.png",
                "metric_accuracy.png",
                "metric_f1_macro.png",
                "report.html"
            ]
        );
    }

    #[test]
    fn one_epoch_history_still_renders() {
        let dir = TempDir::new("one");
        let rows = history(vec![json!({"epoch": 1, "loss": 0.7, "val_loss": 0.8, "accuracy": 0.6})]);
        let files = write_report(&dir.0, "run", &rows, &Map::new(), &[], &[]).expect("report");
        assert_eq!(files.charts.len(), 2);
        for chart in &files.charts {
            assert_eq!(png_size(chart), charts::LINE_CHART_SIZE);
        }
        assert!(files.html.exists());
    }

    #[test]
    fn null_and_missing_values_are_skipped() {
        let dir = TempDir::new("null");
        let rows = history(vec![
            json!({"epoch": 1, "loss": 0.9, "val_loss": null, "val_accuracy": null}),
            json!({"epoch": 2, "loss": null, "val_loss": null, "val_accuracy": 0.5}),
            json!({"epoch": 3, "loss": 0.4, "val_loss": null}),
        ]);
        let files = write_report(&dir.0, "run", &rows, &Map::new(), &[], &[]).expect("report");
        let names: Vec<String> = files
            .charts
            .iter()
            .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["loss.png", "metric_accuracy.png"]);
        for chart in &files.charts {
            assert_eq!(png_size(chart), charts::LINE_CHART_SIZE);
        }
        let html = fs::read_to_string(&files.html).expect("read html");
        assert!(html.contains("No test metrics were recorded."));
    }

    #[test]
    fn a_curve_without_any_finite_value_still_renders() {
        let dir = TempDir::new("allnull");
        let rows = history(vec![json!({"epoch": 1, "loss": null})]);
        let files = write_report(&dir.0, "run", &rows, &Map::new(), &[], &[]).expect("report");
        assert_eq!(png_size(&files.charts[0]), charts::LINE_CHART_SIZE);
    }

    #[test]
    fn many_classes_render_without_cell_text() {
        let dir = TempDir::new("many");
        let n = 25;
        let matrix: Vec<Vec<u64>> = (0..n)
            .map(|i| (0..n).map(|j| if i == j { 40 } else { (i + j) as u64 % 3 }).collect())
            .collect();
        let test = obj(json!({"accuracy": 0.8, "confusion_matrix": matrix}));
        let names: Vec<String> = (0..n).map(|i| format!("class {i}")).collect();
        let files = write_report(&dir.0, "run", &[], &test, &names, &[]).expect("report");
        assert_eq!(files.charts.len(), 1);
        assert_eq!(png_size(&files.charts[0]), charts::confusion_chart_size(n));
    }

    #[test]
    fn malformed_confusion_matrix_is_noted_not_fatal() {
        let dir = TempDir::new("malformed");
        let test = obj(json!({"accuracy": 0.8, "confusion_matrix": [[1, 2], [3]]}));
        let files = write_report(&dir.0, "run", &[], &test, &[], &[]).expect("report");
        assert!(files.charts.is_empty());
        let html = fs::read_to_string(&files.html).expect("read html");
        assert!(html.contains("not a square array"));
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let dir = TempDir::new("missing");
        let missing = dir.0.join("does/not/exist");
        let err = write_report(&missing, "run", &three_epochs(), &Map::new(), &[], &[]).expect_err("must fail");
        assert_eq!(err.file.as_deref(), Some(missing.as_path()));
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    }
}
