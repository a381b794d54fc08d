//! The learning-rate range test (Smith 2017, "Cyclical Learning Rates"; fastai's `lr_find`): train from the
//! initial weights while the learning rate rises exponentially from tiny to huge, one batch per rate, and read the
//! loss against the rate. Where the loss falls fastest the rate is useful; where it turns up again it is too high.
//! Works on any [`TrainStep`], so a GAN or a custom step can be tested the same way.

use std::time::Instant;

use serde::Serialize;

use crate::data::{Batches, Dataset, gather_for_training};
use crate::error::{Error, Result};
use crate::train::step::TrainStep;

/// How the range test sweeps: fastai's defaults (1e-7 to 10 in 100 batches, stop when the smoothed loss passes four
/// times its minimum).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrFinderConfig {
    pub start_lr: f64,
    pub end_lr: f64,
    pub steps: usize,
    /// Weight of the running average of the loss (bias-corrected, as Adam's moments) that decides when the sweep
    /// has diverged.
    pub smoothing: f64,
    /// Stop once the smoothed loss exceeds this multiple of the lowest smoothed loss seen.
    pub divergence: f64,
    pub batch_size: usize,
}

impl Default for LrFinderConfig {
    fn default() -> Self {
        LrFinderConfig {
            start_lr: 1e-7,
            end_lr: 10.0,
            steps: 100,
            smoothing: 0.98,
            divergence: 4.0,
            batch_size: 32,
        }
    }
}

impl LrFinderConfig {
    pub fn check(&self) -> Result<()> {
        if !(self.start_lr > 0.0 && self.end_lr > self.start_lr && self.end_lr.is_finite()) {
            return Err(Error::new(format!(
                "the learning rates to sweep must satisfy 0 < start < end, found {} to {}",
                self.start_lr, self.end_lr
            )));
        }
        if self.steps < 5 || self.batch_size == 0 {
            return Err(Error::new(format!(
                "the range test needs at least 5 steps and a batch of at least 1, found {} steps of {}",
                self.steps, self.batch_size
            )));
        }
        Ok(())
    }

    /// The rate of step `i` (from 0).
    fn lr(&self, i: usize) -> f64 {
        let t = i as f64 / (self.steps - 1) as f64;
        self.start_lr * (self.end_lr / self.start_lr).powf(t)
    }
}

/// One step of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LrPoint {
    pub lr: f64,
    pub loss: f64,
    /// The mean loss of the steps around this one ([`READING_WINDOW`] each side): a centred average, so the curve
    /// read afterwards does not lag behind the rate as the running average that stops the sweep does.
    pub smoothed: f64,
}

/// Steps on each side of a point in its centred average.
pub const READING_WINDOW: usize = 5;

/// What the sweep measured and what it suggests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrFinding {
    pub points: Vec<LrPoint>,
    /// The rate at the lowest smoothed loss.
    pub lr_at_minimum: Option<f64>,
    /// The rate where the smoothed loss falls fastest (per unit of log rate) before its minimum.
    pub steepest: Option<f64>,
    /// What to train with: a tenth of the rate at the minimum (Smith; fastai 1), not above the rate where the loss
    /// still fell steepest times ten.
    pub suggested: Option<f64>,
    /// Why the sweep ended: "completed", "diverged" (the loss passed the divergence bound or became NaN), or "time".
    pub ended: &'static str,
}

/// Runs the sweep on `step` (which it trains: hand it a fresh copy of the model) over shuffled batches of `train`,
/// until the schedule ends, the loss diverges, or `deadline` passes.
pub fn lr_range_test(
    step: &mut dyn TrainStep,
    train: &Dataset,
    config: &LrFinderConfig,
    seed: u64,
    deadline: Option<Instant>,
) -> Result<LrFinding> {
    config.check()?;
    if train.is_empty() {
        return Err(Error::new("the range test needs training rows; the data set is empty"));
    }
    let batch_size = config.batch_size.min(train.len());
    step.begin_epoch(1)?;
    let mut points: Vec<LrPoint> = Vec::with_capacity(config.steps);
    let mut average = 0.0;
    let mut best = f64::INFINITY;
    let mut epoch = 1;
    let mut batches = Batches::new(train.len(), batch_size, true, seed, epoch)?;
    let mut ended = "completed";
    for i in 0..config.steps {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            ended = "time";
            break;
        }
        let rows = match batches.next() {
            Some(rows) if rows.len() == batch_size => rows,
            // A short last batch would be a noisier step; start the next pass instead.
            _ => {
                epoch += 1;
                batches = Batches::new(train.len(), batch_size, true, seed, epoch)?;
                batches.next().unwrap_or_default()
            }
        };
        let batch = gather_for_training(train, &rows, seed, epoch)?;
        let lr = config.lr(i);
        // The step refuses a non-finite loss: that is divergence, the sweep's natural end.
        let loss = match step.train_batch(&batch, lr) {
            Ok(l) if l.is_finite() => l,
            Ok(_) | Err(_) if !points.is_empty() => {
                ended = "diverged";
                break;
            }
            Ok(l) => return Err(Error::new(format!("the loss of the first batch is {l}"))),
            Err(e) => return Err(e),
        };
        average = config.smoothing * average + (1.0 - config.smoothing) * loss;
        let running = average / (1.0 - config.smoothing.powi(i as i32 + 1));
        points.push(LrPoint {
            lr,
            loss,
            smoothed: running,
        });
        best = best.min(running);
        if i > 0 && running > config.divergence * best {
            ended = "diverged";
            break;
        }
    }
    Ok(suggest(points, ended))
}

/// The reading of a finished sweep: each point's centred average, the minimum, the steepest fall before it, and
/// the suggestion.
pub fn suggest(mut points: Vec<LrPoint>, ended: &'static str) -> LrFinding {
    let losses: Vec<f64> = points.iter().map(|p| p.loss).collect();
    for (i, p) in points.iter_mut().enumerate() {
        let window = &losses[i.saturating_sub(READING_WINDOW)..(i + READING_WINDOW + 1).min(losses.len())];
        p.smoothed = window.iter().sum::<f64>() / window.len() as f64;
    }
    let minimum = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.smoothed.is_finite())
        .min_by(|a, b| a.1.smoothed.total_cmp(&b.1.smoothed))
        .map(|(i, _)| i);
    // The first tenth of the sweep is left out of the slopes (as fastai's plot skips its start): there the rate
    // is too small to move the loss, and the running average is still settling, so its slope is noise.
    let skip = points.len() / 10;
    let steepest = minimum.and_then(|m| {
        // Slope of the smoothed loss per unit of ln(lr), by central differences over two steps each side, inside
        // [skip, m].
        (skip.max(2)..m.saturating_sub(1))
            .filter(|&i| i + 2 < points.len())
            .map(|i| {
                let (a, b) = (&points[i - 2], &points[i + 2]);
                (i, (b.smoothed - a.smoothed) / (b.lr.ln() - a.lr.ln()))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|(_, slope)| *slope < 0.0)
            .map(|(i, _)| points[i].lr)
    });
    let lr_at_minimum = minimum.map(|m| points[m].lr);
    let suggested = match (lr_at_minimum, steepest) {
        (Some(min), Some(steep)) => Some((min / 10.0).min(steep * 10.0)),
        (Some(min), None) => Some(min / 10.0),
        _ => None,
    };
    LrFinding {
        points,
        lr_at_minimum,
        steepest,
        suggested,
        ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loss curve with a flat start, a fall centred on 1e-3 and a blow-up after 1e-1.
    fn curve(config: &LrFinderConfig) -> Vec<LrPoint> {
        (0..config.steps)
            .map(|i| {
                let lr = config.lr(i);
                let x = lr.log10();
                let fall = 1.0 / (1.0 + (-(x + 3.0) * 3.0).exp());
                let loss = 2.3 - 2.0 * fall + if x > -1.0 { 10.0 * (x + 1.0).powi(2) } else { 0.0 };
                LrPoint {
                    lr,
                    loss,
                    smoothed: loss,
                }
            })
            .collect()
    }

    #[test]
    fn the_sweep_is_exponential_from_start_to_end() {
        let c = LrFinderConfig::default();
        assert!((c.lr(0) - 1e-7).abs() < 1e-20);
        assert!((c.lr(99) - 10.0).abs() < 1e-9);
        // Equal ratios between steps.
        let r1 = c.lr(1) / c.lr(0);
        let r2 = c.lr(51) / c.lr(50);
        assert!((r1 - r2).abs() < 1e-9);
    }

    #[test]
    fn the_steepest_fall_and_the_minimum_are_read_from_the_curve() {
        let c = LrFinderConfig::default();
        let f = suggest(curve(&c), "completed");
        let steep = f.steepest.unwrap();
        assert!((steep.log10() + 3.0).abs() < 0.1, "steepest at {steep}");
        let min = f.lr_at_minimum.unwrap();
        assert!(min.log10() > -1.5 && min.log10() <= -0.9, "minimum at {min}");
        // A tenth of the minimum's rate, capped at ten times the steepest.
        let s = f.suggested.unwrap();
        assert!((s - (min / 10.0).min(steep * 10.0)).abs() < 1e-12);
        assert!(s > steep && s < min);
    }

    #[test]
    fn a_curve_that_only_rises_has_no_steepest_fall() {
        let points: Vec<LrPoint> = (0..10)
            .map(|i| LrPoint {
                lr: 10f64.powi(i - 7),
                loss: 1.0 + i as f64,
                smoothed: 1.0 + i as f64,
            })
            .collect();
        let f = suggest(points, "diverged");
        assert_eq!(f.steepest, None);
        assert_eq!(f.lr_at_minimum, Some(1e-7));
        assert!((f.suggested.unwrap() - 1e-8).abs() < 1e-20);
    }

    #[test]
    fn bad_sweeps_are_refused() {
        let bad = LrFinderConfig {
            start_lr: 1.0,
            end_lr: 0.1,
            ..LrFinderConfig::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("0 < start < end"));
    }
}
