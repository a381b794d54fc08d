//! Layers: one file per family. Each has a config (what a spec holds, serde-(de)serializable, with shape
//! inference) and a burn module (parameters with PyTorch names and layouts, and a documented `forward`).
//! [`LayerSpec`] is the closed set of layer kinds a model spec can name; [`Layer`] the built modules.

pub mod activation;
pub mod attention;
pub mod bert;
pub mod bert_encoder;
pub mod conv;
pub mod conv_transpose;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod init;
pub mod merge;
pub mod norm;
pub mod pool;
pub mod recurrent;
pub mod reshape;
pub mod sampling;
pub mod upsampling;
pub mod value;

use burn::prelude::*;

use crate::error::Error;
use activation::Activation;

/// A per-sample shape (no batch axis): `[F]`, `[T, F]` / `[L, C]`, or `[C, H, W]`.
pub type Shape = Vec<usize>;

pub(crate) fn shape_err(msg: impl Into<String>) -> Error {
    Error::new(msg)
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    /// Dropout active, batch norm on batch statistics.
    pub training: bool,
    /// Dropout active even when not training (Monte-Carlo dropout); batch norm stays on running statistics.
    pub mc_dropout: bool,
    /// Leave out a final softmax/sigmoid (set for output nodes when the loss wants logits).
    pub skip_probability: bool,
    /// `sampling` layers draw even when not training (a VAE's ELBO on held-out data); dropout is not affected.
    pub sample_latent: bool,
}

impl Ctx {
    pub fn activate<const D: usize>(&self, activation: Activation, y: Tensor<D>) -> Tensor<D> {
        if self.skip_probability && activation.is_probability() {
            y
        } else {
            activation.apply(y)
        }
    }

    pub fn dropout_active(&self) -> bool {
        self.training || self.mc_dropout
    }

    pub fn sampling_active(&self) -> bool {
        self.training || self.sample_latent
    }
}

/// Every layer kind a spec can name, with its options: `{ conv2d = { filters = 16, kernel = 3 } }`.
mod layer;
mod spec;

pub use layer::Layer;
pub use spec::{BidirectionalConfig, Built, LAYER_KINDS, LayerSpec, TimeDistributedConfig};

#[cfg(test)]
mod tests;
