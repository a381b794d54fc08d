//! Out-of-distribution scores of a trained model: [`Predictor::ood_scores`] runs the model (logits, Monte-Carlo
//! dropout, penultimate features) and hands the outputs to the score functions of `ood.rs`; fitting the rejection
//! threshold after training and measuring how well each score separates two sets of inputs build on it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::data::{Array, Dataset};
use crate::error::{Context, Error, Result};
use crate::infer::ood::{
    FeatureStats, MC_PASSES, OodModel, RejectSpec, SCORES, Threshold, logit_scores, mahalanobis_scores, penultimate,
    quantile, separation,
};
use crate::infer::predict::Predictor;

impl Predictor {
    /// The scores named in `which` for every input (`mahalanobis` only with feature statistics), higher = less
    /// like the training data.
    pub fn ood_scores(
        &self,
        inputs: &Array,
        stats: Option<&FeatureStats>,
        which: &[&str],
    ) -> Result<BTreeMap<&'static str, Vec<f64>>> {
        let mut out = logit_scores(&self.logits(inputs)?, self.head.temperature);
        if which.contains(&"mc_mutual_information") {
            let mc = self
                .predict_mc(inputs, std::slice::from_ref(&self.head), MC_PASSES)?
                .remove(0);
            out.insert(
                "mc_mutual_information",
                mc.iter().map(|s| s.mutual_information).collect(),
            );
        }
        if let Some(stats) = stats.filter(|_| which.contains(&"mahalanobis")) {
            let node = self.graph.node_index(&stats.layer)?;
            let features = self.graph.features(node, &Dataset::new(inputs.clone(), None)?, 256)?;
            out.insert("mahalanobis", mahalanobis_scores(&features.inputs, stats)?);
        }
        out.retain(|k, _| which.contains(k));
        Ok(out)
    }
}

/// `[train] reject`: the feature statistics of the training data and the threshold that keeps `spec.keep` of the
/// validation inputs, for the trained `predictor`.
pub fn fit_rejection(
    predictor: &Predictor,
    spec: &RejectSpec,
    train: &Dataset,
    validation: &Dataset,
) -> Result<(OodModel, f64)> {
    spec.check()?;
    let validation = &validation.materialized()?;
    let graph = &predictor.graph;
    let p = penultimate(graph).at("train.reject")?;
    let labels = train
        .labels()
        .ok_or_else(|| Error::new("rejecting unknown inputs needs class labels").at("train.reject"))?;
    let features = graph.features(p, train, 256)?;
    let stats = FeatureStats::fit(
        &graph.nodes[p].name,
        &features.inputs,
        labels,
        predictor.head.num_classes(),
    )
    .at("train.reject")?;
    let score = SCORES
        .iter()
        .find(|s| **s == spec.score)
        .copied()
        .unwrap_or("max_softmax");
    let values = predictor
        .ood_scores(&validation.inputs, Some(&stats), &[score])?
        .remove(score)
        .unwrap_or_default();
    let threshold = quantile(&values, spec.keep);
    let kept = values.iter().filter(|&&v| v <= threshold).count() as f64 / values.len().max(1) as f64;
    Ok((
        OodModel {
            features: stats,
            reject: Some(Threshold {
                score: spec.score.clone(),
                keep: spec.keep,
                threshold,
            }),
        },
        kept,
    ))
}

/// What [`ood_separation`] measured: the summary document and, per score, its values on both sets of inputs.
pub struct Separation {
    /// `{"scores": {name: {"auroc", "aupr", "fpr_at_95_tpr"}}, "in_distribution": n, "out_of_distribution": m}`.
    pub doc: serde_json::Value,
    /// (score name, scores of the in-distribution inputs, scores of the others).
    pub scores: Vec<(&'static str, Vec<f64>, Vec<f64>)>,
}

/// How well each score separates the inputs of `inside` (in-distribution) from those of `outside`,
/// both in any format `predict` reads, as `{"scores": {"max_softmax": {"auroc", "aupr", "fpr_at_95_tpr"}, ...}}`.
/// `mahalanobis` needs the feature statistics a model trained with `[train] reject` carries (`ood.json`).
pub fn ood_separation(
    model_dir: &Path,
    inside: &Path,
    outside: &Path,
    seed: u64,
    device: &burn::prelude::Device,
) -> Result<Separation> {
    let predictor = Predictor::load(model_dir, device)?;
    // The Monte-Carlo dropout passes draw their masks from the device's generator.
    device.seed(seed);
    if !predictor.tasks.is_empty() || !predictor.head.is_classification() {
        return Err(
            Error::new("out-of-distribution scores are defined for a single classification task").in_file(model_dir),
        );
    }
    let read = |p: &Path| predictor.read_inputs(p);
    let (a, b) = (read(inside)?, read(outside)?);
    let stats = predictor.ood.as_ref().map(|o| &o.features);
    let sa = predictor.ood_scores(&a, stats, &SCORES).in_file(inside)?;
    let sb = predictor.ood_scores(&b, stats, &SCORES).in_file(outside)?;
    let mut out = serde_json::Map::new();
    for name in SCORES {
        let (Some(x), Some(y)) = (sa.get(name), sb.get(name)) else {
            continue;
        };
        let (auroc, aupr, fpr) = separation(x, y);
        out.insert(
            name.to_string(),
            serde_json::json!({"auroc": auroc, "aupr": aupr, "fpr_at_95_tpr": fpr}),
        );
    }
    let mut doc = serde_json::json!({"scores": out, "in_distribution": a.len(), "out_of_distribution": b.len()});
    if stats.is_none() {
        doc["note"] = serde_json::json!(
            "no mahalanobis score: its class means and covariance are fitted when the model is trained with [train] reject"
        );
    }
    let scores = SCORES
        .iter()
        .filter_map(|name| Some((*name, sa.get(name)?.clone(), sb.get(name)?.clone())))
        .collect();
    Ok(Separation { doc, scores })
}
