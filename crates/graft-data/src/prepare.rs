//! From a data source to model inputs: sources that need fitted preprocessing (CSV tables, texts) are read raw,
//! split, fitted on the training rows only, and transformed; the fitted [`Preprocessor`] is stored with the model so
//! `predict` applies exactly the same transformation to raw inputs.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::hf_tokenizer::PretrainedTokenizer;
use super::idx::IdxSource;
use super::table::{CsvSpec, Table, TabularPreprocessor, read_csv};
use super::text::{TextSpec, Tokenizer, TokenizerSpec, read_texts};
use super::{Array, DataSource, Dataset, NpySource, Targets, load_digits};
use crate::error::{Context, Error, Result};

/// An IDX image/label pair (MNIST format, gzip or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxFiles {
    pub images: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<PathBuf>,
    /// Pixel values are divided by this (255 for 8-bit images).
    #[serde(default = "scale_255")]
    pub scale: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

fn scale_255() -> f32 {
    255.0
}

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

/// The fitted transformation from raw records to model inputs, stored in `preprocess.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preprocessor {
    /// Inputs are used as they are (`.npy`).
    None,
    /// Images whose values are divided by `scale` (IDX).
    Image {
        scale: f32,
    },
    Tabular(Box<TabularPreprocessor>),
    Text(Tokenizer),
    /// A pretrained encoder's tokenizer.
    PretrainedText(Box<PretrainedTokenizer>),
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
            (Raw::Ready(d, _), _) => Ok(d.select(rows)),
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

/// Where a data set comes from, as an experiment names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SourceSpec {
    /// A built-in data set: `"digits"`.
    Builtin(String),
    /// NumPy arrays: `{ npy = { x = "x.npy", y = "y.npy" } }`.
    Npy { npy: NpyFiles },
    /// IDX files: `{ idx = { images = "...", labels = "..." } }`.
    Idx { idx: IdxFiles },
    /// A CSV table: `{ csv = { path = "...", target = "income" } }`.
    Csv { csv: CsvSpec },
    /// Texts, one folder per class or a CSV column: `{ text = { path = "...", tokenizer = { ... } } }`.
    Text { text: TextSpec },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpyFiles {
    /// The inputs: one file, or one file per model input (`x = { image = "img.npy", meta = "meta.npy" }`).
    pub x: XFiles,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<PathBuf>,
    /// Class names in label order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Per-sample loss weights `[n]` (Keras' `sample_weight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_weight: Option<PathBuf>,
}

/// The keys naming a source's kind: `{ csv = { ... } }`.
pub const SOURCE_KINDS: [&str; 4] = ["csv", "text", "npy", "idx"];

/// Read by hand: the kind key picks the options struct, whose unknown keys and values are then errors at their
/// own key path (`data.dataset.csv.catgorical`).
impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SourceSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a built-in data set ({}) or a table naming one kind of source: {}",
                    BUILTIN_DATASETS.join(", "),
                    SOURCE_KINDS.map(|k| format!("{{ {k} = {{ ... }} }}")).join(", ")
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<SourceSpec, E> {
                if BUILTIN_DATASETS.contains(&v) {
                    return Ok(SourceSpec::Builtin(v.to_string()));
                }
                let kind = SOURCE_KINDS.iter().find(|k| **k == v);
                Err(E::custom(match kind {
                    Some(k) => format!("a {k} source is a table: {{ {k} = {{ path = \"...\", ... }} }}"),
                    None => format!(
                        "unknown built-in data set \"{v}\"{}; built-in: {}; or a table such as {{ csv = {{ path = \"...\" }} }}",
                        crate::suggest::hint(v, BUILTIN_DATASETS),
                        BUILTIN_DATASETS.join(", ")
                    ),
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<SourceSpec, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format!(
                        "an empty table; name one kind of source: {}",
                        SOURCE_KINDS.join(", ")
                    )));
                };
                if let Some(message) = crate::de::unknown_kind("data source", &kind, &SOURCE_KINDS) {
                    return Err(de::Error::custom(message));
                }
                let spec = match kind.as_str() {
                    "csv" => SourceSpec::Csv { csv: map.next_value()? },
                    "text" => SourceSpec::Text {
                        text: map.next_value()?,
                    },
                    "npy" => SourceSpec::Npy { npy: map.next_value()? },
                    _ => SourceSpec::Idx { idx: map.next_value()? },
                };
                if let Some(other) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a data source names one kind, found `{kind}` and `{other}`"
                    )));
                }
                Ok(spec)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum XFiles {
    One(PathBuf),
    /// Input name → file, in the order written.
    Named(toml::map::Map<String, toml::Value>),
}

impl<'de> Deserialize<'de> for XFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = XFiles;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the path of a .npy file, or a table of input name = path")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<XFiles, E> {
                Ok(XFiles::One(PathBuf::from(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<XFiles, A::Error> {
                let mut files = toml::map::Map::new();
                while let Some((name, path)) = map.next_entry::<String, String>()? {
                    files.insert(name, toml::Value::String(path));
                }
                Ok(XFiles::Named(files))
            }
        }
        d.deserialize_any(V)
    }
}

impl XFiles {
    /// (name, path) pairs; the single-file form is unnamed.
    fn files(&self) -> Result<Vec<(Option<String>, PathBuf)>> {
        match self {
            XFiles::One(p) => Ok(vec![(None, p.clone())]),
            XFiles::Named(map) if map.is_empty() => Err(Error::new("`x` names no input files").at("x")),
            XFiles::Named(map) => map
                .iter()
                .map(|(name, v)| match v.as_str() {
                    Some(p) => Ok((Some(name.clone()), PathBuf::from(p))),
                    None => Err(Error::new("expected the path of a .npy file").at(format!("x.{name}"))),
                })
                .collect(),
        }
    }
}

pub const BUILTIN_DATASETS: [&str; 1] = ["digits"];

/// Reads a source; `resolve` turns paths in the spec into real paths (relative to the experiment file).
pub fn read_raw(spec: &SourceSpec, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Raw> {
    Ok(match spec {
        SourceSpec::Builtin(name) if name == "digits" => Raw::Ready(load_digits()?, Preprocessor::None),
        SourceSpec::Builtin(name) => {
            return Err(Error::new(format!(
                "unknown built-in dataset \"{name}\"{}; built-in: {}",
                crate::suggest::hint(name, BUILTIN_DATASETS),
                BUILTIN_DATASETS.join(", ")
            )));
        }
        SourceSpec::Npy { npy } => {
            let files = npy.x.files()?;
            let mut src = NpySource::new(resolve(&files[0].1));
            if let Some(y) = &npy.y {
                src = src.with_targets(resolve(y));
            }
            if let Some(c) = &npy.classes {
                src = src.with_classes(c.clone());
            }
            if let Some(w) = &npy.sample_weight {
                src = src.with_sample_weight(resolve(w));
            }
            let mut ds = src.load()?;
            for (_, path) in &files[1..] {
                ds.extra_inputs.push(super::read_npy_f32(resolve(path))?);
            }
            if files[0].0.is_some() {
                ds.input_names = files.iter().filter_map(|(n, _)| n.clone()).collect();
            }
            ds.validate().map_err(|e| e.in_file(resolve(&files[0].1)))?;
            Raw::Ready(ds, Preprocessor::None)
        }
        SourceSpec::Idx { idx } => {
            let src = IdxSource {
                images: resolve(&idx.images),
                labels: idx.labels.as_deref().map(resolve),
                scale: idx.scale,
                classes: idx.classes.clone(),
            };
            Raw::Ready(src.load()?, Preprocessor::Image { scale: idx.scale })
        }
        SourceSpec::Csv { csv } => {
            let spec = CsvSpec {
                path: resolve(&csv.path),
                ..csv.clone()
            };
            let table = read_csv(&spec)?;
            check_columns(&spec, &table.header).at("csv")?;
            Raw::Table(table, spec)
        }
        SourceSpec::Text { text } => {
            let mut spec = TextSpec {
                path: resolve(&text.path),
                ..text.clone()
            };
            spec.tokenizer.pretrained = spec.tokenizer.pretrained.as_deref().map(resolve);
            if spec.label_separator.is_some() {
                let (texts, sets, classes) = crate::text::read_label_sets(&spec)?;
                Raw::Texts {
                    texts,
                    labels: vec![],
                    label_sets: Some(sets),
                    classes,
                    tokenizer: spec.tokenizer.clone(),
                }
            } else {
                let (texts, labels, classes) = read_texts(&spec)?;
                Raw::Texts {
                    texts,
                    labels,
                    label_sets: None,
                    classes,
                    tokenizer: spec.tokenizer.clone(),
                }
            }
        }
    })
}

/// Every column the spec names (`target`, `ignore`, `categorical`) is in the table; otherwise an error at that key
/// with the closest column name. Checked on reading, before the split, whose errors would name the split instead.
fn check_columns(spec: &CsvSpec, header: &[String]) -> Result<()> {
    let named = spec.target.iter().map(|t| ("target", t));
    let named = named
        .chain(spec.ignore.iter().map(|c| ("ignore", c)))
        .chain(spec.categorical.iter().flatten().map(|c| ("categorical", c)));
    for (key, column) in named {
        if !header.contains(column) {
            let file = spec.path.file_name().unwrap_or(spec.path.as_os_str()).to_string_lossy();
            return Err(Error::new(format!(
                "no column `{column}` in {file}{}; the columns are: {}",
                crate::suggest::hint(column, header.iter().map(String::as_str)),
                header.join(", ")
            ))
            .at(key));
        }
    }
    Ok(())
}

impl Preprocessor {
    /// Reads raw inputs for prediction in the format this preprocessor was fitted on: `.npy` arrays, IDX image files,
    /// CSV tables (columns found by name; the target column may be absent), or text (one text per line in a `.txt`
    /// file, or a CSV's only column or its `text` column).
    pub fn read_inputs(&self, path: &Path) -> Result<Array> {
        self.read_inputs_from(path, None)
    }

    /// [`Preprocessor::read_inputs`]; texts in a CSV come from `text_column` (the column the model was trained on)
    /// when the file has it.
    pub fn read_inputs_from(&self, path: &Path, text_column: Option<&str>) -> Result<Array> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "npy" {
            return super::read_npy_f32(path);
        }
        match self {
            Preprocessor::None => {
                Err(Error::new("this model was trained on .npy arrays; give a .npy file").in_file(path))
            }
            Preprocessor::Image { scale } => {
                let src = IdxSource {
                    images: path.to_path_buf(),
                    labels: None,
                    scale: *scale,
                    classes: None,
                };
                Ok(src.load()?.inputs)
            }
            Preprocessor::Tabular(tp) => {
                let spec = tp.predict_spec(path);
                let table = read_csv(&spec)?;
                Ok(tp.transform(&table, false).in_file(path)?.0)
            }
            Preprocessor::Text(tok) => Ok(tok.transform(&read_text_inputs(path, text_column)?)),
            Preprocessor::PretrainedText(tok) => tok.transform(&read_text_inputs(path, text_column)?).in_file(path),
        }
    }

    /// The values of the CSV columns `names` in every row of `path`, read as [`Preprocessor::read_inputs_from`] reads
    /// the file, so row `i` belongs to prediction `i` (`predict --keep id`).
    pub fn read_columns(&self, path: &Path, names: &[String]) -> Result<Vec<Vec<String>>> {
        let is_csv = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let spec = match self {
            Preprocessor::Tabular(tp) => tp.predict_spec(path),
            Preprocessor::Text(_) | Preprocessor::PretrainedText(_) if is_csv => CsvSpec {
                path: path.to_path_buf(),
                ..CsvSpec::default()
            },
            _ => {
                return Err(
                    Error::new("--keep copies columns of a CSV input; this input has no named columns")
                        .in_file(path)
                        .at("--keep"),
                );
            }
        };
        let table = read_csv(&spec)?;
        let mut positions = vec![];
        for name in names {
            let k = table.header.iter().position(|h| h == name).ok_or_else(|| {
                Error::new(format!(
                    "no column `{name}`{}; the columns are: {}",
                    crate::suggest::hint(name, table.header.iter().map(String::as_str)),
                    table.header.join(", ")
                ))
                .in_file(path)
                .at("--keep")
            })?;
            positions.push(k);
        }
        Ok(table
            .rows
            .iter()
            .map(|row| {
                positions
                    .iter()
                    .map(|&k| row.get(k).cloned().unwrap_or_default())
                    .collect()
            })
            .collect())
    }
}

/// The texts to predict on: a CSV's `trained` column (the one the model learned from), its only column or its `text`
/// column (quoted, possibly multi-line cells), or the lines of any other file, one text each.
fn read_text_inputs(path: &Path, trained: Option<&str>) -> Result<Vec<String>> {
    if !path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        return read_lines(path);
    }
    let table = read_csv(&CsvSpec {
        path: path.to_path_buf(),
        ..CsvSpec::default()
    })?;
    let by_name = |name: &str| table.header.iter().position(|h| h.trim() == name);
    let column = match (trained.and_then(by_name), table.header.as_slice()) {
        (Some(k), _) => k,
        (None, [_]) => 0,
        (None, header) => by_name("text").ok_or_else(|| {
            let wanted = match trained {
                Some(name) => {
                    format!("the column `{name}` the model was trained on, a single column or one named `text`")
                }
                None => "a single column or one named `text`".to_string(),
            };
            Error::new(format!(
                "a CSV of texts to predict on needs {wanted}; the columns are: {} (or give a .txt file with one text \
                 per line)",
                header.join(", ")
            ))
            .in_file(path)
        })?,
    };
    Ok(table
        .rows
        .into_iter()
        .map(|mut r| std::mem::take(&mut r[column]))
        .collect())
}

/// The lines of a text file, one text each.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read(path).in_file(path)?;
    Ok(String::from_utf8_lossy(&text).lines().map(str::to_string).collect())
}
