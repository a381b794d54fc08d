//! [`Layer`]: the built modules, one variant per kind of module, with the forward pass that routes a node's
//! inputs to its module and burn's `Module` implementation delegated to each.

use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor};
use burn::prelude::*;

use super::activation::ActivationFn;
use super::attention::{MultiHeadAttention, TransformerEncoder};
use super::conv::{Conv1d, Conv2d};
use super::conv_transpose::{ConvTranspose1d, ConvTranspose2d};
use super::dense::Dense;
use super::embedding::{Embedding, PositionalEmbedding};
use super::merge::Merge;
use super::norm::{BatchNorm, GroupNorm, LayerNorm};
use super::pool::{AdaptivePool, GlobalPool, Pool};
use super::recurrent::Recurrent;
use super::reshape::PermuteConfig;
use super::upsampling::Upsampling;
use crate::error::Result;
use crate::layers::value::{Data, Value};

use super::{Ctx, Shape};
use super::{bert, dropout, reshape};

/// A built layer.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Layer {
    Dense(Dense),
    Conv1d(Conv1d),
    Conv2d(Conv2d),
    ConvTranspose1d(ConvTranspose1d),
    ConvTranspose2d(ConvTranspose2d),
    Upsampling1d(Upsampling),
    Upsampling2d(Upsampling),
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
    AdaptivePool(AdaptivePool),
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
    /// The reparameterized draw of a VAE.
    Sampling,
}

/// An attention node's query, key, value and key padding mask from its inputs: the query, then the key (default:
/// the query) and the value (default: the key).
fn attention_args(first: Value, rest: &[Value]) -> Result<(Tensor<3>, Tensor<3>, Tensor<3>, Option<Tensor<2, Bool>>)> {
    let mask = first.mask.clone();
    let query = first.data.d3()?;
    let (key, key_mask) = match rest.first() {
        Some(v) => (v.data.clone().d3()?, v.mask.clone()),
        None => (query.clone(), mask),
    };
    let value = match rest.get(1) {
        Some(v) => v.data.clone().d3()?,
        None => key.clone(),
    };
    Ok((query, key, value, key_mask))
}

impl Layer {
    /// The attention probabilities `[B, heads, Tq, Tk]` of an attention or transformer layer for its inputs `args`
    /// (as the graph hands them to [`Layer::forward`]); `None` for other layers.
    pub fn attention_weights(&self, mut args: Vec<Value>) -> Result<Option<Tensor<4>>> {
        if args.is_empty() {
            return Ok(None);
        }
        let first = args.remove(0);
        Ok(match self {
            Layer::Attention(l) => {
                let (query, key, _, key_mask) = attention_args(first, &args)?;
                Some(l.weights(query, key, key_mask))
            }
            Layer::Transformer(l) => Some(l.attention_weights(first.data.d3()?, first.mask)),
            _ => None,
        })
    }

    /// This layer with state of its own where clones would share it (batch norm's running statistics).
    pub fn with_own_state(self) -> Layer {
        match self {
            Layer::BatchNorm(bn) => Layer::BatchNorm(bn.with_own_running_stats()),
            Layer::TimeDistributed(inner) => Layer::TimeDistributed(Box::new(inner.with_own_state())),
            other => other,
        }
    }
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
            Layer::ConvTranspose1d(l) => plain(Data::D3(l.forward(first.data.d3()?, ctx))),
            Layer::ConvTranspose2d(l) => plain(Data::D4(l.forward(first.data.d4()?, ctx))),
            Layer::Upsampling1d(u) => plain(Data::D3(u.forward1d(first.data.d3()?))),
            Layer::Upsampling2d(u) => plain(Data::D4(u.forward2d(first.data.d4()?))),
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
                let (query, key, value, key_mask) = attention_args(first, &inputs)?;
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
            Layer::AdaptivePool(p) => plain(match first.data {
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
            Layer::Sampling => {
                let log_var = inputs.remove(0).data;
                plain(super::sampling::forward(first.data, log_var, ctx.sampling_active())?)
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
    ConvTranspose1d,
    ConvTranspose2d,
    BatchNorm,
    LayerNorm,
    GroupNorm,
    Embedding,
    PositionalEmbedding,
    Recurrent,
    Attention,
    Transformer
);
