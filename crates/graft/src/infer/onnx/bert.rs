//! A `bert` layer (a BERT encoder and its sentence pooling) as ONNX operators: embeddings, post-norm blocks with
//! padded keys at -1e9 in every softmax, and sentence-transformers' pooling. Initializers carry the checkpoint's
//! names under the node's (`bert.encoder.layer.0.attention.self.query.weight`).

use super::Val;
use super::builder::{Attr, GraphBuilder};
use super::layers::{activation, layer_norm, linear, values, weight};
use super::proto::data_type;
use crate::error::Result;
use crate::layers::Shape;
use crate::layers::activation::{Activation, ActivationFn};
use crate::layers::bert::BertHead;
use crate::layers::bert_encoder::{BertModel, HiddenAct, PoolingMode};
use crate::layers::dense::Dense;

pub(crate) fn lower(b: &mut GraphBuilder, model: &BertModel, head: &BertHead, owner: &str, x: &Val) -> Result<Val> {
    let c = &model.config;
    let t = x.shape[0];
    let h = c.hidden_size;
    let ids = if x.int {
        x.name.clone()
    } else {
        b.op("Cast", &[&x.name], vec![("to", Attr::Int(data_type::INT64 as i64))])
    };
    let pad = b.ints(&[c.pad_token_id as i64]);
    let padded = b.op("Equal", &[&ids, &pad], vec![]);
    let kept = b.op("Not", &[&padded], vec![]);
    // [batch, steps]: 1 for tokens, 0 for padding.
    let kept = b.op("Cast", &[&kept], vec![("to", Attr::Int(data_type::FLOAT as i64))]);

    let e = &model.embeddings;
    let words = weight(
        b,
        &format!("{owner}.embeddings.word_embeddings.weight"),
        &e.word_embeddings.weight,
    );
    let words = b.op("Gather", &[&words, &ids], vec![("axis", Attr::Int(0))]);
    let positions = e.position_embeddings.weight.val().narrow(0, 0, t);
    let positions = b.weight(
        &format!("{owner}.embeddings.position_embeddings.weight[:{t}]"),
        &[1, t, h],
        &values(&positions),
    );
    // graft's encoder gives every token type id 0.
    let types = e.token_type_embeddings.weight.val().narrow(0, 0, 1);
    let types = b.weight(
        &format!("{owner}.embeddings.token_type_embeddings.weight[0]"),
        &[h],
        &values(&types),
    );
    let sum = b.op("Add", &[&words, &positions], vec![]);
    let sum = b.op("Add", &[&sum, &types], vec![]);
    let mut hidden = layer_norm(b, &e.layer_norm, &format!("{owner}.embeddings.LayerNorm"), &sum);

    // (mask - 1)·1e9 as [batch, 1, 1, steps], added to every score.
    let one = b.scalar(1.0);
    let big = b.scalar(1e9);
    let bias = b.op("Sub", &[&kept, &one], vec![]);
    let bias = b.op("Mul", &[&bias, &big], vec![]);
    let axes = b.ints(&[1, 2]);
    let key_bias = b.op("Unsqueeze", &[&bias, &axes], vec![]);

    let heads = c.num_attention_heads;
    let dh = h / heads;
    let val = |name: &str, width: usize| Val {
        name: name.to_string(),
        shape: vec![t, width],
        int: false,
        mask: None,
    };
    let dense = |b: &mut GraphBuilder, input: &str, width: usize, d: &Dense, name: &str| {
        let bias = d.bias.as_ref().map(|p| p.val());
        linear(b, &val(input, width), name, &d.weight.val(), bias.as_ref())
    };
    for (i, layer) in model.encoder.layer.iter().enumerate() {
        let at = format!("{owner}.encoder.layer.{i}");
        let s = &layer.attention.self_attn;
        let split = |b: &mut GraphBuilder, d: &Dense, part: &str, perm: Vec<i64>| {
            let y = dense(b, &hidden, h, d, &format!("{at}.attention.self.{part}"));
            let shape = b.ints(&[0, t as i64, heads as i64, dh as i64]);
            let y = b.op("Reshape", &[&y, &shape], vec![]);
            b.op("Transpose", &[&y], vec![("perm", Attr::Ints(perm))])
        };
        let q = split(b, &s.query, "query", vec![0, 2, 1, 3]);
        let k = split(b, &s.key, "key", vec![0, 2, 3, 1]);
        let v = split(b, &s.value, "value", vec![0, 2, 1, 3]);
        let scores = b.op("MatMul", &[&q, &k], vec![]);
        let scale = b.scalar((1.0 / (dh as f64).sqrt()) as f32);
        let scores = b.op("Mul", &[&scores, &scale], vec![]);
        let scores = b.op("Add", &[&scores, &key_bias], vec![]);
        let probs = b.op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
        let context = b.op("MatMul", &[&probs, &v], vec![]);
        let context = b.op("Transpose", &[&context], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
        let shape = b.ints(&[0, t as i64, h as i64]);
        let context = b.op("Reshape", &[&context, &shape], vec![]);
        let out = &layer.attention.output;
        let a = dense(b, &context, h, &out.dense, &format!("{at}.attention.output.dense"));
        let a = b.op("Add", &[&a, &hidden], vec![]);
        let x1 = layer_norm(b, &out.layer_norm, &format!("{at}.attention.output.LayerNorm"), &a);
        let inter = &layer.intermediate;
        let width = inter.dense.weight.val().dims()[0];
        let f = dense(b, &x1, h, &inter.dense, &format!("{at}.intermediate.dense"));
        let f = match inter.act {
            HiddenAct::Gelu => activation(b, ActivationFn::Plain(Activation::Gelu), &f)?,
            HiddenAct::GeluTanh => activation(b, ActivationFn::GeluTanh, &f)?,
            HiddenAct::Relu => activation(b, ActivationFn::Plain(Activation::Relu), &f)?,
            HiddenAct::Silu => {
                let s = b.op("Sigmoid", &[&f], vec![]);
                b.op("Mul", &[&f, &s], vec![])
            }
        };
        let o = &layer.output;
        let f = dense(b, &f, width, &o.dense, &format!("{at}.output.dense"));
        let f = b.op("Add", &[&f, &x1], vec![]);
        hidden = layer_norm(b, &o.layer_norm, &format!("{at}.output.LayerNorm"), &f);
    }

    let axis1 = b.ints(&[1]);
    let Some(pooling) = &head.pooling else {
        // graft runs the encoder on the columns up to the batch's last token and gives zeros after them.
        let any = b.op(
            "ReduceMax",
            &[&kept],
            vec![("axes", Attr::Ints(vec![0])), ("keepdims", Attr::Int(1))],
        );
        let axes = b.ints(&[2]);
        let any = b.op("Unsqueeze", &[&any, &axes], vec![]);
        let hidden = b.op("Mul", &[&hidden, &any], vec![]);
        return Ok(Val {
            name: hidden,
            shape: vec![t, h],
            int: false,
            mask: Some(padded),
        });
    };
    let axes2 = b.ints(&[2]);
    let m3 = b.op("Unsqueeze", &[&kept, &axes2], vec![]);
    let mut parts = vec![];
    for mode in &pooling.modes {
        parts.push(match mode {
            PoolingMode::Cls => {
                let zero = b.ints(&[0]);
                let first = b.op("Slice", &[&hidden, &zero, &axis1, &axis1], vec![]);
                b.op("Squeeze", &[&first, &axis1], vec![])
            }
            PoolingMode::Max => {
                let bias = b.op("Sub", &[&m3, &one], vec![]);
                let bias = b.op("Mul", &[&bias, &big], vec![]);
                let shifted = b.op("Add", &[&hidden, &bias], vec![]);
                b.op(
                    "ReduceMax",
                    &[&shifted],
                    vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))],
                )
            }
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                let masked = b.op("Mul", &[&hidden, &m3], vec![]);
                let sum = b.op("ReduceSum", &[&masked, &axis1], vec![("keepdims", Attr::Int(0))]);
                let count = b.op("ReduceSum", &[&kept, &axis1], vec![("keepdims", Attr::Int(1))]);
                let count = if *mode == PoolingMode::Mean {
                    let tiny = b.scalar(1e-9);
                    b.op("Max", &[&count, &tiny], vec![])
                } else {
                    b.op("Sqrt", &[&count], vec![])
                };
                b.op("Div", &[&sum, &count], vec![])
            }
        });
    }
    let mut pooled = if parts.len() == 1 {
        parts.remove(0)
    } else {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        b.op("Concat", &refs, vec![("axis", Attr::Int(1))])
    };
    if pooling.normalize {
        let squared = b.op("Mul", &[&pooled, &pooled], vec![]);
        let sum = b.op("ReduceSum", &[&squared, &axis1], vec![("keepdims", Attr::Int(1))]);
        let norm = b.op("Sqrt", &[&sum], vec![]);
        let tiny = b.scalar(1e-12);
        let norm = b.op("Max", &[&norm, &tiny], vec![]);
        pooled = b.op("Div", &[&pooled, &norm], vec![]);
    }
    let width: Shape = vec![pooling.modes.len() * h];
    Ok(Val {
        name: pooled,
        shape: width,
        int: false,
        mask: None,
    })
}
