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

mod one_cycle;
mod per_epoch;
mod plateau;
mod spec;

pub use spec::{Anneal, Mode, ScheduleSpec, ThresholdMode};

use std::collections::BTreeMap;

use crate::error::{Context, Error, Result};
use one_cycle::OneCycle;
use per_epoch::PerEpoch;
use spec::{check_base_lr, fraction};

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

impl Scheduler {
    /// base_lr: the optimizer's lr; epochs and steps_per_epoch: the run's length (one-cycle and cosine need them).
    ///
    /// Invalid values give an error located at the key (`step.gamma`, `warmup.then.cosine.t_max`); callers add
    /// the outer path with [`Error::at`].
    pub fn new(spec: &ScheduleSpec, base_lr: f64, epochs: usize, steps_per_epoch: usize) -> Result<Self> {
        let plan = match spec {
            ScheduleSpec::OneCycle { .. } => {
                Plan::OneCycle(OneCycle::new(spec, epochs, steps_per_epoch).at(spec.name())?)
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
                    let then = PerEpoch::new(then, base_lr, then_epochs, "warmup.then.").at("then")?;
                    Ok(Warmup {
                        steps: *warmup_steps,
                        start_factor: *start_factor,
                        base_lr,
                        then,
                    })
                })()
                .at("warmup")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

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

    pub(super) const BASE_LR: f64 = 0.1;

    pub(super) fn assert_close(found: &[f64], expected: &[f64], what: &str) {
        assert_eq!(found.len(), expected.len(), "{what}: length");
        for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
            let ok = f == e || (f - e).abs() <= 1e-12 * f.abs().max(e.abs());
            assert!(
                ok,
                "{what}[{i}]: found {f:e}, expected {e:e}\nfound:    {found:?}\nexpected: {expected:?}"
            );
        }
    }

    pub(super) fn no_logs() -> BTreeMap<String, f64> {
        BTreeMap::new()
    }

    /// Runs `epochs × steps_per_epoch` steps and returns every step's lr, checking `end_epoch`'s report.
    pub(super) fn step_lrs(scheduler: &mut Scheduler, epochs: usize, steps_per_epoch: usize) -> Vec<f64> {
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
    pub(super) fn epoch_lrs(spec: &ScheduleSpec, epochs: usize) -> Vec<f64> {
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

    /// The experiment file's shape around a schedule, for parsing one.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub(super) struct Wrapper {
        pub(super) schedule: ScheduleSpec,
    }

    pub(super) fn plateau_default() -> ScheduleSpec {
        toml::from_str::<Wrapper>("schedule = { reduce_on_plateau = {} }")
            .unwrap()
            .schedule
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
