//! Running an experiment file end to end: load and split the data, build and train the model, evaluate it on
//! the test set, and write the run directory (`model.toml`, `model.safetensors`, `preprocess.json`,
//! `metrics.json`, `report.html` and charts).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde_json::{Map, Value as Json, json};

use crate::data::prepare::{Preprocessor, Raw, read_raw};
use crate::data::{Dataset, Targets, split_indices};
use crate::error::{Error, Result};
use crate::experiment::run_dir::{HistoryWriter, RunRecord, claim_out_dir};
use crate::experiment::spec::{Calibration, CheckpointSpec, ClassWeights, DataSpec, DatasetSpec, ExperimentSpec};
use crate::model::Graph;
use crate::model::io::save_model;
use crate::report::{RegressionPoints, write_atomic, write_report_with};
use crate::task::head::TaskHead;
use crate::task::loss::Task;
use crate::train::callbacks::{Callback, Checkpoint, EarlyStopping, Progress};
use crate::train::trainer::{EVAL_BATCH, evaluate, fit};
use graft_data::suggest::hint;

/// The three parts of the data, and the preprocessing fitted on the training part.
pub struct Splits {
    pub train: Dataset,
    pub validation: Option<Dataset>,
    pub test: Option<Dataset>,
    pub preprocessor: Preprocessor,
}

fn read(exp: &ExperimentSpec, spec: &DatasetSpec, key: &str) -> Result<Raw> {
    read_raw(spec, &|p| exp.resolve(p)).map_err(|e| e.at(key))
}

/// Which rows of `raw` are training, validation and test rows under `data`'s split (validation and test rows are
/// `None` where `data` gives those sets instead).
type SplitRows = (Vec<usize>, Option<Vec<usize>>, Option<Vec<usize>>);

fn split_rows(raw: &Raw, data: &DataSpec, seed: u64, at: &str) -> Result<SplitRows> {
    let all: Vec<usize> = (0..raw.len()).collect();
    let (rest, test_rows) = match &data.test {
        None if data.split.test > 0.0 => {
            let (keep, held) = hold_out(raw, &all, data.split.test, data.split.stratify, seed)
                .map_err(|e| e.at(format!("{at}.split.test")))?;
            (keep, Some(held))
        }
        _ => (all, None),
    };
    let (train_rows, val_rows) = validation_rows(raw, data, rest, seed, at)?;
    Ok((train_rows, val_rows, test_rows))
}

/// The validation split of the `rest` rows (those not held out for testing), when the data asks for one.
fn validation_rows(
    raw: &Raw,
    data: &DataSpec,
    rest: Vec<usize>,
    seed: u64,
    at: &str,
) -> Result<(Vec<usize>, Option<Vec<usize>>)> {
    if data.validation.is_some() || data.split.validation <= 0.0 {
        return Ok((rest, None));
    }
    let (keep, held) = hold_out(
        raw,
        &rest,
        data.split.validation,
        data.split.stratify,
        seed.wrapping_add(1),
    )
    .map_err(|e| e.at(format!("{at}.split.validation")))?;
    Ok((keep, Some(held)))
}

/// Splits `rows` of `raw` into (kept, held out) with `fraction` held out, seeded; `stratify` keeps each class's
/// share in both parts (multi-label data: each label's, by iterative stratification).
fn hold_out(raw: &Raw, rows: &[usize], fraction: f64, stratify: bool, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    let pick = |idx: Vec<usize>| -> Vec<usize> { idx.into_iter().map(|i| rows[i]).collect() };
    if stratify && let Some((sets, k)) = raw.label_sets() {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::new(format!(
                "the held-out fraction must be at least 0 and below 1, found {fraction}"
            )));
        }
        let subset: Vec<Vec<usize>> = rows.iter().map(|&r| sets[r].clone()).collect();
        let mut parts =
            crate::data::sampling::iterative_stratification(&subset, k, &[1.0 - fraction, fraction], seed).into_iter();
        let (keep, held) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        if keep.is_empty() || held.is_empty() {
            return Err(Error::new(format!(
                "holding out {fraction} of {} examples leaves a part empty",
                rows.len()
            )));
        }
        return Ok((pick(keep), pick(held)));
    }
    let labels = if stratify { raw.labels()? } else { None };
    let subset: Option<Vec<usize>> = labels.map(|l| rows.iter().map(|&r| l[r]).collect());
    let (keep, held) = split_indices(rows.len(), fraction, subset.as_deref(), seed)?;
    Ok((pick(keep), pick(held)))
}

/// Loads the data, makes the seeded (stratified where asked) splits, fits the preprocessing on the training rows
/// only and transforms every part with it. With `[data.tasks]`, every task's data is split on its own and the
/// parts are joined into multi-task data sets.
pub fn prepare_data(exp: &ExperimentSpec, seed: u64) -> Result<Splits> {
    prepare_fold(exp, seed, None, None)
}

/// The data set with its background examples, when `[data] background` gives some.
fn read_main(exp: &ExperimentSpec, dataset: &DatasetSpec) -> Result<Raw> {
    let main = read(exp, dataset, "data.dataset")?;
    match &exp.data.background {
        Some(bg) => main
            .with_background(read(exp, bg, "data.background")?, &exp.data.background_class)
            .map_err(|e| e.at("data")),
        None => Ok(main),
    }
}

/// [`prepare_data`], with `test_rows` (a cross-validation fold) as the test set instead of the configured one, and
/// with `fitted` (a trained run's stored preprocessing) instead of a new fit on the training rows.
pub fn prepare_fold(
    exp: &ExperimentSpec,
    seed: u64,
    test_rows: Option<&[usize]>,
    fitted: Option<&Preprocessor>,
) -> Result<Splits> {
    let data = &exp.data;
    let Some(dataset) = &data.dataset else {
        if test_rows.is_some() {
            return Err(Error::new("cross-validation takes one `dataset`, not `[data.tasks]`").at("data"));
        }
        return prepare_tasks(exp, seed, fitted);
    };
    let main = read_main(exp, dataset)?;
    let (train_rows, val_rows, test_rows) = match test_rows {
        None => split_rows(&main, data, seed, "data")?,
        Some(held) => {
            let mut is_test = vec![false; main.len()];
            for &r in held {
                is_test[r] = true;
            }
            let rest: Vec<usize> = (0..main.len()).filter(|&r| !is_test[r]).collect();
            let (train, val) = validation_rows(&main, data, rest, seed, "data")?;
            (train, val, Some(held.to_vec()))
        }
    };
    let preprocessor = match fitted {
        Some(p) => p.clone(),
        None => main.fit(&train_rows).map_err(|e| e.at("data.dataset"))?,
    };
    let parts = transform_parts(
        exp,
        data,
        &main,
        &preprocessor,
        (train_rows, val_rows, test_rows),
        "data",
    )?;
    Ok(Splits {
        train: parts.0,
        validation: parts.1,
        test: parts.2,
        preprocessor,
    })
}

/// The training, validation and test sets of one data spec under a fitted preprocessor.
fn transform_parts(
    exp: &ExperimentSpec,
    data: &DataSpec,
    main: &Raw,
    preprocessor: &Preprocessor,
    (train_rows, val_rows, test_rows): SplitRows,
    at: &str,
) -> Result<(Dataset, Option<Dataset>, Option<Dataset>)> {
    let part = |raw: &Raw, rows: &[usize], training: bool, key: &str| -> Result<Dataset> {
        let ds = raw.transform(preprocessor, rows, training).map_err(|e| e.at(key))?;
        ds.validate().map_err(|e| e.at(key))?;
        Ok(ds)
    };
    let train = part(main, &train_rows, true, &format!("{at}.dataset"))?;
    let given = |spec: &Option<DatasetSpec>, key: &str| -> Result<Option<Dataset>> {
        match spec {
            Some(s) => {
                let raw = read(exp, s, key)?;
                let rows: Vec<usize> = (0..raw.len()).collect();
                Ok(Some(part(&raw, &rows, false, key)?))
            }
            None => Ok(None),
        }
    };
    let validation = match val_rows {
        Some(rows) => Some(part(main, &rows, false, &format!("{at}.split.validation"))?),
        None => given(&data.validation, &format!("{at}.validation"))?,
    };
    let test = match test_rows {
        Some(rows) => Some(part(main, &rows, false, &format!("{at}.split.test"))?),
        None => given(&data.test, &format!("{at}.test"))?,
    };
    Ok((train, validation, test))
}

/// Multi-task data: each task split on its own, one preprocessing fitted on the union of the training parts.
fn prepare_tasks(exp: &ExperimentSpec, seed: u64, fitted: Option<&Preprocessor>) -> Result<Splits> {
    let mut raws = vec![];
    for (name, data) in &exp.data.tasks {
        let at = format!("data.tasks.{name}");
        let dataset = data
            .dataset
            .as_ref()
            .ok_or_else(|| Error::new("missing `dataset`").at(&at))?;
        let raw = read(exp, dataset, &format!("{at}.dataset"))?;
        let rows = split_rows(&raw, data, seed, &at)?;
        raws.push((name.clone(), data, raw, rows, at));
    }
    let parts: Vec<(&Raw, &[usize])> = raws
        .iter()
        .map(|(_, _, raw, rows, _)| (raw, rows.0.as_slice()))
        .collect();
    let names: Vec<&str> = raws.iter().map(|(n, ..)| n.as_str()).collect();
    let preprocessor = match fitted {
        Some(p) => p.clone(),
        None => Raw::fit_union(&parts, &names).map_err(|e| e.at("data.tasks"))?,
    };
    let (mut train, mut validation, mut test) = (vec![], vec![], vec![]);
    for (name, data, raw, rows, at) in raws {
        let (t, v, s) = transform_parts(exp, data, &raw, &preprocessor, rows, &at)?;
        train.push((name.clone(), t));
        if let Some(v) = v {
            validation.push((name.clone(), v));
        }
        if let Some(s) = s {
            test.push((name, s));
        }
    }
    let union = |parts: Vec<(String, Dataset)>| -> Result<Option<Dataset>> {
        if parts.is_empty() {
            Ok(None)
        } else {
            Dataset::union_of_tasks(parts).map(Some).map_err(|e| e.at("data.tasks"))
        }
    };
    Ok(Splits {
        train: union(train)?.ok_or_else(|| Error::new("no tasks").at("data.tasks"))?,
        validation: union(validation)?,
        test: union(test)?,
        preprocessor,
    })
}

/// Puts the data's inputs in the model's input order (by name when the data names them) and checks every
/// shape, before training starts.
pub fn check_data_fits(graph: &Graph, ds: &mut Dataset, what: &str) -> Result<()> {
    let model_inputs = &graph.spec.inputs;
    let count = 1 + ds.extra_inputs.len();
    if !ds.input_names.is_empty() {
        let mut arrays: Vec<Option<crate::data::Array>> = std::iter::once(ds.inputs.clone())
            .chain(ds.extra_inputs.drain(..))
            .map(Some)
            .collect();
        let mut ordered = vec![];
        for input in model_inputs {
            let Some(k) = ds.input_names.iter().position(|n| n == &input.name) else {
                return Err(Error::new(format!(
                    "the model input '{}' has no data; the data has inputs {}",
                    input.name,
                    ds.input_names.join(", ")
                ))
                .at(what));
            };
            ordered.push(
                arrays[k]
                    .take()
                    .ok_or_else(|| Error::new("an input is named twice").at(what))?,
            );
        }
        ds.inputs = ordered.remove(0);
        ds.extra_inputs = ordered;
        ds.input_names = model_inputs.iter().map(|i| i.name.clone()).collect();
    } else if count != model_inputs.len() {
        return Err(Error::new(format!(
            "the data has {count} input(s) but the model has {}",
            model_inputs.len()
        ))
        .at(what));
    }
    let all: Vec<&crate::data::Array> = std::iter::once(&ds.inputs).chain(&ds.extra_inputs).collect();
    graph.check_token_ids(&all).map_err(|e| e.at(what))?;
    let arrays = std::iter::once(&ds.inputs).chain(&ds.extra_inputs);
    for (array, input) in arrays.zip(model_inputs) {
        if array.sample_shape() != input.shape.as_slice() {
            return Err(Error::new(format!(
                "samples have shape {:?} but the model input '{}' expects {:?}",
                array.sample_shape(),
                input.name,
                input.shape
            ))
            .at(what));
        }
    }
    Ok(())
}

/// What `predict` and `eval` need besides the model: task, class names, input shape, the loss and its resolved
/// class weights; for a multi-task model, the same per task (with the model output that serves it and its share of
/// the loss) in `tasks`.
pub fn preprocess_json(heads: &[TaskHead], graph: &Graph, preprocessor: &Preprocessor) -> Json {
    let head = &heads[0];
    let mut doc = json!({
        "preprocessor": preprocessor,
        "task": head.task,
        "classes": head.classes,
        "loss": head.loss,
        "class_weights": head.class_weights,
        "target_scaler": head.target_scaler,
        "temperature": head.temperature,
        "thresholds": head.thresholds,
        "inputs": graph.spec.inputs.iter().map(|i| json!({"name": i.name, "shape": i.shape})).collect::<Vec<_>>(),
    });
    if head.name.is_some() {
        doc["tasks"] = Json::Array(
            heads
                .iter()
                .map(|h| {
                    json!({"name": h.name, "task": h.task, "classes": h.classes, "loss": h.loss, "output": h.output,
                           "weight": h.weight, "class_weights": h.class_weights,
                           "temperature": h.temperature, "thresholds": h.thresholds})
                })
                .collect(),
        );
    }
    doc
}

/// [`preprocess_json`] of a trained experiment: also the CSV column its texts came from, so `predict` reads that
/// column of a CSV with several.
fn run_preprocess_json(exp: &ExperimentSpec, heads: &[TaskHead], graph: &Graph, preprocessor: &Preprocessor) -> Json {
    let mut doc = preprocess_json(heads, graph, preprocessor);
    let sources = exp
        .data
        .dataset
        .iter()
        .chain(exp.data.tasks.values().filter_map(|t| t.dataset.as_ref()));
    let column = sources
        .filter_map(|s| match s {
            DatasetSpec::Text { text } => text.column.clone(),
            _ => None,
        })
        .next();
    if let Some(column) = column {
        doc["text_column"] = json!(column);
    }
    doc
}

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
}

pub struct RunResult {
    pub history: Vec<Map<String, Json>>,
    pub test: Map<String, Json>,
    pub out: PathBuf,
}

/// The task (or, with `[data.tasks]`, the tasks) the model trains for, from the losses, the data and the model's
/// outputs.
pub fn task_heads(exp: &ExperimentSpec, graph: &Graph, train: &Dataset) -> Result<Vec<TaskHead>> {
    let shapes = graph.output_shapes();
    let width = |k: usize| *shapes[k].last().unwrap_or(&1);
    if train.tasks.is_empty() {
        let classes = match &train.targets {
            Some(Targets::Classes { names, .. }) => names.clone(),
            _ => train.label_names.clone(),
        };
        if shapes.len() > 1 {
            return Err(Error::new(format!(
                "the model has {} outputs ({}) but the data has one target, so only the first would train and the \
                 others would stay random; give each output its data in [data.tasks] (and [train.tasks.<name>] \
                 output = \"...\"), or end the model in one output",
                shapes.len(),
                graph.spec.outputs.join(", ")
            ))
            .at("model.outputs"));
        }
        check_not_a_regression_target(&exp.train.loss, width(0), &classes)?;
        let mut head = TaskHead::new(&exp.train.loss, width(0), classes).map_err(|e| e.at("train.loss"))?;
        head.class_weights = exp.train.class_weights.clone();
        if head.task == Task::Regression
            && exp.train.standardize_target
            && let Some(Targets::Values(values)) = &train.targets
            && values.sample_size() == head.outputs
        {
            head.target_scaler = crate::task::head::TargetScaler::fit(&values.data, head.outputs);
        }
        return Ok(vec![head]);
    }
    let outputs: Vec<&str> = graph
        .spec
        .outputs
        .iter()
        .map(|o| o.rsplit_once(':').map_or(o.as_str(), |(n, _)| n))
        .collect();
    let mut heads = vec![];
    for labels in &train.tasks {
        let name = &labels.name;
        let at = format!("train.tasks.{name}");
        let spec = exp.train.tasks.get(name);
        let output_name = spec.and_then(|t| t.output.clone()).unwrap_or_else(|| name.clone());
        let output = outputs.iter().position(|o| *o == output_name).ok_or_else(|| {
            Error::new(format!(
                "the model has no output '{output_name}' for task '{name}'{}; its outputs are {}",
                hint(&output_name, outputs.iter().copied()),
                outputs.join(", ")
            ))
            .at(format!("{at}.output"))
        })?;
        let loss = spec
            .and_then(|t| t.loss.clone())
            .unwrap_or_else(|| exp.train.loss.clone());
        let classes = match &labels.targets {
            Targets::Classes { names, .. } => names.clone(),
            _ => vec![],
        };
        let mut head = TaskHead::new(&loss, width(output), classes).map_err(|e| e.at(format!("{at}.loss")))?;
        head.name = Some(name.clone());
        head.output = output;
        head.weight = spec.map_or(1.0, |t| t.weight);
        head.metrics = spec.and_then(|t| t.metrics.clone()).unwrap_or_default();
        head.class_weights = spec.and_then(|t| t.class_weights.clone());
        heads.push(head);
    }
    Ok(heads)
}

/// Above this many distinct class names that are all numbers, a classification target is most likely a quantity.
const MANY_NUMERIC_CLASSES: usize = 20;

/// A classification loss over a target with many distinct numbers (a price, a count, a score) is almost always a
/// regression task set up by mistake; say so instead of asking for hundreds of outputs.
fn check_not_a_regression_target(loss: &crate::task::loss::LossSpec, outputs: usize, classes: &[String]) -> Result<()> {
    let classifying = matches!(loss.task(outputs), Task::Multiclass | Task::Binary);
    let numeric = classes
        .iter()
        .all(|c| c.trim().parse::<f64>().is_ok_and(f64::is_finite));
    if classifying && classes.len() > MANY_NUMERIC_CLASSES && numeric && classes.len() != outputs {
        return Err(Error::new(format!(
            "the target has {} distinct numeric values, which reads as a quantity to predict, not classes: set \
             `regression = true` on the data source and use loss = \"mse\" (or \"mae\", \"huber\") with a last \
             layer of `units = 1`",
            classes.len()
        ))
        .at("train.loss"));
    }
    Ok(())
}

/// Trains the experiment and writes the run directory.
pub fn run_experiment(exp: &ExperimentSpec, opts: &RunOptions) -> Result<RunResult> {
    claim_out_dir(&opts.out, opts.overwrite)?;
    let splits = prepare_fold(exp, opts.seed, opts.test_rows.as_deref(), None)?;
    let train_device = opts.device.clone().autodiff();
    train_device.seed(opts.seed);
    let spec = exp
        .model
        .clone()
        .with_data_shape(splits.train.inputs.sample_shape())
        .with_pretrained_sizes(&|p| exp.resolve(p))?;
    let model = load_pretrained_encoders(Graph::build(&spec, &train_device)?, opts.quiet)?;
    let model = match &exp.train.init_from {
        Some(init) => {
            let init = crate::model::restore::RestoreSpec {
                path: exp.resolve(&init.path),
                ..init.clone()
            };
            let (model, report) = crate::model::restore::restore(model, &init)?;
            if !opts.quiet {
                eprintln!("init_from {}: {report}", init.path.display());
            }
            model
        }
        None => model,
    };
    let (model, fixed) = load_pretrained_embeddings(exp, model, &splits.preprocessor, opts.seed, opts.quiet)?;
    check_vocabulary(&model, &splits.preprocessor)?;
    let outside_groups = match &exp.train.layer_groups {
        Some(g) => crate::model::groups::LayerGroups::new(g, &model)?.outside,
        None => vec![],
    };
    let patterns: Vec<String> = exp
        .train
        .freeze
        .iter()
        .cloned()
        .chain(fixed)
        .chain(outside_groups)
        .collect();
    let (model, _frozen) = crate::model::freeze::freeze(model, &patterns)?;
    let mut splits = splits;
    check_data_fits(&model, &mut splits.train, "data.dataset")?;
    if let Some(v) = &mut splits.validation {
        check_data_fits(&model, v, "data.validation")?;
    }
    if let Some(t) = &mut splits.test {
        check_data_fits(&model, t, "data.test")?;
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
    let warnings = crate::train::warnings::data_warnings(&heads, &splits.train, splits.validation.as_ref(), EVAL_BATCH);
    if !opts.quiet {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
    }
    RunRecord {
        format: 1,
        seed: opts.seed,
        experiment: exp
            .path
            .as_deref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        test_rows: opts.test_rows.clone(),
    }
    .write(&opts.out)?;
    // With the best checkpoint mirrored into the run directory after each improving epoch, an interrupted run is
    // one `predict` can use.
    let pre = serde_json::to_string_pretty(&run_preprocess_json(exp, &heads, &model, &splits.preprocessor))
        .map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&opts.out.join("preprocess.json"), pre.as_bytes())?;

    let mut callbacks: Vec<Box<dyn Callback>> = vec![];
    if !opts.quiet {
        callbacks.push(Box::new(Progress::new(exp.train.epochs, exp.train.batch_size)));
    }
    callbacks.push(Box::new(HistoryWriter::new(&opts.out)));
    if let Some(es) = &exp.train.callbacks.early_stopping {
        callbacks.push(Box::new(EarlyStopping::new(es.clone())?));
    }
    // A checkpoint is always kept, so an interrupted or diverging run loses nothing already trained.
    let default_monitor = if splits.validation.is_some() {
        "val_loss"
    } else {
        "loss"
    };
    let ck = exp.train.callbacks.checkpoint.clone().unwrap_or(CheckpointSpec {
        monitor: default_monitor.into(),
        mode: None,
    });
    let checkpoint = Checkpoint::new(ck, opts.out.join("checkpoints"))?.publishing_best_to(opts.out.clone());

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
    let (trained, part, validation, test_set, timings, history) = match cached {
        Some((part, train, validation, test)) => {
            callbacks.push(Box::new(checkpoint.around(model.clone())));
            let fitted = fit(
                part,
                &heads,
                &exp.train.fit_config(),
                &train,
                validation.as_ref(),
                opts.seed,
                &mut callbacks,
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
            let fitted = fit(
                model,
                &heads,
                &exp.train.fit_config(),
                &splits.train,
                splits.validation.as_ref(),
                opts.seed,
                &mut callbacks,
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
    let model = trained.valid();
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
    )?;
    if let Some(c) = calibration {
        add_to_metrics(&opts.out, "calibration", c, &test)?;
    }
    if let Some(t) = thresholds {
        add_to_metrics(&opts.out, "thresholds", t, &test)?;
    }
    if let Some(spec) = &exp.train.reject {
        let validation = splits.validation.as_ref().ok_or_else(|| {
            Error::new("the rejection threshold is set on the validation split; the data has none").at("train.reject")
        })?;
        if heads.len() != 1 || !heads[0].is_classification() {
            return Err(
                Error::new("rejecting unknown inputs applies to a single classification task").at("train.reject"),
            );
        }
        let predictor = crate::infer::predict::Predictor {
            text_column: None,
            graph: model.clone(),
            head: heads[0].clone(),
            tasks: vec![],
            preprocessor: splits.preprocessor.clone(),
            ood: None,
        };
        let (ood, kept) = crate::infer::ood::fit_rejection(&predictor, spec, &splits.train, validation)?;
        ood.write(&opts.out)?;
        let threshold = ood.reject.as_ref().map_or(f64::NAN, |r| r.threshold);
        if !opts.quiet {
            eprintln!(
                "reject: {} above {threshold:.6} (keeps {:.1}% of validation inputs)",
                spec.score,
                kept * 100.0
            );
        }
        add_to_metrics(
            &opts.out,
            "reject",
            json!({"score": spec.score, "keep": spec.keep, "threshold": threshold, "validation_kept": kept}),
            &Map::new(),
        )?;
    }
    Ok(RunResult {
        history,
        test,
        out: opts.out.clone(),
    })
}

/// Fits each classification head's temperature on the validation split (minimizing its NLL) and returns, per head,
/// the temperature with the validation NLL and the test ECE before and after.
fn calibrate_temperature(
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
fn tune_thresholds(
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
fn add_to_metrics(dir: &Path, key: &str, mut value: Json, test: &Map<String, Json>) -> Result<()> {
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
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut doc: Json = serde_json::from_str(&text).map_err(|e| Error::new(e.to_string()).in_file(&path))?;
    doc[key] = value;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&path, text.as_bytes())
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

/// Loads the weights of `bert` layers that name a `pretrained` directory (already resolved by
/// [`ModelSpec::with_pretrained_sizes`](crate::model::spec::ModelSpec::with_pretrained_sizes)).
pub fn load_pretrained_encoders(mut model: Graph, quiet: bool) -> Result<Graph> {
    use crate::layers::{Layer, LayerSpec};
    for node in model.nodes.iter_mut() {
        let LayerSpec::Bert(cfg) = &node.spec else { continue };
        let Some(Layer::Bert(encoder, head)) = node.layer.take() else {
            continue;
        };
        let encoder = match &cfg.pretrained {
            Some(dir) => {
                let loaded = encoder
                    .load_pretrained(dir)
                    .map_err(|e| e.at(format!("layer '{}'", node.name)))?;
                if !quiet {
                    eprintln!("layer '{}': weights from {}", node.name, dir.display());
                }
                loaded
            }
            None => encoder,
        };
        node.layer = Some(Layer::Bert(encoder, head));
    }
    Ok(model)
}

/// An `embedding` layer reading the tokenizer's ids must have room for every id of its vocabulary; found when the
/// model is built, not as an out-of-range id in the first batch.
fn check_vocabulary(model: &Graph, preprocessor: &Preprocessor) -> Result<()> {
    let vocabulary = match preprocessor {
        Preprocessor::Text(t) => t.vocab_size(),
        Preprocessor::PretrainedText(t) => t.vocab_size(),
        _ => return Ok(()),
    };
    for node in &model.nodes {
        let crate::layers::LayerSpec::Embedding(cfg) = &node.spec else {
            continue;
        };
        let reads_input = node
            .sources
            .iter()
            .any(|s| matches!(s, crate::model::graph::Source::Input(_)));
        if reads_input && cfg.input_dim < vocabulary {
            return Err(Error::new(format!(
                "input_dim is {} but the tokenizer's vocabulary has {vocabulary} ids (0 to {}); make input_dim at \
                 least {vocabulary}, or lower the tokenizer's vocab_size",
                cfg.input_dim,
                vocabulary - 1
            ))
            .at(format!("layer '{}'", node.name)));
        }
    }
    Ok(())
}

/// Replaces the weights of `embedding` layers that name `pretrained` vectors by the vectors of the text dataset's
/// vocabulary. Returns the model and the parameters to keep fixed (`trainable = false`).
fn load_pretrained_embeddings(
    exp: &ExperimentSpec,
    mut model: Graph,
    preprocessor: &Preprocessor,
    seed: u64,
    quiet: bool,
) -> Result<(Graph, Vec<String>)> {
    use crate::data::wordvec::WordVectors;
    use crate::layers::{Layer, LayerSpec};
    let mut fixed = vec![];
    for node in model.nodes.iter_mut() {
        let LayerSpec::Embedding(cfg) = &node.spec else {
            continue;
        };
        let at = || format!("layer '{}'", node.name);
        if !cfg.trainable {
            fixed.push(format!("{}.weight", node.name));
        }
        let Some(pre) = &cfg.pretrained else { continue };
        let Preprocessor::Text(tokenizer) = preprocessor else {
            return Err(Error::new(
                "pretrained vectors need a text dataset, whose vocabulary says which word each id is",
            )
            .at(at()));
        };
        let path = exp.resolve(&pre.path);
        let vectors = WordVectors::read(&path, pre.format)?;
        if vectors.dim != cfg.output_dim {
            return Err(Error::new(format!(
                "the vectors in {} have {} dimensions but output_dim is {}",
                path.display(),
                vectors.dim,
                cfg.output_dim
            ))
            .at(at()));
        }
        let tokens = tokenizer.tokens_by_id();
        if tokens.len() > cfg.input_dim {
            return Err(Error::new(format!(
                "the vocabulary has {} ids but input_dim is {}; raise input_dim or lower the tokenizer's vocab_size",
                tokens.len(),
                cfg.input_dim
            ))
            .at(at()));
        }
        let (matrix, found) = vectors.embedding_matrix(&tokens, seed);
        if let Some(Layer::Embedding(e)) = node.layer.as_mut() {
            let device = e.weight.val().device();
            let mut values = e
                .weight
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            values[..matrix.data.len()].copy_from_slice(&matrix.data);
            let weight = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(values, [cfg.input_dim, cfg.output_dim]),
                &device,
            );
            e.weight = burn::module::Param::from_tensor(weight);
        }
        if !quiet {
            eprintln!(
                "{}: {found} of {} vocabulary tokens found in {}",
                at(),
                tokens.len().saturating_sub(2),
                path.display()
            );
        }
    }
    Ok((model, fixed))
}

/// `timing.json`: wall time per epoch and the share spent waiting for data (kept out of `metrics.json`, which must
/// be identical for identical seeds).
fn write_timing(dir: &Path, timings: &[crate::train::trainer::EpochTiming]) -> Result<()> {
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
) -> Result<()> {
    save_model(model, dir)?;
    let pre = serde_json::to_string_pretty(&run_preprocess_json(exp, heads, model, preprocessor))
        .map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("preprocess.json"), pre.as_bytes())?;
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
    write_report_with(dir, &title, history, &test, &classes, warnings, regression)?;
    Ok(())
}

/// `graft cv`: trains the experiment once per stratified fold of its data set (each fold the test set once; the
/// validation split comes from the other folds), writes each run to `out/fold-<k>`, and returns every fold's test
/// metrics with the mean and standard deviation of each number (also written to `out/cv.json`).
pub fn cross_validate(exp: &ExperimentSpec, opts: &RunOptions, folds: usize) -> Result<Json> {
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
            crate::data::sampling::stratified_folds(&labels, folds, opts.seed).map_err(|e| e.at("--folds"))?
        }
    };
    claim_out_dir(&opts.out, opts.overwrite)?;
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

#[cfg(test)]
mod tests {
    use crate::experiment::ExperimentSpec;
    use graft_data::test_util::TempDir;

    /// The error `prepare_data` gives for an experiment whose `[data]` holds `data` (`{csv}`: a CSV of people).
    fn data_error(data: &str) -> String {
        let dir = TempDir::new("prepare");
        let csv = dir.write(
            "people.csv",
            "age,city,income\n20,Paris,low\n30,Oslo,high\n40,Paris,low\n50,Rome,high\n60,Oslo,low\n",
        );
        let data = data.replace("{csv}", &csv.display().to_string());
        let toml = format!(
            "[data]\n{data}\n[model]\nlayers = [{{ dense = {{ units = 2 }} }}]\n[train]\nepochs = 1\n\
             loss = \"sparse_categorical_crossentropy\"\n"
        );
        let exp = ExperimentSpec::from_toml_str(&toml).unwrap();
        crate::experiment::run::prepare_data(&exp, 0)
            .err()
            .expect("an error")
            .to_string()
    }

    #[test]
    fn a_column_missing_from_the_csv_is_named_at_its_key_with_the_closest_column() {
        assert_eq!(
            data_error("dataset = { csv = { path = \"{csv}\", target = \"incme\" } }"),
            "data.dataset.csv.target: no column `incme` in people.csv; did you mean `income`?; the columns are: age, \
             city, income"
        );
        assert_eq!(
            data_error("dataset = { csv = { path = \"{csv}\", target = \"income\", ignore = [\"cty\"] } }"),
            "data.dataset.csv.ignore: no column `cty` in people.csv; did you mean `city`?; the columns are: age, city, \
             income"
        );
        assert_eq!(
            data_error(
                "dataset = { csv = { path = \"{csv}\", target = \"income\" } }\n\
                 validation = { csv = { path = \"{csv}\", target = \"salary\" } }"
            ),
            "data.validation.csv.target: no column `salary` in people.csv; the columns are: age, city, income"
        );
    }
}
