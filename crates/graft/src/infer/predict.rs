//! `predict`: load a run directory, apply the model to raw inputs, write outputs as `.npy` or `.jsonl`.

use std::path::Path;

use serde_json::{Value as Json, json};

use crate::data::prepare::Preprocessor;
use crate::data::{Array, write_npy_f32};
use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::io::load_model;
use crate::report::write_atomic;
use crate::train::loss::{LossSpec, Task};
use crate::train::task::TaskHead;
use crate::train::trainer::input_data;
use burn::prelude::*;

/// A trained model with what it needs to turn raw inputs into predictions.
pub struct Predictor {
    pub graph: Graph,
    pub head: TaskHead,
    /// A multi-task model's tasks, each with the output that serves it (empty for a single-task model).
    pub tasks: Vec<TaskHead>,
    pub preprocessor: Preprocessor,
}

impl Predictor {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let graph = load_model(dir, device)?;
        let path = dir.join("preprocess.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let pre: Json = serde_json::from_str(&text).map_err(|e| Error::new(e.to_string()).in_file(&path))?;
        let loss: LossSpec =
            serde_json::from_value(pre["loss"].clone()).map_err(|e| Error::new(format!("loss: {e}")).in_file(&path))?;
        let classes: Vec<String> = serde_json::from_value(pre["classes"].clone()).unwrap_or_default();
        let outputs = *graph.output_shapes()[0].last().unwrap_or(&1);
        let head = TaskHead::new(&loss, outputs, classes).map_err(|e| e.in_file(&path))?;
        let preprocessor: Preprocessor = match pre.get("preprocessor") {
            Some(p) => serde_json::from_value(p.clone())
                .map_err(|e| Error::new(format!("preprocessor: {e}")).in_file(&path))?,
            None => Preprocessor::None,
        };
        let mut tasks = vec![];
        for t in pre.get("tasks").and_then(Json::as_array).into_iter().flatten() {
            let bad = |what: &str| Error::new(format!("tasks: {what}")).in_file(&path);
            let name = t["name"].as_str().ok_or_else(|| bad("a task without a name"))?;
            let loss: LossSpec = serde_json::from_value(t["loss"].clone()).map_err(|e| bad(&e.to_string()))?;
            let output = t["output"].as_u64().ok_or_else(|| bad("a task without its output"))? as usize;
            let width = graph
                .output_shapes()
                .get(output)
                .and_then(|s| s.last().copied())
                .ok_or_else(|| bad(&format!("task '{name}' names output {output}, which the model lacks")))?;
            let classes: Vec<String> = serde_json::from_value(t["classes"].clone()).unwrap_or_default();
            let mut head = TaskHead::new(&loss, width, classes).map_err(|e| e.in_file(&path))?;
            head.name = Some(name.to_string());
            head.output = output;
            tasks.push(head);
        }
        Ok(Predictor {
            graph,
            head,
            tasks,
            preprocessor,
        })
    }

    /// Probabilities (classification) or values (regression), `[N, K]` row-major.
    pub fn predict(&self, inputs: &Array) -> Result<Array> {
        Ok(self.predict_heads(inputs, std::slice::from_ref(&self.head))?.remove(0))
    }

    /// One array per head (see [`Predictor::predict`]), all from one forward pass per batch.
    pub fn predict_heads(&self, inputs: &Array, heads: &[TaskHead]) -> Result<Vec<Array>> {
        if self.graph.spec.inputs.len() > 1 {
            return Err(Error::new(format!(
                "this model has {} inputs; predict reads one input file, so feed models with several inputs through \
                 `graft eval` or the Rust API",
                self.graph.spec.inputs.len()
            )));
        }
        let expected = &self.graph.spec.inputs[0].shape;
        if inputs.sample_shape() != expected.as_slice() {
            return Err(Error::new(format!(
                "inputs have per-sample shape {:?}, the model expects {:?}",
                inputs.sample_shape(),
                expected
            )));
        }
        let device = burn::module::Module::devices(&self.graph)
            .first()
            .cloned()
            .unwrap_or_default();
        let mut out = vec![vec![]; heads.len()];
        let mut widths = vec![0; heads.len()];
        for start in (0..inputs.len()).step_by(256) {
            let idx: Vec<usize> = (start..(start + 256).min(inputs.len())).collect();
            let x = input_data(&inputs.select(&idx), &device)?;
            let outs = self.graph.forward(vec![x], false, true)?;
            for (h, head) in heads.iter().enumerate() {
                let logits = match outs[head.output].data.clone() {
                    crate::model::value::Data::D2(t) => t,
                    other => other.reshape(&[idx.len(), usize::MAX])?.d2()?,
                };
                let probs = head.probabilities(logits);
                widths[h] = probs.dims()[1];
                out[h].extend(probs.into_data().try_to_vec::<f32>().unwrap_or_default());
            }
        }
        out.into_iter()
            .zip(widths)
            .map(|(values, width)| Array::new(vec![inputs.len(), width], values))
            .collect()
    }
}

/// Reads raw `input` (`.npy`, or the format the model was trained on: IDX, CSV, text lines), applies the stored
/// preprocessing, predicts, writes `output` (`.npy` or `.jsonl`).
/// With `from_layer`, `input` is a `.npy` of that layer's outputs (from `graft embed --layer`) and only the part of
/// the model after it runs.
pub fn predict_file(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    from_layer: Option<&str>,
    device: &Device,
) -> Result<usize> {
    let mut predictor = Predictor::load(model_dir, device)?;
    let inputs = match from_layer {
        Some(name) => {
            predictor.graph = predictor.graph.after(name).map_err(|e| e.at("--from-layer"))?;
            if input.extension().and_then(|e| e.to_str()) != Some("npy") {
                return Err(Error::new(format!(
                    "--from-layer {name} reads that layer's outputs from a .npy file (`graft embed --layer {name}` \
                     writes one)"
                ))
                .in_file(input));
            }
            crate::data::read_npy_f32(input)?
        }
        None => predictor.preprocessor.read_inputs(input)?,
    };
    if !predictor.tasks.is_empty() {
        return write_task_predictions(&predictor, &inputs, input, output);
    }
    let preds = predictor.predict(&inputs).map_err(|e| e.in_file(input))?;
    match output.extension().and_then(|e| e.to_str()) {
        Some("npy") => write_npy_f32(output, &preds)?,
        Some("jsonl") => {
            let mut text = String::new();
            for i in 0..preds.len() {
                let line = row_json(&predictor.head, preds.row(i));
                text.push_str(&line.to_string());
                text.push('\n');
            }
            write_atomic(output, text.as_bytes())?;
        }
        _ => return Err(Error::new("the output must end in .npy or .jsonl").in_file(output)),
    }
    Ok(preds.len())
}

/// One prediction as JSON: class, class index and probabilities (classification), probabilities and labels
/// (multi-label), or values (regression).
fn row_json(head: &TaskHead, row: &[f32]) -> Json {
    match head.task {
        Task::Multiclass | Task::Binary => {
            let probs: Vec<f32> = if head.task == Task::Binary {
                vec![1.0 - row[0], row[0]]
            } else {
                row.to_vec()
            };
            let best = probs
                .iter()
                .enumerate()
                .fold(0, |b, (j, p)| if *p > probs[b] { j } else { b });
            let name = head.classes.get(best).cloned().unwrap_or_else(|| best.to_string());
            json!({"class": name, "class_index": best, "probabilities": probs})
        }
        Task::Multilabel => json!({"probabilities": row, "labels": row.iter().map(|p| *p > 0.5).collect::<Vec<_>>()}),
        Task::Regression => json!({"values": row}),
    }
}

/// A multi-task model's predictions: one JSON line per input with one object per task, all heads from one forward
/// pass.
fn write_task_predictions(predictor: &Predictor, inputs: &Array, input: &Path, output: &Path) -> Result<usize> {
    if output.extension().and_then(|e| e.to_str()) != Some("jsonl") {
        return Err(
            Error::new("a multi-task model predicts several things per input; write them to a .jsonl file")
                .in_file(output),
        );
    }
    let preds = predictor
        .predict_heads(inputs, &predictor.tasks)
        .map_err(|e| e.in_file(input))?;
    let mut text = String::new();
    for i in 0..inputs.len() {
        let line: serde_json::Map<String, Json> = predictor
            .tasks
            .iter()
            .zip(&preds)
            .map(|(head, p)| (head.name.clone().unwrap_or_default(), row_json(head, p.row(i))))
            .collect();
        text.push_str(&Json::Object(line).to_string());
        text.push('\n');
    }
    write_atomic(output, text.as_bytes())?;
    Ok(inputs.len())
}
