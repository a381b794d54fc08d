//! Unit tests for every layer kind: output shapes, PyTorch parameter names and counts, spec round-trips through
//! TOML, short training runs, hand-computed numerics (direct loops in f64 as the reference), padding masks and
//! shape errors. Sizes are small so the whole file runs in a few seconds on a CPU.

use std::collections::{BTreeMap, BTreeSet};

use burn::module::Param;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Distribution, TensorData};

use super::activation::{Activation, EluConfig, GeluConfig, LeakyReluConfig, NoOptions, SoftmaxConfig};
use super::attention::{MultiHeadAttentionConfig, TransformerEncoderConfig};
use super::conv::{ConvConfig, Dims, Padding};
use super::dense::DenseConfig;
use super::dropout::DropoutConfig;
use super::embedding::{EmbeddingConfig, PositionalEmbeddingConfig};
use super::init::Initializer;
use super::merge::ConcatenateConfig;
use super::norm::{BatchNorm, BatchNormConfig, GroupNormConfig, InstanceNormConfig, LayerNormConfig};
use super::pool::{AvgPoolConfig, PoolConfig};
use super::recurrent::{MergeMode, RecurrentConfig};
use super::reshape::{PermuteConfig, ReshapeConfig};
use super::{BidirectionalConfig, Ctx, LAYER_KINDS, Layer, LayerSpec, TimeDistributedConfig};
use crate::layers::value::{Data, Value};
use crate::model::graph::Graph;
use crate::model::params::{ParamMapper, ParamPath, ParamVisitor, map_params, visit_params};
use crate::model::spec::ModelSpec;

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn device() -> Device {
    let device = Device::default();
    device.seed(1);
    device
}

fn build(spec: &ModelSpec, device: &Device) -> Graph {
    Graph::build(spec, device).unwrap_or_else(|e| panic!("build failed: {e}"))
}

/// `input → layer` as a sequential model, the node named `name`.
fn one_layer(input: &[usize], name: &str, layer: LayerSpec) -> ModelSpec {
    ModelSpec::sequential(input.to_vec()).add_named(name, layer)
}

/// A graph model with inputs `a` and `b` merged by `layer` in node `m`.
fn two_inputs(layer: LayerSpec, a: &[usize], b: &[usize]) -> ModelSpec {
    ModelSpec::graph()
        .input("a", a.to_vec())
        .input("b", b.to_vec())
        .node("m", layer, &["a", "b"])
        .output("m")
}

fn run(graph: &Graph, inputs: Vec<Data>) -> Vec<Value> {
    graph
        .forward(inputs, false, false)
        .unwrap_or_else(|e| panic!("forward failed: {e}"))
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

fn data_values(d: &Data) -> Vec<f32> {
    match d.clone() {
        Data::D2(t) => values(t),
        Data::D3(t) => values(t),
        Data::D4(t) => values(t),
    }
}

fn mask_values(v: &Value) -> Option<Vec<f32>> {
    v.mask.clone().map(|m| values(m.float()))
}

/// A batch `[dims...]` from explicit values.
fn data(dims: &[usize], v: Vec<f32>, device: &Device) -> Data {
    assert_eq!(dims.iter().product::<usize>(), v.len());
    let flat = Tensor::<2>::from_data(
        TensorData::new(v, [dims[0], dims[1..].iter().product::<usize>()]),
        device,
    );
    Data::D2(flat).reshape(dims).unwrap()
}

/// A random normal batch `[batch] + shape`.
fn random_batch(batch: usize, shape: &[usize], device: &Device) -> Data {
    let dims: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
    let flat = Tensor::<2>::random(
        [batch, shape.iter().product::<usize>()],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    Data::D2(flat).reshape(&dims).unwrap()
}

/// Token ids `[B, T]` (floats holding whole numbers).
fn ids(rows: &[&[usize]], device: &Device) -> Data {
    let t = rows[0].len();
    let v: Vec<f32> = rows.iter().flat_map(|r| r.iter().map(|&i| i as f32)).collect();
    data(&[rows.len(), t], v, device)
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: got {g}, expected {w}\n got: {got:?}\nwant: {want:?}"
        );
    }
}

/// An element-wise combination of two values.
type BinOp = fn(f32, f32) -> f32;

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Builds `input → layer`, checks `output_shapes()` and the dims of the output of a random batch of 2.
fn check_shape(input: &[usize], layer: LayerSpec, expected: &[usize]) -> Graph {
    let device = device();
    let graph = build(&one_layer(input, "l", layer.clone()), &device);
    assert_eq!(graph.output_shapes(), vec![expected.to_vec()], "{layer:?}");
    let out = run(&graph, vec![random_batch(2, input, &device)]);
    assert_eq!(out[0].data.dims(), [&[2], expected].concat(), "{layer:?}");
    graph
}

/// Parameter paths (as a PyTorch state dict names them), shapes, values and whether they take gradients.
struct Collect(Vec<(String, Vec<usize>, Vec<f32>, bool)>);

impl ParamVisitor for Collect {
    fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
        let t = param.val();
        let require_grad = t.is_require_grad();
        self.0.push((path.name(), t.dims().to_vec(), values(t), require_grad));
    }
}

fn collect(graph: &Graph) -> Vec<(String, Vec<usize>, Vec<f32>, bool)> {
    let mut c = Collect(vec![]);
    visit_params(graph, &mut c);
    c.0
}

fn param_shapes(graph: &Graph) -> BTreeMap<String, Vec<usize>> {
    let found = collect(graph);
    let map: BTreeMap<String, Vec<usize>> = found.iter().map(|(n, s, ..)| (n.clone(), s.clone())).collect();
    assert_eq!(
        map.len(),
        found.len(),
        "duplicate parameter paths: {:?}",
        found.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    map
}

fn assert_params(graph: &Graph, expected: &[(&str, &[usize])]) {
    let want: BTreeMap<String, Vec<usize>> = expected.iter().map(|(n, s)| (n.to_string(), s.to_vec())).collect();
    assert_eq!(param_shapes(graph), want);
}

/// Trainable parameter count (running statistics are buffers, as in PyTorch).
fn count(graph: &Graph) -> usize {
    param_shapes(graph)
        .iter()
        .filter(|(n, _)| !n.contains("running_"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

fn param(graph: &Graph, name: &str) -> Vec<f32> {
    collect(graph)
        .into_iter()
        .find(|p| p.0 == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .2
}

/// Replaces parameters by path: with values from `from`, or with random N(0, 0.5²) values.
struct Assign {
    from: Option<BTreeMap<String, Vec<f32>>>,
}

impl ParamMapper for Assign {
    fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = path.name();
        let from = self
            .from
            .as_ref()
            .map(|m| m.get(&key).unwrap_or_else(|| panic!("no parameter {key}")).clone());
        param.map(|t| {
            let (dims, device) = (t.dims(), t.device());
            match from {
                Some(v) => Tensor::from_data(TensorData::new(v, dims), &device),
                None => Tensor::random(dims, Distribution::Normal(0.0, 0.5), &device),
            }
        })
    }
}

/// Random values for every parameter (so biases are not all zero).
fn randomize(graph: Graph) -> Graph {
    map_params(graph, &mut Assign { from: None })
}

/// `to` with the parameter values of `from` (same paths).
fn copy_params(from: &Graph, to: Graph) -> Graph {
    let map = collect(from).into_iter().map(|(n, _, v, _)| (n, v)).collect();
    map_params(to, &mut Assign { from: Some(map) })
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

/// Each group of flat indices has mean ≈ 0 and (biased) variance ≈ 1.
fn assert_normalized(v: &[f32], groups: &[Vec<usize>], what: &str) {
    for g in groups {
        let xs: Vec<f64> = g.iter().map(|&i| v[i] as f64).collect();
        let (mean, var) = mean_var(&xs);
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 2e-3,
            "{what}: group {g:?} has mean {mean}, var {var}"
        );
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let (s, x) = (x.signum(), x.abs());
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        ((((1.061_405_429 * t - 1.453_152_027) * t + 1.421_413_741) * t - 0.284_496_736) * t + 0.254_829_592) * t;
    s * (1.0 - poly * (-x * x).exp())
}

// ---------------------------------------------------------------------------------------------------------------
// Direct (loop) references
// ---------------------------------------------------------------------------------------------------------------

/// Geometry of a direct convolution or pooling over `[B, C, H, W]`.
struct Geom {
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Padding before each axis (the end padding follows from the output size).
    pad: [usize; 2],
    out: [usize; 2],
}

/// PyTorch's cross-correlation: `x [B, C, H, W]`, `w [F, C/groups, kh, kw]`.
fn direct_conv2d(
    x: &[f32],
    [b, c, h, w]: [usize; 4],
    wt: &[f32],
    bias: &[f32],
    filters: usize,
    groups: usize,
    g: &Geom,
) -> Vec<f32> {
    let (cg, fg) = (c / groups, filters / groups);
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.out;
    let mut out = vec![0f32; b * filters * oh * ow];
    for n in 0..b {
        for o in 0..filters {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bias.get(o).copied().unwrap_or(0.0) as f64;
                    for ci in 0..cg {
                        let cin = (o / fg) * cg + ci;
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let y = (i * g.stride[0] + ki * g.dilation[0]) as isize - g.pad[0] as isize;
                                let xx = (j * g.stride[1] + kj * g.dilation[1]) as isize - g.pad[1] as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                    continue;
                                }
                                let wv = wt[((o * cg + ci) * kh + ki) * kw + kj] as f64;
                                acc += wv * x[((n * c + cin) * h + y as usize) * w + xx as usize] as f64;
                            }
                        }
                    }
                    out[((n * filters + o) * oh + i) * ow + j] = acc as f32;
                }
            }
        }
    }
    out
}

/// Max or average (over the positions inside the input, as Keras) of each window of `x [B, C, H, W]`.
/// `include_pad`: an average divides by the whole window, padding included, rather than by its input positions.
fn direct_pool2d(x: &[f32], [b, c, h, w]: [usize; 4], g: &Geom, max: bool, include_pad: bool) -> Vec<f32> {
    let [oh, ow] = g.out;
    let mut out = vec![0f32; b * c * oh * ow];
    for n in 0..b {
        for ch in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut window = vec![];
                    for ki in 0..g.kernel[0] {
                        for kj in 0..g.kernel[1] {
                            let y = (i * g.stride[0] + ki) as isize - g.pad[0] as isize;
                            let xx = (j * g.stride[1] + kj) as isize - g.pad[1] as isize;
                            if y >= 0 && xx >= 0 && y < h as isize && xx < w as isize {
                                window.push(x[((n * c + ch) * h + y as usize) * w + xx as usize] as f64);
                            }
                        }
                    }
                    let v = if max {
                        window.iter().copied().fold(f64::MIN, f64::max)
                    } else if include_pad {
                        window.iter().sum::<f64>() / (g.kernel[0] * g.kernel[1]) as f64
                    } else {
                        window.iter().sum::<f64>() / window.len() as f64
                    };
                    out[((n * c + ch) * oh + i) * ow + j] = v as f32;
                }
            }
        }
    }
    out
}

/// `[B, L, C]` → `[B, C, 1, L]` (to run 1D references through the 2D ones).
fn steps_to_cf(x: &[f32], b: usize, l: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for n in 0..b {
        for t in 0..l {
            for ch in 0..c {
                out[(n * c + ch) * l + t] = x[(n * l + t) * c + ch];
            }
        }
    }
    out
}

/// `[B, C, 1, L]` → `[B, L, C]`.
fn cf_to_steps(x: &[f32], b: usize, l: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for n in 0..b {
        for t in 0..l {
            for ch in 0..c {
                out[(n * l + t) * c + ch] = x[(n * c + ch) * l + t];
            }
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum CellKind {
    Simple,
    Lstm,
    Gru,
}

impl CellKind {
    fn gates(self) -> usize {
        match self {
            CellKind::Simple => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
    fn spec(self, c: RecurrentConfig) -> LayerSpec {
        match self {
            CellKind::Simple => LayerSpec::SimpleRnn(c),
            CellKind::Lstm => LayerSpec::Lstm(c),
            CellKind::Gru => LayerSpec::Gru(c),
        }
    }
}

/// One direction of `torch.nn.RNN` (tanh) / `LSTM` / `GRU` over one sample `x [T, F]` with the parameters
/// `[weight_ih, weight_hh, bias_ih, bias_hh]`: the output of every step (in input order) and the final (h, c).
fn direct_rnn(
    cell: CellKind,
    x: &[f32],
    f: usize,
    h: usize,
    p: &[Vec<f32>; 4],
    reverse: bool,
) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    direct_rnn_from(cell, x, f, p, reverse, vec![0.0; h], vec![0.0; h])
}

/// [`direct_rnn`] from the initial states `h0` (and `c0`).
fn direct_rnn_from(
    cell: CellKind,
    x: &[f32],
    f: usize,
    p: &[Vec<f32>; 4],
    reverse: bool,
    h0: Vec<f64>,
    c0: Vec<f64>,
) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let (t, h) = (x.len() / f, h0.len());
    let g = cell.gates();
    let (mut hs, mut cs) = (h0, c0);
    let mut outputs = vec![vec![]; t];
    let order: Vec<usize> = if reverse {
        (0..t).rev().collect()
    } else {
        (0..t).collect()
    };
    for step in order {
        let xp: Vec<f64> = (0..g * h)
            .map(|j| {
                p[2][j] as f64
                    + (0..f)
                        .map(|k| p[0][j * f + k] as f64 * x[step * f + k] as f64)
                        .sum::<f64>()
            })
            .collect();
        let hp: Vec<f64> = (0..g * h)
            .map(|j| p[3][j] as f64 + (0..h).map(|k| p[1][j * h + k] as f64 * hs[k]).sum::<f64>())
            .collect();
        match cell {
            CellKind::Simple => hs = (0..h).map(|j| (xp[j] + hp[j]).tanh()).collect(),
            CellKind::Lstm => {
                for j in 0..h {
                    let i = sigmoid(xp[j] + hp[j]);
                    let fg = sigmoid(xp[h + j] + hp[h + j]);
                    let gg = (xp[2 * h + j] + hp[2 * h + j]).tanh();
                    let o = sigmoid(xp[3 * h + j] + hp[3 * h + j]);
                    cs[j] = fg * cs[j] + i * gg;
                    hs[j] = o * cs[j].tanh();
                }
            }
            CellKind::Gru => {
                for j in 0..h {
                    let r = sigmoid(xp[j] + hp[j]);
                    let z = sigmoid(xp[h + j] + hp[h + j]);
                    let n = (xp[2 * h + j] + r * hp[2 * h + j]).tanh();
                    hs[j] = (1.0 - z) * n + z * hs[j];
                }
            }
        }
        outputs[step] = hs.clone();
    }
    (outputs, hs, cs)
}

/// `torch.nn.MultiheadAttention` (batch first) on one sample: `q [Tq, E]`, `kv [Tk, E]`, key padding `pad [Tk]`.
#[allow(clippy::too_many_arguments)]
fn direct_mha(
    q: &[f32],
    kv: &[f32],
    e: usize,
    heads: usize,
    w_in: &[f32],
    b_in: &[f32],
    w_out: &[f32],
    b_out: &[f32],
) -> Vec<f32> {
    let project = |x: &[f32], part: usize| -> Vec<Vec<f64>> {
        x.chunks(e)
            .map(|row| {
                (0..e)
                    .map(|o| {
                        let r = part * e + o;
                        b_in[r] as f64 + (0..e).map(|k| w_in[r * e + k] as f64 * row[k] as f64).sum::<f64>()
                    })
                    .collect()
            })
            .collect()
    };
    let (qs, ks, vs) = (project(q, 0), project(kv, 1), project(kv, 2));
    let dh = e / heads;
    let mut context = vec![vec![0f64; e]; qs.len()];
    for hd in 0..heads {
        let cols = hd * dh..(hd + 1) * dh;
        for (i, qi) in qs.iter().enumerate() {
            let scores: Vec<f64> = ks
                .iter()
                .map(|kj| cols.clone().map(|d| qi[d] * kj[d]).sum::<f64>() / (dh as f64).sqrt())
                .collect();
            let m = scores.iter().copied().fold(f64::MIN, f64::max);
            let exps: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = exps.iter().sum();
            for d in cols.clone() {
                context[i][d] = exps.iter().zip(&vs).map(|(a, v)| a / z * v[d]).sum();
            }
        }
    }
    context
        .iter()
        .flat_map(|c| {
            (0..e).map(move |o| b_out[o] as f64 + (0..e).map(|k| w_out[o * e + k] as f64 * c[k]).sum::<f64>())
        })
        .map(|v| v as f32)
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Dense
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn dense_shapes_and_pytorch_params() {
    let g = check_shape(&[4], LayerSpec::Dense(DenseConfig::new(3)), &[3]);
    assert_params(&g, &[("l.weight", &[3, 4]), ("l.bias", &[3])]);
    assert_eq!(count(&g), 3 * 4 + 3);
    // Over the last axis of sequences and images.
    check_shape(&[5, 4], LayerSpec::Dense(DenseConfig::new(3)), &[5, 3]);
    check_shape(&[2, 3, 4], LayerSpec::Dense(DenseConfig::new(6)), &[2, 3, 6]);
    let g = check_shape(
        &[4],
        LayerSpec::Dense(DenseConfig {
            use_bias: false,
            ..DenseConfig::new(3)
        }),
        &[3],
    );
    assert_params(&g, &[("l.weight", &[3, 4])]);
}

#[test]
fn automatic_node_names_prefix_the_pytorch_keys() {
    let spec = ModelSpec::sequential(vec![6, 4])
        .add(LayerSpec::Lstm(RecurrentConfig {
            return_sequences: true,
            ..RecurrentConfig::new(4)
        }))
        .add(bidirectional(
            LayerSpec::Gru(RecurrentConfig {
                return_sequences: true,
                ..RecurrentConfig::new(2)
            }),
            MergeMode::Concat,
        ))
        .add(LayerSpec::MultiHeadAttention(mha(2)))
        .add(LayerSpec::BatchNorm(BatchNormConfig {
            momentum: 0.1,
            epsilon: 1e-5,
        }))
        .add(LayerSpec::GlobalAvgPool1d(NoOptions {}))
        .add(LayerSpec::Dense(DenseConfig::new(3)));
    let shapes = param_shapes(&build(&spec, &device()));
    for (key, shape) in [
        ("lstm_1.weight_ih_l0", vec![16, 4]),
        ("bidirectional_1.weight_hh_l0_reverse", vec![6, 2]),
        ("multi_head_attention_1.in_proj_weight", vec![12, 4]),
        ("multi_head_attention_1.out_proj.weight", vec![4, 4]),
        ("batch_norm_1.running_var", vec![4]),
        ("dense_1.weight", vec![3, 4]),
    ] {
        assert_eq!(
            shapes.get(key),
            Some(&shape),
            "{key} in {:?}",
            shapes.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn dense_equals_x_w_transpose_plus_b() {
    let device = device();
    let spec = one_layer(&[4], "fc", LayerSpec::Dense(DenseConfig::new(3)));
    let graph = randomize(build(&spec, &device));
    let x = random_batch(5, &[4], &device);
    let y = data_values(&run(&graph, vec![x.clone()])[0].data);
    let (xv, w, b) = (data_values(&x), param(&graph, "fc.weight"), param(&graph, "fc.bias"));
    let want: Vec<f64> = (0..5)
        .flat_map(|i| {
            let (xv, w, b) = (&xv, &w, &b);
            (0..3).map(move |o| b[o] as f64 + (0..4).map(|k| xv[i * 4 + k] as f64 * w[o * 4 + k] as f64).sum::<f64>())
        })
        .collect();
    assert_close(&y, &to_f32(&want), 1e-5, "dense");
}

#[test]
fn dense_activation_applies_and_is_left_out_for_logits() {
    let device = device();
    let spec = one_layer(
        &[4],
        "fc",
        LayerSpec::Dense(DenseConfig::new(3).with_activation(Activation::Sigmoid)),
    );
    let graph = randomize(build(&spec, &device));
    let x = random_batch(2, &[4], &device);
    let probs = data_values(&graph.forward(vec![x.clone()], false, false).unwrap()[0].data);
    let logits = data_values(&graph.forward(vec![x], false, true).unwrap()[0].data);
    let want: Vec<f32> = logits.iter().map(|&z| sigmoid(z as f64) as f32).collect();
    assert_close(&probs, &want, 1e-6, "sigmoid(logits)");
    assert_eq!(graph.output_probability(0), Some(Activation::Sigmoid));
}

#[test]
fn a_sigmoid_reshaped_on_its_way_out_is_left_out_for_logits_and_a_softmax_is_not() {
    let device = device();
    let decoder = |activation: Activation| {
        ModelSpec::sequential(vec![4])
            .add_named(
                "pixels",
                LayerSpec::Dense(DenseConfig::new(6).with_activation(activation)),
            )
            .add_named("image", LayerSpec::Reshape(ReshapeConfig { shape: vec![1, 2, 3] }))
    };
    let graph = randomize(build(&decoder(Activation::Sigmoid), &device));
    let x = random_batch(2, &[4], &device);
    let probs = data_values(&graph.forward(vec![x.clone()], false, false).unwrap()[0].data);
    let logits = data_values(&graph.forward(vec![x.clone()], false, true).unwrap()[0].data);
    let want: Vec<f32> = logits.iter().map(|&z| sigmoid(z as f64) as f32).collect();
    assert_close(&probs, &want, 1e-6, "sigmoid(logits) through the reshape");
    assert!(
        logits.iter().any(|&z| !(0.0..=1.0).contains(&z)),
        "logits, not probabilities"
    );
    assert_eq!(graph.output_probability(0), Some(Activation::Sigmoid));
    // A softmax normalizes the last axis, which a reshape moves: it stays in the forward pass.
    let graph = randomize(build(&decoder(Activation::Softmax), &device));
    let a = data_values(&graph.forward(vec![x.clone()], false, false).unwrap()[0].data);
    let b = data_values(&graph.forward(vec![x], false, true).unwrap()[0].data);
    assert_eq!(a, b);
    assert_eq!(graph.output_probability(0), None);
}

#[test]
fn sampling_builds_from_two_equal_inputs_and_passes_the_mean_at_inference() {
    let device = device();
    let spec = two_inputs(LayerSpec::Sampling(NoOptions {}), &[3], &[3]);
    let graph = build(&spec, &device);
    assert_eq!(graph.output_shapes(), vec![vec![3]]);
    let (m, v) = (random_batch(2, &[3], &device), random_batch(2, &[3], &device));
    let out = data_values(&graph.forward(vec![m.clone(), v], false, false).unwrap()[0].data);
    assert_eq!(out, data_values(&m));
    let e = Graph::build(&two_inputs(LayerSpec::Sampling(NoOptions {}), &[3], &[4]), &device).unwrap_err();
    assert!(e.to_string().contains("must be equal"), "{e}");
    let e = Graph::build(&one_layer(&[3], "z", LayerSpec::Sampling(NoOptions {})), &device).unwrap_err();
    assert!(e.to_string().contains("mean and the log-variance"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------------
// Convolutions
// ---------------------------------------------------------------------------------------------------------------

/// Builds one conv2d, checks shape, PyTorch params and values against the direct convolution.
fn check_conv2d(cfg: ConvConfig, input: [usize; 3], out: [usize; 3], pad: [usize; 2]) {
    let device = device();
    let graph = randomize(build(
        &one_layer(&input, "conv", LayerSpec::Conv2d(cfg.clone())),
        &device,
    ));
    let what = format!("{cfg:?} on {input:?}");
    assert_eq!(graph.output_shapes(), vec![out.to_vec()], "{what}");
    let kernel = cfg.kernel.resolve::<2>("kernel").unwrap();
    let wdims = [cfg.filters, input[0] / cfg.groups, kernel[0], kernel[1]];
    assert_params(&graph, &[("conv.weight", &wdims), ("conv.bias", &[cfg.filters])]);
    assert_eq!(count(&graph), wdims.iter().product::<usize>() + cfg.filters, "{what}");
    let x = random_batch(2, &input, &device);
    let y = run(&graph, vec![x.clone()]).remove(0).data;
    assert_eq!(y.dims(), vec![2, out[0], out[1], out[2]], "{what}");
    let geom = Geom {
        kernel,
        stride: cfg.stride.resolve::<2>("stride").unwrap(),
        dilation: cfg.dilation.resolve::<2>("dilation").unwrap(),
        pad,
        out: [out[1], out[2]],
    };
    let dims = [2, input[0], input[1], input[2]];
    let want = direct_conv2d(
        &data_values(&x),
        dims,
        &param(&graph, "conv.weight"),
        &param(&graph, "conv.bias"),
        cfg.filters,
        cfg.groups,
        &geom,
    );
    assert_close(&data_values(&y), &want, 1e-4, &what);
}

#[test]
fn conv2d_variants_match_a_direct_convolution() {
    let c = |filters, kernel: Dims| ConvConfig {
        kernel,
        ..ConvConfig::new(filters, 1)
    };
    // plain 3×3
    check_conv2d(ConvConfig::new(4, 3), [3, 8, 8], [4, 6, 6], [0, 0]);
    // 1×1
    check_conv2d(ConvConfig::new(4, 1), [3, 8, 8], [4, 8, 8], [0, 0]);
    // 3×1 and 1×3
    check_conv2d(c(4, Dims::Each(vec![3, 1])), [3, 8, 8], [4, 6, 8], [0, 0]);
    check_conv2d(c(4, Dims::Each(vec![1, 3])), [3, 8, 8], [4, 8, 6], [0, 0]);
    // dilated: span 5
    check_conv2d(
        ConvConfig {
            dilation: Dims::One(2),
            ..ConvConfig::new(4, 3)
        },
        [3, 8, 8],
        [4, 4, 4],
        [0, 0],
    );
    // grouped: weight [6, 1, 3, 3] (depthwise with multiplier 2)
    check_conv2d(
        ConvConfig {
            groups: 3,
            ..ConvConfig::new(6, 3)
        },
        [3, 8, 8],
        [6, 6, 6],
        [0, 0],
    );
    check_conv2d(
        ConvConfig {
            groups: 2,
            ..ConvConfig::new(4, 3)
        },
        [4, 6, 6],
        [4, 4, 4],
        [0, 0],
    );
    // strided: (8 - 3) / 2 + 1 = 3
    check_conv2d(
        ConvConfig {
            stride: Dims::One(2),
            ..ConvConfig::new(4, 3)
        },
        [3, 8, 8],
        [4, 3, 3],
        [0, 0],
    );
    // `same` with an even kernel: 3 zeros in all, 1 before and 2 after (PyTorch / TensorFlow)
    check_conv2d(ConvConfig::new(4, 4).with_padding("same"), [3, 8, 8], [4, 8, 8], [1, 1]);
    // `same` strided: out ⌈7/2⌉ = 4, needs (4-1)·2 + 3 = 9, pads 1 + 1
    check_conv2d(
        ConvConfig {
            stride: Dims::One(2),
            ..ConvConfig::new(4, 3).with_padding("same")
        },
        [3, 7, 7],
        [4, 4, 4],
        [1, 1],
    );
    // `same` with kernel [2, 3] and dilation 2: spans 3 and 5 → pads (1, 1) and (2, 2)
    check_conv2d(
        ConvConfig {
            dilation: Dims::One(2),
            ..c(4, Dims::Each(vec![2, 3])).with_padding("same")
        },
        [3, 7, 6],
        [4, 7, 6],
        [1, 2],
    );
    // explicit padding 1
    check_conv2d(
        ConvConfig {
            padding: Padding::Explicit(Dims::One(1)),
            ..ConvConfig::new(4, 3)
        },
        [3, 5, 5],
        [4, 5, 5],
        [1, 1],
    );
}

#[test]
fn conv2d_known_kernel_on_known_image() {
    let device = device();
    let spec = one_layer(&[2, 4, 4], "conv", LayerSpec::Conv2d(ConvConfig::new(2, 2)));
    let mut graph = build(&spec, &device);
    // filter 0: [[1, 2], [3, 4]] on channel 0 and all ones on channel 1; filter 1: 0.5 at the top left of channel 1.
    #[rustfmt::skip]
    let w = vec![
        1.0, 2.0, 3.0, 4.0,   1.0, 1.0, 1.0, 1.0,
        0.0, 0.0, 0.0, 0.0,   0.5, 0.0, 0.0, 0.0,
    ];
    if let Some(Layer::Conv2d(conv)) = graph.nodes[0].layer.as_mut() {
        conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [2, 2, 2, 2]), &device));
        conv.bias = Some(Param::from_tensor(Tensor::from_floats([0.5, -1.0], &device)));
    } else {
        panic!("not a conv2d layer");
    }
    // channel 0: v = 4i + j; channel 1: ones
    let image: Vec<f32> = (0..16).map(|v| v as f32).chain(std::iter::repeat_n(1.0, 16)).collect();
    let y = data_values(&run(&graph, vec![data(&[1, 2, 4, 4], image, &device)])[0].data);
    // filter 0: v + 2(v+1) + 3(v+4) + 4(v+5) + 4 + 0.5 = 10v + 38.5 (a flipped kernel would give 10v + 20.5)
    let mut want: Vec<f32> = (0..3)
        .flat_map(|i| (0..3).map(move |j| 10.0 * (4 * i + j) as f32 + 38.5))
        .collect();
    want.extend(std::iter::repeat_n(-0.5, 9));
    assert_close(&y, &want, 1e-6, "known kernel");
}

fn check_conv1d(cfg: ConvConfig, input: [usize; 2], out: [usize; 2], pad: usize) {
    let device = device();
    let graph = randomize(build(
        &one_layer(&input, "conv", LayerSpec::Conv1d(cfg.clone())),
        &device,
    ));
    let what = format!("{cfg:?} on {input:?}");
    assert_eq!(graph.output_shapes(), vec![out.to_vec()], "{what}");
    let k = cfg.kernel.resolve::<1>("kernel").unwrap()[0];
    let wdims = [cfg.filters, input[1] / cfg.groups, k];
    assert_params(&graph, &[("conv.weight", &wdims), ("conv.bias", &[cfg.filters])]);
    let x = random_batch(2, &input, &device);
    let y = run(&graph, vec![x.clone()]).remove(0).data;
    assert_eq!(y.dims(), vec![2, out[0], out[1]], "{what}");
    let geom = Geom {
        kernel: [1, k],
        stride: [1, cfg.stride.resolve::<1>("stride").unwrap()[0]],
        dilation: [1, cfg.dilation.resolve::<1>("dilation").unwrap()[0]],
        pad: [0, pad],
        out: [1, out[0]],
    };
    let x_cf = steps_to_cf(&data_values(&x), 2, input[0], input[1]);
    let dims = [2, input[1], 1, input[0]];
    let want_cf = direct_conv2d(
        &x_cf,
        dims,
        &param(&graph, "conv.weight"),
        &param(&graph, "conv.bias"),
        cfg.filters,
        cfg.groups,
        &geom,
    );
    assert_close(&data_values(&y), &cf_to_steps(&want_cf, 2, out[0], out[1]), 1e-4, &what);
}

#[test]
fn conv1d_variants_match_a_direct_convolution() {
    // sequences are [steps, channels]
    check_conv1d(ConvConfig::new(4, 3), [10, 3], [8, 4], 0);
    check_conv1d(ConvConfig::new(4, 1), [10, 3], [10, 4], 0);
    check_conv1d(
        ConvConfig {
            dilation: Dims::One(2),
            ..ConvConfig::new(4, 3)
        },
        [10, 3],
        [6, 4],
        0,
    );
    check_conv1d(
        ConvConfig {
            groups: 3,
            ..ConvConfig::new(6, 3)
        },
        [10, 3],
        [8, 6],
        0,
    );
    check_conv1d(
        ConvConfig {
            stride: Dims::One(2),
            ..ConvConfig::new(4, 3)
        },
        [10, 3],
        [4, 4],
        0,
    );
    // even kernel, same: 1 before, 2 after
    check_conv1d(ConvConfig::new(4, 4).with_padding("same"), [10, 3], [10, 4], 1);
    // strided same: ⌈9/2⌉ = 5, needs 4·2 + 3 = 11 → 1 + 1
    check_conv1d(
        ConvConfig {
            stride: Dims::One(2),
            ..ConvConfig::new(4, 3).with_padding("same")
        },
        [9, 3],
        [5, 4],
        1,
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------------------------------------------

fn check_pool2d(max: bool, include_pad: bool, cfg: PoolConfig, input: [usize; 3], out: [usize; 3], pad: [usize; 2]) {
    let device = device();
    let layer = if max {
        LayerSpec::MaxPool2d(cfg.clone())
    } else {
        LayerSpec::AvgPool2d(AvgPoolConfig {
            count_include_pad: include_pad,
            ..cfg.clone().into()
        })
    };
    let graph = build(&one_layer(&input, "pool", layer), &device);
    let what = format!("max={max} include_pad={include_pad} {cfg:?} on {input:?}");
    assert_eq!(graph.output_shapes(), vec![out.to_vec()], "{what}");
    assert_params(&graph, &[]);
    let x = random_batch(2, &input, &device);
    let y = run(&graph, vec![x.clone()]).remove(0).data;
    assert_eq!(y.dims(), vec![2, out[0], out[1], out[2]], "{what}");
    let kernel = cfg.size.resolve::<2>("size").unwrap();
    let stride = cfg
        .stride
        .as_ref()
        .map(|s| s.resolve::<2>("stride").unwrap())
        .unwrap_or(kernel);
    let geom = Geom {
        kernel,
        stride,
        dilation: [1, 1],
        pad,
        out: [out[1], out[2]],
    };
    let want = direct_pool2d(
        &data_values(&x),
        [2, input[0], input[1], input[2]],
        &geom,
        max,
        include_pad,
    );
    assert_close(&data_values(&y), &want, 1e-5, &what);
}

#[test]
fn pool2d_variants_match_direct_pooling() {
    let same = |size: usize, stride: Option<usize>| PoolConfig {
        size: Dims::One(size),
        stride: stride.map(Dims::One),
        padding: Padding::Named("same".into()),
    };
    for (max, include_pad) in [(true, false), (false, true), (false, false)] {
        check_pool2d(max, include_pad, PoolConfig::new(2), [2, 6, 6], [2, 3, 3], [0, 0]);
        check_pool2d(max, include_pad, PoolConfig::new(2), [2, 7, 5], [2, 3, 2], [0, 0]);
        let rect = PoolConfig {
            size: Dims::Each(vec![2, 3]),
            stride: Some(Dims::Each(vec![1, 2])),
            padding: Padding::default(),
        };
        check_pool2d(max, include_pad, rect, [1, 5, 7], [1, 4, 3], [0, 0]);
        let padded = PoolConfig {
            stride: Some(Dims::One(2)),
            padding: Padding::Explicit(Dims::One(1)),
            ..PoolConfig::new(3)
        };
        check_pool2d(max, include_pad, padded, [2, 7, 6], [2, 4, 3], [1, 1]);
        // same, size 3, stride 1: one on each side
        check_pool2d(max, include_pad, same(3, Some(1)), [2, 5, 5], [2, 5, 5], [1, 1]);
        // same, size 2 (stride 2) on 5: out 3, one padding position at the end
        check_pool2d(max, include_pad, same(2, None), [2, 5, 5], [2, 3, 3], [0, 0]);
        // same, even size 4, stride 1: 1 before, 2 after
        check_pool2d(max, include_pad, same(4, Some(1)), [1, 6, 6], [1, 6, 6], [1, 1]);
    }
}

fn check_pool1d(max: bool, include_pad: bool, cfg: PoolConfig, input: [usize; 2], out: [usize; 2], pad: usize) {
    let device = device();
    let layer = if max {
        LayerSpec::MaxPool1d(cfg.clone())
    } else {
        LayerSpec::AvgPool1d(AvgPoolConfig {
            count_include_pad: include_pad,
            ..cfg.clone().into()
        })
    };
    let graph = build(&one_layer(&input, "pool", layer), &device);
    let what = format!("max={max} include_pad={include_pad} {cfg:?} on {input:?}");
    assert_eq!(graph.output_shapes(), vec![out.to_vec()], "{what}");
    let x = random_batch(2, &input, &device);
    let y = run(&graph, vec![x.clone()]).remove(0).data;
    assert_eq!(y.dims(), vec![2, out[0], out[1]], "{what}");
    let k = cfg.size.resolve::<1>("size").unwrap()[0];
    let s = cfg
        .stride
        .as_ref()
        .map(|s| s.resolve::<1>("stride").unwrap()[0])
        .unwrap_or(k);
    let geom = Geom {
        kernel: [1, k],
        stride: [1, s],
        dilation: [1, 1],
        pad: [0, pad],
        out: [1, out[0]],
    };
    let x_cf = steps_to_cf(&data_values(&x), 2, input[0], input[1]);
    let want = direct_pool2d(&x_cf, [2, input[1], 1, input[0]], &geom, max, include_pad);
    assert_close(&data_values(&y), &cf_to_steps(&want, 2, out[0], out[1]), 1e-5, &what);
}

#[test]
fn pool1d_variants_match_direct_pooling() {
    let same = |size: usize, stride: usize| PoolConfig {
        size: Dims::One(size),
        stride: Some(Dims::One(stride)),
        padding: Padding::Named("same".into()),
    };
    for (max, include_pad) in [(true, false), (false, true), (false, false)] {
        check_pool1d(max, include_pad, PoolConfig::new(2), [10, 3], [5, 3], 0);
        check_pool1d(
            max,
            include_pad,
            PoolConfig {
                stride: Some(Dims::One(1)),
                ..PoolConfig::new(3)
            },
            [10, 3],
            [8, 3],
            0,
        );
        let padded = PoolConfig {
            stride: Some(Dims::One(2)),
            padding: Padding::Explicit(Dims::One(1)),
            ..PoolConfig::new(3)
        };
        check_pool1d(max, include_pad, padded, [8, 3], [4, 3], 1);
        check_pool1d(max, include_pad, same(3, 1), [10, 3], [10, 3], 1);
        check_pool1d(max, include_pad, same(2, 2), [7, 3], [4, 3], 0);
        check_pool1d(max, include_pad, same(4, 1), [6, 2], [6, 2], 1);
    }
}

#[test]
fn global_pools_reduce_the_spatial_axes() {
    let device = device();
    let cases: [(LayerSpec, &[usize], bool); 4] = [
        (LayerSpec::GlobalAvgPool1d(NoOptions {}), &[6, 4], false),
        (LayerSpec::GlobalMaxPool1d(NoOptions {}), &[6, 4], true),
        (LayerSpec::GlobalAvgPool2d(NoOptions {}), &[4, 3, 5], false),
        (LayerSpec::GlobalMaxPool2d(NoOptions {}), &[4, 3, 5], true),
    ];
    for (layer, input, max) in cases {
        let graph = check_shape(input, layer.clone(), &[4]);
        assert_params(&graph, &[]);
        let x = random_batch(2, input, &device);
        let xv = data_values(&x);
        let y = data_values(&run(&graph, vec![x])[0].data);
        let two_d = input.len() == 3;
        let spatial: usize = if two_d { input[1] * input[2] } else { input[0] };
        let want: Vec<f32> = (0..2)
            .flat_map(|n| {
                let xv = &xv;
                (0..4).map(move |c| {
                    let vals: Vec<f64> = (0..spatial)
                        .map(|s| if two_d { xv[(n * 4 + c) * spatial + s] } else { xv[(n * spatial + s) * 4 + c] } as f64)
                        .collect();
                    if max { vals.iter().copied().fold(f64::MIN, f64::max) } else { mean_var(&vals).0 }
                })
            })
            .map(|v| v as f32)
            .collect();
        assert_close(&y, &want, 1e-5, &format!("{layer:?}"));
    }
}

#[test]
fn global_pool1d_leaves_out_padded_steps() {
    let device = device();
    for max in [false, true] {
        let pool = if max {
            LayerSpec::GlobalMaxPool1d(NoOptions {})
        } else {
            LayerSpec::GlobalAvgPool1d(NoOptions {})
        };
        let emb = EmbeddingConfig {
            padding_idx: Some(0),
            ..embedding(10, 3)
        };
        let spec = ModelSpec::sequential(vec![5])
            .add_named("emb", LayerSpec::Embedding(emb))
            .add_named("pool", pool);
        let graph = randomize(build(&spec, &device));
        let w = param(&graph, "emb.weight");
        let y = data_values(&run(&graph, vec![ids(&[&[4, 2, 7, 0, 0]], &device)])[0].data);
        let want: Vec<f32> = (0..3)
            .map(|c| {
                let vals: Vec<f64> = [4, 2, 7].iter().map(|&id| w[id * 3 + c] as f64).collect();
                (if max {
                    vals.iter().copied().fold(f64::MIN, f64::max)
                } else {
                    mean_var(&vals).0
                }) as f32
            })
            .collect();
        assert_close(&y, &want, 1e-5, if max { "masked max" } else { "masked mean" });
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Flatten, reshape, permute, dropout
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn flatten_reshape_and_permute_move_values() {
    let device = device();
    let g = check_shape(&[3, 4, 4], LayerSpec::Flatten(NoOptions {}), &[48]);
    assert_params(&g, &[]);
    let x = random_batch(2, &[3, 4, 4], &device);
    assert_eq!(
        data_values(&run(&g, vec![x.clone()])[0].data),
        data_values(&x),
        "flatten keeps C, H, W order"
    );

    let g = check_shape(
        &[12, 4],
        LayerSpec::Reshape(ReshapeConfig { shape: vec![-1, 6] }),
        &[8, 6],
    );
    let x = random_batch(2, &[12, 4], &device);
    assert_eq!(data_values(&run(&g, vec![x.clone()])[0].data), data_values(&x));
    check_shape(
        &[12, 4],
        LayerSpec::Reshape(ReshapeConfig { shape: vec![2, -1, 4] }),
        &[2, 6, 4],
    );
    check_shape(
        &[48],
        LayerSpec::Reshape(ReshapeConfig { shape: vec![3, 4, 4] }),
        &[3, 4, 4],
    );

    let g = check_shape(&[5, 3], LayerSpec::Permute(PermuteConfig { dims: vec![1, 0] }), &[3, 5]);
    let x = random_batch(2, &[5, 3], &device);
    let (xv, y) = (data_values(&x), data_values(&run(&g, vec![x])[0].data));
    for n in 0..2 {
        for i in 0..3 {
            for j in 0..5 {
                assert_eq!(y[(n * 3 + i) * 5 + j], xv[(n * 5 + j) * 3 + i]);
            }
        }
    }
    // out[i][j][k] = in[j][k][i]
    let g = check_shape(
        &[2, 3, 4],
        LayerSpec::Permute(PermuteConfig { dims: vec![2, 0, 1] }),
        &[4, 2, 3],
    );
    let x = random_batch(1, &[2, 3, 4], &device);
    let (xv, y) = (data_values(&x), data_values(&run(&g, vec![x])[0].data));
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                assert_eq!(y[(i * 2 + j) * 3 + k], xv[(j * 3 + k) * 4 + i]);
            }
        }
    }
}

#[test]
fn dropout_is_identity_at_inference_and_inverted_in_training() {
    let device = device();
    let g = check_shape(&[64, 32], LayerSpec::Dropout(DropoutConfig { rate: 0.5 }), &[64, 32]);
    assert_params(&g, &[]);
    let ones = data(&[2, 64, 32], vec![1.0; 2 * 64 * 32], &device);
    assert!(
        data_values(&run(&g, vec![ones.clone()])[0].data)
            .iter()
            .all(|&v| v == 1.0)
    );
    let y = data_values(&g.forward(vec![ones], true, false).unwrap()[0].data);
    assert!(
        y.iter().all(|&v| v == 0.0 || v == 2.0),
        "kept values are scaled by 1/(1 - rate)"
    );
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.5).abs() < 0.05, "kept fraction {kept}");
    // Monte-Carlo dropout: active at inference
    let ctx = Ctx {
        training: false,
        mc_dropout: true,
        ..Ctx::default()
    };
    let ones = data(&[2, 64, 32], vec![1.0; 2 * 64 * 32], &device);
    let y = data_values(&g.forward_ctx(vec![ones], ctx, false).unwrap()[0].data);
    assert!(y.contains(&0.0) && y.contains(&2.0));
}

// ---------------------------------------------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------------------------------------------

fn bn(graph: &Graph) -> &BatchNorm {
    match graph.nodes[0].layer.as_ref() {
        Some(Layer::BatchNorm(b)) => b,
        _ => panic!("not a batch norm"),
    }
}

/// Flat indices of channel `c` in a batch of `b` samples shaped `shape` (graft's channel conventions).
fn channel_indices(b: usize, shape: &[usize], c: usize) -> Vec<usize> {
    match *shape {
        [f] => (0..b).map(|n| n * f + c).collect(),
        [l, ch] => (0..b).flat_map(|n| (0..l).map(move |t| (n * l + t) * ch + c)).collect(),
        [ch, h, w] => (0..b)
            .flat_map(|n| (0..h * w).map(move |s| (n * ch + c) * h * w + s))
            .collect(),
        _ => unreachable!(),
    }
}

#[test]
fn batch_norm_shapes_and_pytorch_names() {
    let bn_spec = LayerSpec::BatchNorm(BatchNormConfig {
        momentum: 0.1,
        epsilon: 1e-5,
    });
    check_shape(&[4], bn_spec.clone(), &[4]);
    check_shape(&[6, 4], bn_spec.clone(), &[6, 4]);
    let g = check_shape(&[3, 4, 4], bn_spec, &[3, 4, 4]);
    assert_params(
        &g,
        &[
            ("l.weight", &[3]),
            ("l.bias", &[3]),
            ("l.running_mean", &[3]),
            ("l.running_var", &[3]),
        ],
    );
    assert_eq!(count(&g), 6);
}

#[test]
fn batch_norm_training_uses_batch_statistics_in_every_layout() {
    let device = device();
    for shape in [vec![4], vec![6, 4], vec![4, 3, 3]] {
        let spec = one_layer(
            &shape,
            "bn",
            LayerSpec::BatchNorm(BatchNormConfig {
                momentum: 0.1,
                epsilon: 1e-5,
            }),
        );
        let graph = build(&spec, &device);
        let xv: Vec<f32> = data_values(&random_batch(8, &shape, &device))
            .iter()
            .map(|v| v * 3.0 + 2.0)
            .collect();
        let dims: Vec<usize> = std::iter::once(8).chain(shape.clone()).collect();
        let y = data_values(&graph.forward(vec![data(&dims, xv, &device)], true, false).unwrap()[0].data);
        let groups: Vec<Vec<usize>> = (0..4).map(|c| channel_indices(8, &shape, c)).collect();
        assert_normalized(&y, &groups, &format!("batch norm on {shape:?}"));
    }
}

/// Batch statistics per channel of a `[B, 3, 4, 4]` batch: (mean, biased var, unbiased var).
fn channel_stats(xv: &[f32], b: usize) -> Vec<(f64, f64, f64)> {
    (0..3)
        .map(|c| {
            let vals: Vec<f64> = channel_indices(b, &[3, 4, 4], c)
                .iter()
                .map(|&i| xv[i] as f64)
                .collect();
            let (m, v) = mean_var(&vals);
            let n = vals.len() as f64;
            (m, v, v * n / (n - 1.0))
        })
        .collect()
}

fn batch_norm_graph(device: &Device) -> (Graph, Data, Vec<f32>) {
    let spec = one_layer(
        &[3, 4, 4],
        "bn",
        LayerSpec::BatchNorm(BatchNormConfig {
            momentum: 0.1,
            epsilon: 1e-5,
        }),
    );
    let graph = build(&spec, device);
    let xv: Vec<f32> = data_values(&random_batch(4, &[3, 4, 4], device))
        .iter()
        .map(|v| v * 2.0 + 1.5)
        .collect();
    (graph, data(&[4, 3, 4, 4], xv.clone(), device), xv)
}

#[test]
fn an_independent_copy_keeps_its_own_running_stats() {
    let device = device();
    let (graph, x, _) = batch_norm_graph(&device);
    // A plain clone shares burn's RunningState: training it moves the original's statistics.
    let clone = graph.clone();
    clone.forward(vec![x.clone()], true, false).unwrap();
    let moved = values(bn(&graph).running_mean.value_sync());
    assert!(
        moved.iter().any(|v| v.abs() > 1e-3),
        "a clone shares the statistics: {moved:?}"
    );
    // An independent copy does not; its own statistics move.
    let before = values(bn(&graph).running_mean.value_sync());
    let copy = graph.independent_copy();
    copy.forward(vec![x.clone()], true, false).unwrap();
    assert_eq!(values(bn(&graph).running_mean.value_sync()), before);
    assert_ne!(values(bn(&copy).running_mean.value_sync()), before);
    // The copy keeps the names of its statistics (what checkpoints and exports address).
    let names = |g: &Graph| {
        crate::model::io::named_tensors(g)
            .into_iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&copy), names(&graph));
}

#[test]
fn batch_norm_running_stats_follow_pytorch_momentum() {
    let device = device();
    let (graph, x, xv) = batch_norm_graph(&device);
    let stats = channel_stats(&xv, 4);
    graph.forward(vec![x.clone()], true, false).unwrap();
    // running = 0.9·running + 0.1·batch, with the unbiased batch variance (PyTorch)
    let mean = values(bn(&graph).running_mean.value_sync());
    let var = values(bn(&graph).running_var.value_sync());
    assert_close(
        &mean,
        &to_f32(&stats.iter().map(|s| 0.1 * s.0).collect::<Vec<_>>()),
        1e-5,
        "running mean",
    );
    assert_close(
        &var,
        &to_f32(&stats.iter().map(|s| 0.9 + 0.1 * s.2).collect::<Vec<_>>()),
        1e-5,
        "running var",
    );
    // after many steps on the same batch they reach the batch statistics
    for _ in 0..80 {
        graph.forward(vec![x.clone()], true, false).unwrap();
    }
    let mean = values(bn(&graph).running_mean.value_sync());
    let var = values(bn(&graph).running_var.value_sync());
    assert_close(
        &mean,
        &to_f32(&stats.iter().map(|s| s.0).collect::<Vec<_>>()),
        1e-3,
        "converged mean",
    );
    assert_close(
        &var,
        &to_f32(&stats.iter().map(|s| s.2).collect::<Vec<_>>()),
        1e-3,
        "converged var",
    );
}

#[test]
fn batch_norm_eval_uses_the_running_stats() {
    let device = device();
    let (graph, x, xv) = batch_norm_graph(&device);
    // fresh: running mean 0, var 1
    let y = data_values(&run(&graph, vec![x.clone()])[0].data);
    let scale = 1.0 / (1.0f64 + 1e-5).sqrt();
    assert_close(
        &y,
        &xv.iter().map(|&v| (v as f64 * scale) as f32).collect::<Vec<_>>(),
        1e-6,
        "fresh eval",
    );
    for _ in 0..40 {
        graph.forward(vec![x.clone()], true, false).unwrap();
    }
    let mean = values(bn(&graph).running_mean.value_sync());
    let var = values(bn(&graph).running_var.value_sync());
    let y = data_values(&run(&graph, vec![x])[0].data);
    let want: Vec<f32> = (0..xv.len())
        .map(|i| {
            let c = (i / 16) % 3;
            ((xv[i] as f64 - mean[c] as f64) / (var[c] as f64 + 1e-5).sqrt()) as f32
        })
        .collect();
    assert_close(&y, &want, 1e-5, "eval with running stats");
}

#[test]
fn batch_norm_eval_right_after_a_training_step_sees_its_update() {
    let device = device();
    let (graph, x, xv) = batch_norm_graph(&device);
    let stats = channel_stats(&xv, 4);
    graph.forward(vec![x.clone()], true, false).unwrap();
    // no value_sync() here: the eval pass itself must see the update of the training pass
    let y = data_values(&run(&graph, vec![x])[0].data);
    let want: Vec<f32> = (0..xv.len())
        .map(|i| {
            let (m, _, unbiased) = stats[(i / 16) % 3];
            ((xv[i] as f64 - 0.1 * m) / (0.9 + 0.1 * unbiased + 1e-5).sqrt()) as f32
        })
        .collect();
    assert_close(&y, &want, 1e-5, "eval after one training step");
    // what a state-dict writer visits is up to date too
    let saved = collect(&graph)
        .into_iter()
        .find(|p| p.0 == "bn.running_mean")
        .unwrap()
        .2;
    assert_close(
        &saved,
        &to_f32(&stats.iter().map(|s| 0.1 * s.0).collect::<Vec<_>>()),
        1e-5,
        "visited running mean",
    );
}

#[test]
fn layer_norm_normalizes_the_last_axis() {
    let device = device();
    let g = check_shape(
        &[5, 8],
        LayerSpec::LayerNorm(LayerNormConfig { epsilon: 1e-5 }),
        &[5, 8],
    );
    assert_params(&g, &[("l.weight", &[8]), ("l.bias", &[8])]);
    check_shape(&[8], LayerSpec::LayerNorm(LayerNormConfig { epsilon: 1e-5 }), &[8]);
    let xv: Vec<f32> = data_values(&random_batch(2, &[5, 8], &device))
        .iter()
        .map(|v| v * 4.0 - 1.0)
        .collect();
    let y = data_values(&run(&g, vec![data(&[2, 5, 8], xv, &device)])[0].data);
    let rows: Vec<Vec<usize>> = (0..10).map(|r| (r * 8..r * 8 + 8).collect()).collect();
    assert_normalized(&y, &rows, "layer norm");
}

#[test]
fn group_norm_normalizes_channel_groups() {
    let device = device();
    let spec = LayerSpec::GroupNorm(GroupNormConfig {
        groups: 2,
        epsilon: 1e-5,
    });
    let g = check_shape(&[4, 3, 3], spec.clone(), &[4, 3, 3]);
    assert_params(&g, &[("l.weight", &[4]), ("l.bias", &[4])]);
    let x = random_batch(2, &[4, 3, 3], &device);
    let y = data_values(&run(&g, vec![x])[0].data);
    // images: group k = channels 2k, 2k+1, every position
    let groups: Vec<Vec<usize>> = (0..2)
        .flat_map(|n| (0..2).map(move |k| (n * 36 + k * 18..n * 36 + k * 18 + 18).collect()))
        .collect();
    assert_normalized(&y, &groups, "group norm on images");
    // sequences [L, C]: channels are the last axis
    let g = check_shape(&[6, 4], spec, &[6, 4]);
    let y = data_values(&run(&g, vec![random_batch(2, &[6, 4], &device)])[0].data);
    let groups: Vec<Vec<usize>> = (0..2)
        .flat_map(|n| {
            (0..2).map(move |k| {
                (0..6)
                    .flat_map(|t| [(n * 6 + t) * 4 + 2 * k, (n * 6 + t) * 4 + 2 * k + 1])
                    .collect()
            })
        })
        .collect();
    assert_normalized(&y, &groups, "group norm on sequences");
}

#[test]
fn instance_norm_normalizes_each_channel_of_each_sample() {
    let device = device();
    let g = check_shape(
        &[3, 4, 4],
        LayerSpec::InstanceNorm(InstanceNormConfig {
            epsilon: 1e-5,
            affine: false,
        }),
        &[3, 4, 4],
    );
    assert_params(&g, &[]);
    let y = data_values(&run(&g, vec![random_batch(2, &[3, 4, 4], &device)])[0].data);
    let groups: Vec<Vec<usize>> = (0..6).map(|nc| (nc * 16..nc * 16 + 16).collect()).collect();
    assert_normalized(&y, &groups, "instance norm on images");
    let g = check_shape(
        &[6, 3],
        LayerSpec::InstanceNorm(InstanceNormConfig {
            epsilon: 1e-5,
            affine: true,
        }),
        &[6, 3],
    );
    assert_params(&g, &[("l.weight", &[3]), ("l.bias", &[3])]);
    let y = data_values(&run(&g, vec![random_batch(2, &[6, 3], &device)])[0].data);
    let groups: Vec<Vec<usize>> = (0..2)
        .flat_map(|n| (0..3).map(move |c| (0..6).map(|t| (n * 6 + t) * 3 + c).collect()))
        .collect();
    assert_normalized(&y, &groups, "instance norm on sequences");
}

// ---------------------------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------------------------

fn embedding(input_dim: usize, output_dim: usize) -> EmbeddingConfig {
    EmbeddingConfig {
        input_dim,
        output_dim,
        padding_idx: None,
        initializer: Initializer::Normal { mean: 0.0, std: 1.0 },
        pretrained: None,
        trainable: true,
    }
}

#[test]
fn embedding_looks_up_rows_and_masks_padding() {
    let device = device();
    let cfg = EmbeddingConfig {
        padding_idx: Some(0),
        ..embedding(10, 3)
    };
    let graph = build(&one_layer(&[5], "emb", LayerSpec::Embedding(cfg)), &device);
    assert_eq!(graph.output_shapes(), vec![vec![5, 3]]);
    assert_params(&graph, &[("emb.weight", &[10, 3])]);
    assert_eq!(graph.nodes[0].masked, vec![true]);
    let rows: [&[usize]; 2] = [&[4, 2, 0, 7, 0], &[0, 1, 1, 9, 3]];
    let out = run(&graph, vec![ids(&rows, &device)]).remove(0);
    assert_eq!(out.data.dims(), vec![2, 5, 3]);
    let w = param(&graph, "emb.weight");
    let y = data_values(&out.data);
    let flat: Vec<usize> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    for (pos, &id) in flat.iter().enumerate() {
        let want: Vec<f32> = if id == 0 {
            vec![0.0; 3]
        } else {
            w[id * 3..id * 3 + 3].to_vec()
        };
        assert_eq!(&y[pos * 3..pos * 3 + 3], want.as_slice(), "position {pos} (id {id})");
    }
    let mask = mask_values(&out).expect("padding_idx produces a mask");
    assert_eq!(
        mask,
        flat.iter()
            .map(|&id| if id == 0 { 1.0 } else { 0.0 })
            .collect::<Vec<f32>>()
    );
    // without padding_idx: no mask
    let graph = build(&one_layer(&[5], "emb", LayerSpec::Embedding(embedding(10, 3))), &device);
    assert_eq!(graph.nodes[0].masked, vec![false]);
    assert!(run(&graph, vec![ids(&rows, &device)])[0].mask.is_none());
}

#[test]
fn positional_embedding_learned_and_sinusoidal() {
    let device = device();
    let learned = PositionalEmbeddingConfig {
        max_len: 10,
        kind: "learned".into(),
    };
    let g = randomize(check_shape(
        &[6, 4],
        LayerSpec::PositionalEmbedding(learned.clone()),
        &[6, 4],
    ));
    assert_params(&g, &[("l.weight", &[10, 4])]);
    let x = random_batch(2, &[6, 4], &device);
    let (xv, w) = (data_values(&x), param(&g, "l.weight"));
    let y = data_values(&run(&g, vec![x])[0].data);
    let want: Vec<f32> = (0..48).map(|i| xv[i] + w[i % 24]).collect();
    assert_close(&y, &want, 1e-6, "x + weight[:T]");

    let sinusoidal = PositionalEmbeddingConfig {
        max_len: 10,
        kind: "sinusoidal".into(),
    };
    let g = check_shape(&[6, 4], LayerSpec::PositionalEmbedding(sinusoidal.clone()), &[6, 4]);
    let y = data_values(&run(&g, vec![data(&[1, 6, 4], vec![0.0; 24], &device)])[0].data);
    // PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))
    let want: Vec<f64> = (0..6)
        .flat_map(|p| {
            (0..4).map(move |i| {
                let angle = p as f64 / 10000f64.powf((i - i % 2) as f64 / 4.0);
                if i % 2 == 0 { angle.sin() } else { angle.cos() }
            })
        })
        .collect();
    assert_close(&y, &to_f32(&want), 1e-6, "sinusoidal table");

    // On an autodiff device the learned table trains, the sinusoidal one does not.
    let ad = device.autodiff();
    let g = build(&one_layer(&[6, 4], "pos", LayerSpec::PositionalEmbedding(learned)), &ad);
    assert!(collect(&g)[0].3, "learned positions take gradients");
    let g = build(
        &one_layer(&[6, 4], "pos", LayerSpec::PositionalEmbedding(sinusoidal)),
        &ad,
    );
    assert!(!collect(&g)[0].3, "sinusoidal positions are fixed");
}

// ---------------------------------------------------------------------------------------------------------------
// Recurrent
// ---------------------------------------------------------------------------------------------------------------

/// PyTorch's state-dict entries of an RNN/LSTM/GRU with `gates` gate blocks.
fn rnn_params(
    node: &str,
    gates: usize,
    h: usize,
    input: usize,
    layers: usize,
    dirs: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![];
    for l in 0..layers {
        let in_dim = if l == 0 { input } else { h * dirs };
        for d in 0..dirs {
            let sfx = format!("_l{l}{}", if d == 1 { "_reverse" } else { "" });
            out.push((format!("{node}.weight_ih{sfx}"), vec![gates * h, in_dim]));
            out.push((format!("{node}.weight_hh{sfx}"), vec![gates * h, h]));
            out.push((format!("{node}.bias_ih{sfx}"), vec![gates * h]));
            out.push((format!("{node}.bias_hh{sfx}"), vec![gates * h]));
        }
    }
    out
}

fn assert_rnn_params(graph: &Graph, expected: Vec<(String, Vec<usize>)>) {
    let want: BTreeMap<String, Vec<usize>> = expected.into_iter().collect();
    assert_eq!(param_shapes(graph), want);
}

#[test]
fn recurrent_shapes_and_pytorch_params() {
    let (t, f, h) = (7, 3, 4);
    for cell in [CellKind::Simple, CellKind::Lstm, CellKind::Gru] {
        let g = check_shape(&[t, f], cell.spec(RecurrentConfig::new(h)), &[h]);
        let gates = cell.gates();
        assert_rnn_params(&g, rnn_params("l", gates, h, f, 1, 1));
        // PyTorch: RNN H(in+H)+2H, LSTM 4H(in+H)+8H, GRU 3H(in+H)+6H
        assert_eq!(count(&g), gates * h * (f + h) + 2 * gates * h, "{cell:?}");
        let seqs = RecurrentConfig {
            return_sequences: true,
            ..RecurrentConfig::new(h)
        };
        check_shape(&[t, f], cell.spec(seqs), &[t, h]);
        // return_state: extra outputs h (and c)
        let states = RecurrentConfig {
            return_state: true,
            ..RecurrentConfig::new(h)
        };
        let g = build(&one_layer(&[t, f], "rnn", cell.spec(states)), &device());
        let n_states = if cell == CellKind::Lstm { 2 } else { 1 };
        assert_eq!(g.nodes[0].outputs, vec![vec![h]; 1 + n_states], "{cell:?}");
        // num_layers = 2: layer 1 reads the H outputs of layer 0
        let stacked = RecurrentConfig {
            num_layers: 2,
            return_sequences: true,
            ..RecurrentConfig::new(h)
        };
        let g = check_shape(&[t, f], cell.spec(stacked), &[t, h]);
        assert_rnn_params(&g, rnn_params("l", gates, h, f, 2, 1));
        assert_eq!(
            count(&g),
            gates * h * (f + h) + gates * h * (h + h) + 4 * gates * h,
            "{cell:?}"
        );
    }
    // the formula spelled out: LSTM(in=3, H=4) = 4·4·(3+4) + 8·4 = 144
    let g = check_shape(&[t, f], LayerSpec::Lstm(RecurrentConfig::new(4)), &[4]);
    assert_eq!(count(&g), 144);
    // no bias
    let g = check_shape(
        &[t, f],
        LayerSpec::Gru(RecurrentConfig {
            use_bias: false,
            ..RecurrentConfig::new(4)
        }),
        &[4],
    );
    assert_params(&g, &[("l.weight_ih_l0", &[12, 3]), ("l.weight_hh_l0", &[12, 4])]);
}

#[test]
fn lstm_forget_bias_starts_at_one() {
    let g = build(
        &one_layer(&[5, 3], "lstm", LayerSpec::Lstm(RecurrentConfig::new(2))),
        &device(),
    );
    assert_eq!(
        param(&g, "lstm.bias_ih_l0"),
        vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(param(&g, "lstm.bias_hh_l0"), vec![0.0; 8]);
}

fn rnn_weights(graph: &Graph, node: &str, suffix: &str) -> [Vec<f32>; 4] {
    ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|p| param(graph, &format!("{node}.{p}{suffix}")))
}

#[test]
fn recurrent_cells_match_the_pytorch_equations() {
    let device = device();
    let (t, f, h) = (4, 3, 3);
    for cell in [CellKind::Simple, CellKind::Lstm, CellKind::Gru] {
        let cfg = RecurrentConfig {
            return_sequences: true,
            return_state: true,
            ..RecurrentConfig::new(h)
        };
        let mut spec = one_layer(&[t, f], "rnn", cell.spec(cfg));
        let n_states = if cell == CellKind::Lstm { 2 } else { 1 };
        spec.outputs = (0..=n_states).map(|i| format!("rnn:{i}")).collect();
        let graph = randomize(build(&spec, &device));
        let x = random_batch(2, &[t, f], &device);
        let xv = data_values(&x);
        let out = run(&graph, vec![x]);
        let p = rnn_weights(&graph, "rnn", "_l0");
        let (mut seq, mut hs, mut cs) = (vec![], vec![], vec![]);
        for n in 0..2 {
            let (o, hn, cn) = direct_rnn(cell, &xv[n * t * f..(n + 1) * t * f], f, h, &p, false);
            seq.extend(o.into_iter().flatten());
            hs.extend(hn);
            cs.extend(cn);
        }
        let what = format!("{cell:?}");
        assert_close(
            &data_values(&out[0].data),
            &to_f32(&seq),
            1e-4,
            &format!("{what} sequence"),
        );
        assert_close(&data_values(&out[1].data), &to_f32(&hs), 1e-4, &format!("{what} h"));
        if cell == CellKind::Lstm {
            assert_close(&data_values(&out[2].data), &to_f32(&cs), 1e-4, "Lstm c");
        }
        // without return_sequences the output is the last h
        let cfg = RecurrentConfig {
            return_state: true,
            ..RecurrentConfig::new(h)
        };
        let mut spec = one_layer(&[t, f], "rnn", cell.spec(cfg));
        spec.outputs = vec!["rnn:0".into(), "rnn:1".into()];
        let graph2 = copy_params(&graph, build(&spec, &device));
        let x = random_batch(2, &[t, f], &device);
        let out = run(&graph2, vec![x]);
        assert_eq!(out[0].data.dims(), vec![2, h]);
        assert_eq!(
            data_values(&out[0].data),
            data_values(&out[1].data),
            "{what}: last output = h"
        );
    }
}

#[test]
fn stacked_recurrent_feeds_layer_outputs_upward() {
    let device = device();
    let (t, f, h) = (4, 3, 3);
    let cfg = RecurrentConfig {
        num_layers: 2,
        return_sequences: true,
        ..RecurrentConfig::new(h)
    };
    let graph = randomize(build(&one_layer(&[t, f], "gru", LayerSpec::Gru(cfg)), &device));
    let x = random_batch(1, &[t, f], &device);
    let xv = data_values(&x);
    let y = data_values(&run(&graph, vec![x])[0].data);
    let (l0, ..) = direct_rnn(CellKind::Gru, &xv, f, h, &rnn_weights(&graph, "gru", "_l0"), false);
    let l0: Vec<f32> = to_f32(&l0.into_iter().flatten().collect::<Vec<_>>());
    let (l1, ..) = direct_rnn(CellKind::Gru, &l0, h, h, &rnn_weights(&graph, "gru", "_l1"), false);
    assert_close(
        &y,
        &to_f32(&l1.into_iter().flatten().collect::<Vec<_>>()),
        1e-4,
        "two layers",
    );
}

#[test]
fn recurrent_initial_states_come_from_extra_inputs() {
    let device = device();
    let (t, f, h) = (4, 3, 3);
    let spec = ModelSpec::graph()
        .input("x", vec![t, f])
        .input("h0", vec![h])
        .input("c0", vec![h])
        .node(
            "lstm",
            LayerSpec::Lstm(RecurrentConfig {
                return_state: true,
                ..RecurrentConfig::new(h)
            }),
            &["x", "h0", "c0"],
        )
        .output("lstm:1")
        .output("lstm:2");
    let graph = randomize(build(&spec, &device));
    let x = random_batch(1, &[t, f], &device);
    let (h0, c0) = (random_batch(1, &[h], &device), random_batch(1, &[h], &device));
    let widen = |d: &Data| data_values(d).iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (_, hn, cn) = direct_rnn_from(
        CellKind::Lstm,
        &data_values(&x),
        f,
        &rnn_weights(&graph, "lstm", "_l0"),
        false,
        widen(&h0),
        widen(&c0),
    );
    let out = run(&graph, vec![x, h0, c0]);
    assert_close(&data_values(&out[0].data), &to_f32(&hn), 1e-4, "h from h0, c0");
    assert_close(&data_values(&out[1].data), &to_f32(&cn), 1e-4, "c from h0, c0");
    // the wrong number of initial states is a shape error
    let bad = ModelSpec::graph()
        .input("x", vec![t, f])
        .input("h0", vec![h])
        .node("lstm", LayerSpec::Lstm(RecurrentConfig::new(h)), &["x", "h0"])
        .output("lstm");
    assert_mentions(&build_error(&bad), &["layer 'lstm'", "2 initial state(s)"]);
}

fn bidirectional(cell: LayerSpec, merge: MergeMode) -> LayerSpec {
    LayerSpec::Bidirectional(BidirectionalConfig {
        layer: Box::new(cell),
        merge,
    })
}

#[test]
fn bidirectional_params_and_every_merge_mode() {
    let device = device();
    let (t, f, h) = (5, 3, 4);
    // names: `_reverse` for the backward direction; twice the unidirectional count
    let g = check_shape(
        &[t, f],
        bidirectional(LayerSpec::Lstm(RecurrentConfig::new(h)), MergeMode::Concat),
        &[2 * h],
    );
    assert_rnn_params(&g, rnn_params("l", 4, h, f, 1, 2));
    assert_eq!(count(&g), 2 * (4 * h * (f + h) + 8 * h));
    let stacked = RecurrentConfig {
        num_layers: 2,
        ..RecurrentConfig::new(h)
    };
    let g = check_shape(
        &[t, f],
        bidirectional(LayerSpec::Gru(stacked), MergeMode::Concat),
        &[2 * h],
    );
    assert_rnn_params(&g, rnn_params("l", 3, h, f, 2, 2));
    for merge in [MergeMode::Sum, MergeMode::Mul, MergeMode::Ave] {
        check_shape(
            &[t, f],
            bidirectional(LayerSpec::SimpleRnn(RecurrentConfig::new(h)), merge),
            &[h],
        );
    }

    // values: every merge mode combines the two halves of the concat output
    let cfg = RecurrentConfig {
        return_sequences: true,
        return_state: true,
        ..RecurrentConfig::new(h)
    };
    let spec = |merge| {
        let mut s = one_layer(&[t, f], "bi", bidirectional(LayerSpec::Lstm(cfg.clone()), merge));
        s.outputs = (0..5).map(|i| format!("bi:{i}")).collect();
        s
    };
    let concat = randomize(build(&spec(MergeMode::Concat), &device));
    assert_eq!(
        concat.output_shapes(),
        vec![vec![t, 2 * h], vec![h], vec![h], vec![h], vec![h]]
    );
    let x = random_batch(2, &[t, f], &device);
    let xv = data_values(&x);
    let out = run(&concat, vec![x.clone()]);
    let both = data_values(&out[0].data);
    // against the direct forward and reversed runs
    let (pf, pb) = (
        rnn_weights(&concat, "bi", "_l0"),
        rnn_weights(&concat, "bi", "_l0_reverse"),
    );
    let (mut want, mut states) = (vec![], vec![vec![]; 4]);
    for n in 0..2 {
        let xs = &xv[n * t * f..(n + 1) * t * f];
        let (of, hf, cf) = direct_rnn(CellKind::Lstm, xs, f, h, &pf, false);
        let (ob, hb, cb) = direct_rnn(CellKind::Lstm, xs, f, h, &pb, true);
        for s in 0..t {
            want.extend(of[s].iter().chain(&ob[s]));
        }
        for (k, v) in [hf, cf, hb, cb].into_iter().enumerate() {
            states[k].extend(v);
        }
    }
    assert_close(&both, &to_f32(&want), 1e-4, "concat sequence");
    for k in 0..4 {
        assert_close(
            &data_values(&out[1 + k].data),
            &to_f32(&states[k]),
            1e-4,
            &format!("state {k} (h_f, c_f, h_b, c_b)"),
        );
    }
    let fwd: Vec<f32> = both.chunks(h).step_by(2).flatten().copied().collect();
    let bwd: Vec<f32> = both.chunks(h).skip(1).step_by(2).flatten().copied().collect();
    let combos: [(MergeMode, BinOp); 3] = [
        (MergeMode::Sum, |a, b| a + b),
        (MergeMode::Mul, |a, b| a * b),
        (MergeMode::Ave, |a, b| (a + b) / 2.0),
    ];
    for (merge, op) in combos {
        let graph = copy_params(&concat, build(&spec(merge), &device));
        let y = data_values(&run(&graph, vec![x.clone()])[0].data);
        let want: Vec<f32> = fwd.iter().zip(&bwd).map(|(&a, &b)| op(a, b)).collect();
        assert_close(&y, &want, 1e-5, &format!("{merge:?}"));
    }
    // without return_sequences: the final states of both directions
    let last_spec = one_layer(
        &[t, f],
        "bi",
        bidirectional(LayerSpec::Lstm(RecurrentConfig::new(h)), MergeMode::Concat),
    );
    let last = copy_params(&concat, build(&last_spec, &device));
    let y = data_values(&run(&last, vec![x])[0].data);
    let want: Vec<f64> = (0..2)
        .flat_map(|n| {
            states[0][n * h..(n + 1) * h]
                .iter()
                .chain(&states[2][n * h..(n + 1) * h])
                .copied()
        })
        .collect();
    assert_close(&y, &to_f32(&want), 1e-4, "concat of final states");
}

/// `ids → embedding(padding 0) → layer`, with all of the layer's outputs as model outputs.
fn padded_model(t: usize, layer: LayerSpec) -> ModelSpec {
    let emb = EmbeddingConfig {
        padding_idx: Some(0),
        ..embedding(12, 5)
    };
    let mut spec = ModelSpec::sequential(vec![t])
        .add_named("emb", LayerSpec::Embedding(emb))
        .add_named("rnn", layer);
    let probe = build(&spec, &Device::default());
    spec.outputs = (0..probe.nodes[1].outputs.len()).map(|i| format!("rnn:{i}")).collect();
    spec
}

#[test]
fn right_padding_does_not_change_the_final_state() {
    let device = device();
    let states = RecurrentConfig {
        return_state: true,
        ..RecurrentConfig::new(4)
    };
    let layers = [
        LayerSpec::SimpleRnn(states.clone()),
        LayerSpec::Lstm(states.clone()),
        LayerSpec::Gru(states.clone()),
        LayerSpec::Lstm(RecurrentConfig {
            num_layers: 2,
            ..states.clone()
        }),
        bidirectional(LayerSpec::Lstm(states.clone()), MergeMode::Concat),
        bidirectional(
            LayerSpec::Gru(RecurrentConfig {
                return_sequences: true,
                ..states.clone()
            }),
            MergeMode::Concat,
        ),
    ];
    for layer in layers {
        let what = format!("{layer:?}");
        let padded = randomize(build(&padded_model(6, layer.clone()), &device));
        let short = copy_params(&padded, build(&padded_model(3, layer.clone()), &device));
        // two batches: the padded sequences, and the same sequences unpadded
        let a = run(&padded, vec![ids(&[&[3, 5, 2, 0, 0, 0], &[7, 1, 4, 0, 0, 0]], &device)]);
        let b = run(&short, vec![ids(&[&[3, 5, 2], &[7, 1, 4]], &device)]);
        assert_eq!(a.len(), b.len());
        for (k, (va, vb)) in a.iter().zip(&b).enumerate() {
            let (ya, yb) = (data_values(&va.data), data_values(&vb.data));
            if va.data.rank() == 3 {
                // sequences: the real steps agree, padded steps output zeros
                let w = va.data.dims()[2];
                for n in 0..2 {
                    assert_close(
                        &ya[n * 6 * w..(n * 6 + 3) * w],
                        &yb[n * 3 * w..(n + 1) * 3 * w],
                        1e-5,
                        &format!("{what} output {k}"),
                    );
                    assert!(
                        ya[(n * 6 + 3) * w..(n + 1) * 6 * w].iter().all(|&v| v == 0.0),
                        "{what}: padded steps are zero"
                    );
                }
                assert!(va.mask.is_some(), "{what}: sequence outputs keep the mask");
            } else {
                assert_close(&ya, &yb, 1e-5, &format!("{what} output {k}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Time distributed
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn time_distributed_applies_the_layer_to_every_step() {
    let device = device();
    let td = |layer| LayerSpec::TimeDistributed(TimeDistributedConfig { layer: Box::new(layer) });
    let g = randomize(check_shape(&[5, 4], td(LayerSpec::Dense(DenseConfig::new(3))), &[5, 3]));
    assert_params(&g, &[("l.weight", &[3, 4]), ("l.bias", &[3])]);
    let x = random_batch(2, &[5, 4], &device);
    let (xv, w, b) = (data_values(&x), param(&g, "l.weight"), param(&g, "l.bias"));
    let y = data_values(&run(&g, vec![x])[0].data);
    let want: Vec<f64> = (0..10)
        .flat_map(|s| {
            let (xv, w, b) = (&xv, &w, &b);
            (0..3).map(move |o| b[o] as f64 + (0..4).map(|k| xv[s * 4 + k] as f64 * w[o * 4 + k] as f64).sum::<f64>())
        })
        .collect();
    assert_close(&y, &to_f32(&want), 1e-5, "per-step dense");
    // around a conv1d: [T, L, C] → [T, L', F]
    let g = randomize(check_shape(
        &[4, 6, 2],
        td(LayerSpec::Conv1d(ConvConfig::new(3, 3))),
        &[4, 4, 3],
    ));
    assert_params(&g, &[("l.weight", &[3, 2, 3]), ("l.bias", &[3])]);
    let x = random_batch(1, &[4, 6, 2], &device);
    let xv = data_values(&x);
    let y = data_values(&run(&g, vec![x])[0].data);
    let geom = Geom {
        kernel: [1, 3],
        stride: [1, 1],
        dilation: [1, 1],
        pad: [0, 0],
        out: [1, 4],
    };
    let want_cf = direct_conv2d(
        &steps_to_cf(&xv, 4, 6, 2),
        [4, 2, 1, 6],
        &param(&g, "l.weight"),
        &param(&g, "l.bias"),
        3,
        1,
        &geom,
    );
    assert_close(&y, &cf_to_steps(&want_cf, 4, 4, 3), 1e-4, "per-step conv1d");
}

// ---------------------------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------------------------

fn mha(heads: usize) -> MultiHeadAttentionConfig {
    MultiHeadAttentionConfig {
        num_heads: heads,
        dropout: 0.0,
        use_bias: true,
        causal: false,
    }
}

#[test]
fn multi_head_attention_shapes_and_pytorch_params() {
    let device = device();
    let e = 8;
    let g = check_shape(&[6, e], LayerSpec::MultiHeadAttention(mha(2)), &[6, e]);
    assert_params(
        &g,
        &[
            ("l.in_proj_weight", &[3 * e, e]),
            ("l.in_proj_bias", &[3 * e]),
            ("l.out_proj.weight", &[e, e]),
            ("l.out_proj.bias", &[e]),
        ],
    );
    assert_eq!(count(&g), 4 * e * e + 4 * e);
    let g = check_shape(
        &[6, e],
        LayerSpec::MultiHeadAttention(MultiHeadAttentionConfig {
            use_bias: false,
            ..mha(4)
        }),
        &[6, e],
    );
    assert_params(&g, &[("l.in_proj_weight", &[3 * e, e]), ("l.out_proj.weight", &[e, e])]);
    // cross attention: query [4, E], key/value [6, E] → [4, E]; and separate key and value
    let spec = ModelSpec::graph()
        .input("q", vec![4, e])
        .input("kv", vec![6, e])
        .input("v", vec![6, e])
        .node("cross", LayerSpec::MultiHeadAttention(mha(2)), &["q", "kv"])
        .node("qkv", LayerSpec::MultiHeadAttention(mha(2)), &["q", "kv", "v"])
        .output("cross")
        .output("qkv");
    let g = build(&spec, &device);
    assert_eq!(g.output_shapes(), vec![vec![4, e], vec![4, e]]);
    let inputs = vec![
        random_batch(2, &[4, e], &device),
        random_batch(2, &[6, e], &device),
        random_batch(2, &[6, e], &device),
    ];
    for out in run(&g, inputs) {
        assert_eq!(out.data.dims(), vec![2, 4, e]);
    }
}

#[test]
fn multi_head_attention_matches_direct_attention() {
    let device = device();
    let (tq, tk, e, heads) = (3, 4, 4, 2);
    let spec = ModelSpec::graph()
        .input("q", vec![tq, e])
        .input("kv", vec![tk, e])
        .node("mha", LayerSpec::MultiHeadAttention(mha(heads)), &["q", "kv"])
        .output("mha");
    let graph = randomize(build(&spec, &device));
    let (q, kv) = (random_batch(2, &[tq, e], &device), random_batch(2, &[tk, e], &device));
    let (qv, kvv) = (data_values(&q), data_values(&kv));
    let y = data_values(&run(&graph, vec![q, kv])[0].data);
    let p = |n: &str| param(&graph, &format!("mha.{n}"));
    let want: Vec<f32> = (0..2)
        .flat_map(|n| {
            direct_mha(
                &qv[n * tq * e..(n + 1) * tq * e],
                &kvv[n * tk * e..(n + 1) * tk * e],
                e,
                heads,
                &p("in_proj_weight"),
                &p("in_proj_bias"),
                &p("out_proj.weight"),
                &p("out_proj.bias"),
            )
        })
        .collect();
    assert_close(&y, &want, 1e-4, "attention");
}

/// `q [4, 8]`, `kv_ids [6]`, `noise [6, 8]`: key = embedding(kv_ids, padding 0) + noise carries the padding mask
/// while its padded steps hold arbitrary values.
fn masked_attention_model() -> ModelSpec {
    let emb = EmbeddingConfig {
        padding_idx: Some(0),
        ..embedding(10, 8)
    };
    let enc = TransformerEncoderConfig {
        num_heads: 2,
        ff_dim: 16,
        dropout: 0.1,
        activation: Activation::Relu,
        norm_first: false,
        epsilon: 1e-5,
    };
    ModelSpec::graph()
        .input("q", vec![4, 8])
        .input("kv_ids", vec![6])
        .input("noise", vec![6, 8])
        .node("emb", LayerSpec::Embedding(emb), &["kv_ids"])
        .node("key", LayerSpec::Add(NoOptions {}), &["emb", "noise"])
        .node("cross", LayerSpec::MultiHeadAttention(mha(2)), &["q", "key"])
        .node("self", LayerSpec::MultiHeadAttention(mha(2)), &["key"])
        .node("enc", LayerSpec::TransformerEncoder(enc), &["key"])
        .output("cross")
        .output("self")
        .output("enc")
}

#[test]
fn padded_keys_do_not_change_attention_outputs() {
    let device = device();
    let graph = randomize(build(&masked_attention_model(), &device));
    let rows: [&[usize]; 2] = [&[3, 1, 4, 0, 0, 0], &[5, 9, 2, 6, 0, 0]];
    let q = random_batch(2, &[4, 8], &device);
    let noise = data_values(&random_batch(2, &[6, 8], &device));
    let other = data_values(&random_batch(2, &[6, 8], &device));
    let pad = |n: usize, t: usize| rows[n][t] == 0;
    // the same noise at real steps, other values at padded steps
    let changed: Vec<f32> = (0..noise.len())
        .map(|i| if pad(i / 48, (i / 8) % 6) { other[i] } else { noise[i] })
        .collect();
    let forward = |noise: Vec<f32>| {
        run(
            &graph,
            vec![q.clone(), ids(&rows, &device), data(&[2, 6, 8], noise, &device)],
        )
    };
    let (a, b) = (forward(noise.clone()), forward(changed));
    assert!(a[0].data.dims() == vec![2, 4, 8] && a[2].data.dims() == vec![2, 6, 8]);
    assert_close(
        &data_values(&a[0].data),
        &data_values(&b[0].data),
        1e-5,
        "cross attention",
    );
    // self attention and the encoder: outputs at real query steps
    for k in [1, 2] {
        let (ya, yb) = (data_values(&a[k].data), data_values(&b[k].data));
        for n in 0..2 {
            for t in (0..6).filter(|&t| !pad(n, t)) {
                let r = (n * 6 + t) * 8..(n * 6 + t + 1) * 8;
                assert_close(
                    &ya[r.clone()],
                    &yb[r],
                    1e-5,
                    &format!("output {k}, sample {n}, step {t}"),
                );
            }
        }
        assert!(a[k].mask.is_some(), "output {k} keeps the padding mask");
    }
    // sanity: a change at a real step does change the output
    let mut real = noise.clone();
    real[0] += 1.0;
    let c = forward(real);
    assert_ne!(data_values(&a[0].data), data_values(&c[0].data));
}

#[test]
fn causal_attention_ignores_later_steps() {
    let device = device();
    let causal = MultiHeadAttentionConfig { causal: true, ..mha(2) };
    let graph = randomize(build(
        &one_layer(&[5, 8], "att", LayerSpec::MultiHeadAttention(causal)),
        &device,
    ));
    let x = data_values(&random_batch(1, &[5, 8], &device));
    let mut later = x.clone();
    for v in &mut later[4 * 8..] {
        *v += 3.0;
    }
    let a = data_values(&run(&graph, vec![data(&[1, 5, 8], x, &device)])[0].data);
    let b = data_values(&run(&graph, vec![data(&[1, 5, 8], later, &device)])[0].data);
    assert_close(&a[..32], &b[..32], 1e-5, "steps 0..4 do not see step 4");
    assert_ne!(&a[32..], &b[32..]);
}

#[test]
fn transformer_encoder_shapes_pytorch_params_and_final_norm() {
    let device = device();
    let (e, ff) = (8, 16);
    let cfg = TransformerEncoderConfig {
        num_heads: 2,
        ff_dim: ff,
        dropout: 0.1,
        activation: Activation::Relu,
        norm_first: false,
        epsilon: 1e-5,
    };
    let g = check_shape(&[6, e], LayerSpec::TransformerEncoder(cfg.clone()), &[6, e]);
    assert_params(
        &g,
        &[
            ("l.self_attn.in_proj_weight", &[3 * e, e]),
            ("l.self_attn.in_proj_bias", &[3 * e]),
            ("l.self_attn.out_proj.weight", &[e, e]),
            ("l.self_attn.out_proj.bias", &[e]),
            ("l.linear1.weight", &[ff, e]),
            ("l.linear1.bias", &[ff]),
            ("l.linear2.weight", &[e, ff]),
            ("l.linear2.bias", &[e]),
            ("l.norm1.weight", &[e]),
            ("l.norm1.bias", &[e]),
            ("l.norm2.weight", &[e]),
            ("l.norm2.bias", &[e]),
        ],
    );
    assert_eq!(count(&g), (4 * e * e + 4 * e) + (e * ff + ff) + (ff * e + e) + 4 * e);
    // post-norm: every output row is layer-normalized (weight 1, bias 0); eval is deterministic despite dropout
    let x = random_batch(2, &[6, e], &device);
    let y = data_values(&run(&g, vec![x.clone()])[0].data);
    assert_eq!(y, data_values(&run(&g, vec![x])[0].data));
    let rows: Vec<Vec<usize>> = (0..12).map(|r| (r * e..(r + 1) * e).collect()).collect();
    assert_normalized(&y, &rows, "post-norm output");
    check_shape(
        &[6, e],
        LayerSpec::TransformerEncoder(TransformerEncoderConfig {
            norm_first: true,
            ..cfg
        }),
        &[6, e],
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Merges
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn add_multiply_and_concatenate() {
    let device = device();
    let (a, b) = (random_batch(2, &[3, 4], &device), random_batch(2, &[3, 4], &device));
    let (av, bv) = (data_values(&a), data_values(&b));
    let ops: [(LayerSpec, BinOp); 2] = [
        (LayerSpec::Add(NoOptions {}), |x, y| x + y),
        (LayerSpec::Multiply(NoOptions {}), |x, y| x * y),
    ];
    for (layer, op) in ops {
        let g = build(&two_inputs(layer.clone(), &[3, 4], &[3, 4]), &device);
        assert_eq!(g.output_shapes(), vec![vec![3, 4]]);
        assert_params(&g, &[]);
        let y = run(&g, vec![a.clone(), b.clone()]).remove(0).data;
        assert_eq!(y.dims(), vec![2, 3, 4]);
        assert_eq!(
            data_values(&y),
            av.iter().zip(&bv).map(|(&x, &y)| op(x, y)).collect::<Vec<_>>(),
            "{layer:?}"
        );
    }
    // three inputs
    let spec = ModelSpec::graph()
        .input("a", vec![4])
        .input("b", vec![4])
        .input("c", vec![4])
        .node("sum", LayerSpec::Add(NoOptions {}), &["a", "b", "c"])
        .output("sum");
    let g = build(&spec, &device);
    let ones = || data(&[1, 4], vec![1.0; 4], &device);
    assert_eq!(
        data_values(&run(&g, vec![ones(), ones(), ones()])[0].data),
        vec![3.0; 4]
    );

    // concatenate along the last axis: [3, 4] + [3, 2] → [3, 6]
    let g = build(
        &two_inputs(LayerSpec::Concatenate(ConcatenateConfig { axis: -1 }), &[3, 4], &[3, 2]),
        &device,
    );
    assert_eq!(g.output_shapes(), vec![vec![3, 6]]);
    let c = random_batch(2, &[3, 2], &device);
    let cv = data_values(&c);
    let y = run(&g, vec![a.clone(), c]).remove(0).data;
    assert_eq!(y.dims(), vec![2, 3, 6]);
    let want: Vec<f32> = (0..6)
        .flat_map(|r| av[r * 4..r * 4 + 4].iter().chain(&cv[r * 2..r * 2 + 2]).copied())
        .collect();
    assert_eq!(data_values(&y), want);
    // images along channels (axis 0): [2, 4, 4] + [3, 4, 4] → [5, 4, 4]
    let g = build(
        &two_inputs(
            LayerSpec::Concatenate(ConcatenateConfig { axis: 0 }),
            &[2, 4, 4],
            &[3, 4, 4],
        ),
        &device,
    );
    assert_eq!(g.output_shapes(), vec![vec![5, 4, 4]]);
    let (p, q) = (
        random_batch(2, &[2, 4, 4], &device),
        random_batch(2, &[3, 4, 4], &device),
    );
    let (pv, qv) = (data_values(&p), data_values(&q));
    let y = run(&g, vec![p, q]).remove(0).data;
    assert_eq!(y.dims(), vec![2, 5, 4, 4]);
    let want: Vec<f32> = (0..2)
        .flat_map(|n| {
            pv[n * 32..(n + 1) * 32]
                .iter()
                .chain(&qv[n * 48..(n + 1) * 48])
                .copied()
        })
        .collect();
    assert_eq!(data_values(&y), want);
}

// ---------------------------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------------------------

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

fn activation_formula(a: Activation) -> fn(f64) -> f64 {
    match a {
        Activation::Relu => |x| x.max(0.0),
        Activation::Relu6 => |x| x.clamp(0.0, 6.0),
        Activation::Hardswish => |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Activation::Silu => |x| x * sigmoid(x),
        Activation::LeakyRelu => |x| if x < 0.0 { 0.01 * x } else { x },
        Activation::Elu => |x| if x < 0.0 { x.exp() - 1.0 } else { x },
        Activation::Selu => |x| SELU_SCALE * if x < 0.0 { SELU_ALPHA * (x.exp() - 1.0) } else { x },
        Activation::Gelu => |x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt())),
        Activation::Mish => |x| x * (1.0 + x.exp()).ln().tanh(),
        Activation::Tanh => |x| x.tanh(),
        Activation::Sigmoid => sigmoid,
        Activation::Linear => |x| x,
        Activation::Softmax => unreachable!("not element-wise"),
    }
}

/// Softmax of a `[2, 4]` sample over per-sample axis `axis`.
fn softmax_ref(x: &[f32], axis: usize) -> Vec<f32> {
    let idx = |i: usize, j: usize| i * 4 + j;
    let mut out = vec![0f32; 8];
    let lines: Vec<Vec<usize>> = if axis == 1 {
        (0..2).map(|i| (0..4).map(|j| idx(i, j)).collect()).collect()
    } else {
        (0..4).map(|j| vec![idx(0, j), idx(1, j)]).collect()
    };
    for line in lines {
        let z: f64 = line.iter().map(|&k| (x[k] as f64).exp()).sum();
        for &k in &line {
            out[k] = ((x[k] as f64).exp() / z) as f32;
        }
    }
    out
}

#[test]
fn activation_layers_match_their_formulas() {
    let device = device();
    let x: Vec<f32> = vec![-2.0, -0.5, 0.0, 1.5, 0.3, -1.0, 2.0, 0.1];
    let elementwise = |f: fn(f64) -> f64| x.iter().map(|&v| f(v as f64) as f32).collect::<Vec<f32>>();
    let mut cases: Vec<(LayerSpec, Vec<f32>)> = vec![];
    for a in [
        Activation::Relu,
        Activation::Relu6,
        Activation::Hardswish,
        Activation::Silu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Selu,
        Activation::Gelu,
        Activation::Mish,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Linear,
    ] {
        cases.push((LayerSpec::Activation(a), elementwise(activation_formula(a))));
    }
    cases.push((LayerSpec::Activation(Activation::Softmax), softmax_ref(&x, 1)));
    cases.push((
        LayerSpec::Relu(NoOptions {}),
        elementwise(activation_formula(Activation::Relu)),
    ));
    for (layer, a) in [
        (LayerSpec::Relu6(NoOptions {}), Activation::Relu6),
        (LayerSpec::Hardswish(NoOptions {}), Activation::Hardswish),
        (LayerSpec::Silu(NoOptions {}), Activation::Silu),
    ] {
        cases.push((layer, elementwise(activation_formula(a))));
    }
    cases.push((
        LayerSpec::LeakyRelu(LeakyReluConfig { alpha: 0.2 }),
        elementwise(|v| if v < 0.0 { 0.2 * v } else { v }),
    ));
    cases.push((
        LayerSpec::Elu(EluConfig { alpha: 0.5 }),
        elementwise(|v| if v < 0.0 { 0.5 * (v.exp() - 1.0) } else { v }),
    ));
    cases.push((
        LayerSpec::Selu(NoOptions {}),
        elementwise(activation_formula(Activation::Selu)),
    ));
    cases.push((
        LayerSpec::Gelu(GeluConfig { approximate: false }),
        elementwise(activation_formula(Activation::Gelu)),
    ));
    let gelu_tanh =
        |v: f64| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044_715 * v.powi(3))).tanh());
    cases.push((
        LayerSpec::Gelu(GeluConfig { approximate: true }),
        elementwise(gelu_tanh),
    ));
    cases.push((
        LayerSpec::Mish(NoOptions {}),
        elementwise(activation_formula(Activation::Mish)),
    ));
    cases.push((
        LayerSpec::Tanh(NoOptions {}),
        elementwise(activation_formula(Activation::Tanh)),
    ));
    cases.push((LayerSpec::Sigmoid(NoOptions {}), elementwise(sigmoid)));
    cases.push((LayerSpec::Softmax(SoftmaxConfig { axis: -1 }), softmax_ref(&x, 1)));
    cases.push((LayerSpec::Softmax(SoftmaxConfig { axis: 0 }), softmax_ref(&x, 0)));
    cases.push((LayerSpec::Linear(NoOptions {}), x.clone()));
    for (layer, want) in cases {
        let g = check_shape(&[2, 4], layer.clone(), &[2, 4]);
        assert_params(&g, &[]);
        let y = data_values(&run(&g, vec![data(&[1, 2, 4], x.clone(), &device)])[0].data);
        assert_close(&y, &want, 1e-5, &format!("{layer:?}"));
    }
    // the PyTorch value for GELU at 1.5 (the erf reference above is itself an approximation)
    let g = check_shape(&[2, 4], LayerSpec::Gelu(GeluConfig { approximate: false }), &[2, 4]);
    let y = data_values(&run(&g, vec![data(&[1, 2, 4], x.clone(), &device)])[0].data);
    assert!((y[3] - 1.399_789_5).abs() < 1e-5);
}

#[test]
fn probability_activations_are_left_out_for_logits() {
    let device = device();
    let x: Vec<f32> = vec![-2.0, -0.5, 0.0, 1.5, 0.3, -1.0, 2.0, 0.1];
    for (layer, skipped) in [
        (LayerSpec::Sigmoid(NoOptions {}), true),
        (LayerSpec::Softmax(SoftmaxConfig { axis: -1 }), true),
        (LayerSpec::Activation(Activation::Softmax), true),
        (LayerSpec::Softmax(SoftmaxConfig { axis: 0 }), false),
        (LayerSpec::Tanh(NoOptions {}), false),
    ] {
        let g = build(&one_layer(&[2, 4], "act", layer.clone()), &device);
        let logits = data_values(
            &g.forward(vec![data(&[1, 2, 4], x.clone(), &device)], false, true)
                .unwrap()[0]
                .data,
        );
        assert_eq!(logits == x, skipped, "{layer:?}");
        assert_eq!(g.output_probability(0).is_some(), skipped, "{layer:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Every kind: build, run, round-trip
// ---------------------------------------------------------------------------------------------------------------

/// One model per layer kind, with non-default options where the kind has any; `true` when the input is token ids.
fn every_kind() -> Vec<(ModelSpec, bool)> {
    use Initializer::*;
    let seq = |input: &[usize], layer: LayerSpec| (ModelSpec::sequential(input.to_vec()).add(layer), false);
    let conv1d = ConvConfig {
        padding: Padding::Named("same".into()),
        dilation: Dims::One(2),
        groups: 3,
        activation: Activation::Tanh,
        kernel_initializer: Uniform { min: -0.1, max: 0.1 },
        l2: 1e-4,
        ..ConvConfig::new(6, 3)
    };
    let conv2d = ConvConfig {
        kernel: Dims::Each(vec![3, 1]),
        stride: Dims::Each(vec![2, 1]),
        padding: Padding::Explicit(Dims::One(1)),
        use_bias: false,
        max_norm: Some(3.0),
        kernel_initializer: HeNormal,
        ..ConvConfig::new(4, 1)
    };
    let same_pool = PoolConfig {
        size: Dims::One(2),
        stride: Some(Dims::One(1)),
        padding: Padding::Named("same".into()),
    };
    let rect_pool = PoolConfig {
        size: Dims::Each(vec![3, 3]),
        stride: Some(Dims::Each(vec![1, 2])),
        padding: Padding::Named("same".into()),
    };
    let recurrent = |units| RecurrentConfig {
        kernel_initializer: LecunUniform,
        ..RecurrentConfig::new(units)
    };
    vec![
        seq(
            &[4],
            LayerSpec::Dense(DenseConfig {
                activation: Activation::Relu,
                kernel_initializer: GlorotNormal,
                bias_initializer: Constant(0.1),
                l2: 0.01,
                max_norm: Some(2.0),
                ..DenseConfig::new(3)
            }),
        ),
        seq(&[6, 3], LayerSpec::Conv1d(conv1d)),
        seq(&[3, 8, 8], LayerSpec::Conv2d(conv2d)),
        seq(
            &[3, 5, 5],
            LayerSpec::ConvTranspose2d(
                super::conv_transpose::ConvTransposeConfig::new(4, 4)
                    .with_stride(2)
                    .with_padding(1)
                    .with_output_padding(1)
                    .with_activation(Activation::Relu),
            ),
        ),
        seq(
            &[2, 3, 4],
            LayerSpec::Upsampling2d(super::upsampling::UpsamplingConfig {
                align_corners: true,
                ..super::upsampling::UpsamplingConfig::new(
                    Dims::Each(vec![2, 3]),
                    super::upsampling::Interpolation::Bilinear,
                )
            }),
        ),
        seq(
            &[5, 3],
            LayerSpec::Upsampling1d(super::upsampling::UpsamplingConfig::default()),
        ),
        seq(
            &[7, 6],
            LayerSpec::ConvTranspose1d(super::conv_transpose::ConvTransposeConfig {
                groups: 2,
                dilation: Dims::One(2),
                l2: 1e-4,
                ..super::conv_transpose::ConvTransposeConfig::new(4, 3)
            }),
        ),
        seq(&[8, 3], LayerSpec::MaxPool1d(same_pool.clone())),
        seq(&[3, 8, 8], LayerSpec::MaxPool2d(PoolConfig::new(2))),
        seq(&[8, 3], LayerSpec::AvgPool1d(same_pool.into())),
        seq(
            &[3, 8, 8],
            LayerSpec::AvgPool2d(AvgPoolConfig {
                count_include_pad: false,
                ..rect_pool.into()
            }),
        ),
        seq(&[6, 3], LayerSpec::GlobalAvgPool1d(NoOptions {})),
        seq(&[6, 3], LayerSpec::GlobalMaxPool1d(NoOptions {})),
        seq(&[3, 4, 4], LayerSpec::GlobalAvgPool2d(NoOptions {})),
        seq(
            &[3, 5, 4],
            LayerSpec::AdaptiveAvgPool2d(super::pool::AdaptivePoolConfig {
                size: super::conv::Dims::Each(vec![2, 3]),
            }),
        ),
        seq(
            &[7, 3],
            LayerSpec::AdaptiveAvgPool1d(super::pool::AdaptivePoolConfig {
                size: super::conv::Dims::One(3),
            }),
        ),
        seq(&[3, 4, 4], LayerSpec::GlobalMaxPool2d(NoOptions {})),
        seq(&[3, 4, 4], LayerSpec::Flatten(NoOptions {})),
        seq(&[12, 4], LayerSpec::Reshape(ReshapeConfig { shape: vec![-1, 6] })),
        seq(&[5, 3], LayerSpec::Permute(PermuteConfig { dims: vec![1, 0] })),
        seq(&[5, 4], LayerSpec::Dropout(DropoutConfig { rate: 0.25 })),
        seq(
            &[3, 4, 4],
            LayerSpec::BatchNorm(BatchNormConfig {
                momentum: 0.01,
                epsilon: 1e-3,
            }),
        ),
        seq(&[5, 8], LayerSpec::LayerNorm(LayerNormConfig { epsilon: 1e-6 })),
        seq(
            &[4, 3, 3],
            LayerSpec::GroupNorm(GroupNormConfig {
                groups: 2,
                epsilon: 1e-4,
            }),
        ),
        seq(
            &[3, 4, 4],
            LayerSpec::InstanceNorm(InstanceNormConfig {
                epsilon: 1e-5,
                affine: true,
            }),
        ),
        (
            ModelSpec::sequential(vec![6]).add(LayerSpec::Embedding(EmbeddingConfig {
                padding_idx: Some(0),
                initializer: Normal { mean: 0.0, std: 0.1 },
                pretrained: None,
                trainable: true,
                ..embedding(10, 4)
            })),
            true,
        ),
        seq(
            &[6, 4],
            LayerSpec::PositionalEmbedding(PositionalEmbeddingConfig {
                max_len: 10,
                kind: "sinusoidal".into(),
            }),
        ),
        seq(
            &[7, 3],
            LayerSpec::SimpleRnn(RecurrentConfig {
                activation: Activation::Relu,
                return_sequences: true,
                ..recurrent(5)
            }),
        ),
        seq(
            &[7, 3],
            LayerSpec::Lstm(RecurrentConfig {
                return_state: true,
                num_layers: 2,
                dropout: 0.1,
                unit_forget_bias: false,
                ..recurrent(4)
            }),
        ),
        seq(
            &[7, 3],
            LayerSpec::Gru(RecurrentConfig {
                use_bias: false,
                recurrent_initializer: GlorotNormal,
                ..recurrent(4)
            }),
        ),
        seq(&[7, 3], bidirectional(LayerSpec::Lstm(recurrent(4)), MergeMode::Ave)),
        seq(
            &[5, 4],
            LayerSpec::TimeDistributed(TimeDistributedConfig {
                layer: Box::new(LayerSpec::Dense(
                    DenseConfig::new(3).with_activation(Activation::Softmax),
                )),
            }),
        ),
        seq(
            &[6, 8],
            LayerSpec::MultiHeadAttention(MultiHeadAttentionConfig {
                num_heads: 2,
                dropout: 0.1,
                use_bias: false,
                causal: true,
            }),
        ),
        seq(
            &[6, 8],
            LayerSpec::TransformerEncoder(TransformerEncoderConfig {
                num_heads: 2,
                ff_dim: 16,
                dropout: 0.0,
                activation: Activation::Gelu,
                norm_first: true,
                epsilon: 1e-6,
            }),
        ),
        (
            ModelSpec::sequential(vec![6]).add(LayerSpec::Bert(super::bert::BertLayerConfig {
                pretrained: None,
                config: Some(
                    serde_json::from_str(
                        r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
                            "intermediate_size": 12, "max_position_embeddings": 16}"#,
                    )
                    .unwrap(),
                ),
                pooling: Some("cls+mean".into()),
                normalize: Some(true),
            })),
            true,
        ),
        (two_inputs(LayerSpec::Add(NoOptions {}), &[3, 4], &[3, 4]), false),
        (two_inputs(LayerSpec::Multiply(NoOptions {}), &[4], &[4]), false),
        (two_inputs(LayerSpec::Sampling(NoOptions {}), &[4], &[4]), false),
        (
            two_inputs(
                LayerSpec::Concatenate(ConcatenateConfig { axis: 0 }),
                &[2, 4, 4],
                &[3, 4, 4],
            ),
            false,
        ),
        seq(&[2, 4], LayerSpec::Activation(Activation::Gelu)),
        seq(&[2, 4], LayerSpec::Relu(NoOptions {})),
        seq(&[2, 4], LayerSpec::Relu6(NoOptions {})),
        seq(&[2, 4], LayerSpec::Hardswish(NoOptions {})),
        seq(&[2, 4], LayerSpec::Silu(NoOptions {})),
        seq(&[2, 4], LayerSpec::LeakyRelu(LeakyReluConfig { alpha: 0.2 })),
        seq(&[2, 4], LayerSpec::Elu(EluConfig { alpha: 0.5 })),
        seq(&[2, 4], LayerSpec::Selu(NoOptions {})),
        seq(&[2, 4], LayerSpec::Gelu(GeluConfig { approximate: true })),
        seq(&[2, 4], LayerSpec::Mish(NoOptions {})),
        seq(&[2, 4], LayerSpec::Tanh(NoOptions {})),
        seq(&[2, 4], LayerSpec::Sigmoid(NoOptions {})),
        seq(&[2, 4], LayerSpec::Softmax(SoftmaxConfig { axis: 0 })),
        seq(&[2, 4], LayerSpec::Linear(NoOptions {})),
        seq(
            &[2, 6],
            LayerSpec::Slice(super::reshape::SliceConfig {
                start: 1,
                end: 4,
                axis: -1,
            }),
        ),
    ]
}

#[test]
fn slice_keeps_a_range_of_one_axis() {
    let device = device();
    let graph = build(
        &one_layer(
            &[2, 6],
            "s",
            LayerSpec::Slice(super::reshape::SliceConfig {
                start: 1,
                end: 4,
                axis: -1,
            }),
        ),
        &device,
    );
    assert_eq!(graph.output_shapes(), vec![vec![2, 3]]);
    let x = Tensor::<3>::from_floats(
        [[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]]],
        &device,
    );
    let out = run(&graph, vec![Data::D3(x)]).remove(0).data.d3().unwrap();
    assert_eq!(
        out.into_data().try_to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 3.0, 7.0, 8.0, 9.0]
    );
    let bad = one_layer(
        &[2, 6],
        "s",
        LayerSpec::Slice(super::reshape::SliceConfig {
            start: 4,
            end: 9,
            axis: -1,
        }),
    );
    let e = Graph::build(&bad, &device).unwrap_err().to_string();
    assert!(e.contains("layer 's'") && e.contains("4..9"), "{e}");
}

fn round_trip(spec: &ModelSpec) -> ModelSpec {
    let text = toml::to_string(&spec.to_toml().unwrap()).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    ModelSpec::from_toml(&value, "model").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn every_layer_kind_builds_runs_and_round_trips_through_toml() {
    let device = device();
    let specs = every_kind();
    let covered: BTreeSet<&str> = specs
        .iter()
        .flat_map(|(s, _)| s.nodes.iter())
        .filter_map(|n| match &n.op {
            crate::model::spec::NodeOp::Layer(l) => Some(l.kind()),
            _ => None,
        })
        .collect();
    assert_eq!(
        covered,
        LAYER_KINDS.iter().copied().collect::<BTreeSet<_>>(),
        "every kind is exercised"
    );
    for (spec, token_ids) in &specs {
        let what = format!("{:?}", spec.nodes[0].op);
        assert_eq!(&round_trip(spec), spec, "{what}");
        let graph = build(spec, &device);
        let inputs: Vec<Data> = spec
            .inputs
            .iter()
            .map(|i| {
                if *token_ids {
                    let row: Vec<usize> = (0..i.shape[0]).map(|t| (t * 7 + 3) % 10).collect();
                    ids(&[&row, &row], &device)
                } else {
                    random_batch(2, &i.shape, &device)
                }
            })
            .collect();
        for training in [false, true] {
            let out = graph
                .forward(inputs.clone(), training, false)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            for (v, shape) in out.iter().zip(graph.output_shapes()) {
                assert_eq!(v.data.dims(), [&[2], shape.as_slice()].concat(), "{what}");
                assert!(
                    data_values(&v.data).iter().all(|x| x.is_finite()),
                    "{what}: non-finite output"
                );
            }
        }
    }
}

#[test]
fn multi_input_graph_round_trips_through_toml() {
    let spec = ModelSpec::sequential(vec![6])
        .add_named("emb", LayerSpec::Embedding(embedding(10, 4)))
        .add_named(
            "lstm",
            LayerSpec::Lstm(RecurrentConfig {
                return_state: true,
                ..RecurrentConfig::new(3)
            }),
        )
        .output("lstm:1")
        .shared_node("again", "emb", &["input"]);
    assert_eq!(round_trip(&spec), spec);
    // inputs keep their order: `Graph::forward` takes the batches in this order
    let spec = masked_attention_model();
    assert_eq!(round_trip(&spec).inputs, spec.inputs);
    assert_eq!(round_trip(&spec), spec);
}

// ---------------------------------------------------------------------------------------------------------------
// Short training runs
// ---------------------------------------------------------------------------------------------------------------

enum Target {
    /// Values `[B, n]` for the MSE.
    Values(Vec<f32>, usize),
    /// Class indices for the cross-entropy.
    Classes(Vec<usize>, usize),
}

/// `steps` Adam steps (lr 1e-2) on one fixed batch; the first and last losses.
fn train(spec: &ModelSpec, inputs: impl Fn(&Device) -> Vec<Data>, target: Target, steps: usize) -> (f32, f32, Graph) {
    let device = device().autodiff();
    let mut graph = build(spec, &device);
    let inputs = inputs(&device);
    let mut optim = AdamConfig::new().init();
    let (mut first, mut last) = (None, f32::NAN);
    for _ in 0..steps {
        let out = graph
            .forward(inputs.clone(), true, true)
            .unwrap()
            .remove(0)
            .data
            .d2()
            .unwrap();
        let [b, n] = out.dims();
        let loss = match &target {
            Target::Values(v, width) => {
                let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [b, *width]), &device);
                (out - t).powi_scalar(2).mean()
            }
            Target::Classes(classes, c) => {
                assert_eq!(*c, n);
                let onehot: Vec<f32> = classes
                    .iter()
                    .flat_map(|&k| (0..n).map(move |j| if j == k { 1.0 } else { 0.0 }))
                    .collect();
                let t = Tensor::<2>::from_data(TensorData::new(onehot, [b, n]), &device);
                (log_softmax(out, 1) * t).sum_dim(1).mean().neg()
            }
        };
        let value = loss.clone().into_scalar::<f32>();
        first.get_or_insert(value);
        last = value;
        let grads = GradientsParams::from_grads(loss.backward(), &graph);
        graph = optim.step(1e-2, graph, grads);
    }
    (first.unwrap(), last, graph)
}

fn assert_learns((first, last, _): (f32, f32, Graph), what: &str) {
    eprintln!("{what}: loss {first} → {last}");
    assert!(last.is_finite() && last < 0.5 * first, "{what}: loss {first} → {last}");
}

fn token_rows(b: usize, t: usize, vocab: usize) -> Vec<Vec<usize>> {
    (0..b)
        .map(|n| (0..t).map(|s| 1 + (n * 5 + s * 3 + n * s) % (vocab - 1)).collect())
        .collect()
}

fn token_batch(rows: &[Vec<usize>], device: &Device) -> Data {
    let refs: Vec<&[usize]> = rows.iter().map(|r| r.as_slice()).collect();
    ids(&refs, device)
}

#[test]
fn training_lowers_the_loss_dense() {
    let spec = ModelSpec::sequential(vec![4])
        .add(LayerSpec::Dense(DenseConfig::new(16).with_activation(Activation::Relu)))
        .add(LayerSpec::Dense(DenseConfig::new(1)));
    let xv = data_values(&random_batch(16, &[4], &device()));
    let y: Vec<f32> = xv.chunks(4).map(|r| r[0] - 2.0 * r[1] + 0.5 * r[2] + r[3]).collect();
    let result = train(&spec, |d| vec![data(&[16, 4], xv.clone(), d)], Target::Values(y, 1), 30);
    assert_learns(result, "dense");
}

#[test]
fn training_lowers_the_loss_conv2d() {
    let spec = ModelSpec::sequential(vec![1, 8, 8])
        .add(LayerSpec::Conv2d(
            ConvConfig::new(4, 3).with_activation(Activation::Relu),
        ))
        .add(LayerSpec::MaxPool2d(PoolConfig::new(2)))
        .add(LayerSpec::Flatten(NoOptions {}))
        .add(LayerSpec::Dense(DenseConfig::new(3)));
    let xv = data_values(&random_batch(8, &[1, 8, 8], &device()));
    let classes: Vec<usize> = (0..8).map(|i| i % 3).collect();
    let result = train(
        &spec,
        |d| vec![data(&[8, 1, 8, 8], xv.clone(), d)],
        Target::Classes(classes, 3),
        30,
    );
    assert_learns(result, "conv2d");
}

fn token_model(layers: Vec<LayerSpec>, classes: usize) -> ModelSpec {
    let emb = EmbeddingConfig {
        padding_idx: Some(0),
        ..embedding(12, 8)
    };
    let mut spec = ModelSpec::sequential(vec![6]).add(LayerSpec::Embedding(emb));
    for l in layers {
        spec = spec.add(l);
    }
    spec.add(LayerSpec::Dense(DenseConfig::new(classes)))
}

#[test]
fn training_lowers_the_loss_lstm() {
    let spec = token_model(vec![LayerSpec::Lstm(RecurrentConfig::new(8))], 3);
    let rows = token_rows(8, 6, 12);
    let classes: Vec<usize> = (0..8).map(|i| i % 3).collect();
    let result = train(&spec, |d| vec![token_batch(&rows, d)], Target::Classes(classes, 3), 30);
    assert_learns(result, "embedding + lstm");
}

#[test]
fn training_lowers_the_loss_bidirectional_gru() {
    let spec = token_model(
        vec![bidirectional(
            LayerSpec::Gru(RecurrentConfig::new(8)),
            MergeMode::Concat,
        )],
        3,
    );
    let mut rows = token_rows(8, 6, 12);
    for r in rows.iter_mut().step_by(2) {
        r[4] = 0;
        r[5] = 0;
    }
    let classes: Vec<usize> = (0..8).map(|i| (i / 2) % 3).collect();
    let result = train(&spec, |d| vec![token_batch(&rows, d)], Target::Classes(classes, 3), 30);
    assert_learns(result, "embedding + bidirectional gru");
}

#[test]
fn training_lowers_the_loss_transformer() {
    let enc = TransformerEncoderConfig {
        num_heads: 2,
        ff_dim: 16,
        dropout: 0.0,
        activation: Activation::Relu,
        norm_first: false,
        epsilon: 1e-5,
    };
    let pos = PositionalEmbeddingConfig {
        max_len: 6,
        kind: "sinusoidal".into(),
    };
    let emb = EmbeddingConfig {
        padding_idx: Some(0),
        ..embedding(12, 8)
    };
    let spec = ModelSpec::sequential(vec![6])
        .add(LayerSpec::Embedding(emb))
        .add_named("pos", LayerSpec::PositionalEmbedding(pos))
        .add(LayerSpec::TransformerEncoder(enc))
        .add(LayerSpec::GlobalAvgPool1d(NoOptions {}))
        .add(LayerSpec::Dense(DenseConfig::new(3)));
    let rows = token_rows(8, 6, 12);
    let classes: Vec<usize> = (0..8).map(|i| i % 3).collect();
    let (first, last, graph) = train(&spec, |d| vec![token_batch(&rows, d)], Target::Classes(classes, 3), 30);
    let fixed = build(&spec, &Device::default());
    assert_eq!(
        param(&graph, "pos.weight"),
        param(&fixed, "pos.weight"),
        "sinusoidal table is not trained"
    );
    assert_learns((first, last, graph), "embedding + transformer + global pool");
}

#[test]
fn training_lowers_the_loss_with_batch_and_layer_norm() {
    let spec = ModelSpec::sequential(vec![4])
        .add(LayerSpec::Dense(DenseConfig::new(16)))
        .add(LayerSpec::BatchNorm(BatchNormConfig {
            momentum: 0.1,
            epsilon: 1e-5,
        }))
        .add(LayerSpec::Relu(NoOptions {}))
        .add(LayerSpec::Dense(DenseConfig::new(16)))
        .add(LayerSpec::LayerNorm(LayerNormConfig { epsilon: 1e-5 }))
        .add(LayerSpec::Relu(NoOptions {}))
        .add(LayerSpec::Dense(DenseConfig::new(1)));
    let xv = data_values(&random_batch(16, &[4], &device()));
    let y: Vec<f32> = xv.chunks(4).map(|r| r[0] * r[1] + r[2] - r[3]).collect();
    let result = train(&spec, |d| vec![data(&[16, 4], xv.clone(), d)], Target::Values(y, 1), 30);
    assert_learns(result, "batch norm + layer norm MLP");
}

// ---------------------------------------------------------------------------------------------------------------
// Shape errors
// ---------------------------------------------------------------------------------------------------------------

fn build_error(spec: &ModelSpec) -> String {
    match Graph::build(spec, &Device::default()) {
        Ok(_) => panic!("expected a build error for {spec:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` does not mention `{p}`");
    }
}

#[test]
fn shape_errors_name_the_layer_and_the_shapes() {
    // kernel larger than the input
    let e = build_error(&one_layer(&[1, 3, 3], "conv", LayerSpec::Conv2d(ConvConfig::new(4, 5))));
    assert_mentions(&e, &["layer 'conv'", "[1, 3, 3]", "spans 5"]);
    // conv2d on an input of the wrong rank, directly and after a dense layer
    let e = build_error(&one_layer(&[16], "conv", LayerSpec::Conv2d(ConvConfig::new(4, 3))));
    assert_mentions(&e, &["layer 'conv'", "[16]", "[channels, height, width]"]);
    let spec = ModelSpec::sequential(vec![4])
        .add_named("fc", LayerSpec::Dense(DenseConfig::new(8)))
        .add_named("conv", LayerSpec::Conv2d(ConvConfig::new(4, 3)));
    assert_mentions(&build_error(&spec), &["layer 'conv'", "'fc' [8]"]);
    // concatenate of mismatched shapes
    let e = build_error(&two_inputs(
        LayerSpec::Concatenate(ConcatenateConfig { axis: -1 }),
        &[3, 4],
        &[2, 4],
    ));
    assert_mentions(&e, &["layer 'm'", "[3, 4]", "[2, 4]", "'a'", "'b'"]);
    let e = build_error(&two_inputs(LayerSpec::Add(NoOptions {}), &[3], &[4]));
    assert_mentions(&e, &["layer 'm'", "[3]", "[4]"]);
    // group norm groups not dividing the channels
    let e = build_error(&one_layer(
        &[4, 5, 5],
        "gn",
        LayerSpec::GroupNorm(GroupNormConfig {
            groups: 3,
            epsilon: 1e-5,
        }),
    ));
    assert_mentions(&e, &["layer 'gn'", "groups = 3", "4 channels", "[4, 5, 5]"]);
    // conv groups not dividing the channels
    let e = build_error(&one_layer(
        &[3, 8, 8],
        "conv",
        LayerSpec::Conv2d(ConvConfig {
            groups: 2,
            ..ConvConfig::new(4, 3)
        }),
    ));
    assert_mentions(&e, &["layer 'conv'", "groups = 2", "[3, 8, 8]"]);
    // more: each names its layer and its input shape
    let cases: Vec<(&[usize], LayerSpec, &str)> = vec![
        (&[3, 3], LayerSpec::MaxPool1d(PoolConfig::new(5)), "spans 5"),
        (&[4], LayerSpec::Dense(DenseConfig::new(0)), "units"),
        (&[3, 8, 8], LayerSpec::Conv2d(ConvConfig::new(4, 0)), "at least 1"),
        (&[3, 8, 8], LayerSpec::MaxPool2d(PoolConfig::new(0)), "at least 1"),
        (
            &[6, 8],
            LayerSpec::Lstm(RecurrentConfig {
                num_layers: 0,
                ..RecurrentConfig::new(4)
            }),
            "num_layers",
        ),
        (
            &[6, 8],
            LayerSpec::TransformerEncoder(TransformerEncoderConfig {
                num_heads: 2,
                ff_dim: 0,
                dropout: 0.0,
                activation: Activation::Relu,
                norm_first: false,
                epsilon: 1e-5,
            }),
            "ff_dim",
        ),
        (
            &[5],
            LayerSpec::Embedding(EmbeddingConfig {
                padding_idx: Some(10),
                ..embedding(10, 4)
            }),
            "padding_idx 10",
        ),
        (
            &[6, 3],
            LayerSpec::Conv1d(ConvConfig::new(4, 3).with_padding("full")),
            "unknown value 'full'",
        ),
        (&[2, 3, 3], LayerSpec::MaxPool2d(PoolConfig::new(5)), "spans 5"),
        (
            &[5],
            LayerSpec::Reshape(ReshapeConfig { shape: vec![2, -1] }),
            "cannot reshape",
        ),
        (
            &[5, 3],
            LayerSpec::Permute(PermuteConfig { dims: vec![0, 0] }),
            "not a permutation",
        ),
        (&[4, 3], LayerSpec::Embedding(embedding(10, 4)), "embedding expects"),
        (
            &[8],
            LayerSpec::Lstm(RecurrentConfig::new(4)),
            "recurrent layers expects",
        ),
        (&[6, 8], LayerSpec::MultiHeadAttention(mha(3)), "num_heads = 3"),
        (
            &[6, 8],
            LayerSpec::PositionalEmbedding(PositionalEmbeddingConfig {
                max_len: 4,
                kind: "learned".into(),
            }),
            "max_len = 4",
        ),
        (
            &[6, 3],
            bidirectional(LayerSpec::Dense(DenseConfig::new(2)), MergeMode::Concat),
            "found dense",
        ),
        (
            &[4],
            LayerSpec::TimeDistributed(TimeDistributedConfig {
                layer: Box::new(LayerSpec::Dense(DenseConfig::new(2))),
            }),
            "[steps, ...]",
        ),
        (&[2, 4], LayerSpec::Softmax(SoftmaxConfig { axis: 3 }), "axis 3"),
        (&[4], LayerSpec::Dropout(DropoutConfig { rate: 1.0 }), "rate"),
        (
            &[4],
            LayerSpec::InstanceNorm(InstanceNormConfig {
                epsilon: 1e-5,
                affine: false,
            }),
            "instance norm",
        ),
    ];
    for (input, layer, part) in cases {
        let e = build_error(&one_layer(input, "x", layer));
        assert_mentions(&e, &["layer 'x'", &format!("{input:?}"), part]);
    }
}

#[test]
fn pooling_on_an_input_of_the_wrong_rank_is_an_error_not_a_panic() {
    for (input, layer) in [
        (vec![3, 3], LayerSpec::MaxPool2d(PoolConfig::new(2))),
        (vec![5], LayerSpec::AvgPool2d(AvgPoolConfig::new(2))),
        (vec![5], LayerSpec::MaxPool1d(PoolConfig::new(2))),
    ] {
        let spec = one_layer(&input, "pool", layer);
        let result = std::panic::catch_unwind(|| Graph::build(&spec, &Device::default()).map(|_| ()));
        let e = result
            .unwrap_or_else(|_| panic!("building {spec:?} panicked"))
            .unwrap_err()
            .to_string();
        assert_mentions(&e, &["layer 'pool'", &format!("{input:?}"), "pooling expects"]);
    }
}
