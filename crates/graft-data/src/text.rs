//! Text data: labelled texts read from one folder per class or from two columns of a CSV file, and a
//! word-level [`Tokenizer`] that turns them into fixed-length rows of token ids for `embedding` layers.
//!
//! The tokenizer is fitted on the training rows only (so held-out words are out-of-vocabulary, as
//! they will be for new data), is deterministic (frequency ties are broken alphabetically) and is
//! stored as JSON with the model so `predict` tokenizes raw text exactly as training did.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::array::Array;
use super::table::{CsvSpec, read_csv};
use crate::error::{Context, Error, Result};

/// Id of the padding that fills short sequences.
const PAD: u32 = 0;
/// Id of every token outside the vocabulary.
const OOV: u32 = 1;
/// Largest id an `f32` holds exactly (2^24).
const MAX_EXACT_F32: usize = 1 << 24;
/// fastText's default character n-gram lengths.
const DEFAULT_NGRAMS: [usize; 2] = [3, 6];

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

/// The tokenization rules, shared by the spec and the fitted tokenizer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Splitter {
    lowercase: bool,
    mode: TokenMode,
    /// `[min, max]` characters, for char n-grams.
    ngrams: [usize; 2],
    length: usize,
}

/// Scratch space reused across texts, so tokenizing allocates only for new vocabulary entries.
#[derive(Default)]
struct Scratch {
    lower: String,
    word: String,
    bounds: Vec<usize>,
}

impl Splitter {
    fn new(lowercase: bool, mode: TokenMode, ngram_range: Option<[usize; 2]>, length: usize) -> Result<Self> {
        if length == 0 {
            return Err(Error::new("the output length must be at least 1").at("length"));
        }
        let ngrams = match (mode, ngram_range) {
            (TokenMode::Word, None) => DEFAULT_NGRAMS,
            (TokenMode::Word, Some(_)) => {
                return Err(Error::new("ngram_range applies only with mode = \"char_ngrams\"").at("ngram_range"));
            }
            (TokenMode::CharNgrams, range) => {
                let [min, max] = range.unwrap_or(DEFAULT_NGRAMS);
                if min == 0 || min > max {
                    return Err(Error::new(format!(
                        "ngram_range must be [min, max] with 1 <= min <= max, found [{min}, {max}]"
                    ))
                    .at("ngram_range"));
                }
                [min, max]
            }
        };
        Ok(Splitter {
            lowercase,
            mode,
            ngrams,
            length,
        })
    }

    /// Calls `f` on each token of `text` in order until it returns false.
    fn each_token(&self, text: &str, scratch: &mut Scratch, mut f: impl FnMut(&str) -> bool) {
        let Scratch { lower, word, bounds } = scratch;
        let text = if self.lowercase {
            lower.clear();
            if text.is_ascii() {
                lower.push_str(text);
                lower.make_ascii_lowercase();
            } else {
                lower.push_str(&text.to_lowercase());
            }
            lower.as_str()
        } else {
            text
        };
        let words = Words { text, pos: 0 };
        match self.mode {
            TokenMode::Word => {
                for w in words {
                    if !f(w) {
                        return;
                    }
                }
            }
            TokenMode::CharNgrams => {
                let [min, max] = self.ngrams;
                for w in words {
                    word.clear();
                    word.push('<');
                    word.push_str(w);
                    word.push('>');
                    bounds.clear();
                    bounds.extend(word.char_indices().map(|(i, _)| i));
                    bounds.push(word.len());
                    let chars = bounds.len() - 1;
                    if !f(word) {
                        return;
                    }
                    for i in 0..chars {
                        for n in min..=max.min(chars - i) {
                            let j = i + n;
                            // Skip the whole word (already given) and the boundary marks alone.
                            if (i == 0 && j == chars) || (n == 1 && (i == 0 || j == chars)) {
                                continue;
                            }
                            if !f(&word[bounds[i]..bounds[j]]) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The words of a text: maximal runs of alphanumeric characters and apostrophes. Scans bytes, decoding a character
/// only where the text is not ASCII (several times faster than `str::split` with a `char` predicate).
struct Words<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let mut start = None;
        let mut i = self.pos;
        while i < bytes.len() {
            let b = bytes[i];
            let (in_word, width) = if b.is_ascii() {
                (b.is_ascii_alphanumeric() || b == b'\'', 1)
            } else {
                let c = self.text[i..].chars().next().expect("a character starts here");
                (c.is_alphanumeric(), c.len_utf8())
            };
            if in_word {
                start.get_or_insert(i);
            } else if let Some(s) = start {
                self.pos = i + width;
                return Some(&self.text[s..i]);
            }
            i += width;
        }
        self.pos = bytes.len();
        start.map(|s| &self.text[s..])
    }
}

/// FxHash (as in rustc) with a final mix: much faster than SipHash for short string keys, and the keys are the user's own text.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            let v = u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 59);
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        // A final mix (as murmur3's) so the low bits, which pick the bucket, depend on every input byte.
        let h = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A vocabulary fitted on the training texts, with the rules to tokenize, pad and truncate new texts.
/// Serializes to JSON (settings plus the tokens in id order) to be stored with the model.
#[derive(Clone, PartialEq)]
pub struct Tokenizer {
    splitter: Splitter,
    padding: Side,
    truncation: Side,
    /// The tokens in id order: `vocab[i]` has id `i + 2`.
    vocab: Vec<String>,
    /// Token → id.
    index: FxMap<String, u32>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.vocab.len().min(10);
        f.debug_struct("Tokenizer")
            .field("splitter", &self.splitter)
            .field("padding", &self.padding)
            .field("truncation", &self.truncation)
            .field("vocab_size", &self.vocab_size())
            .field("first_tokens", &&self.vocab[..shown])
            .finish()
    }
}

impl Tokenizer {
    /// Every id's token: `"<pad>"` (0), `"<oov>"` (1), then the vocabulary — the rows of an embedding matrix.
    pub fn tokens_by_id(&self) -> Vec<String> {
        ["<pad>".to_string(), "<oov>".to_string()]
            .into_iter()
            .chain(self.vocab.iter().cloned())
            .collect()
    }

    /// Fits the vocabulary on `texts[r]` for `r` in `train_rows` (only those: held-out texts must not leak into
    /// it): the `spec.vocab_size - 2` most frequent tokens seen at least `spec.min_freq` times, most frequent first
    /// (ids 2, 3, …), ties broken alphabetically.
    pub fn fit(spec: &TokenizerSpec, texts: &[String], train_rows: &[usize]) -> Result<Self> {
        let splitter = spec.splitter()?;
        let mut counts: FxMap<String, u64> = FxMap::default();
        let mut scratch = Scratch::default();
        for &row in train_rows {
            let text = texts
                .get(row)
                .ok_or_else(|| Error::new(format!("training row {row} is outside the {} texts", texts.len())))?;
            splitter.each_token(text, &mut scratch, |token| {
                match counts.get_mut(token) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(token.to_owned(), 1);
                    }
                }
                true
            });
        }
        let min_freq = spec.min_freq as u64;
        let mut entries: Vec<(String, u64)> = counts.into_iter().filter(|&(_, c)| c >= min_freq).collect();
        let order = |a: &(String, u64), b: &(String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        let keep = spec.vocab_size - 2;
        if entries.len() > keep {
            entries.select_nth_unstable_by(keep, order);
            entries.truncate(keep);
        }
        entries.sort_unstable_by(order);
        let vocab = entries.into_iter().map(|(token, _)| token).collect();
        Tokenizer::build(splitter, spec.padding, spec.truncation, vocab)
    }

    fn build(splitter: Splitter, padding: Side, truncation: Side, vocab: Vec<String>) -> Result<Self> {
        if vocab.len() + 2 > MAX_EXACT_F32 {
            return Err(Error::new(format!(
                "{} tokens is more than ids held exactly by a float allow",
                vocab.len()
            )));
        }
        let mut index = FxMap::with_capacity_and_hasher(vocab.len(), Default::default());
        for (i, token) in vocab.iter().enumerate() {
            if token.is_empty() {
                return Err(Error::new(format!("vocabulary entry {i} is empty")));
            }
            if index.insert(token.clone(), i as u32 + 2).is_some() {
                return Err(Error::new(format!("token {token:?} appears twice in the vocabulary")));
            }
        }
        Ok(Tokenizer {
            splitter,
            padding,
            truncation,
            vocab,
            index,
        })
    }

    /// The tokens of `text`, in order, before vocabulary lookup, padding or truncation.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.splitter.each_token(text, &mut Scratch::default(), |t| {
            out.push(t.to_owned());
            true
        });
        out
    }

    /// Token ids `[n, length]` as `f32` (whole numbers; `embedding` layers take ids as floats): 1 for tokens
    /// outside the vocabulary, 0 for padding.
    pub fn transform(&self, texts: &[String]) -> Array {
        let length = self.splitter.length;
        let mut data = vec![PAD as f32; texts.len() * length];
        let mut scratch = Scratch::default();
        let mut ids: Vec<u32> = Vec::new();
        // Keeping the first `length` ids, tokenizing can stop there.
        let cap = match self.truncation {
            Side::Post => length,
            Side::Pre => usize::MAX,
        };
        for (text, row) in texts.iter().zip(data.chunks_exact_mut(length)) {
            ids.clear();
            self.splitter.each_token(text, &mut scratch, |token| {
                ids.push(self.index.get(token).copied().unwrap_or(OOV));
                ids.len() < cap
            });
            let kept = match self.truncation {
                Side::Post => &ids[..ids.len().min(length)],
                Side::Pre => &ids[ids.len().saturating_sub(length)..],
            };
            let start = match self.padding {
                Side::Post => 0,
                Side::Pre => length - kept.len(),
            };
            for (slot, &id) in row[start..].iter_mut().zip(kept) {
                *slot = id as f32;
            }
        }
        Array {
            shape: vec![texts.len(), length],
            data,
        }
    }

    /// The number of ids, the two reserved ones included (at most the spec's `vocab_size`): the `embedding`
    /// layer's input dimension.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len() + 2
    }

    /// The length of every transformed sequence.
    pub fn length(&self) -> usize {
        self.splitter.length
    }

    /// The id of `token` (a token as [`Tokenizer::tokens`] gives it, i.e. already lowercased where the spec says
    /// so); 1 when it is outside the vocabulary.
    pub fn id(&self, token: &str) -> usize {
        self.index.get(token).map_or(OOV as usize, |&id| id as usize)
    }
}

/// The stored form of a [`Tokenizer`].
#[derive(Serialize)]
struct StoredTokenizerRef<'a> {
    lowercase: bool,
    mode: TokenMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    ngram_range: Option<[usize; 2]>,
    length: usize,
    padding: Side,
    truncation: Side,
    /// Tokens in id order, from id 2.
    vocab: &'a [String],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTokenizer {
    lowercase: bool,
    mode: TokenMode,
    #[serde(default)]
    ngram_range: Option<[usize; 2]>,
    length: usize,
    padding: Side,
    truncation: Side,
    vocab: Vec<String>,
}

impl Serialize for Tokenizer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let s = &self.splitter;
        StoredTokenizerRef {
            lowercase: s.lowercase,
            mode: s.mode,
            ngram_range: (s.mode == TokenMode::CharNgrams).then_some(s.ngrams),
            length: s.length,
            padding: self.padding,
            truncation: self.truncation,
            vocab: &self.vocab,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tokenizer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = StoredTokenizer::deserialize(deserializer)?;
        let splitter = Splitter::new(s.lowercase, s.mode, s.ngram_range, s.length).map_err(serde::de::Error::custom)?;
        Tokenizer::build(splitter, s.padding, s.truncation, s.vocab).map_err(serde::de::Error::custom)
    }
}

/// Reads the texts and their class labels per `spec`: `(texts, labels, class names)`, label `i` meaning
/// `class names[i]`. A folder `path` holds one folder per class (files in sorted order; bytes that are not UTF-8
/// are replaced, as e-mails are not always UTF-8); a file `path` is a CSV with a header row.
pub fn read_texts(spec: &TextSpec) -> Result<(Vec<String>, Vec<usize>, Vec<String>)> {
    let meta = fs::metadata(&spec.path).in_file(&spec.path)?;
    if meta.is_dir() {
        read_folders(spec)
    } else if spec.label_separator.is_some() {
        Err(Error::new("internal: multi-label texts are read by read_label_sets").in_file(&spec.path))
    } else {
        let (texts, sets, names) = read_csv_texts(spec).in_file(&spec.path)?;
        Ok((texts, sets.into_iter().map(|s| s[0]).collect(), names))
    }
}

/// Texts, the labels of each text, and the label names.
type LabelSets = (Vec<String>, Vec<Vec<usize>>, Vec<String>);

/// Reads multi-label texts from a CSV whose label column holds `label_separator`-separated labels: `(texts, the
/// labels of each text, label names)`.
pub fn read_label_sets(spec: &TextSpec) -> Result<LabelSets> {
    let meta = fs::metadata(&spec.path).in_file(&spec.path)?;
    if meta.is_dir() {
        return Err(
            Error::new("`label_separator` applies to a CSV of texts, but this is a folder").in_file(&spec.path),
        );
    }
    read_csv_texts(spec).in_file(&spec.path)
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The sub-folders of `root`, sorted, hidden ones skipped.
fn sub_folders(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(root).in_file(root)? {
        let entry = entry.in_file(root)?;
        let path = entry.path();
        if !is_hidden(&entry.file_name()) && path.is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Appends the files under `dir` (recursively, symlinked folders not followed) that pass the extension filter.
fn collect_files(dir: &Path, extensions: Option<&[String]>, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).in_file(dir)? {
        let entry = entry.in_file(dir)?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().in_file(&path)?;
        if kind.is_dir() {
            collect_files(&path, extensions, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            let wanted = match extensions {
                None => true,
                Some(exts) => path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.iter().any(|x| x.trim_start_matches('.').eq_ignore_ascii_case(e))),
            };
            if wanted {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn read_folders(spec: &TextSpec) -> Result<(Vec<String>, Vec<usize>, Vec<String>)> {
    let root = &spec.path;
    if spec.column.is_some() || spec.label.is_some() {
        return Err(Error::new("`column` and `label` apply to a CSV file, but this is a folder").in_file(root));
    }
    let classes: Vec<(String, Vec<String>)> = match &spec.classes {
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => sub_folders(root)?
            .into_iter()
            .map(|name| (name.clone(), vec![name]))
            .collect(),
    };
    if classes.is_empty() {
        return Err(Error::new("no class folders found (one sub-folder per class is expected)").in_file(root));
    }
    let mut seen = BTreeMap::new();
    for (class, folders) in &classes {
        if folders.is_empty() {
            return Err(Error::new(format!("class '{class}' lists no folders"))
                .at("classes")
                .in_file(root));
        }
        for folder in folders {
            if let Some(other) = seen.insert(folder.as_str(), class.as_str()) {
                return Err(Error::new(format!(
                    "folder '{folder}' is listed under both '{other}' and '{class}'"
                ))
                .at("classes")
                .in_file(root));
            }
        }
    }
    let extensions = spec.extensions.as_deref();
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for (label, (class, folders)) in classes.iter().enumerate() {
        let before = texts.len();
        for folder in folders {
            let dir = root.join(folder);
            if !dir.is_dir() {
                let available = sub_folders(root).unwrap_or_default().join(", ");
                return Err(Error::new(format!(
                    "class '{class}': there is no folder '{folder}' here (the folders are: {available})"
                ))
                .in_file(root));
            }
            let mut files = Vec::new();
            collect_files(&dir, extensions, &mut files)?;
            files.sort();
            for file in files {
                let bytes = fs::read(&file).in_file(&file)?;
                texts.push(lossy(bytes));
                labels.push(label);
            }
        }
        if texts.len() == before {
            let filter = match extensions {
                Some(exts) => format!(" with extension {}", exts.join(" or ")),
                None => String::new(),
            };
            return Err(Error::new(format!(
                "class '{class}' has no files{filter} (in {})",
                folders.join(", ")
            ))
            .in_file(root));
        }
    }
    let names = classes.into_iter().map(|(class, _)| class).collect();
    Ok((texts, labels, names))
}

/// The labels of each row: one each, or (with `label_separator`) any number.
fn read_csv_texts(spec: &TextSpec) -> Result<LabelSets> {
    if spec.extensions.is_some() {
        return Err(Error::new(
            "`extensions` applies to a folder of texts, but this is a file",
        ));
    }
    let (Some(column), Some(label)) = (&spec.column, &spec.label) else {
        return Err(Error::new(
            "a CSV of texts needs `column` (the text column) and `label` (the class column)",
        ));
    };
    // The CSV parsing (quoting, line breaks inside quotes, ragged rows) is the table reader's.
    let table = read_csv(&CsvSpec {
        path: spec.path.clone(),
        ..CsvSpec::default()
    })?;
    let find = |name: &str, what: &str| {
        table.header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::new(format!(
                "no {what} column '{name}'; the columns are: {}",
                table.header.join(", ")
            ))
        })
    };
    let (text_col, label_col) = (find(column, "text")?, find(label, "label")?);
    let (mut texts, mut values) = (Vec::new(), Vec::new());
    for (i, record) in table.rows.into_iter().enumerate() {
        let row = format!("row {}", i + 1);
        let cell = record[label_col].trim();
        let row_values: Vec<String> = match &spec.label_separator {
            Some(sep) => cell
                .split(sep.as_str())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
            None if cell.is_empty() => {
                return Err(Error::new(format!("the label ('{label}') is empty")).at(row));
            }
            None => vec![cell.to_string()],
        };
        values.push((row, row_values));
        texts.push(record[text_col].clone());
    }
    let (names, class_of): (Vec<String>, BTreeMap<String, usize>) = match &spec.classes {
        Some(map) => {
            let mut class_of = BTreeMap::new();
            for (i, (class, vals)) in map.iter().enumerate() {
                for v in vals {
                    if let Some(j) = class_of.insert(v.trim().to_string(), i) {
                        let other = map.keys().nth(j).expect("class index");
                        return Err(Error::new(format!(
                            "label value '{v}' is listed under both '{other}' and '{class}'"
                        ))
                        .at("classes"));
                    }
                }
            }
            (map.keys().cloned().collect(), class_of)
        }
        None => {
            let distinct: BTreeSet<&str> = values.iter().flat_map(|(_, v)| v.iter().map(String::as_str)).collect();
            let mut names: Vec<String> = distinct.into_iter().map(str::to_string).collect();
            if names.iter().all(|n| n.parse::<i64>().is_ok()) {
                names.sort_by_key(|n| n.parse::<i64>().expect("checked integer"));
            }
            let class_of = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
            (names, class_of)
        }
    };
    let mut labels = Vec::with_capacity(values.len());
    for (row, row_values) in &values {
        let mut set = Vec::with_capacity(row_values.len());
        for value in row_values {
            match class_of.get(value) {
                Some(&c) if !set.contains(&c) => set.push(c),
                Some(_) => {}
                None => {
                    return Err(
                        Error::new(format!("label '{value}' is not listed under any class of `classes`"))
                            .at(row.clone()),
                    );
                }
            }
        }
        labels.push(set);
    }
    Ok((texts, labels, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use std::time::Instant;

    fn folder_spec(path: &Path) -> TextSpec {
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

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn spec(vocab_size: usize, length: usize) -> TokenizerSpec {
        TokenizerSpec {
            vocab_size,
            length,
            ..TokenizerSpec::default()
        }
    }

    fn all_rows(texts: &[String]) -> Vec<usize> {
        (0..texts.len()).collect()
    }

    #[test]
    fn folders_default_to_one_class_per_sub_folder_sorted() {
        let dir = TempDir::new("folders");
        dir.write("neg/b.txt", b"second neg");
        dir.write("neg/a.txt", b"first neg");
        dir.write("pos/z.txt", b"only pos");
        dir.write("pos/.hidden", b"skipped");
        dir.write(".git/x.txt", b"not a class");
        dir.write("stray.txt", b"files in the root are not texts");
        let (texts, labels, names) = read_texts(&folder_spec(&dir.0)).unwrap();
        assert_eq!(names, strings(&["neg", "pos"]));
        assert_eq!(texts, strings(&["first neg", "second neg", "only pos"]));
        assert_eq!(labels, vec![0, 0, 1]);
    }

    #[test]
    fn folders_class_mapping_extensions_nesting_and_lossy_bytes() {
        let dir = TempDir::new("mapping");
        dir.write("spam-2/01.txt", b"spam two");
        dir.write("spam-1/02.TXT", b"spam one b");
        dir.write("spam-1/01.txt", b"spam one a");
        dir.write("spam-1/cmds", b"not a text");
        dir.write("easy-ham/x.txt", b"caf\xe9 \xff ok");
        dir.write("easy-ham/sub/y.txt", b"nested");
        dir.write("hard-ham/a.txt", b"hard");
        dir.write("unused/a.txt", b"ignored folder");
        let mut s = folder_spec(&dir.0);
        s.classes = Some(BTreeMap::from([
            ("spam".to_string(), strings(&["spam-1", "spam-2"])),
            ("ham".to_string(), strings(&["hard-ham", "easy-ham"])),
        ]));
        s.extensions = Some(strings(&[".txt"]));
        let (texts, labels, names) = read_texts(&s).unwrap();
        assert_eq!(names, strings(&["ham", "spam"]));
        // Folders in the listed order, files sorted by path within each (`sub/y.txt` before `x.txt`).
        assert_eq!(
            texts,
            strings(&[
                "hard",
                "nested",
                "caf\u{fffd} \u{fffd} ok",
                "spam one a",
                "spam one b",
                "spam two"
            ])
        );
        assert_eq!(labels, vec![0, 0, 0, 1, 1, 1]);

        // Without the filter, `cmds` is read too.
        s.extensions = None;
        assert_eq!(read_texts(&s).unwrap().0.len(), 7);

        // Errors name what is wrong.
        s.extensions = Some(strings(&["eml"]));
        let err = read_texts(&s).unwrap_err();
        assert!(
            err.message.contains("class 'ham' has no files with extension eml"),
            "{err}"
        );
        s.extensions = None;
        s.classes = Some(BTreeMap::from([("ham".to_string(), strings(&["nope"]))]));
        let err = read_texts(&s).unwrap_err();
        assert!(
            err.message.contains("no folder 'nope'") && err.message.contains("easy-ham, hard-ham"),
            "{err}"
        );
        s.classes = Some(BTreeMap::from([
            ("a".to_string(), strings(&["unused"])),
            ("b".to_string(), strings(&["unused"])),
        ]));
        assert!(read_texts(&s).unwrap_err().message.contains("both 'a' and 'b'"));
        s.classes = None;
        s.column = Some("text".into());
        assert!(read_texts(&s).is_err());
    }

    #[test]
    fn a_label_separator_reads_sets_of_labels() {
        let dir = TempDir::new("text-multilabel");
        let csv = "text,tags\nred dog,colour|animal\nnothing,\nblue,colour| colour \n";
        let path = dir.0.join("t.csv");
        fs::write(&path, csv).unwrap();
        let mut s = folder_spec(&path);
        s.column = Some("text".into());
        s.label = Some("tags".into());
        s.label_separator = Some("|".into());
        let (texts, sets, names) = read_label_sets(&s).unwrap();
        assert_eq!(texts, strings(&["red dog", "nothing", "blue"]));
        assert_eq!(names, strings(&["animal", "colour"]));
        // An empty cell is no label; a repeated label counts once.
        assert_eq!(sets, vec![vec![1, 0], vec![], vec![1]]);
        assert!(read_texts(&s).is_err(), "single-label reading refuses a separator");
    }

    #[test]
    fn csv_columns_quotes_and_labels() {
        let dir = TempDir::new("csv");
        let csv = "\u{feff}id,label,text\r\n1,spam,\"Win, \"\"now\"\"\nfree\"\r\n2,ham,hello there\n\n3, ham ,\"\"\n";
        dir.write("t.csv", csv.as_bytes());
        let mut s = folder_spec(&dir.0.join("t.csv"));
        s.column = Some("text".into());
        s.label = Some("label".into());
        let (texts, labels, names) = read_texts(&s).unwrap();
        assert_eq!(texts, strings(&["Win, \"now\"\nfree", "hello there", ""]));
        assert_eq!(names, strings(&["ham", "spam"]));
        assert_eq!(labels, vec![1, 0, 0]);

        // Classes map label values; integer labels sort numerically by default.
        s.classes = Some(BTreeMap::from([
            ("bad".to_string(), strings(&["spam"])),
            ("good".to_string(), strings(&["ham"])),
        ]));
        let (_, labels, names) = read_texts(&s).unwrap();
        assert_eq!((labels, names), (vec![0, 1, 1], strings(&["bad", "good"])));
        s.classes = None;
        s.label = Some("id".into());
        dir.write("n.csv", b"id,text\n10,a\n9,b\n2,c\n");
        s.path = dir.0.join("n.csv");
        let (_, labels, names) = read_texts(&s).unwrap();
        assert_eq!((labels, names), (vec![2, 1, 0], strings(&["2", "9", "10"])));

        // Errors: unknown column, ragged row, unclosed quote, missing `label`.
        s.column = Some("body".into());
        assert!(
            read_texts(&s)
                .unwrap_err()
                .message
                .contains("no text column 'body'; the columns are: id, text")
        );
        s.column = Some("text".into());
        dir.write("r.csv", b"id,text\n1,a\n2,b,c\n");
        s.path = dir.0.join("r.csv");
        let err = read_texts(&s).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        assert_eq!(err.file.as_deref(), Some(s.path.as_path()));
        dir.write("q.csv", b"id,text\n1,\"open\n2,b\n");
        s.path = dir.0.join("q.csv");
        let err = read_texts(&s).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        s.label = None;
        assert!(read_texts(&s).unwrap_err().message.contains("needs `column`"));
    }

    #[test]
    fn word_tokenization_rules() {
        let tok = Tokenizer::fit(&TokenizerSpec::default(), &[], &[]).unwrap();
        assert_eq!(
            tok.tokens("Don't STOP--e-mail me@x.com, 42nd_st! Ünïcode ÇA  "),
            strings(&[
                "don't",
                "stop",
                "e",
                "mail",
                "me",
                "x",
                "com",
                "42nd",
                "st",
                "ünïcode",
                "ça"
            ])
        );
        assert!(tok.tokens(" ,.;- \n").is_empty());
        let cased = TokenizerSpec {
            lowercase: false,
            ..TokenizerSpec::default()
        };
        let tok = Tokenizer::fit(&cased, &[], &[]).unwrap();
        assert_eq!(tok.tokens("Hello WORLD"), strings(&["Hello", "WORLD"]));
    }

    #[test]
    fn vocabulary_order_min_freq_and_size_cut() {
        let texts = strings(&["b a c b", "a d b", "c e", "z"]);
        // Counts: b 3, a 2, c 2, d 1, e 1, z 1.
        let tok = Tokenizer::fit(&spec(100, 4), &texts, &all_rows(&texts)).unwrap();
        assert_eq!(tok.vocab, strings(&["b", "a", "c", "d", "e", "z"]));
        assert_eq!(tok.vocab_size(), 8);
        assert_eq!((tok.id("b"), tok.id("a"), tok.id("c"), tok.id("z")), (2, 3, 4, 7));

        let cut = Tokenizer::fit(&spec(5, 4), &texts, &all_rows(&texts)).unwrap();
        assert_eq!(cut.vocab, strings(&["b", "a", "c"]));
        assert_eq!(cut.vocab_size(), 5);
        assert_eq!(cut.id("d"), 1);

        let frequent = TokenizerSpec {
            min_freq: 2,
            ..spec(100, 4)
        };
        let tok = Tokenizer::fit(&frequent, &texts, &all_rows(&texts)).unwrap();
        assert_eq!(tok.vocab, strings(&["b", "a", "c"]));
        assert_eq!(tok.vocab_size(), 5);

        // The cut among equally frequent tokens is alphabetical, whatever the text order.
        let ties = strings(&["q p o n m"]);
        let tok = Tokenizer::fit(&spec(4, 4), &ties, &[0]).unwrap();
        assert_eq!(tok.vocab, strings(&["m", "n"]));

        for bad in [spec(2, 4), spec(10, 0), spec(MAX_EXACT_F32 + 1, 4)] {
            assert!(Tokenizer::fit(&bad, &texts, &[0]).is_err());
        }
        let err = Tokenizer::fit(&spec(10, 4), &texts, &[4]).unwrap_err();
        assert_eq!(err.message, "training row 4 is outside the 4 texts");
    }

    #[test]
    fn oov_padding_and_truncation_on_both_sides() {
        let texts = strings(&["a b c", "c c b"]);
        let fitted = |padding, truncation| {
            let s = TokenizerSpec {
                padding,
                truncation,
                ..spec(100, 4)
            };
            Tokenizer::fit(&s, &texts, &[0, 1]).unwrap()
        };
        // Counts c 3, b 2, a 1: ids c = 2, b = 3, a = 4; x and q are unknown (1).
        let new = strings(&["a x b", "c b a q c b", ""]);
        let cases = [
            (Side::Post, Side::Post, [4., 1., 3., 0., 2., 3., 4., 1., 0., 0., 0., 0.]),
            (Side::Pre, Side::Post, [0., 4., 1., 3., 2., 3., 4., 1., 0., 0., 0., 0.]),
            (Side::Post, Side::Pre, [4., 1., 3., 0., 4., 1., 2., 3., 0., 0., 0., 0.]),
            (Side::Pre, Side::Pre, [0., 4., 1., 3., 4., 1., 2., 3., 0., 0., 0., 0.]),
        ];
        for (padding, truncation, expected) in cases {
            let ids = fitted(padding, truncation).transform(&new);
            assert_eq!(ids.shape, vec![3, 4]);
            assert_eq!(ids.data, expected, "padding {padding:?}, truncation {truncation:?}");
        }
        assert_eq!(fitted(Side::Post, Side::Post).transform(&[]).shape, vec![0, 4]);
    }

    #[test]
    fn serde_round_trip_transforms_identically() {
        let texts = strings(&[
            "The cat sat on the mat.",
            "A dog! The dog barked; cats ran.",
            "Ünïcode wörds",
        ]);
        let s = TokenizerSpec {
            padding: Side::Pre,
            ..spec(9, 6)
        };
        let tok = Tokenizer::fit(&s, &texts, &all_rows(&texts)).unwrap();
        let json = serde_json::to_string(&tok).unwrap();
        let back: Tokenizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tok);
        let probe = strings(&["the dog sat on a new mat", "wörds wörds unseen", ""]);
        let (a, b) = (tok.transform(&probe), back.transform(&probe));
        assert_eq!(a.shape, b.shape);
        assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(json.contains("\"vocab\":[\"the\",\"dog\""), "{json}");

        // Char n-grams keep their range; a corrupted vocabulary is refused.
        let ng = TokenizerSpec {
            mode: TokenMode::CharNgrams,
            ngram_range: Some([2, 3]),
            ..spec(50, 8)
        };
        let tok = Tokenizer::fit(&ng, &texts, &[0]).unwrap();
        let back: Tokenizer = serde_json::from_str(&serde_json::to_string(&tok).unwrap()).unwrap();
        assert_eq!(back.tokens("cat"), tok.tokens("cat"));
        assert_eq!(back.transform(&texts).data, tok.transform(&texts).data);
        let dup =
            r#"{"lowercase":true,"mode":"word","length":3,"padding":"post","truncation":"post","vocab":["a","a"]}"#;
        assert!(
            serde_json::from_str::<Tokenizer>(dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let extra =
            r#"{"lowercase":true,"mode":"word","length":3,"padding":"post","truncation":"post","vocab":[],"x":1}"#;
        assert!(serde_json::from_str::<Tokenizer>(extra).is_err());
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

    #[test]
    fn fit_uses_only_the_training_rows() {
        let texts = strings(&["alpha beta", "gamma leak", "beta alpha"]);
        let tok = Tokenizer::fit(&spec(100, 3), &texts, &[0, 2]).unwrap();
        assert_eq!(tok.id("leak"), 1);
        assert_eq!(tok.id("gamma"), 1);
        assert_eq!(tok.vocab_size(), 4);
        assert_eq!(tok.transform(&texts[1..2]).data, vec![1., 1., 0.]);
    }

    #[test]
    fn char_ngrams() {
        let s = TokenizerSpec {
            mode: TokenMode::CharNgrams,
            ngram_range: Some([3, 4]),
            ..spec(1000, 50)
        };
        let tok = Tokenizer::fit(&s, &[], &[]).unwrap();
        assert_eq!(
            tok.tokens("Where"),
            strings(&[
                "<where>", "<wh", "<whe", "whe", "wher", "her", "here", "ere", "ere>", "re>"
            ])
        );
        // Short words: the whole word, and no n-gram is the whole word again.
        assert_eq!(
            tok.tokens("a I'm"),
            strings(&["<a>", "<i'm>", "<i'", "<i'm", "i'm", "i'm>", "'m>"])
        );
        let uni = TokenizerSpec {
            ngram_range: Some([1, 2]),
            ..s.clone()
        };
        let tok = Tokenizer::fit(&uni, &[], &[]).unwrap();
        // Multi-byte characters count as one; the bare boundary marks are not tokens.
        assert_eq!(tok.tokens("çé"), strings(&["<çé>", "<ç", "ç", "çé", "é", "é>"]));
        let texts = strings(&["where here", "there"]);
        let tok = Tokenizer::fit(&s, &texts, &[0]).unwrap();
        // "there" shares n-grams with the training words but is not a known word.
        assert_eq!(tok.id("<there>"), 1);
        assert!(tok.id("here") > 1);
        let ids = tok.transform(&texts[1..]);
        // Known: her, here, ere, ere>, re>.
        assert_eq!(ids.data.iter().filter(|&&v| v > 1.0).count(), 5);
        // Defaults to fastText's [3, 6].
        let d = TokenizerSpec {
            mode: TokenMode::CharNgrams,
            ..TokenizerSpec::default()
        };
        assert_eq!(Tokenizer::fit(&d, &[], &[]).unwrap().splitter.ngrams, [3, 6]);
        let bad = TokenizerSpec {
            ngram_range: Some([3, 2]),
            ..s
        };
        assert!(bad.validate().is_err());
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
