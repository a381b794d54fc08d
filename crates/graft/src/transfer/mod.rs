//! Transfer learning: pretrained networks from other frameworks' formats.
//!
//! - [`bert`]: BERT-family encoders from a Hugging Face-format directory (`config.json`, `model.safetensors`,
//!   `tokenizer.json`), with sentence-transformers pooling and normalization when its files are present —
//!   `graft embed`.

pub mod bert;
pub mod freeze;
pub mod restore;

pub use bert::{BertConfig, BertModel, Pooling, PoolingMode, SentenceEncoder, Tokens};

use std::path::Path;

use burn::prelude::Device;

use crate::data::write_npy_f32;
use crate::error::{Error, Result};

/// `graft embed`: embeds every line of the text file `input` (one text per line, blank lines included, so row `i`
/// is line `i + 1`) with the encoder in `model_dir` and writes a float32 `[n_texts, dim]` `.npy` to `output`.
/// Returns the number of texts and the embedding width.
pub fn embed_file(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    batch_size: usize,
    device: &Device,
) -> Result<(usize, usize)> {
    if !model_dir.is_dir() {
        return Err(Error::new("--model: no such directory").in_file(model_dir));
    }
    if model_dir.join("model.toml").is_file() && !model_dir.join("config.json").is_file() {
        return Err(Error::new(
            "a graft model directory: embedding with a graft model runs it up to a named layer (`--layer NAME`), \
             which is not supported yet; --model takes a Hugging Face-format encoder directory \
             (config.json, model.safetensors, tokenizer.json)",
        )
        .in_file(model_dir));
    }
    let encoder = SentenceEncoder::load(model_dir, device)?;
    let bytes = std::fs::read(input).map_err(|e| Error::io(input, e))?;
    let texts: Vec<String> = String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect();
    let embeddings = encoder.embed(&texts, batch_size).map_err(|e| e.in_file(input))?;
    write_npy_f32(output, &embeddings)?;
    Ok((texts.len(), encoder.dim()))
}
