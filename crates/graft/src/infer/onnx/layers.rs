//! Each built layer as ONNX operators, computing what its `forward` computes at inference. Layouts follow graft's:
//! 1-D layers see `[batch, steps, channels]` (ONNX's convolutions and pools want channels first, so they are
//! wrapped in transposes), 2-D layers `[batch, channels, height, width]`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::ops::InterpolateMode;

use super::Val;
use super::builder::{Attr, GraphBuilder};
use super::proto::data_type;
use crate::error::{Error, Result};
use crate::layers::Layer;
use crate::layers::Shape;
use crate::layers::activation::{Activation, ActivationFn};
use crate::layers::attention::{MultiHeadAttention, TransformerEncoder};
use crate::layers::merge::Merge;
use crate::layers::norm::{GroupNorm, LayerNorm};
use crate::layers::pool::{AdaptivePool, Pool, PoolKind};

/// Lowers one node running `layer` (owned by the node named `owner`, whose parameter names prefix the weights) on
/// `inputs`; `outputs` are the node's per-sample output shapes. With `logits`, a final softmax or sigmoid is left
/// out, as graft's forward pass leaves it out for a loss or a task head.
pub(crate) fn lower(
    b: &mut GraphBuilder,
    layer: &Layer,
    owner: &str,
    mut inputs: Vec<Val>,
    outputs: &[Shape],
    logits: bool,
) -> Result<Vec<Val>> {
    let x = inputs.remove(0);
    let out_rank = outputs.first().map_or(1, |s| s.len() + 1);
    let final_act = |a: ActivationFn| {
        if logits && a.is_probability(out_rank) {
            ActivationFn::Plain(Activation::Linear)
        } else {
            a
        }
    };
    let out_shape = outputs.first().cloned().unwrap_or_default();
    let one = |name: String| Ok(vec![x.with(name, out_shape.clone())]);
    // Layers that drop the padding mask, as their forward does.
    let plain = |name: String| {
        Ok(vec![Val {
            name,
            shape: out_shape.clone(),
            int: false,
            mask: None,
        }])
    };
    match layer {
        Layer::Dense(d) => {
            let bias = d.bias.as_ref().map(|p| p.val());
            let y = linear(b, &x, owner, &d.weight.val(), bias.as_ref());
            one(activation(b, final_act(ActivationFn::Plain(d.activation)), &y)?)
        }
        Layer::Conv2d(c) => {
            let o = &c.options;
            let y = conv(
                b,
                "Conv",
                &x.name,
                owner,
                &c.weight,
                c.bias.as_ref(),
                conv_attrs(&o.stride, &o.padding, &o.dilation, o.groups, None),
            );
            plain(activation(b, final_act(ActivationFn::Plain(c.activation)), &y)?)
        }
        Layer::Conv1d(c) => {
            let o = &c.options;
            let t = channels_first(b, &x.name);
            let y = conv(
                b,
                "Conv",
                &t,
                owner,
                &c.weight,
                c.bias.as_ref(),
                conv_attrs(&o.stride, &o.padding, &o.dilation, o.groups, None),
            );
            let y = channels_last(b, &y);
            plain(activation(b, final_act(ActivationFn::Plain(c.activation)), &y)?)
        }
        Layer::ConvTranspose2d(c) => {
            let o = &c.options;
            let pads = o.padding.map(|p| (p, p));
            let y = conv(
                b,
                "ConvTranspose",
                &x.name,
                owner,
                &c.weight,
                c.bias.as_ref(),
                conv_attrs(&o.stride, &pads, &o.dilation, o.groups, Some(&o.padding_out)),
            );
            plain(activation(b, final_act(ActivationFn::Plain(c.activation)), &y)?)
        }
        Layer::ConvTranspose1d(c) => {
            let o = &c.options;
            let pads = o.padding.map(|p| (p, p));
            let t = channels_first(b, &x.name);
            let y = conv(
                b,
                "ConvTranspose",
                &t,
                owner,
                &c.weight,
                c.bias.as_ref(),
                conv_attrs(&o.stride, &pads, &o.dilation, o.groups, Some(&o.padding_out)),
            );
            let y = channels_last(b, &y);
            plain(activation(b, final_act(ActivationFn::Plain(c.activation)), &y)?)
        }
        Layer::Upsampling1d(u) | Layer::Upsampling2d(u) => {
            let one_d = matches!(layer, Layer::Upsampling1d(_));
            let input = if one_d {
                channels_first(b, &x.name)
            } else {
                x.name.clone()
            };
            let scales: Vec<f32> = if one_d {
                vec![1.0, 1.0, u.factor[1] as f32]
            } else {
                vec![1.0, 1.0, u.factor[0] as f32, u.factor[1] as f32]
            };
            let scales = b.floats(&[scales.len()], &scales);
            let attrs = match &u.options.mode {
                InterpolateMode::Nearest => vec![
                    ("mode", Attr::Str("nearest".into())),
                    ("coordinate_transformation_mode", Attr::Str("asymmetric".into())),
                    ("nearest_mode", Attr::Str("floor".into())),
                ],
                InterpolateMode::Bilinear => vec![
                    ("mode", Attr::Str("linear".into())),
                    (
                        "coordinate_transformation_mode",
                        Attr::Str(if u.options.align_corners {
                            "align_corners".into()
                        } else {
                            "pytorch_half_pixel".into()
                        }),
                    ),
                ],
                other => {
                    return Err(Error::new(format!(
                        "ONNX export has no mapping for {other:?} interpolation"
                    )));
                }
            };
            let y = b.op("Resize", &[&input, "", &scales], attrs);
            plain(if one_d { channels_last(b, &y) } else { y })
        }
        Layer::BatchNorm(bn) => {
            let scale = weight(b, &format!("{owner}.weight"), &bn.weight);
            let bias = weight(b, &format!("{owner}.bias"), &bn.bias);
            let mean_t = bn.running_mean.value();
            let var_t = bn.running_var.value();
            let mean = b.weight(&format!("{owner}.running_mean"), &mean_t.dims(), &values(&mean_t));
            let var = b.weight(&format!("{owner}.running_var"), &var_t.dims(), &values(&var_t));
            let attrs = || vec![("epsilon", Attr::Float(bn.epsilon as f32))];
            let y = if x.rank() == 3 {
                let t = channels_first(b, &x.name);
                let y = b.op("BatchNormalization", &[&t, &scale, &bias, &mean, &var], attrs());
                channels_last(b, &y)
            } else {
                b.op("BatchNormalization", &[&x.name, &scale, &bias, &mean, &var], attrs())
            };
            one(y)
        }
        Layer::LayerNorm(ln) => one(layer_norm(b, ln, owner, &x.name)),
        Layer::GroupNorm(gn) => one(group_norm(b, gn, owner, &x)?),
        Layer::Embedding(e) => {
            let ids = if x.int {
                x.name.clone()
            } else {
                b.op("Cast", &[&x.name], vec![("to", Attr::Int(data_type::INT64 as i64))])
            };
            let table = weight(b, &format!("{owner}.weight"), &e.weight);
            let y = b.op("Gather", &[&table, &ids], vec![("axis", Attr::Int(0))]);
            let Some(pad) = e.padding_idx else {
                return plain(y);
            };
            let pad = b.ints(&[pad as i64]);
            let mask = b.op("Equal", &[&ids, &pad], vec![]);
            let axes = b.ints(&[2]);
            let mask3 = b.op("Unsqueeze", &[&mask, &axes], vec![]);
            let zero = b.scalar(0.0);
            let y = b.op("Where", &[&mask3, &zero, &y], vec![]);
            Ok(vec![Val {
                name: y,
                shape: out_shape.clone(),
                int: false,
                mask: Some(mask),
            }])
        }
        Layer::PositionalEmbedding(p) => {
            let t = x.shape[0];
            let table = p.weight.val().narrow(0, 0, t);
            let dims = table.dims();
            let table = b.weight(
                &format!("{owner}.weight[:{t}]"),
                &[1, dims[0], dims[1]],
                &values(&table),
            );
            one(b.op("Add", &[&x.name, &table], vec![]))
        }
        Layer::Recurrent(r) => super::recurrent::lower(b, r, owner, x, inputs, outputs),
        Layer::Attention(a) => {
            let (key, value) = match inputs.len() {
                0 => (x.clone(), x.clone()),
                1 => (inputs[0].clone(), inputs[0].clone()),
                _ => (inputs[0].clone(), inputs[1].clone()),
            };
            let key_mask = key.mask.clone();
            one(attention(b, a, owner, &x, &key, &value, key_mask.as_deref())?)
        }
        Layer::Transformer(t) => one(transformer(b, t, owner, &x)?),
        Layer::Bert(model, head) => Ok(vec![super::bert::lower(b, model, head, owner, &x)?]),
        Layer::TimeDistributed(inner) => {
            // Steps folded into the batch, the inner layer run on each, and unfolded again.
            let t = x.shape[0];
            let rest: Shape = x.shape[1..].to_vec();
            let folded_shape: Vec<i64> = std::iter::once(-1).chain(rest.iter().map(|&d| d as i64)).collect();
            let shape = b.ints(&folded_shape);
            let folded = b.op("Reshape", &[&x.name, &shape], vec![]);
            let inner_out: Shape = out_shape[1..].to_vec();
            let inner_val = Val {
                name: folded,
                shape: rest,
                int: x.int,
                mask: None,
            };
            let y = lower(
                b,
                inner,
                owner,
                vec![inner_val],
                std::slice::from_ref(&inner_out),
                false,
            )?
            .remove(0);
            let unfolded: Vec<i64> = [-1, t as i64]
                .into_iter()
                .chain(inner_out.iter().map(|&d| d as i64))
                .collect();
            let shape = b.ints(&unfolded);
            one(b.op("Reshape", &[&y.name, &shape], vec![]))
        }
        Layer::Pool(p) => plain(pool(b, p, &x.name)),
        Layer::AdaptivePool(AdaptivePool::OneD(n)) => plain(adaptive_mean(b, &x.name, 1, x.shape[0], *n)),
        Layer::AdaptivePool(AdaptivePool::TwoD([h, w])) => {
            let rows = adaptive_mean(b, &x.name, 2, x.shape[1], *h);
            plain(adaptive_mean(b, &rows, 3, x.shape[2], *w))
        }
        Layer::GlobalPool(g) => {
            if g.two_d {
                let op = if g.max { "GlobalMaxPool" } else { "GlobalAveragePool" };
                let y = b.op(op, &[&x.name], vec![]);
                return plain(b.op("Flatten", &[&y], vec![("axis", Attr::Int(1))]));
            }
            let axes = vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))];
            let y = match (&x.mask, g.max) {
                (None, false) => b.op("ReduceMean", &[&x.name], axes),
                (None, true) => b.op("ReduceMax", &[&x.name], axes),
                (Some(mask), max) => {
                    let axis2 = b.ints(&[2]);
                    let mask3 = b.op("Unsqueeze", &[mask, &axis2], vec![]);
                    let kept = b.op("Not", &[mask], vec![]);
                    let kept = b.op("Cast", &[&kept], vec![("to", Attr::Int(data_type::FLOAT as i64))]);
                    let axis1 = b.ints(&[1]);
                    // [batch, 1]: how many steps are not padding.
                    let count = b.op("ReduceSum", &[&kept, &axis1], vec![("keepdims", Attr::Int(1))]);
                    if max {
                        let lowest = b.scalar(f32::MIN);
                        let filled = b.op("Where", &[&mask3, &lowest, &x.name], vec![]);
                        let pooled = b.op("ReduceMax", &[&filled], axes);
                        // An all-padding row pools to zeros.
                        let zero = b.scalar(0.0);
                        let empty = b.op("Equal", &[&count, &zero], vec![]);
                        b.op("Where", &[&empty, &zero, &pooled], vec![])
                    } else {
                        let zero = b.scalar(0.0);
                        let kept3 = b.op("Where", &[&mask3, &zero, &x.name], vec![]);
                        let sum = b.op("ReduceSum", &[&kept3, &axis1], vec![("keepdims", Attr::Int(0))]);
                        let one = b.scalar(1.0);
                        let count = b.op("Max", &[&count, &one], vec![]);
                        b.op("Div", &[&sum, &count], vec![])
                    }
                }
            };
            plain(y)
        }
        Layer::Reshape(shape) => {
            let dims: Vec<i64> = std::iter::once(-1).chain(shape.iter().map(|&d| d as i64)).collect();
            let dims = b.ints(&dims);
            plain(b.op("Reshape", &[&x.name, &dims], vec![]))
        }
        Layer::Permute(p) => {
            let perm: Vec<i64> = std::iter::once(0).chain(p.dims.iter().map(|&d| d as i64 + 1)).collect();
            plain(b.op("Transpose", &[&x.name], vec![("perm", Attr::Ints(perm))]))
        }
        Layer::Slice { axis, start, len } => {
            let starts = b.ints(&[*start as i64]);
            let ends = b.ints(&[(start + len) as i64]);
            let axes = b.ints(&[*axis as i64]);
            one(b.op("Slice", &[&x.name, &starts, &ends, &axes], vec![]))
        }
        Layer::Dropout(_) => Ok(vec![x]),
        Layer::Activation(a) => one(activation(b, final_act(*a), &x.name)?),
        Layer::Sampling => Ok(vec![Val { mask: None, ..x }]),
        Layer::Merge(m) => {
            let mut all = vec![x];
            all.extend(inputs);
            let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
            let y = match m {
                Merge::Concatenate(axis) => b.op("Concat", &names, vec![("axis", Attr::Int(*axis as i64))]),
                Merge::Add | Merge::Multiply => {
                    let op = if *m == Merge::Add { "Add" } else { "Mul" };
                    let mut acc = names[0].to_string();
                    for n in &names[1..] {
                        acc = b.op(op, &[&acc, n], vec![]);
                    }
                    acc
                }
            };
            // The merged value is padded where any input is.
            let mut mask: Option<String> = None;
            for m in all.iter().filter_map(|v| v.mask.clone()) {
                mask = Some(match mask {
                    None => m,
                    Some(acc) => b.op("Or", &[&acc, &m], vec![]),
                });
            }
            Ok(vec![Val {
                name: y,
                shape: out_shape.clone(),
                int: false,
                mask,
            }])
        }
    }
}

/// A parameter's values, row-major.
pub(crate) fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// A parameter as an initializer named as in the state dict.
pub(crate) fn weight<const D: usize>(b: &mut GraphBuilder, name: &str, p: &Param<Tensor<D>>) -> String {
    let t = p.val();
    b.weight(name, &t.dims(), &values(&t))
}

/// `x·Wᵀ + b` for a `[out, in]` weight: `Gemm` on `[batch, in]`, `MatMul` + `Add` on longer shapes (stored
/// transposed for it).
pub(crate) fn linear(b: &mut GraphBuilder, x: &Val, name: &str, w: &Tensor<2>, bias: Option<&Tensor<1>>) -> String {
    let [out, inp] = w.dims();
    let bias = bias.map(|t| b.weight(&format!("{name}.bias"), &[out], &values(t)));
    if x.rank() == 2 {
        let w = b.weight(&format!("{name}.weight"), &[out, inp], &values(w));
        let mut args = vec![x.name.as_str(), w.as_str()];
        if let Some(bias) = &bias {
            args.push(bias);
        }
        return b.op("Gemm", &args, vec![("transB", Attr::Int(1))]);
    }
    let wt = w.clone().transpose();
    let wt = b.weight(&format!("{name}.weight^T"), &[inp, out], &values(&wt));
    let y = b.op("MatMul", &[&x.name, &wt], vec![]);
    match bias {
        Some(bias) => b.op("Add", &[&y, &bias], vec![]),
        None => y,
    }
}

fn conv_attrs<const N: usize>(
    stride: &[usize; N],
    padding: &[(usize, usize); N],
    dilation: &[usize; N],
    groups: usize,
    output_padding: Option<&[usize; N]>,
) -> Vec<(&'static str, Attr)> {
    let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&d| d as i64).collect());
    let pads: Vec<usize> = padding.iter().map(|p| p.0).chain(padding.iter().map(|p| p.1)).collect();
    let mut attrs = vec![
        ("strides", ints(stride)),
        ("pads", ints(&pads)),
        ("dilations", ints(dilation)),
        ("group", Attr::Int(groups as i64)),
    ];
    if let Some(out) = output_padding {
        attrs.push(("output_padding", ints(out)));
    }
    attrs
}

fn conv<const D: usize>(
    b: &mut GraphBuilder,
    op: &str,
    x: &str,
    owner: &str,
    w: &Param<Tensor<D>>,
    bias: Option<&Param<Tensor<1>>>,
    attrs: Vec<(&'static str, Attr)>,
) -> String {
    let w = weight(b, &format!("{owner}.weight"), w);
    let mut args = vec![x, w.as_str()];
    let bias = bias.map(|p| weight(b, &format!("{owner}.bias"), p));
    if let Some(bias) = &bias {
        args.push(bias);
    }
    b.op(op, &args, attrs)
}

/// PyTorch's adaptive average pooling along batch-tensor axis `axis` of extent `len`, to `n` windows (window i spans
/// ⌊i·len/n⌋ to ⌈(i+1)·len/n⌉): a Slice and a ReduceMean per window, concatenated, since opset 17 has no adaptive
/// pool. Averages over rectangles are separable, so 2-D pooling is this along the rows, then the columns.
fn adaptive_mean(b: &mut GraphBuilder, x: &str, axis: usize, len: usize, n: usize) -> String {
    let mean = |b: &mut GraphBuilder, x: &str| {
        b.op(
            "ReduceMean",
            &[x],
            vec![("axes", Attr::Ints(vec![axis as i64])), ("keepdims", Attr::Int(1))],
        )
    };
    if n == len {
        return x.to_string();
    }
    if n == 1 {
        return mean(b, x);
    }
    let parts: Vec<String> = (0..n)
        .map(|i| {
            let (start, end) = (i * len / n, ((i + 1) * len).div_ceil(n));
            let starts = b.ints(&[start as i64]);
            let ends = b.ints(&[end as i64]);
            let axes = b.ints(&[axis as i64]);
            let window = b.op("Slice", &[x, &starts, &ends, &axes], vec![]);
            mean(b, &window)
        })
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    b.op("Concat", &refs, vec![("axis", Attr::Int(axis as i64))])
}

/// `[batch, steps, channels]` → `[batch, channels, steps]`.
fn channels_first(b: &mut GraphBuilder, x: &str) -> String {
    b.op("Transpose", &[x], vec![("perm", Attr::Ints(vec![0, 2, 1]))])
}

/// `[batch, channels, steps]` → `[batch, steps, channels]`.
fn channels_last(b: &mut GraphBuilder, x: &str) -> String {
    channels_first(b, x)
}

fn pool(b: &mut GraphBuilder, p: &Pool, x: &str) -> String {
    let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&d| d as i64).collect());
    let (kind, kernel, stride, pads, include_pad, one_d) = match p {
        Pool::OneD {
            kind,
            kernel,
            stride,
            padding,
            count_include_pad,
        } => (
            *kind,
            kernel.to_vec(),
            stride.to_vec(),
            vec![padding[0].0, padding[0].1],
            *count_include_pad,
            true,
        ),
        Pool::TwoD {
            kind,
            kernel,
            stride,
            padding,
            count_include_pad,
        } => (
            *kind,
            kernel.to_vec(),
            stride.to_vec(),
            vec![padding[0].0, padding[1].0, padding[0].1, padding[1].1],
            *count_include_pad,
            false,
        ),
    };
    let input = if one_d { channels_first(b, x) } else { x.to_string() };
    let mut attrs = vec![
        ("kernel_shape", ints(&kernel)),
        ("strides", ints(&stride)),
        ("pads", ints(&pads)),
    ];
    let op = if matches!(kind, PoolKind::Max1d | PoolKind::Max2d) {
        "MaxPool"
    } else {
        attrs.push(("count_include_pad", Attr::Int(i64::from(include_pad))));
        "AveragePool"
    };
    let y = b.op(op, &[&input], attrs);
    if one_d { channels_last(b, &y) } else { y }
}

/// An activation function on `x`.
pub(crate) fn activation(b: &mut GraphBuilder, a: ActivationFn, x: &str) -> Result<String> {
    Ok(match a {
        ActivationFn::Plain(Activation::Linear) => x.to_string(),
        ActivationFn::Plain(Activation::Relu) => b.op("Relu", &[x], vec![]),
        ActivationFn::Plain(Activation::LeakyRelu) => b.op("LeakyRelu", &[x], vec![("alpha", Attr::Float(0.01))]),
        ActivationFn::LeakyRelu(alpha) => b.op("LeakyRelu", &[x], vec![("alpha", Attr::Float(alpha as f32))]),
        ActivationFn::Plain(Activation::Elu) => b.op("Elu", &[x], vec![("alpha", Attr::Float(1.0))]),
        ActivationFn::Elu(alpha) => b.op("Elu", &[x], vec![("alpha", Attr::Float(alpha as f32))]),
        ActivationFn::Plain(Activation::Selu) => b.op("Selu", &[x], vec![]),
        ActivationFn::Plain(Activation::Tanh) => b.op("Tanh", &[x], vec![]),
        ActivationFn::Plain(Activation::Sigmoid) => b.op("Sigmoid", &[x], vec![]),
        ActivationFn::Plain(Activation::Softmax) => b.op("Softmax", &[x], vec![("axis", Attr::Int(-1))]),
        ActivationFn::Softmax(axis) => b.op("Softmax", &[x], vec![("axis", Attr::Int(axis as i64))]),
        // x·Φ(x) = x/2·(1 + erf(x/√2)); opset 17 has no Gelu operator.
        ActivationFn::Plain(Activation::Gelu) => {
            let inv_sqrt2 = b.scalar(std::f32::consts::FRAC_1_SQRT_2);
            let scaled = b.op("Mul", &[x, &inv_sqrt2], vec![]);
            let erf = b.op("Erf", &[&scaled], vec![]);
            let one = b.scalar(1.0);
            let shifted = b.op("Add", &[&erf, &one], vec![]);
            let half = b.scalar(0.5);
            let half_x = b.op("Mul", &[x, &half], vec![]);
            b.op("Mul", &[&half_x, &shifted], vec![])
        }
        // x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        ActivationFn::GeluTanh => {
            let three = b.scalar(3.0);
            let cube = b.op("Pow", &[x, &three], vec![]);
            let c = b.scalar(0.044715);
            let cube = b.op("Mul", &[&cube, &c], vec![]);
            let inner = b.op("Add", &[x, &cube], vec![]);
            let k = b.scalar((2.0 / std::f32::consts::PI).sqrt());
            let inner = b.op("Mul", &[&inner, &k], vec![]);
            let t = b.op("Tanh", &[&inner], vec![]);
            let one = b.scalar(1.0);
            let shifted = b.op("Add", &[&t, &one], vec![]);
            let half = b.scalar(0.5);
            let half_x = b.op("Mul", &[x, &half], vec![]);
            b.op("Mul", &[&half_x, &shifted], vec![])
        }
        ActivationFn::Plain(Activation::Relu6) => {
            let (low, high) = (b.scalar(0.0), b.scalar(6.0));
            b.op("Clip", &[x, &low, &high], vec![])
        }
        ActivationFn::Plain(Activation::Hardswish) => b.op("HardSwish", &[x], vec![]),
        ActivationFn::Plain(Activation::Silu) => {
            let s = b.op("Sigmoid", &[x], vec![]);
            b.op("Mul", &[x, &s], vec![])
        }
        // x·tanh(softplus(x)).
        ActivationFn::Plain(Activation::Mish) => {
            let sp = b.op("Softplus", &[x], vec![]);
            let t = b.op("Tanh", &[&sp], vec![]);
            b.op("Mul", &[x, &t], vec![])
        }
    })
}

pub(crate) fn layer_norm(b: &mut GraphBuilder, ln: &LayerNorm, owner: &str, x: &str) -> String {
    let scale = weight(b, &format!("{owner}.weight"), &ln.weight);
    let bias = weight(b, &format!("{owner}.bias"), &ln.bias);
    b.op(
        "LayerNormalization",
        &[x, &scale, &bias],
        vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(ln.epsilon as f32))],
    )
}

/// Group (and instance) normalization, composed: opset 17 has no GroupNormalization.
fn group_norm(b: &mut GraphBuilder, gn: &GroupNorm, owner: &str, x: &Val) -> Result<String> {
    let steps_last = x.rank() == 3;
    let input = if steps_last {
        channels_first(b, &x.name)
    } else {
        x.name.clone()
    };
    // Channels first, per sample.
    let cf: Shape = if steps_last {
        vec![x.shape[1], x.shape[0]]
    } else {
        x.shape.clone()
    };
    let c = cf[0];
    let grouped_shape = b.ints(&[0, gn.groups as i64, -1]);
    let grouped = b.op("Reshape", &[&input, &grouped_shape], vec![]);
    let mean_attrs = || vec![("axes", Attr::Ints(vec![2])), ("keepdims", Attr::Int(1))];
    let mean = b.op("ReduceMean", &[&grouped], mean_attrs());
    let centered = b.op("Sub", &[&grouped, &mean], vec![]);
    let squared = b.op("Mul", &[&centered, &centered], vec![]);
    let var = b.op("ReduceMean", &[&squared], mean_attrs());
    let eps = b.scalar(gn.epsilon as f32);
    let var = b.op("Add", &[&var, &eps], vec![]);
    let std = b.op("Sqrt", &[&var], vec![]);
    let normed = b.op("Div", &[&centered, &std], vec![]);
    let back: Vec<i64> = std::iter::once(-1).chain(cf.iter().map(|&d| d as i64)).collect();
    let back = b.ints(&back);
    let mut y = b.op("Reshape", &[&normed, &back], vec![]);
    // Per-channel affine, broadcast over the axes after the channels.
    let affine_dims: Vec<usize> = std::iter::once(c).chain(cf[1..].iter().map(|_| 1)).collect();
    if let Some(w) = &gn.weight {
        let w = b.weight(&format!("{owner}.weight"), &affine_dims, &values(&w.val()));
        y = b.op("Mul", &[&y, &w], vec![]);
    }
    if let Some(bias) = &gn.bias {
        let bias = b.weight(&format!("{owner}.bias"), &affine_dims, &values(&bias.val()));
        y = b.op("Add", &[&y, &bias], vec![]);
    }
    Ok(if steps_last { channels_last(b, &y) } else { y })
}

/// Multi-head attention of `query` over `key`/`value` (`[batch, steps, features]`), as graft computes it: scores
/// scaled by 1/√d, padded keys (and future steps when causal) at -1e9 before the softmax and at 0 after it.
pub(crate) fn attention(
    b: &mut GraphBuilder,
    a: &MultiHeadAttention,
    owner: &str,
    query: &Val,
    key: &Val,
    value: &Val,
    key_mask: Option<&str>,
) -> Result<String> {
    let (tq, e) = (query.shape[0], query.shape[1]);
    let tk = key.shape[0];
    let h = a.num_heads;
    let dh = e / h;
    let w = a.in_proj_weight.val();
    let bias = a.in_proj_bias.as_ref().map(|p| p.val());
    let mut project = |x: &Val, i: usize, part: &str| {
        let wi = w.clone().narrow(0, i * e, e);
        let bi = bias.as_ref().map(|bb| bb.clone().narrow(0, i * e, e));
        linear(b, x, &format!("{owner}.in_proj_{part}"), &wi, bi.as_ref())
    };
    let q = project(query, 0, "q");
    let k = project(key, 1, "k");
    let v = project(value, 2, "v");
    let split = |b: &mut GraphBuilder, x: &str, t: usize, perm: Vec<i64>| {
        let shape = b.ints(&[0, t as i64, h as i64, dh as i64]);
        let r = b.op("Reshape", &[x, &shape], vec![]);
        b.op("Transpose", &[&r], vec![("perm", Attr::Ints(perm))])
    };
    let q = split(b, &q, tq, vec![0, 2, 1, 3]);
    // Keys transposed straight to [batch, heads, dh, steps].
    let k = split(b, &k, tk, vec![0, 2, 3, 1]);
    let v = split(b, &v, tk, vec![0, 2, 1, 3]);
    let scores = b.op("MatMul", &[&q, &k], vec![]);
    let scale = b.scalar((1.0 / (dh as f64).sqrt()) as f32);
    let mut scores = b.op("Mul", &[&scores, &scale], vec![]);
    let mut masks = vec![];
    if let Some(m) = key_mask {
        let axes = b.ints(&[1, 2]);
        masks.push(b.op("Unsqueeze", &[m, &axes], vec![]));
    }
    if a.causal {
        let future: Vec<bool> = (0..tq).flat_map(|i| (0..tk).map(move |j| j > i)).collect();
        masks.push(b.bools(&[1, 1, tq, tk], &future));
    }
    let low = b.scalar(-1e9);
    for m in &masks {
        scores = b.op("Where", &[m, &low, &scores], vec![]);
    }
    let mut weights = b.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
    let zero = b.scalar(0.0);
    for m in &masks {
        weights = b.op("Where", &[m, &zero, &weights], vec![]);
    }
    let context = b.op("MatMul", &[&weights, &v], vec![]);
    let context = b.op("Transpose", &[&context], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let shape = b.ints(&[0, tq as i64, e as i64]);
    let context = b.op("Reshape", &[&context, &shape], vec![]);
    let context = query.with(context, vec![tq, e]);
    let out_bias = a.out_proj.bias.as_ref().map(|p| p.val());
    Ok(linear(
        b,
        &context,
        &format!("{owner}.out_proj"),
        &a.out_proj.weight.val(),
        out_bias.as_ref(),
    ))
}

fn transformer(b: &mut GraphBuilder, t: &TransformerEncoder, owner: &str, x: &Val) -> Result<String> {
    let mask = x.mask.clone();
    let attend = |b: &mut GraphBuilder, y: &str| {
        let y = x.with(y.to_string(), x.shape.clone());
        attention(
            b,
            &t.self_attn,
            &format!("{owner}.self_attn"),
            &y,
            &y,
            &y,
            mask.as_deref(),
        )
    };
    let feed = |b: &mut GraphBuilder, y: &str| -> Result<String> {
        let y = x.with(y.to_string(), x.shape.clone());
        let bias1 = t.linear1.bias.as_ref().map(|p| p.val());
        let hidden = linear(
            b,
            &y,
            &format!("{owner}.linear1"),
            &t.linear1.weight.val(),
            bias1.as_ref(),
        );
        let hidden = activation(b, ActivationFn::Plain(t.activation), &hidden)?;
        let hidden = x.with(hidden, vec![x.shape[0], t.linear1.weight.val().dims()[0]]);
        let bias2 = t.linear2.bias.as_ref().map(|p| p.val());
        Ok(linear(
            b,
            &hidden,
            &format!("{owner}.linear2"),
            &t.linear2.weight.val(),
            bias2.as_ref(),
        ))
    };
    let norm1 = format!("{owner}.norm1");
    let norm2 = format!("{owner}.norm2");
    Ok(if t.norm_first {
        let n = layer_norm(b, &t.norm1, &norm1, &x.name);
        let a = attend(b, &n)?;
        let x1 = b.op("Add", &[&x.name, &a], vec![]);
        let n = layer_norm(b, &t.norm2, &norm2, &x1);
        let f = feed(b, &n)?;
        b.op("Add", &[&x1, &f], vec![])
    } else {
        let a = attend(b, &x.name)?;
        let sum = b.op("Add", &[&x.name, &a], vec![]);
        let x1 = layer_norm(b, &t.norm1, &norm1, &sum);
        let f = feed(b, &x1)?;
        let sum = b.op("Add", &[&x1, &f], vec![]);
        layer_norm(b, &t.norm2, &norm2, &sum)
    })
}
