//! Dense (fully connected) layer: `y = act(x·Wᵀ + b)` over the last axis, PyTorch `nn.Linear` parameters
//! `weight [units, in]` and `bias [units]`.

use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::activation::Activation;
use super::init::Initializer;
use super::{Ctx, Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseConfig {
    pub units: usize,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default = "yes")]
    pub use_bias: bool,
    #[serde(default = "glorot")]
    pub kernel_initializer: Initializer,
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    /// L2 penalty `l2·Σw²` on the weight, added to the loss.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub l2: f64,
    /// After every step, rescale each unit's incoming weight vector to at most this norm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_norm: Option<f64>,
}

pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn glorot() -> Initializer {
    Initializer::GlorotUniform
}
pub(crate) fn zeros() -> Initializer {
    Initializer::Zeros
}
pub(crate) fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl DenseConfig {
    pub fn new(units: usize) -> Self {
        DenseConfig {
            units,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            l2: 0.0,
            max_norm: None,
        }
    }

    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Input `[..., in]` → output `[..., units]`.
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        if self.units == 0 {
            return Err(shape_err("units must be at least 1"));
        }
        let Some(_) = input.last() else {
            return Err(shape_err("dense needs an input with at least one axis"));
        };
        let mut out = input.clone();
        *out.last_mut().unwrap() = self.units;
        Ok(out)
    }

    pub fn init(&self, input: &Shape, device: &Device) -> Dense {
        let fan_in = *input.last().unwrap_or(&1);
        Dense {
            weight: self.kernel_initializer.init([self.units, fan_in], device),
            bias: self.use_bias.then(|| self.bias_initializer.init([self.units], device)),
            activation: self.activation,
        }
    }
}

#[derive(Module, Debug)]
pub struct Dense {
    /// `[out, in]`, as `torch.nn.Linear`.
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub activation: Activation,
}

impl Dense {
    /// `[..., in]` → `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>, ctx: &Ctx) -> Tensor<D> {
        // Outside autodiff a ReLU is applied as the product's tiles are stored.
        let relu = self.activation == Activation::Relu;
        match linear_inference(&x, &self.weight, self.bias.as_ref(), relu) {
            Some(y) if relu => y,
            Some(y) => ctx.activate(self.activation, y),
            None => ctx.activate(self.activation, linear(x, &self.weight, self.bias.as_ref())),
        }
    }
}

/// `x·Wᵀ + b` with a PyTorch-layout weight `[out, in]`.
pub fn linear<const D: usize>(x: Tensor<D>, weight: &Param<Tensor<2>>, bias: Option<&Param<Tensor<1>>>) -> Tensor<D> {
    if let Some(y) = linear_inference(&x, weight, bias, false) {
        return y;
    }
    linear_tensors(x, weight.val(), bias.map(|b| b.val()))
}

/// [`linear`] (through the ReLU when `relu`) as the fused inference operation, where no gradient is tracked and
/// the fused kernels apply: the model's weight is packed once for every call after (`graft_kernels::
/// dense_inference`). `None` otherwise.
fn linear_inference<const D: usize>(
    x: &Tensor<D>,
    weight: &Param<Tensor<2>>,
    bias: Option<&Param<Tensor<1>>>,
    relu: bool,
) -> Option<Tensor<D>> {
    let device = x.device();
    if D < 2 || device.is_autodiff() || !graft_kernels::applies(x) {
        return None;
    }
    let product = |x, w, b| graft_kernels::dense_inference(x, w, b, relu);
    Some(over_rows(x.clone(), weight.val(), bias.map(|b| b.val()), product))
}

/// [`linear`] with the weight `[out, in]` and bias as tensors (say, a sum of two biases).
pub fn linear_tensors<const D: usize>(x: Tensor<D>, w: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    if D >= 2 && graft_kernels::applies(&x) {
        // One fused operation on the CPU backend: the weight gradient comes out in the weight's own layout.
        return over_rows(x, w, bias, graft_kernels::dense);
    }
    burn::tensor::module::linear(x, w.transpose(), bias)
}

/// A fused dense `product` (`[rows, in]`, `[out, in]`, `[out]` → `[rows, out]`) over the last axis of `x`
/// `[..., in]`, every other axis taken as rows; no bias is a bias of zeros.
fn over_rows<const D: usize>(
    x: Tensor<D>,
    w: Tensor<2>,
    bias: Option<Tensor<1>>,
    product: impl FnOnce(Tensor<2>, Tensor<2>, Tensor<1>) -> Tensor<2>,
) -> Tensor<D> {
    let dims = x.dims();
    let in_features = dims[D - 1];
    let rows: usize = dims[..D - 1].iter().product();
    let out_features = w.dims()[0];
    let b = bias.unwrap_or_else(|| Tensor::<1>::zeros([out_features], &x.device()));
    let y = product(x.reshape([rows, in_features]), w, b);
    let mut out_dims = dims;
    out_dims[D - 1] = out_features;
    y.reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::prelude::*;
    use burn::tensor::Distribution;

    /// The fused op inside autodiff gives the composed `x·Wᵀ + b`'s output and gradients, for a sequence input,
    /// whether or not the input asks for its gradient (a first layer's does not, and its backward skips `dx`).
    #[test]
    fn fused_dense_matches_the_composed_linear_with_gradients() {
        for track_x in [true, false] {
            fused_dense_matches_the_composed_linear(track_x);
        }
    }

    fn fused_dense_matches_the_composed_linear(track_x: bool) {
        let device = Device::default().autodiff();
        let x = Tensor::<3>::random([3, 4, 5], Distribution::Uniform(-1.0, 1.0), &device);
        let x = if track_x { x.require_grad() } else { x };
        let w = Param::from_tensor(Tensor::<2>::random([6, 5], Distribution::Uniform(-1.0, 1.0), &device));
        let b = Param::from_tensor(Tensor::<1>::random([6], Distribution::Uniform(-1.0, 1.0), &device));
        let weights = Tensor::<3>::random([3, 4, 6], Distribution::Uniform(-1.0, 1.0), &device);
        let fused = super::linear(x.clone(), &w, Some(&b));
        let composed = burn::tensor::module::linear(x.clone(), w.val().transpose(), Some(b.val()));
        let values = |t: Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
        let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
            assert_eq!(a.len(), b.len());
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{what}: {p} vs {q}");
            }
        };
        close(values(fused.clone()), values(composed.clone()), "output");
        let g_f = (fused * weights.clone()).sum().backward();
        let g_c = (composed * weights).sum().backward();
        match (x.grad(&g_f), x.grad(&g_c)) {
            (Some(f), Some(c)) if track_x => close(values(f), values(c), "d x"),
            (None, None) if !track_x => {}
            (f, c) => panic!(
                "d x with track_x {track_x}: fused {}, composed {}",
                f.is_some(),
                c.is_some()
            ),
        }
        let flat2 = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        close(
            flat2(w.val().grad(&g_f).unwrap()),
            flat2(w.val().grad(&g_c).unwrap()),
            "d w",
        );
        let flat1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
        close(
            flat1(b.val().grad(&g_f).unwrap()),
            flat1(b.val().grad(&g_c).unwrap()),
            "d b",
        );
    }
}
