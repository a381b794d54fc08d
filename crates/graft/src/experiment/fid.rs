//! `graft fid`: how close a generative model's samples come to real data, as the Fréchet distance between the
//! features a classifier trained on the same data gives them (the FID of Heusel et al. 2017, with the
//! practitioner's own classifier in place of Inception). One distance per seed of drawn samples, so the spread shows
//! whether two generators really differ; the distance between two halves of the real set is the floor a perfect
//! generator would reach at that sample size.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde_json::{Value as Json, json};

use crate::data::Dataset;
use crate::error::{Context, Error, Result};
use crate::experiment::data::check_data_fits;
use crate::experiment::run_dir::run_test_split;
use crate::infer::predict::Predictor;
use crate::infer::sample::{conditional_classes, sample_prior};
use crate::model::Graph;
use crate::model::graph::Source;
use crate::task::frechet::frechet_distance;

/// What `graft fid` compares.
#[derive(Debug, Clone)]
pub struct FidOptions {
    /// Samples drawn per seed.
    pub n: usize,
    /// Seeds 1..=seeds, one distance each.
    pub seeds: usize,
    /// The classifier's layer whose outputs are the features (default: the input of its last layer).
    pub layer: Option<String>,
    /// Real inputs in the classifier's data format (default: the classifier run's test split).
    pub real: Option<PathBuf>,
}

const BATCH: usize = 256;

/// The node whose outputs are the features: `layer`, or the one feeding the classifier's output layer.
fn feature_node(graph: &Graph, layer: Option<&str>) -> Result<usize> {
    if let Some(name) = layer {
        return graph.node_index(name).at("--layer");
    }
    let feeding = match graph.outputs.first() {
        Some(Source::Node(n, _)) => graph.nodes[*n].sources.first().copied(),
        _ => None,
    };
    match feeding {
        Some(Source::Node(m, 0)) => Ok(m),
        _ => Err(Error::new(
            "the classifier's output layer reads a model input directly; name the feature layer with --layer",
        )),
    }
}

fn features(graph: &Graph, cut: usize, data: &Dataset) -> Result<(Vec<f32>, usize)> {
    let f = graph.features(cut, data, BATCH)?;
    let dim = f.inputs.sample_size();
    Ok((f.inputs.data, dim))
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `graft fid --classifier CLS --generator GEN`: the Fréchet distance between the classifier's features of real
/// inputs and of `n` samples of the generator, for each of `seeds` seeds, with mean and standard deviation.
pub fn fid(classifier_dir: &Path, generator_dir: &Path, opts: &FidOptions, device: &Device) -> Result<Json> {
    if opts.n < 2 || opts.seeds == 0 {
        return Err(Error::new(
            "--n must be at least 2 (a covariance needs two samples) and --seeds at least 1",
        ));
    }
    let classifier = Predictor::load(classifier_dir, device).at("--classifier")?;
    let generator = Predictor::load(generator_dir, device).at("--generator")?;
    if !matches!(generator.objective.as_deref(), Some("vae" | "gan")) {
        return Err(Error::new("not a generative model's run (a [vae] or [gan] experiment)").in_file(generator_dir));
    }
    if classifier.objective.is_some() {
        return Err(
            Error::new("the features come from a classifier's run; this one reconstructs its input")
                .in_file(classifier_dir),
        );
    }
    // Samples are in the generator's model space; real inputs reach the classifier through its preprocessing.
    // The two spaces agree only when both runs fitted the same preprocessing.
    if classifier.preprocessor != generator.preprocessor {
        return Err(Error::new(
            "the classifier and the generator were trained on differently preprocessed data, so the samples are not \
             in the classifier's input space; train both on the same data set",
        ));
    }
    let cut = feature_node(&classifier.graph, opts.layer.as_deref())?;
    let layer = classifier.graph.nodes[cut].name.clone();
    let mut real = match &opts.real {
        Some(path) => Dataset::new(classifier.read_inputs(path).at("--real")?, None)?,
        None => run_test_split(classifier_dir, &classifier)?,
    };
    check_data_fits(&classifier.graph, &mut real, "--real")?;
    let (real_features, dim) = features(&classifier.graph, cut, &real)?;
    // The floor: two halves of the real set (alternate rows) against each other.
    let rows: Vec<&[f32]> = real_features.chunks(dim).collect();
    let half = |parity: usize| -> Vec<f32> {
        rows.iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .flat_map(|(_, r)| r.iter().copied())
            .collect()
    };
    let floor = frechet_distance(&half(0), &half(1), dim)?;
    // A conditional generator's samples come with the class they were asked for (its classes in turn): the
    // classifier's accuracy on them says whether they look like that class.
    let conditional = conditional_classes(&generator.graph)?;
    let generator_classes = crate::infer::manifest::Manifest::read(generator_dir)?.classes;
    let mut distances = vec![];
    let mut accuracies = vec![];
    for seed in 1..=opts.seeds as u64 {
        device.seed(seed);
        let samples = sample_prior(&generator.graph, opts.n, None).in_file(generator_dir)?;
        if let Some(k) = conditional {
            let predicted = classifier.predict(&samples)?;
            let width = predicted.sample_size();
            let mut correct = 0usize;
            for (i, row) in predicted.data.chunks(width).enumerate() {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(c, _)| c);
                let asked = generator_classes.get(i % k);
                if asked.is_some() && classifier.head.classes.get(best) == asked {
                    correct += 1;
                }
            }
            accuracies.push(correct as f64 / opts.n as f64);
        }
        let mut generated = Dataset::new(samples, None)?;
        check_data_fits(&classifier.graph, &mut generated, "the generator's samples")?;
        let (f, _) = features(&classifier.graph, cut, &generated)?;
        distances.push(frechet_distance(&real_features, &f, dim)?);
    }
    let (mean, std) = mean_std(&distances);
    let mut report = json!({
        "fid": distances,
        "mean": mean,
        "std": std,
        "samples_per_seed": opts.n,
        "real": real.len(),
        "real_halves": floor,
        "layer": layer,
        "features": dim,
    });
    if !accuracies.is_empty() {
        let (m, sd) = mean_std(&accuracies);
        report["classifier_accuracy"] = json!({ "per_seed": accuracies, "mean": m, "std": sd });
    }
    Ok(report)
}
