//! Convolutions. `Conv2d` takes images `[C, H, W]` (PyTorch's layout); `Conv1d` takes sequences `[L, C]` (steps,
//! channels — the layout embeddings and recurrent layers use) and transposes around burn's channels-first kernel.
//! Weights are PyTorch's `[out, in/groups, k...]` in both cases, so state dicts exchange as they are.

use std::fmt;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize};

use super::activation::Activation;
use super::dense::{glorot, is_zero, yes, zeros};
use super::init::Initializer;
use super::{Ctx, Shape, shape_err};
use crate::error::{Error, Result};
use graft_data::suggest::hint;

/// A size given once for every spatial axis (`3`) or per axis (`[3, 1]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Dims {
    One(usize),
    Each(Vec<usize>),
}

/// Decided by the value's shape, so that a wrong value says what was expected rather than that no variant fits.
struct DimsVisitor;

impl<'de> Visitor<'de> for DimsVisitor {
    type Value = Dims;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as 3, or one per axis such as [3, 1]")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Dims, E> {
        usize::try_from(v)
            .map(Dims::One)
            .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Dims, E> {
        usize::try_from(v)
            .map(Dims::One)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Dims, A::Error> {
        let mut sizes = vec![];
        while let Some(v) = seq.next_element::<usize>()? {
            sizes.push(v);
        }
        Ok(Dims::Each(sizes))
    }
}

impl<'de> Deserialize<'de> for Dims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(DimsVisitor)
    }
}

impl Dims {
    pub fn resolve<const N: usize>(&self, key: &str) -> Result<[usize; N]> {
        match self {
            Dims::One(v) => Ok([*v; N]),
            Dims::Each(v) if v.len() == N => Ok(std::array::from_fn(|i| v[i])),
            Dims::Each(v) => Err(Error::new(format!(
                "{key}: expected 1 or {N} values, found {}",
                v.len()
            ))),
        }
    }
}

impl From<usize> for Dims {
    fn from(v: usize) -> Self {
        Dims::One(v)
    }
}

/// `"valid"` (none), `"same"` (output length ⌈L/stride⌉, extra padding at the end as in Keras/PyTorch), a number
/// of zeros on both sides, or one number per axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Padding {
    Named(String),
    Explicit(Dims),
}

pub const PADDING_NAMES: [&str; 2] = ["valid", "same"];

struct PaddingVisitor;

impl<'de> Visitor<'de> for PaddingVisitor {
    type Value = Padding;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"valid\", \"same\", a number of zeros on both sides, or one number per axis")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Padding, E> {
        if PADDING_NAMES.contains(&v) {
            Ok(Padding::Named(v.to_string()))
        } else {
            Err(E::custom(format!(
                "unknown padding \"{v}\"{}; expected \"valid\", \"same\", a number or one number per axis",
                hint(v, PADDING_NAMES)
            )))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Padding, E> {
        DimsVisitor.visit_u64(v).map(Padding::Explicit)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Padding, E> {
        DimsVisitor.visit_i64(v).map(Padding::Explicit)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Padding, A::Error> {
        DimsVisitor.visit_seq(seq).map(Padding::Explicit)
    }
}

impl<'de> Deserialize<'de> for Padding {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(PaddingVisitor)
    }
}

impl Default for Padding {
    fn default() -> Self {
        Padding::Named("valid".into())
    }
}

impl Padding {
    /// `(begin, end)` padding per axis for inputs of `sizes`.
    pub fn resolve<const N: usize>(
        &self,
        sizes: [usize; N],
        kernel: [usize; N],
        stride: [usize; N],
        dilation: [usize; N],
    ) -> Result<[(usize, usize); N]> {
        match self {
            Padding::Named(n) if n == "valid" => Ok([(0, 0); N]),
            Padding::Named(n) if n == "same" => Ok(std::array::from_fn(|i| {
                let out = sizes[i].div_ceil(stride[i]);
                let needed = (out - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1;
                let total = needed.saturating_sub(sizes[i]);
                (total / 2, total - total / 2)
            })),
            Padding::Named(n) => Err(Error::new(format!(
                "padding: unknown value '{n}'; expected \"valid\", \"same\", a number or one number per axis"
            ))),
            Padding::Explicit(d) => Ok(d.resolve::<N>("padding")?.map(|p| (p, p))),
        }
    }
}

/// Output length of a window over `size` — an error when the window does not fit.
pub fn window_output(size: usize, pad: (usize, usize), kernel: usize, stride: usize, dilation: usize) -> Result<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + pad.0 + pad.1;
    if span > padded {
        return Err(shape_err(format!(
            "the window spans {span} positions but the (padded) input has only {padded}; use padding = \"same\" or a smaller kernel"
        )));
    }
    Ok((padded - span) / stride + 1)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvConfig {
    pub filters: usize,
    pub kernel: Dims,
    #[serde(default = "one")]
    pub stride: Dims,
    #[serde(default)]
    pub padding: Padding,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_norm: Option<f64>,
}

fn one() -> Dims {
    Dims::One(1)
}
fn one_usize() -> usize {
    1
}

impl ConvConfig {
    pub fn new(filters: usize, kernel: impl Into<Dims>) -> Self {
        ConvConfig {
            filters,
            kernel: kernel.into(),
            stride: one(),
            padding: Padding::default(),
            dilation: one(),
            groups: 1,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            l2: 0.0,
            max_norm: None,
        }
    }

    pub fn with_padding(mut self, padding: &str) -> Self {
        self.padding = Padding::Named(padding.into());
        self
    }

    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Resolved geometry for `N` spatial axes of `sizes`, with `channels` input channels.
    fn geometry<const N: usize>(&self, channels: usize, sizes: [usize; N]) -> Result<ConvGeometry<N>> {
        let kernel = self.kernel.resolve::<N>("kernel")?;
        let stride = self.stride.resolve::<N>("stride")?;
        let dilation = self.dilation.resolve::<N>("dilation")?;
        check_sizes(self.filters, self.groups, channels, [&kernel, &stride, &dilation])?;
        let padding = self.padding.resolve(sizes, kernel, stride, dilation)?;
        let mut out = [0; N];
        for i in 0..N {
            out[i] = window_output(sizes[i], padding[i], kernel[i], stride[i], dilation[i])?;
        }
        Ok(ConvGeometry {
            kernel,
            stride,
            dilation,
            padding,
            out,
        })
    }

    /// Conv2d: `[C, H, W]` → `[filters, H', W']`.
    pub fn infer2d(&self, input: &Shape) -> Result<Shape> {
        let [c, h, w] = expect_rank::<3>(input, "conv2d", "[channels, height, width]")?;
        let g = self.geometry::<2>(c, [h, w])?;
        Ok(vec![self.filters, g.out[0], g.out[1]])
    }

    /// Conv1d: `[L, C]` → `[L', filters]`.
    pub fn infer1d(&self, input: &Shape) -> Result<Shape> {
        let [l, c] = expect_rank::<2>(input, "conv1d", "[steps, channels]")?;
        let g = self.geometry::<1>(c, [l])?;
        Ok(vec![g.out[0], self.filters])
    }

    pub fn init2d(&self, input: &Shape, device: &Device) -> Result<Conv2d> {
        let (c, sizes) = (input[0], [input[1], input[2]]);
        let g = self.geometry::<2>(c, sizes)?;
        Ok(Conv2d {
            weight: self
                .kernel_initializer
                .init([self.filters, c / self.groups, g.kernel[0], g.kernel[1]], device),
            bias: self
                .use_bias
                .then(|| self.bias_initializer.init([self.filters], device)),
            options: ConvOptions::new_with_padding(g.stride, g.padding, g.dilation, self.groups),
            activation: self.activation,
        })
    }

    pub fn init1d(&self, input: &Shape, device: &Device) -> Result<Conv1d> {
        let (l, c) = (input[0], input[1]);
        let g = self.geometry::<1>(c, [l])?;
        Ok(Conv1d {
            weight: self
                .kernel_initializer
                .init([self.filters, c / self.groups, g.kernel[0]], device),
            bias: self
                .use_bias
                .then(|| self.bias_initializer.init([self.filters], device)),
            options: ConvOptions::new_with_padding(g.stride, g.padding, g.dilation, self.groups),
            activation: self.activation,
        })
    }

    /// Receptive-field step per spatial axis: (kernel span, stride).
    pub fn window<const N: usize>(&self) -> Result<Vec<(usize, usize)>> {
        let kernel = self.kernel.resolve::<N>("kernel")?;
        let stride = self.stride.resolve::<N>("stride")?;
        let dilation = self.dilation.resolve::<N>("dilation")?;
        Ok((0..N).map(|i| (dilation[i] * (kernel[i] - 1) + 1, stride[i])).collect())
    }
}

/// The checks every convolution (plain or transposed) makes: no size is zero, and `groups` divides both the
/// input channels and the filters.
pub(crate) fn check_sizes<const N: usize>(
    filters: usize,
    groups: usize,
    channels: usize,
    sizes: [&[usize; N]; 3],
) -> Result<()> {
    if filters == 0 || groups == 0 || sizes.iter().any(|s| s.contains(&0)) {
        return Err(shape_err(
            "filters, kernel, stride, dilation and groups must all be at least 1",
        ));
    }
    if !channels.is_multiple_of(groups) || !filters.is_multiple_of(groups) {
        return Err(shape_err(format!(
            "groups = {groups} must divide both the input channels ({channels}) and filters ({filters})"
        )));
    }
    Ok(())
}

struct ConvGeometry<const N: usize> {
    kernel: [usize; N],
    stride: [usize; N],
    dilation: [usize; N],
    padding: [(usize, usize); N],
    out: [usize; N],
}

/// The per-sample shape as an array of the rank a layer needs, or an error that says what it needs.
pub fn expect_rank<const N: usize>(input: &Shape, layer: &str, layout: &str) -> Result<[usize; N]> {
    <[usize; N]>::try_from(input.as_slice()).map_err(|_| {
        shape_err(format!(
            "{layer} expects inputs shaped {layout} ({N} axes per sample), found {input:?}"
        ))
    })
}

#[derive(Module, Debug)]
pub struct Conv2d {
    /// `[out, in/groups, kh, kw]`.
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub options: ConvOptions<2>,
    #[module(skip)]
    pub activation: Activation,
}

impl Conv2d {
    /// `[B, C, H, W]` → `[B, filters, H', W']`.
    pub fn forward(&self, x: Tensor<4>, ctx: &Ctx) -> Tensor<4> {
        let device = x.device();
        if self.options.groups == 1 && graft_kernels::applies(&x) {
            let filters = self.weight.dims()[0];
            let b = self
                .bias
                .as_ref()
                .map_or_else(|| Tensor::<1>::zeros([filters], &device), |b| b.val());
            // A ReLU runs inside the fused operation, on each image while it is in cache.
            let relu = self.activation == Activation::Relu;
            let y = graft_kernels::conv2d(x, self.weight.val(), b, self.options.clone(), relu);
            return if relu { y } else { ctx.activate(self.activation, y) };
        }
        let y = burn::tensor::module::conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.options.clone(),
        );
        ctx.activate(self.activation, y)
    }
}

impl Conv2d {
    /// The forward followed by max pooling over non-overlapping `pool` windows, in one pass, where that applies: no
    /// gradient tracked (serving, prediction), the fused kernels available, groups = 1, and a ReLU or no activation
    /// (which commute with the maximum). `None` otherwise: then run the two layers as they are.
    pub fn forward_max_pooled(&self, x: &Tensor<4>, pool: [usize; 2]) -> Option<Tensor<4>> {
        let device = x.device();
        let relu = match self.activation {
            Activation::Relu => true,
            Activation::Linear => false,
            _ => return None,
        };
        if self.options.groups != 1 || device.is_autodiff() || !graft_kernels::applies(x) {
            return None;
        }
        let filters = self.weight.dims()[0];
        let b = self
            .bias
            .as_ref()
            .map_or_else(|| Tensor::<1>::zeros([filters], &device), |b| b.val());
        Some(graft_kernels::conv2d_max_pool(
            x.clone(),
            self.weight.val(),
            b,
            self.options.clone(),
            relu,
            pool,
        ))
    }
}

#[derive(Module, Debug)]
pub struct Conv1d {
    /// `[out, in/groups, k]`.
    pub weight: Param<Tensor<3>>,
    pub bias: Option<Param<Tensor<1>>>,
    #[module(skip)]
    pub options: ConvOptions<1>,
    #[module(skip)]
    pub activation: Activation,
}

impl Conv1d {
    /// `[B, L, C]` → `[B, L', filters]`.
    pub fn forward(&self, x: Tensor<3>, ctx: &Ctx) -> Tensor<3> {
        let y = burn::tensor::module::conv1d(
            x.swap_dims(1, 2),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.options.clone(),
        );
        ctx.activate(self.activation, y.swap_dims(1, 2))
    }
}
