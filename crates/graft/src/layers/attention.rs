//! Multi-head attention and the transformer encoder block, with `torch.nn.MultiheadAttention` /
//! `torch.nn.TransformerEncoderLayer` parameter names (`in_proj_weight [3E, E]`, `out_proj.weight`, `linear1`,
//! `norm1`, ...). Sequences are `[T, E]`; a key-padding mask keeps padded steps out of every softmax.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Bool;
use serde::{Deserialize, Serialize};

use super::activation::Activation;
use super::conv::expect_rank;
use super::dense::{Dense, DenseConfig, linear, yes};
use super::dropout::dropout;
use super::init::Initializer;
use super::norm::{LayerNorm, LayerNormConfig};
use super::{Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiHeadAttentionConfig {
    pub num_heads: usize,
    /// Dropout on the attention weights, in training.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "yes")]
    pub use_bias: bool,
    /// Each step attends only to itself and earlier steps.
    #[serde(default)]
    pub causal: bool,
}

impl MultiHeadAttentionConfig {
    /// Inputs: `[query]` (self-attention), `[query, key_value]` or `[query, key, value]`, each `[T, E]` with one E.
    /// Output: `[T_query, E]`.
    pub fn infer(&self, inputs: &[Shape]) -> Result<Shape> {
        if inputs.is_empty() || inputs.len() > 3 {
            return Err(shape_err(format!(
                "takes 1 to 3 inputs (query, key, value), found {}",
                inputs.len()
            )));
        }
        let [tq, e] = expect_rank::<2>(&inputs[0], "multi_head_attention", "[steps, features]")?;
        for other in &inputs[1..] {
            let [_, e2] = expect_rank::<2>(other, "multi_head_attention", "[steps, features]")?;
            if e2 != e {
                return Err(shape_err(format!("query has {e} features but key/value has {e2}")));
            }
        }
        if inputs.len() == 3 && inputs[1][0] != inputs[2][0] {
            return Err(shape_err(format!(
                "key has {} steps but value has {}",
                inputs[1][0], inputs[2][0]
            )));
        }
        check_heads(e, self.num_heads)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(shape_err("dropout must be in [0, 1)"));
        }
        Ok(vec![tq, e])
    }

    pub fn init(&self, embed_dim: usize, device: &Device) -> MultiHeadAttention {
        let e = embed_dim;
        MultiHeadAttention {
            in_proj_weight: Initializer::GlorotUniform.init([3 * e, e], device),
            in_proj_bias: self.use_bias.then(|| Initializer::Zeros.init([3 * e], device)),
            out_proj: DenseConfig {
                use_bias: self.use_bias,
                ..DenseConfig::new(e)
            }
            .init(&vec![e], device),
            num_heads: self.num_heads,
            dropout: self.dropout,
            causal: self.causal,
        }
    }
}

fn check_heads(e: usize, heads: usize) -> Result<()> {
    if heads == 0 || !e.is_multiple_of(heads) {
        return Err(shape_err(format!("num_heads = {heads} must divide the {e} features")));
    }
    Ok(())
}

#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    /// `[3E, E]`: the query, key and value projections stacked, as PyTorch.
    pub in_proj_weight: Param<Tensor<2>>,
    pub in_proj_bias: Option<Param<Tensor<1>>>,
    pub out_proj: Dense,
    pub num_heads: usize,
    pub dropout: f64,
    pub causal: bool,
}

impl MultiHeadAttention {
    /// query `[B, Tq, E]`, key/value `[B, Tk, E]`, key padding mask `[B, Tk]` (true = padding) → `[B, Tq, E]`.
    pub fn forward(
        &self,
        query: Tensor<3>,
        key: Tensor<3>,
        value: Tensor<3>,
        key_mask: Option<Tensor<2, Bool>>,
        training: bool,
    ) -> Tensor<3> {
        let [b, tq, e] = query.dims();
        let tk = key.dims()[1];
        let v = self.heads(self.project(value, 2), tk);
        let weights = dropout(self.weights(query, key, key_mask), self.dropout, training);
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, tq, e]);
        linear(context, &self.out_proj.weight, self.out_proj.bias.as_ref())
    }

    /// The attention probabilities `[B, heads, Tq, Tk]`: each query's weights over the keys (masked keys get 0).
    pub fn weights(&self, query: Tensor<3>, key: Tensor<3>, key_mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        let [_, tq, e] = query.dims();
        let tk = key.dims()[1];
        let dh = e / self.num_heads;
        let q = self.heads(self.project(query, 0), tq);
        let k = self.heads(self.project(key, 1), tk);
        // Multiplying by 1/√d (not dividing): burn-autodiff 0.22.1 differentiates div_scalar through an f32 reciprocal.
        let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (dh as f64).sqrt());
        let device = scores.device();
        // Keys a query may not attend to: padded keys `[B, 1, 1, Tk]`, future steps `[1, 1, Tq, Tk]`.
        let masks: Vec<Tensor<4, Bool>> = key_mask
            .map(|m| m.unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(1))
            .into_iter()
            .chain(self.causal.then(|| {
                Tensor::<2, Bool>::tril_mask([tq, tk], 0, &device)
                    .unsqueeze_dim::<3>(0)
                    .unsqueeze_dim::<4>(0)
            }))
            .collect();
        // A large finite negative keeps the softmax finite; masked keys then get exactly zero weight, and a query
        // whose every key is masked gets zero weights (not a uniform average), as in PyTorch: its output is the
        // output projection's bias.
        for m in &masks {
            scores = scores.mask_fill(m.clone(), -1e9);
        }
        let mut weights = super::activation::softmax_last(scores);
        for m in masks {
            weights = weights.mask_fill(m, 0.0);
        }
        weights
    }

    /// `x` `[B, T, E]` through the `i`-th of the packed query/key/value projections.
    fn project(&self, x: Tensor<3>, i: usize) -> Tensor<3> {
        let e = x.dims()[2];
        let wi = self.in_proj_weight.val().narrow(0, i * e, e).transpose();
        let y = x.matmul(wi.unsqueeze_dim::<3>(0));
        match &self.in_proj_bias {
            Some(bb) => y + bb.val().narrow(0, i * e, e).unsqueeze_dim::<2>(0).unsqueeze_dim::<3>(0),
            None => y,
        }
    }

    /// `[B, T, E]` → `[B, heads, T, E/heads]`.
    fn heads(&self, x: Tensor<3>, t: usize) -> Tensor<4> {
        let [b, _, e] = x.dims();
        let h = self.num_heads;
        x.reshape([b, t, h, e / h]).swap_dims(1, 2)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerEncoderConfig {
    pub num_heads: usize,
    /// Width of the feed-forward block.
    pub ff_dim: usize,
    #[serde(default = "point_one")]
    pub dropout: f64,
    /// `relu` (PyTorch's default) or `gelu`.
    #[serde(default = "relu")]
    pub activation: Activation,
    /// Pre-norm (`x + f(norm(x))`) instead of PyTorch's default post-norm.
    #[serde(default)]
    pub norm_first: bool,
    #[serde(default = "eps")]
    pub epsilon: f64,
}

fn point_one() -> f64 {
    0.1
}
fn relu() -> Activation {
    Activation::Relu
}
fn eps() -> f64 {
    1e-5
}

impl TransformerEncoderConfig {
    /// `[T, E]` → `[T, E]`.
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        let [_, e] = expect_rank::<2>(input, "transformer_encoder", "[steps, features]")?;
        check_heads(e, self.num_heads)?;
        if self.ff_dim == 0 || !(0.0..1.0).contains(&self.dropout) {
            return Err(shape_err("ff_dim must be at least 1 and dropout in [0, 1)"));
        }
        Ok(input.clone())
    }

    pub fn init(&self, input: &Shape, device: &Device) -> Result<TransformerEncoder> {
        let e = input[1];
        let norm = LayerNormConfig { epsilon: self.epsilon };
        Ok(TransformerEncoder {
            self_attn: MultiHeadAttentionConfig {
                num_heads: self.num_heads,
                dropout: self.dropout,
                use_bias: true,
                causal: false,
            }
            .init(e, device),
            linear1: DenseConfig::new(self.ff_dim).init(&vec![e], device),
            linear2: DenseConfig::new(e).init(&vec![self.ff_dim], device),
            norm1: norm.init(input, device)?,
            norm2: norm.init(input, device)?,
            dropout: self.dropout,
            norm_first: self.norm_first,
            activation: self.activation,
        })
    }
}

#[derive(Module, Debug)]
pub struct TransformerEncoder {
    pub self_attn: MultiHeadAttention,
    pub linear1: Dense,
    pub linear2: Dense,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
    pub dropout: f64,
    pub norm_first: bool,
    #[module(skip)]
    pub activation: Activation,
}

impl TransformerEncoder {
    /// The self-attention probabilities `[B, heads, T, T]` of `x` `[B, T, E]` (after the first norm when it comes
    /// first).
    pub fn attention_weights(&self, x: Tensor<3>, mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        let y = if self.norm_first { self.norm1.forward(x) } else { x };
        self.self_attn.weights(y.clone(), y, mask)
    }

    /// `[B, T, E]` with a key padding mask `[B, T]` → `[B, T, E]`.
    pub fn forward(&self, x: Tensor<3>, mask: Option<Tensor<2, Bool>>, training: bool) -> Tensor<3> {
        let attend = |y: Tensor<3>| {
            let a = self.self_attn.forward(y.clone(), y.clone(), y, mask.clone(), training);
            dropout(a, self.dropout, training)
        };
        let feed = |y: Tensor<3>| {
            let hidden = self
                .activation
                .apply(linear(y, &self.linear1.weight, self.linear1.bias.as_ref()));
            let hidden = dropout(hidden, self.dropout, training);
            dropout(
                linear(hidden, &self.linear2.weight, self.linear2.bias.as_ref()),
                self.dropout,
                training,
            )
        };
        if self.norm_first {
            let x = x.clone() + attend(self.norm1.forward(x));
            x.clone() + feed(self.norm2.forward(x))
        } else {
            let x = self.norm1.forward(x.clone() + attend(x));
            self.norm2.forward(x.clone() + feed(x))
        }
    }
}
