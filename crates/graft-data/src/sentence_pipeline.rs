//! A sentence-transformers directory as files: which folder holds the Transformer (config.json, weights,
//! tokenizer.json), how its token vectors are pooled, and its sentence_bert_config.json. Reading these needs no
//! tensors, so the tokenizer (here) and the encoder (in graft) share one reader.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Context, Error, Result};

/// How token vectors become one sentence vector (sentence-transformers' Pooling modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The element-wise maximum over the tokens (padding excluded).
    Max,
    /// The mean over the tokens (padding excluded).
    Mean,
    /// The sum over the tokens divided by the square root of their count.
    MeanSqrtLen,
}

/// One or more pooling modes, concatenated in the order cls, max, mean, mean-sqrt-len; optionally L2-normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    pub modes: Vec<PoolingMode>,
    pub normalize: bool,
}

impl Pooling {
    pub fn new(modes: Vec<PoolingMode>, normalize: bool) -> Self {
        Pooling { modes, normalize }
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize, Default)]
pub struct SentenceBertConfig {
    #[serde(default)]
    pub max_seq_length: Option<usize>,
    #[serde(default)]
    pub do_lower_case: bool,
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).in_file(path)?;
    serde_json::from_str(&text).map_err(|e| Error::new(e.to_string()).in_file(path))
}

/// The sentence-transformers pipeline of a directory.
pub struct Pipeline {
    /// The Transformer module's folder: config.json, the weights, tokenizer.json, sentence_bert_config.json.
    pub transformer: PathBuf,
    pub pooling: Pooling,
    /// The Pooling config's `word_embedding_dimension` and its file, to check against the encoder.
    pub width: Option<(usize, PathBuf)>,
}

/// The folder holding a sentence-transformers directory's Transformer module (config.json, weights, tokenizer.json)
/// and its pooling; without `modules.json`, `dir` itself with mean pooling and no normalization.
pub fn sentence_pipeline(dir: &Path) -> Result<(PathBuf, Pooling)> {
    let p = read_pipeline(dir)?;
    Ok((p.transformer, p.pooling))
}

/// Reads `dir/modules.json`; without it, `dir` itself with mean pooling and no normalization.
pub fn read_pipeline(dir: &Path) -> Result<Pipeline> {
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(Pipeline {
            transformer: dir.to_path_buf(),
            pooling: Pooling::new(vec![PoolingMode::Mean], false),
            width: None,
        });
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    let mut transformer = None;
    let mut pooling = None;
    let mut normalize = false;
    let mut width = None;
    for (i, m) in modules.iter().enumerate() {
        let at = || format!("[{i}]");
        let kind = m.kind.rsplit('.').next().unwrap_or("");
        let folder = dir.join(&m.path);
        match kind {
            "Transformer" | "BERT" if transformer.is_none() && pooling.is_none() => transformer = Some(folder),
            "Pooling" if transformer.is_some() && pooling.is_none() => {
                let path = folder.join("config.json");
                let file: PoolingFile = read_json(&path)?;
                if file.pooling_mode_weightedmean_tokens || file.pooling_mode_lasttoken {
                    return Err(Error::new(
                        "weighted-mean and last-token pooling are not supported (cls, max, mean, mean_sqrt_len are)",
                    )
                    .in_file(&path));
                }
                width = file.word_embedding_dimension.map(|d| (d, path.clone()));
                let modes: Vec<PoolingMode> = [
                    (file.pooling_mode_cls_token, PoolingMode::Cls),
                    (file.pooling_mode_max_tokens, PoolingMode::Max),
                    (file.pooling_mode_mean_tokens, PoolingMode::Mean),
                    (file.pooling_mode_mean_sqrt_len_tokens, PoolingMode::MeanSqrtLen),
                ]
                .into_iter()
                .filter_map(|(on, mode)| on.then_some(mode))
                .collect();
                if modes.is_empty() {
                    return Err(Error::new("no pooling mode is switched on").in_file(&path));
                }
                pooling = Some(modes);
            }
            "Normalize" if pooling.is_some() && !normalize => normalize = true,
            _ => {
                return Err(Error::new(format!(
                    "module \"{}\" is not supported here; graft runs Transformer → Pooling → (Normalize)",
                    m.kind
                ))
                .at(at())
                .in_file(&modules_path));
            }
        }
    }
    match (transformer, pooling) {
        (Some(transformer), Some(modes)) => Ok(Pipeline {
            transformer,
            pooling: Pooling::new(modes, normalize),
            width,
        }),
        _ => Err(Error::new("expected a Transformer module followed by a Pooling module").in_file(&modules_path)),
    }
}
