//! Transposed convolutions (PyTorch's `ConvTranspose1d`/`ConvTranspose2d`): the upsampling half of convolutional
//! autoencoders, decoders and GAN generators. `conv_transpose2d` takes images `[C, H, W]`; `conv_transpose1d`
//! takes sequences `[L, C]` like `conv1d`. Weights are PyTorch's `[in, out/groups, k...]` (the transpose of a
//! convolution's), so state dicts exchange as they are; the output size is PyTorch's
//! `(in − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::ops::ConvTransposeOptions;
use serde::{Deserialize, Serialize};

use super::activation::Activation;
use super::conv::{Dims, check_sizes, expect_rank};
use super::dense::{glorot, is_zero, yes, zeros};
use super::init::Initializer;
use super::{Ctx, Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvTransposeConfig {
    /// Output channels.
    pub filters: usize,
    pub kernel: Dims,
    #[serde(default = "one")]
    pub stride: Dims,
    /// Removed from both ends of every spatial axis of the output (PyTorch's `padding`).
    #[serde(default = "zero")]
    pub padding: Dims,
    /// Added at the end of every spatial axis, to pick among the input sizes a strided convolution maps to the
    /// same output size; smaller than the stride or the dilation.
    #[serde(default = "zero")]
    pub output_padding: Dims,
    #[serde(default = "one")]
    pub dilation: Dims,
    #[serde(default = "one_usize")]
    pub groups: usize,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default = "yes")]
    pub use_bias: bool,
    #[serde(default = "glorot")]
    pub kernel_initializer: Initializer,
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub l2: f64,
}

fn one() -> Dims {
    Dims::One(1)
}
fn zero() -> Dims {
    Dims::One(0)
}
fn one_usize() -> usize {
    1
}

/// Resolved sizes for `N` spatial axes.
struct Geometry<const N: usize> {
    kernel: [usize; N],
    options: ConvTransposeOptions<N>,
    out: [usize; N],
}

impl ConvTransposeConfig {
    pub fn new(filters: usize, kernel: impl Into<Dims>) -> Self {
        ConvTransposeConfig {
            filters,
            kernel: kernel.into(),
            stride: one(),
            padding: zero(),
            output_padding: zero(),
            dilation: one(),
            groups: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            l2: 0.0,
        }
    }

    pub fn with_stride(mut self, stride: impl Into<Dims>) -> Self {
        self.stride = stride.into();
        self
    }

    pub fn with_padding(mut self, padding: impl Into<Dims>) -> Self {
        self.padding = padding.into();
        self
    }

    pub fn with_output_padding(mut self, output_padding: impl Into<Dims>) -> Self {
        self.output_padding = output_padding.into();
        self
    }

    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    fn geometry<const N: usize>(&self, channels: usize, sizes: [usize; N]) -> Result<Geometry<N>> {
        let kernel = self.kernel.resolve::<N>("kernel")?;
        let stride = self.stride.resolve::<N>("stride")?;
        let padding = self.padding.resolve::<N>("padding")?;
        let output_padding = self.output_padding.resolve::<N>("output_padding")?;
        let dilation = self.dilation.resolve::<N>("dilation")?;
        check_sizes(self.filters, self.groups, channels, [&kernel, &stride, &dilation])?;
        if sizes.contains(&0) {
            return Err(shape_err("the input has an empty spatial axis"));
        }
        let mut out = [0; N];
        for i in 0..N {
            if output_padding[i] >= stride[i] && output_padding[i] >= dilation[i] {
                return Err(shape_err(format!(
                    "output_padding {} must be smaller than the stride ({}) or the dilation ({})",
                    output_padding[i], stride[i], dilation[i]
                )));
            }
            let full = (sizes[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + output_padding[i] + 1;
            out[i] = full.checked_sub(2 * padding[i]).filter(|&o| o > 0).ok_or_else(|| {
                shape_err(format!(
                    "padding {} removes the whole output of length {full} (input {}, kernel {}, stride {})",
                    padding[i], sizes[i], kernel[i], stride[i]
                ))
            })?;
        }
        Ok(Geometry {
            kernel,
            options: ConvTransposeOptions::new(stride, padding, output_padding, dilation, self.groups),
            out,
        })
    }

    /// `[C, H, W]` → `[filters, H', W']`.
    pub fn infer2d(&self, input: &Shape) -> Result<Shape> {
        let [c, h, w] = expect_rank::<3>(input, "conv_transpose2d", "[channels, height, width]")?;
        let g = self.geometry::<2>(c, [h, w])?;
        Ok(vec![self.filters, g.out[0], g.out[1]])
    }

    /// `[L, C]` → `[L', filters]`.
    pub fn infer1d(&self, input: &Shape) -> Result<Shape> {
        let [l, c] = expect_rank::<2>(input, "conv_transpose1d", "[steps, channels]")?;
        let g = self.geometry::<1>(c, [l])?;
        Ok(vec![g.out[0], self.filters])
    }

    pub fn init2d(&self, input: &Shape, device: &Device) -> Result<ConvTranspose2d> {
        let c = input[0];
        let g = self.geometry::<2>(c, [input[1], input[2]])?;
        Ok(ConvTranspose2d {
            weight: self
                .kernel_initializer
                .init([c, self.filters / self.groups, g.kernel[0], g.kernel[1]], device),
            bias: self
                .use_bias
                .then(|| self.bias_initializer.init([self.filters], device)),
            options: g.options,
            activation: self.activation,
        })
    }

    pub fn init1d(&self, input: &Shape, device: &Device) -> Result<ConvTranspose1d> {
        let c = input[1];
        let g = self.geometry::<1>(c, [input[0]])?;
        Ok(ConvTranspose1d {
            weight: self
                .kernel_initializer
                .init([c, self.filters / self.groups, g.kernel[0]], device),
            bias: self
                .use_bias
                .then(|| self.bias_initializer.init([self.filters], device)),
            options: g.options,
            activation: self.activation,
        })
    }
}

#[derive(Module, Debug)]
pub struct ConvTranspose2d {
    /// `[in, out/groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub options: ConvTransposeOptions<2>,
    #[module(skip)]
    pub activation: Activation,
}

impl ConvTranspose2d {
    /// `[B, C, H, W]` → `[B, filters, H', W']`.
    pub fn forward(&self, x: Tensor<4>, ctx: &Ctx) -> Tensor<4> {
        let y = burn::tensor::module::conv_transpose2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.options.clone(),
        );
        ctx.activate(self.activation, y)
    }
}

#[derive(Module, Debug)]
pub struct ConvTranspose1d {
    /// `[in, out/groups, k]`.
    pub weight: Param<Tensor<3>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub options: ConvTransposeOptions<1>,
    #[module(skip)]
    pub activation: Activation,
}

impl ConvTranspose1d {
    /// `[B, L, C]` → `[B, L', filters]`.
    pub fn forward(&self, x: Tensor<3>, ctx: &Ctx) -> Tensor<3> {
        let y = burn::tensor::module::conv_transpose1d(
            x.swap_dims(1, 2),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.options.clone(),
        );
        ctx.activate(self.activation, y.swap_dims(1, 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        // torch.nn.ConvTranspose2d(3, 8, 4, stride=2, padding=1)(torch.zeros(1, 3, 7, 7)).shape == [1, 8, 14, 14]
        let c = ConvTransposeConfig::new(8, 4).with_stride(2).with_padding(1);
        assert_eq!(c.infer2d(&vec![3, 7, 7]).unwrap(), [8, 14, 14]);
        // ... with output_padding=1: 15
        assert_eq!(
            c.clone().with_output_padding(1).infer2d(&vec![3, 7, 7]).unwrap(),
            [8, 15, 15]
        );
        // ConvTranspose1d(5, 2, 3)(zeros(1, 5, 10)) → length 12
        assert_eq!(ConvTransposeConfig::new(2, 3).infer1d(&vec![10, 5]).unwrap(), [12, 2]);
    }

    #[test]
    fn impossible_settings_are_named() {
        let e = ConvTransposeConfig::new(8, 3)
            .with_output_padding(1)
            .infer2d(&vec![3, 4, 4])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("output_padding 1 must be smaller than the stride (1)"),
            "{e}"
        );
        let e = ConvTransposeConfig::new(8, 1)
            .with_padding(1)
            .infer2d(&vec![3, 1, 1])
            .unwrap_err();
        assert!(e.to_string().contains("removes the whole output"), "{e}");
        let e = ConvTransposeConfig::new(8, 3).infer2d(&vec![4, 4]).unwrap_err();
        assert!(e.to_string().contains("[channels, height, width]"), "{e}");
    }
}
