//! The training loop: small on purpose. Mini-batches with per-epoch shuffling, one optimizer step per batch,
//! validation at each epoch end; everything else (progress, early stopping, checkpoints) is a callback.

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde_json::{Map, Value as Json};

use super::callbacks::{Callback, Control, Logs};
use super::schedule::Scheduler;
use crate::data::sampling::Resample;
use crate::data::{Array, Batches, Dataset, gather};
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::layers::value::Data;
use crate::model::Graph;
use crate::model::groups::LayerGroupsSpec;
use crate::task::head::ClassWeights;
use crate::task::head::{EpochMetrics, TaskHead};
use crate::train::optim::{ClipSpec, OptimizerSpec};
use crate::train::schedule::ScheduleSpec;

pub use crate::layers::value::{batch_inputs, input_data};

/// A batch's model output as rows for the loss and the metrics. Sequence outputs `[N, T, K]` (from
/// `time_distributed` or `return_sequences`) become N·T rows with per-step targets; padded steps get weight 0 in
/// the loss and are left out of the metrics, so padding changes neither.
struct Rows<'a> {
    logits: Tensor<2>,
    target: crate::task::loss::Target,
    weights: Option<Tensor<1>>,
    /// Class weights for losses that apply them inside (cross-entropy); otherwise they are in `weights`.
    class_weights: Option<&'a [f32]>,
    metrics: MetricRows,
}

/// The rows the metrics see: the batch itself, or the kept steps of a sequence batch.
enum MetricRows {
    Batch(crate::data::Batch),
    Steps {
        keep: Vec<usize>,
        total: usize,
        batch: crate::data::Batch,
    },
}

impl MetricRows {
    fn update(&self, head: &TaskHead, probs: &[f32], metrics: &mut EpochMetrics) {
        match self {
            MetricRows::Batch(b) => metrics.update(head, probs, b),
            MetricRows::Steps { keep, total, batch } => {
                let width = probs.len() / (*total).max(1);
                let kept: Vec<f32> = keep
                    .iter()
                    .flat_map(|&r| probs[r * width..(r + 1) * width].iter().copied())
                    .collect();
                metrics.update(head, &kept, batch)
            }
        }
    }
}

impl<'a> Rows<'a> {
    fn new(
        head: &TaskHead,
        out: crate::layers::value::Value,
        batch: &crate::data::Batch,
        class_weights: Option<&'a [f32]>,
        device: &Device,
    ) -> Result<Rows<'a>> {
        let (class_weights, loss_class_weights) = if head.loss_takes_class_weights() {
            (None, class_weights)
        } else {
            (class_weights, None)
        };
        let t3 = match out.data {
            Data::D2(t) => {
                let target = head.target(batch, device)?;
                let weights = row_weights(class_weights, batch, device);
                return Ok(Rows {
                    logits: t,
                    target,
                    weights,
                    class_weights: loss_class_weights,
                    metrics: MetricRows::Batch(batch.clone()),
                });
            }
            Data::D4(t) => {
                let target = head.target(batch, device)?;
                let weights = row_weights(class_weights, batch, device);
                return Ok(Rows {
                    logits: t.flatten(1, 3),
                    target,
                    weights,
                    class_weights: loss_class_weights,
                    metrics: MetricRows::Batch(batch.clone()),
                });
            }
            Data::D3(t) => t,
        };
        let [n, steps, k] = t3.dims();
        let values = batch.values.as_ref().filter(|v| v.sample_shape().first() == Some(&steps)).ok_or_else(|| {
            Error::new(format!(
                "the model outputs a sequence [{steps}, {k}] per sample, so the targets need {steps} steps per sample (y shaped [n, {steps}])"
            ))
        })?;
        let keep_mask: Vec<bool> = match &out.mask {
            Some(m) => m
                .clone()
                .bool_not()
                .into_data()
                .try_to_vec::<bool>()
                .unwrap_or_else(|_| vec![true; n * steps]),
            None => vec![true; n * steps],
        };
        let keep: Vec<usize> = (0..n * steps).filter(|&r| keep_mask[r]).collect();
        let per_step = values.sample_size() / steps;
        let class_steps = head.is_classification() && per_step == 1;
        let step_batch = |rows: &[usize]| -> Result<crate::data::Batch> {
            // Padded steps get label 0: their weight is 0, and their own label may be anything (often an invalid id).
            let labels = class_steps.then(|| {
                rows.iter()
                    .map(|&r| {
                        if keep_mask[r] {
                            values.data[r].max(0.0) as usize
                        } else {
                            0
                        }
                    })
                    .collect()
            });
            let data: Vec<f32> = rows
                .iter()
                .flat_map(|&r| values.data[r * per_step..(r + 1) * per_step].iter().copied())
                .collect();
            Ok(crate::data::Batch {
                inputs: Array::new(vec![rows.len(), 0], vec![])?,
                labels,
                values: (!class_steps)
                    .then(|| Array::new(vec![rows.len(), per_step], data))
                    .transpose()?,
                weights: None,
                extra_inputs: vec![],
                tasks: vec![],
            })
        };
        let all: Vec<usize> = (0..n * steps).collect();
        let full = step_batch(&all)?;
        if let Some(labels) = &full.labels
            && let Some((row, l)) = labels
                .iter()
                .enumerate()
                .find(|(r, l)| keep_mask[*r] && **l >= head.num_classes().max(1))
        {
            return Err(Error::new(format!(
                "label {l} at sample {}, step {} is outside the {} classes",
                row / steps,
                row % steps,
                head.num_classes()
            )));
        }
        let target = head.target(&full, device)?;
        let mut w: Vec<f32> = keep_mask.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        if let Some(sample) = &batch.weights {
            for (r, x) in w.iter_mut().enumerate() {
                *x *= sample[r / steps];
            }
        }
        if let (Some(cw), Some(labels)) = (class_weights, &full.labels) {
            for (x, &l) in w.iter_mut().zip(labels) {
                *x *= cw.get(l).copied().unwrap_or(1.0);
            }
        }
        Ok(Rows {
            logits: t3.reshape([n * steps, k]),
            target,
            weights: Some(Tensor::<1>::from_floats(w.as_slice(), device)),
            class_weights: loss_class_weights,
            metrics: MetricRows::Steps {
                batch: step_batch(&keep)?,
                keep,
                total: n * steps,
            },
        })
    }
}

/// Per-class weights for the loss: explicit, or scikit-learn's `balanced` from the training labels.
pub fn class_weights(
    spec: Option<&ClassWeights>,
    labels: Option<&[usize]>,
    classes: usize,
) -> Result<Option<Vec<f32>>> {
    match spec {
        None => Ok(None),
        Some(ClassWeights::Explicit(w)) if w.len() == classes => Ok(Some(w.iter().map(|&v| v as f32).collect())),
        Some(ClassWeights::Explicit(w)) => {
            Err(Error::new(format!("{} weights given for {classes} classes", w.len())).at("train.class_weights"))
        }
        Some(ClassWeights::Named(n)) if n == "balanced" => {
            let labels = labels.ok_or_else(|| Error::new("`balanced` needs class labels").at("train.class_weights"))?;
            let mut counts = vec![0usize; classes];
            for &l in labels {
                counts[l] += 1;
            }
            let n = labels.len() as f64;
            Ok(Some(
                counts
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            (n / (classes as f64 * c as f64)) as f32
                        }
                    })
                    .collect(),
            ))
        }
        Some(ClassWeights::Named(n)) => Err(Error::new(format!(
            "expected \"balanced\" or a list of weights, found \"{n}\""
        ))
        .at("train.class_weights")),
    }
}

/// The sum of the L2 penalties declared on layers (`l2 = ...`).
fn l2_penalty(model: &Graph) -> Option<Tensor<1>> {
    let mut total: Option<Tensor<1>> = None;
    for node in &model.nodes {
        let term = match (&node.layer, &node.spec) {
            (Some(Layer::Dense(d)), crate::layers::LayerSpec::Dense(c)) if c.l2 > 0.0 => {
                Some(d.weight.val().powi_scalar(2).sum().mul_scalar(c.l2))
            }
            (Some(Layer::Conv2d(d)), crate::layers::LayerSpec::Conv2d(c)) if c.l2 > 0.0 => {
                Some(d.weight.val().powi_scalar(2).sum().mul_scalar(c.l2))
            }
            (Some(Layer::Conv1d(d)), crate::layers::LayerSpec::Conv1d(c)) if c.l2 > 0.0 => {
                Some(d.weight.val().powi_scalar(2).sum().mul_scalar(c.l2))
            }
            _ => None,
        };
        if let Some(t) = term {
            total = Some(match total {
                Some(acc) => acc + t,
                None => t,
            });
        }
    }
    total
}

/// Rescales each output unit's incoming weights to at most `max_norm` (Keras' `MaxNorm` constraint).
fn apply_max_norm(mut model: Graph) -> Graph {
    fn clip<const D: usize>(w: Tensor<D>, max: f64) -> Tensor<D> {
        let w = w.detach();
        let dims = w.dims();
        let rows: Tensor<2> = w.clone().reshape([dims[0] as i64, -1]);
        let norms = rows.powi_scalar(2).sum_dim(1).sqrt();
        let scale = norms.add_scalar(1e-7).recip().mul_scalar(max).clamp_max(1.0);
        let mut shape = [1usize; D];
        shape[0] = dims[0];
        (w * scale.reshape(shape)).require_grad()
    }
    for node in model.nodes.iter_mut() {
        let max = match &node.spec {
            crate::layers::LayerSpec::Dense(c) => c.max_norm,
            crate::layers::LayerSpec::Conv1d(c) | crate::layers::LayerSpec::Conv2d(c) => c.max_norm,
            _ => None,
        };
        let Some(max) = max else { continue };
        node.layer = match node.layer.take() {
            Some(Layer::Dense(mut d)) => {
                d.weight = d.weight.map(|w| clip(w, max));
                Some(Layer::Dense(d))
            }
            Some(Layer::Conv2d(mut d)) => {
                d.weight = d.weight.map(|w| clip(w, max));
                Some(Layer::Conv2d(d))
            }
            Some(Layer::Conv1d(mut d)) => {
                d.weight = d.weight.map(|w| clip(w, max));
                Some(Layer::Conv1d(d))
            }
            other => other,
        };
    }
    model
}

/// One head's rows of a batch: loss inputs and the rows its metrics see (multi-task: those labelled for it).
fn head_rows<'a>(
    head: &TaskHead,
    out: crate::layers::value::Value,
    batch: &crate::data::Batch,
    class_weights: Option<&'a [f32]>,
    device: &Device,
) -> Result<Rows<'a>> {
    let (view, keep) = head.view(batch)?;
    let mut rows = Rows::new(head, out, &view, class_weights, device)?;
    if let (Some(keep), MetricRows::Batch(b)) = (keep, &rows.metrics) {
        let labelled = crate::data::Batch {
            inputs: b.inputs.select(&keep),
            labels: b.labels.as_ref().map(|l| keep.iter().map(|&r| l[r]).collect()),
            values: b.values.as_ref().map(|v| v.select(&keep)),
            weights: None,
            extra_inputs: vec![],
            tasks: vec![],
        };
        rows.metrics = MetricRows::Steps {
            total: b.len(),
            keep,
            batch: labelled,
        };
    }
    Ok(rows)
}

/// Each head's class weights (its own, `balanced` from its training labels).
pub fn head_class_weights(heads: &[TaskHead], train: &Dataset) -> Result<Vec<Option<Vec<f32>>>> {
    heads
        .iter()
        .map(|h| {
            let at = match &h.name {
                Some(n) => format!("train.tasks.{n}"),
                None => "train".into(),
            };
            class_weights(
                h.class_weights.as_ref(),
                h.train_labels(train).as_deref(),
                h.num_classes(),
            )
            .map_err(|e| e.at(at))
        })
        .collect()
}

/// One head's outputs over the rows labelled for it, in inference mode: the logits `[n, k]` and each row's
/// targets (its class label, or its `k` target values).
pub struct HeadOutputs {
    pub logits: Vec<f32>,
    pub width: usize,
    pub labels: Vec<usize>,
    pub values: Vec<f32>,
}

pub fn collect_outputs(model: &Graph, head: &TaskHead, data: &Dataset, batch_size: usize) -> Result<HeadOutputs> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut out = HeadOutputs {
        logits: vec![],
        width: 0,
        labels: vec![],
        values: vec![],
    };
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = gather(data, chunk);
        let outs = model.forward(batch_inputs(&batch, &device)?, false, true)?;
        let (view, keep) = head.view(&batch)?;
        let Data::D2(t) = outs[head.output].data.clone() else {
            return Err(Error::new("this needs one prediction per example (not a sequence)"));
        };
        let w = t.dims()[1];
        out.width = w;
        let values = t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        for r in keep.unwrap_or_else(|| (0..chunk.len()).collect()) {
            out.logits.extend_from_slice(&values[r * w..(r + 1) * w]);
            match (&view.labels, &view.values) {
                (Some(labels), _) => out.labels.push(labels[r]),
                (None, Some(v)) => out.values.extend_from_slice(&v.data[r * w..(r + 1) * w]),
                _ => return Err(Error::new("this needs targets")),
            }
        }
    }
    Ok(out)
}

/// Rows per batch when evaluating (in data order).
pub const EVAL_BATCH: usize = 256;

/// Loss and metrics of a model (in inference mode) over a whole data set. One head: its metrics and `loss`.
/// Several (multi-task): `loss` (the weighted total) and one object of metrics per task, over the examples
/// labelled for it. `curves`: add each classifier's ROC and precision–recall curves (`curves`).
pub fn evaluate(
    model: &Graph,
    heads: &[TaskHead],
    data: &Dataset,
    weights: &[Option<Vec<f32>>],
    batch_size: usize,
    top_k: usize,
    curves: bool,
) -> Result<Map<String, Json>> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut metrics: Vec<EpochMetrics> = heads.iter().map(EpochMetrics::new).collect();
    let mut loss_sums = vec![0.0; heads.len()];
    let mut label_counts = vec![0.0; heads.len()];
    let mut count = 0usize;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = gather(data, chunk);
        let outs = model.forward(batch_inputs(&batch, &device)?, false, true)?;
        for (h, head) in heads.iter().enumerate() {
            let out = outs[head.output].clone();
            let rows = head_rows(head, out, &batch, weights.get(h).and_then(|w| w.as_deref()), &device)?;
            // Multi-task losses are averaged over the examples labelled for the task.
            let labelled = match &rows.metrics {
                MetricRows::Steps { keep, .. } if head.name.is_some() => keep.len(),
                _ => chunk.len(),
            };
            let loss = head
                .loss
                .compute(rows.logits.clone(), rows.target, rows.weights, rows.class_weights)?;
            loss_sums[h] += loss.into_scalar::<f32>() as f64 * labelled as f64;
            label_counts[h] += labelled as f64;
            let probs = head
                .probabilities(rows.logits)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            rows.metrics.update(head, &probs, &mut metrics[h]);
        }
        count += chunk.len();
    }
    let mean = |h: usize| {
        if label_counts[h] > 0.0 {
            loss_sums[h] / label_counts[h]
        } else {
            0.0
        }
    };
    let summary = |h: usize| {
        let mut m = metrics[h].compute(top_k);
        if let Some(c) = metrics[h].curves().filter(|_| curves) {
            m.insert("curves".into(), c);
        }
        m
    };
    if heads.len() == 1 && heads[0].name.is_none() {
        let mut out = summary(0);
        out.insert("loss".into(), Json::from(if count > 0 { mean(0) } else { 0.0 }));
        return Ok(out);
    }
    let mut out = Map::new();
    let total: f64 = heads.iter().enumerate().map(|(h, head)| head.weight * mean(h)).sum();
    out.insert("loss".into(), Json::from(total));
    for (h, head) in heads.iter().enumerate() {
        let mut m = summary(h);
        m.insert("loss".into(), Json::from(mean(h)));
        out.insert(head.name.clone().unwrap_or_default(), Json::Object(m));
    }
    Ok(out)
}

/// Per-row loss weights: the sample weight times the class weight of the row's label, when either is given.
fn row_weights(class_weights: Option<&[f32]>, batch: &crate::data::Batch, device: &Device) -> Option<Tensor<1>> {
    let class_part: Option<Vec<f32>> = match (class_weights, batch.labels.as_ref()) {
        (Some(w), Some(labels)) => Some(labels.iter().map(|&l| w.get(l).copied().unwrap_or(1.0)).collect()),
        _ => None,
    };
    let rows = match (class_part, batch.weights.as_ref()) {
        (None, None) => return None,
        (Some(c), None) => c,
        (None, Some(s)) => s.clone(),
        (Some(c), Some(s)) => c.iter().zip(s).map(|(a, b)| a * b).collect(),
    };
    Some(Tensor::<1>::from_floats(rows.as_slice(), device))
}

/// Batches gathered ahead of the training step.
const PREFETCH: usize = 4;

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct EpochTiming {
    pub seconds: f64,
    pub data_wait: f64,
}

/// How [`fit`] trains: the loop's settings, as `[train]` gives them (`TrainSpec::fit_config`) or set in code.
///
/// ```ignore
/// let config = FitConfig::default().with_epochs(20).with_batch_size(64).with_optimizer(OptimizerSpec::adam(1e-3));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Shuffle the training rows every epoch (seeded); `false` keeps their order.
    pub shuffle: bool,
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
}

impl Default for FitConfig {
    /// 10 epochs of batches of 32, shuffled, Adam at its defaults (lr 1e-3), a constant rate, accuracy logged.
    fn default() -> Self {
        FitConfig {
            epochs: 10,
            batch_size: 32,
            shuffle: true,
            optimizer: OptimizerSpec::default(),
            clip_grad: None,
            schedule: ScheduleSpec::default(),
            metrics: vec!["accuracy".into()],
            top_k: 5,
            resample: None,
            layer_groups: None,
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

    /// Errors for settings no training can run with.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::new("epochs and batch_size must be at least 1"));
        }
        Ok(())
    }
}

/// The result of [`fit`].
pub struct FitResult {
    pub model: Graph,
    /// Wall time per epoch and the part of it the training step spent waiting for a batch.
    pub timings: Vec<EpochTiming>,
    pub history: Vec<Map<String, Json>>,
    pub stopped_early: Option<usize>,
}

/// Trains `model` (built on an autodiff device) on `train`, validating on `validation` at every epoch end.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    mut model: Graph,
    heads: &[TaskHead],
    spec: &FitConfig,
    train: &Dataset,
    validation: Option<&Dataset>,
    seed: u64,
    callbacks: &mut [Box<dyn Callback>],
) -> Result<FitResult> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut optim = spec
        .optimizer
        .init(spec.clip_grad)
        .map_err(|e| e.at("train.optimizer"))?;
    // Resampling draws each epoch's examples from the training labels (one classification task).
    let resample_labels = match spec.resample {
        Some(_) => {
            let head = match heads {
                [h] if h.is_classification() && h.name.is_none() => h,
                _ => return Err(Error::new("resampling applies to one classification task").at("train.resample")),
            };
            let labels = head
                .train_labels(train)
                .ok_or_else(|| Error::new("resampling needs class labels").at("train.resample"))?;
            Some((labels, head.num_classes()))
        }
        None => None,
    };
    let epoch_order = |epoch: usize| -> Result<Option<Vec<usize>>> {
        match (spec.resample, &resample_labels) {
            (Some(kind), Some((labels, classes))) => {
                crate::data::sampling::epoch_order(kind, labels, *classes, seed, epoch).map(Some)
            }
            _ => Ok(None),
        }
    };
    let epoch_len = epoch_order(1)?.map_or(train.len(), |o| o.len());
    let steps = epoch_len.div_ceil(spec.batch_size);
    let mut scheduler =
        Scheduler::new(&spec.schedule, spec.optimizer.lr(), spec.epochs, steps).map_err(|e| e.at("train.schedule"))?;
    let weights = head_class_weights(heads, train)?;
    let groups = spec
        .layer_groups
        .as_ref()
        .map(|g| crate::model::groups::LayerGroups::new(g, &model))
        .transpose()?;
    let mut groups_training = groups.as_ref().map_or(0, |g| g.len());
    let wanted: Vec<String> = spec.metrics.clone();
    let mut history = vec![];
    let mut timings = vec![];
    let mut stopped_early = None;
    for epoch in 1..=spec.epochs {
        if let Some(g) = &groups
            && (epoch == 1 || g.training_in(epoch) != groups_training)
        {
            groups_training = g.training_in(epoch);
            model = g.unfreeze_top(model, groups_training);
        }
        let batches = match epoch_order(epoch)? {
            Some(order) => Batches::from_order(order, spec.batch_size)?,
            None => Batches::new(train.len(), spec.batch_size, spec.shuffle, seed, epoch)?,
        };
        for cb in callbacks.iter_mut() {
            cb.on_epoch_begin(epoch, batches.num_batches());
        }
        let mut metrics: Vec<EpochMetrics> = heads.iter().map(EpochMetrics::new).collect();
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        let mut head_loss_sums = vec![0.0; heads.len()];
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
                let outs = model.forward(batch_inputs(&batch, &device)?, true, true)?;
                let mut loss: Option<Tensor<1>> = None;
                let mut data_loss = 0.0;
                for (h, head) in heads.iter().enumerate() {
                    let out = outs[head.output].clone();
                    let rows = head_rows(head, out, &batch, weights[h].as_deref(), &device)?;
                    let logits = rows.logits.clone();
                    let head_loss = head
                        .loss
                        .compute(rows.logits, rows.target, rows.weights, rows.class_weights)?;
                    let value = head_loss.clone().into_scalar::<f32>() as f64;
                    if !value.is_finite() {
                        let task = head
                            .name
                            .as_ref()
                            .map(|n| format!(" of task '{n}'"))
                            .unwrap_or_default();
                        return Err(Error::new(format!(
                            "the loss{task} became {value} at epoch {epoch}, batch {}; training stopped (the last good checkpoint is kept); try a lower learning rate or gradient clipping",
                            b + 1
                        )));
                    }
                    head_loss_sums[h] += value * batch.len() as f64;
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
                    rows.metrics.update(head, &probs, &mut metrics[h]);
                }
                let Some(mut loss) = loss else {
                    return Err(Error::new("the model has no task to train"));
                };
                if let Some(penalty) = l2_penalty(&model) {
                    loss = loss + penalty;
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let lr = scheduler.next_step_lr();
                model = match &groups {
                    Some(g) => optim.step(g.learning_rates(lr), model.clone(), grads),
                    None => optim.step(lr, model.clone(), grads),
                };
                model = apply_max_norm(model.clone());
                loss_sum += data_loss * batch.len() as f64;
                seen += batch.len();
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(b, data_loss);
                }
                b += 1;
            }
            Ok(())
        })?;
        timings.push(EpochTiming {
            seconds: epoch_start.elapsed().as_secs_f64(),
            data_wait: waited.as_secs_f64(),
        });
        let mut logs = Logs::new();
        logs.insert("loss".into(), loss_sum / seen.max(1) as f64);
        let multi = heads.len() > 1 || heads.iter().any(|h| h.name.is_some());
        for (h, head) in heads.iter().enumerate() {
            let train_metrics = metrics[h].compute(spec.top_k);
            let wanted = if head.metrics.is_empty() {
                &wanted
            } else {
                &head.metrics
            };
            for name in wanted {
                if let Some(v) = train_metrics.get(name).and_then(Json::as_f64) {
                    logs.insert(head.log_name(name), v);
                }
            }
            if multi {
                logs.insert(head.log_name("loss"), head_loss_sums[h] / seen.max(1) as f64);
            }
        }
        if let Some(val) = validation {
            let v = evaluate(&model.valid(), heads, val, &weights, EVAL_BATCH, spec.top_k, false)?;
            if let Some(l) = v.get("loss").and_then(Json::as_f64) {
                logs.insert("val_loss".into(), l);
            }
            for head in heads {
                let part = match &head.name {
                    Some(n) => v.get(n).and_then(Json::as_object).cloned().unwrap_or_default(),
                    None => v.clone(),
                };
                let wanted = if head.metrics.is_empty() {
                    &wanted
                } else {
                    &head.metrics
                };
                for name in wanted.iter().chain(multi.then_some(&"loss".to_string())) {
                    if let Some(x) = part.get(name).and_then(Json::as_f64) {
                        logs.insert(format!("val_{}", head.log_name(name)), x);
                    }
                }
            }
        }
        logs.insert("lr".into(), scheduler.current_lr());
        if groups.is_some() {
            logs.insert("groups_training".into(), groups_training as f64);
        }
        scheduler.end_epoch(epoch, &logs).map_err(|e| e.at("train.schedule"))?;
        let mut control = Control::default();
        for cb in callbacks.iter_mut() {
            cb.on_epoch_end(epoch, &logs, &model, &mut control)?;
        }
        history.push(history_entry(epoch, &logs));
        if control.stop {
            stopped_early = Some(epoch);
            break;
        }
    }
    for cb in callbacks.iter_mut() {
        cb.on_train_end(&mut model)?;
    }
    Ok(FitResult {
        model,
        history,
        stopped_early,
        timings,
    })
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

#[cfg(test)]
mod tests {
    use burn::module::Module;

    use super::*;
    use crate::data::{Array, Targets, TaskLabels};
    use crate::layers::LayerSpec;
    use crate::layers::dense::DenseConfig;
    use crate::model::spec::ModelSpec;
    use crate::task::loss::LossSpec;

    /// A trunk with two heads, `a` (3 classes) and `b` (2 classes).
    fn two_heads(device: &Device) -> Graph {
        let spec = ModelSpec::graph()
            .input("x", vec![4])
            .node("trunk", LayerSpec::Dense(DenseConfig::new(5)), &["x"])
            .node("a", LayerSpec::Dense(DenseConfig::new(3)), &["trunk"])
            .node("b", LayerSpec::Dense(DenseConfig::new(2)), &["trunk"])
            .output("a")
            .output("b");
        Graph::build(&spec, device).unwrap()
    }

    fn heads() -> Vec<TaskHead> {
        let loss = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
        ["a", "b"]
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let classes = (0..3 - k).map(|c| c.to_string()).collect();
                let mut h = TaskHead::new(&loss, 3 - k, classes).unwrap();
                h.name = Some(name.to_string());
                h.output = k;
                h
            })
            .collect()
    }

    /// Row 0 is labelled for task a only, row 1 for task b only; `second` is row 1's input.
    fn batch(second: [f32; 4]) -> crate::data::Batch {
        let mut x = vec![0.5, -1.0, 2.0, 0.1];
        x.extend(second);
        let task = |name: &str, labels: Vec<usize>, k: usize, present: Vec<bool>| TaskLabels {
            name: name.into(),
            targets: Targets::Classes {
                labels,
                names: (0..k).map(|c| c.to_string()).collect(),
            },
            present,
        };
        crate::data::Batch {
            inputs: Array::new(vec![2, 4], x).unwrap(),
            labels: None,
            values: None,
            weights: None,
            extra_inputs: vec![],
            tasks: vec![
                task("a", vec![2, 0], 3, vec![true, false]),
                task("b", vec![0, 1], 2, vec![false, true]),
            ],
        }
    }

    /// The gradient of the total loss with respect to head `a`'s weight.
    fn head_a_gradient(model: &Graph, batch: &crate::data::Batch) -> Vec<f32> {
        let device = model.devices()[0].clone();
        let outs = model
            .forward(batch_inputs(batch, &device).unwrap(), true, true)
            .unwrap();
        let mut total: Option<Tensor<1>> = None;
        for head in heads() {
            let rows = head_rows(&head, outs[head.output].clone(), batch, None, &device).unwrap();
            let loss = head.loss.compute(rows.logits, rows.target, rows.weights, None).unwrap();
            total = Some(total.map_or(loss.clone(), |t| t + loss));
        }
        let grads = total.unwrap().backward();
        let Some(Layer::Dense(a)) = &model.nodes[1].layer else {
            panic!()
        };
        a.weight
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn an_example_without_a_label_gives_its_task_head_exactly_zero_gradient() {
        let device = Device::default().autodiff();
        device.seed(2);
        let model = two_heads(&device);
        let base = head_a_gradient(&model, &batch([1.0, 1.0, -1.0, 0.3]));
        // Row 1 has no label for task a: whatever it holds, head a's gradient is the same, bit for bit.
        let other = head_a_gradient(&model, &batch([-7.0, 3.0, 9.0, -2.0]));
        assert_eq!(base, other);
        assert!(base.iter().any(|g| *g != 0.0));
        // And it equals the gradient from row 0 alone.
        let mut alone = batch([0.0; 4]);
        alone.inputs = alone.inputs.select(&[0]);
        alone.tasks = alone
            .tasks
            .iter()
            .map(|t| TaskLabels {
                name: t.name.clone(),
                targets: t.targets.select(&[0]),
                present: vec![t.present[0]],
            })
            .collect();
        let single = head_a_gradient(&model, &alone);
        for (x, y) in base.iter().zip(&single) {
            assert!((x - y).abs() <= 1e-7, "{x} vs {y}");
        }
    }
}
