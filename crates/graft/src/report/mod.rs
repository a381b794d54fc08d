//! The end-of-training report: a self-contained `report.html` plus PNG charts, written next to each
//! other so the page can be opened straight from the run directory (or copied elsewhere as a folder).

mod charts;
mod regression;

pub use regression::RegressionPoints;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Context, Error, Result};
pub use graft_data::fsio::{copy_atomic, write_atomic};

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
    write_report_with(dir, title, history, test, classes, warnings, None)
}

/// [`write_report`], with a regression run's test predictions for the predicted-vs-actual and residual charts.
pub fn write_report_with(
    dir: &Path,
    title: &str,
    history: &[Map<String, Value>],
    test: &Map<String, Value>,
    classes: &[String],
    warnings: &[String],
    regression: Option<&RegressionPoints>,
) -> Result<ReportFiles> {
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
    let page = render_html(&Page {
        title,
        history,
        test,
        classes,
        charts: &charts,
        confusion: &confusion,
        warnings,
    });
    let html = dir.join("report.html");
    write_atomic(&html, page.as_bytes())?;
    Ok(ReportFiles {
        html,
        charts: charts.iter().map(|c| dir.join(&c.file)).collect(),
    })
}

/// One score of an out-of-distribution comparison: its name, the scores of the in- and out-of-distribution inputs,
/// and the summary figures to show.
pub struct OodScore<'a> {
    pub name: &'a str,
    pub inside: &'a [f64],
    pub outside: &'a [f64],
    pub figures: Vec<(&'static str, String)>,
}

/// `graft ood --report FILE.html`: a table of the figures, each score's histograms (in vs out) and every score's ROC
/// curve, with the PNGs next to the page as `<stem>_<chart>.png`.
pub fn write_ood_report(path: &Path, title: &str, scores: &[OodScore]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("ood");
    let mut charts = vec![];
    let roc_file = format!("{stem}_roc.png");
    let lines: Vec<charts::Line> = scores
        .iter()
        .map(|s| charts::Line {
            label: s.name,
            points: roc_points(s.inside, s.outside),
        })
        .collect();
    charts::curve_chart(
        &dir.join(&roc_file),
        "ROC: out-of-distribution as positive",
        (
            "in-distribution inputs flagged (false-positive rate)",
            "out-of-distribution inputs flagged",
        ),
        true,
        &lines,
    )?;
    charts.push(Chart {
        file: roc_file,
        caption: "ROC curve of every score".into(),
    });
    for s in scores {
        let file = format!("{stem}_{}.png", s.name);
        charts::histogram_chart(
            &dir.join(&file),
            s.name,
            [("in-distribution", s.inside), ("out-of-distribution", s.outside)],
        )?;
        charts.push(Chart {
            file,
            caption: format!("{}: scores of in- and out-of-distribution inputs", s.name),
        });
    }
    let title = escape(title);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n<table>\n<tr><th>score</th>"
    );
    for (name, _) in scores.first().map(|s| s.figures.as_slice()).unwrap_or_default() {
        html.push_str(&format!("<th>{}</th>", escape(name)));
    }
    html.push_str("</tr>\n");
    for s in scores {
        html.push_str(&format!("<tr><td>{}</td>", escape(s.name)));
        for (_, v) in &s.figures {
            html.push_str(&format!("<td>{}</td>", escape(v)));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html.push_str(&charts_section(&charts));
    html.push_str("</main>\n</body>\n</html>\n");
    write_atomic(path, html.as_bytes())
}

/// ROC points of scores where `outside` is the positive class, one per distinct threshold, highest first.
fn roc_points(inside: &[f64], outside: &[f64]) -> Vec<(f64, f64)> {
    let scored = inside
        .iter()
        .map(|&s| (s, false))
        .chain(outside.iter().map(|&s| (s, true)))
        .filter(|(s, _)| !s.is_nan());
    crate::task::curves::Ranking::new(scored).roc_points()
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
struct Chart {
    file: String,
    caption: String,
}

fn write_charts(
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
fn write_reliability(dir: &Path, test: &Map<String, Value>) -> Result<Option<Chart>> {
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
fn write_ranking_curves(dir: &Path, test: &Map<String, Value>, classes: &[String]) -> Result<Vec<Chart>> {
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

/// The x coordinate of each epoch: its recorded `epoch` when there is one, else its 1-based position.
fn epoch_axis(history: &[Map<String, Value>]) -> Vec<f64> {
    history
        .iter()
        .enumerate()
        .map(|(i, row)| finite(row.get("epoch")).unwrap_or((i + 1) as f64))
        .collect()
}

fn x_span(epochs: &[f64]) -> (f64, f64) {
    let lo = epochs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = epochs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
}

/// The finite points of one key; nulls, absences and non-numbers are gaps the line simply bridges.
fn curve(history: &[Map<String, Value>], epochs: &[f64], key: &str) -> Vec<(f64, f64)> {
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
fn scalar_metric_names(history: &[Map<String, Value>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (key, value) in history.iter().flat_map(|row| row.iter()) {
        let name = key.strip_prefix("val_").unwrap_or(key);
        if name != "epoch" && name != "loss" && finite(Some(value)).is_some() && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

fn class_label(classes: &[String], index: usize) -> String {
    classes.get(index).cloned().unwrap_or_else(|| index.to_string())
}

/// What the test metrics say about a confusion matrix; a malformed one is reported on the page
/// rather than failing the whole report.
#[derive(Debug, Clone, PartialEq)]
enum ConfusionInput {
    Absent,
    Malformed,
    Matrix(Vec<Vec<u64>>),
}

impl ConfusionInput {
    fn from_test(test: &Map<String, Value>) -> Self {
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

/// A number the way people read metric tables: integers plainly, the rest with four decimals, and
/// very small or large magnitudes (tiny losses, step counts) in scientific notation.
fn fmt_number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e9 {
        return format!("{}", v as i64);
    }
    if v.abs() >= 1e-3 && v.abs() < 1e6 {
        let fixed = format!("{v:.4}");
        return fixed.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{v:.3e}")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A table cell for any JSON value; structured values are summarized because they have their own tables.
fn fmt_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "—".to_string(),
        Some(Value::Number(n)) => n.as_f64().map_or_else(|| n.to_string(), fmt_number),
        Some(Value::String(s)) => escape(s),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => "…".to_string(),
    }
}

struct Page<'a> {
    title: &'a str,
    history: &'a [Map<String, Value>],
    test: &'a Map<String, Value>,
    classes: &'a [String],
    charts: &'a [Chart],
    confusion: &'a ConfusionInput,
    warnings: &'a [String],
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}\
h1{margin:0 0 4px;font-size:1.8em;word-break:break-word}h2{margin-top:36px;border-bottom:1px solid #d8dce3;padding-bottom:4px}\
.sub{color:#5b6475;margin:0}.note{color:#8a5a00}\
table{border-collapse:collapse;background:#fff;margin:8px 0 16px;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #d8dce3;padding:4px 12px;text-align:right}th{background:#eef0f4}\
td:first-child,th:first-child{text-align:left}\
figure{display:inline-block;margin:8px 16px 16px 0;background:#fff;border:1px solid #d8dce3;padding:8px}\
figure img{max-width:100%;height:auto;display:block}figcaption{color:#5b6475;font-size:.9em;margin-top:4px}\
details{margin:8px 0}summary{cursor:pointer}";

fn render_html(page: &Page) -> String {
    let title = escape(page.title);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title} · training report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
         <h1>{title}</h1>\n<p class=\"sub\">Training report · {} epoch(s)</p>\n",
        page.history.len()
    );
    if !page.warnings.is_empty() {
        html.push_str("<h2>Warnings</h2>\n<ul>\n");
        for w in page.warnings {
            html.push_str(&format!("<li class=\"note\">{}</li>\n", escape(w)));
        }
        html.push_str("</ul>\n");
    }
    html.push_str(&test_section(page));
    html.push_str(&final_epoch_section(page.history));
    html.push_str(&charts_section(page.charts));
    html.push_str("</main>\n</body>\n</html>\n");
    html
}

fn test_section(page: &Page) -> String {
    let mut html = String::from("<h2>Test metrics</h2>\n");
    let scalars: Vec<(&String, &Value)> = page
        .test
        .iter()
        .filter(|(k, v)| k.as_str() != "confusion_matrix" && !v.is_array())
        .collect();
    let per_class = per_class_columns(page.test);
    if scalars.is_empty() && per_class.is_empty() && *page.confusion == ConfusionInput::Absent {
        html.push_str("<p>No test metrics were recorded.</p>\n");
        return html;
    }
    if !scalars.is_empty() {
        html.push_str("<table>\n<tr><th>metric</th><th>value</th></tr>\n");
        for (name, value) in scalars {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                escape(name),
                fmt_cell(Some(value))
            ));
        }
        html.push_str("</table>\n");
    }
    html.push_str(&per_class_table(&per_class, page.classes));
    html.push_str(&confusion_details(page.confusion, page.classes));
    html
}

/// Arrays of numbers in the test metrics are per-class values (index = class), shown as columns with
/// the usual classification-report order first.
fn per_class_columns(test: &Map<String, Value>) -> Vec<(&str, &Vec<Value>)> {
    let mut columns: Vec<(&str, &Vec<Value>)> = test
        .iter()
        .filter(|(k, _)| k.as_str() != "confusion_matrix")
        .filter_map(|(k, v)| v.as_array().map(|a| (k.as_str(), a)))
        .filter(|(_, a)| a.iter().all(|x| x.is_number() || x.is_null()))
        .collect();
    columns.sort_by_key(|(name, _)| (column_rank(name), *name));
    columns
}

fn column_rank(name: &str) -> usize {
    ["precision", "recall", "f1", "support"]
        .iter()
        .position(|p| name.contains(p))
        .unwrap_or(4)
}

fn per_class_table(columns: &[(&str, &Vec<Value>)], classes: &[String]) -> String {
    let rows = columns.iter().map(|(_, values)| values.len()).max().unwrap_or(0);
    if rows == 0 {
        return String::new();
    }
    let mut html = String::from("<h3>Per class</h3>\n<table>\n<tr><th>class</th>");
    for (name, _) in columns {
        html.push_str(&format!("<th>{}</th>", escape(name)));
    }
    html.push_str("</tr>\n");
    for i in 0..rows {
        html.push_str(&format!("<tr><td>{}</td>", escape(&class_label(classes, i))));
        for (_, values) in columns {
            html.push_str(&format!("<td>{}</td>", fmt_cell(values.get(i))));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

/// The raw counts as a table too: the chart drops its cell text for many classes, and a table can be
/// copied.
fn confusion_details(confusion: &ConfusionInput, classes: &[String]) -> String {
    let counts = match confusion {
        ConfusionInput::Absent => return String::new(),
        ConfusionInput::Malformed => {
            return "<p class=\"note\">The test <code>confusion_matrix</code> is not a square array of \
                    non-negative integer counts, so it is not shown.</p>\n"
                .to_string();
        }
        ConfusionInput::Matrix(counts) => counts,
    };
    let mut html = String::from(
        "<details>\n<summary>Confusion matrix counts (rows: true class, columns: predicted)</summary>\n\
         <table>\n<tr><th>true \\ predicted</th>",
    );
    for i in 0..counts.len() {
        html.push_str(&format!("<th>{}</th>", escape(&class_label(classes, i))));
    }
    html.push_str("</tr>\n");
    for (i, row) in counts.iter().enumerate() {
        html.push_str(&format!("<tr><td>{}</td>", escape(&class_label(classes, i))));
        for count in row {
            html.push_str(&format!("<td>{count}</td>"));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n</details>\n");
    html
}

fn final_epoch_section(history: &[Map<String, Value>]) -> String {
    let mut html = String::from("<h2>Final epoch</h2>\n");
    let Some(last) = history.last() else {
        html.push_str("<p>No epochs were recorded.</p>\n");
        return html;
    };
    let epoch = epoch_axis(history).last().copied().unwrap_or(history.len() as f64);
    html.push_str(&format!("<p>Epoch {}</p>\n", fmt_number(epoch)));
    html.push_str("<table>\n<tr><th>metric</th><th>train</th><th>validation</th></tr>\n");
    let names = std::iter::once("loss".to_string()).chain(scalar_metric_names(history));
    for name in names {
        let train = fmt_cell(last.get(&name));
        let val = fmt_cell(last.get(&format!("val_{name}")));
        html.push_str(&format!(
            "<tr><td>{}</td><td>{train}</td><td>{val}</td></tr>\n",
            escape(&name)
        ));
    }
    html.push_str("</table>\n");
    html
}

fn charts_section(charts: &[Chart]) -> String {
    if charts.is_empty() {
        return String::new();
    }
    let mut html = String::from("<h2>Charts</h2>\n");
    for chart in charts {
        let (file, caption) = (escape(&chart.file), escape(&chart.caption));
        html.push_str(&format!(
            "<figure><img src=\"{file}\" alt=\"{caption}\"><figcaption>{caption}</figcaption></figure>\n"
        ));
    }
    html
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

    fn history(rows: Vec<Value>) -> Vec<Map<String, Value>> {
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

    fn classification_test() -> Map<String, Value> {
        obj(json!({
            "accuracy": 0.9123, "f1_macro": 0.875, "loss": 0.31,
            "precision": [0.9, 0.8], "recall": [0.95, 0.7], "f1": [0.92, 0.75], "support": [10, 12],
            "confusion_matrix": [[9, 1], [2, 10]],
        }))
    }

    fn classes(names: &[&str]) -> Vec<String> {
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
    fn per_class_table_uses_class_names_in_report_order() {
        let test = classification_test();
        let columns = per_class_columns(&test);
        let order: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        assert_eq!(order, ["precision", "recall", "f1", "support"]);
        let table = per_class_table(&columns, &classes(&["cat", "dog"]));
        assert!(
            table.contains("<tr><td>dog</td><td>0.8</td><td>0.7</td><td>0.75</td><td>12</td></tr>"),
            "{table}"
        );
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
    fn metric_file_names_are_safe_and_unique() {
        let mut used = vec!["loss.png".to_string()];
        assert_eq!(unique_file_name(&mut used, "../top-5 acc"), "metric____top-5_acc.png");
        assert_eq!(unique_file_name(&mut used, "a/b"), "metric_a_b.png");
        assert_eq!(unique_file_name(&mut used, "a.b"), "metric_a_b_2.png");
    }

    #[test]
    fn numbers_format_for_reading() {
        assert_eq!(fmt_number(0.9123), "0.9123");
        assert_eq!(fmt_number(0.87654321), "0.8765");
        assert_eq!(fmt_number(12.0), "12");
        assert_eq!(fmt_number(0.5), "0.5");
        assert_eq!(fmt_number(0.00012), "1.200e-4");
    }

    #[test]
    fn epochs_default_to_positions() {
        let rows = history(vec![json!({"loss": 1.0}), json!({"epoch": 7, "loss": 0.5})]);
        assert_eq!(epoch_axis(&rows), [1.0, 7.0]);
    }
}
