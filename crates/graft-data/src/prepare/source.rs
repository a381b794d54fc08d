//! The source specs an experiment writes (`data.dataset`: a built-in data set or one table naming its kind: `csv`,
//! `text`, `npy`, `idx`), deserialized by hand so that an unknown key or kind is an error at its own key path, and
//! [`read_raw`], which reads a source into a [`Raw`] data set. Columns the spec names are checked here, on reading,
//! so their errors name the spec's key rather than a split.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{Preprocessor, Raw};
use crate::error::{Context, Error, Result};
use crate::idx::IdxSource;
use crate::image_source::{ImageSpec, read_images};
use crate::table::{CsvSpec, read_csv};
use crate::text::{TextSpec, read_texts};
use crate::{DataSource, NpySource, load_digits};

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
    /// Image files, one folder per class or a CSV of paths and labels: `{ images = { path = "...", size = [H, W] } }`.
    Images { images: ImageSpec },
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
pub const SOURCE_KINDS: [&str; 5] = ["csv", "text", "npy", "idx", "images"];

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
                    "images" => SourceSpec::Images {
                        images: map.next_value()?,
                    },
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
                ds.extra_inputs.push(crate::read_npy_f32(resolve(path))?);
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
        SourceSpec::Images { images } => {
            let spec = ImageSpec {
                path: resolve(&images.path),
                ..images.clone()
            };
            let (ds, preprocessing) = read_images(&spec)?;
            Raw::Ready(ds, Preprocessor::Images(preprocessing))
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
