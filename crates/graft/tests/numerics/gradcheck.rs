//! Gradient check by finite differences in float64, for every layer's backward, independent of PyTorch.
//!
//! Each case builds a one-node graph (`ModelSpec::graph()`: named inputs → the layer → one or more outputs), sets
//! every parameter to fixed random values, and compares the autodiff gradient of `f = Σₖ sum(outputₖ · probeₖ)` (a
//! fixed random probe per output) with respect to every float input and every trainable parameter against the
//! central difference `(f(θ + h·e) − f(θ − h·e)) / 2h`, `h` = [`STEP`], evaluated by the same layer code in float64
//! without autodiff. The forward pass runs in training mode only for batch norm's train-mode cases.
//!
//! **How float64 is reached.** burn 0.22.1's `flex` backend computes in float64 (`Flex::dtype_usage`, burn-flex
//! `src/backend.rs`, gives `F64` storage and arithmetic, and autodiff follows the dtype of its tensors), but the
//! dtype a float tensor is created in is a device setting, `Device::configure(FloatDType::F64)` (burn-tensor
//! `src/device.rs`), kept in a process-wide registry (burn-backend `src/backend/device.rs`: `REGISTRY`, one entry
//! per device id, set once), and flex has a single device (`FlexDevice::to_id` is always `(0, 0)`). Casting only
//! the parameters (a `ModuleMapper` with `tensor.cast(FloatDType::F64)`) and the inputs is not enough: graft's layers
//! create some tensors in the default dtype (the zero initial state in `layers/recurrent.rs`, padding masks made
//! float with `.float()` in `layers/recurrent.rs` and `layers/pool.rs`), and flex panics on an f32/f64 mix
//! (burn-flex `src/tensor.rs`, `storage: dtype mismatch (expected F32, got F64)`). Configuring the device in the
//! shared test process would turn every other test to float64. So each `#[test]` here re-runs this test binary on
//! the ignored test [`child`] with the case name in `GRAFT_GRADCHECK_CASE`: that process configures float64 before
//! it creates any tensor, runs the one case, and checks that the objective, parameters and gradients are `F64`.
//!
//! **Tolerance.** Error = |autodiff − finite difference| / max(|autodiff|, |finite difference|, 1): relative for
//! gradients above 1, absolute below (where the difference quotient's absolute noise dominates). With h = 1e-6 that
//! noise is rounding, about ε·|f|/h ≈ 1e-10 to 2e-9 (the truncation h²·|f'''|/6 is about 1e-12); measured: at most
//! 1.8e-9 over every case but attention. Attention measures up to 1e-8, and that is burn's: the backward of
//! `div_scalar` takes `1.0 / rhs` in float32 (burn-autodiff 0.22.1 `src/ops/tensor.rs:508`), and attention divides
//! its scores by √d_head (see the two strict cases). [`TOLERANCE`] = 1e-6 is 500× the noise and 100× burn's error,
//! and still thousands of times below what a real mistake in a backward (a missing term, a detached path, a wrong
//! factor or sign) gives on these shapes.
//!
//! **Strict cases** use the five-point difference with h = 1e-3 (truncation O(h⁴) and rounding both about 1e-12;
//! run on every case below, this mode measures at most 1.1e-10 outside attention) and a tolerance of 1e-10.
//!
//! **Inputs.** Points where a layer is not differentiable are avoided by construction: activations see inputs at
//! least 0.1 away from 0, max pools see inputs that are all distinct by at least 0.1 (no ties within a step).
//! Tensors with more than [`ENTRIES`] entries are checked on that many deterministically chosen entries plus
//! [`DIRECTIONS`] random directional derivatives over the whole tensor. Every layer kind has a case
//! ([`every_layer_kind_has_a_case`]); dropout only at inference, since its training masks are random.
//!
//! `cargo test --release -p graft --lib gradcheck -- --nocapture` prints the measured maximum errors of every case.

use std::process::Command;

use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Bool, DType, FloatDType, TensorData};
use serde::Deserialize;

use graft::layers::value::{Data, Value};
use graft::layers::{Ctx, LayerSpec};
use graft::model::graph::{Graph, Source};
use graft::model::params::{ParamMapper, ParamPath, ParamVisitor, map_params, visit_params};
use graft::model::spec::ModelSpec;

/// Finite-difference step.
const STEP: f64 = 1e-6;
/// The largest error allowed (see the module documentation).
const TOLERANCE: f64 = 1e-6;
/// The step of the strict cases (five-point differences).
const STRICT_STEP: f64 = 1e-3;
/// The tolerance of the strict cases.
const STRICT_TOLERANCE: f64 = 1e-10;
/// Entries checked one by one per tensor (all of them when there are at most this many).
const ENTRIES: usize = 12;
/// Random directional derivatives per tensor with more than [`ENTRIES`] entries.
const DIRECTIONS: usize = 2;
/// The environment variable naming the case a child process runs.
const CHILD_ENV: &str = "GRAFT_GRADCHECK_CASE";

// ---------------------------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------------------------

/// How an input's values are drawn.
#[derive(Clone, Copy, PartialEq)]
enum Gen {
    /// Uniform in [-1, 1].
    Smooth,
    /// Uniform in ±[0.1, 2.1]: never near a kink at 0.
    AwayFromZero,
    /// A shuffled grid with spacing 0.1: no two values within `h` of each other (max pooling).
    Distinct,
    /// Token ids below the vocabulary size, with id 0 (padding) among them; not differentiable.
    Ids(usize),
}

struct Input {
    name: String,
    /// Per sample.
    shape: Vec<usize>,
    generate: Gen,
    /// Valid steps per sample (right padding) for a sequence padding mask.
    lengths: Option<Vec<usize>>,
}

struct Case {
    layer: LayerSpec,
    inputs: Vec<Input>,
    outputs: Vec<String>,
    batch: usize,
    training: bool,
    step: f64,
    /// The five-point difference `(8(f(+h) − f(−h)) − (f(+2h) − f(−2h))) / 12h` (error O(h⁴)) instead of the
    /// central one (error O(h²)).
    fourth_order: bool,
    tolerance: f64,
    /// The layer draws random numbers: the device is reseeded before every forward pass, so every pass (the
    /// analytic one and each finite difference) draws the same and the layer is a deterministic function.
    fixed_draws: bool,
}

fn layer(src: &str) -> LayerSpec {
    let table: toml::Table = toml::from_str(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    LayerSpec::deserialize(toml::Value::Table(table)).unwrap_or_else(|e| panic!("{src}: {e}"))
}

impl Case {
    /// `x` (shape `shape`, smooth values) → `src` → output, batch 2.
    fn new(src: &str, shape: &[usize]) -> Case {
        Case {
            layer: layer(src),
            inputs: vec![Input {
                name: "x".into(),
                shape: shape.to_vec(),
                generate: Gen::Smooth,
                lengths: None,
            }],
            outputs: vec!["n".into()],
            batch: 2,
            training: false,
            step: STEP,
            fourth_order: false,
            tolerance: TOLERANCE,
            fixed_draws: false,
        }
    }

    /// Several inputs `x0, x1, ...` of the given shapes.
    fn multi(src: &str, shapes: &[&[usize]]) -> Case {
        let mut case = Case::new(src, shapes[0]);
        case.inputs = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Input {
                name: format!("x{i}"),
                shape: s.to_vec(),
                generate: Gen::Smooth,
                lengths: None,
            })
            .collect();
        case
    }

    fn generate(mut self, g: Gen) -> Case {
        for input in &mut self.inputs {
            input.generate = g;
        }
        self
    }

    fn batch(mut self, b: usize) -> Case {
        self.batch = b;
        self
    }

    fn train(mut self) -> Case {
        self.training = true;
        self
    }

    fn fixed_draws(mut self) -> Case {
        self.fixed_draws = true;
        self
    }

    /// A padding mask on input `i`: `lengths[b]` valid steps in sample `b` (the batch becomes `lengths.len()`).
    fn mask(mut self, i: usize, lengths: &[usize]) -> Case {
        self.batch = lengths.len();
        self.inputs[i].lengths = Some(lengths.to_vec());
        self
    }

    /// The strict setting: [`STRICT_STEP`] and [`STRICT_TOLERANCE`].
    fn strict(mut self) -> Case {
        self.step = STRICT_STEP;
        self.fourth_order = true;
        self.tolerance = STRICT_TOLERANCE;
        self
    }

    fn outputs(mut self, outputs: &[&str]) -> Case {
        self.outputs = outputs.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Whether the layer kind owns parameters (so finding none is a failure).
    fn has_params(&self) -> bool {
        matches!(
            self.layer.kind(),
            "dense"
                | "conv1d"
                | "conv2d"
                | "conv_transpose1d"
                | "conv_transpose2d"
                | "batch_norm"
                | "layer_norm"
                | "group_norm"
                | "embedding"
                | "positional_embedding"
                | "simple_rnn"
                | "lstm"
                | "gru"
                | "bidirectional"
                | "time_distributed"
                | "multi_head_attention"
                | "transformer_encoder"
                | "bert"
        )
    }

    fn spec(&self) -> ModelSpec {
        let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        let mut spec = ModelSpec::graph();
        for input in &self.inputs {
            spec = spec.input(&input.name, input.shape.clone());
        }
        spec = spec.node("n", self.layer.clone(), &names);
        for o in &self.outputs {
            spec = spec.output(o);
        }
        spec
    }
}

/// A BERT small enough for finite differences.
const TINY_BERT: &str = "{ vocab_size = 7, hidden_size = 4, num_hidden_layers = 1, num_attention_heads = 2, \
    intermediate_size = 6, max_position_embeddings = 8, type_vocab_size = 2 }";

fn case(name: &str) -> Case {
    let lstm = "lstm = { units = 3";
    match name {
        // dense
        "dense" => Case::new("dense = { units = 3 }", &[4]),
        "dense_tanh_no_bias" => Case::new(
            "dense = { units = 3, activation = \"tanh\", use_bias = false }",
            &[5],
        ),
        "dense_softmax_on_sequences" => Case::new("dense = { units = 4, activation = \"softmax\" }", &[3, 2]),
        // convolutions
        "conv1d" => Case::new("conv1d = { filters = 4, kernel = 3 }", &[7, 3]),
        "conv1d_stride2_same" => Case::new(
            "conv1d = { filters = 2, kernel = 3, stride = 2, padding = \"same\" }",
            &[8, 3],
        ),
        "conv1d_dilated_grouped" => Case::new(
            "conv1d = { filters = 4, kernel = 2, dilation = 2, groups = 2, padding = 1 }",
            &[7, 4],
        ),
        "conv2d" => Case::new("conv2d = { filters = 3, kernel = 3 }", &[2, 5, 5]),
        "conv_transpose2d" => Case::new(
            "conv_transpose2d = { filters = 3, kernel = 3, stride = 2, padding = 1, output_padding = 1 }",
            &[2, 3, 4],
        ),
        "conv_transpose2d_groups_dilation" => Case::new(
            "conv_transpose2d = { filters = 4, kernel = [2, 3], dilation = 2, groups = 2 }",
            &[2, 3, 3],
        ),
        "upsampling2d_nearest" => Case::new("upsampling2d = { size = [2, 3] }", &[2, 3, 2]),
        "upsampling2d_bilinear" => Case::new("upsampling2d = { interpolation = \"bilinear\" }", &[2, 3, 4]),
        "upsampling2d_bilinear_corners" => Case::new(
            "upsampling2d = { size = 3, interpolation = \"bilinear\", align_corners = true }",
            &[1, 3, 3],
        ),
        "upsampling1d_bilinear" => Case::new("upsampling1d = { size = 3, interpolation = \"bilinear\" }", &[4, 2]),
        "conv_transpose1d" => Case::new("conv_transpose1d = { filters = 2, kernel = 3, stride = 2 }", &[4, 3]),
        "conv2d_1x1" => Case::new("conv2d = { filters = 3, kernel = 1, use_bias = false }", &[4, 3, 3]),
        "conv2d_3x1_1x3" => Case::new("conv2d = { filters = 2, kernel = [3, 1], stride = [1, 2] }", &[2, 5, 6]),
        "conv2d_stride2_dilation2" => Case::new(
            "conv2d = { filters = 2, kernel = 3, stride = 2, dilation = 2 }",
            &[2, 7, 8],
        ),
        "conv2d_groups" => Case::new("conv2d = { filters = 6, kernel = 2, groups = 2 }", &[4, 4, 4]),
        "conv2d_depthwise" => Case::new("conv2d = { filters = 3, kernel = [1, 3], groups = 3 }", &[3, 4, 5]),
        "conv2d_same" => Case::new("conv2d = { filters = 2, kernel = 3, padding = \"same\" }", &[2, 4, 5]),
        "conv2d_same_stride2" => Case::new(
            "conv2d = { filters = 2, kernel = [3, 2], stride = 2, padding = \"same\" }",
            &[2, 5, 6],
        ),
        "conv2d_sigmoid" => Case::new(
            "conv2d = { filters = 2, kernel = 2, padding = [1, 0], activation = \"sigmoid\" }",
            &[2, 3, 4],
        ),
        // pools
        "max_pool1d" => Case::new("max_pool1d = { size = 2 }", &[6, 3]).generate(Gen::Distinct),
        "max_pool1d_stride_same" => Case::new(
            "max_pool1d = { size = 3, stride = 2, padding = \"same\" }",
            &[8, 2],
        )
        .generate(Gen::Distinct),
        "avg_pool1d" => Case::new("avg_pool1d = { size = 2 }", &[7, 3]),
        "avg_pool1d_same" => Case::new("avg_pool1d = { size = 3, stride = 1, padding = \"same\" }", &[5, 2]),
        "max_pool2d" => Case::new("max_pool2d = { size = 2 }", &[2, 4, 6]).generate(Gen::Distinct),
        "max_pool2d_stride_same" => Case::new(
            "max_pool2d = { size = 3, stride = 2, padding = \"same\" }",
            &[2, 6, 5],
        )
        .generate(Gen::Distinct),
        "avg_pool2d" => Case::new("avg_pool2d = { size = [2, 3] }", &[2, 4, 6]),
        "avg_pool2d_padded" => Case::new("avg_pool2d = { size = 3, stride = 2, padding = 1 }", &[2, 5, 5]),
        "avg_pool2d_padded_exclude_pad" => Case::new(
            "avg_pool2d = { size = 3, stride = 2, padding = 1, count_include_pad = false }",
            &[2, 5, 5],
        ),
        // global pools
        "global_avg_pool1d" => Case::new("global_avg_pool1d = {}", &[5, 3]),
        "global_max_pool1d" => Case::new("global_max_pool1d = {}", &[5, 3]).generate(Gen::Distinct),
        "global_avg_pool1d_masked" => Case::new("global_avg_pool1d = {}", &[5, 3]).mask(0, &[5, 2, 0]),
        "global_max_pool1d_masked" => Case::new("global_max_pool1d = {}", &[5, 3])
            .generate(Gen::Distinct)
            .mask(0, &[5, 2, 0]),
        "global_avg_pool2d" => Case::new("global_avg_pool2d = {}", &[3, 3, 4]),
        "adaptive_avg_pool2d" => Case::new("adaptive_avg_pool2d = { size = [2, 3] }", &[2, 5, 4]),
        "adaptive_avg_pool1d" => Case::new("adaptive_avg_pool1d = { size = 3 }", &[7, 2]),
        "global_max_pool2d" => Case::new("global_max_pool2d = {}", &[3, 3, 4]).generate(Gen::Distinct),
        // normalization
        "batch_norm_train_vectors" => Case::new("batch_norm = {}", &[4]).batch(5).train(),
        "batch_norm_train_sequences" => Case::new("batch_norm = { epsilon = 1e-3 }", &[4, 3]).batch(3).train(),
        "batch_norm_train_images" => Case::new("batch_norm = {}", &[3, 3, 2]).batch(2).train(),
        "batch_norm_eval" => Case::new("batch_norm = {}", &[3, 2, 2]),
        "layer_norm" => Case::new("layer_norm = {}", &[6]),
        "layer_norm_sequences" => Case::new("layer_norm = { epsilon = 1e-3 }", &[3, 5]),
        "group_norm_images" => Case::new("group_norm = { groups = 2 }", &[4, 3, 2]),
        "group_norm_sequences" => Case::new("group_norm = { groups = 3 }", &[4, 6]),
        "instance_norm_images" => Case::new("instance_norm = {}", &[3, 3, 3]),
        "instance_norm_affine_sequences" => Case::new("instance_norm = { affine = true }", &[5, 3]),
        // embeddings
        "embedding" => Case::new("embedding = { input_dim = 7, output_dim = 3 }", &[6]).generate(Gen::Ids(7)),
        "embedding_padding_idx" => Case::new(
            "embedding = { input_dim = 6, output_dim = 4, padding_idx = 0 }",
            &[7],
        )
        .generate(Gen::Ids(6)),
        "positional_embedding_learned" => Case::new("positional_embedding = { max_len = 6 }", &[4, 3]),
        "positional_embedding_sinusoidal" => Case::new(
            "positional_embedding = { max_len = 5, kind = \"sinusoidal\" }",
            &[5, 4],
        ),
        // recurrent
        "simple_rnn" => Case::new("simple_rnn = { units = 3 }", &[4, 2]),
        "simple_rnn_sequences_sigmoid" => Case::new(
            "simple_rnn = { units = 3, activation = \"sigmoid\", return_sequences = true }",
            &[4, 2],
        ),
        "lstm" => Case::new(&format!("{lstm} }}"), &[4, 2]),
        "lstm_sequences_and_states" => Case::new(
            &format!("{lstm}, return_sequences = true, return_state = true }}"),
            &[4, 2],
        )
        .outputs(&["n", "n:1", "n:2"]),
        "lstm_stacked_no_bias" => Case::new(
            &format!("{lstm}, num_layers = 2, use_bias = false, return_sequences = true }}"),
            &[3, 2],
        ),
        "lstm_initial_states" => Case::multi(&format!("{lstm}, return_state = true }}"), &[&[4, 2], &[3], &[3]])
            .outputs(&["n", "n:1", "n:2"]),
        "lstm_masked" => Case::new(&format!("{lstm}, return_sequences = true }}"), &[4, 2]).mask(0, &[4, 2, 1]),
        "gru" => Case::new("gru = { units = 3 }", &[4, 2]),
        "gru_sequences_and_state" => Case::new(
            "gru = { units = 2, return_sequences = true, return_state = true }",
            &[5, 3],
        )
        .outputs(&["n", "n:1"]),
        "gru_initial_state_masked" => Case::multi("gru = { units = 3 }", &[&[4, 2], &[3]]).mask(0, &[3, 4]),
        "bidirectional_lstm" => Case::new(
            "bidirectional = { layer = { lstm = { units = 2, return_sequences = true } } }",
            &[4, 3],
        ),
        "bidirectional_lstm_masked_stacked" => Case::new(
            "bidirectional = { layer = { lstm = { units = 2, num_layers = 2 } } }",
            &[4, 2],
        )
        .mask(0, &[4, 1]),
        "bidirectional_gru_sum_states" => Case::new(
            "bidirectional = { layer = { gru = { units = 3, return_state = true } }, merge = \"sum\" }",
            &[3, 2],
        )
        .outputs(&["n", "n:1", "n:2"]),
        "bidirectional_gru_masked_sequences" => Case::new(
            "bidirectional = { layer = { gru = { units = 2, return_sequences = true } } }",
            &[5, 2],
        )
        .mask(0, &[5, 3, 1]),
        "bidirectional_simple_rnn_ave" => Case::new(
            "bidirectional = { layer = { simple_rnn = { units = 3, return_sequences = true } }, merge = \"ave\" }",
            &[3, 2],
        ),
        "bidirectional_simple_rnn_mul_masked" => Case::new(
            "bidirectional = { layer = { simple_rnn = { units = 2 } }, merge = \"mul\" }",
            &[4, 2],
        )
        .mask(0, &[2, 4]),
        // attention
        "multi_head_attention_self" => Case::new("multi_head_attention = { num_heads = 2 }", &[3, 4]),
        "multi_head_attention_query_key_value" => Case::multi(
            "multi_head_attention = { num_heads = 2 }",
            &[&[2, 4], &[3, 4], &[3, 4]],
        ),
        "multi_head_attention_key_mask" => {
            Case::new("multi_head_attention = { num_heads = 1 }", &[4, 3]).mask(0, &[4, 2, 0])
        }
        "multi_head_attention_cross_key_mask" => {
            Case::multi("multi_head_attention = { num_heads = 2 }", &[&[2, 4], &[3, 4]]).mask(1, &[3, 1])
        }
        "multi_head_attention_causal_no_bias" => Case::new(
            "multi_head_attention = { num_heads = 2, causal = true, use_bias = false }",
            &[4, 4],
        ),
        // At the strict tolerance: the attention scale 1/√d_head, exact in float32 (d_head = 4) or not (d_head = 2).
        "multi_head_attention_strict_exact_scale" => {
            Case::new("multi_head_attention = { num_heads = 1 }", &[3, 4]).strict()
        }
        "multi_head_attention_strict_inexact_scale" => {
            Case::new("multi_head_attention = { num_heads = 2 }", &[3, 4]).strict()
        }
        "transformer_encoder" => Case::new(
            "transformer_encoder = { num_heads = 2, ff_dim = 6, dropout = 0.0 }",
            &[3, 4],
        ),
        "transformer_encoder_norm_first_gelu_masked" => Case::new(
            "transformer_encoder = { num_heads = 2, ff_dim = 5, dropout = 0.0, norm_first = true, activation = \"gelu\" }",
            &[4, 4],
        )
        .mask(0, &[4, 2]),
        // A one-block BERT on ids; 0 is [PAD], so the second sample's padded tail is left out of attention and
        // pooling.
        "bert_mean_pooled" => Case::new(&format!("bert = {{ config = {TINY_BERT}, pooling = \"mean\" }}"), &[4])
            .generate(Gen::Ids(7)),
        "bert_cls_normalized" => Case::new(
            &format!("bert = {{ config = {TINY_BERT}, pooling = \"cls\", normalize = true }}"),
            &[4],
        )
        .generate(Gen::Ids(7)),
        "bert_sequence" => Case::new(&format!("bert = {{ config = {TINY_BERT}, pooling = \"none\" }}"), &[4])
            .generate(Gen::Ids(7)),
        // merges
        "add" => Case::multi("add = {}", &[&[3, 2], &[3, 2], &[3, 2]]),
        "multiply" => Case::multi("multiply = {}", &[&[2, 3, 2], &[2, 3, 2]]),
        // The reparameterized draw mean + exp(log_var / 2)·ε, with ε fixed: the gradients a VAE trains by.
        "sampling_train" => Case::multi("sampling = {}", &[&[4], &[4]]).train().fixed_draws(),
        "concatenate_last" => Case::multi("concatenate = {}", &[&[3, 2], &[3, 4]]),
        "concatenate_channels" => Case::multi("concatenate = { axis = 0 }", &[&[1, 2, 2], &[2, 2, 2]]),
        // activations
        "relu" => Case::new("relu = {}", &[3, 4]).generate(Gen::AwayFromZero),
        // Draws in ±[0.1, 2.1] stay off the kinks (0 and 6 for relu6, ±3 for hardswish); the flat parts beyond are
        // checked against PyTorch's gradients in the parity fixtures.
        "relu6" => Case::new("relu6 = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "hardswish" => Case::new("hardswish = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "silu" => Case::new("silu = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "leaky_relu" => Case::new("leaky_relu = { alpha = 0.2 }", &[3, 4]).generate(Gen::AwayFromZero),
        "elu" => Case::new("elu = { alpha = 0.7 }", &[3, 4]).generate(Gen::AwayFromZero),
        "selu" => Case::new("selu = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "gelu" => Case::new("gelu = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "gelu_tanh" => Case::new("gelu = { approximate = true }", &[3, 4]).generate(Gen::AwayFromZero),
        "mish" => Case::new("mish = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "tanh" => Case::new("tanh = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "sigmoid" => Case::new("sigmoid = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "softmax" => Case::new("softmax = {}", &[3, 4]).generate(Gen::AwayFromZero),
        "softmax_axis0" => Case::new("softmax = { axis = 0 }", &[3, 4]).generate(Gen::AwayFromZero),
        "activation_linear" => Case::new("linear = {}", &[5]).generate(Gen::AwayFromZero),
        "activation_by_name" => Case::new("activation = \"elu\"", &[2, 2, 3]).generate(Gen::AwayFromZero),
        // reshaping
        "slice_last_axis" => Case::new("slice = { start = 1, end = 4 }", &[5]),
        "slice_steps" => Case::new("slice = { start = 1, end = 3, axis = 0 }", &[4, 3]),
        "slice_masked_features" => Case::new("slice = { start = 0, end = 2 }", &[4, 3]).mask(0, &[4, 2]),
        "flatten" => Case::new("flatten = {}", &[2, 2, 3]),
        "reshape" => Case::new("reshape = { shape = [3, -1] }", &[2, 3, 2]),
        "permute" => Case::new("permute = { dims = [2, 0, 1] }", &[2, 3, 2]),
        "dropout_inference" => Case::new("dropout = { rate = 0.5 }", &[6]),
        "time_distributed_dense" => Case::new(
            "time_distributed = { layer = { dense = { units = 2, activation = \"tanh\" } } }",
            &[3, 4],
        ),
        "time_distributed_conv1d" => Case::new(
            "time_distributed = { layer = { conv1d = { filters = 2, kernel = 2 } } }",
            &[3, 4, 2],
        ),
        other => panic!("no gradcheck case `{other}`"),
    }
}

/// One `#[test]` per case, each running its case in a float64 child process; `CASES` lists them.
macro_rules! gradcheck_tests {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                run_in_child(stringify!($name));
            }
        )*
        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

#[test]
fn every_layer_kind_has_a_case() {
    let covered: std::collections::BTreeSet<&str> = CASES.iter().map(|name| case(name).layer.kind()).collect();
    let missing: Vec<&&str> = graft::layers::LAYER_KINDS
        .iter()
        .filter(|kind| !covered.contains(**kind))
        .collect();
    assert!(missing.is_empty(), "layer kinds without a gradcheck case: {missing:?}");
}

gradcheck_tests! {
    dense,
    dense_tanh_no_bias,
    dense_softmax_on_sequences,
    conv1d,
    conv1d_stride2_same,
    conv1d_dilated_grouped,
    conv2d,
    conv_transpose2d,
    conv_transpose2d_groups_dilation,
    conv_transpose1d,
    upsampling2d_nearest,
    upsampling2d_bilinear,
    upsampling2d_bilinear_corners,
    upsampling1d_bilinear,
    conv2d_1x1,
    conv2d_3x1_1x3,
    conv2d_stride2_dilation2,
    conv2d_groups,
    conv2d_depthwise,
    conv2d_same,
    conv2d_same_stride2,
    conv2d_sigmoid,
    max_pool1d,
    max_pool1d_stride_same,
    avg_pool1d,
    avg_pool1d_same,
    max_pool2d,
    max_pool2d_stride_same,
    avg_pool2d,
    avg_pool2d_padded,
    avg_pool2d_padded_exclude_pad,
    global_avg_pool1d,
    global_max_pool1d,
    global_avg_pool1d_masked,
    global_max_pool1d_masked,
    global_avg_pool2d,
    adaptive_avg_pool2d,
    adaptive_avg_pool1d,
    global_max_pool2d,
    batch_norm_train_vectors,
    batch_norm_train_sequences,
    batch_norm_train_images,
    batch_norm_eval,
    layer_norm,
    layer_norm_sequences,
    group_norm_images,
    group_norm_sequences,
    instance_norm_images,
    instance_norm_affine_sequences,
    embedding,
    embedding_padding_idx,
    positional_embedding_learned,
    positional_embedding_sinusoidal,
    simple_rnn,
    simple_rnn_sequences_sigmoid,
    lstm,
    lstm_sequences_and_states,
    lstm_stacked_no_bias,
    lstm_initial_states,
    lstm_masked,
    gru,
    gru_sequences_and_state,
    gru_initial_state_masked,
    bidirectional_lstm,
    bidirectional_lstm_masked_stacked,
    bidirectional_gru_sum_states,
    bidirectional_gru_masked_sequences,
    bidirectional_simple_rnn_ave,
    bidirectional_simple_rnn_mul_masked,
    multi_head_attention_self,
    multi_head_attention_query_key_value,
    multi_head_attention_key_mask,
    multi_head_attention_cross_key_mask,
    multi_head_attention_causal_no_bias,
    multi_head_attention_strict_exact_scale,
    // burn-autodiff 0.22.1 (src/ops/tensor.rs:508) differentiates `div_scalar` through an f32 reciprocal, which put
    // this case off by ~1e-8; attention now multiplies by 1/√d_head instead, and the case passes.
    multi_head_attention_strict_inexact_scale,
    transformer_encoder,
    transformer_encoder_norm_first_gelu_masked,
    bert_mean_pooled,
    bert_cls_normalized,
    bert_sequence,
    add,
    multiply,
    sampling_train,
    concatenate_last,
    concatenate_channels,
    relu,
    relu6,
    hardswish,
    silu,
    leaky_relu,
    elu,
    selu,
    gelu,
    gelu_tanh,
    mish,
    tanh,
    sigmoid,
    softmax,
    softmax_axis0,
    activation_linear,
    activation_by_name,
    slice_last_axis,
    slice_steps,
    slice_masked_features,
    flatten,
    reshape,
    permute,
    dropout_inference,
    time_distributed_dense,
    time_distributed_conv1d,
}

// ---------------------------------------------------------------------------------------------------------------
// The float64 child process
// ---------------------------------------------------------------------------------------------------------------

/// Runs `case` in a fresh process of this test binary (see the module documentation) and fails with its output
/// when it fails.
fn run_in_child(case: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([
            "gradcheck::child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, case)
        .output()
        .expect("start the gradcheck child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.starts_with("gradcheck "))
        .collect();
    assert!(
        out.status.success() && !report.is_empty(),
        "gradcheck {case} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in report {
        println!("{line}");
    }
}

/// The body of the child process; a no-op in the shared test process (where `GRAFT_GRADCHECK_CASE` is unset).
#[test]
#[ignore = "run by each gradcheck test in its own float64 process"]
fn child() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut plain = Device::default();
    plain
        .configure(FloatDType::F64)
        .expect("configure float64 before any tensor exists");
    plain.seed(4);
    let result = check(&name, &case(&name));
    eprintln!("gradcheck {name}: {}", result.summary());
    assert!(
        result.problems.is_empty(),
        "gradcheck {name}:\n  {}",
        result.problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------------------------
// The check
// ---------------------------------------------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn new(label: &str) -> Rng {
        // FNV-1a of the label.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in label.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        Rng(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `k` distinct indices below `n` (all of them, in order, when `n <= k`).
    fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        if n <= k {
            return all;
        }
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        let mut chosen = all[..k].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

fn draw(g: Gen, n: usize, rng: &mut Rng) -> Vec<f64> {
    match g {
        Gen::Smooth => (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        Gen::AwayFromZero => (0..n)
            .map(|_| {
                let u = rng.uniform(-2.0, 2.0);
                u.signum() * (0.1 + u.abs())
            })
            .collect(),
        Gen::Distinct => {
            let mut perm: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            perm.iter().map(|&k| 0.1 * (k as f64 - n as f64 / 2.0)).collect()
        }
        Gen::Ids(vocab) => (0..n)
            .map(|i| if i % 3 == 1 { 0.0 } else { rng.below(vocab) as f64 })
            .collect(),
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    let data = t.into_data();
    assert_eq!(data.dtype(), DType::F64, "a tensor is not float64");
    data.try_to_vec::<f64>().expect("float64 values")
}

fn data_host(d: Data) -> Vec<f64> {
    match d {
        Data::D2(t) => host(t),
        Data::D3(t) => host(t),
        Data::D4(t) => host(t),
    }
}

/// A batch `[B, shape...]` from values; `leaf` is the 2-D tensor the gradient is taken of.
fn batch_data(values: &[f64], batch: usize, shape: &[usize], device: &Device, grad: bool) -> (Data, Tensor<2>) {
    let per: usize = shape.iter().product();
    let mut leaf = Tensor::<2>::from_data(TensorData::new(values.to_vec(), [batch, per]), device);
    if grad {
        leaf = leaf.require_grad();
    }
    let dims: Vec<usize> = std::iter::once(batch).chain(shape.iter().copied()).collect();
    let data = Data::D2(leaf.clone()).reshape(&dims).expect("rank 2 to 4");
    (data, leaf)
}

fn mask_tensor(lengths: &[usize], steps: usize, device: &Device) -> Tensor<2, Bool> {
    let padded: Vec<bool> = lengths.iter().flat_map(|&l| (0..steps).map(move |t| t >= l)).collect();
    Tensor::from_data(TensorData::new(padded, [lengths.len(), steps]), device)
}

/// Runs the graph on the given input values. Inputs with a padding mask go straight to the node's layer with
/// their mask (a graph's own inputs carry none); otherwise through `Graph::forward`.
fn forward(graph: &Graph, case: &Case, values: &[Vec<f64>], device: &Device, leaves: &mut Vec<Tensor<2>>) -> Vec<Data> {
    if case.fixed_draws {
        device.seed(9);
    }
    let mut data = vec![];
    for (input, v) in case.inputs.iter().zip(values) {
        let grad = !matches!(input.generate, Gen::Ids(_));
        let (d, leaf) = batch_data(v, case.batch, &input.shape, device, grad && device.is_autodiff());
        data.push(d);
        leaves.push(leaf);
    }
    let masked = case.inputs.iter().any(|i| i.lengths.is_some());
    let outputs: Vec<Value> = if masked {
        let values: Vec<Value> = case
            .inputs
            .iter()
            .zip(data)
            .map(|(input, d)| {
                let mask = input.lengths.as_ref().map(|l| mask_tensor(l, input.shape[0], device));
                Value::with_mask(d, mask)
            })
            .collect();
        let node = &graph.nodes[0];
        assert!(node.sources.iter().enumerate().all(|(i, s)| *s == Source::Input(i)));
        let ctx = Ctx {
            training: case.training,
            ..Ctx::default()
        };
        let out = node
            .layer
            .as_ref()
            .expect("the node's layer")
            .forward(values, &ctx)
            .expect("forward");
        graph
            .outputs
            .iter()
            .map(|s| match s {
                Source::Node(0, k) => out[*k].clone(),
                other => panic!("unexpected output source {other:?}"),
            })
            .collect()
    } else {
        graph.forward(data, case.training, false).expect("forward")
    };
    outputs.into_iter().map(|v| v.data).collect()
}

/// `Σₖ sum(outputₖ · probeₖ)` on the host, in float64.
fn objective(graph: &Graph, case: &Case, values: &[Vec<f64>], probes: &[Vec<f64>], device: &Device) -> f64 {
    let outputs = forward(graph, case, values, device, &mut vec![]);
    outputs
        .into_iter()
        .zip(probes)
        .map(|(o, p)| data_host(o).iter().zip(p).map(|(a, b)| a * b).sum::<f64>())
        .sum()
}

/// Every float parameter (and buffer) of a module: path, id, shape, values, whether it trains.
struct ParamInfo {
    path: String,
    id: ParamId,
    shape: Vec<usize>,
    values: Vec<f64>,
    trains: bool,
}

fn params(graph: &Graph) -> Vec<ParamInfo> {
    struct Visit(Vec<ParamInfo>);
    impl ParamVisitor for Visit {
        fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            let t = param.val();
            self.0.push(ParamInfo {
                path: path.name(),
                id: param.id,
                shape: t.dims().to_vec(),
                trains: t.is_require_grad(),
                values: host(t),
            });
        }
    }
    let mut v = Visit(vec![]);
    visit_params(graph, &mut v);
    v.0
}

/// Replaces the values of parameters: `f(path, id, values)` returns the new values or `None` to keep them.
struct SetValues<F: FnMut(&str, ParamId, Vec<f64>) -> Option<Vec<f64>>>(F);

impl<F: FnMut(&str, ParamId, Vec<f64>) -> Option<Vec<f64>>> ParamMapper for SetValues<F> {
    fn map<const D: usize>(&mut self, path: ParamPath<'_>, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = param.val();
        let dims = current.dims();
        let Some(values) = (self.0)(&path.name(), param.id, host(current)) else {
            return param;
        };
        let device = param.lazy_device();
        let tensor = Tensor::<D>::from_data(TensorData::new(values, dims), &device);
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

fn set_values<M: Module>(module: M, f: impl FnMut(&str, ParamId, Vec<f64>) -> Option<Vec<f64>>) -> M {
    map_params(module, &mut SetValues(f))
}

/// The largest error of one checked tensor.
struct Measured {
    what: String,
    /// Entries checked one by one.
    checked: usize,
    /// Directional derivatives checked.
    directions: usize,
    total: usize,
    max_error: f64,
    max_abs: f64,
}

#[derive(Default)]
struct CaseResult {
    inputs: Vec<Measured>,
    params: Vec<Measured>,
    problems: Vec<String>,
}

impl CaseResult {
    fn summary(&self) -> String {
        let part = |ms: &[Measured]| {
            if ms.is_empty() {
                return "—".to_string();
            }
            let e = ms.iter().map(|m| m.max_error).fold(0.0, f64::max);
            let a = ms.iter().map(|m| m.max_abs).fold(0.0, f64::max);
            let checked: usize = ms.iter().map(|m| m.checked).sum();
            let total: usize = ms.iter().map(|m| m.total).sum();
            format!(
                "max error {e:.1e} (abs {a:.1e}) over {checked} of {total} entries in {} tensors",
                ms.len()
            )
        };
        let mut s = format!("∂inputs {}; ∂params {}", part(&self.inputs), part(&self.params));
        if !self.problems.is_empty() {
            s.push_str(&format!("; {} PROBLEMS", self.problems.len()));
        }
        s
    }
}

fn error(autodiff: f64, numeric: f64) -> f64 {
    let e = (autodiff - numeric).abs() / autodiff.abs().max(numeric.abs()).max(1.0);
    if e.is_finite() { e } else { f64::INFINITY }
}

/// Compares `grad` (autodiff, over all entries of a tensor with values `values`) against central differences of
/// `f`, which evaluates the objective with the tensor replaced by its argument.
fn compare(
    what: &str,
    values: &[f64],
    grad: &[f64],
    (step, fourth_order, tolerance): (f64, bool, f64),
    rng: &mut Rng,
    f: &mut dyn FnMut(&[f64]) -> f64,
    problems: &mut Vec<String>,
) -> Measured {
    let n = values.len();
    let mut m = Measured {
        what: what.to_string(),
        checked: 0,
        directions: 0,
        total: n,
        max_error: 0.0,
        max_abs: 0.0,
    };
    let mut record = |m: &mut Measured, label: String, a: f64, num: f64| {
        let e = error(a, num);
        m.max_abs = m.max_abs.max((a - num).abs());
        m.max_error = m.max_error.max(e);
        if e > tolerance {
            problems.push(format!(
                "{what}{label}: autodiff {a:.12e}, finite difference {num:.12e} (error {e:.1e} > {tolerance:.0e})"
            ));
        }
    };
    // The derivative along `dir` (all of whose entries are at most 1 in size).
    let mut derivative = |dir: &dyn Fn(usize) -> f64| {
        let mut at = |s: f64| {
            let shifted: Vec<f64> = values.iter().enumerate().map(|(i, v)| v + s * dir(i)).collect();
            f(&shifted)
        };
        if fourth_order {
            (8.0 * (at(step) - at(-step)) - (at(2.0 * step) - at(-2.0 * step))) / (12.0 * step)
        } else {
            (at(step) - at(-step)) / (2.0 * step)
        }
    };
    for i in rng.sample(n, ENTRIES) {
        let numeric = derivative(&|j| if j == i { 1.0 } else { 0.0 });
        record(&mut m, format!("[{i}]"), grad[i], numeric);
        m.checked += 1;
    }
    if n > ENTRIES {
        for d in 0..DIRECTIONS {
            let dir: Vec<f64> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let numeric = derivative(&|j| dir[j]);
            let a: f64 = grad.iter().zip(&dir).map(|(g, d)| g * d).sum();
            record(&mut m, format!(" along random direction {d}"), a, numeric);
            m.directions += 1;
        }
    }
    m
}

fn check(name: &str, case: &Case) -> CaseResult {
    let mut result = CaseResult::default();
    let mut rng = Rng::new(name);
    let device = Device::default().autodiff();
    let graph = Graph::build(&case.spec(), &device).unwrap_or_else(|e| panic!("build: {e}"));
    // Random parameters, so no weight sits at a special value (ones, zeros); variances stay positive.
    let graph = set_values(graph, |path, _, values| {
        let (lo, hi) = if path.ends_with("running_var") {
            (0.5, 1.5)
        } else {
            (-0.7, 0.7)
        };
        Some(values.iter().map(|_| rng.uniform(lo, hi)).collect())
    });
    let inputs: Vec<Vec<f64>> = case
        .inputs
        .iter()
        .map(|i| draw(i.generate, case.batch * i.shape.iter().product::<usize>(), &mut rng))
        .collect();

    // Autodiff.
    let mut leaves = vec![];
    let outputs = forward(&graph, case, &inputs, &device, &mut leaves);
    let mut probes = vec![];
    let mut total: Option<Tensor<1>> = None;
    for out in outputs {
        let dims = out.dims();
        let flat = out
            .reshape(&[dims[0], dims[1..].iter().product()])
            .and_then(Data::d2)
            .expect("flatten an output");
        let [b, k] = flat.dims();
        let p: Vec<f64> = (0..b * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let probe = Tensor::<2>::from_data(TensorData::new(p.clone(), [b, k]), &device);
        probes.push(p);
        let term = (flat * probe).sum();
        total = Some(match total {
            None => term,
            Some(t) => t + term,
        });
    }
    let total = total.expect("an output");
    assert_eq!(total.dtype(), DType::F64, "the objective is not float64");
    let grads = total.backward();
    let input_grads: Vec<Option<Vec<f64>>> = leaves
        .iter()
        .zip(&case.inputs)
        .map(|(leaf, input)| match input.generate {
            Gen::Ids(_) => None,
            _ => Some(
                leaf.grad(&grads)
                    .map(host)
                    .unwrap_or_else(|| vec![0.0; leaf.dims().iter().product()]),
            ),
        })
        .collect();
    let grads = GradientsParams::from_grads(grads, &graph);

    // Finite differences, on the same graph without autodiff.
    let plain = Device::default();
    let valid = graph.valid();
    for (k, input) in case.inputs.iter().enumerate() {
        let Some(grad) = &input_grads[k] else { continue };
        let mut f = |shifted: &[f64]| {
            let mut values = inputs.clone();
            values[k] = shifted.to_vec();
            objective(&valid, case, &values, &probes, &plain)
        };
        let m = compare(
            &format!("∂{}", input.name),
            &inputs[k],
            grad,
            (case.step, case.fourth_order, case.tolerance),
            &mut rng,
            &mut f,
            &mut result.problems,
        );
        result.inputs.push(m);
    }
    let infos = params(&graph);
    if infos.is_empty() && case.has_params() {
        result.problems.push("the layer has no parameters".into());
    }
    for info in infos {
        let grad = match info.shape.len() {
            1 => grads.get::<1>(info.id).map(host),
            2 => grads.get::<2>(info.id).map(host),
            3 => grads.get::<3>(info.id).map(host),
            4 => grads.get::<4>(info.id).map(host),
            rank => panic!("{}: a parameter of rank {rank}", info.path),
        };
        let grad = match (grad, info.trains) {
            (Some(g), true) => g,
            (None, false) => continue,
            (Some(_), false) => {
                result
                    .problems
                    .push(format!("{}: a gradient for a frozen tensor", info.path));
                continue;
            }
            // A trainable parameter the objective does not reach (none here) would have an all-zero gradient.
            (None, true) => vec![0.0; info.values.len()],
        };
        let id = info.id;
        let mut f = |shifted: &[f64]| {
            let perturbed = set_values(valid.clone(), |_, pid, _| (pid == id).then(|| shifted.to_vec()));
            objective(&perturbed, case, &inputs, &probes, &plain)
        };
        let m = compare(
            &format!("∂{}", info.path),
            &info.values,
            &grad,
            (case.step, case.fourth_order, case.tolerance),
            &mut rng,
            &mut f,
            &mut result.problems,
        );
        result.params.push(m);
    }
    for m in result.inputs.iter().chain(&result.params) {
        eprintln!(
            "    {}: {} of {} entries + {} directions, max error {:.1e} (abs {:.1e})",
            m.what, m.checked, m.total, m.directions, m.max_error, m.max_abs
        );
    }
    result
}
