//! Activation functions, usable as a layer (`{ relu = {} }`, `{ activation = "gelu" }`) or as the `activation`
//! option of dense, convolution and recurrent layers.

use burn::prelude::*;
use burn::tensor::activation as act;
use serde::{Deserialize, Serialize};

/// An element-wise (or, for softmax, last-axis) activation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    /// `min(max(x, 0), 6)`, MobileNet's and EfficientNet-Lite's.
    Relu6,
    /// `x·relu6(x + 3)/6`, MobileNetV3's.
    Hardswish,
    /// `x·sigmoid(x)` (swish), EfficientNet's.
    Silu,
    /// `max(x, 0.01·x)`; use the `leaky_relu` layer for another slope.
    LeakyRelu,
    /// `alpha = 1`.
    Elu,
    Selu,
    /// The exact (erf) form, as PyTorch's default.
    Gelu,
    Mish,
    Tanh,
    Sigmoid,
    /// Over the last axis.
    Softmax,
    #[default]
    Linear,
}

/// GELU in its exact (erf) form: the fused operation on the CPU backend (f32), burn's elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if graft_kernels::applies(&x) {
        graft_kernels::gelu(x)
    } else {
        act::gelu(x)
    }
}

/// Softmax over the last axis: the fused operation on the CPU backend (f32), burn's elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if graft_kernels::applies(&x) {
        graft_kernels::softmax(x)
    } else {
        act::softmax(x, D - 1)
    }
}

impl Activation {
    pub const NAMES: [&'static str; 13] = [
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

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => act::relu(x),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Hardswish => act::hard_swish(x),
            Activation::Silu => act::silu(x),
            Activation::LeakyRelu => act::leaky_relu(x, 0.01),
            Activation::Elu => act::elu(x, 1.0),
            Activation::Selu => act::selu(x),
            Activation::Gelu => gelu(x),
            Activation::Mish => act::mish(x),
            Activation::Tanh => act::tanh(x),
            Activation::Sigmoid => act::sigmoid(x),
            Activation::Softmax => softmax_last(x),
            Activation::Linear => x,
        }
    }

    /// Whether the loss should see the input of this activation instead (it turns logits into probabilities).
    pub fn is_probability(self) -> bool {
        matches!(self, Activation::Softmax | Activation::Sigmoid)
    }
}

/// An activation used as a layer of its own, with its parameters where it has any.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakyReluConfig {
    #[serde(default = "default_leaky_alpha")]
    pub alpha: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EluConfig {
    #[serde(default = "one")]
    pub alpha: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GeluConfig {
    /// The tanh approximation instead of the exact erf form.
    #[serde(default)]
    pub approximate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftmaxConfig {
    /// The axis of the per-sample shape (negative counts from the end).
    #[serde(default = "minus_one")]
    pub axis: i64,
}

/// Parameter-free layers need no options: `{ relu = {} }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

fn default_leaky_alpha() -> f64 {
    0.01
}
fn one() -> f64 {
    1.0
}
fn minus_one() -> i64 {
    -1
}

/// The runtime form of any activation layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActivationFn {
    Plain(Activation),
    LeakyRelu(f64),
    Elu(f64),
    GeluTanh,
    /// Softmax over this batch-tensor axis.
    Softmax(usize),
}

impl ActivationFn {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            ActivationFn::Plain(a) => a.apply(x),
            ActivationFn::LeakyRelu(alpha) => act::leaky_relu(x, alpha),
            ActivationFn::Elu(alpha) => act::elu(x, alpha),
            ActivationFn::GeluTanh => act::gelu_approximate(x),
            ActivationFn::Softmax(axis) if axis == D - 1 => softmax_last(x),
            ActivationFn::Softmax(axis) => act::softmax(x, axis),
        }
    }

    pub fn is_probability(self, rank: usize) -> bool {
        match self {
            ActivationFn::Plain(a) => a.is_probability(),
            ActivationFn::Softmax(axis) => axis + 1 == rank,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(a: Activation, xs: [f32; 4]) -> Vec<f32> {
        let device = Device::default();
        let x = Tensor::<2>::from_floats([xs], &device);
        a.apply(x).into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn values_match_pytorch() {
        // the PyTorch definitions evaluated in f64 (tools/reference/activations.py prints them)
        let x = [-2.0, -0.5, 0.0, 1.5];
        let cases: [(Activation, [f32; 4]); 12] = [
            (Activation::Relu, [0.0, 0.0, 0.0, 1.5]),
            (Activation::Relu6, [0.0, 0.0, 0.0, 1.5]),
            (Activation::Hardswish, [-0.333_333_34, -0.208_333_33, 0.0, 1.125]),
            (Activation::Silu, [-0.238_405_84, -0.188_770_33, 0.0, 1.226_361_9]),
            (Activation::LeakyRelu, [-0.02, -0.005, 0.0, 1.5]),
            (Activation::Elu, [-0.864_664_7, -0.393_469_34, 0.0, 1.5]),
            (Activation::Selu, [-1.520_166_3, -0.691_758_2, 0.0, 1.576_051_5]),
            (Activation::Gelu, [-0.045_500_26, -0.154_268_47, 0.0, 1.399_789_5]),
            (Activation::Mish, [-0.252_501_5, -0.220_743_77, 0.0, 1.403_378_3]),
            (Activation::Tanh, [-0.964_027_6, -0.462_117_16, 0.0, 0.905_148_25]),
            (Activation::Sigmoid, [0.119_202_92, 0.377_540_67, 0.5, 0.817_574_5]),
            (Activation::Linear, [-2.0, -0.5, 0.0, 1.5]),
        ];
        for (a, expected) in cases {
            let got = apply(a, x);
            for (g, e) in got.iter().zip(expected) {
                assert!((g - e).abs() < 1e-5, "{a:?}: got {got:?}, expected {expected:?}");
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let got = apply(Activation::Softmax, [1.0, 2.0, 3.0, 4.0]);
        // torch.softmax(torch.tensor([1., 2., 3., 4.]), 0)
        let expected = [0.032_058_6, 0.087_144_32, 0.236_882_82, 0.643_914_3];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6);
        }
    }
}
