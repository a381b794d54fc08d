//! The schedules that change the lr only at epoch ends (`constant`, `step`, `exponential`, `cosine` and
//! `reduce_on_plateau`), with torch's chainable formulas; also what `warmup` hands over to.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use super::plateau::Plateau;
use super::spec::{Mode, ScheduleSpec, ThresholdMode, non_negative, positive};
use crate::error::{Context, Error, Result};

/// A schedule that changes the lr only at epoch ends, holding the lr like torch's optimizer does.
#[derive(Debug, Clone)]
pub(super) struct PerEpoch {
    pub(super) lr: f64,
    /// torch's `last_epoch`: how many times the schedule has advanced.
    last_epoch: usize,
    rule: Rule,
}

#[derive(Debug, Clone)]
enum Rule {
    Constant,
    Step { step_size: usize, gamma: f64 },
    Exponential { gamma: f64 },
    Cosine { t_max: usize, eta_min: f64, base_lr: f64 },
    Plateau(Plateau),
}

impl PerEpoch {
    /// `epochs`: how many epochs this schedule runs for (cosine's default `t_max`); `path`: where the spec sits
    /// in the experiment file, for errors raised later (`"warmup.then."` or `""`).
    pub(super) fn new(spec: &ScheduleSpec, base_lr: f64, epochs: usize, path: &str) -> Result<Self> {
        let rule = match spec {
            ScheduleSpec::Constant => Rule::Constant,
            ScheduleSpec::Step { step_size, gamma } => {
                if *step_size == 0 {
                    return Err(Error::new("expected at least 1 epoch, found 0")
                        .at("step_size")
                        .at("step"));
                }
                Rule::Step {
                    step_size: *step_size,
                    gamma: positive("gamma", *gamma).at("step")?,
                }
            }
            ScheduleSpec::Exponential { gamma } => Rule::Exponential {
                gamma: positive("gamma", *gamma).at("exponential")?,
            },
            ScheduleSpec::Cosine { t_max, eta_min } => {
                if *t_max == Some(0) {
                    return Err(Error::new("expected at least 1 epoch, found 0")
                        .at("t_max")
                        .at("cosine"));
                }
                let eta_min = non_negative("eta_min", *eta_min).at("cosine")?;
                Rule::Cosine {
                    t_max: t_max.unwrap_or(epochs).max(1),
                    eta_min,
                    base_lr,
                }
            }
            ScheduleSpec::ReduceOnPlateau {
                monitor,
                mode,
                factor,
                patience,
                threshold,
                threshold_mode,
                cooldown,
                min_lr,
            } => {
                let plateau = (|| {
                    if monitor.trim().is_empty() {
                        return Err(
                            Error::new("expected the name of a logged value, found an empty string").at("monitor")
                        );
                    }
                    if !(factor.is_finite() && *factor > 0.0 && *factor < 1.0) {
                        return Err(Error::new(format!("expected a number in (0, 1), found {factor}")).at("factor"));
                    }
                    non_negative("threshold", *threshold)?;
                    if *threshold_mode == ThresholdMode::Rel && *threshold >= 1.0 {
                        return Err(Error::new(format!(
                            "expected a relative threshold below 1 (threshold_mode = \"rel\"), found {threshold}"
                        ))
                        .at("threshold"));
                    }
                    non_negative("min_lr", *min_lr)?;
                    Ok(Plateau {
                        monitor: monitor.clone(),
                        monitor_key: format!("{path}reduce_on_plateau.monitor"),
                        mode: *mode,
                        factor: *factor,
                        patience: *patience,
                        threshold: *threshold,
                        threshold_mode: *threshold_mode,
                        cooldown: *cooldown,
                        min_lr: *min_lr,
                        best: match mode {
                            Mode::Min => f64::INFINITY,
                            Mode::Max => f64::NEG_INFINITY,
                        },
                        num_bad_epochs: 0,
                        cooldown_counter: 0,
                    })
                })()
                .at("reduce_on_plateau")?;
                Rule::Plateau(plateau)
            }
            ScheduleSpec::Warmup { .. } | ScheduleSpec::OneCycle { .. } | ScheduleSpec::SlantedTriangular { .. } => {
                return Err(Error::new("is not a per-epoch schedule").at(spec.name()));
            }
        };
        Ok(PerEpoch {
            lr: base_lr,
            last_epoch: 0,
            rule,
        })
    }

    pub(super) fn check_logs(&self, logs: &BTreeMap<String, f64>) -> Result<()> {
        match &self.rule {
            Rule::Plateau(plateau) => plateau.monitored(logs).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// One torch `scheduler.step()` (with the monitored value for the plateau schedule).
    pub(super) fn advance(&mut self, logs: &BTreeMap<String, f64>) -> Result<()> {
        let lr = self.lr;
        let e = self.last_epoch + 1;
        self.lr = match &mut self.rule {
            Rule::Constant => lr,
            Rule::Step { step_size, gamma } => {
                if e.is_multiple_of(*step_size) {
                    lr * *gamma
                } else {
                    lr
                }
            }
            Rule::Exponential { gamma } => lr * *gamma,
            Rule::Cosine {
                t_max,
                eta_min,
                base_lr,
            } => cosine_next(lr, *base_lr, e, *t_max, *eta_min),
            Rule::Plateau(plateau) => {
                let current = plateau.monitored(logs)?;
                plateau.step(current, lr)
            }
        };
        self.last_epoch = e;
        Ok(())
    }
}

/// torch `CosineAnnealingLR.get_lr` (chainable form) for `last_epoch >= 1`, given the previous lr.
fn cosine_next(lr: f64, base_lr: f64, last_epoch: usize, t_max: usize, eta_min: f64) -> f64 {
    let (e, t) = (last_epoch as i64, t_max as i64);
    let (ef, tf) = (e as f64, t as f64);
    // Python's `%` is the Euclidean remainder for a positive divisor.
    if (e - 1 - t).rem_euclid(2 * t) == 0 {
        lr + (base_lr - eta_min) * (1.0 - (PI / tf).cos()) / 2.0
    } else {
        (1.0 + (PI * ef / tf).cos()) / (1.0 + (PI * (ef - 1.0) / tf).cos()) * (lr - eta_min) + eta_min
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::schedule::tests::{BASE_LR, assert_close, epoch_lrs};

    const STEP_LR: [f64; 10] = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125];
    const EXPONENTIAL_LR: [f64; 10] = [
        0.1,
        0.09000000000000001,
        0.08100000000000002,
        0.07290000000000002,
        0.06561000000000002,
        0.05904900000000002,
        0.05314410000000002,
        0.04782969000000002,
        0.043046721000000024,
        0.03874204890000002,
    ];
    const COSINE_LR: [f64; 10] = [
        0.1,
        0.09757729755661011,
        0.0905463412215599,
        0.07959536998847742,
        0.0657963412215599,
        0.0505,
        0.03520365877844011,
        0.02140463001152259,
        0.010453658778440109,
        0.0034227024433899004,
    ];
    const COSINE_SHORT_LR: [f64; 10] = [
        0.1,
        0.08564823227814083,
        0.051000000000000004,
        0.016351767721859173,
        0.002,
        0.01635176772185917,
        0.05100000000000001,
        0.08564823227814086,
        0.10000000000000005,
        0.08564823227814088,
    ];

    #[test]
    fn step_matches_torch_step_lr() {
        let spec = ScheduleSpec::Step {
            step_size: 3,
            gamma: 0.5,
        };
        assert_close(&epoch_lrs(&spec, 10), &STEP_LR, "StepLR");
    }

    #[test]
    fn exponential_matches_torch_exponential_lr() {
        let spec = ScheduleSpec::Exponential { gamma: 0.9 };
        assert_close(&epoch_lrs(&spec, 10), &EXPONENTIAL_LR, "ExponentialLR");
    }

    #[test]
    fn cosine_matches_torch_cosine_annealing_lr_with_t_max_defaulting_to_epochs() {
        let spec = ScheduleSpec::Cosine {
            t_max: None,
            eta_min: 0.001,
        };
        assert_close(&epoch_lrs(&spec, 10), &COSINE_LR, "CosineAnnealingLR");
        let explicit = ScheduleSpec::Cosine {
            t_max: Some(10),
            eta_min: 0.001,
        };
        assert_close(&epoch_lrs(&explicit, 10), &COSINE_LR, "CosineAnnealingLR, t_max = 10");
    }

    #[test]
    fn cosine_past_t_max_goes_back_up_like_torch() {
        let spec = ScheduleSpec::Cosine {
            t_max: Some(4),
            eta_min: 0.002,
        };
        assert_close(&epoch_lrs(&spec, 10), &COSINE_SHORT_LR, "CosineAnnealingLR, t_max = 4");
    }

    #[test]
    fn constant_keeps_the_optimizer_lr() {
        assert_eq!(epoch_lrs(&ScheduleSpec::Constant, 4), vec![BASE_LR; 4]);
    }
}
