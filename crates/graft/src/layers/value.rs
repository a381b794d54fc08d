//! The value that flows along a graph edge: a batch tensor of whichever rank the producing node has, plus the
//! padding mask of a sequence when there is one. Ranks are checked once, by shape inference at build time, so the
//! conversions here are infallible in a built model; they still return errors rather than panic.

use burn::prelude::*;
use burn::tensor::Bool;

use crate::data::Array;
use crate::error::{Error, Result};
use burn::tensor::TensorData;

/// A batch tensor of rank 2, 3 or 4 (`[B, F]`, `[B, T, F]` / `[B, C, L]`, `[B, C, H, W]`).
#[derive(Clone, Debug)]
pub enum Data {
    D2(Tensor<2>),
    D3(Tensor<3>),
    D4(Tensor<4>),
}

/// One edge of the graph.
#[derive(Clone, Debug)]
pub struct Value {
    pub data: Data,
    /// `[B, T]`, `true` at padded timesteps; only for sequences `[B, T, F]`.
    pub mask: Option<Tensor<2, Bool>>,
}

/// Applies a rank-generic tensor function to whichever rank a `Data` holds.
#[macro_export]
macro_rules! map_data {
    ($data:expr, |$t:ident| $body:expr) => {
        match $data {
            $crate::layers::value::Data::D2($t) => $crate::layers::value::Data::D2($body),
            $crate::layers::value::Data::D3($t) => $crate::layers::value::Data::D3($body),
            $crate::layers::value::Data::D4($t) => $crate::layers::value::Data::D4($body),
        }
    };
}

impl Data {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Data::D2(t) => t.dims().to_vec(),
            Data::D3(t) => t.dims().to_vec(),
            Data::D4(t) => t.dims().to_vec(),
        }
    }

    pub fn rank(&self) -> usize {
        match self {
            Data::D2(_) => 2,
            Data::D3(_) => 3,
            Data::D4(_) => 4,
        }
    }

    /// Reshapes to `[batch, dims...]` of any supported rank.
    pub fn reshape(self, dims: &[usize]) -> Result<Data> {
        let flat: Tensor<2> = match self {
            Data::D2(t) => t,
            Data::D3(t) => t.flatten(1, 2),
            Data::D4(t) => t.flatten(1, 3),
        };
        Ok(match dims.len() {
            2 => Data::D2(flat.reshape([dims[0], dims[1]])),
            3 => Data::D3(flat.reshape([dims[0], dims[1], dims[2]])),
            4 => Data::D4(flat.reshape([dims[0], dims[1], dims[2], dims[3]])),
            n => {
                return Err(Error::new(format!(
                    "tensors of rank {n} are not supported (2 to 4 with the batch axis)"
                )));
            }
        })
    }

    pub fn d2(self) -> Result<Tensor<2>> {
        match self {
            Data::D2(t) => Ok(t),
            other => Err(rank_error(2, other.rank())),
        }
    }

    pub fn d3(self) -> Result<Tensor<3>> {
        match self {
            Data::D3(t) => Ok(t),
            other => Err(rank_error(3, other.rank())),
        }
    }

    pub fn d4(self) -> Result<Tensor<4>> {
        match self {
            Data::D4(t) => Ok(t),
            other => Err(rank_error(4, other.rank())),
        }
    }
}

fn rank_error(expected: usize, found: usize) -> Error {
    Error::new(format!(
        "expected a tensor of rank {expected} (with the batch axis), found rank {found}"
    ))
}

impl Value {
    pub fn new(data: Data) -> Self {
        Value { data, mask: None }
    }

    pub fn with_mask(data: Data, mask: Option<Tensor<2, Bool>>) -> Self {
        Value { data, mask }
    }

    /// Replaces the tensor, keeping the mask (for layers that keep the time axis).
    pub fn map(self, f: impl FnOnce(Data) -> Data) -> Self {
        Value {
            data: f(self.data),
            mask: self.mask,
        }
    }
}

impl Data {
    /// A batch of `n` draws from N(0, I) of per-sample shape `shape` (a generator's codes), from the device's
    /// seeded generator.
    pub fn normal(n: usize, shape: &[usize], device: &Device) -> Result<Data> {
        let size: usize = shape.iter().product();
        let flat = Tensor::<2>::random([n, size], burn::tensor::Distribution::Normal(0.0, 1.0), device);
        let dims: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
        Data::D2(flat).reshape(&dims)
    }

    /// The same values cut from the autodiff graph.
    pub fn detach(self) -> Data {
        crate::map_data!(self, |t| t.detach())
    }

    /// `[batch, ...]` → `[batch, elements]`.
    pub fn flatten_rows(self) -> Tensor<2> {
        match self {
            Data::D2(t) => t,
            Data::D3(t) => t.flatten(1, 2),
            Data::D4(t) => t.flatten(1, 3),
        }
    }
}

/// Every input of a batch as model input tensors, in the model's input order.
pub fn batch_inputs(batch: &crate::data::Batch, device: &Device) -> Result<Vec<Data>> {
    std::iter::once(&batch.inputs)
        .chain(&batch.extra_inputs)
        .map(|a| input_data(a, device))
        .collect()
}

/// A batch of inputs as the model's input tensor.
pub fn input_data(inputs: &Array, device: &Device) -> Result<Data> {
    let n = inputs.len();
    let flat = Tensor::<2>::from_data(TensorData::new(inputs.data.clone(), [n, inputs.sample_size()]), device);
    let dims: Vec<usize> = std::iter::once(n)
        .chain(inputs.sample_shape().iter().copied())
        .collect();
    Data::D2(flat).reshape(&dims)
}
