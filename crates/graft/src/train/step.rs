//! The training loop with an open step. [`Trainer`] runs what every training shares — epochs, batches gathered
//! on a loader thread, the learning-rate schedule, callbacks (progress, early stopping, checkpoints), the
//! history and timings — around a [`TrainStep`] that says what one batch does. The supervised step (one model,
//! task heads, one optimizer) is `train::trainer::Supervised`; a denoising autoencoder, a GAN (two models, two
//! optimizers) or distillation (a teacher) is another `TrainStep`, not another loop.

use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};

use crate::data::{Batch, Batches, Dataset, gather};
use crate::error::{Context, Result};
use crate::model::Graph;
use crate::train::callbacks::{Callback, Control, Logs};
use crate::train::config::FitConfig;
use crate::train::schedule::Scheduler;

/// What one training batch does, supplied by the caller.
pub trait TrainStep {
    /// Trains on one batch at the schedule's learning rate `lr` (the step's optimizers may use it or not) and
    /// returns the batch's loss, which the trainer averages over the epoch as `loss`.
    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64>;

    /// The model the callbacks see (checkpoints save it, early stopping may put back its best weights).
    fn model(&self) -> &Graph;

    /// The same model, for callbacks that replace it at the end of training.
    fn model_mut(&mut self) -> &mut Graph;

    /// Before the first batch of `epoch` (from 1), e.g. to unfreeze layers.
    fn begin_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }

    /// The training rows `epoch` visits, in order, when the step chooses them (resampling); `None` lets the
    /// trainer shuffle (or not, per [`FitConfig::shuffle`]).
    fn epoch_order(&self, _epoch: usize) -> Result<Option<Vec<usize>>> {
        Ok(None)
    }

    /// After the last batch of an epoch: adds the epoch's metrics to `logs` (which holds `loss` already), and
    /// `val_*` entries from `validation` when there is one.
    fn end_epoch(&mut self, _validation: Option<&Dataset>, _logs: &mut Logs) -> Result<()> {
        Ok(())
    }
}

/// The rows each epoch visits when `[train] resample` is set, drawn from the training set's class labels (for
/// steps that resample by class: oversampling a rare class, or class-balanced batches).
#[derive(Debug, Clone)]
pub struct Resampler {
    kind: crate::data::sampling::Resample,
    labels: Vec<usize>,
    classes: usize,
    seed: u64,
}

impl Resampler {
    /// `None` without `kind`; an error when `kind` is set and `train` has no class labels.
    pub fn new(kind: Option<crate::data::sampling::Resample>, train: &Dataset, seed: u64) -> Result<Option<Self>> {
        let Some(kind) = kind else { return Ok(None) };
        let labels = train
            .labels()
            .ok_or_else(|| {
                crate::error::Error::new("resampling draws by class; the data has no class labels").at("train.resample")
            })?
            .to_vec();
        let classes = train
            .class_names()
            .map_or(0, <[String]>::len)
            .max(labels.iter().max().map_or(0, |m| m + 1));
        Ok(Some(Resampler {
            kind,
            labels,
            classes,
            seed,
        }))
    }

    /// The training rows of `epoch`, in order.
    pub fn order(&self, epoch: usize) -> Result<Vec<usize>> {
        crate::data::sampling::epoch_order(self.kind, &self.labels, self.classes, self.seed, epoch)
    }
}

/// Wall time of one epoch and the part of it the training step spent waiting for a batch.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EpochTiming {
    pub seconds: f64,
    pub data_wait: f64,
}

/// What a training run leaves besides its model(s).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// One entry per epoch, as `metrics.json` holds it.
    pub epochs: Vec<Map<String, Json>>,
    pub timings: Vec<EpochTiming>,
    /// The epoch at which a callback stopped training, if one did.
    pub stopped_early: Option<usize>,
}

/// Batches gathered ahead of the training step.
const PREFETCH: usize = 4;

/// Runs a [`TrainStep`] for [`FitConfig::epochs`] epochs of batches of [`FitConfig::batch_size`].
pub struct Trainer {
    pub config: FitConfig,
    /// Seeds the shuffling (and, through the step, anything else that draws).
    pub seed: u64,
    pub callbacks: Vec<Box<dyn Callback>>,
}

impl Trainer {
    pub fn new(config: FitConfig) -> Self {
        Trainer {
            config,
            seed: 0,
            callbacks: vec![],
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Adds a callback; they run in the order added.
    pub fn with_callback(mut self, callback: impl Callback + 'static) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Trains `step` on `train`, calling [`TrainStep::end_epoch`] with `validation` after every epoch.
    pub fn run(&mut self, step: &mut dyn TrainStep, train: &Dataset, validation: Option<&Dataset>) -> Result<History> {
        run_epochs(&self.config, self.seed, &mut self.callbacks, step, train, validation)
    }
}

/// The loop of [`Trainer::run`], for callers that hold their callbacks as a slice.
pub fn run_epochs(
    config: &FitConfig,
    seed: u64,
    callbacks: &mut [Box<dyn Callback>],
    step: &mut dyn TrainStep,
    train: &Dataset,
    validation: Option<&Dataset>,
) -> Result<History> {
    config.check().at("train")?;
    let epoch_len = step.epoch_order(1)?.map_or(train.len(), |o| o.len());
    let steps = epoch_len.div_ceil(config.batch_size);
    let mut scheduler =
        Scheduler::new(&config.schedule, config.optimizer.lr(), config.epochs, steps).at("train.schedule")?;
    let mut history = History::default();
    for epoch in 1..=config.epochs {
        step.begin_epoch(epoch)?;
        let batches = match step.epoch_order(epoch)? {
            Some(order) => Batches::from_order(order, config.batch_size)?,
            None => Batches::new(train.len(), config.batch_size, config.shuffle, seed, epoch)?,
        };
        for cb in callbacks.iter_mut() {
            cb.on_epoch_begin(epoch, batches.num_batches());
        }
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        let epoch_start = Instant::now();
        let mut waited = Duration::ZERO;
        // Batches are gathered on a second thread, a few ahead of the training step that consumes them.
        std::thread::scope(|scope| -> Result<()> {
            let (sender, receiver) = std::sync::mpsc::sync_channel(PREFETCH);
            scope.spawn(move || {
                for indices in batches {
                    if sender.send(gather(train, &indices)).is_err() {
                        break;
                    }
                }
            });
            let mut b = 0;
            loop {
                let wait = Instant::now();
                let Ok(batch) = receiver.recv() else { break };
                waited += wait.elapsed();
                let lr = scheduler.next_step_lr();
                let loss = step.train_batch(&batch, lr)?;
                loss_sum += loss * batch.len() as f64;
                seen += batch.len();
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(b, loss);
                }
                b += 1;
            }
            Ok(())
        })?;
        history.timings.push(EpochTiming {
            seconds: epoch_start.elapsed().as_secs_f64(),
            data_wait: waited.as_secs_f64(),
        });
        let mut logs = Logs::new();
        logs.insert("loss".into(), loss_sum / seen.max(1) as f64);
        step.end_epoch(validation, &mut logs)?;
        logs.insert("lr".into(), scheduler.current_lr());
        scheduler.end_epoch(epoch, &logs).at("train.schedule")?;
        let mut control = Control::default();
        for cb in callbacks.iter_mut() {
            cb.on_epoch_end(epoch, &logs, step.model(), &mut control)?;
        }
        history.epochs.push(history_entry(epoch, &logs));
        if control.stop {
            history.stopped_early = Some(epoch);
            break;
        }
    }
    for cb in callbacks.iter_mut() {
        cb.on_train_end(step.model_mut())?;
    }
    Ok(history)
}

/// One epoch of `metrics.json`'s history: the epoch number and its logs (a non-finite value as `null`).
pub fn history_entry(epoch: usize, logs: &Logs) -> Map<String, Json> {
    let mut entry = Map::new();
    entry.insert("epoch".into(), Json::from(epoch));
    for (k, v) in logs {
        entry.insert(
            k.clone(),
            serde_json::Number::from_f64(*v).map(Json::Number).unwrap_or(Json::Null),
        );
    }
    entry
}
