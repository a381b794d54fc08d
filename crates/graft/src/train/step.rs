//! The training loop with an open step. [`Trainer`] runs what every training shares — epochs, batches gathered
//! on a loader thread, the learning-rate schedule, callbacks (progress, early stopping, checkpoints), the
//! history and timings — around a [`TrainStep`] that says what one batch does. The supervised step (one model,
//! task heads, one optimizer) is `train::trainer::Supervised`; a denoising autoencoder, a GAN (two models, two
//! optimizers) or distillation (a teacher) is another `TrainStep`, not another loop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use serde_json::{Map, Value as Json};

use crate::data::{Batch, Batches, Dataset, gather_for_training};
use crate::error::{Context, Error, Result};
use crate::model::Graph;
use crate::train::callbacks::{Callback, Control, Logs};
use crate::train::config::FitConfig;
use crate::train::resume::{Partial, ResumePoint, write_checkpoint};
use crate::train::schedule::Scheduler;

/// What one training batch does, supplied by the caller. `Send`: the loop runs each batch on one of the compute
/// pool's threads (`graft_kernels::on_pool`).
pub trait TrainStep: Send {
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

    /// Whether the step writes and reads resumable checkpoints ([`TrainStep::save_state`],
    /// [`TrainStep::load_state`]); the loop writes none for a step that does not.
    fn resumable(&self) -> bool {
        false
    }

    /// Writes the step's models and optimizer states into `dir` (e.g. with [`crate::train::resume::save_trained`]).
    fn save_state(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }

    /// Reads back what [`TrainStep::save_state`] wrote.
    fn load_state(&mut self, _dir: &Path) -> Result<()> {
        Err(crate::error::Error::new("this kind of training cannot be resumed"))
    }
}

/// Where a resumable run keeps its checkpoints, and the one it continues from.
pub struct Resumable {
    /// The run's `checkpoints/` folder.
    pub checkpoints: PathBuf,
    pub from: Option<ResumePoint>,
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
    run_epochs_resumable(config, seed, callbacks, step, train, validation, None)
}

/// [`run_epochs`] writing a resumable checkpoint after every epoch (for a [`TrainStep::resumable`] step), inside
/// epochs as [`FitConfig::checkpoint_every`] says, and when a stop is requested ([`crate::train::interrupt`]:
/// the batch under way is finished, the checkpoint written, and the loop ends with an error that says how to
/// continue). With `resume.from` it continues from one: the step's and the callbacks' states are read back, the
/// schedule replayed over the steps done, the batches done skipped, and training goes on as if it had never
/// stopped. Every batch draws its noise (dropout, sampling) from the device generator seeded anew from the seed,
/// the epoch and the batch, so a resumed batch draws what the uninterrupted one would have.
pub fn run_epochs_resumable(
    config: &FitConfig,
    seed: u64,
    callbacks: &mut [Box<dyn Callback>],
    step: &mut dyn TrainStep,
    train: &Dataset,
    validation: Option<&Dataset>,
    resume: Option<Resumable>,
) -> Result<History> {
    config.check().at("train")?;
    let steps_in = |step: &dyn TrainStep, epoch: usize| -> Result<usize> {
        let len = step.epoch_order(epoch)?.map_or(train.len(), |o| o.len());
        Ok(len.div_ceil(config.batch_size))
    };
    let steps = steps_in(step, 1)?;
    let mut scheduler =
        Scheduler::new(&config.schedule, config.optimizer.lr(), config.epochs, steps).at("train.schedule")?;
    let mut history = History::default();
    let mut first = 1;
    let from = resume.as_ref().and_then(|r| r.from.clone());
    if let Some(point) = &from {
        let device = step.model().devices().first().cloned().unwrap_or_default();
        let folders = state_folders(callbacks_names(callbacks));
        for (cb, folder) in callbacks.iter_mut().zip(folders) {
            match folder {
                Some(f) => cb.load_state(&point.dir.join(f), &point.history, &device)?,
                None => cb.load_state(&point.dir, &point.history, &device)?,
            }
        }
        for entry in &point.history {
            let epoch = entry.get("epoch").and_then(Json::as_u64).unwrap_or(0) as usize;
            for _ in 0..steps_in(step, epoch)? {
                scheduler.next_step_lr();
            }
            let logs: Logs = entry
                .iter()
                .filter(|(k, _)| k.as_str() != "epoch")
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
                .collect();
            scheduler.end_epoch(epoch, &logs).at("train.schedule")?;
        }
        for _ in 0..point.partial.map_or(0, |p| p.batches) {
            scheduler.next_step_lr();
        }
        history.epochs = point.history.clone();
        history.stopped_early = point.stopped_early;
        first = point.epoch + 1;
    }
    let last = if history.stopped_early.is_some() {
        0
    } else {
        config.epochs
    };
    let resumable = resume.is_some() && step.resumable();
    let mut last_checkpoint = Instant::now();
    let lengths = if config.group_by_length {
        let Some(pad) = step.model().token_pad() else {
            return Err(Error::new(
                "group_by_length batches texts of similar length for a model whose first layer is a `bert` encoder \
                 (it runs only up to a batch's longest text); this model reads its input with no such layer, so \
                 grouping would only change the batches: remove it",
            )
            .at("train.group_by_length"));
        };
        Some(crate::data::batch::token_lengths(&train.inputs, pad))
    } else {
        None
    };
    for epoch in first..=last {
        step.begin_epoch(epoch)?;
        // Continuing: the state is read after the epoch began, so a checkpoint from inside it restores how far
        // the epoch had got (its metrics, its noise stream) over the fresh start.
        let partial = match from.as_ref().filter(|_| epoch == first) {
            Some(point) => {
                step.load_state(&point.dir.join("step"))?;
                point.partial
            }
            None => None,
        };
        let skip = partial.map_or(0, |p| p.batches);
        let batches = match step.epoch_order(epoch)? {
            Some(order) => Batches::from_order(order, config.batch_size)?,
            None => Batches::new(train.len(), config.batch_size, config.shuffle, seed, epoch)?,
        };
        let batches = match &lengths {
            Some(lengths) => {
                Batches::grouped_by_length(batches.order().to_vec(), lengths, config.batch_size, seed, epoch)?
            }
            None => batches,
        };
        for cb in callbacks.iter_mut() {
            cb.on_epoch_begin(epoch, batches.num_batches());
        }
        let (mut loss_sum, mut seen) = partial.map_or((0.0, 0usize), |p| (p.loss_sum, p.seen));
        let epoch_start = Instant::now();
        let mut waited = Duration::ZERO;
        let device = step.model().devices().first().cloned();
        // Batches are gathered on a second thread, a few ahead of the training step that consumes them.
        std::thread::scope(|scope| -> Result<()> {
            let (sender, receiver) = std::sync::mpsc::sync_channel(PREFETCH);
            scope.spawn(move || {
                for indices in batches.skip(skip) {
                    if sender.send(gather_for_training(train, &indices, seed, epoch)).is_err() {
                        break;
                    }
                }
            });
            let mut b = skip;
            loop {
                let wait = Instant::now();
                let Ok(batch) = receiver.recv() else { break };
                let batch = batch?;
                waited += wait.elapsed();
                if let Some(d) = &device {
                    d.seed(noise_seed(seed, epoch, b));
                }
                let lr = scheduler.next_step_lr();
                let loss = graft_kernels::on_pool(batch.len(), || step.train_batch(&batch, lr))?;
                loss_sum += loss * batch.len() as f64;
                seen += batch.len();
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(b, loss);
                }
                b += 1;
                crate::data::fault::point("batch");
                let stop = crate::train::interrupt::requested();
                let due = config
                    .checkpoint_every
                    .is_some_and(|c| c.due(b, last_checkpoint.elapsed()));
                let mut written = None;
                if let Some(r) = resume.as_ref().filter(|_| resumable && (stop || due)) {
                    let here = Partial {
                        batches: b,
                        loss_sum,
                        seen,
                    };
                    written = Some(save_checkpoint(r, epoch - 1, Some(here), &history, step, callbacks)?);
                    last_checkpoint = Instant::now();
                }
                if stop {
                    return Err(Error::new(format!(
                        "interrupted in epoch {epoch} after batch {b}; {}",
                        match written {
                            Some(dir) => format!(
                                "a resumable checkpoint is in {}: continue with the same command and --resume",
                                dir.display()
                            ),
                            None => "this run cannot be resumed; its last good checkpoint is kept".to_string(),
                        }
                    )));
                }
            }
            Ok(())
        })?;
        history.timings.push(EpochTiming {
            seconds: epoch_start.elapsed().as_secs_f64(),
            data_wait: waited.as_secs_f64(),
        });
        let mut logs = Logs::new();
        logs.insert("loss".into(), loss_sum / seen.max(1) as f64);
        crate::data::fault::point("validation");
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
        }
        if let Some(r) = resume.as_ref().filter(|_| resumable) {
            save_checkpoint(r, epoch, None, &history, step, callbacks)?;
            last_checkpoint = Instant::now();
        }
        if control.stop {
            break;
        }
    }
    for cb in callbacks.iter_mut() {
        cb.on_train_end(step.model_mut())?;
    }
    Ok(history)
}

/// A resumable checkpoint of the step and the stateful callbacks after `epoch` complete epochs (and `partial`).
fn save_checkpoint(
    resume: &Resumable,
    epoch: usize,
    partial: Option<Partial>,
    history: &History,
    step: &dyn TrainStep,
    callbacks: &[Box<dyn Callback>],
) -> Result<PathBuf> {
    write_checkpoint(
        &resume.checkpoints,
        epoch,
        partial,
        &history.epochs,
        history.stopped_early,
        |dir| {
            step.save_state(&dir.join("step"))?;
            for (cb, folder) in callbacks.iter().zip(state_folders(callbacks_names(callbacks))) {
                if let Some(f) = folder {
                    cb.save_state(&dir.join(f))?;
                }
            }
            Ok(())
        },
    )
}

fn callbacks_names(callbacks: &[Box<dyn Callback>]) -> Vec<Option<&'static str>> {
    callbacks.iter().map(|cb| cb.state_name()).collect()
}

/// Each stateful callback's folder in a resumable checkpoint: `callback-NAME`, numbered from the second of a name.
fn state_folders(names: Vec<Option<&'static str>>) -> Vec<Option<String>> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    names
        .into_iter()
        .map(|name| {
            name.map(|n| {
                let k = seen.entry(n).or_insert(0);
                *k += 1;
                if *k == 1 {
                    format!("callback-{n}")
                } else {
                    format!("callback-{n}-{k}")
                }
            })
        })
        .collect()
}

/// The device generator's seed for batch `batch` of `epoch` in a run seeded with `seed` (SplitMix64 of the three,
/// so neighbouring seeds, epochs and batches give unrelated streams).
fn noise_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    let mut z =
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (batch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
