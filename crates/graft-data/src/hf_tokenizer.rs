//! Texts → token ids with a pretrained encoder's own tokenizer (`tokenizer.json`, read by the Hugging Face
//! `tokenizers` crate): the ids a `bert` layer expects, with its special tokens (`[CLS] … [SEP]`), padded at the end
//! with the pad id. Nothing is fitted; the whole tokenizer is stored in `preprocess.json`, so `predict` needs no
//! other file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use super::Array;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct PretrainedTokenizer {
    tokenizer: Tokenizer,
    /// Every text becomes exactly this many ids, special tokens included.
    pub length: usize,
    pub pad_id: u32,
}

impl PartialEq for PretrainedTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.length == other.length
            && self.pad_id == other.pad_id
            && self.tokenizer.to_string(false).ok() == other.tokenizer.to_string(false).ok()
    }
}

/// `tokenizer.json` of a directory (a sentence-transformers directory's Transformer folder is found through
/// `modules.json`), or the file itself.
fn tokenizer_file(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(
            Error::new("no such file or directory; expected a tokenizer.json or the folder holding one").in_file(path),
        );
    }
    let (transformer, _) = crate::sentence_pipeline::sentence_pipeline(path)?;
    let file = transformer.join("tokenizer.json");
    if file.is_file() {
        Ok(file)
    } else {
        Err(Error::new("missing: the pretrained tokenizer's tokenizer.json").in_file(file))
    }
}

impl PretrainedTokenizer {
    /// The number of ids the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The token string of one id (`[CLS]`, `##ing`, ...), or `None` outside the vocabulary.
    pub fn token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Loads `path` (a `tokenizer.json` or its directory) to make sequences of `length` ids.
    pub fn load(path: &Path, length: usize) -> Result<Self> {
        let file = tokenizer_file(path)?;
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let mut tokenizer = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(tokenizer_from_value)
            .map_err(|e| Error::new(format!("not a readable tokenizer.json: {e}")).in_file(&file))?;
        let added = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if length <= added {
            return Err(Error::new(format!(
                "length {length} leaves no room for text next to the {added} special tokens"
            ))
            .at("tokenizer.length"));
        }
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .unwrap_or(0);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: length,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::new(e.to_string()).in_file(&file))?;
        Ok(PretrainedTokenizer {
            tokenizer,
            length,
            pad_id,
        })
    }

    /// `[n, length]` ids (as floats), padded at the end with `pad_id`.
    pub fn transform(&self, texts: &[String]) -> Result<Array> {
        let trimmed: Vec<&str> = texts.iter().map(|t| t.trim()).collect();
        let encodings = self
            .tokenizer
            .encode_batch(trimmed, true)
            .map_err(|e| Error::new(format!("cannot tokenize: {e}")))?;
        let mut data = vec![self.pad_id as f32; texts.len() * self.length];
        for (row, e) in encodings.iter().enumerate() {
            for (j, &id) in e.get_ids().iter().take(self.length).enumerate() {
                data[row * self.length + j] = id as f32;
            }
        }
        Array::new(vec![texts.len(), self.length], data)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    length: usize,
    pad_id: u32,
    #[serde(deserialize_with = "guarded")]
    tokenizer: Tokenizer,
}

fn guarded<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Tokenizer, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    tokenizer_from_value(value).map_err(serde::de::Error::custom)
}

/// A tokenizer from its JSON. `tokenizers` 0.22 panics on some malformed files (an `expect` in its decoder's
/// deserializer) instead of returning an error, so the parse runs behind `catch_unwind`, with the panic's message
/// kept off stderr, and such a file is an error like any other.
fn tokenizer_from_value(value: serde_json::Value) -> std::result::Result<Tokenizer, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let parsed = std::panic::catch_unwind(move || serde_json::from_value::<Tokenizer>(value));
    std::panic::set_hook(hook);
    match parsed {
        Ok(Ok(tokenizer)) => Ok(tokenizer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("its `decoder` section is not one tokenizers can read".into()),
    }
}

impl Serialize for PretrainedTokenizer {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Stored {
            length: self.length,
            pad_id: self.pad_id,
            tokenizer: self.tokenizer.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PretrainedTokenizer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = Stored::deserialize(d)?;
        Ok(PretrainedTokenizer {
            tokenizer: s.tokenizer,
            length: s.length,
            pad_id: s.pad_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../graft/tests/fixtures/tiny-bert")
    }

    /// Found by `graft fuzz hf_tokenizer`: a decoder that is an object of the wrong shape made `tokenizers` panic.
    #[test]
    fn a_malformed_decoder_is_an_error_not_a_panic() {
        let text = std::fs::read_to_string(tiny().join("tokenizer.json")).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["decoder"] = serde_json::json!({"type": 7, "x": [1]});
        let dir = std::env::temp_dir().join(format!("graft-bad-tokenizer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), doc.to_string()).unwrap();
        let err = PretrainedTokenizer::load(&dir, 8).unwrap_err().to_string();
        assert!(err.contains("not a readable tokenizer.json"), "{err}");
        std::fs::write(dir.join("tokenizer.json"), &text[..text.len() / 2]).unwrap();
        let err = PretrainedTokenizer::load(&dir, 8).unwrap_err().to_string();
        assert!(
            err.contains("not a readable tokenizer.json") && err.contains("EOF"),
            "{err}"
        );
    }

    #[test]
    fn pads_truncates_and_round_trips() {
        let tok = PretrainedTokenizer::load(&tiny(), 6).unwrap();
        let texts = vec!["hello world".to_string(), "a b c d e f g h i j".to_string()];
        let ids = tok.transform(&texts).unwrap();
        assert_eq!(ids.shape, vec![2, 6]);
        let row0 = &ids.data[..6];
        let row1 = &ids.data[6..];
        // [CLS] first, [SEP] last of the real tokens, padding after.
        let cls = tok.tokenizer.token_to_id("[CLS]").unwrap() as f32;
        let sep = tok.tokenizer.token_to_id("[SEP]").unwrap() as f32;
        assert_eq!(row0[0], cls);
        assert_eq!(row1[0], cls);
        assert_eq!(row1[5], sep, "{row1:?}");
        assert!(
            row0.iter().rev().take_while(|&&v| v == tok.pad_id as f32).count() >= 1,
            "{row0:?}"
        );
        let json = serde_json::to_string(&tok).unwrap();
        let back: PretrainedTokenizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tok);
        assert_eq!(back.transform(&texts).unwrap().data, ids.data);
    }

    #[test]
    fn too_short_a_length_is_an_error() {
        let e = PretrainedTokenizer::load(&tiny(), 2).unwrap_err();
        assert!(e.to_string().contains("no room"), "{e}");
    }
}
