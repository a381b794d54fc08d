//! `simple_rnn`, `lstm`, `gru` and their bidirectional forms as ONNX's `RNN`, `LSTM` and `GRU` operators, one per
//! stacked layer. PyTorch (and graft) order the gates i, f, g, o (LSTM) and r, z, n (GRU); ONNX orders them i, o,
//! f, c and z, r, h, so the weight blocks are reordered on the way out; graft's GRU is PyTorch's, which ONNX calls
//! `linear_before_reset = 1`. A padding mask becomes `sequence_lens`: graft skips padded steps (the state carried
//! through, the output zero), which is what ONNX does past a sequence's length, for sequences padded at the end
//! as graft pads them.

use super::Val;
use super::builder::{Attr, GraphBuilder};
use super::layers::values;
use super::proto::data_type;
use crate::error::{Error, Result};
use crate::layers::Shape;
use crate::layers::activation::Activation;
use crate::layers::recurrent::{Cell, MergeMode, Recurrent};

pub(crate) fn lower(
    b: &mut GraphBuilder,
    r: &Recurrent,
    owner: &str,
    x: Val,
    initial: Vec<Val>,
    outputs: &[Shape],
) -> Result<Vec<Val>> {
    let h = r.units;
    let dirs = r.directions;
    let (op, order): (&str, &[usize]) = match r.cell {
        Cell::Lstm => ("LSTM", &[0, 3, 1, 2]),
        Cell::Gru => ("GRU", &[1, 0, 2]),
        Cell::Simple(_) => ("RNN", &[0]),
    };
    let mut attrs = vec![
        ("hidden_size", Attr::Int(h as i64)),
        (
            "direction",
            Attr::Str(if dirs == 2 { "bidirectional" } else { "forward" }.into()),
        ),
    ];
    match r.cell {
        Cell::Gru => attrs.push(("linear_before_reset", Attr::Int(1))),
        Cell::Simple(act) => {
            let name = match act {
                Activation::Tanh => "Tanh",
                Activation::Relu => "Relu",
                Activation::Sigmoid => "Sigmoid",
                other => {
                    return Err(Error::new(format!(
                        "ONNX's RNN operator has no {other:?} activation; use tanh, relu or sigmoid for an exported \
                         simple_rnn"
                    )));
                }
            };
            attrs.push(("activations", Attr::Strs(vec![name.into(); dirs])));
        }
        Cell::Lstm => {}
    }
    // Steps that are not padding, per sequence.
    let seq_lens = match &x.mask {
        Some(mask) => {
            let kept = b.op("Not", &[mask], vec![]);
            let kept = b.op("Cast", &[&kept], vec![("to", Attr::Int(data_type::FLOAT as i64))]);
            let axis = b.ints(&[1]);
            let count = b.op("ReduceSum", &[&kept, &axis], vec![("keepdims", Attr::Int(0))]);
            b.op("Cast", &[&count], vec![("to", Attr::Int(data_type::INT32 as i64))])
        }
        None => String::new(),
    };
    let states = r.cell.states();
    let stack = |b: &mut GraphBuilder, which: usize| -> String {
        if initial.is_empty() {
            return String::new();
        }
        let axes = b.ints(&[0]);
        let per_dir: Vec<String> = (0..dirs)
            .map(|d| b.op("Unsqueeze", &[&initial[d * states + which].name, &axes], vec![]))
            .collect();
        if per_dir.len() == 1 {
            return per_dir[0].clone();
        }
        let refs: Vec<&str> = per_dir.iter().map(String::as_str).collect();
        b.op("Concat", &refs, vec![("axis", Attr::Int(0))])
    };
    let initial_h = stack(b, 0);
    let initial_c = if r.cell == Cell::Lstm {
        stack(b, 1)
    } else {
        String::new()
    };
    // Time-major, as ONNX's recurrent operators take it: [steps, batch, features].
    let mut input = b.op("Transpose", &[&x.name], vec![("perm", Attr::Ints(vec![1, 0, 2]))]);
    let n_out = if r.cell == Cell::Lstm { 3 } else { 2 };
    let mut last: Vec<String> = vec![];
    for layer in 0..r.num_layers {
        let mut w = vec![];
        let mut rw = vec![];
        let mut bias = vec![];
        let mut in_dim = 0;
        for d in 0..dirs {
            let idx = layer * dirs + d;
            let w_ih = r.weights[2 * idx].val();
            in_dim = w_ih.dims()[1];
            w.extend(reorder(&values(&w_ih), order, h * in_dim));
            rw.extend(reorder(&values(&r.weights[2 * idx + 1].val()), order, h * h));
            if !r.biases.is_empty() {
                bias.extend(reorder(&values(&r.biases[2 * idx].val()), order, h));
                bias.extend(reorder(&values(&r.biases[2 * idx + 1].val()), order, h));
            }
        }
        let g = order.len();
        let w = b.weight(&format!("{owner}.W_l{layer}"), &[dirs, g * h, in_dim], &w);
        let rw = b.weight(&format!("{owner}.R_l{layer}"), &[dirs, g * h, h], &rw);
        let bias = if bias.is_empty() {
            String::new()
        } else {
            b.weight(&format!("{owner}.B_l{layer}"), &[dirs, 2 * g * h], &bias)
        };
        let (ih, ic) = if layer == 0 {
            (initial_h.as_str(), initial_c.as_str())
        } else {
            ("", "")
        };
        let mut args = vec![
            input.as_str(),
            w.as_str(),
            rw.as_str(),
            bias.as_str(),
            seq_lens.as_str(),
            ih,
        ];
        if r.cell == Cell::Lstm {
            args.push(ic);
        }
        // Trailing omitted inputs are left off.
        while args.last() == Some(&"") {
            args.pop();
        }
        let outs = b.op_n(op, &args, n_out, attrs.clone());
        input = merge_steps(b, &outs[0], dirs, r.merge);
        last = outs;
    }
    let first = if r.return_sequences {
        let y = b.op("Transpose", &[&input], vec![("perm", Attr::Ints(vec![1, 0, 2]))]);
        Val {
            name: y,
            shape: outputs[0].clone(),
            int: false,
            mask: x.mask.clone(),
        }
    } else {
        Val {
            name: merge_final(b, &last[1], dirs, r.merge),
            shape: outputs[0].clone(),
            int: false,
            mask: None,
        }
    };
    let mut result = vec![first];
    if r.return_state {
        for d in 0..dirs {
            for which in 0..states {
                let index = b.ints(&[d as i64]);
                let one = b.op("Gather", &[&last[1 + which], &index], vec![("axis", Attr::Int(0))]);
                let axes = b.ints(&[0]);
                let s = b.op("Squeeze", &[&one, &axes], vec![]);
                result.push(Val {
                    name: s,
                    shape: vec![h],
                    int: false,
                    mask: None,
                });
            }
        }
    }
    Ok(result)
}

/// Gate blocks (each `block` values) in ONNX's order.
fn reorder(values: &[f32], order: &[usize], block: usize) -> Vec<f32> {
    order
        .iter()
        .flat_map(|&g| values[g * block..(g + 1) * block].iter().copied())
        .collect()
}

/// `Y` `[steps, directions, batch, units]` → `[steps, batch, width]`, the directions merged as graft merges them.
fn merge_steps(b: &mut GraphBuilder, y: &str, dirs: usize, merge: MergeMode) -> String {
    merge_axis(b, y, 1, dirs, merge, &[0, 2, 1, 3], &[0, 0, -1])
}

/// `Y_h` `[directions, batch, units]` → `[batch, width]`.
fn merge_final(b: &mut GraphBuilder, y_h: &str, dirs: usize, merge: MergeMode) -> String {
    merge_axis(b, y_h, 0, dirs, merge, &[1, 0, 2], &[0, -1])
}

fn merge_axis(
    b: &mut GraphBuilder,
    y: &str,
    axis: i64,
    dirs: usize,
    merge: MergeMode,
    concat_perm: &[i64],
    concat_shape: &[i64],
) -> String {
    let reduce = vec![("axes", Attr::Ints(vec![axis])), ("keepdims", Attr::Int(0))];
    if dirs == 1 {
        let axes = b.ints(&[axis]);
        return b.op("Squeeze", &[y, &axes], vec![]);
    }
    match merge {
        MergeMode::Concat => {
            // Directions next to the units, then folded into them: forward units first, as graft concatenates.
            let t = b.op("Transpose", &[y], vec![("perm", Attr::Ints(concat_perm.to_vec()))]);
            let shape = b.ints(concat_shape);
            b.op("Reshape", &[&t, &shape], vec![])
        }
        MergeMode::Sum => {
            let axes = b.ints(&[axis]);
            b.op("ReduceSum", &[y, &axes], vec![("keepdims", Attr::Int(0))])
        }
        MergeMode::Mul => b.op("ReduceProd", &[y], reduce),
        MergeMode::Ave => b.op("ReduceMean", &[y], reduce),
    }
}
