//! Training examples drawn from a trained generative model: `[data] generated = [{ model = "runs/cvae", class =
//! "7", count = 5000 }]` adds `count` samples of a conditional VAE (or any VAE/GAN run, labelled with `class`) to
//! the training split only — the minority oversampling with synthetic examples that is compared with class weights
//! and plain oversampling. The samples are in the generator's model space, so the generator must have been trained
//! on data preprocessed as this experiment's is (checked).

use std::path::PathBuf;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use crate::data::{Array, Dataset, Targets};
use crate::error::{Context, Error, Result};
use crate::experiment::data::Splits;
use crate::experiment::spec::ExperimentSpec;
use crate::infer::predict::Predictor;
use crate::infer::sample::{conditional_classes, sample_prior};
use graft_data::suggest::hint;

/// One source of generated training examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedSpec {
    /// The run directory of a `[vae]` (conditional: drawn for `class`) or `[gan]` experiment.
    pub model: PathBuf,
    /// The class the samples are labelled with (and drawn for, by a conditional model).
    pub class: String,
    /// How many samples.
    pub count: usize,
}

/// Adds the examples of every `[data] generated` entry to `splits.train`, drawn with seeds derived from `seed`.
pub fn add_generated(exp: &ExperimentSpec, splits: &mut Splits, seed: u64, device: &Device) -> Result<()> {
    for (k, spec) in exp.data.generated.iter().enumerate() {
        let at = format!("data.generated[{k}]");
        let dir = exp.resolve(&spec.model);
        let generator = Predictor::load(&dir, device).at(&at)?;
        if !matches!(generator.objective.as_deref(), Some("vae" | "gan")) {
            return Err(Error::new("not a generative model's run (a [vae] or [gan] experiment)")
                .in_file(&dir)
                .at(&at));
        }
        if generator.preprocessor != splits.preprocessor {
            return Err(Error::new(
                "the generator was trained on data preprocessed differently from this experiment's, so its samples \
                 are not in this model's input space; train it on the same data set",
            )
            .at(&at));
        }
        let names = match &splits.train.targets {
            Some(Targets::Classes { names, .. }) => names.clone(),
            _ => return Err(Error::new("generated examples are labelled with a class; the data has none").at(&at)),
        };
        let label = names.iter().position(|n| n == &spec.class).ok_or_else(|| {
            Error::new(format!(
                "no class '{}' in the data{}",
                spec.class,
                hint(&spec.class, names.iter().map(String::as_str))
            ))
            .at(format!("{at}.class"))
        })?;
        let drawn_class = match conditional_classes(&generator.graph)? {
            Some(_) => {
                let classes = crate::infer::manifest::Manifest::read(&dir)?.classes;
                Some(classes.iter().position(|c| c == &spec.class).ok_or_else(|| {
                    Error::new(format!("the generator has no class '{}'", spec.class)).at(format!("{at}.class"))
                })?)
            }
            None => None,
        };
        if spec.count == 0 {
            return Err(Error::new("must be at least 1").at(format!("{at}.count")));
        }
        device.seed(seed.wrapping_add(k as u64 + 1));
        let samples = sample_prior(&generator.graph, spec.count, drawn_class).in_file(&dir)?;
        append(&mut splits.train, samples, label).at(&at)?;
    }
    Ok(())
}

/// `data` with the rows of `inputs` added, each of class `label`.
fn append(data: &mut Dataset, inputs: Array, label: usize) -> Result<()> {
    // Generated examples are arrays: the images they join are decoded and held in memory with them.
    *data = data.materialized()?;
    if inputs.sample_shape() != data.inputs.sample_shape() {
        return Err(Error::new(format!(
            "the generator makes samples of shape {:?}; the data's are {:?}",
            inputs.sample_shape(),
            data.inputs.sample_shape()
        )));
    }
    if !data.extra_inputs.is_empty() || !data.tasks.is_empty() {
        return Err(Error::new(
            "generated examples join a data set with one input and one task",
        ));
    }
    let added = inputs.len();
    let mut shape = data.inputs.shape.clone();
    shape[0] += added;
    let mut values = std::mem::take(&mut data.inputs.data);
    values.extend(inputs.data);
    data.inputs = Array::new(shape, values)?;
    if let Some(Targets::Classes { labels, .. }) = &mut data.targets {
        labels.extend(std::iter::repeat_n(label, added));
    }
    if let Some(w) = &mut data.weights {
        w.extend(std::iter::repeat_n(1.0, added));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_rows_carry_the_label_and_keep_the_shape() {
        let inputs = Array::new(vec![2, 3], vec![0.0; 6]).unwrap();
        let targets = Targets::Classes {
            labels: vec![0, 1],
            names: vec!["a".into(), "b".into()],
        };
        let mut data = Dataset::new(inputs, Some(targets)).unwrap();
        append(&mut data, Array::new(vec![3, 3], vec![1.0; 9]).unwrap(), 1).unwrap();
        assert_eq!(data.len(), 5);
        assert_eq!(data.labels().unwrap(), &[0, 1, 1, 1, 1]);
        assert_eq!(&data.inputs.data[6..], &[1.0; 9]);
        let e = append(&mut data, Array::new(vec![1, 4], vec![0.0; 4]).unwrap(), 0).unwrap_err();
        assert!(e.to_string().contains("[4]"), "{e}");
    }
}
