//! [`LayerSpec`]: the closed set of layer kinds a model spec can name, as plain serde data, with shape inference
//! and building a layer's module for given input shapes.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::activation::{Activation, ActivationFn, EluConfig, GeluConfig, LeakyReluConfig, NoOptions, SoftmaxConfig};
use super::attention::{MultiHeadAttentionConfig, TransformerEncoderConfig};
use super::conv::ConvConfig;
use super::conv_transpose::ConvTransposeConfig;
use super::dense::DenseConfig;
use super::dropout::DropoutConfig;
use super::embedding::{EmbeddingConfig, PositionalEmbeddingConfig};
use super::merge::{ConcatenateConfig, Merge};
use super::norm::{BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNormConfig};
use super::pool::{AdaptivePoolConfig, AvgPoolConfig, GlobalPool, PoolConfig, PoolKind};
use super::recurrent::{Cell, MergeMode, RecurrentConfig};
use super::reshape::{PermuteConfig, ReshapeConfig, SliceConfig};
use super::upsampling::UpsamplingConfig;
use crate::error::{Context, Result};

use super::layer::Layer;
use super::{Shape, shape_err};
use super::{bert, merge, recurrent, reshape};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerSpec {
    Dense(DenseConfig),
    Conv1d(ConvConfig),
    Conv2d(ConvConfig),
    ConvTranspose1d(ConvTransposeConfig),
    ConvTranspose2d(ConvTransposeConfig),
    Upsampling1d(UpsamplingConfig),
    Upsampling2d(UpsamplingConfig),
    MaxPool1d(PoolConfig),
    MaxPool2d(PoolConfig),
    AvgPool1d(AvgPoolConfig),
    AvgPool2d(AvgPoolConfig),
    AdaptiveAvgPool1d(AdaptivePoolConfig),
    AdaptiveAvgPool2d(AdaptivePoolConfig),
    GlobalAvgPool1d(NoOptions),
    GlobalMaxPool1d(NoOptions),
    GlobalAvgPool2d(NoOptions),
    GlobalMaxPool2d(NoOptions),
    Flatten(NoOptions),
    Reshape(ReshapeConfig),
    Permute(PermuteConfig),
    Slice(SliceConfig),
    Dropout(DropoutConfig),
    BatchNorm(BatchNormConfig),
    LayerNorm(LayerNormConfig),
    GroupNorm(GroupNormConfig),
    InstanceNorm(InstanceNormConfig),
    Embedding(EmbeddingConfig),
    PositionalEmbedding(PositionalEmbeddingConfig),
    SimpleRnn(RecurrentConfig),
    Lstm(RecurrentConfig),
    Gru(RecurrentConfig),
    Bidirectional(BidirectionalConfig),
    TimeDistributed(TimeDistributedConfig),
    MultiHeadAttention(MultiHeadAttentionConfig),
    TransformerEncoder(TransformerEncoderConfig),
    Bert(bert::BertLayerConfig),
    Add(NoOptions),
    Multiply(NoOptions),
    Concatenate(ConcatenateConfig),
    /// A VAE's reparameterized draw from `[mean, log_var]`.
    Sampling(NoOptions),
    Activation(Activation),
    Relu(NoOptions),
    Relu6(NoOptions),
    Hardswish(NoOptions),
    Silu(NoOptions),
    LeakyRelu(LeakyReluConfig),
    Elu(EluConfig),
    Selu(NoOptions),
    Gelu(GeluConfig),
    Mish(NoOptions),
    Tanh(NoOptions),
    Sigmoid(NoOptions),
    Softmax(SoftmaxConfig),
    Linear(NoOptions),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BidirectionalConfig {
    /// A `simple_rnn`, `lstm` or `gru` layer.
    pub layer: Box<LayerSpec>,
    #[serde(default)]
    pub merge: MergeMode,
}

impl BidirectionalConfig {
    /// `layer` (a `simple_rnn`, `lstm` or `gru`) run forwards and backwards, outputs concatenated.
    pub fn new(layer: LayerSpec) -> Self {
        BidirectionalConfig {
            layer: Box::new(layer),
            merge: MergeMode::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeDistributedConfig {
    /// The layer applied to every step independently.
    pub layer: Box<LayerSpec>,
}

/// The names a spec may use for layer kinds (for "did you mean" suggestions).
pub const LAYER_KINDS: &[&str] = &[
    "dense",
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "upsampling1d",
    "upsampling2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "global_avg_pool1d",
    "global_max_pool1d",
    "global_avg_pool2d",
    "global_max_pool2d",
    "flatten",
    "reshape",
    "permute",
    "slice",
    "dropout",
    "batch_norm",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "embedding",
    "positional_embedding",
    "simple_rnn",
    "lstm",
    "gru",
    "bidirectional",
    "time_distributed",
    "multi_head_attention",
    "transformer_encoder",
    "bert",
    "add",
    "multiply",
    "concatenate",
    "sampling",
    "activation",
    "relu",
    "relu6",
    "hardswish",
    "silu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "mish",
    "tanh",
    "sigmoid",
    "softmax",
    "linear",
];

/// The result of building one node: its module and what it outputs.
pub struct Built {
    pub layer: Layer,
    pub outputs: Vec<Shape>,
    /// Whether each output carries a sequence padding mask.
    pub masked: Vec<bool>,
}

impl LayerSpec {
    /// The TOML key of this kind (`conv2d`), also the stem of automatic node names.
    pub fn kind(&self) -> &'static str {
        let value = serde_json::to_value(self).ok();
        let key = value
            .as_ref()
            .and_then(|v| v.as_object())
            .and_then(|o| o.keys().next().cloned());
        key.and_then(|k| LAYER_KINDS.iter().find(|n| **n == k).copied())
            .unwrap_or("layer")
    }

    fn is_merge(&self) -> bool {
        matches!(
            self,
            LayerSpec::Add(_) | LayerSpec::Multiply(_) | LayerSpec::Concatenate(_)
        )
    }

    /// Inputs this kind accepts: merges ≥ 2, attention 1–3, recurrent 1 + initial states; others exactly 1.
    fn check_arity(&self, n: usize) -> Result<()> {
        let ok = match self {
            s if s.is_merge() => n >= 2,
            LayerSpec::MultiHeadAttention(_) => (1..=3).contains(&n),
            LayerSpec::Sampling(_) => n == 2,
            LayerSpec::SimpleRnn(_) | LayerSpec::Lstm(_) | LayerSpec::Gru(_) | LayerSpec::Bidirectional(_) => n >= 1,
            _ => n == 1,
        };
        if ok {
            Ok(())
        } else if matches!(self, LayerSpec::Sampling(_)) {
            Err(shape_err(format!(
                "sampling takes two inputs, the mean and the log-variance (from = [\"mean\", \"log_var\"]), found {n}"
            )))
        } else if self.is_merge() {
            Err(shape_err(format!(
                "{} needs at least two inputs, found {n}",
                self.kind()
            )))
        } else {
            Err(shape_err(format!("{} takes one input, found {n}", self.kind())))
        }
    }

    /// Infers the output shapes from the input shapes and builds the module: every shape error surfaces here,
    /// before any training.
    pub fn build(&self, inputs: &[Shape], input_names: &[String], masked: &[bool], device: &Device) -> Result<Built> {
        self.check_arity(inputs.len())?;
        let x = &inputs[0];
        let any_mask = masked.iter().any(|m| *m);
        let one = |layer: Layer, out: Shape, keeps_mask: bool| Built {
            layer,
            outputs: vec![out],
            masked: vec![keeps_mask && any_mask],
        };
        let same = |layer: Layer| one(layer, x.clone(), true);
        Ok(match self {
            LayerSpec::Dense(c) => one(Layer::Dense(c.init(x, device)), c.infer(x)?, true),
            LayerSpec::Conv1d(c) => {
                let out = c.infer1d(x)?;
                one(Layer::Conv1d(c.init1d(x, device)?), out, false)
            }
            LayerSpec::Conv2d(c) => {
                let out = c.infer2d(x)?;
                one(Layer::Conv2d(c.init2d(x, device)?), out, false)
            }
            LayerSpec::ConvTranspose1d(c) => {
                let out = c.infer1d(x)?;
                one(Layer::ConvTranspose1d(c.init1d(x, device)?), out, false)
            }
            LayerSpec::ConvTranspose2d(c) => {
                let out = c.infer2d(x)?;
                one(Layer::ConvTranspose2d(c.init2d(x, device)?), out, false)
            }
            LayerSpec::Upsampling1d(c) => one(Layer::Upsampling1d(c.init1d()?), c.infer1d(x)?, false),
            LayerSpec::Upsampling2d(c) => one(Layer::Upsampling2d(c.init2d()?), c.infer2d(x)?, false),
            LayerSpec::MaxPool1d(c) => one(
                Layer::Pool(c.init(x, PoolKind::Max1d, false)?),
                c.infer(x, false)?,
                false,
            ),
            LayerSpec::AvgPool1d(c) => one(Layer::Pool(c.init(x, false)?), c.infer(x, false)?, false),
            LayerSpec::MaxPool2d(c) => one(
                Layer::Pool(c.init(x, PoolKind::Max2d, false)?),
                c.infer(x, true)?,
                false,
            ),
            LayerSpec::AvgPool2d(c) => one(Layer::Pool(c.init(x, true)?), c.infer(x, true)?, false),
            LayerSpec::AdaptiveAvgPool1d(c) => {
                let (pool, out) = c.build(x, false)?;
                one(Layer::AdaptivePool(pool), out, false)
            }
            LayerSpec::AdaptiveAvgPool2d(c) => {
                let (pool, out) = c.build(x, true)?;
                one(Layer::AdaptivePool(pool), out, false)
            }
            LayerSpec::GlobalAvgPool1d(_)
            | LayerSpec::GlobalMaxPool1d(_)
            | LayerSpec::GlobalAvgPool2d(_)
            | LayerSpec::GlobalMaxPool2d(_) => {
                let g = GlobalPool {
                    max: matches!(self, LayerSpec::GlobalMaxPool1d(_) | LayerSpec::GlobalMaxPool2d(_)),
                    two_d: matches!(self, LayerSpec::GlobalAvgPool2d(_) | LayerSpec::GlobalMaxPool2d(_)),
                };
                one(Layer::GlobalPool(g), g.infer(x)?, false)
            }
            LayerSpec::Flatten(_) => {
                let out = reshape::flatten_shape(x);
                one(Layer::Reshape(out.clone()), out, false)
            }
            LayerSpec::Reshape(c) => {
                let out = c.infer(x)?;
                one(Layer::Reshape(out.clone()), out, false)
            }
            LayerSpec::Permute(c) => one(Layer::Permute(c.clone()), c.infer(x)?, false),
            LayerSpec::Slice(c) => {
                let (out, axis) = c.infer(x)?;
                let keeps_mask = x.len() == 2 && axis == 2;
                one(
                    Layer::Slice {
                        axis,
                        start: c.start,
                        len: c.end - c.start,
                    },
                    out,
                    keeps_mask,
                )
            }
            LayerSpec::Dropout(c) => {
                c.check()?;
                same(Layer::Dropout(c.rate))
            }
            LayerSpec::BatchNorm(c) => same(Layer::BatchNorm(c.init(x, device)?)),
            LayerSpec::LayerNorm(c) => same(Layer::LayerNorm(c.init(x, device)?)),
            LayerSpec::GroupNorm(c) => same(Layer::GroupNorm(c.init(x, device)?)),
            LayerSpec::InstanceNorm(c) => same(Layer::GroupNorm(c.init(x, device)?)),
            LayerSpec::Embedding(c) => {
                let out = c.infer(x)?;
                Built {
                    layer: Layer::Embedding(c.init(device)),
                    outputs: vec![out],
                    masked: vec![c.padding_idx.is_some()],
                }
            }
            LayerSpec::PositionalEmbedding(c) => {
                let out = c.infer(x)?;
                one(Layer::PositionalEmbedding(c.init(x, device)), out, true)
            }
            LayerSpec::SimpleRnn(c) => recurrent_node(
                c,
                Cell::Simple(c.activation),
                1,
                MergeMode::Concat,
                inputs,
                masked,
                device,
            )?,
            LayerSpec::Lstm(c) => recurrent_node(c, Cell::Lstm, 1, MergeMode::Concat, inputs, masked, device)?,
            LayerSpec::Gru(c) => recurrent_node(c, Cell::Gru, 1, MergeMode::Concat, inputs, masked, device)?,
            LayerSpec::Bidirectional(b) => {
                let (c, cell) = match b.layer.as_ref() {
                    LayerSpec::SimpleRnn(c) => (c, Cell::Simple(c.activation)),
                    LayerSpec::Lstm(c) => (c, Cell::Lstm),
                    LayerSpec::Gru(c) => (c, Cell::Gru),
                    other => {
                        return Err(shape_err(format!(
                            "bidirectional wraps simple_rnn, lstm or gru, found {}",
                            other.kind()
                        )));
                    }
                };
                recurrent_node(c, cell, 2, b.merge, inputs, masked, device)?
            }
            LayerSpec::TimeDistributed(t) => {
                if x.len() < 2 {
                    return Err(shape_err(format!(
                        "time_distributed needs [steps, ...] inputs, found {x:?}"
                    )));
                }
                let step: Shape = x[1..].to_vec();
                let inner = t
                    .layer
                    .build(&[step], input_names, &[false], device)
                    .at_with(|| t.layer.kind().to_string())?;
                if inner.outputs.len() != 1 {
                    return Err(shape_err("time_distributed wraps layers with one output"));
                }
                let out: Shape = std::iter::once(x[0]).chain(inner.outputs[0].iter().copied()).collect();
                if out.len() > 3 {
                    return Err(shape_err(format!(
                        "time_distributed output {out:?} has more than 3 axes per sample"
                    )));
                }
                one(Layer::TimeDistributed(Box::new(inner.layer)), out, true)
            }
            LayerSpec::MultiHeadAttention(c) => {
                let out = c.infer(inputs)?;
                Built {
                    layer: Layer::Attention(c.init(out[1], device)),
                    outputs: vec![out],
                    masked: vec![masked[0]],
                }
            }
            LayerSpec::TransformerEncoder(c) => {
                let out = c.infer(x)?;
                one(Layer::Transformer(c.init(x, device)?), out, true)
            }
            LayerSpec::Bert(c) => {
                let out = c.infer(x)?;
                let (model, head) = c.init(device)?;
                let sequence = head.pooling.is_none();
                Built {
                    layer: Layer::Bert(model, head),
                    outputs: vec![out],
                    masked: vec![sequence],
                }
            }
            LayerSpec::Add(_) => one(
                Layer::Merge(Merge::Add),
                merge::infer_elementwise(inputs, input_names)?,
                true,
            ),
            LayerSpec::Multiply(_) => one(
                Layer::Merge(Merge::Multiply),
                merge::infer_elementwise(inputs, input_names)?,
                true,
            ),
            LayerSpec::Concatenate(c) => {
                let (out, axis) = c.infer(inputs, input_names)?;
                one(Layer::Merge(Merge::Concatenate(axis + 1)), out, true)
            }
            LayerSpec::Sampling(_) => one(Layer::Sampling, super::sampling::infer(inputs, input_names)?, false),
            LayerSpec::Activation(a) => same(Layer::Activation(ActivationFn::Plain(*a))),
            LayerSpec::Relu(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Relu))),
            LayerSpec::Relu6(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Relu6))),
            LayerSpec::Hardswish(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Hardswish))),
            LayerSpec::Silu(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Silu))),
            LayerSpec::Selu(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Selu))),
            LayerSpec::Mish(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Mish))),
            LayerSpec::Tanh(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Tanh))),
            LayerSpec::Sigmoid(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Sigmoid))),
            LayerSpec::Linear(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Linear))),
            LayerSpec::LeakyRelu(c) => same(Layer::Activation(ActivationFn::LeakyRelu(c.alpha))),
            LayerSpec::Elu(c) => same(Layer::Activation(ActivationFn::Elu(c.alpha))),
            LayerSpec::Gelu(c) => same(Layer::Activation(if c.approximate {
                ActivationFn::GeluTanh
            } else {
                ActivationFn::Plain(Activation::Gelu)
            })),
            LayerSpec::Softmax(c) => {
                let rank = x.len() as i64;
                let axis = if c.axis < 0 { rank + c.axis } else { c.axis };
                if axis < 0 || axis >= rank {
                    return Err(shape_err(format!(
                        "axis {} is outside the {rank} per-sample axes",
                        c.axis
                    )));
                }
                same(Layer::Activation(ActivationFn::Softmax(axis as usize + 1)))
            }
        })
    }

    /// Receptive-field steps `(window span, stride)` per spatial axis for windowed layers; `Some(vec![])` for
    /// layers that keep positions (element-wise); `None` for layers after which a receptive field means nothing.
    pub fn window(&self) -> Option<Vec<(usize, usize)>> {
        match self {
            LayerSpec::Conv1d(c) => c.window::<1>().ok(),
            LayerSpec::Conv2d(c) => c.window::<2>().ok(),
            LayerSpec::MaxPool1d(c) => c.window::<1>().ok(),
            LayerSpec::AvgPool1d(c) => c.window_config().window::<1>().ok(),
            LayerSpec::MaxPool2d(c) => c.window::<2>().ok(),
            LayerSpec::AvgPool2d(c) => c.window_config().window::<2>().ok(),
            LayerSpec::Dropout(_)
            | LayerSpec::BatchNorm(_)
            | LayerSpec::GroupNorm(_)
            | LayerSpec::InstanceNorm(_)
            | LayerSpec::Add(_)
            | LayerSpec::Multiply(_)
            | LayerSpec::Concatenate(_)
            | LayerSpec::Activation(_)
            | LayerSpec::Relu(_)
            | LayerSpec::Relu6(_)
            | LayerSpec::Hardswish(_)
            | LayerSpec::Silu(_)
            | LayerSpec::LeakyRelu(_)
            | LayerSpec::Elu(_)
            | LayerSpec::Selu(_)
            | LayerSpec::Gelu(_)
            | LayerSpec::Mish(_)
            | LayerSpec::Tanh(_)
            | LayerSpec::Sigmoid(_)
            | LayerSpec::Linear(_) => Some(vec![]),
            _ => None,
        }
    }

    /// Whether this layer ends in a softmax/sigmoid the loss should skip (computing from logits instead).
    pub fn ends_in_probability(&self) -> Option<Activation> {
        self.final_activation().filter(|a| a.is_probability())
    }

    /// The activation this layer applies last, for the layers that end in one (dense, convolutions, activation
    /// layers); `None` for the rest.
    pub fn final_activation(&self) -> Option<Activation> {
        Some(match self {
            LayerSpec::Dense(c) => c.activation,
            LayerSpec::Conv1d(c) | LayerSpec::Conv2d(c) => c.activation,
            LayerSpec::ConvTranspose1d(c) | LayerSpec::ConvTranspose2d(c) => c.activation,
            LayerSpec::Activation(a) => *a,
            LayerSpec::Sigmoid(_) => Activation::Sigmoid,
            LayerSpec::Softmax(c) if c.axis == -1 => Activation::Softmax,
            LayerSpec::Relu(_) => Activation::Relu,
            LayerSpec::Relu6(_) => Activation::Relu6,
            LayerSpec::Tanh(_) => Activation::Tanh,
            LayerSpec::Silu(_) => Activation::Silu,
            LayerSpec::Gelu(_) => Activation::Gelu,
            LayerSpec::TimeDistributed(t) => return t.layer.final_activation(),
            _ => return None,
        })
    }
}

fn recurrent_node(
    c: &RecurrentConfig,
    cell: Cell,
    directions: usize,
    merge: MergeMode,
    inputs: &[Shape],
    masked: &[bool],
    device: &Device,
) -> Result<Built> {
    let outputs = recurrent::infer(c, cell, directions, merge, inputs)?;
    let layer = Layer::Recurrent(recurrent::init(c, cell, directions, merge, &inputs[0], device));
    let masked = (0..outputs.len())
        .map(|i| i == 0 && c.return_sequences && masked[0])
        .collect();
    Ok(Built { layer, outputs, masked })
}
