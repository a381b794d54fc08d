//! `graft export --onnx`: models of every layer family exported by the CLI and run in ONNX Runtime (pinned in
//! `requirements.txt`), their outputs compared with graft's own forward pass on the same inputs (≤ 1e-5, relative
//! to the largest output when that is above 1).

use std::path::Path;
use std::process::Command;

use burn::prelude::Device;
use graft::data::{Array, write_npy_f32};
use graft::layers::value::input_data;
use graft::model::Graph;
use graft::model::spec::ModelSpec;

use super::{expect_error, graft, stderr, workdir};

const BATCH: usize = 5;

/// Whether ONNX Runtime can run here; without it the comparison is skipped with a note, unless
/// `GRAFT_REQUIRE_ONNXRUNTIME` is set (as CI sets it), when it fails.
fn onnxruntime_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("GRAFT_REQUIRE_ONNXRUNTIME").is_none(),
            "onnxruntime is required: pip install -r crates/graft-cli/tests/requirements.txt"
        );
        eprintln!("note: onnxruntime is not installed; the ONNX Runtime comparisons are skipped");
    }
    ok
}

/// Deterministic values in [-1, 1).
fn floats(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Token ids 1..vocab, each sequence padded with 0 after a length that differs per row (one row unpadded, one
/// all padding).
fn token_ids(steps: usize, vocab: usize, seed: u64) -> Array {
    let noise = floats(BATCH * steps, seed);
    let mut data = Vec::with_capacity(BATCH * steps);
    for row in 0..BATCH {
        // The last row is all padding (an empty text).
        let len = if row + 1 == BATCH { 0 } else { steps - (row * 3) % steps };
        for t in 0..steps {
            let id = 1 + ((noise[row * steps + t] + 1.0) / 2.0 * (vocab - 1) as f32) as usize % (vocab - 1);
            data.push(if t < len { id as f32 } else { 0.0 });
        }
    }
    Array::new(vec![BATCH, steps], data).unwrap()
}

fn random_input(shape: &[usize], seed: u64) -> Array {
    let n: usize = BATCH * shape.iter().product::<usize>();
    Array::new(
        std::iter::once(BATCH).chain(shape.iter().copied()).collect(),
        floats(n, seed),
    )
    .unwrap()
}

/// Builds the `[model]` of `toml_text` with its initial weights (batch-norm statistics from one training-mode
/// pass, so they are not the identity), saves it as a run directory, exports it with `graft export --onnx`, and
/// compares ONNX Runtime's outputs with graft's on `inputs`.
fn check_export(dir: &Path, name: &str, toml_text: &str, inputs: Vec<Array>, ort: bool) {
    let value: toml::Value = toml::from_str(toml_text).unwrap();
    let spec = ModelSpec::from_toml(&value["model"], "model").unwrap();
    let dev = Device::default();
    let graph = Graph::build(&spec, &dev).unwrap();
    let data = |arrays: &[Array]| arrays.iter().map(|a| input_data(a, &dev).unwrap()).collect::<Vec<_>>();
    graph.forward(data(&inputs), true, false).unwrap();
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    graft::model::io::save_model(&graph, &run).unwrap();
    let outputs = graph.forward(data(&inputs), false, false).unwrap();

    let expected = spec
        .outputs
        .iter()
        .zip(outputs)
        .map(|(out, value)| (out.clone(), value.data))
        .collect();
    let names: Vec<String> = spec.inputs.iter().map(|i| i.name.clone()).collect();
    export_and_compare(&run, name, &names, &inputs, expected, ort);
}

/// Exports run directory `run` with `graft export --onnx` and, with ONNX Runtime, checks the named outputs
/// against `expected` on `inputs`.
fn export_and_compare(
    run: &Path,
    name: &str,
    input_names: &[String],
    inputs: &[Array],
    expected: Vec<(String, graft::layers::value::Data)>,
    ort: bool,
) {
    let model = run.join("model.onnx");
    let o = graft(&[
        "export",
        "--model",
        run.to_str().unwrap(),
        "--onnx",
        model.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{name}: {err}");
    assert!(err.contains("ONNX opset 17") && err.contains("batch"), "{name}: {err}");
    for (out, _) in &expected {
        assert!(
            err.contains(&format!("{out} float32")),
            "{name}: {out} not listed: {err}"
        );
    }
    if !ort {
        return;
    }
    let mut args = vec![
        super::repo("crates/graft-cli/tests/onnx_check.py"),
        model.display().to_string(),
    ];
    for (input, array) in input_names.iter().zip(inputs) {
        let path = run.join(format!("in_{input}.npy"));
        write_npy_f32(&path, array).unwrap();
        args.push(format!("--input={input}={}", path.display()));
    }
    // 1e-5, absolute, or relative to the largest output above 1 (the parity tests' convention): a ResNet's logits
    // run into the tens.
    let mut largest = 1f32;
    for (k, (out, data)) in expected.into_iter().enumerate() {
        let dims = data.dims();
        let values = data
            .flatten_rows()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        largest = values.iter().fold(largest, |m, v| m.max(v.abs()));
        let path = run.join(format!("out_{k}.npy"));
        write_npy_f32(&path, &Array::new(dims, values).unwrap()).unwrap();
        args.push(format!("--expect={out}={}", path.display()));
    }
    args.push(format!("--tol={}", 1e-5 * largest as f64));
    let o = Command::new("python3").args(&args).output().expect("run python3");
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{name}: ONNX Runtime differs from graft: {report} {}",
        stderr(&o)
    );
    eprintln!("{name}: {report}");
}

/// A trained run with its preprocess.json: the export adds `probabilities`, softmax(logits / temperature) as
/// `graft predict` computes them, beside the model's own output.
fn check_trained_run(dir: &Path, ort: bool) {
    // The output layer ends in a softmax, which graft's head leaves out to apply its temperature to the logits.
    let text = super::FAST_MLP.replace(
        "dense = { units = 10 } }",
        "dense = { units = 10, activation = \"softmax\" } }",
    );
    assert_ne!(text, super::FAST_MLP);
    let exp = super::write(dir, "mlp.toml", &text);
    let run = dir.join("trained");
    let o = graft(&["train", &exp, "--out", run.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A calibrated temperature, so the division by it is part of what is compared.
    let manifest = run.join("preprocess.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    doc["temperature"] = serde_json::json!(1.7);
    std::fs::write(&manifest, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    let dev = Device::default();
    let predictor = graft::infer::predict::Predictor::load(&run, &dev).unwrap();
    assert_eq!(predictor.head.temperature, 1.7);
    let images = Array::new(
        vec![BATCH, 1, 8, 8],
        floats(BATCH * 64, 8).into_iter().map(|v| (v + 1.0) / 2.0).collect(),
    )
    .unwrap();
    let forward = |logits: bool| {
        let x = vec![input_data(&images, &dev).unwrap()];
        predictor.graph.forward(x, false, logits).unwrap().remove(0).data
    };
    let probabilities = predictor.head.probabilities(forward(true).flatten_rows());
    let expected = vec![
        ("out".to_string(), forward(false)),
        (
            "probabilities".to_string(),
            graft::layers::value::Data::D2(probabilities),
        ),
    ];
    export_and_compare(&run, "trained", &["input".to_string()], &[images], expected, ort);
}

#[test]
fn onnx_export_runs_in_onnx_runtime_as_graft_runs_the_model() {
    let dir = workdir("onnx");
    let ort = onnxruntime_available();

    // Dense layers, batch norm, every activation, layer norm, a softmax output.
    let mlp = r#"
[model]
input = [6]
layers = [
  { name = "fc1", dense = { units = 16, activation = "relu" } },
  { name = "bn", batch_norm = {} },
  { dropout = { rate = 0.3 } },
  { name = "fc2", dense = { units = 16, activation = "gelu" } },
  { leaky_relu = { alpha = 0.2 } },
  { name = "fc3", dense = { units = 12, activation = "elu" } },
  { selu = {} },
  { relu6 = {} },
  { name = "fc3b", dense = { units = 12, activation = "hardswish" } },
  { silu = {} },
  { name = "fc4", dense = { units = 12, activation = "mish" } },
  { gelu = { approximate = true } },
  { name = "ln", layer_norm = {} },
  { name = "fc5", dense = { units = 12, activation = "tanh" } },
  { sigmoid = {} },
  { name = "out", dense = { units = 4, activation = "softmax" } },
]"#;
    check_export(&dir, "mlp", mlp, vec![random_input(&[6], 1)], ort);

    // Adaptive average pools, windows that overlap and that do not divide the input.
    let adaptive = r#"
[model]
inputs = { image = [3, 7, 5], seq = [7, 3] }
nodes = [
  { name = "c", conv2d = { filters = 4, kernel = 1 }, from = "image" },
  { name = "p2", adaptive_avg_pool2d = { size = [3, 2] }, from = "c" },
  { name = "f", flatten = {}, from = "p2" },
  { name = "p1", adaptive_avg_pool1d = { size = 3 }, from = "seq" },
  { name = "g", flatten = {}, from = "p1" },
]
outputs = ["f", "g"]"#;
    check_export(
        &dir,
        "adaptive",
        adaptive,
        vec![random_input(&[3, 7, 5], 3), random_input(&[7, 3], 4)],
        ort,
    );

    // The pretrained-CNN backbones: depthwise convolutions with TensorFlow "same" padding, residual adds,
    // ReLU6; the ImageNet classifier kept.
    for kind in ["efficientnet_lite0", "resnet18"] {
        let text = format!(
            "[model]\ninput = [3, 32, 32]\nlayers = [{{ name = \"net\", {kind} = {{ output = \"logits\" }} }}]"
        );
        check_export(&dir, kind, &text, vec![random_input(&[3, 32, 32], 9)], ort);
    }

    // 2-D convolutions (padding, stride, groups, dilation), pools, norms, upsampling, a transposed convolution.
    let cnn = r#"
[model]
input = [3, 12, 12]
layers = [
  { name = "c1", conv2d = { filters = 8, kernel = 3, padding = "same", activation = "relu" } },
  { name = "bn", batch_norm = {} },
  { max_pool2d = { size = 2 } },
  { name = "c2", conv2d = { filters = 8, kernel = 3, stride = 2, padding = 1, groups = 2 } },
  { name = "gn", group_norm = { groups = 4 } },
  { avg_pool2d = { size = 3, stride = 1, padding = 1, count_include_pad = false } },
  { upsampling2d = { size = 2, interpolation = "bilinear" } },
  { name = "c3", conv2d = { filters = 6, kernel = 3, dilation = 2 } },
  { name = "inorm", instance_norm = { affine = true } },
  { upsampling2d = { size = [2, 1] } },
  { name = "up", conv_transpose2d = { filters = 4, kernel = 3, stride = 2, padding = 1, output_padding = 1 } },
  { max_pool2d = { size = 3, stride = 2, padding = 1 } },
  { global_avg_pool2d = {} },
  { name = "out", dense = { units = 3 } },
]"#;
    check_export(&dir, "cnn", cnn, vec![random_input(&[3, 12, 12], 2)], ort);

    // 1-D: steps-last layouts through convolutions, pools, norms and upsampling; flatten and reshape.
    let conv1d = r#"
[model]
input = [16, 4]
layers = [
  { name = "c1", conv1d = { filters = 6, kernel = 3, padding = "same", activation = "relu" } },
  { name = "bn", batch_norm = {} },
  { max_pool1d = { size = 2 } },
  { name = "inorm", instance_norm = {} },
  { avg_pool1d = { size = 2, stride = 1 } },
  { upsampling1d = { size = 2 } },
  { name = "up", conv_transpose1d = { filters = 5, kernel = 4, stride = 2 } },
  { name = "gn", group_norm = { groups = 5 } },
  { permute = { dims = [1, 0] } },
  { reshape = { shape = [-1, 2] } },
  { flatten = {} },
  { name = "out", dense = { units = 3 } },
]"#;
    check_export(&dir, "conv1d", conv1d, vec![random_input(&[16, 4], 3)], ort);

    // Recurrent layers over padded token ids: a 2-layer bidirectional LSTM, a GRU, a simple RNN with its final
    // state, masked pooling, LSTM states as outputs, merges.
    let recurrent = r#"
[model]
inputs = { ids = [10] }
outputs = ["out", "state:1", "state:2"]

[[model.nodes]]
name = "emb"
from = ["ids"]
embedding = { input_dim = 30, output_dim = 8, padding_idx = 0 }

[[model.nodes]]
name = "bilstm"
from = ["emb"]
bidirectional = { layer = { lstm = { units = 6, return_sequences = true, num_layers = 2 } } }

[[model.nodes]]
name = "gru"
from = ["bilstm"]
bidirectional = { layer = { gru = { units = 5, return_sequences = true } }, merge = "sum" }

[[model.nodes]]
name = "avg"
from = ["gru"]
global_avg_pool1d = {}

[[model.nodes]]
name = "max"
from = ["gru"]
global_max_pool1d = {}

[[model.nodes]]
name = "rnn"
from = ["emb"]
simple_rnn = { units = 5, activation = "relu" }

[[model.nodes]]
name = "state"
from = ["emb"]
lstm = { units = 5, return_state = true }

[[model.nodes]]
name = "bigru"
from = ["emb"]
bidirectional = { layer = { gru = { units = 4 } }, merge = "ave" }

[[model.nodes]]
name = "bimul"
from = ["emb"]
bidirectional = { layer = { simple_rnn = { units = 4 } }, merge = "mul" }

[[model.nodes]]
name = "joined"
from = ["avg", "max", "rnn", "state", "bigru", "bimul"]
concatenate = {}

[[model.nodes]]
name = "out"
from = ["joined"]
dense = { units = 3, activation = "softmax" }
"#;
    check_export(&dir, "recurrent", recurrent, vec![token_ids(10, 30, 4)], ort);

    // Attention: positional embeddings, post-norm and pre-norm transformer encoders over padded ids, causal
    // attention of one sequence over another, time-distributed dense, slicing and element-wise merges.
    let attention = r#"
[model]
inputs = { ids = [9], context = [7, 8] }
outputs = ["out", "steps"]

[[model.nodes]]
name = "emb"
from = ["ids"]
embedding = { input_dim = 25, output_dim = 8, padding_idx = 0 }

[[model.nodes]]
name = "pos"
from = ["emb"]
positional_embedding = { max_len = 16 }

[[model.nodes]]
name = "enc1"
from = ["pos"]
transformer_encoder = { num_heads = 2, ff_dim = 16 }

[[model.nodes]]
name = "enc2"
from = ["enc1"]
transformer_encoder = { num_heads = 4, ff_dim = 12, norm_first = true, activation = "gelu" }

[[model.nodes]]
name = "causal"
from = ["enc2"]
multi_head_attention = { num_heads = 2, causal = true }

[[model.nodes]]
name = "cross"
from = ["context", "enc2"]
multi_head_attention = { num_heads = 2 }

[[model.nodes]]
name = "steps"
from = ["cross"]
time_distributed = { layer = { dense = { units = 3, activation = "tanh" } } }

[[model.nodes]]
name = "sum"
from = ["causal", "enc1"]
add = {}

[[model.nodes]]
name = "prod"
from = ["sum", "pos"]
multiply = {}

[[model.nodes]]
name = "half"
from = ["prod"]
slice = { start = 0, end = 4 }

[[model.nodes]]
name = "pool"
from = ["half"]
global_max_pool1d = {}

[[model.nodes]]
name = "sinus"
from = ["cross"]
positional_embedding = { max_len = 7, kind = "sinusoidal" }

[[model.nodes]]
name = "ctx"
from = ["sinus"]
global_avg_pool1d = {}

[[model.nodes]]
name = "both"
from = ["pool", "ctx"]
concatenate = {}

[[model.nodes]]
name = "out"
from = ["both"]
dense = { units = 2 }
"#;
    check_export(
        &dir,
        "attention",
        attention,
        vec![token_ids(9, 25, 5), random_input(&[7, 8], 6)],
        ort,
    );

    // BERT encoders (random weights, two sizes and activations): sentence pooling of three kinds normalized, and
    // the token vectors with their padding mask.
    let bert = r#"
[model]
inputs = { ids = [12] }
outputs = ["out", "tokens", "tokens_pool"]

[[model.nodes]]
name = "bert"
from = ["ids"]
bert = { config = { vocab_size = 40, hidden_size = 16, num_hidden_layers = 2, num_attention_heads = 4, intermediate_size = 24, max_position_embeddings = 32 }, pooling = "mean+max+cls", normalize = true }

[[model.nodes]]
name = "tokens"
from = ["ids"]
bert = { config = { vocab_size = 40, hidden_size = 8, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 16, hidden_act = "gelu_new", max_position_embeddings = 16 }, pooling = "none" }

[[model.nodes]]
name = "tokens_pool"
from = ["tokens"]
global_avg_pool1d = {}

[[model.nodes]]
name = "out"
from = ["bert"]
dense = { units = 2 }
"#;
    check_export(&dir, "bert", bert, vec![token_ids(12, 40, 7)], ort);

    check_trained_run(&dir, ort);

    // A model that is not a run directory is named.
    let e = expect_error(graft(&[
        "export",
        "--model",
        dir.join("none").to_str().unwrap(),
        "--onnx",
        dir.join("x.onnx").to_str().unwrap(),
    ]));
    assert!(e.contains("none"), "{e}");
}
