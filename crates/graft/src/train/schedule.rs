//! Learning-rate schedules, configured in the experiment file (`[train] schedule = { cosine = { t_max = 30 } }`)
//! and run by a [`Scheduler`] that the training loop asks for each optimizer step's learning rate.
//!
//! Every schedule gives the learning rates PyTorch's scheduler of the same name gives:
//!
//! * Per-epoch schedules (`step`, `exponential`, `cosine`): the lr of epoch `e` (0-based) is the optimizer's lr
//!   after `e` calls of torch's `scheduler.step()`, computed with torch's chainable (recursive) formulas in the
//!   same operation order, and constant within the epoch.
//! * `warmup`: linear warm-up over optimizer steps, torch's `LinearLR(start_factor, end_factor=1,
//!   total_iters=warmup_steps)` stepped once per batch (its closed form, so `start_factor = 0` works, which torch's
//!   `LinearLR` refuses), then the `then` schedule (default: constant), whose epochs count from the end of the
//!   warm-up: the epoch in which the warm-up ends is `then`'s first epoch when at least one of its steps comes after
//!   the warm-up, and `cosine`'s default `t_max` is the number of such epochs. `then` must be a per-epoch schedule
//!   or `reduce_on_plateau`.
//! * `one_cycle`: torch's `OneCycleLR` over `epochs × steps_per_epoch` optimizer steps (learning rate only, no
//!   momentum cycling). It sets the learning rate itself: it starts at `max_lr / div_factor` whatever the
//!   optimizer's lr is (as in torch, where `OneCycleLR` overwrites the optimizer's lr). Steps past the end keep the
//!   final lr (torch raises instead).
//! * `reduce_on_plateau`: torch's `ReduceLROnPlateau`, acting at the end of each epoch on a logged value (with
//!   torch's `eps = 1e-8`: a reduction smaller than that is skipped).

use std::collections::BTreeMap;
use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate schedule as written in the experiment file, externally tagged: `"constant"`,
/// `{ step = { step_size = 30 } }`, `{ warmup = { warmup_steps = 500, then = { cosine = {} } } }`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// The optimizer's lr throughout.
    #[default]
    Constant,
    /// torch `StepLR`: multiply by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        #[serde(default = "default_step_gamma")]
        gamma: f64,
    },
    /// torch `ExponentialLR`: multiply by `gamma` every epoch.
    Exponential { gamma: f64 },
    /// torch `CosineAnnealingLR`, per epoch, from the optimizer's lr down to `eta_min` over `t_max` epochs
    /// (default: the run's epochs; after a warm-up, the epochs left after it).
    Cosine {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        t_max: Option<usize>,
        #[serde(default)]
        eta_min: f64,
    },
    /// Linear warm-up over `warmup_steps` optimizer steps from `start_factor × lr` to `lr`, then `then`
    /// (default: constant), counted from the end of the warm-up.
    Warmup {
        warmup_steps: usize,
        #[serde(default)]
        start_factor: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        then: Option<Box<ScheduleSpec>>,
    },
    /// torch `OneCycleLR`, per optimizer step. Overrides the optimizer's lr: starts at `max_lr / div_factor`,
    /// rises to `max_lr`, ends at `max_lr / div_factor / final_div_factor`.
    OneCycle {
        max_lr: f64,
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
        #[serde(default)]
        anneal: Anneal,
        #[serde(default)]
        three_phase: bool,
    },
    /// ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, eq. 3), per optimizer step: a short linear
    /// rise from `lr / ratio` to the optimizer's lr over the first `cut_frac` of the steps, then a long linear decay
    /// back to `lr / ratio`.
    SlantedTriangular {
        #[serde(default = "default_cut_frac")]
        cut_frac: f64,
        #[serde(default = "default_ratio")]
        ratio: f64,
    },
    /// torch `ReduceLROnPlateau` on the logged value `monitor`, checked at the end of each epoch.
    ReduceOnPlateau {
        #[serde(default = "default_monitor")]
        monitor: String,
        #[serde(default)]
        mode: Mode,
        #[serde(default = "default_plateau_factor")]
        factor: f64,
        #[serde(default = "default_patience")]
        patience: usize,
        #[serde(default = "default_threshold")]
        threshold: f64,
        #[serde(default)]
        threshold_mode: ThresholdMode,
        #[serde(default)]
        cooldown: usize,
        #[serde(default)]
        min_lr: f64,
    },
}

fn default_cut_frac() -> f64 {
    0.1
}
fn default_ratio() -> f64 {
    32.0
}
fn default_step_gamma() -> f64 {
    0.1
}
fn default_pct_start() -> f64 {
    0.3
}
fn default_div_factor() -> f64 {
    25.0
}
fn default_final_div_factor() -> f64 {
    1e4
}
fn default_monitor() -> String {
    "val_loss".to_string()
}
fn default_plateau_factor() -> f64 {
    0.1
}
fn default_patience() -> usize {
    10
}
fn default_threshold() -> f64 {
    1e-4
}

/// Whether the monitored value should go down (`min`, a loss) or up (`max`, an accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Min,
    Max,
}

/// How one-cycle moves between its phase end points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    #[default]
    Cos,
    Linear,
}

/// Whether `threshold` is relative to the best value (`rel`) or an absolute amount (`abs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    #[default]
    Rel,
    Abs,
}

impl ScheduleSpec {
    /// The variant's key in the experiment file (`"one_cycle"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ScheduleSpec::Constant => "constant",
            ScheduleSpec::Step { .. } => "step",
            ScheduleSpec::Exponential { .. } => "exponential",
            ScheduleSpec::Cosine { .. } => "cosine",
            ScheduleSpec::Warmup { .. } => "warmup",
            ScheduleSpec::OneCycle { .. } => "one_cycle",
            ScheduleSpec::SlantedTriangular { .. } => "slanted_triangular",
            ScheduleSpec::ReduceOnPlateau { .. } => "reduce_on_plateau",
        }
    }
}

/// torch's `ReduceLROnPlateau` default `eps`: reductions smaller than this are skipped.
const PLATEAU_EPS: f64 = 1e-8;

/// Runtime state of a schedule for one training run.
#[derive(Debug, Clone)]
pub struct Scheduler {
    plan: Plan,
    /// Optimizer steps handed out so far (calls of `next_step_lr`).
    steps_done: usize,
    /// Epochs ended so far (calls of `end_epoch`).
    epochs_done: usize,
}

#[derive(Debug, Clone)]
enum Plan {
    PerEpoch(PerEpoch),
    OneCycle(OneCycle),
    Warmup(Warmup),
    Slanted(Slanted),
}

#[derive(Debug, Clone)]
struct Slanted {
    total_steps: usize,
    cut_frac: f64,
    ratio: f64,
    max_lr: f64,
}

impl Slanted {
    /// ULMFiT's η_t = η_max (1 + p (ratio − 1)) / ratio, p rising to 1 at step ⌊T·cut_frac⌋ and falling after it.
    fn lr_at(&self, step: usize) -> f64 {
        let t = step.min(self.total_steps.saturating_sub(1)) as f64;
        let cut = (self.total_steps as f64 * self.cut_frac).floor();
        let p = if t < cut {
            t / cut
        } else {
            1.0 - (t - cut) / (cut * (1.0 / self.cut_frac - 1.0))
        };
        self.max_lr * (1.0 + p * (self.ratio - 1.0)) / self.ratio
    }
}

#[derive(Debug, Clone)]
struct Warmup {
    steps: usize,
    start_factor: f64,
    base_lr: f64,
    then: PerEpoch,
}

/// A schedule that changes the lr only at epoch ends, holding the lr like torch's optimizer does.
#[derive(Debug, Clone)]
struct PerEpoch {
    lr: f64,
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

#[derive(Debug, Clone)]
struct Plateau {
    monitor: String,
    /// Where `monitor` sits in the experiment file, for errors.
    monitor_key: String,
    mode: Mode,
    factor: f64,
    patience: usize,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: usize,
    min_lr: f64,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
}

#[derive(Debug, Clone)]
struct OneCycle {
    total_steps: usize,
    phases: Vec<Phase>,
    anneal: Anneal,
}

#[derive(Debug, Clone)]
struct Phase {
    end_step: f64,
    start_lr: f64,
    end_lr: f64,
}

impl Scheduler {
    /// base_lr: the optimizer's lr; epochs and steps_per_epoch: the run's length (one-cycle and cosine need them).
    ///
    /// Invalid values give an error located at the key (`step.gamma`, `warmup.then.cosine.t_max`); callers add
    /// the outer path with [`Error::at`].
    pub fn new(spec: &ScheduleSpec, base_lr: f64, epochs: usize, steps_per_epoch: usize) -> Result<Self> {
        let plan = match spec {
            ScheduleSpec::OneCycle { .. } => {
                Plan::OneCycle(OneCycle::new(spec, epochs, steps_per_epoch).map_err(|e| e.at(spec.name()))?)
            }
            ScheduleSpec::SlantedTriangular { cut_frac, ratio } => {
                check_base_lr(base_lr)?;
                let at = |key: &str| format!("slanted_triangular.{key}");
                if !(*cut_frac > 0.0 && *cut_frac < 1.0) {
                    return Err(
                        Error::new(format!("expected a fraction between 0 and 1, found {cut_frac}")).at(at("cut_frac")),
                    );
                }
                if ratio.is_nan() || *ratio < 1.0 {
                    return Err(Error::new(format!("expected at least 1, found {ratio}")).at(at("ratio")));
                }
                let total_steps = epochs * steps_per_epoch;
                if ((total_steps as f64) * cut_frac).floor() < 1.0 {
                    return Err(Error::new(format!(
                        "{total_steps} steps leave no rising part at cut_frac = {cut_frac}; raise cut_frac or train longer"
                    ))
                    .at(at("cut_frac")));
                }
                Plan::Slanted(Slanted {
                    total_steps,
                    cut_frac: *cut_frac,
                    ratio: *ratio,
                    max_lr: base_lr,
                })
            }
            ScheduleSpec::Warmup {
                warmup_steps,
                start_factor,
                then,
            } => {
                check_base_lr(base_lr)?;
                let warmup = (|| {
                    if *warmup_steps == 0 {
                        return Err(Error::new("expected at least 1 step, found 0").at("warmup_steps"));
                    }
                    fraction("start_factor", *start_factor)?;
                    let then = then.as_deref().unwrap_or(&ScheduleSpec::Constant);
                    if matches!(
                        then,
                        ScheduleSpec::Warmup { .. }
                            | ScheduleSpec::OneCycle { .. }
                            | ScheduleSpec::SlantedTriangular { .. }
                    ) {
                        return Err(Error::new(format!(
                            "expected a per-epoch schedule or reduce_on_plateau, found {} (which has its own warm-up)",
                            then.name()
                        ))
                        .at("then"));
                    }
                    // The epochs that hold at least one step after the warm-up.
                    let warmup_epochs = warmup_steps.checked_div(steps_per_epoch).unwrap_or(0);
                    let then_epochs = epochs.saturating_sub(warmup_epochs);
                    let then = PerEpoch::new(then, base_lr, then_epochs, "warmup.then.").map_err(|e| e.at("then"))?;
                    Ok(Warmup {
                        steps: *warmup_steps,
                        start_factor: *start_factor,
                        base_lr,
                        then,
                    })
                })()
                .map_err(|e| e.at("warmup"))?;
                Plan::Warmup(warmup)
            }
            _ => {
                check_base_lr(base_lr)?;
                Plan::PerEpoch(PerEpoch::new(spec, base_lr, epochs, "")?)
            }
        };
        Ok(Scheduler {
            plan,
            steps_done: 0,
            epochs_done: 0,
        })
    }

    /// The learning rate to use for the next optimizer step (call once per step, before the step).
    pub fn next_step_lr(&mut self) -> f64 {
        let lr = self.lr_at_step(self.steps_done);
        self.steps_done += 1;
        lr
    }

    /// Called at the end of each epoch (1-based epoch number) with that epoch's logged values (name -> value), so
    /// epoch-based schedules advance and ReduceOnPlateau can react. Returns Some(new_lr) if the lr changed.
    ///
    /// Epochs must end in order (1, 2, 3, ...); a monitored value missing from `logs` is an error naming the key
    /// and listing what was logged. Schedules that change the lr per step (warm-up, one-cycle) report their
    /// changes through `next_step_lr`, not here.
    pub fn end_epoch(&mut self, epoch: usize, logs: &BTreeMap<String, f64>) -> Result<Option<f64>> {
        let expected = self.epochs_done + 1;
        if epoch != expected {
            return Err(Error::new(format!(
                "end_epoch: expected epoch {expected} (epochs end in order, counted from 1), found epoch {epoch}"
            )));
        }
        let before = self.current_lr();
        match &mut self.plan {
            Plan::PerEpoch(schedule) => schedule.advance(logs)?,
            Plan::OneCycle(_) | Plan::Slanted(_) => {}
            Plan::Warmup(warmup) => {
                if self.steps_done > warmup.steps {
                    warmup.then.advance(logs)?;
                } else {
                    // Not started yet, but a misnamed monitor should fail now rather than after the warm-up.
                    warmup.then.check_logs(logs)?;
                }
            }
        }
        self.epochs_done = epoch;
        let after = self.current_lr();
        Ok((after != before).then_some(after))
    }

    /// The learning rate in effect now: what the next call of `next_step_lr` returns.
    pub fn current_lr(&self) -> f64 {
        self.lr_at_step(self.steps_done)
    }

    fn lr_at_step(&self, step: usize) -> f64 {
        match &self.plan {
            Plan::PerEpoch(schedule) => schedule.lr,
            Plan::OneCycle(one_cycle) => one_cycle.lr_at(step),
            Plan::Slanted(slanted) => slanted.lr_at(step),
            Plan::Warmup(warmup) if step < warmup.steps => {
                // torch LinearLR's closed form, same operation order.
                let sf = warmup.start_factor;
                warmup.base_lr * (sf + (1.0 - sf) * step as f64 / warmup.steps as f64)
            }
            Plan::Warmup(warmup) => warmup.then.lr,
        }
    }
}

impl PerEpoch {
    /// `epochs`: how many epochs this schedule runs for (cosine's default `t_max`); `path`: where the spec sits
    /// in the experiment file, for errors raised later (`"warmup.then."` or `""`).
    fn new(spec: &ScheduleSpec, base_lr: f64, epochs: usize, path: &str) -> Result<Self> {
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
                    gamma: positive("gamma", *gamma).map_err(|e| e.at("step"))?,
                }
            }
            ScheduleSpec::Exponential { gamma } => Rule::Exponential {
                gamma: positive("gamma", *gamma).map_err(|e| e.at("exponential"))?,
            },
            ScheduleSpec::Cosine { t_max, eta_min } => {
                if *t_max == Some(0) {
                    return Err(Error::new("expected at least 1 epoch, found 0")
                        .at("t_max")
                        .at("cosine"));
                }
                let eta_min = non_negative("eta_min", *eta_min).map_err(|e| e.at("cosine"))?;
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
                .map_err(|e| e.at("reduce_on_plateau"))?;
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

    fn check_logs(&self, logs: &BTreeMap<String, f64>) -> Result<()> {
        match &self.rule {
            Rule::Plateau(plateau) => plateau.monitored(logs).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// One torch `scheduler.step()` (with the monitored value for the plateau schedule).
    fn advance(&mut self, logs: &BTreeMap<String, f64>) -> Result<()> {
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

impl Plateau {
    fn monitored(&self, logs: &BTreeMap<String, f64>) -> Result<f64> {
        logs.get(&self.monitor).copied().ok_or_else(|| {
            let available = if logs.is_empty() {
                "nothing was logged".to_string()
            } else {
                format!(
                    "logged: {}",
                    logs.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                )
            };
            Error::new(format!(
                "'{}' is not among this epoch's logged values ({available})",
                self.monitor
            ))
            .at(self.monitor_key.clone())
        })
    }

    /// torch `ReduceLROnPlateau.step(current)`; returns the new lr.
    fn step(&mut self, current: f64, lr: f64) -> f64 {
        if self.is_better(current) {
            self.best = current;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0; // bad epochs in cooldown are ignored
        }
        let mut lr = lr;
        if self.num_bad_epochs > self.patience {
            let new_lr = (lr * self.factor).max(self.min_lr);
            if lr - new_lr > PLATEAU_EPS {
                lr = new_lr;
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
        lr
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, threshold) = (self.best, self.threshold);
        match (self.mode, self.threshold_mode) {
            (Mode::Min, ThresholdMode::Rel) => a < best * (1.0 - threshold),
            (Mode::Min, ThresholdMode::Abs) => a < best - threshold,
            (Mode::Max, ThresholdMode::Rel) => a > best * (threshold + 1.0),
            (Mode::Max, ThresholdMode::Abs) => a > best + threshold,
        }
    }
}

impl OneCycle {
    fn new(spec: &ScheduleSpec, epochs: usize, steps_per_epoch: usize) -> Result<Self> {
        let ScheduleSpec::OneCycle {
            max_lr,
            pct_start,
            div_factor,
            final_div_factor,
            anneal,
            three_phase,
        } = spec
        else {
            unreachable!("OneCycle::new is only called for one_cycle");
        };
        let max_lr = positive("max_lr", *max_lr)?;
        if !(pct_start.is_finite() && *pct_start > 0.0 && *pct_start < 1.0) {
            return Err(Error::new(format!("expected a number in (0, 1), found {pct_start}")).at("pct_start"));
        }
        let div_factor = positive("div_factor", *div_factor)?;
        let final_div_factor = positive("final_div_factor", *final_div_factor)?;
        let total_steps = epochs * steps_per_epoch;
        if total_steps == 0 {
            return Err(Error::new(format!(
                "needs the run's length: epochs ({epochs}) × steps per epoch ({steps_per_epoch}) is 0"
            )));
        }

        // torch's phase table, same arithmetic.
        let initial_lr = max_lr / div_factor;
        let min_lr = initial_lr / final_div_factor;
        let total = total_steps as f64;
        let last = (total_steps - 1) as f64;
        let phases = if *three_phase {
            vec![
                Phase {
                    end_step: pct_start * total - 1.0,
                    start_lr: initial_lr,
                    end_lr: max_lr,
                },
                Phase {
                    end_step: 2.0 * pct_start * total - 2.0,
                    start_lr: max_lr,
                    end_lr: initial_lr,
                },
                Phase {
                    end_step: last,
                    start_lr: initial_lr,
                    end_lr: min_lr,
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: pct_start * total - 1.0,
                    start_lr: initial_lr,
                    end_lr: max_lr,
                },
                Phase {
                    end_step: last,
                    start_lr: max_lr,
                    end_lr: min_lr,
                },
            ]
        };
        // torch divides by each phase's length; an empty phase is a division by zero there.
        let mut start = 0.0;
        for (i, phase) in phases.iter().enumerate() {
            if phase.end_step <= start {
                let ends: Vec<String> = phases.iter().map(|p| p.end_step.to_string()).collect();
                return Err(Error::new(format!(
                    "pct_start = {pct_start} over {total_steps} steps leaves phase {} of {} without steps (the \
                     phases end at steps {}); change pct_start or train for more steps",
                    i + 1,
                    phases.len(),
                    ends.join(", ")
                ))
                .at("pct_start"));
            }
            start = phase.end_step;
        }
        Ok(OneCycle {
            total_steps,
            phases,
            anneal: *anneal,
        })
    }

    /// torch `OneCycleLR.get_lr` at `step` (0-based); past the end, the final lr.
    fn lr_at(&self, step: usize) -> f64 {
        let step = step.min(self.total_steps - 1) as f64;
        let mut start_step = 0.0;
        for (i, phase) in self.phases.iter().enumerate() {
            if step <= phase.end_step || i == self.phases.len() - 1 {
                let pct = (step - start_step) / (phase.end_step - start_step);
                return match self.anneal {
                    Anneal::Cos => {
                        let cos_out = (PI * pct).cos() + 1.0;
                        phase.end_lr + (phase.start_lr - phase.end_lr) / 2.0 * cos_out
                    }
                    Anneal::Linear => (phase.end_lr - phase.start_lr) * pct + phase.start_lr,
                };
            }
            start_step = phase.end_step;
        }
        unreachable!("the last phase always matches")
    }
}

fn check_base_lr(base_lr: f64) -> Result<()> {
    if base_lr.is_finite() && base_lr >= 0.0 {
        Ok(())
    } else {
        Err(Error::new(format!(
            "the optimizer's lr must be a finite number >= 0, found {base_lr}"
        )))
    }
}

fn positive(key: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::new(format!("expected a finite number > 0, found {value}")).at(key))
    }
}

fn non_negative(key: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::new(format!("expected a finite number >= 0, found {value}")).at(key))
    }
}

fn fraction(key: &str, value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::new(format!("expected a number in [0, 1], found {value}")).at(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated by tools/reference/schedules_reference.py from real torch 2.15.0 (torch.optim.lr_scheduler,
    // stepped as in a training loop; the script's pure-Python re-derivation of torch's formulas gives the same
    // numbers bit for bit). The cases' parameters are in that script, under the same names. Base lr 0.1 throughout
    // (OneCycle: optimizer lr 0.5, which OneCycle overrides). The Rust side reproduces them exactly, except the
    // warm-up, which uses LinearLR's closed form where torch steps its chainable form (1 ulp apart).
    // Three parameter groups at lr / 2.6^g, interleaved per step: [g0, g1, g2] of step 0, then of step 1, ...
    const SLANTED_TRIANGULAR_LR: [f64; 60] = [
        0.003125,
        0.001201923076923077,
        0.0004622781065088757,
        0.02734375,
        0.010516826923076924,
        0.0040449334319526626,
        0.051562500000000004,
        0.01983173076923077,
        0.00762758875739645,
        0.07578125000000001,
        0.029146634615384616,
        0.011210244082840236,
        0.1,
        0.038461538461538464,
        0.014792899408284023,
        0.0939453125,
        0.0361328125,
        0.013897235576923076,
        0.087890625,
        0.03380408653846154,
        0.01300157174556213,
        0.08183593750000001,
        0.03147536057692308,
        0.012105907914201183,
        0.07578125000000001,
        0.029146634615384616,
        0.011210244082840236,
        0.0697265625,
        0.026817908653846156,
        0.010314580251479289,
        0.063671875,
        0.024489182692307692,
        0.009418916420118342,
        0.0576171875,
        0.022160456730769232,
        0.008523252588757396,
        0.051562500000000004,
        0.01983173076923077,
        0.00762758875739645,
        0.0455078125,
        0.017503004807692308,
        0.006731924926035503,
        0.039453125000000006,
        0.015174278846153848,
        0.005836261094674556,
        0.0333984375,
        0.012845552884615386,
        0.004940597263313609,
        0.02734375,
        0.010516826923076924,
        0.0040449334319526626,
        0.0212890625,
        0.008188100961538462,
        0.003149269600591716,
        0.015234375000000001,
        0.005859375,
        0.002253605769230769,
        0.0091796875,
        0.0035306490384615385,
        0.0013579419378698225,
    ];
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
    const WARMUP_COSINE_LR: [f64; 24] = [
        0.010000000000000002,
        0.025000000000000005,
        0.04000000000000001,
        0.05500000000000001,
        0.07,
        0.085,
        0.1,
        0.1,
        0.09045084971874738,
        0.09045084971874738,
        0.09045084971874738,
        0.09045084971874738,
        0.06545084971874737,
        0.06545084971874737,
        0.06545084971874737,
        0.06545084971874737,
        0.03454915028125263,
        0.03454915028125263,
        0.03454915028125263,
        0.03454915028125263,
        0.009549150281252633,
        0.009549150281252633,
        0.009549150281252633,
        0.009549150281252633,
    ];
    const ONE_CYCLE_COS_LR: [f64; 25] = [
        0.0040000000000000036,
        0.009498110768645929,
        0.024732892156904523,
        0.046214239347744504,
        0.06902103457804172,
        0.08792851591221286,
        0.0986052072364505,
        0.09979871550490317,
        0.09819815024222053,
        0.09504846320134738,
        0.0904508879153485,
        0.08455319423681344,
        0.07754493889320883,
        0.06965137297768985,
        0.06112620219362893,
        0.05224343254455968,
        0.043288563555770404,
        0.03454941208465151,
        0.026306861650082565,
        0.0188258346050237,
        0.012346777314112658,
        0.007077932009665416,
        0.003188643714987268,
        0.0008039173559862364,
        4e-07,
    ];
    const ONE_CYCLE_LINEAR_LR: [f64; 25] = [
        0.01,
        0.027142857142857142,
        0.04428571428571429,
        0.06142857142857144,
        0.07857142857142857,
        0.09571428571428571,
        0.096004,
        0.090676,
        0.08534800000000001,
        0.08002000000000001,
        0.07469200000000001,
        0.06936400000000001,
        0.06403600000000001,
        0.058708,
        0.053380000000000004,
        0.048052000000000004,
        0.042724,
        0.037396,
        0.032068,
        0.026740000000000014,
        0.021412000000000014,
        0.016084,
        0.010756000000000002,
        0.005428000000000002,
        0.00010000000000000286,
    ];
    const ONE_CYCLE_THREE_PHASE_LR: [f64; 25] = [
        0.0040000000000000036,
        0.009498110768645929,
        0.024732892156904523,
        0.046214239347744504,
        0.06902103457804172,
        0.08792851591221286,
        0.0986052072364505,
        0.0986052072364505,
        0.08792851591221286,
        0.0690210345780417,
        0.046214239347744504,
        0.024732892156904527,
        0.009498110768645929,
        0.004,
        0.003918994048634272,
        0.003682538814955796,
        0.003309790495743781,
        0.0028309469430011724,
        0.0022848012135789158,
        0.0017155987864210845,
        0.0011694530569988277,
        0.000690609504256219,
        0.0003178611850442036,
        8.140595136572838e-05,
        4e-07,
    ];
    const ONE_CYCLE_THREE_PHASE_LINEAR_LR: [f64; 25] = [
        0.004,
        0.014666666666666666,
        0.025333333333333333,
        0.036000000000000004,
        0.04666666666666666,
        0.05733333333333333,
        0.068,
        0.07866666666666668,
        0.08933333333333333,
        0.1,
        0.08933333333333333,
        0.07866666666666668,
        0.068,
        0.05733333333333334,
        0.04666666666666667,
        0.036000000000000004,
        0.025333333333333333,
        0.014666666666666675,
        0.0040000000000000036,
        0.0033334000000000003,
        0.0026668000000000004,
        0.0020002,
        0.0013336000000000003,
        0.0006670000000000001,
        4.0000000000022656e-07,
    ];
    const PLATEAU_MIN_LR: [f64; 21] = [
        0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.0125, 0.01,
        0.01, 0.01, 0.01, 0.01,
    ];
    const PLATEAU_MAX_LR: [f64; 12] = [
        0.1,
        0.1,
        0.1,
        0.010000000000000002,
        0.010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
        0.00010000000000000003,
        0.00010000000000000003,
        0.00010000000000000003,
        0.00010000000000000003,
    ];

    const BASE_LR: f64 = 0.1;

    fn assert_close(found: &[f64], expected: &[f64], what: &str) {
        assert_eq!(found.len(), expected.len(), "{what}: length");
        for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
            let ok = f == e || (f - e).abs() <= 1e-12 * f.abs().max(e.abs());
            assert!(
                ok,
                "{what}[{i}]: found {f:e}, expected {e:e}\nfound:    {found:?}\nexpected: {expected:?}"
            );
        }
    }

    fn no_logs() -> BTreeMap<String, f64> {
        BTreeMap::new()
    }

    /// Runs `epochs × steps_per_epoch` steps and returns every step's lr, checking `end_epoch`'s report.
    fn step_lrs(scheduler: &mut Scheduler, epochs: usize, steps_per_epoch: usize) -> Vec<f64> {
        let mut lrs = Vec::new();
        for epoch in 1..=epochs {
            for _ in 0..steps_per_epoch {
                let peek = scheduler.current_lr();
                let lr = scheduler.next_step_lr();
                assert_eq!(peek, lr, "current_lr is what the next step gets");
                lrs.push(lr);
            }
            let before = scheduler.current_lr();
            let changed = scheduler.end_epoch(epoch, &no_logs()).unwrap();
            let after = scheduler.current_lr();
            assert_eq!(
                changed,
                (after != before).then_some(after),
                "end_epoch's report at epoch {epoch}"
            );
        }
        lrs
    }

    /// One lr per epoch for a per-epoch schedule, checking that the lr is constant within each epoch.
    fn epoch_lrs(spec: &ScheduleSpec, epochs: usize) -> Vec<f64> {
        let steps_per_epoch = 3;
        let mut scheduler = Scheduler::new(spec, BASE_LR, epochs, steps_per_epoch).unwrap();
        let steps = step_lrs(&mut scheduler, epochs, steps_per_epoch);
        steps
            .chunks(steps_per_epoch)
            .map(|epoch| {
                assert!(
                    epoch.iter().all(|&lr| lr == epoch[0]),
                    "lr changed within an epoch: {epoch:?}"
                );
                epoch[0]
            })
            .collect()
    }

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

    #[test]
    fn warmup_then_cosine_matches_torch_linear_lr_then_cosine_annealing_lr() {
        // 6 warm-up steps over epochs of 4: the warm-up ends inside epoch 2, which is cosine's first epoch;
        // t_max defaults to the 5 epochs that hold post-warm-up steps.
        let spec = ScheduleSpec::Warmup {
            warmup_steps: 6,
            start_factor: 0.1,
            then: Some(Box::new(ScheduleSpec::Cosine {
                t_max: None,
                eta_min: 0.0,
            })),
        };
        let mut scheduler = Scheduler::new(&spec, BASE_LR, 6, 4).unwrap();
        assert_close(
            &step_lrs(&mut scheduler, 6, 4),
            &WARMUP_COSINE_LR,
            "LinearLR then CosineAnnealingLR",
        );
    }

    #[test]
    fn warmup_ending_on_an_epoch_boundary_starts_then_with_the_next_epoch() {
        let spec = ScheduleSpec::Warmup {
            warmup_steps: 4,
            start_factor: 0.0,
            then: Some(Box::new(ScheduleSpec::Step {
                step_size: 1,
                gamma: 0.5,
            })),
        };
        let mut scheduler = Scheduler::new(&spec, 1.0, 3, 4).unwrap();
        let lrs = step_lrs(&mut scheduler, 3, 4);
        assert_eq!(lrs, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn warmup_without_then_stays_at_the_optimizer_lr() {
        let spec = ScheduleSpec::Warmup {
            warmup_steps: 4,
            start_factor: 0.0,
            then: None,
        };
        let mut scheduler = Scheduler::new(&spec, 0.2, 2, 3).unwrap();
        assert_eq!(scheduler.current_lr(), 0.0);
        let lrs = step_lrs(&mut scheduler, 2, 3);
        assert_close(&lrs, &[0.0, 0.05, 0.1, 0.15000000000000002, 0.2, 0.2], "warm-up");
    }

    fn one_cycle(pct_start: f64, anneal: Anneal, div_factor: f64, final_div_factor: f64, three: bool) -> Vec<f64> {
        let spec = ScheduleSpec::OneCycle {
            max_lr: 0.1,
            pct_start,
            div_factor,
            final_div_factor,
            anneal,
            three_phase: three,
        };
        // The optimizer's lr (0.5) is overridden by one-cycle's own start, max_lr / div_factor.
        let mut scheduler = Scheduler::new(&spec, 0.5, 5, 5).unwrap();
        // torch's lr before the first step: the phase-1 anneal at pct 0, max_lr / div_factor up to rounding.
        assert_close(&[scheduler.current_lr()], &[0.1 / div_factor], "one-cycle start");
        step_lrs(&mut scheduler, 5, 5)
    }

    #[test]
    fn one_cycle_matches_torch_one_cycle_lr() {
        let cos = one_cycle(0.3, Anneal::Cos, 25.0, 1e4, false);
        assert_close(&cos, &ONE_CYCLE_COS_LR, "OneCycleLR cos");
        let linear = one_cycle(0.25, Anneal::Linear, 10.0, 100.0, false);
        assert_close(&linear, &ONE_CYCLE_LINEAR_LR, "OneCycleLR linear");
    }

    #[test]
    fn one_cycle_three_phase_matches_torch() {
        let cos = one_cycle(0.3, Anneal::Cos, 25.0, 1e4, true);
        assert_close(&cos, &ONE_CYCLE_THREE_PHASE_LR, "OneCycleLR three-phase cos");
        let linear = one_cycle(0.4, Anneal::Linear, 25.0, 1e4, true);
        assert_close(
            &linear,
            &ONE_CYCLE_THREE_PHASE_LINEAR_LR,
            "OneCycleLR three-phase linear",
        );
    }

    #[test]
    fn one_cycle_holds_the_final_lr_past_the_end() {
        let spec = ScheduleSpec::OneCycle {
            max_lr: 0.1,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Cos,
            three_phase: false,
        };
        let mut scheduler = Scheduler::new(&spec, 0.1, 5, 5).unwrap();
        let lrs: Vec<f64> = (0..30).map(|_| scheduler.next_step_lr()).collect();
        assert!(lrs[24..].iter().all(|&lr| lr == ONE_CYCLE_COS_LR[24]), "{lrs:?}");
    }

    fn plateau_lrs(spec: &ScheduleSpec, monitor: &str, metrics: &[f64]) -> Vec<f64> {
        let mut scheduler = Scheduler::new(spec, BASE_LR, metrics.len(), 2).unwrap();
        let mut lrs = Vec::new();
        for (i, &metric) in metrics.iter().enumerate() {
            let a = scheduler.next_step_lr();
            let b = scheduler.next_step_lr();
            assert_eq!(a, b);
            lrs.push(a);
            let logs = BTreeMap::from([("loss".to_string(), 0.0), (monitor.to_string(), metric)]);
            let changed = scheduler.end_epoch(i + 1, &logs).unwrap();
            assert_eq!(changed, (scheduler.current_lr() != a).then_some(scheduler.current_lr()));
        }
        lrs.push(scheduler.current_lr());
        lrs
    }

    #[test]
    fn reduce_on_plateau_min_rel_with_cooldown_matches_torch() {
        let spec = ScheduleSpec::ReduceOnPlateau {
            monitor: "val_loss".into(),
            mode: Mode::Min,
            factor: 0.5,
            patience: 1,
            threshold: 0.01,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 2,
            min_lr: 0.01,
        };
        let metrics = [
            1.0, 0.9, 0.895, 0.894, 0.85, 0.86, 0.87, 0.88, 0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87, 0.88, 0.89,
            0.90, 0.91,
        ];
        assert_close(
            &plateau_lrs(&spec, "val_loss", &metrics),
            &PLATEAU_MIN_LR,
            "ReduceLROnPlateau min",
        );
    }

    #[test]
    fn reduce_on_plateau_max_abs_matches_torch() {
        let spec = ScheduleSpec::ReduceOnPlateau {
            monitor: "val_accuracy".into(),
            mode: Mode::Max,
            factor: 0.1,
            patience: 0,
            threshold: 0.05,
            threshold_mode: ThresholdMode::Abs,
            cooldown: 1,
            min_lr: 1e-4,
        };
        let metrics = [0.5, 0.6, 0.64, 0.66, 0.70, 0.71, 0.72, 0.73, 0.80, 0.79, 0.78];
        assert_close(
            &plateau_lrs(&spec, "val_accuracy", &metrics),
            &PLATEAU_MAX_LR,
            "ReduceLROnPlateau max",
        );
    }

    fn plateau_default() -> ScheduleSpec {
        toml::from_str::<Wrapper>("schedule = { reduce_on_plateau = {} }")
            .unwrap()
            .schedule
    }

    #[test]
    fn missing_monitor_names_the_key_and_lists_the_logged_values() {
        let mut scheduler = Scheduler::new(&plateau_default(), BASE_LR, 3, 1).unwrap();
        scheduler.next_step_lr();
        let logs = BTreeMap::from([("loss".to_string(), 1.0), ("accuracy".to_string(), 0.5)]);
        let err = scheduler.end_epoch(1, &logs).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("reduce_on_plateau.monitor"));
        assert!(
            err.message.contains("'val_loss'") && err.message.contains("accuracy, loss"),
            "{err}"
        );

        // Under a warm-up, the check happens from the first epoch, with the full path.
        let spec = ScheduleSpec::Warmup {
            warmup_steps: 10,
            start_factor: 0.0,
            then: Some(Box::new(plateau_default())),
        };
        let mut scheduler = Scheduler::new(&spec, BASE_LR, 3, 1).unwrap();
        scheduler.next_step_lr();
        let err = scheduler.end_epoch(1, &no_logs()).unwrap_err();
        assert_eq!(err.location.as_deref(), Some("warmup.then.reduce_on_plateau.monitor"));
        assert!(err.message.contains("nothing was logged"), "{err}");
    }

    #[test]
    fn epochs_must_end_in_order() {
        let mut scheduler = Scheduler::new(&ScheduleSpec::Constant, BASE_LR, 3, 1).unwrap();
        assert_eq!(scheduler.end_epoch(1, &no_logs()).unwrap(), None);
        let err = scheduler.end_epoch(3, &no_logs()).unwrap_err();
        assert!(
            err.message.contains("expected epoch 2") && err.message.contains("found epoch 3"),
            "{err}"
        );
    }

    fn new_err(spec: &str) -> Error {
        let spec = toml::from_str::<Wrapper>(&format!("schedule = {spec}"))
            .unwrap()
            .schedule;
        Scheduler::new(&spec, BASE_LR, 10, 10).unwrap_err()
    }

    #[test]
    fn invalid_values_are_errors_naming_the_key() {
        let cases = [
            ("{ step = { step_size = 3, gamma = 0 } }", "step.gamma"),
            ("{ step = { step_size = 0 } }", "step.step_size"),
            ("{ exponential = { gamma = -0.5 } }", "exponential.gamma"),
            ("{ cosine = { t_max = 0 } }", "cosine.t_max"),
            ("{ cosine = { eta_min = -1 } }", "cosine.eta_min"),
            ("{ warmup = { warmup_steps = 0 } }", "warmup.warmup_steps"),
            (
                "{ warmup = { warmup_steps = 5, start_factor = 1.5 } }",
                "warmup.start_factor",
            ),
            (
                "{ warmup = { warmup_steps = 5, then = { exponential = { gamma = 0 } } } }",
                "warmup.then.exponential.gamma",
            ),
            (
                "{ warmup = { warmup_steps = 5, then = { one_cycle = { max_lr = 1 } } } }",
                "warmup.then",
            ),
            ("{ one_cycle = { max_lr = 0.1, pct_start = 0 } }", "one_cycle.pct_start"),
            ("{ one_cycle = { max_lr = 0.1, pct_start = 1 } }", "one_cycle.pct_start"),
            (
                "{ one_cycle = { max_lr = 0.1, pct_start = 0.01 } }",
                "one_cycle.pct_start",
            ), // 1 step: empty phase
            (
                "{ one_cycle = { max_lr = 0.1, three_phase = true, pct_start = 0.6 } }",
                "one_cycle.pct_start",
            ),
            ("{ one_cycle = { max_lr = 0 } }", "one_cycle.max_lr"),
            (
                "{ one_cycle = { max_lr = 0.1, div_factor = 0 } }",
                "one_cycle.div_factor",
            ),
            (
                "{ one_cycle = { max_lr = 0.1, final_div_factor = -1 } }",
                "one_cycle.final_div_factor",
            ),
            ("{ reduce_on_plateau = { factor = 1 } }", "reduce_on_plateau.factor"),
            ("{ reduce_on_plateau = { monitor = '' } }", "reduce_on_plateau.monitor"),
            (
                "{ reduce_on_plateau = { threshold = -0.1 } }",
                "reduce_on_plateau.threshold",
            ),
            ("{ reduce_on_plateau = { min_lr = -0.1 } }", "reduce_on_plateau.min_lr"),
        ];
        for (spec, key) in cases {
            let err = new_err(spec);
            assert_eq!(err.location.as_deref(), Some(key), "{spec}: {err}");
        }
        let err = new_err("{ step = { step_size = 3, gamma = 0 } }");
        assert_eq!(err.to_string(), "step.gamma: expected a finite number > 0, found 0");

        let err = Scheduler::new(&ScheduleSpec::Constant, -1.0, 10, 10).unwrap_err();
        assert!(err.message.contains("lr"), "{err}");
        let spec = toml::from_str::<Wrapper>("schedule = { one_cycle = { max_lr = 0.1 } }")
            .unwrap()
            .schedule;
        assert!(
            Scheduler::new(&spec, 0.1, 10, 0).is_err(),
            "one-cycle needs the run's length"
        );
        // The optimizer's lr does not matter to one-cycle.
        assert!(Scheduler::new(&spec, f64::NAN, 10, 10).is_ok());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Wrapper {
        schedule: ScheduleSpec,
    }

    #[derive(Debug, Deserialize)]
    struct Experiment {
        train: Train,
    }

    #[derive(Debug, Deserialize)]
    struct Train {
        schedule: ScheduleSpec,
    }

    fn parse(text: &str) -> ScheduleSpec {
        toml::from_str::<Wrapper>(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .schedule
    }

    #[test]
    fn every_variant_deserializes_from_toml_with_defaults() {
        let experiment: Experiment = toml::from_str("[train]\nschedule = { cosine = { t_max = 30 } }").unwrap();
        assert_eq!(
            experiment.train.schedule,
            ScheduleSpec::Cosine {
                t_max: Some(30),
                eta_min: 0.0
            }
        );

        assert_eq!(parse("schedule = \"constant\""), ScheduleSpec::Constant);
        assert_eq!(
            parse("schedule = { step = { step_size = 30 } }"),
            ScheduleSpec::Step {
                step_size: 30,
                gamma: 0.1
            }
        );
        assert_eq!(
            parse("schedule = { step = { step_size = 2, gamma = 0.5 } }"),
            ScheduleSpec::Step {
                step_size: 2,
                gamma: 0.5
            }
        );
        assert_eq!(
            parse("schedule = { exponential = { gamma = 0.95 } }"),
            ScheduleSpec::Exponential { gamma: 0.95 }
        );
        assert_eq!(
            parse("schedule = { cosine = {} }"),
            ScheduleSpec::Cosine {
                t_max: None,
                eta_min: 0.0
            }
        );
        assert_eq!(
            parse("[schedule.cosine]\nt_max = 10\neta_min = 1e-5"),
            ScheduleSpec::Cosine {
                t_max: Some(10),
                eta_min: 1e-5
            }
        );
        assert_eq!(
            parse("schedule = { warmup = { warmup_steps = 500 } }"),
            ScheduleSpec::Warmup {
                warmup_steps: 500,
                start_factor: 0.0,
                then: None
            }
        );
        assert_eq!(
            parse(
                "schedule = { warmup = { warmup_steps = 500, start_factor = 0.1, then = { cosine = { eta_min = 0 } } } }"
            ),
            ScheduleSpec::Warmup {
                warmup_steps: 500,
                start_factor: 0.1,
                then: Some(Box::new(ScheduleSpec::Cosine {
                    t_max: None,
                    eta_min: 0.0
                })),
            }
        );
        assert_eq!(
            parse("schedule = { warmup = { warmup_steps = 5, then = \"constant\" } }"),
            ScheduleSpec::Warmup {
                warmup_steps: 5,
                start_factor: 0.0,
                then: Some(Box::new(ScheduleSpec::Constant))
            }
        );
        // An integer where a float is expected is fine.
        assert_eq!(
            parse("schedule = { one_cycle = { max_lr = 1 } }"),
            ScheduleSpec::OneCycle {
                max_lr: 1.0,
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
                anneal: Anneal::Cos,
                three_phase: false,
            }
        );
        assert_eq!(
            parse(
                "schedule = { one_cycle = { max_lr = 0.01, pct_start = 0.25, div_factor = 10, final_div_factor = 100, \
                 anneal = \"linear\", three_phase = true } }"
            ),
            ScheduleSpec::OneCycle {
                max_lr: 0.01,
                pct_start: 0.25,
                div_factor: 10.0,
                final_div_factor: 100.0,
                anneal: Anneal::Linear,
                three_phase: true,
            }
        );
        assert_eq!(
            parse("schedule = { reduce_on_plateau = {} }"),
            ScheduleSpec::ReduceOnPlateau {
                monitor: "val_loss".into(),
                mode: Mode::Min,
                factor: 0.1,
                patience: 10,
                threshold: 1e-4,
                threshold_mode: ThresholdMode::Rel,
                cooldown: 0,
                min_lr: 0.0,
            }
        );
        assert_eq!(
            parse(
                "schedule = { reduce_on_plateau = { monitor = \"val_accuracy\", mode = \"max\", factor = 0.5, \
                 patience = 2, threshold = 0.01, threshold_mode = \"abs\", cooldown = 1, min_lr = 1e-6 } }"
            ),
            ScheduleSpec::ReduceOnPlateau {
                monitor: "val_accuracy".into(),
                mode: Mode::Max,
                factor: 0.5,
                patience: 2,
                threshold: 0.01,
                threshold_mode: ThresholdMode::Abs,
                cooldown: 1,
                min_lr: 1e-6,
            }
        );
        assert_eq!(ScheduleSpec::default(), ScheduleSpec::Constant);
    }

    #[test]
    fn unknown_keys_and_variants_are_rejected() {
        let err = toml::from_str::<Wrapper>("schedule = { step = { step_size = 3, gama = 0.5 } }").unwrap_err();
        assert!(err.to_string().contains("gama"), "{err}");
        let err =
            toml::from_str::<Wrapper>("schedule = { warmup = { warmup_steps = 3, then = { cosine = { tmax = 3 } } } }")
                .unwrap_err();
        assert!(err.to_string().contains("tmax"), "{err}");
        let err = toml::from_str::<Wrapper>("schedule = \"cosin\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant `cosin`"), "{err}");
        let err = toml::from_str::<Wrapper>("schedule = { step = {} }").unwrap_err();
        assert!(err.to_string().contains("missing field `step_size`"), "{err}");
    }

    #[test]
    fn specs_round_trip_through_toml() {
        let specs = [
            ScheduleSpec::Constant,
            ScheduleSpec::Step {
                step_size: 3,
                gamma: 0.5,
            },
            ScheduleSpec::Exponential { gamma: 0.9 },
            ScheduleSpec::Cosine {
                t_max: None,
                eta_min: 0.0,
            },
            ScheduleSpec::Warmup {
                warmup_steps: 100,
                start_factor: 0.1,
                then: Some(Box::new(ScheduleSpec::Cosine {
                    t_max: Some(5),
                    eta_min: 1e-6,
                })),
            },
            parse("schedule = { one_cycle = { max_lr = 0.1 } }"),
            plateau_default(),
        ];
        for spec in specs {
            let text = toml::to_string(&Wrapper { schedule: spec.clone() }).unwrap();
            assert_eq!(parse(&text), spec, "{text}");
        }
    }

    #[test]
    fn slanted_triangular_with_discriminative_rates_matches_torch() {
        let spec = ScheduleSpec::SlantedTriangular {
            cut_frac: 0.2,
            ratio: 32.0,
        };
        let mut s = Scheduler::new(&spec, 0.1, 4, 5).unwrap();
        for step in 0..20 {
            let lr = s.next_step_lr();
            for g in 0..3 {
                let want = SLANTED_TRIANGULAR_LR[step * 3 + g];
                let got = lr / 2.6f64.powi(g as i32);
                assert!(
                    (got - want).abs() <= 1e-15 * want.abs().max(1e-300) * 4.0,
                    "step {step} group {g}: {got} vs {want}"
                );
            }
        }
        let bad = ScheduleSpec::SlantedTriangular {
            cut_frac: 0.01,
            ratio: 32.0,
        };
        let e = Scheduler::new(&bad, 0.1, 2, 5).unwrap_err().to_string();
        assert!(
            e.contains("slanted_triangular.cut_frac") && e.contains("no rising part"),
            "{e}"
        );
    }
}
