//! What supervised training and evaluation share: a model output turned into the rows of each task head's loss
//! and metrics (sequence outputs, padding, class and sample weights), layer penalties and constraints, and
//! evaluation of a model's heads over a data set. The step itself is `supervised.rs`.

use burn::module::Module;
use burn::prelude::*;
use serde_json::{Map, Value as Json};

use crate::data::{Array, Dataset, gather};
use crate::error::{Context, Error, Result};
use crate::layers::Layer;
use crate::layers::value::Data;
use crate::model::Graph;
use crate::task::head::ClassWeights;
use crate::task::head::{EpochMetrics, TaskHead};
pub use crate::train::config::FitConfig;
pub use crate::train::step::{EpochTiming, History, TrainStep, Trainer, history_entry};
pub use crate::train::supervised::{FitResult, Supervised, fit};

pub use crate::layers::value::{batch_inputs, input_data};

/// A batch's model output as rows for the loss and the metrics. Sequence outputs `[N, T, K]` (from
/// `time_distributed` or `return_sequences`) become N·T rows with per-step targets; padded steps get weight 0 in
/// the loss and are left out of the metrics, so padding changes neither.
pub(crate) struct Rows<'a> {
    pub(crate) logits: Tensor<2>,
    pub(crate) target: crate::task::loss::Target,
    pub(crate) weights: Option<Tensor<1>>,
    /// Class weights for losses that apply them inside (cross-entropy); otherwise they are in `weights`.
    pub(crate) class_weights: Option<&'a [f32]>,
    pub(crate) metrics: MetricRows,
}

/// The rows the metrics see: the batch itself, or the kept steps of a sequence batch.
pub(crate) enum MetricRows {
    Batch(crate::data::Batch),
    Steps {
        keep: Vec<usize>,
        total: usize,
        batch: crate::data::Batch,
    },
}

impl MetricRows {
    pub(crate) fn update(&self, head: &TaskHead, probs: &[f32], metrics: &mut EpochMetrics) {
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

/// One optimizer step of `model` on `loss` at `lr`, as every single-model training step takes it: the layers' L2
/// penalties added to the loss, and their max-norm constraints applied after the step.
pub(crate) fn optimizer_step(
    model: Graph,
    loss: Tensor<1>,
    optim: &mut burn::optim::ModuleOptimizer,
    lr: f64,
) -> Graph {
    let loss = match l2_penalty(&model) {
        Some(penalty) => loss + penalty,
        None => loss,
    };
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
    apply_max_norm(optim.step(lr, model, grads))
}

/// The sum of the L2 penalties declared on layers (`l2 = ...`).
pub(crate) fn l2_penalty(model: &Graph) -> Option<Tensor<1>> {
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
            (Some(Layer::ConvTranspose2d(d)), crate::layers::LayerSpec::ConvTranspose2d(c)) if c.l2 > 0.0 => {
                Some(d.weight.val().powi_scalar(2).sum().mul_scalar(c.l2))
            }
            (Some(Layer::ConvTranspose1d(d)), crate::layers::LayerSpec::ConvTranspose1d(c)) if c.l2 > 0.0 => {
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
pub(crate) fn apply_max_norm(mut model: Graph) -> Graph {
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
pub(crate) fn head_rows<'a>(
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
            .at(at)
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
        let batch = gather(data, chunk)?;
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

/// Rows per batch when evaluating.
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
    // Texts for a `bert` layer go in order of length: it runs only up to a batch's longest text, so sorted batches
    // compute little padding (in data order nearly every batch of 256 holds one long text). The metrics do not
    // depend on the order.
    let indices: Vec<usize> = match model.token_pad() {
        Some(pad) if data.inputs.sample_shape().len() == 1 && data.images.is_none() => {
            crate::model::partial::rows_by_length(&data.inputs, pad)
        }
        _ => (0..data.len()).collect(),
    };
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = gather(data, chunk)?;
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
