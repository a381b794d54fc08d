//! The supervised training step: task heads over one model's outputs (each with its loss, weight, metrics and
//! class weights), one optimizer over every trainable parameter (per-group rates with layer groups), layer
//! penalties and constraints; and [`fit`], which runs it in the [`Trainer`] loop.

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde_json::{Map, Value as Json};

use crate::data::sampling::Resample;
use crate::data::{Batch, Dataset};
use crate::error::{Context, Error, Result};
use crate::model::Graph;
use crate::model::groups::LayerGroups;
use crate::task::head::{EpochMetrics, TaskHead};
use crate::train::callbacks::{Callback, Logs};
use crate::train::config::FitConfig;
use crate::train::step::{EpochTiming, TrainStep, Trainer};
use crate::train::trainer::{
    EVAL_BATCH, apply_max_norm, batch_inputs, evaluate, head_class_weights, head_rows, l2_penalty,
};

/// The result of [`fit`].
pub struct FitResult {
    pub model: Graph,
    /// Wall time per epoch and the part of it the training step spent waiting for a batch.
    pub timings: Vec<EpochTiming>,
    pub history: Vec<Map<String, Json>>,
    pub stopped_early: Option<usize>,
}

/// Trains `model` (built on an autodiff device) on `train`, validating on `validation` at every epoch end: the
/// [`Supervised`] step run by the [`Trainer`] loop.
pub fn fit(
    model: Graph,
    heads: &[TaskHead],
    config: &FitConfig,
    train: &Dataset,
    validation: Option<&Dataset>,
    seed: u64,
    callbacks: &mut [Box<dyn Callback>],
) -> Result<FitResult> {
    fit_resumable(model, heads, config, train, validation, seed, callbacks, None)
}

/// [`fit`] with resumable checkpoints, continuing from `resume.from` when given (see
/// [`crate::train::step::run_epochs_resumable`]).
#[allow(clippy::too_many_arguments)]
pub fn fit_resumable(
    model: Graph,
    heads: &[TaskHead],
    config: &FitConfig,
    train: &Dataset,
    validation: Option<&Dataset>,
    seed: u64,
    callbacks: &mut [Box<dyn Callback>],
    resume: Option<crate::train::step::Resumable>,
) -> Result<FitResult> {
    let mut step = Supervised::new(model, heads, config, train, seed)?;
    let history =
        crate::train::step::run_epochs_resumable(config, seed, callbacks, &mut step, train, validation, resume)?;
    Ok(FitResult {
        model: step.model,
        timings: history.timings,
        history: history.epochs,
        stopped_early: history.stopped_early,
    })
}

impl Trainer {
    /// Supervised training of `model` (built on an autodiff device) through `heads`, validating on `validation`
    /// at every epoch end; see [`fit`].
    pub fn fit(
        &mut self,
        model: Graph,
        heads: &[TaskHead],
        train: &Dataset,
        validation: Option<&Dataset>,
    ) -> Result<FitResult> {
        let config = self.config.clone();
        fit(model, heads, &config, train, validation, self.seed, &mut self.callbacks)
    }
}

/// What the supervised step has accumulated of an epoch, for a checkpoint written mid-epoch.
#[derive(serde::Serialize, serde::Deserialize)]
struct EpochSoFar {
    epoch: usize,
    batch: usize,
    metrics: Vec<EpochMetrics>,
    head_loss_sums: Vec<f64>,
    seen: usize,
}

/// The supervised training step: one model, its task heads (each a model output with a loss, a weight and
/// metrics), one optimizer over all trainable parameters (with per-group rates when layer groups are set), layer
/// penalties and constraints; train metrics accumulated over the epoch and the validation set evaluated at its end.
pub struct Supervised<'a> {
    pub model: Graph,
    heads: &'a [TaskHead],
    optim: ModuleOptimizer,
    groups: Option<LayerGroups>,
    groups_training: usize,
    /// Per head, the class weights resolved on the training labels.
    weights: Vec<Option<Vec<f32>>>,
    /// The training labels and class count, when each epoch resamples them.
    resample: Option<(Resample, Vec<usize>, usize)>,
    metrics_wanted: Vec<String>,
    top_k: usize,
    mixup: Option<crate::train::mixup::MixupSpec>,
    seed: u64,
    device: Device,
    epoch: usize,
    batch: usize,
    metrics: Vec<EpochMetrics>,
    head_loss_sums: Vec<f64>,
    seen: usize,
}

impl<'a> Supervised<'a> {
    pub fn new(model: Graph, heads: &'a [TaskHead], config: &FitConfig, train: &Dataset, seed: u64) -> Result<Self> {
        let device = model.devices().first().cloned().unwrap_or_default();
        let optim = config.optimizer.init(config.clip_grad).at("train.optimizer")?;
        // Resampling draws each epoch's examples from the training labels (one classification task).
        let resample = match config.resample {
            Some(kind) => {
                let head = match heads {
                    [h] if h.is_classification() && h.name.is_none() => h,
                    _ => return Err(Error::new("resampling applies to one classification task").at("train.resample")),
                };
                let labels = head
                    .train_labels(train)
                    .ok_or_else(|| Error::new("resampling needs class labels").at("train.resample"))?;
                Some((kind, labels, head.num_classes()))
            }
            None => None,
        };
        let weights = head_class_weights(heads, train)?;
        let groups = config
            .layer_groups
            .as_ref()
            .map(|g| LayerGroups::new(g, &model))
            .transpose()?;
        let groups_training = groups.as_ref().map_or(0, |g| g.len());
        if let Some(m) = &config.mixup {
            m.check(&model).at("train")?;
        }
        Ok(Supervised {
            model,
            heads,
            optim,
            groups,
            groups_training,
            weights,
            resample,
            metrics_wanted: config.metrics.clone(),
            top_k: config.top_k,
            mixup: config.mixup,
            seed,
            device,
            epoch: 0,
            batch: 0,
            metrics: vec![],
            head_loss_sums: vec![],
            seen: 0,
        })
    }

    fn multi_task(&self) -> bool {
        self.heads.len() > 1 || self.heads.iter().any(|h| h.name.is_some())
    }

    fn wanted<'h>(&'h self, head: &'h TaskHead) -> &'h [String] {
        if head.metrics.is_empty() {
            &self.metrics_wanted
        } else {
            &head.metrics
        }
    }
}

impl TrainStep for Supervised<'_> {
    fn model(&self) -> &Graph {
        &self.model
    }

    fn resumable(&self) -> bool {
        true
    }

    fn save_state(&self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::save_trained(dir, "model", &self.model, &self.optim)?;
        let epoch = EpochSoFar {
            epoch: self.epoch,
            batch: self.batch,
            metrics: self.metrics.clone(),
            head_loss_sums: self.head_loss_sums.clone(),
            seen: self.seen,
        };
        crate::train::resume::write_json(&dir.join("epoch.json"), &epoch)
    }

    fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::load_trained(dir, "model", &mut self.model, &mut self.optim)?;
        let epoch: EpochSoFar = crate::train::resume::read_json(&dir.join("epoch.json"))?;
        // Mid-epoch: the epoch's metrics so far; at an epoch's end they belong to the epoch before this one.
        if epoch.epoch == self.epoch {
            self.batch = epoch.batch;
            self.metrics = epoch.metrics;
            self.head_loss_sums = epoch.head_loss_sums;
            self.seen = epoch.seen;
        }
        Ok(())
    }

    fn model_mut(&mut self) -> &mut Graph {
        &mut self.model
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<()> {
        if let Some(g) = &self.groups
            && (epoch == 1 || g.training_in(epoch) != self.groups_training)
        {
            self.groups_training = g.training_in(epoch);
            self.model = g.unfreeze_top(self.model.clone(), self.groups_training);
        }
        self.epoch = epoch;
        self.batch = 0;
        self.metrics = self.heads.iter().map(EpochMetrics::new).collect();
        self.head_loss_sums = vec![0.0; self.heads.len()];
        self.seen = 0;
        Ok(())
    }

    fn epoch_order(&self, epoch: usize) -> Result<Option<Vec<usize>>> {
        match &self.resample {
            Some((kind, labels, classes)) => {
                crate::data::sampling::epoch_order(*kind, labels, *classes, self.seed, epoch).map(Some)
            }
            None => Ok(None),
        }
    }

    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        self.batch += 1;
        // With mixup, the model sees the blended inputs and each loss is the blend of two: against the batch's
        // own targets and against its partners'.
        let mix = self
            .mixup
            .map(|m| m.draw(batch.len(), self.seed, self.epoch, self.batch))
            .map(|mix| {
                let partners = mix.partners(batch);
                (mix.blend(batch, &partners), partners, mix.lambda as f64)
            });
        let seen = mix.as_ref().map_or(batch, |(blended, _, _)| blended);
        let outs = self.model.forward(batch_inputs(seen, &self.device)?, true, true)?;
        let mut loss: Option<Tensor<1>> = None;
        let mut data_loss = 0.0;
        for (h, head) in self.heads.iter().enumerate() {
            let out = outs[head.output].clone();
            let rows = head_rows(head, out.clone(), batch, self.weights[h].as_deref(), &self.device)?;
            let logits = rows.logits.clone();
            let mut head_loss = head
                .loss
                .compute(rows.logits, rows.target, rows.weights, rows.class_weights)?;
            if let Some((_, partners, lambda)) = &mix {
                let other = head_rows(head, out, partners, self.weights[h].as_deref(), &self.device)?;
                let other_loss = head
                    .loss
                    .compute(other.logits, other.target, other.weights, other.class_weights)?;
                head_loss = head_loss.mul_scalar(*lambda) + other_loss.mul_scalar(1.0 - lambda);
            }
            let value = head_loss.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
                let task = head
                    .name
                    .as_ref()
                    .map(|n| format!(" of task '{n}'"))
                    .unwrap_or_default();
                return Err(Error::new(format!(
                    "the loss{task} became {value} at epoch {}, batch {}; training stopped (the last good checkpoint is kept); try a lower learning rate or gradient clipping",
                    self.epoch, self.batch
                )));
            }
            self.head_loss_sums[h] += value * batch.len() as f64;
            data_loss += head.weight * value;
            let weighted = if head.weight == 1.0 {
                head_loss
            } else {
                head_loss.mul_scalar(head.weight)
            };
            loss = Some(match loss {
                Some(total) => total + weighted,
                None => weighted,
            });
            let probs = head
                .probabilities(logits.detach())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            rows.metrics.update(head, &probs, &mut self.metrics[h]);
        }
        let Some(mut loss) = loss else {
            return Err(Error::new("the model has no task to train"));
        };
        if let Some(penalty) = l2_penalty(&self.model) {
            loss = loss + penalty;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let model = self.model.take();
        let model = match &self.groups {
            Some(g) => self.optim.step(g.learning_rates(lr), model, grads),
            None => self.optim.step(lr, model, grads),
        };
        self.model = apply_max_norm(model);
        self.seen += batch.len();
        Ok(data_loss)
    }

    fn end_epoch(&mut self, validation: Option<&Dataset>, logs: &mut Logs) -> Result<()> {
        let multi = self.multi_task();
        for (h, head) in self.heads.iter().enumerate() {
            let train_metrics = self.metrics[h].compute(self.top_k);
            for name in self.wanted(head) {
                if let Some(v) = train_metrics.get(name).and_then(Json::as_f64) {
                    logs.insert(head.log_name(name), v);
                }
            }
            if multi {
                logs.insert(head.log_name("loss"), self.head_loss_sums[h] / self.seen.max(1) as f64);
            }
        }
        if let Some(val) = validation {
            let v = evaluate(
                &self.model.valid(),
                self.heads,
                val,
                &self.weights,
                EVAL_BATCH,
                self.top_k,
                false,
            )?;
            if let Some(l) = v.get("loss").and_then(Json::as_f64) {
                logs.insert("val_loss".into(), l);
            }
            for head in self.heads {
                let part = match &head.name {
                    Some(n) => v.get(n).and_then(Json::as_object).cloned().unwrap_or_default(),
                    None => v.clone(),
                };
                let loss = "loss".to_string();
                for name in self.wanted(head).iter().chain(multi.then_some(&loss)) {
                    if let Some(x) = part.get(name).and_then(Json::as_f64) {
                        logs.insert(format!("val_{}", head.log_name(name)), x);
                    }
                }
            }
        }
        if self.groups.is_some() {
            logs.insert("groups_training".into(), self.groups_training as f64);
        }
        Ok(())
    }
}
