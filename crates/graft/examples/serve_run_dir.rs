//! A run directory used from a program: `Predictor` loads the model, its preprocessing, class names, calibration
//! and thresholds exactly as `graft predict` does, and answers requests — here one JSON line per input row for
//! every input file named on standard input.
//!
//! `cargo run --release -p graft --example serve_run_dir -- RUN_DIR < requests.txt` serves a run that
//! `graft train --out RUN_DIR` wrote (each line of requests.txt: a file in the format the model was trained on).
//! Without RUN_DIR it first trains one on the built-in digits with the Rust experiment API (the same run a TOML
//! experiment would give) and answers one request for three digits.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use graft::Result;
use graft::data::{load_digits, write_npy_f32};
use graft::experiment::spec::{DataSpec, DatasetSpec, TrainSpec};
use graft::experiment::{ExperimentSpec, RunOptions, run_experiment};
use graft::infer::predict::Predictor;
use graft::layers::LayerSpec;
use graft::layers::activation::{Activation, NoOptions};
use graft::layers::dense::DenseConfig;
use graft::model::ModelSpec;
use graft::task::loss::LossSpec;
use graft::train::FitConfig;
use serde_json::json;

/// Trains a small MLP on the built-in digits into `out`, as `graft train` would.
fn train_digits(out: &Path, device: &Device) -> Result<()> {
    let model = ModelSpec::sequential(vec![1, 8, 8])
        .add(LayerSpec::Flatten(NoOptions {}))
        .add(LayerSpec::Dense(DenseConfig::new(64).with_activation(Activation::Relu)))
        .add(LayerSpec::Dense(DenseConfig::new(10)));
    let loss = LossSpec::SparseCategoricalCrossentropy { label_smoothing: 0.0 };
    let exp = ExperimentSpec::new(
        DataSpec::new(DatasetSpec::Builtin("digits".into())),
        model,
        TrainSpec::new(loss, FitConfig::default().with_epochs(20)),
    );
    let result = run_experiment(
        &exp,
        &RunOptions {
            seed: 42,
            quiet: true,
            device: device.clone(),
            out: out.to_path_buf(),
            overwrite: true,
            test_rows: None,
            resume: false,
        },
    )?;
    println!(
        "trained into {}: test accuracy {}",
        out.display(),
        result.test["accuracy"]
    );
    Ok(())
}

/// One JSON line per row of the input file `path`: the class and the probability of each class.
fn answer(predictor: &Predictor, path: &Path) -> Result<Vec<serde_json::Value>> {
    let inputs = predictor.read_inputs(path)?;
    let probabilities = predictor.predict(&inputs)?;
    let classes = &predictor.head.classes;
    let width = classes.len().max(1);
    Ok(probabilities
        .data
        .chunks(width)
        .map(|row| {
            let best = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
            let by_class: serde_json::Map<String, serde_json::Value> =
                classes.iter().zip(row).map(|(c, p)| (c.clone(), json!(p))).collect();
            json!({"class": classes.get(best), "probabilities": by_class})
        })
        .collect())
}

fn main() -> Result<()> {
    let device = Device::default();
    let (run_dir, demo) = match std::env::args().nth(1) {
        Some(dir) => (PathBuf::from(dir), false),
        None => {
            let dir = std::env::temp_dir().join(format!("graft-serve-example-{}", std::process::id()));
            train_digits(&dir, &device)?;
            (dir, true)
        }
    };
    let predictor = Predictor::load(&run_dir, &device)?;
    if demo {
        let digits = load_digits()?.select(&[0, 1, 2]);
        let request = run_dir.join("three-digits.npy");
        write_npy_f32(&request, &digits.inputs)?;
        for (row, label) in answer(&predictor, &request)?
            .iter()
            .zip(digits.labels().unwrap_or_default())
        {
            println!("{row} (label {label})");
        }
        return std::fs::remove_dir_all(&run_dir).map_err(|e| graft::Error::io(&run_dir, e));
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| graft::Error::new(format!("reading a request: {e}")))?;
        match answer(&predictor, Path::new(line.trim())) {
            Ok(rows) => rows.iter().for_each(|row| println!("{row}")),
            // A bad request is answered, not fatal: the server keeps serving.
            Err(e) => println!("{}", json!({"error": e.to_string()})),
        }
    }
    Ok(())
}
