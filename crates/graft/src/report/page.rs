//! The HTML of the training report: one self-contained page (inline CSS) with the warnings, the test metrics, a
//! per-class table, the confusion counts, the final epoch and the charts; numbers formatted for reading.

use serde_json::{Map, Value};

use super::Chart;
use super::history::{ConfusionInput, class_label, epoch_axis, scalar_metric_names};

/// A number the way people read metric tables: integers plainly, the rest with four decimals, and
/// very small or large magnitudes (tiny losses, step counts) in scientific notation.
pub fn fmt_number(v: f64) -> String {
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

pub(super) fn escape(text: &str) -> String {
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

pub(super) struct Page<'a> {
    pub(super) title: &'a str,
    pub(super) history: &'a [Map<String, Value>],
    pub(super) test: &'a Map<String, Value>,
    pub(super) classes: &'a [String],
    pub(super) charts: &'a [Chart],
    pub(super) confusion: &'a ConfusionInput,
    pub(super) warnings: &'a [String],
    pub(super) sections: &'a [super::Section],
}

pub(super) const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}\
h1{margin:0 0 4px;font-size:1.8em;word-break:break-word}h2{margin-top:36px;border-bottom:1px solid #d8dce3;padding-bottom:4px}\
.sub{color:#5b6475;margin:0}.note{color:#8a5a00}\
table{border-collapse:collapse;background:#fff;margin:8px 0 16px;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #d8dce3;padding:4px 12px;text-align:right}th{background:#eef0f4}\
td:first-child,th:first-child{text-align:left}\
figure{display:inline-block;margin:8px 16px 16px 0;background:#fff;border:1px solid #d8dce3;padding:8px}\
figure img{max-width:100%;height:auto;display:block}figcaption{color:#5b6475;font-size:.9em;margin-top:4px}\
details{margin:8px 0}summary{cursor:pointer}";

pub(super) fn render_html(page: &Page) -> String {
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
    for section in page.sections {
        html.push_str(&format!("<h2>{}</h2>\n", escape(&section.title)));
        if !section.text.is_empty() {
            html.push_str(&format!("<p>{}</p>\n", escape(&section.text)));
        }
        html.push_str("<table>\n");
        for (name, value) in &section.rows {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                escape(name),
                escape(value)
            ));
        }
        html.push_str("</table>\n");
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

pub(super) fn charts_section(charts: &[Chart]) -> String {
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
    use crate::report::tests::{classes, classification_test};

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
    fn numbers_format_for_reading() {
        assert_eq!(fmt_number(0.9123), "0.9123");
        assert_eq!(fmt_number(0.87654321), "0.8765");
        assert_eq!(fmt_number(12.0), "12");
        assert_eq!(fmt_number(0.5), "0.5");
        assert_eq!(fmt_number(0.00012), "1.200e-4");
    }
}
