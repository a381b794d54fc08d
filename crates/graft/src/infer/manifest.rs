//! `preprocess.json`, the run directory's manifest: what `predict` and `eval` need besides the model's weights —
//! the fitted preprocessing, the task, class names, input shapes, the loss with its resolved class weights, the
//! calibrated temperature, tuned thresholds and target scaling; for a multi-task model, the same per task. One
//! typed struct, written by `graft train` and `graft import` and read by [`Predictor`](crate::infer::predict::Predictor),
//! so writer and reader cannot drift apart. Every key keeps the name and shape graft has always written; keys added
//! later are optional, so older run directories still load, and a file from a newer graft is refused by its
//! `format` number instead of being misread.

use std::path::Path;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::data::fsio::write_atomic;
use crate::data::prepare::Preprocessor;
use crate::error::{Error, Result};
use crate::model::Graph;
use crate::task::head::{ClassWeights, TargetScaler, TaskHead};
use crate::task::loss::{LossSpec, Task};

/// The manifest's file name in a run directory.
pub const MANIFEST_FILE: &str = "preprocess.json";

/// The manifest format this graft writes and reads; files without a `format` key (graft before it was added) are
/// format 1.
pub const MANIFEST_FORMAT: u32 = 1;

/// The contents of `preprocess.json`. The fields are in the order the file has always been written in (the JSON
/// object's keys come out sorted), and lenient where the untyped reader was: a `classes`, `thresholds`,
/// `class_weights` or `temperature` it could not read counted as absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] when written.
    #[serde(default = "format_one")]
    pub format: u32,
    /// The fitted transformation from raw records to model inputs.
    #[serde(default = "no_preprocessor", deserialize_with = "preprocessor")]
    pub preprocessor: Preprocessor,
    /// The (first) task, as the loss implies; written for people and other tools, not read back.
    #[serde(default, deserialize_with = "lenient")]
    pub task: Option<Task>,
    #[serde(default, deserialize_with = "lenient")]
    pub classes: Vec<String>,
    #[serde(deserialize_with = "loss")]
    pub loss: LossSpec,
    #[serde(default, deserialize_with = "lenient")]
    pub class_weights: Option<ClassWeights>,
    #[serde(default, deserialize_with = "target_scaler")]
    pub target_scaler: Option<TargetScaler>,
    #[serde(default = "one", deserialize_with = "number_or_one")]
    pub temperature: f64,
    #[serde(default, deserialize_with = "lenient")]
    pub thresholds: Option<Vec<f64>>,
    /// The model's inputs, by name and per-sample shape (for people and other tools; the model file has them).
    #[serde(default, deserialize_with = "lenient")]
    pub inputs: Vec<ManifestInput>,
    /// A multi-task model's tasks; absent for a model trained for one task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<ManifestTask>>,
    /// The CSV column a text model's texts came from in training, so `predict` reads that column of a CSV with
    /// several.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient")]
    pub text_column: Option<String>,
    /// `"autoencoder"` or `"vae"` for a model trained to reconstruct its input (then `task` is absent and `loss`
    /// scores the reconstruction), `"gan"` for a GAN's generator; absent for supervised models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
}

/// One model input: its name and per-sample shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestInput {
    pub name: String,
    pub shape: Vec<usize>,
}

/// One task of a multi-task model, with the model output that serves it and its share of the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestTask {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub task: Option<Task>,
    #[serde(default, deserialize_with = "lenient")]
    pub classes: Vec<String>,
    pub loss: LossSpec,
    pub output: usize,
    #[serde(default = "one", deserialize_with = "number_or_one")]
    pub weight: f64,
    #[serde(default, deserialize_with = "lenient")]
    pub class_weights: Option<ClassWeights>,
    #[serde(default = "one", deserialize_with = "number_or_one")]
    pub temperature: f64,
    #[serde(default, deserialize_with = "lenient")]
    pub thresholds: Option<Vec<f64>>,
}

fn format_one() -> u32 {
    1
}

fn one() -> f64 {
    1.0
}

fn no_preprocessor() -> Preprocessor {
    Preprocessor::None
}

/// The value, or its default where it does not parse (as the untyped reader treated it).
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> std::result::Result<T, D::Error> {
    Ok(serde_json::from_value(Json::deserialize(d)?).unwrap_or_default())
}

/// A number, or 1 where there is none.
fn number_or_one<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Json::deserialize(d)?.as_f64().unwrap_or(1.0))
}

/// The value of the key `name`, its error prefixed by the key.
fn named<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D, name: &str) -> std::result::Result<T, D::Error> {
    serde_json::from_value(Json::deserialize(d)?).map_err(|e| serde::de::Error::custom(format!("{name}: {e}")))
}

fn preprocessor<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Preprocessor, D::Error> {
    named(d, "preprocessor")
}

fn loss<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<LossSpec, D::Error> {
    named(d, "loss")
}

fn target_scaler<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<TargetScaler>, D::Error> {
    named(d, "target_scaler")
}

fn manifest_inputs(graph: &Graph) -> Vec<ManifestInput> {
    graph
        .spec
        .inputs
        .iter()
        .map(|i| ManifestInput {
            name: i.name.clone(),
            shape: i.shape.clone(),
        })
        .collect()
}

impl Manifest {
    /// The manifest of a model with `heads` (a multi-task model's tasks are listed when its heads are named) and
    /// `preprocessor`.
    pub fn new(heads: &[TaskHead], graph: &Graph, preprocessor: &Preprocessor) -> Self {
        let head = &heads[0];
        let tasks = head.name.is_some().then(|| {
            heads
                .iter()
                .map(|h| ManifestTask {
                    name: h.name.clone(),
                    task: Some(h.task),
                    classes: h.classes.clone(),
                    loss: h.loss.clone(),
                    output: h.output,
                    weight: h.weight,
                    class_weights: h.class_weights.clone(),
                    temperature: h.temperature,
                    thresholds: h.thresholds.clone(),
                })
                .collect()
        });
        Manifest {
            format: MANIFEST_FORMAT,
            preprocessor: preprocessor.clone(),
            task: Some(head.task),
            classes: head.classes.clone(),
            loss: head.loss.clone(),
            class_weights: head.class_weights.clone(),
            target_scaler: head.target_scaler.clone(),
            temperature: head.temperature,
            thresholds: head.thresholds.clone(),
            inputs: manifest_inputs(graph),
            tasks,
            text_column: None,
            objective: None,
        }
    }

    /// The manifest of a model trained to reconstruct its input (`objective` `"autoencoder"` or `"vae"`, with
    /// `loss`) or to generate samples (`"gan"`, the generator); `classes` are the data's labels, if it had any (not
    /// predicted).
    pub fn for_objective(
        graph: &Graph,
        preprocessor: &Preprocessor,
        loss: &LossSpec,
        objective: &str,
        classes: Vec<String>,
    ) -> Self {
        Manifest {
            format: MANIFEST_FORMAT,
            preprocessor: preprocessor.clone(),
            task: None,
            classes,
            loss: loss.clone(),
            class_weights: None,
            target_scaler: None,
            temperature: 1.0,
            thresholds: None,
            inputs: manifest_inputs(graph),
            tasks: None,
            text_column: None,
            objective: Some(objective.to_string()),
        }
    }

    /// The manifest as the file's text: pretty JSON, keys sorted (through a JSON value, as graft has always
    /// written it).
    pub fn to_json_string(&self) -> Result<String> {
        let doc = serde_json::to_value(self).map_err(|e| Error::new(e.to_string()))?;
        serde_json::to_string_pretty(&doc).map_err(|e| Error::new(e.to_string()))
    }

    /// Parses a manifest's text; `path` names the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let doc: Json = serde_json::from_str(text).map_err(|e| Error::new(e.to_string()).in_file(path))?;
        let format = match doc.get("format") {
            None => MANIFEST_FORMAT as u64,
            Some(f) => f
                .as_u64()
                .ok_or_else(|| Error::new(format!("`format` must be a whole number, found {f}")).in_file(path))?,
        };
        if format > MANIFEST_FORMAT as u64 {
            return Err(Error::new(format!(
                "this run directory's manifest is format {format}, written by a newer graft; this graft reads \
                 format {MANIFEST_FORMAT} and older; use a newer graft"
            ))
            .in_file(path));
        }
        serde_json::from_value(doc)
            .map_err(|e| Error::new(format!("{e} (in a format {format} manifest)")).in_file(path))
    }

    /// Reads `preprocess.json` of the run directory `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json_str(&text, &path)
    }

    /// Writes `preprocess.json` into the run directory `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(MANIFEST_FILE), self.to_json_string()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `preprocess.json` files exactly as graft wrote them before the manifest was typed (no `format` key): a text
    /// classifier with a tuned threshold and its CSV column, a two-task text model, a standardized regression.
    const WRITTEN: [(&str, &str); 3] = [
        ("text", include_str!("../../tests/fixtures/preprocess-text.json")),
        (
            "multitask",
            include_str!("../../tests/fixtures/preprocess-multitask.json"),
        ),
        (
            "regression",
            include_str!("../../tests/fixtures/preprocess-regression.json"),
        ),
    ];

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::from_json_str(text, Path::new("preprocess.json"))
    }

    #[test]
    fn manifests_written_before_the_format_key_load_and_write_back_the_same_bytes_plus_the_format() {
        for (name, text) in WRITTEN {
            let manifest = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(manifest.format, 1, "{name}");
            let written = manifest.to_json_string().unwrap();
            assert_eq!(written.replace("  \"format\": 1,\n", ""), text.trim_end(), "{name}");
            assert_eq!(parse(&written).unwrap(), manifest, "{name}");
        }
    }

    #[test]
    fn the_fields_predict_reads_come_back_typed() {
        let text = parse(WRITTEN[0].1).unwrap();
        assert_eq!(text.task, Some(Task::Binary));
        assert_eq!(text.classes, ["neg", "pos"]);
        assert_eq!(text.text_column.as_deref(), Some("text"));
        assert_eq!(text.thresholds.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            text.inputs,
            [ManifestInput {
                name: "input".into(),
                shape: vec![6]
            }]
        );
        assert!(matches!(text.preprocessor, Preprocessor::Text(_)));
        let multi = parse(WRITTEN[1].1).unwrap();
        let tasks = multi.tasks.unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            (tasks[1].name.as_deref(), tasks[1].output, tasks[1].weight),
            (Some("topic"), 1, 0.5)
        );
        let regression = parse(WRITTEN[2].1).unwrap();
        assert_eq!(regression.target_scaler.map(|s| s.mean.len()), Some(1));
        assert_eq!(regression.tasks, None);
    }

    #[test]
    fn a_minimal_manifest_takes_the_defaults_of_keys_added_later() {
        let m = parse(r#"{"loss": "mse", "classes": null, "temperature": null}"#).unwrap();
        assert_eq!((m.format, m.temperature, m.preprocessor), (1, 1.0, Preprocessor::None));
        assert!(m.classes.is_empty() && m.thresholds.is_none() && m.tasks.is_none() && m.text_column.is_none());
    }

    #[test]
    fn a_newer_format_or_an_unknown_key_is_an_error_naming_the_format() {
        let newer = parse(r#"{"format": 2, "loss": "mse", "calibrator": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            newer.contains("format 2") && newer.contains("reads format 1"),
            "{newer}"
        );
        let unknown = parse(r#"{"loss": "mse", "calibrator": {}}"#).unwrap_err().to_string();
        assert!(
            unknown.contains("unknown field `calibrator`") && unknown.contains("format 1"),
            "{unknown}"
        );
        let loss = parse(r#"{"loss": "msx"}"#).unwrap_err().to_string();
        assert!(loss.contains("loss: "), "{loss}");
    }
}
