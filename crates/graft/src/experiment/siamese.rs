//! Running a `[siamese]` experiment: `[model]` embeds each input, trained by a contrastive or (online-mined)
//! triplet loss on pairs and triplets formed from the class labels inside every batch. The test set is scored as
//! verification (AUROC of the embedding distance for "same class" over its pairs) and as 1-nearest-neighbour
//! classification against the training embeddings, the two ways such embeddings get used. `graft embed --layer`
//! writes the embeddings of new inputs.

use burn::module::Module;
use serde_json::{Map, Value as Json, json};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiment::build::build_model;
use crate::experiment::data::prepare_fold;
use crate::experiment::run::{RunOptions, RunResult, finish_run, record_run, run_callbacks, train_run};
use crate::experiment::spec::{ExperimentSpec, SiameseSpec};
use crate::infer::manifest::Manifest;
use crate::model::Graph;
use crate::train::metric::{MetricLearning, MetricLoss, embed_all};

pub fn run_siamese(exp: &ExperimentSpec, siamese: &SiameseSpec, opts: &RunOptions) -> Result<RunResult> {
    let (_lock, from) = match crate::experiment::run_dir::open_run_dir(exp, opts)? {
        crate::experiment::run_dir::Opened::Finished(done) => return Ok(done),
        crate::experiment::run_dir::Opened::Ready(lock, from) => (lock, from),
    };
    // Pairs and triplets are drawn from arrays: images decoded once, held in memory.
    let mut splits = prepare_fold(exp, opts.seed, opts.test_rows.as_deref(), None)?.materialized()?;
    if splits.train.labels().is_none() {
        return Err(Error::new(
            "a siamese model learns from which examples share a class; the data set has no class labels",
        )
        .at("data"));
    }
    let device = opts.device.clone().autodiff();
    device.seed(opts.seed);
    let model = build_model(exp, &splits, &device, opts.seed, opts.quiet)?;
    splits.check_fits(&model)?;
    let fit = exp.train.fit_config();
    let mut step = MetricLearning::new(model, siamese.loss.clone(), &fit, &splits.train, opts.seed)?;
    let warnings: Vec<String> = splits
        .train
        .labels()
        .and_then(crate::train::warnings::lone_examples_warning)
        .into_iter()
        .collect();
    if !opts.quiet {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
    record_run(exp, opts)?;
    let classes = splits.train.class_names().map(<[String]>::to_vec).unwrap_or_default();
    let manifest = Manifest::for_objective(&step.model, &splits.preprocessor, &exp.train.loss, "siamese", classes);
    manifest.write(&opts.out)?;
    let (mut callbacks, checkpoint) = run_callbacks(exp, opts, splits.validation.is_some())?;
    callbacks.push(Box::new(checkpoint));
    let history = train_run(
        &fit,
        opts,
        &mut callbacks,
        &mut step,
        &splits.train,
        splits.validation.as_ref(),
        from,
    )?;
    let model = step.model.valid();
    let test = match &splits.test {
        Some(t) => test_metrics(&model, &siamese.loss, &splits.train, t)?,
        None => Map::new(),
    };
    let mut extra = Map::new();
    if !warnings.is_empty() {
        extra.insert("warnings".into(), json!(warnings));
    }
    finish_run(exp, opts, &model, &manifest, history, test, extra, &[])
}

/// The test split's loss and verification AUROC, and the accuracy of labelling each test example with the class
/// of its nearest training example in the embedding space.
pub(crate) fn test_metrics(
    model: &Graph,
    loss: &MetricLoss,
    train: &Dataset,
    test: &Dataset,
) -> Result<Map<String, Json>> {
    let (test_loss, auroc) = MetricLearning::evaluate(model, loss, test)?;
    let mut m = Map::new();
    m.insert("loss".into(), json!(test_loss));
    if let Some(a) = auroc {
        m.insert("verification_auroc".into(), json!(a));
    }
    let (reference, dim) = embed_all(model, train)?;
    let (queries, _) = embed_all(model, test)?;
    let (train_labels, test_labels) = match (train.labels(), test.labels()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Ok(m),
    };
    let mut correct = 0usize;
    for (q, &label) in queries.chunks(dim).zip(test_labels) {
        let nearest = reference
            .chunks(dim)
            .map(|r| {
                r.iter()
                    .zip(q)
                    .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                    .sum::<f64>()
            })
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        if nearest.is_some_and(|i| train_labels[i] == label) {
            correct += 1;
        }
    }
    m.insert(
        "nearest_neighbour_accuracy".into(),
        json!(correct as f64 / test_labels.len().max(1) as f64),
    );
    Ok(m)
}
