//! `graft` from Python: the native part of the `graft` package (`python/graft/__init__.py` is the rest). Values
//! cross the boundary as JSON text, which the Python side reads and writes with its `json` module (numpy arrays go
//! through `.tolist()`): one conversion, no coupling to numpy, and inputs and answers exactly as `graft serve` and
//! `graft predict --input -` take and give them. Errors are `graft.GraftError` with the CLI's one-line message.

use std::path::PathBuf;

use burn::prelude::Device;
use graft::experiment::run::{RunOptions, run_experiment};
use graft::experiment::spec::ExperimentSpec;
use graft::infer::predict::{McDropout, Predictor};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde_json::{Value as Json, json};

create_exception!(
    _graft,
    GraftError,
    PyValueError,
    "A graft error: the one-line message the CLI gives."
);

fn failed(e: impl std::fmt::Display) -> PyErr {
    GraftError::new_err(e.to_string())
}

fn parse(text: &str, what: &str) -> PyResult<Json> {
    serde_json::from_str(text).map_err(|e| failed(format!("{what}: not JSON ({e})")))
}

fn items(text: &str) -> PyResult<Vec<Json>> {
    match parse(text, "inputs")? {
        Json::Array(items) => Ok(items),
        _ => Err(failed("inputs: give a list with one input per item")),
    }
}

/// A trained model with its stored preprocessing, loaded from a run directory.
#[pyclass(module = "graft._graft")]
struct Model {
    predictor: Predictor,
    dir: PathBuf,
}

#[pymethods]
impl Model {
    /// Predictions for a JSON list of inputs, as a JSON list of rows (what `graft predict` writes to `.jsonl`).
    #[pyo3(signature = (inputs_json, mc_dropout=None, seed=42))]
    fn predict_json(
        &self,
        py: Python<'_>,
        inputs_json: &str,
        mc_dropout: Option<usize>,
        seed: u64,
    ) -> PyResult<String> {
        let items = items(inputs_json)?;
        py.detach(|| {
            let inputs = self.predictor.inputs_from_json(&items)?;
            let rows = self
                .predictor
                .rows(&inputs, mc_dropout.map(|passes| McDropout { passes, seed }))?;
            Ok::<_, graft::Error>(Json::Array(rows).to_string())
        })
        .map_err(failed)
    }

    /// What the model takes and gives, as JSON.
    fn info_json(&self) -> String {
        let mut description = self.predictor.describe();
        description["model"] = json!(self.dir.display().to_string());
        description.to_string()
    }

    fn __repr__(&self) -> String {
        format!("graft.Model('{}')", self.dir.display())
    }
}

/// Loads the run directory `path` (`graft train --out`).
#[pyfunction]
fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    let predictor = py
        .detach(|| Predictor::load(&path, &Device::default()))
        .map_err(failed)?;
    predictor.check_predicts().map_err(failed)?;
    Ok(Model { predictor, dir: path })
}

/// Trains the experiment file `experiment` into the run directory `out`; returns `{"history": [...], "test":
/// {...}}` as JSON.
#[pyfunction]
#[pyo3(signature = (experiment, out, seed=42, overwrite=false, quiet=true, resume=false))]
fn train_json(
    py: Python<'_>,
    experiment: PathBuf,
    out: PathBuf,
    seed: u64,
    overwrite: bool,
    quiet: bool,
    resume: bool,
) -> PyResult<String> {
    py.detach(|| {
        let exp = ExperimentSpec::from_file(&experiment)?;
        let options = RunOptions {
            seed,
            quiet,
            device: Device::default(),
            out,
            overwrite,
            test_rows: None,
            resume,
        };
        let result = run_experiment(&exp, &options)?;
        Ok::<_, graft::Error>(json!({ "history": result.history, "test": result.test }).to_string())
    })
    .map_err(failed)
}

/// Embeddings of a JSON list of inputs from a run directory up to `layer`, or from a Hugging Face sentence encoder
/// directory (texts; no layer): `{"shape": [...], "data": [...]}` as JSON.
#[pyfunction]
#[pyo3(signature = (model, inputs_json, layer=None, batch_size=32))]
fn embed_json(
    py: Python<'_>,
    model: PathBuf,
    inputs_json: &str,
    layer: Option<String>,
    batch_size: usize,
) -> PyResult<String> {
    let items = items(inputs_json)?;
    py.detach(|| {
        let array =
            graft::experiment::embed::embed_json(&model, &items, layer.as_deref(), batch_size, &Device::default())?;
        Ok::<_, graft::Error>(json!({ "shape": array.shape, "data": array.data }).to_string())
    })
    .map_err(failed)
}

/// The native half of the `graft` Python package.
#[pymodule]
fn _graft(m: &Bound<'_, PyModule>) -> PyResult<()> {
    graft::kernels::init_threads();
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(train_json, m)?)?;
    m.add_function(wrap_pyfunction!(embed_json, m)?)?;
    m.add("GraftError", m.py().get_type::<GraftError>())?;
    Ok(())
}
