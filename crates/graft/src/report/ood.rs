//! The out-of-distribution report of `graft ood --report`: a page of its own, with a table of each score's
//! figures, the histograms of in- and out-of-distribution scores and their ROC curves.

use std::path::Path;

use super::page::{CSS, charts_section, escape};
use super::{Chart, charts, ensure_dir, write_atomic};
use crate::error::Result;

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
