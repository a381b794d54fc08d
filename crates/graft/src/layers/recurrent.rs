//! Recurrent layers — SimpleRNN, LSTM, GRU — stacked (`num_layers`) and optionally bidirectional, with PyTorch's
//! parameter names and layouts (`weight_ih_l0 [G·H, in]`, `weight_hh_l0 [G·H, H]`, `bias_ih_l0`, `bias_hh_l0`,
//! `..._reverse` for the backward direction; gates i,f,g,o for LSTM and r,z,n for GRU).
//!
//! Sequences are `[T, F]` (batch first). Padded steps (the mask from an embedding's `padding_idx`) leave the state
//! unchanged and output zeros, so a right-padded sequence gives the same final state as the unpadded one — in both
//! directions, as PyTorch's packed sequences do.

use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Bool;
use burn::tensor::activation::{sigmoid, tanh};
use serde::{Deserialize, Serialize};

use super::activation::Activation;
use super::conv::expect_rank;
use super::dense::{glorot, linear, linear_tensors, yes, zeros};
use super::dropout::dropout;
use super::init::Initializer;
use super::{Shape, shape_err};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentConfig {
    pub units: usize,
    /// SimpleRNN only (LSTM and GRU use their fixed gate functions).
    #[serde(default = "tanh_act")]
    pub activation: Activation,
    /// Output the whole sequence `[T, units]` instead of the last state `[units]`.
    #[serde(default)]
    pub return_sequences: bool,
    /// Also output the final states (h, and c for LSTM) as extra outputs `name:1`, `name:2`, ...
    #[serde(default)]
    pub return_state: bool,
    /// Stacked layers inside this one (PyTorch's `num_layers`).
    #[serde(default = "one")]
    pub num_layers: usize,
    /// Dropout on the outputs of each stacked layer except the last, in training.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "yes")]
    pub use_bias: bool,
    #[serde(default = "glorot")]
    pub kernel_initializer: Initializer,
    #[serde(default = "orthogonal")]
    pub recurrent_initializer: Initializer,
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    /// LSTM: start the forget-gate bias at 1 (Keras' default; Jozefowicz et al. 2015).
    #[serde(default = "yes")]
    pub unit_forget_bias: bool,
}

fn tanh_act() -> Activation {
    Activation::Tanh
}
fn one() -> usize {
    1
}
fn orthogonal() -> Initializer {
    Initializer::Orthogonal
}

impl RecurrentConfig {
    pub fn new(units: usize) -> Self {
        RecurrentConfig {
            units,
            activation: Activation::Tanh,
            return_sequences: false,
            return_state: false,
            num_layers: 1,
            dropout: 0.0,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            recurrent_initializer: Initializer::Orthogonal,
            bias_initializer: Initializer::Zeros,
            unit_forget_bias: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    #[default]
    Concat,
    Sum,
    Mul,
    Ave,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Simple(Activation),
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Simple(_) => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    pub(crate) fn states(self) -> usize {
        if self == Cell::Lstm { 2 } else { 1 }
    }
}

/// What a recurrent node outputs, for shape inference.
pub fn infer(
    config: &RecurrentConfig,
    cell: Cell,
    directions: usize,
    merge: MergeMode,
    inputs: &[Shape],
) -> Result<Vec<Shape>> {
    let Some(first) = inputs.first() else {
        return Err(shape_err("needs an input sequence"));
    };
    let [t, _] = expect_rank::<2>(first, "recurrent layers", "[steps, features]")?;
    if config.units == 0 || config.num_layers == 0 {
        return Err(shape_err("units and num_layers must be at least 1"));
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return Err(shape_err("dropout must be in [0, 1)"));
    }
    let states = cell.states() * directions;
    if inputs.len() > 1 {
        if config.num_layers != 1 {
            return Err(shape_err(
                "initial states can only be given to a single-layer recurrent node",
            ));
        }
        if inputs.len() != 1 + states {
            return Err(shape_err(format!(
                "takes the sequence plus {states} initial state(s), found {} inputs",
                inputs.len()
            )));
        }
        for s in &inputs[1..] {
            if s != &vec![config.units] {
                return Err(shape_err(format!(
                    "initial states must be [{}], found {s:?}",
                    config.units
                )));
            }
        }
    }
    let width = merged_width(config.units, directions, merge);
    let mut out = vec![if config.return_sequences {
        vec![t, width]
    } else {
        vec![width]
    }];
    if config.return_state {
        out.extend((0..states).map(|_| vec![config.units]));
    }
    Ok(out)
}

fn merged_width(units: usize, directions: usize, merge: MergeMode) -> usize {
    if directions == 2 && merge == MergeMode::Concat {
        2 * units
    } else {
        units
    }
}

/// A recurrent node's parameters: per stacked layer and direction, `[w_ih, w_hh]` and `[b_ih, b_hh]`.
#[derive(Debug, Clone)]
pub struct Recurrent {
    pub weights: Vec<Param<Tensor<2>>>,
    pub biases: Vec<Param<Tensor<1>>>,
    weight_names: Vec<String>,
    bias_names: Vec<String>,
    pub(crate) cell: Cell,
    pub(crate) units: usize,
    pub(crate) num_layers: usize,
    pub(crate) directions: usize,
    pub(crate) merge: MergeMode,
    pub(crate) return_sequences: bool,
    pub(crate) return_state: bool,
    dropout: f64,
}

pub fn init(
    config: &RecurrentConfig,
    cell: Cell,
    directions: usize,
    merge: MergeMode,
    input: &Shape,
    device: &Device,
) -> Recurrent {
    let (h, g) = (config.units, cell.gates());
    let mut r = Recurrent {
        weights: vec![],
        biases: vec![],
        weight_names: vec![],
        bias_names: vec![],
        cell,
        units: h,
        num_layers: config.num_layers,
        directions,
        merge,
        return_sequences: config.return_sequences,
        return_state: config.return_state,
        dropout: config.dropout,
    };
    for layer in 0..config.num_layers {
        let in_dim = if layer == 0 {
            input[1]
        } else {
            merged_width(h, directions, merge)
        };
        for d in 0..directions {
            let suffix = format!("_l{layer}{}", if d == 1 { "_reverse" } else { "" });
            r.weights.push(config.kernel_initializer.init([g * h, in_dim], device));
            r.weights.push(config.recurrent_initializer.init([g * h, h], device));
            r.weight_names.push(format!("weight_ih{suffix}"));
            r.weight_names.push(format!("weight_hh{suffix}"));
            if config.use_bias {
                let b_ih = if cell == Cell::Lstm && config.unit_forget_bias {
                    let values: Vec<f32> = (0..g * h)
                        .map(|i| if (h..2 * h).contains(&i) { 1.0 } else { 0.0 })
                        .collect();
                    Param::from_tensor(Tensor::<1>::from_floats(values.as_slice(), device))
                } else {
                    config.bias_initializer.init([g * h], device)
                };
                r.biases.push(b_ih);
                r.biases.push(config.bias_initializer.init([g * h], device));
                r.bias_names.push(format!("bias_ih{suffix}"));
                r.bias_names.push(format!("bias_hh{suffix}"));
            }
        }
    }
    r
}

impl Recurrent {
    /// Input `[B, T, F]` (+ padding mask `[B, T]`, + initial states `[B, H]`) → the outputs `infer` announced:
    /// the sequence `[B, T, H']` or last state `[B, H']`, then the final states.
    pub fn forward(
        &self,
        x: Tensor<3>,
        mask: Option<Tensor<2, Bool>>,
        initial: Vec<Tensor<2>>,
        training: bool,
    ) -> (Vec<Tensor<3>>, Vec<Tensor<2>>) {
        let keep = mask.map(|m| m.bool_not().float());
        let keep_steps = keep.as_ref().map(|k| split_steps(k.clone().unsqueeze_dim::<3>(2)));
        let mut input = x;
        let mut finals: Vec<Vec<Tensor<2>>> = vec![];
        let mut merged_last = None;
        for layer in 0..self.num_layers {
            if layer > 0 {
                input = dropout(input, self.dropout, training);
            }
            let last_layer = layer + 1 == self.num_layers;
            // Only the final states leave the last layer when it returns no sequence.
            let final_only = last_layer && !self.return_sequences;
            let mut seqs = vec![];
            finals.clear();
            for d in 0..self.directions {
                let idx = layer * self.directions + d;
                let init: Vec<Tensor<2>> = initial
                    .iter()
                    .skip(d * self.cell.states())
                    .take(self.cell.states())
                    .cloned()
                    .collect();
                let (seq, state) = match self.fused(idx, input.clone(), keep.as_ref(), d == 1, &init, final_only) {
                    Some(done) => done,
                    None => {
                        let (seq, state) = self.run(idx, input.clone(), keep_steps.as_ref(), d == 1, init);
                        (Some(seq), state)
                    }
                };
                seqs.extend(seq);
                finals.push(state);
            }
            if final_only {
                let hs: Vec<Tensor<2>> = finals.iter().map(|s| s[0].clone()).collect();
                merged_last = Some(self.merge_dirs(hs, 1));
            } else {
                input = self.merge_dirs(seqs, 2);
            }
        }
        let states: Vec<Tensor<2>> = if self.return_state {
            finals.into_iter().flatten().collect()
        } else {
            vec![]
        };
        match merged_last {
            Some(last) => (vec![], std::iter::once(last).chain(states).collect()),
            None => (vec![input], states),
        }
    }

    pub fn outputs_sequence(&self) -> bool {
        self.return_sequences
    }

    fn merge_dirs<const D: usize>(&self, mut xs: Vec<Tensor<D>>, axis: usize) -> Tensor<D> {
        if xs.len() == 1 {
            return xs.remove(0);
        }
        let (a, b) = (xs.remove(0), xs.remove(0));
        match self.merge {
            MergeMode::Concat => Tensor::cat(vec![a, b], axis),
            MergeMode::Sum => a + b,
            MergeMode::Mul => a * b,
            MergeMode::Ave => (a + b).div_scalar(2.0),
        }
    }

    /// An LSTM or GRU layer in one direction as one fused operation (see [`super::fused`]), where the backend has
    /// it; `None` to use the composed steps. Same results, same parameters. With `final_only` an LSTM returns no
    /// sequence (its caller uses only the final states, whose gradient then needs no `[B, T, 2H]` tensor).
    fn fused(
        &self,
        idx: usize,
        x: Tensor<3>,
        keep: Option<&Tensor<2>>,
        reverse: bool,
        initial: &[Tensor<2>],
        final_only: bool,
    ) -> Option<(Option<Tensor<3>>, Vec<Tensor<2>>)> {
        let [b, t, _] = x.dims();
        let device = x.device();
        if !matches!(self.cell, Cell::Lstm | Cell::Gru) || t == 0 || !graft_kernels::applies(&x) {
            return None;
        }
        let h = self.units;
        let (w_ih, w_hh) = (&self.weights[2 * idx], &self.weights[2 * idx + 1]);
        let b_ih = self.biases.get(2 * idx).map(|p| p.val());
        let b_hh = self.biases.get(2 * idx + 1).map(|p| p.val());
        // The recurrent biases that simply add to the input projection join its bias: one [4H] (or [3H]) add
        // instead of a pass over every step's projection, forward and backward.
        let input_bias = |extra: Option<Tensor<1>>| match (b_ih.clone(), extra) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let zeros = || Tensor::<2>::zeros([b, h], &device);
        let h0 = initial.first().cloned().unwrap_or_else(zeros);
        let keep_all = keep.cloned().unwrap_or_else(|| Tensor::<2>::ones([b, t], &device));
        let last = if reverse { 0 } else { t - 1 };
        let masked = |hs: Tensor<3>| match keep {
            Some(k) => hs * k.clone().unsqueeze_dim::<3>(2),
            None => hs,
        };
        if self.cell == Cell::Lstm {
            // The input projection runs inside the fused operation.
            let bias = input_bias(b_hh).unwrap_or_else(|| Tensor::<1>::zeros([4 * h], &device));
            let c0 = initial.get(1).cloned().unwrap_or_else(zeros);
            let (w_ih, w_hh) = (w_ih.val(), w_hh.val());
            let (seq, final_states) = if final_only {
                let last_states = graft_kernels::lstm_final_states(x, w_ih, bias, w_hh, h0, c0, keep_all, reverse);
                (None, last_states)
            } else {
                let states = graft_kernels::lstm_states(x, w_ih, bias, w_hh, h0, c0, keep_all, reverse);
                let seq = masked(states.clone().narrow(2, 0, h));
                (Some(seq), states.narrow(1, last, 1).squeeze_dim::<2>(1))
            };
            return Some((
                seq,
                vec![final_states.clone().narrow(1, 0, h), final_states.narrow(1, h, h)],
            ));
        }
        // GRU: b_hr and b_hz fold into the input projection; b_hn stays inside the reset gate's product.
        let (extra, b_hn) = match b_hh {
            Some(b_hh) => {
                let folded = Tensor::cat(
                    vec![b_hh.clone().narrow(0, 0, 2 * h), Tensor::<1>::zeros([h], &device)],
                    0,
                );
                (Some(folded), b_hh.narrow(0, 2 * h, h))
            }
            None => (None, Tensor::<1>::zeros([h], &device)),
        };
        let xp = linear_tensors(x, w_ih.val(), input_bias(extra));
        let states = graft_kernels::gru_states(xp, w_hh.val(), b_hn, h0, keep_all, reverse);
        let final_h = states.clone().narrow(1, last, 1).squeeze_dim::<2>(1);
        Some((Some(masked(states)), vec![final_h]))
    }

    /// One layer in one direction: `[B, T, F]` → (`[B, T, H]`, final states).
    fn run(
        &self,
        idx: usize,
        x: Tensor<3>,
        keep: Option<&Vec<Tensor<2>>>,
        reverse: bool,
        initial: Vec<Tensor<2>>,
    ) -> (Tensor<3>, Vec<Tensor<2>>) {
        let [b, t, _] = x.dims();
        let device = x.device();
        let w_ih = &self.weights[2 * idx];
        let w_hh = &self.weights[2 * idx + 1];
        let (b_ih, b_hh) = if self.biases.is_empty() {
            (None, None)
        } else {
            (Some(&self.biases[2 * idx]), Some(&self.biases[2 * idx + 1]))
        };
        // One matmul for the input projection of every step; per step only the recurrent one.
        let projected = split_steps(linear(x, w_ih, b_ih));
        let zeros = || Tensor::<2>::zeros([b, self.units], &device);
        let mut h = initial.first().cloned().unwrap_or_else(zeros);
        let mut c = initial.get(1).cloned().unwrap_or_else(zeros);
        let mut outputs: Vec<Tensor<2>> = Vec::with_capacity(t);
        let order: Vec<usize> = if reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        };
        for &step in &order {
            let xp = projected[step].clone();
            let hp = linear(h.clone(), w_hh, b_hh);
            let (h_new, c_new) = self.cell_step(xp, hp, h.clone(), c.clone());
            match keep {
                Some(k) => {
                    let k = k[step].clone();
                    h = h.clone() + (h_new.clone() - h) * k.clone();
                    if let Some(c_new) = c_new {
                        c = c.clone() + (c_new - c) * k.clone();
                    }
                    outputs.push(h_new * k);
                }
                None => {
                    h = h_new.clone();
                    if let Some(c_new) = c_new {
                        c = c_new;
                    }
                    outputs.push(h_new);
                }
            }
        }
        if reverse {
            outputs.reverse();
        }
        let seq = Tensor::stack::<3>(outputs, 1);
        let states = if self.cell == Cell::Lstm { vec![h, c] } else { vec![h] };
        (seq, states)
    }

    fn cell_step(
        &self,
        xp: Tensor<2>,
        hp: Tensor<2>,
        h_prev: Tensor<2>,
        c: Tensor<2>,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        let h = self.units;
        match self.cell {
            Cell::Simple(act) => (act.apply(xp + hp), None),
            Cell::Lstm => {
                let gates = xp + hp;
                let i = sigmoid(gates.clone().narrow(1, 0, h));
                let f = sigmoid(gates.clone().narrow(1, h, h));
                let g = tanh(gates.clone().narrow(1, 2 * h, h));
                let o = sigmoid(gates.narrow(1, 3 * h, h));
                let c_new = f * c + i * g;
                (o * tanh(c_new.clone()), Some(c_new))
            }
            Cell::Gru => {
                let r = sigmoid(xp.clone().narrow(1, 0, h) + hp.clone().narrow(1, 0, h));
                let z = sigmoid(xp.clone().narrow(1, h, h) + hp.clone().narrow(1, h, h));
                let n = tanh(xp.narrow(1, 2 * h, h) + r * hp.narrow(1, 2 * h, h));
                // h' = (1 - z)·n + z·h
                (n.clone() + z * (h_prev - n), None)
            }
        }
    }
}

/// Splits `[B, T, X]` into T tensors `[B, X]`. Slicing in two levels (blocks of √T steps, then steps) keeps the
/// backward pass linear in T: autodiff's slice backward materializes a zero tensor the size of the sliced input.
fn split_steps(x: Tensor<3>) -> Vec<Tensor<2>> {
    let t = x.dims()[1];
    let block = (t as f64).sqrt().ceil().max(1.0) as usize;
    let mut steps = Vec::with_capacity(t);
    let mut start = 0;
    while start < t {
        let len = block.min(t - start);
        let chunk = x.clone().narrow(1, start, len);
        for j in 0..len {
            steps.push(chunk.clone().narrow(1, j, 1).squeeze_dim::<2>(1));
        }
        start += len;
    }
    steps
}

/// Parameters are entered under their PyTorch names (`weight_ih_l0`, ...), so stores, optimizers and parameter
/// groups see `lstm.weight_ih_l0` rather than a vector index.
impl Module for Recurrent {
    fn collect_devices(&self, mut devices: Devices) -> Devices {
        for p in &self.weights {
            devices = p.collect_devices(devices);
        }
        for p in &self.biases {
            devices = p.collect_devices(devices);
        }
        devices
    }

    fn fork(mut self, device: &Device) -> Self {
        self.weights = self.weights.into_iter().map(|p| p.fork(device)).collect();
        self.biases = self.biases.into_iter().map(|p| p.fork(device)).collect();
        self
    }

    fn to_device(mut self, device: &Device) -> Self {
        self.weights = self.weights.into_iter().map(|p| p.to_device(device)).collect();
        self.biases = self.biases.into_iter().map(|p| p.to_device(device)).collect();
        self
    }

    fn train(mut self) -> Self {
        self.weights = self.weights.into_iter().map(|p| p.train()).collect();
        self.biases = self.biases.into_iter().map(|p| p.train()).collect();
        self
    }

    fn valid(&self) -> Self {
        let mut copy = self.clone();
        copy.weights = self.weights.iter().map(|p| p.valid()).collect();
        copy.biases = self.biases.iter().map(|p| p.valid()).collect();
        copy
    }

    fn materialize(mut self) -> Self {
        self.weights = self.weights.into_iter().map(|p| p.materialize()).collect();
        self.biases = self.biases.into_iter().map(|p| p.materialize()).collect();
        self
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        for (p, name) in self.weights.iter().zip(&self.weight_names) {
            visitor.enter_module(name, "Struct:Recurrent");
            p.visit(visitor);
            visitor.exit_module(name, "Struct:Recurrent");
        }
        for (p, name) in self.biases.iter().zip(&self.bias_names) {
            visitor.enter_module(name, "Struct:Recurrent");
            p.visit(visitor);
            visitor.exit_module(name, "Struct:Recurrent");
        }
    }

    fn map<M: ModuleMapper>(mut self, mapper: &mut M) -> Self {
        let names = self.weight_names.clone();
        self.weights = self
            .weights
            .into_iter()
            .zip(&names)
            .map(|(p, name)| {
                mapper.enter_module(name, "Struct:Recurrent");
                let p = Module::map(p, mapper);
                mapper.exit_module(name, "Struct:Recurrent");
                p
            })
            .collect();
        let names = self.bias_names.clone();
        self.biases = self
            .biases
            .into_iter()
            .zip(&names)
            .map(|(p, name)| {
                mapper.enter_module(name, "Struct:Recurrent");
                let p = Module::map(p, mapper);
                mapper.exit_module(name, "Struct:Recurrent");
                p
            })
            .collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The fused LSTM pass and the composed steps give the same outputs, final states and gradients (inputs,
    /// weights, biases, initial states), with padding, in both directions; 5 units take the gemm step, 16 the
    /// AVX-512 step (where the CPU has it).
    #[test]
    fn fused_lstm_and_gru_match_the_composed_steps() {
        for units in [5, 16] {
            for cell in [Cell::Lstm, Cell::Gru] {
                fused_matches_composed(cell, units);
            }
        }
    }

    fn fused_matches_composed(cell: Cell, units: usize) {
        let device = Device::default().autodiff();
        let cfg = RecurrentConfig::new(units);
        let layer = init(&cfg, cell, 2, MergeMode::Concat, &vec![6, 3], &device);
        let x = Tensor::<3>::random([2, 6, 3], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
        let h0 = Tensor::<2>::random([2, units], Distribution::Uniform(-0.5, 0.5), &device).require_grad();
        let c0 = Tensor::<2>::random([2, units], Distribution::Uniform(-0.5, 0.5), &device).require_grad();
        let keep = Tensor::<2>::from_floats(
            [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]],
            &device,
        );
        let weights = Tensor::<3>::random([2, 6, units], Distribution::Uniform(-1.0, 1.0), &device);
        for reverse in [false, true] {
            let idx = usize::from(reverse);
            let initial = if cell == Cell::Lstm {
                vec![h0.clone(), c0.clone()]
            } else {
                vec![h0.clone()]
            };
            let loss = |(seq, states): (Tensor<3>, Vec<Tensor<2>>)| {
                let c_term = states
                    .get(1)
                    .map_or(Tensor::<1>::zeros([1], &seq.device()), |c| c.clone().sum() * 1.3);
                (seq * weights.clone()).sum() + states[0].clone().sum() * 0.7 + c_term
            };
            let (seq_f, states_f) = layer
                .fused(idx, x.clone(), Some(&keep), reverse, &initial, false)
                .expect("flex runs the fused pass");
            let seq_f = seq_f.expect("a sequence when asked for one");
            let steps = split_steps(keep.clone().unsqueeze_dim::<3>(2));
            let (seq_c, states_c) = layer.run(idx, x.clone(), Some(&steps), reverse, initial.clone());
            let close = |a: Tensor<3>, b: Tensor<3>, what: &str| {
                let (a, b) = (
                    a.into_data().try_to_vec::<f32>().unwrap(),
                    b.into_data().try_to_vec::<f32>().unwrap(),
                );
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                        "{what}[{i}] (reverse {reverse}): {p} vs {q}"
                    );
                }
            };
            close(seq_f.clone(), seq_c.clone(), "sequence");
            assert_eq!(states_f.len(), states_c.len());
            for (f, c) in states_f.iter().zip(&states_c) {
                close(f.clone().unsqueeze::<3>(), c.clone().unsqueeze::<3>(), "final state");
            }
            let g_f = loss((seq_f, states_f)).backward();
            let g_c = loss((seq_c, states_c)).backward();
            let grad3 = |t: &Tensor<3>, g| t.grad(g).unwrap().unsqueeze::<3>();
            close(grad3(&x, &g_f), grad3(&x, &g_c), "d x");
            close(
                h0.grad(&g_f).unwrap().unsqueeze(),
                h0.grad(&g_c).unwrap().unsqueeze(),
                "d h0",
            );
            if cell == Cell::Lstm {
                close(
                    c0.grad(&g_f).unwrap().unsqueeze(),
                    c0.grad(&g_c).unwrap().unsqueeze(),
                    "d c0",
                );
            }
            for p in [&layer.weights[2 * idx], &layer.weights[2 * idx + 1]] {
                close(
                    p.val().grad(&g_f).unwrap().unsqueeze(),
                    p.val().grad(&g_c).unwrap().unsqueeze(),
                    "d weight",
                );
            }
            for p in [&layer.biases[2 * idx], &layer.biases[2 * idx + 1]] {
                close(
                    p.val().grad(&g_f).unwrap().unsqueeze(),
                    p.val().grad(&g_c).unwrap().unsqueeze(),
                    "d bias",
                );
            }
            // Only the final states asked for (the LSTM's own forward and backward for that case): the same states
            // and the same gradients as the composed steps give for a loss on the final states alone.
            let (seq_o, states_o) = layer
                .fused(idx, x.clone(), Some(&keep), reverse, &initial, true)
                .expect("flex runs the fused pass");
            assert_eq!(
                seq_o.is_none(),
                cell == Cell::Lstm,
                "an LSTM returns no sequence when not asked for one"
            );
            let (_, states_c) = layer.run(idx, x.clone(), Some(&steps), reverse, initial.clone());
            let final_loss = |states: &[Tensor<2>]| {
                let c_term = states
                    .get(1)
                    .map_or(Tensor::<1>::zeros([1], &device), |c| (c.clone() * 1.3).sum());
                (states[0].clone() * weights.clone().narrow(1, 0, 1).squeeze_dim::<2>(1)).sum() + c_term
            };
            for (f, c) in states_o.iter().zip(&states_c) {
                close(
                    f.clone().unsqueeze::<3>(),
                    c.clone().unsqueeze::<3>(),
                    "final state (final only)",
                );
            }
            let g_o = final_loss(&states_o).backward();
            let g_c = final_loss(&states_c).backward();
            close(grad3(&x, &g_o), grad3(&x, &g_c), "d x (final only)");
            close(
                h0.grad(&g_o).unwrap().unsqueeze(),
                h0.grad(&g_c).unwrap().unsqueeze(),
                "d h0 (final only)",
            );
            for p in [&layer.weights[2 * idx], &layer.weights[2 * idx + 1]] {
                close(
                    p.val().grad(&g_o).unwrap().unsqueeze(),
                    p.val().grad(&g_c).unwrap().unsqueeze(),
                    "d weight (final only)",
                );
            }
        }
    }
}
