//! ONNX export: a trained graft model as an ONNX graph (IR 8, opset 17) that ONNX Runtime and other engines run
//! without graft. Every node of the model becomes the operators that compute what its `forward` computes at
//! inference (dropout off, batch norm on its running statistics, a VAE's sampling passing the mean), weights stored
//! under their PyTorch state-dict names. Padding masks travel beside the values as boolean tensors, as they do in
//! graft: an `embedding` with `padding_idx` makes one, recurrent layers read it as sequence lengths, pooling and
//! attention as masks. The preprocessing (vocabulary, scaling, class names) stays in `preprocess.json`; the
//! exported model takes what the model itself takes, token ids as int64.

mod bert;
mod builder;
mod layers;
pub mod proto;
mod recurrent;

use std::path::Path;

use prost::Message;

use crate::data::fsio::write_atomic;
use crate::error::{Context, Error, Result};
use crate::infer::manifest::MANIFEST_FILE;
use crate::infer::predict::{Predictor, check_run_dir};
use crate::layers::{LayerSpec, Shape};
use crate::model::Graph;
use crate::model::graph::Source;
use crate::model::io::load_model;
use crate::task::head::TaskHead;
use crate::task::loss::Task;
use builder::GraphBuilder;
use burn::prelude::Device;
use proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto, data_type};

/// The ONNX operator set the exported graph uses.
pub const OPSET: i64 = 17;
/// The ONNX IR version written (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;

/// A tensor of the ONNX graph standing for a graft value: its name, per-sample shape, whether it holds int64
/// token ids (a model input read only by embeddings), and the name of its padding mask (`[batch, steps]`, true
/// where padded) when it carries one.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub name: String,
    pub shape: Shape,
    pub int: bool,
    pub mask: Option<String>,
}

impl Val {
    fn with(&self, name: String, shape: Shape) -> Val {
        Val {
            name,
            shape,
            int: false,
            mask: self.mask.clone(),
        }
    }

    /// The value's rank with the batch axis.
    fn rank(&self) -> usize {
        self.shape.len() + 1
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxExport {
    /// Model inputs: name, element type (`float32` or `int64`), per-sample shape.
    pub inputs: Vec<(String, &'static str, Shape)>,
    /// Model outputs: name and per-sample shape.
    pub outputs: Vec<(String, Shape)>,
    pub operators: usize,
    pub bytes: usize,
}

/// An output added beside the model's own: what `graft predict` makes of a model output's logits.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOutput {
    /// `probabilities` or `predictions` (`TASK.probabilities` for a task of a multi-task model).
    pub name: String,
    /// The model output it reads.
    pub output: usize,
    pub kind: HeadKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeadKind {
    /// Class probabilities: softmax of logits / temperature.
    Softmax { temperature: f64 },
    /// Independent probabilities (binary, multi-label): sigmoid of logits / temperature.
    Sigmoid { temperature: f64 },
    /// A standardized regression target back in its own unit: value · std + mean.
    Unscale { mean: Vec<f64>, std: Vec<f64> },
}

impl HeadOutput {
    /// What `predict` reports for `head`: probabilities for classification, values in the target's unit for a
    /// standardized regression target; `None` when the model's output already is the answer.
    pub fn of(head: &TaskHead) -> Option<HeadOutput> {
        let temperature = head.temperature;
        let (suffix, kind) = match (head.task, &head.target_scaler) {
            (Task::Multiclass, _) => ("probabilities", HeadKind::Softmax { temperature }),
            (Task::Binary | Task::Multilabel, _) => ("probabilities", HeadKind::Sigmoid { temperature }),
            (Task::Regression, Some(s)) => (
                "predictions",
                HeadKind::Unscale {
                    mean: s.mean.clone(),
                    std: s.std.clone(),
                },
            ),
            (Task::Regression, None) => return None,
        };
        Some(HeadOutput {
            name: match &head.name {
                Some(task) => format!("{task}.{suffix}"),
                None => suffix.to_string(),
            },
            output: head.output,
            kind,
        })
    }

    fn lower(&self, b: &mut GraphBuilder, logits: &Val) -> String {
        let scaled = |b: &mut GraphBuilder, t: f64| {
            if t == 1.0 {
                logits.name.clone()
            } else {
                let t = b.scalar(t as f32);
                b.op("Div", &[&logits.name, &t], vec![])
            }
        };
        match &self.kind {
            HeadKind::Softmax { temperature } => {
                let x = scaled(b, *temperature);
                b.op("Softmax", &[&x], vec![("axis", builder::Attr::Int(-1))])
            }
            HeadKind::Sigmoid { temperature } => {
                let x = scaled(b, *temperature);
                b.op("Sigmoid", &[&x], vec![])
            }
            HeadKind::Unscale { mean, std } => {
                let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
                let std = b.floats(&[std.len()], &to_f32(std));
                let mean = b.floats(&[mean.len()], &to_f32(mean));
                let y = b.op("Mul", &[&logits.name, &std], vec![]);
                b.op("Add", &[&y, &mean], vec![])
            }
        }
    }
}

/// Converts `graph` into an ONNX model whose outputs are the model's, plus `heads`.
pub fn to_onnx(graph: &Graph, heads: &[HeadOutput]) -> Result<(ModelProto, OnnxExport)> {
    let mut b = GraphBuilder::default();
    let mut inputs = Vec::new();
    let mut input_vals = Vec::new();
    for (i, input) in graph.spec.inputs.iter().enumerate() {
        let int = reads_only_ids(graph, i);
        let (elem, label) = if int {
            (data_type::INT64, "int64")
        } else {
            (data_type::FLOAT, "float32")
        };
        b.input(&input.name, elem, &input.shape);
        inputs.push((input.name.clone(), label, input.shape.clone()));
        input_vals.push(Val {
            name: input.name.clone(),
            shape: input.shape.clone(),
            int,
            mask: None,
        });
    }
    let mut values: Vec<Vec<Val>> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let args: Vec<Val> = node.sources.iter().map(|s| fetch(&input_vals, &values, *s)).collect();
        let owner = &graph.nodes[node.layer_of];
        let layer = owner
            .layer
            .as_ref()
            .ok_or_else(|| Error::new("layer missing").at(format!("layer '{}'", node.name)))?;
        let out = layers::lower(&mut b, layer, &owner.name, args, &node.outputs, false)
            .at_with(|| format!("layer '{}' ({})", node.name, node.spec.kind()))?;
        values.push(out);
    }
    let mut head_outputs = Vec::new();
    for head in heads {
        let source = graph.outputs[head.output];
        let raw = fetch(&input_vals, &values, source);
        // The logits: the output node run again without its final softmax/sigmoid, as graft's heads read it.
        let logits = match source {
            Source::Node(n, 0) if graph.nodes[n].spec.ends_in_probability().is_some() => {
                let node = &graph.nodes[n];
                let owner = &graph.nodes[node.layer_of];
                let args: Vec<Val> = node.sources.iter().map(|s| fetch(&input_vals, &values, *s)).collect();
                let layer = owner.layer.as_ref().ok_or_else(|| Error::new("layer missing"))?;
                layers::lower(&mut b, layer, &owner.name, args, &node.outputs, true)
                    .at_with(|| format!("layer '{}' ({})", node.name, node.spec.kind()))?
                    .remove(0)
            }
            _ => raw,
        };
        head_outputs.push((head.name.clone(), head.lower(&mut b, &logits), logits.shape));
    }
    let mut outputs = Vec::new();
    for (source, name) in graph.outputs.iter().zip(&graph.spec.outputs) {
        let val = fetch(&input_vals, &values, *source);
        // Each output under the name the model gives it (`head`, `lstm:1`).
        b.node("Identity", &[&val.name], std::slice::from_ref(name), vec![]);
        b.output(name, &val.shape);
        outputs.push((name.clone(), val.shape.clone()));
    }
    for (name, tensor, shape) in head_outputs {
        b.node("Identity", &[&tensor], std::slice::from_ref(&name), vec![]);
        b.output(&name, &shape);
        outputs.push((name, shape));
    }
    let graph_proto = b.finish("graft");
    let operators = graph_proto.node.len();
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "graft".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "Exported by graft; the preprocessing is in the run directory's preprocess.json.".into(),
        graph: Some(graph_proto),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: vec![StringStringEntryProto {
            key: "graft.model".into(),
            value: graph.spec.to_toml().map(|v| v.to_string()).unwrap_or_default(),
        }],
    };
    let bytes = model.encoded_len();
    Ok((
        model,
        OnnxExport {
            inputs,
            outputs,
            operators,
            bytes,
        },
    ))
}

/// Writes `graph` as an ONNX file at `path` (atomically).
pub fn export_onnx(graph: &Graph, heads: &[HeadOutput], path: &Path) -> Result<OnnxExport> {
    let (model, summary) = to_onnx(graph, heads)?;
    write_atomic(path, &model.encode_to_vec()).in_file(path)?;
    Ok(summary)
}

/// Exports the model of run directory `dir` to `path`, with what `graft predict` reports (probabilities,
/// predictions in the target's unit) as further outputs when the run has its `preprocess.json`.
pub fn export_run(dir: &Path, path: &Path, device: &Device) -> Result<OnnxExport> {
    check_run_dir(dir)?;
    if !dir.join(MANIFEST_FILE).is_file() {
        return export_onnx(&load_model(dir, device)?, &[], path);
    }
    let predictor = Predictor::load(dir, device)?;
    let heads: Vec<HeadOutput> = if predictor.objective.is_some() {
        vec![]
    } else if predictor.tasks.is_empty() {
        HeadOutput::of(&predictor.head).into_iter().collect()
    } else {
        predictor.tasks.iter().filter_map(HeadOutput::of).collect()
    };
    export_onnx(&predictor.graph, &heads, path)
}

fn fetch(inputs: &[Val], values: &[Vec<Val>], source: Source) -> Val {
    match source {
        Source::Input(i) => inputs[i].clone(),
        Source::Node(n, o) => values[n][o].clone(),
    }
}

/// Whether model input `i` feeds only layers that read token ids, so the exported model takes it as int64.
fn reads_only_ids(graph: &Graph, i: usize) -> bool {
    let mut readers = graph
        .nodes
        .iter()
        .filter(|n| n.sources.contains(&Source::Input(i)))
        .peekable();
    readers.peek().is_some()
        && readers.all(|n| matches!(n.spec, LayerSpec::Embedding(_) | LayerSpec::Bert(_)))
        && !graph.outputs.contains(&Source::Input(i))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use burn::prelude::Device;

    use super::*;
    use crate::model::spec::ModelSpec;

    fn graph(model: &str) -> Graph {
        let value: toml::Value = toml::from_str(model).unwrap();
        let spec = ModelSpec::from_toml(&value["model"], "model").unwrap();
        Graph::build(&spec, &Device::default()).unwrap()
    }

    /// Every operator reads only tensors that exist by then: graph inputs, initializers, earlier outputs.
    fn assert_well_formed(model: &ModelProto) {
        let g = model.graph.as_ref().unwrap();
        let mut known: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
        known.extend(g.initializer.iter().map(|t| t.name.as_str()));
        for node in &g.node {
            for input in node.input.iter().filter(|i| !i.is_empty()) {
                assert!(known.contains(input.as_str()), "{} reads unknown {input}", node.op_type);
            }
            for output in &node.output {
                assert!(known.insert(output), "{output} written twice");
            }
        }
        for output in &g.output {
            assert!(
                known.contains(output.name.as_str()),
                "output {} never written",
                output.name
            );
        }
    }

    #[test]
    fn a_model_round_trips_through_the_protobuf_encoding_with_its_names_and_shapes() {
        let g = graph(
            r#"
[model]
inputs = { ids = [5], extra = [3] }
outputs = ["out", "lstm:1"]
[[model.nodes]]
name = "emb"
from = ["ids"]
embedding = { input_dim = 9, output_dim = 4, padding_idx = 0 }
[[model.nodes]]
name = "lstm"
from = ["emb"]
lstm = { units = 3, return_state = true }
[[model.nodes]]
name = "joined"
from = ["lstm", "extra"]
concatenate = {}
[[model.nodes]]
name = "out"
from = ["joined"]
dense = { units = 2, activation = "softmax" }
"#,
        );
        let (model, summary) = to_onnx(&g, &[]).unwrap();
        let decoded = ModelProto::decode(model.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, model);
        assert_eq!(decoded.opset_import[0].version, OPSET);
        assert_well_formed(&decoded);
        assert_eq!(
            summary.inputs,
            vec![("ids".into(), "int64", vec![5]), ("extra".into(), "float32", vec![3])]
        );
        assert_eq!(
            summary.outputs,
            vec![("out".into(), vec![2]), ("lstm:1".into(), vec![3])]
        );
        let graph = decoded.graph.unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        for op in ["Gather", "LSTM", "Concat", "Gemm", "Softmax"] {
            assert!(ops.contains(&op), "{op} missing from {ops:?}");
        }
        // Weights under their state-dict names.
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert!(
            names.contains(&"emb.weight") && names.contains(&"out.weight"),
            "{names:?}"
        );
        // The batch axis is free, the rest fixed.
        let dims = &graph.input[0].r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        let dims = &dims.shape.as_ref().unwrap().dim;
        assert_eq!(dims[0].value, Some(proto::DimensionValue::DimParam("batch".into())));
        assert_eq!(dims[1].value, Some(proto::DimensionValue::DimValue(5)));
    }

    #[test]
    fn a_shared_layer_stores_its_weights_once() {
        let g = graph(
            r#"
[model]
inputs = { a = [4], b = [4] }
outputs = ["sum"]
[[model.nodes]]
name = "enc"
from = ["a"]
dense = { units = 3 }
[[model.nodes]]
name = "enc_b"
from = ["b"]
shared = "enc"
[[model.nodes]]
name = "sum"
from = ["enc", "enc_b"]
add = {}
"#,
        );
        let (model, _) = to_onnx(&g, &[]).unwrap();
        assert_well_formed(&model);
        let graph = model.graph.unwrap();
        let weights = graph.initializer.iter().filter(|t| t.name == "enc.weight").count();
        assert_eq!(weights, 1);
        assert_eq!(graph.node.iter().filter(|n| n.op_type == "Gemm").count(), 2);
    }

    #[test]
    fn what_onnx_cannot_express_is_named_with_the_layer() {
        let g = graph(
            r#"
[model]
input = [4, 3]
layers = [{ name = "rnn", simple_rnn = { units = 2, activation = "gelu" } }]
"#,
        );
        let e = to_onnx(&g, &[]).unwrap_err().to_string();
        assert!(e.contains("layer 'rnn'") && e.contains("tanh, relu or sigmoid"), "{e}");
    }
}
