//! Running an experiment file end to end: load and split the data, build and train the model, evaluate it on
//! the test set, and write the run directory (`model.toml`, `model.safetensors`, `preprocess.json`,
//! `metrics.json`, `report.html` and charts). The steps live beside this file: the data in `data.rs`, the model
//! and its heads in `build.rs`, calibration, thresholds and rejection in `post.rs`; this file is their order.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde_json::{Map, Value as Json, json};

use crate::data::Dataset;
use crate::data::prepare::Preprocessor;
use crate::error::{Error, Result};
use crate::experiment::build::{build_model, task_heads};
use crate::experiment::data::prepare_fold;
use crate::experiment::post::{add_to_metrics, calibrate_temperature, reject_unknown, tune_thresholds};
use crate::experiment::run_dir::{HistoryWriter, Opened, RunRecord};
use crate::experiment::spec::{Calibration, CheckpointSpec, ClassWeights, DatasetSpec, ExperimentSpec, Objective};
use crate::infer::manifest::Manifest;
use crate::model::Graph;
use crate::model::io::save_model;
use crate::report::{Extras, RegressionPoints, write_atomic, write_report_with};
use crate::task::head::TaskHead;
use crate::task::loss::Task;
use crate::train::callbacks::{Callback, Checkpoint, EarlyStopping, Progress};
use crate::train::supervised::fit_resumable;
use crate::train::trainer::{EVAL_BATCH, evaluate};

pub struct RunOptions {
    pub seed: u64,
    pub quiet: bool,
    pub device: Device,
    pub out: PathBuf,
    /// Replace a graft run already in `out` (its files are removed first); without it such a run is kept and the
    /// new one refused.
    pub overwrite: bool,
    /// Cross-validation: these rows of the data set are the test set.
    pub test_rows: Option<Vec<usize>>,
    /// Continue the interrupted run in `out` from its newest good resumable checkpoint.
    pub resume: bool,
}

pub struct RunResult {
    pub history: Vec<Map<String, Json>>,
    pub test: Map<String, Json>,
    pub out: PathBuf,
}

/// The [`Manifest`] of a trained experiment: also the CSV column its texts came from, so `predict` reads that
/// column of a CSV with several.
fn run_manifest(exp: &ExperimentSpec, heads: &[TaskHead], graph: &Graph, preprocessor: &Preprocessor) -> Manifest {
    let mut manifest = Manifest::new(heads, graph, preprocessor);
    let sources = exp
        .data
        .dataset
        .iter()
        .chain(exp.data.tasks.values().filter_map(|t| t.dataset.as_ref()));
    manifest.text_column = sources
        .filter_map(|s| match s {
            DatasetSpec::Text { text } => text.column.clone(),
            _ => None,
        })
        .next();
    manifest
}

pub fn run_experiment(exp: &ExperimentSpec, opts: &RunOptions) -> Result<RunResult> {
    match &exp.objective {
        Objective::Supervised => {}
        Objective::Gan(gan) => return crate::experiment::gan::run_gan(exp, gan, opts),
        Objective::Siamese(s) => return crate::experiment::siamese::run_siamese(exp, s, opts),
        Objective::Word2Vec(w) => return crate::experiment::word2vec::run_word2vec(exp, w, opts),
        _ => return crate::experiment::reconstruct::run_reconstruction(exp, opts),
    }
    let (_lock, from) = match crate::experiment::run_dir::open_run_dir(exp, opts)? {
        crate::experiment::run_dir::Opened::Finished(done) => return Ok(done),
        crate::experiment::run_dir::Opened::Ready(lock, from) => (lock, from),
    };
    let mut splits = prepare_fold(exp, opts.seed, opts.test_rows.as_deref(), None)?;
    crate::experiment::generated::add_generated(exp, &mut splits, opts.seed, &opts.device)?;
    // A transfer strategy becomes ordinary settings (freeze, cached features, layer groups, its recipe) here.
    let resolved;
    let (exp, transfer) = match &exp.train.transfer {
        Some(spec) => {
            let (spec, record) = crate::experiment::transfer::resolve(exp, spec, &splits, opts)?;
            resolved = spec;
            (&resolved, Some(record))
        }
        None => (exp, None),
    };
    let train_device = opts.device.clone().autodiff();
    train_device.seed(opts.seed);
    let model = build_model(exp, &splits, &train_device, opts.seed, opts.quiet)?;
    splits.check_fits(&model)?;
    if let Some(introspect) = &exp.train.introspect {
        introspect.check(&model)?;
    }
    let mut heads = task_heads(exp, &model, &splits.train)?;
    // Resolved once ("balanced" from the training labels) and stored with the model, so `eval` weighs the test loss
    // as this run did without the training rows.
    let resolved = crate::train::trainer::head_class_weights(&heads, &splits.train)?;
    for (head, weights) in heads.iter_mut().zip(resolved) {
        if let Some(w) = weights {
            head.class_weights = Some(ClassWeights::Explicit(w.iter().map(|&v| v as f64).collect()));
        }
    }
    let mut warnings =
        crate::train::warnings::data_warnings(&heads, &splits.train, splits.validation.as_ref(), EVAL_BATCH);
    if !opts.quiet {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
    record_run(exp, opts)?;
    // With the best checkpoint mirrored into the run directory after each improving epoch, an interrupted run is
    // one `predict` can use.
    run_manifest(exp, &heads, &model, &splits.preprocessor).write(&opts.out)?;

    let (mut callbacks, checkpoint) = run_callbacks(exp, opts, splits.validation.is_some())?;

    // Feature extraction: the frozen part runs once per sample; only the part after it trains.
    let cached = if exp.train.cache_features {
        let cut = model.frozen_cut().ok_or_else(|| {
            Error::new(
                "no layer has only frozen layers before it and splits the model cleanly; freeze the encoder \
                 (e.g. `freeze = [\"bert\"]`) or leave cache_features out",
            )
            .at("train.cache_features")
        })?;
        let name = model.nodes[cut].name.clone();
        let started = std::time::Instant::now();
        let frozen = model.valid();
        let features = |ds: &Dataset| frozen.features(cut, ds, 64);
        let train = features(&splits.train)?;
        let validation = splits.validation.as_ref().map(features).transpose()?;
        let test = splits.test.as_ref().map(features).transpose()?;
        if !opts.quiet {
            eprintln!(
                "cache_features: the output of '{name}' {:?} for {} samples in {:.1} s; training the layers after it",
                model.nodes[cut].outputs[0],
                train.len() + validation.as_ref().map_or(0, Dataset::len) + test.as_ref().map_or(0, Dataset::len),
                started.elapsed().as_secs_f64()
            );
        }
        Some((model.after(&name)?, train, validation, test))
    } else {
        None
    };
    // What the test set and calibration run on: the trained part and its cached features, or the whole model.
    let layer_log;
    let (trained, part, validation, test_set, timings, history) = match cached {
        Some((part, train, validation, test)) => {
            callbacks.push(Box::new(checkpoint.around(model.clone())));
            layer_log = layer_stats_recorder(exp, &heads, &train, &mut callbacks)?;
            let fitted = fit_resumable(
                part,
                &heads,
                &exp.train.fit_config(),
                &train,
                validation.as_ref(),
                opts.seed,
                &mut callbacks,
                Some(Opened::resumable(from, &opts.out)),
            )?;
            let part = fitted.model.valid();
            (
                model.with_layers_of(fitted.model),
                part,
                validation,
                test,
                fitted.timings,
                fitted.history,
            )
        }
        None => {
            callbacks.push(Box::new(checkpoint));
            layer_log = layer_stats_recorder(exp, &heads, &splits.train, &mut callbacks)?;
            let fitted = fit_resumable(
                model,
                &heads,
                &exp.train.fit_config(),
                &splits.train,
                splits.validation.as_ref(),
                opts.seed,
                &mut callbacks,
                Some(Opened::resumable(from, &opts.out)),
            )?;
            let part = fitted.model.valid();
            (
                fitted.model,
                part,
                splits.validation.clone(),
                splits.test.clone(),
                fitted.timings,
                fitted.history,
            )
        }
    };
    let calibration = match exp.train.calibrate {
        Some(Calibration::Temperature) => {
            let validation = validation.as_ref().ok_or_else(|| {
                Error::new("temperature scaling is fitted on the validation split; the data has none")
                    .at("train.calibrate")
            })?;
            let uncalibrated = match &test_set {
                Some(t) => Some(evaluate_test(&part, &heads, &splits.train, t, exp.train.top_k)?),
                None => None,
            };
            let report = calibrate_temperature(&part, &mut heads, validation, uncalibrated.as_ref())?;
            if !opts.quiet {
                eprintln!("calibrate: {}", serde_json::to_string(&report).unwrap_or_default());
            }
            Some(report)
        }
        None => None,
    };
    let thresholds = match &exp.train.threshold {
        Some(spec) => {
            spec.check()?;
            let validation = validation.as_ref().ok_or_else(|| {
                Error::new("thresholds are tuned on the validation split; the data has none").at("train.threshold")
            })?;
            Some(tune_thresholds(&part, &mut heads, validation, spec)?)
        }
        None => None,
    };
    let test = match &test_set {
        Some(t) => evaluate_test(&part, &heads, &splits.train, t, exp.train.top_k)?,
        None => Map::new(),
    };
    let points = match &test_set {
        // Charts of one value per example; sequence outputs (a value per step) have none.
        Some(t)
            if heads.len() == 1
                && heads[0].name.is_none()
                && heads[0].task == Task::Regression
                && part.output_shapes()[heads[0].output].len() == 1 =>
        {
            Some(regression_points(&part, &heads[0], t)?)
        }
        _ => None,
    };
    // On the raw test split: with cached features `test_set` holds the frozen part's outputs instead.
    let baselines = match &splits.test {
        Some(t) if exp.train.baseline && crate::experiment::baseline::applies(&heads, &splits.train) => {
            let scores = crate::experiment::baseline::baselines(
                &crate::experiment::baseline::FitData::of(&splits),
                &heads,
                t,
                &exp.train.metrics,
                opts.seed,
                &opts.device,
            )?;
            if let Some(w) = crate::experiment::baseline::beaten_warning(&heads[0], &test, &scores) {
                if !opts.quiet {
                    eprintln!("warning: {w}");
                }
                warnings.push(w);
            }
            scores
        }
        _ => vec![],
    };
    let model = trained.valid();
    let introspection = match &exp.train.introspect {
        Some(spec) => Some(crate::experiment::introspect::introspect(
            spec,
            &opts.out,
            &model,
            layer_log.as_ref(),
            splits.test.as_ref().or(splits.validation.as_ref()),
            &splits.preprocessor,
            opts.seed,
        )?),
        None => None,
    };
    write_timing(&opts.out, &timings)?;
    write_run(
        &opts.out,
        &model,
        &heads,
        &history,
        &test,
        &warnings,
        exp,
        &splits.preprocessor,
        points.as_ref(),
        &transfer
            .as_ref()
            .map(crate::experiment::transfer::report_section)
            .into_iter()
            .chain(crate::experiment::baseline::report_section(&heads, &test, &baselines))
            .collect::<Vec<_>>(),
        introspection.as_ref().map_or(&[][..], |i| &i.charts),
    )?;
    if let Some(i) = introspection {
        add_to_metrics(&opts.out, "introspection", Json::Object(i.record), &test)?;
    }
    if !baselines.is_empty() {
        add_to_metrics(
            &opts.out,
            "baselines",
            serde_json::to_value(&baselines).unwrap_or_default(),
            &test,
        )?;
    }
    if let Some(c) = calibration {
        add_to_metrics(&opts.out, "calibration", c, &test)?;
    }
    if let Some(t) = thresholds {
        add_to_metrics(&opts.out, "thresholds", t, &test)?;
    }
    if let Some(t) = transfer {
        add_to_metrics(&opts.out, "transfer", t, &test)?;
    }
    if let Some(spec) = &exp.train.reject {
        reject_unknown(spec, &opts.out, &model, &heads, &splits, opts.quiet)?;
    }
    Ok(RunResult {
        history,
        test,
        out: opts.out.clone(),
    })
}

/// With `[train] introspect = { layer_stats = true }`: a callback recording every layer's statistics on `train`
/// at each epoch's end, and the log it fills.
fn layer_stats_recorder(
    exp: &ExperimentSpec,
    heads: &[TaskHead],
    train: &Dataset,
    callbacks: &mut Vec<Box<dyn Callback>>,
) -> Result<Option<crate::experiment::introspect::LayerLog>> {
    if !exp.train.introspect.as_ref().is_some_and(|i| i.layer_stats) {
        return Ok(None);
    }
    let recorder = crate::experiment::introspect::LayerStatsRecorder::new(heads, train)?;
    let log = recorder.log.clone();
    callbacks.push(Box::new(recorder));
    Ok(Some(log))
}

/// Writes the run's `run.json` (and its copy of the experiment file): what decides its split.
pub(crate) fn record_run(exp: &ExperimentSpec, opts: &RunOptions) -> Result<()> {
    RunRecord {
        format: 1,
        seed: opts.seed,
        experiment: exp
            .path
            .as_deref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        test_rows: opts.test_rows.clone(),
    }
    .write(&opts.out)
}

/// Trains `step` through the run's callbacks with resumable checkpoints in the run directory, continuing from
/// `from` when the run resumes.
pub(crate) fn train_run(
    fit: &crate::train::FitConfig,
    opts: &RunOptions,
    callbacks: &mut [Box<dyn Callback>],
    step: &mut dyn crate::train::TrainStep,
    train: &Dataset,
    validation: Option<&Dataset>,
    from: Option<crate::train::resume::ResumePoint>,
) -> Result<crate::train::History> {
    let resume = Opened::resumable(from, &opts.out);
    crate::train::step::run_epochs_resumable(fit, opts.seed, callbacks, step, train, validation, Some(resume))
}

/// The end of an autoencoder, VAE, GAN or siamese run: `timing.json`, the model (in inference mode) and its
/// manifest, `metrics.json` (the history, `test`, the objective's name and the `extra` keys) and the report with
/// the training curves, the test metrics and `grids`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_run(
    exp: &ExperimentSpec,
    opts: &RunOptions,
    model: &Graph,
    manifest: &Manifest,
    history: crate::train::History,
    test: Map<String, Json>,
    extra: Map<String, Json>,
    grids: &[crate::report::ImageGrid],
) -> Result<RunResult> {
    write_timing(&opts.out, &history.timings)?;
    save_model(model, &opts.out)?;
    manifest.write(&opts.out)?;
    let objective = exp.objective.name();
    let mut metrics = Map::new();
    metrics.insert(
        "history".into(),
        Json::Array(history.epochs.iter().cloned().map(Json::Object).collect()),
    );
    metrics.insert("test".into(), Json::Object(test.clone()));
    metrics.insert("objective".into(), json!(objective));
    metrics.extend(extra);
    let text = serde_json::to_string_pretty(&Json::Object(metrics)).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&opts.out.join("metrics.json"), text.as_bytes())?;
    let title = exp
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("graft {objective} run"));
    write_report_with(
        &opts.out,
        &title,
        &history.epochs,
        &test,
        &[],
        &[],
        &Extras {
            regression: None,
            grids,
            sections: &[],
            charts: &[],
        },
    )?;
    Ok(RunResult {
        history: history.epochs,
        test,
        out: opts.out.clone(),
    })
}

/// The callbacks every run has: progress (unless quiet), the history written after each epoch, early stopping when
/// asked, and the checkpoint (returned apart, as feature extraction wraps it), which publishes the best weights into
/// the run directory after each improving epoch.
pub(crate) fn run_callbacks(
    exp: &ExperimentSpec,
    opts: &RunOptions,
    has_validation: bool,
) -> Result<(Vec<Box<dyn Callback>>, Checkpoint)> {
    let mut callbacks: Vec<Box<dyn Callback>> = vec![];
    if !opts.quiet {
        callbacks.push(Box::new(Progress::new(exp.train.epochs(), exp.train.batch_size)));
    }
    callbacks.push(Box::new(HistoryWriter::new(&opts.out)));
    if let Some(es) = &exp.train.callbacks.early_stopping {
        callbacks.push(Box::new(EarlyStopping::new(es.clone())?));
    }
    if let Some(limit) = exp.train.callbacks.time_limit {
        callbacks.push(Box::new(crate::train::callbacks::TimeLimit::new(limit)?));
    }
    // A checkpoint is always kept, so an interrupted or diverging run loses nothing already trained.
    let default_monitor = if has_validation { "val_loss" } else { "loss" };
    let ck = exp.train.callbacks.checkpoint.clone().unwrap_or(CheckpointSpec {
        monitor: default_monitor.into(),
        mode: None,
    });
    let checkpoint = Checkpoint::new(ck, opts.out.join("checkpoints"))?.publishing_best_to(opts.out.clone());
    Ok((callbacks, checkpoint))
}

/// Test-set metrics, with the class weights of training in the loss.
fn evaluate_test(
    model: &Graph,
    heads: &[TaskHead],
    train: &Dataset,
    test: &Dataset,
    top_k: usize,
) -> Result<Map<String, Json>> {
    let weights = crate::train::trainer::head_class_weights(heads, train)?;
    evaluate(model, heads, test, &weights, EVAL_BATCH, top_k, true)
}

/// `timing.json`: wall time per epoch and the share spent waiting for data (kept out of `metrics.json`, which must
/// be identical for identical seeds).
pub(crate) fn write_timing(dir: &Path, timings: &[crate::train::trainer::EpochTiming]) -> Result<()> {
    let total: f64 = timings.iter().map(|t| t.seconds).sum();
    let waited: f64 = timings.iter().map(|t| t.data_wait).sum();
    let doc = json!({
        "epochs": timings,
        "total_seconds": total,
        "data_wait_fraction": if total > 0.0 { waited / total } else { 0.0 },
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("timing.json"), text.as_bytes())
}

/// A regression model's test predictions in the target's unit, beside the targets, for the report's charts.
fn regression_points(model: &Graph, head: &TaskHead, test: &Dataset) -> Result<RegressionPoints> {
    let outputs = crate::train::trainer::collect_outputs(model, head, test, EVAL_BATCH)?;
    let predicted = match &head.target_scaler {
        Some(s) => s.unscale(&outputs.logits),
        None => outputs.logits,
    };
    Ok(RegressionPoints {
        predicted: predicted.into_iter().map(f64::from).collect(),
        actual: outputs.values.into_iter().map(f64::from).collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn write_run(
    dir: &Path,
    model: &Graph,
    heads: &[TaskHead],
    history: &[Map<String, Json>],
    test: &Map<String, Json>,
    warnings: &[String],
    exp: &ExperimentSpec,
    preprocessor: &Preprocessor,
    regression: Option<&RegressionPoints>,
    sections: &[crate::report::Section],
    charts: &[crate::report::Chart],
) -> Result<()> {
    save_model(model, dir)?;
    run_manifest(exp, heads, model, preprocessor).write(dir)?;
    let mut metrics = Map::new();
    metrics.insert(
        "history".into(),
        Json::Array(history.iter().cloned().map(Json::Object).collect()),
    );
    metrics.insert("test".into(), Json::Object(test.clone()));
    if !warnings.is_empty() {
        metrics.insert("warnings".into(), json!(warnings));
    }
    let head = &heads[0];
    if head.name.is_none() {
        metrics.insert("classes".into(), json!(head.classes));
        metrics.insert("task".into(), json!(head.task));
    } else {
        let tasks: Map<String, Json> = heads
            .iter()
            .map(|h| {
                (
                    h.name.clone().unwrap_or_default(),
                    json!({"task": h.task, "classes": h.classes}),
                )
            })
            .collect();
        metrics.insert("tasks".into(), Json::Object(tasks));
    }
    let text = serde_json::to_string_pretty(&Json::Object(metrics)).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("metrics.json"), text.as_bytes())?;
    let title = exp
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "graft run".into());
    // The report's per-class charts are for one task; a multi-task run gets its training curves.
    let (test, classes) = if head.name.is_some() || head.task == Task::Regression {
        (if head.name.is_some() { Map::new() } else { test.clone() }, vec![])
    } else {
        (test.clone(), head.classes.clone())
    };
    write_report_with(
        dir,
        &title,
        history,
        &test,
        &classes,
        warnings,
        &Extras {
            regression,
            grids: &[],
            sections,
            charts,
        },
    )?;
    Ok(())
}
