//! Metric learning (siamese and triplet networks): the model maps an input to an embedding, and the loss pulls
//! embeddings of the same class together and pushes other classes beyond a margin. Pairs and triplets are formed
//! inside each batch from its class labels — every pair for the contrastive loss, and online-mined triplets
//! (batch-all, batch-hard or semi-hard) for the triplet loss — so no pair file is needed; with
//! `resample = "balanced_batches"` every batch holds the classes in about equal numbers, which gives every anchor
//! positives and negatives. Validation reports the loss and the verification AUROC: how well the distance between
//! two embeddings tells same-class pairs from different-class ones.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::{Int, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Dataset, gather};
use crate::error::{Context, Error, Result};
use crate::layers::value::batch_inputs;
use crate::model::Graph;
use crate::task::metric_learning::{ContrastiveSpec, TripletSpec};
use crate::train::callbacks::Logs;
use crate::train::config::FitConfig;
use crate::train::step::{Resampler, TrainStep};
use crate::train::trainer::{EVAL_BATCH, optimizer_step};

/// `loss = { triplet = { margin = 0.2, mining = "semi_hard" } }` or `{ contrastive = { margin = 1.0 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MetricLoss {
    Triplet(TripletSpec),
    Contrastive(ContrastiveSpec),
}

impl Default for MetricLoss {
    fn default() -> Self {
        MetricLoss::Triplet(TripletSpec::default())
    }
}

impl MetricLoss {
    /// The loss of a batch of `embeddings [n, d]` with class `labels`.
    pub fn compute(&self, embeddings: Tensor<2>, labels: &[usize]) -> Result<Tensor<1>> {
        let device = embeddings.device();
        match self {
            MetricLoss::Triplet(t) => {
                let ids: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
                t.compute(
                    embeddings,
                    Tensor::<1, Int>::from_data(TensorData::new(ids, [labels.len()]), &device),
                )
            }
            MetricLoss::Contrastive(c) => {
                // Every pair (i < j) of the batch.
                let n = labels.len();
                let (mut first, mut second, mut same) = (vec![], vec![], vec![]);
                for i in 0..n {
                    for j in i + 1..n {
                        first.push(i as i64);
                        second.push(j as i64);
                        same.push(if labels[i] == labels[j] { 1.0f32 } else { 0.0 });
                    }
                }
                if first.is_empty() {
                    return Err(Error::new("a contrastive batch needs at least two examples"));
                }
                let index = |v: Vec<i64>| {
                    let len = v.len();
                    Tensor::<1, Int>::from_data(TensorData::new(v, [len]), &device)
                };
                let pairs = same.len();
                let a = embeddings.clone().select(0, index(first));
                let b = embeddings.select(0, index(second));
                let same = Tensor::<1>::from_data(TensorData::new(same, [pairs]), &device);
                c.compute(a, b, same)
            }
        }
    }
}

/// The embeddings of every example of `data`, in inference mode, `[n, d]` row-major.
pub fn embed_all(model: &Graph, data: &Dataset) -> Result<(Vec<f32>, usize)> {
    let device = model.devices().first().cloned().unwrap_or_default();
    let mut out = vec![];
    let mut dim = 0;
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(EVAL_BATCH) {
        let batch = gather(data, chunk)?;
        let e = model
            .forward(batch_inputs(&batch, &device)?, false, false)?
            .remove(0)
            .data
            .flatten_rows();
        dim = e.dims()[1];
        out.extend(
            e.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|err| Error::new(format!("cannot read embeddings back: {err:?}")))?,
        );
    }
    Ok((out, dim))
}

/// Verification: the AUROC of −distance for "same class" over every pair of `embeddings` (`dim` wide) — at most
/// `max_pairs`, taken in a fixed stride over the pair list when there are more.
pub fn verification_auroc(embeddings: &[f32], dim: usize, labels: &[usize], max_pairs: usize) -> Option<f64> {
    let n = labels.len();
    let total = n * n.saturating_sub(1) / 2;
    let stride = total.div_ceil(max_pairs.max(1)).max(1);
    let mut scored = Vec::with_capacity(total / stride + 1);
    let mut k = 0usize;
    for i in 0..n {
        for j in i + 1..n {
            if k.is_multiple_of(stride) {
                let (a, b) = (&embeddings[i * dim..(i + 1) * dim], &embeddings[j * dim..(j + 1) * dim]);
                let d2: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
                scored.push((-d2.sqrt(), labels[i] == labels[j]));
            }
            k += 1;
        }
    }
    crate::task::metrics::roc_auc_f64(&scored)
}

/// Pairs scored per verification AUROC (all pairs of up to ~2,000 examples).
pub const VERIFICATION_PAIRS: usize = 2_000_000;

/// The metric-learning [`TrainStep`]: one embedding model, one optimizer.
pub struct MetricLearning {
    pub model: Graph,
    loss: MetricLoss,
    optim: ModuleOptimizer,
    resampler: Option<Resampler>,
    device: Device,
    epoch: usize,
}

impl MetricLearning {
    /// `model` (on an autodiff device) embeds; `train`'s class labels form the pairs and triplets.
    pub fn new(model: Graph, loss: MetricLoss, fit: &FitConfig, train: &Dataset, seed: u64) -> Result<Self> {
        let Some(labels) = train.labels() else {
            return Err(Error::new(
                "metric learning forms its pairs from class labels; the data has none",
            ));
        };
        let mut counts = std::collections::HashMap::new();
        for &l in labels {
            *counts.entry(l).or_insert(0usize) += 1;
        }
        if !counts.values().any(|&c| c >= 2) {
            return Err(Error::new(format!(
                "no class has two training examples ({} examples, {} classes), so no same-class pair can be formed \
                 (a numeric target read as classes?); metric learning needs repeated class labels",
                labels.len(),
                counts.len()
            ))
            .at("data"));
        }
        if model.output_shapes().len() != 1 || model.output_shapes()[0].len() != 1 {
            return Err(Error::new(format!(
                "the model embeds each input as one vector (output [d]); its outputs are {:?}",
                model.output_shapes()
            ))
            .at("model"));
        }
        match &loss {
            MetricLoss::Triplet(t) => t.check(),
            MetricLoss::Contrastive(c) => c.check(),
        }
        .at("siamese.loss")?;
        let device = model.devices().first().cloned().unwrap_or_default();
        let optim = fit.optimizer.init(fit.clip_grad).at("train.optimizer")?;
        Ok(MetricLearning {
            model,
            loss,
            optim,
            resampler: Resampler::new(fit.resample, train, seed)?,
            device,
            epoch: 0,
        })
    }

    /// The loss over `data` in batches of the evaluation size, and the verification AUROC of all its pairs.
    pub fn evaluate(model: &Graph, loss: &MetricLoss, data: &Dataset) -> Result<(f64, Option<f64>)> {
        let labels = data
            .labels()
            .ok_or_else(|| Error::new("metric learning is evaluated on class labels; the data has none"))?;
        let (embeddings, dim) = embed_all(model, data)?;
        let device = model.devices().first().cloned().unwrap_or_default();
        let (mut sum, mut seen) = (0.0, 0usize);
        for (rows, ls) in embeddings.chunks(EVAL_BATCH * dim).zip(labels.chunks(EVAL_BATCH)) {
            if ls.len() < 2 {
                continue;
            }
            let t = Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [ls.len(), dim]), &device);
            sum += loss.compute(t, ls)?.into_scalar::<f32>() as f64 * ls.len() as f64;
            seen += ls.len();
        }
        let auroc = verification_auroc(&embeddings, dim, labels, VERIFICATION_PAIRS);
        Ok((sum / seen.max(1) as f64, auroc))
    }
}

impl TrainStep for MetricLearning {
    fn model(&self) -> &Graph {
        &self.model
    }

    fn resumable(&self) -> bool {
        true
    }

    fn save_state(&self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::save_trained(dir, "model", &self.model, &self.optim)
    }

    fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::load_trained(dir, "model", &mut self.model, &mut self.optim)
    }

    fn model_mut(&mut self) -> &mut Graph {
        &mut self.model
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        Ok(())
    }

    fn epoch_order(&self, epoch: usize) -> Result<Option<Vec<usize>>> {
        self.resampler.as_ref().map(|r| r.order(epoch)).transpose()
    }

    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        let labels = batch
            .labels
            .clone()
            .ok_or_else(|| Error::new("metric learning forms its pairs from class labels; the batch has none"))?;
        let embeddings = self
            .model
            .forward(batch_inputs(batch, &self.device)?, true, false)?
            .remove(0)
            .data
            .flatten_rows();
        let loss = self.loss.compute(embeddings, &labels)?;
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(Error::new(format!(
                "the loss became {value} at epoch {}; training stopped (the last good checkpoint is kept); try a \
                 lower learning rate",
                self.epoch
            )));
        }
        self.model = optimizer_step(self.model.take(), loss, &mut self.optim, lr);
        Ok(value)
    }

    fn end_epoch(&mut self, validation: Option<&Dataset>, logs: &mut Logs) -> Result<()> {
        if let Some(val) = validation {
            let (loss, auroc) = Self::evaluate(&self.model.valid(), &self.loss, val)?;
            logs.insert("val_loss".into(), loss);
            if let Some(a) = auroc {
                logs.insert("val_verification_auroc".into(), a);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_auroc_ranks_close_same_class_pairs_first() {
        // Two tight clusters far apart: every same-class pair is closer than every different-class pair.
        let e = [0.0, 0.0, 0.1, 0.0, 5.0, 5.0, 5.1, 5.0];
        assert_eq!(verification_auroc(&e, 2, &[0, 0, 1, 1], 100), Some(1.0));
        // The labels across the clusters: both same-class pairs are ~7.07 apart, farther than every different-class
        // pair but (0, 3) at ~7.14: each ranks above one of four negatives.
        assert_eq!(verification_auroc(&e, 2, &[0, 1, 0, 1], 100), Some(0.25));
        // Only some pairs when there are many: a stride over the pair list, still both kinds present.
        let many: Vec<f32> = (0..200).map(|i| (i % 2) as f32 * 3.0).collect();
        let labels: Vec<usize> = (0..200).map(|i| i % 2).collect();
        assert_eq!(verification_auroc(&many, 1, &labels, 500), Some(1.0));
    }
}
