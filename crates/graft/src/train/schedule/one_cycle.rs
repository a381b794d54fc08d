//! `one_cycle`: torch's `OneCycleLR`, which sets the lr of every optimizer step itself from a table of two or
//! three annealing phases over the whole run.

use std::f64::consts::PI;

use super::spec::{Anneal, ScheduleSpec, positive};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub(super) struct OneCycle {
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

impl OneCycle {
    pub(super) fn new(spec: &ScheduleSpec, epochs: usize, steps_per_epoch: usize) -> Result<Self> {
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
    pub(super) fn lr_at(&self, step: usize) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::schedule::Scheduler;
    use crate::train::schedule::tests::{assert_close, step_lrs};

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
}
