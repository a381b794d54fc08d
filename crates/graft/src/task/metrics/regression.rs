//! Regression: an accumulator of running sums (Welford's update for the target variance, so memory stays flat
//! over the epoch) and the MSE, MAE, RMSE and R² computed from them.

use serde_json::{Map, Value};

use super::{json_f64, mean, ratio};

/// Accumulates a regression model's outputs (any number of output columns, row-major) over an epoch.
///
/// Only running sums are kept (Welford's update for the target variance), so memory does not grow with the epoch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RegressionAccumulator {
    num_outputs: usize,
    rows: usize,
    /// Per output: running mean of the target, sum of squared deviations from it, sum of squared errors, sum of
    /// absolute errors.
    target_mean: Vec<f64>,
    target_m2: Vec<f64>,
    squared_error: Vec<f64>,
    absolute_error: Vec<f64>,
}

impl RegressionAccumulator {
    /// # Panics
    /// If `num_outputs` is 0.
    pub fn new(num_outputs: usize) -> Self {
        assert!(num_outputs > 0, "a regression model needs at least one output");
        RegressionAccumulator {
            num_outputs,
            rows: 0,
            target_mean: vec![0.0; num_outputs],
            target_m2: vec![0.0; num_outputs],
            squared_error: vec![0.0; num_outputs],
            absolute_error: vec![0.0; num_outputs],
        }
    }

    /// Adds one batch: `predictions` and `targets` are both row-major `[batch, num_outputs]`.
    ///
    /// # Panics
    /// If the two lengths differ or are not a multiple of `num_outputs`.
    pub fn update(&mut self, predictions: &[f32], targets: &[f32]) {
        assert_eq!(
            predictions.len(),
            targets.len(),
            "predictions and targets differ in length"
        );
        assert_eq!(
            targets.len() % self.num_outputs,
            0,
            "{} values do not make rows of {} outputs",
            targets.len(),
            self.num_outputs
        );
        for (pred_row, target_row) in predictions
            .chunks_exact(self.num_outputs)
            .zip(targets.chunks_exact(self.num_outputs))
        {
            self.rows += 1;
            let n = self.rows as f64;
            for (j, (&p, &t)) in pred_row.iter().zip(target_row).enumerate() {
                let (p, t) = (f64::from(p), f64::from(t));
                let delta = t - self.target_mean[j];
                self.target_mean[j] += delta / n;
                self.target_m2[j] += delta * (t - self.target_mean[j]);
                self.squared_error[j] += (t - p) * (t - p);
                self.absolute_error[j] += (t - p).abs();
            }
        }
    }

    /// Number of rows accumulated so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Computes the metrics over all rows seen; all 0.0 when empty.
    pub fn compute(&self) -> RegressionMetrics {
        let cells = (self.rows * self.num_outputs) as f64;
        let r2_per_output: Vec<f64> = self
            .squared_error
            .iter()
            .zip(&self.target_m2)
            .map(|(&ss_res, &ss_tot)| {
                // scikit-learn's force_finite: a constant target scores 1 if predicted exactly, else 0.
                if ss_tot != 0.0 {
                    1.0 - ss_res / ss_tot
                } else if ss_res == 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let mse = ratio(self.squared_error.iter().sum(), cells);
        RegressionMetrics {
            mse,
            mae: ratio(self.absolute_error.iter().sum(), cells),
            rmse: mse.sqrt(),
            // scikit-learn returns NaN below two samples; 0.0 keeps the JSON numeric.
            r2: if self.rows < 2 { 0.0 } else { mean(&r2_per_output) },
        }
    }
}

/// Regression metrics over one epoch, averaged uniformly over the output columns.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionMetrics {
    /// Mean squared error: `mean_squared_error(multioutput="uniform_average")`.
    pub mse: f64,
    /// Mean absolute error: `mean_absolute_error(multioutput="uniform_average")`.
    pub mae: f64,
    /// Root mean squared error, `sqrt(mse)`, in the target's own unit.
    pub rmse: f64,
    /// Coefficient of determination `1 - SS_res / SS_tot` per output, then the mean:
    /// `r2_score(multioutput="uniform_average")` (with its `force_finite=True`). 0.0 with fewer than two rows.
    pub r2: f64,
}

impl RegressionMetrics {
    /// JSON object with the keys `mse`, `mae`, `rmse` and `r2`; non-finite numbers become null.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("mse".into(), json_f64(self.mse));
        m.insert("mae".into(), json_f64(self.mae));
        m.insert("rmse".into(), json_f64(self.rmse));
        m.insert("r2".into(), json_f64(self.r2));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::metrics::tests::{close, f32s};

    const PRED_REG: [[f64; 2]; 6] = [
        [1.0, -2.0],
        [2.5, 0.5],
        [0.3, 1.2],
        [4.0, 3.0],
        [-1.0, 0.0],
        [2.2, -0.7],
    ];
    const TARGET_REG: [[f64; 2]; 6] = [
        [1.5, -1.0],
        [2.0, 0.0],
        [0.0, 1.0],
        [3.5, 2.5],
        [-0.5, 0.25],
        [2.0, -1.5],
    ];
    const TARGET_REG_CONST: [[f64; 2]; 6] = [[1.5, 2.0], [2.0, 2.0], [0.0, 2.0], [3.5, 2.0], [-0.5, 2.0], [2.0, 2.0]];

    #[test]
    fn regression_with_two_outputs_matches_sklearn() {
        let mut acc = RegressionAccumulator::new(2);
        let (pred, target) = (f32s(&PRED_REG), f32s(&TARGET_REG));
        // Uneven batches: the running sums must not care.
        acc.update(&pred[..2], &target[..2]);
        acc.update(&pred[2..8], &target[2..8]);
        acc.update(&pred[8..], &target[8..]);
        assert_eq!(acc.len(), 6);
        let m = acc.compute();
        close(m.mse, 0.2810416720310851, "mean_squared_error");
        close(m.mae, 0.47916667660077417, "mean_absolute_error");
        close(m.r2, 0.8384001417072946, "r2_score(multioutput='uniform_average')");
    }

    #[test]
    fn a_constant_target_scores_r2_zero_like_sklearn_force_finite() {
        let mut acc = RegressionAccumulator::new(2);
        acc.update(&f32s(&PRED_REG), &f32s(&TARGET_REG_CONST));
        let m = acc.compute();
        close(m.mse, 2.6924999904632574, "mean_squared_error");
        close(m.mae, 1.2083333333333333, "mean_absolute_error");
        close(m.r2, 0.44723735286104066, "r2_score(multioutput='uniform_average')");

        let mut exact = RegressionAccumulator::new(1);
        exact.update(&[3.0, 3.0], &[3.0, 3.0]);
        close(exact.compute().r2, 1.0, "constant target predicted exactly");
        let mut single = RegressionAccumulator::new(1);
        single.update(&[1.0], &[2.0]);
        assert_eq!(
            single.compute(),
            RegressionMetrics {
                mse: 1.0,
                mae: 1.0,
                rmse: 1.0,
                r2: 0.0
            }
        );
    }
}
