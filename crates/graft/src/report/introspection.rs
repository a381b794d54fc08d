//! Charts that look inside a trained network: every layer's weights, gradients and activations over the epochs; a
//! 2-D projection of one layer's outputs coloured by class; and the attention maps of a BERT encoder for a few
//! inputs.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Chart;
use super::charts::{FONT, Line, PALETTE, frame, line_chart, plot_error, render_png, styled_mesh};
use super::fmt_number;
use crate::error::Result;

/// One layer's numbers at one epoch's end.
pub struct LayerEpoch<'a> {
    pub layer: &'a str,
    pub weight_norm: Option<f64>,
    /// ‖∇W‖/‖W‖.
    pub grad_ratio: Option<f64>,
    pub output_std: f64,
}

/// Which number of a layer a chart shows.
type Pick = dyn Fn(&LayerEpoch) -> Option<f64>;

/// `layer_weights.png`, `layer_gradients.png` and `layer_activations.png`: a line per layer over the epochs.
/// `epochs` holds each epoch's number and its layers.
pub fn layer_stats_charts(dir: &Path, epochs: &[(usize, Vec<LayerEpoch>)]) -> Result<Vec<Chart>> {
    let Some((_, first)) = epochs.first() else {
        return Ok(vec![]);
    };
    let span = (
        epochs.first().map_or(1, |e| e.0) as f64,
        epochs.last().map_or(1, |e| e.0).max(2) as f64,
    );
    let lines = |pick: &Pick| -> Vec<Line<'_>> {
        first
            .iter()
            .enumerate()
            .filter(|(i, _)| epochs.iter().any(|(_, ls)| ls.get(*i).and_then(pick).is_some()))
            .map(|(i, l)| Line {
                label: l.layer,
                points: epochs
                    .iter()
                    .filter_map(|(e, ls)| {
                        ls.get(i)
                            .and_then(pick)
                            .filter(|v| v.is_finite())
                            .map(|v| (*e as f64, v))
                    })
                    .collect(),
            })
            .collect()
    };
    let mut charts = vec![];
    let specs: [(&str, &str, &str, &Pick); 3] = [
        ("layer_weights.png", "Weight norm per layer", "‖W‖", &|l| {
            l.weight_norm
        }),
        (
            "layer_gradients.png",
            "Gradient size per layer",
            "log10 ‖∇W‖/‖W‖",
            &|l| l.grad_ratio.filter(|r| *r > 0.0).map(f64::log10),
        ),
        (
            "layer_activations.png",
            "Activation spread per layer",
            "output std",
            &|l| Some(l.output_std),
        ),
    ];
    for (file, title, y, pick) in specs {
        let drawn = lines(pick);
        if drawn.is_empty() {
            continue;
        }
        line_chart(&dir.join(file), title, y, span, &drawn)?;
        charts.push(Chart {
            file: file.into(),
            caption: format!("{title} at each epoch's end, on a fixed batch of training rows"),
        });
    }
    Ok(charts)
}

/// A scatter of 2-D points coloured by class (`labels[i]` indexes `classes`), with a legend.
pub fn projection_chart(
    path: &Path,
    title: &str,
    points: &[(f32, f32)],
    labels: &[usize],
    classes: &[String],
) -> Result<()> {
    render_png(path, (800, 700), |root| {
        draw_projection(root, title, points, labels, classes).map_err(plot_error(path))
    })
}

fn draw_projection<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[(f32, f32)],
    labels: &[usize],
    classes: &[String],
) -> super::charts::Drawn<DB> {
    root.fill(&WHITE)?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x as f64);
        x1 = x1.max(x as f64);
        y0 = y0.min(y as f64);
        y1 = y1.max(y as f64);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (px, py) = (((x1 - x0) * 0.05).max(1e-6), ((y1 - y0) * 0.05).max(1e-6));
    let mut chart = frame(root, title, (x0 - px)..(x1 + px), (y0 - py)..(y1 + py))?;
    styled_mesh(&mut chart, "component 1", "component 2")
        .x_label_formatter(&|v| fmt_number(*v))
        .y_label_formatter(&|v| fmt_number(*v))
        .draw()?;
    let k = classes.len().max(labels.iter().max().map_or(1, |m| m + 1));
    for class in 0..k {
        let colour = PALETTE[class % PALETTE.len()];
        let series = chart.draw_series(
            points
                .iter()
                .zip(labels)
                .filter(|(_, l)| **l == class)
                .map(|(&(x, y), _)| Circle::new((x as f64, y as f64), 3, colour.mix(0.75).filled())),
        )?;
        let name = classes.get(class).cloned().unwrap_or_else(|| class.to_string());
        series
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 14.0))
        .draw()
}

/// The attention of one input: a heat map per layer (averaged over its heads), query tokens down, key tokens across.
/// `maps` are each panel's title and `tokens.len()²` weights, row by row.
pub fn attention_chart(path: &Path, title: &str, tokens: &[String], maps: &[(String, Vec<f32>)]) -> Result<()> {
    let layers = maps.len().max(1);
    let cols = layers.min(3);
    let rows = layers.div_ceil(cols);
    let size = (cols as u32 * 420, rows as u32 * 420 + 40);
    render_png(path, size, |root| {
        draw_attention(root, title, tokens, maps, cols).map_err(plot_error(path))
    })
}

fn draw_attention<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    tokens: &[String],
    maps: &[(String, Vec<f32>)],
    cols: usize,
) -> super::charts::Drawn<DB> {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(40);
    header.draw_text(
        title,
        &TextStyle::from((FONT, 20.0)).pos(Pos::new(HPos::Left, VPos::Top)),
        (12, 10),
    )?;
    let rows = maps.len().div_ceil(cols.max(1)).max(1);
    let panels = body.split_evenly((rows, cols.max(1)));
    let t = tokens.len().max(1);
    // Token labels only where they are legible.
    let labelled = t <= 24;
    for (panel, (name, map)) in panels.iter().zip(maps) {
        let margin = if labelled { 70 } else { 24 };
        let (w, h) = panel.dim_in_pixel();
        let side = (w.min(h) as i32 - margin - 24).max(10);
        let cell = side as f64 / t as f64;
        panel.draw_text(
            name,
            &TextStyle::from((FONT, 15.0)).pos(Pos::new(HPos::Left, VPos::Top)),
            (margin, 4),
        )?;
        let top = 24;
        let max = map.iter().copied().fold(0f32, f32::max).max(1e-9);
        for q in 0..t {
            for k in 0..t {
                let v = map.get(q * t + k).copied().unwrap_or(0.0) / max;
                let shade = (255.0 * (1.0 - v as f64)).clamp(0.0, 255.0) as u8;
                let x0 = margin + (k as f64 * cell) as i32;
                let y0 = top + (q as f64 * cell) as i32;
                let x1 = margin + ((k + 1) as f64 * cell).ceil() as i32;
                let y1 = top + ((q + 1) as f64 * cell).ceil() as i32;
                panel.draw(&Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    RGBColor(shade, shade, 255).filled(),
                ))?;
            }
        }
        if labelled {
            for (i, token) in tokens.iter().enumerate() {
                let short: String = token.chars().take(9).collect();
                let y = top + ((i as f64 + 0.5) * cell) as i32;
                panel.draw_text(
                    &short,
                    &TextStyle::from((FONT, 10.0)).pos(Pos::new(HPos::Right, VPos::Center)),
                    (margin - 4, y),
                )?;
                let x = margin + ((i as f64 + 0.5) * cell) as i32;
                panel.draw_text(
                    &short,
                    &TextStyle::from((FONT, 10.0))
                        .pos(Pos::new(HPos::Left, VPos::Center))
                        .transform(FontTransform::Rotate90),
                    (x, top + side + 4),
                )?;
            }
        }
    }
    Ok(())
}
