//! The charts a regression run is judged by: predicted against actual values on the test set (points on the
//! diagonal are exact), and the residuals against the prediction (a pattern there is what the model missed).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::charts::{Drawn, FONT, LINE_CHART_SIZE, PALETTE, frame, plot_error, render_png, styled_mesh};
use super::fmt_number;
use crate::error::Result;

/// The test set's predictions and targets, row-major in the target's own unit (several outputs are pooled).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegressionPoints {
    pub predicted: Vec<f64>,
    pub actual: Vec<f64>,
}

/// `(lo, hi)` of `values` with 5% of the span added on each side (a constant gets ±1).
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    (lo - pad, hi + pad)
}

pub(super) fn predicted_vs_actual_chart(path: &Path, points: &RegressionPoints) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_predicted_vs_actual(root, points).map_err(plot_error(path))
    })
}

pub(super) fn residual_chart(path: &Path, points: &RegressionPoints) -> Result<()> {
    render_png(path, LINE_CHART_SIZE, |root| {
        draw_residuals(root, points).map_err(plot_error(path))
    })
}

fn draw_predicted_vs_actual<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, points: &RegressionPoints) -> Drawn<DB> {
    // One range for both axes, so the diagonal is at 45°.
    let (lo, hi) = padded(points.predicted.iter().chain(&points.actual).copied());
    let mut chart = frame(root, "predicted vs actual (test set)", lo..hi, lo..hi)?;
    styled_mesh(&mut chart, "actual", "predicted")
        .x_label_formatter(&|v| fmt_number(*v))
        .y_label_formatter(&|v| fmt_number(*v))
        .draw()?;
    chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.4).stroke_width(1)))?;
    let color = PALETTE[0];
    chart.draw_series(
        points
            .actual
            .iter()
            .zip(&points.predicted)
            .map(|(&a, &p)| Circle::new((a, p), 3, color.mix(0.6).filled())),
    )?;
    Ok(())
}

fn draw_residuals<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, points: &RegressionPoints) -> Drawn<DB> {
    let residuals: Vec<(f64, f64)> = points
        .predicted
        .iter()
        .zip(&points.actual)
        .map(|(&p, &a)| (p, a - p))
        .collect();
    let (x0, x1) = padded(residuals.iter().map(|r| r.0));
    let bound = residuals
        .iter()
        .map(|r| r.1.abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y = if bound > 0.0 { bound * 1.05 } else { 1.0 };
    let mut chart = frame(root, "residuals (actual − predicted, test set)", x0..x1, -y..y)?;
    styled_mesh(&mut chart, "predicted", "residual")
        .x_label_formatter(&|v| fmt_number(*v))
        .y_label_formatter(&|v| fmt_number(*v))
        .draw()?;
    chart.draw_series(LineSeries::new([(x0, 0.0), (x1, 0.0)], BLACK.mix(0.4).stroke_width(1)))?;
    let color = PALETTE[1];
    chart.draw_series(residuals.iter().map(|&r| Circle::new(r, 3, color.mix(0.6).filled())))?;
    let grey = BLACK.mix(0.6);
    let style = TextStyle::from((FONT, 14.0).into_font()).color(&grey);
    root.draw_text(&format!("{} points", residuals.len()), &style, (90, 40))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_keeps_every_point_inside_and_survives_constants() {
        assert_eq!(padded([0.0, 10.0].into_iter()), (-0.5, 10.5));
        assert_eq!(padded([3.0, 3.0].into_iter()), (2.0, 4.0));
        assert_eq!(padded([f64::NAN].into_iter()), (-1.0, 1.0));
    }
}
