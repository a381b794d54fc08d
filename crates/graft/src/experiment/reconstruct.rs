//! Running an `[autoencoder]` or `[vae]` experiment: the same data, splits, model building, callbacks and run
//! directory as a supervised run, with the reconstruction step in the training loop. The test set gets its
//! reconstruction loss (a VAE's negative ELBO and its two terms); with `normal` classes the model trains on those
//! only and the test set's reconstruction errors are scored as anomaly detection (AUROC of the error for "not a
//! normal class"). The report shows test inputs above their reconstructions, and a VAE's samples from the prior.

use burn::module::Module;
use serde_json::{Map, Value as Json, json};

use crate::data::{Dataset, gather};
use crate::error::{Context, Error, Result};
use crate::experiment::build::build_model;
use crate::experiment::data::{check_data_fits, prepare_fold};
use crate::experiment::run::{RunOptions, RunResult, finish_run, record_run, run_callbacks, train_run};
use crate::experiment::spec::ExperimentSpec;
use crate::infer::manifest::Manifest;
use crate::layers::value::{Data, batch_inputs};
use crate::model::Graph;
use crate::report::ImageGrid;
use crate::train::reconstruction::{Reconstruction, ReconstructionConfig, evaluate_reconstruction};
use graft_data::suggest::hint;

/// How many test images the report shows with their reconstructions, and how many prior samples.
const SHOWN: usize = 10;
const SAMPLES: usize = 30;

pub fn run_reconstruction(exp: &ExperimentSpec, opts: &RunOptions) -> Result<RunResult> {
    let objective = exp.objective.name();
    let Some(config) = exp.objective.reconstruction(&exp.train.loss) else {
        return Err(Error::new("not an autoencoder or VAE experiment"));
    };
    let (_lock, from) = match crate::experiment::run_dir::open_run_dir(exp, opts)? {
        crate::experiment::run_dir::Opened::Finished(done) => return Ok(done),
        crate::experiment::run_dir::Opened::Ready(lock, from) => (lock, from),
    };
    // Reconstructions and their image grids read the images as arrays: decoded once, held in memory.
    let mut splits = prepare_fold(exp, opts.seed, opts.test_rows.as_deref(), None)?.materialized()?;
    let classes = splits.train.class_names().map(<[String]>::to_vec).unwrap_or_default();
    let normal = normal_classes(exp.objective.normal_classes(), &classes, objective)?;
    if let Some(normal) = &normal {
        splits.train = only(&splits.train, normal);
        splits.validation = splits.validation.as_ref().map(|v| only(v, normal));
        if splits.train.is_empty() {
            return Err(Error::new("no training example is of a normal class").at(format!("{objective}.normal")));
        }
    }
    let config = if is_conditional(exp) {
        with_class_input(&mut splits.train, &exp.model)?;
        if let Some(v) = &mut splits.validation {
            with_class_input(v, &exp.model)?;
        }
        if let Some(t) = &mut splits.test {
            with_class_input(t, &exp.model)?;
        }
        config.conditional(classes.len())
    } else {
        config
    };
    let train_device = opts.device.clone().autodiff();
    train_device.seed(opts.seed);
    let model = build_model(exp, &splits, &train_device, opts.seed, opts.quiet)?;
    splits.check_fits(&model)?;
    let fit = exp.train.fit_config();
    let mut step = Reconstruction::new(model, config.clone(), &fit, &splits.train, opts.seed)?;
    record_run(exp, opts)?;
    let manifest = Manifest::for_objective(
        &step.model,
        &splits.preprocessor,
        &exp.train.loss,
        objective,
        classes.clone(),
    );
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

    let mut test = Map::new();
    let mut grids = vec![];
    if let Some(t) = &splits.test {
        test = test_metrics(&model, &config, t, normal.as_deref(), opts.seed)?;
        grids.extend(reconstruction_grid(&model, t)?);
    }
    if config.beta.is_some()
        && let Some(grid) = sample_grid(&model)?
    {
        grids.push(grid);
    }
    let mut extra = Map::new();
    if let Some(normal) = &normal {
        let names: Vec<&String> = (0..classes.len()).filter(|&c| normal[c]).map(|c| &classes[c]).collect();
        extra.insert("normal_classes".into(), json!(names));
    }
    finish_run(exp, opts, &model, &manifest, history, test, extra, &grids)
}

/// The test metrics of a reconstruction model: its loss (a VAE's negative ELBO, its terms and the ELBO), the mean
/// reconstruction error, and with `normal` classes how well the error finds the others.
pub(crate) fn test_metrics(
    model: &Graph,
    config: &ReconstructionConfig,
    test: &Dataset,
    normal: Option<&[bool]>,
    seed: u64,
) -> Result<Map<String, Json>> {
    // A VAE's ELBO draws codes: seeded here, so `graft eval` measures again exactly what the run did.
    if let Some(device) = model.devices().first() {
        device.seed(seed);
    }
    let e = evaluate_reconstruction(model, config, test)?;
    let mut m = Map::new();
    m.insert("loss".into(), json!(e.loss));
    if let (Some(r), Some(k)) = (e.reconstruction, e.kl) {
        m.insert("reconstruction".into(), json!(r));
        m.insert("kl".into(), json!(k));
        // The ELBO proper (a lower bound on log p(x)) is the β = 1 objective, whatever β trained.
        m.insert("elbo".into(), json!(-(r + k)));
    }
    let mean_error = e.errors.iter().sum::<f64>() / e.errors.len().max(1) as f64;
    m.insert("reconstruction_error".into(), json!(mean_error));
    if let Some(normal) = normal {
        m.extend(anomaly_metrics(test, normal, &e.errors)?);
    }
    Ok(m)
}

fn is_conditional(exp: &ExperimentSpec) -> bool {
    matches!(&exp.objective, crate::experiment::spec::Objective::Vae(v) if v.conditional)
}

/// Gives every example of `data` its class, one-hot, as the model's second input (a conditional VAE's).
fn with_class_input(data: &mut Dataset, model: &crate::model::spec::ModelSpec) -> Result<()> {
    let (Some(labels), Some(names)) = (data.labels(), data.class_names()) else {
        return Err(Error::new("a conditional VAE needs class labels in the data").at("vae.conditional"));
    };
    let k = names.len();
    let mut values = vec![0f32; labels.len() * k];
    for (row, &c) in labels.iter().enumerate() {
        values[row * k + c] = 1.0;
    }
    let Some(input) = model.inputs.get(1) else {
        return Err(Error::new(format!(
            "a conditional VAE's model has two inputs, the data and its class (e.g. inputs = {{ image = [...], \
             label = [{k}] }})"
        ))
        .at("model.inputs"));
    };
    data.extra_inputs
        .push(crate::data::Array::new(vec![labels.len(), k], values)?);
    if !data.input_names.is_empty() {
        data.input_names.push(input.name.clone());
    }
    Ok(())
}

/// `graft eval` of a reconstruction run: [`test_metrics`] on the run's test split.
pub(crate) fn eval_reconstruction(
    exp: &ExperimentSpec,
    model: &Graph,
    test: &Dataset,
    seed: u64,
) -> Result<Map<String, Json>> {
    let config = exp
        .objective
        .reconstruction(&exp.train.loss)
        .ok_or_else(|| Error::new("the run's experiment file has no [autoencoder] or [vae] section"))?;
    let classes = test.class_names().map(<[String]>::to_vec).unwrap_or_default();
    let mut test = test.clone();
    let config = if is_conditional(exp) {
        with_class_input(&mut test, &exp.model)?;
        config.conditional(classes.len())
    } else {
        config
    };
    check_data_fits(model, &mut test, "data.test")?;
    let test = &test;
    let normal = normal_classes(exp.objective.normal_classes(), &classes, exp.objective.name())?;
    test_metrics(model, &config, test, normal.as_deref(), seed)
}

/// Per class id, whether it is one of the `normal` classes (`None` when none are named).
fn normal_classes(normal: &[String], classes: &[String], objective: &str) -> Result<Option<Vec<bool>>> {
    if normal.is_empty() {
        return Ok(None);
    }
    let at = format!("{objective}.normal");
    if classes.is_empty() {
        return Err(
            Error::new("anomaly detection needs class labels in the data to tell normal examples apart").at(at),
        );
    }
    let mut flags = vec![false; classes.len()];
    for name in normal {
        let Some(c) = classes.iter().position(|k| k == name) else {
            return Err(Error::new(format!(
                "no class '{name}' in the data{}; its classes are {}",
                hint(name, classes.iter().map(String::as_str)),
                classes.join(", ")
            ))
            .at(at));
        };
        flags[c] = true;
    }
    if flags.iter().all(|&f| f) {
        return Err(Error::new("every class is normal, so the test set has no anomaly to find; leave some out").at(at));
    }
    Ok(Some(flags))
}

/// The rows of `data` whose class is normal.
fn only(data: &Dataset, normal: &[bool]) -> Dataset {
    let rows: Vec<usize> = data
        .labels()
        .map(|l| (0..l.len()).filter(|&r| normal[l[r]]).collect())
        .unwrap_or_default();
    data.select(&rows)
}

/// How well the reconstruction error tells the test set's anomalies (examples of other classes) from its normal
/// examples: AUROC, the anomalies' share, and the mean error of each group.
fn anomaly_metrics(test: &Dataset, normal: &[bool], errors: &[f64]) -> Result<Map<String, Json>> {
    let labels = test
        .labels()
        .ok_or_else(|| Error::new("the test set has no class labels to score anomalies by"))?;
    let scored: Vec<(f64, bool)> = errors.iter().zip(labels).map(|(&e, &c)| (e, !normal[c])).collect();
    let anomalies = scored.iter().filter(|s| s.1).count();
    let mean = |anomalous: bool| {
        let part: Vec<f64> = scored.iter().filter(|s| s.1 == anomalous).map(|s| s.0).collect();
        part.iter().sum::<f64>() / part.len().max(1) as f64
    };
    let mut m = Map::new();
    if let Some(auroc) = crate::task::metrics::roc_auc_f64(&scored) {
        m.insert("anomaly_auroc".into(), json!(auroc));
    }
    m.insert(
        "anomaly_fraction".into(),
        json!(anomalies as f64 / scored.len().max(1) as f64),
    );
    m.insert("reconstruction_error_normal".into(), json!(mean(false)));
    m.insert("reconstruction_error_anomalous".into(), json!(mean(true)));
    Ok(m)
}

/// Flattened values of a model output or input batch.
fn rows_of(data: Data) -> Result<(usize, Vec<f32>)> {
    let n = data.dims()[0];
    let values = match data {
        Data::D2(t) => t.into_data(),
        Data::D3(t) => t.into_data(),
        Data::D4(t) => t.into_data(),
    }
    .convert::<f32>()
    .try_into_vec::<f32>()
    .map_err(|e| Error::new(format!("cannot read values back: {e:?}")))?;
    Ok((n, values))
}

/// The first test images above their reconstructions, when the inputs are images.
fn reconstruction_grid(model: &Graph, test: &Dataset) -> Result<Option<ImageGrid>> {
    let Some(shape) = ImageGrid::image_shape(test.inputs.sample_shape()) else {
        return Ok(None);
    };
    let shown: Vec<usize> = (0..test.len().min(SHOWN)).collect();
    if shown.is_empty() {
        return Ok(None);
    }
    let device = model.devices().first().cloned().unwrap_or_default();
    let inputs = batch_inputs(&gather(test, &shown)?, &device)?;
    let input = inputs[0].clone();
    let output = model.forward(inputs, false, false)?.remove(0).data;
    let (n, inputs) = rows_of(input)?;
    let (_, outputs) = rows_of(output)?;
    let size = inputs.len() / n.max(1);
    let images = inputs
        .chunks(size)
        .chain(outputs.chunks(size))
        .map(<[f32]>::to_vec)
        .collect();
    Ok(Some(ImageGrid {
        file: "reconstructions.png".into(),
        caption: "Test images (top row) and their reconstructions (bottom row)".into(),
        shape,
        images,
        columns: n,
    }))
}

/// Samples a VAE decodes from codes drawn from its prior, when its outputs are images.
fn sample_grid(model: &Graph) -> Result<Option<ImageGrid>> {
    let Some(shape) = ImageGrid::image_shape(&model.output_shapes()[0]) else {
        return Ok(None);
    };
    let samples = crate::infer::sample::sample_prior(model, SAMPLES, None).at("vae")?;
    let size = samples.sample_size();
    Ok(Some(ImageGrid {
        file: "samples.png".into(),
        caption: format!("{SAMPLES} samples decoded from codes drawn from the prior N(0, I)"),
        shape,
        images: samples.data.chunks(size).map(<[f32]>::to_vec).collect(),
        columns: SHOWN,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_classes_are_checked_against_the_data() {
        let classes: Vec<String> = ["cat", "dog", "fox"].iter().map(|s| s.to_string()).collect();
        assert_eq!(normal_classes(&[], &classes, "autoencoder").unwrap(), None);
        assert_eq!(
            normal_classes(&["dog".into()], &classes, "autoencoder").unwrap(),
            Some(vec![false, true, false])
        );
        let e = normal_classes(&["dgo".into()], &classes, "vae")
            .unwrap_err()
            .to_string();
        assert!(e.contains("vae.normal") && e.contains("did you mean `dog`"), "{e}");
        let all: Vec<String> = classes.clone();
        assert!(
            normal_classes(&all, &classes, "autoencoder")
                .unwrap_err()
                .to_string()
                .contains("every class")
        );
        assert!(
            normal_classes(&["dog".into()], &[], "autoencoder")
                .unwrap_err()
                .to_string()
                .contains("labels")
        );
    }
}
