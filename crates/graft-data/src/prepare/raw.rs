//! A data set read but not yet turned into model inputs ([`Raw`]), and the steps from it to a [`Dataset`]: labels
//! for stratified splits before any fitting, background examples, fitting the [`Preprocessor`] on the training rows
//! only (so held-out rows are transformed as new data will be), and transforming chosen rows.

use std::path::Path;

use super::Preprocessor;
use crate::error::{Context, Error, Result};
use crate::hf_tokenizer::PretrainedTokenizer;
use crate::table::{CsvSpec, Table, TabularPreprocessor};
use crate::text::{Tokenizer, TokenizerSpec};
use crate::{Array, Dataset, Targets};

/// A data set read but not yet turned into model inputs.
pub enum Raw {
    /// Already numeric (built-in, npy, idx).
    Ready(Dataset, Preprocessor),
    Table(Table, CsvSpec),
    Texts {
        texts: Vec<String>,
        /// One class per text (empty for multi-label texts).
        labels: Vec<usize>,
        /// Multi-label texts: the labels of each text.
        label_sets: Option<Vec<Vec<usize>>>,
        /// Class (or label) names.
        classes: Vec<String>,
        tokenizer: TokenizerSpec,
    },
}

impl Raw {
    pub fn len(&self) -> usize {
        match self {
            Raw::Ready(d, _) => d.len(),
            Raw::Table(t, _) => t.rows.len(),
            Raw::Texts { texts, .. } => texts.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class labels of every row, for stratified splits (before any fitting).
    pub fn labels(&self) -> Result<Option<Vec<usize>>> {
        Ok(match self {
            Raw::Ready(d, _) => d.labels().map(<[usize]>::to_vec),
            Raw::Texts {
                label_sets: Some(_), ..
            } => None,
            Raw::Texts { labels, .. } => Some(labels.clone()),
            Raw::Table(t, spec) => {
                if spec.target.is_none() || spec.regression {
                    return Ok(None);
                }
                // Class names come from all rows, so labels are known before the split; the statistics fitted
                // here are thrown away.
                let all: Vec<usize> = (0..t.rows.len()).collect();
                let p = TabularPreprocessor::fit(spec, t, &all)?;
                match p.targets(t, &all)? {
                    Some(Targets::Classes { labels, .. }) => Some(labels),
                    _ => None,
                }
            }
        })
    }

    /// The labels of every row of multi-label data (and their number), for iterative stratification.
    pub fn label_sets(&self) -> Option<(&[Vec<usize>], usize)> {
        match self {
            Raw::Texts {
                label_sets: Some(sets),
                classes,
                ..
            } => Some((sets, classes.len())),
            _ => None,
        }
    }

    /// This source with `background`'s examples appended as one more class called `name` (last in class order).
    pub fn with_background(self, background: Raw, name: &str) -> Result<Raw> {
        match (self, background) {
            (
                Raw::Texts {
                    mut texts,
                    mut labels,
                    label_sets: None,
                    mut classes,
                    tokenizer,
                },
                Raw::Texts { texts: extra, .. },
            ) => {
                if classes.iter().any(|c| c == name) {
                    return Err(Error::new(format!("the data already has a class '{name}'")).at("background_class"));
                }
                labels.extend(std::iter::repeat_n(classes.len(), extra.len()));
                classes.push(name.to_string());
                texts.extend(extra);
                Ok(Raw::Texts {
                    texts,
                    labels,
                    label_sets: None,
                    classes,
                    tokenizer,
                })
            }
            (Raw::Ready(main, p), Raw::Ready(extra, _)) => {
                let Some(Targets::Classes { mut labels, mut names }) = main.targets.clone() else {
                    return Err(Error::new("background examples need a data set with class labels").at("background"));
                };
                if names.iter().any(|c| c == name) {
                    return Err(Error::new(format!("the data already has a class '{name}'")).at("background_class"));
                }
                if main.images.is_some() || extra.images.is_some() {
                    return Err(Error::new(format!(
                        "background images: put them in a folder named '{name}' beside the class folders instead"
                    ))
                    .at("background"));
                }
                if extra.inputs.sample_shape() != main.inputs.sample_shape() || !main.extra_inputs.is_empty() {
                    return Err(Error::new(format!(
                        "background examples are shaped {:?}, the data set's {:?}",
                        extra.inputs.sample_shape(),
                        main.inputs.sample_shape()
                    ))
                    .at("background"));
                }
                let mut shape = main.inputs.shape.clone();
                shape[0] += extra.len();
                let mut data = main.inputs.data.clone();
                data.extend_from_slice(&extra.inputs.data);
                labels.extend(std::iter::repeat_n(names.len(), extra.len()));
                names.push(name.to_string());
                let mut ds = Dataset::new(Array::new(shape, data)?, Some(Targets::Classes { labels, names }))?;
                ds.weights = match (&main.weights, &extra.weights) {
                    (None, None) => None,
                    (a, b) => Some(
                        a.clone()
                            .unwrap_or_else(|| vec![1.0; main.len()])
                            .into_iter()
                            .chain(b.clone().unwrap_or_else(|| vec![1.0; extra.len()]))
                            .collect(),
                    ),
                };
                Ok(Raw::Ready(ds, p))
            }
            (Raw::Table(..), _) => Err(Error::new(
                "background examples for a CSV table: add them to the table as rows of their own class",
            )
            .at("background")),
            _ => Err(
                Error::new("the background examples must come in the data set's format (texts, or arrays)")
                    .at("background"),
            ),
        }
    }

    /// Fits one preprocessing on the union of several sources' training rows (`parts`: a source and its training
    /// rows; `names`: what each is called, for errors): texts share one vocabulary (or one pretrained tokenizer),
    /// arrays must be prepared alike.
    pub fn fit_union(parts: &[(&Raw, &[usize])], names: &[&str]) -> Result<Preprocessor> {
        let Some(((first, _), first_name)) = parts.first().zip(names.first()) else {
            return Err(Error::new("no data"));
        };
        match first {
            Raw::Texts { tokenizer, .. } => {
                let mut texts = vec![];
                for ((raw, rows), name) in parts.iter().zip(names) {
                    match raw {
                        Raw::Texts {
                            texts: t,
                            tokenizer: other,
                            ..
                        } if other == tokenizer => {
                            texts.extend(rows.iter().map(|&r| t[r].clone()));
                        }
                        Raw::Texts { .. } => {
                            return Err(Error::new(format!(
                                "the tasks '{first_name}' and '{name}' tokenize differently; they share one model \
                                 input, so give them the same tokenizer"
                            )));
                        }
                        _ => {
                            return Err(Error::new(format!(
                                "task '{first_name}' has texts and task '{name}' does not; the tasks share one \
                                 model input"
                            )));
                        }
                    }
                }
                let rows: Vec<usize> = (0..texts.len()).collect();
                let union = Raw::Texts {
                    labels: vec![0; texts.len()],
                    label_sets: None,
                    texts,
                    classes: vec![],
                    tokenizer: tokenizer.clone(),
                };
                union.fit(&rows)
            }
            Raw::Ready(_, p) => {
                for ((raw, _), name) in parts.iter().zip(names) {
                    if !matches!(raw, Raw::Ready(_, q) if q == p) {
                        return Err(Error::new(format!(
                            "the tasks '{first_name}' and '{name}' come in different formats; they share one model \
                             input, so give them the same kind of data"
                        )));
                    }
                }
                Ok(p.clone())
            }
            Raw::Table(..) => Err(Error::new(
                "multi-task data from CSV tables is not handled by [data.tasks]; give texts or arrays per task",
            )),
        }
    }

    /// Fits the preprocessing on `train` rows.
    pub fn fit(&self, train: &[usize]) -> Result<Preprocessor> {
        Ok(match self {
            Raw::Ready(_, p) => p.clone(),
            Raw::Table(t, spec) => Preprocessor::Tabular(Box::new(TabularPreprocessor::fit(spec, t, train)?)),
            Raw::Texts { tokenizer, .. } if tokenizer.pretrained.is_some() => {
                let path = tokenizer.pretrained.as_deref().unwrap_or(Path::new(""));
                Preprocessor::PretrainedText(Box::new(
                    PretrainedTokenizer::load(path, tokenizer.length).at("tokenizer.pretrained")?,
                ))
            }
            Raw::Texts { texts, tokenizer, .. } => Preprocessor::Text(Tokenizer::fit(tokenizer, texts, train)?),
        })
    }

    /// The model inputs and targets of `rows` under a fitted preprocessor (`training`: the rows are training rows,
    /// where a `drop` missing-value policy may drop some).
    pub fn transform(&self, p: &Preprocessor, rows: &[usize], training: bool) -> Result<Dataset> {
        match (self, p) {
            (Raw::Ready(d, _), p) => {
                let mut out = d.select(rows);
                // Images read per batch: the fitted preprocessing (a given validation folder takes the training
                // source's size and normalization), augmented only as training rows.
                if let Some(images) = &d.images {
                    let mut images = (**images).clone();
                    if let Preprocessor::Images(prep) = p {
                        images.preprocessing = prep.clone();
                    }
                    if !training {
                        images.augment = None;
                    }
                    out.images = Some(std::sync::Arc::new(images));
                }
                Ok(out)
            }
            (Raw::Table(t, _), Preprocessor::Tabular(tp)) => {
                let subset = Table {
                    header: t.header.clone(),
                    rows: rows.iter().map(|&r| t.rows[r].clone()).collect(),
                };
                let (inputs, kept) = tp.transform(&subset, training)?;
                let targets = tp.targets(&subset, &kept)?;
                Dataset::new(inputs, targets)
            }
            (
                Raw::Texts {
                    texts,
                    labels,
                    label_sets,
                    classes,
                    ..
                },
                Preprocessor::Text(_) | Preprocessor::PretrainedText(_),
            ) => {
                let chosen: Vec<String> = rows.iter().map(|&r| texts[r].clone()).collect();
                let inputs = match p {
                    Preprocessor::Text(tok) => tok.transform(&chosen),
                    Preprocessor::PretrainedText(tok) => tok.transform(&chosen)?,
                    _ => unreachable!("matched above"),
                };
                let targets = match label_sets {
                    Some(sets) => {
                        let k = classes.len();
                        let mut values = vec![0f32; rows.len() * k];
                        for (i, &r) in rows.iter().enumerate() {
                            for &l in &sets[r] {
                                values[i * k + l] = 1.0;
                            }
                        }
                        Targets::Values(Array::new(vec![rows.len(), k], values)?)
                    }
                    None => Targets::Classes {
                        labels: rows.iter().map(|&r| labels[r]).collect(),
                        names: classes.clone(),
                    },
                };
                let mut ds = Dataset::new(inputs, Some(targets))?;
                if label_sets.is_some() {
                    ds.label_names = classes.clone();
                }
                Ok(ds)
            }
            _ => Err(Error::new("internal: the preprocessor does not match the data source")),
        }
    }
}
