//! The experiment's data: read the configured sources, make the seeded (stratified where asked) training,
//! validation and test splits, fit the preprocessing on the training rows only and transform every part with it.
//! Cross-validation folds and `eval` (which reuses a run's stored preprocessing) go through [`prepare_fold`]; a
//! built model checks the data fits it with [`check_data_fits`] before training starts.

use crate::data::prepare::{Preprocessor, Raw, read_raw};
use crate::data::{Dataset, split_indices};
use crate::error::{Context, Error, Result};
use crate::experiment::spec::{DataSpec, DatasetSpec, ExperimentSpec};
use crate::model::Graph;

/// Up to `k` of `n` row indices, drawn without replacement from `seed` and a purpose tag (so draws for different
/// purposes are independent), in drawn order.
pub fn sample_rows(n: usize, k: usize, seed: u64, purpose: &[u8; 8]) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(&mut crate::data::rng::seeded_rng(purpose, seed, 0));
    rows.truncate(k.min(n));
    rows
}

/// The three parts of the data, and the preprocessing fitted on the training part.
pub struct Splits {
    pub train: Dataset,
    pub validation: Option<Dataset>,
    pub test: Option<Dataset>,
    pub preprocessor: Preprocessor,
}

impl Splits {
    /// These splits with image folders decoded into memory, for the runs that need every input as an array.
    pub fn materialized(self) -> Result<Splits> {
        Ok(Splits {
            train: self.train.materialized()?,
            validation: self.validation.as_ref().map(Dataset::materialized).transpose()?,
            test: self.test.as_ref().map(Dataset::materialized).transpose()?,
            preprocessor: self.preprocessor,
        })
    }

    /// [`check_data_fits`] for every part, each named by its key in `[data]`.
    pub fn check_fits(&mut self, graph: &Graph) -> Result<()> {
        check_data_fits(graph, &mut self.train, "data.dataset")?;
        if let Some(v) = &mut self.validation {
            check_data_fits(graph, v, "data.validation")?;
        }
        if let Some(t) = &mut self.test {
            check_data_fits(graph, t, "data.test")?;
        }
        Ok(())
    }
}

fn read(exp: &ExperimentSpec, spec: &DatasetSpec, key: &str) -> Result<Raw> {
    read_raw(&with_backbone_input(spec, &exp.model).at(key)?, &|p| exp.resolve(p)).at(key)
}

/// An `images` source for a model with a pretrained backbone, its unset size, channels and normalization taken
/// from the backbone (as Keras' `preprocess_input` of the chosen application).
fn with_backbone_input(spec: &DatasetSpec, model: &crate::model::ModelSpec) -> Result<DatasetSpec> {
    match (spec, model.backbones.first()) {
        (DatasetSpec::Images { images }, Some(backbone)) => {
            let arch = backbone.architecture;
            if let Some(c) = images.channels.filter(|c| *c != 3) {
                return Err(Error::new(format!(
                    "{} takes RGB images [3, H, W], but channels = {c}; leave channels out or set it to 3 (grey \
                     images are repeated into the three channels)",
                    arch.kind()
                ))
                .at("images.channels"));
            }
            let (mean, std) = arch.normalization();
            let side = arch.image_size();
            Ok(DatasetSpec::Images {
                images: images.clone().with_model_defaults([side, side], &mean, &std),
            })
        }
        _ => Ok(spec.clone()),
    }
}

/// Which rows of `raw` are training, validation and test rows under `data`'s split (validation and test rows are
/// `None` where `data` gives those sets instead).
type SplitRows = (Vec<usize>, Option<Vec<usize>>, Option<Vec<usize>>);

fn split_rows(raw: &Raw, data: &DataSpec, seed: u64, at: &str) -> Result<SplitRows> {
    let all: Vec<usize> = (0..raw.len()).collect();
    let (rest, test_rows) = match &data.test {
        None if data.split.test > 0.0 => {
            let (keep, held) = hold_out(raw, &all, data.split.test, data.split.stratify, seed)
                .at_with(|| format!("{at}.split.test"))?;
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
    .at_with(|| format!("{at}.split.validation"))?;
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
pub(crate) fn read_main(exp: &ExperimentSpec, dataset: &DatasetSpec) -> Result<Raw> {
    let main = read(exp, dataset, "data.dataset")?;
    match &exp.data.background {
        Some(bg) => main
            .with_background(read(exp, bg, "data.background")?, &exp.data.background_class)
            .at("data"),
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
        None => main.fit(&train_rows).at("data.dataset")?,
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
        let ds = raw.transform(preprocessor, rows, training).at(key)?;
        ds.validate().at(key)?;
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
        None => Raw::fit_union(&parts, &names).at("data.tasks")?,
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
            Dataset::union_of_tasks(parts).map(Some).at("data.tasks")
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
    if ds.images.is_none() {
        let all: Vec<&crate::data::Array> = std::iter::once(&ds.inputs).chain(&ds.extra_inputs).collect();
        graph.check_token_ids(&all).at(what)?;
    }
    let shapes = std::iter::once(ds.sample_shape()).chain(ds.extra_inputs.iter().map(|a| a.sample_shape().to_vec()));
    for (shape, input) in shapes.zip(model_inputs) {
        if shape != input.shape {
            return Err(Error::new(format!(
                "samples have shape {:?} but the model input '{}' expects {:?}",
                shape, input.name, input.shape
            ))
            .at(what));
        }
    }
    Ok(())
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
        crate::experiment::data::prepare_data(&exp, 0)
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
