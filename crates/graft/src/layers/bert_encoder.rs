//! The BERT encoder as graft modules: embeddings, self-attention layers and sentence pooling, with parameter names
//! that map one-to-one onto Hugging Face checkpoints (`self` is `self_attn` and `LayerNorm` is `layer_norm` here,
//! Rust keywords and style). `BertConfig` is `config.json`'s architecture; loading weights into an encoder is
//! `pretrained::bert`.

use std::path::Path;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::activation::{gelu_approximate, relu, silu};
use burn::tensor::module::embedding;
use burn::tensor::{Int, TensorData};
use serde::{Deserialize, Serialize};

pub use crate::data::sentence_pipeline::{
    Pipeline, Pooling, PoolingMode, SentenceBertConfig, read_json, read_pipeline, sentence_pipeline,
};
use crate::error::{Context, Error, Result};
use crate::layers::activation::Activation;
use crate::layers::dense::{Dense, linear};
use crate::layers::init::Initializer;
use crate::layers::norm::LayerNorm;

// --- configuration ----------------------------------------------------------------------------------------------

/// The fields of a Hugging Face `config.json` that a BERT encoder needs (others are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_embedding_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// The id of `[PAD]`: positions holding it are left out of attention and pooling.
    #[serde(default)]
    pub pad_token_id: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// The feed-forward activation, from `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenAct {
    /// `gelu`: the exact erf form.
    #[default]
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
    /// `silu` / `swish`.
    Silu,
}

impl HiddenAct {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(HiddenAct::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(HiddenAct::GeluTanh),
            "relu" => Some(HiddenAct::Relu),
            "silu" | "swish" => Some(HiddenAct::Silu),
            _ => None,
        }
    }

    fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            HiddenAct::Gelu => crate::layers::activation::gelu(x),
            HiddenAct::GeluTanh => gelu_approximate(x),
            HiddenAct::Relu => relu(x),
            HiddenAct::Silu => silu(x),
        }
    }
}

impl BertConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).in_file(path)?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| Error::new(format!("not a BERT config: {e}")).in_file(path))?;
        config.check().in_file(path)?;
        Ok(config)
    }

    /// Sizes at least 1, heads dividing the width, a known activation, BERT's absolute positions.
    pub fn check(&self) -> Result<()> {
        if let Some(kind) = &self.model_type
            && kind != "bert"
        {
            return Err(Error::new(format!(
                "model_type \"{kind}\" is not supported; graft loads BERT encoders (model_type \"bert\")"
            ))
            .at("model_type"));
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if value == 0 {
                return Err(Error::new("must be at least 1").at(name));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::new(format!(
                "{} heads do not divide hidden_size {}",
                self.num_attention_heads, self.hidden_size
            ))
            .at("num_attention_heads"));
        }
        if HiddenAct::parse(&self.hidden_act).is_none() {
            return Err(Error::new(format!(
                "unsupported activation \"{}\"; expected gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu or silu",
                self.hidden_act
            ))
            .at("hidden_act"));
        }
        if let Some(kind) = &self.position_embedding_type
            && kind != "absolute"
        {
            return Err(Error::new(format!(
                "\"{kind}\" is not supported; graft's BERT has absolute position embeddings"
            ))
            .at("position_embedding_type"));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(Error::new("must be positive").at("layer_norm_eps"));
        }
        Ok(())
    }

    /// The encoder initialized as Hugging Face initializes BERT (weights and tables from N(0, 0.02²), biases 0,
    /// LayerNorm 1 and 0), so it also trains from scratch; loading pretrained weights replaces every value.
    pub fn init(&self, device: &Device) -> BertModel {
        let h = self.hidden_size;
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let dense = |out: usize, inp: usize| Dense {
            weight: normal.init([out, inp], device),
            bias: Some(Initializer::Zeros.init([out], device)),
            activation: Activation::Linear,
        };
        let norm = || LayerNorm {
            weight: Initializer::Ones.init([h], device),
            bias: Initializer::Zeros.init([h], device),
            epsilon: self.layer_norm_eps,
        };
        let table = |rows: usize| Table {
            weight: normal.init([rows, h], device),
        };
        let act = HiddenAct::parse(&self.hidden_act).unwrap_or_default();
        BertModel {
            embeddings: BertEmbeddings {
                word_embeddings: table(self.vocab_size),
                position_embeddings: table(self.max_position_embeddings),
                token_type_embeddings: table(self.type_vocab_size),
                layer_norm: norm(),
            },
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: BertAttention {
                            self_attn: BertSelfAttention {
                                query: dense(h, h),
                                key: dense(h, h),
                                value: dense(h, h),
                                num_heads: self.num_attention_heads,
                            },
                            output: BertSelfOutput {
                                dense: dense(h, h),
                                layer_norm: norm(),
                            },
                        },
                        intermediate: BertIntermediate {
                            dense: dense(self.intermediate_size, h),
                            act,
                        },
                        output: BertOutput {
                            dense: dense(h, self.intermediate_size),
                            layer_norm: norm(),
                        },
                    })
                    .collect(),
            },
            config: self.clone(),
        }
    }
}

// --- modules ----------------------------------------------------------------------------------------------------

/// A lookup table `weight [rows, hidden]` (`torch.nn.Embedding` without a padding index).
#[derive(Module, Debug)]
pub struct Table {
    pub weight: Param<Tensor<2>>,
}

/// Word + position + token-type embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: Table,
    pub position_embeddings: Table,
    pub token_type_embeddings: Table,
    /// HF: `LayerNorm`.
    pub layer_norm: LayerNorm,
}

/// Multi-head self-attention with separate query, key and value projections.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct BertSelfOutput {
    pub dense: Dense,
    /// HF: `LayerNorm`.
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct BertAttention {
    /// HF: `self`.
    pub self_attn: BertSelfAttention,
    pub output: BertSelfOutput,
}

#[derive(Module, Debug)]
pub struct BertIntermediate {
    pub dense: Dense,
    #[module(skip)]
    pub act: HiddenAct,
}

#[derive(Module, Debug)]
pub struct BertOutput {
    pub dense: Dense,
    /// HF: `LayerNorm`.
    pub layer_norm: LayerNorm,
}

/// One post-norm encoder block: `x = LN(x + attn(x))`, `x = LN(x + W2·act(W1·x))`.
#[derive(Module, Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

#[derive(Module, Debug)]
pub struct BertEncoder {
    pub layer: Vec<BertLayer>,
}

/// `transformers.BertModel` without its pooler.
#[derive(Module, Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    #[module(skip)]
    pub config: BertConfig,
}

/// The token ids of one text (or text pair) and their segment (token type) ids, as the tokenizer gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl BertSelfAttention {
    /// `[B, T, H]` and the additive key mask `[B, 1, 1, T]` → `[B, T, H]`.
    fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let [b, t, e] = x.dims();
        let v = self.heads(&self.value, &x);
        self.probabilities(x, key_bias)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, e])
    }

    /// `x` `[B, T, H]` through one projection, split into heads: `[B, heads, T, H/heads]`.
    fn heads(&self, d: &Dense, x: &Tensor<3>) -> Tensor<4> {
        let [b, t, e] = x.dims();
        let h = self.num_heads;
        linear(x.clone(), &d.weight, d.bias.as_ref())
            .reshape([b, t, h, e / h])
            .swap_dims(1, 2)
    }

    /// The attention probabilities `[B, heads, T, T]` of this layer for `x` `[B, T, H]`.
    fn probabilities(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<4> {
        let dh = x.dims()[2] / self.num_heads;
        let (q, k) = (self.heads(&self.query, &x), self.heads(&self.key, &x));
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (dh as f64).sqrt()) + key_bias;
        crate::layers::activation::softmax_last(scores)
    }
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, key_bias: Tensor<4>) -> Tensor<3> {
        let a = self.attention.self_attn.forward(x.clone(), key_bias);
        let out = &self.attention.output;
        let x = out
            .layer_norm
            .forward(linear(a, &out.dense.weight, out.dense.bias.as_ref()) + x);
        let inter = &self.intermediate;
        let hidden = inter
            .act
            .apply(linear(x.clone(), &inter.dense.weight, inter.dense.bias.as_ref()));
        let out = &self.output;
        out.layer_norm
            .forward(linear(hidden, &out.dense.weight, out.dense.bias.as_ref()) + x)
    }
}

impl BertModel {
    /// The width of the hidden states.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The last hidden state `[B, T, H]` for token ids `[B, T]`, token type ids `[B, T]` and an attention mask
    /// `[B, T]` (1 for tokens, 0 for padding: padded keys are left out of every softmax). Ids must be in range and
    /// `T` at most `max_position_embeddings` — [`BertModel::encode`] checks this.
    pub fn forward(&self, ids: Tensor<2, Int>, type_ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let (mut x, key_bias) = self.embed(ids, type_ids, mask);
        for layer in &self.encoder.layer {
            x = layer.forward(x, key_bias.clone());
        }
        x
    }

    /// The embedded tokens `[B, T, H]` and the additive key mask `[B, 1, 1, T]`: 0 for tokens and -1e9 for padding,
    /// added to the attention scores, so exp() of a padded key's score is 0.
    fn embed(&self, ids: Tensor<2, Int>, type_ids: Tensor<2, Int>, mask: Tensor<2>) -> (Tensor<3>, Tensor<4>) {
        let [b, t] = ids.dims();
        let e = &self.embeddings;
        let words = embedding(e.word_embeddings.weight.val(), ids);
        let positions = e.position_embeddings.weight.val().narrow(0, 0, t).unsqueeze_dim::<3>(0);
        let types = embedding(e.token_type_embeddings.weight.val(), type_ids);
        let x = e.layer_norm.forward(words + positions + types);
        (x, mask.sub_scalar(1.0).mul_scalar(1e9).reshape([b, 1, 1, t]))
    }

    /// [`BertModel::forward`]'s attention probabilities: per layer `[B, heads, T, T]`, each row a query token's
    /// weights over the keys (padded keys get 0).
    pub fn attention_maps(&self, ids: Tensor<2, Int>, type_ids: Tensor<2, Int>, mask: Tensor<2>) -> Vec<Tensor<4>> {
        let (mut x, key_bias) = self.embed(ids, type_ids, mask);
        let mut maps = vec![];
        for layer in &self.encoder.layer {
            maps.push(layer.attention.self_attn.probabilities(x.clone(), key_bias.clone()));
            x = layer.forward(x, key_bias.clone());
        }
        maps
    }

    /// Pads `batch` to its longest member and runs the encoder: the last hidden state `[B, T, H]` and the attention
    /// mask `[B, T]` (1 = token, 0 = padding).
    pub fn encode(&self, batch: &[Tokens], device: &Device) -> Result<(Tensor<3>, Tensor<2>)> {
        let c = &self.config;
        let t = batch.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        if batch.is_empty() || t == 0 {
            return Err(Error::new(
                "nothing to encode: an empty batch or an empty token sequence",
            ));
        }
        if t > c.max_position_embeddings {
            return Err(Error::new(format!(
                "a sequence of {t} tokens exceeds the model's max_position_embeddings = {}",
                c.max_position_embeddings
            )));
        }
        let b = batch.len();
        let mut ids = vec![0i64; b * t];
        let mut types = vec![0i64; b * t];
        let mut mask = vec![0f32; b * t];
        for (i, s) in batch.iter().enumerate() {
            if s.type_ids.len() != s.ids.len() {
                return Err(Error::new(format!(
                    "sequence {i}: {} token ids but {} token type ids",
                    s.ids.len(),
                    s.type_ids.len()
                )));
            }
            for (j, (&id, &ty)) in s.ids.iter().zip(&s.type_ids).enumerate() {
                if id as usize >= c.vocab_size {
                    return Err(Error::new(format!(
                        "token id {id} is outside the model's vocabulary of {} (does tokenizer.json belong to \
                         this model?)",
                        c.vocab_size
                    )));
                }
                if ty as usize >= c.type_vocab_size {
                    return Err(Error::new(format!(
                        "token type id {ty} is outside the model's type_vocab_size = {}",
                        c.type_vocab_size
                    )));
                }
                ids[i * t + j] = id as i64;
                types[i * t + j] = ty as i64;
                mask[i * t + j] = 1.0;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device);
        let types = Tensor::<2, Int>::from_data(TensorData::new(types, [b, t]), device);
        let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device);
        Ok((self.forward(ids, types, mask.clone()), mask))
    }
}

// --- pooling ----------------------------------------------------------------------------------------------------

/// Sentence pooling over a BERT encoder's hidden states, as sentence-transformers computes it.
pub trait PoolTokens {
    /// Hidden states `[B, T, H]` and mask `[B, T]` (1 = token) → `[B, modes·H]`.
    fn forward(&self, hidden: Tensor<3>, mask: Tensor<2>) -> Tensor<2>;
}

impl PoolTokens for Pooling {
    fn forward(&self, hidden: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
        let [b, _, h] = hidden.dims();
        let m: Tensor<3> = mask.unsqueeze_dim(2);
        let parts: Vec<Tensor<2>> = self
            .modes
            .iter()
            .map(|mode| match mode {
                PoolingMode::Cls => hidden.clone().narrow(1, 0, 1).reshape([b, h]),
                // Padded positions become -1e9 (sentence-transformers' value) and never win.
                PoolingMode::Max => (hidden.clone() + m.clone().sub_scalar(1.0).mul_scalar(1e9))
                    .max_dim(1)
                    .reshape([b, h]),
                PoolingMode::Mean => {
                    let sum = (hidden.clone() * m.clone()).sum_dim(1).reshape([b, h]);
                    sum / m.clone().sum_dim(1).clamp_min(1e-9).reshape([b, 1])
                }
                PoolingMode::MeanSqrtLen => {
                    let sum = (hidden.clone() * m.clone()).sum_dim(1).reshape([b, h]);
                    sum / m.clone().sum_dim(1).sqrt().reshape([b, 1])
                }
            })
            .collect();
        let pooled = Tensor::cat(parts, 1);
        if self.normalize {
            // torch.nn.functional.normalize: x / max(‖x‖₂, 1e-12).
            let norm = pooled.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
            pooled / norm
        } else {
            pooled
        }
    }
}
