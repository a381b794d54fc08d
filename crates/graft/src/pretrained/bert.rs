//! BERT-family encoders loaded from a Hugging Face-format directory, on burn modules.
//!
//! - `config.json`: [`BertConfig`] (`model_type` "bert", absolute positions; `hidden_act` `gelu` (erf),
//!   `gelu_new`/`gelu_pytorch_tanh`/`gelu_fast` (tanh), `relu` or `silu`).
//! - `model.safetensors` (or `pytorch_model.bin`) under the checkpoint's own names: `embeddings.word_embeddings.weight`,
//!   `encoder.layer.0.attention.self.query.weight`, ... Linear weights stay PyTorch's `[out, in]`. The load is strict:
//!   every parameter must be there with the shape the config implies, and every tensor of the file must be used,
//!   except the pooler (`pooler.*`) and the position-id buffer (`embeddings.position_ids`), which BERT checkpoints often
//!   carry and a sentence encoder never uses. Otherwise the error lists the missing, unexpected and wrong-shape keys.
//! - `tokenizer.json`, read with the Hugging Face `tokenizers` crate. Its own padding and truncation settings are
//!   switched off (MiniLM's pads everything to 128): batches are padded here, to their longest text, and texts are
//!   truncated to the maximum sequence length below.
//! - sentence-transformers files, when present: `modules.json` (Transformer → Pooling → optional Normalize; the
//!   Transformer may live in a sub-folder), `sentence_bert_config.json` (`max_seq_length`, `do_lower_case`) and the
//!   Pooling folder's `config.json` (cls, max, mean, mean-sqrt-len; several modes are concatenated in that order, as
//!   sentence-transformers does). Without `modules.json` the encoder mean-pools and does not normalize, and the
//!   maximum sequence length is `max_position_embeddings`.
//!
//! In graft's module tree, `self` (a Rust keyword) is `self_attn` and `LayerNorm` is `layer_norm`; the loader maps
//! the names, and every message names the checkpoint's keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use crate::data::Array;
pub use crate::data::sentence_pipeline::{
    Pipeline, Pooling, PoolingMode, SentenceBertConfig, read_json, read_pipeline, sentence_pipeline,
};
use crate::error::{Error, Result};
use crate::model::io::{NamedTensor, load_named, read_state_dict};

use crate::layers::bert_encoder::*;

// --- weights ----------------------------------------------------------------------------------------------------

/// `dir/name`, or an error naming it when it is missing.
fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(
            "missing: a Hugging Face-format encoder directory holds config.json, model.safetensors and tokenizer.json",
        )
        .in_file(path))
    }
}

/// `model.safetensors`, else PyTorch's `pytorch_model.bin`.
fn weights_file(dir: &Path) -> Result<PathBuf> {
    let bin = dir.join("pytorch_model.bin");
    match require(dir, "model.safetensors") {
        Err(_) if bin.is_file() => Ok(bin),
        other => other,
    }
}

/// The checkpoint key of a parameter path in graft's module tree.
fn hf_key(path: &[String]) -> String {
    path.iter()
        .map(|p| match p.as_str() {
            "self_attn" => "self",
            "layer_norm" => "LayerNorm",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Keys a BERT checkpoint may carry that the encoder does not use.
fn ignored_key(key: &str) -> bool {
    key == "embeddings.position_ids" || key.starts_with("pooler.")
}

/// Loads `tensors` (checkpoint names) into `model`, strictly: the error lists missing, unexpected and wrong-shape keys.
pub fn load_weights(
    model: BertModel,
    tensors: &HashMap<String, NamedTensor>,
    file: &Path,
    config_file: &Path,
) -> Result<BertModel> {
    let config = model.config.clone();
    load_named(model, tensors, hf_key, ignored_key, "config").map_err(|problems| {
        Error::new(format!(
            "the weights do not match {} (hidden_size {}, {} layers, intermediate_size {}, vocab_size {}) — {}",
            config_file.display(),
            config.hidden_size,
            config.num_hidden_layers,
            config.intermediate_size,
            config.vocab_size,
            problems.describe()
        ))
        .in_file(file)
    })
}

impl BertModel {
    /// Builds the encoder of `dir/config.json` and loads `dir/model.safetensors` (or `dir/pytorch_model.bin`) into
    /// it, strictly (see the module documentation).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = require(dir, "config.json")?;
        let config = BertConfig::from_file(&config_path)?;
        let weights = weights_file(dir)?;
        let tensors = read_state_dict(&weights)?;
        load_weights(config.init(device), &tensors, &weights, &config_path)
    }

    /// Replaces every weight by those of the Hugging Face-format directory `dir` (a sentence-transformers
    /// directory's Transformer folder is found through `modules.json`), whose `config.json` must describe this
    /// encoder's sizes.
    pub fn load_pretrained(self, dir: &Path) -> Result<Self> {
        let (transformer, _) = sentence_pipeline(dir)?;
        let config_path = require(&transformer, "config.json")?;
        let config = BertConfig::from_file(&config_path)?;
        if config != self.config {
            return Err(Error::new(format!(
                "describes another encoder than the layer's config (hidden_size {} vs {}, {} vs {} layers, \
                 vocab_size {} vs {})",
                config.hidden_size,
                self.config.hidden_size,
                config.num_hidden_layers,
                self.config.num_hidden_layers,
                config.vocab_size,
                self.config.vocab_size
            ))
            .in_file(config_path));
        }
        let weights = weights_file(&transformer)?;
        let tensors = read_state_dict(&weights)?;
        load_weights(self, &tensors, &weights, &config_path)
    }
}

// --- sentence encoder -------------------------------------------------------------------------------------------

/// A BERT encoder with its tokenizer and sentence-transformers pooling: texts in, one vector per text out.
pub struct SentenceEncoder {
    pub model: BertModel,
    pub tokenizer: Tokenizer,
    pub pooling: Pooling,
    /// Texts are cut to this many tokens, special tokens included.
    pub max_seq_length: usize,
    /// Lower-case texts before tokenizing (`do_lower_case` of `sentence_bert_config.json`).
    pub lowercase: bool,
    pub device: Device,
}

impl SentenceEncoder {
    /// Loads the encoder, tokenizer and pooling of a Hugging Face / sentence-transformers directory.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::new("no such directory").in_file(dir));
        }
        let Pipeline {
            transformer: transformer_dir,
            pooling,
            width,
        } = read_pipeline(dir)?;
        let config_path = require(&transformer_dir, "config.json")?;
        let weights = weights_file(&transformer_dir)?;
        let tokenizer_path = require(&transformer_dir, "tokenizer.json")?;
        let config = BertConfig::from_file(&config_path)?;
        if let Some((d, path)) = width
            && d != config.hidden_size
        {
            return Err(Error::new(format!(
                "word_embedding_dimension {d} differs from hidden_size {} in {}",
                config.hidden_size,
                config_path.display()
            ))
            .in_file(path));
        }

        let st_path = transformer_dir.join("sentence_bert_config.json");
        let st: SentenceBertConfig = if st_path.is_file() {
            read_json(&st_path)?
        } else {
            SentenceBertConfig::default()
        };
        let max_seq_length = st
            .max_seq_length
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::new(format!("not a readable tokenizer.json: {e}")).in_file(&tokenizer_path))?;
        let added = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if max_seq_length <= added {
            return Err(Error::new(format!(
                "max_seq_length {max_seq_length} leaves no room for text next to the {added} special tokens"
            ))
            .in_file(&st_path));
        }
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::new(e.to_string()).in_file(&tokenizer_path))?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(Error::new(format!(
                "the tokenizer has {vocab} tokens but {} has vocab_size {}",
                config_path.display(),
                config.vocab_size
            ))
            .in_file(&tokenizer_path));
        }

        let tensors = read_state_dict(&weights)?;
        let model = load_weights(config.init(device), &tensors, &weights, &config_path)?;
        Ok(SentenceEncoder {
            model,
            tokenizer,
            pooling,
            max_seq_length,
            lowercase: st.do_lower_case,
            device: device.clone(),
        })
    }

    /// The width of a sentence vector.
    pub fn dim(&self) -> usize {
        self.pooling.modes.len() * self.model.dim()
    }

    /// Token ids as sentence-transformers makes them: the text stripped of surrounding white space (and lower-cased
    /// with `do_lower_case`), `[CLS] … [SEP]`, at most `max_seq_length` tokens, no padding.
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Tokens>> {
        let prepared: Vec<String> = texts
            .iter()
            .map(|t| {
                let t = t.as_ref().trim();
                if self.lowercase {
                    t.to_lowercase()
                } else {
                    t.to_string()
                }
            })
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(prepared, true)
            .map_err(|e| Error::new(format!("cannot tokenize: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| Tokens {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            })
            .collect())
    }

    /// Sentence vectors `[n_texts, dim]`, in the order of `texts`. Texts are batched by token count (at most
    /// `batch_size` a batch) so that little padding is computed; the result does not depend on the batching.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S], batch_size: usize) -> Result<Array> {
        if batch_size == 0 {
            return Err(Error::new("the batch size must be at least 1"));
        }
        let dim = self.dim();
        let tokens = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| tokens[i].ids.len());
        let mut out = vec![0f32; tokens.len() * dim];
        for chunk in order.chunks(batch_size) {
            let batch: Vec<Tokens> = chunk.iter().map(|&i| tokens[i].clone()).collect();
            let (hidden, mask) = self.model.encode(&batch, &self.device)?;
            let pooled = self
                .pooling
                .forward(hidden, mask)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::new(format!("cannot read the embeddings back: {e:?}")))?;
            for (row, &i) in chunk.iter().enumerate() {
                out[i * dim..(i + 1) * dim].copy_from_slice(&pooled[row * dim..(row + 1) * dim]);
            }
        }
        Array::new(vec![tokens.len(), dim], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// tools/reference/tiny_bert.py: a random 2-layer BERT (hidden 32, 4 heads, vocabulary 100) saved by transformers.
    fn tiny() -> PathBuf {
        fixtures().join("tiny-bert")
    }

    fn reference() -> Value {
        let text = std::fs::read_to_string(fixtures().join("tiny_bert_reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn rows(v: &Value) -> Vec<Vec<f64>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect()
    }

    fn tensor_rows(t: Tensor<2>) -> Vec<Vec<f64>> {
        let [_, w] = t.dims();
        let v = t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        v.chunks(w).map(|r| r.iter().map(|&x| x as f64).collect()).collect()
    }

    fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| {
                assert_eq!(x.len(), y.len());
                x.iter().zip(y).map(|(p, q)| (p - q).abs())
            })
            .fold(0.0, f64::max)
    }

    /// A scratch copy of a fixture directory, removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    fn scratch(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("graft-bert-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&tiny(), &dir);
        Scratch(dir)
    }

    fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let path = dir.join("config.json");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(config.as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    }

    fn single_texts(r: &Value) -> Vec<String> {
        r["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    /// The reference's padded id rows, cut at their attention masks.
    fn reference_tokens(r: &Value) -> Vec<Tokens> {
        let ids = rows(&r["input_ids"]);
        let types = rows(&r["token_type_ids"]);
        let mask = rows(&r["attention_mask"]);
        (0..ids.len())
            .map(|i| {
                let n = mask[i].iter().filter(|&&m| m == 1.0).count();
                Tokens {
                    ids: ids[i][..n].iter().map(|&x| x as u32).collect(),
                    type_ids: types[i][..n].iter().map(|&x| x as u32).collect(),
                }
            })
            .collect()
    }

    #[test]
    fn tiny_bert_last_hidden_state_matches_transformers_at_real_tokens() {
        let device = Device::default();
        let r = reference();
        let model = BertModel::load(&tiny(), &device).unwrap();
        let tokens = reference_tokens(&r);
        // One batch padded to the longest (a pair with token types 0 and 1, and two shorter single texts).
        let (hidden, mask) = model.encode(&tokens, &device).unwrap();
        let [b, t, h] = hidden.dims();
        assert_eq!([b, h], [3, 32]);
        let got = hidden.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let mask = mask.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let want = r["last_hidden_state"].as_array().unwrap();
        let mut worst = 0f64;
        let mut compared = 0;
        for i in 0..b {
            for j in 0..t {
                if mask[i * t + j] == 0.0 {
                    continue;
                }
                let row = want[i][j].as_array().unwrap();
                for k in 0..h {
                    worst = worst.max((got[(i * t + j) * h + k] as f64 - row[k].as_f64().unwrap()).abs());
                }
                compared += 1;
            }
        }
        assert_eq!(compared, tokens.iter().map(|s| s.ids.len()).sum::<usize>());
        println!("tiny BERT: max |graft - transformers| over {compared} real tokens = {worst:.3e}");
        assert!(worst <= 1e-5, "max abs error {worst}");

        // Each sequence alone (no padding at all) gives the same states.
        for (i, s) in tokens.iter().enumerate() {
            let (alone, _) = model.encode(std::slice::from_ref(s), &device).unwrap();
            let n = s.ids.len();
            let alone = alone.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            for j in 0..n {
                for k in 0..h {
                    let want = want[i][j][k].as_f64().unwrap();
                    assert!((alone[j * h + k] as f64 - want).abs() <= 1e-5, "sequence {i} token {j}");
                }
            }
        }
    }

    #[test]
    fn tokenizer_matches_and_its_fixed_padding_is_switched_off() {
        let r = reference();
        let encoder = SentenceEncoder::load(&tiny(), &Device::default()).unwrap();
        assert_eq!(encoder.max_seq_length, 24, "from sentence_bert_config.json");
        assert!(encoder.tokenizer.get_padding().is_none());
        let tokens = encoder.tokenize(&single_texts(&r)).unwrap();
        let want = reference_tokens(&r);
        assert_eq!(tokens, want[..2].to_vec());
        // tokenizer.json pads to 16: the first text has 6 tokens, not 16.
        assert_eq!(tokens[0].ids.len(), 6);
        // Surrounding white space is stripped, as sentence-transformers does.
        assert_eq!(encoder.tokenize(&["  The cat sits outside\t"]).unwrap()[0], want[0]);
    }

    #[test]
    fn long_texts_are_cut_to_max_seq_length() {
        let encoder = SentenceEncoder::load(&tiny(), &Device::default()).unwrap();
        let long = "the cat sits outside ".repeat(40);
        let tokens = encoder.tokenize(&[long.as_str()]).unwrap();
        assert_eq!(tokens[0].ids.len(), 24);
        assert_eq!((tokens[0].ids[0], tokens[0].ids[23]), (2, 3), "[CLS] first, [SEP] last");
        let e = encoder.embed(&[long.as_str(), "a dog"], 8).unwrap();
        assert_eq!(e.shape, vec![2, 32]);
    }

    #[test]
    fn pooling_modes_match_sentence_transformers() {
        let device = Device::default();
        let r = reference();
        let model = BertModel::load(&tiny(), &device).unwrap();
        let tokens = reference_tokens(&r);
        let (hidden, mask) = model.encode(&tokens[..2], &device).unwrap();
        let mut worst = 0f64;
        for (mode, key) in [
            (PoolingMode::Mean, "mean"),
            (PoolingMode::Cls, "cls"),
            (PoolingMode::Max, "max"),
        ] {
            let pooled = Pooling::new(vec![mode], false).forward(hidden.clone(), mask.clone());
            let d = max_diff(&tensor_rows(pooled), &rows(&r["pooled"][key]));
            assert!(d <= 1e-5, "{key}: {d}");
            worst = worst.max(d);
        }
        println!("tiny BERT pooling: max error {worst:.3e}");
        // Several modes are concatenated, cls first; mean-sqrt-len is the mean times sqrt(count).
        let both = tensor_rows(
            Pooling::new(vec![PoolingMode::Cls, PoolingMode::Mean], false).forward(hidden.clone(), mask.clone()),
        );
        let cls = rows(&r["pooled"]["cls"]);
        let mean = rows(&r["pooled"]["mean"]);
        let joined: Vec<Vec<f64>> = cls
            .iter()
            .zip(&mean)
            .map(|(c, m)| [c.clone(), m.clone()].concat())
            .collect();
        assert!(max_diff(&both, &joined) <= 1e-5);
        let sqrt = tensor_rows(Pooling::new(vec![PoolingMode::MeanSqrtLen], false).forward(hidden, mask));
        let scaled: Vec<Vec<f64>> = mean
            .iter()
            .zip(&tokens)
            .map(|(m, t)| m.iter().map(|x| x * (t.ids.len() as f64).sqrt()).collect())
            .collect();
        assert!(max_diff(&sqrt, &scaled) <= 1e-4);
    }

    #[test]
    fn sentence_embeddings_match_and_do_not_depend_on_batching() {
        let r = reference();
        let encoder = SentenceEncoder::load(&tiny(), &Device::default()).unwrap();
        assert_eq!(encoder.pooling, Pooling::new(vec![PoolingMode::Mean], true));
        assert_eq!(encoder.dim(), 32);
        let texts = single_texts(&r);
        let want = rows(&r["sentence_embedding"]);
        for batch_size in [1, 2, 32] {
            let e = encoder.embed(&texts, batch_size).unwrap();
            assert_eq!(e.shape, vec![2, 32]);
            let got: Vec<Vec<f64>> = e
                .data
                .chunks(32)
                .map(|c| c.iter().map(|&x| x as f64).collect())
                .collect();
            let d = max_diff(&got, &want);
            assert!(d <= 1e-5, "batch size {batch_size}: {d}");
        }
        // Batched by length, returned in input order.
        let mixed = vec![texts[1].clone(), "dog".into(), texts[0].clone(), texts[1].clone()];
        let e = encoder.embed(&mixed, 2).unwrap();
        let row = |i: usize| {
            e.data[i * 32..(i + 1) * 32]
                .iter()
                .map(|&x| x as f64)
                .collect::<Vec<_>>()
        };
        assert!(
            max_diff(
                &[row(0), row(2), row(3)],
                &[want[1].clone(), want[0].clone(), want[1].clone()]
            ) <= 1e-5
        );
        assert_eq!(encoder.embed(&Vec::<String>::new(), 4).unwrap().shape, vec![0, 32]);
        assert!(encoder.embed(&texts, 0).is_err());
    }

    #[test]
    fn without_modules_json_it_mean_pools_without_normalizing() {
        let r = reference();
        let dir = scratch("plain");
        for f in ["modules.json", "sentence_bert_config.json"] {
            std::fs::remove_file(dir.0.join(f)).unwrap();
        }
        let encoder = SentenceEncoder::load(&dir.0, &Device::default()).unwrap();
        assert_eq!(encoder.pooling, Pooling::new(vec![PoolingMode::Mean], false));
        assert_eq!(encoder.max_seq_length, 64, "max_position_embeddings");
        let e = encoder.embed(&single_texts(&r), 4).unwrap();
        let got: Vec<Vec<f64>> = e
            .data
            .chunks(32)
            .map(|c| c.iter().map(|&x| x as f64).collect())
            .collect();
        assert!(max_diff(&got, &rows(&r["pooled"]["mean"])) <= 1e-5);
    }

    #[test]
    fn a_missing_file_is_named() {
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            let dir = scratch(&format!("missing-{name}"));
            std::fs::remove_file(dir.0.join(name)).unwrap();
            let e = SentenceEncoder::load(&dir.0, &Device::default()).err().unwrap();
            assert_eq!(e.file.as_deref(), Some(dir.0.join(name).as_path()), "{e}");
            assert!(e.to_string().contains("missing"), "{e}");
        }
        let dir = scratch("missing-pooling");
        std::fs::remove_file(dir.0.join("1_Pooling/config.json")).unwrap();
        let e = SentenceEncoder::load(&dir.0, &Device::default()).err().unwrap();
        assert_eq!(
            e.file.as_deref(),
            Some(dir.0.join("1_Pooling/config.json").as_path()),
            "{e}"
        );
        let e = SentenceEncoder::load(&dir.0.join("nowhere"), &Device::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("no such directory"), "{e}");
    }

    #[test]
    fn weights_that_do_not_match_the_config_are_listed() {
        let dir = scratch("wrong-width");
        edit_config(&dir.0, |c| {
            c.insert("hidden_size".into(), 48.into());
        });
        let e = SentenceEncoder::load(&dir.0, &Device::default()).err().unwrap();
        assert_eq!(
            e.file.as_deref(),
            Some(dir.0.join("1_Pooling/config.json").as_path()),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("word_embedding_dimension 32 differs from hidden_size 48"),
            "{e}"
        );
        let e = BertModel::load(&dir.0, &Device::default()).err().unwrap();
        let text = e.to_string();
        assert_eq!(
            e.file.as_deref(),
            Some(dir.0.join("model.safetensors").as_path()),
            "{e}"
        );
        assert!(
            text.contains("do not match") && text.contains("config.json (hidden_size 48"),
            "{text}"
        );
        assert!(text.contains("wrong shape 35: "), "{text}");
        assert!(
            text.contains("embeddings.word_embeddings.weight (file [100, 32], config [100, 48])"),
            "{text}"
        );
        assert!(
            text.contains("encoder.layer.0.attention.self.query.weight (file [32, 32], config [48, 48])"),
            "{text}"
        );
        assert!(
            text.contains("embeddings.LayerNorm.weight (file [32], config [48])"),
            "{text}"
        );
        assert!(text.contains("... and 23 more"), "{text}");
        assert!(!text.contains("pooler") && !text.contains("position_ids"), "{text}");

        let dir = scratch("more-layers");
        edit_config(&dir.0, |c| {
            c.insert("num_hidden_layers".into(), 3.into());
        });
        let e = BertModel::load(&dir.0, &Device::default()).err().unwrap().to_string();
        assert!(e.contains("missing 16: encoder.layer.2."), "{e}");

        // Keys the file lacks or the model does not have, in the checkpoint's naming.
        let device = Device::default();
        let config = BertConfig::from_file(&tiny().join("config.json")).unwrap();
        let mut tensors = read_state_dict(&tiny().join("model.safetensors")).unwrap();
        tensors.remove("encoder.layer.1.output.dense.bias");
        let extra = NamedTensor {
            name: "classifier.weight".into(),
            shape: vec![2, 32],
            values: vec![0.0; 64],
        };
        tensors.insert(extra.name.clone(), extra);
        let e = load_weights(
            config.init(&device),
            &tensors,
            Path::new("w.safetensors"),
            Path::new("config.json"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.starts_with("w.safetensors: the weights do not match config.json"),
            "{e}"
        );
        assert!(e.contains("missing 1: encoder.layer.1.output.dense.bias [32]"), "{e}");
        assert!(e.contains("unexpected 1: classifier.weight [2, 32]"), "{e}");
    }

    #[test]
    fn config_problems_name_the_key() {
        let dir = scratch("config");
        for (key, value, expected) in [
            (
                "hidden_act",
                Value::from("tanh"),
                "hidden_act: unsupported activation \"tanh\"",
            ),
            (
                "model_type",
                Value::from("roberta"),
                "model_type: model_type \"roberta\" is not supported",
            ),
            (
                "num_attention_heads",
                Value::from(5),
                "num_attention_heads: 5 heads do not divide hidden_size 32",
            ),
            (
                "position_embedding_type",
                Value::from("relative_key"),
                "position_embedding_type",
            ),
            ("hidden_size", Value::from("wide"), "not a BERT config"),
        ] {
            copy_dir(&tiny(), &dir.0);
            edit_config(&dir.0, |c| {
                c.insert(key.into(), value.clone());
            });
            let e = SentenceEncoder::load(&dir.0, &Device::default()).err().unwrap();
            assert_eq!(e.file.as_deref(), Some(dir.0.join("config.json").as_path()), "{e}");
            assert!(e.to_string().contains(expected), "{key}: {e}");
        }
        copy_dir(&tiny(), &dir.0);
        std::fs::write(
            dir.0.join("modules.json"),
            r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
        )
        .unwrap();
        let e = SentenceEncoder::load(&dir.0, &Device::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("modules.json: [2]: module \"sentence_transformers.models.Dense\" is not supported"),
            "{e}"
        );
    }

    /// The real all-MiniLM-L6-v2 (`scripts/fetch-data.sh minilm`) against sentence-transformers' own output.
    #[test]
    fn minilm_matches_the_golden_embeddings() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/minilm");
        if !dir.join("config.json").is_file() {
            println!(
                "skipped: {} is absent (run scripts/fetch-data.sh minilm)",
                dir.display()
            );
            return;
        }
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join("minilm_golden.json")).unwrap()).unwrap();
        let sentences = single_texts(&serde_json::json!({ "texts": golden["sentences"] }));
        let encoder = SentenceEncoder::load(&dir, &Device::default()).unwrap();
        assert_eq!((encoder.dim(), encoder.max_seq_length), (384, 256));
        assert_eq!(encoder.pooling, Pooling::new(vec![PoolingMode::Mean], true));
        let tokens = encoder.tokenize(&sentences).unwrap();
        let want_ids = rows(&golden["input_ids"]);
        for (t, w) in tokens.iter().zip(&want_ids) {
            assert_eq!(t.ids.iter().map(|&x| x as f64).collect::<Vec<_>>(), *w);
        }
        let start = std::time::Instant::now();
        let e = encoder.embed(&sentences, 32).unwrap();
        let took = start.elapsed();
        let want = rows(&golden["embeddings"]);
        let (mut min_cos, mut max_abs) = (f64::MAX, 0f64);
        for (i, w) in want.iter().enumerate() {
            let g: Vec<f64> = e.data[i * 384..(i + 1) * 384].iter().map(|&x| x as f64).collect();
            let dot: f64 = g.iter().zip(w).map(|(a, b)| a * b).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = dot / (norm(&g) * norm(w));
            min_cos = min_cos.min(cos);
            max_abs = max_abs.max(max_diff(&[g], std::slice::from_ref(w)));
        }
        println!(
            "MiniLM vs sentence-transformers: min cosine {min_cos:.8}, max abs diff {max_abs:.3e} ({} sentences in {:.1} ms)",
            want.len(),
            took.as_secs_f64() * 1e3
        );
        assert!(min_cos >= 0.9999, "min cosine {min_cos}");
        assert!(max_abs <= 1e-4, "max abs diff {max_abs}");
    }
}
