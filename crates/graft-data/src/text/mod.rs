//! Text data: labelled texts read from one folder per class or from two columns of a CSV file, and a
//! word-level [`Tokenizer`] that turns them into fixed-length rows of token ids for `embedding` layers.
//!
//! The tokenizer is fitted on the training rows only (so held-out words are out-of-vocabulary, as
//! they will be for new data), is deterministic (frequency ties are broken alphabetically) and is
//! stored as JSON with the model so `predict` tokenizes raw text exactly as training did.
//!
//! For training word vectors: a [`Corpus`] (sentences of word ids over the corpus's frequent words, tokenized by the
//! same rules) and, from it, word2vec's skip-gram pairs and noise distribution ([`skipgram`]).

pub mod corpus;
mod read;
pub mod skipgram;
mod splitter;
mod tokenizer;

pub use corpus::{Corpus, CorpusSpec};
pub(crate) use read::{collect_files, sub_folders};
pub use read::{read_label_sets, read_texts};
pub use skipgram::{NoiseSampler, skipgram_pairs};
pub use tokenizer::Tokenizer;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use splitter::Splitter;

/// Largest id an `f32` holds exactly (2^24).
const MAX_EXACT_F32: usize = 1 << 24;

/// Where labelled texts come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// One folder per class under this root (file contents are the texts), or a CSV file (see `column`).
    pub path: PathBuf,
    /// For a CSV: the name of the text column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// For a CSV: the name of the label column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// For a CSV: the label column holds several labels separated by this (e.g. `"|"`), making the data
    /// multi-label (one sigmoid output per label); an empty cell means no label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_separator: Option<String>,
    /// Class name → the folders under `path` holding its texts (for a CSV: the label values meaning it), e.g.
    /// `{ ham = ["easy-ham-1", "hard-ham-1"], spam = ["spam-1"] }`; classes are numbered in name order. By default
    /// every sub-folder (every distinct label value) is its own class, sorted by name (numerically when all labels
    /// are integers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<BTreeMap<String, Vec<String>>>,
    /// Only files with these extensions (`"txt"` or `".txt"`, any case); by default every regular file.
    /// Hidden files (names starting with `.`) are always skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Vec<String>>,
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
}

/// How texts become token ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSpec {
    /// Lowercase texts before splitting them.
    #[serde(default = "yes")]
    pub lowercase: bool,
    /// Vocabulary size including the two reserved ids (0 = padding, 1 = out-of-vocabulary): the most frequent
    /// tokens of the training texts, ties broken alphabetically.
    #[serde(default = "vocab_20000")]
    pub vocab_size: usize,
    /// Tokens seen fewer times than this in the training texts are out-of-vocabulary.
    #[serde(default = "one")]
    pub min_freq: usize,
    /// Output length: sequences are padded with 0 or truncated to this many ids.
    #[serde(default = "length_200")]
    pub length: usize,
    /// Where short sequences get their padding: `"post"` (at the end, the default; suits masked RNNs) or `"pre"`.
    #[serde(default)]
    pub padding: Side,
    /// Where long sequences lose ids: `"post"` (keep the first `length`, the default) or `"pre"` (keep the last).
    #[serde(default)]
    pub truncation: Side,
    /// `"word"` or `"char_ngrams"`.
    #[serde(default)]
    pub mode: TokenMode,
    /// For `char_ngrams`: the shortest and longest n-gram, in characters (default `[3, 6]`, as fastText).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngram_range: Option<[usize; 2]>,
    /// A pretrained encoder's tokenizer (`tokenizer.json` or the directory holding it) instead of a vocabulary
    /// fitted here: ids with the encoder's special tokens, padded at the end to `length`; `lowercase`,
    /// `vocab_size`, `min_freq`, `padding`, `truncation` and `mode` do not apply (the tokenizer has its own rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
}

impl Default for TokenizerSpec {
    fn default() -> Self {
        TokenizerSpec {
            lowercase: true,
            vocab_size: 20_000,
            min_freq: 1,
            length: 200,
            padding: Side::Post,
            truncation: Side::Post,
            mode: TokenMode::Word,
            ngram_range: None,
            pretrained: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn vocab_20000() -> usize {
    20_000
}
fn one() -> usize {
    1
}
fn length_200() -> usize {
    200
}

/// Which end of a sequence padding goes to, or truncation cuts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The start.
    Pre,
    /// The end.
    #[default]
    Post,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenMode {
    /// Words: maximal runs of letters, digits and apostrophes (`don't` is one word; `e-mail` is two).
    #[default]
    Word,
    /// fastText-style subwords: each word as `<word>` followed by its character n-grams, the `<` and `>`
    /// boundary marks included (`<wh`, `whe`, …, `re>` for `where` with n = 3).
    CharNgrams,
}

impl TokenizerSpec {
    /// Checks the settings (without any data), so a bad spec fails before texts are read.
    pub fn validate(&self) -> Result<()> {
        self.splitter().map(|_| ())
    }

    fn splitter(&self) -> Result<Splitter> {
        if self.vocab_size < 3 {
            return Err(Error::new(format!(
                "vocab_size counts the reserved ids 0 (padding) and 1 (unknown), so it must be at least 3, found {}",
                self.vocab_size
            ))
            .at("tokenizer.vocab_size"));
        }
        if self.vocab_size > MAX_EXACT_F32 {
            return Err(Error::new(format!(
                "vocab_size {} is above {MAX_EXACT_F32}, the largest id a float holds exactly",
                self.vocab_size
            ))
            .at("tokenizer.vocab_size"));
        }
        Splitter::new(self.lowercase, self.mode, self.ngram_range, self.length).at("tokenizer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant;

    pub(super) fn folder_spec(path: &Path) -> TextSpec {
        TextSpec {
            path: path.to_path_buf(),
            column: None,
            label: None,
            label_separator: None,
            classes: None,
            extensions: None,
            tokenizer: TokenizerSpec::default(),
        }
    }

    pub(super) fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    pub(super) fn spec(vocab_size: usize, length: usize) -> TokenizerSpec {
        TokenizerSpec {
            vocab_size,
            length,
            ..TokenizerSpec::default()
        }
    }

    pub(super) fn all_rows(texts: &[String]) -> Vec<usize> {
        (0..texts.len()).collect()
    }

    #[test]
    fn spec_parses_with_defaults_and_rejects_unknown_fields() {
        let s: TokenizerSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(s, TokenizerSpec::default());
        let s: TokenizerSpec =
            serde_json::from_str(r#"{"padding":"pre","mode":"char_ngrams","ngram_range":[2,4]}"#).unwrap();
        assert_eq!(
            (s.padding, s.truncation, s.mode, s.ngram_range),
            (Side::Pre, Side::Post, TokenMode::CharNgrams, Some([2, 4]))
        );
        assert!(serde_json::from_str::<TokenizerSpec>(r#"{"vocab":10}"#).is_err());
        assert!(serde_json::from_str::<TokenizerSpec>(r#"{"padding":"left"}"#).is_err());
        let t: TextSpec =
            serde_json::from_str(r#"{"path":"d","classes":{"ham":["h1"]},"extensions":["txt"]}"#).unwrap();
        assert_eq!(t.tokenizer, TokenizerSpec::default());
        assert!(serde_json::from_str::<TextSpec>(r#"{"path":"d","colum":"x"}"#).is_err());
        let word_with_range = TokenizerSpec {
            ngram_range: Some([2, 3]),
            ..TokenizerSpec::default()
        };
        assert_eq!(
            word_with_range.validate().unwrap_err().location.as_deref(),
            Some("tokenizer.ngram_range")
        );
    }

    /// The spam/ham e-mails, when present (`GRAFT_SPAM_DIR`, else `data/spam` at the repository root).
    #[test]
    fn spam_set_reads_and_tokenizes_quickly() {
        let root = std::env::var_os("GRAFT_SPAM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/spam"));
        if !root.is_dir() {
            eprintln!("skipped: {} is not there", root.display());
            return;
        }
        let mut s = folder_spec(&root);
        s.classes = Some(BTreeMap::from([
            ("ham".to_string(), strings(&["easy-ham-1", "easy-ham-2", "hard-ham-1"])),
            ("spam".to_string(), strings(&["spam-1", "spam-2"])),
        ]));
        s.extensions = Some(strings(&["txt"]));
        let started = Instant::now();
        let (texts, labels, names) = read_texts(&s).unwrap();
        let read = started.elapsed();
        assert_eq!(names, strings(&["ham", "spam"]));
        assert_eq!(texts.len(), 6046);
        assert_eq!(labels.iter().filter(|&&l| l == 0).count(), 4150);
        assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 1896);
        let bytes: usize = texts.iter().map(String::len).sum();

        let started = Instant::now();
        let rows: Vec<usize> = (0..texts.len()).filter(|r| r % 5 != 0).collect();
        let tok = Tokenizer::fit(&TokenizerSpec::default(), &texts, &rows).unwrap();
        let fitted = started.elapsed();
        let ids = tok.transform(&texts);
        let total = started.elapsed();
        assert_eq!(ids.shape, vec![6046, 200]);
        assert_eq!(tok.vocab_size(), 20_000);
        let pre = TokenizerSpec {
            truncation: Side::Pre,
            ..TokenizerSpec::default()
        };
        let started = Instant::now();
        let tok_pre = Tokenizer::fit(&pre, &texts, &rows).unwrap();
        let _ = tok_pre.transform(&texts);
        let total_pre = started.elapsed();
        eprintln!(
            "spam: {} texts, {:.1} MB; read {:.0} ms; fit {:.0} ms + transform {:.0} ms = {:.0} ms \
             (truncation pre: {:.0} ms); first tokens {:?}",
            texts.len(),
            bytes as f64 / 1e6,
            read.as_secs_f64() * 1e3,
            fitted.as_secs_f64() * 1e3,
            (total - fitted).as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            total_pre.as_secs_f64() * 1e3,
            &tok.vocab[..8]
        );
    }
}
