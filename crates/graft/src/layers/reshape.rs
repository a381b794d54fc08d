//! Layers that only rearrange values: flatten, reshape, permute.

use serde::{Deserialize, Serialize};

use super::{Shape, shape_err};
use crate::error::Result;
use crate::layers::value::Data;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshapeConfig {
    /// The per-sample target shape; one entry may be -1 (inferred).
    pub shape: Vec<i64>,
}

impl ReshapeConfig {
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        let total: usize = input.iter().product();
        let unknown = self.shape.iter().filter(|&&d| d == -1).count();
        if unknown > 1 || self.shape.iter().any(|&d| d == 0 || d < -1) {
            return Err(shape_err(format!(
                "shape {:?}: entries must be positive, with at most one -1",
                self.shape
            )));
        }
        let known: usize = self.shape.iter().filter(|&&d| d > 0).map(|&d| d as usize).product();
        let out: Shape = if unknown == 1 {
            if !total.is_multiple_of(known) {
                return Err(shape_err(format!(
                    "cannot reshape {input:?} ({total} values) to {:?}",
                    self.shape
                )));
            }
            self.shape
                .iter()
                .map(|&d| if d == -1 { total / known } else { d as usize })
                .collect()
        } else {
            self.shape.iter().map(|&d| d as usize).collect()
        };
        if out.iter().product::<usize>() != total {
            return Err(shape_err(format!(
                "cannot reshape {input:?} ({total} values) to {out:?}"
            )));
        }
        if out.is_empty() || out.len() > 3 {
            return Err(shape_err(format!(
                "reshape to {out:?}: per-sample shapes have 1 to 3 axes"
            )));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermuteConfig {
    /// A permutation of the per-sample axes, 0-based (`[1, 0]` swaps steps and channels).
    pub dims: Vec<usize>,
}

impl PermuteConfig {
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        let mut sorted = self.dims.clone();
        sorted.sort_unstable();
        if sorted != (0..input.len()).collect::<Vec<_>>() {
            return Err(shape_err(format!(
                "dims {:?} is not a permutation of the {} per-sample axes of {input:?}",
                self.dims,
                input.len()
            )));
        }
        Ok(self.dims.iter().map(|&d| input[d]).collect())
    }

    /// Batch axis stays first.
    pub fn forward(&self, x: Data) -> Data {
        let axes: Vec<usize> = std::iter::once(0).chain(self.dims.iter().map(|d| d + 1)).collect();
        match x {
            Data::D2(t) => Data::D2(t),
            Data::D3(t) => Data::D3(t.permute([axes[0], axes[1], axes[2]])),
            Data::D4(t) => Data::D4(t.permute([axes[0], axes[1], axes[2], axes[3]])),
        }
    }
}

/// `[...]` → `[∏...]`.
pub fn flatten_shape(input: &Shape) -> Shape {
    vec![input.iter().product()]
}

/// Reshapes a batch to `[B, shape...]`.
pub fn reshape_batch(x: Data, shape: &Shape) -> Result<Data> {
    let batch = x.dims()[0];
    let dims: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
    x.reshape(&dims)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceConfig {
    /// First index kept along `axis`.
    pub start: usize,
    /// One past the last index kept.
    pub end: usize,
    /// Per-sample axis; negative counts from the end (default: the last).
    #[serde(default = "last_axis")]
    pub axis: i64,
}

fn last_axis() -> i64 {
    -1
}

impl SliceConfig {
    /// `[..., n, ...]` → `[..., end - start, ...]`; returns the shape and the batch-tensor axis.
    pub fn infer(&self, input: &Shape) -> Result<(Shape, usize)> {
        let rank = input.len() as i64;
        let axis = if self.axis < 0 { rank + self.axis } else { self.axis };
        if axis < 0 || axis >= rank {
            return Err(shape_err(format!(
                "axis {} is outside the {rank} per-sample axes of {input:?}",
                self.axis
            )));
        }
        let axis = axis as usize;
        if self.start >= self.end || self.end > input[axis] {
            return Err(shape_err(format!(
                "slice {}..{} does not fit axis {axis} of size {} (input {input:?})",
                self.start, self.end, input[axis]
            )));
        }
        let mut out = input.clone();
        out[axis] = self.end - self.start;
        Ok((out, axis + 1))
    }
}

/// Keeps `len` entries from `start` along a batch-tensor axis.
pub fn slice(x: Data, axis: usize, start: usize, len: usize) -> Data {
    match x {
        Data::D2(t) => Data::D2(t.narrow(axis, start, len)),
        Data::D3(t) => Data::D3(t.narrow(axis, start, len)),
        Data::D4(t) => Data::D4(t.narrow(axis, start, len)),
    }
}
