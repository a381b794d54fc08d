//! [`FitConfig`]: the training loop's settings, with defaults and builder methods, so that code can say what
//! `[train]` says (an experiment's `TrainSpec::fit_config` gives the same struct).

use crate::data::sampling::Resample;
use crate::error::{Context, Error, Result};
use crate::model::groups::LayerGroupsSpec;
use crate::train::optim::{ClipSpec, OptimizerSpec};
use crate::train::schedule::ScheduleSpec;

/// How [`fit`](crate::train::trainer::fit) and [`Trainer`](crate::train::step::Trainer) train: the loop's settings, as `[train]` gives them (`TrainSpec::fit_config`) or set in code.
///
/// `FitConfig::default().with_epochs(20).with_batch_size(64).with_optimizer(OptimizerSpec::adam(1e-3))`
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Shuffle the training rows every epoch (seeded); `false` keeps their order.
    pub shuffle: bool,
    /// Batches of token ids of similar length (Hugging Face's `group_by_length`,
    /// [`Batches::grouped_by_length`](crate::data::Batches::grouped_by_length)): a `bert` layer runs only up to a
    /// batch's longest text, so less padding is computed.
    pub group_by_length: bool,
    pub optimizer: OptimizerSpec,
    pub clip_grad: Option<ClipSpec>,
    pub schedule: ScheduleSpec,
    /// Metrics logged per epoch (train and `val_`), for heads that name none of their own.
    pub metrics: Vec<String>,
    /// k of `top_k_accuracy`.
    pub top_k: usize,
    /// Which training examples each epoch visits (one classification task).
    pub resample: Option<Resample>,
    /// Discriminative learning rates and gradual unfreezing over groups of layers.
    pub layer_groups: Option<LayerGroupsSpec>,
    /// Resumable checkpoints inside epochs too (every epoch's end has one anyway).
    pub checkpoint_every: Option<CheckpointEvery>,
    /// Blend every training batch with a shuffled copy of itself ([`crate::train::mixup`]).
    pub mixup: Option<crate::train::mixup::MixupSpec>,
}

/// `[train] checkpoint = { every_batches = 500 }` or `{ every_minutes = 10 }`: a resumable checkpoint inside long
/// epochs as well, so an interruption loses at most that much training.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEvery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_batches: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_minutes: Option<f64>,
}

impl CheckpointEvery {
    pub fn check(&self) -> Result<()> {
        match (self.every_batches, self.every_minutes) {
            (None, None) => Err(Error::new("give every_batches = N or every_minutes = M")),
            (Some(0), _) => Err(Error::new("every_batches must be at least 1").at("every_batches")),
            (_, Some(m)) if !(m.is_finite() && m > 0.0) => {
                Err(Error::new(format!("every_minutes must be a positive number, found {m}")).at("every_minutes"))
            }
            _ => Ok(()),
        }
    }

    /// Whether a checkpoint is due after `batches` batches of the epoch, `since` the last one was written.
    pub fn due(&self, batches: usize, since: std::time::Duration) -> bool {
        self.every_batches.is_some_and(|n| batches.is_multiple_of(n))
            || self.every_minutes.is_some_and(|m| since.as_secs_f64() >= m * 60.0)
    }
}

impl Default for FitConfig {
    /// 10 epochs of batches of 32, shuffled, Adam at its defaults (lr 1e-3), a constant rate, accuracy logged.
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 32,
            shuffle: true,
            group_by_length: false,
            optimizer: OptimizerSpec::default(),
            clip_grad: None,
            schedule: ScheduleSpec::default(),
            metrics: vec!["accuracy".into()],
            top_k: 5,
            resample: None,
            layer_groups: None,
            checkpoint_every: None,
            mixup: None,
        }
    }
}

impl FitConfig {
    pub fn with_epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    pub fn with_group_by_length(mut self, group: bool) -> Self {
        self.group_by_length = group;
        self
    }
    pub fn with_optimizer(mut self, optimizer: OptimizerSpec) -> Self {
        self.optimizer = optimizer;
        self
    }
    pub fn with_clip_grad(mut self, clip: ClipSpec) -> Self {
        self.clip_grad = Some(clip);
        self
    }
    pub fn with_schedule(mut self, schedule: ScheduleSpec) -> Self {
        self.schedule = schedule;
        self
    }
    pub fn with_metrics<S: Into<String>>(mut self, metrics: impl IntoIterator<Item = S>) -> Self {
        self.metrics = metrics.into_iter().map(Into::into).collect();
        self
    }
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }
    pub fn with_resample(mut self, resample: Resample) -> Self {
        self.resample = Some(resample);
        self
    }
    pub fn with_layer_groups(mut self, groups: LayerGroupsSpec) -> Self {
        self.layer_groups = Some(groups);
        self
    }
    pub fn with_mixup(mut self, alpha: f64) -> Self {
        self.mixup = Some(crate::train::mixup::MixupSpec::new(alpha));
        self
    }

    /// Errors for settings no training can run with.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::new("epochs and batch_size must be at least 1"));
        }
        if let Some(c) = &self.checkpoint_every {
            c.check().at("checkpoint")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_builders() {
        let c = FitConfig::default();
        assert_eq!((c.epochs, c.batch_size, c.shuffle, c.top_k), (10, 32, true, 5));
        assert_eq!(c.optimizer, OptimizerSpec::adam(1e-3));
        let c = c
            .with_epochs(3)
            .with_batch_size(8)
            .with_metrics(["accuracy", "f1"])
            .with_shuffle(false);
        assert_eq!((c.epochs, c.batch_size, c.shuffle), (3, 8, false));
        assert_eq!(c.metrics, ["accuracy", "f1"]);
        assert!(c.with_epochs(0).check().is_err());
    }

    #[test]
    fn a_checkpoint_is_due_every_n_batches_or_after_the_minutes() {
        use std::time::Duration;
        let batches = CheckpointEvery {
            every_batches: Some(7),
            every_minutes: None,
        };
        let due: Vec<usize> = (1..=21).filter(|&b| batches.due(b, Duration::ZERO)).collect();
        assert_eq!(due, [7, 14, 21]);
        let minutes = CheckpointEvery {
            every_batches: None,
            every_minutes: Some(0.5),
        };
        assert!(!minutes.due(7, Duration::from_secs(29)));
        assert!(minutes.due(1, Duration::from_secs(30)));
        let both = CheckpointEvery {
            every_batches: Some(100),
            every_minutes: Some(1.0),
        };
        assert!(both.due(3, Duration::from_secs(61)) && both.due(100, Duration::ZERO));
        assert!(!both.due(3, Duration::from_secs(59)));
        for bad in [
            CheckpointEvery::default(),
            CheckpointEvery {
                every_batches: Some(0),
                every_minutes: None,
            },
            CheckpointEvery {
                every_batches: None,
                every_minutes: Some(-1.0),
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
