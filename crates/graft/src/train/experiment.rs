//! Running an experiment file end to end: load and split the data, build and train the model, evaluate it on
//! the test set, and write the run directory (`model.toml`, `model.safetensors`, `preprocess.json`,
//! `metrics.json`, `report.html` and charts).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use serde_json::{Map, Value as Json, json};

use super::callbacks::{Callback, Checkpoint, EarlyStopping, Progress};
use super::loss::Task;
use super::task::TaskHead;
use super::trainer::{class_weights, evaluate, fit};
use crate::data::prepare::{Preprocessor, Raw, read_raw};
use crate::data::{Dataset, Targets, split_indices};
use crate::error::{Error, Result};
use crate::model::Graph;
use crate::model::io::save_model;
use crate::report::{write_atomic, write_report};
use crate::spec::experiment::{CheckpointSpec, DatasetSpec, ExperimentSpec};

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

/// Loads the data, makes the seeded (stratified where asked) splits, fits the preprocessing on the training rows
/// only and transforms every part with it.
pub fn prepare_data(exp: &ExperimentSpec, seed: u64) -> Result<Splits> {
    let data = &exp.data;
    let main = read(exp, &data.dataset, "data.dataset")?;
    let labels = if data.split.stratify { main.labels()? } else { None };
    let all: Vec<usize> = (0..main.len()).collect();
    let (rest, test_rows) = match &data.test {
        None if data.split.test > 0.0 => {
            let (keep, held) = split_indices(main.len(), data.split.test, labels.as_deref(), seed)
                .map_err(|e| e.at("data.split.test"))?;
            (keep, Some(held))
        }
        _ => (all, None),
    };
    let (train_rows, val_rows) = match &data.validation {
        None if data.split.validation > 0.0 => {
            let rest_labels: Option<Vec<usize>> = labels.as_ref().map(|l| rest.iter().map(|&r| l[r]).collect());
            let (keep, held) = split_indices(
                rest.len(),
                data.split.validation,
                rest_labels.as_deref(),
                seed.wrapping_add(1),
            )
            .map_err(|e| e.at("data.split.validation"))?;
            (
                keep.iter().map(|&i| rest[i]).collect::<Vec<_>>(),
                Some(held.iter().map(|&i| rest[i]).collect::<Vec<_>>()),
            )
        }
        _ => (rest, None),
    };
    let preprocessor = main.fit(&train_rows).map_err(|e| e.at("data.dataset"))?;
    let part = |raw: &Raw, rows: &[usize], training: bool, key: &str| -> Result<Dataset> {
        let ds = raw.transform(&preprocessor, rows, training).map_err(|e| e.at(key))?;
        ds.validate().map_err(|e| e.at(key))?;
        Ok(ds)
    };
    let train = part(&main, &train_rows, true, "data.dataset")?;
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
        Some(rows) => Some(part(&main, &rows, false, "data.split.validation")?),
        None => given(&data.validation, "data.validation")?,
    };
    let test = match test_rows {
        Some(rows) => Some(part(&main, &rows, false, "data.split.test")?),
        None => given(&data.test, "data.test")?,
    };
    Ok(Splits {
        train,
        validation,
        test,
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

/// What `predict` needs besides the model: task, class names, input shape.
pub fn preprocess_json(head: &TaskHead, graph: &Graph, preprocessor: &Preprocessor) -> Json {
    json!({
        "preprocessor": preprocessor,
        "task": head.task,
        "classes": head.classes,
        "loss": head.loss,
        "inputs": graph.spec.inputs.iter().map(|i| json!({"name": i.name, "shape": i.shape})).collect::<Vec<_>>(),
    })
}

pub struct RunOptions {
    pub seed: u64,
    pub quiet: bool,
    pub device: Device,
    pub out: PathBuf,
}

pub struct RunResult {
    pub history: Vec<Map<String, Json>>,
    pub test: Map<String, Json>,
    pub out: PathBuf,
}

pub fn task_head(exp: &ExperimentSpec, graph: &Graph, train: &Dataset) -> Result<TaskHead> {
    let out_shape = graph.output_shapes()[0].clone();
    let outputs = *out_shape.last().unwrap_or(&1);
    let classes = match &train.targets {
        Some(Targets::Classes { names, .. }) => names.clone(),
        _ => vec![],
    };
    TaskHead::new(&exp.train.loss, outputs, classes).map_err(|e| e.at("train.loss"))
}

/// Trains the experiment and writes the run directory.
pub fn run_experiment(exp: &ExperimentSpec, opts: &RunOptions) -> Result<RunResult> {
    let splits = prepare_data(exp, opts.seed)?;
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
            let init = crate::transfer::restore::RestoreSpec {
                path: exp.resolve(&init.path),
                ..init.clone()
            };
            let (model, report) = crate::transfer::restore::restore(model, &init)?;
            if !opts.quiet {
                eprintln!("init_from {}: {report}", init.path.display());
            }
            model
        }
        None => model,
    };
    let (model, fixed) = load_pretrained_embeddings(exp, model, &splits.preprocessor, opts.seed, opts.quiet)?;
    let outside_groups = match &exp.train.layer_groups {
        Some(g) => crate::transfer::groups::LayerGroups::new(g, &model)?.outside,
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
    let (model, _frozen) = crate::transfer::freeze::freeze(model, &patterns)?;
    let mut splits = splits;
    check_data_fits(&model, &mut splits.train, "data.dataset")?;
    if let Some(v) = &mut splits.validation {
        check_data_fits(&model, v, "data.validation")?;
    }
    if let Some(t) = &mut splits.test {
        check_data_fits(&model, t, "data.test")?;
    }
    let head = task_head(exp, &model, &splits.train)?;
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;

    let mut callbacks: Vec<Box<dyn Callback>> = vec![];
    if !opts.quiet {
        callbacks.push(Box::new(Progress::new(exp.train.epochs)));
    }
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
    let checkpoint = Checkpoint::new(ck, opts.out.join("checkpoints"))?;

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
    let (trained, timings, history, test) = match cached {
        Some((part, train, validation, test)) => {
            callbacks.push(Box::new(checkpoint.around(model.clone())));
            let fitted = fit(
                part,
                &head,
                &exp.train,
                &train,
                validation.as_ref(),
                opts.seed,
                &mut callbacks,
            )?;
            let test = match &test {
                Some(t) => evaluate_test(exp, &fitted.model.valid(), &head, &splits.train, t)?,
                None => Map::new(),
            };
            (model.with_layers_of(fitted.model), fitted.timings, fitted.history, test)
        }
        None => {
            callbacks.push(Box::new(checkpoint));
            let fitted = fit(
                model,
                &head,
                &exp.train,
                &splits.train,
                splits.validation.as_ref(),
                opts.seed,
                &mut callbacks,
            )?;
            let test = match &splits.test {
                Some(t) => evaluate_test(exp, &fitted.model.valid(), &head, &splits.train, t)?,
                None => Map::new(),
            };
            (fitted.model, fitted.timings, fitted.history, test)
        }
    };
    let model = trained.valid();
    write_timing(&opts.out, &timings)?;
    write_run(&opts.out, &model, &head, &history, &test, exp, &splits.preprocessor)?;
    Ok(RunResult {
        history,
        test,
        out: opts.out.clone(),
    })
}

/// Test-set metrics, with the class weights of training in the loss.
fn evaluate_test(
    exp: &ExperimentSpec,
    model: &Graph,
    head: &TaskHead,
    train: &Dataset,
    test: &Dataset,
) -> Result<Map<String, Json>> {
    let weights = class_weights(exp.train.class_weights.as_ref(), train.labels(), head.num_classes())?;
    evaluate(model, head, test, weights.as_deref(), 256, exp.train.top_k)
}

/// Loads the weights of `bert` layers that name a `pretrained` directory (already resolved by
/// [`ModelSpec::with_pretrained_sizes`](crate::spec::model::ModelSpec::with_pretrained_sizes)).
fn load_pretrained_encoders(mut model: Graph, quiet: bool) -> Result<Graph> {
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
fn write_timing(dir: &Path, timings: &[super::trainer::EpochTiming]) -> Result<()> {
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

fn write_run(
    dir: &Path,
    model: &Graph,
    head: &TaskHead,
    history: &[Map<String, Json>],
    test: &Map<String, Json>,
    exp: &ExperimentSpec,
    preprocessor: &Preprocessor,
) -> Result<()> {
    save_model(model, dir)?;
    let pre = serde_json::to_string_pretty(&preprocess_json(head, model, preprocessor))
        .map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("preprocess.json"), pre.as_bytes())?;
    let mut metrics = Map::new();
    metrics.insert(
        "history".into(),
        Json::Array(history.iter().cloned().map(Json::Object).collect()),
    );
    metrics.insert("test".into(), Json::Object(test.clone()));
    metrics.insert("classes".into(), json!(head.classes));
    metrics.insert("task".into(), json!(head.task));
    let text = serde_json::to_string_pretty(&Json::Object(metrics)).map_err(|e| Error::new(e.to_string()))?;
    write_atomic(&dir.join("metrics.json"), text.as_bytes())?;
    let title = exp
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "graft run".into());
    let classes = if head.task == Task::Regression {
        vec![]
    } else {
        head.classes.clone()
    };
    write_report(dir, &title, history, test, &classes)?;
    Ok(())
}
