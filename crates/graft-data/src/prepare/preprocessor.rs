//! The fitted [`Preprocessor`], stored with the model in `preprocess.json`, and reading predict-time inputs through
//! it: a file in the format the model was trained on (arrays, images, a table, texts) becomes model inputs by
//! exactly the transformation training applied.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::hf_tokenizer::PretrainedTokenizer;
use crate::idx::IdxSource;
use crate::image::ImagePreprocessing;
use crate::image_source::list_inputs;
use crate::table::{CsvSpec, TabularPreprocessor, read_csv};
use crate::text::Tokenizer;
use crate::{Array, DataSource};

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
    /// Image files, decoded, resized and normalized.
    Images(ImagePreprocessing),
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
            let array = crate::read_npy_f32(path)?;
            self.check_range(&array).map_err(|e| e.in_file(path))?;
            return Ok(array);
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
            Preprocessor::Images(prep) => prep.load_files(&list_inputs(path, None)?),
        }
    }

    /// The image files `read_inputs` reads from `path` (one image, a folder, a CSV of paths), for a model trained on
    /// image files: the names written beside the predictions. `None` for other models.
    pub fn input_files(&self, path: &Path) -> Result<Option<Vec<std::path::PathBuf>>> {
        match self {
            Preprocessor::Images(_) if path.extension().and_then(|e| e.to_str()) != Some("npy") => {
                list_inputs(path, None).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Arrays given to an image model must hold values as its training images did: a model trained on 0–1 values
    /// that gets raw 0–255 pixels would answer without a word, so that is an error.
    pub fn check_range(&self, array: &Array) -> Result<()> {
        let (lo, hi) = match self {
            Preprocessor::Images(prep) => prep.value_range(),
            Preprocessor::Image { scale } if *scale > 0.0 => (0.0, 255.0 / scale),
            _ => return Ok(()),
        };
        let (min, max) = array
            .data
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let slack = 0.05 * (hi - lo);
        if max > hi + slack || min < lo - slack {
            let hint = if max > 2.0 * hi.max(1.0) && max <= 255.5 && hi <= 1.5 {
                " (raw 0–255 pixels? divide them by 255)".to_string()
            } else {
                String::new()
            };
            return Err(Error::new(format!(
                "the model was trained on inputs from {lo} to {hi}, but these range from {min} to {max}{hint}"
            )));
        }
        Ok(())
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
