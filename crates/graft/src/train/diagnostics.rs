//! A look inside a model on one batch: for every node, what its output looks like (scale, zeros, units that never
//! fire, non-finite values) and, for every node with weights, the size of its weights and of the loss's gradient
//! on them. `graft doctor` reads vanishing and exploding gradients, dead ReLUs and runaway activations from these;
//! they are also the numbers to watch over training (Karpathy, "A Recipe for Training Neural Networks").

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use serde::Serialize;

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::layers::Ctx;
use crate::layers::LayerSpec;
use crate::layers::activation::Activation;
use crate::layers::value::{Data, Value};
use crate::model::Graph;
use crate::model::graph::Source;
use crate::model::params::{ParamPath, ParamVisitor, visit_params};
use crate::task::head::TaskHead;
use crate::train::trainer::{batch_inputs, head_rows};

/// One node's numbers on one batch.
#[derive(Debug, Clone, Serialize)]
pub struct LayerStats {
    pub node: String,
    /// The layer kind (`dense`, `conv2d`, ...).
    pub kind: &'static str,
    /// The activation the layer ends in, when it has one.
    pub activation: Option<String>,
    pub output_mean: f64,
    pub output_std: f64,
    /// Share of output values that are exactly 0.
    pub zero_fraction: f64,
    /// For layers ending in a ReLU: units (features, or channels of a convolution) that are 0 for every example and
    /// position of the batch, and how many units there are.
    pub dead_units: Option<(usize, usize)>,
    /// Output values that are NaN or infinite.
    pub non_finite: usize,
    /// √Σw² over the node's trainable weights (batch-norm running statistics are not weights).
    pub weight_norm: Option<f64>,
    /// √Σg² of the loss's gradient on those weights.
    pub grad_norm: Option<f64>,
    /// Weights that are NaN or infinite.
    pub non_finite_weights: usize,
    /// Gradient values that are NaN or infinite.
    pub non_finite_grads: usize,
    /// The node reads token ids through an embedding table: its gradient touches only the rows of the batch's
    /// tokens, so its norm is not comparable to the other layers'.
    pub sparse_gradient: bool,
}

impl LayerStats {
    /// ‖∇W‖ / ‖W‖: how strongly the loss pulls on this layer relative to its size; comparable across layers.
    pub fn grad_ratio(&self) -> Option<f64> {
        match (self.grad_norm, self.weight_norm) {
            (Some(g), Some(w)) if w > 0.0 => Some(g / w),
            _ => None,
        }
    }
}

/// The batch's loss (the heads' weighted sum, as training computes it) and every node's output from the same pass.
pub fn loss_and_outputs(
    model: &Graph,
    heads: &[TaskHead],
    class_weights: &[Option<Vec<f32>>],
    batch: &Batch,
    training: bool,
) -> Result<(Tensor<1>, Vec<Value>)> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let taps: Vec<Source> = (0..model.nodes.len()).map(|i| Source::Node(i, 0)).collect();
    let ctx = Ctx {
        training,
        ..Ctx::default()
    };
    let (outs, tapped) = model.forward_tapped(batch_inputs(batch, &device)?, ctx, true, &taps)?;
    let mut total: Option<Tensor<1>> = None;
    for (h, head) in heads.iter().enumerate() {
        let rows = head_rows(
            head,
            outs[head.output].clone(),
            batch,
            class_weights.get(h).and_then(|w| w.as_deref()),
            &device,
        )?;
        let loss = head
            .loss
            .compute(rows.logits, rows.target, rows.weights, rows.class_weights)?
            .mul_scalar(head.weight);
        total = Some(match total {
            Some(t) => t + loss,
            None => loss,
        });
    }
    let loss = total.ok_or_else(|| Error::new("the model has no task to train"))?;
    Ok((loss, tapped))
}

/// Every node's [`LayerStats`] on `batch`: one forward pass (in training mode when `training`, as a training step
/// sees it) and, when the model has trainable weights, one backward pass. Nothing is updated.
pub fn layer_statistics(
    model: &Graph,
    heads: &[TaskHead],
    class_weights: &[Option<Vec<f32>>],
    batch: &Batch,
    training: bool,
) -> Result<(f64, Vec<LayerStats>)> {
    let (loss, outputs) = loss_and_outputs(model, heads, class_weights, batch, training)?;
    let loss_value = loss.clone().into_scalar::<f32>() as f64;
    let grads = loss.is_tracked().then(|| loss.backward());
    let mut weights = WeightNorms {
        grads: grads.as_ref(),
        nodes: BTreeMap::new(),
    };
    visit_params(model, &mut weights);
    let mut stats = vec![];
    for (i, node) in model.nodes.iter().enumerate() {
        let output = host(outputs[i].data.clone());
        let activation = node.spec.final_activation().filter(|a| *a != Activation::Linear);
        let relu = matches!(activation, Some(Activation::Relu | Activation::Relu6));
        let dims = outputs[i].data.dims();
        let finite: Vec<f32> = output.iter().copied().filter(|v| v.is_finite()).collect();
        let n = finite.len().max(1) as f64;
        let mean = finite.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = finite.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let norms = weights.nodes.get(&node.name);
        stats.push(LayerStats {
            node: node.name.clone(),
            kind: node.spec.kind(),
            activation: activation.map(|a| format!("{a:?}").to_lowercase()),
            output_mean: mean,
            output_std: var.sqrt(),
            zero_fraction: output.iter().filter(|&&v| v == 0.0).count() as f64 / output.len().max(1) as f64,
            dead_units: relu.then(|| dead_units(&output, &dims, unit_axis(model, i, dims.len()))),
            non_finite: output.len() - finite.len(),
            weight_norm: norms.map(|n| n.weight_sq.sqrt()),
            grad_norm: norms.and_then(|n| n.has_grad.then(|| n.grad_sq.sqrt())),
            non_finite_weights: norms.map_or(0, |n| n.bad_weights),
            non_finite_grads: norms.map_or(0, |n| n.bad_grads),
            sparse_gradient: matches!(node.spec, LayerSpec::Embedding(_) | LayerSpec::Bert(_)),
        });
    }
    Ok((loss_value, stats))
}

/// The first node whose output holds a NaN or an infinity on `batch` (in inference mode), and whether its inputs
/// were all finite: where a NaN is born, not everywhere it flows.
pub fn first_non_finite(model: &Graph, batch: &Batch) -> Result<Option<(String, bool)>> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let inputs = batch_inputs(batch, &device)?;
    let inputs_finite = std::iter::once(&batch.inputs)
        .chain(&batch.extra_inputs)
        .all(|a| a.data.iter().all(|v| v.is_finite()));
    let taps: Vec<Source> = (0..model.nodes.len()).map(|i| Source::Node(i, 0)).collect();
    let (_, tapped) = model.forward_tapped(inputs, Ctx::default(), true, &taps)?;
    let finite: Vec<bool> = tapped
        .iter()
        .map(|v| host(v.data.clone()).iter().all(|x| x.is_finite()))
        .collect();
    Ok(model
        .nodes
        .iter()
        .enumerate()
        .find(|(i, _)| !finite[*i])
        .map(|(_, node)| {
            let sources_finite = node.sources.iter().all(|s| match *s {
                Source::Node(j, _) => finite[j],
                Source::Input(_) => inputs_finite,
            });
            (node.name.clone(), sources_finite)
        }))
}

/// A batch tensor's values on the host.
pub fn host(data: Data) -> Vec<f32> {
    let data = data.detach();
    let values = match data {
        Data::D2(t) => t.into_data(),
        Data::D3(t) => t.into_data(),
        Data::D4(t) => t.into_data(),
    };
    values.convert::<f32>().try_to_vec::<f32>().unwrap_or_default()
}

/// Which axis of a node's output holds its units: the channels (axis 1) of convolution outputs `[N, C, ...]`, the
/// last axis of dense and sequence outputs `[N, (T,) F]`. A layer without units of its own (an activation) takes
/// its input's.
fn unit_axis(model: &Graph, node: usize, rank: usize) -> usize {
    match (&model.nodes[node].spec, rank) {
        (_, 2) | (_, 4) => 1,
        (
            LayerSpec::Conv1d(_)
            | LayerSpec::ConvTranspose1d(_)
            | LayerSpec::BatchNorm(_)
            | LayerSpec::MaxPool1d(_)
            | LayerSpec::AvgPool1d(_),
            _,
        ) => 1,
        (LayerSpec::Activation(_) | LayerSpec::LeakyRelu(_), _) => match model.nodes[node].sources.first() {
            Some(Source::Node(j, _)) => unit_axis(model, *j, rank),
            _ => rank - 1,
        },
        _ => rank - 1,
    }
}

/// Units along `axis` of a `dims`-shaped output that are 0 (or below) everywhere, and the number of units.
fn dead_units(values: &[f32], dims: &[usize], axis: usize) -> (usize, usize) {
    let units = dims.get(axis).copied().unwrap_or(1).max(1);
    let inner: usize = dims[axis + 1..].iter().product();
    let mut alive = vec![false; units];
    for (i, &v) in values.iter().enumerate() {
        if v > 0.0 {
            alive[(i / inner.max(1)) % units] = true;
        }
    }
    (alive.iter().filter(|a| !**a).count(), units)
}

#[derive(Default)]
struct Norms {
    weight_sq: f64,
    grad_sq: f64,
    has_grad: bool,
    bad_weights: usize,
    bad_grads: usize,
}

/// Sums the squares of every trainable weight (and its gradient) per node, the node being the first part of the
/// weight's PyTorch name.
struct WeightNorms<'g> {
    grads: Option<&'g burn::tensor::Gradients>,
    nodes: BTreeMap<String, Norms>,
}

impl ParamVisitor for WeightNorms<'_> {
    fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
        if path.is_running_stat() {
            return;
        }
        let Some(node) = path.parts().first() else { return };
        let value = param.val();
        let trainable = value.is_require_grad() || !value.device().is_autodiff();
        if !trainable {
            return;
        }
        let entry = self.nodes.entry(node.clone()).or_default();
        let (sq, bad) = sum_squares(value.clone().detach());
        entry.weight_sq += sq;
        entry.bad_weights += bad;
        if let Some(g) = self.grads.and_then(|grads| value.grad(grads)) {
            let (sq, bad) = sum_squares(g);
            entry.grad_sq += sq;
            entry.bad_grads += bad;
            entry.has_grad = true;
        }
    }
}

/// Σx² over the finite values, and how many are not finite.
fn sum_squares<const D: usize>(t: Tensor<D>) -> (f64, usize) {
    let values = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    let sq = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| (v as f64) * (v as f64))
        .sum();
    (sq, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_units_are_counted_per_channel_over_every_position() {
        // [N=2, C=3, L=2]: channel 1 never positive, channel 0 positive once, channel 2 everywhere.
        let values = [1.0, 0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, -1.0, 0.0, 4.0, 5.0];
        assert_eq!(dead_units(&values, &[2, 3, 2], 1), (1, 3));
        // The same numbers read as [N=2, T=3, F=2] with units last: feature 0 fires (1.0), feature 1 fires (2.0 …).
        assert_eq!(dead_units(&values, &[2, 3, 2], 2), (0, 2));
        // All zero: every unit dead.
        assert_eq!(dead_units(&[0.0; 6], &[3, 2], 1), (2, 2));
    }
}
