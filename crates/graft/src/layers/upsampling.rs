//! Upsampling by an integer factor (PyTorch's `nn.Upsample(scale_factor=…)`, Keras' `UpSampling1D/2D`):
//! nearest-neighbour repeats each position, bilinear interpolates (`align_corners` as PyTorch, false by default).
//! The cheap alternative to a transposed convolution in decoders and generators; it has no parameters.

use burn::prelude::*;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use serde::{Deserialize, Serialize};

use super::conv::{Dims, expect_rank};
use super::{Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    #[default]
    Nearest,
    /// Linear along each spatial axis (for 1-D inputs, linear along the steps).
    Bilinear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsamplingConfig {
    /// The factor per spatial axis: `2`, or `[2, 1]` for `[C, H, W]` inputs.
    #[serde(default = "two")]
    pub size: Dims,
    #[serde(default)]
    pub interpolation: Interpolation,
    /// Bilinear only: map the corner pixels of input and output onto each other (PyTorch's `align_corners=True`);
    /// by default pixel centres are mapped (half-pixel), as PyTorch's default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub align_corners: bool,
}

fn two() -> Dims {
    Dims::One(2)
}

impl Default for UpsamplingConfig {
    fn default() -> Self {
        UpsamplingConfig {
            size: two(),
            interpolation: Interpolation::Nearest,
            align_corners: false,
        }
    }
}

/// A built upsampling: the per-axis factor `[h, w]` (1-D inputs use `[1, l]`) and burn's interpolation options.
#[derive(Debug, Clone)]
pub struct Upsampling {
    pub factor: [usize; 2],
    pub options: InterpolateOptions,
}

impl UpsamplingConfig {
    pub fn new(size: impl Into<Dims>, interpolation: Interpolation) -> Self {
        UpsamplingConfig {
            size: size.into(),
            interpolation,
            align_corners: false,
        }
    }

    fn factors<const N: usize>(&self) -> Result<[usize; N]> {
        let size = self.size.resolve::<N>("size")?;
        if size.contains(&0) {
            return Err(shape_err("size must be at least 1"));
        }
        if self.align_corners && self.interpolation == Interpolation::Nearest {
            return Err(shape_err(
                "align_corners applies to bilinear interpolation only (as in PyTorch)",
            ));
        }
        Ok(size)
    }

    fn options(&self) -> InterpolateOptions {
        let mode = match self.interpolation {
            Interpolation::Nearest => InterpolateMode::Nearest,
            Interpolation::Bilinear => InterpolateMode::Bilinear,
        };
        InterpolateOptions::new(mode).with_align_corners(self.align_corners)
    }

    /// `[C, H, W]` → `[C, H·size_h, W·size_w]`.
    pub fn infer2d(&self, input: &Shape) -> Result<Shape> {
        let [c, h, w] = expect_rank::<3>(input, "upsampling2d", "[channels, height, width]")?;
        let [fh, fw] = self.factors::<2>()?;
        Ok(vec![c, h * fh, w * fw])
    }

    /// `[L, C]` → `[L·size, C]`.
    pub fn infer1d(&self, input: &Shape) -> Result<Shape> {
        let [l, c] = expect_rank::<2>(input, "upsampling1d", "[steps, channels]")?;
        let [f] = self.factors::<1>()?;
        Ok(vec![l * f, c])
    }

    pub fn init2d(&self) -> Result<Upsampling> {
        Ok(Upsampling {
            factor: self.factors::<2>()?,
            options: self.options(),
        })
    }

    pub fn init1d(&self) -> Result<Upsampling> {
        let [f] = self.factors::<1>()?;
        Ok(Upsampling {
            factor: [1, f],
            options: self.options(),
        })
    }
}

impl Upsampling {
    /// `[B, C, H, W]` → `[B, C, H·fh, W·fw]`.
    pub fn forward2d(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let size = [h * self.factor[0], w * self.factor[1]];
        burn::tensor::module::interpolate(x, self.options.clone().with_output_size(size))
    }

    /// `[B, L, C]` → `[B, L·f, C]`, as an image of height 1.
    pub fn forward1d(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, l, c] = x.dims();
        let image: Tensor<4> = x.swap_dims(1, 2).reshape([b, c, 1, l]);
        let up = self.forward2d(image);
        up.reshape([b, c, l * self.factor[1]]).swap_dims(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_errors() {
        let c = UpsamplingConfig::default();
        assert_eq!(c.infer2d(&vec![3, 4, 5]).unwrap(), [3, 8, 10]);
        assert_eq!(c.infer1d(&vec![6, 2]).unwrap(), [12, 2]);
        let rect = UpsamplingConfig::new(Dims::Each(vec![2, 1]), Interpolation::Bilinear);
        assert_eq!(rect.infer2d(&vec![1, 3, 3]).unwrap(), [1, 6, 3]);
        let bad = UpsamplingConfig {
            align_corners: true,
            ..UpsamplingConfig::default()
        };
        assert!(
            bad.infer2d(&vec![1, 2, 2])
                .unwrap_err()
                .to_string()
                .contains("bilinear interpolation only")
        );
        assert!(
            UpsamplingConfig::new(0, Interpolation::Nearest)
                .infer1d(&vec![2, 2])
                .is_err()
        );
    }

    #[test]
    fn nearest_repeats_each_position() {
        let device = Device::default();
        let x = Tensor::<3>::from_floats([[[1.0, 10.0], [2.0, 20.0]]], &device); // [1, L=2, C=2]
        let up = UpsamplingConfig::default().init1d().unwrap().forward1d(x);
        let values = up.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(values, [1.0, 10.0, 1.0, 10.0, 2.0, 20.0, 2.0, 20.0]);
    }
}
