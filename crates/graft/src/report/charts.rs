//! PNG charts for the report. Each chart is drawn into a temporary file next to its target and renamed
//! over it, so a half-drawn chart is never visible under the final name.

use std::fmt::Display;
use std::path::Path;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::fmt_number;
use crate::error::{Error, Result};
use graft_data::fsio::{commit_temp, temp_sibling};

pub(super) const LINE_CHART_SIZE: (u32, u32) = (800, 500);

/// Above this many classes the cells are too small for their count and fraction to be legible.
const MAX_ANNOTATED_CLASSES: usize = 20;
pub(super) const FONT: &str = "sans-serif";
/// Matplotlib's tab10 blue and orange: distinguishable for the common forms of colour blindness.
/// matplotlib's tab10, so ten classes get ten colours.
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(super) type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// One labelled curve; only finite points, in epoch order.
pub(crate) struct Line<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
}

type Chart2d<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The frame every line, bar and curve chart shares: caption, margins and label areas.
pub(super) fn frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> std::result::Result<Chart2d<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    ChartBuilder::on(root)
        .caption(title, (FONT, 24.0))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)
}

/// The shared grid and axis styling; callers add formatters and draw it.
pub(super) fn styled_mesh<'c, 'a, DB: DrawingBackend>(
    chart: &'c mut Chart2d<'a, DB>,
    x_desc: &str,
    y_desc: &str,
) -> MeshStyle<'a, 'c, RangedCoordf64, RangedCoordf64, DB> {
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 16.0))
        .label_style((FONT, 14.0))
        .light_line_style(RGBColor(235, 235, 235));
    mesh
}

fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Drawn<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 15.0))
        .draw()
}

pub(super) fn line_chart(path: &Path, title: &str, y_desc: &str, x_span: (f64, f64), lines: &[Line]) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_lines(root, title, y_desc, x_span, lines).map_err(plot_error(path))
    })
}

/// The learning-rate range test: the loss and its running average against the rate (log axis), with the suggested
/// and the configured rates marked. `points` are `(lr, loss, smoothed)`.
pub fn lr_finder_chart(
    path: &Path,
    points: &[(f64, f64, f64)],
    suggested: Option<f64>,
    configured: Option<f64>,
) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_lr_finder(root, points, suggested, configured).map_err(plot_error(path))
    })
}

fn draw_lr_finder<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[(f64, f64, f64)],
    suggested: Option<f64>,
    configured: Option<f64>,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let finite: Vec<(f64, f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 > 0.0 && p.1.is_finite() && p.2.is_finite())
        .collect();
    let lo_x = finite.first().map_or(1e-7, |p| p.0);
    let hi_x = finite.last().map_or(10.0, |p| p.0).max(lo_x * 10.0);
    // The raw losses blow up at the end; the range follows the smoothed curve so the valley stays visible.
    let lo_y = finite.iter().map(|p| p.2.min(p.1)).fold(f64::MAX, f64::min);
    let first = finite.first().map_or(1.0, |p| p.2);
    let hi_y = finite
        .iter()
        .map(|p| p.2)
        .fold(first, f64::max)
        .min(first * 2.0)
        .max(lo_y + 1e-6);
    let pad = 0.05 * (hi_y - lo_y);
    let mut chart = ChartBuilder::on(root)
        .caption("Learning-rate range test", (FONT, 24.0))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((lo_x..hi_x).log_scale(), (lo_y - pad)..(hi_y + pad))?;
    chart
        .configure_mesh()
        .x_desc("learning rate")
        .y_desc("training loss")
        .axis_desc_style((FONT, 16.0))
        .label_style((FONT, 14.0))
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| fmt_number(*v))
        .draw()?;
    let clip = |y: f64| y.min(hi_y + pad);
    chart
        .draw_series(LineSeries::new(
            finite.iter().map(|p| (p.0, clip(p.1))),
            PALETTE[0].mix(0.35).stroke_width(1),
        ))?
        .label("loss per batch")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[0].mix(0.35)));
    chart
        .draw_series(LineSeries::new(
            finite.iter().map(|p| (p.0, clip(p.2))),
            PALETTE[0].stroke_width(2),
        ))?
        .label("smoothed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PALETTE[0].stroke_width(2)));
    let marks = [
        (suggested, PALETTE[2], "suggested"),
        (configured, PALETTE[3], "configured"),
    ];
    for (lr, colour, label) in marks {
        let Some(lr) = lr.filter(|v| *v >= lo_x && *v <= hi_x) else {
            continue;
        };
        chart
            .draw_series(LineSeries::new(
                vec![(lr, lo_y - pad), (lr, hi_y + pad)],
                colour.stroke_width(2),
            ))?
            .label(format!("{label} {lr:.1e}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// A search's trials in the order they ran: each trial's objective (colour: its halving rung) and the best so far.
/// `points` are `(order, objective, rung)`.
pub fn tune_chart(path: &Path, points: &[(usize, f64, usize)], metric: &str, maximize: bool) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_tune(root, points, metric, maximize).map_err(plot_error(path))
    })
}

fn draw_tune<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    points: &[(usize, f64, usize)],
    metric: &str,
    maximize: bool,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let finite: Vec<(usize, f64, usize)> = points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-9);
    let last = finite.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let mut chart = frame(root, "Hyperparameter search", -0.5..last + 0.5, (lo - pad)..(hi + pad))?;
    styled_mesh(&mut chart, "trial (in the order run)", metric)
        .y_label_formatter(&|v| fmt_number(*v))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let mut best: Option<f64> = None;
    let mut line = vec![];
    for p in &finite {
        best = Some(match best {
            Some(b) if maximize => b.max(p.1),
            Some(b) => b.min(p.1),
            None => p.1,
        });
        line.push((p.0 as f64, best.unwrap_or(p.1)));
    }
    chart
        .draw_series(LineSeries::new(line, BLACK.mix(0.6).stroke_width(2)))?
        .label("best so far")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.6).stroke_width(2)));
    let rungs = finite.iter().map(|p| p.2).max().unwrap_or(0);
    for rung in 0..=rungs {
        let colour = PALETTE[rung % PALETTE.len()];
        let series = chart.draw_series(
            finite
                .iter()
                .filter(|p| p.2 == rung)
                .map(|p| Circle::new((p.0 as f64, p.1), 5, colour.filled())),
        )?;
        if rungs > 0 {
            series
                .label(format!("rung {rung}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
        }
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

pub(super) fn confusion_chart(path: &Path, counts: &[Vec<u64>], labels: &[String]) -> Result<()> {
    let layout = ConfusionLayout::new(counts.len());
    render_png(path, layout.size(), |root| {
        draw_confusion(root, &layout, counts, labels).map_err(plot_error(path))
    })
}

/// A reliability diagram: per confidence bin `(lower, upper, accuracy, count)`, a bar as high as the bin's
/// accuracy, against the diagonal of perfect calibration.
pub(super) fn reliability_chart(path: &Path, title: &str, bins: &[(f64, f64, f64, usize)]) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_reliability(root, title, bins).map_err(plot_error(path))
    })
}

fn draw_reliability<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    bins: &[(f64, f64, f64, usize)],
) -> Drawn<DB> {
    let mut chart = frame(root, title, 0f64..1f64, 0f64..1f64)?;
    styled_mesh(&mut chart, "confidence (top-label probability)", "accuracy").draw()?;
    let bar = PALETTE[0];
    chart
        .draw_series(
            bins.iter()
                .filter(|b| b.3 > 0)
                .map(|&(lo, hi, acc, _)| Rectangle::new([(lo, 0.0), (hi, acc)], bar.mix(0.6).filled())),
        )?
        .label("accuracy per bin")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], bar.mix(0.6).filled()));
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.6).stroke_width(2),
        ))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK.mix(0.6).stroke_width(2)));
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
}

/// Overlaid histograms of two samples (in-distribution and out-of-distribution scores) on shared bins.
pub(super) fn histogram_chart(path: &Path, title: &str, samples: [(&str, &[f64]); 2]) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_histograms(root, title, samples).map_err(plot_error(path))
    })
}

fn draw_histograms<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    samples: [(&str, &[f64]); 2],
) -> Drawn<DB> {
    const BUCKETS: usize = 40;
    let finite = samples
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|x| x.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo.min(0.0), lo.max(0.0) + 1.0)
    };
    let width = (hi - lo) / BUCKETS as f64;
    let fractions: Vec<Vec<f64>> = samples
        .iter()
        .map(|(_, values)| {
            let mut counts = vec![0f64; BUCKETS];
            for &v in values.iter().filter(|v| v.is_finite()) {
                counts[(((v - lo) / width) as usize).min(BUCKETS - 1)] += 1.0;
            }
            let n = values.len().max(1) as f64;
            counts.into_iter().map(|c| c / n).collect()
        })
        .collect();
    let top = fractions.iter().flatten().fold(0f64, |m, &f| m.max(f)).max(1e-3) * 1.1;
    let mut chart = frame(root, title, lo..hi, 0f64..top)?;
    styled_mesh(
        &mut chart,
        "score (higher: less like the training data)",
        "fraction of inputs",
    )
    .x_label_formatter(&|x| fmt_number(*x))
    .y_label_formatter(&|y| fmt_number(*y))
    .draw()?;
    for (k, ((label, _), counts)) in samples.iter().zip(&fractions).enumerate() {
        let color = PALETTE[k];
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, f)| **f > 0.0).map(|(b, &f)| {
                let x0 = lo + b as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, f)], color.mix(0.45).filled())
            }))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], color.mix(0.45).filled()));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    Ok(())
}

/// Curves in the unit square (ROC or precision–recall), one per labelled line; `diagonal` adds the chance line
/// of a ROC chart.
pub(super) fn curve_chart(path: &Path, title: &str, axes: (&str, &str), diagonal: bool, lines: &[Line]) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_unit_curves(root, title, axes, diagonal, lines).map_err(plot_error(path))
    })
}

fn draw_unit_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    diagonal: bool,
    lines: &[Line],
) -> Drawn<DB> {
    let mut chart = frame(root, title, 0f64..1f64, 0f64..1.02f64)?;
    styled_mesh(&mut chart, x_desc, y_desc).draw()?;
    if diagonal {
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.3).stroke_width(1),
        ))?;
    }
    for (line, &color) in lines.iter().zip(PALETTE.iter().cycle()) {
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
    }
    let position = if diagonal {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::LowerLeft
    };
    draw_legend(&mut chart, position)?;
    Ok(())
}

#[cfg(test)]
pub(super) fn confusion_chart_size(classes: usize) -> (u32, u32) {
    ConfusionLayout::new(classes).size()
}

pub(super) fn plot_error<E: Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::new(format!("cannot draw chart: {e}")).in_file(path)
}

/// The bitmap backend encodes the PNG itself when presented, and picks the format from the file
/// extension, which is why the temporary name keeps `.png` at its end.
pub(super) fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    let tmp = temp_sibling(path)?;
    let drawn = draw_and_save(&tmp, path, size, draw);
    // The backend is dropped by now; on failure its drop may have flushed a partial image, which
    // `commit_temp` removes.
    commit_temp(&tmp, path, drawn)
}

fn draw_and_save(
    tmp: &Path,
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    let root = BitMapBackend::new(tmp, size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error(path))?;
    draw(&root)?;
    root.present().map_err(plot_error(path))
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    x_span: (f64, f64),
    lines: &[Line],
) -> Drawn<DB> {
    let (x0, x1) = padded_x(x_span);
    let (y0, y1) = padded_y(lines);
    let mut chart = frame(root, title, x0..x1, y0..y1)?;
    let x_labels = ((x_span.1 - x_span.0) as usize + 1).clamp(2, 10);
    styled_mesh(&mut chart, "epoch", y_desc)
        .x_labels(x_labels)
        .x_label_formatter(&epoch_tick)
        .y_label_formatter(&|y| fmt_number(*y))
        .draw()?;
    let mut labelled = false;
    for (line, &color) in lines.iter().zip(PALETTE.iter().cycle()) {
        if line.points.is_empty() {
            continue;
        }
        // Markers as well as the line: a single epoch, or a curve with gaps, is otherwise invisible.
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))?
            .label(line.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
        chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        labelled = true;
    }
    if labelled {
        draw_legend(&mut chart, legend_position(lines, y0, y1))?;
    } else {
        let (w, h) = root.dim_in_pixel();
        let style = TextStyle::from((FONT, 18.0).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw_text("no finite values recorded", &style, (w as i32 / 2, h as i32 / 2))?;
    }
    Ok(())
}

/// Epochs are whole numbers: ticks that fall between two epochs get no label rather than "1.5".
fn epoch_tick(x: &f64) -> String {
    if x.fract() == 0.0 {
        fmt_number(*x)
    } else {
        String::new()
    }
}

/// Half an epoch on either side keeps the first and last markers off the axes, and gives a one-epoch
/// run a non-empty range.
fn padded_x((lo, hi): (f64, f64)) -> (f64, f64) {
    (lo - 0.5, hi + 0.5)
}

fn padded_y(lines: &[Line]) -> (f64, f64) {
    let ys = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    // A flat curve still needs a visible range; scale it to the value so 1e-5 losses are not squashed.
    let pad = if span > f64::EPSILON * hi.abs().max(1.0) {
        span * 0.08
    } else {
        (hi.abs() * 0.05).max(1e-3)
    };
    (lo - pad, hi + pad)
}

/// Curves usually end near the top (accuracy) or the bottom (loss) on the right; the legend goes to
/// the opposite corner so it does not hide the end of the run.
fn legend_position(lines: &[Line], y0: f64, y1: f64) -> SeriesLabelPosition {
    let ends: Vec<f64> = lines
        .iter()
        .filter_map(|l| l.points.last())
        .map(|p| (p.1 - y0) / (y1 - y0))
        .collect();
    let mean = ends.iter().sum::<f64>() / ends.len().max(1) as f64;
    if mean > 0.5 {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// Pixel layout of the confusion heatmap; the size depends only on the class count so tests and
/// callers can predict it.
struct ConfusionLayout {
    classes: u32,
    cell: u32,
}

const CM_TITLE: u32 = 56;
const CM_AXIS_TITLE: u32 = 32;
const CM_LABELS: u32 = 150;
const CM_BAR: u32 = 100;
const CM_LABEL_CHARS: usize = 20;

impl ConfusionLayout {
    fn new(classes: usize) -> Self {
        let n = classes.max(1) as u32;
        let cell = if classes <= MAX_ANNOTATED_CLASSES {
            (600 / n).max(44)
        } else {
            (1000 / n).max(2)
        };
        ConfusionLayout { classes: n, cell }
    }

    fn grid(&self) -> u32 {
        self.classes * self.cell
    }

    fn left(&self) -> i32 {
        (CM_AXIS_TITLE + CM_LABELS) as i32
    }

    fn top(&self) -> i32 {
        CM_TITLE as i32
    }

    fn size(&self) -> (u32, u32) {
        let side = self.grid();
        (
            CM_AXIS_TITLE + CM_LABELS + side + CM_BAR,
            CM_TITLE + side + CM_LABELS + CM_AXIS_TITLE,
        )
    }

    fn annotated(&self) -> bool {
        self.classes as usize <= MAX_ANNOTATED_CLASSES
    }

    fn label_font(&self) -> f64 {
        f64::from(self.cell.saturating_sub(2).min(14))
    }

    /// Top-left pixel of the cell for (true, predicted).
    fn cell_origin(&self, row: usize, col: usize) -> (i32, i32) {
        let cell = self.cell as i32;
        (self.left() + col as i32 * cell, self.top() + row as i32 * cell)
    }
}

fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    layout: &ConfusionLayout,
    counts: &[Vec<u64>],
    labels: &[String],
) -> Drawn<DB> {
    let (width, _) = layout.size();
    let title = centered(20.0, &BLACK);
    root.draw_text(
        "Confusion matrix (normalized by true class)",
        &title,
        (width as i32 / 2, CM_TITLE as i32 / 2),
    )?;
    for (row, row_counts) in counts.iter().enumerate() {
        let total: u64 = row_counts.iter().sum();
        for (col, &count) in row_counts.iter().enumerate() {
            let fraction = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            draw_cell(root, layout, (row, col), count, fraction)?;
        }
    }
    draw_class_labels(root, layout, labels)?;
    draw_axis_titles(root, layout)?;
    draw_color_bar(root, layout)
}

fn draw_cell<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    layout: &ConfusionLayout,
    (row, col): (usize, usize),
    count: u64,
    fraction: f64,
) -> Drawn<DB> {
    let (x, y) = layout.cell_origin(row, col);
    let cell = layout.cell as i32;
    root.draw(&Rectangle::new(
        [(x, y), (x + cell, y + cell)],
        blues(fraction).filled(),
    ))?;
    if !layout.annotated() {
        return Ok(());
    }
    root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], WHITE.stroke_width(1)))?;
    let ink = if fraction > 0.5 { WHITE } else { BLACK };
    let size = (f64::from(layout.cell) / 3.2).min(20.0);
    let (cx, cy) = (x + cell / 2, y + cell / 2);
    let offset = (size * 0.55) as i32;
    root.draw_text(&count.to_string(), &centered(size, &ink), (cx, cy - offset))?;
    root.draw_text(
        &format!("{fraction:.2}"),
        &centered(size * 0.8, &ink),
        (cx, cy + offset),
    )
}

/// True classes down the left, predicted classes along the bottom (rotated so long names fit).
fn draw_class_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    layout: &ConfusionLayout,
    labels: &[String],
) -> Drawn<DB> {
    let font = layout.label_font();
    // Below this size glyphs are unreadable smudges; the HTML table carries the names instead.
    if font < 7.0 {
        return Ok(());
    }
    let half = layout.cell as i32 / 2;
    let below_grid = layout.top() + layout.grid() as i32 + 6;
    let row_style = TextStyle::from((FONT, font).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let col_style = TextStyle::from((FONT, font).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center))
        .transform(FontTransform::Rotate90);
    for (i, label) in labels.iter().enumerate() {
        let text = shorten(label, CM_LABEL_CHARS);
        let (x, y) = layout.cell_origin(i, i);
        root.draw_text(&text, &row_style, (layout.left() - 6, y + half))?;
        root.draw_text(&text, &col_style, (x + half, below_grid))?;
    }
    Ok(())
}

fn draw_axis_titles<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, layout: &ConfusionLayout) -> Drawn<DB> {
    let grid = layout.grid() as i32;
    let mid = layout.top() + grid / 2;
    let vertical = centered(16.0, &BLACK).transform(FontTransform::Rotate270);
    root.draw_text("true class", &vertical, (CM_AXIS_TITLE as i32 / 2, mid))?;
    let bottom = layout.top() + grid + CM_LABELS as i32 + CM_AXIS_TITLE as i32 / 2;
    root.draw_text(
        "predicted class",
        &centered(16.0, &BLACK),
        (layout.left() + grid / 2, bottom),
    )
}

/// The fraction scale, needed to read the heatmap when cells carry no text.
fn draw_color_bar<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, layout: &ConfusionLayout) -> Drawn<DB> {
    let grid = layout.grid() as i32;
    let x = layout.left() + grid + 24;
    let top = layout.top();
    for step in 0..grid {
        let fraction = 1.0 - f64::from(step) / f64::from((grid - 1).max(1));
        root.draw(&Rectangle::new(
            [(x, top + step), (x + 18, top + step + 1)],
            blues(fraction).filled(),
        ))?;
    }
    root.draw(&Rectangle::new(
        [(x, top), (x + 18, top + grid)],
        BLACK.mix(0.4).stroke_width(1),
    ))?;
    let style = TextStyle::from((FONT, 13.0).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (fraction, label) in [(1.0, "1.0"), (0.5, "0.5"), (0.0, "0.0")] {
        let y = top + ((1.0 - fraction) * f64::from(grid - 1)) as i32;
        root.draw_text(label, &style, (x + 24, y))?;
    }
    Ok(())
}

fn centered(size: f64, color: &RGBColor) -> TextStyle<'_> {
    TextStyle::from((FONT, size).into_font())
        .color(color)
        .pos(Pos::new(HPos::Center, VPos::Center))
}

/// A sequential white-to-blue scale (like matplotlib's "Blues"): darker means a larger share.
fn blues(fraction: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let t = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (lo, hi) = if t <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let w = (t - lo.0) / (hi.0 - lo.0);
    let mix = |i: usize| (lo.1[i] + (hi.1[i] - lo.1[i]) * w).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let kept: String = text.chars().take(max_chars - 1).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_size_grows_with_classes_and_stays_bounded() {
        assert_eq!(
            confusion_chart_size(2),
            (
                CM_AXIS_TITLE + CM_LABELS + 600 + CM_BAR,
                CM_TITLE + 600 + CM_LABELS + CM_AXIS_TITLE
            )
        );
        let (w20, _) = confusion_chart_size(20);
        let (w25, _) = confusion_chart_size(25);
        assert_eq!(w20, CM_AXIS_TITLE + CM_LABELS + 20 * 44 + CM_BAR);
        assert!(w25 <= CM_AXIS_TITLE + CM_LABELS + 1000 + CM_BAR);
        assert!(ConfusionLayout::new(20).annotated() && !ConfusionLayout::new(21).annotated());
    }

    #[test]
    fn flat_and_empty_curves_get_a_visible_range() {
        let flat = [Line {
            label: "train",
            points: vec![(1.0, 0.9)],
        }];
        let (lo, hi) = padded_y(&flat);
        assert!(lo < 0.9 && hi > 0.9);
        let tiny = [Line {
            label: "train",
            points: vec![(1.0, 1e-6), (2.0, 1e-6)],
        }];
        let (lo, hi) = padded_y(&tiny);
        assert!(lo < 1e-6 && hi > 1e-6);
        assert_eq!(
            padded_y(&[Line {
                label: "train",
                points: vec![]
            }]),
            (0.0, 1.0)
        );
    }

    #[test]
    fn legend_avoids_the_end_of_the_curves() {
        let rising = [Line {
            label: "train",
            points: vec![(1.0, 0.1), (2.0, 0.9)],
        }];
        assert!(matches!(
            legend_position(&rising, 0.0, 1.0),
            SeriesLabelPosition::LowerRight
        ));
        let falling = [Line {
            label: "train",
            points: vec![(1.0, 0.9), (2.0, 0.1)],
        }];
        assert!(matches!(
            legend_position(&falling, 0.0, 1.0),
            SeriesLabelPosition::UpperRight
        ));
    }

    #[test]
    fn blues_runs_from_near_white_to_dark_blue() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        assert_eq!(blues(f64::NAN), blues(0.0));
    }

    #[test]
    fn long_labels_are_shortened() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abcdefgh", 5), "abcd…");
    }

    #[test]
    fn epoch_ticks_are_whole_numbers_only() {
        assert_eq!(epoch_tick(&3.0), "3");
        assert_eq!(epoch_tick(&2.5), "");
    }
}
