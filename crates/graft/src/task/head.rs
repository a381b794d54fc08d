//! The task a model is trained for — what its targets are, how its logits become probabilities and which
//! metrics apply — derived from the loss and the data.

use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Int, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::data::{Array, Batch};
use crate::error::{Error, Result};
use crate::task::loss::{LossSpec, Target, Task};
use crate::task::metrics::{ClassificationAccumulator, MultiLabelAccumulator, RegressionAccumulator};
use graft_data::suggest::hint;

#[derive(Debug, Clone)]
pub struct TaskHead {
    pub task: Task,
    pub loss: LossSpec,
    /// Output width of the model.
    pub outputs: usize,
    /// Class names (classification) — index order.
    pub classes: Vec<String>,
    /// In multi-task training, the task's name (its labels in the data, its metrics' prefix); `None` for a model
    /// trained for one task.
    pub name: Option<String>,
    /// Which model output serves this task.
    pub output: usize,
    /// This task's share of the total loss.
    pub weight: f64,
    /// Metrics logged per epoch; empty: `[train] metrics`.
    pub metrics: Vec<String>,
    /// `"balanced"` or explicit class weights for this task's loss.
    pub class_weights: Option<crate::task::head::ClassWeights>,
    /// Logits are divided by this before the softmax or sigmoid (temperature scaling; 1 until calibrated).
    pub temperature: f64,
    /// Tuned decision thresholds (binary: one; multi-label: one per label): positive at probability ≥ t.
    pub thresholds: Option<Vec<f64>>,
    /// Regression: the model's outputs are the target standardized by these training statistics.
    pub target_scaler: Option<TargetScaler>,
}

/// Per output column, the training targets' mean and standard deviation: the loss sees `(y - mean) / std`, and
/// outputs are turned back into the target's unit (`output · std + mean`) for metrics and predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetScaler {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl TargetScaler {
    /// The statistics of `values` (row-major, `width` columns); a constant column keeps a scale of 1.
    pub fn fit(values: &[f32], width: usize) -> Option<Self> {
        let rows = values.len() / width.max(1);
        if rows == 0 || width == 0 {
            return None;
        }
        let mut mean = vec![0.0; width];
        for row in values.chunks_exact(width) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let mut var = vec![0.0; width];
        for row in values.chunks_exact(width) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let std = var
            .into_iter()
            .map(|s| {
                let sd = (s / rows as f64).sqrt();
                if sd > 0.0 && sd.is_finite() { sd } else { 1.0 }
            })
            .collect();
        Some(TargetScaler { mean, std })
    }

    pub fn width(&self) -> usize {
        self.mean.len()
    }

    /// Target values (row-major) → what the model learns.
    pub fn scale(&self, values: &[f32]) -> Vec<f32> {
        let k = self.width().max(1);
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| ((f64::from(v) - self.mean[i % k]) / self.std[i % k]) as f32)
            .collect()
    }

    /// Model outputs (row-major) → the target's unit.
    pub fn unscale(&self, outputs: &[f32]) -> Vec<f32> {
        let k = self.width().max(1);
        outputs
            .iter()
            .enumerate()
            .map(|(i, &v)| (f64::from(v) * self.std[i % k] + self.mean[i % k]) as f32)
            .collect()
    }
}

impl TaskHead {
    pub fn new(loss: &LossSpec, outputs: usize, classes: Vec<String>) -> Result<Self> {
        let task = loss.task(outputs);
        match task {
            Task::Multiclass if !classes.is_empty() && classes.len() != outputs => {
                return Err(Error::new(format!(
                    "the data has {} classes but the model outputs {outputs} values; make the last layer `units = {}`",
                    classes.len(),
                    classes.len()
                )));
            }
            Task::Multilabel if !classes.is_empty() && classes.len() != outputs => {
                return Err(Error::new(format!(
                    "the data has {} labels but the model outputs {outputs} values; make the last layer `units = {}`",
                    classes.len(),
                    classes.len()
                )));
            }
            Task::Binary if classes.len() > 2 => {
                return Err(Error::new(format!(
                    "a binary loss (binary_crossentropy, hinge) with one output needs 2 classes, the data has {}",
                    classes.len()
                )));
            }
            _ => {}
        }
        Ok(TaskHead {
            task,
            loss: loss.clone(),
            outputs,
            classes,
            name: None,
            output: 0,
            weight: 1.0,
            metrics: vec![],
            class_weights: None,
            temperature: 1.0,
            thresholds: None,
            target_scaler: None,
        })
    }

    /// The batch as this head sees it: for a task of multi-task data, that task's targets, with the rows that have
    /// no label for it weighted 0 (they add nothing to the loss or its gradient), and the rows that have one.
    pub fn view(&self, batch: &Batch) -> Result<(Batch, Option<Vec<usize>>)> {
        let Some(name) = &self.name else {
            return Ok((batch.clone(), None));
        };
        let labels = batch
            .tasks
            .iter()
            .find(|t| &t.name == name)
            .ok_or_else(|| Error::new(format!("the data has no labels for the task '{name}'")))?;
        let (class_ids, values) = match &labels.targets {
            crate::data::Targets::Classes { labels, .. } => (Some(labels.clone()), None),
            crate::data::Targets::Values(v) => (None, Some(v.clone())),
        };
        let weights: Vec<f32> = labels
            .present
            .iter()
            .enumerate()
            .map(|(r, &p)| {
                if p {
                    batch.weights.as_ref().map_or(1.0, |w| w[r])
                } else {
                    0.0
                }
            })
            .collect();
        let keep: Vec<usize> = (0..labels.present.len()).filter(|&r| labels.present[r]).collect();
        let view = Batch {
            inputs: batch.inputs.clone(),
            labels: class_ids,
            values,
            weights: Some(weights),
            extra_inputs: vec![],
            tasks: vec![],
        };
        Ok((view, Some(keep)))
    }

    /// The class labels this head trains on (multi-task: of the rows labelled for its task).
    pub fn train_labels(&self, data: &crate::data::Dataset) -> Option<Vec<usize>> {
        match &self.name {
            None => data.labels().map(<[usize]>::to_vec),
            Some(name) => {
                let task = data.task(name)?;
                match &task.targets {
                    crate::data::Targets::Classes { labels, .. } => Some(
                        labels
                            .iter()
                            .zip(&task.present)
                            .filter(|(_, p)| **p)
                            .map(|(l, _)| *l)
                            .collect(),
                    ),
                    _ => None,
                }
            }
        }
    }

    /// A metric's name in the logs: `accuracy`, or `task_accuracy` in multi-task training.
    pub fn log_name(&self, metric: &str) -> String {
        match &self.name {
            Some(n) => format!("{n}_{metric}"),
            None => metric.to_string(),
        }
    }

    /// Whether class weights go into the loss itself (cross-entropy on labels) instead of onto the rows.
    pub fn loss_takes_class_weights(&self) -> bool {
        self.task == Task::Multiclass && self.loss.takes_class_weights()
    }

    pub fn is_classification(&self) -> bool {
        matches!(self.task, Task::Multiclass | Task::Binary)
    }

    pub fn num_classes(&self) -> usize {
        match self.task {
            Task::Multiclass => self.outputs,
            Task::Binary => 2,
            _ => 0,
        }
    }

    /// The batch's targets as tensors.
    pub fn target(&self, batch: &Batch, device: &Device) -> Result<Target> {
        match (self.task, &batch.labels, &batch.values) {
            (Task::Multiclass, Some(labels), _)
                if matches!(
                    self.loss,
                    LossSpec::SparseCategoricalCrossentropy { .. }
                        | LossSpec::CategoricalCrossentropy { .. }
                        | LossSpec::MulticlassHinge
                ) =>
            {
                let ids: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
                Ok(Target::Classes(Tensor::<1, Int>::from_data(
                    TensorData::new(ids, [labels.len()]),
                    device,
                )))
            }
            (Task::Binary, Some(labels), _) => {
                let v: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
                Ok(Target::Values(Tensor::<2>::from_data(
                    TensorData::new(v, [labels.len(), 1]),
                    device,
                )))
            }
            (Task::Regression, _, Some(values))
                if self
                    .target_scaler
                    .as_ref()
                    .is_some_and(|s| s.width() == values.sample_size()) =>
            {
                let scaler = self.target_scaler.as_ref().expect("checked above");
                let scaled = Array::new(values.shape.clone(), scaler.scale(&values.data))?;
                Ok(Target::Values(array_2d(&scaled, device)))
            }
            (_, _, Some(values)) => Ok(Target::Values(array_2d(values, device))),
            _ => Err(Error::new(format!(
                "the loss {:?} needs {} targets, which the data does not have",
                self.loss,
                if self.is_classification() {
                    "class-label"
                } else {
                    "numeric"
                }
            ))),
        }
    }

    /// Logits `[N, K]` → probabilities (softmax for multi-class, sigmoid for binary/multi-label), or the values
    /// themselves for regression.
    pub fn probabilities(&self, logits: Tensor<2>) -> Tensor<2> {
        let logits = if self.temperature != 1.0 && self.is_classification() {
            logits.div_scalar(self.temperature)
        } else {
            logits
        };
        match (self.task, &self.target_scaler) {
            (Task::Multiclass, _) => softmax(logits, 1),
            (Task::Binary | Task::Multilabel, _) => sigmoid(logits),
            (Task::Regression, Some(s)) if s.width() == logits.dims()[1] => {
                let device = logits.device();
                let row = |v: &[f64]| {
                    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    Tensor::<2>::from_data(TensorData::new(v, [1, s.width()]), &device)
                };
                logits.mul(row(&s.std)).add(row(&s.mean))
            }
            (Task::Regression, _) => logits,
        }
    }
}

/// A `[N, ...]` array as a `[N, prod]` tensor.
pub fn array_2d(a: &Array, device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(a.data.clone(), [a.len(), a.sample_size()]), device)
}

/// Accumulates an epoch of predictions for whichever task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum EpochMetrics {
    Classification(ClassificationAccumulator),
    MultiLabel(MultiLabelAccumulator),
    Regression(RegressionAccumulator),
}

impl EpochMetrics {
    pub fn new(head: &TaskHead) -> Self {
        match head.task {
            Task::Multiclass | Task::Binary => EpochMetrics::Classification(
                ClassificationAccumulator::new(head.num_classes().max(1)).with_threshold(
                    head.thresholds
                        .as_ref()
                        .and_then(|t| t.first().copied())
                        .filter(|_| head.task == Task::Binary),
                ),
            ),
            Task::Multilabel => EpochMetrics::MultiLabel(
                MultiLabelAccumulator::new(head.outputs.max(1)).with_thresholds(head.thresholds.clone()),
            ),
            Task::Regression => EpochMetrics::Regression(RegressionAccumulator::new(head.outputs.max(1))),
        }
    }

    /// `probs`: what [`TaskHead::probabilities`] gave, row-major.
    pub fn update(&mut self, head: &TaskHead, probs: &[f32], batch: &Batch) {
        match self {
            EpochMetrics::Classification(acc) => {
                let Some(labels) = &batch.labels else { return };
                if head.task == Task::Binary {
                    let two: Vec<f32> = probs.iter().flat_map(|&p| [1.0 - p, p]).collect();
                    acc.update(&two, labels);
                } else {
                    acc.update(probs, labels);
                }
            }
            EpochMetrics::MultiLabel(acc) => {
                if let Some(v) = &batch.values {
                    acc.update(probs, &v.data);
                }
            }
            EpochMetrics::Regression(acc) => {
                if let Some(v) = &batch.values {
                    acc.update(probs, &v.data);
                }
            }
        }
    }

    pub fn compute(&self, top_k: usize) -> Map<String, Json> {
        match self {
            EpochMetrics::Classification(acc) => acc.compute(top_k).to_json(),
            EpochMetrics::MultiLabel(acc) => acc.compute().to_json(),
            EpochMetrics::Regression(acc) => acc.compute().to_json(),
        }
    }

    /// ROC and precision–recall curves of a classifier's classes (see
    /// [`ClassificationAccumulator::curves`](crate::task::metrics::ClassificationAccumulator::curves)); `None` for
    /// regression.
    pub fn curves(&self) -> Option<Json> {
        const MAX_POINTS: usize = 200;
        match self {
            EpochMetrics::Classification(acc) => Some(acc.curves(MAX_POINTS)),
            EpochMetrics::MultiLabel(acc) => Some(acc.curves(MAX_POINTS)),
            EpochMetrics::Regression(_) => None,
        }
    }
}

/// `"balanced"` (n / (classes · count_c), as scikit-learn) or one weight per class.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ClassWeights {
    Named(String),
    Explicit(Vec<f64>),
}

pub const CLASS_WEIGHT_NAMES: [&str; 1] = ["balanced"];

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ClassWeights;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"balanced\" or one weight per class")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ClassWeights, E> {
                if CLASS_WEIGHT_NAMES.contains(&v) {
                    Ok(ClassWeights::Named(v.to_string()))
                } else {
                    Err(E::custom(format!(
                        "unknown class weights \"{v}\"{}; expected \"balanced\" or one weight per class",
                        hint(v, CLASS_WEIGHT_NAMES)
                    )))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ClassWeights, A::Error> {
                let mut weights = vec![];
                while let Some(w) = seq.next_element::<f64>()? {
                    weights.push(w);
                }
                Ok(ClassWeights::Explicit(weights))
            }
        }
        d.deserialize_any(V)
    }
}
