//! Pooling: windowed max/average over images `[C, H, W]` (2D) or sequences `[L, C]` (1D), and global pooling
//! that collapses the spatial axes (respecting a sequence's padding mask).

use burn::prelude::*;
use burn::tensor::Bool;
use burn::tensor::module::{avg_pool1d, avg_pool2d, max_pool1d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use serde::{Deserialize, Serialize};

use super::conv::{Dims, Padding, expect_rank, window_output};
use super::dense::yes;
use super::{Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Window size.
    pub size: Dims,
    /// Defaults to the window size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Dims>,
    #[serde(default)]
    pub padding: Padding,
}

/// A pooling window's `(kernel, stride, padding, output sizes)` along each of `N` axes.
type Geometry<const N: usize> = ([usize; N], [usize; N], [(usize, usize); N], [usize; N]);

impl PoolConfig {
    pub fn new(size: usize) -> Self {
        PoolConfig {
            size: Dims::One(size),
            stride: None,
            padding: Padding::default(),
        }
    }

    fn geometry<const N: usize>(&self, sizes: [usize; N]) -> Result<Geometry<N>> {
        let kernel = self.size.resolve::<N>("size")?;
        let stride = match &self.stride {
            Some(s) => s.resolve::<N>("stride")?,
            None => kernel,
        };
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(shape_err("size and stride must be at least 1"));
        }
        let padding = self.padding.resolve(sizes, kernel, stride, [1; N])?;
        let mut out = [0; N];
        for i in 0..N {
            if padding[i].0.max(padding[i].1) * 2 > kernel[i] {
                return Err(shape_err(format!(
                    "padding {:?} is more than half the window {}",
                    padding[i], kernel[i]
                )));
            }
            out[i] = window_output(sizes[i], padding[i], kernel[i], stride[i], 1)?;
        }
        Ok((kernel, stride, padding, out))
    }

    pub fn infer(&self, input: &Shape, two_d: bool) -> Result<Shape> {
        if two_d {
            let [c, h, w] = expect_rank::<3>(input, "2D pooling", "[channels, height, width]")?;
            let (.., out) = self.geometry::<2>([h, w])?;
            Ok(vec![c, out[0], out[1]])
        } else {
            let [l, c] = expect_rank::<2>(input, "1D pooling", "[steps, channels]")?;
            let (.., out) = self.geometry::<1>([l])?;
            Ok(vec![out[0], c])
        }
    }

    /// `count_include_pad` only matters for the average kinds.
    pub fn init(&self, input: &Shape, kind: PoolKind, count_include_pad: bool) -> Result<Pool> {
        self.infer(input, matches!(kind, PoolKind::Max2d | PoolKind::Avg2d))?;
        Ok(match kind {
            PoolKind::Max2d | PoolKind::Avg2d => {
                let (k, s, p, _) = self.geometry::<2>([input[1], input[2]])?;
                Pool::TwoD {
                    kind,
                    kernel: k,
                    stride: s,
                    padding: p,
                    count_include_pad,
                }
            }
            PoolKind::Max1d | PoolKind::Avg1d => {
                let (k, s, p, _) = self.geometry::<1>([input[0]])?;
                Pool::OneD {
                    kind,
                    kernel: k,
                    stride: s,
                    padding: p,
                    count_include_pad,
                }
            }
        })
    }

    /// Receptive-field step per spatial axis: (window, stride).
    pub fn window<const N: usize>(&self) -> Result<Vec<(usize, usize)>> {
        let kernel = self.size.resolve::<N>("size")?;
        let stride = match &self.stride {
            Some(s) => s.resolve::<N>("stride")?,
            None => kernel,
        };
        Ok((0..N).map(|i| (kernel[i], stride[i])).collect())
    }
}

/// Average pooling: the window of [`PoolConfig`], and what a window at a padded border is divided by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPoolConfig {
    /// Window size.
    pub size: Dims,
    /// Defaults to the window size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Dims>,
    #[serde(default)]
    pub padding: Padding,
    /// `true` (PyTorch's default): padded positions count as zeros, every window is divided by its full size.
    /// `false` (Keras, and PyTorch's `count_include_pad=False`): divided by the input positions in the window only.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub count_include_pad: bool,
}

fn is_true(v: &bool) -> bool {
    *v
}

impl AvgPoolConfig {
    pub fn new(size: usize) -> Self {
        PoolConfig::new(size).into()
    }

    /// The window alone (size, stride, padding), shared with max pooling.
    pub fn window_config(&self) -> PoolConfig {
        PoolConfig {
            size: self.size.clone(),
            stride: self.stride.clone(),
            padding: self.padding.clone(),
        }
    }

    pub fn infer(&self, input: &Shape, two_d: bool) -> Result<Shape> {
        self.window_config().infer(input, two_d)
    }

    pub fn init(&self, input: &Shape, two_d: bool) -> Result<Pool> {
        let kind = if two_d { PoolKind::Avg2d } else { PoolKind::Avg1d };
        self.window_config().init(input, kind, self.count_include_pad)
    }
}

impl From<PoolConfig> for AvgPoolConfig {
    fn from(c: PoolConfig) -> Self {
        AvgPoolConfig {
            size: c.size,
            stride: c.stride,
            padding: c.padding,
            count_include_pad: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolKind {
    Max1d,
    Avg1d,
    Max2d,
    Avg2d,
}

#[derive(Debug, Clone)]
pub enum Pool {
    OneD {
        kind: PoolKind,
        kernel: [usize; 1],
        stride: [usize; 1],
        padding: [(usize, usize); 1],
        count_include_pad: bool,
    },
    TwoD {
        kind: PoolKind,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
        count_include_pad: bool,
    },
}

impl Pool {
    /// The window of a 2-D max pool whose windows do not overlap (stride = window, no padding): the pool that
    /// [`crate::layers::conv::Conv2d::forward_max_pooled`] runs inside the convolution.
    pub fn non_overlapping_max2d(&self) -> Option<[usize; 2]> {
        match self {
            Pool::TwoD {
                kind: PoolKind::Max2d,
                kernel,
                stride,
                padding,
                ..
            } if kernel == stride && *padding == [(0, 0); 2] => Some(*kernel),
            _ => None,
        }
    }

    /// `[B, C, H, W]` → `[B, C, H', W']`.
    pub fn forward2d(&self, x: Tensor<4>) -> Tensor<4> {
        if let Some(kernel) = self.non_overlapping_max2d()
            && graft_kernels::applies(&x)
        {
            return graft_kernels::max_pool2d(x, kernel);
        }
        match self {
            Pool::TwoD {
                kind: PoolKind::Max2d,
                kernel,
                stride,
                padding,
                ..
            } => max_pool2d(
                x,
                MaxPoolOptions::new(*kernel)
                    .with_stride(*stride)
                    .with_padding_pairs(*padding),
            ),
            Pool::TwoD {
                kernel,
                stride,
                padding,
                count_include_pad,
                ..
            } => avg_pool2d(
                x,
                AvgPoolOptions::new(*kernel)
                    .with_stride(*stride)
                    .with_padding_pairs(*padding)
                    .with_count_include_pad(*count_include_pad),
            ),
            Pool::OneD { .. } => x,
        }
    }

    /// `[B, L, C]` → `[B, L', C]`.
    pub fn forward1d(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.swap_dims(1, 2);
        let y = match self {
            Pool::OneD {
                kind: PoolKind::Max1d,
                kernel,
                stride,
                padding,
                ..
            } => max_pool1d(
                x,
                MaxPoolOptions::new(*kernel)
                    .with_stride(*stride)
                    .with_padding_pairs(*padding),
            ),
            Pool::OneD {
                kernel,
                stride,
                padding,
                count_include_pad,
                ..
            } => avg_pool1d(
                x,
                AvgPoolOptions::new(*kernel)
                    .with_stride(*stride)
                    .with_padding_pairs(*padding)
                    .with_count_include_pad(*count_include_pad),
            ),
            Pool::TwoD { .. } => x,
        };
        y.swap_dims(1, 2)
    }
}

/// Global pooling: `[L, C]` → `[C]` (masked steps excluded) or `[C, H, W]` → `[C]`.
/// `adaptive_avg_pool1d = { size = 4 }`, `adaptive_avg_pool2d = { size = [7, 7] }`: PyTorch's `AdaptiveAvgPool`,
/// average windows chosen so that any input size gives `size` outputs (window i of n over L spans
/// ⌊i·L/n⌋ to ⌈(i+1)·L/n⌉). Size 1 is the global average pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptivePoolConfig {
    pub size: Dims,
}

/// The output size per spatial axis of an adaptive pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdaptivePool {
    OneD(usize),
    TwoD([usize; 2]),
}

impl AdaptivePoolConfig {
    /// `[L, C]` → `[size, C]`; `[C, H, W]` → `[C, h, w]`.
    pub fn build(&self, input: &Shape, two_d: bool) -> Result<(AdaptivePool, Shape)> {
        if two_d {
            let [c, _, _] = expect_rank::<3>(input, "adaptive_avg_pool2d", "[channels, height, width]")?;
            let [h, w] = self.size.resolve::<2>("size")?;
            if h == 0 || w == 0 {
                return Err(shape_err("size must be at least 1"));
            }
            Ok((AdaptivePool::TwoD([h, w]), vec![c, h, w]))
        } else {
            let [_, c] = expect_rank::<2>(input, "adaptive_avg_pool1d", "[steps, channels]")?;
            let [n] = self.size.resolve::<1>("size")?;
            if n == 0 {
                return Err(shape_err("size must be at least 1"));
            }
            Ok((AdaptivePool::OneD(n), vec![n, c]))
        }
    }
}

impl AdaptivePool {
    /// `[B, L, C]` → `[B, size, C]`.
    pub fn forward1d(&self, x: Tensor<3>) -> Tensor<3> {
        let AdaptivePool::OneD(n) = *self else {
            unreachable!("shape inference gives a 1D pool [L, C] inputs")
        };
        burn::tensor::module::adaptive_avg_pool1d(x.swap_dims(1, 2), n).swap_dims(1, 2)
    }

    /// `[B, C, H, W]` → `[B, C, h, w]`.
    pub fn forward2d(&self, x: Tensor<4>) -> Tensor<4> {
        let AdaptivePool::TwoD(size) = *self else {
            unreachable!("shape inference gives a 2D pool [C, H, W] inputs")
        };
        burn::tensor::module::adaptive_avg_pool2d(x, size)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalPool {
    pub max: bool,
    pub two_d: bool,
}

impl GlobalPool {
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        if self.two_d {
            let [c, _, _] = expect_rank::<3>(input, "global 2D pooling", "[channels, height, width]")?;
            Ok(vec![c])
        } else {
            let [_, c] = expect_rank::<2>(input, "global 1D pooling", "[steps, channels]")?;
            Ok(vec![c])
        }
    }

    /// `[B, L, C]` with an optional padding mask `[B, L]` → `[B, C]`.
    pub fn forward1d(&self, x: Tensor<3>, mask: Option<Tensor<2, Bool>>) -> Tensor<2> {
        match (mask, self.max) {
            (None, false) => x.mean_dim(1).squeeze_dim(1),
            (None, true) => x.max_dim(1).squeeze_dim(1),
            (Some(mask), false) => {
                let keep = mask.bool_not().float().unsqueeze_dim::<3>(2);
                let count = keep.clone().sum_dim(1).clamp_min(1.0);
                (x * keep).sum_dim(1).div(count).squeeze_dim(1)
            }
            (Some(mask), true) => {
                // A sequence with no real step pools to zeros (as the masked average does), not to f32::MIN.
                let empty = mask.clone().bool_not().int().sum_dim(1).equal_elem(0);
                let pooled: Tensor<2> = x
                    .mask_fill(mask.unsqueeze_dim::<3>(2), f32::MIN)
                    .max_dim(1)
                    .squeeze_dim(1);
                pooled.mask_fill(empty, 0.0)
            }
        }
    }

    /// `[B, C, H, W]` → `[B, C]`.
    pub fn forward2d(&self, x: Tensor<4>) -> Tensor<2> {
        let flat: Tensor<3> = x.flatten(2, 3);
        let pooled = if self.max { flat.max_dim(2) } else { flat.mean_dim(2) };
        pooled.squeeze_dim(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_global_pools_of_an_all_padding_sequence_are_zero() {
        let device = Device::default();
        let x = Tensor::<3>::from_floats([[[1.0, -2.0], [3.0, 4.0]], [[5.0, 6.0], [-7.0, 8.0]]], &device);
        // Sample 0: both steps padded; sample 1: the second step padded.
        let mask = Tensor::<2, Bool>::from_data([[true, true], [false, true]], &device);
        for (max, expected) in [(true, [0.0, 0.0, 5.0, 6.0]), (false, [0.0, 0.0, 5.0, 6.0])] {
            let got = GlobalPool { max, two_d: false }.forward1d(x.clone(), Some(mask.clone()));
            assert_eq!(got.into_data().try_to_vec::<f32>().unwrap(), expected, "max = {max}");
        }
    }
}
