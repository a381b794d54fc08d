//! `reduce_on_plateau`: torch's `ReduceLROnPlateau`, which lowers the lr at an epoch end when a logged value has
//! stopped improving for `patience` epochs.

use std::collections::BTreeMap;

use super::spec::{Mode, ThresholdMode};
use crate::error::{Error, Result};

/// torch's `ReduceLROnPlateau` default `eps`: reductions smaller than this are skipped.
const PLATEAU_EPS: f64 = 1e-8;

#[derive(Debug, Clone)]
pub(super) struct Plateau {
    pub(super) monitor: String,
    /// Where `monitor` sits in the experiment file, for errors.
    pub(super) monitor_key: String,
    pub(super) mode: Mode,
    pub(super) factor: f64,
    pub(super) patience: usize,
    pub(super) threshold: f64,
    pub(super) threshold_mode: ThresholdMode,
    pub(super) cooldown: usize,
    pub(super) min_lr: f64,
    pub(super) best: f64,
    pub(super) num_bad_epochs: usize,
    pub(super) cooldown_counter: usize,
}

impl Plateau {
    pub(super) fn monitored(&self, logs: &BTreeMap<String, f64>) -> Result<f64> {
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
    pub(super) fn step(&mut self, current: f64, lr: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::schedule::tests::{BASE_LR, assert_close, no_logs, plateau_default};
    use crate::train::schedule::{ScheduleSpec, Scheduler};

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
}
