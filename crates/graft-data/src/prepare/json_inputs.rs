//! Raw inputs given as JSON instead of a file — what `graft serve` receives and `graft predict --input -` reads —
//! through the same fitted preprocessing as a file: an object of named columns per row for a CSV model, a string
//! per text for a text model, a (nested) array of numbers per sample for an array or image model.

use serde_json::Value as Json;

use crate::array::Array;
use crate::error::{Error, Result};
use crate::prepare::Preprocessor;
use crate::table::Table;

impl Preprocessor {
    /// The model inputs for `items`, one sample each; `sample_shape` is the model's input shape (arrays are checked
    /// against it), `text_column` the CSV column a text model was trained on (an object may name its text by it or
    /// as `text`). Errors name the item: `inputs[3]: ...`.
    pub fn inputs_from_json(&self, items: &[Json], sample_shape: &[usize], text_column: Option<&str>) -> Result<Array> {
        match self {
            Preprocessor::None => arrays(items, sample_shape, 1.0),
            Preprocessor::Image { scale } => arrays(items, sample_shape, *scale),
            Preprocessor::Tabular(tp) => {
                let table = table(items)?;
                Ok(tp.transform(&table, false).map_err(|e| e.at("inputs"))?.0)
            }
            Preprocessor::Text(tok) => Ok(tok.transform(&texts(items, text_column)?)),
            Preprocessor::PretrainedText(tok) => tok.transform(&texts(items, text_column)?).map_err(|e| e.at("inputs")),
            Preprocessor::Images(prep) => images(prep, items),
        }
    }

    /// What one input looks like in JSON and what is done to it: for the server's model description.
    pub fn describe_json_input(&self) -> Json {
        match self {
            Preprocessor::None => serde_json::json!({
                "kind": "array",
                "input": "an array of numbers in the model's input shape, used as it is",
            }),
            Preprocessor::Image { scale } => serde_json::json!({
                "kind": "image",
                "input": "an array of pixel values in the model's input shape",
                "divided_by": scale,
            }),
            Preprocessor::Tabular(tp) => serde_json::json!({
                "kind": "table",
                "input": "an object of column name → value (a missing key or null is a missing value)",
                "columns": tp.feature_columns(),
            }),
            Preprocessor::Text(_) | Preprocessor::PretrainedText(_) => serde_json::json!({
                "kind": "text",
                "input": "a string, or an object with the text under \"text\"",
                "tokenizer": if matches!(self, Preprocessor::Text(_)) { "graft words" } else { "pretrained" },
            }),
            Preprocessor::Images(prep) => serde_json::json!({
                "kind": "image file",
                "input": "the bytes of an image file (JPEG, PNG, BMP, GIF, WebP) as a base64 string (or \
                          {\"base64\": ...}), or an array of numbers already preprocessed",
                "size": prep.size,
                "channels": prep.channels,
                "resize": prep.resize,
                "mean": prep.mean,
                "std": prep.std,
            }),
        }
    }
}

/// Image files as base64 strings (or `{"base64": ...}`) decoded and preprocessed, or arrays already preprocessed
/// (checked against the range the model was trained on).
fn images(prep: &crate::image::ImagePreprocessing, items: &[Json]) -> Result<Array> {
    use base64::Engine;
    let shape = prep.sample_shape();
    let want: usize = shape.iter().product();
    let mut data = Vec::with_capacity(items.len() * want);
    for (i, item) in items.iter().enumerate() {
        let encoded = match item {
            Json::String(s) => Some(s.as_str()),
            Json::Object(o) => match o.get("base64") {
                Some(Json::String(s)) => Some(s.as_str()),
                _ => {
                    return Err(Error::new("expected {\"base64\": \"...\"} holding an image file").at(at(i)));
                }
            },
            _ => None,
        };
        match encoded {
            Some(text) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| Error::new(format!("not base64 ({e})")).at(at(i)))?;
                data.extend(prep.load_bytes(&bytes).map_err(|e| e.at(at(i)))?);
            }
            None => {
                let one = arrays(std::slice::from_ref(item), &shape, 1.0).map_err(|e| {
                    let mut e = e;
                    e.location = Some(at(i));
                    e
                })?;
                Preprocessor::Images(prep.clone())
                    .check_range(&one)
                    .map_err(|e| e.at(at(i)))?;
                data.extend(one.data);
            }
        }
    }
    Array::new(std::iter::once(items.len()).chain(shape).collect(), data)
}

fn at(i: usize) -> String {
    format!("inputs[{i}]")
}

/// Each item flattened to numbers (row-major), checked against the sample shape, divided by `scale`.
fn arrays(items: &[Json], sample_shape: &[usize], scale: f32) -> Result<Array> {
    let want: usize = sample_shape.iter().product();
    let mut data = Vec::with_capacity(items.len() * want);
    for (i, item) in items.iter().enumerate() {
        let start = data.len();
        flatten(item, &mut data).map_err(|e| e.at(at(i)))?;
        let got = data.len() - start;
        if got != want {
            return Err(Error::new(format!(
                "the model takes samples of shape {sample_shape:?} ({want} numbers), this one has {got}"
            ))
            .at(at(i)));
        }
    }
    if scale != 1.0 {
        data.iter_mut().for_each(|v| *v /= scale);
    }
    let mut shape = vec![items.len()];
    shape.extend_from_slice(sample_shape);
    Array::new(shape, data)
}

fn flatten(value: &Json, out: &mut Vec<f32>) -> Result<()> {
    match value {
        Json::Number(n) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if !v.is_finite() || v.abs() > f32::MAX as f64 {
                return Err(Error::new(format!("{n} is not a finite 32-bit number")));
            }
            out.push(v as f32);
            Ok(())
        }
        Json::Array(values) => values.iter().try_for_each(|v| flatten(v, out)),
        other => Err(Error::new(format!(
            "expected an array of numbers, found {}",
            describe(other)
        ))),
    }
}

/// The rows as a table: the header is every key in the order first seen, a key a row lacks (or `null`) an empty
/// cell, read as missing as in a CSV file.
fn table(items: &[Json]) -> Result<Table> {
    let mut header: Vec<String> = vec![];
    for (i, item) in items.iter().enumerate() {
        let Json::Object(fields) = item else {
            return Err(Error::new(format!(
                "expected an object of column name → value, found {}",
                describe(item)
            ))
            .at(at(i)));
        };
        for key in fields.keys() {
            if !header.contains(key) {
                header.push(key.clone());
            }
        }
    }
    let rows = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            header
                .iter()
                .map(|key| match item.get(key) {
                    None | Some(Json::Null) => Ok(String::new()),
                    Some(Json::String(s)) => Ok(s.clone()),
                    Some(Json::Number(n)) => Ok(n.to_string()),
                    Some(Json::Bool(b)) => Ok(b.to_string()),
                    Some(other) => Err(
                        Error::new(format!("expected a number or a string, found {}", describe(other)))
                            .at(format!("{}.{key}", at(i))),
                    ),
                })
                .collect::<Result<Vec<String>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Table { header, rows })
}

fn texts(items: &[Json], text_column: Option<&str>) -> Result<Vec<String>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Json::String(s) => Ok(s.clone()),
            Json::Object(fields) => {
                let key = text_column.filter(|c| fields.contains_key(*c)).unwrap_or("text");
                match fields.get(key) {
                    Some(Json::String(s)) => Ok(s.clone()),
                    _ => Err(
                        Error::new(format!("expected a string, or an object with the text under \"{key}\"")).at(at(i)),
                    ),
                }
            }
            other => Err(Error::new(format!("expected a string, found {}", describe(other))).at(at(i))),
        })
        .collect()
}

fn describe(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_are_flattened_checked_and_scaled() {
        let p = Preprocessor::Image { scale: 255.0 };
        let items = [json!([[[0, 255], [51, 102]]]), json!([0, 0, 255, 255])];
        let a = p.inputs_from_json(&items, &[1, 2, 2], None).unwrap();
        assert_eq!(a.shape, [2, 1, 2, 2]);
        assert_eq!(a.data, [0.0, 1.0, 0.2, 0.4, 0.0, 0.0, 1.0, 1.0]);
        let e = p.inputs_from_json(&[json!([1, 2, 3])], &[1, 2, 2], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inputs[0]: the model takes samples of shape [1, 2, 2] (4 numbers), this one has 3"
        );
        let e = Preprocessor::None
            .inputs_from_json(&[json!([1, 2]), json!([1, "x"])], &[2], None)
            .unwrap_err();
        assert_eq!(e.to_string(), "inputs[1]: expected an array of numbers, found a string");
        let e = Preprocessor::None
            .inputs_from_json(&[json!([1e300, 0])], &[2], None)
            .unwrap_err();
        assert!(e.to_string().contains("finite 32-bit"), "{e}");
    }

    #[test]
    fn rows_become_a_table_with_missing_cells() {
        let t = table(&[json!({"a": 1.5, "b": "x"}), json!({"b": null, "c": true})]).unwrap();
        assert_eq!(t.header, ["a", "b", "c"]);
        assert_eq!(t.rows, [vec!["1.5", "x", ""], vec!["", "", "true"]]);
        let e = table(&[json!({"a": 1}), json!([1])]).unwrap_err();
        assert!(e.to_string().starts_with("inputs[1]: expected an object"), "{e}");
        let e = table(&[json!({"a": [1]})]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inputs[0].a: expected a number or a string, found an array"
        );
    }

    #[test]
    fn texts_are_strings_or_objects() {
        let got = texts(
            &[json!("hi"), json!({"text": "a"}), json!({"review": "b", "text": "c"})],
            Some("review"),
        )
        .unwrap();
        assert_eq!(got, ["hi", "a", "b"]);
        let e = texts(&[json!(3)], None).unwrap_err();
        assert_eq!(e.to_string(), "inputs[0]: expected a string, found a number");
        let e = texts(&[json!({"body": "x"})], None).unwrap_err();
        assert!(e.to_string().contains("under \"text\""), "{e}");
    }
}
