//! Merge layers joining several inputs: add, multiply (same shapes) and concatenate (along one axis) — for
//! residual, dense and inception-style blocks.

use burn::prelude::*;
use burn::tensor::Bool;
use serde::{Deserialize, Serialize};

use super::{Shape, shape_err};
use crate::error::Result;
use crate::layers::value::{Data, Value};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcatenateConfig {
    /// Per-sample axis; negative counts from the end. Default: the last (features / channels of sequences);
    /// use 0 for the channels of images.
    #[serde(default = "last")]
    pub axis: i64,
}

fn last() -> i64 {
    -1
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Merge {
    Add,
    Multiply,
    /// Concatenation along this batch-tensor axis.
    Concatenate(usize),
}

/// Checks the inputs of add/multiply: at least two, all the same shape.
pub fn infer_elementwise(inputs: &[Shape], names: &[String]) -> Result<Shape> {
    if inputs.len() < 2 {
        return Err(shape_err(format!("needs at least two inputs, found {}", inputs.len())));
    }
    for (shape, name) in inputs.iter().zip(names).skip(1) {
        if shape != &inputs[0] {
            return Err(shape_err(format!(
                "input '{}' has shape {:?} but input '{name}' has shape {shape:?}; element-wise merges need equal shapes",
                names[0], inputs[0]
            )));
        }
    }
    Ok(inputs[0].clone())
}

impl ConcatenateConfig {
    /// Returns the output shape and the per-sample axis.
    pub fn infer(&self, inputs: &[Shape], names: &[String]) -> Result<(Shape, usize)> {
        if inputs.len() < 2 {
            return Err(shape_err(format!("needs at least two inputs, found {}", inputs.len())));
        }
        let rank = inputs[0].len() as i64;
        let axis = if self.axis < 0 { rank + self.axis } else { self.axis };
        if axis < 0 || axis >= rank {
            return Err(shape_err(format!(
                "axis {} is outside the {rank} per-sample axes",
                self.axis
            )));
        }
        let axis = axis as usize;
        let mut out = inputs[0].clone();
        for (shape, name) in inputs.iter().zip(names).skip(1) {
            let same_elsewhere = shape.len() == out.len()
                && shape
                    .iter()
                    .zip(&inputs[0])
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !same_elsewhere {
                return Err(shape_err(format!(
                    "input '{}' has shape {:?} but input '{name}' has shape {shape:?}; they must agree except on axis {axis}",
                    names[0], inputs[0]
                )));
            }
            out[axis] += shape[axis];
        }
        Ok((out, axis))
    }
}

impl Merge {
    pub fn forward(&self, inputs: Vec<Value>) -> Result<Value> {
        let mask = merge_masks(inputs.iter().map(|v| v.mask.clone()));
        let data: Vec<Data> = inputs.into_iter().map(|v| v.data).collect();
        let out = match data[0].rank() {
            2 => Data::D2(self.combine(data.into_iter().map(Data::d2).collect::<Result<Vec<_>>>()?)),
            3 => Data::D3(self.combine(data.into_iter().map(Data::d3).collect::<Result<Vec<_>>>()?)),
            _ => Data::D4(self.combine(data.into_iter().map(Data::d4).collect::<Result<Vec<_>>>()?)),
        };
        Ok(Value::with_mask(out, mask))
    }

    fn combine<const D: usize>(&self, xs: Vec<Tensor<D>>) -> Tensor<D> {
        match self {
            Merge::Concatenate(axis) => Tensor::cat(xs, *axis),
            Merge::Add => xs.into_iter().reduce(|a, b| a + b).expect("inputs checked at build"),
            Merge::Multiply => xs.into_iter().reduce(|a, b| a * b).expect("inputs checked at build"),
        }
    }
}

/// A step is padding in the result if it is padding in any input.
pub fn merge_masks(masks: impl Iterator<Item = Option<Tensor<2, Bool>>>) -> Option<Tensor<2, Bool>> {
    masks.flatten().reduce(|a, b| a.bool_or(b))
}
