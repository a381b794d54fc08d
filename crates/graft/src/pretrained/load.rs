//! Pretrained weights loaded into a built model: BERT-family encoders from the Hugging Face-format directory a
//! `bert` layer names, and word vectors (word2vec, GloVe, fastText) into the `embedding` layers that name them,
//! row by row in the order of the text tokenizer's vocabulary.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::data::prepare::Preprocessor;
use crate::error::{Error, Result};
use crate::model::Graph;

/// Loads the weights of `bert` layers that name a `pretrained` directory (already resolved by
/// [`ModelSpec::with_pretrained_sizes`](crate::model::spec::ModelSpec::with_pretrained_sizes)).
pub fn load_pretrained_encoders(mut model: Graph, quiet: bool) -> Result<Graph> {
    use crate::layers::{Layer, LayerSpec};
    for node in model.nodes.iter_mut() {
        let LayerSpec::Bert(cfg) = &node.spec else { continue };
        let Some(Layer::Bert(encoder, head)) = node.layer.take() else {
            continue;
        };
        let encoder = match &cfg.pretrained {
            Some(dir) => {
                let loaded = encoder
                    .load_pretrained(dir)
                    .map_err(|e| e.at(format!("layer '{}'", node.name)))?;
                if !quiet {
                    eprintln!("layer '{}': weights from {}", node.name, dir.display());
                }
                loaded
            }
            None => encoder,
        };
        node.layer = Some(Layer::Bert(encoder, head));
    }
    Ok(model)
}

/// Replaces the weights of `embedding` layers that name `pretrained` vectors by the vectors of the text dataset's
/// vocabulary. Returns the model and the parameters to keep fixed (`trainable = false`).
pub fn load_pretrained_embeddings(
    resolve: &dyn Fn(&Path) -> PathBuf,
    mut model: Graph,
    preprocessor: &Preprocessor,
    seed: u64,
    quiet: bool,
) -> Result<(Graph, Vec<String>)> {
    use crate::data::wordvec::WordVectors;
    use crate::layers::{Layer, LayerSpec};
    let mut fixed = vec![];
    for node in model.nodes.iter_mut() {
        let LayerSpec::Embedding(cfg) = &node.spec else {
            continue;
        };
        let at = || format!("layer '{}'", node.name);
        if !cfg.trainable {
            fixed.push(format!("{}.weight", node.name));
        }
        let Some(pre) = &cfg.pretrained else { continue };
        let Preprocessor::Text(tokenizer) = preprocessor else {
            return Err(Error::new(
                "pretrained vectors need a text dataset, whose vocabulary says which word each id is",
            )
            .at(at()));
        };
        let path = resolve(&pre.path);
        let vectors = WordVectors::read(&path, pre.format)?;
        if vectors.dim != cfg.output_dim {
            return Err(Error::new(format!(
                "the vectors in {} have {} dimensions but output_dim is {}",
                path.display(),
                vectors.dim,
                cfg.output_dim
            ))
            .at(at()));
        }
        let tokens = tokenizer.tokens_by_id();
        if tokens.len() > cfg.input_dim {
            return Err(Error::new(format!(
                "the vocabulary has {} ids but input_dim is {}; raise input_dim or lower the tokenizer's vocab_size",
                tokens.len(),
                cfg.input_dim
            ))
            .at(at()));
        }
        let (matrix, found) = vectors.embedding_matrix(&tokens, seed);
        if let Some(Layer::Embedding(e)) = node.layer.as_mut() {
            let device = e.weight.val().device();
            let mut values = e
                .weight
                .val()
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            values[..matrix.data.len()].copy_from_slice(&matrix.data);
            let weight = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(values, [cfg.input_dim, cfg.output_dim]),
                &device,
            );
            e.weight = burn::module::Param::from_tensor(weight);
        }
        if !quiet {
            eprintln!(
                "{}: {found} of {} vocabulary tokens found in {}",
                at(),
                tokens.len().saturating_sub(2),
                path.display()
            );
        }
    }
    Ok((model, fixed))
}
