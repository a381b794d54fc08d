//! Token embeddings (`torch.nn.Embedding`: `weight [vocab, dim]`) and positional embeddings.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Bool;
use serde::{Deserialize, Serialize};

use super::conv::expect_rank;
use super::init::Initializer;
use super::{Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Vocabulary size: ids run from 0 to input_dim - 1.
    pub input_dim: usize,
    pub output_dim: usize,
    /// The id used for padding: its positions output zeros, get no gradient, and are masked downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding_idx: Option<usize>,
    /// PyTorch's default N(0, 1).
    #[serde(default = "normal")]
    pub initializer: Initializer,
    /// Start from pretrained word vectors (word2vec binary/text or GloVe), looked up for each token of the text
    /// dataset's vocabulary; tokens without a vector keep a random draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PretrainedVectors>,
    /// `false` keeps the embedding fixed during training.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub trainable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedVectors {
    pub path: std::path::PathBuf,
    /// `"word2vec_binary"`, `"word2vec_text"` or `"glove"`; detected when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::data::wordvec::WordVecFormat>,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

fn normal() -> Initializer {
    Initializer::Normal { mean: 0.0, std: 1.0 }
}

impl EmbeddingConfig {
    /// A trainable embedding of `input_dim` ids into `output_dim` dimensions, N(0, 1)-initialized, no padding id.
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        EmbeddingConfig {
            input_dim,
            output_dim,
            padding_idx: None,
            initializer: normal(),
            pretrained: None,
            trainable: true,
        }
    }

    pub fn with_padding_idx(mut self, id: usize) -> Self {
        self.padding_idx = Some(id);
        self
    }

    /// `[T]` (ids) → `[T, output_dim]`.
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        let [t] = expect_rank::<1>(input, "embedding", "[steps] of token ids")?;
        if self.input_dim == 0 || self.output_dim == 0 {
            return Err(shape_err("input_dim and output_dim must be at least 1"));
        }
        if let Some(p) = self.padding_idx
            && p >= self.input_dim
        {
            return Err(shape_err(format!(
                "padding_idx {p} is outside the vocabulary of {} ids",
                self.input_dim
            )));
        }
        Ok(vec![t, self.output_dim])
    }

    pub fn init(&self, device: &Device) -> Embedding {
        Embedding {
            weight: self.initializer.init([self.input_dim, self.output_dim], device),
            padding_idx: self.padding_idx,
        }
    }
}

#[derive(Module, Debug)]
pub struct Embedding {
    pub weight: Param<Tensor<2>>,
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// Ids `[B, T]` (as floats holding whole numbers) → `[B, T, E]` and the padding mask `[B, T]`.
    pub fn forward(&self, ids: Tensor<2>) -> (Tensor<3>, Option<Tensor<2, Bool>>) {
        let mask = self.padding_idx.map(|p| ids.clone().int().equal_elem(p as i64));
        let out = if graft_kernels::applies(&ids) {
            // The CPU backend's lookup with a weight gradient built directly (burn-flex's zero-fills and copies the
            // whole table's gradient once more per step).
            graft_kernels::embedding(self.weight.val(), ids)
        } else {
            burn::tensor::module::embedding(self.weight.val(), ids.int())
        };
        match mask {
            Some(m) => (out.mask_fill(m.clone().unsqueeze_dim::<3>(2), 0.0), Some(m)),
            None => (out, None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionalEmbeddingConfig {
    /// The longest sequence the layer accepts.
    pub max_len: usize,
    /// `"learned"` (a trainable `weight [max_len, dim]`, as BERT) or `"sinusoidal"` (fixed, as the original
    /// transformer).
    #[serde(default = "learned")]
    pub kind: String,
}

fn learned() -> String {
    "learned".into()
}

impl PositionalEmbeddingConfig {
    /// `[T, E]` → `[T, E]`.
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        let [t, _] = expect_rank::<2>(input, "positional_embedding", "[steps, features]")?;
        if t > self.max_len {
            return Err(shape_err(format!(
                "sequences of {t} steps exceed max_len = {}",
                self.max_len
            )));
        }
        if self.kind != "learned" && self.kind != "sinusoidal" {
            return Err(shape_err(format!(
                "kind: expected \"learned\" or \"sinusoidal\", found \"{}\"",
                self.kind
            )));
        }
        Ok(input.clone())
    }

    pub fn init(&self, input: &Shape, device: &Device) -> PositionalEmbedding {
        let dim = input[1];
        let weight = if self.kind == "learned" {
            Initializer::Normal { mean: 0.0, std: 0.02 }.init([self.max_len, dim], device)
        } else {
            let mut table = vec![0f32; self.max_len * dim];
            for pos in 0..self.max_len {
                for i in 0..dim {
                    let angle = pos as f64 / 10000f64.powf((2 * (i / 2)) as f64 / dim as f64);
                    table[pos * dim + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
                }
            }
            let t = Tensor::<1>::from_floats(table.as_slice(), device).reshape([self.max_len, dim]);
            Param::from_tensor(t).set_require_grad(false)
        };
        PositionalEmbedding {
            weight,
            fixed: self.kind != "learned",
        }
    }
}

#[derive(Module, Debug)]
pub struct PositionalEmbedding {
    /// `[max_len, E]`.
    pub weight: Param<Tensor<2>>,
    pub fixed: bool,
}

impl PositionalEmbedding {
    /// `[B, T, E]` → `[B, T, E]` (adds the first T positions).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let t = x.dims()[1];
        let mut pos = self.weight.val().narrow(0, 0, t);
        if self.fixed {
            pos = pos.detach();
        }
        x + pos.unsqueeze_dim::<3>(0)
    }
}
