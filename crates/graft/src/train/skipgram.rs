//! word2vec's skip-gram with negative sampling as a [`TrainStep`]. The model is a graph of two embedding tables
//! over the vocabulary — the word vectors (`target_vectors`, what the run keeps) and the context vectors
//! (`context_vectors`, used only in training) — as Keras' word2vec tutorial builds it, so checkpoints, the summary
//! and `init_from` work as for any model. The training rows are (word, context) pairs; for each batch the step
//! draws `negatives` noise words per pair from the unigram^0.75 distribution, on the host from its own seeded
//! generator (a fresh stream per epoch), so a run is reproducible from its seed.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use rand_chacha::ChaCha8Rng;

use crate::data::Array;
use crate::data::Batch;
use crate::data::text::skipgram::NoiseSampler;
use crate::error::{Context, Error, Result};
use crate::layers::LayerSpec;
use crate::layers::embedding::EmbeddingConfig;
use crate::layers::init::Initializer;
use crate::layers::value::input_data;
use crate::model::{Graph, ModelSpec};
use crate::task::negative_sampling::{negative_sampling_loss, skipgram_scores};
use crate::train::config::FitConfig;
use crate::train::step::TrainStep;
use crate::train::trainer::optimizer_step;

/// The node holding the word vectors.
pub const TARGET_VECTORS: &str = "target_vectors";
/// The node holding the context ("output") vectors.
pub const CONTEXT_VECTORS: &str = "context_vectors";

/// The skip-gram model for `vocabulary` words of `dim` dimensions scoring one true context and `negatives` noise
/// words per pair. Initialized as the word2vec tool does: word vectors uniform in ±0.5/dim, context vectors zero
/// (so the first steps move the word vectors by the context vectors' gradient only).
pub fn skipgram_model(vocabulary: usize, dim: usize, negatives: usize) -> ModelSpec {
    let half = 0.5 / dim.max(1) as f64;
    let table = |initializer| {
        LayerSpec::Embedding(EmbeddingConfig {
            input_dim: vocabulary,
            output_dim: dim,
            padding_idx: None,
            initializer,
            pretrained: None,
            trainable: true,
        })
    };
    ModelSpec::graph()
        .input("target", vec![1])
        .input("context", vec![1 + negatives])
        .node(
            TARGET_VECTORS,
            table(Initializer::Uniform { min: -half, max: half }),
            &["target"],
        )
        .node(CONTEXT_VECTORS, table(Initializer::Zeros), &["context"])
        .output(TARGET_VECTORS)
        .output(CONTEXT_VECTORS)
}

/// The skip-gram [`TrainStep`]: rows are pairs (input 0: the word id `[1]`, input 1: its context's id `[1]`).
pub struct SkipGram {
    pub model: Graph,
    optim: ModuleOptimizer,
    noise: NoiseSampler,
    negatives: usize,
    seed: u64,
    rng: ChaCha8Rng,
    epoch: usize,
}

impl SkipGram {
    /// `model` from [`skipgram_model`] (on an autodiff device); `counts` are the vocabulary's word counts, whose
    /// 0.75th powers weigh the noise words.
    pub fn new(model: Graph, counts: &[u64], fit: &FitConfig, seed: u64) -> Result<Self> {
        let shapes = model.input_shapes();
        let negatives = match shapes.as_slice() {
            [t, c] if t.as_slice() == [1] && c.len() == 1 && c[0] >= 2 => c[0] - 1,
            _ => {
                return Err(Error::new(format!(
                    "a skip-gram model takes a word [1] and its context with the noise words [1 + negatives]; this \
                     one takes {shapes:?}"
                )));
            }
        };
        let optim = fit.optimizer.init(fit.clip_grad).at("train.optimizer")?;
        Ok(SkipGram {
            model,
            optim,
            noise: NoiseSampler::new(counts, 0.75)?,
            negatives,
            seed,
            rng: crate::data::rng::seeded_rng(b"negative", seed, 0),
            epoch: 0,
        })
    }

    /// Each row's candidates: its true context, then `negatives` noise words.
    fn candidates(&mut self, contexts: &Array) -> Result<Array> {
        let n = contexts.len();
        let width = 1 + self.negatives;
        let mut ids = vec![0u32; n * self.negatives];
        self.noise.fill(&mut ids, &mut self.rng);
        let mut values = Vec::with_capacity(n * width);
        for (context, noise) in contexts.data.iter().zip(ids.chunks(self.negatives)) {
            values.push(*context);
            values.extend(noise.iter().map(|&id| id as f32));
        }
        Array::new(vec![n, width], values)
    }
}

impl TrainStep for SkipGram {
    fn model(&self) -> &Graph {
        &self.model
    }

    fn resumable(&self) -> bool {
        true
    }

    fn save_state(&self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::save_trained(dir, "model", &self.model, &self.optim)?;
        // Where the epoch's noise stream stands (a u128, kept as text).
        let position = (self.epoch, self.rng.get_word_pos().to_string());
        crate::train::resume::write_json(&dir.join("noise.json"), &position)
    }

    fn load_state(&mut self, dir: &std::path::Path) -> Result<()> {
        crate::train::resume::load_trained(dir, "model", &mut self.model, &mut self.optim)?;
        let (epoch, position): (usize, String) = crate::train::resume::read_json(&dir.join("noise.json"))?;
        if epoch == self.epoch {
            let position: u128 = position
                .parse()
                .map_err(|_| Error::new("damaged checkpoint: the noise position is not a number").in_file(dir))?;
            self.rng.set_word_pos(position);
        }
        Ok(())
    }

    fn model_mut(&mut self) -> &mut Graph {
        &mut self.model
    }

    fn begin_epoch(&mut self, epoch: usize) -> Result<()> {
        self.epoch = epoch;
        self.rng = crate::data::rng::seeded_rng(b"negative", self.seed, epoch as u64);
        Ok(())
    }

    fn train_batch(&mut self, batch: &Batch, lr: f64) -> Result<f64> {
        let contexts = batch
            .extra_inputs
            .first()
            .ok_or_else(|| Error::new("a skip-gram batch holds (word, context) pairs; the context is missing"))?;
        let candidates = self.candidates(contexts)?;
        let device = self.model.devices().first().cloned().unwrap_or_default();
        let inputs = vec![input_data(&batch.inputs, &device)?, input_data(&candidates, &device)?];
        let mut outputs = self.model.forward(inputs, true, false)?;
        let contexts = outputs.remove(1).data.d3()?;
        let words = outputs.remove(0).data.flatten_rows();
        let loss = negative_sampling_loss(skipgram_scores(words, contexts)?)?;
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            return Err(Error::new(format!(
                "the loss became {value} at epoch {}; training stopped (the last good checkpoint is kept); try a \
                 lower learning rate",
                self.epoch
            )));
        }
        self.model = optimizer_step(self.model.take(), loss, &mut self.optim, lr);
        Ok(value)
    }
}

/// The trained word vectors: the rows of the `target_vectors` table, `[vocabulary, dim]` row-major.
pub fn word_vectors(model: &Graph) -> Result<(Vec<f32>, usize)> {
    let node = model.nodes.iter().find(|n| n.name == TARGET_VECTORS).ok_or_else(|| {
        Error::new(format!(
            "the model has no `{TARGET_VECTORS}` node; is it a skip-gram model?"
        ))
    })?;
    let Some(crate::layers::Layer::Embedding(e)) = &node.layer else {
        return Err(Error::new(format!("`{TARGET_VECTORS}` is not an embedding table")));
    };
    let weight = e.weight.val();
    let dim = weight.dims()[1];
    let values = weight
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|err| Error::new(format!("cannot read the word vectors back: {err:?}")))?;
    Ok((values, dim))
}
