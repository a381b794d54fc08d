//! A dataset is inputs plus optional targets, whatever file format they came from. Readers
//! implement [`DataSource`] and hand back a [`Dataset`]; everything downstream (splits, batches,
//! training, evaluation) works on that alone.

use super::array::Array;
use crate::error::{Context, Error, Result};

/// What a model is trained to predict for each sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class id per sample, each `< names.len()`.
    Classes {
        /// The class id of each sample.
        labels: Vec<usize>,
        /// Display name of each class; its length is the number of classes.
        names: Vec<String>,
    },
    /// Real-valued targets of shape `[n, k]`: regression outputs, soft labels or multi-label
    /// indicator vectors.
    Values(Array),
}

impl Targets {
    /// Class targets named `"0"`, `"1"`, … `"k-1"`.
    pub fn numbered_classes(labels: Vec<usize>, num_classes: usize) -> Targets {
        Targets::Classes {
            labels,
            names: numbered_class_names(num_classes),
        }
    }

    /// Number of samples these targets describe.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values(values) => values.len(),
        }
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets of the samples at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range (indices come from the program, not from user data).
    pub fn select(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes { labels, names } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                names: names.clone(),
            },
            Targets::Values(values) => Targets::Values(values.select(indices)),
        }
    }
}

/// The names `"0"`, `"1"`, … for `k` classes that came without names.
pub fn numbered_class_names(k: usize) -> Vec<String> {
    (0..k).map(|i| i.to_string()).collect()
}

/// The most classes a label file may imply without class names: a wrong file must not make graft allocate
/// millions of class names.
const MAX_INFERRED_CLASSES: usize = 1 << 20;

/// Number of classes implied by the largest label (the readers' default when no class names are given).
pub(crate) fn infer_num_classes(labels: &[usize]) -> Result<usize> {
    let Some((row, &max)) = labels
        .iter()
        .enumerate()
        .max_by_key(|&(i, &l)| (l, std::cmp::Reverse(i)))
    else {
        return Ok(0);
    };
    if max >= MAX_INFERRED_CLASSES {
        return Err(Error::new(format!(
            "label {max} would imply {} classes; give the class names explicitly if that is intended",
            max as u128 + 1
        ))
        .at(format!("row {row}")));
    }
    Ok(max + 1)
}

/// Inputs and (for supervised data) targets, sample for sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Model inputs; the first axis is the sample axis.
    pub inputs: Array,
    /// What to predict; `None` for unlabelled data (e.g. inputs to run inference on).
    pub targets: Option<Targets>,
    /// Per-sample loss weights (`sample_weight` in Keras), when given.
    pub weights: Option<Vec<f32>>,
    /// Further inputs for models with several inputs (`inputs` is the first).
    pub extra_inputs: Vec<Array>,
    /// Names of all inputs in order (empty: unnamed, matched to the model's inputs by position).
    pub input_names: Vec<String>,
    /// Multi-task data (then `targets` is `None`): per task, targets for every row and which rows have them.
    pub tasks: Vec<TaskLabels>,
    /// Names of the value targets' columns, for multi-label data (empty when unnamed).
    pub label_names: Vec<String>,
    /// Images decoded per batch: then `inputs` holds each row's file id (`[n, 1]`), not pixels.
    pub images: Option<std::sync::Arc<crate::image::ImageRows>>,
}

/// One task's targets in a multi-task data set, where an example may be labelled for some tasks only.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLabels {
    pub name: String,
    /// A row without a label holds a placeholder (class 0, or zeros).
    pub targets: Targets,
    pub present: Vec<bool>,
}

impl TaskLabels {
    pub fn select(&self, indices: &[usize]) -> TaskLabels {
        TaskLabels {
            name: self.name.clone(),
            targets: self.targets.select(indices),
            present: indices.iter().map(|&i| self.present[i]).collect(),
        }
    }
}

impl Dataset {
    /// The multi-task data set made of `parts` (task name, that task's examples), one after the other: every
    /// example carries its own task's label and none of the others'. The parts' inputs must have the same shape.
    pub fn union_of_tasks(parts: Vec<(String, Dataset)>) -> Result<Dataset> {
        // Tasks' images are held in memory here: the union is one array.
        let parts = parts
            .into_iter()
            .map(|(name, d)| Ok((name, d.materialized()?)))
            .collect::<Result<Vec<_>>>()?;
        let Some((_, first)) = parts.first() else {
            return Err(Error::new("no tasks"));
        };
        let shape = first.inputs.sample_shape().to_vec();
        let total: usize = parts.iter().map(|(_, d)| d.len()).sum();
        let mut data = Vec::with_capacity(total * first.inputs.sample_size());
        let mut tasks = vec![];
        let mut offset = 0;
        for (k, (name, part)) in parts.iter().enumerate() {
            if part.inputs.sample_shape() != shape.as_slice() || !part.extra_inputs.is_empty() {
                return Err(Error::new(format!(
                    "the inputs of task '{name}' are shaped {:?} but those of task '{}' {shape:?}; the tasks share \
                     one model input",
                    part.inputs.sample_shape(),
                    parts[0].0
                )));
            }
            data.extend_from_slice(&part.inputs.data);
            let targets = match &part.targets {
                Some(Targets::Classes { labels, names }) => {
                    let mut all = vec![0; total];
                    all[offset..offset + labels.len()].copy_from_slice(labels);
                    Targets::Classes {
                        labels: all,
                        names: names.clone(),
                    }
                }
                Some(Targets::Values(v)) => {
                    let width = v.sample_size();
                    let mut all = vec![0.0; total * width];
                    all[offset * width..(offset + v.len()) * width].copy_from_slice(&v.data);
                    Targets::Values(Array::new(
                        std::iter::once(total).chain(v.sample_shape().iter().copied()).collect(),
                        all,
                    )?)
                }
                None => return Err(Error::new(format!("task '{name}' has no labels"))),
            };
            let mut present = vec![false; total];
            present[offset..offset + part.len()].iter_mut().for_each(|p| *p = true);
            tasks.push((
                k,
                TaskLabels {
                    name: name.clone(),
                    targets,
                    present,
                },
            ));
            offset += part.len();
        }
        let mut out = Dataset::new(Array::new(std::iter::once(total).chain(shape).collect(), data)?, None)?;
        out.tasks = tasks.into_iter().map(|(_, t)| t).collect();
        Ok(out)
    }

    /// Every task's labels of the rows at `indices`.
    pub fn select_tasks(&self, indices: &[usize]) -> Vec<TaskLabels> {
        self.tasks.iter().map(|t| t.select(indices)).collect()
    }

    /// The task `name` of a multi-task data set.
    pub fn task(&self, name: &str) -> Option<&TaskLabels> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

impl Dataset {
    /// Builds a dataset and [validates](Dataset::validate) it.
    pub fn new(inputs: Array, targets: Option<Targets>) -> Result<Self> {
        let dataset = Dataset {
            inputs,
            targets,
            weights: None,
            extra_inputs: vec![],
            input_names: vec![],
            tasks: vec![],
            label_names: vec![],
            images: None,
        };
        dataset.validate()?;
        Ok(dataset)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `indices`, in that order, with their targets.
    ///
    /// # Panics
    /// If an index is out of range (indices come from the program, not from user data).
    pub fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            inputs: self.inputs.select(indices),
            targets: self.targets.as_ref().map(|t| t.select(indices)),
            weights: self.weights.as_ref().map(|w| indices.iter().map(|&i| w[i]).collect()),
            extra_inputs: self.extra_inputs.iter().map(|a| a.select(indices)).collect(),
            input_names: self.input_names.clone(),
            tasks: self.tasks.iter().map(|t| t.select(indices)).collect(),
            label_names: self.label_names.clone(),
            images: self.images.clone(),
        }
    }

    /// The shape of one sample of the first input: the decoded image's `[channels, height, width]` for images read
    /// per batch, else the input array's.
    pub fn sample_shape(&self) -> Vec<usize> {
        match &self.images {
            Some(images) => images.preprocessing.sample_shape(),
            None => self.inputs.sample_shape().to_vec(),
        }
    }

    /// This data set with its images decoded into memory (no augmentation): for the uses that need every input at
    /// once. Other data sets are returned as they are.
    pub fn materialized(&self) -> Result<Dataset> {
        let Some(images) = &self.images else {
            return Ok(self.clone());
        };
        let mut out = self.clone();
        out.inputs = images.load(&crate::image::ImageRows::ids(&self.inputs), None)?;
        out.images = None;
        Ok(out)
    }

    /// Number of classes, for class targets.
    pub fn num_classes(&self) -> Option<usize> {
        self.class_names().map(<[String]>::len)
    }

    /// Class names, for class targets.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.targets {
            Some(Targets::Classes { names, .. }) => Some(names),
            _ => None,
        }
    }

    /// Class ids, for class targets.
    pub fn labels(&self) -> Option<&[usize]> {
        match &self.targets {
            Some(Targets::Classes { labels, .. }) => Some(labels),
            _ => None,
        }
    }

    /// Value targets (`[n, k]`), for regression, soft-label or multi-label data.
    pub fn values(&self) -> Option<&Array> {
        match &self.targets {
            Some(Targets::Values(values)) => Some(values),
            _ => None,
        }
    }

    /// Checks what a reader cannot guarantee by construction: arrays match their shapes, inputs
    /// and targets have the same number of samples, and every label names an existing class.
    pub fn validate(&self) -> Result<()> {
        self.inputs.check().at("inputs")?;
        for (i, extra) in self.extra_inputs.iter().enumerate() {
            extra.check().at_with(|| format!("input {}", i + 2))?;
            if extra.len() != self.inputs.len() {
                let name = self
                    .input_names
                    .get(i + 1)
                    .cloned()
                    .unwrap_or_else(|| format!("input {}", i + 2));
                return Err(Error::new(format!(
                    "input '{name}' has {} samples but the first input has {}",
                    extra.len(),
                    self.inputs.len()
                )));
            }
        }
        if let Some(w) = &self.weights {
            if w.len() != self.inputs.len() {
                return Err(
                    Error::new(format!("{} sample weights for {} samples", w.len(), self.inputs.len()))
                        .at("sample_weight"),
                );
            }
            if let Some((row, v)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::new(format!(
                    "sample weight {v} at row {row} is not a finite non-negative number"
                ))
                .at("sample_weight"));
            }
        }
        let n = self.len();
        match &self.targets {
            None => {}
            Some(Targets::Classes { labels, names }) => {
                if labels.len() != n {
                    return Err(Error::new(format!(
                        "inputs have {n} samples but there are {} labels",
                        labels.len()
                    )));
                }
                if let Some((row, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= names.len()) {
                    return Err(Error::new(format!(
                        "label {label} at row {row} is outside the {} classes",
                        names.len()
                    )));
                }
            }
            Some(Targets::Values(values)) => {
                values.check().at("targets")?;
                if values.len() != n {
                    return Err(Error::new(format!(
                        "inputs have {n} samples but targets have {}",
                        values.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Anything that can produce a [`Dataset`]: the built-in sets, `.npy` pairs, and later IDX, CSV or
/// text readers. Sources are cheap descriptions; the work happens in [`DataSource::load`].
pub trait DataSource {
    /// Reads the data. Errors name the file (and row, where there is one) at fault.
    fn load(&self) -> Result<Dataset>;
    /// One line saying where the data comes from, for logs and reports.
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(n: usize) -> Array {
        Array::new(vec![n, 2], (0..2 * n).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn class_accessors_and_select() {
        let d = Dataset::new(inputs(4), Some(Targets::numbered_classes(vec![0, 2, 1, 2], 3))).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d.num_classes(), Some(3));
        assert_eq!(d.class_names().unwrap(), &["0", "1", "2"]);
        assert_eq!(d.labels(), Some(&[0, 2, 1, 2][..]));
        assert!(d.values().is_none());

        let s = d.select(&[3, 0]);
        assert_eq!(s.labels(), Some(&[2, 0][..]));
        assert_eq!(s.inputs.data, vec![6.0, 7.0, 0.0, 1.0]);
        assert_eq!(s.num_classes(), Some(3));
    }

    #[test]
    fn values_select_and_accessors() {
        let values = Array::new(vec![3, 1], vec![0.5, 1.5, 2.5]).unwrap();
        let d = Dataset::new(inputs(3), Some(Targets::Values(values))).unwrap();
        assert_eq!(d.num_classes(), None);
        assert_eq!(d.labels(), None);
        assert_eq!(d.select(&[2]).values().unwrap().data, vec![2.5]);
    }

    #[test]
    fn validate_names_first_bad_label() {
        let mut labels = vec![1; 50];
        labels[40] = 12;
        labels[45] = 11;
        let err = Dataset::new(inputs(50), Some(Targets::numbered_classes(labels, 10))).unwrap_err();
        assert_eq!(err.message, "label 12 at row 40 is outside the 10 classes");
    }

    #[test]
    fn validate_checks_lengths() {
        let err = Dataset::new(inputs(3), Some(Targets::numbered_classes(vec![0, 1], 2))).unwrap_err();
        assert_eq!(err.message, "inputs have 3 samples but there are 2 labels");
        let values = Array::new(vec![2, 1], vec![0.0, 1.0]).unwrap();
        let err = Dataset::new(inputs(3), Some(Targets::Values(values))).unwrap_err();
        assert_eq!(err.message, "inputs have 3 samples but targets have 2");
        let broken = Array {
            shape: vec![3, 2],
            data: vec![0.0; 5],
        };
        assert_eq!(
            Dataset::new(broken, None).unwrap_err().location.as_deref(),
            Some("inputs")
        );
        assert!(Dataset::new(inputs(0), None).unwrap().is_empty());
    }
}
