//! The gradient of a critic's score with respect to its input, as a differentiable function of the critic's
//! parameters: what a gradient penalty needs.
//!
//! WGAN-GP (Gulrajani et al. 2017) penalizes the critic's input gradient, gp = λ·mean_rows((‖∂D(x̂)/∂x̂‖₂ − 1)²),
//! and trains the critic's parameters on it, so the gradient must itself be differentiable w.r.t. the parameters
//! (PyTorch: `torch.autograd.grad(..., create_graph=True)`). burn 0.22's autodiff has no double backward: the
//! gradients `.backward()` returns are plain tensors with no graph behind them. So this module writes the backward
//! pass out: [`Graph::input_gradient`] runs a forward pass that keeps what each layer's backward needs (the input,
//! the pre-activation, the normalized values, the dropout mask), then walks the nodes in reverse with each
//! layer's input gradient written in ordinary burn tensor ops (a dense layer's is a product with its weight, a
//! convolution's the transposed convolution with the same weight, an activation's a product with its derivative
//! at the pre-activation). Nothing is detached, so the result carries burn's autodiff graph back to every
//! parameter, and `penalty.backward()` gives the penalty's gradient w.r.t. each of them.
//!
//! Only layers whose input gradient is written here are accepted ([`SUPPORTED`]); any other kind is an error naming
//! the node, its kind and the supported kinds, before any tensor is computed ([`Graph::check_input_gradient`]).

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation as act;
use burn::tensor::module::{conv_transpose1d, conv_transpose2d, conv1d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

use crate::error::{Context, Error, Result};
use crate::layers::activation::{Activation, ActivationFn};
use crate::layers::dense::linear;
use crate::layers::merge::Merge;
use crate::layers::norm::{BatchNorm, GroupNorm, LayerNorm};
use crate::layers::pool::{GlobalPool, Pool, PoolKind};
use crate::layers::reshape::{PermuteConfig, reshape_batch, slice};
use crate::layers::value::{Data, Value};
use crate::layers::{Ctx, Layer, LayerSpec};
use crate::model::graph::{Graph, Source};

/// Applies a rank-generic tensor function to the tensor a `Data` holds.
macro_rules! on_data {
    ($data:expr, |$t:ident| $body:expr) => {
        match $data {
            Data::D2($t) => Data::D2($body),
            Data::D3($t) => Data::D3($body),
            Data::D4($t) => Data::D4($body),
        }
    };
}

/// The layer kinds [`Graph::input_gradient`] differentiates through (`batch_norm` at inference only: in training
/// its batch statistics couple the samples, which a per-sample gradient penalty must not).
pub const SUPPORTED: &[&str] = &[
    "dense",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "avg_pool1d",
    "avg_pool2d",
    "global_avg_pool1d",
    "global_avg_pool2d",
    "flatten",
    "reshape",
    "permute",
    "slice",
    "dropout",
    "batch_norm (inference)",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "add",
    "multiply",
    "concatenate",
    "activation",
    "relu",
    "relu6",
    "hardswish",
    "silu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "mish",
    "tanh",
    "sigmoid",
    "softmax",
    "linear",
];

/// Maps the gradient of a node's output to the gradients of its inputs, one per source.
type Backward = Box<dyn FnOnce(Data) -> Result<Vec<Data>>>;

impl Graph {
    /// Whether [`Graph::input_gradient`] applies to this model: one input, one output of one value per sample, and
    /// every node on the way from the input to the output of a supported kind ([`SUPPORTED`]). The error names
    /// the first node that is not.
    pub fn check_input_gradient(&self, training: bool) -> Result<()> {
        if self.spec.inputs.len() != 1 || self.outputs.len() != 1 {
            return Err(Error::new(format!(
                "the input gradient needs a model with one input and one output, found {} inputs and {} outputs",
                self.spec.inputs.len(),
                self.outputs.len()
            ))
            .at("model"));
        }
        let shape = &self.output_shapes()[0];
        if shape != &[1] {
            return Err(Error::new(format!(
                "the input gradient needs an output of one value per sample (a critic's score, shape [1]), found \
                 {shape:?}"
            ))
            .at("model.outputs"));
        }
        let needed = self.needed_for_output();
        for (node, _) in self.nodes.iter().zip(&needed).filter(|(_, n)| **n) {
            let reason = match &node.spec {
                LayerSpec::BatchNorm(_) if training => Some(
                    "in training its batch statistics couple the samples (a gradient penalty is per sample; use \
                     layer_norm in a critic)",
                ),
                spec if !supported(spec) => Some("its input gradient is not written"),
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(Error::new(format!(
                    "{}: {reason}; the input gradient supports {}",
                    node.spec.kind(),
                    SUPPORTED.join(", ")
                ))
                .at(format!("layer '{}'", node.name)));
            }
        }
        Ok(())
    }

    /// ∂(Σ_batch output)/∂input for a model with one input and one output of one value per sample (a critic's
    /// score): the same shape as `input`, computed as a forward pass (with `training` as [`Graph::forward`] takes
    /// it; the output keeps a final sigmoid) followed by the backward pass written in burn tensor ops, so the
    /// result is differentiable w.r.t. every parameter (see the module documentation).
    pub fn input_gradient(&self, input: Data, training: bool) -> Result<Data> {
        self.check_input_gradient(training)?;
        let ctx = Ctx {
            training,
            ..Ctx::default()
        };
        let needed = self.needed_for_output();
        let n = self.nodes.len();
        let mut values: Vec<Option<Data>> = vec![None; n];
        let mut backs: Vec<Option<Backward>> = (0..n).map(|_| None).collect();
        for (i, node) in self.nodes.iter().enumerate() {
            if !needed[i] {
                continue;
            }
            let at = || format!("layer '{}'", node.name);
            let args = node
                .sources
                .iter()
                .map(|s| match *s {
                    Source::Input(_) => Ok(input.clone()),
                    Source::Node(m, 0) => values[m].clone().ok_or_else(|| Error::new("an input was not computed")),
                    Source::Node(..) => Err(Error::new("takes a second output of a node")),
                })
                .collect::<Result<Vec<_>>>()
                .at_with(at)?;
            let layer = self.nodes[node.layer_of]
                .layer
                .as_ref()
                .ok_or_else(|| Error::new("layer missing"))
                .at_with(at)?;
            let (out, back) = step(layer, args, &ctx).at_with(at)?;
            values[i] = Some(out);
            backs[i] = Some(back);
        }

        let mut grads: Vec<Option<Data>> = vec![None; n];
        let mut input_grad: Option<Data> = None;
        let seed = |d: &Data| -> Data {
            match d {
                Data::D2(t) => Data::D2(t.ones_like()),
                Data::D3(t) => Data::D3(t.ones_like()),
                Data::D4(t) => Data::D4(t.ones_like()),
            }
        };
        match self.outputs[0] {
            Source::Input(_) => return Ok(seed(&input)),
            Source::Node(o, _) => grads[o] = values[o].as_ref().map(seed),
        }
        for i in (0..n).rev() {
            let Some(grad) = grads[i].take() else { continue };
            let back = backs[i]
                .take()
                .ok_or_else(|| Error::new("no backward for a node with a gradient"))?;
            let node = &self.nodes[i];
            let parts = back(grad).at_with(|| format!("layer '{}'", node.name))?;
            for (source, g) in node.sources.iter().zip(parts) {
                let slot = match *source {
                    Source::Input(_) => &mut input_grad,
                    Source::Node(m, _) => &mut grads[m],
                };
                *slot = Some(match slot.take() {
                    None => g,
                    Some(sum) => add(sum, g)?,
                });
            }
        }
        // Every supported node depends on the input, so the output does; zeros only for a model that ignores it.
        Ok(input_grad.unwrap_or_else(|| {
            let z = seed(&input);
            match z {
                Data::D2(t) => Data::D2(t.zeros_like()),
                Data::D3(t) => Data::D3(t.zeros_like()),
                Data::D4(t) => Data::D4(t.zeros_like()),
            }
        }))
    }

    /// The nodes the (first) output depends on.
    fn needed_for_output(&self) -> Vec<bool> {
        let mut needed = vec![false; self.nodes.len()];
        if let Some(Source::Node(o, _)) = self.outputs.first() {
            needed[*o] = true;
        }
        for i in (0..self.nodes.len()).rev() {
            if !needed[i] {
                continue;
            }
            for s in &self.nodes[i].sources {
                if let Source::Node(m, _) = *s {
                    needed[m] = true;
                }
            }
        }
        needed
    }
}

/// Whether a layer kind's input gradient is written here.
fn supported(spec: &LayerSpec) -> bool {
    use LayerSpec as S;
    matches!(
        spec,
        S::Dense(_)
            | S::Conv1d(_)
            | S::Conv2d(_)
            | S::ConvTranspose1d(_)
            | S::ConvTranspose2d(_)
            | S::AvgPool1d(_)
            | S::AvgPool2d(_)
            | S::GlobalAvgPool1d(_)
            | S::GlobalAvgPool2d(_)
            | S::Flatten(_)
            | S::Reshape(_)
            | S::Permute(_)
            | S::Slice(_)
            | S::Dropout(_)
            | S::BatchNorm(_)
            | S::LayerNorm(_)
            | S::GroupNorm(_)
            | S::InstanceNorm(_)
            | S::Add(_)
            | S::Multiply(_)
            | S::Concatenate(_)
            | S::Activation(_)
            | S::Relu(_)
            | S::LeakyRelu(_)
            | S::Elu(_)
            | S::Selu(_)
            | S::Gelu(_)
            | S::Mish(_)
            | S::Tanh(_)
            | S::Sigmoid(_)
            | S::Softmax(_)
            | S::Linear(_)
    )
}

/// One node's forward pass, and its backward as a closure over what the forward kept.
fn step(layer: &Layer, mut inputs: Vec<Data>, ctx: &Ctx) -> Result<(Data, Backward)> {
    let x = inputs.remove(0);
    let dims = x.dims();
    Ok(match layer {
        Layer::Dense(l) => {
            let (rows, fan_in) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
            let units = l.weight.dims()[0];
            let z = linear(x.reshape(&[rows, fan_in])?.d2()?, &l.weight, l.bias.as_ref());
            let (a, w) = (Act::Plain(l.activation), l.weight.val());
            let y = a.apply(z.clone());
            let mut out_dims = dims.clone();
            out_dims[dims.len() - 1] = units;
            let out = Data::D2(y.clone()).reshape(&out_dims)?;
            let back: Backward = Box::new(move |dy: Data| {
                let dz = a.grad(z, y, dy.reshape(&[rows, units])?.d2()?);
                Ok(vec![Data::D2(dz.matmul(w)).reshape(&dims)?])
            });
            (out, back)
        }
        Layer::Conv2d(l) => {
            let x = x.d4()?;
            let options = l.options.clone();
            let bias = l.bias.as_ref().map(|b| b.val());
            let z = if options.groups == 1 && graft_kernels::applies(&x) {
                // The layer's own fused forward (without its fused ReLU: the pre-activation is kept).
                let filters = l.weight.dims()[0];
                let bias = bias.unwrap_or_else(|| Tensor::<1>::zeros([filters], (&x.device(), x.dtype())));
                graft_kernels::conv2d(x, l.weight.val(), bias, options.clone(), false)
            } else {
                conv2d(x, l.weight.val(), bias, options.clone())
            };
            let (a, w) = (Act::Plain(l.activation), l.weight.val());
            let y = a.apply(z.clone());
            let out = Data::D4(y.clone());
            let size = [dims[2], dims[3]];
            let back: Backward = Box::new(move |dy: Data| {
                let dz = a.grad(z, y, dy.d4()?);
                Ok(vec![Data::D4(conv2d_input_grad(dz, w, &options, size))])
            });
            (out, back)
        }
        Layer::Conv1d(l) => {
            let x = x.d3()?.swap_dims(1, 2);
            let options = l.options.clone();
            let z = conv1d(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()), options.clone());
            let (a, w) = (Act::Plain(l.activation), l.weight.val());
            let y = a.apply(z.clone());
            let out = Data::D3(y.clone().swap_dims(1, 2));
            let size = dims[1];
            let back: Backward = Box::new(move |dy: Data| {
                let dz = a.grad(z, y, dy.d3()?.swap_dims(1, 2));
                Ok(vec![Data::D3(conv1d_input_grad(dz, w, &options, size).swap_dims(1, 2))])
            });
            (out, back)
        }
        Layer::ConvTranspose2d(l) => {
            let o = l.options.clone();
            let z = conv_transpose2d(x.d4()?, l.weight.val(), l.bias.as_ref().map(|b| b.val()), o.clone());
            let (a, w) = (Act::Plain(l.activation), l.weight.val());
            let y = a.apply(z.clone());
            let out = Data::D4(y.clone());
            let back: Backward = Box::new(move |dy: Data| {
                let dz = a.grad(z, y, dy.d4()?);
                let options = ConvOptions::new(o.stride, o.padding, o.dilation, o.groups);
                let dx = conv2d(dz, w, None, options);
                same_dims(Data::D4(dx), &dims)
            });
            (out, back)
        }
        Layer::ConvTranspose1d(l) => {
            let o = l.options.clone();
            let x = x.d3()?.swap_dims(1, 2);
            let z = conv_transpose1d(x, l.weight.val(), l.bias.as_ref().map(|b| b.val()), o.clone());
            let (a, w) = (Act::Plain(l.activation), l.weight.val());
            let y = a.apply(z.clone());
            let out = Data::D3(y.clone().swap_dims(1, 2));
            let back: Backward = Box::new(move |dy: Data| {
                let dz = a.grad(z, y, dy.d3()?.swap_dims(1, 2));
                let options = ConvOptions::new(o.stride, o.padding, o.dilation, o.groups);
                let dx = conv1d(dz, w, None, options).swap_dims(1, 2);
                same_dims(Data::D3(dx), &dims)
            });
            (out, back)
        }
        Layer::Pool(p) => avg_pool(p, x)?,
        Layer::GlobalPool(GlobalPool { max: false, two_d }) => {
            let out = match x {
                Data::D4(t) => Data::D2(
                    GlobalPool {
                        max: false,
                        two_d: *two_d,
                    }
                    .forward2d(t),
                ),
                Data::D3(t) => Data::D2(t.mean_dim(1).squeeze_dim(1)),
                Data::D2(_) => return Err(Error::new("global pooling of a rank-2 tensor")),
            };
            let back: Backward = Box::new(move |dy: Data| {
                let dy = dy.d2()?;
                Ok(vec![match *dims.as_slice() {
                    [b, l, c] => Data::D3(dy.reshape([b, 1, c]).expand([b, l, c]).mul_scalar(1.0 / l as f64)),
                    [b, c, h, w] => Data::D4(
                        dy.reshape([b, c, 1, 1])
                            .expand([b, c, h, w])
                            .mul_scalar(1.0 / (h * w) as f64),
                    ),
                    _ => return Err(Error::new("global pooling of a rank-2 tensor")),
                }])
            });
            (out, back)
        }
        Layer::Reshape(shape) => {
            let back: Backward = Box::new(move |dy: Data| Ok(vec![dy.reshape(&dims)?]));
            (reshape_batch(x, shape)?, back)
        }
        Layer::Permute(p) => {
            let mut inverse = vec![0; p.dims.len()];
            for (i, &d) in p.dims.iter().enumerate() {
                inverse[d] = i;
            }
            let back: Backward = Box::new(move |dy: Data| Ok(vec![PermuteConfig { dims: inverse }.forward(dy)]));
            (p.forward(x), back)
        }
        &Layer::Slice { axis, start, len } => {
            let back: Backward = Box::new(move |dy: Data| {
                let after = dims[axis] - start - len;
                Ok(vec![on_data!(dy, |t| pad_axis(t, axis, start, after))])
            });
            (slice(x, axis, start, len), back)
        }
        &Layer::Dropout(rate) => {
            if !ctx.dropout_active() || rate == 0.0 {
                let back: Backward = Box::new(|dy: Data| Ok(vec![dy]));
                (x, back)
            } else {
                // The mask of the forward pass, kept for the backward: inverted dropout, as `layers::dropout`.
                let keep = 1.0 - rate;
                let x2 = flat(x)?;
                let mask = x2.random_like(Distribution::Bernoulli(keep)).div_scalar(keep);
                let out = Data::D2(x2 * mask.clone()).reshape(&dims)?;
                let back: Backward = Box::new(move |dy: Data| Ok(vec![Data::D2(flat(dy)? * mask).reshape(&dims)?]));
                (out, back)
            }
        }
        Layer::Activation(f) => {
            let a = Act::Fn(*f);
            let y = a.apply_data(x.clone());
            let kept = y.clone();
            let back: Backward = Box::new(move |dy: Data| Ok(vec![a.grad_data(x, kept, dy)?]));
            (y, back)
        }
        Layer::BatchNorm(l) => batch_norm(l, x, ctx.training)?,
        Layer::LayerNorm(l) => layer_norm(l, x)?,
        Layer::GroupNorm(l) => group_norm(l, x)?,
        Layer::Merge(m) => {
            let mut all = vec![x];
            all.extend(inputs);
            merge(*m, all)?
        }
        _ => return Err(Error::new("no input gradient is written for this layer")),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------------------------

/// SELU's constants (burn's, the SELU paper's).
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// An activation: the option of a dense or convolution layer, or an activation layer.
#[derive(Clone, Copy)]
enum Act {
    Plain(Activation),
    Fn(ActivationFn),
}

impl Act {
    fn apply<const D: usize>(self, z: Tensor<D>) -> Tensor<D> {
        match self {
            Act::Plain(a) => a.apply(z),
            Act::Fn(f) => f.apply(z),
        }
    }

    fn apply_data(self, z: Data) -> Data {
        match z {
            Data::D2(t) => Data::D2(self.apply(t)),
            Data::D3(t) => Data::D3(self.apply(t)),
            Data::D4(t) => Data::D4(self.apply(t)),
        }
    }

    /// The softmax axis (of the batch tensor), for a softmax.
    fn softmax_axis(self, rank: usize) -> Option<usize> {
        match self {
            Act::Plain(Activation::Softmax) | Act::Fn(ActivationFn::Plain(Activation::Softmax)) => Some(rank - 1),
            Act::Fn(ActivationFn::Softmax(axis)) => Some(axis),
            _ => None,
        }
    }

    /// `dy · act'(z)` (`y = act(z)`, kept from the forward pass), for any layout of the same shape.
    fn grad<const D: usize>(self, z: Tensor<D>, y: Tensor<D>, dy: Tensor<D>) -> Tensor<D> {
        if let Some(axis) = self.softmax_axis(D) {
            // y ⊙ (dy − Σ_axis dy ⊙ y)
            let inner = (dy.clone() * y.clone()).sum_dim(axis);
            return y * (dy - inner);
        }
        let a = match self {
            Act::Plain(a) | Act::Fn(ActivationFn::Plain(a)) => a,
            Act::Fn(ActivationFn::LeakyRelu(alpha)) => return dy * slopes(z, 1.0, alpha),
            Act::Fn(ActivationFn::Elu(alpha)) => return dy * elu_slope(z, alpha, 1.0),
            Act::Fn(ActivationFn::GeluTanh) => return dy * gelu_tanh_slope(z),
            Act::Fn(ActivationFn::Softmax(_)) => unreachable!("handled above"),
        };
        match a {
            Activation::Linear => dy,
            Activation::Relu => dy * z.greater_elem(0.0).float(),
            // 1 on (0, 6), 0 elsewhere (PyTorch's hardtanh backward: the bounds themselves pass no gradient)
            Activation::Relu6 => dy * z.clone().greater_elem(0.0).float() * z.lower_elem(6.0).float(),
            Activation::Hardswish => {
                // 0 below -3, (2z + 3)/6 on [-3, 3], 1 above 3 (PyTorch's hardswish_backward)
                let inside = z.clone().greater_equal_elem(-3.0).float() * z.clone().lower_equal_elem(3.0).float();
                let above = z.clone().greater_elem(3.0).float();
                dy * (inside * z.mul_scalar(2.0 / 6.0).add_scalar(0.5) + above)
            }
            Activation::Silu => {
                // σ(z)·(1 + z·(1 − σ(z)))
                let s = act::sigmoid(z.clone());
                dy * (s.clone() * (z * s.neg().add_scalar(1.0)).add_scalar(1.0))
            }
            Activation::LeakyRelu => dy * slopes(z, 1.0, 0.01),
            Activation::Elu => dy * elu_slope(z, 1.0, 1.0),
            Activation::Selu => dy * elu_slope(z, SELU_ALPHA, SELU_SCALE),
            Activation::Tanh => dy * y.powi_scalar(2).neg().add_scalar(1.0),
            Activation::Sigmoid => dy * (y.clone() * y.neg().add_scalar(1.0)),
            Activation::Gelu => {
                // Φ(z) + z·φ(z), the derivative of the exact z·Φ(z)
                let cdf = z
                    .clone()
                    .mul_scalar(std::f64::consts::FRAC_1_SQRT_2)
                    .erf()
                    .add_scalar(1.0)
                    .mul_scalar(0.5);
                let pdf = z
                    .clone()
                    .powi_scalar(2)
                    .mul_scalar(-0.5)
                    .exp()
                    .mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt());
                dy * (cdf + z * pdf)
            }
            Activation::Mish => {
                // mish = z·tanh(softplus(z)): tanh(sp) + z·(1 − tanh²(sp))·sigmoid(z)
                let t = act::softplus(z.clone(), 1.0).tanh();
                let s = act::sigmoid(z.clone());
                dy * (t.clone() + z * t.powi_scalar(2).neg().add_scalar(1.0) * s)
            }
            Activation::Softmax => unreachable!("handled above"),
        }
    }

    fn grad_data(self, z: Data, y: Data, dy: Data) -> Result<Data> {
        Ok(match (z, y, dy) {
            (Data::D2(z), Data::D2(y), Data::D2(dy)) => Data::D2(self.grad(z, y, dy)),
            (Data::D3(z), Data::D3(y), Data::D3(dy)) => Data::D3(self.grad(z, y, dy)),
            (Data::D4(z), Data::D4(y), Data::D4(dy)) => Data::D4(self.grad(z, y, dy)),
            _ => return Err(Error::new("the gradient's rank differs from the activation's")),
        })
    }
}

/// `positive` where z > 0, `negative` elsewhere (ReLU family; the slope at 0 is PyTorch's, the negative one).
fn slopes<const D: usize>(z: Tensor<D>, positive: f64, negative: f64) -> Tensor<D> {
    z.greater_elem(0.0)
        .float()
        .mul_scalar(positive - negative)
        .add_scalar(negative)
}

/// `scale` where z > 0, `scale·alpha·exp(z)` elsewhere (ELU, SELU); exp of min(z, 0) so large z cannot overflow.
fn elu_slope<const D: usize>(z: Tensor<D>, alpha: f64, scale: f64) -> Tensor<D> {
    let positive = z.clone().greater_elem(0.0).float();
    let negative = z.clamp_max(0.0).exp().mul_scalar(alpha);
    (positive.clone() + positive.neg().add_scalar(1.0) * negative).mul_scalar(scale)
}

/// The derivative of the tanh form 0.5·z·(1 + tanh(c·(z + 0.044715·z³))), c = √(2/π).
fn gelu_tanh_slope<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (z.clone() + z.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(c);
    let t = inner.tanh();
    let d_inner = z
        .clone()
        .powi_scalar(2)
        .mul_scalar(3.0 * 0.044715)
        .add_scalar(1.0)
        .mul_scalar(c);
    t.clone().add_scalar(1.0).mul_scalar(0.5) + z.mul_scalar(0.5) * t.powi_scalar(2).neg().add_scalar(1.0) * d_inner
}

// ---------------------------------------------------------------------------------------------------------------
// Convolutions and pooling
// ---------------------------------------------------------------------------------------------------------------

/// The transposed convolution that inverts a convolution's geometry: its symmetric padding, output padding and
/// where the input starts in its output, per axis. The convolution read the input padded by (begin, end), and the
/// last `r` positions of the padded input no window reached (`r` < stride). A transposed convolution with padding
/// p = min(begin, end) and output padding r gives the input size plus |begin − end|; the input starts at begin − p.
fn transposed_geometry<const N: usize>(
    size: [usize; N],
    out: [usize; N],
    kernel: [usize; N],
    o: &ConvOptions<N>,
) -> ([usize; N], [usize; N], [usize; N]) {
    let (mut pad, mut extra, mut start) = ([0; N], [0; N], [0; N]);
    for i in 0..N {
        let (b, e) = o.padding[i];
        let padded = size[i] + b + e;
        let span = o.dilation[i] * (kernel[i] - 1) + 1;
        pad[i] = b.min(e);
        extra[i] = padded - span - (out[i] - 1) * o.stride[i];
        start[i] = b - pad[i];
    }
    (pad, extra, start)
}

/// The gradient of `conv2d(x, w, options)` w.r.t. `x` (spatial `size`) for the output gradient `dz`.
fn conv2d_input_grad(dz: Tensor<4>, w: Tensor<4>, o: &ConvOptions<2>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, oh, ow] = dz.dims();
    let [_, _, kh, kw] = w.dims();
    let (pad, extra, start) = transposed_geometry(size, [oh, ow], [kh, kw], o);
    let t = conv_transpose2d(
        dz,
        w,
        None,
        ConvTransposeOptions::new(o.stride, pad, extra, o.dilation, o.groups),
    );
    let [_, _, th, tw] = t.dims();
    if [th, tw] == size {
        t
    } else {
        t.narrow(2, start[0], size[0]).narrow(3, start[1], size[1])
    }
}

/// The gradient of `conv1d(x, w, options)` w.r.t. `x` (`[B, C, L]`, length `size`).
fn conv1d_input_grad(dz: Tensor<3>, w: Tensor<3>, o: &ConvOptions<1>, size: usize) -> Tensor<3> {
    let [_, _, ol] = dz.dims();
    let [_, _, k] = w.dims();
    let (pad, extra, start) = transposed_geometry([size], [ol], [k], o);
    let t = conv_transpose1d(
        dz,
        w,
        None,
        ConvTransposeOptions::new(o.stride, pad, extra, o.dilation, o.groups),
    );
    if t.dims()[2] == size {
        t
    } else {
        t.narrow(2, start[0], size)
    }
}

/// Average pooling: a depthwise convolution with the constant kernel 1, divided by the window's count (the whole
/// window, or with `count_include_pad = false` the input positions in it). Max pooling is not written.
fn avg_pool(p: &Pool, x: Data) -> Result<(Data, Backward)> {
    let dims = x.dims();
    let device = match &x {
        Data::D2(t) => t.device(),
        Data::D3(t) => t.device(),
        Data::D4(t) => t.device(),
    };
    Ok(match p.clone() {
        Pool::TwoD {
            kind: PoolKind::Avg2d,
            kernel,
            stride,
            padding,
            count_include_pad,
        } => {
            let out = p.forward2d(x.d4()?);
            let back: Backward = Box::new(move |dy: Data| {
                let dy = dy.d4()?;
                let [b, c, oh, ow] = dy.dims();
                let dtype = dy.dtype();
                let ones = |shape: [usize; 4]| Tensor::<4>::ones(shape, (&device, dtype));
                let count = if count_include_pad {
                    ones([1, 1, oh, ow]).mul_scalar((kernel[0] * kernel[1]) as f64)
                } else {
                    let counting = ConvOptions::new_with_padding(stride, padding, [1, 1], 1);
                    conv2d(
                        ones([1, 1, dims[2], dims[3]]),
                        ones([1, 1, kernel[0], kernel[1]]),
                        None,
                        counting,
                    )
                };
                let scaled = dy / count.expand([b, c, oh, ow]);
                let spread = ConvOptions::new_with_padding(stride, padding, [1, 1], c);
                let kernel_ones = ones([c, 1, kernel[0], kernel[1]]);
                Ok(vec![Data::D4(conv2d_input_grad(
                    scaled,
                    kernel_ones,
                    &spread,
                    [dims[2], dims[3]],
                ))])
            });
            (Data::D4(out), back)
        }
        Pool::OneD {
            kind: PoolKind::Avg1d,
            kernel,
            stride,
            padding,
            count_include_pad,
        } => {
            let out = p.forward1d(x.d3()?);
            let back: Backward = Box::new(move |dy: Data| {
                let dy = dy.d3()?.swap_dims(1, 2);
                let [b, c, ol] = dy.dims();
                let dtype = dy.dtype();
                let ones = |shape: [usize; 3]| Tensor::<3>::ones(shape, (&device, dtype));
                let count = if count_include_pad {
                    ones([1, 1, ol]).mul_scalar(kernel[0] as f64)
                } else {
                    let counting = ConvOptions::new_with_padding(stride, padding, [1], 1);
                    conv1d(ones([1, 1, dims[1]]), ones([1, 1, kernel[0]]), None, counting)
                };
                let scaled = dy / count.expand([b, c, ol]);
                let spread = ConvOptions::new_with_padding(stride, padding, [1], c);
                let dx = conv1d_input_grad(scaled, ones([c, 1, kernel[0]]), &spread, dims[1]);
                Ok(vec![Data::D3(dx.swap_dims(1, 2))])
            });
            (Data::D3(out), back)
        }
        _ => return Err(Error::new("no input gradient is written for max pooling")),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------------------------

/// The input gradient of x ↦ x̂ = (x − mean)/√(var + ε) over the last axis, from the gradient `g` w.r.t. x̂:
/// (g − mean(g) − x̂·mean(g·x̂)) / √(var + ε).
fn normalized_grad<const D: usize>(g: Tensor<D>, xhat: Tensor<D>, inv_std: Tensor<D>) -> Tensor<D> {
    let axis = D - 1;
    let mean_g = g.clone().mean_dim(axis);
    let mean_gx = (g.clone() * xhat.clone()).mean_dim(axis);
    (g - mean_g - xhat * mean_gx) * inv_std
}

/// x̂ and 1/√(var + ε) over the last axis (the biased variance, as PyTorch's normalizations).
fn normalize<const D: usize>(x: Tensor<D>, epsilon: f64) -> (Tensor<D>, Tensor<D>) {
    let axis = D - 1;
    let centered = x.clone() - x.mean_dim(axis);
    let var = centered.clone().powi_scalar(2).mean_dim(axis);
    let inv_std = var.add_scalar(epsilon).sqrt().recip();
    (centered * inv_std.clone(), inv_std)
}

/// `torch.nn.LayerNorm` over the last axis, with the full input gradient through the mean and variance.
fn layer_norm(l: &LayerNorm, x: Data) -> Result<(Data, Backward)> {
    let dims = x.dims();
    let f = dims[dims.len() - 1];
    let rows = x.dims()[..dims.len() - 1].iter().product::<usize>();
    let (xhat, inv_std) = normalize(x.reshape(&[rows, f])?.d2()?, l.epsilon);
    let w = l.weight.val().reshape([1, f]);
    let y = xhat.clone() * w.clone() + l.bias.val().reshape([1, f]);
    let out = Data::D2(y).reshape(&dims)?;
    let back: Backward = Box::new(move |dy: Data| {
        let g = dy.reshape(&[rows, f])?.d2()? * w;
        Ok(vec![Data::D2(normalized_grad(g, xhat, inv_std)).reshape(&dims)?])
    });
    Ok((out, back))
}

/// A tensor in the channels-first form `[B, C, S]` (S: the positions), whatever graft's layout of its rank:
/// `[B, F]`, `[B, L, C]` (channels last) or `[B, C, H, W]`.
fn channels_first(x: Data) -> Tensor<3> {
    match x {
        Data::D2(t) => {
            let [b, c] = t.dims();
            t.reshape([b, c, 1])
        }
        Data::D3(t) => t.swap_dims(1, 2),
        Data::D4(t) => {
            let [b, c, h, w] = t.dims();
            t.reshape([b, c, h * w])
        }
    }
}

/// The inverse of [`channels_first`] for a tensor of `dims`.
fn from_channels_first(t: Tensor<3>, dims: &[usize]) -> Result<Data> {
    Ok(match *dims {
        [b, c] => Data::D2(t.reshape([b, c])),
        [_, _, _] => Data::D3(t.swap_dims(1, 2)),
        [b, c, h, w] => Data::D4(t.reshape([b, c, h, w])),
        _ => return Err(Error::new(format!("normalization of a tensor shaped {dims:?}"))),
    })
}

/// Batch norm at inference: a per-channel affine map with the running statistics.
fn batch_norm(l: &BatchNorm, x: Data, training: bool) -> Result<(Data, Backward)> {
    if training {
        return Err(Error::new(
            "batch_norm in training: its batch statistics couple the samples; use layer_norm in a critic",
        ));
    }
    let dims = x.dims();
    let out = l.forward(x, false);
    let device = l.weight.val().device();
    let c = l.weight.dims()[0];
    let scale = (l.weight.val()
        * l.running_var
            .value()
            .to_device(&device)
            .add_scalar(l.epsilon)
            .sqrt()
            .recip())
    .reshape([1, c, 1]);
    let back: Backward = Box::new(move |dy: Data| Ok(vec![from_channels_first(channels_first(dy) * scale, &dims)?]));
    Ok((out, back))
}

/// Group norm (and instance norm): normalized over each group of channels and their positions, then a
/// per-channel affine map.
fn group_norm(l: &GroupNorm, x: Data) -> Result<(Data, Backward)> {
    let dims = x.dims();
    let cf = channels_first(x);
    let [b, c, s] = cf.dims();
    let groups = l.groups;
    let (xhat, inv_std) = normalize(cf.reshape([b, groups, c / groups * s]), l.epsilon);
    let w = l.weight.as_ref().map(|w| w.val().reshape([1, c, 1]));
    let mut y = xhat.clone().reshape([b, c, s]);
    if let Some(w) = &w {
        y = y * w.clone();
    }
    if let Some(bias) = &l.bias {
        y = y + bias.val().reshape([1, c, 1]);
    }
    let out = from_channels_first(y, &dims)?;
    let back: Backward = Box::new(move |dy: Data| {
        let mut g = channels_first(dy);
        if let Some(w) = w {
            g = g * w;
        }
        let dx = normalized_grad(g.reshape([b, groups, c / groups * s]), xhat, inv_std);
        Ok(vec![from_channels_first(dx.reshape([b, c, s]), &dims)?])
    });
    Ok((out, back))
}

// ---------------------------------------------------------------------------------------------------------------
// Merges and helpers
// ---------------------------------------------------------------------------------------------------------------

/// Add: the gradient goes to every input; multiply: times the product of the other inputs; concatenate: each input
/// gets its part.
fn merge(m: Merge, inputs: Vec<Data>) -> Result<(Data, Backward)> {
    let out = m.forward(inputs.iter().cloned().map(Value::new).collect())?.data;
    let back: Backward = match m {
        Merge::Add => {
            let n = inputs.len();
            Box::new(move |dy: Data| Ok(vec![dy; n]))
        }
        Merge::Multiply => Box::new(move |dy: Data| {
            let dims = dy.dims();
            let dy = flat(dy)?;
            let xs = inputs.into_iter().map(flat).collect::<Result<Vec<_>>>()?;
            (0..xs.len())
                .map(|i| {
                    let others = xs
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, x)| x.clone())
                        .fold(dy.clone(), |acc, x| acc * x);
                    Data::D2(others).reshape(&dims)
                })
                .collect()
        }),
        Merge::Concatenate(axis) => {
            let sizes: Vec<usize> = inputs.iter().map(|x| x.dims()[axis]).collect();
            Box::new(move |dy: Data| {
                let mut start = 0;
                Ok(sizes
                    .iter()
                    .map(|&len| {
                        let part = slice(dy.clone(), axis, start, len);
                        start += len;
                        part
                    })
                    .collect())
            })
        }
    };
    Ok((out, back))
}

/// Zeros around `t` along `axis`: `before` in front, `after` behind (the input gradient of a slice).
fn pad_axis<const D: usize>(t: Tensor<D>, axis: usize, before: usize, after: usize) -> Tensor<D> {
    let (device, dtype, dims) = (t.device(), t.dtype(), t.dims());
    let zeros = |n: usize| {
        let mut shape = dims;
        shape[axis] = n;
        Tensor::<D>::zeros(shape, (&device, dtype))
    };
    let mut parts = vec![];
    if before > 0 {
        parts.push(zeros(before));
    }
    parts.push(t);
    if after > 0 {
        parts.push(zeros(after));
    }
    Tensor::cat(parts, axis)
}

/// `[B, ...]` → `[B, ∏...]`.
fn flat(x: Data) -> Result<Tensor<2>> {
    let dims = x.dims();
    x.reshape(&[dims[0], dims[1..].iter().product()])?.d2()
}

fn add(a: Data, b: Data) -> Result<Data> {
    Ok(match (a, b) {
        (Data::D2(a), Data::D2(b)) => Data::D2(a + b),
        (Data::D3(a), Data::D3(b)) => Data::D3(a + b),
        (Data::D4(a), Data::D4(b)) => Data::D4(a + b),
        _ => return Err(Error::new("gradients of different ranks meet at one node")),
    })
}

/// `[dx]` after checking that it has the input's dims.
fn same_dims(dx: Data, dims: &[usize]) -> Result<Vec<Data>> {
    if dx.dims() != dims {
        return Err(Error::new(format!(
            "the input gradient is shaped {:?}, the input {dims:?}",
            dx.dims()
        )));
    }
    Ok(vec![dx])
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::optim::GradientsParams;
    use burn::prelude::*;
    use burn::tensor::{Distribution, TensorData};

    use super::flat;
    use crate::layers::value::Data;
    use crate::model::graph::Graph;
    use crate::model::params::{ParamMapper, ParamPath, ParamVisitor, map_params, visit_params};
    use crate::model::spec::ModelSpec;

    /// A model from the TOML of its `[model]` table, every parameter drawn uniformly in [-1, 1] (so biases and
    /// normalization weights are not at their initial 0 and 1; running variances in [0.5, 1.5]).
    fn model(src: &str, device: &Device) -> Graph {
        let doc: toml::Table = toml::from_str(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let spec = ModelSpec::from_toml(&toml::Value::Table(doc), "model").unwrap_or_else(|e| panic!("{e}\n{src}"));
        let graph = Graph::build(&spec, device).unwrap_or_else(|e| panic!("{e}\n{src}"));
        struct Draw;
        impl ParamMapper for Draw {
            fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let device = param.lazy_device();
                let dims = param.val().dims();
                let (lo, hi) = if path.name().ends_with("running_var") {
                    (0.5, 1.5)
                } else {
                    (-1.0, 1.0)
                };
                let t = Tensor::<D>::random(dims, Distribution::Uniform(lo, hi), &device);
                let id = param.id;
                param.transform_for_load(t, id)
            }
        }
        map_params(graph, &mut Draw)
    }

    fn input_dims(graph: &Graph, batch: usize) -> Vec<usize> {
        std::iter::once(batch)
            .chain(graph.spec.inputs[0].shape.iter().copied())
            .collect()
    }

    fn host(d: Data) -> Vec<f64> {
        flat(d)
            .expect("rank 2 to 4")
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("float data")
    }

    /// burn's own first-order gradient of Σ output w.r.t. the input `x` (flattened `[B, ∏shape]`).
    fn autodiff_gradient(graph: &Graph, x: Tensor<2>, dims: &[usize], training: bool) -> Vec<f64> {
        let leaf = x.require_grad();
        let data = Data::D2(leaf.clone()).reshape(dims).expect("input rank");
        let out = graph.forward(vec![data], training, false).expect("forward").remove(0);
        let grads = flat(out.data).expect("output").sum().backward();
        leaf.grad(&grads)
            .expect("a gradient w.r.t. the input")
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("float data")
    }

    /// The largest |a − b| / max(1, |b|).
    fn max_error(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f64::max)
    }

    /// `input_gradient` against burn's first-order autodiff, for one model, batch 3; returns the error.
    fn compare_with_autodiff(name: &str, src: &str, training: bool) -> f64 {
        let device = Device::default().autodiff();
        device.seed(7);
        let graph = model(src, &device);
        let dims = input_dims(&graph, 3);
        let per: usize = dims[1..].iter().product();
        let x = Tensor::<2>::random([3, per], Distribution::Uniform(-1.5, 1.5), &device);
        device.seed(11);
        let ours = graph
            .input_gradient(Data::D2(x.clone()).reshape(&dims).unwrap(), training)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.dims(), dims, "{name}: the gradient's shape");
        device.seed(11);
        let reference = autodiff_gradient(&graph, x, &dims, training);
        assert!(
            reference.iter().any(|v| *v != 0.0),
            "{name}: a zero reference gradient tests nothing"
        );
        let e = max_error(&host(ours), &reference);
        assert!(e < 1e-5, "{name}: input gradient differs from autodiff by {e:.2e}");
        e
    }

    const MLP: &str = r#"
        input = [5]
        layers = [
            { dense = { units = 8, activation = "leaky_relu" } },
            { dense = { units = 6, activation = "tanh" } },
            { dense = { units = 1 } },
        ]
    "#;

    const CNN: &str = r#"
        input = [2, 7, 6]
        layers = [
            { conv2d = { filters = 3, kernel = 3, stride = 2, padding = 1 } },
            { leaky_relu = { alpha = 0.2 } },
            { flatten = {} },
            { dense = { units = 1 } },
        ]
    "#;

    const NORM_GELU: &str = r#"
        input = [4]
        layers = [
            { dense = { units = 6 } },
            { layer_norm = {} },
            { gelu = {} },
            { dense = { units = 1 } },
        ]
    "#;

    #[test]
    fn mlp_and_cnn_match_first_order_autodiff() {
        compare_with_autodiff("mlp", MLP, false);
        compare_with_autodiff("cnn", CNN, false);
        compare_with_autodiff("layer_norm + gelu", NORM_GELU, false);
    }

    #[test]
    fn every_supported_layer_matches_first_order_autodiff() {
        let cases: &[(&str, &str)] = &[
            (
                "conv2d same/stride/dilation/groups, global average",
                r#"
                input = [4, 9, 8]
                layers = [
                    { conv2d = { filters = 4, kernel = 3, dilation = 2, groups = 2, padding = "same", activation = "elu" } },
                    { conv2d = { filters = 2, kernel = [2, 3], stride = [2, 1], padding = "same", activation = "relu" } },
                    { conv2d = { filters = 3, kernel = 2, stride = 2, padding = "same", use_bias = false, activation = "gelu" } },
                    { global_avg_pool2d = {} },
                    { dense = { units = 1, activation = "sigmoid" } },
                ]
                "#,
            ),
            (
                "conv1d and average pools",
                r#"
                input = [9, 3]
                layers = [
                    { conv1d = { filters = 4, kernel = 3, stride = 2, padding = "same", activation = "elu" } },
                    { conv1d = { filters = 4, kernel = 2, groups = 2, dilation = 2, padding = 1, activation = "selu" } },
                    { avg_pool1d = { size = 2, stride = 1, padding = "same", count_include_pad = false } },
                    { avg_pool1d = { size = 3, stride = 2, padding = 1 } },
                    { global_avg_pool1d = {} },
                    { dense = { units = 1 } },
                ]
                "#,
            ),
            (
                "avg_pool2d",
                r#"
                input = [2, 7, 6]
                layers = [
                    { avg_pool2d = { size = 3, stride = 2, padding = 1 } },
                    { avg_pool2d = { size = 2, stride = 1, padding = "same", count_include_pad = false } },
                    { avg_pool2d = { size = [2, 3], stride = 1, padding = [1, 0], count_include_pad = false } },
                    { flatten = {} },
                    { dense = { units = 1 } },
                ]
                "#,
            ),
            (
                "conv_transpose, reshape, permute",
                r#"
                input = [2, 3, 3]
                layers = [
                    { conv_transpose2d = { filters = 3, kernel = 3, stride = 2, padding = 1, output_padding = 1, activation = "tanh" } },
                    { reshape = { shape = [3, 36] } },
                    { permute = { dims = [1, 0] } },
                    { conv_transpose1d = { filters = 2, kernel = 3, stride = 2, padding = 1, dilation = 2 } },
                    { flatten = {} },
                    { dense = { units = 1 } },
                ]
                "#,
            ),
            (
                "normalizations and activations on sequences",
                r#"
                input = [4, 6]
                layers = [
                    { layer_norm = { epsilon = 0.001 } },
                    { gelu = {} },
                    { dense = { units = 6, activation = "mish" } },
                    { group_norm = { groups = 3 } },
                    { gelu = { approximate = true } },
                    { instance_norm = { affine = true } },
                    { batch_norm = {} },
                    { elu = { alpha = 0.7 } },
                    { softmax = { axis = 0 } },
                    { dropout = { rate = 0.4 } },
                    { flatten = {} },
                    { dense = { units = 1, activation = "tanh" } },
                ]
                "#,
            ),
            (
                "norms on images",
                r#"
                input = [4, 3, 3]
                layers = [
                    { group_norm = { groups = 2 } },
                    { batch_norm = {} },
                    { instance_norm = {} },
                    { layer_norm = {} },
                    { sigmoid = {} },
                    { flatten = {} },
                    { batch_norm = {} },
                    { dense = { units = 1 } },
                ]
                "#,
            ),
            (
                "a graph: shared weights, add, multiply, concatenate, slice, a node feeding several",
                r#"
                inputs = { x = [6] }
                outputs = ["score"]
                [[nodes]]
                name = "h"
                from = ["x"]
                dense = { units = 6, activation = "elu" }
                [[nodes]]
                name = "h2"
                from = ["h"]
                shared = "h"
                [[nodes]]
                name = "a"
                from = ["h2"]
                dense = { units = 5, activation = "relu" }
                [[nodes]]
                name = "b"
                from = ["x"]
                dense = { units = 5, activation = "sigmoid" }
                [[nodes]]
                name = "s"
                from = ["a", "b"]
                add = {}
                [[nodes]]
                name = "m"
                from = ["a", "b", "s"]
                multiply = {}
                [[nodes]]
                name = "c"
                from = ["s", "m", "x"]
                concatenate = {}
                [[nodes]]
                name = "cut"
                from = ["c"]
                slice = { start = 2, end = 13 }
                [[nodes]]
                name = "score"
                from = ["cut"]
                dense = { units = 1 }
                "#,
            ),
        ];
        for (name, src) in cases {
            let e = compare_with_autodiff(name, src, false);
            eprintln!("{name}: {e:.1e}");
        }
        for a in crate::layers::activation::Activation::NAMES {
            let src = format!(
                "input = [3, 4]\nlayers = [{{ dense = {{ units = 5, activation = \"{a}\" }} }}, {{ activation = \"{a}\" }}, {{ flatten = {{}} }}, {{ dense = {{ units = 1 }} }}]"
            );
            compare_with_autodiff(a, &src, false);
        }
    }

    /// In training, dropout draws one mask in the forward pass and uses it in the backward: with the device
    /// reseeded, the same mask as `Graph::forward` draws.
    #[test]
    fn dropout_in_training_keeps_its_mask_for_the_backward() {
        // The check reseeds the device's generator between two passes that must draw the same mask; tests on other
        // threads draw from the same generator, so it runs alone in a child process.
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args([
                "model::input_grad::tests::dropout_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DROPOUT_CHILD_ENV, "1")
            .output()
            .expect("start the child");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("dropout child done"), "{text}");
    }

    const DROPOUT_CHILD_ENV: &str = "GRAFT_INPUT_GRAD_DROPOUT";

    #[test]
    #[ignore = "run by dropout_in_training_keeps_its_mask_for_the_backward in its own process"]
    fn dropout_child() {
        if std::env::var(DROPOUT_CHILD_ENV).is_err() {
            return;
        }
        let src = r#"
            input = [40]
            layers = [
                { dense = { units = 30, activation = "tanh" } },
                { dropout = { rate = 0.5 } },
                { dense = { units = 1 } },
            ]
        "#;
        compare_with_autodiff("dropout in training", src, true);
        eprintln!("dropout child done");
    }

    fn penalty(g: Data) -> Tensor<1> {
        let g = flat(g).unwrap();
        g.powi_scalar(2).sum_dim(1).sqrt().sub_scalar(1.0).powi_scalar(2).mean()
    }

    /// Every parameter's gradient of the penalty: (name, values).
    fn penalty_gradients(graph: &Graph, x: Data) -> Vec<(String, Vec<f64>)> {
        let grads = penalty(graph.input_gradient(x, true).unwrap()).backward();
        let grads = GradientsParams::from_grads(grads, graph);
        struct Collect<'a>(&'a GradientsParams, Vec<(String, Vec<f64>)>);
        impl ParamVisitor for Collect<'_> {
            fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
                // No gradient: the parameter does not reach the input gradient (the output layer's bias).
                let values = match self.0.get::<D>(param.id) {
                    Some(g) => g.into_data().convert::<f64>().try_to_vec::<f64>().unwrap(),
                    None => vec![0.0; param.val().dims().iter().product()],
                };
                self.1.push((path.name(), values));
            }
        }
        let mut c = Collect(&grads, vec![]);
        visit_params(graph, &mut c);
        c.1
    }

    /// The gradient penalty backpropagates to every parameter (the input gradient carries the autodiff graph),
    /// with a zero gradient exactly where the input gradient does not depend on the parameter: the output layer's
    /// bias moves the score, not its gradient, and in the CNN, piecewise linear, the biases only move where the
    /// leaky ReLU bends.
    #[test]
    fn the_penalty_reaches_every_parameter() {
        for (name, src, zero) in [
            ("mlp", MLP, &["dense_3.bias"][..]),
            ("cnn", CNN, &["conv2d_1.bias", "dense_1.bias"][..]),
            ("layer_norm + gelu", NORM_GELU, &["dense_2.bias"][..]),
        ] {
            let device = Device::default().autodiff();
            device.seed(3);
            let graph = model(src, &device);
            let dims = input_dims(&graph, 4);
            let x = Tensor::<2>::random([4, dims[1..].iter().product()], Distribution::Default, &device);
            let grads = penalty_gradients(&graph, Data::D2(x).reshape(&dims).unwrap());
            assert!(grads.len() >= 4);
            for (param, g) in grads {
                assert!(g.iter().all(|v| v.is_finite()), "{name} {param}: {g:?}");
                let is_zero = g.iter().all(|v| *v == 0.0);
                assert_eq!(is_zero, zero.contains(&param.as_str()), "{name} {param}: {g:?}");
            }
        }
    }

    /// The environment variable naming the model a float64 child process checks.
    const CHILD_ENV: &str = "GRAFT_INPUT_GRAD_F64";

    /// The penalty's gradient w.r.t. every parameter (burn's autodiff through `input_gradient`) against central
    /// differences of the penalty computed from burn's own first-order input gradient (`x.grad`), independent of
    /// this module, in float64 (h = 1e-6; error = |a − b| / max(|a|, |b|, 1) ≤ 1e-6, as the float64 gradchecks in
    /// `tests/numerics/gradcheck.rs`, whose documentation says why a child process: float64 is a device setting).
    #[test]
    fn penalty_gradients_match_finite_differences_in_float64() {
        for name in ["mlp", "cnn", "layer_norm_gelu"] {
            let exe = std::env::current_exe().expect("the test binary");
            let out = std::process::Command::new(exe)
                .args([
                    "model::input_grad::tests::float64_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, name)
                .output()
                .expect("start the float64 child");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && text.contains("penalty gradcheck"),
                "{name}:\n{text}"
            );
            for line in text.lines().filter(|l| l.starts_with("penalty gradcheck")) {
                eprintln!("{line}");
            }
        }
    }

    #[test]
    #[ignore = "run by penalty_gradients_match_finite_differences_in_float64 in its own float64 process"]
    fn float64_child() {
        use burn::tensor::{DType, FloatDType};
        let Ok(name) = std::env::var(CHILD_ENV) else {
            return;
        };
        let mut plain = Device::default();
        plain
            .configure(FloatDType::F64)
            .expect("float64 before any tensor exists");
        let src = match name.as_str() {
            "mlp" => MLP,
            "cnn" => CNN,
            _ => NORM_GELU,
        };
        let device = plain.clone().autodiff();
        device.seed(5);
        let graph = model(src, &device);
        let dims = input_dims(&graph, 3);
        let per: usize = dims[1..].iter().product();
        let xv: Vec<f64> = Tensor::<2>::random([3, per], Distribution::Uniform(-1.5, 1.5), &plain)
            .into_data()
            .try_to_vec::<f64>()
            .unwrap();
        let x = || Tensor::<2>::from_data(TensorData::new(xv.clone(), [3, per]), &device);
        let analytic = penalty_gradients(&graph, Data::D2(x()).reshape(&dims).unwrap());

        // The penalty from burn's first-order gradient w.r.t. the input, with parameter `k`'s entry `i` moved by s.
        let at = |k: usize, i: usize, s: f64| -> f64 {
            struct Shift(usize, usize, f64, usize);
            impl ParamMapper for Shift {
                fn map<const D: usize>(&mut self, _: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                    let k = self.3;
                    self.3 += 1;
                    if k != self.0 {
                        return param;
                    }
                    let t = param.val();
                    let (dims, device) = (t.dims(), t.device());
                    let mut v = t.into_data().try_to_vec::<f64>().unwrap();
                    v[self.1] += self.2;
                    let id = param.id;
                    param.transform_for_load(Tensor::from_data(TensorData::new(v, dims), &device), id)
                }
            }
            let moved = map_params(graph.clone(), &mut Shift(k, i, s, 0));
            let g = autodiff_gradient(&moved, x(), &dims, true);
            let rows: Vec<f64> = g
                .chunks(per)
                .map(|r| (r.iter().map(|v| v * v).sum::<f64>().sqrt() - 1.0).powi(2))
                .collect();
            rows.iter().sum::<f64>() / rows.len() as f64
        };
        let h = 1e-6;
        let mut worst = 0.0f64;
        let mut count = 0;
        for (k, (param, grad)) in analytic.iter().enumerate() {
            for (i, a) in grad.iter().enumerate() {
                let numeric = (at(k, i, h) - at(k, i, -h)) / (2.0 * h);
                let e = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1.0);
                assert!(
                    e <= 1e-6,
                    "{name} {param}[{i}]: autodiff {a:e}, finite difference {numeric:e}"
                );
                worst = worst.max(e);
                count += 1;
            }
        }
        let objective = penalty(
            graph
                .input_gradient(Data::D2(x()).reshape(&dims).unwrap(), true)
                .unwrap(),
        );
        assert_eq!(objective.dtype(), DType::F64, "the check runs in float64");
        eprintln!("penalty gradcheck {name}: max error {worst:.1e} over all {count} parameter entries");
    }

    #[test]
    fn unsupported_models_are_one_line_errors() {
        let device = Device::default().autodiff();
        let cases = [
            (
                r#"
                input = [1, 4, 4]
                layers = [{ max_pool2d = { size = 2 }, name = "pool" }, { flatten = {} }, { dense = { units = 1 } }]
                "#,
                false,
                "layer 'pool': max_pool2d: its input gradient is not written; the input gradient supports dense, conv1d",
            ),
            (
                r#"
                input = [3]
                layers = [{ batch_norm = {}, name = "bn" }, { dense = { units = 1 } }]
                "#,
                true,
                "layer 'bn': batch_norm: in training its batch statistics couple the samples",
            ),
            (
                r#"
                input = [3]
                layers = [{ dense = { units = 2 } }]
                "#,
                false,
                "an output of one value per sample (a critic's score, shape [1]), found [2]",
            ),
        ];
        for (src, training, expected) in cases {
            let graph = model(src, &device);
            let dims = input_dims(&graph, 2);
            let x = Data::D2(Tensor::<2>::zeros([2, dims[1..].iter().product()], &device))
                .reshape(&dims)
                .unwrap();
            let e = graph.input_gradient(x, training).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
