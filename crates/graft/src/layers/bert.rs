//! A BERT-family encoder as a layer: token ids `[T]` in, one pooled vector (or the token vectors `[T, hidden]`)
//! out. Its parameters carry the checkpoint's names under the node's name (`bert.embeddings.word_embeddings.weight`,
//! `bert.encoder.layer.5.output.dense.weight`), so `freeze`, `init_from` and the layer groups of discriminative
//! fine-tuning address its blocks by the names Hugging Face uses (`self_attn` and `layer_norm` stand for `self` and
//! `LayerNorm`).
//!
//! `pretrained = "data/minilm"` fills in the encoder's sizes and pooling from that directory when the spec is
//! completed, and its weights are loaded when an experiment starts; a saved model keeps the sizes in `model.toml`,
//! so it loads without the directory.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::{Bool, Int, TensorData};
use serde::{Deserialize, Serialize};

use super::conv::expect_rank;
use super::{Shape, shape_err};
use crate::error::{Context, Error, Result};
use crate::layers::bert_encoder::{BertConfig, BertModel, PoolTokens, Pooling, PoolingMode, sentence_pipeline};
use crate::layers::value::{Data, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertLayerConfig {
    /// A Hugging Face-format directory (`config.json`, `model.safetensors`; sentence-transformers files optional)
    /// whose weights the layer starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// The encoder's sizes, as in a Hugging Face `config.json`; read from `pretrained` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BertConfig>,
    /// How token vectors become one vector: `"mean"`, `"cls"`, `"max"`, `"mean_sqrt_len"` (several joined by `+`
    /// are concatenated), or `"none"` for the token vectors `[T, hidden]` with the padding mask. By default the
    /// sentence-transformers pooling of `pretrained`, else `"mean"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<String>,
    /// L2-normalize the pooled vector; by default as the sentence-transformers pipeline of `pretrained` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

/// What follows the encoder.
#[derive(Debug, Clone)]
pub struct BertHead {
    /// `None`: the token vectors themselves.
    pub pooling: Option<Pooling>,
}

fn parse_pooling(text: &str) -> Result<Option<Vec<PoolingMode>>> {
    if text == "none" {
        return Ok(None);
    }
    let modes = text
        .split('+')
        .map(|m| match m.trim() {
            "mean" => Ok(PoolingMode::Mean),
            "cls" => Ok(PoolingMode::Cls),
            "max" => Ok(PoolingMode::Max),
            "mean_sqrt_len" => Ok(PoolingMode::MeanSqrtLen),
            other => Err(shape_err(format!(
                "unknown pooling \"{other}\"; expected mean, cls, max, mean_sqrt_len (joined by +) or none"
            ))
            .at("pooling")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(modes))
}

fn pooling_name(modes: &[PoolingMode]) -> String {
    modes
        .iter()
        .map(|m| match m {
            PoolingMode::Mean => "mean",
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len",
        })
        .collect::<Vec<_>>()
        .join("+")
}

impl BertLayerConfig {
    /// The encoder of the Hugging Face-format directory `dir`, with its own pooling and normalization.
    pub fn pretrained(dir: impl Into<PathBuf>) -> Self {
        BertLayerConfig {
            pretrained: Some(dir.into()),
            config: None,
            pooling: None,
            normalize: None,
        }
    }

    /// `"mean"`, `"cls"`, `"max"`, `"mean_sqrt_len"` (joined by `+`), or `"none"`.
    pub fn with_pooling(mut self, pooling: &str) -> Self {
        self.pooling = Some(pooling.into());
        self
    }

    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = Some(normalize);
        self
    }

    /// Resolves `pretrained` with `resolve` and fills in what was left out (sizes, pooling, normalization) from
    /// that directory.
    pub fn complete(&self, resolve: &dyn Fn(&Path) -> PathBuf) -> Result<Self> {
        let mut out = self.clone();
        let Some(dir) = &self.pretrained else {
            return Ok(out);
        };
        let dir = resolve(dir);
        if !dir.is_dir() {
            return Err(Error::new(
                "no such directory; `pretrained` names a Hugging Face-format encoder directory \
                 (scripts/fetch-data.sh minilm gives data/minilm)",
            )
            .in_file(&dir)
            .at("pretrained"));
        }
        let (transformer, pooling) = sentence_pipeline(&dir)?;
        if out.config.is_none() {
            out.config = Some(BertConfig::from_file(&transformer.join("config.json"))?);
        }
        if out.pooling.is_none() {
            out.pooling = Some(pooling_name(&pooling.modes));
        }
        if out.normalize.is_none() {
            out.normalize = Some(pooling.normalize);
        }
        out.pretrained = Some(dir);
        Ok(out)
    }

    fn sizes(&self) -> Result<&BertConfig> {
        let config = self.config.as_ref().ok_or_else(|| {
            shape_err("a bert layer needs `pretrained` (a Hugging Face-format directory) or `config`")
        })?;
        config.check().at("config")?;
        Ok(config)
    }

    /// `[T]` token ids → `[pooled width]`, or `[T, hidden]` with `pooling = "none"`.
    pub fn infer(&self, input: &Shape) -> Result<Shape> {
        let [t] = expect_rank::<1>(input, "bert", "[steps] of token ids")?;
        let c = self.sizes()?;
        if t > c.max_position_embeddings {
            return Err(shape_err(format!(
                "sequences of {t} tokens exceed the encoder's max_position_embeddings = {}; lower the tokenizer's \
                 length",
                c.max_position_embeddings
            )));
        }
        Ok(match parse_pooling(self.pooling.as_deref().unwrap_or("mean"))? {
            Some(modes) => vec![modes.len() * c.hidden_size],
            None => vec![t, c.hidden_size],
        })
    }

    /// The encoder (zeros until weights are loaded) and its head.
    pub fn init(&self, device: &Device) -> Result<(BertModel, BertHead)> {
        let c = self.sizes()?;
        let pooling = parse_pooling(self.pooling.as_deref().unwrap_or("mean"))?
            .map(|modes| Pooling::new(modes, self.normalize.unwrap_or(false)));
        Ok((c.init(device), BertHead { pooling }))
    }
}

/// Ids `[B, T]` (floats holding integers; padding = the config's `pad_token_id`) → the head's output. Columns
/// that are padding in every row are cut off first, so a batch of short texts costs what its longest text costs.
pub fn forward(model: &BertModel, head: &BertHead, ids: Tensor<2>) -> Result<Value> {
    let c = &model.config;
    let [b, t] = ids.dims();
    let Prepared {
        ids,
        types,
        mask,
        len,
        host,
    } = prepare(model, ids)?;
    let device = mask.device();
    let pad = c.pad_token_id as f32;
    let hidden = model.forward(ids, types, mask.clone());
    match &head.pooling {
        Some(p) => Ok(Value::new(Data::D2(p.forward(hidden, mask)))),
        None => {
            let h = c.hidden_size;
            let padded = if len < t {
                Tensor::cat(vec![hidden, Tensor::<3>::zeros([b, t - len, h], &device)], 1)
            } else {
                hidden
            };
            let full_mask: Vec<bool> = host.iter().map(|&v| v == pad).collect();
            let mask = Tensor::<2, Bool>::from_data(TensorData::new(full_mask, [b, t]), &device);
            Ok(Value::with_mask(Data::D3(padded), Some(mask)))
        }
    }
}

/// The encoder's inputs from a batch of token ids (floats holding whole numbers, padded with the pad id): ids and
/// type ids trimmed to the longest sequence, the attention mask, that length, and the ids on the host.
struct Prepared {
    ids: Tensor<2, Int>,
    types: Tensor<2, Int>,
    mask: Tensor<2>,
    len: usize,
    host: Vec<f32>,
}

fn prepare(model: &BertModel, ids: Tensor<2>) -> Result<Prepared> {
    let c = &model.config;
    let [b, t] = ids.dims();
    let host: Vec<f32> = ids
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::new(format!("cannot read the token ids: {e:?}")))?;
    let pad = c.pad_token_id as f32;
    let mut len = 1;
    for (i, &id) in host.iter().enumerate() {
        if id != pad {
            if id < 0.0 || id as usize >= c.vocab_size || id.fract() != 0.0 {
                return Err(Error::new(format!(
                    "token id {id} (sample {}, step {}) is outside the encoder's vocabulary of {} — was the data \
                     tokenized with this encoder's tokenizer (`tokenizer = {{ pretrained = ... }}`)?",
                    i / t,
                    i % t,
                    c.vocab_size
                )));
            }
            len = len.max(i % t + 1);
        }
    }
    let device = ids.device();
    let trimmed: Vec<i64> = (0..b)
        .flat_map(|r| host[r * t..r * t + len].iter().map(|&v| v as i64))
        .collect();
    let mask_values: Vec<f32> = trimmed
        .iter()
        .map(|&v| if v as f32 == pad { 0.0 } else { 1.0 })
        .collect();
    Ok(Prepared {
        ids: Tensor::<2, Int>::from_data(TensorData::new(trimmed, [b, len]), &device),
        types: Tensor::<2, Int>::zeros([b, len], &device),
        mask: Tensor::<2>::from_data(TensorData::new(mask_values, [b, len]), &device),
        len,
        host,
    })
}

/// Every layer's attention probabilities `[B, heads, T', T']` for token ids `[B, T]` (T' the longest sequence of the
/// batch), in layer order: what each token attends to, for the report's attention maps.
pub fn attention_maps(model: &BertModel, ids: Tensor<2>) -> Result<Vec<Tensor<4>>> {
    let p = prepare(model, ids)?;
    Ok(model.attention_maps(p.ids, p.types, p.mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Graph;
    use crate::model::spec::ModelSpec;
    use crate::pretrained::SentenceEncoder;

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
    }

    fn spec(pooling: Option<&str>, length: usize) -> ModelSpec {
        let layer = BertLayerConfig {
            pretrained: Some(tiny()),
            config: None,
            pooling: pooling.map(str::to_string),
            normalize: None,
        };
        ModelSpec::sequential(vec![length])
            .add_named("bert", crate::layers::LayerSpec::Bert(layer))
            .with_pretrained_sizes(&|p| p.to_path_buf())
            .unwrap()
    }

    fn load(spec: &ModelSpec, device: &Device) -> Graph {
        let mut graph = Graph::build(spec, device).unwrap();
        let node = &mut graph.nodes[0];
        if let Some(crate::layers::Layer::Bert(m, h)) = node.layer.take() {
            node.layer = Some(crate::layers::Layer::Bert(m.load_pretrained(&tiny()).unwrap(), h));
        }
        graph
    }

    #[test]
    fn the_layer_matches_the_sentence_encoder_whatever_the_padding() {
        let device = Device::default();
        let texts = vec![
            "the quick brown fox".to_string(),
            "hello".to_string(),
            "a b c".to_string(),
        ];
        let encoder = SentenceEncoder::load(&tiny(), &device).unwrap();
        let expected = encoder.embed(&texts, 8).unwrap();
        let completed = spec(None, 12);
        // The sentence-transformers pooling and normalization of the directory are filled in.
        let crate::model::spec::NodeOp::Layer(crate::layers::LayerSpec::Bert(c)) = &completed.nodes[0].op else {
            panic!("not a bert layer")
        };
        assert_eq!(
            c.pooling.as_deref(),
            Some(pooling_name(&encoder.pooling.modes).as_str())
        );
        assert_eq!(c.normalize, Some(encoder.pooling.normalize));
        let graph = load(&completed, &device);
        let tok = crate::data::hf_tokenizer::PretrainedTokenizer::load(&tiny(), 12).unwrap();
        let ids = tok.transform(&texts).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(ids.data.clone(), [3, 12]), &device);
        let out = graph.forward(vec![Data::D2(x)], false, false).unwrap().remove(0);
        let got = out.data.d2().unwrap().into_data().try_to_vec::<f32>().unwrap();
        let diff = got
            .iter()
            .zip(&expected.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "max abs diff {diff}");
    }

    #[test]
    fn sequence_output_keeps_every_step_and_masks_padding() {
        let device = Device::default();
        let graph = load(&spec(Some("none"), 10), &device);
        assert_eq!(graph.output_shapes()[0][0], 10);
        let tok = crate::data::hf_tokenizer::PretrainedTokenizer::load(&tiny(), 10).unwrap();
        let ids = tok.transform(&["hello world".to_string()]).unwrap();
        let real = ids.data.iter().filter(|&&v| v != tok.pad_id as f32).count();
        let x = Tensor::<2>::from_data(TensorData::new(ids.data.clone(), [1, 10]), &device);
        let out = graph.forward(vec![Data::D2(x)], false, false).unwrap().remove(0);
        assert_eq!(out.data.dims()[1], 10);
        let mask = out.mask.unwrap().into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(mask.iter().filter(|m| !**m).count(), real);
    }

    #[test]
    fn ids_outside_the_vocabulary_and_missing_sizes_are_errors() {
        let device = Device::default();
        let graph = load(&spec(None, 4), &device);
        let x = Tensor::<2>::from_floats([[101.0, 5e6, 0.0, 0.0]], &device);
        let e = graph.forward(vec![Data::D2(x)], false, false).unwrap_err().to_string();
        assert!(
            e.contains("layer 'bert'") && e.contains("outside the encoder's vocabulary"),
            "{e}"
        );
        let bare = ModelSpec::sequential(vec![4]).add_named(
            "bert",
            crate::layers::LayerSpec::Bert(BertLayerConfig {
                pretrained: None,
                config: None,
                pooling: None,
                normalize: None,
            }),
        );
        let e = Graph::build(&bare, &device).unwrap_err().to_string();
        assert!(e.contains("needs `pretrained`"), "{e}");
        let long = ModelSpec::sequential(vec![100_000]).add_named(
            "bert",
            crate::layers::LayerSpec::Bert(BertLayerConfig {
                pretrained: Some(tiny()),
                config: None,
                pooling: None,
                normalize: None,
            }),
        );
        let e = long
            .with_pretrained_sizes(&|p| p.to_path_buf())
            .and_then(|s| Graph::build(&s, &device).map(|_| ()));
        assert!(e.unwrap_err().to_string().contains("max_position_embeddings"));
    }
}
