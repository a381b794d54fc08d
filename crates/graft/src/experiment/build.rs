//! Building the model an experiment trains: the graph from `[model]` sized to the data, pretrained encoders and
//! word vectors loaded, `init_from` weights restored, frozen parameters marked; and the task heads that say what
//! each model output is trained for. Mistakes in the pairing of model and data (a vocabulary larger than the
//! embedding, a numeric target under a classification loss) are found here, before training starts.

use crate::data::prepare::Preprocessor;
use crate::data::{Dataset, Targets};
use crate::error::{Context, Error, Result};
use crate::experiment::data::Splits;
use crate::experiment::spec::ExperimentSpec;
use crate::model::Graph;
use crate::pretrained::load::{load_pretrained_embeddings, load_pretrained_encoders};
use crate::task::head::TaskHead;
use crate::task::loss::Task;
use burn::prelude::*;
use graft_data::suggest::hint;

/// The model of `exp` for the data of `splits`, built on `device`: pretrained encoders and vectors loaded,
/// `init_from` restored, and the parameters of `freeze`, fixed embeddings and layers outside the layer groups
/// frozen.
pub fn build_model(exp: &ExperimentSpec, splits: &Splits, device: &Device, seed: u64, quiet: bool) -> Result<Graph> {
    let spec = exp
        .model
        .clone()
        .with_data_shape(&splits.train.sample_shape())
        .with_pretrained_sizes(&|p| exp.resolve(p))?;
    let model = load_pretrained_encoders(Graph::build(&spec, device)?, quiet)?;
    let model = crate::pretrained::load_pretrained_backbones(model, &spec.backbones, quiet)?;
    let model = match &exp.train.init_from {
        Some(init) => {
            let init = crate::model::restore::RestoreSpec {
                path: exp.resolve(&init.path),
                ..init.clone()
            };
            let (model, report) = crate::model::restore::restore(model, &init)?;
            if !quiet {
                eprintln!("init_from {}: {report}", init.path.display());
            }
            model
        }
        None => model,
    };
    let (model, fixed) = load_pretrained_embeddings(&|p| exp.resolve(p), model, &splits.preprocessor, seed, quiet)?;
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
    Ok(model)
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
        if exp.train.loss.task(width(0)) == Task::Regression
            && let Some(Targets::Classes { names, .. }) = &train.targets
        {
            return Err(Error::new(format!(
                "this loss predicts numbers, but the target was read as {} classes; for a numeric target set \
                 `regression = true` on the data source (e.g. {{ csv = {{ path = \"...\", target = \"...\", \
                 regression = true }} }}), or use a classification loss",
                names.len()
            ))
            .at("train.loss"));
        }
        let mut head = TaskHead::new(&exp.train.loss, width(0), classes).at("train.loss")?;
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
        let mut head = TaskHead::new(&loss, width(output), classes).at_with(|| format!("{at}.loss"))?;
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
