//! The training loop: small on purpose. Mini-batches with per-epoch shuffling, one optimizer step per batch,
//! validation at each epoch end; everything else (progress, early stopping, checkpoints) is a callback.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde_json::{Map, Value as Json};

use super::callbacks::{Callback, Control, Logs};
use super::loss::Task;
use super::schedule::Scheduler;
use super::task::{EpochMetrics, TaskHead};
use crate::data::{Array, Batches, Dataset, gather};
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::model::Graph;
use crate::model::value::Data;
use crate::spec::experiment::{ClassWeights, TrainSpec};

/// A batch of inputs as the model's input tensor.
pub fn input_data(inputs: &Array, device: &Device) -> Result<Data> {
    let n = inputs.len();
    let flat = Tensor::<2>::from_data(
        TensorData::new(inputs.data.clone(), [n, inputs.sample_size()]),
        device,
    );
    let dims: Vec<usize> = std::iter::once(n)
        .chain(inputs.sample_shape().iter().copied())
        .collect();
    Data::D2(flat).reshape(&dims)
}

/// Logits `[N, K]` of the model's first output (sequence outputs `[N, T, K]` are folded to rows).
fn logits_2d(data: Data) -> Result<Tensor<2>> {
    Ok(match data {
        Data::D2(t) => t,
        Data::D3(t) => t.flatten(0, 1),
        Data::D4(t) => t.flatten(1, 3),
    })
}

/// Per-class weights for the loss: explicit, or scikit-learn's `balanced` from the training labels.
pub fn class_weights(
    spec: Option<&ClassWeights>,
    labels: Option<&[usize]>,
    classes: usize,
) -> Result<Option<Vec<f32>>> {
    match spec {
        None => Ok(None),
        Some(ClassWeights::Explicit(w)) if w.len() == classes => {
            Ok(Some(w.iter().map(|&v| v as f32).collect()))
        }
        Some(ClassWeights::Explicit(w)) => Err(Error::new(format!(
            "{} weights given for {classes} classes",
            w.len()
        ))
        .at("train.class_weights")),
        Some(ClassWeights::Named(n)) if n == "balanced" => {
            let labels = labels.ok_or_else(|| {
                Error::new("`balanced` needs class labels").at("train.class_weights")
            })?;
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
        let scale = norms
            .add_scalar(1e-7)
            .recip()
            .mul_scalar(max)
            .clamp_max(1.0);
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

/// Loss and metrics of a model (in inference mode) over a whole data set.
pub fn evaluate(
    model: &Graph,
    head: &TaskHead,
    data: &Dataset,
    weights: Option<&[f32]>,
    batch_size: usize,
    top_k: usize,
) -> Result<Map<String, Json>> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut metrics = EpochMetrics::new(head);
    let mut loss_sum = 0.0;
    let mut count = 0usize;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = gather(data, chunk);
        let x = input_data(&batch.inputs, &device)?;
        let out = model.forward(vec![x], false, true)?.remove(0);
        let logits = logits_2d(out.data)?;
        let target = head.target(&batch, &device)?;
        let w = row_weights(weights, &batch, &device);
        let loss = head.loss.compute(logits.clone(), target, w)?;
        loss_sum += loss.into_scalar::<f32>() as f64 * chunk.len() as f64;
        count += chunk.len();
        let probs = head
            .probabilities(logits)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default();
        metrics.update(head, &probs, &batch);
    }
    let mut out = metrics.compute(top_k);
    out.insert(
        "loss".into(),
        Json::from(if count > 0 {
            loss_sum / count as f64
        } else {
            0.0
        }),
    );
    Ok(out)
}

fn row_weights(
    class_weights: Option<&[f32]>,
    batch: &crate::data::Batch,
    device: &Device,
) -> Option<Tensor<1>> {
    let (w, labels) = (class_weights?, batch.labels.as_ref()?);
    let rows: Vec<f32> = labels
        .iter()
        .map(|&l| w.get(l).copied().unwrap_or(1.0))
        .collect();
    Some(Tensor::<1>::from_floats(rows.as_slice(), device))
}

/// The result of [`fit`].
pub struct FitResult {
    pub model: Graph,
    pub history: Vec<Map<String, Json>>,
    pub stopped_early: Option<usize>,
}

/// Trains `model` (built on an autodiff device) on `train`, validating on `validation` at every epoch end.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    mut model: Graph,
    head: &TaskHead,
    spec: &TrainSpec,
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
    let steps = train.len().div_ceil(spec.batch_size);
    let mut scheduler = Scheduler::new(&spec.schedule, spec.optimizer.lr(), spec.epochs, steps)
        .map_err(|e| e.at("train.schedule"))?;
    let weights = class_weights(
        spec.class_weights.as_ref(),
        train.labels(),
        head.num_classes(),
    )?;
    let wanted: Vec<String> = spec.metrics.clone();
    let mut history = vec![];
    let mut stopped_early = None;
    for epoch in 1..=spec.epochs {
        let batches = Batches::new(train.len(), spec.batch_size, spec.shuffle, seed, epoch)?;
        for cb in callbacks.iter_mut() {
            cb.on_epoch_begin(epoch, batches.num_batches());
        }
        let mut metrics = EpochMetrics::new(head);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for (b, indices) in batches.enumerate() {
            let batch = gather(train, &indices);
            let x = input_data(&batch.inputs, &device)?;
            let out = model.forward(vec![x], true, true)?.remove(0);
            let logits = logits_2d(out.data)?;
            let target = head.target(&batch, &device)?;
            let mut loss = head.loss.compute(
                logits.clone(),
                target,
                row_weights(weights.as_deref(), &batch, &device),
            )?;
            let data_loss = loss.clone().into_scalar::<f32>() as f64;
            if !data_loss.is_finite() {
                return Err(Error::new(format!(
                    "the loss became {data_loss} at epoch {epoch}, batch {}; training stopped (the last good checkpoint is kept); try a lower learning rate or gradient clipping",
                    b + 1
                )));
            }
            if let Some(penalty) = l2_penalty(&model) {
                loss = loss + penalty;
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = scheduler.next_step_lr();
            model = optim.step(lr, model, grads);
            model = apply_max_norm(model);
            loss_sum += data_loss * indices.len() as f64;
            seen += indices.len();
            let probs = head
                .probabilities(logits.detach())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            metrics.update(head, &probs, &batch);
            for cb in callbacks.iter_mut() {
                cb.on_batch_end(b, data_loss);
            }
        }
        let mut logs = Logs::new();
        logs.insert("loss".into(), loss_sum / seen.max(1) as f64);
        let train_metrics = metrics.compute(spec.top_k);
        for name in &wanted {
            if let Some(v) = train_metrics.get(name).and_then(Json::as_f64) {
                logs.insert(name.clone(), v);
            }
        }
        if let Some(val) = validation {
            let v = evaluate(
                &model.valid(),
                head,
                val,
                weights.as_deref(),
                256,
                spec.top_k,
            )?;
            if let Some(l) = v.get("loss").and_then(Json::as_f64) {
                logs.insert("val_loss".into(), l);
            }
            for name in &wanted {
                if let Some(x) = v.get(name).and_then(Json::as_f64) {
                    logs.insert(format!("val_{name}"), x);
                }
            }
        }
        logs.insert("lr".into(), scheduler.current_lr());
        scheduler
            .end_epoch(epoch, &logs)
            .map_err(|e| e.at("train.schedule"))?;
        let mut control = Control::default();
        for cb in callbacks.iter_mut() {
            cb.on_epoch_end(epoch, &logs, &model, &mut control)?;
        }
        let mut entry = Map::new();
        entry.insert("epoch".into(), Json::from(epoch));
        for (k, v) in &logs {
            entry.insert(
                k.clone(),
                serde_json::Number::from_f64(*v)
                    .map(Json::Number)
                    .unwrap_or(Json::Null),
            );
        }
        history.push(entry);
        if control.stop {
            stopped_early = Some(epoch);
            break;
        }
    }
    for cb in callbacks.iter_mut() {
        cb.on_train_end(&mut model)?;
    }
    let _ = Task::Regression;
    Ok(FitResult {
        model,
        history,
        stopped_early,
    })
}
