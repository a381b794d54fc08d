//! What a run does after training, on the validation split: temperature scaling of classification heads,
//! decision thresholds of binary and multi-label heads, and the rejection threshold for unknown inputs (`ood.json`);
//! each writes its numbers into the run's `metrics.json` beside the test metrics.

use std::path::Path;

use burn::prelude::*;
use serde_json::{Map, Value as Json, json};

use crate::data::Dataset;
use crate::error::{Context, Error, Result};
use crate::experiment::data::Splits;
use crate::model::Graph;
use crate::report::write_atomic;
use crate::task::head::TaskHead;
use crate::task::loss::Task;

/// Fits each classification head's temperature on the validation split (minimizing its NLL) and returns, per head,
/// the temperature with the validation NLL and the test ECE before and after.
pub(crate) fn calibrate_temperature(
    model: &Graph,
    heads: &mut [TaskHead],
    validation: &Dataset,
    uncalibrated_test: Option<&Map<String, Json>>,
) -> Result<Json> {
    let mut out = Map::new();
    for (h, head) in heads.iter_mut().enumerate() {
        if !head.is_classification() {
            continue;
        }
        let outputs = crate::train::trainer::collect_outputs(model, head, validation, 256)?;
        let (logits, labels, k) = (outputs.logits, outputs.labels, outputs.width);
        if labels.is_empty() {
            return Err(Error::new("temperature scaling needs class labels").at("train.calibrate"));
        }
        let t = crate::task::calibration::fit_temperature(&logits, &labels, k);
        let before = crate::task::calibration::nll_with_temperature(&logits, &labels, k, 1.0);
        let after = crate::task::calibration::nll_with_temperature(&logits, &labels, k, t);
        head.temperature = t;
        let test_before = uncalibrated_test.and_then(|m| match &head.name {
            Some(n) => m.get(n).and_then(|t| t.get("ece")).and_then(Json::as_f64),
            None => m.get("ece").and_then(Json::as_f64),
        });
        let key = head
            .name
            .clone()
            .unwrap_or_else(|| if h == 0 { "model".into() } else { h.to_string() });
        out.insert(
            key,
            json!({"temperature": t, "validation_nll_before": before, "validation_nll_after": after, "test_ece_before": test_before}),
        );
    }
    Ok(Json::Object(out))
}

/// Tunes the decision threshold of every binary or multi-label head on the validation split (per label), and
/// returns them with the objective's validation value.
pub(crate) fn tune_thresholds(
    model: &Graph,
    heads: &mut [TaskHead],
    validation: &Dataset,
    spec: &crate::task::threshold::ThresholdSpec,
) -> Result<Json> {
    let mut out = Map::new();
    for head in heads.iter_mut() {
        if !matches!(head.task, Task::Binary | Task::Multilabel) {
            continue;
        }
        let outputs = crate::train::trainer::collect_outputs(model, head, validation, 256)?;
        let k = outputs.width;
        // Thresholds apply to the probabilities exactly as predict computes them (the same tensor operations).
        let n = outputs.logits.len() / k.max(1);
        let device = model.devices().first().cloned().unwrap_or_default();
        let logits = Tensor::<2>::from_data(burn::tensor::TensorData::new(outputs.logits, [n, k]), &device);
        let probs: Vec<f32> = head
            .probabilities(logits)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let truth: Vec<bool> = if head.task == Task::Binary {
            outputs.labels.iter().map(|&l| l == 1).collect()
        } else {
            outputs.values.iter().map(|&v| v > 0.5).collect()
        };
        let mut thresholds = vec![];
        let mut values = vec![];
        for j in 0..k {
            let scores: Vec<f32> = probs.iter().skip(j).step_by(k).copied().collect();
            let positives: Vec<bool> = truth.iter().skip(j).step_by(k).copied().collect();
            // A label the objective cannot be met for keeps 0.5.
            let (t, v) = crate::task::threshold::tune(&scores, &positives, &spec.objective).unwrap_or((0.5, f64::NAN));
            thresholds.push(t);
            values.push(v);
        }
        head.thresholds = Some(thresholds.clone());
        let key = head.name.clone().unwrap_or_else(|| "model".into());
        out.insert(
            key,
            json!({"objective": spec.objective, "thresholds": thresholds, "validation_value": values}),
        );
    }
    if out.is_empty() {
        return Err(Error::new("thresholds apply to binary and multi-label outputs").at("train.threshold"));
    }
    Ok(Json::Object(out))
}

/// Adds `value` under `key` to the run's `metrics.json`, with each head's calibrated test ECE.
pub(crate) fn add_to_metrics(dir: &Path, key: &str, mut value: Json, test: &Map<String, Json>) -> Result<()> {
    if key == "calibration"
        && let Some(heads) = value.as_object_mut()
    {
        for (name, entry) in heads.iter_mut() {
            let ece = if name == "model" {
                test.get("ece")
            } else {
                test.get(name).and_then(|t| t.get("ece"))
            };
            entry["test_ece_after"] = ece.cloned().unwrap_or(Json::Null);
        }
    }
    let path = dir.join("metrics.json");
    let text = std::fs::read_to_string(&path).in_file(&path)?;
    let mut doc: Json = serde_json::from_str(&text).map_err(|e| Error::new(e.to_string()).in_file(&path))?;
    doc[key] = value;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&path, text.as_bytes())
}

/// Fits the rejection threshold of a single classification model on the validation split (`[train] reject`),
/// writes `ood.json` and adds the threshold to `metrics.json`.
pub(crate) fn reject_unknown(
    spec: &crate::infer::ood::RejectSpec,
    out: &Path,
    model: &Graph,
    heads: &[TaskHead],
    splits: &Splits,
    quiet: bool,
) -> Result<()> {
    let validation = splits.validation.as_ref().ok_or_else(|| {
        Error::new("the rejection threshold is set on the validation split; the data has none").at("train.reject")
    })?;
    if heads.len() != 1 || !heads[0].is_classification() {
        return Err(Error::new("rejecting unknown inputs applies to a single classification task").at("train.reject"));
    }
    let predictor = crate::infer::predict::Predictor {
        text_column: None,
        graph: model.clone(),
        head: heads[0].clone(),
        tasks: vec![],
        preprocessor: splits.preprocessor.clone(),
        ood: None,
        objective: None,
    };
    let (ood, kept) = crate::infer::reject::fit_rejection(&predictor, spec, &splits.train, validation)?;
    ood.write(out)?;
    let threshold = ood.reject.as_ref().map_or(f64::NAN, |r| r.threshold);
    if !quiet {
        eprintln!(
            "reject: {} above {threshold:.6} (keeps {:.1}% of validation inputs)",
            spec.score,
            kept * 100.0
        );
    }
    add_to_metrics(
        out,
        "reject",
        json!({"score": spec.score, "keep": spec.keep, "threshold": threshold, "validation_kept": kept}),
        &Map::new(),
    )?;
    Ok(())
}
