//! `graft cv`: k-fold cross-validation of an experiment, each fold one full run in its own directory, with the
//! folds' test metrics summarized (mean and sample standard deviation) in `cv.json`.

use serde_json::{Map, Value as Json, json};

use crate::error::{Context, Error, Result};
use crate::experiment::data::read_main;
use crate::experiment::run::{RunOptions, run_experiment};
use crate::experiment::run_dir::claim_out_dir;
use crate::experiment::spec::ExperimentSpec;
use crate::report::write_atomic;

/// `graft cv`: trains the experiment once per stratified fold of its data set (each fold the test set once; the
/// validation split comes from the other folds), writes each run to `out/fold-<k>`, and returns every fold's test
/// metrics with the mean and standard deviation of each number (also written to `out/cv.json`).
pub fn cross_validate(exp: &ExperimentSpec, opts: &RunOptions, folds: usize) -> Result<Json> {
    if matches!(exp.objective, crate::experiment::spec::Objective::Word2Vec(_)) {
        return Err(Error::new(
            "word2vec has no held-out examples to fold; it is scored on analogy and similarity benchmarks \
             ([word2vec] analogies, similarity)",
        ));
    }
    let dataset = exp
        .data
        .dataset
        .as_ref()
        .ok_or_else(|| Error::new("cross-validation takes one `dataset`, not `[data.tasks]`").at("data"))?;
    let raw = read_main(exp, dataset)?;
    let parts = match raw.label_sets() {
        Some((sets, k)) => {
            if folds < 2 || folds > raw.len() {
                return Err(Error::new(format!(
                    "expected between 2 and {} folds (the number of examples), found {folds}",
                    raw.len()
                ))
                .at("--folds"));
            }
            crate::data::sampling::iterative_stratification(sets, k, &vec![1.0 / folds as f64; folds], opts.seed)
        }
        None => {
            let labels = raw.labels()?.unwrap_or_else(|| vec![0; raw.len()]);
            crate::data::sampling::stratified_folds(&labels, folds, opts.seed).at("--folds")?
        }
    };
    let _lock = claim_out_dir(&opts.out, opts.overwrite)?;
    let mut results = vec![];
    for (k, rows) in parts.into_iter().enumerate() {
        if !opts.quiet {
            eprintln!("fold {}/{folds}: {} test examples", k + 1, rows.len());
        }
        let fold = RunOptions {
            seed: opts.seed,
            quiet: opts.quiet,
            device: opts.device.clone(),
            out: opts.out.join(format!("fold-{}", k + 1)),
            overwrite: false,
            test_rows: Some(rows),
            resume: false,
        };
        let mut test = run_experiment(exp, &fold)?.test;
        // Each fold's run keeps its curves; the summary keeps the numbers.
        test.remove("curves");
        results.push(test);
    }
    let mut mean = Map::new();
    let mut std = Map::new();
    if let Some(first) = results.first() {
        for (name, value) in first {
            if !value.is_number() {
                continue;
            }
            let values: Vec<f64> = results
                .iter()
                .filter_map(|r| r.get(name).and_then(Json::as_f64))
                .collect();
            if values.len() != results.len() {
                continue;
            }
            let m = values.iter().sum::<f64>() / values.len() as f64;
            // The sample standard deviation (n − 1), as scikit-learn's cross-validation reports usually quote.
            let s = (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() as f64 - 1.0).max(1.0)).sqrt();
            mean.insert(name.clone(), json!(m));
            std.insert(name.clone(), json!(s));
        }
    }
    let doc = json!({"folds": results, "mean": mean, "std": std});
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&opts.out.join("cv.json"), text.as_bytes())?;
    Ok(doc)
}
