//! Layers: one file per family. Each has a config (what a spec holds, serde-(de)serializable, with shape
//! inference) and a burn module (parameters with PyTorch names and layouts, and a documented `forward`).
//! [`LayerSpec`] is the closed set of layer kinds a model spec can name; [`Layer`] the built modules.

pub mod activation;
pub mod attention;
pub mod bert;
pub mod bert_encoder;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod init;
pub mod merge;
pub mod norm;
pub mod pool;
pub mod recurrent;
pub mod reshape;
pub mod value;

use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::layers::value::{Data, Value};
use activation::{Activation, ActivationFn, EluConfig, GeluConfig, LeakyReluConfig, NoOptions, SoftmaxConfig};
use attention::{MultiHeadAttention, MultiHeadAttentionConfig, TransformerEncoder, TransformerEncoderConfig};
use conv::{Conv1d, Conv2d, ConvConfig};
use dense::{Dense, DenseConfig};
use dropout::DropoutConfig;
use embedding::{Embedding, EmbeddingConfig, PositionalEmbedding, PositionalEmbeddingConfig};
use merge::{ConcatenateConfig, Merge};
use norm::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig, InstanceNormConfig, LayerNorm, LayerNormConfig};
use pool::{AvgPoolConfig, GlobalPool, Pool, PoolConfig, PoolKind};
use recurrent::{Cell, MergeMode, Recurrent, RecurrentConfig};
use reshape::{PermuteConfig, ReshapeConfig, SliceConfig};

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
}

/// Every layer kind a spec can name, with its options: `{ conv2d = { filters = 16, kernel = 3 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerSpec {
    Dense(DenseConfig),
    Conv1d(ConvConfig),
    Conv2d(ConvConfig),
    MaxPool1d(PoolConfig),
    MaxPool2d(PoolConfig),
    AvgPool1d(AvgPoolConfig),
    AvgPool2d(AvgPoolConfig),
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
    Activation(Activation),
    Relu(NoOptions),
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
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
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
    "activation",
    "relu",
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
            LayerSpec::SimpleRnn(_) | LayerSpec::Lstm(_) | LayerSpec::Gru(_) | LayerSpec::Bidirectional(_) => n >= 1,
            _ => n == 1,
        };
        if ok {
            Ok(())
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
            LayerSpec::Activation(a) => same(Layer::Activation(ActivationFn::Plain(*a))),
            LayerSpec::Relu(_) => same(Layer::Activation(ActivationFn::Plain(Activation::Relu))),
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
        let a = match self {
            LayerSpec::Dense(c) => c.activation,
            LayerSpec::Conv1d(c) | LayerSpec::Conv2d(c) => c.activation,
            LayerSpec::Activation(a) => *a,
            LayerSpec::Sigmoid(_) => Activation::Sigmoid,
            LayerSpec::Softmax(c) if c.axis == -1 => Activation::Softmax,
            LayerSpec::TimeDistributed(t) => return t.layer.ends_in_probability(),
            _ => return None,
        };
        a.is_probability().then_some(a)
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

/// A built layer.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    Dense(Dense),
    Conv1d(Conv1d),
    Conv2d(Conv2d),
    BatchNorm(BatchNorm),
    LayerNorm(LayerNorm),
    GroupNorm(GroupNorm),
    Embedding(Embedding),
    PositionalEmbedding(PositionalEmbedding),
    Recurrent(Recurrent),
    Attention(MultiHeadAttention),
    Transformer(TransformerEncoder),
    /// A BERT encoder and the pooling after it.
    Bert(crate::layers::bert_encoder::BertModel, bert::BertHead),
    TimeDistributed(Box<Layer>),
    Pool(Pool),
    GlobalPool(GlobalPool),
    /// To this per-sample shape.
    Reshape(Shape),
    Permute(PermuteConfig),
    /// Along a batch-tensor axis.
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    Dropout(f64),
    Activation(ActivationFn),
    Merge(Merge),
}

impl Layer {
    /// Runs the layer on its input values (ranks guaranteed by shape inference at build time).
    pub fn forward(&self, mut inputs: Vec<Value>, ctx: &Ctx) -> Result<Vec<Value>> {
        let first = inputs.remove(0);
        let mask = first.mask.clone();
        let keep = |data: Data| Ok(vec![Value::with_mask(data, mask.clone())]);
        let plain = |data: Data| Ok(vec![Value::new(data)]);
        match self {
            Layer::Dense(l) => keep(crate::map_data!(first.data, |t| l.forward(t, ctx))),
            Layer::Conv1d(l) => plain(Data::D3(l.forward(first.data.d3()?, ctx))),
            Layer::Conv2d(l) => plain(Data::D4(l.forward(first.data.d4()?, ctx))),
            Layer::BatchNorm(l) => keep(l.forward(first.data, ctx.training)),
            Layer::LayerNorm(l) => keep(crate::map_data!(first.data, |t| l.forward(t))),
            Layer::GroupNorm(l) => keep(l.forward(first.data)),
            Layer::Embedding(l) => {
                let (out, mask) = l.forward(first.data.d2()?);
                Ok(vec![Value::with_mask(Data::D3(out), mask)])
            }
            Layer::PositionalEmbedding(l) => keep(Data::D3(l.forward(first.data.d3()?))),
            Layer::Recurrent(l) => {
                let initial = inputs.into_iter().map(|v| v.data.d2()).collect::<Result<Vec<_>>>()?;
                let (seqs, states) = l.forward(first.data.d3()?, mask.clone(), initial, ctx.dropout_active());
                let mut out: Vec<Value> = seqs
                    .into_iter()
                    .map(|s| Value::with_mask(Data::D3(s), mask.clone()))
                    .collect();
                out.extend(states.into_iter().map(|s| Value::new(Data::D2(s))));
                Ok(out)
            }
            Layer::Attention(l) => {
                let query = first.data.d3()?;
                let (key, key_mask) = match inputs.first() {
                    Some(v) => (v.data.clone().d3()?, v.mask.clone()),
                    None => (query.clone(), mask.clone()),
                };
                let value = match inputs.get(1) {
                    Some(v) => v.data.clone().d3()?,
                    None => key.clone(),
                };
                keep(Data::D3(l.forward(query, key, value, key_mask, ctx.dropout_active())))
            }
            Layer::Transformer(l) => keep(Data::D3(l.forward(
                first.data.d3()?,
                mask.clone(),
                ctx.dropout_active(),
            ))),
            Layer::Bert(model, head) => Ok(vec![bert::forward(model, head, first.data.d2()?)?]),
            Layer::TimeDistributed(inner) => {
                let dims = first.data.dims();
                let (b, t) = (dims[0], dims[1]);
                let folded: Vec<usize> = std::iter::once(b * t).chain(dims[2..].iter().copied()).collect();
                let out = inner
                    .forward(vec![Value::new(first.data.reshape(&folded)?)], ctx)?
                    .remove(0);
                let out_dims = out.data.dims();
                let unfolded: Vec<usize> = [b, t].into_iter().chain(out_dims[1..].iter().copied()).collect();
                keep(out.data.reshape(&unfolded)?)
            }
            Layer::Pool(p) => plain(match first.data {
                Data::D4(t) => Data::D4(p.forward2d(t)),
                other => Data::D3(p.forward1d(other.d3()?)),
            }),
            Layer::GlobalPool(g) => plain(Data::D2(match first.data {
                Data::D4(t) => g.forward2d(t),
                other => g.forward1d(other.d3()?, mask),
            })),
            Layer::Reshape(shape) => plain(reshape::reshape_batch(first.data, shape)?),
            Layer::Permute(p) => plain(p.forward(first.data)),
            Layer::Slice { axis, start, len } => keep(reshape::slice(first.data, *axis, *start, *len)),
            Layer::Dropout(rate) => keep(crate::map_data!(first.data, |t| dropout::dropout(
                t,
                *rate,
                ctx.dropout_active()
            ))),
            Layer::Activation(a) => {
                let rank = first.data.rank();
                if ctx.skip_probability && a.is_probability(rank) {
                    keep(first.data)
                } else {
                    keep(crate::map_data!(first.data, |t| a.apply(t)))
                }
            }
            Layer::Merge(m) => {
                let mut all = vec![first];
                all.extend(inputs);
                Ok(vec![m.forward(all)?])
            }
        }
    }
}

/// Delegates the module contract to the variant's module without entering a variant name, so parameter paths are
/// `node.weight`, as in PyTorch, not `node.Dense.weight`. Parameter-free variants have nothing to visit.
macro_rules! delegate_module {
    ($($variant:ident),*) => {
        impl Module for Layer {
            fn collect_devices(&self, devices: Devices) -> Devices {
                match self {
                    $(Layer::$variant(m) => m.collect_devices(devices),)*
                    Layer::TimeDistributed(m) => m.collect_devices(devices),
                    Layer::Bert(m, _) => m.collect_devices(devices),
                    _ => devices,
                }
            }
            fn fork(self, device: &Device) -> Self {
                match self {
                    $(Layer::$variant(m) => Layer::$variant(m.fork(device)),)*
                    Layer::TimeDistributed(m) => Layer::TimeDistributed(Box::new(m.fork(device))),
                    Layer::Bert(m, h) => Layer::Bert(m.fork(device), h),
                    other => other,
                }
            }
            fn to_device(self, device: &Device) -> Self {
                match self {
                    $(Layer::$variant(m) => Layer::$variant(m.to_device(device)),)*
                    Layer::TimeDistributed(m) => Layer::TimeDistributed(Box::new(m.to_device(device))),
                    Layer::Bert(m, h) => Layer::Bert(m.to_device(device), h),
                    other => other,
                }
            }
            fn train(self) -> Self {
                match self {
                    $(Layer::$variant(m) => Layer::$variant(m.train()),)*
                    Layer::TimeDistributed(m) => Layer::TimeDistributed(Box::new(m.train())),
                    Layer::Bert(m, h) => Layer::Bert(m.train(), h),
                    other => other,
                }
            }
            fn valid(&self) -> Self {
                match self {
                    $(Layer::$variant(m) => Layer::$variant(m.valid()),)*
                    Layer::TimeDistributed(m) => Layer::TimeDistributed(Box::new(m.valid())),
                    Layer::Bert(m, h) => Layer::Bert(m.valid(), h.clone()),
                    other => other.clone(),
                }
            }
            fn materialize(self) -> Self {
                match self {
                    $(Layer::$variant(m) => Layer::$variant(m.materialize()),)*
                    Layer::TimeDistributed(m) => Layer::TimeDistributed(Box::new(m.materialize())),
                    Layer::Bert(m, h) => Layer::Bert(m.materialize(), h),
                    other => other,
                }
            }
            fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
                match self {
                    $(Layer::$variant(m) => m.visit(visitor),)*
                    Layer::TimeDistributed(m) => m.visit(visitor),
                    Layer::Bert(m, _) => m.visit(visitor),
                    _ => {}
                }
            }
            fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
                match self {
                    $(Layer::$variant(m) => Layer::$variant(m.map(mapper)),)*
                    Layer::TimeDistributed(m) => Layer::TimeDistributed(Box::new(m.map(mapper))),
                    Layer::Bert(m, h) => Layer::Bert(m.map(mapper), h),
                    other => other,
                }
            }
        }
    };
}

delegate_module!(
    Dense,
    Conv1d,
    Conv2d,
    BatchNorm,
    LayerNorm,
    GroupNorm,
    Embedding,
    PositionalEmbedding,
    Recurrent,
    Attention,
    Transformer
);

#[cfg(test)]
mod tests;
