//! `graft embed`: texts or inputs → vectors, from a Hugging Face encoder directory or a graft run directory.

use std::path::Path;

use burn::prelude::Device;

use serde_json::Value as Json;

use crate::data::{Array, write_npy_f32};
use crate::error::{Context, Error, Result};
use crate::pretrained::SentenceEncoder;

/// `graft embed`: embeds every line of the text file `input` (one text per line, blank lines included, so row `i`
/// is line `i + 1`) with the encoder in `model_dir` and writes a float32 `[n_texts, dim]` `.npy` to `output`.
/// `model_dir` is a Hugging Face-format encoder directory, or a graft run directory run up to the node `layer`
/// (then `input` is anything `predict` reads, and the array is `[n, layer's output shape]`). Returns the number of
/// rows and the width of one.
pub fn embed_file(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    layer: Option<&str>,
    batch_size: usize,
    device: &Device,
) -> Result<(usize, usize)> {
    let embeddings = embed(model_dir, Inputs::File(input), layer, batch_size, device)?;
    write_npy_f32(output, &embeddings)?;
    Ok((embeddings.len(), embeddings.sample_size()))
}

/// [`embed_file`] on inputs given as JSON (as `graft serve` and `predict --input -` take them: strings for text
/// models and encoders, objects of columns, arrays of numbers); returns the `[n, ...]` array.
pub fn embed_json(
    model_dir: &Path,
    items: &[Json],
    layer: Option<&str>,
    batch_size: usize,
    device: &Device,
) -> Result<Array> {
    embed(model_dir, Inputs::Json(items), layer, batch_size, device)
}

/// Where the inputs to embed come from.
enum Inputs<'a> {
    File(&'a Path),
    Json(&'a [Json]),
}

fn embed(
    model_dir: &Path,
    inputs: Inputs<'_>,
    layer: Option<&str>,
    batch_size: usize,
    device: &Device,
) -> Result<Array> {
    if !model_dir.is_dir() {
        return Err(Error::new("--model: no such directory").in_file(model_dir));
    }
    let graft_dir = model_dir.join("model.toml").is_file() && !model_dir.join("config.json").is_file();
    if graft_dir {
        let Some(layer) = layer else {
            return Err(Error::new(
                "a graft model directory: name the layer whose outputs are the embeddings (`--layer NAME`)",
            )
            .in_file(model_dir));
        };
        let predictor = crate::infer::predict::Predictor::load(model_dir, device)?;
        if predictor.objective.as_deref() == Some("word2vec") {
            return Err(Error::new(crate::infer::predict::WORD2VEC_RUN).in_file(model_dir));
        }
        let cut = predictor.graph.node_index(layer).at("--layer")?;
        let (array, origin) = match inputs {
            Inputs::File(input) => (predictor.read_inputs(input)?, input.display().to_string()),
            Inputs::Json(items) => (predictor.inputs_from_json(items)?, "inputs".to_string()),
        };
        let mut ds = crate::data::Dataset::new(array, None)?;
        crate::experiment::data::check_data_fits(&predictor.graph, &mut ds, "--input").in_file(&origin)?;
        return Ok(predictor.graph.features(cut, &ds, batch_size.max(1))?.inputs);
    }
    if let Some(layer) = layer {
        return Err(Error::new(format!(
            "--layer {layer} runs a graft model directory up to that layer; a Hugging Face encoder directory \
             gives its pooled sentence vectors without it"
        ))
        .in_file(model_dir));
    }
    let encoder = SentenceEncoder::load(model_dir, device)?;
    let (texts, origin) = match inputs {
        Inputs::File(input) => {
            let bytes = std::fs::read(input).in_file(input)?;
            let texts: Vec<String> = String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect();
            (texts, input.display().to_string())
        }
        Inputs::Json(items) => {
            let texts = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Json::String(s) => Ok(s.clone()),
                    _ => Err(Error::new("a sentence encoder embeds texts: give strings").at(format!("inputs[{i}]"))),
                })
                .collect::<Result<Vec<String>>>()?;
            (texts, "inputs".to_string())
        }
    };
    encoder.embed(&texts, batch_size).in_file(&origin)
}
