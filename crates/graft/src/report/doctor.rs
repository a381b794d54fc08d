//! The page `graft doctor` writes: every check with its status, measurement and advice, and the learning-rate range
//! test's chart.

use std::path::Path;

use super::page::{CSS, escape};
use crate::error::Result;

/// One check as the page shows it.
pub struct CheckRow<'a> {
    pub name: &'a str,
    /// `pass`, `warn`, `FAIL` or `skip`.
    pub status: &'a str,
    pub measured: &'a str,
    pub advice: &'a str,
}

/// Writes `doctor.html` at `path`; `lr_chart` is the range test's chart file beside it, when there is one.
pub fn write_doctor_page(path: &Path, title: &str, checks: &[CheckRow], lr_chart: Option<&str>) -> Result<()> {
    let title = escape(title);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title} · graft doctor</title>\n<style>{CSS}\
         td.pass{{color:#2c7a2c}}td.warn{{color:#a86400}}td.FAIL{{color:#b3261e;font-weight:600}}td.skip{{color:#777}}\
         </style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n<p class=\"sub\">graft doctor · {} checks</p>\n\
         <table>\n<tr><th>status</th><th>check</th><th>measured</th><th>advice</th></tr>\n",
        checks.len()
    );
    for c in checks {
        html.push_str(&format!(
            "<tr><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(c.status),
            escape(c.status),
            escape(c.name),
            escape(c.measured),
            escape(c.advice)
        ));
    }
    html.push_str("</table>\n");
    if let Some(chart) = lr_chart {
        html.push_str(&format!(
            "<h2>Learning-rate range test</h2>\n<p>The loss of one batch per step while the learning rate rises \
             exponentially (smoothed line: running average). Train with a rate where the loss still falls steeply, \
             below the minimum.</p>\n<img src=\"{}\" alt=\"loss against learning rate\">\n",
            escape(chart)
        ));
    }
    html.push_str("</main>\n</body>\n</html>\n");
    super::write_atomic(path, html.as_bytes())
}
