//! Numerical parity with PyTorch, as a property of the test suite.
//!
//! `tools/reference/parity.py` (torch 2.15.0, pinned in `tools/reference/requirements.txt`) writes one safetensors
//! fixture per case into `tests/fixtures/parity/`: weights under graft's names, inputs, outputs, a fixed random
//! probe per output and the gradients of `Σₖ sum(outputₖ · probeₖ)` with respect to every float input and every
//! parameter (plus the running statistics after a train-mode batch norm step); loss fixtures hold logits, targets,
//! the value and its gradient; loss-function fixtures (`loss_fn-*`: divergences, metric learning, GANs) name the
//! function and hold its inputs, the value and its gradient w.r.t. every float input; optimizer fixtures hold the
//! parameters after each of 20 steps; gradient-penalty fixtures hold a critic, real and fake batches, the
//! interpolation coefficients, the critic's input gradient, the WGAN-GP penalty and its gradient w.r.t. every
//! parameter (`torch.autograd.grad(create_graph=True)`). The reference is
//! PyTorch evaluated in float64 on float32-representable weights and inputs, so an error here is graft's own.
//!
//! Each test below loads every fixture of one group, builds the graph from the fixture's `spec` on an autodiff
//! device, loads the weights, runs it and compares. Error = |graft − torch| / max(1, |torch|) (absolute, relative for
//! values above 1), at most [`TOLERANCE`] everywhere. `GRAFT_PARITY_REPORT=1` makes the `report` test write the
//! measured maxima to `tests/fixtures/parity/REPORT.md`.

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use serde::Deserialize;

use graft::layers::value::Data;
use graft::model::graph::Graph;
use graft::model::io::{NamedTensor, load_tensors, named_tensors, read_safetensors};
use graft::model::params::{ParamPath, ParamVisitor, visit_params};
use graft::model::spec::ModelSpec;
use graft::task::divergence::{gaussian_kl, gaussian_kl_per_row, kl_div};
use graft::task::gan::{
    critic_loss, discriminator_loss, generator_loss, gradient_penalty_from_grad, wasserstein_generator_loss,
};
use graft::task::loss::{LossSpec, Target};
use graft::task::metric_learning::{ContrastiveSpec, TripletSpec, triplet_margin_loss};
use graft::task::negative_sampling::negative_sampling_loss;
use graft::train::optim::OptimizerSpec;

/// The largest error any compared value may have.
const TOLERANCE: f64 = 1e-5;

/// What kind of fixtures a group holds.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Layer,
    Loss,
    /// A `graft::task` loss function named by the fixture's `fn`.
    LossFn,
    Optimizer,
    /// A critic's WGAN-GP gradient penalty: the input gradient, the penalty and its gradient w.r.t. the parameters.
    GradientPenalty,
}

/// Every fixture group: file prefix, kind, title in the report.
const GROUPS: &[(&str, Kind, &str)] = &[
    ("dense", Kind::Layer, "Linear (`dense`)"),
    ("conv1d", Kind::Layer, "Conv1d (`conv1d`)"),
    ("conv2d", Kind::Layer, "Conv2d (`conv2d`)"),
    (
        "conv_transpose",
        Kind::Layer,
        "ConvTranspose2d / ConvTranspose1d (`conv_transpose2d`, `conv_transpose1d`)",
    ),
    ("upsampling", Kind::Layer, "Upsample (`upsampling2d`, `upsampling1d`)"),
    (
        "pool1d",
        Kind::Layer,
        "MaxPool1d / AvgPool1d (`max_pool1d`, `avg_pool1d`)",
    ),
    (
        "pool2d",
        Kind::Layer,
        "MaxPool2d / AvgPool2d (`max_pool2d`, `avg_pool2d`)",
    ),
    ("global_pool", Kind::Layer, "Adaptive pooling to 1 (`global_*_pool*`)"),
    ("batch_norm", Kind::Layer, "BatchNorm1d / BatchNorm2d (`batch_norm`)"),
    ("layer_norm", Kind::Layer, "LayerNorm (`layer_norm`)"),
    ("group_norm", Kind::Layer, "GroupNorm (`group_norm`)"),
    (
        "instance_norm",
        Kind::Layer,
        "InstanceNorm1d / InstanceNorm2d (`instance_norm`)",
    ),
    ("embedding", Kind::Layer, "Embedding (`embedding`)"),
    ("simple_rnn", Kind::Layer, "RNN (`simple_rnn`)"),
    ("lstm", Kind::Layer, "LSTM (`lstm`)"),
    ("gru", Kind::Layer, "GRU (`gru`)"),
    (
        "multi_head_attention",
        Kind::Layer,
        "MultiheadAttention (`multi_head_attention`)",
    ),
    (
        "transformer_encoder",
        Kind::Layer,
        "TransformerEncoderLayer (`transformer_encoder`)",
    ),
    ("activation", Kind::Layer, "Activations"),
    ("dropout", Kind::Layer, "Dropout (`dropout`)"),
    (
        "gradient_penalty",
        Kind::GradientPenalty,
        "WGAN-GP gradient penalty (`Graph::input_gradient`)",
    ),
    ("loss", Kind::Loss, "Losses (value and gradient w.r.t. the logits)"),
    (
        "loss_fn",
        Kind::LossFn,
        "Divergence, metric-learning and GAN losses (`task::divergence`, `task::metric_learning`, `task::gan`; \
         value and gradient w.r.t. every float input)",
    ),
    (
        "optim",
        Kind::Optimizer,
        "Optimizers (20 steps; loss before each step, parameters after each)",
    ),
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity")
}

/// |got − want| / max(1, |want|); non-finite results count as infinitely wrong.
fn error(got: f32, want: f32) -> f64 {
    let (g, w) = (got as f64, want as f64);
    let e = (g - w).abs() / w.abs().max(1.0);
    if e.is_finite() { e } else { f64::INFINITY }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float32 tensor data")
}

struct Fixture {
    name: String,
    path: PathBuf,
    tensors: HashMap<String, NamedTensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load(path: &Path) -> Fixture {
        let tensors = read_safetensors(path).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Fixture {
            name: path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
            path: path.to_path_buf(),
            tensors,
            meta: metadata.metadata().clone().unwrap_or_default(),
        }
    }

    fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata `{key}`", self.name))
    }

    fn tensor(&self, key: &str) -> &NamedTensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor `{key}`", self.name))
    }

    /// The tensors named `prefix<name>`, under `<name>`.
    fn prefixed(&self, prefix: &str) -> HashMap<String, NamedTensor> {
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
            .collect()
    }

    /// How many of `prefix0`, `prefix1`, ... there are.
    fn count(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|k| self.tensors.contains_key(&format!("{prefix}{k}")))
            .count()
    }

    /// A float tensor `[rows, rest]` (the fixture's first axis kept) on `device`.
    fn matrix(&self, key: &str, device: &Device) -> Tensor<2> {
        let t = self.tensor(key);
        let rows = t.shape.first().copied().unwrap_or(1).max(1);
        Tensor::from_data(TensorData::new(t.values.clone(), [rows, t.values.len() / rows]), device)
    }
}

/// The maximum errors measured for one case, and whatever went wrong.
#[derive(Default)]
struct Measured {
    forward: Option<f64>,
    grad_inputs: Option<f64>,
    grad_params: Option<f64>,
    /// Running statistics after a train step, or parameters after each optimizer step.
    state: Option<f64>,
    problems: Vec<String>,
}

impl Measured {
    /// Compares `got` (of shape `shape`) with the fixture tensor `want`, records the maximum error in `slot`.
    fn compare(&mut self, slot: Slot, what: &str, got: &[f32], shape: &[usize], want: &NamedTensor) {
        let e = if shape != want.shape.as_slice() || got.len() != want.values.len() {
            self.problems
                .push(format!("{what}: graft shape {shape:?}, torch {:?}", want.shape));
            f64::INFINITY
        } else {
            let (mut max, mut worst) = (0.0f64, 0);
            for (i, (g, w)) in got.iter().zip(&want.values).enumerate() {
                let e = error(*g, *w);
                if e > max {
                    (max, worst) = (e, i);
                }
            }
            if max > TOLERANCE {
                self.problems.push(format!(
                    "{what}: max error {max:.2e} at element {worst} of {shape:?} (graft {}, torch {})",
                    got[worst], want.values[worst]
                ));
            }
            max
        };
        self.record(slot, e);
    }

    fn record(&mut self, slot: Slot, e: f64) {
        let s = match slot {
            Slot::Forward => &mut self.forward,
            Slot::GradInputs => &mut self.grad_inputs,
            Slot::GradParams => &mut self.grad_params,
            Slot::State => &mut self.state,
        };
        *s = Some(s.map_or(e, |v| v.max(e)));
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Forward,
    GradInputs,
    GradParams,
    State,
}

fn parse_spec(text: &str) -> ModelSpec {
    let doc: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("spec: {e}\n{text}"));
    let model = doc.get("model").expect("spec has [model]");
    ModelSpec::from_toml(model, "model").unwrap_or_else(|e| panic!("spec: {e}\n{text}"))
}

/// Builds the fixture's graph on an autodiff device and loads its `param.*` tensors, checking that graft's
/// parameter names are exactly the fixture's (the PyTorch state-dict keys under the node names).
fn build_graph(f: &Fixture, device: &Device, m: &mut Measured) -> Option<Graph> {
    let spec = parse_spec(f.meta("spec"));
    let graph = Graph::build(&spec, device).unwrap_or_else(|e| panic!("build: {e}"));
    let params = f.prefixed("param.");
    let graft: BTreeSet<String> = named_tensors(&graph).into_iter().map(|t| t.name).collect();
    let torch: BTreeSet<String> = params.keys().cloned().collect();
    if graft != torch {
        m.problems
            .push(format!("parameter names differ: graft {graft:?}, torch {torch:?}"));
        return None;
    }
    Some(load_tensors(graph, &params, &f.path).unwrap_or_else(|e| panic!("load: {e}")))
}

/// Every parameter of `graph` under its path, with its shape and its gradient (`None` for buffers such as the
/// batch-norm running statistics).
fn param_grads(graph: &Graph, grads: &GradientsParams) -> Vec<(String, Vec<usize>, Option<Vec<f32>>)> {
    struct Visit<'a> {
        grads: &'a GradientsParams,
        out: Vec<(String, Vec<usize>, Option<Vec<f32>>)>,
    }
    impl ParamVisitor for Visit<'_> {
        fn visit<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            let grad = self.grads.get::<D>(param.id).map(values);
            self.out.push((path.name(), param.val().dims().to_vec(), grad));
        }
    }
    let mut v = Visit { grads, out: vec![] };
    visit_params(graph, &mut v);
    v.out
}

/// A layer fixture: outputs, input and parameter gradients, and the running statistics after a train step.
fn check_layer(f: &Fixture) -> Measured {
    let mut m = Measured::default();
    let device = Device::default().autodiff();
    let Some(graph) = build_graph(f, &device, &mut m) else {
        return m;
    };
    let training = f.meta("mode") == "train";
    let dropout_rule = f.meta.get("check").map(String::as_str) == Some("dropout_rule");

    let mut leaves = vec![];
    let mut inputs = vec![];
    for k in 0..f.count("input.") {
        let shape = f.tensor(&format!("input.{k}")).shape.clone();
        let wants_grad = f.tensors.contains_key(&format!("grad_input.{k}"));
        let mut leaf = f.matrix(&format!("input.{k}"), &device);
        if wants_grad {
            leaf = leaf.require_grad();
        }
        inputs.push(Data::D2(leaf.clone()).reshape(&shape).expect("input rank"));
        leaves.push((k, leaf, wants_grad, shape));
    }
    let outputs = graph
        .forward(inputs, training, false)
        .unwrap_or_else(|e| panic!("forward: {e}"));
    let expected = f.count("output.");
    if outputs.len() != expected {
        m.problems
            .push(format!("graft gives {} outputs, torch {expected}", outputs.len()));
        return m;
    }

    // Dropout in training: the kept elements (and their gradients) follow torch's x / (1 - p) rule.
    let mut kept: Option<Vec<bool>> = None;
    let mut objective: Option<Tensor<1>> = None;
    for (k, out) in outputs.into_iter().enumerate() {
        let dims = out.data.dims();
        let flat = out
            .data
            .reshape(&[dims[0], dims[1..].iter().product()])
            .and_then(Data::d2)
            .expect("flatten output");
        let got = values(flat.clone());
        let want = f.tensor(&format!("output.{k}"));
        if dropout_rule {
            let keep: Vec<bool> = got.iter().map(|v| *v != 0.0).collect();
            let rate: f64 = f.meta("rate").parse().expect("rate");
            let fraction = keep.iter().filter(|k| **k).count() as f64 / keep.len() as f64;
            if (fraction - (1.0 - rate)).abs() > 0.02 {
                m.problems.push(format!(
                    "kept {fraction:.4} of the elements, expected about {}",
                    1.0 - rate
                ));
            }
            let (g, w) = masked(&got, &want.values, &keep);
            m.compare(Slot::Forward, "kept outputs", &g, &[g.len()], &vec_tensor(w));
            kept = Some(keep);
        } else {
            m.compare(Slot::Forward, &format!("output {k}"), &got, &dims, want);
        }
        let probe = f.matrix(&format!("probe.{k}"), &device);
        let term = (flat * probe).sum();
        objective = Some(match objective {
            None => term,
            Some(o) => o + term,
        });
    }
    let grads = objective.expect("at least one output").backward();

    for (k, leaf, wants_grad, shape) in &leaves {
        if !wants_grad {
            continue;
        }
        let want = f.tensor(&format!("grad_input.{k}"));
        match leaf.grad(&grads) {
            None => m.problems.push(format!("input {k}: graft computed no gradient")),
            Some(g) => {
                let got = values(g);
                match &kept {
                    Some(keep) => {
                        if got.iter().zip(keep).any(|(g, k)| !k && *g != 0.0) {
                            m.problems.push("dropped elements have a non-zero gradient".into());
                        }
                        let (g, w) = masked(&got, &want.values, keep);
                        m.compare(Slot::GradInputs, "kept input gradients", &g, &[g.len()], &vec_tensor(w));
                    }
                    None => m.compare(Slot::GradInputs, &format!("∂input {k}"), &got, shape, want),
                }
            }
        }
    }

    let grads = GradientsParams::from_grads(grads, &graph);
    for (name, shape, grad) in param_grads(&graph, &grads) {
        match (grad, f.tensors.get(&format!("grad_param.{name}"))) {
            (Some(g), Some(want)) => m.compare(Slot::GradParams, &format!("∂{name}"), &g, &shape, want),
            (None, None) => {}
            (Some(_), None) => m.problems.push(format!("{name}: graft has a gradient, torch none")),
            (None, Some(_)) => m.problems.push(format!("{name}: graft computed no gradient")),
        }
    }

    if training {
        let after = f.prefixed("after.");
        for t in named_tensors(&graph) {
            if let Some(want) = after.get(&t.name) {
                m.compare(
                    Slot::State,
                    &format!("{} after the step", t.name),
                    &t.values,
                    &t.shape,
                    want,
                );
            }
        }
        if !after.is_empty() && m.state.is_none() {
            m.problems.push("no running statistic was compared".into());
        }
    }
    m
}

fn masked(got: &[f32], want: &[f32], keep: &[bool]) -> (Vec<f32>, Vec<f32>) {
    got.iter()
        .zip(want)
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|((g, w), _)| (*g, *w))
        .unzip()
}

fn vec_tensor(values: Vec<f32>) -> NamedTensor {
    NamedTensor {
        name: String::new(),
        shape: vec![values.len()],
        values,
    }
}

/// A loss fixture: `LossSpec::compute` against torch's value and gradient w.r.t. the logits.
fn check_loss(f: &Fixture) -> Measured {
    #[derive(Deserialize)]
    struct Doc {
        loss: LossSpec,
    }
    let mut m = Measured::default();
    let device = Device::default().autodiff();
    let loss = toml::from_str::<Doc>(f.meta("loss"))
        .unwrap_or_else(|e| panic!("loss: {e}"))
        .loss;
    let logits = f.matrix("logits", &device).require_grad();
    let target = match f.meta("target") {
        "classes" => {
            let t = f.tensor("target");
            let ids: Vec<i64> = t.values.iter().map(|v| *v as i64).collect();
            Target::Classes(Tensor::<1, Int>::from_data(
                TensorData::new(ids, [t.values.len()]),
                &device,
            ))
        }
        _ => Target::Values(f.matrix("target", &device)),
    };
    let weights = f
        .tensors
        .get("weights")
        .map(|w| Tensor::<1>::from_data(TensorData::new(w.values.clone(), [w.values.len()]), &device));
    let class_weights: Option<Vec<f32>> = f.tensors.get("class_weights").map(|w| w.values.clone());
    let value = loss
        .compute(logits.clone(), target, weights, class_weights.as_deref())
        .unwrap_or_else(|e| panic!("compute: {e}"));
    m.compare(Slot::Forward, "loss", &values(value.clone()), &[1], f.tensor("value"));
    let grads = value.backward();
    let want = f.tensor("grad_logits");
    match logits.grad(&grads) {
        Some(g) => m.compare(Slot::GradInputs, "∂logits", &values(g), &want.shape, want),
        None => m.problems.push("no gradient w.r.t. the logits".into()),
    }
    m
}

/// A loss-function fixture: the function named by `fn` on the inputs named by `inputs` (in argument order), with
/// the options in `options` (TOML), against torch's value and its gradient w.r.t. every input that has a
/// `grad_input.<name>` (of sum(value · probe) when the fixture has a `probe`, for a per-row value).
fn check_loss_fn(f: &Fixture) -> Measured {
    #[derive(Deserialize)]
    struct Margin {
        margin: f64,
    }
    let mut m = Measured::default();
    let device = Device::default().autodiff();
    let names: Vec<&str> = f.meta("inputs").split(',').collect();
    let mut leaves: HashMap<&str, Tensor<2>> = HashMap::new();
    for name in &names {
        let mut leaf = f.matrix(&format!("input.{name}"), &device);
        if f.tensors.contains_key(&format!("grad_input.{name}")) {
            leaf = leaf.require_grad();
        }
        leaves.insert(name, leaf);
    }
    let x = |name: &str| leaves.get(name).unwrap_or_else(|| panic!("no input `{name}`")).clone();
    // A vector input `[n]` is read as `[n, 1]`; its gradient has the same values.
    let v = |name: &str| -> Tensor<1> {
        let t = x(name);
        let [n, _] = t.dims();
        t.reshape([n])
    };
    let options = f.meta("options");
    let margin = || {
        toml::from_str::<Margin>(options)
            .unwrap_or_else(|e| panic!("options: {e}"))
            .margin
    };
    let value: Tensor<1> = match f.meta("fn") {
        "gaussian_kl" => gaussian_kl(x("mean"), x("log_var")).expect("gaussian_kl"),
        "gaussian_kl_per_row" => gaussian_kl_per_row(x("mean"), x("log_var")).expect("gaussian_kl_per_row"),
        "kl_div" => kl_div(x("log_input"), x("target")).expect("kl_div"),
        "contrastive_loss" => toml::from_str::<ContrastiveSpec>(options)
            .unwrap_or_else(|e| panic!("options: {e}"))
            .compute(x("a"), x("b"), v("same"))
            .expect("contrastive_loss"),
        "triplet_margin_loss" => {
            triplet_margin_loss(x("anchor"), x("positive"), x("negative"), margin()).expect("triplet_margin_loss")
        }
        "mined_triplet_loss" => {
            let labels = f.tensor("labels");
            let ids: Vec<i64> = labels.values.iter().map(|v| *v as i64).collect();
            let labels = Tensor::<1, Int>::from_data(TensorData::new(ids, [labels.values.len()]), &device);
            toml::from_str::<TripletSpec>(options)
                .unwrap_or_else(|e| panic!("options: {e}"))
                .compute(x("embeddings"), labels)
                .expect("mined_triplet_loss")
        }
        "discriminator_loss" => discriminator_loss(x("real_logits"), x("fake_logits")),
        "generator_loss" => generator_loss(x("fake_logits")),
        "critic_loss" => critic_loss(x("real_scores"), x("fake_scores")),
        "wasserstein_generator_loss" => wasserstein_generator_loss(x("fake_scores")),
        "gradient_penalty_from_grad" => gradient_penalty_from_grad(x("input_grad")),
        "negative_sampling_loss" => negative_sampling_loss(x("scores")).expect("negative_sampling_loss"),
        other => panic!("unknown loss function `{other}`"),
    };
    let dims = value.dims();
    m.compare(Slot::Forward, "value", &values(value.clone()), &dims, f.tensor("value"));
    let objective = match f.tensors.get("probe") {
        Some(p) => (value * Tensor::<1>::from_data(TensorData::new(p.values.clone(), [p.values.len()]), &device)).sum(),
        None => value,
    };
    let grads = objective.backward();
    for name in &names {
        let Some(want) = f.tensors.get(&format!("grad_input.{name}")) else {
            continue;
        };
        match x(name).grad(&grads) {
            Some(g) => m.compare(
                Slot::GradInputs,
                &format!("∂{name}"),
                &values(g),
                &f.tensor(&format!("input.{name}")).shape,
                want,
            ),
            None => m.problems.push(format!("{name}: graft computed no gradient")),
        }
    }
    m
}

/// A gradient-penalty fixture: x̂ = α·real + (1 − α)·fake, the critic's score D(x̂), its input gradient
/// g = ∂ΣD(x̂)/∂x̂ from [`Graph::input_gradient`], gp = λ·mean_rows((‖g‖₂ − 1)²) and, by burn's autodiff through g,
/// ∂gp/∂θ for every parameter (a parameter gp does not depend on has no gradient in graft, zeros in the fixture).
fn check_gradient_penalty(f: &Fixture) -> Measured {
    let mut m = Measured::default();
    let device = Device::default().autodiff();
    let Some(graph) = build_graph(f, &device, &mut m) else {
        return m;
    };
    let training = f.meta("mode") == "train";
    let lambda: f64 = f.meta("lambda").parse().expect("lambda");
    let shape = f.tensor("real").shape.clone();
    let alpha = f.matrix("alpha", &device);
    let x_hat = alpha.clone() * f.matrix("real", &device) + alpha.neg().add_scalar(1.0) * f.matrix("fake", &device);
    let x_hat = Data::D2(x_hat).reshape(&shape).expect("input rank");

    let score = graph
        .forward(vec![x_hat.clone()], training, false)
        .unwrap_or_else(|e| panic!("forward: {e}"))
        .remove(0)
        .data
        .d2()
        .expect("[B, 1] scores");
    let want = f.tensor("score");
    m.compare(Slot::Forward, "D(x̂)", &values(score), &want.shape, want);

    let g = graph
        .input_gradient(x_hat, training)
        .unwrap_or_else(|e| panic!("input_gradient: {e}"));
    let dims = g.dims();
    let g = g
        .reshape(&[dims[0], dims[1..].iter().product()])
        .and_then(Data::d2)
        .expect("flatten the gradient");
    m.compare(
        Slot::GradInputs,
        "∂ΣD(x̂)/∂x̂",
        &values(g.clone()),
        &dims,
        f.tensor("grad_input"),
    );

    let gp = g
        .powi_scalar(2)
        .sum_dim(1)
        .sqrt()
        .sub_scalar(1.0)
        .powi_scalar(2)
        .mean()
        .mul_scalar(lambda);
    m.compare(Slot::Forward, "penalty", &values(gp.clone()), &[1], f.tensor("value"));

    let grads = GradientsParams::from_grads(gp.backward(), &graph);
    for (name, shape, grad) in param_grads(&graph, &grads) {
        let want = f.tensor(&format!("grad_param.{name}"));
        let got = grad.unwrap_or_else(|| vec![0.0; shape.iter().product()]);
        m.compare(Slot::GradParams, &format!("∂penalty/∂{name}"), &got, &shape, want);
    }
    m
}

/// An optimizer fixture: 20 steps of `OptimizerSpec::init` + `step` on the fixture's model and data.
fn check_optimizer(f: &Fixture) -> Measured {
    #[derive(Deserialize)]
    struct Doc {
        optimizer: OptimizerSpec,
    }
    let mut m = Measured::default();
    let device = Device::default().autodiff();
    let Some(mut graph) = build_graph(f, &device, &mut m) else {
        return m;
    };
    let spec = toml::from_str::<Doc>(f.meta("optimizer"))
        .unwrap_or_else(|e| panic!("optimizer: {e}"))
        .optimizer;
    let mut optim = spec.init(None).unwrap_or_else(|e| panic!("optimizer: {e}"));
    let x = f.matrix("x", &device);
    let y = f.matrix("y", &device);
    let steps: usize = f.meta("steps").parse().expect("steps");
    for k in 1..=steps {
        let out = graph
            .forward(vec![Data::D2(x.clone())], true, false)
            .unwrap_or_else(|e| panic!("forward: {e}"))
            .remove(0)
            .data
            .d2()
            .expect("[N, 2] output");
        let loss = LossSpec::Mse
            .compute(out, Target::Values(y.clone()), None, None)
            .expect("mse");
        m.compare(
            Slot::Forward,
            &format!("loss before step {k}"),
            &values(loss.clone()),
            &[1],
            f.tensor(&format!("loss.{k}")),
        );
        let grads = GradientsParams::from_grads(loss.backward(), &graph);
        graph = optim.step(spec.lr(), graph, grads);
        for t in named_tensors(&graph) {
            let want = f.tensor(&format!("step.{k}.{}", t.name));
            m.compare(
                Slot::State,
                &format!("{} after step {k}", t.name),
                &t.values,
                &t.shape,
                want,
            );
        }
    }
    m
}

struct Row {
    case: String,
    note: String,
    measured: Measured,
}

/// Runs every fixture of `group`; a panic inside one case is recorded as that case's problem.
fn run_group(group: &str, kind: Kind) -> Vec<Row> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/parity exists (python tools/reference/parity.py)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{group}-")))
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures for group {group}");
    paths
        .iter()
        .map(|path| {
            let f = Fixture::load(path);
            let measured = catch_unwind(AssertUnwindSafe(|| match kind {
                Kind::Layer => check_layer(&f),
                Kind::Loss => check_loss(&f),
                Kind::LossFn => check_loss_fn(&f),
                Kind::Optimizer => check_optimizer(&f),
                Kind::GradientPenalty => check_gradient_penalty(&f),
            }))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Measured {
                    problems: vec![format!("panicked: {msg}")],
                    ..Default::default()
                }
            });
            Row {
                case: f.name[group.len() + 1..].to_string(),
                note: f.meta.get("note").cloned().unwrap_or_default(),
                measured,
            }
        })
        .collect()
}

fn assert_group(group: &str) {
    let (_, kind, _) = GROUPS.iter().find(|(g, ..)| *g == group).expect("a known group");
    let rows = run_group(group, *kind);
    let failures: Vec<String> = rows
        .iter()
        .filter(|r| !r.measured.problems.is_empty())
        .map(|r| format!("{group}-{}:\n  {}", r.case, r.measured.problems.join("\n  ")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {group} cases disagree with PyTorch:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

macro_rules! group_tests {
    ($($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_group(stringify!($test));
            }
        )*
    };
}

group_tests!(
    dense,
    conv1d,
    conv2d,
    conv_transpose,
    upsampling,
    pool1d,
    pool2d,
    global_pool,
    batch_norm,
    layer_norm,
    group_norm,
    instance_norm,
    embedding,
    simple_rnn,
    lstm,
    gru,
    multi_head_attention,
    transformer_encoder,
    activation,
    dropout,
    gradient_penalty,
    loss,
    loss_fn,
    optim,
);

/// The pooling groups above compare every `pool1d-*`/`pool2d-*` fixture; this keeps the average-pooling cases of
/// both `count_include_pad` settings (false; true by default and written out) from going missing.
#[test]
fn avg_pool_fixtures_cover_both_count_include_pad_settings() {
    let cases = [
        ("pool1d-avg_3_stride2_pad1", "count_include_pad = false"),
        ("pool1d-avg_same_2_stride1", "count_include_pad = false"),
        ("pool1d-avg_3_stride2_pad1_include_pad", ""),
        ("pool1d-avg_4_stride1_pad2_include_pad", "count_include_pad = true"),
        ("pool1d-avg_same_2_stride1_include_pad", ""),
        ("pool2d-avg_3_stride2_pad1", "count_include_pad = false"),
        ("pool2d-avg_3_stride1_pad1_batch1", "count_include_pad = false"),
        ("pool2d-avg_same_3_stride2", "count_include_pad = false"),
        ("pool2d-avg_3_stride2_pad1_include_pad", ""),
        ("pool2d-avg_2x3_stride1_pad1x0_include_pad", "count_include_pad = true"),
        ("pool2d-avg_same_3_stride2_include_pad", ""),
    ];
    for (name, option) in cases {
        let f = Fixture::load(&fixtures_dir().join(format!("{name}.safetensors")));
        let spec = f.meta("spec");
        assert!(spec.contains("padding = "), "{name}: {spec}");
        if option.is_empty() {
            assert!(!spec.contains("count_include_pad"), "{name} tests the default: {spec}");
        } else {
            assert!(spec.contains(option), "{name}: {spec}");
        }
    }
}

#[test]
fn every_fixture_belongs_to_a_tested_group() {
    let names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/parity exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    let orphans: Vec<&String> = names
        .iter()
        .filter(|n| !GROUPS.iter().any(|(g, ..)| n.starts_with(&format!("{g}-"))))
        .collect();
    assert!(orphans.is_empty(), "fixtures no test reads: {orphans:?}");
    for (group, ..) in GROUPS {
        assert!(
            names.iter().any(|n| n.starts_with(&format!("{group}-"))),
            "no fixtures for {group}"
        );
    }
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(0.0) => "0".into(),
        Some(e) => format!("{e:.1e}"),
    }
}

/// With `GRAFT_PARITY_REPORT=1`: runs every group and writes the measured table to `REPORT.md` (then fails if
/// any case disagrees, as the group tests do).
#[test]
fn report() {
    if std::env::var("GRAFT_PARITY_REPORT").as_deref() != Ok("1") {
        return;
    }
    let mut md = String::new();
    md.push_str("# Parity with PyTorch: measured maximum errors\n\n");
    md.push_str(
        "Generated by `GRAFT_PARITY_REPORT=1 cargo test --release -p graft --test numerics parity` (`crates/graft/tests/numerics/parity.rs`) \
         from the fixtures that `python tools/reference/parity.py` writes with torch 2.15.0. The reference is PyTorch \
         in float64 on weights and inputs that are exact in float32; graft runs in float32 on burn's default CPU \
         backend. Error = |graft − torch| / max(1, |torch|): absolute, relative for values above 1. Every value must \
         be within 1e-5; the tests fail otherwise.\n\n\
         Columns: *forward* = outputs (losses: the value; optimizers: the loss before each step); *∂ inputs* = the \
         gradient of Σₖ sum(outputₖ · probeₖ) for a fixed random probe w.r.t. every float input (losses: w.r.t. the \
         logits; loss functions: of the value, w.r.t. every float input); *∂ parameters* = the same w.r.t. every \
         parameter; *state* = running statistics after a train-mode batch-norm step, or every parameter after each \
         of 20 optimizer steps. The gradient-penalty cases compare the critic's score D(x̂) and the penalty \
         (forward), its input gradient (∂ inputs) and the penalty's gradient w.r.t. every parameter (∂ parameters).\n",
    );
    let mut failures = vec![];
    let mut total = 0;
    for (group, kind, title) in GROUPS {
        let rows = run_group(group, *kind);
        total += rows.len();
        md.push_str(&format!(
            "\n## {title}\n\n| case | forward | ∂ inputs | ∂ parameters | state | reference |\n|---|---|---|---|---|---|\n"
        ));
        for r in &rows {
            let m = &r.measured;
            let flag = if m.problems.is_empty() { "" } else { " **FAILS**" };
            md.push_str(&format!(
                "| `{}`{flag} | {} | {} | {} | {} | {} |\n",
                r.case,
                cell(m.forward),
                cell(m.grad_inputs),
                cell(m.grad_params),
                cell(m.state),
                r.note.replace('|', "\\|")
            ));
            if !m.problems.is_empty() {
                failures.push(format!("{group}-{}: {}", r.case, m.problems.join("; ")));
            }
        }
    }
    md.push_str(
        "\n## Learning-rate schedules\n\n\
         Checked by the unit tests in `crates/graft/src/train/schedule.rs` against the learning rates torch 2.15.0's \
         `torch.optim.lr_scheduler` gives at every step (numbers from `tools/reference/schedules_reference.py`), to \
         1e-12 relative:\n\n\
         | torch scheduler | graft `schedule` | test |\n|---|---|---|\n\
         | `StepLR` | `step` | `step_matches_torch_step_lr` |\n\
         | `ExponentialLR` | `exponential` | `exponential_matches_torch_exponential_lr` |\n\
         | `CosineAnnealingLR` | `cosine` | `cosine_matches_torch_cosine_annealing_lr_with_t_max_defaulting_to_epochs`, `cosine_past_t_max_goes_back_up_like_torch` |\n\
         | `LinearLR` warm-up, then `CosineAnnealingLR` | `warmup` | `warmup_then_cosine_matches_torch_linear_lr_then_cosine_annealing_lr` |\n\
         | `OneCycleLR` (cos, linear, three-phase) | `one_cycle` | `one_cycle_matches_torch_one_cycle_lr`, `one_cycle_three_phase_matches_torch` |\n\
         | `ReduceLROnPlateau` (min/rel with cooldown, max/abs) | `reduce_on_plateau` | `reduce_on_plateau_min_rel_with_cooldown_matches_torch`, `reduce_on_plateau_max_abs_matches_torch` |\n",
    );
    md.push_str(
        "\n## Not compared\n\n\
         - **Cross-entropy with class weights and label smoothing together** disagrees: graft multiplies each row's \
         smoothed loss by its target class's weight (class weights become row weights, as sample weights do); \
         PyTorch weights the smoothing term of every class c by that class's weight. On the `loss` fixtures' logits \
         with class weights [0.5, 2, 1, 3] and smoothing 0.1, graft gives 2.3434 and PyTorch 2.3187. Class weights \
         and label smoothing are each compared above.\n\
         - `padding = \"same\"` for pooling, and for convolutions with a stride above 1, has no PyTorch form: graft \
         follows the TF/Keras SAME rule (the odd zero at the end), compared above against `F.pad` followed by the \
         PyTorch pooling or convolution.\n\
         - `embedding` with `padding_idx` outputs zeros at padding positions whatever the row holds; PyTorch looks \
         the row up (it starts at zero and never trains). The fixtures keep that row zero.\n\
         - `lstm`'s `unit_forget_bias` only sets the initial forget-gate bias.\n\
         - Bidirectional layers stacked with a merge other than `concat` have no PyTorch form (a single layer's \
         `sum`, `mul` and `ave` are compared above, from PyTorch's two output halves).\n\
         - A sequence with no real step: PyTorch's packing rejects length 0 (graft's recurrent layers return the \
         initial state, masked global max pooling the lowest float, masked average pooling zero). Attention over a \
         sample whose keys are all padding is compared above.\n\
         - Dropout masks are random: the train-mode rule is compared, not the masks.\n\
         - `clip_grad = { norm }` rescales each parameter's gradient on its own; \
         `torch.nn.utils.clip_grad_norm_` takes the norm of all of them together.\n\
         - `kl_div`'s gradient w.r.t. a zero target: PyTorch gives NaN (the derivative of t·log t is −∞ at 0); graft \
         leaves the t·log t term out there. The `kl_div_zero_targets` case compares the gradient w.r.t. the \
         log-probabilities only; `kl_div` (no zero target) compares both.\n\
         - Semi-hard mining of an anchor that has no negative in the batch: TensorFlow Addons takes a negative \
         distance of 0 for its positive pairs (and divides by zero when the batch has no positive pair); graft leaves \
         those pairs out (and gives 0). Every anchor of the fixtures has negatives.\n",
    );
    md.push_str(&format!("\n{total} fixture cases; {} disagree.\n", failures.len()));
    std::fs::write(fixtures_dir().join("REPORT.md"), md).expect("write REPORT.md");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
